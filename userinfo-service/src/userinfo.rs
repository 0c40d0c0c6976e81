//! What a mini program may read: the public profile under a consent token, and the phone
//! number under an access token with the phone scope. Tokens are checked locally.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use miniprogram_token::{Scope, Timestamp, TokenClaims, TokenKind, VerifyingKey};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::disclosures::DisclosureLedger;
use crate::error::UserInfoError;
use crate::model::{DisclosedFields, PublicProfile};
use crate::profile_cache::PublicProfileCache;
use crate::read_limits::{ReadLimiter, ReadMethod};
use crate::store::ProfileStore;
use miniprogram_token::{TokenCheckError, TokenVerifier};

/// Where token keys come from (auth-service's KeyService).
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn fetch_keys(&self) -> Result<Vec<VerifyingKey>, UserInfoError>;
}

/// Confirms an app credential and that the access token is still active for that app, at
/// auth-service (its TokenService.IntrospectToken, with the caller's own credential).
#[async_trait]
pub trait AppCredentialCheck: Send + Sync + 'static {
    /// `Ok(true)`: credential good and token active for that app; `Ok(false)`: credential
    /// good, token not (revoked, another app's, not a token at all). A bad credential is
    /// `Err(InvalidAuthClient)` whatever the token.
    /// `peer` is the original caller's address, for auth-service's failed-attempt limits.
    async fn confirm(
        &self,
        authorization: &str,
        access_token: &str,
        peer: &str,
    ) -> Result<bool, UserInfoError>;
}

/// How long an app credential that auth-service confirmed is reused without asking it again.
/// A secret rotated or an app switched off at auth-service is still accepted here for at most
/// this long (auth-service's own replicas have the same bound); the token itself is checked on
/// every call, locally, against keys and revocation rules that follow auth-service within the
/// staleness bound.
pub const CONFIRMED_CREDENTIAL_TTL: Duration = Duration::from_secs(1);

/// Most confirmed credentials kept (about 80 bytes each).
const CONFIRMED_CREDENTIALS: usize = 10_000;

/// App credentials auth-service confirmed lately, so a backend calling GetPhoneNumber more than
/// once a second costs auth-service one call a second, not one per call. Keyed by SHA-256 of
/// the whole `authorization` header: the secret itself is never kept, and only a credential
/// auth-service accepted is entered.
pub struct ConfirmedCredentials {
    ttl: Duration,
    entries: quick_cache::sync::Cache<[u8; 32], Instant>,
}

impl ConfirmedCredentials {
    pub fn new(ttl: Duration) -> Self {
        ConfirmedCredentials {
            ttl,
            entries: quick_cache::sync::Cache::new(CONFIRMED_CREDENTIALS),
        }
    }

    fn key(authorization: &str) -> [u8; 32] {
        Sha256::digest(authorization.as_bytes()).into()
    }

    /// Whether `key` was confirmed less than the reuse time before `at` (monotonic).
    fn confirmed(&self, key: &[u8; 32], at: Instant) -> bool {
        self.entries
            .get(key)
            .is_some_and(|confirmed_at| at.saturating_duration_since(confirmed_at) < self.ttl)
    }

    fn insert(&self, key: [u8; 32], at: Instant) {
        self.entries.insert(key, at);
    }
}

/// What each read passes besides its token check: the scraping limits before the data is
/// read, the disclosure ledger once it is answered.
pub struct ReadOversight {
    pub limits: Arc<ReadLimiter>,
    pub ledger: Arc<DisclosureLedger>,
}

/// Serves the two reads, checking tokens against the local verifier.
pub struct UserInfoReader {
    store: Arc<dyn ProfileStore>,
    oversight: ReadOversight,
    profiles: Arc<PublicProfileCache>,
    verifier: Arc<TokenVerifier>,
    keys: Arc<dyn KeySource>,
    credentials: Arc<dyn AppCredentialCheck>,
    confirmed: ConfirmedCredentials,
    /// When keys were last refetched for an unknown key id; refetches are at most one per
    /// `refetch_interval`, so garbage key ids can't hammer auth-service.
    last_refetch: Mutex<Option<Timestamp>>,
    refetch_interval: Duration,
}

fn token_error(e: TokenCheckError) -> UserInfoError {
    match e {
        TokenCheckError::Malformed | TokenCheckError::UnknownKey | TokenCheckError::Invalid => {
            UserInfoError::InvalidAccessToken
        }
        TokenCheckError::Expired => UserInfoError::ExpiredAccessToken,
        TokenCheckError::Revoked => UserInfoError::InvalidAuthRelations,
        TokenCheckError::Stale => UserInfoError::RevocationStateStale,
    }
}

impl UserInfoReader {
    /// A reader over the store (behind the cache), checking tokens with `verifier`, which is
    /// refreshed from `keys` at most once per `refetch_interval` on an unknown key id.
    pub fn new(
        store: Arc<dyn ProfileStore>,
        profiles: Arc<PublicProfileCache>,
        verifier: Arc<TokenVerifier>,
        keys: Arc<dyn KeySource>,
        credentials: Arc<dyn AppCredentialCheck>,
        refetch_interval: Duration,
        oversight: ReadOversight,
    ) -> Self {
        UserInfoReader {
            store,
            oversight,
            profiles,
            verifier,
            keys,
            credentials,
            confirmed: ConfirmedCredentials::new(CONFIRMED_CREDENTIAL_TTL),
            last_refetch: Mutex::new(None),
            refetch_interval,
        }
    }

