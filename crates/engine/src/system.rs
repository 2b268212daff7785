//! The system backend: what `/version` and `/info` report about this daemon and host.

use berth_api::{ApiError, Info, System, Version};

use crate::Engine;

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        })
        .flatten()
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

impl System for Engine {
    fn version(&self) -> Result<Version, ApiError> {
        Ok(berth_api::system::base_version(&kernel()))
    }

    fn info(&self) -> Result<Info, ApiError> {
        let v = berth_api::system::base_version(&kernel());
        let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" };
        let recs: Vec<_> = self.all().iter().map(|c| c.rec()).collect();
        let count = |s: crate::Status| recs.iter().filter(|r| r.state.status == s).count() as u64;
        Ok(Info {
            id: String::new(),
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
            default_runtime: "berth".into(),
            runtimes: serde_json::json!({"berth": {"path": "berth-runtime"}}),
            security_options: vec!["name=seccomp,profile=builtin".into()],
            logging_driver: "json-file".into(),
            ..Default::default()
        })
    }
}
