//! The rest of a container's HostConfig: cgroup resources, devices, the OOM score, the cgroup
//! parent and namespace, masked paths, tmpfs and `--mount`s. [`check`] runs at create, as
//! Docker's checks do (a bad value is a 400 and nothing is made); [`apply`] writes them into the
//! OCI spec at start. What berth cannot honour yet is refused as "not implemented yet", never
//! silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_api::containers::{ContainerConfig, DeviceMapping, HostConfig, Mount, ThrottleDevice};
use berth_api::{ApiError, Kind};
use serde_json::{Value, json};

/// Docker's smallest memory limit and reservation (`linuxMinMemory`).
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// The CFS period `--cpus` uses, and Docker's bounds on a user's period (1 ms to 1 s).
const CPU_PERIOD: i64 = 100_000;
const CPU_PERIOD_RANGE: std::ops::RangeInclusive<i64> = 1_000..=1_000_000;
const MIN_CPU_QUOTA: i64 = 1_000;
const BLKIO_WEIGHT_RANGE: std::ops::RangeInclusive<u16> = 10..=1000;
const OOM_SCORE_ADJ_RANGE: std::ops::RangeInclusive<i64> = -1000..=1000;
/// How far `--device DIR` looks for device nodes (a whole file system is not a device list).
const MAX_DEVICE_WALK: usize = 10_000;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, msg)
}

fn set<T: Default + PartialEq>(v: &Option<T>) -> bool {
    v.as_ref().is_some_and(|v| *v != T::default())
}

/// A list or map that asks for something (present and not empty).
fn listed<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// Docker's create-time checks of the fields this module owns, and refusals of what berth
/// does not do yet. Returns Docker's warnings (settings that are accepted and discarded).
pub fn check(cfg: &ContainerConfig, hc: &HostConfig) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if let Some(p) = &hc.restart_policy {
        check_restart_policy(p)?;
        if !matches!(p.name.as_str(), "" | "no") && hc.auto_remove == Some(true) {
            return Err(bad("can't create 'AutoRemove' container with restart policy"));
        }
    }
    if let Some(lc) = &hc.log_config {
        match lc.typ.as_str() {
            "" | "json-file" | "local" | "none" => {}
            d if DOCKER_LOG_DRIVERS.contains(&d) => return Err(ApiError::not_implemented(&format!("the {d:?} logging driver"))),
            d => return Err(bad(format!("logger: no log driver named '{d}' is registered"))),
        }
    }
    match hc.runtime.as_deref().unwrap_or("") {
        "" => {}
        r if RUNTIMES.contains(&r) => {}
        r => return Err(bad(format!("Unknown runtime specified {r}"))),
    }
    for (key, bindings) in hc.port_bindings.iter().flatten() {
        crate::networks::endpoints::parse_port_key(key)?;
        for b in bindings.iter().flatten() {
            if !b.host_port.is_empty() && b.host_port.split('-').any(|p| p.parse::<u16>().is_err()) {
                return Err(bad(format!("invalid port specification: \"{}\"", b.host_port)));
            }
        }
    }
    if hc.network_mode.as_deref() == Some("host")
        && (hc.port_bindings.as_ref().is_some_and(|p| !p.is_empty()) || hc.publish_all_ports == Some(true))
    {
        warnings.push("Published ports are discarded when using host network mode".into());
    }
    for (asked, what) in [
        (listed(&hc.links), "links"),
        (hc.volume_driver.as_deref().is_some_and(|d| !d.is_empty()), "volume drivers"),
        (hc.storage_opt.as_ref().is_some_and(|o| !o.is_empty()), "--storage-opt"),
        (listed(&hc.device_requests), "device requests (--gpus)"),
        (hc.cgroup.as_deref().is_some_and(|c| !c.is_empty()), "--cgroup"),
    ] {
        if asked {
            return Err(ApiError::not_implemented(what));
        }
    }
    if hc.blkio_weight_device.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::not_implemented("--blkio-weight-device"));
    }
    realtime(hc, berth_runtime::cgroups::realtime_supported)?;
    if let Some(h) = &cfg.healthcheck {
        check_healthcheck(h)?;
    }
    match hc.userns_mode.as_deref().unwrap_or("") {
        "" | "host" => {}
        m => return Err(bad(format!("invalid USER mode: {m}"))),
    }
    match hc.isolation.as_deref().unwrap_or("") {
        "" | "default" => {}
        i => return Err(bad(format!("invalid isolation: {i} on linux"))),
    }
    match hc.cgroupns_mode.as_deref().unwrap_or("") {
        "" | "host" | "private" => {}
        m => return Err(bad(format!("invalid cgroup namespace mode: {m}"))),
    }
    check_resources(hc, false, &mut warnings)?;
    if let Some(o) = hc.oom_score_adj
        && !OOM_SCORE_ADJ_RANGE.contains(&o)
    {
        return Err(bad(format!("Invalid value {o}, range for oom score adj is [-1000, 1000]")));
    }
    for r in hc.device_cgroup_rules.iter().flatten() {
        device_cgroup_rule(r)?;
    }
    for h in hc.extra_hosts.iter().flatten() {
        extra_host(h, Some(std::net::Ipv4Addr::UNSPECIFIED))?;
    }
    for d in hc.dns.iter().flatten() {
        d.parse::<std::net::IpAddr>().map_err(|_| bad(format!("{d} is not an ip address")))?;
    }
    for w in hc.dns_search.iter().flatten().chain(hc.dns_options.iter().flatten()) {
        if !is_word(w) {
            return Err(bad(format!("invalid DNS search domain or option: {w:?}")));
        }
    }
    let mut targets = BTreeSet::new();
    for t in hc.tmpfs.iter().flatten().map(|(t, _)| t.as_str()).chain(hc.mounts.iter().flatten().filter_map(|m| m.target.as_deref())) {
        if !t.starts_with('/') {
            return Err(bad(format!("invalid mount config: mount path must be absolute: {t}")));
        }
        if !targets.insert(t.trim_end_matches('/')) {
            return Err(bad(format!("Duplicate mount point: {t}")));
        }
    }
    crate::volumes::mounts::wanted(cfg, hc)?;
    for m in hc.mounts.iter().flatten().filter(|m| m.typ.as_deref() != Some("volume")) {
        mount(m)?;
    }
    for d in hc.devices.iter().flatten() {
        devices(d)?;
    }
    for t in [&hc.blkio_device_read_bps, &hc.blkio_device_write_bps, &hc.blkio_device_read_iops, &hc.blkio_device_write_iops] {
        for t in t.iter().flatten() {
            throttle(t)?;
        }
    }
    if let Some(parent) = hc.cgroup_parent.as_deref() {
        cgroup_parent(parent)?;
    }
    if let Some(l) = &hc.log_config {
        crate::logs::check_opts(&l.typ, l.config.as_ref().unwrap_or(&BTreeMap::new()))?;
    }
    let network = hc.network_mode.as_deref().unwrap_or("");
    sysctls(hc, network != "host")?;
    Ok(warnings)
}

