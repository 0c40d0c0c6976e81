//! Privacy as properties: what reaches a mini program never carries the wallet user id, the
//! real name or the phone number.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

use tonic::Status;
use tonic::metadata::KeyAndValueRef;
use tonic_types::StatusExt;

use super::{ALL_FEATURES, Platform, auth_code, consent_token};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};
use pb::request_authorization_response::Result as Outcome;

/// Runs an async body for each generated case, on the current multi-thread runtime.
fn run_cases<S: Strategy>(
    cases: u32,
    strategy: S,
    body: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| runner.run(&strategy, body));
    if let Err(e) = result {
        panic!("{e}");
    }
}

// === the profile property ===

/// Limits of `userinfo-service/src/profiles.rs` (and the design), in bytes.
const MAX_AVATAR: usize = 2048;
const MAX_TEXT: usize = 128;
const MAX_USER_ID: usize = 128;
const MAX_PHONE: usize = 32;

/// Characters of the public text fields: Latin, an accented letter and a combining accent,
/// CJK, emoji and the zero-width joiner that glues emoji sequences. No digits, spaces, `-`
/// or `+` (the phone number's alphabet), and nothing from [`PRIVATE`].
const PUBLIC: &str = "[a-zA-Z\u{00e9}\u{0301}\u{4e00}-\u{4e2f}\u{1f600}-\u{1f60f}\u{200d}]";
/// Characters of an avatar URL's path: again no digits, spaces, `-` or `+`.
const PATH: &str = "[a-z/_.\u{00e9}\u{0301}\u{4e00}-\u{4e2f}\u{1f600}-\u{1f60f}]";
const AVATAR_PREFIX: &str = "https://cdn.example.com/";
/// Characters of the user id and real name: Greek, Cyrillic, Hangul, other emoji, a combining
/// diaeresis, digits and a little punctuation. Every non-empty private value starts with a
/// [`MARKER`]: a Greek capital, whose UTF-8 bytes (0xCE 0x91..0xA9) no public field contains
/// and the protobuf framing can't form (a length varint's high byte is followed by a byte
/// < 0x80), so finding the value in the response can only mean it leaked.
const PRIVATE: &str =
    "[\u{0391}-\u{03a9}\u{0410}-\u{044f}\u{ac00}-\u{ac2f}\u{1f680}-\u{1f68f}\u{0308}0-9_.@]";
const MARKER: &str = "[\u{0391}-\u{03a9}]";

/// Strings matching `regex`.
fn re(regex: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    proptest::string::string_regex(regex).expect("a valid regex")
}

/// `chars` cut to whole characters that fit in `len` bytes, then padded with the one-byte
/// `pad` to exactly `len` bytes.
fn exactly(chars: &str, len: usize, pad: char) -> String {
    assert!(pad.is_ascii());
    let mut out = String::with_capacity(len);
    for c in chars.chars() {
        if out.len() + c.len_utf8() > len {
            break;
        }
        out.push(c);
    }
    while out.len() < len {
        out.push(pad);
    }
    out
}

/// `s` cut to whole characters that fit in `max` bytes.
fn at_most(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Empty, short unicode, or exactly [`MAX_TEXT`] bytes of mostly multi-byte characters.
fn public_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        re(&format!("{PUBLIC}{{1,24}}")),
        re(&format!("{PUBLIC}{{60,128}}")).prop_map(|s| exactly(&s, MAX_TEXT, 'z')),
    ]
}

/// Empty, a short unicode https URL, or one of exactly [`MAX_AVATAR`] bytes.
fn avatar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        re(&format!("{PATH}{{1,40}}")).prop_map(|p| format!("{AVATAR_PREFIX}{p}")),
        re(&format!("{PATH}{{800,1000}}")).prop_map(|p| exactly(
            &format!("{AVATAR_PREFIX}{p}"),
            MAX_AVATAR,
            'z'
        )),
    ]
}

/// A marked private value: short unicode, or exactly `max` bytes.
fn private_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        re(&format!("{MARKER}{PRIVATE}{{0,30}}")).prop_map(move |s| at_most(&s, max)),
        re(&format!("{MARKER}{PRIVATE}{{40,128}}")).prop_map(move |s| exactly(&s, max, '7')),
    ]
}

