//! Replicas on PostgreSQL: two auth-service and two userinfo-service processes, the auth pair on
//! one database schema and the userinfo pair on another, userinfo replica 1 following auth
//! replica A and replica 2 following B, as a deployment of several replicas runs them. Needs
//! the test server (`TEST_DATABASE_URL`); each test gets fresh schemas.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::KeyRing;
use sql_backend::testing::fresh_schema_url;

use crate::clients::{
    ALL_FEATURES, AuthClients, UserInfoClients, auth_code, consent_token, outcome, reason,
};
use crate::process::{AUTH_SERVICE, Env, ServiceProcess, USERINFO_SERVICE};
use crate::{Dice, within};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

/// Two of each service; see the module doc.
struct Replicas {
    auth: [ServiceProcess; 2],
    userinfo: [ServiceProcess; 2],
    auth_database: String,
}

impl Replicas {
    /// Starts both auth replicas (the first migrates), then both userinfo replicas; `auth`
    /// adjusts the auth replicas' environment.
    async fn start(auth: impl Fn(Env) -> Env) -> Replicas {
        let auth_database = fresh_schema_url("faults_auth").await;
        let userinfo_database = fresh_schema_url("faults_userinfo").await;
        let a = ServiceProcess::start(AUTH_SERVICE, &auth(Env::auth(&auth_database))).await;
        let b = ServiceProcess::start(AUTH_SERVICE, &auth(Env::auth(&auth_database))).await;
        let (env_one, env_two) = (
            Env::userinfo(&userinfo_database, a.addr),
            Env::userinfo(&userinfo_database, b.addr),
        );
        let (one, two) = tokio::join!(
            ServiceProcess::start(USERINFO_SERVICE, &env_one),
            ServiceProcess::start(USERINFO_SERVICE, &env_two)
        );
        Replicas {
            auth: [a, b],
            userinfo: [one, two],
            auth_database,
        }
    }

    fn auth(&self, replica: usize) -> AuthClients {
        AuthClients(self.auth[replica % 2].channel.clone())
    }

    fn userinfo(&self, replica: usize) -> UserInfoClients {
        UserInfoClients(self.userinfo[replica % 2].channel.clone())
    }

