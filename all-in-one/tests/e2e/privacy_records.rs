//! Privacy by record, driven through both services: consent history, declarations, the
//! per-app change feed, a user's export and erasure.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use tokio_stream::StreamExt;

use super::{ALL_FEATURES, Platform, auth_code, consent_token, reason};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};
use pb::request_authorization_response::Result as Outcome;

/// Every test here is over well within this; a hang fails with a message instead.
const BOUND: Duration = Duration::from_secs(60);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

async fn records(p: &Platform, user: &str, app_id: &str) -> Vec<pb::ConsentRecord> {
    p.auth
        .wallet()
        .list_consent_records(pb::ListConsentRecordsRequest {
            user_id: user.into(),
            app_id: app_id.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list consent records")
        .into_inner()
        .records
}

fn events(records: &[pb::ConsentRecord]) -> Vec<pb::ConsentEvent> {
    records.iter().map(|r| r.event()).collect()
}

async fn changes(p: &Platform, app: &(String, String), after: u64) -> Vec<pb::AuthorizationChange> {
    p.auth
        .changes(&app.0, &app.1)
        .list_authorization_changes(pb::ListAuthorizationChangesRequest {
            after_sequence: after,
            page_size: 0,
        })
        .await
        .expect("list changes")
        .into_inner()
        .changes
}

async fn exchange(
    p: &Platform,
    app: &(String, String),
    grant: &pb::Grant,
) -> pb::ExchangeAuthCodeResponse {
    p.auth
        .backend(&app.0, &app.1)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: auth_code(grant),
        })
        .await
        .expect("exchange")
        .into_inner()
}

/// The `g` (grant id) claim of a PASETO v4.public token: its payload is readable by design.
fn grant_claim(token: &str) -> String {
    let body = token.strip_prefix("v4.public.").expect("a v4.public token");
    let body = body.split('.').next().expect("payload");
    let bytes = URL_SAFE_NO_PAD.decode(body).expect("base64url");
    let json = &bytes[..bytes.len() - 64];
    let claims: serde_json::Value = serde_json::from_slice(json).expect("claims");
    claims["g"].as_str().expect("g claim").to_owned()
}

/// The app's grant `pair` and its unspent code ended: the access token inactive, the refresh
/// token refused with `refused` (revoked, or deleted), the code void.
async fn assert_grant_ended(
    p: &Platform,
    app: &(String, String),
    (pair, unspent): (&pb::ExchangeAuthCodeResponse, String),
    refused: ErrorReason,
) {
    let backend = p.auth.backend(&app.0, &app.1);
    let introspected = backend
        .clone()
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!introspected.active, "the access token");
    let refreshed = backend
        .clone()
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refreshed), refused);
    let spent = backend
        .clone()
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: unspent })
        .await
        .unwrap_err();
    assert_eq!(reason(&spent), ErrorReason::InvalidCode);
}

