//! The revocation-event decoder: a stream of `WatchRevocationsResponse` messages (each
//! length-delimited in the input) applied by userinfo-service's `apply_stream_message` to a
//! verifier. Nothing panics; a message the verifier cannot apply leaves it stale (refusing
//! every token); and a token any live rule it accepted voids is never accepted, checked against
//! a plain list of those rules (`RevocationRule::matches`) beside the verifier's index.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use miniprogram_fuzz::{seed_key, seed_ring};
use miniprogram_proto::auth::v1::WatchRevocationsResponse;
use miniprogram_token::{RevocationRule, Scope, ScopeSet, Timestamp, TokenClaims, TokenKind};
use miniprogram_token::{TokenCheckError, TokenVerifier};
use prost::Message;
use userinfo_service::grpc::auth_client::{apply_stream_message, rule_from_event};

const NOW: i64 = 1_800_000_000_000_000_000;

/// The token checked after the stream: consent token `t1` of grant `g1`, user `u1`, app `a1`.
fn token() -> (TokenClaims, String) {
    let claims = TokenClaims {
        app_id: "a1".into(),
        user_id: "u1".into(),
        scopes: ScopeSet::of(&[Scope::UserInfo]),
        issued_at: NOW - 1_000_000_000,
        expires_at: NOW + 3_600_000_000_000,
        token_id: "t1".into(),
        grant_id: "g1".into(),
    };
    let now = Timestamp::from_unix_nanos(NOW);
    let token = seed_ring()
        .mint(TokenKind::Consent, &claims, now)
        .expect("mint");
    (claims, token)
}

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_unix_nanos(NOW);
    let verifier = TokenVerifier::new(Duration::from_secs(60));
    verifier.replace_keys(vec![seed_key().verifying]);
    // What the verifier was given, as a plain list: (rule, still held).
    let mut model: Vec<RevocationRule> = Vec::new();
    let mut last = 0u64;
    let mut input = data;
    while !input.is_empty() {
        let Ok(message) = WatchRevocationsResponse::decode_length_delimited(&mut input) else {
            break;
        };
        let expected = match &message.event {
            Some(event) => rule_from_event(event.clone()),
            None => None,
        };
        let heartbeat = message.event.is_none() && message.heartbeat;
        let resumed = message
            .event
            .is_none()
            .then_some(message.resumed_after)
            .flatten();
        let applied = apply_stream_message(&verifier, message.clone(), now, Instant::now());
        match (&message.event, expected) {
            (Some(_), None) => {
                assert!(applied.is_err(), "an event that is not a rule was applied");
                assert!(
                    verifier.is_stale(Instant::now()),
                    "a malformed event left the verifier fresh"
                );
            }
            (Some(_), Some(rule)) => {
                assert!(applied.is_ok());
                if rule.sequence > last {
                    last = rule.sequence;
                    model.push(rule);
                }
            }
            (None, _) => {
                assert!(applied.is_ok());
                if heartbeat {
                    model.retain(|r| r.expire_at > now);
                } else if let Some(after) = resumed {
                    last = last.min(after);
                }
            }
        }
    }
    let (claims, token) = token();
    verifier.mark_caught_up(Instant::now());
    let checked = verifier.check(TokenKind::Consent, &token, now, Instant::now());
    if model.iter().any(|r| r.matches(&claims)) {
        assert!(
            matches!(
                checked,
                Err(TokenCheckError::Revoked) | Err(TokenCheckError::UnknownKey)
            ),
            "a token a live rule voids was {checked:?}; rules {model:?}"
        );
    }
});
