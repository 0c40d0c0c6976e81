use miniprogram_proto::ErrorReason;
use miniprogram_proto::caller_credentials::CallerCredential;
use miniprogram_proto::userinfo::v1 as upb;
use tonic::Code;
use tonic_types::StatusExt;
use upb::profile_service_client::ProfileServiceClient;

use super::{ALL_FEATURES, Platform, consent_token, demo_profile, reason};

#[tokio::test]
async fn upsert_rejects_every_bad_field_with_a_violation_each_and_writes_nothing() {
    let p = Platform::start().await;
    let mut bad = demo_profile("u1");
    bad.avatar = "http://not-https.example.com/a.png".into();
    bad.nick_name = "n".repeat(129);
    bad.gender = "male".into();
    bad.country_code = "cn".into();
    bad.province = "p".repeat(129);
    bad.city = "c".repeat(129);
    let err = p
        .userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest { profile: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, ErrorReason::InvalidProfileField)
    );
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "profile.avatar",
            "profile.nick_name",
            "profile.gender",
            "profile.country_code",
            "profile.province",
            "profile.city"
        ]
    );
    let err = p
        .userinfo
        .profiles()
        .get_profile(upb::GetProfileRequest {
            user_id: "u1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        ErrorReason::ProfileNotFound,
        "nothing half-written"
    );
    let mut long_avatar = demo_profile("u1");
    long_avatar.avatar = format!("https://e.com/{}", "a".repeat(2048));
    let err = p
        .userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(long_avatar),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "profile.avatar"
    );
}

#[tokio::test]
async fn profiles_are_upserted_read_and_deleted() {
    let p = Platform::start().await;
    let mut profiles = p.userinfo.profiles();
    let stored = profiles
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(demo_profile("u1")),
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert!(stored.update_time.is_some());
    let read = profiles
        .get_profile(upb::GetProfileRequest {
            user_id: "u1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(read.real_name, "Zhang Wei");
    profiles
        .delete_profile(upb::DeleteProfileRequest {
            user_id: "u1".into(),
        })
        .await
        .unwrap();
    let err = profiles
        .delete_profile(upb::DeleteProfileRequest {
            user_id: "u1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::ProfileNotFound);
    let err = profiles
        .upsert_profile(upb::UpsertProfileRequest { profile: None })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
    let err = profiles
        .get_profile(upb::GetProfileRequest {
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
}

/// Guards the read cache forgetting a deleted profile: userinfo-service here has no
/// PRIVACY_TOKEN, so the erasure cannot reach auth-service and the token stays live; the read
/// must still find no profile (with it, the token is revoked too: `privacy_records`).
#[tokio::test]
async fn a_deleted_profile_is_profile_not_found_for_a_live_token() {
    let p = Platform::start_with(|_| {}, |c| c.privacy_token = None).await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(
        &p.consent(
            "u1",
            &app_id,
            &[miniprogram_proto::auth::v1::Scope::UserInfo],
        )
        .await,
    );
    // A read first, so the profile sits in userinfo-service's read cache (1 s TTL in tests).
    assert_eq!(p.open_user_info(&token).await.unwrap().nick_name, "Wei");
    p.userinfo
        .profiles()
        .delete_profile(upb::DeleteProfileRequest {
            user_id: "u1".into(),
        })
        .await
        .unwrap();
    let err = p.open_user_info(&token).await.unwrap_err();
    assert_eq!(reason(&err), ErrorReason::ProfileNotFound);
}

/// Guards `profile_check` in userinfo-service: only ProfileService's own credential passes;
/// the console's `ADMIN_TOKEN`, which auth-service takes, is unknown here.
#[tokio::test]
async fn profile_calls_need_the_profile_credential() {
    let p = Platform::start().await;
    for (credential, code, expected) in [
        (
            CallerCredential::none(),
            Code::Unauthenticated,
            ErrorReason::UnauthenticatedCaller,
        ),
        (
            CallerCredential::bearer("wrong"),
            Code::Unauthenticated,
            ErrorReason::UnauthenticatedCaller,
        ),
        (
            CallerCredential::bearer(&p.auth.config.callers.verifier),
            Code::PermissionDenied,
            ErrorReason::CallerNotPermitted,
        ),
        // The console's credential opens auth-service's AppService, not ProfileService.
        (
            CallerCredential::bearer(&p.auth.config.callers.admin),
            Code::Unauthenticated,
            ErrorReason::UnauthenticatedCaller,
        ),
    ] {
        let err = ProfileServiceClient::with_interceptor(p.userinfo.channel.clone(), credential)
            .get_profile(upb::GetProfileRequest {
                user_id: "u1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!((err.code(), reason(&err)), (code, expected));
    }
}

#[tokio::test]
async fn an_updated_profile_is_served_at_once_despite_the_read_cache() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(
        &p.consent(
            "u1",
            &app_id,
            &[miniprogram_proto::auth::v1::Scope::UserInfo],
        )
        .await,
    );
    assert_eq!(p.open_user_info(&token).await.unwrap().nick_name, "Wei");
    let mut renamed = demo_profile("u1");
    renamed.nick_name = "Wei 2".into();
    p.profile(renamed).await;
    assert_eq!(p.open_user_info(&token).await.unwrap().nick_name, "Wei 2");
}
