use std::time::Duration;

use auth_service::testing::TestAuthServer;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use pb::request_authorization_response::Result as Outcome;
use pb::resolve_prompt_response::Result as Answer;
use tonic::Code;
use tonic_types::StatusExt;

use super::{
    ALL_FEATURES, app_with, auth_code, consent, consent_token, largest_while_calling, reason,
    request, resolve, revocation_log,
};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};
use pb::Trigger::{AppLaunch, UserTap};

/// A tap asking for `scopes` that must open a modal: its prompt.
async fn tap_for_prompt(
    server: &TestAuthServer,
    user_id: &str,
    app_id: &str,
    scopes: &[pb::Scope],
) -> pb::Prompt {
    match request(server, user_id, app_id, scopes, UserTap)
        .await
        .unwrap()
    {
        Outcome::Prompt(p) => p,
        other => panic!("expected prompt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_prompt_at_app_launch_is_refused() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    for scopes in [&[UserInfo][..], &[PhoneNumber], &[AuthBase, PhoneNumber]] {
        let err = request(&server, "u1", &app_id, scopes, AppLaunch)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::FailedPrecondition, ErrorReason::AuthorizationAtLaunch)
        );
    }
}

#[tokio::test]
async fn user_info_with_phone_or_auth_base_is_not_combinable() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    for scopes in [
        &[UserInfo, PhoneNumber][..],
        &[UserInfo, AuthBase],
        &[UserInfo, AuthBase, PhoneNumber],
    ] {
        let err = request(&server, "u1", &app_id, scopes, UserTap)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::InvalidArgument, ErrorReason::ScopesNotCombinable)
        );
    }
}

#[tokio::test]
async fn empty_unknown_or_huge_scope_lists_are_invalid_scope() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let mut wallet = server.wallet();
    for scopes in [vec![], vec![0], vec![99], vec![1; 10_000]] {
        let err = wallet
            .request_authorization(pb::RequestAuthorizationRequest {
                user_id: "u1".into(),
                app_id: app_id.clone(),
                scopes,
                trigger: UserTap as i32,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::InvalidScope);
    }
}

#[tokio::test]
async fn a_missing_feature_is_40006() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &[pb::Feature::UserAuthorization]).await;
    let err = request(&server, "u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::PermissionDenied,
            ErrorReason::InsufficientIsvPermissions
        )
    );
    let info = err.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata.get("jsapi_code").map(String::as_str),
        Some("40006")
    );
    assert_eq!(
        info.metadata.get("jsapi_sub_code").map(String::as_str),
        Some("isv.insufficient-isv-permissions")
    );
    let err = request(&server, "u1", &app_id, &[AuthBase, PhoneNumber], UserTap)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InsufficientIsvPermissions);
}

/// Guards the prompt's resolution inside the transaction that records the answer
/// (`ConsentFlow::resolve`): an answer refused because the feature was switched off after the
/// modal opened takes nothing, so once the feature is back the same prompt can be allowed.
#[tokio::test]
async fn an_answer_refused_for_a_switched_off_feature_leaves_the_prompt_open() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let prompt = tap_for_prompt(&server, "u1", &app_id, &[UserInfo]).await;
    let feature = pb::Feature::BasicUserInfo as i32;
    let mut admin = server.admin();
    let off = pb::DisableFeatureRequest {
        app_id: app_id.clone(),
        feature,
    };
    admin.disable_feature(off).await.unwrap();
    let err = resolve(&server, &prompt.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InsufficientIsvPermissions);
    let on = pb::EnableFeatureRequest {
        app_id: app_id.clone(),
        feature,
    };
    admin.enable_feature(on).await.unwrap();
    match resolve(&server, &prompt.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap()
    {
        Answer::Grant(g) => assert!(consent_token(&g).starts_with("v4.public.")),
        other => panic!("expected grant, got {other:?}"),
    }
}

#[tokio::test]
async fn auth_base_grants_at_once_even_at_launch() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    for trigger in [UserTap, AppLaunch] {
        match request(&server, "u1", &app_id, &[AuthBase], trigger)
            .await
            .unwrap()
        {
            Outcome::Grant(g) => {
                assert_eq!(g.scopes, vec![AuthBase as i32]);
                assert_eq!(auth_code(&g).len(), 43);
            }
            Outcome::Prompt(p) => panic!("auth_base prompted: {p:?}"),
        }
    }
}