/// Only sysctls the kernel keeps per namespace, in a namespace of the container's own (see
/// `berth_runtime::sysctl`): anything else would change the host. `own_network` is false for
/// host networking (and for a container whose network is another's that is on the host's).
pub fn sysctls(hc: &HostConfig, own_network: bool) -> Result<(), ApiError> {
    let network = hc.network_mode.as_deref().unwrap_or("");
    let private = berth_runtime::sysctl::Private {
        ipc: hc.ipc_mode.as_deref() != Some("host"),
        net: own_network && network != "host",
        // Host networking shares the host's UTS namespace too (see spec::build).
        uts: hc.uts_mode.as_deref() != Some("host") && network != "host",
    };
    for key in hc.sysctls.iter().flatten().map(|(k, _)| k) {
        berth_runtime::sysctl::check(key, private).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// `--cgroup-parent`: a path under each hierarchy's root, never out of it.
fn cgroup_parent(parent: &str) -> Result<(), ApiError> {
    if parent.split('/').any(|c| c == "..") || parent.contains('\0') {
        return Err(bad(format!("invalid cgroup parent: {parent}")));
    }
    Ok(())
}

/// `0-3,5`: the set of numbers, or None when malformed.
fn parse_cpuset(s: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// `--device-cgroup-rule 'c 1:3 mr'`: an OCI device cgroup entry.
fn device_cgroup_rule(rule: &str) -> Result<Value, ApiError> {
    let invalid = || bad(format!("invalid device cgroup rule: {rule:?}"));
    let f: Vec<&str> = rule.split_whitespace().collect();
    let [typ, numbers, access] = f.as_slice() else { return Err(invalid()) };
    if !matches!(*typ, "a" | "b" | "c") || access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(invalid)?;
    let num = |n: &str| -> Result<Value, ApiError> {
        if n == "*" { Ok(Value::Null) } else { n.parse::<i64>().map(|n| json!(n)).map_err(|_| invalid()) }
    };
    Ok(json!({"allow": true, "type": typ, "major": num(major)?, "minor": num(minor)?, "access": access}))
}

/// `--add-host name:ip` (or `name=ip`): the /etc/hosts line. `host-gateway` is the default
/// bridge's gateway (`host_gateway`), as Docker's.
pub fn extra_host(h: &str, host_gateway: Option<std::net::Ipv4Addr>) -> Result<String, ApiError> {
    let (name, ip) = h.split_once('=').or_else(|| h.split_once(':')).ok_or_else(|| bad(format!("invalid extra host: {h}")))?;
    let gateway;
    let ip = if ip == "host-gateway" {
        gateway = host_gateway.ok_or_else(|| bad("unable to derive the IP value for host-gateway"))?.to_string();
        gateway.as_str()
    } else {
        ip
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!("invalid IP address in add-host: {ip:?}")));
    }
    if !is_word(name) {
        return Err(bad(format!("invalid extra host: {h:?}")));
    }
    Ok(format!("{ip}\t{name}"))
}

/// One word of /etc/hosts or resolv.conf: no blanks or control characters to start another
/// field or line with.
fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#')
}

/// A `--mount` as an OCI mount.
fn mount(m: &Mount) -> Result<Value, ApiError> {
    let target = m.target.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| bad("invalid mount config: Target must not be empty"))?;
    let typ = m.typ.as_deref().unwrap_or("");
    let source = m.source.as_deref().unwrap_or("");
    let ro = m.read_only == Some(true);
    match typ {
        "bind" => {
            if !source.starts_with('/') {
                return Err(bad(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            if !Path::new(source).exists() {
                return Err(bad(format!("invalid mount config for type \"bind\": bind source path does not exist: {source}")));
            }
            let opts = m.bind_options.as_ref();
            let mut options = vec![if opts.and_then(|o| o.non_recursive) == Some(true) { "bind" } else { "rbind" }.to_string()];
            match opts.and_then(|o| o.propagation.as_deref()).unwrap_or("") {
                "" => options.push("rprivate".into()),
                p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave") => options.push(p.into()),
                p => return Err(bad(format!("invalid mount config: invalid propagation mode: {p}"))),
            }
            if ro {
                options.push("ro".into());
            }
            Ok(json!({"destination": target, "type": "bind", "source": source, "options": options}))
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(bad("invalid mount config for type \"tmpfs\": source must not be specified"));
            }
            let mut options = vec!["nosuid".to_string(), "nodev".to_string(), "noexec".to_string()];
            if let Some(t) = &m.tmpfs_options {
                if let Some(size) = t.size_bytes.filter(|s| *s > 0) {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = t.mode.filter(|m| *m > 0) {
                    options.push(format!("mode={mode:o}"));
                }
            }
            if ro {
                options.push("ro".into());
            }
            Ok(json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options}))
        }
        t => Err(bad(format!("invalid mount config: mount type unknown: {t:?}"))),
    }
}

/// `--tmpfs /run:exec,size=1m`: Docker's defaults (nosuid, nodev, noexec), each overridden by
/// its opposite when the user asks for it.
fn tmpfs_options(opts: &str) -> Vec<String> {
    let mut out: Vec<String> = ["nosuid", "nodev", "noexec"].into_iter().map(String::from).collect();
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let opposite = match o {
            "suid" => Some("nosuid"),
            "dev" => Some("nodev"),
            "exec" => Some("noexec"),
            "nosuid" | "nodev" | "noexec" => Some(o),
            _ => None,
        };
        if let Some(d) = opposite {
            out.retain(|x| x != d);
        }
        out.push(o.to_string());
    }
    out
}

/// Whether the memory controller accounts swap (v1 `memsw` files; on v2 `memory.swap.max` in
/// any non-root cgroup, so it is looked for in ours). Looked up once per daemon.
/// What dockerd fills in at create, so inspect and a later `update` see its values: swap as
/// much as memory (memory+swap twice the limit) where swap is accounted; a block I/O weight the
/// kernel cannot apply is dropped (with the warning `check` gave).
pub(crate) fn settle(hc: &mut HostConfig) {
    if hc.memory.unwrap_or(0) > 0 && hc.memory_swap.unwrap_or(0) == 0 && swap_accounting() {
        hc.memory_swap = hc.memory.map(|m| m.saturating_mul(2));
    }
    if hc.blkio_weight.is_some_and(|w| w > 0) && !blkio_weight_supported() {
        hc.blkio_weight = Some(0);
    }
}

fn swap_accounting() -> bool {
    static ACCOUNTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ACCOUNTED.get_or_init(find_swap_accounting)
}

fn find_swap_accounting() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || Path::new("/sys/fs/cgroup/init.scope/memory.swap.max").exists()
        || std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)))
            .is_some_and(|rel| Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')).join("memory.swap.max").exists())
}

