//! Starting shims and talking to them over `shim.sock` (see berth-shim's protocol).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_api::{ApiError, Kind};
use berth_runtime::state::ProcessId;
use berth_shim::{ErrorKind, Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long a shim may take to create its container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn api_error(reply: &Reply) -> ApiError {
    let kind = match reply.kind {
        Some(ErrorKind::NotFound) => Kind::NotFound,
        Some(ErrorKind::Conflict) => Kind::Conflict,
        Some(ErrorKind::InvalidArgument | ErrorKind::ExecNotFound | ErrorKind::ExecPermission) => Kind::InvalidArgument,
        Some(ErrorKind::Internal) | None => Kind::Internal,
    };
    ApiError::new(kind, reply.message.clone())
}

pub struct Started {
    pub shim: ProcessId,
    pub pid: i32,
}

/// Start `berth-shim <bundle>` and wait for it to report the container created.
pub async fn spawn(shim_bin: &Path, bundle: &Path) -> Result<Started, ApiError> {
    let log_path = bundle.join(berth_shim::LOG);
    let log =
        std::fs::File::create(&log_path).map_err(|e| ApiError::new(Kind::Internal, format!("creating {}: {e}", log_path.display())))?;
    let mut child = tokio::process::Command::new(shim_bin)
        .arg(bundle)
        .env("GLIBC_TUNABLES", berth_shim::glibc_tunables(std::env::var("GLIBC_TUNABLES").ok().as_deref()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| ApiError::new(Kind::Internal, format!("starting {}: {e}", shim_bin.display())))?;
    let shim_pid = child.id().unwrap_or(0) as i32;
    let identity = ProcessId::of(shim_pid).map_err(|e| ApiError::new(Kind::Internal, format!("shim {shim_pid}: {e}")));
    let stdout = child.stdout.take().ok_or_else(|| ApiError::new(Kind::Internal, "shim has no stdout"))?;
    let mut line = String::new();
    let read = tokio::time::timeout(CREATE_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    let reply: Option<Reply> = serde_json::from_str(line.trim()).ok();
    match (read, reply) {
        (Ok(Ok(_)), Some(r)) if r.ok => {
            // The shim outlives this handle; tokio reaps it whenever it exits.
            drop(child);
            Ok(Started { shim: identity?, pid: r.pid.unwrap_or(0) })
        }
        (_, Some(r)) => {
            let _ = child.wait().await;
            Err(api_error(&r))
        }
        (read, None) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(ApiError::new(Kind::Internal, format!("shim failed ({read:?}): {}", log.trim())))
        }
    }
}

/// A connection to a shim after its reply line; whatever it sent after the line stays buffered.
pub struct Conn {
    pub stream: BufReader<UnixStream>,
    pub reply: Reply,
}

/// Send one request and read the reply line.
pub async fn request(bundle: &Path, req: &Request) -> Result<Conn, ApiError> {
    let path = bundle.join(berth_shim::SOCKET);
    // Through the bundle's fd: the full path can be longer than a socket address allows.
    let dir = std::fs::File::open(bundle)
        .map_err(|e| ApiError::new(Kind::Conflict, format!("container is not running (bundle {}: {e})", bundle.display())))?;
    let short = format!("/proc/self/fd/{}/{}", std::os::fd::AsRawFd::as_raw_fd(&dir), berth_shim::SOCKET);
    let sock = UnixStream::connect(&short)
        .await
        .map_err(|e| ApiError::new(Kind::Conflict, format!("container is not running (shim socket {}: {e})", path.display())))?;
    drop(dir);
    let mut stream = BufReader::new(sock);
    let mut line = serde_json::to_vec(req).map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
    line.push(b'\n');
    let io_err = |e: std::io::Error| ApiError::new(Kind::Conflict, format!("container is not running (shim: {e})"));
    stream.get_mut().write_all(&line).await.map_err(io_err)?;
    let mut answer = String::new();
    let n = stream.read_line(&mut answer).await.map_err(io_err)?;
    if n == 0 {
        return Err(ApiError::new(Kind::Conflict, "container is not running (shim closed the connection)"));
    }
    let reply: Reply =
        serde_json::from_str(answer.trim()).map_err(|e| ApiError::new(Kind::Internal, format!("bad reply from shim: {e}: {answer:?}")))?;
    Ok(Conn { stream, reply })
}

/// A request whose reply must be ok.
pub async fn call(bundle: &Path, req: &Request) -> Result<Reply, ApiError> {
    let c = request(bundle, req).await?;
    if c.reply.ok { Ok(c.reply) } else { Err(api_error(&c.reply)) }
}
