//! Go's text/template, as people write it in `--format`: actions with trim markers and
//! comments, `if`/`else if`/`else`, `with`, `range` (with `$i, $e :=` and `else`), variables
//! (`$x := …`, `$x = …`, `$`), pipelines, parenthesized arguments, and the functions the docker
//! CLI offers: Go's built-ins (`and or not len index slice eq ne lt le gt ge print printf
//! println`) and Docker's (`json join split title lower upper pad truncate`). Data is the API's
//! JSON; values print as Go's `%v` prints them.

use anyhow::{Context as _, bail};
use serde_json::{Number, Value};

/// A parsed template.
pub struct Template(Vec<Node>);

enum Node {
    Text(String),
    /// Prints its value, unless it declares or assigns variables.
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    With(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug)]
enum Decl {
    /// `$x :=` or `$i, $e :=`.
    Define(Vec<String>),
    /// `$x =`.
    Assign(String),
}

#[derive(Debug)]
struct Pipeline {
    decl: Option<Decl>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug)]
enum Arg {
    /// `.A.B` (no names: the dot itself).
    Field(Vec<String>),
    /// `$x.A.B` (`$`: the data the template was given).
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    /// `(pipeline).A.B`.
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Open,
    /// `)` and the field names after it.
    Close(Vec<String>),
    Pipe,
    Comma,
    Define,
    Assign,
}

/// `.A.B` → `["A", "B"]`.
fn chain(s: &str) -> Vec<String> {
    s.split('.').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

fn lex(src: &str) -> anyhow::Result<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let name_char = |c: char| c.is_alphanumeric() || c == '_';
    let take = |i: &mut usize, f: &dyn Fn(char) -> bool| {
        let start = *i;
        while *i < chars.len() && f(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '.' if chars.get(i + 1).is_none_or(|n| !n.is_ascii_digit()) => {
                let s = take(&mut i, &|c| name_char(c) || c == '.');
                out.push(Tok::Field(chain(&s)));
            }
            '$' => {
                i += 1;
                let name = take(&mut i, &name_char);
                let fields = take(&mut i, &|c| name_char(c) || c == '.');
                out.push(Tok::Var(format!("${name}"), chain(&fields)));
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                i += 1;
                let fields = take(&mut i, &|c| name_char(c) || c == '.');
                out.push(Tok::Close(chain(&fields)));
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Define);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => bail!("template: unterminated quoted string"),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('r') => s.push('\r'),
                                Some(&c) => s.push(c),
                                None => bail!("template: unterminated quoted string"),
                            }
                        }
                        Some(&c) => s.push(c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Lit(Value::String(s)));
            }
            '`' => {
                i += 1;
                let s = take(&mut i, &|c| c != '`');
                if i >= chars.len() {
                    bail!("template: unterminated raw quoted string");
                }
                i += 1;
                out.push(Tok::Lit(Value::String(s)));
            }
            '\'' => {
                let c = *chars.get(i + 1).context("template: unterminated character constant")?;
                if chars.get(i + 2) != Some(&'\'') {
                    bail!("template: bad character constant");
                }
                i += 3;
                out.push(Tok::Lit(Value::from(c as u32)));
            }
            c if c.is_ascii_digit() || ((c == '-' || c == '+' || c == '.') && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())) => {
                let s = take(&mut i, &|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
                out.push(Tok::Lit(number(&s).with_context(|| format!("template: bad number syntax: {s:?}"))?));
            }
            c if name_char(c) => {
                let s = take(&mut i, &name_char);
                out.push(match s.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    _ => Tok::Ident(s),
                });
            }
            c => bail!("template: unexpected {c:?} in command"),
        }
    }
    Ok(out)
}

