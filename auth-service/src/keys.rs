//! The key hierarchy. The master key only seals; under it live the token signing keys
//! (Ed25519 plus a subject key, created on a rotation period and kept for verification until
//! their last token has expired, or retired at once by an admin) and the pairwise-id secret
//! (generated once). A new master key is adopted by re-sealing everything at start-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use miniprogram_token::{Clock, KeyRing, MasterKey, SigningKey, Timestamp, VerifyingKey};

use crate::error::AuthError;
use crate::model::StoredTokenKey;
use crate::revocations::RevocationFeed;
use crate::secrets::{self, AppUserIdKey};
use crate::store::{AuthStore, StoreError};

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

/// Why the stored secrets can't be used with the configured master keys. Start-up stops with
/// this message; it names no secret.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyMismatch {
    #[error(
        "{what} is sealed under a master key that is neither MASTER_KEY_FILE nor PREVIOUS_MASTER_KEY_FILE; \
         start with the master key this database was sealed under (when rotating: the new key in \
         MASTER_KEY_FILE and the old one in PREVIOUS_MASTER_KEY_FILE)"
    )]
    Unknown { what: String },
    #[error("storage failed while re-sealing: {0}")]
    Store(#[from] StoreError),
    #[error("sealing under the new master key failed")]
    Seal,
}

fn token_key_label(key_id: &str) -> String {
    format!("token-key:{key_id}")
}

fn secret_label(name: &str) -> String {
    format!("secret:{name}")
}

/// Name of the pairwise-id secret in the sealed-secrets table.
const PAIRWISE_ID_SECRET: &str = "pairwise-id";

/// Re-seals every sealed row that opens only under `previous` under `master`, so that after
/// one start with both keys the previous one is no longer needed. Replicas may run it at the
/// same time: each update applies only if the row is still what this one read. A row that
/// opens under neither key stops start-up.
pub async fn adopt_master_key(
    store: &dyn AuthStore,
    master: &MasterKey,
    previous: Option<&MasterKey>,
) -> Result<(), MasterKeyMismatch> {
    let mut repos = store.repositories();
    for key in repos.keys().list().await? {
        let what = || format!("token key {}", key.key_id);
        let label = token_key_label(&key.key_id);
        if let Some(resealed) = reseal(master, previous, &label, &key.sealed_key, what)? {
            repos
                .keys()
                .reseal(&key.key_id, &key.sealed_key, &resealed)
                .await?;
            tracing::info!(key_id = %key.key_id, "token key re-sealed under the new master key");
        }
    }
    if let Some(sealed) = repos.keys().secret(PAIRWISE_ID_SECRET).await? {
        let what = || "the pairwise-id secret".to_owned();
        let label = secret_label(PAIRWISE_ID_SECRET);
        if let Some(resealed) = reseal(master, previous, &label, &sealed, what)? {
            repos
                .keys()
                .reseal_secret(PAIRWISE_ID_SECRET, &sealed, &resealed)
                .await?;
            tracing::info!("pairwise-id secret re-sealed under the new master key");
        }
    }
    Ok(())
}

/// `sealed` re-sealed under `master` if it opens only under `previous`; `None` if it already
/// opens under `master`; an error naming `what` if it opens under neither.
fn reseal(
    master: &MasterKey,
    previous: Option<&MasterKey>,
    label: &str,
    sealed: &str,
    what: impl FnOnce() -> String,
) -> Result<Option<String>, MasterKeyMismatch> {
    if master.unseal(label, sealed).is_ok() {
        return Ok(None);
    }
    let secret = previous
        .and_then(|p| p.unseal(label, sealed).ok())
        .ok_or_else(|| MasterKeyMismatch::Unknown { what: what() })?;
    master
        .seal(label, &secret)
        .map(Some)
        .map_err(|_| MasterKeyMismatch::Seal)
}

