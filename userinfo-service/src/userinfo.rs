//! What a mini program may read: the public profile under a consent token, and the phone
//! number under an access token with the phone scope. Tokens are checked locally.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use miniprogram_token::{Scope, Timestamp, TokenClaims, TokenKey, TokenKind};
use tokio::sync::Mutex;

use crate::error::UserInfoError;
use crate::profile_cache::PublicProfileCache;
use crate::profiles::PublicProfile;
use crate::store::{ProfileStore, StoreError};
use crate::verifier::{TokenCheckError, TokenVerifier};

/// Where token keys come from (auth-service's KeyService).
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn fetch_keys(&self) -> Result<Vec<TokenKey>, UserInfoError>;
}

/// Confirms an app credential and that the access token is still active for that app, at
/// auth-service (its TokenService.IntrospectToken, with the caller's own credential).
#[async_trait]
pub trait AppCredentialCheck: Send + Sync + 'static {
    /// `Ok(true)`: credential good and token active; `Ok(false)`: credential good, token not.
    /// `peer` is the original caller's address, for auth-service's failed-attempt limits.
    async fn confirm(
        &self,
        authorization: &str,
        access_token: &str,
        peer: &str,
    ) -> Result<bool, UserInfoError>;
}

/// Serves the two reads, checking tokens against the local verifier.
pub struct UserInfoReader {
    store: Arc<dyn ProfileStore>,
    profiles: Arc<PublicProfileCache>,
    verifier: Arc<TokenVerifier>,
    keys: Arc<dyn KeySource>,
    credentials: Arc<dyn AppCredentialCheck>,
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

fn profile_missing(e: StoreError) -> UserInfoError {
    match e {
        StoreError::NotFound => UserInfoError::ProfileNotFound,
        other => UserInfoError::Store(other),
    }
}

impl UserInfoReader {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        profiles: Arc<PublicProfileCache>,
        verifier: Arc<TokenVerifier>,
        keys: Arc<dyn KeySource>,
        credentials: Arc<dyn AppCredentialCheck>,
        refetch_interval: Duration,
    ) -> Self {
        UserInfoReader {
            store,
            profiles,
            verifier,
            keys,
            credentials,
            last_refetch: Mutex::new(None),
            refetch_interval,
        }
    }

    /// `my.getOpenUserInfo`: the six public fields, for a live consent token.
    pub async fn open_user_info(
        &self,
        consent_token: &str,
        now: Timestamp,
    ) -> Result<PublicProfile, UserInfoError> {
        if consent_token.is_empty() {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        let claims = self
            .check(TokenKind::Consent, consent_token, now)
            .await
            .map_err(token_error)?;
        if !claims.scopes.contains(Scope::UserInfo) {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        if let Some(cached) = self.profiles.get(&claims.user_id, now) {
            return Ok(cached);
        }
        let profile = self
            .store
            .get_public_profile(&claims.user_id)
            .await
            .map_err(profile_missing)?;
        self.profiles.put(&claims.user_id, profile.clone(), now);
        Ok(profile)
    }

    /// The phone number, for an app's backend holding an access token with the phone scope
    /// that was issued to that same app.
    pub async fn phone_number(
        &self,
        authorization: Option<&str>,
        app_id: &str,
        access_token: &str,
        peer: &str,
        now: Timestamp,
    ) -> Result<String, UserInfoError> {
        let authorization = authorization.ok_or(UserInfoError::InvalidAuthClient)?;
        if access_token.is_empty() {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        let claims = match self.check(TokenKind::Access, access_token, now).await {
            Ok(claims) => claims,
            Err(TokenCheckError::Invalid) => {
                // A consent token is a valid credential of the wrong kind: no phone relation.
                return match self.check(TokenKind::Consent, access_token, now).await {
                    Ok(_) => Err(UserInfoError::InvalidAuthRelations),
                    Err(e) => Err(token_error(e)),
                };
            }
            Err(e) => return Err(token_error(e)),
        };
        if claims.app_id != app_id || !claims.scopes.contains(Scope::PhoneNumber) {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        if !self
            .credentials
            .confirm(authorization, access_token, peer)
            .await?
        {
            return Err(UserInfoError::InvalidAuthRelations);
        }
        self.store
            .get_phone_number(&claims.user_id)
            .await
            .map_err(profile_missing)
    }

    async fn check(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<TokenClaims, TokenCheckError> {
        match self.verifier.check(kind, token, now) {
            Err(TokenCheckError::UnknownKey) if self.refetch_keys(now).await => {
                self.verifier.check(kind, token, now)
            }
            other => other,
        }
    }

    /// Refetches keys unless that happened within the refetch interval; `true` if it did.
    async fn refetch_keys(&self, now: Timestamp) -> bool {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| now.since(t) < self.refetch_interval) {
            return false;
        }
        *last = Some(now);
        match self.keys.fetch_keys().await {
            Ok(keys) => {
                self.verifier.replace_keys(keys);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "refetching token keys failed");
                false
            }
        }
    }
}
