//! A short-lived cache of public profiles in front of the store, for the hot
//! `GetOpenUserInfo` path. Writes through this process invalidate at once; other replicas'
//! writes show up within the TTL (one second by default; zero disables the cache).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::RwLock;
use std::time::Duration;

use miniprogram_token::Timestamp;

use crate::model::PublicProfile;

/// Entries kept at most, in two generations of half as many (bounds memory under a scan of
/// many users: about 300 bytes an entry).
const MAX_ENTRIES: usize = 50_000;

/// Generation counters, one per stripe of user ids (a fixed number, so memory stays bounded
/// however many users are written; users sharing a stripe only cost each other a cache fill).
const GENERATION_STRIPES: usize = 1024;

/// Public profiles by wallet user id, each with the time it was read, in two generations:
/// a new one starts when the current one is a TTL old or holds half of [`MAX_ENTRIES`], and
/// the one before it is dropped whole. An entry outlives its TTL by at most a TTL, so the
/// cache holds about what one TTL of reads brings, not whatever [`MAX_ENTRIES`] allows
/// (BENCHMARKS.md, "Memory: what userinfo-service holds under load").
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

type Entries = HashMap<String, (PublicProfile, Timestamp)>;

#[derive(Debug)]
struct CacheState {
    current: Entries,
    /// When `current` got its first entry.
    current_since: Timestamp,
    previous: Entries,
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
                current: HashMap::new(),
                current_since: Timestamp::from_unix_nanos(0),
                previous: HashMap::new(),
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
            .current
            .get(user_id)
            .or_else(|| state.previous.get(user_id))
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
        if state.current.is_empty() {
            state.current_since = now;
        } else if now.since(state.current_since) >= self.ttl
            || state.current.len() >= MAX_ENTRIES / 2
        {
            state.previous = std::mem::take(&mut state.current);
            state.current_since = now;
        }
        state.previous.remove(user_id);
        state.current.insert(user_id.to_owned(), (profile, now));
        true
    }

    /// Drops a user's entry and moves their generation on, so a read already under way
    /// doesn't cache the old row; called after every upsert and delete.
    pub fn forget(&self, user_id: &str) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(generation) = state.generations.get_mut(stripe(user_id)) {
            *generation = generation.wrapping_add(1);
        }
        state.current.remove(user_id);
        state.previous.remove(user_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.current.len() + state.previous.len()
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

    /// Guards the generation swap in `put_if_unchanged`: an entry a TTL old goes to the
    /// previous generation and is dropped with it at the next swap, so the cache keeps about
    /// a TTL of reads, not every user read since it started.
    #[test]
    fn entries_are_dropped_a_generation_after_their_ttl() {
        let ttl = Duration::from_secs(1);
        let cache = PublicProfileCache::new(ttl);
        let t0 = Timestamp::from_unix_nanos(1);
        let t1 = t0.saturating_add(ttl);
        let t2 = t1.saturating_add(ttl);
        assert!(put(&cache, "u1", profile("a"), t0));
        assert!(put(&cache, "u2", profile("b"), t1));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("u2", t1), Some(profile("b")));
        assert!(put(&cache, "u3", profile("c"), t2));
        assert_eq!(cache.len(), 2, "u1 outlived its generation");
        assert_eq!(cache.get("u3", t2), Some(profile("c")));
    }

    /// Guards the size bound in `put_if_unchanged`: however many users are read within one
    /// TTL, the cache holds at most `MAX_ENTRIES`, and the latest reads stay cached.
    #[test]
    fn a_scan_of_many_users_within_a_ttl_stays_bounded() {
        let cache = PublicProfileCache::new(Duration::from_secs(1));
        let t0 = Timestamp::from_unix_nanos(1);
        for i in 0..(2 * MAX_ENTRIES) {
            put(&cache, &format!("user-{i}"), profile("a"), t0);
        }
        assert!(cache.len() <= MAX_ENTRIES, "{} entries", cache.len());
        let last = format!("user-{}", 2 * MAX_ENTRIES - 1);
        assert_eq!(cache.get(&last, t0), Some(profile("a")));
    }
}
