//! Container and exec endpoints: the backend trait and the routes; the request models are
//! berth-models' (re-exported here). Inspect and list answers are built by the backend in
//! Docker's shape.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
pub use berth_models::stats::ContainerStats;

use crate::error::{ApiError, Kind};
use crate::params::{ByteStream, Filters, Io, Query, hijack, json_body, stream_type};
use crate::version::{ApiVersion, shape};

pub use berth_models::containers::*;

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub all: bool,
    pub limit: Option<i64>,
    pub size: bool,
    pub filters: Filters,
}

#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Unix seconds (fractions allowed), 0 for none.
    pub since: f64,
    pub until: f64,
    pub timestamps: bool,
    /// `--details`: each line's attributes before it (berth's json-file records none, so a
    /// space, as Docker prints for a line without attributes).
    pub details: bool,
    /// None: all lines.
    pub tail: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub stream: bool,
    pub logs: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub detach_keys: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// What the container endpoints need from the engine.
#[async_trait::async_trait]
pub trait Containers: Send + Sync {
    async fn create(&self, name: Option<String>, body: CreateBody) -> Result<CreateResponse, ApiError>;
    async fn inspect(&self, id: &str, size: bool) -> Result<ContainerInspect, ApiError>;
    async fn list(&self, opts: ListOptions) -> Result<Vec<ContainerSummary>, ApiError>;
    /// `Ok(false)`: it was already running (304).
    async fn start(&self, id: &str) -> Result<bool, ApiError>;
    /// `Ok(false)`: it was not running (304).
    async fn stop(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<bool, ApiError>;
    async fn restart(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<(), ApiError>;
    async fn kill(&self, id: &str, signal: Option<String>) -> Result<(), ApiError>;
    /// One sample of the container's resource usage in Docker's stats shape, without
    /// `precpu_stats` (the route fills it from the sample before).
    async fn stats(&self, id: &str) -> Result<ContainerStats, ApiError>;
    /// Freeze every process of the container (`docker pause`), and thaw them.
    async fn pause(&self, id: &str) -> Result<(), ApiError>;
    async fn unpause(&self, id: &str) -> Result<(), ApiError>;
    /// Checks the container now; the returned future resolves when the condition is met
    /// (the response's headers go out at once, as Docker's clients expect).
    async fn wait(&self, id: &str, condition: WaitCondition) -> Result<futures_util::future::BoxFuture<'static, WaitResponse>, ApiError>;
    async fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<(), ApiError>;
    /// `POST /containers/prune`: remove the containers that are not running (filters `until`,
    /// `label`, `label!`); Docker's `ContainerPruneResponse`.
    async fn prune(&self, filters: Filters) -> Result<PruneResponse, ApiError>;
    /// Whether the container has a TTY (raw output) and its log as a stream.
    async fn logs(&self, id: &str, opts: LogsOptions) -> Result<(bool, ByteStream), ApiError>;
    /// Checks before the connection is hijacked; returns whether the container has a TTY.
    async fn attach_check(&self, id: &str) -> Result<bool, ApiError>;
    async fn attach(&self, id: String, opts: AttachOptions, io: Io);
    async fn resize(&self, id: &str, height: u16, width: u16) -> Result<(), ApiError>;
    async fn top(&self, id: &str, ps_args: Option<String>) -> Result<TopResponse, ApiError>;
    /// `diff`: what the container's writable layer changed.
    async fn changes(&self, id: &str) -> Result<Vec<ChangeItem>, ApiError>;
    /// `export`: the container's merged filesystem as a tar (volumes and binds not in it).
    async fn export(&self, id: &str) -> Result<ByteStream, ApiError>;
    /// `HEAD /containers/{id}/archive`: what is at `path` in the container.
    async fn archive_stat(&self, id: &str, path: &str) -> Result<PathStat, ApiError>;
    /// `GET /containers/{id}/archive`: what is at `path`, and its tar.
    async fn archive_get(&self, id: &str, path: &str) -> Result<(PathStat, ByteStream), ApiError>;
    /// `PUT /containers/{id}/archive`: unpack the tar `body` into the directory at `opts.path`.
    async fn archive_put(&self, id: &str, opts: ArchivePut, body: ByteStream) -> Result<(), ApiError>;
    /// `commit`: the container's writable layer as a new image; returns its ID.
    async fn commit(&self, opts: CommitOptions) -> Result<String, ApiError>;
    async fn rename(&self, id: &str, name: &str) -> Result<(), ApiError>;
    /// `update`: the body's resources (a zero leaves a value as it is) and restart policy;
    /// returns Docker's warnings.
    async fn update(&self, id: &str, update: HostConfig) -> Result<Vec<String>, ApiError>;
    async fn exec_create(&self, id: &str, config: ExecConfig) -> Result<String, ApiError>;
    /// Checks before `exec_start` hijacks; returns whether the exec has a TTY.
    async fn exec_check(&self, exec_id: &str) -> Result<bool, ApiError>;
    /// Detached when `io` is None. `raw`: the output goes out as is, not in multiplexed frames
    /// (the start request's `Tty`, which need not be the exec's: Docker frames a TTY's output
    /// when the start asks for `Tty: false`).
    async fn exec_start(&self, exec_id: String, io: Option<Io>, raw: bool) -> Result<(), ApiError>;
    async fn exec_inspect(&self, exec_id: &str) -> Result<ExecInspect, ApiError>;
    async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> Result<(), ApiError>;
}

/// `PUT /containers/{id}/archive`'s parameters.
#[derive(Debug, Clone, Default)]
pub struct ArchivePut {
    pub path: String,
    /// Refuse to replace a directory by a non-directory or the other way round.
    pub no_overwrite_dir_non_dir: bool,
    /// Everything owned by the container's user (`docker cp -a`).
    pub copy_uid_gid: bool,
}

/// `POST /commit`'s parameters.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub container: String,
    pub repo: Option<String>,
    pub tag: Option<String>,
    pub comment: String,
    pub author: String,
    pub pause: bool,
    /// Dockerfile instructions applied to the config (`--change`).
    pub changes: Vec<String>,
    /// The request's body: a container config whose set fields override the container's.
    pub config: Option<serde_json::Value>,
}

type Backend = Arc<dyn Containers>;

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn json(v: impl serde::Serialize) -> Response {
    axum::Json(v).into_response()
}

async fn body_bytes(req: Request<Body>) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), 4 << 20)
        .await
        .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("reading request body: {e}")))
}

