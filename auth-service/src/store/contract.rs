//! The contract the services call: [`AuthStore`] hands out one repository per entity.

use async_trait::async_trait;
use miniprogram_token::{RevocationRule, ScopeSet, Timestamp};
use sql_backend::StoreResult;

use crate::model::{
    AppRecord, AuthCodeRecord, AuthorizationChange, AuthorizationRecord, ChangeReason,
    ConsentEvent, ConsentRecord, FeatureSet, NewRevocation, PromptRecord, RefreshTokenRecord,
    ScopePurpose, SecretHash, StoredTokenKey,
};

/// Rows removed by one sweep, per table (the ended windows of the per-app count of token
/// rules are `revocation_quota`'s).
pub type SweepCounts = std::collections::BTreeMap<&'static str, u64>;

/// Everything auth-service keeps.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Repositories whose calls each run on their own.
    fn repositories(&self) -> Box<dyn Repositories>;
    /// Repositories whose calls run in one transaction (rolled back if dropped uncommitted).
    async fn begin(&self) -> StoreResult<Box<dyn Transaction>>;
    /// A transaction holding the app's count of rules ([`RevocationRepo::hold_app_rules`]),
    /// waiting for it without a pooled connection (`sql_backend::Pools::begin_locked`), so one
    /// app's calls cannot take the pool from the others.
    async fn begin_holding_app_rules(&self, app_id: &str) -> StoreResult<Box<dyn Transaction>>;
    /// A transaction holding the app's features ([`AppRepo::hold_features_shared`] shares
    /// them): a feature switch-off, so every answer that read the features before it has
    /// committed, and every one after it reads them switched.
    async fn begin_switching_features(&self, app_id: &str) -> StoreResult<Box<dyn Transaction>>;
    /// A transaction holding what waits for the user and the app
    /// ([`ConsentRepo::hold_pending`]), waiting for it without a pooled connection, so one
    /// user's requests to one app cannot take the pool from the others.
    async fn begin_holding_pending(
        &self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Box<dyn Transaction>>;
    /// A transaction that spends the refresh token `secret_hash`, in the secret's
    /// turn (`sql_backend::Pools::begin_in_turn`): concurrent spends of one secret (a retry
    /// storm, a replay) wait for each other without a pooled connection, not each on its row.
    async fn begin_spending(&self, secret_hash: &SecretHash) -> StoreResult<Box<dyn Transaction>>;
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
    fn privacy(&mut self) -> &mut dyn PrivacyRepo;
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
    /// Shares the app's features with other holders until the transaction ends: a
    /// switch-off ([`AuthStore::begin_switching_features`]) running now commits first, one
    /// starting later waits for this transaction. Only in a transaction.
    async fn hold_features_shared(&mut self, app_id: &str) -> StoreResult<()>;
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
    /// Atomically: granted |= grant; denied = (denied | deny) - granted; the declaration
    /// version rises to `version` (never falls). While a consent scope is granted the row keeps
    /// a grant id, taking `grant_ref` when it has none: the grant id it keeps now, if any.
    /// Consent that lapsed under a newer declaration is withdrawn first, by the caller.
    async fn record_decision(&mut self, decision: &Decision<'_>) -> StoreResult<Option<String>>;
    /// The user's authorizations (granting something or not), with each app's display name.
    async fn list(&mut self, user_id: &str) -> StoreResult<Vec<(AuthorizationRecord, String)>>;
    /// [`ConsentRepo::authorization`], held until the transaction ends, for a withdrawal that
    /// decides from it what to write.
    async fn hold_authorization(
        &mut self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<AuthorizationRecord>>;
    /// Takes `scopes` out of the grant (and its grant id once no consent scope is left): the
    /// scopes still granted (the row held until the transaction ends), or none when the user
    /// never decided for the app.
    async fn withdraw(
        &mut self,
        user_id: &str,
        app_id: &str,
        scopes: ScopeSet,
    ) -> StoreResult<Option<ScopeSet>>;
    /// Takes `scopes` out of every user's grant for the app.
    async fn withdraw_from_all(&mut self, app_id: &str, scopes: ScopeSet) -> StoreResult<u64>;
    /// Forgets the user: their authorizations, prompts, codes and refresh tokens.
    async fn erase_user(&mut self, user_id: &str) -> StoreResult<()>;
    /// Remembers that the app was given the user's app-scoped id.
    async fn disclose_user_id(
        &mut self,
        user_id: &str,
        app_id: &str,
        open_user_id: &str,
    ) -> StoreResult<()>;
    /// Records when the authorization last changed.
    async fn stamp(&mut self, user_id: &str, app_id: &str, at: Timestamp) -> StoreResult<()>;
    async fn insert_prompt(&mut self, prompt: &PromptRecord) -> StoreResult<()>;
    async fn prompt(&mut self, prompt_hash: &SecretHash) -> StoreResult<Option<PromptRecord>>;
    /// Holds what waits for the user and the app, their prompts and unexchanged codes, until
    /// the transaction ends: a count or an eviction after it meets no other transaction's
    /// prompt or code for them in between. Only in a transaction.
    async fn hold_pending(&mut self, user_id: &str, app_id: &str) -> StoreResult<()>;
    /// The user's prompts for the app that are neither answered nor expired at `now`.
    async fn open_prompts(
        &mut self,
        user_id: &str,
        app_id: &str,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Marks the prompt resolved: `false` if it already was.
    async fn resolve_prompt(
        &mut self,
        prompt_hash: &SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool>;
}

/// One consent decision, as [`ConsentRepo::record_decision`] stores it.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub user_id: &'a str,
    pub app_id: &'a str,
    pub grant: ScopeSet,
    pub deny: ScopeSet,
    /// The declaration version the decision was given under (0: none, changes nothing).
    pub version: i64,
    /// The grant id for consent tokens, kept if the row already has one.
    pub grant_ref: Option<&'a str>,
    pub now: Timestamp,
}

impl<'a> Decision<'a> {
    /// A decision under no declaration and with no grant id.
    pub fn new(
        user_id: &'a str,
        app_id: &'a str,
        grant: ScopeSet,
        deny: ScopeSet,
        now: Timestamp,
    ) -> Self {
        Decision {
            user_id,
            app_id,
            grant,
            deny,
            version: 0,
            grant_ref: None,
            now,
        }
    }
}

/// Consent history, the per-app change feed, and privacy declarations.
#[async_trait]
pub trait PrivacyRepo: Send {
    /// Appends a record (its `record_id` is ignored and given by the store).
    async fn append_record(&mut self, record: &ConsentRecord) -> StoreResult<()>;
    /// Appends, for every user whose grant for the app carries any of `scopes`, a record of
    /// `event` for the scopes it carries; the count.
    async fn append_records_for_scopes(
        &mut self,
        app_id: &str,
        scopes: ScopeSet,
        event: ConsentEvent,
        now: Timestamp,
        expire_at: Timestamp,
    ) -> StoreResult<u64>;
    /// The user's records before `before` (0: the newest), newest first, of one app if given.
    async fn records(
        &mut self,
        user_id: &str,
        app_id: Option<&str>,
        before: u64,
        limit: u32,
    ) -> StoreResult<Vec<ConsentRecord>>;
    /// The app's declared purposes.
    async fn declaration(&mut self, app_id: &str) -> StoreResult<Vec<ScopePurpose>>;
    /// The app's declaration version and purposes, read together in one statement (so a
    /// concurrent replacement is seen whole or not at all); none when there is no such app.
    async fn declaration_in_force(
        &mut self,
        app_id: &str,
    ) -> StoreResult<Option<(i64, Vec<ScopePurpose>)>>;
    /// Replaces the app's declaration if `version` is above the one in force: the app as it
    /// now is, or none (no such app, or the version did not rise).
    async fn replace_declaration(
        &mut self,
        app_id: &str,
        version: i64,
        purposes: &[ScopePurpose],
        now: Timestamp,
    ) -> StoreResult<Option<AppRecord>>;
    /// Appends a change (its `sequence` is ignored and given by the store). Call it after
    /// [`RevocationRepo::append`] in the same transaction, whose lock keeps sequences in
    /// commit order.
    async fn append_change(&mut self, change: &AuthorizationChange) -> StoreResult<()>;
    /// Appends a change for every user whose grant for the app carries any of `scopes` and
    /// whom the app can recognise; the count. Same ordering rule as [`Self::append_change`].
    async fn append_changes_for_scopes(
        &mut self,
        app_id: &str,
        scopes: ScopeSet,
        reason: ChangeReason,
        now: Timestamp,
        expire_at: Timestamp,
    ) -> StoreResult<u64>;
    /// The app's changes after `after`, oldest first.
    async fn changes_after(
        &mut self,
        app_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<AuthorizationChange>>;
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
    /// Deletes the user's unspent codes for the app other than `new_code`, but the `keep - 1`
    /// issued last; how many it deleted.
    async fn evict_unspent_codes_beyond(
        &mut self,
        (app_id, user_id): (&str, &str),
        new_code: &SecretHash,
        keep: u32,
    ) -> StoreResult<u64>;
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
    /// Deletes the family's spent refresh token of `generation`, if any; how many (0 or 1).
    async fn forget_spent_refresh_token(
        &mut self,
        family_id: &str,
        generation: u64,
    ) -> StoreResult<u64>;
    /// Deletes the codes and refresh tokens of the user's grants for the app (one exchanged
    /// code each) other than `new_grant`, but the `keep - 1` kept: grants not revoked as a
    /// family first, then the most recently refreshed. How many grants it deleted.
    async fn evict_grants_beyond(
        &mut self,
        (app_id, user_id): (&str, &str),
        new_grant: &str,
        keep: u32,
    ) -> StoreResult<u64>;
    /// Revokes the family's refresh tokens at `now`.
    async fn revoke_family_tokens(&mut self, family_id: &str, now: Timestamp) -> StoreResult<()>;
    /// Revokes at `now` the app's unspent refresh tokens (of `user_id`, when given) that carry
    /// any of `scopes`. Spent ones are left alone: they refresh nothing, and a refresh holding
    /// its spent token's row may be deleting one of them.
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
    /// rule the app's calls cause (one token's, or one grant family's) against its app. None,
    /// and nothing written, when the log already holds a rule for the same token or grant
    /// family (app, user, scopes and token or grant id).
    async fn append(&mut self, rule: &NewRevocation) -> StoreResult<Option<RevocationRule>>;
    /// Holds the app's count of rules until the transaction ends: a count and an append after
    /// it meet no other transaction's in between. Only in a transaction.
    async fn hold_app_rules(&mut self, app_id: &str) -> StoreResult<()>;
    /// Whether the log holds a rule for the same token as `rule` (app, user, scopes, token id).
    async fn holds_token_rule(&mut self, rule: &NewRevocation) -> StoreResult<bool>;
    /// The app's token and family rules that count at `now`, each until the end of the
    /// [`QUOTA_WINDOW_NANOS`] window it expires in.
    async fn live_app_rules(&mut self, app_id: &str, now: Timestamp) -> StoreResult<u64>;
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
