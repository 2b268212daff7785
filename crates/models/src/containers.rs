//! Containers and execs: the request bodies as clients send them (`POST /containers/create`,
//! `POST /containers/{id}/exec`, `POST /exec/{id}/start`; every field may be missing or null),
//! and the replies berth builds typed (the list's summaries, create, wait, top, prune). Replies
//! write every field dockerd writes, `null` where it writes `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Docker's `StrSlice`: a list, or one string (for Cmd and Entrypoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StrSlice {
    One(String),
    Many(Vec<String>),
}

impl StrSlice {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(s) => vec![s],
            StrSlice::Many(v) => v,
        }
    }
}

/// The container's `Config` as clients send it (every field of the Engine API's
/// `ContainerConfig`). Every field may be missing or null.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: Option<String>,
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    /// `"80/tcp": {}`.
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub stdin_once: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StrSlice>,
    pub healthcheck: Option<HealthConfig>,
    pub args_escaped: Option<bool>,
    pub image: Option<String>,
    /// `"/data": {}`: anonymous volumes.
    pub volumes: Option<BTreeMap<String, Value>>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<StrSlice>,
    pub network_disabled: Option<bool>,
    /// Deprecated in 1.44 for the endpoint's own; still accepted.
    pub mac_address: Option<String>,
    pub on_build: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub shell: Option<Vec<String>>,
}

/// `Config.Healthcheck`: durations in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    pub test: Option<Vec<String>>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub retries: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogConfig {
    #[serde(rename = "Type", default)]
    pub typ: String,
    #[serde(rename = "Config", default)]
    pub config: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub auto_remove: Option<bool>,
    pub privileged: Option<bool>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub readonly_rootfs: Option<bool>,
    pub network_mode: Option<String>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    #[serde(rename = "UTSMode")]
    pub uts_mode: Option<String>,
    pub sysctls: Option<BTreeMap<String, String>>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub shm_size: Option<i64>,
    pub security_opt: Option<Vec<String>>,
    pub group_add: Option<Vec<String>>,
    pub init: Option<bool>,
    pub log_config: Option<LogConfig>,
    pub binds: Option<Vec<String>>,
    pub mounts: Option<Vec<Mount>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub dns: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub oom_score_adj: Option<i64>,
    pub cgroup_parent: Option<String>,
    pub cgroupns_mode: Option<String>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    // Resources (v1.41 `Resources`, flattened into HostConfig).
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_swappiness: Option<i64>,
    pub kernel_memory: Option<i64>,
    #[serde(rename = "KernelMemoryTCP")]
    pub kernel_memory_tcp: Option<i64>,
    pub oom_kill_disable: Option<bool>,
    pub cpu_shares: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_realtime_period: Option<i64>,
    pub cpu_realtime_runtime: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub blkio_weight_device: Option<Vec<WeightDevice>>,
    pub blkio_device_read_bps: Option<Vec<ThrottleDevice>>,
    pub blkio_device_write_bps: Option<Vec<ThrottleDevice>>,
    #[serde(rename = "BlkioDeviceReadIOps")]
    pub blkio_device_read_iops: Option<Vec<ThrottleDevice>>,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    pub blkio_device_write_iops: Option<Vec<ThrottleDevice>>,
    pub devices: Option<Vec<DeviceMapping>>,
    pub device_cgroup_rules: Option<Vec<String>>,
    pub device_requests: Option<Vec<DeviceRequest>>,
    pub cpu_count: Option<i64>,
    pub cpu_percent: Option<i64>,
    #[serde(rename = "IOMaximumIOps")]
    pub io_maximum_iops: Option<i64>,
    #[serde(rename = "IOMaximumBandwidth")]
    pub io_maximum_bandwidth: Option<i64>,
    // The rest of the API's HostConfig.
    #[serde(rename = "ContainerIDFile")]
    pub container_id_file: Option<String>,
    /// `"80/tcp": [{"HostIp": "", "HostPort": "8080"}]`.
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub restart_policy: Option<RestartPolicy>,
    pub volume_driver: Option<String>,
    pub volumes_from: Option<Vec<String>>,
    /// `[height, width]` of the terminal (1.42).
    pub console_size: Option<Vec<u32>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub cgroup: Option<String>,
    pub links: Option<Vec<String>>,
    pub publish_all_ports: Option<bool>,
    pub storage_opt: Option<BTreeMap<String, String>>,
    pub userns_mode: Option<String>,
    pub runtime: Option<String>,
    pub isolation: Option<String>,
}

