//! Cgroups behind one trait, with a v1 back end (also used on hybrid hosts) and a v2 back end.
//!
//! A container's cgroup is `<hierarchy>/<cgroups path>`; the runtime creates it, writes the
//! spec's resources, and removes it (and the parents it made, when empty) at delete. It never
//! writes into a cgroup it did not create.

mod v1;
mod v2;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::Serialize;

pub use v1::V1;
pub use v2::V2;

use crate::rootfs::CgroupView;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: writing {value:?} to {path}: {source}")]
    Write { path: PathBuf, value: String, source: std::io::Error },
    #[error("cgroup: reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cgroup: creating {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cgroup: removing {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("cgroup: {0}")]
    Unsupported(String),
    #[error("cgroup: invalid path {0:?}")]
    InvalidPath(PathBuf),
    #[error("cgroup: no cgroup file system is mounted under /sys/fs/cgroup")]
    NotMounted,
    /// A memory limit below what the cgroup uses and cannot give back (runc's words).
    #[error("unable to set memory limit to {limit} (current usage: {usage}, peak usage: {peak})")]
    MemoryBusy { limit: i64, usage: u64, peak: u64 },
    #[error("cgroup: {path} did not reach {wanted} within {waited:?}")]
    Timeout { path: PathBuf, wanted: &'static str, waited: Duration },
}

pub type Result<T> = std::result::Result<T, CgroupError>;

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// v1 controllers only.
    Legacy,
    /// v1 controllers, plus a cgroup2 mount at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

pub fn detect_mode() -> Option<Mode> {
    let is_cgroup2 = |p: &str| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC);
    if is_cgroup2("/sys/fs/cgroup") {
        Some(Mode::Unified)
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        Some(Mode::Hybrid)
    } else if Path::new("/sys/fs/cgroup").is_dir() {
        Some(Mode::Legacy)
    } else {
        None
    }
}

/// Whether containers can be given real-time CPU time: the kernel schedules real-time tasks
/// by group (CONFIG_RT_GROUP_SCHED), which only cgroup v1's cpu controller offers.
pub fn realtime_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(find_realtime)
}

fn find_realtime() -> bool {
    if detect_mode().is_none_or(|m| m == Mode::Unified) {
        return false;
    }
    let Ok(text) = read(Path::new("/proc/self/mountinfo")) else { return false };
    v1::parse_mountinfo(&text).iter().any(|(c, root)| c == "cpu" && root.join("cpu.rt_runtime_us").exists())
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub total: u64,
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CpuStats {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MemoryUsage {
    pub usage: u64,
    pub max: u64,
    pub limit: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MemoryStats {
    pub cache: u64,
    pub usage: MemoryUsage,
    pub oom_kills: u64,
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PidsStats {
    pub current: u64,
    pub limit: u64,
}

/// One block I/O counter of one device (`op`: v1's `Read`, `Write` …; v2's `read`, `write`, as
/// dockerd reports each).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BlkioStats {
    /// Bytes read and written.
    pub service_bytes: Vec<BlkioEntry>,
    /// Operations.
    pub serviced: Vec<BlkioEntry>,
}

/// v1's `blkio.throttle.io_service_bytes` / `io_serviced`: `8:0 Read 4096` lines (and a
/// `Total` line without a device, which is left out).
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry { major: major.parse().ok()?, minor: minor.parse().ok()?, op: op.to_string(), value: value.parse().ok()? })
        })
        .collect()
}

/// v2's `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` lines, as dockerd
/// turns them into entries: bytes and operations, `read` and `write`.
pub(crate) fn parse_io_stat_v2(text: &str) -> BlkioStats {
    let mut s = BlkioStats::default();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else { continue };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(value) = v.parse::<u64>() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut s.service_bytes, "read"),
                "wbytes" => (&mut s.service_bytes, "write"),
                "rios" => (&mut s.serviced, "read"),
                "wios" => (&mut s.serviced, "write"),
                _ => continue,
            };
            list.push(BlkioEntry { major, minor, op: op.into(), value });
        }
    }
    s
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub blkio: BlkioStats,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
}

