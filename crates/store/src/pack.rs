//! A path's tar for a copy (`cp`, `GET archive`), read through file descriptors: every entry
//! is opened relative to its directory with `O_NOFOLLOW`, so a symlink swapped in during the
//! walk (for a directory or a file) is never followed, out of the tree or anywhere. Docker's
//! shapes: directories end in `/`, a file's second and later names are hard link entries,
//! sockets are left out, `security.capability` goes along as a PAX record.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Tar names longer than this go in a PAX record.
const NAME_FIELD: usize = 100;
const BLOCK: usize = 512;

struct Packer<W: Write> {
    tar: tar::Builder<W>,
    /// First name of each multiply linked file, by (device, inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Write `tar` of the entry `name` in `dir` (or of `dir` itself when `name` is None), its
/// names starting with `as_name` (`d`, `.`, `/`), into `out`. Blocking.
pub fn pack<W: Write>(dir: BorrowedFd, name: Option<&OsStr>, as_name: &str, out: W) -> io::Result<W> {
    let mut p = Packer { tar: tar::Builder::new(out), links: HashMap::new(), buf: vec![0; 1 << 20] };
    match name {
        Some(n) => {
            let st = nix::sys::stat::fstatat(dir, n, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            p.entry(dir, n, &st, as_name.as_bytes().to_vec())?;
        }
        None => {
            let fd = nix::fcntl::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
            let st = nix::sys::stat::fstat(&fd)?;
            p.dir(fd, &st, as_name.as_bytes().to_vec())?;
        }
    }
    p.tar.into_inner()
}

fn child_name(parent: &[u8], child: &[u8]) -> Vec<u8> {
    let mut n = parent.to_vec();
    while n.len() > 1 && n.ends_with(b"/") {
        n.pop();
    }
    if !n.ends_with(b"/") {
        n.push(b'/');
    }
    n.extend_from_slice(child);
    n
}

impl<W: Write> Packer<W> {
    fn header(st: &FileStat, typ: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        // With the file type's bits, as Docker's archives (Go's `FileInfoHeader`) write it.
        h.set_mode(st.st_mode);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// Write `h` with `name` (and a link target), through PAX records where they are too long.
    fn put(&mut self, h: &mut tar::Header, name: &[u8], link: Option<&[u8]>, mut pax: Vec<(&str, Vec<u8>)>) -> io::Result<()> {
        if name.len() > NAME_FIELD {
            pax.push(("path", name.to_vec()));
        }
        if let Some(l) = link.filter(|l| l.len() > NAME_FIELD) {
            pax.push(("linkpath", l.to_vec()));
        }
        if !pax.is_empty() {
            self.tar.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))?;
        }
        let old = h.as_old_mut();
        let n = name.len().min(NAME_FIELD);
        old.name = [0; NAME_FIELD];
        old.name[..n].copy_from_slice(&name[..n]);
        if let Some(l) = link {
            let n = l.len().min(NAME_FIELD);
            old.linkname = [0; NAME_FIELD];
            old.linkname[..n].copy_from_slice(&l[..n]);
        }
        h.set_cksum();
        self.tar.get_mut().write_all(h.as_bytes())
    }

    fn entry(&mut self, parent: BorrowedFd, name: &OsStr, st: &FileStat, tar_name: Vec<u8>) -> io::Result<()> {
        let k = kind(st);
        if k != SFlag::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = Self::header(st, tar::EntryType::Link);
                return self.put(&mut h, &tar_name, Some(&first), Vec::new());
            }
            self.links.insert(key, tar_name.clone());
        }
        match k {
            SFlag::S_IFDIR => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                match nix::fcntl::openat(parent, name, flags, Mode::empty()) {
                    Ok(fd) => self.dir(fd, st, tar_name),
                    // Replaced or removed since it was listed: left out.
                    Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            SFlag::S_IFREG => self.file(parent, name, tar_name),
            SFlag::S_IFLNK => {
                let target = match nix::fcntl::readlinkat(parent, name) {
                    Ok(t) => t,
                    Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let mut h = Self::header(st, tar::EntryType::Symlink);
                self.put(&mut h, &tar_name, Some(target.as_bytes()), Vec::new())
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let typ = match k {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = Self::header(st, typ);
                if k != SFlag::S_IFIFO {
                    h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32)?;
                    h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32)?;
                }
                self.put(&mut h, &tar_name, None, Vec::new())
            }
            // Sockets are not archived (as Docker's archive).
            _ => Ok(()),
        }
    }

