//! Healthchecks through berthd: transitions with the docker CLI (`ps`, `inspect`, the `health`
//! filter, `health_status` events), a hung probe killed at its timeout, bounded output, an
//! image's HEALTHCHECK and `--no-healthcheck`, Docker's errors, probing after berthd is killed
//! and started again, docker-py, and compose's `depends_on: condition: service_healthy`.

use berth_tests::{TestDaemon, json, wait_until};
use serde_json::Value;

fn inspect(d: &TestDaemon, name: &str) -> Value {
    json(&d.docker(&["inspect", name]).success().stdout)[0].clone()
}

fn health(d: &TestDaemon, name: &str) -> Value {
    inspect(d, name)["State"]["Health"].clone()
}

fn status_of(d: &TestDaemon, name: &str) -> String {
    d.docker(&["ps", "-a", "--filter", &format!("name=^{name}$"), "--format", "{{.Status}}"]).success().stdout.trim().to_string()
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn health_goes_starting_unhealthy_healthy_and_is_told() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let t0 = now();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--network",
        "none",
        "--health-cmd",
        "test -e /tmp/ok || { echo missing; exit 1; }",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "300",
    ])
    .success();
    // Nothing probed yet: starting.
    assert!(status_of(&d, "hc").ends_with("(health: starting)"), "{}", status_of(&d, "hc"));
    assert_eq!(d.docker(&["ps", "-q", "--filter", "health=starting"]).success().stdout.lines().count(), 1);
    wait_until("unhealthy after two failures", || health(&d, "hc")["Status"] == "unhealthy");
    let h = health(&d, "hc");
    assert!(h["FailingStreak"].as_i64().unwrap() >= 2, "{h}");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["ExitCode"].as_i64(), last["Output"].as_str()), (Some(1), Some("missing\n")), "{last}");
    assert!(status_of(&d, "hc").ends_with("(unhealthy)"));
    assert_eq!(d.docker(&["ps", "--format", "{{.Names}}", "--filter", "health=unhealthy"]).success().stdout.trim(), "hc");
    assert_eq!(d.docker(&["ps", "-q", "--filter", "health=healthy"]).success().stdout, "");

    d.docker(&["exec", "hc", "touch", "/tmp/ok"]).success();
    wait_until("healthy once the probe passes", || health(&d, "hc")["Status"] == "healthy");
    assert!(status_of(&d, "hc").ends_with("(healthy)"));
    assert_eq!(health(&d, "hc")["FailingStreak"], 0);
    wait_until("five results kept, no more", || health(&d, "hc")["Log"].as_array().unwrap().len() == 5);
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(health(&d, "hc")["Log"].as_array().unwrap().len(), 5);

    // Paused, it is not probed (nor held against it); unpaused, probing goes on.
    d.docker(&["pause", "hc"]).success();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let last_start = |d: &TestDaemon| health(d, "hc")["Log"].as_array().unwrap().last().unwrap()["Start"].clone();
    let before = last_start(&d);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(last_start(&d), before, "no probe while paused");
    assert_eq!(health(&d, "hc")["Status"], "healthy");
    d.docker(&["unpause", "hc"]).success();
    wait_until("probed again once unpaused", || last_start(&d) != before);

    // Each change once, in order; the probes are execs, as Docker tells them.
    let (s, u) = (format!("{t0:.3}"), format!("{:.3}", now()));
    let evs =
        d.docker(&["events", "--since", &s, "--until", &u, "--filter", "event=health_status", "--format", "{{.Action}}"]).success().stdout;
    assert_eq!(evs.lines().collect::<Vec<_>>(), ["health_status: unhealthy", "health_status: healthy"]);
    let probes =
        d.docker(&["events", "--since", &s, "--until", &u, "--filter", "event=exec_start", "--format", "{{.Action}}"]).success().stdout;
    assert!(probes.lines().any(|l| l == "exec_start: /bin/sh -c test -e /tmp/ok || { echo missing; exit 1; }"), "{probes}");

    // A stopped container keeps its last health (and ps stops saying it); a start begins again.
    d.docker(&["stop", "-t", "0", "hc"]).success();
    assert_eq!(health(&d, "hc")["Status"], "healthy");
    assert!(status_of(&d, "hc").starts_with("Exited"), "{}", status_of(&d, "hc"));
    assert_eq!(d.docker(&["ps", "-aq", "--filter", "health=healthy"]).success().stdout.lines().count(), 1);
    d.docker(&["start", "hc"]).success();
    assert_eq!(health(&d, "hc")["Status"], "starting");
    wait_until("healthy again: /tmp/ok is in its layer still", || health(&d, "hc")["Status"] == "healthy");
    d.docker(&["rm", "-f", "hc"]).success();
}

