//! Crash consistency, tested by killing: berthd and shims are SIGKILLed at random moments while
//! eight clients create, start, run, remove, load, import and remove images in parallel; after
//! each kill (and a restart of berthd) every container is adopted or cleanly stopped, and no
//! process, bundle, mount, runtime state, cgroup, ingest, blob or layer is left without an owner.
//! docs/crash.md says what berth promises after a crash.
//!
//! `BERTH_CRASH_ROUNDS` sets the number of kills (CI runs a few dozen; `bench/crash.sh` more),
//! `BERTH_CRASH_SEED` repeats a run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_tests::{TestDaemon, is_root};
use serde_json::Value;

/// xorshift64*: enough randomness for timing and choices, repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Shims of this daemon looking after a bundle, by bundle name, with their pids.
fn shims(d: &TestDaemon) -> Vec<(String, i32)> {
    use std::os::unix::fs::MetadataExt;
    let bin = std::fs::metadata(berth_tests::bin("berth-shim")).unwrap();
    let bundles = d.dir.path().join("exec/containers");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let same = std::fs::metadata(e.path().join("exe")).is_ok_and(|m| m.ino() == bin.ino() && m.dev() == bin.dev());
        let zombie =
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')));
        if let (true, false, Ok(cwd)) = (same, zombie, std::fs::read_link(e.path().join("cwd")))
            && let Ok(rel) = cwd.strip_prefix(&bundles)
        {
            out.push((rel.to_string_lossy().into_owned(), pid));
        }
    }
    out
}

fn expect(bad: &mut Vec<String>, what: &str, found: BTreeSet<String>, wanted: &BTreeSet<String>) {
    if found != *wanted {
        bad.push(format!("{what}: {:?} without an owner, {:?} missing", found.difference(wanted), wanted.difference(&found)));
    }
}

/// Every way the daemon's state could disagree with what is really there; empty when none.
fn inconsistencies(d: &TestDaemon, after_restart: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let (status, body) = d.request("GET", "/containers/json?all=1");
    if status != 200 {
        return vec![format!("list: {status} {body}")];
    }
    let list: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    let id = |c: &Value| c["Id"].as_str().unwrap_or_default().to_string();
    let all: BTreeSet<String> = list.iter().map(id).collect();
    let running: BTreeSet<String> =
        list.iter().filter(|c| matches!(c["State"].as_str(), Some("running" | "paused" | "restarting"))).map(id).collect();
    let dead: BTreeSet<String> = list.iter().filter(|c| c["State"] == "dead").map(id).collect();
    let root = d.dir.path();
    expect(&mut bad, "records", names(&root.join("data/containers")), &all);
    expect(&mut bad, "bundles", names(&root.join("exec/containers")), &running);
    expect(&mut bad, "runtime state", names(&root.join("exec/runtime")), &running);
    expect(&mut bad, "shims", shims(d).into_iter().map(|(n, _)| n).collect(), &running);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts: BTreeSet<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter_map(|m| Path::new(m).strip_prefix(root.join("exec/containers")).ok().map(|p| p.to_string_lossy().into_owned()))
        .collect();
    expect(&mut bad, "mounts", mounts, &running.iter().map(|r| format!("{r}/rootfs")).collect());
    for dir in d.cgroup_dirs() {
        let found: BTreeSet<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        expect(&mut bad, &format!("cgroups in {}", dir.display()), found, &running);
    }
    // Container layers: one for each container whose removal did not lose it.
    let image = root.join("data/image");
    let mut layers = BTreeSet::new();
    let mut committed = BTreeSet::new();
    for e in std::fs::read_dir(image.join("snapshots")).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let record = ["active.json", "ephemeral.json"].iter().find_map(|f| std::fs::read(e.path().join(f)).ok());
        match record {
            Some(r) => {
                layers.insert(json(&String::from_utf8_lossy(&r))["key"].as_str().unwrap_or("?").to_string());
            }
            None => {
                committed.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    expect(&mut bad, "container layers", layers, &all.difference(&dead).cloned().collect());
    let ingests: Vec<String> = names(&image.join("content/ingest"))
        .iter()
        .map(|n| std::fs::read_to_string(image.join("content/ingest").join(n).join("ref")).unwrap_or_else(|_| n.clone()))
        .collect();
    if !ingests.is_empty() {
        bad.push(format!("ingests left: {ingests:?}"));
    }
    if after_restart {
        // What the restart's collection leaves: exactly what images reference.
        let images = json(&std::fs::read_to_string(image.join("images.json")).unwrap_or_default());
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for img in images["images"].as_object().into_iter().flat_map(|m| m.values()) {
            for k in ["id", "manifest"] {
                blobs.insert(img[k].as_str().unwrap_or_default().trim_start_matches("sha256:").to_string());
            }
            for l in img["layers"].as_array().into_iter().flatten() {
                blobs.insert(l["blob"].as_str().unwrap_or_default().trim_start_matches("sha256:").to_string());
                chains.insert(l["chain_id"].as_str().unwrap_or_default().to_string());
            }
        }
        expect(&mut bad, "blobs", names(&image.join("content/blobs/sha256")), &blobs);
        let index = json(&std::fs::read_to_string(image.join("snapshots.json")).unwrap_or_default());
        let ids_of: BTreeSet<String> = index["snapshots"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| chains.contains(s["key"].as_str().unwrap_or_default()))
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        // A layer no image uses may stay under a container's layer (an image removed with -f).
        let parents: BTreeSet<String> = index["snapshots"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| !chains.contains(s["key"].as_str().unwrap_or_default()))
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        let unowned: BTreeSet<String> = committed.difference(&ids_of).filter(|c| !parents.contains(*c)).cloned().collect();
        if !unowned.is_empty() {
            bad.push(format!("layer directories no index names: {unowned:?}"));
        }
    }
    bad
}

/// One client's work until told to stop: a mix of what users do, through the berth CLI. A
/// client that cannot go on says why (the round still ends, and berthd is still checked and
/// cleaned up); the test then fails.
fn client(d: Arc<TestDaemon>, seed: u64, n: usize, archive: PathBuf, rootfs_tar: PathBuf, stop: Arc<AtomicBool>) -> Option<String> {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&d, seed, n, &archive, &rootfs_tar, &stop)));
    ran.err().map(|e| e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
}

