//! userinfo-service as a client of auth-service: token keys, the revocation stream (followed
//! for as long as the process runs, resumed after every disconnect) and app credential checks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::caller_credentials::{FORWARDED_PEER, VERIFIER_AUTHORIZATION};
use miniprogram_proto::wire_time::from_proto as timestamp;
use miniprogram_token::{RevocationRule, ScopeSet, Timestamp, VerifyingKey};
use pb::authorization_service_client::AuthorizationServiceClient;
use pb::key_service_client::KeyServiceClient;
use pb::token_service_client::TokenServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::error::UserInfoError;
use crate::user_data::{
    AuthorizationExport, AuthorizationRecords, ExportedAppUserId, ExportedAuthorization,
    ExportedConsentRecord, ExportedPurpose, rfc3339,
};
use crate::userinfo::{AppCredentialCheck, KeySource};
use miniprogram_token::TokenVerifier;

/// How long connecting to auth-service may take before the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a unary call (ListTokenKeys, IntrospectToken) or opening the revocation stream
/// may take, connecting included; past it the call fails as auth-service unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the connection, also while idle, so a half-open connection (peer gone
/// without a FIN or RST) is noticed and dropped instead of holding calls forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest export auth-service may send (10,000 consent records fit well within it).
const EXPORT_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;
/// Reconnect delays for the revocation stream: doubling from the first to the last.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const LONGEST_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Lazily connected channels to auth-service and the verifier credential to present.
#[derive(Clone)]
pub struct AuthServiceLink {
    /// Token keys, the revocation stream, a user's export and erasure.
    channel: Channel,
    /// GetPhoneNumber's credential checks, on a connection of their own: however many are in
    /// flight (one per unconfirmed caller), they never take the streams auth-service allows a
    /// connection from the revocation stream and key fetches every token check depends on.
    checks: Channel,
    verifier_auth: MetadataValue<Ascii>,
    /// The privacy credential, for a user's export and erasure (AuthorizationService).
    privacy_auth: Option<MetadataValue<Ascii>>,
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("AUTH_URL is not a valid URI: {0}")]
    Url(String),
    #[error("VERIFIER_TOKEN is not valid header text")]
    Token,
    #[error("PRIVACY_TOKEN is not valid header text")]
    PrivacyToken,
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
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
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

    /// A link over `endpoint` exactly as given (its timeouts and keepalive included).
    pub fn with_endpoint(endpoint: Endpoint, verifier_token: &str) -> Result<Self, LinkError> {
        Ok(AuthServiceLink {
            channel: endpoint.connect_lazy(),
            checks: endpoint.connect_lazy(),
            verifier_auth: format!("Bearer {verifier_token}")
                .parse()
                .map_err(|_| LinkError::Token)?,
            privacy_auth: None,
        })
    }

    /// Presents `privacy_token` to AuthorizationService for exports and erasures.
    pub fn with_privacy_token(mut self, privacy_token: &str) -> Result<Self, LinkError> {
        let value = format!("Bearer {privacy_token}");
        self.privacy_auth = Some(value.parse().map_err(|_| LinkError::PrivacyToken)?);
        Ok(self)
    }

    /// A request with the privacy credential as its `authorization`; without one configured,
    /// auth-service's half of a user's data cannot be reached.
    fn authed_for_privacy<T>(&self, message: T) -> Result<Request<T>, UserInfoError> {
        let credential = self.privacy_auth.clone().ok_or_else(|| {
            UserInfoError::AuthServiceUnavailable("PRIVACY_TOKEN is not configured".into())
        })?;
        let mut request = Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        request.metadata_mut().insert("authorization", credential);
        Ok(request)
    }

    /// A request carrying the verifier credential beside the caller's own `authorization`,
    /// with a deadline auth-service sees too.
    fn authed_as_verifier<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        request
            .metadata_mut()
            .insert(VERIFIER_AUTHORIZATION, self.verifier_auth.clone());
        request
    }

    /// A request with the verifier credential as its `authorization`.
    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.verifier_auth.clone());
        request
    }
}

fn unavailable(status: &Status) -> UserInfoError {
    UserInfoError::AuthServiceUnavailable(format!("{:?}", status.code()))
}

/// Runs a call to auth-service with [`CALL_TIMEOUT`] over all of it (connect, headers, body):
/// tonic's own deadline covers only the wait for the response headers.
async fn within_call_timeout<T>(
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(
                "auth-service did not answer in time",
            ))
        })
}

