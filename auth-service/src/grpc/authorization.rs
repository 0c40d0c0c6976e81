//! AuthorizationService: the wallet gateway's consent-flow calls.

use std::sync::Arc;

use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::Clock;
use pb::authorization_service_server::AuthorizationService;
use tonic::{Request, Response, Status};

use super::{purposes_to_proto, scopes_from_proto, scopes_to_proto, timestamp};
use crate::consent::{
    AuthorizationOutcome, AuthorizationSummary, ConsentFlow, Decision, Grant, GrantCredential,
    PromptOutcome, Trigger,
};
use crate::error::AuthError;
use crate::model::{ConsentEvent, ConsentRecord};
use crate::privacy::PrivacyRecords;

/// Records per ListConsentRecords page when the caller does not say, and at most.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 500;

/// Serves AuthorizationService over the consent flow and the user's privacy records.
pub struct AuthorizationGrpc {
    pub flow: ConsentFlow,
    pub records: PrivacyRecords,
    pub clock: Arc<dyn Clock>,
}

fn trigger_to_proto(trigger: Option<Trigger>) -> pb::Trigger {
    match trigger {
        Some(Trigger::UserTap) => pb::Trigger::UserTap,
        Some(Trigger::AppLaunch) => pb::Trigger::AppLaunch,
        None => pb::Trigger::Unspecified,
    }
}

fn record_to_proto(r: ConsentRecord) -> pb::ConsentRecord {
    let event = match r.event {
        ConsentEvent::Prompted => pb::ConsentEvent::Prompted,
        ConsentEvent::Granted => pb::ConsentEvent::Granted,
        ConsentEvent::Denied => pb::ConsentEvent::Denied,
        ConsentEvent::Withdrawn => pb::ConsentEvent::Withdrawn,
        ConsentEvent::VoidedByFeatureChange => pb::ConsentEvent::VoidedByFeatureChange,
        ConsentEvent::VoidedByErasure => pb::ConsentEvent::VoidedByErasure,
        ConsentEvent::VoidedByNewDeclaration => pb::ConsentEvent::VoidedByNewDeclaration,
    };
    pb::ConsentRecord {
        record_id: r.record_id.to_string(),
        app_id: r.app_id,
        event: event as i32,
        scopes: scopes_to_proto(r.scopes),
        trigger: trigger_to_proto(r.trigger) as i32,
        purposes: purposes_to_proto(r.purposes),
        declaration_version: r.declaration_version,
        record_time: Some(timestamp(r.recorded_at)),
    }
}

fn authorization_to_proto(a: AuthorizationSummary) -> pb::Authorization {
    pb::Authorization {
        app_id: a.app_id,
        app_display_name: a.app_display_name,
        scopes: scopes_to_proto(a.scopes),
        grant_time: Some(timestamp(a.granted_at)),
    }
}

/// A page token: the record id the next page starts below, as this service wrote it.
fn page_start(token: &str) -> Result<u64, AuthError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix('r')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or(AuthError::InvalidArgument {
            field: "page_token",
            problem: "is not a page token from a previous response",
        })
}

fn page_size(requested: i32) -> Result<u32, AuthError> {
    match u32::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) if n <= MAX_PAGE_SIZE => Ok(n),
        _ => Err(AuthError::InvalidArgument {
            field: "page_size",
            problem: "must be 0 to 500",
        }),
    }
}

/// The grant on the wire, counted in `tokens_issued_total` by what it carries.
fn grant_to_proto(grant: Grant, rpc: &'static str) -> pb::Grant {
    metrics::counter!("consent_outcomes_total", "outcome" => "granted").increment(1);
    let (kind, credential) = match grant.credential {
        GrantCredential::ConsentToken(t) => ("consent", pb::grant::Credential::ConsentToken(t)),
        GrantCredential::AuthCode(c) => (
            "auth_code",
            pb::grant::Credential::AuthCode(c.into_string()),
        ),
    };
    metrics::counter!("tokens_issued_total", "kind" => kind, "rpc" => rpc).increment(1);
    pb::Grant {
        scopes: scopes_to_proto(grant.scopes),
        expire_time: Some(timestamp(grant.expires_at)),
        credential: Some(credential),
    }
}

#[tonic::async_trait]
impl AuthorizationService for AuthorizationGrpc {
    async fn request_authorization(
        &self,
        request: Request<pb::RequestAuthorizationRequest>,
    ) -> Result<Response<pb::RequestAuthorizationResponse>, Status> {
        let req = request.into_inner();
        let trigger = match pb::Trigger::try_from(req.trigger) {
            Ok(pb::Trigger::UserTap) => Trigger::UserTap,
            Ok(pb::Trigger::AppLaunch) => Trigger::AppLaunch,
            Ok(pb::Trigger::Unspecified) | Err(_) => {
                return Err(AuthError::InvalidArgument {
                    field: "trigger",
                    problem: "must be TRIGGER_USER_TAP or TRIGGER_APP_LAUNCH",
                }
                .into());
            }
        };
        let scopes = scopes_from_proto(&req.scopes)?;
        let outcome = self
            .flow
            .request(&req.user_id, &req.app_id, scopes, trigger, self.clock.now())
            .await?;
        let result = match outcome {
            AuthorizationOutcome::Prompt(p) => {
                metrics::counter!("consent_outcomes_total", "outcome" => "prompted").increment(1);
                pb::request_authorization_response::Result::Prompt(pb::Prompt {
                    prompt_id: p.prompt_id.into_string(),
                    app_display_name: p.app_display_name,
                    scopes: scopes_to_proto(p.scopes),
                    previously_denied: p.previously_denied,
                    expire_time: Some(timestamp(p.expires_at)),
                    purposes: purposes_to_proto(p.purposes),
                    declaration_version: p.declaration_version,
                })
            }
            AuthorizationOutcome::Grant(g) => pb::request_authorization_response::Result::Grant(
                grant_to_proto(g, "RequestAuthorization"),
            ),
        };
        Ok(Response::new(pb::RequestAuthorizationResponse {
            result: Some(result),
        }))
    }

