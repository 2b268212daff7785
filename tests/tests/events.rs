//! Events through berthd: a full lifecycle of containers, execs, images, volumes and networks
//! read back with `docker events --since/--until`, each filter, live streaming, bad filters,
//! berth's CLI and docker-py.

use berth_tests::{TestDaemon, json, run_command};
use serde_json::Value;

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The events between `since` and `until` (Unix seconds), with `filters`, as JSON.
fn events(d: &TestDaemon, since: f64, until: f64, filters: &[&str]) -> Vec<Value> {
    let (s, u) = (format!("{since:.3}"), format!("{until:.3}"));
    let mut args = vec!["events", "--since", &s, "--until", &u, "--format", "{{json .}}"];
    for f in filters {
        args.push("--filter");
        args.push(f);
    }
    d.docker(&args).success().stdout.lines().map(json).collect()
}

fn actions(evs: &[Value]) -> Vec<String> {
    evs.iter().map(|e| format!("{} {}", e["Type"].as_str().unwrap(), e["Action"].as_str().unwrap())).collect()
}

#[test]
fn a_lifecycle_is_told_in_order_and_filters_pick_from_it() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let t0 = now();
    d.docker(&["volume", "create", "evvol"]).success();
    d.docker(&["network", "create", "--subnet", "10.254.77.0/24", "evnet"]).success();
    // pid 1 ignores USR1 (and, as pid 1, TERM): the stop ends with a KILL.
    let id = d
        .docker(&[
            "run",
            "-d",
            "--name",
            "ev1",
            "--label",
            "tier=front",
            "busybox",
            "sh",
            "-c",
            "trap '' USR1; while true; do sleep 1; done",
        ])
        .success()
        .stdout
        .trim()
        .to_string();
    d.docker(&["exec", "ev1", "true"]).success();
    d.docker(&["pause", "ev1"]).success();
    d.docker(&["unpause", "ev1"]).success();
    d.docker(&["network", "connect", "evnet", "ev1"]).success();
    d.docker(&["network", "disconnect", "evnet", "ev1"]).success();
    d.docker(&["rename", "ev1", "ev2"]).success();
    d.docker(&["kill", "-s", "USR1", "ev2"]).success();
    d.docker(&["stop", "-t", "1", "ev2"]).success();
    d.docker(&["commit", "ev2", "evimg:1"]).success();
    d.docker(&["tag", "evimg:1", "evimg:2"]).success();
    d.docker(&["rmi", "evimg:2"]).success();
    d.docker(&["rm", "ev2"]).success();
    d.docker(&["rmi", "evimg:1"]).success();
    d.docker(&["network", "rm", "evnet"]).success();
    d.docker(&["volume", "rm", "evvol"]).success();
    let t1 = now();
    let all = events(&d, t0, t1, &[]);
    let got = actions(&all);
    let want = [
        "volume create",
        "network create",
        "container create",
        "container start",
        "container exec_create: true ",
        "container exec_start: true ",
        "container exec_die",
        "container pause",
        "container unpause",
        "network connect",
        "network disconnect",
        "container rename",
        "container kill",
        "container kill",
        "container die",
        "container stop",
        "container commit",
        "image tag",
        "image untag",
        "container destroy",
        "image untag",
        "image delete",
        "network destroy",
        "volume destroy",
    ];
    // In this order (a stop's SIGKILL may follow its SIGTERM: kills are counted loosely).
    let mut it = got.iter();
    for w in want {
        assert!(it.any(|g| g == w), "{w:?} in order in {got:#?}");
    }
    let by = |action: &str| all.iter().find(|e| e["Action"] == action).unwrap_or_else(|| panic!("{action} in {got:#?}")).clone();
    let start = by("start");
    assert_eq!((start["Actor"]["ID"].as_str(), start["Actor"]["Attributes"]["name"].as_str()), (Some(id.as_str()), Some("ev1")));
    assert_eq!(
        (start["Actor"]["Attributes"]["image"].as_str(), start["Actor"]["Attributes"]["tier"].as_str()),
        (Some("busybox"), Some("front"))
    );
    assert_eq!(
        (start["scope"].as_str(), start["status"].as_str(), start["from"].as_str()),
        (Some("local"), Some("start"), Some("busybox"))
    );
    assert!(start["timeNano"].as_i64().unwrap() / 1_000_000_000 == start["time"].as_i64().unwrap());
    assert_eq!(by("kill")["Actor"]["Attributes"]["signal"], "10");
    assert_eq!(by("die")["Actor"]["Attributes"]["exitCode"], "137", "{:?}", by("die"));
    assert_eq!(by("exec_die")["Actor"]["Attributes"]["exitCode"], "0");
    assert_eq!(by("rename")["Actor"]["Attributes"]["oldName"], "/ev1");
    // Its network first at its start (the default bridge here), as Docker tells it.
    let first_connect = by("connect");
    assert_eq!(first_connect["Actor"]["Attributes"]["container"], id.as_str());
    assert_eq!(first_connect["Actor"]["Attributes"]["name"], "bridge", "{first_connect}");
    let at = |pred: &dyn Fn(&Value) -> bool| all.iter().position(pred).unwrap();
    assert!(at(&|e| e["Action"] == "connect") < at(&|e| e["Action"] == "start"));
    let evnet = all.iter().find(|e| e["Action"] == "connect" && e["Actor"]["Attributes"]["name"] == "evnet").unwrap();
    assert_eq!(evnet["Actor"]["Attributes"]["container"], id.as_str());

    // Filters.
    assert_eq!(actions(&events(&d, t0, t1, &["event=die"])), ["container die"]);
    assert!(actions(&events(&d, t0, t1, &["type=volume"])) == ["volume create", "volume destroy"]);
    let ev1 = events(&d, t0, t1, &["container=ev1"]);
    assert!(ev1.iter().all(|e| e["Type"] == "container" || e["Type"] == "network") && ev1.len() > 5, "{:?}", actions(&ev1));
    assert!(events(&d, t0, t1, &["label=tier=front"]).iter().all(|e| e["Type"] == "container"));
    assert!(events(&d, t0, t1, &["label=tier=back"]).is_empty());
    assert_eq!(actions(&events(&d, t0, t1, &["network=evnet", "event=connect"])), ["network connect"]);
    let images = events(&d, t0, t1, &["type=image", "image=evimg"]);
    assert!(actions(&images).contains(&"image tag".to_string()), "{:?}", actions(&images));
    // Nothing before `since`.
    assert!(events(&d, t1 + 0.001, now(), &[]).is_empty());
    // A filter Docker does not know.
    let r = d.docker(&["events", "--until", "1s", "--filter", "bogus=x"]).failure();
    assert!(r.stderr.contains("invalid filter 'bogus'"), "{r:?}");
}

