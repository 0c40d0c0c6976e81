//! One caller's half-sent calls (HEADERS, never a body) starve no one: not health, not the
//! console on a fresh connection from the same address.

use std::time::Duration;

use auth_service::testing::{Credential, TestAuthServer};
use miniprogram_proto::auth::v1 as pb;
use service_runtime::testing::HalfSentCalls;

use super::ALL_FEATURES;

const EXCHANGE_AUTH_CODE: &str = "/miniprogram.auth.v1.TokenService/ExchangeAuthCode";

/// 17 connections x 256 half-sent calls (more than MAX_IN_FLIGHT) are held open; a fresh
/// connection still gets SERVING and creates an app within a second. Guards the order in
/// service-runtime's `Admission::run`: the in-flight permit is taken once the request body is
/// whole, not at HEADERS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_calls_do_not_starve_health_or_the_console() {
    let server =
        TestAuthServer::start_with(|c| c.limits.read_timeout = Duration::from_secs(300)).await;
    let mut held = tokio::time::timeout(
        Duration::from_secs(120),
        HalfSentCalls::open(server.addr, EXCHANGE_AUTH_CODE, 17, 256),
    )
    .await
    .expect("the half-sent calls were opened within 120 s");

    let channel = service_runtime::client_channel(server.addr, None);
    let mut admin = pb::app_service_client::AppServiceClient::with_interceptor(
        channel.clone(),
        Credential::bearer(&server.config.callers.admin),
    );
    let (serving, created) = tokio::time::timeout(Duration::from_secs(1), async {
        let serving = service_runtime::is_serving(channel, "").await;
        let created = admin
            .create_app(pb::CreateAppRequest {
                display_name: "Fresh".into(),
                features: ALL_FEATURES.iter().map(|f| *f as i32).collect(),
            })
            .await;
        (serving, created)
    })
    .await
    .expect("health and CreateApp answered within a second");
    assert_eq!(serving.map_err(|s| s.code()), Ok(true));
    assert!(created.expect("CreateApp").into_inner().app.is_some());
    assert_eq!(held.answered(), 0, "every half-sent call is still held");
}
