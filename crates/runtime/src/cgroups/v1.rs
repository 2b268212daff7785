//! cgroup v1: one directory per mounted hierarchy (and, on hybrid hosts, one in the unified tree).

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::*;

/// Hierarchies the runtime joins; others (perf_event, net_cls, …) are left alone.
const CONTROLLERS: [&str; 10] = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb", "systemd"];

pub struct V1 {
    /// (name, mount point), e.g. ("memory", /sys/fs/cgroup/memory). A hierarchy holding several
    /// controllers (cpu,cpuacct) appears once under each name it carries.
    hierarchies: Vec<(String, PathBuf)>,
    rel: PathBuf,
    unified: Option<PathBuf>,
}

impl V1 {
    pub fn new(hierarchies: Vec<(String, PathBuf)>, rel: PathBuf, unified: Option<PathBuf>) -> Self {
        V1 { hierarchies, rel, unified }
    }

    /// With the hierarchies mounted on this host, found once per process: a long-lived caller
    /// (a shim opens its container's cgroup for each kill and at exit) would otherwise read a
    /// mount table that grows with every running container, for each of them.
    pub fn from_mountinfo(rel: PathBuf, unified: Option<PathBuf>) -> Result<Self> {
        static HIERARCHIES: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();
        if let Some(h) = HIERARCHIES.get() {
            return Ok(V1::new(h.clone(), rel, unified));
        }
        let text = read(Path::new("/proc/self/mountinfo"))?;
        let h = HIERARCHIES.get_or_init(|| parse_mountinfo(&text));
        Ok(V1::new(h.clone(), rel, unified))
    }

    fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies.iter().find(|(n, _)| n == controller).map(|(_, m)| m.join(&self.rel))
    }

    /// Distinct directories (a co-mounted hierarchy is visited once).
    fn dirs(&self) -> Vec<PathBuf> {
        self.roots().iter().map(|r| r.join(&self.rel)).collect()
    }

    /// Each distinct hierarchy's mount point, and the unified tree's.
    fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for (_, m) in &self.hierarchies {
            if !roots.contains(m) {
                roots.push(m.clone());
            }
        }
        roots.extend(self.unified.clone());
        roots
    }

    fn set(&self, controller: &str, file: &str, value: &str) -> Result<()> {
        let dir = self.dir(controller).ok_or_else(|| CgroupError::Unsupported(format!("the {controller} controller is not mounted")))?;
        write(&dir.join(file), value)
    }

    /// The kernel refuses (EBUSY) a limit below what the cgroup uses and cannot reclaim: said
    /// with the usage, as runc says it.
    fn set_memory_limit(&self, limit: i64) -> Result<()> {
        match self.set("memory", "memory.limit_in_bytes", &limit.to_string()) {
            Err(CgroupError::Write { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                let dir = self.dir("memory").unwrap_or_default();
                let (usage, peak) = (read_u64(&dir.join("memory.usage_in_bytes")), read_u64(&dir.join("memory.max_usage_in_bytes")));
                Err(CgroupError::MemoryBusy { limit, usage, peak })
            }
            other => other,
        }
    }
}

/// Every result is tried; the first error, if any, is the answer.
fn first_error(results: impl Iterator<Item = Result<()>>) -> Result<()> {
    let mut first = Ok(());
    for r in results {
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Mount points of v1 hierarchies from /proc/self/mountinfo: for each controller, the host's own
/// mount of its hierarchy. Other mounts of the same hierarchy are ignored: binds of a subtree
/// (another engine's container sees its own cgroup as its root), and binds of the whole tree
/// elsewhere (often read-only), which would otherwise get our cgroups made in them. Among mounts
/// of the hierarchy's root, one under /sys/fs/cgroup and writable wins, then the first mounted.
pub fn parse_mountinfo(text: &str) -> Vec<(String, PathBuf)> {
    // (controller, mount point, rank): lower ranks are better.
    let mut best: Vec<(String, PathBuf, (bool, bool))> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let super_opts = post.nth(1).unwrap_or("");
        let mut pre = pre.split_whitespace().skip(3);
        let (Some(root), Some(mount_point), Some(mount_opts)) = (pre.next(), pre.next(), pre.next()) else { continue };
        if root != "/" {
            continue;
        }
        let mount_point = PathBuf::from(mount_point);
        let rank = (!mount_point.starts_with("/sys/fs/cgroup"), !mount_opts.split(',').any(|o| o == "rw"));
        for opt in super_opts.split(',') {
            let name = opt.strip_prefix("name=").unwrap_or(opt);
            if !CONTROLLERS.contains(&name) {
                continue;
            }
            match best.iter_mut().find(|(n, _, _)| n == name) {
                Some(slot) if rank < slot.2 => *slot = (name.to_string(), mount_point.clone(), rank),
                Some(_) => {}
                None => best.push((name.to_string(), mount_point.clone(), rank)),
            }
        }
    }
    best.into_iter().map(|(n, m, _)| (n, m)).collect()
}

fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = d.typ().map(|t| t.as_str().to_string()).unwrap_or_else(|| "a".into());
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map(|n| n.to_string()).unwrap_or_else(|| "*".into());
    format!("{typ} {}:{} {}", num(d.major()), num(d.minor()), d.access().clone().unwrap_or_else(|| "rwm".into()))
}

