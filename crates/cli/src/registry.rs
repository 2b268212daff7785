//! `pull`, `push`, `login`, `logout`, and the pull `run` and `create` make for a missing image:
//! credentials from Docker's own config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`) and its credential helpers, as the docker CLI keeps them; progress
//! drawn per layer on a terminal, as plain status lines otherwise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine as _;
use berth_models::messages::JsonMessage;
use clap::Args;
use serde_json::{Value, json};

use crate::http::{Client, query};
use crate::stream;

/// Where Docker Hub's credentials are kept, and how its references are written.
const HUB_KEY: &str = "https://index.docker.io/v1/";
const HUB: &str = "docker.io";

#[derive(Args)]
pub(crate) struct PullArgs {
    /// Print only the image's name at the end.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// `os/arch[/variant]` of a multi-platform image.
    #[arg(long)]
    pub(crate) platform: Option<String>,
    #[arg(short = 'a', long = "all-tags")]
    pub(crate) all_tags: bool,
    pub(crate) name: String,
}

#[derive(Args)]
pub(crate) struct PushArgs {
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// Push every local tag of the repository.
    #[arg(short = 'a', long = "all-tags")]
    pub(crate) all_tags: bool,
    pub(crate) name: String,
}

#[derive(Args)]
pub(crate) struct LoginArgs {
    #[arg(short = 'u', long)]
    pub(crate) username: Option<String>,
    #[arg(short = 'p', long)]
    pub(crate) password: Option<String>,
    #[arg(long = "password-stdin")]
    pub(crate) password_stdin: bool,
    pub(crate) server: Option<String>,
}

#[derive(Args)]
pub(crate) struct LogoutArgs {
    pub(crate) server: Option<String>,
}

/// A reference as the docker CLI reads one: `[domain/]path[:tag][@digest]`; the domain is the
/// first component when it has a `.` or `:` or is `localhost`.
pub(crate) struct Name {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Name {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Name> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace()) {
            bail!("invalid reference format: {s:?}");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (s, None),
        };
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        let (domain, path) = match repo.split_once('/') {
            Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => (d.to_string(), p.to_string()),
            _ => (HUB.to_string(), repo.to_string()),
        };
        let domain = if domain == "index.docker.io" { HUB.to_string() } else { domain };
        let path = if domain == HUB && !path.contains('/') { format!("library/{path}") } else { path };
        if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
            bail!("invalid reference format: repository name ({path}) must be lowercase");
        }
        Ok(Name { domain, path, tag, digest })
    }

    /// `docker.io/library/busybox`
    pub(crate) fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `docker.io/library/busybox:latest`, as the docker CLI prints what it pulled.
    pub(crate) fn full(&self) -> String {
        let mut s = self.repository();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The key credentials for this registry are stored under.
    pub(crate) fn auth_key(&self) -> String {
        auth_key(&self.domain)
    }
}

fn auth_key(domain: &str) -> String {
    if domain == HUB { HUB_KEY.to_string() } else { domain.to_string() }
}

/// `https://index.docker.io/v1/`, `localhost:5000`, `https://reg.example/` → the stored key.
fn server_key(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    let host = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = host.split('/').next().unwrap_or("");
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => HUB_KEY.to_string(),
        h => h.to_string(),
    }
}

fn config_dir() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".docker"),
    }
}

