//! `berth stats`: containers' resource usage, computed from the daemon's samples as the docker
//! CLI computes it (CPU % from the change since the previous sample, memory without the
//! inactive page cache), once (`--no-stream`) or redrawn every second.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

use clap::Args;
use serde_json::Value;

use crate::http::Client;

#[derive(Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    all: bool,
    /// Print one sample and exit.
    #[arg(long = "no-stream")]
    no_stream: bool,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

/// Docker's binary sizes for memory (`720KiB`, `1.5KiB`, `64MiB`): four significant digits.
fn binary_size(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (n, 0);
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let int_digits = if v < 1.0 { 1 } else { (v.log10().floor() as usize) + 1 };
    let s = format!("{v:.*}", 4usize.saturating_sub(int_digits));
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s}{}", units[i])
}

/// The row the docker CLI shows for one sample.
fn row(v: &Value, no_trunc: bool) -> BTreeMap<&'static str, String> {
    let n = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    let cpu_delta = n("/cpu_stats/cpu_usage/total_usage") - n("/precpu_stats/cpu_usage/total_usage");
    let sys_delta = n("/cpu_stats/system_cpu_usage") - n("/precpu_stats/system_cpu_usage");
    let cpus = match n("/cpu_stats/online_cpus") {
        0.0 => v.pointer("/cpu_stats/cpu_usage/percpu_usage").and_then(Value::as_array).map_or(1.0, |a| a.len() as f64),
        c => c,
    };
    let cpu = if sys_delta > 0.0 && cpu_delta > 0.0 { cpu_delta / sys_delta * cpus * 100.0 } else { 0.0 };
    let running = v.pointer("/memory_stats/usage").is_some();
    // Page cache the kernel can drop at once is not the container's (v1, then v2 names).
    let inactive = ["/memory_stats/stats/total_inactive_file", "/memory_stats/stats/inactive_file"]
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_f64))
        .unwrap_or(0.0);
    let usage = n("/memory_stats/usage");
    let mem = if inactive < usage { usage - inactive } else { usage };
    let limit = n("/memory_stats/limit");
    let id = v["id"].as_str().unwrap_or("");
    let dash = || "--".to_string();
    BTreeMap::from([
        ("ID", if no_trunc { id.to_string() } else { id.chars().take(12).collect() }),
        ("Container", id.chars().take(12).collect()),
        ("Name", v["name"].as_str().unwrap_or("").trim_start_matches('/').to_string()),
        ("CPUPerc", if running { format!("{cpu:.2}%") } else { dash() }),
        ("MemUsage", if running { format!("{} / {}", binary_size(mem), binary_size(limit)) } else { "-- / --".into() }),
        ("MemPerc", if running && limit > 0.0 { format!("{:.2}%", mem / limit * 100.0) } else { dash() }),
        ("NetIO", if running { "0B / 0B".into() } else { "-- / --".into() }),
        ("BlockIO", if running { "0B / 0B".into() } else { "-- / --".into() }),
        ("PIDs", if running { format!("{}", n("/pids_stats/current")) } else { dash() }),
    ])
}

const TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn render(rows: &[BTreeMap<&'static str, String>], format: Option<&str>) -> anyhow::Result<String> {
    let items: Vec<Value> = rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    crate::format::format_list(format.unwrap_or(TABLE), &items, "CONTAINER ID")
}

pub fn stats(client: &Client, a: &StatsArgs) -> anyhow::Result<i32> {
    let names: Vec<String> = if a.containers.is_empty() {
        let list = client.get(&format!("/containers/json?all={}", u8::from(a.all)))?;
        list.as_array().into_iter().flatten().filter_map(|c| c["Id"].as_str().map(str::to_string)).collect()
    } else {
        a.containers.clone()
    };
    if a.no_stream {
        // Each sample takes the daemon a second (it compares two): ask for them all at once.
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let (client, n) = (client.clone(), n.clone());
                std::thread::spawn(move || client.get(&format!("/containers/{n}/stats?stream=0")))
            })
            .collect();
        let mut rows = Vec::new();
        let mut failed = false;
        for h in handles {
            match h.join().map_err(|_| anyhow::anyhow!("stats thread panicked"))? {
                Ok(v) => rows.push(row(&v, a.no_trunc)),
                Err(e) => {
                    eprintln!("{e:#}");
                    failed = true;
                }
            }
        }
        print!("{}", render(&rows, a.format.as_deref())?);
        return Ok(i32::from(failed));
    }
    // Streaming: one connection per container; the screen is redrawn every second.
    let latest: Arc<Mutex<BTreeMap<usize, Value>>> = Arc::default();
    for (i, n) in names.iter().enumerate() {
        let (client, n, latest) = (client.clone(), n.clone(), Arc::clone(&latest));
        let resp = client.send("GET", &format!("/containers/{n}/stats?stream=1"), None, false)?.ok()?;
        std::thread::spawn(move || {
            for line in BufReader::new(resp.body).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    latest.lock().unwrap_or_else(|p| p.into_inner()).insert(i, v);
                }
            }
        });
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let rows: Vec<_> = latest.lock().unwrap_or_else(|p| p.into_inner()).values().map(|v| row(v, a.no_trunc)).collect();
        let mut out = std::io::stdout().lock();
        write!(out, "\x1b[H\x1b[J{}", render(&rows, a.format.as_deref())?)?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::human_size;
    use serde_json::json;

    #[test]
    fn rows_as_the_docker_cli_computes_them() {
        let v = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000u64}, "system_cpu_usage": 8_000_000_000u64},
            "memory_stats": {"usage": 3_145_728, "limit": 67_108_864, "stats": {"total_inactive_file": 1_048_576}},
            "pids_stats": {"current": 3},
        });
        let r = row(&v, false);
        assert_eq!(r["CPUPerc"], "100.00%");
        assert_eq!(r["MemUsage"], "2MiB / 64MiB");
        assert_eq!(r["MemPerc"], "3.12%");
        assert_eq!((r["ID"].as_str(), r["Name"].as_str(), r["PIDs"].as_str()), ("0123456789ab", "web", "3"));
        let stopped = row(&json!({"id": "x", "name": "/y", "memory_stats": {}}), false);
        assert_eq!((stopped["CPUPerc"].as_str(), stopped["MemUsage"].as_str()), ("--", "-- / --"));
        assert_eq!(binary_size(737_280.0), "720KiB");
        assert_eq!(binary_size(1_536.0), "1.5KiB");
        assert_eq!(human_size(0), "0B");
    }
}