async fn set_declaration(
    p: &Platform,
    app_id: &str,
    version: i64,
    purposes: &[(pb::Scope, &str)],
) -> Result<pb::SetPrivacyDeclarationResponse, tonic::Status> {
    p.auth
        .admin()
        .set_privacy_declaration(pb::SetPrivacyDeclarationRequest {
            app_id: app_id.into(),
            version,
            purposes: purposes
                .iter()
                .map(|(scope, purpose)| pb::ScopePurpose {
                    scope: *scope as i32,
                    purpose: (*purpose).into(),
                })
                .collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every decision lands in the user's history, newest first, filtered by app and paged; the
/// history outlives the withdrawal that ended the grant. An answer to a modal carries the
/// modal's trigger and the purposes it showed, even when the declaration was replaced before
/// the answer; a withdrawal carries the declaration in force. Guards the `append_record`
/// calls in `ConsentFlow::request`, `resolve` and `withdraw`, the trigger and purposes kept
/// on the prompt (`ConsentFlow::ask`) and copied at `resolve`, and `declaration_in_force` in
/// `withdraw`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consent_decision_is_recorded_newest_first() {
    bounded("history", async {
        let p = Platform::start().await;
        let app = p.app(&ALL_FEATURES).await;
        let other = p.app(&ALL_FEATURES).await;
        let (shown, newer) = ("to show your avatar", "to show your avatar and name");
        set_declaration(&p, &app.0, 1, &[(UserInfo, shown)])
            .await
            .unwrap();
        let Outcome::Prompt(first) = p
            .request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap)
            .await
            .unwrap()
        else {
            panic!("expected a prompt");
        };
        // Replaced while the modal is open: the answer is recorded with what it showed.
        set_declaration(&p, &app.0, 2, &[(UserInfo, newer)])
            .await
            .unwrap();
        p.resolve(&first.prompt_id, "u1", pb::Decision::Deny)
            .await
            .unwrap();
        p.consent("u1", &app.0, &[UserInfo]).await;
        p.consent("u1", &other.0, &[AuthBase]).await;
        p.auth.withdraw("u1", &app.0, &[]).await;

        use pb::ConsentEvent::*;
        let mine = records(&p, "u1", &app.0).await;
        assert_eq!(
            events(&mine),
            [Withdrawn, Granted, Prompted, Denied, Prompted],
            "newest first, every decision"
        );
        assert!(mine.iter().all(|r| r.app_id == app.0));
        assert_eq!(mine[0].scopes, [UserInfo as i32]);
        let purposes = |text: &str| {
            vec![pb::ScopePurpose {
                scope: UserInfo as i32,
                purpose: text.into(),
            }]
        };
        let context =
            |r: &pb::ConsentRecord| (r.trigger(), r.purposes.clone(), r.declaration_version);
        let tap = pb::Trigger::UserTap;
        assert_eq!(
            context(&mine[4]),
            (tap, purposes(shown), 1),
            "the first prompt"
        );
        assert_eq!(
            context(&mine[3]),
            (tap, purposes(shown), 1),
            "denied: as shown"
        );
        assert_eq!(
            context(&mine[2]),
            (tap, purposes(newer), 2),
            "the second prompt"
        );
        assert_eq!(
            context(&mine[1]),
            (tap, purposes(newer), 2),
            "granted: as shown"
        );
        assert_eq!(
            context(&mine[0]),
            (pb::Trigger::Unspecified, purposes(newer), 2),
            "withdrawn: the declaration in force"
        );
        let theirs = records(&p, "u1", &other.0).await;
        assert_eq!(
            events(&theirs),
            [Granted],
            "auth_base is granted without a modal"
        );
        assert_eq!(
            context(&theirs[0]),
            (tap, Vec::new(), 0),
            "nothing declared"
        );
        assert!(records(&p, "u2", "").await.is_empty(), "no one else's");

        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..10 {
            let page = p
                .auth
                .wallet()
                .list_consent_records(pb::ListConsentRecordsRequest {
                    user_id: "u1".into(),
                    app_id: String::new(),
                    page_size: 2,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.records.len() <= 2);
            seen.extend(page.records.into_iter().map(|r| r.record_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let all = records(&p, "u1", "").await;
        assert_eq!(
            seen,
            all.iter().map(|r| r.record_id.clone()).collect::<Vec<_>>()
        );
        assert_eq!(all.len(), 6);

        let bad = p
            .auth
            .wallet()
            .list_consent_records(pb::ListConsentRecordsRequest {
                user_id: "u1".into(),
                page_token: "not-a-token".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&bad), ErrorReason::InvalidArgument);
    })
    .await;
}

/// Records go once their retention has passed, and not before. Guards the consent-record
/// sweep in `SWEEPS` (store/sql.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_records_are_swept_after_their_retention() {
    bounded("retention", async {
        let p = Platform::start_with(
            |c| {
                c.privacy.consent_record_retention = Duration::from_secs(2);
                c.sweep_interval = Duration::from_millis(200);
            },
            |_| {},
        )
        .await;
        let app = p.app(&ALL_FEATURES).await;
        p.consent("u1", &app.0, &[UserInfo]).await;
        assert_eq!(records(&p, "u1", "").await.len(), 2, "prompted and granted");
        let start = Instant::now();
        while !records(&p, "u1", "").await.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "records were never swept"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(1500),
            "swept before their retention"
        );
    })
    .await;
}

/// The feed names a user only by what the app holds: the app-scoped id once it exchanged a
/// code, else the grant id its consent tokens carry; a user whose code it never exchanged is
/// not in it at all, and no app sees another's changes. Guards `disclose_user_id` in
/// `TokenIssuer::issue` and the subject choice in `PrivacyPolicy::change`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_names_users_only_by_what_the_app_was_given() {
    bounded("feed", async {
        let p = Platform::start().await;
        let app = p.app(&ALL_FEATURES).await;
        let other = p.app(&ALL_FEATURES).await;
        let token = consent_token(&p.consent("reader", &app.0, &[UserInfo]).await);
        let exchanged = exchange(&p, &app, &p.consent("backend", &app.0, &[AuthBase]).await).await;
        p.consent("silent", &app.0, &[AuthBase]).await;
        p.consent("reader", &other.0, &[UserInfo]).await;

        for user in ["reader", "backend", "silent"] {
            p.auth.withdraw(user, &app.0, &[]).await;
        }
        let feed = changes(&p, &app, 0).await;
        assert_eq!(
            feed.len(),
            2,
            "the silent user's code was never exchanged: {feed:?}"
        );
        use pb::authorization_change::Subject;
        assert_eq!(feed[0].subject, Some(Subject::GrantId(grant_claim(&token))));
        assert_eq!(
            feed[1].subject,
            Some(Subject::UserId(exchanged.user_id.clone()))
        );
        assert!(
            feed.iter()
                .all(|c| c.reason() == pb::AuthorizationChangeReason::Withdrawn)
        );
        assert!(feed[0].sequence < feed[1].sequence);
        let text = format!("{feed:?}");
        for wallet_id in ["reader", "backend", "silent"] {
            assert!(!text.contains(&format!("\"{wallet_id}\"")), "{text}");
        }
        assert!(
            changes(&p, &other, 0).await.is_empty(),
            "another app's feed is its own"
        );
        assert_eq!(
            changes(&p, &app, feed[0].sequence).await,
            feed[1..].to_vec()
        );

        let err = p
            .auth
            .changes(&app.0, "wrong-secret")
            .list_authorization_changes(pb::ListAuthorizationChangesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    })
    .await;
}

/// A WatchAuthorizationChanges stream of `app` after `after_sequence`.
async fn watch(
    p: &Platform,
    app: &(String, String),
    after_sequence: u64,
) -> tonic::Streaming<pb::WatchAuthorizationChangesResponse> {
    let request = pb::WatchAuthorizationChangesRequest { after_sequence };
    let mut client = p.auth.changes(&app.0, &app.1);
    let watched = client.watch_authorization_changes(request).await;
    watched.expect("watch").into_inner()
}

/// The next message of a change stream, within 10 s: a change, or `None` for a heartbeat.
async fn next_message(
    stream: &mut tonic::Streaming<pb::WatchAuthorizationChangesResponse>,
) -> Option<pb::AuthorizationChange> {
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("stream open")
        .expect("no error");
    assert!(
        msg.change.is_some() != msg.heartbeat,
        "a change or a heartbeat: {msg:?}"
    );
    msg.change
}

/// The changes of a stream up to its next heartbeat (sent once it has caught up).
async fn until_heartbeat(
    stream: &mut tonic::Streaming<pb::WatchAuthorizationChangesResponse>,
) -> Vec<pb::AuthorizationChange> {
    let mut changes = Vec::new();
    while let Some(change) = next_message(stream).await {
        changes.push(change);
    }
    changes
}

/// Guards `ChangeSignals::open` and the secret check in `watch`'s loop: an app
/// holds at most `MAX_WATCHES_PER_APP` change streams (one more is refused with
/// REQUEST_TRAFFIC_EXCEED_LIMIT, another app is unaffected, a closed stream frees its slot), and
/// an open stream ends with INVALID_AUTH_CLIENT once the app's secret is rotated, so a leaked
/// secret stops reading the feed when the app rotates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_streams_are_bounded_per_app_and_end_when_the_secret_is_rotated() {
    bounded("watch slots", async {
        let p = Platform::start().await;
        let app = p.app(&ALL_FEATURES).await;
        let mut open = Vec::new();
        for _ in 0..auth_service::privacy::MAX_WATCHES_PER_APP {
            let mut stream = watch(&p, &app, 0).await;
            assert_eq!(
                next_message(&mut stream).await,
                None,
                "a heartbeat: it is up"
            );
            open.push(stream);
        }
        let one_more = |app: (String, String)| {
            let mut client = p.auth.changes(&app.0, &app.1);
            async move {
                let request = pb::WatchAuthorizationChangesRequest { after_sequence: 0 };
                client.watch_authorization_changes(request).await.map(drop)
            }
        };
        let refused = one_more(app.clone()).await.unwrap_err();
        assert_eq!(reason(&refused), ErrorReason::RequestTrafficExceedLimit);
        let other = p.app(&ALL_FEATURES).await;
        one_more(other).await.expect("the bound is per app");
        drop(open.pop());
        let freed = Instant::now();
        while let Err(e) = one_more(app.clone()).await {
            assert_eq!(reason(&e), ErrorReason::RequestTrafficExceedLimit);
            assert!(freed.elapsed() < Duration::from_secs(5), "no slot freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        p.auth.rotate_secret(&app.0).await;
        let stream = &mut open[0];
        let ended = async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(status)) => break status,
                    None => panic!("the stream ended without an error"),
                }
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(10), ended).await;
        let ended = ended.expect("the stream ends within 10 s of the rotation");
        assert_eq!(reason(&ended), ErrorReason::InvalidAuthClient);
    })
    .await;
}

/// A watcher gets the backlog after its cursor, then a heartbeat once caught up and more
/// while idle (every `REVOCATION_HEARTBEAT`, 200 ms here), then live changes; after a restart
/// a new Watch from its cursor gets exactly the changes made while it was away, no gap and no
/// repeat, then live ones again. Guards the idle `sleep(heartbeat)` in
/// `AuthorizationChanges::watch` and its resumption from `after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_the_feed_resumes_without_a_gap_across_a_restart() {
    bounded("watch", async {
        let mut p = Platform::start().await;
        let app = p.app(&ALL_FEATURES).await;
        for user in ["a", "b"] {
            exchange(&p, &app, &p.consent(user, &app.0, &[AuthBase]).await).await;
        }
        p.auth.withdraw("a", &app.0, &[]).await;
        let mut stream = watch(&p, &app, 0).await;
        let backlog = until_heartbeat(&mut stream).await;
        assert_eq!(
            backlog.len(),
            1,
            "the backlog, then a heartbeat: {backlog:?}"
        );
        let first = &backlog[0];
        let idle = Instant::now();
        assert_eq!(
            next_message(&mut stream).await,
            None,
            "a heartbeat while idle"
        );
        assert!(
            idle.elapsed() >= Duration::from_millis(100),
            "the idle heartbeat came after its interval, not at once: {:?}",
            idle.elapsed()
        );
        p.auth.withdraw("b", &app.0, &[]).await;
        let second = next_message(&mut stream).await.expect("the live change");
        assert!(second.sequence > first.sequence);

        p.auth = p.auth.pause().await.restart().await;
        for user in ["c", "d"] {
            exchange(&p, &app, &p.consent(user, &app.0, &[AuthBase]).await).await;
            p.auth.withdraw(user, &app.0, &[]).await;
        }
        let away = changes(&p, &app, second.sequence).await;
        assert_eq!(away.len(), 2, "the changes made while the watcher was away");
        let mut stream = watch(&p, &app, second.sequence).await;
        let resumed = until_heartbeat(&mut stream).await;
        assert_eq!(
            resumed, away,
            "exactly the changes after the cursor: no gap, no repeat"
        );
        assert_eq!(
            next_message(&mut stream).await,
            None,
            "idle again after the restart"
        );
        exchange(&p, &app, &p.consent("e", &app.0, &[AuthBase]).await).await;
        p.auth.withdraw("e", &app.0, &[]).await;
        let live = next_message(&mut stream)
            .await
            .expect("a live change after the restart");
        assert!(live.sequence > away[1].sequence);
    })
    .await;
}