/// One container's cgroup, whatever the host's cgroup version.
pub trait Cgroup {
    /// Create the cgroup (and missing parents).
    fn create(&self) -> Result<()>;
    /// Move a process into it.
    fn add(&self, pid: i32) -> Result<()>;
    /// Files in which a single-threaded process writes `0` to move itself in. Moving another
    /// process (`add`) takes the kernel's global cgroup migration lock, whose writer waits for an
    /// RCU grace period (~10 ms on a quiet VM); moving one's own thread through v1's `tasks` does
    /// not. Empty on v2, where there is no such file (see `clone_into`).
    fn self_join_files(&self) -> Vec<PathBuf>;
    /// The v2 directory (all of it on v2, the unified part on a hybrid host) a child can be
    /// cloned straight into with `CLONE_INTO_CGROUP`, which does not take that lock either.
    fn clone_into(&self) -> Option<PathBuf>;
    /// Write the spec's resource limits.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    fn freeze(&self, frozen: bool) -> Result<()>;
    fn is_frozen(&self) -> bool;
    /// Every process in it.
    fn pids(&self) -> Result<Vec<i32>>;
    fn stats(&self) -> Result<Stats>;
    /// How many processes the OOM killer killed in it (what `stats` reports, read alone).
    fn oom_kills(&self) -> u64;
    /// Remove it, and (with [`Parents::RemoveEmpty`]) its parents while they are empty.
    /// Processes must be gone.
    fn destroy(&self, parents: Parents) -> Result<()>;
    /// Remove it if nothing uses it (no processes, no child cgroups); otherwise leave it.
    fn remove_if_unused(&self) -> Result<()>;
    /// What the container should see at its `cgroup` mount.
    fn view(&self) -> CgroupView;
    /// Does this cgroup exist on the host?
    fn exists(&self) -> bool;
}

/// What removing a cgroup does with its parents (`/berth` for `/berth/ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parents {
    /// Remove each one that is left empty (a standalone runtime cleans up after itself).
    RemoveEmpty,
    /// Leave them: a daemon that starts container after container keeps the parent it made and
    /// removes it when it stops (making a v1 parent again costs a mkdir per hierarchy and the
    /// cpuset setup for every `run`).
    Keep,
}

/// The cgroup for `path` (a path below each hierarchy's root, like `/berth/ID`) on this host.
pub fn open(path: &Path) -> Result<Box<dyn Cgroup>> {
    let rel = relative(path)?;
    match detect_mode().ok_or(CgroupError::NotMounted)? {
        Mode::Unified => Ok(Box::new(V2::new(PathBuf::from("/sys/fs/cgroup"), rel))),
        Mode::Hybrid => Ok(Box::new(V1::from_mountinfo(rel, Some(PathBuf::from("/sys/fs/cgroup/unified")))?)),
        Mode::Legacy => Ok(Box::new(V1::from_mountinfo(rel, None)?)),
    }
}

/// A cgroups path as a relative path with no `..`, so it can never leave a hierarchy.
pub fn relative(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => return Err(CgroupError::InvalidPath(path.to_path_buf())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath(path.to_path_buf()));
    }
    Ok(out)
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Write { path: path.to_path_buf(), value: value.to_string(), source })
}

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })
}

pub(crate) fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) as a map.
pub(crate) fn read_keyed(path: &Path) -> BTreeMap<String, u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>> {
    Ok(read(path)?.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The processes of the cgroup at `dir` and of every cgroup below it (made by `exec --cgroup`,
/// or by a systemd in the container): `cgroup.procs` lists a cgroup's own only.
pub(crate) fn read_pids_tree(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = read_pids(&dir.join("cgroup.procs"))?;
    for sub in child_cgroups(dir) {
        // One that went meanwhile has no processes.
        if let Ok(more) = read_pids_tree(&sub) {
            pids.extend(more);
        }
    }
    Ok(pids)
}

/// The cgroups directly below `dir`.
fn child_cgroups(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect())
        .unwrap_or_default()
}

pub(crate) fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| CgroupError::Create { path: path.to_path_buf(), source })
}

/// rmdir `root/rel` and then its parents up to `root` while they are empty. A cgroup whose last
/// process has just exited can answer EBUSY for a moment, so retry briefly.
pub(crate) fn remove_with_parents(root: &Path, rel: &Path, parents: Parents) -> Result<()> {
    let leaf = root.join(rel);
    let deadline = Instant::now() + Duration::from_secs(2);
    remove_tree(&leaf, deadline)?;
    let mut parent = rel.parent().filter(|_| parents == Parents::RemoveEmpty);
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        // Another container may still use the parent: then it stays.
        if fs::remove_dir(root.join(p)).is_err() {
            break;
        }
        parent = p.parent();
    }
    Ok(())
}

