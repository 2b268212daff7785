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
    assert_eq!((v["ApiVersion"].as_str(), v["MinAPIVersion"].as_str(), v["Os"].as_str()), (Some("1.41"), Some("1.24"), Some("linux")));
    let (status, body) = d.request("GET", "/info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["DockerRootDir"], d.dir.path().join("data").display().to_string());
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
    assert!(body.contains("client version 1.99 is too new. Maximum supported API version is 1.41"), "{body}");
    assert!(d.request("GET", "/v1.12/version").1.contains("too old"));
}

#[test]
fn the_docker_cli_talks_to_berthd() {
    if !is_root() || !have("docker") {
        return;
    }
    let d = TestDaemon::start();
    let r = d.docker(&["version", "--format", "{{.Server.APIVersion}} {{.Server.Platform.Name}}"]).success();
    assert_eq!(r.stdout.trim(), "1.41 berth");
    let r = d.docker(&["info", "--format", "{{.OSType}} {{.CgroupDriver}}"]).success();
    assert_eq!(r.stdout.trim(), "linux cgroupfs");
    // Not built yet: a clear error, not a wrong answer.
    assert!(d.docker(&["pull", "busybox"]).failure().stderr.contains("not implemented yet"));
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