impl Cgroup for V1 {
    fn create(&self) -> Result<()> {
        for d in self.dirs() {
            mkdir(&d)?;
        }
        // A new cpuset cgroup starts with no cpus and no mems and refuses tasks: inherit them.
        if let Some((_, mount)) = self.hierarchies.iter().find(|(n, _)| n == "cpuset") {
            let mut dir = mount.clone();
            for c in self.rel.components() {
                let parent = dir.clone();
                dir.push(c);
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    if read(&dir.join(f))?.trim().is_empty() {
                        write(&dir.join(f), read(&parent.join(f))?.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn add(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn self_join_files(&self) -> Vec<PathBuf> {
        let unified = self.unified.as_ref().map(|u| u.join(&self.rel));
        self.dirs().into_iter().filter(|d| Some(d) != unified.as_ref()).map(|d| d.join("tasks")).collect()
    }

    fn clone_into(&self) -> Option<PathBuf> {
        self.unified.as_ref().map(|u| u.join(&self.rel))
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            if let Some(l) = m.limit() {
                let memsw = self.dir("memory").map(|d| d.join("memory.memsw.limit_in_bytes")).filter(|p| p.exists());
                // memsw must stay >= the memory limit after each write: raise memsw first when
                // the new one is above the current one, else lower the memory limit first.
                let current = memsw.as_ref().and_then(|p| read(p).ok()).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(i64::MAX);
                let swap = m.swap().filter(|_| memsw.is_some());
                match swap {
                    Some(s) if s == -1 || s > current => {
                        self.set("memory", "memory.memsw.limit_in_bytes", &s.to_string())?;
                        self.set_memory_limit(l)?;
                    }
                    Some(s) => {
                        self.set_memory_limit(l)?;
                        self.set("memory", "memory.memsw.limit_in_bytes", &s.to_string())?;
                    }
                    None => self.set_memory_limit(l)?,
                }
            }
            if let Some(v) = m.reservation() {
                self.set("memory", "memory.soft_limit_in_bytes", &v.to_string())?;
            }
            if let Some(v) = m.swappiness() {
                self.set("memory", "memory.swappiness", &v.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                self.set("memory", "memory.oom_control", "1")?;
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(v) = c.shares() {
                self.set("cpu", "cpu.shares", &v.to_string())?;
            }
            if let Some(v) = c.period() {
                self.set("cpu", "cpu.cfs_period_us", &v.to_string())?;
            }
            if let Some(v) = c.quota() {
                self.set("cpu", "cpu.cfs_quota_us", &v.to_string())?;
            }
            // The period first: the kernel checks the runtime against it.
            if let Some(v) = c.realtime_period().filter(|v| *v != 0) {
                self.set("cpu", "cpu.rt_period_us", &v.to_string())?;
            }
            if let Some(v) = c.realtime_runtime().filter(|v| *v != 0) {
                self.set("cpu", "cpu.rt_runtime_us", &v.to_string())?;
            }
            if let Some(v) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                self.set("cpuset", "cpuset.cpus", v)?;
            }
            if let Some(v) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                self.set("cpuset", "cpuset.mems", v)?;
            }
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
            self.set("pids", "pids.max", &v)?;
        }
        if let Some(b) = r.block_io() {
            if let Some(w) = b.weight() {
                let dir = self.dir("blkio").ok_or_else(|| CgroupError::Unsupported("the blkio controller is not mounted".into()))?;
                let file = ["blkio.weight", "blkio.bfq.weight"].into_iter().find(|f| dir.join(f).exists()).ok_or_else(|| {
                    CgroupError::Unsupported("blkio weight: the kernel offers neither blkio.weight nor blkio.bfq.weight".into())
                })?;
                write(&dir.join(file), &w.to_string())?;
            }
            let throttles = [
                ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
                ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
                ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
                ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
            ];
            for (file, list) in throttles {
                for t in list.clone().unwrap_or_default() {
                    self.set("blkio", file, &format!("{}:{} {}", t.major(), t.minor(), t.rate()))?;
                }
            }
        }
        for h in r.hugepage_limits().clone().unwrap_or_default() {
            self.set("hugetlb", &format!("hugetlb.{}.limit_in_bytes", h.page_size()), &h.limit().to_string())?;
        }
        if let Some(devices) = r.devices() {
            for d in devices {
                let file = if d.allow() { "devices.allow" } else { "devices.deny" };
                self.set("devices", file, &device_rule(d))?;
            }
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::Unsupported("linux.resources.unified needs cgroup v2".into()));
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let dir = self.dir("freezer").ok_or_else(|| CgroupError::Unsupported("the freezer controller is not mounted".into()))?;
        let file = dir.join("freezer.state");
        let (value, wanted) = if frozen { ("FROZEN", "FROZEN") } else { ("THAWED", "THAWED") };
        write(&file, value)?;
        wait_for(&file, wanted, Duration::from_secs(5), || {
            // A task caught mid-syscall can leave the cgroup FREEZING; asking again moves it on.
            let state = read(&file).unwrap_or_default();
            if state.trim() == "FREEZING" {
                let _ = write(&file, value);
            }
            state.trim() == wanted
        })
    }

    fn is_frozen(&self) -> bool {
        self.dir("freezer").and_then(|d| read(&d.join("freezer.state")).ok()).is_some_and(|s| s.trim() != "THAWED")
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "freezer", "memory", "cpu"]
            .into_iter()
            .find_map(|c| self.dir(c))
            .ok_or_else(|| CgroupError::Unsupported("no cgroup hierarchy to list processes from".into()))?;
        read_pids_tree(&dir)
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(d) = self.dir("cpuacct") {
            s.cpu.usage.total = read_u64(&d.join("cpuacct.usage"));
            s.cpu.usage.percpu =
                read(&d.join("cpuacct.usage_percpu")).unwrap_or_default().split_whitespace().filter_map(|v| v.parse().ok()).collect();
            let stat = read_keyed(&d.join("cpuacct.stat"));
            // cpuacct.stat is in USER_HZ ticks.
            let tick = 1_000_000_000 / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
            s.cpu.usage.user = stat.get("user").copied().unwrap_or(0) * tick;
            s.cpu.usage.kernel = stat.get("system").copied().unwrap_or(0) * tick;
        }
        if let Some(d) = self.dir("cpu") {
            let t = read_keyed(&d.join("cpu.stat"));
            s.cpu.throttling = Throttling {
                periods: t.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: t.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: t.get("throttled_time").copied().unwrap_or(0),
            };
        }
        if let Some(d) = self.dir("memory") {
            s.memory.usage = MemoryUsage {
                usage: read_u64(&d.join("memory.usage_in_bytes")),
                max: read_u64(&d.join("memory.max_usage_in_bytes")),
                limit: read_u64(&d.join("memory.limit_in_bytes")),
                failcnt: read_u64(&d.join("memory.failcnt")),
            };
            s.memory.raw = read_keyed(&d.join("memory.stat"));
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
            s.memory.oom_kills = self.oom_kills();
        }
        if let Some(d) = self.dir("pids") {
            s.pids.current = read_u64(&d.join("pids.current"));
            s.pids.limit = read_u64(&d.join("pids.max"));
        }
        if let Some(d) = self.dir("blkio") {
            s.blkio.service_bytes = parse_blkio_v1(&read(&d.join("blkio.throttle.io_service_bytes")).unwrap_or_default());
            s.blkio.serviced = parse_blkio_v1(&read(&d.join("blkio.throttle.io_serviced")).unwrap_or_default());
        }
        Ok(s)
    }

    fn oom_kills(&self) -> u64 {
        self.dir("memory").and_then(|d| read_keyed(&d.join("memory.oom_control")).get("oom_kill").copied()).unwrap_or(0)
    }

    fn destroy(&self, parents: Parents) -> Result<()> {
        first_error(self.roots().iter().map(|root| remove_with_parents(root, &self.rel, parents)))
    }

    fn remove_if_unused(&self) -> Result<()> {
        first_error(self.dirs().iter().map(|d| remove_unused(d)))
    }

    fn view(&self) -> CgroupView {
        let mut seen = Vec::new();
        for (name, mount) in &self.hierarchies {
            // Name the directory after the mount point ("cpu,cpuacct" stays one directory).
            let dir_name = mount.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| name.clone());
            if !seen.iter().any(|(n, _): &(String, PathBuf)| *n == dir_name) {
                seen.push((dir_name, mount.join(&self.rel)));
            }
        }
        CgroupView::V1(seen)
    }

    fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/perf_event rw shared:14 - cgroup cgroup rw,perf_event
";

    #[test]
    fn finds_hierarchies_in_mountinfo() {
        let h = parse_mountinfo(MOUNTINFO);
        let names: Vec<_> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["systemd", "cpu", "cpuacct", "memory"]);
        assert_eq!(h[1].1, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        let v = V1::new(h, PathBuf::from("berth/x"), None);
        let CgroupView::V1(dirs) = v.view() else { panic!() };
        assert_eq!(dirs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["systemd", "cpu,cpuacct", "memory"]);
    }

    #[test]
    fn other_mounts_of_a_hierarchy_are_not_ours() {
        // A read-only bind of the memory hierarchy elsewhere, mounted before and after ours, a
        // container's view of its own subtree, and a stacked read-only bind of a subtree.
        let text = "\
50 30 0:30 / /var/lib/other/ctr/cgroup/memory ro,nosuid shared:30 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
51 30 0:30 / /tmp/berth-stray ro,nosuid shared:31 - cgroup cgroup rw,memory
52 30 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro shared:32 - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
53 30 0:31 / /mnt/pids-only rw shared:33 - cgroup cgroup rw,pids
";
        let h = parse_mountinfo(text);
        assert_eq!(
            h,
            [
                ("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory")),
                ("cpu".to_string(), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")),
                ("cpuacct".to_string(), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")),
                // The host's only mount of a hierarchy is used wherever it is.
                ("pids".to_string(), PathBuf::from("/mnt/pids-only")),
            ]
        );
        let v = V1::new(h, PathBuf::from("berth/x"), None);
        assert_eq!(v.roots().len(), 3, "one directory per hierarchy: {:?}", v.roots());
    }

    fn fake(controllers: &[&str]) -> (tempfile::TempDir, V1) {
        let t = tempfile::tempdir().unwrap();
        let h = controllers.iter().map(|c| (c.to_string(), t.path().join(c))).collect::<Vec<_>>();
        for (_, m) in &h {
            fs::create_dir_all(m).unwrap();
        }
        let v = V1::new(h, PathBuf::from("berth/c1"), None);
        (t, v)
    }

    #[test]
    fn processes_join_v1_through_tasks_and_the_unified_part_by_clone() {
        let t = tempfile::tempdir().unwrap();
        let h = vec![("cpu".to_string(), t.path().join("cpu,cpuacct")), ("cpuacct".to_string(), t.path().join("cpu,cpuacct"))];
        let v = V1::new(h, PathBuf::from("berth/c1"), Some(t.path().join("unified")));
        // A co-mounted hierarchy once; never the unified tree, which has no tasks file.
        assert_eq!(v.self_join_files(), vec![t.path().join("cpu,cpuacct/berth/c1/tasks")]);
        assert_eq!(v.clone_into(), Some(t.path().join("unified/berth/c1")));
        let (_t, legacy) = fake(&["memory"]);
        assert_eq!(legacy.clone_into(), None);
    }

    #[test]
    fn writes_limits_and_device_rules() {
        let (t, v) = fake(&["memory", "cpu", "pids", "devices"]);
        v.create().unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 33554432},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "realtimePeriod": 500000, "realtimeRuntime": 1000},
            "pids": {"limit": 20},
            "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}, {"allow": true, "type": "c", "major": 136, "access": "rwm"}]
        }))
        .unwrap();
        v.apply(&r).unwrap();
        let rd = |p: &str| fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(rd("memory/berth/c1/memory.limit_in_bytes"), "33554432");
        assert_eq!(rd("cpu/berth/c1/cpu.shares"), "512");
        assert_eq!(rd("cpu/berth/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!((rd("cpu/berth/c1/cpu.rt_period_us"), rd("cpu/berth/c1/cpu.rt_runtime_us")), ("500000".into(), "1000".into()));
        assert_eq!(rd("pids/berth/c1/pids.max"), "20");
        assert_eq!(rd("devices/berth/c1/devices.deny"), "a *:* rwm");
        // A plain file keeps only the last write; the kernel's keeps each rule.
        assert_eq!(rd("devices/berth/c1/devices.allow"), "c 136:* rwm");
    }

    #[test]
    fn missing_controller_is_a_clear_error() {
        let (_t, v) = fake(&["memory"]);
        v.create().unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"pids": {"limit": 5}})).unwrap();
        assert!(v.apply(&r).unwrap_err().to_string().contains("pids controller is not mounted"));
    }
}
