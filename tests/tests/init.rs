//! `--init` through berthd with the docker CLI: berth-init is pid 1 and runs the program, reaps
//! the orphans a program leaves (where a program as pid 1 leaves zombies), passes signals on (a
//! `stop` ends a program that ignores SIGTERM as pid 1 at once), exits with the program's code;
//! daemon.json's `init` makes it the default; `info` names it.

use berth_tests::{TestDaemon, json, wait_until};

/// The states of the container's processes, as `ps` shows them inside it.
fn states(d: &TestDaemon, name: &str) -> String {
    d.docker(&["exec", name, "ps", "-o", "stat,args"]).success().stdout
}

#[test]
fn init_runs_the_program_reaps_orphans_and_passes_signals() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let ps = d.docker(&["run", "--rm", "--network", "none", "--init", "busybox", "ps", "-o", "pid,args"]).success().stdout;
    let pid1 = ps.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap_or_default().to_string();
    assert!(pid1.contains("/sbin/docker-init -- ps -o pid,args"), "{ps}");
    assert_eq!(d.docker(&["run", "--rm", "--network", "none", "--init", "busybox", "sh", "-c", "exit 5"]).code, 5);
    let missing = d.docker(&["run", "--rm", "--network", "none", "--init", "busybox", "no-such-program"]);
    assert_eq!(missing.code, 127, "{missing:?}");
    assert!(missing.stderr.contains("no-such-program") || missing.stdout.contains("no-such-program"), "{missing:?}");

    // An orphan: reparented to pid 1 when its parent exits, a zombie once it ends unless pid 1 reaps.
    let orphan = "(sleep 0.3 &); exec sleep 300";
    d.docker(&["run", "-d", "--name", "bare", "--network", "none", "busybox", "sh", "-c", orphan]).success();
    d.docker(&["run", "-d", "--name", "inited", "--network", "none", "--init", "busybox", "sh", "-c", orphan]).success();
    wait_until("the zombie under a program that never reaps", || states(&d, "bare").lines().any(|l| l.trim_start().starts_with('Z')));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let s = states(&d, "inited");
    assert!(!s.lines().any(|l| l.trim_start().starts_with('Z')), "reaped by berth-init: {s}");

    // `sleep` as pid 1 ignores SIGTERM (the kernel's rule for pid 1); under berth-init it gets it.
    let t = std::time::Instant::now();
    d.docker(&["stop", "-t", "10", "inited"]).success();
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "stopped by the forwarded SIGTERM: {:?}", t.elapsed());
    let c = json(&d.docker(&["inspect", "inited"]).success().stdout)[0].clone();
    assert_eq!((c["State"]["ExitCode"].as_i64(), c["HostConfig"]["Init"].as_bool()), (Some(143), Some(true)));
    assert_eq!(d.docker(&["info", "--format", "{{.InitBinary}}"]).success().stdout.trim(), "berth-init");
    d.docker(&["rm", "-f", "bare", "inited"]).success();
}

#[test]
fn daemon_json_init_makes_it_the_default() {
    if !berth_tests::is_root() {
        return;
    }
    let d = TestDaemon::start_with_config(r#"{"init": true}"#);
    d.import_busybox();
    let pid1 = |args: &[&str]| {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "cat", "/proc/1/cmdline"]);
        d.docker(&a).success().stdout.replace('\0', " ")
    };
    assert!(pid1(&[]).starts_with("/sbin/docker-init -- cat"), "{}", pid1(&[]));
    assert!(pid1(&["--init=false"]).starts_with("cat /proc/1/cmdline"), "{}", pid1(&["--init=false"]));
}
