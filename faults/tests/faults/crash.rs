//! Crash safety on the embedded default: a service process SIGKILLed fifty times at random
//! moments while a load generator writes through it. After each kill the SQLite file passes
//! `PRAGMA integrity_check`, the revocation log has no gap and no withdrawal is half written;
//! after each restart every write the service acknowledged is there, and no spent code or
//! rotated refresh token works again.
//!
//! What a SIGKILL cannot show: the loss of what the operating system had not yet written to
//! the disk (a power cut). That is what `synchronous=FULL` is for (see
//! `sql_backend`'s `sqlite_commits_are_synced_to_disk_before_they_are_acknowledged`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;

use crate::clients::{ALL_FEATURES, AuthClients, UserInfoClients, auth_code, outcome};
use crate::process::{AUTH_SERVICE, Env, ServiceProcess, USERINFO_SERVICE};
use crate::{Dice, within};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

/// Kills per service. Each costs a restart (about 0.2 s for a debug build) and a check.
const KILLS: usize = 50;
/// Load generators writing at once.
const WORKERS: usize = 6;

/// What a user's flow got acknowledged, in order: consent, code, exchange, refresh, withdrawal.
#[derive(Debug, Default, Clone)]
struct UserFlow {
    consented: bool,
    withdrawal_sent: bool,
    withdrawn: bool,
    /// Codes whose exchange was acknowledged: replays must fail.
    spent_codes: Vec<String>,
    /// Refresh tokens whose rotation was acknowledged: reuse must fail.
    rotated: Vec<String>,
    /// The newest access token, voided by an acknowledged withdrawal.
    access_token: Option<String>,
}

/// Everything the load generators were told happened, per user, since the last check.
#[derive(Default)]
struct Acknowledged {
    users: BTreeMap<String, UserFlow>,
    writes: usize,
}

type Ledger = Arc<Mutex<Acknowledged>>;

fn record(ledger: &Ledger, user: &str, writes: usize, change: impl FnOnce(&mut UserFlow)) {
    let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
    ledger.writes += writes;
    change(ledger.users.entry(user.to_owned()).or_default());
}

/// One user's whole flow through `auth`, recording each acknowledged step; stops at the first
/// failure (the process was killed under it).
async fn user_flow(auth: &AuthClients, app: &(String, String), user: &str, ledger: &Ledger) {
    let (app_id, secret) = app;
    record(ledger, user, 0, |_| {});
    if auth.consent(user, app_id, &[UserInfo]).await.is_err() {
        return;
    }
    record(ledger, user, 2, |f| f.consented = true);
    let Ok(grant) = auth.consent(user, app_id, &[AuthBase, PhoneNumber]).await else {
        return;
    };
    record(ledger, user, 2, |_| {});
    let code = auth_code(&grant);
    let Ok(pair) = auth.exchange(app_id, secret, &code).await else {
        return;
    };
    record(ledger, user, 1, |f| {
        f.spent_codes.push(code);
        f.access_token = Some(pair.access_token.clone());
    });
    let Ok(next) = auth.refresh(app_id, secret, &pair.refresh_token).await else {
        return;
    };
    record(ledger, user, 1, |f| {
        f.rotated.push(pair.refresh_token);
        f.access_token = Some(next.access_token);
    });
    record(ledger, user, 0, |f| f.withdrawal_sent = true);
    if auth.withdraw(user, app_id, &[]).await.is_ok() {
        record(ledger, user, 1, |f| f.withdrawn = true);
    }
}

/// Runs [`WORKERS`] load generators through `auth` until `stop`; each user runs one flow.
fn start_load(
    auth: AuthClients,
    app: (String, String),
    epoch: usize,
    ledger: Ledger,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinSet<()> {
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (auth, app, ledger, stop) = (auth.clone(), app.clone(), ledger.clone(), stop.clone());
        workers.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let user = format!("e{epoch}-w{worker}-u{n}");
                user_flow(&auth, &app, &user, &ledger).await;
                n += 1;
            }
        });
    }
    workers
}

/// Checks a killed service's SQLite file: intact, a gap-free revocation log, and no
/// withdrawal without its rule (a withdrawal stamps the authorization and appends a rule with
/// the same time in one transaction). Returns the number of rules.
async fn check_auth_file(path: &Path) -> i64 {
    let pool = open_file(path).await;
    let (rules, first, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(MIN(sequence), 1), COALESCE(MAX(sequence), 0) FROM revocations",
    )
    .fetch_one(&pool)
    .await
    .expect("read the log");
    assert_eq!(last - first + 1, rules, "the revocation log has a gap");
    let half_written: Vec<(String,)> = sqlx::query_as(crate::HALF_WRITTEN_WITHDRAWALS)
        .fetch_all(&pool)
        .await
        .expect("read authorizations");
    assert!(
        half_written.is_empty(),
        "withdrawals without their rule: {half_written:?}"
    );
    pool.close().await;
    rules
}

