//! Removal: the record, bundle and layer taken away at once, deleted after; prune.

use super::*;

impl Engine {
    /// Remove a stopped container's bundle, snapshot, files and record.
    pub(crate) async fn remove_now(&self, ctr: &Arc<Ctr>) -> Result<(), ApiError> {
        // Answered before it is durable: a crash of the machine just after brings the container
        // back whole (the layer's removal is fsynced before anything is deleted), or, if only
        // the layer's removal reached the disk, restore finds the record without its layer and
        // marks it dead (as Docker does), to be removed again.
        // A bundle still being made ahead is finished before it is taken away.
        let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(a) = ahead {
            let _ = a.task.await;
        }
        // The "removing" mark, then the bundle, the layer and the record taken away at once
        // (renamed out of sight, the layer out of the store), unmounted and deleted after the
        // container is gone: unmounting a layer that is not volatile syncs the whole file system
        // under it. On a blocking thread, as one: writes and renames wait on the disk and their
        // directories' locks, and fifty removals at once would otherwise hold both runtime workers.
        let c = Arc::clone(ctr);
        let images = Arc::clone(&self.images);
        let vols = Arc::clone(&self.vols);
        // A durable layer's removal is made durable after the answer, before the delete.
        let ephemeral = ctr.rec().host_config.auto_remove.unwrap_or(false);
        let (doomed, detached_layer, taken) = tokio::task::spawn_blocking(move || {
            if c.rec().state.status != Status::Removing
                && let Err(e) = c.update_status(|r| r.state.status = Status::Removing)
            {
                return (Vec::new(), false, Err(e));
            }
            let (bundle, dir, key) = (&c.bundle, &c.dir, &c.id);
            vols.release(key);
            let mut doomed = Vec::new();
            match trash(bundle) {
                Ok(b) => doomed.extend(b),
                Err(e) => tracing::warn!("removing {}: {e}", bundle.display()),
            }
            let mut detached_layer = false;
            match images.snapshots.detach_unsynced(key) {
                Ok(d) => {
                    doomed.push(d);
                    detached_layer = !ephemeral;
                }
                Err(berth_store::snapshot::SnapshotError::NotFound(_)) => {}
                Err(e) => {
                    let e = ApiError::new(Kind::Internal, format!("removing the container's layer: {e}"));
                    return (doomed, false, Err(e));
                }
            }
            let record = trash(dir).map_err(internal("removing", dir));
            if let Ok(Some(r)) = &record {
                doomed.push(r.clone());
            }
            (doomed, detached_layer, record.map(drop))
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
        self.delete_later(doomed, detached_layer);
        taken?;
        {
            let mut t = self.table_mut();
            t.by_id.remove(&ctr.id);
            let name = ctr.rec().name.clone();
            if t.names.get(&name) == Some(&ctr.id) {
                t.names.remove(&name);
            }
        }
        self.drop_execs_of(&ctr.id);
        ctr.release_attaches();
        // A `--rm` container's anonymous volumes go with it, as Docker's.
        let rec = ctr.rec();
        if rec.host_config.auto_remove.unwrap_or(false) && !rec.volumes.is_empty() {
            let e = self.clone();
            let _ = tokio::task::spawn_blocking(move || e.drop_anonymous_volumes(&rec.volumes)).await;
        }
        self.ctr_event(&ctr.rec(), "destroy", &[]);
        ctr.removed.store(true, Ordering::SeqCst);
        ctr.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    pub(super) async fn prune_ctrs(&self, filters: berth_api::params::Filters) -> Result<PruneResponse, ApiError> {
        filters.only(&["until", "label", "label!"])?;
        let until = until_filters(&filters)?;
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for ctr in self.all() {
            let rec = ctr.rec();
            let created = record::unix_seconds(&rec.created);
            if rec.state.status.is_live() || until.iter().any(|u| created >= *u) || !labels_match(rec.config.labels.as_ref(), &filters) {
                continue;
            }
            // A walk of its layer: not on a runtime worker.
            let e = self.clone();
            let rw = tokio::task::spawn_blocking(move || e.sizes(&rec).0).await.unwrap_or(0);
            let _op = ctr.op.lock().await;
            // Started meanwhile, or removed by someone else: not ours to remove.
            if ctr.rec().state.status.is_live() || ctr.removed.load(Ordering::SeqCst) {
                continue;
            }
            match self.remove_now(&ctr).await {
                Ok(()) => {
                    deleted.push(ctr.id.clone());
                    reclaimed += rw;
                }
                Err(e) => tracing::warn!("pruning {}: {}", ctr.id, e.message),
            }
        }
        Ok(PruneResponse { containers_deleted: (!deleted.is_empty()).then_some(deleted), space_reclaimed: reclaimed })
    }

    pub(super) async fn remove_ctr(&self, id: &str, force: bool, volumes: bool) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        if ctr.rec().state.status == Status::Restarting && !force {
            return Err(ApiError::new(
                Kind::Conflict,
                format!(
                    "You cannot remove a restarting container {}. Stop the container before attempting removal or force remove",
                    ctr.id
                ),
            ));
        }
        self.cancel_restart(&ctr);
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        if rec.state.status.is_live() {
            if !force {
                return Err(ApiError::new(
                    Kind::Conflict,
                    format!(
                        "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                        rec.id
                    ),
                ));
            }
            ctr.removing.store(true, Ordering::SeqCst);
            let _ = self.signal(&ctr, libc::SIGKILL, true).await;
            if !self.wait_stopped(&ctr, Some(Duration::from_secs(30))).await {
                ctr.removing.store(false, Ordering::SeqCst);
                return Err(ApiError::new(Kind::Internal, format!("container {} did not exit after SIGKILL", rec.id)));
            }
        }
        self.remove_now(&ctr).await?;
        // `rm -v`: its anonymous volumes too (named ones stay).
        if volumes && !rec.volumes.is_empty() {
            let e = self.clone();
            let _ = tokio::task::spawn_blocking(move || e.drop_anonymous_volumes(&rec.volumes)).await;
        }
        Ok(())
    }
}
