//! Create: Docker's checks of a request, the image's config merged in, the name reserved, the
//! writable layer prepared and the record written; renames.

use super::*;
use crate::volumes::mounts::VolumeMount;
use berth_models::containers::HealthConfig;

/// The checks of a create request that need nothing but the request (Docker's rules for the
/// HostConfig, binds, ulimits, sysctls, capabilities …): a request they refuse makes nothing.
/// Returns Docker's warnings. (Public for the fuzz targets: requests are hostile input.)
pub fn check_create(body: &CreateBody) -> Result<Vec<String>, ApiError> {
    let default = berth_api::containers::HostConfig::default();
    let hc = body.host_config.as_ref().unwrap_or(&default);
    let warnings = crate::hostconfig::check(&body.config, hc)?;
    spec::check(hc)?;
    spec::capabilities(false, hc.cap_add.as_deref().unwrap_or(&[]), hc.cap_drop.as_deref().unwrap_or(&[]))?;
    Ok(warnings)
}

/// Docker's `ENTRYPOINT` + `CMD` merge with the image's defaults.
pub(super) fn merge(
    mut user: ContainerConfig,
    image: &berth_store::image::ContainerConfig,
) -> Result<(ContainerConfig, String, Vec<String>), ApiError> {
    let user_ep = user.entrypoint.take().map(StrSlice::into_vec);
    let user_cmd = user.cmd.take().map(StrSlice::into_vec).filter(|c| !c.is_empty());
    let (entrypoint, cmd) = match user_ep {
        // `--entrypoint ""` clears the image's entrypoint and its cmd.
        Some(ep) if ep.len() == 1 && ep[0].is_empty() => (Vec::new(), user_cmd.unwrap_or_default()),
        Some(ep) if !ep.is_empty() => (ep, user_cmd.unwrap_or_default()),
        _ => (image.entrypoint.clone().unwrap_or_default(), user_cmd.or_else(|| image.cmd.clone()).unwrap_or_default()),
    };
    let mut argv: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if argv.is_empty() {
        return Err(ApiError::new(Kind::InvalidArgument, "No command specified"));
    }
    let path = argv.remove(0);
    let key = |e: &String| e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.clone());
    let mut env = image.env.clone().unwrap_or_default();
    for e in user.env.take().unwrap_or_default() {
        match env.iter_mut().find(|x| key(x) == key(&e)) {
            Some(slot) => *slot = e,
            None => env.push(e),
        }
    }
    let mut labels: BTreeMap<String, String> = image.labels.clone().unwrap_or_default();
    labels.extend(user.labels.take().unwrap_or_default());
    // Nothing from either: null, as Docker keeps it.
    user.env = (!env.is_empty()).then_some(env);
    user.labels = Some(labels);
    user.entrypoint = (!entrypoint.is_empty()).then_some(StrSlice::Many(entrypoint));
    user.cmd = (!cmd.is_empty()).then_some(StrSlice::Many(cmd));
    if user.working_dir.as_deref().unwrap_or("").is_empty() {
        user.working_dir = Some(image.working_dir.clone());
    }
    if user.user.as_deref().unwrap_or("").is_empty() {
        user.user = Some(image.user.clone());
    }
    if user.stop_signal.as_deref().unwrap_or("").is_empty() && !image.stop_signal.is_empty() {
        user.stop_signal = Some(image.stop_signal.clone());
    }
    if let Some(ports) = &image.exposed_ports
        && user.exposed_ports.is_none()
    {
        user.exposed_ports = Some(ports.clone());
    }
    if let Some(img) = &image.healthcheck {
        user.healthcheck = Some(merge_healthcheck(user.healthcheck.take(), img));
    }
    // The image's `VOLUME`s join the container's (anonymous volumes unless something covers them).
    if let Some(vols) = image.volumes.as_ref().filter(|v| !v.is_empty()) {
        let mine = user.volumes.get_or_insert_with(Default::default);
        for k in vols.keys() {
            mine.entry(k.clone()).or_insert_with(|| serde_json::json!({}));
        }
    }
    Ok((user, path, argv))
}

