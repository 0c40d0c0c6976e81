//! auth-service over real gRPC: a server on 127.0.0.1:0 with a real SQLite file per test.

mod apps;
mod authorization;
mod bad_input;
mod credentials;
mod files;
mod keys;
mod limits;
mod tokens;

use auth_service::testing::TestAuthServer;
pub use auth_service::testing::{ALL_FEATURES, auth_code, consent_token, reason};
use miniprogram_proto::auth::v1 as pb;
use tonic::Status;

pub async fn app_with(server: &TestAuthServer, features: &[pb::Feature]) -> (String, String) {
    server.create_app(features).await
}

pub async fn request(
    server: &TestAuthServer,
    user: &str,
    app_id: &str,
    scopes: &[pb::Scope],
    trigger: pb::Trigger,
) -> Result<pb::request_authorization_response::Result, Status> {
    server.request(user, app_id, scopes, trigger).await
}

pub async fn resolve(
    server: &TestAuthServer,
    prompt_id: &str,
    user: &str,
    decision: pb::Decision,
) -> Result<pb::resolve_prompt_response::Result, Status> {
    server.resolve(prompt_id, user, decision).await
}

pub async fn consent(
    server: &TestAuthServer,
    user: &str,
    app_id: &str,
    scopes: &[pb::Scope],
) -> pb::Grant {
    server.consent(user, app_id, scopes).await
}

/// The revocation log as a verifier receives it: every event up to the first heartbeat (sent
/// once the stream has caught up with the log).
pub async fn revocation_log(server: &TestAuthServer) -> Vec<pb::RevocationEvent> {
    let mut stream = server
        .verifier()
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .expect("watch revocations")
        .into_inner();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("no heartbeat within 5 s")
            .expect("stream broke")
            .expect("stream ended");
        match message.event {
            Some(event) => events.push(event),
            None if message.heartbeat => return events,
            None => {}
        }
    }
}

/// 64 tasks run `call` over and over for 2 s while `sampled`, a PostgreSQL query of one
/// BIGINT (waiting locks, in the PostgreSQL tests), is read from `TEST_DATABASE_URL` every
/// 5 ms: the largest value it read.
pub async fn largest_while_calling<F, Fut>(call: F, sampled: &'static str) -> i64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect");
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let call = call.clone();
        callers.spawn(async move {
            while tokio::time::Instant::now() < until {
                call().await;
            }
        });
    }
    let mut largest = 0_i64;
    while tokio::time::Instant::now() < until {
        let n: i64 = sqlx::query_scalar(sampled)
            .fetch_one(&admin)
            .await
            .expect("sample");
        largest = largest.max(n);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    while let Some(caller) = callers.join_next().await {
        caller.expect("a caller");
    }
    admin.close().await;
    largest
}