#[test]
fn events_stream_as_they_happen_to_every_client() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    // The docker CLI, live.
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut watcher = std::process::Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .args(["events", "--filter", "event=start", "--format", "{{.Actor.Attributes.name}}"])
        .stdout(out.reopen().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let listeners = d.docker(&["info", "--format", "{{.NEventsListener}}"]).success().stdout;
    assert_eq!(listeners.trim(), "1", "info counts the client following events");
    let t0 = now();
    d.docker(&["run", "--rm", "--name", "live", "busybox", "true"]).success();
    berth_tests::wait_until("the live event", || std::fs::read_to_string(out.path()).unwrap_or_default().contains("live"));
    let _ = watcher.kill();
    let _ = watcher.wait();
    // berth's CLI prints the docker CLI's line.
    let t1 = now();
    let r = d.berth(&["events", "--since", &format!("{t0:.3}"), "--until", &format!("{t1:.3}"), "--filter", "event=die"]).success();
    let line = r.stdout.trim();
    assert!(line.contains(" container die ") && line.contains("exitCode=0") && line.contains("name=live"), "{line}");
    // docker-py.
    if std::process::Command::new("python3").args(["-c", "import docker"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        berth_tests::skip("docker-py is not installed");
        return;
    }
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1])
for e in c.events(since=float(sys.argv[2]), until=float(sys.argv[3]), decode=True, filters={"type": "container"}):
    print(e["Action"], e["Actor"]["Attributes"]["name"])
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script, &format!("unix://{}", d.socket().display()), &format!("{t0:.3}"), &format!("{t1:.3}")]);
    let r = run_command(&mut cmd).success();
    for want in ["create live", "start live", "die live", "destroy live"] {
        assert!(r.stdout.contains(want), "{want:?} in {}", r.stdout);
    }
}