#[tokio::test]
async fn tap_prompts_then_allow_grants_a_consent_token_and_the_next_request_grants_at_once() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let prompt = tap_for_prompt(&server, "u1", &app_id, &[UserInfo]).await;
    assert_eq!(prompt.app_display_name, "Test Mini Program");
    assert!(!prompt.previously_denied);
    let grant = match resolve(&server, &prompt.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap()
    {
        Answer::Grant(g) => g,
        other => panic!("expected grant, got {other:?}"),
    };
    let token = consent_token(&grant);
    assert!(token.starts_with("v4.public."));
    match request(&server, "u1", &app_id, &[UserInfo], AppLaunch)
        .await
        .unwrap()
    {
        Outcome::Grant(g) => assert_ne!(consent_token(&g), token),
        other => panic!("already granted scope prompted again: {other:?}"),
    }
}

#[tokio::test]
async fn deny_is_an_outcome_and_the_next_request_prompts_again_as_previously_denied() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let Outcome::Prompt(prompt) = request(&server, "u1", &app_id, &[PhoneNumber], UserTap)
        .await
        .unwrap()
    else {
        panic!("expected prompt");
    };
    match resolve(&server, &prompt.prompt_id, "u1", pb::Decision::Deny)
        .await
        .unwrap()
    {
        Answer::Denial(d) => {
            assert!(d.may_ask_again);
            assert_eq!(d.scopes, vec![PhoneNumber as i32]);
        }
        other => panic!("expected denial, got {other:?}"),
    }
    let Outcome::Prompt(again) = request(&server, "u1", &app_id, &[PhoneNumber], UserTap)
        .await
        .unwrap()
    else {
        panic!("a refusal must not be final");
    };
    assert!(again.previously_denied);
    assert_ne!(again.prompt_id, prompt.prompt_id);
    let Answer::Grant(g) = resolve(&server, &again.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap()
    else {
        panic!("expected grant");
    };
    assert_eq!(auth_code(&g).len(), 43);
}

#[tokio::test]
async fn a_prompt_is_single_use_and_bound_to_its_user() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let Outcome::Prompt(p) = request(&server, "u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap()
    else {
        panic!("expected prompt");
    };
    let err = resolve(&server, &p.prompt_id, "u2", pb::Decision::Allow)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, ErrorReason::PromptNotFound)
    );
    resolve(&server, &p.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap();
    let err = resolve(&server, &p.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, ErrorReason::PromptAlreadyResolved)
    );
    let err = resolve(&server, "garbage", "u1", pb::Decision::Allow)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::PromptNotFound);
    let err = resolve(&server, &p.prompt_id, "u1", pb::Decision::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
}

