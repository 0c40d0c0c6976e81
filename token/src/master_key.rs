use std::fmt;

use pasetors::Local;
use pasetors::keys::SymmetricKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, V4};

use crate::KEY_LEN;

/// The key that token keys are encrypted under at rest; it never leaves the process.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

/// Why a master key or a sealed token key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("a master key is {KEY_LEN} bytes, got {0}")]
    WrongLength(usize),
    #[error("the sealed token key does not open under this master key")]
    Unseal,
    #[error("sealing the token key failed")]
    Seal,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(MasterKey(array))
    }

    /// Raw bytes, for deriving other keys (such as the app-scoped user id key).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Encrypts a token key, bound to its key id so sealed keys can't be swapped between rows.
    pub fn seal(&self, key_id: &str, material: &[u8; KEY_LEN]) -> Result<String, MasterKeyError> {
        let sk = SymmetricKey::<V4>::from(&self.0).map_err(|_| MasterKeyError::Seal)?;
        LocalToken::encrypt(
            &sk,
            hex::encode(material).as_bytes(),
            None,
            Some(assertion(key_id).as_bytes()),
        )
        .map_err(|_| MasterKeyError::Seal)
    }

    pub fn unseal(&self, key_id: &str, sealed: &str) -> Result<[u8; KEY_LEN], MasterKeyError> {
        let sk = SymmetricKey::<V4>::from(&self.0).map_err(|_| MasterKeyError::Unseal)?;
        let untrusted =
            UntrustedToken::<Local, V4>::try_from(sealed).map_err(|_| MasterKeyError::Unseal)?;
        let trusted =
            LocalToken::decrypt(&sk, &untrusted, None, Some(assertion(key_id).as_bytes()))
                .map_err(|_| MasterKeyError::Unseal)?;
        let bytes = hex::decode(trusted.payload()).map_err(|_| MasterKeyError::Unseal)?;
        bytes.try_into().map_err(|_| MasterKeyError::Unseal)
    }
}

fn assertion(key_id: &str) -> String {
    format!("miniprogram.token-key.v1:{key_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_key_opens_only_under_same_master_and_key_id() {
        let master = MasterKey::from_bytes(&[9; 32]).unwrap();
        let sealed = master.seal("k1", &[3; 32]).unwrap();
        assert!(!sealed.contains(&hex::encode([3u8; 32])));
        assert_eq!(master.unseal("k1", &sealed).unwrap(), [3; 32]);
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
