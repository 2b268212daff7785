//! A container's resource usage in the shape of Docker's `GET /containers/{id}/stats`, read from
//! its cgroup: CPU (with the host's total for the docker CLI's percentage), memory, pids. Block
//! I/O and networks are reported empty for now.

use berth_api::{ApiError, Kind};
use berth_models::stats::{ContainerStats, CpuStats, CpuUsage, MemoryStats, PidsStats, ThrottlingData};

use crate::Engine;
use crate::record::Record;

/// The host's CPU time so far, in nanoseconds (`/proc/stat`'s first line), as Docker reports
/// `system_cpu_usage`.
fn system_cpu_ns() -> u64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let jiffies: u64 = stat.lines().next().unwrap_or("").split_whitespace().skip(1).take(8).filter_map(|v| v.parse::<u64>().ok()).sum();
    jiffies.saturating_mul(1_000_000_000 / tick)
}

fn online_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// One sample for `rec` (zeros when it is not running), without `precpu_stats`.
pub fn sample(engine: &Engine, rec: &Record) -> Result<ContainerStats, ApiError> {
    let mut v = ContainerStats {
        read: crate::record::now(),
        preread: crate::record::ZERO_TIME.into(),
        name: format!("/{}", rec.name),
        id: rec.id.clone(),
        ..Default::default()
    };
    if !rec.state.status.is_live() {
        return Ok(v);
    }
    let s = engine.tasks.stats(&rec.id).map_err(|e| ApiError::new(Kind::Internal, format!("reading the container's statistics: {e}")))?;
    v.cpu_stats = CpuStats {
        cpu_usage: CpuUsage {
            total_usage: s.cpu.usage.total,
            percpu_usage: Some(s.cpu.usage.percpu).filter(|p| !p.is_empty()),
            usage_in_kernelmode: s.cpu.usage.kernel,
            usage_in_usermode: s.cpu.usage.user,
        },
        system_cpu_usage: Some(system_cpu_ns()),
        online_cpus: Some(online_cpus()),
        throttling_data: ThrottlingData {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
        },
    };
    // Unlimited reads as the largest page-aligned number; Docker shows the host's memory then.
    let host = crate::system::mem_total();
    let limit = if s.memory.usage.limit == 0 || s.memory.usage.limit > host { host } else { s.memory.usage.limit };
    v.memory_stats = MemoryStats {
        usage: Some(s.memory.usage.usage),
        max_usage: Some(s.memory.usage.max),
        failcnt: Some(s.memory.usage.failcnt),
        stats: Some(s.memory.raw),
        limit: Some(limit),
    };
    v.pids_stats = PidsStats { current: Some(s.pids.current), limit: Some(s.pids.limit).filter(|l| *l > 0) };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_cpu_time_grows() {
        let a = system_cpu_ns();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(a > 0 && system_cpu_ns() > a);
        assert!(online_cpus() >= 1);
    }
}
