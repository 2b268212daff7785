//! Which sysctls a container may set: only those the kernel keeps per namespace, and only when
//! the container has that namespace of its own. Anything else would be written through the
//! container's /proc/sys into the host's kernel (`kernel.core_pattern` names a program the
//! host's kernel runs as root). The rules are runc's, which Docker relies on: IPC keys with a
//! private IPC namespace, `net.*` with a private network namespace (never the host's),
//! `kernel.domainname` with a private UTS namespace (`kernel.hostname` has the spec's own field).

use std::path::{Path, PathBuf};

/// The IPC keys the kernel keeps per IPC namespace (besides `fs.mqueue.*`).
const IPC_KEYS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("invalid sysctl name {0:?}")]
    InvalidName(String),
    #[error("sysctl {0:?} is not allowed in the host's IPC namespace")]
    HostIpc(String),
    #[error("sysctl {0:?} is not allowed in the host's network namespace")]
    HostNetwork(String),
    #[error("sysctl {0:?} is not allowed in the host's UTS namespace")]
    HostUts(String),
    #[error("sysctl {0:?} is not allowed: it conflicts with the container's hostname setting")]
    Hostname(String),
    #[error("sysctl {0:?} is not in a separate kernel namespace: it would change the host's setting")]
    NotNamespaced(String),
}

/// Which namespaces a container has of its own (created, or joined but not the host's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Private {
    pub ipc: bool,
    pub net: bool,
    pub uts: bool,
}

/// `net.ipv4.ip_forward` or `net/ipv4/ip_forward`, as dotted words; None when it is not a
/// sysctl name (empty words, `..`, characters a name never has).
fn normalise(key: &str) -> Option<String> {
    let dotted = key.replace('/', ".");
    let ok = !dotted.is_empty()
        && dotted.split('.').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':')));
    ok.then_some(dotted)
}

/// May a container with these private namespaces set `key`?
pub fn check(key: &str, private: Private) -> Result<(), SysctlError> {
    let name = normalise(key).ok_or_else(|| SysctlError::InvalidName(key.to_string()))?;
    if IPC_KEYS.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
        return if private.ipc { Ok(()) } else { Err(SysctlError::HostIpc(key.to_string())) };
    }
    if name.starts_with("net.") {
        return if private.net { Ok(()) } else { Err(SysctlError::HostNetwork(key.to_string())) };
    }
    match name.as_str() {
        "kernel.domainname" if private.uts => Ok(()),
        "kernel.domainname" => Err(SysctlError::HostUts(key.to_string())),
        "kernel.hostname" => Err(SysctlError::Hostname(key.to_string())),
        _ => Err(SysctlError::NotNamespaced(key.to_string())),
    }
}

/// Where the kernel shows `key` (checked by [`check`] first): `/proc/sys/net/ipv4/ip_forward`.
/// A key written with slashes keeps its dots (`net/ipv4/conf/eth0.100/rp_filter`).
pub fn path(key: &str) -> PathBuf {
    let rel = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    Path::new("/proc/sys").join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Private = Private { ipc: true, net: true, uts: true };
    const NONE: Private = Private { ipc: false, net: false, uts: false };

    #[test]
    fn namespaced_keys_need_their_namespace() {
        for k in ["kernel.shmmax", "kernel.sem", "fs.mqueue.msg_max", "kernel/msgmnb"] {
            assert_eq!(check(k, ALL), Ok(()), "{k}");
            assert_eq!(check(k, Private { ipc: false, ..ALL }), Err(SysctlError::HostIpc(k.into())), "{k}");
        }
        for k in ["net.ipv4.ip_forward", "net.core.somaxconn", "net/ipv4/conf/eth0.100/rp_filter"] {
            assert_eq!(check(k, ALL), Ok(()), "{k}");
            assert_eq!(check(k, Private { net: false, ..ALL }), Err(SysctlError::HostNetwork(k.into())), "{k}");
        }
        assert_eq!(check("kernel.domainname", ALL), Ok(()));
        assert_eq!(check("kernel.domainname", Private { uts: false, ..ALL }), Err(SysctlError::HostUts("kernel.domainname".into())));
        assert!(matches!(check("kernel.hostname", ALL), Err(SysctlError::Hostname(_))));
    }

    #[test]
    fn host_wide_keys_are_never_allowed() {
        for k in ["kernel.core_pattern", "kernel.panic", "vm.dirty_expire_centisecs", "fs.file-max", "kernel.shm", "kernel.shmmaxx"] {
            assert_eq!(check(k, ALL), Err(SysctlError::NotNamespaced(k.into())), "{k}");
            assert!(check(k, NONE).is_err(), "{k}");
        }
    }

    #[test]
    fn names_that_could_leave_proc_sys_are_refused() {
        for k in ["", "net..ipv4", "net/../../etc/x", "net.ipv4.ip_forward\n", "net.a b", ".net", "net."] {
            assert_eq!(check(k, ALL), Err(SysctlError::InvalidName(k.into())), "{k:?}");
        }
    }

    #[test]
    fn keys_map_to_proc_sys() {
        assert_eq!(path("net.ipv4.ip_forward"), Path::new("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(path("net/ipv4/conf/eth0.100/rp_filter"), Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter"));
    }
}