/// The OCI `linux.resources` for the HostConfig's limits (without device rules).
fn resources(hc: &HostConfig, swap_accounting: impl Fn() -> bool) -> Value {
    let mut r = serde_json::Map::new();
    let mut memory = serde_json::Map::new();
    let limit = hc.memory.unwrap_or(0);
    if limit > 0 {
        memory.insert("limit".into(), json!(limit));
        // Docker: without --memory-swap, as much swap as memory (when swap is accounted).
        match hc.memory_swap.unwrap_or(0) {
            0 if swap_accounting() => {
                memory.insert("swap".into(), json!(limit.saturating_mul(2)));
            }
            0 => {}
            s => {
                memory.insert("swap".into(), json!(s));
            }
        }
    }
    if let Some(v) = hc.memory_reservation.filter(|v| *v > 0) {
        memory.insert("reservation".into(), json!(v));
    }
    if let Some(v) = hc.memory_swappiness.filter(|v| *v >= 0) {
        memory.insert("swappiness".into(), json!(v));
    }
    if hc.oom_kill_disable == Some(true) {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        r.insert("memory".into(), Value::Object(memory));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(v) = hc.cpu_shares.filter(|v| *v > 0) {
        cpu.insert("shares".into(), json!(v));
    }
    match hc.nano_cpus.unwrap_or(0) {
        0 => {
            if let Some(v) = hc.cpu_period.filter(|v| *v > 0) {
                cpu.insert("period".into(), json!(v));
            }
            if let Some(v) = hc.cpu_quota.filter(|v| *v != 0) {
                cpu.insert("quota".into(), json!(v));
            }
        }
        n => {
            cpu.insert("period".into(), json!(CPU_PERIOD));
            cpu.insert("quota".into(), json!(n * CPU_PERIOD / 1_000_000_000));
        }
    }
    for (k, v) in [("cpus", &hc.cpuset_cpus), ("mems", &hc.cpuset_mems)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            cpu.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [("realtimePeriod", hc.cpu_realtime_period), ("realtimeRuntime", hc.cpu_realtime_runtime)] {
        if let Some(v) = v.filter(|v| *v > 0) {
            cpu.insert(k.into(), json!(v));
        }
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(v) = hc.pids_limit.filter(|v| *v > 0) {
        r.insert("pids".into(), json!({"limit": v}));
    }
    if let Some(w) = hc.blkio_weight.filter(|w| *w > 0) {
        r.insert("blockIO".into(), json!({"weight": w}));
    }
    Value::Object(r)
}

/// The limits an `update` writes to a running container's cgroup: the merged HostConfig's, and
/// an unlimited pids limit when the update asked for one (which the spec leaves out).
pub(crate) fn live_resources(merged: &HostConfig, asked: &HostConfig) -> Result<oci_spec::runtime::LinuxResources, ApiError> {
    let mut r = resources(merged, swap_accounting);
    if !blkio_weight_supported()
        && let Value::Object(m) = &mut r
    {
        m.remove("blockIO");
    }
    if asked.pids_limit.is_some_and(|p| p <= 0) {
        r["pids"] = json!({"limit": 0});
    }
    serde_json::from_value(r).map_err(|e| ApiError::new(Kind::Internal, format!("the container's limits: {e}")))
}

/// A device node on the host.
pub(crate) struct Node {
    pub typ: &'static str,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Node {
    /// The node these are the metadata of, if a character or block device.
    pub(crate) fn of(md: &std::fs::Metadata) -> Option<Node> {
        let ft = md.file_type();
        let typ = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            return None;
        };
        let rdev = md.rdev();
        Some(Node {
            typ,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        })
    }

    /// The OCI `linux.devices` entry for it at `path` in the container.
    pub(crate) fn spec(&self, path: &Path) -> Value {
        json!({"path": path, "type": self.typ, "major": self.major, "minor": self.minor, "fileMode": self.mode, "uid": self.uid, "gid": self.gid})
    }
}

/// The device at `path`, following symlinks (as `--device` does).
fn device_at(path: &Path) -> std::io::Result<Option<Node>> {
    Ok(Node::of(&std::fs::metadata(path)?))
}

/// `--device HOST[:CONTAINER[:PERMS]]`: the nodes (a directory gives every device under it)
/// and their cgroup rules.
fn devices(d: &DeviceMapping) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let host = Path::new(&d.path_on_host);
    let in_ctr = if d.path_in_container.is_empty() { d.path_on_host.as_str() } else { d.path_in_container.as_str() };
    let access = if d.cgroup_permissions.is_empty() { "rwm" } else { d.cgroup_permissions.as_str() };
    let mut seen = std::collections::HashSet::new();
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm') && seen.insert(c)) {
        return Err(bad(format!("{} invalid device mode: {access}", d.path_on_host)));
    }
    let gathering =
        |e: std::io::Error| bad(format!("error gathering device information while adding custom device {:?}: {e}", d.path_on_host));
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    if std::fs::metadata(host).map_err(gathering)?.is_dir() {
        let mut stack = vec![host.to_path_buf()];
        let mut seen = 0usize;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).map_err(gathering)?.flatten() {
                seen += 1;
                if seen > MAX_DEVICE_WALK {
                    return Err(bad(format!("--device {}: more than {MAX_DEVICE_WALK} entries to look through", d.path_on_host)));
                }
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(host) {
                    found.push((p.clone(), Path::new(in_ctr).join(rel)));
                }
            }
        }
    } else {
        found.push((host.to_path_buf(), PathBuf::from(in_ctr)));
    }
    let (mut nodes, mut rules) = (Vec::new(), Vec::new());
    for (h, c) in found {
        let Some(node) = device_at(&h).map_err(gathering)? else {
            if host == h {
                return Err(bad(format!(
                    "error gathering device information while adding custom device {:?}: not a device node",
                    d.path_on_host
                )));
            }
            continue;
        };
        nodes.push(node.spec(&c));
        rules.push(json!({"allow": true, "type": node.typ, "major": node.major, "minor": node.minor, "access": access}));
    }
    Ok((nodes, rules))
}

/// `--device-read-bps /dev/sda:1mb`: the device's numbers and the rate.
fn throttle(t: &ThrottleDevice) -> Result<Value, ApiError> {
    match device_at(Path::new(&t.path)) {
        Ok(Some(n)) => Ok(json!({"major": n.major, "minor": n.minor, "rate": t.rate})),
        Ok(None) => Err(bad(format!("{} is not a device", t.path))),
        Err(e) => Err(bad(format!("{}: {e}", t.path))),
    }
}

