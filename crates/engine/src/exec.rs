//! `docker exec`: exec instances are created here, run by the container's shim, and keep their
//! exit code until their container stops or goes, or for five minutes after they end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::containers::ExecConfig;
use berth_api::containers::{ExecInspect, ExecProcessConfig};
use berth_api::params::Io;
use berth_api::{ApiError, Kind};
use berth_shim::{ErrorKind, Request};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::{Engine, names, spec};

/// How long an exec instance that ended stays inspectable: Docker's exec garbage collection
/// forgets them minutes after they end too, rather than for the container's whole life.
const KEEP_ENDED: Duration = Duration::from_secs(300);

#[derive(Default)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
    /// When it ended.
    ended: Option<Instant>,
}

impl ExecState {
    fn end(&mut self, code: i32) {
        self.running = false;
        self.exit_code = Some(code);
        self.ended = Some(Instant::now());
    }
}

/// Forget exec instances that ended more than `keep` ago (`now` given, for tests).
fn prune(execs: &mut HashMap<String, Arc<Exec>>, now: Instant, keep: Duration) {
    execs.retain(|_, e| e.state().ended.is_none_or(|t| now.saturating_duration_since(t) <= keep));
}

pub struct Exec {
    id: String,
    container: String,
    config: ExecConfig,
    state: Mutex<ExecState>,
}

impl Exec {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Exec>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exec(&self, id: &str) -> Result<Arc<Exec>, ApiError> {
        self.execs().get(id).cloned().ok_or_else(|| ApiError::new(Kind::NotFound, format!("No such exec instance: {id}")))
    }

    pub(crate) fn exec_ids_of(&self, container: &str) -> Vec<String> {
        self.execs().values().filter(|e| e.container == container).map(|e| e.id.clone()).collect()
    }

    pub(crate) fn drop_execs_of(&self, container: &str) {
        self.execs().retain(|_, e| e.container != container);
    }