#[test]
fn a_hung_probe_is_killed_at_its_timeout_and_output_is_bounded() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&[
        "run",
        "-d",
        "--name",
        "hung",
        "--network",
        "none",
        "--health-cmd",
        "sleep 77",
        "--health-timeout",
        "300ms",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ])
    .success();
    wait_until("unhealthy by timeouts", || health(&d, "hung")["Status"] == "unhealthy");
    let last = health(&d, "hung")["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["ExitCode"].as_i64(), last["Output"].as_str()), (Some(-1), Some("Health check exceeded timeout (300ms)")));
    wait_until("three probes timed out", || health(&d, "hung")["FailingStreak"].as_i64().unwrap() >= 3);
    // Each probe was killed: at most the one in flight is left.
    let ps = d.docker(&["exec", "hung", "ps", "-o", "args"]).success().stdout;
    assert!(ps.matches("sleep 77").count() <= 1, "{ps}");
    // berthd answers all the while.
    d.docker(&["ps"]).success();

    // Megabytes of output: 4 KiB kept, as Docker.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "loud",
        "--network",
        "none",
        "--health-cmd",
        "yes | head -c 3000000",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "300",
    ])
    .success();
    wait_until("healthy", || health(&d, "loud")["Status"] == "healthy");
    let out = health(&d, "loud")["Log"][0]["Output"].as_str().unwrap().to_string();
    assert_eq!(out.len(), 4096 + 3, "{}", &out[..40]);
    assert!(out.starts_with("y\ny\n") && out.ends_with("..."));
    d.docker(&["rm", "-f", "hung", "loud"]).success();
}

#[test]
fn an_images_healthcheck_is_used_merged_or_turned_off_and_bad_timings_are_refused() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&["create", "--name", "base", "busybox", "true"]).success();
    d.docker(&["commit", "--change", "HEALTHCHECK --interval=200ms --retries=4 CMD [\"true\"]", "base", "checked"]).success();
    d.docker(&["rm", "base"]).success();
    d.docker(&["run", "-d", "--name", "img", "--network", "none", "checked", "sleep", "300"]).success();
    wait_until("healthy by the image's check", || health(&d, "img")["Status"] == "healthy");
    let cfg = inspect(&d, "img")["Config"]["Healthcheck"].clone();
    assert_eq!(
        (cfg["Test"].clone(), cfg["Interval"].as_i64(), cfg["Retries"].as_i64()),
        (serde_json::json!(["CMD", "true"]), Some(200_000_000), Some(4))
    );
    // The container's options win; what it leaves unset comes from the image.
    d.docker(&["create", "--name", "mixed", "--health-cmd", "false", "checked", "sleep", "1"]).success();
    let cfg = inspect(&d, "mixed")["Config"]["Healthcheck"].clone();
    assert_eq!((cfg["Test"].clone(), cfg["Interval"].as_i64()), (serde_json::json!(["CMD-SHELL", "false"]), Some(200_000_000)));
    d.docker(&["run", "-d", "--name", "off", "--network", "none", "--no-healthcheck", "checked", "sleep", "300"]).success();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(health(&d, "off"), Value::Null);
    assert!(status_of(&d, "off").starts_with("Up") && !status_of(&d, "off").contains('('), "{}", status_of(&d, "off"));
    assert_eq!(d.docker(&["ps", "-q", "--filter", "health=none"]).success().stdout.lines().count(), 1);

    let bad = d.docker(&["create", "--health-cmd", "true", "--health-interval", "10us", "busybox", "true"]).failure();
    assert!(bad.stderr.contains("Interval in Healthcheck cannot be less than 1ms"), "{}", bad.stderr);
    let bad = d.post("/containers/create", r#"{"Image":"busybox","Cmd":["true"],"Healthcheck":{"Test":["CMD","true"],"Retries":-1}}"#);
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(bad.1.contains("Retries in Healthcheck cannot be negative"));
    let bad = d.docker(&["ps", "--filter", "health=sick"]).failure();
    assert!(bad.stderr.contains("Unrecognised filter value for health: sick"), "{}", bad.stderr);
    // berth's own CLI takes the same flags.
    let bad = d.berth(&["create", "--no-healthcheck", "--health-cmd", "true", "busybox", "true"]).failure();
    assert!(bad.stderr.contains("--no-healthcheck conflicts with --health-* options"), "{}", bad.stderr);
    d.berth(&[
        "run",
        "-d",
        "--name",
        "mine",
        "--network",
        "none",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "300",
    ])
    .success();
    wait_until("healthy through berth's CLI", || health(&d, "mine")["Status"] == "healthy");
    assert!(d.berth(&["ps", "--format", "{{.Status}}"]).success().stdout.contains("(healthy)"));
    d.docker(&["rm", "-f", "img", "mixed", "off", "mine"]).success();
    d.docker(&["rmi", "checked"]).success();
}