/// Guards the per-app wake of change streams (`ChangeSignals::appended`, called once a
/// withdrawal, an erasure or a feature switched off has committed): another app's RevokeToken
/// calls, which append revocation rules but no change, leave an idle change stream asleep (no
/// heartbeat before its 30 s interval), while each of the three from the stream's own app
/// reaches it at once, not at the next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_apps_own_changes_wake_its_change_stream() {
    bounded("wake", async {
        let heartbeat = Duration::from_secs(30);
        let p = Platform::start_with(|c| c.revocation_heartbeat = heartbeat, |_| {}).await;
        let (revoking, watched) = (p.app(&ALL_FEATURES).await, p.app(&ALL_FEATURES).await);
        for user in ["w", "e"] {
            exchange(
                &p,
                &watched,
                &p.consent(user, &watched.0, &[AuthBase]).await,
            )
            .await;
        }
        p.consent("f", &watched.0, &[PhoneNumber]).await;
        let mut stream = watch(&p, &watched, 0).await;
        assert_eq!(next_message(&mut stream).await, None, "caught up");

        let mut backend = p.auth.backend(&revoking.0, &revoking.1);
        for user in 0..5 {
            let grant = p
                .consent(&format!("u{user}"), &revoking.0, &[UserInfo])
                .await;
            let token = consent_token(&grant);
            let revoked = backend.revoke_token(pb::RevokeTokenRequest { token }).await;
            revoked.expect("revoke");
        }
        let woken = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
        assert!(
            woken.is_err(),
            "another app's revocations woke the stream: {woken:?}"
        );

        let wallet = p.auth.wallet();
        let mut admin = p.auth.admin();
        for ended in ["withdrawal", "erasure", "feature switched off"] {
            let at = Instant::now();
            match ended {
                "withdrawal" => p.auth.withdraw("w", &watched.0, &[]).await,
                "erasure" => {
                    let user_id = "e".into();
                    let request = pb::EraseUserAuthorizationsRequest { user_id };
                    wallet
                        .clone()
                        .erase_user_authorizations(request)
                        .await
                        .unwrap();
                }
                _ => {
                    let (app_id, feature) = (watched.0.clone(), pb::Feature::PhoneNumber as i32);
                    let request = pb::DisableFeatureRequest { app_id, feature };
                    admin.disable_feature(request).await.unwrap();
                }
            }
            let changes = until_heartbeat(&mut stream).await;
            assert_eq!(changes.len(), 1, "the {ended}'s change: {changes:?}");
            assert!(
                at.elapsed() < heartbeat / 3,
                "the {ended} woke the stream: {:?}",
                at.elapsed()
            );
        }
    })
    .await;
}

