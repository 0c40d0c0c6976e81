//! auth-service: the platform's registry of mini programs, the consent flow, auth codes and
//! token issuance, served over gRPC.
//!
//! [`serve`] binds the configured address; [`serve_with_listener`] takes a bound listener
//! (tests bind `127.0.0.1:0`). Both run until `shutdown` resolves, then drain.
#![forbid(unsafe_code)]

pub mod apps;
pub mod config;
pub mod consent;
pub mod credentials;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod keys;
pub mod model;
pub mod privacy;
pub mod revocations;
pub mod secrets;
pub mod store;
pub mod sweeper;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use miniprogram_proto::auth::v1::{
    app_service_server::AppServiceServer,
    authorization_change_service_server::AuthorizationChangeServiceServer,
    authorization_service_server::AuthorizationServiceServer,
    key_admin_service_server::KeyAdminServiceServer, key_service_server::KeyServiceServer,
    token_service_server::TokenServiceServer,
};
use miniprogram_token::{Clock, SystemClock};
use service_runtime::ServerLayers;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::apps::AppRegistry;
use crate::config::AuthConfig;
use crate::consent::ConsentFlow;
use crate::credentials::{
    AppAuthenticator, CallerRole, CallerRoles, FailedAttemptLimiter, VERIFIED_CREDENTIAL_TTL,
    VerifiedCredentials,
};
use crate::grpc::caller_check::{CallerCheck, PRIVACY_METHODS};
use crate::keys::{KeyRotation, MasterKeyMismatch, SigningKeys};
use crate::privacy::{AuthorizationChanges, PrivacyRecords};
use crate::revocations::{RevocationFeed, RevocationLog, RevocationPolicy};
use crate::secrets::AppUserIdKey;
use crate::store::{AuthStore, StoreError};
use crate::tokens::TokenIssuer;

/// The gRPC service names this server answers for (besides health and reflection).
pub const SERVICE_NAMES: [&str; 6] = [
    miniprogram_proto::auth::v1::app_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::authorization_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::token_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::authorization_change_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::key_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::key_admin_service_server::SERVICE_NAME,
];

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("token keys: {0}")]
    Keys(#[from] error::AuthError),
    #[error("master key: {0}")]
    MasterKey(#[from] MasterKeyMismatch),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `config.addr` and serves until `shutdown` resolves.
pub async fn serve(
    config: AuthConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.addr).await?;
    serve_with_listener(config, listener, shutdown).await
}

/// Serves on an already bound listener until `shutdown` resolves.
pub async fn serve_with_listener(
    config: AuthConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let store = store::open(&config.database_url).await?;
    let master = &config.master_key;
    keys::adopt_master_key(store.as_ref(), master, config.previous_master_key.as_ref()).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let feed = RevocationFeed::default();
    let ring = SigningKeys::default();
    let keys = Keys {
        ring: ring.clone(),
        rotation: KeyRotation::new(
            store.clone(),
            master.clone(),
            config.key_rotation_period,
            config.consent_token_ttl.max(config.access_token_ttl),
            ring,
            feed.clone(),
        ),
        pairwise: keys::pairwise_secret(store.as_ref(), master, clock.now()).await?,
    };
    keys.rotation.ensure_current(clock.now()).await?;

    let mut background = tokio::task::JoinSet::new();
    background.spawn(sweeper::run(
        store.clone(),
        clock.clone(),
        config.sweep_interval,
        config.sweep_batch,
    ));
    let every = keys.rotation.check_interval(config.revocation_heartbeat);
    background.spawn(keys::run(keys.rotation.clone(), clock.clone(), every));

    let draining = CancellationToken::new();
    let log = RevocationLog::new(store.clone(), feed.clone());
    background.spawn(log.follow(clock.clone(), draining.clone()));
    let services = Services::new(&config, store.clone(), clock, keys, feed, &draining);
    let router = services.router(&config, health_service)?;

    service_runtime::set_health(&health, &SERVICE_NAMES, ServingStatus::Serving).await;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "auth-service serving");
    let result = service_runtime::serve_until_drained(
        router,
        listener,
        &config.limits,
        shutdown,
        health,
        &SERVICE_NAMES,
        draining,
        config.drain_timeout,
    )
    .await;
    background.shutdown().await;
    store.close().await;
    tracing::info!("auth-service stopped");
    Ok(result?)
}

/// The key hierarchy as loaded at start-up.
struct Keys {
    ring: SigningKeys,
    rotation: KeyRotation,
    pairwise: AppUserIdKey,
}

/// The gRPC services over the domain, wired to one store, clock, key ring and revocation feed.
struct Services {
    apps: grpc::apps::AppGrpc,
    authorization: grpc::authorization::AuthorizationGrpc,
    tokens: grpc::tokens::TokenGrpc,
    changes: grpc::changes::ChangeGrpc,
    key_admin: grpc::keys::KeyAdminGrpc,
    keys: grpc::keys::KeyGrpc,
    callers: Arc<CallerRoles>,
}

