//! Helpers shared by the store's tests.

/// Skip the rest of a test, saying why, and count it where scripts/test.sh asks
/// (`$BERTH_SKIP_LOG`; berth-tests' `skip` does the same for the integration tests).
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIP: {test}: {reason}");
    if let Some(log) = std::env::var_os("BERTH_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log)
    {
        let _ = std::io::Write::write_all(&mut f, format!("{test}: {reason}\n").as_bytes());
    }
}

/// Under CI (`CI=true`) every peer the project's scripts install must be there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Most store tests mount, chown, mknod or set trusted xattrs; elsewhere they say so and skip.
pub fn root_or_skip() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert!(!in_ci(), "CI runs the tests as root");
        skip("this test needs root (mounts, chown, mknod or trusted xattrs)");
    }
    root
}

/// A peer tool scripts/deps.sh installs: skipped without it, a failure under CI.
pub fn have(tool: &str) -> bool {
    let ok = std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!in_ci(), "{tool} is missing: scripts/deps.sh installs it, and CI must run this test");
        skip(&format!("{tool} is not installed"));
    }
    ok
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
