//! From a container record to the OCI spec its shim runs: Docker's defaults, then the user's
//! config (user, env, caps, namespaces, sysctls, rlimits, shm, security options, binds).

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_api::containers::{HostConfig, MountPoint};
use berth_api::{ApiError, Kind};
use berth_runtime::spec::{DEFAULT_CAPABILITIES, DEFAULT_PATH};
use serde_json::{Value, json};

use crate::record::Record;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, msg)
}

/// Docker's default spec, built once (its seccomp profile is the costly part).
fn default_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| serde_json::to_value(berth_runtime::spec::docker_default(&["sh".to_string()], false)).unwrap_or_default())
}

/// `CAP_X`, from `x`, `X` or `CAP_X`.
fn cap_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") { up } else { format!("CAP_{up}") }
}

/// Every capability this daemon may hand out: those in its own bounding set (a host may withhold
/// some from root; asking for them would make capset fail). The set is read once: a process's
/// bounding set never grows, and berthd never shrinks its own.
fn all_caps() -> BTreeSet<String> {
    static BOUNDING: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let bounding = *BOUNDING.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("CapBnd:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(u64::MAX)
    });
    KNOWN_CAPS.iter().enumerate().filter(|(n, _)| bounding & (1u64 << n) != 0).map(|(_, c)| c.to_string()).collect()
}

/// Capabilities by number, as the kernel numbers them.
const KNOWN_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability set for the container: Docker's 14, then drops, then adds (`ALL` allowed).
pub fn capabilities(privileged: bool, add: &[String], drop: &[String]) -> Result<Vec<String>, ApiError> {
    let all = all_caps();
    if privileged {
        return Ok(all.into_iter().collect());
    }
    let check = |c: &String| -> Result<String, ApiError> {
        let n = cap_name(c);
        if n == "CAP_ALL" || all.contains(&n) || KNOWN_CAPS.contains(&n.as_str()) {
            Ok(n)
        } else {
            Err(bad(format!("unknown capability: {c:?}")))
        }
    };
    let add: Vec<String> = add.iter().map(check).collect::<Result<_, _>>()?;
    let drop: Vec<String> = drop.iter().map(check).collect::<Result<_, _>>()?;
    let mut caps: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    if drop.iter().any(|c| c == "CAP_ALL") {
        caps.clear();
    } else {
        for c in &drop {
            caps.remove(c);
        }
    }
    if add.iter().any(|c| c == "CAP_ALL") {
        caps.extend(all.iter().cloned());
    } else {
        caps.extend(add.into_iter().filter(|c| !drop.contains(c) || drop.iter().any(|d| d == "CAP_ALL")));
    }
    Ok(caps.into_iter().collect())
}

/// Read a file inside the container's root without following symlinks out of it.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let p = berth_runtime::rootfs::secure_join(&berth_runtime::sys::LinuxSys, rootfs, Path::new(path)).ok()?;
    let f = std::fs::File::open(p).ok()?;
    let mut s = String::new();
    std::io::Read::take(f, 4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// `name`, `uid`, `name:group`, `uid:gid` looked up in the image's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, spec: &str, group_add: &[String]) -> Result<User, ApiError> {
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    user_from(&passwd, &group, spec, group_add)
}

