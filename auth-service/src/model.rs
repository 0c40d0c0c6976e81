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
    /// The privacy declaration in force: its version (0: none), the scopes it covers and when
    /// it was set. Kept on the app row so the grant path reads nothing more.
    pub declaration_version: i64,
    pub declared_scopes: ScopeSet,
    pub declared_at: Timestamp,
}

/// What one user has decided for one mini program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecord {
    pub user_id: String,
    pub app_id: String,
    pub granted: ScopeSet,
    pub denied: ScopeSet,
    pub updated_at: Timestamp,
    /// The declaration version the standing consent was given under.
    pub declaration_version: i64,
    /// The grant id consent tokens carry while a consent scope stands; new after it ends.
    pub grant_ref: Option<String>,
    /// The app-scoped user id, once the app has been given it (by exchanging a code).
    pub open_user_id: Option<String>,
}

impl AuthorizationRecord {
    /// What stands under the app's declaration `version`: consent given under an older
    /// declaration has lapsed (the user is asked again), what needs none stays.
    pub fn granted_under(&self, version: i64) -> ScopeSet {
        if self.declaration_version < version {
            self.granted.difference(ScopeSet::NEEDING_CONSENT)
        } else {
            self.granted
        }
    }
}

/// What made a mini program ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The user tapped a `getAuthorize` button: the only thing that may open a modal.
    UserTap,
    /// The mini program asked on its own at launch: never a modal.
    AppLaunch,
}

/// Why a mini program wants a scope, as its declaration words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePurpose {
    pub scope: Scope,
    pub purpose: String,
}

/// What happened to a user's consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentEvent {
    Prompted,
    Granted,
    Denied,
    Withdrawn,
    VoidedByFeatureChange,
    VoidedByErasure,
    VoidedByNewDeclaration,
}

/// One immutable entry of a user's consent history (no profile fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// Given by the store; increasing.
    pub record_id: u64,
    pub user_id: String,
    pub app_id: String,
    pub event: ConsentEvent,
    pub scopes: ScopeSet,
    pub trigger: Option<Trigger>,
    pub purposes: Vec<ScopePurpose>,
    pub declaration_version: i64,
    pub recorded_at: Timestamp,
    pub expire_at: Timestamp,
}

/// Why one of an app's authorizations ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeReason {
    Withdrawn,
    FeatureDisabled,
    Erased,
    DeclarationReplaced,
}

/// Who an authorization change is about, in terms the app already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSubject {
    /// The app-scoped user id the app was given.
    AppUserId(String),
    /// The grant id in the consent tokens the app holds.
    Grant(String),
}

/// One entry of an app's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationChange {
    /// Given by the store, in commit order.
    pub sequence: u64,
    pub app_id: String,
    pub subject: ChangeSubject,
    pub scopes: ScopeSet,
    pub reason: ChangeReason,
    pub changed_at: Timestamp,
    pub expire_at: Timestamp,
}

/// A user's standing authorization for one mini program, for the settings page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationSummary {
    pub app_id: String,
    pub app_display_name: String,
    pub scopes: ScopeSet,
    pub granted_at: Timestamp,
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
    /// The declaration version whose purposes the modal showed.
    pub declaration_version: i64,
    /// What made the mini program ask (None for prompts written before it was kept).
    pub trigger: Option<Trigger>,
    /// The purposes the modal showed, as shown: the declaration may be replaced before the
    /// user answers.
    pub purposes: Vec<ScopePurpose>,
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
    /// Its place in the grant's rotation: 1 for the token a code exchange issued.
    pub generation: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `AuthorizationRecord::granted_under`: consent given under an older declaration lapses,
    /// auth_base (no consent) stays, and an equal or older app version changes nothing.
    #[test]
    fn consent_lapses_under_a_newer_declaration_only() {
        let granted = ScopeSet::of(&Scope::ALL);
        let a = AuthorizationRecord {
            user_id: "u1".into(),
            app_id: "a1".into(),
            granted,
            denied: ScopeSet::EMPTY,
            updated_at: Timestamp::from_unix_nanos(0),
            declaration_version: 2,
            grant_ref: None,
            open_user_id: None,
        };
        assert_eq!(a.granted_under(3), ScopeSet::of(&[Scope::AuthBase]));
        assert_eq!(a.granted_under(2), granted);
        assert_eq!(a.granted_under(1), granted);
    }
}
