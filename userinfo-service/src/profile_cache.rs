//! A short-lived cache of public profiles in front of the store, for the hot
//! `GetOpenUserInfo` path. Writes through this process invalidate at once; other replicas'
//! writes show up within the TTL (one second by default; zero disables the cache).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::RwLock;
use std::time::Duration;

use miniprogram_token::Timestamp;

use crate::model::PublicProfile;

/// Entries kept before the cache starts over (bounds memory under a scan of many users).
const MAX_ENTRIES: usize = 100_000;

/// Generation counters, one per stripe of user ids (a fixed number, so memory stays bounded
/// however many users are written; users sharing a stripe only cost each other a cache fill).
const GENERATION_STRIPES: usize = 1024;

/// Public profiles by wallet user id, each with the time it was read.
///
/// A read that missed must not cache a row that a concurrent write or delete has already
/// replaced: [`forget`](Self::forget) bumps the user's generation, and a reader takes the
/// generation before its store read and caches with [`put_if_unchanged`](Self::put_if_unchanged),
/// which drops the row if the generation moved.
#[derive(Debug)]
pub struct PublicProfileCache {
    ttl: Duration,
    state: RwLock<CacheState>,
}

#[derive(Debug)]
struct CacheState {
    entries: HashMap<String, (PublicProfile, Timestamp)>,
    generations: Vec<u64>,
}

fn stripe(user_id: &str) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    user_id.hash(&mut hasher);
    // The modulo keeps the value below GENERATION_STRIPES, which fits in usize.
    (hasher.finish() % GENERATION_STRIPES as u64) as usize
}

impl PublicProfileCache {
    /// A cache keeping reads for `ttl` (zero disables it).
    pub fn new(ttl: Duration) -> Self {
        PublicProfileCache {
            ttl,
            state: RwLock::new(CacheState {
                entries: HashMap::new(),
                generations: vec![0; GENERATION_STRIPES],
            }),
        }
    }

    /// The cached profile, if read less than a TTL ago.
    pub fn get(&self, user_id: &str, now: Timestamp) -> Option<PublicProfile> {
        if self.ttl.is_zero() {
            return None;
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .entries
            .get(user_id)
            .filter(|(_, read_at)| now.since(*read_at) < self.ttl)
            .map(|(profile, _)| profile.clone())
    }

    /// The user's write generation; take it before reading the store, for
    /// [`put_if_unchanged`](Self::put_if_unchanged).
    pub fn generation(&self, user_id: &str) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generations
            .get(stripe(user_id))
            .copied()
            .unwrap_or_default()
    }

    /// Caches `profile` (read at `now`) unless the user was forgotten since `generation` was
    /// taken; `false` if it was not cached.
    pub fn put_if_unchanged(
        &self,
        user_id: &str,
        profile: PublicProfile,
        generation: u64,
        now: Timestamp,
    ) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.generations.get(stripe(user_id)).copied() != Some(generation) {
            return false;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(user_id.to_owned(), (profile, now));
        true
    }

    /// Drops a user's entry and moves their generation on, so a read already under way
    /// doesn't cache the old row; called after every upsert and delete.
    pub fn forget(&self, user_id: &str) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(generation) = state.generations.get_mut(stripe(user_id)) {
            *generation = generation.wrapping_add(1);
        }
        state.entries.remove(user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(nick: &str) -> PublicProfile {
        PublicProfile {
            nick_name: nick.into(),
            ..PublicProfile::default()
        }
    }

    fn put(cache: &PublicProfileCache, user: &str, p: PublicProfile, now: Timestamp) -> bool {
        cache.put_if_unchanged(user, p, cache.generation(user), now)
    }

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let cache = PublicProfileCache::new(Duration::from_secs(1));
        let t0 = Timestamp::from_unix_nanos(1);
        assert!(put(&cache, "u1", profile("a"), t0));
        assert_eq!(cache.get("u1", t0), Some(profile("a")));
        assert_eq!(
            cache.get("u1", t0.saturating_add(Duration::from_secs(1))),
            None
        );
        cache.forget("u1");
        assert_eq!(cache.get("u1", t0), None);
    }

    #[test]
    fn a_zero_ttl_disables_the_cache() {
        let cache = PublicProfileCache::new(Duration::ZERO);
        let t0 = Timestamp::from_unix_nanos(1);
        assert!(!put(&cache, "u1", profile("a"), t0));
        assert_eq!(cache.get("u1", t0), None);
    }

    #[test]
    fn a_read_that_raced_a_delete_is_not_cached() {
        let cache = PublicProfileCache::new(Duration::from_secs(1));
        let t0 = Timestamp::from_unix_nanos(1);
        // A reader takes the generation and reads the row; a delete lands and forgets the
        // user before the reader caches what it read.
        let before_read = cache.generation("u1");
        cache.forget("u1");
        assert!(!cache.put_if_unchanged("u1", profile("deleted"), before_read, t0));
        assert_eq!(cache.get("u1", t0), None);
        // A read that began after the delete is cached as usual.
        assert!(put(&cache, "u1", profile("fresh"), t0));
        assert_eq!(cache.get("u1", t0), Some(profile("fresh")));
    }

    #[test]
    fn forgetting_one_user_does_not_stop_caching_most_others() {
        let cache = PublicProfileCache::new(Duration::from_secs(1));
        let t0 = Timestamp::from_unix_nanos(1);
        let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
        let generations: Vec<u64> = users.iter().map(|u| cache.generation(u)).collect();
        cache.forget("u1");
        let cached = users
            .iter()
            .zip(generations)
            .filter(|(u, g)| cache.put_if_unchanged(u, profile("a"), *g, t0))
            .count();
        assert!(cached >= 99, "only {cached} of 100 cached");
    }
}