/// Empty, typical, or exactly [`MAX_PHONE`] bytes; ASCII, as validation requires. A phone
/// number has at least three digits; no public field holds a digit, a space, `-` or `+`, and the
/// protobuf framing puts at most two ASCII bytes in a row (a tag and a one-byte length), so a
/// phone number found in the response can only have leaked.
fn phone() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\+86 1[0-9]{2} [0-9]{4} [0-9]{4}",
        "[0-9]{3}-[0-9]{3}-[0-9]{4}",
        // Exactly the maximum.
        "\\+[0-9 -]{28}[0-9]{3}",
        "[0-9]{32}",
    ]
}

fn profile_strategy() -> impl Strategy<Value = upb::Profile> {
    (
        private_text(MAX_USER_ID),
        prop_oneof![Just(String::new()), private_text(MAX_TEXT)],
        phone(),
        avatar(),
        public_text(),
        prop_oneof![Just(""), Just("m"), Just("f")],
        prop_oneof![Just(""), Just("CN"), Just("US"), Just("BR"), Just("KR")],
        public_text(),
        public_text(),
    )
        .prop_map(
            |(
                user_id,
                real_name,
                phone_number,
                avatar,
                nick_name,
                gender,
                country_code,
                province,
                city,
            )| upb::Profile {
                user_id,
                real_name,
                phone_number,
                avatar,
                nick_name,
                gender: gender.into(),
                country_code: country_code.into(),
                province,
                city,
                update_time: None,
            },
        )
}

