//! userinfo-service as a client of auth-service: token keys, the revocation stream (followed
//! for as long as the process runs, resumed after every disconnect) and app credential checks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::caller_credentials::{FORWARDED_PEER, VERIFIER_AUTHORIZATION};
use miniprogram_token::{RevocationRule, ScopeSet, Timestamp, TokenKey};
use pb::key_service_client::KeyServiceClient;
use pb::token_service_client::TokenServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::error::UserInfoError;
use crate::userinfo::{AppCredentialCheck, KeySource};
use crate::verifier::TokenVerifier;

/// A lazily connected channel to auth-service and the verifier credential to present.
#[derive(Clone)]
pub struct AuthServiceLink {
    channel: Channel,
    verifier_auth: MetadataValue<Ascii>,
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("AUTH_URL is not a valid URI: {0}")]
    Url(String),
    #[error("VERIFIER_TOKEN is not valid header text")]
    Token,
}

impl AuthServiceLink {
    /// A link to `auth_url`; with `ca_pem`, over TLS verified against that CA.
    pub fn new(
        auth_url: &str,
        verifier_token: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, LinkError> {
        let mut endpoint = Endpoint::from_shared(auth_url.to_owned())
            .map_err(|e| LinkError::Url(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(ca) = ca_pem {
            let host = endpoint.uri().host().unwrap_or("localhost").to_owned();
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .domain_name(host),
                )
                .map_err(|e| LinkError::Url(e.to_string()))?;
        }
        Self::with_endpoint(endpoint, verifier_token)
    }

    pub fn with_endpoint(endpoint: Endpoint, verifier_token: &str) -> Result<Self, LinkError> {
        Ok(AuthServiceLink {
            channel: endpoint.connect_lazy(),
            verifier_auth: format!("Bearer {verifier_token}")
                .parse()
                .map_err(|_| LinkError::Token)?,
        })
    }

    /// A request carrying the verifier credential beside the caller's own `authorization`.
    fn authed_as_verifier<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(VERIFIER_AUTHORIZATION, self.verifier_auth.clone());
        request
    }

    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.verifier_auth.clone());
        request
    }
}

fn timestamp(t: Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::from_seconds_and_nanos(t.seconds, t.nanos))
}

fn unavailable(status: &Status) -> UserInfoError {
    UserInfoError::AuthServiceUnavailable(format!("{:?}", status.code()))
}

fn key_from_proto(k: pb::TokenKey) -> Option<TokenKey> {
    Some(TokenKey {
        material: k.key_material.try_into().ok()?,
        key_id: k.key_id,
        created_at: timestamp(k.create_time)?,
        retire_at: timestamp(k.retire_time)?,
        expire_at: timestamp(k.expire_time)?,
    })
}

/// A revocation event as a rule; `None` if auth-service sent something unusable.
pub fn rule_from_event(e: pb::RevocationEvent) -> Option<RevocationRule> {
    let scopes = e
        .scopes
        .iter()
        .map(|s| match pb::Scope::try_from(*s) {
            Ok(pb::Scope::UserInfo) => Some(miniprogram_token::Scope::UserInfo),
            Ok(pb::Scope::AuthBase) => Some(miniprogram_token::Scope::AuthBase),
            Ok(pb::Scope::PhoneNumber) => Some(miniprogram_token::Scope::PhoneNumber),
            _ => None,
        })
        .collect::<Option<ScopeSet>>()?;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Some(RevocationRule {
        sequence: e.sequence,
        app_id: e.app_id,
        user_id: non_empty(e.user_id),
        scopes,
        token_id: non_empty(e.token_id),
        grant_id: non_empty(e.grant_id),
        issued_before: timestamp(e.issued_before)?,
        expire_at: timestamp(e.expire_time)?,
    })
}

#[async_trait]
impl KeySource for AuthServiceLink {
    async fn fetch_keys(&self) -> Result<Vec<TokenKey>, UserInfoError> {
        let listed = KeyServiceClient::new(self.channel.clone())
            .list_token_keys(self.authed(pb::ListTokenKeysRequest {}))
            .await
            .map_err(|s| unavailable(&s))?
            .into_inner();
        Ok(listed.keys.into_iter().filter_map(key_from_proto).collect())
    }
}

#[async_trait]
impl AppCredentialCheck for AuthServiceLink {
    async fn confirm(
        &self,
        authorization: &str,
        access_token: &str,
        peer: &str,
    ) -> Result<bool, UserInfoError> {
        let mut request = self.authed_as_verifier(pb::IntrospectTokenRequest {
            token: access_token.to_owned(),
        });
        let header = authorization
            .parse()
            .map_err(|_| UserInfoError::InvalidAuthClient)?;
        request.metadata_mut().insert("authorization", header);
        if let Ok(peer) = peer.parse() {
            request.metadata_mut().insert(FORWARDED_PEER, peer);
        }
        match TokenServiceClient::new(self.channel.clone())
            .introspect_token(request)
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Ok(r.active && r.token_type == pb::TokenType::Access as i32)
            }
            Err(status) => Err(match ErrorReason::of(&status) {
                Some(ErrorReason::InvalidAuthClient) => UserInfoError::InvalidAuthClient,
                Some(ErrorReason::RequestTrafficExceedLimit) => {
                    UserInfoError::RequestTrafficExceedLimit
                }
                Some(ErrorReason::InvalidArgument) => UserInfoError::InvalidAccessToken,
                _ => unavailable(&status),
            }),
        }
    }
}

/// Loads keys until it succeeds (auth-service may start after us), backing off.
pub async fn load_keys(link: &AuthServiceLink, verifier: &TokenVerifier) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match link.fetch_keys().await {
            Ok(keys) if !keys.is_empty() => {
                verifier.replace_keys(keys);
                return;
            }
            Ok(_) => tracing::warn!("auth-service listed no token keys; retrying"),
            Err(e) => tracing::warn!(error = %e, "cannot load token keys yet; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Follows WatchRevocations forever, resuming after the last applied sequence on every
/// reconnect, refetching keys on reconnect (they may have rotated meanwhile) and pruning
/// expired rules.
pub async fn follow_revocations(link: AuthServiceLink, verifier: Arc<TokenVerifier>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let after_sequence = verifier.last_sequence();
        let call = KeyServiceClient::new(link.channel.clone())
            .watch_revocations(link.authed(pb::WatchRevocationsRequest { after_sequence }))
            .await;
        match call {
            Ok(response) => {
                let mut stream = response.into_inner();
                verifier.mark_contact(Timestamp::now());
                if let Ok(keys) = link.fetch_keys().await
                    && !keys.is_empty()
                {
                    verifier.replace_keys(keys);
                }
                backoff = Duration::from_millis(100);
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            let now = Timestamp::now();
                            verifier.mark_contact(now);
                            if let Some(event) = message.event {
                                match rule_from_event(event) {
                                    Some(rule) => verifier.apply(rule),
                                    None => tracing::warn!("ignoring a malformed revocation event"),
                                }
                            } else {
                                verifier.prune(now);
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), "revocation stream broke; resuming");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), "cannot open the revocation stream; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