/// The secret behind app-scoped user ids: generated once and stored sealed, so it survives
/// master key rotation. A database from before the key hierarchy (it has apps but no stored
/// secret) keeps the secret it used then, derived from the master key, so no app's user ids
/// change on upgrade.
pub async fn pairwise_secret(
    store: &dyn AuthStore,
    master: &MasterKey,
    now: Timestamp,
) -> Result<AppUserIdKey, AuthError> {
    let label = secret_label(PAIRWISE_ID_SECRET);
    let mut repos = store.repositories();
    if repos.keys().secret(PAIRWISE_ID_SECRET).await?.is_none() {
        let secret = if repos.apps().count().await? > 0 {
            AppUserIdKey::derive_legacy(master.as_bytes()).secret()
        } else {
            miniprogram_token::random_bytes().map_err(|_| AuthError::RandomUnavailable)?
        };
        let sealed = master
            .seal(&label, &secret)
            .map_err(|_| AuthError::NoTokenKey)?;
        match repos
            .keys()
            .insert_secret(PAIRWISE_ID_SECRET, &sealed, now)
            .await
        {
            Ok(()) | Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Read back: with several replicas starting at once, the first one stored wins.
    let sealed = repos.keys().secret(PAIRWISE_ID_SECRET).await?;
    let sealed = sealed.ok_or(AuthError::NoTokenKey)?;
    let secret = master.unseal(&label, &sealed).map_err(|_| {
        tracing::error!("the pairwise-id secret does not open under the master key");
        AuthError::NoTokenKey
    })?;
    let secret: [u8; 32] = secret.try_into().map_err(|_| AuthError::NoTokenKey)?;
    Ok(AppUserIdKey::from_secret(secret))
}

/// Creates, loads and retires token keys.
#[derive(Clone)]
pub struct KeyRotation {
    store: Arc<dyn AuthStore>,
    master: MasterKey,
    period: Duration,
    longest_token_ttl: Duration,
    keys: SigningKeys,
    /// Keys already unsealed, by id: a reload only unseals keys it has not seen.
    opened: Arc<Mutex<HashMap<String, SigningKey>>>,
    feed: RevocationFeed,
    /// One check-and-create at a time in this process, so a retirement racing the periodic
    /// tick makes one successor, not two.
    creating: Arc<tokio::sync::Mutex<()>>,
}

impl KeyRotation {
    /// `feed` is told whenever the ring changes, so revocation streams send the new key list
    /// to verifiers at once.
    pub fn new(
        store: Arc<dyn AuthStore>,
        master: MasterKey,
        period: Duration,
        longest_token_ttl: Duration,
        keys: SigningKeys,
        feed: RevocationFeed,
    ) -> Self {
        KeyRotation {
            store,
            master,
            period,
            longest_token_ttl,
            keys,
            opened: Arc::default(),
            feed,
            creating: Arc::default(),
        }
    }

    /// Makes sure a key can mint at `now` (and for the next tenth of a period, so a fresh key
    /// is in place and published before the current one retires); reloads the ring.
    pub async fn ensure_current(&self, now: Timestamp) -> Result<(), AuthError> {
        let _creating = self.creating.lock().await;
        let mut repos = self.store.repositories();
        let mut stored = repos.keys().list().await?;
        let lead = now.saturating_add(self.period / 10);
        let has_current = stored
            .iter()
            .any(|k| k.created_at <= now && lead < k.retire_at);
        if !has_current {
            let key = self.new_key(now)?;
            match repos.keys().insert(&key).await {
                Ok(()) | Err(StoreError::AlreadyExists) => stored.push(key),
                Err(e) => return Err(e.into()),
            }
        }
        self.load(&stored, now);
        Ok(())
    }

    /// Ends `key_id`'s life at once (the day it leaks): from `now` it neither mints nor
    /// verifies here, a successor takes over, and verifiers drop it on the next message of
    /// their revocation stream. `false` if no such key is alive.
    pub async fn retire(&self, key_id: &str, now: Timestamp) -> Result<bool, AuthError> {
        let retired = self.store.repositories().keys().retire(key_id, now).await?;
        self.ensure_current(now).await?;
        if retired {
            tracing::warn!(%key_id, "token key retired by an admin; its tokens are refused from now on");
        }
        Ok(retired)
    }

    /// Puts the keys alive at `now` in the ring, unsealing only those not seen before. A key
    /// that does not open (sealed under a master key this process lacks, during a rolling
    /// master key rotation) is left out and logged; the others keep working.
    fn load(&self, stored: &[StoredTokenKey], now: Timestamp) {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        opened.retain(|id, _| stored.iter().any(|k| &k.key_id == id && k.expire_at > now));
        let mut ring = Vec::new();
        for k in stored.iter().filter(|k| k.expire_at > now) {
            let mut key = match opened.get(&k.key_id) {
                Some(key) => key.clone(),
                None => {
                    let Some(key) = self.unseal(k) else { continue };
                    opened.insert(k.key_id.clone(), key.clone());
                    key
                }
            };
            // A retirement moves the times of a key already open.
            key.verifying.retire_at = k.retire_at;
            key.verifying.expire_at = k.expire_at;
            ring.push(key);
        }
        let changed = self.keys.with_ring(|current| {
            let mut before: Vec<&VerifyingKey> = current.keys().collect();
            let mut after: Vec<&VerifyingKey> = ring.iter().map(|k| &k.verifying).collect();
            before.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            after.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            before != after
        });
        if changed {
            let verifying = ring.iter().map(|k| k.verifying.clone()).collect();
            self.keys.replace(KeyRing::signing(ring));
            self.feed.keys_replaced(verifying);
        }
    }

    /// How often [`run`] checks: under the tenth of a period by which a successor is created
    /// early, so no tick skips that window and leaves a moment with no key to mint with; and
    /// under half a `heartbeat`, so a key another replica created or retired is picked up here
    /// (and sent to this replica's verifiers) within a second.
    pub fn check_interval(&self, heartbeat: Duration) -> Duration {
        (self.period / 20)
            .min(heartbeat / 2)
            .clamp(Duration::from_millis(10), Duration::from_millis(500))
    }

    fn new_key(&self, now: Timestamp) -> Result<StoredTokenKey, AuthError> {
        let key_id = format!("k{}", &secrets::new_id()?[..12]);
        let retire_at = now.saturating_add(self.period);
        let expire_at = retire_at.saturating_add(self.longest_token_ttl);
        let key = SigningKey::generate(key_id.clone(), now, retire_at, expire_at)
            .map_err(|_| AuthError::RandomUnavailable)?;
        let sealed_key = self
            .master
            .seal(&token_key_label(&key_id), &key.secret_bytes())
            .map_err(|_| AuthError::NoTokenKey)?;
        Ok(StoredTokenKey {
            key_id,
            sealed_key,
            created_at: now,
            retire_at,
            expire_at,
        })
    }

    fn unseal(&self, k: &StoredTokenKey) -> Option<SigningKey> {
        let opened = self
            .master
            .unseal(&token_key_label(&k.key_id), &k.sealed_key)
            .map_err(|e| e.to_string())
            .and_then(|secret| {
                SigningKey::from_secret_bytes(
                    k.key_id.clone(),
                    &secret,
                    k.created_at,
                    k.retire_at,
                    k.expire_at,
                )
                .map_err(|e| e.to_string())
            });
        match opened {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::error!(key_id = %k.key_id, %error, "token key does not open under the master key; left out of the ring");
                None
            }
        }
    }
}

/// Keeps a key able to mint, checking every `every`, forever: spawn it beside
/// [`crate::sweeper::run`] and abort it on shutdown.
pub async fn run(rotation: KeyRotation, clock: Arc<dyn Clock>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = rotation.ensure_current(clock.now()).await {
            tracing::error!(error = %e, "key rotation failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use miniprogram_token::{ScopeSet, TokenClaims, TokenKind};

    use super::*;

    async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn AuthStore> {
        let url = format!("sqlite://{}", dir.path().join("auth.db").display());
        crate::store::open(&url).await.unwrap()
    }

    fn rotation(store: Arc<dyn AuthStore>, master: u8, keys: SigningKeys) -> KeyRotation {
        KeyRotation::new(
            store,
            MasterKey::from_bytes(&[master; 32]).unwrap(),
            Duration::from_secs(100),
            Duration::from_secs(50),
            keys,
            RevocationFeed::default(),
        )
    }

    fn claims(issued: Timestamp, expires: Timestamp) -> TokenClaims {
        TokenClaims {
            app_id: "app".into(),
            user_id: "u".into(),
            scopes: ScopeSet::EMPTY,
            issued_at: issued.unix_nanos(),
            expires_at: expires.unix_nanos(),
            token_id: "t".into(),
            grant_id: "g".into(),
        }
    }

    /// With a 100 s period and 50 s tokens: a key mints for its period, its successor is
    /// published before it retires, and it keeps verifying until the last token it minted has
    /// expired (retire + 50 s), then leaves the ring.
    #[tokio::test]
    async fn a_key_mints_for_its_period_and_verifies_until_its_last_token_expires() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::default();
        let rotation = rotation(sqlite_store(&dir).await, 9, keys.clone());
        let t0 = Timestamp::now();
        let at = |secs: u64| t0.saturating_add(Duration::from_secs(secs));
        let current = |now| keys.ring().signing_key(now).map(|k| k.key_id.clone());

        rotation.ensure_current(at(0)).await.unwrap();
        let first = current(at(0)).unwrap();
        rotation.ensure_current(at(50)).await.unwrap();
        assert_eq!(current(at(50)).unwrap(), first, "no rotation mid-period");

        // A token minted at the end of the first key's period.
        let token = keys
            .ring()
            .mint(TokenKind::Access, &claims(at(89), at(89 + 50)), at(89))
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

    /// Guards the `retire_token_key` call in [`KeyRotation::retire`]: a retired key leaves
    /// the ring at once, its tokens stop opening and a successor mints.
    #[tokio::test]
    async fn a_retired_key_verifies_nothing_and_a_successor_mints() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::default();
        let rotation = rotation(sqlite_store(&dir).await, 9, keys.clone());
        let now = Timestamp::now();
        rotation.ensure_current(now).await.unwrap();
        let first = keys.ring().signing_key(now).unwrap().key_id.clone();
        let later = now.saturating_add(Duration::from_secs(10));
        let token = keys
            .ring()
            .mint(TokenKind::Access, &claims(now, later), now)
            .unwrap();

        let at = now.saturating_add(Duration::from_millis(1));
        assert!(rotation.retire(&first, at).await.unwrap());
        let ring = keys.ring();
        assert!(!ring.contains(&first));
        assert!(ring.open(TokenKind::Access, &token, at).is_err());
        let successor = ring.signing_key(at).unwrap().key_id.clone();
        assert_ne!(successor, first);
        assert!(!rotation.retire(&first, at).await.unwrap(), "already dead");
    }

    /// Guards [`adopt_master_key`]: after one start with the new master key and the previous
    /// one, everything opens under the new key alone (same keys, same pairwise ids), and a
    /// start with only the old key is refused by name.
    #[tokio::test]
    async fn a_new_master_key_is_adopted_by_resealing_and_the_old_one_is_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let (old, new) = (
            MasterKey::from_bytes(&[1; 32]).unwrap(),
            MasterKey::from_bytes(&[2; 32]).unwrap(),
        );
        let now = Timestamp::now();
        let before_keys = SigningKeys::default();
        rotation(store.clone(), 1, before_keys.clone())
            .ensure_current(now)
            .await
            .unwrap();
        let user_id = pairwise_secret(store.as_ref(), &old, now)
            .await
            .unwrap()
            .app_user_id("mp1", "user-1");

        assert!(matches!(
            adopt_master_key(store.as_ref(), &new, None).await,
            Err(MasterKeyMismatch::Unknown { .. })
        ));
        adopt_master_key(store.as_ref(), &new, Some(&old))
            .await
            .unwrap();
        adopt_master_key(store.as_ref(), &new, None).await.unwrap();

        let after_keys = SigningKeys::default();
        rotation(store.clone(), 2, after_keys.clone())
            .ensure_current(now)
            .await
            .unwrap();
        assert_eq!(
            after_keys.ring().signing_key(now).map(|k| k.key_id.clone()),
            before_keys
                .ring()
                .signing_key(now)
                .map(|k| k.key_id.clone()),
            "the same signing key, re-sealed"
        );
        assert_eq!(
            pairwise_secret(store.as_ref(), &new, now)
                .await
                .unwrap()
                .app_user_id("mp1", "user-1"),
            user_id
        );
        let refused = adopt_master_key(store.as_ref(), &old, None).await;
        assert!(
            matches!(&refused, Err(MasterKeyMismatch::Unknown { what }) if what.starts_with("token key")),
            "{refused:?}"
        );
    }

    /// Guards the legacy branch of [`pairwise_secret`]: a database from before the key
    /// hierarchy (apps, no stored secret) keeps the ids derived from the master key.
    #[tokio::test]
    async fn an_upgraded_database_keeps_its_app_user_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let master = MasterKey::from_bytes(&[5; 32]).unwrap();
        store
            .repositories()
            .apps()
            .insert(&crate::model::AppRecord {
                app_id: "mp1".into(),
                display_name: "One".into(),
                secret_hash: [0; 32],
                features: crate::model::FeatureSet::EMPTY,
                created_at: Timestamp::now(),
                declaration_version: 0,
                declared_scopes: miniprogram_token::ScopeSet::EMPTY,
                declared_at: Timestamp::now(),
            })
            .await
            .unwrap();
        let key = pairwise_secret(store.as_ref(), &master, Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            key.app_user_id("mp1", "user-1"),
            AppUserIdKey::derive_legacy(master.as_bytes()).app_user_id("mp1", "user-1")
        );

        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = pairwise_secret(
            sqlite_store(&fresh_dir).await.as_ref(),
            &master,
            Timestamp::now(),
        )
        .await
        .unwrap();
        assert_ne!(
            fresh.app_user_id("mp1", "user-1"),
            key.app_user_id("mp1", "user-1"),
            "a new deployment's secret is random, not derived from the master key"
        );
    }
}
