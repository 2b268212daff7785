//! berth-api: the Docker Engine API over berth's backends. Routes take requests apart, call one
//! backend trait per API area, and turn results and error kinds into Docker's responses; this
//! crate knows nothing of how the engine stores things.

pub mod build;
pub mod containers;
pub mod error;
pub mod events;
pub mod images;
pub mod networks;
pub mod params;
pub mod server;
pub mod system;
#[cfg(test)]
mod testing;
pub mod version;
pub mod volumes;

use std::sync::Arc;

use axum::Router;
use axum::http::Request;
use tower::ServiceExt as _;

pub use error::{ApiError, Kind};
pub use system::{Info, System, Version};
pub use version::{API_VERSION, ApiVersion, MIN_API_VERSION};

/// Everything the API needs from the engine.
pub struct Backends {
    pub system: Arc<dyn System>,
    pub containers: Arc<dyn containers::Containers>,
    pub images: Arc<dyn images::Images>,
    pub networks: Arc<dyn networks::Networks>,
    pub volumes: Arc<dyn volumes::Volumes>,
    pub builds: Arc<dyn build::Builds>,
    pub events: Arc<dyn events::Events>,
}

/// The whole API as one service: `/v1.NN` prefixes are checked and stripped before routing
/// (a layer on the router would run after routing), unknown paths get Docker's 404.
pub fn app(
    backends: Backends,
) -> impl tower::Service<Request<axum::body::Body>, Response = axum::response::Response, Error = std::convert::Infallible, Future = impl Send>
+ Clone
+ Send {
    let router = Router::new()
        .merge(system::routes(backends.system))
        .merge(containers::routes(backends.containers))
        .merge(images::routes(backends.images))
        .merge(networks::routes(backends.networks))
        .merge(volumes::routes(backends.volumes))
        .merge(build::routes(backends.builds))
        .merge(events::routes(backends.events))
        .merge(system::not_yet_routes())
        .fallback(|| async { ApiError::new(Kind::NotFound, "page not found") });
    router.map_request(version::strip_prefix).map_request(log_request).map_response(version::add_headers)
}

/// Requests received so far (see [`requests_received`]).
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many requests the API has received, for a caller that acts when it has gone quiet.
pub fn requests_received() -> u64 {
    REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
}

fn log_request<B>(req: Request<B>) -> Request<B> {
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!("{} {}", req.method(), req.uri());
    req
}
