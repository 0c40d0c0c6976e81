use serde::{Deserialize, Serialize};

/// What a mini program may be given, as the platform names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `userInfo`: the public profile (avatar, nickname, gender, region), behind a modal.
    UserInfo,
    /// `auth_base`: the app-scoped user id, silently.
    AuthBase,
    /// `phoneNumber`: the phone number, behind its own modal.
    PhoneNumber,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::UserInfo, Scope::AuthBase, Scope::PhoneNumber];

    const fn bit(self) -> u8 {
        match self {
            Scope::UserInfo => 1,
            Scope::AuthBase => 2,
            Scope::PhoneNumber => 4,
        }
    }

    /// The JSAPI name of the scope.
    pub const fn jsapi_name(self) -> &'static str {
        match self {
            Scope::UserInfo => "userInfo",
            Scope::AuthBase => "auth_base",
            Scope::PhoneNumber => "phoneNumber",
        }
    }

    /// Whether granting this scope needs the user to answer a modal.
    pub const fn needs_consent(self) -> bool {
        !matches!(self, Scope::AuthBase)
    }
}

/// A set of scopes, stored as a small bit set (in tokens and in database rows alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(u8);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);

    /// Every scope a modal asks for ([`Scope::needs_consent`]).
    pub const NEEDING_CONSENT: ScopeSet = {
        let mut bits = 0;
        let mut i = 0;
        while i < Scope::ALL.len() {
            if Scope::ALL[i].needs_consent() {
                bits |= Scope::ALL[i].bit();
            }
            i += 1;
        }
        ScopeSet(bits)
    };

    pub fn of(scopes: &[Scope]) -> Self {
        scopes.iter().copied().collect()
    }

    /// Rebuilds a set from its stored bits, dropping bits no scope uses.
    pub const fn from_bits(bits: u8) -> Self {
        ScopeSet(bits & 0b111)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    pub const fn intersection(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    pub const fn difference(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }

    pub const fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn with(self, scope: Scope) -> ScopeSet {
        ScopeSet(self.0 | scope.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(ScopeSet::EMPTY, ScopeSet::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ScopeSet::NEEDING_CONSENT` is built from `Scope::needs_consent`: the two modal scopes.
    #[test]
    fn the_scopes_needing_consent_are_those_behind_a_modal() {
        let modal = ScopeSet::of(&[Scope::UserInfo, Scope::PhoneNumber]);
        assert_eq!(ScopeSet::NEEDING_CONSENT, modal);
    }
}
