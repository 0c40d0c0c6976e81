use std::time::{Duration, Instant};

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use pb::request_authorization_response::Result as Outcome;
use pb::resolve_prompt_response::Result as Answer;
use tonic::Code;
use tonic_types::StatusExt;

use super::{ALL_FEATURES, Platform, auth_code, consent_token, demo_profile, reason};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};
use pb::Trigger::{AppLaunch, UserTap};

#[tokio::test]
async fn tap_prompt_allow_then_get_open_user_info_returns_exactly_the_public_fields() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("wallet-user-1")).await;
    let Outcome::Prompt(prompt) = p
        .request("wallet-user-1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap()
    else {
        panic!("a first request must prompt");
    };
    assert_eq!(prompt.scopes, vec![UserInfo as i32]);
    let Answer::Grant(grant) = p
        .resolve(&prompt.prompt_id, "wallet-user-1", pb::Decision::Allow)
        .await
        .unwrap()
    else {
        panic!("allow must grant");
    };
    let info = p.open_user_info(&consent_token(&grant)).await.unwrap();
    assert_eq!(
        info,
        upb::GetOpenUserInfoResponse {
            avatar: "https://cdn.example.com/avatars/zw.png".into(),
            nick_name: "Wei".into(),
            gender: "m".into(),
            country_code: "CN".into(),
            province: "Zhejiang".into(),
            city: "Hangzhou".into(),
        }
    );
}

#[tokio::test]
async fn deny_then_ask_again_prompts_again_as_previously_denied() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    let Outcome::Prompt(first) = p
        .request("u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap()
    else {
        panic!()
    };
    let Answer::Denial(denial) = p
        .resolve(&first.prompt_id, "u1", pb::Decision::Deny)
        .await
        .unwrap()
    else {
        panic!("deny is an outcome, not an error");
    };
    assert!(denial.may_ask_again);
    let Outcome::Prompt(second) = p
        .request("u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap()
    else {
        panic!("a refusal is not final");
    };
    assert!(second.previously_denied);
}

#[tokio::test]
async fn a_launch_trigger_is_refused() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    let err = p
        .request("u1", &app_id, &[UserInfo], AppLaunch)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::AuthorizationAtLaunch);
}

#[tokio::test]
async fn a_missing_feature_is_40006() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&[pb::Feature::UserAuthorization]).await;
    let err = p
        .request("u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InsufficientIsvPermissions);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["jsapi_code"],
        "40006"
    );
}

#[tokio::test]
async fn withdrawn_consent_is_40003_at_userinfo_within_one_second() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&token).await.unwrap();
    p.auth
        .wallet()
        .revoke_authorization(pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id: app_id.clone(),
            scopes: vec![],
        })
        .await
        .unwrap();
    let revoked_at = Instant::now();
    let err = loop {
        match p.open_user_info(&token).await {
            Err(e) => break e,
            Ok(_) if revoked_at.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => panic!("revoked token still accepted after 1 s"),
        }
    };
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::PermissionDenied, ErrorReason::InvalidAuthRelations)
    );
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["jsapi_code"],
        "40003"
    );
    // A fresh consent after the withdrawal works again.
    let fresh = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&fresh).await.unwrap();
}

