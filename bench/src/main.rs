//! `cargo run --release -p bench`: every RPC of both services and the whole consent flow,
//! driven against the real `auth-service` and `userinfo-service` binaries (each a process of
//! its own, on SQLite or PostgreSQL, one or more replicas behind nginx) and measured as a
//! ratio to an echo baseline (a bare tonic health server, also a process of its own) in the
//! same run: interleaved rounds, each scenario's median shown. Data is prepared at scale in
//! bulk first. Every answer is checked; any error makes the run fail. BENCHMARKS.md has the
//! figures and the commands.
#![forbid(unsafe_code)]

mod cluster;
mod load;
mod scenarios;
mod seed;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cluster::{Launcher, Process, channels, free_addr, wait_serving};
use crate::load::{LoadShape, Measured};
use crate::scenarios::Targets;
use crate::seed::{Db, Plan};

/// Load generator settings.
#[derive(Debug, Parser)]
struct Args {
    /// Internal: serve the echo baseline on this address (the bench starts itself so).
    #[arg(long, hide = true)]
    echo_server: Option<SocketAddr>,
    /// How long each scenario is measured, per round.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load before each scenario's measurement (connections, caches warm).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds; each runs every scenario once, in turn. The table shows medians of rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections per service the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Users (each with a profile and a standing grant); apps are a tenth as many.
    #[arg(long, default_value_t = 1_000_000)]
    scale: u64,
    /// Live revocation rules in auth-service's log, replayed by userinfo-service at start.
    #[arg(long, default_value_t = 100_000)]
    rules: u64,
    /// Scenarios to run, comma-separated (default: all). `echo` always runs.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Also run on PostgreSQL at this URL (each service gets a fresh schema, dropped after).
    #[arg(long)]
    postgres: Option<String>,
    /// Skip SQLite (with --postgres).
    #[arg(long)]
    no_sqlite: bool,
    /// Replicas of each service (more than one: PostgreSQL only, behind the balancer).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Put nginx (`grpc_pass`) in front of the services even with one replica.
    #[arg(long)]
    balancer: bool,
    /// Single-use rows (prompts, codes, refresh tokens) prepared per second of load: above
    /// the rate those scenarios reach here; a pool used up is reported as errors.
    #[arg(long, default_value_t = 12_000)]
    pool_rate: u64,
    /// Where the service binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the work directory (databases, logs, nginx.conf) and print where it is.
    #[arg(long)]
    keep_dir: bool,
    /// Seconds, a small scale, no targets: for CI, so the bench cannot rot. Every answer is
    /// still checked.
    #[arg(long)]
    smoke: bool,
}

impl Args {
    fn apply_smoke(&mut self) {
        if self.smoke {
            self.duration = Duration::from_millis(300);
            self.warmup = Duration::from_millis(100);
            self.rounds = 1;
            self.concurrency = 8;
            self.connections = 2;
            self.scale = 2_000;
            self.rules = 1_000;
        }
    }

    fn selected(&self) -> Vec<&'static str> {
        scenarios::ALL
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| {
                *key == "echo"
                    || (*key == "echo-balanced" && self.balanced())
                    || (*key != "echo-balanced"
                        && (self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == key)))
            })
            .collect()
    }

    fn balanced(&self) -> bool {
        self.balancer || self.replicas > 1
    }
}

/// The targets: scenario, least ratio to the echo baseline, engine it applies to.
const TARGETS: [(&str, f64, &str); 7] = [
    ("userinfo-cached", 0.8, "any"),
    ("introspect", 0.5, "any"),
    ("authorize-silent", 0.4, "any"),
    ("phone", 0.3, "any"),
    ("resolve-allow", 0.2, "sqlite"),
    ("exchange", 0.2, "sqlite"),
    ("flow", 2000.0, "sqlite"),
];

