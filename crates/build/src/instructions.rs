//! Each instruction's arguments, checked and typed by BuildKit's rules (what a builder
//! dispatches): `FROM image [AS name]`, `ENV`/`LABEL` pairs (and ENV's legacy `name value`),
//! `ARG name[=default]`, COPY/ADD sources and destination, HEALTHCHECK's options, ONBUILD's
//! trigger, the flags each instruction takes. Values are still unexpanded: variables are
//! expanded when the instruction runs, in its stage's scope.

use crate::parser::{Form, Heredoc, Instruction, ParseError, Pos};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From { image: String, alias: Option<String>, platform: Option<String> },
    Arg(Vec<(String, Option<String>)>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Run { form: Form, heredocs: Vec<Heredoc>, network: Option<String> },
    Cmd(Form),
    Entrypoint(Form),
    Shell(Vec<String>),
    Copy(Copy),
    Add(Copy),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Option<Healthcheck>),
    Maintainer(String),
    OnBuild(Box<Command>, String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub test: Form,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<String>,
}

/// Flags each instruction takes (BuildKit's; `--mount`, `--security` and the like for RUN are
/// refused by name until berth implements them).
fn allowed_flags(keyword: &str) -> &'static [&'static str] {
    match keyword {
        "FROM" => &["platform"],
        "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" => &["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"],
        "RUN" => &["network"],
        "HEALTHCHECK" => &["interval", "timeout", "start-period", "start-interval", "retries"],
        _ => &[],
    }
}

/// Split `text` on whitespace outside quotes, keeping the quotes (BuildKit's `parseWords`):
/// expansion later removes them.
pub fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c == escape => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Ctx<'a> {
    file: &'a str,
    pos: Pos,
    escape: char,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError { file: self.file.to_string(), pos: self.pos, message: message.into() }
    }
}

/// `name=value` pairs (ENV, LABEL); ENV also takes its legacy `name value` form.
fn pairs(c: &Ctx, keyword: &str, text: &str, legacy: bool) -> Result<Vec<(String, String)>, ParseError> {
    let words = split_words(text, c.escape);
    if words.is_empty() {
        return Err(c.err(format!("{keyword} requires at least one argument")));
    }
    if legacy && !words[0].contains('=') {
        // `ENV name the rest of the line`
        let rest = text.trim_start()[words[0].len()..].trim().to_string();
        if rest.is_empty() {
            return Err(c.err(format!("{keyword} must have two arguments")));
        }
        return Ok(vec![(words[0].clone(), rest)]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(c.err(format!("{keyword} names can not be blank"))),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(c.err(format!("Syntax error - can't find = in \"{w}\". Must be of the form: name=value"))),
        })
        .collect()
}

fn exec_or_words(form: &Form, escape: char) -> Vec<String> {
    match form {
        Form::Exec(v) => v.clone(),
        Form::Shell(s) => split_words(s, escape),
    }
}

