//! Containers through berthd: lifecycle, logs, attach, exec, TTYs, exit codes, signals, restore
//! after kill -9, concurrency and bad input, over the raw API and with the real docker CLI.

use std::time::Duration;

use berth_tests::{TestDaemon, have, json, wait_until};
use serde_json::Value;

fn docker() -> bool {
    have("docker")
}

/// The command lines to check: berth's own always, the docker CLI where installed.
fn clis() -> Vec<&'static str> {
    let mut v = vec!["berth"];
    if docker() {
        v.push("docker");
    }
    v
}

fn cli(d: &TestDaemon, tool: &str, args: &[&str]) -> berth_tests::Run {
    if tool == "docker" { d.docker(args) } else { d.berth(args) }
}

fn create(d: &TestDaemon, name: &str, body: &str) -> String {
    let (s, b) = d.post(&format!("/containers/create?name={name}"), body);
    assert_eq!(s, 201, "{b}");
    json(&b)["Id"].as_str().unwrap().to_string()
}

fn inspect(d: &TestDaemon, id: &str) -> Value {
    let (s, b) = d.request("GET", &format!("/containers/{id}/json"));
    assert_eq!(s, 200, "{b}");
    json(&b)
}

/// Shims of this daemon waiting for a container (started `--standby`, not yet in a bundle).
fn standby_shims(dir: &std::path::Path) -> usize {
    let bundles = dir.join("exec/containers");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .is_ok_and(|c| c.contains("berth-shim") && c.contains("--standby") && c.contains(&*dir.to_string_lossy()))
                && std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| !cwd.starts_with(&bundles))
        })
        .count()
}

fn mounts_under(dir: &std::path::Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&*dir.to_string_lossy())).count()
}

