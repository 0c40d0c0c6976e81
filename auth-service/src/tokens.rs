//! What a mini program backend does with an auth code: exchange it for tokens, refresh with
//! rotation, revoke (RFC 7009) and introspect (RFC 7662). Always for its own tokens only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use miniprogram_token::{ScopeSet, Timestamp, TokenClaims, TokenKind};

use crate::error::AuthError;
use crate::keys::SigningKeys;
use crate::model::{AppRecord, AuthCodeRecord, RefreshTokenRecord};
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, AppUserIdKey, OpaqueSecret};
use crate::store::{AuthStore, RevocationRepo, Transaction};

/// Lifetimes of the tokens a backend gets.
#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub access_token: Duration,
    pub refresh_token: Duration,
}

/// How much one user's grants to one app may hold in the store, so no app can grow it without
/// end by rotating one grant in a loop, or by exchanging code after code (README, "Grants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantBounds {
    /// Grants per (app, user), revoked ones included; a new one evicts the others beyond it,
    /// revoked first, then the least recently refreshed.
    pub per_user: u32,
    /// Refreshes of one grant; past them it must be authorized again.
    pub refreshes: u32,
    /// Spent refresh tokens one grant keeps, so that their reuse is known and revokes it; each
    /// refresh deletes the grant's spent tokens older than these.
    pub spent_kept: u32,
}

/// MAX_GRANTS_PER_USER's default: a user's devices and reinstalls, with room.
pub const DEFAULT_GRANTS_PER_USER: u32 = 16;
/// MAX_REFRESHES_PER_GRANT's default: over a year of hourly refreshes.
pub const DEFAULT_REFRESHES_PER_GRANT: u32 = 10_000;
/// SPENT_REFRESH_TOKENS_KEPT's default: over two and a half days of hourly refreshes.
pub const DEFAULT_SPENT_REFRESH_TOKENS_KEPT: u32 = 64;

impl GrantBounds {
    /// Whether a refresh token of this generation may still be rotated (and so is active).
    pub fn refreshes_after(&self, generation: u64) -> bool {
        generation <= u64::from(self.refreshes)
    }

    /// Once a refresh token of `generation` is issued, the generation of its grant's spent
    /// token that falls out of the kept ones and is forgotten (none while there is none). One
    /// a refresh, so a refresh deletes one row, never a backlog.
    pub fn spent_forgotten_at(&self, generation: u64) -> Option<u64> {
        generation
            .checked_sub(u64::from(self.spent_kept) + 1)
            .filter(|&forgotten| forgotten >= 1)
    }
}

