//! berth-network: gives containers their networks. Address management ([`ipam`]: subnets that
//! collide with neither the host's routes nor other networks, addresses handed out once,
//! persisted atomically), a small rtnetlink client ([`netlink`]) behind the [`plumbing`] seam
//! (bridges, a veth made straight inside a container's namespace, addresses, routes, and
//! berth's nftables table), the ruleset itself ([`nat`]: NAT, published ports, each bridge's
//! policy, as one atomic batch) and the resolver of user networks ([`dns`]). See
//! docs/network.md.

pub mod dns;
pub mod ipam;
pub mod nat;
pub mod netlink;
pub mod plumbing;
pub mod routes;

pub use ipam::{Ipam, IpamError};
