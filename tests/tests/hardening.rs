//! What an attacker or a careless client could do to the host through berth, and what an operator
//! relies on: sysctls that would reach the host, requests that create accepts and start would
//! refuse, waiting requests that outlive what they wait for, stray cgroup mounts, blobs nobody
//! references, unbounded connections.

use std::time::{Duration, Instant};

use berth_tests::{Bundle, Runtime, TestDaemon, is_root, json, wait_until};
use serde_json::Value;

fn containers(d: &TestDaemon) -> Vec<Value> {
    let (s, b) = d.request("GET", "/containers/json?all=1");
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

/// A host sysctl, to compare before and after.
fn host_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).unwrap_or_else(|e| panic!("{key}: {e}")).trim().to_string()
}

/// Puts a host sysctl back if a test changed it, so a failing test does not leave the host
/// changed; the test asserts it was never changed.
struct Restore(&'static str, String);
impl Drop for Restore {
    fn drop(&mut self) {
        if host_sysctl(self.0) != self.1 {
            let _ = std::fs::write(format!("/proc/sys/{}", self.0.replace('.', "/")), &self.1);
        }
    }
}

/// A value the key does not have now (so a write of it would show).
fn other_value(current: &str) -> String {
    let n: i64 = current.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (n + 1).to_string()
}

#[test]
fn sysctls_of_the_host_are_refused_at_create_and_never_change() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for (key, host_config) in [
        ("vm.dirty_expire_centisecs", r#"{}"#),
        ("kernel.panic", r#"{}"#),
        ("kernel.panic", r#"{"Privileged":true}"#),
        ("net.ipv4.tcp_keepalive_probes", r#"{"NetworkMode":"host"}"#),
        ("kernel.shmmni", r#"{"IpcMode":"host"}"#),
        ("kernel.domainname", r#"{"UTSMode":"host"}"#),
    ] {
        let before = host_sysctl(key);
        let _restore = Restore(key, before.clone());
        let mut hc = json(host_config);
        hc["Sysctls"] = serde_json::json!({key: other_value(&before)});
        let body = serde_json::json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": hc}).to_string();
        let (s, b) = d.post("/containers/create", &body);
        assert_eq!(s, 400, "{key} with {host_config}: {b}");
        assert!(json(&b)["message"].as_str().unwrap_or("").contains(key), "{b}");
        assert_eq!(host_sysctl(key), before, "{key} changed on the host");
    }
    assert!(containers(&d).is_empty(), "a refused create made a container");
    // A namespaced key in the container's own namespace is set there, and only there.
    let key = "net.ipv4.ip_forward";
    let before = host_sysctl(key);
    let _restore = Restore(key, before.clone());
    let want = if before == "1" { "0" } else { "1" };
    let out = d.berth(&["run", "--rm", "--sysctl", &format!("{key}={want}"), "busybox", "cat", "/proc/sys/net/ipv4/ip_forward"]).success();
    assert_eq!(out.stdout.trim(), want);
    assert_eq!(host_sysctl(key), before);
    // A container joining a host-networked container's network is on the host's network.
    let (s, b) = d.post("/containers/create?name=hostnet", r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"NetworkMode":"host"}}"#);
    assert_eq!(s, 201, "{b}");
    let body = format!(
        r#"{{"Image":"busybox","Cmd":["true"],"HostConfig":{{"NetworkMode":"container:hostnet","Sysctls":{{"{key}":"{want}"}}}}}}"#
    );
    let (s, b) = d.post("/containers/create", &body);
    assert_eq!(s, 400, "{b}");
}

#[test]
fn berth_runc_refuses_sysctls_that_would_reach_the_host() {
    if !is_root() {
        return;
    }
    let rt = Runtime::new();
    let key = "vm.dirty_expire_centisecs";
    let before = host_sysctl(key);
    let _restore = Restore(key, before.clone());
    let mut b = Bundle::new(&["true"]);
    b.spec["linux"]["sysctl"] = serde_json::json!({key: other_value(&before)});
    b.save();
    let id = rt.id("sysctl");
    let r = rt.run(&id, &b).failure();
    assert!(r.stderr.contains("is not in a separate kernel namespace"), "{r:?}");
    assert_eq!(host_sysctl(key), before);
    // The network namespace is the host's when the spec has none.
    let key = "net.ipv4.tcp_keepalive_probes";
    let before = host_sysctl(key);
    let _restore = Restore(key, before.clone());
    let mut b = Bundle::new(&["true"]);
    b.spec["linux"]["sysctl"] = serde_json::json!({key: other_value(&before)});
    let ns: Vec<Value> = b.spec["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] != "network").cloned().collect();
    b.spec["linux"]["namespaces"] = Value::Array(ns.clone());
    b.save();
    let r = rt.run(&rt.id("hostnet"), &b).failure();
    assert!(r.stderr.contains("host's network namespace"), "{r:?}");
    // Joining the host's namespace by path is the host's namespace too.
    let mut joined = ns;
    joined.push(serde_json::json!({"type": "network", "path": "/proc/1/ns/net"}));
    b.spec["linux"]["namespaces"] = Value::Array(joined);
    b.save();
    if std::fs::metadata("/proc/1/ns/net").ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        == std::fs::metadata("/proc/self/ns/net").ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    {
        let r = rt.run(&rt.id("joined"), &b).failure();
        assert!(r.stderr.contains("host's network namespace"), "{r:?}");
    }
    assert_eq!(host_sysctl(key), before);
}

#[test]
fn what_start_would_refuse_is_refused_at_create_and_makes_nothing() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for (host_config, message) in [
        (r#"{"Binds":["/tmp:/"]}"#, "destination can't be '/'"),
        (r#"{"Binds":["/tmp:relative"]}"#, "mount path must be absolute"),
        (r#"{"Binds":["x:y:bogus"]}"#, "invalid mode: bogus"),
        (r#"{"Devices":[{"PathOnHost":"/dev/null","PathInContainer":"/dev/n","CgroupPermissions":"rwx"}]}"#, "invalid device mode"),
        (r#"{"Ulimits":[{"Name":"nofile","Soft":20,"Hard":10}]}"#, "soft limit must be less than or equal"),
        (r#"{"Ulimits":[{"Name":"bogus","Soft":1,"Hard":1}]}"#, "invalid ulimit type"),
        (r#"{"CgroupParent":"../../escape"}"#, "invalid cgroup parent"),
        (r#"{"ShmSize":-1}"#, "SHM size can not be less than 0"),
        (r#"{"NetworkMode":"container:missing"}"#, "No such container: missing"),
        (r#"{"PidMode":"container:missing"}"#, "No such container: missing"),
        (r#"{"LogConfig":{"Type":"json-file","Config":{"max-size":"huge"}}}"#, "huge"),
    ] {
        let body = format!(r#"{{"Image":"busybox","Cmd":["true"],"HostConfig":{host_config}}}"#);
        let (s, b) = d.post("/containers/create", &body);
        // 400 for all, as dockerd answers a missing container:X: a 404 from create sends the
        // docker CLI off to pull the image.
        assert_eq!(s, 400, "{host_config}: {b}");
        assert!(json(&b)["message"].as_str().unwrap_or("").contains(message), "{host_config}: {b}");
    }
    // The docker CLI reports the missing container, and does not take it for a missing image.
    if berth_tests::have("docker") {
        let r = d.docker(&["create", "--network", "container:nope", "busybox", "true"]).failure();
        assert!(r.stderr.contains("No such container: nope") && !r.stderr.contains("Unable to find image"), "{r:?}");
    }
    assert!(containers(&d).is_empty(), "a refused create made a container");
    let records = std::fs::read_dir(d.dir.path().join("data/containers")).unwrap().count();
    assert_eq!(records, 0, "a refused create left a record");
    wait_until("no layer left", || {
        std::fs::read_dir(d.dir.path().join("data/image/snapshots"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count()
            == 1
    });
}

/// A mount made for a test, unmounted when it ends (also when it fails).
struct TestMount(std::path::PathBuf);
impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_stray_read_only_cgroup_mount_is_not_where_cgroups_are_made() {
    if !is_root() {
        return;
    }
    let memory = std::path::Path::new("/sys/fs/cgroup/memory");
    if !memory.join("memory.limit_in_bytes").exists() {
        berth_tests::skip(&format!("no v1 memory hierarchy at {} on this host", memory.display()));
        return;
    }
    // Another engine's container, or a test, bind-mounts a whole hierarchy read-only elsewhere.
    let dir = tempfile::Builder::new().prefix("berth-stray-cgroup-").tempdir().unwrap();
    use nix::mount::MsFlags;
    nix::mount::mount(Some(memory), dir.path(), None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    let _mounted = TestMount(dir.path().to_path_buf());
    nix::mount::mount(None::<&str>, dir.path(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .unwrap();
    // Started after the mount exists, as berthd and its shims would be on such a host.
    let Some(d) = TestDaemon::with_busybox() else { return };
    let out = d.berth(&["run", "--rm", "-m", "64m", "busybox", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]).success();
    assert_eq!(out.stdout.trim(), (64u64 << 20).to_string());
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    rt.run(&rt.id("stray"), &b).success();
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// berthd's open descriptors once they stop changing (the last shim reaped, the standby made).
fn steady_fds(d: &TestDaemon) -> usize {
    let mut last = open_fds(d.pid());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let n = open_fds(d.pid());
        if n == last {
            return n;
        }
        last = n;
    }
}

/// berthd's open descriptors once they are down to `at_most`, or after 10 s.
fn settled_fds(d: &TestDaemon, at_most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = open_fds(d.pid());
        if n <= at_most || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn waiting_attaches_are_let_go_when_the_start_fails_or_the_client_hangs_up() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.berth(&["run", "--rm", "busybox", "true"]).success();
    let fds0 = steady_fds(&d);
    // `run --rm` of a command that does not exist: the start fails, the container goes, and the
    // attach that waited for its start goes with it.
    let mut tools = vec!["berth"];
    if berth_tests::have("docker") {
        tools.push("docker");
    }
    for tool in &tools {
        for _ in 0..15 {
            let r = if *tool == "docker" {
                d.docker(&["run", "--rm", "busybox", "nosuch"])
            } else {
                d.berth(&["run", "--rm", "busybox", "nosuch"])
            };
            assert_eq!(r.code, 127, "{tool}: {r:?}");
        }
        let fds = settled_fds(&d, fds0);
        assert!(fds <= fds0, "{tool}: berthd holds {fds} descriptors, {fds0} before");
    }
    // A client attached to a created container that hangs up before any start.
    let id = json(&d.post("/containers/create?name=never", r#"{"Image":"busybox","Cmd":["true"]}"#).1)["Id"].as_str().unwrap().to_string();
    for _ in 0..10 {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
        write!(
            s,
            "POST /containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
    }
    let fds = settled_fds(&d, fds0);
    assert!(fds <= fds0, "hung-up attaches: berthd holds {fds} descriptors, {fds0} before");
    // Long polls on a container that keeps running, whose clients hang up.
    d.berth(&["run", "-d", "--name", "long", "busybox", "sleep", "600"]).success();
    let fds0 = steady_fds(&d);
    for request in ["POST /containers/long/wait", "GET /containers/long/logs?follow=1&stdout=1"] {
        for _ in 0..10 {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
            write!(s, "{request} HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
            // In flight: its answer has begun (the headers), its body waits.
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200", "{request}");
        }
    }
    let fds = settled_fds(&d, fds0);
    assert!(fds <= fds0, "hung-up waits and log follows: berthd holds {fds} descriptors, {fds0} before");
    // Input sent before the start still reaches the container.
    let mut c = std::process::Command::new(berth_tests::bin("berth"));
    c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).args(["run", "-i", "--rm", "busybox", "cat"]);
    let out = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(b"early\n").unwrap();
    let out = {
        let mut out = out;
        drop(out.stdin.take());
        out.wait_with_output().unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), "early\n");
}

/// Connect and send `head` (maybe nothing, maybe half a request).
fn connect(d: &TestDaemon, head: &str) -> std::os::unix::net::UnixStream {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Has berthd closed this connection (EOF) within `within`?
fn closed_within(s: &mut std::os::unix::net::UnixStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn connections_are_bounded_in_number_and_in_idle_time() {
    if !is_root() {
        return;
    }
    let d = TestDaemon::start_with_config(r#"{"api-max-connections": 8, "api-header-timeout": 1}"#);
    d.import_busybox();
    // A long poll outlives the header timeout: it is answered when its container exits.
    let (s, b) = d.post("/containers/create?name=slow", r#"{"Image":"busybox","Cmd":["sleep","3"]}"#);
    assert_eq!(s, 201, "{b}");
    assert_eq!(d.request("POST", "/containers/slow/start").0, 204);
    let mut wait = connect(&d, "POST /containers/slow/wait HTTP/1.1\r\nHost: b\r\n\r\n");
    // Idle and half-sent connections fill the other slots ...
    let mut idle: Vec<_> = (0..4).map(|_| connect(&d, "")).collect();
    idle.extend((0..3).map(|_| connect(&d, "GET /_ping HTTP/1.1\r\nHost: b\r\n")));
    std::thread::sleep(Duration::from_millis(200));
    // ... so the next one waits, unanswered, ...
    let mut waiting = connect(&d, "GET /_ping HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    waiting.set_nonblocking(true).unwrap();
    let unanswered = std::io::Read::read(&mut waiting, &mut [0u8; 64]).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(unanswered, "the ninth connection was served while eight were held");
    waiting.set_nonblocking(false).unwrap();
    // ... until the header timeout closes them (the waiting one is then served).
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(5)), "an idle connection was kept");
    }
    assert!(closed_within(&mut waiting, Duration::from_secs(5)));
    // The wait was never cut off: it answers with the exit status once the container exits.
    use std::io::Read;
    wait.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("StatusCode") {
        let n = wait.read(&mut buf).expect("the long poll was answered");
        assert!(n > 0, "the long poll was closed unanswered: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(d.request("GET", "/_ping").1.contains("OK"));
}

fn blobs(d: &TestDaemon) -> usize {
    std::fs::read_dir(d.dir.path().join("data/image/content/blobs/sha256")).unwrap().count()
}

/// `du --apparent-size` of the files under `dir` (hard links once), without directories' own
/// sizes: what Docker, and berth, count as the size of a layer.
fn du_files(dir: &std::path::Path) -> u64 {
    let du = std::process::Command::new("du").args(["-s", "--apparent-size", "--block-size=1"]).arg(dir).output().unwrap();
    assert!(du.status.success(), "{du:?}");
    let all: u64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap().parse().unwrap();
    let dirs = std::process::Command::new("find").arg(dir).args(["-type", "d", "-printf", "%s\n"]).output().unwrap();
    let dirs: u64 = String::from_utf8_lossy(&dirs.stdout).lines().map(|l| l.parse::<u64>().unwrap()).sum();
    all - dirs
}

#[test]
fn blobs_no_image_uses_are_collected_and_df_counts_what_is_on_disk() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let archive = d.dir.path().join("busybox.tar");
    d.berth(&["save", "-o", archive.to_str().unwrap(), "busybox"]).success();
    // A loaded image keeps its config, manifest and layer, not the archive's own files.
    d.berth(&["rmi", "busybox"]).success();
    assert_eq!(blobs(&d), 0, "rmi left blobs");
    d.berth(&["load", "-i", archive.to_str().unwrap()]).success();
    assert_eq!(blobs(&d), 3);
    d.berth(&["rmi", "busybox"]).success();
    assert_eq!(blobs(&d), 0, "rmi of a loaded image left blobs");
    // What a crash leaves (a blob and an ingest of a load whose process is gone) is collected
    // when berthd starts again.
    d.berth(&["load", "-i", archive.to_str().unwrap()]).success();
    let stray = d.dir.path().join("data/image/content/blobs/sha256").join("0".repeat(64));
    std::fs::write(&stray, b"a blob a killed load stored").unwrap();
    // An ingest's directory is named by the sha256 of its name.
    let name = "load-999999999.1-0";
    let hash = std::process::Command::new("sh").args(["-c", &format!("printf %s {name} | sha256sum")]).output().unwrap();
    let hash = String::from_utf8_lossy(&hash.stdout).split_whitespace().next().unwrap().to_string();
    let ingest = d.dir.path().join("data/image/content/ingest").join(hash);
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(ingest.join("ref"), name).unwrap();
    std::fs::write(ingest.join("data"), b"half").unwrap();
    std::fs::write(ingest.join("lock"), b"").unwrap();
    let mut d = d;
    d.kill9();
    d.launch();
    assert!(!stray.exists(), "an unreferenced blob survived the restart");
    assert!(!ingest.exists(), "an abandoned ingest survived the restart");
    assert_eq!(blobs(&d), 3);
    // df: the layers and blobs on disk, as du counts them, and each container's own layer.
    d.berth(&["run", "--name", "writer", "busybox", "sh", "-c", "head -c 12345 /dev/zero > /big; echo x > /etc/y"]).success();
    let df = json(&d.request("GET", "/system/df").1);
    let snapshots = d.dir.path().join("data/image/snapshots");
    let mut layers = 0;
    let mut container_layer = None;
    for e in std::fs::read_dir(&snapshots).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if e.path().join("active.json").exists() || e.path().join("ephemeral.json").exists() {
            container_layer = Some(du_files(&e.path().join("fs")));
        } else {
            layers += du_files(&e.path().join("fs"));
        }
    }
    let on_disk = layers + du_files(&d.dir.path().join("data/image/content/blobs"));
    assert_eq!(df["LayersSize"].as_u64(), Some(on_disk), "{df}");
    assert_eq!(df["Containers"][0]["SizeRw"].as_u64(), container_layer, "{df}");
    assert!(container_layer.unwrap_or(0) >= 12345);
}
