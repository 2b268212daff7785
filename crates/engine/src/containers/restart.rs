//! Restart policies: `always`, `unless-stopped`, `on-failure[:N]`, as Docker applies them. An
//! exit the policy covers (not one a `stop`, a removal or a `restart` caused) makes the
//! container `restarting`; it starts again after Docker's back-off (100 ms, doubling, at most
//! a minute, back to 100 ms once a run lasted 10 s), on a task of its own, so a crash loop
//! never holds berthd up. A stop or a removal cancels a pending restart. When berthd starts,
//! the containers their policy covers start again (also after a reboot of the machine).

use super::*;

const FIRST: Duration = Duration::from_millis(100);
const MOST: Duration = Duration::from_secs(60);
const STEADY: f64 = 10.0;

/// Does `rec`'s policy restart it after this exit? `at_start`: berthd is starting (`always`
/// then ignores a stop, as Docker's does).
pub(crate) fn should_restart(rec: &Record, at_start: bool) -> bool {
    let Some(p) = &rec.host_config.restart_policy else { return false };
    if rec.manually_stopped && !(at_start && p.name == "always") {
        return false;
    }
    match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => rec.state.exit_code != 0 && (p.maximum_retry_count <= 0 || i64::from(rec.restart_count) < p.maximum_retry_count),
        _ => false,
    }
}

impl Engine {
    /// After an exit was recorded: restart the container if its policy says so.
    pub(crate) fn maybe_restart(&self, ctr: &Arc<Ctr>) {
        let rec = ctr.rec();
        if rec.state.status != Status::Exited
            || ctr.removed.load(Ordering::SeqCst)
            || ctr.removing.load(Ordering::SeqCst)
            || ctr.restarting.load(Ordering::SeqCst)
            || !should_restart(&rec, false)
        {
            return;
        }
        let ran = record::unix_seconds(&rec.state.finished_at) - record::unix_seconds(&rec.state.started_at);
        let delay = {
            let mut b = ctr.backoff.lock().unwrap_or_else(|p| p.into_inner());
            *b = if b.is_zero() || ran >= STEADY { FIRST } else { (*b * 2).min(MOST) };
            *b
        };
        self.restart_after(ctr, delay);
    }

    /// Mark the container restarting and start it after `delay`, unless something cancels it.
    fn restart_after(&self, ctr: &Arc<Ctr>, delay: Duration) {
        let generation = ctr.restart_gen.load(Ordering::SeqCst);
        if ctr.update_status(|r| r.state.status = Status::Restarting).is_err() {
            return;
        }
        let (e, ctr) = (self.clone(), Arc::clone(ctr));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            match e.start_if(&ctr, Some(generation)).await {
                Ok(true) => {
                    let _ = ctr.update_status(|r| r.restart_count += 1);
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!("restarting {}: {}", ctr.id, err.message);
                    // A failed start is an exit like another: the policy decides again.
                    e.maybe_restart(&ctr);
                }
            }
        });
    }

    /// Cancel a pending restart (a stop or a removal): a restarting container is exited.
    pub(crate) fn cancel_restart(&self, ctr: &Ctr) {
        ctr.restart_gen.fetch_add(1, Ordering::SeqCst);
        if ctr.rec().state.status == Status::Restarting {
            let _ = ctr.update_status(|r| r.state.status = Status::Exited);
        }
    }

    /// When berthd starts: containers started before, not running now, whose policy covers
    /// them, start again.
    pub(crate) fn restart_at_start(&self) {
        for ctr in self.all() {
            let rec = ctr.rec();
            let down = matches!(rec.state.status, Status::Exited | Status::Restarting);
            if down && rec.state.started_at != ZERO_TIME && should_restart(&rec, true) {
                self.restart_after(&ctr, Duration::ZERO);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::containers::RestartPolicy;

    fn rec(policy: &str, max: i64, code: i32, count: u32, stopped: bool) -> Record {
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "x", "name": "x", "created": "", "image": "", "image_name": "", "path": "", "args": [],
            "config": {}, "host_config": {}, "state": serde_json::to_value(RunState::default()).unwrap(), "shim": null,
            "restart_count": 0, "log_path": "/x"
        }))
        .unwrap();
        r.host_config.restart_policy = Some(RestartPolicy { name: policy.into(), maximum_retry_count: max });
        r.state.exit_code = code;
        r.restart_count = count;
        r.manually_stopped = stopped;
        r
    }

    #[test]
    fn policies_as_dockers() {
        assert!(should_restart(&rec("always", 0, 0, 9, false), false));
        assert!(!should_restart(&rec("always", 0, 0, 0, true), false), "not after a stop");
        assert!(should_restart(&rec("always", 0, 0, 0, true), true), "but when berthd starts");
        assert!(should_restart(&rec("unless-stopped", 0, 0, 0, false), true));
        assert!(!should_restart(&rec("unless-stopped", 0, 0, 0, true), true));
        assert!(should_restart(&rec("on-failure", 0, 1, 50, false), false));
        assert!(!should_restart(&rec("on-failure", 0, 0, 0, false), false), "a success ends it");
        assert!(should_restart(&rec("on-failure", 2, 1, 1, false), false));
        assert!(!should_restart(&rec("on-failure", 2, 1, 2, false), false), "retries used up");
        assert!(!should_restart(&rec("no", 0, 1, 0, false), false));
    }
}
