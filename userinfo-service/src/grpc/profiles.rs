//! ProfileService: the wallet's user records, validated on write, and their disclosure ledger.

use miniprogram_proto::userinfo::v1 as pb;
use miniprogram_token::Timestamp;
use pb::profile_service_server::ProfileService;
use tonic::{Request, Response, Status};

use crate::error::UserInfoError;
use crate::model::{DisclosedFields, Disclosure, Profile, PublicProfile};
use crate::profiles::ProfileRegistry;
use crate::user_data::UserData;

/// Serves ProfileService over the registry, and a user's data across both services.
pub struct ProfileGrpc {
    pub profiles: ProfileRegistry,
    pub user_data: UserData,
}

fn disclosure_to_proto(d: Disclosure) -> pb::Disclosure {
    let data = match d.fields {
        DisclosedFields::PublicProfile => pb::DisclosedData::PublicProfile,
        DisclosedFields::PhoneNumber => pb::DisclosedData::PhoneNumber,
    };
    pb::Disclosure {
        app_id: d.app_id,
        data: data as i32,
        day: d.day.date(),
        count: d.count,
    }
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
        let profile = self.profiles.upsert(profile).await?;
        Ok(Response::new(pb::UpsertProfileResponse {
            profile: Some(to_proto(profile)),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let profile = self.profiles.get(&request.into_inner().user_id).await?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(to_proto(profile)),
        }))
    }

    async fn delete_profile(
        &self,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        let erasure = self.user_data.erase(&request.into_inner().user_id).await?;
        tracing::info!(
            authorizations_pending = erasure.authorizations_pending,
            "user erased"
        );
        if !erasure.profile_existed {
            return Err(UserInfoError::ProfileNotFound.into());
        }
        Ok(Response::new(pb::DeleteProfileResponse {
            authorizations_erasure_pending: erasure.authorizations_pending,
        }))
    }

    async fn export_user_data(
        &self,
        request: Request<pb::ExportUserDataRequest>,
    ) -> Result<Response<pb::ExportUserDataResponse>, Status> {
        let document = self.user_data.export(&request.into_inner().user_id).await?;
        Ok(Response::new(pb::ExportUserDataResponse { document }))
    }

    async fn list_disclosures(
        &self,
        request: Request<pb::ListDisclosuresRequest>,
    ) -> Result<Response<pb::ListDisclosuresResponse>, Status> {
        let req = request.into_inner();
        let page_size =
            u32::try_from(req.page_size).map_err(|_| UserInfoError::InvalidArgument {
                field: "page_size",
                problem: "must not be negative",
            })?;
        let (rows, next_page_token) = self
            .profiles
            .disclosures(&req.user_id, &req.app_id, page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListDisclosuresResponse {
            disclosures: rows.into_iter().map(disclosure_to_proto).collect(),
            next_page_token,
        }))
    }
}
