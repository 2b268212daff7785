//! Healthchecks, as Docker runs them: a container whose config has a test (its own or its
//! image's HEALTHCHECK) is probed while it runs, each probe an exec through its shim, killed at
//! its timeout. `State.Health` keeps the status (`starting`, `healthy`, `unhealthy`), the failing
//! streak and the last five results; a change of status is a `health_status` event. While the
//! container runs, the health lives beside its record ([`Live`], which the read views lay over
//! it) and goes into the record — written atomically — only when the status changes and at the
//! exit: a probe a second costs neither a copy of the record nor a disk write.

use super::*;
use berth_models::containers::{Health, HealthcheckResult};
use tokio::io::AsyncReadExt;

pub(crate) const STARTING: &str = "starting";
pub(crate) const HEALTHY: &str = "healthy";
pub(crate) const UNHEALTHY: &str = "unhealthy";

/// Docker's defaults for a timing left at zero.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// What Docker keeps of a probe's output, and how many results.
const MAX_OUTPUT: usize = 4096;
const MAX_LOG: usize = 5;
/// How long a probe killed at its timeout is given to report its end (for `exec_die`).
const KILL_GRACE: Duration = Duration::from_secs(1);

/// A running container's healthcheck: its task and its health since the start.
#[derive(Default)]
pub(crate) struct Live {
    pub task: Option<tokio::task::AbortHandle>,
    pub health: Option<Health>,
}

/// A container's healthcheck, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: i64,
}

fn timing(ns: Option<i64>, default: Duration) -> Duration {
    match ns {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// The probe of a (merged) container config: None without a test, for `NONE`, or for a kind of
/// test Docker does not know (which it ignores too).
pub(crate) fn probe_of(cfg: &ContainerConfig) -> Option<Probe> {
    let h = cfg.healthcheck.as_ref()?;
    let test = h.test.as_ref()?;
    let (kind, rest) = test.split_first()?;
    let argv = match kind.as_str() {
        "CMD" => rest.to_vec(),
        "CMD-SHELL" => {
            let shell = cfg.shell.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            [shell, rest.to_vec()].concat()
        }
        _ => return None,
    };
    if argv.is_empty() {
        return None;
    }
    Some(Probe {
        argv,
        interval: timing(h.interval, DEFAULT_INTERVAL),
        timeout: timing(h.timeout, DEFAULT_TIMEOUT),
        start_period: timing(h.start_period, Duration::ZERO),
        start_interval: timing(h.start_interval, DEFAULT_START_INTERVAL),
        retries: h.retries.filter(|r| *r > 0).unwrap_or(DEFAULT_RETRIES),
    })
}

/// The wait before the next probe: the start interval while the container is in its start
/// period and not yet healthy, the interval otherwise.
fn next_wait(p: &Probe, since_start: Duration, status: &str) -> Duration {
    if since_start < p.start_period && status == STARTING { p.start_interval } else { p.interval }
}

/// Apply a probe's result: Docker's rules. Success makes it healthy; a failure counts toward
/// `retries` (unhealthy when reached), except while it is still starting within its start period.
/// Returns whether the status changed.
pub(crate) fn record_result(h: &mut Health, result: HealthcheckResult, in_start_period: bool, retries: i64) -> bool {
    let before = h.status.clone();
    if result.exit_code == 0 {
        h.failing_streak = 0;
        h.status = HEALTHY.into();
    } else if !(h.status == STARTING && in_start_period) {
        h.failing_streak += 1;
        if h.failing_streak >= retries {
            h.status = UNHEALTHY.into();
        }
    }
    h.log.push(result);
    if h.log.len() > MAX_LOG {
        let extra = h.log.len() - MAX_LOG;
        h.log.drain(..extra);
    }
    h.status != before
}

/// A probe's output as Docker keeps it: the first 4 KiB, `...` when there was more.
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    truncated: bool,
}

impl Output {
    fn push(&mut self, data: &[u8]) {
        let room = MAX_OUTPUT.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
        self.truncated |= data.len() > room;
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.kept).into_owned();
        if self.truncated {
            s.push_str("...");
        }
        s
    }
}

/// Read a probe's frames until its exit frame: its output (bounded) and its exit code.
async fn read_probe(mut conn: crate::shim::Conn, out: &mut Output) -> Option<i32> {
    let mut header = [0u8; 8];
    let mut buf = vec![0u8; MAX_OUTPUT];
    loop {
        conn.stream.read_exact(&mut header).await.ok()?;
        let (stream, len) = berth_shim::parse_header(&header);
        if stream == berth_shim::EXIT_FRAME {
            // An exit status is a short JSON object; anything longer is not one.
            if len > buf.len() {
                return None;
            }
            conn.stream.read_exact(&mut buf[..len]).await.ok()?;
            return serde_json::from_slice::<ExitStatus>(&buf[..len]).ok().map(|s| s.exit_code);
        }
        // Output beyond what is kept is read and dropped, a chunk at a time.
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            conn.stream.read_exact(&mut buf[..n]).await.ok()?;
            out.push(&buf[..n]);
            left -= n;
        }
    }
}

