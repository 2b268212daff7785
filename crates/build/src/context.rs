//! The build context on disk: what COPY and ADD sources name in it, by Docker's rules, and the
//! digest of their content for the build cache. Sources are paths from the context's root (a
//! leading `/` too); `*`, `?` and `[...]` match within a component; one that climbs out with
//! `..` is refused; symlinks on the way resolve inside the context (berth-store's `inroot`),
//! never outside; what `.dockerignore` excludes is not there. The digest covers names, types,
//! modes, owners, sizes, contents and link targets, not times: touching a file keeps a cache
//! hit, changing a byte misses.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_store::archive::{self, Limits};
use berth_store::inroot::{open_dir, resolve};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sha2::Digest as _;

use crate::ignore::Ignore;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
    #[error("file not found in build context or excluded by .dockerignore: stat {0}: file does not exist")]
    NotFound(String),
    #[error("no source files were specified")]
    NoSources,
    #[error("bad pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: &'static str },
    #[error("reading the build context at {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the build context: {0}")]
    Archive(archive::ArchiveError),
}

type Result<T> = std::result::Result<T, ContextError>;

fn io_err(path: &str) -> impl FnOnce(nix::errno::Errno) -> ContextError + '_ {
    move |e| ContextError::Io { path: path.to_string(), source: e.into() }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// What a build context may hold: more is a context bomb, refused as it streams in; device
/// nodes are refused.
pub const CONTEXT_LIMITS: Limits = Limits { entries: 1_000_000, bytes: 64 << 30, depth: 256, devices: false };

/// Unpack a context tar from a client into the empty directory `dir`: every name, link and
/// symlink kept inside it, owners from the archive, within `limits`. Returns the entries
/// written; when it fails, the caller deletes `dir` (nothing was written outside it).
pub fn unpack_context(tar: impl Read, dir: &Path, limits: Limits) -> Result<u64> {
    let root = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(io_err(&dir.display().to_string()))?;
    let mut opts = archive::Options::copy(archive::Owner::FromArchive);
    opts.no_overwrite_dir_non_dir = false;
    opts.limits = Some(limits);
    archive::unpack(root, tar, opts).map(|a| a.entries).map_err(ContextError::Archive)
}

pub struct Context {
    root: OwnedFd,
    ignore: Ignore,
    known: Option<Known>,
}

/// What a file is on disk, as far as its content goes: a file with the same identity has the
/// same bytes. The inode and both times are the kernel's: a write changes the ctime, even
/// one that sets the mtime back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// Files' content digests a context directory kept between builds remembers, so a rebuild
/// does not read again what it hashed before.
pub type Known = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (FileId, [u8; 32])>>>;

