//! auth-service's repositories, written once for SQLite and PostgreSQL over
//! [`sql_backend::Session`]; the engines differ here only where a lock is taken
//! (`lock_rows`, `lock`).

use async_trait::async_trait;
use miniprogram_token::{RevocationRule, Scope, ScopeSet, Timestamp};
use sha2::{Digest, Sha256};
use sql_backend::Access::{Hold, InOrder, Read, Write};
use sql_backend::{Arg, Columns, Engine, Migrations, Pools, Session, StoreResult, args};

use super::contract::{
    AppRepo, AuthStore, ConsentRepo, Decision, GrantRepo, KeyRepo, PrivacyRepo, QUOTA_WINDOW_NANOS,
    Repositories, RevocationRepo, SweepCounts, Transaction,
};
use crate::model::{
    AppRecord, AuthCodeRecord, AuthorizationChange, AuthorizationRecord, ChangeReason,
    ChangeSubject, ConsentEvent, ConsentRecord, FeatureSet, NewRevocation, PromptRecord,
    RefreshTokenRecord, ScopePurpose, SecretHash, StoredTokenKey, Trigger,
};

/// Lock key serialising revocation appends ("revo" in ASCII).
const REVOCATION_APPEND_LOCK: i64 = 0x7265_766f;
/// High half of the lock key serialising one app's counted revocations ("quot"); the low half
/// is a hash of the app id.
const TOKEN_QUOTA_LOCK: i64 = 0x7175_6f74 << 32;
/// High half of the lock key serialising what waits for one user and app, their prompts and
/// unexchanged codes ("pend"); the low half is a hash of both ids.
const PENDING_LOCK: i64 = 0x7065_6e64 << 32;

/// High half of the lock key a feature switch-off holds and answers share ("feat"); the low
/// half is a hash of the app id.
const FEATURES_LOCK: i64 = 0x6665_6174 << 32;

/// The lock key of one app's features.
fn features_key(app_id: &str) -> i64 {
    lock_key(FEATURES_LOCK, &[app_id])
}

/// The lock key of one app's counted revocations.
fn app_rules_key(app_id: &str) -> i64 {
    lock_key(TOKEN_QUOTA_LOCK, &[app_id])
}

/// The lock key of what waits for one user and app.
fn pending_key(user_id: &str, app_id: &str) -> i64 {
    lock_key(PENDING_LOCK, &[user_id, app_id])
}

/// The lock key of `parts` (ids, 0-separated) under `high`.
fn lock_key(high: i64, parts: &[&str]) -> i64 {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let hash = hash.finalize();
    high | i64::from(u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]))
}
/// One app, read plainly or in order.
const APP: &str = "SELECT * FROM apps WHERE app_id = $1";
/// One authorization, read in order or held.
const AUTHORIZATION: &str = "SELECT * FROM authorizations WHERE user_id = $1 AND app_id = $2";
/// What an erasure deletes, by user id, each through an index (migrations 0006 and 0008).
const ERASE_USER: [&str; 4] = [
    "DELETE FROM authorizations WHERE user_id = $1",
    "DELETE FROM prompts WHERE user_id = $1",
    "DELETE FROM auth_codes WHERE user_id = $1",
    "DELETE FROM refresh_tokens WHERE user_id = $1",
];
/// A user's grants for an app (one exchanged code each, through migration 0007's index) other
/// than `$3`, but the `$4` kept: those not revoked as a family first, then those refreshed
/// last (each refresh moves its code's `purge_at` on).
const GRANTS_BEYOND: &str = "SELECT grant_id FROM auth_codes
    WHERE app_id = $1 AND user_id = $2 AND used_at IS NOT NULL AND grant_id <> $3
    ORDER BY (family_revoked_at IS NULL) DESC, purge_at DESC, grant_id LIMIT $5 OFFSET $4";
/// Deletes a user's unspent codes for an app (found through the user's index, migration
/// 0006) other than `$3`, but the `$4` issued last. `used_at IS NULL` twice: PostgreSQL checks
/// the outer one again on a row a running exchange spends meanwhile, and so leaves that grant's
/// code alone.
const UNSPENT_CODES_BEYOND: &str = "DELETE FROM auth_codes WHERE used_at IS NULL AND code_hash IN (
    SELECT code_hash FROM auth_codes
    WHERE user_id = $2 AND app_id = $1 AND used_at IS NULL AND code_hash <> $3
    ORDER BY created_at DESC, code_hash LIMIT $5 OFFSET $4)";
/// Deletes a family's spent refresh token of one generation, found through the family's
/// index by generation (migration 0009).
const FORGET_SPENT_REFRESH_TOKEN: &str = "DELETE FROM refresh_tokens
    WHERE family_id = $1 AND generation = $2 AND used_at IS NOT NULL";
/// `sweep!(table, key columns, expiry column)`: the table's name and its bounded delete, by
/// primary key, of rows expired at `$1`, `$2` at most, for SQLite and for PostgreSQL. On
/// PostgreSQL the sweep passes over rows a running transaction holds (`SKIP LOCKED`; they go
/// in a later round): it never waits, so it never holds one expired row while it waits on
/// another that a transaction holding the first one wants.
#[rustfmt::skip]
macro_rules! sweep {
    ($table:literal, $key:literal, $expiry:literal) => {
        ($table,
            concat!(
                "DELETE FROM ", $table, " WHERE (", $key, ") IN (SELECT ", $key, " FROM ", $table,
                " WHERE ", $expiry, " <= $1 LIMIT $2)"
            ),
            concat!(
                "DELETE FROM ", $table, " WHERE (", $key, ") IN (SELECT ", $key, " FROM ", $table,
                " WHERE ", $expiry, " <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
        )
    };
}
/// `withdraw!(condition)`: takes `$1` out of the grants `condition` picks, and the grant id
/// of each left with no scope of `$2` (those needing consent).
macro_rules! withdraw {
    ($condition:literal) => {
        concat!(
            "UPDATE authorizations SET granted = granted & ~$1,
               grant_ref = CASE WHEN (granted & ~$1 & $2) = 0 THEN NULL ELSE grant_ref END
             WHERE ",
            $condition
        )
    };
}
/// Every table with rows that expire.
const SWEEPS: [(&str, &str, &str); 8] = [
    sweep!("prompts", "prompt_hash", "expires_at"),
    sweep!("auth_codes", "code_hash", "purge_at"),
    sweep!("refresh_tokens", "token_hash", "expires_at"),
    sweep!("revocations", "sequence", "expire_at"),
    sweep!("revocation_quota", "app_id, expire_by", "expire_by"),
    sweep!("token_keys", "key_id", "expire_at"),
    sweep!("consent_records", "record_id", "expire_at"),
    sweep!("authorization_changes", "sequence", "expire_at"),
];

impl From<FeatureSet> for Arg<'_> {
    fn from(f: FeatureSet) -> Self {
        Arg::Int(Some(i64::from(f.bits())))
    }
}

