//! The container lifecycle: create, start (through a shim), stop, kill, wait, remove, restore
//! of exits, and the list/inspect views built from records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_api::containers::{
    AttachOptions, ContainerConfig, Containers, CreateBody, ExecConfig, ListOptions, LogsOptions, StrSlice, WaitCondition,
};
use berth_api::params::{ByteStream, Io};
use berth_api::{ApiError, Kind};
use berth_shim::{ExitStatus, Request};
use serde_json::{Value, json};

use crate::record::{self, Record, RunState, Status, ZERO_TIME};
use crate::{Ctr, Engine, names, spec};

fn internal(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> ApiError {
    let what = what.to_string();
    let p = p.to_path_buf();
    move |e| ApiError::new(Kind::Internal, format!("{what} {}: {e}", p.display()))
}

fn not_running(id: &str) -> ApiError {
    ApiError::new(Kind::Conflict, format!("Container {id} is not running"))
}

/// `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<i32, ApiError> {
    let bad = || ApiError::new(Kind::InvalidArgument, format!("Invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map(|sig| sig as i32).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>().map(|sig| sig as i32).map_err(|_| bad())
}

/// The checks of a create request that need nothing but the request (Docker's rules for the
/// HostConfig, binds, ulimits, sysctls, capabilities …): a request they refuse makes nothing.
/// Returns Docker's warnings. (Public for the fuzz targets: requests are hostile input.)
pub fn check_create(body: &CreateBody) -> Result<Vec<String>, ApiError> {
    let default = berth_api::containers::HostConfig::default();
    let hc = body.host_config.as_ref().unwrap_or(&default);
    let warnings = crate::hostconfig::check(&body.config, hc)?;
    spec::check(hc)?;
    spec::capabilities(false, hc.cap_add.as_deref().unwrap_or(&[]), hc.cap_drop.as_deref().unwrap_or(&[]))?;
    Ok(warnings)
}

/// Docker's `ENTRYPOINT` + `CMD` merge with the image's defaults.
fn merge(
    mut user: ContainerConfig,
    image: &berth_store::image::ContainerConfig,
) -> Result<(ContainerConfig, String, Vec<String>), ApiError> {
    let user_ep = user.entrypoint.take().map(StrSlice::into_vec);
    let user_cmd = user.cmd.take().map(StrSlice::into_vec).filter(|c| !c.is_empty());
    let (entrypoint, cmd) = match user_ep {
        // `--entrypoint ""` clears the image's entrypoint and its cmd.
        Some(ep) if ep.len() == 1 && ep[0].is_empty() => (Vec::new(), user_cmd.unwrap_or_default()),
        Some(ep) if !ep.is_empty() => (ep, user_cmd.unwrap_or_default()),
        _ => (image.entrypoint.clone().unwrap_or_default(), user_cmd.or_else(|| image.cmd.clone()).unwrap_or_default()),
    };
    let mut argv: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if argv.is_empty() {
        return Err(ApiError::new(Kind::InvalidArgument, "No command specified"));
    }
    let path = argv.remove(0);
    let key = |e: &String| e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.clone());
    let mut env = image.env.clone().unwrap_or_default();
    for e in user.env.take().unwrap_or_default() {
        match env.iter_mut().find(|x| key(x) == key(&e)) {
            Some(slot) => *slot = e,
            None => env.push(e),
        }
    }
    let mut labels: BTreeMap<String, String> = image.labels.clone().unwrap_or_default();
    labels.extend(user.labels.take().unwrap_or_default());
    user.env = Some(env);
    user.labels = Some(labels);
    user.entrypoint = (!entrypoint.is_empty()).then_some(StrSlice::Many(entrypoint));
    user.cmd = (!cmd.is_empty()).then_some(StrSlice::Many(cmd));
    if user.working_dir.as_deref().unwrap_or("").is_empty() {
        user.working_dir = Some(image.working_dir.clone());
    }
    if user.user.as_deref().unwrap_or("").is_empty() {
        user.user = Some(image.user.clone());
    }
    if user.stop_signal.as_deref().unwrap_or("").is_empty() && !image.stop_signal.is_empty() {
        user.stop_signal = Some(image.stop_signal.clone());
    }
    if let Some(ports) = &image.exposed_ports {
        user.extra.entry("ExposedPorts").or_insert_with(|| json!(ports));
    }
    Ok((user, path, argv))
}

/// Docker's /etc/hosts for a container without a network of its own.
/// How long a bundle made at create (see [`Engine::prepare_ahead`]) waits for its start.
const AHEAD_TTL: Duration = Duration::from_secs(1);

/// A bundle being made ahead of its start, and when that began.
pub(crate) struct Ahead {
    made: Instant,
    task: tokio::task::JoinHandle<Result<(), ApiError>>,
}

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The host's resolv.conf without loopback name servers (unreachable from a container's own
/// network namespace), falling back to Docker's public defaults when none is left.
pub fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            let addr = f.next().unwrap_or("");
            let ip: Option<std::net::IpAddr> = addr.split('%').next().and_then(|a| a.parse().ok());
            if ip.is_none_or(|ip| ip.is_loopback()) {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn write_init_files(dir: &Path, hostname: &str, hc: &berth_api::containers::HostConfig) -> Result<(), ApiError> {
    let host_net = hc.network_mode.as_deref() == Some("host");
    let mut hosts = if host_net { std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| HOSTS.into()) } else { HOSTS.into() };
    for h in hc.extra_hosts.iter().flatten() {
        hosts.push_str(&crate::hostconfig::extra_host(h)?);
        hosts.push('\n');
    }
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = crate::hostconfig::resolv_conf(&if host_net { host_resolv } else { container_resolv_conf(&host_resolv) }, hc);
    for (name, data) in [("hostname", format!("{hostname}\n")), ("hosts", hosts), ("resolv.conf", resolv)] {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(internal("writing", &p))?;
    }
    Ok(())
}

/// Rename `dir` to a `.rm-` name beside it (unique, so a directory being deleted never blocks
/// the next): None when there is no such directory.
pub(crate) fn trash(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let doomed = dir.with_file_name(format!("{TRASH}{name}-{nanos:x}"));
    match std::fs::rename(dir, &doomed) {
        Ok(()) => Ok(Some(doomed)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The prefix of directories renamed away to be deleted.
pub(crate) const TRASH: &str = ".rm-";

/// Delete a directory renamed away; a bundle's rootfs is unmounted first, and a bundle whose
/// rootfs stays mounted is left alone (deleting through the mount would empty the layer).
pub(crate) fn delete_tree(dir: &Path, tasks: &dyn crate::task::Tasks) {
    if !tasks.unmount_rootfs(&dir.join("rootfs")) {
        return tracing::warn!("not removing {}: its rootfs is still mounted", dir.display());
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// Docker's `HumanDuration` of a span in (possibly fractional, possibly negative) seconds.
fn human_duration(secs: f64) -> String {
    berth_format::human_duration(secs.max(0.0) as u64)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn status_text(s: &RunState) -> String {
    match s.status {
        Status::Running => format!("Up {}", human_duration(now_secs() - record::unix_seconds(&s.started_at))),
        Status::Paused => format!("Up {} (Paused)", human_duration(now_secs() - record::unix_seconds(&s.started_at))),
        Status::Restarting => {
            format!("Restarting ({}) {} ago", s.exit_code, human_duration(now_secs() - record::unix_seconds(&s.finished_at)))
        }
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        Status::Created => "Created".into(),
        Status::Exited => {
            if s.finished_at == ZERO_TIME {
                "Created".into()
            } else {
                format!("Exited ({}) {} ago", s.exit_code, human_duration(now_secs() - record::unix_seconds(&s.finished_at)))
            }
        }
    }
}

/// `ps`'s COMMAND as Docker builds it: arguments holding a space in single quotes.
fn command_line(rec: &Record) -> String {
    let mut out = rec.path.clone();
    for a in &rec.args {
        out.push(' ');
        if a.contains(' ') {
            out.push_str(&format!("'{a}'"));
        } else {
            out.push_str(a);
        }
    }
    out
}

impl Engine {
    pub(crate) fn spawn_monitor(&self, ctr: Arc<Ctr>) {
        let e = self.clone();
        tokio::spawn(async move {
            let status = e.tasks.wait(&ctr.bundle).await;
            e.finish_exit(&ctr, status).await;
        });
    }

    /// The container's process is gone: record how it ended and release its bundle.
    pub(crate) async fn finish_exit(&self, ctr: &Arc<Ctr>, status: Option<ExitStatus>) {
        let read_status = || self.tasks.recorded_exit(&ctr.bundle);
        let mut status = status.or_else(read_status);
        if status.is_none()
            && let Some(shim) = ctr.rec().shim
        {
            // The connection broke but the shim lives: it is finishing; its status follows.
            for _ in 0..500 {
                if !self.tasks.alive(&shim) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            status = read_status();
        }
        let rec = ctr.rec();
        if !rec.state.status.is_live() {
            return;
        }
        let error = if status.is_none() {
            // The shim died without recording an exit: make sure nothing of the container is left.
            self.destroy_leftovers(ctr).await;
            "the container's shim exited without recording an exit status".to_string()
        } else {
            String::new()
        };
        let auto_remove = rec.host_config.auto_remove.unwrap_or(false) && !ctr.restarting.load(Ordering::SeqCst);
        // A forced removal waiting for this exit takes the bundle away itself, unmounting after
        // it answers. (An auto-remove container's layer is volatile: unmounting it costs little.)
        if !ctr.removing.load(Ordering::SeqCst) {
            self.cleanup_bundle(ctr);
        }
        self.drop_execs_of(&ctr.id);
        let status = status.unwrap_or(ExitStatus { exit_code: 255, finished_at: record::now(), oom_killed: false });
        // A removal (forced, or automatic) follows at once: one write marks the exit and the
        // removal together, where "exited" then "removing" cost two.
        let removal_next = auto_remove || ctr.removing.load(Ordering::SeqCst);
        let exited = move |r: &mut Record| {
            r.state.status = if removal_next { Status::Removing } else { Status::Exited };
            r.state.pid = 0;
            r.state.exit_code = status.exit_code;
            r.state.finished_at = status.finished_at;
            r.state.oom_killed = status.oom_killed;
            r.state.error = error;
            r.shim = None;
        };
        if auto_remove {
            // Its removal follows at once; were berthd to die first, restore finds the shim gone
            // and removes it just the same.
            ctr.update_in_memory(exited);
        } else {
            // A file written and renamed: on a blocking thread, not a runtime worker (an `rm -f`
            // of fifty containers records fifty exits at once).
            let c = Arc::clone(ctr);
            match tokio::task::spawn_blocking(move || c.update_status(exited)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("recording the exit of {}: {}", ctr.id, e.message),
                Err(e) => tracing::error!("recording the exit of {}: {e}", ctr.id),
            }
        }
        if auto_remove {
            let e = self.clone();
            let ctr = Arc::clone(ctr);
            tokio::spawn(async move {
                let _op = ctr.op.lock().await;
                if !ctr.rec().state.status.is_live()
                    && let Err(err) = e.remove_now(&ctr).await
                {
                    tracing::warn!("auto-removing {}: {}", ctr.id, err.message);
                }
            });
        }
    }

    /// Unmount the rootfs and remove the bundle directory (idempotent; the directory is renamed
    /// away at once and deleted after, see [`Engine::delete_later`]).
    pub(crate) fn cleanup_bundle(&self, ctr: &Ctr) {
        self.cleanup_bundle_at(&ctr.bundle)
    }

    fn cleanup_bundle_at(&self, bundle: &Path) {
        self.tasks.unmount_rootfs(&bundle.join("rootfs"));
        match trash(bundle) {
            Ok(Some(doomed)) => self.delete_later(vec![doomed], false),
            Ok(None) => {}
            Err(e) => tracing::warn!("removing {}: {e}", bundle.display()),
        }
    }

    /// Start making the bundle of a container just created, while its record is written and
    /// its create is answered: `docker run` asks for the start right after. None where the
    /// bundle depends on other containers (`container:X` modes), which may change meanwhile.
    fn prepare_ahead(&self, rec: &Record) -> Option<Ahead> {
        let hc = &rec.host_config;
        let modes = [&hc.network_mode, &hc.pid_mode, &hc.ipc_mode, &hc.uts_mode];
        if modes.iter().any(|m| m.as_deref().is_some_and(|m| m.starts_with("container:"))) {
            return None;
        }
        let e = self.clone();
        let rec = rec.clone();
        let task = tokio::task::spawn_blocking(move || {
            let never = |n: &str| Err(ApiError::new(Kind::Internal, format!("container:{n} looked up ahead of a start")));
            e.prepare_bundle(&rec, &e.bundles_dir.join(&rec.id), &e.containers_dir.join(&rec.id), &never)
        });
        Some(Ahead { made: Instant::now(), task })
    }

    /// Take down a bundle made ahead whose start did not come in time: a created container
    /// holds no mount, as in Docker. Also for removals and shutdown.
    pub(crate) fn expire_ahead(&self, ctr: &Arc<Ctr>) {
        let e = self.clone();
        let ctr = Arc::clone(ctr);
        tokio::spawn(async move {
            tokio::time::sleep(AHEAD_TTL).await;
            let _op = ctr.op.lock().await;
            e.drop_ahead(&ctr).await;
        });
    }

    pub(crate) async fn drop_ahead(&self, ctr: &Arc<Ctr>) {
        let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(a) = ahead {
            let _ = a.task.await;
            let e = self.clone();
            let ctr = Arc::clone(ctr);
            let _ = tokio::task::spawn_blocking(move || e.cleanup_bundle(&ctr)).await;
        }
    }

    /// Delete directories already renamed out of sight, off the request's path: `rm` and
    /// `wait?condition=removed` answer once a container is gone, not once its files are.
    /// Whatever a stop of berthd cuts short, the next start deletes (`.rm-*`).
    /// With `detached_layer`, a layer taken away with `detach_unsynced` is among them: its
    /// removal is made durable before anything is deleted, so a crash of the machine brings a
    /// removed container back whole, never with its layer half deleted. (If that fails, the
    /// next start deletes what is left.)
    pub(crate) fn delete_later(&self, dirs: Vec<PathBuf>, detached_layer: bool) {
        let pending = Arc::clone(&self.deleting);
        pending.0.fetch_add(1, Ordering::SeqCst);
        let images = Arc::clone(&self.images);
        let tasks = Arc::clone(&self.tasks);
        tokio::task::spawn_blocking(move || {
            let synced = !detached_layer || images.snapshots.sync_detached().inspect_err(|e| tracing::warn!("{e}")).is_ok();
            for d in dirs.iter().filter(|_| synced) {
                delete_tree(d, &*tasks);
            }
            pending.0.fetch_sub(1, Ordering::SeqCst);
            pending.1.notify_waiters();
        });
    }

    /// Wait (up to `limit`) for the deletes [`Engine::delete_later`] started: a stop of berthd
    /// leaves no mount of a removed container behind.
    pub(crate) async fn deletes_done(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.deleting.1.notified();
            if self.deleting.0.load(Ordering::SeqCst) == 0 || Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// What the runtime still holds of a container that is not running (a failed start, a shim
    /// that died without a word): its processes, cgroup and state go. A stat when there is none.
    /// (Not after a normal exit: the shim deletes its container's state itself.)
    pub(crate) async fn destroy_leftovers(&self, ctr: &Arc<Ctr>) {
        let (e, id) = (self.clone(), ctr.id.clone());
        let cgroup = spec::cgroup_path(&self.cfg.cgroup_parent, &ctr.rec().host_config, &id);
        let _ = tokio::task::spawn_blocking(move || e.tasks.destroy(&id, Some(Path::new(&cgroup)), None)).await;
    }

    /// Remove a stopped container's bundle, snapshot, files and record.
    pub(crate) async fn remove_now(&self, ctr: &Arc<Ctr>) -> Result<(), ApiError> {
        // Answered before it is durable: a crash of the machine just after brings the container
        // back whole (the layer's removal is fsynced before anything is deleted), or, if only
        // the layer's removal reached the disk, restore finds the record without its layer and
        // marks it dead (as Docker does), to be removed again.
        // A bundle still being made ahead is finished before it is taken away.
        let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(a) = ahead {
            let _ = a.task.await;
        }
        // The "removing" mark, then the bundle, the layer and the record taken away at once
        // (renamed out of sight, the layer out of the store), unmounted and deleted after the
        // container is gone: unmounting a layer that is not volatile syncs the whole file system
        // under it. On a blocking thread, as one: writes and renames wait on the disk and their
        // directories' locks, and fifty removals at once would otherwise hold both runtime workers.
        let c = Arc::clone(ctr);
        let images = Arc::clone(&self.images);
        // A durable layer's removal is made durable after the answer, before the delete.
        let ephemeral = ctr.rec().host_config.auto_remove.unwrap_or(false);
        let (doomed, detached_layer, taken) = tokio::task::spawn_blocking(move || {
            if c.rec().state.status != Status::Removing
                && let Err(e) = c.update_status(|r| r.state.status = Status::Removing)
            {
                return (Vec::new(), false, Err(e));
            }
            let (bundle, dir, key) = (&c.bundle, &c.dir, &c.id);
            let mut doomed = Vec::new();
            match trash(bundle) {
                Ok(b) => doomed.extend(b),
                Err(e) => tracing::warn!("removing {}: {e}", bundle.display()),
            }
            let mut detached_layer = false;
            match images.snapshots.detach_unsynced(key) {
                Ok(d) => {
                    doomed.push(d);
                    detached_layer = !ephemeral;
                }
                Err(berth_store::snapshot::SnapshotError::NotFound(_)) => {}
                Err(e) => {
                    let e = ApiError::new(Kind::Internal, format!("removing the container's layer: {e}"));
                    return (doomed, false, Err(e));
                }
            }
            let record = trash(dir).map_err(internal("removing", dir));
            if let Ok(Some(r)) = &record {
                doomed.push(r.clone());
            }
            (doomed, detached_layer, record.map(drop))
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
        self.delete_later(doomed, detached_layer);
        taken?;
        {
            let mut t = self.table_mut();
            t.by_id.remove(&ctr.id);
            let name = ctr.rec().name.clone();
            if t.names.get(&name) == Some(&ctr.id) {
                t.names.remove(&name);
            }
        }
        self.drop_execs_of(&ctr.id);
        ctr.release_attaches();
        ctr.removed.store(true, Ordering::SeqCst);
        ctr.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn create_ctr(&self, name: Option<String>, body: CreateBody) -> Result<Value, ApiError> {
        let warnings = check_create(&body)?;
        let CreateBody { config, host_config, .. } = body;
        let hc = host_config.unwrap_or_default();
        // Until bridge networks land (the network issue), `default`/`bridge` containers get a
        // private network namespace with loopback only (docs/api.md says so); the docker CLI sends
        // `bridge` by default, so a warning here would be printed for every run.
        let image_name = config
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::new(Kind::InvalidArgument, "Config.Image is required"))?;
        let image_id = self.images.resolve(&image_name).map_err(|e| match e {
            berth_store::images::ImagesError::NotFound(_) | berth_store::images::ImagesError::Reference(_) => {
                ApiError::new(Kind::NotFound, format!("No such image: {image_name}"))
            }
            e => ApiError::new(Kind::InvalidArgument, e.to_string()),
        })?;
        let (_, image_config) = self.images.config(&image_id).map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
        let image_rec = self.images.get(&image_id).map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
        let (merged, path, args) = merge(config, &image_config.config)?;
        if let Some(s) = merged.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            parse_signal(s)?;
        }
        if let Some(w) = merged.working_dir.as_deref().filter(|w| !w.is_empty() && !w.starts_with('/')) {
            return Err(ApiError::new(
                Kind::InvalidArgument,
                format!("the working directory '{w}' is invalid, it needs to be an absolute path"),
            ));
        }
        // Namespaces of another container: it must exist now (whether it runs is the start's
        // question), and a network shared with one on the host's network is the host's. A 400,
        // as dockerd answers for pid and ipc: the docker CLI takes a 404 from create for a
        // missing image and would go and pull it.
        let other = |name: &str| {
            self.lookup(name).map_err(|e| if e.kind == Kind::NotFound { ApiError::new(Kind::InvalidArgument, e.message) } else { e })
        };
        for mode in [&hc.network_mode, &hc.pid_mode, &hc.ipc_mode, &hc.uts_mode] {
            if let Some(name) = mode.as_deref().and_then(|m| m.strip_prefix("container:")) {
                other(name)?;
            }
        }
        if let Some(name) = hc.network_mode.as_deref().and_then(|m| m.strip_prefix("container:"))
            && other(name)?.rec().host_config.network_mode.as_deref() == Some("host")
        {
            crate::hostconfig::sysctls(&hc, false)?;
        }

        let id = names::random_id()?;
        // Reserve the name first, so two creates never both get it.
        let name = {
            let mut t = self.table_mut();
            let name = match name {
                Some(n) => {
                    let n = names::validate(&n)?;
                    if let Some(other) = t.names.get(&n) {
                        return Err(ApiError::new(
                            Kind::Conflict,
                            format!(
                                "Conflict. The container name \"/{n}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                            ),
                        ));
                    }
                    n
                }
                None => {
                    (0..100).map(|i| names::generate(&id, i)).find(|n| !t.names.contains_key(n)).unwrap_or_else(|| id[..12].to_string())
                }
            };
            t.names.insert(name.clone(), id.clone());
            name
        };
        let dir = self.containers_dir.join(&id);
        let undo = |e: ApiError| {
            let mut t = self.table_mut();
            if t.names.get(&name) == Some(&id) {
                t.names.remove(&name);
            }
            drop(t);
            let _ = self.images.snapshots.remove(&id);
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        // A `run --rm` container is thrown away when it exits, and after a crash of the machine:
        // its layer and record are written without fsyncs (docs/engine.md).
        let ephemeral = hc.auto_remove.unwrap_or(false);
        let result: Result<Record, ApiError> = (|| {
            std::fs::create_dir(&dir).map_err(internal("creating", &dir))?;
            let parent = image_rec.layers.last().map(|l| l.chain_id.to_string());
            let snapshots = &self.images.snapshots;
            // A durable layer's fsyncs are left for later, to run beside the record's.
            let prepared = if ephemeral {
                snapshots.prepare_ephemeral(&id, parent.as_deref())
            } else {
                snapshots.prepare_unsynced(&id, parent.as_deref())
            };
            prepared.map_err(|e| ApiError::new(Kind::Internal, format!("preparing the container's layer: {e}")))?;
            Ok(Record {
                version: record::RECORD_VERSION,
                id: id.clone(),
                name: name.clone(),
                created: record::now(),
                image: image_id.to_string(),
                image_name: image_name.clone(),
                path,
                args,
                config: merged,
                host_config: hc,
                state: RunState::default(),
                shim: None,
                restart_count: 0,
                log_path: dir.join(format!("{id}-json.log")),
            })
        })();
        let rec = result.map_err(undo)?;
        // The layer's fsyncs, the record's and the making of the bundle all at once (fsyncs are
        // idle time for the CPU). The record is put in place only once the layer is durable: a
        // crash of the machine before leaves a layer without a record, which restore removes.
        let images = Arc::clone(&self.images);
        let key = id.clone();
        let layer_synced = (!ephemeral).then(|| tokio::task::spawn_blocking(move || images.snapshots.sync(&key)));
        let ahead = self.prepare_ahead(&rec);
        let saved = async {
            if ephemeral {
                return rec.save(&dir, crate::record::Durability::Atomic);
            }
            let staged = rec.stage(&dir);
            if let Some(synced) = layer_synced {
                match synced.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(ApiError::new(Kind::Internal, format!("preparing the container's layer: {e}"))),
                    Err(e) => return Err(ApiError::new(Kind::Internal, e.to_string())),
                }
            }
            staged?.commit()
        };
        if let Err(e) = saved.await {
            if let Some(a) = ahead {
                let _ = a.task.await;
                self.cleanup_bundle_at(&self.bundles_dir.join(&id));
            }
            return Err(undo(e));
        }
        let ctr = self.new_ctr(rec);
        if let Some(a) = ahead {
            *ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
            self.expire_ahead(&ctr);
        }
        self.table_mut().by_id.insert(id.clone(), ctr);
        Ok(json!({"Id": id, "Warnings": warnings}))
    }

    /// Pid of a running container, for `container:X` namespace modes.
    fn ns_pid(&self, name: &str) -> Result<i32, ApiError> {
        let other = self.lookup(name)?;
        let r = other.rec();
        if r.state.status.is_live() && r.state.pid > 0 {
            Ok(r.state.pid)
        } else {
            Err(ApiError::new(Kind::Conflict, format!("cannot join namespaces of container {name}: it is not running")))
        }
    }

    async fn start_ctr(&self, ctr: &Arc<Ctr>) -> Result<bool, ApiError> {
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        match rec.state.status {
            s if s.is_live() => return Ok(false),
            Status::Removing | Status::Dead => {
                return Err(ApiError::new(Kind::Conflict, format!("container {} is marked for removal and cannot be started", rec.id)));
            }
            _ => {}
        }
        let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        let ready = match ahead {
            // A failed one is made again, so its error comes from this start as it would have.
            Some(a) => a.made.elapsed() < AHEAD_TTL && matches!(a.task.await, Ok(Ok(()))),
            None => false,
        };
        if !ready {
            self.cleanup_bundle(ctr);
        }
        let result = self.launch(ctr, &rec, ready).await;
        match result {
            Ok(started) => {
                ctr.update_status(|r| {
                    r.state = RunState {
                        status: Status::Running,
                        pid: started.pid,
                        exit_code: 0,
                        error: String::new(),
                        oom_killed: false,
                        started_at: record::now(),
                        finished_at: r.state.finished_at.clone(),
                    };
                    r.shim = Some(started.shim);
                })?;
                self.spawn_monitor(Arc::clone(ctr));
                Ok(true)
            }
            Err(e) => {
                // A shim that failed (or was killed) part way may leave the runtime's state.
                self.destroy_leftovers(ctr).await;
                self.cleanup_bundle(ctr);
                ctr.release_attaches();
                // Docker's codes: 127 not found, 126 cannot be run, 128 any other failure.
                let code = e.exit_code().unwrap_or(128);
                let message = e.to_string();
                let _ = ctr.update_status(|r| {
                    r.state.error = message;
                    r.state.exit_code = code;
                    r.state.status =
                        if r.state.finished_at == ZERO_TIME && r.state.started_at == ZERO_TIME { Status::Created } else { Status::Exited };
                });
                // Whoever waits for this start (`docker run` waits for the next exit) hears it ended;
                // like Docker, an auto-remove container that cannot start is removed.
                if rec.host_config.auto_remove.unwrap_or(false) {
                    let _ = self.remove_now(ctr).await;
                }
                Err(e.into())
            }
        }
    }

    /// Mount the rootfs and write the bundle: the spec, the init files, the shim's config.
    fn prepare_bundle(&self, rec: &Record, bundle: &Path, dir: &Path, ns_of: spec::NsLookup) -> Result<(), ApiError> {
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(internal("creating", &rootfs))?;
        let mounts = self.images.snapshots.mounts(&rec.id).map_err(|e| ApiError::new(Kind::Internal, format!("container layer: {e}")))?;
        let mounts: Vec<_> =
            mounts.iter().map(|m| self.mountpoints.as_deref().and_then(|b| m.with_lowest(b)).unwrap_or_else(|| m.clone())).collect();
        // A layer discarded when the container exits needs no syncs (Podman does the same for
        // `--rm`); unmounting a normal overlay syncs the whole file system under it.
        self.tasks.mount_rootfs(&mounts, &rootfs, rec.host_config.auto_remove.unwrap_or(false))?;
        let built = spec::build(rec, &rootfs, dir, ns_of, &self.cfg.cgroup_parent)?;
        // Made at each start, as Docker does: the host's resolv.conf may have changed since.
        write_init_files(dir, &built.hostname, &rec.host_config)?;
        let spec = built.spec;
        let cfg_path = bundle.join("config.json");
        std::fs::write(&cfg_path, serde_json::to_vec(&spec).unwrap_or_default()).map_err(internal("writing", &cfg_path))?;
        let (max_size, max_file) = match rec.host_config.log_config.as_ref().and_then(|l| l.config.as_ref()) {
            Some(opts) => crate::hostconfig::log_opts(opts)?,
            None => (None, None),
        };
        let (max_size, max_file) = (max_size.unwrap_or(self.cfg.log_max_size), max_file.unwrap_or(self.cfg.log_max_file));
        let shim_cfg = berth_shim::Config {
            id: rec.id.clone(),
            runtime_root: self.runtime_root.clone(),
            log_path: (!logs_off(rec)).then(|| rec.log_path.clone()),
            log_max_size: max_size,
            log_max_file: max_file,
            tty: rec.tty(),
            stdin: rec.config.open_stdin.unwrap_or(false),
            stdin_once: rec.config.stdin_once.unwrap_or(false),
            rows: 0,
            cols: 0,
        };
        let shim_path = bundle.join(berth_shim::CONFIG);
        std::fs::write(&shim_path, serde_json::to_vec(&shim_cfg).unwrap_or_default()).map_err(internal("writing", &shim_path))
    }

    /// Start the shim on the bundle (made now unless `prepared`), connect waiting attaches, start.
    async fn launch(&self, ctr: &Arc<Ctr>, rec: &Record, prepared: bool) -> crate::error::Result<crate::task::Created> {
        let bundle = &ctr.bundle;
        if !prepared {
            let ns_of = |n: &str| self.ns_pid(n);
            self.prepare_bundle(rec, bundle, &ctr.dir, &ns_of)?;
        }
        let started = self.tasks.create(bundle).await.map_err(|e| e.prefixed("failed to create task for container: "))?;
        let pending: Vec<_> = std::mem::take(&mut *ctr.pending_attach.lock().unwrap_or_else(|p| p.into_inner()));
        for (req, tx) in pending {
            if let Ok(conn) = self.tasks.connect(bundle, &req).await {
                let _ = tx.send(conn);
            }
        }
        let start = self.tasks.start(bundle).await;
        // The next start's shim, made while this container runs rather than before it does.
        let e = self.clone();
        // A spawn blocks its thread until the child has exec'd: not a worker's.
        tokio::task::spawn_blocking(move || e.tasks.prepare_next());
        if let Err(e) = start {
            let _ = self.tasks.kill(bundle, libc::SIGKILL, true).await;
            return Err(e);
        }
        Ok(started)
    }

    /// Wait until the container is not running, up to `timeout` (None: forever).
    async fn wait_stopped(&self, ctr: &Ctr, timeout: Option<Duration>) -> bool {
        let mut rx = ctr.changed.subscribe();
        let wait = async {
            loop {
                if !ctr.rec().state.status.is_live() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        match timeout {
            None => {
                wait.await;
                true
            }
            Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
        }
    }

    /// Freeze or thaw the container's processes (its cgroup's freezer) and record it.
    async fn set_frozen(&self, ctr: &Ctr, frozen: bool) -> Result<(), ApiError> {
        let (e, id) = (self.clone(), ctr.id.clone());
        tokio::task::spawn_blocking(move || e.tasks.freeze(&id, frozen))
            .await
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(Kind::Internal, format!("{} the container: {e}", if frozen { "pausing" } else { "unpausing" })))?;
        ctr.update_status(|r| r.state.status = if frozen { Status::Paused } else { Status::Running }).map(|_| ())
    }

    /// Signal the container; a paused one is thawed right after, as Docker does, so the signal
    /// is handled (and SIGKILL takes effect).
    async fn signal(&self, ctr: &Ctr, signal: i32, all: bool) -> Result<(), ApiError> {
        let sent = self.signal_now(ctr, signal, all).await;
        if sent.is_ok() && ctr.rec().state.status == Status::Paused {
            self.set_frozen(ctr, false).await?;
        }
        sent
    }

    async fn signal_now(&self, ctr: &Ctr, signal: i32, all: bool) -> Result<(), ApiError> {
        match self.tasks.kill(&ctr.bundle, signal, all).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::Conflict && !ctr.rec().state.status.is_live() => Err(not_running(&ctr.id)),
            Err(e) => Err(e.into()),
        }
    }

    async fn stop_ctr(&self, ctr: &Arc<Ctr>, signal: Option<String>, timeout: Option<i64>) -> Result<bool, ApiError> {
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        if !rec.state.status.is_live() {
            return Ok(false);
        }
        let sig = parse_signal(signal.as_deref().or(rec.config.stop_signal.as_deref()).filter(|s| !s.is_empty()).unwrap_or("SIGTERM"))?;
        let t = timeout.or(rec.config.stop_timeout).unwrap_or(10);
        if t != 0 {
            let _ = self.signal(ctr, sig, false).await;
            let limit = (t > 0).then(|| Duration::from_secs(t as u64));
            if self.wait_stopped(ctr, limit).await {
                return Ok(true);
            }
        }
        let _ = self.signal(ctr, libc::SIGKILL, true).await;
        if !self.wait_stopped(ctr, Some(Duration::from_secs(30))).await {
            return Err(ApiError::new(Kind::Internal, format!("container {} did not exit after SIGKILL", ctr.id)));
        }
        Ok(true)
    }

    pub(crate) fn inspect_json(&self, rec: &Record, size: bool) -> Value {
        let s = &rec.state;
        let hc = serde_json::to_value(&rec.host_config).unwrap_or_default();
        let mut config = serde_json::to_value(&rec.config).unwrap_or_default();
        if let Some(c) = config.as_object_mut() {
            let hostname = rec.config.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| rec.short_id().to_string());
            c.insert("Hostname".into(), json!(hostname));
            docker_config_keys(c);
            if c.get("Labels").is_none_or(Value::is_null) {
                c.insert("Labels".into(), json!({}));
            }
            c.insert("Image".into(), json!(rec.image_name));
            if c.get("Volumes").and_then(Value::as_object).is_some_and(|v| v.is_empty()) {
                c.insert("Volumes".into(), Value::Null);
            }
        }
        let mut v = json!({
            "Id": rec.id,
            "Created": rec.created,
            "Path": rec.path,
            "Args": rec.args,
            "State": {
                "Status": s.status.as_str(),
                "Running": s.status.is_live(),
                "Paused": s.status == Status::Paused,
                "Restarting": s.status == Status::Restarting,
                "OOMKilled": s.oom_killed,
                "Dead": s.status == Status::Dead,
                "Pid": s.pid,
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": s.started_at,
                "FinishedAt": s.finished_at,
            },
            "Image": rec.image,
            "ResolvConfPath": self.containers_dir.join(&rec.id).join("resolv.conf"),
            "HostnamePath": self.containers_dir.join(&rec.id).join("hostname"),
            "HostsPath": self.containers_dir.join(&rec.id).join("hosts"),
            "LogPath": if logs_off(rec) { PathBuf::new() } else { rec.log_path.clone() },
            "Name": format!("/{}", rec.name),
            "RestartCount": rec.restart_count,
            "Driver": self.driver_name(),
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": Some(self.exec_ids_of(&rec.id)).filter(|e| !e.is_empty()),
            "HostConfig": hc,
            "GraphDriver": {"Name": self.driver_name(), "Data": null},
            "Mounts": spec::mount_points(&rec.host_config),
            "Config": config,
            "NetworkSettings": {
                "Bridge": "", "SandboxID": "", "HairpinMode": false, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
                "Ports": {}, "SandboxKey": if s.pid > 0 { format!("/proc/{}/ns/net", s.pid) } else { String::new() },
                "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null, "EndpointID": "", "Gateway": "",
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
                "Networks": {}
            }
        });
        if let Some(hc) = v["HostConfig"].as_object_mut() {
            for (k, d) in [
                ("NetworkMode", json!("default")),
                ("AutoRemove", json!(false)),
                ("Privileged", json!(false)),
                ("ReadonlyRootfs", json!(false)),
                ("LogConfig", json!({"Type": "json-file", "Config": {}})),
                ("RestartPolicy", json!({"Name": "no", "MaximumRetryCount": 0})),
            ] {
                if hc.get(k).is_none_or(Value::is_null) {
                    hc.insert(k.into(), d);
                }
            }
            let cgroupns =
                if berth_runtime::cgroups::detect_mode() == Some(berth_runtime::cgroups::Mode::Unified) { "private" } else { "host" };
            crate::hostconfig::inspect_defaults(hc, rec.host_config.privileged == Some(true), cgroupns);
        }
        if size {
            let (rw, rootfs) = self.sizes(rec);
            v["SizeRw"] = json!(rw);
            v["SizeRootFs"] = json!(rootfs);
        }
        v
    }

    pub(crate) fn driver_name(&self) -> &'static str {
        match self.driver {
            berth_store::images::Driver::Overlay => "overlay2",
            berth_store::images::Driver::Vfs => "vfs",
        }
    }

    /// The writable layer's size and the whole root's (image layers included).
    pub(crate) fn sizes(&self, rec: &Record) -> (u64, u64) {
        let rw = self.images.snapshots.usage(&rec.id).map(|u| u.size).unwrap_or(0);
        let image = rec
            .image
            .parse::<berth_store::Digest>()
            .ok()
            .and_then(|d| self.images.get(&d).ok())
            .map(|i| self.images.layer_sizes(&i).iter().sum::<u64>())
            .unwrap_or(0);
        (rw, rw + image)
    }

    pub(crate) fn summary_json(&self, rec: &Record, size: bool) -> Value {
        let mut v = json!({
            "Id": rec.id,
            "Names": [format!("/{}", rec.name)],
            "Image": rec.image_name,
            "ImageID": rec.image,
            "Command": command_line(rec),
            "Created": record::unix_seconds(&rec.created) as i64,
            "Ports": [],
            "Labels": rec.config.labels.clone().unwrap_or_default(),
            "State": rec.state.status.as_str(),
            "Status": status_text(&rec.state),
            "HostConfig": {"NetworkMode": rec.host_config.network_mode.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into())},
            "NetworkSettings": {"Networks": {}},
            "Mounts": spec::mount_points(&rec.host_config),
        });
        if size {
            let (rw, rootfs) = self.sizes(rec);
            v["SizeRw"] = json!(rw);
            v["SizeRootFs"] = json!(rootfs);
        }
        v
    }
}

/// `10m`, `1g`, `512k`, `100` (bytes), as the json-file driver takes sizes.
pub fn parse_size(s: &str) -> Result<u64, ApiError> {
    berth_format::parse_size(s).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))
}

/// Docker's `none` logging driver: the output goes to attached clients only.
fn logs_off(rec: &Record) -> bool {
    rec.host_config.log_config.as_ref().is_some_and(|l| l.typ == "none")
}

/// The keys Docker's container config always carries, in container and image inspect alike,
/// each with its value when unset (a null stays null).
pub(crate) fn docker_config_keys(c: &mut serde_json::Map<String, Value>) {
    for (k, default) in [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", json!("")),
        ("Volumes", Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ] {
        if c.get(k).is_none_or(Value::is_null) {
            c.insert(k.into(), default);
        }
    }
}

/// Docker's `label=` / `label!=` filters on a set of labels: `key`, or `key=value`.
pub(crate) fn labels_match(labels: Option<&BTreeMap<String, String>>, f: &berth_api::params::Filters) -> bool {
    let has = |l: &String| match l.split_once('=') {
        Some((k, v)) => labels.and_then(|m| m.get(k)).is_some_and(|x| x == v),
        None => labels.is_some_and(|m| m.contains_key(l.as_str())),
    };
    f.get("label").iter().all(has) && !f.get("label!").iter().any(has)
}

/// The `until=` filters of a prune, as Unix seconds.
pub(crate) fn until_filters(f: &berth_api::params::Filters) -> Result<Vec<f64>, ApiError> {
    let now = now_secs();
    f.get("until")
        .iter()
        .map(|u| berth_format::parse_timestamp(u, now).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string())))
        .collect()
}

/// The container list's filters (Docker's names). `names` are the compiled `name=` patterns.
fn matches_filters(rec: &Record, f: &berth_api::params::Filters, names: &[Option<regex::Regex>]) -> bool {
    let any = |k: &str, pred: &dyn Fn(&str) -> bool| {
        let v = f.get(k);
        v.is_empty() || v.iter().any(|x| pred(x))
    };
    let hc = &rec.host_config;
    // The network a container is on, by its mode (the default one is Docker's `bridge`).
    let network = match hc.network_mode.as_deref().unwrap_or("") {
        "" | "default" => "bridge",
        n => n,
    };
    // Sources and targets of its binds, mounts and tmpfs (looked through only for `volume=`).
    let mounted = |x: &str| {
        hc.binds.iter().flatten().flat_map(|b| b.split(':').take(2)).any(|p| p == x)
            || hc.mounts.iter().flatten().any(|m| m.source.as_deref() == Some(x) || m.target.as_deref() == Some(x))
            || hc.tmpfs.iter().flatten().any(|(t, _)| t == x)
    };
    let exposed = rec.config.extra.get("ExposedPorts").and_then(Value::as_object);
    any("id", &|x| rec.id.starts_with(x))
        // Docker's name filter is a regular expression, matched with or without the slash.
        && (names.is_empty() || names.iter().flatten().any(|r| r.is_match(&rec.name) || r.is_match(&format!("/{}", rec.name))))
        && any("status", &|x| rec.state.status.as_str() == x)
        && any("network", &|x| x == network)
        && any("volume", &mounted)
        && any("expose", &|x| exposed.is_some_and(|e| e.contains_key(x) || e.contains_key(&format!("{x}/tcp"))))
        // No healthchecks, published ports or swarm tasks yet; every container is `default`.
        && any("health", &|x| x == "none")
        && any("publish", &|_| false)
        && any("is-task", &|x| x == "false")
        && any("isolation", &|x| x == "default")
        && any("exited", &|x| rec.state.status == Status::Exited && x.parse::<i32>().is_ok_and(|c| c == rec.state.exit_code))
        && any("ancestor", &|x| {
            rec.image_name == x
                || rec.image == x
                || rec.image.strip_prefix("sha256:").is_some_and(|h| h.starts_with(x.strip_prefix("sha256:").unwrap_or(x)))
                || berth_store::reference::Reference::parse(x).ok().map(|r| r.to_string())
                    == berth_store::reference::Reference::parse(&rec.image_name).ok().map(|r| r.to_string())
        })
        && labels_match(rec.config.labels.as_ref(), f)
}

#[async_trait::async_trait]
impl Containers for Engine {
    async fn create(&self, name: Option<String>, body: CreateBody) -> Result<Value, ApiError> {
        self.create_ctr(name, body).await
    }

    async fn inspect(&self, id: &str, size: bool) -> Result<Value, ApiError> {
        let ctr = self.lookup(id)?;
        Ok(self.inspect_json(&ctr.rec(), size))
    }

    async fn list(&self, opts: ListOptions) -> Result<Vec<Value>, ApiError> {
        opts.filters.only(&[
            "id",
            "name",
            "label",
            "status",
            "ancestor",
            "exited",
            "before",
            "since",
            "network",
            "volume",
            "expose",
            "publish",
            "health",
            "is-task",
            "isolation",
        ])?;
        // A pattern that does not compile matches nothing, as in Docker.
        let names: Vec<Option<regex::Regex>> = opts.filters.get("name").iter().map(|n| regex::Regex::new(n).ok()).collect();
        for s in opts.filters.get("status") {
            if !["created", "restarting", "running", "removing", "paused", "exited", "dead"].contains(&s.as_str()) {
                return Err(ApiError::new(Kind::InvalidArgument, format!("invalid filter 'status={s}'")));
            }
        }
        let mut recs: Vec<Arc<Record>> = self.all().iter().map(|c| c.rec()).collect();
        recs.sort_by(|a, b| b.created.cmp(&a.created));
        let all = opts.all || opts.limit.is_some() || !opts.filters.get("status").is_empty() || !opts.filters.get("exited").is_empty();
        // before=X / since=X: created before / after container X (RFC 3339 with nanoseconds, so
        // the strings order as the times do).
        let created_of = |n: &String| self.lookup(n).map(|c| c.rec().created.clone());
        let before: Vec<String> = opts.filters.get("before").iter().map(created_of).collect::<Result<_, _>>()?;
        let since: Vec<String> = opts.filters.get("since").iter().map(created_of).collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for rec in recs {
            if !all && !rec.state.status.is_live() {
                continue;
            }
            if before.iter().any(|t| rec.created >= *t) || since.iter().any(|t| rec.created <= *t) {
                continue;
            }
            if !matches_filters(&rec, &opts.filters, &names) {
                continue;
            }
            out.push(self.summary_json(&rec, opts.size));
            if opts.limit.is_some_and(|n| out.len() as i64 >= n) {
                break;
            }
        }
        Ok(out)
    }

    async fn start(&self, id: &str) -> Result<bool, ApiError> {
        let ctr = self.lookup(id)?;
        self.start_ctr(&ctr).await
    }

    async fn stats(&self, id: &str) -> Result<Value, ApiError> {
        let ctr = self.lookup(id)?;
        let e = self.clone();
        tokio::task::spawn_blocking(move || crate::stats::sample(&e, &ctr.rec()))
            .await
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
    }

    async fn pause(&self, id: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let _op = ctr.op.lock().await;
        match ctr.rec().state.status {
            Status::Running => self.set_frozen(&ctr, true).await,
            Status::Paused => Err(ApiError::new(Kind::Conflict, format!("Container {} is already paused", ctr.id))),
            _ => Err(not_running(&ctr.id)),
        }
    }

    async fn unpause(&self, id: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let _op = ctr.op.lock().await;
        match ctr.rec().state.status {
            Status::Paused => self.set_frozen(&ctr, false).await,
            _ => Err(ApiError::new(Kind::Conflict, format!("Container {} is not paused", ctr.id))),
        }
    }

    async fn prune(&self, filters: berth_api::params::Filters) -> Result<Value, ApiError> {
        filters.only(&["until", "label", "label!"])?;
        let until = until_filters(&filters)?;
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for ctr in self.all() {
            let rec = ctr.rec();
            let created = record::unix_seconds(&rec.created);
            if rec.state.status.is_live() || until.iter().any(|u| created >= *u) || !labels_match(rec.config.labels.as_ref(), &filters) {
                continue;
            }
            // A walk of its layer: not on a runtime worker.
            let e = self.clone();
            let rw = tokio::task::spawn_blocking(move || e.sizes(&rec).0).await.unwrap_or(0);
            let _op = ctr.op.lock().await;
            // Started meanwhile, or removed by someone else: not ours to remove.
            if ctr.rec().state.status.is_live() || ctr.removed.load(Ordering::SeqCst) {
                continue;
            }
            match self.remove_now(&ctr).await {
                Ok(()) => {
                    deleted.push(ctr.id.clone());
                    reclaimed += rw;
                }
                Err(e) => tracing::warn!("pruning {}: {}", ctr.id, e.message),
            }
        }
        Ok(json!({"ContainersDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) }, "SpaceReclaimed": reclaimed}))
    }

    async fn stop(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<bool, ApiError> {
        let ctr = self.lookup(id)?;
        self.stop_ctr(&ctr, signal, timeout).await
    }

    async fn restart(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        ctr.restarting.store(true, Ordering::SeqCst);
        let stopped = self.stop_ctr(&ctr, signal, timeout).await;
        ctr.restarting.store(false, Ordering::SeqCst);
        stopped?;
        self.start_ctr(&ctr).await.map(|_| ())
    }

    async fn kill(&self, id: &str, signal: Option<String>) -> Result<(), ApiError> {
        let sig = parse_signal(signal.as_deref().unwrap_or("SIGKILL"))?;
        // Docker's wording for a kill that cannot be done.
        let cannot = |e: ApiError| ApiError::new(e.kind, format!("Cannot kill container: {id}: {}", e.message));
        let ctr = self.lookup(id).map_err(cannot)?;
        if !ctr.rec().state.status.is_live() {
            return Err(cannot(not_running(&ctr.id)));
        }
        self.signal(&ctr, sig, false).await.map_err(cannot)?;
        if sig == libc::SIGKILL {
            // Docker returns once a KILL has taken effect.
            self.wait_stopped(&ctr, Some(Duration::from_secs(10))).await;
        }
        Ok(())
    }

    async fn wait(&self, id: &str, condition: WaitCondition) -> Result<futures_util::future::BoxFuture<'static, Value>, ApiError> {
        let ctr = self.lookup(id)?;
        let mut rx = ctr.changed.subscribe();
        let first = ctr.rec();
        Ok(Box::pin(async move {
            loop {
                let rec = ctr.rec();
                let done = match condition {
                    WaitCondition::NotRunning => !rec.state.status.is_live(),
                    WaitCondition::NextExit => {
                        rec.state.finished_at != first.state.finished_at
                            || (rec.state.error != first.state.error && !rec.state.error.is_empty())
                    }
                    WaitCondition::Removed => ctr.removed.load(Ordering::SeqCst),
                };
                if done || rx.changed().await.is_err() {
                    // A removal clears the container's error, as Docker's does: the docker CLI
                    // prints any error a `removed` wait reports, after the start's own.
                    let cleared = matches!(condition, WaitCondition::Removed) && done;
                    let error = if rec.state.error.is_empty() || cleared { Value::Null } else { json!({"Message": rec.state.error}) };
                    return json!({"StatusCode": rec.state.exit_code, "Error": error});
                }
            }
        }))
    }

    async fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<(), ApiError> {
        let _ = volumes;
        let ctr = self.lookup(id)?;
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        if rec.state.status.is_live() {
            if !force {
                return Err(ApiError::new(
                    Kind::Conflict,
                    format!(
                        "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                        rec.id
                    ),
                ));
            }
            ctr.removing.store(true, Ordering::SeqCst);
            let _ = self.signal(&ctr, libc::SIGKILL, true).await;
            if !self.wait_stopped(&ctr, Some(Duration::from_secs(30))).await {
                ctr.removing.store(false, Ordering::SeqCst);
                return Err(ApiError::new(Kind::Internal, format!("container {} did not exit after SIGKILL", rec.id)));
            }
        }
        self.remove_now(&ctr).await
    }

    async fn logs(&self, id: &str, opts: LogsOptions) -> Result<(bool, ByteStream), ApiError> {
        let ctr = self.lookup(id)?;
        if logs_off(&ctr.rec()) {
            return Err(ApiError::new(Kind::NotImplemented, "configured logging driver does not support reading"));
        }
        let tty = ctr.rec().tty();
        Ok((tty, crate::logs::stream(ctr, opts)))
    }

    async fn attach_check(&self, id: &str) -> Result<bool, ApiError> {
        let ctr = self.lookup(id)?;
        Ok(ctr.rec().tty())
    }

    async fn attach(&self, id: String, opts: AttachOptions, io: Io) {
        let Ok(ctr) = self.lookup(&id) else { return };
        let rec = ctr.rec();
        let req = Request::Attach { stdin: opts.stdin, stdout: opts.stdout, stderr: opts.stderr };
        let (conn, io) = if rec.state.status.is_live() {
            (self.tasks.connect(&ctr.bundle, &req).await.ok(), io)
        } else {
            // Not started yet (`docker run`, `docker start -a` attach first): the start connects
            // us, and a failed start or a removal lets us go.
            let (tx, rx) = tokio::sync::oneshot::channel();
            ctr.pending_attach.lock().unwrap_or_else(|p| p.into_inner()).push((req, tx));
            match crate::stream::until_started(rx, io).await {
                Some((conn, io)) => (Some(conn), io),
                None => return,
            }
        };
        let Some(conn) = conn else { return };
        let keys = berth_format::detach_keys(opts.detach_keys.as_deref());
        crate::stream::pump(conn, io, rec.tty(), opts.stdin && rec.config.open_stdin.unwrap_or(false), keys).await;
    }

    async fn resize(&self, id: &str, height: u16, width: u16) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        if !ctr.rec().state.status.is_live() {
            return Err(not_running(&ctr.id));
        }
        self.tasks.resize(&ctr.bundle, None, height, width).await?;
        Ok(())
    }

    async fn top(&self, id: &str, ps_args: Option<String>) -> Result<Value, ApiError> {
        let ctr = self.lookup(id)?;
        if !ctr.rec().state.status.is_live() {
            return Err(not_running(&ctr.id));
        }
        let (e, cid) = (self.clone(), ctr.id.clone());
        tokio::task::spawn_blocking(move || {
            let pids = e.tasks.pids(&cid).map_err(|e| ApiError::new(Kind::Conflict, e.to_string()))?;
            top(&pids, ps_args.as_deref().unwrap_or("-ef"))
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let new = names::validate(name)?;
        let old = ctr.rec().name.clone();
        if new == old {
            return Err(ApiError::new(Kind::InvalidArgument, "Renaming a container with the same name as its current name"));
        }
        {
            let mut t = self.table_mut();
            if let Some(other) = t.names.get(&new) {
                return Err(ApiError::new(
                    Kind::Conflict,
                    format!(
                        "Conflict. The container name \"/{new}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    ),
                ));
            }
            t.names.insert(new.clone(), ctr.id.clone());
        }
        match ctr.update(|r| r.name = new.clone()) {
            Ok(_) => {
                self.table_mut().names.remove(&old);
                Ok(())
            }
            Err(e) => {
                self.table_mut().names.remove(&new);
                Err(e)
            }
        }
    }

    async fn exec_create(&self, id: &str, config: ExecConfig) -> Result<String, ApiError> {
        self.exec_create_impl(id, config)
    }

    async fn exec_check(&self, exec_id: &str) -> Result<bool, ApiError> {
        self.exec_check_impl(exec_id)
    }

    async fn exec_start(&self, exec_id: String, io: Option<Io>, raw: bool) -> Result<(), ApiError> {
        self.exec_start_impl(exec_id, io, raw).await
    }

    async fn exec_inspect(&self, exec_id: &str) -> Result<Value, ApiError> {
        self.exec_inspect_impl(exec_id)
    }

    async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> Result<(), ApiError> {
        self.exec_resize_impl(exec_id, height, width).await
    }
}

/// `docker top`: the host's `ps` output, keeping the container's processes.
fn top(pids: &[i32], args: &str) -> Result<Value, ApiError> {
    let out = std::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| ApiError::new(Kind::Internal, format!("running ps: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::new(Kind::Internal, format!("ps: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| ApiError::new(Kind::InvalidArgument, format!("Couldn't find PID field in ps output for {args:?}")))?;
    let mut procs = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        if fields[pid_col].parse::<i32>().is_ok_and(|p| pids.contains(&p)) {
            // The last column (the command) keeps its spaces.
            let mut row: Vec<String> = fields[..titles.len() - 1].iter().map(|s| s.to_string()).collect();
            row.push(fields[titles.len() - 1..].join(" "));
            procs.push(row);
        }
    }
    Ok(json!({"Titles": titles, "Processes": procs}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_and_cmd_merge_like_docker() {
        let image = berth_store::image::ContainerConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default".into()]),
            env: Some(vec!["PATH=/img".into(), "A=1".into()]),
            ..Default::default()
        };
        let cfg = |ep: Option<StrSlice>, cmd: Option<StrSlice>| ContainerConfig { entrypoint: ep, cmd, ..Default::default() };
        let (_, p, a) = merge(cfg(None, None), &image).unwrap();
        assert_eq!((p.as_str(), a), ("/entry", vec!["default".to_string()]));
        let (_, p, a) = merge(cfg(None, Some(StrSlice::Many(vec!["x".into()]))), &image).unwrap();
        assert_eq!((p.as_str(), a), ("/entry", vec!["x".to_string()]));
        let (_, p, a) = merge(cfg(Some(StrSlice::One("sh".into())), None), &image).unwrap();
        assert_eq!((p.as_str(), a.len()), ("sh", 0));
        let (_, p, a) = merge(cfg(Some(StrSlice::Many(vec!["".into()])), Some(StrSlice::One("ls".into()))), &image).unwrap();
        assert_eq!((p.as_str(), a.len()), ("ls", 0));
        assert!(merge(cfg(Some(StrSlice::Many(vec!["".into()])), None), &image).is_err());
        let mut u = cfg(None, None);
        u.env = Some(vec!["A=2".into(), "B=3".into()]);
        let (c, _, _) = merge(u, &image).unwrap();
        assert_eq!(c.env.unwrap(), ["PATH=/img", "A=2", "B=3"]);
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = container_resolv_conf("search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\noptions edns0\n");
        assert_eq!(r, "search lan\nnameserver 10.0.0.1\noptions edns0\n");
        let r = container_resolv_conf("nameserver 127.0.0.1\n");
        assert_eq!(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn signals_sizes_and_durations() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("200").unwrap(), 200);
        assert!(parse_size("x").is_err());
        assert_eq!(human_duration(0.2), "Less than a second");
        assert_eq!(human_duration(5.0), "5 seconds");
        assert_eq!(human_duration(90.0), "About a minute");
        assert_eq!(human_duration(7200.0), "2 hours");
    }
}
