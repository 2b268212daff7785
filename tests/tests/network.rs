//! Networking through berthd: the default bridge (addresses, routes, container to container,
//! container to gateway), published ports from the host on 127.0.0.1 (tcp with busybox httpd,
//! udp with nc), their release, restore after berthd is killed, and that nothing of it stays.
//! All traffic stays inside the machine: no test sends anything past the host.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::Duration;

use berth_tests::{TestDaemon, json, wait_until};
use serde_json::Value;

fn inspect(d: &TestDaemon, id: &str) -> Value {
    let (s, b) = d.request("GET", &format!("/containers/{}/json", id.trim()));
    assert_eq!(s, 200, "{b}");
    json(&b)
}

/// The links and nftables tables of ours on the host.
fn links() -> String {
    let out = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The links on a bridge.
fn ports_of(bridge: &str) -> String {
    let out = std::process::Command::new("ip").args(["-o", "link", "show", "master", bridge]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tables() -> String {
    let out = std::process::Command::new("nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /` on 127.0.0.1:port, None while nothing answers.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out).filter(|o| o.starts_with("HTTP/"))
}

fn host_port(c: &Value, key: &str, n: usize) -> u16 {
    c["NetworkSettings"]["Ports"][key][n]["HostPort"].as_str().unwrap().parse().unwrap()
}

/// A port nothing uses now (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_default_bridge_connects_containers_to_each_other_and_the_gateway() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let a = d.docker(&["run", "-d", "--name", "ca", "busybox", "sleep", "60"]).success().stdout;
    let b = d.docker(&["run", "-d", "--name", "cb", "busybox", "sleep", "60"]).success().stdout;
    let (ca, cb) = (inspect(&d, &a), inspect(&d, &b));
    let ns = &ca["NetworkSettings"];
    let ip_a = ns["IPAddress"].as_str().unwrap().to_string();
    let gw = ns["Gateway"].as_str().unwrap().to_string();
    let ip_b = cb["NetworkSettings"]["Networks"]["bridge"]["IPAddress"].as_str().unwrap().to_string();
    assert!(!ip_a.is_empty() && ip_a != ip_b, "{ns}");
    assert_eq!(ns["Networks"]["bridge"]["Gateway"], gw);
    assert_eq!(ns["MacAddress"], ns["Networks"]["bridge"]["MacAddress"]);
    // The bridge holds the gateway on this daemon's own device.
    assert!(links().contains(&format!(": {}:", d.bridge())), "{}", links());

    // Inside: eth0 with the address, the default route via the gateway, its name in /etc/hosts.
    let out = d.docker(&["exec", "ca", "sh", "-c", "ip -o -4 addr show eth0; ip route; cat /etc/hosts"]).success().stdout;
    assert!(out.contains(&format!("inet {ip_a}/{}", ns["IPPrefixLen"])), "{out}");
    assert!(out.contains(&format!("default via {gw} dev eth0")), "{out}");
    assert!(out.contains(&format!("{ip_a}\t{}", &a.trim()[..12])), "{out}");
    // To the gateway and to the other container, over the bridge.
    d.docker(&["exec", "ca", "ping", "-c", "1", "-W", "2", &gw]).success();
    d.docker(&["exec", "ca", "ping", "-c", "1", "-W", "2", &ip_b]).success();
    d.docker(&["run", "-d", "--name", "srv", "busybox", "sh", "-c", "echo over-tcp | nc -l -p 7000"]).success();
    let ip_srv = inspect(&d, "srv")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    let mut got = String::new();
    wait_until("a TCP answer from another container", || {
        got = d.docker(&["exec", "cb", "sh", "-c", &format!("nc -w 2 {ip_srv} 7000 </dev/null")]).stdout;
        got.contains("over-tcp")
    });

    // `host-gateway` is the default bridge's gateway, as Docker's.
    let hosts =
        d.docker(&["run", "--rm", "--add-host", "gw.test:host-gateway", "busybox", "sh", "-c", "cat /etc/hosts; ping -c 1 -W 2 gw.test"]);
    assert!(hosts.code == 0 && hosts.stdout.contains(&format!("{gw}\tgw.test")), "{hosts:?}");

    // `none` has loopback only; stopped containers give their links and addresses back.
    let none = d.docker(&["run", "--rm", "--network", "none", "busybox", "ip", "-o", "link"]).success().stdout;
    assert_eq!(none.lines().count(), 1, "{none}");
    d.docker(&["rm", "-f", "ca", "cb", "srv"]).success();
    wait_until("the containers' links to go", || ports_of(&d.bridge()).is_empty());
    let state: Value = json(&std::fs::read_to_string(d.dir.path().join("data/network/ipam.json")).unwrap());
    assert_eq!(state["networks"]["bridge"]["allocated"], serde_json::json!({}), "{state}");
}

#[test]
fn published_ports_reach_containers_from_the_host_and_are_released() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let fixed = free_port();
    let spec = format!("127.0.0.1:{fixed}:80");
    let web = d
        .docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &spec,
            "-p",
            "80",
            "-p",
            "5353/udp",
            "busybox",
            "sh",
            "-c",
            "echo hello-from-web > /tmp/index.html; httpd -f -p 80 -h /tmp",
        ])
        .success()
        .stdout;
    let c = inspect(&d, &web);
    assert_eq!(c["NetworkSettings"]["Ports"]["80/tcp"][0], serde_json::json!({"HostIp": "127.0.0.1", "HostPort": fixed.to_string()}));
    let random = host_port(&c, "80/tcp", 1);
    let udp = host_port(&c, "5353/udp", 0);
    // tcp, on the fixed port and on the one the daemon chose.
    for port in [fixed, random] {
        let mut body = None;
        wait_until("httpd behind a published port", || {
            body = http_get(port);
            body.is_some()
        });
        assert!(body.unwrap().contains("hello-from-web"));
    }
    // udp: datagrams to the published port land in the container. (Debian's busybox nc has no
    // udp mode: the container's own kernel counts them, as datagrams to a port nobody listens on.)
    let no_ports = || -> u64 {
        let snmp = d.docker(&["exec", "web", "cat", "/proc/net/snmp"]).success().stdout;
        let rows: Vec<Vec<&str>> = snmp.lines().filter(|l| l.starts_with("Udp:")).map(|l| l.split_whitespace().collect()).collect();
        let col = rows[0].iter().position(|h| *h == "NoPorts").unwrap();
        rows[1][col].parse().unwrap()
    };
    let before = no_ports();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    wait_until("a datagram through the published udp port", || {
        let _ = sock.send_to(b"over-udp\n", (Ipv4Addr::LOCALHOST, udp));
        no_ports() > before
    });
    // `port` and `ps` show them.
    let port = d.docker(&["port", "web", "80"]).success().stdout;
    assert!(port.contains(&format!("127.0.0.1:{fixed}")) && port.contains(&format!("0.0.0.0:{random}")), "{port}");
    let ps = d.docker(&["ps", "--format", "{{.Ports}}"]).success().stdout;
    assert!(ps.contains(&format!("127.0.0.1:{fixed}->80/tcp")), "{ps}");

    // The port is taken: Docker's error, and nothing of the second container half made.
    let r = d.docker(&["run", "-d", "--name", "clash", "-p", &spec, "busybox", "sleep", "60"]).failure();
    assert!(r.stderr.contains("port is already allocated"), "{r:?}");
    assert_eq!(inspect(&d, "clash")["State"]["Status"], "created");
    assert!(inspect(&d, "clash")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == "");

    // Stopped: the rule and the port go.
    d.docker(&["stop", "-t", "0", "web"]).success();
    assert!(http_get(fixed).is_none());
    assert!(std::net::TcpListener::bind(("127.0.0.1", fixed)).is_ok(), "the host port is free again");
    let table = d.bridge();
    let rules = std::process::Command::new("nft").args(["list", "chain", "ip", &table, "ports"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("dnat"), "{}", String::from_utf8_lossy(&rules.stdout));
    // And -P publishes every exposed port.
    let all = d.docker(&["run", "-d", "--expose", "8080", "--expose", "9090/udp", "-P", "busybox", "sleep", "60"]).success().stdout;
    let ports = &inspect(&d, &all)["NetworkSettings"]["Ports"];
    assert!(ports["8080/tcp"][0]["HostPort"].as_str().is_some_and(|p| !p.is_empty()), "{ports}");
    assert!(ports["9090/udp"][0]["HostPort"].as_str().is_some_and(|p| !p.is_empty()), "{ports}");
}

#[test]
fn published_ports_come_back_after_berthd_is_killed_and_all_goes_when_it_stops() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    let port = free_port();
    let spec = format!("127.0.0.1:{port}:80");
    d.docker(&["run", "-d", "--name", "web", "-p", &spec, "busybox", "sh", "-c", "echo up > /tmp/index.html; httpd -f -p 80 -h /tmp"])
        .success();
    wait_until("httpd", || http_get(port).is_some());
    d.kill9();
    // The kernel's rules outlive berthd; the port is held again once it is back.
    d.launch();
    wait_until("httpd after the restart", || http_get(port).is_some());
    let r = d.docker(&["run", "-d", "-p", &spec, "busybox", "sleep", "60"]).failure();
    assert!(r.stderr.contains("port is already allocated"), "{r:?}");
    d.remove_all();
    d.stop();
    // With no container left, berthd's bridge and table go with it.
    assert!(!links().contains(&format!(": {}:", d.bridge())), "{}", links());
    assert!(!tables().contains(&d.bridge()), "{}", tables());
    d.launch();
}

