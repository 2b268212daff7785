//! berth-registry: pulls images from and pushes them to registries that speak the OCI
//! distribution API (Docker Hub, `docker-registry`, any OCI registry), into and out of the
//! store. Authentication (basic, bearer tokens), TLS with per-registry certificates, insecure and
//! loopback registries over plain HTTP, verified streaming transfers. See docs/registry.md.

pub mod auth;
pub mod client;
pub mod error;
pub mod progress;
pub mod pull;
pub mod push;
pub mod search;

pub use auth::Credentials;
pub use client::{Options, Registry, Session};
pub use error::{RegistryError, Result};
pub use progress::Progress;
pub use pull::{Pulled, Resolved};
pub use push::Pushed;
#[cfg(test)]
mod tests;
