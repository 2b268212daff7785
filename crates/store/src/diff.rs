//! The reverse of [`crate::archive::apply`]: a writable layer as a layer tar. Overlay whiteouts
//! (0:0 character devices) become `.wh.NAME` entries and opaque directories get
//! `.wh..wh..opq`; for plain-copy snapshots the tree is compared with its parent. The output is
//! deterministic: entries sorted by name, GNU headers with numeric owners and no user names,
//! access and change times left out, so the same tree always gives the same bytes and digest.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::archive::ArchiveError;

/// What to diff.
pub enum Source<'a> {
    /// An overlay upper directory: it holds exactly the layer's changes.
    Overlay(&'a Path),
    /// A full copy (`upper`) compared with its parent's tree (`lower`), for vfs snapshots.
    Compare { lower: &'a Path, upper: &'a Path },
}

type Result<T> = std::result::Result<T, ArchiveError>;

fn rd(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.display().to_string();
    move |source| ArchiveError::Write { path, source }
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 8];
    matches!(rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value), Ok(n) if &value[..n] == b"y")
}

/// Sorted children of a directory.
fn children(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map_err(rd(dir))?
        .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
        .collect::<io::Result<_>>()
        .map_err(rd(dir))?;
    v.sort();
    Ok(v)
}

struct Writer<W: Write> {
    tar: tar::Builder<W>,
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> Writer<W> {
    fn header(md: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(md.uid() as u64);
        h.set_gid(md.gid() as u64);
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    fn append(&mut self, name: &str, path: &Path, md: &fs::Metadata) -> Result<()> {
        let ft = md.file_type();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                let mut h = Self::header(md, tar::EntryType::Link);
                self.tar.append_link(&mut h, name, first).map_err(rd(path))?;
                return Ok(());
            }
            self.links.insert((md.dev(), md.ino()), name.to_string());
        }
        if ft.is_dir() {
            let mut h = Self::header(md, tar::EntryType::Directory);
            self.tar.append_data(&mut h, format!("{name}/"), io::empty()).map_err(rd(path))
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(rd(path))?;
            let mut h = Self::header(md, tar::EntryType::Symlink);
            self.tar.append_link(&mut h, name, target).map_err(rd(path))
        } else if ft.is_file() {
            let mut h = Self::header(md, tar::EntryType::Regular);
            h.set_size(md.len());
            let f = fs::File::open(path).map_err(rd(path))?;
            self.tar.append_data(&mut h, name, f).map_err(rd(path))
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = Self::header(md, kind);
            let dev = md.rdev();
            h.set_device_major(nix::sys::stat::major(dev) as u32).map_err(rd(path))?;
            h.set_device_minor(nix::sys::stat::minor(dev) as u32).map_err(rd(path))?;
            self.tar.append_data(&mut h, name, io::empty()).map_err(rd(path))
        } else {
            Ok(()) // sockets are not part of layers
        }
    }