/// Switching a feature off voids every user's consent to its scope: the history says so, the
/// app is told, and switching it back on asks again instead of granting silently. Guards
/// `withdraw_from_all` and the two appends in `AppRegistry::disable_feature`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_feature_voids_consent_until_asked_again() {
    bounded("feature", async {
        let p = Platform::start().await;
        let app = p.app(&ALL_FEATURES).await;
        let pair = exchange(&p, &app, &p.consent("u1", &app.0, &[PhoneNumber]).await).await;
        p.consent("u2", &app.0, &[UserInfo]).await;
        p.auth
            .admin()
            .disable_feature(pb::DisableFeatureRequest {
                app_id: app.0.clone(),
                feature: pb::Feature::PhoneNumber as i32,
            })
            .await
            .unwrap();
        let u1 = records(&p, "u1", &app.0).await;
        assert_eq!(u1[0].event(), pb::ConsentEvent::VoidedByFeatureChange);
        assert_eq!(u1[0].scopes, [PhoneNumber as i32]);
        assert_eq!(
            records(&p, "u2", &app.0).await[0].event(),
            pb::ConsentEvent::Granted
        );
        let feed = changes(&p, &app, 0).await;
        assert_eq!(feed.len(), 1, "{feed:?}");
        assert_eq!(
            feed[0].reason(),
            pb::AuthorizationChangeReason::FeatureDisabled
        );
        assert_eq!(
            feed[0].subject,
            Some(pb::authorization_change::Subject::UserId(pair.user_id))
        );
        p.auth
            .admin()
            .enable_feature(pb::EnableFeatureRequest {
                app_id: app.0.clone(),
                feature: pb::Feature::PhoneNumber as i32,
            })
            .await
            .unwrap();
        let again = p
            .request("u1", &app.0, &[PhoneNumber], pb::Trigger::UserTap)
            .await
            .unwrap();
        assert!(
            matches!(again, Outcome::Prompt(_)),
            "asked again: {again:?}"
        );
    })
    .await;
}

