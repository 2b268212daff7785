//! `berth network …` and `berth port`, as Docker's.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::format;
use crate::http::{Client, query};

#[derive(Subcommand)]
pub(crate) enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks in detail.
    Inspect(InspectArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks.
    Prune(PruneArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    #[arg(long)]
    subnet: Vec<String>,
    #[arg(long)]
    gateway: Vec<String>,
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    #[arg(long)]
    internal: bool,
    #[arg(long)]
    attachable: bool,
    #[arg(long)]
    ipv6: bool,
    #[arg(long = "label")]
    label: Vec<String>,
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    name: String,
}

#[derive(Args)]
pub(crate) struct LsArgs {
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(short = 'q', long)]
    quiet: bool,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RmArgs {
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(long = "filter")]
    filter: Vec<String>,
}

#[derive(Args)]
pub(crate) struct ConnectArgs {
    #[arg(long)]
    alias: Vec<String>,
    #[arg(long)]
    ip: Option<String>,
    network: String,
    container: String,
}

#[derive(Args)]
pub(crate) struct DisconnectArgs {
    #[arg(short = 'f', long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(Args)]
pub(crate) struct PortArgs {
    container: String,
    /// `PORT[/PROTO]`
    port: Option<String>,
}

/// `key=value` pairs (labels, options).
fn pairs(list: &[String]) -> serde_json::Map<String, Value> {
    list.iter().map(|l| l.split_once('=').map_or((l.clone(), json!("")), |(k, v)| (k.to_string(), json!(v)))).collect()
}

/// Docker's `filters` query parameter from `key=value` flags.
pub(crate) fn filters(list: &[String]) -> String {
    let mut m: serde_json::Map<String, Value> = serde_json::Map::new();
    for f in list {
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        let entry = m.entry(k.to_string()).or_insert_with(|| json!({}));
        if let Some(o) = entry.as_object_mut() {
            o.insert(v.to_string(), json!(true));
        }
    }
    Value::Object(m).to_string()
}

pub(crate) fn run(client: &Client, cmd: NetworkCmd) -> anyhow::Result<i32> {
    match cmd {
        NetworkCmd::Create(a) => {
            let mut config = Vec::new();
            for (i, subnet) in a.subnet.iter().enumerate() {
                let mut c = json!({"Subnet": subnet});
                if let Some(g) = a.gateway.get(i) {
                    c["Gateway"] = json!(g);
                }
                if let Some(r) = a.ip_range.get(i) {
                    c["IPRange"] = json!(r);
                }
                config.push(c);
            }
            if a.subnet.is_empty() && (!a.gateway.is_empty() || !a.ip_range.is_empty()) {
                anyhow::bail!("every ip-range or gateway must have a corresponding subnet");
            }
            let body = json!({
                "Name": a.name,
                "Driver": a.driver,
                "Internal": a.internal,
                "Attachable": a.attachable,
                "EnableIPv6": a.ipv6,
                "IPAM": {"Driver": "default", "Config": config},
                "Options": pairs(&a.opt),
                "Labels": pairs(&a.label),
            });
            let r = client.post_json("/networks/create", &body)?;
            println!("{}", r["Id"].as_str().unwrap_or_default());
            Ok(0)
        }
        NetworkCmd::Ls(a) => {
            let list = client.get(&format!("/networks?{}", query(&[("filters", filters(&a.filter))])))?;
            let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
            items.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
            if a.quiet {
                for n in &items {
                    let id = n["Id"].as_str().unwrap_or_default();
                    println!("{}", if a.no_trunc { id } else { &id[..12.min(id.len())] });
                }
                return Ok(0);
            }
            let rows: Vec<Value> = items
                .iter()
                .map(|n| {
                    let id = n["Id"].as_str().unwrap_or_default();
                    json!({
                        "ID": if a.no_trunc { id } else { &id[..12.min(id.len())] },
                        "Name": n["Name"],
                        "Driver": n["Driver"],
                        "Scope": n["Scope"],
                        "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                        "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                        "CreatedAt": n["Created"],
                        "Labels": n["Labels"].as_object().map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    })
                })
                .collect();
            let template = a.format.unwrap_or_else(|| "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into());
            print!("{}", format::format_list(&template, &rows, "NETWORK ID")?);
            Ok(0)
        }
        NetworkCmd::Inspect(a) => crate::system::inspect_each(&a.networks, a.format.as_deref(), |n| client.get(&format!("/networks/{n}"))),
        NetworkCmd::Rm(a) => crate::each(&a.networks, true, |n| match client.delete(&format!("/networks/{n}")) {
            Err(e) if a.force && e.to_string().contains("not found") => Ok(()),
            r => r.map(|_| ()),
        }),
        NetworkCmd::Prune(a) => {
            if !a.force {
                eprintln!("WARNING! This will remove all custom networks not used by at least one container.");
                eprint!("Are you sure you want to continue? [y/N] ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let r = client.post(&format!("/networks/prune?{}", query(&[("filters", filters(&a.filter))])))?.json()?;
            let deleted: Vec<&str> = r["NetworksDeleted"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for d in deleted {
                    println!("{d}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect(a) => {
            let mut ep = json!({"Aliases": a.alias});
            if let Some(ip) = a.ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            client.post_json(&format!("/networks/{}/connect", a.network), &json!({"Container": a.container, "EndpointConfig": ep}))?;
            Ok(0)
        }
        NetworkCmd::Disconnect(a) => {
            client.post_json(&format!("/networks/{}/disconnect", a.network), &json!({"Container": a.container, "Force": a.force}))?;
            Ok(0)
        }
    }
}

/// `berth port CONTAINER [PORT[/PROTO]]`.
pub(crate) fn port(client: &Client, a: PortArgs) -> anyhow::Result<i32> {
    let c = client.get(&format!("/containers/{}/json", a.container))?;
    let ports = c["NetworkSettings"]["Ports"].as_object().cloned().unwrap_or_default();
    let want = a.port.map(|p| if p.contains('/') { p } else { format!("{p}/tcp") });
    let mut found = false;
    for (key, bindings) in &ports {
        if want.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for b in bindings.as_array().into_iter().flatten() {
            found = true;
            let addr = format!("{}:{}", b["HostIp"].as_str().unwrap_or_default(), b["HostPort"].as_str().unwrap_or_default());
            match &want {
                Some(_) => println!("{addr}"),
                None => println!("{key} -> {addr}"),
            }
        }
    }
    if !found && let Some(w) = want {
        anyhow::bail!("Error: No public port '{w}' published for {}", a.container);
    }
    Ok(0)
}