/// Write the HostConfig's settings into `spec` (Docker's default spec with the container's
/// config already applied).
pub fn apply(spec: &mut Value, hc: &HostConfig) -> Result<(), ApiError> {
    let privileged = hc.privileged == Some(true);
    let linux = &mut spec["linux"];
    let res = resources(hc, swap_accounting);
    if let Value::Object(mut r) = res {
        // Discarded with Docker's warning at create where the kernel cannot weigh block I/O.
        if !blkio_weight_supported() {
            r.remove("blockIO");
        }
        for (k, v) in r {
            linux["resources"][k] = v;
        }
    }
    let mut throttles = serde_json::Map::new();
    for (key, list) in [
        ("throttleReadBpsDevice", &hc.blkio_device_read_bps),
        ("throttleWriteBpsDevice", &hc.blkio_device_write_bps),
        ("throttleReadIOPSDevice", &hc.blkio_device_read_iops),
        ("throttleWriteIOPSDevice", &hc.blkio_device_write_iops),
    ] {
        let list: Vec<Value> = list.iter().flatten().map(throttle).collect::<Result<_, _>>()?;
        if !list.is_empty() {
            throttles.insert(key.into(), json!(list));
        }
    }
    for (k, v) in throttles {
        linux["resources"]["blockIO"][k] = v;
    }
    if !privileged {
        let (mut nodes, mut rules) = (Vec::new(), Vec::new());
        for d in hc.devices.iter().flatten() {
            let (n, r) = devices(d)?;
            nodes.extend(n);
            rules.extend(r);
        }
        for r in hc.device_cgroup_rules.iter().flatten() {
            rules.push(device_cgroup_rule(r)?);
        }
        if !nodes.is_empty() {
            let list = linux["devices"].as_array_mut().map(std::mem::take).unwrap_or_default();
            let paths: BTreeSet<String> = nodes.iter().filter_map(|n| n["path"].as_str().map(str::to_string)).collect();
            let mut list: Vec<Value> = list.into_iter().filter(|d| d["path"].as_str().is_none_or(|p| !paths.contains(p))).collect();
            list.extend(nodes);
            linux["devices"] = json!(list);
        }
        if !rules.is_empty() {
            let mut list = linux["resources"]["devices"].as_array().cloned().unwrap_or_default();
            list.extend(rules);
            linux["resources"]["devices"] = json!(list);
        }
        if let Some(m) = &hc.masked_paths {
            linux["maskedPaths"] = json!(m);
        }
        if let Some(r) = &hc.readonly_paths {
            linux["readonlyPaths"] = json!(r);
        }
    }
    // The cgroup's path is spec::build's (spec::cgroup_path); the parent is checked here again.
    if let Some(parent) = hc.cgroup_parent.as_deref() {
        cgroup_parent(parent)?;
    }
    if let Some(list) = linux["namespaces"].as_array_mut() {
        match hc.cgroupns_mode.as_deref() {
            Some("host") => list.retain(|n| n["type"] != "cgroup"),
            Some("private") if !list.iter().any(|n| n["type"] == "cgroup") => list.push(json!({"type": "cgroup"})),
            _ => {}
        }
    }
    if let Some(o) = hc.oom_score_adj.filter(|o| *o != 0) {
        spec["process"]["oomScoreAdj"] = json!(o);
    }
    let mounts: Vec<Value> = hc
        .tmpfs
        .iter()
        .flatten()
        .map(|(target, opts)| Ok(json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": tmpfs_options(opts)})))
        .chain(hc.mounts.iter().flatten().filter(|m| m.typ.as_deref() != Some("volume")).map(mount))
        .collect::<Result<_, ApiError>>()?;
    if let Some(list) = spec["mounts"].as_array_mut() {
        // A user's mount on one of Docker's (e.g. `--tmpfs /dev/shm`) replaces it.
        let targets: BTreeSet<String> = mounts.iter().filter_map(|m| m["destination"].as_str().map(str::to_string)).collect();
        list.retain(|m| m["destination"].as_str().is_none_or(|d| !targets.contains(d)));
        list.extend(mounts);
    }
    Ok(())
}

/// resolv.conf with the container's `--dns`, `--dns-search` and `--dns-option` in place of the
/// base file's name servers, search domains and options; built as Docker builds it (search,
/// name servers, options) when any of them is given.
pub fn resolv_conf(base: &str, hc: &HostConfig) -> String {
    let dns = hc.dns.as_deref().unwrap_or_default();
    let search = hc.dns_search.as_deref().unwrap_or_default();
    let options = hc.dns_options.as_deref().unwrap_or_default();
    if dns.is_empty() && search.is_empty() && options.is_empty() {
        return base.to_string();
    }
    let words = |key: &str| -> Vec<String> {
        base.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(key)).then(|| f.map(str::to_string).collect::<Vec<_>>())
            })
            .reduce(|a, b| if key == "search" { b } else { a.into_iter().chain(b).collect() })
            .unwrap_or_default()
    };
    let or_base = |user: &[String], key: &str| if user.is_empty() { words(key) } else { user.to_vec() };
    let search = or_base(search, "search");
    let servers = or_base(dns, "nameserver");
    let options = or_base(options, "options");
    let mut out = String::new();
    if !search.is_empty() && search != ["."] {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for d in servers {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The name the default runtime answers to in `inspect` and `info`: clients send and expect
/// Docker's `runc`.
pub const DEFAULT_RUNTIME: &str = "runc";
/// Names `HostConfig.Runtime` may give: all are berth-runtime.
pub const RUNTIMES: &[&str] = &[DEFAULT_RUNTIME, "berth"];

/// The logging drivers dockerd has on Linux (berth has json-file and none).
const DOCKER_LOG_DRIVERS: &[&str] = &["syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "gcplogs", "logentries"];

/// dockerd's checks of `--cpu-rt-period` and `--cpu-rt-runtime`; the values go to the cgroup.
/// `supported` is asked only when real-time CPU time is (it reads the host's mounts).
fn realtime(hc: &HostConfig, supported: impl Fn() -> bool) -> Result<(), ApiError> {
    let period = hc.cpu_realtime_period.unwrap_or(0);
    let runtime = hc.cpu_realtime_runtime.unwrap_or(0);
    if (period > 0 || runtime > 0) && !supported() {
        return Err(bad("Your kernel does not support CPU real-time scheduler"));
    }
    if period != 0 && runtime != 0 && runtime > period {
        return Err(bad("cpu-rt-runtime cannot be higher than cpu-rt-period"));
    }
    Ok(())
}

/// The defaults Docker fills into a HostConfig at create, for `inspect`.
pub fn inspect_defaults(hc: &mut serde_json::Map<String, Value>, privileged: bool, cgroupns: &str) {
    let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    let masked: Vec<&str> = if privileged { Vec::new() } else { berth_runtime::spec::MASKED_PATHS.to_vec() };
    let readonly: Vec<&str> = if privileged { Vec::new() } else { berth_runtime::spec::READONLY_PATHS.to_vec() };
    let defaults: BTreeMap<&str, Value> = [
        ("IpcMode", json!("private")),
        ("CgroupnsMode", json!(cgroupns)),
        ("ShmSize", json!(berth_runtime::spec::DEFAULT_SHM_SIZE)),
        ("MaskedPaths", json!(masked)),
        ("ReadonlyPaths", json!(readonly)),
        ("Runtime", json!(DEFAULT_RUNTIME)),
    ]
    .into_iter()
    .collect();
    for (k, d) in defaults {
        if empty(hc.get(k)) || (k == "ShmSize" && hc.get(k).and_then(Value::as_i64) == Some(0)) {
            hc.insert(k.into(), d);
        }
    }
    // Docker writes the zero value of what was not set: 0, "", false (lists and maps stay null).
    for (keys, zero) in [
        (
            &[
                "CpuShares",
                "Memory",
                "NanoCpus",
                "CpuPeriod",
                "CpuQuota",
                "CpuRealtimePeriod",
                "CpuRealtimeRuntime",
                "BlkioWeight",
                "MemoryReservation",
                "MemorySwap",
                "OomScoreAdj",
                "CpuCount",
                "CpuPercent",
                "IOMaximumIOps",
                "IOMaximumBandwidth",
            ][..],
            json!(0),
        ),
        (
            &[
                "ContainerIDFile",
                "CgroupParent",
                "CpusetCpus",
                "CpusetMems",
                "VolumeDriver",
                "Cgroup",
                "UsernsMode",
                "PidMode",
                "UTSMode",
                "Isolation",
            ][..],
            json!(""),
        ),
        (&["Privileged", "PublishAllPorts", "ReadonlyRootfs"][..], json!(false)),
    ] {
        for k in keys {
            if hc.get(*k).is_none_or(Value::is_null) {
                hc.insert(k.to_string(), zero.clone());
            }
        }
    }
    // Docker records the swap a memory limit gets: twice the memory, or -1 (no limit) where swap
    // is not accounted.
    let memory = hc.get("Memory").and_then(Value::as_i64).unwrap_or(0);
    if memory > 0 && hc.get("MemorySwap").and_then(Value::as_i64).unwrap_or(0) == 0 {
        hc.insert("MemorySwap".into(), json!(if swap_accounting() { memory.saturating_mul(2) } else { -1 }));
    }
    // What Docker omits when it is not set.
    for k in ["Annotations", "Init", "Mounts", "StorageOpt", "Sysctls", "Tmpfs"] {
        let unset = hc
            .get(k)
            .is_none_or(|v| v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) || v.as_array().is_some_and(|a| a.is_empty()));
        if unset {
            hc.remove(k);
        }
    }
    if hc.get("PortBindings").is_none_or(Value::is_null) {
        hc.insert("PortBindings".into(), json!({}));
    }
    if hc.get("ConsoleSize").is_none_or(Value::is_null) {
        hc.insert("ConsoleSize".into(), json!([0, 0]));
    }
    // Omitted unless set (API 1.42; berth-api puts them back for older clients).
    for k in ["KernelMemory", "KernelMemoryTCP"] {
        if hc.get(k).is_none_or(|v| v.is_null() || v.as_i64() == Some(0)) {
            hc.remove(k);
        }
    }
    if let Some(l) = hc.get("LogConfig").filter(|l| empty(l.get("Type"))) {
        let config = l.get("Config").filter(|c| !c.is_null()).cloned().unwrap_or(json!({}));
        hc.insert("LogConfig".into(), json!({"Type": "json-file", "Config": config}));
    }
    // Docker keeps "unset" as null, not as the CLI's -1 or 0.
    if hc.get("MemorySwappiness").and_then(Value::as_i64) == Some(-1) {
        hc.insert("MemorySwappiness".into(), Value::Null);
    }
    if hc.get("PidsLimit").and_then(Value::as_i64).is_some_and(|l| l <= 0) {
        hc.insert("PidsLimit".into(), Value::Null);
    }
}

/// Docker's rules for a restart policy's name and retry count.
pub(crate) fn check_restart_policy(p: &berth_api::containers::RestartPolicy) -> Result<(), ApiError> {
    match p.name.as_str() {
        "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
        n => {
            return Err(bad(format!(
                "invalid restart policy: unknown policy '{n}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
            )));
        }
    }
    if p.maximum_retry_count < 0 {
        return Err(bad("invalid restart policy: maximum retry count must be a positive integer"));
    }
    if p.maximum_retry_count > 0 && p.name != "on-failure" {
        return Err(bad(format!("invalid restart policy: maximum retry count can only be used with 'on-failure', got '{}'", p.name)));
    }
    Ok(())
}

/// Docker's checks of the resource limits, at create and at `update` (which may set a swap
/// limit alone). Warnings for what is accepted and discarded.
pub(crate) fn check_resources(hc: &HostConfig, update: bool, warnings: &mut Vec<String>) -> Result<(), ApiError> {
    if set(&hc.kernel_memory) || set(&hc.kernel_memory_tcp) {
        // Kernels since 6.1 (cgroup v1 and v2 alike) no longer limit kernel memory apart.
        warnings.push(
            "Your kernel does not support kernel memory limit capabilities or the cgroup is not mounted. Limitation discarded.".into(),
        );
    }

    let memory = hc.memory.unwrap_or(0);
    let swap = hc.memory_swap.unwrap_or(0);
    let reservation = hc.memory_reservation.unwrap_or(0);
    if memory != 0 && memory < MIN_MEMORY {
        return Err(bad("Minimum memory limit allowed is 6MB"));
    }
    if memory > 0 && swap > 0 && swap < memory {
        return Err(bad("Minimum memoryswap limit should be larger than memory limit, see usage"));
    }
    if memory == 0 && swap > 0 && !update {
        return Err(bad("You should always set the Memory limit when using Memoryswap limit, see usage"));
    }
    if reservation != 0 && reservation < MIN_MEMORY {
        return Err(bad("Minimum memory reservation allowed is 6MB"));
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return Err(bad("Minimum memory limit can not be less than memory reservation limit, see usage"));
    }
    if let Some(s) = hc.memory_swappiness.filter(|s| *s != -1)
        && !(0..=100).contains(&s)
    {
        return Err(bad(format!("Invalid value: {s}, valid memory swappiness range is 0-100")));
    }
    if hc.oom_kill_disable == Some(true) && memory == 0 {
        warnings.push(
            "OOM killer is disabled for the container, but no memory limit is set, this can result in the system running out of resources."
                .into(),
        );
    }

    let nano = hc.nano_cpus.unwrap_or(0);
    let period = hc.cpu_period.unwrap_or(0);
    let quota = hc.cpu_quota.unwrap_or(0);
    if nano > 0 && period > 0 {
        return Err(bad("Conflicting options: Nano CPUs and CPU Period cannot both be set"));
    }
    if nano > 0 && quota > 0 {
        return Err(bad("Conflicting options: Nano CPUs and CPU Quota cannot both be set"));
    }
    if nano != 0 {
        // Only when asked: finding the CPUs reads this process's cgroup files.
        let ncpu = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
        if nano < 0 || nano > ncpu * 1_000_000_000 {
            return Err(bad(format!("Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")));
        }
    }
    if period != 0 && !CPU_PERIOD_RANGE.contains(&period) {
        return Err(bad("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"));
    }
    if quota > 0 && quota < MIN_CPU_QUOTA {
        return Err(bad("CPU cfs quota can not be less than 1ms (i.e. 1000)"));
    }
    if hc.cpu_shares.unwrap_or(0) < 0 {
        return Err(bad(format!("invalid CPU shares: {}", hc.cpu_shares.unwrap_or(0))));
    }
    for (what, value, online) in [
        ("cpus", hc.cpuset_cpus.as_deref(), "/sys/devices/system/cpu/online"),
        ("mems", hc.cpuset_mems.as_deref(), "/sys/devices/system/node/online"),
    ] {
        let Some(v) = value.filter(|v| !v.is_empty()) else { continue };
        let wanted = parse_cpuset(v).ok_or_else(|| bad(format!("Invalid value {v} for cpuset {what}")))?;
        let available = std::fs::read_to_string(online).unwrap_or_else(|_| "0".into());
        let have = parse_cpuset(available.trim()).unwrap_or_default();
        if !wanted.is_subset(&have) {
            let label = if what == "cpus" { "CPUs" } else { "memory nodes" };
            return Err(bad(format!("Requested {label} are not available - requested {v}, available: {}", available.trim())));
        }
    }
    if let Some(w) = hc.blkio_weight.filter(|w| *w > 0)
        && !BLKIO_WEIGHT_RANGE.contains(&w)
    {
        return Err(bad("Range of blkio weight is from 10 to 1000"));
    }
    if hc.blkio_weight.is_some_and(|w| w > 0) && !blkio_weight_supported() {
        warnings.push("Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded.".into());
    }
    Ok(())
}

/// Can a container's cgroup take a block I/O weight (the blkio or io controller with CFQ/BFQ
/// weights)? Looked up once.
pub(crate) fn blkio_weight_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let v1 = ["blkio.weight", "blkio.bfq.weight"].iter().any(|f| Path::new("/sys/fs/cgroup/blkio").join(f).exists());
        // cgroup v2: the weight files are in every non-root cgroup; look in the first few.
        let v2 = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().take(64).any(|e| ["io.weight", "io.bfq.weight"].iter().any(|f| e.path().join(f).exists())))
            .unwrap_or(false);
        v1 || v2
    })
}

