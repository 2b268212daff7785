//! `/version`, `/info`, events and registry credentials, from the Engine API's specification.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `GET /events` message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventMessage {
    /// The old fields (`status`, `id`, `from`) Docker still sends for container and image
    /// events, which older clients read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// Registry credentials (`POST /auth`, and base64url JSON in `X-Registry-Auth`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub email: String,
    pub serveraddress: String,
    pub identitytoken: String,
    pub registrytoken: String,
}

/// `POST /auth`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthResponse {
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "IdentityToken", default, skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Component {
    pub name: String,
    pub version: String,
    pub details: serde_json::Value,
}

/// `GET /version`, in Docker's shape.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Version {
    #[serde(rename = "Platform")]
    pub platform: serde_json::Value,
    #[serde(rename = "Components")]
    pub components: Vec<Component>,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    #[serde(rename = "GitCommit")]
    pub git_commit: String,
    #[serde(rename = "GoVersion")]
    pub go_version: String,
    #[serde(rename = "Os")]
    pub os: String,
    #[serde(rename = "Arch")]
    pub arch: String,
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
    #[serde(rename = "BuildTime")]
    pub build_time: String,
}

/// `GET /info`: the fields clients read; more come with the engine.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub containers: u64,
    pub containers_running: u64,
    pub containers_paused: u64,
    pub containers_stopped: u64,
    pub images: u64,
    pub driver: String,
    pub docker_root_dir: String,
    pub name: String,
    pub server_version: String,
    pub operating_system: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    #[serde(rename = "NCPU")]
    pub ncpu: u64,
    pub mem_total: u64,
    pub kernel_version: String,
    pub cgroup_driver: String,
    pub cgroup_version: String,
    pub default_runtime: String,
    pub runtimes: serde_json::Value,
    pub security_options: Vec<String>,
    pub logging_driver: String,
    pub labels: Vec<String>,
    pub warnings: Vec<String>,
    pub driver_status: Vec<[String; 2]>,
    pub plugins: serde_json::Value,
    pub memory_limit: bool,
    pub swap_limit: bool,
    pub kernel_memory: bool,
    #[serde(rename = "KernelMemoryTCP")]
    pub kernel_memory_tcp: bool,
    pub cpu_cfs_period: bool,
    pub cpu_cfs_quota: bool,
    #[serde(rename = "CPUShares")]
    pub cpu_shares: bool,
    #[serde(rename = "CPUSet")]
    pub cpu_set: bool,
    pub pids_limit: bool,
    pub oom_kill_disable: bool,
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    pub bridge_nf_iptables: bool,
    pub bridge_nf_ip6tables: bool,
    pub debug: bool,
    #[serde(rename = "NFd")]
    pub nfd: u64,
    /// Docker reports its goroutines; berth, its threads.
    #[serde(rename = "NGoroutines")]
    pub ngoroutines: u64,
    pub system_time: String,
    pub n_events_listener: u64,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    pub index_server_address: String,
    pub registry_config: serde_json::Value,
    pub generic_resources: serde_json::Value,
    pub http_proxy: String,
    pub https_proxy: String,
    pub no_proxy: String,
    pub experimental_build: bool,
    pub swarm: serde_json::Value,
    pub live_restore_enabled: bool,
    pub isolation: String,
    pub init_binary: String,
    pub containerd_commit: serde_json::Value,
    pub runc_commit: serde_json::Value,
    pub init_commit: serde_json::Value,
}

/// `GET /system/df`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DataUsage {
    pub layers_size: u64,
    pub images: Vec<crate::images::ImageSummary>,
    pub containers: Vec<crate::containers::ContainerSummary>,
    pub volumes: Vec<crate::volumes::Volume>,
    pub build_cache: Vec<crate::build::BuildCache>,
}
