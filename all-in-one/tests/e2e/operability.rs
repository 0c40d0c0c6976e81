use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use super::{ALL_FEATURES, Platform, auth_code, consent_token, demo_profile, reason};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

#[tokio::test]
async fn the_request_id_is_taken_from_metadata_or_generated_and_returned() {
    let p = Platform::start().await;
    let mut request = tonic::Request::new(pb::GetAppRequest {
        app_id: "mp-none".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-123".parse().unwrap());
    let err = p.auth.admin().get_app(request).await.unwrap_err();
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "trace-me-123");
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    let response = p
        .auth
        .admin()
        .get_app(pb::GetAppRequest { app_id })
        .await
        .unwrap();
    let generated = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_in_flight_limit_requests_are_shed_with_resource_exhausted() {
    // auth-service alone: a verifier's calls would compete for the single slot during set-up.
    let auth =
        auth_service::testing::TestAuthServer::start_with(|a| a.limits.max_in_flight = 1).await;
    let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut wallet = auth.wallet();
        let app_id = app_id.clone();
        tasks.spawn(async move {
            wallet
                .request_authorization(pb::RequestAuthorizationRequest {
                    user_id: format!("user-{i}"),
                    app_id,
                    scopes: vec![UserInfo as i32],
                    trigger: pb::Trigger::UserTap as i32,
                })
                .await
        });
    }
    let (mut ok, mut shed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(
                    (e.code(), reason(&e)),
                    (
                        Code::ResourceExhausted,
                        ErrorReason::RequestTrafficExceedLimit
                    )
                );
                shed += 1;
            }
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn metrics_count_rpcs_consent_outcomes_tokens_failures_and_stream_lag() {
    let metrics = service_runtime::spawn_metrics_endpoint("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let p = Platform::start().await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&token).await.unwrap();
    let _ = p.open_user_info("garbage").await;
    let code = auth_code(&p.consent("u1", &app_id, &[AuthBase, PhoneNumber]).await);
    p.auth
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let body = scrape(metrics).await;
    for expected in [
        "HTTP/1.1 200",
        "grpc_server_handled_total{service=\"miniprogram.auth.v1.AuthorizationService\",method=\"RequestAuthorization\",code=\"Ok\"}",
        "grpc_server_handling_seconds_bucket{service=\"miniprogram.userinfo.v1.UserInfoService\",method=\"GetOpenUserInfo\"",
        "consent_outcomes_total{outcome=\"prompted\"}",
        "consent_outcomes_total{outcome=\"granted\"}",
        "tokens_issued_total{kind=\"access\",rpc=\"ExchangeAuthCode\"}",
        "token_verification_failures_total{rpc=\"GetOpenUserInfo\",reason=\"INVALID_ACCESS_TOKEN\"}",
        "revocation_stream_lag_seconds",
    ] {
        assert!(body.contains(expected), "missing {expected} in\n{body}");
    }
}
