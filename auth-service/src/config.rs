//! auth-service configuration: flags with environment fallbacks, turned into a checked
//! [`AuthConfig`]. Outside dev mode every credential must be given; the error names each
//! missing variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use miniprogram_proto::client_address::TrustedProxies;
use miniprogram_token::MasterKey;

use crate::credentials::CallerTokens;

pub const ENV_ADDR: &str = "AUTH_ADDR";
pub const ENV_DATABASE_URL: &str = "AUTH_DATABASE_URL";
pub const ENV_ADMIN_TOKEN: &str = "ADMIN_TOKEN";
pub const ENV_WALLET_TOKEN: &str = "WALLET_TOKEN";
pub const ENV_VERIFIER_TOKEN: &str = "VERIFIER_TOKEN";
pub const ENV_PRIVACY_TOKEN: &str = "PRIVACY_TOKEN";
pub const ENV_MASTER_KEY_FILE: &str = "MASTER_KEY_FILE";
pub const ENV_MASTER_KEY: &str = "MASTER_KEY";
pub const ENV_PREVIOUS_MASTER_KEY_FILE: &str = "PREVIOUS_MASTER_KEY_FILE";
pub const ENV_PREVIOUS_MASTER_KEY: &str = "PREVIOUS_MASTER_KEY";
pub const ENV_TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";

pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/auth.db";
/// Where dev mode keeps the master key it generates.
pub const DEV_MASTER_KEY_FILE: &str = "data/master.key";

