//! AuthorizationService: the wallet gateway's consent-flow calls.

use std::sync::Arc;

use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::Clock;
use pb::authorization_service_server::AuthorizationService;
use tonic::{Request, Response, Status};

use super::{scopes_from_proto, scopes_to_proto, timestamp};
use crate::consent::{
    AuthorizationOutcome, ConsentFlow, Decision, Grant, GrantCredential, PromptOutcome, Trigger,
};
use crate::error::AuthError;

/// Serves AuthorizationService over the consent flow.
pub struct AuthorizationGrpc {
    pub flow: ConsentFlow,
    pub clock: Arc<dyn Clock>,
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
            .map(|a| pb::Authorization {
                app_id: a.app_id,
                app_display_name: a.app_display_name,
                scopes: scopes_to_proto(a.scopes),
                grant_time: Some(timestamp(a.granted_at)),
            })
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
}
