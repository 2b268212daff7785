//! A container's resource usage in the shape of Docker's `GET /containers/{id}/stats`, read from
//! its cgroup: CPU (with the host's total for the docker CLI's percentage), memory, pids, block
//! I/O; and its network interfaces' counters from its network namespace.

use berth_api::{ApiError, Kind};
use std::collections::BTreeMap;

use berth_models::stats::{
    BlkioEntry, BlkioStats, ContainerStats, CpuStats, CpuUsage, MemoryStats, NetworkStats, PidsStats, ThrottlingData,
};

use crate::Engine;
use crate::record::Record;

/// The host's CPU time so far, in nanoseconds, as Docker's `system_cpu_usage`: dockerd sums
/// `/proc/stat`'s first line, which counts every CPU's time since boot (idle included) in
/// ticks of 10 ms; this is the same quantity from the boot-time clock times the CPUs online, to
/// the nanosecond, so a CPU percentage over a short span is as exact as over a long one.
fn system_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    let ns = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
    ns.saturating_mul(u64::from(online_cpus()))
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
    let entries = |list: Vec<berth_runtime::cgroups::BlkioEntry>| {
        Some(list.into_iter().map(|e| BlkioEntry { major: e.major, minor: e.minor, op: e.op, value: e.value }).collect())
    };
    v.blkio_stats = BlkioStats {
        io_service_bytes_recursive: entries(s.blkio.service_bytes),
        io_serviced_recursive: entries(s.blkio.serviced),
        ..Default::default()
    };
    // On a network of its own (not host, not none): its interfaces, as dockerd lists them.
    if !rec.networks.is_empty() && rec.state.pid > 0 {
        let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", rec.state.pid)).unwrap_or_default();
        v.networks = Some(net_dev(&dev)).filter(|n| !n.is_empty());
    }
    Ok(v)
}

/// `/proc/<pid>/net/dev`: each interface but loopback, with its counters.
fn net_dev(text: &str) -> BTreeMap<String, NetworkStats> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let name = name.trim();
        let n: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if name == "lo" || n.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            NetworkStats {
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_but_loopback_with_their_counters() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                    eth0:    1296      16    1    2    0     0          0         0      586       7    3    4    0     0       0          0\n";
        let n = net_dev(text);
        assert_eq!(n.keys().collect::<Vec<_>>(), ["eth0"]);
        let e = &n["eth0"];
        assert_eq!((e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped), (1296, 16, 1, 2));
        assert_eq!((e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped), (586, 7, 3, 4));
    }

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
