//! Namespaces: which to create with clone, which to join by path, and in what order.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Error, Result};

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of a namespace under /proc/PID/ns.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Joining order: user first (it grants the rights to join the rest), mount last (it changes
/// which paths the others resolve against).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Mount,
];

/// The spec's namespaces split into the ones to create and the ones to join.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub create: Vec<LinuxNamespaceType>,
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Plan {
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Plan> {
        let mut plan = Plan::default();
        for ns in namespaces {
            let t = ns.typ();
            if plan.create.contains(&t) || plan.join.iter().any(|(j, _)| *j == t) {
                return Err(Error::InvalidConfig(format!("namespace {} is listed twice", proc_name(t))));
            }
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => plan.join.push((t, p.clone())),
                _ => plan.create.push(t),
            }
        }
        plan.join.sort_by_key(|(t, _)| JOIN_ORDER.iter().position(|o| o == t));
        Ok(plan)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.create.contains(&t)
    }

    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.creates(t) || self.join.iter().any(|(j, _)| *j == t)
    }

    /// Flags for clone(): every namespace to create except time, which only unshare can make.
    pub fn clone_flags(&self) -> CloneFlags {
        self.create
            .iter()
            .filter(|t| **t != LinuxNamespaceType::Time && **t != LinuxNamespaceType::Cgroup)
            .fold(CloneFlags::empty(), |f, t| f | flag(*t))
    }
}

/// Open every namespace to join up front, so a bad path fails before any process exists.
pub fn open_all(join: &[(LinuxNamespaceType, PathBuf)]) -> Result<Vec<(LinuxNamespaceType, File)>> {
    join.iter()
        .map(|(t, p)| {
            File::open(p)
                .map(|f| (*t, f))
                .map_err(|e| Error::InvalidConfig(format!("namespace {} path {}: {e}", proc_name(*t), p.display())))
        })
        .collect()
}

pub fn enter(t: LinuxNamespaceType, f: &File) -> Result<()> {
    nix::sched::setns(f.as_fd(), flag(t)).map_err(Error::sys(format!("joining {} namespace", proc_name(t))))
}

/// A new network namespace with `lo` up, made ahead of a container that will ask for one: making
/// it is the costliest step of a container's creation here (~0.7 ms of kernel time), and a shim
/// waiting for its container has the time. The calling thread enters the new namespace and goes
/// back to the one it was in; should that fail it is left inside, so a caller that goes on to
/// create containers sharing its own namespace must check [`current_network`] afterwards.
pub fn prepare_network() -> Result<OwnedFd> {
    let home = File::open(THREAD_NET).map_err(Error::io("opening", THREAD_NET))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(Error::sys("unshare(CLONE_NEWNET)"))?;
    let made = crate::init::loopback_up().and_then(|()| File::open(THREAD_NET).map_err(Error::io("opening", THREAD_NET)));
    enter(LinuxNamespaceType::Network, &home)?;
    made.map(OwnedFd::from)
}

const THREAD_NET: &str = "/proc/thread-self/ns/net";

/// Which network namespace the calling thread is in (`net:[INODE]`).
pub fn current_network() -> Result<PathBuf> {
    std::fs::read_link(THREAD_NET).map_err(Error::io("reading", THREAD_NET))
}

/// True when /proc/PID/ns/NAME is the same namespace as ours (joining it would be a no-op,
/// and for user namespaces an error).
pub fn same_as_ours(pid: i32, name: &str) -> bool {
    let a = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
    let b = std::fs::read_link(Path::new("/proc/self/ns").join(name));
    matches!((a, b), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: &str, path: Option<&str>) -> LinuxNamespace {
        serde_json::from_value(serde_json::json!({"type": t, "path": path})).unwrap()
    }

    #[test]
    fn splits_create_and_join_and_orders_joins() {
        let plan =
            Plan::from_spec(&[ns("mount", Some("/proc/1/ns/mnt")), ns("pid", None), ns("network", Some("/x")), ns("user", Some("/u"))])
                .unwrap();
        assert_eq!(plan.create, vec![LinuxNamespaceType::Pid]);
        let order: Vec<_> = plan.join.iter().map(|(t, _)| *t).collect();
        assert_eq!(order, vec![LinuxNamespaceType::User, LinuxNamespaceType::Network, LinuxNamespaceType::Mount]);
        assert_eq!(plan.clone_flags(), CloneFlags::CLONE_NEWPID);
    }

    #[test]
    fn a_prepared_network_namespace_is_new_and_leaves_us_where_we_were() {
        if !nix::unistd::geteuid().is_root() {
            // Counted as a skip where scripts/test.sh asks (`$BERTH_SKIP_LOG`).
            eprintln!("SKIP: making a network namespace needs root");
            if let Some(log) = std::env::var_os("BERTH_SKIP_LOG")
                && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log)
            {
                let _ = std::io::Write::write_all(&mut f, b"namespaces::a_prepared_network_namespace: needs root\n");
            }
            return;
        }
        let before = current_network().unwrap();
        let made = prepare_network().unwrap();
        assert_eq!(current_network().unwrap(), before);
        let made = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&made))).unwrap();
        assert!(made.to_string_lossy().starts_with("net:[") && made != before, "{made:?} {before:?}");
    }

    #[test]
    fn duplicate_namespace_is_invalid() {
        assert!(Plan::from_spec(&[ns("pid", None), ns("pid", Some("/p"))]).is_err());
    }

    #[test]
    fn missing_namespace_path_names_the_path() {
        let err = open_all(&[(LinuxNamespaceType::Network, PathBuf::from("/no/such/ns"))]).unwrap_err().to_string();
        assert!(err.contains("/no/such/ns"), "{err}");
    }
}
