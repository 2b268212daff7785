//! A container's endpoints: at its start (created, not yet running) each of its networks gets a
//! veth into its network namespace with an address from the network's pool, and its published
//! ports are held and forwarded; at its exit all of it is given back. Either every endpoint is
//! made or none is left.

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};

use berth_models::containers::PortBinding;
use berth_models::networks::EndpointSettings;
use berth_network::nat::{Proto, Published};
use berth_network::plumbing::{Endpoint, host_if_name, mac_for, mac_string};

use super::*;

/// What a start asks of the networks.
pub(crate) struct Want {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub pid: i32,
    /// The container's networks, its primary one (which has the default route and the
    /// published ports) first.
    pub networks: Vec<(String, EndpointSettings)>,
    pub port_bindings: BTreeMap<String, Option<Vec<PortBinding>>>,
    pub publish_all: bool,
    pub exposed: Vec<String>,
    /// Its `--dns` servers: the resolver's upstreams for it.
    pub dns: Vec<Ipv4Addr>,
}

/// What a start made: each network's endpoint as inspect shows it, and the ports.
#[derive(Default)]
pub(crate) struct Attached {
    pub endpoints: Vec<(String, EndpointSettings)>,
    pub ports: BTreeMap<String, Option<Vec<PortBinding>>>,
}

/// `80`, `80/tcp`, `53/udp` → (port, proto).
pub(crate) fn parse_port_key(key: &str) -> Result<(u16, Proto), ApiError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => return Err(ApiError::not_implemented("publishing sctp ports")),
        p => return Err(bad(format!("invalid proto: {p}"))),
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad(format!("invalid port specification: \"{key}\"")))?;
    Ok((port, proto))
}

/// A host port as asked: none (any free one), one, or a range to take the first free of.
fn host_ports(spec: &str) -> Result<Option<(u16, u16)>, ApiError> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "0" {
        return Ok(None);
    }
    let invalid = || bad(format!("invalid port specification: \"{spec}\""));
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (a, b): (u16, u16) = (a.parse().map_err(|_| invalid())?, b.parse().map_err(|_| invalid())?);
    if a == 0 || b < a {
        return Err(invalid());
    }
    Ok(Some((a, b)))
}

/// Bind (not listen on) `ip:port` so nothing else takes it while the container has it: the
/// rule sends the traffic to the container before any socket sees it. Port 0: the kernel
/// picks a free one.
fn hold(proto: Proto, ip: Ipv4Addr, port: u16) -> nix::Result<(u16, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, socket};
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(ip, port)))?;
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd())?.port();
    Ok((port, fd))
}

impl Held {
    /// `ip:port` (any address when unspecified) held by `socket`, forwarded to `to:to_port`.
    fn new(proto: Proto, ip: Ipv4Addr, port: u16, to: Ipv4Addr, to_port: u16, socket: OwnedFd) -> Held {
        let rule =
            Published { proto, host_ip: (!ip.is_unspecified()).then_some(ip), host_port: port, container_ip: to, container_port: to_port };
        Held { rule, _socket: socket }
    }
}

impl Networks {
    /// Give the created container `w.pid` its endpoints and ports. Blocking.
    pub fn attach_all(&self, w: &Want) -> Result<Attached, ApiError> {
        let mut out = Attached::default();
        let made = self.attach_inner(w, &mut out);
        if let Err(e) = made {
            let eps: Vec<String> = out.endpoints.iter().map(|(_, ep)| ep.endpoint_id.clone()).collect();
            self.release(&w.id, &eps);
            return Err(e);
        }
        Ok(out)
    }

    fn attach_inner(&self, w: &Want, out: &mut Attached) -> Result<(), ApiError> {
        for (i, (name, cfg)) in w.networks.iter().enumerate() {
            let net = self.find(name)?;
            if !net.is_bridge() {
                continue;
            }
            let primary = i == 0;
            let ep = self.attach_endpoint(w, &net, cfg, i, primary, out)?;
            if primary {
                let addr = parse_ipv4(&ep.ip_address)?;
                self.publish(w, addr, out)?;
            }
        }
        Ok(())
    }

