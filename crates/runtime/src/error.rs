//! The runtime's error type: each variant names what went wrong and the value involved.

use std::path::PathBuf;

/// What kind of failure an error is, so callers map it once (exit codes, HTTP status). The shim
/// reports it to the engine as is (snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NotFound,
    Conflict,
    InvalidArgument,
    /// The container's program could not be found (Docker's exit code 127).
    ExecNotFound,
    /// The container's program exists but cannot be run (Docker's exit code 126).
    ExecPermission,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid container id {0:?}: use letters, digits, '_', '-' and '.', not starting with '.'")]
    InvalidId(String),
    /// `message` is runc's wording for the action in this status (scripts match on it).
    #[error("{message}")]
    WrongState { id: String, status: String, message: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("unsupported config: {0}")]
    Unsupported(String),
    #[error("reading config {path}: {source}")]
    Config { path: PathBuf, source: oci_spec::OciSpecError },
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("hook {path}: {reason}")]
    Hook { path: PathBuf, reason: String },
    /// An error the container's init process reported while setting itself up.
    #[error("{message}")]
    Init { kind: Kind, message: String },
    #[error("state of container {id}: {reason}")]
    State { id: String, reason: String },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::NotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) | Error::WrongState { .. } => Kind::Conflict,
            Error::InvalidId(_) | Error::InvalidConfig(_) | Error::Unsupported(_) | Error::Config { .. } | Error::Seccomp(_) => {
                Kind::InvalidArgument
            }
            Error::Init { kind, .. } => *kind,
            _ => Kind::Internal,
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { context, path, source }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let context = context.into();
        move |source| Error::Sys { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