/// A /24 of 10.x.y.0 for this test's own networks (free of host routes and other tests' by the
/// daemon's own checks: a clash is refused, and the next one is tried).
fn create_net(d: &TestDaemon, name: &str, extra: &[&str]) -> String {
    for i in 0..50u32 {
        let pid = std::process::id();
        let subnet = format!("10.{}.{}.0/24", 200 + (pid + i) % 50, (pid / 50 + i * 7) % 250);
        let mut args = vec!["network", "create", "--subnet", &subnet];
        args.extend_from_slice(extra);
        args.push(name);
        let r = d.docker(&args);
        if r.code == 0 {
            return subnet;
        }
        assert!(r.stderr.contains("overlaps"), "{r:?}");
    }
    panic!("no free subnet");
}

#[test]
fn user_networks_resolve_names_and_aliases_and_connect_and_disconnect() {
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    let subnet = create_net(&d, "appnet", &["--label", "team=a"]);
    let ls = d.docker(&["network", "ls", "--filter", "label=team=a", "--format", "{{.Name}} {{.Driver}}"]).success().stdout;
    assert_eq!(ls, "appnet bridge\n");
    d.docker(&["run", "-d", "--name", "db", "--network", "appnet", "--network-alias", "database", "busybox", "sleep", "60"]).success();
    let ip_db = inspect(&d, "db")["NetworkSettings"]["Networks"]["appnet"]["IPAddress"].as_str().unwrap().to_string();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(ip_db.starts_with(prefix), "{ip_db} in {subnet}");
    // By name and by alias, through the network's resolver (its gateway).
    let out = d
        .docker(&["run", "--rm", "--network", "appnet", "busybox", "sh", "-c", "cat /etc/resolv.conf; nslookup db; nslookup database"])
        .success()
        .stdout;
    assert!(out.contains(&format!("nameserver {prefix}1")), "{out}");
    assert_eq!(out.matches(&format!("Address: {ip_db}")).count(), 2, "{out}");
    // `network inspect` lists it.
    let n = json(&d.docker(&["network", "inspect", "appnet"]).success().stdout);
    assert_eq!(n[0]["Containers"].as_object().unwrap().len(), 1, "{n}");
    assert_eq!(n[0]["IPAM"]["Config"][0]["Subnet"], subnet);

    // On the default bridge there is no resolver: resolv.conf does not name one (the name
    // server given here is one nothing answers on, so no query leaves the machine).
    let r = d.docker(&["run", "--rm", "--dns", "127.0.0.1", "busybox", "sh", "-c", "cat /etc/resolv.conf; nslookup -timeout=1 db"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("nameserver 127.0.0.1") && !r.stdout.contains(&format!("nameserver {prefix}1")), "{r:?}");

    // connect (with an alias and an address) and disconnect a running container.
    d.docker(&["run", "-d", "--name", "late", "busybox", "sleep", "60"]).success();
    let ip = format!("{prefix}99");
    d.docker(&["network", "connect", "--alias", "latecomer", "--ip", &ip, "appnet", "late"]).success();
    let addrs = d.docker(&["exec", "late", "ip", "-o", "-4", "addr"]).success().stdout;
    assert!(addrs.contains(&format!("eth1    inet {ip}/24")), "{addrs}");
    let found = d.docker(&["exec", "db", "nslookup", "latecomer"]).success().stdout;
    assert!(found.contains(&format!("Address: {ip}")), "{found}");
    d.docker(&["exec", "late", "ping", "-c", "1", "-W", "2", &ip_db]).success();
    let twice = d.docker(&["network", "connect", "appnet", "late"]).failure();
    assert!(twice.stderr.contains("already exists"), "{twice:?}");
    d.docker(&["network", "disconnect", "appnet", "late"]).success();
    assert!(!d.docker(&["exec", "late", "ip", "-o", "link"]).success().stdout.contains("eth1"));
    assert_ne!(d.docker(&["exec", "db", "nslookup", "latecomer"]).code, 0);

    // berthd killed and back: the names are served again.
    d.kill9();
    d.launch();
    let again = d.docker(&["run", "--rm", "--network", "appnet", "busybox", "nslookup", "database"]).success().stdout;
    assert!(again.contains(&format!("Address: {ip_db}")), "{again}");

    // In use: not removed; then removed, with its bridge and nothing else left.
    let r = d.docker(&["network", "rm", "appnet"]).failure();
    assert!(r.stderr.contains("active endpoints"), "{r:?}");
    d.docker(&["rm", "-f", "db", "late"]).success();
    let bridge = n[0]["Options"]["com.docker.network.bridge.name"].as_str().map(str::to_string);
    d.docker(&["network", "rm", "appnet"]).success();
    let dev = bridge.unwrap_or_else(|| format!("berth-{}", &n[0]["Id"].as_str().unwrap()[..9]));
    assert!(!links().contains(&format!(": {dev}:")), "{}", links());
}

#[test]
fn internal_networks_and_bad_input() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let subnet = create_net(&d, "inner", &["--internal"]);
    let prefix = subnet.trim_end_matches("0/24").to_string();
    // No default route out of an --internal network; its members still reach each other.
    d.docker(&["run", "-d", "--name", "in1", "--network", "inner", "busybox", "sleep", "60"]).success();
    let routes = d.docker(&["exec", "in1", "ip", "route"]).success().stdout;
    assert!(!routes.contains("default"), "{routes}");
    let ip1 = inspect(&d, "in1")["NetworkSettings"]["Networks"]["inner"]["IPAddress"].as_str().unwrap().to_string();
    d.docker(&["run", "--rm", "--network", "inner", "busybox", "ping", "-c", "1", "-W", "2", &ip1]).success();

    // Docker's errors, and nothing made.
    let before = links();
    let overlap = d.docker(&["network", "create", "--subnet", &subnet, "again"]).failure();
    assert!(overlap.stderr.contains("overlaps"), "{overlap:?}");
    let gw = d.docker(&["network", "create", "--subnet", "10.254.253.0/24", "--gateway", "10.9.9.9", "gw"]).failure();
    assert!(gw.stderr.contains("10.9.9.9"), "{gw:?}");
    let unknown = d.docker(&["run", "--rm", "--network", "nosuchnet", "busybox", "true"]).failure();
    assert!(unknown.stderr.contains("network nosuchnet not found"), "{unknown:?}");
    let dup = d.docker(&["network", "create", "inner"]).failure();
    assert!(dup.stderr.contains("already exists"), "{dup:?}");
    let predefined = d.docker(&["network", "rm", "bridge"]).failure();
    assert!(predefined.stderr.contains("pre-defined"), "{predefined:?}");
    let ip = d.docker(&["run", "--rm", "--ip", &format!("{prefix}5"), "busybox", "true"]).failure();
    assert!(ip.stderr.contains("user defined networks only"), "{ip:?}");
    let taken = d.docker(&["run", "--rm", "--network", "inner", "--ip", &ip1, "busybox", "true"]).failure();
    assert!(taken.stderr.contains("already in use"), "{taken:?}");
    // Of the refused runs, no link is left on the network's bridge (in1's only).
    let id = json(&d.docker(&["network", "inspect", "inner"]).success().stdout)[0]["Id"].as_str().unwrap().to_string();
    assert_eq!(ports_of(&format!("berth-{}", &id[..9])).lines().count(), 1);
    assert!(!links().contains(": gw:") && !before.is_empty());
    // prune keeps what is in use.
    d.docker(&["network", "create", "--subnet", "10.254.252.0/24", "unused"]).success();
    let pruned = d.docker(&["network", "prune", "-f"]).success().stdout;
    assert!(pruned.contains("unused") && !pruned.contains("inner"), "{pruned}");
    d.docker(&["rm", "-f", "in1"]).success();
}

