//! The resolver of user networks, as Docker's embedded DNS: it listens on each user network's
//! gateway (port 53), answers A queries for the network's containers by name, alias, short ID
//! and hostname, and forwards every other query to the asking container's `--dns` servers or
//! else the host's, relaying the answer. Queries are hostile input: anything that does not
//! parse as one plain question is dropped or answered FORMERR.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One container's entry on one network.
#[derive(Debug, Clone)]
struct Entry {
    owner: String,
    addr: Ipv4Addr,
    /// Lower case, as names are compared.
    names: Vec<String>,
    upstreams: Vec<Ipv4Addr>,
}

/// Every user network's names.
#[derive(Default)]
pub struct Names {
    nets: RwLock<HashMap<String, Vec<Entry>>>,
}

impl Names {
    pub fn add(&self, network: &str, owner: &str, addr: Ipv4Addr, names: &[String], upstreams: &[Ipv4Addr]) {
        let entry = Entry {
            owner: owner.to_string(),
            addr,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            upstreams: upstreams.to_vec(),
        };
        let mut nets = self.nets.write().unwrap_or_else(|p| p.into_inner());
        let list = nets.entry(network.to_string()).or_default();
        list.retain(|e| e.owner != owner);
        list.push(entry);
    }

    /// Forget `owner` on `network`, or on every network.
    pub fn remove(&self, owner: &str, network: Option<&str>) {
        let mut nets = self.nets.write().unwrap_or_else(|p| p.into_inner());
        for (name, list) in nets.iter_mut() {
            if network.is_none_or(|n| n == name) {
                list.retain(|e| e.owner != owner);
            }
        }
    }

    pub fn forget_network(&self, network: &str) {
        self.nets.write().unwrap_or_else(|p| p.into_inner()).remove(network);
    }

    /// The addresses `name` has on `network`.
    pub fn lookup(&self, network: &str, name: &str) -> Vec<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let nets = self.nets.read().unwrap_or_else(|p| p.into_inner());
        nets.get(network).into_iter().flatten().filter(|e| e.names.contains(&name)).map(|e| e.addr).collect()
    }

    /// The `--dns` servers of the container at `addr` on `network` (empty: the host's).
    fn upstreams_of(&self, network: &str, addr: Ipv4Addr) -> Vec<Ipv4Addr> {
        let nets = self.nets.read().unwrap_or_else(|p| p.into_inner());
        nets.get(network).into_iter().flatten().find(|e| e.addr == addr).map(|e| e.upstreams.clone()).unwrap_or_default()
    }
}

/// A query's one question.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    /// Where the question ends in the message.
    end: usize,
}

const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;

/// The question of a standard query with exactly one, None for anything else.
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || (msg[2] >> 3) & 0x0f != 0 {
        return None;
    }
    if u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        // No compression in a question, labels of at most 63 bytes, names of at most 255.
        if len > 63 || pos + len > msg.len() || labels.iter().map(|l: &String| l.len() + 1).sum::<usize>() + len > 255 {
            return None;
        }
        labels.push(String::from_utf8_lossy(&msg[pos..pos + len]).into_owned());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let _class = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]);
    Some(Question { name: labels.join("."), qtype, end: pos + 4 })
}

/// The answer to `query` with `addrs` (A records for an A or ANY question; none for another
/// type of a name we know, which exists).
pub fn answer(query: &[u8], q: &Question, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let mut out = query[..q.end].to_vec();
    let records: Vec<&Ipv4Addr> = if matches!(q.qtype, TYPE_A | TYPE_ANY) { addrs.iter().collect() } else { Vec::new() };
    // QR, the query's opcode and RD, AA; RA; NOERROR.
    out[2] = 0x80 | (query[2] & 0x79) | 0x04;
    out[3] = 0x80;
    out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
    out[8..12].fill(0);
    for a in records {
        // The question's name (a pointer to offset 12), A, IN, TTL 600, 4 bytes.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4]);
        out.extend_from_slice(&a.octets());
    }
    out
}

/// An error answer (`rcode`) to `query`, question included when there is one.
pub fn error(query: &[u8], q: Option<&Question>, rcode: u8) -> Vec<u8> {
    let end = q.map_or(12, |q| q.end);
    let mut out = query[..end.min(query.len())].to_vec();
    out.resize(12.max(out.len()), 0);
    out[2] = 0x80 | (query.get(2).copied().unwrap_or(0) & 0x79);
    out[3] = 0x80 | rcode;
    out[4..6].copy_from_slice(&(u16::from(q.is_some())).to_be_bytes());
    out[6..12].fill(0);
    out
}

