//! `berth volume …`, as Docker's.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::format;
use crate::http::{Client, query};
use crate::networks::filters;

#[derive(Subcommand)]
pub(crate) enum VolumeCmd {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes in detail.
    Inspect(InspectArgs),
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused volumes.
    Prune(PruneArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    #[arg(long = "label")]
    label: Vec<String>,
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    #[arg(long = "name")]
    name_flag: Option<String>,
    name: Option<String>,
}

#[derive(Args)]
pub(crate) struct LsArgs {
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RmArgs {
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    #[arg(short = 'f', long)]
    force: bool,
    /// All unused volumes, not only anonymous ones.
    #[arg(short = 'a', long)]
    all: bool,
    #[arg(long = "filter")]
    filter: Vec<String>,
}

fn pairs(list: &[String]) -> serde_json::Map<String, Value> {
    list.iter().map(|l| l.split_once('=').map_or((l.clone(), json!("")), |(k, v)| (k.to_string(), json!(v)))).collect()
}

pub(crate) fn run(client: &Client, cmd: VolumeCmd) -> anyhow::Result<i32> {
    match cmd {
        VolumeCmd::Create(a) => {
            let name = a.name.or(a.name_flag).unwrap_or_default();
            let body = json!({"Name": name, "Driver": a.driver, "DriverOpts": pairs(&a.opt), "Labels": pairs(&a.label)});
            let v = client.post_json("/volumes/create", &body)?;
            println!("{}", v["Name"].as_str().unwrap_or_default());
            Ok(0)
        }
        VolumeCmd::Ls(a) => {
            let list = client.get(&format!("/volumes?{}", query(&[("filters", filters(&a.filter))])))?;
            let mut items: Vec<Value> = list["Volumes"].as_array().cloned().unwrap_or_default();
            items.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
            if a.quiet {
                for v in &items {
                    println!("{}", v["Name"].as_str().unwrap_or_default());
                }
                return Ok(0);
            }
            let rows: Vec<Value> = items
                .iter()
                .map(|v| {
                    json!({
                        "Name": v["Name"],
                        "Driver": v["Driver"],
                        "Scope": v["Scope"],
                        "Mountpoint": v["Mountpoint"],
                        "CreatedAt": v["CreatedAt"],
                        "Labels": v["Labels"].as_object().map(|l| l.iter().map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    })
                })
                .collect();
            let template = a.format.unwrap_or_else(|| "table {{.Driver}}\t{{.Name}}".into());
            print!("{}", format::format_list(&template, &rows, "DRIVER")?);
            Ok(0)
        }
        VolumeCmd::Inspect(a) => crate::system::inspect_each(&a.volumes, a.format.as_deref(), |n| client.get(&format!("/volumes/{n}"))),
        VolumeCmd::Rm(a) => crate::each(&a.volumes, true, |n| {
            client.delete(&format!("/volumes/{n}?{}", query(&[("force", a.force.to_string())]))).map(|_| ())
        }),
        VolumeCmd::Prune(a) => {
            if !a.force {
                eprintln!("WARNING! This will remove anonymous local volumes not used by at least one container.");
                eprint!("Are you sure you want to continue? [y/N] ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let mut f = a.filter.clone();
            if a.all {
                f.push("all=true".into());
            }
            let r = client.post(&format!("/volumes/prune?{}", query(&[("filters", filters(&f))])))?.json()?;
            let deleted: Vec<&str> = r["VolumesDeleted"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if !deleted.is_empty() {
                println!("Deleted Volumes:");
                for d in deleted {
                    println!("{d}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", crate::human_size(r["SpaceReclaimed"].as_u64().unwrap_or(0)));
            Ok(0)
        }
    }
}
