//! berth-store: keeps images on disk and gives containers an overlay root.
//!
//! So far: content-addressed blobs written through verified ingests ([`content`]), safe layer
//! application with whiteouts ([`archive`]), digests ([`digest`]) and Docker image references
//! ([`reference`]). Snapshots, layer diffs, the image model, metadata, garbage collection and
//! import/export come next (see docs/store.md).

pub mod archive;
pub mod content;
pub mod digest;
pub mod reference;

pub use content::{ContentError, ContentStore, Writer};
pub use digest::{Digest, DigestError};
pub use reference::{Reference, ReferenceError};