/// A published port's host side.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

/// `--gpus` and other device requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceRequest {
    pub driver: Option<String>,
    pub count: Option<i64>,
    #[serde(rename = "DeviceIDs")]
    pub device_ids: Option<Vec<String>>,
    pub capabilities: Option<Vec<Vec<String>>>,
    pub options: Option<BTreeMap<String, String>>,
}

/// `HostConfig.Mounts[]` (`--mount`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    pub target: Option<String>,
    pub source: Option<String>,
    #[serde(rename = "Type")]
    pub typ: Option<String>,
    pub read_only: Option<bool>,
    pub consistency: Option<String>,
    pub bind_options: Option<BindOptions>,
    pub volume_options: Option<VolumeOptions>,
    pub tmpfs_options: Option<TmpfsOptions>,
    pub image_options: Option<ImageOptions>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeOptions {
    pub no_copy: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub driver_config: Option<DriverConfig>,
    pub subpath: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DriverConfig {
    pub name: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageOptions {
    pub subpath: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BindOptions {
    pub propagation: Option<String>,
    pub non_recursive: Option<bool>,
    pub create_mountpoint: Option<bool>,
    pub read_only_non_recursive: Option<bool>,
    pub read_only_force_recursive: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TmpfsOptions {
    pub size_bytes: Option<i64>,
    pub mode: Option<u32>,
    /// `[["noexec"], ["uid", "1000"]]` (1.46).
    pub options: Option<Vec<Vec<String>>>,
}

/// `--blkio-weight-device`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "PascalCase")]
pub struct WeightDevice {
    pub path: String,
    pub weight: u16,
}

/// `--device-read-bps` and its kin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "PascalCase")]
pub struct ThrottleDevice {
    pub path: String,
    pub rate: u64,
}

/// `--device`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

/// `POST /containers/create`: the container's config with `HostConfig` and `NetworkingConfig`
/// beside its fields. Decoded by hand so the config's own keys follow Go's rules too (serde's
/// `flatten` would match them exactly).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateBody {
    #[serde(flatten)]
    pub config: ContainerConfig,
    #[serde(rename = "HostConfig", default)]
    pub host_config: Option<HostConfig>,
    #[serde(rename = "NetworkingConfig", default)]
    pub networking_config: Option<crate::networks::NetworkingConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub detach_keys: Option<String>,
    pub tty: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub privileged: Option<bool>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// `[height, width]` of the exec's terminal (1.42).
    pub console_size: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecStartBody {
    pub detach: Option<bool>,
    pub tty: Option<bool>,
    /// `[height, width]` of the exec's terminal (1.42).
    pub console_size: Option<Vec<u16>>,
}

/// `POST /containers/create`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateResponse {
    pub id: String,
    pub warnings: Vec<String>,
}

/// `POST /containers/{id}/update`'s answer: Docker's warnings, null when there are none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateResponse {
    pub warnings: Option<Vec<String>>,
}

/// `POST /containers/{id}/exec`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct IdResponse {
    pub id: String,
}

/// `POST /containers/{id}/wait`'s answer; `Error` only when waiting failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitResponse {
    pub status_code: i64,
    /// `null` unless waiting or the container failed, as dockerd writes it.
    pub error: Option<WaitError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitError {
    pub message: String,
}

/// One entry of `GET /containers/{id}/changes`: `Kind` 0 changed, 1 added, 2 deleted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ChangeItem {
    pub path: String,
    pub kind: u8,
}

/// Go's `os.FileMode` type bits, as the archive endpoints' `mode` carries them.
pub mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;

    /// A Unix `st_mode` as Go's `FileMode`.
    pub fn from_unix(m: u32) -> u32 {
        let mut out = m & 0o777;
        out |= match m & 0o170000 {
            0o040000 => DIR,
            0o120000 => SYMLINK,
            0o010000 => NAMED_PIPE,
            0o140000 => SOCKET,
            0o020000 => DEVICE | CHAR_DEVICE,
            0o060000 => DEVICE,
            _ => 0,
        };
        for (bit, go) in [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)] {
            if m & bit != 0 {
                out |= go;
            }
        }
        out
    }
}

