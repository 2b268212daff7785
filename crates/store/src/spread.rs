//! Spreading a directory's subdirectories over the file system's block groups.
//!
//! ext2/3/4 put a new directory's inode, and so its files', in its parent's block group, unless
//! the parent has the "top directory" flag (`chattr +T`), as `/home` often has: its children are
//! spread over the groups like top-level directories (Orlov). Each container gets directories
//! of its own (its record, its layer, its bundle, its runtime state) and ~20 files in them that
//! go when it goes. Without the flag they all share a group, and on an ext4 without a journal a
//! new inode skips every inode freed there in the last 30 s (one inode table read each): with
//! containers coming and going, a directory and 20 files took 7.1 ms to create, 0.6 ms with it
//! (`bench/`, docs/benchmarks.md). Elsewhere (tmpfs, xfs, btrfs) the flag does not exist and
//! nothing changes.

use std::path::Path;

/// Give `dir` the top-directory flag. False where the file system has no such flag.
pub fn spread_subdirectories(dir: &Path) -> bool {
    let set = || -> rustix::io::Result<()> {
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let flags = rustix::fs::ioctl_getflags(&fd)?;
        if !flags.contains(rustix::fs::IFlags::TOPDIR) {
            rustix::fs::ioctl_setflags(&fd, flags | rustix::fs::IFlags::TOPDIR)?;
        }
        Ok(())
    };
    match set() {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("no top-directory flag on {}: {e}", dir.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_flag_where_the_file_system_has_it() {
        let t = tempfile::tempdir().unwrap();
        let set = spread_subdirectories(t.path());
        let fd = rustix::fs::open(t.path(), rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).unwrap();
        match rustix::fs::ioctl_getflags(&fd) {
            Ok(flags) => assert_eq!(flags.contains(rustix::fs::IFlags::TOPDIR), set, "{flags:?}"),
            Err(_) => assert!(!set, "no flags here, so none set"),
        }
        assert!(spread_subdirectories(t.path()) == set, "setting it again changes nothing");
        assert!(!spread_subdirectories(&t.path().join("missing")));
    }
}