/// The IPv4 name servers of a resolv.conf.
pub fn nameservers(resolv: &str) -> Vec<Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next()).flatten()
        })
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Serve network `network`'s names on `sock` until the task is dropped.
pub async fn serve(sock: tokio::net::UdpSocket, network: String, names: Arc<Names>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        let query = &buf[..n];
        let Some(q) = parse_query(query) else {
            if n >= 12 && query[2] & 0x80 == 0 {
                let _ = sock.send_to(&error(query, None, RCODE_FORMERR), from).await;
            }
            continue;
        };
        let known = names.lookup(&network, &q.name);
        if !known.is_empty() {
            let _ = sock.send_to(&answer(query, &q, &known), from).await;
            continue;
        }
        let SocketAddr::V4(from4) = from else { continue };
        let mut upstreams = names.upstreams_of(&network, *from4.ip());
        if upstreams.is_empty() {
            upstreams = nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        }
        let query = query.to_vec();
        let sock = Arc::clone(&sock);
        tokio::spawn(async move {
            let reply = match forward(&query, &upstreams).await {
                Some(r) => r,
                None => error(&query, Some(&q), RCODE_SERVFAIL),
            };
            let _ = sock.send_to(&reply, from).await;
        });
    }
}

/// Ask each upstream in turn (2 s each); the first answer with the query's ID.
async fn forward(query: &[u8], upstreams: &[Ipv4Addr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let Ok(s) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else { continue };
        if s.send_to(query, (*up, 53)).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf)).await
            && n >= 12
            && buf[..2] == query[..2]
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn names_answer_by_name_alias_in_any_case_and_go_with_their_owner() {
        let n = Names::default();
        n.add("net", "c1", "10.0.0.2".parse().unwrap(), &["Web".into(), "alias".into()], &[]);
        n.add("other", "c2", "10.1.0.2".parse().unwrap(), &["web".into()], &[]);
        assert_eq!(n.lookup("net", "web."), vec!["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(n.lookup("net", "ALIAS").len(), 1);
        assert!(n.lookup("net", "nobody").is_empty());
        n.remove("c1", None);
        assert!(n.lookup("net", "web").is_empty());
        assert_eq!(n.lookup("other", "web").len(), 1, "another network's names are its own");
    }

    #[test]
    fn an_a_query_is_answered_and_others_are_empty() {
        let q = query("web", TYPE_A);
        let parsed = parse_query(&q).unwrap();
        assert_eq!(parsed.name, "web");
        let a = answer(&q, &parsed, &["10.0.0.2".parse().unwrap()]);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[10, 0, 0, 2]);
        let aaaa = query("web", 28);
        let none = answer(&aaaa, &parse_query(&aaaa).unwrap(), &["10.0.0.2".parse().unwrap()]);
        assert_eq!(u16::from_be_bytes([none[6], none[7]]), 0);
        let e = error(&q, Some(&parsed), RCODE_SERVFAIL);
        assert_eq!((e[3] & 0x0f, e.len()), (RCODE_SERVFAIL, q.len()));
    }

    #[test]
    fn hostile_queries_do_not_parse() {
        assert!(parse_query(&[0; 5]).is_none());
        let mut two = query("a", TYPE_A);
        two[5] = 2;
        assert!(parse_query(&two).is_none(), "two questions");
        let mut answer_bit = query("a", TYPE_A);
        answer_bit[2] |= 0x80;
        assert!(parse_query(&answer_bit).is_none(), "a response");
        let mut long = query("a", TYPE_A);
        long[12] = 64;
        assert!(parse_query(&long).is_none(), "a label longer than 63");
        let mut truncated = query("abc", TYPE_A);
        truncated.truncate(15);
        assert!(parse_query(&truncated).is_none());
        let mut pointer = query("abc", TYPE_A);
        pointer[12] = 0xc0;
        assert!(parse_query(&pointer).is_none(), "compression in a question");
        assert!(error(&[1, 2], None, RCODE_FORMERR).len() == 12);
    }

    #[test]
    fn resolv_conf_servers() {
        assert_eq!(nameservers("search x\nnameserver 10.0.0.1\nnameserver ::1\n"), vec!["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
    }
}