fn number(s: &str) -> Option<Value> {
    let t = s.replace('_', "");
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, t.trim_start_matches('+').to_string()),
    };
    let int = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(b) = digits.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    match int {
        Some(n) => Some(Value::from(if neg { -n } else { n })),
        None => t.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn pipeline(&mut self, decl_ok: bool) -> anyhow::Result<Pipeline> {
        let mut decl = None;
        if decl_ok {
            decl = self.declaration();
        }
        let mut cmds = Vec::new();
        loop {
            let mut args = Vec::new();
            while let Some(t) = self.peek() {
                if matches!(t, Tok::Pipe | Tok::Close(_)) {
                    break;
                }
                let arg = match self.next() {
                    Some(Tok::Field(f)) => Arg::Field(f),
                    Some(Tok::Var(v, f)) => Arg::Var(v, f),
                    Some(Tok::Ident(n)) => Arg::Func(n),
                    Some(Tok::Lit(v)) => Arg::Lit(v),
                    Some(Tok::Open) => {
                        let inner = self.pipeline(false)?;
                        match self.next() {
                            Some(Tok::Close(fields)) => Arg::Sub(Box::new(inner), fields),
                            _ => bail!("template: unclosed left paren"),
                        }
                    }
                    Some(t) => bail!("template: unexpected {t:?} in operand"),
                    None => break,
                };
                args.push(arg);
            }
            if args.is_empty() {
                bail!("template: missing value for command");
            }
            cmds.push(args);
            if self.peek() == Some(&Tok::Pipe) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipeline { decl, cmds })
    }

    /// `$x :=`, `$i, $e :=`, `$x =` at the start of a pipeline.
    fn declaration(&mut self) -> Option<Decl> {
        let var = |t: Option<&Tok>| match t {
            Some(Tok::Var(v, f)) if f.is_empty() => Some(v.clone()),
            _ => None,
        };
        let first = var(self.toks.get(self.pos))?;
        match self.toks.get(self.pos + 1) {
            Some(Tok::Define) => {
                self.pos += 2;
                Some(Decl::Define(vec![first]))
            }
            Some(Tok::Assign) => {
                self.pos += 2;
                Some(Decl::Assign(first))
            }
            Some(Tok::Comma) => {
                let second = var(self.toks.get(self.pos + 2))?;
                if self.toks.get(self.pos + 3) != Some(&Tok::Define) {
                    return None;
                }
                self.pos += 4;
                Some(Decl::Define(vec![first, second]))
            }
            _ => None,
        }
    }
}

fn parse_pipeline(src: &str, decl_ok: bool) -> anyhow::Result<Pipeline> {
    let mut p = Parser { toks: lex(src)?, pos: 0 };
    let pipe = p.pipeline(decl_ok)?;
    if let Some(t) = p.peek() {
        bail!("template: unexpected {t:?} in command");
    }
    Ok(pipe)
}

/// The template split into text and the actions' insides (trim markers applied).
fn items(src: &str) -> anyhow::Result<Vec<(bool, String)>> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        let after = &rest[start + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end().to_string();
        }
        out.push((false, text));
        let end = after.find("}}").with_context(|| format!("template: unclosed action in {src:?}"))?;
        let mut inner = &after[..end];
        if trim_left {
            inner = &inner[1..];
        }
        let trim_right = inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-");
        if trim_right {
            inner = &inner[..inner.len() - 1];
        }
        out.push((true, inner.trim().to_string()));
        rest = &after[end + 2..];
        if trim_right {
            rest = rest.trim_start();
        }
    }
    out.push((false, rest.to_string()));
    Ok(out)
}

