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
