//! The integration-test harness: a busybox rootfs built from the host's static busybox, bundles
//! made from it, a private runtime root per test, and checks that nothing is left behind.
//!
//! Containers started detached outlive the `berth-runc` that made them; this machine's pid 1
//! does not reap orphans, so every test process makes itself a child subreaper and reaps them.
//! Run the tests one per process (cargo nextest) or with `--test-threads=1`.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// The directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/debug/deps/<test-binary> → target/debug
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is not built: run `cargo build --workspace` first", p.display());
    p
}

/// Skip the rest of this test, saying why. The test passes, so the reason is also appended to
/// `$BERTH_SKIP_LOG` (scripts/test.sh sets it and counts the skips in its summary): a skip is
/// never passed off as tested.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIP: {test}: {reason}");
    if let Some(log) = std::env::var_os("BERTH_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// Running under CI (`CI=true`), where every peer the project's scripts install must be there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Integration tests need root; elsewhere they say so and skip.
pub fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "CI runs the tests as root");
    skip("this test needs root");
    false
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false)
}

/// Is the peer `name` (a program scripts/deps.sh installs) on PATH? Elsewhere the test skips
/// with a message; under CI its absence fails the test instead.
pub fn have(name: &str) -> bool {
    if on_path(name) {
        return true;
    }
    assert!(!in_ci(), "{name} is missing: scripts/deps.sh installs it, and CI must run this test");
    skip(&format!("{name} is not installed"));
    false
}

/// The isolated peer dockerd scripts/test.sh starts (`$BERTH_PEER_DOCKER_HOST`), for tests
/// against Docker itself; under CI its absence fails the test.
pub fn peer_dockerd() -> Option<String> {
    match std::env::var("BERTH_PEER_DOCKER_HOST") {
        Ok(h) if !h.is_empty() => Some(h),
        _ => {
            assert!(!in_ci(), "no peer dockerd: scripts/test.sh starts one (scripts/peer-dockerd.sh), and CI must run this test");
            skip("no peer dockerd (scripts/peer-dockerd.sh starts one; scripts/test.sh does)");
            None
        }
    }
}

const BUSYBOX: &str = "/bin/busybox";

/// The shared busybox rootfs, built once from the host's static busybox (atomically: temp dir,
/// then rename, so concurrent test processes never see half of it).
pub fn busybox_rootfs() -> PathBuf {
    let dir = bin_dir().join("fixtures").join("busybox-rootfs");
    if dir.join("bin/busybox").exists() {
        return dir;
    }
    assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} is missing: install busybox-static");
    let tmp = dir.with_file_name(format!(".busybox-rootfs.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/tester", "var", "run"] {
        fs::create_dir_all(tmp.join(d)).unwrap();
    }
    fs::set_permissions(tmp.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, tmp.join("bin/busybox")).unwrap();
    let list = run_command(Command::new(BUSYBOX).arg("--list")).success();
    for applet in list.stdout.lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(tmp.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n").unwrap();
    fs::write(tmp.join("etc/group"), "root:x:0:\nwheel:x:10:tester\naudio:x:29:\ntester:x:1000:\nnogroup:x:65534:\n").unwrap();
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    if fs::rename(&tmp, &dir).is_err() {
        // Another process won the race; its copy is as good as ours.
        let _ = fs::remove_dir_all(&tmp);
    }
    dir
}

/// A bundle directory with its own copy of the rootfs and a config.json to edit.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
}

impl Bundle {
    /// Docker's default spec (from `berth-runc spec`) running `args`, without a terminal.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new().prefix("berth-bundle-").tempdir().unwrap();
        run_command(Command::new("cp").arg("-a").arg(busybox_rootfs()).arg(dir.path().join("rootfs"))).success();
        run_command(Command::new(bin("berth-runc")).arg("spec").arg("--bundle").arg(dir.path())).success();
        let mut spec: Value = serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        let b = Bundle { dir, spec };
        b.save();
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn save(&self) {
        fs::write(self.dir.path().join("config.json"), serde_json::to_vec_pretty(&self.spec).unwrap()).unwrap();
    }
}

/// The result of a command, with stdout and stderr as text.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn failure(self) -> Run {
        assert_ne!(self.code, 0, "command should have failed: {self:#?}");
        self
    }
}