    fn dir(&mut self, fd: OwnedFd, st: &FileStat, mut tar_name: Vec<u8>) -> io::Result<()> {
        if !tar_name.ends_with(b"/") {
            tar_name.push(b'/');
        }
        let mut h = Self::header(st, tar::EntryType::Directory);
        self.put(&mut h, &tar_name, None, Vec::new())?;
        let listing = fd.try_clone()?;
        let mut names: Vec<Vec<u8>> = nix::dir::Dir::from_fd(listing)?
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        names.sort();
        for n in names {
            let name = OsStr::from_bytes(&n);
            let child = match nix::sys::stat::fstatat(fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(c) => c,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            self.entry(fd.as_fd(), name, &child, child_name(&tar_name, &n))?;
        }
        Ok(())
    }

    fn file(&mut self, parent: BorrowedFd, name: &OsStr, tar_name: Vec<u8>) -> io::Result<()> {
        // O_NONBLOCK: a fifo swapped in for the file must not block the copy.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let st = nix::sys::stat::fstat(&fd)?;
        if kind(&st) != SFlag::S_IFREG {
            return Ok(());
        }
        let mut h = Self::header(&st, tar::EntryType::Regular);
        let size = st.st_size.max(0) as u64;
        h.set_size(size);
        let mut pax = Vec::new();
        let mut cap = [0u8; 64];
        if let Ok(n) = rustix::fs::fgetxattr(&fd, "security.capability", &mut cap) {
            pax.push(("SCHILY.xattr.security.capability", cap[..n].to_vec()));
        }
        self.put(&mut h, &tar_name, None, pax)?;
        // Exactly `size` bytes, whatever the file does meanwhile: cut if it grew, zeros if it
        // shrank, so the archive stays well formed.
        let mut file = std::fs::File::from(fd);
        let mut left = size;
        let out = self.tar.get_mut();
        while left > 0 {
            let want = self.buf.len().min(left as usize);
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    self.buf[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        let pad = (BLOCK - (size as usize % BLOCK)) % BLOCK;
        out.write_all(&[0u8; BLOCK][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
                (String::from_utf8_lossy(&e.path_bytes()).into_owned(), e.header().entry_type(), link)
            })
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("a"), "hello").unwrap();
        fs::hard_link(d.join("a"), d.join("b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("lnk")).unwrap();
        let long = "x".repeat(150);
        fs::write(d.join("sub").join(&long), vec![7u8; 70_000]).unwrap();
        let _ = std::os::unix::net::UnixListener::bind(d.join("sock"));
        t
    }

    #[test]
    fn a_directory_packs_with_dockers_names_links_and_long_names() {
        let t = tree();
        let dir = nix::fcntl::open(t.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let out = pack(dir.as_fd(), Some(OsStr::new("d")), "d", Vec::new()).unwrap();
        let long = format!("d/sub/{}", "x".repeat(150));
        assert_eq!(
            names(&out),
            [
                ("d/".into(), tar::EntryType::Directory, String::new()),
                ("d/a".into(), tar::EntryType::Regular, String::new()),
                ("d/b".into(), tar::EntryType::Link, "d/a".into()),
                ("d/lnk".into(), tar::EntryType::Symlink, "/etc/passwd".into()),
                ("d/sub/".into(), tar::EntryType::Directory, String::new()),
                (long.clone(), tar::EntryType::Regular, String::new()),
            ]
        );
        let mut a = tar::Archive::new(&out[..]);
        let mut big = a.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path_bytes().len() > 100).unwrap();
        let mut data = Vec::new();
        big.read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 70_000]);
    }

    #[test]
    fn contents_rebase_to_dot_and_the_root_to_slash() {
        let t = tree();
        let d = nix::fcntl::open(&t.path().join("d"), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let dot = names(&pack(d.as_fd(), None, ".", Vec::new()).unwrap());
        assert_eq!(dot[0].0, "./");
        assert_eq!(dot[1].0, "./a");
        let root = names(&pack(d.as_fd(), None, "/", Vec::new()).unwrap());
        assert_eq!(root[0].0, "/");
        assert_eq!(root[1].0, "/a");
    }

    #[test]
    fn a_symlink_is_archived_as_a_link_never_followed() {
        let t = tree();
        let d = nix::fcntl::open(&t.path().join("d"), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let out = names(&pack(d.as_fd(), Some(OsStr::new("lnk")), "lnk", Vec::new()).unwrap());
        assert_eq!(out, [("lnk".into(), tar::EntryType::Symlink, "/etc/passwd".into())]);
    }
}
