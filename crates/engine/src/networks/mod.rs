//! Networks: Docker's `bridge`, `host` and `none`, and user-defined bridge networks — their
//! records, their bridges and berth's nftables table — and each container's endpoints on them
//! (see [`endpoints`]). The kernel is reached through berth-network's [`Plumbing`] seam.
//!
//! The default bridge is made when a container first needs it, and every bridge and the table go
//! when berthd stops with no container running (they come back at the next start that needs
//! them): a host where berthd is not in use keeps nothing of it.

mod api;
pub(crate) mod endpoints;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use berth_api::{ApiError, Kind};
use berth_network::ipam::{Ipam, IpamError};
use berth_network::nat;
use berth_network::plumbing::{BridgeDev, Plumbing};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The default bridge network's name, as Docker's.
pub const DEFAULT: &str = "bridge";
/// The bridge device of the default network unless configured (dockerd's `docker0`).
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Docker's MTU for bridges.
const DEFAULT_MTU: u32 = 1500;
/// Docker's option names for a bridge network.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// How berthd's networking is set up (dockerd's `--bridge` and `--bip`).
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// The default bridge's device (`berth0` when empty).
    pub bridge: String,
    /// The default bridge's gateway and subnet (`192.168.200.1/24`); chosen from the pools when
    /// None.
    pub bip: Option<String>,
    pub mtu: Option<u32>,
}

/// A network as berthd keeps it (`<data-root>/network/networks.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetRecord {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    pub created: String,
    /// The bridge device (bridge driver only).
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The IPAM configuration as asked (shown in inspect as given).
    #[serde(default)]
    pub ipam_config: Vec<berth_models::networks::IpamConfig>,
}

impl NetRecord {
    pub fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }

    /// One of the three networks every daemon has.
    pub fn predefined(&self) -> bool {
        matches!(self.name.as_str(), DEFAULT | "host" | "none")
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    networks: Vec<NetRecord>,
}

/// A published port held for a running container: the host's socket keeps the port from
/// being taken (and a second container from publishing it); the rule sends it on.
pub(crate) struct Held {
    pub rule: nat::Published,
    pub(super) _socket: std::os::fd::OwnedFd,
}

pub(crate) struct Networks {
    path: PathBuf,
    pub ipam: Ipam,
    nets: RwLock<BTreeMap<String, NetRecord>>,
    pub plumbing: Arc<dyn Plumbing>,
    cfg: NetConfig,
    /// berthd's nftables table (`berth`, or named after a default bridge of another name).
    table: String,
    /// Bridges made (or found) since berthd started, and whether the table was applied.
    up: Mutex<Live>,
    /// Published ports by container.
    ports: Mutex<HashMap<String, Vec<Held>>>,
    /// User networks' names, and the resolver serving each (by network name).
    names: Arc<berth_network::dns::Names>,
    resolvers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    runtime: Option<tokio::runtime::Handle>,
    /// Links being deleted off the exits' path (see [`Networks::release`]).
    unlinking: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Live {
    bridges: std::collections::HashSet<String>,
    table_applied: bool,
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, msg)
}

pub(crate) fn ipam_err(e: IpamError) -> ApiError {
    let kind = match &e {
        IpamError::UnknownNetwork(_) => Kind::NotFound,
        IpamError::Exists(_) | IpamError::InUse { .. } | IpamError::HasEndpoints(_) => Kind::Conflict,
        IpamError::Io { .. } => Kind::Internal,
        _ => Kind::InvalidArgument,
    };
    ApiError::new(kind, e.to_string())
}

fn plumbing_err(e: berth_network::plumbing::PlumbingError) -> ApiError {
    ApiError::new(Kind::Internal, e.to_string())
}

/// Hold the host-wide lock under which a subnet is chosen and its bridge given its address:
/// two berthds (or tests) starting at once must not pick the same free pool.
pub(crate) fn host_lock() -> Option<nix::fcntl::Flock<std::fs::File>> {
    let _ = std::fs::create_dir_all("/run/lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/run/lock/berth-network.lock").ok()?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()
}