static SUBREAPER: Once = Once::new();
/// Children the harness spawned and waits for itself; the reaper leaves them alone.
static OWN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Run a command to completion with stdout and stderr captured through files (a detached
/// container keeps its stdio open after the command returns, so pipes would never close).
pub fn run_command(cmd: &mut Command) -> Run {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = spawn_own(cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(err.try_clone().unwrap()))
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let status = child.wait().unwrap();
    OWN.lock().unwrap().retain(|p| *p != pid);
    let read = |mut f: fs::File| {
        use std::io::{Read, Seek};
        let mut s = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Run { code: status.code().unwrap_or(-1), stdout: read(out), stderr: read(err) }
}
/// Spawn a child the harness waits for itself, registered for the reaper to leave alone
/// before the reaper can look at it: the registry's lock is held across the spawn (a child
/// that exits at once, while the spawning thread waits for the CPU under load, was reaped
/// by the reaper first, and `wait` failed with ECHILD).
pub fn spawn_own(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut own = OWN.lock().unwrap_or_else(|p| p.into_inner());
    let child = cmd.spawn()?;
    own.push(child.id() as i32);
    Ok(child)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private runtime root; Drop deletes every container left in it and checks for leaks.
pub struct Runtime {
    pub root: tempfile::TempDir,
    ids: std::cell::RefCell<HashSet<String>>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

/// Make this test process the reaper of orphans (shims of a killed berthd, containers of a
/// detached runc), reaping them as they die.
pub fn become_subreaper() {
    SUBREAPER.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        // A pid namespace's init cannot finish dying until every process in it is reaped,
        // so orphans must be reaped while berth-runc waits, not only between commands.
        std::thread::spawn(|| {
            let mut seen = Vec::new();
            loop {
                seen = reap_orphans(&seen);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
    });
}

impl Runtime {
    pub fn new() -> Runtime {
        become_subreaper();
        Runtime { root: tempfile::Builder::new().prefix("berth-runc-root-").tempdir().unwrap(), ids: Default::default() }
    }

    /// A container id unique to this test process.
    pub fn id(&self, name: &str) -> String {
        let id = format!("t{}-{}-{name}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        self.ids.borrow_mut().insert(id.clone());
        id
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(bin("berth-runc"));
        c.arg("--root").arg(self.root.path());
        c
    }

    /// Run berth-runc with `args`.
    pub fn runc(&self, args: &[&str]) -> Run {
        run_command(self.command().args(args))
    }

    pub fn run(&self, id: &str, bundle: &Bundle) -> Run {
        self.runc(&["run", "--bundle", bundle.path().to_str().unwrap(), id])
    }

    pub fn state(&self, id: &str) -> Value {
        let r = self.runc(&["state", id]).success();
        serde_json::from_str(&r.stdout).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or_default().to_string()
    }

    /// Wait until the container reaches `status` (processes exit asynchronously).
    pub fn wait_status(&self, id: &str, status: &str) {
        for _ in 0..500 {
            if self.status(id) == status {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{id} never became {status}: {}", self.status(id));
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            run_command(self.command().args(["delete", "--force", id]));
        }
        wait_for_orphans();
        if std::thread::panicking() {
            return;
        }
        for id in self.ids.borrow().iter() {
            assert_no_cgroup(id);
            assert!(!self.root.path().join(id).exists(), "state directory of {id} left behind");
        }
    }
}

/// The container's cgroup (default path /berth/<id>) must be gone from every hierarchy.
#[track_caller]
pub fn assert_no_cgroup(id: &str) {
    for h in ["memory", "pids", "cpu", "freezer", "devices", "unified", ""] {
        let p = Path::new("/sys/fs/cgroup").join(h).join("berth").join(id);
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
}

/// Reap zombies whose parent is us (containers orphaned to this subreaper) and that were
/// already zombies, unclaimed, in the previous scan (`seen`): a child the harness spawned is
/// registered within microseconds, long before a second scan. Returns this scan's candidates.
fn reap_orphans(seen: &[i32]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut candidates = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return candidates };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()));
        if state != Some("Z") || ppid != Some(me) || OWN.lock().unwrap().contains(&pid) {
            continue;
        }
        if seen.contains(&pid) {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        } else {
            candidates.push(pid);
        }
    }
    candidates
}

/// Wait until no orphan zombie of ours is left (used before checking for leaks).
pub fn wait_for_orphans() {
    for _ in 0..200 {
        let me = std::process::id().to_string();
        let zombies = fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
            fs::read_to_string(e.path().join("stat")).ok().and_then(|s| s.rfind(')').map(|i| s[i + 2..].to_string())).is_some_and(|r| {
                let mut f = r.split_whitespace();
                f.next() == Some("Z") && f.next() == Some(me.as_str())
            })
        });
        if !zombies {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Children of this process that are still alive (a leak if any remain after a test).
pub fn live_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..])
                && rest.split_whitespace().nth(1) == Some(me.as_str())
            {
                out.push(pid);
            }
        }
    }
    out
}

