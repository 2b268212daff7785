//! Applying a layer tar to a directory, safely: every path is resolved inside the root with
//! `openat2(RESOLVE_IN_ROOT)` (symlinks, absolute or relative, can never lead out), entries
//! with `..` or absolute names are refused, and so are symlinks and hard links whose targets
//! climb out of the root. Whiteouts become overlay whiteouts (or deletions, for a plain-copy
//! snapshot). The caller applies into a fresh directory and discards it if this fails.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Linux's NAME_MAX and PATH_MAX.
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// `.wh.NAME` → a 0:0 character device, `.wh..wh..opq` → `trusted.overlay.opaque=y`.
    Overlay,
    /// Delete what the whiteout names (for snapshots that are plain copies of their parent).
    Delete,
    /// `.wh.` names are ordinary files (a copy into a container's filesystem, not a layer).
    Keep,
}

/// Who owns what an unpack writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The entry's uid and gid.
    FromArchive,
    /// Everything to this uid:gid (`docker cp -a` into a container run as a user).
    Fixed(u32, u32),
    /// No chown: the unpacking user's (the client side of `cp`, as Docker's CLI).
    Unchanged,
}

/// How [`unpack`] treats an archive: a layer's rules, or a copy's (`cp`, `PUT archive`).
#[derive(Debug, Clone)]
pub struct Options {
    pub whiteouts: WhiteoutMode,
    pub owner: Owner,
    /// A copy's archive: a leading `/` is dropped (the names are under the target either
    /// way) and relative symlinks may point above the target (they resolve inside it). A
    /// layer refuses both.
    pub copy: bool,
    /// Refuse to replace a directory by a non-directory and the other way round, naming both.
    pub no_overwrite_dir_non_dir: bool,
    /// Rename entries under `from` to `to` (both raw names), as Docker's rebase of a copy.
    pub rebase: Option<(String, String)>,
    /// Bounds for an archive from a client (a build context): [`check`] refuses one beyond them.
    pub limits: Option<Limits>,
    /// Permission bits for every file and directory written, whatever the archive says (a
    /// build's `COPY --chmod`).
    pub mode: Option<u32>,
}

/// How much an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub entries: u64,
    /// Bytes of file content, all entries together.
    pub bytes: u64,
    /// Path components of an entry's name.
    pub depth: usize,
    /// Character and block devices may be made (a build context has no use for them: made
    /// from a client's archive on the host, one could reach a host disk).
    pub devices: bool,
}

impl Options {
    pub fn layer(whiteouts: WhiteoutMode) -> Options {
        Options {
            whiteouts,
            owner: Owner::FromArchive,
            copy: false,
            no_overwrite_dir_non_dir: false,
            rebase: None,
            limits: None,
            mode: None,
        }
    }

    pub fn copy(owner: Owner) -> Options {
        Options { whiteouts: WhiteoutMode::Keep, owner, copy: true, no_overwrite_dir_non_dir: true, rebase: None, limits: None, mode: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("tar entry {path:?} refused: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("reading the tar archive: {0}")]
    Read(io::Error),
    #[error("writing {path:?}: {source}")]
    Write { path: String, source: io::Error },
    #[error("tar entry {path:?}: unsupported entry type {kind:?}")]
    Unsupported { path: String, kind: tar::EntryType },
    #[error("cannot overwrite {existing} {path:?} with {new}")]
    Overwrite { path: String, existing: &'static str, new: &'static str },
    #[error("the archive is too large: more than {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

fn refuse(path: &Path, reason: &'static str) -> ArchiveError {
    ArchiveError::Unsafe { path: path.display().to_string(), reason }
}

fn write_err(path: &Path) -> impl FnOnce(Errno) -> ArchiveError {
    let path = path.display().to_string();
    move |e| ArchiveError::Write { path, source: e.into() }
}

/// A layer entry's name as a relative path of plain components, or a refusal.
fn clean_path(raw: &[u8]) -> Result<PathBuf> {
    let p = Path::new(OsStr::from_bytes(raw));
    if raw.len() > PATH_MAX {
        return Err(refuse(p, "name longer than PATH_MAX"));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) if n.len() > NAME_MAX => return Err(refuse(p, "a path component is longer than NAME_MAX")),
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(refuse(p, "absolute path")),
            Component::ParentDir => return Err(refuse(p, "path contains '..'")),
        }
    }
    Ok(out)
}

/// A numeric header field; a blank one (all NULs or spaces) reads as 0, as Go's archive/tar
/// (and so Docker) reads it. Anything else that does not parse is an error.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(ArchiveError::Read(e)),
    }
}

/// Does a relative symlink target, followed from `dir` (relative to the root), climb out?
fn escapes(dir: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false; // absolute targets resolve inside the container's root
    }
    let mut depth = dir.components().count() as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

struct Applier {
    root: OwnedFd,
    opts: Options,
    invalidated: bool,
    /// The last parent directory opened (entries come grouped by directory). Dropped whenever
    /// an entry removes or replaces anything, since the fd could then be a detached directory.
    last_parent: Option<(PathBuf, OwnedFd)>,
    written: HashSet<PathBuf>,
    dirs: Vec<(PathBuf, TimeSpec)>,
    /// For file contents: big copies make few syscalls (io::copy's 8 KiB makes a write each).
    buf: Vec<u8>,
}