#[tokio::test]
async fn the_phone_flow_goes_through_an_auth_code_and_never_shares_a_prompt_with_user_info() {
    let p = Platform::start().await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let err = p
        .request("u1", &app_id, &[UserInfo, PhoneNumber], UserTap)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, ErrorReason::ScopesNotCombinable)
    );
    let sorted = |mut scopes: Vec<i32>| {
        scopes.sort_unstable();
        scopes
    };
    let phone_scopes = sorted(vec![AuthBase as i32, PhoneNumber as i32]);
    // A fresh user's tap shows the phone modal, and that modal is about the phone only.
    let Outcome::Prompt(prompt) = p
        .request("u1", &app_id, &[AuthBase, PhoneNumber], UserTap)
        .await
        .unwrap()
    else {
        panic!("the phone number needs the user's consent: a modal");
    };
    assert_eq!(sorted(prompt.scopes.clone()), phone_scopes);
    assert!(!prompt.previously_denied);
    let Answer::Grant(grant) = p
        .resolve(&prompt.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap()
    else {
        panic!("allow must grant");
    };
    assert!(!grant.scopes.contains(&(UserInfo as i32)));
    let code = auth_code(&grant);
    let pair = p
        .auth
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sorted(pair.scopes.clone()), phone_scopes);
    let phone = p
        .userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .phone_number;
    assert_eq!(phone, "+86 138 0013 8000");
    // Holding the phone scope doesn't make it combinable with userInfo, in either order.
    for scopes in [[UserInfo, PhoneNumber], [PhoneNumber, UserInfo]] {
        let err = p
            .request("u1", &app_id, &scopes, UserTap)
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::ScopesNotCombinable, "{scopes:?}");
    }
    let err = p
        .userinfo
        .backend(&app_id, "wrong-secret")
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    let err = p
        .userinfo
        .userinfo()
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        ErrorReason::InvalidAuthClient,
        "the access token alone is not enough"
    );
}

#[tokio::test]
async fn consent_and_auth_base_tokens_do_not_give_the_phone_number() {
    let p = Platform::start().await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let consent = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    let code = auth_code(&p.consent("u1", &app_id, &[AuthBase]).await);
    let base = p
        .auth
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap()
        .into_inner();
    for token in [consent, base.access_token] {
        let err = p
            .userinfo
            .backend(&app_id, &secret)
            .get_phone_number(upb::GetPhoneNumberRequest {
                access_token: token,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
    }
}

#[tokio::test]
async fn cross_app_token_misuse_is_refused() {
    let p = Platform::start().await;
    let (app_a, secret_a) = p.app(&ALL_FEATURES).await;
    let (app_b, secret_b) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let code_a = auth_code(&p.consent("u1", &app_a, &[AuthBase, PhoneNumber]).await);
    let pair_a = p
        .auth
        .backend(&app_a, &secret_a)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code_a })
        .await
        .unwrap()
        .into_inner();
    let err = p
        .userinfo
        .backend(&app_b, &secret_b)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair_a.access_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
    let code_for_a = auth_code(&p.consent("u1", &app_a, &[AuthBase]).await);
    let err = p
        .auth
        .backend(&app_b, &secret_b)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code_for_a,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidCode);
}

#[tokio::test]
async fn disabling_the_feature_stops_issued_consent_tokens_at_userinfo() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&token).await.unwrap();
    p.auth
        .admin()
        .disable_feature(pb::DisableFeatureRequest {
            app_id: app_id.clone(),
            feature: pb::Feature::BasicUserInfo as i32,
        })
        .await
        .unwrap();
    let started = Instant::now();
    let err = loop {
        match p.open_user_info(&token).await {
            Err(e) => break e,
            Ok(_) if started.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => panic!("token of a disabled feature still accepted after 1 s"),
        }
    };
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
}

#[tokio::test]
async fn tokens_fail_with_their_reasons_at_userinfo() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    let err = p.open_user_info("").await.unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
    for garbage in [
        "garbage",
        "v4.local.AAAA",
        "v4.local.AAAA.eyJraWQiOiJub3BlIn0",
    ] {
        let err = p.open_user_info(garbage).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::Unauthenticated, ErrorReason::InvalidAccessToken),
            "{garbage}"
        );
    }
    let err = p.open_user_info(&"x".repeat(1 << 15)).await.unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
    let token = consent_token(
        &p.consent("nobody-with-a-profile", &app_id, &[UserInfo])
            .await,
    );
    let err = p.open_user_info(&token).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, ErrorReason::ProfileNotFound)
    );
}
