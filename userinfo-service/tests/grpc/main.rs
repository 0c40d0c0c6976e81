//! userinfo-service over real gRPC: servers on 127.0.0.1:0 with real SQLite files, against a
//! real auth-service, or (where auth-service can't be made to misbehave) a scripted
//! KeyService that is itself a real gRPC server.

mod disclosures;
mod erasure;
mod export;
mod files;
mod keys;
mod limits;
mod phone;
mod read_limits;
mod readiness;
mod revocation_stream;

use std::time::{Duration, Instant};

pub use auth_service::testing::{ALL_FEATURES, TestAuthServer, auth_code, consent_token, reason};
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use tonic::Status;
use userinfo_service::config::UserInfoConfig;
pub use userinfo_service::testing::TestUserInfoServer;

/// A userinfo-service pointed at `auth`, after `adjust` edits its configuration; returns once
/// it reports SERVING.
pub async fn userinfo_for(
    auth: &TestAuthServer,
    adjust: impl FnOnce(&mut UserInfoConfig),
) -> TestUserInfoServer {
    let privacy = auth.config.callers.privacy.clone();
    TestUserInfoServer::start_with(auth.addr, &auth.config.callers.verifier, |c| {
        c.privacy_token = privacy;
        adjust(c);
    })
    .await
}

pub async fn open_user_info(
    userinfo: &TestUserInfoServer,
    consent_token: &str,
) -> Result<upb::GetOpenUserInfoResponse, Status> {
    userinfo
        .userinfo()
        .get_open_user_info(upb::GetOpenUserInfoRequest {
            consent_token: consent_token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub use userinfo_service::testing::demo_profile;

pub async fn upsert_profile(userinfo: &TestUserInfoServer, user_id: &str) {
    userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(demo_profile(user_id)),
        })
        .await
        .expect("upsert profile");
}

/// The user withdraws every scope of `app_id` in the wallet's settings.
pub async fn revoke_all(auth: &TestAuthServer, user: &str, app_id: &str) {
    auth.wallet()
        .revoke_authorization(pb::RevokeAuthorizationRequest {
            user_id: user.into(),
            app_id: app_id.into(),
            scopes: vec![],
        })
        .await
        .expect("revoke");
}

/// Polls `condition` every 10 ms for up to `within`; whether it came true.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