/// [`resolve_user`] from the contents of /etc/passwd and /etc/group.
pub fn user_from(passwd: &str, group: &str, spec: &str, group_add: &[String]) -> Result<User, ApiError> {
    let users: Vec<Vec<&str>> = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 7).collect();
    let groups: Vec<Vec<&str>> = group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = users.iter().find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, mut gid, home, name) = match (entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| bad(format!("bad uid in /etc/passwd for {u}")))?,
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
            Some(f[0]),
        ),
        (None, Ok(n)) => (n, 0, "/".to_string(), None),
        (None, Err(_)) => return Err(bad(format!("unable to find user {u}: no matching entries in passwd file"))),
    };
    let find_group = |g: &str| -> Result<u32, ApiError> {
        if let Some(f) = groups.iter().find(|f| f[0] == g) {
            return f[2].parse().map_err(|_| bad(format!("bad gid in /etc/group for {g}")));
        }
        g.parse().map_err(|_| bad(format!("unable to find group {g}: no matching entries in group file")))
    };
    if let Some(g) = g {
        gid = find_group(g)?;
    }
    // The primary group leads the supplementary ones, as Docker has done since CVE-2023-25173.
    let mut additional: Vec<u32> = vec![gid];
    // Membership in /etc/group counts only when the group was not given (`user`, not `user:group`).
    if let (Some(name), None) = (name, g) {
        for f in &groups {
            if f[3].split(',').any(|m| m == name)
                && let Ok(n) = f[2].parse::<u32>()
                && !additional.contains(&n)
            {
                additional.push(n);
            }
        }
    }
    for g in group_add {
        let n = find_group(g)?;
        if !additional.contains(&n) {
            additional.push(n);
        }
    }
    Ok(User { uid, gid, additional_gids: additional, home })
}