/// A listed key as a verifying key; `None` if its key material is not 32 bytes each.
pub fn key_from_proto(k: pb::TokenKey) -> Option<VerifyingKey> {
    Some(VerifyingKey {
        public_key: k.public_key.try_into().ok()?,
        subject_key: k.subject_key.try_into().ok()?,
        key_id: k.key_id,
        created_at: timestamp(k.create_time)?,
        retire_at: timestamp(k.retire_time)?,
        expire_at: timestamp(k.expire_time)?,
    })
}

/// A revocation event as a rule; `None` if auth-service sent something this verifier cannot
/// apply faithfully (an unknown scope, a missing time, no app or no sequence).
pub fn rule_from_event(e: pb::RevocationEvent) -> Option<RevocationRule> {
    if e.sequence == 0 || e.app_id.is_empty() {
        return None;
    }
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

/// A revocation event the verifier could not turn into a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed revocation event at sequence {sequence}")]
pub struct MalformedEvent {
    pub sequence: u64,
}

/// Applies one message of the revocation stream received at wall time `now` and monotonic
/// instant `at`. A heartbeat means the stream has sent everything in the log, so only a
/// heartbeat marks the verifier caught up (and prunes expired rules, and drops keys it no
/// longer lists); a rule is applied and says nothing about freshness.
///
/// A malformed event fails closed: it is not applied, the sequence does not move past it, and
/// the verifier is marked stale, so every token is refused (REVOCATION_STATE_STALE) until a
/// stream delivers it in a form this verifier understands. Skipping it could let a revoked
/// token pass; guessing a wider rule can't be done safely without its times. A malformed
/// event means auth-service and userinfo-service disagree on the format (e.g. a scope added
/// in a newer auth-service), which an operator must fix; the refusal makes that loud.
pub fn apply_stream_message(
    verifier: &TokenVerifier,
    message: pb::WatchRevocationsResponse,
    now: Timestamp,
    at: Instant,
) -> Result<(), MalformedEvent> {
    match message.event {
        Some(event) => {
            let sequence = event.sequence;
            match rule_from_event(event) {
                Some(rule) => verifier.apply(rule),
                None => {
                    verifier.mark_stale();
                    return Err(MalformedEvent { sequence });
                }
            }
        }
        None if message.heartbeat => {
            if !message.live_key_ids.is_empty() {
                verifier.retain_keys(&message.live_key_ids);
            }
            verifier.heartbeat(at, now);
        }
        None => {
            if let Some(after) = message.resumed_after {
                verifier.rewind_to(after);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl KeySource for AuthServiceLink {
    async fn fetch_keys(&self) -> Result<Vec<VerifyingKey>, UserInfoError> {
        let mut request = self.authed(pb::ListTokenKeysRequest {});
        request.set_timeout(CALL_TIMEOUT);
        let listed = within_call_timeout(
            KeyServiceClient::new(self.channel.clone()).list_token_keys(request),
        )
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
        if !peer.is_empty()
            && let Ok(peer) = peer.parse()
        {
            request.metadata_mut().insert(FORWARDED_PEER, peer);
        }
        match within_call_timeout(
            TokenServiceClient::new(self.checks.clone()).introspect_token(request),
        )
        .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Ok(r.active && r.token_type == pb::TokenType::Access as i32)
            }
            // auth-service checks the credential before the token, so a bad token field
            // (empty, too long) means the credential was good and the token is not active.
            Err(status) if ErrorReason::of(&status) == Some(ErrorReason::InvalidArgument) => {
                Ok(false)
            }
            Err(status) => Err(match ErrorReason::of(&status) {
                Some(ErrorReason::InvalidAuthClient) => UserInfoError::InvalidAuthClient,
                Some(ErrorReason::RequestTrafficExceedLimit) => {
                    UserInfoError::RequestTrafficExceedLimit
                }
                _ => unavailable(&status),
            }),
        }
    }
}

fn scope_names(scopes: &[i32]) -> Vec<String> {
    scopes
        .iter()
        .filter_map(|s| match pb::Scope::try_from(*s) {
            Ok(pb::Scope::UserInfo) => Some("userInfo"),
            Ok(pb::Scope::AuthBase) => Some("auth_base"),
            Ok(pb::Scope::PhoneNumber) => Some("phoneNumber"),
            _ => None,
        })
        .map(str::to_owned)
        .collect()
}

fn time_text(t: Option<prost_types::Timestamp>) -> String {
    timestamp(t).map(rfc3339).unwrap_or_default()
}

fn record_from_proto(r: pb::ConsentRecord) -> ExportedConsentRecord {
    let event = match r.event() {
        pb::ConsentEvent::Prompted => "prompted",
        pb::ConsentEvent::Granted => "granted",
        pb::ConsentEvent::Denied => "denied",
        pb::ConsentEvent::Withdrawn => "withdrawn",
        pb::ConsentEvent::VoidedByFeatureChange => "voided_by_feature_change",
        pb::ConsentEvent::VoidedByErasure => "voided_by_erasure",
        pb::ConsentEvent::VoidedByNewDeclaration => "voided_by_new_declaration",
        pb::ConsentEvent::Unspecified => "unspecified",
    };
    let trigger = match r.trigger() {
        pb::Trigger::UserTap => Some("user_tap".to_owned()),
        pb::Trigger::AppLaunch => Some("app_launch".to_owned()),
        pb::Trigger::Unspecified => None,
    };
    ExportedConsentRecord {
        record_id: r.record_id,
        app_id: r.app_id,
        event: event.to_owned(),
        scopes: scope_names(&r.scopes),
        trigger,
        purposes: r
            .purposes
            .into_iter()
            .map(|p| ExportedPurpose {
                scope: scope_names(&[p.scope]).concat(),
                purpose: p.purpose,
            })
            .collect(),
        declaration_version: r.declaration_version,
        recorded_at: time_text(r.record_time),
    }
}

#[async_trait]
impl AuthorizationRecords for AuthServiceLink {
    async fn export(&self, user_id: &str) -> Result<AuthorizationExport, UserInfoError> {
        let request = self.authed_for_privacy(pb::ExportUserAuthorizationsRequest {
            user_id: user_id.to_owned(),
        })?;
        let mut client = AuthorizationServiceClient::new(self.channel.clone())
            .max_decoding_message_size(EXPORT_MESSAGE_LIMIT);
        let export = within_call_timeout(client.export_user_authorizations(request))
            .await
            .map_err(|s| unavailable(&s))?
            .into_inner();
        Ok(AuthorizationExport {
            authorizations: export
                .authorizations
                .into_iter()
                .map(|a| ExportedAuthorization {
                    app_id: a.app_id,
                    app_display_name: a.app_display_name,
                    scopes: scope_names(&a.scopes),
                    granted_at: time_text(a.grant_time),
                })
                .collect(),
            consent_records: export
                .consent_records
                .into_iter()
                .map(record_from_proto)
                .collect(),
            consent_records_truncated: export.consent_records_truncated,
            app_scoped_user_ids: export
                .app_scoped_user_ids
                .into_iter()
                .map(|i| ExportedAppUserId {
                    app_id: i.app_id,
                    user_id: i.user_id,
                    disclosed: i.disclosed,
                })
                .collect(),
        })
    }

    async fn erase(&self, user_id: &str) -> Result<(), UserInfoError> {
        let request = self.authed_for_privacy(pb::EraseUserAuthorizationsRequest {
            user_id: user_id.to_owned(),
        })?;
        let mut client = AuthorizationServiceClient::new(self.channel.clone());
        within_call_timeout(client.erase_user_authorizations(request))
            .await
            .map_err(|s| unavailable(&s))?;
        Ok(())
    }
}

/// Loads keys until it succeeds (auth-service may start after us), backing off.
pub async fn load_keys(link: &AuthServiceLink, verifier: &TokenVerifier) {
    let mut backoff = FIRST_RETRY_DELAY;
    loop {
        match link.fetch_keys().await {
            Ok(keys) => {
                if verifier.replace_keys(keys) {
                    return;
                }
                tracing::warn!("auth-service listed no token keys; retrying");
            }
            Err(e) => tracing::warn!(error = %e, "cannot load token keys yet; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LONGEST_RETRY_DELAY);
    }
}

/// Follows WatchRevocations forever, resuming after the last applied sequence on every
/// reconnect and refetching keys on reconnect (they may have rotated meanwhile). A stream
/// silent for longer than the verifier's stale bound is abandoned and reopened (the
/// connection may be half-open). The retry delay starts over only once a stream has caught
/// up, so a stream that keeps failing is not reopened in a tight loop.
pub async fn follow_revocations(link: AuthServiceLink, verifier: Arc<TokenVerifier>) {
    let mut backoff = FIRST_RETRY_DELAY;
    loop {
        if follow_one_stream(&link, &verifier).await {
            backoff = FIRST_RETRY_DELAY;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LONGEST_RETRY_DELAY);
    }
}

/// Opens one revocation stream and applies it until it ends, breaks, falls silent or
/// delivers a malformed event; `true` if it caught up at least once.
async fn follow_one_stream(link: &AuthServiceLink, verifier: &TokenVerifier) -> bool {
    let (after_sequence, after_issued_before) = verifier.resume_point();
    let opened = within_call_timeout(
        KeyServiceClient::new(link.channel.clone()).watch_revocations(link.authed(
            pb::WatchRevocationsRequest {
                after_sequence,
                after_issued_before:
                    after_issued_before.map(miniprogram_proto::wire_time::to_proto),
            },
        )),
    )
    .await;
    let mut stream = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "cannot open the revocation stream; retrying");
            return false;
        }
    };
    if let Ok(keys) = link.fetch_keys().await {
        verifier.replace_keys(keys);
    }
    let mut caught_up = false;
    loop {
        let message = match tokio::time::timeout(verifier.stale_after(), stream.message()).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return caught_up,
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), "revocation stream broke; resuming");
                return caught_up;
            }
            Err(_) => {
                tracing::warn!(
                    silent_for = ?verifier.stale_after(),
                    "revocation stream fell silent; reconnecting"
                );
                return caught_up;
            }
        };
        let heartbeat = message.heartbeat && message.event.is_none();
        if let Err(e) = apply_stream_message(verifier, message, Timestamp::now(), Instant::now()) {
            tracing::error!(
                sequence = e.sequence,
                "auth-service sent a revocation event this verifier cannot apply; refusing \
                 every token until it can (check that both services run matching versions)"
            );
            return caught_up;
        }
        caught_up |= heartbeat;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn event(sequence: u64) -> pb::RevocationEvent {
        let now = Timestamp::now().seconds_and_nanos().0;
        pb::RevocationEvent {
            sequence,
            app_id: "app-1".into(),
            user_id: "u1".into(),
            scopes: vec![pb::Scope::UserInfo as i32],
            token_id: String::new(),
            issued_before: ts(now),
            expire_time: ts(now + 3600),
            grant_id: String::new(),
        }
    }

    fn message(
        event: Option<pb::RevocationEvent>,
        heartbeat: bool,
    ) -> pb::WatchRevocationsResponse {
        pb::WatchRevocationsResponse {
            event,
            heartbeat,
            ..Default::default()
        }
    }

    #[test]
    fn events_that_cannot_be_applied_faithfully_are_malformed() {
        assert!(rule_from_event(event(1)).is_some());
        let broken: [fn(&mut pb::RevocationEvent); 5] = [
            |e| e.scopes.push(99),
            |e| e.issued_before = None,
            |e| e.expire_time = None,
            |e| e.app_id.clear(),
            |e| e.sequence = 0,
        ];
        for (i, break_it) in broken.into_iter().enumerate() {
            let mut e = event(1);
            break_it(&mut e);
            assert!(rule_from_event(e).is_none(), "case {i}");
        }
    }

    #[test]
    fn a_stream_resumed_elsewhere_rewinds_so_its_sequences_are_applied_again() {
        let verifier = TokenVerifier::new(Duration::from_secs(3600));
        let (now, at) = (Timestamp::now(), Instant::now());
        for sequence in [1, 2] {
            let mut e = event(sequence);
            e.user_id = format!("u{sequence}");
            apply_stream_message(&verifier, message(Some(e), false), now, at).unwrap();
        }
        assert_eq!(verifier.resume_point().0, 2);
        let resumed = pb::WatchRevocationsResponse {
            resumed_after: Some(0),
            ..Default::default()
        };
        apply_stream_message(&verifier, resumed, now, at).unwrap();
        assert_eq!(verifier.resume_point(), (0, None));
        assert!(verifier.is_stale(at), "a rewind is not a heartbeat");
        let mut other = event(2);
        other.user_id = "u9".into();
        apply_stream_message(&verifier, message(Some(other), false), now, at).unwrap();
        assert_eq!(
            verifier.rule_count(),
            3,
            "sequence 2 of the restored log is a new rule"
        );
    }

    #[test]
    fn only_heartbeats_make_the_verifier_fresh_and_a_malformed_event_makes_it_stale() {
        let verifier = TokenVerifier::new(Duration::from_secs(3600));
        let (now, at) = (Timestamp::now(), Instant::now());
        assert_eq!(
            apply_stream_message(&verifier, message(Some(event(1)), false), now, at),
            Ok(())
        );
        assert_eq!(verifier.last_sequence(), 1);
        assert!(
            verifier.is_stale(at),
            "a rule alone says nothing of a backlog"
        );
        assert_eq!(
            apply_stream_message(&verifier, message(None, true), now, at),
            Ok(())
        );
        assert!(!verifier.is_stale(at));

        let mut malformed = event(2);
        malformed.scopes.push(99);
        assert_eq!(
            apply_stream_message(&verifier, message(Some(malformed), false), now, at),
            Err(MalformedEvent { sequence: 2 })
        );
        assert_eq!(verifier.last_sequence(), 1, "the sequence moved past it");
        assert!(verifier.is_stale(at));
    }
}
