//! AppService: the platform console's registry calls.

use std::sync::Arc;

use miniprogram_proto::auth::v1 as pb;
use pb::app_service_server::AppService;
use tonic::{Request, Response, Status};

use super::{
    feature_from_proto, feature_to_proto, purposes_from_proto, purposes_to_proto, timestamp,
};
use miniprogram_token::Clock;

use crate::apps::AppRegistry;
use crate::consent::check_id;
use crate::error::AuthError;
use crate::model::{AppRecord, FeatureSet};

/// Serves AppService over the registry.
pub struct AppGrpc {
    pub registry: AppRegistry,
    pub clock: Arc<dyn Clock>,
}

pub(crate) fn app_to_proto(app: AppRecord) -> pb::App {
    pb::App {
        app_id: app.app_id,
        display_name: app.display_name,
        features: app
            .features
            .iter()
            .map(|f| feature_to_proto(f) as i32)
            .collect(),
        create_time: Some(timestamp(app.created_at)),
    }
}

#[tonic::async_trait]
impl AppService for AppGrpc {
    async fn create_app(
        &self,
        request: Request<pb::CreateAppRequest>,
    ) -> Result<Response<pb::CreateAppResponse>, Status> {
        let req = request.into_inner();
        if req.features.len() > 3 {
            return Err(AuthError::InvalidArgument {
                field: "features",
                problem: "lists at most three features",
            }
            .into());
        }
        let features = req
            .features
            .iter()
            .map(|f| feature_from_proto(*f))
            .collect::<Result<FeatureSet, _>>()?;
        let created = self
            .registry
            .create(&req.display_name, features, self.clock.now())
            .await?;
        tracing::info!(app_id = %created.app.app_id, "app created");
        Ok(Response::new(pb::CreateAppResponse {
            app: Some(app_to_proto(created.app)),
            app_secret: created.app_secret.into_string(),
        }))
    }

    async fn get_app(
        &self,
        request: Request<pb::GetAppRequest>,
    ) -> Result<Response<pb::GetAppResponse>, Status> {
        let req = request.into_inner();
        check_id("app_id", &req.app_id)?;
        let app = self.registry.get(&req.app_id).await?;
        Ok(Response::new(pb::GetAppResponse {
            app: Some(app_to_proto(app)),
        }))
    }

    async fn enable_feature(
        &self,
        request: Request<pb::EnableFeatureRequest>,
    ) -> Result<Response<pb::EnableFeatureResponse>, Status> {
        let req = request.into_inner();
        check_id("app_id", &req.app_id)?;
        let feature = feature_from_proto(req.feature)?;
        let app = self.registry.enable_feature(&req.app_id, feature).await?;
        tracing::info!(app_id = %app.app_id, ?feature, "feature enabled");
        Ok(Response::new(pb::EnableFeatureResponse {
            app: Some(app_to_proto(app)),
        }))
    }

    async fn disable_feature(
        &self,
        request: Request<pb::DisableFeatureRequest>,
    ) -> Result<Response<pb::DisableFeatureResponse>, Status> {
        let req = request.into_inner();
        check_id("app_id", &req.app_id)?;
        let feature = feature_from_proto(req.feature)?;
        let app = self
            .registry
            .disable_feature(&req.app_id, feature, self.clock.as_ref())
            .await?;
        tracing::info!(app_id = %app.app_id, ?feature, "feature disabled; its tokens are revoked");
        Ok(Response::new(pb::DisableFeatureResponse {
            app: Some(app_to_proto(app)),
        }))
    }

    async fn rotate_app_secret(
        &self,
        request: Request<pb::RotateAppSecretRequest>,
    ) -> Result<Response<pb::RotateAppSecretResponse>, Status> {
        let req = request.into_inner();
        check_id("app_id", &req.app_id)?;
        let secret = self.registry.rotate_secret(&req.app_id).await?;
        tracing::info!(app_id = %req.app_id, "app secret rotated");
        Ok(Response::new(pb::RotateAppSecretResponse {
            app_secret: secret.into_string(),
        }))
    }

    async fn set_privacy_declaration(
        &self,
        request: Request<pb::SetPrivacyDeclarationRequest>,
    ) -> Result<Response<pb::SetPrivacyDeclarationResponse>, Status> {
        let req = request.into_inner();
        check_id("app_id", &req.app_id)?;
        let purposes = purposes_from_proto(&req.purposes)?;
        let now = self.clock.now();
        let (app, purposes) = self
            .registry
            .set_privacy_declaration(&req.app_id, req.version, &purposes, now)
            .await?;
        tracing::info!(app_id = %app.app_id, version = app.declaration_version, "privacy declaration set");
        Ok(Response::new(pb::SetPrivacyDeclarationResponse {
            declaration: Some(pb::PrivacyDeclaration {
                version: app.declaration_version,
                purposes: purposes_to_proto(purposes),
                update_time: Some(timestamp(app.declared_at)),
            }),
        }))
    }
}
