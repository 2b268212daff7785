//! `run`/`create` flags that become HostConfig fields after parsing as Docker's CLI parses them:
//! resource limits, devices, DNS and hosts entries, tmpfs and `--mount`s, and the flags whose
//! features berthd refuses as not implemented yet (sent so its answer says so).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use berth_models::containers::{
    BindOptions, DeviceMapping, HostConfig, LogConfig, Mount, PortBinding, RestartPolicy, ThrottleDevice, TmpfsOptions, WeightDevice,
};
use clap::Args;

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
fn device(s: &str) -> anyhow::Result<DeviceMapping> {
    let perms = |p: &str| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if perms(p) => (*h, *c, *p),
        _ => bail!("invalid device specification: {s}"),
    };
    Ok(DeviceMapping { path_on_host: host.into(), path_in_container: ctr.into(), cgroup_permissions: mode.into() })
}

/// `--device-read-bps /dev/sda:1mb` (a size) or `--device-read-iops /dev/sda:100` (a count).
fn throttle(s: &str, size: bool) -> anyhow::Result<ThrottleDevice> {
    let (path, rate) = s.rsplit_once(':').with_context(|| format!("bad format: {s}"))?;
    let rate: u64 =
        if size { parse_size(rate)?.try_into()? } else { rate.parse().with_context(|| format!("invalid rate for device: {s}"))? };
    Ok(ThrottleDevice { path: path.into(), rate })
}

/// `--mount type=bind,source=/a,target=/b,readonly` and its spellings.
fn mount(s: &str) -> anyhow::Result<Mount> {
    let mut m = Mount { typ: Some("volume".into()), ..Default::default() };
    let (mut bind, mut tmpfs) = (BindOptions::default(), TmpfsOptions::default());
    let mut volume = berth_models::containers::VolumeOptions::default();
    for field in s.split(',') {
        let (k, v) = field.split_once('=').map(|(k, v)| (k.trim(), Some(v.trim()))).unwrap_or((field.trim(), None));
        let flag = |v: Option<&str>| -> anyhow::Result<bool> {
            match v.unwrap_or("true") {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                o => bail!("invalid value for {k}: {o}"),
            }
        };
        let value = || v.map(str::to_string).with_context(|| format!("invalid field '{field}' must be a key=value pair"));
        match k.to_ascii_lowercase().as_str() {
            "type" => m.typ = Some(value()?),
            "source" | "src" => m.source = Some(value()?),
            "target" | "destination" | "dst" => m.target = Some(value()?),
            "readonly" | "ro" => m.read_only = Some(flag(v)?),
            "bind-propagation" => bind.propagation = Some(value()?),
            "bind-nonrecursive" => bind.non_recursive = Some(flag(v)?),
            "tmpfs-size" => tmpfs.size_bytes = Some(parse_size(&value()?)?),
            "tmpfs-mode" => tmpfs.mode = Some(u32::from_str_radix(&value()?, 8).with_context(|| format!("invalid tmpfs-mode: {field}"))?),
            "consistency" => m.consistency = Some(value()?),
            "volume-nocopy" | "volume-no-copy" => volume.no_copy = Some(flag(v)?),
            "volume-label" => {
                let (lk, lv) = value()?.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or((value()?, String::new()));
                volume.labels.get_or_insert_with(Default::default).insert(lk, lv);
            }
            "volume-driver" => volume.driver_config.get_or_insert_with(Default::default).name = Some(value()?),
            "volume-opt" => {
                let (ok, ov) = value()?.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or((value()?, String::new()));
                volume.driver_config.get_or_insert_with(Default::default).options.get_or_insert_with(Default::default).insert(ok, ov);
            }
            "volume-subpath" => volume.subpath = Some(value()?),
            _ => bail!("unexpected key '{k}' in '{field}'"),
        }
    }
    if bind.propagation.is_some() || bind.non_recursive.is_some() {
        m.bind_options = Some(bind);
    }
    if tmpfs.size_bytes.is_some() || tmpfs.mode.is_some() {
        m.tmpfs_options = Some(tmpfs);
    }
    if volume.no_copy.is_some() || volume.labels.is_some() || volume.driver_config.is_some() || volume.subpath.is_some() {
        m.volume_options = Some(volume);
    }
    Ok(m)
}