/// `i` as a typed command (`escape` is the Dockerfile's; `file` names it in errors).
pub fn command(file: &str, i: &Instruction, escape: char) -> Result<Command, ParseError> {
    let c = Ctx { file, pos: i.pos, escape };
    let allowed = allowed_flags(&i.keyword);
    for (name, _) in &i.flags {
        if !allowed.contains(&name.as_str()) {
            return Err(c.err(format!("unknown flag: {name}")));
        }
    }
    let text = i.text();
    let flag = |n: &str| i.flag(n).map(|v| v.unwrap_or("").to_string());
    let needs_args = |cmd: Command| {
        if text.trim().is_empty() && i.heredocs.is_empty() {
            Err(c.err(format!("{} requires at least one argument", i.keyword)))
        } else {
            Ok(cmd)
        }
    };
    match i.keyword.as_str() {
        "FROM" => {
            let w = split_words(&text, escape);
            let (image, alias) = match w.as_slice() {
                [image] => (image.clone(), None),
                [image, as_, alias] if as_.eq_ignore_ascii_case("as") => (image.clone(), Some(alias.clone())),
                _ => return Err(c.err("FROM requires either one or three arguments")),
            };
            if let Some(a) = &alias
                && !valid_stage_name(a)
            {
                return Err(c.err(format!("invalid name for build stage: {a:?}, name can't start with a number or contain symbols")));
            }
            Ok(Command::From { image, alias, platform: flag("platform") })
        }
        "ARG" => {
            let w = split_words(&text, escape);
            if w.is_empty() {
                return Err(c.err("ARG requires at least one argument"));
            }
            w.into_iter()
                .map(|a| match a.split_once('=') {
                    Some(("", _)) => Err(c.err("ARG names can not be blank")),
                    Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
                    None => Ok((a, None)),
                })
                .collect::<Result<_, _>>()
                .map(Command::Arg)
        }
        "ENV" => pairs(&c, "ENV", &text, true).map(Command::Env),
        "LABEL" => pairs(&c, "LABEL", &text, true).map(Command::Label),
        "RUN" => needs_args(Command::Run { form: i.form.clone(), heredocs: i.heredocs.clone(), network: flag("network") }),
        "CMD" => Ok(Command::Cmd(i.form.clone())),
        "ENTRYPOINT" => Ok(Command::Entrypoint(i.form.clone())),
        "SHELL" => match &i.form {
            Form::Exec(v) if !v.is_empty() => Ok(Command::Shell(v.clone())),
            Form::Exec(_) => Err(c.err("SHELL requires at least one argument")),
            Form::Shell(_) => Err(c.err("SHELL requires the arguments to be in JSON form")),
        },
        "COPY" | "ADD" => {
            let mut words = exec_or_words(&i.form, escape);
            let min = if i.heredocs.is_empty() { 2 } else { 1 };
            if words.len() < min {
                return Err(c.err(format!(
                    "{} requires at least two arguments, but only one was provided. Destination could not be determined.",
                    i.keyword
                )));
            }
            let dest = words.pop().unwrap_or_default();
            let copy = Copy {
                sources: words,
                dest,
                from: flag("from"),
                chown: flag("chown"),
                chmod: flag("chmod"),
                link: i.flag("link").is_some_and(|v| v.is_none_or(|v| v != "false")),
                heredocs: i.heredocs.clone(),
            };
            Ok(if i.keyword == "COPY" { Command::Copy(copy) } else { Command::Add(copy) })
        }
        "WORKDIR" => needs_args(Command::Workdir(text.trim().to_string())),
        "USER" => needs_args(Command::User(text.trim().to_string())),
        "STOPSIGNAL" => needs_args(Command::StopSignal(text.trim().to_string())),
        "MAINTAINER" => needs_args(Command::Maintainer(text.trim().to_string())),
        "EXPOSE" => needs_args(Command::Expose(split_words(&text, escape))),
        "VOLUME" => {
            let v = exec_or_words(&i.form, escape);
            if v.iter().all(|s| s.trim().is_empty()) {
                return Err(c.err("VOLUME specified can not be an empty string"));
            }
            Ok(Command::Volume(v))
        }
        "HEALTHCHECK" => {
            let t = text.trim();
            let (kind, rest) = t.split_once(char::is_whitespace).map(|(k, r)| (k, r.trim())).unwrap_or((t, ""));
            if kind.eq_ignore_ascii_case("none") {
                if !rest.is_empty() || !i.flags.is_empty() {
                    return Err(c.err("HEALTHCHECK NONE takes no arguments"));
                }
                return Ok(Command::Healthcheck(None));
            }
            if !kind.eq_ignore_ascii_case("cmd") {
                return Err(c.err(format!("Unknown type \"{}\" in HEALTHCHECK (try CMD)", kind.to_ascii_uppercase())));
            }
            if rest.is_empty() {
                return Err(c.err("Missing command after HEALTHCHECK CMD"));
            }
            let test = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) if rest.starts_with('[') => Form::Exec(v),
                _ => Form::Shell(rest.to_string()),
            };
            Ok(Command::Healthcheck(Some(Healthcheck {
                test,
                interval: flag("interval"),
                timeout: flag("timeout"),
                start_period: flag("start-period"),
                start_interval: flag("start-interval"),
                retries: flag("retries"),
            })))
        }
        "ONBUILD" => {
            let trigger = text.trim().to_string();
            let sub = crate::parser::parse(file, &trigger).map_err(|e| c.err(e.message))?;
            let Some(inner) = sub.instructions.first() else { return Err(c.err("ONBUILD requires at least one argument")) };
            match inner.keyword.as_str() {
                "ONBUILD" => Err(c.err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
                "FROM" | "MAINTAINER" => Err(c.err(format!("{} isn't allowed as an ONBUILD trigger", inner.keyword))),
                _ => {
                    let mut inner = inner.clone();
                    inner.pos = i.pos;
                    Ok(Command::OnBuild(Box::new(command(file, &inner, escape)?), trigger))
                }
            }
        }
        other => Err(c.err(format!("{other} is not supported"))),
    }
}