impl Default for GrantBounds {
    fn default() -> Self {
        GrantBounds {
            per_user: DEFAULT_GRANTS_PER_USER,
            refreshes: DEFAULT_REFRESHES_PER_GRANT,
            spent_kept: DEFAULT_SPENT_REFRESH_TOKENS_KEPT,
        }
    }
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
    bounds: GrantBounds,
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
            bounds: GrantBounds::default(),
            user_ids,
            revocation_policy,
            feed,
        }
    }

    /// The same issuer under other grant bounds.
    pub fn with_bounds(mut self, bounds: GrantBounds) -> Self {
        self.bounds = bounds;
        self
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
        let hash = secrets::hash(auth_code);
        // The spend waits for the turn and lock of the code's (user, app), as a withdrawal
        // does before it holds the authorization: the two queue instead of each holding a row
        // the other waits for (the code here, the authorization there).
        let issued = self.store.repositories().grants().code(&hash).await?;
        let Some(issued) = issued.filter(|c| c.app_id == app.app_id) else {
            return Err(AuthError::InvalidCode);
        };
        let pair = self
            .store
            .begin_holding_pending(&issued.user_id, &app.app_id);
        let mut tx = pair.await?;
        let Some(code) = tx.grants().spend_code(&hash, &app.app_id, now).await? else {
            let found = tx.grants().code(&hash).await?;
            drop(tx);
            return match found.filter(|c| c.app_id == app.app_id) {
                None => Err(AuthError::InvalidCode),
                Some(c) if c.used_at.is_some() => {
                    self.revoke_grant(&Spent::from(c), now).await?;
                    Err(AuthError::UsedCode)
                }
                Some(_) => Err(AuthError::ExpiredCode),
            };
        };
        self.issue(app, tx, Spent::from(code), now).await
    }

    /// Rotates a refresh token. Reusing a spent one revokes its whole family; one whose grant
    /// was refreshed its [`GrantBounds::refreshes`] is refused as expired, and stays unspent.
    pub async fn refresh(
        &self,
        app: &AppRecord,
        refresh_token: &str,
        now: Timestamp,
    ) -> Result<TokenPair, AuthError> {
        if !secrets::looks_like_secret(refresh_token) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let hash = secrets::hash(refresh_token);
        let mut tx = self.store.begin_spending(&hash).await?;
        let spent = tx.grants().spend_refresh_token(&hash, &app.app_id, now);
        let Some(old) = spent.await? else {
            let found = tx.grants().refresh_token(&hash).await?;
            drop(tx);
            return match found.filter(|t| t.app_id == app.app_id) {
                None => Err(AuthError::InvalidRefreshToken),
                Some(t) if t.used_at.is_some() => {
                    self.revoke_grant(&Spent::from(t), now).await?;
                    Err(AuthError::UsedRefreshToken)
                }
                // The design's table: a revoked token (by the user, a disabled feature or the
                // app) means the authorization relation is gone.
                Some(t) if t.revoked_at.is_some() => Err(AuthError::InvalidAuthRelations),
                Some(_) => Err(AuthError::ExpiredRefreshToken),
            };
        };
        if !self.bounds.refreshes_after(old.generation) {
            drop(tx);
            return Err(AuthError::ExpiredRefreshToken);
        }
        self.issue(app, tx, Spent::from(old), now).await
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
            let mut repos = self.store.repositories();
            let found = repos.grants().refresh_token(&secrets::hash(token)).await?;
            return match found.filter(|t| t.app_id == app.app_id) {
                Some(t) => self.revoke_grant(&Spent::from(t), now).await,
                None => Ok(()),
            };
        }
        let Some(claims) = self.open_any(token, now) else {
            return Ok(());
        };
        if claims.app_id != app.app_id {
            return Ok(());
        }
        let rule = self.revocation_policy.outright_rule(
            &claims.app_id,
            &claims.user_id,
            Some(&claims.token_id),
            None,
            now,
        );
        let mut tx = self.store.begin_holding_app_rules(&claims.app_id).await?;
        let log = tx.revocations();
        // Revoking a token again writes nothing, and is never refused.
        if log.holds_token_rule(&rule).await? {
            return Ok(());
        }
        if self.holds_its_quota(log, &claims.app_id, now).await? {
            tracing::warn!(app_id = %app.app_id, "RevokeToken refused");
            return Err(AuthError::RequestTrafficExceedLimit);
        }
        let appended = log.append(&rule).await?;
        tx.commit().await?;
        self.feed.appended(appended);
        Ok(())
    }

    /// RFC 7662: `None` means inactive (unknown, expired, revoked, or another app's).
    ///
    /// A consent token is inactive here too, whatever its state: RFC 7662 §2.2 answers
    /// `active: false` for a token the caller may not introspect, and a backend has no use
    /// for one (userinfo-service checks it locally). Describing it would hand an app that
    /// has only the basic-info feature its users' app-scoped ids, which come only with an
    /// auth code from `my.getAuthCode`, and a token id and issue time to link a user's calls.
    ///
    /// Revocation is checked against this process's view of the log while it is fresh at the
    /// monotonic instant `at` (no statement), else against the rules read from the store.
    pub async fn introspect(
        &self,
        app: &AppRecord,
        token: &str,
        now: Timestamp,
        at: Instant,
    ) -> Result<Option<Introspection>, AuthError> {
        if secrets::looks_like_secret(token) {
            let mut repos = self.store.repositories();
            let found = repos.grants().refresh_token(&secrets::hash(token)).await?;
            let active = found.filter(|t| {
                t.app_id == app.app_id
                    && t.used_at.is_none()
                    && t.revoked_at.is_none()
                    && t.expires_at > now
                    && self.bounds.refreshes_after(t.generation)
            });
            return Ok(active.map(|t| Introspection {
                kind: IntrospectedKind::Refresh,
                app_user_id: self.user_ids.app_user_id(&t.app_id, &t.user_id),
                app_id: t.app_id,
                scopes: t.scopes,
                issued_at: t.created_at,
                expires_at: t.expires_at,
                token_id: String::new(),
            }));
        }
        let view = self.feed.local();
        let Ok(claims) = view.open(TokenKind::Access, token, now) else {
            return Ok(None);
        };
        if claims.app_id != app.app_id || app.features.missing_for(claims.scopes).is_some() {
            return Ok(None);
        }
        let revoked = match view.revoked(&claims, at) {
            Some(revoked) => revoked,
            None => self
                .store
                .repositories()
                .revocations()
                .for_subject(&claims.app_id, &claims.user_id, claims.issued_at())
                .await?
                .iter()
                .any(|r| r.matches(&claims)),
        };
        if revoked {
            return Ok(None);
        }
        Ok(Some(Introspection {
            kind: IntrospectedKind::Access,
            app_user_id: self.user_ids.app_user_id(&claims.app_id, &claims.user_id),
            scopes: claims.scopes,
            issued_at: claims.issued_at(),
            expires_at: claims.expires_at(),
            token_id: claims.token_id.clone(),
            app_id: claims.app_id.clone(),
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

    /// Finishes a spend in `tx`: stores the grant's next refresh token (and keeps its code as
    /// long; for a new grant, evicts the user's grants beyond [`GrantBounds::per_user`]), then,
    /// after the commit, mints the access token, unless the consent or feature the grant stood
    /// on is gone meanwhile: then the whole grant is revoked.
    async fn issue(
        &self,
        app: &AppRecord,
        mut tx: Box<dyn Transaction>,
        spent: Spent,
        now: Timestamp,
    ) -> Result<TokenPair, AuthError> {
        let refresh_token = OpaqueSecret::generate()?;
        let refresh_token_expires_at = now.saturating_add(self.lifetimes.refresh_token);
        let successor = RefreshTokenRecord {
            token_hash: refresh_token.hash(),
            family_id: spent.grant_id.clone(),
            app_id: spent.app_id.clone(),
            user_id: spent.user_id.clone(),
            scopes: spent.scopes,
            created_at: now,
            expires_at: refresh_token_expires_at,
            used_at: None,
            revoked_at: None,
            generation: spent.generation.saturating_add(1),
        };
        tx.grants().insert_refresh_token(&successor).await?;
        if let Some(forgotten) = self.bounds.spent_forgotten_at(successor.generation) {
            (tx.grants())
                .forget_spent_refresh_token(&spent.grant_id, forgotten)
                .await?;
        }
        if spent.generation == 0 {
            let (app_id, user_id) = (spent.app_id.as_str(), spent.user_id.as_str());
            let keep = self.bounds.per_user;
            let evicted = tx
                .grants()
                .evict_grants_beyond((app_id, user_id), &spent.grant_id, keep)
                .await?;
            if evicted > 0 {
                tracing::info!(
                    app_id,
                    evicted,
                    "a user's least recently refreshed grants evicted"
                );
            }
        }
        tx.grants()
            .keep_code_until(&spent.grant_id, refresh_token_expires_at)
            .await?;
        let app_user_id = self.user_ids.app_user_id(&app.app_id, &spent.user_id);
        tx.consents()
            .disclose_user_id(&spent.user_id, &spent.app_id, &app_user_id)
            .await?;
        tx.commit().await?;
        if let Err(e) = self.check_still_authorized(&spent).await {
            self.revoke_grant(&spent, now).await?;
            return Err(e);
        }
        let access_token_expires_at = now.saturating_add(self.lifetimes.access_token);
        let claims = TokenClaims {
            app_id: app.app_id.clone(),
            user_id: spent.user_id.clone(),
            scopes: spent.scopes,
            issued_at: now.unix_nanos(),
            expires_at: access_token_expires_at.unix_nanos(),
            token_id: secrets::new_id()?,
            grant_id: spent.grant_id,
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
            app_user_id,
            scopes: spent.scopes,
        })
    }

    /// A code or refresh token outlived the consent or feature it stood on.
    async fn check_still_authorized(&self, spent: &Spent) -> Result<(), AuthError> {
        let mut repos = self.store.repositories();
        // Read again, in order with feature switches: the caller's copy was read to check its
        // credential and may predate a switch that is committing now.
        let app = repos.apps().get_in_order(&spent.app_id).await?;
        let features = app.ok_or(AuthError::AppNotFound)?.features;
        if let Some(missing) = features.missing_for(spent.scopes) {
            return Err(AuthError::InsufficientIsvPermissions(missing));
        }
        let granted = repos
            .consents()
            .authorization(&spent.user_id, &spent.app_id)
            .await?
            .map_or(ScopeSet::EMPTY, |a| a.granted);
        if !spent.scopes.is_subset_of(granted) {
            return Err(AuthError::InvalidAuthRelations);
        }
        Ok(())
    }

    /// Whether the app holds its quota of live token and family rules at `now` (logged when it
    /// does); call it holding the app's rules ([`AuthStore::begin_holding_app_rules`]).
    async fn holds_its_quota(
        &self,
        log: &mut dyn RevocationRepo,
        app_id: &str,
        now: Timestamp,
    ) -> Result<bool, AuthError> {
        let quota = self.revocation_policy.rules_per_app();
        let full = log.live_app_rules(app_id, now).await? >= u64::from(quota);
        if full {
            tracing::warn!(app_id, quota, "app holds its quota of revocation rules");
        }
        Ok(full)
    }

    /// Revokes a grant family once: its refresh tokens, and its access tokens by a rule, which
    /// counts against the app's quota; an app holding its quota gets no rule, and the family's
    /// access tokens run out on their own (within the access-token lifetime).
    async fn revoke_grant(&self, grant: &Spent, now: Timestamp) -> Result<(), AuthError> {
        let family = grant.grant_id.as_str();
        let mut tx = self.store.begin_holding_app_rules(&grant.app_id).await?;
        if !tx.grants().mark_family_revoked(family, now).await?
            && tx.grants().family_revoked(family).await?
        {
            return Ok(());
        }
        tx.grants().revoke_family_tokens(family, now).await?;
        if self
            .holds_its_quota(tx.revocations(), &grant.app_id, now)
            .await?
        {
            tracing::warn!(
                app_id = %grant.app_id,
                "a revoked family's refresh tokens are revoked; its access tokens run out on \
                 their own"
            );
            return tx.commit().await.map_err(Into::into);
        }
        let rule = self.revocation_policy.outright_rule(
            &grant.app_id,
            &grant.user_id,
            None,
            Some(family),
            now,
        );
        let appended = tx.revocations().append(&rule).await?;
        tx.commit().await?;
        self.feed.appended(appended);
        Ok(())
    }
}

/// What a spent code or refresh token stood for: a grant, named by the family its tokens share.
struct Spent {
    app_id: String,
    user_id: String,
    grant_id: String,
    scopes: ScopeSet,
    /// The spent refresh token's generation; 0 for a code.
    generation: u64,
}

impl From<AuthCodeRecord> for Spent {
    fn from(c: AuthCodeRecord) -> Self {
        Spent {
            app_id: c.app_id,
            user_id: c.user_id,
            grant_id: c.grant_id,
            scopes: c.scopes,
            generation: 0,
        }
    }
}

impl From<RefreshTokenRecord> for Spent {
    fn from(t: RefreshTokenRecord) -> Self {
        Spent {
            app_id: t.app_id,
            user_id: t.user_id,
            grant_id: t.family_id,
            scopes: t.scopes,
            generation: t.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use miniprogram_token::{MasterKey, Scope, ScopeSet, Timestamp};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::keys::KeyRotation;
    use crate::model::{Feature, FeatureSet};
    use crate::revocations::RevocationLog;

    const TTL: Duration = Duration::from_secs(3600);

    /// A store with a signing key and one app, and an issuer sharing the key rotation's feed
    /// (as `serve_with_listener` wires them).
    struct Kit {
        _dir: tempfile::TempDir,
        store: Arc<dyn AuthStore>,
        keys: SigningKeys,
        feed: RevocationFeed,
        issuer: TokenIssuer,
        app: AppRecord,
        t0: Timestamp,
    }

    impl Kit {
        async fn new() -> Kit {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("auth.db").display());
            let store = crate::store::open(&url).await.unwrap();
            let master = MasterKey::from_bytes(&[7; 32]).unwrap();
            let (keys, feed) = (SigningKeys::default(), RevocationFeed::default());
            let t0 = Timestamp::now();
            KeyRotation::new(store.clone(), master, TTL, TTL, keys.clone(), feed.clone())
                .ensure_current(t0)
                .await
                .unwrap();
            let issuer = TokenIssuer::new(
                store.clone(),
                keys.clone(),
                TokenLifetimes {
                    access_token: TTL,
                    refresh_token: TTL,
                },
                AppUserIdKey::from_secret([8; 32]),
                RevocationPolicy::new(TTL, TTL),
                feed.clone(),
            );
            let app = AppRecord {
                app_id: "app-1".into(),
                display_name: "App".into(),
                secret_hash: [0; 32],
                features: FeatureSet::EMPTY.with(Feature::UserAuthorization),
                created_at: t0,
                declaration_version: 0,
                declared_scopes: ScopeSet::EMPTY,
                declared_at: t0,
            };
            store.repositories().apps().insert(&app).await.unwrap();
            Kit {
                _dir: dir,
                store,
                keys,
                feed,
                issuer,
                app,
                t0,
            }
        }

        /// An access token of app-1 for u1, with token id `t1`.
        fn access_token(&self) -> String {
            let claims = TokenClaims {
                app_id: "app-1".into(),
                user_id: "u1".into(),
                scopes: ScopeSet::of(&[Scope::AuthBase]),
                issued_at: self.t0.unix_nanos(),
                expires_at: self.t0.saturating_add(TTL).unix_nanos(),
                token_id: "t1".into(),
                grant_id: "g1".into(),
            };
            let minted = self
                .keys
                .with_ring(|ring| ring.mint(TokenKind::Access, &claims, self.t0));
            minted.unwrap()
        }

        /// Revokes token `t1` as another replica would: in the store's log only, without
        /// this process's feed hearing of it.
        async fn revoke_elsewhere(&self) {
            let policy = RevocationPolicy::new(TTL, TTL);
            let rule = policy.outright_rule("app-1", "u1", Some("t1"), None, self.t0);
            let mut tx = self.store.begin().await.unwrap();
            tx.revocations().append(&rule).await.unwrap().unwrap();
            tx.commit().await.unwrap();
        }

        async fn active(&self, token: &str) -> bool {
            let later = self.t0.saturating_add(Duration::from_millis(1));
            let found = self
                .issuer
                .introspect(&self.app, token, later, Instant::now());
            found.await.unwrap().is_some()
        }
    }

    /// Guards `RevocationFeed::appended`'s local apply: with this process's view fresh and no
    /// follower running, a token revoked through this process is inactive to the very next
    /// introspection, which reads no rule from the store.
    #[tokio::test]
    async fn a_token_revoked_through_this_process_is_inactive_at_once() {
        let kit = Kit::new().await;
        kit.feed.local().mark_caught_up(Instant::now());
        let token = kit.access_token();
        assert!(kit.active(&token).await);
        kit.issuer.revoke(&kit.app, &token, kit.t0).await.unwrap();
        assert!(
            !kit.active(&token).await,
            "revoked, yet introspected active"
        );
    }

    /// Guards `RevocationLog::follow`'s apply: a rule another replica wrote reaches this
    /// process's view (fresh throughout) and so its introspections, within the log poll.
    #[tokio::test]
    async fn a_rule_another_replica_appends_reaches_introspection_through_the_follower() {
        let kit = Kit::new().await;
        let draining = CancellationToken::new();
        let log = RevocationLog::new(kit.store.clone(), kit.feed.clone());
        let clock: Arc<dyn miniprogram_token::Clock> =
            Arc::new(miniprogram_token::SystemClock::default());
        let follower = tokio::spawn(log.follow(clock, draining.clone()));
        let token = kit.access_token();
        let deadline = Instant::now() + Duration::from_secs(5);
        while kit.feed.local().is_stale(Instant::now()) {
            assert!(Instant::now() < deadline, "the follower never caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(kit.active(&token).await);
        kit.revoke_elsewhere().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while kit.active(&token).await {
            assert!(
                !kit.feed.local().is_stale(Instant::now()),
                "the view went stale, so the store answered, not the follower"
            );
            assert!(Instant::now() < deadline, "the rule never reached the view");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        draining.cancel();
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower stops when draining")
            .unwrap();
    }

    /// Guards the store fallback in `TokenIssuer::introspect`: while this process's view is
    /// stale (never caught up here), the rules are read from the store, so a rule only the
    /// store holds still makes the token inactive.
    #[tokio::test]
    async fn a_stale_view_leaves_introspection_to_the_rules_in_the_store() {
        let kit = Kit::new().await;
        let token = kit.access_token();
        assert!(kit.active(&token).await);
        kit.revoke_elsewhere().await;
        assert!(kit.feed.local().is_stale(Instant::now()));
        assert!(
            !kit.active(&token).await,
            "revoked in the store, yet active"
        );
    }

    /// Two exchanges of one code race: the loser read its clock first but reached the store
    /// second. Its replay must still void the winner's access token.
    #[tokio::test]
    async fn a_replay_that_read_the_clock_before_the_winner_still_voids_its_tokens() {
        let kit = Kit::new().await;
        let (store, issuer, app, t0) = (&kit.store, &kit.issuer, &kit.app, kit.t0);
        let mut repos = store.repositories();
        let scopes = ScopeSet::of(&[Scope::AuthBase]);
        repos
            .consents()
            .record_decision(&crate::store::Decision::new(
                "u1",
                "app-1",
                scopes,
                ScopeSet::EMPTY,
                t0,
            ))
            .await
            .unwrap();
        let code = OpaqueSecret::generate().unwrap();
        repos
            .grants()
            .insert_code(&AuthCodeRecord {
                code_hash: code.hash(),
                grant_id: "grant-1".into(),
                app_id: "app-1".into(),
                user_id: "u1".into(),
                scopes,
                created_at: t0,
                expires_at: t0.saturating_add(TTL),
                used_at: None,
                purge_at: t0.saturating_add(TTL * 2),
            })
            .await
            .unwrap();

        let loser_read_clock = t0.saturating_add(Duration::from_millis(1));
        let winner_read_clock = t0.saturating_add(Duration::from_millis(2));
        let won = issuer
            .exchange(app, code.expose(), winner_read_clock)
            .await
            .unwrap();
        let replay = issuer.exchange(app, code.expose(), loser_read_clock).await;
        assert!(matches!(replay, Err(AuthError::UsedCode)));
        let later = t0.saturating_add(Duration::from_millis(3));
        assert_eq!(
            issuer
                .introspect(app, &won.access_token, later, Instant::now())
                .await
                .unwrap(),
            None,
            "the winner's access token survived the replay"
        );
        let rule = repos
            .revocations()
            .after(0, 10)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert!(
            rule.expire_at >= won.access_token_expires_at,
            "the rule is pruned before the token it catches expires"
        );
    }
}