fn read_config() -> anyhow::Result<Value> {
    let path = config_dir().join("config.json");
    match std::fs::read(&path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Written whole (temp file, then rename), readable by its owner only, as Docker writes it.
fn write_config(v: &Value) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("config.json");
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(v)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The credential helper for `key`: `credHelpers` by registry, else `credsStore`.
fn helper(config: &Value, key: &str) -> Option<String> {
    let by_registry =
        config["credHelpers"].get(key).or_else(|| config["credHelpers"].get(key.trim_start_matches("https://"))).and_then(Value::as_str);
    by_registry.or_else(|| config["credsStore"].as_str()).filter(|h| !h.is_empty()).map(str::to_string)
}

/// Run `docker-credential-<helper> <action>` with `input` on its stdin, as Docker does.
fn run_helper(helper: &str, action: &str, input: &str) -> anyhow::Result<String> {
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg(action)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running the credential helper {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        bail!("{program} {action}: {}", if text.is_empty() { String::from_utf8_lossy(&out.stderr).trim().to_string() } else { text });
    }
    Ok(text)
}

/// The API's `AuthConfig` for `key` from the config file or its helper; empty when none.
pub(crate) fn credentials(key: &str) -> anyhow::Result<Value> {
    let config = read_config()?;
    if let Some(h) = helper(&config, key) {
        return match run_helper(&h, "get", key) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).with_context(|| format!("the credential helper {h}'s answer"))?;
                let (user, secret) = (v["Username"].as_str().unwrap_or(""), v["Secret"].as_str().unwrap_or(""));
                Ok(if user == "<token>" {
                    json!({"identitytoken": secret, "serveraddress": key})
                } else {
                    json!({"username": user, "password": secret, "serveraddress": key})
                })
            }
            // Nothing stored for this registry: anonymous, as Docker goes on.
            Err(e) if e.to_string().contains("credentials not found") => Ok(json!({})),
            Err(e) => Err(e),
        };
    }
    let entry = &config["auths"][key];
    let mut out = json!({"serveraddress": key});
    if let Some(a) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD.decode(a.trim()).context("the stored credentials are not base64")?;
        let text = String::from_utf8(raw).context("the stored credentials are not text")?;
        let (u, p) = text.split_once(':').context("the stored credentials are not user:password")?;
        out["username"] = json!(u);
        out["password"] = json!(p);
    }
    if let Some(t) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        out["identitytoken"] = json!(t);
    }
    Ok(if out.as_object().is_some_and(|o| o.len() > 1) { out } else { json!({}) })
}

/// `X-Registry-Auth` for `name`'s registry.
fn auth_header(key: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let creds = credentials(key)?;
    if creds.as_object().is_none_or(|o| o.is_empty()) {
        return Ok(Vec::new());
    }
    Ok(vec![("X-Registry-Auth", base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&creds)?))])
}

/// Show a progress stream: on a terminal one line per layer, redrawn in place; otherwise each
/// status as a line (progress bars left out, as the docker CLI does). Fails with the stream's
/// error. Returns the last `aux` seen.
pub(crate) fn show_progress(body: impl Read, out: &mut dyn Write, tty: bool, quiet: bool) -> anyhow::Result<Option<Value>> {
    let mut lines: Vec<String> = Vec::new(); // ids in the order they appeared (terminal)
    let mut aux = None;
    let reader = BufReader::new(body);
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let m: JsonMessage = serde_json::from_str(&line).with_context(|| format!("the daemon's progress is not JSON: {line}"))?;
        if let Some(e) = m.error.as_ref().or(m.error_detail.as_ref().map(|d| &d.message)) {
            bail!("{e}");
        }
        if m.aux.is_some() {
            aux = m.aux.clone();
        }
        if quiet {
            continue;
        }
        let status = m.status.clone().or_else(|| m.stream.clone()).unwrap_or_default();
        if status.is_empty() {
            continue;
        }
        match (&m.id, tty) {
            (Some(id), true) => {
                let text = match &m.progress {
                    Some(p) => format!("{id}: {status} {p}"),
                    None => format!("{id}: {status}"),
                };
                match lines.iter().position(|l| l == id) {
                    Some(i) => {
                        let up = lines.len() - i;
                        write!(out, "\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")?;
                    }
                    None => {
                        lines.push(id.clone());
                        writeln!(out, "{text}")?;
                    }
                }
            }
            // Progress bars only on a terminal.
            (Some(_), false) if m.progress_detail.as_ref().is_some_and(|p| p.total.is_some()) => {}
            (Some(id), false) => writeln!(out, "{id}: {status}")?,
            (None, _) => {
                // A message without an id ends the per-layer block on a terminal.
                lines.clear();
                writeln!(out, "{status}")?;
            }
        }
        out.flush()?;
    }
    Ok(aux)
}