#[tokio::test]
async fn concurrent_answers_to_one_prompt_resolve_it_once() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let Outcome::Prompt(p) = request(&server, "u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap()
    else {
        panic!("expected prompt");
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut wallet = server.wallet();
        let id = p.prompt_id.clone();
        tasks.spawn(async move {
            wallet
                .resolve_prompt(pb::ResolvePromptRequest {
                    prompt_id: id,
                    user_id: "u1".into(),
                    decision: pb::Decision::Allow as i32,
                })
                .await
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(reason(&e), ErrorReason::PromptAlreadyResolved),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn an_expired_prompt_cannot_be_answered() {
    let server = TestAuthServer::start_with(|c| c.prompt_ttl = Duration::from_millis(50)).await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let Outcome::Prompt(p) = request(&server, "u1", &app_id, &[UserInfo], UserTap)
        .await
        .unwrap()
    else {
        panic!("expected prompt");
    };
    tokio::time::sleep(Duration::from_millis(80)).await;
    let err = resolve(&server, &p.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, ErrorReason::PromptExpired)
    );
}

#[tokio::test]
async fn revoking_prompts_again_voids_the_tokens_and_logs_a_revocation() {
    let server = TestAuthServer::start().await;
    let (app_id, secret) = app_with(&server, &ALL_FEATURES).await;
    let token = consent_token(&consent(&server, "u1", &app_id, &[UserInfo]).await);
    let code = auth_code(&consent(&server, "u1", &app_id, &[AuthBase, PhoneNumber]).await);
    let mut backend = server.backend(&app_id, &secret);
    let pair = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap()
        .into_inner();
    let introspect = |t: String| {
        let mut backend = backend.clone();
        async move {
            backend
                .introspect_token(pb::IntrospectTokenRequest { token: t })
                .await
                .unwrap()
                .into_inner()
                .active
        }
    };
    assert!(
        !introspect(token.clone()).await,
        "a consent token is never active to a backend"
    );
    assert!(introspect(pair.access_token.clone()).await);

    let listed = server.authorizations("u1").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].scopes.len(), 3);

    let revoked = server
        .wallet()
        .revoke_authorization(pb::RevokeAuthorizationRequest {
            user_id: "u1".into(),
            app_id: app_id.clone(),
            scopes: vec![UserInfo as i32],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked_scopes, vec![UserInfo as i32]);
    assert_eq!(
        revoked.remaining_scopes,
        vec![AuthBase as i32, PhoneNumber as i32]
    );
    let rules = revocation_log(&server).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        (
            rules[0].app_id.as_str(),
            rules[0].user_id.as_str(),
            rules[0].scopes.as_slice()
        ),
        (app_id.as_str(), "u1", [UserInfo as i32].as_slice()),
        "the withdrawal is logged for verifiers: it voids the consent token there"
    );
    assert!(
        introspect(pair.access_token.clone()).await,
        "phone token revoked with userInfo"
    );
    assert!(matches!(
        request(&server, "u1", &app_id, &[UserInfo], UserTap)
            .await
            .unwrap(),
        Outcome::Prompt(_)
    ));

    server.withdraw("u1", &app_id, &[]).await;
    assert!(!introspect(pair.access_token).await);
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);
    let listed = server.authorizations("u1").await;
    assert!(listed.is_empty());
}

#[tokio::test]
async fn bad_request_fields_are_invalid_argument_never_internal() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let huge = "x".repeat(1 << 15);
    for (user, app) in [
        ("", app_id.as_str()),
        (huge.as_str(), app_id.as_str()),
        ("u1", ""),
        ("u1", huge.as_str()),
        ("u\u{0}1", app_id.as_str()),
    ] {
        let err = request(&server, user, app, &[UserInfo], UserTap)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::InvalidArgument, ErrorReason::InvalidArgument)
        );
    }
    let err = request(
        &server,
        "u1",
        &app_id,
        &[UserInfo],
        pb::Trigger::Unspecified,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidArgument);
    let err = request(&server, "u1", "mp-unknown", &[UserInfo], UserTap)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::AppNotFound);
    let err = resolve(&server, &huge, "u1", pb::Decision::Allow)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::PromptNotFound);
}

#[tokio::test]
async fn denying_a_stale_second_modal_does_not_take_back_what_was_allowed() {
    let server = TestAuthServer::start().await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let prompt = |outcome| match outcome {
        Outcome::Prompt(p) => p,
        other => panic!("expected a prompt, got {other:?}"),
    };
    // A double tap opens two modals for the same scope.
    let first = prompt(
        request(&server, "u1", &app_id, &[UserInfo], UserTap)
            .await
            .unwrap(),
    );
    let second = prompt(
        request(&server, "u1", &app_id, &[UserInfo], UserTap)
            .await
            .unwrap(),
    );
    let Answer::Grant(_) = resolve(&server, &first.prompt_id, "u1", pb::Decision::Allow)
        .await
        .unwrap()
    else {
        panic!("expected grant");
    };
    let Answer::Denial(_) = resolve(&server, &second.prompt_id, "u1", pb::Decision::Deny)
        .await
        .unwrap()
    else {
        panic!("expected denial");
    };
    let listed = server.authorizations("u1").await;
    assert_eq!(listed.len(), 1, "the settings page still shows the grant");
    assert_eq!(listed[0].scopes, vec![UserInfo as i32]);
    assert!(
        matches!(
            request(&server, "u1", &app_id, &[UserInfo], AppLaunch)
                .await
                .unwrap(),
            Outcome::Grant(_)
        ),
        "still granted, so no modal is needed"
    );
}