fn main() -> ExitCode {
    let mut args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Some(listen) = args.echo_server {
        runtime.block_on(cluster::serve_echo(listen));
        return ExitCode::SUCCESS;
    }
    args.apply_smoke();
    for s in &args.scenarios {
        if !scenarios::ALL.iter().any(|(key, _)| key == s) {
            let known: Vec<&str> = scenarios::ALL.iter().map(|(k, _)| *k).collect();
            eprintln!("unknown scenario {s}; known: {}", known.join(", "));
            return ExitCode::from(2);
        }
    }
    if args.replicas > 1 && args.postgres.is_none() {
        eprintln!("--replicas above 1 needs --postgres (SQLite is one process's database)");
        return ExitCode::from(2);
    }
    let mut engines = Vec::new();
    if !args.no_sqlite && args.replicas == 1 {
        engines.push(Engine::Sqlite);
    }
    if let Some(url) = &args.postgres {
        engines.push(Engine::Postgres(url.clone()));
    }
    let mut clean = true;
    for engine in engines {
        clean &= runtime.block_on(run_engine(&args, engine));
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        eprintln!("some answers were wrong (see the errors above): the bench fails");
        ExitCode::FAILURE
    }
}

#[derive(Debug, Clone)]
enum Engine {
    Sqlite,
    Postgres(String),
}

impl Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Fresh databases for the two services: SQLite files in `dir`, or two new PostgreSQL
/// schemas (and their names, to drop after).
async fn databases(engine: &Engine, dir: &std::path::Path) -> (String, String, Vec<String>) {
    match engine {
        Engine::Sqlite => (
            format!("sqlite://{}", dir.join("auth.db").display()),
            format!("sqlite://{}", dir.join("userinfo.db").display()),
            Vec::new(),
        ),
        Engine::Postgres(url) => {
            let admin = sqlx::PgPool::connect(url)
                .await
                .expect("connect to --postgres");
            let tag = std::process::id();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let schemas = vec![
                format!("bench_auth_{tag}_{nanos}"),
                format!("bench_userinfo_{tag}_{nanos}"),
            ];
            for schema in &schemas {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&admin)
                    .await
                    .expect("create a schema");
            }
            admin.close().await;
            let separator = if url.contains('?') { '&' } else { '?' };
            let with =
                |schema: &str| format!("{url}{separator}options=-c%20search_path%3D{schema}");
            (with(&schemas[0]), with(&schemas[1]), schemas)
        }
    }
}

async fn drop_schemas(engine: &Engine, schemas: &[String]) {
    if let Engine::Postgres(url) = engine
        && let Ok(admin) = sqlx::PgPool::connect(url).await
    {
        for schema in schemas {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await;
        }
        admin.close().await;
    }
}

/// Everything running for one engine.
struct Cluster {
    auth: Vec<Process>,
    userinfo: Vec<Process>,
    uncached: Option<Process>,
    nginx: Option<(Process, Vec<SocketAddr>)>,
}

impl Cluster {
    fn processes(&mut self) -> impl Iterator<Item = &mut Process> {
        self.auth
            .iter_mut()
            .chain(self.userinfo.iter_mut())
            .chain(self.uncached.iter_mut())
            .chain(self.nginx.iter_mut().map(|(p, _)| p))
    }
}

