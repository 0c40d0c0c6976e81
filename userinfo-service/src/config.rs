//! userinfo-service configuration: flags with environment fallbacks, checked into
//! [`UserInfoConfig`]. Outside dev mode every credential must be given.

use std::net::SocketAddr;
use std::time::Duration;

pub const ENV_ADDR: &str = "USERINFO_ADDR";
pub const ENV_DATABASE_URL: &str = "USERINFO_DATABASE_URL";
pub const ENV_AUTH_URL: &str = "AUTH_URL";
pub const ENV_ADMIN_TOKEN: &str = "ADMIN_TOKEN";
pub const ENV_VERIFIER_TOKEN: &str = "VERIFIER_TOKEN";

pub const DEFAULT_ADDR: &str = "127.0.0.1:50052";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/userinfo.db";
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:50051";

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
    /// Bearer token of the console / wallet (ProfileService).
    #[arg(long, env = ENV_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The verifier credential this service presents to auth-service's KeyService.
    #[arg(long, env = ENV_VERIFIER_TOKEN, hide_env_values = true)]
    pub verifier_token: Option<String>,
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
    pub admin_token: String,
    pub verifier_token: String,
    pub revocation_stale_after: Duration,
    pub key_refetch_interval: Duration,
    pub drain_timeout: Duration,
    pub profile_cache_ttl: Duration,
    pub limits: service_runtime::ServerLimits,
    pub tls: Option<service_runtime::ServerTls>,
    /// CA for the channel to auth-service; set when `auth_url` is https.
    pub auth_tls_ca_pem: Option<Vec<u8>>,
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
        let mut missing = Vec::new();
        let admin_token = self.admin_token.filter(|v| !v.is_empty());
        let verifier_token = self.verifier_token.filter(|v| !v.is_empty());
        if admin_token.is_none() {
            missing.push(ENV_ADMIN_TOKEN);
        }
        if verifier_token.is_none() {
            missing.push(ENV_VERIFIER_TOKEN);
        }
        let (Some(admin_token), Some(verifier_token)) = (admin_token, verifier_token) else {
            return Err(ConfigError::Missing(missing));
        };
        if !(self.auth_url.starts_with("http://") || self.auth_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                variable: ENV_AUTH_URL,
                problem: "must start with http:// or https://".into(),
            });
        }
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
        if self.revocation_stale_after.is_zero() {
            return Err(ConfigError::Invalid {
                variable: "REVOCATION_STALE_AFTER",
                problem: "must be longer than zero".into(),
            });
        }
        Ok(UserInfoConfig {
            addr: self.addr,
            database_url: self.database_url,
            auth_url: self.auth_url,
            admin_token,
            verifier_token,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
            text.contains(ENV_ADMIN_TOKEN) && text.contains(ENV_VERIFIER_TOKEN),
            "{text}"
        );
    }

    #[test]
    fn defaults_match_the_design() {
        let config =
            Cli::try_parse_from(["userinfo", "--admin-token", "a", "--verifier-token", "v"])
                .unwrap()
                .args
                .into_config()
                .unwrap();
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(config.auth_url, DEFAULT_AUTH_URL);
        assert!(!format!("{config:?}").contains("\"a\""));
    }
}