/// Command-line flags, each with an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Address to listen on.
    #[arg(long = "auth-addr", env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Database: `sqlite://path` (created if missing).
    #[arg(long = "auth-database-url", env = ENV_DATABASE_URL, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Bearer token of the platform console (AppService).
    #[arg(long, env = ENV_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token of the wallet gateway (AuthorizationService).
    #[arg(long, env = ENV_WALLET_TOKEN, hide_env_values = true)]
    pub wallet_token: Option<String>,
    /// Bearer token of token verifiers such as userinfo-service (KeyService).
    #[arg(long, env = ENV_VERIFIER_TOKEN, hide_env_values = true)]
    pub verifier_token: Option<String>,
    /// Bearer token userinfo-service presents for a user's export and erasure (those two
    /// AuthorizationService methods only). Without it only the wallet can call them.
    #[arg(long, env = ENV_PRIVACY_TOKEN, hide_env_values = true)]
    pub privacy_token: Option<String>,
    /// File holding the 32-byte master key that token keys are sealed under.
    #[arg(long, env = ENV_MASTER_KEY_FILE, conflicts_with = "master_key")]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, as 64 hex digits, for platforms that hand secrets over in the
    /// environment (instead of MASTER_KEY_FILE).
    #[arg(long, env = ENV_MASTER_KEY, hide_env_values = true)]
    pub master_key: Option<String>,
    /// While rotating the master key: the old key, whose sealed secrets are re-sealed under
    /// the new one at start-up; afterwards it is no longer needed.
    #[arg(long, env = ENV_PREVIOUS_MASTER_KEY_FILE, conflicts_with = "previous_master_key")]
    pub previous_master_key_file: Option<PathBuf>,
    /// The previous master key as 64 hex digits (instead of PREVIOUS_MASTER_KEY_FILE).
    #[arg(long, env = ENV_PREVIOUS_MASTER_KEY, hide_env_values = true)]
    pub previous_master_key: Option<String>,
    /// Lifetime of a consent token (userInfo).
    #[arg(long, env = "CONSENT_TOKEN_TTL", default_value = "30m", value_parser = humantime::parse_duration)]
    pub consent_token_ttl: Duration,
    /// Lifetime of an access token.
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token (each rotation starts a new one).
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Lifetime of an auth code.
    #[arg(long, env = "AUTH_CODE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub auth_code_ttl: Duration,
    /// Lifetime of an unanswered prompt.
    #[arg(long, env = "PROMPT_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub prompt_ttl: Duration,
    /// How long a token key mints before the next one takes over.
    #[arg(long, env = "KEY_ROTATION_PERIOD", default_value = "24h", value_parser = humantime::parse_duration)]
    pub key_rotation_period: Duration,
    /// How often expired rows are swept.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// Most rows deleted from one table per sweep statement.
    #[arg(long, env = "SWEEP_BATCH", default_value_t = 1000)]
    pub sweep_batch: u32,
    /// Failed app-credential attempts allowed per app and per caller address in one window.
    #[arg(long, env = "FAILED_CREDENTIAL_BUDGET", default_value_t = 10)]
    pub failed_credential_budget: u32,
    /// The window those attempts are counted in.
    #[arg(long, env = "FAILED_CREDENTIAL_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub failed_credential_window: Duration,
    /// Proxies (CIDR blocks or addresses, comma-separated) whose `x-forwarded-for` names the
    /// caller that failed-credential limits count against; empty trusts none.
    #[arg(long, env = ENV_TRUSTED_PROXIES, default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// On SIGTERM / Ctrl-C, how long in-flight calls get to finish.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub limits: service_runtime::LimitArgs,
    #[command(flatten)]
    pub tls: service_runtime::TlsArgs,
    /// Interval between heartbeats on an idle revocation stream.
    #[arg(long, env = "REVOCATION_HEARTBEAT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub revocation_heartbeat: Duration,
    /// Live rules revoking single tokens or grant families one app's calls may cause; beyond
    /// it RevokeToken of an access or consent token is refused with
    /// REQUEST_TRAFFIC_EXCEED_LIMIT, and a family revocation writes no rule, until some expire.
    #[arg(long, env = "REVOCATION_QUOTA_PER_APP", default_value_t = crate::revocations::DEFAULT_RULES_PER_APP)]
    pub revocation_quota_per_app: u32,
    #[command(flatten)]
    pub grants: GrantBoundArgs,
    #[command(flatten)]
    pub pending: PendingBoundArgs,
    /// How long consent records are kept (from each record's time).
    #[arg(long, env = "CONSENT_RECORD_RETENTION", default_value = "1827days", value_parser = humantime::parse_duration)]
    pub consent_record_retention: Duration,
    /// How long an app's authorization changes stay in its feed.
    #[arg(long, env = "AUTHORIZATION_CHANGE_RETENTION", default_value = "90days", value_parser = humantime::parse_duration)]
    pub authorization_change_retention: Duration,
    /// Refuse a scope the mini program has not declared a purpose for.
    #[arg(long, env = "REQUIRE_PRIVACY_DECLARATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_privacy_declaration: bool,
}

/// Flags for [`crate::tokens::GrantBounds`].
#[derive(Debug, Clone, clap::Args)]
pub struct GrantBoundArgs {
    /// Grants (refresh-token families, revoked ones included) one user may hold for one app;
    /// a new one evicts the others beyond it, revoked first, then the least recently refreshed
    /// (their codes and refresh tokens are deleted).
    #[arg(long, env = "MAX_GRANTS_PER_USER", default_value_t = crate::tokens::DEFAULT_GRANTS_PER_USER,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_grants_per_user: u32,
    /// Refreshes of one grant; past them RefreshAccessToken answers EXPIRED_REFRESH_TOKEN and
    /// the app runs the authorization again.
    #[arg(long, env = "MAX_REFRESHES_PER_GRANT", default_value_t = crate::tokens::DEFAULT_REFRESHES_PER_GRANT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_refreshes_per_grant: u32,
    /// Spent refresh tokens one grant keeps, so that their reuse is known and revokes the
    /// grant; each refresh deletes the older ones, which then answer INVALID_REFRESH_TOKEN.
    #[arg(long, env = "SPENT_REFRESH_TOKENS_KEPT", default_value_t = crate::tokens::DEFAULT_SPENT_REFRESH_TOKENS_KEPT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub spent_refresh_tokens_kept: u32,
}