async fn create(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let name = q.str("name").filter(|n| !n.is_empty()).map(str::to_string);
    let version = ApiVersion::of(&req);
    let mut body: CreateBody = json_body(&body_bytes(req).await?)?;
    if let Some(hc) = body.host_config.as_mut()
        && !version.before(42)
    {
        // 1.42 ignores `KernelMemory` (the kernel dropped it).
        hc.kernel_memory = None;
    }
    Ok((StatusCode::CREATED, axum::Json(b.create(name, body).await?)).into_response())
}

async fn list(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let mut limit = q.int("limit")?.filter(|n| *n > 0);
    if q.bool("latest") {
        limit = Some(1);
    }
    let opts = ListOptions { all: q.bool("all"), limit, size: q.bool("size"), filters: q.filters()? };
    Ok(axum::Json(b.list(opts).await?).into_response())
}

async fn inspect(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let mut ctr = b.inspect(&id, Query::parse(req.uri()).bool("size")).await?;
    shape::container_inspect(ApiVersion::of(&req), &mut ctr);
    Ok(json(ctr))
}

async fn start(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(if b.start(&id).await? { no_content() } else { StatusCode::NOT_MODIFIED.into_response() })
}

fn stop_params(req: &Request<Body>) -> Result<(Option<String>, Option<i64>), ApiError> {
    let q = Query::parse(req.uri());
    // `signal` came with 1.42; older clients' requests do not have it.
    let signal = q.str("signal").filter(|s| !s.is_empty() && !ApiVersion::of(req).before(42));
    Ok((signal.map(str::to_string), q.int("t")?))
}

