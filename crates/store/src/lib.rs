//! berth-store: keeps images on disk and gives containers an overlay root.
//!
//! So far: content-addressed blobs written through verified ingests ([`content`]), safe layer
//! application with whiteouts ([`archive`]) and its reverse ([`diff`]), overlay and vfs
//! snapshots behind one trait ([`snapshot`]), the image model ([`image`]) and images on disk with
//! import, tags and shared layers ([`images`]), `docker save`/`load` in docker-archive and OCI
//! layout form ([`export`]), digests ([`digest`]) and Docker image references ([`reference`]).
//! See docs/store.md.

pub mod archive;
pub mod content;
pub mod diff;
pub mod digest;
pub mod export;
pub mod image;
pub mod images;
mod index;
pub mod inroot;
mod owner;
pub mod pack;
pub mod reference;
pub mod snapshot;
pub mod spread;
#[cfg(test)]
mod test_support;

pub use content::{ContentError, ContentStore, Writer};
pub use digest::{Digest, DigestError};
pub use reference::{Reference, ReferenceError};
