//! A user's own data across both services: one export document, and an erasure that reaches
//! auth-service too, resumed in the background when auth-service cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use miniprogram_token::{Clock, Timestamp};
use serde::Serialize;

use crate::error::UserInfoError;
use crate::model::{DisclosedFields, Profile};
use crate::profiles::ProfileRegistry;
use crate::store::UserInfoStore;

/// The export's format name; a field is only ever added under it, never renamed or removed.
pub const EXPORT_FORMAT: &str = "miniprogram.user-data/v1";
/// Most disclosure rows an export carries (newest first); `disclosures_truncated` says when
/// more are kept.
pub const MAX_EXPORTED_DISCLOSURES: u32 = 10_000;
/// Pending erasures retried per round.
const RESUME_BATCH: u32 = 100;

/// What auth-service holds about a user, as the export carries it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AuthorizationExport {
    pub authorizations: Vec<ExportedAuthorization>,
    pub consent_records: Vec<ExportedConsentRecord>,
    /// auth-service held more consent records than it exports (the oldest were left out):
    /// page further with ListConsentRecords.
    pub consent_records_truncated: bool,
    pub app_scoped_user_ids: Vec<ExportedAppUserId>,
}

/// One app's standing authorization.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportedAuthorization {
    pub app_id: String,
    pub app_display_name: String,
    /// JSAPI names: `userInfo`, `auth_base`, `phoneNumber`.
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub granted_at: String,
}

/// One consent record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportedConsentRecord {
    pub record_id: String,
    pub app_id: String,
    /// `prompted`, `granted`, `denied`, `withdrawn`, `voided_by_feature_change`,
    /// `voided_by_erasure`.
    pub event: String,
    pub scopes: Vec<String>,
    /// `user_tap`, `app_launch`, or absent.
    pub trigger: Option<String>,
    pub purposes: Vec<ExportedPurpose>,
    pub declaration_version: i64,
    pub recorded_at: String,
}

/// A declared purpose.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportedPurpose {
    pub scope: String,
    pub purpose: String,
}

/// The id the user has in one app, and whether the app was given it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportedAppUserId {
    pub app_id: String,
    pub user_id: String,
    pub disclosed: bool,
}

/// auth-service's half of a user's data.
#[async_trait]
pub trait AuthorizationRecords: Send + Sync + 'static {
    async fn export(&self, user_id: &str) -> Result<AuthorizationExport, UserInfoError>;
    /// Ends every authorization of the user there; idempotent.
    async fn erase(&self, user_id: &str) -> Result<(), UserInfoError>;
}

#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    user_id: &'a str,
    exported_at: String,
    profile: Option<ExportedProfile>,
    disclosures: Vec<ExportedDisclosure>,
    /// More rows were kept than [`MAX_EXPORTED_DISCLOSURES`]: the rest are older, to be paged
    /// with ListDisclosures.
    disclosures_truncated: bool,
    #[serde(flatten)]
    authorization: AuthorizationExport,
}

#[derive(Serialize)]
struct ExportedProfile {
    real_name: String,
    phone_number: String,
    avatar: String,
    nick_name: String,
    gender: String,
    country_code: String,
    province: String,
    city: String,
    updated_at: String,
}

#[derive(Serialize)]
struct ExportedDisclosure {
    app_id: String,
    /// `public_profile` or `phone_number`.
    data: &'static str,
    /// `YYYY-MM-DD`, UTC.
    day: String,
    count: u64,
}

/// RFC 3339 in UTC, nanoseconds included.
pub fn rfc3339(t: Timestamp) -> String {
    let nanos = u64::try_from(t.unix_nanos()).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + Duration::from_nanos(nanos);
    humantime::format_rfc3339_nanos(at).to_string()
}

fn exported_profile(p: Profile) -> ExportedProfile {
    ExportedProfile {
        real_name: p.real_name,
        phone_number: p.phone_number,
        avatar: p.public.avatar,
        nick_name: p.public.nick_name,
        gender: p.public.gender,
        country_code: p.public.country_code,
        province: p.public.province,
        city: p.public.city,
        updated_at: rfc3339(p.updated_at),
    }
}

/// What an erasure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erasure {
    /// Whether there was a profile to delete.
    pub profile_existed: bool,
    /// auth-service could not be reached: the erasure there is recorded and retried.
    pub authorizations_pending: bool,
}

/// Exports and erases users across both services.
#[derive(Clone)]
pub struct UserData {
    store: Arc<dyn UserInfoStore>,
    profiles: ProfileRegistry,
    auth: Arc<dyn AuthorizationRecords>,
    clock: Arc<dyn Clock>,
}

