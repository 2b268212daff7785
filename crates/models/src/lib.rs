//! berth-models: the Docker Engine API's models, shared by berth-api's routes, the engine and
//! the CLI. Plain serde types, no HTTP; [`decode`] reads request bodies by Go's rules, as dockerd
//! does. See docs/api-models.md for why these are berth's own and not generated stubs.

pub mod build;
pub mod containers;
pub mod decode;
pub mod distribution;
pub mod images;
pub mod messages;
pub mod networks;
pub mod stats;
pub mod system;
pub mod volumes;
