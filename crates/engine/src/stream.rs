//! Relaying a hijacked client connection and a shim stream: output frames out (as they are for
//! multiplexed streams, payloads only for a TTY), input in, detach keys watched.

use berth_api::params::Io;
use berth_shim::ExitStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shim::Conn;

/// Input a client sends before its container starts that is held for it, at most (the shim takes
/// what it is sent after the start).
const MAX_EARLY_INPUT: usize = 64 << 10;

/// How often a client waiting for its container's start is checked for a hang-up.
const HANG_UP_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Wait for the start to hand over the shim's connection; None when the start will not come
/// (it failed, the container went) or the client hung up meanwhile. The client's input is read
/// meanwhile, kept (up to a bound) and goes to the container first; its end is not a hang-up
/// (Docker's clients close their writing half when they have no more input, and at once when
/// they attach no stdin), so the connection itself is checked every second.
pub async fn until_started(started: tokio::sync::oneshot::Receiver<Conn>, mut io: Io) -> Option<(Conn, Io)> {
    let mut early = Vec::new();
    let mut ended = false;
    let mut buf = [0u8; 4096];
    let mut check = tokio::time::interval(HANG_UP_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(started);
    let conn = loop {
        tokio::select! {
            conn = &mut started => break conn.ok()?,
            n = io.read(&mut buf), if !ended && early.len() < MAX_EARLY_INPUT => match n {
                Ok(0) | Err(_) => ended = true,
                Ok(n) => early.extend_from_slice(&buf[..n]),
            },
            _ = check.tick() => if io.hung_up() {
                return None;
            },
        }
    };
    let io: Io = if early.is_empty() && !ended { io } else { Box::new(Prefixed { early: std::io::Cursor::new(early), ended, inner: io }) };
    Some((conn, io))
}

/// A client connection with the input it sent before the start read first.
struct Prefixed {
    early: std::io::Cursor<Vec<u8>>,
    /// Its input had ended: nothing follows what was kept.
    ended: bool,
    inner: Io,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let rest = &this.early.get_ref()[this.early.position() as usize..];
        if !rest.is_empty() {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.early.set_position(this.early.position() + n as u64);
            return std::task::Poll::Ready(Ok(()));
        }
        if this.ended {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl berth_api::params::Duplex for Prefixed {
    fn hung_up(&self) -> bool {
        self.inner.hung_up()
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relay until the shim's output ends (the process exited) or the client detaches.
/// Returns the exit status when the shim sent one (execs do).
pub async fn pump(conn: Conn, io: Io, tty: bool, stdin: bool, keys: Vec<u8>) -> Option<ExitStatus> {
    let buffered = conn.stream.buffer().to_vec();
    let sock = conn.stream.into_inner();
    let (shim_r, mut shim_w) = sock.into_split();
    let (mut client_r, mut client_w) = tokio::io::split(io);
    let mut shim_r = std::io::Cursor::new(buffered).chain(shim_r);

    let output = async move {
        let mut header = [0u8; 8];
        let mut payload = Vec::new();
        let mut status = None;
        loop {
            if shim_r.read_exact(&mut header).await.is_err() {
                break;
            }
            let (stream, len) = berth_shim::parse_header(&header);
            payload.resize(len, 0);
            if shim_r.read_exact(&mut payload).await.is_err() {
                break;
            }
            if stream == berth_shim::EXIT_FRAME {
                status = serde_json::from_slice(&payload).ok();
                break;
            }
            let res = if tty {
                client_w.write_all(&payload).await
            } else {
                match client_w.write_all(&header).await {
                    Ok(()) => client_w.write_all(&payload).await,
                    Err(e) => Err(e),
                }
            };
            if res.is_err() {
                break;
            }
        }
        let _ = client_w.flush().await;
        let _ = client_w.shutdown().await;
        status
    };

    let input = async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut matched = 0usize;
        loop {
            let n = match client_r.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    // End of the client's input: the shim closes the process's stdin (StdinOnce).
                    let _ = shim_w.shutdown().await;
                    // Keep the task pending: output decides when we are done.
                    return std::future::pending::<bool>().await;
                }
                Ok(n) => n,
            };
            if !stdin {
                continue;
            }
            let mut out = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if !keys.is_empty() && b == keys[matched] {
                    matched += 1;
                    if matched == keys.len() {
                        return true;
                    }
                    continue;
                }
                if matched > 0 {
                    out.extend_from_slice(&keys[..matched]);
                    matched = 0;
                }
                out.push(b);
            }
            if !out.is_empty() && shim_w.write_all(&out).await.is_err() {
                return std::future::pending::<bool>().await;
            }
        }
    };

    tokio::select! {
        status = output => status,
        _detached = input => None,
    }
}