async fn stop(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let (signal, t) = stop_params(&req)?;
    Ok(if b.stop(&id, signal, t).await? { no_content() } else { StatusCode::NOT_MODIFIED.into_response() })
}

async fn restart(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let (signal, t) = stop_params(&req)?;
    b.restart(&id, signal, t).await?;
    Ok(no_content())
}

async fn kill(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    b.kill(&id, q.str("signal").filter(|s| !s.is_empty()).map(str::to_string)).await?;
    Ok(no_content())
}

async fn wait(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let condition = match q.str("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => return Err(ApiError::new(Kind::InvalidArgument, format!("invalid condition: {other:?}"))),
    };
    let done = b.wait(&id, condition).await?;
    let body = futures_util::stream::once(async move {
        let mut line = serde_json::to_string(&done.await).unwrap_or_default();
        line.push('\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

/// Docker collects statistics once a second.
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The span of `stream=0`'s two samples. dockerd answers with its collector's next sample, a
/// second or more later; the CPU figures have nanosecond resolution (the cgroup's usage, and
/// the host's CPU time from a monotonic clock), so a tenth of a second measures as well.
const NO_STREAM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// `stream` (default): a sample a second, each with the one before as `precpu_stats`;
/// `stream=0`: one sample with the one 100 ms before (what `docker stats --no-stream` shows);
/// `one-shot=1` with it: one sample at once, no `precpu_stats`.
async fn stats(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let stream = q.str("stream").is_none_or(|_| q.bool("stream"));
    let mut first = b.stats(&id).await?;
    if !stream {
        if !q.bool("one-shot") {
            tokio::time::sleep(NO_STREAM_INTERVAL).await;
            let next = b.stats(&id).await?;
            first = next.with_previous(&first);
        }
        return Ok(json(first));
    }
    let body = futures_util::stream::unfold(Some((b, id, first, None::<ContainerStats>)), |state| async move {
        let (b, id, current, previous) = state?;
        let current = match previous {
            Some(p) => current.with_previous(&p),
            None => current,
        };
        let mut line = serde_json::to_vec(&current).unwrap_or_default();
        line.push(b'\n');
        tokio::time::sleep(STATS_INTERVAL).await;
        // The container went away: this line is the last.
        let next = b.stats(&id).await.ok().map(|n| (b, id, n, Some(current)));
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(line)), next))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

async fn pause(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    b.pause(&id).await?;
    Ok(no_content())
}

async fn unpause(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    b.unpause(&id).await?;
    Ok(no_content())
}

async fn prune(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.prune(Query::parse(req.uri()).filters()?).await?).into_response())
}

async fn remove(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    if q.bool("link") {
        return Err(ApiError::not_implemented("removing links"));
    }
    b.remove(&id, q.bool("force"), q.bool("v")).await?;
    Ok(no_content())
}

/// `since`/`until` as Docker takes them: Unix seconds with an optional fraction.
fn unix_time(q: &Query, k: &str) -> Result<f64, ApiError> {
    match q.str(k).filter(|v| !v.is_empty()) {
        None => Ok(0.0),
        Some(v) => v.parse::<f64>().map_err(|_| ApiError::new(Kind::InvalidArgument, format!("invalid value for {k}: {v:?}"))),
    }
}

async fn logs(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let tail = match q.str("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(n.parse::<i64>().map_err(|_| ApiError::new(Kind::InvalidArgument, format!("invalid tail: {n:?}")))?.max(0) as usize),
    };
    let opts = LogsOptions {
        follow: q.bool("follow"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        since: unix_time(&q, "since")?,
        until: unix_time(&q, "until")?,
        timestamps: q.bool("timestamps"),
        details: q.bool("details"),
        tail,
    };
    if !opts.stdout && !opts.stderr {
        return Err(ApiError::new(Kind::InvalidArgument, "Bad parameters: you must choose at least one stream"));
    }
    let (tty, stream) = b.logs(&id, opts).await?;
    Ok(([(header::CONTENT_TYPE, stream_type(tty))], Body::from_stream(stream)).into_response())
}

async fn attach(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let opts = AttachOptions {
        stream: q.bool("stream"),
        logs: q.bool("logs"),
        stdin: q.bool("stdin"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        detach_keys: q.str("detachKeys").filter(|k| !k.is_empty()).map(str::to_string),
    };
    let tty = b.attach_check(&id).await?;
    Ok(hijack(req, tty, move |io| async move { b.attach(id, opts, io).await }))
}

fn size(q: &Query) -> Result<(u16, u16), ApiError> {
    let h = q.int("h")?.unwrap_or(0);
    let w = q.int("w")?.unwrap_or(0);
    let ok = |v: i64| u16::try_from(v).map_err(|_| ApiError::new(Kind::InvalidArgument, format!("invalid terminal size {v}")));
    Ok((ok(h)?, ok(w)?))
}

async fn resize(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let (h, w) = size(&Query::parse(req.uri()))?;
    b.resize(&id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

async fn commit(State(b): State<Backend>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let nonempty = |k: &str| q.str(k).filter(|v| !v.is_empty()).map(str::to_string);
    let mut opts = CommitOptions {
        container: q.str("container").unwrap_or("").to_string(),
        repo: nonempty("repo"),
        tag: nonempty("tag"),
        comment: q.str("comment").unwrap_or("").to_string(),
        author: q.str("author").unwrap_or("").to_string(),
        // Docker pauses while it commits unless told not to.
        pause: q.str("pause").is_none_or(|p| !matches!(p, "0" | "false" | "False")),
        changes: q.all("changes").into_iter().filter(|c| !c.is_empty()).collect(),
        config: None,
    };
    let body = body_bytes(req).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::new(Kind::InvalidArgument, format!("invalid JSON: {e}")))?;
        opts.config = Some(v).filter(|v| !v.is_null());
    }
    let id = b.commit(opts).await?;
    Ok((StatusCode::CREATED, axum::Json(IdResponse { id })).into_response())
}

async fn export(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let stream = b.export(&id).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-tar")], Body::from_stream(stream)).into_response())
}

/// The header every archive answer carries: base64 of the path's stat JSON.
const PATH_STAT: &str = "X-Docker-Container-Path-Stat";

fn archive_path(req: &Request<Body>) -> Result<String, ApiError> {
    let q = Query::parse(req.uri());
    q.str("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::new(Kind::InvalidArgument, "path parameter is required"))
}

fn stat_header(stat: &PathStat) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(stat).unwrap_or_default())
}

async fn archive_head(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let stat = b.archive_stat(&id, &archive_path(&req)?).await?;
    Ok(([(PATH_STAT, stat_header(&stat))], StatusCode::OK).into_response())
}

async fn archive_get(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let (stat, stream) = b.archive_get(&id, &archive_path(&req)?).await?;
    let headers = [(axum::http::header::CONTENT_TYPE.as_str(), "application/x-tar".to_string()), (PATH_STAT, stat_header(&stat))];
    Ok((headers, Body::from_stream(stream)).into_response())
}

async fn archive_put(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    use futures_util::TryStreamExt;
    let q = Query::parse(req.uri());
    let yes = |k: &str| q.str(k).is_some_and(|v| matches!(v, "1" | "true" | "True"));
    let opts =
        ArchivePut { path: archive_path(&req)?, no_overwrite_dir_non_dir: yes("noOverwriteDirNonDir"), copy_uid_gid: yes("copyUIDGID") };
    let body: ByteStream = Box::pin(req.into_body().into_data_stream().map_err(std::io::Error::other));
    b.archive_put(&id, opts, body).await?;
    Ok(StatusCode::OK.into_response())
}

async fn changes(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.changes(&id).await?).into_response())
}

async fn top(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    Ok(axum::Json(b.top(&id, q.str("ps_args").filter(|a| !a.is_empty()).map(str::to_string)).await?).into_response())
}

async fn rename(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri());
    let name = q.str("name").unwrap_or("").to_string();
    b.rename(&id, &name).await?;
    Ok(no_content())
}