/// Debian's docker-compose (1.29, docker-py underneath) runs a two-service project on a user
/// network against berthd: up, ps, exec (by the other service's name), logs, stop/start, down.
#[test]
fn docker_compose_runs_a_project_on_a_user_network() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    if !berth_tests::have("docker-compose") {
        return;
    }
    let dir = tempfile::Builder::new().prefix("berth-compose-").tempdir().unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "version: \"3\"\nservices:\n  web:\n    image: busybox\n    command: sh -c \"cat /site/index.html || echo hello-compose > /site/index.html; httpd -f -v -p 80 -h /site\"\n    networks: [back]\n    volumes: [\"site:/site\"]\n  client:\n    image: busybox\n    command: sleep 300\n    networks: [back]\nnetworks:\n  back: {}\nvolumes:\n  site: {}\n",
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut c = std::process::Command::new("docker-compose");
        c.current_dir(dir.path()).env("DOCKER_HOST", format!("unix://{}", d.socket().display())).args(["-p", "proj"]).args(args);
        berth_tests::run_command(&mut c)
    };
    compose(&["up", "-d"]).success();
    let ps = compose(&["ps"]).success().stdout;
    assert!(ps.contains("proj_web_1") && ps.contains("proj_client_1") && ps.matches(" Up ").count() == 2, "{ps}");
    let fetch = || compose(&["exec", "-T", "client", "wget", "-qO-", "http://web/"]);
    let mut got = String::new();
    wait_until("the web service by name", || {
        got = fetch().stdout;
        got.contains("hello-compose")
    });
    assert!(compose(&["logs", "web"]).success().stdout.contains("response:200"));
    compose(&["stop", "-t", "1"]).success();
    compose(&["start"]).success();
    wait_until("the web service after a restart", || fetch().stdout.contains("hello-compose"));
    // The named volume outlives `down`, and goes with `down -v`.
    compose(&["down", "-t", "1"]).success();
    assert_eq!(d.docker(&["ps", "-aq"]).success().stdout, "");
    assert!(!d.docker(&["network", "ls"]).success().stdout.contains("proj_back"));
    assert!(d.docker(&["volume", "ls", "-q"]).success().stdout.contains("proj_site"));
    compose(&["up", "-d"]).success();
    wait_until("the web service with its volume's page", || fetch().stdout.contains("hello-compose"));
    compose(&["down", "-v", "-t", "1"]).success();
    assert_eq!(d.docker(&["volume", "ls", "-q"]).success().stdout, "");
}

