//! The seam between deciding what to do to the filesystem and asking the kernel to do it.
//!
//! Rootfs logic talks to a [`Sys`]; [`LinuxSys`] performs the calls, and the tests use a
//! recording fake so the decisions are checked without root.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Other,
}

pub trait Sys {
    fn mount(&self, src: Option<&Path>, dst: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<()>;
    fn umount(&self, dst: &Path, flags: MntFlags) -> Result<()>;
    /// `mount_setattr(2)` with `AT_RECURSIVE`: mount attributes (`MOUNT_ATTR_*`) set and cleared
    /// on the mount at `dst` and every mount under it.
    fn mount_setattr(&self, dst: &Path, set: u64, clear: u64) -> Result<()>;
    /// The flags of the mount at `path` that a remount must keep (in a user namespace the kernel
    /// locks them): nosuid, nodev, noexec and the access-time mode.
    fn mount_flags(&self, path: &Path) -> MsFlags;
    /// Make `new_root` the root and detach the old one.
    fn pivot_root(&self, new_root: &Path) -> Result<()>;
    /// Where pivot_root cannot work (a rootfs on ramfs): move the rootfs over / and chroot.
    fn move_root(&self, new_root: &Path) -> Result<()>;
    /// Without a mount namespace of its own: only this process's root changes.
    fn chroot(&self, new_root: &Path) -> Result<()>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()>;
    fn create_file(&self, path: &Path) -> Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// Make a device node; a path that exists already fails with `EEXIST` and is left alone.
    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    fn kind(&self, path: &Path) -> Option<FileKind>;
    fn read_link(&self, path: &Path) -> Option<PathBuf>;
    fn write(&self, path: &Path, data: &str) -> Result<()>;
}

/// The real kernel.
pub struct LinuxSys;

fn show(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
}

impl Sys for LinuxSys {
    fn mount(&self, src: Option<&Path>, dst: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<()> {
        nix::mount::mount(src, dst, fstype, flags, data).map_err(Error::sys(format!(
            "mounting {} on {} (type {}, flags {:?}, data {:?})",
            show(src),
            dst.display(),
            fstype.unwrap_or("none"),
            flags,
            data.unwrap_or("")
        )))
    }

    fn mount_setattr(&self, dst: &Path, set: u64, clear: u64) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dst.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidConfig(format!("mount destination {} holds a NUL", dst.display())))?;
        let attr = libc::mount_attr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
        // SAFETY: a NUL-terminated path and a mount_attr of the size given; the kernel only reads
        // them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        };
        if r != 0 {
            return Err(Error::sys(format!("setting recursive mount attributes on {} (set {set:#x}, clear {clear:#x})", dst.display()))(
                nix::errno::Errno::last(),
            ));
        }
        Ok(())
    }

