//! Seccomp: compile an OCI `linux.seccomp` into BPF ahead of time (in the parent, where errors
//! are cheap to report) and load the compiled program in the container just before exec.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::OnceLock;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unknown syscall {0:?}")]
    UnknownSyscall(String),
    #[error("seccomp: {0}")]
    Notify(String),
    #[error("seccomp: argument index {index} of {syscall} is out of range (0-5)")]
    BadArgIndex { syscall: String, index: usize },
    #[error("seccomp: {context}: {source}")]
    Lib { context: String, source: libseccomp::error::SeccompError },
    #[error("seccomp: exporting the filter: {0}")]
    Export(std::io::Error),
}

/// A BPF program ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    instructions: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

/// Names of real syscalls that an older libseccomp may not know yet: every name in Docker's
/// profile. Those are skipped (left to the default action), any other unknown name is an error.
fn known_newer_names() -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let v: serde_json::Value = serde_json::from_str(crate::spec::DOCKER_SECCOMP_PROFILE).unwrap_or_default();
        v["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["names"].as_array().into_iter().flatten())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    })
}

fn lib(context: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let context = context.into();
    move |source| SeccompError::Lib { context, source }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> Result<ScmpAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(default_errno) as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(default_errno) as u16),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn arch(a: Arch) -> Option<ScmpArch> {
    Some(match a {
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        _ => return None,
    })
}

/// Like [`compile`], but reuse BPF compiled earlier for the same filter (compiling Docker's
/// profile takes ~10 ms; reading it back, microseconds). The cache key is the SHA-256 of the
/// filter's JSON, the libseccomp version and the architecture; the directory must be private
/// to root, since whatever it holds is loaded into containers.
pub fn compile_cached(s: &LinuxSeccomp, cache_dir: &Path) -> Result<CompiledFilter, SeccompError> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(s).unwrap_or_default());
    let v = libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_default();
    h.update(format!("|{v}|{}|tree", std::env::consts::ARCH));
    let path = cache_dir.join(format!("{}.bpf", hex::encode(h.finalize())));
    if let Ok(bytes) = std::fs::read(&path)
        && let Some(instructions) = decode(&bytes)
    {
        return Ok(CompiledFilter { instructions, flags: flags(s) });
    }
    let f = compile(s)?;
    // A cache that cannot be written only costs speed next time.
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .and_then(|_| berth_atomic::write_file(&path, &encode(&f.instructions), 0o600));
    if let Err(e) = written {
        tracing::debug!("not caching the seccomp filter in {}: {e}", cache_dir.display());
    }
    Ok(f)
}

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: the load returns the fd a seccomp agent answers on.
const NEW_LISTENER: libc::c_ulong = 8;

/// Whether any rule of `s` hands its syscall to a seccomp agent (`SCMP_ACT_NOTIFY`).
pub fn notifies(s: &LinuxSeccomp) -> bool {
    s.syscalls().as_ref().is_some_and(|r| r.iter().any(|r| r.action() == LinuxSeccompAction::ScmpActNotify))
}

/// What runc checks of a filter that notifies: an agent to send the listener to, never for
/// the default action, and never for the calls the runtime makes between loading the filter
/// and handing the listener over (the agent could not answer them yet).
pub fn check_notify(s: &LinuxSeccomp) -> Result<(), SeccompError> {
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::Notify("SCMP_ACT_NOTIFY cannot be used as default action".into()));
    }
    if !notifies(s) {
        return Ok(());
    }
    for rule in s.syscalls().iter().flatten().filter(|r| r.action() == LinuxSeccompAction::ScmpActNotify) {
        for name in rule.names() {
            if matches!(name.as_str(), "write" | "sendmsg") {
                return Err(SeccompError::Notify(format!("SCMP_ACT_NOTIFY cannot be used for the {name} syscall")));
            }
        }
    }
    match s.listener_path() {
        Some(p) if !p.as_os_str().is_empty() => Ok(()),
        _ => Err(SeccompError::Notify("SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath, the seccomp agent's socket".into())),
    }
}

fn flags(s: &LinuxSeccomp) -> libc::c_ulong {
    let mut flags: libc::c_ulong = if notifies(s) { NEW_LISTENER } else { 0 };
    for f in s.flags().clone().unwrap_or_default() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            _ => 0,
        };
    }
    flags
}

pub fn compile(s: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    check_notify(s)?;
    let default_errno = s.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(s.default_action(), None, default_errno)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("creating filter"))?;
    // The runtime sets no_new_privs itself, exactly when the spec asks for it.
    ctx.set_ctl_nnp(false).map_err(lib("disabling implicit no_new_privs"))?;
    // A binary tree over syscall numbers instead of a chain of comparisons: fewer instructions
    // to run on every syscall the container makes.
    ctx.set_ctl_optimize(2).map_err(lib("asking for a binary-tree filter"))?;
    for a in s.architectures().clone().unwrap_or_default() {
        let Some(sa) = arch(a) else { continue };
        if !ctx.is_arch_present(sa).map_err(lib(format!("arch {a:?}")))? {
            ctx.add_arch(sa).map_err(lib(format!("adding arch {a:?}")))?;
        }
    }
    for rule in s.syscalls().clone().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret(), default_errno)?;
        if act == default {
            continue; // libseccomp refuses rules that repeat the default action
        }
        let mut conds = Vec::new();
        for arg in rule.args().clone().unwrap_or_default() {
            let op = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
            };
            let datum = match op {
                ScmpCompareOp::MaskedEqual(_) => arg.value_two().unwrap_or(0),
                _ => arg.value(),
            };
            if arg.index() > 5 {
                return Err(SeccompError::BadArgIndex { syscall: rule.names().join(","), index: arg.index() });
            }
            conds.push(ScmpArgCompare::new(arg.index() as u32, op, datum));
        }
        for name in rule.names() {
            let sc = match ScmpSyscall::from_name(name) {
                Ok(sc) => sc,
                Err(_) if known_newer_names().contains(name) => {
                    tracing::debug!(syscall = %name, "libseccomp does not know this syscall; left to the default action");
                    continue;
                }
                Err(_) => return Err(SeccompError::UnknownSyscall(name.clone())),
            };
            ctx.add_rule_conditional(act, sc, &conds).map_err(lib(format!("rule for {name}")))?;
        }
    }
    Ok(CompiledFilter { instructions: export(&ctx)?, flags: flags(s) })
}