/// GetOpenUserInfo, answered with the response's bytes as they came over the wire.
async fn open_user_info_wire(p: &Platform, consent_token: &str) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(p.userinfo.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let request = upb::GetOpenUserInfoRequest {
        consent_token: consent_token.into(),
    };
    grpc.unary(
        tonic::Request::new(request.encode_to_vec()),
        tonic::codegen::http::uri::PathAndQuery::from_static(
            "/miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo",
        ),
        super::RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_profile_generators_reach_their_limits_and_keep_private_values_apart() {
    use std::collections::BTreeSet;
    let mut runner = TestRunner::deterministic();
    let (mut maximal, mut empty, mut multibyte) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for _ in 0..400 {
        let p = profile_strategy().new_tree(&mut runner).unwrap().current();
        for (name, value, max) in [
            ("avatar", &p.avatar, MAX_AVATAR),
            ("nick_name", &p.nick_name, MAX_TEXT),
            ("province", &p.province, MAX_TEXT),
            ("city", &p.city, MAX_TEXT),
            ("user_id", &p.user_id, MAX_USER_ID),
            ("real_name", &p.real_name, MAX_TEXT),
            ("phone_number", &p.phone_number, MAX_PHONE),
        ] {
            assert!(value.len() <= max, "{name}: {value:?}");
            if value.len() == max {
                maximal.insert(name);
            }
            if value.is_empty() {
                empty.insert(name);
            }
            if value.chars().any(|c| c.len_utf8() > 1) {
                multibyte.insert(name);
            }
        }
        if p.avatar.len() == MAX_AVATAR {
            assert!(p.avatar.starts_with(AVATAR_PREFIX));
        }
        let public = [
            &p.avatar,
            &p.nick_name,
            &p.gender,
            &p.country_code,
            &p.province,
            &p.city,
        ];
        for private in [&p.user_id, &p.real_name, &p.phone_number] {
            for field in public {
                assert!(private.is_empty() || !field.contains(private.as_str()));
            }
        }
    }
    let all = [
        "avatar",
        "nick_name",
        "province",
        "city",
        "user_id",
        "real_name",
        "phone_number",
    ];
    assert_eq!(maximal, BTreeSet::from(all), "maximal sizes");
    // The user id is required; the phone number's alphabet is ASCII by rule.
    assert_eq!(
        empty,
        all.into_iter().filter(|n| *n != "user_id").collect(),
        "empty values"
    );
    assert_eq!(
        multibyte,
        all.into_iter().filter(|n| *n != "phone_number").collect(),
        "multi-byte characters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_user_info_response_never_contains_the_user_id_real_name_or_phone() {
    let p = Platform::start().await;
    let (app_id, _) = p.app(&ALL_FEATURES).await;
    let handle = tokio::runtime::Handle::current();
    run_cases(48, profile_strategy(), |profile| {
        handle.block_on(async {
            p.profile(profile.clone()).await;
            let token = consent_token(&p.consent(&profile.user_id, &app_id, &[UserInfo]).await);
            let wire = open_user_info_wire(&p, &token)
                .await
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let expected = upb::GetOpenUserInfoResponse {
                avatar: profile.avatar.clone(),
                nick_name: profile.nick_name.clone(),
                gender: profile.gender.clone(),
                country_code: profile.country_code.clone(),
                province: profile.province.clone(),
                city: profile.city.clone(),
            };
            let info = upb::GetOpenUserInfoResponse::decode(wire.as_slice())
                .map_err(|e| TestCaseError::fail(format!("undecodable response: {e}")))?;
            prop_assert_eq!(&info, &expected);
            // Byte for byte: the six fields and nothing else (no unknown fields).
            prop_assert_eq!(&wire, &expected.encode_to_vec());
            for private in [&profile.user_id, &profile.real_name, &profile.phone_number] {
                prop_assert!(
                    !contains(&wire, private.as_bytes()),
                    "response leaks {private:?}"
                );
            }
            Ok(())
        })
    });
}

// === the token property ===

/// The wallet user id in every encoding we could think of: plain, hex (both cases), and
/// base64 (standard and URL-safe, padded or not): the user id encoded alone, and the part of
/// its encoding that is the same wherever it sits in a longer input, at each of the three
/// byte alignments.
fn encodings(user_id: &str) -> Vec<Vec<u8>> {
    let raw = user_id.as_bytes();
    let mut out = vec![
        raw.to_vec(),
        hex::encode(raw).into_bytes(),
        hex::encode_upper(raw).into_bytes(),
    ];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(engine.encode(raw).into_bytes());
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(raw);
            let encoded = engine.encode(&bytes);
            // Characters whose 6 bits all come from the user id.
            let first = (shift * 4).div_ceil(3);
            let end = ((shift + raw.len()) * 4) / 3;
            out.push(encoded.as_bytes()[first..end].to_vec());
        }
    }
    out
}

#[test]
fn the_encodings_find_the_user_id_inside_longer_encoded_data() {
    for user_id in ["wallet-user-1", "用户😀e\u{301}", "Ωμέγα_2088"] {
        let needles = encodings(user_id);
        for prefix in 0..3usize {
            let mut data = vec![b'x'; prefix];
            data.extend_from_slice(user_id.as_bytes());
            data.extend_from_slice(b"}tail");
            for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                let encoded = engine.encode(&data).into_bytes();
                assert!(
                    needles.iter().any(|n| contains(&encoded, n)),
                    "{user_id} at {prefix}"
                );
            }
            for encoded in [hex::encode(&data), hex::encode_upper(&data)] {
                assert!(needles.iter().any(|n| contains(encoded.as_bytes(), n)));
            }
        }
        assert!(!needles.iter().any(|n| contains(b"unrelated text", n)));
    }
}

/// Everything a failed call hands back: the message, the raw `grpc-status-details-bin` bytes,
/// the decoded `ErrorInfo` (reason, domain, metadata keys and values), and every other
/// metadata entry, as sent and decoded.
fn error_surface(status: &Status) -> Vec<Vec<u8>> {
    let mut out = vec![
        status.message().as_bytes().to_vec(),
        status.details().to_vec(),
    ];
    if let Some(info) = status.get_details_error_info() {
        out.push(info.reason.into_bytes());
        out.push(info.domain.into_bytes());
        for (k, v) in info.metadata {
            out.push(k.into_bytes());
            out.push(v.into_bytes());
        }
    }
    for entry in status.metadata().iter() {
        match entry {
            KeyAndValueRef::Ascii(k, v) => {
                out.push(k.as_str().as_bytes().to_vec());
                out.push(v.as_encoded_bytes().to_vec());
            }
            KeyAndValueRef::Binary(k, v) => {
                out.push(k.as_str().as_bytes().to_vec());
                out.push(v.as_encoded_bytes().to_vec());
                out.push(v.to_bytes().map(|b| b.to_vec()).unwrap_or_default());
            }
        }
    }
    out
}

