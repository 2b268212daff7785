//! Start: the bundle, the task created through the seam, waiting attaches connected, the program let run.

use super::*;

impl Engine {
    pub(super) async fn start_ctr(&self, ctr: &Arc<Ctr>) -> Result<bool, ApiError> {
        let _op = ctr.op.lock().await;
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
            Ok(started) => {
                ctr.update_status(|r| {
                    r.state = RunState {
                        status: Status::Running,
                        pid: started.pid,
                        exit_code: 0,
                        error: String::new(),
                        oom_killed: false,
                        started_at: record::now(),
                        finished_at: r.state.finished_at.clone(),
                    };
                    r.shim = Some(started.shim);
                })?;
                self.spawn_monitor(Arc::clone(ctr));
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

    /// Start the shim on the bundle (made now unless `prepared`), connect waiting attaches, start.
    pub(super) async fn launch(&self, ctr: &Arc<Ctr>, rec: &Record, prepared: bool) -> crate::error::Result<crate::task::Created> {
        let bundle = &ctr.bundle;
        if !prepared {
            let ns_of = |n: &str| self.ns_pid(n);
            self.prepare_bundle(rec, bundle, &ctr.dir, &ns_of)?;
        }
        let started = self.tasks.create(bundle).await.map_err(|e| e.prefixed("failed to create task for container: "))?;
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
            return Err(e);
        }
        Ok(started)
    }
}
