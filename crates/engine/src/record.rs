//! A container as the engine keeps it: `containers/<id>/container.json`, written atomically on
//! every change. Readers take an `Arc` snapshot and never wait for a lifecycle operation.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use berth_api::containers::{ContainerConfig, HostConfig};
use berth_api::{ApiError, Kind};
use berth_models::containers::PortBinding;
use berth_models::networks::EndpointSettings;
use berth_runtime::state::ProcessId;
use serde::{Deserialize, Serialize};

pub const RECORD: &str = "container.json";
pub const RECORD_VERSION: u32 = 1;
/// Docker's zero time.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// A shim is (or may be) looking after a process. (A restarting container has none: it
    /// waits for its restart policy's next start.)
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub status: Status,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
    /// A container with a healthcheck: its status and last results (see `containers::health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<berth_models::containers::Health>,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            health: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    pub created: String,
    /// The image ID (`sha256:…`) and the name it was asked for by.
    pub image: String,
    pub image_name: String,
    pub path: String,
    pub args: Vec<String>,
    /// The config after merging the image's defaults (what inspect shows).
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub state: RunState,
    /// The shim looking after the running container.
    pub shim: Option<ProcessId>,
    pub restart_count: u32,
    pub log_path: PathBuf,
    /// Its networks by name: what it asked for (aliases, an address) and, while it runs, what
    /// it got. The primary one (its `NetworkMode`) is listed in [`Record::network_order`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, EndpointSettings>,
    /// Its published ports while it runs (`NetworkSettings.Ports`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// The volumes it mounts (anonymous ones by the name they were given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::mounts::VolumeMount>,
    /// Stopped by `stop` (Docker's HasBeenManuallyStopped): `unless-stopped` leaves it be.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manually_stopped: bool,
}

/// How far a record write must get before it counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (file and directory fsynced): a container's existence, configuration, name and
    /// removal, which must survive a crash of the machine.
    Durable,
    /// Replaced atomically, not fsynced: the status of its process (running, exited and how).
    /// After a crash of the machine no container is running anyway; restore then finds a status
    /// at most a few seconds old, and one still "running" becomes exited with an unknown code.
    Atomic,
}

impl Record {
    pub fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }

    /// The network its `NetworkMode` names (`bridge` for the default), None for `none`, `host`
    /// and `container:X`.
    pub fn primary_network(&self) -> Option<String> {
        match self.host_config.network_mode.as_deref().unwrap_or("") {
            "" | "default" | "bridge" => Some("bridge".into()),
            "none" | "host" => None,
            m if m.starts_with("container:") => None,
            m => Some(m.to_string()),
        }
    }

    /// Its networks, the primary one first.
    pub fn network_order(&self) -> Vec<(String, EndpointSettings)> {
        let primary = self.primary_network();
        let mut out: Vec<_> = self.networks.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by_key(|(k, _)| Some(k) != primary.as_ref());
        out
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn load(dir: &Path) -> Result<Record, ApiError> {
        let path = dir.join(RECORD);
        let data = std::fs::read(&path).map_err(|e| ApiError::new(Kind::Internal, format!("reading {}: {e}", path.display())))?;
        serde_json::from_slice(&data).map_err(|e| ApiError::new(Kind::Internal, format!("parsing {}: {e}", path.display())))
    }

    /// Write the record atomically; `durable` also makes it survive a crash of the machine.
    pub fn save(&self, dir: &Path, durable: Durability) -> Result<(), ApiError> {
        let path = dir.join(RECORD);
        let data = serde_json::to_vec(self).map_err(|e| ApiError::new(Kind::Internal, format!("encoding {}: {e}", path.display())))?;
        let write = match durable {
            Durability::Durable => berth_atomic::write_file,
            Durability::Atomic => berth_atomic::replace_file,
        };
        write(&path, &data, 0o600).map_err(|e| ApiError::new(Kind::Internal, format!("writing {}: {e}", path.display())))
    }

    /// A durable [`Record::save`] whose last step (the rename that makes it the record) waits
    /// for [`StagedRecord::commit`]: what the record depends on can be made durable meanwhile.
    pub fn stage(&self, dir: &Path) -> Result<StagedRecord, ApiError> {
        let path = dir.join(RECORD);
        let err = |e: &dyn std::fmt::Display| ApiError::new(Kind::Internal, format!("writing {}: {e}", path.display()));
        let data = serde_json::to_vec(self).map_err(|e| err(&e))?;
        let staged = berth_atomic::stage_file(&path, &data, 0o600).map_err(|e| err(&e))?;
        Ok(StagedRecord { staged, path })
    }
}

/// A durable record written but not yet in place (see [`Record::stage`]).
pub struct StagedRecord {
    staged: berth_atomic::Staged,
    path: PathBuf,
}

impl StagedRecord {
    pub fn commit(self) -> Result<(), ApiError> {
        let path = self.path;
        self.staged.commit().map_err(|e| ApiError::new(Kind::Internal, format!("writing {}: {e}", path.display())))
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Seconds since the epoch of an RFC 3339 time (0 for Docker's zero time or garbage).
pub fn unix_seconds(t: &str) -> f64 {
    humantime::parse_rfc3339_weak(t).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