/// Flags for [`crate::consent::PendingBounds`].
#[derive(Debug, Clone, clap::Args)]
pub struct PendingBoundArgs {
    /// Prompts neither answered nor expired one user may have for one app; past them a request
    /// that needs one is refused with REQUEST_TRAFFIC_EXCEED_LIMIT.
    #[arg(long, env = "MAX_OPEN_PROMPTS_PER_USER", default_value_t = crate::consent::DEFAULT_OPEN_PROMPTS_PER_USER,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_open_prompts_per_user: u32,
    /// Unexchanged codes one user may have for one app; a new one deletes the oldest beyond it
    /// (INVALID_CODE from then on).
    #[arg(long, env = "MAX_OPEN_CODES_PER_USER", default_value_t = crate::consent::DEFAULT_OPEN_CODES_PER_USER,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_open_codes_per_user: u32,
}

impl From<PendingBoundArgs> for crate::consent::PendingBounds {
    fn from(a: PendingBoundArgs) -> Self {
        crate::consent::PendingBounds {
            prompts_per_user: a.max_open_prompts_per_user,
            codes_per_user: a.max_open_codes_per_user,
        }
    }
}

impl From<GrantBoundArgs> for crate::tokens::GrantBounds {
    fn from(a: GrantBoundArgs) -> Self {
        crate::tokens::GrantBounds {
            per_user: a.max_grants_per_user,
            refreshes: a.max_refreshes_per_grant,
            spent_kept: a.spent_refresh_tokens_kept,
        }
    }
}

/// Why the configuration can't be used. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required configuration (not in dev mode): {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("{variable}: {problem}")]
    Invalid {
        variable: &'static str,
        problem: String,
    },
}

/// Checked configuration for [`crate::serve`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub addr: SocketAddr,
    pub database_url: String,
    pub callers: CallerTokens,
    pub master_key: MasterKey,
    /// The master key being rotated away from, if any.
    pub previous_master_key: Option<MasterKey>,
    pub consent_token_ttl: Duration,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub auth_code_ttl: Duration,
    pub prompt_ttl: Duration,
    pub key_rotation_period: Duration,
    pub sweep_interval: Duration,
    pub sweep_batch: u32,
    pub failed_credential_budget: u32,
    pub failed_credential_window: Duration,
    pub trusted_proxies: TrustedProxies,
    pub revocation_heartbeat: Duration,
    pub revocation_quota_per_app: u32,
    pub grant_bounds: crate::tokens::GrantBounds,
    pub pending_bounds: crate::consent::PendingBounds,
    pub privacy: crate::privacy::PrivacyPolicy,
    pub drain_timeout: Duration,
    pub limits: service_runtime::ServerLimits,
    pub tls: Option<service_runtime::ServerTls>,
}

impl AuthConfig {
    /// What the consent flow's prompts, consent tokens and codes live for. Spent codes are
    /// kept an access-token lifetime, so a late replay is still recognised.
    pub fn consent_lifetimes(&self) -> crate::consent::ConsentLifetimes {
        crate::consent::ConsentLifetimes {
            prompt: self.prompt_ttl,
            consent_token: self.consent_token_ttl,
            auth_code: self.auth_code_ttl,
            code_retention: self.access_token_ttl,
        }
    }

    /// What access and refresh tokens live for.
    pub fn token_lifetimes(&self) -> crate::tokens::TokenLifetimes {
        crate::tokens::TokenLifetimes {
            access_token: self.access_token_ttl,
            refresh_token: self.refresh_token_ttl,
        }
    }
}

