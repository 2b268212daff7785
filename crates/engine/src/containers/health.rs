//! Healthchecks, as Docker runs them: a container whose config has a test (its own or its
//! image's HEALTHCHECK) is probed while it runs, each probe an exec through its shim, killed at
//! its timeout. `State.Health` keeps the status (`starting`, `healthy`, `unhealthy`), the failing
//! streak and the last five results; a change of status is a `health_status` event. While the
//! container runs, the health lives beside its record ([`Live`], which the read views lay over
//! it) and goes into the record — written atomically — only when the status changes and at the
//! exit: a probe a second costs neither a copy of the record nor a disk write.

use super::*;
use berth_models::containers::{Health, HealthcheckResult};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

pub(crate) const STARTING: &str = "starting";
pub(crate) const HEALTHY: &str = "healthy";
pub(crate) const UNHEALTHY: &str = "unhealthy";

/// Docker's defaults for a timing left at zero.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// How many results Docker keeps.
const MAX_LOG: usize = 5;

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

/// A probe's result as Docker records it: the first 4 KiB of output, `...` when there was more;
/// exit code -1 and dockerd's words when it timed out or could not run.
fn health_result(r: berth_shim::ProbeResult, timeout: Duration) -> HealthcheckResult {
    let (start, end) = (r.start, r.end);
    if r.timed_out {
        let output = format!("Health check exceeded timeout ({})", berth_format::go_duration_string(timeout.as_nanos() as i64));
        return HealthcheckResult { start, end, exit_code: -1, output };
    }
    if let Some(e) = r.error {
        return HealthcheckResult { start, end, exit_code: -1, output: e };
    }
    match r.exit_code {
        Some(c) => {
            let mut output = r.output;
            if r.truncated {
                output.push_str("...");
            }
            HealthcheckResult { start, end, exit_code: i64::from(c), output }
        }
        None => HealthcheckResult { start, end, exit_code: -1, output: "the probe ended without an exit status".into() },
    }
}

/// A container's probe connection to its shim (`Request::Probe`): one line out to schedule a
/// probe, one line back with its result.
struct Session {
    conn: crate::shim::Conn,
    line: String,
}

impl Session {
    /// Schedule the next probe `wait` from now and wait for its result.
    async fn probe(&mut self, wait: Duration) -> std::io::Result<berth_shim::ProbeResult> {
        let mut out = serde_json::to_vec(&berth_shim::ProbeRun { in_ms: wait.as_millis() as u64 }).unwrap_or_default();
        out.push(b'\n');
        self.conn.stream.get_mut().write_all(&out).await?;
        self.line.clear();
        // A result is a short line: 4 KiB of output, escaped, and a few fields.
        let n = (&mut self.conn.stream).take(64 * 1024).read_line(&mut self.line).await?;
        if n == 0 || !self.line.ends_with('\n') {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the shim ended the probe connection"));
        }
        serde_json::from_str(&self.line).map_err(std::io::Error::other)
    }
}

