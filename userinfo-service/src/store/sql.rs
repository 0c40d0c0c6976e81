//! userinfo-service's tables in SQL, written once for SQLite and PostgreSQL over
//! [`sql_backend::Session`].

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sql_backend::Access::Read;
use sql_backend::{Columns, Migrations, Pools, StoreResult, Vacuum, args};

use miniprogram_token::Timestamp;

use super::contract::{DisclosureStore, ErasureStore, ProfileStore, UserInfoStore};
use crate::model::{
    DisclosedFields, Disclosure, DisclosurePosition, Profile, PublicProfile, UtcDay,
};

/// The tables an erasure deletes from (a user's personal data, and the record of the erasure
/// itself), scrubbed after it.
const ERASED_TABLES: [&str; 3] = ["profiles", "disclosures", "pending_erasures"];

/// userinfo-service's tables in one database.
pub struct SqlUserInfoStore {
    pools: Pools,
    /// How an erasure scrubs the personal tables on PostgreSQL (`ERASURE_VACUUM_FULL`).
    erasure_vacuum: Vacuum,
    scrubs: Scrubs,
}

/// Scrubs after erasures, merged. Erasures at once would each hold a connection for a
/// `VACUUM` of the same tables, queued on one another's table locks, until none was left for
/// reads; instead one scrub runs at a time, and one that starts after an erasure's delete
/// serves it.
#[derive(Default)]
struct Scrubs {
    /// Scrubs asked for so far, each after its delete.
    asked: AtomicU64,
    /// Every scrub asked for up to this many has run; held while one runs.
    done: tokio::sync::Mutex<u64>,
    /// Scrubs run (tests count them).
    #[cfg(test)]
    runs: AtomicU64,
}

impl SqlUserInfoStore {
    /// Opens `url` and applies `migrations` (those of its engine).
    pub async fn open(
        url: &str,
        migrations: Migrations,
        erasure_vacuum: Vacuum,
    ) -> StoreResult<Self> {
        let pools = Pools::open(url, migrations).await?;
        Ok(SqlUserInfoStore {
            pools,
            erasure_vacuum,
            scrubs: Scrubs::default(),
        })
    }

    /// Scrubs what deletes before this call freed, in a scrub of its own or one that started
    /// after this call.
    async fn scrub(&self) -> StoreResult<()> {
        let asked = self.scrubs.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.scrubs.done.lock().await;
        if *done >= asked {
            return Ok(());
        }
        let covered = self.scrubs.asked.load(Ordering::SeqCst);
        self.pools
            .scrub(&ERASED_TABLES, self.erasure_vacuum)
            .await?;
        #[cfg(test)]
        self.scrubs.runs.fetch_add(1, Ordering::SeqCst);
        *done = covered;
        Ok(())
    }
}

#[async_trait]
impl ProfileStore for SqlUserInfoStore {
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
        let decode = |r: &dyn Columns| r.text("phone_number");
        let mut session = self.pools.session();
        session.first(Read, sql, args![user_id], decode).await
    }

    async fn delete(&self, user_id: &str, written_by: Option<Timestamp>) -> StoreResult<bool> {
        // The user's disclosure rows go with the profile (ON DELETE CASCADE).
        let sql = "DELETE FROM profiles WHERE user_id = $1 AND updated_at <= $2";
        let written_by = written_by.map_or(i64::MAX, Timestamp::unix_nanos);
        let args = args![user_id, written_by];
        let deleted = self.pools.session().execute(sql, args).await? > 0;
        self.scrub().await?;
        Ok(deleted)
    }
}

#[async_trait]
impl DisclosureStore for SqlUserInfoStore {
    async fn add_disclosures(&self, rows: &[Disclosure]) -> StoreResult<()> {
        // `WHERE EXISTS` leaves out users erased since their reads; on PostgreSQL an erasure
        // racing this insert fails it on the foreign key instead, and the batch is retried.
        let sql = "INSERT INTO disclosures (user_id, day, app_id, fields, count)
             SELECT $1, $2, $3, $4, $5
             WHERE EXISTS (SELECT 1 FROM profiles WHERE user_id = $1)
             ON CONFLICT (user_id, day, app_id, fields)
             DO UPDATE SET count = disclosures.count + excluded.count";
        let mut tx = self.pools.begin().await?;
        for row in rows {
            let count = i64::try_from(row.count).unwrap_or(i64::MAX);
            let args = args![
                &row.user_id,
                row.day.0,
                &row.app_id,
                row.fields.code(),
                count
            ];
            tx.execute(sql, args).await?;
        }
        tx.commit().await
    }