    fn mount_flags(&self, path: &Path) -> MsFlags {
        use nix::sys::statvfs::FsFlags;
        let Ok(s) = nix::sys::statvfs::statvfs(path) else { return MsFlags::empty() };
        let f = s.flags();
        let mut out = MsFlags::empty();
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(st) {
                out |= ms;
            }
        }
        out
    }

    fn umount(&self, dst: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(dst, flags).map_err(Error::sys(format!("unmounting {}", dst.display())))
    }

    fn pivot_root(&self, new_root: &Path) -> Result<()> {
        use nix::fcntl::{OFlag, open};
        let ctx = |what: &str| format!("pivot_root to {}: {what}", new_root.display());
        let old = open("/", OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(Error::sys(ctx("open /")))?;
        let new = open(new_root, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(Error::sys(ctx("open new root")))?;
        nix::unistd::fchdir(&new).map_err(Error::sys(ctx("fchdir")))?;
        // pivot_root(".", ".") stacks the old root under the new one; no put_old directory needed.
        nix::unistd::pivot_root(".", ".").map_err(Error::sys(ctx("pivot_root")))?;
        nix::unistd::fchdir(&old).map_err(Error::sys(ctx("fchdir old")))?;
        // Keep the unmount of the old root from propagating back to the host.
        nix::mount::mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
            .map_err(Error::sys(ctx("make old root slave")))?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(Error::sys(ctx("detach old root")))?;
        nix::unistd::chdir("/").map_err(Error::sys(ctx("chdir /")))
    }

    fn move_root(&self, new_root: &Path) -> Result<()> {
        let ctx = |what: &str| format!("moving root to {}: {what}", new_root.display());
        nix::unistd::chdir(new_root).map_err(Error::sys(ctx("chdir")))?;
        nix::mount::mount(Some(new_root), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(Error::sys(ctx("mount --move")))?;
        nix::unistd::chroot(".").map_err(Error::sys(ctx("chroot")))?;
        nix::unistd::chdir("/").map_err(Error::sys(ctx("chdir /")))
    }

    fn chroot(&self, new_root: &Path) -> Result<()> {
        nix::unistd::chroot(new_root).map_err(Error::sys(format!("chroot to {}", new_root.display())))?;
        nix::unistd::chdir("/").map_err(Error::sys(format!("chdir / in {}", new_root.display())))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        fs::DirBuilder::new().recursive(true).mode(mode).create(path).map_err(Error::io("creating directory", path))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(Error::io("creating mount point", path))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::io("creating symlink", link)(e)),
            _ => Ok(()),
        }
    }

    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> Result<()> {
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(mode), dev)
            .map_err(Error::sys(format!("creating device {}", path.display())))?;
        // mknod is filtered by the umask; the spec's mode is what the container must see.
        nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, path, Mode::from_bits_truncate(mode), nix::sys::stat::FchmodatFlags::FollowSymlink)
            .map_err(Error::sys(format!("chmod {}", path.display())))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).map_err(Error::sys(format!("chown {}", path.display())))
    }

    fn kind(&self, path: &Path) -> Option<FileKind> {
        let m = fs::symlink_metadata(path).ok()?;
        let t = m.file_type();
        Some(if t.is_dir() {
            FileKind::Dir
        } else if t.is_file() {
            FileKind::File
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }

    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        fs::read_link(path).ok()
    }

    fn write(&self, path: &Path, data: &str) -> Result<()> {
        fs::write(path, data).map_err(Error::io("writing", path))
    }
}

/// The id of the mount `path` is on (what `/proc/self/mountinfo` numbers it), from the fdinfo
/// of an `O_PATH` descriptor: no walk of the mount table.
pub fn mount_id(path: &Path) -> Result<u64> {
    let f =
        fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_CLOEXEC).open(path).map_err(Error::io("opening", path))?;
    let info_path = format!("/proc/self/fdinfo/{}", f.as_raw_fd());
    let info = fs::read_to_string(&info_path).map_err(Error::io("reading", &info_path))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::io("finding mnt_id in", &info_path)(std::io::Error::other("no mnt_id line")))
}

/// Unmount what was stacked on `rootfs` since the mount numbered `base` was on top (the
/// container's mounts, made in the runtime's own namespace). Each detach takes a whole subtree.
pub fn unmount_down_to(rootfs: &Path, base: u64) -> Result<()> {
    // Bounded: something that keeps remounting there must not hold delete forever.
    for _ in 0..64 {
        match mount_id(rootfs) {
            Ok(id) if id != base => {
                nix::mount::umount2(rootfs, MntFlags::MNT_DETACH)
                    .map_err(Error::sys(format!("unmounting the container's mounts on {}", rootfs.display())))?;
            }
            // Gone already (a removed rootfs) or down to where it was.
            _ => return Ok(()),
        }
    }
    Err(Error::Sys { context: format!("mounts on {} keep coming back", rootfs.display()), source: nix::Error::EBUSY })
}

