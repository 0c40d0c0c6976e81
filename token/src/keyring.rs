use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::{Local, Public};
use serde::{Deserialize, Serialize};

use crate::claims::WireClaims;
use crate::{Timestamp, TokenClaims, TokenKind};

/// Length of a subject key (a PASETO v4.local key) and of an Ed25519 public key, in bytes.
pub const KEY_LEN: usize = 32;

/// Length of an Ed25519 secret key as pasetors holds it: seed then public key.
const SECRET_LEN: usize = 64;

/// Longest token string we try to open; anything longer is not one of ours, and refusing it
/// early keeps a 1 MiB "token" from costing a base64 decode. A token with the longest user id
/// (128 bytes) and app id is under 1,100 characters.
pub const MAX_TOKEN_LEN: usize = 2048;

/// The public half of one token key with its life cycle: what a verifier needs to check a
/// token (the Ed25519 public key) and to read its subject (the subject key, which opens the
/// sealed user id but signs nothing). It mints until `retire_at` and verifies until
/// `expire_at` (its last token's expiry), so rotation never breaks a live token.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    pub key_id: String,
    pub public_key: [u8; KEY_LEN],
    pub subject_key: [u8; KEY_LEN],
    pub created_at: Timestamp,
    pub retire_at: Timestamp,
    pub expire_at: Timestamp,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public_key))
            .field("subject_key", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .field("expire_at", &self.expire_at)
            .finish()
    }
}

/// A token key that can mint: the verifying half plus the Ed25519 secret key, which never
/// leaves auth-service (it is stored only sealed under the master key).
#[derive(Clone)]
pub struct SigningKey {
    pub verifying: VerifyingKey,
    secret: Arc<AsymmetricSecretKey<V4>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("verifying", &self.verifying)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// A fresh Ed25519 key pair and subject key from the OS CSPRNG.
    pub fn generate(
        key_id: String,
        created_at: Timestamp,
        retire_at: Timestamp,
        expire_at: Timestamp,
    ) -> Result<Self, TokenError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| TokenError::KeyMaterial)?;
        let subject_key = crate::random_bytes().map_err(|_| TokenError::KeyMaterial)?;
        let mut secret = [0u8; SECRET_LEN + KEY_LEN];
        secret[..SECRET_LEN].copy_from_slice(pair.secret.as_bytes());
        secret[SECRET_LEN..].copy_from_slice(&subject_key);
        Self::from_secret_bytes(key_id, &secret, created_at, retire_at, expire_at)
    }

    /// Everything secret about the key, to be sealed at rest: the Ed25519 secret key (seed
    /// and public key) followed by the subject key.
    pub fn secret_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SECRET_LEN + KEY_LEN);
        bytes.extend_from_slice(self.secret.as_bytes());
        bytes.extend_from_slice(&self.verifying.subject_key);
        bytes
    }

    /// The key again from [`SigningKey::secret_bytes`]; the public key is checked against
    /// the seed, so a corrupted or swapped blob is refused.
    pub fn from_secret_bytes(
        key_id: String,
        bytes: &[u8],
        created_at: Timestamp,
        retire_at: Timestamp,
        expire_at: Timestamp,
    ) -> Result<Self, TokenError> {
        if bytes.len() != SECRET_LEN + KEY_LEN {
            return Err(TokenError::KeyMaterial);
        }
        let secret = AsymmetricSecretKey::<V4>::from(&bytes[..SECRET_LEN])
            .map_err(|_| TokenError::KeyMaterial)?;
        let mut public_key = [0u8; KEY_LEN];
        public_key.copy_from_slice(&bytes[KEY_LEN..SECRET_LEN]);
        let mut subject_key = [0u8; KEY_LEN];
        subject_key.copy_from_slice(&bytes[SECRET_LEN..]);
        Ok(SigningKey {
            verifying: VerifyingKey {
                key_id,
                public_key,
                subject_key,
                created_at,
                retire_at,
                expire_at,
            },
            secret: Arc::new(secret),
        })
    }
}