impl Services {
    fn new(
        config: &AuthConfig,
        store: Arc<dyn AuthStore>,
        clock: Arc<dyn Clock>,
        keys: Keys,
        feed: RevocationFeed,
        draining: &CancellationToken,
    ) -> Self {
        let policy = RevocationPolicy::new(config.consent_token_ttl, config.access_token_ttl)
            .with_rules_per_app(config.revocation_quota_per_app);
        let lifetimes = config.consent_lifetimes();
        let ring = keys.ring;
        let privacy = config.privacy;
        let flow = ConsentFlow::new(store.clone(), ring.clone(), lifetimes, policy, feed.clone())
            .with_privacy(privacy)
            .with_bounds(config.pending_bounds);
        let records = PrivacyRecords::new(
            store.clone(),
            privacy,
            policy,
            feed.clone(),
            keys.pairwise.clone(),
        );
        let issuer = TokenIssuer::new(
            store.clone(),
            ring.clone(),
            config.token_lifetimes(),
            keys.pairwise,
            policy,
            feed.clone(),
        )
        .with_bounds(config.grant_bounds);
        let callers = Arc::new(CallerRoles::new(&config.callers));
        let verified = Arc::new(VerifiedCredentials::new(VERIFIED_CREDENTIAL_TTL));
        let app_callers = Self::app_callers(config, &store, &clock, &callers, &verified);
        Services {
            apps: grpc::apps::AppGrpc {
                registry: AppRegistry::new(store.clone(), policy, feed.clone())
                    .with_privacy(privacy)
                    .with_verified_credentials(verified),
                clock: clock.clone(),
            },
            authorization: grpc::authorization::AuthorizationGrpc {
                flow,
                records,
                clock: clock.clone(),
            },
            tokens: grpc::tokens::TokenGrpc {
                issuer,
                apps: app_callers.clone(),
            },
            changes: grpc::changes::ChangeGrpc {
                changes: AuthorizationChanges::new(store.clone(), feed.clone()),
                apps: app_callers,
                heartbeat: config.revocation_heartbeat,
                draining: draining.clone(),
            },
            key_admin: grpc::keys::KeyAdminGrpc {
                keys: ring.clone(),
                rotation: keys.rotation.clone(),
                clock: clock.clone(),
            },
            keys: grpc::keys::KeyGrpc {
                keys: ring,
                rotation: keys.rotation,
                log: RevocationLog::new(store, feed),
                heartbeat: config.revocation_heartbeat,
                clock,
                draining: draining.clone(),
            },
            callers,
        }
    }

    /// How mini program backends are authenticated: their app credential (reused for
    /// `verified`'s time, failures limited), and the verifier's forwarded caller address.
    fn app_callers(
        config: &AuthConfig,
        store: &Arc<dyn AuthStore>,
        clock: &Arc<dyn Clock>,
        callers: &Arc<CallerRoles>,
        verified: &Arc<VerifiedCredentials>,
    ) -> grpc::tokens::AppCallers {
        let limiter = FailedAttemptLimiter::new(
            config.failed_credential_budget,
            config.failed_credential_window,
        );
        let authenticator =
            AppAuthenticator::with_verified(store.clone(), limiter, verified.clone());
        grpc::tokens::AppCallers {
            authenticator: Arc::new(authenticator),
            clock: clock.clone(),
            callers: callers.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// The server: health, reflection and our services behind their caller checks.
    fn router(
        self,
        config: &AuthConfig,
        health_service: HealthServer<impl Health>,
    ) -> Result<Router<ServerLayers>, ServeError> {
        let max = config.limits.max_message_bytes;
        let callers = self.callers;
        let tls = config.tls.as_ref();
        let builder = service_runtime::server_builder_with_tls(&config.limits, &SERVICE_NAMES, tls);
        let reflection = || miniprogram_proto::reflection(&SERVICE_NAMES);
        Ok(builder?
            .add_service(health_service.max_decoding_message_size(max))
            .add_service(reflection().build_v1()?.max_decoding_message_size(max))
            .add_service(reflection().build_v1alpha()?.max_decoding_message_size(max))
            .add_service(CallerCheck::new(
                AppServiceServer::new(self.apps).max_decoding_message_size(max),
                callers.clone(),
                CallerRole::Admin,
            ))
            .add_service(
                CallerCheck::new(
                    AuthorizationServiceServer::new(self.authorization)
                        .max_decoding_message_size(max),
                    callers.clone(),
                    CallerRole::Wallet,
                )
                .also(CallerRole::Privacy, &PRIVACY_METHODS),
            )
            .add_service(TokenServiceServer::new(self.tokens).max_decoding_message_size(max))
            .add_service(
                AuthorizationChangeServiceServer::new(self.changes).max_decoding_message_size(max),
            )
            .add_service(CallerCheck::new(
                KeyAdminServiceServer::new(self.key_admin).max_decoding_message_size(max),
                callers.clone(),
                CallerRole::Admin,
            ))
            .add_service(CallerCheck::new(
                KeyServiceServer::new(self.keys).max_decoding_message_size(max),
                callers,
                CallerRole::Verifier,
            )))
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests {
    /// Arrows point down, gRPC -> services -> store -> model, never around a cycle: guards
    /// that no store file imports a service (the store once took `FeatureSet` from `apps`,
    /// which imported the store back) and that the model imports nothing of ours.
    #[test]
    fn arrows_point_down() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let services: &[&str] = &[
            "error",
            "ids",
            "secrets",
            "revocations",
            "keys",
            "apps",
            "privacy",
            "consent",
            "credentials",
            "tokens",
            "sweeper",
            "config",
        ];
        let layers = [&["model"][..], &["store"], services, &["grpc"]];
        crate::testing::layers::assert_arrows_point_down(&src, &layers);
    }
}
