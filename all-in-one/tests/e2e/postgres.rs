use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use sql_backend::testing::fresh_schema_url;

use super::{ALL_FEATURES, Platform, auth_code, consent_token, demo_profile, reason};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

/// Both services on PostgreSQL (each in its own fresh schema), the flow end to end. Skipped
/// without TEST_DATABASE_URL; CI sets it and REQUIRE_POSTGRES.
#[tokio::test]
async fn the_whole_flow_runs_on_postgresql() {
    let (Some(auth_url), Some(userinfo_url)) = (
        fresh_schema_url("e2e_auth").await,
        fresh_schema_url("e2e_userinfo").await,
    ) else {
        return;
    };
    let p = Platform::start_with(
        |a| a.database_url = auth_url,
        |u| u.database_url = userinfo_url,
    )
    .await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    assert_eq!(p.open_user_info(&token).await.unwrap().nick_name, "Wei");
    let code = auth_code(&p.consent("u1", &app_id, &[AuthBase, PhoneNumber]).await);
    let pair = p
        .auth
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap()
        .into_inner();
    let phone = p
        .userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(phone.phone_number, "+86 138 0013 8000");
    p.auth
        .wallet()
        .revoke_authorization(pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id,
            scopes: vec![],
        })
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..100 {
        match p.open_user_info(&token).await {
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    assert_eq!(
        reason(&refused.expect("revoked token still accepted after 1 s")),
        miniprogram_proto::ErrorReason::InvalidAuthRelations
    );
}
