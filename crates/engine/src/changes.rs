//! `--change`: the Dockerfile instructions `import` (and later `commit`) apply to an image's
//! config. One instruction per change, as dockerd takes them; JSON (exec) form tried first, then
//! shell form.

use std::collections::BTreeMap;

use berth_api::{ApiError, Kind};
use berth_store::image::ContainerConfig;

/// The instructions a change may be (dockerd's list; HEALTHCHECK comes with healthchecks).
const VALID: &[&str] = &["cmd", "entrypoint", "env", "expose", "label", "onbuild", "stopsignal", "user", "volume", "workdir"];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, message)
}

/// Apply `changes` to `config` in order.
pub fn apply(config: &mut ContainerConfig, changes: &[String]) -> Result<(), ApiError> {
    for change in changes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        let (word, rest) = change.split_once(char::is_whitespace).unwrap_or((change, ""));
        let instruction = word.to_ascii_lowercase();
        let rest = rest.trim();
        if instruction == "healthcheck" {
            return Err(ApiError::not_implemented("HEALTHCHECK in --change"));
        }
        if !VALID.contains(&instruction.as_str()) {
            return Err(bad(format!("{instruction} is not a valid change command")));
        }
        if rest.is_empty() {
            return Err(bad(format!("{} requires at least one argument", word.to_ascii_uppercase())));
        }
        match instruction.as_str() {
            "cmd" => config.cmd = Some(command(rest, &config.shell)),
            "entrypoint" => config.entrypoint = Some(command(rest, &config.shell)),
            "env" => {
                let env = config.env.get_or_insert_with(Vec::new);
                for (k, v) in pairs(rest, "ENV")? {
                    // Replaced where it is, as Docker's dispatcher does; new ones go last.
                    let entry = format!("{k}={v}");
                    match env.iter_mut().find(|e| e.split('=').next() == Some(k.as_str())) {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                }
            }
            "label" => {
                let labels = config.labels.get_or_insert_with(BTreeMap::new);
                labels.extend(pairs(rest, "LABEL")?);
            }
            "expose" => {
                let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in words(rest)? {
                    ports.insert(port(&p)?, serde_json::json!({}));
                }
            }
            "volume" => {
                let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
                let paths = json_array(rest).map_or_else(|| words(rest), Ok)?;
                for v in paths.into_iter().filter(|v| !v.is_empty()) {
                    volumes.insert(v, serde_json::json!({}));
                }
            }
            "onbuild" => config.on_build.get_or_insert_with(Vec::new).push(rest.to_string()),
            "stopsignal" => config.stop_signal = one(rest, "STOPSIGNAL")?,
            "user" => config.user = one(rest, "USER")?,
            "workdir" => {
                let dir = one(rest, "WORKDIR")?;
                // Relative to the one before, as in a Dockerfile.
                config.working_dir = if dir.starts_with('/') || config.working_dir.is_empty() {
                    if dir.starts_with('/') { dir } else { format!("/{dir}") }
                } else {
                    format!("{}/{dir}", config.working_dir.trim_end_matches('/'))
                };
            }
            _ => unreachable!("VALID lists every instruction handled"),
        }
    }
    Ok(())
}

/// `["a", "b"]` as a list; anything else is not the JSON form.
fn json_array(s: &str) -> Option<Vec<String>> {
    s.starts_with('[').then(|| serde_json::from_str::<Vec<String>>(s).ok()).flatten()
}

/// Exec form as given; shell form through the image's shell (`/bin/sh -c` by default).
fn command(rest: &str, shell: &Option<Vec<String>>) -> Vec<String> {
    json_array(rest).unwrap_or_else(|| {
        let mut cmd = shell.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        cmd.push(rest.to_string());
        cmd
    })
}

fn one(rest: &str, what: &str) -> Result<String, ApiError> {
    let w = words(rest)?;
    match <[String; 1]>::try_from(w) {
        Ok([v]) => Ok(v),
        Err(_) => Err(bad(format!("{what} requires exactly one argument"))),
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → Docker's `port/proto` keys.
fn port(p: &str) -> Result<String, ApiError> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let ok = |n: &str| n.parse::<u16>().is_ok_and(|n| n > 0);
    let valid = match num.split_once('-') {
        Some((a, b)) => ok(a) && ok(b),
        None => ok(num),
    };
    if !valid || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(format!("invalid containerPort: {p}")));
    }
    Ok(format!("{num}/{proto}"))
}