    /// `my.getOpenUserInfo`: the six public fields, for a live consent token. `now` is the
    /// wall clock (token expiry), `at` the monotonic one (revocation freshness).
    pub async fn open_user_info(
        &self,
        consent_token: &str,
        now: Timestamp,
        at: Instant,
    ) -> Result<PublicProfile, UserInfoError> {
        if consent_token.is_empty() {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        let claims = self
            .check(TokenKind::Consent, consent_token, now, at)
            .await
            .map_err(token_error)?;
        if !claims.scopes.contains(Scope::UserInfo) {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        let limits = &self.oversight.limits;
        limits.check(ReadMethod::OpenUserInfo, &claims.app_id, &claims.token_id)?;
        let profile = self.public_profile(&claims.user_id, now).await?;
        let fields = DisclosedFields::PublicProfile;
        let ledger = &self.oversight.ledger;
        ledger.record(&claims.user_id, &claims.app_id, fields, now);
        Ok(profile)
    }

    /// The public profile, from the cache or else the store (then cached).
    async fn public_profile(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<PublicProfile, UserInfoError> {
        if let Some(cached) = self.profiles.get(user_id, now) {
            return Ok(cached);
        }
        // Taken before the read: if a write or delete forgets this user meanwhile, the row
        // read may be the old one and is not cached.
        let generation = self.profiles.generation(user_id);
        let profile = self.store.get_public(user_id).await?;
        let profile = profile.ok_or(UserInfoError::ProfileNotFound)?;
        self.profiles
            .put_if_unchanged(user_id, profile.clone(), generation, now);
        Ok(profile)
    }

    /// The phone number, for an app's backend holding an access token with the phone scope
    /// that was issued to that same app.
    ///
    /// The app credential is confirmed at auth-service (or was, within
    /// [`CONFIRMED_CREDENTIAL_TTL`]) before the token is looked at, so a caller without the
    /// right secret learns nothing about a token (every such call is INVALID_AUTH_CLIENT, or a
    /// limit / availability error that doesn't depend on the token).
    pub async fn phone_number(
        &self,
        authorization: Option<&str>,
        app_id: &str,
        access_token: &str,
        peer: &str,
        now: Timestamp,
        at: Instant,
    ) -> Result<String, UserInfoError> {
        let authorization = authorization.ok_or(UserInfoError::InvalidAuthClient)?;
        let key = ConfirmedCredentials::key(authorization);
        // Within the reuse time the token is judged by the local checks below alone, as
        // GetOpenUserInfo's are.
        let active_for_app = if self.confirmed.confirmed(&key, at) {
            true
        } else {
            let active = self
                .credentials
                .confirm(authorization, access_token, peer)
                .await?;
            self.confirmed.insert(key, at);
            active
        };
        // The caller is now known to be `app_id`: the token's own failure reason may be told.
        if access_token.is_empty() {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        let claims = match self.check(TokenKind::Access, access_token, now, at).await {
            Ok(claims) => claims,
            Err(TokenCheckError::Invalid) => {
                // A consent token is a valid credential of the wrong kind: no phone relation.
                return match self.check(TokenKind::Consent, access_token, now, at).await {
                    Ok(_) => Err(UserInfoError::InvalidAuthRelations),
                    Err(e) => Err(token_error(e)),
                };
            }
            Err(e) => return Err(token_error(e)),
        };
        if claims.app_id != app_id || !claims.scopes.contains(Scope::PhoneNumber) || !active_for_app
        {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        let limits = &self.oversight.limits;
        limits.check(ReadMethod::PhoneNumber, &claims.app_id, &claims.token_id)?;
        let phone_number = self.store.phone_number(&claims.user_id).await?;
        let phone_number = phone_number.ok_or(UserInfoError::ProfileNotFound)?;
        let fields = DisclosedFields::PhoneNumber;
        let ledger = &self.oversight.ledger;
        ledger.record(&claims.user_id, &claims.app_id, fields, now);
        Ok(phone_number)
    }

    /// Checks a token locally; on an unknown key id, refetches keys (rate limited) and checks
    /// again, whether or not this call did the refetch: one queued behind another's refetch
    /// finds the new key in the ring.
    async fn check(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
        at: Instant,
    ) -> Result<Arc<TokenClaims>, TokenCheckError> {
        match self.verifier.check(kind, token, now, at) {
            Err(TokenCheckError::UnknownKey) => {
                self.refetch_keys(now).await;
                self.verifier.check(kind, token, now, at)
            }
            other => other,
        }
    }

    /// Refetches keys unless that was tried within the refetch interval. Callers wait on
    /// each other here, so a burst of tokens under a new key costs one ListTokenKeys.
    async fn refetch_keys(&self, now: Timestamp) {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| now.since(t) < self.refetch_interval) {
            return;
        }
        *last = Some(now);
        match self.keys.fetch_keys().await {
            Ok(keys) => {
                if !self.verifier.replace_keys(keys) {
                    tracing::warn!("auth-service listed no token keys; keeping the current ones");
                }
            }
            Err(e) => tracing::warn!(error = %e, "refetching token keys failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the time bound in `ConfirmedCredentials::confirmed`: a credential confirmed
    /// longer ago than the reuse time, or another header, goes back to auth-service.
    #[test]
    fn a_confirmed_credential_is_reused_only_within_its_time() {
        let confirmed = ConfirmedCredentials::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let key = ConfirmedCredentials::key("Basic bXAxOnNlY3JldA==");
        assert!(!confirmed.confirmed(&key, t0), "never confirmed");
        confirmed.insert(key, t0);
        assert!(confirmed.confirmed(&key, t0 + Duration::from_millis(999)));
        assert!(
            !confirmed.confirmed(&key, t0 + Duration::from_secs(1)),
            "reused past its time"
        );
        let other = ConfirmedCredentials::key("Basic bXAxOnNlY3JldDI=");
        assert!(!confirmed.confirmed(&other, t0));
    }
}