impl Context {
    /// The context unpacked in `dir`, with its `.dockerignore` patterns.
    pub fn open(dir: &Path, ignore: Ignore) -> io::Result<Context> {
        let root = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Context { root, ignore, known: None })
    }

    /// Is `path` (from [`Context::sources`]) a directory?
    pub fn is_dir(&self, path: &str) -> bool {
        self.lstat(path).is_some_and(|st| kind(&st) == SFlag::S_IFDIR)
    }

    /// Remember files' digests in `known` (shared by the builds of one context directory).
    pub fn with_known(mut self, known: Known) -> Context {
        self.known = Some(known);
        self
    }

    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The entries of a directory (resolved path), sorted, without those `.dockerignore`
    /// excludes.
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let fd = open_dir(self.root(), dir).map_err(io_err(dir))?;
        let fd = nix::fcntl::openat(fd.as_fd(), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(io_err(dir))?;
        let mut names: Vec<String> = nix::dir::Dir::from_fd(fd)
            .map_err(io_err(dir))?
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| String::from_utf8_lossy(e.file_name().to_bytes()).into_owned())
            .filter(|n| n != "." && n != "..")
            .filter(|n| !self.ignore.excluded(&join(dir, n)))
            .collect();
        names.sort();
        Ok(names)
    }

    fn lstat(&self, path: &str) -> Option<FileStat> {
        let (parent, name) = split(path);
        let dir = open_dir(self.root(), parent).ok()?;
        if name.is_empty() {
            return nix::sys::stat::fstat(&dir).ok();
        }
        nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
    }

    /// The context paths (absolute from its root, symlinks resolved inside it) that the
    /// (expanded) sources name.
    pub fn sources(&self, sources: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for src in sources {
            let mut parts: Vec<&str> = Vec::new();
            for c in src.split('/') {
                match c {
                    "" | "." => {}
                    ".." if parts.pop().is_none() => return Err(ContextError::Outside(src.clone())),
                    ".." => {}
                    c => parts.push(c),
                }
            }
            // Expand wildcards component by component.
            let mut found: Vec<String> = vec!["/".to_string()];
            for part in &parts {
                let mut next = Vec::new();
                for base in &found {
                    let dir = resolve(self.root(), base, true).map_err(|e| ContextError::Io { path: base.clone(), source: e })?;
                    if has_glob(part) {
                        let pattern: Vec<char> = part.chars().collect();
                        let Ok(names) = self.list(&dir) else { continue };
                        for n in names {
                            let name: Vec<char> = n.chars().collect();
                            let hit = crate::ignore::component(&pattern, &name)
                                .map_err(|reason| ContextError::Pattern { pattern: src.clone(), reason })?;
                            if hit {
                                next.push(join(base, &n));
                            }
                        }
                    } else {
                        next.push(join(base, part));
                    }
                }
                found = next;
            }
            let mut any = false;
            for f in found {
                let real = resolve(self.root(), &f, true).map_err(|e| ContextError::Io { path: f.clone(), source: e })?;
                if real != "/" && self.ignore.excluded(&real) {
                    continue;
                }
                if self.lstat(&real).is_some() {
                    out.push(real);
                    any = true;
                }
            }
            if !any {
                return Err(if parts.iter().any(|p| has_glob(p)) { ContextError::NoSources } else { ContextError::NotFound(src.clone()) });
            }
        }
        Ok(out)
    }

    /// The content digest of `paths` (from [`Context::sources`]), for the cache:
    /// `sha256:<hex>` over each path's tree.
    pub fn digest(&self, paths: &[String]) -> Result<String> {
        let mut h = sha2::Sha256::new();
        for p in paths {
            h.update(p.as_bytes());
            h.update([0]);
            self.hash_tree(p, "", &mut h)?;
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    }

    fn hash_tree(&self, path: &str, rel: &str, h: &mut sha2::Sha256) -> Result<()> {
        let Some(st) = self.lstat(path) else { return Err(ContextError::NotFound(path.to_string())) };
        let k = kind(&st);
        h.update(
            format!(
                "{rel}\0{:o}\0{}\0{}\0{}\0{}\0",
                st.st_mode,
                st.st_uid,
                st.st_gid,
                if k == SFlag::S_IFREG { st.st_size } else { 0 },
                st.st_rdev
            )
            .as_bytes(),
        );
        match k {
            SFlag::S_IFDIR => {
                for n in self.list(path)? {
                    self.hash_tree(&join(path, &n), &join(rel, &n), h)?;
                }
            }
            SFlag::S_IFREG => h.update(self.file_digest(path, &st)?),
            SFlag::S_IFLNK => {
                let (parent, name) = split(path);
                let dir = open_dir(self.root(), parent).map_err(io_err(path))?;
                let target = nix::fcntl::readlinkat(dir.as_fd(), OsStr::new(name)).map_err(io_err(path))?;
                h.update(target.as_bytes());
            }
            _ => {}
        }
        h.update([0xff]);
        Ok(())
    }
}

