//! `cp`: the archive endpoints (`HEAD`, `GET` and `PUT /containers/{id}/archive`).
//!
//! A copy works on a *view* of the container's filesystem as Docker's daemon sees it: its root
//! filesystem with its volumes, binds and network files on top, and nothing else (no /proc,
//! /sys or tmpfs). The view is built by a short-lived thread in a mount namespace of its own
//! and reached afterwards only through two descriptors (its root and the namespace): the
//! host's mount table never shows it, and the kernel takes it down when they close, also if
//! berthd dies mid-copy.
//!
//! Every path is resolved inside the view's root (symlinks, `..`, absolute targets: all stay
//! in), then opened with `openat2(RESOLVE_IN_ROOT)`, and the walk and the unpack go on
//! through descriptors without following anything: a symlink swapped in during the copy
//! leads nowhere outside (CVE-2018-15664).

use std::ffi::OsStr;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::containers::{ArchivePut, PathStat, go_mode};
use berth_api::error::{ApiError, Kind};
use berth_api::params::ByteStream;
use berth_store::archive::{self, Owner};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow};
use nix::sys::stat::{FileStat, Mode, SFlag};

use berth_store::inroot::{in_root, open_dir, resolve};

use crate::{Ctr, Engine};

/// Something mounted over the root in the view.
struct Over {
    source: PathBuf,
    destination: String,
    rw: bool,
    /// A volume whose local-driver mount is not up (no running container uses it): mounted in
    /// the view from its options instead of binding its empty data directory, as Docker mounts
    /// a stopped container's volumes for a copy.
    device: Option<crate::volumes::VolRecord>,
}

enum Base {
    /// The container's root as mounted for it (running, or made ahead of its start).
    Mounted(PathBuf),
    /// Its layers, mounted for the view alone.
    Layers(Vec<berth_store::snapshot::Mount>),
}

/// A container's filesystem for one copy; see the module's comment.
struct View {
    root: Option<OwnedFd>,
    ns: Option<OwnedFd>,
    /// Destinations mounted over the root and whether they are writable.
    overs: Vec<(String, bool)>,
    readonly_rootfs: bool,
    /// The host directory the view's root is mounted on (in the view's namespace only).
    dir: PathBuf,
}

impl View {
    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_ref().expect("the view's root is open until it drops").as_fd()
    }
}

/// A view kept open while something reads it by path; dropping it takes the view down.
pub(super) struct ViewGuard {
    _view: View,
}

impl Drop for View {
    fn drop(&mut self) {
        // Closing the last descriptors takes the namespace, and its mounts, down.
        self.root.take();
        self.ns.take();
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn internal(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(Kind::Internal, what.to_string())
}

/// Build the view on `dir` in a new mount namespace, on a thread of its own (the namespace is
/// the thread's; the descriptors it returns keep it after the thread ends). Blocking.
fn build(base: Base, overs: &[Over], dir: &Path, tasks: Arc<dyn crate::task::Tasks>) -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::mount::MsFlags;
    let in_view = || -> io::Result<(OwnedFd, OwnedFd)> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS | nix::sched::CloneFlags::CLONE_NEWNS)?;
        // Nothing done here propagates back to the host.
        nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
        match &base {
            Base::Mounted(rootfs) => nix::mount::mount(Some(rootfs), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?,
            Base::Layers(mounts) => tasks.mount_rootfs(mounts, dir, false).map_err(|e| io::Error::other(e.to_string()))?,
        }
        let root = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        for o in overs {
            let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(in_root());
            // Mounted on what the destination resolves to inside the root; a destination not
            // made yet (never started) is left as the image has it.
            let target = match nix::fcntl::openat2(root.as_fd(), o.destination.trim_start_matches('/'), how) {
                Ok(t) => t,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&target));
            let mounted = match &o.device {
                Some(vol) => vol.mount_on(Path::new(&at)),
                None => nix::mount::mount(Some(&o.source), at.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>),
            };
            if let Err(e) = mounted {
                tracing::warn!("cp view: mounting {} on {}: {e}", o.source.display(), o.destination);
                continue;
            }
            if !o.rw {
                // The descriptor still names what was under the mount: reopen it.
                let ro = nix::fcntl::openat2(root.as_fd(), o.destination.trim_start_matches('/'), how)?;
                let at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&ro));
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                nix::mount::mount(None::<&str>, at.as_str(), None::<&str>, flags, None::<&str>)?;
            }
        }
        let ns = nix::fcntl::open("/proc/thread-self/ns/mnt", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok((root, ns))
    };
    std::thread::scope(|s| s.spawn(in_view).join()).map_err(|_| io::Error::other("the copy's mount thread panicked"))?
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Docker's form of a requested path: absolute and clean, but a trailing `/` or `/.` kept
/// (they mean "the directory" and "its contents").
fn requested(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let clean = format!("/{}", parts.join("/"));
    let base = if clean == "/" { "" } else { clean.as_str() };
    if path == "." || path.ends_with("/.") {
        format!("{base}/.")
    } else if path.ends_with('/') {
        format!("{base}/")
    } else {
        clean
    }
}

