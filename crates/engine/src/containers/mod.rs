//! The container lifecycle, one file per verb: `create`, `bundle` (made ahead or at start, taken
//! down), `start`, `exit` (the monitor, what an exit records, waits), `stop` (and kill, pause),
//! `remove` (and prune), `view` (inspect, list, filters, top). This file holds what they share and
//! the `Containers` backend that berth-api calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_api::containers::{
    AttachOptions, ContainerConfig, ContainerInspect, ContainerStats, ContainerSummary, Containers, CreateBody, CreateResponse, ExecConfig,
    ListOptions, LogsOptions, PruneResponse, StrSlice, TopResponse, WaitCondition, WaitResponse,
};
use berth_api::params::{ByteStream, Io};
use berth_api::{ApiError, Kind};
use berth_shim::{ExitStatus, Request};
use serde_json::{Value, json};

use crate::record::{self, Record, RunState, Status, ZERO_TIME};
use crate::{Ctr, Engine, names, spec};

mod archive;
mod bundle;
mod create;
mod diff;
mod exit;
pub(crate) mod health;
mod remove;
mod restart;
mod start;
mod stop;
mod update;
mod view;

pub(crate) use self::bundle::*;
pub(crate) use self::create::StepImage;
pub use self::create::check_create;
pub(crate) use self::view::*;

fn internal(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> ApiError {
    let what = what.to_string();
    let p = p.to_path_buf();
    move |e| ApiError::new(Kind::Internal, format!("{what} {}: {e}", p.display()))
}

fn not_running(id: &str) -> ApiError {
    ApiError::new(Kind::Conflict, format!("Container {id} is not running"))
}

/// `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<i32, ApiError> {
    let bad = || ApiError::new(Kind::InvalidArgument, format!("Invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map(|sig| sig as i32).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>().map(|sig| sig as i32).map_err(|_| bad())
}

/// `10m`, `1g`, `512k`, `100` (bytes), as the json-file driver takes sizes.
pub fn parse_size(s: &str) -> Result<u64, ApiError> {
    berth_format::parse_size(s).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))
}

#[async_trait::async_trait]
impl Containers for Engine {
    async fn create(&self, name: Option<String>, body: CreateBody) -> Result<CreateResponse, ApiError> {
        let made = self.create_ctr(name, body).await?;
        if let Ok(c) = self.lookup(&made.id) {
            self.ctr_event(&c.rec(), "create", &[]);
        }
        Ok(made)
    }

    async fn inspect(&self, id: &str, size: bool) -> Result<ContainerInspect, ApiError> {
        let ctr = self.lookup(id)?;
        Ok(self.inspect_ctr(&ctr.view(), size))
    }

    async fn list(&self, opts: ListOptions) -> Result<Vec<ContainerSummary>, ApiError> {
        self.list_ctrs(opts).await
    }