/// A response body as JSON, or a failure that shows it.
#[track_caller]
pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Wait (up to 20 s) for `f` to hold: what berthd does just after it answers (deferred deletes,
/// shims exiting) is waited for, not assumed.
#[track_caller]
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// An isolated berthd: own data root, exec root and socket; Drop stops it (SIGTERM) and checks
/// that it exited and removed its socket.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// Started in a network namespace of its own (its bridges, rules and firewall policy are
    /// its own, so a test may change them without touching the host's).
    own_netns: bool,
}

impl TestDaemon {
    pub fn start() -> TestDaemon {
        Self::start_with_config("{}")
    }

    /// A daemon with `busybox:latest` imported, as most engine tests want; None (the test
    /// skips) without root.
    pub fn with_busybox() -> Option<TestDaemon> {
        if !is_root() {
            return None;
        }
        let d = TestDaemon::start();
        d.import_busybox();
        Some(d)
    }

    /// A daemon with this `daemon.json`.
    pub fn start_with_config(daemon_json: &str) -> TestDaemon {
        let dir = tempfile::Builder::new().prefix("berth-daemon-").tempdir().unwrap();
        fs::write(dir.path().join("daemon.json"), daemon_json).unwrap();
        let mut d = TestDaemon { dir, child: None, own_netns: false };
        d.launch();
        d
    }

    /// A daemon in a network namespace of its own (`unshare -n`), with busybox imported; None
    /// (the test skips) without root.
    pub fn with_busybox_in_own_netns() -> Option<TestDaemon> {
        if !is_root() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("berth-daemon-").tempdir().unwrap();
        fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let mut d = TestDaemon { dir, child: None, own_netns: true };
        d.launch();
        d.import_busybox();
        Some(d)
    }

    /// A command run in berthd's network namespace (`nsenter -n`).
    pub fn in_netns(&self, args: &[&str]) -> Run {
        let pid = self.pid().to_string();
        run_command(Command::new("nsenter").args(["-t", &pid, "-n"]).args(args))
    }

    /// Start berthd (again) on this daemon's roots.
    pub fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// [`TestDaemon::launch`] that reports failure instead of panicking (for Drop).
    fn try_launch(&mut self) -> Result<(), String> {
        become_subreaper();
        let dir = &self.dir;
        let log = fs::OpenOptions::new().create(true).append(true).open(dir.path().join("berthd.log")).map_err(|e| e.to_string())?;
        let mut cmd = if self.own_netns {
            // unshare execs berthd: the child's pid is berthd's.
            let mut c = Command::new("unshare");
            c.arg("-n").arg(bin("berthd"));
            c
        } else {
            Command::new(bin("berthd"))
        };
        let child = cmd
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--config-file")
            .arg(dir.path().join("daemon.json"))
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .arg("--bridge")
            .arg(self.bridge())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_own(child).map_err(|e| format!("starting berthd: {e}"))?;
        self.child = Some(child);
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(format!("berthd did not start: {}", self.log()))
    }

    /// This daemon's own cgroup parent (tests run in parallel, each with its own berthd), so a
    /// test sees exactly the cgroups its containers have: `berth-test-<the dir's suffix>`.
    pub fn cgroup_parent(&self) -> String {
        let name = self.dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("berth-test-{}", name.trim_start_matches("berth-daemon-"))
    }

    /// This daemon's own default bridge (and nftables table): `berth-t` and the dir's suffix.
    pub fn bridge(&self) -> String {
        let name = self.dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let suffix: String = name.trim_start_matches("berth-daemon-").chars().filter(char::is_ascii_alphanumeric).take(6).collect();
        format!("berth-t{suffix}")
    }

