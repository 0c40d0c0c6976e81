//! userinfo-service configuration: flags with environment fallbacks, checked into
//! [`UserInfoConfig`]. Outside dev mode every credential must be given.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use miniprogram_proto::client_address::TrustedProxies;

use crate::disclosures::DisclosureSettings;
use crate::read_limits::{RateLimit, ReadLimits};
use crate::store::Vacuum;

pub const ENV_ADDR: &str = "USERINFO_ADDR";
pub const ENV_DATABASE_URL: &str = "USERINFO_DATABASE_URL";
pub const ENV_AUTH_URL: &str = "AUTH_URL";
pub const ENV_PROFILE_TOKEN: &str = "PROFILE_TOKEN";
pub const ENV_VERIFIER_TOKEN: &str = "VERIFIER_TOKEN";
pub const ENV_PRIVACY_TOKEN: &str = "PRIVACY_TOKEN";
/// Refused: userinfo-service took the wallet's credential before PRIVACY_TOKEN existed.
pub const ENV_WALLET_TOKEN: &str = "WALLET_TOKEN";
/// Refused: userinfo-service took the console's credential before PROFILE_TOKEN existed.
pub const ENV_ADMIN_TOKEN: &str = "ADMIN_TOKEN";
pub const ENV_TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";
pub const ENV_AUTH_ALLOW_PLAINTEXT: &str = "AUTH_ALLOW_PLAINTEXT";

pub const ENV_READ_LIMIT_PER_APP: &str = "READ_LIMIT_PER_APP";
pub const ENV_READ_LIMIT_PER_APP_BURST: &str = "READ_LIMIT_PER_APP_BURST";
pub const ENV_READ_LIMIT_PER_TOKEN: &str = "READ_LIMIT_PER_TOKEN";
pub const ENV_READ_LIMIT_PER_TOKEN_BURST: &str = "READ_LIMIT_PER_TOKEN_BURST";
pub const ENV_DISCLOSURE_FLUSH_INTERVAL: &str = "DISCLOSURE_FLUSH_INTERVAL";
pub const ENV_DISCLOSURE_MAX_PENDING: &str = "DISCLOSURE_MAX_PENDING";
pub const ENV_DISCLOSURE_RETENTION: &str = "DISCLOSURE_RETENTION";

pub const DEFAULT_ADDR: &str = "127.0.0.1:50052";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/userinfo.db";
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:50051";
pub const DEFAULT_READ_LIMIT_PER_APP: &str = "2000";
pub const DEFAULT_READ_LIMIT_PER_APP_BURST: &str = "4000";
pub const DEFAULT_READ_LIMIT_PER_TOKEN: &str = "10";
pub const DEFAULT_READ_LIMIT_PER_TOKEN_BURST: &str = "50";
pub const DEFAULT_DISCLOSURE_FLUSH_INTERVAL: &str = "1s";
pub const DEFAULT_DISCLOSURE_MAX_PENDING: &str = "100000";
pub const DEFAULT_DISCLOSURE_RETENTION: &str = "400d";

/// Scraping limits on GetOpenUserInfo and GetPhoneNumber, per replica.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadLimitArgs {
    /// Answered reads per second one app may make of each of the two methods (counted apart)
    /// once its burst is spent; fractions allowed, 0 turns the limit off.
    #[arg(long, env = ENV_READ_LIMIT_PER_APP, default_value = DEFAULT_READ_LIMIT_PER_APP)]
    pub read_limit_per_app: f64,
    /// Reads one app may make at once from a full budget.
    #[arg(long, env = ENV_READ_LIMIT_PER_APP_BURST, default_value = DEFAULT_READ_LIMIT_PER_APP_BURST)]
    pub read_limit_per_app_burst: u32,
    /// Answered reads per second with one token (by its token id); 0 turns the limit off.
    #[arg(long, env = ENV_READ_LIMIT_PER_TOKEN, default_value = DEFAULT_READ_LIMIT_PER_TOKEN)]
    pub read_limit_per_token: f64,
    /// Reads with one token at once from a full budget.
    #[arg(long, env = ENV_READ_LIMIT_PER_TOKEN_BURST, default_value = DEFAULT_READ_LIMIT_PER_TOKEN_BURST)]
    pub read_limit_per_token_burst: u32,
}

