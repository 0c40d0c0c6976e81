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