/// Opens a killed service's SQLite file (recovering its WAL, as a restart would) and asserts
/// `PRAGMA integrity_check` says ok.
async fn open_file(path: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the file");
    let (integrity,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .expect("integrity check");
    assert_eq!(integrity, "ok", "{} after a SIGKILL", path.display());
    pool
}

/// Checks, through a restarted auth-service, what the users of one epoch were acknowledged.
async fn check_acknowledged(
    auth: &AuthClients,
    app: &(String, String),
    users: &BTreeMap<String, UserFlow>,
) {
    let (app_id, secret) = app;
    for (user, flow) in users {
        let listed = auth
            .wallet()
            .list_authorizations(pb::ListAuthorizationsRequest {
                user_id: user.clone(),
            })
            .await
            .expect("list authorizations")
            .into_inner()
            .authorizations;
        let holds = listed.iter().any(|a| &a.app_id == app_id);
        if flow.withdrawn {
            assert!(!holds, "{user}: an acknowledged withdrawal was lost");
        } else if flow.consented && !flow.withdrawal_sent {
            assert!(holds, "{user}: an acknowledged consent was lost");
        }
        for code in &flow.spent_codes {
            let replay = auth.exchange(app_id, secret, code).await;
            assert_eq!(
                outcome(&replay),
                "UsedCode",
                "{user}: a spent code after a restart"
            );
        }
        for token in &flow.rotated {
            let reuse = auth.refresh(app_id, secret, token).await;
            assert!(
                reuse.is_err(),
                "{user}: a rotated refresh token worked again after a restart"
            );
        }
        if flow.withdrawn
            && let Some(token) = &flow.access_token
        {
            let active = auth
                .active(app_id, secret, token)
                .await
                .expect("introspect");
            assert!(
                !active,
                "{user}: an access token outlived an acknowledged withdrawal"
            );
        }
    }
}

/// auth-service SIGKILLed fifty times at random moments while six load generators consent,
/// exchange codes, refresh and withdraw through it. Guards each call's single write
/// transaction on SQLite (`Pools::begin` / `Session::commit` in sql-backend, committed before
/// the call answers) and the WAL journal that makes it atomic across a crash
/// (`SqliteJournalMode::Wal` in sql-backend's `try_open_sqlite`). Seen failing with a withdrawal split into two
/// transactions (the authorization's commit before the rule's): a kill between them left a
/// withdrawal without its rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_service_killed_fifty_times_under_load_keeps_every_acknowledged_write() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(240), "fifty kills of auth-service", async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.db");
        let env = Env::auth(&format!("sqlite://{}", file.display()));
        let mut dice = Dice::seeded("auth-service kills");
        let mut auth = ServiceProcess::start(AUTH_SERVICE, &env).await;
        let app = AuthClients(auth.channel.clone()).create_app(&ALL_FEATURES).await;
        let (mut writes, mut rules, started) = (0, 0, Instant::now());
        for epoch in 0..KILLS {
            let ledger = Ledger::default();
            let stop = Arc::new(AtomicBool::new(false));
            let clients = AuthClients(auth.channel.clone());
            let mut load = start_load(clients, app.clone(), epoch, ledger.clone(), stop.clone());
            tokio::time::sleep(Duration::from_millis(dice.between(50, 400))).await;
            auth.kill();
            stop.store(true, Ordering::Relaxed);
            while load.join_next().await.is_some() {}
            rules = check_auth_file(&file).await;
            auth = ServiceProcess::start(AUTH_SERVICE, &env).await;
            let acknowledged = std::mem::take(&mut *ledger.lock().unwrap_or_else(|e| e.into_inner()));
            writes += acknowledged.writes;
            check_acknowledged(&AuthClients(auth.channel.clone()), &app, &acknowledged.users).await;
        }
        eprintln!(
            "{KILLS} kills in {:?}: {writes} acknowledged writes kept, {rules} rules in a gap-free log",
            started.elapsed()
        );
        assert!(writes > KILLS * 10, "the load wrote too little to test anything: {writes}");
    })
    .await;
}

/// A profile's state as acknowledged: its version (in `nick_name`), or deleted.
type ProfileState = Option<u32>;

/// What a userinfo load generator knows of its user: the acknowledged state, and the state a
/// write in flight when the process died would have made (either may be found after).
#[derive(Debug, Clone, Copy, Default)]
struct ProfileLedger {
    acknowledged: ProfileState,
    in_flight: Option<ProfileState>,
}

fn versioned_profile(user: &str, version: u32) -> upb::Profile {
    upb::Profile {
        nick_name: format!("v{version}"),
        ..userinfo_service::testing::demo_profile(user)
    }
}

