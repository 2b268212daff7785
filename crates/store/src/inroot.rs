//! Paths resolved inside a directory taken as a root (a container's filesystem, a build
//! context): symlinks on the way are followed as they would be inside it, absolute targets and
//! `..` stay in, and opening goes through `openat2(RESOLVE_IN_ROOT)`, so a symlink swapped in
//! meanwhile cannot lead out either.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::SFlag;

/// Symlinks followed in one resolution, as Linux's limit.
const MAX_LINKS: u32 = 40;

/// `openat2` flags that keep a lookup inside its directory, magic links refused.
pub fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Open the directory at the (resolved) `path` inside `root`.
pub fn open_dir(root: BorrowedFd, path: &str) -> nix::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(in_root());
    nix::fcntl::openat2(root, if rel.is_empty() { "." } else { rel }, how)
}

/// `path` with every symlink on the way followed inside `root` (the last one too when
/// `follow_last`), `..` stopping at the root: the absolute path it names inside it.
/// Components that do not exist are kept as given.
pub fn resolve(root: BorrowedFd, path: &str, follow_last: bool) -> io::Result<String> {
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = path.as_bytes().split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
    let (mut links, mut missing) = (0, false);
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        if missing {
            done.push(c);
            continue;
        }
        let here = String::from_utf8_lossy(&done.join(&b'/')).into_owned();
        let parent = match open_dir(root, &here) {
            Ok(p) => p,
            Err(Errno::ENOENT) => {
                missing = true;
                done.push(c);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let last = todo.iter().all(|t| t.is_empty() || t == b".");
        match nix::sys::stat::fstatat(parent.as_fd(), OsStr::from_bytes(&c), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK && (follow_last || !last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::ELOOP.into());
                }
                let target = nix::fcntl::readlinkat(parent.as_fd(), OsStr::from_bytes(&c))?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    done.clear();
                }
                for part in target.split(|b| *b == b'/').rev() {
                    todo.push_front(part.to_vec());
                }
            }
            Ok(_) => done.push(c),
            Err(Errno::ENOENT) => {
                missing = true;
                done.push(c);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!("/{}", String::from_utf8_lossy(&done.join(&b'/'))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;

    #[test]
    fn symlinks_resolve_inside_the_root_and_never_out() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("d/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("d/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../d/sub", r.join("d/up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("d/loop")).unwrap();
        let root = nix::fcntl::open(r, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(resolve(root.as_fd(), "/d/abs/passwd", true).unwrap(), "/etc/passwd");
        assert_eq!(resolve(root.as_fd(), "/d/up", true).unwrap(), "/d/sub");
        assert_eq!(resolve(root.as_fd(), "/d/up", false).unwrap(), "/d/up");
        assert_eq!(resolve(root.as_fd(), "/../../d/missing/x", true).unwrap(), "/d/missing/x");
        assert_eq!(resolve(root.as_fd(), "/d/loop", true).unwrap_err().raw_os_error(), Some(Errno::ELOOP as i32));
        // /etc does not exist in this root: nothing outside is ever looked at.
        assert!(open_dir(root.as_fd(), &resolve(root.as_fd(), "/d/abs", true).unwrap()).is_err());
    }
}
