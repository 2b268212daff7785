//! What runs in the new process between clone and exec: join and make namespaces, build the
//! root filesystem, take on the user, capabilities and seccomp filter, then exec the program.
//! Runs in a child of a single-threaded process; it reports failures on the sync channel.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use crate::console;
use crate::error::{Error, Kind, Result};
use crate::namespaces::{self, Plan};
use crate::rootfs::{self, CgroupView, RootfsContext};
use crate::seccomp::CompiledFilter;
use crate::sync::{Channel, Msg};
use crate::sys::{LinuxSys, Sys};

pub(crate) enum Role {
    /// The container's first process: builds the container, then waits for `start`.
    Init { rootfs: PathBuf, fifo: OwnedFd, cgroups: CgroupView, no_pivot: bool },
    /// A process joining a running container; `root` is the container's root to chroot into
    /// where the container has no mount namespace of its own (so joining none leaves the host's).
    Exec { root: Option<PathBuf> },
}

pub(crate) struct Setup<'a> {
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub plan: &'a Plan,
    /// Namespaces to join, already open; pid and time were joined by the parent.
    pub join: Vec<(LinuxNamespaceType, File)>,
    pub sync: Channel,
    pub console: Option<OwnedFd>,
    pub seccomp: Option<CompiledFilter>,
    pub preserve_fds: u32,
    /// cgroup v1 `tasks` files to write `0` into before anything else (see `Cgroup::self_join_files`).
    pub self_join: &'a [PathBuf],
    pub role: Role,
}

/// Entry point of the cloned child. Never returns.
pub(crate) fn run(setup: Setup) -> ! {
    let result = setup_and_exec(&setup);
    let err = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = setup.sync.send(&Msg::Failed { kind: err.kind().into(), message: err.to_string() });
    // SAFETY: _exit ends this forked child at once, without running the parent's exit handlers.
    unsafe { libc::_exit(1) }
}

fn setup_and_exec(s: &Setup) -> Result<std::convert::Infallible> {
    // Nothing in the container may open /proc/<us>/exe and reach the runtime's binary
    // (CVE-2019-5736); exec resets this for the container's own program.
    nix::sys::prctl::set_dumpable(false).map_err(Error::sys("prctl(PR_SET_DUMPABLE)"))?;
    // Into the container's cgroup while the host's cgroup mounts are still what we see.
    for tasks in s.self_join {
        std::fs::write(tasks, "0").map_err(Error::io("joining the cgroup through", tasks))?;
    }

    if let Some((_, user_ns)) = s.join.iter().find(|(t, _)| *t == LinuxNamespaceType::User) {
        namespaces::enter(LinuxNamespaceType::User, user_ns)?;
    }
    // The parent writes id maps and puts us in whatever part of the cgroup we are not in yet.
    let state = match s.sync.recv()? {
        Some(Msg::Begin { state }) => state,
        Some(Msg::Go) => String::new(),
        other => return Err(Error::State { id: String::new(), reason: format!("expected Go from the runtime, got {other:?}") }),
    };
    if s.plan.has(LinuxNamespaceType::User) {
        become_root_in_user_ns(s.spec)?;
    }
    let mut unshare = CloneFlags::empty();
    for t in &s.plan.create {
        if !matches!(t, LinuxNamespaceType::User | LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
            unshare |= namespaces::flag(*t);
        }
    }
    if matches!(s.role, Role::Init { .. }) && !unshare.is_empty() {
        nix::sched::unshare(unshare).map_err(Error::sys(format!("unshare({unshare:?})")))?;
    }
    for (t, f) in &s.join {
        if !matches!(t, LinuxNamespaceType::User) {
            namespaces::enter(*t, f)?;
        }
    }
    if let Role::Exec { root: Some(root) } = &s.role {
        LinuxSys.chroot(root)?;
    }

    if let Role::Init { rootfs, cgroups, no_pivot, .. } = &s.role {
        if let Some(h) = s.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h).map_err(Error::sys(format!("sethostname {h:?}")))?;
        }
        if let Some(d) = s.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            set_domainname(d)?;
        }
        if s.plan.creates(LinuxNamespaceType::Network) {
            loopback_up()?;
        }
        let sys = LinuxSys;
        let hooks = s.spec.hooks().clone().unwrap_or_default();
        // As runc: the rootfs is built in the container's mount namespace, made or joined, or
        // without one in the runtime's own (where delete takes it down again).
        let own_mount_ns = s.plan.has(LinuxNamespaceType::Mount);
        let ctx = RootfsContext {
            rootfs,
            in_user_ns: s.plan.has(LinuxNamespaceType::User),
            cgroup_ns: s.plan.has(LinuxNamespaceType::Cgroup),
            cgroups: cgroups.clone(),
            own_mount_ns,
            mount_label: s.spec.linux().as_ref().and_then(|l| l.mount_label().clone()),
        };
        rootfs::prepare(&sys, s.spec, &ctx)?;
        #[allow(deprecated)]
        let runtime_hooks =
            hooks.prestart().as_ref().is_some_and(|h| !h.is_empty()) || hooks.create_runtime().as_ref().is_some_and(|h| !h.is_empty());
        if runtime_hooks {
            s.sync.send(&Msg::RunHooks)?;
            match s.sync.recv()? {
                Some(Msg::Go) => {}
                other => return Err(Error::State { id: String::new(), reason: format!("expected Go after hooks, got {other:?}") }),
            }
        }
        if let Some(h) = hooks.create_container() {
            crate::hooks::run(h, state.as_bytes())?;
        }
        if !own_mount_ns {
            // pivot_root would move the root of every process on the host: chroot, as runc.
            sys.chroot(rootfs)?;
        } else if *no_pivot {
            sys.move_root(rootfs)?;
        } else {
            match sys.pivot_root(rootfs) {
                // A rootfs on the initramfs cannot be pivoted away from: move and chroot.
                Err(Error::Sys { source: nix::errno::Errno::EINVAL, .. }) => sys.move_root(rootfs)?,
                other => other?,
            }
        }
        if s.process.terminal() == Some(true) {
            setup_terminal(s, true)?;
        }
        rootfs::finish(&sys, s.spec)?;
    } else if s.process.terminal() == Some(true) {
        setup_terminal(s, false)?;
    }

    let exec = prepare_process(s)?;
    s.sync.send(&Msg::Ready)?;

    if let Role::Init { fifo, .. } = &s.role {
        // Blocks until `start` opens the FIFO for reading.
        let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"0"))
            .map_err(Error::io("waiting on the exec FIFO", path))?;
        if let Some(h) = s.spec.hooks().as_ref().and_then(|h| h.start_container().clone()) {
            let mut created: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
            created["status"] = "created".into();
            crate::hooks::run(&h, created.to_string().as_bytes())?;
        }
    }
    exec.run(s.preserve_fds)
}

