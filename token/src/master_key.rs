use std::fmt;

use pasetors::keys::SymmetricKey;
use pasetors::version4::{LocalToken, V4};

use crate::KEY_LEN;

/// The key that every other secret of auth-service (token signing keys, the pairwise-id
/// secret) is sealed under at rest. It only seals: nothing is derived from it, so it can be
/// rotated by re-sealing. It never leaves the process.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

/// Why a master key or a sealed secret could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("a master key is {KEY_LEN} bytes, got {0}")]
    WrongLength(usize),
    #[error("the sealed secret does not open under this master key")]
    Unseal,
    #[error("sealing the secret failed")]
    Seal,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Longest sealed value we try to open.
const MAX_SEALED_LEN: usize = 4096;

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(MasterKey(array))
    }

    /// Raw bytes. Only for recovering the pairwise-id secret of a deployment made before the
    /// key hierarchy, when that secret was derived from the master key.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Encrypts `secret`, bound to `label` (a key id, a secret's name) so sealed values can't
    /// be swapped between rows.
    pub fn seal(&self, label: &str, secret: &[u8]) -> Result<String, MasterKeyError> {
        let sk = SymmetricKey::<V4>::from(&self.0).map_err(|_| MasterKeyError::Seal)?;
        LocalToken::encrypt(
            &sk,
            hex::encode(secret).as_bytes(),
            None,
            Some(assertion(label).as_bytes()),
        )
        .map_err(|_| MasterKeyError::Seal)
    }

    /// Opens what [`MasterKey::seal`] sealed under the same `label`.
    pub fn unseal(&self, label: &str, sealed: &str) -> Result<Vec<u8>, MasterKeyError> {
        let sk = SymmetricKey::<V4>::from(&self.0).map_err(|_| MasterKeyError::Unseal)?;
        let untrusted =
            crate::keyring::parse_local(sealed, MAX_SEALED_LEN).ok_or(MasterKeyError::Unseal)?;
        let trusted = LocalToken::decrypt(&sk, &untrusted, None, Some(assertion(label).as_bytes()))
            .map_err(|_| MasterKeyError::Unseal)?;
        hex::decode(trusted.payload()).map_err(|_| MasterKeyError::Unseal)
    }
}

fn assertion(label: &str) -> String {
    format!("miniprogram.sealed.v2:{label}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_under_same_master_and_label() {
        let master = MasterKey::from_bytes(&[9; 32]).unwrap();
        let sealed = master.seal("k1", &[3; 32]).unwrap();
        assert!(!sealed.contains(&hex::encode([3u8; 32])));
        assert_eq!(master.unseal("k1", &sealed).unwrap(), vec![3; 32]);
        assert_eq!(master.unseal("k2", &sealed), Err(MasterKeyError::Unseal));
        let other = MasterKey::from_bytes(&[8; 32]).unwrap();
        assert_eq!(other.unseal("k1", &sealed), Err(MasterKeyError::Unseal));
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert_eq!(
            MasterKey::from_bytes(&[1; 31]).unwrap_err(),
            MasterKeyError::WrongLength(31)
        );
    }
}