/// Docker's environment: PATH, HOSTNAME, TERM (with a TTY), then the config's (replacing same names).
pub fn environment(rec: &Record, hostname: &str, home: &str) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")];
    if rec.tty() {
        env.push("TERM=xterm".into());
    }
    let key = |e: &str| e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.to_string());
    for e in rec.config.env.clone().unwrap_or_default() {
        let k = key(&e);
        match env.iter_mut().find(|x| key(x) == k) {
            Some(slot) => *slot = e,
            None => env.push(e),
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

/// Where another container's namespace is, for `container:X` modes.
pub type NsLookup<'a> = &'a dyn Fn(&str) -> Result<i32, ApiError>;

fn namespace_mode(linux: &mut Value, typ: &str, mode: &str, ns_of: NsLookup, proc_name: &str) -> Result<(), ApiError> {
    let Some(list) = linux["namespaces"].as_array_mut() else { return Ok(()) };
    if mode == "host" {
        list.retain(|n| n["type"] != typ);
    } else if let Some(other) = mode.strip_prefix("container:") {
        let pid = ns_of(other)?;
        for n in list.iter_mut() {
            if n["type"] == typ {
                n["path"] = json!(format!("/proc/{pid}/ns/{proc_name}"));
            }
        }
    }
    Ok(())
}

pub struct Built {
    pub spec: Value,
    pub hostname: String,
}

/// The OCI spec for `rec`, whose root filesystem is mounted at `rootfs`; the init files are in `dir`.
pub fn build(rec: &Record, rootfs: &Path, dir: &Path, ns_of: NsLookup, cgroup_parent: &str) -> Result<Built, ApiError> {
    let hc = &rec.host_config;
    let cfg = &rec.config;
    let mut spec = default_spec().clone();
    let privileged = hc.privileged.unwrap_or(false);
    let network = hc.network_mode.clone().unwrap_or_default();
    let host_uts = hc.uts_mode.as_deref() == Some("host") || network == "host";
    let hostname = if host_uts {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        cfg.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| rec.short_id().to_string())
    };

    let mut args = vec![rec.path.clone()];
    args.extend(rec.args.iter().cloned());
    let user = resolve_user(rootfs, cfg.user.as_deref().unwrap_or(""), hc.group_add.as_deref().unwrap_or(&[]))?;
    let cwd = cfg.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(bad(format!("the working directory '{cwd}' is invalid, it needs to be an absolute path")));
    }
    ensure_dir(rootfs, &cwd, user.uid, user.gid)?;
    let caps = capabilities(privileged, hc.cap_add.as_deref().unwrap_or(&[]), hc.cap_drop.as_deref().unwrap_or(&[]))?;
    let mut no_new_privs = false;
    let mut seccomp = !privileged;
    check(hc)?;
    for opt in hc.security_opt.iter().flatten() {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match (k, v) {
            ("no-new-privileges", "" | "true") => no_new_privs = true,
            ("no-new-privileges", "false") => no_new_privs = false,
            ("seccomp", "unconfined") => seccomp = false,
            _ => {}
        }
    }
    let process = &mut spec["process"];
    process["args"] = json!(args);
    process["terminal"] = json!(rec.tty());
    process["env"] = json!(environment(rec, &hostname, &user.home));
    process["cwd"] = json!(cwd);
    process["user"] = json!({"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids});
    process["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    process["noNewPrivileges"] = json!(no_new_privs);
    if let Some(ulimits) = &hc.ulimits {
        process["rlimits"] = json!(ulimits.iter().map(rlimit).collect::<Result<Vec<_>, _>>()?);
    }
    // Relative to the bundle, whose `rootfs` is where the caller mounted the root.
    spec["root"] = json!({"path": "rootfs", "readonly": hc.readonly_rootfs.unwrap_or(false)});
    if !host_uts {
        spec["hostname"] = json!(hostname);
        if let Some(d) = cfg.domainname.as_ref().filter(|d| !d.is_empty()) {
            spec["domainname"] = json!(d);
        }
    }
    let linux = &mut spec["linux"];
    linux["cgroupsPath"] = json!(cgroup_path(cgroup_parent, hc, &rec.id));
    if !seccomp {
        if let Some(l) = linux.as_object_mut() {
            l.remove("seccomp");
        }
    } else if caps.len() != DEFAULT_CAPABILITIES.len() || !DEFAULT_CAPABILITIES.iter().all(|c| caps.contains(&c.to_string())) {
        let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
        linux["seccomp"] = serde_json::to_value(berth_runtime::spec::docker_seccomp(&refs)).unwrap_or_default();
    }
    if privileged {
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
        linux["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        linux["devices"] = json!(host_devices());
    }
    namespace_mode(linux, "network", &network, ns_of, "net")?;
    namespace_mode(linux, "pid", hc.pid_mode.as_deref().unwrap_or(""), ns_of, "pid")?;
    namespace_mode(linux, "ipc", hc.ipc_mode.as_deref().unwrap_or(""), ns_of, "ipc")?;
    namespace_mode(linux, "uts", hc.uts_mode.as_deref().unwrap_or(""), ns_of, "uts")?;
    if network == "host" {
        namespace_mode(linux, "uts", "host", ns_of, "uts")?;
    }
    if let Some(s) = hc.sysctls.as_ref().filter(|s| !s.is_empty()) {
        linux["sysctl"] = json!(s);
    }

    let mounts = spec["mounts"].as_array_mut().ok_or_else(|| ApiError::new(Kind::Internal, "default spec has no mounts"))?;
    if let Some(size) = hc.shm_size.filter(|s| *s > 0) {
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev/shm" {
                m["options"] = json!(["nosuid", "noexec", "nodev", "mode=1777", format!("size={size}")]);
            }
        }
    }
    if hc.ipc_mode.as_deref() == Some("host") {
        mounts.retain(|m| m["destination"] != "/dev/shm" && m["destination"] != "/dev/mqueue");
        mounts.push(
            json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "nosuid", "noexec", "nodev"]}),
        );
    }
    if privileged {
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                let opts: Vec<Value> = m["options"].as_array().cloned().unwrap_or_default().into_iter().filter(|o| o != "ro").collect();
                m["options"] = json!(opts);
            }
        }
    }
    for f in ["hostname", "hosts", "resolv.conf"] {
        mounts.push(json!({"destination": format!("/etc/{f}"), "type": "bind", "source": dir.join(f), "options": ["rbind", "rprivate"]}));
    }
    for b in hc.binds.iter().flatten().filter(|b| !crate::volumes::mounts::is_volume_bind(b)) {
        let bind = Bind::parse(b)?;
        // Docker creates a missing host directory for -v, when the container starts.
        if !Path::new(&bind.source).exists() {
            std::fs::create_dir_all(&bind.source).map_err(|e| bad(format!("creating bind source {}: {e}", bind.source)))?;
        }
        mounts.push(bind.spec());
    }
    crate::hostconfig::apply(&mut spec, hc)?;
    Ok(Built { spec, hostname })
}

