//! Persistence for userinfo-service: the profile store, its one SQL implementation for SQLite
//! and PostgreSQL, and the conformance suite it passes on both.

use std::sync::Arc;

use sql_backend::{Engine, Postgres, Sqlite};

#[cfg(test)]
mod conformance;
mod contract;
mod sql;

pub use contract::ProfileStore;
pub use sql::SqlProfileStore;
pub use sql_backend::{StoreError, StoreResult};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/userinfo/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("../migrations/userinfo/postgres");

/// Opens the database the URL names (`sqlite:` or `postgres://`) and applies its migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn ProfileStore>> {
    Ok(match Engine::of(url)? {
        Engine::Sqlite => Arc::new(SqlProfileStore::<Sqlite>::open(url, &SQLITE_MIGRATIONS).await?),
        Engine::Postgres => {
            Arc::new(SqlProfileStore::<Postgres>::open(url, &POSTGRES_MIGRATIONS).await?)
        }
    })
}