impl Engine {
    /// Begin probing a container that just started (or that restore found running): its health
    /// starts over as `starting`, its last results kept. Nothing for a container without a test.
    pub(crate) fn start_health(&self, ctr: &Arc<Ctr>) {
        self.stop_health(ctr);
        let rec = ctr.rec();
        let Some(probe) = probe_of(&rec.config) else { return };
        let started_at = rec.state.started_at.clone();
        let mut health = rec.state.health.clone().unwrap_or_default();
        health.status = STARTING.into();
        health.failing_streak = 0;
        let (e, c) = (self.clone(), Arc::clone(ctr));
        let task = tokio::spawn(async move { e.health_loop(c, probe, started_at).await });
        *ctr.health.lock().unwrap_or_else(|p| p.into_inner()) = Live { task: Some(task.abort_handle()), health: Some(health) };
    }

    /// Stop probing (the container exited or goes); the last health, if any, for its record.
    pub(crate) fn stop_health(&self, ctr: &Ctr) -> Option<Health> {
        let live = std::mem::take(&mut *ctr.health.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(t) = live.task {
            t.abort();
        }
        live.health
    }

    async fn health_loop(&self, ctr: Arc<Ctr>, probe: Probe, started_at: String) {
        let since_start = || Duration::from_secs_f64((view::now_secs() - record::unix_seconds(&started_at)).max(0.0));
        let mut process = None;
        let command = crate::exec::event_command(&probe.argv);
        let actions = [format!("exec_create: {command}"), format!("exec_start: {command}")];
        loop {
            let status = ctr.rec().state.health.as_ref().map(|h| h.status.clone()).unwrap_or_default();
            tokio::time::sleep(next_wait(&probe, since_start(), &status)).await;
            let rec = ctr.rec();
            if rec.state.started_at != started_at || !rec.state.status.is_live() {
                return;
            }
            // A frozen container cannot run a probe; it is not held against it either.
            if rec.state.status == Status::Paused {
                continue;
            }
            let in_start_period = since_start() < probe.start_period;
            let result = self.run_probe(&ctr, &probe, &mut process, &actions).await;
            let changed = {
                let mut live = ctr.health.lock().unwrap_or_else(|p| p.into_inner());
                // Stopped meanwhile: its exit took the health over.
                let Some(h) = live.health.as_mut() else { return };
                record_result(h, result, in_start_period, probe.retries).then(|| h.clone())
            };
            if let Some(h) = changed {
                // The new status is written (as the status of a process is: atomically).
                let (c, status, run) = (Arc::clone(&ctr), h.status.clone(), started_at.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    c.update_status(|r| {
                        if r.state.started_at == run && r.state.status.is_live() {
                            r.state.health = Some(h);
                        }
                    })
                })
                .await;
                self.ctr_event(&ctr.rec(), &format!("health_status: {status}"), &[]);
            }
        }
    }

