//! The runtime's operations on a container: create, start, state, kill, pause, resume, exec,
//! delete. Each call is a short-lived, single-threaded invocation that reads and writes the
//! container's state directory under the runtime root.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType, LinuxResources, Process, Spec};

use crate::cgroups::{self, Cgroup, Parents};
use crate::error::{Error, Result};
use crate::init::{self, Role, Setup};
use crate::namespaces::{self, Plan};
use crate::rootfs;
use crate::seccomp;
use crate::state::{self, EXEC_FIFO, ProcessId, State, Status};
use crate::sync::{self, Channel, Msg};

/// Where cgroups go when the spec names none: `/berth/<id>` in each hierarchy.
pub const DEFAULT_CGROUP_PARENT: &str = "/berth";

/// Compiled seccomp programs, under the runtime root (never a valid container id).
const SECCOMP_CACHE: &str = ".seccomp-cache";
/// runc's message for a signal, pause or exec to a container that is not running.
const NOT_RUNNING: &str = "container not running";

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
    /// A network namespace from [`crate::namespaces::prepare_network`] to use instead of
    /// creating one, when the spec asks for a new one and no user namespace (whose root could
    /// not administer a namespace made outside it).
    pub network: Option<std::sync::Arc<OwnedFd>>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub process: Option<Process>,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    /// Run it in a paused container too (runc's `--ignore-paused`): it starts frozen.
    pub ignore_paused: bool,
    /// Sub-cgroups of the container's to run it in (runc's `--cgroup`).
    pub cgroups: Vec<SubCgroup>,
}

/// One `exec --cgroup [controller,...:]path`: a sub-cgroup that exists already, for the named
/// v1 controllers or (none named) for all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubCgroup {
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

impl std::str::FromStr for SubCgroup {
    type Err = Error;

    fn from_str(s: &str) -> Result<SubCgroup> {
        let (controllers, path) = match s.split_once(':') {
            Some((c, p)) => (c.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect(), p),
            None => (Vec::new(), s),
        };
        if path.is_empty() {
            return Err(Error::InvalidConfig(format!("invalid --cgroup argument {s:?}: no path")));
        }
        Ok(SubCgroup { controllers, path: PathBuf::from(path) })
    }
}

/// A container known to the runtime (its state directory exists).
pub struct Container {
    root: PathBuf,
    pub state: State,
}

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(()) } else { Err(Error::InvalidId(id.to_string())) }
}

fn single_threaded() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").map_err(Error::io("reading", "/proc/self/status"))?;
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).map(|v| v.trim().to_string());
    if threads.as_deref() == Some("1") {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "containers are only created from single-threaded processes (this one has {} threads)",
            threads.unwrap_or_default()
        )))
    }
}

/// A bundle's config: the parsed spec, its bytes as given, and the absolute rootfs path.
pub struct BundleConfig {
    pub spec: Spec,
    pub raw: Box<serde_json::value::RawValue>,
    pub rootfs: PathBuf,
}

/// Load and check `bundle/config.json`.
pub fn load_spec(bundle: &Path) -> Result<BundleConfig> {
    let path = bundle.join("config.json");
    let data = match fs::read_to_string(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidConfig(format!("{} does not exist", path.display())));
        }
        Err(e) => return Err(Error::io("reading", &path)(e)),
    };
    let bad = |e: serde_json::Error| Error::Config { path: path.clone(), source: oci_spec::OciSpecError::SerDe(e) };
    let spec: Spec = serde_json::from_str(&data).map_err(bad)?;
    let raw = serde_json::value::RawValue::from_string(data).map_err(bad)?;
    let root = spec.root().as_ref().ok_or_else(|| Error::InvalidConfig("root is missing".into()))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    if !rootfs.is_dir() {
        return Err(Error::InvalidConfig(format!("rootfs {} does not exist or is not a directory", rootfs.display())));
    }
    let process = spec.process().as_ref().ok_or_else(|| Error::InvalidConfig("process is missing".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidConfig("process.args must name a program".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::InvalidConfig(format!("process.cwd {} is not absolute", process.cwd().display())));
    }
    crate::lsm::check(&spec)?;
    let rootfs = fs::canonicalize(&rootfs).map_err(Error::io("resolving rootfs", &rootfs))?;
    Ok(BundleConfig { spec, raw, rootfs })
}

fn plan(spec: &Spec) -> Result<Plan> {
    let linux = spec.linux().clone().unwrap_or_default();
    let plan = Plan::from_spec(&linux.namespaces().clone().unwrap_or_default())?;
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !plan.has(LinuxNamespaceType::Uts) {
        return Err(Error::InvalidConfig("hostname needs a private UTS namespace".into()));
    }
    if plan.creates(LinuxNamespaceType::User)
        && (linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()))
    {
        return Err(Error::InvalidConfig("a new user namespace needs uidMappings and gidMappings".into()));
    }
    if !plan.creates(LinuxNamespaceType::User) && (linux.uid_mappings().is_some() || linux.gid_mappings().is_some()) {
        let any = |m: &Option<Vec<_>>| m.as_ref().is_some_and(|m: &Vec<_>| !m.is_empty());
        if any(linux.uid_mappings()) || any(linux.gid_mappings()) {
            return Err(Error::InvalidConfig("uidMappings need a new user namespace".into()));
        }
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) && !plan.creates(LinuxNamespaceType::Time) {
        return Err(Error::InvalidConfig("timeOffsets need a new time namespace".into()));
    }
    if let Some(sysctls) = linux.sysctl().as_ref().filter(|s| !s.is_empty()) {
        let private = crate::sysctl::Private {
            ipc: own_namespace(&plan, LinuxNamespaceType::Ipc),
            net: own_namespace(&plan, LinuxNamespaceType::Network),
            uts: own_namespace(&plan, LinuxNamespaceType::Uts),
        };
        for key in sysctls.keys() {
            crate::sysctl::check(key, private).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        }
    }
    Ok(plan)
}