fn become_root_in_user_ns(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let maps_root = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| m.as_ref().is_none_or(|m| m.iter().any(|m| m.container_id() == 0));
    if maps_root(linux.uid_mappings()) && maps_root(linux.gid_mappings()) {
        nix::unistd::setresgid(0.into(), 0.into(), 0.into()).map_err(Error::sys("setresgid(0) in the user namespace"))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into()).map_err(Error::sys("setresuid(0) in the user namespace"))?;
    }
    Ok(())
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`, valid for the call.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    nix::errno::Errno::result(rc).map(drop).map_err(Error::sys(format!("setdomainname {name:?}")))
}

/// A fresh network namespace has `lo` down; containers expect it up.
pub(crate) fn loopback_up() -> Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(Error::sys("socket for bringing lo up"))?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        nix::errno::Errno::result(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req)).map_err(Error::sys("reading lo flags"))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        nix::errno::Errno::result(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req)).map_err(Error::sys("bringing lo up"))?;
    }
    Ok(())
}

fn setup_terminal(s: &Setup, bind_console: bool) -> Result<()> {
    let socket = s.console.as_ref().ok_or_else(|| Error::InvalidConfig("process.terminal needs a console socket".into()))?;
    let size = s.process.console_size().map(|b| (b.height() as u16, b.width() as u16));
    let (master, slave, name) = console::open_pty(size)?;
    if bind_console {
        let console_path = Path::new("/dev/console");
        if !console_path.exists() {
            LinuxSys.create_file(console_path)?;
        }
        LinuxSys.mount(Some(Path::new(&name)), console_path, None, nix::mount::MsFlags::MS_BIND, None)?;
    }
    console::send_fd(socket.as_raw_fd(), master.as_raw_fd(), &name)?;
    drop(master);
    console::become_terminal(&slave)
}

/// Everything checked and applied before the program runs; `run` is the exec itself.
struct Exec {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

fn cstr(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidConfig(format!("{what} contains a NUL byte: {s:?}")))
}

/// Load the filter; a notifying one's listener goes to the parent at once, and we wait until
/// the agent has it: from here on a notified call of ours would block without an agent.
fn load_seccomp(s: &Setup) -> Result<()> {
    let Some(f) = &s.seccomp else { return Ok(()) };
    let Some(listener) = f.load().map_err(Error::sys("loading the seccomp filter"))? else { return Ok(()) };
    s.sync.send_with_fd(&Msg::SeccompListener, &listener)?;
    drop(listener);
    match s.sync.recv()? {
        Some(Msg::Go) => Ok(()),
        other => Err(Error::State { id: String::new(), reason: format!("expected Go after the seccomp listener, got {other:?}") }),
    }
}

fn prepare_process(s: &Setup) -> Result<Exec> {
    let p = s.process;
    let args = p.args().clone().unwrap_or_default();
    let argv0 = args.first().ok_or_else(|| Error::InvalidConfig("process.args is empty".into()))?.clone();
    let env = p.env().clone().unwrap_or_default();

    crate::lsm::apply_exec_labels(p)?;
    for r in p.rlimits().clone().unwrap_or_default() {
        set_rlimit(r.typ(), r.soft(), r.hard())?;
    }
    if let Some(adj) = p.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| Error::InvalidConfig(format!("oomScoreAdj {adj}: {e}")))?;
    }
    let no_new_privs = p.no_new_privileges() == Some(true);
    if !no_new_privs {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it before dropping caps.
        load_seccomp(s)?;
    }
    apply_user_and_caps(p)?;
    if no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(Error::sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;
        load_seccomp(s)?;
    }
    let cwd = p.cwd();
    nix::unistd::chdir(cwd).map_err(|e| Error::Init {
        kind: Kind::InvalidArgument,
        message: format!("cannot use {} as the working directory: {e}", cwd.display()),
    })?;
    let path = find_executable(&argv0, &env)?;
    Ok(Exec {
        path: cstr(&path.to_string_lossy(), "process.args[0]")?,
        args: args.iter().map(|a| cstr(a, "process.args")).collect::<Result<_>>()?,
        env: env.iter().map(|e| cstr(e, "process.env")).collect::<Result<_>>()?,
    })
}

impl Exec {
    fn run(&self, preserve_fds: u32) -> Result<std::convert::Infallible> {
        // Only stdio (and fds the caller asked to preserve) reach the program.
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, 3 + preserve_fds, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        reset_signals();
        let err = nix::unistd::execve(&self.path, &self.args, &self.env).unwrap_err();
        // Past Ready nobody reads the sync channel: say it on stderr with Docker's codes.
        eprintln!("exec {}: {err}", self.path.to_string_lossy());
        let code = if err == nix::errno::Errno::ENOENT { 127 } else { 126 };
        // SAFETY: ends this process without running the parent's exit handlers.
        unsafe { libc::_exit(code) }
    }
}

/// The program starts with no blocked signals, whatever its creator blocked (a shim blocks
/// SIGCHLD for its signalfd); exec would keep the mask otherwise. Dispositions are left as
/// inherited, as runc leaves them (handlers reset on exec by themselves).
fn reset_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Resolve the program like execvp does, with the container's PATH, reporting Docker's errors.
fn find_executable(argv0: &str, env: &[String]) -> Result<PathBuf> {
    let not_found = || Error::Init { kind: Kind::ExecNotFound, message: format!("exec: \"{argv0}\": executable file not found in $PATH") };
    let check = |p: &Path| -> Result<()> {
        let meta = std::fs::metadata(p).map_err(|_| not_found())?;
        let executable = nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok();
        if meta.is_dir() || !executable {
            return Err(Error::Init { kind: Kind::ExecPermission, message: format!("exec: \"{argv0}\": permission denied") });
        }
        Ok(())
    };
    if argv0.contains('/') {
        let p = PathBuf::from(argv0);
        if !p.exists() {
            return Err(Error::Init { kind: Kind::ExecNotFound, message: format!("exec: \"{argv0}\": no such file or directory") });
        }
        check(&p)?;
        return Ok(p);
    }
    let path_var =
        env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = None;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(argv0);
        if !candidate.exists() {
            continue;
        }
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) => denied = Some(e),
        }
    }
    Err(denied.unwrap_or_else(not_found))
}

fn set_rlimit(t: PosixRlimitType, soft: u64, hard: u64) -> Result<()> {
    let resource = match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    };
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads the rlimit struct we pass.
    let rc = unsafe { libc::setrlimit(resource, &lim) };
    nix::errno::Errno::result(rc).map(drop).map_err(|e| {
        Error::InvalidConfig(format!("rlimit {t:?} soft {soft} hard {hard}: {e} (raising a hard limit needs CAP_SYS_RESOURCE)"))
    })
}

fn parse_caps(list: &Option<oci_spec::runtime::Capabilities>) -> Result<caps::CapsHashSet> {
    let mut set = caps::CapsHashSet::new();
    for c in list.clone().unwrap_or_default() {
        let name = c.to_string();
        let name = if name.starts_with("CAP_") { name } else { format!("CAP_{}", name.to_uppercase()) };
        let cap = caps::Capability::from_str(&name).map_err(|_| Error::InvalidConfig(format!("unknown capability {name}")))?;
        set.insert(cap);
    }
    Ok(set)
}

fn apply_user_and_caps(p: &Process) -> Result<()> {
    let user = p.user();
    let caps_spec = p.capabilities().clone().unwrap_or_default();
    let bounding = parse_caps(caps_spec.bounding())?;
    let effective = parse_caps(caps_spec.effective())?;
    let permitted = parse_caps(caps_spec.permitted())?;
    let inheritable = parse_caps(caps_spec.inheritable())?;
    let ambient = parse_caps(caps_spec.ambient())?;

    let err = |what: &'static str| move |e: caps::errors::CapsError| Error::InvalidConfig(format!("{what}: {e}"));
    for c in caps::all() {
        if !bounding.contains(&c) && caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(false) {
            caps::drop(None, caps::CapSet::Bounding, c).map_err(err("dropping from the bounding set"))?;
        }
    }
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    nix::sys::prctl::set_keepcaps(true).map_err(Error::sys("prctl(PR_SET_KEEPCAPS)"))?;
    let groups: Vec<nix::unistd::Gid> = user.additional_gids().clone().unwrap_or_default().into_iter().map(Into::into).collect();
    nix::unistd::setgroups(&groups).map_err(|e| Error::InvalidConfig(format!("setgroups {groups:?}: {e}")))?;
    let (uid, gid) = (user.uid(), user.gid());
    nix::unistd::setresgid(gid.into(), gid.into(), gid.into()).map_err(|e| Error::InvalidConfig(format!("setting gid {gid}: {e}")))?;
    nix::unistd::setresuid(uid.into(), uid.into(), uid.into()).map_err(|e| Error::InvalidConfig(format!("setting uid {uid}: {e}")))?;
    nix::sys::prctl::set_keepcaps(false).map_err(Error::sys("prctl(PR_SET_KEEPCAPS)"))?;

    caps::set(
        None,
        caps::CapSet::Effective,
        &effective.intersection(&caps::read(None, caps::CapSet::Permitted).unwrap_or_default()).copied().collect(),
    )
    .map_err(err("setting effective capabilities"))?;
    caps::set(None, caps::CapSet::Inheritable, &inheritable).map_err(err("setting inheritable capabilities"))?;
    caps::set(None, caps::CapSet::Permitted, &permitted).map_err(err("setting permitted capabilities"))?;
    if !effective.is_subset(&permitted) {
        return Err(Error::InvalidConfig("effective capabilities must be a subset of permitted ones".into()));
    }
    caps::set(None, caps::CapSet::Effective, &effective).map_err(err("setting effective capabilities"))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(err("clearing ambient capabilities"))?;
    // The kernel raises an ambient capability only where it is permitted and inheritable; as
    // runc and crun, one that is not is skipped (runc's own default spec lists such ones).
    for c in ambient.intersection(&permitted).filter(|c| inheritable.contains(c)) {
        if let Err(e) = caps::raise(None, caps::CapSet::Ambient, *c) {
            tracing::debug!("ambient capability {c} not raised: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_the_containers_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(find_executable("sh", &env).unwrap().ends_with("sh"));
        let e = find_executable("no-such-program-xyz", &env).unwrap_err();
        assert_eq!(e.kind(), Kind::ExecNotFound);
        assert_eq!(e.to_string(), "exec: \"no-such-program-xyz\": executable file not found in $PATH");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("data.txt");
        std::fs::write(&plain, "not a program").unwrap();
        let e = find_executable(plain.to_str().unwrap(), &env).unwrap_err();
        assert_eq!(e.kind(), Kind::ExecPermission);
        assert_eq!(find_executable("/no/such", &env).unwrap_err().kind(), Kind::ExecNotFound);
    }
}
