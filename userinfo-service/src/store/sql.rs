//! Profiles in SQL, written once for SQLite and PostgreSQL over [`sql_backend::Backend`].

use async_trait::async_trait;
use sql_backend::Access::Read;
use sql_backend::{Backend, Columns, Pools, StoreResult, args};
use sqlx::migrate::Migrator;

use super::contract::ProfileStore;
use crate::model::{Profile, PublicProfile};

/// SQLite read-only connections beside the writer: the public read is the hot path.
const READERS: u32 = 8;

/// userinfo-service's tables in one database of engine `B`.
pub struct SqlProfileStore<B: Backend> {
    pools: Pools<B>,
}

impl<B: Backend> SqlProfileStore<B> {
    /// Opens `url` and applies `migrations` (those of engine `B`).
    pub async fn open(url: &str, migrations: &'static Migrator) -> StoreResult<Self> {
        let pools = B::open(url, migrations, READERS).await?;
        Ok(SqlProfileStore { pools })
    }
}

#[async_trait]
impl<B: Backend> ProfileStore for SqlProfileStore<B> {
    async fn upsert(&self, p: &Profile) -> StoreResult<()> {
        let sql = "INSERT INTO profiles (user_id, real_name, phone_number, avatar, nick_name,
               gender, country_code, province, city, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (user_id) DO UPDATE SET real_name = excluded.real_name,
               phone_number = excluded.phone_number, avatar = excluded.avatar,
               nick_name = excluded.nick_name, gender = excluded.gender,
               country_code = excluded.country_code, province = excluded.province,
               city = excluded.city, updated_at = excluded.updated_at";
        let q = &p.public;
        let args = args! {
            &p.user_id, &p.real_name, &p.phone_number, &q.avatar, &q.nick_name, &q.gender,
            &q.country_code, &q.province, &q.city, p.updated_at
        };
        self.pools.session().execute(sql, args).await.map(drop)
    }

    async fn get(&self, user_id: &str) -> StoreResult<Option<Profile>> {
        let sql = "SELECT * FROM profiles WHERE user_id = $1";
        let mut session = self.pools.session();
        session.first(Read, sql, args![user_id], profile).await
    }

    async fn get_public(&self, user_id: &str) -> StoreResult<Option<PublicProfile>> {
        let sql = "SELECT avatar, nick_name, gender, country_code, province, city
                   FROM profiles WHERE user_id = $1";
        let mut session = self.pools.session();
        session
            .first(Read, sql, args![user_id], public_profile)
            .await
    }

    async fn phone_number(&self, user_id: &str) -> StoreResult<Option<String>> {
        let sql = "SELECT phone_number FROM profiles WHERE user_id = $1";
        let decode = |r: &B::Record| r.text("phone_number");
        let mut session = self.pools.session();
        session.first(Read, sql, args![user_id], decode).await
    }

    async fn delete(&self, user_id: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM profiles WHERE user_id = $1";
        Ok(self.pools.session().execute(sql, args![user_id]).await? > 0)
    }

    async fn close(&self) {
        self.pools.close().await;
    }
}

sql_backend::decoders! {
    public_profile -> PublicProfile {
        avatar: text, nick_name: text, gender: text, country_code: text, province: text, city: text
    }
}

fn profile(row: &impl Columns) -> Result<Profile, sqlx::Error> {
    Ok(Profile {
        user_id: row.text("user_id")?,
        real_name: row.text("real_name")?,
        phone_number: row.text("phone_number")?,
        public: public_profile(row)?,
        updated_at: row.time("updated_at")?,
    })
}
