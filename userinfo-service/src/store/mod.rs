//! Persistence for userinfo-service: the profile and disclosure stores, their one SQL
//! implementation for SQLite and PostgreSQL, and the conformance suite it passes on both.

use std::sync::Arc;

use sql_backend::{Engine, Postgres, Sqlite};

#[cfg(test)]
mod conformance;
mod contract;
mod sql;

pub use contract::{DisclosureStore, ErasureStore, ProfileStore, UserInfoStore};
pub use sql::SqlUserInfoStore;
pub use sql_backend::{StoreError, StoreResult, Vacuum};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/userinfo/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("../migrations/userinfo/postgres");

/// Opens the database the URL names (`sqlite:` or `postgres://`) and applies its migrations;
/// erasures scrub with a plain `VACUUM` on PostgreSQL.
pub async fn open(url: &str) -> StoreResult<Arc<dyn UserInfoStore>> {
    open_with(url, Vacuum::Plain).await
}

/// [`open`], with erasures scrubbing the personal tables on PostgreSQL as `vacuum` says.
pub async fn open_with(url: &str, vacuum: Vacuum) -> StoreResult<Arc<dyn UserInfoStore>> {
    Ok(match Engine::of(url)? {
        Engine::Sqlite => {
            Arc::new(SqlUserInfoStore::<Sqlite>::open(url, &SQLITE_MIGRATIONS, vacuum).await?)
        }
        Engine::Postgres => {
            Arc::new(SqlUserInfoStore::<Postgres>::open(url, &POSTGRES_MIGRATIONS, vacuum).await?)
        }
    })
}
