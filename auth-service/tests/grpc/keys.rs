use std::time::Duration;

use auth_service::testing::TestAuthServer;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::{KeyRing, Timestamp, TokenKind, VerifyingKey};
use sqlx::Row;

use super::{ALL_FEATURES, app_with, consent, consent_token};

use pb::Scope::UserInfo;

fn ring_of(keys: &[pb::TokenKey]) -> KeyRing {
    let ts = |t: &Option<prost_types::Timestamp>| {
        let t = t.unwrap();
        Timestamp::from_seconds_and_nanos(t.seconds, t.nanos).unwrap()
    };
    KeyRing::verifying(keys.iter().map(|k| VerifyingKey {
        key_id: k.key_id.clone(),
        public_key: k.public_key.clone().try_into().unwrap(),
        subject_key: k.subject_key.clone().try_into().unwrap(),
        created_at: ts(&k.create_time),
        retire_at: ts(&k.retire_time),
        expire_at: ts(&k.expire_time),
    }))
}

#[tokio::test]
async fn listed_keys_open_issued_tokens_and_are_sealed_at_rest() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let token = consent_token(&consent(&server, "u1", &app_id, &[UserInfo]).await);
    let listed = server
        .verifier()
        .list_token_keys(pb::ListTokenKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert_eq!(listed.current_key_id, listed.keys[0].key_id);
    let claims = ring_of(&listed.keys)
        .open(TokenKind::Consent, &token, Timestamp::now())
        .unwrap();
    assert_eq!(claims.user_id, "u1");
    assert_eq!(claims.app_id, app_id);

    let pool = sqlx::SqlitePool::connect(&server.config.database_url)
        .await
        .unwrap();
    let row = sqlx::query("SELECT sealed_key FROM token_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    let sealed: String = row.try_get("sealed_key").unwrap();
    for published in [&listed.keys[0].public_key, &listed.keys[0].subject_key] {
        assert!(!sealed.contains(&hex::encode(published)));
        assert!(
            !sealed
                .as_bytes()
                .windows(32)
                .any(|w| w == published.as_slice())
        );
    }
}

#[tokio::test]
async fn keys_rotate_and_the_old_key_keeps_verifying() {
    let server =
        TestAuthServer::start_with(|c| c.key_rotation_period = Duration::from_secs(1)).await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let old_token = consent_token(&consent(&server, "u1", &app_id, &[UserInfo]).await);
    let old_kid = KeyRing::key_id_of(&old_token).unwrap();
    let mut verifier = server.verifier();
    let mut rotated = None;
    for _ in 0..60 {
        let listed = verifier
            .list_token_keys(pb::ListTokenKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        if listed.current_key_id != old_kid && listed.keys.iter().any(|k| k.key_id == old_kid) {
            rotated = Some(listed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = rotated.expect("no rotation within 6 s");
    let new_token = consent_token(&consent(&server, "u1", &app_id, &[UserInfo]).await);
    assert_eq!(
        KeyRing::key_id_of(&new_token).unwrap(),
        listed.current_key_id
    );
    let ring = ring_of(&listed.keys);
    assert!(
        ring.open(TokenKind::Consent, &old_token, Timestamp::now())
            .is_ok()
    );
    assert!(
        ring.open(TokenKind::Consent, &new_token, Timestamp::now())
            .is_ok()
    );
}

/// The user consents to `app_id`, then withdraws it: one rule in the log (withdrawing what
/// was never granted writes none).
async fn grant_and_withdraw(server: &TestAuthServer, user: &str, app_id: &str) {
    consent(server, user, app_id, &[UserInfo]).await;
    server.withdraw(user, app_id, &[]).await;
}

async fn next_event(
    stream: &mut tonic::Streaming<pb::WatchRevocationsResponse>,
) -> pb::RevocationEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("no event within 5 s")
            .unwrap()
            .expect("stream ended");
        if let Some(event) = msg.event {
            return event;
        }
        assert!(msg.heartbeat);
    }
}

#[tokio::test]
async fn revocations_stream_live_and_resume_after_a_disconnect_with_nothing_missed() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let mut verifier = server.verifier();
    let mut stream = verifier
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    grant_and_withdraw(&server, "u1", &app_id).await;
    let first = next_event(&mut stream).await;
    assert_eq!(
        (first.app_id.as_str(), first.user_id.as_str()),
        (app_id.as_str(), "u1")
    );
    drop(stream);

    grant_and_withdraw(&server, "u2", &app_id).await;
    grant_and_withdraw(&server, "u3", &app_id).await;
    let mut resumed = verifier
        .watch_revocations(pb::WatchRevocationsRequest {
            after_sequence: first.sequence,
            after_issued_before: first.issued_before,
        })
        .await
        .unwrap()
        .into_inner();
    let second = next_event(&mut resumed).await;
    let third = next_event(&mut resumed).await;
    assert_eq!(
        (second.user_id.as_str(), third.user_id.as_str()),
        ("u2", "u3")
    );
    assert!(first.sequence < second.sequence && second.sequence < third.sequence);
    grant_and_withdraw(&server, "u4", &app_id).await;
    assert_eq!(next_event(&mut resumed).await.user_id, "u4");
}

#[tokio::test]
async fn idle_streams_carry_heartbeats() {
    let server = TestAuthServer::start().await;
    let mut stream = server
        .verifier()
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The first heartbeat says the (empty) log has been sent; the next ones come from idling.
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(2), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(msg.heartbeat && msg.event.is_none() && msg.server_time.is_some());
    }
}

/// The next message, which must come without waiting for an idle heartbeat (those are an
/// hour apart in the tests that use this).
async fn next_message(
    stream: &mut tonic::Streaming<pb::WatchRevocationsResponse>,
) -> pb::WatchRevocationsResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no message within 5 s")
        .unwrap()
        .expect("stream ended")
}

