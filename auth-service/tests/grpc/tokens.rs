use std::time::Duration;

use auth_service::testing::TestAuthServer;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use tonic::Code;

use super::{
    ALL_FEATURES, app_with, auth_code, consent, consent_token, largest_while_calling, reason,
    request, revocation_log,
};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

async fn code_for(server: &TestAuthServer, user: &str, app_id: &str) -> String {
    auth_code(&consent(server, user, app_id, &[AuthBase, PhoneNumber]).await)
}

#[tokio::test]
async fn exchange_returns_tokens_and_an_app_scoped_user_id() {
    let server = TestAuthServer::start().await;
    let (app_a, secret_a) = app_with(&server, &ALL_FEATURES).await;
    let (app_b, secret_b) = app_with(&server, &ALL_FEATURES).await;
    let code_a = code_for(&server, "wallet-user-7", &app_a).await;
    let code_b = code_for(&server, "wallet-user-7", &app_b).await;
    let a = server
        .backend(&app_a, &secret_a)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code_a })
        .await
        .unwrap()
        .into_inner();
    let b = server
        .backend(&app_b, &secret_b)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code_b })
        .await
        .unwrap()
        .into_inner();
    assert!(a.access_token.starts_with("v4.public."));
    assert_eq!(a.refresh_token.len(), 43);
    assert_eq!(a.scopes, vec![AuthBase as i32, PhoneNumber as i32]);
    assert!(
        a.access_token_expire_time.unwrap().seconds < a.refresh_token_expire_time.unwrap().seconds
    );
    assert_ne!(a.user_id, b.user_id, "two apps can join their users");
    assert!(!a.user_id.contains("wallet-user-7"));
    let again = code_for(&server, "wallet-user-7", &app_a).await;
    let a2 = server
        .backend(&app_a, &secret_a)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: again })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.user_id, a2.user_id, "the app-scoped id is stable");
}

#[tokio::test]
async fn fifty_concurrent_exchanges_of_one_code_give_one_success_and_the_replay_revokes_it() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let code = code_for(&server, "u1", &app_id).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut backend = server.backend(&app_id, &secret);
        let code = code.clone();
        tasks.spawn(async move {
            backend
                .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
                .await
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(r) => winners.push(r.into_inner()),
            Err(e) => assert_eq!(
                (e.code(), reason(&e)),
                (Code::FailedPrecondition, ErrorReason::UsedCode)
            ),
        }
    }
    assert_eq!(winners.len(), 1);
    let won = winners.pop().unwrap();
    let mut backend = server.backend(&app_id, &secret);
    let active = backend
        .introspect_token(pb::IntrospectTokenRequest {
            token: won.access_token,
        })
        .await
        .unwrap()
        .into_inner()
        .active;
    assert!(
        !active,
        "tokens issued from a replayed code must be revoked"
    );
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: won.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
}

#[tokio::test]
async fn an_expired_code_is_expired_code() {
    let server = TestAuthServer::start_with(|c| c.auth_code_ttl = Duration::from_millis(50)).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let code = code_for(&server, "u1", &app_id).await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    let err = server
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, ErrorReason::ExpiredCode)
    );
}

#[tokio::test]
async fn a_code_of_another_app_is_invalid_and_not_spent() {
    let server = TestAuthServer::start().await;
    let (app_a, secret_a) = app_with(&server, &ALL_FEATURES).await;
    let (app_b, secret_b) = app_with(&server, &ALL_FEATURES).await;
    let code = code_for(&server, "u1", &app_a).await;
    let err = server
        .backend(&app_b, &secret_b)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, ErrorReason::InvalidCode)
    );
    assert!(
        server
            .backend(&app_a, &secret_a)
            .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn garbage_codes_and_tokens_get_their_reasons() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let mut backend = server.backend(&app_id, &secret);
    for garbage in ["garbage", "v4.local.AAAA", &"A".repeat(43)] {
        let err = backend
            .exchange_auth_code(pb::ExchangeAuthCodeRequest {
                auth_code: garbage.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidCode);
        let err = backend
            .refresh_access_token(pb::RefreshAccessTokenRequest {
                refresh_token: garbage.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidRefreshToken);
        let r = backend
            .introspect_token(pb::IntrospectTokenRequest {
                token: garbage.into(),
            })
            .await
            .unwrap();
        assert!(!r.into_inner().active);
        backend
            .revoke_token(pb::RevokeTokenRequest {
                token: garbage.into(),
            })
            .await
            .unwrap();
    }
    let err = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: "x".repeat(1 << 15),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
    let err = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let mut backend = server.backend(&app_id, &secret);
    let first = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code_for(&server, "u1", &app_id).await,
        })
        .await
        .unwrap()
        .into_inner();
    let second = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.user_id, first.user_id);
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: first.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, ErrorReason::UsedRefreshToken)
    );
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        ErrorReason::InvalidAuthRelations,
        "the successor dies with its family"
    );
    for token in [first.access_token, second.access_token] {
        let active = backend
            .introspect_token(pb::IntrospectTokenRequest { token })
            .await
            .unwrap()
            .into_inner()
            .active;
        assert!(!active);
    }
}

