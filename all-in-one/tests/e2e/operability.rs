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
    let mut backend = p.auth.backend(&app_id, &secret);
    backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code.clone(),
        })
        .await
        .unwrap();
    backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap_err();
    let pb::request_authorization_response::Result::Prompt(prompt) = p
        .request("u2", &app_id, &[UserInfo], pb::Trigger::UserTap)
        .await
        .unwrap()
    else {
        panic!("a new user is prompted");
    };
    p.resolve(&prompt.prompt_id, "u2", pb::Decision::Deny)
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
        "consent_outcomes_total{outcome=\"denied\"}",
        "tokens_issued_total{kind=\"access\",rpc=\"ExchangeAuthCode\"}",
        "tokens_issued_total{kind=\"consent\",rpc=\"ResolvePrompt\"}",
        "tokens_issued_total{kind=\"auth_code\",rpc=\"ResolvePrompt\"}",
        "token_failures_total{rpc=\"ExchangeAuthCode\",reason=\"USED_CODE\"}",
        "token_verification_failures_total{rpc=\"GetOpenUserInfo\",reason=\"INVALID_ACCESS_TOKEN\"}",
        "revocation_stream_lag_seconds",
    ] {
        assert!(body.contains(expected), "missing {expected} in\n{body}");
    }
}

/// Asks one server, over reflection protocol `$v`, for its service list and for the file that
/// defines each listed service; yields (listed names, services the returned files define).
macro_rules! reflect_with {
    ($v:ident, $channel:expr) => {{
        use tonic_reflection::pb::$v::ServerReflectionRequest;
        use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
        let client = ServerReflectionClient::new($channel);
        let answer = |m: MessageRequest| {
            let mut client = client.clone();
            async move {
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(m),
                };
                let mut stream = client
                    .server_reflection_info(tokio_stream::once(request))
                    .await
                    .unwrap()
                    .into_inner();
                tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
                    .await
                    .expect("a reflection answer within 10 s")
                    .unwrap()
                    .unwrap()
                    .message_response
            }
        };
        let Some(MessageResponse::ListServicesResponse(list)) =
            answer(MessageRequest::ListServices(String::new())).await
        else {
            panic!("{} did not list services", stringify!($v));
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        let mut described = Vec::new();
        for name in &names {
            let Some(MessageResponse::FileDescriptorResponse(files)) =
                answer(MessageRequest::FileContainingSymbol(name.clone())).await
            else {
                panic!("{} cannot describe {name}", stringify!($v));
            };
            described.extend(defined_services(&files.file_descriptor_proto));
        }
        (names, described)
    }};
}

fn defined_services(files: &[Vec<u8>]) -> Vec<String> {
    use prost::Message;
    files
        .iter()
        .flat_map(|bytes| {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            let package = file.package().to_owned();
            file.service
                .into_iter()
                .map(move |s| format!("{package}.{}", s.name()))
        })
        .collect()
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_and_describe_every_service_with_health() {
    let p = Platform::start().await;
    let expected_auth = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "miniprogram.auth.v1.AppService",
        "miniprogram.auth.v1.AuthorizationChangeService",
        "miniprogram.auth.v1.AuthorizationService",
        "miniprogram.auth.v1.KeyAdminService",
        "miniprogram.auth.v1.KeyService",
        "miniprogram.auth.v1.TokenService",
    ];
    let expected_userinfo = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "miniprogram.userinfo.v1.ProfileService",
        "miniprogram.userinfo.v1.UserInfoService",
    ];
    for (channel, expected) in [
        (p.auth.channel.clone(), &expected_auth[..]),
        (p.userinfo.channel.clone(), &expected_userinfo[..]),
    ] {
        // v1alpha is what grpcurl 1.8.6 and grpcio-reflection speak; v1 is the current one.
        let answers = [
            ("v1", reflect_with!(v1, channel.clone())),
            ("v1alpha", reflect_with!(v1alpha, channel)),
        ];
        for (version, (mut listed, described)) in answers {
            listed.sort();
            assert_eq!(
                listed, expected,
                "{version} lists exactly the mounted services"
            );
            for name in expected {
                assert!(
                    described.iter().any(|d| d == name),
                    "{version} cannot describe {name}: {described:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn errors_the_framework_answers_on_its_own_still_carry_a_reason() {
    let p = Platform::start().await;
    // An oversized request: larger than MAX_MESSAGE_BYTES (64 KiB by default).
    let err = p
        .auth
        .admin()
        .get_app(pb::GetAppRequest {
            app_id: "x".repeat(5 * 1024 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::ResourceExhausted, ErrorReason::MessageTooLarge)
    );
    assert!(err.metadata().get("x-request-id").is_some());

    // A method no server has.
    let mut grpc = tonic::client::Grpc::new(p.userinfo.channel.clone());
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<pb::GetAppRequest, pb::App, _>(
            tonic::Request::new(pb::GetAppRequest::default()),
            http::uri::PathAndQuery::from_static("/miniprogram.userinfo.v1.UserInfoService/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::Unimplemented, ErrorReason::UnknownMethod)
    );

    // Bytes that are not the method's request message: field 1 claims 127 bytes, none follow.
    let mut grpc = tonic::client::Grpc::new(p.userinfo.channel.clone());
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            tonic::Request::new(vec![0x0a, 0x7f]),
            http::uri::PathAndQuery::from_static(
                "/miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo",
            ),
            super::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, ErrorReason::InvalidArgument)
    );
}

#[tokio::test]
async fn draining_tells_health_watchers_not_serving_and_does_not_wait_for_them() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let drain_deadline = std::time::Duration::from_secs(120);
    let auth =
        auth_service::testing::TestAuthServer::start_with(|c| c.drain_timeout = drain_deadline)
            .await;
    let mut watch = HealthClient::new(auth.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = within_10s("the first status", watch.message()).await;
    assert_eq!(
        first.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let stopping = tokio::spawn(auth.stop());
    let next = within_10s("NOT_SERVING", watch.message()).await;
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    assert!(
        matches!(
            within_10s("the end", watch.message()).await,
            Ok(None) | Err(_)
        ),
        "the watch ends while draining"
    );
    // Stopping must not sit out the whole drain deadline for an open Watch.
    let stopped = tokio::time::timeout(drain_deadline / 4, stopping)
        .await
        .expect("the server waited for the health watcher until the drain deadline")
        .unwrap();
    assert!(stopped.is_ok());
}

/// What `message` yields, within 10 s.
async fn within_10s<T>(what: &str, message: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), message)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 10 s"))
}
