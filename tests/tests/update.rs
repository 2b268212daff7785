//! `update` through berthd with the docker CLI and berth's: limits written to a running
//! container's cgroup (read back from inside it) and kept across a restart, a stopped or created
//! container's used at its next start, the restart policy changed, Docker's errors for what
//! cannot change, and a memory limit below the usage refused with the container untouched.

use berth_tests::{TestDaemon, json, wait_until};
use serde_json::Value;
use std::collections::BTreeMap;

fn inspect(d: &TestDaemon, name: &str) -> Value {
    json(&d.docker(&["inspect", name]).success().stdout)[0].clone()
}

/// The container's cgroup limits as it sees them (v1 or v2 files, whichever the host has),
/// keyed by file name.
fn limits(d: &TestDaemon, name: &str) -> BTreeMap<String, String> {
    let probe = "cd /sys/fs/cgroup; for f in memory/memory.limit_in_bytes memory.max memory/memory.memsw.limit_in_bytes \
                 memory.swap.max cpu/cpu.cfs_quota_us cpu.max cpu/cpu.shares cpu.weight pids/pids.max pids.max \
                 cpuset/cpuset.cpus cpuset.cpus; do [ -f $f ] && echo \"${f#*/}=$(cat $f)\"; done; true";
    let out = d.docker(&["exec", name, "sh", "-c", probe]).success().stdout;
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn memory_limit(l: &BTreeMap<String, String>) -> String {
    l.get("memory.limit_in_bytes").or_else(|| l.get("memory.max")).cloned().unwrap_or_default()
}

#[test]
fn limits_change_live_and_persist() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&["run", "-d", "--name", "upd", "--network", "none", "-m", "64m", "busybox", "sleep", "300"]).success();
    let swap_accounted = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    if swap_accounted {
        // As dockerd fills it in: memory+swap twice the memory limit.
        assert_eq!(inspect(&d, "upd")["HostConfig"]["MemorySwap"], 128 << 20);
    }
    let out =
        d.docker(&["update", "-m", "100m", "--cpus", "0.5", "--cpu-shares", "512", "--pids-limit", "20", "--cpuset-cpus", "0", "upd"]);
    assert_eq!(out.success().stdout.trim(), "upd");
    let l = limits(&d, "upd");
    assert_eq!(memory_limit(&l), (100u64 << 20).to_string(), "{l:?}");
    assert!(l.get("cpu.cfs_quota_us").is_some_and(|q| q == "50000") || l.get("cpu.max").is_some_and(|m| m == "50000 100000"), "{l:?}");
    assert!(l.get("cpu.shares").is_some_and(|s| s == "512") || l.contains_key("cpu.weight"), "{l:?}");
    assert_eq!(l.get("pids.max").map(String::as_str), Some("20"));
    assert_eq!(l.get("cpuset.cpus").map(String::as_str), Some("0"));
    let hc = inspect(&d, "upd")["HostConfig"].clone();
    assert_eq!(
        (hc["Memory"].as_i64(), hc["NanoCpus"].as_i64(), hc["CpuShares"].as_i64(), hc["PidsLimit"].as_i64(), hc["CpusetCpus"].as_str()),
        (Some(100 << 20), Some(500_000_000), Some(512), Some(20), Some("0"))
    );
    // Unlimited again.
    d.docker(&["update", "--pids-limit", "-1", "upd"]).success();
    assert_eq!(limits(&d, "upd").get("pids.max").map(String::as_str), Some("max"));
    // Unlimited is shown as dockerd shows it (null from API 1.41).
    assert_eq!(inspect(&d, "upd")["HostConfig"]["PidsLimit"].as_i64().unwrap_or(0), 0);

    // The new values are the container's from now on: a restart keeps them.
    d.docker(&["restart", "-t", "0", "upd"]).success();
    let l = limits(&d, "upd");
    assert_eq!((memory_limit(&l), l.get("cpuset.cpus").cloned()), ((100u64 << 20).to_string(), Some("0".into())));
    // A stopped container's apply at its next start.
    d.docker(&["stop", "-t", "0", "upd"]).success();
    d.docker(&["update", "-m", "50m", "--memory-swap", "100m", "upd"]).success();
    d.docker(&["start", "upd"]).success();
    let l = limits(&d, "upd");
    assert_eq!(memory_limit(&l), (50u64 << 20).to_string());
    if swap_accounted {
        assert_eq!(l.get("memory.memsw.limit_in_bytes").cloned(), Some((100u64 << 20).to_string()));
    }
    // So does a created one's (whose bundle may have been made ahead with the old ones).
    d.docker(&["create", "--name", "fresh", "--network", "none", "-m", "64m", "busybox", "sleep", "300"]).success();
    d.docker(&["update", "-m", "80m", "fresh"]).success();
    d.docker(&["start", "fresh"]).success();
    assert_eq!(memory_limit(&limits(&d, "fresh")), (80u64 << 20).to_string());
    // berth's own CLI too.
    d.berth(&["update", "--cpus", "0.25", "fresh"]).success();
    let l = limits(&d, "fresh");
    assert!(l.get("cpu.cfs_quota_us").is_some_and(|q| q == "25000") || l.get("cpu.max").is_some_and(|m| m == "25000 100000"), "{l:?}");
    let until = format!("{:.3}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64());
    let told =
        d.docker(&["events", "--since", "1", "--until", &until, "--filter", "event=update", "--format", "{{.Actor.Attributes.name}}"]);
    assert_eq!(told.success().stdout.lines().filter(|l| *l == "fresh").count(), 2, "an update event for each");
    d.docker(&["rm", "-f", "upd", "fresh"]).success();
}

