//! Writes the seed corpus under `fuzz/corpus/<target>/`: tokens the seed key signed (and
//! damaged copies), a well-formed request of every RPC from its usual caller, and revocation
//! streams of each kind of message. Run from `fuzz/`: `cargo +nightly run --example seeds`
//! (an example, not a bin: `cargo fuzz build` links every bin against libFuzzer).
#![forbid(unsafe_code)]

use std::path::Path;

use miniprogram_fuzz::{AUTH_METHODS, USERINFO_METHODS, seed_ring};
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use miniprogram_token::{Scope, ScopeSet, Timestamp, TokenClaims, TokenKind};
use prost::Message;

const NOW: i64 = 1_800_000_000_000_000_000;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

/// A method's seed: its index, the caller byte, the encoded request.
fn request(
    target: &str,
    methods: &[(&str, bool)],
    method: &str,
    caller: u8,
    message: impl Message,
) {
    let index = methods
        .iter()
        .position(|(path, _)| path.ends_with(method))
        .unwrap_or_else(|| panic!("no method {method}"));
    let mut bytes = vec![index as u8, caller];
    bytes.extend(message.encode_to_vec());
    write(target, &format!("{method}-{caller}"), &bytes);
}

fn claims(token_id: &str) -> TokenClaims {
    TokenClaims {
        app_id: "a1".into(),
        user_id: "u1".into(),
        scopes: ScopeSet::of(&[Scope::UserInfo]),
        issued_at: NOW - 1_000_000_000,
        expires_at: NOW + 3_600_000_000_000,
        token_id: token_id.into(),
        grant_id: "g1".into(),
    }
}

