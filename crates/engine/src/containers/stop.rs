//! Stop, kill, pause: signals (a paused container thawed after them), the stop timeout, the freezer.

use super::*;

impl Engine {
    /// Freeze or thaw the container's processes (its cgroup's freezer) and record it.
    pub(super) async fn set_frozen(&self, ctr: &Ctr, frozen: bool) -> Result<(), ApiError> {
        let (e, id) = (self.clone(), ctr.id.clone());
        tokio::task::spawn_blocking(move || e.tasks.freeze(&id, frozen))
            .await
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(Kind::Internal, format!("{} the container: {e}", if frozen { "pausing" } else { "unpausing" })))?;
        ctr.update_status(|r| r.state.status = if frozen { Status::Paused } else { Status::Running }).map(|_| ())
    }

    /// Signal the container; a paused one is thawed right after, as Docker does, so the signal
    /// is handled (and SIGKILL takes effect).
    pub(super) async fn signal(&self, ctr: &Ctr, signal: i32, all: bool) -> Result<(), ApiError> {
        let sent = self.signal_now(ctr, signal, all).await;
        if sent.is_ok() {
            self.ctr_event(&ctr.rec(), "kill", &[("signal", signal.to_string())]);
        }
        if sent.is_ok() && ctr.rec().state.status == Status::Paused {
            self.set_frozen(ctr, false).await?;
        }
        sent
    }

    pub(super) async fn signal_now(&self, ctr: &Ctr, signal: i32, all: bool) -> Result<(), ApiError> {
        match self.tasks.kill(&ctr.bundle, signal, all).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::Conflict && !ctr.rec().state.status.is_live() => Err(not_running(&ctr.id)),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn stop_ctr(&self, ctr: &Arc<Ctr>, signal: Option<String>, timeout: Option<i64>) -> Result<bool, ApiError> {
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        if !rec.state.status.is_live() {
            return Ok(false);
        }
        let sig = parse_signal(signal.as_deref().or(rec.config.stop_signal.as_deref()).filter(|s| !s.is_empty()).unwrap_or("SIGTERM"))?;
        let t = timeout.or(rec.config.stop_timeout).unwrap_or(10);
        if t != 0 {
            let _ = self.signal(ctr, sig, false).await;
            let limit = (t > 0).then(|| Duration::from_secs(t as u64));
            if self.wait_stopped(ctr, limit).await {
                return Ok(true);
            }
        }
        let _ = self.signal(ctr, libc::SIGKILL, true).await;
        if !self.wait_stopped(ctr, Some(Duration::from_secs(30))).await {
            return Err(ApiError::new(Kind::Internal, format!("container {} did not exit after SIGKILL", ctr.id)));
        }
        Ok(true)
    }

    pub(super) async fn kill_ctr(&self, id: &str, signal: Option<String>) -> Result<(), ApiError> {
        let sig = parse_signal(signal.as_deref().unwrap_or("SIGKILL"))?;
        // Docker's wording for a kill that cannot be done.
        let cannot = |e: ApiError| ApiError::new(e.kind, format!("Cannot kill container: {id}: {}", e.message));
        let ctr = self.lookup(id).map_err(cannot)?;
        if !ctr.rec().state.status.is_live() {
            return Err(cannot(not_running(&ctr.id)));
        }
        self.signal(&ctr, sig, false).await.map_err(cannot)?;
        if sig == libc::SIGKILL {
            // Docker returns once a KILL has taken effect.
            self.wait_stopped(&ctr, Some(Duration::from_secs(10))).await;
        }
        Ok(())
    }
}
