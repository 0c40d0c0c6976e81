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

/// Guards READ_TIMEOUT over real HTTP/2: calls whose body never comes are answered (and let
/// go) once it has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_calls_are_answered_after_the_read_timeout() {
    let server =
        TestAuthServer::start_with(|c| c.limits.read_timeout = Duration::from_millis(200)).await;
    let mut held = HalfSentCalls::open(server.addr, EXCHANGE_AUTH_CODE, 2, 16).await;
    assert!(
        held.all_answered_within(Duration::from_secs(10)).await,
        "{} of 32 answered",
        held.answered()
    );
}

/// Guards the first-byte deadline of service-runtime's `AdmittedConnection` on a real server:
/// a TCP connection that never sends its HTTP/2 preface is closed once READ_TIMEOUT has
/// passed (its place in MAX_CONNECTIONS with it), while a gRPC client's connection, which
/// spoke at once, keeps working after idling past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_its_preface_is_closed_after_the_read_timeout() {
    use tokio::io::AsyncReadExt;
    let server =
        TestAuthServer::start_with(|c| c.limits.read_timeout = Duration::from_millis(300)).await;
    let channel = service_runtime::client_channel(server.addr, None);
    assert_eq!(
        service_runtime::is_serving(channel.clone(), "").await.ok(),
        Some(true)
    );
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // The server may send its SETTINGS first; it then closes the connection.
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent connection was still open after 5 s"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        service_runtime::is_serving(channel, "").await.ok(),
        Some(true),
        "an idle client connection that spoke in time is kept"
    );
}

/// Guards the control-stream pool and lifetime over real gRPC: with one slot, a second health
/// Watch is refused while the first is open; the first ends with UNAVAILABLE
/// (`SERVICE_UNAVAILABLE`) after CONTROL_STREAM_LIFETIME, and then a new one is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_streams_are_capped_and_end_after_their_lifetime() {
    use miniprogram_proto::ErrorReason;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = TestAuthServer::start_with(|c| {
        c.limits.max_control_streams = 1;
        c.limits.control_stream_lifetime = Duration::from_millis(500);
    })
    .await;
    let mut health = HealthClient::new(server.channel.clone());
    let watch = || HealthCheckRequest {
        service: String::new(),
    };
    let mut first = health.watch(watch()).await.expect("a watch").into_inner();
    let status = tokio::time::timeout(Duration::from_secs(10), first.message()).await;
    assert!(
        status
            .expect("a status within 10 s")
            .expect("a status")
            .is_some()
    );
    let refused = health.watch(watch()).await.expect_err("no second slot");
    assert_eq!(
        (refused.code(), ErrorReason::of(&refused)),
        (
            tonic::Code::ResourceExhausted,
            Some(ErrorReason::RequestTrafficExceedLimit)
        )
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended within 10 s")
    .expect_err("it ends with a status");
    assert_eq!(
        (ended.code(), ErrorReason::of(&ended)),
        (
            tonic::Code::Unavailable,
            Some(ErrorReason::ServiceUnavailable)
        )
    );
    drop(first);
    let mut again = admitted_within_5s(|| {
        let mut health = health.clone();
        async move { health.watch(watch()).await }
    })
    .await;
    let status = tokio::time::timeout(Duration::from_secs(10), again.message()).await;
    assert!(
        status
            .expect("a status within 10 s")
            .expect("a status")
            .is_some()
    );
}

/// Guards the business-stream pool over real gRPC (service-runtime's `Admission::run`, the
/// `CallKind::BusinessStream` arm): with one slot, a second `WatchRevocations` is refused while
/// the first is open, the first runs on past the control streams' lifetime, and once the
/// verifier drops it a new one is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_streams_are_capped_and_held_until_they_end() {
    use miniprogram_proto::ErrorReason;
    let server = TestAuthServer::start_with(|c| {
        c.limits.max_business_streams = 1;
        c.limits.control_stream_lifetime = Duration::from_millis(100);
    })
    .await;
    let mut verifier = server.verifier();
    let watch = pb::WatchRevocationsRequest::default;
    let mut first = verifier
        .watch_revocations(watch())
        .await
        .expect("a stream")
        .into_inner();
    let refused = verifier
        .watch_revocations(watch())
        .await
        .expect_err("no second slot");
    assert_eq!(
        (refused.code(), ErrorReason::of(&refused)),
        (
            tonic::Code::ResourceExhausted,
            Some(ErrorReason::RequestTrafficExceedLimit)
        )
    );
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut heartbeats = 0;
    while let Ok(next) = tokio::time::timeout_at(until, first.message()).await {
        assert!(
            matches!(next, Ok(Some(_))),
            "the stream runs on past CONTROL_STREAM_LIFETIME: {next:?}"
        );
        heartbeats += 1;
    }
    assert!(
        heartbeats >= 2,
        "a heartbeat a second: {heartbeats} in 1.5 s"
    );
    drop(first);
    let mut again = admitted_within_5s(|| {
        let mut verifier = verifier.clone();
        async move { verifier.watch_revocations(watch()).await }
    })
    .await;
    let message = tokio::time::timeout(Duration::from_secs(10), again.message()).await;
    assert!(matches!(message, Ok(Ok(Some(_)))), "the new stream speaks");
}

/// Opens a stream with `open` until the server admits it, for 5 s at most: a slot comes back
/// once the server has seen the old stream end.
async fn admitted_within_5s<T, F, Fut>(mut open: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let admitted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(stream) = open().await {
                return stream.into_inner();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    admitted.await.expect("the slot came back within 5 s")
}