#[cfg(test)]
pub mod fake {
    //! A `Sys` that records every call and answers questions from an in-memory tree.
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct RecordingSys {
        pub calls: RefCell<Vec<String>>,
        pub tree: RefCell<BTreeMap<PathBuf, FileKind>>,
        pub links: RefCell<BTreeMap<PathBuf, PathBuf>>,
        /// What `mount_flags` answers (its bits).
        pub locked: std::cell::Cell<libc::c_ulong>,
    }

    impl RecordingSys {
        pub fn with_dirs(dirs: &[&str]) -> Self {
            let s = Self::default();
            for d in dirs {
                s.tree.borrow_mut().insert(PathBuf::from(d), FileKind::Dir);
            }
            s
        }
        pub fn add(&self, path: &str, kind: FileKind) {
            self.tree.borrow_mut().insert(PathBuf::from(path), kind);
        }
        pub fn link(&self, path: &str, target: &str) {
            self.add(path, FileKind::Symlink);
            self.links.borrow_mut().insert(PathBuf::from(path), PathBuf::from(target));
        }
        fn record(&self, s: String) -> Result<()> {
            self.calls.borrow_mut().push(s);
            Ok(())
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Sys for RecordingSys {
        fn mount(&self, src: Option<&Path>, dst: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<()> {
            let flags = format!("{flags:?}");
            let flags = flags.trim_start_matches("MsFlags(").trim_end_matches(')');
            self.record(format!("mount {} {} {} {flags} {}", show(src), dst.display(), fstype.unwrap_or("-"), data.unwrap_or("-")))
        }
        fn umount(&self, dst: &Path, _flags: MntFlags) -> Result<()> {
            self.record(format!("umount {}", dst.display()))
        }
        fn mount_setattr(&self, dst: &Path, set: u64, clear: u64) -> Result<()> {
            self.record(format!("setattr {} set={set:#x} clear={clear:#x}", dst.display()))
        }
        fn mount_flags(&self, _path: &Path) -> MsFlags {
            MsFlags::from_bits_truncate(self.locked.get())
        }
        fn pivot_root(&self, new_root: &Path) -> Result<()> {
            self.record(format!("pivot_root {}", new_root.display()))
        }
        fn move_root(&self, new_root: &Path) -> Result<()> {
            self.record(format!("move_root {}", new_root.display()))
        }
        fn chroot(&self, new_root: &Path) -> Result<()> {
            self.record(format!("chroot {}", new_root.display()))
        }
        fn mkdir_all(&self, path: &Path, _mode: u32) -> Result<()> {
            let mut p = PathBuf::new();
            for c in path.components() {
                p.push(c);
                self.tree.borrow_mut().entry(p.clone()).or_insert(FileKind::Dir);
            }
            self.record(format!("mkdir {}", path.display()))
        }
        fn create_file(&self, path: &Path) -> Result<()> {
            self.tree.borrow_mut().insert(path.to_path_buf(), FileKind::File);
            self.record(format!("touch {}", path.display()))
        }
        fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
            self.record(format!("symlink {} -> {}", link.display(), target.display()))
        }
        fn mknod(&self, path: &Path, _kind: SFlag, mode: u32, dev: u64) -> Result<()> {
            if self.tree.borrow().contains_key(path) {
                return Err(Error::Sys { context: format!("creating device {}", path.display()), source: nix::errno::Errno::EEXIST });
            }
            self.tree.borrow_mut().insert(path.to_path_buf(), FileKind::Other);
            self.record(format!("mknod {} {mode:o} {}:{}", path.display(), nix::sys::stat::major(dev), nix::sys::stat::minor(dev)))
        }
        fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
            self.record(format!("chown {} {uid}:{gid}", path.display()))
        }
        fn kind(&self, path: &Path) -> Option<FileKind> {
            self.tree.borrow().get(path).copied()
        }
        fn read_link(&self, path: &Path) -> Option<PathBuf> {
            self.links.borrow().get(path).cloned()
        }
        fn write(&self, path: &Path, data: &str) -> Result<()> {
            self.record(format!("write {} {data}", path.display()))
        }
    }
}
