//! Volume endpoints: `/volumes` (list, inspect, create, remove, prune).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_models::volumes::{Volume, VolumeCreateRequest, VolumeListResponse, VolumePruneResponse};

use crate::error::{ApiError, Kind};
use crate::params::{Filters, Query};

/// What the volume endpoints need from the engine.
#[async_trait::async_trait]
pub trait Volumes: Send + Sync {
    async fn list(&self, filters: Filters) -> Result<VolumeListResponse, ApiError>;
    async fn inspect(&self, name: &str) -> Result<Volume, ApiError>;
    async fn create(&self, req: VolumeCreateRequest) -> Result<Volume, ApiError>;
    async fn remove(&self, name: &str, force: bool) -> Result<(), ApiError>;
    async fn prune(&self, filters: Filters) -> Result<VolumePruneResponse, ApiError>;
}

type Backend = Arc<dyn Volumes>;

async fn list(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.list(Query::parse(req.uri()).filters()?).await?).into_response())
}

async fn inspect(State(b): State<Backend>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.inspect(&name).await?).into_response())
}

async fn create(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("reading request body: {e}")))?;
    let r: VolumeCreateRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        VolumeCreateRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::new(Kind::InvalidArgument, format!("invalid JSON: {e}")))?
    };
    Ok((StatusCode::CREATED, axum::Json(b.create(r).await?)).into_response())
}

async fn remove(State(b): State<Backend>, Path(name): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    b.remove(&name, Query::parse(req.uri()).bool("force")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn prune(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.prune(Query::parse(req.uri()).filters()?).await?).into_response())
}

pub fn routes(b: Backend) -> Router {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
        .with_state(b)
}
