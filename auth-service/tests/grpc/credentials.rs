use auth_service::testing::{Credential, TestAuthServer};
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use pb::app_service_client::AppServiceClient;
use pb::authorization_service_client::AuthorizationServiceClient;
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

/// Guards `CallerCheck::also` (`grpc/caller_check.rs`): userinfo-service's privacy
/// credential reaches a user's export and erasure, and every other AuthorizationService method
/// refuses it as PERMISSION_DENIED before looking at the request; the wallet reaches all.
#[tokio::test]
async fn the_privacy_credential_reaches_a_users_export_and_erasure_only() {
    let server = TestAuthServer::start().await;
    let privacy = server.config.callers.privacy.as_deref().unwrap();
    let mut client = AuthorizationServiceClient::with_interceptor(
        server.channel.clone(),
        Credential::bearer(privacy),
    );
    let user_id = || "u-1".to_owned();
    let export = pb::ExportUserAuthorizationsRequest { user_id: user_id() };
    client
        .export_user_authorizations(export.clone())
        .await
        .unwrap();
    let erase = pb::EraseUserAuthorizationsRequest { user_id: user_id() };
    client.erase_user_authorizations(erase).await.unwrap();
    let list = pb::ListAuthorizationsRequest { user_id: user_id() };
    let refused = [
        client.list_authorizations(list.clone()).await.map(drop),
        client
            .request_authorization(pb::RequestAuthorizationRequest::default())
            .await
            .map(drop),
        client
            .resolve_prompt(pb::ResolvePromptRequest::default())
            .await
            .map(drop),
        client
            .revoke_authorization(pb::RevokeAuthorizationRequest::default())
            .await
            .map(drop),
        client
            .list_consent_records(pb::ListConsentRecordsRequest::default())
            .await
            .map(drop),
    ];
    for (i, refused) in refused.into_iter().enumerate() {
        let err = refused.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::PermissionDenied, ErrorReason::CallerNotPermitted),
            "call {i}"
        );
    }
    server
        .wallet()
        .export_user_authorizations(export)
        .await
        .unwrap();
    server.wallet().list_authorizations(list).await.unwrap();
}

/// The privacy credential is no other role's (AppService refuses it), and where auth-service
/// has none configured the same token is no credential at all.
#[tokio::test]
async fn the_privacy_credential_is_no_other_role_and_unknown_where_unset() {
    let server = TestAuthServer::start().await;
    let privacy = Credential::bearer(server.config.callers.privacy.as_deref().unwrap());
    let err = AppServiceClient::with_interceptor(server.channel.clone(), privacy.clone())
        .get_app(pb::GetAppRequest { app_id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::PermissionDenied, ErrorReason::CallerNotPermitted)
    );
    let unset = TestAuthServer::start_with(|c| c.callers.privacy = None).await;
    let export = pb::ExportUserAuthorizationsRequest {
        user_id: "u-1".into(),
    };
    let err = AuthorizationServiceClient::with_interceptor(unset.channel.clone(), privacy)
        .export_user_authorizations(export)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::Unauthenticated, ErrorReason::UnauthenticatedCaller)
    );
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

/// IntrospectToken with a `Basic` credential and, optionally, a forwarded caller: either the
/// verifier's `x-forwarded-peer` (with the given verifier credential) or a proxy's
/// `x-forwarded-for`.
fn introspect_as(
    app_id: &str,
    secret: &str,
    forwarded: Forwarded<'_>,
) -> tonic::Request<pb::IntrospectTokenRequest> {
    use base64::Engine;
    let mut request = tonic::Request::new(pb::IntrospectTokenRequest { token: "x".into() });
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{app_id}:{secret}"));
    request
        .metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    match forwarded {
        Forwarded::Direct => {}
        Forwarded::ByVerifier(verifier, peer) => {
            request.metadata_mut().insert(
                "x-verifier-authorization",
                format!("Bearer {verifier}").parse().unwrap(),
            );
            request
                .metadata_mut()
                .insert("x-forwarded-peer", peer.parse().unwrap());
        }
        Forwarded::ByProxy(client) => {
            request
                .metadata_mut()
                .insert("x-forwarded-for", client.parse().unwrap());
        }
    }
    request
}

/// Who a test call claims to come from.
#[derive(Clone, Copy)]
enum Forwarded<'a> {
    /// Nothing forwarded: the TCP peer (127.0.0.1).
    Direct,
    /// userinfo-service's forwarding: (verifier token, original caller).
    ByVerifier(&'a str, &'a str),
    /// A proxy's `x-forwarded-for`.
    ByProxy(&'a str),
}

async fn introspect_reason(
    server: &TestAuthServer,
    app_id: &str,
    secret: &str,
    forwarded: Forwarded<'_>,
) -> Option<ErrorReason> {
    pb::token_service_client::TokenServiceClient::new(server.channel.clone())
        .introspect_token(introspect_as(app_id, secret, forwarded))
        .await
        .err()
        .map(|e| reason(&e))
}