impl ReadLimitArgs {
    /// The limits, or the first bad variable.
    pub fn into_limits(self) -> Result<ReadLimits, ConfigError> {
        let limit = |rate: f64, burst: u32, rate_var, burst_var| {
            if rate == 0.0 {
                return Ok(None);
            }
            let burst = NonZeroU32::new(burst).ok_or(ConfigError::Invalid {
                variable: burst_var,
                problem: "must be at least 1".into(),
            })?;
            RateLimit::new(rate, burst)
                .map(Some)
                .ok_or(ConfigError::Invalid {
                    variable: rate_var,
                    problem: "must be 0 (off) or a positive rate of at most 1e9 a second".into(),
                })
        };
        Ok(ReadLimits {
            per_app: limit(
                self.read_limit_per_app,
                self.read_limit_per_app_burst,
                ENV_READ_LIMIT_PER_APP,
                ENV_READ_LIMIT_PER_APP_BURST,
            )?,
            per_token: limit(
                self.read_limit_per_token,
                self.read_limit_per_token_burst,
                ENV_READ_LIMIT_PER_TOKEN,
                ENV_READ_LIMIT_PER_TOKEN_BURST,
            )?,
        })
    }
}

/// The disclosure ledger's writer and retention.
#[derive(Debug, Clone, clap::Args)]
pub struct DisclosureArgs {
    /// How often counted reads are written: what a crash can lose.
    #[arg(long, env = ENV_DISCLOSURE_FLUSH_INTERVAL, default_value = DEFAULT_DISCLOSURE_FLUSH_INTERVAL, value_parser = humantime::parse_duration)]
    pub disclosure_flush_interval: Duration,
    /// Distinct ledger rows held in memory before a write; past it reads go uncounted (and
    /// counted in `disclosure_reads_dropped_total`).
    #[arg(long, env = ENV_DISCLOSURE_MAX_PENDING, default_value = DEFAULT_DISCLOSURE_MAX_PENDING)]
    pub disclosure_max_pending: usize,
    /// Ledger rows of days older than this are deleted (swept hourly).
    #[arg(long, env = ENV_DISCLOSURE_RETENTION, default_value = DEFAULT_DISCLOSURE_RETENTION, value_parser = humantime::parse_duration)]
    pub disclosure_retention: Duration,
}

impl DisclosureArgs {
    /// The settings, or the first bad variable.
    pub fn into_settings(self) -> Result<DisclosureSettings, ConfigError> {
        let invalid = |variable, problem: &str| ConfigError::Invalid {
            variable,
            problem: problem.into(),
        };
        if self.disclosure_flush_interval.is_zero() {
            return Err(invalid(
                ENV_DISCLOSURE_FLUSH_INTERVAL,
                "must be longer than zero",
            ));
        }
        if self.disclosure_max_pending == 0 {
            return Err(invalid(ENV_DISCLOSURE_MAX_PENDING, "must be at least 1"));
        }
        if self.disclosure_retention < Duration::from_secs(86_400) {
            return Err(invalid(ENV_DISCLOSURE_RETENTION, "must be at least a day"));
        }
        Ok(DisclosureSettings {
            flush_interval: self.disclosure_flush_interval,
            max_pending: self.disclosure_max_pending,
            retention: self.disclosure_retention,
        })
    }
}

