//! Revocation rules and the indexed set a verifier holds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::num::NonZeroU64;

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

/// The four ways a rule can single out tokens, most selective first.
#[derive(Debug, Clone, Copy)]
enum Index {
    Token,
    Grant,
    User,
    App,
}

/// Hashes a `u64` that already is a keyed hash, as itself (no second SipHash per lookup).
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Index of a held rule in [`RevocationList::slots`].
type Slot = u32;
/// The end of a bucket's chain.
const NO_SLOT: Slot = Slot::MAX;

/// An id as the list holds it: a keyed 64-bit hash, never the id itself.
type IdHash = NonZeroU64;

/// A held rule: its ids as keyed hashes, about 56 bytes with no allocation of its own (the
/// rule with its strings took about 315 bytes a rule with its index; README, "Revocation
/// rules"). Two ids sharing a hash could only make the list void a token it should not, never
/// spare one; with a key random per list nobody can pick such ids, and by chance it is one in
/// 2^64 per comparison.
#[derive(Debug, Clone, Copy)]
struct HeldRule {
    app: IdHash,
    user: Option<IdHash>,
    token: Option<IdHash>,
    grant: Option<IdHash>,
    scopes: ScopeSet,
    issued_before: Timestamp,
    expire_at: Timestamp,
    /// The next rule in the same bucket, or [`NO_SLOT`].
    next: Slot,
}

/// A token's claims as the list compares them.
struct HashedClaims {
    app: IdHash,
    user: IdHash,
    token: IdHash,
    grant: IdHash,
    scopes: ScopeSet,
    issued_at: Timestamp,
}

impl HeldRule {
    fn matches(&self, c: &HashedClaims) -> bool {
        c.app == self.app
            && c.issued_at <= self.issued_before
            && self.user.is_none_or(|u| u == c.user)
            && (self.scopes.is_empty() || !self.scopes.intersection(c.scopes).is_empty())
            && self.token.is_none_or(|t| t == c.token)
            && self.grant.is_none_or(|g| g == c.grant)
    }

    fn same_target(&self, other: &HeldRule) -> bool {
        (self.app, self.user, self.scopes, self.token, self.grant)
            == (
                other.app,
                other.user,
                other.scopes,
                other.token,
                other.grant,
            )
    }

    /// The index the rule is filed under: the most selective thing it names, and its hash.
    fn index_key(&self) -> (Index, Option<IdHash>) {
        match (self.token, self.grant, self.user) {
            (Some(token), _, _) => (Index::Token, Some(token)),
            (None, Some(grant), _) => (Index::Grant, Some(grant)),
            (None, None, Some(user)) => (Index::User, Some(user)),
            (None, None, None) => (Index::App, None),
        }
    }
}

/// The revocation rules a verifier holds, one per target (rules that differ only in their
/// cut-off are merged into the later one), filed under the token id, grant id, user or app
/// they name. Applying a rule is a hash lookup; a check looks at four buckets (its token id,
/// grant id, user and app), each holding only rules of distinct targets under that key: one
/// for a token or a grant (each belongs to one user), at most one per scope set (8) for a user
/// or an app. Pruning pops expired rules off an expiry heap, touching nothing else.
#[derive(Debug, Default, Clone)]
pub struct RevocationList {
    /// Held rules; a freed slot is reused by the next new target.
    slots: Vec<Option<HeldRule>>,
    free: Vec<Slot>,
    /// The first slot of each bucket's chain, by a hash of (index, app, key); the ids are
    /// keyed hashes already, with a key random per list, so nobody can pick ids that share a
    /// bucket, and a collision would only put two keys' rules in one chain.
    buckets: HashMap<u64, Slot, BuildHasherDefault<PassThrough>>,
    hasher: RandomState,
    /// Each held slot exactly once, by the expiry it had when pushed (a merge may have moved
    /// it later; prune then pushes it again).
    expiry: BinaryHeap<Reverse<(Timestamp, Slot)>>,
    len: usize,
    last_sequence: u64,
    /// `issued_before` of the rule at `last_sequence`: with it, the log can tell whether it
    /// still holds the same rule there.
    last_issued_before: Option<Timestamp>,
}