    async fn resolve_prompt(
        &self,
        request: Request<pb::ResolvePromptRequest>,
    ) -> Result<Response<pb::ResolvePromptResponse>, Status> {
        let req = request.into_inner();
        let decision = match pb::Decision::try_from(req.decision) {
            Ok(pb::Decision::Allow) => Decision::Allow,
            Ok(pb::Decision::Deny) => Decision::Deny,
            Ok(pb::Decision::Unspecified) | Err(_) => {
                return Err(AuthError::InvalidArgument {
                    field: "decision",
                    problem: "must be DECISION_ALLOW or DECISION_DENY",
                }
                .into());
            }
        };
        let outcome = self
            .flow
            .resolve(&req.prompt_id, &req.user_id, decision, self.clock.now())
            .await?;
        let result = match outcome {
            PromptOutcome::Grant(g) => {
                pb::resolve_prompt_response::Result::Grant(grant_to_proto(g, "ResolvePrompt"))
            }
            PromptOutcome::Denial { scopes } => {
                metrics::counter!("consent_outcomes_total", "outcome" => "denied").increment(1);
                pb::resolve_prompt_response::Result::Denial(pb::Denial {
                    scopes: scopes_to_proto(scopes),
                    may_ask_again: true,
                })
            }
        };
        Ok(Response::new(pb::ResolvePromptResponse {
            result: Some(result),
        }))
    }

    async fn list_authorizations(
        &self,
        request: Request<pb::ListAuthorizationsRequest>,
    ) -> Result<Response<pb::ListAuthorizationsResponse>, Status> {
        let req = request.into_inner();
        let authorizations = self
            .flow
            .list(&req.user_id)
            .await?
            .into_iter()
            .map(authorization_to_proto)
            .collect();
        Ok(Response::new(pb::ListAuthorizationsResponse {
            authorizations,
        }))
    }

    async fn revoke_authorization(
        &self,
        request: Request<pb::RevokeAuthorizationRequest>,
    ) -> Result<Response<pb::RevokeAuthorizationResponse>, Status> {
        let req = request.into_inner();
        let scopes = scopes_from_proto(&req.scopes)?;
        let (revoked, remaining) = self
            .flow
            .withdraw(&req.user_id, &req.app_id, scopes, self.clock.as_ref())
            .await?;
        Ok(Response::new(pb::RevokeAuthorizationResponse {
            revoked_scopes: scopes_to_proto(revoked),
            remaining_scopes: scopes_to_proto(remaining),
        }))
    }

    async fn list_consent_records(
        &self,
        request: Request<pb::ListConsentRecordsRequest>,
    ) -> Result<Response<pb::ListConsentRecordsResponse>, Status> {
        let req = request.into_inner();
        let (before, size) = (page_start(&req.page_token)?, page_size(req.page_size)?);
        let app_id = Some(req.app_id.as_str()).filter(|a| !a.is_empty());
        let page = self
            .records
            .records(&req.user_id, app_id, before, size)
            .await?;
        Ok(Response::new(pb::ListConsentRecordsResponse {
            records: page.records.into_iter().map(record_to_proto).collect(),
            next_page_token: page
                .next_before
                .map(|n| format!("r{n}"))
                .unwrap_or_default(),
        }))
    }

    async fn export_user_authorizations(
        &self,
        request: Request<pb::ExportUserAuthorizationsRequest>,
    ) -> Result<Response<pb::ExportUserAuthorizationsResponse>, Status> {
        let req = request.into_inner();
        let export = self.records.export(&req.user_id).await?;
        Ok(Response::new(pb::ExportUserAuthorizationsResponse {
            authorizations: export
                .authorizations
                .into_iter()
                .map(authorization_to_proto)
                .collect(),
            consent_records: export.records.into_iter().map(record_to_proto).collect(),
            consent_records_truncated: export.records_truncated,
            app_scoped_user_ids: export
                .app_user_ids
                .into_iter()
                .map(|(app_id, user_id, disclosed)| pb::AppScopedUserId {
                    app_id,
                    user_id,
                    disclosed,
                })
                .collect(),
        }))
    }

    async fn erase_user_authorizations(
        &self,
        request: Request<pb::EraseUserAuthorizationsRequest>,
    ) -> Result<Response<pb::EraseUserAuthorizationsResponse>, Status> {
        let req = request.into_inner();
        let ended = self
            .records
            .erase(&req.user_id, self.clock.as_ref())
            .await?;
        tracing::info!(authorizations_ended = ended, "user's authorizations erased");
        Ok(Response::new(pb::EraseUserAuthorizationsResponse {
            authorizations_ended: i32::try_from(ended).unwrap_or(i32::MAX),
        }))
    }
}
