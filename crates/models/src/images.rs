//! Images: the list's summaries, removals and prunes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /images/json` entries (API 1.50's shape; older versions get `VirtualSize` added).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageSummary {
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: u64,
    /// -1: not computed (dockerd computes it for `system df` only).
    pub shared_size: i64,
    pub labels: BTreeMap<String, String>,
    /// -1: not computed.
    pub containers: i64,
}

/// One entry of `DELETE /images/{name}`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct PruneResponse {
    /// `null` when nothing was removed, as dockerd writes it.
    pub images_deleted: Option<Vec<DeleteItem>>,
    pub space_reclaimed: u64,
}

/// `GET /images/{name}/json` (API 1.50's shape; older versions get `VirtualSize`,
/// `Container`/`ContainerConfig` and the container-config fields of `Config` added).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub docker_version: String,
    pub author: String,
    /// The image's config as the OCI image specification has it: only the fields that are set.
    pub config: serde_json::Value,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: u64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: ImageMetadata,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct GraphDriver {
    pub name: String,
    pub data: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub typ: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageMetadata {
    pub last_tag_time: String,
}

/// One entry of `GET /images/{name}/history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HistoryItem {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    /// `null` but on the image's own entry.
    pub tags: Option<Vec<String>>,
    pub size: u64,
    pub comment: String,
}

/// One entry of `GET /images/search`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SearchResult {
    pub description: String,
    pub is_official: bool,
    /// Always false since Docker Hub dropped automated builds; still written.
    pub is_automated: bool,
    pub name: String,
    pub star_count: i64,
}