/// The modal shows the declared purposes; consent is remembered while the declaration stands
/// and asked for again once its version rises; versions only rise; with
/// REQUIRE_PRIVACY_DECLARATION an undeclared scope is refused. Guards the version comparison
/// in `ConsentFlow::request` and the declared-scope check in `app_with_features`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_declaration_version_asks_for_consent_again() {
    bounded("declaration", async {
        let p = Platform::start().await;
        let app = p.app(&ALL_FEATURES).await;
        set_declaration(
            &p,
            &app.0,
            1,
            &[(UserInfo, "Show your avatar on your orders")],
        )
        .await
        .unwrap();
        let Outcome::Prompt(prompt) = p
            .request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap)
            .await
            .unwrap()
        else {
            panic!("expected a prompt");
        };
        assert_eq!(prompt.declaration_version, 1);
        assert_eq!(
            prompt.purposes[0].purpose,
            "Show your avatar on your orders"
        );
        p.resolve(&prompt.prompt_id, "u1", pb::Decision::Allow)
            .await
            .unwrap();
        let remembered = p
            .request("u1", &app.0, &[UserInfo], pb::Trigger::AppLaunch)
            .await
            .unwrap();
        assert!(
            matches!(remembered, Outcome::Grant(_)),
            "remembered under v1"
        );

        let stale = set_declaration(&p, &app.0, 1, &[(UserInfo, "Anything else")])
            .await
            .unwrap_err();
        assert_eq!(reason(&stale), ErrorReason::InvalidArgument, "{stale:?}");
        set_declaration(&p, &app.0, 2, &[(UserInfo, "Also for marketing")])
            .await
            .unwrap();
        let at_launch = p
            .request("u1", &app.0, &[UserInfo], pb::Trigger::AppLaunch)
            .await
            .unwrap_err();
        assert_eq!(
            reason(&at_launch),
            ErrorReason::AuthorizationAtLaunch,
            "v2 needs a modal"
        );
        let Outcome::Prompt(again) = p
            .request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap)
            .await
            .unwrap()
        else {
            panic!("expected a prompt under v2");
        };
        assert_eq!(again.purposes[0].purpose, "Also for marketing");
        p.resolve(&again.prompt_id, "u1", pb::Decision::Allow)
            .await
            .unwrap();
        let history = records(&p, "u1", &app.0).await;
        assert_eq!(history[0].declaration_version, 2);

        let strict = Platform::start_with(|c| c.privacy.require_declaration = true, |_| {}).await;
        let app = strict.app(&ALL_FEATURES).await;
        let refused = strict
            .request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap)
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), ErrorReason::InsufficientIsvPermissions);
        assert!(
            refused.message().contains("SetPrivacyDeclaration"),
            "{refused:?}"
        );
        set_declaration(&strict, &app.0, 1, &[(UserInfo, "Avatar on orders")])
            .await
            .unwrap();
        let asked = strict
            .request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap)
            .await
            .unwrap();
        assert!(matches!(asked, Outcome::Prompt(_)));
    })
    .await;
}

