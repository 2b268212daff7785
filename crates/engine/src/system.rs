//! The system backend: what `/version` and `/info` report about this daemon and host.

use berth_api::{ApiError, Info, System, Version};

use crate::Engine;

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

pub(crate) fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        })
        .flatten()
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn os_release(key: &str) -> Option<String> {
    std::fs::read_to_string("/etc/os-release")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')).map(|v| v.trim_matches('"').to_string()))
}

fn os_name() -> String {
    os_release("PRETTY_NAME").unwrap_or_else(|| "Linux".into())
}

fn sysctl_on(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1")
}

/// Docker's name for the file system under the data root.
fn backing_fs(path: &std::path::Path) -> String {
    use nix::sys::statfs::*;
    match statfs(path).map(|s| s.filesystem_type()) {
        Ok(EXT4_SUPER_MAGIC) => "extfs".into(),
        Ok(XFS_SUPER_MAGIC) => "xfs".into(),
        Ok(BTRFS_SUPER_MAGIC) => "btrfs".into(),
        Ok(TMPFS_MAGIC) => "tmpfs".into(),
        Ok(OVERLAYFS_SUPER_MAGIC) => "overlayfs".into(),
        Ok(t) => format!("{:#x}", t.0),
        Err(_) => "unknown".into(),
    }
}