/// Pull `name` through the daemon, its progress to `out`.
pub(crate) fn pull_image(
    client: &Client,
    name: &str,
    platform: Option<&str>,
    out: &mut dyn Write,
    tty: bool,
    quiet: bool,
) -> anyhow::Result<Name> {
    let mut n = Name::parse(name)?;
    if n.tag.is_none() && n.digest.is_none() {
        if !quiet {
            writeln!(out, "Using default tag: latest")?;
        }
        n.tag = Some("latest".into());
    }
    let mut q = vec![("fromImage", n.repository())];
    q.push(("tag", n.digest.clone().or_else(|| n.tag.clone()).unwrap_or_default()));
    if let Some(p) = platform {
        q.push(("platform", p.to_string()));
    }
    let resp = client.post_with(&format!("/images/create?{}", query(&q)), &auth_header(&n.auth_key())?)?.ok()?;
    show_progress(resp.body, out, tty, quiet)?;
    Ok(n)
}

/// `berth pull`.
pub(crate) fn pull(client: &Client, a: PullArgs) -> anyhow::Result<i32> {
    let tty = stream::is_tty(1);
    let mut stdout = std::io::stdout().lock();
    if a.all_tags {
        let n = Name::parse(&a.name)?;
        if n.tag.is_some() || n.digest.is_some() {
            bail!("berth: tag can't be used with --all-tags/-a");
        }
        let mut q = vec![("fromImage", n.repository())];
        if let Some(p) = &a.platform {
            q.push(("platform", p.clone()));
        }
        let resp = client.post_with(&format!("/images/create?{}", query(&q)), &auth_header(&n.auth_key())?)?.ok()?;
        show_progress(resp.body, &mut stdout, tty, a.quiet)?;
        writeln!(stdout, "{}", n.repository())?;
        return Ok(0);
    }
    let n = pull_image(client, &a.name, a.platform.as_deref(), &mut stdout, tty, a.quiet)?;
    writeln!(stdout, "{}", n.full())?;
    Ok(0)
}

/// `berth push`.
pub(crate) fn push(client: &Client, a: PushArgs) -> anyhow::Result<i32> {
    let n = Name::parse(&a.name)?;
    if n.digest.is_some() {
        bail!("berth: cannot push a digest reference");
    }
    let tag = match (&n.tag, a.all_tags) {
        (Some(_), true) => bail!("berth: tag can't be used with --all-tags/-a"),
        (Some(t), false) => t.clone(),
        (None, true) => String::new(),
        (None, false) => {
            if !a.quiet {
                println!("Using default tag: latest");
            }
            "latest".into()
        }
    };
    let path = format!("/images/{}/push?{}", n.repository(), query(&[("tag", tag)]));
    let resp = client.post_with(&path, &auth_header(&n.auth_key())?)?.ok()?;
    let tty = stream::is_tty(1);
    show_progress(resp.body, &mut std::io::stdout().lock(), tty, a.quiet)?;
    if a.quiet {
        println!("{}", n.full());
    }
    Ok(0)
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// A password typed without echo on a terminal.
fn prompt_password() -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let p = prompt("Password: ");
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    p
}

