//! System endpoints: `/_ping`, `/version`, `/info`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiError;
use crate::version::{API_VERSION, ApiVersion, MIN_API_VERSION, version_error};

pub use berth_models::system::{Component, DataUsage, Info, Version};

/// What the system endpoints need from the engine.
pub trait System: Send + Sync {
    fn version(&self) -> Result<Version, ApiError>;
    fn info(&self) -> Result<Info, ApiError>;
    /// `GET /system/df`: disk usage of images, containers (and volumes, build cache) in
    /// Docker's shape. It walks writable layers: called off the runtime's workers.
    fn df(&self) -> Result<DataUsage, ApiError>;
}

/// The `/version` answer for this build, filled in by whatever backend serves it.
pub fn base_version(kernel: &str) -> Version {
    let v = env!("CARGO_PKG_VERSION").to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Version {
        platform: serde_json::json!({"Name": "berth"}),
        components: vec![Component {
            name: "Engine".into(),
            version: v.clone(),
            details: serde_json::json!({"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": arch}),
        }],
        version: v,
        api_version: API_VERSION.into(),
        min_api_version: MIN_API_VERSION.into(),
        git_commit: String::new(),
        go_version: String::new(),
        os: "linux".into(),
        arch: arch.into(),
        kernel_version: kernel.into(),
        build_time: String::new(),
    }
}

async fn ping() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // Not in a swarm; builds go to the classic builder's `/build` (no BuildKit sessions).
            (header::HeaderName::from_static("swarm"), "inactive"),
            (header::HeaderName::from_static("builder-version"), "1"),
        ],
        "OK",
    )
}

async fn version(State(s): State<Arc<dyn System>>) -> Result<Json<Version>, ApiError> {
    s.version().map(Json)
}

async fn info(State(s): State<Arc<dyn System>>) -> Result<Json<Info>, ApiError> {
    s.info().map(Json)
}

async fn df(State(s): State<Arc<dyn System>>, req: axum::extract::Request) -> Result<Json<serde_json::Value>, ApiError> {
    let df =
        tokio::task::spawn_blocking(move || s.df()).await.map_err(|e| ApiError::new(crate::error::Kind::Internal, e.to_string()))??;
    Ok(Json(crate::version::shape::system_df(ApiVersion::of(&req), &df)))
}

/// Docker endpoints whose features berth does not have yet: a clear 501, not a 404 that reads
/// like a wrong URL. (Paths berth serves are routed before these.)
const NOT_YET: &[(&str, &str)] =
    &[("/swarm/init", "swarm mode"), ("/swarm/join", "swarm mode"), ("/plugins", "plugins"), ("/session", "BuildKit sessions")];

/// dockerd's answers where it is not in a swarm (503, so clients tell "no swarm" apart from a
/// failure: the docker CLI's `inspect` skips swarm objects on it, and clients leaving a swarm
/// in their clean-up go on).
const NOT_A_MANAGER: &str =
    "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
const NOT_IN_A_SWARM: &str = "This node is not part of a swarm";
const SWARM: &[(&str, &str)] = &[
    ("/swarm", NOT_A_MANAGER),
    ("/swarm/leave", NOT_IN_A_SWARM),
    ("/swarm/{*rest}", NOT_A_MANAGER),
    ("/services", NOT_A_MANAGER),
    ("/services/{*rest}", NOT_A_MANAGER),
    ("/nodes", NOT_A_MANAGER),
    ("/nodes/{*rest}", NOT_A_MANAGER),
    ("/tasks", NOT_A_MANAGER),
    ("/tasks/{*rest}", NOT_A_MANAGER),
    ("/secrets", NOT_A_MANAGER),
    ("/secrets/{*rest}", NOT_A_MANAGER),
    ("/configs", NOT_A_MANAGER),
    ("/configs/{*rest}", NOT_A_MANAGER),
];

/// Objects that cannot exist yet: an inspect (`GET` of `<prefix>/{name}<suffix>`) is Docker's
/// 404 (the docker CLI's `inspect` probes every kind of object and says "No such object" only
/// when each answered 404); everything else under the prefix is not implemented.
fn absent(what: &'static str, suffix: &'static str, message: fn(&str) -> String) -> axum::routing::MethodRouter {
    axum::routing::any(
        move |method: axum::http::Method, axum::extract::Path(rest): axum::extract::Path<String>, body: axum::body::Body| async move {
            drain(body).await;
            match rest.strip_suffix(suffix) {
                Some(name) if method == axum::http::Method::GET && !name.is_empty() && !name.contains('/') => {
                    ApiError::new(crate::error::Kind::NotFound, message(name))
                }
                _ => ApiError::not_implemented(what),
            }
        },
    )
}

