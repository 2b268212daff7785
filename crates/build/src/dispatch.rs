//! What the metadata instructions do to a stage, as Docker's builder does it: its image config
//! (ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, CMD, ENTRYPOINT with its reset of an inherited
//! CMD, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER), its variables (ARG and ENV, ENV
//! winning over an ARG of the same name), and the history line each one leaves (the legacy
//! builder's `/bin/sh -c #(nop)  …`). RUN, COPY and ADD need an executor and are not here.

use std::collections::{BTreeMap, HashMap};

use berth_format::{go_duration, go_duration_string};
use berth_store::image::{ContainerConfig, Healthcheck, History, ImageConfig};

use crate::instructions::{self, Command};
use crate::parser::{Form, Instruction};
use crate::shell::{ExpandError, Lex, Vars};

/// Build arguments every build knows without an ARG (Docker's predefined proxy args).
pub const PREDEFINED: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

/// The shell RUN, CMD and ENTRYPOINT's shell forms use unless SHELL says otherwise.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("{keyword}: {source}")]
    Expand { keyword: String, source: ExpandError },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, DispatchError>;

/// A stage being built: its config so far and the variables its instructions see.
#[derive(Debug, Clone)]
pub struct StageState {
    pub image: ImageConfig,
    /// ARGs declared in this stage, with their values (None: declared, no value).
    pub args: BTreeMap<String, Option<String>>,
    /// The base image's CMD is still the stage's: an ENTRYPOINT resets it.
    cmd_inherited: bool,
}

impl Vars for StageState {
    fn var(&self, name: &str) -> Option<&str> {
        let env = self.image.config.env.iter().flatten().rev().find_map(|e| e.strip_prefix(name)?.strip_prefix('='));
        env.or_else(|| self.args.get(name).and_then(|v| v.as_deref()))
    }
}

fn expand_err(keyword: &str) -> impl FnOnce(ExpandError) -> DispatchError + '_ {
    move |source| DispatchError::Expand { keyword: keyword.to_string(), source }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quoted(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|x| serde_json::to_string(x).unwrap_or_default()).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of an integer: a rune literal (`'\x02'`, `'\n'`, `'A'`).
fn go_rune(n: i64) -> String {
    match n {
        7 => "'\\a'".into(),
        8 => "'\\b'".into(),
        9 => "'\\t'".into(),
        10 => "'\\n'".into(),
        11 => "'\\v'".into(),
        12 => "'\\f'".into(),
        13 => "'\\r'".into(),
        39 => "'\\''".into(),
        92 => "'\\\\'".into(),
        0..=31 | 127 => format!("'\\x{n:02x}'"),
        32..=126 => format!("'{}'", n as u8 as char),
        n => match u32::try_from(n).ok().and_then(char::from_u32) {
            Some(c) if !c.is_control() => format!("'{c}'"),
            _ => format!("'\\u{:04x}'", n),
        },
    }
}

impl StageState {
    /// A stage on an image with `config` (or on scratch: the default config).
    pub fn new(image: ImageConfig) -> StageState {
        let cmd_inherited = image.config.cmd.is_some();
        StageState { image, args: BTreeMap::new(), cmd_inherited }
    }

    fn config(&mut self) -> &mut ContainerConfig {
        &mut self.image.config
    }

    fn shell(&self) -> Vec<String> {
        self.image.config.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
    }

    /// A command as the config holds it: the exec form as is, the shell form through SHELL.
    pub fn argv(&self, form: &Form) -> Vec<String> {
        match form {
            Form::Exec(v) => v.clone(),
            Form::Shell(s) => {
                let mut v = self.shell();
                // An empty command is the shell alone (`CMD` with nothing, as dockerd keeps it).
                if !s.is_empty() {
                    v.push(s.clone());
                }
                v
            }
        }
    }

    /// The ARGs a RUN sees, with values (declared ones with a value, and predefined ones the
    /// build was given), for its environment and its history line.
    pub fn run_args(&self, build_args: &HashMap<String, String>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.args.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
        for p in PREDEFINED {
            if let Some(v) = build_args.get(p)
                && !self.args.contains_key(p)
            {
                out.push((p.to_string(), v.clone()));
            }
        }
        out.sort();
        out
    }

