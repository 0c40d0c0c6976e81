//! UserInfoService: the reads a mini program makes.

use std::sync::Arc;

use miniprogram_proto::caller_credentials::basic_credential;
use miniprogram_proto::client_address::TrustedProxies;
use miniprogram_proto::userinfo::v1 as pb;
use std::time::Instant;

use miniprogram_token::{MAX_TOKEN_LEN, Timestamp};
use pb::user_info_service_server::UserInfoService;
use tonic::{Request, Response, Status};

use super::authorization_header;
use crate::error::UserInfoError;
use crate::userinfo::UserInfoReader;

/// Serves UserInfoService over the reader.
pub struct UserInfoGrpc {
    pub reader: Arc<UserInfoReader>,
    /// Proxies whose `x-forwarded-for` names a GetPhoneNumber caller.
    pub trusted_proxies: TrustedProxies,
}

fn check_token_len(field: &'static str, token: &str) -> Result<(), UserInfoError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(UserInfoError::InvalidArgument {
            field,
            problem: "is too long to be a token",
        });
    }
    Ok(())
}

fn count_failure(rpc: &'static str, e: &UserInfoError) {
    metrics::counter!("token_verification_failures_total", "rpc" => rpc, "reason" => super::status::reason(e).as_str())
        .increment(1);
}

#[tonic::async_trait]
impl UserInfoService for UserInfoGrpc {
    async fn get_open_user_info(
        &self,
        request: Request<pb::GetOpenUserInfoRequest>,
    ) -> Result<Response<pb::GetOpenUserInfoResponse>, Status> {
        let req = request.into_inner();
        check_token_len("consent_token", &req.consent_token)?;
        let public = self
            .reader
            .open_user_info(&req.consent_token, Timestamp::now(), Instant::now())
            .await
            .inspect_err(|e| count_failure("GetOpenUserInfo", e))?;
        Ok(Response::new(pb::GetOpenUserInfoResponse {
            avatar: public.avatar,
            nick_name: public.nick_name,
            gender: public.gender,
            country_code: public.country_code,
            province: public.province,
            city: public.city,
        }))
    }

    async fn get_phone_number(
        &self,
        request: Request<pb::GetPhoneNumberRequest>,
    ) -> Result<Response<pb::GetPhoneNumberResponse>, Status> {
        let header = authorization_header(request.metadata()).map(str::to_owned);
        let (app_id, _) =
            basic_credential(header.as_deref()).ok_or(UserInfoError::InvalidAuthClient)?;
        // Passed on to auth-service, whose failed-credential limits count per caller.
        let peer = self
            .trusted_proxies
            .client_address(request.remote_addr().map(|a| a.ip()), request.metadata())
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        check_token_len("access_token", &req.access_token)?;
        let phone_number = self
            .reader
            .phone_number(
                header.as_deref(),
                &app_id,
                &req.access_token,
                &peer,
                Timestamp::now(),
                Instant::now(),
            )
            .await
            .inspect_err(|e| count_failure("GetPhoneNumber", e))?;
        Ok(Response::new(pb::GetPhoneNumberResponse { phone_number }))
    }
}