impl Networks {
    pub fn open(dir: &Path, cfg: NetConfig, plumbing: Arc<dyn Plumbing>) -> Result<Networks, ApiError> {
        std::fs::create_dir_all(dir).map_err(|e| ApiError::new(Kind::Internal, format!("creating {}: {e}", dir.display())))?;
        let ipam = Ipam::open(&dir.join("ipam.json")).map_err(ipam_err)?;
        let path = dir.join("networks.json");
        let saved: Saved = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ApiError::new(Kind::Internal, format!("reading {}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(ApiError::new(Kind::Internal, format!("reading {}: {e}", path.display()))),
        };
        let bridge = if cfg.bridge.is_empty() { DEFAULT_BRIDGE.to_string() } else { cfg.bridge.clone() };
        if !valid_device(&bridge) {
            return Err(bad(format!("invalid bridge name {bridge:?}")));
        }
        let table = if bridge == DEFAULT_BRIDGE { "berth".to_string() } else { bridge.clone() };
        let mut nets: BTreeMap<String, NetRecord> = saved.networks.into_iter().map(|n| (n.id.clone(), n)).collect();
        let n = Networks {
            path,
            ipam,
            nets: RwLock::new(BTreeMap::new()),
            plumbing,
            cfg: NetConfig { bridge: bridge.clone(), ..cfg },
            table,
            up: Mutex::new(Live::default()),
            ports: Mutex::new(HashMap::new()),
            names: Default::default(),
            resolvers: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
            unlinking: Mutex::new(Vec::new()),
        };
        // The three every daemon has; the default bridge follows the configured device.
        for (name, driver) in [(DEFAULT, "bridge"), ("host", "host"), ("none", "null")] {
            if let Some(existing) = nets.values_mut().find(|r| r.name == name) {
                if name == DEFAULT {
                    existing.device = bridge.clone();
                    existing.mtu = n.cfg.mtu.unwrap_or(DEFAULT_MTU);
                }
                continue;
            }
            let id = crate::names::random_id()?;
            let mut options = BTreeMap::new();
            if name == DEFAULT {
                for (k, v) in [
                    ("com.docker.network.bridge.default_bridge", "true"),
                    ("com.docker.network.bridge.enable_icc", "true"),
                    ("com.docker.network.bridge.enable_ip_masquerade", "true"),
                    ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
                    (OPT_BRIDGE_NAME, bridge.as_str()),
                    (OPT_MTU, "1500"),
                ] {
                    options.insert(k.to_string(), v.to_string());
                }
            }
            nets.insert(
                id.clone(),
                NetRecord {
                    id,
                    name: name.into(),
                    driver: driver.into(),
                    created: crate::record::now(),
                    device: if name == DEFAULT { bridge.clone() } else { String::new() },
                    internal: false,
                    attachable: false,
                    mtu: if name == DEFAULT { n.cfg.mtu.unwrap_or(DEFAULT_MTU) } else { 0 },
                    options,
                    labels: BTreeMap::new(),
                    ipam_config: Vec::new(),
                },
            );
        }
        *n.nets.write().unwrap_or_else(|p| p.into_inner()) = nets;
        n.save()?;
        Ok(n)
    }

    fn save(&self) -> Result<(), ApiError> {
        let saved = Saved { networks: self.nets.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect() };
        let data = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        berth_atomic::write_file(&self.path, &data, 0o600)
            .map_err(|e| ApiError::new(Kind::Internal, format!("writing {}: {e}", self.path.display())))
    }

    pub fn all(&self) -> Vec<NetRecord> {
        self.nets.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// A network by full ID, name, or unique ID prefix (Docker's order).
    pub fn find(&self, key: &str) -> Result<NetRecord, ApiError> {
        let nets = self.nets.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nets.get(key) {
            return Ok(n.clone());
        }
        if let Some(n) = nets.values().find(|n| n.name == key) {
            return Ok(n.clone());
        }
        let by_prefix: Vec<_> = nets.values().filter(|n| !key.is_empty() && n.id.starts_with(key)).collect();
        match by_prefix.as_slice() {
            [n] => Ok((*n).clone()),
            [] => Err(ApiError::new(Kind::NotFound, format!("network {key} not found"))),
            _ => Err(bad(format!("network {key} is ambiguous ({} matches found based on ID prefix)", by_prefix.len()))),
        }
    }

    pub(crate) fn insert(&self, rec: NetRecord) -> Result<(), ApiError> {
        self.nets.write().unwrap_or_else(|p| p.into_inner()).insert(rec.id.clone(), rec.clone());
        self.save().inspect_err(|_| {
            self.nets.write().unwrap_or_else(|p| p.into_inner()).remove(&rec.id);
        })
    }

    pub(crate) fn delete(&self, id: &str) -> Result<(), ApiError> {
        let old = self.nets.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.save().inspect_err(|_| {
            if let Some(o) = old {
                self.nets.write().unwrap_or_else(|p| p.into_inner()).insert(o.id.clone(), o);
            }
        })
    }

    /// Make sure network `rec`'s bridge exists with its gateway address (its subnet chosen now
    /// for the default bridge's first use), and the rules know it. Blocking.
    pub fn ensure_up(&self, rec: &NetRecord) -> Result<(), ApiError> {
        if !rec.is_bridge() {
            return Ok(());
        }
        if self.up.lock().unwrap_or_else(|p| p.into_inner()).bridges.contains(&rec.device) {
            return Ok(());
        }
        let _host = host_lock();
        let pool = match self.ipam.network(&rec.name) {
            // The default bridge's subnet, chosen from the pools at an earlier start, may have
            // been taken meanwhile (its bridge goes when berthd stops idle): chosen again then.
            Some(p)
                if rec.name == DEFAULT
                    && self.cfg.bip.is_none()
                    && p.allocated.is_empty()
                    && berth_network::routes::host_except(&rec.device)
                        .iter()
                        .any(|r| r.contains(&p.subnet.network()) || p.subnet.contains(&r.network())) =>
            {
                self.ipam.remove_network(DEFAULT).map_err(ipam_err)?;
                self.ipam.add_network(DEFAULT, None, None, None, &berth_network::routes::host()).map_err(ipam_err)?
            }
            Some(p) => p,
            None if rec.name == DEFAULT => {
                let (subnet, gateway) = match &self.cfg.bip {
                    Some(bip) => {
                        let net: Ipv4Net = bip.parse().map_err(|_| bad(format!("invalid bip {bip:?}: a CIDR address is needed")))?;
                        (Some(net.trunc()), Some(net.addr()).filter(|a| *a != net.network()))
                    }
                    None => (None, None),
                };
                self.ipam.add_network(DEFAULT, subnet, gateway, None, &berth_network::routes::host()).map_err(ipam_err)?
            }
            None => return Err(ApiError::new(Kind::Internal, format!("network {} has no address pool", rec.name))),
        };
        let dev =
            BridgeDev { name: rec.device.clone(), gateway: pool.gateway, prefix: pool.subnet.prefix_len(), mtu: rec.mtu_or_default() };
        self.plumbing.ensure_bridge(&dev).map_err(plumbing_err)?;
        self.up.lock().unwrap_or_else(|p| p.into_inner()).bridges.insert(rec.device.clone());
        if rec.name != DEFAULT {
            self.start_resolver(&rec.name, pool.gateway);
        }
        self.apply_rules()
    }

    /// Serve a user network's names on its gateway, port 53 (on the bridge just made).
    fn start_resolver(&self, network: &str, gateway: Ipv4Addr) {
        let Some(rt) = &self.runtime else { return };
        let sock = match std::net::UdpSocket::bind((gateway, 53)).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => s,
            Err(e) => return tracing::warn!("network {network}: no name resolution (binding {gateway}:53: {e})"),
        };
        let _guard = rt.enter();
        match tokio::net::UdpSocket::from_std(sock) {
            Ok(s) => {
                let task = rt.spawn(berth_network::dns::serve(s, network.to_string(), Arc::clone(&self.names)));
                if let Some(old) = self.resolvers.lock().unwrap_or_else(|p| p.into_inner()).insert(network.to_string(), task) {
                    old.abort();
                }
            }
            Err(e) => tracing::warn!("network {network}: no name resolution: {e}"),
        }
    }

    pub(crate) fn stop_resolver(&self, network: &str) {
        if let Some(t) = self.resolvers.lock().unwrap_or_else(|p| p.into_inner()).remove(network) {
            t.abort();
        }
        self.names.forget_network(network);
    }

    pub(crate) fn dns_add(&self, net: &NetRecord, owner: &str, addr: Ipv4Addr, names: &[String], upstreams: &[Ipv4Addr]) {
        if net.name != DEFAULT {
            self.names.add(&net.name, owner, addr, names, upstreams);
        }
    }

    pub(crate) fn dns_remove(&self, owner: &str, network: Option<&str>) {
        self.names.remove(owner, network);
    }

    /// The default bridge's gateway (`host-gateway`), the bridge made if it is not there yet.
    /// Blocking.
    pub fn host_gateway(&self) -> Result<Ipv4Addr, ApiError> {
        let default = self.find(DEFAULT)?;
        self.ensure_up(&default)?;
        self.ipam.network(DEFAULT).map(|p| p.gateway).ok_or_else(|| ApiError::new(Kind::Internal, "the default bridge has no pool"))
    }

    /// The resolver's address for a container whose primary network is `network` (None for the
    /// default bridge, which has none, as Docker's).
    pub fn resolver_for(&self, network: &str) -> Option<Ipv4Addr> {
        (network != DEFAULT).then(|| self.ipam.network(network).map(|p| p.gateway)).flatten()
    }

    /// Write berthd's whole table again from the bridges that are up and the ports held.
    /// Blocking.
    pub fn apply_rules(&self) -> Result<(), ApiError> {
        let bridges: Vec<nat::Bridge> = {
            let up = self.up.lock().unwrap_or_else(|p| p.into_inner());
            self.all()
                .iter()
                .filter(|n| n.is_bridge() && up.bridges.contains(&n.device))
                .filter_map(|n| {
                    self.ipam.network(&n.name).map(|p| nat::Bridge { device: n.device.clone(), subnet: p.subnet, internal: n.internal })
                })
                .collect()
        };
        let ports: Vec<nat::Published> =
            self.ports.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().map(|h| h.rule.clone()).collect();
        let text = nat::ruleset(&self.table, &bridges, &ports).map_err(|e| ApiError::new(Kind::Internal, e))?;
        self.plumbing.apply_rules(&text).map_err(plumbing_err)?;
        self.up.lock().unwrap_or_else(|p| p.into_inner()).table_applied = true;
        let devices: Vec<String> = bridges.iter().map(|b| b.device.clone()).collect();
        if let Err(e) = self.plumbing.foreign_forward(&self.table, &devices) {
            tracing::warn!("accepting berth's bridges in another engine's FORWARD chain: {e}");
        }
        Ok(())
    }

    /// Delete these links on a thread of their own.
    pub(crate) fn unlink_later(&self, links: Vec<String>) {
        let plumbing = Arc::clone(&self.plumbing);
        let mut pending = self.unlinking.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|t| !t.is_finished());
        let spawned = std::thread::Builder::new().name("berth-unlink".into()).spawn(move || {
            for l in links {
                if let Err(e) = plumbing.detach(&l) {
                    tracing::warn!("removing link {l}: {e}");
                }
            }
        });
        match spawned {
            Ok(t) => pending.push(t),
            Err(e) => tracing::warn!("deleting links: {e}"),
        }
    }

