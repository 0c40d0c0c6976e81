//! KeyService: what token verifiers need to check tokens locally (public keys only), and
//! KeyAdminService: the console's view of the signing keys and their emergency retirement.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::{Clock, KeyRing, Timestamp};
use pb::key_admin_service_server::KeyAdminService;
use pb::key_service_server::KeyService;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{scopes_to_proto, timestamp};
use crate::error::AuthError;
use crate::keys::{KeyRotation, SigningKeys};
use crate::revocations::{RevocationItem, RevocationLog};

/// Serves KeyService from the live key ring and the revocation log.
pub struct KeyGrpc {
    pub keys: SigningKeys,
    /// Reloaded before listing, so a key another replica just created is included.
    pub rotation: KeyRotation,
    pub log: RevocationLog,
    pub heartbeat: Duration,
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the server drains, so open streams end instead of holding it up.
    pub draining: tokio_util::sync::CancellationToken,
}

type RevocationStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl KeyService for KeyGrpc {
    async fn list_token_keys(
        &self,
        _request: Request<pb::ListTokenKeysRequest>,
    ) -> Result<Response<pb::ListTokenKeysResponse>, Status> {
        let now = self.clock.now();
        self.rotation.ensure_current(now).await?;
        let (keys, current_key_id) = self.keys.with_ring(|ring| {
            let keys = ring
                .keys()
                .filter(|k| k.expire_at > now)
                .map(|k| pb::TokenKey {
                    key_id: k.key_id.clone(),
                    public_key: k.public_key.to_vec(),
                    subject_key: k.subject_key.to_vec(),
                    create_time: Some(timestamp(k.created_at)),
                    retire_time: Some(timestamp(k.retire_at)),
                    expire_time: Some(timestamp(k.expire_at)),
                })
                .collect();
            (keys, current_key_id(ring, now))
        });
        Ok(Response::new(pb::ListTokenKeysResponse {
            keys,
            current_key_id,
        }))
    }

    type WatchRevocationsStream = RevocationStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let request = request.into_inner();
        let after_issued_before =
            miniprogram_proto::wire_time::from_proto(request.after_issued_before);
        let clock = self.clock.clone();
        let keys = self.keys.clone();
        let rx = self.log.watch(
            request.after_sequence,
            after_issued_before,
            self.heartbeat,
            self.draining.clone(),
        );
        let stream = ReceiverStream::new(rx).map(move |item| {
            let mut response = pb::WatchRevocationsResponse {
                server_time: Some(timestamp(clock.now())),
                ..Default::default()
            };
            match item? {
                RevocationItem::Rule(r) => {
                    response.event = Some(pb::RevocationEvent {
                        sequence: r.sequence,
                        app_id: r.app_id,
                        user_id: r.user_id.unwrap_or_default(),
                        scopes: scopes_to_proto(r.scopes),
                        token_id: r.token_id.unwrap_or_default(),
                        issued_before: Some(timestamp(r.issued_before)),
                        expire_time: Some(timestamp(r.expire_at)),
                        grant_id: r.grant_id.unwrap_or_default(),
                    });
                }
                RevocationItem::Heartbeat => {
                    response.heartbeat = true;
                    let now = clock.now();
                    response.live_key_ids = keys.with_ring(|ring| {
                        ring.keys()
                            .filter(|k| k.expire_at > now)
                            .map(|k| k.key_id.clone())
                            .collect()
                    });
                }
                RevocationItem::ResumedAfter { after } => response.resumed_after = Some(after),
            }
            Ok(response)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn current_key_id(ring: &KeyRing, now: Timestamp) -> String {
    ring.signing_key(now)
        .map(|k| k.key_id.clone())
        .unwrap_or_default()
}

/// Serves KeyAdminService over the key rotation.
pub struct KeyAdminGrpc {
    pub keys: SigningKeys,
    pub rotation: KeyRotation,
    pub clock: Arc<dyn Clock>,
}

impl KeyAdminGrpc {
    fn listing(&self, now: Timestamp) -> (Vec<pb::SigningKeyInfo>, String) {
        self.keys.with_ring(|ring| {
            let mut keys: Vec<_> = ring
                .keys()
                .filter(|k| k.expire_at > now)
                .map(|k| pb::SigningKeyInfo {
                    key_id: k.key_id.clone(),
                    create_time: Some(timestamp(k.created_at)),
                    retire_time: Some(timestamp(k.retire_at)),
                    expire_time: Some(timestamp(k.expire_at)),
                })
                .collect();
            keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            (keys, current_key_id(ring, now))
        })
    }
}

/// Longest key id accepted (ours are 13 characters).
const MAX_KEY_ID_LEN: usize = 64;

#[tonic::async_trait]
impl KeyAdminService for KeyAdminGrpc {
    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let now = self.clock.now();
        self.rotation.ensure_current(now).await?;
        let (keys, current_key_id) = self.listing(now);
        Ok(Response::new(pb::ListSigningKeysResponse {
            keys,
            current_key_id,
        }))
    }

    async fn retire_signing_key(
        &self,
        request: Request<pb::RetireSigningKeyRequest>,
    ) -> Result<Response<pb::RetireSigningKeyResponse>, Status> {
        let key_id = request.into_inner().key_id;
        if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
            return Err(AuthError::InvalidArgument {
                field: "key_id",
                problem: "must name a signing key (see ListSigningKeys)",
            }
            .into());
        }
        let now = self.clock.now();
        if !self.rotation.retire(&key_id, now).await? {
            return Err(AuthError::InvalidArgument {
                field: "key_id",
                problem: "names no live signing key (see ListSigningKeys)",
            }
            .into());
        }
        let (keys, current_key_id) = self.listing(now);
        Ok(Response::new(pb::RetireSigningKeyResponse {
            keys,
            current_key_id,
        }))
    }
}
