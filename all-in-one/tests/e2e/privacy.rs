//! Privacy as properties: what reaches a mini program never carries the wallet user id, the
//! real name or the phone number.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

use super::{ALL_FEATURES, Platform, auth_code, consent_token};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

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

fn profile_strategy() -> impl Strategy<Value = upb::Profile> {
    let text = "[a-zA-Z\u{4e00}-\u{4e2f}\u{00e9}\u{1f600}-\u{1f60f} ]{0,40}";
    (
        "[a-z]{4}-[0-9a-f]{12}",
        "RealName [A-Z][a-z]{4,10}",
        "\\+86 1[0-9]{10}",
        prop_oneof![
            Just(String::new()),
            "https://cdn\\.example\\.com/[a-z]{1,20}\\.png"
        ],
        text,
        prop_oneof![Just(""), Just("m"), Just("f")],
        prop_oneof![Just(""), Just("CN"), Just("US"), Just("BR")],
        text,
        text,
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
                nick_name: nick_name.chars().take(32).collect(),
                gender: gender.into(),
                country_code: country_code.into(),
                province: province.chars().take(32).collect(),
                city: city.chars().take(32).collect(),
                update_time: None,
            },
        )
}

/// The wallet user id in every encoding we could think of: plain, hex (both cases), and
/// base64 (standard and URL-safe, padded or not, at each of the three byte alignments).
fn encodings(user_id: &str) -> Vec<String> {
    let mut out = vec![
        user_id.to_owned(),
        hex::encode(user_id),
        hex::encode_upper(user_id),
    ];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(user_id.as_bytes());
            let encoded = engine.encode(&bytes);
            let skip = (shift * 4).div_ceil(3) + 1;
            out.push(encoded[skip..encoded.len().saturating_sub(4)].to_owned());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
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
            let info = p
                .open_user_info(&token)
                .await
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let encoded = info.encode_to_vec();
            for private in [&profile.user_id, &profile.real_name, &profile.phone_number] {
                prop_assert!(!contains(&encoded, private), "response leaks {private:?}");
            }
            prop_assert_eq!(&info.nick_name, &profile.nick_name);
            prop_assert_eq!(&info.city, &profile.city);
            Ok(())
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_code_or_error_message_carries_the_wallet_user_id_in_any_encoding() {
    let p = Platform::start().await;
    let (app_id, secret) = p.app(&ALL_FEATURES).await;
    let handle = tokio::runtime::Handle::current();
    run_cases(24, "[a-zA-Z0-9_@.-]{8,40}", |user_id| {
        handle.block_on(async {
            let mut issued: Vec<String> = Vec::new();
            issued.push(consent_token(
                &p.consent(&user_id, &app_id, &[UserInfo]).await,
            ));
            let code = auth_code(&p.consent(&user_id, &app_id, &[AuthBase, PhoneNumber]).await);
            issued.push(code.clone());
            let mut backend = p.auth.backend(&app_id, &secret);
            let pair = backend
                .exchange_auth_code(pb::ExchangeAuthCodeRequest {
                    auth_code: code.clone(),
                })
                .await
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
                .into_inner();
            issued.extend([
                pair.access_token.clone(),
                pair.refresh_token.clone(),
                pair.user_id.clone(),
            ]);
            // Errors that concern this user: a replayed code, a missing profile, a stranger's prompt.
            if let Err(e) = backend
                .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
                .await
            {
                issued.push(e.message().to_owned());
            }
            if let Err(e) = p.open_user_info(&issued[0]).await {
                issued.push(e.message().to_owned());
            }
            if let Ok(pb::request_authorization_response::Result::Prompt(prompt)) = p
                .request(
                    &format!("{user_id}-other"),
                    &app_id,
                    &[UserInfo],
                    pb::Trigger::UserTap,
                )
                .await
            {
                issued.push(prompt.prompt_id.clone());
                if let Err(e) = p
                    .resolve(&prompt.prompt_id, &user_id, pb::Decision::Allow)
                    .await
                {
                    issued.push(e.message().to_owned());
                }
            }
            for value in &issued {
                for encoding in encodings(&user_id) {
                    prop_assert!(
                        !contains(value.as_bytes(), &encoding),
                        "{value:?} carries {encoding:?}"
                    );
                }
            }
            Ok(())
        })
    });
}