    /// Returns once both userinfo replicas hold every rule appended so far: a fence user's
    /// withdrawal through auth replica A is appended last, and each verifier applies the log
    /// in order, so once both refuse the fence's token they hold everything before it.
    async fn fence(&self, app_id: &str) {
        let fence = format!(
            "fence-{}",
            hex::encode(&miniprogram_token::random_bytes().unwrap()[..4])
        );
        let grant = self
            .auth(0)
            .consent(&fence, app_id, &[UserInfo])
            .await
            .expect("fence grant");
        let token = consent_token(&grant);
        self.auth(0)
            .withdraw(&fence, app_id, &[])
            .await
            .expect("fence withdrawal");
        let started = Instant::now();
        for replica in 0..2 {
            loop {
                let seen = self.userinfo(replica).open_user_info(&token).await;
                if seen.as_ref().err().and_then(ErrorReason::of)
                    == Some(ErrorReason::InvalidAuthRelations)
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "userinfo replica {replica} did not catch up: {}",
                    outcome(&seen)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Guards the single use of an auth code under any concurrency: `GrantRepo::spend_code`'s one
/// conditional `UPDATE ... WHERE ... used_at IS NULL ... RETURNING *`
/// (auth-service/src/store/sql.rs). 1,000 codes, each exchanged at the same moment through both
/// auth-service replicas, are each exchanged exactly once; the other exchange is `USED_CODE`.
/// Seen failing with `AND used_at IS NULL` removed (both exchanges of most codes succeeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_a_code_raced_through_two_replicas_is_exchanged_exactly_once() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(150), "1,000 raced codes", async {
        // Each of the 20 users holds 50 codes before any is exchanged.
        let replicas = Replicas::start(|env| env.set("MAX_OPEN_CODES_PER_USER", "50")).await;
        let (app_id, secret) = replicas.auth(0).create_app(&ALL_FEATURES).await;
        let codes: Vec<String> = futures::stream::iter(0..1000)
            .map(|i| {
                let auth = replicas.auth(i);
                let app_id = app_id.clone();
                async move {
                    let user = format!("u{}", i % 20);
                    auth_code(
                        &auth
                            .consent(&user, &app_id, &[AuthBase])
                            .await
                            .expect("auth_base grant"),
                    )
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let outcomes: Vec<(String, String)> = futures::stream::iter(codes)
            .map(|code| {
                let (a, b) = (replicas.auth(0), replicas.auth(1));
                let (app_id, secret) = (app_id.clone(), secret.clone());
                async move {
                    let (x, y) = tokio::join!(
                        a.exchange(&app_id, &secret, &code),
                        b.exchange(&app_id, &secret, &code)
                    );
                    (outcome(&x), outcome(&y))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let twice = outcomes
            .iter()
            .filter(|(x, y)| x == "OK" && y == "OK")
            .count();
        let once = outcomes
            .iter()
            .filter(|(x, y)| (x == "OK" && y == "UsedCode") || (x == "UsedCode" && y == "OK"))
            .count();
        let other: Vec<_> = outcomes
            .iter()
            .filter(|(x, y)| !(x == "OK" && y == "UsedCode" || x == "UsedCode" && y == "OK"))
            .take(5)
            .collect();
        assert_eq!(twice, 0, "codes exchanged twice (of 1,000)");
        assert_eq!(
            once, 1000,
            "every code exactly once, the other USED_CODE; e.g. {other:?}"
        );
    })
    .await;
}

/// A withdrawal through either auth replica is refused by both userinfo replicas within a
/// second, timed on the monotonic clock from the moment RevokeAuthorization is sent. The
/// replica that appends a rule wakes its own streams at once; the other learns of it by
/// reading the log again. Guards that re-read (`RevocationLog::watch`'s poll of the log,
/// auth-service/src/revocations.rs); seen failing with it removed (replica 2 never refused a
/// withdrawal made through replica A).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_a_withdrawal_through_either_replica_is_refused_everywhere_within_a_second() {
    let _quiet = crate::alone().await;
    within(Duration::from_secs(90), "withdrawals seen by both replicas", async {
        let replicas = Replicas::start(|env| env).await;
        let (app_id, _) = replicas.auth(0).create_app(&ALL_FEATURES).await;
        let mut slowest = Duration::ZERO;
        for round in 0..10 {
            let user = format!("u{round}");
            replicas.userinfo(0).upsert(userinfo_service::testing::demo_profile(&user)).await.unwrap();
            let token = consent_token(&replicas.auth(round).consent(&user, &app_id, &[UserInfo]).await.unwrap());
            for replica in 0..2 {
                let seen = replicas.userinfo(replica).open_user_info(&token).await;
                assert_eq!(outcome(&seen), "OK", "replica {replica} before the withdrawal");
            }
            // Let the streams go idle, the case where only a re-read of the log brings news.
            tokio::time::sleep(Duration::from_millis(100 + 37 * round as u64)).await;
            replicas.auth(round + 1).withdraw(&user, &app_id, &[]).await.unwrap();
            // Timed from the acknowledgement: the bound is on the news reaching both verifiers.
            let sent = Instant::now();
            let refused = |replica: usize| {
                let userinfo = replicas.userinfo(replica);
                let token = token.clone();
                async move {
                    loop {
                        let seen = userinfo.open_user_info(&token).await;
                        if outcome(&seen) == "InvalidAuthRelations" {
                            return sent.elapsed();
                        }
                        assert!(
                            sent.elapsed() < Duration::from_secs(5),
                            "replica {replica}: {} 5 s after the withdrawal",
                            outcome(&seen)
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            let (one, two) = tokio::join!(refused(0), refused(1));
            eprintln!("round {round}: withdrawn through replica {}: refused by userinfo 1 after {one:?}, by userinfo 2 after {two:?}", (round + 1) % 2);
            slowest = slowest.max(one).max(two);
            assert!(
                one < Duration::from_secs(1) && two < Duration::from_secs(1),
                "round {round}: refused after {one:?} and {two:?}: not within a second"
            );
        }
        eprintln!("slowest refusal of 20: {slowest:?}");
    })
    .await;
}

/// A signing key one replica creates (here by retiring the current key, which makes a
/// successor at once) mints at the other replica and verifies at both userinfo replicas, at
/// once for tokens of the replica that made it. Guards the key reload before ListTokenKeys
/// answers (`KeyRotation::ensure_current` in `KeyService::list_token_keys`,
/// auth-service/src/grpc/keys.rs): userinfo 2 asks replica B for a key id it does not know, and
/// B must reload to list it. Seen failing with that reload removed (userinfo 2 refused
/// replica A's new tokens as INVALID_ACCESS_TOKEN).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_a_key_made_by_one_replica_mints_and_verifies_everywhere() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(90), "keys across replicas", async {
        let replicas = Replicas::start(|env| env).await;
        let (app_id, _) = replicas.auth(0).create_app(&ALL_FEATURES).await;
        replicas
            .userinfo(0)
            .upsert(userinfo_service::testing::demo_profile("u1"))
            .await
            .unwrap();
        replicas
            .auth(0)
            .consent("u1", &app_id, &[UserInfo])
            .await
            .unwrap();
        for round in 0..3 {
            let listed = replicas
                .auth(0)
                .key_admin()
                .list_signing_keys(pb::ListSigningKeysRequest {})
                .await
                .unwrap()
                .into_inner();
            let retired = replicas
                .auth(0)
                .key_admin()
                .retire_signing_key(pb::RetireSigningKeyRequest {
                    key_id: listed.current_key_id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            let successor = retired.current_key_id;
            assert_ne!(successor, listed.current_key_id);
            let from_a = consent_token(
                &replicas
                    .auth(0)
                    .consent("u1", &app_id, &[UserInfo])
                    .await
                    .unwrap(),
            );
            // Replica B's own rotation check may make a successor at the same moment; either is
            // fine so long as it is not the retired key and every verifier accepts it.
            let minted_with = KeyRing::key_id_of(&from_a).unwrap();
            assert_ne!(minted_with, listed.current_key_id, "round {round}: minted with the retired key");
            for replica in [1, 0] {
                let seen = replicas.userinfo(replica).open_user_info(&from_a).await;
                assert_eq!(
                    outcome(&seen),
                    "OK",
                    "round {round}: userinfo {} refused a token of replica A's new key",
                    replica + 1
                );
            }
            // B mints with A's new key once it has loaded it; or, if B's own rotation check
            // made a successor in the same moment, both replicas settle on one of the two.
            let started = Instant::now();
            let mut a_mints_with = minted_with.clone();
            let from_b = loop {
                let token = consent_token(
                    &replicas
                        .auth(1)
                        .consent("u1", &app_id, &[UserInfo])
                        .await
                        .unwrap(),
                );
                let b_mints_with = KeyRing::key_id_of(&token).unwrap();
                if b_mints_with == minted_with || b_mints_with == a_mints_with {
                    break token;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "round {round}: replica B still mints with another key 2 s after A minted with a new one"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                let from_a = replicas.auth(0).consent("u1", &app_id, &[UserInfo]).await;
                a_mints_with = KeyRing::key_id_of(&consent_token(&from_a.unwrap())).unwrap();
            };
            for replica in 0..2 {
                let seen = replicas.userinfo(replica).open_user_info(&from_b).await;
                assert_eq!(
                    outcome(&seen),
                    "OK",
                    "round {round}: userinfo {}",
                    replica + 1
                );
            }
            // The verifiers refetch an unknown key at most once a second.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    })
    .await;
}

/// Both replicas sweep every 100 ms, in batches of 5, while codes, refresh tokens and
/// revocation rules live a few seconds: nothing live is deleted. A code is exchanged through
/// the other replica at 75% of its life; a spent code replayed after its own expiry (while its
/// refresh family lives) is still known as spent (USED_CODE, so the family is voided); a
/// refresh token rotates at 75% of its life; and a userinfo replica started after many sweeps
/// still refuses a token withdrawn before them (its rule is still in the log). Guards the
/// sweeps' bounds (`SWEEPS`, auth-service/src/store/sql.rs: `purge_at <= $1` for codes,
/// `expire_at <= $1` for rules) and `keep_code_until`. Seen failing with codes swept by
/// `expires_at` instead of `purge_at` (the late replay was INVALID_CODE) and with rules swept
/// by `issued_before` (the new replica accepted the withdrawn token).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_sweepers_on_both_replicas_never_delete_a_live_row() {
    let _quiet = crate::alone().await;
    within(Duration::from_secs(90), "sweepers", async {
        let replicas = Replicas::start(|env| {
            env.set("SWEEP_INTERVAL", "100ms")
                .set("SWEEP_BATCH", "5")
                .set("AUTH_CODE_TTL", "2s")
                .set("ACCESS_TOKEN_TTL", "3s")
                .set("CONSENT_TOKEN_TTL", "3s")
                .set("REFRESH_TOKEN_TTL", "8s")
        })
        .await;
        let (app_id, secret) = replicas.auth(0).create_app(&ALL_FEATURES).await;
        let (a, b) = (replicas.auth(0), replicas.auth(1));
        // Rows for the sweepers to find: expired codes and prompts, all the time.
        let churn_stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (a, app_id, stop) = (a.clone(), app_id.clone(), churn_stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("churn{}", n % 50);
                    let _ = a.request(&user, &app_id, &[AuthBase]).await;
                    let _ = a.request(&user, &app_id, &[UserInfo]).await;
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        replicas
            .userinfo(0)
            .upsert(userinfo_service::testing::demo_profile("w1"))
            .await
            .unwrap();
        let withdrawn = consent_token(&a.consent("w1", &app_id, &[UserInfo]).await.unwrap());
        a.withdraw("w1", &app_id, &[]).await.unwrap();
        let t0 = Instant::now();

        let late_code = auth_code(&a.consent("u1", &app_id, &[AuthBase]).await.unwrap());
        let spent = auth_code(&a.consent("u2", &app_id, &[AuthBase]).await.unwrap());
        let pair = b
            .exchange(&app_id, &secret, &spent)
            .await
            .expect("fresh code");

        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed())).await;
        let late = b.exchange(&app_id, &secret, &late_code).await;
        assert_eq!(outcome(&late), "OK", "a code exchanged at 75% of its life");

        // The new userinfo replica replays the log after ~20 sweeps of each replica.
        let fresh = ServiceProcess::start(
            USERINFO_SERVICE,
            &Env::userinfo(
                &fresh_schema_url("faults_userinfo").await,
                replicas.auth[1].addr,
            ),
        )
        .await;
        let fresh = UserInfoClients(fresh.channel.clone());
        fresh
            .upsert(userinfo_service::testing::demo_profile("w1"))
            .await
            .unwrap();
        let seen = fresh.open_user_info(&withdrawn).await;
        assert_eq!(
            outcome(&seen),
            "InvalidAuthRelations",
            "a token withdrawn {:?} ago, 3 s lifetime, at a verifier started since",
            t0.elapsed()
        );

        tokio::time::sleep(Duration::from_millis(5500).saturating_sub(t0.elapsed())).await;
        // The code expired at 2 s and would be purged at 5 s, but its family's refresh token
        // lives until 8 s, and the code is kept as long.
        let replay = a.exchange(&app_id, &secret, &spent).await;
        assert_eq!(
            outcome(&replay),
            "UsedCode",
            "a spent code replayed after its expiry"
        );

        let pair2 = b
            .refresh(&app_id, &secret, &late.unwrap().refresh_token)
            .await;
        assert_eq!(
            outcome(&pair2),
            "OK",
            "a refresh token rotated at ~50% of its life"
        );
        tokio::time::sleep(Duration::from_millis(5500)).await;
        let pair3 = a
            .refresh(&app_id, &secret, &pair2.unwrap().refresh_token)
            .await;
        assert_eq!(
            outcome(&pair3),
            "OK",
            "a refresh token rotated at ~70% of its life"
        );
        drop(pair);
        churn_stop.store(true, Ordering::Relaxed);
        churn.await.unwrap();
    })
    .await;
}

/// Sixteen writers, eight on each auth replica, append revocation rules (RevokeToken, each its
/// own app) while a reader takes snapshot after snapshot of the log and each replica serves a
/// revocation stream: every snapshot is gap-free (sequences become visible in order, so a
/// verifier resuming "after N" never skips a smaller sequence committed later), the final log
/// is gap-free, and each stream delivers every rule once, in order. Guards the append lock
/// (`REVOCATION_APPEND_LOCK`, taken by `RevocationRepo::append` through `Session::lock`: a
/// PostgreSQL advisory lock, auth-service/src/store/sql.rs). Seen failing with it removed:
/// snapshots showed a sequence before a smaller one had committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_revocation_sequences_stay_gap_free_and_in_commit_order_under_16_writers() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(120), "16 writers", async {
        const WRITERS: usize = 16;
        const RULES_EACH: usize = 40;
        let replicas = Replicas::start(|env| env).await;
        let mut apps = Vec::new();
        for writer in 0..WRITERS {
            let auth = replicas.auth(writer);
            let (app_id, secret) = auth.create_app(&ALL_FEATURES).await;
            let mut tokens = Vec::new();
            for _ in 0..RULES_EACH {
                tokens.push(consent_token(
                    &auth.consent("u1", &app_id, &[UserInfo]).await.unwrap(),
                ));
            }
            apps.push((app_id, secret, tokens));
        }
        let streams: Vec<_> = (0..2)
            .map(|replica| {
                let verifier = replicas.auth(replica).verifier();
                tokio::spawn(follow(verifier))
            })
            .collect();
        let done = Arc::new(AtomicBool::new(false));
        let snapshots = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(snapshot_reader(
            replicas.auth_database.clone(),
            done.clone(),
            snapshots.clone(),
        ));
        let writers: Vec<_> = apps
            .into_iter()
            .enumerate()
            .map(|(writer, (app_id, secret, tokens))| {
                let auth = replicas.auth(writer);
                tokio::spawn(async move {
                    for token in tokens {
                        auth.backend(&app_id, &secret)
                            .revoke_token(pb::RevokeTokenRequest { token })
                            .await
                            .expect("revoke token");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let holes = reader.await.unwrap();
        let log = sequences(&replicas.auth_database).await;
        assert_eq!(
            log.len(),
            WRITERS * RULES_EACH,
            "one rule per revoked token"
        );
        assert_eq!(
            log.last().copied().unwrap_or(0) - log[0] + 1,
            log.len() as i64,
            "the log has a gap"
        );
        assert!(
            holes.is_empty(),
            "{} of {} snapshots showed a sequence before a smaller one, e.g. {:?}",
            holes.len(),
            snapshots.load(Ordering::Relaxed),
            holes.first()
        );
        let expected: Vec<u64> = log.iter().map(|s| *s as u64).collect();
        for (replica, stream) in streams.into_iter().enumerate() {
            let last = *expected.last().unwrap();
            let received = stream.await.unwrap()(last).await;
            assert_eq!(
                received, expected,
                "replica {replica}'s stream skipped, repeated or reordered rules"
            );
        }
        eprintln!(
            "{} rules, {} snapshots, all gap-free",
            log.len(),
            snapshots.load(Ordering::Relaxed)
        );
    })
    .await;
}

type Received = Box<dyn FnOnce(u64) -> futures::future::BoxFuture<'static, Vec<u64>> + Send>;

/// Follows a replica's revocation stream from the start; returns a function that waits (up to
/// 10 s) until sequence `last` arrived and hands over every sequence received, in order.
async fn follow(
    mut verifier: pb::key_service_client::KeyServiceClient<crate::clients::Authed>,
) -> Received {
    let (tx, rx) = tokio::sync::watch::channel(Vec::<u64>::new());
    let mut stream = verifier
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .expect("watch revocations")
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            if let Some(event) = message.event {
                tx.send_modify(|seen| seen.push(event.sequence));
            }
        }
    });
    Box::new(move |last| {
        Box::pin(async move {
            let mut rx = rx;
            let reached = tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|seen| seen.last().is_some_and(|s| *s >= last)),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            let seen = rx.borrow().clone();
            assert!(
                reached,
                "the stream never reached sequence {last}: got {} rules",
                seen.len()
            );
            seen
        })
    })
}

/// Every sequence in the log, in order.
async fn sequences(database: &str) -> Vec<i64> {
    let pool = sqlx::PgPool::connect(database).await.expect("connect");
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT sequence FROM revocations ORDER BY sequence")
        .fetch_all(&pool)
        .await
        .expect("read the log");
    pool.close().await;
    rows.into_iter().map(|(s,)| s).collect()
}

/// Reads the whole log again and again until `done`, counting snapshots; returns each
/// snapshot that was not gap-free (its sequences, trimmed to the hole).
async fn snapshot_reader(
    database: String,
    done: Arc<AtomicBool>,
    snapshots: Arc<AtomicUsize>,
) -> Vec<Vec<i64>> {
    let pool = sqlx::PgPool::connect(&database).await.expect("connect");
    let mut holes = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT sequence FROM revocations ORDER BY sequence")
                .fetch_all(&pool)
                .await
                .expect("read the log");
        snapshots.fetch_add(1, Ordering::Relaxed);
        if let Some(hole) = rows.windows(2).position(|w| w[1].0 != w[0].0 + 1) {
            holes.push(
                rows[hole.saturating_sub(1)..(hole + 2).min(rows.len())]
                    .iter()
                    .map(|r| r.0)
                    .collect(),
            );
        }
    }
    pool.close().await;
    holes
}

/// What one race round left behind: a credential obtained while a withdrawal or a feature
/// switch was under way, which must not outlive it.
enum Obtained {
    ConsentToken(String),
    Code {
        app_id: String,
        secret: String,
        code: String,
    },
}

impl Obtained {
    /// The credential a grant carries, with what it takes to exchange a code.
    fn from_grant(grant: pb::Grant, app_id: String, secret: String) -> Self {
        match grant.credential {
            Some(pb::grant::Credential::ConsentToken(t)) => Obtained::ConsentToken(t),
            Some(pb::grant::Credential::AuthCode(code)) => Obtained::Code {
                app_id,
                secret,
                code,
            },
            None => panic!("a grant without a credential"),
        }
    }
}

/// Asserts the race was run (some grant got a credential) and that every credential it got is
/// dead; `while_` and `outlived` name the racing change in the messages.
async fn assert_none_escaped(
    replicas: &Replicas,
    obtained: Vec<Option<Obtained>>,
    while_: &str,
    outlived: &str,
) {
    let raced = obtained.iter().filter(|o| o.is_some()).count();
    let escaped = check_dead(replicas, obtained).await;
    eprintln!("1,000 rounds: {raced} grants got a credential while the {while_} ran");
    assert!(raced > 0, "no grant got through: the race was never run");
    assert!(
        escaped.is_empty(),
        "{} credentials outlived their {outlived}, e.g. {:?}",
        escaped.len(),
        escaped.first()
    );
}

/// 1,000 rounds, each a grant through one auth replica racing, through the other, the
/// withdrawal of the same user's authorization (half for `userInfo`, a consent token; half for
/// `auth_base`+`phoneNumber`, an auth code), each round on a user of its own so no later rule
/// hides an escaped token. Whatever the grant got must be dead once the withdrawal is applied:
/// both userinfo replicas refuse the consent token, and the code neither exchanges nor yields a
/// live access token. Guards the order between grants and withdrawals: `withdraw` stamps its
/// rule once the authorization row is held, and grants read the authorization in order
/// (`ConsentRepo::authorization` with `Access::InOrder`, `FOR SHARE`). Seen failing with the
/// grants' read made plain (`Access::Read`): tokens minted during a withdrawal escaped its rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_grants_racing_withdrawals_across_replicas_never_outlive_them() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(180),
        "1,000 grant/withdrawal races",
        async {
            let replicas = Replicas::start(|env| env).await;
            let (app_id, secret) = replicas.auth(0).create_app(&ALL_FEATURES).await;
            let mut dice = Dice::seeded("grants racing withdrawals");
            let delays: Vec<u64> = (0..1000).map(|_| dice.between(0, 3)).collect();
            let obtained: Vec<Option<Obtained>> = futures::stream::iter(0..1000usize)
                .map(|round| {
                    let (grantor, withdrawer) = (replicas.auth(round), replicas.auth(round + 1));
                    let (app_id, secret) = (app_id.clone(), secret.clone());
                    let delay = Duration::from_millis(delays[round]);
                    async move {
                        let user = format!("r{round}");
                        let scopes: &[pb::Scope] = if round % 2 == 0 {
                            &[UserInfo]
                        } else {
                            &[AuthBase, PhoneNumber]
                        };
                        grantor
                            .consent(&user, &app_id, scopes)
                            .await
                            .expect("consent");
                        let grant = async {
                            if round % 4 < 2 {
                                tokio::time::sleep(delay).await;
                            }
                            grantor.request(&user, &app_id, scopes).await
                        };
                        let withdrawal = async {
                            if round % 4 >= 2 {
                                tokio::time::sleep(delay).await;
                            }
                            withdrawer.withdraw(&user, &app_id, &[]).await
                        };
                        let (granted, withdrawn) = tokio::join!(grant, withdrawal);
                        withdrawn.expect("withdrawal");
                        match granted.expect("request") {
                            pb::request_authorization_response::Result::Prompt(_) => None,
                            pb::request_authorization_response::Result::Grant(g) => {
                                Some(Obtained::from_grant(g, app_id, secret))
                            }
                        }
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            replicas.fence(&app_id).await;
            assert_none_escaped(&replicas, obtained, "withdrawal", "withdrawal").await;
        },
    )
    .await;
}

/// 1,000 rounds, each on a mini program of its own: a grant through one auth replica races,
/// through the other, DisableFeature of the feature it needs (`FEATURE_BASIC_USER_INFO` for a
/// consent token, `FEATURE_PHONE_NUMBER` for a code). Whatever the grant got must be dead once
/// the switch is applied. Guards the order between grants and feature switches:
/// `disable_feature` stamps its rule once the app row is held, and grants read the app's
/// features in order (`AppRepo::get_in_order`, `FOR SHARE`). Seen failing with that read made
/// plain (`AppRepo::get`). A grant is never prompted for (the switch-off withdraws the consent
/// in the commit that switches the feature off, and `ConsentFlow::request` reads the
/// authorization before the app): seen failing with the two reads the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_grants_racing_feature_switches_across_replicas_never_outlive_them() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(180),
        "1,000 grant/feature-switch races",
        async {
            let replicas = Replicas::start(|env| env).await;
            let (fence_app, _) = replicas.auth(0).create_app(&ALL_FEATURES).await;
            let mut dice = Dice::seeded("grants racing feature switches");
            let delays: Vec<u64> = (0..1000).map(|_| dice.between(0, 3)).collect();
            let obtained: Vec<Option<Obtained>> = futures::stream::iter(0..1000usize)
                .map(|round| {
                    let (grantor, switcher) = (replicas.auth(round), replicas.auth(round + 1));
                    let delay = Duration::from_millis(delays[round]);
                    async move {
                        let (app_id, secret) = grantor.create_app(&ALL_FEATURES).await;
                        let (scopes, feature): (&[pb::Scope], _) = if round % 2 == 0 {
                            (&[UserInfo], pb::Feature::BasicUserInfo)
                        } else {
                            (&[AuthBase, PhoneNumber], pb::Feature::PhoneNumber)
                        };
                        grantor
                            .consent("u1", &app_id, scopes)
                            .await
                            .expect("consent");
                        let grant = async {
                            if round % 4 < 2 {
                                tokio::time::sleep(delay).await;
                            }
                            grantor.request("u1", &app_id, scopes).await
                        };
                        let switch = async {
                            if round % 4 >= 2 {
                                tokio::time::sleep(delay).await;
                            }
                            switcher
                                .admin()
                                .disable_feature(pb::DisableFeatureRequest {
                                    app_id: app_id.clone(),
                                    feature: feature as i32,
                                })
                                .await
                        };
                        let (granted, switched) = tokio::join!(grant, switch);
                        switched.expect("disable feature");
                        match granted {
                            Err(e) if reason(&e) == ErrorReason::InsufficientIsvPermissions => None,
                            Err(e) => panic!("round {round}: the grant failed with {e:?}"),
                            Ok(pb::request_authorization_response::Result::Prompt(_)) => {
                                panic!("round {round}: consented scopes prompted again")
                            }
                            Ok(pb::request_authorization_response::Result::Grant(g)) => {
                                Some(Obtained::from_grant(g, app_id, secret))
                            }
                        }
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            replicas.fence(&fence_app).await;
            assert_none_escaped(&replicas, obtained, "switch", "feature").await;
        },
    )
    .await;
}

/// Checks that every credential is dead: a consent token refused by both userinfo replicas as
/// revoked, a code that exchanges to nothing (or to an access token introspection calls
/// inactive). Returns a description of each one that is not.
async fn check_dead(replicas: &Replicas, obtained: Vec<Option<Obtained>>) -> Vec<String> {
    let escaped: Vec<Option<String>> = futures::stream::iter(obtained.into_iter().flatten())
        .map(|credential| async move {
            match credential {
                Obtained::ConsentToken(token) => {
                    let (one, two) = (replicas.userinfo(0), replicas.userinfo(1));
                    let (one, two) =
                        tokio::join!(one.open_user_info(&token), two.open_user_info(&token));
                    let (one, two) = (outcome(&one), outcome(&two));
                    (one != "InvalidAuthRelations" || two != "InvalidAuthRelations")
                        .then(|| format!("consent token: userinfo 1 {one}, userinfo 2 {two}"))
                }
                Obtained::Code {
                    app_id,
                    secret,
                    code,
                } => {
                    let exchanged = replicas.auth(0).exchange(&app_id, &secret, &code).await;
                    match exchanged {
                        Err(_) => None,
                        Ok(pair) => {
                            let active = replicas
                                .auth(1)
                                .active(&app_id, &secret, &pair.access_token)
                                .await;
                            (active.as_ref().ok() != Some(&false))
                                .then(|| format!("code exchanged, access token active: {active:?}"))
                        }
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    escaped.into_iter().flatten().collect()
}
