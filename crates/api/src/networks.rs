//! Network endpoints: `/networks` (list, inspect, create, remove, connect, disconnect, prune).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_models::networks::{
    Network, NetworkConnectRequest, NetworkCreateRequest, NetworkCreateResponse, NetworkDisconnectRequest, NetworkPruneResponse,
};

use crate::error::{ApiError, Kind};
use crate::params::{Filters, Query};

/// What the network endpoints need from the engine.
#[async_trait::async_trait]
pub trait Networks: Send + Sync {
    async fn list(&self, filters: Filters) -> Result<Vec<Network>, ApiError>;
    async fn inspect(&self, id: &str) -> Result<Network, ApiError>;
    async fn create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError>;
    async fn remove(&self, id: &str) -> Result<(), ApiError>;
    async fn connect(&self, id: &str, req: NetworkConnectRequest) -> Result<(), ApiError>;
    async fn disconnect(&self, id: &str, req: NetworkDisconnectRequest) -> Result<(), ApiError>;
    async fn prune(&self, filters: Filters) -> Result<NetworkPruneResponse, ApiError>;
}

type Backend = Arc<dyn Networks>;

async fn body<T: serde::de::DeserializeOwned>(req: Request<Body>) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("reading request body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_str("{}").map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(Kind::InvalidArgument, format!("invalid JSON: {e}")))
}

async fn list(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.list(Query::parse(req.uri()).filters()?).await?).into_response())
}

async fn inspect(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.inspect(&id).await?).into_response())
}

async fn create(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let r: NetworkCreateRequest = body(req).await?;
    Ok((StatusCode::CREATED, axum::Json(b.create(r).await?)).into_response())
}

async fn remove(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    b.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn connect(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let r: NetworkConnectRequest = body(req).await?;
    b.connect(&id, r).await?;
    Ok(StatusCode::OK.into_response())
}

async fn disconnect(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let r: NetworkDisconnectRequest = body(req).await?;
    b.disconnect(&id, r).await?;
    Ok(StatusCode::OK.into_response())
}

async fn prune(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.prune(Query::parse(req.uri()).filters()?).await?).into_response())
}

pub fn routes(b: Backend) -> Router {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .with_state(b)
}
