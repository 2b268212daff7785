//! `berth events`: berthd's events as they come (`--since` replays kept ones, `--until` ends),
//! filtered as Docker filters them, printed as the docker CLI prints them or by `--format`.

use std::io::{BufRead, Write};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::http::{Client, query};

#[derive(Args)]
pub(crate) struct EventsArgs {
    /// Show events created since this time (a Unix time, a date, or a duration like `10m`).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Stream events until this time.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Filter (`type=container`, `event=start`, `container=web`, `label=k=v`, …).
    #[arg(short = 'f', long = "filter")]
    pub(crate) filter: Vec<String>,
    /// A Go template, or `json`.
    #[arg(long)]
    pub(crate) format: Option<String>,
}

/// The docker CLI's line: the time (RFC 3339, nanoseconds), type, action, actor and its
/// attributes sorted (`(image=busybox, name=web)`).
fn line(v: &Value) -> String {
    let nanos = v["timeNano"].as_i64().unwrap_or(0).max(0) as u64;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
    let mut s = format!(
        "{} {} {} {}",
        humantime::format_rfc3339_nanos(t),
        v["Type"].as_str().unwrap_or(""),
        v["Action"].as_str().unwrap_or(""),
        v["Actor"]["ID"].as_str().unwrap_or("")
    );
    if let Some(attrs) = v["Actor"]["Attributes"].as_object().filter(|a| !a.is_empty()) {
        let mut kv: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
        kv.sort();
        s.push_str(&format!(" ({})", kv.join(", ")));
    }
    s
}

pub(crate) fn events(client: &Client, a: EventsArgs) -> anyhow::Result<i32> {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(s) = a.since {
        q.push(("since", s));
    }
    if let Some(u) = a.until {
        q.push(("until", u));
    }
    if !a.filter.is_empty() {
        q.push(("filters", crate::filters_json(&a.filter)));
    }
    let template = match a.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some(crate::format::Template::parse("{{json .}}")?),
        Some(f) => Some(crate::format::Template::parse(f)?),
    };
    let resp = client.send("GET", &format!("/events?{}", query(&q)), None, false)?.ok()?;
    let mut out = std::io::stdout().lock();
    for l in std::io::BufReader::new(resp.body).lines() {
        let l = l?;
        if l.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&l).with_context(|| format!("reading an event: {l:?}"))?;
        let text = match &template {
            Some(t) => t.render(&v)?,
            None => line(&v),
        };
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_the_docker_cli_prints_them() {
        let v = serde_json::json!({"Type": "container", "Action": "start", "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}, "timeNano": 1_700_000_000_000_000_005i64});
        assert_eq!(line(&v), "2023-11-14T22:13:20.000000005Z container start abc (image=busybox, name=web)");
    }
}
