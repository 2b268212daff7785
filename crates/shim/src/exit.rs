//! The end: an exec's exit frame, the container's exit recorded and announced, the runtime's
//! state removed.

use crate::*;

impl Shim {
    /// Execs that were reaped and whose output ended send their exit frame and go.
    pub(crate) fn finish_execs(&mut self) {
        let done: Vec<i32> = self.execs.iter().filter(|(_, p)| p.status.is_some() && p.outputs.is_empty()).map(|(pid, _)| *pid).collect();
        for pid in done {
            let Some(p) = self.execs.remove(&pid) else { continue };
            if self.probe_ended(pid, p.status) {
                continue;
            }
            let status = ExitStatus {
                exit_code: p.status.unwrap_or(255),
                finished_at: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
                oom_killed: false,
            };
            let payload = serde_json::to_vec(&status).unwrap_or_default();
            for c in self.clients.values_mut() {
                if c.role == Role::Exec(pid) {
                    queue(c, &berth_shim::frame_header(berth_shim::EXIT_FRAME, payload.len()));
                    queue(c, &payload);
                    c.closing = true;
                    c.input_done = true;
                }
            }
        }
    }

    /// Record the exit, tell waiters, flush attached clients, remove the runtime state.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        let Some((status, _)) = self.exited.clone() else { return Ok(()) };
        if let Some(log) = &mut self.log {
            log.flush_partial(berth_shim::STDOUT);
            log.flush_partial(berth_shim::STDERR);
        }
        let json = serde_json::to_vec(&status).map_err(io::Error::other)?;
        // Atomic, not durable: berthd reads it after a crash of its own, not of the machine (which
        // the container would not have survived either).
        berth_atomic::replace_file(&self.bundle.join(berth_shim::EXIT), &json, 0o600)?;
        // The status is on disk before the socket goes: whoever cannot connect any more finds it.
        self.listener = None;
        let _ = std::fs::remove_file(self.bundle.join(berth_shim::SOCKET));
        self.accept_pending_waits();
        let reply = Reply { exit: Some(status), ..Reply::ok() };
        for c in self.clients.values_mut() {
            if c.role == Role::Wait {
                queue_line(c, &reply);
            }
            c.closing = true;
        }
        // Execs still running die with the container's pid namespace; their clients end here.
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in self.clients.values_mut() {
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_write_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
            let _ = c.sock.write_all(&c.out);
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
        let id = self.cfg.id.clone();
        let root = self.cfg.runtime_root.clone();
        match Container::load(&root, &id) {
            Ok(c) => c.delete_with(true, Parents::Keep).map_err(|e| io::Error::other(format!("deleting the runtime state: {e}"))),
            // Someone removed the state under us; the cgroup is still ours to remove (its
            // processes went with the init's pid namespace).
            Err(_) => match &self.cgroup {
                Some(cg) => cg.destroy(Parents::Keep).map_err(|e| io::Error::other(format!("removing the cgroup: {e}"))),
                None => Ok(()),
            },
        }
    }

    /// Requests that arrived while the container was ending: waits join the answer, the rest close.
    pub(crate) fn accept_pending_waits(&mut self) {
        for c in self.clients.values_mut() {
            if c.role != Role::Request {
                continue;
            }
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 256];
            while !c.inbuf.contains(&b'\n') && c.inbuf.len() < 256 {
                match c.sock.read(&mut buf) {
                    Ok(n) if n > 0 => c.inbuf.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if matches!(serde_json::from_slice::<Request>(c.inbuf.split(|b| *b == b'\n').next().unwrap_or(&[])), Ok(Request::Wait)) {
                c.role = Role::Wait;
            }
        }
    }
}
