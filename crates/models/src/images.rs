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