    /// The directories of this daemon's cgroup parent that exist, one per hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let parent = self.cgroup_parent();
        let mut out = Vec::new();
        for e in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let p = e.path().join(&parent);
            if p.is_dir() {
                out.push(p);
            }
        }
        if Path::new("/sys/fs/cgroup").join(&parent).is_dir() {
            out.push(Path::new("/sys/fs/cgroup").join(&parent));
        }
        out
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// kill -9 berthd (containers and shims live on).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            OWN.lock().unwrap().retain(|p| *p != child.id() as i32);
        }
    }

    /// A request with a body: (status, response body).
    pub fn request_body(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        write!(s, "{method} {path} HTTP/1.0\r\nHost: berth\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len())
            .unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, json: &str) -> (u16, String) {
        self.request_body("POST", path, "application/json", json.as_bytes())
    }

    /// `busybox:latest`, imported from the busybox fixture.
    pub fn import_busybox(&self) {
        let tar = Command::new("tar").arg("-C").arg(busybox_rootfs()).args(["-c", "."]).output().unwrap();
        assert!(tar.status.success());
        let (status, body) =
            self.request_body("POST", "/images/create?fromSrc=-&repo=busybox&tag=latest", "application/x-tar", &tar.stdout);
        assert_eq!(status, 200, "{body}");
    }

    /// Remove every container (force), so nothing outlives the test.
    pub fn remove_all(&self) {
        let (_, body) = self.request("GET", "/containers/json?all=1");
        let list: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        for c in list {
            if let Some(id) = c["Id"].as_str() {
                let _ = self.request("DELETE", &format!("/containers/{id}?force=1"));
            }
        }
    }

    /// The berth CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Run {
        let mut c = Command::new(bin("berth"));
        c.env("DOCKER_HOST", format!("unix://{}", self.socket().display())).args(args);
        run_command(&mut c)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("exec/berth.sock")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// One HTTP/1.0 request over the socket: (status, body).
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        write!(s, "{method} {path} HTTP/1.0\r\nHost: berth\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// The real docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Run {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.socket().display())).args(args);
        run_command(&mut c)
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let status = child.wait().ok();
        OWN.lock().unwrap().retain(|p| *p != child.id() as i32);
        status
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // Killed and not started again (a test failed in between): start it once more, so it
        // adopts whatever containers are left and removes them.
        if self.child.is_none() && fs::read_dir(self.dir.path().join("data/containers")).is_ok_and(|mut d| d.next().is_some()) {
            let _ = self.try_launch();
        }
        if self.child.is_some() {
            self.remove_all();
        }
        let status = self.stop();
        if !std::thread::panicking() {
            assert!(status.is_none_or(|s| s.success()), "berthd exited with {status:?}");
            assert!(!self.socket().exists(), "berthd left its socket behind");
        }
    }
}

/// A real registry (Debian's `docker-registry`) on 127.0.0.1 and a free port, with its storage
/// in a temp dir; plain HTTP, or with basic auth (htpasswd) and/or TLS from a CA made for the
/// test. Drop stops it and removes everything.
pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub creds: Option<(String, String)>,
    /// `<dir>/certs.d`, laid out as `/etc/docker/certs.d` (`<addr>/ca.crt`), when TLS is on.
    pub certs_dir: Option<PathBuf>,
}

#[derive(Default, Clone, Copy)]
pub struct RegistryOptions {
    pub auth: bool,
    pub tls: bool,
}

impl TestRegistry {
    /// None (the test skips) without docker-registry outside CI.
    pub fn start(opts: RegistryOptions) -> Option<TestRegistry> {
        if !have("docker-registry") || opts.auth && !have("htpasswd") || opts.tls && !have("openssl") {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut certs_dir = None;
        if opts.tls {
            let d = dir.path();
            let sh = |script: &str| run_command(Command::new("sh").arg("-ec").arg(script).current_dir(d)).success();
            sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=berth-test-ca 2>/dev/null
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
                printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext
                openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext 2>/dev/null
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key -out client.csr -subj /CN=berth-test-client 2>/dev/null
                printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > cext
                openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.cert -days 2 -extfile cext 2>/dev/null");
            // Laid out as /etc/docker/certs.d: the CA, and the client certificate the registry
            // demands (a client that does not read the directory cannot connect at all).
            let certs = d.join("certs.d");
            fs::create_dir_all(certs.join(&addr)).unwrap();
            for f in ["ca.crt", "client.cert", "client.key"] {
                fs::copy(d.join(f), certs.join(&addr).join(f)).unwrap();
            }
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display(),
                d.join("ca.crt").display()
            ));
            certs_dir = Some(certs);
        }
        let mut creds = None;
        if opts.auth {
            let (user, pass) = ("tester".to_string(), "s3cret-pass".to_string());
            let out = run_command(Command::new("htpasswd").args(["-Bbn", &user, &pass])).success();
            fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", dir.path().join("htpasswd").display()));
            creds = Some((user, pass));
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut r = TestRegistry { dir, child: None, addr, creds, certs_dir };
        r.restart();
        Some(r)
    }

    /// Start it (again, after [`TestRegistry::kill`]) on the same address and storage.
    pub fn restart(&mut self) {
        self.kill();
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("registry.log")).unwrap();
        let mut registry = Command::new("docker-registry");
        let child =
            registry.arg("serve").arg(self.dir.path().join("config.yml")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let child = spawn_own(child).expect("starting docker-registry");
        self.child = Some(child);
        wait_until("the registry to listen", || std::net::TcpStream::connect(&self.addr).is_ok());
    }

