//! berth-shim's wire protocol, shared by the shim binary and the engine that talks to it.
//!
//! The shim lives in a container's bundle directory (`config.json`, `rootfs/`) and adds:
//! `shim.json` (its [`Config`], written by the engine), `shim.sock` (its control socket),
//! `exit.json` (the [`ExitStatus`], written atomically when the container has exited) and
//! `shim.log` (its own diagnostics).
//!
//! `berth-shim <bundle>` starts for a bundle; `berth-shim --standby [<exec-root>]` starts before
//! there is one (berthd keeps one waiting, so a container's start does not wait for a process
//! to be spawned and loaded): it reads the bundle's path as one line on stdin (end of input: it
//! exits), then goes on as if started for it, with `shim.log` as its stderr. The exec root is
//! only there to tell whose standby it is in `ps`.
//!
//! On its stdout the shim writes one [`Reply`] line once the container is created (or failed to
//! be), then closes it. Each connection to `shim.sock` sends one [`Request`] line and reads one
//! [`Reply`] line; `attach`, `exec` and `wait` then go on: output comes as frames (an 8-byte
//! header: stream, three zero bytes, big-endian length; then the payload), input is raw bytes,
//! and a shutdown of the writing half is end of input.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod logfile;

pub const CONFIG: &str = "shim.json";
pub const SOCKET: &str = "shim.sock";
pub const EXIT: &str = "exit.json";
pub const LOG: &str = "shim.log";
/// The flag that starts a shim in standby (see the module's documentation).
pub const STANDBY: &str = "--standby";

/// Frame stream ids: Docker's (stdout 1, stderr 2) plus the end of an exec.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The payload is an [`ExitStatus`] as JSON; nothing follows it.
pub const EXIT_FRAME: u8 = 3;

/// Requests are a line of JSON; anything longer is refused.
pub const MAX_REQUEST: usize = 1 << 20;

/// glibc's per-thread malloc cache holds freed chunks as if in use, so `malloc_trim` cannot give
/// their pages back and a shim's heap stays fragmented after it created its container (~90 KiB of
/// its private memory). The shim is single-threaded and allocates rarely: it runs without the cache.
/// Tunables are read only at process start, so whoever starts the shim sets this.
pub const GLIBC_TUNABLES: &str = "glibc.malloc.tcache_count=0";

/// The `GLIBC_TUNABLES` value to start the shim with, keeping any the caller already has.
pub fn glibc_tunables(existing: Option<&str>) -> String {
    match existing {
        Some(e) if !e.is_empty() => format!("{e}:{GLIBC_TUNABLES}"),
        _ => GLIBC_TUNABLES.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    /// berth-runtime's state root.
    pub runtime_root: PathBuf,
    /// The log; rotated to `<path>.1` … when it would pass `log_max_size` (0: never).
    /// None: the output is not logged (Docker's `none` logging driver).
    pub log_path: Option<PathBuf>,
    pub log_max_size: u64,
    pub log_max_file: u32,
    /// `json-file` or Docker's `local` format.
    #[serde(default)]
    pub log_format: logfile::Format,
    /// Rotated files are gzipped (`<path>.N.gz`).
    #[serde(default)]
    pub log_compress: bool,
    pub tty: bool,
    /// Keep a stdin open for attach clients (`OpenStdin`).
    pub stdin: bool,
    /// Close the container's stdin when the first attached client ends its input.
    pub stdin_once: bool,
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Let the created container run its program.
    Start,
    /// Stream the container's output (and feed its stdin).
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Kill {
        signal: i32,
        all: bool,
    },
    /// Resize the container's terminal, or an exec's (by its pid).
    Resize {
        exec_pid: Option<i32>,
        rows: u16,
        cols: u16,
    },
    /// Run a process in the container; the connection carries its stdio, then an exit frame.
    Exec {
        process: Box<oci_spec::runtime::Process>,
        stdin: bool,
    },
    /// Answered with the [`ExitStatus`] (as `Reply::exit`) once the container has exited.
    Wait,
    /// Healthcheck probes of the container on this connection, kept open: after the ok reply,
    /// each [`ProbeRun`] line from the client schedules one run of `process`, which the shim
    /// kills at `timeout_ms`; each run is answered with one [`ProbeResult`] line. One
    /// connection for all of a container's probes, and one line each way per probe: the
    /// engine is woken once per probe.
    Probe {
        process: Box<oci_spec::runtime::Process>,
        timeout_ms: u64,
    },
}

/// Client → shim on a probe connection: run the probe `in_ms` from now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRun {
    pub in_ms: u64,
}

/// Shim → client on a probe connection: how one run went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeResult {
    /// RFC 3339, when the probe was started and when it ended.
    pub start: String,
    pub end: String,
    /// None: it was killed without an exit status to report, or never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The first [`MAX_PROBE_OUTPUT`] bytes of its stdout and stderr, as they came.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// There was more output than that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Killed at its timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Not run: the container is paused (a frozen container cannot run a probe).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// It could not be started: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The output of a probe that is kept (Docker keeps 4 KiB).
pub const MAX_PROBE_OUTPUT: usize = 4096;

/// What kind of failure, so the engine can answer with Docker's status and exit codes: the
/// runtime's own classification.
pub use berth_runtime::Kind as ErrorKind;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply { ok: true, ..Default::default() }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply { ok: false, kind: Some(kind), message: message.into(), ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// RFC 3339 with nanoseconds.
    pub finished_at: String,
    #[serde(default)]
    pub oom_killed: bool,
}

/// The 8-byte header in front of each output frame.
pub fn frame_header(stream: u8, len: usize) -> [u8; 8] {
    let n = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [stream, 0, 0, 0, n[0], n[1], n[2], n[3]]
}

/// Split the header of a frame: (stream, payload length).
pub fn parse_header(h: &[u8; 8]) -> (u8, usize) {
    (h[0], u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunables_keep_the_callers() {
        assert_eq!(glibc_tunables(None), "glibc.malloc.tcache_count=0");
        assert_eq!(glibc_tunables(Some("")), "glibc.malloc.tcache_count=0");
        assert_eq!(glibc_tunables(Some("glibc.malloc.check=3")), "glibc.malloc.check=3:glibc.malloc.tcache_count=0");
    }

    #[test]
    fn header_round_trips() {
        let h = frame_header(STDERR, 70_000);
        assert_eq!(h, [2, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(parse_header(&h), (STDERR, 70_000));
    }

    #[test]
    fn requests_are_tagged_lines() {
        let r: Request = serde_json::from_str(r#"{"op":"kill","signal":15,"all":false}"#).unwrap();
        assert!(matches!(r, Request::Kill { signal: 15, all: false }));
        assert_eq!(serde_json::to_string(&Request::Start).unwrap(), r#"{"op":"start"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }
}