/// auth-service's tables in one database.
pub struct SqlAuthStore {
    pools: Pools,
}

impl SqlAuthStore {
    /// Opens `url` and applies `migrations` (those of its engine).
    pub async fn open(url: &str, migrations: Migrations) -> StoreResult<Self> {
        let pools = Pools::open(url, migrations).await?;
        Ok(SqlAuthStore { pools })
    }
}

#[async_trait]
impl AuthStore for SqlAuthStore {
    fn repositories(&self) -> Box<dyn Repositories> {
        Box::new(Repos(self.pools.session()))
    }

    async fn begin(&self) -> StoreResult<Box<dyn Transaction>> {
        Ok(Box::new(Repos(self.pools.begin().await?)))
    }

    async fn begin_holding_app_rules(&self, app_id: &str) -> StoreResult<Box<dyn Transaction>> {
        let key = app_rules_key(app_id);
        Ok(Box::new(Repos(self.pools.begin_locked(key).await?)))
    }

    async fn begin_switching_features(&self, app_id: &str) -> StoreResult<Box<dyn Transaction>> {
        let key = features_key(app_id);
        Ok(Box::new(Repos(self.pools.begin_locked(key).await?)))
    }

    async fn begin_holding_pending(
        &self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Box<dyn Transaction>> {
        let key = pending_key(user_id, app_id);
        Ok(Box::new(Repos(self.pools.begin_locked(key).await?)))
    }

    async fn begin_spending(&self, secret_hash: &SecretHash) -> StoreResult<Box<dyn Transaction>> {
        let [a, b, c, d, e, f, g, h, ..] = *secret_hash;
        let key = i64::from_be_bytes([a, b, c, d, e, f, g, h]);
        Ok(Box::new(Repos(self.pools.begin_in_turn(key).await?)))
    }

    async fn sweep_expired(&self, now: Timestamp, batch: u32) -> StoreResult<SweepCounts> {
        let mut counts = SweepCounts::new();
        let engine = self.pools.engine();
        let mut session = self.pools.session();
        for (table, sqlite, postgres) in SWEEPS {
            let sql = match engine {
                Engine::Sqlite => sqlite,
                Engine::Postgres => postgres,
            };
            counts.insert(table, session.execute(sql, args![now, batch]).await?);
        }
        Ok(counts)
    }

    async fn close(&self) {
        self.pools.close().await;
    }
}

/// Every repository, over one session.
struct Repos(Session);

impl Repositories for Repos {
    fn apps(&mut self) -> &mut dyn AppRepo {
        self
    }
    fn consents(&mut self) -> &mut dyn ConsentRepo {
        self
    }
    fn grants(&mut self) -> &mut dyn GrantRepo {
        self
    }
    fn revocations(&mut self) -> &mut dyn RevocationRepo {
        self
    }
    fn keys(&mut self) -> &mut dyn KeyRepo {
        self
    }
    fn privacy(&mut self) -> &mut dyn PrivacyRepo {
        self
    }
}

#[async_trait]
impl Transaction for Repos {
    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await
    }
}