/// Why a token could not be minted or opened. Variants carry no token text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a well-formed token of this platform")]
    Malformed,
    #[error("the token names a key this verifier does not know")]
    UnknownKey { key_id: String },
    #[error("the token failed authentication (forged, tampered, or of another kind)")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("no token key is current; rotate keys")]
    NoSigningKey,
    #[error("token signing failed")]
    Signing,
    #[error("the token key material is not a valid key")]
    KeyMaterial,
}

#[derive(Serialize, Deserialize)]
struct Footer<'a> {
    kid: &'a str,
}

/// One key of a ring, with its parsed public key (and secret key, where this process mints).
#[derive(Clone)]
struct RingKey {
    verifying: VerifyingKey,
    public: Arc<AsymmetricPublicKey<V4>>,
    secret: Option<Arc<AsymmetricSecretKey<V4>>>,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.verifying.fmt(f)
    }
}

/// The token keys a service knows, by key id. auth-service's ring holds signing keys and
/// mints; a verifier's ring holds only verifying keys and can open tokens but never make one.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, RingKey>,
}

impl KeyRing {
    /// A ring that mints (auth-service).
    pub fn signing(keys: impl IntoIterator<Item = SigningKey>) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let public = AsymmetricPublicKey::<V4>::from(&k.verifying.public_key).ok()?;
                Some((
                    k.verifying.key_id.clone(),
                    RingKey {
                        verifying: k.verifying,
                        public: Arc::new(public),
                        secret: Some(k.secret),
                    },
                ))
            })
            .collect();
        KeyRing { keys }
    }

    /// A ring that only verifies (userinfo-service, from `ListTokenKeys`).
    pub fn verifying(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let public = AsymmetricPublicKey::<V4>::from(&k.public_key).ok()?;
                Some((
                    k.key_id.clone(),
                    RingKey {
                        verifying: k,
                        public: Arc::new(public),
                        secret: None,
                    },
                ))
            })
            .collect();
        KeyRing { keys }
    }

    /// The verifying half of every key, as published to verifiers.
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values().map(|k| &k.verifying)
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The newest key this ring can mint with at `now`.
    pub fn signing_key(&self, now: Timestamp) -> Option<&VerifyingKey> {
        self.current(now).map(|k| &k.verifying)
    }

    fn current(&self, now: Timestamp) -> Option<&RingKey> {
        self.keys
            .values()
            .filter(|k| {
                k.secret.is_some() && k.verifying.created_at <= now && now < k.verifying.retire_at
            })
            .max_by_key(|k| (k.verifying.created_at, k.verifying.key_id.as_str()))
    }

    /// Signs `claims` with the current key, the user id sealed under its subject key and its
    /// key id in the footer.
    pub fn mint(
        &self,
        kind: TokenKind,
        claims: &TokenClaims,
        now: Timestamp,
    ) -> Result<String, TokenError> {
        let key = self.current(now).ok_or(TokenError::NoSigningKey)?;
        let secret = key.secret.as_deref().ok_or(TokenError::NoSigningKey)?;
        let wire = WireClaims::seal(claims, kind, &key.verifying.subject_key)?;
        let payload = serde_json::to_vec(&wire).map_err(|_| TokenError::Signing)?;
        let footer = serde_json::to_vec(&Footer {
            kid: &key.verifying.key_id,
        })
        .map_err(|_| TokenError::Signing)?;
        PublicToken::sign(
            secret,
            &payload,
            Some(&footer),
            Some(kind.implicit_assertion()),
        )
        .map_err(|_| TokenError::Signing)
    }

    /// The key id a token names, read from its (signed, unencrypted) footer.
    pub fn key_id_of(token: &str) -> Result<String, TokenError> {
        let untrusted = parse(token)?;
        let footer: Footer<'_> = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        Ok(footer.kid.to_owned())
    }

    /// Checks a token of `kind` against its key's signature, opens its subject and checks
    /// its expiry against `now`.
    pub fn open(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<TokenClaims, TokenError> {
        let untrusted = parse(token)?;
        let footer: Footer<'_> = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .get(footer.kid)
            .ok_or_else(|| TokenError::UnknownKey {
                key_id: footer.kid.chars().take(64).collect(),
            })?;
        let trusted = PublicToken::verify(
            &key.public,
            &untrusted,
            None,
            Some(kind.implicit_assertion()),
        )
        .map_err(|_| TokenError::Invalid)?;
        let wire: WireClaims =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Invalid)?;
        let claims = wire.open(kind, &key.verifying.subject_key)?;
        if claims.expires_at() <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn parse(token: &str) -> Result<UntrustedToken<Public, V4>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)
}

