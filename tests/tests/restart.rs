//! Restart policies through berthd with the docker CLI: `on-failure:N` stops after N, `always`
//! backs off as Docker does and ends at a stop, `unless-stopped` and `always` when berthd
//! starts again, after `kill -9 berthd` too, bad policies refused, and a crash loop that never
//! holds berthd up.

use berth_tests::{TestDaemon, json, wait_until};
use serde_json::Value;

fn inspect(d: &TestDaemon, name: &str) -> Value {
    json(&d.docker(&["inspect", name]).success().stdout)[0].clone()
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The times of `name`'s starts between `since` and now.
fn starts(d: &TestDaemon, name: &str, since: f64) -> Vec<f64> {
    let (s, u) = (format!("{since:.3}"), format!("{:.3}", now()));
    let out = d
        .docker(&[
            "events",
            "--since",
            &s,
            "--until",
            &u,
            "--filter",
            &format!("container={name}"),
            "--filter",
            "event=start",
            "--format",
            "{{.TimeNano}}",
        ])
        .success()
        .stdout;
    out.lines().map(|l| l.trim().parse::<f64>().unwrap() / 1e9).collect()
}

#[test]
fn on_failure_counts_and_always_backs_off_until_a_stop() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let t0 = now();
    d.docker(&["run", "-d", "--name", "fails", "--restart", "on-failure:2", "--network", "none", "busybox", "sh", "-c", "exit 3"])
        .success();
    wait_until("two restarts, then rest", || {
        let s = inspect(&d, "fails");
        s["RestartCount"] == 2 && s["State"]["Status"] == "exited"
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let s = inspect(&d, "fails");
    assert_eq!((s["RestartCount"].as_i64(), s["State"]["ExitCode"].as_i64()), (Some(2), Some(3)), "no third restart");
    assert_eq!(starts(&d, "fails", t0).len(), 3, "the first start and two restarts");
    assert_eq!(s["HostConfig"]["RestartPolicy"], serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 2}));

    // `always`, exiting at once: restarted after 100, 200, 400, 800 ms …, shown restarting.
    let t1 = now();
    d.docker(&["run", "-d", "--name", "loops", "--restart", "always", "--network", "none", "busybox", "true"]).success();
    let mut seen_restarting = false;
    wait_until("five starts", || {
        let ps = d.docker(&["ps", "-a", "--filter", "name=loops", "--format", "{{.Status}}"]).success().stdout;
        seen_restarting |= ps.starts_with("Restarting (0)");
        starts(&d, "loops", t1).len() >= 5
    });
    // berthd answers at once all the while.
    let t = std::time::Instant::now();
    for _ in 0..10 {
        d.docker(&["version", "--format", "{{.Server.Version}}"]).success();
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "berthd kept answering: {:?}", t.elapsed());
    let times = starts(&d, "loops", t1);
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] < 0.5 && gaps[3] > 2.5 * gaps[0] && gaps[3] > 0.6, "doubling back-off: {gaps:?}");
    assert!(seen_restarting || inspect(&d, "loops")["RestartCount"].as_i64().unwrap() >= 4, "restarting shown in ps");
    // A stop ends it for good.
    d.docker(&["stop", "loops"]).success();
    let n = starts(&d, "loops", t1).len();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    assert_eq!(starts(&d, "loops", t1).len(), n, "no start after the stop");
    assert_eq!(inspect(&d, "loops")["State"]["Status"], "exited");
    // A restarting container is not removed without force.
    d.docker(&["rm", "-f", "loops", "fails"]).success();
}

#[test]
fn policies_bring_containers_back_when_berthd_starts() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    for (name, policy) in
        [("a-stopped", "always"), ("u-stopped", "unless-stopped"), ("u-running", "unless-stopped"), ("crashes", "on-failure:1")]
    {
        let cmd: &[&str] = if name == "crashes" { &["sh", "-c", "sleep 2; exit 1"] } else { &["sleep", "600"] };
        let mut args = vec!["run", "-d", "--name", name, "--restart", policy, "--network", "none", "busybox"];
        args.extend_from_slice(cmd);
        d.docker(&args).success();
    }
    d.docker(&["stop", "-t", "0", "a-stopped", "u-stopped"]).success();
    // berthd dies hard; the containers live on in their shims, and an exit while it is gone
    // is seen when it is back, its policy applied.
    d.kill9();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    d.launch();
    wait_until("the crashed container restarted once", || inspect(&d, "crashes")["RestartCount"] == 1);
    let state = |d: &TestDaemon, n: &str| inspect(d, n)["State"]["Status"].as_str().unwrap().to_string();
    wait_until("`always` back at start", || state(&d, "a-stopped") == "running");
    assert_eq!(state(&d, "u-stopped"), "exited", "unless-stopped stays stopped");
    assert_eq!(state(&d, "u-running"), "running");
    // A clean stop and start of berthd: the same.
    d.docker(&["stop", "-t", "0", "a-stopped"]).success();
    d.stop();
    d.launch();
    wait_until("`always` back again", || state(&d, "a-stopped") == "running");
    assert_eq!(state(&d, "u-stopped"), "exited");
    d.docker(&["rm", "-f", "a-stopped", "u-stopped", "u-running", "crashes"]).success();
}

#[test]
fn bad_policies_are_refused() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let r = d.docker(&["run", "--restart", "sometimes", "busybox", "true"]).failure();
    assert!(r.stderr.contains("sometimes"), "{r:?}");
    let r = d.docker(&["run", "--restart", "on-failure:-1", "busybox", "true"]).failure();
    assert!(r.stderr.contains("maximum retry count"), "{r:?}");
    let (status, body) = d.post(
        "/containers/create",
        r#"{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}"#,
    );
    assert_eq!((status, body.contains("can't create 'AutoRemove' container with restart policy")), (400, true), "{body}");
    assert!(d.docker(&["ps", "-aq"]).success().stdout.trim().is_empty(), "nothing made");
}