    /// Make one endpoint: an address, the link (as `eth<index>`; with the default route when
    /// `primary`), its names for the resolver. Pushed to `out` before the link is made, so a
    /// failure gives the address back too.
    pub(crate) fn attach_endpoint(
        &self,
        w: &Want,
        net: &NetRecord,
        cfg: &EndpointSettings,
        index: usize,
        primary: bool,
        out: &mut Attached,
    ) -> Result<EndpointSettings, ApiError> {
        self.ensure_up(net)?;
        let wanted = cfg.ipam_config.as_ref().and_then(|c| c.ipv4_address.as_deref()).filter(|a| !a.is_empty());
        let wanted = wanted.map(parse_ipv4).transpose()?;
        let addr = self.ipam.allocate(&net.name, &w.id, wanted).map_err(ipam_err)?;
        let pool = self.ipam.network(&net.name).ok_or_else(|| ApiError::new(Kind::Internal, "network pool gone"))?;
        let mut ep = cfg.clone();
        ep.network_id = net.id.clone();
        ep.endpoint_id = crate::names::random_id()?;
        ep.gateway = if net.internal { String::new() } else { pool.gateway.to_string() };
        ep.ip_address = addr.to_string();
        ep.ip_prefix_len = pool.subnet.prefix_len();
        let mac = mac_for(addr);
        ep.mac_address = Some(mac_string(&mac));
        if net.name != DEFAULT {
            let mut names = vec![w.name.clone()];
            names.extend(cfg.aliases.iter().flatten().cloned());
            names.push(w.id[..12.min(w.id.len())].to_string());
            if !w.hostname.is_empty() && !names.contains(&w.hostname) {
                names.push(w.hostname.clone());
            }
            names.dedup();
            ep.dns_names = Some(names);
        }
        out.endpoints.push((net.name.clone(), ep.clone()));
        let link = Endpoint {
            host_if: host_if_name(&ep.endpoint_id),
            bridge: net.device.clone(),
            ifname: format!("eth{index}"),
            addr,
            prefix: pool.subnet.prefix_len(),
            gateway: (primary && !net.internal).then_some(pool.gateway),
            mac,
            mtu: net.mtu_or_default(),
        };
        self.plumbing.attach(w.pid, &link).map_err(plumbing_err)?;
        self.dns_add(net, &w.id, addr, ep.dns_names.as_deref().unwrap_or(&[]), &w.dns);
        Ok(ep)
    }

    /// Hold and forward the container's published ports to `addr`.
    fn publish(&self, w: &Want, addr: Ipv4Addr, out: &mut Attached) -> Result<(), ApiError> {
        let mut asked: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
        for (key, bindings) in &w.port_bindings {
            let list = bindings.clone().unwrap_or_default();
            if !list.is_empty() {
                asked.insert(key.clone(), list);
            }
        }
        for key in &w.exposed {
            out.ports.entry(canonical_key(key)?).or_insert(None);
            if w.publish_all && !asked.contains_key(key) {
                asked.insert(key.clone(), vec![PortBinding::default()]);
            }
        }
        let mut held = Vec::new();
        for (key, bindings) in asked {
            let (container_port, proto) = parse_port_key(&key)?;
            let mut shown = Vec::new();
            for b in bindings {
                let ip: Ipv4Addr = match b.host_ip.trim() {
                    "" => Ipv4Addr::UNSPECIFIED,
                    s => s.parse().map_err(|_| {
                        if s.contains(':') {
                            ApiError::not_implemented("publishing ports on IPv6 addresses")
                        } else {
                            bad(format!("invalid IP address: {s}"))
                        }
                    })?,
                };
                let failed = |port: String| {
                    ApiError::new(
                        Kind::Internal,
                        format!(
                            "driver failed programming external connectivity on endpoint {} ({}): Bind for {ip}:{port} failed: port is already allocated",
                            w.name, w.id
                        ),
                    )
                };
                let (port, socket) = match host_ports(&b.host_port)? {
                    None => hold(proto, ip, 0).map_err(|e| ApiError::new(Kind::Internal, format!("no free host port on {ip}: {e}")))?,
                    Some((a, z)) => (a..=z)
                        .find_map(|p| hold(proto, ip, p).ok())
                        .ok_or_else(|| failed(if a == z { a.to_string() } else { format!("{a}-{z}") }))?,
                };
                held.push(Held::new(proto, ip, port, addr, container_port, socket));
                shown.push(PortBinding { host_ip: ip.to_string(), host_port: port.to_string() });
            }
            out.ports.insert(canonical_key(&key)?, Some(shown));
        }
        if held.is_empty() {
            return Ok(());
        }
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).insert(w.id.clone(), held);
        self.apply_rules()
    }

    /// Give back what container `id` holds: its addresses, names and ports at once, and its
    /// links (by endpoint ID) off the caller's path: deleting a network device waits for the
    /// kernel's RCU grace periods (10–50 ms measured here), which an exit must not wait for.
    /// (A link's name is new at each start, so one still being deleted never clashes.)
    /// Idempotent; blocking.
    pub fn release(&self, id: &str, endpoints: &[String]) {
        if let Err(e) = self.ipam.release_owner(id) {
            tracing::warn!("releasing the addresses of {id}: {e}");
        }
        self.dns_remove(id, None);
        let had_ports = self.ports.lock().unwrap_or_else(|p| p.into_inner()).remove(id).is_some();
        if had_ports && let Err(e) = self.apply_rules() {
            tracing::warn!("removing the published ports of {id}: {}", e.message);
        }
        let links: Vec<String> = endpoints.iter().filter(|e| !e.is_empty()).map(|e| host_if_name(e)).collect();
        if !links.is_empty() {
            self.unlink_later(links);
        }
    }

    /// Take container `id` off one network it runs on (disconnect). Blocking.
    pub fn release_one(&self, id: &str, net: &NetRecord, endpoint_id: &str, addr: Option<Ipv4Addr>) {
        if let Err(e) = self.plumbing.detach(&host_if_name(endpoint_id)) {
            tracing::warn!("removing the link of {id}: {e}");
        }
        if let Some(a) = addr
            && let Err(e) = self.ipam.release(&net.name, a)
        {
            tracing::warn!("releasing {a} of {id}: {e}");
        }
        self.dns_remove(id, Some(&net.name));
    }

    /// A running container found at berthd's start: hold its ports again (the links and
    /// addresses outlived berthd). Blocking.
    pub fn readopt(&self, id: &str, ports: &BTreeMap<String, Option<Vec<PortBinding>>>, addr: Option<Ipv4Addr>) {
        let Some(addr) = addr else { return };
        let mut held = Vec::new();
        for (key, bindings) in ports {
            let Ok((container_port, proto)) = parse_port_key(key) else { continue };
            for b in bindings.iter().flatten() {
                let ip: Ipv4Addr = b.host_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
                let Ok(port) = b.host_port.parse::<u16>() else { continue };
                match hold(proto, ip, port) {
                    Ok((_, socket)) => held.push(Held::new(proto, ip, port, addr, container_port, socket)),
                    Err(e) => tracing::warn!("holding port {ip}:{port} of {id} again: {e}"),
                }
            }
        }
        if !held.is_empty() {
            self.ports.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), held);
        }
    }
}