impl Context {
    /// The sha256 of a file's content: remembered when it is the same file as last time.
    fn file_digest(&self, path: &str, st: &FileStat) -> Result<[u8; 32]> {
        let id = FileId::of(st);
        if let Some(k) = &self.known
            && let Some((known_id, d)) = k.lock().unwrap_or_else(|p| p.into_inner()).get(path)
            && *known_id == id
        {
            return Ok(*d);
        }
        let (parent, name) = split(path);
        let dir = open_dir(self.root(), parent).map_err(io_err(path))?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()).map_err(io_err(path))?;
        let mut f = std::fs::File::from(fd);
        let mut fh = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = f.read(&mut buf).map_err(|source| ContextError::Io { path: path.to_string(), source })?;
            if n == 0 {
                break;
            }
            fh.update(&buf[..n]);
        }
        let d: [u8; 32] = fh.finalize().into();
        if let Some(k) = &self.known {
            k.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_string(), (id, d));
        }
        Ok(d)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_string();
    }
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// (`/a/b`, `c`) from `/a/b/c`; the root is (`/`, ``).
fn split(path: &str) -> (&str, &str) {
    let t = path.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) => ("/", &t[1..]),
        Some(i) => (&t[..i], &t[i + 1..]),
        None => ("/", t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn context() -> (tempfile::TempDir, Context) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("ctx");
        fs::create_dir_all(r.join("src/sub")).unwrap();
        fs::write(r.join("src/a.txt"), "a").unwrap();
        fs::write(r.join("src/b.txt"), "b").unwrap();
        fs::write(r.join("src/sub/c.md"), "c").unwrap();
        fs::write(r.join("secret.key"), "s").unwrap();
        fs::write(t.path().join("outside"), "never").unwrap();
        std::os::unix::fs::symlink("../../outside", r.join("src/escape")).unwrap();
        std::os::unix::fs::symlink("/src/a.txt", r.join("abs-link")).unwrap();
        let c = Context::open(&r, Ignore::parse("*.key\n").unwrap()).unwrap();
        (t, c)
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn sources_by_dockers_rules() {
        let (_t, c) = context();
        assert_eq!(c.sources(&v(&["src/*.txt"])).unwrap(), ["/src/a.txt", "/src/b.txt"]);
        assert_eq!(c.sources(&v(&["/src/sub", "./src/?.txt"])).unwrap(), ["/src/sub", "/src/a.txt", "/src/b.txt"]);
        assert_eq!(c.sources(&v(&["abs-link"])).unwrap(), ["/src/a.txt"], "a symlink resolves inside the context");
        assert_eq!(c.sources(&v(&["."])).unwrap(), ["/"]);
        assert!(matches!(c.sources(&v(&["../outside"])), Err(ContextError::Outside(_))));
        assert!(matches!(c.sources(&v(&["src/../../x"])), Err(ContextError::Outside(_))));
        // The symlink that climbs out lands inside the context, where there is nothing.
        assert!(matches!(c.sources(&v(&["src/escape"])), Err(ContextError::NotFound(_))));
        assert!(matches!(c.sources(&v(&["secret.key"])), Err(ContextError::NotFound(_))), "excluded by .dockerignore");
        assert!(matches!(c.sources(&v(&["nothing*"])), Err(ContextError::NoSources)));
        assert_eq!(
            c.sources(&v(&["missing"])).unwrap_err().to_string(),
            "file not found in build context or excluded by .dockerignore: stat missing: file does not exist"
        );
    }

    #[test]
    fn a_context_unpacks_inside_its_directory_within_bounds() {
        let t = tempfile::tempdir().unwrap();
        let tar = |entries: &[(&str, &[u8])]| {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in entries {
                let mut h = tar::Header::new_old();
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            b.into_inner().unwrap()
        };
        let dir = t.path().join("ok");
        fs::create_dir(&dir).unwrap();
        let n = unpack_context(&tar(&[("Dockerfile", b"FROM x\n"), ("src/a", b"a")])[..], &dir, CONTEXT_LIMITS).unwrap();
        assert_eq!(n, 2);
        assert_eq!(fs::read_to_string(dir.join("src/a")).unwrap(), "a");
        let bad = t.path().join("bad");
        fs::create_dir(&bad).unwrap();
        assert!(unpack_context(&tar(&[("../escaped", b"x")])[..], &bad, CONTEXT_LIMITS).is_err());
        assert!(!t.path().join("escaped").exists());
        let small = Limits { entries: 10, bytes: 100, depth: 3, devices: false };
        let deep = "a/".repeat(5) + "f";
        let e = unpack_context(&tar(&[(deep.as_str(), b"x")])[..], &bad, small).unwrap_err();
        assert_eq!(e.to_string(), "the build context: the archive is too large: more than 3 directory levels");
        let e = unpack_context(&tar(&[("big", &[0u8; 101])])[..], &bad, small).unwrap_err();
        assert!(e.to_string().contains("more than 100 bytes of content"), "{e}");
    }

    #[test]
    fn the_digest_follows_content_not_times() {
        let (t, c) = context();
        let src = c.sources(&v(&["src"])).unwrap();
        let first = c.digest(&src).unwrap();
        let f = t.path().join("ctx/src/a.txt");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        assert_eq!(c.digest(&src).unwrap(), first, "a touched file still hits");
        fs::write(&f, "A").unwrap();
        assert_ne!(c.digest(&src).unwrap(), first, "a changed byte misses");
        fs::write(&f, "a").unwrap();
        assert_eq!(c.digest(&src).unwrap(), first);
        fs::write(t.path().join("ctx/src/new"), "").unwrap();
        assert_ne!(c.digest(&src).unwrap(), first, "a new file misses");
    }

    #[test]
    fn known_files_are_not_read_again_until_they_change() {
        let (t, c) = context();
        let known: Known = Default::default();
        let c = c.with_known(std::sync::Arc::clone(&known));
        let src = c.sources(&v(&["src/a.txt"])).unwrap();
        let first = c.digest(&src).unwrap();
        assert_eq!(known.lock().unwrap().len(), 1);
        // What is remembered is used: a planted digest for the same file shows it was not read.
        known.lock().unwrap().get_mut("/src/a.txt").unwrap().1 = [9u8; 32];
        let planted = c.digest(&src).unwrap();
        assert_ne!(planted, first, "the remembered digest was used");
        // A write (even one that puts the mtime back) makes it read again.
        let f = t.path().join("ctx/src/a.txt");
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        fs::write(&f, "a").unwrap();
        fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        assert_eq!(c.digest(&src).unwrap(), first);
    }
}
