//! `update`: a container's resource limits and restart policy changed, as Docker changes them.
//! A zero leaves a value as it is; the new values are checked with the create-time rules, written
//! to a running container's cgroup, and persisted, so the next start uses them too.

use super::*;
use berth_api::containers::HostConfig;

fn conflict(id: &str, msg: &str) -> ApiError {
    ApiError::new(Kind::Conflict, format!("Cannot update container {id}: {msg}"))
}

/// Docker's merge of an update into a container's HostConfig, with its refusals of what would
/// conflict with what is set already.
pub(crate) fn merge_update(id: &str, cur: &HostConfig, asked: &HostConfig) -> Result<HostConfig, ApiError> {
    let now = |v: Option<i64>| v.unwrap_or(0);
    let nano = now(asked.nano_cpus);
    if nano > 0 && now(cur.cpu_period) > 0 {
        return Err(conflict(id, "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set"));
    }
    if nano > 0 && now(cur.cpu_quota) > 0 {
        return Err(conflict(id, "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set"));
    }
    if now(asked.cpu_period) > 0 && now(cur.nano_cpus) > 0 {
        return Err(conflict(id, "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set"));
    }
    if now(asked.cpu_quota) > 0 && now(cur.nano_cpus) > 0 {
        return Err(conflict(id, "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set"));
    }
    let mut hc = cur.clone();
    let take = |mine: &mut Option<i64>, v: Option<i64>| {
        if v.unwrap_or(0) != 0 {
            *mine = v;
        }
    };
    if asked.blkio_weight.unwrap_or(0) != 0 {
        hc.blkio_weight = asked.blkio_weight;
    }
    take(&mut hc.cpu_shares, asked.cpu_shares);
    take(&mut hc.nano_cpus, asked.nano_cpus);
    take(&mut hc.cpu_period, asked.cpu_period);
    take(&mut hc.cpu_quota, asked.cpu_quota);
    for (mine, v) in [(&mut hc.cpuset_cpus, &asked.cpuset_cpus), (&mut hc.cpuset_mems, &asked.cpuset_mems)] {
        if v.as_deref().is_some_and(|v| !v.is_empty()) {
            mine.clone_from(v);
        }
    }
    let memory = now(asked.memory);
    if memory != 0 {
        // Docker keeps memory+swap at least the memory limit: a limit above the swap limit
        // needs the swap limit changed with it (also where none was set: Docker's rule).
        if memory > now(cur.memory_swap) && now(asked.memory_swap) == 0 {
            return Err(conflict(
                id,
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
            ));
        }
        hc.memory = Some(memory);
    }
    take(&mut hc.memory_swap, asked.memory_swap);
    take(&mut hc.memory_reservation, asked.memory_reservation);
    take(&mut hc.kernel_memory, asked.kernel_memory);
    take(&mut hc.cpu_realtime_period, asked.cpu_realtime_period);
    take(&mut hc.cpu_realtime_runtime, asked.cpu_realtime_runtime);
    if let Some(p) = asked.pids_limit {
        // Unlimited (0 or -1) is kept as 0, as dockerd keeps it.
        hc.pids_limit = Some(p.max(0));
    }
    if let Some(p) = asked.restart_policy.as_ref().filter(|p| !p.name.is_empty()) {
        if p.name != "no" && cur.auto_remove == Some(true) {
            return Err(conflict(id, "Restart policy cannot be updated because AutoRemove is enabled for the container"));
        }
        hc.restart_policy = Some(p.clone());
    }
    Ok(hc)
}

impl Engine {
    pub(super) async fn update_ctr(&self, id: &str, asked: HostConfig) -> Result<Vec<String>, ApiError> {
        let ctr = self.lookup(id)?;
        let mut warnings = Vec::new();
        crate::hostconfig::check_resources(&asked, true, &mut warnings)?;
        if let Some(p) = asked.restart_policy.as_ref().filter(|p| !p.name.is_empty()) {
            crate::hostconfig::check_restart_policy(p)?;
        }
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        let mut merged = merge_update(&rec.id, &rec.host_config, &asked)?;
        // What the update leaves makes sense together (a reservation above the new limit …).
        crate::hostconfig::check_resources(&merged, true, &mut Vec::new()).map_err(|e| conflict(&rec.id, &e.message))?;
        if !crate::hostconfig::blkio_weight_supported() {
            merged.blkio_weight = rec.host_config.blkio_weight;
        }
        if rec.state.status.is_live() {
            let live = crate::hostconfig::live_resources(&merged, &asked)?;
            let (tasks, cid) = (Arc::clone(&self.tasks), rec.id.clone());
            tokio::task::spawn_blocking(move || tasks.update(&cid, &live))
                .await
                .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
                .map_err(|e| ApiError::new(Kind::Internal, format!("Cannot update container {}: {e}", rec.id)))?;
        } else {
            // A bundle made ahead for the first start holds the old limits: made again at the start.
            let ahead = ctr.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(a) = ahead {
                let _ = a.task.await;
                self.cleanup_bundle(&ctr);
            }
        }
        let c = Arc::clone(&ctr);
        let rec = tokio::task::spawn_blocking(move || c.update(|r| r.host_config = merged))
            .await
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))??;
        self.ctr_event(&rec, "update", &[]);
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(v: Value) -> HostConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn updates_merge_as_dockers() {
        let cur = hc(json!({"Memory": 100, "MemorySwap": 200, "CpuShares": 512, "RestartPolicy": {"Name": "no"}}));
        let m = merge_update("x", &cur, &hc(json!({"Memory": 150, "PidsLimit": -1, "CpuShares": 0}))).unwrap();
        assert_eq!((m.memory, m.memory_swap, m.pids_limit, m.cpu_shares), (Some(150), Some(200), Some(0), Some(512)));
        let e = merge_update("x", &cur, &hc(json!({"Memory": 300}))).unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        assert!(e.message.starts_with("Cannot update container x: Memory limit should be smaller"), "{}", e.message);
        // No limit set yet, or unlimited swap: a memory limit alone is refused too (Docker's
        // rule); with a swap limit it is fine.
        assert!(merge_update("x", &HostConfig::default(), &hc(json!({"Memory": 100}))).is_err());
        assert!(merge_update("x", &hc(json!({"Memory": 100, "MemorySwap": -1})), &hc(json!({"Memory": 150}))).is_err());
        assert!(merge_update("x", &HostConfig::default(), &hc(json!({"Memory": 100, "MemorySwap": -1}))).is_ok());
        let m = merge_update("x", &cur, &hc(json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}))).unwrap();
        assert_eq!(m.restart_policy.unwrap().maximum_retry_count, 3);
        let e = merge_update("x", &hc(json!({"AutoRemove": true})), &hc(json!({"RestartPolicy": {"Name": "always"}}))).unwrap_err();
        assert!(e.message.ends_with("Restart policy cannot be updated because AutoRemove is enabled for the container"));
        let e = merge_update("x", &hc(json!({"NanoCpus": 1_000_000_000})), &hc(json!({"CpuQuota": 50_000}))).unwrap_err();
        assert!(e.message.ends_with("CPU Quota cannot be updated as NanoCPUs has already been set"));
        assert!(merge_update("x", &hc(json!({"CpuPeriod": 50_000})), &hc(json!({"NanoCpus": 1}))).is_err());
    }
}
