//! The state a container leaves on disk between runtime invocations, and process identity.
//!
//! A pid alone can be reused once the container exits; the pair (pid, start time in clock ticks
//! since boot, field 22 of /proc/PID/stat) cannot, so every check of "is it still running" uses both.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

/// The status of a container, as the OCI runtime spec names them (plus `paused`, as runc does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// A process identified so that a reused pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    pub fn of(pid: i32) -> Result<Self> {
        let stat = read_stat(pid).ok_or_else(|| Error::State { id: pid.to_string(), reason: format!("process {pid} vanished") })?;
        Ok(ProcessId { pid, start_time: stat.start_time })
    }

    /// Alive and still the same process (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        matches!(read_stat(self.pid), Some(s) if s.start_time == self.start_time && s.state != 'Z' && s.state != 'X')
    }

    /// Signal it only if it is still this process (a pidfd closes the race with pid reuse).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let gone = || Error::State { id: self.pid.to_string(), reason: format!("process {} is gone", self.pid) };
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            return Err(gone());
        }
        // SAFETY: the kernel just returned this fd; we own it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !self.is_alive() {
            return Err(gone());
        }
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo and no flags.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal as i32, 0usize, 0u32) };
        nix::errno::Errno::result(rc).map(drop).map_err(|e| Error::Sys { context: format!("sending {signal} to {}", self.pid), source: e })
    }
}

pub(crate) struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parse /proc/PID/stat; the command name may hold spaces and parentheses, so split at the last ')'.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    Some(ProcStat { state: fields.first()?.chars().next()?, start_time: fields.get(19)?.parse().ok()? })
}

/// What `create` records for later invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub init: ProcessId,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    pub owner: String,
    pub cgroup_path: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Without a mount namespace, the container's mounts stack on the rootfs in the runtime's
    /// own table: the id of the mount that was there before them, down to which delete unmounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mounts_over: Option<u64>,
    /// The bundle's config.json exactly as it was at create (what hooks, exec and delete use).
    #[serde(rename = "config")]
    pub raw_config: Box<serde_json::value::RawValue>,
    /// `raw_config` parsed, on first use: kill, start and delete need only a few fields, and
    /// parsing a whole spec (Docker's seccomp profile is most of it) costs more than they do.
    #[serde(skip)]
    pub(crate) config: OnceLock<oci_spec::runtime::Spec>,
}

/// The fields of a config that start and delete need.
#[derive(Deserialize)]
struct Hooked {
    hooks: Option<oci_spec::runtime::Hooks>,
    annotations: Option<HashMap<String, String>>,
}

impl State {
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    pub fn load(root: &Path, id: &str) -> Result<State> {
        let path = Self::dir(root, id).join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id.to_string())),
            Err(e) => return Err(Error::io("reading state", path)(e)),
        };
        let bad = |e: serde_json::Error| Error::State { id: id.to_string(), reason: format!("{}: {e}", path.display()) };
        let state: State = serde_json::from_slice(&data).map_err(bad)?;
        Ok(state)
    }

    fn bad_config(&self, e: serde_json::Error) -> Error {
        Error::State { id: self.id.clone(), reason: format!("its config: {e}") }
    }

    /// The spec the container was created from.
    pub fn config(&self) -> Result<&oci_spec::runtime::Spec> {
        if let Some(c) = self.config.get() {
            return Ok(c);
        }
        let spec = serde_json::from_str(self.raw_config.get()).map_err(|e| self.bad_config(e))?;
        Ok(self.config.get_or_init(|| spec))
    }

    /// The spec's hooks, without parsing the rest of it.
    pub fn hooks(&self) -> Result<oci_spec::runtime::Hooks> {
        if let Some(c) = self.config.get() {
            return Ok(c.hooks().clone().unwrap_or_default());
        }
        let h: Hooked = serde_json::from_str(self.raw_config.get()).map_err(|e| self.bad_config(e))?;
        Ok(h.hooks.unwrap_or_default())
    }

    /// The spec's annotations, without parsing the rest of it.
    pub fn spec_annotations(&self) -> HashMap<String, String> {
        if let Some(c) = self.config.get() {
            return c.annotations().clone().unwrap_or_default();
        }
        serde_json::from_str::<Hooked>(self.raw_config.get()).ok().and_then(|h| h.annotations).unwrap_or_default()
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let path = Self::dir(root, &self.id).join(STATE_FILE);
        let data = serde_json::to_vec(self).map_err(|e| Error::State { id: self.id.clone(), reason: e.to_string() })?;
        // The state of processes, which no machine crash leaves alive: atomic, not durable.
        berth_atomic::replace_file(&path, &data, 0o600).map_err(Error::io("writing state", path))
    }
}

/// Current time as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 98765);
    }

    #[test]
    fn own_process_is_alive_and_a_different_start_time_is_not() {
        let me = ProcessId::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(!ProcessId { start_time: me.start_time + 1, ..me }.is_alive());
    }

    #[test]
    fn now_is_rfc3339_with_nanoseconds() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z') && s.len() == "2026-01-01T00:00:00.000000000Z".len(), "{s}");
        let t = humantime::parse_rfc3339(&s).unwrap();
        assert!(std::time::SystemTime::now().duration_since(t).unwrap() < std::time::Duration::from_secs(5));
    }
}
