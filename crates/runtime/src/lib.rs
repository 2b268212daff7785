//! berth-runtime: turns an OCI runtime spec and a bundle into a running container, and manages
//! it (start, state, kill, pause, exec, delete) with state that survives across invocations.
//!
//! Containers are created by cloning straight into their namespaces from a single-threaded
//! process; the child builds the root filesystem, takes on the user, capabilities and seccomp
//! filter, and execs the program. No runtime binary is re-executed inside the container.

pub mod cgroups;
pub mod console;
mod container;
pub mod error;
pub mod hooks;
mod init;
pub mod lsm;
pub mod namespaces;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
mod sync;
pub mod sys;
pub mod sysctl;

pub use container::{BundleConfig, Container, CreateOptions, DEFAULT_CGROUP_PARENT, ExecOptions, SubCgroup, load_spec, validate_id};
pub use error::{Error, Kind, Result};
pub use state::Status;