/// Docker's limits on a healthcheck's timings (0 takes the default).
fn check_healthcheck(h: &berth_models::containers::HealthConfig) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(Kind::InvalidArgument, m);
    for (name, v) in
        [("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period), ("StartInterval", h.start_interval)]
    {
        if let Some(v) = v
            && v != 0
            && v < 1_000_000
        {
            return Err(bad(format!("{name} in Healthcheck cannot be less than 1ms")));
        }
    }
    if h.retries.is_some_and(|r| r < 0) {
        return Err(bad("Retries in Healthcheck cannot be negative".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(v: Value) -> HostConfig {
        serde_json::from_value(v).unwrap()
    }

    fn refused(v: Value) -> String {
        check(&ContainerConfig::default(), &hc(v)).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn dockers_limits_are_checked_at_create() {
        assert!(refused(json!({"Memory": 1024})).contains("Minimum memory limit allowed is 6MB"));
        assert!(refused(json!({"Memory": 10_000_000, "MemorySwap": 9_000_000})).contains("memoryswap limit should be larger"));
        assert!(refused(json!({"MemorySwap": 9_000_000})).contains("always set the Memory limit"));
        assert!(refused(json!({"MemorySwappiness": 101})).contains("swappiness range is 0-100"));
        assert!(refused(json!({"NanoCpus": 500_000_000, "CpuQuota": 5000})).contains("Conflicting options"));
        assert!(refused(json!({"NanoCpus": 1_000_000_000_000i64})).contains("Range of CPUs is from 0.01"));
        assert!(refused(json!({"CpuPeriod": 10})).contains("CPU cfs period"));
        assert!(refused(json!({"CpusetCpus": "0-9999"})).contains("Requested CPUs are not available"));
        assert!(refused(json!({"CpusetCpus": "x"})).contains("Invalid value x for cpuset cpus"));
        assert!(refused(json!({"BlkioWeight": 5})).contains("Range of blkio weight"));
        assert!(refused(json!({"OomScoreAdj": 1001})).contains("range for oom score adj"));
        assert!(refused(json!({"DeviceCgroupRules": ["x 1:2 r"]})).contains("invalid device cgroup rule"));
        assert!(refused(json!({"ExtraHosts": ["nohost"]})).contains("invalid extra host"));
        assert!(refused(json!({"ExtraHosts": ["a\nb:1.2.3.4"]})).contains("invalid extra host"), "no line injected");
        assert!(refused(json!({"DnsSearch": ["a.test\nnameserver 6.6.6.6"]})).contains("invalid DNS"));
        assert!(refused(json!({"DnsOptions": ["ndots:1 rotate"]})).contains("invalid DNS"));
        assert!(refused(json!({"Tmpfs": {"/a": ""}, "Mounts": [{"Type": "tmpfs", "Target": "/a"}]})).contains("Duplicate mount point"));
        assert!(refused(json!({"Mounts": [{"Type": "bind", "Source": "/no/such/dir", "Target": "/a"}]})).contains("does not exist"));
        // What the docker CLI sends by default passes, and so do reasonable limits.
        let cli = json!({"Memory": 0, "MemorySwappiness": -1, "PidsLimit": 0, "CpuShares": 0, "NanoCpus": 0, "BlkioWeight": 0,
            "PortBindings": {}, "Links": null, "Devices": [], "DeviceRequests": null, "BlkioWeightDevice": [], "CgroupnsMode": "",
            "Isolation": "", "UsernsMode": ""});
        assert_eq!(check(&ContainerConfig::default(), &hc(cli)).unwrap(), Vec::<String>::new());
        let ok = json!({"Memory": 64 << 20, "MemoryReservation": 32 << 20, "NanoCpus": 500_000_000, "PidsLimit": 20, "CpusetCpus": "0"});
        assert!(check(&ContainerConfig::default(), &hc(ok)).is_ok());
        assert_eq!(check(&ContainerConfig::default(), &hc(json!({"KernelMemory": 1 << 30}))).unwrap().len(), 1, "a warning");
    }

    #[test]
    fn what_start_would_refuse_is_refused_at_create() {
        for (v, message) in [
            (
                json!({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rwx"}]}),
                "invalid device mode: rwx",
            ),
            (
                json!({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rr"}]}),
                "invalid device mode: rr",
            ),
            (
                json!({"Devices": [{"PathOnHost": "/no/such/dev", "PathInContainer": "", "CgroupPermissions": ""}]}),
                "error gathering device information",
            ),
            (json!({"BlkioDeviceReadBps": [{"Path": "/no/such/dev", "Rate": 1}]}), "/no/such/dev"),
            (json!({"CgroupParent": "../../escape"}), "invalid cgroup parent"),
            (json!({"CgroupParent": "a/../../b"}), "invalid cgroup parent"),
            (json!({"LogConfig": {"Type": "json-file", "Config": {"max-size": "lots"}}}), "lots"),
            (json!({"LogConfig": {"Type": "json-file", "Config": {"max-file": "0"}}}), "invalid value for max-file"),
        ] {
            assert!(refused(v.clone()).contains(message), "{v}: {:?}", refused(v.clone()));
        }
        assert!(
            check(
                &ContainerConfig::default(),
                &hc(json!({"CgroupParent": "/my/parent", "Devices": [
            {"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rw"}]}))
            )
            .is_ok()
        );
    }

    #[test]
    fn only_namespaced_sysctls_in_the_containers_own_namespaces() {
        let sysctl = |mode: Value, key: &str| {
            let mut v = mode;
            v["Sysctls"] = json!({key: "1"});
            refused(v)
        };
        // Never: host-wide keys, whatever the namespaces.
        for key in ["kernel.core_pattern", "kernel.panic", "vm.dirty_expire_centisecs", "kernel.hostname"] {
            assert!(!sysctl(json!({}), key).is_empty(), "{key} accepted");
        }
        assert!(sysctl(json!({}), "net.ipv4.ip_forward").is_empty());
        assert!(sysctl(json!({"NetworkMode": "host"}), "net.ipv4.ip_forward").contains("host's network namespace"));
        assert!(sysctl(json!({}), "kernel.shmmax").is_empty());
        assert!(sysctl(json!({"IpcMode": "host"}), "kernel.shmmax").contains("host's IPC namespace"));
        assert!(sysctl(json!({"IpcMode": "host"}), "fs.mqueue.msg_max").contains("host's IPC namespace"));
        assert!(sysctl(json!({}), "kernel.domainname").is_empty());
        assert!(sysctl(json!({"UTSMode": "host"}), "kernel.domainname").contains("host's UTS namespace"));
        assert!(sysctl(json!({"NetworkMode": "host"}), "kernel.domainname").contains("host's UTS namespace"));
        assert!(sysctls(&hc(json!({"NetworkMode": "container:x", "Sysctls": {"net.core.somaxconn": "1"}})), false).is_err());
    }

    #[test]
    fn log_drivers_and_runtimes_get_dockers_answers() {
        let checked = |v: Value| check(&ContainerConfig::default(), &hc(v)).err().map(|e| (e.kind, e.message));
        assert_eq!(checked(json!({"LogConfig": {"Type": "none"}, "Runtime": "runc"})), None);
        assert_eq!(checked(json!({"Runtime": "berth"})), None);
        assert_eq!(
            checked(json!({"LogConfig": {"Type": "nosuch"}})),
            Some((Kind::InvalidArgument, "logger: no log driver named 'nosuch' is registered".into()))
        );
        assert_eq!(checked(json!({"LogConfig": {"Type": "syslog"}})).unwrap().0, Kind::NotImplemented);
        assert_eq!(checked(json!({"Runtime": "kata"})), Some((Kind::InvalidArgument, "Unknown runtime specified kata".into())));
    }

    #[test]
    fn real_time_cpu_is_checked_as_dockerd_checks_it() {
        let rt = |v: Value, supported: bool| realtime(&hc(v), || supported).err().map(|e| e.message);
        assert_eq!(rt(json!({"CpuRealtimePeriod": 1000000, "CpuRealtimeRuntime": 950000}), true), None);
        assert_eq!(rt(json!({"CpuRealtimeRuntime": 0}), false), None, "unset is fine anywhere");
        assert_eq!(rt(json!({"CpuRealtimeRuntime": 10}), false).unwrap(), "Your kernel does not support CPU real-time scheduler");
        assert_eq!(
            rt(json!({"CpuRealtimePeriod": 1000, "CpuRealtimeRuntime": 2000}), true).unwrap(),
            "cpu-rt-runtime cannot be higher than cpu-rt-period"
        );
    }

    #[test]
    fn published_ports_are_checked() {
        assert!(check(&ContainerConfig::default(), &hc(json!({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}))).is_ok());
        assert!(check(&ContainerConfig::default(), &hc(json!({"PortBindings": {"80/tcp": [{"HostPort": "8000-8010"}]}}))).is_ok());
        for bad in [json!({"x/tcp": []}), json!({"80/icmp": []}), json!({"80/tcp": [{"HostPort": "http"}]})] {
            let e = check(&ContainerConfig::default(), &hc(json!({"PortBindings": bad}))).unwrap_err();
            assert_eq!(e.kind, Kind::InvalidArgument, "{}", e.message);
        }
        let w = check(&ContainerConfig::default(), &hc(json!({"NetworkMode": "host", "PublishAllPorts": true}))).unwrap();
        assert_eq!(w, vec!["Published ports are discarded when using host network mode".to_string()]);
    }

    #[test]
    fn restart_policies_are_checked_as_docker_checks_them() {
        for ok in [
            json!({"Name": "always"}),
            json!({"Name": "unless-stopped"}),
            json!({"Name": "on-failure", "MaximumRetryCount": 3}),
            json!({"Name": "no"}),
        ] {
            assert!(check(&ContainerConfig::default(), &hc(json!({"RestartPolicy": ok}))).is_ok(), "{ok}");
        }
        for (bad, words) in [
            (json!({"RestartPolicy": {"Name": "sometimes"}}), "unknown policy 'sometimes'"),
            (json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}}), "must be a positive integer"),
            (json!({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}}), "can only be used with 'on-failure'"),
            (json!({"RestartPolicy": {"Name": "always"}, "AutoRemove": true}), "can't create 'AutoRemove' container with restart policy"),
        ] {
            let e = check(&ContainerConfig::default(), &hc(bad.clone())).unwrap_err();
            assert!(e.kind == Kind::InvalidArgument && e.message.contains(words), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn what_berth_cannot_do_yet_is_refused_not_ignored() {
        for v in [json!({"Links": ["a:b"]}), json!({"DeviceRequests": [{"Count": -1}]})] {
            let e = check(&ContainerConfig::default(), &hc(v.clone())).err().unwrap_or_else(|| panic!("{v} accepted"));
            assert_eq!(e.kind, Kind::NotImplemented, "{v}: {}", e.message);
        }
        // Volumes are checked as Docker checks them.
        let cfg: ContainerConfig = serde_json::from_value(json!({"Volumes": {"relative": {}}})).unwrap();
        assert_eq!(check(&cfg, &HostConfig::default()).err().map(|e| e.kind), Some(Kind::InvalidArgument));
        assert!(check(&ContainerConfig::default(), &hc(json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]}))).is_ok());
        let cfg: ContainerConfig = serde_json::from_value(json!({"Volumes": {}, "Healthcheck": {"Test": ["NONE"]}})).unwrap();
        assert!(check(&cfg, &HostConfig::default()).is_ok());
    }

    #[test]
    fn healthcheck_timings_as_docker_checks_them() {
        let with = |h: Value| check(&serde_json::from_value(json!({"Healthcheck": h})).unwrap(), &HostConfig::default());
        assert!(with(json!({"Test": ["CMD", "true"], "Interval": 1_000_000, "Timeout": 0, "Retries": 0})).is_ok());
        for (h, want) in [
            (json!({"Interval": 5}), "Interval in Healthcheck cannot be less than 1ms"),
            (json!({"Timeout": -1}), "Timeout in Healthcheck cannot be less than 1ms"),
            (json!({"StartPeriod": 999_999}), "StartPeriod in Healthcheck cannot be less than 1ms"),
            (json!({"StartInterval": 2}), "StartInterval in Healthcheck cannot be less than 1ms"),
            (json!({"Retries": -1}), "Retries in Healthcheck cannot be negative"),
        ] {
            let e = with(h.clone()).err().unwrap_or_else(|| panic!("{h} accepted"));
            assert_eq!((e.kind, e.message.as_str()), (Kind::InvalidArgument, want));
        }
    }

    #[test]
    fn limits_become_the_specs_resources() {
        let r = resources(&hc(json!({"Memory": 64 << 20, "NanoCpus": 1_500_000_000, "PidsLimit": 7, "CpuShares": 512})), || true);
        assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": 128 << 20}));
        assert_eq!(r["cpu"], json!({"shares": 512, "period": 100_000, "quota": 150_000}));
        assert_eq!(r["pids"], json!({"limit": 7}));
        let r = resources(&hc(json!({"Memory": 64 << 20, "MemorySwap": -1, "MemorySwappiness": 10, "OomKillDisable": true})), || true);
        assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": -1, "swappiness": 10, "disableOOMKiller": true}));
        let r = resources(&hc(json!({"Memory": 64 << 20})), || false);
        assert_eq!(r["memory"], json!({"limit": 64 << 20}), "no swap limit without swap accounting");
        let r = resources(&hc(json!({"CpuRealtimePeriod": 500_000, "CpuRealtimeRuntime": 0})), || true);
        assert_eq!(r["cpu"], json!({"realtimePeriod": 500_000}));
        let r = resources(&hc(json!({"CpuPeriod": 50_000, "CpuQuota": 25_000, "CpusetCpus": "0", "BlkioWeight": 300})), || true);
        assert_eq!(r["cpu"], json!({"period": 50_000, "quota": 25_000, "cpus": "0"}));
        assert_eq!(r["blockIO"], json!({"weight": 300}));
        assert_eq!(resources(&hc(json!({"MemorySwappiness": -1, "PidsLimit": -1})), || true), json!({}));
    }

    #[test]
    fn devices_mounts_and_namespaces_land_in_the_spec() {
        let mut spec = json!({"process": {}, "linux": {"devices": [], "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}], "maskedPaths": ["/proc/kcore"]}, "mounts": [{"destination": "/dev/shm", "type": "tmpfs"}]});
        let h = hc(json!({
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}],
            "DeviceCgroupRules": ["c 42:* rmw"],
            "OomScoreAdj": 100, "CgroupParent": "/my/parent", "CgroupnsMode": "private", "MaskedPaths": [],
            "Tmpfs": {"/dev/shm": "size=1m,exec"},
        }));
        apply(&mut spec, &h).unwrap();
        let l = &spec["linux"];
        assert_eq!(l["devices"][0]["path"], "/dev/mynull");
        assert_eq!((l["devices"][0]["major"].as_u64(), l["devices"][0]["minor"].as_u64()), (Some(1), Some(3)));
        assert_eq!(l["resources"]["devices"][1], json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}));
        assert_eq!(l["resources"]["devices"][2], json!({"allow": true, "type": "c", "major": 42, "minor": null, "access": "rmw"}));
        assert!(l["namespaces"].as_array().unwrap().contains(&json!({"type": "cgroup"})));
        assert_eq!(l["maskedPaths"], json!([]));
        assert_eq!(spec["process"]["oomScoreAdj"], 100);
        assert_eq!(
            spec["mounts"],
            json!([{"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=1m", "exec"]}])
        );
        let mut spec = json!({"linux": {}, "mounts": []});
        assert!(
            apply(&mut spec, &hc(json!({"Devices": [{"PathOnHost": "/no/such", "PathInContainer": "", "CgroupPermissions": ""}]})))
                .err()
                .is_some_and(|e| e.message.contains("error gathering device information"))
        );
        assert!(apply(&mut spec, &hc(json!({"CgroupParent": "../escape"}))).is_err());
        // A directory is walked for device nodes, within bounds.
        let big = hc(json!({"Devices": [{"PathOnHost": "/usr", "PathInContainer": "", "CgroupPermissions": ""}]}));
        assert!(apply(&mut json!({"linux": {}, "mounts": []}), &big).err().is_some_and(|e| e.message.contains("entries to look through")));
    }

    #[test]
    fn dns_settings_replace_the_base_files() {
        let base = "search example.com\nnameserver 10.0.0.1\noptions ndots:2\n";
        assert_eq!(resolv_conf(base, &HostConfig::default()), base);
        let h = hc(json!({"Dns": ["1.1.1.1", "9.9.9.9"], "DnsSearch": ["a.test"], "DnsOptions": ["rotate"]}));
        assert_eq!(resolv_conf(base, &h), "search a.test\nnameserver 1.1.1.1\nnameserver 9.9.9.9\noptions rotate\n");
        let h = hc(json!({"Dns": ["1.1.1.1"]}));
        assert_eq!(resolv_conf(base, &h), "search example.com\nnameserver 1.1.1.1\noptions ndots:2\n");
        let h = hc(json!({"DnsSearch": ["."]}));
        assert_eq!(resolv_conf(base, &h), "nameserver 10.0.0.1\noptions ndots:2\n");
        assert_eq!(extra_host("db:10.1.2.3", None).unwrap(), "10.1.2.3\tdb");
        assert_eq!(extra_host("v6=::1", None).unwrap(), "::1\tv6");
        assert_eq!(extra_host("gw:host-gateway", Some("172.17.0.1".parse().unwrap())).unwrap(), "172.17.0.1\tgw");
        assert!(extra_host("gw:host-gateway", None).is_err());
    }

    #[test]
    fn cpusets_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpuset("0-2,5"), Some([0, 1, 2, 5].into_iter().collect()));
        assert_eq!(parse_cpuset("3"), Some([3].into_iter().collect()));
        assert_eq!(parse_cpuset("2-1"), None);
        assert_eq!(parse_cpuset(""), None);
        assert_eq!(parse_cpuset("0-4294967295"), None, "bounded");
    }
}
