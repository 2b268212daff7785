//! cgroup v2: one directory in the unified tree; controllers are enabled down the path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::*;

pub struct V2 {
    root: PathBuf,
    rel: PathBuf,
}

const WANTED: [&str; 6] = ["cpuset", "cpu", "io", "memory", "pids", "hugetlb"];

impl V2 {
    pub fn new(root: PathBuf, rel: PathBuf) -> Self {
        V2 { root, rel }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    fn set(&self, file: &str, value: &str) -> Result<()> {
        write(&self.dir().join(file), value)
    }

    /// Enable the controllers we use in each ancestor's subtree_control, top down.
    fn enable_controllers(&self) -> Result<()> {
        let mut dir = self.root.clone();
        for c in self.rel.components() {
            let available = read(&dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled = read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
            let missing: Vec<String> = available
                .split_whitespace()
                .filter(|c| WANTED.contains(c) && !enabled.split_whitespace().any(|e| e == *c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                write(&dir.join("cgroup.subtree_control"), &missing.join(" "))?;
            }
            dir.push(c);
        }
        Ok(())
    }
}

fn max_or(v: Option<i64>) -> String {
    match v {
        Some(v) if v >= 0 => v.to_string(),
        _ => "max".into(),
    }
}

impl Cgroup for V2 {
    fn create(&self) -> Result<()> {
        mkdir(&self.dir())?;
        self.enable_controllers()
    }

    fn add(&self, pid: i32) -> Result<()> {
        self.set("cgroup.procs", &pid.to_string())
    }

    fn self_join_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn clone_into(&self) -> Option<PathBuf> {
        Some(self.dir())
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            if let Some(l) = m.limit() {
                // The kernel would reclaim and then OOM-kill to get under a lower limit; like
                // cgroup v1's EBUSY, a limit below the usage is refused instead.
                let usage = read_u64(&self.dir().join("memory.current"));
                if l >= 0 && (l as u64) < usage {
                    let peak = read_u64(&self.dir().join("memory.peak")).max(usage);
                    return Err(CgroupError::MemoryBusy { limit: l, usage, peak });
                }
                self.set("memory.max", &max_or(Some(l)))?;
            }
            if let Some(v) = m.reservation() {
                self.set("memory.low", &v.to_string())?;
            }
            // The spec's swap is memory+swap (v1 semantics); v2 limits swap alone.
            if let Some(s) = m.swap() {
                let v = match (s, m.limit()) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                self.set("memory.swap.max", &v)?;
            }
            if m.disable_oom_killer() == Some(true) {
                return Err(CgroupError::Unsupported("disabling the OOM killer needs cgroup v1".into()));
            }
        }
        if let Some(c) = r.cpu() {
            if c.realtime_period().is_some_and(|v| v != 0) || c.realtime_runtime().is_some_and(|v| v != 0) {
                // cgroup v2 has no real-time CPU controller.
                return Err(CgroupError::Unsupported("real-time CPU scheduling (cpu.rt_*) needs cgroup v1".into()));
            }
            if let Some(v) = c.shares().filter(|s| *s > 0) {
                self.set("cpu.weight", &shares_to_weight(v).to_string())?;
            }
            if c.quota().is_some() || c.period().is_some() {
                let period = c.period().unwrap_or(100_000);
                self.set("cpu.max", &format!("{} {period}", max_or(c.quota())))?;
            }
            if let Some(v) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                self.set("cpuset.cpus", v)?;
            }
            if let Some(v) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                self.set("cpuset.mems", v)?;
            }
        }
        if let Some(p) = r.pids() {
            self.set("pids.max", &max_or(Some(p.limit()).filter(|l| *l > 0)))?;
        }
        if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
            let file = ["io.weight", "io.bfq.weight"]
                .into_iter()
                .find(|f| self.dir().join(f).exists())
                .ok_or_else(|| CgroupError::Unsupported("blkio weight: the kernel offers neither io.weight nor io.bfq.weight".into()))?;
            // blkio weights are 10–1000; io.weight is 1–10000.
            let v = if file == "io.weight" { 1 + (u64::from(w).saturating_sub(10)) * 9999 / 990 } else { u64::from(w) };
            self.set(file, &format!("default {v}"))?;
        }
        if let Some(b) = r.block_io() {
            // v1's four throttle lists become one io.max line per device.
            let mut lines: std::collections::BTreeMap<(i64, i64), Vec<String>> = Default::default();
            for (key, list) in [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ] {
                for t in list.clone().unwrap_or_default() {
                    lines.entry((t.major(), t.minor())).or_default().push(format!("{key}={}", t.rate()));
                }
            }
            for ((major, minor), limits) in lines {
                self.set("io.max", &format!("{major}:{minor} {}", limits.join(" ")))?;
            }
        }
        for h in r.hugepage_limits().clone().unwrap_or_default() {
            self.set(&format!("hugetlb.{}.max", h.page_size()), &h.limit().to_string())?;
        }
        if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cgroup v2: device rules are not enforced yet (needs an eBPF device filter); only the devices created in /dev are reachable"
                );
            }
        }
        for (file, value) in r.unified().clone().unwrap_or_default() {
            if file.contains('/') || file.starts_with('.') {
                return Err(CgroupError::Unsupported(format!("invalid unified key {file:?}")));
            }
            self.set(&file, &value)?;
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        self.set("cgroup.freeze", if frozen { "1" } else { "0" })?;
        let events = self.dir().join("cgroup.events");
        let wanted = if frozen { "frozen" } else { "thawed" };
        let target = if frozen { 1 } else { 0 };
        wait_for(&events, wanted, Duration::from_secs(5), || read_keyed(&events).get("frozen") == Some(&target))
    }

    fn is_frozen(&self) -> bool {
        read_keyed(&self.dir().join("cgroup.events")).get("frozen") == Some(&1)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids_tree(&self.dir())
    }

    fn stats(&self) -> Result<Stats> {
        let d = self.dir();
        let mut s = Stats::default();
        let cpu = read_keyed(&d.join("cpu.stat"));
        let g = |k: &str| cpu.get(k).copied().unwrap_or(0);
        s.cpu.usage =
            CpuUsage { total: g("usage_usec") * 1000, percpu: Vec::new(), kernel: g("system_usec") * 1000, user: g("user_usec") * 1000 };
        s.cpu.throttling =
            Throttling { periods: g("nr_periods"), throttled_periods: g("nr_throttled"), throttled_time: g("throttled_usec") * 1000 };
        let limit = read(&d.join("memory.max")).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(u64::MAX);
        s.memory.usage = MemoryUsage {
            usage: read_u64(&d.join("memory.current")),
            max: read_u64(&d.join("memory.peak")),
            limit,
            failcnt: read_keyed(&d.join("memory.events")).get("max").copied().unwrap_or(0),
        };
        s.memory.raw = read_keyed(&d.join("memory.stat"));
        s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        s.memory.oom_kills = self.oom_kills();
        s.pids.current = read_u64(&d.join("pids.current"));
        s.pids.limit = read_u64(&d.join("pids.max"));
        s.blkio = parse_io_stat_v2(&read(&d.join("io.stat")).unwrap_or_default());
        Ok(s)
    }

    fn oom_kills(&self) -> u64 {
        read_keyed(&self.dir().join("memory.events")).get("oom_kill").copied().unwrap_or(0)
    }

    fn destroy(&self, parents: Parents) -> Result<()> {
        remove_with_parents(&self.root, &self.rel, parents)
    }

    fn remove_if_unused(&self) -> Result<()> {
        remove_unused(&self.dir())
    }

    fn view(&self) -> CgroupView {
        CgroupView::V2(self.dir())
    }

    fn exists(&self) -> bool {
        self.dir().exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake unified tree: plain files where the kernel would have control files.
    fn fake_tree() -> (tempfile::TempDir, V2) {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc").unwrap();
        fs::write(t.path().join("cgroup.subtree_control"), "memory pids").unwrap();
        fs::create_dir(t.path().join("berth")).unwrap();
        fs::write(t.path().join("berth/cgroup.controllers"), "cpuset cpu io memory hugetlb pids").unwrap();
        fs::write(t.path().join("berth/cgroup.subtree_control"), "").unwrap();
        let v = V2::new(t.path().to_path_buf(), PathBuf::from("berth/c1"));
        (t, v)
    }

    #[test]
    fn processes_are_cloned_into_the_directory() {
        let (t, v) = fake_tree();
        assert!(v.self_join_files().is_empty());
        assert_eq!(v.clone_into(), Some(t.path().join("berth/c1")));
    }

    #[test]
    fn enables_missing_controllers_down_the_path() {
        let (t, v) = fake_tree();
        v.create().unwrap();
        assert_eq!(fs::read_to_string(t.path().join("cgroup.subtree_control")).unwrap(), "+cpuset +cpu +io +hugetlb");
        assert_eq!(fs::read_to_string(t.path().join("berth/cgroup.subtree_control")).unwrap(), "+cpuset +cpu +io +memory +hugetlb +pids");
        assert!(t.path().join("berth/c1").is_dir());
    }

    #[test]
    fn refuses_real_time_cpu_which_v2_lacks() {
        let (_t, v) = fake_tree();
        v.create().unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"cpu": {"realtimeRuntime": 1000}})).unwrap();
        assert!(v.apply(&r).unwrap_err().to_string().contains("cgroup v1"));
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"cpu": {"realtimeRuntime": 0, "shares": 2}})).unwrap();
        v.apply(&r).unwrap();
    }

    #[test]
    fn translates_v1_style_values() {
        let (t, v) = fake_tree();
        v.create().unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 104857600, "swap": 209715200, "reservation": 1048576},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 0},
            "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
            "unified": {"memory.high": "90000000"}
        }))
        .unwrap();
        v.apply(&r).unwrap();
        let rd = |p: &str| fs::read_to_string(t.path().join("berth/c1").join(p)).unwrap();
        assert_eq!(rd("memory.max"), "104857600");
        assert_eq!(rd("memory.swap.max"), "104857600");
        assert_eq!(rd("memory.low"), "1048576");
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("cpuset.cpus"), "0");
        assert_eq!(rd("pids.max"), "max");
        assert_eq!(rd("memory.high"), "90000000");
        assert_eq!(rd("io.max"), "8:0 rbps=1048576 wiops=100");
    }

    #[test]
    fn a_memory_limit_below_the_usage_is_refused_and_nothing_written() {
        let (t, v) = fake_tree();
        v.create().unwrap();
        let d = t.path().join("berth/c1");
        fs::write(d.join("memory.current"), "50000000\n").unwrap();
        fs::write(d.join("memory.peak"), "60000000\n").unwrap();
        fs::write(d.join("memory.max"), "max\n").unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"memory": {"limit": 10485760}})).unwrap();
        let e = v.apply(&r).unwrap_err();
        assert_eq!(e.to_string(), "unable to set memory limit to 10485760 (current usage: 50000000, peak usage: 60000000)");
        assert_eq!(fs::read_to_string(d.join("memory.max")).unwrap(), "max\n");
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"memory": {"limit": 104857600}})).unwrap();
        v.apply(&r).unwrap();
        assert_eq!(fs::read_to_string(d.join("memory.max")).unwrap(), "104857600");
    }

    #[test]
    fn reads_stats_and_freeze_state() {
        let (t, v) = fake_tree();
        v.create().unwrap();
        let d = t.path().join("berth/c1");
        fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\nthrottled_usec 7\n")
            .unwrap();
        fs::write(d.join("memory.current"), "4096\n").unwrap();
        fs::write(d.join("memory.max"), "max\n").unwrap();
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n").unwrap();
        fs::write(d.join("pids.current"), "3\n").unwrap();
        fs::write(d.join("cgroup.procs"), "10\n11\n").unwrap();
        fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        let s = v.stats().unwrap();
        assert_eq!(s.cpu.usage.total, 1_500_000);
        assert_eq!(s.cpu.throttling.throttled_periods, 1);
        assert_eq!(s.memory.usage.usage, 4096);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.oom_kills, 1);
        assert_eq!(s.pids.current, 3);
        assert_eq!(v.pids().unwrap(), vec![10, 11]);
        assert!(v.is_frozen());
        v.freeze(true).unwrap();
        assert_eq!(fs::read_to_string(d.join("cgroup.freeze")).unwrap(), "1");
    }

    #[test]
    fn refuses_unified_keys_that_leave_the_directory() {
        let (_t, v) = fake_tree();
        v.create().unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"unified": {"../../cgroup.procs": "1"}})).unwrap();
        assert!(v.apply(&r).is_err());
    }
}
