//! What each scenario calls, and what it accepts as an answer: the status and the shape the
//! contract promises for that input (a prompt where a prompt is due, the user's own phone
//! number, `active: true` for a live token...). Anything else is an error.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::caller_credentials::CallerCredential;
use miniprogram_proto::userinfo::v1 as upb;
use pb::authorization_service_client::AuthorizationServiceClient;
use pb::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use upb::user_info_service_client::UserInfoServiceClient;

use crate::cluster::WALLET_TOKEN;
use crate::load::{Call, CallError};
use crate::seed::{Plan, secret};

/// Every scenario by its flag name, with what the report calls it.
pub const ALL: [(&str, &str); 14] = [
    ("echo", "echo baseline (bare tonic, health Check)"),
    ("echo-balanced", "echo baseline through the balancer"),
    (
        "authorize-prompt",
        "RequestAuthorization, prompt path (writes a prompt)",
    ),
    (
        "authorize-silent",
        "RequestAuthorization, silent re-grant (mints a consent token)",
    ),
    (
        "resolve-allow",
        "ResolvePrompt, allow (records the decision, mints a consent token)",
    ),
    ("exchange", "ExchangeAuthCode"),
    ("refresh", "RefreshAccessToken"),
    ("introspect", "IntrospectToken (access token)"),
    ("revoke", "RevokeToken (refresh token: revokes its family)"),
    ("userinfo-cached", "GetOpenUserInfo, profile cache on (1 s)"),
    ("userinfo-uncached", "GetOpenUserInfo, profile cache off"),
    (
        "userinfo-cold",
        "GetOpenUserInfo, cache on, every token new to the verifier (Ed25519 check per call)",
    ),
    ("phone", "GetPhoneNumber"),
    (
        "flow",
        "whole flow: tap, prompt, allow, code, exchange, phone number",
    ),
];

/// The servers a scenario calls: one channel list per service (the callers spread over them).
#[derive(Clone)]
pub struct Targets {
    pub echo: Vec<Channel>,
    pub echo_balanced: Option<Vec<Channel>>,
    pub auth: Vec<Channel>,
    pub userinfo: Vec<Channel>,
    pub userinfo_uncached: Option<Vec<Channel>>,
}

/// Tokens made before the runs, through the real RPCs.
pub struct Minted {
    /// (user, consent token) from silent re-grants.
    pub consent: Vec<(u64, String)>,
    /// More consent tokens than the verifier's cache of verified tokens holds.
    pub cold: Vec<(u64, String)>,
    /// (user, app, access token with the phone scope) from exchanges.
    pub access: Vec<(u64, u64, String)>,
}

fn pick(channels: &[Channel], i: usize) -> Channel {
    channels[i % channels.len()].clone()
}

fn failed(rpc: &str, status: &tonic::Status) -> CallError {
    let reason =
        ErrorReason::of(status).map_or_else(|| "no reason".to_owned(), |r| format!("{r:?}"));
    format!("{rpc}: {:?} {reason}", status.code())
}

fn wallet(
    channel: Channel,
) -> AuthorizationServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, CallerCredential>,
> {
    AuthorizationServiceClient::with_interceptor(channel, CallerCredential::bearer(WALLET_TOKEN))
}

fn backend(
    channel: Channel,
    app: u64,
) -> TokenServiceClient<tonic::service::interceptor::InterceptedService<Channel, CallerCredential>>
{
    let credential = CallerCredential::basic(&Plan::app(app), &Plan::app_secret(app));
    TokenServiceClient::with_interceptor(channel, credential)
}

fn userinfo_backend(
    channel: Channel,
    app: u64,
) -> UserInfoServiceClient<tonic::service::interceptor::InterceptedService<Channel, CallerCredential>>
{
    let credential = CallerCredential::basic(&Plan::app(app), &Plan::app_secret(app));
    UserInfoServiceClient::with_interceptor(channel, credential)
}

