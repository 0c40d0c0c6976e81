//! The scale-out backend: PostgreSQL, shared by several auth-service replicas. Single-use
//! codes, prompt resolution and refresh rotation rely on row locks taken by conditional
//! `UPDATE`s (READ COMMITTED re-checks the condition after waiting), and revocation appends are
//! serialised by an advisory lock so sequence numbers become visible in order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use miniprogram_token::{RevocationRule, ScopeSet, Timestamp};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    AppRecord, AuthCodeRecord, AuthStore, AuthorizationRecord, CodeRedemption, NewRevocation,
    PromptRecord, RefreshRotation, RefreshTokenRecord, SecretHash, StoreError, StoredTokenKey,
    SweepCounts, TokenRevocation, rows,
};
use super::{quota_window_end, withdrawn_bits};
use crate::apps::FeatureSet;
use crate::clock::Clock;

/// SQLSTATE of a unique-constraint violation.
const PG_UNIQUE_VIOLATION: &str = "23505";
/// Advisory lock key serialising revocation appends ("revo" in ASCII).
const REVOCATION_APPEND_LOCK: i64 = 0x7265_766f;
/// First key of the per-app advisory lock serialising token revocations ("quot"); the second
/// is `hashtext(app_id)`. Two-key locks never collide with the one-key lock above.
const TOKEN_QUOTA_LOCK: i32 = 0x7175_6f74;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/auth/postgres");

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.code().as_deref() == Some(PG_UNIQUE_VIOLATION) => {
            StoreError::AlreadyExists
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(Arc::new(e))
        }
        _ => StoreError::Internal(Arc::new(e)),
    }
}

/// auth-service's tables in a PostgreSQL database (or one schema of it).
#[derive(Debug, Clone)]
pub struct PostgresAuthStore {
    pool: PgPool,
}

impl PostgresAuthStore {
    /// Connects to `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(classify)?;
        Self::open_with(options).await
    }

    /// Connects with explicit options (tests pass a `search_path` per schema).
    pub async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(classify)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(Arc::new(e.into())))?;
        Ok(PostgresAuthStore { pool })
    }
}

/// Appends `r`; `None` (nothing written) when it voids a token or a grant family the log
/// already holds a rule for (the unique indexes of migration 0002).
async fn append_revocation_in(
    conn: &mut PgConnection,
    r: &NewRevocation,
) -> Result<Option<RevocationRule>, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(REVOCATION_APPEND_LOCK)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(
        "INSERT INTO revocations (app_id, user_id, scopes, token_id, grant_id, issued_before, expire_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING *",
    )
    .bind(&r.app_id)
    .bind(&r.user_id)
    .bind(i64::from(r.scopes.bits()))
    .bind(&r.token_id)
    .bind(&r.grant_id)
    .bind(r.issued_before.unix_nanos())
    .bind(r.expire_at.unix_nanos())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(rows::revocation).transpose()
}

