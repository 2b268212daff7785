//! Build endpoints: `POST /build` (the legacy builder's: a tar context in the body, the
//! options in the query, Docker's stream of JSON messages back) and `POST /build/prune`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Kind};
use crate::images::MessageStream;
use crate::params::{ByteStream, Filters, Query, body_stream};
use berth_models::build::BuildPruneResponse;

/// A build's options, from `/build`'s query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildOptions {
    /// `t`, repeated: the names the image gets.
    pub tags: Vec<String>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// `q`: only the image ID (or, on failure, everything) is sent.
    pub quiet: bool,
    /// `networkmode` for RUN steps: `default`/`bridge`, `none` or `host`.
    pub network: Option<String>,
    /// `rm` (default true) and `forcerm`: remove RUN's containers after success, or always.
    pub rm: bool,
    pub force_rm: bool,
    pub cache_from: Vec<String>,
    pub platform: Option<String>,
    /// `pull`: pull base images even when present.
    pub pull: bool,
    /// `berthcontext` (berth's own): the body holds what changed in the context the daemon
    /// keeps under this key since the last build (see `docs/build.md`).
    pub context_key: Option<String>,
}

/// A context key: 64 lower-case hex digits.
pub fn valid_context_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BuildOptions {
    /// Docker's query parameters (JSON maps for `buildargs` and `labels`, a JSON list for
    /// `cachefrom`), checked.
    pub fn from_query(q: &Query) -> Result<BuildOptions, ApiError> {
        let bad = |k: &str, e: String| ApiError::new(Kind::InvalidArgument, format!("invalid {k}: {e}"));
        let json_map = |k: &str| -> Result<BTreeMap<String, Option<String>>, ApiError> {
            match q.str(k).filter(|v| !v.is_empty()) {
                None => Ok(BTreeMap::new()),
                Some(v) => serde_json::from_str(v).map_err(|e| bad(k, e.to_string())),
            }
        };
        if let Some(v) = q.str("version").filter(|v| !v.is_empty() && *v != "1") {
            return Err(ApiError::new(
                Kind::InvalidArgument,
                format!("builder version {v:?} (BuildKit) is not supported: berth runs the classic builder (version 1)"),
            ));
        }
        if q.str("remote").is_some_and(|r| !r.is_empty()) {
            return Err(ApiError::not_implemented("remote build contexts (a URL or a git repository)"));
        }
        let cache_from = match q.str("cachefrom").filter(|v| !v.is_empty()) {
            None => Vec::new(),
            Some(v) => serde_json::from_str(v).map_err(|e| bad("cachefrom", e.to_string()))?,
        };
        Ok(BuildOptions {
            tags: q.all("t").into_iter().filter(|t| !t.is_empty()).collect(),
            dockerfile: q.str("dockerfile").filter(|d| !d.is_empty()).unwrap_or("Dockerfile").to_string(),
            // A null value is an argument given without one (`--build-arg NAME` with NAME unset).
            build_args: json_map("buildargs")?.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect(),
            labels: json_map("labels")?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect(),
            target: q.str("target").filter(|t| !t.is_empty()).map(str::to_string),
            no_cache: q.bool("nocache"),
            quiet: q.bool("q"),
            network: q.str("networkmode").filter(|n| !n.is_empty()).map(str::to_string),
            rm: q.str("rm").is_none_or(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")),
            force_rm: q.bool("forcerm"),
            cache_from,
            platform: q.str("platform").filter(|p| !p.is_empty()).map(str::to_string),
            pull: q.bool("pull"),
            context_key: match q.str("berthcontext").filter(|k| !k.is_empty()) {
                None => None,
                Some(k) if valid_context_key(k) => Some(k.to_string()),
                Some(k) => return Err(bad("berthcontext", format!("{k:?} is not 64 hex digits"))),
            },
        })
    }
}

/// What the build endpoints need from the engine.
#[async_trait::async_trait]
pub trait Builds: Send + Sync {
    /// Build from the context tar `context`. What is wrong before anything runs (the
    /// context, the Dockerfile's syntax, the stages) comes back here, as dockerd answers it
    /// with a status; what fails later ends the stream with an error message.
    async fn build(&self, opts: BuildOptions, context: ByteStream) -> Result<MessageStream, ApiError>;
    /// Forget the build cache (`all`, or what `filters` select) and remove what it alone kept.
    async fn prune(&self, all: bool, filters: Filters) -> Result<BuildPruneResponse, ApiError>;
    /// The manifest of the context kept under `key` (path → what the client said it was);
    /// empty when there is none.
    async fn context_manifest(&self, key: &str) -> Result<serde_json::Value, ApiError>;
}

type Backend = Arc<dyn Builds>;

async fn build(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let opts = BuildOptions::from_query(&q)?;
    let stream = b.build(opts, body_stream(req.into_body())).await?;
    Ok(crate::images::message_stream(stream))
}

async fn prune(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let filters = q.filters()?;
    // `label` comes with `system prune --filter label=…` (the docker CLI passes its filters on).
    filters.only(&["until", "unused-for", "id", "parent", "type", "description", "inuse", "shared", "private", "label", "label!"])?;
    let r = b.prune(q.bool("all"), filters).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], axum::Json(r)).into_response())
}

async fn manifest(State(b): State<Backend>, axum::extract::Path(key): axum::extract::Path<String>) -> Result<Response, ApiError> {
    if !valid_context_key(&key) {
        return Err(ApiError::new(Kind::InvalidArgument, format!("invalid context key {key:?}")));
    }
    Ok(axum::Json(b.context_manifest(&key).await?).into_response())
}

pub fn routes(backend: Backend) -> Router {
    Router::new()
        .route("/build", axum::routing::post(build))
        .route("/build/prune", axum::routing::post(prune))
        .route("/berth/build/context/{key}", axum::routing::get(manifest))
        .with_state(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(&format!("/build?{s}").parse().unwrap())
    }

    #[test]
    fn options_as_docker_sends_them() {
        let o = BuildOptions::from_query(&q(
            "t=a:1&t=b&dockerfile=sub%2FD&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&labels=%7B%22l%22%3A%22v%22%7D&nocache=1&q=true&rm=0&networkmode=none&cachefrom=%5B%22x%22%5D",
        ))
        .unwrap();
        assert_eq!(o.tags, ["a:1", "b"]);
        assert_eq!(o.dockerfile, "sub/D");
        assert_eq!(o.build_args, HashMap::from([("A".to_string(), "1".to_string())]));
        assert_eq!(o.labels, BTreeMap::from([("l".to_string(), "v".to_string())]));
        assert!(o.no_cache && o.quiet && !o.rm);
        assert_eq!((o.network.as_deref(), o.cache_from.clone()), (Some("none"), vec!["x".to_string()]));
        let d = BuildOptions::from_query(&q("")).unwrap();
        assert_eq!((d.dockerfile.as_str(), d.rm, d.quiet), ("Dockerfile", true, false));
        assert!(BuildOptions::from_query(&q("buildargs=nope")).is_err());
        assert!(BuildOptions::from_query(&q("version=2")).is_err());
        assert_eq!(BuildOptions::from_query(&q("remote=http://x/")).unwrap_err().kind, Kind::NotImplemented);
        let key = "ab".repeat(32);
        assert_eq!(BuildOptions::from_query(&q(&format!("berthcontext={key}"))).unwrap().context_key, Some(key));
        assert!(BuildOptions::from_query(&q("berthcontext=../x")).is_err());
    }
}