/// RequestAuthorization as the wallet gateway, after a tap.
pub async fn request(
    channel: Channel,
    user: u64,
    app: u64,
    scopes: &[pb::Scope],
) -> Result<pb::request_authorization_response::Result, CallError> {
    let response = wallet(channel)
        .request_authorization(pb::RequestAuthorizationRequest {
            user_id: Plan::user(user),
            app_id: Plan::app(app),
            scopes: scopes.iter().map(|s| *s as i32).collect(),
            trigger: pb::Trigger::UserTap as i32,
        })
        .await
        .map_err(|s| failed("RequestAuthorization", &s))?;
    response
        .into_inner()
        .result
        .ok_or_else(|| "RequestAuthorization: no result".to_owned())
}

fn consent_token(grant: pb::Grant) -> Result<String, CallError> {
    match grant.credential {
        Some(pb::grant::Credential::ConsentToken(t)) if !t.is_empty() => Ok(t),
        other => Err(format!("expected a consent token, got {other:?}")),
    }
}

fn auth_code(grant: pb::Grant) -> Result<String, CallError> {
    match grant.credential {
        Some(pb::grant::Credential::AuthCode(c)) if !c.is_empty() => Ok(c),
        other => Err(format!("expected an auth code, got {other:?}")),
    }
}

async fn resolve_allow(
    channel: Channel,
    prompt_id: String,
    user: u64,
) -> Result<pb::Grant, CallError> {
    let response = wallet(channel)
        .resolve_prompt(pb::ResolvePromptRequest {
            prompt_id,
            user_id: Plan::user(user),
            decision: pb::Decision::Allow as i32,
        })
        .await
        .map_err(|s| failed("ResolvePrompt", &s))?;
    match response.into_inner().result {
        Some(pb::resolve_prompt_response::Result::Grant(g)) => Ok(g),
        other => Err(format!("ResolvePrompt: expected a grant, got {other:?}")),
    }
}

/// ExchangeAuthCode as the app's backend: the access token, checked to carry the phone scope.
pub async fn exchange(channel: Channel, app: u64, code: String) -> Result<String, CallError> {
    let response = backend(channel, app)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .map_err(|s| failed("ExchangeAuthCode", &s))?
        .into_inner();
    if response.access_token.is_empty()
        || response.refresh_token.is_empty()
        || response.user_id.is_empty()
        || !response.scopes.contains(&(pb::Scope::PhoneNumber as i32))
    {
        return Err("ExchangeAuthCode: incomplete answer".to_owned());
    }
    Ok(response.access_token)
}

async fn phone(channel: Channel, app: u64, user: u64, token: String) -> Result<(), CallError> {
    let response = userinfo_backend(channel, app)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: token,
        })
        .await
        .map_err(|s| failed("GetPhoneNumber", &s))?;
    if response.into_inner().phone_number != Plan::phone(user) {
        return Err("GetPhoneNumber: another user's number".to_owned());
    }
    Ok(())
}

/// A counter over a pool of single-use rows: the next index, or an error once used up.
fn next(counter: &AtomicU64, pool: u64) -> Result<u64, CallError> {
    let k = counter.fetch_add(1, Ordering::Relaxed);
    if k >= pool {
        return Err(format!(
            "pool of {pool} used up: run shorter or raise --pool-rate"
        ));
    }
    Ok(k)
}

