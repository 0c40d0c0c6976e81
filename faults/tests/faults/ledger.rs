//! The disclosure ledger across a crash: userinfo-service counts answered reads in memory and
//! writes them every `DISCLOSURE_FLUSH_INTERVAL`, so a SIGKILL may lose the reads since the
//! last write, and no more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniprogram_proto::auth::v1::Scope::UserInfo;
use miniprogram_proto::userinfo::v1 as upb;

use crate::clients::{ALL_FEATURES, AuthClients, UserInfoClients, consent_token};
use crate::process::{AUTH_SERVICE, Env, ServiceProcess, USERINFO_SERVICE};
use crate::{Dice, within};

/// The flush interval the service runs with here.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How long one write of the counters may take on a loaded 2-core machine (an fsync included):
/// a kill during a write loses the reads of the write before it too.
const WRITE_TIME: Duration = Duration::from_secs(1);
/// Kill, restart and count, this many times.
const KILLS: usize = 3;
/// Readers at once; each has at most one read in flight when the process dies.
const READERS: usize = 3;

/// The reads of `user` the restarted service's ledger holds, over every day and kind.
async fn recorded(userinfo: &UserInfoClients, user: &str) -> u64 {
    let page = userinfo
        .profiles()
        .list_disclosures(upb::ListDisclosuresRequest {
            user_id: user.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list disclosures")
        .into_inner();
    assert!(page.next_page_token.is_empty(), "one page holds them all");
    page.disclosures.iter().map(|d| d.count).sum()
}

/// Reads through `userinfo` with `token` until a read fails (the process was killed); when
/// each answered read came back.
async fn read_until_killed(userinfo: UserInfoClients, token: String) -> Vec<Instant> {
    let mut answered = Vec::new();
    while userinfo.open_user_info(&token).await.is_ok() {
        answered.push(Instant::now());
    }
    answered
}

/// userinfo-service SIGKILLed under a stream of answered GetOpenUserInfo reads, three times:
/// after each restart its ledger holds every read answered before the last write that could
/// have finished (one flush interval plus one write's time before the kill), and at most the
/// reads answered (plus one in flight per reader, counted and written but whose answer the
/// kill cut off). Guards the periodic write in `DisclosureLedger::run_flushing` (the
/// `tick.tick()` arm): seen failing with that arm made to never fire (nothing written before
/// the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_userinfo_service_loses_at_most_the_reads_since_the_last_ledger_write() {
    let _alone = crate::alone().await;
    within(Duration::from_secs(180), "ledger kills", async {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth_env = Env::auth(&format!(
            "sqlite://{}",
            dir.path().join("auth.db").display()
        ));
        let auth = ServiceProcess::start(AUTH_SERVICE, &auth_env).await;
        let interval = format!("{}ms", FLUSH_INTERVAL.as_millis());
        let env = Env::userinfo(
            &format!("sqlite://{}", dir.path().join("userinfo.db").display()),
            auth.addr,
        )
        .set("DISCLOSURE_FLUSH_INTERVAL", &interval)
        .set("READ_LIMIT_PER_APP", "0")
        .set("READ_LIMIT_PER_TOKEN", "0");
        let mut userinfo = ServiceProcess::start(USERINFO_SERVICE, &env).await;
        let clients = UserInfoClients(userinfo.channel.clone());
        let user = "ledger-user";
        clients
            .upsert(userinfo_service::testing::demo_profile(user))
            .await
            .expect("upsert");
        let auth_clients = AuthClients(auth.channel.clone());
        let (app_id, _) = auth_clients.create_app(&ALL_FEATURES).await;
        let grant = auth_clients
            .consent(user, &app_id, &[UserInfo])
            .await
            .expect("consent");
        let token = consent_token(&grant);
        let mut dice = Dice::seeded("ledger kills");
        let (mut before, mut worst_loss) = (0u64, 0u64);
        for kill in 0..KILLS {
            let answers = Arc::new(Mutex::new(Vec::new()));
            let mut readers = tokio::task::JoinSet::new();
            for _ in 0..READERS {
                let (clients, token) = (UserInfoClients(userinfo.channel.clone()), token.clone());
                let answers = answers.clone();
                readers.spawn(async move {
                    let mine = read_until_killed(clients, token).await;
                    answers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(mine);
                });
            }
            tokio::time::sleep(Duration::from_millis(dice.between(2_000, 3_500))).await;
            let killed_at = Instant::now();
            userinfo.kill();
            while readers.join_next().await.is_some() {}
            let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|e| e.into_inner()));
            let answered = answers.len() as u64;
            let cut = killed_at - FLUSH_INTERVAL - WRITE_TIME;
            let surely_written = answers.iter().filter(|at| **at < cut).count() as u64;
            assert!(
                surely_written > 100,
                "kill {kill}: too few reads to test anything: {surely_written} of {answered}"
            );

            userinfo = ServiceProcess::start(USERINFO_SERVICE, &env).await;
            let now = recorded(&UserInfoClients(userinfo.channel.clone()), user).await;
            assert!(
                now >= before,
                "kill {kill}: written rows were lost: {now} < {before}"
            );
            let kept = now - before;
            eprintln!(
                "kill {kill}: {answered} answered, {surely_written} before the cut, {kept} kept"
            );
            assert!(
                kept >= surely_written,
                "kill {kill}: the ledger kept {kept} reads, but {surely_written} were answered \
                 more than {:?} before the kill ({answered} in all)",
                FLUSH_INTERVAL + WRITE_TIME
            );
            assert!(
                kept <= answered + READERS as u64,
                "kill {kill}: the ledger holds {kept} reads, {answered} were answered"
            );
            worst_loss = worst_loss.max(answered.saturating_sub(kept));
            before = now;
        }
        eprintln!("{KILLS} kills: at most {worst_loss} answered reads lost from the ledger");
    })
    .await;
}