/// Networks are isolated from each other, as Docker's; and where another engine's FORWARD
/// policy drops (as dockerd sets it), berth's bridges are accepted there — and not after. The
/// daemon runs in a network namespace of its own, so the firewall policy changed here is its
/// alone (with br_netfilter, traffic between two containers of one bridge goes through it).
#[test]
fn networks_are_isolated_and_another_engines_dropping_forward_policy_is_handled() {
    let Some(mut d) = TestDaemon::with_busybox_in_own_netns() else { return };
    if !berth_tests::have("iptables") || !berth_tests::have("nsenter") {
        return;
    }
    let tag = format!("berth:{}", d.bridge());
    let rules = |d: &TestDaemon| d.in_netns(&["iptables", "-w", "-S", "FORWARD"]).success().stdout;
    d.docker(&["run", "-d", "--name", "one", "busybox", "sleep", "60"]).success();
    d.docker(&["run", "-d", "--name", "two", "busybox", "sleep", "60"]).success();
    let ip_two = inspect(&d, "two")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    // Another network's container is out of reach, both ways; its own bridge's are not.
    create_net(&d, "elsewhere", &[]);
    d.docker(&["run", "-d", "--name", "far", "--network", "elsewhere", "busybox", "sleep", "60"]).success();
    let ip_far = inspect(&d, "far")["NetworkSettings"]["Networks"]["elsewhere"]["IPAddress"].as_str().unwrap().to_string();
    d.docker(&["exec", "one", "ping", "-c", "1", "-W", "2", &ip_two]).success();
    assert_ne!(d.docker(&["exec", "one", "ping", "-c", "1", "-W", "1", &ip_far]).code, 0, "isolated networks");
    let ip_one = inspect(&d, "one")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    assert_ne!(d.docker(&["exec", "far", "ping", "-c", "1", "-W", "1", &ip_one]).code, 0, "isolated networks");
    assert!(!rules(&d).contains(&tag), "no rules where the policy accepts");

    // The policy turns to drop: berth's accepts come within its next look (every 5 s).
    d.in_netns(&["iptables", "-w", "-P", "FORWARD", "DROP"]).success();
    wait_until("berth's accepts in the FORWARD chain", || rules(&d).matches(&tag).count() == 4);
    d.docker(&["exec", "one", "ping", "-c", "1", "-W", "2", &ip_two]).success();
    // And back to accept: they go.
    d.in_netns(&["iptables", "-w", "-P", "FORWARD", "ACCEPT"]).success();
    wait_until("berth's accepts to go", || !rules(&d).contains(&tag));
    // Dropping again, then berthd stops with nothing running: it takes them out.
    d.in_netns(&["iptables", "-w", "-P", "FORWARD", "DROP"]).success();
    wait_until("berth's accepts in the FORWARD chain", || rules(&d).contains(&tag));
    d.remove_all();
    d.docker(&["network", "rm", "elsewhere"]).success();
    let pid = d.pid();
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    d.stop();
    let left = run_in(&netns, &["iptables", "-w", "-S", "FORWARD"]);
    assert!(!left.contains(&tag), "{left}");
    d.launch();
}

