//! Builds: the build cache's records (`/system/df`, `/build/prune`) and the `aux` a legacy
//! build's stream ends with. The build's own output is [`crate::messages::JsonMessage`]s.

use serde::{Deserialize, Serialize};

/// One record of the build cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct BuildCache {
    #[serde(rename = "ID")]
    pub id: String,
    pub parents: Option<Vec<String>>,
    /// `regular`, `source.local`, `exec.cachemount`, …
    #[serde(rename = "Type")]
    pub typ: String,
    pub description: String,
    pub in_use: bool,
    pub shared: bool,
    pub size: i64,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub usage_count: i64,
}

/// `POST /build/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct BuildPruneResponse {
    pub caches_deleted: Option<Vec<String>>,
    pub space_reclaimed: u64,
}

/// `{"aux": {"ID": "sha256:…"}}`: the image a build made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BuildResult {
    #[serde(rename = "ID")]
    pub id: String,
}