/// The names in an open directory, without `.` and `..`.
fn dir_names(dir: OwnedFd, shown: &Path) -> Result<Vec<OsString>> {
    Ok(nix::dir::Dir::from_fd(dir)
        .map_err(write_err(shown))?
        .iter()
        .flatten()
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect())
}

/// An entry's (or hard link target's) name as written in the root: rebased, and for a copy
/// without its leading `/`.
fn entry_name(opts: &Options, raw: &[u8]) -> Result<PathBuf> {
    let mut raw = raw.to_vec();
    if let Some((from, to)) = &opts.rebase {
        raw = rebase(&raw, from.as_bytes(), to.as_bytes());
    }
    let mut start = 0;
    while opts.copy && raw.get(start) == Some(&b'/') {
        start += 1;
    }
    clean_path(&raw[start..])
}

fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

impl Applier {
    /// Open `rel` (a directory) inside the root, creating missing directories on the way.
    fn dir(&self, rel: &Path) -> Result<OwnedFd> {
        let how = || OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(in_root());
        if rel.as_os_str().is_empty() {
            return openat2(self.root.as_fd(), ".", how()).map_err(write_err(rel));
        }
        match openat2(self.root.as_fd(), rel, how()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(write_err(rel)(e)),
        }
        let mut fd = openat2(self.root.as_fd(), ".", how()).map_err(write_err(rel))?;
        let mut sofar = PathBuf::new();
        for c in rel.components() {
            sofar.push(c);
            match openat2(self.root.as_fd(), &sofar, how()) {
                Ok(next) => fd = next,
                Err(Errno::ENOENT) => {
                    nix::sys::stat::mkdirat(fd.as_fd(), c.as_os_str(), Mode::from_bits_truncate(0o755)).map_err(|e| {
                        if e == Errno::EEXIST { refuse(&sofar, "parent is a symlink to a missing directory") } else { write_err(&sofar)(e) }
                    })?;
                    fd = openat2(self.root.as_fd(), &sofar, how()).map_err(write_err(&sofar))?;
                }
                Err(e) => return Err(write_err(&sofar)(e)),
            }
        }
        Ok(fd)
    }

