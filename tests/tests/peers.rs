//! Other engines using berth-runc as their OCI runtime.

use std::process::Command;

use berth_tests::{bin, busybox_rootfs, have, is_root, run_command};

/// podman with private storage (vfs, temp dirs), so nothing of the host's podman is touched.
struct Podman {
    root: tempfile::TempDir,
    runroot: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            root: tempfile::Builder::new().prefix("berth-podman-root-").tempdir().unwrap(),
            runroot: tempfile::Builder::new().prefix("berth-podman-run-").tempdir().unwrap(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root").arg(self.root.path()).arg("--runroot").arg(self.runroot.path());
        c.args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
        c.arg("--runtime").arg(bin("berth-runc"));
        c
    }

    /// `podman run` with the limits this host needs (root here lacks CAP_SYS_RESOURCE).
    fn run(&self, extra: &[&str]) -> berth_tests::Run {
        let mut c = self.cmd();
        c.args(["run", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]).args(extra);
        run_command(&mut c)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        run_command(self.cmd().args(["rm", "--all", "--force"]));
        run_command(self.cmd().args(["system", "reset", "--force"]));
    }
}

#[test]
fn podman_runs_execs_and_stops_containers_through_berth_runc() {
    if !is_root() || !have("podman") {
        return;
    }
    let p = Podman::new();
    let tar = p.root.path().join("busybox.tar");
    run_command(Command::new("tar").arg("-C").arg(busybox_rootfs()).arg("-cf").arg(&tar).arg(".")).success();
    run_command(p.cmd().arg("import").arg(&tar).arg("localhost/berth-busybox:test")).success();

    let r = p.run(&["--rm", "localhost/berth-busybox:test", "sh", "-c", "grep -E '^Seccomp:' /proc/self/status; echo $$"]).success();
    assert_eq!(r.stdout, "Seccomp:\t2\n1\n");
    assert_eq!(p.run(&["--rm", "localhost/berth-busybox:test", "sh", "-c", "exit 42"]).code, 42);
    let r = p.run(&["--rm", "localhost/berth-busybox:test", "no-such-command"]);
    assert_eq!(r.code, 127, "{r:#?}");
    assert!(r.stderr.contains("executable file not found"), "{}", r.stderr);

    let id = p.run(&["-d", "localhost/berth-busybox:test", "sleep", "300"]).success().stdout.trim().to_string();
    let r = run_command(p.cmd().args(["exec", &id, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"])).success();
    assert_eq!(r.stdout.trim(), "sleep 300");
    let r = run_command(p.cmd().args(["exec", "-t", &id, "tty"])).success();
    assert!(r.stdout.contains("/dev/pts/"), "{}", r.stdout);
    run_command(p.cmd().args(["stop", "-t", "1", &id])).success();
    let r = run_command(p.cmd().args(["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", &id])).success();
    assert_eq!(r.stdout.trim(), "exited 137");
    run_command(p.cmd().args(["rm", &id])).success();
}
