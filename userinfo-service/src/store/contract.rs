//! The contract the services call.

use async_trait::async_trait;
use sql_backend::StoreResult;

use crate::model::{Profile, PublicProfile};

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
    /// `false` when there was no such profile.
    async fn delete(&self, user_id: &str) -> StoreResult<bool>;
    async fn close(&self);
}