/// Docker's merge of a container's healthcheck with its image's: what the container leaves
/// unset (no test, a zero timing) comes from the image.
fn merge_healthcheck(user: Option<HealthConfig>, img: &berth_store::image::Healthcheck) -> HealthConfig {
    let Some(mut h) = user else {
        return HealthConfig {
            test: (!img.test.is_empty()).then(|| img.test.clone()),
            interval: img.interval,
            timeout: img.timeout,
            retries: img.retries,
            start_period: img.start_period,
            start_interval: img.start_interval,
        };
    };
    if h.test.as_ref().is_none_or(|t| t.is_empty()) && !img.test.is_empty() {
        h.test = Some(img.test.clone());
    }
    for (mine, theirs) in [
        (&mut h.interval, img.interval),
        (&mut h.timeout, img.timeout),
        (&mut h.retries, img.retries),
        (&mut h.start_period, img.start_period),
        (&mut h.start_interval, img.start_interval),
    ] {
        if mine.unwrap_or(0) == 0 && theirs.is_some() {
            *mine = theirs;
        }
    }
    h
}

/// The image a build step's container runs on: a stage's state so far, which no image
/// record names (its ID is its config's digest).
pub(crate) struct StepImage {
    pub id: String,
    pub config: berth_store::image::ImageConfig,
    /// The top layer's chain ID (None: no layers).
    pub top: Option<String>,
}

impl Engine {
    pub(super) async fn create_ctr(&self, name: Option<String>, body: CreateBody) -> Result<CreateResponse, ApiError> {
        self.create_on(name, body, None).await
    }