/// Forget what a run got on its networks (addresses, endpoints, ports), keeping what was asked.
pub(crate) fn clear_live(r: &mut crate::record::Record) {
    for ep in r.networks.values_mut() {
        ep.endpoint_id.clear();
        ep.gateway.clear();
        ep.ip_address.clear();
        ep.ip_prefix_len = 0;
        ep.mac_address = None;
        ep.dns_names = None;
    }
    r.ports.clear();
}

/// `80` → `80/tcp`, as inspect shows keys.
fn canonical_key(key: &str) -> Result<String, ApiError> {
    let (port, proto) = parse_port_key(key)?;
    Ok(format!(
        "{port}/{}",
        match proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    ))
}

/// Docker's /etc/hosts for a container with addresses: the base, `--add-host` lines, then the
/// container's own address with its hostname.
pub(crate) fn hosts_with(base: &str, addr: Option<&str>, hostname: &str) -> String {
    let mut s = base.to_string();
    if let Some(a) = addr.filter(|a| !a.is_empty()) {
        s.push_str(&format!("{a}\t{hostname}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_keys_and_host_ports_parse_as_dockers() {
        assert_eq!(parse_port_key("80").unwrap(), (80, Proto::Tcp));
        assert_eq!(parse_port_key("53/udp").unwrap(), (53, Proto::Udp));
        assert!(parse_port_key("0/tcp").is_err());
        assert!(parse_port_key("x/tcp").is_err());
        assert!(parse_port_key("80/icmp").is_err());
        assert_eq!(host_ports("").unwrap(), None);
        assert_eq!(host_ports("0").unwrap(), None);
        assert_eq!(host_ports("8080").unwrap(), Some((8080, 8080)));
        assert_eq!(host_ports("8000-8010").unwrap(), Some((8000, 8010)));
        assert!(host_ports("8010-8000").is_err());
        assert!(host_ports("99999").is_err());
        assert_eq!(canonical_key("80").unwrap(), "80/tcp");
    }

    #[test]
    fn a_held_port_cannot_be_held_twice() {
        let (port, _a) = hold(Proto::Tcp, Ipv4Addr::LOCALHOST, 0).unwrap();
        assert!(port > 0);
        assert!(hold(Proto::Tcp, Ipv4Addr::LOCALHOST, port).is_err());
        // The other protocol's port of the same number is another port.
        let _ = hold(Proto::Udp, Ipv4Addr::LOCALHOST, port);
    }

    #[test]
    fn hosts_name_the_container_at_its_address() {
        assert_eq!(hosts_with("127.0.0.1\tlocalhost\n", Some("172.17.0.2"), "abc"), "127.0.0.1\tlocalhost\n172.17.0.2\tabc\n");
        assert_eq!(hosts_with("x\n", None, "abc"), "x\n");
    }
}
