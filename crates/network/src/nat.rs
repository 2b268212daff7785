//! berth's nftables ruleset, written whole and applied in one transaction (`nft -f -`), so the
//! table is always either the old or the new one and never fights other tools' chains: NAT for
//! traffic leaving the bridges' subnets, DNAT for published ports (from other hosts, and from
//! the host itself on its own addresses, 127.0.0.1 included), and the forwarding policy of each
//! bridge (an `--internal` one reaches nothing past itself). Making it is a pure function of
//! the networks and ports, so it is tested without touching the host; the kernel's parser checks
//! it in the tests without applying it (`nft -c`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A bridge network as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The host's bridge device (`berth0`).
    pub device: String,
    pub subnet: Ipv4Net,
    /// No route out: containers reach each other and nothing else.
    pub internal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A published port: `-p [host_ip:]host_port:container_port[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub proto: Proto,
    /// Only connections to this host address (None: any of the host's addresses).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// A device name nft takes as a quoted string: what the kernel allows for an interface name.
fn valid_device(d: &str) -> bool {
    !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The whole table `ip <table>`: made first (so a delete of a table that is not there cannot
/// fail the transaction), deleted, then declared again with every rule, in one `nft -f` batch.
pub fn ruleset(table: &str, bridges: &[Bridge], ports: &[Published]) -> Result<String, String> {
    if !valid_device(table) {
        return Err(format!("invalid nftables table name {table:?}"));
    }
    if let Some(b) = bridges.iter().find(|b| !valid_device(&b.device)) {
        return Err(format!("invalid bridge device name {:?}", b.device));
    }
    let mut r = String::new();
    let _ = writeln!(r, "table ip {table} {{}}");
    let _ = writeln!(r, "delete table ip {table}");
    let _ = writeln!(r, "table ip {table} {{");
    // Published ports: from outside (prerouting) and from the host itself (output), for any
    // of the host's own addresses.
    let _ = writeln!(r, "\tchain ports {{");
    for p in ports {
        let dst = match p.host_ip {
            Some(ip) => format!("ip daddr {ip} "),
            None => String::new(),
        };
        let proto = p.proto.name();
        let _ = writeln!(r, "\t\t{dst}{proto} dport {} dnat to {}:{}", p.host_port, p.container_ip, p.container_port);
    }
    let _ = writeln!(r, "\t}}");
    let _ = writeln!(r, "\tchain prerouting {{");
    let _ = writeln!(r, "\t\ttype nat hook prerouting priority dstnat; policy accept;");
    let _ = writeln!(r, "\t\tfib daddr type local jump ports");
    let _ = writeln!(r, "\t}}");
    let _ = writeln!(r, "\tchain output {{");
    let _ = writeln!(r, "\t\ttype nat hook output priority -100; policy accept;");
    let _ = writeln!(r, "\t\tfib daddr type local jump ports");
    let _ = writeln!(r, "\t}}");
    let _ = writeln!(r, "\tchain postrouting {{");
    let _ = writeln!(r, "\t\ttype nat hook postrouting priority srcnat; policy accept;");
    for b in bridges.iter().filter(|b| !b.internal) {
        // Leaving the subnet by another device: the host's address. A published port reached
        // from 127.0.0.1 comes to the bridge from loopback: the gateway's address, so the
        // answer finds its way back.
        let _ = writeln!(r, "\t\tip saddr {} oifname != \"{}\" masquerade", b.subnet, b.device);
        let _ = writeln!(r, "\t\tip saddr 127.0.0.0/8 oifname \"{}\" masquerade", b.device);
    }
    let _ = writeln!(r, "\t}}");
    let _ = writeln!(r, "\tchain forward {{");
    let _ = writeln!(r, "\t\ttype filter hook forward priority filter; policy accept;");
    // Networks are isolated from each other, as Docker's: nothing from one bridge to another.
    for b in bridges {
        let others: Vec<String> = bridges.iter().filter(|o| o.device != b.device).map(|o| format!("\"{}\"", o.device)).collect();
        if !others.is_empty() {
            let _ = writeln!(r, "\t\tiifname \"{}\" oifname {{ {} }} drop", b.device, others.join(", "));
        }
    }
    for b in bridges {
        if b.internal {
            let _ = writeln!(r, "\t\tiifname \"{0}\" oifname != \"{0}\" drop", b.device);
            let _ = writeln!(r, "\t\toifname \"{0}\" iifname != \"{0}\" drop", b.device);
        } else {
            // Answers come back; new connections in only to published ports (DNATed).
            let _ = writeln!(r, "\t\toifname \"{}\" ct state established,related accept", b.device);
            let _ = writeln!(r, "\t\toifname \"{}\" ct status dnat accept", b.device);
            let _ = writeln!(r, "\t\tiifname \"{}\" accept", b.device);
        }
    }
    let _ = writeln!(r, "\t}}");
    let _ = writeln!(r, "}}");
    Ok(r)
}

/// Remove the table (nothing to do when it is not there), in one batch.
pub fn teardown(table: &str) -> Result<String, String> {
    if !valid_device(table) {
        return Err(format!("invalid nftables table name {table:?}"));
    }
    Ok(format!("table ip {table} {{}}\ndelete table ip {table}\n"))
}

/// Where another engine's `FORWARD` chain drops by policy (dockerd's, through iptables),
/// berth's bridges' traffic must be accepted there too: every table's base chain on a hook sees
/// a packet and any one's drop ends it (with `br_netfilter`, traffic between two containers of
/// one bridge goes through it as well). The rules go in with the same `iptables` the other
/// engine uses, so its own tool keeps reading its chain. From `iptables -S FORWARD`, the
/// `iptables` argument lists that leave exactly berth's accepts for `devices` there (tagged
/// `berth:<table>`), none when the policy accepts; empty when nothing is to change.
pub fn foreign_forward(listing: &str, table: &str, devices: &[String]) -> Vec<Vec<String>> {
    let tag = format!("berth:{table}");
    let drops = listing.lines().any(|l| l.trim() == "-P FORWARD DROP");
    let ours: Vec<Vec<String>> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("-A FORWARD "))
        // iptables quotes comments in its listing ("berth:berth").
        .map(|rest| rest.split_whitespace().map(|w| w.trim_matches('"').to_string()).collect::<Vec<_>>())
        .filter(|w| w.windows(2).any(|p| p[0] == "--comment" && p[1] == tag))
        .collect();
    let rule = |dir: &str, dev: &str| -> Vec<String> {
        [dir, dev, "-m", "comment", "--comment", &tag, "-j", "ACCEPT"].iter().map(|s| s.to_string()).collect()
    };
    let wanted: Vec<Vec<String>> =
        if drops { devices.iter().filter(|d| valid_device(d)).flat_map(|d| [rule("-i", d), rule("-o", d)]).collect() } else { Vec::new() };
    let mut out = Vec::new();
    for r in &ours {
        if !wanted.contains(r) {
            out.push(["-D", "FORWARD"].iter().map(|s| s.to_string()).chain(r.iter().cloned()).collect());
        }
    }
    for w in &wanted {
        if !ours.contains(w) {
            out.push(["-I", "FORWARD"].iter().map(|s| s.to_string()).chain(w.iter().cloned()).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<Bridge>, Vec<Published>) {
        let bridges = vec![
            Bridge { device: "berth0".into(), subnet: "172.19.0.0/16".parse().unwrap(), internal: false },
            Bridge { device: "berth-1a2b".into(), subnet: "172.20.0.0/16".parse().unwrap(), internal: true },
        ];
        let ports = vec![
            Published {
                proto: Proto::Tcp,
                host_ip: None,
                host_port: 8080,
                container_ip: "172.19.0.2".parse().unwrap(),
                container_port: 80,
            },
            Published {
                proto: Proto::Udp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 5353,
                container_ip: "172.19.0.3".parse().unwrap(),
                container_port: 53,
            },
        ];
        (bridges, ports)
    }

    #[test]
    fn the_ruleset_has_nat_ports_and_each_bridges_policy() {
        let (bridges, ports) = sample();
        let r = ruleset("berth-test", &bridges, &ports).unwrap();
        assert!(r.starts_with("table ip berth-test {}\ndelete table ip berth-test\ntable ip berth-test {\n"), "{r}");
        assert!(r.contains("\t\ttcp dport 8080 dnat to 172.19.0.2:80\n"), "{r}");
        assert!(r.contains("\t\tip daddr 127.0.0.1 udp dport 5353 dnat to 172.19.0.3:53\n"), "{r}");
        assert!(r.contains("ip saddr 172.19.0.0/16 oifname != \"berth0\" masquerade"), "{r}");
        assert!(!r.contains("ip saddr 172.20.0.0/16"), "an internal network is not masqueraded: {r}");
        assert!(r.contains("iifname \"berth-1a2b\" oifname != \"berth-1a2b\" drop"), "{r}");
        assert!(r.contains("iifname \"berth0\" oifname { \"berth-1a2b\" } drop"), "networks are isolated from each other: {r}");
        assert_eq!(teardown("berth-test").unwrap(), "table ip berth-test {}\ndelete table ip berth-test\n");
    }

    #[test]
    fn another_engines_dropping_forward_chain_gets_our_accepts_and_loses_them() {
        let drop = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n";
        let devs = vec!["berth0".to_string()];
        let cmds: Vec<String> = foreign_forward(drop, "berth", &devs).iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            [
                "-I FORWARD -i berth0 -m comment --comment berth:berth -j ACCEPT",
                "-I FORWARD -o berth0 -m comment --comment berth:berth -j ACCEPT"
            ]
        );
        let with_ours = "-P FORWARD DROP\n-A FORWARD -i berth0 -m comment --comment \"berth:berth\" -j ACCEPT\n-A FORWARD -o berth0 -m comment --comment berth:berth -j ACCEPT\n-A FORWARD -o other0 -m comment --comment berth:other0 -j ACCEPT\n-A FORWARD -j DOCKER-USER\n";
        assert!(foreign_forward(with_ours, "berth", &devs).is_empty(), "already there");
        let cmds: Vec<String> = foreign_forward(with_ours, "berth", &[]).iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            [
                "-D FORWARD -i berth0 -m comment --comment berth:berth -j ACCEPT",
                "-D FORWARD -o berth0 -m comment --comment berth:berth -j ACCEPT"
            ],
            "another berthd's rules (another tag) are left alone"
        );
        let accepting = with_ours.replace("-P FORWARD DROP", "-P FORWARD ACCEPT");
        assert_eq!(foreign_forward(&accepting, "berth", &devs).len(), 2, "taken out where the policy accepts");
        assert!(foreign_forward("", "berth", &devs).is_empty(), "no such chain");
    }

    #[test]
    fn hostile_names_are_refused() {
        let (mut bridges, ports) = sample();
        assert!(ruleset("berth; flush ruleset", &bridges, &ports).is_err());
        bridges[0].device = "x\" accept; drop".into();
        assert!(ruleset("berth", &bridges, &ports).is_err());
        bridges[0].device = "a-name-longer-than-15".into();
        assert!(ruleset("berth", &bridges, &ports).is_err());
        assert!(teardown("").is_err());
    }

    /// The kernel's own parser, in check mode: nothing is applied.
    #[test]
    fn nft_accepts_the_ruleset() {
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
        let have_nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].iter().any(|p| std::path::Path::new(p).exists());
        if !root || !have_nft {
            assert!(std::env::var("CI").is_err(), "CI runs as root with nftables installed (scripts/deps.sh)");
            eprintln!("SKIP: nft -c needs root and nftables");
            return;
        }
        let (bridges, ports) = sample();
        for text in
            [ruleset("berth-check", &bridges, &ports).unwrap(), ruleset("berth-check", &[], &[]).unwrap(), teardown("berth-check").unwrap()]
        {
            use std::io::Write;
            let mut child = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "nft refused:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