/// Go's `filepath.Split`: everything up to the last `/`, and the rest.
fn split(abs: &str) -> (&str, &str) {
    let i = abs.rfind('/').map_or(0, |i| i + 1);
    (&abs[..i], &abs[i..])
}

/// Go's `filepath.Base` of a requested path: `d` for `/d/`, `.` for `/d/.`, `/` for `/`.
fn base_name(abs: &str) -> String {
    let t = abs.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Go's RFC 3339 with nanoseconds, trailing zeros of the fraction dropped.
fn go_time(secs: i64, nanos: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    let s = humantime::format_rfc3339_nanos(t).to_string();
    match s.strip_suffix('Z').and_then(|s| s.split_once('.')) {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() { format!("{whole}Z") } else { format!("{whole}.{frac}Z") }
        }
        None => s,
    }
}

/// What a request's path names in the view.
struct Located {
    stat: PathStat,
    /// Its directory, and its name there (None: the directory itself).
    dir: OwnedFd,
    name: Option<Vec<u8>>,
}

fn not_found(path: &str, ctr: &str) -> ApiError {
    ApiError::new(Kind::NotFound, format!("Could not find the file {path} in container {ctr}"))
}

/// Docker's `ResolvePath` and `StatPath`: the directory part is followed inside the root, the
/// last element is not (unless the path ends in `/` or `/.`).
fn locate(root: BorrowedFd, path: &str, ctr_name: &str) -> Result<Located, ApiError> {
    let abs = requested(path);
    let (dir_part, base) = split(&abs);
    let fail = |e: io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) => not_found(path, ctr_name),
        _ => internal(format!("lstat {abs}: {}", Errno::from_raw(e.raw_os_error().unwrap_or(0)).desc())),
    };
    let dir_path = resolve(root, dir_part, true).map_err(fail)?;
    let dir = open_dir(root, &dir_path).map_err(|e| fail(e.into()))?;
    let (st, name) = if base.is_empty() || base == "." {
        (nix::sys::stat::fstat(&dir).map_err(|e| fail(e.into()))?, None)
    } else {
        let st = nix::sys::stat::fstatat(dir.as_fd(), base, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| fail(e.into()))?;
        (st, Some(base.as_bytes().to_vec()))
    };
    let link_target = if kind(&st) == SFlag::S_IFLNK {
        let full = format!("{}/{base}", dir_path.trim_end_matches('/'));
        resolve(root, &full, true).map_err(fail)?
    } else {
        String::new()
    };
    let stat = PathStat {
        name: base_name(&abs),
        size: st.st_size,
        mode: go_mode::from_unix(st.st_mode),
        mtime: go_time(st.st_mtime, st.st_mtime_nsec),
        link_target,
    };
    Ok(Located { stat, dir, name })
}

/// Read a small file of the view (the user and group databases), inside its root.
fn read_small(root: BorrowedFd, path: &str) -> String {
    let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC).resolve(in_root());
    let Ok(fd) = nix::fcntl::openat2(root, path.trim_start_matches('/'), how) else { return String::new() };
    let mut s = String::new();
    let _ = std::fs::File::from(fd).take(4 << 20).read_to_string(&mut s);
    s
}

impl Engine {
    /// The view of `ctr` for a copy. `write`: a stopped container's layer is mounted writable
    /// (the caller holds its op lock); otherwise read-only, beside whatever else mounts it.
    async fn view(&self, ctr: &Arc<Ctr>, write: bool) -> Result<View, ApiError> {
        self.view_of(ctr, write, true).await
    }