fn work(d: &TestDaemon, seed: u64, n: usize, archive: &Path, rootfs_tar: &Path, stop: &AtomicBool) {
    let mut rng = Rng(seed ^ (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let image = format!("img{n}");
    while !stop.load(Ordering::Relaxed) {
        let some_container = |rng: &mut Rng| {
            let ids: Vec<String> = d.berth(&["ps", "-aq"]).stdout.lines().map(str::to_string).collect();
            (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize].clone())
        };
        match rng.below(12) {
            0..=2 => drop(d.berth(&["run", "-d", "busybox", "sleep", "600"])),
            3 | 4 => drop(d.berth(&["run", "--rm", "busybox", "true"])),
            5 => {
                let c = d.berth(&["create", "busybox", "true"]);
                if let Some(id) = c.stdout.lines().next() {
                    d.berth(&["start", id]);
                }
            }
            6 | 7 => {
                if let Some(id) = some_container(&mut rng) {
                    d.berth(&["rm", "-f", &id]);
                }
            }
            8 => drop(d.berth(&["load", "-i", archive.to_str().unwrap_or_default()])),
            9 => drop(d.berth(&["import", rootfs_tar.to_str().unwrap_or_default(), &image])),
            10 => drop(d.berth(&["rmi", "-f", &image])),
            _ => {
                if let Some(id) = some_container(&mut rng) {
                    d.berth(&["stop", "-t", "0", &id]);
                }
            }
        }
    }
}

#[test]
fn killed_at_random_moments_berthd_comes_back_consistent() {
    if !is_root() {
        return;
    }
    let rounds: usize = std::env::var("BERTH_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(24);
    let seed: u64 = std::env::var("BERTH_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_nanos() as u64).unwrap_or(1) | 1
    });
    eprintln!("BERTH_CRASH_SEED={seed} BERTH_CRASH_ROUNDS={rounds}");
    let mut rng = Rng(seed);
    let mut d = TestDaemon::start();
    d.import_busybox();
    let archive = d.dir.path().join("busybox.tar");
    d.berth(&["save", "-o", archive.to_str().unwrap(), "busybox"]).success();
    let rootfs_tar = d.dir.path().join("rootfs.tar");
    let tar =
        std::process::Command::new("tar").arg("-C").arg(berth_tests::busybox_rootfs()).args(["-cf"]).arg(&rootfs_tar).arg(".").status();
    assert!(tar.is_ok_and(|s| s.success()));
    let mut kills = (0, 0);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(d);
        let workers: Vec<_> = (0..8)
            .map(|n| {
                let (d, stop, archive, tar) = (Arc::clone(&shared), Arc::clone(&stop), archive.clone(), rootfs_tar.clone());
                let seed = seed.wrapping_add(round as u64);
                std::thread::spawn(move || client(d, seed, n, archive, tar, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
        // Rounds kill berthd, or shims (berthd must notice), or both.
        let (kill_shims, kill_berthd) = match rng.below(3) {
            0 => (false, true),
            1 => (true, false),
            _ => (true, true),
        };
        if kill_shims {
            let s = shims(&shared);
            for _ in 0..=rng.below(2) {
                if !s.is_empty() {
                    let (_, pid) = &s[rng.below(s.len() as u64) as usize];
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
                    kills.1 += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(rng.below(300)));
        }
        let killed_pid = shared.pid();
        if kill_berthd {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(killed_pid), nix::sys::signal::Signal::SIGKILL);
            kills.0 += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            if let Some(why) = w.join().unwrap_or_else(|_| Some("a client thread died".into())) {
                failures.push(format!("round {round}: {why}"));
            }
        }
        d = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("a client still holds the daemon"));
        if kill_berthd {
            d.kill9();
            d.launch();
        }
        // Shims of removed containers, and the killed berthd's standby shim, exit on their own.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let mut reported = false;
        loop {
            let bad = inconsistencies(&d, kill_berthd);
            if bad.is_empty() {
                break;
            }
            if !reported && started.elapsed() > Duration::from_secs(5) {
                eprintln!("round {round}: not consistent after 5 s yet:\n{}", bad.join("\n"));
                reported = true;
            }
            if Instant::now() > deadline {
                panic!("round {round} (seed {seed}, berthd killed: {kill_berthd}, shims: {kill_shims}):\n{}\n{}", bad.join("\n"), d.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Every image that survived runs.
    let images: Vec<Value> = serde_json::from_str(&d.request("GET", "/images/json").1).unwrap();
    assert!(!images.is_empty());
    for img in &images {
        let id = img["Id"].as_str().unwrap();
        d.berth(&["run", "--rm", id, "true"]).success();
    }
    eprintln!("{rounds} rounds: berthd killed {} times, {} shims killed", kills.0, kills.1);
    // Nothing is left once the containers are removed and berthd stops.
    d.remove_all();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inconsistencies(&d, false).is_empty() || !shims(&d).is_empty() {
        assert!(Instant::now() < deadline, "left after removing everything: {:?}", inconsistencies(&d, false));
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop();
    assert!(d.cgroup_dirs().is_empty(), "cgroups left: {:?}", d.cgroup_dirs());
    assert!(failures.is_empty(), "clients failed: {failures:?}");
}

/// The state the kill harness found first, made on purpose: berthd dies between a shim's
/// create and the record of the start, leaving a "created" container whose shim and init live
/// (blocked on the exec FIFO), with its cgroups and runtime state. After a restart it is
/// stopped cleanly and starts again.
#[test]
fn a_start_cut_short_by_a_crash_is_taken_down_and_the_container_starts_again() {
    if !is_root() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    let (s, b) = d.post("/containers/create?name=cut", r#"{"Image":"busybox","Cmd":["echo","started"]}"#);
    assert_eq!(s, 201, "{b}");
    let id = json(&b)["Id"].as_str().unwrap().to_string();
    // The bundle made ahead of the start, which a crash leaves in place.
    let bundle = d.dir.path().join("exec/containers").join(&id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bundle.join("shim.json").exists() {
        assert!(Instant::now() < deadline, "no bundle was made ahead of the start");
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    // The shim berthd had handed the bundle to: it creates the container, reports, and waits.
    let mut shim = std::process::Command::new(berth_tests::bin("berth-shim"))
        .arg(&bundle)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut report = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(shim.stdout.take().unwrap()), &mut report).unwrap();
    assert!(report.contains("\"ok\":true"), "{report}");
    let init: i32 = json(&report)["pid"].as_i64().unwrap() as i32;
    assert!(d.dir.path().join("exec/runtime").join(&id).exists());
    assert!(d.cgroup_dirs().iter().any(|c| c.join(&id).exists()));
    d.launch();
    // Taken down: shim, init, runtime state, cgroups; the record still says created.
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
    };
    assert!(gone(init), "the container's init is still alive");
    let _ = shim.wait();
    assert!(!d.dir.path().join("exec/runtime").join(&id).exists(), "runtime state left");
    assert!(d.cgroup_dirs().iter().all(|c| !c.join(&id).exists()), "cgroups left");
    assert!(inconsistencies(&d, true).is_empty(), "{:?}", inconsistencies(&d, true));
    let c = json(&d.request("GET", "/containers/cut/json").1);
    assert_eq!(c["State"]["Status"], "created");
    // And it starts.
    let r = d.berth(&["start", "-a", "cut"]).success();
    assert_eq!(r.stdout, "started\n");
}