/// Command-line flags, each with an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct UserInfoArgs {
    /// Address to listen on.
    #[arg(long = "userinfo-addr", env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Database: `sqlite://path` (created if missing).
    #[arg(long = "userinfo-database-url", env = ENV_DATABASE_URL, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// auth-service, for token keys, the revocation stream and app credential checks.
    #[arg(long, env = ENV_AUTH_URL, default_value = DEFAULT_AUTH_URL)]
    pub auth_url: String,
    /// Bearer token of ProfileService's callers (the wallet's gateway, the console).
    #[arg(long, env = ENV_PROFILE_TOKEN, hide_env_values = true)]
    pub profile_token: Option<String>,
    /// The verifier credential this service presents to auth-service's KeyService.
    #[arg(long, env = ENV_VERIFIER_TOKEN, hide_env_values = true)]
    pub verifier_token: Option<String>,
    /// The credential this service presents to auth-service (its PRIVACY_TOKEN) to export a
    /// user's authorizations and to end them when the user is erased; auth-service accepts it
    /// for nothing else. Without it, ExportUserData is unavailable and erasures stay pending
    /// at auth-service.
    #[arg(long, env = ENV_PRIVACY_TOKEN, hide_env_values = true)]
    pub privacy_token: Option<String>,
    /// Refused when set: the wallet's credential runs consent for any user, more than this
    /// service needs (README, Configuration).
    #[arg(long, env = ENV_WALLET_TOKEN, hide = true, hide_env_values = true)]
    pub wallet_token: Option<String>,
    /// Refused when set: the console's credential also registers apps and retires signing
    /// keys at auth-service, more than this service needs (README, Configuration).
    #[arg(long, env = ENV_ADMIN_TOKEN, hide = true, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How often erasures not yet confirmed by auth-service are retried.
    #[arg(long, env = "ERASURE_RETRY_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub erasure_retry_interval: Duration,
    /// On PostgreSQL, scrub after each erasure with `VACUUM FULL` of the profile and ledger
    /// tables (rewritten, so no erased byte stays in their files) instead of `VACUUM`. Off by
    /// default: it locks each table, reads included, while it rewrites it.
    #[arg(long, env = "ERASURE_VACUUM_FULL")]
    pub erasure_vacuum_full: bool,
    /// Refuse tokens (REVOCATION_STATE_STALE), and report health NOT_SERVING, once the
    /// revocation stream has not been caught up (no heartbeat) for this long.
    #[arg(long, env = "REVOCATION_STALE_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub revocation_stale_after: Duration,
    /// On SIGTERM / Ctrl-C, how long in-flight calls get to finish.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub limits: service_runtime::LimitArgs,
    #[command(flatten)]
    pub tls: service_runtime::TlsArgs,
    /// PEM CA certificate that auth-service's TLS certificate chains to (for an https AUTH_URL).
    #[arg(long, env = "AUTH_TLS_CA_FILE")]
    pub auth_tls_ca_file: Option<std::path::PathBuf>,
    /// How long a public profile read may be reused (0 disables the cache). Writes through
    /// this replica invalidate at once; other replicas' writes show within this time.
    #[arg(long, env = "PROFILE_CACHE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub profile_cache_ttl: Duration,
    /// At most one key refetch per this interval when a token names an unknown key.
    #[arg(long, env = "KEY_REFETCH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub key_refetch_interval: Duration,
    /// Proxies (CIDR blocks or addresses, comma-separated) whose `x-forwarded-for` names the
    /// GetPhoneNumber caller passed on to auth-service's failed-credential limits.
    #[arg(long, env = ENV_TRUSTED_PROXIES, default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// Accept a plaintext http:// AUTH_URL to a host that is neither loopback nor a
    /// single-label service name (the verifier token and backends' app secrets cross it).
    #[arg(long, env = ENV_AUTH_ALLOW_PLAINTEXT)]
    pub auth_allow_plaintext: bool,
    #[command(flatten)]
    pub read_limits: ReadLimitArgs,
    #[command(flatten)]
    pub disclosures: DisclosureArgs,
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
#[derive(Clone)]
pub struct UserInfoConfig {
    pub addr: SocketAddr,
    pub database_url: String,
    pub auth_url: String,
    /// ProfileService's credential.
    pub profile_token: String,
    pub verifier_token: String,
    /// Presented to auth-service for exports and erasures; optional.
    pub privacy_token: Option<String>,
    pub erasure_retry_interval: Duration,
    /// How an erasure scrubs the personal tables on PostgreSQL (`ERASURE_VACUUM_FULL`).
    pub erasure_vacuum: Vacuum,
    pub revocation_stale_after: Duration,
    pub key_refetch_interval: Duration,
    pub drain_timeout: Duration,
    pub profile_cache_ttl: Duration,
    pub limits: service_runtime::ServerLimits,
    pub tls: Option<service_runtime::ServerTls>,
    /// CA for the channel to auth-service; set when `auth_url` is https.
    pub auth_tls_ca_pem: Option<Vec<u8>>,
    /// Proxies whose `x-forwarded-for` names a GetPhoneNumber caller.
    pub trusted_proxies: TrustedProxies,
    /// Scraping limits on the two reads.
    pub read_limits: ReadLimits,
    /// The disclosure ledger's writer and retention.
    pub disclosures: DisclosureSettings,
}