    /// A read-only view of the container's own filesystem, without its volumes, binds or
    /// network files (what `export` writes), and the path its root is reached by from this
    /// process (a magic link through its descriptor).
    pub(super) async fn fs_view(&self, ctr: &Arc<Ctr>) -> Result<(ViewGuard, PathBuf), ApiError> {
        let v = self.view_of(ctr, false, false).await?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&v.root())));
        Ok((ViewGuard { _view: v }, path))
    }

    async fn view_of(&self, ctr: &Arc<Ctr>, write: bool, mounts: bool) -> Result<View, ApiError> {
        let rec = ctr.rec();
        let mut overs: Vec<Over> = Vec::new();
        for m in rec.volumes.iter().filter(|_| mounts) {
            let source = self.vols.path(&m.name);
            let device = self.vols.get(&m.name).filter(|v| v.mounts() && !crate::volumes::is_mount_root(&source));
            overs.push(Over { source, destination: m.destination.clone(), rw: m.rw, device });
        }
        for m in crate::spec::mount_points(&rec.host_config).into_iter().filter(|m| mounts && m.typ == "bind") {
            overs.push(Over { source: PathBuf::from(m.source), destination: m.destination, rw: m.rw, device: None });
        }
        for f in ["hostname", "hosts", "resolv.conf"].into_iter().filter(|_| mounts) {
            let source = ctr.dir.join(f);
            if source.is_file() {
                overs.push(Over { source, destination: format!("/etc/{f}"), rw: true, device: None });
            }
        }
        // Parents before what is mounted inside them.
        overs.sort_by_key(|o| o.destination.trim_end_matches('/').matches('/').count());
        let rootfs = ctr.bundle.join("rootfs");
        let base = if crate::volumes::is_mount_root(&rootfs) {
            Base::Mounted(rootfs)
        } else {
            let mounts = self.images.snapshots.mounts(&rec.id).map_err(|e| internal(format!("container layer: {e}")))?;
            let mounts = if write {
                mounts
            } else {
                mounts
                    .iter()
                    .map(|m| m.read_only())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| internal("the layer chain is too long to mount read-only"))?
            };
            Base::Layers(mounts)
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        // Under the bundles' trash prefix: a start after a crash deletes what is left (an empty
        // directory; the mounts were the namespace's).
        let parent = self.bundles_dir.join(format!("{}cp-{}-{nanos:x}", crate::containers::TRASH, rec.short_id()));
        let dir = parent.join("rootfs");
        std::fs::create_dir_all(&dir).map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
        let tasks = Arc::clone(&self.tasks);
        let at = dir.clone();
        let built = tokio::task::spawn_blocking(move || build(base, &overs, &at, tasks).map(|fds| (fds, overs))).await.map_err(internal)?;
        match built {
            Ok(((root, ns), overs)) => Ok(View {
                root: Some(root),
                ns: Some(ns),
                overs: overs.into_iter().map(|o| (o.destination, o.rw)).collect(),
                readonly_rootfs: rec.host_config.readonly_rootfs.unwrap_or(false),
                dir,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                let _ = std::fs::remove_dir(&parent);
                Err(internal(format!("mounting the filesystem of {} for a copy: {e}", rec.name.trim_start_matches('/'))))
            }
        }
    }

    pub(super) async fn archive_stat_ctr(&self, id: &str, path: &str) -> Result<PathStat, ApiError> {
        let ctr = self.lookup(id)?;
        let view = self.view(&ctr, false).await?;
        let (path, name) = (path.to_string(), id.to_string());
        tokio::task::spawn_blocking(move || locate(view.root(), &path, &name).map(|l| l.stat)).await.map_err(internal)?
    }

    pub(super) async fn archive_get_ctr(&self, id: &str, path: &str) -> Result<(PathStat, ByteStream), ApiError> {
        let ctr = self.lookup(id)?;
        let view = self.view(&ctr, false).await?;
        let (p, name) = (path.to_string(), id.to_string());
        let (view, found) = tokio::task::spawn_blocking(move || {
            let found = locate(view.root(), &p, &name);
            (view, found)
        })
        .await
        .map_err(internal)?;
        let found = found?;
        let stat = found.stat.clone();
        let as_name = stat.name.clone();
        let (out, stream) = crate::chunks::channel();
        tokio::task::spawn_blocking(move || {
            let name = found.name.as_deref().map(OsStr::from_bytes);
            match berth_store::pack::pack(found.dir.as_fd(), name, &as_name, out) {
                Ok(mut out) => {
                    let _ = io::Write::flush(&mut out);
                }
                Err(e) => tracing::warn!("copy of {as_name}: {e}"),
            }
            drop(view);
        });
        Ok((stat, stream))
    }

    pub(super) async fn archive_put_ctr(&self, id: &str, opts: ArchivePut, body: ByteStream) -> Result<(), ApiError> {
        // The upload is spooled and read through first: a bad archive changes nothing, and a
        // client still sending hears the answer rather than a broken pipe.
        // On the data root's disk (the exec root is often a tmpfs: memory), unnamed, so
        // nothing of it outlives the request.
        let spool = tempfile::tempfile_in(&self.cfg.data_root).map_err(|e| internal(format!("spooling the archive: {e}")))?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        let mut copy_opts = archive::Options::copy(Owner::FromArchive);
        copy_opts.no_overwrite_dir_non_dir = opts.no_overwrite_dir_non_dir;
        let check = copy_opts.clone();
        let spool = tokio::task::spawn_blocking(move || -> Result<std::fs::File, ApiError> {
            let (mut reader, mut spool) = (reader, spool);
            io::copy(&mut reader, &mut spool).map_err(|e| ApiError::new(Kind::InvalidArgument, format!("reading the archive: {e}")))?;
            spool.rewind().map_err(internal)?;
            archive::check(io::BufReader::new(&spool), &check)
                .map_err(|e| ApiError::new(Kind::InvalidArgument, format!("Error processing tar file: {e}")))?;
            spool.rewind().map_err(internal)?;
            Ok(spool)
        })
        .await
        .map_err(internal)??;
        let ctr = self.lookup(id)?;
        // A stopped container's layer is mounted for writing only with its op lock held, so no
        // start mounts it meanwhile; a bundle made ahead of a start is taken down first.
        let mut _op = None;
        if !ctr.rec().state.status.is_live() {
            _op = Some(ctr.op.lock().await);
            if !ctr.rec().state.status.is_live() {
                self.drop_ahead(&ctr).await;
            }
        }
        let view = self.view(&ctr, true).await?;
        let rec = ctr.rec();
        let name = id.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            let root = view.root();
            let target = resolve(root, &requested(&opts.path), true).map_err(internal)?;
            let dir = match open_dir(root, &target) {
                Ok(d) => d,
                Err(Errno::ENOENT) => return Err(not_found(&opts.path, &name)),
                Err(Errno::ENOTDIR) => return Err(internal("extraction point is not a directory")),
                Err(e) => return Err(internal(format!("opening {target}: {e}"))),
            };
            let under = |dest: &str| {
                let d = dest.trim_end_matches('/');
                target == d || target.starts_with(&format!("{d}/"))
            };
            match view.overs.iter().filter(|(d, _)| under(d)).max_by_key(|(d, _)| d.len()) {
                Some((_, false)) => return Err(internal("mounted volume is marked read-only")),
                None if view.readonly_rootfs => return Err(internal("container rootfs is marked read-only")),
                _ => {}
            }
            if opts.copy_uid_gid
                && let Some(user) = rec.config.user.as_deref().filter(|u| !u.is_empty())
            {
                let u = crate::spec::user_from(&read_small(root, "/etc/passwd"), &read_small(root, "/etc/group"), user, &[])?;
                copy_opts.owner = Owner::Fixed(u.uid, u.gid);
            }
            // The dir descriptor is O_PATH; the unpack reopens everything under it.
            let dir = nix::fcntl::openat(dir.as_fd(), ".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| internal(format!("opening {target}: {e}")))?;
            archive::unpack(dir, io::BufReader::with_capacity(1 << 20, spool), copy_opts)
                .map_err(|e| internal(format!("Error processing tar file: {e}")))?;
            drop(view);
            Ok(())
        })
        .await
        .map_err(internal)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_paths_keep_a_trailing_slash_or_dot() {
        assert_eq!(requested("d"), "/d");
        assert_eq!(requested("/d/"), "/d/");
        assert_eq!(requested("/d/."), "/d/.");
        assert_eq!(requested("/"), "/");
        assert_eq!(requested("."), "/.");
        assert_eq!(requested("/../../etc/../x"), "/x");
        assert_eq!(split("/d/."), ("/d/", "."));
        assert_eq!(split("/d"), ("/", "d"));
        assert_eq!((base_name("/d/"), base_name("/d/."), base_name("/")), ("d".into(), ".".into(), "/".into()));
    }

    #[test]
    fn go_modes_and_times_match_dockers() {
        assert_eq!(go_mode::from_unix(0o040755), 2147484141);
        assert_eq!(go_mode::from_unix(0o120777), 134218239);
        assert_eq!(go_mode::from_unix(0o100644), 420);
        assert_eq!(go_time(1_700_000_000, 863_125_000), "2023-11-14T22:13:20.863125Z");
        assert_eq!(go_time(1_700_000_000, 0), "2023-11-14T22:13:20Z");
    }
}
