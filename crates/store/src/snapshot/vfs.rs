//! The vfs layout: every snapshot is a full copy of its parent; mounts are binds.

use super::*;

/// Vfs: every snapshot is a full copy of its parent; mounts are binds.
pub struct VfsLayout;

impl Layout for VfsLayout {
    fn fill(&self, snapshots: &Path, tmp: &Path, chain: &[Info]) -> Result<()> {
        match chain.first() {
            Some(p) => copy_tree(&snapshots.join(&p.id).join("fs"), &tmp.join("fs")),
            None => Ok(()),
        }
    }

    fn mounts(&self, snapshots: &Path, info: &Info, _chain: &[Info]) -> Vec<Mount> {
        vec![bind(&snapshots.join(&info.id).join("fs"), info.kind != Kind::Active)]
    }
}

/// Copy a tree with owners, modes, times, symlinks, devices and hard links preserved.
pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let mut links: std::collections::HashMap<(u64, u64), PathBuf> = std::collections::HashMap::new();
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    let mut dirs = Vec::new();
    while let Some((src, dst)) = stack.pop() {
        for e in fs::read_dir(&src).map_err(io_err("listing", &src))?.flatten() {
            let s = e.path();
            let d = dst.join(e.file_name());
            let md = fs::symlink_metadata(&s).map_err(io_err("stat", &s))?;
            let ft = md.file_type();
            if !ft.is_dir() && md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    fs::hard_link(first, &d).map_err(io_err("linking", &d))?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), d.clone());
            }
            if ft.is_dir() {
                fs::create_dir(&d).map_err(io_err("creating", &d))?;
                stack.push((s, d.clone()));
                dirs.push((d, md));
                continue;
            } else if ft.is_symlink() {
                let t = fs::read_link(&s).map_err(io_err("reading link", &s))?;
                std::os::unix::fs::symlink(t, &d).map_err(io_err("creating", &d))?;
            } else if ft.is_file() {
                fs::copy(&s, &d).map_err(io_err("copying", &s))?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc_s_ifmt());
                nix::sys::stat::mknod(&d, kind, nix::sys::stat::Mode::from_bits_truncate(md.mode()), md.rdev())
                    .map_err(|e| io_err("creating", &d)(e.into()))?;
            } else {
                continue; // sockets are not copied
            }
            set_meta(&d, &md)?;
        }
    }
    // Directories last (children change their times) and deepest first.
    for (d, md) in dirs.iter().rev() {
        set_meta(d, md)?;
    }
    Ok(())
}

const fn libc_s_ifmt() -> u32 {
    0o170000
}

fn set_meta(p: &Path, md: &fs::Metadata) -> Result<()> {
    let err = |e: nix::Error| io_err("setting metadata of", p)(e.into());
    nix::unistd::fchownat(nix::fcntl::AT_FDCWD, p, Some(md.uid().into()), Some(md.gid().into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(err)?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(p, fs::Permissions::from_mode(md.mode() & 0o7777)).map_err(io_err("chmod", p))?;
    }
    let t = |s: i64, n: i64| nix::sys::time::TimeSpec::new(s, n);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t(md.atime(), md.atime_nsec()),
        &t(md.mtime(), md.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(err)
}