impl std::fmt::Debug for UserInfoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserInfoConfig")
            .field("addr", &self.addr)
            .field("database_url", &self.database_url)
            .field("auth_url", &self.auth_url)
            .field("revocation_stale_after", &self.revocation_stale_after)
            .finish_non_exhaustive()
    }
}

impl UserInfoArgs {
    /// Checks the flags, naming every missing credential at once. In dev mode nothing is
    /// generated here: the verifier token must match auth-service's, so the runner passes it.
    pub fn into_config(self) -> Result<UserInfoConfig, ConfigError> {
        refuse_auth_service_tokens(self.admin_token.as_deref(), self.wallet_token.as_deref())?;
        let mut missing = Vec::new();
        let profile_token = self.profile_token.filter(|v| !v.is_empty());
        let verifier_token = self.verifier_token.filter(|v| !v.is_empty());
        if profile_token.is_none() {
            missing.push(ENV_PROFILE_TOKEN);
        }
        if verifier_token.is_none() {
            missing.push(ENV_VERIFIER_TOKEN);
        }
        let (Some(profile_token), Some(verifier_token)) = (profile_token, verifier_token) else {
            return Err(ConfigError::Missing(missing));
        };
        let privacy_token = self.privacy_token.filter(|v| !v.is_empty());
        check_role_tokens(&profile_token, &verifier_token, privacy_token.as_deref())?;
        check_auth_url(&self.auth_url, self.auth_allow_plaintext)?;
        let auth_tls_ca_pem = match (
            &self.auth_tls_ca_file,
            self.auth_url.starts_with("https://"),
        ) {
            (Some(path), true) => Some(std::fs::read(path).map_err(|e| ConfigError::Invalid {
                variable: "AUTH_TLS_CA_FILE",
                problem: format!("cannot read {}: {e}", path.display()),
            })?),
            (None, true) => {
                return Err(ConfigError::Invalid {
                    variable: "AUTH_TLS_CA_FILE",
                    problem: "required when AUTH_URL is https://".into(),
                });
            }
            (_, false) => None,
        };
        for (variable, interval) in [
            ("REVOCATION_STALE_AFTER", self.revocation_stale_after),
            ("ERASURE_RETRY_INTERVAL", self.erasure_retry_interval),
        ] {
            if interval.is_zero() {
                return Err(ConfigError::Invalid {
                    variable,
                    problem: "must be longer than zero".into(),
                });
            }
        }
        Ok(UserInfoConfig {
            addr: self.addr,
            database_url: self.database_url,
            auth_url: self.auth_url,
            profile_token,
            verifier_token,
            privacy_token,
            erasure_retry_interval: self.erasure_retry_interval,
            erasure_vacuum: if self.erasure_vacuum_full {
                Vacuum::Full
            } else {
                Vacuum::Plain
            },
            revocation_stale_after: self.revocation_stale_after,
            key_refetch_interval: self.key_refetch_interval,
            drain_timeout: self.drain_timeout,
            profile_cache_ttl: self.profile_cache_ttl,
            limits: self.limits.into(),
            tls: self
                .tls
                .load()
                .map_err(|(variable, e)| ConfigError::Invalid {
                    variable,
                    problem: e.to_string(),
                })?,
            auth_tls_ca_pem,
            trusted_proxies: self.trusted_proxies,
            read_limits: self.read_limits.into_limits()?,
            disclosures: self.disclosures.into_settings()?,
        })
    }
}

/// Refuses role tokens too short to be secret (naming the variable), and one token for two
/// roles: the verifier credential goes to auth-service with every GetPhoneNumber check, so
/// if it were also the profile token, whoever can read that link could rewrite profiles.
fn check_role_tokens(
    profile: &str,
    verifier: &str,
    privacy: Option<&str>,
) -> Result<(), ConfigError> {
    let mut roles = vec![(ENV_PROFILE_TOKEN, profile), (ENV_VERIFIER_TOKEN, verifier)];
    roles.extend(privacy.map(|token| (ENV_PRIVACY_TOKEN, token)));
    let shared = match privacy {
        Some(_) => "PROFILE_TOKEN, VERIFIER_TOKEN, PRIVACY_TOKEN",
        None => "PROFILE_TOKEN, VERIFIER_TOKEN",
    };
    match miniprogram_proto::caller_credentials::role_tokens_problem(&roles, shared) {
        Some((variable, problem)) => Err(ConfigError::Invalid { variable, problem }),
        None => Ok(()),
    }
}

