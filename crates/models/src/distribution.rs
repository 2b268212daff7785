//! Registries: `GET /distribution/{name}/json`, the descriptors and platforms of manifests, and
//! the `aux` record a push ends with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An OCI content descriptor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// An OCI platform (in an index's manifests, and in `DistributionInspect`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// `GET /distribution/{name}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DistributionInspect {
    pub descriptor: Descriptor,
    pub platforms: Vec<Platform>,
}

/// The `aux` of a push's last message, which the docker CLI prints as
/// `TAG: digest: sha256:… size: N`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct PushResult {
    pub tag: String,
    pub digest: String,
    pub size: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_entry_reads_and_writes_with_ocis_keys() {
        let raw = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ab","size":7,"platform":{"architecture":"arm64","os":"linux","variant":"v8","os.version":"1"}}"#;
        let d: Descriptor = serde_json::from_str(raw).unwrap();
        let p = d.platform.clone().unwrap();
        assert_eq!((p.architecture.as_str(), p.variant.as_deref(), p.os_version.as_deref()), ("arm64", Some("v8"), Some("1")));
        let back: serde_json::Value = serde_json::to_value(&d).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(raw).unwrap());
    }
}
