//! What a mini program backend does with an auth code: exchange it for tokens, refresh with
//! rotation, revoke (RFC 7009) and introspect (RFC 7662). Always for its own tokens only.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{ScopeSet, Timestamp, TokenClaims, TokenKind};

use crate::apps::Feature;
use crate::error::AuthError;
use crate::keys::SigningKeys;
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, AppUserIdKey, OpaqueSecret};
use crate::store::{
    AppRecord, AuthStore, CodeRedemption, NewRevocation, RefreshRotation, StoreError,
    TokenRevocation,
};

/// Lifetimes of the tokens a backend gets.
#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub access_token: Duration,
    pub refresh_token: Duration,
}

/// An access token and its refresh token, as returned by exchange and refresh.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub access_token_expires_at: Timestamp,
    pub refresh_token: OpaqueSecret,
    pub refresh_token_expires_at: Timestamp,
    /// The app-scoped user id, never the wallet's own.
    pub app_user_id: String,
    pub scopes: ScopeSet,
}

/// Which kind of token an introspection found. Never a consent token: that one is for
/// userinfo-service's GetOpenUserInfo, not for a backend (see [`TokenIssuer::introspect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectedKind {
    Access,
    Refresh,
}

/// RFC 7662's answer: `active` and, only when active, what the token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    pub kind: IntrospectedKind,
    pub app_id: String,
    pub app_user_id: String,
    pub scopes: ScopeSet,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub token_id: String,
}

/// Issues, rotates, revokes and describes tokens for authenticated mini program backends.
#[derive(Clone)]
pub struct TokenIssuer {
    store: Arc<dyn AuthStore>,
    keys: SigningKeys,
    lifetimes: TokenLifetimes,
    user_ids: AppUserIdKey,
    revocation_policy: RevocationPolicy,
    feed: RevocationFeed,
}

impl TokenIssuer {
    pub fn new(
        store: Arc<dyn AuthStore>,
        keys: SigningKeys,
        lifetimes: TokenLifetimes,
        user_ids: AppUserIdKey,
        revocation_policy: RevocationPolicy,
        feed: RevocationFeed,
    ) -> Self {
        TokenIssuer {
            store,
            keys,
            lifetimes,
            user_ids,
            revocation_policy,
            feed,
        }
    }

    /// Spends a code (once, under any concurrency). A replayed code revokes every token issued
    /// from it (RFC 6749 §4.1.2).
    pub async fn exchange(
        &self,
        app: &AppRecord,
        auth_code: &str,
        now: Timestamp,
    ) -> Result<TokenPair, AuthError> {
        if !secrets::looks_like_secret(auth_code) {
            return Err(AuthError::InvalidCode);
        }
        let refresh = OpaqueSecret::generate()?;
        let refresh_expires_at = now.saturating_add(self.lifetimes.refresh_token);
        let redemption = self
            .store
            .redeem_auth_code(
                &secrets::hash(auth_code),
                &app.app_id,
                &refresh.hash(),
                refresh_expires_at,
                now,
            )
            .await?;
        match redemption {
            CodeRedemption::Redeemed(code) => {
                if let Err(e) = self
                    .check_still_authorized(app, &code.user_id, code.scopes)
                    .await
                {
                    self.revoke_grant(&code.app_id, &code.user_id, &code.grant_id, now)
                        .await?;
                    return Err(e);
                }
                self.pair(
                    app,
                    &code.user_id,
                    code.scopes,
                    &code.grant_id,
                    refresh,
                    refresh_expires_at,
                    now,
                )
            }
            CodeRedemption::AlreadyUsed(code) => {
                self.revoke_grant(&code.app_id, &code.user_id, &code.grant_id, now)
                    .await?;
                Err(AuthError::UsedCode)
            }
            CodeRedemption::Expired => Err(AuthError::ExpiredCode),
            CodeRedemption::NotFound => Err(AuthError::InvalidCode),
        }
    }