    /// Apply the metadata instruction `cmd` (from `inst`): the config, the variables, and the
    /// history line it leaves. `global` are the ARGs before the first FROM. RUN, COPY and ADD
    /// are refused here.
    pub fn apply(
        &mut self,
        cmd: &Command,
        inst: &Instruction,
        lex: &Lex,
        build_args: &HashMap<String, String>,
        global: &[(String, Option<String>)],
    ) -> Result<History> {
        let kw = inst.keyword.as_str();
        let word = |s: &StageState, text: &str| lex.word(text, s).map_err(expand_err(kw));
        let shown: String = match cmd {
            Command::Arg(args) => {
                for (name, default) in args {
                    let default = match default {
                        Some(d) => Some(word(self, d)?),
                        None => global.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.clone()),
                    };
                    let value = build_args.get(name).cloned().or(default);
                    self.args.insert(name.clone(), value);
                }
                // An ARG leaves no history line of its own in the legacy builder's output
                // beyond its declaration.
                format!(
                    "ARG {}",
                    args.iter().map(|(n, d)| d.as_ref().map_or(n.clone(), |d| format!("{n}={d}"))).collect::<Vec<_>>().join(" ")
                )
            }
            Command::Env(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = word(self, k)?;
                    let v = word(self, v)?;
                    // Replaced where it is, as Docker's builder does; new ones go last.
                    let env = self.config().env.get_or_insert_with(Vec::new);
                    let entry = format!("{k}={v}");
                    match env.iter_mut().find(|e| e.split('=').next() == Some(k.as_str())) {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                    shown.push(format!("{k}={v}"));
                }
                format!("ENV {}", shown.join(" "))
            }
            Command::Label(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (word(self, k)?, word(self, v)?);
                    shown.push(format!("{k}={v}"));
                    self.config().labels.get_or_insert_with(BTreeMap::new).insert(k, v);
                }
                format!("LABEL {}", shown.join(" "))
            }
            Command::Workdir(dir) => {
                let dir = word(self, dir)?;
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    let cur = self.image.config.working_dir.clone();
                    format!("{}/{dir}", if cur.is_empty() { "" } else { cur.trim_end_matches('/') })
                };
                let clean = clean_abs(&joined);
                self.config().working_dir = clean.clone();
                format!("WORKDIR {clean}")
            }
            Command::User(u) => {
                let u = word(self, u)?;
                self.config().user = u.clone();
                format!("USER {u}")
            }
            Command::Expose(ports) => {
                let mut shown = Vec::new();
                for p in ports {
                    for p in lex.words(p, self).map_err(expand_err(kw))? {
                        let p = if p.contains('/') { p.to_ascii_lowercase() } else { format!("{p}/tcp") };
                        let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                        let valid_range = num
                            .split_once('-')
                            .map_or_else(|| num.parse::<u16>().is_ok(), |(a, b)| a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok());
                        if !valid_range || !matches!(proto, "tcp" | "udp" | "sctp") {
                            return Err(DispatchError::Invalid(format!("invalid containerPort: {num}")));
                        }
                        self.config().exposed_ports.get_or_insert_with(BTreeMap::new).insert(p, serde_json::json!({}));
                    }
                    shown.extend(lex.words(p, self).map_err(expand_err(kw))?);
                }
                // As given, sorted as strings (the legacy builder's line).
                shown.sort();
                format!("EXPOSE {}", shown.join(" "))
            }
            Command::Volume(v) => {
                let mut shown = Vec::new();
                for path in v {
                    let path = word(self, path)?;
                    if path.trim().is_empty() {
                        return Err(DispatchError::Invalid("VOLUME specified can not be an empty string".into()));
                    }
                    shown.push(path.clone());
                    self.config().volumes.get_or_insert_with(BTreeMap::new).insert(path, serde_json::json!({}));
                }
                format!("VOLUME [{}]", shown.join(" "))
            }
            Command::StopSignal(s) => {
                let s = word(self, s)?;
                self.config().stop_signal = s.clone();
                format!("STOPSIGNAL {s}")
            }
            Command::Cmd(form) => {
                let argv = self.argv(form);
                self.config().cmd = Some(argv.clone());
                self.cmd_inherited = false;
                format!("CMD {}", go_quoted(&argv))
            }
            Command::Entrypoint(form) => {
                let argv = self.argv(form);
                self.config().entrypoint = Some(argv.clone());
                // An ENTRYPOINT resets a CMD the base image gave (not one this stage set).
                if self.cmd_inherited {
                    self.config().cmd = None;
                    self.cmd_inherited = false;
                }
                format!("ENTRYPOINT {}", go_quoted(&argv))
            }
            Command::Shell(v) => {
                self.config().shell = Some(v.clone());
                format!("SHELL [{}]", v.join(" "))
            }
            Command::Healthcheck(None) => {
                self.config().healthcheck = Some(Healthcheck { test: vec!["NONE".into()], ..Default::default() });
                "HEALTHCHECK NONE".to_string()
            }
            Command::Healthcheck(Some(h)) => {
                let test = match &h.test {
                    Form::Exec(v) => [vec!["CMD".to_string()], v.clone()].concat(),
                    Form::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                };
                let dur = |name: &str, v: &Option<String>| -> Result<Option<i64>> {
                    match v {
                        None => Ok(None),
                        Some(s) => match go_duration(s) {
                            Some(d) if d == 0 || d >= 1_000_000 => Ok(Some(d)),
                            Some(_) => Err(DispatchError::Invalid(format!("Interval \"{name}\" cannot be less than 1ms"))),
                            None => Err(DispatchError::Invalid(format!("time: invalid duration \"{s}\""))),
                        },
                    }
                };
                let retries = match &h.retries {
                    None => None,
                    Some(r) => match r.parse::<i64>() {
                        Ok(n) if n >= 0 => Some(n),
                        Ok(_) => return Err(DispatchError::Invalid("--retries cannot be negative".into())),
                        Err(_) => return Err(DispatchError::Invalid(format!("strconv.ParseInt: parsing \"{r}\": invalid syntax"))),
                    },
                };
                let hc = Healthcheck {
                    test: test.clone(),
                    interval: dur("interval", &h.interval)?,
                    timeout: dur("timeout", &h.timeout)?,
                    start_period: dur("start-period", &h.start_period)?,
                    start_interval: dur("start-interval", &h.start_interval)?,
                    retries,
                };
                // Go's `%q` of the legacy builder's HealthConfig: durations quoted, retries a rune.
                let d = |v: Option<i64>| format!("\"{}\"", go_duration_string(v.unwrap_or(0)));
                let shown = format!(
                    "HEALTHCHECK &{{{} {} {} {} {}}}",
                    go_quoted(&test),
                    d(hc.interval),
                    d(hc.timeout),
                    d(hc.start_period),
                    go_rune(hc.retries.unwrap_or(0))
                );
                self.config().healthcheck = Some(hc);
                shown
            }
            Command::OnBuild(_, trigger) => {
                self.config().on_build.get_or_insert_with(Vec::new).push(trigger.clone());
                format!("ONBUILD {trigger}")
            }
            Command::Maintainer(m) => {
                self.image.author = Some(m.clone());
                format!("MAINTAINER {m}")
            }
            Command::From { .. } | Command::Run { .. } | Command::Copy(_) | Command::Add(_) => {
                return Err(DispatchError::Invalid(format!("{kw} is not a metadata instruction")));
            }
        };
        // The legacy builder's line: the stage's shell (after a SHELL, the new one), then the
        // comment (WORKDIR's with one space, the others with two).
        let gap = if kw == "WORKDIR" { " " } else { "  " };
        Ok(History { created_by: Some(format!("{} #(nop){gap}{shown}", self.shell().join(" "))), empty_layer: true, ..Default::default() })
    }

    /// The start of a `#(nop)` history line in this stage (COPY's and ADD's too).
    pub fn nop(&self) -> String {
        format!("{} #(nop)", self.shell().join(" "))
    }
}

