//! Restore after a stop or a crash of berthd (or of the machine): every record is reconciled
//! with what is really there — shims, bundles and their mounts, the runtime's state and cgroups,
//! container layers — so that each container ends adopted (its shim alive) or cleanly stopped,
//! and nothing is left that no record owns. See docs/crash.md.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::{ApiError, Kind};
use berth_runtime::state::ProcessId;

use crate::Engine;
use crate::containers::{TRASH, delete_tree};
use crate::record::{self, Record, Status};

impl Engine {
    pub(crate) async fn restore(&self) -> Result<(), ApiError> {
        // Shims still looking after a bundle, found once: a shim outlives berthd by design.
        let shims: HashMap<String, ProcessId> = self.tasks.running().into_iter().collect();
        // What a stop cut short of deleting (records and bundles renamed away by removals); a
        // removal's shim is on its way out already.
        for dir in [&self.containers_dir, &self.bundles_dir] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(TRASH) {
                    if let Some(s) = shims.get(&name) {
                        let (t, s) = (std::sync::Arc::clone(&self.tasks), *s);
                        let _ = tokio::task::spawn_blocking(move || t.destroy(&name, None, Some(s))).await;
                    }
                    delete_tree(&e.path(), &*self.tasks);
                }
            }
        }
        let entries = match std::fs::read_dir(&self.containers_dir) {
            Ok(e) => e,
            Err(e) => return Err(ApiError::new(Kind::Internal, format!("listing {}: {e}", self.containers_dir.display()))),
        };
        let mut adopted = Vec::new();
        for e in entries.flatten() {
            let dir = e.path();
            let rec = match record::Record::load(&dir) {
                Ok(r) => r,
                Err(err) => {
                    // A create that died before its record was written: nothing refers to it. (A
                    // `run --rm` record is not fsynced: a crash of the machine can leave it empty.)
                    if std::fs::metadata(dir.join(record::RECORD)).map_or(true, |m| m.len() == 0) {
                        let _ = std::fs::remove_dir_all(&dir);
                    } else {
                        tracing::warn!("skipping container {}: {}", dir.display(), err.message);
                    }
                    continue;
                }
            };
            let ctr = self.new_ctr(rec.clone());
            {
                let mut t = self.table_mut();
                t.names.insert(rec.name.clone(), rec.id.clone());
                t.by_id.insert(rec.id.clone(), Arc::clone(&ctr));
            }
            adopted.push(ctr);
        }
        for ctr in adopted {
            let rec = ctr.rec();
            if rec.state.status.is_live() {
                if rec.shim.is_some_and(|s| self.tasks.alive(&s)) {
                    tracing::info!("adopting running container {}", rec.short_id());
                    self.spawn_monitor(ctr);
                } else {
                    // Exited while we were away: the shim left its status, or died without one.
                    self.finish_exit(&ctr, None).await;
                }
                continue;
            }
            // Not running by its record, yet a shim or the runtime may hold it: a start that a
            // crash cut short between the shim's create and the record of the start (its client
            // never heard it started). It is taken down; the record says what it is.
            let shim = shims.get(&ctr.id).copied();
            if shim.is_some() || self.runtime_root.join(&ctr.id).exists() {
                tracing::info!("stopping container {}: its start was cut short", rec.short_id());
                let (e, id, cgroup) =
                    (self.clone(), ctr.id.clone(), crate::spec::cgroup_path(&self.cfg.cgroup_parent, &rec.host_config, &ctr.id));
                let _ = tokio::task::spawn_blocking(move || e.tasks.destroy(&id, Some(Path::new(&cgroup)), shim)).await;
            }
            if rec.state.status == Status::Removing || rec.host_config.auto_remove.unwrap_or(false) {
                // Docker removes auto-remove containers it finds stopped at start too.
                let _ = self.remove_now(&ctr).await;
                continue;
            }
            if ctr.bundle.exists() {
                self.cleanup_bundle(&ctr);
            }
            // Its layer went but the record stayed: a removal cut short by a crash.
            if matches!(self.images.snapshots.stat(&ctr.id), Err(berth_store::snapshot::SnapshotError::NotFound(_))) {
                let _ = ctr.update_status(|r| {
                    r.state.status = Status::Dead;
                    r.state.error = "its writable layer is gone (a removal was interrupted); remove it again".into();
                });
            }
        }
        let known: HashSet<String> = self.table().by_id.keys().cloned().collect();
        // A bundle no container owns (made ahead for a container whose record a crash lost, or
        // started for one): its shim and container go with it.
        for e in std::fs::read_dir(&self.bundles_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !known.contains(&name) && !name.starts_with(TRASH) {
                tracing::info!("removing the bundle of a container that no longer exists: {name}");
                let (e2, shim) = (self.clone(), shims.get(&name).copied());
                let n = name.clone();
                let _ = tokio::task::spawn_blocking(move || e2.tasks.destroy(&n, None, shim)).await;
                delete_tree(&e.path(), &*self.tasks);
            }
        }
        // Runtime state of a container that is not running (its record gone, or its shim dead
        // without a word): its processes and cgroup go.
        let running: HashSet<String> = self.all().iter().filter(|c| c.rec().state.status.is_live()).map(|c| c.id.clone()).collect();
        self.restore_networks(&running).await;
        // Running containers keep their volumes' mounts; those a crash left with no running
        // container go.
        let e = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for c in e.all().iter().map(|c| c.rec()).filter(|r| r.state.status.is_live()) {
                for m in &c.volumes {
                    e.vols.adopt(&m.name, &c.id);
                }
            }
            e.vols.release_unused();
        })
        .await;
        for e in std::fs::read_dir(&self.runtime_root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !running.contains(&name) {
                tracing::info!("removing the runtime state of a container that is not running: {name}");
                let owner = self.table().by_id.get(&name).cloned();
                let cgroup = owner.map(|c| PathBuf::from(crate::spec::cgroup_path(&self.cfg.cgroup_parent, &c.rec().host_config, &name)));
                let e2 = self.clone();
                let _ = tokio::task::spawn_blocking(move || e2.tasks.destroy(&name, cgroup.as_deref(), None)).await;
            }
        }
        // The writable layer of a container whose record a crash lost: of a `run --rm` one (not
        // fsynced), or of any other (made durable just before its record was). Container layers
        // are keyed by the container's ID; layers being unpacked are not.
        for info in self.images.snapshots.walk().map_err(|e| ApiError::new(Kind::Internal, e.to_string()))? {
            let container_layer = info.ephemeral || (info.key.len() == 64 && info.key.bytes().all(|b| b.is_ascii_hexdigit()));
            if info.kind == berth_store::snapshot::Kind::Active && container_layer && !known.contains(&info.key) {
                tracing::info!("removing the layer of a container that no longer exists: {}", info.key);
                let _ = self.images.snapshots.remove(&info.key);
            }
        }
        Ok(())
    }

    /// Running containers keep their links and addresses across a restart of berthd: their
    /// bridges are known again, their ports held again and the table written once. Addresses
    /// of containers that are not running (the machine restarted, or they exited meanwhile)
    /// are given back.
    async fn restore_networks(&self, running: &HashSet<String>) {
        let live: Vec<Arc<Record>> = self.all().iter().map(|c| c.rec()).filter(|r| running.contains(&r.id)).collect();
        let nets = Arc::clone(&self.nets);
        let running = running.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut any = false;
            for rec in &live {
                let upstreams: Vec<std::net::Ipv4Addr> = rec.host_config.dns.iter().flatten().filter_map(|d| d.parse().ok()).collect();
                for (name, ep) in rec.network_order() {
                    let Ok(net) = nets.find(&name) else { continue };
                    if let Err(e) = nets.ensure_up(&net) {
                        tracing::warn!("network {name} of container {}: {}", rec.short_id(), e.message);
                    }
                    if let Ok(addr) = ep.ip_address.parse() {
                        nets.dns_add(&net, &rec.id, addr, ep.dns_names.as_deref().unwrap_or(&[]), &upstreams);
                    }
                    any = true;
                }
                let addr = rec.network_order().first().and_then(|(_, ep)| ep.ip_address.parse().ok());
                nets.readopt(&rec.id, &rec.ports, addr);
            }
            for owner in nets.ipam.networks().values().flat_map(|p| p.allocated.values().cloned()).collect::<HashSet<_>>() {
                if !running.contains(&owner) {
                    let _ = nets.ipam.release_owner(&owner);
                }
            }
            if any && let Err(e) = nets.apply_rules() {
                tracing::warn!("restoring berth's nftables rules: {}", e.message);
            }
        })
        .await;
    }
}
