use std::collections::HashMap;

use crate::{ScopeSet, Timestamp, TokenClaims};

/// "Tokens of `app_id` (for `user_id`, carrying any of `scopes`, with id or grant `token_id` /
/// `grant_id`) issued at or before `issued_before` are void." A `None` or empty field matches
/// anything. Kept until `expire_at`, when every token it could match has expired on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRule {
    /// Position in auth-service's revocation log; verifiers resume from the last one seen.
    pub sequence: u64,
    pub app_id: String,
    pub user_id: Option<String>,
    pub scopes: ScopeSet,
    pub token_id: Option<String>,
    pub grant_id: Option<String>,
    pub issued_before: Timestamp,
    pub expire_at: Timestamp,
}

impl RevocationRule {
    pub fn matches(&self, claims: &TokenClaims) -> bool {
        claims.app_id == self.app_id
            && claims.issued_at() <= self.issued_before
            && self.user_id.as_deref().is_none_or(|u| u == claims.user_id)
            && (self.scopes.is_empty() || !self.scopes.intersection(claims.scopes).is_empty())
            && self
                .token_id
                .as_deref()
                .is_none_or(|t| t == claims.token_id)
            && self
                .grant_id
                .as_deref()
                .is_none_or(|g| g == claims.grant_id)
    }
}

#[derive(Debug, Default, Clone)]
struct AppRules {
    any_user: Vec<RevocationRule>,
    by_user: HashMap<String, Vec<RevocationRule>>,
}

/// The revocation rules a verifier holds, indexed by app and user so a check only looks at
/// the rules that could match.
#[derive(Debug, Default, Clone)]
pub struct RevocationList {
    apps: HashMap<String, AppRules>,
    last_sequence: u64,
    /// `issued_before` of the rule at `last_sequence`: with it, the log can tell whether it
    /// still holds the same rule there.
    last_issued_before: Option<Timestamp>,
    len: usize,
}

impl RevocationList {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest sequence applied; a resumed stream asks for what comes after it.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where a resumed stream should continue: after this sequence, whose rule was issued
    /// before this time (`None` before the first rule).
    pub fn resume_point(&self) -> (u64, Option<Timestamp>) {
        (self.last_sequence, self.last_issued_before)
    }

    /// The log went back below what this list has seen (auth-service's database was restored
    /// from a backup): sequences after `sequence` are accepted again. The rules held stay
    /// until they expire; they can only over-revoke.
    pub fn rewind_to(&mut self, sequence: u64) {
        if sequence < self.last_sequence {
            self.last_sequence = sequence;
            self.last_issued_before = None;
        }
    }

    /// Adds a rule; a rule already seen (by sequence, or the very same rule again after a
    /// rewind) is ignored, so replays are harmless.
    pub fn apply(&mut self, rule: RevocationRule) {
        if rule.sequence != 0 && rule.sequence <= self.last_sequence {
            return;
        }
        if rule.sequence > self.last_sequence {
            self.last_sequence = rule.sequence;
            self.last_issued_before = Some(rule.issued_before);
        }
        let app = self.apps.entry(rule.app_id.clone()).or_default();
        let rules = match rule.user_id.clone() {
            Some(user) => app.by_user.entry(user).or_default(),
            None => &mut app.any_user,
        };
        if !rules.contains(&rule) {
            rules.push(rule);
            self.len += 1;
        }
    }

    pub fn is_revoked(&self, claims: &TokenClaims) -> bool {
        let Some(app) = self.apps.get(&claims.app_id) else {
            return false;
        };
        app.any_user.iter().any(|r| r.matches(claims))
            || app
                .by_user
                .get(&claims.user_id)
                .is_some_and(|rules| rules.iter().any(|r| r.matches(claims)))
    }

