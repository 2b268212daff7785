//! The read views: inspect and list built from records (never waiting on a lifecycle operation),
//! sizes, filters, `top`.

use super::*;
use berth_api::containers::{ContainerState, SummaryHostConfig, SummaryNetworkSettings};
use berth_models::images::GraphDriver;
use berth_models::networks::NetworkSettings;

/// Docker's `HumanDuration` of a span in (possibly fractional, possibly negative) seconds.
pub(super) fn human_duration(secs: f64) -> String {
    berth_format::human_duration(secs.max(0.0) as u64)
}

pub(super) fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub(super) fn status_text(s: &RunState) -> String {
    match s.status {
        Status::Running => {
            let up = human_duration(now_secs() - record::unix_seconds(&s.started_at));
            match s.health.as_ref().map(|h| h.status.as_str()) {
                Some(health::STARTING) => format!("Up {up} (health: starting)"),
                Some(h) if !h.is_empty() => format!("Up {up} ({h})"),
                _ => format!("Up {up}"),
            }
        }
        Status::Paused => format!("Up {} (Paused)", human_duration(now_secs() - record::unix_seconds(&s.started_at))),
        Status::Restarting => {
            format!("Restarting ({}) {} ago", s.exit_code, human_duration(now_secs() - record::unix_seconds(&s.finished_at)))
        }
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        Status::Created => "Created".into(),
        Status::Exited => {
            if s.finished_at == ZERO_TIME {
                "Created".into()
            } else {
                format!("Exited ({}) {} ago", s.exit_code, human_duration(now_secs() - record::unix_seconds(&s.finished_at)))
            }
        }
    }
}

/// `ps`'s COMMAND as Docker builds it: arguments holding a space in single quotes.
pub(super) fn command_line(rec: &Record) -> String {
    let mut out = rec.path.clone();
    for a in &rec.args {
        out.push(' ');
        if a.contains(' ') {
            out.push_str(&format!("'{a}'"));
        } else {
            out.push_str(a);
        }
    }
    out
}

/// The keys Docker's container config always carries, in container and image inspect alike,
/// each with its value when unset (a null stays null).
pub(crate) fn docker_config_keys(c: &mut serde_json::Map<String, Value>) {
    for (k, default) in [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", json!("")),
        ("Volumes", Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ] {
        if c.get(k).is_none_or(Value::is_null) {
            c.insert(k.into(), default);
        }
    }
}

/// Docker's `label=` / `label!=` filters on a set of labels: `key`, or `key=value`.
pub(crate) fn labels_match(labels: Option<&BTreeMap<String, String>>, f: &berth_api::params::Filters) -> bool {
    let has = |l: &String| match l.split_once('=') {
        Some((k, v)) => labels.and_then(|m| m.get(k)).is_some_and(|x| x == v),
        None => labels.is_some_and(|m| m.contains_key(l.as_str())),
    };
    f.get("label").iter().all(has) && !f.get("label!").iter().any(has)
}

/// The `until=` filters of a prune, as Unix seconds.
pub(crate) fn until_filters(f: &berth_api::params::Filters) -> Result<Vec<f64>, ApiError> {
    let now = now_secs();
    f.get("until")
        .iter()
        .map(|u| berth_format::parse_timestamp(u, now).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string())))
        .collect()
}