/// userinfo-service once took the console's credential (for ProfileService's callers) and the
/// wallet's (for exports and erasures). Each opens far more at auth-service than this service
/// needs, and this service faces mini programs' traffic: either refuses start, saying what to
/// give instead.
fn refuse_auth_service_tokens(
    admin: Option<&str>,
    wallet: Option<&str>,
) -> Result<(), ConfigError> {
    let refused = [
        (
            ENV_ADMIN_TOKEN,
            admin,
            "the console's credential, which also registers apps and retires signing keys at \
             auth-service: give ProfileService's callers PROFILE_TOKEN, its own credential",
        ),
        (
            ENV_WALLET_TOKEN,
            wallet,
            "the wallet's credential, which runs consent for any user: give it PRIVACY_TOKEN, \
             which auth-service accepts for a user's export and erasure only",
        ),
    ];
    match (refused.into_iter()).find(|(_, token, _)| token.is_some_and(|t| !t.is_empty())) {
        Some((variable, _, what)) => Err(ConfigError::Invalid {
            variable,
            problem: format!("userinfo-service no longer takes {what}"),
        }),
        None => Ok(()),
    }
}

/// How a plaintext `http://` AUTH_URL is judged. The link carries the verifier token and,
/// for every GetPhoneNumber, the backend's app secret, so plaintext is accepted by itself
/// only where it can't cross a shared network: a loopback address, `localhost`, or a
/// single-label name (a compose or cluster service name, which resolves on the private
/// network of its deployment). Anything else needs `AUTH_ALLOW_PLAINTEXT`, and then warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextLink {
    /// `https://`: nothing to say.
    Tls,
    /// Plaintext to a host that stays on this machine or the deployment's private network.
    Local,
    /// Plaintext to any other host, accepted with `AUTH_ALLOW_PLAINTEXT` only.
    Remote,
}

/// Classifies an AUTH_URL (see [`PlaintextLink`]); `None` when it is not an http(s) URL.
pub fn plaintext_link(auth_url: &str) -> Option<PlaintextLink> {
    let url = url::Url::parse(auth_url).ok()?;
    match url.scheme() {
        "https" => return Some(PlaintextLink::Tls),
        "http" => {}
        _ => return None,
    }
    let local = match url.host()? {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.');
            name.eq_ignore_ascii_case("localhost") || !name.contains('.')
        }
    };
    Some(if local {
        PlaintextLink::Local
    } else {
        PlaintextLink::Remote
    })
}