/// Will the container have a namespace of this type apart from ours? A new one, or one joined
/// by a path that is not the namespace we are in (joining the host's own is no isolation).
/// Namespace files are compared by device and inode, which also sees through bind mounts of them.
fn own_namespace(plan: &Plan, t: LinuxNamespaceType) -> bool {
    use std::os::unix::fs::MetadataExt;
    if plan.creates(t) {
        return true;
    }
    let id = |p: &Path| fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let ours = id(&Path::new("/proc/self/ns").join(namespaces::proc_name(t)));
    plan.join.iter().filter(|(j, _)| *j == t).any(|(_, p)| match (id(p), &ours) {
        (Ok(theirs), Ok(ours)) => theirs != *ours,
        // A path that cannot be read is refused when the namespaces are opened.
        (Err(_), _) => true,
        (Ok(_), Err(_)) => false,
    })
}

/// The devices the runtime creates (the defaults, the spec's, the pty ones) must stay usable
/// whatever the spec's cgroup rules deny, as runc and crun guarantee: append allow rules.
fn with_created_devices_allowed(r: &LinuxResources, spec: &Spec) -> LinuxResources {
    let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) else { return r.clone() };
    let mut rules = rules.clone();
    let allow = |typ: LinuxDeviceType, major: i64, minor: Option<i64>| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(typ));
        d.set_major(Some(major));
        d.set_minor(minor);
        d.set_access(Some("rwm".into()));
        d
    };
    let mut devices = crate::rootfs::default_devices();
    devices.extend(spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default());
    let mut wanted: Vec<LinuxDeviceCgroup> = devices
        .iter()
        .map(|d| allow(if d.typ() == LinuxDeviceType::B { LinuxDeviceType::B } else { LinuxDeviceType::C }, d.major(), Some(d.minor())))
        .collect();
    wanted.push(allow(LinuxDeviceType::C, 5, Some(1))); // /dev/console
    wanted.push(allow(LinuxDeviceType::C, 5, Some(2))); // /dev/ptmx
    wanted.push(allow(LinuxDeviceType::C, 136, None)); // /dev/pts/*
    // Docker's default rules already allow most of these: each rule is a write to the cgroup.
    for w in wanted {
        if !rules.contains(&w) {
            rules.push(w);
        }
    }
    let mut out = r.clone();
    out.set_devices(Some(rules));
    out
}

fn cgroup_path(spec: &Spec, id: &str) -> PathBuf {
    spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).unwrap_or_else(|| Path::new(DEFAULT_CGROUP_PARENT).join(id))
}