/// An answer under a new declaration ends, at once, the consent given under the older one
/// that it does not give again: the phone number consented to under v1, when the user then
/// allows only userInfo under v2, leaves the authorization, its access token is inactive, its
/// refresh token and unspent code are void, the end is recorded (with the version it was given
/// under) and the app is told. What the user allowed under v2 works. Guards
/// `ConsentFlow::void_stale_consent`: without it the access token stayed active for its
/// lifetime and the app was never told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_under_a_new_declaration_ends_the_consent_it_does_not_give_again() {
    bounded("stale consent", async {
        let p = Platform::start().await;
        p.profile(super::demo_profile("u1")).await;
        let app = p.app(&ALL_FEATURES).await;
        let purposes = [(UserInfo, "Avatar on orders"), (PhoneNumber, "Delivery")];
        set_declaration(&p, &app.0, 1, &purposes).await.unwrap();
        let phone = p.consent("u1", &app.0, &[AuthBase, PhoneNumber]).await;
        let pair = exchange(&p, &app, &phone).await;
        let unspent = auth_code(&p.consent("u1", &app.0, &[AuthBase, PhoneNumber]).await);
        set_declaration(&p, &app.0, 2, &purposes).await.unwrap();
        let Outcome::Prompt(prompt) = p
            .request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap)
            .await
            .unwrap()
        else {
            panic!("userInfo is asked for under v2");
        };
        let answer = p
            .resolve(&prompt.prompt_id, "u1", pb::Decision::Allow)
            .await;
        let pb::resolve_prompt_response::Result::Grant(grant) = answer.unwrap() else {
            panic!("a grant");
        };
        p.open_user_info(&consent_token(&grant))
            .await
            .expect("what v2 allowed works");

        let ended = (&pair, unspent);
        assert_grant_ended(&p, &app, ended, ErrorReason::InvalidAuthRelations).await;
        let standing = p.auth.authorizations("u1").await;
        assert!(
            standing
                .iter()
                .all(|a| !a.scopes.contains(&(PhoneNumber as i32))),
            "{standing:?}"
        );
        let history = records(&p, "u1", &app.0).await;
        let voided = history
            .iter()
            .find(|r| r.event() == pb::ConsentEvent::VoidedByNewDeclaration)
            .expect("the end is recorded");
        assert_eq!(voided.scopes, [PhoneNumber as i32]);
        assert_eq!(voided.declaration_version, 1);
        let told = changes(&p, &app, 0).await;
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(
            told[0].reason(),
            pb::AuthorizationChangeReason::DeclarationReplaced
        );
        assert_eq!(told[0].scopes, [PhoneNumber as i32]);
        assert_eq!(
            told[0].subject,
            Some(pb::authorization_change::Subject::UserId(pair.user_id))
        );
    })
    .await;
}