#[tokio::test]
async fn an_expired_refresh_token_is_expired_refresh_token() {
    let server =
        TestAuthServer::start_with(|c| c.refresh_token_ttl = Duration::from_millis(50)).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let mut backend = server.backend(&app_id, &secret);
    let pair = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code_for(&server, "u1", &app_id).await,
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::ExpiredRefreshToken);
}

#[tokio::test]
async fn revoke_and_introspect_work_on_the_apps_own_tokens_only() {
    let server = TestAuthServer::start().await;
    let (app_a, secret_a) = app_with(&server, &ALL_FEATURES).await;
    let (app_b, secret_b) = app_with(&server, &ALL_FEATURES).await;
    let mut a = server.backend(&app_a, &secret_a);
    let mut b = server.backend(&app_b, &secret_b);
    let pair = a
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code_for(&server, "u1", &app_a).await,
        })
        .await
        .unwrap()
        .into_inner();
    let seen_by_a = a
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(seen_by_a.active);
    assert_eq!(seen_by_a.token_type, pb::TokenType::Access as i32);
    assert_eq!(seen_by_a.user_id, pair.user_id);
    assert_eq!(seen_by_a.app_id, app_a);
    let seen_by_b = b
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen_by_b,
        pb::IntrospectTokenResponse::default(),
        "another app learns nothing"
    );
    b.revoke_token(pb::RevokeTokenRequest {
        token: pair.access_token.clone(),
    })
    .await
    .unwrap();
    assert!(
        a.introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .active
    );
    a.revoke_token(pb::RevokeTokenRequest {
        token: pair.access_token.clone(),
    })
    .await
    .unwrap();
    assert!(
        !a.introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token
        })
        .await
        .unwrap()
        .into_inner()
        .active
    );
    let refresh = a
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(refresh.active);
    assert_eq!(refresh.token_type, pb::TokenType::Refresh as i32);
    a.revoke_token(pb::RevokeTokenRequest {
        token: pair.refresh_token.clone(),
    })
    .await
    .unwrap();
    assert!(
        !a.introspect_token(pb::IntrospectTokenRequest {
            token: pair.refresh_token
        })
        .await
        .unwrap()
        .into_inner()
        .active
    );
}

#[tokio::test]
async fn disabling_a_feature_voids_the_tokens_that_rely_on_it() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let mut backend = server.backend(&app_id, &secret);
    consent(&server, "u1", &app_id, &[UserInfo]).await;
    let pair = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code_for(&server, "u1", &app_id).await,
        })
        .await
        .unwrap()
        .into_inner();
    server
        .admin()
        .disable_feature(pb::DisableFeatureRequest {
            app_id: app_id.clone(),
            feature: pb::Feature::PhoneNumber as i32,
        })
        .await
        .unwrap();
    assert!(!active(&backend, &pair.access_token).await);
    let rules = revocation_log(&server).await;
    assert!(!rules.is_empty());
    for rule in rules {
        assert!(
            rule.scopes.contains(&(PhoneNumber as i32))
                && !rule.scopes.contains(&(UserInfo as i32)),
            "userInfo does not rely on the phone feature, so {rule:?} must not void its consent token"
        );
    }
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
}

#[tokio::test]
async fn a_code_issued_before_a_withdrawal_is_void_even_after_consent_is_given_again() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let old_code = code_for(&server, "u1", &app_id).await;
    server.withdraw("u1", &app_id, &[]).await;
    let new_code = code_for(&server, "u1", &app_id).await;
    let mut backend = server.backend(&app_id, &secret);
    let err = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: old_code,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidCode);
    backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: new_code,
        })
        .await
        .expect("the code of the new consent works");
}

/// Guards `TokenIssuer::introspect` opening access tokens only: an app with just the
/// basic-info feature must not get a stable user id (nor a token id or issue time to link
/// calls) by introspecting its consent tokens. The app-scoped id comes only with a code.
#[tokio::test]
async fn a_consent_token_introspects_as_inactive_and_reveals_no_user_id() {
    let server = TestAuthServer::start().await;
    for features in [&[pb::Feature::BasicUserInfo][..], &ALL_FEATURES[..]] {
        let (app_id, secret) = app_with(&server, features).await;
        let token = consent_token(&consent(&server, "u1", &app_id, &[UserInfo]).await);
        let described = server
            .backend(&app_id, &secret)
            .introspect_token(pb::IntrospectTokenRequest { token })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            described,
            pb::IntrospectTokenResponse::default(),
            "features {features:?}"
        );
    }
}

