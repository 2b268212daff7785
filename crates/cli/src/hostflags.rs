//! `run`/`create` flags that become HostConfig fields after parsing as Docker's CLI parses them:
//! resource limits, devices, DNS and hosts entries, tmpfs and `--mount`s, and the flags whose
//! features berthd refuses as not implemented yet (sent so its answer says so).

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::parse_size;

#[derive(Args, Clone, Default)]
pub struct HostFlags {
    #[arg(short = 'm', long)]
    memory: Option<String>,
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// A size, or -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long = "memory-swappiness", allow_hyphen_values = true, default_value_t = -1)]
    memory_swappiness: i64,
    #[arg(long = "kernel-memory")]
    kernel_memory: Option<String>,
    #[arg(long = "oom-kill-disable")]
    oom_kill_disable: bool,
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    oom_score_adj: Option<i64>,
    #[arg(long)]
    cpus: Option<String>,
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<i64>,
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-rt-period")]
    cpu_rt_period: Option<i64>,
    #[arg(long = "cpu-rt-runtime")]
    cpu_rt_runtime: Option<i64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    #[arg(long = "blkio-weight-device")]
    blkio_weight_device: Vec<String>,
    #[arg(long = "device-read-bps")]
    device_read_bps: Vec<String>,
    #[arg(long = "device-write-bps")]
    device_write_bps: Vec<String>,
    #[arg(long = "device-read-iops")]
    device_read_iops: Vec<String>,
    #[arg(long = "device-write-iops")]
    device_write_iops: Vec<String>,
    #[arg(long)]
    device: Vec<String>,
    #[arg(long = "device-cgroup-rule")]
    device_cgroup_rule: Vec<String>,
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    #[arg(long)]
    dns: Vec<String>,
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    #[arg(long = "dns-option", alias = "dns-opt")]
    dns_option: Vec<String>,
    #[arg(long)]
    tmpfs: Vec<String>,
    #[arg(long)]
    mount: Vec<String>,
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
    #[arg(long)]
    cgroupns: Option<String>,
    #[arg(short = 'p', long)]
    publish: Vec<String>,
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    #[arg(long)]
    restart: Option<String>,
    #[arg(long)]
    init: bool,
    #[arg(long = "log-driver")]
    log_driver: Option<String>,
}

/// `--device HOST[:CONTAINER][:PERMISSIONS]`, as Docker's CLI splits it.
fn device(s: &str) -> anyhow::Result<Value> {
    let perms = |p: &str| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if perms(p) => (*h, *c, *p),
        _ => bail!("invalid device specification: {s}"),
    };
    Ok(json!({"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": mode}))
}

/// `--device-read-bps /dev/sda:1mb` (a size) or `--device-read-iops /dev/sda:100` (a count).
fn throttle(s: &str, size: bool) -> anyhow::Result<Value> {
    let (path, rate) = s.rsplit_once(':').with_context(|| format!("bad format: {s}"))?;
    let rate: u64 =
        if size { parse_size(rate)?.try_into()? } else { rate.parse().with_context(|| format!("invalid rate for device: {s}"))? };
    Ok(json!({"Path": path, "Rate": rate}))
}

/// `--mount type=bind,source=/a,target=/b,readonly` and its spellings.
fn mount(s: &str) -> anyhow::Result<Value> {
    let mut m = Map::new();
    let (mut bind, mut tmpfs) = (Map::new(), Map::new());
    m.insert("Type".into(), json!("volume"));
    for field in s.split(',') {
        let (k, v) = field.split_once('=').map(|(k, v)| (k.trim(), Some(v.trim()))).unwrap_or((field.trim(), None));
        let flag = |v: Option<&str>| -> anyhow::Result<bool> {
            match v.unwrap_or("true") {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                o => bail!("invalid value for {k}: {o}"),
            }
        };
        let value = || v.with_context(|| format!("invalid field '{field}' must be a key=value pair"));
        match k.to_ascii_lowercase().as_str() {
            "type" => m.insert("Type".into(), json!(value()?)),
            "source" | "src" => m.insert("Source".into(), json!(value()?)),
            "target" | "destination" | "dst" => m.insert("Target".into(), json!(value()?)),
            "readonly" | "ro" => m.insert("ReadOnly".into(), json!(flag(v)?)),
            "bind-propagation" => bind.insert("Propagation".into(), json!(value()?)),
            "bind-nonrecursive" => bind.insert("NonRecursive".into(), json!(flag(v)?)),
            "tmpfs-size" => tmpfs.insert("SizeBytes".into(), json!(parse_size(value()?)?)),
            "tmpfs-mode" => tmpfs
                .insert("Mode".into(), json!(u32::from_str_radix(value()?, 8).with_context(|| format!("invalid tmpfs-mode: {field}"))?)),
            "consistency" => None,
            other if other.starts_with("volume-") => bail!("volume options are not supported yet: {field}"),
            _ => bail!("unexpected key '{k}' in '{field}'"),
        };
    }
    if !bind.is_empty() {
        m.insert("BindOptions".into(), Value::Object(bind));
    }
    if !tmpfs.is_empty() {
        m.insert("TmpfsOptions".into(), Value::Object(tmpfs));
    }
    Ok(Value::Object(m))
}

