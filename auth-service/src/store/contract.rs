//! The contract the services call: [`AuthStore`] hands out one repository per entity.

use async_trait::async_trait;
use miniprogram_token::{RevocationRule, ScopeSet, Timestamp};
use sql_backend::StoreResult;

use crate::model::{
    AppRecord, AuthCodeRecord, AuthorizationRecord, FeatureSet, NewRevocation, PromptRecord,
    RefreshTokenRecord, SecretHash, StoredTokenKey,
};

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
    /// Repositories whose calls each run on their own.
    fn repositories(&self) -> Box<dyn Repositories>;
    /// Repositories whose calls run in one transaction (rolled back if dropped uncommitted).
    async fn begin(&self) -> StoreResult<Box<dyn Transaction>>;
    /// Deletes up to `batch` expired rows from each table.
    async fn sweep_expired(&self, now: Timestamp, batch: u32) -> StoreResult<SweepCounts>;
    async fn close(&self);
}

/// One repository per entity.
pub trait Repositories: Send {
    fn apps(&mut self) -> &mut dyn AppRepo;
    fn consents(&mut self) -> &mut dyn ConsentRepo;
    fn grants(&mut self) -> &mut dyn GrantRepo;
    fn revocations(&mut self) -> &mut dyn RevocationRepo;
    fn keys(&mut self) -> &mut dyn KeyRepo;
}

