//! What auth-service keeps, as one repository per entity (the shape of IOx's catalog): apps,
//! consents (authorizations and prompts), grants (auth codes and refresh-token families),
//! revocations and token keys. The store answers facts: the row, or none; the row an atomic
//! statement touched, or none. What a fact means (used, expired, revoked) the services decide.
//!
//! Calls through [`AuthStore::repositories`] run one by one; calls through a [`Transaction`]
//! from [`AuthStore::begin`] are kept together by its commit or not at all, so a failed call
//! leaves nothing half-written. `sql.rs` implements it once for SQLite and PostgreSQL.

use std::sync::Arc;

use sql_backend::Migrations;

#[cfg(test)]
mod conformance;
mod contract;
mod sql;

pub use contract::{
    AppRepo, AuthStore, ConsentRepo, Decision, GrantRepo, KeyRepo, PrivacyRepo, QUOTA_WINDOW_NANOS,
    Repositories, RevocationRepo, SweepCounts, Transaction,
};
pub use sql::SqlAuthStore;
pub use sql_backend::{StoreError, StoreResult};

/// auth-service's migrations, per engine.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("../migrations/auth/sqlite"),
    postgres: &sqlx::migrate!("../migrations/auth/postgres"),
};

/// Opens the database the URL names (`sqlite:` or `postgres://`) and applies its migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn AuthStore>> {
    Ok(Arc::new(SqlAuthStore::open(url, MIGRATIONS).await?))
}
