//! Image endpoints. Image names may contain slashes (`/images/registry:5000/a/b:tag/json`), so
//! everything under `/images/` goes through one route that looks at the last segment.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, Kind};
use berth_models::images::{DeleteItem, HistoryItem, ImageInspect, ImageSummary, PruneResponse};
use berth_models::messages::JsonMessage;
use berth_models::system::{AuthConfig, AuthResponse};

use crate::params::{ByteStream, Filters, Query, body_stream};
use crate::version::{ApiVersion, shape};

/// What the image endpoints need from the engine.
#[async_trait::async_trait]
pub trait Images: Send + Sync {
    async fn list(&self, all: bool, filters: Filters, digests: bool) -> Result<Vec<ImageSummary>, ApiError>;
    async fn inspect(&self, name: &str) -> Result<ImageInspect, ApiError>;
    async fn history(&self, name: &str) -> Result<Vec<HistoryItem>, ApiError>;
    async fn tag(&self, name: &str, repo: &str, tag: &str) -> Result<(), ApiError>;
    /// Docker's list of `{"Untagged": …}` / `{"Deleted": …}`.
    async fn remove(&self, name: &str, force: bool, noprune: bool) -> Result<Vec<DeleteItem>, ApiError>;
    /// A root filesystem tar becomes an image with the config `changes` (Dockerfile
    /// instructions) make; returns its ID.
    async fn import(
        &self,
        body: ByteStream,
        repo: Option<String>,
        tag: Option<String>,
        message: String,
        changes: Vec<String>,
    ) -> Result<String, ApiError>;
    /// A Docker/OCI archive of the named images.
    async fn save(&self, names: Vec<String>) -> Result<ByteStream, ApiError>;
    /// Loads an archive; returns the names (or IDs) loaded.
    async fn load(&self, body: ByteStream) -> Result<Vec<String>, ApiError>;
    /// Pull `image` (with `tag`: a tag, or a digest) for `platform` (`os/arch[/variant]`).
    /// Failures to resolve the image come back here, before any progress (dockerd answers
    /// them with a status); later ones end the stream with an error message.
    async fn pull(
        &self,
        image: &str,
        tag: Option<&str>,
        platform: Option<&str>,
        auth: Option<AuthConfig>,
    ) -> Result<MessageStream, ApiError>;
    /// Push the local image `name:tag` (every tag of `name` when `tag` is None) to its
    /// registry. A missing local image comes back here; later failures inside the stream.
    async fn push(&self, name: &str, tag: Option<&str>, auth: Option<AuthConfig>) -> Result<MessageStream, ApiError>;
    /// `GET /distribution/{name}/json`: the registry's descriptor and platforms for `name`.
    async fn distribution(&self, name: &str, auth: Option<AuthConfig>)
    -> Result<berth_models::distribution::DistributionInspect, ApiError>;
    /// `GET /images/search` on Docker Hub's index or the registry the term names.
    async fn search(&self, term: &str, limit: u32) -> Result<Vec<berth_models::images::SearchResult>, ApiError>;
    /// `POST /auth`: check credentials with the registry they name (`docker login`).
    async fn login(&self, auth: AuthConfig) -> Result<AuthResponse, ApiError>;
    async fn prune(&self, filters: Filters) -> Result<PruneResponse, ApiError>;
}

type Backend = Arc<dyn Images>;

/// Progress messages as they happen (pull, push).
pub type MessageStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = JsonMessage> + Send>>;

/// A streamed progress answer: one JSON message per line, sent as each comes.
pub(crate) fn message_stream(stream: MessageStream) -> Response {
    use futures_util::StreamExt;
    let body = stream.map(|m| {
        let mut line = serde_json::to_vec(&m).unwrap_or_default();
        line.extend_from_slice(b"\r\n");
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response()
}

/// `X-Registry-Auth`: base64url (padded or not) JSON credentials, as the docker CLI and SDKs
/// send them. Missing or empty is anonymous; garbage is refused as dockerd refuses it.
pub fn registry_auth<B>(req: &Request<B>) -> Result<Option<AuthConfig>, ApiError> {
    use base64::Engine as _;
    let Some(raw) = req.headers().get("X-Registry-Auth").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let trimmed = raw.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| ApiError::new(Kind::InvalidArgument, "invalid X-Registry-Auth header: not base64"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) || bytes == b"{}" || bytes == b"null" {
        return Ok(None);
    }
    berth_models::decode::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("invalid X-Registry-Auth header: {e}")))
}