    /// Drops rules whose every possible match has expired.
    pub fn prune(&mut self, now: Timestamp) {
        let mut len = 0;
        self.apps.retain(|_, app| {
            app.any_user.retain(|r| r.expire_at > now);
            app.by_user.retain(|_, rules| {
                rules.retain(|r| r.expire_at > now);
                !rules.is_empty()
            });
            len += app.any_user.len() + app.by_user.values().map(Vec::len).sum::<usize>();
            !(app.any_user.is_empty() && app.by_user.is_empty())
        });
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Scope;

    fn claims(user: &str, scopes: &[Scope], issued_at: i64) -> TokenClaims {
        TokenClaims {
            app_id: "app".into(),
            user_id: user.into(),
            scopes: ScopeSet::of(scopes),
            issued_at,
            expires_at: issued_at + 1000,
            token_id: format!("t-{user}-{issued_at}"),
            grant_id: "g1".into(),
        }
    }

    fn rule(seq: u64, user: Option<&str>, scopes: &[Scope], before: i64) -> RevocationRule {
        RevocationRule {
            sequence: seq,
            app_id: "app".into(),
            user_id: user.map(Into::into),
            scopes: ScopeSet::of(scopes),
            token_id: None,
            grant_id: None,
            issued_before: Timestamp::from_unix_nanos(before),
            expire_at: Timestamp::from_unix_nanos(before + 1000),
        }
    }

    #[test]
    fn rule_voids_earlier_tokens_but_not_later_ones() {
        let mut list = RevocationList::new();
        list.apply(rule(1, Some("u1"), &[Scope::UserInfo], 100));
        assert!(list.is_revoked(&claims("u1", &[Scope::UserInfo], 100)));
        assert!(!list.is_revoked(&claims("u1", &[Scope::UserInfo], 101)));
        assert!(!list.is_revoked(&claims("u2", &[Scope::UserInfo], 50)));
        assert!(!list.is_revoked(&claims("u1", &[Scope::PhoneNumber], 50)));
    }

    #[test]
    fn app_wide_and_family_rules_match() {
        let mut list = RevocationList::new();
        list.apply(rule(1, None, &[Scope::PhoneNumber], 100));
        assert!(list.is_revoked(&claims(
            "anyone",
            &[Scope::AuthBase, Scope::PhoneNumber],
            10
        )));
        let mut family = rule(2, Some("u1"), &[], 500);
        family.grant_id = Some("g1".into());
        list.apply(family);
        assert!(list.is_revoked(&claims("u1", &[Scope::AuthBase], 400)));
        let mut other_family = claims("u1", &[Scope::AuthBase], 400);
        other_family.grant_id = "g2".into();
        assert!(!list.is_revoked(&other_family));
    }

    #[test]
    fn replayed_sequence_is_ignored_and_prune_drops_expired() {
        let mut list = RevocationList::new();
        list.apply(rule(5, Some("u1"), &[], 100));
        list.apply(rule(5, Some("u1"), &[], 100));
        list.apply(rule(3, Some("u1"), &[], 100));
        assert_eq!((list.len(), list.last_sequence()), (1, 5));
        list.prune(Timestamp::from_unix_nanos(1100));
        assert!(list.is_empty());
        assert_eq!(list.last_sequence(), 5);
    }

    #[test]
    fn after_a_rewind_a_restored_log_sequences_are_applied_again() {
        let mut list = RevocationList::new();
        list.apply(rule(5, Some("u1"), &[], 100));
        assert_eq!(
            list.resume_point(),
            (5, Some(Timestamp::from_unix_nanos(100)))
        );
        list.rewind_to(7);
        assert_eq!(
            list.last_sequence(),
            5,
            "a point above what we hold changes nothing"
        );
        list.rewind_to(2);
        assert_eq!(list.resume_point(), (2, None));
        list.apply(rule(3, Some("u2"), &[], 100));
        assert_eq!(
            (list.len(), list.last_sequence()),
            (2, 3),
            "the restored log's rule 3 is new, and rule 5 is kept"
        );
        list.rewind_to(0);
        list.apply(rule(3, Some("u2"), &[], 100));
        assert_eq!(list.len(), 2, "the same rule streamed again is held once");
    }

    proptest! {
        #[test]
        fn indexed_lookup_agrees_with_scanning_every_rule(
            rules in proptest::collection::vec((0u8..3, 0u8..8, 0i64..100), 0..20),
            token in (0u8..3, 1u8..8, 0i64..100),
        ) {
            let users = ["u0", "u1", "u2"];
            let mut list = RevocationList::new();
            let mut all = Vec::new();
            for (i, (u, s, before)) in rules.into_iter().enumerate() {
                let mut r = rule(i as u64 + 1, None, &[], before);
                r.user_id = (u < 2).then(|| users[u as usize].to_string());
                r.scopes = ScopeSet::from_bits(s);
                all.push(r.clone());
                list.apply(r);
            }
            let mut c = claims(users[token.0 as usize], &[], token.2);
            c.scopes = ScopeSet::from_bits(token.1);
            prop_assert_eq!(list.is_revoked(&c), all.iter().any(|r| r.matches(&c)));
        }
    }
}