/// The call of scenario `key`.
pub fn call(key: &str, targets: &Targets, plan: Plan, minted: &Arc<Minted>) -> Option<Call> {
    let counter = Arc::new(AtomicU64::new(0));
    let t = targets.clone();
    let minted = minted.clone();
    Some(match key {
        "echo" | "echo-balanced" => {
            let channels = if key == "echo" {
                t.echo
            } else {
                t.echo_balanced?
            };
            Arc::new(move |i| {
                let channel = pick(&channels, i);
                Box::pin(async move {
                    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map_err(|s| failed("Check", &s))?;
                    if answer.into_inner().status != 1 {
                        return Err("Check: not SERVING".to_owned());
                    }
                    Ok(())
                })
            })
        }
        "authorize-prompt" | "authorize-silent" => {
            let silent = key == "authorize-silent";
            Arc::new(move |i| {
                let (channel, k) = (pick(&t.auth, i), counter.fetch_add(1, Ordering::Relaxed));
                Box::pin(async move {
                    let user = plan.spread(k);
                    let app = if silent {
                        plan.granted_app(user)
                    } else {
                        plan.ungranted_app(user, 1)
                    };
                    match (
                        request(channel, user, app, &[pb::Scope::UserInfo]).await?,
                        silent,
                    ) {
                        (pb::request_authorization_response::Result::Grant(g), true) => {
                            consent_token(g).map(drop)
                        }
                        (pb::request_authorization_response::Result::Prompt(p), false)
                            if !p.prompt_id.is_empty() =>
                        {
                            Ok(())
                        }
                        (other, _) => Err(format!("RequestAuthorization: unexpected {other:?}")),
                    }
                })
            })
        }
        "resolve-allow" => Arc::new(move |i| {
            let channel = pick(&t.auth, i);
            let k = next(&counter, plan.prompts);
            Box::pin(async move {
                let k = k?;
                let grant = resolve_allow(channel, secret("prompt", k), plan.pool_user(k)).await?;
                consent_token(grant).map(drop)
            })
        }),
        "exchange" => Arc::new(move |i| {
            let channel = pick(&t.auth, i);
            let k = next(&counter, plan.codes);
            Box::pin(async move {
                let k = k?;
                let app = plan.granted_app(plan.pool_user(k));
                exchange(channel, app, secret("code", k)).await.map(drop)
            })
        }),
        "refresh" => {
            let chains: Arc<Vec<Mutex<String>>> = Arc::new(
                (0..plan.chains)
                    .map(|c| Mutex::new(secret("chain refresh", c)))
                    .collect(),
            );
            Arc::new(move |i| {
                let channel = pick(&t.auth, i);
                let chains = chains.clone();
                Box::pin(async move {
                    let slot = chains.get(i).ok_or("more callers than refresh chains")?;
                    let token = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let app = plan.granted_app(plan.pool_user(i as u64));
                    let response = backend(channel, app)
                        .refresh_access_token(pb::RefreshAccessTokenRequest {
                            refresh_token: token,
                        })
                        .await
                        .map_err(|s| failed("RefreshAccessToken", &s))?
                        .into_inner();
                    if response.access_token.is_empty() || response.refresh_token.is_empty() {
                        return Err("RefreshAccessToken: incomplete answer".to_owned());
                    }
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = response.refresh_token;
                    Ok(())
                })
            })
        }
        "introspect" => Arc::new(move |i| {
            let channel = pick(&t.auth, i);
            let k = counter.fetch_add(1, Ordering::Relaxed) as usize;
            let minted = minted.clone();
            Box::pin(async move {
                let (_, app, token) = minted
                    .access
                    .get(k % minted.access.len().max(1))
                    .ok_or("no access tokens")?;
                let response = backend(channel, *app)
                    .introspect_token(pb::IntrospectTokenRequest {
                        token: token.clone(),
                    })
                    .await
                    .map_err(|s| failed("IntrospectToken", &s))?
                    .into_inner();
                if !response.active || response.app_id != Plan::app(*app) {
                    return Err("IntrospectToken: a live token reported inactive".to_owned());
                }
                Ok(())
            })
        }),
        "revoke" => Arc::new(move |i| {
            let channel = pick(&t.auth, i);
            let k = next(&counter, plan.revokes);
            Box::pin(async move {
                let k = k?;
                let app = plan.granted_app(plan.pool_user(k));
                backend(channel, app)
                    .revoke_token(pb::RevokeTokenRequest {
                        token: secret("revoke refresh", k),
                    })
                    .await
                    .map_err(|s| failed("RevokeToken", &s))?;
                Ok(())
            })
        }),
        "userinfo-cached" | "userinfo-uncached" | "userinfo-cold" => {
            let cold = key == "userinfo-cold";
            let channels = if key == "userinfo-uncached" {
                t.userinfo_uncached?
            } else {
                t.userinfo
            };
            Arc::new(move |i| {
                let channel = pick(&channels, i);
                let k = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let minted = minted.clone();
                Box::pin(async move {
                    let tokens = if cold { &minted.cold } else { &minted.consent };
                    let (user, token) = tokens
                        .get(k % tokens.len().max(1))
                        .ok_or("no consent tokens")?;
                    let response = UserInfoServiceClient::new(channel)
                        .get_open_user_info(upb::GetOpenUserInfoRequest {
                            consent_token: token.clone(),
                        })
                        .await
                        .map_err(|s| failed("GetOpenUserInfo", &s))?
                        .into_inner();
                    if response.nick_name != Plan::nick(*user) || response.country_code != "CN" {
                        return Err("GetOpenUserInfo: another user's profile".to_owned());
                    }
                    Ok(())
                })
            })
        }
        "phone" => Arc::new(move |i| {
            let channel = pick(&t.userinfo, i);
            let k = counter.fetch_add(1, Ordering::Relaxed) as usize;
            let minted = minted.clone();
            Box::pin(async move {
                let (user, app, token) = minted
                    .access
                    .get(k % minted.access.len().max(1))
                    .ok_or("no access tokens")?;
                phone(channel, *app, *user, token.clone()).await
            })
        }),
        "flow" => Arc::new(move |i| {
            let (auth, userinfo) = (pick(&t.auth, i), pick(&t.userinfo, i));
            let n = counter.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                let user = plan.spread(n);
                let app = (user / 10 + 2 + n / plan.users) % plan.apps;
                let scopes = [pb::Scope::PhoneNumber];
                let grant = match request(auth.clone(), user, app, &scopes).await? {
                    pb::request_authorization_response::Result::Prompt(p) => {
                        resolve_allow(auth.clone(), p.prompt_id, user).await?
                    }
                    pb::request_authorization_response::Result::Grant(g) => g,
                };
                let token = exchange(auth, app, auth_code(grant)?).await?;
                phone(userinfo, app, user, token).await
            })
        }),
        _ => return None,
    })
}