/// The call must fail with `reason`; what it hands back joins `seen`.
fn expect_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    reason: ErrorReason,
    seen: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), TestCaseError> {
    let status = match result {
        Ok(v) => {
            return Err(TestCaseError::fail(format!(
                "{what}: expected an error, got {v:?}"
            )));
        }
        Err(s) => s,
    };
    prop_assert_eq!(
        ErrorReason::of(&status),
        Some(reason),
        "{}: {:?}",
        what,
        status
    );
    for part in error_surface(&status) {
        seen.push((format!("{what} (error)"), part));
    }
    Ok(())
}

fn fail(what: &str) -> impl FnOnce(Status) -> TestCaseError + '_ {
    move |e| TestCaseError::fail(format!("{what}: {e:?}"))
}

/// Wallet user ids: ASCII, unicode (CJK, Greek, combining marks, emoji and ZWJ), and exactly
/// the 128-byte maximum. At least 8 bytes, so a short base64 fragment can't match by chance.
fn wallet_user_id() -> impl Strategy<Value = String> {
    let unicode = "[a-z0-9\u{4e00}-\u{4e2f}\u{0391}-\u{03c9}\u{0300}-\u{036f}\u{1f600}-\u{1f64f}\u{200d}_@.-]";
    prop_oneof![
        "[a-zA-Z0-9_@.-]{8,40}",
        re(&format!("{unicode}{{8,40}}")).prop_map(|s| at_most(&s, MAX_USER_ID)),
        re(&format!("{unicode}{{60,128}}")).prop_map(|s| exactly(&s, MAX_USER_ID, 'u')),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_code_or_error_message_carries_the_wallet_user_id_in_any_encoding() {
    let p = Platform::start().await;
    let (other_app, _) = p.app(&ALL_FEATURES).await;
    let (featureless_app, _) = p.app(&[pb::Feature::UserAuthorization]).await;
    let handle = tokio::runtime::Handle::current();
    run_cases(24, wallet_user_id(), |user_id| {
        handle.block_on(async {
            // A fresh mini program per case, so a case (or a shrink step) starts from no consent.
            let (app_id, secret) = p.app(&ALL_FEATURES).await;
            prop_assert!(!user_id.is_empty() && user_id.len() <= MAX_USER_ID);
            let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
            let mut note = |what: &str, value: &str| seen.push((what.into(), value.into()));

            // The consent token, through its modal.
            let Outcome::Prompt(prompt) = p
                .request(&user_id, &app_id, &[UserInfo], pb::Trigger::UserTap)
                .await
                .map_err(fail("request userInfo"))?
            else {
                return Err(TestCaseError::fail("a fresh user must be prompted"));
            };
            note("prompt id", &prompt.prompt_id);
            let pb::resolve_prompt_response::Result::Grant(grant) = p
                .resolve(&prompt.prompt_id, &user_id, pb::Decision::Allow)
                .await
                .map_err(fail("allow"))?
            else {
                return Err(TestCaseError::fail("allow must grant"));
            };
            let consent = consent_token(&grant);
            note("consent token", &consent);
            // The phone scope's modal and its auth code.
            let code = auth_code(&p.consent(&user_id, &app_id, &[AuthBase, PhoneNumber]).await);
            note("auth code", &code);

            let mut backend = p.auth.backend(&app_id, &secret);
            let pair = backend
                .exchange_auth_code(pb::ExchangeAuthCodeRequest {
                    auth_code: code.clone(),
                })
                .await
                .map_err(fail("exchange"))?
                .into_inner();
            note("access token", &pair.access_token);
            note("refresh token", &pair.refresh_token);
            note("app user id", &pair.user_id);
            prop_assert!(!pair.user_id.is_empty());
            prop_assert_ne!(&pair.user_id, &user_id);

            let described = backend
                .introspect_token(pb::IntrospectTokenRequest {
                    token: pair.access_token.clone(),
                })
                .await
                .map_err(fail("introspect"))?
                .into_inner();
            prop_assert!(described.active);
            prop_assert_eq!(&described.user_id, &pair.user_id);
            note("introspected user id", &described.user_id);
            note("introspected token id", &described.token_id);

            let refreshed = backend
                .refresh_access_token(pb::RefreshAccessTokenRequest {
                    refresh_token: pair.refresh_token.clone(),
                })
                .await
                .map_err(fail("refresh"))?
                .into_inner();
            prop_assert_eq!(&refreshed.user_id, &pair.user_id);
            note("refreshed access token", &refreshed.access_token);
            note("refreshed refresh token", &refreshed.refresh_token);
            note("refreshed app user id", &refreshed.user_id);

            // Errors that concern this user. The user has no profile.
            let mut errors = Vec::new();
            expect_error(
                "GetOpenUserInfo without a profile",
                p.open_user_info(&consent).await,
                ErrorReason::ProfileNotFound,
                &mut errors,
            )?;
            expect_error(
                "GetPhoneNumber without a profile",
                p.userinfo
                    .backend(&app_id, &secret)
                    .get_phone_number(upb::GetPhoneNumberRequest {
                        access_token: refreshed.access_token.clone(),
                    })
                    .await,
                ErrorReason::ProfileNotFound,
                &mut errors,
            )?;
            expect_error(
                "a spent refresh token",
                backend
                    .refresh_access_token(pb::RefreshAccessTokenRequest {
                        refresh_token: pair.refresh_token.clone(),
                    })
                    .await,
                ErrorReason::UsedRefreshToken,
                &mut errors,
            )?;
            expect_error(
                "a replayed code",
                backend
                    .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
                    .await,
                ErrorReason::UsedCode,
                &mut errors,
            )?;
            expect_error(
                "a resolved prompt",
                p.resolve(&prompt.prompt_id, &user_id, pb::Decision::Allow)
                    .await,
                ErrorReason::PromptAlreadyResolved,
                &mut errors,
            )?;
            let Outcome::Prompt(strangers) = p
                .request("a-stranger", &app_id, &[UserInfo], pb::Trigger::UserTap)
                .await
                .map_err(fail("stranger's request"))?
            else {
                return Err(TestCaseError::fail("the stranger must be prompted"));
            };
            expect_error(
                "a stranger's prompt",
                p.resolve(&strangers.prompt_id, &user_id, pb::Decision::Allow)
                    .await,
                ErrorReason::PromptNotFound,
                &mut errors,
            )?;
            expect_error(
                "a request at launch",
                p.request(&user_id, &other_app, &[UserInfo], pb::Trigger::AppLaunch)
                    .await,
                ErrorReason::AuthorizationAtLaunch,
                &mut errors,
            )?;
            expect_error(
                "a feature not activated",
                p.request(
                    &user_id,
                    &featureless_app,
                    &[UserInfo],
                    pb::Trigger::UserTap,
                )
                .await,
                ErrorReason::InsufficientIsvPermissions,
                &mut errors,
            )?;
            expect_error(
                "an oversized user id",
                p.request(
                    &format!("{user_id}{}", "x".repeat(MAX_USER_ID)),
                    &app_id,
                    &[UserInfo],
                    pb::Trigger::UserTap,
                )
                .await,
                ErrorReason::InvalidArgument,
                &mut errors,
            )?;
            // Withdrawn consent: userinfo-service hears of it over its revocation stream.
            p.auth
                .wallet()
                .revoke_authorization(pb::RevokeAuthorizationRequest {
                    user_id: user_id.clone(),
                    app_id: app_id.clone(),
                    scopes: vec![],
                })
                .await
                .map_err(fail("revoke"))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            let withdrawn = loop {
                let r = p.open_user_info(&consent).await;
                match &r {
                    Err(e) if ErrorReason::of(e) == Some(ErrorReason::ProfileNotFound) => {}
                    _ => break r,
                }
                prop_assert!(Instant::now() < deadline, "the withdrawal never arrived");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            expect_error(
                "a withdrawn consent token",
                withdrawn,
                ErrorReason::InvalidAuthRelations,
                &mut errors,
            )?;
            seen.extend(errors);

            let needles = encodings(&user_id);
            for (what, value) in &seen {
                for needle in &needles {
                    prop_assert!(
                        !contains(value, needle),
                        "{} carries the user id {:?} as {:?}: {:?}",
                        what,
                        user_id,
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(value)
                    );
                }
            }
            Ok(())
        })
    });
}