/// BuildKit's rule for a stage's name: `^[a-z][a-z0-9-_.]*$` (case-insensitive).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(src: &str) -> Result<Command, String> {
        let d = crate::parser::parse("Dockerfile", src).map_err(|e| e.to_string())?;
        command("Dockerfile", &d.instructions[0], d.directives.escape).map_err(|e| e.to_string())
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn instruction_table() {
        let table: Vec<(&str, Result<Command, String>)> = vec![
            ("FROM busybox", Ok(Command::From { image: "busybox".into(), alias: None, platform: None })),
            (
                "from --platform=linux/amd64 img:1 as Build",
                Ok(Command::From { image: "img:1".into(), alias: Some("Build".into()), platform: Some("linux/amd64".into()) }),
            ),
            ("FROM a b", Err("Dockerfile:1:1: FROM requires either one or three arguments".into())),
            (
                "FROM a AS 1st",
                Err("Dockerfile:1:1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols".into()),
            ),
            ("ARG A B=2 C=", Ok(Command::Arg(vec![("A".into(), None), ("B".into(), Some("2".into())), ("C".into(), Some(String::new()))]))),
            (
                "ENV A=1 B=\"two words\" C=${X:-y}",
                Ok(Command::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into()), ("C".into(), "${X:-y}".into())])),
            ),
            ("ENV LEGACY some value here", Ok(Command::Env(vec![("LEGACY".into(), "some value here".into())]))),
            ("ENV A=1 B", Err("Dockerfile:1:1: Syntax error - can't find = in \"B\". Must be of the form: name=value".into())),
            ("ENV =x", Err("Dockerfile:1:1: ENV names can not be blank".into())),
            ("LABEL a=b \"c d\"=e", Ok(Command::Label(vec![("a".into(), "b".into()), ("\"c d\"".into(), "e".into())]))),
            ("SHELL [\"bash\", \"-c\"]", Ok(Command::Shell(s(&["bash", "-c"])))),
            ("SHELL bash -c", Err("Dockerfile:1:1: SHELL requires the arguments to be in JSON form".into())),
            ("COPY a 'b c' /d/", Ok(Command::Copy(Copy { sources: s(&["a", "'b c'"]), dest: "/d/".into(), ..Default::default() }))),
            (
                "COPY --from=0 --chown=1:1 --chmod=644 --link [\"x y\", \"/z\"]",
                Ok(Command::Copy(Copy {
                    sources: s(&["x y"]),
                    dest: "/z".into(),
                    from: Some("0".into()),
                    chown: Some("1:1".into()),
                    chmod: Some("644".into()),
                    link: true,
                    ..Default::default()
                })),
            ),
            (
                "ADD only",
                Err("Dockerfile:1:1: ADD requires at least two arguments, but only one was provided. Destination could not be determined."
                    .into()),
            ),
            ("COPY --bogus a b", Err("Dockerfile:1:1: unknown flag: bogus".into())),
            ("RUN", Err("Dockerfile:1:1: RUN requires at least one argument".into())),
            ("EXPOSE 80/tcp 443", Ok(Command::Expose(s(&["80/tcp", "443"])))),
            ("VOLUME [\"/a\", \"/b\"]", Ok(Command::Volume(s(&["/a", "/b"])))),
            ("VOLUME /a /b", Ok(Command::Volume(s(&["/a", "/b"])))),
            ("HEALTHCHECK NONE", Ok(Command::Healthcheck(None))),
            (
                "HEALTHCHECK --interval=5s --retries=3 CMD [\"true\"]",
                Ok(Command::Healthcheck(Some(Healthcheck {
                    test: Form::Exec(s(&["true"])),
                    interval: Some("5s".into()),
                    timeout: None,
                    start_period: None,
                    start_interval: None,
                    retries: Some("3".into()),
                }))),
            ),
            ("HEALTHCHECK RUN x", Err("Dockerfile:1:1: Unknown type \"RUN\" in HEALTHCHECK (try CMD)".into())),
            (
                "ONBUILD RUN echo hi",
                Ok(Command::OnBuild(
                    Box::new(Command::Run { form: Form::Shell("echo hi".into()), heredocs: vec![], network: None }),
                    "RUN echo hi".into(),
                )),
            ),
            ("ONBUILD ONBUILD RUN x", Err("Dockerfile:1:1: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())),
            ("ONBUILD FROM x", Err("Dockerfile:1:1: FROM isn't allowed as an ONBUILD trigger".into())),
            ("WORKDIR  /app ", Ok(Command::Workdir("/app".into()))),
            ("STOPSIGNAL SIGKILL", Ok(Command::StopSignal("SIGKILL".into()))),
        ];
        for (src, want) in table {
            assert_eq!(cmd(src), want, "{src}");
        }
    }

    #[test]
    fn words_keep_quotes_and_escapes_for_the_expansion() {
        assert_eq!(split_words("a 'b c' \"d \\\" e\" f\\ g", '\\'), s(&["a", "'b c'", "\"d \\\" e\"", "f\\ g"]));
        assert_eq!(split_words("  ", '\\'), Vec::<String>::new());
        // A COPY from a heredoc needs only its destination.
        let d = crate::parser::parse("Dockerfile", "COPY <<EOF /dest\nhello\nEOF\n").unwrap();
        let Command::Copy(c) = command("Dockerfile", &d.instructions[0], '\\').unwrap() else { panic!() };
        assert_eq!((c.sources, c.dest, c.heredocs.len()), (s(&["<<EOF"]), "/dest".into(), 1));
    }
}