/// Fork a child that is already inside any namespaces in `flags` and, when `cgroup` is a v2
/// directory's fd, inside that cgroup (`clone3` with `CLONE_INTO_CGROUP`; if the kernel refuses,
/// a plain clone and `false`: the caller moves the child). Plain fork semantics: the child gets
/// a copy of our memory and continues from here.
///
/// # Safety
/// The caller must be single-threaded: the child runs Rust code (allocation included) before
/// it execs, which is only sound when no other thread could have held a lock at the fork.
unsafe fn clone_child(flags: CloneFlags, cgroup: Option<std::os::fd::RawFd>) -> Result<(Option<Pid>, bool)> {
    let done = |rc: libc::c_long, into: bool| match rc {
        0 => Ok((None, into)),
        pid => Ok((Some(Pid::from_raw(pid as i32)), into)),
    };
    if let Some(fd) = cgroup {
        /// The kernel's `struct clone_args` (up to `cgroup`, Linux 5.7).
        #[repr(C)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: fd as u64,
        };
        // SAFETY: clone3 without a new stack behaves like fork (see the function's contract);
        // `args` is a valid clone_args of the size passed and lives across the call.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        if rc != -1 {
            return done(rc, true);
        }
        // ENOSYS (before 5.3), E2BIG/EINVAL (before 5.7) or a cgroup that refuses: the caller
        // moves the child the old way, which reports any real problem with the cgroup.
    }
    // SAFETY: a raw clone with no new stack behaves like fork; see the function's contract.
    let rc = unsafe { libc::syscall(libc::SYS_clone, (flags.bits() | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        -1 => Err(Error::sys(format!("clone({flags:?})"))(nix::errno::Errno::last())),
        rc => done(rc, false),
    }
}

/// How a new process gets into the container's cgroup without the parent moving it (which takes
/// the kernel's global migration lock: ~10 ms per container on an idle VM).
struct Placement {
    /// The v2 part, opened for `CLONE_INTO_CGROUP`.
    into: Option<OwnedFd>,
    into_dir: Option<PathBuf>,
    /// v1 `tasks` files the child writes `0` into, first thing. Empty when it cannot (it starts
    /// in a new user namespace, where those files are not its own).
    self_join: Vec<PathBuf>,
    /// Where the parent puts the process when the child joins nothing itself: the whole
    /// cgroup (None), or these directories (a sub-cgroup of `exec --cgroup`).
    dirs: Option<Vec<PathBuf>>,
}

impl Placement {
    fn new(cgroup: &dyn Cgroup, child_can_join: bool) -> Placement {
        let into_dir = cgroup.clone_into();
        let into = into_dir.as_ref().and_then(|d| fs::File::open(d).ok().map(OwnedFd::from));
        Placement { into, into_dir, self_join: if child_can_join { cgroup.self_join_files() } else { Vec::new() }, dirs: None }
    }

    /// runc's `exec --cgroup`: into existing sub-cgroups of the container's, by controller
    /// (v1) or for all of them (an empty controller list; the only form on v2).
    fn sub(cgroup: &dyn Cgroup, subs: &[SubCgroup]) -> Result<Placement> {
        let bad = |m: String| Error::InvalidConfig(format!("exec --cgroup: {m}"));
        let exists = |d: PathBuf| if d.is_dir() { Ok(d) } else { Err(bad(format!("cgroup {} does not exist", d.display()))) };
        let mut rel = Vec::new();
        for s in subs {
            rel.push((s.controllers.as_slice(), cgroups::relative(&s.path)?));
        }
        match cgroup.view() {
            rootfs::CgroupView::V2(dir) => {
                let [(controllers, path)] = rel.as_slice() else {
                    return Err(bad("cgroup v2 takes a single sub-cgroup".into()));
                };
                if !controllers.is_empty() {
                    return Err(bad("controller names are for cgroup v1 only".into()));
                }
                let target = exists(dir.join(path))?;
                let into = fs::File::open(&target).ok().map(OwnedFd::from);
                Ok(Placement { into, into_dir: Some(target.clone()), self_join: Vec::new(), dirs: Some(vec![target]) })
            }
            rootfs::CgroupView::V1(hierarchies) => {
                for (controllers, _) in &rel {
                    if let Some(c) = controllers.iter().find(|c| !hierarchies.iter().any(|(n, _)| n.split(',').any(|n| n == c.as_str()))) {
                        return Err(bad(format!("no cgroup v1 controller {c:?}")));
                    }
                }
                let mut dirs = Vec::new();
                for (name, dir) in hierarchies {
                    let target = rel
                        .iter()
                        .find(|(c, _)| c.is_empty() || c.iter().any(|c| name.split(',').any(|n| n == c.as_str())))
                        .map_or(dir.clone(), |(_, p)| dir.join(p));
                    dirs.push(exists(target)?);
                }
                // The unified part of a hybrid host follows a sub-cgroup for all controllers
                // where it has one too.
                let all = rel.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p);
                let into_dir = cgroup.clone_into().map(|u| match all {
                    Some(p) if u.join(p).is_dir() => u.join(p),
                    _ => u,
                });
                let into = into_dir.as_ref().and_then(|d| fs::File::open(d).ok().map(OwnedFd::from));
                let self_join = dirs.iter().map(|d| d.join("tasks")).collect();
                Ok(Placement { into, into_dir, self_join, dirs: Some(dirs) })
            }
        }
    }

    /// After the clone, in the parent: move the child into whatever it was not put in already.
    fn finish(&self, cgroup: &dyn Cgroup, pid: Pid, cloned_into: bool) -> Result<()> {
        if self.self_join.is_empty() {
            return match &self.dirs {
                None => Ok(cgroup.add(pid.as_raw())?),
                Some(dirs) => {
                    for d in dirs {
                        cgroups::write(&d.join("cgroup.procs"), &pid.as_raw().to_string())?;
                    }
                    Ok(())
                }
            };
        }
        if !cloned_into && let Some(d) = &self.into_dir {
            cgroups::write(&d.join("cgroup.procs"), &pid.as_raw().to_string())?;
        }
        Ok(())
    }
}

/// Clone the process that becomes a container's init or joins it for exec. Namespaces that
/// only apply to children (pid and time, given by path, or a new time namespace) are entered
/// around the clone; the child gets the others and runs `init::run`, never returning. Returns
/// whether the child was cloned into `placement`'s v2 cgroup.
fn spawn<'a>(
    flags: CloneFlags,
    join: Vec<(LinuxNamespaceType, File)>,
    new_time: Option<&Spec>,
    placement: &Placement,
    setup: impl FnOnce(Vec<(LinuxNamespaceType, File)>, Channel) -> Setup<'a>,
) -> Result<(Pid, Channel, bool)> {
    single_threaded()?;
    let (parent_end, child_end) = sync::pair()?;
    let (for_children, join): (Vec<_>, Vec<_>) =
        join.into_iter().partition(|(t, _)| matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time));
    let refs: Vec<(LinuxNamespaceType, &File)> = for_children.iter().map(|(t, f)| (*t, f)).collect();
    let entered = ChildNamespaces::enter(&refs, new_time)?;
    // SAFETY: single_threaded() just checked that no other thread exists.
    let (child, cloned_into) = unsafe { clone_child(flags, placement.into.as_ref().map(|f| f.as_raw_fd()))? };
    let Some(pid) = child else {
        drop(parent_end);
        init::run(setup(join, child_end));
    };
    drop(entered);
    Ok((pid, parent_end, cloned_into))
}