impl AuthArgs {
    /// Every lifetime and interval must be longer than zero, and the revocation quota at
    /// least one.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        for (variable, ttl) in [
            ("CONSENT_TOKEN_TTL", self.consent_token_ttl),
            ("ACCESS_TOKEN_TTL", self.access_token_ttl),
            ("REFRESH_TOKEN_TTL", self.refresh_token_ttl),
            ("AUTH_CODE_TTL", self.auth_code_ttl),
            ("PROMPT_TTL", self.prompt_ttl),
            ("KEY_ROTATION_PERIOD", self.key_rotation_period),
            ("SWEEP_INTERVAL", self.sweep_interval),
            ("REVOCATION_HEARTBEAT", self.revocation_heartbeat),
            ("CONSENT_RECORD_RETENTION", self.consent_record_retention),
            (
                "AUTHORIZATION_CHANGE_RETENTION",
                self.authorization_change_retention,
            ),
        ] {
            if ttl.is_zero() {
                return Err(ConfigError::Invalid {
                    variable,
                    problem: "must be longer than zero".into(),
                });
            }
        }
        if self.revocation_quota_per_app == 0 {
            return Err(ConfigError::Invalid {
                variable: "REVOCATION_QUOTA_PER_APP",
                problem: "must be at least 1, or no app could revoke a token".into(),
            });
        }
        Ok(())
    }

    /// Checks the flags; every missing credential is named at once. `dev` fills in what is
    /// missing (random bearer tokens, a master key generated once under `data/`).
    pub fn into_config(self, dev: bool) -> Result<AuthConfig, ConfigError> {
        self.check_bounds()?;
        let mut missing = Vec::new();
        let mut credential = |value: Option<String>, name: &'static str| -> String {
            match value.filter(|v| !v.is_empty()) {
                Some(v) => v,
                None if dev => random_token(),
                None => {
                    missing.push(name);
                    String::new()
                }
            }
        };
        let admin = credential(self.admin_token, ENV_ADMIN_TOKEN);
        let wallet = credential(self.wallet_token, ENV_WALLET_TOKEN);
        let verifier = credential(self.verifier_token, ENV_VERIFIER_TOKEN);
        let privacy =
            (self.privacy_token.filter(|v| !v.is_empty())).or_else(|| dev.then(random_token));
        let master_key = match (self.master_key_file, self.master_key, dev) {
            (Some(path), _, _) => Some(read_master_key(&path, ENV_MASTER_KEY_FILE)?),
            (None, Some(hex_key), _) => Some(parse_master_key(&hex_key, ENV_MASTER_KEY)?),
            (None, None, true) => Some(dev_master_key(&PathBuf::from(DEV_MASTER_KEY_FILE))?),
            (None, None, false) => {
                missing.push(ENV_MASTER_KEY_FILE);
                None
            }
        };
        let master_key = match master_key {
            Some(k) if missing.is_empty() => k,
            _ => return Err(ConfigError::Missing(missing)),
        };
        let previous_master_key = match (self.previous_master_key_file, self.previous_master_key) {
            (Some(path), _) => Some(read_master_key(&path, ENV_PREVIOUS_MASTER_KEY_FILE)?),
            (None, Some(hex_key)) => Some(parse_master_key(&hex_key, ENV_PREVIOUS_MASTER_KEY)?),
            (None, None) => None,
        };
        check_role_tokens(&admin, &wallet, &verifier, privacy.as_deref())?;
        Ok(AuthConfig {
            addr: self.addr,
            database_url: self.database_url,
            callers: CallerTokens {
                admin,
                wallet,
                verifier,
                privacy,
            },
            master_key,
            previous_master_key,
            consent_token_ttl: self.consent_token_ttl,
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            auth_code_ttl: self.auth_code_ttl,
            prompt_ttl: self.prompt_ttl,
            key_rotation_period: self.key_rotation_period,
            sweep_interval: self.sweep_interval,
            sweep_batch: self.sweep_batch.max(1),
            failed_credential_budget: self.failed_credential_budget,
            failed_credential_window: self.failed_credential_window,
            trusted_proxies: self.trusted_proxies,
            revocation_heartbeat: self.revocation_heartbeat,
            revocation_quota_per_app: self.revocation_quota_per_app,
            grant_bounds: self.grants.into(),
            pending_bounds: self.pending.into(),
            privacy: crate::privacy::PrivacyPolicy {
                consent_record_retention: self.consent_record_retention,
                authorization_change_retention: self.authorization_change_retention,
                require_declaration: self.require_privacy_declaration,
            },
            drain_timeout: self.drain_timeout,
            limits: self.limits.into(),
            tls: self
                .tls
                .load()
                .map_err(|(variable, e)| ConfigError::Invalid {
                    variable,
                    problem: e.to_string(),
                })?,
        })
    }
}

