//! The seam between the engine and a container's processes: everything the engine asks of a
//! container once its record and bundle exist — mount its root, create it, start it, signal it,
//! freeze it, list its processes, read its statistics, wait for its exit, take it down — goes
//! through [`Tasks`]. [`ShimTasks`] does it with berth-shim (one per container) and the runtime's
//! state; a fake (in the tests) does it in memory, so the engine's lifecycle, exit handling,
//! auto-remove and restore are tested without root.

use std::path::Path;
use std::sync::Mutex;

use berth_runtime::state::ProcessId;
use berth_shim::{ExitStatus, Request};
use berth_store::snapshot::Mount;

use crate::error::{Error, Result};
use crate::shim::{self, Conn};

/// A container created by its shim: the shim's identity and the container's init.
pub struct Created {
    pub shim: ProcessId,
    pub pid: i32,
}

#[async_trait::async_trait]
pub trait Tasks: Send + Sync + 'static {
    /// Mount the container's layers on `rootfs` (`volatile`: its writable layer is thrown away
    /// at the exit, so it needs no syncs). Blocking.
    fn mount_rootfs(&self, mounts: &[Mount], rootfs: &Path, volatile: bool) -> Result<()>;
    /// Unmount whatever is mounted on `rootfs`; false when something stays mounted there (the
    /// directory must then not be deleted: that would empty the layer). Blocking.
    fn unmount_rootfs(&self, rootfs: &Path) -> bool;
    /// Create the container of the bundle; its program waits for [`Tasks::start`].
    async fn create(&self, bundle: &Path) -> Result<Created>;
    /// Let the created container's program run.
    async fn start(&self, bundle: &Path) -> Result<()>;
    /// A stream to the container (attach, exec), after the reply line.
    async fn connect(&self, bundle: &Path, req: &Request) -> Result<Conn>;
    async fn kill(&self, bundle: &Path, signal: i32, all: bool) -> Result<()>;
    async fn resize(&self, bundle: &Path, exec_pid: Option<i32>, rows: u16, cols: u16) -> Result<()>;
    /// The container's exit, once it has exited; None when its shim went without saying.
    async fn wait(&self, bundle: &Path) -> Option<ExitStatus>;
    /// The exit its shim recorded in the bundle, if any.
    fn recorded_exit(&self, bundle: &Path) -> Option<ExitStatus>;
    /// Is this shim still there?
    fn alive(&self, shim: &ProcessId) -> bool;
    /// Freeze or thaw every process of container `id`. Blocking.
    fn freeze(&self, id: &str, frozen: bool) -> Result<()>;
    /// The container's processes. Blocking.
    fn pids(&self, id: &str) -> Result<Vec<i32>>;
    /// The container's resource usage. Blocking.
    fn stats(&self, id: &str) -> Result<berth_runtime::cgroups::Stats>;
    /// Change a running container's cgroup limits (`update`).
    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()>;
    /// Shims looking after a bundle under the engine's bundles directory, by bundle name (for
    /// restore).
    fn running(&self) -> Vec<(String, ProcessId)>;
    /// Take down what the runtime holds of container `id` — its shim (killed first), processes,
    /// cgroup (found in the runtime's state, else the bundle's spec, else `cgroup`, else the
    /// default) and state — for a container that must not be running. Blocking; idempotent.
    fn destroy(&self, id: &str, cgroup: Option<&Path>, shim: Option<ProcessId>);
    /// Get ready for the next [`Tasks::create`] (a shim waiting in standby). Blocking.
    fn prepare_next(&self);
    /// berthd is stopping: let go of what is kept ready, and of the containers' cgroup parent
    /// unless containers still run (`live`). Blocking.
    fn release(&self, live: bool);
}

/// [`Tasks`] over berth-shim and berth-runtime's state.
pub struct ShimTasks {
    pub shim_bin: std::path::PathBuf,
    pub exec_root: std::path::PathBuf,
    pub bundles: std::path::PathBuf,
    pub runtime_root: std::path::PathBuf,
    pub cgroup_parent: String,
    /// A shim started ahead of the next container start (see berth-shim's `--standby`).
    pub standby: Mutex<Option<shim::Standby>>,
}

impl ShimTasks {
    /// The standby shim for a start, or a new one when there is none (or it died meanwhile).
    fn take_standby(&self) -> Result<shim::Standby> {
        let spare = self.standby.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut s) = spare
            && s.is_alive()
        {
            return Ok(s);
        }
        shim::Standby::spawn(&self.shim_bin, &self.exec_root)
    }
}

