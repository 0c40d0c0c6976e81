//! ProfileService: the wallet's user records, validated on write.

use std::sync::Arc;

use miniprogram_proto::userinfo::v1 as pb;
use miniprogram_token::Timestamp;
use pb::profile_service_server::ProfileService;
use tonic::{Request, Response, Status};

use crate::error::UserInfoError;
use crate::profile_cache::PublicProfileCache;
use crate::profiles::{Profile, PublicProfile, check_user_id};
use crate::store::{ProfileStore, StoreError};

/// Serves ProfileService over the store.
pub struct ProfileGrpc {
    pub store: Arc<dyn ProfileStore>,
    /// Invalidated on every write, so this replica never serves a replaced or deleted profile.
    pub cache: Arc<PublicProfileCache>,
}

fn to_proto(p: Profile) -> pb::Profile {
    pb::Profile {
        user_id: p.user_id,
        real_name: p.real_name,
        phone_number: p.phone_number,
        avatar: p.public.avatar,
        nick_name: p.public.nick_name,
        gender: p.public.gender,
        country_code: p.public.country_code,
        province: p.public.province,
        city: p.public.city,
        update_time: Some(miniprogram_proto::wire_time::to_proto(p.updated_at)),
    }
}

fn checked_user_id(user_id: &str) -> Result<(), UserInfoError> {
    match check_user_id(user_id) {
        None => Ok(()),
        Some(v) => Err(UserInfoError::InvalidArgument {
            field: "user_id",
            problem: v.description,
        }),
    }
}

fn not_found(e: StoreError) -> UserInfoError {
    match e {
        StoreError::NotFound => UserInfoError::ProfileNotFound,
        other => UserInfoError::Store(other),
    }
}

#[tonic::async_trait]
impl ProfileService for ProfileGrpc {
    async fn upsert_profile(
        &self,
        request: Request<pb::UpsertProfileRequest>,
    ) -> Result<Response<pb::UpsertProfileResponse>, Status> {
        let p = request
            .into_inner()
            .profile
            .ok_or(UserInfoError::InvalidArgument {
                field: "profile",
                problem: "is required",
            })?;
        let profile = Profile {
            user_id: p.user_id,
            real_name: p.real_name,
            phone_number: p.phone_number,
            public: PublicProfile {
                avatar: p.avatar,
                nick_name: p.nick_name,
                gender: p.gender,
                country_code: p.country_code,
                province: p.province,
                city: p.city,
            },
            updated_at: Timestamp::now(),
        };
        let violations = profile.violations();
        if !violations.is_empty() {
            return Err(UserInfoError::InvalidProfileField(violations).into());
        }
        self.store
            .upsert_profile(&profile)
            .await
            .map_err(UserInfoError::from)?;
        self.cache.forget(&profile.user_id);
        Ok(Response::new(pb::UpsertProfileResponse {
            profile: Some(to_proto(profile)),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let req = request.into_inner();
        checked_user_id(&req.user_id)?;
        let profile = self
            .store
            .get_profile(&req.user_id)
            .await
            .map_err(not_found)?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(to_proto(profile)),
        }))
    }

    async fn delete_profile(
        &self,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        let req = request.into_inner();
        checked_user_id(&req.user_id)?;
        self.store
            .delete_profile(&req.user_id)
            .await
            .map_err(not_found)?;
        self.cache.forget(&req.user_id);
        Ok(Response::new(pb::DeleteProfileResponse {}))
    }
}