/// Read and drop what a request sends before answering it without looking (up to 16 MiB): an
/// answer sent while the client still writes its body, then the connection closed, reached the
/// docker CLI as "broken pipe" instead of the answer (`docker network create` did, at random).
async fn drain(body: axum::body::Body) {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let mut read = 0usize;
    while read < 16 << 20 {
        match data.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
}

pub fn not_yet_routes() -> axum::Router {
    let r = NOT_YET.iter().fold(Router::new(), |r, (path, what)| {
        r.route(
            path,
            axum::routing::any(move |body: axum::body::Body| async move {
                drain(body).await;
                ApiError::not_implemented(what)
            }),
        )
    });
    let r = SWARM.iter().fold(r, |r, (path, message)| {
        r.route(
            path,
            axum::routing::any(move |body: axum::body::Body| async move {
                drain(body).await;
                ApiError::new(crate::error::Kind::Unavailable, *message)
            }),
        )
    });
    r.route("/plugins/{*rest}", absent("plugins", "/json", |n| format!("plugin \"{n}\" not found")))
}

pub fn routes(system: Arc<dyn System>) -> axum::Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/system/df", get(df))
        .route("/__berth_version_error", axum::routing::any(version_error))
        .with_state(system)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backends, app};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    struct Fake;
    impl System for Fake {
        fn version(&self) -> Result<Version, ApiError> {
            Ok(base_version("6.0"))
        }
        fn info(&self) -> Result<Info, ApiError> {
            Ok(Info { name: "host".into(), ..Default::default() })
        }
        fn df(&self) -> Result<DataUsage, ApiError> {
            Ok(DataUsage::default())
        }
    }

    async fn call(method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let svc = app(Backends {
            system: Arc::new(Fake),
            containers: Arc::new(crate::testing::Null),
            images: Arc::new(crate::testing::Null),
            networks: Arc::new(crate::testing::Null),
            volumes: Arc::new(crate::testing::Null),
            builds: Arc::new(crate::testing::Null),
            events: Arc::new(crate::testing::Null),
        });
        let res = svc.oneshot(Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, json)
    }

    #[tokio::test]
    async fn ping_and_version_answer_with_and_without_a_prefix() {
        let (s, h, body) = call("GET", "/_ping").await;
        assert_eq!((s, body), (StatusCode::OK, serde_json::json!("OK")));
        assert_eq!(h["api-version"], "1.50");
        assert_eq!((h["swarm"].to_str().unwrap(), h["builder-version"].to_str().unwrap()), ("inactive", "1"));
        assert_eq!(call("HEAD", "/v1.24/_ping").await.0, StatusCode::OK);
        let (s, _, v) = call("GET", "/v1.41/version").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["ApiVersion"], "1.50", "the daemon's newest, whichever the client asked for");
        assert_eq!(v["MinAPIVersion"], "1.24");
        assert_eq!(call("GET", "/info").await.2["Name"], "host");
    }

    #[tokio::test]
    async fn unknown_paths_and_bad_versions_get_dockers_errors() {
        let (s, _, body) = call("GET", "/v1.41/nothing/here").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(body, serde_json::json!({"message": "page not found"}));
        let (s, _, body) = call("GET", "/v1.44/swarm").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["message"].as_str().unwrap().starts_with("This node is not a swarm manager."));
        assert_eq!(call("GET", "/services/x").await.0, StatusCode::SERVICE_UNAVAILABLE);
        let (s, _, body) = call("POST", "/swarm/leave?force=1").await;
        assert_eq!((s, body), (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"message": "This node is not part of a swarm"})));
        assert_eq!(call("POST", "/swarm/init").await.0, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(call("GET", "/plugins/p/json").await.0, StatusCode::NOT_FOUND);
        assert_eq!(call("POST", "/plugins/pull").await.0, StatusCode::NOT_IMPLEMENTED);
        let (s, _, body) = call("GET", "/v1.99/version").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().contains("too new"));
    }
}