/// The container list's filters (Docker's names). `names` are the compiled `name=` patterns.
pub(super) fn matches_filters(rec: &Record, f: &berth_api::params::Filters, names: &[Option<regex::Regex>]) -> bool {
    let any = |k: &str, pred: &dyn Fn(&str) -> bool| {
        let v = f.get(k);
        v.is_empty() || v.iter().any(|x| pred(x))
    };
    let hc = &rec.host_config;
    // The networks a container is on, by name or ID (or its mode: `host`, `none`).
    let on_network = |x: &str| {
        rec.networks.iter().any(|(name, ep)| name == x || (!x.is_empty() && ep.network_id.starts_with(x)))
            || hc.network_mode.as_deref() == Some(x)
    };
    let published = |x: &str| {
        let (port, proto) = x.split_once('/').unwrap_or((x, "tcp"));
        rec.ports.iter().any(|(k, b)| {
            let (cport, cproto) = k.split_once('/').unwrap_or((k, "tcp"));
            b.as_ref().is_some_and(|b| !b.is_empty())
                && cproto == proto
                && (cport == port || b.iter().flatten().any(|pb| pb.host_port == port))
        })
    };
    // Sources and targets of its binds, mounts, volumes and tmpfs (looked through only for `volume=`).
    let mounted = |x: &str| {
        rec.volumes.iter().any(|v| v.name == x || v.destination == x)
            || hc.binds.iter().flatten().flat_map(|b| b.split(':').take(2)).any(|p| p == x)
            || hc.mounts.iter().flatten().any(|m| m.source.as_deref() == Some(x) || m.target.as_deref() == Some(x))
            || hc.tmpfs.iter().flatten().any(|(t, _)| t == x)
    };
    let exposed = rec.config.exposed_ports.as_ref();
    any("id", &|x| rec.id.starts_with(x))
        // Docker's name filter is a regular expression, matched with or without the slash.
        && (names.is_empty() || names.iter().flatten().any(|r| r.is_match(&rec.name) || r.is_match(&format!("/{}", rec.name))))
        && any("status", &|x| rec.state.status.as_str() == x)
        && any("network", &on_network)
        && any("volume", &mounted)
        && any("expose", &|x| exposed.is_some_and(|e| e.contains_key(x) || e.contains_key(&format!("{x}/tcp"))))
        // A container that has had a healthcheck keeps its last status, stopped or not (as Docker).
        && any("health", &|x| x == rec.state.health.as_ref().map_or("none", |h| h.status.as_str()))
        && any("publish", &published)
        && any("is-task", &|x| x == "false")
        && any("isolation", &|x| x == "default")
        && any("exited", &|x| rec.state.status == Status::Exited && x.parse::<i32>().is_ok_and(|c| c == rec.state.exit_code))
        && any("ancestor", &|x| {
            rec.image_name == x
                || rec.image == x
                || rec.image.strip_prefix("sha256:").is_some_and(|h| h.starts_with(x.strip_prefix("sha256:").unwrap_or(x)))
                || berth_store::reference::Reference::parse(x).ok().map(|r| r.to_string())
                    == berth_store::reference::Reference::parse(&rec.image_name).ok().map(|r| r.to_string())
        })
        && labels_match(rec.config.labels.as_ref(), f)
}

impl Engine {
    /// Docker's `Mounts`: binds and `--mount`s, and the volumes, by destination.
    pub(crate) fn mount_points(&self, rec: &Record) -> Vec<berth_models::containers::MountPoint> {
        let mut out = spec::mount_points(&rec.host_config);
        for v in &rec.volumes {
            out.push(berth_models::containers::MountPoint {
                typ: "volume".into(),
                name: Some(v.name.clone()),
                source: self.vols.path(&v.name).to_string_lossy().into_owned(),
                destination: v.destination.clone(),
                driver: Some("local".into()),
                mode: if v.mode.is_empty() { "z".into() } else { v.mode.clone() },
                rw: v.rw,
                propagation: String::new(),
            });
        }
        out
    }
}

/// `NetworkSettings` in inspect: each network's endpoint, the default bridge's also at the top
/// level (as dockerd still writes it), the published ports, and the namespace while it runs.
fn network_settings(rec: &Record) -> NetworkSettings {
    let mut ns = NetworkSettings {
        sandbox_key: if rec.state.pid > 0 && rec.state.status.is_live() {
            format!("/proc/{}/ns/net", rec.state.pid)
        } else {
            String::new()
        },
        sandbox_id: if rec.state.status.is_live() { rec.id.clone() } else { String::new() },
        networks: rec.networks.clone(),
        ..Default::default()
    };
    // Exposed ports are listed (null when not published) while it runs, as Docker's.
    if rec.state.status.is_live() {
        for k in rec.config.exposed_ports.iter().flat_map(|e| e.keys()) {
            let key = if k.contains('/') { k.clone() } else { format!("{k}/tcp") };
            ns.ports.insert(key, None);
        }
        ns.ports.extend(rec.ports.clone());
    }
    if let Some(ep) = rec.networks.get(crate::networks::DEFAULT) {
        ns.endpoint_id = ep.endpoint_id.clone();
        ns.gateway = ep.gateway.clone();
        ns.ip_address = ep.ip_address.clone();
        ns.ip_prefix_len = ep.ip_prefix_len;
        ns.mac_address = ep.mac_address.clone().unwrap_or_default();
    }
    ns
}

/// The `Ports` of a container in the list: each published binding, and exposed ports unpublished.
fn summary_ports(rec: &Record) -> Vec<berth_models::containers::Port> {
    let mut out = Vec::new();
    for (key, bindings) in &rec.ports {
        let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let Ok(private_port) = port.parse::<u16>() else { continue };
        match bindings.as_deref() {
            Some(list) if !list.is_empty() => {
                for b in list {
                    out.push(berth_models::containers::Port {
                        ip: Some(b.host_ip.clone()),
                        private_port,
                        public_port: b.host_port.parse().ok(),
                        typ: proto.to_string(),
                    });
                }
            }
            _ => out.push(berth_models::containers::Port { ip: None, private_port, public_port: None, typ: proto.to_string() }),
        }
    }
    out
}

