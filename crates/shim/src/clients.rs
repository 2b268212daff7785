//! Connections to `shim.sock`: what each is for, and the output queued for it.

use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Waiting for its request line.
    Request,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Streams the exec with this pid.
    Exec(i32),
    Wait,
    /// Healthcheck probes: `ProbeRun` lines in, `ProbeResult` lines out (`probe.rs`).
    Probe,
}

pub(crate) struct Client {
    pub(crate) sock: UnixStream,
    pub(crate) role: Role,
    pub(crate) inbuf: Vec<u8>,
    pub(crate) out: Vec<u8>,
    /// Its input has ended (or it only listens).
    pub(crate) input_done: bool,
    /// Close once `out` is flushed.
    pub(crate) closing: bool,
}

pub(crate) fn queue(c: &mut Client, data: &[u8]) {
    if c.closing {
        return;
    }
    if c.out.len() + data.len() > MAX_CLIENT_BACKLOG {
        // Too slow a reader: it loses the stream rather than stall the container.
        c.out.clear();
        c.closing = true;
        return;
    }
    c.out.extend_from_slice(data);
}

pub(crate) fn queue_line(c: &mut Client, reply: &Reply) {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    c.out.extend_from_slice(&line);
}

pub(crate) fn flush(c: &mut Client) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.closing {
        let _ = c.sock.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}
