//! A container's resource usage in the shape of Docker's `GET /containers/{id}/stats`, read from
//! its cgroup: CPU (with the host's total for the docker CLI's percentage), memory, pids. Block
//! I/O and networks are reported empty for now.

use berth_api::{ApiError, Kind};
use serde_json::{Value, json};

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

fn online_cpus() -> u64 {
    std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1)
}

/// One sample for `rec` (zeros when it is not running), without `precpu_stats`.
pub fn sample(engine: &Engine, rec: &Record) -> Result<Value, ApiError> {
    let mut v = json!({
        "read": crate::record::now(),
        "preread": crate::record::ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null, "io_queue_recursive": null,
            "io_service_time_recursive": null, "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": {},
        "name": format!("/{}", rec.name),
        "id": rec.id,
    });
    if !rec.state.status.is_live() {
        return Ok(v);
    }
    let s = engine.tasks.stats(&rec.id).map_err(|e| ApiError::new(Kind::Internal, format!("reading the container's statistics: {e}")))?;
    v["cpu_stats"] = json!({
        "cpu_usage": {
            "total_usage": s.cpu.usage.total,
            "percpu_usage": s.cpu.usage.percpu,
            "usage_in_kernelmode": s.cpu.usage.kernel,
            "usage_in_usermode": s.cpu.usage.user,
        },
        "system_cpu_usage": system_cpu_ns(),
        "online_cpus": online_cpus(),
        "throttling_data": {
            "periods": s.cpu.throttling.periods,
            "throttled_periods": s.cpu.throttling.throttled_periods,
            "throttled_time": s.cpu.throttling.throttled_time,
        },
    });
    // Unlimited reads as the largest page-aligned number; Docker shows the host's memory then.
    let host = crate::system::mem_total();
    let limit = if s.memory.usage.limit == 0 || s.memory.usage.limit > host { host } else { s.memory.usage.limit };
    v["memory_stats"] = json!({
        "usage": s.memory.usage.usage,
        "max_usage": s.memory.usage.max,
        "failcnt": s.memory.usage.failcnt,
        "stats": s.memory.raw,
        "limit": limit,
    });
    v["pids_stats"] =
        if s.pids.limit > 0 { json!({"current": s.pids.current, "limit": s.pids.limit}) } else { json!({"current": s.pids.current}) };
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