    async fn start(&self, id: &str) -> Result<bool, ApiError> {
        let ctr = self.lookup(id)?;
        self.start_ctr(&ctr).await
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, ApiError> {
        let ctr = self.lookup(id)?;
        let e = self.clone();
        tokio::task::spawn_blocking(move || crate::stats::sample(&e, &ctr.rec()))
            .await
            .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
    }

    async fn pause(&self, id: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let _op = ctr.op.lock().await;
        match ctr.rec().state.status {
            Status::Running => {
                self.set_frozen(&ctr, true).await?;
                self.ctr_event(&ctr.rec(), "pause", &[]);
                Ok(())
            }
            Status::Paused => Err(ApiError::new(Kind::Conflict, format!("Container {} is already paused", ctr.id))),
            _ => Err(not_running(&ctr.id)),
        }
    }

    async fn unpause(&self, id: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let _op = ctr.op.lock().await;
        match ctr.rec().state.status {
            Status::Paused => {
                self.set_frozen(&ctr, false).await?;
                self.ctr_event(&ctr.rec(), "unpause", &[]);
                Ok(())
            }
            _ => Err(ApiError::new(Kind::Conflict, format!("Container {} is not paused", ctr.id))),
        }
    }

    async fn prune(&self, filters: berth_api::params::Filters) -> Result<PruneResponse, ApiError> {
        self.prune_ctrs(filters).await
    }

    async fn stop(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<bool, ApiError> {
        let ctr = self.lookup(id)?;
        let status = ctr.rec().state.status;
        // Stopped by hand: no restart policy brings it back (`unless-stopped` not even when
        // berthd starts); one waiting to restart stays down.
        // (Written only where a policy reads it: a plain stop costs no extra fsync.)
        let policy = ctr.rec().host_config.restart_policy.as_ref().is_some_and(|p| !matches!(p.name.as_str(), "" | "no"));
        if policy && (status.is_live() || status == Status::Restarting) {
            ctr.update(|r| r.manually_stopped = true)?;
        }
        self.cancel_restart(&ctr);
        let stopped = self.stop_ctr(&ctr, signal, timeout).await? || status == Status::Restarting;
        if stopped {
            self.ctr_event(&ctr.rec(), "stop", &[]);
        }
        Ok(stopped)
    }

    async fn restart(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        self.cancel_restart(&ctr);
        ctr.restarting.store(true, Ordering::SeqCst);
        let stopped = self.stop_ctr(&ctr, signal, timeout).await;
        ctr.restarting.store(false, Ordering::SeqCst);
        if stopped? {
            self.ctr_event(&ctr.rec(), "stop", &[]);
        }
        self.start_ctr(&ctr).await?;
        self.ctr_event(&ctr.rec(), "restart", &[]);
        Ok(())
    }

    async fn kill(&self, id: &str, signal: Option<String>) -> Result<(), ApiError> {
        self.kill_ctr(id, signal).await
    }

    async fn wait(&self, id: &str, condition: WaitCondition) -> Result<futures_util::future::BoxFuture<'static, WaitResponse>, ApiError> {
        self.wait_ctr(id, condition).await
    }

    async fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<(), ApiError> {
        self.remove_ctr(id, force, volumes).await
    }

    async fn logs(&self, id: &str, opts: LogsOptions) -> Result<(bool, ByteStream), ApiError> {
        let ctr = self.lookup(id)?;
        if logs_off(&ctr.rec()) {
            return Err(ApiError::new(Kind::NotImplemented, "configured logging driver does not support reading"));
        }
        let tty = ctr.rec().tty();
        Ok((tty, crate::logs::stream(ctr, opts)))
    }

    async fn attach_check(&self, id: &str) -> Result<bool, ApiError> {
        let ctr = self.lookup(id)?;
        Ok(ctr.rec().tty())
    }

    async fn attach(&self, id: String, opts: AttachOptions, io: Io) {
        let Ok(ctr) = self.lookup(&id) else { return };
        let rec = ctr.rec();
        let req = Request::Attach { stdin: opts.stdin, stdout: opts.stdout, stderr: opts.stderr };
        let (conn, io) = if rec.state.status.is_live() {
            (self.tasks.connect(&ctr.bundle, &req).await.ok(), io)
        } else {
            // Not started yet (`docker run`, `docker start -a` attach first): the start connects
            // us, and a failed start or a removal lets us go.
            let (tx, rx) = tokio::sync::oneshot::channel();
            ctr.pending_attach.lock().unwrap_or_else(|p| p.into_inner()).push((req, tx));
            match crate::stream::until_started(rx, io).await {
                Some((conn, io)) => (Some(conn), io),
                None => return,
            }
        };
        let Some(conn) = conn else { return };
        self.ctr_event(&rec, "attach", &[]);
        let keys = berth_format::detach_keys(opts.detach_keys.as_deref());
        crate::stream::pump(conn, io, rec.tty(), opts.stdin && rec.config.open_stdin.unwrap_or(false), keys).await;
    }

    async fn resize(&self, id: &str, height: u16, width: u16) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        if !ctr.rec().state.status.is_live() {
            return Err(not_running(&ctr.id));
        }
        self.tasks.resize(&ctr.bundle, None, height, width).await?;
        self.ctr_event(&ctr.rec(), "resize", &[("height", height.to_string()), ("width", width.to_string())]);
        Ok(())
    }

    async fn changes(&self, id: &str) -> Result<Vec<berth_api::containers::ChangeItem>, ApiError> {
        self.changes_ctr(id).await
    }

    async fn export(&self, id: &str) -> Result<ByteStream, ApiError> {
        let out = self.export_ctr(id).await?;
        if let Ok(c) = self.lookup(id) {
            self.ctr_event(&c.rec(), "export", &[]);
        }
        Ok(out)
    }

    async fn archive_stat(&self, id: &str, path: &str) -> Result<berth_api::containers::PathStat, ApiError> {
        self.archive_stat_ctr(id, path).await
    }

    async fn archive_get(&self, id: &str, path: &str) -> Result<(berth_api::containers::PathStat, ByteStream), ApiError> {
        let out = self.archive_get_ctr(id, path).await?;
        if let Ok(c) = self.lookup(id) {
            self.ctr_event(&c.rec(), "archive-path", &[]);
        }
        Ok(out)
    }

    async fn archive_put(&self, id: &str, opts: berth_api::containers::ArchivePut, body: ByteStream) -> Result<(), ApiError> {
        self.archive_put_ctr(id, opts, body).await?;
        if let Ok(c) = self.lookup(id) {
            self.ctr_event(&c.rec(), "extract-to-dir", &[]);
        }
        Ok(())
    }

