//! Persistence for userinfo-service: the profile store trait, its SQLite implementation and
//! the conformance suite every implementation passes.

use std::sync::Arc;

use async_trait::async_trait;

use crate::profiles::{Profile, PublicProfile};

#[cfg(test)]
mod conformance;
pub mod postgres;
mod rows;
pub mod sqlite;

/// Caller-actionable storage failures, plus one bucket for everything else.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    #[error("unexpected database error: {0}")]
    Internal(Arc<sqlx::Error>),
}

/// Maps a sqlx error to a store error kind (both backends: profiles have no constraint a
/// caller can trip besides the primary key, which upsert absorbs).
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(Arc::new(e))
        }
        _ => StoreError::Internal(Arc::new(e)),
    }
}

/// The wallet's user records.
#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    /// Creates or replaces the profile (its `updated_at` is stored as given).
    async fn upsert_profile(&self, profile: &Profile) -> Result<(), StoreError>;
    async fn get_profile(&self, user_id: &str) -> Result<Profile, StoreError>;
    /// Reads only the public columns: the user id, real name and phone number are never
    /// selected on this path.
    async fn get_public_profile(&self, user_id: &str) -> Result<PublicProfile, StoreError>;
    async fn get_phone_number(&self, user_id: &str) -> Result<String, StoreError>;
    async fn delete_profile(&self, user_id: &str) -> Result<(), StoreError>;
    async fn count_profiles(&self) -> Result<u64, StoreError>;
    async fn close(&self);
}