#[test]
fn lifecycle_over_the_api() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let id = create(&d, "life", r#"{"Image":"busybox","Cmd":["sh","-c","echo out; echo err >&2; exit 3"],"Labels":{"a":"b"}}"#);
    let c = inspect(&d, &id);
    assert_eq!(c["State"]["Status"], "created");
    assert_eq!(c["Name"], "/life");
    assert_eq!(c["Config"]["Labels"]["a"], "b");
    assert_eq!(c["Path"], "sh");
    // wait(next-exit) answers headers at once and its body when the container exits.
    let waiter = {
        let sock = d.socket();
        let id = id.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
            write!(s, "POST /containers/{id}/wait?condition=next-exit HTTP/1.0\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.request("POST", &format!("/containers/{id}/start")).0, 204);
    let r = waiter.join().unwrap();
    assert!(r.contains(r#""StatusCode":3"#), "{r}");
    let c = inspect(&d, &id);
    assert_eq!((c["State"]["Status"].as_str(), c["State"]["ExitCode"].as_i64()), (Some("exited"), Some(3)));
    let (s, logs) = d.request("GET", &format!("/containers/{id}/logs?stdout=1&stderr=1"));
    assert_eq!(s, 200);
    assert_eq!(logs.as_bytes(), b"\x01\0\0\0\0\0\0\x04out\n\x02\0\0\0\0\0\0\x04err\n");
    assert_eq!(d.request("GET", &format!("/containers/{id}/logs?stderr=1")).1.as_bytes(), b"\x02\0\0\0\0\0\0\x04err\n");
    // The json-file log on disk is Docker's format.
    let log = std::fs::read_to_string(c["LogPath"].as_str().unwrap()).unwrap();
    let first = json(log.lines().next().unwrap());
    assert_eq!((first["log"].as_str(), first["stream"].as_str()), (Some("out\n"), Some("stdout")));
    // Restart it, then stop a long one: SIGTERM, then SIGKILL after the timeout.
    // It logs the SIGTERM it gets and goes on: the stop must follow with a SIGKILL (exit 137).
    let sleeper = create(
        &d,
        "sleeper",
        r#"{"Image":"busybox","Cmd":["sh","-c","trap 'echo TERM' TERM; echo ready; while true; do sleep 0.1; done"],"StopTimeout":1}"#,
    );
    assert_eq!(d.request("POST", &format!("/containers/{sleeper}/start")).0, 204);
    assert_eq!(d.request("POST", &format!("/containers/{sleeper}/start")).0, 304, "starting a running container");
    let c = inspect(&d, &sleeper);
    assert_eq!(c["State"]["Running"], true);
    let pid = c["State"]["Pid"].as_i64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let list = json(&d.request("GET", "/containers/json").1);
    assert_eq!(list.as_array().unwrap().len(), 1, "only running ones without all=1");
    assert_eq!(list[0]["Names"][0], "/sleeper");
    wait_until("the trap set", || d.request("GET", &format!("/containers/{sleeper}/logs?stdout=1")).1.contains("ready"));
    assert_eq!(d.request("POST", &format!("/containers/{sleeper}/stop")).0, 204);
    // SIGTERM first (the container saw it), SIGKILL when it did not exit within its timeout.
    assert!(d.request("GET", &format!("/containers/{sleeper}/logs?stdout=1")).1.contains("TERM"));
    assert_eq!(inspect(&d, &sleeper)["State"]["ExitCode"], 137);
    assert_eq!(d.request("POST", &format!("/containers/{sleeper}/stop")).0, 304);
    let all = json(&d.request("GET", "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D").1);
    assert_eq!(all.as_array().unwrap().len(), 1);
    let since = json(&d.request("GET", "/containers/json?all=1&filters=%7B%22since%22%3A%5B%22life%22%5D%7D").1);
    assert_eq!(since.as_array().unwrap().len(), 1, "only sleeper was created after life");
    assert_eq!(since[0]["Names"][0], "/sleeper");
    let before = json(&d.request("GET", "/containers/json?all=1&filters=%7B%22before%22%3A%5B%22life%22%5D%7D").1);
    assert_eq!(before.as_array().unwrap().len(), 0);
    assert_eq!(d.request("POST", &format!("/containers/{id}/rename?name=renamed")).0, 204);
    assert_eq!(inspect(&d, "renamed")["Id"], id.as_str());
    for c in [&id, &sleeper] {
        assert_eq!(d.request("DELETE", &format!("/containers/{c}")).0, 204);
    }
    assert_eq!(d.request("GET", &format!("/containers/{id}/json")).0, 404);
    assert_eq!(mounts_under(d.dir.path()), 0, "no rootfs mount is left");
    // The records are renamed away at once and deleted just after the answer.
    assert!(!d.dir.path().join("data/containers").join(&id).exists());
    wait_until("the records deleted", || std::fs::read_dir(d.dir.path().join("data/containers")).unwrap().count() == 0);
}

/// A create makes the bundle of the start that usually follows; a created container that is
/// not started holds no mount for long, and starts just the same later.
#[test]
fn a_bundle_made_ahead_of_a_start_that_does_not_come_is_taken_down() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let bundles = d.dir.path().join("exec/containers");
    let id = create(&d, "later", r#"{"Image":"busybox","Cmd":["cat","/etc/hostname"]}"#);
    wait_until("the bundle made ahead", || bundles.join(&id).join("config.json").exists());
    assert_eq!(mounts_under(d.dir.path()), 1, "its rootfs, mounted ahead");
    wait_until("the bundle taken down", || mounts_under(d.dir.path()) == 0 && !bundles.join(&id).exists());
    assert_eq!(inspect(&d, &id)["State"]["Status"], "created");
    let out = d.berth(&["start", "-a", "later"]).success().stdout;
    assert_eq!(out.trim(), &id[..12]);
    // Removed right after its create: the bundle being made is finished, then taken away.
    let gone = create(&d, "gone", r#"{"Image":"busybox","Cmd":["true"]}"#);
    assert_eq!(d.request("DELETE", &format!("/containers/{gone}")).0, 204);
    wait_until("nothing left of it", || mounts_under(d.dir.path()) == 0 && !bundles.join(&gone).exists());
    d.berth(&["rm", "later"]).success();
    wait_until("no bundle left", || std::fs::read_dir(&bundles).unwrap().count() == 0);
}

#[test]
fn bad_input_gets_dockers_errors_and_leaves_nothing() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let cases: [(&str, &str, u16, &str); 7] = [
        ("/containers/create", "{not json", 400, "invalid JSON"),
        ("/containers/create", r#"{"Image":"busybox","Tty":"yes"}"#, 400, "invalid JSON"),
        ("/containers/create", r#"{"Image":"nosuch"}"#, 404, "No such image: nosuch"),
        ("/containers/create?name=a%20b", r#"{"Image":"busybox","Cmd":["true"]}"#, 400, "Invalid container name"),
        ("/containers/create", r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"CapAdd":["NOPE"]}}"#, 400, "unknown capability"),
        ("/containers/create", r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"SecurityOpt":["bogus"]}}"#, 400, "security-opt"),
        // Docker refuses a relative working directory at create, not at start.
        ("/containers/create?name=relwd", r#"{"Image":"busybox","Cmd":["true"],"WorkingDir":"rel"}"#, 400, "needs to be an absolute path"),
    ];
    for (path, body, status, msg) in cases {
        let (s, b) = d.post(path, body);
        assert_eq!(s, status, "{path} {body}: {b}");
        assert!(b.contains(msg), "{b} lacks {msg}");
        assert!(json(&b)["message"].is_string());
    }
    create(&d, "dup", r#"{"Image":"busybox","Cmd":["sleep","100"]}"#);
    let (s, b) = d.post("/containers/create?name=dup", r#"{"Image":"busybox","Cmd":["true"]}"#);
    assert_eq!(s, 409, "{b}");
    assert!(b.contains(r#"The container name \"/dup\" is already in use"#), "{b}");
    assert_eq!(d.request("POST", "/containers/dup/start").0, 204);
    let (s, b) = d.request("DELETE", "/containers/dup");
    assert_eq!(s, 409);
    assert!(b.contains("You cannot remove a running container"), "{b}");
    // A command that does not exist, a bad user: start fails, nothing keeps running.
    for (name, body, msg) in [
        ("nocmd", r#"{"Image":"busybox","Cmd":["nosuch"]}"#, "executable file not found"),
        ("nouser", r#"{"Image":"busybox","Cmd":["true"],"User":"nobody-here"}"#, "unable to find user nobody-here"),
    ] {
        create(&d, name, body);
        let (s, b) = d.request("POST", &format!("/containers/{name}/start"));
        assert_eq!(s, 400, "{b}");
        assert!(b.contains(msg), "{b}");
        let c = inspect(&d, name);
        assert_eq!(c["State"]["Running"], false);
        assert!(!d.dir.path().join("exec/containers").join(c["Id"].as_str().unwrap()).exists(), "no bundle left");
    }
    assert_eq!(inspect(&d, "nocmd")["State"]["ExitCode"], 127);
    // Only the runtime's failures are the task's; a bad user is the daemon's own error, as in Docker.
    assert!(d.request("POST", "/containers/nocmd/start").1.contains("failed to create task for container: exec"));
    assert!(!d.request("POST", "/containers/nouser/start").1.contains("task"));
    // An auto-remove container that cannot start is removed, and a wait for its removal reports
    // no error (the docker CLI would print it a second time).
    let rm = create(&d, "rmfail", r#"{"Image":"busybox","Cmd":["nosuch"],"HostConfig":{"AutoRemove":true}}"#);
    let (s, b) = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| d.request("POST", &format!("/containers/{rm}/wait?condition=removed")));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(d.request("POST", "/containers/rmfail/start").0, 400);
        waiter.join().unwrap()
    });
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["Error"], Value::Null, "{b}");
    assert_eq!(d.request("GET", "/containers/rmfail/json").0, 404);
    let stopped = create(&d, "stopped", r#"{"Image":"busybox","Cmd":["true"]}"#);
    let (s, b) = d.post(&format!("/containers/{stopped}/exec"), r#"{"Cmd":["true"]}"#);
    assert_eq!(s, 409, "{b}");
    assert!(b.contains("is not running"), "{b}");
    assert_eq!(d.request("POST", "/containers/nosuch/start").0, 404);
    assert_eq!(d.request("POST", "/containers/dup/kill?signal=SIGNOPE").0, 400);
    assert_eq!(d.request("DELETE", "/containers/dup?force=1").0, 204);
    // Only the records of containers that were created remain: no half-made ones (a removed
    // container's record is renamed away at once and deleted just after).
    let records = || {
        std::fs::read_dir(d.dir.path().join("data/containers"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".rm-"))
            .count()
    };
    assert_eq!(records(), 3, "nocmd, nouser, stopped");
}

#[test]
fn the_cli_runs_containers() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for tool in clis() {
        cli_runs_containers(&d, tool);
    }
}

fn cli_runs_containers(d: &TestDaemon, tool: &str) {
    let docker = |args: &[&str]| cli(d, tool, args);
    let r = docker(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hello; echo oops >&2; exit 7"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (7, "hello\n", "oops\n"));
    assert_eq!(docker(&["run", "--rm", "busybox", "nosuch"]).code, 127);
    assert_eq!(docker(&["run", "--rm", "busybox", "/etc"]).code, 126);
    assert_eq!(docker(&["run", "--rm", "busybox", "true"]).code, 0);
    assert_eq!(docker(&["ps", "-aq"]).success().stdout, "", "--rm removed them all");
    // Each container gets its own network namespace with lo up (made ahead by the standby
    // shim); --network host shares ours.
    let host = std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy().into_owned();
    let probe = "readlink /proc/self/ns/net; ip link show lo";
    let a = docker(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", probe]).success().stdout;
    let b = docker(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", probe]).success().stdout;
    let (a_ns, b_ns) = (a.lines().next().unwrap_or(""), b.lines().next().unwrap_or(""));
    assert!(a_ns.starts_with("net:[") && a_ns != host && a_ns != b_ns, "{a_ns} {b_ns} {host}");
    assert!(a.contains("<LOOPBACK,UP,LOWER_UP>") && b.contains("<LOOPBACK,UP,LOWER_UP>"), "{a}{b}");
    let h = docker(&["run", "--rm", "--network", "host", "busybox", "readlink", "/proc/self/ns/net"]).success().stdout;
    assert_eq!(h.trim(), host);
    let fwd = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_fwd = fwd();
    let set = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox",
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!((set.success().stdout.as_str(), fwd()), ("1\n", host_fwd), "a net sysctl lands in the container's namespace only");
    // Docker's defaults inside: hostname = short ID, 14 capabilities, seccomp filter, /etc files.
    // Through the tool under test: berth's own -e, -w, -u and the init files, as the docker CLI's.
    let r = docker(&[
        "run", "--name", "probe", "-e", "A=1", "-w", "/tmp/x", "-u", "1:2", "busybox", "sh", "-c",
        "hostname; echo $A; pwd; id -u; id -g; grep CapBnd /proc/self/status; grep Seccomp: /proc/self/status; cat /etc/resolv.conf | grep -c 127.0.0; ls /etc/hostname /etc/hosts",
    ])
    .success();
    let lines: Vec<&str> = r.stdout.lines().collect();
    let id = docker(&["inspect", "--format", "{{.Id}}", "probe"]).success().stdout;
    assert_eq!(lines[0], &id.trim()[..12]);
    assert_eq!(&lines[1..5], ["1", "/tmp/x", "1", "2"]);
    assert_eq!(lines[5], "CapBnd:\t00000000a80425fb");
    assert_eq!(lines[6], "Seccomp:\t2");
    assert_eq!(lines[7], "0", "no loopback name servers");
    // The primary group is among the supplementary ones (Docker's fix for CVE-2023-25173).
    assert_eq!(docker(&["run", "--rm", "--group-add", "7", "busybox", "id", "-G"]).success().stdout, "0 7\n");
    assert_eq!(docker(&["run", "--rm", "-u", "1:2", "busybox", "id", "-G"]).success().stdout, "2\n");
    let r = docker(&[
        "run",
        "--rm",
        "--privileged",
        "--read-only",
        "--cap-drop",
        "ALL",
        "busybox",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; touch /x",
    ]);
    assert!(r.stdout.contains("Seccomp:\t0"), "{}", r.stdout);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    // stdin, TTY, exec.
    let mut c = std::process::Command::new(if tool == "docker" { "docker".into() } else { berth_tests::bin("berth") });
    c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).args([
        "run",
        "-i",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "read x; echo got $x",
    ]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got abc\n");
    assert_eq!(docker(&["run", "--rm", "-t", "busybox", "tty"]).success().stdout, "/dev/pts/0\r\n");
    docker(&["run", "-d", "--name", "web", "-l", "tier=front", "-l", "a=b", "busybox", "sh", "-c", "echo ready; exec sleep 100"]).success();
    wait_until("web's log", || docker(&["logs", "web"]).stdout == "ready\n");
    assert_eq!(docker(&["exec", "web", "sh", "-c", "echo in; exit 4"]).code, 4);
    assert_eq!(docker(&["exec", "web", "cat", "/proc/1/cmdline"]).success().stdout, "sleep\x00100\x00");
    assert_eq!(docker(&["exec", "-t", "web", "tty"]).success().stdout, "/dev/pts/0\r\n");
    assert_eq!(docker(&["exec", "web", "nosuch"]).code, 127);
    // An exec's user brings its own HOME (the container's was root's).
    assert_eq!(docker(&["exec", "-u", "nobody", "web", "sh", "-c", "echo $HOME"]).success().stdout, "/nonexistent\n");
    docker(&["exec", "-d", "web", "touch", "/made-by-detached-exec"]).success();
    wait_until("the detached exec", || docker(&["exec", "web", "ls", "/made-by-detached-exec"]).code == 0);
    let top = docker(&["top", "web"]).success().stdout;
    assert!(top.contains("sleep 100"), "{top}");
    let ps = docker(&["ps", "--format", "{{.Names}} {{.Status}}"]).success().stdout;
    assert!(ps.starts_with("web Up"), "{ps}");
    let ps = docker(&["ps", "--no-trunc", "--format", "{{.Command}}"]).success().stdout;
    assert_eq!(ps, "\"sh -c 'echo ready; exec sleep 100'\"\n", "arguments with spaces quoted, as Docker lists them");
    let ps = docker(&["ps", "--format", "{{.Labels}}|{{.Image}}|{{.State}}"]).success().stdout;
    assert_eq!(ps, "a=b,tier=front|busybox|running\n");
    // Docker's filters: names are regular expressions; the network and volume filters.
    let names = |f: &str| docker(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"]).success().stdout;
    assert_eq!(names("name=^we.$"), "web\n");
    assert_eq!(names("name=^eb"), "");
    assert_eq!(names("network=bridge"), "web\nprobe\n", "the default network is Docker's bridge");
    assert_eq!(names("network=none"), "");
    assert_eq!(names("health=none"), "web\nprobe\n");
    let ps = docker(&["ps"]).success().stdout;
    let header: Vec<&str> = ps.lines().next().unwrap_or("").split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], "{ps}");
    assert!(ps.lines().nth(1).is_some_and(|row| row.ends_with(" web") && row.contains(" Up ")), "{ps}");
    assert_eq!(docker(&["ps", "--no-such-flag"]).code, 125, "a usage error");
    // Docker's management-command names for the same things.
    assert_eq!(docker(&["container", "ls", "--format", "{{.Names}}"]).success().stdout, "web\n");
    assert_eq!(docker(&["container", "inspect", "-f", "{{.Name}}", "web"]).success().stdout, "/web\n");
    assert!(docker(&["container", "inspect", "busybox"]).stderr.contains("No such container: busybox"));
    assert!(docker(&["image", "ls", "--format", "{{.Repository}}"]).success().stdout.contains("busybox\n"));
    assert!(docker(&["image", "inspect", "web"]).stderr.contains("No such image: web"));
    assert_eq!(docker(&["container", "exec", "web", "echo", "in"]).success().stdout, "in\n");
    assert!(!docker(&["system", "info", "--format", "{{.ServerVersion}}"]).success().stdout.trim().is_empty());
    // pid 1 without a handler never sees TERM; KILL always works.
    assert_eq!(docker(&["kill", "-s", "KILL", "web"]).code, 0);
    assert_eq!(docker(&["wait", "web"]).success().stdout.trim(), "137");
    assert_eq!(docker(&["rm", "web", "probe"]).code, 0, "{tool}");
}

/// `-m`, `--cpus`, `--pids-limit`, `--device`, `--oom-score-adj`, `--add-host`, `--dns`,
/// `--tmpfs`, `--mount` reach the container; bad values and what berth cannot do yet are refused
/// at create, before anything exists.
#[test]
fn resource_limits_devices_dns_and_mounts_reach_the_container() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    // v1 files, or v2's, whichever this host has.
    let probe = "cd /sys/fs/cgroup; for f in memory/memory.limit_in_bytes memory.max cpu/cpu.cfs_quota_us cpu.max pids/pids.max pids.max; \
                 do [ -f $f ] && cat $f; done; cat /proc/self/oom_score_adj; ls /dev/fuse; tail -n 1 /etc/hosts; cat /etc/resolv.conf; \
                 grep -E ' /(run|b) ' /proc/self/mountinfo | cut -d' ' -f5,6";
    let src = tempfile::tempdir().unwrap();
    let bind = format!("type=bind,src={},dst=/b,readonly", src.path().display());
    for tool in clis() {
        let r = cli(
            &d,
            tool,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-m",
                "10m",
                "--cpus",
                "0.5",
                "--pids-limit",
                "20",
                "--oom-score-adj",
                "100",
                "--device",
                "/dev/fuse",
                "--add-host",
                "db:10.1.2.3",
                "--dns",
                "1.1.1.1",
                "--dns-search",
                "a.test",
                "--tmpfs",
                "/run:size=1m",
                "--mount",
                &bind,
                "busybox",
                "sh",
                "-c",
                probe,
            ],
        )
        .success();
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "10485760", "{tool}: {}", r.stdout);
        assert!(lines[1] == "50000" || lines[1] == "50000 100000", "{tool}: {}", r.stdout);
        assert_eq!(&lines[2..6], ["20", "100", "/dev/fuse", "10.1.2.3\tdb"], "{tool}: {}", r.stdout);
        assert_eq!(&lines[6..8], ["search a.test", "nameserver 1.1.1.1"], "{tool}: {}", r.stdout);
        assert!(lines.contains(&"/run rw,nosuid,nodev,noexec,relatime") && lines.contains(&"/b ro,relatime"), "{tool}: {}", r.stdout);
        // Docker's checks, at create: nothing is made.
        let r = cli(&d, tool, &["run", "--rm", "-m", "1k", "busybox", "true"]);
        assert_eq!(r.code, 125);
        assert!(r.stderr.contains("Minimum memory limit allowed is 6MB"), "{}", r.stderr);
        let r = cli(&d, tool, &["run", "--rm", "--cpus", "4096", "busybox", "true"]);
        assert!(r.stderr.contains("Range of CPUs is from 0.01"), "{}", r.stderr);
        assert_eq!(cli(&d, tool, &["ps", "-aq"]).success().stdout, "", "no container was made");
    }
    // The memory limit holds: a container that needs more is killed by the OOM killer.
    let r = d.berth(&[
        "run",
        "--name",
        "oom",
        "--network",
        "none",
        "-m",
        "8m",
        "busybox",
        "sh",
        "-c",
        "a=$(head -c 40000000 /dev/zero | tr '\\0' a)",
    ]);
    assert_eq!(r.code, 137, "{}", r.stderr);
    assert_eq!(d.berth(&["inspect", "--format", "{{.State.OOMKilled}} {{.HostConfig.Memory}}", "oom"]).success().stdout, "true 8388608\n");
    d.berth(&["rm", "oom"]).success();
}

/// A terminal is detached from (ctrl-p ctrl-q) and attached to again, more than once, with the
/// berth and docker CLIs: input still reaches the shell after a detach, `attach` reports the
/// detach as the docker CLI does (exit 1), `start -ai` detaches silently, and an exit ends the
/// session with the container's code.
#[test]
fn terminals_detach_and_attach_again() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let script = r##"
import os, pty, sys, time, select
tool = sys.argv[1]
def session(args, inputs, expect):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(tool, [tool] + args)
    buf = b""
    def read_until(token, limit=10):
        nonlocal buf
        end = time.time() + limit
        while token not in buf and time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    buf += os.read(fd, 4096)
                except OSError:
                    break
    read_until(b"#", 1)
    for i in inputs:
        os.write(fd, i)
        time.sleep(0.2)
    read_until(expect)
    # A session that does not end is a failure to report, not a test that hangs.
    end = time.time() + 10
    while time.time() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            read_until(b"\0", 0.2)
            return os.waitstatus_to_exitcode(status), buf
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung", buf
code, _ = session(["run", "-it", "--name", "term", "busybox", "sh"], [b"\x10\x11"], b"\0")
print("run", code)
code, out = session(["attach", "term"], [b"echo $((2*3))x\r", b"\x10\x11"], b"read escape sequence")
print("attach", code, b"6x" in out, b"read escape sequence" in out)
code, out = session(["attach", "term"], [b"echo $((3*3))y\r", b"exit 7\r"], b"\0")
print("again", code, b"9y" in out)
os.system(tool + " create -it --name term2 busybox sh >/dev/null")
code, out = session(["start", "-ai", "term2"], [b"\x10\x11"], b"\0")
print("start", code, b"escape" in out)
"##;
    for tool in clis() {
        let path = if tool == "docker" { "docker".to_string() } else { berth_tests::bin("berth").to_string_lossy().into_owned() };
        let r = berth_tests::run_command(
            std::process::Command::new("python3")
                .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
                .args(["-c", script, &path]),
        );
        assert_eq!(r.stdout, "run 0\nattach 1 True True\nagain 7 True\nstart 0 False\n", "{tool}: {}", r.stderr);
        assert_eq!(d.berth(&["inspect", "-f", "{{.State.Running}}", "term2"]).success().stdout, "true\n", "{tool}");
        d.berth(&["rm", "-f", "term", "term2"]).success();
    }
}

/// `container prune`, `image prune`, `system df`, and a clear 501 for Docker's endpoints berth
/// does not serve yet, with the berth and docker CLIs.
#[test]
fn prune_df_and_what_is_not_there_yet() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for tool in clis() {
        let docker = |args: &[&str]| cli(&d, tool, args);
        docker(&["create", "--name", "kept", "-l", "keep=1", "busybox", "true"]).success();
        docker(&["run", "--name", "done", "busybox", "sh", "-c", "echo data > /f"]).success();
        docker(&["run", "-d", "--name", "up", "busybox", "sleep", "100"]).success();
        let r = docker(&["container", "prune", "-f", "--filter", "label!=keep"]).success();
        let done = d.request("GET", "/containers/kept/json").1;
        assert!(r.stdout.starts_with("Deleted Containers:\n") && r.stdout.contains("Total reclaimed space: 5B"), "{tool}: {}", r.stdout);
        assert!(done.contains("kept"), "{done}");
        let left = docker(&["ps", "-a", "--format", "{{.Names}}"]).success().stdout;
        assert_eq!(left, "up\nkept\n", "{tool}: running and label-kept containers stay");
        let df = docker(&["system", "df"]).success().stdout;
        let row = |t: &str| df.lines().find(|l| l.starts_with(t)).unwrap_or("").split_whitespace().skip(1).take(2).collect::<Vec<_>>();
        assert_eq!((row("Images"), row("Containers")), (vec!["1", "1"], vec!["2", "1"]), "{tool}: {df}");
        docker(&["rm", "-f", "up", "kept"]).success();
        assert!(docker(&["image", "prune", "-f"]).success().stdout.contains("Total reclaimed space: 0B"), "no dangling image");
        // What is kept up to `until` (a moment from now), then the end.
        let until = format!("{:.3}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() + 0.5);
        let r = docker(&["events", "--since", "1h", "--until", &until, "--filter", "event=destroy"]);
        assert!(r.code == 0 && r.stdout.contains("container destroy"), "{tool} events: {r:?}");
    }
}

/// The berth CLI prints what the docker CLI prints, byte for byte (tables padded as Go's
/// tabwriter pads them, Docker's size units and precisions).
#[test]
fn berth_prints_what_the_docker_cli_prints() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    if !docker() {
        return;
    }
    d.berth(&["run", "-d", "--name", "same", "-l", "k=v", "busybox", "sh", "-c", "echo out; sleep 100"]).success();
    d.berth(&["create", "--name", "made", "busybox", "true"]).success();
    for args in [
        &["ps", "-a", "--format", "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.Ports}}\t{{.Names}}"][..],
        &["ps", "-a", "-q"],
        &["ps", "--format", "{{.Names}} {{.Labels}} {{.State}}"],
        &["images"],
        &["images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"],
        &["history", "--format", "table {{.ID}}\t{{.Size}}\t{{.Comment}}", "busybox"],
        &["history", "--format", "{{.CreatedAt}} {{.CreatedBy}}", "busybox"],
        &["ps", "-a", "--format", "{{.CreatedAt}}"],
        &["images", "--format", "{{.CreatedAt}}"],
        &["top", "same"],
        &["system", "df"],
        &["inspect", "-f", "{{.Name}} {{.Config.Labels}} {{.HostConfig.NetworkMode}}", "same"],
        &["logs", "same"],
    ] {
        // "2 seconds ago" columns change every second: the docker CLI's output must equal
        // berth's just before or just after it (a second's boundary falls in one gap at most).
        let (b, k) = (d.berth(args), d.docker(args));
        let same = |b: &berth_tests::Run| (b.code, &b.stdout, &b.stderr) == (k.code, &k.stdout, &k.stderr);
        if !same(&b) {
            let after = d.berth(args);
            assert_eq!((after.code, &after.stdout, &after.stderr), (k.code, &k.stdout, &k.stderr), "{args:?} (before: {b:?})");
        }
    }
}

/// stats: CPU, memory against the limit, pids, as the docker CLI computes them from berthd's
/// samples; a stream of samples; zeros for a stopped container.
#[test]
fn stats_report_the_cgroups_usage() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.berth(&["run", "-d", "--name", "busy", "-m", "64m", "busybox", "sh", "-c", "while true; do :; done"]).success();
    for tool in clis() {
        let r = cli(&d, tool, &["stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}", "busy"]).success();
        let f: Vec<&str> = r.stdout.split_whitespace().collect();
        let cpu: f64 = f[1].trim_end_matches('%').parse().unwrap_or(0.0);
        assert!(f[0] == "busy" && cpu > 20.0 && f[4] == "64MiB" && f[5] == "1", "{tool}: {}", r.stdout);
    }
    let (s, b) = d.request("GET", "/containers/busy/stats?stream=0&one-shot=1");
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert!(v["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap_or(0) > 0 && v["memory_stats"]["limit"] == 64 << 20, "{v}");
    // Block I/O from the cgroup, network counters from the container's namespace. (cgroup v1
    // counts block I/O only on a device with a throttle set, and buffered writes are the
    // flusher's: a throttle far above the rate, and direct I/O. dockerd shows the same.)
    let io = "dd if=/dev/zero of=/written bs=1M count=8 oflag=direct 2>/dev/null; \
              ping -c 2 -W 1 $(ip route | awk '/default/ {print $3}') >/dev/null; touch /done; sleep 300";
    let dev = berth_tests::run_command(std::process::Command::new("findmnt").args(["-n", "-o", "SOURCE", "--target"]).arg(d.dir.path()));
    let dev = dev.stdout.trim().to_string();
    let block = std::fs::metadata(&dev).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    let throttle = format!("{dev}:1gb");
    let mut args = vec!["run", "-d", "--name", "io"];
    if block {
        args.extend_from_slice(&["--device-write-bps", &throttle]);
    }
    args.extend_from_slice(&["busybox", "sh", "-c", io]);
    d.berth(&args).success();
    wait_until("the writes and pings", || d.berth(&["exec", "io", "test", "-e", "/done"]).code == 0);
    let v = json(&d.request("GET", "/containers/io/stats?stream=0&one-shot=1").1);
    let written: u64 = v["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .unwrap_or_else(|| panic!("block I/O: {v}"))
        .iter()
        .filter(|e| e["op"].as_str().is_some_and(|o| o.eq_ignore_ascii_case("write")))
        .map(|e| e["value"].as_u64().unwrap_or(0))
        .sum();
    if block {
        assert!(written >= 8 << 20, "8 MiB written past the page cache: {}", v["blkio_stats"]);
    } else {
        berth_tests::skip(&format!("the test's data is not on a block device ({dev}): block I/O not checked"));
    }
    let eth0 = &v["networks"]["eth0"];
    assert!(eth0["tx_packets"].as_u64().unwrap_or(0) >= 2 && eth0["rx_bytes"].as_u64().unwrap_or(0) > 0, "{}", v["networks"]);
    let r = d.docker(&["stats", "--no-stream", "--format", "{{.NetIO}} {{.BlockIO}}", "io"]).success().stdout;
    assert!(!r.starts_with("0B / 0B") && (!block || r.contains("MB")), "{r}");
    let busy = json(&d.request("GET", "/containers/busy/stats?stream=0&one-shot=1").1);
    assert!(busy["networks"]["eth0"].is_object());
    d.berth(&["rm", "-f", "io"]).success();
    // A stream: a sample a second, each with the one before as precpu_stats.
    let mut sock = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    std::io::Write::write_all(&mut sock, b"GET /containers/busy/stats HTTP/1.0\r\nHost: berth\r\n\r\n").unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sock)).map_while(Result::ok).filter(|l| l.starts_with('{'));
    let (first, second) = (json(&lines.next().unwrap()), json(&lines.next().unwrap()));
    assert_eq!(second["precpu_stats"]["cpu_usage"], first["cpu_stats"]["cpu_usage"]);
    d.berth(&["stop", "-t", "0", "busy"]).success();
    let v = json(&d.request("GET", "/containers/busy/stats?stream=0&one-shot=1").1);
    assert_eq!((v["memory_stats"].clone(), v["name"].clone()), (serde_json::json!({}), serde_json::json!("/busy")));
}

/// pause freezes every process (nothing is logged meanwhile), exec is refused, unpause thaws;
/// a stop or kill of a paused container thaws it so the signal is handled, as in Docker.
#[test]
fn pause_freezes_and_signals_thaw_it() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for tool in clis() {
        let docker = |args: &[&str]| cli(&d, tool, args);
        let looping = "trap 'echo term; exit 7' TERM; while true; do echo tick; sleep 0.05; done";
        docker(&["run", "-d", "--name", "frozen", "busybox", "sh", "-c", looping]).success();
        wait_until("ticks", || docker(&["logs", "frozen"]).stdout.lines().count() > 2);
        docker(&["pause", "frozen"]).success();
        assert_eq!(docker(&["inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "frozen"]).success().stdout, "paused true\n");
        assert!(docker(&["ps", "--format", "{{.Status}}"]).success().stdout.contains("(Paused)"));
        let before = docker(&["logs", "frozen"]).stdout.lines().count();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(docker(&["logs", "frozen"]).stdout.lines().count(), before, "{tool}: nothing runs while paused");
        assert!(docker(&["exec", "frozen", "true"]).stderr.contains("is paused, unpause the container before exec"));
        assert!(docker(&["pause", "frozen"]).stderr.contains("is already paused"));
        docker(&["unpause", "frozen"]).success();
        wait_until("ticks again", || docker(&["logs", "frozen"]).stdout.lines().count() > before);
        assert!(docker(&["unpause", "frozen"]).stderr.contains("is not paused"));
        docker(&["pause", "frozen"]).success();
        docker(&["stop", "-t", "5", "frozen"]).success();
        let state = docker(&["inspect", "-f", "{{.State.ExitCode}} {{.State.Paused}}", "frozen"]).success().stdout;
        assert_eq!(state, "7 false\n", "{tool}: the TERM trap ran");
        docker(&["rm", "frozen"]).success();
    }
}

#[test]
fn containers_survive_kill_9_of_berthd_and_are_adopted() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    d.berth(&["run", "-d", "--name", "keeps", "busybox", "sh", "-c", "echo one; sleep 100"]).success();
    d.berth(&["run", "-d", "--name", "ends", "busybox", "sh", "-c", "sleep 1; echo bye; exit 7"]).success();
    wait_until("keeps' log", || d.berth(&["logs", "keeps"]).stdout == "one\n");
    let pid = d.berth(&["inspect", "--format", "{{.State.Pid}}", "keeps"]).success().stdout.trim().to_string();
    let dir = d.dir.path().to_path_buf();
    let standby = || standby_shims(&dir) > 0;
    assert!(standby(), "berthd keeps a shim ready for the next start");
    d.kill9();
    wait_until("the standby shim to see berthd gone", || !standby());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the container outlives berthd");
    d.launch();
    let ps = d.berth(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]).success().stdout;
    assert!(ps.contains("keeps Up"), "{ps}");
    assert!(ps.contains("ends Exited (7)"), "the exit while berthd was down is known: {ps}");
    assert_eq!(d.berth(&["logs", "ends"]).success().stdout, "bye\n");
    assert_eq!(d.berth(&["exec", "keeps", "echo", "adopted"]).success().stdout, "adopted\n");
    assert_eq!(d.berth(&["inspect", "--format", "{{.State.Pid}}", "keeps"]).success().stdout.trim(), pid);
    d.berth(&["stop", "-t", "1", "keeps"]).success();
    assert_eq!(d.berth(&["inspect", "--format", "{{.State.ExitCode}}", "keeps"]).success().stdout.trim(), "137");
    // SIGTERM leaves containers running too.
    d.berth(&["start", "keeps"]).success();
    let pid = d.berth(&["inspect", "--format", "{{.State.Pid}}", "keeps"]).success().stdout.trim().to_string();
    assert!(d.stop().is_some_and(|s| s.success()));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    d.launch();
    assert!(d.berth(&["ps", "--format", "{{.Names}}"]).success().stdout.contains("keeps"));
}

#[test]
fn a_removal_cut_short_leaves_a_dead_container_that_rm_clears() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    let id = d.berth(&["create", "--name", "half", "busybox", "true"]).success().stdout.trim().to_string();
    d.kill9();
    // What a crash of the machine between removing the layer and the record leaves behind (the
    // record's not-yet-durable "removing" status lost).
    let driver = if std::fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("overlay") {
        berth_store::images::Driver::Overlay
    } else {
        berth_store::images::Driver::Vfs
    };
    let store = berth_store::images::ImageStore::open(&d.dir.path().join("data/image"), driver).unwrap();
    store.snapshots.remove(&id).unwrap();
    drop(store);
    d.launch();
    let state = d.berth(&["inspect", "--format", "{{.State.Status}} {{.State.Dead}} {{.State.Error}}", "half"]).success().stdout;
    assert!(state.starts_with("dead true its writable layer is gone"), "{state}");
    assert_ne!(d.berth(&["start", "half"]).code, 0);
    d.berth(&["rm", "half"]).success();
    assert!(!d.berth(&["ps", "-a", "--format", "{{.Names}}"]).success().stdout.contains("half"));
    assert!(!d.dir.path().join("data/containers").join(&id).exists());
}

#[test]
fn run_rm_containers_are_ephemeral_and_restore_removes_what_is_left_of_them() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    // Which record names a container's layer: `active.json` (durable) or `ephemeral.json`.
    let record_of = |id: &str| {
        std::fs::read_dir(d.dir.path().join("data/image/snapshots")).unwrap().flatten().find_map(|e| {
            ["active.json", "ephemeral.json"]
                .into_iter()
                .find(|f| std::fs::read_to_string(e.path().join(f)).is_ok_and(|r| json(&r)["key"] == id))
        })
    };
    let id = |name: &str| d.berth(&["inspect", "--format", "{{.Id}}", name]).success().stdout.trim().to_string();
    let running = {
        d.berth(&["run", "-d", "--rm", "--name", "eph", "busybox", "sleep", "100"]).success();
        id("eph")
    };
    let kept = {
        d.berth(&["create", "--name", "kept", "busybox", "true"]).success();
        id("kept")
    };
    assert_eq!(record_of(&running), Some("ephemeral.json"), "a --rm container's layer is not durable");
    assert_eq!(record_of(&kept), Some("active.json"), "other containers' layers are");
    let index = std::fs::read_to_string(d.dir.path().join("data/image/snapshots.json")).unwrap();
    assert!(!index.contains(&running) && !index.contains(&kept), "containers' layers are not in the shared index");

    // A restart stops it without removing it, as Docker does.
    d.berth(&["restart", "-t", "0", "eph"]).success();
    assert!(d.berth(&["ps", "--format", "{{.Names}}"]).success().stdout.contains("eph"));

    d.berth(&["run", "-d", "--rm", "--name", "ends", "busybox", "sleep", "1"]).success();
    let unstarted = d.berth(&["create", "--rm", "--name", "unstarted", "busybox", "true"]).success().stdout.trim().to_string();
    let torn = d.berth(&["create", "--rm", "--name", "torn", "busybox", "true"]).success().stdout.trim().to_string();
    let lost = d.berth(&["create", "--name", "lost", "busybox", "true"]).success().stdout.trim().to_string();
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    // What a crash of the machine can leave of a record written without fsync: an empty file.
    std::fs::write(d.dir.path().join("data/containers").join(&torn).join("container.json"), "").unwrap();
    // A crash between a create's durable layer and its durable record: a layer nothing names.
    std::fs::remove_dir_all(d.dir.path().join("data/containers").join(&lost)).unwrap();
    d.launch();
    let ps = d.berth(&["ps", "-a", "--format", "{{.Names}}"]).success().stdout;
    assert!(ps.contains("eph"), "a running --rm container is adopted: {ps}");
    for gone in ["ends", "unstarted", "torn"] {
        assert!(!ps.lines().any(|l| l == gone), "{gone} was not removed at restore: {ps}");
    }
    for gone in [&unstarted, &torn] {
        assert!(!d.dir.path().join("data/containers").join(gone).exists(), "{gone}'s directory is left");
        // Its bundle, made ahead of a start (kill -9 came first), mounted: gone too.
        assert!(!d.dir.path().join("exec/containers").join(gone).exists(), "{gone}'s bundle is left");
    }
    d.berth(&["stop", "-t", "0", "eph"]).success();
    wait_until("eph's removal", || !d.berth(&["ps", "-a", "--format", "{{.Names}}"]).success().stdout.contains("eph"));
    // Only the kept container's layer and the image's remain.
    let dirs = || std::fs::read_dir(d.dir.path().join("data/image/snapshots")).unwrap().count();
    wait_until("the layers of removed --rm containers deleted", || dirs() == 2);
    d.berth(&["rm", "kept"]).success();
}

#[test]
fn only_auto_removed_containers_get_a_volatile_layer() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let root = |args: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "grep", " / ", "/proc/mounts"]);
        d.berth(&a).success().stdout
    };
    let kept = root(&["--name", "kept"]);
    if !kept.starts_with("overlay ") {
        berth_tests::skip("the snapshot driver is not overlay here");
        return;
    }
    assert!(!kept.contains("volatile"), "{kept}");
    let removed = root(&["--rm"]);
    assert!(removed.contains("volatile"), "{removed}");
    // The layer kept works again after a restart.
    d.berth(&["start", "-a", "kept"]).success();
}

#[test]
fn mount_points_come_from_a_shared_layer_not_the_containers_own() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    // The fixture image has no /etc/hostname, /etc/hosts or /etc/resolv.conf.
    let r = d
        .berth(&[
            "run",
            "--name",
            "mp",
            "--hostname",
            "h1",
            "busybox",
            "sh",
            "-c",
            "cat /etc/hostname; grep -q localhost /etc/hosts && echo hosts",
        ])
        .success();
    assert_eq!(r.stdout, "h1\nhosts\n");
    let root = d.berth(&["run", "--rm", "busybox", "grep", " / ", "/proc/mounts"]).success().stdout;
    if !root.starts_with("overlay ") {
        berth_tests::skip("the snapshot driver is not overlay here");
        return;
    }
    let id = d.berth(&["inspect", "-f", "{{.Id}}", "mp"]).success().stdout.trim().to_string();
    let snapshots = d.dir.path().join("data/image/snapshots");
    let layer = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p.join("active.json")).is_ok_and(|r| r.contains(&id)))
        .expect("the container's writable layer");
    let own: Vec<_> = std::fs::read_dir(layer.join("fs")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(own.is_empty(), "a container that wrote nothing has nothing in its layer: {own:?}");
    // Writes still land in the container's own layer, and a restart finds them.
    d.berth(&["start", "-a", "mp"]).success();
    d.berth(&["rm", "mp"]).success();
    let r = d.berth(&["run", "--name", "mp2", "busybox", "sh", "-c", "echo x > /etc/hostname.new && mkdir /proc2"]).success();
    assert_eq!(r.code, 0);
    let r = d.berth(&["start", "-a", "mp2"]);
    assert_eq!(r.code, 1, "the files it made are still there on its restart: {}", r.stderr);
}