    /// Create a container on `step` instead of the image `body` names (a build's RUN).
    pub(crate) async fn create_on(
        &self,
        name: Option<String>,
        body: CreateBody,
        step: Option<StepImage>,
    ) -> Result<CreateResponse, ApiError> {
        let warnings = check_create(&body)?;
        let CreateBody { config, host_config, networking_config } = body;
        let mut hc = host_config.unwrap_or_default();
        crate::hostconfig::settle(&mut hc);
        // dockerd's merge: inspect shows the driver and options the container logs with.
        let lc = crate::logs::merge_defaults(hc.log_config.take(), &self.cfg.log_driver, &self.cfg.log_opts);
        crate::logs::check_opts(&lc.typ, lc.config.as_ref().unwrap_or(&BTreeMap::new()))?;
        hc.log_config = Some(lc);
        let log_driver = hc.log_config.as_ref().map(|l| l.typ.clone()).unwrap_or_default();
        let networks = self.create_networks(&mut hc, networking_config)?;
        let image_name = config
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::new(Kind::InvalidArgument, "Config.Image is required"))?;
        let (image_id, image_config, top) = match step {
            Some(s) => (s.id, s.config, s.top),
            None => {
                let image_id = self.images.resolve(&image_name).map_err(|e| match e {
                    berth_store::images::ImagesError::NotFound(_) | berth_store::images::ImagesError::Reference(_) => {
                        ApiError::new(Kind::NotFound, format!("No such image: {image_name}"))
                    }
                    e => ApiError::new(Kind::InvalidArgument, e.to_string()),
                })?;
                let (_, image_config) = self.images.config(&image_id).map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
                let image_rec = self.images.get(&image_id).map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
                (image_id.to_string(), image_config, image_rec.layers.last().map(|l| l.chain_id.to_string()))
            }
        };
        let (merged, path, args) = merge(config, &image_config.config)?;
        if let Some(s) = merged.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            parse_signal(s)?;
        }
        if let Some(w) = merged.working_dir.as_deref().filter(|w| !w.is_empty() && !w.starts_with('/')) {
            return Err(ApiError::new(
                Kind::InvalidArgument,
                format!("the working directory '{w}' is invalid, it needs to be an absolute path"),
            ));
        }
        // Namespaces of another container: it must exist now (whether it runs is the start's
        // question), and a network shared with one on the host's network is the host's. A 400,
        // as dockerd answers for pid and ipc: the docker CLI takes a 404 from create for a
        // missing image and would go and pull it.
        let other = |name: &str| {
            self.lookup(name).map_err(|e| if e.kind == Kind::NotFound { ApiError::new(Kind::InvalidArgument, e.message) } else { e })
        };
        for mode in [&hc.network_mode, &hc.pid_mode, &hc.ipc_mode, &hc.uts_mode] {
            if let Some(name) = mode.as_deref().and_then(|m| m.strip_prefix("container:")) {
                other(name)?;
            }
        }
        if let Some(name) = hc.network_mode.as_deref().and_then(|m| m.strip_prefix("container:"))
            && other(name)?.rec().host_config.network_mode.as_deref() == Some("host")
        {
            crate::hostconfig::sysctls(&hc, false)?;
        }

        let id = names::random_id()?;
        // Reserve the name first, so two creates never both get it.
        let name = {
            let mut t = self.table_mut();
            let name = match name {
                Some(n) => {
                    let n = names::validate(&n)?;
                    if let Some(other) = t.names.get(&n) {
                        return Err(ApiError::new(
                            Kind::Conflict,
                            format!(
                                "Conflict. The container name \"/{n}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                            ),
                        ));
                    }
                    n
                }
                None => {
                    (0..100).map(|i| names::generate(&id, i)).find(|n| !t.names.contains_key(n)).unwrap_or_else(|| id[..12].to_string())
                }
            };
            t.names.insert(name.clone(), id.clone());
            name
        };
        let dir = self.containers_dir.join(&id);
        let log_path = crate::logs::path_for(&dir, &id, &log_driver);
        let undo = |e: ApiError| {
            let mut t = self.table_mut();
            if t.names.get(&name) == Some(&id) {
                t.names.remove(&name);
            }
            drop(t);
            let _ = self.images.snapshots.remove(&id);
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let mut volumes = self.make_volumes(&merged, &hc).map_err(undo)?;
        if let Err(e) = self.volumes_from(&mut hc, &mut volumes) {
            self.drop_anonymous_volumes(&volumes);
            return Err(undo(e));
        }
        // A `run --rm` container is thrown away when it exits, and after a crash of the machine:
        // its layer and record are written without fsyncs (docs/engine.md).
        let ephemeral = hc.auto_remove.unwrap_or(false);
        let result: Result<Record, ApiError> = (|| {
            std::fs::create_dir(&dir).map_err(internal("creating", &dir))?;
            let parent = top;
            let snapshots = &self.images.snapshots;
            // A durable layer's fsyncs are left for later, to run beside the record's.
            let prepared = if ephemeral {
                snapshots.prepare_ephemeral(&id, parent.as_deref())
            } else {
                snapshots.prepare_unsynced(&id, parent.as_deref())
            };
            prepared.map_err(|e| ApiError::new(Kind::Internal, format!("preparing the container's layer: {e}")))?;
            Ok(Record {
                version: record::RECORD_VERSION,
                id: id.clone(),
                name: name.clone(),
                created: record::now(),
                image: image_id.clone(),
                image_name: image_name.clone(),
                path,
                args,
                config: merged,
                host_config: hc,
                state: RunState::default(),
                shim: None,
                restart_count: 0,
                log_path,
                networks,
                ports: BTreeMap::new(),
                volumes: volumes.clone(),
                manually_stopped: false,
            })
        })();
        let rec = result.map_err(|e| {
            self.drop_anonymous_volumes(&volumes);
            undo(e)
        })?;
        // The layer's fsyncs, the record's and the making of the bundle all at once (fsyncs are
        // idle time for the CPU). The record is put in place only once the layer is durable: a
        // crash of the machine before leaves a layer without a record, which restore removes.
        let images = Arc::clone(&self.images);
        let key = id.clone();
        let layer_synced = (!ephemeral).then(|| tokio::task::spawn_blocking(move || images.snapshots.sync(&key)));
        let ahead = self.prepare_ahead(&rec);
        let saved = async {
            if ephemeral {
                return rec.save(&dir, crate::record::Durability::Atomic);
            }
            let staged = rec.stage(&dir);
            if let Some(synced) = layer_synced {
                match synced.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(ApiError::new(Kind::Internal, format!("preparing the container's layer: {e}"))),
                    Err(e) => return Err(ApiError::new(Kind::Internal, e.to_string())),
                }
            }
            staged?.commit()
        };
        if let Err(e) = saved.await {
            if let Some(a) = ahead {
                let _ = a.task.await;
                self.cleanup_bundle_at(&self.bundles_dir.join(&id));
            }
            self.drop_anonymous_volumes(&rec.volumes);
            return Err(undo(e));
        }
        let ctr = self.new_ctr(rec);
        if let Some(a) = ahead {
            *ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
            self.expire_ahead(&ctr);
        }
        self.table_mut().by_id.insert(id.clone(), ctr);
        Ok(CreateResponse { id, warnings })
    }

    /// The networks a create asks for, checked: its `NetworkMode`'s (named by name, ID or ID
    /// prefix; recorded by name) and any other in `EndpointsConfig`, with their aliases and
    /// addresses. Docker's errors for an unknown network, an address on the default bridge,
    /// ports published with no network of the container's own.
    fn create_networks(
        &self,
        hc: &mut berth_api::containers::HostConfig,
        nc: Option<berth_models::networks::NetworkingConfig>,
    ) -> Result<BTreeMap<String, berth_models::networks::EndpointSettings>, ApiError> {
        let mut asked = nc.and_then(|n| n.endpoints_config).unwrap_or_default();
        let mode = hc.network_mode.clone().unwrap_or_default();
        let mut out = BTreeMap::new();
        let primary = match mode.as_str() {
            "" | "default" | "bridge" => Some(crate::networks::DEFAULT.to_string()),
            "none" | "host" => None,
            m if m.starts_with("container:") => None,
            m => {
                // A 400: the docker CLI takes a 404 from create for a missing image, and pulls.
                let net = self.nets.find(m).map_err(|e| ApiError::new(Kind::InvalidArgument, e.message))?;
                if net.name == "host" || net.name == "none" {
                    hc.network_mode = Some(net.name.clone());
                    None
                } else {
                    hc.network_mode = Some(net.name.clone());
                    Some(net.name)
                }
            }
        };
        let publishes = hc.port_bindings.as_ref().is_some_and(|p| p.values().any(|b| b.as_ref().is_some_and(|b| !b.is_empty())))
            || hc.publish_all_ports == Some(true);
        if primary.is_none() {
            if mode.starts_with("container:") && publishes {
                return Err(ApiError::new(
                    Kind::InvalidArgument,
                    "conflicting options: port publishing and the container type network mode",
                ));
            }
            if !asked.is_empty() && !asked.keys().all(|k| *k == mode) {
                return Err(ApiError::new(
                    Kind::InvalidArgument,
                    "container sharing network namespace with another container or host cannot be connected to any other network",
                ));
            }
            return Ok(out);
        }
        let primary = primary.unwrap_or_default();
        // The primary network's settings may be keyed by the name, the ID, or the mode as given.
        let own = asked.remove(&primary).or_else(|| asked.remove(&mode)).unwrap_or_default();
        let mut wanted = vec![(primary.clone(), own)];
        for (k, v) in asked {
            let net = self.nets.find(&k).map_err(|e| ApiError::new(Kind::InvalidArgument, e.message))?;
            if net.name == primary {
                continue;
            }
            if !net.is_bridge() {
                return Err(ApiError::new(Kind::InvalidArgument, format!("container cannot be connected to network {}", net.name)));
            }
            wanted.push((net.name, v));
        }
        for (name, mut ep) in wanted {
            let net = self.nets.find(&name)?;
            let ip = ep.ipam_config.as_ref().and_then(|c| c.ipv4_address.clone()).filter(|a| !a.is_empty());
            if let Some(ip) = &ip {
                if net.name == crate::networks::DEFAULT {
                    return Err(ApiError::new(
                        Kind::InvalidArgument,
                        "user specified IP address is supported on user defined networks only",
                    ));
                }
                crate::networks::parse_ipv4(ip)?;
            }
            if net.name == crate::networks::DEFAULT && ep.aliases.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err(ApiError::new(
                    Kind::InvalidArgument,
                    "network-scoped alias is supported only for containers in user defined networks",
                ));
            }
            ep.network_id = net.id.clone();
            out.insert(name, ep);
        }
        Ok(out)
    }

    /// The volumes a create asks for, made: named ones that do not exist yet, and anonymous
    /// ones (labelled as Docker labels them). Blocking (a few directory operations).
    fn make_volumes(&self, cfg: &ContainerConfig, hc: &berth_api::containers::HostConfig) -> Result<Vec<VolumeMount>, ApiError> {
        let mut out = Vec::new();
        for w in crate::volumes::mounts::wanted(cfg, hc)? {
            if !w.options.is_empty() {
                self.drop_anonymous_volumes(&out);
                return Err(ApiError::not_implemented("the local driver's options (type, device, o)"));
            }
            let mut labels = w.labels.clone();
            if w.name.is_none() {
                labels.insert(crate::volumes::ANONYMOUS.into(), String::new());
            }
            match self.vols.create(w.name.as_deref(), labels, w.options.clone()) {
                Ok((v, _)) => out.push(VolumeMount { name: v.name, destination: w.destination, rw: w.rw, nocopy: w.nocopy, mode: w.mode }),
                Err(e) => {
                    self.drop_anonymous_volumes(&out);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// `--volumes-from NAME[:ro|rw]`: the volumes and host binds of another container, at the
    /// same paths (read-only when it has them so, or when `ro` is asked), where the container's
    /// own mounts leave room.
    fn volumes_from(&self, hc: &mut berth_api::containers::HostConfig, volumes: &mut Vec<VolumeMount>) -> Result<(), ApiError> {
        let taken = |dst: &str, volumes: &[VolumeMount], hc: &berth_api::containers::HostConfig| {
            let dst = dst.trim_end_matches('/');
            volumes.iter().any(|v| v.destination.trim_end_matches('/') == dst)
                || hc.binds.iter().flatten().filter_map(|b| b.split(':').nth(1)).any(|t| t.trim_end_matches('/') == dst)
                || hc.mounts.iter().flatten().filter_map(|m| m.target.as_deref()).any(|t| t.trim_end_matches('/') == dst)
        };
        for from in hc.volumes_from.clone().unwrap_or_default() {
            let (name, mode) = match from.rsplit_once(':') {
                Some((n, m @ ("ro" | "rw"))) => (n, m),
                Some((_, m)) => return Err(ApiError::new(Kind::InvalidArgument, format!("invalid mode for volumes-from: {m}"))),
                None => (from.as_str(), ""),
            };
            let other = self.lookup(name).map_err(|e| ApiError::new(Kind::InvalidArgument, e.message))?.rec();
            for v in &other.volumes {
                if !taken(&v.destination, volumes, hc) {
                    volumes.push(VolumeMount { rw: v.rw && mode != "ro", nocopy: true, ..v.clone() });
                }
            }
            for b in other.host_config.binds.iter().flatten().filter(|b| !crate::volumes::mounts::is_volume_bind(b)) {
                let parsed = crate::spec::Bind::parse(b)?;
                if !taken(&parsed.target, volumes, hc) {
                    let ro = parsed.read_only || mode == "ro";
                    hc.binds.get_or_insert_with(Vec::new).push(format!(
                        "{}:{}:{}",
                        parsed.source,
                        parsed.target,
                        if ro { "ro" } else { "rw" }
                    ));
                }
            }
        }
        Ok(())
    }

    /// Remove the anonymous volumes among `mounts` that no container uses (a create that
    /// failed, `rm -v`, a `--rm` container's removal). Blocking.
    pub(crate) fn drop_anonymous_volumes(&self, mounts: &[VolumeMount]) {
        for m in mounts {
            if self.vols.get(&m.name).is_some_and(|v| v.anonymous())
                && self.volume_users(&m.name).is_empty()
                && let Err(e) = self.vols.remove(&m.name)
            {
                tracing::warn!("removing volume {}: {}", m.name, e.message);
            }
        }
    }

    /// Pid of a running container, for `container:X` namespace modes.
    pub(super) fn ns_pid(&self, name: &str) -> Result<i32, ApiError> {
        let other = self.lookup(name)?;
        let r = other.rec();
        if r.state.status.is_live() && r.state.pid > 0 {
            Ok(r.state.pid)
        } else {
            Err(ApiError::new(Kind::Conflict, format!("cannot join namespaces of container {name}: it is not running")))
        }
    }

    pub(super) async fn rename_ctr(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let new = names::validate(name)?;
        let old = ctr.rec().name.clone();
        if new == old {
            return Err(ApiError::new(Kind::InvalidArgument, "Renaming a container with the same name as its current name"));
        }
        {
            let mut t = self.table_mut();
            if let Some(other) = t.names.get(&new) {
                return Err(ApiError::new(
                    Kind::Conflict,
                    format!(
                        "Conflict. The container name \"/{new}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    ),
                ));
            }
            t.names.insert(new.clone(), ctr.id.clone());
        }
        match ctr.update(|r| r.name = new.clone()) {
            Ok(_) => {
                self.table_mut().names.remove(&old);
                Ok(())
            }
            Err(e) => {
                self.table_mut().names.remove(&new);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthcheck_takes_what_it_leaves_unset_from_the_image() {
        let img = berth_store::image::Healthcheck {
            test: vec!["CMD-SHELL".into(), "img".into()],
            interval: Some(5),
            timeout: Some(6),
            retries: Some(7),
            ..Default::default()
        };
        let h = merge_healthcheck(None, &img);
        assert_eq!((h.test.unwrap()[1].as_str(), h.interval, h.timeout, h.retries), ("img", Some(5), Some(6), Some(7)));
        let mine =
            HealthConfig { test: Some(vec!["CMD".into(), "mine".into()]), interval: Some(0), timeout: Some(9), ..Default::default() };
        let h = merge_healthcheck(Some(mine), &img);
        assert_eq!((h.test.unwrap()[1].as_str(), h.interval, h.timeout, h.retries), ("mine", Some(5), Some(9), Some(7)));
        let h = merge_healthcheck(Some(HealthConfig { test: Some(vec![]), ..Default::default() }), &img);
        assert_eq!(h.test.unwrap()[1], "img");
    }
}