async fn update(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let body: HostConfig = json_body(&body_bytes(req).await?)?;
    let warnings = b.update(&id, body).await?;
    Ok(axum::Json(berth_models::containers::UpdateResponse { warnings: (!warnings.is_empty()).then_some(warnings) }).into_response())
}

async fn exec_create(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let config: ExecConfig = json_body(&body_bytes(req).await?)?;
    let exec_id = b.exec_create(&id, config).await?;
    Ok((StatusCode::CREATED, axum::Json(IdResponse { id: exec_id })).into_response())
}

async fn exec_start(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))?;
    let start: ExecStartBody = json_body(&bytes)?;
    let tty = b.exec_check(&id).await?;
    let req = Request::from_parts(parts, Body::empty());
    if start.detach == Some(true) {
        b.exec_start(id, None, tty).await?;
        return Ok(StatusCode::OK.into_response());
    }
    let tty = start.tty.unwrap_or(tty);
    Ok(hijack(req, tty, move |io| async move {
        if let Err(e) = b.exec_start(id, Some(io), tty).await {
            tracing::debug!("exec start: {e}");
        }
    }))
}

async fn exec_inspect(State(b): State<Backend>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(b.exec_inspect(&id).await?).into_response())
}

async fn exec_resize(State(b): State<Backend>, Path(id): Path<String>, req: Request<Body>) -> Result<Response, ApiError> {
    let (h, w) = size(&Query::parse(req.uri()))?;
    b.exec_resize(&id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

pub fn routes(backend: Backend) -> Router {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}", axum::routing::delete(remove))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/changes", get(changes))
        .route("/containers/{id}/export", get(export))
        .route("/containers/{id}/archive", get(archive_get).head(archive_head).put(archive_put))
        .route("/commit", axum::routing::post(commit))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/exec", post(exec_create))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/json", get(exec_inspect))
        .route("/exec/{id}/resize", post(exec_resize))
        .with_state(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_take_strings_lists_nulls_any_case_and_ignore_unknown_fields() {
        let b: CreateBody = json_body(
            br#"{"Image":"busybox","Cmd":"echo hi","Entrypoint":null,"Env":null,"Tty":false,"ExposedPorts":{"80/tcp":{}},"NoSuchField":1,
                "hostconfig":{"AutoRemove":true,"networkMode":"none","Ulimits":[{"Name":"nofile","Soft":10,"Hard":20}],"Memory":0,"Isolation":""},
                "workingDir":"/w"}"#,
        )
        .unwrap();
        assert_eq!(b.config.cmd, Some(StrSlice::One("echo hi".into())));
        assert_eq!(b.config.entrypoint, None);
        assert!(b.config.exposed_ports.unwrap().contains_key("80/tcp"));
        assert_eq!(b.config.working_dir.as_deref(), Some("/w"), "Go's case-insensitive match, in the config's own keys too");
        let hc = b.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.ulimits.unwrap()[0].hard, 20);
        assert_eq!(hc.memory, Some(0));
        assert_eq!(hc.isolation.as_deref(), Some(""));
        assert!(json_body::<CreateBody>(br#"{"Image":"busybox","Tty":"yes"}"#).is_err());
        assert!(json_body::<CreateBody>(br#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#).is_err(), "wrong types are refused");
    }
}
