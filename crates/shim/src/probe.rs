//! Healthcheck probes on a connection of their own (`Request::Probe`): the engine says when the
//! next one is due, the shim runs it as an exec when the time comes, kills it at its timeout
//! and answers with one result line.

use std::time::SystemTime;

use berth_shim::{MAX_PROBE_OUTPUT, ProbeResult, ProbeRun};

use crate::*;

/// A probe killed at its timeout whose output has not ended after this (a child of it holding
/// the pipes) is reported anyway, its pipes dropped.
const KILL_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Probe {
    process: oci_spec::runtime::Process,
    timeout: Duration,
    due: Option<Instant>,
    running: Option<Running>,
}

struct Running {
    pid: i32,
    start: SystemTime,
    deadline: Instant,
    output: Vec<u8>,
    truncated: bool,
    killed: bool,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

impl Probe {
    pub(crate) fn new(process: oci_spec::runtime::Process, timeout_ms: u64) -> Probe {
        Probe { process, timeout: Duration::from_millis(timeout_ms), due: None, running: None }
    }

    /// When this probe next needs the loop: its start, its deadline, or the end of its grace.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match &self.running {
            Some(r) if r.killed => Some(r.deadline + KILL_GRACE),
            Some(r) => Some(r.deadline),
            None => self.due,
        }
    }
}

impl Shim {
    /// A `ProbeRun` line (or several) from the probe connection `token`.
    pub(crate) fn probe_input(&mut self, token: u64) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        while let Some(end) = c.inbuf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = c.inbuf.drain(..=end).collect();
            let Ok(run) = serde_json::from_slice::<ProbeRun>(&line) else {
                self.reply_and_close(token, Reply::error(ErrorKind::InvalidArgument, "bad probe line"));
                return;
            };
            if let Some(p) = self.probes.get_mut(&token)
                && p.running.is_none()
            {
                p.due = Some(Instant::now() + Duration::from_millis(run.in_ms));
            }
        }
        if c.inbuf.len() > berth_shim::MAX_REQUEST {
            self.reply_and_close(token, Reply::error(ErrorKind::InvalidArgument, "probe line too long"));
        }
    }

    /// Start the probes that are due, kill those past their timeout, report those killed whose
    /// output never ended.
    pub(crate) fn tend_probes(&mut self) {
        let now = Instant::now();
        let tokens: Vec<u64> = self.probes.keys().copied().collect();
        for token in tokens {
            let Some(p) = self.probes.get_mut(&token) else { continue };
            match &mut p.running {
                None if p.due.is_some_and(|d| d <= now) => {
                    p.due = None;
                    self.start_probe(token);
                }
                Some(r) if !r.killed && r.deadline <= now => {
                    // Still ours to signal: it is reaped only by us, below, in this same loop.
                    let _ = nix::sys::signal::kill(Pid::from_raw(r.pid), Signal::SIGKILL);
                    r.killed = true;
                }
                Some(r) if r.killed && r.deadline + KILL_GRACE <= now => {
                    let pid = r.pid;
                    // Its pipes go; the process itself is reaped when it exits.
                    if let Some(e) = self.execs.get_mut(&pid) {
                        e.outputs.clear();
                    }
                    self.report_probe(token, None);
                }
                _ => {}
            }
        }
    }

    fn start_probe(&mut self, token: u64) {
        let start = SystemTime::now();
        let frozen = self.cgroup.as_ref().is_some_and(|c| c.is_frozen());
        if frozen {
            return self.send_probe_result(token, ProbeResult { skipped: true, ..self.probe_times(start) });
        }
        let Some(p) = self.probes.get(&token) else { return };
        let (process, timeout) = (p.process.clone(), p.timeout);
        match self.exec(process, false) {
            Ok(pid) => {
                if let Some(p) = self.probes.get_mut(&token) {
                    p.running = Some(Running {
                        pid,
                        start,
                        deadline: Instant::now() + timeout,
                        output: Vec::new(),
                        truncated: false,
                        killed: false,
                    });
                }
            }
            Err(reply) => self.send_probe_result(token, ProbeResult { error: Some(reply.message), ..self.probe_times(start) }),
        }
        if self.release_at.is_none() {
            self.release_at = Some(Instant::now() + RELEASE_DELAY);
        }
    }

    fn probe_times(&self, start: SystemTime) -> ProbeResult {
        ProbeResult { start: rfc3339(start), end: rfc3339(SystemTime::now()), ..Default::default() }
    }

    /// Output of exec `pid`, if it is a probe's: kept up to the limit.
    pub(crate) fn probe_output(&mut self, pid: i32, data: &[u8]) -> bool {
        let Some(r) = self.probes.values_mut().filter_map(|p| p.running.as_mut()).find(|r| r.pid == pid) else { return false };
        let room = MAX_PROBE_OUTPUT.saturating_sub(r.output.len());
        r.output.extend_from_slice(&data[..data.len().min(room)]);
        r.truncated |= data.len() > room;
        true
    }

    /// Exec `pid` ended (reaped, output drained): if it was a probe, its result goes out.
    pub(crate) fn probe_ended(&mut self, pid: i32, status: Option<i32>) -> bool {
        let Some(token) = self.probes.iter().find(|(_, p)| p.running.as_ref().is_some_and(|r| r.pid == pid)).map(|(t, _)| *t) else {
            return false;
        };
        self.report_probe(token, status);
        true
    }

    fn report_probe(&mut self, token: u64, status: Option<i32>) {
        let Some(r) = self.probes.get_mut(&token).and_then(|p| p.running.take()) else { return };
        let result = ProbeResult {
            start: rfc3339(r.start),
            end: rfc3339(SystemTime::now()),
            exit_code: if r.killed { None } else { status },
            output: String::from_utf8_lossy(&r.output).into_owned(),
            truncated: r.truncated,
            timed_out: r.killed,
            ..Default::default()
        };
        self.send_probe_result(token, result);
    }

    /// Probes whose connection is gone: a probe still running is killed (nobody would).
    pub(crate) fn forget_probes(&mut self) {
        if self.probes.len() == self.probes.keys().filter(|t| self.clients.contains_key(t)).count() {
            return;
        }
        let clients = &self.clients;
        self.probes.retain(|token, p| {
            let keep = clients.contains_key(token);
            if !keep && let Some(r) = &p.running {
                let _ = nix::sys::signal::kill(Pid::from_raw(r.pid), Signal::SIGKILL);
            }
            keep
        });
    }

    fn send_probe_result(&mut self, token: u64, result: ProbeResult) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let mut line = serde_json::to_vec(&result).unwrap_or_default();
        line.push(b'\n');
        queue(c, &line);
        let _ = flush(c);
    }
}