#[test]
fn twenty_concurrent_runs() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let d = std::sync::Arc::new(d);
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let d = std::sync::Arc::clone(&d);
            std::thread::spawn(move || d.berth(&["run", "--rm", "busybox", "echo", &i.to_string()]))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!((r.code, r.stdout.trim()), (0, i.to_string().as_str()), "{}", r.stderr);
    }
    wait_until("--rm removals", || d.berth(&["ps", "-aq"]).stdout.is_empty());
}

#[test]
fn images_over_the_api() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let r = d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).success();
    assert_eq!(r.stdout.trim(), "busybox:latest");
    d.berth(&["tag", "busybox", "example.com/me/box:v1"]).success();
    let id = d.berth(&["inspect", "--format", "{{.Id}}", "busybox"]).success().stdout;
    assert_eq!(d.berth(&["inspect", "--format", "{{.Id}}", "example.com/me/box:v1"]).success().stdout, id);
    // Listed by a reference, an image shows the names that match it only.
    let r = d.berth(&["images", "example.com/me/box", "--format", "{{.Repository}}:{{.Tag}}"]).success();
    assert_eq!(r.stdout, "example.com/me/box:v1\n");
    assert!(d.berth(&["history", "busybox"]).success().stdout.contains("IMAGE"));
    // Docker's sizes: the unpacked content (files, and symlinks' targets), not the tar's length.
    let mut content = 0;
    for e in walk(&berth_tests::busybox_rootfs()) {
        let md = std::fs::symlink_metadata(&e).unwrap();
        if !md.is_dir() {
            content += md.len();
        }
    }
    assert_eq!(d.berth(&["inspect", "--format", "{{.Size}}", "busybox"]).success().stdout.trim(), content.to_string());
    let h: Value = json(&d.request("GET", "/images/busybox/history").1);
    assert_eq!((h[0]["Size"].as_u64(), h[0]["Comment"].as_str()), (Some(content), Some("Imported from -")));
    d.berth(&["create", "--name", "user", "busybox", "true"]).success();
    let r = d.berth(&["rmi", &id.trim()[7..19]]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("conflict"), "{}", r.stderr);
    assert!(d.berth(&["rmi", "example.com/me/box:v1"]).success().stdout.contains("Untagged: example.com/me/box:v1"));
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("bb.tar");
    d.berth(&["save", "-o", tar.to_str().unwrap(), "busybox"]).success();
    d.berth(&["rm", "user"]).success();
    let r = d.berth(&["rmi", "busybox"]).success();
    assert!(r.stdout.contains("Deleted: sha256:"), "{}", r.stdout);
    assert_eq!(d.berth(&["images", "-q"]).success().stdout, "");
    assert!(d.berth(&["load", "-i", tar.to_str().unwrap()]).success().stdout.contains("Loaded image: busybox:latest"));
    assert_eq!(d.berth(&["run", "--rm", "busybox", "echo", "back"]).success().stdout, "back\n");
    assert_eq!(d.berth(&["inspect", "--format", "{{.Id}}", "busybox"]).success().stdout, id, "the same image ID");
}