/// Undo what a failed create made, keeping the first error.
struct CreateGuard<'a> {
    state_dir: &'a Path,
    cgroup: Option<&'a dyn Cgroup>,
    child: Option<Pid>,
    /// The rootfs and the mount under the container's, where it has no mount namespace.
    host_mounts: Option<(&'a Path, u64)>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup {
            kill_cgroup(cg);
            if let Err(e) = cg.destroy(Parents::RemoveEmpty) {
                tracing::warn!("cleaning up after a failed create: {e}");
            }
        }
        if let Some((rootfs, base)) = self.host_mounts
            && let Err(e) = crate::sys::unmount_down_to(rootfs, base)
        {
            tracing::warn!("cleaning up after a failed create: {e}");
        }
        let _ = fs::remove_dir_all(self.state_dir);
    }
}

/// SIGKILL everything in the cgroup (thawing it first, or the kill would wait) until it is empty.
fn kill_cgroup(cg: &dyn Cgroup) {
    if !cg.exists() {
        return;
    }
    if cg.is_frozen() {
        let _ = cg.freeze(false);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A zombie is dead already; its parent (maybe not us) reaps it.
        let pids: Vec<i32> =
            cg.pids().unwrap_or_default().into_iter().filter(|p| state::read_stat(*p).is_some_and(|s| s.state != 'Z')).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        reap_children();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Collect exited children of ours without blocking (a killed init we created, say).
fn reap_children() {
    while let Ok(status) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    berth_atomic::replace_file(path, pid.to_string().as_bytes(), 0o644).map_err(Error::io("writing pid file", path))
}

fn write_id_maps(pid: Pid, spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for (file, maps) in [("uid_map", linux.uid_mappings()), ("gid_map", linux.gid_mappings())] {
        let text: String =
            maps.clone().unwrap_or_default().iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect();
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &text).map_err(|e| Error::InvalidConfig(format!("writing {file} {:?}: {e}", text.trim())))?;
    }
    Ok(())
}

/// Joins the parent to namespaces that only take effect for children (pid, time) for the length
/// of one clone, then goes back.
struct ChildNamespaces {
    restore: Vec<(LinuxNamespaceType, File)>,
}

impl ChildNamespaces {
    fn enter(pid_or_time: &[(LinuxNamespaceType, &File)], new_time: Option<&Spec>) -> Result<Self> {
        let mut restore = Vec::new();
        for (t, f) in pid_or_time {
            let own = format!("/proc/self/ns/{}_for_children", namespaces::proc_name(*t));
            restore.push((*t, File::open(&own).map_err(Error::io("opening", own))?));
            namespaces::enter(*t, f)?;
        }
        if let Some(spec) = new_time {
            let own = "/proc/self/ns/time_for_children";
            restore.push((LinuxNamespaceType::Time, File::open(own).map_err(Error::io("opening", own))?));
            nix::sched::unshare(namespaces::flag(LinuxNamespaceType::Time)).map_err(Error::sys("unshare(CLONE_NEWTIME)"))?;
            let offsets = spec.linux().as_ref().and_then(|l| l.time_offsets().clone()).unwrap_or_default();
            let mut text = String::new();
            for (clock, o) in offsets {
                let name = match clock.as_str() {
                    "monotonic" | "boottime" => clock.clone(),
                    other => return Err(Error::InvalidConfig(format!("timeOffsets: unknown clock {other:?}"))),
                };
                text.push_str(&format!("{name} {} {}\n", o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0)));
            }
            if !text.is_empty() {
                fs::write("/proc/self/timens_offsets", &text).map_err(|e| Error::InvalidConfig(format!("timeOffsets: {e}")))?;
            }
        }
        Ok(ChildNamespaces { restore })
    }
}

impl Drop for ChildNamespaces {
    fn drop(&mut self) {
        for (t, f) in self.restore.iter().rev() {
            if let Err(e) = namespaces::enter(*t, f) {
                tracing::warn!("restoring our own {} namespace: {e}", namespaces::proc_name(*t));
            }
        }
    }
}

fn connect_console(path: &Option<PathBuf>, terminal: bool) -> Result<Option<OwnedFd>> {
    match (terminal, path) {
        (false, _) => Ok(None),
        (true, None) => Err(Error::InvalidConfig("process.terminal is set: a --console-socket is needed".into())),
        (true, Some(p)) => {
            let s = std::os::unix::net::UnixStream::connect(p).map_err(Error::io("connecting to console socket", p))?;
            Ok(Some(OwnedFd::from(s)))
        }
    }
}