#[test]
fn probing_goes_on_after_berthd_is_killed_and_started_again() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    d.docker(&[
        "run",
        "-d",
        "--name",
        "kept",
        "--network",
        "none",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "300",
    ])
    .success();
    wait_until("unhealthy", || health(&d, "kept")["Status"] == "unhealthy");
    d.kill9();
    d.launch();
    // Adopted: probing again from `starting`, as Docker's restore does.
    d.docker(&["exec", "kept", "touch", "/tmp/ok"]).success();
    wait_until("healthy after the restart of berthd", || health(&d, "kept")["Status"] == "healthy");
    d.docker(&["rm", "-f", "kept"]).success();
}

#[test]
fn docker_py_and_compose_wait_for_health() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let host = format!("unix://{}", d.socket().display());
    if berth_tests::have("python3") {
        let script = r#"
import docker, sys, time
c = docker.DockerClient(base_url=sys.argv[1])
ctr = c.containers.run("busybox", ["sleep", "300"], detach=True, network_mode="none",
                       healthcheck={"test": ["CMD", "true"], "interval": 200_000_000})
for _ in range(100):
    ctr.reload()
    if ctr.attrs["State"].get("Health", {}).get("Status") == "healthy":
        break
    time.sleep(0.1)
print(ctr.attrs["State"]["Health"]["Status"], ctr.attrs["Config"]["Healthcheck"]["Test"])
ctr.remove(force=True)
"#;
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", script, &host]);
        let run = berth_tests::run_command(&mut cmd);
        if run.stderr.contains("No module named 'docker'") {
            berth_tests::skip("docker-py is not installed");
        } else {
            assert_eq!(run.success().stdout.trim(), "healthy ['CMD', 'true']");
        }
    }
    if !berth_tests::have("docker-compose") {
        return;
    }
    let dir = tempfile::Builder::new().prefix("berth-compose-health-").tempdir().unwrap();
    // `app` starts only once `db` is healthy: db turns healthy a second after it starts.
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "version: \"2.4\"\nservices:\n  db:\n    image: busybox\n    network_mode: none\n    command: sh -c \"sleep 1; touch /tmp/ready; sleep 300\"\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-e\", \"/tmp/ready\"]\n      interval: 200ms\n      retries: 30\n  app:\n    image: busybox\n    network_mode: none\n    command: sleep 300\n    depends_on:\n      db:\n        condition: service_healthy\n",
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut c = std::process::Command::new("docker-compose");
        c.current_dir(dir.path()).env("DOCKER_HOST", &host).args(["-p", "hp"]).args(args);
        berth_tests::run_command(&mut c)
    };
    compose(&["up", "-d"]).success();
    let db = inspect(&d, "hp_db_1");
    let app = inspect(&d, "hp_app_1");
    assert_eq!(db["State"]["Health"]["Status"], "healthy");
    // The app started after db's first passing probe.
    let passed = db["State"]["Health"]["Log"].as_array().unwrap().iter().find(|r| r["ExitCode"] == 0).unwrap()["End"].clone();
    let t = |v: &Value| v.as_str().unwrap().to_string();
    assert!(t(&app["State"]["StartedAt"]) > t(&passed), "app {} before db healthy {}", app["State"]["StartedAt"], passed);
    compose(&["down", "-t", "0"]).success();
}
