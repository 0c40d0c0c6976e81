use std::time::{Duration, Instant};

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use miniprogram_token::KeyRing;
use tonic::Code;

use super::link_proxy::LinkProxy;
use super::{ALL_FEATURES, Platform, consent_token, demo_profile, reason};

use pb::Scope::UserInfo;

#[tokio::test]
async fn an_expired_consent_token_is_expired_access_token() {
    let p =
        Platform::start_with(|a| a.consent_token_ttl = Duration::from_millis(300), |_| {}).await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let err = p.open_user_info(&token).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::Unauthenticated, ErrorReason::ExpiredAccessToken)
    );
}

#[tokio::test]
async fn a_stale_revocation_stream_fails_closed_and_recovers_when_auth_service_returns() {
    let p = Platform::start_with(
        |_| {},
        |u| u.revocation_stale_after = Duration::from_millis(700),
    )
    .await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&token).await.unwrap();
    let Platform { auth, userinfo } = p;
    let stopped = auth.pause().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let open = |token: String| {
        let mut client = userinfo.userinfo();
        async move {
            client
                .get_open_user_info(upb::GetOpenUserInfoRequest {
                    consent_token: token,
                })
                .await
        }
    };
    let err = open(token.clone()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::Unavailable, ErrorReason::RevocationStateStale)
    );
    let _auth = stopped.restart().await;
    let started = Instant::now();
    loop {
        match open(token.clone()).await {
            Ok(_) => break,
            Err(e)
                if reason(&e) == ErrorReason::RevocationStateStale
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("did not recover: {e:?}"),
        }
    }
}