    async fn commit(&self, opts: berth_api::containers::CommitOptions) -> Result<String, ApiError> {
        let container = opts.container.clone();
        let comment = opts.comment.clone();
        let named = opts
            .repo
            .clone()
            .filter(|r| !r.is_empty())
            .map(|r| format!("{r}:{}", opts.tag.clone().filter(|t| !t.is_empty()).unwrap_or("latest".into())));
        let id = self.commit_ctr(opts).await?;
        if let Ok(c) = self.lookup(&container) {
            self.ctr_event(&c.rec(), "commit", &[("comment", comment), ("imageID", id.clone())]);
        }
        if let Some(n) = named {
            let name = berth_store::reference::Reference::parse(&n).map(|r| r.familiar()).unwrap_or(n);
            self.event("image", "tag", &id, &[("name", name)]);
        }
        Ok(id)
    }

    async fn top(&self, id: &str, ps_args: Option<String>) -> Result<TopResponse, ApiError> {
        let ctr = self.lookup(id)?;
        if !ctr.rec().state.status.is_live() {
            return Err(not_running(&ctr.id));
        }
        let (e, cid) = (self.clone(), ctr.id.clone());
        tokio::task::spawn_blocking(move || {
            let pids = e.tasks.pids(&cid).map_err(|e| ApiError::new(Kind::Conflict, e.to_string()))?;
            top(&pids, ps_args.as_deref().unwrap_or("-ef"))
        })
        .await
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
    }

    async fn update(&self, id: &str, update: berth_api::containers::HostConfig) -> Result<Vec<String>, ApiError> {
        self.update_ctr(id, update).await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let ctr = self.lookup(id)?;
        let old = ctr.rec().name.clone();
        self.rename_ctr(id, name).await?;
        self.ctr_event(&ctr.rec(), "rename", &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    async fn exec_create(&self, id: &str, config: ExecConfig) -> Result<String, ApiError> {
        self.exec_create_impl(id, config)
    }

    async fn exec_check(&self, exec_id: &str) -> Result<bool, ApiError> {
        self.exec_check_impl(exec_id)
    }

    async fn exec_start(&self, exec_id: String, io: Option<Io>, raw: bool) -> Result<(), ApiError> {
        self.exec_start_impl(exec_id, io, raw).await
    }

    async fn exec_inspect(&self, exec_id: &str) -> Result<berth_api::containers::ExecInspect, ApiError> {
        self.exec_inspect_impl(exec_id)
    }

    async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> Result<(), ApiError> {
        self.exec_resize_impl(exec_id, height, width).await
    }
}

#[cfg(test)]
mod tests {
    use super::create::merge;
    use super::*;

    #[test]
    fn entrypoint_and_cmd_merge_like_docker() {
        let image = berth_store::image::ContainerConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default".into()]),
            env: Some(vec!["PATH=/img".into(), "A=1".into()]),
            ..Default::default()
        };
        let cfg = |ep: Option<StrSlice>, cmd: Option<StrSlice>| ContainerConfig { entrypoint: ep, cmd, ..Default::default() };
        let (_, p, a) = merge(cfg(None, None), &image).unwrap();
        assert_eq!((p.as_str(), a), ("/entry", vec!["default".to_string()]));
        let (_, p, a) = merge(cfg(None, Some(StrSlice::Many(vec!["x".into()]))), &image).unwrap();
        assert_eq!((p.as_str(), a), ("/entry", vec!["x".to_string()]));
        let (_, p, a) = merge(cfg(Some(StrSlice::One("sh".into())), None), &image).unwrap();
        assert_eq!((p.as_str(), a.len()), ("sh", 0));
        let (_, p, a) = merge(cfg(Some(StrSlice::Many(vec!["".into()])), Some(StrSlice::One("ls".into()))), &image).unwrap();
        assert_eq!((p.as_str(), a.len()), ("ls", 0));
        assert!(merge(cfg(Some(StrSlice::Many(vec!["".into()])), None), &image).is_err());
        let mut u = cfg(None, None);
        u.env = Some(vec!["A=2".into(), "B=3".into()]);
        let (c, _, _) = merge(u, &image).unwrap();
        assert_eq!(c.env.unwrap(), ["PATH=/img", "A=2", "B=3"]);
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = container_resolv_conf("search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\noptions edns0\n");
        assert_eq!(r, "search lan\nnameserver 10.0.0.1\noptions edns0\n");
        let r = container_resolv_conf("nameserver 127.0.0.1\n");
        assert_eq!(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn signals_sizes_and_durations() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("200").unwrap(), 200);
        assert!(parse_size("x").is_err());
        assert_eq!(human_duration(0.2), "Less than a second");
        assert_eq!(human_duration(5.0), "5 seconds");
        assert_eq!(human_duration(90.0), "About a minute");
        assert_eq!(human_duration(7200.0), "2 hours");
    }
}