/// Guards the per-app quota of rules (`REVOCATION_QUOTA_PER_APP`, checked in
/// `TokenIssuer::revoke` after its check for a held rule, and in `revoke_grant`): beyond it
/// RevokeToken of an access token is refused with REQUEST_TRAFFIC_EXCEED_LIMIT and the token
/// stays active (the caller knows; nothing is dropped silently). Revoking a token again is
/// still answered; a refresh token's family is still revoked (its refresh tokens refused), but
/// without a rule its access tokens run out on their own; other apps are unaffected.
#[tokio::test]
async fn revoke_token_beyond_the_app_quota_is_refused_and_the_token_stays_active() {
    let (server, backend, pairs) = three_grants_under_a_quota_of_two().await;
    revoke_token(&backend, &pairs[0].access_token)
        .await
        .unwrap();
    revoke_token(&backend, &pairs[1].access_token)
        .await
        .unwrap();
    let refused = revoke_token(&backend, &pairs[2].access_token)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused)),
        (
            Code::ResourceExhausted,
            ErrorReason::RequestTrafficExceedLimit
        )
    );
    assert!(
        active(&backend, &pairs[2].access_token).await,
        "nothing was written"
    );
    revoke_token(&backend, &pairs[0].access_token)
        .await
        .expect("a token already revoked is not refused");
    revoke_token(&backend, &pairs[2].refresh_token)
        .await
        .expect("a family revocation is never refused");
    let err = (backend.clone())
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pairs[2].refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
    assert!(
        active(&backend, &pairs[2].access_token).await,
        "past the quota no family rule is written"
    );

    let (other_app, other_secret) = app_with(&server, &ALL_FEATURES).await;
    let mut other = server.backend(&other_app, &other_secret);
    let pair = other
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code_for(&server, "u1", &other_app).await,
        })
        .await
        .unwrap()
        .into_inner();
    other
        .revoke_token(pb::RevokeTokenRequest {
            token: pair.access_token,
        })
        .await
        .expect("the quota is per app");
}

/// Guards the count of family rules against the app's quota (`counted` in the SQL store's
/// `append`): an app that revokes refresh tokens fills its quota as one revoking access tokens
/// does, so replayed codes and revoked families cannot grow the rules every verifier holds
/// without bound.
#[tokio::test]
async fn revoked_families_count_against_the_app_quota() {
    let (_server, backend, pairs) = three_grants_under_a_quota_of_two().await;
    revoke_token(&backend, &pairs[0].refresh_token)
        .await
        .unwrap();
    revoke_token(&backend, &pairs[1].access_token)
        .await
        .unwrap();
    let refused = revoke_token(&backend, &pairs[2].access_token)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), ErrorReason::RequestTrafficExceedLimit);
}

/// A server whose apps may hold two revocation rules, an app of it, its backend's client, and
/// the tokens of three users' exchanged codes.
async fn three_grants_under_a_quota_of_two()
-> (TestAuthServer, Backend, Vec<pb::ExchangeAuthCodeResponse>) {
    let server = TestAuthServer::start_with(|c| c.revocation_quota_per_app = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let mut backend = server.backend(&app_id, &secret);
    let mut pairs = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let auth_code = code_for(&server, user, &app_id).await;
        let exchanged = backend
            .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code })
            .await;
        pairs.push(exchanged.unwrap().into_inner());
    }
    (server, backend, pairs)
}

/// RevokeToken of `token` by `backend`.
async fn revoke_token(backend: &Backend, token: &str) -> Result<(), tonic::Status> {
    let request = pb::RevokeTokenRequest {
        token: token.to_owned(),
    };
    backend.clone().revoke_token(request).await.map(drop)
}

/// Guards the refresh bound in `TokenIssuer::refresh` (`old.generation` against
/// `GrantBounds::refreshes`): a grant refreshed MAX_REFRESHES_PER_GRANT times answers
/// EXPIRED_REFRESH_TOKEN, and the token stays unspent (asked again, the same answer, not a
/// reuse that would revoke the grant), and introspects as inactive
/// (`GrantBounds::refreshes_after` in `introspect`); a new authorization starts a new grant.
#[tokio::test]
async fn a_grant_refreshed_its_maximum_times_must_be_authorized_again() {
    let server = TestAuthServer::start_with(|c| c.grant_bounds.refreshes = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let mut refresh_token = exchange(&server, &backend, "u1", &app_id).await;
    for _ in 0..2 {
        refresh_token = refresh(&backend, refresh_token).await.unwrap();
    }
    assert!(
        !active(&backend, &refresh_token).await,
        "a token that cannot refresh"
    );
    for _ in 0..2 {
        let refused = refresh(&backend, refresh_token.clone()).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused)),
            (Code::FailedPrecondition, ErrorReason::ExpiredRefreshToken)
        );
    }
    let fresh = exchange(&server, &backend, "u1", &app_id).await;
    assert!(active(&backend, &fresh).await);
    assert!(
        refresh(&backend, fresh).await.is_ok(),
        "a new grant refreshes"
    );
}

