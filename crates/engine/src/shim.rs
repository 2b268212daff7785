//! Starting shims and talking to them over `shim.sock` (see berth-shim's protocol).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_runtime::state::ProcessId;
use berth_shim::{ErrorKind, Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long a shim may take to create its container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

use crate::error::{Error, Result};

/// A failed reply as the engine's error, with the runtime's kind.
pub fn error(reply: &Reply) -> Error {
    Error::Runtime { kind: reply.kind.unwrap_or(ErrorKind::Internal), message: reply.message.clone() }
}

pub struct Started {
    pub shim: ProcessId,
    pub pid: i32,
}

/// A shim started ahead of need (`berth-shim --standby`), waiting on its stdin for a bundle.
pub struct Standby {
    child: tokio::process::Child,
    identity: Result<ProcessId>,
}

impl Standby {
    pub fn spawn(shim_bin: &Path, exec_root: &Path) -> Result<Standby> {
        let child = tokio::process::Command::new(shim_bin)
            .arg(berth_shim::STANDBY)
            .arg(exec_root)
            .env("GLIBC_TUNABLES", berth_shim::glibc_tunables(std::env::var("GLIBC_TUNABLES").ok().as_deref()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Until it has a bundle, whose shim.log becomes its stderr.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Internal(format!("starting {}: {e}", shim_bin.display())))?;
        let pid = child.id().unwrap_or(0) as i32;
        let identity = ProcessId::of(pid).map_err(|e| Error::Internal(format!("shim {pid}: {e}")));
        Ok(Standby { child, identity })
    }

    /// Still waiting (not killed meanwhile)?
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Hand it `bundle` and wait for it to report the container created.
    pub async fn start(mut self, bundle: &Path) -> Result<Started> {
        let log_path = bundle.join(berth_shim::LOG);
        let mut line = bundle.as_os_str().as_encoded_bytes().to_vec();
        if line.contains(&b'\n') {
            return Err(Error::Internal(format!("bundle path {} holds a newline", bundle.display())));
        }
        line.push(b'\n');
        let mut stdin = self.child.stdin.take().ok_or_else(|| Error::Internal("standby shim has no stdin".into()))?;
        let sent = stdin.write_all(&line).await;
        drop(stdin);
        let stdout = self.child.stdout.take().ok_or_else(|| Error::Internal("standby shim has no stdout".into()))?;
        let mut answer = String::new();
        let read = match sent {
            Ok(()) => tokio::time::timeout(CREATE_TIMEOUT, BufReader::new(stdout).read_line(&mut answer)).await,
            Err(e) => Ok(Err(e)),
        };
        let reply: Option<Reply> = serde_json::from_str(answer.trim()).ok();
        let mut child = self.child;
        match (read, reply) {
            (Ok(Ok(_)), Some(r)) if r.ok => {
                // Reaped when it exits by a task waiting on it (a pidfd): a dropped child would
                // join tokio's orphans, every one of which is polled with wait4 at every SIGCHLD
                // (100 running containers: 100 syscalls per exit).
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                Ok(Started { shim: self.identity?, pid: r.pid.unwrap_or(0) })
            }
            (_, Some(r)) => {
                let _ = child.wait().await;
                Err(error(&r))
            }
            (read, None) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(Error::Internal(format!("shim failed ({read:?}): {}", log.trim())))
            }
        }
    }
}

/// A connection to a shim after its reply line; whatever it sent after the line stays buffered.
pub struct Conn {
    pub stream: BufReader<UnixStream>,
    pub reply: Reply,
}

/// The longest path a unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 108;

/// Send one request and read the reply line.
pub async fn request(bundle: &Path, req: &Request) -> Result<Conn> {
    let path = bundle.join(berth_shim::SOCKET);
    let not_running = |e: std::io::Error| Error::NotRunning(format!("shim socket {}: {e}", path.display()));
    // A socket address holds 107 bytes of path: a longer one is reached through the bundle's fd
    // (opening the directory each time costs a path walk: only when needed).
    let sock = if path.as_os_str().len() < MAX_SOCKET_PATH {
        UnixStream::connect(&path).await.map_err(not_running)?
    } else {
        let dir = std::fs::File::open(bundle).map_err(|e| Error::NotRunning(format!("bundle {}: {e}", bundle.display())))?;
        let short = format!("/proc/self/fd/{}/{}", std::os::fd::AsRawFd::as_raw_fd(&dir), berth_shim::SOCKET);
        UnixStream::connect(&short).await.map_err(not_running)?
    };
    let mut stream = BufReader::new(sock);
    let mut line = serde_json::to_vec(req).map_err(|e| Error::Internal(e.to_string()))?;
    line.push(b'\n');
    let io_err = |e: std::io::Error| Error::NotRunning(format!("shim: {e}"));
    stream.get_mut().write_all(&line).await.map_err(io_err)?;
    let mut answer = String::new();
    let n = stream.read_line(&mut answer).await.map_err(io_err)?;
    if n == 0 {
        return Err(Error::NotRunning("shim closed the connection".into()));
    }
    let reply: Reply = serde_json::from_str(answer.trim()).map_err(|e| Error::Internal(format!("bad reply from shim: {e}: {answer:?}")))?;
    Ok(Conn { stream, reply })
}

/// A request whose reply must be ok.
pub async fn call(bundle: &Path, req: &Request) -> Result<Reply> {
    let c = request(bundle, req).await?;
    if c.reply.ok { Ok(c.reply) } else { Err(error(&c.reply)) }
}

/// Every shim of ours that is looking after a bundle under `bundles`: by bundle directory name
/// (a container's ID, or a removal's `.rm-` name). Found once, at start, by what a shim is: a
/// process running `shim_bin` (the same file, by device and inode: a container's process could
/// name itself anything) whose working directory is its bundle. Standby shims, not yet in a
/// bundle, are not listed: they exit when their berthd goes.
pub fn running(bundles: &Path, shim_bin: &Path) -> Vec<(String, ProcessId)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(bin) = std::fs::metadata(shim_bin) else { return Vec::new() };
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        // The identity first: a process that exits and whose pid is reused meanwhile is not taken.
        let Ok(id) = ProcessId::of(pid) else { continue };
        let same_binary = std::fs::metadata(e.path().join("exe")).is_ok_and(|m| m.dev() == bin.dev() && m.ino() == bin.ino());
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else { continue };
        let Some(name) = cwd.strip_prefix(bundles).ok().and_then(|r| r.to_str()).filter(|n| !n.is_empty() && !n.contains('/')) else {
            continue;
        };
        if same_binary && id.is_alive() {
            out.push((name.to_string(), id));
        }
    }
    out
}

/// SIGKILL a shim (checked to still be that process) and wait until it is gone.
pub fn kill(shim: ProcessId) {
    let _ = shim.signal(nix::sys::signal::Signal::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while shim.is_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}
