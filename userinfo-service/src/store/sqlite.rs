//! Profiles in SQLite (WAL, one writer connection beside a small reader pool).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{ProfileStore, StoreError, classify, rows};
use crate::profiles::{Profile, PublicProfile};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/userinfo/sqlite");

/// userinfo-service's tables in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteProfileStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteProfileStore {
    /// Opens (creating if missing) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(classify)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        service_runtime::private_files::prepare_sqlite_database(url, options.get_filename())
            .map_err(|e| classify(sqlx::Error::Io(e)))?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Internal(Arc::new(e.into())))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .map_err(classify)?;
        Ok(SqliteProfileStore { writer, reader })
    }
}

#[async_trait]
impl ProfileStore for SqliteProfileStore {
    async fn upsert_profile(&self, p: &Profile) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO profiles (user_id, real_name, phone_number, avatar, nick_name, gender,
               country_code, province, city, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (user_id) DO UPDATE SET real_name = excluded.real_name,
               phone_number = excluded.phone_number, avatar = excluded.avatar,
               nick_name = excluded.nick_name, gender = excluded.gender,
               country_code = excluded.country_code, province = excluded.province,
               city = excluded.city, updated_at = excluded.updated_at",
        )
        .bind(&p.user_id)
        .bind(&p.real_name)
        .bind(&p.phone_number)
        .bind(&p.public.avatar)
        .bind(&p.public.nick_name)
        .bind(&p.public.gender)
        .bind(&p.public.country_code)
        .bind(&p.public.province)
        .bind(&p.public.city)
        .bind(p.updated_at.unix_nanos())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn get_profile(&self, user_id: &str) -> Result<Profile, StoreError> {
        let row = sqlx::query("SELECT * FROM profiles WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(&self.reader)
            .await
            .map_err(classify)?;
        rows::profile(&row).map_err(classify)
    }

    async fn get_public_profile(&self, user_id: &str) -> Result<PublicProfile, StoreError> {
        let row = sqlx::query(
            "SELECT avatar, nick_name, gender, country_code, province, city
             FROM profiles WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_one(&self.reader)
        .await
        .map_err(classify)?;
        rows::public_profile(&row).map_err(classify)
    }

    async fn get_phone_number(&self, user_id: &str) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT phone_number FROM profiles WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(&self.reader)
            .await
            .map_err(classify)
    }

    async fn delete_profile(&self, user_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM profiles WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn count_profiles(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profiles")
            .fetch_one(&self.reader)
            .await
            .map_err(classify)?;
        Ok(n as u64)
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn fresh() -> Option<(Arc<dyn ProfileStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("userinfo.db").display());
        let store = SqliteProfileStore::open(&url)
            .await
            .expect("open SQLite store");
        Some((Arc::new(store), dir))
    }

    crate::profile_store_conformance!(fresh);
}