/// `--publish [IP:][HOST:]CONTAINER[/PROTO]`: enough of Docker's parsing to send the request
/// (berthd refuses published ports until bridge networking lands).
fn publish(list: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for p in list {
        let (spec, proto) = p.rsplit_once('/').unwrap_or((p, "tcp"));
        let mut parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        parts.reverse();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            _ => ("", "", spec),
        };
        let entry = out.entry(format!("{ctr}/{proto}")).or_insert_with(|| json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": ip, "HostPort": host}));
        }
    }
    out
}

impl HostFlags {
    /// Fill this group's fields into the create body's HostConfig.
    pub fn fill(&self, hc: &mut Map<String, Value>) -> anyhow::Result<()> {
        let size = |s: &Option<String>| s.as_deref().map(parse_size).transpose().map(|v| v.unwrap_or(0));
        hc.insert("Memory".into(), json!(size(&self.memory)?));
        hc.insert("MemoryReservation".into(), json!(size(&self.memory_reservation)?));
        let swap = match self.memory_swap.as_deref() {
            Some("-1") => -1,
            s => size(&s.map(str::to_string))?,
        };
        hc.insert("MemorySwap".into(), json!(swap));
        hc.insert("MemorySwappiness".into(), json!(self.memory_swappiness));
        hc.insert("KernelMemory".into(), json!(size(&self.kernel_memory)?));
        hc.insert("OomKillDisable".into(), json!(self.oom_kill_disable));
        hc.insert("OomScoreAdj".into(), json!(self.oom_score_adj.unwrap_or(0)));
        let nano = match self.cpus.as_deref() {
            Some(c) => {
                let n: f64 = c.parse().with_context(|| format!("invalid argument {c:?} for \"--cpus\" flag"))?;
                (n * 1e9).round() as i64
            }
            None => 0,
        };
        hc.insert("NanoCpus".into(), json!(nano));
        hc.insert("CpuShares".into(), json!(self.cpu_shares.unwrap_or(0)));
        hc.insert("CpuPeriod".into(), json!(self.cpu_period.unwrap_or(0)));
        hc.insert("CpuQuota".into(), json!(self.cpu_quota.unwrap_or(0)));
        hc.insert("CpuRealtimePeriod".into(), json!(self.cpu_rt_period.unwrap_or(0)));
        hc.insert("CpuRealtimeRuntime".into(), json!(self.cpu_rt_runtime.unwrap_or(0)));
        hc.insert("CpusetCpus".into(), json!(self.cpuset_cpus.clone().unwrap_or_default()));
        hc.insert("CpusetMems".into(), json!(self.cpuset_mems.clone().unwrap_or_default()));
        hc.insert("PidsLimit".into(), self.pids_limit.map_or(Value::Null, |l| json!(l)));
        hc.insert("BlkioWeight".into(), json!(self.blkio_weight.unwrap_or(0)));
        let weight_devices: Vec<Value> = self
            .blkio_weight_device
            .iter()
            .map(|w| {
                let (p, v) = w.rsplit_once(':').with_context(|| format!("bad format: {w}"))?;
                Ok(json!({"Path": p, "Weight": v.parse::<u16>().with_context(|| format!("invalid weight for device: {w}"))?}))
            })
            .collect::<anyhow::Result<_>>()?;
        hc.insert("BlkioWeightDevice".into(), json!(weight_devices));
        for (key, list, is_size) in [
            ("BlkioDeviceReadBps", &self.device_read_bps, true),
            ("BlkioDeviceWriteBps", &self.device_write_bps, true),
            ("BlkioDeviceReadIOps", &self.device_read_iops, false),
            ("BlkioDeviceWriteIOps", &self.device_write_iops, false),
        ] {
            let v: Vec<Value> = list.iter().map(|t| throttle(t, is_size)).collect::<anyhow::Result<_>>()?;
            hc.insert(key.into(), json!(v));
        }
        let devices: Vec<Value> = self.device.iter().map(|d| device(d)).collect::<anyhow::Result<_>>()?;
        hc.insert("Devices".into(), json!(devices));
        hc.insert("DeviceCgroupRules".into(), json!(self.device_cgroup_rule));
        hc.insert("ExtraHosts".into(), json!(self.add_host));
        hc.insert("Dns".into(), json!(self.dns));
        hc.insert("DnsSearch".into(), json!(self.dns_search));
        hc.insert("DnsOptions".into(), json!(self.dns_option));
        let tmpfs: Map<String, Value> = self
            .tmpfs
            .iter()
            .map(|t| {
                let (path, opts) = t.split_once(':').unwrap_or((t, ""));
                (path.to_string(), json!(opts))
            })
            .collect();
        if !tmpfs.is_empty() {
            hc.insert("Tmpfs".into(), Value::Object(tmpfs));
        }
        let mounts: Vec<Value> = self.mount.iter().map(|m| mount(m)).collect::<anyhow::Result<_>>()?;
        if !mounts.is_empty() {
            hc.insert("Mounts".into(), json!(mounts));
        }
        hc.insert("CgroupParent".into(), json!(self.cgroup_parent.clone().unwrap_or_default()));
        hc.insert("CgroupnsMode".into(), json!(self.cgroupns.clone().unwrap_or_default()));
        hc.insert("PortBindings".into(), Value::Object(publish(&self.publish)));
        hc.insert("PublishAllPorts".into(), json!(self.publish_all));
        if let Some(r) = &self.restart {
            let (name, count) = r.split_once(':').unwrap_or((r, "0"));
            hc.insert("RestartPolicy".into(), json!({"Name": name, "MaximumRetryCount": count.parse::<i64>().unwrap_or(0)}));
        }
        if self.init {
            hc.insert("Init".into(), json!(true));
        }
        if let Some(d) = &self.log_driver {
            let config = hc.get("LogConfig").and_then(|l| l.get("Config")).cloned().unwrap_or(json!({}));
            hc.insert("LogConfig".into(), json!({"Type": d, "Config": config}));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_split_as_dockers_cli_splits_them() {
        assert_eq!(device("/dev/fuse").unwrap()["PathInContainer"], "/dev/fuse");
        assert_eq!(
            device("/dev/sda:r").unwrap(),
            json!({"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "r"})
        );
        assert_eq!(device("/dev/sda:/dev/xvda").unwrap()["PathInContainer"], "/dev/xvda");
        assert_eq!(device("/dev/sda:/dev/xvda:rw").unwrap()["CgroupPermissions"], "rw");
        assert!(device("a:b:c:d").is_err());
    }

    #[test]
    fn mounts_parse_every_spelling() {
        let m = mount("type=bind,src=/a,dst=/b,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(m, json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}}));
        let m = mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!(m["TmpfsOptions"], json!({"SizeBytes": 1 << 20, "Mode": 0o1770}));
        assert_eq!(mount("target=/v,source=data").unwrap()["Type"], "volume", "Docker's default type");
        assert!(mount("type=bind,bogus=1").is_err());
        assert!(mount("type=bind,ro=maybe").is_err());
    }

    #[test]
    fn limits_fill_the_host_config() {
        let f = HostFlags {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            cpus: Some("1.5".into()),
            device_read_bps: vec!["/dev/sda:1mb".into()],
            publish: vec!["127.0.0.1:8080:80".into(), "53/udp".into()],
            ..Default::default()
        };
        let mut hc = Map::new();
        f.fill(&mut hc).unwrap();
        assert_eq!(
            (hc["Memory"].as_i64(), hc["MemorySwap"].as_i64(), hc["NanoCpus"].as_i64()),
            (Some(64 << 20), Some(-1), Some(1_500_000_000))
        );
        assert_eq!(hc["BlkioDeviceReadBps"], json!([{"Path": "/dev/sda", "Rate": 1 << 20}]));
        assert_eq!(hc["PortBindings"]["80/tcp"], json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}]));
        assert_eq!(hc["PortBindings"]["53/udp"], json!([{"HostIp": "", "HostPort": ""}]));
        assert_eq!(hc["PidsLimit"], Value::Null);
        let bad = HostFlags { cpus: Some("lots".into()), ..Default::default() };
        assert!(bad.fill(&mut Map::new()).is_err());
    }
}