/// A process's seccomp listener, received from it, to the spec's seccomp agent.
fn hand_listener(linux: &oci_spec::runtime::Linux, fd: Option<OwnedFd>, pid: Pid, state: serde_json::Value) -> Result<()> {
    let seccomp = linux.seccomp().as_ref().ok_or_else(|| Error::InvalidConfig("a seccomp listener without a seccomp filter".into()))?;
    let fd = fd.ok_or_else(|| Error::State { id: String::new(), reason: "the seccomp listener did not come with its message".into() })?;
    Ok(seccomp::send_listener(seccomp, &fd, pid.as_raw(), state)?)
}

fn oci_state(s: &State, status: Status) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": s.id,
        "status": status,
        "pid": if status == Status::Stopped { 0 } else { s.init.pid },
        "bundle": s.bundle,
        "annotations": s.spec_annotations(),
    })
}

impl Container {
    /// Set up the container and leave its init waiting for [`Container::start`].
    pub fn create(root: &Path, opts: &CreateOptions) -> Result<Container> {
        Self::create_from(root, opts, load_spec(&opts.bundle)?)
    }

    /// [`Container::create`] with the bundle's config already loaded (by [`load_spec`]).
    pub fn create_from(root: &Path, opts: &CreateOptions, config: BundleConfig) -> Result<Container> {
        validate_id(&opts.id)?;
        single_threaded()?;
        let BundleConfig { spec, raw: raw_config, rootfs } = config;
        let bundle = fs::canonicalize(&opts.bundle).map_err(Error::io("resolving bundle", &opts.bundle))?;
        let mut plan = plan(&spec)?;
        let process = spec.process().clone().ok_or_else(|| Error::InvalidConfig("process is missing".into()))?;
        let linux = spec.linux().clone().unwrap_or_default();
        let seccomp = linux.seccomp().as_ref().map(|s| seccomp::compile_cached(s, &root.join(SECCOMP_CACHE))).transpose()?;
        let mut join = namespaces::open_all(&plan.join)?;
        if let Some(net) = &opts.network
            && plan.creates(LinuxNamespaceType::Network)
            && !plan.has(LinuxNamespaceType::User)
        {
            let net = net.try_clone().map_err(Error::io("duplicating the prepared network namespace", "/proc/self/fd"))?;
            plan.create.retain(|t| *t != LinuxNamespaceType::Network);
            plan.join.push((LinuxNamespaceType::Network, PathBuf::from("/proc/self/fd").join(net.as_raw_fd().to_string())));
            join.push((LinuxNamespaceType::Network, File::from(net)));
            let order = |t: &LinuxNamespaceType| namespaces::JOIN_ORDER.iter().position(|o| o == t);
            plan.join.sort_by_key(|(t, _)| order(t));
            join.sort_by_key(|(t, _)| order(t));
        }
        // Without a mount namespace the container's mounts go into ours (as runc's do); we note
        // what was on the rootfs before, so a failed create and delete take them away again.
        let host_mounts_over = if plan.has(LinuxNamespaceType::Mount) {
            None
        } else {
            if linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty())
                || linux.readonly_paths().as_ref().is_some_and(|p| !p.is_empty())
            {
                return Err(Error::InvalidConfig("unable to restrict sys entries without a private MNT namespace".into()));
            }
            Some(crate::sys::mount_id(&rootfs)?)
        };
        let cg_path = cgroup_path(&spec, &opts.id);
        let cgroup = cgroups::open(&cg_path)?;

