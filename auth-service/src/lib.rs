//! auth-service: the platform's registry of mini programs, the consent flow, auth codes and
//! token issuance, served over gRPC.
//!
//! [`serve`] binds the configured address; [`serve_with_listener`] takes a bound listener
//! (tests bind `127.0.0.1:0`). Both run until `shutdown` resolves, then drain.
#![forbid(unsafe_code)]

pub mod apps;
pub mod clock;
pub mod config;
pub mod consent;
pub mod credentials;
pub mod error;
pub mod grpc;
pub mod keys;
pub mod revocations;
pub mod secrets;
pub mod store;
pub mod sweeper;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use miniprogram_proto::auth::v1::{
    app_service_server::AppServiceServer, authorization_service_server::AuthorizationServiceServer,
    key_admin_service_server::KeyAdminServiceServer, key_service_server::KeyServiceServer,
    token_service_server::TokenServiceServer,
};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use crate::apps::AppRegistry;
use crate::clock::Clock;
use crate::config::AuthConfig;
use crate::consent::{ConsentFlow, ConsentLifetimes};
use crate::credentials::{AppAuthenticator, CallerRole, CallerRoles, FailedAttemptLimiter};
use crate::keys::{KeyRotation, MasterKeyMismatch, SigningKeys};
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::store::postgres::PostgresAuthStore;
use crate::store::sqlite::SqliteAuthStore;
use crate::store::{AuthStore, StoreError};
use crate::tokens::{TokenIssuer, TokenLifetimes};

/// The gRPC service names this server answers for (besides health and reflection).
pub const SERVICE_NAMES: [&str; 5] = [
    miniprogram_proto::auth::v1::app_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::authorization_service_server::SERVICE_NAME,
    miniprogram_proto::auth::v1::token_service_server::SERVICE_NAME,
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
    #[error("unsupported database URL (expected sqlite://... or postgres://...)")]
    UnsupportedDatabase,
    #[error("token keys: {0}")]
    Keys(#[from] error::AuthError),
    #[error("master key: {0}")]
    MasterKey(#[from] MasterKeyMismatch),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Opens the store the URL names and applies its migrations.
pub async fn open_store(url: &str) -> Result<Arc<dyn AuthStore>, ServeError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteAuthStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresAuthStore::open(url).await?));
    }
    Err(ServeError::UnsupportedDatabase)
}

/// Binds `config.addr` and serves until `shutdown` resolves.
pub async fn serve(
    config: AuthConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.addr).await?;
    serve_with_listener(config, listener, shutdown).await
}

fn role_check(
    callers: Arc<CallerRoles>,
    role: CallerRole,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        callers.authorize(grpc::authorization_header(request.metadata()), role)?;
        Ok(request)
    }
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

    let store = open_store(&config.database_url).await?;
    keys::adopt_master_key(
        store.as_ref(),
        &config.master_key,
        config.previous_master_key.as_ref(),
    )
    .await?;
    let clock = Arc::new(Clock::default());
    let keys = SigningKeys::default();
    let feed = RevocationFeed::default();
    let longest_token_ttl = config.consent_token_ttl.max(config.access_token_ttl);
    let rotation = KeyRotation::new(
        store.clone(),
        config.master_key.clone(),
        config.key_rotation_period,
        longest_token_ttl,
        keys.clone(),
        feed.clone(),
    );
    rotation.ensure_current(clock.now()).await?;
    let pairwise = keys::pairwise_secret(store.as_ref(), &config.master_key, clock.now()).await?;

    let policy = RevocationPolicy::new(config.consent_token_ttl, config.access_token_ttl)
        .with_token_rules_per_app(config.revocation_quota_per_app);
    let callers = Arc::new(CallerRoles::new(&config.callers));
    let registry = AppRegistry::new(store.clone(), policy, feed.clone());
    let flow = ConsentFlow::new(
        store.clone(),
        keys.clone(),
        ConsentLifetimes {
            prompt: config.prompt_ttl,
            consent_token: config.consent_token_ttl,
            auth_code: config.auth_code_ttl,
            access_token: config.access_token_ttl,
        },
        policy,
        feed.clone(),
    );
    let issuer = TokenIssuer::new(
        store.clone(),
        keys.clone(),
        TokenLifetimes {
            access_token: config.access_token_ttl,
            refresh_token: config.refresh_token_ttl,
        },
        pairwise,
        policy,
        feed.clone(),
    );
    let authenticator = Arc::new(AppAuthenticator::new(
        store.clone(),
        FailedAttemptLimiter::new(
            config.failed_credential_budget,
            config.failed_credential_window,
        ),
    ));

    let max = config.limits.max_message_bytes;
    let reflection_v1 = miniprogram_proto::reflection(&SERVICE_NAMES)
        .build_v1()?
        .max_decoding_message_size(max);
    let reflection_v1alpha = miniprogram_proto::reflection(&SERVICE_NAMES)
        .build_v1alpha()?
        .max_decoding_message_size(max);

    let mut background = tokio::task::JoinSet::new();
    background.spawn(sweeper::run(
        store.clone(),
        config.sweep_interval,
        config.sweep_batch,
    ));
    {
        let rotation = rotation.clone();
        let clock = clock.clone();
        // Under the tenth of a period by which a successor is created early, so no tick can
        // skip the window and leave a moment with no key to mint with; and under half a
        // heartbeat, so a key another replica created or retired is picked up here (and sent
        // to this replica's verifiers) within a second.
        let every = (config.key_rotation_period / 20)
            .min(config.revocation_heartbeat / 2)
            .clamp(
                std::time::Duration::from_millis(10),
                std::time::Duration::from_millis(500),
            );
        background.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = rotation.ensure_current(clock.now()).await {
                    tracing::error!(error = %e, "key rotation failed; will retry");
                }
            }
        });
    }

    let draining = tokio_util::sync::CancellationToken::new();
    let router = service_runtime::server_builder_with_tls(
        &config.limits,
        &SERVICE_NAMES,
        config.tls.as_ref(),
    )?
    .add_service(health_service.max_decoding_message_size(max))
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .add_service(InterceptedService::new(
        AppServiceServer::new(grpc::apps::AppGrpc {
            registry,
            clock: clock.clone(),
        })
        .max_decoding_message_size(max),
        role_check(callers.clone(), CallerRole::Admin),
    ))
    .add_service(InterceptedService::new(
        AuthorizationServiceServer::new(grpc::authorization::AuthorizationGrpc {
            flow,
            clock: clock.clone(),
        })
        .max_decoding_message_size(max),
        role_check(callers.clone(), CallerRole::Wallet),
    ))
    .add_service(
        TokenServiceServer::new(grpc::tokens::TokenGrpc {
            issuer,
            apps: authenticator,
            clock: clock.clone(),
            callers: callers.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        })
        .max_decoding_message_size(max),
    )
    .add_service(InterceptedService::new(
        KeyAdminServiceServer::new(grpc::keys::KeyAdminGrpc {
            keys: keys.clone(),
            rotation: rotation.clone(),
            clock: clock.clone(),
        })
        .max_decoding_message_size(max),
        role_check(callers.clone(), CallerRole::Admin),
    ))
    .add_service(InterceptedService::new(
        KeyServiceServer::new(grpc::keys::KeyGrpc {
            keys,
            rotation: rotation.clone(),
            store: store.clone(),
            feed,
            heartbeat: config.revocation_heartbeat,
            clock,
            draining: draining.clone(),
        })
        .max_decoding_message_size(max),
        role_check(callers, CallerRole::Verifier),
    ));

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

#[cfg(any(test, feature = "testing"))]
pub mod testing;