/// A denial under a new declaration ends the consent given under the older one and is
/// remembered: the consent token from v1 is refused within a second, the app is told (naming
/// that grant), the next modal says previously_denied, and what the user then allows carries a
/// new grant id, not the one the app was told had ended. Guards the withdrawal in
/// `ConsentFlow::void_stale_consent`: without it the denial was masked by the lapsed grant
/// (no previously_denied) and the ended grant id was handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_under_a_new_declaration_ends_the_old_consent_and_is_remembered() {
    bounded("stale consent denied", async {
        let p = Platform::start().await;
        p.profile(super::demo_profile("u1")).await;
        let app = p.app(&ALL_FEATURES).await;
        let purposes = [(UserInfo, "Avatar on orders")];
        set_declaration(&p, &app.0, 1, &purposes).await.unwrap();
        let old = consent_token(&p.consent("u1", &app.0, &[UserInfo]).await);
        set_declaration(&p, &app.0, 2, &purposes).await.unwrap();
        let ask = || p.request("u1", &app.0, &[UserInfo], pb::Trigger::UserTap);
        let Outcome::Prompt(prompt) = ask().await.unwrap() else {
            panic!("userInfo is asked for again under v2");
        };
        assert!(!prompt.previously_denied);
        let denied_at = Instant::now();
        let answer = p.resolve(&prompt.prompt_id, "u1", pb::Decision::Deny).await;
        let Ok(pb::resolve_prompt_response::Result::Denial(_)) = answer else {
            panic!("a denial: {answer:?}");
        };
        while p.open_user_info(&old).await.is_ok() {
            assert!(
                denied_at.elapsed() < Duration::from_secs(1),
                "the v1 consent token still reads after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let told = changes(&p, &app, 0).await;
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(
            told[0].subject,
            Some(pb::authorization_change::Subject::GrantId(grant_claim(
                &old
            )))
        );
        let Outcome::Prompt(again) = ask().await.unwrap() else {
            panic!("userInfo is asked for after the denial");
        };
        assert!(again.previously_denied, "the denial is remembered");
        let answer = p.resolve(&again.prompt_id, "u1", pb::Decision::Allow).await;
        let Ok(pb::resolve_prompt_response::Result::Grant(grant)) = answer else {
            panic!("a grant: {answer:?}");
        };
        let new = consent_token(&grant);
        p.open_user_info(&new).await.expect("what v2 allowed works");
        assert_ne!(grant_claim(&new), grant_claim(&old), "a new grant id");
    })
    .await;
}

/// Erasure ends every authorization at once: consent tokens refused by userinfo-service within
/// a second, access tokens inactive, refresh tokens and unspent codes void, the apps told, the
/// history kept with the erasure in it; running it again changes nothing. The export before it
/// carries every app's scoped id. Guards the rule appended per app in `PrivacyRecords::erase`
/// and `erase_user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_ends_every_authorization() {
    bounded("erase", async {
        let p = Platform::start().await;
        p.profile(super::demo_profile("u1")).await;
        let app = p.app(&ALL_FEATURES).await;
        let other = p.app(&ALL_FEATURES).await;
        let token = consent_token(&p.consent("u1", &app.0, &[UserInfo]).await);
        let pair = exchange(
            &p,
            &other,
            &p.consent("u1", &other.0, &[AuthBase, PhoneNumber]).await,
        )
        .await;
        let unspent = auth_code(&p.consent("u1", &other.0, &[AuthBase]).await);
        p.open_user_info(&token).await.expect("readable before");

        let export = p
            .auth
            .wallet()
            .export_user_authorizations(pb::ExportUserAuthorizationsRequest {
                user_id: "u1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(export.authorizations.len(), 2);
        let ids: Vec<_> = export
            .app_scoped_user_ids
            .iter()
            .map(|i| (i.app_id.clone(), i.disclosed))
            .collect();
        assert!(
            ids.contains(&(other.0.clone(), true)) && ids.contains(&(app.0.clone(), false)),
            "{ids:?}"
        );
        let scoped = export
            .app_scoped_user_ids
            .iter()
            .find(|i| i.app_id == other.0)
            .unwrap();
        assert_eq!(scoped.user_id, pair.user_id);
        assert!(!export.consent_records.is_empty());

        let erase = || async {
            p.auth
                .wallet()
                .erase_user_authorizations(pb::EraseUserAuthorizationsRequest {
                    user_id: "u1".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .authorizations_ended
        };
        let erased_at = Instant::now();
        assert_eq!(erase().await, 2);
        loop {
            match p.open_user_info(&token).await {
                Err(e) => {
                    assert_eq!(reason(&e), ErrorReason::InvalidAuthRelations);
                    break;
                }
                Ok(_) => assert!(
                    erased_at.elapsed() < Duration::from_secs(1),
                    "still readable after 1 s"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ended = (&pair, unspent);
        assert_grant_ended(&p, &other, ended, ErrorReason::InvalidRefreshToken).await;
        assert!(p.auth.authorizations("u1").await.is_empty());
        let history = records(&p, "u1", "").await;
        assert_eq!(
            events(&history[..2]),
            [pb::ConsentEvent::VoidedByErasure; 2]
        );
        let told = changes(&p, &other, 0).await;
        assert_eq!(
            told.last().map(|c| c.reason()),
            Some(pb::AuthorizationChangeReason::Erased)
        );

        assert_eq!(erase().await, 0, "idempotent");
        assert_eq!(
            records(&p, "u1", "").await.len(),
            history.len(),
            "nothing more recorded"
        );
    })
    .await;
}

/// ExportUserData answers one JSON document holding what both services keep about the user:
/// the profile, the ledger, authorizations, consent records and each app's scoped id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_holds_both_services_data_in_one_document() {
    bounded("export", async {
        let p = Platform::start().await;
        p.profile(super::demo_profile("u1")).await;
        let app = p.app(&ALL_FEATURES).await;
        let other = p.app(&ALL_FEATURES).await;
        let token = consent_token(&p.consent("u1", &app.0, &[UserInfo]).await);
        p.open_user_info(&token).await.expect("read");
        let pair = exchange(&p, &other, &p.consent("u1", &other.0, &[AuthBase]).await).await;
        tokio::time::sleep(Duration::from_millis(600)).await; // the ledger's 200 ms flush
        let document = p
            .userinfo
            .profiles()
            .export_user_data(miniprogram_proto::userinfo::v1::ExportUserDataRequest {
                user_id: "u1".into(),
            })
            .await
            .expect("export")
            .into_inner()
            .document;
        let json: serde_json::Value = serde_json::from_str(&document).expect("JSON");
        assert_eq!(json["format"], "miniprogram.user-data/v1");
        assert_eq!(json["user_id"], "u1");
        assert_eq!(
            json["profile"]["nick_name"],
            super::demo_profile("u1").nick_name
        );
        assert_eq!(
            json["authorizations"].as_array().map(Vec::len),
            Some(2),
            "{json}"
        );
        assert_eq!(json["disclosures"][0]["data"], "public_profile", "{json}");
        assert_eq!(json["disclosures"][0]["app_id"], app.0.as_str());
        assert!(
            json["consent_records"]
                .as_array()
                .is_some_and(|r| r.len() >= 3),
            "{json}"
        );
        let ids = json["app_scoped_user_ids"].as_array().expect("ids");
        assert!(
            ids.iter().any(|i| i["app_id"] == other.0.as_str()
                && i["user_id"] == pair.user_id.as_str()
                && i["disclosed"] == true),
            "{json}"
        );
    })
    .await;
}

/// DeleteProfile erases in both services; with auth-service down it answers at once (the
/// profile gone here), records the rest, and finishes at auth-service once it is back, without
/// another call. Guards `mark_erasure_pending` in `UserData::erase` and `user_data::run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_profile_reaches_auth_service_even_when_it_was_down() {
    bounded("erasure across services", async {
        let mut p = Platform::start().await;
        p.profile(super::demo_profile("u1")).await;
        let app = p.app(&ALL_FEATURES).await;
        let pair = exchange(
            &p,
            &app,
            &p.consent("u1", &app.0, &[AuthBase, PhoneNumber]).await,
        )
        .await;
        let stopped = p.auth.pause().await;
        let erased = p
            .userinfo
            .profiles()
            .delete_profile(miniprogram_proto::userinfo::v1::DeleteProfileRequest {
                user_id: "u1".into(),
            })
            .await
            .expect("erased here while auth-service is down")
            .into_inner();
        assert!(erased.authorizations_erasure_pending);
        let gone = p
            .userinfo
            .profiles()
            .get_profile(miniprogram_proto::userinfo::v1::GetProfileRequest {
                user_id: "u1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&gone), ErrorReason::ProfileNotFound);

        p.auth = stopped.restart().await;
        let back = Instant::now();
        let backend = p.auth.backend(&app.0, &app.1);
        loop {
            let active = backend
                .clone()
                .introspect_token(pb::IntrospectTokenRequest {
                    token: pair.access_token.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .active;
            if !active {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "the erasure never reached auth-service"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(p.auth.authorizations("u1").await.is_empty());
        let history = records(&p, "u1", "").await;
        assert_eq!(history[0].event(), pb::ConsentEvent::VoidedByErasure);

        p.profile(super::demo_profile("u2")).await;
        let erased = p
            .userinfo
            .profiles()
            .delete_profile(miniprogram_proto::userinfo::v1::DeleteProfileRequest {
                user_id: "u2".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            !erased.authorizations_erasure_pending,
            "auth-service answered at once"
        );
    })
    .await;
}
