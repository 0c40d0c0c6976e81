use auth_service::testing::{Credential, TestAuthServer};
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use pb::app_service_client::AppServiceClient;
use pb::key_service_client::KeyServiceClient;
use tonic::Code;

use super::{ALL_FEATURES, app_with, reason};

#[tokio::test]
async fn missing_or_wrong_credentials_are_unauthenticated() {
    let server = TestAuthServer::start().await;
    for credential in [
        Credential::none(),
        Credential::bearer("nope"),
        Credential::basic("a", "b"),
    ] {
        let err = AppServiceClient::with_interceptor(server.channel.clone(), credential)
            .get_app(pb::GetAppRequest { app_id: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::Unauthenticated, ErrorReason::UnauthenticatedCaller)
        );
    }
}

#[tokio::test]
async fn a_valid_credential_of_the_wrong_role_is_permission_denied() {
    let server = TestAuthServer::start().await;
    let wallet = Credential::bearer(&server.config.callers.wallet);
    let err = AppServiceClient::with_interceptor(server.channel.clone(), wallet.clone())
        .get_app(pb::GetAppRequest { app_id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::PermissionDenied, ErrorReason::CallerNotPermitted)
    );
    let err = KeyServiceClient::with_interceptor(server.channel.clone(), wallet)
        .list_token_keys(pb::ListTokenKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn failed_app_secret_attempts_are_rate_limited_even_for_the_right_secret() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 3).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let probe = pb::IntrospectTokenRequest { token: "x".into() };
    for _ in 0..3 {
        let err = server
            .backend(&app_id, "wrong")
            .introspect_token(probe.clone())
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    }
    let err = server
        .backend(&app_id, "wrong")
        .introspect_token(probe.clone())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::ResourceExhausted,
            ErrorReason::RequestTrafficExceedLimit
        )
    );
    let err = server
        .backend(&app_id, &secret)
        .introspect_token(probe)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::RequestTrafficExceedLimit);
}

#[tokio::test]
async fn error_messages_never_echo_the_presented_secret() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let wrong = format!("{secret}x");
    let err = server
        .backend(&app_id, &wrong)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: secret.clone(),
        })
        .await
        .unwrap_err();
    assert!(!err.message().contains(&secret));
}

#[test]
fn outside_dev_mode_missing_credentials_refuse_start_and_are_named() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .env_clear()
        .env("ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    for variable in ["WALLET_TOKEN", "VERIFIER_TOKEN", "MASTER_KEY_FILE"] {
        assert!(
            stderr.contains(variable),
            "{variable} not named in {stderr}"
        );
    }
}
