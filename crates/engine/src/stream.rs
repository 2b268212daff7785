//! Relaying a hijacked client connection and a shim stream: output frames out (as they are for
//! multiplexed streams, payloads only for a TTY), input in, detach keys watched.

use berth_api::params::Io;
use berth_shim::ExitStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shim::Conn;

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