/// Repositories whose calls are kept together by [`Transaction::commit`].
#[async_trait]
pub trait Transaction: Repositories {
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// Registered mini programs.
#[async_trait]
pub trait AppRepo: Send {
    /// `AlreadyExists` when the app id is taken.
    async fn insert(&mut self, app: &AppRecord) -> StoreResult<()>;
    async fn get(&mut self, app_id: &str) -> StoreResult<Option<AppRecord>>;
    /// [`AppRepo::get`], read in order with feature switches (never from a snapshot a running
    /// switch has not yet replaced), for paths that mint from the features it shows.
    async fn get_in_order(&mut self, app_id: &str) -> StoreResult<Option<AppRecord>>;
    async fn count(&mut self) -> StoreResult<u64>;
    /// `false` when there is no such app.
    async fn set_secret(&mut self, app_id: &str, secret_hash: &SecretHash) -> StoreResult<bool>;
    /// Switches `enable` on and `disable` off in one statement, so concurrent switches never
    /// lose each other: the app as it now is (its row held until the transaction ends).
    async fn switch_features(
        &mut self,
        app_id: &str,
        enable: FeatureSet,
        disable: FeatureSet,
    ) -> StoreResult<Option<AppRecord>>;
}

/// What users decided (authorizations) and the modals waiting for them (prompts).
#[async_trait]
pub trait ConsentRepo: Send {
    /// Read in order with withdrawals (never from a snapshot a running withdrawal has not yet
    /// replaced), so whatever a grant mints from it is caught by the withdrawal's rule.
    async fn authorization(
        &mut self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<AuthorizationRecord>>;
    /// Atomically: granted |= grant; denied = (denied | deny) - granted.
    async fn record_decision(
        &mut self,
        user_id: &str,
        app_id: &str,
        grant: ScopeSet,
        deny: ScopeSet,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// The user's authorizations that still grant something, with each app's display name.
    async fn list(&mut self, user_id: &str) -> StoreResult<Vec<(AuthorizationRecord, String)>>;
    /// [`ConsentRepo::authorization`], held until the transaction ends, for a withdrawal that
    /// decides from it what to write.
    async fn hold_authorization(
        &mut self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<AuthorizationRecord>>;
    /// Takes `scopes` out of the grant: the scopes still granted (the row held until the
    /// transaction ends), or none when the user never decided for the app.
    async fn withdraw(
        &mut self,
        user_id: &str,
        app_id: &str,
        scopes: ScopeSet,
    ) -> StoreResult<Option<ScopeSet>>;
    /// Records when the authorization last changed.
    async fn stamp(&mut self, user_id: &str, app_id: &str, at: Timestamp) -> StoreResult<()>;
    async fn insert_prompt(&mut self, prompt: &PromptRecord) -> StoreResult<()>;
    async fn prompt(&mut self, prompt_hash: &SecretHash) -> StoreResult<Option<PromptRecord>>;
    /// Marks the prompt resolved: `false` if it already was.
    async fn resolve_prompt(
        &mut self,
        prompt_hash: &SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool>;
}

/// Auth codes and the refresh-token families that descend from them.
#[async_trait]
pub trait GrantRepo: Send {
    async fn insert_code(&mut self, code: &AuthCodeRecord) -> StoreResult<()>;
    async fn code(&mut self, code_hash: &SecretHash) -> StoreResult<Option<AuthCodeRecord>>;
    /// Spends the app's code, if unused and unexpired at `now`, in one atomic update: the code
    /// this call spent, or none.
    async fn spend_code(
        &mut self,
        code_hash: &SecretHash,
        app_id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<AuthCodeRecord>>;
    /// Keeps a grant's code at least until `until`.
    async fn keep_code_until(&mut self, grant_id: &str, until: Timestamp) -> StoreResult<()>;
    /// Deletes the user's unspent codes for the app that carry any of `scopes`.
    async fn delete_unspent_codes(
        &mut self,
        app_id: &str,
        user_id: &str,
        scopes: ScopeSet,
    ) -> StoreResult<()>;
    /// Marks a family revoked at `now` on its code: `false` when already marked or codeless.
    async fn mark_family_revoked(&mut self, family_id: &str, now: Timestamp) -> StoreResult<bool>;
    /// Whether the family's code is marked revoked.
    async fn family_revoked(&mut self, family_id: &str) -> StoreResult<bool>;
    async fn insert_refresh_token(&mut self, token: &RefreshTokenRecord) -> StoreResult<()>;
    async fn refresh_token(
        &mut self,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>>;
    /// Spends the app's refresh token, if unused, unrevoked and unexpired at `now`, in one
    /// atomic update: the token this call spent, or none. Takes its family's code row first,
    /// as [`GrantRepo::mark_family_revoked`] does: one lock order, so the two queue.
    async fn spend_refresh_token(
        &mut self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<RefreshTokenRecord>>;
    /// Revokes the family's refresh tokens at `now`.
    async fn revoke_family_tokens(&mut self, family_id: &str, now: Timestamp) -> StoreResult<()>;
    /// Revokes at `now` the app's refresh tokens (of `user_id`, when given) that carry any of
    /// `scopes`.
    async fn revoke_tokens_carrying(
        &mut self,
        app_id: &str,
        user_id: Option<&str>,
        scopes: ScopeSet,
        now: Timestamp,
    ) -> StoreResult<()>;
}

/// Width in nanoseconds of the windows token rules are counted in for the per-app quota: a
/// rule counts until the end of the window it expires in (migration 0002 computes the same).
pub const QUOTA_WINDOW_NANOS: i64 = 300_000_000_000;

/// The revocation log verifiers follow.
#[async_trait]
pub trait RevocationRepo: Send {
    /// Appends a rule under a lock, so sequence numbers become visible in order, and counts a
    /// token rule against its app. None, and nothing written, when the log already holds a
    /// rule for the same token or grant family (app, user, scopes and token or grant id).
    async fn append(&mut self, rule: &NewRevocation) -> StoreResult<Option<RevocationRule>>;
    /// Holds the app's token rules until the transaction ends: a count and an append after it
    /// meet no other transaction's in between. Only in a transaction.
    async fn hold_token_rules(&mut self, app_id: &str) -> StoreResult<()>;
    /// Whether the log holds a rule for the same token as `rule` (app, user, scopes, token id).
    async fn holds_token_rule(&mut self, rule: &NewRevocation) -> StoreResult<bool>;
    /// The app's token rules that count at `now`, each until the end of the
    /// [`QUOTA_WINDOW_NANOS`] window it expires in.
    async fn live_token_rules(&mut self, app_id: &str, now: Timestamp) -> StoreResult<u64>;
    async fn after(&mut self, sequence: u64, limit: u32) -> StoreResult<Vec<RevocationRule>>;
    /// The rule at `sequence`, if the log still holds it.
    async fn at(&mut self, sequence: u64) -> StoreResult<Option<RevocationRule>>;
    /// Rules that could void a token of (app, user) issued at `issued_at`.
    async fn for_subject(
        &mut self,
        app_id: &str,
        user_id: &str,
        issued_at: Timestamp,
    ) -> StoreResult<Vec<RevocationRule>>;
}

/// What the master key seals: token keys, and secrets generated once (the pairwise-id secret).
#[async_trait]
pub trait KeyRepo: Send {
    /// `AlreadyExists` when the key id is taken.
    async fn insert(&mut self, key: &StoredTokenKey) -> StoreResult<()>;
    async fn list(&mut self) -> StoreResult<Vec<StoredTokenKey>>;
    /// Ends a key's life at `now` (it neither mints nor verifies from then on): `false` if no
    /// such key is alive.
    async fn retire(&mut self, key_id: &str, now: Timestamp) -> StoreResult<bool>;
    /// Replaces a key's sealed form if it is still `old` (re-sealing under a new master key;
    /// another replica may have done it first: `false`).
    async fn reseal(&mut self, key_id: &str, old: &str, new: &str) -> StoreResult<bool>;
    async fn secret(&mut self, name: &str) -> StoreResult<Option<String>>;
    /// Stores a secret under `name` once: `AlreadyExists` if another replica stored one first.
    async fn insert_secret(&mut self, name: &str, sealed: &str, now: Timestamp) -> StoreResult<()>;
    /// Replaces a secret's sealed form if it is still `old`.
    async fn reseal_secret(&mut self, name: &str, old: &str, new: &str) -> StoreResult<bool>;
}
