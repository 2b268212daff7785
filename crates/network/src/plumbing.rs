//! The seam between deciding a network's shape and making it in the kernel: bridges, a
//! container's veth with its address and route, and berth's nftables table. [`Kernel`] does it
//! with netlink and `nft`; the engine's tests use a recording fake, and the integration tests
//! check that the kernel agrees.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Mutex;

use crate::netlink::{Netlink, NetlinkError, Veth};

#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("opening the network namespace of process {pid}: {source}")]
    Namespace { pid: i32, source: std::io::Error },
    #[error("bridge {0} does not exist")]
    NoBridge(String),
    #[error("{context}: {message}")]
    Other { context: String, message: String },
}

type Result<T> = std::result::Result<T, PlumbingError>;

/// A bridge device and the gateway address it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeDev {
    pub name: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u32,
}

/// One container's link to one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host's end (`berth` + 10 hex digits).
    pub host_if: String,
    pub bridge: String,
    /// The container's end (`eth0`, `eth1` …).
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// The default route's gateway; None for no default route (an `--internal` network, or a
    /// second network).
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// Docker's MAC for an address: 02:42 and the address's four bytes (locally administered,
/// unique on the bridge as the address is).
pub fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The host end's name for an endpoint: `berth` and the first ten hex digits of its ID (15
/// characters, the kernel's limit), so it is recognisably ours, found from `inspect`'s
/// `EndpointID`, and new at each start (a link of the last run still being deleted never clashes).
pub fn host_if_name(endpoint_id: &str) -> String {
    let hex: String = endpoint_id.chars().filter(char::is_ascii_hexdigit).take(10).collect();
    format!("berth{hex:0>10}")
}

pub trait Plumbing: Send + Sync {
    /// Make the bridge (up, with its gateway address) unless it exists; idempotent.
    fn ensure_bridge(&self, b: &BridgeDev) -> Result<()>;
    /// Delete the bridge; one already gone is fine.
    fn remove_bridge(&self, name: &str) -> Result<()>;
    /// Give the network namespace of process `pid` its end of a new veth pair on the bridge,
    /// with its address, up, and the default route. Nothing is left behind when it fails.
    fn attach(&self, pid: i32, ep: &Endpoint) -> Result<()>;
    /// Delete a container's link by its host end; one already gone is fine.
    fn detach(&self, host_if: &str) -> Result<()>;
    /// Apply an nftables batch (one transaction).
    fn apply_rules(&self, batch: &str) -> Result<()>;
    /// Keep accept rules for `devices` (and none other of `table`'s) in another engine's
    /// `FORWARD` chain where its policy drops (see [`crate::nat::foreign_forward`]), through
    /// `iptables`, as that engine writes its chain.
    fn foreign_forward(&self, table: &str, devices: &[String]) -> Result<()>;
}

/// [`Plumbing`] in the kernel: rtnetlink for links, `nft -f -` for rules.
pub struct Kernel {
    /// A socket in berthd's own network namespace, made at first use.
    host: Mutex<Option<Netlink>>,
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel::new()
    }
}

impl Kernel {
    pub fn new() -> Kernel {
        Kernel { host: Mutex::new(None) }
    }

    fn with_host<T>(&self, f: impl FnOnce(&mut Netlink) -> Result<T>) -> Result<T> {
        let mut slot = self.host.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Netlink::open()?);
        }
        match slot.as_mut() {
            Some(nl) => f(nl),
            None => Err(PlumbingError::Other { context: "netlink".into(), message: "no socket".into() }),
        }
    }
}

fn sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| PlumbingError::Other { context: format!("writing {path}"), message: e.to_string() })
}

