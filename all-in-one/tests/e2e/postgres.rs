use std::time::{Duration, Instant};

use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use sql_backend::testing::fresh_schema_url;

use super::{ALL_FEATURES, Platform, auth_code, consent_token, demo_profile, reason};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

/// Both services on PostgreSQL (each in its own fresh schema), the flow end to end; a
/// withdrawal is refused within a second, timed on the monotonic clock from the
/// RevokeAuthorization call. Needs TEST_DATABASE_URL (ignored otherwise; CI runs it).
#[tokio::test]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn the_whole_flow_runs_on_postgresql() {
    let (auth_url, userinfo_url) = (
        fresh_schema_url("e2e_auth").await,
        fresh_schema_url("e2e_userinfo").await,
    );
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
    let sent = Instant::now();
    p.auth
        .wallet()
        .revoke_authorization(pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id,
            scopes: vec![],
        })
        .await
        .unwrap();
    let refused = loop {
        match p.open_user_info(&token).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    sent.elapsed() < Duration::from_secs(1),
                    "the withdrawn token was still accepted 1 s after RevokeAuthorization"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let after = sent.elapsed();
    assert_eq!(
        reason(&refused),
        miniprogram_proto::ErrorReason::InvalidAuthRelations
    );
    assert!(
        after < Duration::from_secs(1),
        "refused only after {after:?}"
    );
    eprintln!("refused {after:?} after RevokeAuthorization was sent");
}
