//! Who is calling: the three bearer roles (console, wallet gateway, verifier) and mini program
//! backends with their app credential, with failed app-credential attempts rate limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use miniprogram_token::Timestamp;
use subtle::ConstantTimeEq;

use crate::error::AuthError;
use crate::secrets;
use crate::store::{AppRecord, AuthStore, StoreError};

/// The platform roles that call with a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerRole {
    /// The platform console: AppService.
    Admin,
    /// The wallet app's gateway, on behalf of a signed-in user: AuthorizationService.
    Wallet,
    /// A token verifier (userinfo-service): KeyService.
    Verifier,
}

/// The bearer tokens of the three roles.
#[derive(Clone)]
pub struct CallerTokens {
    pub admin: String,
    pub wallet: String,
    pub verifier: String,
}

impl std::fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerTokens(<redacted>)")
    }
}

impl CallerTokens {
    /// Checks an `authorization` header for `required`: a missing or unknown credential is
    /// unauthenticated; another role's valid credential is not permitted.
    pub fn authorize(&self, header: Option<&str>, required: CallerRole) -> Result<(), AuthError> {
        let presented = miniprogram_proto::caller_credentials::bearer_token(header)
            .ok_or(AuthError::UnauthenticatedCaller)?
            .as_bytes();
        let role_of = |token: &str| -> bool { token.as_bytes().ct_eq(presented).into() };
        let matched = [
            (CallerRole::Admin, role_of(&self.admin)),
            (CallerRole::Wallet, role_of(&self.wallet)),
            (CallerRole::Verifier, role_of(&self.verifier)),
        ];
        match matched.iter().find(|(_, ok)| *ok) {
            Some((role, _)) if *role == required => Ok(()),
            Some(_) => Err(AuthError::CallerNotPermitted),
            None => Err(AuthError::UnauthenticatedCaller),
        }
    }
}

/// `Basic base64(app_id:app_secret)` split into its parts.
pub fn parse_basic(header: Option<&str>) -> Result<(String, String), AuthError> {
    miniprogram_proto::caller_credentials::basic_credential(header)
        .ok_or(AuthError::InvalidAuthClient)
}

/// Counts failed credential attempts per key (app id, caller address) in fixed windows; a key
/// over its budget is refused, right or wrong, until its window ends.
#[derive(Debug)]
pub struct FailedAttemptLimiter {
    budget: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Timestamp, u32)>>,
}

impl FailedAttemptLimiter {
    pub fn new(budget: u32, window: Duration) -> Self {
        FailedAttemptLimiter {
            budget,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Timestamp, u32)>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_blocked(&self, key: &str, now: Timestamp) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|(start, n)| now.since(*start) < self.window && *n >= self.budget)
    }

    pub fn record_failure(&self, key: &str, now: Timestamp) {
        let mut windows = self.lock();
        if windows.len() > 100_000 {
            let window = self.window;
            windows.retain(|_, (start, _)| now.since(*start) < window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Authenticates mini program backends by app id and secret.
pub struct AppAuthenticator {
    store: Arc<dyn AuthStore>,
    limiter: FailedAttemptLimiter,
}

impl AppAuthenticator {
    pub fn new(store: Arc<dyn AuthStore>, limiter: FailedAttemptLimiter) -> Self {
        AppAuthenticator { store, limiter }
    }

    /// Checks `authorization: Basic ...` from `peer`; the secret is compared in constant time
    /// against its stored hash.
    ///
    /// A caller over its failure budget is refused outright, right secret or not. An app over
    /// its budget (failures from any callers) refuses further *wrong* secrets with
    /// REQUEST_TRAFFIC_EXCEED_LIMIT but still accepts the right one: app ids are public, so
    /// letting strangers' failures lock out the app's own backend would hand anyone a switch
    /// to turn a mini program's sign-in off.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        peer: &str,
        now: Timestamp,
    ) -> Result<AppRecord, AuthError> {
        let peer_key = format!("peer:{peer}");
        if self.limiter.is_blocked(&peer_key, now) {
            return Err(AuthError::RequestTrafficExceedLimit);
        }
        let (app_id, secret) = match parse_basic(header) {
            Ok(parts) => parts,
            Err(e) => {
                self.limiter.record_failure(&peer_key, now);
                return Err(e);
            }
        };
        let app_key = format!("app:{}", app_id.chars().take(128).collect::<String>());
        let app = if app_id.is_empty() || app_id.len() > 128 {
            None
        } else {
            match self.store.get_app(&app_id).await {
                Ok(app) => Some(app),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            }
        };
        match app {
            Some(app) if secrets::matches_hash(&secret, &app.secret_hash) => Ok(app),
            _ => {
                self.limiter.record_failure(&peer_key, now);
                if self.limiter.is_blocked(&app_key, now) {
                    return Err(AuthError::RequestTrafficExceedLimit);
                }
                self.limiter.record_failure(&app_key, now);
                Err(AuthError::InvalidAuthClient)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> CallerTokens {
        CallerTokens {
            admin: "a-token".into(),
            wallet: "w-token".into(),
            verifier: "v-token".into(),
        }
    }

    #[test]
    fn roles_are_told_apart() {
        let t = tokens();
        assert!(
            t.authorize(Some("Bearer a-token"), CallerRole::Admin)
                .is_ok()
        );
        assert!(matches!(
            t.authorize(Some("Bearer w-token"), CallerRole::Admin),
            Err(AuthError::CallerNotPermitted)
        ));
        assert!(matches!(
            t.authorize(Some("Bearer nope"), CallerRole::Admin),
            Err(AuthError::UnauthenticatedCaller)
        ));
        assert!(matches!(
            t.authorize(None, CallerRole::Wallet),
            Err(AuthError::UnauthenticatedCaller)
        ));
        assert!(matches!(
            t.authorize(Some("a-token"), CallerRole::Admin),
            Err(AuthError::UnauthenticatedCaller)
        ));
    }

    #[test]
    fn limiter_blocks_after_budget_until_window_ends() {
        let l = FailedAttemptLimiter::new(2, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_nanos(1);
        l.record_failure("k", t0);
        assert!(!l.is_blocked("k", t0));
        l.record_failure("k", t0);
        assert!(l.is_blocked("k", t0));
        assert!(!l.is_blocked("other", t0));
        assert!(!l.is_blocked("k", t0.saturating_add(Duration::from_secs(61))));
    }
}
