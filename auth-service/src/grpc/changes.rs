//! AuthorizationChangeService: app backends learn which of their authorizations ended.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use miniprogram_proto::auth::v1 as pb;
use pb::authorization_change_service_server::AuthorizationChangeService;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::tokens::AppCallers;
use super::{scopes_to_proto, timestamp};
use crate::error::AuthError;
use crate::model::{AuthorizationChange, ChangeReason, ChangeSubject};
use crate::privacy::{AuthorizationChanges, ChangeItem};

/// Changes per ListAuthorizationChanges page when the caller does not say.
const DEFAULT_PAGE_SIZE: u32 = 100;

/// Serves AuthorizationChangeService: each app sees only its own feed.
pub struct ChangeGrpc {
    pub changes: AuthorizationChanges,
    pub apps: AppCallers,
    pub heartbeat: Duration,
    /// Cancelled when the server drains, so open streams end instead of holding it up.
    pub draining: tokio_util::sync::CancellationToken,
}

fn change_to_proto(c: AuthorizationChange) -> pb::AuthorizationChange {
    let reason = match c.reason {
        ChangeReason::Withdrawn => pb::AuthorizationChangeReason::Withdrawn,
        ChangeReason::FeatureDisabled => pb::AuthorizationChangeReason::FeatureDisabled,
        ChangeReason::Erased => pb::AuthorizationChangeReason::Erased,
        ChangeReason::DeclarationReplaced => pb::AuthorizationChangeReason::DeclarationReplaced,
    };
    let subject = match c.subject {
        ChangeSubject::AppUserId(id) => pb::authorization_change::Subject::UserId(id),
        ChangeSubject::Grant(id) => pb::authorization_change::Subject::GrantId(id),
    };
    pb::AuthorizationChange {
        sequence: c.sequence,
        reason: reason as i32,
        scopes: scopes_to_proto(c.scopes),
        subject: Some(subject),
        change_time: Some(timestamp(c.changed_at)),
    }
}

type ChangeStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchAuthorizationChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuthorizationChangeService for ChangeGrpc {
    async fn list_authorization_changes(
        &self,
        request: Request<pb::ListAuthorizationChangesRequest>,
    ) -> Result<Response<pb::ListAuthorizationChangesResponse>, Status> {
        let app = self.apps.app(&request).await?;
        let req = request.into_inner();
        let limit = match u32::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) if n <= crate::privacy::MAX_CHANGES_PAGE => n,
            _ => {
                return Err(AuthError::InvalidArgument {
                    field: "page_size",
                    problem: "must be 0 to 1000",
                }
                .into());
            }
        };
        let changes = self
            .changes
            .list(&app.app_id, req.after_sequence, limit)
            .await?;
        let last_sequence = changes.last().map_or(req.after_sequence, |c| c.sequence);
        Ok(Response::new(pb::ListAuthorizationChangesResponse {
            changes: changes.into_iter().map(change_to_proto).collect(),
            last_sequence,
        }))
    }

    type WatchAuthorizationChangesStream = ChangeStream;

    async fn watch_authorization_changes(
        &self,
        request: Request<pb::WatchAuthorizationChangesRequest>,
    ) -> Result<Response<Self::WatchAuthorizationChangesStream>, Status> {
        let app = self.apps.app(&request).await?;
        let after = request.into_inner().after_sequence;
        let clock = self.apps.clock.clone();
        let draining = self.draining.clone();
        let rx = self.changes.watch(&app, after, self.heartbeat, draining)?;
        let stream = ReceiverStream::new(rx).map(move |item| {
            let mut response = pb::WatchAuthorizationChangesResponse {
                server_time: Some(timestamp(clock.now())),
                ..Default::default()
            };
            match item? {
                ChangeItem::Change(c) => response.change = Some(change_to_proto(c)),
                ChangeItem::Heartbeat => response.heartbeat = true,
            }
            Ok(response)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