/// Parses a sealed value (a v4.local token) no longer than `max`.
pub(crate) fn parse_local(sealed: &str, max: usize) -> Option<UntrustedToken<Local, V4>> {
    if sealed.len() > max {
        return None;
    }
    UntrustedToken::<Local, V4>::try_from(sealed).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Scope, ScopeSet};

    fn key(id: &str, created: i64, retire: i64, expire: i64) -> SigningKey {
        SigningKey::generate(
            id.into(),
            Timestamp::from_unix_nanos(created),
            Timestamp::from_unix_nanos(retire),
            Timestamp::from_unix_nanos(expire),
        )
        .unwrap()
    }

    fn claims(expires_at: i64) -> TokenClaims {
        TokenClaims {
            app_id: "app-1".into(),
            user_id: "wallet-user-42".into(),
            scopes: ScopeSet::of(&[Scope::UserInfo]),
            issued_at: 10,
            expires_at,
            token_id: "tid".into(),
            grant_id: "gid".into(),
        }
    }

    fn verifier_of(ring: &KeyRing) -> KeyRing {
        KeyRing::verifying(ring.keys().cloned())
    }

    #[test]
    fn minted_token_opens_with_the_public_ring_and_hides_user_id() {
        let ring = KeyRing::signing([key("k1", 0, 100, 200)]);
        let now = Timestamp::from_unix_nanos(50);
        let token = ring.mint(TokenKind::Consent, &claims(150), now).unwrap();
        assert!(token.starts_with("v4.public."));
        assert!(!token.contains("wallet-user-42"));
        assert_eq!(KeyRing::key_id_of(&token).unwrap(), "k1");
        let verifier = verifier_of(&ring);
        assert_eq!(
            verifier.open(TokenKind::Consent, &token, now).unwrap(),
            claims(150)
        );
        assert_eq!(
            verifier.mint(TokenKind::Consent, &claims(150), now),
            Err(TokenError::NoSigningKey),
            "a ring of verifying keys cannot mint"
        );
    }

    /// Guards `PublicToken::verify` in [`KeyRing::open`]: a token built from everything a
    /// verifier holds (public key, subject key), signed with any other key, is refused.
    #[test]
    fn a_token_forged_from_the_published_keys_is_refused() {
        let ring = KeyRing::signing([key("k1", 0, 100, 200)]);
        let published = ring.keys().next().unwrap().clone();
        let now = Timestamp::from_unix_nanos(50);
        // The forger makes its own key pair, with the published key id and subject key.
        let mut forger = key("k1", 0, 100, 200);
        forger.verifying.subject_key = published.subject_key;
        let forged = KeyRing::signing([forger])
            .mint(TokenKind::Access, &claims(150), now)
            .unwrap();
        assert_eq!(KeyRing::key_id_of(&forged).unwrap(), "k1");
        assert_eq!(
            verifier_of(&ring).open(TokenKind::Access, &forged, now),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            ring.open(TokenKind::Access, &forged, now),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn consent_token_does_not_open_as_access_token() {
        let ring = KeyRing::signing([key("k1", 0, 100, 200)]);
        let now = Timestamp::from_unix_nanos(50);
        let token = ring.mint(TokenKind::Consent, &claims(150), now).unwrap();
        assert_eq!(
            ring.open(TokenKind::Access, &token, now),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let ring = KeyRing::signing([key("k1", 0, 100, 200)]);
        let token = ring
            .mint(
                TokenKind::Access,
                &claims(60),
                Timestamp::from_unix_nanos(50),
            )
            .unwrap();
        let later = Timestamp::from_unix_nanos(60);
        assert_eq!(
            ring.open(TokenKind::Access, &token, later),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn rotation_mints_with_newest_key_and_old_key_still_verifies() {
        let old = key("old", 0, 100, 300);
        let new = key("new", 100, 200, 400);
        let ring = KeyRing::signing([old, new.clone()]);
        let t_old = ring
            .mint(
                TokenKind::Access,
                &claims(250),
                Timestamp::from_unix_nanos(50),
            )
            .unwrap();
        let t_new = ring
            .mint(
                TokenKind::Access,
                &claims(250),
                Timestamp::from_unix_nanos(150),
            )
            .unwrap();
        assert_eq!(KeyRing::key_id_of(&t_old).unwrap(), "old");
        assert_eq!(KeyRing::key_id_of(&t_new).unwrap(), "new");
        let at = Timestamp::from_unix_nanos(160);
        assert!(ring.open(TokenKind::Access, &t_old, at).is_ok());
        assert!(ring.open(TokenKind::Access, &t_new, at).is_ok());
        let other_ring = KeyRing::verifying([new.verifying]);
        assert!(matches!(
            other_ring.open(TokenKind::Access, &t_old, at),
            Err(TokenError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_key_survives_its_sealed_form_and_a_swapped_public_half_is_refused() {
        let k = key("k1", 0, 100, 200);
        let bytes = k.secret_bytes();
        let again = SigningKey::from_secret_bytes(
            "k1".into(),
            &bytes,
            k.verifying.created_at,
            k.verifying.retire_at,
            k.verifying.expire_at,
        )
        .unwrap();
        assert_eq!(again.verifying, k.verifying);
        let mut swapped = bytes.clone();
        swapped[40] ^= 1;
        assert!(
            SigningKey::from_secret_bytes(
                "k1".into(),
                &swapped,
                again.verifying.created_at,
                again.verifying.retire_at,
                again.verifying.expire_at
            )
            .is_err()
        );
        assert!(!format!("{k:?}").contains(&hex::encode(&bytes[..32])));
    }

    #[test]
    fn tampered_or_garbage_tokens_are_refused() {
        let ring = KeyRing::signing([key("k1", 0, 100, 200)]);
        let now = Timestamp::from_unix_nanos(50);
        let token = ring.mint(TokenKind::Consent, &claims(150), now).unwrap();
        let mut bytes = token.into_bytes();
        bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            ring.open(TokenKind::Consent, &tampered, now),
            Err(TokenError::Invalid)
        );
        for garbage in [
            "",
            "v4.public.",
            "hello",
            "v4.local.abc.def",
            &"x".repeat(1 << 20),
        ] {
            assert_eq!(
                ring.open(TokenKind::Consent, garbage, now),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn no_signing_key_after_retirement() {
        let ring = KeyRing::signing([key("k1", 0, 100, 200)]);
        let after = Timestamp::from_unix_nanos(0).saturating_add(Duration::from_nanos(100));
        assert_eq!(
            ring.mint(TokenKind::Consent, &claims(150), after),
            Err(TokenError::NoSigningKey)
        );
    }

    #[test]
    fn the_longest_ids_fit_under_the_length_limit() {
        let ring = KeyRing::signing([key("k0123456789ab", 0, 100, 200)]);
        let mut long = claims(150);
        long.user_id = "u".repeat(128);
        long.app_id = "a".repeat(64);
        long.token_id = "t".repeat(32);
        long.grant_id = "g".repeat(32);
        let token = ring
            .mint(TokenKind::Access, &long, Timestamp::from_unix_nanos(50))
            .unwrap();
        assert!(token.len() < MAX_TOKEN_LEN, "{}", token.len());
        assert!(
            ring.open(TokenKind::Access, &token, Timestamp::from_unix_nanos(50))
                .is_ok()
        );
    }
}
