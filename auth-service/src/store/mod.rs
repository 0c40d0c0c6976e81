//! Persistence for auth-service: one trait, a SQLite and a PostgreSQL implementation, and one
//! conformance suite both pass. Every method that changes more than one row does so in one
//! transaction, so a failed call leaves nothing half-written.

use std::sync::Arc;

use async_trait::async_trait;
use miniprogram_token::{RevocationRule, ScopeSet, Timestamp};

use crate::apps::FeatureSet;
use crate::clock::Clock;

#[cfg(test)]
mod conformance;
pub mod postgres;
mod rows;
pub mod sqlite;

/// A SHA-256 digest of an opaque secret (app secret, auth code, refresh token, prompt id).
pub type SecretHash = [u8; 32];

/// Caller-actionable storage failures, plus one bucket for everything else.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    #[error("unexpected database error: {0}")]
    Internal(Arc<sqlx::Error>),
}

/// A registered mini program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub app_id: String,
    pub display_name: String,
    pub secret_hash: SecretHash,
    pub features: FeatureSet,
    pub created_at: Timestamp,
}

/// What one user has decided for one mini program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecord {
    pub user_id: String,
    pub app_id: String,
    pub granted: ScopeSet,
    pub denied: ScopeSet,
    pub updated_at: Timestamp,
}

/// A modal shown to a user, waiting for their answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRecord {
    pub prompt_hash: SecretHash,
    pub user_id: String,
    pub app_id: String,
    pub scopes: ScopeSet,
    pub previously_denied: bool,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
}

/// A single-use auth code; its `grant_id` names every token that descends from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCodeRecord {
    pub code_hash: SecretHash,
    pub grant_id: String,
    pub app_id: String,
    pub user_id: String,
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Kept past expiry so a late replay can still be recognised and its tokens revoked.
    pub purge_at: Timestamp,
}

/// A refresh token; all rotations of one grant share `family_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub token_hash: SecretHash,
    pub family_id: String,
    pub app_id: String,
    pub user_id: String,
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A revocation rule before the store gives it its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRevocation {
    pub app_id: String,
    pub user_id: Option<String>,
    pub scopes: ScopeSet,
    pub token_id: Option<String>,
    pub grant_id: Option<String>,
    pub issued_before: Timestamp,
    pub expire_at: Timestamp,
}

impl NewRevocation {
    /// The same rule with its cut-off moved to `at` (when later) and its lifetime moved with
    /// it. Stores stamp withdrawals this way inside the write transaction, once nothing can
    /// read the old state any more, so no token minted from the old state escapes the rule.
    pub fn restamped(&self, at: Timestamp) -> NewRevocation {
        let shift = at.since(self.issued_before);
        NewRevocation {
            issued_before: self.issued_before.max(at),
            expire_at: self.expire_at.saturating_add(shift),
            ..self.clone()
        }
    }
}

/// The scope bits a withdrawal of `scopes` takes back: all of them when empty.
fn withdrawn_bits(scopes: ScopeSet) -> i64 {
    if scopes.is_empty() {
        i64::from(ScopeSet::of(&miniprogram_token::Scope::ALL).bits())
    } else {
        i64::from(scopes.bits())
    }
}

/// A token key as stored: its secret half (Ed25519 secret key and subject key) sealed under
/// the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTokenKey {
    pub key_id: String,
    pub sealed_key: String,
    pub created_at: Timestamp,
    pub retire_at: Timestamp,
    pub expire_at: Timestamp,
}

/// What became of an attempt to spend an auth code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// Spent now, by this call; the first refresh token of its family is stored.
    Redeemed(AuthCodeRecord),
    /// Spent before: a replay.
    AlreadyUsed(AuthCodeRecord),
    Expired,
    /// Unknown, or issued to another app.
    NotFound,
}

/// What became of an attempt to rotate a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    /// Spent now; the successor is stored.
    Rotated(RefreshTokenRecord),
    /// Spent before: a reuse, so the family must be revoked.
    AlreadyUsed(RefreshTokenRecord),
    /// Revoked (by the user, the app, or a disabled feature).
    Revoked,
    Expired,
    /// Unknown, or issued to another app.
    NotFound,
}

