//! Arbitrary input never panics the server or comes back INTERNAL / UNKNOWN: every refusal is
//! a reason from the design's table.

use auth_service::testing::TestAuthServer;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Status;

use super::{ALL_FEATURES, app_with};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        ".{0,64}",
        "[\\x00-\\x1f]{1,8}",
        (1usize..4).prop_map(|k| "x".repeat(k * 100_000)),
        "[A-Za-z0-9_-]{43}",
        "v4\\.local\\.[A-Za-z0-9_-]{0,200}(\\.[A-Za-z0-9_-]{0,40})?",
    ]
}

fn check(result: Result<(), Status>) -> Result<(), TestCaseError> {
    if let Err(status) = result {
        let reason = ErrorReason::of(&status);
        prop_assert!(reason.is_some(), "no ErrorInfo on {status:?}");
        prop_assert!(
            !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
            "{status:?}"
        );
        prop_assert_ne!(reason, Some(ErrorReason::Internal));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_get_a_reason_never_internal() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 1_000_000).await;
    arbitrary_requests_get_a_reason(&server).await;
}

/// The same on PostgreSQL, whose text refuses what SQLite stores (a NUL byte) with an error:
/// guards `check_id` in `AppAuthenticator::authenticate` (an app id with control characters
/// in a Basic credential is refused unread, as no app) and the control-character check on a
/// new app's display name; without them both came back INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_arbitrary_requests_get_a_reason_never_internal() {
    let url = sql_backend::testing::fresh_schema_url("bad_input").await;
    let server = TestAuthServer::start_with(|c| {
        c.database_url = url;
        c.failed_credential_budget = 1_000_000;
    })
    .await;
    arbitrary_requests_get_a_reason(&server).await;
}

/// 64 cases of arbitrary text in every field of the wallet's, backends' and console's calls.
async fn arbitrary_requests_get_a_reason(server: &TestAuthServer) {
    let (app_id, secret) = app_with(server, &ALL_FEATURES).await;
    let handle = tokio::runtime::Handle::current();
    let strategy = (
        text(),
        prop_oneof![Just(app_id.clone()), text()],
        proptest::collection::vec(-3i32..6, 0..6),
        -1i32..4,
        text(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |(user, app, scopes, enum_value, token)| {
                handle.block_on(async {
                    let mut wallet = server.wallet();
                    let mut backend = server.backend(&app_id, &secret);
                    check(
                        wallet
                            .request_authorization(pb::RequestAuthorizationRequest {
                                user_id: user.clone(),
                                app_id: app.clone(),
                                scopes: scopes.clone(),
                                trigger: enum_value,
                            })
                            .await
                            .map(drop),
                    )?;
                    check(
                        wallet
                            .resolve_prompt(pb::ResolvePromptRequest {
                                prompt_id: token.clone(),
                                user_id: user.clone(),
                                decision: enum_value,
                            })
                            .await
                            .map(drop),
                    )?;
                    check(
                        wallet
                            .revoke_authorization(pb::RevokeAuthorizationRequest {
                                user_id: user.clone(),
                                app_id: app.clone(),
                                scopes,
                            })
                            .await
                            .map(drop),
                    )?;
                    check(
                        backend
                            .exchange_auth_code(pb::ExchangeAuthCodeRequest {
                                auth_code: token.clone(),
                            })
                            .await
                            .map(drop),
                    )?;
                    check(
                        backend
                            .refresh_access_token(pb::RefreshAccessTokenRequest {
                                refresh_token: token.clone(),
                            })
                            .await
                            .map(drop),
                    )?;
                    check(
                        backend
                            .introspect_token(pb::IntrospectTokenRequest {
                                token: token.clone(),
                            })
                            .await
                            .map(drop),
                    )?;
                    check(
                        backend
                            .revoke_token(pb::RevokeTokenRequest {
                                token: token.clone(),
                            })
                            .await
                            .map(drop),
                    )?;
                    // Metadata beyond HTTP/2's header-list limit is refused by the transport before
                    // any handler runs; arbitrary credentials below it get a reason.
                    if user.len() + token.len() < 8 * 1024 {
                        check(
                            server
                                .backend(&user, &token)
                                .introspect_token(pb::IntrospectTokenRequest { token })
                                .await
                                .map(drop),
                        )?;
                    }
                    check(
                        server
                            .admin()
                            .get_app(pb::GetAppRequest { app_id: app })
                            .await
                            .map(drop),
                    )?;
                    let display_name = user;
                    let features = Vec::new();
                    let app = pb::CreateAppRequest {
                        display_name,
                        features,
                    };
                    check(server.admin().create_app(app).await.map(drop))?;
                    Ok(())
                })
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