const RLIMITS: [&str; 16] = [
    "AS",
    "CORE",
    "CPU",
    "DATA",
    "FSIZE",
    "LOCKS",
    "MEMLOCK",
    "MSGQUEUE",
    "NICE",
    "NOFILE",
    "NPROC",
    "RSS",
    "RTPRIO",
    "RTTIME",
    "SIGPENDING",
    "STACK",
];

/// The container's cgroup: under its own `--cgroup-parent`, else under the daemon's
/// (`default_parent`, `/berth` unless berthd was told otherwise).
pub fn cgroup_path(default_parent: &str, hc: &berth_api::containers::HostConfig, id: &str) -> String {
    let parent = hc.cgroup_parent.as_deref().filter(|p| !p.is_empty()).unwrap_or(default_parent);
    format!("/{}/{id}", parent.trim_matches('/'))
}

/// `--ulimit nofile=1024:2048` as an OCI rlimit.
fn rlimit(u: &berth_api::containers::Ulimit) -> Result<Value, ApiError> {
    let name = u.name.to_ascii_uppercase();
    if !RLIMITS.contains(&name.as_str()) {
        return Err(bad(format!("invalid ulimit type: {}", u.name)));
    }
    if u.soft > u.hard {
        return Err(bad(format!("ulimit soft limit must be less than or equal to hard limit: {} > {}", u.soft, u.hard)));
    }
    Ok(json!({"type": format!("RLIMIT_{name}"), "soft": u.soft, "hard": u.hard}))
}

/// A `-v /host/path:/container/path[:ro|rw]` bind (named volumes come with the volumes issue).
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// `rprivate` unless the mode names another.
    pub propagation: String,
    /// The mode as given (`ro,rshared`, or empty).
    pub mode: String,
}

impl Bind {
    /// Docker's parse of a bind, with its messages.
    pub fn parse(b: &str) -> Result<Bind, ApiError> {
        let invalid = || bad(format!("invalid volume specification: '{b}'"));
        let parts: Vec<&str> = b.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            ["", ..] => return Err(invalid()),
            [_] => return Err(ApiError::not_implemented(&format!("anonymous volumes ({b})"))),
            [_, d] if is_mode(d) => return Err(invalid()),
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            _ => return Err(invalid()),
        };
        if !is_mode(mode) {
            return Err(bad(format!("invalid mode: {mode}")));
        }
        if !src.starts_with('/') {
            return Err(ApiError::not_implemented(&format!("named volumes ({src})")));
        }
        let config = |why: String| bad(format!("invalid volume specification: '{b}': invalid mount config for type \"bind\": {why}"));
        if dst.is_empty() {
            return Err(config("field Target must not be empty".into()));
        }
        if dst.trim_end_matches('/').is_empty() {
            return Err(config("invalid specification: destination can't be '/'".into()));
        }
        if !dst.starts_with('/') {
            return Err(config(format!("invalid mount path: '{dst}' mount path must be absolute")));
        }
        let words = || mode.split(',');
        Ok(Bind {
            source: src.to_string(),
            target: dst.to_string(),
            read_only: words().any(|m| m == "ro"),
            propagation: words().find(|m| PROPAGATIONS.contains(m)).unwrap_or("rprivate").to_string(),
            mode: mode.to_string(),
        })
    }

    pub fn spec(&self) -> Value {
        let mut options = vec!["rbind", self.propagation.as_str()];
        if self.read_only {
            options.push("ro");
        }
        json!({"destination": self.target, "type": "bind", "source": self.source, "options": options})
    }
}

