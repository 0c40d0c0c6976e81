//! KeyService: what token verifiers need to check tokens locally.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use miniprogram_proto::auth::v1 as pb;
use pb::key_service_server::KeyService;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{scopes_to_proto, timestamp};
use crate::clock::Clock;
use crate::keys::{KeyRotation, SigningKeys};
use crate::revocations::{self, RevocationFeed, RevocationItem};
use crate::store::AuthStore;

/// Serves KeyService from the live key ring and the revocation log.
pub struct KeyGrpc {
    pub keys: SigningKeys,
    /// Reloaded before listing, so a key another replica just created is included.
    pub rotation: KeyRotation,
    pub store: Arc<dyn AuthStore>,
    pub feed: RevocationFeed,
    pub heartbeat: Duration,
    pub clock: Arc<Clock>,
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
                    key_material: k.material.to_vec(),
                    create_time: Some(timestamp(k.created_at)),
                    retire_time: Some(timestamp(k.retire_at)),
                    expire_time: Some(timestamp(k.expire_at)),
                })
                .collect();
            (
                keys,
                ring.signing_key(now)
                    .map(|k| k.key_id.clone())
                    .unwrap_or_default(),
            )
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
        let rx = revocations::watch(
            self.store.clone(),
            &self.feed,
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
                RevocationItem::Heartbeat => response.heartbeat = true,
                RevocationItem::ResumedAfter { after } => response.resumed_after = Some(after),
            }
            Ok(response)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
