//! Address management: each network's subnet, gateway and optional range, and the addresses
//! handed out in it. A new network's subnet, when not given, is the first of Docker's default
//! pools (172.17–31.0.0/16, then 192.168.0.0/16 in /20s) that overlaps neither a host route nor
//! another network. Addresses are handed out in turn after the last one given (so one just
//! released is not given again at once, as Docker's serial allocation does) and never twice
//! while held. Everything is kept in one JSON file, replaced atomically: durably when a network
//! is added or removed, and without fsyncs for addresses (they belong to running containers,
//! which do not outlive the machine either), so starting a container costs no fsync.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("network {0} not found")]
    UnknownNetwork(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid pool request: Pool overlaps with other one on this address space ({subnet} overlaps {with})")]
    Overlap { subnet: Ipv4Net, with: String },
    #[error("no gateway {gateway} in subnet {subnet}")]
    GatewayOutside { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutside { range: Ipv4Net, subnet: Ipv4Net },
    #[error("subnet {0} is too small for containers (at least /30)")]
    TooSmall(Ipv4Net),
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoFreeSubnet,
    #[error("no available IPv4 addresses on network {0}")]
    Exhausted(String),
    #[error("Address already in use: {addr} on network {network}")]
    InUse { addr: Ipv4Addr, network: String },
    #[error("invalid address {addr}: it does not belong to any of this network's subnets ({subnet})")]
    NotInSubnet { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("error while removing network {0}: it has active endpoints")]
    HasEndpoints(String),
    #[error("{context} {path}: {message}")]
    Io { context: &'static str, path: PathBuf, message: String },
}

type Result<T> = std::result::Result<T, IpamError>;

/// One network's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Where container addresses come from (`--ip-range`); the whole subnet when None.
    pub range: Option<Ipv4Net>,
    /// Address → who holds it (a container's ID).
    #[serde(default)]
    pub allocated: BTreeMap<Ipv4Addr, String>,
    /// The last address handed out; the next search starts after it.
    #[serde(default)]
    last: Option<Ipv4Addr>,
}

impl Pool {
    /// The addresses containers may get, in order: the range (or subnet) without its network
    /// and broadcast addresses and without the gateway.
    fn usable(&self) -> (u32, u32) {
        let net = self.range.unwrap_or(self.subnet);
        let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
        let (sfirst, slast) = (u32::from(self.subnet.network()), u32::from(self.subnet.broadcast()));
        (first.max(sfirst + 1), last.min(slast - 1))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    networks: BTreeMap<String, Pool>,
}

const VERSION: u32 = 1;

/// Docker's default address pools: 172.17.0.0/16 to 172.31.0.0/16, then 192.168.0.0/16 in /20s.
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("a /16")).collect();
    out.extend((0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("a /20")));
    out
}

pub struct Ipam {
    path: PathBuf,
    state: Mutex<State>,
}