/// Docker's `Mounts` of a container (inspect and list): its binds and its `--mount`s, by
/// destination. `--tmpfs` mounts are not among them, as in Docker.
pub fn mount_points(hc: &HostConfig) -> Vec<MountPoint> {
    let mut out: Vec<MountPoint> = Vec::new();
    for b in hc.binds.iter().flatten().filter(|b| !crate::volumes::mounts::is_volume_bind(b)).filter_map(|b| Bind::parse(b).ok()) {
        out.push(MountPoint {
            typ: "bind".into(),
            source: b.source,
            destination: b.target,
            mode: b.mode,
            rw: !b.read_only,
            propagation: b.propagation,
            ..Default::default()
        });
    }
    for m in hc.mounts.iter().flatten().filter(|m| m.typ.as_deref() != Some("volume")) {
        let typ = m.typ.as_deref().unwrap_or("");
        let propagation = match typ {
            "bind" => m.bind_options.as_ref().and_then(|o| o.propagation.clone()).filter(|p| !p.is_empty()).unwrap_or("rprivate".into()),
            _ => String::new(),
        };
        out.push(MountPoint {
            typ: typ.to_string(),
            source: m.source.clone().unwrap_or_default(),
            destination: m.target.clone().unwrap_or_default(),
            rw: m.read_only != Some(true),
            propagation,
            ..Default::default()
        });
    }
    out.sort_by(|a, b| a.destination.cmp(&b.destination));
    out
}

/// A bind's mode: comma-separated `ro`/`rw`, an SELinux label (accepted, no SELinux here) and a
/// propagation, each at most once (`""` is the default mode).
fn is_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let words: Vec<&str> = mode.split(',').collect();
    let count = |set: &[&str]| words.iter().filter(|w| set.contains(w)).count();
    let rw = count(&["ro", "rw"]);
    let label = count(&["z", "Z"]);
    let propagation = count(&PROPAGATIONS);
    rw <= 1 && label <= 1 && propagation <= 1 && rw + label + propagation == words.len()
}

const PROPAGATIONS: [&str; 6] = ["private", "rprivate", "shared", "rshared", "slave", "rslave"];

/// What [`build`] would refuse in the HostConfig, checked at create so a bad request makes
/// nothing (Docker's create-time checks): binds, ulimits, security options, namespace modes.
pub fn check(hc: &berth_api::containers::HostConfig) -> Result<(), ApiError> {
    for b in hc.binds.iter().flatten().filter(|b| !crate::volumes::mounts::is_volume_bind(b)) {
        Bind::parse(b)?;
    }
    for u in hc.ulimits.iter().flatten() {
        rlimit(u)?;
    }
    for opt in hc.security_opt.iter().flatten() {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match (k, v) {
            ("no-new-privileges", "" | "true" | "false")
            | ("seccomp", "unconfined" | "builtin" | "default")
            | ("label" | "apparmor", _) => {}
            ("seccomp", _) => return Err(ApiError::not_implemented("custom seccomp profiles")),
            _ => return Err(bad(format!("Invalid --security-opt: {opt:?}"))),
        }
    }
    match hc.network_mode.as_deref().unwrap_or("") {
        "" | "default" | "bridge" | "none" | "host" => {}
        n if n.strip_prefix("container:").is_some_and(|c| !c.is_empty()) => {}
        n if n.starts_with("container:") => return Err(bad(format!("invalid network mode: {n}"))),
        // A user network: the create looks it up.
        _ => {}
    }
    for (what, mode, modes) in [
        ("IPC", hc.ipc_mode.as_deref(), &["", "none", "private", "shareable", "host"][..]),
        ("PID", hc.pid_mode.as_deref(), &["", "host"][..]),
        ("UTS", hc.uts_mode.as_deref(), &["", "host"][..]),
    ] {
        let m = mode.unwrap_or("");
        if !modes.contains(&m) && m.strip_prefix("container:").is_none_or(str::is_empty) {
            return Err(bad(format!("invalid {what} mode: {m}")));
        }
    }
    if hc.shm_size.is_some_and(|s| s < 0) {
        return Err(bad("SHM size can not be less than 0"));
    }
    Ok(())
}

