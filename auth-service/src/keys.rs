//! Token keys: created on a rotation period, sealed under the master key at rest, and kept for
//! verification until their last token has expired.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use miniprogram_token::{KeyRing, MasterKey, Timestamp, TokenKey};

use crate::error::AuthError;
use crate::secrets;
use crate::store::{AuthStore, StoreError, StoredTokenKey};

/// The keys in use, shared by everything that mints or lists tokens.
#[derive(Debug, Clone, Default)]
pub struct SigningKeys(Arc<RwLock<KeyRing>>);

impl SigningKeys {
    pub fn ring(&self) -> KeyRing {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` with the ring borrowed (no clone on the minting path).
    pub fn with_ring<T>(&self, f: impl FnOnce(&KeyRing) -> T) -> T {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, ring: KeyRing) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = ring;
    }
}

/// Creates and loads token keys.
#[derive(Clone)]
pub struct KeyRotation {
    store: Arc<dyn AuthStore>,
    master: MasterKey,
    period: Duration,
    longest_token_ttl: Duration,
    keys: SigningKeys,
}

impl KeyRotation {
    pub fn new(
        store: Arc<dyn AuthStore>,
        master: MasterKey,
        period: Duration,
        longest_token_ttl: Duration,
        keys: SigningKeys,
    ) -> Self {
        KeyRotation {
            store,
            master,
            period,
            longest_token_ttl,
            keys,
        }
    }

    /// Makes sure a key can mint at `now` (and for the next tenth of a period, so a fresh key
    /// is in place and published before the current one retires); reloads the ring.
    pub async fn ensure_current(&self, now: Timestamp) -> Result<(), AuthError> {
        let stored = self.store.list_token_keys().await?;
        let lead = now.saturating_add(self.period / 10);
        let has_current = stored
            .iter()
            .any(|k| k.created_at <= now && lead < k.retire_at);
        let mut stored = stored;
        if !has_current {
            let key = self.new_key(now)?;
            match self.store.insert_token_key(&key).await {
                Ok(()) | Err(StoreError::AlreadyExists) => stored.push(key),
                Err(e) => return Err(e.into()),
            }
        }
        let ring = stored
            .iter()
            .filter(|k| k.expire_at > now)
            .map(|k| self.unseal(k))
            .collect::<Result<Vec<_>, _>>()?;
        self.keys.replace(KeyRing::new(ring));
        Ok(())
    }

    fn new_key(&self, now: Timestamp) -> Result<StoredTokenKey, AuthError> {
        let key_id = format!("k{}", &secrets::new_id()?[..12]);
        let material =
            miniprogram_token::random_bytes().map_err(|_| AuthError::RandomUnavailable)?;
        let retire_at = now.saturating_add(self.period);
        Ok(StoredTokenKey {
            sealed_key: self
                .master
                .seal(&key_id, &material)
                .map_err(|_| AuthError::NoTokenKey)?,
            key_id,
            created_at: now,
            retire_at,
            expire_at: retire_at.saturating_add(self.longest_token_ttl),
        })
    }

    fn unseal(&self, k: &StoredTokenKey) -> Result<TokenKey, AuthError> {
        let material = self.master.unseal(&k.key_id, &k.sealed_key).map_err(|e| {
            tracing::error!(key_id = %k.key_id, error = %e, "token key does not open under the master key");
            AuthError::NoTokenKey
        })?;
        Ok(TokenKey {
            key_id: k.key_id.clone(),
            material,
            created_at: k.created_at,
            retire_at: k.retire_at,
            expire_at: k.expire_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use miniprogram_token::{ScopeSet, TokenClaims, TokenKind};

    use super::*;
    use crate::store::sqlite::SqliteAuthStore;

    /// With a 100 s period and 50 s tokens: a key mints for its period, its successor is
    /// published before it retires, and it keeps verifying until the last token it minted has
    /// expired (retire + 50 s), then leaves the ring.
    #[tokio::test]
    async fn a_key_mints_for_its_period_and_verifies_until_its_last_token_expires() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("auth.db").display());
        let store: Arc<dyn AuthStore> = Arc::new(SqliteAuthStore::open(&url).await.unwrap());
        let (period, ttl) = (Duration::from_secs(100), Duration::from_secs(50));
        let keys = SigningKeys::default();
        let rotation = KeyRotation::new(
            store,
            MasterKey::from_bytes(&[9; 32]).unwrap(),
            period,
            ttl,
            keys.clone(),
        );
        let t0 = Timestamp::now();
        let at = |secs: u64| t0.saturating_add(Duration::from_secs(secs));
        let current = |now| keys.ring().signing_key(now).map(|k| k.key_id.clone());

        rotation.ensure_current(at(0)).await.unwrap();
        let first = current(at(0)).unwrap();
        rotation.ensure_current(at(50)).await.unwrap();
        assert_eq!(current(at(50)).unwrap(), first, "no rotation mid-period");

        // A token minted at the end of the first key's period.
        let claims = TokenClaims {
            app_id: "app".into(),
            user_id: "u".into(),
            scopes: ScopeSet::EMPTY,
            issued_at: at(89).unix_nanos(),
            expires_at: at(89 + 50).unix_nanos(),
            token_id: "t".into(),
            grant_id: "g".into(),
        };
        let token = keys
            .ring()
            .mint(TokenKind::Access, &claims, at(89))
            .unwrap();
        assert_eq!(KeyRing::key_id_of(&token).unwrap(), first);

        rotation.ensure_current(at(95)).await.unwrap();
        let ring = keys.ring();
        assert!(ring.contains(&first));
        assert_eq!(
            ring.keys().count(),
            2,
            "the successor is published a tenth of a period early"
        );
        rotation.ensure_current(at(101)).await.unwrap();
        assert_ne!(current(at(101)).unwrap(), first, "the first key retired");
        rotation.ensure_current(at(138)).await.unwrap();
        assert!(
            keys.ring().open(TokenKind::Access, &token, at(138)).is_ok(),
            "the retired key still verifies its live tokens"
        );
        rotation.ensure_current(at(151)).await.unwrap();
        assert!(
            !keys.ring().contains(&first),
            "gone once every token it minted has expired"
        );
    }
}
