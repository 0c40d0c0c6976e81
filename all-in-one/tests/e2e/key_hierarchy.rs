//! The key hierarchy from outside: what a verifier credential can and cannot do, emergency key
//! retirement, and master key rotation across a rolling restart.

use std::time::{Duration, Instant};

use auth_service::testing::TestAuthServer;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use miniprogram_token::{
    KeyRing, MasterKey, Scope, ScopeSet, SigningKey, Timestamp, TokenClaims, TokenKind,
};
use userinfo_service::testing::TestUserInfoServer;

use super::{ALL_FEATURES, Platform, auth_code, consent_token, demo_profile, reason};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

/// Everything `ListTokenKeys` hands a verifier, and a token a forger builds from it: its own
/// Ed25519 key under the listed key id, the listed subject key sealing the user id.
async fn forge_from_listed_keys(
    auth: &TestAuthServer,
    kind: TokenKind,
    claims: &TokenClaims,
) -> String {
    let listed = auth
        .verifier()
        .list_token_keys(pb::ListTokenKeysRequest {})
        .await
        .expect("list keys")
        .into_inner();
    let key = listed
        .keys
        .iter()
        .find(|k| k.key_id == listed.current_key_id)
        .expect("the current key is listed");
    assert_eq!(key.public_key.len(), 32);
    let now = Timestamp::now();
    let mut forger = SigningKey::generate(
        key.key_id.clone(),
        now,
        now.saturating_add(Duration::from_secs(3600)),
        now.saturating_add(Duration::from_secs(7200)),
    )
    .expect("key");
    forger.verifying.subject_key = key.subject_key.clone().try_into().expect("32 bytes");
    KeyRing::signing([forger])
        .mint(kind, claims, now)
        .expect("mint")
}

fn claims(app_id: &str, user_id: &str, scopes: &[Scope]) -> TokenClaims {
    let now = Timestamp::now();
    TokenClaims {
        app_id: app_id.into(),
        user_id: user_id.into(),
        scopes: ScopeSet::of(scopes),
        issued_at: now.unix_nanos(),
        expires_at: now.saturating_add(Duration::from_secs(600)).unix_nanos(),
        token_id: "forged".into(),
        grant_id: "forged".into(),
    }
}

/// A leaked verifier credential mints nothing: a consent token and an access token built
/// from everything `ListTokenKeys` returns, for a user who never consented, are refused by
/// `GetOpenUserInfo`, `GetPhoneNumber` and auth-service's own `IntrospectToken`; so is a real
/// token of another deployment. Guards the Ed25519 signature check in `KeyRing::open` (the
/// first version's symmetric keys let exactly these tokens through).
#[tokio::test]
async fn tokens_built_from_the_listed_keys_or_another_deployment_are_refused_everywhere() {
    let p = Platform::start().await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("victim")).await;

    let consent = forge_from_listed_keys(
        &p.auth,
        TokenKind::Consent,
        &claims(&app_id, "victim", &[Scope::UserInfo]),
    )
    .await;
    let err = p.open_user_info(&consent).await.unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAccessToken);

    let access = forge_from_listed_keys(
        &p.auth,
        TokenKind::Access,
        &claims(&app_id, "victim", &[Scope::AuthBase, Scope::PhoneNumber]),
    )
    .await;
    let introspected = p
        .auth
        .backend(&app_id, &secret)
        .introspect_token(pb::IntrospectTokenRequest {
            token: access.clone(),
        })
        .await
        .expect("introspect")
        .into_inner();
    assert!(!introspected.active);
    assert!(introspected.user_id.is_empty());
    let err = p
        .userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: access,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            reason(&err),
            ErrorReason::InvalidAccessToken | ErrorReason::InvalidAuthRelations
        ),
        "{err:?}"
    );

    // A real token of another deployment (its own keys) for the same app id and user.
    let other = Platform::start().await;
    let (other_app, _) = other.app(&ALL_FEATURES).await;
    let foreign = consent_token(&other.consent("victim", &other_app, &[UserInfo]).await);
    let err = p.open_user_info(&foreign).await.unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAccessToken);
}