/// What the cgroup controllers can limit here: (memory, swap, cfs period, cfs quota, shares,
/// cpuset, pids, OOM-killer disable).
fn cgroup_features(v2: bool) -> [bool; 8] {
    let has = |p: &str| std::path::Path::new(p).exists();
    if v2 {
        let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let c = |n: &str| controllers.split_whitespace().any(|x| x == n);
        [c("memory"), c("memory"), c("cpu"), c("cpu"), c("cpu"), c("cpuset"), c("pids"), false]
    } else {
        [
            has("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            has("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
            has("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
            has("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
            has("/sys/fs/cgroup/cpu/cpu.shares"),
            has("/sys/fs/cgroup/cpuset/cpuset.cpus"),
            has("/sys/fs/cgroup/pids/pids.max") || has("/sys/fs/cgroup/pids"),
            has("/sys/fs/cgroup/memory/memory.oom_control"),
        ]
    }
}

fn count_dir(path: &str) -> u64 {
    std::fs::read_dir(path).map(|d| d.count() as u64).unwrap_or(0)
}

impl System for Engine {
    fn version(&self) -> Result<Version, ApiError> {
        Ok(berth_api::system::base_version(&kernel()))
    }

    fn info(&self) -> Result<Info, ApiError> {
        let v = berth_api::system::base_version(&kernel());
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let cgroup_version = if v2 { "2" } else { "1" };
        let [memory, swap, cfs_period, cfs_quota, shares, cpuset, pids, oom_kill_disable] = cgroup_features(v2);
        let none = serde_json::json!({"ID": "", "Expected": ""});
        let recs: Vec<_> = self.all().iter().map(|c| c.rec()).collect();
        let count = |s: crate::Status| recs.iter().filter(|r| r.state.status == s).count() as u64;
        Ok(Info {
            id: self.id.clone(),
            containers: recs.len() as u64,
            containers_running: count(crate::Status::Running),
            containers_paused: count(crate::Status::Paused),
            containers_stopped: recs.len() as u64 - count(crate::Status::Running) - count(crate::Status::Paused),
            images: self.images.list().map(|l| l.len() as u64).unwrap_or(0),
            driver: self.driver_name().into(),
            docker_root_dir: self.cfg.data_root.display().to_string(),
            name: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            server_version: v.version,
            operating_system: os_name(),
            os_type: "linux".into(),
            architecture: std::env::consts::ARCH.into(),
            ncpu: std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1),
            mem_total: mem_total(),
            kernel_version: v.kernel_version,
            cgroup_driver: "cgroupfs".into(),
            cgroup_version: cgroup_version.into(),
            default_runtime: crate::hostconfig::DEFAULT_RUNTIME.into(),
            runtimes: crate::hostconfig::RUNTIMES.iter().map(|r| (r.to_string(), serde_json::json!({"path": "berth-runtime"}))).collect(),
            security_options: vec!["name=seccomp,profile=builtin".into()],
            logging_driver: "json-file".into(),
            driver_status: vec![["Backing Filesystem".into(), backing_fs(&self.cfg.data_root)]],
            plugins: serde_json::json!({"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": null, "Log": ["json-file"]}),
            memory_limit: memory,
            swap_limit: swap,
            kernel_memory: false,
            kernel_memory_tcp: false,
            cpu_cfs_period: cfs_period,
            cpu_cfs_quota: cfs_quota,
            cpu_shares: shares,
            cpu_set: cpuset,
            pids_limit: pids,
            oom_kill_disable,
            ipv4_forwarding: sysctl_on("/proc/sys/net/ipv4/ip_forward"),
            bridge_nf_iptables: sysctl_on("/proc/sys/net/bridge/bridge-nf-call-iptables"),
            bridge_nf_ip6tables: sysctl_on("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
            debug: tracing::enabled!(tracing::Level::DEBUG),
            nfd: count_dir("/proc/self/fd"),
            ngoroutines: count_dir("/proc/self/task"),
            system_time: crate::record::now(),
            n_events_listener: self.events.listeners() as u64,
            os_version: os_release("VERSION_ID").unwrap_or_default(),
            index_server_address: "https://index.docker.io/v1/".into(),
            registry_config: self.registry_config(),
            generic_resources: serde_json::Value::Null,
            http_proxy: std::env::var("HTTP_PROXY").or_else(|_| std::env::var("http_proxy")).unwrap_or_default(),
            https_proxy: std::env::var("HTTPS_PROXY").or_else(|_| std::env::var("https_proxy")).unwrap_or_default(),
            no_proxy: std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).unwrap_or_default(),
            experimental_build: false,
            swarm: serde_json::json!({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null}),
            // Containers outlive berthd and are adopted again: Docker's live restore, always on.
            live_restore_enabled: true,
            isolation: String::new(),
            // `--init`'s pid 1, when installed.
            init_binary: if self.cfg.init_path.as_ref().is_some_and(|p| p.is_file()) { "berth-init".into() } else { String::new() },
            containerd_commit: none.clone(),
            runc_commit: none.clone(),
            init_commit: if self.cfg.init_path.as_ref().is_some_and(|p| p.is_file()) {
                serde_json::json!({"ID": env!("CARGO_PKG_VERSION"), "Expected": env!("CARGO_PKG_VERSION")})
            } else {
                none
            },
            ..Default::default()
        })
    }

    fn df(&self) -> Result<berth_api::system::DataUsage, ApiError> {
        let internal = |e: berth_store::images::ImagesError| ApiError::new(berth_api::Kind::Internal, e.to_string());
        let recs: Vec<_> = self.all().iter().map(|c| c.rec()).collect();
        let sizes = self.images.sizes().map_err(internal)?;
        let mut layers = std::collections::BTreeMap::new();
        let mut images = Vec::new();
        for (img, refs) in self.images.list().map_err(internal)? {
            for (l, size) in img.layers.iter().zip(self.images.layer_sizes(&img)) {
                layers.insert(l.chain_id.to_string(), size);
            }
            let mut v = self.image_summary(&img, &refs, true);
            let id = img.id.to_string();
            v.containers = recs.iter().filter(|r| r.image == id).count() as i64;
            if let Some(s) = sizes.get(&img.id) {
                v.shared_size = s.shared as i64;
            }
            images.push(v);
        }
        let containers: Vec<_> = recs.iter().map(|r| self.summary(r, true)).collect();
        // What the images take on disk: their unpacked layers and the blobs they came as.
        let blobs = self.images.content.usage().map_err(|e| ApiError::new(berth_api::Kind::Internal, e.to_string()))?;
        // Each volume with what it holds on disk and how many containers mount it.
        let volumes = self
            .vols
            .all()
            .iter()
            .map(|v| {
                let mut view = self.volume_view(v);
                let refs = recs.iter().filter(|r| r.volumes.iter().any(|m| m.name == v.name)).count();
                view.usage_data = Some(berth_models::volumes::VolumeUsage { size: self.vols.size(&v.name) as i64, ref_count: refs as i64 });
                view
            })
            .collect();
        Ok(berth_api::system::DataUsage {
            layers_size: layers.values().sum::<u64>() + blobs,
            images,
            containers,
            volumes,
            build_cache: crate::build::cache_entries(self),
        })
    }
}