/// An absolute path without `.`, `..` or doubled `/`.
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Parse and type one instruction of text (ONBUILD triggers when a child image runs them).
pub fn trigger(text: &str) -> std::result::Result<(Instruction, Command), crate::parser::ParseError> {
    let d = crate::parser::parse("ONBUILD", text)?;
    let Some(i) = d.instructions.into_iter().next() else {
        return Err(crate::parser::ParseError { file: "ONBUILD".into(), pos: Default::default(), message: "empty ONBUILD trigger".into() });
    };
    let c = instructions::command("ONBUILD", &i, d.directives.escape)?;
    Ok((i, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut StageState, src: &str, build_args: &[(&str, &str)]) -> Result<Vec<String>> {
        let d = crate::parser::parse("Dockerfile", src).unwrap();
        let args: HashMap<String, String> = build_args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let global = vec![("GLOBAL".to_string(), Some("g".to_string()))];
        let mut lines = Vec::new();
        for i in &d.instructions {
            let c = instructions::command("Dockerfile", i, '\\').unwrap();
            let h = state.apply(&c, i, &Lex::default(), &args, &global)?;
            lines.push(h.created_by.unwrap_or_default());
        }
        Ok(lines)
    }

    fn base() -> StageState {
        let mut img = ImageConfig::default();
        img.config.cmd = Some(vec!["sh".into()]);
        img.config.env = Some(vec!["PATH=/usr/bin".into()]);
        StageState::new(img)
    }

    #[test]
    fn metadata_instructions_shape_the_config_as_docker_does() {
        let mut s = base();
        let lines = run(
            &mut s,
            "ARG V=1\nARG GLOBAL\nARG FROMCLI\nENV A=$V B=\"x y\" PATH=$PATH:/opt\nENV V=env-wins\nLABEL l=$V\n\
             WORKDIR /app\nWORKDIR sub/../src\nUSER ${FROMCLI:-nobody}\nEXPOSE 80 53/UDP 8000-8002\nVOLUME /data\n\
             STOPSIGNAL SIGTERM\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo $HOME\nONBUILD RUN make\nHEALTHCHECK --interval=1m30s --retries=2 CMD curl -f x\n",
            &[("FROMCLI", "cli")],
        )
        .unwrap();
        let c = &s.image.config;
        assert_eq!(c.env.as_ref().unwrap(), &["PATH=/usr/bin:/opt", "A=1", "B=x y", "V=env-wins"]);
        assert_eq!(c.labels.as_ref().unwrap()["l"], "env-wins", "ENV wins over an ARG of the same name");
        assert_eq!(c.working_dir, "/app/src");
        assert_eq!(c.user, "cli");
        assert_eq!(c.exposed_ports.as_ref().unwrap().keys().collect::<Vec<_>>(), ["53/udp", "80/tcp", "8000-8002/tcp"]);
        assert!(c.volumes.as_ref().unwrap().contains_key("/data"));
        assert_eq!(c.cmd.as_ref().unwrap(), &["/bin/bash", "-c", "echo $HOME"], "a shell form through SHELL, unexpanded");
        assert_eq!(c.on_build.as_ref().unwrap(), &["RUN make"]);
        let h = c.healthcheck.as_ref().unwrap();
        assert_eq!(
            (h.test.clone(), h.interval, h.retries),
            (vec!["CMD-SHELL".to_string(), "curl -f x".to_string()], Some(90_000_000_000), Some(2))
        );
        assert_eq!(s.args["GLOBAL"].as_deref(), Some("g"), "a global ARG re-declared takes its value");
        assert_eq!(lines[3], "/bin/sh -c #(nop)  ENV A=1 B=x y PATH=/usr/bin:/opt");
        assert_eq!(lines[7], "/bin/sh -c #(nop) WORKDIR /app/src");
        assert_eq!(lines[9], "/bin/sh -c #(nop)  EXPOSE 53/UDP 80 8000-8002", "as given, sorted");
        assert_eq!(lines[12], "/bin/bash -c #(nop)  SHELL [/bin/bash -c]", "the new shell leads its own line");
        assert_eq!(lines[13], "/bin/bash -c #(nop)  CMD [\"/bin/bash\" \"-c\" \"echo $HOME\"]");
        assert_eq!(lines[15], "/bin/bash -c #(nop)  HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f x\"] \"1m30s\" \"0s\" \"0s\" '\\x02'}");
    }

    #[test]
    fn gos_formats() {
        assert_eq!((go_rune(2), go_rune(10), go_rune(65)), ("'\\x02'".to_string(), "'\\n'".to_string(), "'A'".to_string()));
        assert_eq!(go_quoted(&["a".into(), "b c".into()]), "[\"a\" \"b c\"]");
    }

    #[test]
    fn entrypoint_resets_an_inherited_cmd_only() {
        let mut s = base();
        run(&mut s, "ENTRYPOINT [\"/bin/app\"]\n", &[]).unwrap();
        assert_eq!(s.image.config.cmd, None);
        let mut s = base();
        run(&mut s, "CMD [\"--help\"]\nENTRYPOINT [\"/bin/app\"]\n", &[]).unwrap();
        assert_eq!(s.image.config.cmd, Some(vec!["--help".to_string()]));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(run(&mut base(), "EXPOSE 99999\n", &[]).unwrap_err().to_string().contains("invalid containerPort"));
        assert!(run(&mut base(), "HEALTHCHECK --interval=1x CMD true\n", &[]).unwrap_err().to_string().contains("invalid duration"));
        assert!(run(&mut base(), "HEALTHCHECK --interval=10us CMD true\n", &[]).unwrap_err().to_string().contains("less than 1ms"));
        assert!(run(&mut base(), "ENV A=\"${NOPE:?must be set}\"\n", &[]).unwrap_err().to_string().contains("NOPE: must be set"));
        let (i, c) = trigger("RUN echo hi").unwrap();
        assert_eq!((i.keyword.as_str(), matches!(c, Command::Run { .. })), ("RUN", true));
    }

    #[test]
    fn run_args_are_declared_ones_and_given_proxies() {
        let mut s = base();
        run(&mut s, "ARG A=1\nARG UNSET\n", &[("http_proxy", "http://p"), ("IGNORED", "x")]).unwrap();
        let args: HashMap<String, String> =
            [("http_proxy", "http://p"), ("IGNORED", "x")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(s.run_args(&args), vec![("A".to_string(), "1".to_string()), ("http_proxy".to_string(), "http://p".to_string())]);
    }
}