/// Keeps a grant's auth code until `until` (when that is later than its purge time): a code
/// must outlive every refresh token of its family, so a replay however late still voids it.
async fn keep_code_until_in(
    conn: &mut PgConnection,
    grant_id: &str,
    until: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE auth_codes SET purge_at = GREATEST(purge_at, $1) WHERE grant_id = $2")
        .bind(until.unix_nanos())
        .bind(grant_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn void_refresh_tokens_in(
    conn: &mut PgConnection,
    r: &NewRevocation,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1
         WHERE app_id = $2 AND ($3::text IS NULL OR user_id = $3)
           AND ($4::bigint = 0 OR (scopes & $4::bigint) <> 0) AND revoked_at IS NULL",
    )
    .bind(now.unix_nanos())
    .bind(&r.app_id)
    .bind(&r.user_id)
    .bind(i64::from(r.scopes.bits()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (token_hash, family_id, app_id, user_id, scopes, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl PostgresAuthStore {
    /// One app by id, read with `sql` (a plain or a locking SELECT).
    async fn app(&self, sql: &'static str, app_id: &str) -> Result<AppRecord, StoreError> {
        let row = sqlx::query(sql)
            .bind(app_id)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        rows::app(&row).map_err(classify)
    }
}

#[async_trait]
impl AuthStore for PostgresAuthStore {
    async fn insert_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO apps (app_id, display_name, secret_hash, features, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&app.app_id)
            .bind(&app.display_name)
            .bind(app.secret_hash.as_slice())
            .bind(i64::from(app.features.bits()))
            .bind(app.created_at.unix_nanos())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn get_app(&self, app_id: &str) -> Result<AppRecord, StoreError> {
        self.app("SELECT * FROM apps WHERE app_id = $1", app_id)
            .await
    }

    async fn get_app_for_grant(&self, app_id: &str) -> Result<AppRecord, StoreError> {
        // FOR SHARE waits for a running feature switch (which holds the row) to commit.
        self.app("SELECT * FROM apps WHERE app_id = $1 FOR SHARE", app_id)
            .await
    }

    async fn count_apps(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(n as u64)
    }

    async fn set_app_secret(
        &self,
        app_id: &str,
        secret_hash: &SecretHash,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE apps SET secret_hash = $1 WHERE app_id = $2")
            .bind(secret_hash.as_slice())
            .bind(app_id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn set_features(
        &self,
        app_id: &str,
        enable: FeatureSet,
        disable: FeatureSet,
        revocation: Option<&NewRevocation>,
        clock: &Clock,
    ) -> Result<AppRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let row = sqlx::query(
            "UPDATE apps SET features = (features | $1::bigint) & ~$2::bigint
             WHERE app_id = $3 RETURNING *",
        )
        .bind(i64::from(enable.bits()))
        .bind(i64::from(disable.bits()))
        .bind(app_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let app = rows::app(&row).map_err(classify)?;
        if let Some(r) = revocation {
            let r = r.restamped(clock.now());
            void_refresh_tokens_in(&mut tx, &r, r.issued_before)
                .await
                .map_err(classify)?;
            append_revocation_in(&mut tx, &r).await.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(app)
    }

    async fn get_authorization(
        &self,
        user_id: &str,
        app_id: &str,
    ) -> Result<Option<AuthorizationRecord>, StoreError> {
        // FOR SHARE waits for a running withdrawal (which holds the row) to commit.
        let row = sqlx::query(
            "SELECT * FROM authorizations WHERE user_id = $1 AND app_id = $2 FOR SHARE",
        )
        .bind(user_id)
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.map(|r| rows::authorization(&r))
            .transpose()
            .map_err(classify)
    }

    async fn record_decision(
        &self,
        user_id: &str,
        app_id: &str,
        grant: ScopeSet,
        deny: ScopeSet,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO authorizations (user_id, app_id, granted, denied, updated_at)
             VALUES ($1, $2, $3::bigint, $4::bigint & ~$3::bigint, $5)
             ON CONFLICT (user_id, app_id) DO UPDATE SET
               granted = authorizations.granted | $3::bigint,
               denied = (authorizations.denied | $4::bigint) & ~(authorizations.granted | $3::bigint),
               updated_at = $5",
        )
        .bind(user_id)
        .bind(app_id)
        .bind(i64::from(grant.bits()))
        .bind(i64::from(deny.bits()))
        .bind(now.unix_nanos())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn list_authorizations(
        &self,
        user_id: &str,
    ) -> Result<Vec<(AuthorizationRecord, String)>, StoreError> {
        let found = sqlx::query(
            "SELECT a.*, apps.display_name FROM authorizations a JOIN apps ON apps.app_id = a.app_id
             WHERE a.user_id = $1 AND a.granted <> 0 ORDER BY a.app_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        found
            .iter()
            .map(|r| {
                Ok((
                    rows::authorization(r)?,
                    rows::Columns::text(r, "display_name")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(classify)
    }

    async fn withdraw_authorization(
        &self,
        revocation: &NewRevocation,
        clock: &Clock,
    ) -> Result<ScopeSet, StoreError> {
        let user_id = revocation.user_id.as_deref().ok_or(StoreError::NotFound)?;
        let withdrawn = withdrawn_bits(revocation.scopes);
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let granted: i64 = sqlx::query_scalar(
            "SELECT granted FROM authorizations WHERE user_id = $1 AND app_id = $2 FOR UPDATE",
        )
        .bind(user_id)
        .bind(&revocation.app_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?
        .unwrap_or(0);
        if granted & withdrawn == 0 {
            tx.commit().await.map_err(classify)?;
            return Ok(ScopeSet::from_bits(granted as u8));
        }
        let remaining: Option<i64> = sqlx::query_scalar(
            "UPDATE authorizations SET granted = granted & ~$1::bigint
             WHERE user_id = $2 AND app_id = $3 RETURNING granted",
        )
        .bind(withdrawn)
        .bind(user_id)
        .bind(&revocation.app_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        // The row is locked now: grants reading it wait for our commit, so stamp from here.
        let revocation = revocation.restamped(clock.now());
        let now = revocation.issued_before;
        sqlx::query("UPDATE authorizations SET updated_at = $1 WHERE user_id = $2 AND app_id = $3")
            .bind(now.unix_nanos())
            .bind(user_id)
            .bind(&revocation.app_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query(
            "DELETE FROM auth_codes
             WHERE app_id = $1 AND user_id = $2 AND used_at IS NULL AND (scopes & $3::bigint) <> 0",
        )
        .bind(&revocation.app_id)
        .bind(user_id)
        .bind(withdrawn)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        void_refresh_tokens_in(&mut tx, &revocation, now)
            .await
            .map_err(classify)?;
        append_revocation_in(&mut tx, &revocation)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(ScopeSet::from_bits(remaining.unwrap_or(0) as u8))
    }

    async fn insert_prompt(&self, p: &PromptRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO prompts (prompt_hash, user_id, app_id, scopes, previously_denied, created_at, expires_at, resolved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(p.prompt_hash.as_slice())
        .bind(&p.user_id)
        .bind(&p.app_id)
        .bind(i64::from(p.scopes.bits()))
        .bind(i64::from(p.previously_denied))
        .bind(p.created_at.unix_nanos())
        .bind(p.expires_at.unix_nanos())
        .bind(p.resolved_at.map(Timestamp::unix_nanos))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn get_prompt(&self, prompt_hash: &SecretHash) -> Result<PromptRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM prompts WHERE prompt_hash = $1")
            .bind(prompt_hash.as_slice())
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        rows::prompt(&row).map_err(classify)
    }

    async fn resolve_prompt(
        &self,
        prompt_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE prompts SET resolved_at = $1 WHERE prompt_hash = $2 AND resolved_at IS NULL",
        )
        .bind(now.unix_nanos())
        .bind(prompt_hash.as_slice())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_auth_code(&self, c: &AuthCodeRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_codes (code_hash, grant_id, app_id, user_id, scopes, created_at, expires_at, purge_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(c.code_hash.as_slice())
        .bind(&c.grant_id)
        .bind(&c.app_id)
        .bind(&c.user_id)
        .bind(i64::from(c.scopes.bits()))
        .bind(c.created_at.unix_nanos())
        .bind(c.expires_at.unix_nanos())
        .bind(c.purge_at.unix_nanos())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn redeem_auth_code(
        &self,
        code_hash: &SecretHash,
        app_id: &str,
        first_refresh: &SecretHash,
        refresh_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<CodeRedemption, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let spent = sqlx::query(
            "UPDATE auth_codes SET used_at = $1
             WHERE code_hash = $2 AND app_id = $3 AND used_at IS NULL AND expires_at > $1 RETURNING *",
        )
        .bind(now.unix_nanos())
        .bind(code_hash.as_slice())
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let outcome = match spent {
            Some(row) => {
                let code = rows::code(&row).map_err(classify)?;
                sqlx::query(INSERT_REFRESH)
                    .bind(first_refresh.as_slice())
                    .bind(&code.grant_id)
                    .bind(&code.app_id)
                    .bind(&code.user_id)
                    .bind(i64::from(code.scopes.bits()))
                    .bind(now.unix_nanos())
                    .bind(refresh_expires_at.unix_nanos())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                keep_code_until_in(&mut tx, &code.grant_id, refresh_expires_at)
                    .await
                    .map_err(classify)?;
                CodeRedemption::Redeemed(code)
            }
            None => {
                let row =
                    sqlx::query("SELECT * FROM auth_codes WHERE code_hash = $1 AND app_id = $2")
                        .bind(code_hash.as_slice())
                        .bind(app_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(classify)?;
                match row {
                    None => CodeRedemption::NotFound,
                    Some(row) if rows::code_used(&row).map_err(classify)? => {
                        CodeRedemption::AlreadyUsed(rows::code(&row).map_err(classify)?)
                    }
                    Some(_) => CodeRedemption::Expired,
                }
            }
        };
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        revocation: &NewRevocation,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let marked = sqlx::query("UPDATE auth_codes SET family_revoked_at = $1 WHERE grant_id = $2 AND family_revoked_at IS NULL")
            .bind(now.unix_nanos())
            .bind(family_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?
            .rows_affected();
        if marked == 0 {
            let already: Option<i64> =
                sqlx::query_scalar("SELECT family_revoked_at FROM auth_codes WHERE grant_id = $1")
                    .bind(family_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?
                    .flatten();
            if already.is_some() {
                tx.commit().await.map_err(classify)?;
                return Ok(false);
            }
        }
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now.unix_nanos())
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let appended = append_revocation_in(&mut tx, revocation)
            .await
            .map_err(classify)?
            .is_some();
        tx.commit().await.map_err(classify)?;
        Ok(appended)
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        successor: &SecretHash,
        successor_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<RefreshRotation, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // The family's code row first, as revoke_family takes it: one lock order, so a
        // rotation racing a family revocation waits instead of deadlocking, and the
        // revocation (running after) sees the successor this rotation inserts.
        sqlx::query(
            "SELECT 1 FROM auth_codes a JOIN refresh_tokens r ON r.family_id = a.grant_id
             WHERE r.token_hash = $1 FOR UPDATE OF a",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1
             WHERE token_hash = $2 AND app_id = $3 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1
             RETURNING *",
        )
        .bind(now.unix_nanos())
        .bind(token_hash.as_slice())
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let outcome = match spent {
            Some(row) => {
                let old = rows::refresh_token(&row).map_err(classify)?;
                sqlx::query(INSERT_REFRESH)
                    .bind(successor.as_slice())
                    .bind(&old.family_id)
                    .bind(&old.app_id)
                    .bind(&old.user_id)
                    .bind(i64::from(old.scopes.bits()))
                    .bind(now.unix_nanos())
                    .bind(successor_expires_at.unix_nanos())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                keep_code_until_in(&mut tx, &old.family_id, successor_expires_at)
                    .await
                    .map_err(classify)?;
                RefreshRotation::Rotated(old)
            }
            None => {
                let row = sqlx::query(
                    "SELECT * FROM refresh_tokens WHERE token_hash = $1 AND app_id = $2",
                )
                .bind(token_hash.as_slice())
                .bind(app_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
                match row
                    .map(|r| rows::refresh_token(&r))
                    .transpose()
                    .map_err(classify)?
                {
                    None => RefreshRotation::NotFound,
                    Some(rec) if rec.used_at.is_some() => RefreshRotation::AlreadyUsed(rec),
                    Some(rec) if rec.revoked_at.is_some() => RefreshRotation::Revoked,
                    Some(_) => RefreshRotation::Expired,
                }
            }
        };
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    async fn get_refresh_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<RefreshTokenRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash.as_slice())
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        rows::refresh_token(&row).map_err(classify)
    }

    async fn append_revocation(&self, r: &NewRevocation) -> Result<RevocationRule, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let rule = append_revocation_in(&mut tx, r).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        rule.ok_or(StoreError::AlreadyExists)
    }

    async fn revoke_token(
        &self,
        r: &NewRevocation,
        quota: u32,
        now: Timestamp,
    ) -> Result<TokenRevocation, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // One token revocation per app at a time, so replicas can't overshoot the quota together.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(TOKEN_QUOTA_LOCK)
            .bind(&r.app_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM revocations WHERE app_id = $1 AND token_id = $2
               AND user_id IS NOT DISTINCT FROM $3 AND scopes = $4)",
        )
        .bind(&r.app_id)
        .bind(&r.token_id)
        .bind(&r.user_id)
        .bind(i64::from(r.scopes.bits()))
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let outcome = if held {
            TokenRevocation::AlreadyRevoked
        } else {
            let live: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(rules), 0)::bigint FROM revocation_quota
                 WHERE app_id = $1 AND expire_by > $2",
            )
            .bind(&r.app_id)
            .bind(now.unix_nanos())
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
            if live >= i64::from(quota) {
                TokenRevocation::QuotaReached
            } else {
                match append_revocation_in(&mut tx, r).await.map_err(classify)? {
                    Some(rule) => {
                        sqlx::query(
                            "INSERT INTO revocation_quota (app_id, expire_by, rules) VALUES ($1, $2, 1)
                             ON CONFLICT (app_id, expire_by)
                             DO UPDATE SET rules = revocation_quota.rules + 1",
                        )
                        .bind(&rule.app_id)
                        .bind(quota_window_end(rule.expire_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        TokenRevocation::Appended(rule)
                    }
                    None => TokenRevocation::AlreadyRevoked,
                }
            }
        };
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    async fn revocations_after(
        &self,
        sequence: u64,
        limit: u32,
    ) -> Result<Vec<RevocationRule>, StoreError> {
        let found =
            sqlx::query("SELECT * FROM revocations WHERE sequence > $1 ORDER BY sequence LIMIT $2")
                .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        found
            .iter()
            .map(rows::revocation)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }

    async fn revocation_at(&self, sequence: u64) -> Result<Option<RevocationRule>, StoreError> {
        let Ok(sequence) = i64::try_from(sequence) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT * FROM revocations WHERE sequence = $1")
            .bind(sequence)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|r| rows::revocation(&r))
            .transpose()
            .map_err(classify)
    }

    async fn revocations_for_subject(
        &self,
        app_id: &str,
        user_id: &str,
        issued_at: Timestamp,
    ) -> Result<Vec<RevocationRule>, StoreError> {
        let found = sqlx::query(
            "SELECT * FROM revocations WHERE app_id = $1 AND (user_id IS NULL OR user_id = $2) AND issued_before >= $3",
        )
        .bind(app_id)
        .bind(user_id)
        .bind(issued_at.unix_nanos())
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        found
            .iter()
            .map(rows::revocation)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }

    async fn insert_token_key(&self, k: &StoredTokenKey) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO token_keys (key_id, sealed_key, created_at, retire_at, expire_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&k.key_id)
            .bind(&k.sealed_key)
            .bind(k.created_at.unix_nanos())
            .bind(k.retire_at.unix_nanos())
            .bind(k.expire_at.unix_nanos())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn list_token_keys(&self) -> Result<Vec<StoredTokenKey>, StoreError> {
        let found = sqlx::query("SELECT * FROM token_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        found
            .iter()
            .map(rows::token_key)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }

    async fn retire_token_key(&self, key_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE token_keys SET retire_at = LEAST(retire_at, $2), expire_at = LEAST(expire_at, $2) WHERE key_id = $1 AND expire_at > $2",
        )
        .bind(key_id)
        .bind(now.unix_nanos())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn reseal_token_key(
        &self,
        key_id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE token_keys SET sealed_key = $3 WHERE key_id = $1 AND sealed_key = $2",
        )
        .bind(key_id)
        .bind(old)
        .bind(new)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_sealed_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT sealed_value FROM sealed_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn insert_sealed_secret(
        &self,
        name: &str,
        sealed: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sealed_secrets (name, sealed_value, created_at) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(sealed)
        .bind(now.unix_nanos())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn reseal_secret(&self, name: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sealed_secrets SET sealed_value = $3 WHERE name = $1 AND sealed_value = $2",
        )
        .bind(name)
        .bind(old)
        .bind(new)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn sweep_expired(&self, now: Timestamp, batch: u32) -> Result<SweepCounts, StoreError> {
        let now = now.unix_nanos();
        let batch = i64::from(batch);
        let mut counts = SweepCounts::default();
        for (table, column, slot) in [
            ("prompts", "expires_at", &mut counts.prompts),
            ("auth_codes", "purge_at", &mut counts.auth_codes),
            ("refresh_tokens", "expires_at", &mut counts.refresh_tokens),
            ("revocations", "expire_at", &mut counts.revocations),
            (
                "revocation_quota",
                "expire_by",
                &mut counts.revocation_quota,
            ),
            ("token_keys", "expire_at", &mut counts.token_keys),
        ] {
            let sql = format!(
                "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {column} <= $1 LIMIT $2)"
            );
            *slot = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(batch)
                .execute(&self.pool)
                .await
                .map_err(classify)?
                .rows_affected();
        }
        Ok(counts)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Test support: a fresh schema per test in the database named by `TEST_DATABASE_URL`.
#[cfg(any(test, feature = "testing"))]
pub mod test_schema {
    use sqlx::postgres::PgConnectOptions;

    /// Set (by CI) to make a missing `TEST_DATABASE_URL` a failure instead of a skip.
    pub const REQUIRE_ENV: &str = "REQUIRE_POSTGRES";
    pub const URL_ENV: &str = "TEST_DATABASE_URL";

    /// Creates a new, empty schema in the test database; `None` when none is configured.
    ///
    /// # Panics
    /// When `REQUIRE_POSTGRES` is set but the database is missing or unreachable.
    async fn create_schema(prefix: &str) -> Option<(String, PgConnectOptions)> {
        let Ok(url) = std::env::var(URL_ENV) else {
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but {URL_ENV} is not"
            );
            return None;
        };
        let base: PgConnectOptions = url.parse().expect("TEST_DATABASE_URL parses");
        let admin = sqlx::PgPool::connect_with(base.clone())
            .await
            .expect("connect to TEST_DATABASE_URL");
        let random = miniprogram_token::random_bytes().expect("random");
        let schema = format!("{prefix}_{}", hex::encode(&random[..6]));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        Some((schema, base))
    }

    /// Connect options for a new, empty schema.
    pub async fn fresh_schema(prefix: &str) -> Option<PgConnectOptions> {
        let (schema, base) = create_schema(prefix).await?;
        Some(base.options([("search_path", schema.as_str())]))
    }

    /// A database URL whose connections use a new, empty schema (to run a whole service).
    pub async fn fresh_schema_url(prefix: &str) -> Option<String> {
        let (schema, _) = create_schema(prefix).await?;
        let url = std::env::var(URL_ENV).ok()?;
        let separator = if url.contains('?') { '&' } else { '?' };
        Some(format!(
            "{url}{separator}options=-c%20search_path%3D{schema}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn fresh() -> Option<(Arc<dyn AuthStore>, ())> {
        let options = test_schema::fresh_schema("auth_test").await?;
        let store = PostgresAuthStore::open_with(options)
            .await
            .expect("open Postgres store");
        Some((Arc::new(store), ()))
    }

    crate::auth_store_conformance!(fresh);

    /// Migration 0002 on a log an older version wrote (a rule per repeated revocation) leaves
    /// one rule per revoked token and family, so its unique indexes can be built.
    #[tokio::test]
    async fn migration_0002_leaves_one_rule_per_revoked_token_or_family() {
        let Some(options) = test_schema::fresh_schema("auth_migration").await else {
            return;
        };
        let first = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            first.path().join("0001_init.sql"),
            include_str!("../../../migrations/auth/postgres/0001_init.sql"),
        )
        .expect("write migration");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("connect");
        sqlx::migrate::Migrator::new(first.path())
            .await
            .expect("migrations")
            .run(&pool)
            .await
            .expect("0001");
        let mut conn = pool.acquire().await.expect("connection");
        for rule in crate::store::conformance::older_log() {
            append_revocation_in(&mut conn, &rule)
                .await
                .expect("append");
        }
        drop(conn);
        pool.close().await;
        let store = PostgresAuthStore::open_with(options)
            .await
            .expect("0002 runs");
        crate::store::conformance::older_log_migrated(&store).await;
    }
}
