//! The host's IPv4 routes (`/proc/net/route`), which a new network's subnet must not overlap:
//! where dockerd runs, 172.17.0.0/16 is its bridge's, and a LAN or VPN route may hold others.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Parse `/proc/net/route`'s text: destination and mask are little-endian hex. The default
/// route (mask 0) is left out: every subnet is inside it.
pub fn parse(text: &str) -> Vec<Ipv4Net> {
    parse_except(text, "")
}

/// [`parse`], leaving out the routes through `device`.
fn parse_except(text: &str, device: &str) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || (!device.is_empty() && f[0] == device) {
            continue;
        }
        let (Ok(dest), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else { continue };
        let (dest, mask) = (Ipv4Addr::from(dest.swap_bytes()), Ipv4Addr::from(mask.swap_bytes()));
        if mask.is_unspecified() {
            continue;
        }
        if let Ok(prefix) = ipnet::ipv4_mask_to_prefix(mask)
            && let Ok(net) = Ipv4Net::new(dest, prefix)
        {
            out.push(net.trunc());
        }
    }
    out
}

/// The host's routes now.
pub fn host() -> Vec<Ipv4Net> {
    std::fs::read_to_string("/proc/net/route").map(|t| parse(&t)).unwrap_or_default()
}

/// The host's routes now but those through `device` (a bridge of ours).
pub fn host_except(device: &str) -> Vec<Ipv4Net> {
    std::fs::read_to_string("/proc/net/route").map(|t| parse_except(&t, device)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_route_table() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse(text);
        assert_eq!(routes, vec!["192.168.2.0/24".parse::<Ipv4Net>().unwrap(), "172.17.0.0/16".parse().unwrap()]);
        assert!(parse("garbage").is_empty());
        assert_eq!(parse_except(text, "docker0"), vec!["192.168.2.0/24".parse::<Ipv4Net>().unwrap()]);
    }
}