/// `--publish [IP:][HOST:]CONTAINER[/PROTO]`, with Docker's port ranges.
fn publish(list: &[String]) -> anyhow::Result<BTreeMap<String, Option<Vec<PortBinding>>>> {
    let mut out: BTreeMap<String, Option<Vec<PortBinding>>> = BTreeMap::new();
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
        let range = |s: &str| -> anyhow::Result<(u16, u16)> {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let bad = || anyhow::anyhow!("invalid port specification: {p:?}");
            let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if b < a {
                return Err(bad());
            }
            Ok((a, b))
        };
        // Docker's ranges: `8000-8001:80-81` pairs them; `8000-8010:80` takes one of the range.
        let (c0, c1) = range(ctr)?;
        let hosts: Vec<String> = match host {
            "" => vec![String::new(); usize::from(c1 - c0) + 1],
            h => {
                let (h0, h1) = range(h)?;
                if c0 == c1 {
                    vec![h.to_string()]
                } else if h1 - h0 == c1 - c0 {
                    (h0..=h1).map(|x| x.to_string()).collect()
                } else {
                    anyhow::bail!("invalid ranges specified for container and host Ports: {ctr} and {h}");
                }
            }
        };
        for (cport, hport) in (c0..=c1).zip(hosts) {
            out.entry(format!("{cport}/{proto}"))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding { host_ip: ip.trim_start_matches('[').trim_end_matches(']').into(), host_port: hport });
        }
    }
    Ok(out)
}

/// `--cpus 1.5` as the API's NanoCpus.
pub(crate) fn cpus(c: &str) -> anyhow::Result<i64> {
    let n: f64 = c.parse().with_context(|| format!("invalid argument {c:?} for \"--cpus\" flag"))?;
    // The docker CLI parses a rational number: no NaN, no infinity (a negative reaches the daemon, which refuses it).
    anyhow::ensure!(n.is_finite(), "invalid argument {c:?} for \"--cpus\" flag");
    Ok((n * 1e9).round() as i64)
}

/// `--restart name[:count]`; a count that is not a number is refused, as the docker CLI does.
pub(crate) fn restart_policy(r: &str) -> anyhow::Result<RestartPolicy> {
    let (name, count) = match r.split_once(':') {
        Some((name, count)) => {
            let count =
                count.parse().with_context(|| format!("invalid restart policy format: maximum retry count must be an integer: {r}"))?;
            (name, count)
        }
        None => (r, 0),
    };
    Ok(RestartPolicy { name: name.to_string(), maximum_retry_count: count })
}