    /// Wait for the links being deleted (berthd stopping). Blocking.
    pub fn unlinked(&self) {
        let pending: Vec<_> = self.unlinking.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for t in pending {
            let _ = t.join();
        }
    }

    /// Keep berth's accepts in another engine's `FORWARD` chain in step with its policy (which
    /// may turn to drop after berthd's start: dockerd sets it when it starts). Blocking.
    pub fn sync_foreign(&self) {
        let devices: Vec<String> = {
            let up = self.up.lock().unwrap_or_else(|p| p.into_inner());
            if !up.table_applied {
                return;
            }
            up.bridges.iter().cloned().collect()
        };
        if let Err(e) = self.plumbing.foreign_forward(&self.table, &devices) {
            tracing::warn!("accepting berth's bridges in another engine's FORWARD chain: {e}");
        }
    }

    /// berthd stops with no container running: its bridges and table go (made again when
    /// needed). Blocking.
    pub fn teardown(&self) {
        self.unlinked();
        for (_, t) in self.resolvers.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            t.abort();
        }
        let mut up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        for b in up.bridges.drain() {
            if let Err(e) = self.plumbing.remove_bridge(&b) {
                tracing::warn!("removing bridge {b}: {e}");
            }
        }
        if up.table_applied {
            if let Err(e) = self.plumbing.foreign_forward(&self.table, &[]) {
                tracing::warn!("removing berth's rules from another engine's FORWARD chain: {e}");
            }
            match nat::teardown(&self.table) {
                Ok(t) => {
                    if let Err(e) = self.plumbing.apply_rules(&t) {
                        tracing::warn!("removing nftables table {}: {e}", self.table);
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
            up.table_applied = false;
        }
    }

    /// A network removed: its resolver, bridge and rules go. Blocking.
    pub fn take_down(&self, rec: &NetRecord) {
        self.stop_resolver(&rec.name);
        let was_up = self.up.lock().unwrap_or_else(|p| p.into_inner()).bridges.remove(&rec.device);
        if rec.is_bridge()
            && let Err(e) = self.plumbing.remove_bridge(&rec.device)
        {
            tracing::warn!("removing bridge {}: {e}", rec.device);
        }
        if was_up && let Err(e) = self.apply_rules() {
            tracing::warn!("network {}: {}", rec.name, e.message);
        }
    }
}

impl NetRecord {
    pub fn mtu_or_default(&self) -> u32 {
        if self.mtu == 0 { DEFAULT_MTU } else { self.mtu }
    }
}

/// What the kernel allows as an interface name.
pub fn valid_device(d: &str) -> bool {
    !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The address part of an `IPv4Address`-style string (`172.18.0.5` or `172.18.0.5/16`).
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, ApiError> {
    s.split('/').next().unwrap_or("").parse().map_err(|_| bad(format!("invalid IPv4 address: {s}")))
}

/// A [`Plumbing`] that records what it is asked in memory, for the engine's tests.
#[cfg(test)]
pub(crate) mod fake {
    use berth_network::plumbing::{BridgeDev, Endpoint, Plumbing, PlumbingError};
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Links {
        pub bridges: Mutex<Vec<String>>,
        /// Host ends of the links that exist.
        pub links: Mutex<Vec<Endpoint>>,
        pub rules: Mutex<Vec<String>>,
    }

    impl Plumbing for Links {
        fn ensure_bridge(&self, b: &BridgeDev) -> Result<(), PlumbingError> {
            let mut l = self.bridges.lock().unwrap();
            if !l.contains(&b.name) {
                l.push(b.name.clone());
            }
            Ok(())
        }
        fn remove_bridge(&self, name: &str) -> Result<(), PlumbingError> {
            self.bridges.lock().unwrap().retain(|b| b != name);
            Ok(())
        }
        fn attach(&self, _pid: i32, ep: &Endpoint) -> Result<(), PlumbingError> {
            if !self.bridges.lock().unwrap().contains(&ep.bridge) {
                return Err(PlumbingError::NoBridge(ep.bridge.clone()));
            }
            self.links.lock().unwrap().push(ep.clone());
            Ok(())
        }
        fn detach(&self, host_if: &str) -> Result<(), PlumbingError> {
            self.links.lock().unwrap().retain(|l| l.host_if != host_if);
            Ok(())
        }
        fn apply_rules(&self, batch: &str) -> Result<(), PlumbingError> {
            self.rules.lock().unwrap().push(batch.to_string());
            Ok(())
        }
        fn foreign_forward(&self, _table: &str, _devices: &[String]) -> Result<(), PlumbingError> {
            Ok(())
        }
    }
}