/// `k=v k2="v 2"`, or the old `k value with spaces` for one pair.
fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>, ApiError> {
    let w = words(rest)?;
    if w.first().is_some_and(|f| !f.contains('=')) {
        let (k, v) = rest.split_once(char::is_whitespace).ok_or_else(|| bad(format!("{what} must have two arguments")))?;
        return Ok(vec![(k.to_string(), unquote(v.trim())?)]);
    }
    w.into_iter()
        .map(|p| match p.split_once('=') {
            Some(("", _)) => Err(bad(format!("{what} names can not be blank"))),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(bad(format!("Syntax error - can't find = in {p:?}. Must be of the form: name=value"))),
        })
        .collect()
}

fn unquote(s: &str) -> Result<String, ApiError> {
    Ok(words(s)?.join(" "))
}

/// Words split on unquoted blanks; quotes removed, a backslash escapes the next character
/// (inside single quotes, nothing is escaped).
fn words(s: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(bad(format!("unexpected end of statement while looking for matching single-quote: {s}"))),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.extend(chars.next()),
                        Some(c) => cur.push(c),
                        None => return Err(bad(format!("unexpected end of statement while looking for matching double-quote: {s}"))),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> Result<ContainerConfig, String> {
        let mut c = ContainerConfig::default();
        apply(&mut c, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(|e| e.message)?;
        Ok(c)
    }

    #[test]
    fn each_instruction_import_takes() {
        let c = changed(&[
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "entrypoint /entry --flag",
            r#"ENV A=1 B="two words" C=x\ y"#,
            "ENV OLD value with spaces",
            "ENV A=3",
            r#"LABEL maintainer="me" version=1"#,
            "EXPOSE 80 53/udp 8000-8001",
            r#"VOLUME ["/data", "/logs"]"#,
            "VOLUME /cache",
            "USER nobody",
            "WORKDIR /srv",
            "WORKDIR app",
            "STOPSIGNAL SIGINT",
            "ONBUILD RUN true",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "/entry --flag"]);
        // Replaced in place, as dockerd does (`import --change "ENV A=1" … "ENV A=3"` on the peer: ["A=3","B=2"]).
        assert_eq!(c.env.unwrap(), ["A=3", "B=two words", "C=x y", "OLD=value with spaces"]);
        assert_eq!(c.labels.unwrap(), BTreeMap::from([("maintainer".into(), "me".into()), ("version".into(), "1".into())]));
        assert_eq!(c.exposed_ports.unwrap().keys().collect::<Vec<_>>(), ["53/udp", "80/tcp", "8000-8001/tcp"]);
        assert_eq!(c.volumes.unwrap().keys().collect::<Vec<_>>(), ["/cache", "/data", "/logs"]);
        assert_eq!((c.user.as_str(), c.working_dir.as_str(), c.stop_signal.as_str()), ("nobody", "/srv/app", "SIGINT"));
        assert_eq!(c.on_build.unwrap(), ["RUN true"]);
    }

    #[test]
    fn what_import_refuses_gets_dockers_words() {
        assert_eq!(changed(&["RUN echo hi"]).unwrap_err(), "run is not a valid change command");
        assert_eq!(changed(&["FROM busybox"]).unwrap_err(), "from is not a valid change command");
        assert_eq!(changed(&["NOSUCH x"]).unwrap_err(), "nosuch is not a valid change command");
        assert!(changed(&["EXPOSE http"]).unwrap_err().contains("invalid containerPort"));
        assert!(changed(&["ENV A=\"unterminated"]).unwrap_err().contains("double-quote"));
        assert!(changed(&["USER a b"]).unwrap_err().contains("exactly one"));
        assert!(changed(&["CMD"]).unwrap_err().contains("requires at least one argument"));
        assert_eq!(changed(&["", "  "]).unwrap(), ContainerConfig::default(), "empty changes change nothing");
    }
}