/// Refuses role tokens that are too short to be secret (naming the variable) or shared by
/// two roles.
fn check_role_tokens(
    admin: &str,
    wallet: &str,
    verifier: &str,
    privacy: Option<&str>,
) -> Result<(), ConfigError> {
    let mut roles = vec![
        (ENV_ADMIN_TOKEN, admin),
        (ENV_WALLET_TOKEN, wallet),
        (ENV_VERIFIER_TOKEN, verifier),
    ];
    roles.extend(privacy.map(|token| (ENV_PRIVACY_TOKEN, token)));
    let shared = "ADMIN_TOKEN, WALLET_TOKEN, VERIFIER_TOKEN, PRIVACY_TOKEN";
    match miniprogram_proto::caller_credentials::role_tokens_problem(&roles, shared) {
        Some((variable, problem)) => Err(ConfigError::Invalid { variable, problem }),
        None => Ok(()),
    }
}

/// A random bearer token for dev mode.
pub fn random_token() -> String {
    miniprogram_token::random_bytes()
        .map(hex::encode)
        .unwrap_or_else(|_| String::from("dev-token-random-source-failed"))
}

/// Reads a master key file: exactly 32 raw bytes (`head -c32 /dev/urandom`).
pub fn read_master_key(
    path: &std::path::Path,
    variable: &'static str,
) -> Result<MasterKey, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Invalid {
        variable,
        problem: format!("cannot read {}: {e}", path.display()),
    })?;
    MasterKey::from_bytes(&bytes).map_err(|e| ConfigError::Invalid {
        variable,
        problem: format!("{}: {e}", path.display()),
    })
}

/// Parses MASTER_KEY: 64 hex digits (`head -c32 /dev/urandom | xxd -p -c32`). The error never
/// echoes the value.
pub fn parse_master_key(hex_key: &str, variable: &'static str) -> Result<MasterKey, ConfigError> {
    let invalid = || ConfigError::Invalid {
        variable,
        problem: "must be 64 hex digits (32 bytes)".into(),
    };
    let bytes = hex::decode(hex_key.trim()).map_err(|_| invalid())?;
    MasterKey::from_bytes(&bytes).map_err(|_| invalid())
}

/// Reads the dev master key, generating it (mode 0600) on first use, with a loud warning.
pub fn dev_master_key(path: &std::path::Path) -> Result<MasterKey, ConfigError> {
    if path.exists() {
        return read_master_key(path, ENV_MASTER_KEY_FILE);
    }
    let invalid = |problem: String| ConfigError::Invalid {
        variable: ENV_MASTER_KEY_FILE,
        problem,
    };
    let bytes = miniprogram_token::random_bytes().map_err(|e| invalid(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        service_runtime::private_files::create_private_dir(dir)
            .map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
    }
    write_private_file(path, &bytes)
        .map_err(|e| invalid(format!("cannot write {}: {e}", path.display())))?;
    tracing::warn!(
        path = %path.display(),
        "DEV MODE: generated a new master key; token keys and the pairwise-id secret are sealed under it. Do not use this in production: set MASTER_KEY_FILE"
    );
    MasterKey::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))
}