/// Guards the bound in `ConsentFlow::ask` (`open_prompts` against
/// `PendingBounds::prompts_per_user`): with MAX_OPEN_PROMPTS_PER_USER at 2, a third request
/// that needs a modal while two are unanswered is refused with REQUEST_TRAFFIC_EXCEED_LIMIT and
/// writes nothing (no third `prompted` record); another user and another app still get theirs,
/// and once one is answered the user is asked again.
#[tokio::test]
async fn a_users_unanswered_prompts_for_an_app_are_bounded() {
    let server = TestAuthServer::start_with(|c| c.pending_bounds.prompts_per_user = 2).await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    let (other_app, _) = app_with(&server, &ALL_FEATURES).await;
    let first = tap_for_prompt(&server, "u1", &app_id, &[PhoneNumber]).await;
    tap_for_prompt(&server, "u1", &app_id, &[PhoneNumber]).await;
    let refused = request(&server, "u1", &app_id, &[PhoneNumber], UserTap)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused)),
        (
            Code::ResourceExhausted,
            ErrorReason::RequestTrafficExceedLimit
        )
    );
    let records = server
        .wallet()
        .list_consent_records(pb::ListConsentRecordsRequest {
            user_id: "u1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(
        records.len(),
        2,
        "the refused request wrote a record: {records:?}"
    );
    tap_for_prompt(&server, "u2", &app_id, &[PhoneNumber]).await;
    tap_for_prompt(&server, "u1", &other_app, &[PhoneNumber]).await;
    resolve(&server, &first.prompt_id, "u1", pb::Decision::Deny)
        .await
        .unwrap();
    tap_for_prompt(&server, "u1", &app_id, &[PhoneNumber]).await;
}

/// Guards the pair's turn in `Pools::begin_locked`, through which `ConsentFlow` opens the
/// transactions that count or evict what waits for a user and an app
/// (`AuthStore::begin_holding_pending`): on PostgreSQL, 64 concurrent RequestAuthorization
/// calls of one user to one app for 2 s, silent ones each issuing a code, then taps each
/// needing a prompt, wait for their turn in the process, not each in a transaction that holds
/// one of the pool's 16 connections while it waits on the pair's advisory lock; sampled from
/// `pg_locks`, at most one transaction waits on that lock at once. Without the turn, 15 did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_one_users_requests_wait_for_their_turn_outside_the_pool() {
    let url = sql_backend::testing::fresh_schema_url("pending_turns").await;
    let server = TestAuthServer::start_with(|c| c.database_url = url).await;
    let (app_id, _) = app_with(&server, &ALL_FEATURES).await;
    for (scopes, trigger) in [(AuthBase, AppLaunch), (PhoneNumber, UserTap)] {
        let most = most_waiting_on_the_pair(&server, &app_id, scopes, trigger).await;
        assert!(
            most <= 1,
            "{most} of the pair's transactions waited on its lock at once ({scopes:?})"
        );
    }
}

/// 64 callers send RequestAuthorization of user u1 to `app_id` over and over for 2 s (each
/// answered, or refused past the bound of open prompts): the most PostgreSQL transactions
/// that waited on the pair's advisory lock at once meanwhile.
async fn most_waiting_on_the_pair(
    server: &TestAuthServer,
    app_id: &str,
    scope: pb::Scope,
    trigger: pb::Trigger,
) -> i64 {
    // Waiting advisory locks of the pending class ("pend"), most on one key.
    let waiting = "SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n
                   FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND classid = 1885695588 GROUP BY objid) w";
    let (wallet, app_id) = (server.wallet(), app_id.to_owned());
    let call = move || {
        let (mut wallet, app_id) = (wallet.clone(), app_id.clone());
        async move {
            let request = pb::RequestAuthorizationRequest {
                user_id: "u1".into(),
                app_id,
                scopes: vec![scope as i32],
                trigger: trigger as i32,
            };
            if let Err(status) = wallet.request_authorization(request).await {
                assert_eq!(reason(&status), ErrorReason::RequestTrafficExceedLimit);
            }
        }
    };
    largest_while_calling(call, waiting).await
}