    async fn list_disclosures(
        &self,
        user_id: &str,
        app_id: Option<&str>,
        after: Option<&DisclosurePosition>,
        limit: u32,
    ) -> StoreResult<Vec<Disclosure>> {
        // Row values order the key as the primary key does, so the page is an index range.
        let sql = "SELECT user_id, day, app_id, fields, count FROM disclosures
             WHERE user_id = $1 AND ($2 = '' OR app_id = $2)
               AND (day, app_id, fields) < ($3, $4, $5)
             ORDER BY day DESC, app_id DESC, fields DESC
             LIMIT $6";
        let (day, after_app, fields) = match after {
            Some(p) => (p.day.0, p.app_id.as_str(), p.fields.code()),
            None => (i64::MAX, "", 0),
        };
        let args = args![user_id, app_id.unwrap_or(""), day, after_app, fields, limit];
        let mut session = self.pools.session();
        session.all(Read, sql, args, disclosure).await
    }

    /// In batches, so no one statement holds the writer (on SQLite, a tokio worker) for long.
    async fn sweep_disclosures(&self, before: UtcDay) -> StoreResult<u64> {
        const BATCH: i64 = 1_000;
        let sql = "DELETE FROM disclosures WHERE (user_id, day, app_id, fields) IN
                     (SELECT user_id, day, app_id, fields FROM disclosures WHERE day < $1 LIMIT $2)";
        let mut deleted = 0;
        loop {
            let batch = self
                .pools
                .session()
                .execute(sql, args![before.0, BATCH])
                .await?;
            deleted += batch;
            if batch < BATCH as u64 {
                return Ok(deleted);
            }
        }
    }
}

#[async_trait]
impl ErasureStore for SqlUserInfoStore {
    async fn mark_erasure_pending(&self, user_id: &str, now: Timestamp) -> StoreResult<()> {
        let sql = "INSERT INTO pending_erasures (user_id, requested_at) VALUES ($1, $2)
                   ON CONFLICT (user_id) DO UPDATE SET requested_at = excluded.requested_at";
        let mut session = self.pools.session();
        session.execute(sql, args![user_id, now]).await.map(drop)
    }

    async fn pending_erasures(&self, limit: u32) -> StoreResult<Vec<(String, Timestamp)>> {
        let sql = "SELECT user_id, requested_at FROM pending_erasures
                   ORDER BY requested_at, user_id LIMIT $1";
        let decode = |r: &dyn Columns| Ok((r.text("user_id")?, r.time("requested_at")?));
        let mut session = self.pools.session();
        session.all(Read, sql, args![limit], decode).await
    }

    async fn clear_pending_erasure(&self, user_id: &str) -> StoreResult<()> {
        let sql = "DELETE FROM pending_erasures WHERE user_id = $1";
        let mut session = self.pools.session();
        session.execute(sql, args![user_id]).await?;
        self.scrub().await
    }
}

#[async_trait]
impl UserInfoStore for SqlUserInfoStore {
    async fn close(&self) {
        self.pools.close().await;
    }
}

sql_backend::decoders! {
    public_profile -> PublicProfile {
        avatar: text, nick_name: text, gender: text, country_code: text, province: text, city: text
    }
}

fn profile(row: &dyn Columns) -> Result<Profile, sqlx::Error> {
    Ok(Profile {
        user_id: row.text("user_id")?,
        real_name: row.text("real_name")?,
        phone_number: row.text("phone_number")?,
        public: public_profile(row)?,
        updated_at: row.time("updated_at")?,
    })
}

fn disclosure(row: &dyn Columns) -> Result<Disclosure, sqlx::Error> {
    let code = row.int("fields")?;
    let fields = DisclosedFields::from_code(code).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "fields".into(),
        source: format!("unknown disclosed-fields code {code}").into(),
    })?;
    Ok(Disclosure {
        user_id: row.text("user_id")?,
        app_id: row.text("app_id")?,
        fields,
        day: UtcDay(row.int("day")?),
        count: row.uint("count")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the merging in `SqlUserInfoStore::scrub` (an erasure whose scrub another one
    /// started after it already covers runs none): twenty erasures that queue behind a running
    /// scrub are all served by the next one, not by twenty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn erasures_at_once_share_one_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("userinfo.db").display());
        let open = SqlUserInfoStore::open(&url, super::super::MIGRATIONS, Vacuum::Plain);
        let store = std::sync::Arc::new(open.await.unwrap());
        let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
        for user in &users {
            store
                .upsert(&super::super::conformance::profile(user))
                .await
                .unwrap();
        }
        let running = store.scrubs.done.lock().await;
        let erasures: Vec<_> = (users.iter().cloned())
            .map(|user| {
                let store = store.clone();
                tokio::spawn(async move { store.delete(&user, None).await })
            })
            .collect();
        let queued = async {
            while store.scrubs.asked.load(Ordering::SeqCst) < 20 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), queued)
            .await
            .expect("twenty erasures queue within 10 s");
        drop(running);
        for erasure in erasures {
            let deleted = tokio::time::timeout(std::time::Duration::from_secs(10), erasure);
            assert!(deleted.await.expect("within 10 s").unwrap().unwrap());
        }
        assert_eq!(store.scrubs.runs.load(Ordering::SeqCst), 1);
        store.close().await;
    }
}
