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
async fn a_caller_over_its_failure_budget_is_refused_even_with_the_right_secret() {
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

fn introspect_as(
    app_id: &str,
    secret: &str,
    forwarded: Option<(&str, &str)>,
) -> tonic::Request<pb::IntrospectTokenRequest> {
    use base64::Engine;
    let mut request = tonic::Request::new(pb::IntrospectTokenRequest { token: "x".into() });
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{app_id}:{secret}"));
    request
        .metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    if let Some((verifier, peer)) = forwarded {
        request.metadata_mut().insert(
            "x-verifier-authorization",
            format!("Bearer {verifier}").parse().unwrap(),
        );
        request
            .metadata_mut()
            .insert("x-forwarded-peer", peer.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn failed_attempts_forwarded_by_the_verifier_count_against_the_original_caller() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 2).await;
    let (app_a, _) = app_with(&server, &ALL_FEATURES).await;
    let (app_b, secret_b) = app_with(&server, &ALL_FEATURES).await;
    let verifier = server.config.callers.verifier.clone();
    let mut tokens = pb::token_service_client::TokenServiceClient::new(server.channel.clone());
    for _ in 0..2 {
        let err = tokens
            .introspect_token(introspect_as(
                &app_a,
                "wrong",
                Some((&verifier, "203.0.113.7")),
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    }
    let err = tokens
        .introspect_token(introspect_as(
            &app_b,
            &secret_b,
            Some((&verifier, "203.0.113.7")),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        ErrorReason::RequestTrafficExceedLimit,
        "the attacker's own address is limited"
    );
    assert!(
        tokens
            .introspect_token(introspect_as(
                &app_b,
                &secret_b,
                Some((&verifier, "198.51.100.1"))
            ))
            .await
            .is_ok(),
        "other callers behind the same verifier are not"
    );
    assert!(
        tokens
            .introspect_token(introspect_as(&app_b, &secret_b, None))
            .await
            .is_ok()
    );
    // Without the verifier credential the forwarded address is ignored: no spoofing a fresh budget.
    for _ in 0..2 {
        let _ = tokens
            .introspect_token(introspect_as(
                &app_b,
                "wrong",
                Some(("not-the-verifier", "192.0.2.1")),
            ))
            .await;
    }
    let err = tokens
        .introspect_token(introspect_as(&app_b, &secret_b, None))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::RequestTrafficExceedLimit);
}

#[tokio::test]
async fn strangers_failures_limit_wrong_secrets_for_an_app_but_never_lock_out_the_right_one() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let verifier = server.config.callers.verifier.clone();
    let mut tokens = pb::token_service_client::TokenServiceClient::new(server.channel.clone());
    // Wrong secrets for one app from many addresses, each within its own caller budget.
    let strangers = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
    let mut reasons = Vec::new();
    for peer in strangers {
        let err = tokens
            .introspect_token(introspect_as(&app_id, "wrong", Some((&verifier, peer))))
            .await
            .unwrap_err();
        reasons.push(reason(&err));
    }
    assert_eq!(
        reasons,
        [
            ErrorReason::InvalidAuthClient,
            ErrorReason::InvalidAuthClient,
            ErrorReason::RequestTrafficExceedLimit,
            ErrorReason::RequestTrafficExceedLimit,
        ],
        "the app's failure budget is shared by every caller"
    );
    assert!(
        tokens
            .introspect_token(introspect_as(
                &app_id,
                &secret,
                Some((&verifier, "198.51.100.9"))
            ))
            .await
            .is_ok(),
        "the app's own backend still gets in with the right secret"
    );
}