/// userinfo-service SIGKILLed fifty times at random moments while six load generators upsert
/// and delete profiles through it: after each restart every user's profile is as last
/// acknowledged (or as the write in flight at the kill would have left it), and the file
/// passes `PRAGMA integrity_check`. Guards the same write path as the auth-service test, on
/// userinfo-service's store (`ProfileStore::upsert`/`delete`, one statement each, committed
/// before the answer). Seen failing with the upsert answered before its write finished (the
/// store call spawned instead of awaited): acknowledged versions were missing after a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn userinfo_service_killed_fifty_times_under_load_keeps_every_acknowledged_profile() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(240), "fifty kills of userinfo-service", async {
        let dir = tempfile::tempdir().unwrap();
        let auth = ServiceProcess::start(
            AUTH_SERVICE,
            &Env::auth(&format!("sqlite://{}", dir.path().join("auth.db").display())),
        )
        .await;
        let file = dir.path().join("userinfo.db");
        let env = Env::userinfo(&format!("sqlite://{}", file.display()), auth.addr);
        let mut dice = Dice::seeded("userinfo-service kills");
        let mut userinfo = ServiceProcess::start(USERINFO_SERVICE, &env).await;
        let users: Vec<String> = (0..WORKERS * 4).map(|i| format!("p{i}")).collect();
        let ledger: Arc<Mutex<BTreeMap<String, ProfileLedger>>> = Arc::default();
        let (writes, started) = (Arc::new(AtomicUsize::new(0)), Instant::now());
        for _ in 0..KILLS {
            let stop = Arc::new(AtomicBool::new(false));
            let mut load = tokio::task::JoinSet::new();
            for worker in 0..WORKERS {
                let clients = UserInfoClients(userinfo.channel.clone());
                let (ledger, stop, writes) = (ledger.clone(), stop.clone(), writes.clone());
                let mine: Vec<String> = users.iter().skip(worker).step_by(WORKERS).cloned().collect();
                load.spawn(async move {
                    let mut turn = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let user = &mine[turn % mine.len()];
                        turn += 1;
                        let state = ledger.lock().unwrap_or_else(|e| e.into_inner()).get(user).copied().unwrap_or_default();
                        let next: ProfileState = if turn.is_multiple_of(5) && state.acknowledged.is_some() {
                            None
                        } else {
                            Some(state.acknowledged.map_or(1, |v| v + 1))
                        };
                        ledger.lock().unwrap_or_else(|e| e.into_inner()).entry(user.clone()).or_default().in_flight = Some(next);
                        let written = match next {
                            Some(version) => clients.upsert(versioned_profile(user, version)).await,
                            None => clients
                                .profiles()
                                .delete_profile(upb::DeleteProfileRequest { user_id: user.clone() })
                                .await
                                .map(drop),
                        };
                        if written.is_err() {
                            return;
                        }
                        writes.fetch_add(1, Ordering::Relaxed);
                        let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
                        let entry = ledger.entry(user.clone()).or_default();
                        *entry = ProfileLedger { acknowledged: next, in_flight: None };
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(dice.between(50, 400))).await;
            userinfo.kill();
            stop.store(true, Ordering::Relaxed);
            while load.join_next().await.is_some() {}
            open_file(&file).await.close().await;
            userinfo = ServiceProcess::start(USERINFO_SERVICE, &env).await;
            let clients = UserInfoClients(userinfo.channel.clone());
            let expected = ledger.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (user, state) in expected {
                let found = clients
                    .profiles()
                    .get_profile(upb::GetProfileRequest { user_id: user.clone() })
                    .await;
                let found: ProfileState = match &found {
                    Ok(r) => {
                        let profile = r.get_ref().profile.clone().expect("profile");
                        Some(profile.nick_name.trim_start_matches('v').parse().expect("a version"))
                    }
                    Err(e) if miniprogram_proto::ErrorReason::of(e) == Some(miniprogram_proto::ErrorReason::ProfileNotFound) => None,
                    Err(e) => panic!("{user}: {e:?}"),
                };
                assert!(
                    found == state.acknowledged || Some(found) == state.in_flight,
                    "{user}: found {found:?} after a restart, acknowledged {:?}, in flight {:?}",
                    state.acknowledged,
                    state.in_flight
                );
                let known = ProfileLedger { acknowledged: found, in_flight: None };
                ledger.lock().unwrap_or_else(|e| e.into_inner()).insert(user, known);
            }
        }
        let writes = writes.load(Ordering::Relaxed);
        eprintln!("{KILLS} kills in {:?}: {writes} acknowledged profile writes kept", started.elapsed());
        assert!(writes > KILLS * 10, "the load wrote too little to test anything: {writes}");
    })
    .await;
}