/// `args` run in the network namespace `ns` (kept open by the caller).
fn run_in(ns: &std::fs::File, args: &[&str]) -> String {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd());
    let out = std::process::Command::new("nsenter").arg(format!("--net={path}")).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a user network's resolver does not know it asks the container's `--dns` servers (here
/// a stand-in on the host's loopback: nothing leaves the machine), relaying the answer; the
/// network's options (bridge name, MTU) reach the bridge and the container's link.
#[test]
fn the_resolver_forwards_other_names_and_network_options_apply() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    // A stand-in upstream on 127.0.0.153:53 answering every question with 10.9.8.7.
    let Ok(upstream) = UdpSocket::bind("127.0.0.153:53") else {
        assert!(std::env::var("CI").is_err(), "127.0.0.153:53 is taken");
        eprintln!("SKIP: 127.0.0.153:53 is taken");
        return;
    };
    upstream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut answered = 0;
        while let Ok((n, from)) = upstream.recv_from(&mut buf) {
            // The question back, flagged an answer, with one A record pointing at it.
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            r[3] = 0x80;
            r[6..8].copy_from_slice(&1u16.to_be_bytes());
            r[8..12].fill(0);
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
            let _ = upstream.send_to(&r, from);
            answered += 1;
            // After the first, whatever else comes at once (busybox asks for AAAA too).
            upstream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        answered
    });
    create_net(&d, "optnet", &["-o", "com.docker.network.bridge.name=berth-topt", "-o", "com.docker.network.driver.mtu=1400"]);
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--network",
            "optnet",
            "--dns",
            "127.0.0.153",
            "--dns-search",
            "corp.test",
            "busybox",
            "sh",
            "-c",
            "cat /etc/resolv.conf; ip -o link show eth0; nslookup outside.test",
        ])
        .success()
        .stdout;
    assert!(out.contains("search corp.test") && !out.contains("nameserver 127.0.0.153"), "the resolver is the only name server: {out}");
    assert!(out.contains("mtu 1400"), "{out}");
    assert!(out.contains("Address: 10.9.8.7"), "{out}");
    assert!(server.join().unwrap() >= 1);
    assert!(links().contains(": berth-topt:"), "{}", links());
    d.docker(&["network", "rm", "optnet"]).success();
    assert!(!links().contains(": berth-topt:"));
}

