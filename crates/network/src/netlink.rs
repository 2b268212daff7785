//! Just enough rtnetlink for bridges and veths, spoken over a blocking socket: make a bridge,
//! a veth pair whose other end is made straight inside a container's network namespace (no
//! move, no rename), addresses, a default route, delete a link. A netlink socket acts in the
//! network namespace it was made in: for a container's, it is made on a short-lived thread that
//! enters the namespace (never a thread of the caller's, which may be an async worker).
//! Each request waits for the kernel's acknowledgement: an error comes back with the request
//! it answers.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{what}: {source}")]
    Kernel { what: String, source: io::Error },
    #[error("{0}: the kernel's reply is malformed")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn kernel(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Kernel { what, source }
}

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 0x8000;
const IFF_UP: u32 = 1;

/// A message body under construction: a fixed header followed by attributes.
struct Msg(Vec<u8>);

impl Msg {
    /// `ifinfomsg`: family, type, index, flags, change mask.
    fn link(index: i32, up: bool) -> Msg {
        let mut b = vec![0u8; 16];
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        if up {
            b[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
            b[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        }
        Msg(b)
    }

    fn attr(mut self, ty: u16, data: &[u8]) -> Msg {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn str(self, ty: u16, s: &str) -> Msg {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d)
    }

    fn u32(self, ty: u16, v: u32) -> Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn nested(self, ty: u16, inner: Msg) -> Msg {
        self.attr(ty | NLA_F_NESTED, &inner.0)
    }
}

/// An rtnetlink socket, acting in the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// A veth pair to make: `host` attached to the bridge, `peer` made inside `netns`.
pub struct Veth<'a> {
    pub host: &'a str,
    pub bridge_index: u32,
    pub peer: &'a str,
    pub peer_mac: [u8; 6],
    pub netns: BorrowedFd<'a>,
    pub mtu: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        // SAFETY: plain socket(2); the descriptor is owned below only when valid.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(kernel("opening a netlink socket")(io::Error::last_os_error()));
        }
        // SAFETY: fd is a new, valid descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    /// Send one request and wait for its acknowledgement (or, with `dump_reply`, its answer).
    fn request(&mut self, what: &str, ty: u16, flags: u16, body: &Msg) -> Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = Vec::with_capacity(16 + body.0.len());
        m.extend_from_slice(&((16 + body.0.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&body.0);
        // SAFETY: all-zero is a valid sockaddr_nl: the kernel (pid 0), no groups.
        let mut kernel_addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel_addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sending a buffer we own, of its length, to the address above (of its size).
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&raw const kernel_addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(kernel(what)(io::Error::last_os_error()));
        }
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: receiving into a buffer we own, at most its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(kernel(what)(e));
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let mty = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    return Err(NetlinkError::Malformed(what.into()));
                }
                let payload = &rest[16..len];
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                if seq != self.seq {
                    continue;
                }
                match mty {
                    NLMSG_ERROR => {
                        let code = payload.get(..4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                        return match code {
                            Some(0) => Ok(answer),
                            Some(c) => Err(kernel(what)(io::Error::from_raw_os_error(-c))),
                            None => Err(NetlinkError::Malformed(what.into())),
                        };
                    }
                    NLMSG_DONE => return Ok(answer),
                    _ => answer = payload.to_vec(),
                }
            }
        }
    }

    /// The index of link `name`, None when there is none.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>> {
        match self.request(&format!("looking up link {name}"), RTM_GETLINK, 0, &Msg::link(0, false).str(IFLA_IFNAME, name)) {
            Ok(reply) if reply.len() >= 8 => Ok(Some(u32::from_ne_bytes([reply[4], reply[5], reply[6], reply[7]]))),
            Ok(_) => Err(NetlinkError::Malformed(format!("looking up link {name}"))),
            Err(NetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Make bridge `name` (up), unless it exists; its index either way.
    pub fn ensure_bridge(&mut self, name: &str, mtu: u32) -> Result<u32> {
        if let Some(i) = self.index(name)? {
            return Ok(i);
        }
        let info = Msg(Vec::new()).str(IFLA_INFO_KIND, "bridge");
        let body = Msg::link(0, true).str(IFLA_IFNAME, name).u32(IFLA_MTU, mtu).nested(IFLA_LINKINFO, info);
        match self.request(&format!("creating bridge {name}"), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body) {
            Ok(_) => {}
            // Made meanwhile by someone else: use it.
            Err(NetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        self.index(name)?.ok_or_else(|| NetlinkError::Malformed(format!("bridge {name} gone after its creation")))
    }

    /// Bring link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.request(&format!("bringing link {index} up"), RTM_NEWLINK, 0, &Msg::link(index as i32, true)).map(|_| ())
    }

    /// Give link `index` the address `addr/prefix` (with its broadcast address); one it has
    /// already is fine.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut b = vec![libc::AF_INET as u8, prefix, 0, 0];
        b.extend_from_slice(&index.to_ne_bytes());
        let bcast = if prefix >= 31 { addr } else { Ipv4Addr::from(u32::from(addr) | (u32::MAX >> prefix)) };
        let body = Msg(b).attr(IFA_LOCAL, &addr.octets()).attr(IFA_ADDRESS, &addr.octets()).attr(IFA_BROADCAST, &bcast.octets());
        match self.request(&format!("adding address {addr}/{prefix}"), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &body) {
            Err(NetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// The default route through `gateway` on link `index`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> Result<()> {
        // rtmsg: family, dst_len, src_len, tos, table (main), protocol (boot), scope (universe),
        // type (unicast), flags.
        let b = vec![libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        let body = Msg(b).attr(RTA_GATEWAY, &gateway.octets()).u32(RTA_OIF, index);
        self.request(&format!("adding the default route via {gateway}"), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &body).map(|_| ())
    }

    /// Make a veth pair: `host` on the bridge and up, `peer` inside `netns` with its MAC, down.
    pub fn add_veth(&mut self, v: &Veth<'_>) -> Result<()> {
        // The peer cannot be brought up here: the kernel opens it before the pair is joined
        // (ENOTCONN). Its owner does, from inside its namespace.
        let peer = Msg::link(0, false)
            .str(IFLA_IFNAME, v.peer)
            .u32(IFLA_MTU, v.mtu)
            .attr(IFLA_ADDRESS, &v.peer_mac)
            .u32(IFLA_NET_NS_FD, v.netns.as_raw_fd() as u32);
        let data = Msg(Vec::new()).nested(VETH_INFO_PEER, peer);
        let info = Msg(Vec::new()).str(IFLA_INFO_KIND, "veth").nested(IFLA_INFO_DATA, data);
        let body =
            Msg::link(0, true).str(IFLA_IFNAME, v.host).u32(IFLA_MTU, v.mtu).u32(IFLA_MASTER, v.bridge_index).nested(IFLA_LINKINFO, info);
        self.request(&format!("creating veth pair {} / {}", v.host, v.peer), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body).map(|_| ())
    }

    /// Delete link `name`; false when there was none.
    pub fn delete(&mut self, name: &str) -> Result<bool> {
        match self.request(&format!("deleting link {name}"), RTM_DELLINK, 0, &Msg::link(0, false).str(IFLA_IFNAME, name)) {
            Ok(_) => Ok(true),
            Err(NetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let m = Msg(Vec::new()).str(IFLA_IFNAME, "eth0").nested(IFLA_LINKINFO, Msg(Vec::new()).str(IFLA_INFO_KIND, "veth"));
        // "eth0\0" is 5 bytes: 9 with the header, padded to 12.
        assert_eq!(&m.0[..4], &[9, 0, 3, 0]);
        assert_eq!(&m.0[4..9], b"eth0\0");
        assert_eq!(m.0.len(), 12 + 4 + 12);
        assert_eq!(u16::from_ne_bytes([m.0[14], m.0[15]]), IFLA_LINKINFO | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes([m.0[12], m.0[13]]), 16);
    }

    #[test]
    fn a_link_message_brings_it_up_only_when_asked() {
        assert_eq!(&Msg::link(7, true).0[4..16], &[7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&Msg::link(7, false).0[8..16], &[0; 8]);
    }
}
