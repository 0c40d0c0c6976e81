//! auth-service over real gRPC: a server on 127.0.0.1:0 with a real SQLite file per test.

mod apps;
mod authorization;
mod bad_input;
mod credentials;
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