        fs::DirBuilder::new().recursive(true).mode(0o711).create(root).map_err(Error::io("creating runtime root", root))?;
        let state_dir = State::dir(root, &opts.id);
        match fs::DirBuilder::new().mode(0o711).create(&state_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::AlreadyExists(opts.id.clone())),
            other => other.map_err(Error::io("creating state directory", &state_dir))?,
        }
        let mut guard = CreateGuard {
            state_dir: &state_dir,
            cgroup: None,
            child: None,
            host_mounts: host_mounts_over.map(|base| (rootfs.as_path(), base)),
            armed: true,
        };

        let fifo_path = state_dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622)).map_err(Error::sys("creating exec FIFO"))?;
        // The umask cut the mode; the init may run as any uid (a mapped root, a plain user).
        fs::set_permissions(&fifo_path, std::os::unix::fs::PermissionsExt::from_mode(0o622))
            .map_err(Error::io("setting exec FIFO mode", &fifo_path))?;
        let fifo: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(&fifo_path)
            .map_err(Error::io("opening exec FIFO", &fifo_path))?
            .into();
        guard.cgroup = Some(cgroup.as_ref());
        cgroup.create()?;
        let console = connect_console(&opts.console_socket, process.terminal() == Some(true))?;
        let mut flags = CloneFlags::empty();
        for t in [LinuxNamespaceType::User, LinuxNamespaceType::Pid] {
            if plan.creates(t) {
                flags |= namespaces::flag(t);
            }
        }
        let new_time = plan.creates(LinuxNamespaceType::Time).then_some(&spec);
        let placement = Placement::new(cgroup.as_ref(), !plan.creates(LinuxNamespaceType::User));
        let (pid, parent_end, cloned_into) = spawn(flags, join, new_time, &placement, |join, sync| Setup {
            spec: &spec,
            process: &process,
            plan: &plan,
            join,
            sync,
            console,
            seccomp,
            preserve_fds: opts.preserve_fds,
            self_join: &placement.self_join,
            role: Role::Init { rootfs: rootfs.clone(), fifo, cgroups: cgroup.view(), no_pivot: opts.no_pivot },
        })?;
        guard.child = Some(pid);
        let _span = tracing::debug_span!("create", id = %opts.id, pid = pid.as_raw()).entered();

        if plan.creates(LinuxNamespaceType::User) {
            write_id_maps(pid, &spec)?;
        }
        if let Some(r) = linux.resources() {
            cgroup.apply(&with_created_devices_allowed(r, &spec))?;
        }
        placement.finish(cgroup.as_ref(), pid, cloned_into)?;

        let state = State {
            id: opts.id.clone(),
            init: ProcessId::of(pid.as_raw())?,
            bundle,
            rootfs: rootfs.clone(),
            created: state::now_rfc3339(),
            owner: if nix::unistd::geteuid().is_root() { "root".into() } else { nix::unistd::geteuid().to_string() },
            cgroup_path: cg_path.clone(),
            annotations: Default::default(),
            host_mounts_over,
            raw_config,
            config: spec.clone().into(),
        };
        let creating = serde_json::to_string(&oci_state(&state, Status::Creating)).unwrap_or_default();
        parent_end.send(&Msg::Begin { state: creating.clone() })?;
        loop {
            let (msg, fd) = match parent_end.recv_with_fd()? {
                Some((m, fd)) => (Some(m), fd),
                None => (None, None),
            };
            match msg {
                Some(Msg::SeccompListener) => {
                    hand_listener(&linux, fd, pid, serde_json::from_str(&creating).unwrap_or_default())?;
                    parent_end.send(&Msg::Go)?;
                }
                Some(Msg::RunHooks) => {
                    let hooks = spec.hooks().clone().unwrap_or_default();
                    #[allow(deprecated)]
                    crate::hooks::run(&hooks.prestart().clone().unwrap_or_default(), creating.as_bytes())?;
                    crate::hooks::run(&hooks.create_runtime().clone().unwrap_or_default(), creating.as_bytes())?;
                    parent_end.send(&Msg::Go)?;
                }
                Some(Msg::Ready) => break,
                Some(Msg::Failed { kind, message }) => return Err(Error::Init { kind: kind.into(), message }),
                Some(Msg::Go | Msg::Begin { .. }) | None => {
                    let status = nix::sys::wait::waitpid(pid, None).ok();
                    guard.child = None;
                    return Err(Error::Init {
                        kind: crate::error::Kind::Internal,
                        message: format!("container init exited during setup: {status:?}"),
                    });
                }
            }
        }
        state.save(root)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid.as_raw())?;
        }
        guard.armed = false;
        Ok(Container { root: root.to_path_buf(), state })
    }

    pub fn load(root: &Path, id: &str) -> Result<Container> {
        validate_id(id)?;
        Ok(Container { root: root.to_path_buf(), state: State::load(root, id)? })
    }

    /// Remove what a create cut short left of container `id` (a runtime killed between making
    /// the state directory and recording the state): every process in the cgroup at
    /// `cgroup_path`, that cgroup, and the state directory. Where there is readable state,
    /// [`Container::delete_with`] is the way; this is for the rest. Nothing there is fine.
    pub fn remove_leftover(root: &Path, id: &str, cgroup_path: &Path, parents: Parents) -> Result<()> {
        validate_id(id)?;
        let dir = State::dir(root, id);
        if !dir.exists() {
            return Ok(());
        }
        let cg = cgroups::open(cgroup_path)?;
        kill_cgroup(cg.as_ref());
        reap_children();
        let mut first_err = if cg.exists() { cg.destroy(parents).err().map(Error::from) } else { None };
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                first_err.get_or_insert(Error::io("removing state directory", dir)(e));
            }
            _ => {}
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Every container under `root`, skipping directories that hold no readable state.
    pub fn list(root: &Path) -> Result<Vec<Container>> {
        let entries = match fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", root)(e)),
        };
        let mut out: Vec<Container> =
            entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|id| Container::load(root, id).ok())).collect();
        out.sort_by(|a, b| a.state.id.cmp(&b.state.id));
        Ok(out)
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn pid(&self) -> i32 {
        self.state.init.pid
    }

    fn dir(&self) -> PathBuf {
        State::dir(&self.root, &self.state.id)
    }

    pub fn cgroup(&self) -> Result<Box<dyn Cgroup>> {
        Ok(cgroups::open(&self.state.cgroup_path)?)
    }

    pub fn status(&self) -> Status {
        if !self.state.init.is_alive() {
            return Status::Stopped;
        }
        if self.dir().join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if self.cgroup().is_ok_and(|c| c.is_frozen()) {
            return Status::Paused;
        }
        Status::Running
    }

    /// The state as the OCI runtime spec defines it (plus runc's rootfs, created and owner).
    pub fn oci_state(&self) -> serde_json::Value {
        let mut v = oci_state(&self.state, self.status());
        v["rootfs"] = serde_json::json!(self.state.rootfs);
        v["created"] = serde_json::json!(self.state.created);
        v["owner"] = serde_json::json!(self.state.owner);
        v
    }

    /// The status, if it is one of `ok`; otherwise runc's message for this action in it.
    fn require(&self, ok: &[Status], message: impl FnOnce(Status) -> String) -> Result<Status> {
        let status = self.status();
        if ok.contains(&status) {
            Ok(status)
        } else {
            Err(Error::WrongState { id: self.state.id.clone(), status: status.to_string(), message: message(status) })
        }
    }

    /// Let the waiting init exec the container's program.
    pub fn start(&self) -> Result<()> {
        self.require(&[Status::Created], |s| match s {
            Status::Stopped => "cannot start a container that has stopped".into(),
            Status::Running => "cannot start an already running container".into(),
            s => format!("cannot start a container in the {s} state"),
        })?;
        let fifo_path = self.dir().join(EXEC_FIFO);
        let fifo = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .map_err(Error::io("opening exec FIFO", &fifo_path))?;
        // Wait for the init's byte, but not for an init that died in the meantime.
        let mut buf = [0u8; 1];
        loop {
            match nix::unistd::read(&fifo, &mut buf) {
                Ok(1) => break,
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => {
                    if !self.state.init.is_alive() {
                        return Err(Error::State { id: self.state.id.clone(), reason: "init exited before start".into() });
                    }
                    let mut fds = [nix::poll::PollFd::new(fifo.as_fd(), nix::poll::PollFlags::POLLIN)];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10u16));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("reading exec FIFO")(e)),
            }
        }
        fs::remove_file(&fifo_path).map_err(Error::io("removing exec FIFO", &fifo_path))?;
        if let Some(h) = self.state.hooks()?.poststart().clone() {
            let json = serde_json::to_vec(&oci_state(&self.state, Status::Running)).unwrap_or_default();
            if let Err(e) = crate::hooks::run(&h, &json) {
                tracing::warn!(id = %self.state.id, "poststart hook failed: {e}");
            }
        }
        Ok(())
    }

    /// Send `signal` to the init, or to every process of the container with `all`.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        self.require(&[Status::Created, Status::Running, Status::Paused], |_| NOT_RUNNING.into())?;
        if all {
            let cg = self.cgroup()?;
            for p in cg.pids()? {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), signal);
            }
            // Signals other than KILL wait for a thaw; deliver them as the user asked.
            return Ok(());
        }
        self.state.init.signal(signal)
    }

    pub fn pause(&self) -> Result<()> {
        self.require(&[Status::Running, Status::Created], |_| NOT_RUNNING.into())?;
        Ok(self.cgroup()?.freeze(true)?)
    }

    pub fn resume(&self) -> Result<()> {
        self.require(&[Status::Paused], |_| "container not paused".into())?;
        Ok(self.cgroup()?.freeze(false)?)
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.cgroup()?.pids()?)
    }

    /// Change the limits of the container's cgroup (`runc update`): what `r` sets is written,
    /// the rest left as it is.
    pub fn update(&self, r: &oci_spec::runtime::LinuxResources) -> Result<()> {
        Ok(self.cgroup()?.apply(r)?)
    }

    pub fn stats(&self) -> Result<cgroups::Stats> {
        Ok(self.cgroup()?.stats()?)
    }

    /// Processes of the container the OOM killer killed (0 if its cgroup is unreadable).
    pub fn oom_kills(&self) -> u64 {
        self.cgroup().map(|c| c.oom_kills()).unwrap_or(0)
    }

    /// Remove the container; `force` kills it first if it is still running.
    pub fn delete(self, force: bool) -> Result<()> {
        self.delete_with(force, Parents::RemoveEmpty)
    }

    /// [`Container::delete`], saying what happens to the cgroup's parents (see [`Parents`]).
    pub fn delete_with(self, force: bool, parents: Parents) -> Result<()> {
        let status = self.status();
        // As runc: a created container goes without --force (its init, waiting for `start`, is
        // killed); only a running or paused one needs it.
        if !matches!(status, Status::Stopped | Status::Created) && !force {
            return Err(Error::WrongState {
                id: self.state.id.clone(),
                status: status.to_string(),
                message: format!("cannot delete container {} that is not stopped: {status}", self.state.id),
            });
        }
        let cg = self.cgroup()?;
        if status != Status::Stopped {
            let _ = self.state.init.signal(Signal::SIGKILL);
        }
        kill_cgroup(cg.as_ref());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.init.is_alive() && Instant::now() < deadline {
            reap_children();
            std::thread::sleep(Duration::from_millis(1));
        }
        reap_children();
        let mut first_err = cg.destroy(parents).err().map(Error::from);
        if let Some(base) = self.state.host_mounts_over
            && let Err(e) = crate::sys::unmount_down_to(&self.state.rootfs, base)
        {
            first_err.get_or_insert(e);
        }
        let hooks = self.state.hooks().unwrap_or_else(|e| {
            tracing::warn!(id = %self.state.id, "poststop hooks not run: {e}");
            Default::default()
        });
        if let Some(h) = hooks.poststop().clone() {
            let json = serde_json::to_vec(&oci_state(&self.state, Status::Stopped)).unwrap_or_default();
            if let Err(e) = crate::hooks::run(&h, &json) {
                tracing::warn!(id = %self.state.id, "poststop hook failed: {e}");
            }
        }
        let dir = self.dir();
        if let Err(e) = fs::remove_dir_all(&dir) {
            first_err.get_or_insert(Error::io("removing state directory", dir)(e));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Start a new process inside the running container; returns its pid (our child).
    pub fn exec(&self, opts: &ExecOptions) -> Result<Pid> {
        // As runc: a created container takes an exec too (its namespaces are there).
        self.require(&[Status::Created, Status::Running, Status::Paused], |_| "cannot exec in a stopped container".into())?;
        if self.status() == Status::Paused && !opts.ignore_paused {
            return Err(Error::WrongState {
                id: self.state.id.clone(),
                status: "paused".into(),
                message: "cannot exec in a paused container (use --ignore-paused to override)".into(),
            });
        }
        single_threaded()?;
        let config = self.state.config()?;
        let base = config.process().clone().unwrap_or_default();
        let process = opts.process.clone().unwrap_or(base);
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidConfig("exec needs a command".into()));
        }
        let cache = self.root.join(SECCOMP_CACHE);
        let seccomp = config.linux().as_ref().and_then(|l| l.seccomp().as_ref()).map(|s| seccomp::compile_cached(s, &cache)).transpose()?;
        let init = self.state.init.pid;
        let mut plan = Plan::default();
        for t in namespaces::JOIN_ORDER {
            let name = namespaces::proc_name(t);
            if namespaces::same_as_ours(init, name) {
                continue;
            }
            let path = PathBuf::from(format!("/proc/{init}/ns/{name}"));
            if path.exists() {
                plan.join.push((t, path));
            }
        }
        // A container without a mount namespace shares ours (none to join): joining none would
        // leave the process on the host's root, where runc leaves it; it goes into the container's.
        let root = (!plan.join.iter().any(|(t, _)| *t == LinuxNamespaceType::Mount)).then(|| PathBuf::from(format!("/proc/{init}/root")));
        let join = namespaces::open_all(&plan.join)?;
        // The init may have exited while we opened its namespaces.
        if !self.state.init.is_alive() {
            return Err(Error::WrongState {
                id: self.state.id.clone(),
                status: "stopped".into(),
                message: "cannot exec in a stopped container".into(),
            });
        }
        let console = connect_console(&opts.console_socket, process.terminal() == Some(true))?;
        let cgroup = self.cgroup()?;
        // The child joins before it enters any of the container's namespaces: host root, host paths.
        let placement =
            if opts.cgroups.is_empty() { Placement::new(cgroup.as_ref(), true) } else { Placement::sub(cgroup.as_ref(), &opts.cgroups)? };
        let (pid, parent_end, cloned_into) = spawn(CloneFlags::empty(), join, None, &placement, |join, sync| Setup {
            spec: config,
            process: &process,
            plan: &plan,
            join,
            sync,
            console,
            seccomp,
            preserve_fds: opts.preserve_fds,
            self_join: &placement.self_join,
            role: Role::Exec { root },
        })?;
        let fail = |e: Error| {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            e
        };
        placement.finish(cgroup.as_ref(), pid, cloned_into).map_err(fail)?;
        parent_end.send(&Msg::Go).map_err(fail)?;
        let mut next = parent_end.recv_with_fd().map_err(fail)?;
        if let Some((Msg::SeccompListener, fd)) = next {
            let linux = config.linux().clone().unwrap_or_default();
            hand_listener(&linux, fd, pid, self.oci_state()).map_err(fail)?;
            parent_end.send(&Msg::Go).map_err(fail)?;
            next = parent_end.recv_with_fd().map_err(fail)?;
        }
        match next.map(|(m, _)| m) {
            Some(Msg::Ready) => {}
            Some(Msg::Failed { kind, message }) => {
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(Error::Init { kind: kind.into(), message });
            }
            other => return Err(fail(Error::State { id: self.state.id.clone(), reason: format!("exec setup ended with {other:?}") })),
        }
        // The child's end is close-on-exec: it closes when the program has replaced the runtime
        // (or the child died trying), so whoever we return to sees the program, not us.
        let _ = parent_end.recv();
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid.as_raw())?;
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_devices_stay_allowed_after_a_deny_all_rule() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})).unwrap();
        let out = with_created_devices_allowed(&r, &spec);
        let rules = out.devices().as_ref().unwrap();
        assert!(!rules[0].allow(), "the spec's own rules come first");
        let allowed = |major: i64, minor: Option<i64>| rules.iter().any(|d| d.allow() && d.major() == Some(major) && d.minor() == minor);
        assert!(allowed(1, Some(3)), "/dev/null");
        assert!(allowed(5, Some(2)), "/dev/ptmx");
        assert!(allowed(136, None), "/dev/pts/*");
        let again = with_created_devices_allowed(&out, &spec);
        assert_eq!(again.devices().as_ref().unwrap().len(), rules.len(), "a rule already there is not added twice");
        let none: LinuxResources = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(with_created_devices_allowed(&none, &spec).devices().is_none(), "no rules, nothing added");
    }

    #[test]
    fn ids_cannot_name_paths_or_hidden_entries() {
        assert!(validate_id("web-1_a.b").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", ".seccomp-cache", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
