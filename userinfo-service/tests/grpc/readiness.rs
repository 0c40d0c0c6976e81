//! Health: SERVING only once tokens can be checked (keys loaded, revocations caught up), and
//! NOT_SERVING while the revocation state is stale.

use std::time::{Duration, Instant};

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1::Scope::UserInfo;
use tonic::Code;

use super::{
    ALL_FEATURES, TestAuthServer, consent_token, open_user_info, reason, revoke_all, userinfo_for,
};

#[tokio::test]
async fn once_serving_the_revocation_backlog_is_applied_and_tokens_are_checked() {
    let auth = TestAuthServer::start().await;
    let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
    let revoked = consent_token(&auth.consent("u1", &app_id, &[UserInfo]).await);
    let live = consent_token(&auth.consent("u2", &app_id, &[UserInfo]).await);
    revoke_all(&auth, "u1", &app_id).await;

    // A userinfo-service that starts now has the revocation in its backlog.
    let userinfo = userinfo_for(&auth, |_| {}).await;
    let err = open_user_info(&userinfo, &revoked).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::PermissionDenied, ErrorReason::InvalidAuthRelations)
    );
    // The live token passes the check (and finds no profile): not REVOCATION_STATE_STALE.
    let err = open_user_info(&userinfo, &live).await.unwrap_err();
    assert_eq!(reason(&err), ErrorReason::ProfileNotFound);
}

async fn wait_for_health(
    userinfo: &super::TestUserInfoServer,
    serving: bool,
    within: Duration,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if service_runtime::is_serving(userinfo.channel.clone(), "")
            .await
            .is_ok_and(|s| s == serving)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn health_is_not_serving_while_revocations_are_stale_and_serving_once_caught_up() {
    let auth = TestAuthServer::start().await;
    let userinfo = userinfo_for(&auth, |u| {
        u.revocation_stale_after = Duration::from_millis(500);
    })
    .await;
    let stopped = auth.pause().await;
    assert!(
        wait_for_health(&userinfo, false, Duration::from_secs(10)).await,
        "still SERVING with auth-service gone past the stale bound"
    );
    let _auth = stopped.restart().await;
    assert!(
        wait_for_health(&userinfo, true, Duration::from_secs(10)).await,
        "not SERVING again after auth-service returned"
    );
}
