//! Decoding stored rows into records, shared by the SQLite and PostgreSQL backends: both store
//! times as i64 nanoseconds, scope and feature sets as i64 bit sets and hashes as bytes.

use miniprogram_token::{RevocationRule, ScopeSet, Timestamp};
use sqlx::Row;

use super::{
    AppRecord, AuthCodeRecord, AuthorizationRecord, PromptRecord, RefreshTokenRecord, SecretHash,
    StoredTokenKey,
};
use crate::apps::FeatureSet;

/// The column types our tables use, read by name from a row of either backend.
pub trait Columns {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}

impl_columns!(sqlx::sqlite::SqliteRow);
impl_columns!(sqlx::postgres::PgRow);

fn ts(row: &impl Columns, col: &str) -> Result<Timestamp, sqlx::Error> {
    Ok(Timestamp::from_unix_nanos(row.int(col)?))
}

fn opt_ts(row: &impl Columns, col: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    Ok(row.opt_int(col)?.map(Timestamp::from_unix_nanos))
}

fn scopes(row: &impl Columns, col: &str) -> Result<ScopeSet, sqlx::Error> {
    Ok(ScopeSet::from_bits(row.int(col)? as u8))
}

fn hash(row: &impl Columns, col: &str) -> Result<SecretHash, sqlx::Error> {
    row.bytes(col)?
        .try_into()
        .map_err(|_| sqlx::Error::ColumnDecode {
            index: col.to_owned(),
            source: "hash is not 32 bytes".into(),
        })
}

pub fn app(row: &impl Columns) -> Result<AppRecord, sqlx::Error> {
    Ok(AppRecord {
        app_id: row.text("app_id")?,
        display_name: row.text("display_name")?,
        secret_hash: hash(row, "secret_hash")?,
        features: FeatureSet::from_bits(row.int("features")? as u8),
        created_at: ts(row, "created_at")?,
    })
}

pub fn authorization(row: &impl Columns) -> Result<AuthorizationRecord, sqlx::Error> {
    Ok(AuthorizationRecord {
        user_id: row.text("user_id")?,
        app_id: row.text("app_id")?,
        granted: scopes(row, "granted")?,
        denied: scopes(row, "denied")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub fn prompt(row: &impl Columns) -> Result<PromptRecord, sqlx::Error> {
    Ok(PromptRecord {
        prompt_hash: hash(row, "prompt_hash")?,
        user_id: row.text("user_id")?,
        app_id: row.text("app_id")?,
        scopes: scopes(row, "scopes")?,
        previously_denied: row.int("previously_denied")? != 0,
        created_at: ts(row, "created_at")?,
        expires_at: ts(row, "expires_at")?,
        resolved_at: opt_ts(row, "resolved_at")?,
    })
}

pub fn code(row: &impl Columns) -> Result<AuthCodeRecord, sqlx::Error> {
    Ok(AuthCodeRecord {
        code_hash: hash(row, "code_hash")?,
        grant_id: row.text("grant_id")?,
        app_id: row.text("app_id")?,
        user_id: row.text("user_id")?,
        scopes: scopes(row, "scopes")?,
        created_at: ts(row, "created_at")?,
        expires_at: ts(row, "expires_at")?,
        purge_at: ts(row, "purge_at")?,
    })
}

/// Whether an auth code row has been spent.
pub fn code_used(row: &impl Columns) -> Result<bool, sqlx::Error> {
    Ok(row.opt_int("used_at")?.is_some())
}

pub fn refresh_token(row: &impl Columns) -> Result<RefreshTokenRecord, sqlx::Error> {
    Ok(RefreshTokenRecord {
        token_hash: hash(row, "token_hash")?,
        family_id: row.text("family_id")?,
        app_id: row.text("app_id")?,
        user_id: row.text("user_id")?,
        scopes: scopes(row, "scopes")?,
        created_at: ts(row, "created_at")?,
        expires_at: ts(row, "expires_at")?,
        used_at: opt_ts(row, "used_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

pub fn revocation(row: &impl Columns) -> Result<RevocationRule, sqlx::Error> {
    Ok(RevocationRule {
        sequence: row.int("sequence")? as u64,
        app_id: row.text("app_id")?,
        user_id: row.opt_text("user_id")?,
        scopes: scopes(row, "scopes")?,
        token_id: row.opt_text("token_id")?,
        grant_id: row.opt_text("grant_id")?,
        issued_before: ts(row, "issued_before")?,
        expire_at: ts(row, "expire_at")?,
    })
}

pub fn token_key(row: &impl Columns) -> Result<StoredTokenKey, sqlx::Error> {
    Ok(StoredTokenKey {
        key_id: row.text("key_id")?,
        sealed_key: row.text("sealed_key")?,
        created_at: ts(row, "created_at")?,
        retire_at: ts(row, "retire_at")?,
        expire_at: ts(row, "expire_at")?,
    })
}