    /// Remove whatever is at `name` in `dir` (a whole tree for a directory).
    fn remove(dir: BorrowedFd, name: &OsStr, shown: &Path) -> Result<()> {
        match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) => {
                let sub = nix::fcntl::openat(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(write_err(shown))?;
                let listing = sub.try_clone().map_err(|e| ArchiveError::Write { path: shown.display().to_string(), source: e })?;
                for n in dir_names(listing, shown)? {
                    Self::remove(sub.as_fd(), &n, &shown.join(&n))?;
                }
                nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(write_err(shown))
            }
            Err(e) => Err(write_err(shown)(e)),
        }
    }

    fn name(&self, raw: &[u8]) -> Result<PathBuf> {
        entry_name(&self.opts, raw)
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<R>, applied: &mut Applied) -> Result<()> {
        let path = self.name(&e.path_bytes())?;
        let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
            return Ok(()); // the root itself ("./")
        };
        let parent_rel = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = match self.last_parent.take() {
            Some((p, fd)) if p == parent_rel => fd,
            _ => self.dir(&parent_rel)?,
        };
        let result = self.entry_in(&mut e, &path, &name, &parent_rel, &parent, applied);
        if result.is_ok() && !self.invalidated {
            self.last_parent = Some((parent_rel, parent));
        }
        self.invalidated = false;
        result
    }

    fn entry_in<R: Read>(
        &mut self,
        e: &mut tar::Entry<R>,
        path: &Path,
        name: &OsStr,
        parent_rel: &Path,
        parent: &OwnedFd,
        applied: &mut Applied,
    ) -> Result<()> {
        let path = path.to_path_buf();
        let name = name.to_os_string();
        let parent_rel = parent_rel.to_path_buf();
        let h = e.header().clone();
        let kind = h.entry_type();

        let name_str = name.to_string_lossy();
        let keep = self.opts.whiteouts == WhiteoutMode::Keep;
        if name_str == OPAQUE_MARKER && !keep {
            self.invalidated = true;
            return self.opaque(&parent_rel);
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX).filter(|_| !keep) {
            let hidden = OsString::from(hidden);
            let shown = parent_rel.join(&hidden);
            self.invalidated = true;
            Self::remove(parent.as_fd(), &hidden, &shown)?;
            if self.opts.whiteouts == WhiteoutMode::Overlay {
                nix::sys::stat::mknodat(parent.as_fd(), hidden.as_os_str(), SFlag::S_IFCHR, Mode::empty(), nix::sys::stat::makedev(0, 0))
                    .map_err(write_err(&shown))?;
            }
            self.written.insert(shown);
            return Ok(());
        }

        let mode = Mode::from_bits_truncate(h.mode().map_err(ArchiveError::Read)? & 0o7777);
        let uid = numeric(h.uid(), &h.as_old().uid)? as u32;
        let gid = numeric(h.gid(), &h.as_old().gid)? as u32;
        let mtime = TimeSpec::new(numeric(h.mtime(), &h.as_old().mtime)? as i64, 0);
        let existing = nix::sys::stat::fstatat(parent.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing.is_some_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR);
        if existing.is_some() && !(kind.is_dir() && existing_is_dir) {
            if self.opts.no_overwrite_dir_non_dir && (existing_is_dir || kind.is_dir()) {
                let (existing, new) = if existing_is_dir { ("directory", "non-directory") } else { ("non-directory", "directory") };
                return Err(ArchiveError::Overwrite { path: path.display().to_string(), existing, new });
            }
            self.invalidated = true;
            Self::remove(parent.as_fd(), &name, &path)?;
        }

        match kind {
            tar::EntryType::Directory => {
                if !existing_is_dir {
                    nix::sys::stat::mkdirat(parent.as_fd(), name.as_os_str(), mode).map_err(write_err(&path))?;
                }
                self.owner_and_mode(parent, &name, &path, uid, gid, Some(mode))?;
                self.xattrs(e, &path)?;
                self.dirs.push((path.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = nix::fcntl::openat(
                    parent.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(write_err(&path))?;
                let mut f = std::fs::File::from(fd);
                applied.bytes += self.copy(e, &mut f, &path)?;
                self.owner_and_mode(parent, &name, &path, uid, gid, Some(mode))?;
                self.xattrs(e, &path)?;
                self.times(parent, &name, &path, mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().map(|t| PathBuf::from(OsStr::from_bytes(&t))).unwrap_or_default();
                if target.as_os_str().is_empty() {
                    return Err(refuse(&path, "symlink without a target"));
                }
                if !self.opts.copy && escapes(&parent_rel, &target) {
                    return Err(refuse(&path, "symlink target climbs out of the root"));
                }
                // A new symlink can change what a cached path resolves to.
                self.invalidated = true;
                nix::unistd::symlinkat(&target, parent.as_fd(), name.as_os_str()).map_err(write_err(&path))?;
                self.owner_and_mode(parent, &name, &path, uid, gid, None)?;
                self.times(parent, &name, &path, mtime)?;
            }
            tar::EntryType::Link => {
                let raw = e.link_name_bytes().unwrap_or_default();
                let target = self.name(&raw).map_err(|_| refuse(&path, "hard link target is absolute or climbs out of the root"))?;
                let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(in_root());
                let src = openat2(self.root.as_fd(), &target, how)
                    .map_err(|_| refuse(&path, "hard link to an entry that is not in the layer stack"))?;
                nix::unistd::linkat(src.as_fd(), "", parent.as_fd(), name.as_os_str(), AtFlags::AT_EMPTY_PATH).map_err(write_err(&path))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = h.device_major().map_err(ArchiveError::Read)?.unwrap_or(0) as u64;
                let minor = h.device_minor().map_err(ArchiveError::Read)?.unwrap_or(0) as u64;
                nix::sys::stat::mknodat(parent.as_fd(), name.as_os_str(), sflag, mode, nix::sys::stat::makedev(major, minor))
                    .map_err(write_err(&path))?;
                self.owner_and_mode(parent, &name, &path, uid, gid, Some(mode))?;
                self.times(parent, &name, &path, mtime)?;
            }
            // Metadata records the tar crate folds into the next entry.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                return Ok(());
            }
            other => return Err(ArchiveError::Unsupported { path: path.display().to_string(), kind: other }),
        }
        self.written.insert(path);
        applied.entries += 1;
        Ok(())
    }

    /// An entry's content into `f`, in large writes.
    fn copy<R: Read>(&mut self, e: &mut tar::Entry<R>, f: &mut std::fs::File, path: &Path) -> Result<u64> {
        if self.buf.is_empty() {
            self.buf = vec![0; 1 << 20];
        }
        let mut total = 0;
        loop {
            let mut filled = 0;
            // Fill the buffer (or reach the entry's end) before writing.
            while filled < self.buf.len() {
                match e.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(ArchiveError::Read(err)),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            io::Write::write_all(f, &self.buf[..filled])
                .map_err(|source| ArchiveError::Write { path: path.display().to_string(), source })?;
            total += filled as u64;
        }
    }

    fn owner_and_mode(&self, parent: &OwnedFd, name: &OsStr, path: &Path, uid: u32, gid: u32, mode: Option<Mode>) -> Result<()> {
        let owner = match self.opts.owner {
            Owner::FromArchive => Some((uid, gid)),
            Owner::Fixed(u, g) => Some((u, g)),
            Owner::Unchanged => None,
        };
        if let Some((uid, gid)) = owner {
            nix::unistd::fchownat(parent.as_fd(), name, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(write_err(path))?;
        }
        let mode = match (mode, self.opts.mode) {
            (Some(_), Some(forced)) => Some(Mode::from_bits_truncate(forced & 0o7777)),
            (m, _) => m,
        };
        // After chown, which clears setuid/setgid bits.
        if let Some(m) = mode {
            nix::sys::stat::fchmodat(parent.as_fd(), name, m, nix::sys::stat::FchmodatFlags::NoFollowSymlink)
                .or_else(|e| {
                    if e == Errno::EOPNOTSUPP {
                        nix::sys::stat::fchmodat(parent.as_fd(), name, m, nix::sys::stat::FchmodatFlags::FollowSymlink)
                    } else {
                        Err(e)
                    }
                })
                .map_err(write_err(path))?;
        }
        Ok(())
    }

    fn times(&self, parent: &OwnedFd, name: &OsStr, path: &Path, mtime: TimeSpec) -> Result<()> {
        nix::sys::stat::utimensat(parent.as_fd(), name, &mtime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(write_err(path))
    }

    fn xattrs<R: Read>(&self, e: &mut tar::Entry<R>, path: &Path) -> Result<()> {
        let Ok(Some(exts)) = e.pax_extensions() else { return Ok(()) };
        let mut attrs = Vec::new();
        for ext in exts.flatten() {
            if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                attrs.push((key.to_vec(), ext.value_bytes().to_vec()));
            }
        }
        if attrs.is_empty() {
            return Ok(());
        }
        let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(in_root());
        let fd = openat2(self.root.as_fd(), path, how).map_err(write_err(path))?;
        for (k, v) in attrs {
            rustix::fs::fsetxattr(&fd, OsStr::from_bytes(&k), &v, rustix::fs::XattrFlags::empty())
                .map_err(|e| ArchiveError::Write { path: path.display().to_string(), source: e.into() })?;
        }
        Ok(())
    }

    /// `.wh..wh..opq`: the directory hides everything below it from lower layers.
    fn opaque(&mut self, dir_rel: &Path) -> Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Keep => Ok(()),
            WhiteoutMode::Overlay => {
                let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(in_root());
                let rel = if dir_rel.as_os_str().is_empty() { Path::new(".") } else { dir_rel };
                self.dir(dir_rel)?;
                let fd = openat2(self.root.as_fd(), rel, how).map_err(write_err(dir_rel))?;
                rustix::fs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| ArchiveError::Write { path: dir_rel.display().to_string(), source: e.into() })
            }
            WhiteoutMode::Delete => {
                let dir = self.dir(dir_rel)?;
                let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(in_root());
                let rel = if dir_rel.as_os_str().is_empty() { Path::new(".") } else { dir_rel };
                let listing = openat2(self.root.as_fd(), rel, how).map_err(write_err(dir_rel))?;
                for n in dir_names(listing, dir_rel)? {
                    let child = dir_rel.join(&n);
                    // Entries this layer already wrote stay; only lower content is hidden.
                    if !self.written.contains(&child) {
                        Self::remove(dir.as_fd(), &n, &child)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `name` with a leading `from` replaced by `to`, as Docker rebases a copy's entries (`from`
/// as a whole path component; `/` as `from` means every name).
fn rebase(name: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let from = if from == b"/" { &b""[..] } else { from };
    match name.strip_prefix(from) {
        Some(rest) if from.is_empty() || rest.is_empty() || rest[0] == b'/' || from.ends_with(b"/") => {
            let mut out = to.to_vec();
            if from.is_empty() && !rest.starts_with(b"/") && !rest.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(rest);
            out
        }
        _ => name.to_vec(),
    }
}

/// Apply the (uncompressed) layer tar `layer` to the directory `root`.
pub fn apply(root: &Path, layer: impl Read, mode: WhiteoutMode) -> Result<Applied> {
    let root_fd = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(write_err(root))?;
    unpack(root_fd, layer, Options::layer(mode))
}

/// Unpack the (uncompressed) tar `input` into the directory `root` by `opts`' rules. Nothing
/// is ever written outside `root`, whatever the names, links or symlinks already there.
pub fn unpack(root: OwnedFd, input: impl Read, opts: Options) -> Result<Applied> {
    let mut a = Applier { root, opts, invalidated: false, last_parent: None, written: HashSet::new(), dirs: Vec::new(), buf: Vec::new() };
    let mut archive = tar::Archive::new(input);
    let mut applied = Applied::default();
    let mut budget = Budget { limits: a.opts.limits, entries: 0, bytes: 0 };
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let entry = entry.map_err(ArchiveError::Read)?;
        if budget.limits.is_some() {
            budget.charge(&entry_name(&a.opts, &entry.path_bytes())?, entry.header().size().unwrap_or(0), entry.header().entry_type())?;
        }
        a.entry(entry, &mut applied)?;
    }
    // Directory times last: writing into a directory changes its mtime.
    for (path, mtime) in a.dirs.iter().rev() {
        let parent = a.dir(path.parent().unwrap_or(Path::new("")))?;
        if let Some(name) = path.file_name() {
            a.times(&parent, name, path, *mtime)?;
        }
    }
    Ok(applied)
}

/// What an archive has used of its [`Limits`].
struct Budget {
    limits: Option<Limits>,
    entries: u64,
    bytes: u64,
}

impl Budget {
    fn charge(&mut self, path: &Path, size: u64, kind: tar::EntryType) -> Result<()> {
        let Some(l) = self.limits else { return Ok(()) };
        if !l.devices && matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            return Err(refuse(path, "device nodes are not allowed here"));
        }
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(size);
        if self.entries > l.entries {
            return Err(ArchiveError::TooLarge { what: "entries", limit: l.entries });
        }
        if self.bytes > l.bytes {
            return Err(ArchiveError::TooLarge { what: "bytes of content", limit: l.bytes });
        }
        if path.components().count() > l.depth {
            return Err(ArchiveError::TooLarge { what: "directory levels", limit: l.depth as u64 });
        }
        Ok(())
    }
}

/// Read a whole archive as [`unpack`] would, writing nothing: its names, link targets and
/// entry types are checked and its data read to the end (a truncated archive fails here). A
/// copy into a container runs this on the spooled upload first, so a bad one changes nothing.
pub fn check(input: impl Read, opts: &Options) -> Result<u64> {
    let mut archive = tar::Archive::new(input);
    let mut count = 0;
    let mut budget = Budget { limits: opts.limits, entries: 0, bytes: 0 };
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut e = entry.map_err(ArchiveError::Read)?;
        let path = entry_name(opts, &e.path_bytes())?;
        budget.charge(&path, e.header().size().unwrap_or(0), e.header().entry_type())?;
        let parent = path.parent().unwrap_or(Path::new(""));
        match e.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().map(|t| PathBuf::from(OsStr::from_bytes(&t))).unwrap_or_default();
                if target.as_os_str().is_empty() {
                    return Err(refuse(&path, "symlink without a target"));
                }
                if !opts.copy && escapes(parent, &target) {
                    return Err(refuse(&path, "symlink target climbs out of the root"));
                }
            }
            tar::EntryType::Link => {
                entry_name(opts, &e.link_name_bytes().unwrap_or_default())
                    .map_err(|_| refuse(&path, "hard link target is absolute or climbs out of the root"))?;
            }
            tar::EntryType::Directory
            | tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => return Err(ArchiveError::Unsupported { path: path.display().to_string(), kind: other }),
        }
        let h = e.header();
        numeric(h.uid(), &h.as_old().uid)?;
        numeric(h.gid(), &h.as_old().gid)?;
        numeric(h.mtime(), &h.as_old().mtime)?;
        h.mode().map_err(ArchiveError::Read)?;
        io::copy(&mut e, &mut io::sink()).map_err(ArchiveError::Read)?;
        count += 1;
    }
    Ok(count)
}

/// A reader fed by a producer thread, so decompression and hashing (in `produce`) overlap
/// with unpacking (the reader's consumer), as `gzip -dc | tar -x` overlaps them in two
/// processes. `produce` writes the stream into the writer it is given; its result comes back
/// from [`Pipeline::finish`] once the consumer has read everything.
pub struct Pipeline<T> {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Chunks read go back to the producer to be filled again: a layer reuses a few buffers
    /// instead of allocating (and faulting in) a fresh 256 KiB for every chunk.
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    producer: Option<std::thread::JoinHandle<io::Result<T>>>,
    result: Option<io::Result<T>>,
}

struct ChunkWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let next = match self.spare.try_recv() {
                Ok(mut v) => {
                    v.clear();
                    v
                }
                Err(_) => Vec::with_capacity(CHUNK),
            };
            let full = std::mem::replace(&mut self.buf, next);
            // The consumer hung up (it failed): stop producing.
            self.tx.send(full).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer consumer stopped"))?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> Pipeline<T> {
    pub fn start(produce: impl FnOnce(&mut dyn io::Write) -> io::Result<T> + Send + 'static) -> Pipeline<T> {
        // A few chunks in flight: enough to keep both sides busy, bounded in memory.
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let (spent, spare) = std::sync::mpsc::sync_channel(8);
        let producer = std::thread::spawn(move || {
            let mut w = ChunkWriter { tx, spare, buf: Vec::with_capacity(CHUNK) };
            let out = produce(&mut w)?;
            io::Write::flush(&mut w)?;
            Ok(out)
        });
        Pipeline { rx, spent, chunk: Vec::new(), pos: 0, producer: Some(producer), result: None }
    }

    /// Read what is left (a tar's trailing padding), then the producer's result.
    pub fn finish(mut self) -> io::Result<T> {
        io::copy(&mut self, &mut io::sink())?;
        self.join();
        self.result.take().unwrap_or_else(|| Err(io::Error::other("layer producer gave no result")))
    }

    /// Collect the producer's result once its stream has ended.
    fn join(&mut self) {
        if let Some(h) = self.producer.take() {
            self.result = Some(h.join().unwrap_or_else(|_| Err(io::Error::other("layer producer panicked"))));
        }
    }
}

impl<T: Send + 'static> Read for Pipeline<T> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    let spent = std::mem::replace(&mut self.chunk, c);
                    if spent.capacity() >= CHUNK {
                        let _ = self.spent.try_send(spent);
                    }
                    self.pos = 0;
                }
                // The stream ended: cleanly, or with the producer's error.
                Err(_) => {
                    self.join();
                    return match &self.result {
                        Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                        _ => Ok(0),
                    };
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The layer's bytes, decompressed according to their magic number (gzip, zstd or none).
pub fn decompress<'a>(mut r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(r);
    match magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(whole))),
        [0x28, 0xb5, 0x2f, 0xfd] => Ok(Box::new(zstd::stream::read::Decoder::new(whole)?)),
        _ => Ok(Box::new(whole)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::root_or_skip;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tar entry written field by field, so hostile names get through unchanged.
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    /// A root to apply into, beside a sentinel directory that must never change.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("root")).unwrap();
            fs::create_dir_all(dir.path().join("outside")).unwrap();
            fs::write(dir.path().join("outside/secret"), "keep").unwrap();
            Sandbox { dir }
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }
        #[track_caller]
        fn assert_outside_untouched(&self) {
            let mut names: Vec<_> = fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            assert_eq!(names, ["outside", "root"], "something was written beside the root");
            let outside: Vec<_> = fs::read_dir(self.dir.path().join("outside")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(outside, ["secret"]);
            assert_eq!(fs::read_to_string(self.dir.path().join("outside/secret")).unwrap(), "keep");
        }
    }

    #[test]
    fn applies_every_entry_type_with_owner_mode_and_time() {
        if !root_or_skip() {
            return;
        }
        let s = Sandbox::new();
        let layer = tar_of(|b| {
            raw(b, "etc/", tar::EntryType::Directory, "", b"", 0o755);
            raw(b, "etc/passwd", tar::EntryType::Regular, "", b"root:x:0:0::/:/bin/sh\n", 0o644);
            raw(b, "bin/su", tar::EntryType::Regular, "", b"binary", 0o4755);
            raw(b, "etc/link", tar::EntryType::Symlink, "/etc/passwd", b"", 0o777);
            raw(b, "etc/hard", tar::EntryType::Link, "etc/passwd", b"", 0o644);
            raw(b, "dev/null", tar::EntryType::Char, "", b"", 0o666);
            raw(b, "run/fifo", tar::EntryType::Fifo, "", b"", 0o600);
        });
        let applied = apply(&s.root(), &layer[..], WhiteoutMode::Overlay).unwrap();
        assert_eq!(applied.entries, 7);
        let r = s.root();
        assert_eq!(fs::read_to_string(r.join("etc/passwd")).unwrap(), "root:x:0:0::/:/bin/sh\n");
        let su = fs::metadata(r.join("bin/su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o4755, "setuid survives the chown");
        assert_eq!(su.mtime(), 1_600_000_000);
        assert_eq!(fs::read_link(r.join("etc/link")).unwrap(), PathBuf::from("/etc/passwd"));
        assert_eq!(fs::metadata(r.join("etc/hard")).unwrap().ino(), fs::metadata(r.join("etc/passwd")).unwrap().ino());
        assert!(fs::symlink_metadata(r.join("run/fifo")).unwrap().file_type().is_fifo_like());
        assert_eq!(fs::metadata(r.join("etc")).unwrap().mtime(), 1_600_000_000, "directory times are set last");
        s.assert_outside_untouched();
    }

    trait FifoLike {
        fn is_fifo_like(&self) -> bool;
    }
    impl FifoLike for fs::FileType {
        fn is_fifo_like(&self) -> bool {
            std::os::unix::fs::FileTypeExt::is_fifo(self)
        }
    }

    #[test]
    fn hostile_layers_are_refused_and_nothing_outside_the_root_changes() {
        if !root_or_skip() {
            return;
        }
        let long = "x".repeat(300);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("dotdot", tar_of(|b| raw(b, "../outside/evil", tar::EntryType::Regular, "", b"evil", 0o644)), "'..'"),
            ("absolute", tar_of(|b| raw(b, "/abs-evil", tar::EntryType::Regular, "", b"evil", 0o644)), "absolute path"),
            ("escaping symlink", tar_of(|b| raw(b, "up", tar::EntryType::Symlink, "../outside", b"", 0o777)), "climbs out"),
            ("deep escaping symlink", tar_of(|b| raw(b, "a/b/up", tar::EntryType::Symlink, "../../../outside", b"", 0o777)), "climbs out"),
            ("hard link out", tar_of(|b| raw(b, "hl", tar::EntryType::Link, "../outside/secret", b"", 0o644)), "hard link target"),
            ("hard link absolute", tar_of(|b| raw(b, "hl", tar::EntryType::Link, "/etc/passwd", b"", 0o644)), "hard link target"),
            ("hard link to nothing", tar_of(|b| raw(b, "hl", tar::EntryType::Link, "missing", b"", 0o644)), "not in the layer stack"),
            (
                "name too long",
                tar_of(|b| {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(0);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, format!("dir/{long}"), &b""[..]).unwrap();
                }),
                "NAME_MAX",
            ),
        ];
        for (what, layer, reason) in cases {
            let s = Sandbox::new();
            let err = apply(&s.root(), &layer[..], WhiteoutMode::Overlay).expect_err(what).to_string();
            assert!(err.contains(reason), "{what}: {err}");
            s.assert_outside_untouched();
        }
    }

    #[test]
    fn symlinks_already_in_the_root_resolve_inside_it() {
        if !root_or_skip() {
            return;
        }
        let s = Sandbox::new();
        // A lower layer's links: one absolute, one climbing out; both must land inside.
        std::os::unix::fs::symlink("/", s.root().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../outside", s.root().join("lower")).unwrap();
        std::os::unix::fs::symlink("../../nowhere", s.root().join("dangling")).unwrap();
        fs::create_dir(s.root().join("outside")).unwrap();
        let err = apply(&s.root(), &tar_of(|b| raw(b, "dangling/x", tar::EntryType::Regular, "", b"", 0o644))[..], WhiteoutMode::Overlay);
        assert!(err.unwrap_err().to_string().contains("symlink to a missing directory"));
        let layer = tar_of(|b| {
            raw(b, "abs/from-abs", tar::EntryType::Regular, "", b"in", 0o644);
            raw(b, "lower/secret", tar::EntryType::Regular, "", b"overwritten?", 0o644);
        });
        apply(&s.root(), &layer[..], WhiteoutMode::Overlay).unwrap();
        assert_eq!(fs::read_to_string(s.root().join("from-abs")).unwrap(), "in");
        assert_eq!(fs::read_to_string(s.root().join("outside/secret")).unwrap(), "overwritten?");
        s.assert_outside_untouched();
    }

    #[test]
    fn blank_numeric_fields_read_as_zero_and_garbage_ones_are_errors() {
        if !root_or_skip() {
            return;
        }
        let entry = |uid: &[u8]| {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..4].copy_from_slice(b"file");
            h.as_old_mut().uid[..uid.len()].copy_from_slice(uid);
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&h, &b"x"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let s = Sandbox::new();
        apply(&s.root(), &entry(b"")[..], WhiteoutMode::Overlay).unwrap();
        assert_eq!(fs::metadata(s.root().join("file")).unwrap().uid(), 0);
        let s = Sandbox::new();
        assert!(matches!(apply(&s.root(), &entry(b"zz")[..], WhiteoutMode::Overlay), Err(ArchiveError::Read(_))));
    }

    #[test]
    fn truncated_or_corrupt_archives_are_read_errors() {
        if !root_or_skip() {
            return;
        }
        let layer = tar_of(|b| raw(b, "big", tar::EntryType::Regular, "", &[7u8; 10_000], 0o644));
        let s = Sandbox::new();
        let err = apply(&s.root(), &layer[..5000], WhiteoutMode::Overlay).unwrap_err();
        assert!(matches!(err, ArchiveError::Read(_)), "{err}");
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let err = apply(&s.root(), &garbage[..], WhiteoutMode::Overlay).unwrap_err();
        assert!(matches!(err, ArchiveError::Read(_)), "{err}");
        s.assert_outside_untouched();
    }

    fn lower_and_upper() -> (Vec<u8>, Vec<u8>) {
        let lower = tar_of(|b| {
            raw(b, "a/keep", tar::EntryType::Regular, "", b"k", 0o644);
            raw(b, "a/gone", tar::EntryType::Regular, "", b"g", 0o644);
            raw(b, "d/old", tar::EntryType::Regular, "", b"o", 0o644);
            raw(b, "d/sub/older", tar::EntryType::Regular, "", b"o", 0o644);
        });
        let upper = tar_of(|b| {
            raw(b, "a/.wh.gone", tar::EntryType::Regular, "", b"", 0o644);
            raw(b, "d/.wh..wh..opq", tar::EntryType::Regular, "", b"", 0o644);
            raw(b, "d/new", tar::EntryType::Regular, "", b"n", 0o644);
        });
        (lower, upper)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_content_through_a_real_overlay() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, merged) = (t.path().join("l1"), t.path().join("l2"), t.path().join("merged"));
        for d in [&l1, &l2, &merged] {
            fs::create_dir(d).unwrap();
        }
        let (lower, upper) = lower_and_upper();
        apply(&l1, &lower[..], WhiteoutMode::Overlay).unwrap();
        apply(&l2, &upper[..], WhiteoutMode::Overlay).unwrap();
        let opts = format!("lowerdir={}:{}", l2.display(), l1.display());
        nix::mount::mount(Some("overlay"), &merged, Some("overlay"), nix::mount::MsFlags::MS_RDONLY, Some(opts.as_str())).unwrap();
        // Unmount even if a listing panics: no test leaves a mount behind.
        let seen = std::panic::catch_unwind(|| (listing(&merged.join("a")), listing(&merged.join("d"))));
        nix::mount::umount(&merged).unwrap();
        let seen = seen.unwrap();
        assert_eq!(seen, (vec!["keep".to_string()], vec!["new".to_string()]));
    }

    #[test]
    fn delete_mode_gives_the_same_view_in_one_directory() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = lower_and_upper();
        apply(t.path(), &lower[..], WhiteoutMode::Delete).unwrap();
        apply(t.path(), &upper[..], WhiteoutMode::Delete).unwrap();
        assert_eq!(listing(&t.path().join("a")), ["keep"]);
        assert_eq!(listing(&t.path().join("d")), ["new"]);
    }

    fn open_dir(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn a_copy_rebases_keeps_wh_names_and_strips_a_leading_slash() {
        if !root_or_skip() {
            return;
        }
        let s = Sandbox::new();
        let tar = tar_of(|b| {
            raw(b, "/", tar::EntryType::Directory, "", b"", 0o755);
            raw(b, "/.wh.x", tar::EntryType::Regular, "", b"plain", 0o644);
            raw(b, "/d/f", tar::EntryType::Regular, "", b"data", 0o600);
            raw(b, "/d/h", tar::EntryType::Link, "/d/f", b"", 0o600);
            raw(b, "/d/up", tar::EntryType::Symlink, "../../../outside", b"", 0o777);
        });
        let mut opts = Options::copy(Owner::Unchanged);
        opts.rebase = Some(("/".into(), "new".into()));
        check(&tar[..], &opts).unwrap();
        unpack(open_dir(&s.root()), &tar[..], opts).unwrap();
        assert_eq!(fs::read_to_string(s.root().join("new/.wh.x")).unwrap(), "plain");
        assert_eq!(fs::read_to_string(s.root().join("new/d/h")).unwrap(), "data");
        assert_eq!(fs::read_link(s.root().join("new/d/up")).unwrap(), Path::new("../../../outside"));
        // A later entry through the climbing symlink stays inside the root.
        let through = tar_of(|b| raw(b, "new/d/up/secret", tar::EntryType::Regular, "", b"changed", 0o644));
        let _ = unpack(open_dir(&s.root()), &through[..], Options::copy(Owner::FromArchive));
        s.assert_outside_untouched();
    }

    #[test]
    fn a_copy_refuses_to_swap_a_directory_for_a_file_and_check_reads_everything() {
        if !root_or_skip() {
            return;
        }
        let s = Sandbox::new();
        fs::create_dir_all(s.root().join("d/sub")).unwrap();
        let tar = tar_of(|b| raw(b, "d", tar::EntryType::Regular, "", b"x", 0o644));
        let e = unpack(open_dir(&s.root()), &tar[..], Options::copy(Owner::FromArchive)).unwrap_err();
        assert_eq!(e.to_string(), "cannot overwrite directory \"d\" with non-directory");
        assert!(s.root().join("d/sub").is_dir());
        // A truncated upload fails the check, before anything is written.
        let mut cut = tar_of(|b| raw(b, "f", tar::EntryType::Regular, "", &[1u8; 4000], 0o644));
        cut.truncate(2048);
        assert!(check(&cut[..], &Options::copy(Owner::FromArchive)).is_err());
        let evil = tar_of(|b| raw(b, "../x", tar::EntryType::Regular, "", b"x", 0o644));
        assert!(check(&evil[..], &Options::copy(Owner::FromArchive)).is_err());
        // Limits: too many entries, too much content, too deep.
        let mut bounded = Options::copy(Owner::FromArchive);
        bounded.limits = Some(Limits { entries: 2, bytes: 10, depth: 3, devices: false });
        let three = tar_of(|b| (0..3).for_each(|i| raw(b, &format!("f{i}"), tar::EntryType::Regular, "", b"x", 0o644)));
        assert_eq!(check(&three[..], &bounded).unwrap_err().to_string(), "the archive is too large: more than 2 entries");
        let big = tar_of(|b| raw(b, "big", tar::EntryType::Regular, "", &[0u8; 11], 0o644));
        assert!(matches!(check(&big[..], &bounded), Err(ArchiveError::TooLarge { what: "bytes of content", .. })));
        let deep = tar_of(|b| raw(b, "a/b/c/d", tar::EntryType::Regular, "", b"", 0o644));
        assert!(matches!(check(&deep[..], &bounded), Err(ArchiveError::TooLarge { what: "directory levels", .. })));
        let fits = tar_of(|b| raw(b, "a/b/c", tar::EntryType::Regular, "", &[0u8; 10], 0o644));
        assert_eq!(check(&fits[..], &bounded).unwrap(), 1);
        let dev = tar_of(|b| raw(b, "sda", tar::EntryType::Block, "", b"", 0o600));
        assert!(check(&dev[..], &bounded).unwrap_err().to_string().contains("device nodes are not allowed"));
    }

    #[test]
    fn pipeline_passes_bytes_and_result_and_reports_producer_errors() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let mut p = Pipeline::start(move |w| {
            w.write_all(&data)?;
            Ok(data.len())
        });
        let mut got = Vec::new();
        p.read_to_end(&mut got).unwrap();
        assert_eq!(got, expected);
        assert_eq!(p.finish().unwrap(), 3_000_000);
        let mut failing = Pipeline::<()>::start(|w| {
            w.write_all(b"partial")?;
            w.flush()?;
            Err(io::Error::other("source broke"))
        });
        let mut sink = Vec::new();
        assert!(failing.read_to_end(&mut sink).unwrap_err().to_string().contains("source broke"));
    }

    #[test]
    fn gzip_and_zstd_are_detected_and_plain_tar_passes_through() {
        let layer = tar_of(|b| raw(b, "f", tar::EntryType::Regular, "", b"data", 0o644));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &layer).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&layer[..], 3).unwrap();
        for input in [&gz[..], &zst[..], &layer[..]] {
            let mut out = Vec::new();
            decompress(input).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, layer);
        }
    }
}