#[async_trait]
impl AppRepo for Repos {
    async fn insert(&mut self, a: &AppRecord) -> StoreResult<()> {
        let sql = "INSERT INTO apps (app_id, display_name, secret_hash, features, created_at,
                     declaration_version, declared_scopes, declared_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let args = args! {
            &a.app_id, &a.display_name, &a.secret_hash, a.features, a.created_at,
            a.declaration_version, a.declared_scopes, a.declared_at
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn get(&mut self, app_id: &str) -> StoreResult<Option<AppRecord>> {
        self.0.first(Read, APP, args![app_id], app).await
    }

    async fn get_in_order(&mut self, app_id: &str) -> StoreResult<Option<AppRecord>> {
        self.0.first(InOrder, APP, args![app_id], app).await
    }

    async fn count(&mut self) -> StoreResult<u64> {
        let sql = "SELECT COUNT(*) AS n FROM apps";
        let decode = |r: &dyn Columns| r.uint("n");
        Ok(self.0.first(Read, sql, args![], decode).await?.unwrap_or(0))
    }

    async fn hold_features_shared(&mut self, app_id: &str) -> StoreResult<()> {
        self.0.lock_shared(features_key(app_id)).await
    }

    async fn set_secret(&mut self, app_id: &str, hash: &SecretHash) -> StoreResult<bool> {
        let sql = "UPDATE apps SET secret_hash = $1 WHERE app_id = $2";
        Ok(self.0.execute(sql, args![hash, app_id]).await? == 1)
    }

    async fn switch_features(
        &mut self,
        app_id: &str,
        enable: FeatureSet,
        disable: FeatureSet,
    ) -> StoreResult<Option<AppRecord>> {
        let sql = "UPDATE apps SET features = (features | $1) & ~$2 WHERE app_id = $3 RETURNING *";
        let args = args![enable, disable, app_id];
        self.0.first(Write, sql, args, app).await
    }
}

#[async_trait]
impl ConsentRepo for Repos {
    async fn authorization(
        &mut self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<AuthorizationRecord>> {
        let args = args![user_id, app_id];
        self.0
            .first(InOrder, AUTHORIZATION, args, authorization)
            .await
    }

    async fn record_decision(&mut self, d: &Decision<'_>) -> StoreResult<Option<String>> {
        let sql = "INSERT INTO authorizations
               (user_id, app_id, granted, denied, updated_at, declaration_version, grant_ref)
             VALUES ($1, $2, $3, $4 & ~$3, $5, $6, CASE WHEN ($3 & $7) <> 0 THEN $8 END)
             ON CONFLICT (user_id, app_id) DO UPDATE SET
               granted = authorizations.granted | $3,
               denied = (authorizations.denied | $4) & ~(authorizations.granted | $3),
               declaration_version = CASE WHEN authorizations.declaration_version < $6
                            THEN $6 ELSE authorizations.declaration_version END,
               grant_ref = CASE WHEN ($3 & $7) <> 0 AND authorizations.grant_ref IS NULL
                            THEN $8 ELSE authorizations.grant_ref END,
               updated_at = $5
             RETURNING grant_ref";
        let args = args! {
            d.user_id, d.app_id, d.grant, d.deny, d.now, d.version, ScopeSet::NEEDING_CONSENT,
            d.grant_ref
        };
        let decode = |r: &dyn Columns| r.opt_text("grant_ref");
        Ok(self.0.first(Write, sql, args, decode).await?.flatten())
    }

    async fn list(&mut self, user_id: &str) -> StoreResult<Vec<(AuthorizationRecord, String)>> {
        let sql = "SELECT a.*, apps.display_name FROM authorizations a
                   JOIN apps ON apps.app_id = a.app_id
                   WHERE a.user_id = $1 ORDER BY a.app_id";
        let decode = |r: &dyn Columns| Ok((authorization(r)?, r.text("display_name")?));
        self.0.all(Read, sql, args![user_id], decode).await
    }

    async fn hold_authorization(
        &mut self,
        user_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<AuthorizationRecord>> {
        let args = args![user_id, app_id];
        self.0.first(Hold, AUTHORIZATION, args, authorization).await
    }

    async fn withdraw(
        &mut self,
        user_id: &str,
        app_id: &str,
        scopes: ScopeSet,
    ) -> StoreResult<Option<ScopeSet>> {
        let sql = withdraw!("user_id = $3 AND app_id = $4 RETURNING granted");
        let args = args![scopes, ScopeSet::NEEDING_CONSENT, user_id, app_id];
        let decode = |r: &dyn Columns| r.scopes("granted");
        self.0.first(Write, sql, args, decode).await
    }

    async fn withdraw_from_all(&mut self, app_id: &str, scopes: ScopeSet) -> StoreResult<u64> {
        let sql = withdraw!("app_id = $3 AND (granted & $1) <> 0");
        let args = args![scopes, ScopeSet::NEEDING_CONSENT, app_id];
        self.0.execute(sql, args).await
    }

    async fn erase_user(&mut self, user_id: &str) -> StoreResult<()> {
        for sql in ERASE_USER {
            self.0.execute(sql, args![user_id]).await?;
        }
        Ok(())
    }

    async fn disclose_user_id(
        &mut self,
        user_id: &str,
        app_id: &str,
        open_user_id: &str,
    ) -> StoreResult<()> {
        let sql = "UPDATE authorizations SET open_user_id = $3
                   WHERE user_id = $1 AND app_id = $2 AND open_user_id IS NULL";
        let args = args![user_id, app_id, open_user_id];
        self.0.execute(sql, args).await.map(drop)
    }

    async fn stamp(&mut self, user_id: &str, app_id: &str, at: Timestamp) -> StoreResult<()> {
        let sql = "UPDATE authorizations SET updated_at = $1 WHERE user_id = $2 AND app_id = $3";
        self.0
            .execute(sql, args![at, user_id, app_id])
            .await
            .map(drop)
    }

    async fn insert_prompt(&mut self, p: &PromptRecord) -> StoreResult<()> {
        let sql = "INSERT INTO prompts (prompt_hash, user_id, app_id, scopes, previously_denied,
                     created_at, expires_at, resolved_at, declaration_version, trigger_kind,
                     purposes)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        let purposes = encode_purposes(&p.purposes);
        let args = args! {
            &p.prompt_hash, &p.user_id, &p.app_id, p.scopes, p.previously_denied, p.created_at,
            p.expires_at, p.resolved_at, p.declaration_version, trigger_code(p.trigger),
            &purposes
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn prompt(&mut self, hash: &SecretHash) -> StoreResult<Option<PromptRecord>> {
        let sql = "SELECT * FROM prompts WHERE prompt_hash = $1";
        self.0.first(Read, sql, args![hash], prompt).await
    }

    async fn hold_pending(&mut self, user_id: &str, app_id: &str) -> StoreResult<()> {
        self.0.lock(pending_key(user_id, app_id)).await
    }

    async fn open_prompts(
        &mut self,
        user_id: &str,
        app_id: &str,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let sql = "SELECT COUNT(*) AS n FROM prompts
                   WHERE user_id = $1 AND app_id = $2 AND resolved_at IS NULL AND expires_at > $3";
        let decode = |r: &dyn Columns| r.uint("n");
        let args = args![user_id, app_id, now];
        Ok(self.0.first(Read, sql, args, decode).await?.unwrap_or(0))
    }

    async fn resolve_prompt(&mut self, hash: &SecretHash, now: Timestamp) -> StoreResult<bool> {
        let sql =
            "UPDATE prompts SET resolved_at = $1 WHERE prompt_hash = $2 AND resolved_at IS NULL";
        Ok(self.0.execute(sql, args![now, hash]).await? == 1)
    }
}

#[async_trait]
impl GrantRepo for Repos {
    async fn insert_code(&mut self, c: &AuthCodeRecord) -> StoreResult<()> {
        let sql =
            "INSERT INTO auth_codes (code_hash, grant_id, app_id, user_id, scopes, created_at,
                     expires_at, used_at, purge_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let args = args! {
            &c.code_hash, &c.grant_id, &c.app_id, &c.user_id, c.scopes, c.created_at,
            c.expires_at, c.used_at, c.purge_at
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn code(&mut self, hash: &SecretHash) -> StoreResult<Option<AuthCodeRecord>> {
        let sql = "SELECT * FROM auth_codes WHERE code_hash = $1";
        self.0.first(Read, sql, args![hash], code).await
    }

    async fn spend_code(
        &mut self,
        hash: &SecretHash,
        app_id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<AuthCodeRecord>> {
        let sql = "UPDATE auth_codes SET used_at = $1
                   WHERE code_hash = $2 AND app_id = $3 AND used_at IS NULL AND expires_at > $1
                   RETURNING *";
        let args = args![now, hash, app_id];
        self.0.first(Write, sql, args, code).await
    }

    async fn keep_code_until(&mut self, grant_id: &str, until: Timestamp) -> StoreResult<()> {
        let sql =
            "UPDATE auth_codes SET purge_at = CASE WHEN purge_at < $1 THEN $1 ELSE purge_at END
                   WHERE grant_id = $2";
        self.0.execute(sql, args![until, grant_id]).await.map(drop)
    }

    async fn delete_unspent_codes(
        &mut self,
        app_id: &str,
        user_id: &str,
        scopes: ScopeSet,
    ) -> StoreResult<()> {
        let sql = "DELETE FROM auth_codes
                   WHERE app_id = $1 AND user_id = $2 AND used_at IS NULL AND (scopes & $3) <> 0";
        self.0
            .execute(sql, args![app_id, user_id, scopes])
            .await
            .map(drop)
    }

    async fn evict_unspent_codes_beyond(
        &mut self,
        (app_id, user_id): (&str, &str),
        new_code: &SecretHash,
        keep: u32,
    ) -> StoreResult<u64> {
        let others = keep.saturating_sub(1);
        let args = args![app_id, user_id, new_code, others, i64::MAX];
        self.0.execute(UNSPENT_CODES_BEYOND, args).await
    }

    async fn mark_family_revoked(&mut self, family_id: &str, now: Timestamp) -> StoreResult<bool> {
        let sql = "UPDATE auth_codes SET family_revoked_at = $1
                   WHERE grant_id = $2 AND family_revoked_at IS NULL";
        Ok(self.0.execute(sql, args![now, family_id]).await? > 0)
    }

    async fn family_revoked(&mut self, family_id: &str) -> StoreResult<bool> {
        let sql = "SELECT family_revoked_at FROM auth_codes WHERE grant_id = $1";
        let decode = |r: &dyn Columns| r.opt_int("family_revoked_at");
        let marked = self.0.first(Read, sql, args![family_id], decode).await?;
        Ok(marked.flatten().is_some())
    }

    async fn insert_refresh_token(&mut self, t: &RefreshTokenRecord) -> StoreResult<()> {
        let sql = "INSERT INTO refresh_tokens (token_hash, family_id, app_id, user_id, scopes,
                     created_at, expires_at, used_at, revoked_at, generation)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        let generation = i64::try_from(t.generation).unwrap_or(i64::MAX);
        let args = args! {
            &t.token_hash, &t.family_id, &t.app_id, &t.user_id, t.scopes, t.created_at,
            t.expires_at, t.used_at, t.revoked_at, generation
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn refresh_token(
        &mut self,
        hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let sql = "SELECT * FROM refresh_tokens WHERE token_hash = $1";
        self.0.first(Read, sql, args![hash], refresh_token).await
    }

    async fn spend_refresh_token(
        &mut self,
        hash: &SecretHash,
        app_id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let lock = "SELECT 1 FROM auth_codes a JOIN refresh_tokens r ON r.family_id = a.grant_id
                    WHERE r.token_hash = $1 FOR UPDATE OF a";
        self.0.lock_rows(lock, args![hash]).await?;
        let sql = "UPDATE refresh_tokens SET used_at = $1
                   WHERE token_hash = $2 AND app_id = $3 AND used_at IS NULL AND revoked_at IS NULL
                     AND expires_at > $1
                   RETURNING *";
        let args = args![now, hash, app_id];
        self.0.first(Write, sql, args, refresh_token).await
    }

    async fn forget_spent_refresh_token(
        &mut self,
        family_id: &str,
        generation: u64,
    ) -> StoreResult<u64> {
        let generation = i64::try_from(generation).unwrap_or(i64::MAX);
        let args = args![family_id, generation];
        self.0.execute(FORGET_SPENT_REFRESH_TOKEN, args).await
    }

    async fn evict_grants_beyond(
        &mut self,
        (app_id, user_id): (&str, &str),
        new_grant: &str,
        keep: u32,
    ) -> StoreResult<u64> {
        let others = keep.saturating_sub(1);
        let args = args![app_id, user_id, new_grant, others, i64::MAX];
        let decode = |r: &dyn Columns| r.text("grant_id");
        // Read, not held: each code row is locked by its delete, before its family's tokens,
        // the order every other statement on both takes (`spend_refresh_token`), and families
        // in grant id order, as `revoke_tokens_carrying` takes an app's tokens.
        let mut families = self.0.all(Read, GRANTS_BEYOND, args, decode).await?;
        families.sort_unstable();
        for family in &families {
            let sql = "DELETE FROM auth_codes WHERE grant_id = $1";
            self.0.execute(sql, args![family]).await?;
            let sql = "DELETE FROM refresh_tokens WHERE family_id = $1";
            self.0.execute(sql, args![family]).await?;
        }
        Ok(families.len() as u64)
    }

    async fn revoke_family_tokens(&mut self, family_id: &str, now: Timestamp) -> StoreResult<()> {
        let sql =
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL";
        self.0.execute(sql, args![now, family_id]).await.map(drop)
    }

    async fn revoke_tokens_carrying(
        &mut self,
        app_id: &str,
        user_id: Option<&str>,
        scopes: ScopeSet,
        now: Timestamp,
    ) -> StoreResult<()> {
        // Held in grant id order first, as an eviction takes families (`evict_grants_beyond`).
        let lock = "SELECT 1 FROM refresh_tokens
                    WHERE app_id = $1 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2)
                      AND (scopes & $3) <> 0 AND revoked_at IS NULL AND used_at IS NULL
                    ORDER BY family_id, token_hash FOR UPDATE";
        self.0
            .lock_rows(lock, args![app_id, user_id, scopes])
            .await?;
        let sql = "UPDATE refresh_tokens SET revoked_at = $1
                   WHERE app_id = $2 AND (CAST($3 AS TEXT) IS NULL OR user_id = $3)
                     AND (scopes & $4) <> 0 AND revoked_at IS NULL AND used_at IS NULL";
        let args = args![now, app_id, user_id, scopes];
        self.0.execute(sql, args).await.map(drop)
    }
}

#[async_trait]
impl RevocationRepo for Repos {
    async fn append(&mut self, r: &NewRevocation) -> StoreResult<Option<RevocationRule>> {
        if let Session::Pooled(pools) = &self.0 {
            let mut tx = Repos(pools.begin().await?);
            let appended = tx.append(r).await?;
            tx.0.commit().await?;
            return Ok(appended);
        }
        self.0.lock(REVOCATION_APPEND_LOCK).await?;
        let sql = "INSERT INTO revocations
                     (app_id, user_id, scopes, token_id, grant_id, issued_before, expire_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING *";
        let args = args! {
            &r.app_id, &r.user_id, r.scopes, &r.token_id, &r.grant_id, r.issued_before,
            r.expire_at
        };
        let appended = self.0.first(Write, sql, args, revocation).await?;
        let counted = |rule: &&RevocationRule| rule.token_id.is_some() || rule.grant_id.is_some();
        if let Some(rule) = appended.as_ref().filter(counted) {
            let sql = "INSERT INTO revocation_quota (app_id, expire_by, rules) VALUES ($1, $2, 1)
                       ON CONFLICT (app_id, expire_by)
                       DO UPDATE SET rules = revocation_quota.rules + 1";
            let window = quota_window_end(rule.expire_at);
            self.0.execute(sql, args![&rule.app_id, window]).await?;
        }
        Ok(appended)
    }

    async fn hold_app_rules(&mut self, app_id: &str) -> StoreResult<()> {
        self.0.lock(app_rules_key(app_id)).await
    }

    async fn holds_token_rule(&mut self, r: &NewRevocation) -> StoreResult<bool> {
        let sql = "SELECT sequence FROM revocations
                   WHERE app_id = $1 AND token_id = $2 AND scopes = $4
                     AND (user_id = $3 OR (user_id IS NULL AND CAST($3 AS TEXT) IS NULL))";
        let args = args![&r.app_id, &r.token_id, &r.user_id, r.scopes];
        let decode = |row: &dyn Columns| row.int("sequence");
        Ok(self.0.first(Read, sql, args, decode).await?.is_some())
    }

    async fn live_app_rules(&mut self, app_id: &str, now: Timestamp) -> StoreResult<u64> {
        let sql = "SELECT CAST(COALESCE(SUM(rules), 0) AS BIGINT) AS n FROM revocation_quota
                   WHERE app_id = $1 AND expire_by > $2";
        let decode = |row: &dyn Columns| row.uint("n");
        Ok(self
            .0
            .first(Read, sql, args![app_id, now], decode)
            .await?
            .unwrap_or(0))
    }

    async fn after(&mut self, sequence: u64, limit: u32) -> StoreResult<Vec<RevocationRule>> {
        let sql = "SELECT * FROM revocations WHERE sequence > $1 ORDER BY sequence LIMIT $2";
        let args = args![i64::try_from(sequence).unwrap_or(i64::MAX), limit];
        self.0.all(Read, sql, args, revocation).await
    }

    async fn at(&mut self, sequence: u64) -> StoreResult<Option<RevocationRule>> {
        let Ok(sequence) = i64::try_from(sequence) else {
            return Ok(None);
        };
        let sql = "SELECT * FROM revocations WHERE sequence = $1";
        self.0.first(Read, sql, args![sequence], revocation).await
    }

    async fn for_subject(
        &mut self,
        app_id: &str,
        user_id: &str,
        issued_at: Timestamp,
    ) -> StoreResult<Vec<RevocationRule>> {
        let sql = "SELECT * FROM revocations
                   WHERE app_id = $1 AND (user_id IS NULL OR user_id = $2) AND issued_before >= $3";
        let args = args![app_id, user_id, issued_at];
        self.0.all(Read, sql, args, revocation).await
    }
}

#[async_trait]
impl KeyRepo for Repos {
    async fn insert(&mut self, k: &StoredTokenKey) -> StoreResult<()> {
        let sql = "INSERT INTO token_keys (key_id, sealed_key, created_at, retire_at, expire_at)
                   VALUES ($1, $2, $3, $4, $5)";
        let args = args! {
            &k.key_id, &k.sealed_key, k.created_at, k.retire_at, k.expire_at
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn list(&mut self) -> StoreResult<Vec<StoredTokenKey>> {
        let sql = "SELECT * FROM token_keys ORDER BY created_at";
        self.0.all(Read, sql, args![], token_key).await
    }

    async fn retire(&mut self, key_id: &str, now: Timestamp) -> StoreResult<bool> {
        let sql = "UPDATE token_keys
                   SET retire_at = CASE WHEN retire_at < $2 THEN retire_at ELSE $2 END,
                       expire_at = CASE WHEN expire_at < $2 THEN expire_at ELSE $2 END
                   WHERE key_id = $1 AND expire_at > $2";
        Ok(self.0.execute(sql, args![key_id, now]).await? > 0)
    }

    async fn reseal(&mut self, key_id: &str, old: &str, new: &str) -> StoreResult<bool> {
        let sql = "UPDATE token_keys SET sealed_key = $3 WHERE key_id = $1 AND sealed_key = $2";
        Ok(self.0.execute(sql, args![key_id, old, new]).await? > 0)
    }

    async fn secret(&mut self, name: &str) -> StoreResult<Option<String>> {
        let sql = "SELECT sealed_value FROM sealed_secrets WHERE name = $1";
        let decode = |r: &dyn Columns| r.text("sealed_value");
        self.0.first(Read, sql, args![name], decode).await
    }

    async fn insert_secret(&mut self, name: &str, sealed: &str, now: Timestamp) -> StoreResult<()> {
        let sql = "INSERT INTO sealed_secrets (name, sealed_value, created_at) VALUES ($1, $2, $3)";
        self.0
            .execute(sql, args![name, sealed, now])
            .await
            .map(drop)
    }

    async fn reseal_secret(&mut self, name: &str, old: &str, new: &str) -> StoreResult<bool> {
        let sql =
            "UPDATE sealed_secrets SET sealed_value = $3 WHERE name = $1 AND sealed_value = $2";
        Ok(self.0.execute(sql, args![name, old, new]).await? > 0)
    }
}

#[async_trait]
impl PrivacyRepo for Repos {
    async fn append_record(&mut self, r: &ConsentRecord) -> StoreResult<()> {
        let sql = "INSERT INTO consent_records (user_id, app_id, event, scopes, trigger_kind,
                     purposes, declaration_version, recorded_at, expire_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let purposes = encode_purposes(&r.purposes);
        let args = args! {
            &r.user_id, &r.app_id, event_code(r.event), r.scopes, trigger_code(r.trigger),
            &purposes, r.declaration_version, r.recorded_at, r.expire_at
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn append_records_for_scopes(
        &mut self,
        app_id: &str,
        scopes: ScopeSet,
        event: ConsentEvent,
        now: Timestamp,
        expire_at: Timestamp,
    ) -> StoreResult<u64> {
        let sql = "INSERT INTO consent_records (user_id, app_id, event, scopes, trigger_kind,
                     purposes, declaration_version, recorded_at, expire_at)
                   SELECT user_id, app_id, $3, granted & $2, 0, '[]', declaration_version, $4, $5
                   FROM authorizations WHERE app_id = $1 AND (granted & $2) <> 0";
        let args = args![app_id, scopes, event_code(event), now, expire_at];
        self.0.execute(sql, args).await
    }

    async fn records(
        &mut self,
        user_id: &str,
        app_id: Option<&str>,
        before: u64,
        limit: u32,
    ) -> StoreResult<Vec<ConsentRecord>> {
        let sql = "SELECT * FROM consent_records
                   WHERE user_id = $1 AND (CAST($2 AS TEXT) IS NULL OR app_id = $2)
                     AND ($3 = 0 OR record_id < $3)
                   ORDER BY record_id DESC LIMIT $4";
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let args = args![user_id, app_id, before, limit];
        self.0.all(Read, sql, args, consent_record).await
    }

    async fn declaration(&mut self, app_id: &str) -> StoreResult<Vec<ScopePurpose>> {
        let sql =
            "SELECT scope, purpose FROM privacy_declarations WHERE app_id = $1 ORDER BY scope";
        let decode = |r: &dyn Columns| {
            let scope = scope_from_bits(r.int("scope")?)?;
            Ok(ScopePurpose {
                scope,
                purpose: r.text("purpose")?,
            })
        };
        self.0.all(Read, sql, args![app_id], decode).await
    }

    async fn declaration_in_force(
        &mut self,
        app_id: &str,
    ) -> StoreResult<Option<(i64, Vec<ScopePurpose>)>> {
        let sql = "SELECT a.declaration_version, d.scope, d.purpose
                   FROM apps a LEFT JOIN privacy_declarations d ON d.app_id = a.app_id
                   WHERE a.app_id = $1 ORDER BY d.scope";
        let decode = |r: &dyn Columns| {
            let purpose = match r.opt_int("scope")? {
                Some(bits) => Some(ScopePurpose {
                    scope: scope_from_bits(bits)?,
                    purpose: r.text("purpose")?,
                }),
                None => None,
            };
            Ok((r.int("declaration_version")?, purpose))
        };
        let rows = self.0.all(Read, sql, args![app_id], decode).await?;
        let Some(&(version, _)) = rows.first() else {
            return Ok(None);
        };
        let purposes = rows.into_iter().filter_map(|(_, p)| p).collect();
        Ok(Some((version, purposes)))
    }

    async fn replace_declaration(
        &mut self,
        app_id: &str,
        version: i64,
        purposes: &[ScopePurpose],
        now: Timestamp,
    ) -> StoreResult<Option<AppRecord>> {
        if let Session::Pooled(pools) = &self.0 {
            let mut tx = Repos(pools.begin().await?);
            let replaced = tx
                .replace_declaration(app_id, version, purposes, now)
                .await?;
            tx.0.commit().await?;
            return Ok(replaced);
        }
        let declared: ScopeSet = purposes.iter().map(|p| p.scope).collect();
        let sql = "UPDATE apps SET declaration_version = $2, declared_scopes = $3, declared_at = $4
                   WHERE app_id = $1 AND declaration_version < $2 RETURNING *";
        let args = args![app_id, version, declared, now];
        let Some(app) = self.0.first(Write, sql, args, app).await? else {
            return Ok(None);
        };
        let sql = "DELETE FROM privacy_declarations WHERE app_id = $1";
        self.0.execute(sql, args![app_id]).await?;
        for p in purposes {
            let sql =
                "INSERT INTO privacy_declarations (app_id, scope, purpose) VALUES ($1, $2, $3)";
            let bits = i64::from(ScopeSet::of(&[p.scope]).bits());
            self.0.execute(sql, args![app_id, bits, &p.purpose]).await?;
        }
        Ok(Some(app))
    }

    async fn append_change(&mut self, c: &AuthorizationChange) -> StoreResult<()> {
        let sql = "INSERT INTO authorization_changes
                     (app_id, open_user_id, grant_ref, scopes, reason, changed_at, expire_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let (open_user_id, grant_ref) = match &c.subject {
            ChangeSubject::AppUserId(id) => (Some(id.as_str()), None),
            ChangeSubject::Grant(id) => (None, Some(id.as_str())),
        };
        let args = args! {
            &c.app_id, open_user_id, grant_ref, c.scopes, reason_code(c.reason), c.changed_at,
            c.expire_at
        };
        self.0.execute(sql, args).await.map(drop)
    }

    async fn append_changes_for_scopes(
        &mut self,
        app_id: &str,
        scopes: ScopeSet,
        reason: ChangeReason,
        now: Timestamp,
        expire_at: Timestamp,
    ) -> StoreResult<u64> {
        let sql = "INSERT INTO authorization_changes
                     (app_id, open_user_id, grant_ref, scopes, reason, changed_at, expire_at)
                   SELECT app_id, open_user_id, CASE WHEN open_user_id IS NULL THEN grant_ref END,
                     granted & $2, $3, $4, $5
                   FROM authorizations
                   WHERE app_id = $1 AND (granted & $2) <> 0
                     AND (open_user_id IS NOT NULL OR grant_ref IS NOT NULL)
                   ORDER BY user_id";
        let args = args![app_id, scopes, reason_code(reason), now, expire_at];
        self.0.execute(sql, args).await
    }

    async fn changes_after(
        &mut self,
        app_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<AuthorizationChange>> {
        let sql = "SELECT * FROM authorization_changes WHERE app_id = $1 AND sequence > $2
                   ORDER BY sequence LIMIT $3";
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.0
            .all(Read, sql, args![app_id, after, limit], authorization_change)
            .await
    }
}

const EVENTS: [ConsentEvent; 7] = [
    ConsentEvent::Prompted,
    ConsentEvent::Granted,
    ConsentEvent::Denied,
    ConsentEvent::Withdrawn,
    ConsentEvent::VoidedByFeatureChange,
    ConsentEvent::VoidedByErasure,
    ConsentEvent::VoidedByNewDeclaration,
];
const TRIGGERS: [Trigger; 2] = [Trigger::UserTap, Trigger::AppLaunch];
const REASONS: [ChangeReason; 4] = [
    ChangeReason::Withdrawn,
    ChangeReason::FeatureDisabled,
    ChangeReason::Erased,
    ChangeReason::DeclarationReplaced,
];

/// Stored codes are positions in these lists, from 1.
fn code_of<T: PartialEq>(list: &[T], value: &T) -> i64 {
    list.iter()
        .position(|v| v == value)
        .map_or(0, |i| i as i64 + 1)
}

fn from_code<T: Copy>(list: &[T], code: i64, what: &str) -> Result<T, sqlx::Error> {
    usize::try_from(code - 1)
        .ok()
        .and_then(|i| list.get(i).copied())
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown {what} code {code}").into()))
}

fn event_code(event: ConsentEvent) -> i64 {
    code_of(&EVENTS, &event)
}

fn trigger_code(trigger: Option<Trigger>) -> i64 {
    trigger.map_or(0, |t| code_of(&TRIGGERS, &t))
}

fn reason_code(reason: ChangeReason) -> i64 {
    code_of(&REASONS, &reason)
}

fn scope_from_bits(bits: i64) -> Result<Scope, sqlx::Error> {
    let set = ScopeSet::from_bits(bits as u8);
    let mut scopes = set.iter();
    match (scopes.next(), scopes.next()) {
        (Some(scope), None) => Ok(scope),
        _ => Err(sqlx::Error::Decode(format!("not one scope: {bits}").into())),
    }
}

/// Purposes as JSON: `[[scope bits, "purpose"], ...]`.
fn encode_purposes(purposes: &[ScopePurpose]) -> String {
    let pairs: Vec<(u8, &str)> = purposes
        .iter()
        .map(|p| (ScopeSet::of(&[p.scope]).bits(), p.purpose.as_str()))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

fn decode_purposes(text: &str) -> Result<Vec<ScopePurpose>, sqlx::Error> {
    let pairs: Vec<(u8, String)> =
        serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    pairs
        .into_iter()
        .map(|(bits, purpose)| {
            Ok(ScopePurpose {
                scope: scope_from_bits(i64::from(bits))?,
                purpose,
            })
        })
        .collect()
}

/// The trigger stored in a row's `trigger_kind` (0: none).
fn stored_trigger(r: &dyn Columns) -> Result<Option<Trigger>, sqlx::Error> {
    match r.int("trigger_kind")? {
        0 => Ok(None),
        code => Ok(Some(from_code(&TRIGGERS, code, "trigger")?)),
    }
}

fn prompt(r: &dyn Columns) -> Result<PromptRecord, sqlx::Error> {
    Ok(PromptRecord {
        prompt_hash: r.digest("prompt_hash")?,
        user_id: r.text("user_id")?,
        app_id: r.text("app_id")?,
        scopes: r.scopes("scopes")?,
        previously_denied: r.flag("previously_denied")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        resolved_at: r.opt_time("resolved_at")?,
        declaration_version: r.int("declaration_version")?,
        trigger: stored_trigger(r)?,
        purposes: decode_purposes(&r.text("purposes")?)?,
    })
}

fn consent_record(r: &dyn Columns) -> Result<ConsentRecord, sqlx::Error> {
    let trigger = stored_trigger(r)?;
    Ok(ConsentRecord {
        record_id: r.uint("record_id")?,
        user_id: r.text("user_id")?,
        app_id: r.text("app_id")?,
        event: from_code(&EVENTS, r.int("event")?, "consent event")?,
        scopes: r.scopes("scopes")?,
        trigger,
        purposes: decode_purposes(&r.text("purposes")?)?,
        declaration_version: r.int("declaration_version")?,
        recorded_at: r.time("recorded_at")?,
        expire_at: r.time("expire_at")?,
    })
}

fn authorization_change(r: &dyn Columns) -> Result<AuthorizationChange, sqlx::Error> {
    let subject = match (r.opt_text("open_user_id")?, r.opt_text("grant_ref")?) {
        (Some(id), _) => ChangeSubject::AppUserId(id),
        (None, Some(grant)) => ChangeSubject::Grant(grant),
        (None, None) => return Err(sqlx::Error::Decode("a change names no subject".into())),
    };
    Ok(AuthorizationChange {
        sequence: r.uint("sequence")?,
        app_id: r.text("app_id")?,
        subject,
        scopes: r.scopes("scopes")?,
        reason: from_code(&REASONS, r.int("reason")?, "change reason")?,
        changed_at: r.time("changed_at")?,
        expire_at: r.time("expire_at")?,
    })
}

sql_backend::decoders! {
    app -> AppRecord {
        app_id: text, display_name: text, secret_hash: digest, features: features,
        created_at: time, declaration_version: int, declared_scopes: scopes, declared_at: time
    }
    authorization -> AuthorizationRecord {
        user_id: text, app_id: text, granted: scopes, denied: scopes, updated_at: time,
        declaration_version: int, grant_ref: opt_text, open_user_id: opt_text
    }
    code -> AuthCodeRecord {
        code_hash: digest, grant_id: text, app_id: text, user_id: text, scopes: scopes,
        created_at: time, expires_at: time, used_at: opt_time, purge_at: time
    }
    refresh_token -> RefreshTokenRecord {
        token_hash: digest, family_id: text, app_id: text, user_id: text, scopes: scopes,
        created_at: time, expires_at: time, used_at: opt_time, revoked_at: opt_time,
        generation: uint
    }
    revocation -> RevocationRule {
        sequence: uint, app_id: text, user_id: opt_text, scopes: scopes, token_id: opt_text,
        grant_id: opt_text, issued_before: time, expire_at: time
    }
    token_key -> StoredTokenKey {
        key_id: text, sealed_key: text, created_at: time, retire_at: time, expire_at: time
    }
}

/// The end of the quota window a rule expiring at `expire_at` is counted in.
fn quota_window_end(expire_at: Timestamp) -> i64 {
    expire_at
        .unix_nanos()
        .checked_add(QUOTA_WINDOW_NANOS - 1)
        .map_or(i64::MAX, |n| {
            n.div_euclid(QUOTA_WINDOW_NANOS) * QUOTA_WINDOW_NANOS
        })
}

/// The one column kind of auth-service's own.
trait FeatureColumn: Columns {
    fn features(&self, col: &str) -> Result<FeatureSet, sqlx::Error> {
        Ok(FeatureSet::from_bits(self.int(col)? as u8))
    }
}

impl<R: Columns + ?Sized> FeatureColumn for R {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan SQLite makes for `sql` with `args` in a fresh, migrated auth database:
    /// its steps' `detail` (`SEARCH ... USING INDEX ...`, `SCAN ...`).
    async fn query_plan(sql: &str, args: &[Arg<'_>]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("auth.db").display());
        let store = SqlAuthStore::open(&url, super::super::MIGRATIONS)
            .await
            .unwrap();
        let explain: &'static str = Box::leak(format!("EXPLAIN QUERY PLAN {sql}").into());
        let detail = |r: &dyn Columns| r.text("detail");
        let plan = store.pools.session().all(Read, explain, args, detail).await;
        store.close().await;
        plan.unwrap()
    }

    fn scans(plan: &[String]) -> bool {
        plan.iter().any(|step| step.starts_with("SCAN"))
    }

    /// Guards migrations 0006 and 0008: on SQLite every statement of an erasure finds the
    /// user's rows through an index (a SEARCH in its query plan), instead of reading its table
    /// whole (a SCAN) while it holds the writer.
    #[tokio::test]
    async fn an_erasure_finds_the_users_rows_through_an_index() {
        for sql in ERASE_USER {
            let plan = query_plan(sql, args!["u1"]).await;
            assert!(
                plan.iter().any(|step| step.starts_with("SEARCH")) && !scans(&plan),
                "{sql}: {plan:?}"
            );
        }
    }

    /// Guards migration 0007's index: on SQLite the eviction's read of [`GRANTS_BEYOND`] finds
    /// a user's grants for an app through `auth_codes_exchanged`, which holds exchanged codes
    /// only, rather than among every code the user was given (or every code: a SCAN) while it
    /// holds the writer.
    #[tokio::test]
    async fn grants_are_found_through_the_index_of_exchanged_codes() {
        let plan = query_plan(GRANTS_BEYOND, args!["a1", "u1", "g1", 1_i64, i64::MAX]).await;
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH") && step.contains("auth_codes_exchanged"))
                && !scans(&plan),
            "{plan:?}"
        );
    }

    /// Guards migration 0009's index: a refresh finds its family's spent token of one
    /// generation by family and generation, without reading the family's other tokens (or the
    /// table: a SCAN).
    #[tokio::test]
    async fn a_familys_spent_token_is_found_through_its_index() {
        let plan = query_plan(FORGET_SPENT_REFRESH_TOKEN, args!["g1", 3_i64]).await;
        assert!(
            plan.iter().any(|step| step.starts_with("SEARCH")
                && step.contains("refresh_tokens_family")
                && step.contains("generation=?"))
                && !scans(&plan),
            "{plan:?}"
        );
    }

    /// Guards the index [`UNSPENT_CODES_BEYOND`] relies on (migration 0006's `auth_codes_user`):
    /// issuing a code finds the user's unspent codes without reading the table whole.
    #[tokio::test]
    async fn unspent_codes_are_found_through_the_users_index() {
        let code = [0_u8; 32];
        let args = args!["a1", "u1", &code, 1_i64, i64::MAX];
        let plan = query_plan(UNSPENT_CODES_BEYOND, args).await;
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH") && step.contains("auth_codes_user"))
                && !scans(&plan),
            "{plan:?}"
        );
    }

    /// Guards `SKIP LOCKED` in the PostgreSQL text of [`sweep!`]: a sweep passes over an
    /// expired row a running transaction holds, at once, and takes it in a later round, instead
    /// of waiting on it while it holds the other rows it deleted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
    async fn postgres_a_sweep_passes_over_rows_a_transaction_holds() {
        let url = sql_backend::testing::fresh_schema_url("sweep_skips").await;
        let store = SqlAuthStore::open(&url, super::super::MIGRATIONS)
            .await
            .unwrap();
        let expired = |b: u8| RefreshTokenRecord {
            token_hash: [b; 32],
            family_id: format!("g{b}"),
            app_id: "a1".into(),
            user_id: "u1".into(),
            scopes: ScopeSet::EMPTY,
            created_at: Timestamp::from_unix_nanos(1),
            expires_at: Timestamp::from_unix_nanos(2),
            used_at: None,
            revoked_at: None,
            generation: 1,
        };
        let mut repos = store.repositories();
        for b in [1, 2] {
            repos
                .grants()
                .insert_refresh_token(&expired(b))
                .await
                .unwrap();
        }
        let now = Timestamp::from_unix_nanos(10);
        let mut holder = store.begin().await.unwrap();
        holder
            .grants()
            .revoke_family_tokens("g1", now)
            .await
            .unwrap();
        let swept = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            store.sweep_expired(now, 100),
        );
        let swept = swept.await.expect("the sweep does not wait on a held row");
        assert_eq!(swept.unwrap()["refresh_tokens"], 1, "the row not held");
        holder.commit().await.unwrap();
        let next = store.sweep_expired(now, 100).await.unwrap();
        assert_eq!(next["refresh_tokens"], 1, "the row held before");
        store.close().await;
    }
}