impl Ipam {
    /// Open (or start) the state kept at `path`.
    pub fn open(path: &Path) -> Result<Ipam> {
        let state = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| IpamError::Io {
                context: "reading",
                path: path.to_path_buf(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(IpamError::Io { context: "reading", path: path.to_path_buf(), message: e.to_string() }),
        };
        Ok(Ipam { path: path.to_path_buf(), state: Mutex::new(state) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `f` to a copy, write it, then keep it: a failed write changes nothing.
    fn change<T>(&self, durable: bool, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let mut next = State { version: VERSION, networks: st.networks.clone() };
        let out = f(&mut next)?;
        let data = serde_json::to_vec(&next).map_err(|e| IpamError::Io {
            context: "encoding",
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let written =
            if durable { berth_atomic::write_file(&self.path, &data, 0o600) } else { berth_atomic::replace_file(&self.path, &data, 0o600) };
        written.map_err(|e| IpamError::Io { context: "writing", path: self.path.clone(), message: e.to_string() })?;
        *st = next;
        Ok(out)
    }

    /// Add the network `name`: `subnet` as given (checked), else the first default pool free of
    /// `routes` (the host's) and of every other network; the gateway is the first address
    /// unless given.
    pub fn add_network(
        &self,
        name: &str,
        subnet: Option<Ipv4Net>,
        gateway: Option<Ipv4Addr>,
        range: Option<Ipv4Net>,
        routes: &[Ipv4Net],
    ) -> Result<Pool> {
        self.change(true, |st| {
            if st.networks.contains_key(name) {
                return Err(IpamError::Exists(name.to_string()));
            }
            let taken = |net: &Ipv4Net| -> Option<String> {
                st.networks
                    .iter()
                    .find(|(_, p)| overlaps(&p.subnet, net))
                    .map(|(n, p)| format!("network {n} ({})", p.subnet))
                    .or_else(|| routes.iter().find(|r| overlaps(r, net)).map(|r| format!("the host's route to {r}")))
            };
            let subnet = match subnet {
                Some(s) => {
                    let s = s.trunc();
                    if let Some(with) = taken(&s) {
                        return Err(IpamError::Overlap { subnet: s, with });
                    }
                    s
                }
                None => default_pools().into_iter().find(|p| taken(p).is_none()).ok_or(IpamError::NoFreeSubnet)?,
            };
            if subnet.prefix_len() > 30 {
                return Err(IpamError::TooSmall(subnet));
            }
            let gateway = match gateway {
                Some(g) if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() => {
                    return Err(IpamError::GatewayOutside { gateway: g, subnet });
                }
                Some(g) => g,
                None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
            };
            if let Some(r) = range
                && !subnet.contains(&r.trunc())
            {
                return Err(IpamError::RangeOutside { range: r, subnet });
            }
            let pool = Pool { subnet, gateway, range: range.map(|r| r.trunc()), allocated: BTreeMap::new(), last: None };
            st.networks.insert(name.to_string(), pool.clone());
            Ok(pool)
        })
    }

    /// Remove `name`; refused while an address in it is held.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        self.change(true, |st| {
            let pool = st.networks.get(name).ok_or_else(|| IpamError::UnknownNetwork(name.to_string()))?;
            if !pool.allocated.is_empty() {
                return Err(IpamError::HasEndpoints(name.to_string()));
            }
            st.networks.remove(name);
            Ok(())
        })
    }

    pub fn network(&self, name: &str) -> Option<Pool> {
        self.lock().networks.get(name).cloned()
    }

    pub fn networks(&self) -> BTreeMap<String, Pool> {
        self.lock().networks.clone()
    }

    /// An address on `network` for `owner`: `wanted` (`--ip`) if it is in the subnet and free,
    /// else the next free one after the last handed out.
    pub fn allocate(&self, network: &str, owner: &str, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        self.change(false, |st| {
            let pool = st.networks.get_mut(network).ok_or_else(|| IpamError::UnknownNetwork(network.to_string()))?;
            let addr = match wanted {
                Some(a) => {
                    if !pool.subnet.contains(&a) || a == pool.subnet.network() || a == pool.subnet.broadcast() {
                        return Err(IpamError::NotInSubnet { addr: a, subnet: pool.subnet });
                    }
                    if a == pool.gateway || pool.allocated.contains_key(&a) {
                        return Err(IpamError::InUse { addr: a, network: network.to_string() });
                    }
                    a
                }
                None => {
                    let (first, last) = pool.usable();
                    if first > last {
                        return Err(IpamError::Exhausted(network.to_string()));
                    }
                    let start = pool.last.map(u32::from).filter(|l| (first..=last).contains(l)).map(|l| l + 1).unwrap_or(first);
                    let n = u64::from(last - first) + 1;
                    (0..n)
                        .map(|i| first + ((u64::from(start - first) + i) % n) as u32)
                        .map(Ipv4Addr::from)
                        .find(|a| *a != pool.gateway && !pool.allocated.contains_key(a))
                        .ok_or_else(|| IpamError::Exhausted(network.to_string()))?
                }
            };
            pool.allocated.insert(addr, owner.to_string());
            // An address asked for does not move where the next search starts (as Docker's).
            if wanted.is_none() {
                pool.last = Some(addr);
            }
            Ok(addr)
        })
    }

    /// Give back `addr` on `network` (nothing to do when it is not held).
    pub fn release(&self, network: &str, addr: Ipv4Addr) -> Result<()> {
        self.change(false, |st| {
            let pool = st.networks.get_mut(network).ok_or_else(|| IpamError::UnknownNetwork(network.to_string()))?;
            pool.allocated.remove(&addr);
            Ok(())
        })
    }

    /// Give back every address `owner` holds, on every network (a container removed, or found
    /// gone at start); returns how many.
    pub fn release_owner(&self, owner: &str) -> Result<usize> {
        self.change(false, |st| {
            let mut n = 0;
            for pool in st.networks.values_mut() {
                let before = pool.allocated.len();
                pool.allocated.retain(|_, o| o != owner);
                n += before - pool.allocated.len();
            }
            Ok(n)
        })
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ipam() -> (tempfile::TempDir, Ipam) {
        let t = tempfile::tempdir().unwrap();
        let i = Ipam::open(&t.path().join("ipam.json")).unwrap();
        (t, i)
    }

    #[test]
    fn subnets_avoid_the_hosts_routes_and_each_other() {
        let (_t, i) = ipam();
        // Docker's bridge has 172.17/16 here, a LAN route 172.18.5/24.
        let routes = [net("172.17.0.0/16"), net("172.18.5.0/24"), net("10.0.0.0/8")];
        let a = i.add_network("a", None, None, None, &routes).unwrap();
        assert_eq!((a.subnet, a.gateway), (net("172.19.0.0/16"), ip("172.19.0.1")));
        let b = i.add_network("b", None, None, None, &routes).unwrap();
        assert_eq!(b.subnet, net("172.20.0.0/16"));
        assert!(matches!(i.add_network("c", Some(net("172.19.3.0/24")), None, None, &routes), Err(IpamError::Overlap { .. })));
        assert!(matches!(i.add_network("c", Some(net("10.1.0.0/16")), None, None, &routes), Err(IpamError::Overlap { .. })));
        assert_eq!(i.add_network("a", None, None, None, &routes).unwrap_err(), IpamError::Exists("a".into()));
        let c = i.add_network("c", Some(net("10.200.0.5/24")), Some(ip("10.200.0.254")), None, &[]).unwrap();
        assert_eq!((c.subnet, c.gateway), (net("10.200.0.0/24"), ip("10.200.0.254")), "the subnet's own address, the gateway asked for");
        assert!(matches!(
            i.add_network("d", Some(net("10.201.0.0/24")), Some(ip("10.9.9.9")), None, &[]),
            Err(IpamError::GatewayOutside { .. })
        ));
        assert!(matches!(
            i.add_network("d", Some(net("10.201.0.0/24")), None, Some(net("10.202.0.0/28")), &[]),
            Err(IpamError::RangeOutside { .. })
        ));
        assert!(matches!(i.add_network("d", Some(net("10.201.0.0/31")), None, None, &[]), Err(IpamError::TooSmall(_))));
        // Every default pool taken: a clear error.
        let all: Vec<Ipv4Net> = vec![net("0.0.0.0/1"), net("128.0.0.0/1")];
        assert_eq!(i.add_network("e", None, None, None, &all).unwrap_err(), IpamError::NoFreeSubnet);
    }

    #[test]
    fn addresses_are_handed_out_in_turn_never_twice_and_released() {
        let (_t, i) = ipam();
        i.add_network("n", Some(net("10.5.0.0/29")), None, None, &[]).unwrap(); // .1 gateway, .2–.6 usable
        let a = i.allocate("n", "c1", None).unwrap();
        let b = i.allocate("n", "c2", None).unwrap();
        assert_eq!((a, b), (ip("10.5.0.2"), ip("10.5.0.3")));
        i.release("n", a).unwrap();
        // Not .2 again at once: after the last handed out.
        assert_eq!(i.allocate("n", "c3", None).unwrap(), ip("10.5.0.4"));
        assert_eq!(i.allocate("n", "c4", Some(ip("10.5.0.6"))).unwrap(), ip("10.5.0.6"), "--ip");
        assert!(matches!(i.allocate("n", "c5", Some(ip("10.5.0.6"))), Err(IpamError::InUse { .. })));
        assert!(matches!(i.allocate("n", "c5", Some(ip("10.5.0.1"))), Err(IpamError::InUse { .. })), "the gateway");
        assert!(matches!(i.allocate("n", "c5", Some(ip("10.6.0.1"))), Err(IpamError::NotInSubnet { .. })));
        assert!(matches!(i.allocate("n", "c5", Some(ip("10.5.0.7"))), Err(IpamError::NotInSubnet { .. })), "broadcast");
        assert_eq!(i.allocate("n", "c5", None).unwrap(), ip("10.5.0.5"));
        assert_eq!(i.allocate("n", "c6", None).unwrap(), ip("10.5.0.2"), "wrapped around to the one released");
        assert_eq!(i.allocate("n", "c7", None).unwrap_err(), IpamError::Exhausted("n".into()));
        assert_eq!(i.release_owner("c2").unwrap(), 1);
        assert_eq!(i.allocate("n", "c7", None).unwrap(), ip("10.5.0.3"));
        assert_eq!(i.allocate("nope", "c", None).unwrap_err(), IpamError::UnknownNetwork("nope".into()));
    }

    #[test]
    fn an_ip_range_limits_what_containers_get() {
        let (_t, i) = ipam();
        i.add_network("r", Some(net("10.7.0.0/16")), None, Some(net("10.7.9.0/30")), &[]).unwrap();
        let got: Vec<Ipv4Addr> = (0..4).map(|n| i.allocate("r", &format!("c{n}"), None).unwrap()).collect();
        assert_eq!(got, [ip("10.7.9.0"), ip("10.7.9.1"), ip("10.7.9.2"), ip("10.7.9.3")]);
        assert!(matches!(i.allocate("r", "c9", None), Err(IpamError::Exhausted(_))));
        // --ip may still pick from the rest of the subnet, as Docker allows.
        assert_eq!(i.allocate("r", "c9", Some(ip("10.7.200.1"))).unwrap(), ip("10.7.200.1"));
    }

    #[test]
    fn state_survives_a_restart_and_networks_in_use_stay() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("ipam.json");
        let i = Ipam::open(&path).unwrap();
        i.add_network("n", Some(net("10.8.0.0/24")), None, None, &[]).unwrap();
        let a = i.allocate("n", "c1", None).unwrap();
        assert_eq!(i.remove_network("n").unwrap_err(), IpamError::HasEndpoints("n".into()));
        drop(i);
        let i = Ipam::open(&path).unwrap();
        assert_eq!(i.network("n").unwrap().allocated.get(&a).map(String::as_str), Some("c1"));
        assert_ne!(i.allocate("n", "c2", None).unwrap(), a, "never handed out twice, across a restart");
        i.release_owner("c1").unwrap();
        i.release_owner("c2").unwrap();
        i.remove_network("n").unwrap();
        assert!(Ipam::open(&path).unwrap().networks().is_empty());
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let i = Ipam::open(&t.path().join("gone/ipam.json")).unwrap();
        assert!(matches!(i.add_network("n", None, None, None, &[]), Err(IpamError::Io { .. })));
        assert!(i.networks().is_empty());
    }

    #[test]
    fn default_pools_are_dockers() {
        let p = default_pools();
        assert_eq!(
            (p[0], p[14], p[15], p[30]),
            (net("172.17.0.0/16"), net("172.31.0.0/16"), net("192.168.0.0/20"), net("192.168.240.0/20"))
        );
    }
}