/// What became of an attempt to log the revocation of one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRevocation {
    /// Appended now.
    Appended(RevocationRule),
    /// The log already holds a rule for this token: nothing was written.
    AlreadyRevoked,
    /// The app already holds its quota of live token rules: nothing was written.
    QuotaReached,
}

/// Width in nanoseconds of the windows token rules are counted in for the per-app quota: a
/// rule counts until the end of the five-minute window it expires in.
pub const QUOTA_WINDOW_NANOS: i64 = 300_000_000_000;

/// The end of the quota window a rule expiring at `expire_at` is counted in (migration 0002
/// computes the same in SQL for the rules it found).
fn quota_window_end(expire_at: Timestamp) -> i64 {
    expire_at
        .unix_nanos()
        .checked_add(QUOTA_WINDOW_NANOS - 1)
        .map_or(i64::MAX, |n| {
            n.div_euclid(QUOTA_WINDOW_NANOS) * QUOTA_WINDOW_NANOS
        })
}

/// Removed by one sweep, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub prompts: u64,
    pub auth_codes: u64,
    pub refresh_tokens: u64,
    pub revocations: u64,
    /// Ended windows of the per-app count of token rules.
    pub revocation_quota: u64,
    pub token_keys: u64,
}

impl SweepCounts {
    pub fn total(&self) -> u64 {
        self.prompts
            + self.auth_codes
            + self.refresh_tokens
            + self.revocations
            + self.revocation_quota
            + self.token_keys
    }
}

