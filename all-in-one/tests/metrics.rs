//! A caller cannot grow the metrics by inventing method names: calls with random 200-byte
//! method names, under services each server serves (behind an interceptor or not) and under
//! made-up ones, leave `/metrics` the size it was. Its own test binary: the metrics recorder is
//! process-wide, and no other test may add series while this one measures.

use std::hash::BuildHasher;
use std::time::Duration;

use auth_service::testing::TestAuthServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;
use userinfo_service::testing::TestUserInfoServer;

const CALLS: usize = 1500;
const NAME_LEN: usize = 200;

/// `len` random ASCII letters and digits.
fn random_name(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let state = std::collections::hash_map::RandomState::new();
    (0..len)
        .map(|i| char::from(ALPHABET[(state.hash_one(i) % ALPHABET.len() as u64) as usize]))
        .collect()
}

/// Calls `/{service}/{method}` without a credential; the code it is answered with.
async fn invented_call(channel: Channel, service: String, method: String) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::try_from(format!("/{service}/{method}"))
        .expect("letters and digits make a valid path");
    grpc.unary::<_, tonic_health::pb::HealthCheckResponse, _>(
        tonic::Request::new(tonic_health::pb::HealthCheckRequest::default()),
        path,
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map_or_else(|e| e.code(), |_| Code::Ok)
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

/// Guards `RpcObserver`'s labels, which come only from `ServedMethods` (the descriptor sets):
/// with the raw path as a label, every call here adds a counter and a histogram series and
/// the output grows by megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_method_names_leave_the_metrics_size_unchanged() {
    let handle = service_runtime::install_metrics_recorder().expect("a metrics recorder");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap();
    tokio::spawn(service_runtime::serve_metrics(
        listener,
        handle,
        std::future::pending(),
    ));
    let auth = TestAuthServer::start().await;
    let userinfo = TestUserInfoServer::start(auth.addr, &auth.config.callers.verifier).await;
    let served = |server: &Channel, service: &str| (server.clone(), Some(service.to_owned()));
    let targets = [
        served(&auth.channel, "miniprogram.auth.v1.AppService"),
        served(&auth.channel, "miniprogram.auth.v1.TokenService"),
        served(&auth.channel, "miniprogram.auth.v1.KeyService"),
        served(&auth.channel, "grpc.health.v1.Health"),
        (auth.channel.clone(), None),
        served(&userinfo.channel, "miniprogram.userinfo.v1.UserInfoService"),
        served(&userinfo.channel, "miniprogram.userinfo.v1.ProfileService"),
        served(&userinfo.channel, "grpc.reflection.v1.ServerReflection"),
        (userinfo.channel.clone(), None),
    ];
    let call = |i: usize| {
        let (channel, service) = targets[i % targets.len()].clone();
        let service = service.unwrap_or_else(|| random_name(NAME_LEN));
        invented_call(channel, service, random_name(NAME_LEN))
    };

    // Once per target first, so every series these calls can touch exists before measuring.
    let mut codes = std::collections::HashSet::new();
    for i in 0..targets.len() {
        codes.insert(call(i).await);
    }
    assert_eq!(
        codes,
        [Code::Unauthenticated, Code::Unimplemented].into(),
        "interceptors answer UNAUTHENTICATED, the rest UNIMPLEMENTED"
    );
    let before = scrape(metrics).await;

    let run = async {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..CALLS {
            calls.spawn(call(i));
            if calls.len() >= 32 {
                calls.join_next().await;
            }
        }
        while calls.join_next().await.is_some() {}
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the calls finished within 120 s");
    // The histograms' summaries are refreshed on scrape; give the counters a moment to land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = scrape(metrics).await;

    assert!(
        after.len().abs_diff(before.len()) < 4096,
        "/metrics went from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.contains("method=\"unknown\",code=\"Unauthenticated\""));
    assert!(after.contains("method=\"unknown\",code=\"Unimplemented\""));
}
