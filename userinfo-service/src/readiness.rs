//! What this server's health check says. SERVING means "can check tokens now": keys are
//! loaded and the revocation view is fresh (the stream has caught up within the stale bound).
//! A background watcher flips it to NOT_SERVING while the view is stale and back once fresh,
//! so load balancers route around a replica that would refuse every token anyway; once
//! draining has begun, nothing reports SERVING again.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::Clock;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use miniprogram_token::TokenVerifier;

/// How often the watcher looks at the verifier.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Sets the server's health, but never SERVING after [`HealthGate::begin_drain`].
#[derive(Clone)]
pub struct HealthGate {
    health: HealthReporter,
    services: &'static [&'static str],
    draining: CancellationToken,
    /// Held across "not draining yet? then set" and across "begin draining", so a SERVING
    /// can't slip in after the drain set NOT_SERVING.
    switching: Arc<tokio::sync::Mutex<()>>,
}

impl HealthGate {
    /// A gate over the health of `services`; `draining` is cancelled by
    /// [`HealthGate::begin_drain`].
    pub fn new(
        health: HealthReporter,
        services: &'static [&'static str],
        draining: CancellationToken,
    ) -> Self {
        HealthGate {
            health,
            services,
            draining,
            switching: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Reports `status` for every service; `false` (and nothing set) once draining began.
    async fn set(&self, status: ServingStatus) -> bool {
        let _switching = self.switching.lock().await;
        if self.draining.is_cancelled() {
            return false;
        }
        service_runtime::set_health(&self.health, self.services, status).await;
        true
    }

    /// Marks the start of draining; from its return on, this gate sets nothing.
    pub async fn begin_drain(&self) {
        let _switching = self.switching.lock().await;
        self.draining.cancel();
    }

    /// Follows the verifier until draining begins: SERVING while it has keys and a fresh
    /// revocation view, NOT_SERVING otherwise. Starts from NOT_SERVING.
    pub async fn follow(self, verifier: Arc<TokenVerifier>, clock: Arc<dyn Clock>) {
        let mut serving = false;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.draining.cancelled() => return,
            }
            let ready = verifier.has_keys() && !verifier.is_stale(clock.monotonic());
            if ready == serving {
                continue;
            }
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if !self.set(status).await {
                return;
            }
            serving = ready;
            if ready {
                tracing::info!("token keys loaded and revocations caught up; serving");
            } else {
                tracing::warn!(
                    "revocation state is stale; health is NOT_SERVING until it catches up"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::{HealthCheckRequest, health_check_response};
    use tonic_health::server::HealthService;

    use miniprogram_token::{SystemClock, Timestamp};

    use super::*;
    use crate::SERVICE_NAMES;

    async fn status(health: &HealthReporter) -> i32 {
        HealthService::from_health_reporter(health.clone())
            .check(tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }))
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or_default()
    }

    const SERVING: i32 = health_check_response::ServingStatus::Serving as i32;
    const NOT_SERVING: i32 = health_check_response::ServingStatus::NotServing as i32;

    /// Polls until the status is `want`, for up to 5 s; the last status seen.
    async fn wait_for(health: &HealthReporter, want: i32) -> i32 {
        let mut seen = status(health).await;
        for _ in 0..500 {
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen = status(health).await;
        }
        seen
    }

    fn key() -> miniprogram_token::VerifyingKey {
        let now = Timestamp::now();
        miniprogram_token::SigningKey::generate(
            "k1".into(),
            now,
            now.saturating_add(Duration::from_secs(60)),
            now.saturating_add(Duration::from_secs(120)),
        )
        .expect("a key")
        .verifying
    }

    #[tokio::test]
    async fn serving_needs_keys_and_a_heartbeat_and_follows_staleness() {
        let health = HealthReporter::new();
        service_runtime::set_health(&health, &SERVICE_NAMES, ServingStatus::NotServing).await;
        let verifier = Arc::new(TokenVerifier::new(Duration::from_secs(3600)));
        let gate = HealthGate::new(health.clone(), &SERVICE_NAMES, CancellationToken::new());
        let watcher = tokio::spawn(
            gate.clone()
                .follow(verifier.clone(), Arc::new(SystemClock::default())),
        );

        assert!(verifier.replace_keys(vec![key()]));
        // Keys alone are not enough: with no heartbeat the verifier refuses every token.
        tokio::time::sleep(WATCH_INTERVAL * 4).await;
        assert_eq!(status(&health).await, NOT_SERVING);

        verifier.mark_caught_up(std::time::Instant::now());
        assert_eq!(wait_for(&health, SERVING).await, SERVING);

        verifier.mark_stale();
        assert_eq!(wait_for(&health, NOT_SERVING).await, NOT_SERVING);

        verifier.mark_caught_up(std::time::Instant::now());
        assert_eq!(wait_for(&health, SERVING).await, SERVING);
        watcher.abort();
    }

    #[tokio::test]
    async fn nothing_reports_serving_once_draining_began() {
        let health = HealthReporter::new();
        service_runtime::set_health(&health, &SERVICE_NAMES, ServingStatus::NotServing).await;
        let verifier = Arc::new(TokenVerifier::new(Duration::from_secs(3600)));
        let gate = HealthGate::new(health.clone(), &SERVICE_NAMES, CancellationToken::new());
        gate.begin_drain().await;
        assert!(!gate.set(ServingStatus::Serving).await);

        // Ready after the drain began: the watcher ends without reporting SERVING.
        assert!(verifier.replace_keys(vec![key()]));
        verifier.mark_caught_up(std::time::Instant::now());
        tokio::time::timeout(
            Duration::from_secs(5),
            gate.follow(verifier, Arc::new(SystemClock::default())),
        )
        .await
        .expect("the watcher ends once draining began");
        assert_eq!(status(&health).await, NOT_SERVING);
    }
}
