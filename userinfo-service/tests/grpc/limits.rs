//! One caller's half-sent calls (HEADERS, never a body) starve no one: not health, not
//! GetOpenUserInfo on a fresh connection from the same address.

use std::time::Duration;

use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use service_runtime::testing::HalfSentCalls;

use super::{ALL_FEATURES, TestAuthServer, consent_token, upsert_profile, userinfo_for};

const GET_OPEN_USER_INFO: &str = "/miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo";

/// 17 connections x 256 half-sent calls (more than MAX_IN_FLIGHT) are held open; a fresh
/// connection still gets SERVING and a valid GetOpenUserInfo within a second. Guards the order
/// in service-runtime's `Admission::run`: the in-flight permit is taken once the request body
/// is whole, not at HEADERS (taken at HEADERS, the held calls hold every permit and the fresh
/// call is RESOURCE_EXHAUSTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_calls_do_not_starve_health_or_user_info() {
    let auth = TestAuthServer::start().await;
    // The held calls must outlive the test's own set-up, however slow the machine.
    let userinfo = userinfo_for(&auth, |c| c.limits.read_timeout = Duration::from_secs(300)).await;
    upsert_profile(&userinfo, "u1").await;
    let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
    let token = consent_token(&auth.consent("u1", &app_id, &[pb::Scope::UserInfo]).await);

    let mut held = tokio::time::timeout(
        Duration::from_secs(120),
        HalfSentCalls::open(userinfo.addr, GET_OPEN_USER_INFO, 17, 256),
    )
    .await
    .expect("the half-sent calls were opened within 120 s");

    let channel = service_runtime::client_channel(userinfo.addr, None);
    let (serving, info) = tokio::time::timeout(Duration::from_secs(1), async {
        let serving = service_runtime::is_serving(channel.clone(), "").await;
        let info = upb::user_info_service_client::UserInfoServiceClient::new(channel)
            .get_open_user_info(upb::GetOpenUserInfoRequest {
                consent_token: token,
            })
            .await;
        (serving, info)
    })
    .await
    .expect("health and GetOpenUserInfo answered within a second");
    assert_eq!(serving.map_err(|s| s.code()), Ok(true));
    let info = info.expect("GetOpenUserInfo").into_inner();
    assert_eq!(info.nick_name, "Wei");
    assert_eq!(held.answered(), 0, "every half-sent call is still held");
}
