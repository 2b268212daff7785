//! Logging drivers through berthd: json-file rotated and compressed per container, Docker's
//! `local` driver (its format, rotated and compressed by default) per container and as the
//! daemon's default, and `docker logs` across the rotated and compressed files in order, with
//! `--tail`, `--since`, `--until` and `--follow`; Docker's errors for bad options.

use berth_tests::{TestDaemon, json, wait_until};
use serde_json::Value;
use std::path::PathBuf;

fn inspect(d: &TestDaemon, name: &str) -> Value {
    json(&d.docker(&["inspect", name]).success().stdout)[0].clone()
}

fn ctr_dir(d: &TestDaemon, name: &str) -> PathBuf {
    d.dir.path().join("data/containers").join(inspect(d, name)["Id"].as_str().unwrap())
}

/// A container printing `line 0` … `line N-1`, then waiting.
fn chatty(d: &TestDaemon, name: &str, n: usize, opts: &[&str]) {
    let script = format!("i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); done; touch /tmp/done; sleep 300");
    let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    d.docker(&args).success();
    wait_until("all output written", || d.docker(&["exec", name, "test", "-e", "/tmp/done"]).code == 0);
}

fn logs(d: &TestDaemon, args: &[&str]) -> Vec<String> {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    d.docker(&a).success().stdout.lines().map(str::to_string).collect()
}

/// Consecutive `line K` … `line N-1`: what the files kept, in order, nothing missing between.
fn assert_consecutive_to(lines: &[String], last: usize) {
    let nums: Vec<usize> = lines.iter().map(|l| l.trim_start_matches("line ").parse().unwrap_or_else(|_| panic!("{l:?}"))).collect();
    assert_eq!(nums.last(), Some(&last), "{lines:?}");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "in order without a gap: {nums:?}");
}

#[test]
fn json_file_rotates_compresses_and_reads_back_in_order() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    chatty(&d, "jf", 400, &["--log-opt", "max-size=2k", "--log-opt", "max-file=4", "--log-opt", "compress=true"]);
    let dir = ctr_dir(&d, "jf");
    let id = inspect(&d, "jf")["Id"].as_str().unwrap().to_string();
    // The last rotation's compression runs in a child of the shim: it ends soon after.
    wait_until("three gzipped rotated files", || (1..=3).all(|n| dir.join(format!("{id}-json.log.{n}.gz")).exists()));
    assert!(!dir.join(format!("{id}-json.log.4.gz")).exists(), "max-file counts the live file");
    let all = logs(&d, &["jf"]);
    assert!(all.len() > 60 && all.len() < 400, "{} lines kept", all.len());
    assert_consecutive_to(&all, 399);
    // A tail from the live file alone, and one reaching into the compressed ones.
    assert_eq!(logs(&d, &["--tail", "3", "jf"]), ["line 397", "line 398", "line 399"]);
    let tail = logs(&d, &["--tail", "60", "jf"]);
    assert_eq!(tail.len(), 60);
    assert_consecutive_to(&tail, 399);
    // --since and --until by the entries' own times, across files.
    let stamped = logs(&d, &["--timestamps", "jf"]);
    let at = |i: usize| stamped[i].split_once(' ').unwrap().0.to_string();
    let mid = stamped.len() / 3;
    // (Entries of one chunk of output share its time; the times have nine digits, so they
    // compare as strings. The CLI sends the bound as decimal seconds: an entry exactly at it
    // may fall either side.)
    let (t, n) = (at(mid), stamped.len());
    let count = |f: &dyn Fn(&String) -> bool| (0..n).filter(|i| f(&at(*i))).count();
    let since = logs(&d, &["--since", &t, "jf"]);
    assert!((count(&|x| *x > t)..=count(&|x| *x >= t)).contains(&since.len()), "{} since {t}", since.len());
    assert!(!since.is_empty());
    assert_consecutive_to(&since, 399);
    let until = logs(&d, &["--until", &t, "jf"]);
    assert!((count(&|x| *x < t)..=count(&|x| *x <= t)).contains(&until.len()), "{} until {t}", until.len());
    d.docker(&["rm", "-f", "jf"]).success();
}

#[test]
fn the_local_driver_per_container_and_as_the_daemons_default() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    chatty(&d, "loc", 300, &["--log-driver", "local", "--log-opt", "max-size=2k"]);
    let c = inspect(&d, "loc");
    assert_eq!((c["HostConfig"]["LogConfig"]["Type"].as_str(), c["LogPath"].as_str()), (Some("local"), Some("")));
    let dir = ctr_dir(&d, "loc").join("local-logs");
    // Compressed by default, five files at most.
    wait_until("gzipped rotated files", || dir.join("container.log.1.gz").exists() && dir.join("container.log.4.gz").exists());
    assert!(!dir.join("container.log.5.gz").exists());
    // Docker's framing: a big-endian size before and after each record.
    let raw = std::fs::read(dir.join("container.log")).unwrap();
    let n = u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
    assert_eq!(&raw[n + 4..n + 8], &raw[..4]);
    let all = logs(&d, &["loc"]);
    assert_consecutive_to(&all, 299);
    assert_eq!(logs(&d, &["--tail", "2", "loc"]), ["line 298", "line 299"]);
    d.docker(&["rm", "-f", "loc"]).success();

    let mut d = TestDaemon::start_with_config(r#"{"log-driver": "local", "log-opts": {"max-size": "1m"}}"#);
    d.import_busybox();
    // Followed while it writes, then to its end.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "dflt",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done",
    ])
    .success();
    let followed = d.docker(&["logs", "-f", "dflt"]).success().stdout;
    assert_eq!(followed.lines().collect::<Vec<_>>(), ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]);
    let c = inspect(&d, "dflt");
    assert_eq!(c["HostConfig"]["LogConfig"], serde_json::json!({"Type": "local", "Config": {"max-size": "1m"}}));
    // A container may still choose json-file; the daemon's options are the local driver's only.
    d.docker(&["run", "--name", "js", "--network", "none", "--log-driver", "json-file", "busybox", "echo", "hi"]).success();
    let c = inspect(&d, "js");
    assert_eq!(c["HostConfig"]["LogConfig"], serde_json::json!({"Type": "json-file", "Config": {}}));
    assert_eq!(logs(&d, &["js"]), ["hi"]);
    d.docker(&["rm", "-f", "dflt", "js"]).success();
    d.stop();
}

#[test]
fn bad_log_options_get_dockers_errors() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for (args, want) in [
        (&["--log-opt", "compress=true"][..], "compress cannot be true when max-file is less than 2"),
        (&["--log-driver", "local", "--log-opt", "tag=x"][..], "unknown log opt 'tag' for log driver local"),
        (&["--log-opt", "max-file=0"][..], "invalid value for max-file: 0"),
        (&["--log-opt", "compress=maybe", "--log-opt", "max-file=2"][..], "error reading compress log option"),
    ] {
        let mut a = vec!["create"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "true"]);
        let r = d.docker(&a).failure();
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    assert_eq!(d.docker(&["ps", "-aq"]).success().stdout, "", "nothing made");
}