/// Every device node directly in the host's /dev, for `--privileged`.
fn host_devices() -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/dev") else { return out };
    for e in entries.flatten() {
        // Not followed: /dev/stdin and its kin lead to whatever berthd's descriptors are.
        let Some(node) = std::fs::symlink_metadata(e.path()).ok().as_ref().and_then(crate::hostconfig::Node::of) else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "console" | "ptmx" | "tty") {
            continue;
        }
        out.push(node.spec(&Path::new("/dev").join(name)));
    }
    out
}

/// Make the working directory in the container's root if it is missing, as Docker does.
fn ensure_dir(rootfs: &Path, dir: &str, uid: u32, gid: u32) -> Result<(), ApiError> {
    let target = berth_runtime::rootfs::secure_join(&berth_runtime::sys::LinuxSys, rootfs, Path::new(dir))
        .map_err(|e| bad(format!("working directory {dir}: {e}")))?;
    if target.is_dir() {
        return Ok(());
    }
    if target.exists() {
        return Err(bad(format!("the working directory '{dir}' is not a directory")));
    }
    let mut created: Vec<PathBuf> = Vec::new();
    let mut p = target.as_path();
    while !p.exists() && p.starts_with(rootfs) {
        created.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(&target).map_err(|e| bad(format!("creating working directory {dir}: {e}")))?;
    for c in created {
        let _ = std::os::unix::fs::chown(&c, Some(uid), Some(gid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_list_binds_and_mounts_as_docker_inspect_does() {
        let hc: HostConfig = serde_json::from_value(json!({
            "Binds": ["/h:/b", "/h2:/a:ro,rshared"],
            "Mounts": [{"Type": "bind", "Source": "/m", "Target": "/m", "ReadOnly": true},
                       {"Type": "tmpfs", "Target": "/t"}],
            "Tmpfs": {"/not-listed": ""}
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(mount_points(&hc)).unwrap(),
            json!([
                {"Type": "bind", "Source": "/h2", "Destination": "/a", "Mode": "ro,rshared", "RW": false, "Propagation": "rshared"},
                {"Type": "bind", "Source": "/h", "Destination": "/b", "Mode": "", "RW": true, "Propagation": "rprivate"},
                {"Type": "bind", "Source": "/m", "Destination": "/m", "Mode": "", "RW": false, "Propagation": "rprivate"},
                {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": true, "Propagation": ""},
            ])
        );
    }

    #[test]
    fn caps_add_and_drop_like_docker() {
        let d = capabilities(false, &[], &[]).unwrap();
        assert_eq!(d.len(), 14);
        let c = capabilities(false, &["net_admin".into()], &["CHOWN".into(), "cap_kill".into()]).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()) && !c.contains(&"CAP_KILL".to_string()));
        let only = capabilities(false, &["CAP_KILL".into()], &["ALL".into()]).unwrap();
        assert_eq!(only, ["CAP_KILL"]);
        assert!(capabilities(false, &["NOPE".into()], &[]).is_err());
        assert!(capabilities(true, &[], &[]).unwrap().contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn cgroups_go_under_the_containers_parent_or_the_daemons() {
        let hc = |v: Value| -> berth_api::containers::HostConfig { serde_json::from_value(v).unwrap() };
        assert_eq!(cgroup_path("/berth", &hc(json!({})), "abc"), "/berth/abc");
        assert_eq!(cgroup_path("/berth", &hc(json!({"CgroupParent": ""})), "abc"), "/berth/abc");
        assert_eq!(cgroup_path("berth-test/", &hc(json!({})), "abc"), "/berth-test/abc");
        assert_eq!(cgroup_path("/berth", &hc(json!({"CgroupParent": "/my/parent/"})), "abc"), "/my/parent/abc");
    }

    #[test]
    fn binds_parse_as_docker_parses_them() {
        let b = Bind::parse("/src:/dst:ro,rslave").unwrap();
        assert_eq!((b.source.as_str(), b.target.as_str(), b.read_only, b.propagation.as_str()), ("/src", "/dst", true, "rslave"));
        assert_eq!(b.mode, "ro,rslave");
        assert_eq!(b.spec()["options"], json!(["rbind", "rslave", "ro"]));
        assert_eq!(Bind::parse("/src:/dst").unwrap().spec()["options"], json!(["rbind", "rprivate"]));
        let refused = |b: &str| Bind::parse(b).err().map(|e| e.message).unwrap_or_default();
        // Docker's words, as dockerd 20.10 answers them.
        assert_eq!(
            refused("/tmp:/"),
            "invalid volume specification: '/tmp:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        );
        assert_eq!(
            refused("/tmp:relative"),
            "invalid volume specification: '/tmp:relative': invalid mount config for type \"bind\": invalid mount path: 'relative' mount path must be absolute"
        );
        assert_eq!(refused("x:y:bogus"), "invalid mode: bogus");
        assert_eq!(refused("/a:/b:ro,rw"), "invalid mode: ro,rw");
        assert_eq!(refused(":/b"), "invalid volume specification: ':/b'");
        assert_eq!(refused("/a:/b:ro:x"), "invalid volume specification: '/a:/b:ro:x'");
        assert_eq!(refused("/a:ro"), "invalid volume specification: '/a:ro'");
    }

    #[test]
    fn create_checks_what_the_spec_builder_refuses() {
        let hc = |v: Value| -> berth_api::containers::HostConfig { serde_json::from_value(v).unwrap() };
        for (v, message) in [
            (json!({"Binds": ["/tmp:/"]}), "destination can't be '/'"),
            (json!({"Ulimits": [{"Name": "nofile", "Soft": 20, "Hard": 10}]}), "soft limit must be less than or equal"),
            (json!({"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]}), "invalid ulimit type: bogus"),
            (json!({"ShmSize": -1}), "SHM size can not be less than 0"),
            (json!({"SecurityOpt": ["bogus"]}), "Invalid --security-opt"),
            (json!({"NetworkMode": "container:"}), "invalid network mode"),
            (json!({"IpcMode": "bogus"}), "invalid IPC mode: bogus"),
            (json!({"PidMode": "container:"}), "invalid PID mode"),
        ] {
            let e = check(&hc(v.clone())).err().unwrap_or_else(|| panic!("{v} accepted"));
            assert!(e.message.contains(message), "{v}: {}", e.message);
        }
        assert!(check(&hc(json!({"NetworkMode": "mynet"}))).is_ok());
        let ok = json!({"Binds": ["/tmp:/data:ro"], "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}], "ShmSize": 0,
            "NetworkMode": "container:abc", "IpcMode": "shareable", "PidMode": "host", "SecurityOpt": ["no-new-privileges"]});
        assert!(check(&hc(ok)).is_ok());
    }

    #[test]
    fn users_resolve_in_the_images_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nweb:x:34:\nextra:x:50:www,other\n").unwrap();
        let u = resolve_user(dir.path(), "www", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone(), u.home.as_str()), (33, 34, vec![34, 50], "/var/www"));
        let u = resolve_user(dir.path(), "1000:web", &["7".into()]).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 34, vec![34, 7]));
        // An explicit group leaves /etc/group's memberships out, as Docker does.
        let u = resolve_user(dir.path(), "www:extra", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (33, 50, vec![50]));
        assert_eq!(resolve_user(dir.path(), "", &[]).unwrap().additional_gids, [0]);
        assert_eq!(resolve_user(dir.path(), "", &[]).unwrap().home, "/root");
        let e = resolve_user(dir.path(), "nobody", &[]).err().unwrap();
        assert!(e.message.contains("no matching entries in passwd file"), "{}", e.message);
        assert!(resolve_user(dir.path(), "www:nogroup", &[]).is_err());
    }
}
