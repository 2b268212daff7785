//! Turning the spec's root and mounts into a container filesystem: mounts, devices, pivot_root,
//! masked and read-only paths. Every decision goes through [`Sys`], so it is tested without root.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::SFlag;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result};
use crate::sys::{FileKind, Sys};

/// How the container's cgroups appear at a `cgroup` mount.
#[derive(Debug, Clone)]
pub enum CgroupView {
    /// v1: one directory per hierarchy (name as under /sys/fs/cgroup, the container's host dir).
    V1(Vec<(String, PathBuf)>),
    /// v2: the container's cgroup directory on the host.
    V2(PathBuf),
}

pub struct RootfsContext<'a> {
    pub rootfs: &'a Path,
    /// In a new user namespace, device nodes cannot be made: bind the host's instead.
    pub in_user_ns: bool,
    pub cgroup_ns: bool,
    pub cgroups: CgroupView,
    /// Whether the container has a mount namespace (made or joined). Without one its mounts go
    /// into the runtime's own table: the propagation of `/` there is left as it is.
    pub own_mount_ns: bool,
    /// SELinux's `linux.mountLabel`, for the file systems mounted here.
    pub mount_label: Option<String>,
}

/// Flags and data parsed from a mount's option list.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    /// The recursive options (`rro`, `rnosuid` …): `MOUNT_ATTR_*` bits set and cleared on the
    /// mount and every mount under it (`mount_setattr` with `AT_RECURSIVE`).
    pub rec_set: u64,
    pub rec_clear: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// The access-time mode: one of the three below, cleared as a whole before one is set.
const MOUNT_ATTR_ATIME: u64 = 0x70;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;