/// rmdir `dir` after the cgroups below it, deepest first.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<()> {
    for sub in child_cgroups(dir) {
        remove_tree(&sub, deadline)?;
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => return Err(CgroupError::Remove { path: dir.to_path_buf(), source }),
        }
    }
}

/// rmdir `dir` unless it is in use (EBUSY: processes or child cgroups) or already gone.
pub(crate) fn remove_unused(dir: &Path) -> Result<()> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(source) => Err(CgroupError::Remove { path: dir.to_path_buf(), source }),
    }
}

/// Wait until `done` holds, polling; cgroup state changes are asynchronous.
pub(crate) fn wait_for(path: &Path, wanted: &'static str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    while !done() {
        if start.elapsed() > timeout {
            return Err(CgroupError::Timeout { path: path.to_path_buf(), wanted, waited: timeout });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    Ok(())
}

/// Docker's cpu shares (2–262144) as a cgroup v2 cpu.weight (1–10000), as runc converts them.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 { 0 } else { 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_io_counters_parse_as_dockerd_reports_them() {
        let v1 = parse_blkio_v1("8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n");
        assert_eq!(v1.len(), 3);
        assert_eq!((v1[1].major, v1[1].minor, v1[1].op.as_str(), v1[1].value), (8, 0, "Write", 8192));
        let v2 = parse_io_stat_v2("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n253:1 rbytes=5 wbytes=6 rios=7 wios=8\n");
        let ops: Vec<(u64, &str, u64)> = v2.service_bytes.iter().map(|e| (e.major, e.op.as_str(), e.value)).collect();
        assert_eq!(ops, [(8, "read", 1), (8, "write", 2), (253, "read", 5), (253, "write", 6)]);
        assert_eq!(v2.serviced.iter().map(|e| e.value).collect::<Vec<_>>(), [3, 4, 7, 8]);
        assert!(parse_io_stat_v2("garbage\n8:x rbytes=1\n").service_bytes.is_empty());
    }

    #[test]
    fn cgroup_paths_cannot_climb_out() {
        assert_eq!(relative(Path::new("/berth/abc")).unwrap(), PathBuf::from("berth/abc"));
        assert!(relative(Path::new("/berth/../../etc")).is_err());
        assert!(relative(Path::new("/")).is_err());
    }

    #[test]
    fn converts_shares_like_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }

    #[test]
    fn removes_empty_parents_but_not_busy_ones() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("berth/a")).unwrap();
        fs::create_dir_all(root.path().join("berth/b")).unwrap();
        remove_with_parents(root.path(), Path::new("berth/a"), Parents::RemoveEmpty).unwrap();
        assert!(root.path().join("berth/b").exists());
        remove_with_parents(root.path(), Path::new("berth/b"), Parents::RemoveEmpty).unwrap();
        assert!(!root.path().join("berth").exists());
    }

    #[test]
    fn sub_cgroups_count_for_processes_and_go_with_the_container() {
        let root = tempfile::tempdir().unwrap();
        let c = root.path().join("berth/c");
        fs::create_dir_all(c.join("sub/deeper")).unwrap();
        fs::write(c.join("cgroup.procs"), "1\n").unwrap();
        fs::write(c.join("sub/cgroup.procs"), "2\n").unwrap();
        fs::write(c.join("sub/deeper/cgroup.procs"), "3\n4\n").unwrap();
        let mut pids = read_pids_tree(&c).unwrap();
        pids.sort();
        assert_eq!(pids, [1, 2, 3, 4]);
        // A real cgroup's files cannot be unlinked and go with its rmdir: the fake's must go first.
        for f in ["cgroup.procs", "sub/cgroup.procs", "sub/deeper/cgroup.procs"] {
            fs::remove_file(c.join(f)).unwrap();
        }
        remove_with_parents(root.path(), Path::new("berth/c"), Parents::RemoveEmpty).unwrap();
        assert!(!root.path().join("berth").exists());
    }

    #[test]
    fn keeps_parents_when_asked() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("berth/a")).unwrap();
        remove_with_parents(root.path(), Path::new("berth/a"), Parents::Keep).unwrap();
        assert!(!root.path().join("berth/a").exists());
        assert!(root.path().join("berth").exists());
        remove_unused(&root.path().join("berth")).unwrap();
        assert!(!root.path().join("berth").exists());
        remove_unused(&root.path().join("berth")).unwrap();
    }
}