/// Guards the forgetting in `TokenIssuer::issue` (`forget_spent_refresh_token`, of the
/// generation `GrantBounds::spent_forgotten_at` names): with SPENT_REFRESH_TOKENS_KEPT at 2, a
/// grant rotated three times has forgotten its first refresh token, whose replay is then
/// unknown (INVALID_REFRESH_TOKEN) and leaves the grant alive, while a replay of the oldest
/// kept spent token is still a reuse that revokes the grant.
#[tokio::test]
async fn a_grant_keeps_only_its_latest_spent_refresh_tokens() {
    let server = TestAuthServer::start_with(|c| c.grant_bounds.spent_kept = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let first = exchange(&server, &backend, "u1", &app_id).await;
    let mut rotated = vec![first];
    for _ in 0..3 {
        let next = refresh(&backend, rotated[rotated.len() - 1].clone()).await;
        rotated.push(next.unwrap());
    }
    let forgotten = refresh(&backend, rotated[0].clone()).await.unwrap_err();
    assert_eq!(
        (forgotten.code(), reason(&forgotten)),
        (Code::InvalidArgument, ErrorReason::InvalidRefreshToken)
    );
    assert!(
        active(&backend, &rotated[3]).await,
        "a forgotten token's replay leaves the grant"
    );
    let reused = refresh(&backend, rotated[1].clone()).await.unwrap_err();
    assert_eq!(
        (reused.code(), reason(&reused)),
        (Code::FailedPrecondition, ErrorReason::UsedRefreshToken)
    );
    assert!(
        !active(&backend, &rotated[3]).await,
        "a kept one's reuse revokes it"
    );
}

/// Guards the eviction in `TokenIssuer::issue` (`evict_grants_beyond` for a new grant): with
/// MAX_GRANTS_PER_USER at 2, a third exchanged code for the same user and app evicts the grant
/// refreshed least recently (its refresh token is unknown from then on), and leaves the other
/// two, and another user's grant, as they were.
#[tokio::test]
async fn a_users_grants_beyond_the_bound_evict_the_least_recently_refreshed() {
    let server = TestAuthServer::start_with(|c| c.grant_bounds.per_user = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let oldest = exchange(&server, &backend, "u1", &app_id).await;
    let other_user = exchange(&server, &backend, "u2", &app_id).await;
    let second = exchange(&server, &backend, "u1", &app_id).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let oldest = refresh(&backend, oldest).await.unwrap();
    let third = exchange(&server, &backend, "u1", &app_id).await;
    let evicted = refresh(&backend, second).await.unwrap_err();
    assert_eq!(
        (evicted.code(), reason(&evicted)),
        (Code::InvalidArgument, ErrorReason::InvalidRefreshToken)
    );
    for kept in [oldest, third, other_user] {
        assert!(refresh(&backend, kept).await.is_ok());
    }
}

/// Guards the eviction in `ConsentFlow::grant` (`evict_unspent_codes_beyond`): with
/// MAX_OPEN_CODES_PER_USER at 2, a third code for the same user and app, none exchanged,
/// deletes the first (INVALID_CODE from then on) and leaves the two issued last, and another
/// user's code, good.
#[tokio::test]
async fn a_users_unexchanged_codes_beyond_the_bound_are_deleted_oldest_first() {
    let server = TestAuthServer::start_with(|c| c.pending_bounds.codes_per_user = 2).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let mut codes = Vec::new();
    for user in ["u1", "u2", "u1", "u1"] {
        codes.push(code_for(&server, user, &app_id).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let [first, other_user, second, third] = <[String; 4]>::try_from(codes).unwrap();
    let exchange = |auth_code: String| {
        let request = pb::ExchangeAuthCodeRequest { auth_code };
        let mut backend = backend.clone();
        async move { backend.exchange_auth_code(request).await }
    };
    let evicted = exchange(first).await.unwrap_err();
    assert_eq!(
        (evicted.code(), reason(&evicted)),
        (Code::InvalidArgument, ErrorReason::InvalidCode)
    );
    for kept in [second, third, other_user] {
        assert!(exchange(kept).await.is_ok());
    }
}

/// Guards the key's turn in `Pools::begin_locked` (`LockTurns`), through which
/// `TokenIssuer::revoke` opens its transaction (`AuthStore::begin_holding_app_rules`): on
/// PostgreSQL, 64 concurrent RevokeToken calls of one app for 2 s wait for their turn in the
/// process, not each in a transaction that holds one of the pool's 16 connections while it
/// waits on the app's advisory lock; sampled from `pg_locks`, no transaction waits on that app's lock. Without the
/// turn, up to 15 did (and other apps' calls queued behind them for a connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_one_apps_revocations_wait_for_their_turn_outside_the_pool() {
    let url = sql_backend::testing::fresh_schema_url("revoke_turns").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let token = consent_token(&consent(&server, "u1", &app_id, &[UserInfo]).await);
    let backend = server.backend(&app_id, &secret);
    // Waiting advisory locks of the quota's class ("quot"), most on one key.
    let waiting = "SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n
                   FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND classid = 1903521652 GROUP BY objid) w";
    let revoke = move || {
        let (mut backend, token) = (backend.clone(), token.clone());
        async move {
            let request = pb::RevokeTokenRequest { token };
            backend.revoke_token(request).await.unwrap();
        }
    };
    let most = largest_while_calling(revoke, waiting).await;
    assert!(
        most <= 1,
        "{most} of the app's transactions waited on its lock at once"
    );
}

/// Guards the turns in `Pools::begin_in_turn` through which `TokenIssuer::refresh` (the
/// secret's, `AuthStore::begin_spending`) and `TokenIssuer::exchange` (the code's (user, app)
/// pair's, `AuthStore::begin_holding_pending`) open their transactions: on PostgreSQL, 64
/// concurrent calls spending one code, then one refresh token, for 2 s each (a retry storm, or
/// a replay) wait for their turn in the process, not each in a transaction that holds one of
/// the pool's 16 connections while it waits on the secret's row lock; sampled from
/// `pg_locks`, at most one transaction waits on a row at once. Without the turn, 7 exchanges
/// and 15 refreshes did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_spends_of_one_secret_wait_for_their_turn_outside_the_pool() {
    let url = sql_backend::testing::fresh_schema_url("spend_turns").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let code = code_for(&server, "u1", &app_id).await;
    let most = most_waiting_on_a_row(&backend, Spend::Code(code)).await;
    assert!(most <= 1, "{most} exchanges waited on a row lock at once");
    let refresh_token = exchange(&server, &backend, "u2", &app_id).await;
    let most = most_waiting_on_a_row(&backend, Spend::Refresh(refresh_token)).await;
    assert!(most <= 1, "{most} refreshes waited on a row lock at once");
}

/// Guards the pair's turn and lock that `TokenIssuer::exchange` takes before it spends, as a
/// withdrawal (`ConsentFlow::withdraw`) and an erasure (`hold_pending` in
/// `PrivacyRecords::erase`) take them before they hold the authorization: on PostgreSQL, a
/// user's first exchange for an app and the withdrawal (or the erasure) of that user, sent at
/// the same instant for 40 users, never end in a deadlock (INTERNAL). Before, the withdrawal
/// held the authorization and waited on the code being spent, while the exchange waited on
/// the authorization to record the app-scoped id it gave: the first user already deadlocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_an_exchange_and_a_withdrawal_or_erasure_at_once_never_deadlock() {
    let url = sql_backend::testing::fresh_schema_url("exchange_withdraw").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    for n in 0..40 {
        let user_id = format!("u{n}");
        let auth_code = code_for(&server, &user_id, &app_id).await;
        let mut backend = backend.clone();
        let exchange = backend.exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code });
        let mut wallet = server.wallet();
        let app_id = app_id.clone();
        let ended = async move {
            if n % 2 == 0 {
                let request = pb::RevokeAuthorizationRequest {
                    user_id,
                    app_id,
                    scopes: Vec::new(),
                };
                wallet.revoke_authorization(request).await.map(drop)
            } else {
                let request = pb::EraseUserAuthorizationsRequest { user_id };
                wallet.erase_user_authorizations(request).await.map(drop)
            }
        };
        let (exchanged, ended) = tokio::join!(exchange, ended);
        for status in [exchanged.err(), ended.err()].into_iter().flatten() {
            assert_ne!(status.code(), Code::Internal, "user {n}: {status:?}");
        }
    }
}