/// Another host, played by a network namespace of the test's own joined to the host by a veth
/// pair on a /30 of its own: removed when the test ends, passed or not.
struct OtherHost {
    ns: String,
    link: String,
}

impl OtherHost {
    fn new() -> Option<OtherHost> {
        let id = std::process::id();
        let h = OtherHost { ns: format!("berth-remote-{id}"), link: format!("berth-rm{}", id % 100_000) };
        let ip = |args: &[&str]| std::process::Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        let (x, y) = ((id / 64) % 250, (id % 64) * 4);
        let host_ip = format!("10.253.{x}.{}/30", y + 1);
        let remote_ip = format!("10.253.{x}.{}/30", y + 2);
        let made = ip(&["netns", "add", &h.ns])
            && ip(&["link", "add", &h.link, "type", "veth", "peer", "name", "eth0", "netns", &h.ns])
            && ip(&["addr", "add", &host_ip, "dev", &h.link])
            && ip(&["link", "set", &h.link, "up"])
            && ip(&["-n", &h.ns, "addr", "add", &remote_ip, "dev", "eth0"])
            && ip(&["-n", &h.ns, "link", "set", "eth0", "up"])
            && ip(&["-n", &h.ns, "link", "set", "lo", "up"]);
        made.then_some(h)
    }

