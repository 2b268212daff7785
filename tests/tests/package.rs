//! The Debian package (scripts/build-deb.sh; scripts/test.sh builds it from the test binaries
//! into target/deb): installed into a scratch root with `dpkg -x`, its files, control data and
//! scripts checked, its systemd units passed through `systemd-analyze verify`, and the packaged
//! berthd started as berth.socket starts it (socket activation, `-H fd://`) with the docker CLI
//! talking to it through the socket.

use berth_tests::{have, in_ci, run_command, skip};
use std::path::{Path, PathBuf};
use std::process::Command;

fn package() -> Option<PathBuf> {
    let dir = berth_tests::bin_dir().parent().map(|t| t.join("deb"))?;
    let found = std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb"));
    if found.is_none() {
        assert!(!in_ci(), "scripts/test.sh builds the package into {}", dir.display());
        skip("no package in target/deb (scripts/build-deb.sh target/debug makes one)");
    }
    found
}

fn field(deb: &Path, name: &str) -> String {
    run_command(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).success().stdout.trim().to_string()
}

#[test]
fn the_package_installs_its_files_scripts_and_units() {
    let Some(deb) = package() else { return };
    assert_eq!(field(&deb, "Package"), "berth");
    assert!(field(&deb, "Depends").contains("libseccomp2"));
    let root = tempfile::tempdir().unwrap();
    run_command(Command::new("dpkg").arg("-x").arg(&deb).arg(root.path())).success();
    let r = root.path();
    for f in [
        "usr/bin/berthd",
        "usr/bin/berth",
        "usr/bin/berth-shim",
        "usr/bin/berth-runc",
        "usr/bin/berth-init",
        "lib/systemd/system/berth.service",
        "lib/systemd/system/berth.socket",
        "etc/berth/daemon.json",
        "usr/share/bash-completion/completions/berth",
        "usr/share/zsh/vendor-completions/_berth",
        "usr/share/fish/vendor_completions.d/berth.fish",
        "usr/share/man/man1/berth.1.gz",
        "usr/share/man/man1/berth-run.1.gz",
        "usr/share/man/man1/berth-update.1.gz",
        "usr/share/man/man8/berthd.8.gz",
    ] {
        assert!(r.join(f).is_file(), "{f} is in the package");
    }
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(r.join("etc/berth/daemon.json")).unwrap()).expect("daemon.json is JSON");
    // The completions know the commands and their flags.
    let bash = std::fs::read_to_string(r.join("usr/share/bash-completion/completions/berth")).unwrap();
    assert!(bash.contains("--health-cmd") && bash.contains("update"));
    let service = std::fs::read_to_string(r.join("lib/systemd/system/berth.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/berthd -H fd://") && service.contains("KillMode=process"), "{service}");
    let socket = std::fs::read_to_string(r.join("lib/systemd/system/berth.socket")).unwrap();
    assert!(socket.contains("ListenStream=/run/berth/berth.sock") && socket.contains("SocketGroup=berth"), "{socket}");
    // The maintainer scripts: the berth group, the conffile.
    let ctrl = tempfile::tempdir().unwrap();
    run_command(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctrl.path())).success();
    assert!(std::fs::read_to_string(ctrl.path().join("postinst")).unwrap().contains("groupadd --system berth"));
    assert_eq!(std::fs::read_to_string(ctrl.path().join("conffiles")).unwrap().trim(), "/etc/berth/daemon.json");
    for s in ["postinst", "prerm", "postrm"] {
        run_command(Command::new("sh").arg("-n").arg(ctrl.path().join(s))).success();
    }

    // The units verify (with the packaged berthd where the unit names /usr/bin/berthd, which
    // this machine need not have).
    if have("systemd-analyze") {
        let units = tempfile::tempdir().unwrap();
        let berthd = r.join("usr/bin/berthd");
        std::fs::write(units.path().join("berth.service"), service.replace("/usr/bin/berthd", &berthd.to_string_lossy())).unwrap();
        std::fs::write(units.path().join("berth.socket"), &socket).unwrap();
        let v = run_command(
            Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(units.path().join("berth.service"))
                .arg(units.path().join("berth.socket")),
        );
        assert_eq!(v.code, 0, "systemd-analyze verify: {v:?}");
    } else {
        skip("systemd-analyze is not installed: the units were not verified");
    }
}

#[test]
fn the_packaged_berthd_serves_the_socket_it_is_handed() {
    let Some(deb) = package() else { return };
    if !berth_tests::is_root() || !have("systemd-socket-activate") || !have("docker") {
        if in_ci() {
            panic!("CI has root, systemd-socket-activate and the docker CLI");
        }
        skip("needs root, systemd-socket-activate and the docker CLI");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    run_command(Command::new("dpkg").arg("-x").arg(&deb).arg(root.path())).success();
    let work = tempfile::Builder::new().prefix("berth-pkg-").tempdir().unwrap();
    let sock = work.path().join("berth.sock");
    // As systemd does for berth.socket: the socket made first, berthd handed it (`-H fd://`).
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&sock)
        .arg(root.path().join("usr/bin/berthd"))
        .args(["-H", "fd://", "--data-root"])
        .arg(work.path().join("data"))
        .arg("--exec-root")
        .arg(work.path().join("exec"))
        .arg("--config-file")
        .arg(work.path().join("daemon.json"))
        .args(["--cgroup-parent", "berth-test-pkg", "--bridge", "berth-tpkg"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("berthd.log")).unwrap());
    let mut child = berth_tests::spawn_own(&mut cmd).unwrap();
    berth_tests::wait_until("the socket", || sock.exists());
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", sock.display())).args(args);
        run_command(&mut c)
    };
    // The first request starts berthd on the socket systemd made.
    let v = docker(&["version", "--format", "{{.Server.Platform.Name}}"]);
    let log = || std::fs::read_to_string(work.path().join("berthd.log")).unwrap_or_default();
    assert_eq!(v.code, 0, "{v:?}\n{}", log());
    assert_eq!(v.stdout.trim(), "berth");
    assert_eq!(docker(&["ps", "-q"]).success().stdout, "");
    assert_eq!(docker(&["info", "--format", "{{.InitBinary}}"]).success().stdout.trim(), "berth-init");
    // berthd (systemd-socket-activate execs it: the child is berthd) stops on SIGTERM.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", log());
}