    /// Run one probe: an exec with Docker's events, its output kept (bounded), killed at the
    /// timeout. `process`: the exec's OCI process, made at the first probe and kept; `actions`:
    /// its `exec_create` and `exec_start` events' actions.
    async fn run_probe(
        &self,
        ctr: &Arc<Ctr>,
        probe: &Probe,
        process: &mut Option<oci_spec::runtime::Process>,
        actions: &[String; 2],
    ) -> HealthcheckResult {
        let start = record::now();
        let failed = |message: String| HealthcheckResult { start: start.clone(), end: record::now(), exit_code: -1, output: message };
        let rec = ctr.rec();
        let exec_id = match names::random_id() {
            Ok(id) => id,
            Err(e) => return failed(e.message),
        };
        let attrs = [("execID", exec_id.clone())];
        self.ctr_event(&rec, &actions[0], &attrs);
        let p = match process {
            Some(p) => p.clone(),
            None => {
                let config = ExecConfig { cmd: Some(probe.argv.clone()), ..Default::default() };
                match self.exec_process(&ctr.id, &config) {
                    Ok(p) => process.insert(p).clone(),
                    Err(e) => return failed(e.message),
                }
            }
        };
        self.ctr_event(&rec, &actions[1], &attrs);
        let conn = match self.tasks.connect(&ctr.bundle, &Request::Exec { process: Box::new(p), stdin: false }).await {
            Ok(c) if c.reply.ok => c,
            Ok(c) => return failed(c.reply.message),
            Err(e) => return failed(e.to_string()),
        };
        let pid = conn.reply.pid.unwrap_or(0);
        let mut out = Output::default();
        let (code, timed_out) = {
            let read = read_probe(conn, &mut out);
            tokio::pin!(read);
            match tokio::time::timeout(probe.timeout, &mut read).await {
                Ok(code) => (code, false),
                Err(_) => {
                    if pid > 0
                        && let Err(e) = self.tasks.signal_exec(&ctr.bundle, pid, libc::SIGKILL).await
                    {
                        tracing::debug!("killing the probe of {}: {e}", ctr.id);
                    }
                    (tokio::time::timeout(KILL_GRACE, &mut read).await.ok().flatten(), true)
                }
            }
        };
        let die_code = code.map_or_else(|| "-1".to_string(), |c| c.to_string());
        self.ctr_event(&rec, "exec_die", &[("execID", exec_id), ("exitCode", die_code)]);
        let end = record::now();
        if timed_out {
            let output = format!("Health check exceeded timeout ({})", berth_format::go_duration_string(probe.timeout.as_nanos() as i64));
            return HealthcheckResult { start, end, exit_code: -1, output };
        }
        match code {
            Some(c) => HealthcheckResult { start, end, exit_code: i64::from(c), output: out.text() },
            None => HealthcheckResult { start, end, exit_code: -1, output: "the probe ended without an exit status".into() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> ContainerConfig {
        serde_json::from_value(v).unwrap()
    }

    fn result(code: i64) -> HealthcheckResult {
        HealthcheckResult { exit_code: code, ..Default::default() }
    }

    #[test]
    fn probes_from_configs_as_docker_reads_them() {
        let p = probe_of(&cfg(json!({"Healthcheck": {"Test": ["CMD-SHELL", "curl -f x"]}}))).unwrap();
        assert_eq!(p.argv, ["/bin/sh", "-c", "curl -f x"]);
        assert_eq!(
            (p.interval, p.timeout, p.start_period, p.start_interval, p.retries),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Duration::ZERO, DEFAULT_START_INTERVAL, 3)
        );
        let p = probe_of(&cfg(
            json!({"Shell": ["/bin/bash", "-ec"], "Healthcheck": {"Test": ["CMD-SHELL", "x"], "Interval": 1_000_000_000, "Retries": 1}}),
        ))
        .unwrap();
        assert_eq!(
            (p.argv.as_slice(), p.interval, p.retries),
            (&["/bin/bash".to_string(), "-ec".into(), "x".into()][..], Duration::from_secs(1), 1)
        );
        assert_eq!(probe_of(&cfg(json!({"Healthcheck": {"Test": ["CMD", "true", "a b"]}}))).unwrap().argv, ["true", "a b"]);
        for none in [
            json!({}),
            json!({"Healthcheck": {"Test": ["NONE"]}}),
            json!({"Healthcheck": {"Test": []}}),
            json!({"Healthcheck": {"Test": ["CMD"]}}),
            json!({"Healthcheck": {"Test": ["WHAT", "x"]}}),
        ] {
            assert_eq!(probe_of(&cfg(none.clone())), None, "{none}");
        }
    }

    #[test]
    fn health_moves_as_dockers() {
        let mut h = Health { status: STARTING.into(), ..Default::default() };
        // Failures in the start period do not count while it is starting.
        assert!(!record_result(&mut h, result(1), true, 2));
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 0));
        assert!(!record_result(&mut h, result(1), false, 2));
        assert_eq!(h.failing_streak, 1);
        assert!(record_result(&mut h, result(0), false, 2));
        assert_eq!((h.status.as_str(), h.failing_streak), (HEALTHY, 0));
        // Once healthy, the start period no longer shields it; any non-zero code is a failure.
        assert!(!record_result(&mut h, result(2), true, 2));
        assert!(record_result(&mut h, result(-1), true, 2));
        assert_eq!((h.status.as_str(), h.failing_streak), (UNHEALTHY, 2));
        assert!(!record_result(&mut h, result(1), false, 2));
        assert_eq!(h.failing_streak, 3);
        for _ in 0..10 {
            record_result(&mut h, result(0), false, 2);
        }
        assert_eq!(h.log.len(), MAX_LOG, "the last five results only");
    }

    #[test]
    fn the_start_interval_applies_in_the_start_period_until_healthy() {
        let p = Probe {
            argv: vec!["x".into()],
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            start_period: Duration::from_secs(60),
            start_interval: Duration::from_secs(2),
            retries: 3,
        };
        assert_eq!(next_wait(&p, Duration::from_secs(1), STARTING), Duration::from_secs(2));
        assert_eq!(next_wait(&p, Duration::from_secs(1), HEALTHY), Duration::from_secs(30));
        assert_eq!(next_wait(&p, Duration::from_secs(61), STARTING), Duration::from_secs(30));
    }

    #[test]
    fn output_is_kept_to_four_kib() {
        let mut o = Output::default();
        o.push(b"hi\n");
        assert_eq!(o.text(), "hi\n");
        o.push(&vec![b'x'; 10_000]);
        o.push(b"more");
        let t = o.text();
        assert_eq!(t.len(), MAX_OUTPUT + 3);
        assert!(t.starts_with("hi\nxxx") && t.ends_with("x..."));
    }
}
