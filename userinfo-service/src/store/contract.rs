//! The contract the services call: one trait per entity, and the store that holds them all.

use async_trait::async_trait;
use miniprogram_token::Timestamp;
use sql_backend::StoreResult;

use crate::model::{Disclosure, DisclosurePosition, Profile, PublicProfile, UtcDay};

/// The wallet's user records.
#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    /// Creates or replaces the profile (its `updated_at` is stored as given).
    async fn upsert(&self, profile: &Profile) -> StoreResult<()>;
    async fn get(&self, user_id: &str) -> StoreResult<Option<Profile>>;
    /// Reads only the public columns: the user id, real name and phone number are never
    /// selected on this path.
    async fn get_public(&self, user_id: &str) -> StoreResult<Option<PublicProfile>>;
    async fn phone_number(&self, user_id: &str) -> StoreResult<Option<String>>;
    /// Erases the profile and the user's disclosure rows, then scrubs the freed bytes from the
    /// database files ([`sql_backend::Pools::scrub`]), also when there was nothing to delete,
    /// so a call repeated after a failed scrub finishes the job. With `written_by`, only a
    /// profile last written at or before it: an erasure requested then does not reach a
    /// profile written since, which is a new one. `false` when nothing was deleted.
    async fn delete(&self, user_id: &str, written_by: Option<Timestamp>) -> StoreResult<bool>;
}

/// The disclosure ledger: reads of a user's data, counted per app, kind and UTC day.
#[async_trait]
pub trait DisclosureStore: Send + Sync + 'static {
    /// Adds each row's count to the stored row with its key, creating it if missing, all in
    /// one transaction. Rows of users with no profile (erased meanwhile) are skipped.
    async fn add_disclosures(&self, rows: &[Disclosure]) -> StoreResult<()>;
    /// Up to `limit` of the user's rows after `after` in the ledger's order (newest day first,
    /// then app id and kind, all descending); only `app_id`'s when given.
    async fn list_disclosures(
        &self,
        user_id: &str,
        app_id: Option<&str>,
        after: Option<&DisclosurePosition>,
        limit: u32,
    ) -> StoreResult<Vec<Disclosure>>;
    /// Deletes the rows of days before `day`; how many.
    async fn sweep_disclosures(&self, before: UtcDay) -> StoreResult<u64>;
}

/// Erasures whose auth-service half is not confirmed yet: user ids only.
#[async_trait]
pub trait ErasureStore: Send + Sync + 'static {
    /// Records that the user's erasure must still reach auth-service (once per user, at the
    /// time of the latest request).
    async fn mark_erasure_pending(&self, user_id: &str, now: Timestamp) -> StoreResult<()>;
    /// Up to `limit` users whose erasure is pending, oldest first, each with when it was last
    /// requested.
    async fn pending_erasures(&self, limit: u32) -> StoreResult<Vec<(String, Timestamp)>>;
    /// The erasure reached auth-service: the user id leaves the table and its files.
    async fn clear_pending_erasure(&self, user_id: &str) -> StoreResult<()>;
}

/// userinfo-service's database: every entity's store.
#[async_trait]
pub trait UserInfoStore: ProfileStore + DisclosureStore + ErasureStore {
    /// Closes the connections, once the server has stopped using them.
    async fn close(&self);
}
