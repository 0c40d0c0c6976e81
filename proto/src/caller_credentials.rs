//! The `authorization` metadata formats of the contract, parsed in one place for both services.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Metadata a trusted verifier (userinfo-service) adds when it forwards a mini program
/// backend's app credential to auth-service: the verifier's own bearer credential ...
pub const VERIFIER_AUTHORIZATION: &str = "x-verifier-authorization";
/// ... and the address of the original caller, so failed-attempt limits apply per real caller
/// rather than to the verifier as a whole.
pub const FORWARDED_PEER: &str = "x-forwarded-peer";

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

/// Shortest role token (each of the `*_TOKEN` credentials) a service starts with, in
/// characters: a token is the whole credential of its role, so it must not be guessable
/// (`openssl rand -hex 32` gives 64).
pub const MIN_ROLE_TOKEN_LEN: usize = 32;

/// Why a configured role token can't be used; `None` when it can. Never quotes the token.
pub fn role_token_problem(token: &str) -> Option<String> {
    let len = token.chars().count();
    (len < MIN_ROLE_TOKEN_LEN).then(|| {
        format!(
            "is {len} characters long; a role token needs at least {MIN_ROLE_TOKEN_LEN} \
             (e.g. `openssl rand -hex 32`)"
        )
    })
}

/// Checks a service's role tokens, each `(variable, token)`: the first too short to be
/// secret is named with its problem; one token for two roles is named as `shared` (the
/// service's list of the variables), since one caller could then act as another. Never quotes
/// a token.
pub fn role_tokens_problem(
    roles: &[(&'static str, &str)],
    shared: &'static str,
) -> Option<(&'static str, String)> {
    let weak = roles.iter().find_map(|&(variable, token)| {
        role_token_problem(token).map(|problem| (variable, problem))
    });
    let repeated = (roles.iter().enumerate())
        .any(|(i, (_, token))| roles[..i].iter().any(|(_, other)| other == token));
    weak.or_else(|| {
        repeated.then(|| {
            let problem = "each role needs a token of its own, or one caller could act as another";
            (shared, problem.to_owned())
        })
    })
}

/// A bearer token held as its SHA-256 digest. Comparing digests in constant time takes the
/// same time whatever the presented token is, so a caller learns neither a prefix nor the
/// configured token's length (comparing the tokens themselves stops at a length mismatch).
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether both digests are of the same token, in constant time.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

/// Client side: adds a fixed `authorization` header to every call of a generated client
/// (`XxxClient::with_interceptor(channel, CallerCredential::bearer(token))`).
#[derive(Clone)]
pub struct CallerCredential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl CallerCredential {
    pub fn bearer(token: &str) -> Self {
        CallerCredential(format!("Bearer {token}").parse().ok())
    }

    pub fn basic(app_id: &str, secret: &str) -> Self {
        let encoded = STANDARD.encode(format!("{app_id}:{secret}"));
        CallerCredential(format!("Basic {encoded}").parse().ok())
    }

    /// No header at all.
    pub fn none() -> Self {
        CallerCredential(None)
    }
}

impl std::fmt::Debug for CallerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerCredential(<redacted>)")
    }
}

impl tonic::service::Interceptor for CallerCredential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        let header = format!("Basic {}", STANDARD.encode("mp1:secret:with:colons"));
        assert_eq!(
            basic_credential(Some(&header)),
            Some(("mp1".into(), "secret:with:colons".into()))
        );
        assert_eq!(basic_credential(Some("Basic !!!")), None);
        assert_eq!(basic_credential(Some("Bearer x")), None);
        assert_eq!(bearer_token(Some("Bearer x")), Some("x"));
        assert_eq!(bearer_token(Some("bearer x")), None);
    }

    #[test]
    fn token_digests_match_only_the_same_token() {
        let configured = TokenDigest::of("a-role-token");
        assert!(configured.matches(&TokenDigest::of("a-role-token")));
        for other in ["", "a-role-toke", "a-role-token ", "a-role-tokem"] {
            assert!(!configured.matches(&TokenDigest::of(other)), "{other:?}");
        }
    }

    /// Guards `role_token_problem`'s length floor.
    #[test]
    fn role_tokens_under_32_characters_are_refused_without_being_quoted() {
        let short = "s3cr3t-but-short-0123456789abcd";
        assert_eq!(short.len(), 31);
        let problem = role_token_problem(short).expect("31 characters is too short");
        assert!(!problem.contains(short), "{problem}");
        assert!(problem.contains("32"), "{problem}");
        assert_eq!(role_token_problem(&"x".repeat(32)), None);
        assert!(role_token_problem("").is_some());
    }
}