/// `GET /containers/{id}/top`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TopResponse {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// `POST /containers/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PruneResponse {
    /// `null` when nothing was removed, as dockerd writes it.
    pub containers_deleted: Option<Vec<String>>,
    pub space_reclaimed: u64,
}

/// A mount of a container, as inspect and the list show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MountPoint {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "Driver", default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(rename = "Mode")]
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    #[serde(rename = "Propagation")]
    pub propagation: String,
}

/// A published port in the list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Port {
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    #[serde(rename = "PublicPort", default, skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    #[serde(rename = "Type")]
    pub typ: String,
}

/// `GET /containers/json` entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<Port>,
    /// Only when sizes were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: SummaryHostConfig,
    pub network_settings: SummaryNetworkSettings,
    pub mounts: Vec<MountPoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SummaryHostConfig {
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SummaryNetworkSettings {
    pub networks: BTreeMap<String, crate::networks::EndpointSettings>,
}

impl<'de> Deserialize<'de> for CreateBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CreateBody, D::Error> {
        use serde::de::Error as _;
        let mut fields = serde_json::Map::<String, Value>::deserialize(d)?;
        // Go's rules for the two keys beside the config's own: an exact match, else any case.
        let mut take = |name: &str| {
            let key = fields.keys().find(|k| *k == name).or_else(|| fields.keys().find(|k| k.eq_ignore_ascii_case(name))).cloned();
            key.and_then(|k| fields.remove(&k)).filter(|v| !v.is_null())
        };
        let host_config =
            take("HostConfig").map(|v| HostConfig::deserialize(crate::decode::Go(v))).transpose().map_err(D::Error::custom)?;
        let networking_config = take("NetworkingConfig")
            .map(|v| crate::networks::NetworkingConfig::deserialize(crate::decode::Go(v)))
            .transpose()
            .map_err(D::Error::custom)?;
        let config = ContainerConfig::deserialize(crate::decode::Go(Value::Object(fields))).map_err(D::Error::custom)?;
        Ok(CreateBody { config, host_config, networking_config })
    }
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecInspect {
    pub can_remove: bool,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub detach_keys: String,
    /// `null` until it has ended.
    pub exit_code: Option<i64>,
    #[serde(rename = "ID")]
    pub id: String,
    pub open_stderr: bool,
    pub open_stdin: bool,
    pub open_stdout: bool,
    pub process_config: ExecProcessConfig,
    pub running: bool,
    pub pid: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ExecProcessConfig {
    pub arguments: Vec<String>,
    pub entrypoint: String,
    pub privileged: bool,
    pub tty: bool,
    pub user: String,
}

/// `GET /containers/{id}/json`. `Config` and `HostConfig` are the create request's own types
/// as stored, with Docker's inspect defaults filled in by the engine: dockerd writes every
/// host-config field (zero when unset) but omits a few empty config ones, so they are carried as
/// the JSON the engine finishes rather than a second, all-required copy of both types.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: ContainerState,
    pub image: String,
    pub resolv_conf_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub log_path: String,
    pub name: String,
    pub restart_count: i64,
    pub driver: String,
    pub platform: String,
    pub mount_label: String,
    pub process_label: String,
    pub app_armor_profile: String,
    /// `null` when the container has no execs.
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    pub host_config: Value,
    pub graph_driver: crate::images::GraphDriver,
    /// Only when sizes were asked for (`?size=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<u64>,
    pub mounts: Vec<MountPoint>,
    pub config: Value,
    pub network_settings: crate::networks::NetworkSettings,
}

/// `State` in container inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    /// Only for a container with a healthcheck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// `State.Health`: the status and the last probes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: i64,
    pub log: Vec<HealthcheckResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthcheckResult {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    pub output: String,
}

/// A path's stat in a container, sent base64-encoded in the `X-Docker-Container-Path-Stat`
/// header of `HEAD`/`GET /containers/{id}/archive`. Keys are lower-case, as dockerd writes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (not the kernel's `st_mode`: a directory is bit 31).
    pub mode: u32,
    /// RFC 3339 with nanoseconds.
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}