#[tokio::test]
async fn tokens_under_a_rotated_key_are_accepted_after_a_key_refetch() {
    let p = Platform::start_with(|a| a.key_rotation_period = Duration::from_secs(1), |_| {}).await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let first = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    p.open_user_info(&first).await.unwrap();
    let first_kid = KeyRing::key_id_of(&first).unwrap();
    let started = Instant::now();
    let rotated = loop {
        // auth-service rotates on a background tick at least 1 s apart, or when keys are
        // listed. With a 1 s period the tick can land just after the old key retired, so list
        // the keys first, as a verifier would; the next consent then finds a current key.
        p.auth
            .verifier()
            .list_token_keys(pb::ListTokenKeysRequest {})
            .await
            .unwrap();
        let token = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
        if KeyRing::key_id_of(&token).unwrap() != first_kid {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no key rotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    p.open_user_info(&rotated).await.unwrap();
    p.open_user_info(&first).await.unwrap();
}

/// Polls `open` up to 1 s until it is refused with INVALID_AUTH_RELATIONS.
async fn refused_within_a_second(p: &Platform, token: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match p.open_user_info(token).await {
            Err(e) if reason(&e) == ErrorReason::InvalidAuthRelations => return Ok(()),
            other if started.elapsed() >= Duration::from_secs(1) => {
                return Err(format!(
                    "still {:?} after 1 s",
                    other.map_err(|e| reason(&e))
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[tokio::test]
async fn revocations_made_before_and_after_an_auth_service_restart_both_reach_userinfo() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    p.profile(demo_profile("u2")).await;
    let token_a = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    let token_b = consent_token(&p.consent("u2", &app_id, &[UserInfo]).await);
    p.open_user_info(&token_a).await.unwrap();
    p.open_user_info(&token_b).await.unwrap();

    p.auth.withdraw("u1", &app_id, &[]).await;
    refused_within_a_second(&p, &token_a).await.unwrap();

    let Platform { auth, userinfo } = p;
    let auth = auth.pause().await.restart().await;
    let p = Platform { auth, userinfo };
    p.auth.withdraw("u2", &app_id, &[]).await;
    // The stream resumed after rule A's sequence: B arrives, and A is still held.
    refused_within_a_second(&p, &token_b).await.unwrap();
    refused_within_a_second(&p, &token_a).await.unwrap();
}

/// Copies (or, with `restore`, puts back) a stopped auth-service's SQLite files.
fn copy_database(database_url: &str, backup: &std::path::Path, restore: bool) {
    let db = std::path::PathBuf::from(database_url.trim_start_matches("sqlite://"));
    for suffix in ["", "-wal", "-shm"] {
        let live = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        let saved = backup.join(format!("auth.db{suffix}"));
        let (from, to) = if restore {
            (&saved, &live)
        } else {
            (&live, &saved)
        };
        let _ = std::fs::remove_file(to);
        if from.exists() {
            std::fs::copy(from, to).unwrap();
        }
    }
}

#[tokio::test]
async fn after_auth_service_is_restored_from_a_backup_new_revocations_still_reach_userinfo() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    let mut tokens = Vec::new();
    for user in ["u1", "u2", "u3"] {
        p.profile(demo_profile(user)).await;
        tokens.push(consent_token(&p.consent(user, &app_id, &[UserInfo]).await));
    }
    p.auth.withdraw("u1", &app_id, &[]).await;
    refused_within_a_second(&p, &tokens[0]).await.unwrap();

    let backup = tempfile::tempdir().unwrap();
    let Platform { auth, userinfo } = p;
    let stopped = auth.pause().await;
    copy_database(stopped.database_url(), backup.path(), false);
    let p = Platform {
        auth: stopped.restart().await,
        userinfo,
    };
    p.auth.withdraw("u2", &app_id, &[]).await;
    refused_within_a_second(&p, &tokens[1]).await.unwrap();

    // The operator restores the backup: the log goes back to before u2's withdrawal, and the
    // next rule reuses a sequence userinfo-service has already applied.
    let Platform { auth, userinfo } = p;
    let stopped = auth.pause().await;
    copy_database(stopped.database_url(), backup.path(), true);
    let p = Platform {
        auth: stopped.restart().await,
        userinfo,
    };
    p.auth.withdraw("u3", &app_id, &[]).await;
    refused_within_a_second(&p, &tokens[2])
        .await
        .expect("a revocation in the restored log was ignored");
    refused_within_a_second(&p, &tokens[1])
        .await
        .expect("rules already held stay, even from the timeline the backup lost");
}

/// A half-open cut between the services (a proxy that goes silent, no FIN, no RST): tokens
/// are accepted until the stale bound, measured on the monotonic clock from the last
/// heartbeat, then refused with REVOCATION_STATE_STALE and health NOT_SERVING. A withdrawal
/// made during the cut is honoured before anything is accepted again once the link heals.
/// After the heal both tokens are asked for in turn without pause: the withdrawn one is never
/// accepted, and once the live one is, the withdrawn one is refused as withdrawn. Guards
/// `TokenVerifier::is_stale` in `TokenVerifier::check` (seen failing with it removed: tokens
/// accepted 3 s into the cut).
#[tokio::test]
async fn a_cut_link_fails_closed_at_the_stale_bound_and_a_withdrawal_made_during_it_holds() {
    let stale_after = Duration::from_secs(1);
    let auth = auth_service::testing::TestAuthServer::start().await;
    let heartbeat = auth.config.revocation_heartbeat;
    let proxy = LinkProxy::start(auth.addr).await;
    let userinfo = userinfo_service::testing::TestUserInfoServer::start_with(
        proxy.addr,
        &auth.config.callers.verifier,
        |u| u.revocation_stale_after = stale_after,
    )
    .await;
    let p = Platform { auth, userinfo };
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    p.profile(demo_profile("u2")).await;
    let withdrawn = consent_token(&p.consent("u1", &app_id, &[UserInfo]).await);
    let live = consent_token(&p.consent("u2", &app_id, &[UserInfo]).await);
    p.open_user_info(&withdrawn).await.unwrap();
    p.open_user_info(&live).await.unwrap();

    proxy.cut();
    let cut_at = Instant::now();
    let refused_at = loop {
        match p.open_user_info(&live).await {
            Ok(_) => {}
            Err(e) if reason(&e) == ErrorReason::RevocationStateStale => break cut_at.elapsed(),
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            cut_at.elapsed() < stale_after * 3,
            "still accepting tokens {:?} into the cut",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused_at + heartbeat >= stale_after,
        "refused after {refused_at:?}: before the bound"
    );
    assert!(
        refused_at <= stale_after + Duration::from_millis(500),
        "refused only after {refused_at:?}"
    );
    // Health follows the verifier on a 50 ms watch.
    let refusing_since = Instant::now();
    while service_runtime::is_serving(p.userinfo.channel.clone(), "")
        .await
        .unwrap_or(false)
    {
        assert!(
            refusing_since.elapsed() < Duration::from_millis(500),
            "health still SERVING while refusing every token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    p.auth.withdraw("u1", &app_id, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal();
    // Ask for both tokens in turn, without pause: the withdrawn one is never accepted, and once
    // the live one is, the withdrawn one is refused as withdrawn.
    let healed_at = Instant::now();
    loop {
        match p.open_user_info(&withdrawn).await {
            Ok(_) => panic!("the token withdrawn during the cut was accepted after it"),
            Err(e)
                if [
                    ErrorReason::InvalidAuthRelations,
                    ErrorReason::RevocationStateStale,
                ]
                .contains(&reason(&e)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
        match p.open_user_info(&live).await {
            Ok(_) => {
                let err = p.open_user_info(&withdrawn).await.unwrap_err();
                assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
                break;
            }
            Err(e) if reason(&e) == ErrorReason::RevocationStateStale => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            healed_at.elapsed() < Duration::from_secs(10),
            "no recovery after the link healed"
        );
    }
}

/// A verifier behind a link that goes silent (no FIN, no RST) gives its revocation-stream slot
/// back once auth-service's keepalive PING goes unanswered: with one slot, held by
/// userinfo-service through the proxy, a verifier on another link is admitted within
/// KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT of the cut (and a little), not when TCP gives up
/// minutes later. Guards `http2_keepalive_interval` in service-runtime's `server_builder` (seen
/// failing with it removed: the slot still held 3 s into the cut).
#[tokio::test]
async fn a_verifier_behind_a_silent_link_gives_its_stream_slot_back() {
    let auth = auth_service::testing::TestAuthServer::start_with(|a| {
        a.limits.max_business_streams = 1;
        a.limits.keepalive_interval = Duration::from_millis(300);
        a.limits.keepalive_timeout = Duration::from_millis(300);
    })
    .await;
    let proxy = LinkProxy::start(auth.addr).await;
    let _userinfo = userinfo_service::testing::TestUserInfoServer::start_with(
        proxy.addr,
        &auth.config.callers.verifier,
        |_| {},
    )
    .await;
    let watch = pb::WatchRevocationsRequest::default;
    let refused = auth.verifier().watch_revocations(watch()).await;
    assert_eq!(
        refused.map(drop).map_err(|e| reason(&e)),
        Err(ErrorReason::RequestTrafficExceedLimit),
        "userinfo-service holds the one slot"
    );

    proxy.cut();
    let cut_at = Instant::now();
    while let Err(e) = auth.verifier().watch_revocations(watch()).await {
        assert_eq!(reason(&e), ErrorReason::RequestTrafficExceedLimit);
        assert!(
            cut_at.elapsed() < Duration::from_secs(3),
            "the silent link still holds the slot {:?} into the cut",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cut_at.elapsed() >= Duration::from_millis(300),
        "admitted {:?} into the cut, before any PING could go unanswered",
        cut_at.elapsed()
    );
}

/// Guards the second channel of userinfo-service's `AuthServiceLink` (`checks`): with
/// auth-service allowing one stream per connection, GetPhoneNumber's credential check still
/// gets through while the revocation stream holds the only stream of its connection. On one
/// shared connection the check waited for a stream and failed after the call timeout, as a
/// flood of unconfirmed credentials would make every check wait behind the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_checks_do_not_wait_behind_the_revocation_stream() {
    let p = Platform::start_with(|c| c.limits.max_concurrent_per_connection = 1, |_| {}).await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    p.profile(demo_profile("u1")).await;
    let grant = p.consent("u1", &app_id, &[pb::Scope::PhoneNumber]).await;
    let auth_code = super::auth_code(&grant);
    let mut backend = p.auth.backend(&app_id, &secret);
    let request = pb::ExchangeAuthCodeRequest { auth_code };
    let access_token = backend
        .exchange_auth_code(request)
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let request = upb::GetPhoneNumberRequest { access_token };
    let checked = tokio::time::timeout(
        Duration::from_secs(3),
        p.userinfo
            .backend(&app_id, &secret)
            .get_phone_number(request),
    )
    .await
    .expect("GetPhoneNumber answered within 3 s");
    assert!(checked.is_ok(), "{checked:?}");
}