/// Mints the tokens the read scenarios present: consent tokens by silent re-grants (the
/// first `consent` for the cached scenarios, then `cold` more) and access tokens by
/// exchanging the setup codes, `width` calls at a time.
pub async fn mint(targets: &Targets, plan: Plan, consent: u64, cold: u64, width: usize) -> Minted {
    let mut tasks = tokio::task::JoinSet::new();
    let per = move |n: u64, w: u64| (w..n).step_by(width);
    for w in 0..width as u64 {
        let auth = pick(&targets.auth, w as usize);
        tasks.spawn(async move {
            let mut made = (Vec::new(), Vec::new());
            for k in per(consent + cold, w) {
                let user = plan.spread(k);
                let app = plan.granted_app(user);
                match request(auth.clone(), user, app, &[pb::Scope::UserInfo]).await {
                    Ok(pb::request_authorization_response::Result::Grant(g)) => {
                        let token = consent_token(g).expect("a consent token");
                        made.0.push((k, (user, token)));
                    }
                    other => panic!("a silent re-grant for the setup: {other:?}"),
                }
            }
            for k in per(plan.setup_codes, w) {
                let user = plan.pool_user(k);
                let app = plan.granted_app(user);
                let token = exchange(auth.clone(), app, secret("setup", k))
                    .await
                    .unwrap_or_else(|e| panic!("exchange a setup code: {e}"));
                made.1.push((user, app, token));
            }
            made
        });
    }
    let mut minted = Minted {
        consent: Vec::new(),
        cold: Vec::new(),
        access: Vec::new(),
    };
    let mut all = Vec::new();
    while let Some(made) = tasks.join_next().await {
        let (tokens, access) = made.expect("a setup task");
        all.extend(tokens);
        minted.access.extend(access);
    }
    let (first, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|(k, _)| *k < consent);
    minted.consent = first.into_iter().map(|(_, t)| t).collect();
    minted.cold = rest.into_iter().map(|(_, t)| t).collect();
    minted
}