fn container(root: &Path, id: &str) -> Result<berth_runtime::Container> {
    berth_runtime::Container::load(root, id).map_err(|e| Error::Runtime { kind: e.kind(), message: e.to_string() })
}

fn runtime_err(e: berth_runtime::Error) -> Error {
    Error::Runtime { kind: e.kind(), message: e.to_string() }
}

#[async_trait::async_trait]
impl Tasks for ShimTasks {
    fn mount_rootfs(&self, mounts: &[Mount], rootfs: &Path, volatile: bool) -> Result<()> {
        for m in mounts {
            // Falls back where the kernel has no `volatile` (before 5.10).
            match m.volatile().filter(|_| volatile) {
                Some(v) if v.mount(rootfs).is_ok() => {}
                _ => m.mount(rootfs).map_err(|e| Error::Internal(format!("mounting the root filesystem on {}: {e}", rootfs.display())))?,
            }
        }
        Ok(())
    }

    fn unmount_rootfs(&self, rootfs: &Path) -> bool {
        if !rootfs.exists() {
            return true;
        }
        // Until the kernel says it is not a mount point (a mount may be stacked on another).
        for _ in 0..8 {
            match nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => {}
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return true,
                Err(e) => {
                    tracing::warn!("unmounting {}: {e}", rootfs.display());
                    return false;
                }
            }
        }
        false
    }

    async fn create(&self, bundle: &Path) -> Result<Created> {
        let started = self.take_standby()?.start(bundle).await?;
        Ok(Created { shim: started.shim, pid: started.pid })
    }

    async fn start(&self, bundle: &Path) -> Result<()> {
        shim::call(bundle, &Request::Start).await.map(|_| ())
    }

    async fn connect(&self, bundle: &Path, req: &Request) -> Result<Conn> {
        shim::request(bundle, req).await
    }

    async fn kill(&self, bundle: &Path, signal: i32, all: bool) -> Result<()> {
        shim::call(bundle, &Request::Kill { signal, all }).await.map(|_| ())
    }

    async fn resize(&self, bundle: &Path, exec_pid: Option<i32>, rows: u16, cols: u16) -> Result<()> {
        shim::call(bundle, &Request::Resize { exec_pid, rows, cols }).await.map(|_| ())
    }

    async fn wait(&self, bundle: &Path) -> Option<ExitStatus> {
        shim::request(bundle, &Request::Wait).await.ok().and_then(|c| c.reply.exit)
    }

    fn recorded_exit(&self, bundle: &Path) -> Option<ExitStatus> {
        let data = std::fs::read(bundle.join(berth_shim::EXIT)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    fn alive(&self, shim: &ProcessId) -> bool {
        shim.is_alive()
    }

    fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let c = container(&self.runtime_root, id)?;
        if frozen { c.pause() } else { c.resume() }.map_err(runtime_err)
    }

    fn pids(&self, id: &str) -> Result<Vec<i32>> {
        container(&self.runtime_root, id)?.pids().map_err(runtime_err)
    }

    fn stats(&self, id: &str) -> Result<berth_runtime::cgroups::Stats> {
        container(&self.runtime_root, id)?.stats().map_err(runtime_err)
    }

    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        container(&self.runtime_root, id)?.update(resources).map_err(runtime_err)
    }

    fn running(&self) -> Vec<(String, ProcessId)> {
        shim::running(&self.bundles, &self.shim_bin)
    }

    fn destroy(&self, id: &str, cgroup: Option<&Path>, shim: Option<ProcessId>) {
        if let Some(s) = shim {
            shim::kill(s);
        }
        let keep = berth_runtime::cgroups::Parents::Keep;
        match berth_runtime::Container::load(&self.runtime_root, id) {
            Ok(c) => {
                if let Err(e) = c.delete_with(true, keep) {
                    tracing::warn!("removing container {id} from the runtime: {e}");
                }
            }
            Err(_) if self.runtime_root.join(id).exists() => {
                // A create cut short before the runtime recorded its state.
                let from_spec = berth_runtime::load_spec(&self.bundles.join(id))
                    .ok()
                    .and_then(|b| b.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()));
                let path = from_spec.or_else(|| cgroup.map(Path::to_path_buf)).unwrap_or_else(|| Path::new(&self.cgroup_parent).join(id));
                if let Err(e) = berth_runtime::Container::remove_leftover(&self.runtime_root, id, &path, keep) {
                    tracing::warn!("removing what a cut-short create left of {id}: {e}");
                }
            }
            Err(_) => {}
        }
    }

    fn prepare_next(&self) {
        if self.standby.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return;
        }
        match shim::Standby::spawn(&self.shim_bin, &self.exec_root) {
            Ok(s) => {
                let mut slot = self.standby.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(s);
                }
            }
            Err(e) => tracing::warn!("starting a standby shim: {e}"),
        }
    }

    fn release(&self, live: bool) {
        // Its stdin closes: it exits.
        drop(self.standby.lock().unwrap_or_else(|p| p.into_inner()).take());
        let parent = Path::new(&self.cgroup_parent);
        let cg = match berth_runtime::cgroups::open(parent) {
            Ok(cg) => cg,
            Err(e) => return tracing::warn!("the cgroup {}: {e}", parent.display()),
        };
        // Shims of containers removed just now may still be deleting their own cgroups: give
        // them a moment, unless containers still run (then the parent stays in any case).
        let deadline = std::time::Instant::now() + if live { std::time::Duration::ZERO } else { std::time::Duration::from_secs(2) };
        loop {
            if let Err(e) = cg.remove_if_unused() {
                return tracing::warn!("removing the cgroup {}: {e}", parent.display());
            }
            if !cg.exists() || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// [`Tasks`] in memory, for the engine's tests: containers "run" until the test ends them.
#[cfg(test)]
pub mod fake {
    use std::collections::{HashMap, HashSet};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use berth_runtime::state::ProcessId;
    use berth_shim::{ErrorKind, ExitStatus, Request};
    use berth_store::snapshot::Mount;

    use super::{Created, Tasks};
    use crate::error::{Error, Result};
    use crate::shim::Conn;

    struct Task {
        shim: ProcessId,
        pid: i32,
        started: bool,
        frozen: bool,
        exit: tokio::sync::watch::Sender<Option<ExitStatus>>,
    }

    #[derive(Default)]
    struct State {
        /// By bundle name (the container's ID).
        tasks: HashMap<String, Task>,
        /// Exits the shims recorded in their bundles.
        recorded: HashMap<String, ExitStatus>,
        alive: HashSet<i32>,
        next_pid: i32,
        fail_next_create: Option<(ErrorKind, String)>,
        destroyed: Vec<String>,
        signals: Vec<(String, i32)>,
        mounted: HashSet<PathBuf>,
        updates: Vec<(String, oci_spec::runtime::LinuxResources)>,
    }

    #[derive(Default)]
    pub struct Fake(Mutex<State>);

    /// Above any pid the kernel hands out (pid_max is at most 2^22), so no real process has one.
    const FAKE_PIDS: i32 = 100_000_000;

    fn name(bundle: &Path) -> String {
        bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn status(code: i32) -> ExitStatus {
        ExitStatus { exit_code: code, finished_at: crate::record::now(), oom_killed: false }
    }

    impl Fake {
        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// The container's program exits with `code`; its shim records it and goes.
        pub fn exit(&self, id: &str, code: i32) {
            let mut s = self.state();
            if let Some(t) = s.tasks.remove(id) {
                s.alive.remove(&t.shim.pid);
                s.recorded.insert(id.to_string(), status(code));
                t.exit.send_replace(Some(status(code)));
            }
        }

        /// The shim dies without a word (SIGKILL): no exit recorded.
        pub fn kill_shim(&self, id: &str) {
            let mut s = self.state();
            if let Some(t) = s.tasks.remove(id) {
                s.alive.remove(&t.shim.pid);
                drop(t.exit);
            }
        }

        pub fn fail_next_create(&self, kind: ErrorKind, message: &str) {
            self.state().fail_next_create = Some((kind, message.to_string()));
        }

        /// A shim for `id` that the engine did not see start (a start cut short by a crash).
        pub fn stray_shim(&self, id: &str) {
            let (tx, _) = tokio::sync::watch::channel(None);
            let mut s = self.state();
            s.next_pid += 1;
            let pid = FAKE_PIDS + s.next_pid;
            s.alive.insert(pid);
            s.tasks.insert(
                id.to_string(),
                Task { shim: ProcessId { pid, start_time: 1 }, pid: pid + 1, started: false, frozen: false, exit: tx },
            );
        }

        pub fn is_running(&self, id: &str) -> bool {
            self.state().tasks.get(id).is_some_and(|t| t.started)
        }

        pub fn is_frozen(&self, id: &str) -> bool {
            self.state().tasks.get(id).is_some_and(|t| t.frozen)
        }

        pub fn destroyed(&self) -> Vec<String> {
            self.state().destroyed.clone()
        }

        /// The limits `update` wrote to running containers, in order.
        pub fn updates(&self) -> Vec<(String, oci_spec::runtime::LinuxResources)> {
            self.state().updates.clone()
        }

        pub fn signals(&self) -> Vec<(String, i32)> {
            self.state().signals.clone()
        }

        pub fn mounted(&self) -> usize {
            self.state().mounted.len()
        }
    }

    #[async_trait::async_trait]
    impl Tasks for Fake {
        fn mount_rootfs(&self, _mounts: &[Mount], rootfs: &Path, _volatile: bool) -> Result<()> {
            self.state().mounted.insert(rootfs.to_path_buf());
            Ok(())
        }

        fn unmount_rootfs(&self, rootfs: &Path) -> bool {
            self.state().mounted.remove(rootfs);
            true
        }

        async fn create(&self, bundle: &Path) -> Result<Created> {
            let mut s = self.state();
            if let Some((kind, message)) = s.fail_next_create.take() {
                return Err(Error::Runtime { kind, message });
            }
            if !bundle.join("config.json").is_file() {
                return Err(Error::Internal(format!("no config.json in {}", bundle.display())));
            }
            s.next_pid += 2;
            let pid = FAKE_PIDS + s.next_pid;
            let shim = ProcessId { pid, start_time: 1 };
            s.alive.insert(pid);
            let (tx, _) = tokio::sync::watch::channel(None);
            s.tasks.insert(name(bundle), Task { shim, pid: pid + 1, started: false, frozen: false, exit: tx });
            Ok(Created { shim, pid: pid + 1 })
        }

        async fn start(&self, bundle: &Path) -> Result<()> {
            match self.state().tasks.get_mut(&name(bundle)) {
                Some(t) => {
                    t.started = true;
                    Ok(())
                }
                None => Err(Error::NotRunning(format!("no task for {}", bundle.display()))),
            }
        }

        async fn connect(&self, bundle: &Path, _req: &Request) -> Result<Conn> {
            Err(Error::Internal(format!("the fake has no streams ({})", bundle.display())))
        }

        async fn kill(&self, bundle: &Path, signal: i32, _all: bool) -> Result<()> {
            let id = name(bundle);
            if !self.state().tasks.contains_key(&id) {
                return Err(Error::NotRunning(format!("no task for {id}")));
            }
            self.state().signals.push((id.clone(), signal));
            if signal == libc::SIGKILL || signal == libc::SIGTERM {
                self.exit(&id, 128 + signal);
            }
            Ok(())
        }

        async fn resize(&self, _bundle: &Path, _exec_pid: Option<i32>, _rows: u16, _cols: u16) -> Result<()> {
            Ok(())
        }

        async fn wait(&self, bundle: &Path) -> Option<ExitStatus> {
            let mut rx = self.state().tasks.get(&name(bundle))?.exit.subscribe();
            loop {
                if let Some(st) = rx.borrow_and_update().clone() {
                    return Some(st);
                }
                // The sender went: the shim died without a word.
                rx.changed().await.ok()?;
            }
        }

        fn recorded_exit(&self, bundle: &Path) -> Option<ExitStatus> {
            self.state().recorded.get(&name(bundle)).cloned()
        }

        fn alive(&self, shim: &ProcessId) -> bool {
            self.state().alive.contains(&shim.pid)
        }

        fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
            match self.state().tasks.get_mut(id) {
                Some(t) => {
                    t.frozen = frozen;
                    Ok(())
                }
                None => Err(Error::NotRunning(id.to_string())),
            }
        }

        fn pids(&self, id: &str) -> Result<Vec<i32>> {
            self.state().tasks.get(id).map(|t| vec![t.pid]).ok_or_else(|| Error::NotRunning(id.to_string()))
        }

        fn stats(&self, _id: &str) -> Result<berth_runtime::cgroups::Stats> {
            Ok(Default::default())
        }

        fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
            let mut s = self.state();
            if !s.tasks.contains_key(id) {
                return Err(Error::NotRunning(id.to_string()));
            }
            s.updates.push((id.to_string(), resources.clone()));
            Ok(())
        }

        fn running(&self) -> Vec<(String, ProcessId)> {
            let s = self.state();
            s.tasks.iter().filter(|(_, t)| s.alive.contains(&t.shim.pid)).map(|(id, t)| (id.clone(), t.shim)).collect()
        }

        fn destroy(&self, id: &str, _cgroup: Option<&Path>, shim: Option<ProcessId>) {
            let mut s = self.state();
            s.destroyed.push(id.to_string());
            if let Some(t) = s.tasks.remove(id) {
                s.alive.remove(&t.shim.pid);
            }
            if let Some(sh) = shim {
                s.alive.remove(&sh.pid);
            }
        }

        fn prepare_next(&self) {}

        fn release(&self, _live: bool) {}
    }
}
