//! auth-service over real gRPC: a server on 127.0.0.1:0 with a real SQLite file per test.

mod apps;
mod authorization;
mod credentials;
mod keys;
mod tokens;

use auth_service::testing::TestAuthServer;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use tonic::Status;

/// The reason a failed call carries.
pub fn reason(status: &Status) -> ErrorReason {
    ErrorReason::of(status).unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"))
}

/// A registered app with the given features, and its secret.
pub async fn app_with(server: &TestAuthServer, features: &[pb::Feature]) -> (String, String) {
    let created = server
        .admin()
        .create_app(pb::CreateAppRequest {
            display_name: "Test Mini Program".into(),
            features: features.iter().map(|f| *f as i32).collect(),
        })
        .await
        .expect("create app")
        .into_inner();
    (created.app.expect("app").app_id, created.app_secret)
}

pub const ALL_FEATURES: [pb::Feature; 3] = [
    pb::Feature::BasicUserInfo,
    pb::Feature::PhoneNumber,
    pb::Feature::UserAuthorization,
];

pub async fn request(
    server: &TestAuthServer,
    user: &str,
    app_id: &str,
    scopes: &[pb::Scope],
    trigger: pb::Trigger,
) -> Result<pb::request_authorization_response::Result, Status> {
    server
        .wallet()
        .request_authorization(pb::RequestAuthorizationRequest {
            user_id: user.into(),
            app_id: app_id.into(),
            scopes: scopes.iter().map(|s| *s as i32).collect(),
            trigger: trigger as i32,
        })
        .await
        .map(|r| r.into_inner().result.expect("result"))
}

pub async fn resolve(
    server: &TestAuthServer,
    prompt_id: &str,
    user: &str,
    decision: pb::Decision,
) -> Result<pb::resolve_prompt_response::Result, Status> {
    server
        .wallet()
        .resolve_prompt(pb::ResolvePromptRequest {
            prompt_id: prompt_id.into(),
            user_id: user.into(),
            decision: decision as i32,
        })
        .await
        .map(|r| r.into_inner().result.expect("result"))
}

/// Tap, prompt, allow: the grant for `scopes`.
pub async fn consent(
    server: &TestAuthServer,
    user: &str,
    app_id: &str,
    scopes: &[pb::Scope],
) -> pb::Grant {
    match request(server, user, app_id, scopes, pb::Trigger::UserTap)
        .await
        .expect("request")
    {
        pb::request_authorization_response::Result::Grant(g) => g,
        pb::request_authorization_response::Result::Prompt(p) => {
            match resolve(server, &p.prompt_id, user, pb::Decision::Allow)
                .await
                .expect("resolve")
            {
                pb::resolve_prompt_response::Result::Grant(g) => g,
                other => panic!("expected grant, got {other:?}"),
            }
        }
    }
}

pub fn auth_code(grant: &pb::Grant) -> String {
    match &grant.credential {
        Some(pb::grant::Credential::AuthCode(c)) => c.clone(),
        other => panic!("expected auth code, got {other:?}"),
    }
}

pub fn consent_token(grant: &pb::Grant) -> String {
    match &grant.credential {
        Some(pb::grant::Credential::ConsentToken(t)) => t.clone(),
        other => panic!("expected consent token, got {other:?}"),
    }
}