fn main() {
    let now = Timestamp::from_unix_nanos(NOW);
    let consent = seed_ring()
        .mint(TokenKind::Consent, &claims("t1"), now)
        .expect("mint");
    let access = seed_ring()
        .mint(TokenKind::Access, &claims("t2"), now)
        .expect("mint");
    write("token_parser", "consent", consent.as_bytes());
    write("token_parser", "access", access.as_bytes());
    write(
        "token_parser",
        "truncated",
        &consent.as_bytes()[..consent.len() / 2],
    );
    let footerless = consent
        .rsplit_once('.')
        .map_or(consent.as_str(), |(body, _)| body);
    write("token_parser", "no-footer", footerless.as_bytes());
    write(
        "token_parser",
        "local",
        b"v4.local.AAAA.eyJraWQiOiJrZnV6eiJ9",
    );
    write("token_parser", "empty", b"");

    const A: &str = "auth_requests";
    let (admin, wallet, verifier, app, profile_caller) = (1, 2, 3, 4, 7);
    let user_info = || vec![pb::Scope::UserInfo as i32];
    request(
        A,
        &AUTH_METHODS,
        "CreateApp",
        admin,
        pb::CreateAppRequest {
            display_name: "Shop".into(),
            features: vec![1, 2, 3],
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "GetApp",
        admin,
        pb::GetAppRequest {
            app_id: "mp0123456789abcdef".into(),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "EnableFeature",
        admin,
        pb::EnableFeatureRequest {
            app_id: "mp0123456789abcdef".into(),
            feature: 2,
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "DisableFeature",
        admin,
        pb::DisableFeatureRequest {
            app_id: "mp0123456789abcdef".into(),
            feature: 1,
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "RotateAppSecret",
        admin,
        pb::RotateAppSecretRequest {
            app_id: "mp0123456789abcdef".into(),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "RequestAuthorization",
        wallet,
        pb::RequestAuthorizationRequest {
            user_id: "u1".into(),
            app_id: "mp0123456789abcdef".into(),
            scopes: user_info(),
            trigger: 1,
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "ResolvePrompt",
        wallet,
        pb::ResolvePromptRequest {
            prompt_id: "p".repeat(43),
            user_id: "u1".into(),
            decision: 1,
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "ListAuthorizations",
        wallet,
        pb::ListAuthorizationsRequest {
            user_id: "u1".into(),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "RevokeAuthorization",
        wallet,
        pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id: "mp0123456789abcdef".into(),
            scopes: user_info(),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "ExchangeAuthCode",
        app,
        pb::ExchangeAuthCodeRequest {
            auth_code: "c".repeat(43),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "RefreshAccessToken",
        app,
        pb::RefreshAccessTokenRequest {
            refresh_token: "r".repeat(43),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "RevokeToken",
        app,
        pb::RevokeTokenRequest {
            token: access.clone(),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "IntrospectToken",
        app,
        pb::IntrospectTokenRequest {
            token: access.clone(),
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "ListTokenKeys",
        verifier,
        pb::ListTokenKeysRequest {},
    );
    request(
        A,
        &AUTH_METHODS,
        "WatchRevocations",
        verifier,
        pb::WatchRevocationsRequest {
            after_sequence: 3,
            after_issued_before: None,
        },
    );
    request(
        A,
        &AUTH_METHODS,
        "ListSigningKeys",
        admin,
        pb::ListSigningKeysRequest {},
    );
    request(
        A,
        &AUTH_METHODS,
        "RetireSigningKey",
        admin,
        pb::RetireSigningKeyRequest {
            key_id: "k0123456789ab".into(),
        },
    );

    const U: &str = "userinfo_requests";
    let profile = upb::Profile {
        user_id: "u1".into(),
        real_name: "Zhang Wei".into(),
        phone_number: "+86 138 0013 8000".into(),
        avatar: "https://cdn.example.com/a.png".into(),
        nick_name: "Wei".into(),
        gender: "m".into(),
        country_code: "CN".into(),
        province: "Zhejiang".into(),
        city: "Hangzhou".into(),
        update_time: None,
    };
    request(
        U,
        &USERINFO_METHODS,
        "GetOpenUserInfo",
        0,
        upb::GetOpenUserInfoRequest {
            consent_token: consent.clone(),
        },
    );
    request(
        U,
        &USERINFO_METHODS,
        "GetPhoneNumber",
        app,
        upb::GetPhoneNumberRequest {
            access_token: access.clone(),
        },
    );
    request(
        U,
        &USERINFO_METHODS,
        "UpsertProfile",
        profile_caller,
        upb::UpsertProfileRequest {
            profile: Some(profile),
        },
    );
    request(
        U,
        &USERINFO_METHODS,
        "GetProfile",
        profile_caller,
        upb::GetProfileRequest {
            user_id: "u1".into(),
        },
    );
    request(
        U,
        &USERINFO_METHODS,
        "DeleteProfile",
        profile_caller,
        upb::DeleteProfileRequest {
            user_id: "u1".into(),
        },
    );

    const R: &str = "revocation_events";
    let time = |nanos: i64| {
        Some(prost_types::Timestamp {
            seconds: nanos.div_euclid(1_000_000_000),
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        })
    };
    let rule = |sequence: u64, user: &str, token: &str, grant: &str, scopes: Vec<i32>| {
        pb::WatchRevocationsResponse {
            event: Some(pb::RevocationEvent {
                sequence,
                app_id: "a1".into(),
                user_id: user.into(),
                scopes,
                token_id: token.into(),
                issued_before: time(NOW),
                expire_time: time(NOW + 7_200_000_000_000),
                grant_id: grant.into(),
            }),
            ..Default::default()
        }
    };
    let heartbeat = pb::WatchRevocationsResponse {
        heartbeat: true,
        live_key_ids: vec!["kfuzz".into()],
        ..Default::default()
    };
    let resumed = pb::WatchRevocationsResponse {
        resumed_after: Some(1),
        ..Default::default()
    };
    let streams: [(&str, Vec<pb::WatchRevocationsResponse>); 5] = [
        (
            "withdrawal",
            vec![rule(1, "u1", "", "", vec![]), heartbeat.clone()],
        ),
        (
            "token-and-family",
            vec![
                rule(1, "u1", "t1", "", vec![]),
                rule(2, "u1", "", "g1", vec![]),
                heartbeat.clone(),
            ],
        ),
        (
            "feature-switch",
            vec![rule(4, "", "", "", user_info()), heartbeat.clone()],
        ),
        (
            "rewound",
            vec![
                rule(5, "u2", "", "", vec![]),
                resumed,
                rule(2, "u1", "", "", vec![]),
                heartbeat.clone(),
            ],
        ),
        (
            "malformed",
            vec![rule(1, "u1", "", "", vec![99]), heartbeat],
        ),
    ];
    for (name, messages) in streams {
        let mut bytes = Vec::new();
        for message in messages {
            message.encode_length_delimited(&mut bytes).expect("encode");
        }
        write(R, name, &bytes);
    }
}
