//! The token parser, as userinfo-service and auth-service run it on whatever a caller presents:
//! `KeyRing::key_id_of`, `KeyRing::open` as a consent and as an access token, and the
//! verifier's `TokenVerifier::check`. Nothing panics; only what the seed key signed opens, and
//! never expired.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use miniprogram_fuzz::{SEED_KEY_ID, seed_key, seed_ring};
use miniprogram_token::TokenVerifier;
use miniprogram_token::{KeyRing, Timestamp, TokenKind};

/// 2027-01-15: inside the seed key's life, before the seed tokens expire.
const NOW: i64 = 1_800_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::from_unix_nanos(NOW);
    let key_id = KeyRing::key_id_of(token);
    let verifier = TokenVerifier::new(Duration::from_secs(60));
    verifier.replace_keys(vec![seed_key().verifying]);
    verifier.mark_caught_up(Instant::now());
    for kind in [TokenKind::Consent, TokenKind::Access] {
        let opened = seed_ring().open(kind, token, now);
        if let Ok(claims) = &opened {
            assert!(claims.expires_at() > now, "an expired token opened");
            assert_eq!(
                key_id.as_deref(),
                Ok(SEED_KEY_ID),
                "opened under another key id"
            );
        }
        let checked = verifier.check(kind, token, now, Instant::now());
        assert_eq!(
            checked.is_ok(),
            opened.is_ok(),
            "the verifier and the ring disagree"
        );
    }
});
