//! Mounting what a snapshotter returns.

use super::*;

impl Mount {
    /// This overlay mount with `volatile`: no sync reaches the upper layer, and unmounting does
    /// not sync the whole file system under it. Only for a layer that is thrown away rather than
    /// mounted again after a crash of the machine. None for other kinds of mount.
    pub fn volatile(&self) -> Option<Mount> {
        if self.typ != "overlay" || self.options.iter().any(|o| o == "volatile") {
            return None;
        }
        let mut v = self.clone();
        v.options.push("volatile".into());
        Some(v)
    }

    /// This overlay with `dir` as its lowest layer, under every other, if the options still fit
    /// in a page. None for other kinds of mount, or a `dir` that cannot go in the options.
    pub fn with_lowest(&self, dir: &Path) -> Option<Mount> {
        let dir = dir.to_str().filter(|d| d.starts_with('/') && !d.contains([':', ',', '\\']))?;
        if self.typ != "overlay" {
            return None;
        }
        let mut m = self.clone();
        let lower = m.options.iter_mut().find(|o| o.starts_with("lowerdir="))?;
        lower.push(':');
        lower.push_str(dir);
        (m.options.join(",").len() < PAGE_SIZE).then_some(m)
    }

    /// This mount read-only, leaving the layer's upper and work directories alone: an
    /// overlay's upper joins its lowers, a bind is made `ro`. For reading a layer that may be
    /// mounted for writing elsewhere (a copy out of a stopped container). None when the
    /// options would no longer fit in a page.
    pub fn read_only(&self) -> Option<Mount> {
        let mut m = self.clone();
        if self.typ != "overlay" {
            m.options.push("ro".into());
            return Some(m);
        }
        let upper = self.options.iter().find_map(|o| o.strip_prefix("upperdir="));
        let lower = self.options.iter().find_map(|o| o.strip_prefix("lowerdir="));
        let lowers = match (upper, lower) {
            (Some(u), Some(l)) => format!("{u}:{l}"),
            (Some(u), None) => u.to_string(),
            (None, Some(l)) => l.to_string(),
            (None, None) => return None,
        };
        m.options = vec![format!("lowerdir={lowers}"), "ro".into()];
        (m.options.join(",").len() < PAGE_SIZE).then_some(m)
    }

    /// Perform this mount on `target`. Relative option paths are resolved from `cwd` by a
    /// thread with its own working directory (unshare(CLONE_FS)), so the process's is untouched.
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        if self.cwd.is_none() {
            return self.mount_here(target);
        }
        let target = target.to_path_buf();
        let m = self.clone();
        std::thread::spawn(move || m.mount_here(&target)).join().map_err(|_| io::Error::other("mount thread panicked"))?
    }

    /// [`Mount::mount`] from this thread (which changes its working directory for a `cwd`).
    fn mount_here(&self, target: &Path) -> io::Result<()> {
        use nix::mount::MsFlags;
        let ro = self.options.iter().any(|o| o == "ro");
        if self.typ == "bind" {
            nix::mount::mount(Some(&self.source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
            if ro {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
            }
            return Ok(());
        }
        let data: Vec<&str> = self.options.iter().map(String::as_str).filter(|o| *o != "ro").collect();
        let flags = if ro { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        if let Some(cwd) = &self.cwd {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(cwd)?;
        }
        // Overlay refuses a work directory that a volatile mount used before (its mark that
        // the layer may be inconsistent after a crash). Only volatile mounts reuse one, and
        // those layers are never mounted after a crash, so the mark goes.
        if self.options.iter().any(|o| o == "volatile")
            && let Some(work) = self.options.iter().find_map(|o| o.strip_prefix("workdir="))
        {
            let _ = std::fs::remove_dir_all(Path::new(work).join("work/incompat/volatile"));
        }
        nix::mount::mount(Some(&self.source), target, Some(self.typ.as_str()), flags, Some(data.join(",").as_str()))?;
        Ok(())
    }
}