/// Parse nodes until one of `stops` (an `else…` or `end` action); returns the nodes and the stop.
fn parse_list(items: &[(bool, String)], pos: &mut usize, stops: bool) -> anyhow::Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let (action, s) = &items[*pos];
        *pos += 1;
        if !action {
            if !s.is_empty() {
                nodes.push(Node::Text(s.clone()));
            }
            continue;
        }
        if s.starts_with("/*") {
            if !s.ends_with("*/") {
                bail!("template: unclosed comment");
            }
            continue;
        }
        let (word, rest) = s.split_once(char::is_whitespace).unwrap_or((s.as_str(), ""));
        match word {
            "end" | "else" if stops => return Ok((nodes, Some(s.clone()))),
            "end" | "else" => bail!("template: unexpected {{{{{word}}}}}"),
            "if" | "with" => {
                let mut branches = vec![(parse_pipeline(rest, true)?, Vec::new())];
                let otherwise = loop {
                    let (body, stop) = parse_list(items, pos, true)?;
                    if let Some(b) = branches.last_mut() {
                        b.1 = body;
                    }
                    let stop = stop.with_context(|| format!("template: unexpected EOF in {word}"))?;
                    if stop == "end" {
                        break Vec::new();
                    }
                    let after_else = stop.trim_start_matches("else").trim();
                    match after_else.strip_prefix(word).filter(|r| r.starts_with(char::is_whitespace)) {
                        Some(cond) => branches.push((parse_pipeline(cond, true)?, Vec::new())),
                        None if after_else.is_empty() => {
                            let (body, stop) = parse_list(items, pos, true)?;
                            if stop.as_deref() != Some("end") {
                                bail!("template: expected end; found {stop:?}");
                            }
                            break body;
                        }
                        None => bail!("template: unexpected {after_else:?} after else"),
                    }
                };
                nodes.push(if word == "if" { Node::If(branches, otherwise) } else { Node::With(branches, otherwise) });
            }
            "range" => {
                let pipe = parse_pipeline(rest, true)?;
                let (body, stop) = parse_list(items, pos, true)?;
                let otherwise = match stop.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => {
                        let (o, stop) = parse_list(items, pos, true)?;
                        if stop.as_deref() != Some("end") {
                            bail!("template: expected end; found {stop:?}");
                        }
                        o
                    }
                    other => bail!("template: unexpected {other:?} in range"),
                };
                nodes.push(Node::Range(pipe, body, otherwise));
            }
            "define" | "template" | "block" | "break" | "continue" => bail!("template: {word} is not supported in --format"),
            _ => nodes.push(Node::Action(parse_pipeline(s, true)?)),
        }
    }
    if stops {
        bail!("template: unexpected EOF");
    }
    Ok((nodes, None))
}

impl Template {
    pub fn parse(src: &str) -> anyhow::Result<Template> {
        let items = items(src)?;
        let mut pos = 0;
        let (nodes, _) = parse_list(&items, &mut pos, false)?;
        Ok(Template(nodes))
    }

    pub fn execute(&self, data: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut vars = vec![("$".to_string(), data.clone())];
        exec_list(&self.0, data, &mut vars, &mut out)?;
        Ok(out)
    }
}

/// Go's truth: false, 0, nil and empty things are false.
fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

type Vars = Vec<(String, Value)>;