/// A recursive option (runc's names): the bits it sets and clears.
fn recursive(opt: &str) -> Option<(u64, u64)> {
    Some(match opt {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME),
        "ratime" | "rrelatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

impl MountOptions {
    pub fn parse(options: &[String]) -> Self {
        let mut o = MountOptions { flags: MsFlags::empty(), propagation: Vec::new(), data: Vec::new(), rec_set: 0, rec_clear: 0 };
        for opt in options {
            if let Some((set, clear)) = recursive(opt) {
                // A later option wins over an earlier one for the same bits.
                o.rec_set = (o.rec_set & !clear & !set) | set;
                o.rec_clear = (o.rec_clear & !set) | clear;
                continue;
            }
            let (set, clear) = match opt.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                    let rec = if opt.starts_with('r') { MsFlags::MS_REC } else { MsFlags::empty() };
                    let kind = match opt.trim_start_matches('r') {
                        "private" => MsFlags::MS_PRIVATE,
                        "shared" => MsFlags::MS_SHARED,
                        "slave" => MsFlags::MS_SLAVE,
                        _ => MsFlags::MS_UNBINDABLE,
                    };
                    o.propagation.push(kind | rec);
                    continue;
                }
                // Docker and runc both accept and ignore these hints.
                "defaults" | "tmpcopyup" | "notmpcopyup" => continue,
                other => {
                    o.data.push(other.to_string());
                    continue;
                }
            };
            o.flags.insert(set);
            o.flags.remove(clear);
        }
        o
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Resolve `unsafe_path` inside `root` the way the container will see it: symlinks (absolute or
/// relative) and `..` are followed but can never leave `root`.
pub fn secure_join(sys: &dyn Sys, root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    const MAX_LINKS: usize = 255;
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: VecDeque<PathBuf> = unsafe_path.components().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match part.components().next() {
            None | Some(Component::RootDir) | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        if sys.kind(&full) != Some(FileKind::Symlink) {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Error::InvalidConfig(format!("too many symlinks resolving {} in {}", unsafe_path.display(), root.display())));
        }
        let target = sys.read_link(&full).unwrap_or_default();
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        for c in target.components().rev() {
            pending.push_front(PathBuf::from(c.as_os_str()));
        }
    }
    Ok(root.join(resolved))
}

/// The devices every container gets (DESIGN.md, "Docker's defaults").
pub fn default_devices() -> Vec<LinuxDevice> {
    [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]
        .into_iter()
        .map(|(path, major, minor)| {
            let mut d = LinuxDevice::default();
            d.set_path(PathBuf::from(path));
            d.set_typ(LinuxDeviceType::C);
            d.set_major(major);
            d.set_minor(minor);
            d.set_file_mode(Some(0o666));
            d.set_uid(Some(0));
            d.set_gid(Some(0));
            d
        })
        .collect()
}

/// Everything before pivot_root: propagation, the rootfs bind, the spec's mounts, devices.
/// `linux.rootfsPropagation` as mount flags (rslave when unset, as runc).
fn root_propagation(linux: &oci_spec::runtime::Linux) -> Result<MsFlags> {
    Ok(match linux.rootfs_propagation().as_deref() {
        None | Some("") | Some("rslave") | Some("slave") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some("rprivate") | Some("private") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        Some("rshared") | Some("shared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
        Some("runbindable") | Some("unbindable") => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        Some(other) => return Err(Error::InvalidConfig(format!("unknown rootfsPropagation {other:?}"))),
    })
}

pub fn prepare(sys: &dyn Sys, spec: &Spec, ctx: &RootfsContext) -> Result<()> {
    let rootfs = ctx.rootfs;
    let linux = spec.linux().clone().unwrap_or_default();
    let propagation = root_propagation(&linux)?;
    // Shared only once the container's root is in place (`finish`): a tree shared before
    // would carry every mount made below into the host's mount table.
    let first = if propagation.contains(MsFlags::MS_SHARED) { MsFlags::MS_SLAVE | MsFlags::MS_REC } else { propagation };
    if ctx.own_mount_ns {
        sys.mount(None, Path::new("/"), None, first, None)?;
    }
    // pivot_root needs the new root to be a mount point.
    sys.mount(Some(rootfs), rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;

    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(sys, m, ctx)?;
    }

    let has_dev_mount = mounts.iter().any(|m| m.destination() == Path::new("/dev"));
    let mut devices = if has_dev_mount { default_devices() } else { Vec::new() };
    for d in linux.devices().clone().unwrap_or_default() {
        devices.retain(|x| x.path() != d.path());
        devices.push(d);
    }
    // Nothing but these nodes changes the tree meanwhile: each parent is made once.
    let mut parents = Vec::new();
    for d in &devices {
        create_device(sys, rootfs, d, ctx.in_user_ns, &mut parents)?;
    }
    if has_dev_mount {
        let dev = rootfs.join("dev");
        for (link, target) in
            [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
        {
            sys.symlink(Path::new(target), &dev.join(link))?;
        }
        if mounts.iter().any(|m| m.destination() == Path::new("/dev/pts")) {
            sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
        }
    }
    Ok(())
}

fn mount_one(sys: &dyn Sys, m: &Mount, ctx: &RootfsContext) -> Result<()> {
    let dest_in = m.destination();
    if !dest_in.is_absolute() {
        return Err(Error::InvalidConfig(format!("mount destination {} is not absolute", dest_in.display())));
    }
    let opts = MountOptions::parse(&m.options().clone().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    // As runc: proc and sysfs only on a directory (or nothing), never through a symlink or onto
    // a file there (a symlink swapped in was how mounts were led elsewhere).
    if matches!(typ, "proc" | "sysfs")
        && let (Some(parent), Some(name)) = (dest_in.parent(), dest_in.file_name())
        && sys.kind(&secure_join(sys, ctx.rootfs, parent)?.join(name)).is_some_and(|k| k != FileKind::Dir)
    {
        return Err(Error::InvalidConfig(format!("filesystem {typ:?} must be mounted on ordinary directory ({})", dest_in.display())));
    }
    let dest = secure_join(sys, ctx.rootfs, dest_in)?;

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroups(sys, &dest, &opts, ctx);
    }

    if opts.is_bind() || typ == "bind" {
        // The kernel ignores a bind's data, so an option we do not know would be dropped in
        // silence (a misspelt `rro`, an `idmap` we cannot do): refused instead.
        if let Some(unknown) = opts.data.first() {
            return Err(Error::InvalidConfig(format!("unknown mount option {unknown:?} for the bind mount on {}", dest_in.display())));
        }
        let src =
            m.source().as_deref().ok_or_else(|| Error::InvalidConfig(format!("bind mount on {} has no source", dest_in.display())))?;
        match sys.kind(src) {
            None => {
                return Err(Error::InvalidConfig(format!("mount source {} for {} does not exist", src.display(), dest_in.display())));
            }
            Some(FileKind::Dir) => sys.mkdir_all(&dest, 0o755)?,
            Some(_) => {
                if sys.kind(&dest).is_none() {
                    sys.create_file(&dest)?;
                }
            }
        }
        let flags = opts.flags | MsFlags::MS_BIND;
        sys.mount(Some(src), &dest, None, flags & (MsFlags::MS_BIND | MsFlags::MS_REC), None)?;
        // A bind ignores most flags; a second, remounting call applies them.
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            sys.mount(None, &dest, None, extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT, None)?;
        }
    } else {
        sys.mkdir_all(&dest, 0o755)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let data = crate::lsm::with_mount_label(opts.data(), typ, ctx.mount_label.as_deref());
        sys.mount(Some(&source), &dest, Some(typ), opts.flags, data.as_deref())?;
    }
    for p in &opts.propagation {
        sys.mount(None, &dest, None, *p, None)?;
    }
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        sys.mount_setattr(&dest, opts.rec_set, opts.rec_clear)?;
    }
    Ok(())
}

fn mount_cgroups(sys: &dyn Sys, dest: &Path, opts: &MountOptions, ctx: &RootfsContext) -> Result<()> {
    let ro = opts.flags & MsFlags::MS_RDONLY;
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    sys.mkdir_all(dest, 0o755)?;
    match &ctx.cgroups {
        CgroupView::V2(host_dir) => {
            if ctx.cgroup_ns {
                sys.mount(Some(Path::new("cgroup2")), dest, Some("cgroup2"), base | ro, None)?;
            } else {
                sys.mount(Some(host_dir), dest, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
                sys.mount(None, dest, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro, None)?;
            }
        }
        CgroupView::V1(dirs) => {
            sys.mount(Some(Path::new("tmpfs")), dest, Some("tmpfs"), base, Some("mode=755"))?;
            for (name, host_dir) in dirs {
                let sub = dest.join(name);
                sys.mkdir_all(&sub, 0o755)?;
                sys.mount(Some(host_dir), &sub, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
                sys.mount(None, &sub, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro, None)?;
            }
            if !ro.is_empty() {
                sys.mount(None, dest, None, MsFlags::MS_REMOUNT | base | ro, Some("mode=755"))?;
            }
        }
    }
    Ok(())
}

fn create_device(sys: &dyn Sys, rootfs: &Path, d: &LinuxDevice, in_user_ns: bool, parents: &mut Vec<PathBuf>) -> Result<()> {
    let dest = secure_join(sys, rootfs, d.path())?;
    if let Some(parent) = dest.parent()
        && !parents.iter().any(|p| p == parent)
    {
        sys.mkdir_all(parent, 0o755)?;
        parents.push(parent.to_path_buf());
    }
    if in_user_ns {
        if sys.kind(&dest).is_none() {
            sys.create_file(&dest)?;
        }
        return sys.mount(Some(d.path()), &dest, None, MsFlags::MS_BIND, None);
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::InvalidConfig(format!("device {} has type 'a'", d.path().display())));
        }
    };
    let dev = nix::sys::stat::makedev(d.major() as u64, d.minor() as u64);
    match sys.mknod(&dest, kind, d.file_mode().unwrap_or(0o666), dev) {
        // The image has one there already: it stays as it is.
        Err(Error::Sys { source: nix::errno::Errno::EEXIST, .. }) => return Ok(()),
        other => other?,
    }
    sys.chown(&dest, d.uid().unwrap_or(0), d.gid().unwrap_or(0))
}

/// After pivot_root: sysctls, masked and read-only paths, and finally a read-only root.
pub fn finish(sys: &dyn Sys, spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    // After the switch, as runc: the container's own root, shared with its own mounts only.
    let propagation = root_propagation(&linux)?;
    if propagation.contains(MsFlags::MS_SHARED) {
        sys.mount(None, Path::new("/"), None, propagation, None)?;
    }
    if let Some(sysctls) = linux.sysctl() {
        let mut keys: Vec<_> = sysctls.keys().collect();
        keys.sort();
        for key in keys {
            // Checked at create (`sysctl::check`) against the container's namespaces; the name
            // is checked again here, where it becomes a path.
            if crate::sysctl::check(key, crate::sysctl::Private { ipc: true, net: true, uts: true })
                .is_err_and(|e| matches!(e, crate::sysctl::SysctlError::InvalidName(_)))
            {
                return Err(Error::InvalidConfig(format!("invalid sysctl name {key:?}")));
            }
            let path = crate::sysctl::path(key);
            sys.write(&path, &sysctls[key]).map_err(|e| Error::InvalidConfig(format!("sysctl {key}: {e}")))?;
        }
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        if sys.kind(path).is_none() {
            continue;
        }
        sys.mount(Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        sys.mount(
            None,
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )?;
    }
    for p in linux.masked_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        match sys.kind(path) {
            None => continue,
            Some(FileKind::Dir) => sys.mount(Some(Path::new("tmpfs")), path, Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0"))?,
            Some(_) => sys.mount(Some(Path::new("/dev/null")), path, None, MsFlags::MS_BIND, None)?,
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        // The root's own flags go with it: in a user namespace they are locked, and a remount
        // that would drop them fails (EPERM), as runc knows.
        let keep = sys.mount_flags(Path::new("/"));
        sys.mount(None, Path::new("/"), None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::RecordingSys;

    fn ctx(rootfs: &Path) -> RootfsContext<'_> {
        RootfsContext {
            rootfs,
            in_user_ns: false,
            cgroup_ns: false,
            cgroups: CgroupView::V2(PathBuf::from("/sys/fs/cgroup/berth/x")),
            own_mount_ns: true,
            mount_label: None,
        }
    }

    #[test]
    fn parses_flags_propagation_and_data() {
        let o = MountOptions::parse(&["nosuid".into(), "strictatime".into(), "mode=755".into(), "size=65536k".into(), "rslave".into()]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data(), Some("mode=755,size=65536k".into()));
        let o = MountOptions::parse(&["ro".into(), "rw".into(), "rbind".into()]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }

    #[test]
    fn secure_join_keeps_symlinks_and_dotdot_inside_the_root() {
        let sys = RecordingSys::with_dirs(&["/r", "/r/etc"]);
        sys.link("/r/abs", "/etc");
        sys.link("/r/escape", "../../../../host");
        sys.link("/r/etc/loop", "/etc/loop");
        let j = |p: &str| secure_join(&sys, Path::new("/r"), Path::new(p));
        assert_eq!(j("/abs/passwd").unwrap(), PathBuf::from("/r/etc/passwd"));
        assert_eq!(j("/escape/x").unwrap(), PathBuf::from("/r/host/x"));
        assert_eq!(j("/../../etc").unwrap(), PathBuf::from("/r/etc"));
        assert!(j("/etc/loop").is_err());
    }

    #[test]
    fn docker_default_spec_mounts_in_order_and_makes_devices() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let sys = RecordingSys::with_dirs(&["/r"]);
        prepare(&sys, &spec, &ctx(Path::new("/r"))).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], "mount none / - MS_REC | MS_SLAVE -");
        assert_eq!(calls[1], "mount /r /r - MS_BIND | MS_REC -");
        // Without a mount namespace of its own, the runtime's `/` is left as it is.
        let host = RecordingSys::with_dirs(&["/r"]);
        prepare(&host, &spec, &RootfsContext { own_mount_ns: false, ..ctx(Path::new("/r")) }).unwrap();
        assert_eq!(host.calls()[0], "mount /r /r - MS_BIND | MS_REC -");
        let mounts: Vec<_> = calls.iter().filter(|c| c.starts_with("mount ")).cloned().collect();
        assert!(mounts.contains(&"mount proc /r/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -".to_string()), "{mounts:#?}");
        assert!(mounts.contains(&"mount tmpfs /r/dev tmpfs MS_NOSUID | MS_STRICTATIME mode=755,size=65536k".to_string()), "{mounts:#?}");
        assert!(
            mounts
                .iter()
                .any(|m| m.starts_with("mount devpts /r/dev/pts devpts") && m.ends_with("newinstance,ptmxmode=0666,mode=0620,gid=5")),
            "{mounts:#?}"
        );
        assert!(mounts.contains(&"mount sysfs /r/sys sysfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC -".to_string()), "{mounts:#?}");
        // /dev/pts is mounted after /dev, or the tmpfs would hide it.
        let pos = |needle: &str| calls.iter().position(|c| c.contains(needle)).unwrap();
        assert!(pos("tmpfs /r/dev tmpfs") < pos("/r/dev/pts devpts"));
        for dev in ["null 666 1:3", "zero 666 1:5", "full 666 1:7", "random 666 1:8", "urandom 666 1:9", "tty 666 5:0"] {
            assert!(calls.contains(&format!("mknod /r/dev/{dev}")), "missing {dev} in {calls:#?}");
        }
        assert!(calls.contains(&"symlink /r/dev/ptmx -> pts/ptmx".to_string()));
        assert!(calls.contains(&"symlink /r/dev/fd -> /proc/self/fd".to_string()));
    }

    #[test]
    fn a_device_the_image_has_is_kept_and_each_parent_is_made_once() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let sys = RecordingSys::with_dirs(&["/r"]);
        // As if something had made it already (the fake's mounts hide nothing).
        sys.add("/r/dev/null", FileKind::Other);
        prepare(&sys, &spec, &ctx(Path::new("/r"))).unwrap();
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| c.starts_with("mknod /r/dev/null") || c.starts_with("chown /r/dev/null")), "{calls:#?}");
        assert!(calls.contains(&"mknod /r/dev/zero 666 1:5".to_string()), "{calls:#?}");
        assert_eq!(
            calls.iter().filter(|c| *c == "mkdir /r/dev").count(),
            2,
            "the tmpfs's mount point, then the devices' parent once: {calls:#?}"
        );
    }

    #[test]
    fn user_namespace_binds_devices_instead_of_mknod() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let sys = RecordingSys::with_dirs(&["/r"]);
        let mut c = ctx(Path::new("/r"));
        c.in_user_ns = true;
        prepare(&sys, &spec, &c).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&"mount /dev/null /r/dev/null - MS_BIND -".to_string()), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.starts_with("mknod")));
    }

    #[test]
    fn bind_mount_of_missing_source_is_refused_by_name() {
        let mut spec = crate::spec::docker_default(&["true".into()], false);
        let mut m = Mount::default();
        m.set_destination(PathBuf::from("/data"));
        m.set_source(Some(PathBuf::from("/no/such/dir")));
        m.set_options(Some(vec!["rbind".into(), "ro".into()]));
        spec.mounts_mut().get_or_insert_with(Vec::new).push(m);
        let sys = RecordingSys::with_dirs(&["/r"]);
        let err = prepare(&sys, &spec, &ctx(Path::new("/r"))).unwrap_err().to_string();
        assert!(err.contains("/no/such/dir") && err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_read_only_root_keeps_its_locked_flags() {
        let mut spec = crate::spec::docker_default(&["true".into()], false);
        spec.root_mut().as_mut().unwrap().set_readonly(Some(true));
        let sys = RecordingSys::with_dirs(&["/"]);
        sys.locked.set((MsFlags::MS_NOSUID | MsFlags::MS_RELATIME).bits());
        finish(&sys, &spec).unwrap();
        let calls = sys.calls();
        assert!(
            calls.iter().any(|c| c.starts_with("mount none / -")
                && c.contains("MS_RDONLY")
                && c.contains("MS_NOSUID")
                && c.contains("MS_RELATIME")),
            "{calls:#?}"
        );
    }

    #[test]
    fn recursive_options_become_mount_attributes_for_the_whole_tree() {
        let o =
            MountOptions::parse(&["rbind".into(), "rro".into(), "rnosuid".into(), "rnoatime".into(), "rrw".into(), "rstrictatime".into()]);
        assert_eq!(o.rec_set, MOUNT_ATTR_NOSUID | MOUNT_ATTR_STRICTATIME, "the later option wins");
        assert_eq!(o.rec_clear, MOUNT_ATTR_RDONLY | MOUNT_ATTR_ATIME);
        assert!(o.data.is_empty(), "none is mistaken for data: {:?}", o.data);
        let mut spec = crate::spec::docker_default(&["true".into()], false);
        let mut m = Mount::default();
        m.set_destination(PathBuf::from("/data"));
        m.set_source(Some(PathBuf::from("/src")));
        m.set_options(Some(vec!["rbind".into(), "rro".into()]));
        spec.mounts_mut().get_or_insert_with(Vec::new).push(m);
        let sys = RecordingSys::with_dirs(&["/r", "/src"]);
        prepare(&sys, &spec, &ctx(Path::new("/r"))).unwrap();
        assert!(sys.calls().contains(&"setattr /r/data set=0x1 clear=0x0".to_string()), "{:#?}", sys.calls());
    }

    #[test]
    fn the_selinux_mount_label_reaches_file_systems_not_proc() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let sys = RecordingSys::with_dirs(&["/r"]);
        let label = "system_u:object_r:container_file_t:s0";
        prepare(&sys, &spec, &RootfsContext { mount_label: Some(label.into()), ..ctx(Path::new("/r")) }).unwrap();
        let calls = sys.calls();
        let dev = calls.iter().find(|c| c.starts_with("mount tmpfs /r/dev tmpfs")).unwrap();
        assert!(dev.ends_with(&format!("mode=755,size=65536k,context=\"{label}\"")), "{dev}");
        let proc = calls.iter().find(|c| c.starts_with("mount proc /r/proc")).unwrap();
        assert!(!proc.contains("context="), "{proc}");
    }

    #[test]
    fn an_unknown_option_on_a_bind_is_refused_not_dropped() {
        for (options, ok) in [(&["rbind", "rro", "tmpcopyup"][..], true), (&["rbind", "rrro"], false), (&["bind", "idmap"], false)] {
            let mut spec = crate::spec::docker_default(&["true".into()], false);
            let mut m = Mount::default();
            m.set_destination(PathBuf::from("/data"));
            m.set_source(Some(PathBuf::from("/src")));
            m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
            spec.mounts_mut().get_or_insert_with(Vec::new).push(m);
            let sys = RecordingSys::with_dirs(&["/r", "/src"]);
            let r = prepare(&sys, &spec, &ctx(Path::new("/r")));
            assert_eq!(r.is_ok(), ok, "{options:?}: {r:?}");
            if !ok {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("unknown mount option") && e.contains("/data"), "{e}");
                assert!(!sys.calls().iter().any(|c| c.contains("/r/data")), "nothing mounted there");
            }
        }
    }

    #[test]
    fn proc_and_sys_are_never_mounted_through_a_symlink() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        for (path, target) in [("/r/proc", "/tmp"), ("/r/sys", "/etc")] {
            let sys = RecordingSys::with_dirs(&["/r", "/r/tmp", "/r/etc"]);
            sys.link(path, target);
            let err = prepare(&sys, &spec, &ctx(Path::new("/r"))).unwrap_err().to_string();
            assert!(err.contains("must be mounted on ordinary directory"), "{path}: {err}");
            assert!(!sys.calls().iter().any(|c| c.starts_with("mount") && (c.contains("/r/tmp") || c.contains("/r/etc"))), "{path}");
        }
        let sys = RecordingSys::with_dirs(&["/r"]);
        sys.add("/r/proc", FileKind::File);
        assert!(prepare(&sys, &spec, &ctx(Path::new("/r"))).is_err(), "a file there too");
    }

    #[test]
    fn read_only_bind_is_remounted_with_its_flags() {
        let mut spec = crate::spec::docker_default(&["true".into()], false);
        let mut m = Mount::default();
        m.set_destination(PathBuf::from("/data"));
        m.set_source(Some(PathBuf::from("/host/data")));
        m.set_options(Some(vec!["rbind".into(), "ro".into(), "rprivate".into()]));
        spec.set_mounts(Some(vec![m]));
        let sys = RecordingSys::with_dirs(&["/r", "/host/data"]);
        prepare(&sys, &spec, &ctx(Path::new("/r"))).unwrap();
        let calls = sys.calls();
        let i = calls.iter().position(|c| c == "mount /host/data /r/data - MS_BIND | MS_REC -").unwrap();
        assert_eq!(calls[i + 1], "mount none /r/data - MS_RDONLY | MS_REMOUNT | MS_BIND -");
        assert_eq!(calls[i + 2], "mount none /r/data - MS_REC | MS_PRIVATE -");
    }

    #[test]
    fn finish_masks_files_and_dirs_and_skips_missing_paths() {
        let spec = crate::spec::docker_default(&["true".into()], false);
        let sys = RecordingSys::default();
        sys.add("/proc/kcore", FileKind::File);
        sys.add("/proc/acpi", FileKind::Dir);
        sys.add("/proc/sys", FileKind::Dir);
        finish(&sys, &spec).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&"mount /dev/null /proc/kcore - MS_BIND -".to_string()));
        assert!(calls.contains(&"mount tmpfs /proc/acpi tmpfs MS_RDONLY size=0".to_string()));
        assert!(calls.contains(&"mount /proc/sys /proc/sys - MS_BIND | MS_REC -".to_string()));
        assert!(!calls.iter().any(|c| c.contains("/proc/keys")));
    }
}
