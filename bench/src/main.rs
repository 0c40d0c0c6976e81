//! `cargo run --release -p bench`: measures GetOpenUserInfo (consent token checked locally,
//! profile read from SQLite or the 1 s read cache, full server stack with observer and limits)
//! against an echo baseline (tonic's health Check on a bare server, no layers) and the same
//! Check through our layers, with one load generator: C concurrent callers over a few HTTP/2
//! connections, warm-up, then interleaved rounds. Prints a Markdown table of median rounds.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_service::testing::TestAuthServer;
use clap::Parser;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use tonic::transport::Channel;
use userinfo_service::testing::TestUserInfoServer;

/// Distinct consent tokens for the cold-verification scenario: more than the verifier's
/// cache of verified tokens holds, cycled, so every call misses it.
const COLD_TOKENS: usize = 20_000;

/// Load generator settings.
#[derive(Debug, Parser)]
struct Args {
    /// How long each scenario runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Load before each scenario that is not measured (connections, caches, CPU clocks warm).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds; each runs every scenario once, in turn, and the table shows each scenario's
    /// median round, so a noisy moment on a shared machine moves no row on its own.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One call of a scenario: `true` if it succeeded.
type Call =
    Arc<dyn Fn(Channel) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A named load: the channels it runs over and the call it makes.
struct Scenario {
    name: &'static str,
    channels: Vec<Channel>,
    call: Call,
}

fn health_check() -> Call {
    Arc::new(|channel| {
        Box::pin(async move {
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        })
    })
}

fn open_user_info(tokens: Arc<Vec<String>>) -> Call {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Arc::new(move |channel| {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = tokens[i % tokens.len()].clone();
        Box::pin(async move {
            upb::user_info_service_client::UserInfoServiceClient::new(channel)
                .get_open_user_info(upb::GetOpenUserInfoRequest {
                    consent_token: token,
                })
                .await
                .is_ok()
        })
    })
}

/// What one scenario measured.
struct Measured {
    calls: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// Runs `call` from `args.concurrency` callers: `args.warmup` unmeasured, then
/// `args.duration` measured.
async fn run_load(args: &Args, channels: &[Channel], call: Call) -> Measured {
    let warm_until = Instant::now() + args.warmup;
    let mut warming = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let channel = channels[i % channels.len()].clone();
        let call = call.clone();
        warming.spawn(async move {
            while Instant::now() < warm_until {
                call(channel.clone()).await;
            }
        });
    }
    while warming.join_next().await.is_some() {}
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let channel = channels[i % channels.len()].clone();
        let call = call.clone();
        tasks.spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::with_capacity(65_536));
            while Instant::now() < deadline {
                let t = Instant::now();
                if call(channel.clone()).await {
                    ok += 1;
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (ok, errors, latencies)
        });
    }
    let mut measured = Measured {
        calls: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(Ok((ok, errors, latencies))) = tasks.join_next().await {
        measured.calls += ok;
        measured.errors += errors;
        measured.latencies.extend(latencies);
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

fn channels(addr: SocketAddr, n: usize) -> Vec<Channel> {
    (0..n.max(1))
        .map(|_| service_runtime::client_channel(addr, None))
        .collect()
}

/// Resident memory of this process in MiB (Linux), for the memory column.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn echo_baseline() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    addr
}

fn row(name: &str, m: &Measured) -> String {
    let rps = m.calls_per_second();
    format!(
        "| {name} | {rps:.0} | {:.2} | {:.2} | {:.2} | {} |",
        m.percentile(0.50).as_secs_f64() * 1000.0,
        m.percentile(0.99).as_secs_f64() * 1000.0,
        m.percentile(0.999).as_secs_f64() * 1000.0,
        m.errors
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let baseline_rss = rss_mib();

    let echo = echo_baseline().await;
    let auth = TestAuthServer::start().await;
    let userinfo = TestUserInfoServer::start(
        auth.addr,
        &auth.config.callers.admin,
        &auth.config.callers.verifier,
    )
    .await;
    let uncached = TestUserInfoServer::start_with(
        auth.addr,
        &auth.config.callers.admin,
        &auth.config.callers.verifier,
        |c| c.profile_cache_ttl = Duration::ZERO,
    )
    .await;
    let app = auth
        .admin()
        .create_app(pb::CreateAppRequest {
            display_name: "Bench".into(),
            features: vec![1, 2, 3],
        })
        .await
        .expect("create app")
        .into_inner()
        .app
        .expect("app");
    let mut tokens = Vec::new();
    for i in 0..100 {
        let user = format!("bench-user-{i}");
        for server in [&userinfo, &uncached] {
            server
                .profiles()
                .upsert_profile(upb::UpsertProfileRequest {
                    profile: Some(upb::Profile {
                        user_id: user.clone(),
                        nick_name: format!("nick {i}"),
                        avatar: "https://cdn.example.com/a.png".into(),
                        gender: "f".into(),
                        country_code: "CN".into(),
                        province: "Zhejiang".into(),
                        city: "Hangzhou".into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("profile");
        }
        let mut wallet = auth.wallet();
        let request = pb::RequestAuthorizationRequest {
            user_id: user.clone(),
            app_id: app.app_id.clone(),
            scopes: vec![pb::Scope::UserInfo as i32],
            trigger: pb::Trigger::UserTap as i32,
        };
        let Some(pb::request_authorization_response::Result::Prompt(p)) = wallet
            .request_authorization(request)
            .await
            .expect("request")
            .into_inner()
            .result
        else {
            panic!("expected a prompt")
        };
        let Some(pb::resolve_prompt_response::Result::Grant(g)) = wallet
            .resolve_prompt(pb::ResolvePromptRequest {
                prompt_id: p.prompt_id,
                user_id: user,
                decision: 1,
            })
            .await
            .expect("resolve")
            .into_inner()
            .result
        else {
            panic!("expected a grant")
        };
        let Some(pb::grant::Credential::ConsentToken(t)) = g.credential else {
            panic!("expected a token")
        };
        tokens.push(t);
    }
    // Tokens never presented before, more than the verified-token cache holds, so every call
    // pays the Ed25519 verification: silent re-grants of the users above.
    let mut cold_tokens = Vec::new();
    let mut wallet = auth.wallet();
    for round in 0..COLD_TOKENS / 100 {
        for i in 0..100 {
            let request = pb::RequestAuthorizationRequest {
                user_id: format!("bench-user-{i}"),
                app_id: app.app_id.clone(),
                scopes: vec![pb::Scope::UserInfo as i32],
                trigger: pb::Trigger::UserTap as i32,
            };
            let Some(pb::request_authorization_response::Result::Grant(g)) = wallet
                .request_authorization(request)
                .await
                .expect("re-grant")
                .into_inner()
                .result
            else {
                panic!("expected a silent grant (round {round})")
            };
            let Some(pb::grant::Credential::ConsentToken(t)) = g.credential else {
                panic!("expected a token")
            };
            cold_tokens.push(t);
        }
    }
    let tokens = Arc::new(tokens);
    let scenarios = [
        Scenario {
            name: "echo baseline (bare tonic, health Check)",
            channels: channels(echo, args.connections),
            call: health_check(),
        },
        Scenario {
            name: "health Check through userinfo-service's layers (observer, shedding, deadline)",
            channels: channels(userinfo.addr, args.connections),
            call: health_check(),
        },
        Scenario {
            name: "GetOpenUserInfo, full stack, profile cache on (default 1 s)",
            channels: channels(userinfo.addr, args.connections),
            call: open_user_info(tokens.clone()),
        },
        Scenario {
            name: "GetOpenUserInfo, full stack, profile cache off (SQLite every call)",
            channels: channels(uncached.addr, args.connections),
            call: open_user_info(tokens),
        },
        Scenario {
            name: "GetOpenUserInfo, profile cache on, every token new to the verifier (Ed25519 check per call)",
            channels: channels(userinfo.addr, args.connections),
            call: open_user_info(Arc::new(cold_tokens)),
        },
    ];
    let mut rounds: Vec<Vec<Measured>> = scenarios.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.rounds.max(1) {
        for (scenario, results) in scenarios.iter().zip(&mut rounds) {
            results.push(run_load(&args, &scenario.channels, scenario.call.clone()).await);
        }
    }
    let medians: Vec<Measured> = rounds
        .into_iter()
        .map(|mut results| {
            results.sort_by(|a, b| a.calls_per_second().total_cmp(&b.calls_per_second()));
            results.swap_remove(results.len() / 2)
        })
        .collect();
    let peak_rss = rss_mib();

    println!(
        "\n{} s per scenario after {} ms warm-up, median of {} rounds, {} concurrent callers over {} connections, {} cores\n",
        args.duration.as_secs(),
        args.warmup.as_millis(),
        args.rounds.max(1),
        args.concurrency,
        args.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| scenario | calls/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---|---|---|---|---|");
    for (scenario, measured) in scenarios.iter().zip(&medians) {
        println!("{}", row(scenario.name, measured));
    }
    println!(
        "\nGetOpenUserInfo (cached) runs at {:.0}% of the echo baseline's throughput.",
        medians[2].calls_per_second() / medians[0].calls_per_second() * 100.0
    );
    println!(
        "With a new token on every call (an Ed25519 verification each), it runs at {:.0}%.",
        medians[4].calls_per_second() / medians[0].calls_per_second() * 100.0
    );
    println!(
        "Process RSS (both services, load generator and baseline in one process): {baseline_rss:.1} MiB at start, {peak_rss:.1} MiB after the runs."
    );
}