/// `berth login`.
pub(crate) fn login(client: &Client, a: LoginArgs) -> anyhow::Result<i32> {
    let key = server_key(a.server.as_deref().unwrap_or(""));
    if a.password.is_some() && a.password_stdin {
        bail!("berth: --password and --password-stdin are mutually exclusive");
    }
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin => bail!("berth: must provide --username with --password-stdin"),
        None => prompt("Username: ")?,
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        prompt_password()?
    };
    if username.is_empty() || password.is_empty() {
        bail!("berth: username and password are required");
    }
    let body = json!({"username": username, "password": password, "serveraddress": key});
    let answer = client.post_json("/auth", &body)?;
    let token = answer["IdentityToken"].as_str().unwrap_or("").to_string();
    let mut config = read_config()?;
    match helper(&config, &key) {
        Some(h) => {
            let (user, secret) = if token.is_empty() { (username.as_str(), password.as_str()) } else { ("<token>", token.as_str()) };
            run_helper(&h, "store", &json!({"ServerURL": key, "Username": user, "Secret": secret}).to_string())?;
        }
        None => {
            let mut entry = BTreeMap::new();
            if token.is_empty() {
                entry.insert("auth", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")));
            } else {
                entry.insert("auth", base64::engine::general_purpose::STANDARD.encode(format!("{username}:")));
                entry.insert("identitytoken", token);
            }
            if !config["auths"].is_object() {
                config["auths"] = json!({});
            }
            config["auths"][&key] = json!(entry);
            write_config(&config)?;
        }
    }
    println!("Login Succeeded");
    Ok(0)
}

/// `berth logout`.
pub(crate) fn logout(a: LogoutArgs) -> anyhow::Result<i32> {
    let key = server_key(a.server.as_deref().unwrap_or(""));
    let mut config = read_config()?;
    let stored = config["auths"].get(&key).is_some();
    if let Some(h) = helper(&config, &key) {
        let _ = run_helper(&h, "erase", &key);
    } else if !stored {
        println!("Not logged in to {key}");
        return Ok(0);
    }
    println!("Removing login credentials for {key}");
    if let Some(auths) = config["auths"].as_object_mut() {
        auths.remove(&key);
        write_config(&config)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_the_docker_cli_reads_them() {
        let n = Name::parse("busybox").unwrap();
        assert_eq!((n.repository(), n.tag.clone(), n.auth_key()), ("docker.io/library/busybox".to_string(), None, HUB_KEY.to_string()));
        let n = Name::parse("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!((n.domain.as_str(), n.path.as_str(), n.tag.as_deref()), ("127.0.0.1:5000", "a/b", Some("1")));
        assert_eq!(n.full(), "127.0.0.1:5000/a/b:1");
        let n = Name::parse("localhost/x@sha256:ab").unwrap();
        assert_eq!((n.domain.as_str(), n.digest.as_deref()), ("localhost", Some("sha256:ab")));
        assert_eq!(Name::parse("user/app:v2").unwrap().repository(), "docker.io/user/app");
        assert!(Name::parse("Upper").is_err());
    }

    #[test]
    fn login_servers_are_stored_under_dockers_keys() {
        assert_eq!(server_key(""), HUB_KEY);
        assert_eq!(server_key("docker.io"), HUB_KEY);
        assert_eq!(server_key("https://index.docker.io/v1/"), HUB_KEY);
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
        assert_eq!(server_key("https://reg.example/"), "reg.example");
    }

    #[test]
    fn progress_without_a_terminal_is_status_lines_and_errors_fail() {
        fn feed(text: &str) -> (anyhow::Result<Option<Value>>, String) {
            let mut out = Vec::new();
            let r = show_progress(text.as_bytes(), &mut out, false, false);
            (r, String::from_utf8(out).unwrap())
        }
        let (r, out) = feed(concat!(
            "{\"status\":\"Pulling from a\",\"id\":\"1\"}\r\n",
            "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":1,\"total\":2},\"progress\":\"[=>]\",\"id\":\"abc\"}\r\n",
            "{\"status\":\"Pull complete\",\"progressDetail\":{},\"id\":\"abc\"}\r\n",
            "{\"status\":\"Digest: sha256:x\"}\r\n",
            "{\"aux\":{\"Tag\":\"1\"},\"progressDetail\":{}}\r\n",
        ));
        assert_eq!(r.unwrap(), Some(json!({"Tag": "1"})));
        assert_eq!(out, "1: Pulling from a\nabc: Pull complete\nDigest: sha256:x\n");
        let (r, _) = feed("{\"errorDetail\":{\"message\":\"boom\"},\"error\":\"boom\"}\r\n");
        assert_eq!(r.unwrap_err().to_string(), "boom");
    }
}