/// Retiring a signing key (KeyAdminService) refuses its tokens at every verifier within a
/// second, while a fresh consent mints under its successor. Guards the heartbeat key list
/// (`TokenVerifier::retain_keys` in `apply_stream_message`): without it a verifier keeps the
/// retired key and its tokens pass.
#[tokio::test]
async fn a_retired_signing_key_is_refused_by_every_verifier_within_a_second() {
    let p = Platform::start().await;
    let second = TestUserInfoServer::start(p.auth.addr, &p.auth.config.callers.verifier).await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    for server in [&p.userinfo, &second] {
        server
            .profiles()
            .upsert_profile(upb::UpsertProfileRequest {
                profile: Some(demo_profile("u1")),
            })
            .await
            .expect("profile");
    }
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    let open = |server: &TestUserInfoServer, token: String| {
        let mut client = server.userinfo();
        async move {
            client
                .get_open_user_info(upb::GetOpenUserInfoRequest {
                    consent_token: token,
                })
                .await
        }
    };
    for server in [&p.userinfo, &second] {
        open(server, token.clone()).await.expect("accepted before");
    }
    let code = auth_code(&p.consent("u1", &app_id, &[AuthBase, PhoneNumber]).await);
    let pair = p
        .auth
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .expect("exchange")
        .into_inner();

    let kid = KeyRing::key_id_of(&token).expect("kid");
    let retired = p
        .auth
        .key_admin()
        .retire_signing_key(pb::RetireSigningKeyRequest {
            key_id: kid.clone(),
        })
        .await
        .expect("retire")
        .into_inner();
    let retired_at = Instant::now();
    assert_ne!(retired.current_key_id, kid);
    assert!(retired.keys.iter().all(|k| k.key_id != kid));

    let introspected = p
        .auth
        .backend(&app_id, &secret)
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone(),
        })
        .await
        .expect("introspect")
        .into_inner();
    assert!(!introspected.active, "auth-service refuses it at once");

    for server in [&p.userinfo, &second] {
        loop {
            match open(server, token.clone()).await {
                Err(e) if reason(&e) == ErrorReason::InvalidAccessToken => break,
                other => assert!(
                    retired_at.elapsed() < Duration::from_secs(1),
                    "still {other:?} 1 s after the retirement"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(retired_at.elapsed() < Duration::from_secs(1));

    let fresh = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    let fresh_kid = KeyRing::key_id_of(&fresh).expect("kid");
    assert_ne!(fresh_kid, kid);
    for server in [&p.userinfo, &second] {
        open(server, fresh.clone())
            .await
            .expect("the successor verifies");
    }
    let refreshed = p
        .auth
        .backend(&app_id, &secret)
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .expect("a refresh token outlives the key of its access token")
        .into_inner();
    p.userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: refreshed.access_token,
        })
        .await
        .expect("phone number under the successor key");
}

/// Two auth-service replicas on one database move from master key 1 to master key 2 by a
/// rolling restart (first with both keys, then with the new key alone): app user ids, live
/// consent and access tokens and refresh tokens keep working throughout, and a start with
/// only the old key is then refused by name. Guards `keys::adopt_master_key`.
#[tokio::test]
async fn a_rolling_master_key_rotation_keeps_ids_tokens_and_refresh_tokens() {
    let old = MasterKey::from_bytes(&[1; 32]).expect("key");
    let new = MasterKey::from_bytes(&[2; 32]).expect("key");
    let p = Platform::start_with(|a| a.master_key = old.clone(), |_| {}).await;
    let replica_b = TestAuthServer::start_config(p.auth.config.clone(), None).await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let consent = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    let exchange = |auth: &TestAuthServer, code: String| {
        let mut backend = auth.backend(&app_id, &secret);
        async move {
            backend
                .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
                .await
                .expect("exchange")
                .into_inner()
        }
    };
    let code = auth_code(&p.consent("u1", &app_id, &[AuthBase, PhoneNumber]).await);
    let first = exchange(&p.auth, code).await;

    // Replica A restarts with the new key and the previous one: everything is re-sealed.
    let Platform { auth, userinfo } = p;
    let replica_a = auth
        .pause()
        .await
        .restart_with(|a| {
            a.master_key = new.clone();
            a.previous_master_key = Some(old.clone());
        })
        .await;
    let p = Platform {
        auth: replica_a,
        userinfo,
    };
    // Replica B, not yet restarted, still mints and verifies with the keys it holds.
    let code = auth_code(&replica_b.consent("u1", &app_id, &[AuthBase]).await);
    assert_eq!(exchange(&replica_b, code).await.user_id, first.user_id);
    // Replica B restarts with the new key alone.
    let replica_b = replica_b
        .pause()
        .await
        .restart_with(|a| {
            a.master_key = new.clone();
            a.previous_master_key = None;
        })
        .await;

    let code = auth_code(&replica_b.consent("u1", &app_id, &[AuthBase]).await);
    assert_eq!(
        exchange(&replica_b, code).await.user_id,
        first.user_id,
        "app user ids survive the rotation"
    );
    p.open_user_info(&consent)
        .await
        .expect("a consent token minted before the rotation");
    for auth in [&p.auth, &replica_b] {
        let introspected = auth
            .backend(&app_id, &secret)
            .introspect_token(pb::IntrospectTokenRequest {
                token: first.access_token.clone(),
            })
            .await
            .expect("introspect")
            .into_inner();
        assert!(
            introspected.active,
            "an access token minted before the rotation"
        );
    }
    let refreshed = replica_b
        .backend(&app_id, &secret)
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: first.refresh_token,
        })
        .await
        .expect("a refresh token issued before the rotation")
        .into_inner();
    assert_eq!(refreshed.user_id, first.user_id);
    p.userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: refreshed.access_token,
        })
        .await
        .expect("phone number");

    // Only the old key: refused, and the message says what to do.
    let mut stale = p.auth.config.clone();
    stale.master_key = old;
    stale.previous_master_key = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        auth_service::serve_with_listener(stale, listener, std::future::pending()),
    )
    .await
    .expect("refused at start-up, not served");
    let message = refused.expect_err("the old master key alone").to_string();
    assert!(
        message.contains("MASTER_KEY_FILE") && message.contains("PREVIOUS_MASTER_KEY_FILE"),
        "{message}"
    );
}