    /// skopeo's flags to write to this registry.
    fn dest_flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        match &self.certs_dir {
            Some(c) => f.push(format!("--dest-cert-dir={}", c.join(&self.addr).display())),
            None => f.push("--dest-tls-verify=false".into()),
        }
        if let Some((u, p)) = &self.creds {
            f.push(format!("--dest-creds={u}:{p}"));
        }
        f
    }

    /// skopeo's flags to read from this registry (`copy`).
    pub fn src_flags(&self) -> Vec<String> {
        self.dest_flags().into_iter().map(|f| f.replacen("--dest-", "--src-", 1)).collect()
    }

    /// What skopeo says of `name` (`repo:tag`) in this registry (`skopeo inspect`).
    pub fn inspect(&self, name: &str) -> Value {
        let flags: Vec<String> = self.dest_flags().into_iter().map(|f| f.replacen("--dest-", "--", 1)).collect();
        let mut c = Command::new("skopeo");
        c.arg("inspect").args(flags).arg(format!("docker://{}/{name}", self.addr));
        json(&run_command(&mut c).success().stdout)
    }

    /// Copy an OCI layout (all of its platforms) into the registry as `name` (`repo:tag`).
    pub fn push_layout(&self, layout: &Path, name: &str) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--all", "--preserve-digests"]).args(self.dest_flags());
        c.arg(format!("oci:{}", layout.display())).arg(format!("docker://{}/{name}", self.addr));
        run_command(&mut c).success();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stop it now (a registry going away in the middle of a transfer).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            OWN.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| *p != c.id() as i32);
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An OCI image layout written by hand (blobs, manifests, an index), to push with skopeo:
/// images of any number of layers, compressions and platforms.
pub struct OciLayout {
    pub dir: tempfile::TempDir,
    manifests: Vec<Value>,
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

impl Default for OciLayout {
    fn default() -> Self {
        Self::new()
    }
}

impl OciLayout {
    pub fn new() -> OciLayout {
        let dir = tempfile::Builder::new().prefix("berth-layout-").tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout { dir, manifests: Vec::new() }
    }

    /// Store a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, data: &[u8]) -> Value {
        let hex = sha256_hex(data);
        fs::write(self.dir.path().join("blobs/sha256").join(&hex), data).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
    }

    /// An image of `layers` (uncompressed tars) for `arch`, compressed as asked; returns the
    /// manifest's descriptor (also listed in the layout's index unless `platforms` is used).
    pub fn image(&mut self, layers: &[Vec<u8>], compression: Compression, arch: &str, cmd: &[&str]) -> Value {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(format!("sha256:{}", sha256_hex(l)));
            let (media, data) = match compression {
                Compression::None => ("application/vnd.oci.image.layer.v1.tar", l.clone()),
                Compression::Gzip => {
                    use std::io::Write;
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(l).unwrap();
                    ("application/vnd.oci.image.layer.v1.tar+gzip", gz.finish().unwrap())
                }
                Compression::Zstd => ("application/vnd.oci.image.layer.v1.tar+zstd", zstd::encode_all(&l[..], 3).unwrap()),
            };
            descs.push(self.blob(media, &data));
        }
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "test layer"})).collect::<Vec<_>>(),
        });
        let config = self.blob("application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": descs,
        });
        let mut desc = self.blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest).unwrap());
        desc["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        self.manifests.push(desc.clone());
        desc
    }

    /// Write `index.json`: every image made so far as one tag `tag` (a multi-platform index
    /// when there are several), as skopeo's `oci:DIR:tag` reads it.
    pub fn finish(&self, tag: &str) {
        let mut entries = self.manifests.clone();
        if entries.len() > 1 {
            let nested =
                serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
            let mut desc = self.blob("application/vnd.oci.image.index.v1+json", &serde_json::to_vec(&nested).unwrap());
            desc.as_object_mut().unwrap().remove("platform");
            entries = vec![desc];
        }
        for e in &mut entries {
            e["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
        fs::write(self.dir.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// A tar of `files` (path, contents), written entry by entry so the same files give the same
/// bytes; directories in the paths are made as entries before them.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in files {
        let p = Path::new(path);
        for a in p.ancestors().skip(1) {
            if !a.as_os_str().is_empty() && dirs.insert(a.to_path_buf()) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(1_600_000_000);
                b.append_data(&mut h, a, &[][..]).unwrap();
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The busybox rootfs as one layer tar.
pub fn busybox_layer() -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(busybox_rootfs())
        .args(["--sort=name", "--mtime=@1600000000", "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}