impl RevocationList {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest sequence applied; a resumed stream asks for what comes after it.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Rules held: one per distinct target.
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

    fn id(&self, id: &str) -> IdHash {
        IdHash::new(self.hasher.hash_one(id)).unwrap_or(IdHash::MIN)
    }

    /// The bucket of (index, app, key): a mix of hashes that are keyed already.
    fn bucket_key(index: Index, app: IdHash, key: Option<IdHash>) -> u64 {
        let key = key.map_or(0, IdHash::get);
        (app.get() ^ key.rotate_left(29) ^ index as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31)
    }

    fn held(&self, slot: Slot) -> Option<&HeldRule> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The slots of a bucket's chain, from its first.
    fn chain(&self, first: Option<Slot>) -> impl Iterator<Item = (Slot, &HeldRule)> {
        let mut at = first.unwrap_or(NO_SLOT);
        std::iter::from_fn(move || {
            let held = self.held(at)?;
            let slot = at;
            at = held.next;
            Some((slot, held))
        })
    }

    /// Adds a rule. A sequence already seen is ignored, so replays are harmless; a rule for a
    /// target already held only moves that rule's cut-off and expiry later (never earlier),
    /// so repeating a revocation adds nothing.
    pub fn apply(&mut self, rule: RevocationRule) {
        if rule.sequence != 0 && rule.sequence <= self.last_sequence {
            return;
        }
        if rule.sequence > self.last_sequence {
            self.last_sequence = rule.sequence;
            self.last_issued_before = Some(rule.issued_before);
        }
        let mut held = HeldRule {
            app: self.id(&rule.app_id),
            user: rule.user_id.as_deref().map(|u| self.id(u)),
            token: rule.token_id.as_deref().map(|t| self.id(t)),
            grant: rule.grant_id.as_deref().map(|g| self.id(g)),
            scopes: rule.scopes,
            issued_before: rule.issued_before,
            expire_at: rule.expire_at,
            next: NO_SLOT,
        };
        let (index, key) = held.index_key();
        let bucket_key = Self::bucket_key(index, held.app, key);
        let first = self.buckets.get(&bucket_key).copied();
        let same = self.chain(first).find(|(_, h)| h.same_target(&held));
        if let Some((slot, _)) = same
            && let Some(same) = self.slots.get_mut(slot as usize).and_then(Option::as_mut)
        {
            same.issued_before = same.issued_before.max(held.issued_before);
            same.expire_at = same.expire_at.max(held.expire_at);
            return;
        }
        held.next = first.unwrap_or(NO_SLOT);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(held);
                slot
            }
            None => {
                // More than u32::MAX - 1 rules can't be held in memory anyway.
                let slot = Slot::try_from(self.slots.len()).unwrap_or(NO_SLOT - 1);
                self.slots.push(Some(held));
                slot
            }
        };
        self.buckets.insert(bucket_key, slot);
        self.expiry.push(Reverse((held.expire_at, slot)));
        self.len += 1;
    }

    pub fn is_revoked(&self, claims: &TokenClaims) -> bool {
        if self.len == 0 {
            return false;
        }
        let c = HashedClaims {
            app: self.id(&claims.app_id),
            user: self.id(&claims.user_id),
            token: self.id(&claims.token_id),
            grant: self.id(&claims.grant_id),
            scopes: claims.scopes,
            issued_at: claims.issued_at(),
        };
        [
            (Index::Token, Some(c.token)),
            (Index::Grant, Some(c.grant)),
            (Index::User, Some(c.user)),
            (Index::App, None),
        ]
        .into_iter()
        .any(|(index, key)| {
            let first = self.buckets.get(&Self::bucket_key(index, c.app, key));
            self.chain(first.copied()).any(|(_, rule)| rule.matches(&c))
        })
    }

    /// Drops rules whose every possible match has expired. Only expired rules are visited
    /// (each at most once more for every merge that moved its expiry), never the whole set.
    pub fn prune(&mut self, now: Timestamp) {
        while let Some(&Reverse((at, slot))) = self.expiry.peek() {
            if at > now {
                return;
            }
            self.expiry.pop();
            let Some(held) = self.held(slot).copied() else {
                continue;
            };
            if held.expire_at > now {
                self.expiry.push(Reverse((held.expire_at, slot)));
                continue;
            }
            self.unlink(slot, &held);
            self.slots[slot as usize] = None;
            self.free.push(slot);
            self.len -= 1;
        }
    }

    /// Takes `slot` (holding `held`) out of its bucket's chain.
    fn unlink(&mut self, slot: Slot, held: &HeldRule) {
        let (index, key) = held.index_key();
        let bucket_key = Self::bucket_key(index, held.app, key);
        let Some(&first) = self.buckets.get(&bucket_key) else {
            return;
        };
        if first == slot {
            if held.next == NO_SLOT {
                self.buckets.remove(&bucket_key);
            } else {
                self.buckets.insert(bucket_key, held.next);
            }
            return;
        }
        let before = self.chain(Some(first)).find(|(_, h)| h.next == slot);
        if let Some((before, _)) = before
            && let Some(before) = self.slots.get_mut(before as usize).and_then(Option::as_mut)
        {
            before.next = held.next;
        }
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

    fn token_rule(seq: u64, token_id: &str, before: i64) -> RevocationRule {
        RevocationRule {
            token_id: Some(token_id.into()),
            ..rule(seq, Some("u1"), &[], before)
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
    fn app_wide_family_and_token_rules_match() {
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
        list.apply(token_rule(3, "t-u2-50", 500));
        assert!(
            !list.is_revoked(&claims("u2", &[Scope::AuthBase], 50)),
            "a token rule names its user too"
        );
        list.apply(RevocationRule {
            user_id: Some("u2".into()),
            ..token_rule(4, "t-u2-50", 500)
        });
        assert!(list.is_revoked(&claims("u2", &[Scope::AuthBase], 50)));
        assert!(!list.is_revoked(&claims("u2", &[Scope::AuthBase], 51)));
    }

    #[test]
    fn replayed_sequence_is_ignored_and_prune_drops_expired() {
        let mut list = RevocationList::new();
        list.apply(rule(5, Some("u1"), &[], 100));
        list.apply(rule(5, Some("u1"), &[], 100));
        list.apply(rule(3, Some("u1"), &[], 100));
        assert_eq!((list.len(), list.last_sequence()), (1, 5));
        list.prune(Timestamp::from_unix_nanos(1099));
        assert_eq!(list.len(), 1);
        list.prune(Timestamp::from_unix_nanos(1100));
        assert!(list.is_empty());
        assert!(!list.is_revoked(&claims("u1", &[], 50)));
        assert_eq!(list.last_sequence(), 5);
    }

    /// Guards the merge in [`RevocationList::apply`]: the same token revoked again and again
    /// (each time with a new sequence and a later cut-off) is held once, with the latest
    /// cut-off and expiry, instead of once per revocation.
    #[test]
    fn revoking_the_same_target_again_holds_one_rule_with_the_latest_cut_off() {
        let mut list = RevocationList::new();
        for i in 0..3_000 {
            list.apply(token_rule(2 * i + 1, "t1", 100 + i as i64));
            list.apply(rule(
                2 * i + 2,
                Some("u1"),
                &[Scope::UserInfo],
                100 + i as i64,
            ));
        }
        assert_eq!(list.len(), 2);
        assert_eq!(list.last_sequence(), 6_000);
        let mut late = claims("u1", &[Scope::AuthBase], 3_000);
        late.token_id = "t1".into();
        assert!(list.is_revoked(&late), "the latest cut-off is kept");
        list.prune(Timestamp::from_unix_nanos(1100 + 2_998));
        assert_eq!(list.len(), 2, "and the latest expiry");
        list.prune(Timestamp::from_unix_nanos(1100 + 2_999));
        assert!(list.is_empty());
    }

    #[test]
    fn a_merge_never_moves_a_cut_off_or_an_expiry_earlier() {
        let mut list = RevocationList::new();
        list.apply(token_rule(1, "t1", 500));
        list.apply(token_rule(2, "t1", 100));
        let mut c = claims("u1", &[], 400);
        c.token_id = "t1".into();
        assert!(list.is_revoked(&c));
        list.prune(Timestamp::from_unix_nanos(1499));
        assert!(list.is_revoked(&c));
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

    /// A freed slot is reused, and a reused slot's old heap entry can't drop its new rule.
    #[test]
    fn slots_freed_by_prune_are_reused_safely() {
        let mut list = RevocationList::new();
        list.apply(token_rule(1, "t1", 0));
        list.prune(Timestamp::from_unix_nanos(1000));
        list.apply(token_rule(2, "t2", 5_000));
        assert_eq!(list.slots.len(), 1, "the freed slot was reused");
        list.prune(Timestamp::from_unix_nanos(1000));
        let mut c = claims("u1", &[], 10);
        c.token_id = "t2".into();
        assert!(list.is_revoked(&c));
    }

    /// A rule as the proptests draw it: (user, scopes, token, grant, cut-off, lifetime).
    type Drawn = (u8, u8, u8, u8, i64, i64);

    fn drawn_rule(i: usize, (u, s, t, g, before, life): Drawn) -> RevocationRule {
        let pick = |n: u8, names: [&str; 2]| names.get(n as usize).map(|s| s.to_string());
        RevocationRule {
            sequence: i as u64 + 1,
            app_id: "app".into(),
            user_id: pick(u, ["u0", "u1"]),
            scopes: ScopeSet::from_bits(s),
            token_id: pick(t, ["t0", "t1"]),
            grant_id: pick(g, ["g0", "g1"]),
            issued_before: Timestamp::from_unix_nanos(before),
            expire_at: Timestamp::from_unix_nanos(before + life),
        }
    }

    fn drawn_claims((u, s, t, g, at): (u8, u8, u8, u8, i64)) -> TokenClaims {
        TokenClaims {
            app_id: "app".into(),
            user_id: ["u0", "u1", "u2"][u as usize].into(),
            scopes: ScopeSet::from_bits(s),
            issued_at: at,
            expires_at: at + 1,
            token_id: ["t0", "t1", "t2"][t as usize].into(),
            grant_id: ["g0", "g1", "g2"][g as usize].into(),
        }
    }

    fn drawn() -> impl Strategy<Value = Drawn> {
        (0u8..3, 0u8..8, 0u8..3, 0u8..3, 0i64..100, 0i64..100)
    }

    fn token() -> impl Strategy<Value = (u8, u8, u8, u8, i64)> {
        (0u8..3, 1u8..8, 0u8..3, 0u8..3, 0i64..100)
    }

    proptest! {
        #[test]
        fn indexed_lookup_agrees_with_scanning_every_rule(
            rules in proptest::collection::vec(drawn(), 0..40),
            token in token(),
        ) {
            let all: Vec<_> = rules.into_iter().enumerate().map(|(i, r)| drawn_rule(i, r)).collect();
            let mut list = RevocationList::new();
            for r in &all {
                list.apply(r.clone());
            }
            let c = drawn_claims(token);
            prop_assert_eq!(list.is_revoked(&c), all.iter().any(|r| r.matches(&c)));
        }

        /// After a prune, a target is held (with its latest cut-off) while its latest expiry
        /// is in the future, as a scan of the merged rules says.
        #[test]
        fn pruning_agrees_with_scanning_the_merged_rules(
            rules in proptest::collection::vec(drawn(), 0..40),
            token in token(),
            now in 0i64..200,
        ) {
            let mut list = RevocationList::new();
            let mut merged: Vec<RevocationRule> = Vec::new();
            for (i, r) in rules.into_iter().enumerate() {
                let r = drawn_rule(i, r);
                list.apply(r.clone());
                let same = |m: &&mut RevocationRule| {
                    (&m.app_id, &m.user_id, m.scopes, &m.token_id, &m.grant_id)
                        == (&r.app_id, &r.user_id, r.scopes, &r.token_id, &r.grant_id)
                };
                match merged.iter_mut().find(same) {
                    Some(m) => {
                        m.issued_before = m.issued_before.max(r.issued_before);
                        m.expire_at = m.expire_at.max(r.expire_at);
                    }
                    None => merged.push(r),
                }
            }
            let now = Timestamp::from_unix_nanos(now);
            list.prune(now);
            merged.retain(|m| m.expire_at > now);
            let c = drawn_claims(token);
            prop_assert_eq!(list.len(), merged.len());
            prop_assert_eq!(list.is_revoked(&c), merged.iter().any(|r| r.matches(&c)));
        }
    }

    /// `cargo test --release -p miniprogram-token -- --ignored --nocapture`: applies, checks
    /// and prunes a million rules and prints how long each step took (README, "Revocation
    /// rules"). A benchmark, so it asserts results, never times.
    #[test]
    #[ignore = "benchmark: run in release with --ignored --nocapture"]
    fn bench_a_million_rules() {
        const N: usize = 1_000_000;
        let rule_for = |i: usize, sequence: u64| {
            let mut r = RevocationRule {
                sequence,
                app_id: format!("app-{}", i % 1_000),
                user_id: Some(format!("user-{}", i % 100_000)),
                scopes: ScopeSet::EMPTY,
                token_id: None,
                grant_id: None,
                issued_before: Timestamp::from_unix_nanos(1_000 + (i % 1_000) as i64),
                expire_at: Timestamp::from_unix_nanos(1_000_000 + i as i64),
            };
            match i % 10 {
                0 => r.grant_id = Some(format!("grant-{i}")),
                1 => r.scopes = ScopeSet::from_bits((i % 7 + 1) as u8),
                _ => r.token_id = Some(format!("token-{i}")),
            }
            r
        };
        let claims_for = |i: usize| TokenClaims {
            app_id: format!("app-{}", i % 1_000),
            user_id: format!("user-{}", i % 100_000),
            scopes: ScopeSet::of(&[Scope::AuthBase]),
            issued_at: 500,
            expires_at: 5_000,
            token_id: format!("token-{i}"),
            grant_id: format!("grant-{i}"),
        };
        let mut list = RevocationList::new();
        let rules: Vec<_> = (0..N).map(|i| rule_for(i, i as u64 + 1)).collect();
        let started = std::time::Instant::now();
        for r in rules {
            list.apply(r);
        }
        let applied = started.elapsed();
        let distinct = list.len();

        let again: Vec<_> = (0..N).map(|i| rule_for(i, (N + i) as u64 + 1)).collect();
        let started = std::time::Instant::now();
        for r in again {
            list.apply(r);
        }
        let reapplied = started.elapsed();
        assert_eq!(list.len(), distinct, "a repeated target adds nothing");

        let probes: Vec<_> = (0..N).map(|i| claims_for(i * 2)).collect();
        let started = std::time::Instant::now();
        let revoked = probes.iter().filter(|c| list.is_revoked(c)).count();
        let checked = started.elapsed();
        assert!(revoked > 0 && revoked < N, "{revoked} of {N} revoked");

        let started = std::time::Instant::now();
        list.prune(Timestamp::from_unix_nanos(1_000_000 + N as i64 / 2));
        let half_pruned = started.elapsed();
        let after_half = list.len();
        assert!(after_half > 0 && after_half < distinct);
        let started = std::time::Instant::now();
        list.prune(Timestamp::from_unix_nanos(1_000_000 + N as i64 / 2));
        let nothing_pruned = started.elapsed();
        assert_eq!(list.len(), after_half);
        list.prune(Timestamp::from_unix_nanos(i64::MAX));
        assert!(list.is_empty());
        println!(
            "{N} rules ({distinct} targets): apply {applied:?}, apply again {reapplied:?}, \
             {N} checks {checked:?} ({revoked} revoked), prune half {half_pruned:?}, \
             prune with nothing expired {nothing_pruned:?}"
        );
    }
}