/// Progress answers (import, load) are newline-separated JSON messages.
fn messages(lines: Vec<JsonMessage>) -> Response {
    let mut body = String::new();
    for l in lines {
        body.push_str(&serde_json::to_string(&l).unwrap_or_default());
        body.push_str("\r\n");
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn dispatch(State(b): State<Backend>, Path(rest): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let method = req.method().clone();
    let version = ApiVersion::of(&req);
    let (name, action) = match rest.rsplit_once('/') {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => (String::new(), rest.clone()),
    };
    match (method, name.as_str(), action.as_str()) {
        (Method::GET, "", "json") => {
            let filters = q.filters()?;
            let list = b.list(q.bool("all"), filters, q.bool("digests")).await?;
            let mut list: Vec<Value> = list.iter().map(|i| serde_json::to_value(i).unwrap_or_default()).collect();
            list.iter_mut().for_each(|i| shape::image_summary(version, i));
            Ok(axum::Json(Value::Array(list)).into_response())
        }
        (Method::GET, "", "get") => save(b, q.all("names")).await,
        (Method::GET, n, "get") if !n.is_empty() => save(b, vec![n.to_string()]).await,
        (Method::GET, "", "search") => {
            let term =
                q.str("term").filter(|t| !t.is_empty()).ok_or_else(|| ApiError::new(Kind::InvalidArgument, "a search term is required"))?;
            let limit = q.int("limit")?.unwrap_or(25);
            if !(1..=100).contains(&limit) {
                return Err(ApiError::new(Kind::InvalidArgument, format!("limit {limit} is outside the range of [1, 100]")));
            }
            Ok(axum::Json(b.search(term, limit as u32).await?).into_response())
        }
        (Method::GET, n, "json") if !n.is_empty() => {
            let mut img = serde_json::to_value(b.inspect(n).await?).unwrap_or_default();
            shape::image_inspect(version, &mut img);
            Ok(axum::Json(img).into_response())
        }
        (Method::GET, n, "history") if !n.is_empty() => Ok(axum::Json(b.history(n).await?).into_response()),
        (Method::POST, "", "create") => {
            if let Some(image) = q.str("fromImage").filter(|i| !i.is_empty()) {
                let auth = registry_auth(&req)?;
                let tag = q.str("tag").filter(|t| !t.is_empty());
                let platform = q.str("platform").filter(|p| !p.is_empty());
                return Ok(message_stream(b.pull(image, tag, platform, auth).await?));
            }
            match q.str("fromSrc") {
                Some("-") => {}
                Some(_) => return Err(ApiError::not_implemented("importing from a URL")),
                None => return Err(ApiError::new(Kind::InvalidArgument, "fromImage or fromSrc is required")),
            }
            let changes = q.all("changes");
            let repo = q.str("repo").filter(|r| !r.is_empty()).map(str::to_string);
            let tag = q.str("tag").filter(|t| !t.is_empty()).map(str::to_string);
            // Docker's comment for an import without a message (the source is always `-` here).
            let message = q.str("message").filter(|m| !m.is_empty()).unwrap_or("Imported from -").to_string();
            let id = b.import(body_stream(req.into_body()), repo, tag, message, changes).await?;
            Ok(messages(vec![JsonMessage::status(id)]))
        }
        (Method::POST, "", "load") => {
            // dockerd answers 200 and reports a failure in the stream (SDKs raise it from there).
            let lines = match b.load(body_stream(req.into_body())).await {
                Ok(names) => names
                    .into_iter()
                    .map(|n| {
                        let what = if n.starts_with("sha256:") { "Loaded image ID" } else { "Loaded image" };
                        JsonMessage::stream(format!("{what}: {n}\n"))
                    })
                    .collect(),
                Err(e) => vec![JsonMessage::error(e.message)],
            };
            Ok(messages(lines))
        }
        (Method::POST, "", "prune") => Ok(axum::Json(b.prune(q.filters()?).await?).into_response()),
        (Method::POST, n, "tag") if !n.is_empty() => {
            let repo = q.str("repo").unwrap_or("");
            if repo.is_empty() {
                return Err(ApiError::new(Kind::InvalidArgument, "repository name must have at least one component"));
            }
            b.tag(n, repo, q.str("tag").filter(|t| !t.is_empty()).unwrap_or("latest")).await?;
            Ok(StatusCode::CREATED.into_response())
        }
        (Method::POST, n, "push") if !n.is_empty() => {
            let auth = registry_auth(&req)?;
            let tag = q.str("tag").filter(|t| !t.is_empty());
            Ok(message_stream(b.push(n, tag, auth).await?))
        }
        (Method::DELETE, _, _) => Ok(axum::Json(b.remove(&rest, q.bool("force"), q.bool("noprune")).await?).into_response()),
        _ => Err(ApiError::new(Kind::NotFound, "page not found")),
    }
}

async fn save(b: Backend, names: Vec<String>) -> Result<Response, ApiError> {
    if names.is_empty() {
        return Err(ApiError::new(Kind::InvalidArgument, "no image names given"));
    }
    let stream = b.save(names).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], Body::from_stream(stream)).into_response())
}

async fn login(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("reading request body: {e}")))?;
    let auth: AuthConfig = crate::params::json_body(&body)?;
    Ok(axum::Json(b.login(auth).await?).into_response())
}

async fn distribution(State(b): State<Backend>, Path(rest): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let Some(name) = rest.strip_suffix("/json").filter(|n| !n.is_empty()) else {
        return Err(ApiError::new(Kind::NotFound, "page not found"));
    };
    let auth = registry_auth(&req)?;
    Ok(axum::Json(b.distribution(name, auth).await?).into_response())
}

pub fn routes(backend: Backend) -> Router {
    Router::new()
        .route("/distribution/{*rest}", axum::routing::get(distribution))
        .route("/images/{*rest}", axum::routing::any(dispatch))
        .route("/auth", axum::routing::post(login))
        .with_state(backend)
}
