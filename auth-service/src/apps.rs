//! The registry of mini programs: creation, credentials and activated features.

use std::sync::Arc;

use miniprogram_token::{Clock, ScopeSet, Timestamp};

use crate::credentials::VerifiedCredentials;
use crate::error::AuthError;
use crate::model::{AppRecord, ChangeReason, ConsentEvent, Feature, FeatureSet, ScopePurpose};
use crate::privacy::{PrivacyPolicy, check_declaration};
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, OpaqueSecret};
use crate::store::AuthStore;

/// Longest display name accepted, in bytes.
pub const MAX_DISPLAY_NAME_LEN: usize = 128;

/// A freshly registered app and its secret, which is shown this once and stored only hashed.
#[derive(Debug)]
pub struct CreatedApp {
    pub app: AppRecord,
    pub app_secret: OpaqueSecret,
}

/// Registers mini programs and switches their features on and off.
#[derive(Clone)]
pub struct AppRegistry {
    store: Arc<dyn AuthStore>,
    revocation_policy: RevocationPolicy,
    feed: RevocationFeed,
    privacy: PrivacyPolicy,
    verified: Option<Arc<VerifiedCredentials>>,
}

impl AppRegistry {
    pub fn new(
        store: Arc<dyn AuthStore>,
        revocation_policy: RevocationPolicy,
        feed: RevocationFeed,
    ) -> Self {
        AppRegistry {
            store,
            revocation_policy,
            feed,
            privacy: PrivacyPolicy::default(),
            verified: None,
        }
    }

    /// Ends the reuse of `verified` app credentials whenever an app changes here.
    pub fn with_verified_credentials(mut self, verified: Arc<VerifiedCredentials>) -> Self {
        self.verified = Some(verified);
        self
    }

    /// After an app change is written: credentials verified before it are checked again.
    fn changed(&self) {
        if let Some(verified) = &self.verified {
            verified.forget_all();
        }
    }

    /// Keeps the records a feature switch writes as `privacy` says.
    pub fn with_privacy(mut self, privacy: PrivacyPolicy) -> Self {
        self.privacy = privacy;
        self
    }

    pub async fn create(
        &self,
        display_name: &str,
        features: FeatureSet,
        now: Timestamp,
    ) -> Result<CreatedApp, AuthError> {
        let display_name = display_name.trim();
        if display_name.is_empty() || display_name.len() > MAX_DISPLAY_NAME_LEN {
            return Err(AuthError::InvalidArgument {
                field: "display_name",
                problem: "must be 1 to 128 bytes",
            });
        }
        if display_name.chars().any(char::is_control) {
            return Err(AuthError::InvalidArgument {
                field: "display_name",
                problem: "contains control characters",
            });
        }
        let app_secret = OpaqueSecret::generate()?;
        let app = AppRecord {
            app_id: secrets::new_app_id()?,
            display_name: display_name.to_owned(),
            secret_hash: app_secret.hash(),
            features,
            created_at: now,
            declaration_version: 0,
            declared_scopes: ScopeSet::EMPTY,
            declared_at: now,
        };
        self.store.repositories().apps().insert(&app).await?;
        Ok(CreatedApp { app, app_secret })
    }

    pub async fn get(&self, app_id: &str) -> Result<AppRecord, AuthError> {
        let app = self.store.repositories().apps().get(app_id).await?;
        app.ok_or(AuthError::AppNotFound)
    }

    pub async fn enable_feature(
        &self,
        app_id: &str,
        feature: Feature,
    ) -> Result<AppRecord, AuthError> {
        let on = FeatureSet::EMPTY.with(feature);
        let mut repos = self.store.repositories();
        let app = repos.apps().switch_features(app_id, on, FeatureSet::EMPTY);
        let app = app.await?.ok_or(AuthError::AppNotFound)?;
        self.changed();
        Ok(app)
    }

