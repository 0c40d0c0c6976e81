//! Persistence for userinfo-service: the profile and disclosure stores, their one SQL
//! implementation for SQLite and PostgreSQL, and the conformance suite it passes on both.

use std::sync::Arc;

use sql_backend::Migrations;

#[cfg(test)]
mod conformance;
mod contract;
mod sql;

pub use contract::{DisclosureStore, ErasureStore, ProfileStore, UserInfoStore};
pub use sql::SqlUserInfoStore;
pub use sql_backend::{StoreError, StoreResult, Vacuum};

/// userinfo-service's migrations, per engine.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("../migrations/userinfo/sqlite"),
    postgres: &sqlx::migrate!("../migrations/userinfo/postgres"),
};

/// Opens the database the URL names (`sqlite:` or `postgres://`) and applies its migrations;
/// erasures scrub with a plain `VACUUM` on PostgreSQL.
pub async fn open(url: &str) -> StoreResult<Arc<dyn UserInfoStore>> {
    open_with(url, Vacuum::Plain).await
}

/// [`open`], with erasures scrubbing the personal tables on PostgreSQL as `vacuum` says.
pub async fn open_with(url: &str, vacuum: Vacuum) -> StoreResult<Arc<dyn UserInfoStore>> {
    Ok(Arc::new(
        SqlUserInfoStore::open(url, MIGRATIONS, vacuum).await?,
    ))
}