    /// The host's address as the other host sees it.
    fn host_addr(&self) -> String {
        let out = std::process::Command::new("ip").args(["-o", "-4", "addr", "show", "dev", &self.link]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap().split('/').next().unwrap().to_string()
    }

    /// `GET /` on `addr:port` from the other host (a thread that enters its namespace), None
    /// while nothing answers.
    fn http_get(&self, addr: &str, port: u16) -> Option<String> {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns)).ok()?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let mut s = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out).filter(|o| o.starts_with("HTTP/"))
        })
        .join()
        .ok()
        .flatten()
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A published port is reached from other hosts too (through prerouting and forwarding), on
/// any of the host's addresses, or only on the one it is published on.
#[test]
fn published_ports_reach_containers_from_other_hosts() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let Some(other) = OtherHost::new() else { panic!("making the other host's namespace and link failed") };
    let host = other.host_addr();
    let (any, only_local) = (free_port(), free_port());
    let web = d
        .docker(&[
            "run",
            "-d",
            "-p",
            &format!("{any}:80"),
            "-p",
            &format!("127.0.0.1:{only_local}:80"),
            "busybox",
            "sh",
            "-c",
            "echo from-afar > /tmp/index.html; httpd -f -p 80 -h /tmp",
        ])
        .success()
        .stdout;
    wait_until("httpd", || http_get(any).is_some());
    let mut got = None;
    wait_until("the page from the other host", || {
        got = other.http_get(&host, any);
        got.is_some()
    });
    assert!(got.unwrap().contains("from-afar"));
    // Published on 127.0.0.1 only: not reachable on the host's other addresses.
    assert!(other.http_get(&host, only_local).is_none());
    d.docker(&["rm", "-f", web.trim()]).success();
}
