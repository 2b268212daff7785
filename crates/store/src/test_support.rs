//! Helpers shared by the store's tests.

/// Most store tests mount, chown, mknod or set trusted xattrs; elsewhere they say so and skip.
pub fn root_or_skip() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIP: this test needs root (mounts, chown, mknod or trusted xattrs)");
    }
    root
}

/// A tiny root filesystem as an uncompressed layer tar: `bin/sh` and `etc/marker` = `marker`.
pub fn rootfs_tar(marker: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("bin/sh", "#!fake".as_bytes()), ("etc/marker", marker.as_bytes())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap()
}