/// Everything auth-service keeps.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    // === apps ===
    async fn insert_app(&self, app: &AppRecord) -> Result<(), StoreError>;
    async fn get_app(&self, app_id: &str) -> Result<AppRecord, StoreError>;
    /// [`AuthStore::get_app`], read in order with feature switches (never from a snapshot a
    /// running switch has not yet replaced), for paths that mint from the features it shows.
    async fn get_app_for_grant(&self, app_id: &str) -> Result<AppRecord, StoreError>;
    async fn count_apps(&self) -> Result<u64, StoreError>;
    async fn set_app_secret(
        &self,
        app_id: &str,
        secret_hash: &SecretHash,
    ) -> Result<(), StoreError>;
    /// Switches `enable` on and `disable` off in one atomic update (concurrent changes never
    /// lose each other); with a revocation, also voids the refresh tokens it matches and
    /// appends it, stamped by `clock` after the app row is locked, all in one transaction.
    async fn set_features(
        &self,
        app_id: &str,
        enable: FeatureSet,
        disable: FeatureSet,
        revocation: Option<&NewRevocation>,
        clock: &Clock,
    ) -> Result<AppRecord, StoreError>;

    // === authorizations ===
    /// Read in order with withdrawals (never from a snapshot a running withdrawal has not yet
    /// replaced), so whatever a grant mints from it is caught by the withdrawal's rule.
    async fn get_authorization(
        &self,
        user_id: &str,
        app_id: &str,
    ) -> Result<Option<AuthorizationRecord>, StoreError>;
    /// Atomically: granted |= grant; denied = (denied | deny) - granted. A denial never takes
    /// back what is granted: only a withdrawal does, with its revocation.
    async fn record_decision(
        &self,
        user_id: &str,
        app_id: &str,
        grant: ScopeSet,
        deny: ScopeSet,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// The user's authorizations that still grant something, with each app's display name.
    async fn list_authorizations(
        &self,
        user_id: &str,
    ) -> Result<Vec<(AuthorizationRecord, String)>, StoreError>;
    /// Withdraws `revocation.scopes` from the user's grant, deletes the user's unspent auth
    /// codes carrying them, voids matching refresh tokens and appends the revocation, stamped
    /// by `clock` once the authorization is locked; returns the scopes still granted. When
    /// none of those scopes is granted it changes nothing and appends no rule: every token
    /// that carries them was caught by the withdrawal that took them back.
    async fn withdraw_authorization(
        &self,
        revocation: &NewRevocation,
        clock: &Clock,
    ) -> Result<ScopeSet, StoreError>;

    // === prompts ===
    async fn insert_prompt(&self, prompt: &PromptRecord) -> Result<(), StoreError>;
    async fn get_prompt(&self, prompt_hash: &SecretHash) -> Result<PromptRecord, StoreError>;
    /// Marks the prompt resolved; `false` if another call resolved it first.
    async fn resolve_prompt(
        &self,
        prompt_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    // === auth codes and refresh tokens ===
    async fn insert_auth_code(&self, code: &AuthCodeRecord) -> Result<(), StoreError>;
    /// Spends the code in one atomic update and stores `first_refresh` (whose family, user
    /// and scopes are taken from the code) in the same transaction.
    async fn redeem_auth_code(
        &self,
        code_hash: &SecretHash,
        app_id: &str,
        first_refresh: &SecretHash,
        refresh_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<CodeRedemption, StoreError>;
    /// Voids a grant's refresh tokens and appends the revocation of its access tokens, once:
    /// `false` if the family was already revoked (or the log already holds its rule).
    async fn revoke_family(
        &self,
        family_id: &str,
        revocation: &NewRevocation,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn rotate_refresh_token(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        successor: &SecretHash,
        successor_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<RefreshRotation, StoreError>;
    async fn get_refresh_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<RefreshTokenRecord, StoreError>;

    // === revocation log ===
    /// Appends a rule. A rule voiding a token or a grant family the log already holds a rule
    /// for (same app, user, scopes and token or grant id) is not appended: `AlreadyExists`.
    async fn append_revocation(
        &self,
        revocation: &NewRevocation,
    ) -> Result<RevocationRule, StoreError>;
    /// Appends the revocation of one token (`revocation.token_id` set) and counts it against
    /// its app, in one transaction: nothing if the log already holds a rule for that token,
    /// nothing if the app already holds `quota` token rules counted at `now` (a rule counts
    /// until the end of the [`QUOTA_WINDOW_NANOS`] window it expires in).
    async fn revoke_token(
        &self,
        revocation: &NewRevocation,
        quota: u32,
        now: Timestamp,
    ) -> Result<TokenRevocation, StoreError>;
    async fn revocations_after(
        &self,
        sequence: u64,
        limit: u32,
    ) -> Result<Vec<RevocationRule>, StoreError>;
    /// The rule at `sequence`, if the log still holds it.
    async fn revocation_at(&self, sequence: u64) -> Result<Option<RevocationRule>, StoreError>;

    /// Rules that could void a token of (app, user) issued at `issued_at`.
    async fn revocations_for_subject(
        &self,
        app_id: &str,
        user_id: &str,
        issued_at: Timestamp,
    ) -> Result<Vec<RevocationRule>, StoreError>;

    // === token keys ===
    async fn insert_token_key(&self, key: &StoredTokenKey) -> Result<(), StoreError>;
    async fn list_token_keys(&self) -> Result<Vec<StoredTokenKey>, StoreError>;
    /// Ends a key's life at `now` (it neither mints nor verifies from then on); `false` if no
    /// such key is alive.
    async fn retire_token_key(&self, key_id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Replaces a key's sealed form if it is still `old` (re-sealing under a new master key;
    /// another replica may have done it first: `false`).
    async fn reseal_token_key(
        &self,
        key_id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError>;

    // === sealed secrets ===
    async fn get_sealed_secret(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Stores a secret under `name` once: [`StoreError::AlreadyExists`] if another replica
    /// stored one first.
    async fn insert_sealed_secret(
        &self,
        name: &str,
        sealed: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Replaces a secret's sealed form if it is still `old`.
    async fn reseal_secret(&self, name: &str, old: &str, new: &str) -> Result<bool, StoreError>;

    // === upkeep ===
    /// Deletes up to `batch` expired rows from each table.
    async fn sweep_expired(&self, now: Timestamp, batch: u32) -> Result<SweepCounts, StoreError>;
    async fn close(&self);
}