/// Guards the order in `AppRegistry::disable_feature`: it takes the authorizations it
/// withdraws before the refresh tokens it revokes, as a withdrawal does. On PostgreSQL, a
/// switch-off held up on one user's authorization (held here by another connection) and that
/// user's withdrawal both end without a deadlock (INTERNAL). Before, the switch-off held every
/// refresh token of the app while it waited, the withdrawal held its authorization and waited
/// on its tokens, and the switch-off then waited on that authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_a_feature_switch_off_and_a_withdrawal_at_once_never_deadlock() {
    let url = sql_backend::testing::fresh_schema_url("switch_off_withdraw").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url.clone()).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let mut backend = server.backend(&app_id, &secret);
    for user in ["u0", "u1"] {
        let auth_code = code_for(&server, user, &app_id).await;
        let request = pb::ExchangeAuthCodeRequest { auth_code };
        backend.exchange_auth_code(request).await.unwrap();
    }
    let holder = RowsHeld::take(&url, "SELECT 1 FROM authorizations WHERE user_id = 'u0'").await;
    let switch_off = tokio::spawn({
        let mut admin = server.admin();
        let request = pb::DisableFeatureRequest {
            app_id: app_id.clone(),
            feature: pb::Feature::PhoneNumber as i32,
        };
        async move { admin.disable_feature(request).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let withdrawal = tokio::spawn({
        let mut wallet = server.wallet();
        let request = pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id: app_id.clone(),
            scopes: vec![PhoneNumber as i32],
        };
        async move { wallet.revoke_authorization(request).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.let_go().await;
    for (what, call) in [("switch-off", switch_off), ("withdrawal", withdrawal)] {
        let ended = tokio::time::timeout(Duration::from_secs(10), call).await;
        let ended = ended.unwrap_or_else(|_| panic!("the {what} ends within 10 s"));
        ended
            .unwrap()
            .unwrap_or_else(|s| panic!("the {what}: {s:?}"));
    }
}

/// Guards the app's features that `ConsentFlow::resolve` shares before it reads them
/// (`hold_features_shared`) and a switch-off holds (`begin_switching_features`): on
/// PostgreSQL, an Allow of the phone number running while the feature is switched off (held up
/// here on its prompt after it read the features) keeps nothing of it: after the switch back on
/// the user is asked again. An Allow that comes while the switch-off waits for the first waits
/// behind it, and is refused. Before, an Allow read the features before its transaction, the
/// switch-off committed meanwhile without seeing the grant about to be written, and that
/// consent came back with the feature, without a modal; and with the app row read `FOR SHARE`
/// instead, each later Allow went ahead of the waiting switch-off, so a stream of them could
/// keep it waiting for as long as it lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_an_allow_racing_a_feature_switch_off_grants_nothing_that_outlives_it() {
    let url = sql_backend::testing::fresh_schema_url("allow_switch_off").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url.clone()).await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let ask = |user| request(&server, user, &app_id, &[PhoneNumber], pb::Trigger::UserTap);
    let mut prompts = Vec::new();
    for user in ["u1", "u2"] {
        let Ok(pb::request_authorization_response::Result::Prompt(p)) = ask(user).await else {
            panic!("the phone number is asked for");
        };
        prompts.push(p.prompt_id);
    }
    let holder = RowsHeld::take(&url, "SELECT 1 FROM prompts WHERE user_id = 'u1'").await;
    let first = tokio::spawn(allow(&server, "u1", prompts[0].clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let feature = pb::Feature::PhoneNumber as i32;
    let switch_off = tokio::spawn({
        let mut admin = server.admin();
        let request = pb::DisableFeatureRequest {
            app_id: app_id.clone(),
            feature,
        };
        async move { admin.disable_feature(request).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = tokio::spawn(allow(&server, "u2", prompts[1].clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.let_go().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), switch_off).await;
    let switched = ended.expect("the switch-off ends within 10 s").unwrap();
    switched.expect("the switch-off");
    let ended = tokio::time::timeout(Duration::from_secs(10), first).await;
    if let Err(refused) = ended.expect("the first answer ends within 10 s").unwrap() {
        let refused_for = reason(&refused);
        assert_eq!(
            refused_for,
            ErrorReason::InsufficientIsvPermissions,
            "{refused:?}"
        );
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), later).await;
    let answered = ended.expect("the later answer ends within 10 s").unwrap();
    let refused = answered.expect_err("the later answer waited for the switch-off");
    assert_eq!(reason(&refused), ErrorReason::InsufficientIsvPermissions);
    let request = pb::EnableFeatureRequest {
        app_id: app_id.clone(),
        feature,
    };
    server.admin().enable_feature(request).await.unwrap();
    for user in ["u1", "u2"] {
        let asked = ask(user).await;
        let Ok(pb::request_authorization_response::Result::Prompt(_)) = asked else {
            panic!("{user} asked again after the switch-on: {asked:?}");
        };
    }
}

/// Rows of a PostgreSQL test's schema held `FOR UPDATE` by a connection of the test's own, so
/// the service's transactions that want them wait where the test wants them to.
struct RowsHeld(sqlx::PgPool, sqlx::Transaction<'static, sqlx::Postgres>);

impl RowsHeld {
    async fn take(url: &str, select: &str) -> RowsHeld {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let mut tx = pool.begin().await.expect("begin");
        let held = sqlx::query(sqlx::AssertSqlSafe(format!("{select} FOR UPDATE")));
        held.execute(&mut *tx).await.expect("hold the rows");
        RowsHeld(pool, tx)
    }

    async fn let_go(self) {
        self.1.rollback().await.expect("let go");
        self.0.close().await;
    }
}

/// Ends `call` within 10 s with anything but INTERNAL (a deadlock PostgreSQL broke).
async fn ends_without_internal(
    what: &str,
    call: tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let ended = tokio::time::timeout(Duration::from_secs(10), call).await;
    let ended = ended.unwrap_or_else(|_| panic!("the {what} ends within 10 s"));
    if let Err(status) = ended.unwrap() {
        assert_ne!(status.code(), Code::Internal, "the {what}: {status:?}");
    }
}

/// Guards the pair's turn and lock `ConsentFlow::resolve` takes before it takes the prompt:
/// on PostgreSQL, a user answering a modal while the same user is erased ends either way
/// without a deadlock (INTERNAL). Before, the answer held the prompt and waited on the
/// authorization the erasure held, and the erasure then waited on the prompt to delete it.
/// The erasure is held up here on the user's other authorization (app ids in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_an_answer_and_an_erasure_at_once_never_deadlock() {
    let url = sql_backend::testing::fresh_schema_url("answer_erase").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url.clone()).await;
    let mut apps = [
        app_with(&server, &ALL_FEATURES).await.0,
        app_with(&server, &ALL_FEATURES).await.0,
    ];
    apps.sort();
    for app_id in &apps {
        consent(&server, "u1", app_id, &[AuthBase]).await;
    }
    let asked = request(
        &server,
        "u1",
        &apps[0],
        &[PhoneNumber],
        pb::Trigger::UserTap,
    )
    .await;
    let Ok(pb::request_authorization_response::Result::Prompt(prompt)) = asked else {
        panic!("the phone number is asked for: {asked:?}");
    };
    let held = format!("SELECT 1 FROM authorizations WHERE app_id = '{}'", apps[1]);
    let holder = RowsHeld::take(&url, &held).await;
    let erasure = tokio::spawn(erase(&server, "u1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = tokio::spawn(allow(&server, "u1", prompt.prompt_id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.let_go().await;
    ends_without_internal("erasure", erasure).await;
    ends_without_internal("answer", answer).await;
}

/// The user's Allow of prompt `prompt_id`, as a future of its own.
fn allow(
    server: &TestAuthServer,
    user_id: &str,
    prompt_id: String,
) -> impl std::future::Future<Output = Result<(), tonic::Status>> + use<> {
    let mut wallet = server.wallet();
    let request = pb::ResolvePromptRequest {
        prompt_id,
        user_id: user_id.into(),
        decision: pb::Decision::Allow as i32,
    };
    async move { wallet.resolve_prompt(request).await.map(drop) }
}

/// Guards the order in `ConsentFlow::resolve`: it holds the authorization before it takes
/// the prompt, as an erasure deletes them. On PostgreSQL, an erasure that listed the user's
/// apps before the user's authorization for another app was made (so it does not hold that
/// pair's lock) and an answer to a modal of that app end without a deadlock (INTERNAL).
/// Before, the answer held the prompt and waited on the authorization the erasure had just
/// deleted, and the erasure then waited on the prompt. The erasure is held up first on the pair
/// lock a withdrawal holds (the withdrawal held up on a refresh token held here), then on the
/// new authorization (held here too), so it queues for that row before the answer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_an_answer_and_an_erasure_that_did_not_list_its_app_never_deadlock() {
    let url = sql_backend::testing::fresh_schema_url("answer_unlisted").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url.clone()).await;
    let (listed, secret) = app_with(&server, &ALL_FEATURES).await;
    let (unlisted, _) = app_with(&server, &ALL_FEATURES).await;
    let auth_code = code_for(&server, "u1", &listed).await;
    let exchange = pb::ExchangeAuthCodeRequest { auth_code };
    let backend = server.backend(&listed, &secret);
    backend.clone().exchange_auth_code(exchange).await.unwrap();
    let token = RowsHeld::take(&url, "SELECT 1 FROM refresh_tokens WHERE user_id = 'u1'").await;
    let withdrawal = tokio::spawn({
        let mut wallet = server.wallet();
        let request = pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id: listed.clone(),
            scopes: vec![PhoneNumber as i32],
        };
        async move { wallet.revoke_authorization(request).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let erasure = tokio::spawn(erase(&server, "u1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    consent(&server, "u1", &unlisted, &[AuthBase]).await;
    let asked = request(
        &server,
        "u1",
        &unlisted,
        &[PhoneNumber],
        pb::Trigger::UserTap,
    )
    .await;
    let Ok(pb::request_authorization_response::Result::Prompt(prompt)) = asked else {
        panic!("the phone number is asked for: {asked:?}");
    };
    let held = format!("SELECT 1 FROM authorizations WHERE app_id = '{unlisted}'");
    let authorization = RowsHeld::take(&url, &held).await;
    token.let_go().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = tokio::spawn(allow(&server, "u1", prompt.prompt_id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    authorization.let_go().await;
    ends_without_internal("withdrawal", withdrawal).await;
    ends_without_internal("erasure", erasure).await;
    ends_without_internal("answer", answer).await;
}

/// EraseUserAuthorizations of `user_id`, as a future of its own.
fn erase(
    server: &TestAuthServer,
    user_id: &str,
) -> impl std::future::Future<Output = Result<(), tonic::Status>> + use<> {
    let mut wallet = server.wallet();
    let request = pb::EraseUserAuthorizationsRequest {
        user_id: user_id.into(),
    };
    async move { wallet.erase_user_authorizations(request).await.map(drop) }
}

/// Guards the order in `PrivacyRecords::erase`: it deletes the user's rows before it appends
/// to the revocation log, as a family revocation takes its code and tokens before it. On
/// PostgreSQL, an app revoking a refresh token of a user who is being erased ends without a
/// deadlock (INTERNAL). Before, the revocation held the family's code and tokens and waited
/// for the log, while the erasure held the log and waited on the code. The family's code is
/// held here until both wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_a_family_revocation_and_an_erasure_at_once_never_deadlock() {
    let url = sql_backend::testing::fresh_schema_url("revoke_erase").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url.clone()).await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let auth_code = code_for(&server, "u1", &app_id).await;
    let pair = backend
        .clone()
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code })
        .await
        .unwrap()
        .into_inner();
    let holder = RowsHeld::take(&url, "SELECT 1 FROM auth_codes WHERE user_id = 'u1'").await;
    let revocation = tokio::spawn(async move { revoke_token(&backend, &pair.refresh_token).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let erasure = tokio::spawn(erase(&server, "u1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.let_go().await;
    ends_without_internal("revocation", revocation).await;
    ends_without_internal("erasure", erasure).await;
}

/// Guards the same pair lock in `TokenIssuer::exchange`, for the eviction it runs: on
/// PostgreSQL, with MAX_GRANTS_PER_USER at 2, eight codes of one user exchanged at once leave
/// two grants whose refresh tokens work, not one per exchange that read the others' rows
/// before they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_exchanges_at_once_keep_the_grant_bound() {
    let url = sql_backend::testing::fresh_schema_url("exchanges_at_once").await;
    let server = TestAuthServer::start_with(|c| {
        c.database_url = url;
        c.grant_bounds.per_user = 2;
    })
    .await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let backend = server.backend(&app_id, &secret);
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(code_for(&server, "u1", &app_id).await);
    }
    let exchanges = codes.into_iter().map(|auth_code| {
        let mut backend = backend.clone();
        async move {
            let request = pb::ExchangeAuthCodeRequest { auth_code };
            backend
                .exchange_auth_code(request)
                .await
                .unwrap()
                .into_inner()
                .refresh_token
        }
    });
    let refresh_tokens = futures::future::join_all(exchanges).await;
    let mut live = 0;
    for token in refresh_tokens {
        live += usize::from(refresh(&backend, token).await.is_ok());
    }
    assert_eq!(live, 2, "grants left of one user for one app");
}

/// A secret spent over and over.
#[derive(Clone)]
enum Spend {
    Code(String),
    Refresh(String),
}

/// 64 callers spend `spend` over and over for 2 s (any answer but UNAVAILABLE is expected):
/// the most PostgreSQL transactions that waited on a row lock at once meanwhile.
async fn most_waiting_on_a_row(backend: &Backend, spend: Spend) -> i64 {
    // A row lock is waited on as the holder's transaction id, or as the tuple.
    let waiting = "SELECT COUNT(*) FROM pg_locks
                   WHERE NOT granted AND locktype IN ('transactionid', 'tuple')";
    let backend = backend.clone();
    let call = move || {
        let (mut backend, spend) = (backend.clone(), spend.clone());
        async move {
            let answer = match spend {
                Spend::Code(auth_code) => {
                    let request = pb::ExchangeAuthCodeRequest { auth_code };
                    backend.exchange_auth_code(request).await.map(drop)
                }
                Spend::Refresh(token) => refresh(&backend, token).await.map(drop),
            };
            if let Err(status) = answer {
                assert_ne!(status.code(), Code::Unavailable, "{status:?}");
            }
        }
    };
    largest_while_calling(call, waiting).await
}

type Backend = pb::token_service_client::TokenServiceClient<auth_service::testing::Authed>;

/// A fresh code of `user` for `app_id`, exchanged by `backend`: the new grant's refresh token.
async fn exchange(server: &TestAuthServer, backend: &Backend, user: &str, app_id: &str) -> String {
    let auth_code = code_for(server, user, app_id).await;
    let request = pb::ExchangeAuthCodeRequest { auth_code };
    let exchanged = backend.clone().exchange_auth_code(request).await;
    exchanged.unwrap().into_inner().refresh_token
}

/// Whether IntrospectToken by `backend` finds `token` active.
async fn active(backend: &Backend, token: &str) -> bool {
    let request = pb::IntrospectTokenRequest {
        token: token.to_owned(),
    };
    let answer = backend.clone().introspect_token(request).await.unwrap();
    answer.into_inner().active
}

/// RefreshAccessToken of `refresh_token` by `backend`: the next refresh token.
async fn refresh(backend: &Backend, refresh_token: String) -> Result<String, tonic::Status> {
    let request = pb::RefreshAccessTokenRequest { refresh_token };
    let refreshed = backend.clone().refresh_access_token(request).await?;
    Ok(refreshed.into_inner().refresh_token)
}