fn exec_list(nodes: &[Node], dot: &Value, vars: &mut Vars, out: &mut String) -> anyhow::Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, vars)?;
                if p.decl.is_none() {
                    crate::format::show_into(&v, out);
                }
            }
            Node::If(branches, otherwise) | Node::With(branches, otherwise) => {
                let with = matches!(n, Node::With(..));
                let mark = vars.len();
                let mut done = false;
                for (cond, body) in branches {
                    let v = eval_pipeline(cond, dot, vars)?;
                    if truth(&v) {
                        exec_list(body, if with { &v } else { dot }, vars, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec_list(otherwise, dot, vars, out)?;
                }
                vars.truncate(mark);
            }
            Node::Range(pipe, body, otherwise) => {
                let mark = vars.len();
                let names = match &pipe.decl {
                    Some(Decl::Define(n)) => n.clone(),
                    _ => Vec::new(),
                };
                let plain = Pipeline { decl: None, cmds: Vec::new() };
                let _ = plain;
                let v = eval_cmds(&pipe.cmds, dot, vars)?;
                let items: Vec<(Value, Value)> = match v {
                    Value::Array(a) => a.into_iter().enumerate().map(|(i, x)| (Value::from(i), x)).collect(),
                    Value::Object(o) => o.into_iter().map(|(k, x)| (Value::String(k), x)).collect(),
                    Value::Number(n) if n.as_i64().is_some() => {
                        (0..n.as_i64().unwrap_or(0)).map(|i| (Value::from(i), Value::from(i))).collect()
                    }
                    Value::Null => Vec::new(),
                    other => bail!("template: range can't iterate over {}", crate::format::show(&other)),
                };
                if items.is_empty() {
                    exec_list(otherwise, dot, vars, out)?;
                }
                for (k, x) in items {
                    let inner = vars.len();
                    match names.as_slice() {
                        [e] => vars.push((e.clone(), x.clone())),
                        [i, e] => {
                            vars.push((i.clone(), k));
                            vars.push((e.clone(), x.clone()));
                        }
                        _ => {}
                    }
                    exec_list(body, &x, vars, out)?;
                    vars.truncate(inner);
                }
                vars.truncate(mark);
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, dot: &Value, vars: &mut Vars) -> anyhow::Result<Value> {
    let v = eval_cmds(&p.cmds, dot, vars)?;
    match &p.decl {
        Some(Decl::Define(names)) => {
            if let Some(n) = names.last() {
                vars.push((n.clone(), v.clone()));
            }
        }
        Some(Decl::Assign(name)) => match vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v.clone(),
            None => bail!("template: undefined variable: {name}"),
        },
        None => {}
    }
    Ok(v)
}

fn eval_cmds(cmds: &[Vec<Arg>], dot: &Value, vars: &Vars) -> anyhow::Result<Value> {
    let mut piped: Option<Value> = None;
    for cmd in cmds {
        piped = Some(eval_cmd(cmd, dot, vars, piped)?);
    }
    Ok(piped.unwrap_or(Value::Null))
}

fn fields(mut v: Value, names: &[String]) -> Value {
    for n in names {
        v = match v {
            Value::Object(mut o) => o.remove(n).unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    v
}

fn eval_arg(a: &Arg, dot: &Value, vars: &Vars) -> anyhow::Result<Value> {
    Ok(match a {
        Arg::Field(f) => fields(dot.clone(), f),
        Arg::Var(name, f) => {
            let v = vars.iter().rev().find(|(n, _)| n == name).with_context(|| format!("template: undefined variable: {name}"))?;
            fields(v.1.clone(), f)
        }
        Arg::Lit(v) => v.clone(),
        Arg::Sub(p, f) => fields(eval_cmds(&p.cmds, dot, vars)?, f),
        Arg::Func(name) => call(name, &[], dot, vars, None)?,
    })
}

fn eval_cmd(cmd: &[Arg], dot: &Value, vars: &Vars, piped: Option<Value>) -> anyhow::Result<Value> {
    match cmd {
        [Arg::Func(name), rest @ ..] => call(name, rest, dot, vars, piped),
        [one] if piped.is_none() => eval_arg(one, dot, vars),
        _ => bail!("template: can't give argument to non-function {:?}", cmd.first()),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn compare(a: &Value, b: &Value) -> anyhow::Result<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return Ok(x.cmp(&y));
            }
            let (x, y) = (num(a).unwrap_or(0.0), num(b).unwrap_or(0.0));
            x.partial_cmp(&y).context("template: incomparable numbers")
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => bail!("template: incompatible types for comparison"),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b).is_ok_and(|o| o.is_eq()),
        _ => a == b,
    }
}

fn text(v: &Value) -> String {
    crate::format::show(v)
}

fn int(v: &Value, what: &str) -> anyhow::Result<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .with_context(|| format!("template: {what}: not an integer"))
}

/// Go's `fmt.Sprint`: spaces between operands when neither side is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !a.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&text(a));
    }
    out
}

