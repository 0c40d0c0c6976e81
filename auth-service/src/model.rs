//! auth-service's entities and value types, at the bottom: the store keeps them, the services
//! decide with them. Imports nothing of the services, gRPC or SQL (`tests::arrows_point_down` in lib.rs).

use miniprogram_token::{Scope, ScopeSet, Timestamp};

/// A SHA-256 digest of an opaque secret (app secret, auth code, refresh token, prompt id).
pub type SecretHash = [u8; 32];

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

    /// The first scope of `scopes` whose feature is not in this set.
    pub fn missing_for(self, scopes: ScopeSet) -> Option<Feature> {
        scopes
            .iter()
            .map(Feature::for_scope)
            .find(|f| !self.contains(*f))
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        iter.into_iter().fold(FeatureSet::EMPTY, FeatureSet::with)
    }
}

/// A registered mini program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub app_id: String,
    pub display_name: String,
    pub secret_hash: SecretHash,
    pub features: FeatureSet,
    pub created_at: Timestamp,
}

/// What one user has decided for one mini program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecord {
    pub user_id: String,
    pub app_id: String,
    pub granted: ScopeSet,
    pub denied: ScopeSet,
    pub updated_at: Timestamp,
}

/// A modal shown to a user, waiting for their answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRecord {
    pub prompt_hash: SecretHash,
    pub user_id: String,
    pub app_id: String,
    pub scopes: ScopeSet,
    pub previously_denied: bool,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
}

/// A single-use auth code; its `grant_id` names every token that descends from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCodeRecord {
    pub code_hash: SecretHash,
    pub grant_id: String,
    pub app_id: String,
    pub user_id: String,
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    /// Kept past expiry so a late replay can still be recognised and its tokens revoked.
    pub purge_at: Timestamp,
}

/// A refresh token; all rotations of one grant share `family_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub token_hash: SecretHash,
    pub family_id: String,
    pub app_id: String,
    pub user_id: String,
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A revocation rule before the store gives it its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRevocation {
    pub app_id: String,
    pub user_id: Option<String>,
    pub scopes: ScopeSet,
    pub token_id: Option<String>,
    pub grant_id: Option<String>,
    pub issued_before: Timestamp,
    pub expire_at: Timestamp,
}

/// A token key as stored: its material sealed under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTokenKey {
    pub key_id: String,
    pub sealed_key: String,
    pub created_at: Timestamp,
    pub retire_at: Timestamp,
    pub expire_at: Timestamp,
}
