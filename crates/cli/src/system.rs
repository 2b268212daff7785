//! info, version, and inspect of any kind of object.

use clap::Args;
use serde_json::{Value, json};

use crate::http::Client;
use crate::*;

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[arg(short = 'f', long)]
    pub(crate) format: Option<String>,
    #[arg(short = 's', long)]
    pub(crate) size: bool,
    #[arg(long = "type")]
    pub(crate) typ: Option<String>,
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Args)]
pub(crate) struct InfoArgs {
    #[arg(short = 'f', long)]
    pub(crate) format: Option<String>,
}

#[derive(Args)]
pub(crate) struct VersionArgs {
    #[arg(short = 'f', long)]
    pub(crate) format: Option<String>,
}

/// `berth inspect`.
pub(crate) fn cmd_inspect(client: &Client, a: InspectArgs) -> anyhow::Result<i32> {
    let InspectArgs { format, size, typ, names } = a;
    inspect(client, format.as_deref(), size, typ.as_deref(), &names)
}

/// `berth info`.
pub(crate) fn info(client: &Client, a: InfoArgs) -> anyhow::Result<i32> {
    let InfoArgs { format } = a;
    let v = client.get("/info")?;
    match format {
        Some(f) => println!("{}", format::render(&f, &v)?),
        None => {
            for k in [
                "Containers",
                "ContainersRunning",
                "ContainersPaused",
                "ContainersStopped",
                "Images",
                "ServerVersion",
                "Driver",
                "LoggingDriver",
                "CgroupDriver",
                "CgroupVersion",
                "KernelVersion",
                "OperatingSystem",
                "OSType",
                "Architecture",
                "NCPU",
                "MemTotal",
                "DockerRootDir",
                "Name",
            ] {
                println!(" {k}: {}", format::show(&v[k]));
            }
        }
    }
    Ok(0)
}

/// `berth version`.
pub(crate) fn version(client: &Client, a: VersionArgs) -> anyhow::Result<i32> {
    let VersionArgs { format } = a;
    let server = client.get("/version")?;
    let v = json!({
        "Client": {"Version": env!("CARGO_PKG_VERSION"), "ApiVersion": http::API_VERSION, "Os": "linux", "Arch": server["Arch"]},
        "Server": server,
    });
    match format {
        Some(f) => println!("{}", format::render(&f, &v)?),
        None => {
            println!("Client:\n Version:\t{}\n API version:\t{}\n", env!("CARGO_PKG_VERSION"), http::API_VERSION);
            println!(
                "Server:\n Version:\t{}\n API version:\t{} (minimum version {})\n Kernel:\t{}",
                format::show(&server["Version"]),
                format::show(&server["ApiVersion"]),
                format::show(&server["MinAPIVersion"]),
                format::show(&server["KernelVersion"])
            );
        }
    }
    Ok(0)
}

pub(crate) fn inspect(client: &Client, format: Option<&str>, size: bool, typ: Option<&str>, names: &[String]) -> anyhow::Result<i32> {
    inspect_each(names, format, |n| {
        let container = || client.get(&format!("/containers/{n}/json?size={}", u8::from(size)));
        let image = || client.get(&format!("/images/{n}/json"));
        // One kind asked for: the daemon's own error; either kind: Docker's "No such object".
        match typ {
            Some("container") => container(),
            Some("image") => image(),
            _ => container().or_else(|_| image()).map_err(|_| anyhow::anyhow!("Error: No such object: {n}")),
        }
    })
}

/// `inspect` of each name as `get` finds it: a JSON array, or each through `format`; exit 1
/// when any was not found (its error printed), as Docker's.
pub(crate) fn inspect_each(names: &[String], format: Option<&str>, get: impl Fn(&str) -> anyhow::Result<Value>) -> anyhow::Result<i32> {
    let mut found = Vec::new();
    let mut failed = false;
    for n in names {
        match get(n) {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    match format {
        Some(f) => {
            for v in &found {
                println!("{}", format::render(f, v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(found))?),
    }
    Ok(i32::from(failed))
}