fn call(name: &str, args: &[Arg], dot: &Value, vars: &Vars, piped: Option<Value>) -> anyhow::Result<Value> {
    // `and` and `or` evaluate their arguments only as far as they need (Go 1.18).
    if name == "and" || name == "or" {
        let mut last = Value::Null;
        let n = args.len() + usize::from(piped.is_some());
        if n == 0 {
            bail!("template: wrong number of args for {name}: want at least 1 got 0");
        }
        for a in args {
            last = eval_arg(a, dot, vars)?;
            if truth(&last) != (name == "and") {
                return Ok(last);
            }
        }
        if let Some(p) = piped {
            last = p;
        }
        return Ok(last);
    }
    let mut v: Vec<Value> = args.iter().map(|a| eval_arg(a, dot, vars)).collect::<anyhow::Result<_>>()?;
    v.extend(piped);
    let want = |n: usize| -> anyhow::Result<()> {
        if v.len() != n {
            bail!("template: wrong number of args for {name}: want {n} got {}", v.len());
        }
        Ok(())
    };
    let s = |x: &Value| Value::String(x.to_string());
    let _ = s;
    Ok(match name {
        "not" => {
            want(1)?;
            Value::Bool(!truth(&v[0]))
        }
        "len" => {
            want(1)?;
            Value::from(match &v[0] {
                Value::String(x) => x.len(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::Null => 0,
                other => bail!("template: len of {}", text(other)),
            })
        }
        "index" => {
            if v.is_empty() {
                bail!("template: wrong number of args for index: want at least 1 got 0");
            }
            let mut cur = v[0].clone();
            for k in &v[1..] {
                cur = match (cur, k) {
                    (Value::Array(a), k) => {
                        let i = int(k, "index")?;
                        a.get(usize::try_from(i).unwrap_or(usize::MAX))
                            .cloned()
                            .with_context(|| format!("template: index out of range: {i}"))?
                    }
                    (Value::Object(mut o), Value::String(k)) => o.remove(k).unwrap_or(Value::Null),
                    (Value::Null, _) => Value::Null,
                    (other, _) => bail!("template: can't index item of type {}", text(&other)),
                };
            }
            cur
        }
        "slice" => {
            if v.is_empty() {
                bail!("template: wrong number of args for slice");
            }
            let bounds: Vec<usize> = v[1..].iter().map(|x| int(x, "slice").map(|i| i.max(0) as usize)).collect::<anyhow::Result<_>>()?;
            match &v[0] {
                Value::String(x) => {
                    let (a, b) = (bounds.first().copied().unwrap_or(0), bounds.get(1).copied().unwrap_or(x.len()));
                    Value::String(x.get(a..b).context("template: slice out of range")?.to_string())
                }
                Value::Array(x) => {
                    let (a, b) = (bounds.first().copied().unwrap_or(0), bounds.get(1).copied().unwrap_or(x.len()));
                    Value::Array(x.get(a..b).context("template: slice out of range")?.to_vec())
                }
                other => bail!("template: can't slice item of type {}", text(other)),
            }
        }
        "eq" => {
            if v.len() < 2 {
                bail!("template: wrong number of args for eq: want at least 2 got {}", v.len());
            }
            Value::Bool(v[1..].iter().any(|b| equal(&v[0], b)))
        }
        "ne" => {
            want(2)?;
            Value::Bool(!equal(&v[0], &v[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let o = compare(&v[0], &v[1])?;
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "print" => Value::String(sprint(&v)),
        "println" => Value::String(v.iter().map(text).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let f = v.first().and_then(Value::as_str).context("template: printf needs a format string")?;
            Value::String(sprintf(f, &v[1..]))
        }
        "json" => {
            want(1)?;
            Value::String(serde_json::to_string(&v[0])?)
        }
        "join" => {
            want(2)?;
            let sep = v[1].as_str().context("template: join: the separator is not a string")?;
            Value::String(v[0].as_array().map(|a| a.iter().map(text).collect::<Vec<_>>().join(sep)).unwrap_or_default())
        }
        "split" => {
            want(2)?;
            let (x, sep) = (text(&v[0]), text(&v[1]));
            let parts: Vec<Value> = if sep.is_empty() {
                x.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                x.split(sep.as_str()).map(|p| Value::String(p.to_string())).collect()
            };
            Value::Array(parts)
        }
        "upper" => {
            want(1)?;
            Value::String(text(&v[0]).to_uppercase())
        }
        "lower" => {
            want(1)?;
            Value::String(text(&v[0]).to_lowercase())
        }
        "title" => {
            want(1)?;
            let mut prev_letter = false;
            Value::String(
                text(&v[0])
                    .chars()
                    .map(|c| {
                        let up = if prev_letter { c } else { c.to_uppercase().next().unwrap_or(c) };
                        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
                        up
                    })
                    .collect(),
            )
        }
        "pad" => {
            want(3)?;
            let (l, r) = (int(&v[1], "pad")?.max(0) as usize, int(&v[2], "pad")?.max(0) as usize);
            Value::String(format!("{}{}{}", " ".repeat(l), text(&v[0]), " ".repeat(r)))
        }
        "truncate" => {
            want(2)?;
            let n = int(&v[1], "truncate")?.max(0) as usize;
            Value::String(text(&v[0]).chars().take(n).collect())
        }
        other => bail!("template: function {other:?} not defined"),
    })
}

/// Go's `fmt.Sprintf` for the verbs people use: `%v %s %d %q %t %f %e %g %x %X %o %b %c %%`,
/// with flags (`-+# 0`), width and precision.
fn sprintf(f: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&c) = chars.peek() {
            if "-+# 0".contains(c) {
                flags.push(c);
                chars.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit()) {
            width.push(c);
            chars.next();
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit()) {
                p.push(c);
                chars.next();
            }
            precision = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = it.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let body = match verb {
            'v' | 's' => {
                let t = text(a);
                match precision {
                    Some(p) if verb == 's' => t.chars().take(p).collect(),
                    _ => t,
                }
            }
            'q' => serde_json::to_string(&Value::String(text(a))).unwrap_or_default(),
            't' => match a {
                Value::Bool(b) => b.to_string(),
                other => format!("%!t({})", text(other)),
            },
            'd' => match a.as_i64().or_else(|| a.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64)) {
                Some(n) if flags.contains('+') && n >= 0 => format!("+{n}"),
                Some(n) => n.to_string(),
                None => format!("%!d({})", text(a)),
            },
            'f' | 'F' | 'e' | 'g' => match a.as_f64() {
                Some(x) => match verb {
                    'e' => format!("{:.*e}", precision.unwrap_or(6), x),
                    'g' => text(a),
                    _ => format!("{:.*}", precision.unwrap_or(6), x),
                },
                None => format!("%!{verb}({})", text(a)),
            },
            'x' | 'X' | 'o' | 'b' => match a.as_i64() {
                Some(n) => match verb {
                    'x' => format!("{n:x}"),
                    'X' => format!("{n:X}"),
                    'o' => format!("{n:o}"),
                    _ => format!("{n:b}"),
                },
                None if verb == 'x' => text(a).bytes().map(|b| format!("{b:02x}")).collect(),
                None => format!("%!{verb}({})", text(a)),
            },
            'c' => a.as_u64().and_then(|n| char::from_u32(n as u32)).map(String::from).unwrap_or_else(|| format!("%!c({})", text(a))),
            other => format!("%!{other}({})", text(a)),
        };
        let w: usize = width.parse().unwrap_or(0);
        let n = body.chars().count();
        if n >= w {
            out.push_str(&body);
        } else if flags.contains('-') {
            out.push_str(&body);
            out.push_str(&" ".repeat(w - n));
        } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'F' | 'x' | 'X' | 'o' | 'b' | 'e') {
            let (sign, digits) = if body.starts_with(['-', '+']) { body.split_at(1) } else { ("", body.as_str()) };
            out.push_str(sign);
            out.push_str(&"0".repeat(w - n));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(w - n));
            out.push_str(&body);
        }
    }
    if it.next().is_some() {
        out.push_str("%!(EXTRA)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &str, v: &Value) -> String {
        Template::parse(t).and_then(|t| t.execute(v)).unwrap_or_else(|e| format!("ERR {e}"))
    }

    fn data() -> Value {
        json!({
            "Name": "/web", "State": {"Running": true, "Pid": 42, "ExitCode": 0, "Status": "running"},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"app": "web", "tier": "front"}, "Cmd": ["sh", "-c", "echo"], "Entrypoint": null},
            "Mounts": [{"Source": "/h", "Destination": "/c", "RW": false}, {"Source": "/h2", "Destination": "/d", "RW": true}],
            "Size": 1536, "Ratio": 0.25, "Empty": [], "Blank": ""
        })
    }

    #[test]
    fn conditionals_with_and_else_chains() {
        let v = data();
        assert_eq!(run("{{if .State.Running}}up{{else}}down{{end}}", &v), "up");
        assert_eq!(run("{{if not .State.Running}}up{{else if eq .State.Pid 42}}pid{{else}}down{{end}}", &v), "pid");
        assert_eq!(run("{{if .Empty}}x{{else}}empty{{end}} {{if .Blank}}x{{else}}blank{{end}}", &v), "empty blank");
        assert_eq!(run("{{with .State}}{{.Status}}/{{.Pid}}{{end}}", &v), "running/42");
        assert_eq!(run("{{with .Config.Entrypoint}}{{.}}{{else}}no entrypoint{{end}}", &v), "no entrypoint");
        assert_eq!(run("{{if and .State.Running (gt .State.Pid 1)}}ok{{end}}", &v), "ok");
        assert_eq!(run("{{if or .Blank .Name}}{{or .Blank .Name}}{{end}}", &v), "/web");
        assert_eq!(run("{{and 1 0 2}} {{or 0 \"\" 3}}", &v), "0 3");
    }

    #[test]
    fn range_with_variables_else_and_the_root() {
        let v = data();
        assert_eq!(run("{{range .Config.Env}}[{{.}}]{{end}}", &v), "[A=1][B=2]");
        assert_eq!(run("{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}", &v), "0:A=1 1:B=2 ");
        assert_eq!(run("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", &v), "app=web;tier=front;");
        assert_eq!(run("{{range .Empty}}x{{else}}none{{end}}", &v), "none");
        assert_eq!(run("{{range .Mounts}}{{$.Name}}:{{.Source}} {{end}}", &v), "/web:/h /web:/h2 ");
        assert_eq!(run("{{$n := len .Mounts}}{{$n}} mounts", &v), "2 mounts");
        assert_eq!(run("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", &v), "2");
        assert_eq!(run("{{range .Mounts}}{{if .RW}}{{.Destination}}{{end}}{{end}}", &v), "/d");
    }

    #[test]
    fn functions_pipelines_and_printf() {
        let v = data();
        assert_eq!(run("{{.Name | printf \"%q\"}}", &v), "\"/web\"");
        assert_eq!(run("{{join .Config.Cmd \" \"}}", &v), "sh -c echo");
        assert_eq!(run("{{index .Config.Labels \"app\"}} {{index .Config.Env 1}}", &v), "web B=2");
        assert_eq!(run("{{json .Config.Labels}}", &v), r#"{"app":"web","tier":"front"}"#);
        assert_eq!(run("{{len .Config.Env}} {{len .Name}}", &v), "2 4");
        assert_eq!(
            run("{{printf \"%-6s|%5d|%05.1f|%x|%t|%v\" \"ab\" 42 3.14159 255 true .Config.Cmd}}", &v),
            "ab    |   42|003.1|ff|true|[sh -c echo]"
        );
        assert_eq!(run("{{printf \"%s=%d\" \"a\"}}", &v), "a=%!d(MISSING)");
        assert_eq!(run("{{upper .State.Status}} {{lower \"AB\"}} {{title \"hello world\"}}", &v), "RUNNING ab Hello World");
        assert_eq!(run("{{split \"a,b,c\" \",\"}} {{slice .Name 1}} {{truncate .Name 2}}|{{pad \"x\" 1 2}}|", &v), "[a b c] web /w| x  |");
        assert_eq!(run("{{print 1 2 \"a\" 3}} {{println \"x\" 1}}", &v), "1 2a3 x 1\n");
        assert_eq!(
            run("{{eq .State.Status \"exited\" \"running\"}} {{ne 1 2}} {{lt 1 2.5}} {{ge \"b\" \"a\"}}", &v),
            "true true true true"
        );
        assert_eq!(run("{{(index .Mounts 1).Source}} {{len (split \"a b\" \" \")}}", &v), "/h2 2");
        assert_eq!(
            run("{{.Size}} {{.Ratio}} {{.Nope}} {{.State}}", &v),
            "1536 0.25 <no value> map[ExitCode:0 Pid:42 Running:true Status:running]"
        );
    }

    #[test]
    fn trim_markers_comments_and_errors() {
        let v = data();
        assert_eq!(run("a  {{- .Name -}}  b", &v), "a/webb");
        assert_eq!(run("{{/* a comment */}}x{{- /* trimmed */ -}} y", &v), "xy");
        assert_eq!(run("{{ -1 }} {{- 2 }}", &v), "-12");
        assert!(run("{{if .Name}}x", &v).starts_with("ERR"), "no end");
        assert!(run("{{end}}", &v).starts_with("ERR"));
        assert!(run("{{nosuch .Name}}", &v).contains("not defined"));
        assert!(run("{{lt .Name 1}}", &v).contains("incompatible"));
        assert!(run("{{.Name .Name}}", &v).starts_with("ERR"));
        assert!(run("{{\"unterminated}}", &v).starts_with("ERR"));
        assert!(run("{{$nope}}", &v).contains("undefined variable"));
    }
}