/// Guards `caller_key` counting per (caller, app): ten wrong attempts from one address with
/// other app ids (another app's, made-up ones, a malformed credential) never refuse a
/// correct secret from that address, which is all a stranger behind the same NAT, proxy or
/// ingress can make.
#[tokio::test]
async fn other_apps_failures_from_one_address_never_refuse_a_correct_secret() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 3).await;
    let (app_a, secret_a) = app_with(&server, &ALL_FEATURES).await;
    let (app_b, _) = app_with(&server, &ALL_FEATURES).await;
    let mut tokens = pb::token_service_client::TokenServiceClient::new(server.channel.clone());
    for i in 0..10 {
        let (app, secret) = match i % 3 {
            0 => (app_b.clone(), "wrong".to_owned()),
            1 => (format!("mp-made-up-{i}"), "wrong".to_owned()),
            _ => (String::new(), String::new()),
        };
        let _ = tokens
            .introspect_token(introspect_as(&app, &secret, Forwarded::Direct))
            .await;
    }
    assert_eq!(
        introspect_reason(&server, &app_b, "wrong", Forwarded::Direct).await,
        Some(ErrorReason::RequestTrafficExceedLimit),
        "the failing address is limited for the app it failed with"
    );
    assert_eq!(
        introspect_reason(&server, &app_a, &secret_a, Forwarded::Direct).await,
        None,
        "a correct secret for another app from the same address is accepted"
    );
}

#[tokio::test]
async fn failed_attempts_forwarded_by_the_verifier_count_against_the_original_caller() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 2).await;
    let (app_a, secret_a) = app_with(&server, &ALL_FEATURES).await;
    let verifier = server.config.callers.verifier.clone();
    let attacker = Forwarded::ByVerifier(&verifier, "203.0.113.7");
    for _ in 0..2 {
        assert_eq!(
            introspect_reason(&server, &app_a, "wrong", attacker).await,
            Some(ErrorReason::InvalidAuthClient)
        );
    }
    assert_eq!(
        introspect_reason(&server, &app_a, &secret_a, attacker).await,
        Some(ErrorReason::RequestTrafficExceedLimit),
        "the attacker's own address is limited for that app"
    );
    for other in [
        Forwarded::ByVerifier(&verifier, "198.51.100.1"),
        Forwarded::Direct,
    ] {
        assert_eq!(
            introspect_reason(&server, &app_a, &secret_a, other).await,
            None,
            "other callers behind the same verifier are not"
        );
    }
    // Without the verifier credential the forwarded address is ignored: the failures count
    // against the TCP peer, so no one can claim a fresh budget per attempt.
    let (app_b, secret_b) = app_with(&server, &ALL_FEATURES).await;
    for _ in 0..2 {
        let spoofed = Forwarded::ByVerifier("not-the-verifier-token-0123456789abcdef", "192.0.2.1");
        let _ = introspect_reason(&server, &app_b, "wrong", spoofed).await;
    }
    assert_eq!(
        introspect_reason(&server, &app_b, &secret_b, Forwarded::Direct).await,
        Some(ErrorReason::RequestTrafficExceedLimit)
    );
}

/// Guards `TrustedProxies::client_address` in TokenService: `x-forwarded-for` names the caller
/// only when the TCP peer is a trusted proxy; from anyone else it is ignored.
#[tokio::test]
async fn x_forwarded_for_is_honoured_only_from_trusted_proxies() {
    for trusted in [false, true] {
        let server = TestAuthServer::start_with(|c| {
            c.failed_credential_budget = 2;
            if trusted {
                c.trusted_proxies = "127.0.0.0/8".parse().unwrap();
            }
        })
        .await;
        let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
        for client in ["203.0.113.7", "203.0.113.8"] {
            let _ = introspect_reason(&server, &app_id, "wrong", Forwarded::ByProxy(client)).await;
        }
        let other_client = introspect_reason(
            &server,
            &app_id,
            &secret,
            Forwarded::ByProxy("198.51.100.1"),
        )
        .await;
        let direct = introspect_reason(&server, &app_id, &secret, Forwarded::Direct).await;
        if trusted {
            assert_eq!(
                other_client, None,
                "each forwarded client has its own budget"
            );
            assert_eq!(direct, None, "the proxy itself has failed nothing");
            for _ in 0..2 {
                let _ =
                    introspect_reason(&server, &app_id, "wrong", Forwarded::ByProxy("203.0.113.7"))
                        .await;
            }
            assert_eq!(
                introspect_reason(&server, &app_id, &secret, Forwarded::ByProxy("203.0.113.7"))
                    .await,
                Some(ErrorReason::RequestTrafficExceedLimit),
                "the forwarded client that failed is limited"
            );
        } else {
            let limited = Some(ErrorReason::RequestTrafficExceedLimit);
            assert_eq!(
                (other_client, direct),
                (limited, limited),
                "an untrusted peer's header is ignored: all failures are the peer's"
            );
        }
    }
}

#[tokio::test]
async fn strangers_failures_limit_wrong_secrets_for_an_app_but_never_lock_out_the_right_one() {
    let server = TestAuthServer::start_with(|c| c.failed_credential_budget = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let verifier = server.config.callers.verifier.clone();
    // Wrong secrets for one app from many addresses, each within its own caller budget.
    let strangers = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
    let mut reasons = Vec::new();
    for peer in strangers {
        let forwarded = Forwarded::ByVerifier(&verifier, peer);
        reasons.extend(introspect_reason(&server, &app_id, "wrong", forwarded).await);
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
    assert_eq!(
        introspect_reason(
            &server,
            &app_id,
            &secret,
            Forwarded::ByVerifier(&verifier, "198.51.100.9")
        )
        .await,
        None,
        "the app's own backend still gets in with the right secret"
    );
}
