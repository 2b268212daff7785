//! berthd serving the Docker Engine API: negotiation, errors, the real docker CLI, shutdown.

use berth_tests::{TestDaemon, have, is_root};

#[test]
fn ping_version_and_info_answer_on_the_socket() {
    if !is_root() {
        return;
    }
    let d = TestDaemon::start();
    assert_eq!(d.request("GET", "/_ping"), (200, "OK".to_string()));
    assert_eq!(d.request("HEAD", "/v1.41/_ping").0, 200);
    let (status, body) = d.request("GET", "/v1.24/version");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["ApiVersion"].as_str(), v["MinAPIVersion"].as_str(), v["Os"].as_str()), (Some("1.50"), Some("1.24"), Some("linux")));
    let (status, body) = d.request("GET", "/info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["DockerRootDir"], d.dir.path().join("data").display().to_string());
    // The fields of v1.41's SystemInfo that clients and `docker info` read.
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(info["LiveRestoreEnabled"], true, "containers outlive berthd");
    assert!(info["MemoryLimit"].is_boolean() && info["PidsLimit"].is_boolean() && info["IPv4Forwarding"].is_boolean());
    assert!(info["NFd"].as_u64().is_some_and(|n| n > 0) && info["SystemTime"].as_str().is_some_and(|t| t.starts_with("20")));
    assert_eq!(info["RegistryConfig"]["IndexConfigs"]["docker.io"]["Official"], true);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.socket()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660, "the socket is root's and its group's only");
}