/// Writes a file readable by its owner only.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The variable an `Invalid` configuration error names.
    fn invalid_variable(err: &ConfigError) -> Option<&'static str> {
        match err {
            ConfigError::Invalid { variable, .. } => Some(variable),
            _ => None,
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AuthArgs,
    }

    const ADMIN: &str = "admin-token-0123456789abcdef0123456789";
    const WALLET: &str = "wallet-token-0123456789abcdef0123456789";
    const VERIFIER: &str = "verifier-token-0123456789abcdef01234567";

    /// Flags with the admin, wallet and verifier tokens `roles` and then `rest`.
    fn args(roles: [&str; 3], rest: &[&str]) -> AuthArgs {
        let mut argv = vec![
            "auth",
            "--admin-token",
            roles[0],
            "--wallet-token",
            roles[1],
            "--verifier-token",
            roles[2],
        ];
        argv.extend_from_slice(rest);
        let mut args = Cli::try_parse_from(argv).unwrap().args;
        // Only what the test gives: a shell that exports it must not change the outcome.
        if !rest.contains(&"--privacy-token") {
            args.privacy_token = None;
        }
        args
    }

    #[test]
    fn missing_credentials_are_all_named() {
        let cli = Cli::try_parse_from(["auth", "--admin-token", "x"]).unwrap();
        let err = cli.args.into_config(false).unwrap_err();
        let text = err.to_string();
        for name in [ENV_WALLET_TOKEN, ENV_VERIFIER_TOKEN, ENV_MASTER_KEY_FILE] {
            assert!(text.contains(name), "{text}");
        }
        assert!(!text.contains(ENV_ADMIN_TOKEN));
    }

    /// Guards the defaults of the arguments (`default_value` of `CONSENT_RECORD_RETENTION`,
    /// `REQUIRE_PRIVACY_DECLARATION`, the address) and that durations parse.
    #[test]
    fn durations_parse_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let config = args(
            [ADMIN, WALLET, VERIFIER],
            &[
                "--master-key-file",
                key.to_str().unwrap(),
                "--access-token-ttl",
                "15m",
            ],
        )
        .into_config(false)
        .unwrap();
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        // Five calendar years (with up to two leap days), as README "Privacy" says.
        let five_years = Duration::from_secs(1827 * 86_400);
        assert_eq!(config.privacy.consent_record_retention, five_years);
        assert_eq!(crate::privacy::DEFAULT_CONSENT_RECORD_RETENTION, five_years);
        assert!(
            !config.privacy.require_declaration,
            "REQUIRE_PRIVACY_DECLARATION is off by default so existing clients keep working"
        );
    }

    #[test]
    fn short_master_key_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        std::fs::write(&key, [7u8; 16]).unwrap();
        let err = read_master_key(&key, ENV_MASTER_KEY_FILE).unwrap_err();
        assert!(err.to_string().contains(ENV_MASTER_KEY_FILE));
    }

    #[test]
    fn the_master_key_can_come_from_the_environment_as_hex_and_is_never_echoed() {
        let hex_key = "0f".repeat(32);
        let config = args([ADMIN, WALLET, VERIFIER], &["--master-key", &hex_key])
            .into_config(false)
            .unwrap();
        assert_eq!(config.master_key.as_bytes(), &[0x0f; 32]);
        let bad = "zz".repeat(31) + "secretish";
        let err = parse_master_key(&bad, ENV_MASTER_KEY)
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_MASTER_KEY), "{err}");
        assert!(!err.contains("secretish"), "{err}");
        assert!(
            parse_master_key(&"0f".repeat(16), ENV_MASTER_KEY).is_err(),
            "16 bytes is too short"
        );
    }

    #[test]
    fn a_revocation_quota_of_zero_is_refused_by_name() {
        let key = "0f".repeat(32);
        let config = args([ADMIN, WALLET, VERIFIER], &["--master-key", &key])
            .into_config(false)
            .unwrap();
        assert_eq!(
            config.revocation_quota_per_app,
            crate::revocations::DEFAULT_RULES_PER_APP
        );
        let err = args(
            [ADMIN, WALLET, VERIFIER],
            &["--master-key", &key, "--revocation-quota-per-app", "0"],
        )
        .into_config(false)
        .unwrap_err()
        .to_string();
        assert!(err.contains("REVOCATION_QUOTA_PER_APP"), "{err}");
    }

    #[test]
    fn one_token_for_two_roles_is_refused() {
        let same = "the-same-token-for-two-roles-0123456789";
        let err = args([same, same, VERIFIER], &["--master-key", &"0f".repeat(32)])
            .into_config(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ADMIN_TOKEN") && err.contains("own"), "{err}");
        assert!(!err.contains(same), "the value is not echoed: {err}");
    }

    /// Guards `check_role_tokens`' length floor, for each of the three required variables.
    #[test]
    fn a_role_token_under_32_characters_is_refused_by_name() {
        let short = "short-but-distinct-token-012345";
        assert_eq!(short.len(), 31);
        for (i, variable) in [ENV_ADMIN_TOKEN, ENV_WALLET_TOKEN, ENV_VERIFIER_TOKEN]
            .into_iter()
            .enumerate()
        {
            let mut roles = [ADMIN, WALLET, VERIFIER];
            roles[i] = short;
            let err = args(roles, &["--master-key", &"0f".repeat(32)])
                .into_config(false)
                .unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ConfigError::Invalid { variable: v, .. } if v == variable),
                "{text}"
            );
            assert!(!text.contains(short), "the value is not echoed: {text}");
        }
        assert!(
            random_token().len() >= miniprogram_proto::caller_credentials::MIN_ROLE_TOKEN_LEN,
            "dev mode generates long enough tokens"
        );
    }

    /// Guards `PRIVACY_TOKEN` in `check_role_tokens` and its dev-mode default: optional, but
    /// when set as long as the others and no other role's; dev mode generates one.
    #[test]
    fn the_privacy_token_is_optional_and_checked_like_the_others() {
        let key = "0f".repeat(32);
        let roles = [ADMIN, WALLET, VERIFIER];
        let config = args(roles, &["--master-key", &key]).into_config(false);
        assert_eq!(config.unwrap().callers.privacy, None);
        let privacy = "privacy-token-0123456789abcdef012345";
        let config = args(roles, &["--master-key", &key, "--privacy-token", privacy]);
        assert_eq!(
            config
                .into_config(false)
                .unwrap()
                .callers
                .privacy
                .as_deref(),
            Some(privacy)
        );
        let short = args(roles, &["--master-key", &key, "--privacy-token", "short"]);
        let err = short.into_config(false).unwrap_err();
        assert_eq!(invalid_variable(&err), Some(ENV_PRIVACY_TOKEN), "{err}");
        let shared = args(roles, &["--master-key", &key, "--privacy-token", WALLET]);
        let err = shared.into_config(false).unwrap_err().to_string();
        assert!(
            err.contains("PRIVACY_TOKEN") && err.contains("own"),
            "{err}"
        );
        assert!(!err.contains(WALLET), "the value is not echoed: {err}");
        let dev = args(roles, &["--master-key", &key]);
        assert!(dev.into_config(true).unwrap().callers.privacy.is_some());
    }

    #[test]
    fn trusted_proxies_parse_and_a_bad_block_is_refused() {
        let config = args(
            [ADMIN, WALLET, VERIFIER],
            &[
                "--master-key",
                &"0f".repeat(32),
                "--trusted-proxies",
                "10.0.0.0/8, ::1",
            ],
        )
        .into_config(false)
        .unwrap();
        assert!(config.trusted_proxies.contains("10.2.3.4".parse().unwrap()));
        assert!(!config.trusted_proxies.contains("11.2.3.4".parse().unwrap()));
        assert!(Cli::try_parse_from(["auth", "--trusted-proxies", "10.0.0.0/33"]).is_err());
    }
}