impl HostFlags {
    /// Fill this group's fields into the create body's HostConfig.
    pub fn fill(&self, hc: &mut HostConfig) -> anyhow::Result<()> {
        let size = |s: &Option<String>| s.as_deref().map(parse_size).transpose().map(|v| v.unwrap_or(0));
        hc.memory = Some(size(&self.memory)?);
        hc.memory_reservation = Some(size(&self.memory_reservation)?);
        hc.memory_swap = Some(match self.memory_swap.as_deref() {
            Some("-1") => -1,
            s => size(&s.map(str::to_string))?,
        });
        hc.memory_swappiness = Some(self.memory_swappiness);
        hc.kernel_memory = Some(size(&self.kernel_memory)?);
        hc.oom_kill_disable = Some(self.oom_kill_disable);
        hc.oom_score_adj = Some(self.oom_score_adj.unwrap_or(0));
        hc.nano_cpus = Some(self.cpus.as_deref().map(cpus).transpose()?.unwrap_or(0));
        hc.cpu_shares = Some(self.cpu_shares.unwrap_or(0));
        hc.cpu_period = Some(self.cpu_period.unwrap_or(0));
        hc.cpu_quota = Some(self.cpu_quota.unwrap_or(0));
        hc.cpu_realtime_period = Some(self.cpu_rt_period.unwrap_or(0));
        hc.cpu_realtime_runtime = Some(self.cpu_rt_runtime.unwrap_or(0));
        hc.cpuset_cpus = Some(self.cpuset_cpus.clone().unwrap_or_default());
        hc.cpuset_mems = Some(self.cpuset_mems.clone().unwrap_or_default());
        hc.pids_limit = self.pids_limit;
        hc.blkio_weight = Some(self.blkio_weight.unwrap_or(0));
        hc.blkio_weight_device = Some(
            self.blkio_weight_device
                .iter()
                .map(|w| {
                    let (p, v) = w.rsplit_once(':').with_context(|| format!("bad format: {w}"))?;
                    Ok(WeightDevice { path: p.into(), weight: v.parse().with_context(|| format!("invalid weight for device: {w}"))? })
                })
                .collect::<anyhow::Result<_>>()?,
        );
        let throttles = |list: &[String], is_size: bool| list.iter().map(|t| throttle(t, is_size)).collect::<anyhow::Result<Vec<_>>>();
        hc.blkio_device_read_bps = Some(throttles(&self.device_read_bps, true)?);
        hc.blkio_device_write_bps = Some(throttles(&self.device_write_bps, true)?);
        hc.blkio_device_read_iops = Some(throttles(&self.device_read_iops, false)?);
        hc.blkio_device_write_iops = Some(throttles(&self.device_write_iops, false)?);
        hc.devices = Some(self.device.iter().map(|d| device(d)).collect::<anyhow::Result<_>>()?);
        hc.device_cgroup_rules = Some(self.device_cgroup_rule.clone());
        hc.extra_hosts = Some(self.add_host.clone());
        hc.dns = Some(self.dns.clone());
        hc.dns_search = Some(self.dns_search.clone());
        hc.dns_options = Some(self.dns_option.clone());
        let tmpfs: BTreeMap<String, String> = self
            .tmpfs
            .iter()
            .map(|t| {
                let (path, opts) = t.split_once(':').unwrap_or((t, ""));
                (path.to_string(), opts.to_string())
            })
            .collect();
        hc.tmpfs = (!tmpfs.is_empty()).then_some(tmpfs);
        let mounts: Vec<Mount> = self.mount.iter().map(|m| mount(m)).collect::<anyhow::Result<_>>()?;
        hc.mounts = (!mounts.is_empty()).then_some(mounts);
        hc.cgroup_parent = Some(self.cgroup_parent.clone().unwrap_or_default());
        hc.cgroupns_mode = Some(self.cgroupns.clone().unwrap_or_default());
        hc.port_bindings = Some(publish(&self.publish)?);
        hc.publish_all_ports = Some(self.publish_all);
        if let Some(r) = &self.restart {
            hc.restart_policy = Some(restart_policy(r)?);
        }
        if self.init {
            hc.init = Some(true);
        }
        if let Some(d) = &self.log_driver {
            let config = hc.log_config.take().and_then(|l| l.config).unwrap_or_default();
            hc.log_config = Some(LogConfig { typ: d.clone(), config: Some(config) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_split_as_dockers_cli_splits_them() {
        assert_eq!(device("/dev/fuse").unwrap().path_in_container, "/dev/fuse");
        let d = device("/dev/sda:r").unwrap();
        assert_eq!((d.path_on_host.as_str(), d.path_in_container.as_str(), d.cgroup_permissions.as_str()), ("/dev/sda", "/dev/sda", "r"));
        assert_eq!(device("/dev/sda:/dev/xvda").unwrap().path_in_container, "/dev/xvda");
        assert_eq!(device("/dev/sda:/dev/xvda:rw").unwrap().cgroup_permissions, "rw");
        assert!(device("a:b:c:d").is_err());
    }

    #[test]
    fn mounts_parse_every_spelling() {
        let m = mount("type=bind,src=/a,dst=/b,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(
            (m.typ.as_deref(), m.source.as_deref(), m.target.as_deref(), m.read_only),
            (Some("bind"), Some("/a"), Some("/b"), Some(true))
        );
        assert_eq!(m.bind_options.and_then(|b| b.propagation).as_deref(), Some("rslave"));
        let t = mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap().tmpfs_options.unwrap();
        assert_eq!((t.size_bytes, t.mode), (Some(1 << 20), Some(0o1770)));
        assert_eq!(mount("target=/v,source=data").unwrap().typ.as_deref(), Some("volume"), "Docker's default type");
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
        let mut typed = HostConfig::default();
        f.fill(&mut typed).unwrap();
        // As the request carries it.
        let hc = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            (hc["Memory"].as_i64(), hc["MemorySwap"].as_i64(), hc["NanoCpus"].as_i64()),
            (Some(64 << 20), Some(-1), Some(1_500_000_000))
        );
        assert_eq!(hc["BlkioDeviceReadBps"], serde_json::json!([{"Path": "/dev/sda", "Rate": 1 << 20}]));
        assert_eq!(hc["PortBindings"]["80/tcp"], serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}]));
        assert_eq!(hc["PortBindings"]["53/udp"], serde_json::json!([{"HostIp": "", "HostPort": ""}]));
        assert_eq!(hc["PidsLimit"], serde_json::Value::Null);
        let bad = HostFlags { cpus: Some("lots".into()), ..Default::default() };
        assert!(bad.fill(&mut HostConfig::default()).is_err());
        assert!(cpus("inf").is_err());
    }

    #[test]
    fn restart_policies_parse_as_dockers_cli_parses_them() {
        let p = restart_policy("on-failure:3").unwrap();
        assert_eq!((p.name.as_str(), p.maximum_retry_count), ("on-failure", 3));
        let p = restart_policy("always").unwrap();
        assert_eq!((p.name.as_str(), p.maximum_retry_count), ("always", 0));
        let e = restart_policy("on-failure:x").unwrap_err().to_string();
        assert!(e.contains("maximum retry count must be an integer"), "{e}");
        let bad = HostFlags { restart: Some("on-failure:many".into()), ..Default::default() };
        assert!(bad.fill(&mut HostConfig::default()).is_err());
    }
}
