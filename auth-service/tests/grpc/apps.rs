use auth_service::testing::TestAuthServer;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use tonic::Code;

use super::{ALL_FEATURES, app_with, reason};

#[tokio::test]
async fn create_app_returns_the_secret_once_and_stores_only_its_hash() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &[pb::Feature::BasicUserInfo]).await;
    assert_eq!(secret.len(), 43);
    let app = server
        .admin()
        .get_app(pb::GetAppRequest {
            app_id: app_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert_eq!(app.features, vec![pb::Feature::BasicUserInfo as i32]);
    let db_path = server
        .config
        .database_url
        .trim_start_matches("sqlite://")
        .to_owned();
    let mut bytes = std::fs::read(&db_path).unwrap();
    bytes.extend(std::fs::read(format!("{db_path}-wal")).unwrap_or_default());
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the app secret is in the database file"
    );
}

#[tokio::test]
async fn features_are_enabled_and_disabled() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &[]).await;
    let mut admin = server.admin();
    for f in ALL_FEATURES {
        admin
            .enable_feature(pb::EnableFeatureRequest {
                app_id: app_id.clone(),
                feature: f as i32,
            })
            .await
            .unwrap();
    }
    let app = admin
        .disable_feature(pb::DisableFeatureRequest {
            app_id: app_id.clone(),
            feature: pb::Feature::PhoneNumber as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert_eq!(
        app.features,
        vec![
            pb::Feature::BasicUserInfo as i32,
            pb::Feature::UserAuthorization as i32
        ]
    );
    let err = admin
        .enable_feature(pb::EnableFeatureRequest {
            app_id: app_id.clone(),
            feature: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, ErrorReason::InvalidArgument)
    );
    let err = admin
        .enable_feature(pb::EnableFeatureRequest {
            app_id: "mp-missing".into(),
            feature: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, ErrorReason::AppNotFound)
    );
}

/// Guards `AppRegistry::changed` after `rotate_secret`: the old secret, verified (and so
/// remembered by `VerifiedCredentials`) just before, is refused right after the rotation.
#[tokio::test]
async fn rotating_the_secret_stops_the_old_one_at_once() {
    let server = TestAuthServer::start().await;
    let (app_id, old) = app_with(&server, &ALL_FEATURES).await;
    let probe = pb::IntrospectTokenRequest { token: "x".into() };
    let mut old_backend = server.backend(&app_id, &old);
    let verified = old_backend.introspect_token(probe.clone()).await;
    assert!(verified.is_ok(), "the old secret works before");
    let new = server.rotate_secret(&app_id).await;
    assert_ne!(old, new);
    let err = server
        .backend(&app_id, &old)
        .introspect_token(probe.clone())
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    assert!(
        server
            .backend(&app_id, &new)
            .introspect_token(probe)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn bad_app_input_is_invalid_argument() {
    let server = TestAuthServer::start().await;
    let mut admin = server.admin();
    for name in [String::new(), "x".repeat(1 << 15)] {
        let err = admin
            .create_app(pb::CreateAppRequest {
                display_name: name,
                features: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidArgument);
    }
    let err = admin
        .create_app(pb::CreateAppRequest {
            display_name: "x".into(),
            features: vec![1; 10_000],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
    let err = admin
        .get_app(pb::GetAppRequest {
            app_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
}