    /// Rotates a refresh token. Reusing a spent one revokes its whole family.
    pub async fn refresh(
        &self,
        app: &AppRecord,
        refresh_token: &str,
        now: Timestamp,
    ) -> Result<TokenPair, AuthError> {
        if !secrets::looks_like_secret(refresh_token) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let successor = OpaqueSecret::generate()?;
        let successor_expires_at = now.saturating_add(self.lifetimes.refresh_token);
        let rotation = self
            .store
            .rotate_refresh_token(
                &secrets::hash(refresh_token),
                &app.app_id,
                &successor.hash(),
                successor_expires_at,
                now,
            )
            .await?;
        match rotation {
            RefreshRotation::Rotated(old) => {
                if let Err(e) = self
                    .check_still_authorized(app, &old.user_id, old.scopes)
                    .await
                {
                    self.revoke_grant(&old.app_id, &old.user_id, &old.family_id, now)
                        .await?;
                    return Err(e);
                }
                self.pair(
                    app,
                    &old.user_id,
                    old.scopes,
                    &old.family_id,
                    successor,
                    successor_expires_at,
                    now,
                )
            }
            RefreshRotation::AlreadyUsed(old) => {
                self.revoke_grant(&old.app_id, &old.user_id, &old.family_id, now)
                    .await?;
                Err(AuthError::UsedRefreshToken)
            }
            RefreshRotation::Expired => Err(AuthError::ExpiredRefreshToken),
            // The design's table: a revoked token (by the user, a disabled feature or the
            // app) means the authorization relation is gone.
            RefreshRotation::Revoked => Err(AuthError::InvalidAuthRelations),
            RefreshRotation::NotFound => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// RFC 7009: revokes one of the app's own tokens; an unknown token, or another app's, is
    /// not an error and changes nothing. Revoking a refresh token revokes its whole grant.
    /// Revoking a token again writes nothing; an app holding its quota of live token rules is
    /// refused (`RequestTrafficExceedLimit`) and nothing is written, so it can retry later.
    pub async fn revoke(
        &self,
        app: &AppRecord,
        token: &str,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        if secrets::looks_like_secret(token) {
            return match self.store.get_refresh_token(&secrets::hash(token)).await {
                Ok(rec) if rec.app_id == app.app_id => {
                    self.revoke_grant(&rec.app_id, &rec.user_id, &rec.family_id, now)
                        .await
                }
                Ok(_) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let Some(claims) = self.open_any(token, now) else {
            return Ok(());
        };
        if claims.app_id != app.app_id {
            return Ok(());
        }
        let revocation = self.unbounded_rule(
            claims.app_id,
            claims.user_id,
            Some(claims.token_id),
            None,
            now,
        );
        let quota = self.revocation_policy.token_rules_per_app();
        match self.store.revoke_token(&revocation, quota, now).await? {
            TokenRevocation::Appended(_) => {
                self.feed.notify();
                Ok(())
            }
            TokenRevocation::AlreadyRevoked => Ok(()),
            TokenRevocation::QuotaReached => {
                tracing::warn!(
                    app_id = %app.app_id,
                    quota,
                    "app holds its quota of revoked tokens; RevokeToken refused"
                );
                Err(AuthError::RequestTrafficExceedLimit)
            }
        }
    }

    /// RFC 7662: `None` means inactive (unknown, expired, revoked, or another app's).
    ///
    /// A consent token is inactive here too, whatever its state: RFC 7662 §2.2 answers
    /// `active: false` for a token the caller may not introspect, and a backend has no use
    /// for one (userinfo-service checks it locally). Describing it would hand an app that
    /// has only the basic-info feature its users' app-scoped ids, which come only with an
    /// auth code from `my.getAuthCode`, and a token id and issue time to link a user's calls.
    pub async fn introspect(
        &self,
        app: &AppRecord,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<Introspection>, AuthError> {
        if secrets::looks_like_secret(token) {
            let rec = match self.store.get_refresh_token(&secrets::hash(token)).await {
                Ok(rec) => rec,
                Err(StoreError::NotFound) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let active = rec.app_id == app.app_id
                && rec.used_at.is_none()
                && rec.revoked_at.is_none()
                && rec.expires_at > now;
            return Ok(active.then(|| Introspection {
                kind: IntrospectedKind::Refresh,
                app_user_id: self.user_ids.app_user_id(&rec.app_id, &rec.user_id),
                app_id: rec.app_id,
                scopes: rec.scopes,
                issued_at: rec.created_at,
                expires_at: rec.expires_at,
                token_id: String::new(),
            }));
        }
        let Some(claims) = self
            .keys
            .with_ring(|ring| ring.open(TokenKind::Access, token, now).ok())
        else {
            return Ok(None);
        };
        if claims.app_id != app.app_id {
            return Ok(None);
        }
        let rules = self
            .store
            .revocations_for_subject(&claims.app_id, &claims.user_id, claims.issued_at())
            .await?;
        if rules.iter().any(|r| r.matches(&claims)) {
            return Ok(None);
        }
        let features_cover = claims
            .scopes
            .iter()
            .all(|s| app.features.contains(Feature::for_scope(s)));
        if !features_cover {
            return Ok(None);
        }
        Ok(Some(Introspection {
            kind: IntrospectedKind::Access,
            app_user_id: self.user_ids.app_user_id(&claims.app_id, &claims.user_id),
            scopes: claims.scopes,
            issued_at: claims.issued_at(),
            expires_at: claims.expires_at(),
            token_id: claims.token_id,
            app_id: claims.app_id,
        }))
    }

    /// An access or consent token's claims, for RevokeToken (an app may revoke either).
    fn open_any(&self, token: &str, now: Timestamp) -> Option<TokenClaims> {
        self.keys.with_ring(|ring| {
            ring.open(TokenKind::Access, token, now)
                .or_else(|_| ring.open(TokenKind::Consent, token, now))
                .ok()
        })
    }

    /// A code or refresh token outlived the consent or feature it stood on.
    async fn check_still_authorized(
        &self,
        app: &AppRecord,
        user_id: &str,
        scopes: ScopeSet,
    ) -> Result<(), AuthError> {
        // Read again, in order with feature switches: the caller's copy was read to check its
        // credential and may predate a switch that is committing now.
        let features = self.store.get_app_for_grant(&app.app_id).await?.features;
        if let Some(missing) = scopes
            .iter()
            .map(Feature::for_scope)
            .find(|f| !features.contains(*f))
        {
            return Err(AuthError::InsufficientIsvPermissions(missing));
        }
        let granted = self
            .store
            .get_authorization(user_id, &app.app_id)
            .await?
            .map_or(ScopeSet::EMPTY, |a| a.granted);
        if !scopes.is_subset_of(granted) {
            return Err(AuthError::InvalidAuthRelations);
        }
        Ok(())
    }

    async fn revoke_grant(
        &self,
        app_id: &str,
        user_id: &str,
        grant_id: &str,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let revocation = self.unbounded_rule(
            app_id.to_owned(),
            user_id.to_owned(),
            None,
            Some(grant_id.to_owned()),
            now,
        );
        if self.store.revoke_family(grant_id, &revocation, now).await? {
            self.feed.notify();
        }
        Ok(())
    }

    /// The rule voiding one token id or one grant family of (app, user), revoked by a call
    /// that read its clock at `now`. Not bounded by `now`: the family or token is dead for
    /// good, and a token minted by a call that raced this one (read its time earlier, wrote
    /// later) must be caught too.
    fn unbounded_rule(
        &self,
        app_id: String,
        user_id: String,
        token_id: Option<String>,
        grant_id: Option<String>,
        now: Timestamp,
    ) -> NewRevocation {
        let until = self.revocation_policy.unbounded_rule_until(now);
        NewRevocation {
            app_id,
            user_id: Some(user_id),
            scopes: ScopeSet::EMPTY,
            token_id,
            grant_id,
            issued_before: until,
            expire_at: until,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pair(
        &self,
        app: &AppRecord,
        user_id: &str,
        scopes: ScopeSet,
        grant_id: &str,
        refresh_token: OpaqueSecret,
        refresh_token_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<TokenPair, AuthError> {
        let access_token_expires_at = now.saturating_add(self.lifetimes.access_token);
        let claims = TokenClaims {
            app_id: app.app_id.clone(),
            user_id: user_id.to_owned(),
            scopes,
            issued_at: now.unix_nanos(),
            expires_at: access_token_expires_at.unix_nanos(),
            token_id: secrets::new_id()?,
            grant_id: grant_id.to_owned(),
        };
        let access_token = self
            .keys
            .with_ring(|ring| ring.mint(TokenKind::Access, &claims, now))
            .map_err(|_| AuthError::NoTokenKey)?;
        Ok(TokenPair {
            access_token,
            access_token_expires_at,
            refresh_token,
            refresh_token_expires_at,
            app_user_id: self.user_ids.app_user_id(&app.app_id, user_id),
            scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use miniprogram_token::{MasterKey, Scope, ScopeSet, Timestamp};

    use super::*;
    use crate::apps::FeatureSet;
    use crate::keys::KeyRotation;
    use crate::store::AuthCodeRecord;
    use crate::store::sqlite::SqliteAuthStore;

    /// Two exchanges of one code race: the loser read its clock first but reached the store
    /// second. Its replay must still void the winner's access token.
    #[tokio::test]
    async fn a_replay_that_read_the_clock_before_the_winner_still_voids_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("auth.db").display());
        let store: Arc<dyn AuthStore> = Arc::new(SqliteAuthStore::open(&url).await.unwrap());
        let master = MasterKey::from_bytes(&[7; 32]).unwrap();
        let ttl = Duration::from_secs(3600);
        let keys = SigningKeys::default();
        let t0 = Timestamp::now();
        KeyRotation::new(
            store.clone(),
            master.clone(),
            ttl,
            ttl,
            keys.clone(),
            RevocationFeed::default(),
        )
        .ensure_current(t0)
        .await
        .unwrap();
        let issuer = TokenIssuer::new(
            store.clone(),
            keys,
            TokenLifetimes {
                access_token: ttl,
                refresh_token: ttl,
            },
            AppUserIdKey::from_secret([8; 32]),
            RevocationPolicy::new(ttl, ttl),
            RevocationFeed::default(),
        );
        let app = AppRecord {
            app_id: "app-1".into(),
            display_name: "App".into(),
            secret_hash: [0; 32],
            features: FeatureSet::EMPTY.with(Feature::UserAuthorization),
            created_at: t0,
        };
        store.insert_app(&app).await.unwrap();
        let scopes = ScopeSet::of(&[Scope::AuthBase]);
        store
            .record_decision("u1", "app-1", scopes, ScopeSet::EMPTY, t0)
            .await
            .unwrap();
        let code = OpaqueSecret::generate().unwrap();
        store
            .insert_auth_code(&AuthCodeRecord {
                code_hash: code.hash(),
                grant_id: "grant-1".into(),
                app_id: "app-1".into(),
                user_id: "u1".into(),
                scopes,
                created_at: t0,
                expires_at: t0.saturating_add(ttl),
                purge_at: t0.saturating_add(ttl * 2),
            })
            .await
            .unwrap();

        let loser_read_clock = t0.saturating_add(Duration::from_millis(1));
        let winner_read_clock = t0.saturating_add(Duration::from_millis(2));
        let won = issuer
            .exchange(&app, code.expose(), winner_read_clock)
            .await
            .unwrap();
        let replay = issuer.exchange(&app, code.expose(), loser_read_clock).await;
        assert!(matches!(replay, Err(AuthError::UsedCode)));
        let later = t0.saturating_add(Duration::from_millis(3));
        assert_eq!(
            issuer
                .introspect(&app, &won.access_token, later)
                .await
                .unwrap(),
            None,
            "the winner's access token survived the replay"
        );
        let rule = store.revocations_after(0, 10).await.unwrap().pop().unwrap();
        assert!(
            rule.expire_at >= won.access_token_expires_at,
            "the rule is pruned before the token it catches expires"
        );
    }
}