/// `docker top`: the host's `ps` output, keeping the container's processes.
pub(super) fn top(pids: &[i32], args: &str) -> Result<TopResponse, ApiError> {
    let out = std::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| ApiError::new(Kind::Internal, format!("running ps: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::new(Kind::Internal, format!("ps: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| ApiError::new(Kind::InvalidArgument, format!("Couldn't find PID field in ps output for {args:?}")))?;
    let mut procs = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        if fields[pid_col].parse::<i32>().is_ok_and(|p| pids.contains(&p)) {
            // The last column (the command) keeps its spaces.
            let mut row: Vec<String> = fields[..titles.len() - 1].iter().map(|s| s.to_string()).collect();
            row.push(fields[titles.len() - 1..].join(" "));
            procs.push(row);
        }
    }
    Ok(TopResponse { titles: titles.iter().map(|t| t.to_string()).collect(), processes: procs })
}

impl Engine {
    pub(crate) fn inspect_ctr(&self, rec: &Record, size: bool) -> ContainerInspect {
        let s = &rec.state;
        let mut config = serde_json::to_value(&rec.config).unwrap_or_default();
        if let Some(c) = config.as_object_mut() {
            let hostname = rec.config.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| rec.short_id().to_string());
            c.insert("Hostname".into(), json!(hostname));
            docker_config_keys(c);
            if c.get("Labels").is_none_or(Value::is_null) {
                c.insert("Labels".into(), json!({}));
            }
            c.insert("Image".into(), json!(rec.image_name));
            if c.get("Volumes").and_then(Value::as_object).is_some_and(|v| v.is_empty()) {
                c.insert("Volumes".into(), Value::Null);
            }
            // Fields Docker's container config omits when empty.
            for k in ["ExposedPorts", "Healthcheck", "ArgsEscaped", "NetworkDisabled", "MacAddress", "StopSignal", "StopTimeout", "Shell"] {
                let unset = c.get(k).is_none_or(|v| {
                    v.is_null() || v.as_str() == Some("") || v.as_bool() == Some(false) || v.as_object().is_some_and(|o| o.is_empty())
                });
                if unset {
                    c.remove(k);
                }
            }
        }
        let mut host_config = serde_json::to_value(&rec.host_config).unwrap_or_default();
        if let Some(hc) = host_config.as_object_mut() {
            for (k, d) in [
                ("NetworkMode", json!("default")),
                ("AutoRemove", json!(false)),
                ("Privileged", json!(false)),
                ("ReadonlyRootfs", json!(false)),
                ("LogConfig", json!({"Type": "json-file", "Config": {}})),
                ("RestartPolicy", json!({"Name": "no", "MaximumRetryCount": 0})),
            ] {
                if hc.get(k).is_none_or(Value::is_null) {
                    hc.insert(k.into(), d);
                }
            }
            let cgroupns =
                if berth_runtime::cgroups::detect_mode() == Some(berth_runtime::cgroups::Mode::Unified) { "private" } else { "host" };
            crate::hostconfig::inspect_defaults(hc, rec.host_config.privileged == Some(true), cgroupns);
        }
        let (size_rw, size_root_fs) = if size {
            let (rw, rootfs) = self.sizes(rec);
            (Some(rw), Some(rootfs))
        } else {
            (None, None)
        };
        let dir = self.containers_dir.join(&rec.id);
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        ContainerInspect {
            id: rec.id.clone(),
            created: rec.created.clone(),
            path: rec.path.clone(),
            args: rec.args.clone(),
            state: ContainerState {
                status: s.status.as_str().to_string(),
                running: s.status.is_live(),
                paused: s.status == Status::Paused,
                restarting: s.status == Status::Restarting,
                oom_killed: s.oom_killed,
                dead: s.status == Status::Dead,
                pid: s.pid.into(),
                exit_code: s.exit_code.into(),
                error: s.error.clone(),
                started_at: s.started_at.clone(),
                finished_at: s.finished_at.clone(),
                health: s.health.clone(),
            },
            image: rec.image.clone(),
            resolv_conf_path: path("resolv.conf"),
            hostname_path: path("hostname"),
            hosts_path: path("hosts"),
            // dockerd names the file of the json-file driver only.
            log_path: if logs_off(rec) || crate::logs::format_of(&rec.host_config) == berth_shim::logfile::Format::Local {
                String::new()
            } else {
                rec.log_path.to_string_lossy().into_owned()
            },
            name: format!("/{}", rec.name),
            restart_count: rec.restart_count.into(),
            driver: self.driver_name().to_string(),
            platform: "linux".into(),
            mount_label: String::new(),
            process_label: String::new(),
            app_armor_profile: String::new(),
            exec_ids: Some(self.exec_ids_of(&rec.id)).filter(|e| !e.is_empty()),
            host_config,
            graph_driver: GraphDriver { name: self.driver_name().to_string(), data: None },
            size_rw,
            size_root_fs,
            mounts: self.mount_points(rec),
            config,
            network_settings: network_settings(rec),
        }
    }

    pub(crate) fn driver_name(&self) -> &'static str {
        match self.driver {
            berth_store::images::Driver::Overlay => "overlay2",
            berth_store::images::Driver::Vfs => "vfs",
        }
    }

    /// The writable layer's size and the whole root's (image layers included).
    pub(crate) fn sizes(&self, rec: &Record) -> (u64, u64) {
        let rw = self.images.snapshots.usage(&rec.id).map(|u| u.size).unwrap_or(0);
        let image = rec
            .image
            .parse::<berth_store::Digest>()
            .ok()
            .and_then(|d| self.images.get(&d).ok())
            .map(|i| self.images.layer_sizes(&i).iter().sum::<u64>())
            .unwrap_or(0);
        (rw, rw + image)
    }

    pub(crate) fn summary(&self, rec: &Record, size: bool) -> ContainerSummary {
        let (size_rw, size_root_fs) = if size {
            let (rw, rootfs) = self.sizes(rec);
            (Some(rw), Some(rootfs))
        } else {
            (None, None)
        };
        ContainerSummary {
            id: rec.id.clone(),
            names: vec![format!("/{}", rec.name)],
            image: rec.image_name.clone(),
            image_id: rec.image.clone(),
            command: command_line(rec),
            created: record::unix_seconds(&rec.created) as i64,
            ports: summary_ports(rec),
            size_rw,
            size_root_fs,
            labels: rec.config.labels.clone().unwrap_or_default(),
            state: rec.state.status.as_str().to_string(),
            status: status_text(&rec.state),
            host_config: SummaryHostConfig {
                network_mode: rec.host_config.network_mode.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()),
            },
            network_settings: SummaryNetworkSettings { networks: rec.networks.clone() },
            mounts: self.mount_points(rec),
        }
    }

    pub(super) async fn list_ctrs(&self, opts: ListOptions) -> Result<Vec<ContainerSummary>, ApiError> {
        opts.filters.only(&[
            "id",
            "name",
            "label",
            "status",
            "ancestor",
            "exited",
            "before",
            "since",
            "network",
            "volume",
            "expose",
            "publish",
            "health",
            "is-task",
            "isolation",
        ])?;
        // A pattern that does not compile matches nothing, as in Docker.
        let names: Vec<Option<regex::Regex>> = opts.filters.get("name").iter().map(|n| regex::Regex::new(n).ok()).collect();
        for h in opts.filters.get("health") {
            if ![health::STARTING, health::HEALTHY, health::UNHEALTHY, "none"].contains(&h.as_str()) {
                return Err(ApiError::new(Kind::InvalidArgument, format!("Unrecognised filter value for health: {h}")));
            }
        }
        for s in opts.filters.get("status") {
            if !["created", "restarting", "running", "removing", "paused", "exited", "dead"].contains(&s.as_str()) {
                return Err(ApiError::new(Kind::InvalidArgument, format!("invalid filter 'status={s}'")));
            }
        }
        let mut recs: Vec<Arc<Record>> = self.all().iter().map(|c| c.view()).collect();
        recs.sort_by(|a, b| b.created.cmp(&a.created));
        let all = opts.all || opts.limit.is_some() || !opts.filters.get("status").is_empty() || !opts.filters.get("exited").is_empty();
        // before=X / since=X: created before / after container X (RFC 3339 with nanoseconds, so
        // the strings order as the times do).
        let created_of = |n: &String| self.lookup(n).map(|c| c.rec().created.clone());
        let before: Vec<String> = opts.filters.get("before").iter().map(created_of).collect::<Result<_, _>>()?;
        let since: Vec<String> = opts.filters.get("since").iter().map(created_of).collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for rec in recs {
            if !all && !rec.state.status.is_live() {
                continue;
            }
            if before.iter().any(|t| rec.created >= *t) || since.iter().any(|t| rec.created <= *t) {
                continue;
            }
            if !matches_filters(&rec, &opts.filters, &names) {
                continue;
            }
            out.push(self.summary(&rec, opts.size));
            if opts.limit.is_some_and(|n| out.len() as i64 >= n) {
                break;
            }
        }
        Ok(out)
    }
}
