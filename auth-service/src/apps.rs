//! The registry of mini programs: creation, credentials and activated features.

use std::sync::Arc;

use miniprogram_token::{Scope, ScopeSet, Timestamp};

use crate::clock::Clock;
use crate::error::AuthError;
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, OpaqueSecret};
use crate::store::{AppRecord, AuthStore, NewRevocation, StoreError};

/// A capability a mini program must have activated on the platform before it may ask for the
/// matching scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// "Obtain basic member information": `userInfo`.
    BasicUserInfo,
    /// The phone number: `phoneNumber`.
    PhoneNumber,
    /// Auth codes and the app-scoped user id: `auth_base`.
    UserAuthorization,
}

impl Feature {
    pub const ALL: [Feature; 3] = [
        Feature::BasicUserInfo,
        Feature::PhoneNumber,
        Feature::UserAuthorization,
    ];

    const fn bit(self) -> u8 {
        match self {
            Feature::BasicUserInfo => 1,
            Feature::PhoneNumber => 2,
            Feature::UserAuthorization => 4,
        }
    }

    /// The scope this feature unlocks.
    pub const fn scope(self) -> Scope {
        match self {
            Feature::BasicUserInfo => Scope::UserInfo,
            Feature::PhoneNumber => Scope::PhoneNumber,
            Feature::UserAuthorization => Scope::AuthBase,
        }
    }

    /// The feature a scope needs.
    pub const fn for_scope(scope: Scope) -> Feature {
        match scope {
            Scope::UserInfo => Feature::BasicUserInfo,
            Scope::PhoneNumber => Feature::PhoneNumber,
            Scope::AuthBase => Feature::UserAuthorization,
        }
    }
}

/// The features a mini program has activated, stored as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeatureSet(u8);

impl FeatureSet {
    pub const EMPTY: FeatureSet = FeatureSet(0);

    pub const fn from_bits(bits: u8) -> Self {
        FeatureSet(bits & 0b111)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, f: Feature) -> bool {
        self.0 & f.bit() != 0
    }

    pub const fn with(self, f: Feature) -> Self {
        FeatureSet(self.0 | f.bit())
    }

    pub const fn without(self, f: Feature) -> Self {
        FeatureSet(self.0 & !f.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// The scopes these features unlock.
    pub fn scopes(self) -> ScopeSet {
        self.iter().map(Feature::scope).collect()
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        iter.into_iter().fold(FeatureSet::EMPTY, FeatureSet::with)
    }
}

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
        }
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
        let app_secret = OpaqueSecret::generate()?;
        let app = AppRecord {
            app_id: secrets::new_app_id()?,
            display_name: display_name.to_owned(),
            secret_hash: app_secret.hash(),
            features,
            created_at: now,
        };
        self.store.insert_app(&app).await?;
        Ok(CreatedApp { app, app_secret })
    }

    pub async fn get(&self, app_id: &str) -> Result<AppRecord, AuthError> {
        self.store.get_app(app_id).await.map_err(app_not_found)
    }

    pub async fn enable_feature(
        &self,
        app_id: &str,
        feature: Feature,
        clock: &Clock,
    ) -> Result<AppRecord, AuthError> {
        self.store
            .set_features(
                app_id,
                FeatureSet::EMPTY.with(feature),
                FeatureSet::EMPTY,
                None,
                clock,
            )
            .await
            .map_err(app_not_found)
    }

    /// Switches a feature off and voids every token that relies on it.
    pub async fn disable_feature(
        &self,
        app_id: &str,
        feature: Feature,
        clock: &Clock,
    ) -> Result<AppRecord, AuthError> {
        let now = clock.now();
        let revocation = NewRevocation {
            app_id: app_id.to_owned(),
            user_id: None,
            scopes: ScopeSet::of(&[feature.scope()]),
            token_id: None,
            grant_id: None,
            issued_before: now,
            expire_at: self.revocation_policy.rule_expiry(now),
        };
        let app = self
            .store
            .set_features(
                app_id,
                FeatureSet::EMPTY,
                FeatureSet::EMPTY.with(feature),
                Some(&revocation),
                clock,
            )
            .await
            .map_err(app_not_found)?;
        self.feed.notify();
        Ok(app)
    }

    /// Issues a new secret; the old one stops working at once.
    pub async fn rotate_secret(&self, app_id: &str) -> Result<OpaqueSecret, AuthError> {
        let secret = OpaqueSecret::generate()?;
        self.store
            .set_app_secret(app_id, &secret.hash())
            .await
            .map_err(app_not_found)?;
        Ok(secret)
    }
}

fn app_not_found(e: StoreError) -> AuthError {
    match e {
        StoreError::NotFound => AuthError::AppNotFound,
        other => AuthError::Store(other),
    }
}