impl Plumbing for Kernel {
    fn ensure_bridge(&self, b: &BridgeDev) -> Result<()> {
        self.with_host(|nl| {
            let index = nl.ensure_bridge(&b.name, b.mtu)?;
            nl.add_address(index, b.gateway, b.prefix)?;
            nl.set_up(index).map_err(Into::into)
        })?;
        // Published ports reached on 127.0.0.1 leave through the bridge with that source (then
        // masqueraded): the kernel drops such packets unless the device allows it.
        sysctl(&format!("/proc/sys/net/ipv4/conf/{}/route_localnet", b.name), "1")?;
        // Containers' traffic out, and other hosts' to published ports, is forwarded: as
        // dockerd, turn forwarding on where it is off.
        const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(FORWARD).is_ok_and(|v| v.trim() == "0") {
            tracing::info!("turning on IPv4 forwarding ({FORWARD}), as containers' networks need it");
            sysctl(FORWARD, "1")?;
        }
        Ok(())
    }

    fn remove_bridge(&self, name: &str) -> Result<()> {
        self.with_host(|nl| nl.delete(name).map(|_| ()).map_err(Into::into))
    }

    fn attach(&self, pid: i32, ep: &Endpoint) -> Result<()> {
        let path = format!("/proc/{pid}/ns/net");
        let ns = std::fs::File::open(&path).map_err(|source| PlumbingError::Namespace { pid, source })?;
        self.with_host(|nl| {
            let index = nl.index(&ep.bridge)?.ok_or_else(|| PlumbingError::NoBridge(ep.bridge.clone()))?;
            nl.add_veth(&Veth {
                host: &ep.host_if,
                bridge_index: index,
                peer: &ep.ifname,
                peer_mac: ep.mac,
                netns: ns.as_fd(),
                mtu: ep.mtu,
            })
            .map_err(Into::into)
        })?;
        // Inside the namespace, on a thread of its own that enters it (and ends): no thread of
        // the caller's changes namespace. The link is IPv4 only, as its network: without IPv6 on
        // it the kernel sets up no link-local address, multicast groups or DAD when it comes up.
        let inside = || -> Result<()> {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| -> Result<()> {
                        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| PlumbingError::Namespace { pid, source: e.into() })?;
                        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", ep.ifname), "1");
                        let mut nl = Netlink::open()?;
                        let index = nl.index(&ep.ifname)?.ok_or_else(|| PlumbingError::Other {
                            context: format!("the container's {}", ep.ifname),
                            message: "not found after its creation".into(),
                        })?;
                        nl.set_up(index)?;
                        nl.add_address(index, ep.addr, ep.prefix)?;
                        if let Some(gw) = ep.gateway {
                            nl.add_default_route(gw, index)?;
                        }
                        Ok(())
                    })
                    .join()
                    .unwrap_or_else(|_| Err(PlumbingError::Other { context: "network set-up".into(), message: "thread panicked".into() }))
            })
        };
        inside().inspect_err(|_| {
            let _ = self.detach(&ep.host_if);
        })
    }

    fn detach(&self, host_if: &str) -> Result<()> {
        self.with_host(|nl| nl.delete(host_if).map(|_| ()).map_err(Into::into))
    }

    fn apply_rules(&self, batch: &str) -> Result<()> {
        let fail = |message: String| PlumbingError::Other { context: "applying berth's nftables rules (nft -f -)".into(), message };
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("running nft (is nftables installed?): {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(batch.as_bytes()).map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }

    fn foreign_forward(&self, table: &str, devices: &[String]) -> Result<()> {
        // No iptables, or no filter table (no other engine here): nothing to do.
        let listing = match std::process::Command::new("iptables").args(["-w", "-S", "FORWARD"]).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => return Ok(()),
        };
        for args in crate::nat::foreign_forward(&listing, table, devices) {
            let out = std::process::Command::new("iptables").arg("-w").args(&args).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(PlumbingError::Other {
                        context: format!("iptables {}", args.join(" ")),
                        message: String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    });
                }
                Err(e) => return Err(PlumbingError::Other { context: "running iptables".into(), message: e.to_string() }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ends_are_ours_short_and_distinct() {
        let a = host_if_name("0123456789abcdef");
        assert_eq!(a, "berth0123456789");
        assert_ne!(a, host_if_name("1123456789abcdef"));
        assert_eq!(host_if_name("ab").len(), 15);
    }

    #[test]
    fn macs_follow_dockers_scheme() {
        assert_eq!(mac_string(&mac_for("172.17.0.2".parse().unwrap())), "02:42:ac:11:00:02");
    }
}
