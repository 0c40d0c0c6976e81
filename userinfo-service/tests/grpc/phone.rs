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