/// Every path under `dir` (symlinks not followed).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// 500 `run --rm` cycles: nothing is left behind and berthd does not grow.
#[test]
fn soak_500_run_rm_cycles() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    // Warm up (allocator arenas, the seccomp cache), then measure from there.
    for _ in 0..20 {
        d.berth(&["run", "--rm", "busybox", "true"]).success();
    }
    let pid = d.pid();
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    for i in 0..500 {
        let r = d.berth(&["run", "--rm", "busybox", "true"]);
        assert_eq!(r.code, 0, "cycle {i}: {}", r.stderr);
    }
    wait_until("--rm removals", || d.berth(&["ps", "-aq"]).stdout.is_empty());
    // Removed containers' layers are unmounted and their files deleted just after their
    // removal is answered (by a task that holds directory fds meanwhile).
    wait_until("no rootfs mount left", || mounts_under(d.dir.path()) == 0);
    let entries = |p: &str| std::fs::read_dir(d.dir.path().join(p)).unwrap().count();
    wait_until("deleted files", || entries("exec/containers") == 0 && entries("data/containers") == 0);
    let shims = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("cmdline"))
                    .is_ok_and(|c| c.contains(&*d.dir.path().to_string_lossy()) && c.contains("berth-shim"))
            })
            .count()
    };
    // The last containers' shims exit just after their containers' removal was answered.
    wait_until("no container's shim left", || shims().saturating_sub(standby_shims(d.dir.path())) == 0);
    assert!(standby_shims(d.dir.path()) <= 1, "one shim at most waits for the next start");
    // berthd holds a pidfd for each shim until it has reaped it, just after the shim exits.
    wait_until("berthd's fds back where they were", || open_fds(pid) <= fds0);
    let (rss1, fds1) = (rss_kib(pid), open_fds(pid));
    eprintln!("berthd RSS {rss0} KiB -> {rss1} KiB, fds {fds0} -> {fds1}");
    assert!(rss1 <= rss0 + 2048, "berthd grew from {rss0} KiB to {rss1} KiB");
    assert_eq!(
        std::fs::read_dir(d.dir.path().join("exec/runtime"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        0,
        "runtime state"
    );
    // Cgroups are shared by every daemon of a parallel test run: the suite's leak check
    // (scripts/leak-check.sh) compares them before and after all tests.
}

/// docker-py, the Python SDK, against berthd (skipped where `pip install docker` was not run).
#[test]
fn docker_py_works() {
    let probe = std::process::Command::new("python3").args(["-c", "import docker"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(!berth_tests::in_ci(), "docker-py is missing: scripts/deps.sh installs it, and CI must run this test");
        berth_tests::skip("docker-py is not installed (pip install docker)");
        return;
    }
    let Some(d) = TestDaemon::with_busybox() else { return };
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
assert c.ping()
out = c.containers.run("busybox", ["sh", "-c", "echo hello from py"], remove=True)
assert out == b"hello from py\n", out
# A bind as docker-py sends it: in Binds, and its target in Config.Volumes too.
out = c.containers.run("busybox", ["sh", "-c", "cat /v/file; touch /v/no 2>/dev/null || echo read-only"],
                       volumes={sys.argv[2]: {"bind": "/v", "mode": "ro"}}, remove=True)
assert out == b"from the host\nread-only\n", out
ctr = c.containers.run("busybox", ["sleep", "100"], detach=True, name="pyctr", labels={"k": "v"})
assert ctr.status in ("created", "running")
ctr.reload()
assert ctr.status == "running" and ctr.labels == {"k": "v"}
code, output = ctr.exec_run(["sh", "-c", "echo exec; exit 3"])
assert (code, output) == (3, b"exec\n"), (code, output)
assert [x.name for x in c.containers.list(filters={"label": "k=v"})] == ["pyctr"]
ctr.stop(timeout=1)
assert ctr.wait()["StatusCode"] == 137
assert b"" == ctr.logs()
ctr.remove()
assert [t for i in c.images.list() for t in i.tags] == ["busybox:latest"]
print("ok")
"#;
    let host = tempfile::Builder::new().prefix("berth-bind-").tempdir().unwrap();
    std::fs::write(host.path().join("file"), "from the host\n").unwrap();
    let r = berth_tests::run_command(std::process::Command::new("python3").args([
        "-c",
        script,
        &d.socket().to_string_lossy(),
        &host.path().to_string_lossy(),
    ]));
    assert_eq!(r.stdout.trim(), "ok", "{}", r.stderr);
}

#[test]
fn logs_attach_restart_and_an_interactive_terminal() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.berth(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; done; echo warn >&2; sleep 0.5; echo last",
    ])
    .success();
    // -f follows until the container exits, then ends.
    let all = d.berth(&["logs", "-f", "talker"]).success();
    assert_eq!(all.stdout, "line 1\nline 2\nline 3\nline 4\nline 5\nlast\n");
    assert_eq!(all.stderr, "warn\n");
    assert_eq!(d.berth(&["logs", "--tail", "2", "talker"]).success().stdout, "last\n", "tail counts lines of both streams");
    let ts = d.berth(&["logs", "-t", "talker"]).success().stdout;
    let first = ts.lines().next().unwrap();
    assert!(first.ends_with("Z line 1") && first.starts_with("20"), "{first}");
    assert_eq!(d.berth(&["logs", "--since", "0s", "talker"]).success().stdout, "", "nothing newer than now");
    let until = d.berth(&["logs", "--until", "1", "talker"]).success();
    assert_eq!(until.stdout, "", "nothing before 1970");
    assert_eq!(d.berth(&["logs", "--details", "--tail", "1", "talker"]).success().stdout, " last\n", "no attributes: a space");
    // Docker's `none` logging driver: output reaches an attached client, no log is kept.
    let r = d.berth(&["run", "--name", "unlogged", "--log-driver", "none", "busybox", "echo", "seen"]).success();
    assert_eq!(r.stdout, "seen\n");
    let r = d.berth(&["logs", "unlogged"]);
    assert!(r.code != 0 && r.stderr.contains("configured logging driver does not support reading"), "{}", r.stderr);
    let id = d.berth(&["inspect", "-f", "{{.Id}}", "unlogged"]).success().stdout;
    assert!(!d.dir.path().join("data/containers").join(id.trim()).join(format!("{}-json.log", id.trim())).exists());
    let r = d.berth(&["kill", "talker"]);
    assert!(r.stderr.contains("Cannot kill container: talker: Container") && r.stderr.contains("is not running"), "{}", r.stderr);

    // attach to a running container: stdin in, output out, the container's exit code back.
    d.berth(&["run", "-d", "-i", "--name", "reader", "busybox", "sh", "-c", "read x; echo got $x; exit 6"]).success();
    let mut c = std::process::Command::new(berth_tests::bin("berth"));
    c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).args(["attach", "reader"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((String::from_utf8_lossy(&out.stdout).as_ref(), out.status.code()), ("got hi\n", Some(6)));

    // restart: a new process, the same container.
    d.berth(&["run", "-d", "--name", "again", "busybox", "sleep", "100"]).success();
    let pid1 = d.berth(&["inspect", "-f", "{{.State.Pid}}", "again"]).success().stdout;
    d.berth(&["restart", "-t", "0", "again"]).success();
    let after = d.berth(&["inspect", "-f", "{{.State.Pid}} {{.State.Running}}", "again"]).success().stdout;
    assert!(after.trim().ends_with("true") && !after.starts_with(pid1.trim()), "{pid1} -> {after}");

    // run -it on a real terminal: raw mode, a shell, then detach with ctrl-p ctrl-q.
    let script = r##"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "run", "-it", "--name", "tty", "busybox", "sh"])
def read_until(token, limit=10):
    buf, end = b"", time.time() + limit
    while token not in buf and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf
read_until(b"#")
os.write(fd, b"echo $((6*7)); stty size\r")
out = read_until(b"42")
assert b"42" in out, out
os.write(fd, b"\x10\x11")
end, status = time.time() + 10, None
while status is None and time.time() < end:
    done, st = os.waitpid(pid, os.WNOHANG)
    status = st if done else None
    time.sleep(0.05)
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("hung")
else:
    print("detached", os.waitstatus_to_exitcode(status))
"##;
    let r = berth_tests::run_command(
        std::process::Command::new("python3").env("DOCKER_HOST", format!("unix://{}", d.socket().display())).args([
            "-c",
            script,
            &berth_tests::bin("berth").to_string_lossy(),
        ]),
    );
    assert_eq!(r.stdout.trim(), "detached 0", "{}", r.stderr);
    assert_eq!(d.berth(&["inspect", "-f", "{{.State.Running}}", "tty"]).success().stdout.trim(), "true", "detaching leaves it running");
    assert_eq!(d.berth(&["exec", "tty", "echo", "still"]).success().stdout, "still\n");
}