/// The runtime every container's probes run on: one thread, so a probe's timer, its shim
/// connection and its reply wake only that thread. On the daemon's multi-threaded runtime each
/// of those woke a parked worker as well (a futex call each); with a hundred containers probed
/// every second that was a fifth of berthd's CPU. Made at the first healthcheck.
fn probes() -> &'static tokio::runtime::Handle {
    static PROBES: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    PROBES.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("berth-health".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    let _ = tx.send(Some(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    tracing::warn!("no runtime of its own for healthchecks: {e}");
                    let _ = tx.send(None);
                }
            }
        });
        // Where no thread or runtime of its own can be had, probes share the daemon's.
        spawned.ok().and_then(|_| rx.recv().ok().flatten()).unwrap_or_else(tokio::runtime::Handle::current)
    })
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
        let task = probes().spawn(async move { e.health_loop(c, probe, started_at).await });
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
        let command = crate::exec::event_command(&probe.argv);
        let actions = [format!("exec_create: {command}"), format!("exec_start: {command}")];
        let mut session: Option<Session> = None;
        loop {
            let status = ctr.rec().state.health.as_ref().map(|h| h.status.clone()).unwrap_or_default();
            let wait = next_wait(&probe, since_start(), &status);
            let in_start_period = since_start() + wait < probe.start_period;
            let result = match self.probe_session(&ctr, &probe, &mut session).await {
                Ok(s) => s.probe(wait).await.map_err(|e| e.to_string()),
                Err(e) => {
                    // No session (the shim is gone or busy): a failed probe, at the usual time.
                    tokio::time::sleep(wait).await;
                    Err(e)
                }
            };
            let rec = ctr.rec();
            if rec.state.started_at != started_at || !rec.state.status.is_live() {
                return;
            }
            let result = match result {
                // A frozen container cannot run a probe; it is not held against it either.
                Ok(r) if r.skipped => continue,
                Ok(r) => health_result(r, probe.timeout),
                Err(message) => {
                    session = None;
                    let now = record::now();
                    HealthcheckResult { start: now.clone(), end: now, exit_code: -1, output: message }
                }
            };
            // Docker's events of the probe's exec, as dockerd sends them for each.
            match names::random_id() {
                Ok(exec_id) => {
                    let attrs = [("execID", exec_id.clone())];
                    self.ctr_event(&rec, &actions[0], &attrs);
                    self.ctr_event(&rec, &actions[1], &attrs);
                    self.ctr_event(&rec, "exec_die", &[("execID", exec_id), ("exitCode", result.exit_code.to_string())]);
                }
                Err(e) => tracing::debug!("no exec id for a probe of {}: {}", ctr.id, e.message),
            }
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

    /// The container's probe session, opened on first use (and again after a failure).
    async fn probe_session<'s>(&self, ctr: &Ctr, probe: &Probe, session: &'s mut Option<Session>) -> Result<&'s mut Session, String> {
        if session.is_none() {
            let config = ExecConfig { cmd: Some(probe.argv.clone()), ..Default::default() };
            let process = self.exec_process(&ctr.id, &config).map_err(|e| e.message)?;
            let req = Request::Probe { process: Box::new(process), timeout_ms: probe.timeout.as_millis() as u64 };
            let conn = match self.tasks.connect(&ctr.bundle, &req).await {
                Ok(c) if c.reply.ok => c,
                Ok(c) => return Err(c.reply.message),
                Err(e) => return Err(e.to_string()),
            };
            *session = Some(Session { conn, line: String::new() });
        }
        session.as_mut().ok_or_else(|| "no probe session".to_string())
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
    fn results_read_as_dockerd_records_them() {
        let r = |v: Value| health_result(serde_json::from_value(v).unwrap(), Duration::from_secs(3));
        let ok = r(serde_json::json!({"start": "s", "end": "e", "exit_code": 0, "output": "hi\n"}));
        assert_eq!((ok.exit_code, ok.output.as_str(), ok.start.as_str()), (0, "hi\n", "s"));
        let long = r(
            serde_json::json!({"start": "s", "end": "e", "exit_code": 1, "output": "x".repeat(berth_shim::MAX_PROBE_OUTPUT), "truncated": true}),
        );
        assert_eq!((long.exit_code, long.output.len()), (1, berth_shim::MAX_PROBE_OUTPUT + 3));
        assert!(long.output.ends_with("x..."));
        let late = r(serde_json::json!({"start": "s", "end": "e", "timed_out": true}));
        assert_eq!((late.exit_code, late.output.as_str()), (-1, "Health check exceeded timeout (3s)"));
        let bad = r(serde_json::json!({"start": "s", "end": "e", "error": "no such file"}));
        assert_eq!((bad.exit_code, bad.output.as_str()), (-1, "no such file"));
    }
}