/// Runs every selected scenario on one engine; `false` if any answer was wrong.
async fn run_engine(args: &Args, engine: Engine) -> bool {
    let selected = args.selected();
    let dir = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir()
        .expect("a work directory");
    if args.keep_dir {
        println!("work directory: {}", dir.path().display());
    }
    let mut dir = dir;
    dir.disable_cleanup(args.keep_dir);
    let launcher = Launcher {
        bin_dir: args
            .bin_dir
            .clone()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(PathBuf::from))
                    .unwrap_or_default()
            }),
        dir: dir.path().to_path_buf(),
    };
    let (auth_url, userinfo_url, schemas) = databases(&engine, dir.path()).await;
    println!(
        "\n## {} ({} replica(s){}), {} users, {} apps, {} live revocation rules\n",
        engine.name(),
        args.replicas,
        if args.balanced() {
            ", behind nginx"
        } else {
            ""
        },
        args.scale,
        args.scale / 10,
        args.rules
    );
    println!("load average at start: {}", load_average());

    // Migrations: each service creates its schema on an empty database.
    let mut auth = launcher.auth("auth-migrate", &auth_url, free_addr());
    wait_serving(&mut auth, Instant::now(), Duration::from_secs(60)).await;
    let mut userinfo = launcher.userinfo(
        "userinfo-migrate",
        &userinfo_url,
        free_addr(),
        auth.addr,
        "1s",
    );
    wait_serving(&mut userinfo, Instant::now(), Duration::from_secs(60)).await;
    userinfo.stop();
    auth.stop();

    let seconds = (args.warmup + args.duration).as_secs_f64() * args.rounds.max(1) as f64;
    let pool = |key: &str| {
        if selected.contains(&key) {
            (seconds * args.pool_rate as f64) as u64 + args.concurrency as u64
        } else {
            0
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let plan = Plan {
        users: args.scale.max(100),
        apps: (args.scale / 10).max(10),
        rules: args.rules,
        prompts: pool("resolve-allow"),
        codes: pool("exchange"),
        revokes: pool("revoke"),
        chains: args.concurrency as u64,
        setup_codes: 512.min(args.scale),
        now,
    };
    let started = Instant::now();
    let db = Db::connect(&userinfo_url).await;
    seed::userinfo(&db, &plan).await;
    db.close().await;
    let profiles_took = started.elapsed();
    let started = Instant::now();
    let db = Db::connect(&auth_url).await;
    seed::auth(&db, &plan).await;
    db.close().await;
    println!(
        "prepared: {} profiles in {:.1} s; {} apps, {} grants, {} rules, pools of {}/{}/{} prompts/codes/refresh tokens in {:.1} s",
        plan.users,
        profiles_took.as_secs_f64(),
        plan.apps,
        plan.users,
        plan.rules,
        plan.prompts,
        plan.codes,
        plan.revokes,
        started.elapsed().as_secs_f64()
    );

    // Start-up on the existing databases, to SERVING (userinfo-service: backlog applied).
    let mut startups = Vec::new();
    let mut cluster = Cluster {
        auth: Vec::new(),
        userinfo: Vec::new(),
        uncached: None,
        nginx: None,
    };
    for r in 0..args.replicas {
        let since = Instant::now();
        let mut p = launcher.auth(&format!("auth-{r}"), &auth_url, free_addr());
        let took = wait_serving(&mut p, since, Duration::from_secs(60)).await;
        startups.push((p.name.clone(), took));
        cluster.auth.push(p);
    }
    let userinfo_addrs: Vec<SocketAddr> = (0..args.replicas).map(|_| free_addr()).collect();
    let mut auth_for_userinfo = cluster.auth[0].addr;
    if args.balanced() {
        let (nginx, listens) = launcher.nginx(
            "nginx",
            &[
                ("auth", cluster.auth.iter().map(|p| p.addr).collect()),
                ("userinfo", userinfo_addrs.clone()),
            ],
        );
        auth_for_userinfo = listens[0];
        cluster.nginx = Some((nginx, listens));
    }
    for (r, addr) in userinfo_addrs.iter().enumerate() {
        let since = Instant::now();
        let mut p = launcher.userinfo(
            &format!("userinfo-{r}"),
            &userinfo_url,
            *addr,
            auth_for_userinfo,
            "1s",
        );
        let took = wait_serving(&mut p, since, Duration::from_secs(120)).await;
        startups.push((format!("{} ({} rules replayed)", p.name, plan.rules), took));
        cluster.userinfo.push(p);
    }
    if selected.contains(&"userinfo-uncached") {
        let mut p = launcher.userinfo(
            "userinfo-uncached",
            &userinfo_url,
            free_addr(),
            auth_for_userinfo,
            "0s",
        );
        wait_serving(&mut p, Instant::now(), Duration::from_secs(120)).await;
        cluster.uncached = Some(p);
    }
    let mut echo = launcher.echo();
    wait_serving(&mut echo, Instant::now(), Duration::from_secs(10)).await;
    let echo_balanced = if args.balanced() {
        let (p, listens) = launcher.nginx("nginx-echo", &[("echo", vec![echo.addr])]);
        let mut p = p;
        p.addr = listens[0];
        wait_serving(&mut p, Instant::now(), Duration::from_secs(10)).await;
        Some(p)
    } else {
        None
    };

    let n = args.connections;
    let (auth_addr, userinfo_addr) = match &cluster.nginx {
        Some((_, listens)) => (listens[0], listens[1]),
        None => (cluster.auth[0].addr, cluster.userinfo[0].addr),
    };
    let targets = Targets {
        echo: channels(echo.addr, n),
        echo_balanced: echo_balanced.as_ref().map(|p| channels(p.addr, n)),
        auth: channels(auth_addr, n),
        userinfo: channels(userinfo_addr, n),
        userinfo_uncached: cluster.uncached.as_ref().map(|p| channels(p.addr, n)),
    };
    // Within the verifier's cache of 8,192 verified tokens, and (cold) well beyond it.
    let cold = match (selected.contains(&"userinfo-cold"), args.smoke) {
        (false, _) => 0,
        (true, false) => 20_000,
        (true, true) => 200,
    };
    let minted = scenarios::mint(&targets, plan, 4096.min(plan.users), cold, 16).await;
    let minted = Arc::new(minted);

    let shape = LoadShape {
        concurrency: args.concurrency,
        warmup: args.warmup,
        duration: args.duration,
    };
    let calls: Vec<(&str, load::Call)> = selected
        .iter()
        .filter_map(|key| scenarios::call(key, &targets, plan, &minted).map(|c| (*key, c)))
        .collect();
    // Each scenario is measured right after the echo baseline, and its ratio taken to that
    // pair's echo: the load other work puts on a shared machine moves both alike.
    let echo_call = scenarios::call("echo", &targets, plan, &minted).expect("the echo scenario");
    let echo_pid = echo.pid();
    let echo_cpu = move || cluster::cpu_of(echo_pid);
    let server_pids: Vec<u32> = cluster.processes().map(|p| p.pid()).collect();
    let balanced_pid = echo_balanced.as_ref().map(Process::pid);
    let servers_cpu = move || {
        server_pids
            .iter()
            .map(|p| cluster::cpu_of(*p))
            .sum::<Duration>()
    };
    let balanced_cpu =
        move || balanced_pid.map_or(Duration::ZERO, cluster::cpu_of) + cluster::cpu_of(echo_pid);
    let mut rounds: BTreeMap<&str, Vec<(Measured, Measured)>> = BTreeMap::new();
    let mut peak: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for _ in 0..args.rounds.max(1) {
        for (key, call) in calls.iter().filter(|(key, _)| *key != "echo") {
            let baseline = load::run(shape, echo_call.clone(), &echo_cpu).await;
            let cpu: &dyn Fn() -> Duration = match *key {
                "echo-balanced" => &balanced_cpu,
                _ => &servers_cpu,
            };
            let measured = load::run(shape, call.clone(), cpu).await;
            rounds
                .entry(key)
                .or_default()
                .push((measured, baseline.clone()));
            rounds
                .entry("echo")
                .or_default()
                .push((baseline.clone(), baseline));
            for p in cluster.processes() {
                let (rss, hwm) = p.memory_mib();
                let entry = peak.entry(p.name.clone()).or_insert((0.0, 0.0));
                entry.0 = entry.0.max(rss);
                entry.1 = entry.1.max(hwm);
                if let Some(why) = p.exited() {
                    panic!("{why}");
                }
            }
        }
    }
    let clean = report(args, &engine, &rounds, &startups, &peak, plan);
    println!("load average at end: {}", load_average());
    drop(echo_balanced);
    drop(cluster);
    drop(echo);
    drop_schemas(&engine, &schemas).await;
    clean
}

/// Prints the tables; `false` if any call failed.
fn report(
    args: &Args,
    engine: &Engine,
    rounds: &BTreeMap<&str, Vec<(Measured, Measured)>>,
    startups: &[(String, Duration)],
    peak: &BTreeMap<String, (f64, f64)>,
    plan: Plan,
) -> bool {
    let middle = |mut values: Vec<f64>| -> f64 {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let ratio_of = |key: &str| -> f64 {
        middle(
            rounds[key]
                .iter()
                .map(|(m, e)| m.per_second() / e.per_second().max(1.0))
                .collect(),
        )
    };
    let cpu_ratio_of = |key: &str| -> f64 {
        middle(
            rounds[key]
                .iter()
                .map(|(m, e)| e.cpu_us_per_call() / m.cpu_us_per_call().max(0.001))
                .collect(),
        )
    };
    let median = |key: &str| -> Measured {
        let mut all: Vec<Measured> = rounds[key].iter().map(|(m, _)| m.clone()).collect();
        all.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        all.swap_remove(all.len() / 2)
    };
    println!(
        "\n{} s per scenario after {} ms warm-up, median of {} round(s), {} callers over {} connections per service, {} cores\n",
        args.duration.as_secs_f64(),
        args.warmup.as_millis(),
        args.rounds.max(1),
        args.concurrency,
        args.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| scenario | per s | x echo | p50 ms | p99 ms | p99.9 ms | server CPU us/call | CPU x echo | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut clean = true;
    let mut ratios = BTreeMap::new();
    for (key, title) in scenarios::ALL {
        if !rounds.contains_key(key) {
            continue;
        }
        let m = median(key);
        let ratio = ratio_of(key);
        ratios.insert(key, (ratio, m.per_second()));
        let errors: u64 = rounds[key].iter().map(|(m, _)| m.errors).sum();
        let unit = if key == "flow" { " flows" } else { "" };
        let cpu = middle(
            rounds[key]
                .iter()
                .map(|(m, _)| m.cpu_us_per_call())
                .collect(),
        );
        println!(
            "| {title} | {:.0}{unit} | {ratio:.2} | {:.2} | {:.2} | {:.2} | {cpu:.0} | {:.2} | {errors} |",
            m.per_second(),
            m.percentile(0.50).as_secs_f64() * 1000.0,
            m.percentile(0.99).as_secs_f64() * 1000.0,
            m.percentile(0.999).as_secs_f64() * 1000.0,
            cpu_ratio_of(key),
        );
        if errors > 0 {
            clean = false;
        }
    }
    for (key, runs) in rounds {
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for (m, _) in runs {
            for (kind, n) in &m.error_kinds {
                *kinds.entry(kind).or_insert(0) += n;
            }
        }
        for (kind, n) in kinds {
            println!("error in {key}: {n} x {kind}");
        }
    }
    if !args.smoke {
        println!("\nTargets (ratio to the echo baseline; the flow in flows/s):\n");
        for (key, least, applies) in TARGETS {
            if applies != "any" && applies != engine.name() {
                continue;
            }
            if let Some((ratio, per_second)) = ratios.get(key) {
                let value = if key == "flow" { *per_second } else { *ratio };
                let verdict = if value >= least { "met" } else { "MISSED" };
                println!("- {key}: {value:.2} (target {least}) {verdict}");
            }
        }
    }
    println!(
        "\nStart to SERVING on the prepared database ({} profiles, {} rules):\n",
        plan.users, plan.rules
    );
    for (name, took) in startups {
        println!("- {name}: {} ms", took.as_millis());
    }
    println!("\nResident memory under load (largest sample after each scenario; peak = VmHWM):\n");
    for (name, (rss, hwm)) in peak {
        println!("- {name}: {rss:.1} MiB resident, {hwm:.1} MiB peak");
    }
    clean
}
