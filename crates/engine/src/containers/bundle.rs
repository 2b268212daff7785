//! A container's bundle: made at create (ahead of the start that usually follows) or at start —
//! the root mounted, the spec, the init files, the shim's config — and taken down again; the
//! deletes of what removals renamed away.

use super::*;

/// How long a bundle made at create (see [`Engine::prepare_ahead`]) waits for its start.
pub(super) const AHEAD_TTL: Duration = Duration::from_secs(1);

/// A bundle being made ahead of its start, and when that began.
pub(crate) struct Ahead {
    pub(super) made: Instant,
    pub(super) task: tokio::task::JoinHandle<Result<(), ApiError>>,
}

/// Docker's /etc/hosts for a container without a network of its own.
pub(super) const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The host's resolv.conf without loopback name servers (unreachable from a container's own
/// network namespace), falling back to Docker's public defaults when none is left.
pub fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            let addr = f.next().unwrap_or("");
            let ip: Option<std::net::IpAddr> = addr.split('%').next().and_then(|a| a.parse().ok());
            if ip.is_none_or(|ip| ip.is_loopback()) {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Docker's /etc/hosts for a container of its own network namespace, with `--add-host` lines
/// (`host-gateway`: `gw`).
pub(super) fn hosts_base(extra: &[String], gw: Option<std::net::Ipv4Addr>) -> Result<String, ApiError> {
    let mut hosts = HOSTS.to_string();
    for h in extra {
        hosts.push_str(&crate::hostconfig::extra_host(h, gw)?);
        hosts.push('\n');
    }
    Ok(hosts)
}

/// The init files: hostname, hosts, resolv.conf. `resolver`: the container's primary network's
/// resolver (a user network's), its only name server; its `--dns` servers are the resolver's
/// upstreams then, as with Docker's embedded DNS.
pub(super) fn write_init_files(
    dir: &Path,
    hostname: &str,
    hc: &berth_api::containers::HostConfig,
    resolver: Option<std::net::Ipv4Addr>,
    gw: Option<std::net::Ipv4Addr>,
) -> Result<(), ApiError> {
    let host_net = hc.network_mode.as_deref() == Some("host");
    let extra = hc.extra_hosts.as_deref().unwrap_or(&[]);
    let hosts = if host_net {
        let mut h = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| HOSTS.into());
        for e in extra {
            h.push_str(&crate::hostconfig::extra_host(e, gw)?);
            h.push('\n');
        }
        h
    } else {
        hosts_base(extra, gw)?
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = match resolver {
        Some(gw) => {
            let mut base: String =
                host_resolv.lines().filter(|l| l.split_whitespace().next() != Some("nameserver")).map(|l| format!("{l}\n")).collect();
            base.push_str(&format!("nameserver {gw}\n"));
            let mut own = hc.clone();
            own.dns = None;
            crate::hostconfig::resolv_conf(&base, &own)
        }
        None => crate::hostconfig::resolv_conf(&if host_net { host_resolv } else { container_resolv_conf(&host_resolv) }, hc),
    };
    for (name, data) in [("hostname", format!("{hostname}\n")), ("hosts", hosts), ("resolv.conf", resolv)] {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(internal("writing", &p))?;
    }
    Ok(())
}

/// Rename `dir` to a `.rm-` name beside it (unique, so a directory being deleted never blocks
/// the next): None when there is no such directory.
pub(crate) fn trash(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let doomed = dir.with_file_name(format!("{TRASH}{name}-{nanos:x}"));
    match std::fs::rename(dir, &doomed) {
        Ok(()) => Ok(Some(doomed)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The prefix of directories renamed away to be deleted.
pub(crate) const TRASH: &str = ".rm-";

/// Delete a directory renamed away; a bundle's rootfs is unmounted first, and a bundle whose
/// rootfs stays mounted is left alone (deleting through the mount would empty the layer).
pub(crate) fn delete_tree(dir: &Path, tasks: &dyn crate::task::Tasks) {
    if !tasks.unmount_rootfs(&dir.join("rootfs")) {
        return tracing::warn!("not removing {}: its rootfs is still mounted", dir.display());
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// Docker's `none` logging driver: the output goes to attached clients only.
pub(super) fn logs_off(rec: &Record) -> bool {
    rec.host_config.log_config.as_ref().is_some_and(|l| l.typ == "none")
}

impl Engine {
    /// Unmount the rootfs and remove the bundle directory (idempotent; the directory is renamed
    /// away at once and deleted after, see [`Engine::delete_later`]).
    pub(crate) fn cleanup_bundle(&self, ctr: &Ctr) {
        self.cleanup_bundle_at(&ctr.bundle)
    }

    pub(super) fn cleanup_bundle_at(&self, bundle: &Path) {
        self.tasks.unmount_rootfs(&bundle.join("rootfs"));
        // The bundle is named by its container: the volume mounts its start took go with it.
        if let Some(id) = bundle.file_name().and_then(|n| n.to_str()) {
            self.vols.release(id);
        }
        match trash(bundle) {
            Ok(Some(doomed)) => self.delete_later(vec![doomed], false),
            Ok(None) => {}
            Err(e) => tracing::warn!("removing {}: {e}", bundle.display()),
        }
    }

    /// Start making the bundle of a container just created, while its record is written and
    /// its create is answered: `docker run` asks for the start right after. None where the
    /// bundle depends on other containers (`container:X` modes), which may change meanwhile.
    pub(super) fn prepare_ahead(&self, rec: &Record) -> Option<Ahead> {
        let hc = &rec.host_config;
        let modes = [&hc.network_mode, &hc.pid_mode, &hc.ipc_mode, &hc.uts_mode];
        if modes.iter().any(|m| m.as_deref().is_some_and(|m| m.starts_with("container:"))) {
            return None;
        }
        let e = self.clone();
        let rec = rec.clone();
        let task = tokio::task::spawn_blocking(move || {
            let never = |n: &str| Err(ApiError::new(Kind::Internal, format!("container:{n} looked up ahead of a start")));
            e.prepare_bundle(&rec, &e.bundles_dir.join(&rec.id), &e.containers_dir.join(&rec.id), &never)
        });
        Some(Ahead { made: Instant::now(), task })
    }

    /// Take down a bundle made ahead whose start did not come in time: a created container
    /// holds no mount, as in Docker. Also for removals and shutdown.
    pub(crate) fn expire_ahead(&self, ctr: &Arc<Ctr>) {
        let e = self.clone();
        let ctr = Arc::clone(ctr);
        tokio::spawn(async move {
            tokio::time::sleep(AHEAD_TTL).await;
            let _op = ctr.op.lock().await;
            e.drop_ahead(&ctr).await;
        });
    }

    pub(crate) async fn drop_ahead(&self, ctr: &Arc<Ctr>) {
        let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(a) = ahead {
            let _ = a.task.await;
            let e = self.clone();
            let ctr = Arc::clone(ctr);
            let _ = tokio::task::spawn_blocking(move || e.cleanup_bundle(&ctr)).await;
        }
    }

    /// Delete directories already renamed out of sight, off the request's path: `rm` and
    /// `wait?condition=removed` answer once a container is gone, not once its files are.
    /// Whatever a stop of berthd cuts short, the next start deletes (`.rm-*`).
    /// With `detached_layer`, a layer taken away with `detach_unsynced` is among them: its
    /// removal is made durable before anything is deleted, so a crash of the machine brings a
    /// removed container back whole, never with its layer half deleted. (If that fails, the
    /// next start deletes what is left.)
    pub(crate) fn delete_later(&self, dirs: Vec<PathBuf>, detached_layer: bool) {
        let pending = Arc::clone(&self.deleting);
        pending.0.fetch_add(1, Ordering::SeqCst);
        let images = Arc::clone(&self.images);
        let tasks = Arc::clone(&self.tasks);
        tokio::task::spawn_blocking(move || {
            let synced = !detached_layer || images.snapshots.sync_detached().inspect_err(|e| tracing::warn!("{e}")).is_ok();
            for d in dirs.iter().filter(|_| synced) {
                delete_tree(d, &*tasks);
            }
            pending.0.fetch_sub(1, Ordering::SeqCst);
            pending.1.notify_waiters();
        });
    }

    /// Wait (up to `limit`) for the deletes [`Engine::delete_later`] started: a stop of berthd
    /// leaves no mount of a removed container behind.
    pub(crate) async fn deletes_done(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.deleting.1.notified();
            if self.deleting.0.load(Ordering::SeqCst) == 0 || Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// The default bridge's gateway, for `--add-host NAME:host-gateway` (the bridge made for
    /// it when it is not there yet); None when the container asks for none. Blocking.
    pub(super) fn host_gateway(&self, rec: &Record) -> Result<Option<std::net::Ipv4Addr>, ApiError> {
        if !rec.host_config.extra_hosts.iter().flatten().any(|h| h.ends_with("host-gateway")) {
            return Ok(None);
        }
        self.nets.host_gateway().map(Some)
    }

    /// A new, empty volume mounted for the first time is filled from the image's content at its
    /// path (resolved inside the root: a symlink there cannot lead out of it), unless `nocopy`.
    fn fill_volumes(&self, rec: &Record, rootfs: &Path) -> Result<(), ApiError> {
        // The local driver's mounts first (a tmpfs volume is filled like any other).
        for m in &rec.volumes {
            self.vols.mount(&m.name, &rec.id)?;
        }
        for m in rec.volumes.iter().filter(|m| !m.nocopy) {
            let Ok(from) = berth_runtime::rootfs::secure_join(&berth_runtime::sys::LinuxSys, rootfs, Path::new(&m.destination)) else {
                continue;
            };
            let data = self.vols.path(&m.name);
            let _one = self.vols.filling.lock().unwrap_or_else(|p| p.into_inner());
            crate::volumes::mounts::populate(&from, &data)
                .map_err(|e| ApiError::new(Kind::Internal, format!("copying the image's {} into volume {}: {e}", m.destination, m.name)))?;
        }
        Ok(())
    }

    /// Mount the rootfs and write the bundle: the spec, the init files, the shim's config.
    pub(super) fn prepare_bundle(&self, rec: &Record, bundle: &Path, dir: &Path, ns_of: spec::NsLookup) -> Result<(), ApiError> {
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(internal("creating", &rootfs))?;
        let mounts = self.images.snapshots.mounts(&rec.id).map_err(|e| ApiError::new(Kind::Internal, format!("container layer: {e}")))?;
        let mounts: Vec<_> =
            mounts.iter().map(|m| self.mountpoints.as_deref().and_then(|b| m.with_lowest(b)).unwrap_or_else(|| m.clone())).collect();
        // A layer discarded when the container exits needs no syncs (Podman does the same for
        // `--rm`); unmounting a normal overlay syncs the whole file system under it.
        self.tasks.mount_rootfs(&mounts, &rootfs, rec.host_config.auto_remove.unwrap_or(false))?;
        self.fill_volumes(rec, &rootfs)?;
        let mut built = spec::build(rec, &rootfs, dir, ns_of, &self.cfg.cgroup_parent)?;
        if rec.host_config.init.unwrap_or(self.cfg.init) {
            self.with_init(&mut built.spec)?;
        }
        if let Some(list) = built.spec["mounts"].as_array_mut() {
            for m in &rec.volumes {
                list.push(crate::volumes::mounts::spec(m, &self.vols.path(&m.name)));
            }
        }
        // Made at each start, as Docker does: the host's resolv.conf may have changed since.
        let resolver = rec.primary_network().and_then(|n| self.nets.resolver_for(&n));
        let gw = self.host_gateway(rec)?;
        write_init_files(dir, &built.hostname, &rec.host_config, resolver, gw)?;
        let spec = built.spec;
        let cfg_path = bundle.join("config.json");
        std::fs::write(&cfg_path, serde_json::to_vec(&spec).unwrap_or_default()).map_err(internal("writing", &cfg_path))?;
        let lc = crate::logs::of_record(&rec.host_config, &self.cfg.log_driver, &self.cfg.log_opts);
        let log = crate::logs::settings_or(
            &lc.typ,
            lc.config.as_ref().unwrap_or(&Default::default()),
            (self.cfg.log_default_max_size, self.cfg.log_default_max_file),
        )?;
        let (rows, cols) = console_size(&rec.host_config.console_size);
        let shim_cfg = berth_shim::Config {
            id: rec.id.clone(),
            runtime_root: self.runtime_root.clone(),
            log_path: (!logs_off(rec)).then(|| rec.log_path.clone()),
            log_max_size: log.max_size,
            log_max_file: log.max_file,
            log_format: log.format,
            log_compress: log.compress,
            tty: rec.tty(),
            stdin: rec.config.open_stdin.unwrap_or(false),
            stdin_once: rec.config.stdin_once.unwrap_or(false),
            rows,
            cols,
        };
        let shim_path = bundle.join(berth_shim::CONFIG);
        std::fs::write(&shim_path, serde_json::to_vec(&shim_cfg).unwrap_or_default()).map_err(internal("writing", &shim_path))
    }
}

/// Where `--init`'s binary is mounted in the container: Docker's path for its own.
const INIT_IN_CONTAINER: &str = "/sbin/docker-init";

impl Engine {
    /// `--init`: berth-init, mounted read-only from the host, runs the program as pid 1's child.
    fn with_init(&self, spec: &mut Value) -> Result<(), ApiError> {
        let init =
            self.cfg.init_path.as_ref().filter(|p| p.is_file()).ok_or_else(|| {
                ApiError::new(Kind::Internal, "--init: berth-init is not installed (it belongs beside berthd)".to_string())
            })?;
        let mut args = vec![json!(INIT_IN_CONTAINER), json!("--")];
        args.extend(spec["process"]["args"].as_array().cloned().unwrap_or_default());
        spec["process"]["args"] = Value::Array(args);
        if let Some(list) = spec["mounts"].as_array_mut() {
            list.push(
                json!({"destination": INIT_IN_CONTAINER, "type": "bind", "source": init, "options": ["rbind", "ro", "nosuid", "nodev"]}),
            );
        }
        Ok(())
    }
}

/// `ConsoleSize` (`[height, width]`, 1.42): the terminal's size from the start, so output is not
/// laid out for 0×0 until the client's first resize. (0, 0) when not given.
pub(crate) fn console_size(size: &Option<Vec<u32>>) -> (u16, u16) {
    match size.as_deref() {
        Some([h, w]) => (u16::try_from(*h).unwrap_or(u16::MAX), u16::try_from(*w).unwrap_or(u16::MAX)),
        _ => (0, 0),
    }
}
