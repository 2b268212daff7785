//! The image model: Docker schema2 and OCI manifests, manifest lists / indexes with platform
//! selection, Docker's image config (our own struct: oci-spec drops Docker-only fields), diffIDs
//! and chainIDs. A config is always kept as the raw bytes it came in; the image ID is their digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image config is not valid JSON: {0}")]
    BadConfig(serde_json::Error),
    #[error("manifest is not valid JSON: {0}")]
    BadManifest(serde_json::Error),
    #[error("unsupported media type {0:?}")]
    MediaType(String),
    #[error("the config lists {config} layers but the manifest has {manifest}")]
    LayerCount { config: usize, manifest: usize },
    #[error("no manifest for platform {0} in the index")]
    NoPlatform(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

impl Platform {
    /// This host, in Go's names (what registries use).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let variant = (architecture == "arm64").then(|| "v8".to_string());
        Platform { architecture: architecture.into(), os: "linux".into(), variant, os_version: None }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// A Docker schema2 or OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Docker manifest list or OCI index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ImageError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(ImageError::BadManifest)?;
        match m.media_type.as_deref() {
            None | Some(MEDIA_DOCKER_MANIFEST) | Some(MEDIA_OCI_MANIFEST) => {}
            Some(other) => return Err(ImageError::MediaType(other.to_string())),
        }
        for l in &m.layers {
            if !is_layer_media_type(&l.media_type) {
                return Err(ImageError::MediaType(l.media_type.clone()));
            }
        }
        Ok(m)
    }
}

pub fn is_layer_media_type(t: &str) -> bool {
    [MEDIA_DOCKER_LAYER, MEDIA_DOCKER_LAYER_GZIP, MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_ZSTD].contains(&t)
        || t == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
}

impl Index {
    pub fn parse(bytes: &[u8]) -> Result<Index, ImageError> {
        serde_json::from_slice(bytes).map_err(ImageError::BadManifest)
    }

    /// The manifest for `want`: os and architecture must match; a wanted variant must match
    /// when the entry names one (as containerd's default matcher does).
    pub fn select(&self, want: &Platform) -> Result<&Descriptor, ImageError> {
        self.manifests
            .iter()
            .filter(|d| d.platform.as_ref().is_some_and(|p| p.os == want.os && p.architecture == want.architecture))
            .find(|d| match (&want.variant, d.platform.as_ref().and_then(|p| p.variant.as_ref())) {
                (Some(w), Some(v)) => w == v,
                _ => true,
            })
            .ok_or_else(|| ImageError::NoPlatform(want.to_string()))
    }
}

/// Docker's health check as images carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The container defaults an image carries (the `config` object of an image config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A Docker (or OCI) image config. Unknown fields are ignored here and kept in the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
        let c: ImageConfig = serde_json::from_slice(bytes).map_err(ImageError::BadConfig)?;
        Ok(c)
    }
}

/// chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let ids = chain_ids(&[d('a'), d('b'), d('c')]);
        assert_eq!(ids[0], d('a'));
        assert_eq!(ids[1], Digest::of(format!("{} {}", d('a'), d('b')).as_bytes()));
        assert_eq!(ids[2], Digest::of(format!("{} {}", ids[1], d('c')).as_bytes()));
    }

    #[test]
    fn keeps_docker_only_fields_of_the_config() {
        let raw = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000}, "OnBuild": ["RUN true"], "Shell": ["/bin/sh", "-c"], "ArgsEscaped": true, "StopSignal": "SIGQUIT"},
            "rootfs": {"type": "layers", "diff_ids": [d('a').to_string()]},
            "history": [{"created_by": "x", "empty_layer": true}],
            "docker_version": "28.0", "container_config": {"Hostname": "abc"}
        });
        let c = ImageConfig::parse(raw.to_string().as_bytes()).unwrap();
        assert_eq!(c.config.healthcheck.as_ref().unwrap().test, ["CMD", "true"]);
        assert_eq!(c.config.on_build.as_deref(), Some(&["RUN true".to_string()][..]));
        assert_eq!(c.config.shell.as_ref().unwrap().len(), 2);
        assert_eq!(c.config.stop_signal, "SIGQUIT");
        assert!(c.history[0].empty_layer);
        assert!(ImageConfig::parse(b"not json").is_err());
    }

    #[test]
    fn selects_the_platform_from_an_index() {
        let idx = Index::parse(
            serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [
                {"mediaType": MEDIA_OCI_MANIFEST, "digest": d('1').to_string(), "size": 1, "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
                {"mediaType": MEDIA_OCI_MANIFEST, "digest": d('2').to_string(), "size": 1, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": MEDIA_OCI_MANIFEST, "digest": d('3').to_string(), "size": 1, "platform": {"architecture": "amd64", "os": "linux"}}
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let amd64 = Platform { architecture: "amd64".into(), os: "linux".into(), ..Default::default() };
        assert_eq!(idx.select(&amd64).unwrap().digest, d('3'));
        let arm64 = Platform { architecture: "arm64".into(), os: "linux".into(), variant: Some("v8".into()), os_version: None };
        assert_eq!(idx.select(&arm64).unwrap().digest, d('2'));
        let s390 = Platform { architecture: "s390x".into(), os: "linux".into(), ..Default::default() };
        assert!(idx.select(&s390).unwrap_err().to_string().contains("linux/s390x"));
    }

    #[test]
    fn manifests_with_unknown_layer_types_are_refused() {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_DOCKER_CONFIG, "digest": d('c').to_string(), "size": 10},
            "layers": [{"mediaType": "application/x-evil", "digest": d('a').to_string(), "size": 1}]});
        assert!(matches!(Manifest::parse(m.to_string().as_bytes()), Err(ImageError::MediaType(_))));
        assert!(Manifest::parse(b"{").is_err());
    }
}
