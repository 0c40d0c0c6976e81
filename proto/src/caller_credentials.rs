//! The `authorization` metadata formats of the contract, parsed in one place for both services.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Longest `Basic` credential accepted, encoded.
const MAX_BASIC_LEN: usize = 512;

/// `Bearer <token>` → the token.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    header.and_then(|h| h.strip_prefix("Bearer "))
}

/// `Basic base64(app_id:app_secret)` → (app id, secret); `None` when malformed.
pub fn basic_credential(header: Option<&str>) -> Option<(String, String)> {
    let encoded = header?.strip_prefix("Basic ")?.trim();
    if encoded.len() > MAX_BASIC_LEN {
        return None;
    }
    let text = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (app_id, secret) = text.split_once(':')?;
    Some((app_id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        let header = format!("Basic {}", STANDARD.encode("mp1:secret:with:colons"));
        assert_eq!(basic_credential(Some(&header)), Some(("mp1".into(), "secret:with:colons".into())));
        assert_eq!(basic_credential(Some("Basic !!!")), None);
        assert_eq!(basic_credential(Some("Bearer x")), None);
        assert_eq!(bearer_token(Some("Bearer x")), Some("x"));
        assert_eq!(bearer_token(Some("bearer x")), None);
    }
}