    pub(crate) fn exec_create_impl(&self, id: &str, config: ExecConfig) -> Result<String, ApiError> {
        let ctr = self.lookup(id)?;
        let rec = ctr.rec();
        if !rec.state.status.is_live() {
            return Err(ApiError::new(Kind::Conflict, format!("Container {} is not running", rec.id)));
        }
        if rec.state.status == crate::Status::Paused {
            return Err(ApiError::new(Kind::Conflict, format!("Container {id} is paused, unpause the container before exec")));
        }
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(ApiError::new(Kind::InvalidArgument, "No exec command specified"));
        }
        let exec_id = names::random_id()?;
        self.ctr_event(
            &rec,
            &format!("exec_create: {}", event_command(config.cmd.as_deref().unwrap_or(&[]))),
            &[("execID", exec_id.clone())],
        );
        let e = Arc::new(Exec { id: exec_id.clone(), container: rec.id.clone(), config, state: Mutex::new(ExecState::default()) });
        let mut execs = self.execs();
        prune(&mut execs, Instant::now(), KEEP_ENDED);
        execs.insert(exec_id.clone(), e);
        Ok(exec_id)
    }

    pub(crate) fn exec_check_impl(&self, exec_id: &str) -> Result<bool, ApiError> {
        let e = self.exec(exec_id)?;
        if e.state().started {
            return Err(ApiError::new(Kind::Conflict, format!("Error: Exec command {exec_id} has already run")));
        }
        let ctr = self.lookup(&e.container)?;
        if !ctr.rec().state.status.is_live() {
            return Err(ApiError::new(Kind::Conflict, format!("Container {} is not running", e.container)));
        }
        Ok(e.config.tty.unwrap_or(false))
    }

    /// The OCI process for an exec: the container's own process, with the exec's command,
    /// environment, directory, user and terminal.
    pub(crate) fn exec_process(&self, container: &str, c: &ExecConfig) -> Result<oci_spec::runtime::Process, ApiError> {
        let ctr = self.lookup(container)?;
        let cfg_path = ctr.bundle.join("config.json");
        let data = std::fs::read(&cfg_path).map_err(|err| ApiError::new(Kind::Conflict, format!("container is not running: {err}")))?;
        let spec: Value = serde_json::from_slice(&data).map_err(|err| ApiError::new(Kind::Internal, err.to_string()))?;
        let mut process = spec["process"].clone();
        process["args"] = json!(c.cmd.clone().unwrap_or_default());
        process["terminal"] = json!(c.tty.unwrap_or(false));
        if let Some(obj) = process.as_object_mut() {
            obj.remove("consoleSize");
        }
        // The exec's own terminal size (`ConsoleSize`, 1.42), not the container's.
        if let (true, (h, w)) = (c.tty.unwrap_or(false), crate::containers::console_size(&c.console_size))
            && h > 0
            && w > 0
        {
            process["consoleSize"] = json!({"height": h, "width": w});
        }
        let mut env: Vec<String> = serde_json::from_value(process["env"].clone()).unwrap_or_default();
        let key = |s: &String| s.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| s.clone());
        for x in c.env.clone().unwrap_or_default() {
            match env.iter_mut().find(|y| key(y) == key(&x)) {
                Some(slot) => *slot = x,
                None => env.push(x),
            }
        }
        if c.tty == Some(true) && !env.iter().any(|x| x.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        process["env"] = json!(env);
        if let Some(w) = c.working_dir.as_ref().filter(|w| !w.is_empty()) {
            process["cwd"] = json!(w);
        }
        if let Some(u) = c.user.as_ref().filter(|u| !u.is_empty()) {
            let rootfs = ctr.bundle.join("rootfs");
            // The container's --group-add applies to an exec's user too, as in Docker.
            let rec = ctr.rec();
            let user = spec::resolve_user(&rootfs, u, rec.host_config.group_add.as_deref().unwrap_or(&[]))?;
            process["user"] = json!({"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids});
            // HOME is the exec user's, as the runtime gives Docker's processes, unless the
            // container's config or the exec set it.
            let set_by = |env: &Option<Vec<String>>| env.iter().flatten().any(|e| e.starts_with("HOME="));
            if !set_by(&rec.config.env) && !set_by(&c.env) {
                let mut env: Vec<String> = serde_json::from_value(process["env"].clone()).unwrap_or_default();
                env.retain(|e| !e.starts_with("HOME="));
                env.push(format!("HOME={}", user.home));
                process["env"] = json!(env);
            }
        }
        if c.privileged == Some(true) {
            let caps = spec::capabilities(true, &[], &[])?;
            process["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
        }
        serde_json::from_value(process).map_err(|err| ApiError::new(Kind::InvalidArgument, format!("exec process: {err}")))
    }

    /// `raw`: write the output unframed (see berth-api's `exec_start`).
    pub(crate) async fn exec_start_impl(&self, exec_id: String, io: Option<Io>, raw: bool) -> Result<(), ApiError> {
        let e = self.exec(&exec_id)?;
        {
            let mut s = e.state();
            if s.started {
                return Err(ApiError::new(Kind::Conflict, format!("Error: Exec command {exec_id} has already run")));
            }
            s.started = true;
            s.running = true;
        }
        let ctr = self.lookup(&e.container)?;
        let stdin = e.config.attach_stdin.unwrap_or(false) && io.is_some();
        let started = async {
            let process = self.exec_process(&e.container, &e.config)?;
            let conn = self.tasks.connect(&ctr.bundle, &Request::Exec { process: Box::new(process), stdin }).await?;
            if conn.reply.ok {
                Ok(conn)
            } else {
                let kind = conn.reply.kind.unwrap_or(ErrorKind::Internal);
                Err(crate::error::Error::Runtime { kind, message: exec_message(&conn.reply.message, kind) })
            }
        };
        let conn = match started.await {
            Ok(c) => c,
            Err(err) => {
                // Docker's codes: 127 not found, 126 any other failure to run it.
                let err: crate::error::Error = err;
                e.state().end(err.exit_code().unwrap_or(126));
                let err = ApiError::from(err);
                // Attached clients read the failure on the stream, then inspect the exit code.
                if let Some(mut io) = io {
                    let msg = format!("{}\r\n", err.message);
                    if !raw {
                        let _ = io.write_all(&berth_shim::frame_header(berth_shim::STDOUT, msg.len())).await;
                    }
                    let _ = io.write_all(msg.as_bytes()).await;
                    let _ = io.shutdown().await;
                    return Ok(());
                }
                return Err(err);
            }
        };
        e.state().pid = conn.reply.pid.unwrap_or(0);
        let keys = berth_format::detach_keys(e.config.detach_keys.as_deref());
        let rec = ctr.rec();
        let command = event_command(e.config.cmd.as_deref().unwrap_or(&[]));
        self.ctr_event(&rec, &format!("exec_start: {command}"), &[("execID", exec_id.clone())]);
        let engine = self.clone();
        let finish = move |status: Option<berth_shim::ExitStatus>| {
            let code = status.map_or(126, |st| st.exit_code);
            e.state().end(code);
            engine.ctr_event(&rec, "exec_die", &[("execID", e.id.clone()), ("exitCode", code.to_string())]);
        };
        match io {
            Some(io) => {
                let status = crate::stream::pump(conn, io, raw, stdin, keys).await;
                finish(status);
            }
            None => {
                tokio::spawn(async move {
                    let status = crate::stream::pump(conn, berth_api::params::nobody(), true, false, Vec::new()).await;
                    finish(status);
                });
            }
        }
        Ok(())
    }

    pub(crate) fn exec_inspect_impl(&self, exec_id: &str) -> Result<ExecInspect, ApiError> {
        let e = self.exec(exec_id)?;
        let s = e.state();
        let c = &e.config;
        let cmd = c.cmd.clone().unwrap_or_default();
        Ok(ExecInspect {
            can_remove: false,
            container_id: e.container.clone(),
            detach_keys: c.detach_keys.clone().unwrap_or_default(),
            exit_code: s.exit_code.map(i64::from),
            id: e.id.clone(),
            open_stderr: c.attach_stderr.unwrap_or(false),
            open_stdin: c.attach_stdin.unwrap_or(false),
            open_stdout: c.attach_stdout.unwrap_or(false),
            process_config: ExecProcessConfig {
                arguments: cmd.iter().skip(1).cloned().collect(),
                entrypoint: cmd.first().cloned().unwrap_or_default(),
                privileged: c.privileged.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
                user: c.user.clone().unwrap_or_default(),
            },
            running: s.running,
            pid: i64::from(s.pid),
        })
    }

    pub(crate) async fn exec_resize_impl(&self, exec_id: &str, height: u16, width: u16) -> Result<(), ApiError> {
        let e = self.exec(exec_id)?;
        let pid = e.state().pid;
        if pid == 0 {
            return Err(ApiError::new(Kind::Conflict, format!("exec {exec_id} is not running")));
        }
        let ctr = self.lookup(&e.container)?;
        self.tasks.resize(&ctr.bundle, Some(pid), height, width).await?;
        Ok(())
    }
}

/// An exec's command as Docker's `exec_create`/`exec_start` events name it: the program, a space,
/// its arguments (so `ps` alone is `"ps "`).
pub(crate) fn event_command(cmd: &[String]) -> String {
    match cmd.split_first() {
        Some((program, args)) => format!("{program} {}", args.join(" ")),
        None => " ".into(),
    }
}

/// Docker's wording for a failed exec, which the docker CLI reads for its exit code.
fn exec_message(message: &str, kind: ErrorKind) -> String {
    match kind {
        ErrorKind::ExecNotFound | ErrorKind::ExecPermission => {
            format!("OCI runtime exec failed: exec failed: unable to start container process: {message}: unknown")
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: &str, ended: Option<Instant>) -> (String, Arc<Exec>) {
        let state = ExecState { started: true, running: ended.is_none(), ended, ..Default::default() };
        (id.to_string(), Arc::new(Exec { id: id.into(), container: "c".into(), config: ExecConfig::default(), state: Mutex::new(state) }))
    }

    #[test]
    fn ended_execs_are_forgotten_after_a_while_running_ones_never() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(300);
        let mut execs: HashMap<_, _> =
            [exec("running", None), exec("old", Some(t0)), exec("recent", Some(t0 + Duration::from_secs(200)))].into_iter().collect();
        prune(&mut execs, t0 + Duration::from_secs(301), keep);
        let mut left: Vec<_> = execs.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["recent", "running"]);
    }
}