/// libseccomp 2.5 has no in-memory export: write the BPF to a memfd and read it back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let fd = nix::sys::memfd::memfd_create("berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SeccompError::Export(e.into()))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(lib("exporting BPF"))?;
    let mut bytes = Vec::new();
    file.rewind().and_then(|_| file.read_to_end(&mut bytes)).map_err(SeccompError::Export)?;
    decode(&bytes).ok_or_else(|| SeccompError::Export(std::io::Error::other("libseccomp exported a malformed program")))
}

const INSN: usize = std::mem::size_of::<libc::sock_filter>();
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// Raw `sock_filter` array → instructions; None unless it is a whole, non-empty, legal program.
fn decode(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(INSN) || bytes.len() / INSN > MAX_INSNS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

fn encode(insns: &[libc::sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(insns.len() * INSN);
    for i in insns {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.extend_from_slice(&[i.jt, i.jf]);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

impl CompiledFilter {
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// Install the filter on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN. A filter
    /// that notifies returns its listener, for the seccomp agent.
    pub fn load(&self) -> nix::Result<Option<std::os::fd::OwnedFd>> {
        let prog = libc::sock_fprog { len: self.instructions.len() as u16, filter: self.instructions.as_ptr() as *mut _ };
        // SAFETY: prog points at `instructions`, which outlives the call; the kernel copies it.
        let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, self.flags, &prog as *const libc::sock_fprog) };
        let rc = nix::errno::Errno::result(rc)?;
        if self.flags & NEW_LISTENER == 0 {
            return Ok(None);
        }
        // SAFETY: with NEW_LISTENER the kernel returned a new descriptor that nothing else owns.
        Ok(Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rc as i32) }))
    }
}

/// Hand a notifying filter's listener to the seccomp agent at `listenerPath`, as runc does:
/// one message on its unix socket, the OCI `ContainerProcessState` as JSON with the listener
/// attached (SCM_RIGHTS, named `seccompFd`). `state` is the container's OCI state.
pub fn send_listener(s: &LinuxSeccomp, listener: &std::os::fd::OwnedFd, pid: i32, state: serde_json::Value) -> Result<(), SeccompError> {
    use std::os::fd::AsRawFd;
    let path = s.listener_path().clone().unwrap_or_default();
    let agent = |e: std::io::Error| {
        SeccompError::Notify(format!("failed to connect with seccomp agent specified in the seccomp profile ({}): {e}", path.display()))
    };
    let stream = std::os::unix::net::UnixStream::connect(&path).map_err(agent)?;
    let msg = serde_json::json!({
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": s.listener_metadata().clone().unwrap_or_default(),
        "state": state,
    });
    let data = serde_json::to_vec(&msg).unwrap_or_default();
    let fds = [listener.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(&data)],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| agent(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seccomp(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn compiles_docker_default_profile() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let s = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        let f = compile(s).unwrap();
        assert!(f.len() > 100, "suspiciously small filter: {}", f.len());
    }

    #[test]
    fn cached_filter_is_the_compiled_one_and_junk_in_the_cache_is_ignored() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let s = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fresh = compile_cached(s, dir.path()).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1);
        let cached = compile_cached(s, dir.path()).unwrap();
        assert_eq!(encode(&fresh.instructions), encode(&cached.instructions));
        std::fs::write(&entries[0], b"short").unwrap();
        let recompiled = compile_cached(s, dir.path()).unwrap();
        assert_eq!(encode(&fresh.instructions), encode(&recompiled.instructions));
    }

    #[test]
    fn unknown_syscall_is_named_in_the_error() {
        let s = seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "no_such_call"], "action": "SCMP_ACT_ALLOW"}]
        }));
        let err = compile(&s).unwrap_err().to_string();
        assert!(err.contains("no_such_call"), "{err}");
    }

    #[test]
    fn notify_needs_an_agent_and_spares_the_runtimes_own_calls() {
        let with = |names: &[&str], listener: Option<&str>| {
            let mut v = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}]
            });
            if let Some(l) = listener {
                v["listenerPath"] = l.into();
            }
            seccomp(v)
        };
        let f = compile(&with(&["mkdir"], Some("/run/agent.sock"))).unwrap();
        assert_eq!(f.flags & NEW_LISTENER, NEW_LISTENER);
        for (names, listener, want) in [
            (&["mkdir"][..], None, "listenerPath"),
            (&["mkdir"], Some(""), "listenerPath"),
            (&["write"], Some("/run/agent.sock"), "SCMP_ACT_NOTIFY cannot be used for the write syscall"),
            (&["sendmsg"], Some("/run/agent.sock"), "sendmsg"),
        ] {
            let e = compile(&with(names, listener)).unwrap_err().to_string();
            assert!(e.contains(want), "{names:?} {listener:?}: {e}");
        }
        let default = seccomp(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}));
        assert!(compile(&default).unwrap_err().to_string().contains("default action"));
        // Without notify, no listener is asked for.
        assert_eq!(compile(&seccomp(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}))).unwrap().flags & NEW_LISTENER, 0);
    }
}