#[test]
fn unknown_endpoints_and_versions_get_dockers_errors() {
    if !is_root() {
        return;
    }
    let d = TestDaemon::start();
    assert_eq!(d.request("GET", "/v1.41/nothing/here"), (404, r#"{"message":"page not found"}"#.to_string()));
    assert_eq!(d.request("GET", "/v1.41/containers/x/json"), (404, r#"{"message":"No such container: x"}"#.to_string()));
    let (status, body) = d.request("GET", "/v1.99/version");
    assert_eq!(status, 400);
    assert!(body.contains("client version 1.99 is too new. Maximum supported API version is 1.50"), "{body}");
    assert!(d.request("GET", "/v1.12/version").1.contains("too old"));
}

#[test]
fn the_docker_cli_talks_to_berthd() {
    if !is_root() || !have("docker") {
        return;
    }
    let d = TestDaemon::start();
    let r = d.docker(&["version", "--format", "{{.Server.APIVersion}} {{.Server.Platform.Name}}"]).success();
    assert_eq!(r.stdout.trim(), "1.50 berth");
    let r = d.docker(&["version", "--format", "{{.Client.APIVersion}}"]).success();
    assert_eq!(r.stdout.trim(), "1.50", "the docker CLI 28 speaks its own version, not downgraded");
    let r = d.docker(&["info", "--format", "{{.OSType}} {{.CgroupDriver}}"]).success();
    assert_eq!(r.stdout.trim(), "linux cgroupfs");
    // Not built yet: a clear error, not a wrong answer.
    let r = d.docker(&["plugin", "ls"]).failure();
    assert!(r.stderr.contains("not implemented yet"), "{r:?}");
}

#[test]
fn sigterm_stops_berthd_and_a_live_socket_is_never_taken_over() {
    if !is_root() {
        return;
    }
    let mut d = TestDaemon::start();
    // A second daemon on the same socket must refuse, leaving the first one serving.
    let second = berth_tests::run_command(
        std::process::Command::new(berth_tests::bin("berthd"))
            .arg("--exec-root")
            .arg(d.dir.path().join("exec"))
            .arg("--data-root")
            .arg(d.dir.path().join("data2"))
            .arg("--pidfile")
            .arg(d.dir.path().join("second.pid"))
            .arg("--config-file")
            .arg(d.dir.path().join("none.json")),
    );
    assert_ne!(second.code, 0);
    assert!(second.stderr.contains("another daemon is listening"), "{}", second.stderr);
    assert_eq!(d.request("GET", "/_ping").0, 200);
    let pid_file = d.dir.path().join("exec/berthd.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), d.pid().to_string());
    let status = d.stop().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket().exists());
    assert!(!pid_file.exists());
}

/// A berthd that is still stopping (here: holding a long poll for up to 2 s after its listener
/// closed) must leave alone the socket and pid file of a berthd started on the same paths
/// meanwhile.
#[test]
fn a_stopping_berthd_leaves_the_next_ones_socket_and_pid_file_alone() {
    if !is_root() {
        return;
    }
    let mut a = TestDaemon::start();
    a.import_busybox();
    a.berth(&["run", "-d", "--name", "waited", "busybox", "sleep", "100"]).success();
    let sock = a.socket();
    let waiter = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
            write!(s, "POST /containers/waited/wait HTTP/1.0\r\nHost: berth\r\n\r\n").unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid()), nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        assert!(std::time::Instant::now() < deadline, "berthd kept answering after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A's listener is closed, its long poll still open: B takes the socket and the pid file.
    let other = tempfile::tempdir().unwrap();
    let pid_file = a.dir.path().join("exec/berthd.pid");
    let mut b = std::process::Command::new(berth_tests::bin("berthd"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .arg("--pidfile")
        .arg(&pid_file)
        .arg("--data-root")
        .arg(other.path().join("data"))
        .arg("--exec-root")
        .arg(other.path().join("exec"))
        .arg("--config-file")
        .arg(other.path().join("none.json"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let b_pid = b.id();
    let serving = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == b_pid.to_string())
            && std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let a_status = a.stop();
    let _ = waiter.join();
    let b_kept = (sock.exists(), std::fs::read_to_string(&pid_file).ok());
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(b_pid as i32), nix::sys::signal::Signal::SIGTERM);
    let b_status = b.wait().unwrap();
    assert!(serving, "the second berthd did not start");
    assert!(a_status.is_some_and(|s| s.success()), "{a_status:?}");
    assert_eq!(b_kept, (true, Some(b_pid.to_string())), "the stopping berthd removed the new one's socket or pid file");
    assert!(b_status.success(), "{b_status:?}");
    assert!(!sock.exists() && !pid_file.exists(), "each removes its own when it stops");
}

/// A SIGTERM the moment berthd's socket appears (as a supervisor or a test may send it) stops
/// it cleanly: exit 0, socket and pid file gone. Before, the handler came after the listeners,
/// and a SIGTERM in between killed berthd with them left behind.
#[test]
fn sigterm_as_soon_as_the_socket_appears_stops_berthd_cleanly() {
    if !is_root() {
        return;
    }
    for _ in 0..5 {
        let dir = tempfile::Builder::new().prefix("berth-daemon-").tempdir().unwrap();
        let mut child = std::process::Command::new(berth_tests::bin("berthd"))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--config-file")
            .arg(dir.path().join("none.json"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let socket = dir.path().join("exec/berth.sock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "berthd never made its socket");
            std::hint::spin_loop();
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let status = child.wait().unwrap();
        assert!(status.success(), "berthd died of the SIGTERM: {status:?}");
        assert!(!socket.exists(), "socket left behind");
        assert!(!dir.path().join("exec/berthd.pid").exists(), "pid file left behind");
    }
}

/// SIGHUP reads daemon.json again and applies what dockerd reloads (registries here), told as a
/// `daemon reload` event; a file that does not parse changes nothing and berthd goes on.
#[test]
fn sighup_reloads_daemon_json() {
    if !is_root() || !have("docker") {
        return;
    }
    let d = TestDaemon::start();
    let info = || d.docker(&["info", "--format", "{{json .RegistryConfig.IndexConfigs}}"]).success().stdout;
    assert!(!info().contains("10.9.8.7:5000"));
    let t0 = format!("{:.3}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 1.0);
    std::fs::write(d.dir.path().join("daemon.json"), r#"{"insecure-registries": ["10.9.8.7:5000"], "max-concurrent-downloads": 5}"#)
        .unwrap();
    let hup = || nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), nix::sys::signal::Signal::SIGHUP).unwrap();
    hup();
    berth_tests::wait_until("the new registry settings", || info().contains("10.9.8.7:5000"));
    let until = format!("{:.3}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64());
    let ev = d
        .docker(&[
            "events",
            "--since",
            &t0,
            "--until",
            &until,
            "--filter",
            "type=daemon",
            "--format",
            "{{.Action}} {{index .Actor.Attributes \"max-concurrent-downloads\"}}",
        ])
        .success()
        .stdout;
    assert_eq!(ev.trim(), "reload 5");
    let id = d.docker(&["info", "--format", "{{.ID}}"]).success().stdout;
    assert!(!id.trim().is_empty());
    // Broken: nothing changes, berthd answers.
    std::fs::write(d.dir.path().join("daemon.json"), "{not json").unwrap();
    hup();
    berth_tests::wait_until("the refusal logged", || d.log().contains("not reloaded"));
    assert!(info().contains("10.9.8.7:5000"));
}
