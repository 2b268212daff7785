//! berth-network: gives containers their networks. So far: address management ([`ipam`]) —
//! subnets chosen so they collide with neither the host's routes nor other networks, addresses
//! handed out once and released, all of it persisted atomically so a restart of berthd hands
//! out nothing twice — and berth's nftables table as one atomic batch ([`nat`]: NAT, published
//! ports, each bridge's forwarding policy). Bridges and veths, applying the rules, and name
//! resolution come with issue 17; see docs/network.md.

pub mod ipam;
pub mod nat;
pub mod routes;

pub use ipam::{Ipam, IpamError};
