//! Start: the bundle, the task created through the seam, waiting attaches connected, the program let run.

use super::*;

impl Engine {
    pub(super) async fn start_ctr(&self, ctr: &Arc<Ctr>) -> Result<bool, ApiError> {
        self.start_if(ctr, None).await
    }

    /// Start, unless `generation` is given and a stop or removal cancelled the restart it was
    /// for (then Ok(false)).
    pub(super) async fn start_if(&self, ctr: &Arc<Ctr>, generation: Option<u64>) -> Result<bool, ApiError> {
        let _op = ctr.op.lock().await;
        if generation.is_some_and(|g| g != ctr.restart_gen.load(Ordering::SeqCst)) || ctr.removed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let rec = ctr.rec();
        match rec.state.status {
            s if s.is_live() => return Ok(false),
            Status::Removing | Status::Dead => {
                return Err(ApiError::new(Kind::Conflict, format!("container {} is marked for removal and cannot be started", rec.id)));
            }
            _ => {}
        }
        let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        let ready = match ahead {
            // A failed one is made again, so its error comes from this start as it would have.
            Some(a) => a.made.elapsed() < AHEAD_TTL && matches!(a.task.await, Ok(Ok(()))),
            None => false,
        };
        if !ready {
            self.cleanup_bundle(ctr);
        }
        let result = self.launch(ctr, &rec, ready).await;
        match result {
            Ok((started, attached)) => {
                ctr.update_status(|r| {
                    for (name, ep) in attached.endpoints {
                        r.networks.insert(name, ep);
                    }
                    r.ports = attached.ports;
                    r.state = RunState {
                        status: Status::Running,
                        pid: started.pid,
                        exit_code: 0,
                        error: String::new(),
                        oom_killed: false,
                        started_at: record::now(),
                        finished_at: r.state.finished_at.clone(),
                        health: r.state.health.take(),
                    };
                    r.shim = Some(started.shim);
                    r.manually_stopped = false;
                })?;
                self.spawn_monitor(Arc::clone(ctr));
                let rec = ctr.rec();
                // Its networks first, as Docker tells them.
                self.network_events(&rec, "connect");
                self.ctr_event(&rec, "start", &[]);
                Ok(true)
            }
            Err(e) => {
                // A shim that failed (or was killed) part way may leave the runtime's state.
                self.destroy_leftovers(ctr).await;
                self.cleanup_bundle(ctr);
                ctr.release_attaches();
                // Docker's codes: 127 not found, 126 cannot be run, 128 any other failure.
                let code = e.exit_code().unwrap_or(128);
                let message = e.to_string();
                let _ = ctr.update_status(|r| {
                    r.state.error = message;
                    r.state.exit_code = code;
                    r.state.status =
                        if r.state.finished_at == ZERO_TIME && r.state.started_at == ZERO_TIME { Status::Created } else { Status::Exited };
                });
                // Whoever waits for this start (`docker run` waits for the next exit) hears it ended;
                // like Docker, an auto-remove container that cannot start is removed.
                if rec.host_config.auto_remove.unwrap_or(false) {
                    let _ = self.remove_now(ctr).await;
                }
                Err(e.into())
            }
        }
    }

    /// Start the shim on the bundle (made now unless `prepared`), give it its networks, connect
    /// waiting attaches, start.
    pub(super) async fn launch(
        &self,
        ctr: &Arc<Ctr>,
        rec: &Record,
        prepared: bool,
    ) -> crate::error::Result<(crate::task::Created, crate::networks::endpoints::Attached)> {
        let bundle = &ctr.bundle;
        if !prepared {
            let ns_of = |n: &str| self.ns_pid(n);
            self.prepare_bundle(rec, bundle, &ctr.dir, &ns_of)?;
        }
        let started = self.tasks.create(bundle).await.map_err(|e| e.prefixed("failed to create task for container: "))?;
        let attached = match self.attach_networks(ctr, rec, started.pid).await {
            Ok(a) => a,
            Err(e) => {
                let _ = self.tasks.kill(bundle, libc::SIGKILL, true).await;
                return Err(e.into());
            }
        };
        let pending: Vec<_> = std::mem::take(&mut *ctr.pending_attach.lock().unwrap_or_else(|p| p.into_inner()));
        for (req, tx) in pending {
            if let Ok(conn) = self.tasks.connect(bundle, &req).await {
                let _ = tx.send(conn);
            }
        }
        let start = self.tasks.start(bundle).await;
        // The next start's shim, made while this container runs rather than before it does.
        let e = self.clone();
        // A spawn blocks its thread until the child has exec'd: not a worker's.
        tokio::task::spawn_blocking(move || e.tasks.prepare_next());
        if let Err(e) = start {
            let _ = self.tasks.kill(bundle, libc::SIGKILL, true).await;
            self.release_networks(rec).await;
            return Err(e);
        }
        Ok((started, attached))
    }

    /// Give the created container (init `pid`) its endpoints and ports, and write its address
    /// into its /etc/hosts (in place: the file is mounted into the container already).
    async fn attach_networks(&self, ctr: &Arc<Ctr>, rec: &Record, pid: i32) -> Result<crate::networks::endpoints::Attached, ApiError> {
        if rec.networks.is_empty() {
            return Ok(Default::default());
        }
        let hostname = rec.config.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| rec.short_id().to_string());
        let want = crate::networks::endpoints::Want {
            id: rec.id.clone(),
            name: rec.name.clone(),
            hostname,
            pid,
            networks: rec.network_order(),
            port_bindings: rec.host_config.port_bindings.clone().unwrap_or_default(),
            publish_all: rec.host_config.publish_all_ports.unwrap_or(false),
            exposed: rec.config.exposed_ports.as_ref().map(|e| e.keys().cloned().collect()).unwrap_or_default(),
            dns: rec.host_config.dns.iter().flatten().filter_map(|d| d.parse().ok()).collect(),
        };
        let nets = Arc::clone(&self.nets);
        let dir = ctr.dir.clone();
        let extra = rec.host_config.extra_hosts.clone();
        let e = self.clone();
        let r = rec.clone();
        tokio::task::spawn_blocking(move || {
            let gw = e.host_gateway(&r)?;
            let attached = nets.attach_all(&want)?;
            let addr = attached.endpoints.first().map(|(_, ep)| ep.ip_address.clone());
            let base = hosts_base(extra.as_deref().unwrap_or(&[]), gw)?;
            let hosts = crate::networks::endpoints::hosts_with(&base, addr.as_deref(), &want.hostname);
            let path = dir.join("hosts");
            if let Err(e) = std::fs::write(&path, hosts) {
                let eps: Vec<String> = attached.endpoints.iter().map(|(_, ep)| ep.endpoint_id.clone()).collect();
                nets.release(&want.id, &eps);
                return Err(ApiError::new(Kind::Internal, format!("writing {}: {e}", path.display())));
            }
            Ok(attached)
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
    }

    /// Give back a container's endpoints, addresses and ports (its exit, a failed start).
    pub(crate) async fn release_networks(&self, rec: &Record) {
        if rec.networks.is_empty() {
            return;
        }
        let nets = Arc::clone(&self.nets);
        let id = rec.id.clone();
        let eps: Vec<String> = rec.networks.values().map(|ep| ep.endpoint_id.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || nets.release(&id, &eps)).await;
    }
}
