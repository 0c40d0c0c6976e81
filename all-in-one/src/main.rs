//! `all-in-one`: both services in one process on the embedded default (SQLite under ./data),
//! talking to each other over real gRPC. Dev mode: it generates what is missing (credentials,
//! master key), seeds a demo mini program and demo users into empty stores, and prints the
//! credentials and ready-to-paste grpcurl commands. Ctrl-C or SIGTERM stops it cleanly.
#![forbid(unsafe_code)]

mod dev_state;
mod seed;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use auth_service::config::AuthArgs;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use userinfo_service::config::UserInfoConfig;

use crate::dev_state::DevState;

/// Both services in one process, for local development and demos.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    userinfo: UserInfoDevArgs,
    /// Where generated credentials, the dev master key and (unless their URLs are given) the
    /// two SQLite databases live.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[command(flatten)]
    process: service_runtime::ProcessArgs,
}

/// userinfo-service's settings that all-in-one takes (the rest follow auth-service's).
#[derive(Debug, clap::Args)]
struct UserInfoDevArgs {
    /// Address of userinfo-service.
    #[arg(long = "userinfo-addr", env = userinfo_service::config::ENV_ADDR, default_value = userinfo_service::config::DEFAULT_ADDR)]
    userinfo_addr: SocketAddr,
    /// Bearer token of userinfo-service's ProfileService (generated and remembered if not given).
    #[arg(long, env = userinfo_service::config::ENV_PROFILE_TOKEN, hide_env_values = true)]
    profile_token: Option<String>,
    /// Database of userinfo-service.
    #[arg(long = "userinfo-database-url", env = userinfo_service::config::ENV_DATABASE_URL, default_value = userinfo_service::config::DEFAULT_DATABASE_URL)]
    userinfo_database_url: String,
    /// userinfo-service: refuse tokens once the revocation stream has been silent this long.
    #[arg(long, env = "REVOCATION_STALE_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    revocation_stale_after: Duration,
    /// userinfo-service: at most one key refetch per interval for unknown key ids.
    #[arg(long, env = "KEY_REFETCH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    key_refetch_interval: Duration,
    /// userinfo-service: reuse a public-profile read this long (0 turns the cache off).
    #[arg(long, env = "PROFILE_CACHE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    profile_cache_ttl: Duration,
    // userinfo-service: scraping limits on GetOpenUserInfo and GetPhoneNumber.
    #[command(flatten)]
    read_limits: userinfo_service::config::ReadLimitArgs,
    // userinfo-service: the disclosure ledger's writer and retention.
    #[command(flatten)]
    disclosures: userinfo_service::config::DisclosureArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.process.init().await {
        eprintln!("all-in-one: metrics endpoint: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "all-in-one failed");
            eprintln!("all-in-one: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the runner stopped with an error.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    AuthConfig(#[from] auth_service::config::ConfigError),
    #[error("configuration: {0}")]
    UserInfoConfig(#[from] userinfo_service::config::ConfigError),
    #[error("auth-service: {0}")]
    Auth(#[from] auth_service::ServeError),
    #[error("userinfo-service: {0}")]
    UserInfo(#[from] userinfo_service::ServeError),
    #[error("seeding the demo data: {0}")]
    Seed(#[from] tonic::Status),
    #[error("a service task panicked")]
    Join(#[from] tokio::task::JoinError),
    #[error(
        "all-in-one serves plaintext on loopback; TLS_CERT_FILE / TLS_KEY_FILE are for the separate auth-service and userinfo-service binaries"
    )]
    TlsNotSupported,
}

/// The default SQLite URL of a service moved under `data_dir`; any other URL as given.
fn under_data_dir(url: String, default: &str, data_dir: &Path, file: &str) -> String {
    if url == default {
        format!("sqlite://{}", data_dir.join(file).display())
    } else {
        url
    }
}

/// auth-service's configuration in dev mode: credentials remembered under the data directory
/// (flags and environment win over them), a master key generated there once, the database
/// under it; the credentials in effect are remembered in `state`.
fn dev_auth_config(
    mut auth: AuthArgs,
    data_dir: &Path,
    state: &mut DevState,
) -> Result<auth_service::config::AuthConfig, RunError> {
    auth.admin_token = auth.admin_token.or(Some(state.admin_token.clone()));
    auth.wallet_token = auth.wallet_token.or(Some(state.wallet_token.clone()));
    auth.verifier_token = auth.verifier_token.or(Some(state.verifier_token.clone()));
    if auth.master_key_file.is_none() && auth.master_key.is_none() {
        let path = data_dir.join("master.key");
        auth_service::config::dev_master_key(&path)?;
        auth.master_key_file = Some(path);
    }
    if auth.tls.tls_cert_file.is_some() || auth.tls.tls_key_file.is_some() {
        return Err(RunError::TlsNotSupported);
    }
    auth.database_url = under_data_dir(
        auth.database_url,
        auth_service::config::DEFAULT_DATABASE_URL,
        data_dir,
        "auth.db",
    );
    let config = auth.into_config(true)?;
    state.admin_token = config.callers.admin.clone();
    state.wallet_token = config.callers.wallet.clone();
    state.verifier_token = config.callers.verifier.clone();
    Ok(config)
}

/// ProfileService's token, checked as userinfo-service checks it, and against auth-service's
/// role tokens too: one process serves both here.
fn check_profile_token(
    profile: &str,
    callers: &auth_service::credentials::CallerTokens,
) -> Result<(), userinfo_service::config::ConfigError> {
    use userinfo_service::config::{ENV_PROFILE_TOKEN, ENV_VERIFIER_TOKEN};
    let mut roles = vec![
        (ENV_PROFILE_TOKEN, profile),
        (
            auth_service::config::ENV_ADMIN_TOKEN,
            callers.admin.as_str(),
        ),
        (
            auth_service::config::ENV_WALLET_TOKEN,
            callers.wallet.as_str(),
        ),
        (ENV_VERIFIER_TOKEN, callers.verifier.as_str()),
    ];
    roles
        .extend((callers.privacy.as_deref()).map(|t| (auth_service::config::ENV_PRIVACY_TOKEN, t)));
    let shared = "PROFILE_TOKEN, ADMIN_TOKEN, WALLET_TOKEN, VERIFIER_TOKEN, PRIVACY_TOKEN";
    match miniprogram_proto::caller_credentials::role_tokens_problem(&roles, shared) {
        Some((variable, problem)) => {
            Err(userinfo_service::config::ConfigError::Invalid { variable, problem })
        }
        None => Ok(()),
    }
}

/// userinfo-service's configuration in dev mode, beside auth-service at `auth_addr`: the
/// database under the data directory, ProfileService's token remembered in `state` (flags and
/// environment win over it) and checked against auth-service's, the rest as auth-service's.
fn dev_userinfo_config(
    args: UserInfoDevArgs,
    data_dir: &Path,
    auth_config: &auth_service::config::AuthConfig,
    (auth_addr, addr): (SocketAddr, SocketAddr),
    state: &mut DevState,
) -> Result<UserInfoConfig, RunError> {
    if let Some(token) = args.profile_token.filter(|t| !t.is_empty()) {
        state.profile_token = token;
    }
    check_profile_token(&state.profile_token, &auth_config.callers)?;
    let database_url = under_data_dir(
        args.userinfo_database_url,
        userinfo_service::config::DEFAULT_DATABASE_URL,
        data_dir,
        "userinfo.db",
    );
    Ok(UserInfoConfig {
        addr,
        database_url,
        auth_url: format!("http://{auth_addr}"),
        profile_token: state.profile_token.clone(),
        verifier_token: auth_config.callers.verifier.clone(),
        privacy_token: auth_config.callers.privacy.clone(),
        erasure_retry_interval: std::time::Duration::from_secs(5),
        erasure_vacuum: userinfo_service::store::Vacuum::Plain,
        revocation_stale_after: args.revocation_stale_after,
        key_refetch_interval: args.key_refetch_interval,
        drain_timeout: auth_config.drain_timeout,
        profile_cache_ttl: args.profile_cache_ttl,
        limits: auth_config.limits,
        tls: None,
        auth_tls_ca_pem: None,
        trusted_proxies: auth_config.trusted_proxies.clone(),
        read_limits: args.read_limits.into_limits()?,
        disclosures: args.disclosures.into_settings()?,
    })
}

async fn run(cli: Cli) -> Result<(), RunError> {
    let stop_signal = service_runtime::shutdown_signal();
    service_runtime::private_files::create_private_dir(&cli.data_dir)?;
    let mut state = DevState::load_or_create(&cli.data_dir.join(dev_state::FILE_NAME))?;
    let auth_config = dev_auth_config(cli.auth, &cli.data_dir, &mut state)?;
    let auth_listener = TcpListener::bind(auth_config.addr).await?;
    let auth_addr = auth_listener.local_addr()?;
    let userinfo_listener = TcpListener::bind(cli.userinfo.userinfo_addr).await?;
    let userinfo_addr = userinfo_listener.local_addr()?;
    let addrs = (auth_addr, userinfo_addr);
    let userinfo_config =
        dev_userinfo_config(cli.userinfo, &cli.data_dir, &auth_config, addrs, &mut state)?;
    let callers = auth_config.callers.clone();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut services = tokio::task::JoinSet::new();
    let auth = auth_service::serve_with_listener(auth_config, auth_listener, stopped(&stop_rx));
    services.spawn(async move { auth.await.map_err(RunError::from) });
    let userinfo = userinfo_service::serve_with_listener(
        userinfo_config,
        userinfo_listener,
        stopped(&stop_rx),
    );
    services.spawn(async move { userinfo.await.map_err(RunError::from) });

    let seeded = tokio::select! {
        seeded = seed::seed(auth_addr, userinfo_addr, &callers, &mut state) => seeded,
        Some(joined) = services.join_next() => {
            let _ = stop_tx.send(true);
            joined??;
            return Ok(());
        }
    };
    if let Err(e) = seeded {
        let _ = stop_tx.send(true);
        while services.join_next().await.is_some() {}
        return Err(e.into());
    }
    state.save(&cli.data_dir.join(dev_state::FILE_NAME))?;
    print!(
        "{}",
        seed::banner(auth_addr, userinfo_addr, &cli.data_dir, &state)
    );
    tracing::info!(%auth_addr, %userinfo_addr, "all-in-one ready");

    tokio::select! {
        () = stop_signal => tracing::info!("stopping"),
        Some(joined) = services.join_next() => {
            let _ = stop_tx.send(true);
            joined??;
        }
    }
    stop_all(services, &stop_tx).await
}

/// Resolves once `stop` says so: a service's shutdown signal.
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

/// Tells both services to stop and waits for them: the first error, if any.
async fn stop_all(
    mut services: tokio::task::JoinSet<Result<(), RunError>>,
    stop: &watch::Sender<bool>,
) -> Result<(), RunError> {
    let _ = stop.send(true);
    let mut result = Ok(());
    while let Some(joined) = services.join_next().await {
        if let Err(e) = joined? {
            result = Err(e);
        }
    }
    result
}
