//! The whole flow end to end: auth-service and userinfo-service each on 127.0.0.1:0 with real
//! SQLite files, talking over real gRPC, driven through the generated clients.

mod flows;
mod key_hierarchy;
mod link_proxy;
mod operability;
mod postgres;
mod privacy;
mod privacy_records;
mod profiles;
mod tls;
mod verification;

use auth_service::testing::TestAuthServer;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use tonic::Status;
use userinfo_service::testing::TestUserInfoServer;

/// Both services, wired together.
pub struct Platform {
    pub auth: TestAuthServer,
    pub userinfo: TestUserInfoServer,
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |_| {}).await
    }

    /// Starts both, after the closures adjust each configuration.
    pub async fn start_with(
        auth: impl FnOnce(&mut auth_service::config::AuthConfig),
        userinfo: impl FnOnce(&mut userinfo_service::config::UserInfoConfig),
    ) -> Self {
        let auth = TestAuthServer::start_with(auth).await;
        let privacy = auth.config.callers.privacy.clone();
        let userinfo =
            TestUserInfoServer::start_with(auth.addr, &auth.config.callers.verifier, |c| {
                c.privacy_token = privacy;
                userinfo(c);
            })
            .await;
        Platform { auth, userinfo }
    }

    /// A mini program with `features`, and its secret.
    pub async fn app(&self, features: &[pb::Feature]) -> (String, String) {
        self.auth.create_app(features).await
    }

    pub async fn profile(&self, profile: upb::Profile) {
        self.userinfo
            .profiles()
            .upsert_profile(upb::UpsertProfileRequest {
                profile: Some(profile),
            })
            .await
            .expect("upsert profile");
    }

    pub async fn request(
        &self,
        user: &str,
        app_id: &str,
        scopes: &[pb::Scope],
        trigger: pb::Trigger,
    ) -> Result<pb::request_authorization_response::Result, Status> {
        self.auth.request(user, app_id, scopes, trigger).await
    }

    pub async fn resolve(
        &self,
        prompt_id: &str,
        user: &str,
        decision: pb::Decision,
    ) -> Result<pb::resolve_prompt_response::Result, Status> {
        self.auth.resolve(prompt_id, user, decision).await
    }

    /// Tap, prompt, allow.
    pub async fn consent(&self, user: &str, app_id: &str, scopes: &[pb::Scope]) -> pb::Grant {
        self.auth.consent(user, app_id, scopes).await
    }

    pub async fn open_user_info(
        &self,
        consent_token: &str,
    ) -> Result<upb::GetOpenUserInfoResponse, Status> {
        self.userinfo
            .userinfo()
            .get_open_user_info(upb::GetOpenUserInfoRequest {
                consent_token: consent_token.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

pub use auth_service::testing::{ALL_FEATURES, auth_code, consent_token, reason};
pub use userinfo_service::testing::demo_profile;

/// Passes message bytes through untouched, to see the response exactly as it was sent
/// (a generated client would drop fields it doesn't know).
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}
