//! GetPhoneNumber confirms the app credential before it looks at the token.

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use tonic::Code;

use super::{
    ALL_FEATURES, TestAuthServer, auth_code, consent_token, reason, upsert_profile, userinfo_for,
};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

async fn phone_access_token(auth: &TestAuthServer, app_id: &str, secret: &str) -> String {
    let code = auth_code(&auth.consent("u1", app_id, &[AuthBase, PhoneNumber]).await);
    auth.backend(app_id, secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .expect("exchange")
        .into_inner()
        .access_token
}

#[tokio::test]
async fn a_wrong_app_secret_is_invalid_auth_client_whatever_the_token() {
    let auth = TestAuthServer::start().await;
    let userinfo = userinfo_for(&auth, |_| {}).await;
    upsert_profile(&userinfo, "u1").await;
    let (app_a, secret_a) = auth.create_app(&ALL_FEATURES).await;
    let (app_b, secret_b) = auth.create_app(&ALL_FEATURES).await;
    let own = phone_access_token(&auth, &app_a, &secret_a).await;
    let other_apps = phone_access_token(&auth, &app_b, &secret_b).await;
    let consent = consent_token(&auth.consent("u1", &app_a, &[UserInfo]).await);

    // With the right secret each token fails (or succeeds) for its own reason...
    let cases = [
        ("own access token", own, None),
        (
            "another app's access token",
            other_apps,
            Some(ErrorReason::InvalidAuthRelations),
        ),
        (
            "consent token",
            consent,
            Some(ErrorReason::InvalidAuthRelations),
        ),
        (
            "garbage",
            "garbage".to_owned(),
            Some(ErrorReason::InvalidAccessToken),
        ),
        (
            "empty",
            String::new(),
            Some(ErrorReason::InvalidAuthRelations),
        ),
    ];
    for (label, token, expected) in &cases {
        let got = userinfo
            .backend(&app_a, &secret_a)
            .get_phone_number(upb::GetPhoneNumberRequest {
                access_token: token.clone(),
            })
            .await
            .map_err(|e| reason(&e))
            .err();
        assert_eq!(&got, expected, "{label}");
    }
    // ...but a caller with a wrong secret learns none of that.
    for (label, token, _) in cases {
        let err = userinfo
            .backend(&app_a, "wrong-secret")
            .get_phone_number(upb::GetPhoneNumberRequest {
                access_token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::Unauthenticated, ErrorReason::InvalidAuthClient),
            "{label}"
        );
    }
}

/// GetPhoneNumber for `app_id` with `secret`, optionally through a proxy naming `client` in
/// `x-forwarded-for`; the failure reason, if any.
async fn phone_reason(
    userinfo: &super::TestUserInfoServer,
    app_id: &str,
    secret: &str,
    access_token: &str,
    client: Option<&str>,
) -> Option<ErrorReason> {
    let mut request = tonic::Request::new(upb::GetPhoneNumberRequest {
        access_token: access_token.to_owned(),
    });
    if let Some(client) = client {
        request
            .metadata_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
    }
    userinfo
        .backend(app_id, secret)
        .get_phone_number(request)
        .await
        .err()
        .map(|e| reason(&e))
}

/// Guards the per-(caller, app) count at auth-service, as GetPhoneNumber reaches it: ten
/// wrong credentials with other app ids from one address leave a correct secret from that
/// address working.
#[tokio::test]
async fn other_apps_failures_never_lock_a_correct_secret_out_of_get_phone_number() {
    let auth = TestAuthServer::start_with(|c| c.failed_credential_budget = 3).await;
    let userinfo = userinfo_for(&auth, |_| {}).await;
    upsert_profile(&userinfo, "u1").await;
    let (app_a, secret_a) = auth.create_app(&ALL_FEATURES).await;
    let (app_b, _) = auth.create_app(&ALL_FEATURES).await;
    let token = phone_access_token(&auth, &app_a, &secret_a).await;
    for i in 0..10 {
        let app = if i % 2 == 0 {
            app_b.clone()
        } else {
            format!("mp-made-up-{i}")
        };
        let got = phone_reason(&userinfo, &app, "wrong", &token, None).await;
        assert!(got.is_some(), "a wrong secret passed");
    }
    assert_eq!(
        phone_reason(&userinfo, &app_b, "wrong", &token, None).await,
        Some(ErrorReason::RequestTrafficExceedLimit),
        "the failing address is limited for the app it failed with"
    );
    assert_eq!(
        phone_reason(&userinfo, &app_a, &secret_a, &token, None).await,
        None,
        "the correct secret of another app from the same address still reads the phone number"
    );
}

/// Guards `TrustedProxies::client_address` in GetPhoneNumber: behind a trusted proxy each
/// forwarded client has its own budget at auth-service; from an untrusted peer the header is
/// ignored and every failure is that peer's.
#[tokio::test]
async fn x_forwarded_for_names_the_phone_caller_only_behind_a_trusted_proxy() {
    for trusted in [false, true] {
        let auth = TestAuthServer::start_with(|c| c.failed_credential_budget = 2).await;
        let userinfo = userinfo_for(&auth, |c| {
            if trusted {
                c.trusted_proxies = "127.0.0.1/32".parse().unwrap();
            }
        })
        .await;
        upsert_profile(&userinfo, "u1").await;
        let (app_id, secret) = auth.create_app(&ALL_FEATURES).await;
        let token = phone_access_token(&auth, &app_id, &secret).await;
        for _ in 0..2 {
            let got = phone_reason(&userinfo, &app_id, "wrong", &token, Some("203.0.113.7")).await;
            assert_eq!(got, Some(ErrorReason::InvalidAuthClient));
        }
        let attacker = phone_reason(&userinfo, &app_id, &secret, &token, Some("203.0.113.7")).await;
        let bystander =
            phone_reason(&userinfo, &app_id, &secret, &token, Some("198.51.100.1")).await;
        let limited = Some(ErrorReason::RequestTrafficExceedLimit);
        if trusted {
            assert_eq!((attacker, bystander), (limited, None));
        } else {
            assert_eq!((attacker, bystander), (limited, limited));
        }
    }
}

/// Guards `ConfirmedCredentials` in `UserInfoReader::phone_number`: a credential auth-service
/// confirmed is reused (GetPhoneNumber is answered with auth-service stopped, the token checked
/// locally), but only within `CONFIRMED_CREDENTIAL_TTL`: after it the credential must be
/// confirmed again, and with auth-service stopped the call is SERVICE_UNAVAILABLE.
#[tokio::test]
async fn a_confirmed_credential_spares_auth_service_for_a_second_only() {
    let auth = TestAuthServer::start().await;
    let userinfo = userinfo_for(&auth, |_| {}).await;
    upsert_profile(&userinfo, "u1").await;
    let (app_id, secret) = auth.create_app(&ALL_FEATURES).await;
    let token = phone_access_token(&auth, &app_id, &secret).await;
    assert_eq!(
        phone_reason(&userinfo, &app_id, &secret, &token, None).await,
        None
    );
    let confirmed_by = std::time::Instant::now();
    let _stopped = auth.pause().await;
    assert_eq!(
        phone_reason(&userinfo, &app_id, &secret, &token, None).await,
        None,
        "reused within the second"
    );
    assert!(
        confirmed_by.elapsed() < userinfo_service::userinfo::CONFIRMED_CREDENTIAL_TTL,
        "the machine was too slow to show the reuse"
    );
    assert_eq!(
        phone_reason(&userinfo, &app_id, "wrong-secret", &token, None).await,
        Some(ErrorReason::ServiceUnavailable),
        "another credential is never reused"
    );
    tokio::time::sleep_until(
        (confirmed_by + userinfo_service::userinfo::CONFIRMED_CREDENTIAL_TTL).into(),
    )
    .await;
    assert_eq!(
        phone_reason(&userinfo, &app_id, &secret, &token, None).await,
        Some(ErrorReason::ServiceUnavailable),
        "reused past its time"
    );
}

/// A secret rotated at auth-service stops working at GetPhoneNumber once the reuse time of
/// its last confirmation has passed, and the new secret works at once.
#[tokio::test]
async fn a_rotated_secret_is_refused_by_get_phone_number_after_the_reuse_time() {
    let auth = TestAuthServer::start().await;
    let userinfo = userinfo_for(&auth, |_| {}).await;
    upsert_profile(&userinfo, "u1").await;
    let (app_id, secret) = auth.create_app(&ALL_FEATURES).await;
    let token = phone_access_token(&auth, &app_id, &secret).await;
    assert_eq!(
        phone_reason(&userinfo, &app_id, &secret, &token, None).await,
        None
    );
    let confirmed_by = std::time::Instant::now();
    let new_secret = auth.rotate_secret(&app_id).await;
    assert_eq!(
        phone_reason(&userinfo, &app_id, &new_secret, &token, None).await,
        None
    );
    tokio::time::sleep_until(
        (confirmed_by + userinfo_service::userinfo::CONFIRMED_CREDENTIAL_TTL).into(),
    )
    .await;
    assert_eq!(
        phone_reason(&userinfo, &app_id, &secret, &token, None).await,
        Some(ErrorReason::InvalidAuthClient)
    );
}