#[test]
fn what_cannot_change_gets_dockers_errors() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&["run", "-d", "--name", "err1", "--network", "none", "--cpus", "1", "busybox", "sleep", "300"]).success();
    let err = |args: &[&str]| {
        let r = d.docker(args).failure();
        r.stderr
    };
    assert!(
        err(&["update", "-m", "100m", "err1"])
            .contains("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time")
    );
    assert!(err(&["update", "--cpu-quota", "50000", "err1"]).contains("CPU Quota cannot be updated as NanoCPUs has already been set"));
    assert!(err(&["update", "-m", "1m", "--memory-swap", "-1", "err1"]).contains("Minimum memory limit allowed is 6MB"));
    assert!(err(&["update", "--restart", "bogus", "err1"]).contains("invalid restart policy"));
    assert!(err(&["update", "--cpus", "1", "nosuch"]).contains("No such container: nosuch"));
    d.docker(&["run", "-d", "--rm", "--name", "gone", "--network", "none", "busybox", "sleep", "300"]).success();
    assert!(
        err(&["update", "--restart", "always", "gone"])
            .contains("Restart policy cannot be updated because AutoRemove is enabled for the container")
    );
    let (code, body) = d.post("/containers/err1/update", r#"{"Memory": 104857600}"#);
    assert_eq!(code, 409, "{body}");
    assert!(d.berth(&["update", "err1"]).failure().stderr.contains("you must provide one or more flags"));

    // Below what it uses: refused, the container untouched and running.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "full",
        "--network",
        "none",
        "-m",
        "200m",
        "--memory-swap",
        "200m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/x bs=1M count=40 2>/dev/null; touch /tmp/done; sleep 300",
    ])
    .success();
    wait_until("the container filled its memory", || d.docker(&["exec", "full", "test", "-e", "/tmp/done"]).code == 0);
    let e = err(&["update", "-m", "10m", "--memory-swap", "10m", "full"]);
    assert!(e.contains("Cannot update container") && e.contains("unable to set memory limit to 10485760 (current usage: "), "{e}");
    assert_eq!(inspect(&d, "full")["HostConfig"]["Memory"], 200 << 20);
    assert_eq!(memory_limit(&limits(&d, "full")), (200u64 << 20).to_string());
    assert_eq!(inspect(&d, "full")["State"]["Status"], "running");
    d.docker(&["rm", "-f", "err1", "gone", "full"]).success();
}

#[test]
fn a_restart_policy_set_by_update_applies_at_the_next_exit() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    d.docker(&["run", "-d", "--name", "rp", "--network", "none", "busybox", "sh", "-c", "sleep 1; exit 3"]).success();
    d.docker(&["update", "--restart", "on-failure:1", "rp"]).success();
    assert_eq!(inspect(&d, "rp")["HostConfig"]["RestartPolicy"], serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 1}));
    wait_until("one restart, then rest", || {
        let s = inspect(&d, "rp");
        s["RestartCount"] == 1 && s["State"]["Status"] == "exited"
    });
    d.docker(&["rm", "-f", "rp"]).success();
}