#[tokio::test]
async fn a_heartbeat_follows_the_backlog_once_the_stream_has_caught_up() {
    let server =
        TestAuthServer::start_with(|c| c.revocation_heartbeat = Duration::from_secs(3600)).await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    for user in ["u1", "u2", "u3"] {
        grant_and_withdraw(&server, user, &app_id).await;
    }
    let mut stream = server
        .verifier()
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    for user in ["u1", "u2", "u3"] {
        let msg = next_message(&mut stream).await;
        assert!(!msg.heartbeat, "a heartbeat before the backlog was sent");
        assert_eq!(msg.event.unwrap().user_id, user);
    }
    assert!(next_message(&mut stream).await.heartbeat);

    // A live rule is followed by a heartbeat too: the stream has caught up again.
    grant_and_withdraw(&server, "u4", &app_id).await;
    let live = next_message(&mut stream).await;
    assert_eq!(live.event.unwrap().user_id, "u4");
    assert!(next_message(&mut stream).await.heartbeat);
}

#[tokio::test]
async fn the_sweeper_deletes_expired_prompts_in_the_background() {
    let server = TestAuthServer::start_with(|c| {
        c.prompt_ttl = Duration::from_millis(20);
        c.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    super::request(&server, "u1", &app_id, &[UserInfo], pb::Trigger::UserTap)
        .await
        .unwrap();
    let pool = sqlx::SqlitePool::connect(&server.config.database_url)
        .await
        .unwrap();
    let mut remaining = i64::MAX;
    for _ in 0..100 {
        remaining = sqlx::query_scalar("SELECT COUNT(*) FROM prompts")
            .fetch_one(&pool)
            .await
            .unwrap();
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(remaining, 0);
}

/// The first message of a stream, within 5 s.
async fn first_message(
    server: &TestAuthServer,
    request: pb::WatchRevocationsRequest,
) -> (
    pb::WatchRevocationsResponse,
    tonic::Streaming<pb::WatchRevocationsResponse>,
) {
    let mut stream = server
        .verifier()
        .watch_revocations(request)
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("nothing within 5 s")
        .unwrap()
        .expect("stream ended");
    (first, stream)
}

#[tokio::test]
async fn a_stream_resumes_only_where_the_log_still_holds_the_verifiers_last_rule() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    grant_and_withdraw(&server, "u1", &app_id).await;
    let mut stream = server
        .verifier()
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let held = next_event(&mut stream).await;

    // The same rule at the same place: resume there, straight to "caught up".
    let (first, _) = first_message(
        &server,
        pb::WatchRevocationsRequest {
            after_sequence: held.sequence,
            after_issued_before: held.issued_before,
        },
    )
    .await;
    assert!(
        first.heartbeat && first.resumed_after.is_none(),
        "{first:?}"
    );

    // A rule this log never had at that place (as after a restore from a backup), or a
    // sequence it never reached: start over, say so first, and send the log again.
    let other_timeline = prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    };
    for request in [
        pb::WatchRevocationsRequest {
            after_sequence: held.sequence,
            after_issued_before: Some(other_timeline),
        },
        pb::WatchRevocationsRequest {
            after_sequence: held.sequence + 1_000,
            after_issued_before: None,
        },
    ] {
        let (first, mut stream) = first_message(&server, request).await;
        assert_eq!(first.resumed_after, Some(0), "{first:?}");
        assert!(!first.heartbeat && first.event.is_none());
        assert_eq!(next_event(&mut stream).await, held, "the log is sent again");
        grant_and_withdraw(&server, "u2", &app_id).await;
        let next = next_event(&mut stream).await;
        assert!(next.sequence > held.sequence);
    }
}