impl UserData {
    pub fn new(
        store: Arc<dyn UserInfoStore>,
        profiles: ProfileRegistry,
        auth: Arc<dyn AuthorizationRecords>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        UserData {
            store,
            profiles,
            auth,
            clock,
        }
    }

    /// Everything both services hold about the user, as one JSON document
    /// ([`EXPORT_FORMAT`]). Fails (auth-service unavailable) rather than export half of it.
    pub async fn export(&self, user_id: &str) -> Result<String, UserInfoError> {
        let profile = match self.profiles.get(user_id).await {
            Ok(p) => Some(exported_profile(p)),
            Err(UserInfoError::ProfileNotFound) => None,
            Err(e) => return Err(e),
        };
        // One row more than exported tells whether there are more.
        let mut rows = self
            .store
            .list_disclosures(user_id, None, None, MAX_EXPORTED_DISCLOSURES + 1)
            .await?;
        let disclosures_truncated = rows.len() > MAX_EXPORTED_DISCLOSURES as usize;
        rows.truncate(MAX_EXPORTED_DISCLOSURES as usize);
        let disclosures = rows
            .into_iter()
            .map(|d| ExportedDisclosure {
                app_id: d.app_id,
                data: match d.fields {
                    DisclosedFields::PublicProfile => "public_profile",
                    DisclosedFields::PhoneNumber => "phone_number",
                },
                day: d.day.date(),
                count: d.count,
            })
            .collect();
        let authorization = self.auth.export(user_id).await?;
        let document = Document {
            format: EXPORT_FORMAT,
            user_id,
            exported_at: rfc3339(self.clock.now()),
            profile,
            disclosures,
            disclosures_truncated,
            authorization,
        };
        serde_json::to_string_pretty(&document)
            .map_err(|_| UserInfoError::Internal("the export did not encode as JSON"))
    }

    /// Erases the user in both services. The erasure is recorded first, so that whichever
    /// service fails midway it is finished later: here by a retry of the call, at auth-service
    /// by [`run`] until it answers. The profile and ledger go at once.
    pub async fn erase(&self, user_id: &str) -> Result<Erasure, UserInfoError> {
        crate::profiles::checked_user_id(user_id)?;
        self.store
            .mark_erasure_pending(user_id, self.clock.now())
            .await?;
        let profile_existed = match self.profiles.delete(user_id).await {
            Ok(()) => true,
            Err(UserInfoError::ProfileNotFound) => false,
            Err(e) => return Err(e),
        };
        let authorizations_pending = match self.finish_at_auth(user_id).await {
            Ok(()) => false,
            Err(UserInfoError::AuthServiceUnavailable(why)) => {
                tracing::warn!(%why, "auth-service unreachable; its half of an erasure will be retried");
                true
            }
            Err(e) => return Err(e),
        };
        Ok(Erasure {
            profile_existed,
            authorizations_pending,
        })
    }

    async fn finish_at_auth(&self, user_id: &str) -> Result<(), UserInfoError> {
        self.auth.erase(user_id).await?;
        self.store.clear_pending_erasure(user_id).await?;
        Ok(())
    }

    /// Retries every pending erasure once, in order: the profile and ledger here first (gone
    /// already counts as done; a process that died between recording the erasure and deleting
    /// the profile left it in place), then auth-service, and only then is the pending record
    /// cleared. Stops at the first user auth-service can't take, so an outage costs one
    /// delete and scrub per round. How many reached auth-service.
    pub async fn resume(&self) -> Result<usize, UserInfoError> {
        let pending = self.store.pending_erasures(RESUME_BATCH).await?;
        let mut done = 0;
        for (user_id, requested_at) in pending {
            let written_by = Some(requested_at);
            match self.profiles.delete_written_by(&user_id, written_by).await {
                Ok(()) | Err(UserInfoError::ProfileNotFound) => {}
                Err(e) => return Err(e),
            }
            match self.finish_at_auth(&user_id).await {
                Ok(()) => done += 1,
                Err(UserInfoError::AuthServiceUnavailable(_)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// Retries pending erasures every `interval`, forever; spawn it and abort it on shutdown.
pub async fn run(user_data: UserData, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match user_data.resume().await {
            Ok(0) => {}
            Ok(done) => tracing::info!(done, "pending erasures reached auth-service"),
            Err(e) => tracing::warn!(error = %e, "resuming erasures failed; will retry"),
        }
    }
}
