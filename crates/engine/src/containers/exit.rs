//! Exits: the monitor waiting on each running container, what an exit records (and an auto-remove
//! container's removal), and waits for an exit or a removal.

use super::*;
use berth_api::containers::WaitError;

impl Engine {
    pub(crate) fn spawn_monitor(&self, ctr: Arc<Ctr>) {
        let e = self.clone();
        tokio::spawn(async move {
            e.start_health(&ctr);
            let status = e.tasks.wait(&ctr.bundle).await;
            e.finish_exit(&ctr, status).await;
        });
    }

    /// The container's process is gone: record how it ended and release its bundle.
    pub(crate) async fn finish_exit(&self, ctr: &Arc<Ctr>, status: Option<ExitStatus>) {
        let read_status = || self.tasks.recorded_exit(&ctr.bundle);
        let mut status = status.or_else(read_status);
        if status.is_none()
            && let Some(shim) = ctr.rec().shim
        {
            // The connection broke but the shim lives: it is finishing; its status follows.
            for _ in 0..500 {
                if !self.tasks.alive(&shim) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            status = read_status();
        }
        let health = self.stop_health(ctr);
        let rec = ctr.rec();
        if !rec.state.status.is_live() {
            return;
        }
        let status_was_recorded = status.is_some();
        let error = if status.is_none() {
            // The shim died without recording an exit: make sure nothing of the container is left.
            self.destroy_leftovers(ctr).await;
            "the container's shim exited without recording an exit status".to_string()
        } else {
            String::new()
        };
        let auto_remove = rec.host_config.auto_remove.unwrap_or(false) && !ctr.restarting.load(Ordering::SeqCst);
        // A forced removal waiting for this exit takes the bundle away itself, unmounting after
        // it answers. (An auto-remove container's layer is volatile: unmounting it costs little.)
        if !ctr.removing.load(Ordering::SeqCst) {
            self.cleanup_bundle(ctr);
        }
        self.drop_execs_of(&ctr.id);
        self.release_networks(&rec).await;
        let status = status.unwrap_or(ExitStatus { exit_code: 255, finished_at: record::now(), oom_killed: false });
        // A removal (forced, or automatic) follows at once: one write marks the exit and the
        // removal together, where "exited" then "removing" cost two.
        let removal_next = auto_remove || ctr.removing.load(Ordering::SeqCst);
        let exited = move |r: &mut Record| {
            r.state.status = if removal_next { Status::Removing } else { Status::Exited };
            r.state.pid = 0;
            r.state.exit_code = status.exit_code;
            r.state.finished_at = status.finished_at;
            r.state.oom_killed = status.oom_killed;
            r.state.error = error;
            // The healthcheck's last results stay with the stopped container, as in Docker.
            if health.is_some() {
                r.state.health = health;
            }
            r.shim = None;
            crate::networks::endpoints::clear_live(r);
        };
        if status.oom_killed {
            self.ctr_event(&rec, "oom", &[]);
        }
        self.ctr_event(&rec, "die", &[("exitCode", status.exit_code.to_string())]);
        self.network_events(&rec, "disconnect");
        if auto_remove {
            // Its removal follows at once; were berthd to die first, restore finds the shim gone
            // and removes it just the same.
            ctr.update_in_memory(exited);
        } else {
            // A file written and renamed: on a blocking thread, not a runtime worker (an `rm -f`
            // of fifty containers records fifty exits at once).
            let c = Arc::clone(ctr);
            match tokio::task::spawn_blocking(move || c.update_status(exited)).await {
                Ok(Ok(_)) => self.maybe_restart(ctr),
                Ok(Err(e)) => tracing::error!("recording the exit of {}: {}", ctr.id, e.message),
                Err(e) => tracing::error!("recording the exit of {}: {e}", ctr.id),
            }
        }
        // A shim killed after it recorded the exit but before it removed the runtime's state
        // leaves that state behind (nothing else would): once the shim is gone, whatever is left
        // of a container that is still not running is taken down (normally nothing).
        if let Some(shim) = rec.shim
            && status_was_recorded
        {
            let e = self.clone();
            let ctr = Arc::clone(ctr);
            tokio::spawn(async move {
                for _ in 0..100 {
                    if !e.tasks.alive(&shim) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _op = ctr.op.lock().await;
                if !ctr.rec().state.status.is_live() && e.runtime_root.join(&ctr.id).exists() {
                    tracing::info!("removing what the shim of {} left of it", ctr.id);
                    e.destroy_leftovers(&ctr).await;
                }
            });
        }
        if auto_remove {
            let e = self.clone();
            let ctr = Arc::clone(ctr);
            tokio::spawn(async move {
                let _op = ctr.op.lock().await;
                if !ctr.rec().state.status.is_live()
                    && let Err(err) = e.remove_now(&ctr).await
                {
                    tracing::warn!("auto-removing {}: {}", ctr.id, err.message);
                }
            });
        }
    }

    /// What the runtime still holds of a container that is not running (a failed start, a shim
    /// that died without a word): its processes, cgroup and state go. A stat when there is none.
    /// (Not after a normal exit: the shim deletes its container's state itself.)
    pub(crate) async fn destroy_leftovers(&self, ctr: &Arc<Ctr>) {
        let (e, id) = (self.clone(), ctr.id.clone());
        let cgroup = spec::cgroup_path(&self.cfg.cgroup_parent, &ctr.rec().host_config, &id);
        let _ = tokio::task::spawn_blocking(move || e.tasks.destroy(&id, Some(Path::new(&cgroup)), None)).await;
    }

    /// Wait until the container is not running, up to `timeout` (None: forever).
    pub(super) async fn wait_stopped(&self, ctr: &Ctr, timeout: Option<Duration>) -> bool {
        let mut rx = ctr.changed.subscribe();
        let wait = async {
            loop {
                if !ctr.rec().state.status.is_live() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        match timeout {
            None => {
                wait.await;
                true
            }
            Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
        }
    }

    pub(super) async fn wait_ctr(
        &self,
        id: &str,
        condition: WaitCondition,
    ) -> Result<futures_util::future::BoxFuture<'static, WaitResponse>, ApiError> {
        let ctr = self.lookup(id)?;
        let mut rx = ctr.changed.subscribe();
        let first = ctr.rec();
        Ok(Box::pin(async move {
            loop {
                let rec = ctr.rec();
                let done = match condition {
                    WaitCondition::NotRunning => !rec.state.status.is_live(),
                    WaitCondition::NextExit => {
                        rec.state.finished_at != first.state.finished_at
                            || (rec.state.error != first.state.error && !rec.state.error.is_empty())
                    }
                    WaitCondition::Removed => ctr.removed.load(Ordering::SeqCst),
                };
                if done || rx.changed().await.is_err() {
                    // A removal clears the container's error, as Docker's does: the docker CLI
                    // prints any error a `removed` wait reports, after the start's own.
                    let cleared = matches!(condition, WaitCondition::Removed) && done;
                    let error = (!rec.state.error.is_empty() && !cleared).then(|| WaitError { message: rec.state.error.clone() });
                    return WaitResponse { status_code: i64::from(rec.state.exit_code), error };
                }
            }
        }))
    }
}
