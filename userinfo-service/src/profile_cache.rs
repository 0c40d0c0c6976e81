//! A short-lived cache of public profiles in front of the store, for the hot
//! `GetOpenUserInfo` path. Writes through this process invalidate at once; other replicas'
//! writes show up within the TTL (one second by default; zero disables the cache).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use miniprogram_token::Timestamp;

use crate::profiles::PublicProfile;

/// Entries kept before the cache starts over (bounds memory under a scan of many users).
const MAX_ENTRIES: usize = 100_000;

/// Public profiles by wallet user id, each with the time it was read.
#[derive(Debug)]
pub struct PublicProfileCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (PublicProfile, Timestamp)>>,
}

impl PublicProfileCache {
    pub fn new(ttl: Duration) -> Self {
        PublicProfileCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The cached profile, if read less than a TTL ago.
    pub fn get(&self, user_id: &str, now: Timestamp) -> Option<PublicProfile> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(user_id)
            .filter(|(_, read_at)| now.since(*read_at) < self.ttl)
            .map(|(profile, _)| profile.clone())
    }

    pub fn put(&self, user_id: &str, profile: PublicProfile, now: Timestamp) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(user_id.to_owned(), (profile, now));
    }

    /// Drops a user's entry; called on every upsert and delete.
    pub fn forget(&self, user_id: &str) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user_id);
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

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let cache = PublicProfileCache::new(Duration::from_secs(1));
        let t0 = Timestamp::from_unix_nanos(1);
        cache.put("u1", profile("a"), t0);
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
        cache.put("u1", profile("a"), t0);
        assert_eq!(cache.get("u1", t0), None);
    }
}