    fn whiteout(&mut self, dir_name: &str, hidden: &str, md_for_owner: &fs::Metadata) -> Result<()> {
        let name = if dir_name.is_empty() { format!(".wh.{hidden}") } else { format!("{dir_name}/.wh.{hidden}") };
        let mut h = Self::header(md_for_owner, tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        self.tar.append_data(&mut h, name, io::empty()).map_err(rd(Path::new(dir_name)))
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

/// Write the layer tar for `source` to `out`.
pub fn diff<W: Write>(source: Source, out: W) -> Result<W> {
    let mut w = Writer { tar: tar::Builder::new(out), links: HashMap::new() };
    w.tar.mode(tar::HeaderMode::Complete);
    match source {
        Source::Overlay(upper) => overlay(&mut w, upper, "")?,
        Source::Compare { lower, upper } => compare(&mut w, Some(lower), upper, "")?,
    }
    w.tar.into_inner().map_err(rd(Path::new("layer")))
}

fn overlay<W: Write>(w: &mut Writer<W>, dir: &Path, prefix: &str) -> Result<()> {
    for (name, path) in children(dir)? {
        let md = fs::symlink_metadata(&path).map_err(rd(&path))?;
        let rel = join(prefix, &name);
        if is_whiteout(&md) {
            w.whiteout(prefix, &name, &md)?;
            continue;
        }
        w.append(&rel, &path, &md)?;
        if md.is_dir() {
            if is_opaque(&path) {
                w.whiteout(&rel, ".wh..opq", &md)?;
            }
            overlay(w, &path, &rel)?;
        }
    }
    Ok(())
}

/// Has `upper`'s entry changed from `lower`'s? Docker's naive diff: type, mode, owner, size,
/// mtime, device, symlink target.
fn changed(l: &fs::Metadata, u: &fs::Metadata, lpath: &Path, upath: &Path) -> bool {
    if l.file_type() != u.file_type() || l.mode() != u.mode() || l.uid() != u.uid() || l.gid() != u.gid() || l.rdev() != u.rdev() {
        return true;
    }
    if u.is_dir() {
        return false; // a directory's own mtime changes with its children; those are diffed
    }
    if u.file_type().is_symlink() {
        return fs::read_link(lpath).ok() != fs::read_link(upath).ok();
    }
    l.len() != u.len() || l.mtime() != u.mtime() || l.mtime_nsec() != u.mtime_nsec()
}

fn compare<W: Write>(w: &mut Writer<W>, lower: Option<&Path>, upper: &Path, prefix: &str) -> Result<()> {
    let up: BTreeMap<String, PathBuf> = children(upper)?.into_iter().collect();
    let low: BTreeMap<String, PathBuf> = match lower {
        Some(l) if l.is_dir() => children(l)?.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    let upper_md = fs::symlink_metadata(upper).map_err(rd(upper))?;
    // Whiteouts first, in name order, then the entries themselves.
    let mut names: Vec<&String> = up.keys().chain(low.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let rel = join(prefix, name);
        match (low.get(name), up.get(name)) {
            (Some(_), None) => w.whiteout(prefix, name, &upper_md)?,
            (l, Some(u)) => {
                let umd = fs::symlink_metadata(u).map_err(rd(u))?;
                let lmd = l.and_then(|l| fs::symlink_metadata(l).ok());
                let lower_dir = l.filter(|_| lmd.as_ref().is_some_and(|m| m.is_dir()));
                let differs = match &lmd {
                    None => true,
                    Some(lmd) => changed(lmd, &umd, l.map(PathBuf::as_path).unwrap_or(Path::new("")), u),
                };
                if differs {
                    w.append(&rel, u, &umd)?;
                }
                if umd.is_dir() {
                    // A directory that replaced a non-directory hides nothing below; recurse
                    // against the lower directory only when there was one.
                    compare(w, lower_dir.map(PathBuf::as_path), u, &rel)?;
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{WhiteoutMode, apply};
    use crate::digest::Digest;
    use crate::test_support::root_or_skip;

    fn sample_tree(dir: &Path) {
        fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
        fs::write(dir.join("etc/hostname"), "box\n").unwrap();
        fs::write(dir.join("etc/conf.d/a"), vec![b'a'; 70_000]).unwrap();
        fs::hard_link(dir.join("etc/hostname"), dir.join("etc/hostname.bak")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("etc/link")).unwrap();
        nix::unistd::chown(&dir.join("etc/conf.d/a"), Some(1000.into()), Some(1000.into())).unwrap();
        let long = "n".repeat(150);
        fs::write(dir.join("etc").join(&long), "long name").unwrap();
    }

    #[test]
    fn apply_then_diff_gives_the_same_digest() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        fs::create_dir(&a).unwrap();
        sample_tree(&a);
        let first = diff(Source::Overlay(&a), Vec::new()).unwrap();
        let again = diff(Source::Overlay(&a), Vec::new()).unwrap();
        assert_eq!(Digest::of(&first), Digest::of(&again), "diff is deterministic");
        let b = t.path().join("b");
        fs::create_dir(&b).unwrap();
        apply(&b, &first[..], WhiteoutMode::Overlay).unwrap();
        let second = diff(Source::Overlay(&b), Vec::new()).unwrap();
        assert_eq!(Digest::of(&first), Digest::of(&second), "apply then diff round-trips");
    }

    #[test]
    fn overlay_whiteouts_and_opaque_dirs_become_wh_entries() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let u = t.path();
        fs::create_dir_all(u.join("d")).unwrap();
        nix::sys::stat::mknod(&u.join("gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
        rustix::fs::setxattr(u.join("d"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
        fs::write(u.join("d/new"), "n").unwrap();
        let layer = diff(Source::Overlay(u), Vec::new()).unwrap();
        let names: Vec<String> =
            tar::Archive::new(&layer[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["d/", "d/.wh..wh..opq", "d/new", ".wh.gone"]);
    }

    #[test]
    fn compare_mode_finds_additions_changes_and_deletions() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir(&lower).unwrap();
        sample_tree(&lower);
        let status = std::process::Command::new("cp").arg("-a").arg(&lower).arg(&upper).status().unwrap();
        assert!(status.success());
        fs::write(upper.join("etc/new"), "new").unwrap();
        fs::remove_file(upper.join("etc/link")).unwrap();
        fs::write(upper.join("etc/conf.d/a"), "changed").unwrap();
        let layer = diff(Source::Compare { lower: &lower, upper: &upper }, Vec::new()).unwrap();
        let names: Vec<String> =
            tar::Archive::new(&layer[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["etc/conf.d/a", "etc/.wh.link", "etc/new"]);
        // Applying the diff to a copy of the lower tree reproduces the upper tree.
        let check = t.path().join("check");
        let status = std::process::Command::new("cp").arg("-a").arg(&lower).arg(&check).status().unwrap();
        assert!(status.success());
        apply(&check, &layer[..], WhiteoutMode::Delete).unwrap();
        let a = diff(Source::Compare { lower: &lower, upper: &check }, Vec::new()).unwrap();
        assert_eq!(Digest::of(&a), Digest::of(&layer));
    }
}