    /// Switches a feature off and voids every token and consent that relies on it: refresh
    /// tokens at once, access and consent tokens by a rule stamped once the app row is held (so
    /// a grant that read the features before the switch is stamped before the rule and caught
    /// by it), and every user's consent to its scope, recorded as voided and sent to the app's
    /// change feed. Switching it back on asks every user again.
    pub async fn disable_feature(
        &self,
        app_id: &str,
        feature: Feature,
        clock: &dyn Clock,
    ) -> Result<AppRecord, AuthError> {
        let off = FeatureSet::EMPTY.with(feature);
        let mut tx = self.store.begin_switching_features(app_id).await?;
        let switched = tx.apps().switch_features(app_id, FeatureSet::EMPTY, off);
        let app = switched.await?.ok_or(AuthError::AppNotFound)?;
        let now = clock.now();
        let scopes = ScopeSet::of(&[feature.scope()]);
        let (changes_expire, records_expire) = (
            self.privacy.change_expiry(now),
            self.privacy.record_expiry(now),
        );
        let reason = ChangeReason::FeatureDisabled;
        let changes =
            tx.privacy()
                .append_changes_for_scopes(app_id, scopes, reason, now, changes_expire);
        changes.await?;
        let event = ConsentEvent::VoidedByFeatureChange;
        let records =
            tx.privacy()
                .append_records_for_scopes(app_id, scopes, event, now, records_expire);
        records.await?;
        // The authorizations before the tokens, as a withdrawal holds them.
        tx.consents().withdraw_from_all(app_id, scopes).await?;
        tx.grants()
            .revoke_tokens_carrying(app_id, None, scopes, now)
            .await?;
        let rule = self.revocation_policy.rule(app_id, None, scopes, now);
        let appended = tx.revocations().append(&rule).await?;
        tx.commit().await?;
        self.changed();
        self.feed.appended(appended);
        self.feed.changes().appended(app_id);
        Ok(app)
    }

    /// Replaces the app's privacy declaration; `version` must rise, and the next request for
    /// a consent scope prompts again wherever consent was given under an older version.
    pub async fn set_privacy_declaration(
        &self,
        app_id: &str,
        version: i64,
        purposes: &[ScopePurpose],
        now: Timestamp,
    ) -> Result<(AppRecord, Vec<ScopePurpose>), AuthError> {
        check_declaration(version, purposes)?;
        let mut repos = self.store.repositories();
        let current = repos.apps().get(app_id).await?;
        let current = current.ok_or(AuthError::AppNotFound)?;
        let replaced = repos
            .privacy()
            .replace_declaration(app_id, version, purposes, now);
        match replaced.await? {
            Some(app) => {
                self.changed();
                Ok((app, repos.privacy().declaration(app_id).await?))
            }
            None => Err(AuthError::DeclarationVersionNotRaised(
                current.declaration_version,
            )),
        }
    }

    /// Issues a new secret; the old one stops working at once on this replica, and within
    /// [`crate::credentials::VERIFIED_CREDENTIAL_TTL`] on others.
    pub async fn rotate_secret(&self, app_id: &str) -> Result<OpaqueSecret, AuthError> {
        let secret = OpaqueSecret::generate()?;
        let mut repos = self.store.repositories();
        if !repos.apps().set_secret(app_id, &secret.hash()).await? {
            return Err(AuthError::AppNotFound);
        }
        self.changed();
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::probe_clock::ProbeClock;

    /// Guards `disable_feature` stamping its rule once the app row is held: a grant's read of
    /// the features in order (`AppRepo::get_in_order`), started when the clock is read, must
    /// wait for the switch to commit and then see the feature off. Were the clock read before
    /// the row is held, that read would finish at once and see the feature still on, and a
    /// token minted from it would be stamped after the rule and escape it.
    async fn a_feature_switch_is_stamped_while_grants_wait_for_it(
        engine: sql_backend::Engine,
        url: String,
    ) {
        let store = crate::store::open(&url).await.unwrap();
        let phone = FeatureSet::EMPTY.with(Feature::PhoneNumber);
        let app = crate::testing::app_record("mp1", phone);
        store.repositories().apps().insert(&app).await.unwrap();
        let probed = store.clone();
        let (clock, mut seen) = ProbeClock::new(Duration::from_millis(300), move || {
            let store = probed.clone();
            async move {
                let app = store.repositories().apps().get_in_order("mp1").await;
                app.unwrap().unwrap().features
            }
        });
        let policy = RevocationPolicy::new(Duration::from_secs(60), Duration::from_secs(60));
        let registry = AppRegistry::new(store, policy, RevocationFeed::default());
        let step = registry.disable_feature("mp1", Feature::PhoneNumber, &clock);
        let done = tokio::time::timeout(Duration::from_secs(10), step).await;
        done.expect("the switch finishes").unwrap();
        assert_eq!(
            clock.finished(),
            [false],
            "{engine:?}: the grant's read waited"
        );
        let features = seen.recv().await;
        assert_eq!(
            features,
            Some(FeatureSet::EMPTY),
            "{engine:?}: and saw the switch"
        );
    }
    sql_backend::on_each_engine!(a_feature_switch_is_stamped_while_grants_wait_for_it);
}