/// Refuses an AUTH_URL that is not http(s), or plaintext to a remote host without the opt-in
/// (with it, warns loudly).
fn check_auth_url(auth_url: &str, allow_plaintext: bool) -> Result<(), ConfigError> {
    match plaintext_link(auth_url) {
        None => Err(ConfigError::Invalid {
            variable: ENV_AUTH_URL,
            problem: "must be an http:// or https:// URL with a host".into(),
        }),
        Some(PlaintextLink::Tls | PlaintextLink::Local) => Ok(()),
        Some(PlaintextLink::Remote) if allow_plaintext => {
            tracing::warn!(
                auth_url,
                "AUTH_URL is plaintext http:// to a remote host (AUTH_ALLOW_PLAINTEXT is set): \
                 the verifier token and every GetPhoneNumber caller's app secret cross the \
                 network unencrypted; use https:// with AUTH_TLS_CA_FILE"
            );
            Ok(())
        }
        Some(PlaintextLink::Remote) => Err(ConfigError::Invalid {
            variable: ENV_AUTH_URL,
            problem: "is plaintext http:// to a host that is neither loopback nor a \
                      single-label service name; the verifier token and backends' app secrets \
                      would cross the network unencrypted. Use https:// with AUTH_TLS_CA_FILE, \
                      or set AUTH_ALLOW_PLAINTEXT=true to accept the risk"
                .into(),
        }),
    }
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
        args: UserInfoArgs,
    }

    #[test]
    fn missing_credentials_are_all_named() {
        let err = Cli::try_parse_from(["userinfo"])
            .unwrap()
            .args
            .into_config()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(ENV_PROFILE_TOKEN) && text.contains(ENV_VERIFIER_TOKEN),
            "{text}"
        );
    }

    const PROFILE: &str = "profile-token-0123456789abcdef01234567";
    const VERIFIER: &str = "verifier-token-0123456789abcdef01234567";

    fn parse(extra: &[&str]) -> Result<UserInfoConfig, ConfigError> {
        let mut argv = vec![
            "userinfo",
            "--profile-token",
            PROFILE,
            "--verifier-token",
            VERIFIER,
        ];
        argv.extend_from_slice(extra);
        let mut args = Cli::try_parse_from(argv).unwrap().args;
        // Only what the test gives: a shell that exports these must not change the outcome.
        if !extra.contains(&"--wallet-token") {
            args.wallet_token = None;
        }
        if !extra.contains(&"--admin-token") {
            args.admin_token = None;
        }
        if !extra.contains(&"--privacy-token") {
            args.privacy_token = None;
        }
        args.into_config()
    }

    #[test]
    fn defaults_match_the_design() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(config.auth_url, DEFAULT_AUTH_URL);
        assert!(!format!("{config:?}").contains(PROFILE));
    }

    /// Guards `check_role_tokens`: the length floor for both variables, and one token for
    /// both roles.
    #[test]
    fn short_or_shared_role_tokens_are_refused_by_name() {
        let short = "short-but-distinct-token-012345";
        assert_eq!(short.len(), 31);
        for (variable, argv) in [
            (
                ENV_PROFILE_TOKEN,
                ["--profile-token", short, "--verifier-token", VERIFIER],
            ),
            (
                ENV_VERIFIER_TOKEN,
                ["--profile-token", PROFILE, "--verifier-token", short],
            ),
        ] {
            let err = Cli::try_parse_from(std::iter::once("userinfo").chain(argv))
                .unwrap()
                .args
                .into_config()
                .unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ConfigError::Invalid { variable: v, .. } if v == variable),
                "{text}"
            );
            assert!(!text.contains(short), "the value is not echoed: {text}");
        }
        let err = Cli::try_parse_from([
            "userinfo",
            "--profile-token",
            PROFILE,
            "--verifier-token",
            PROFILE,
        ])
        .unwrap()
        .args
        .into_config()
        .unwrap_err()
        .to_string();
        assert!(err.contains("PROFILE_TOKEN, VERIFIER_TOKEN"), "{err}");
        assert!(!err.contains(PROFILE), "the value is not echoed: {err}");
    }

    /// Guards `refuse_auth_service_tokens` and the privacy token in `check_role_tokens`: the
    /// console's and the wallet's credentials each refuse start by name; the privacy
    /// credential is taken, must be long enough and must not be another role's.
    #[test]
    fn the_console_and_wallet_tokens_are_refused_and_the_privacy_token_is_checked() {
        let wallet = "wallet-token-0123456789abcdef0123456";
        let err = parse(&["--wallet-token", wallet]).unwrap_err();
        assert_eq!(invalid_variable(&err), Some(ENV_WALLET_TOKEN), "{err}");
        assert!(!err.to_string().contains(wallet), "the value is not echoed");
        let admin = "admin-token-0123456789abcdef0123456789";
        let err = parse(&["--admin-token", admin]).unwrap_err();
        assert_eq!(invalid_variable(&err), Some(ENV_ADMIN_TOKEN), "{err}");
        assert!(
            err.to_string().contains(ENV_PROFILE_TOKEN),
            "says what to give: {err}"
        );
        assert!(!err.to_string().contains(admin), "the value is not echoed");
        let privacy = "privacy-token-0123456789abcdef012345";
        let config = parse(&["--privacy-token", privacy]).unwrap();
        assert_eq!(config.privacy_token.as_deref(), Some(privacy));
        let err = parse(&["--privacy-token", "short"]).unwrap_err();
        assert_eq!(invalid_variable(&err), Some(ENV_PRIVACY_TOKEN), "{err}");
        for other in [PROFILE, VERIFIER] {
            let err = parse(&["--privacy-token", other]).unwrap_err().to_string();
            assert!(
                err.contains("PRIVACY_TOKEN") && err.contains("own"),
                "{err}"
            );
            assert!(!err.contains(other), "the value is not echoed: {err}");
        }
    }

    #[test]
    fn privacy_defaults_are_the_documented_ones() {
        let config = parse(&[]).unwrap();
        let limit = |rate, burst| RateLimit::new(rate, NonZeroU32::new(burst).unwrap());
        assert_eq!(
            config.read_limits,
            ReadLimits {
                per_app: limit(2000.0, 4000),
                per_token: limit(10.0, 50),
            }
        );
        assert_eq!(
            config.disclosures,
            DisclosureSettings {
                flush_interval: Duration::from_secs(1),
                max_pending: 100_000,
                retention: Duration::from_secs(400 * 86_400),
            }
        );
        let off = parse(&["--read-limit-per-app", "0", "--read-limit-per-token", "0.5"]).unwrap();
        assert_eq!(off.read_limits.per_app, None);
        assert_eq!(off.read_limits.per_token, limit(0.5, 50));
    }

    /// `ERASURE_VACUUM_FULL` is off unless asked for (`VACUUM FULL` locks the tables).
    #[test]
    fn vacuum_full_after_an_erasure_is_opt_in() {
        assert_eq!(parse(&[]).unwrap().erasure_vacuum, Vacuum::Plain);
        let on = parse(&["--erasure-vacuum-full"]).unwrap();
        assert_eq!(on.erasure_vacuum, Vacuum::Full);
    }

    /// Guards `ReadLimitArgs::into_limits` and `DisclosureArgs::into_settings`: each bad
    /// value is refused naming its variable.
    #[test]
    fn bad_privacy_settings_are_refused_by_name() {
        for (argv, variable) in [
            (
                ["--read-limit-per-app=-1", "--read-limit-per-app-burst=4000"],
                ENV_READ_LIMIT_PER_APP,
            ),
            (["--read-limit-per-token", "NaN"], ENV_READ_LIMIT_PER_TOKEN),
            (
                ["--read-limit-per-app-burst", "0"],
                ENV_READ_LIMIT_PER_APP_BURST,
            ),
            (
                ["--read-limit-per-token-burst", "0"],
                ENV_READ_LIMIT_PER_TOKEN_BURST,
            ),
            (
                ["--disclosure-flush-interval", "0s"],
                ENV_DISCLOSURE_FLUSH_INTERVAL,
            ),
            (
                ["--disclosure-max-pending", "0"],
                ENV_DISCLOSURE_MAX_PENDING,
            ),
            (["--disclosure-retention", "23h"], ENV_DISCLOSURE_RETENTION),
        ] {
            let err = parse(&argv).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { variable: v, .. } if v == variable),
                "{argv:?}: {err}"
            );
        }
    }

    #[test]
    fn auth_urls_are_classified_by_where_plaintext_can_go() {
        for local in [
            "http://127.0.0.1:50051",
            "http://127.8.9.1:50051",
            "http://[::1]:50051",
            "http://localhost:50051",
            "http://auth:50051",
            "http://auth-service.:50051",
        ] {
            assert_eq!(plaintext_link(local), Some(PlaintextLink::Local), "{local}");
        }
        for remote in [
            "http://10.0.0.5:50051",
            "http://192.168.1.2:50051",
            "http://auth.example.com:50051",
            "http://auth-service.prod.svc.cluster.local:50051",
            "http://[2001:db8::1]:50051",
            "http://0.0.0.0:50051",
        ] {
            assert_eq!(
                plaintext_link(remote),
                Some(PlaintextLink::Remote),
                "{remote}"
            );
        }
        assert_eq!(
            plaintext_link("https://auth.example.com"),
            Some(PlaintextLink::Tls)
        );
        for bad in ["auth:50051", "ftp://auth", "http://"] {
            assert_eq!(plaintext_link(bad), None, "{bad}");
        }
    }

    /// Guards `check_auth_url`: plaintext to a remote host is refused, naming AUTH_URL, unless
    /// AUTH_ALLOW_PLAINTEXT opts in; local plaintext and https need no opt-in.
    #[test]
    fn plaintext_to_a_remote_auth_service_needs_an_explicit_opt_in() {
        let remote = "http://auth.example.com:50051";
        let err = parse(&["--auth-url", remote]).unwrap_err();
        assert_eq!(invalid_variable(&err), Some(ENV_AUTH_URL), "{err}");
        assert!(err.to_string().contains(ENV_AUTH_ALLOW_PLAINTEXT), "{err}");
        let config = parse(&["--auth-url", remote, "--auth-allow-plaintext"]).unwrap();
        assert_eq!(config.auth_url, remote);
        assert!(parse(&["--auth-url", "http://auth:50051"]).is_ok());
    }
}
