//! Profiles in PostgreSQL, the backend for several userinfo-service replicas.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{ProfileStore, StoreError, classify, rows};
use crate::profiles::{Profile, PublicProfile};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/userinfo/postgres");

/// userinfo-service's tables in a PostgreSQL database (or one schema of it).
#[derive(Debug, Clone)]
pub struct PostgresProfileStore {
    pool: PgPool,
}

impl PostgresProfileStore {
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
        Ok(PostgresProfileStore { pool })
    }
}

#[async_trait]
impl ProfileStore for PostgresProfileStore {
    async fn upsert_profile(&self, p: &Profile) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO profiles (user_id, real_name, phone_number, avatar, nick_name, gender,
               country_code, province, city, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
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
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn get_profile(&self, user_id: &str) -> Result<Profile, StoreError> {
        let row = sqlx::query("SELECT * FROM profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        rows::profile(&row).map_err(classify)
    }

    async fn get_public_profile(&self, user_id: &str) -> Result<PublicProfile, StoreError> {
        let row = sqlx::query(
            "SELECT avatar, nick_name, gender, country_code, province, city
             FROM profiles WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        rows::public_profile(&row).map_err(classify)
    }

    async fn get_phone_number(&self, user_id: &str) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT phone_number FROM profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    async fn delete_profile(&self, user_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM profiles WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn count_profiles(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profiles")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(n as u64)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn fresh() -> Option<(Arc<dyn ProfileStore>, ())> {
        let options =
            auth_service::store::postgres::test_schema::fresh_schema("userinfo_test").await?;
        let store = PostgresProfileStore::open_with(options)
            .await
            .expect("open Postgres store");
        Some((Arc::new(store), ()))
    }

    crate::profile_store_conformance!(fresh);
}
