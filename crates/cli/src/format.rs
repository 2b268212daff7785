//! The part of Go's text/template that people use with `--format`: `{{.Field.Sub}}`,
//! `{{json .}}`, `{{index .Map "key"}}`, `{{range .List}}…{{end}}`, `{{upper}}`/`{{lower}}`,
//! and the `table` prefix for aligned columns with headers.

use anyhow::bail;
use serde_json::Value;
use std::borrow::Cow;

enum Node {
    Text(String),
    /// The action's words (`json .Labels` → `["json", ".Labels"]`), split once at parse.
    Action(Vec<String>),
    Range(Vec<String>, Vec<Node>),
}

fn parse(src: &str) -> anyhow::Result<Vec<Node>> {
    let mut stack: Vec<(Vec<String>, Vec<Node>)> = vec![(Vec::new(), Vec::new())];
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let text = &rest[..start];
        if !text.is_empty()
            && let Some((_, v)) = stack.last_mut()
        {
            v.push(Node::Text(text.to_string()));
        }
        let Some(end) = rest[start..].find("}}") else { bail!("template: unclosed action in {src:?}") };
        let action = rest[start + 2..start + end].trim().trim_start_matches('-').trim_end_matches('-').trim().to_string();
        rest = &rest[start + end + 2..];
        if let Some(expr) = action.strip_prefix("range ") {
            stack.push((words(expr.trim()), Vec::new()));
        } else if action == "end" {
            let Some((expr, body)) = stack.pop().filter(|_| !stack.is_empty()) else { bail!("template: unexpected {{{{end}}}}") };
            if let Some((_, v)) = stack.last_mut() {
                v.push(Node::Range(expr, body));
            }
        } else {
            if let Some((_, v)) = stack.last_mut() {
                v.push(Node::Action(words(&action)));
            }
        }
    }
    if !rest.is_empty()
        && let Some((_, v)) = stack.last_mut()
    {
        v.push(Node::Text(rest.to_string()));
    }
    if stack.len() != 1 {
        bail!("template: missing {{{{end}}}}");
    }
    Ok(stack.pop().map(|(_, v)| v).unwrap_or_default())
}

fn lookup<'a>(v: &'a Value, path: &str) -> Cow<'a, Value> {
    if path == "." {
        return Cow::Borrowed(v);
    }
    let mut cur: &'a Value = v;
    for part in path.trim_start_matches('.').split('.') {
        cur = match cur.get(part) {
            Some(x) => x,
            None => return Cow::Owned(Value::Null),
        };
    }
    Cow::Borrowed(cur)
}

/// Go's `%v` of a value, appended to `out`.
fn show_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<no value>"),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                show_into(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                show_into(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Go's `%v` of a value.
pub fn show(v: &Value) -> String {
    let mut out = String::new();
    show_into(v, &mut out);
    out
}

fn words(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                if !quoted {
                    out.push(std::mem::take(&mut cur));
                }
            }
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn eval<'a>(w: &[String], dot: &'a Value) -> anyhow::Result<Cow<'a, Value>> {
    let arg = |i: usize| -> Cow<'a, Value> {
        match w.get(i) {
            Some(a) if a.starts_with('.') => lookup(dot, a),
            Some(a) => Cow::Owned(Value::String(a.clone())),
            None => Cow::Borrowed(dot),
        }
    };
    let owned = |v: Value| Ok(Cow::Owned(v));
    match w.first().map(String::as_str) {
        None => owned(Value::Null),
        Some("json") => owned(Value::String(serde_json::to_string(arg(1).as_ref())?)),
        Some("index") => {
            let base = arg(1);
            let key = w.get(2).map(String::as_str).unwrap_or_default();
            let found = match base.as_ref() {
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                b => b.get(key),
            };
            owned(found.cloned().unwrap_or(Value::Null))
        }
        Some("upper") => owned(Value::String(show(&arg(1)).to_uppercase())),
        Some("lower") => owned(Value::String(show(&arg(1)).to_lowercase())),
        Some("join") => {
            let list = arg(1);
            let sep = w.get(2).map(String::as_str).unwrap_or_default();
            owned(Value::String(list.as_array().map(|a| a.iter().map(show).collect::<Vec<_>>().join(sep)).unwrap_or_default()))
        }
        Some(p) if p.starts_with('.') => Ok(lookup(dot, p)),
        Some(other) => bail!("template: function {other:?} not defined"),
    }
}

fn render_nodes(nodes: &[Node], dot: &Value, out: &mut String) -> anyhow::Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(a) => show_into(eval(a, dot)?.as_ref(), out),
            Node::Range(expr, body) => match eval(expr, dot)?.as_ref() {
                Value::Array(items) => {
                    for item in items {
                        render_nodes(body, item, out)?;
                    }
                }
                Value::Object(m) => {
                    for item in m.values() {
                        render_nodes(body, item, out)?;
                    }
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// A template parsed once, rendered for as many values as a listing has.
pub struct Template(Vec<Node>);

impl Template {
    pub fn parse(src: &str) -> anyhow::Result<Template> {
        parse(src).map(Template)
    }

    pub fn render(&self, v: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        render_nodes(&self.0, v, &mut out)?;
        if out.contains('\\') {
            out = out.replace("\\t", "\t").replace("\\n", "\n");
        }
        Ok(out)
    }
}

pub fn render(template: &str, v: &Value) -> anyhow::Result<String> {
    Template::parse(template)?.render(v)
}

/// Print rows as a table, as the docker CLI's tables (Go's tabwriter: cells padded by 3, each
/// column at least 10 wide).
pub fn table(rows: &[Vec<String>]) -> String {
    table_min(rows, 10)
}

/// [`table`] with another minimum column width (`docker top` uses 20).
pub fn table_min(rows: &[Vec<String>], min: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| (rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0) + 3).max(min)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        // Not trimmed: an empty last cell leaves the padding before it, as Go's tabwriter does.
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `--format`: a `table …` template gets a header row and aligned columns.
pub fn format_list(template: &str, items: &[Value], id_title: &str) -> anyhow::Result<String> {
    if let Some(t) = template.strip_prefix("table") {
        let t = t.trim_start();
        let header: Vec<String> = words_of_template(t, id_title);
        let mut rows = vec![header];
        let t = Template::parse(t)?;
        for it in items {
            rows.push(t.render(it)?.split('\t').map(str::to_string).collect());
        }
        return Ok(table(&rows));
    }
    let t = Template::parse(template)?;
    let mut out = String::new();
    for it in items {
        out.push_str(&t.render(it)?);
        out.push('\n');
    }
    Ok(out)
}

/// Header cells for a table template: each `{{.Field}}` becomes FIELD (Docker's names for the common ones).
fn words_of_template(t: &str, id_title: &str) -> Vec<String> {
    t.split('\t')
        .map(|cell| {
            let name = cell.split("{{").nth(1).and_then(|a| a.split("}}").next()).unwrap_or("").trim().trim_start_matches('.');
            match name {
                "ID" => id_title.to_string(),
                "RunningFor" => "CREATED".into(),
                "CreatedSince" => "CREATED".into(),
                "CreatedBy" => "CREATED BY".into(),
                "CreatedAt" => "CREATED AT".into(),
                "CPUPerc" => "CPU %".into(),
                "MemUsage" => "MEM USAGE / LIMIT".into(),
                "MemPerc" => "MEM %".into(),
                "NetIO" => "NET I/O".into(),
                "BlockIO" => "BLOCK I/O".into(),
                other => other.to_uppercase(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_template_subset() {
        let v = json!({"State": {"Pid": 7, "Running": true}, "Names": ["a", "b"], "Labels": {"k": "v"}, "Name": "/x"});
        assert_eq!(render("{{.State.Pid}} {{.State.Running}}", &v).unwrap(), "7 true");
        assert_eq!(render("{{json .Labels}}", &v).unwrap(), r#"{"k":"v"}"#);
        assert_eq!(render(r#"{{index .Labels "k"}}"#, &v).unwrap(), "v");
        assert_eq!(render("{{range .Names}}[{{.}}]{{end}}", &v).unwrap(), "[a][b]");
        assert_eq!(render("{{.Nope}}", &v).unwrap(), "<no value>");
        assert_eq!(render("{{.Names}}", &v).unwrap(), "[a b]");
        assert!(render("{{range .Names}}", &v).is_err());
        let t = format_list("table {{.ID}}\t{{.Name}}", &[json!({"ID": "abc", "Name": "n"})], "CONTAINER ID").unwrap();
        assert_eq!(t, "CONTAINER ID   NAME\nabc            n\n");
        // Go's tabwriter as the docker CLI sets it: a column is at least 10 wide.
        let t = table(&[vec!["TAG".into(), "X".into()], vec!["latest".into(), "y".into()]]);
        assert_eq!(t, "TAG       X\nlatest    y\n");
        assert_eq!(table_min(&[vec!["UID".into(), "PID".into()]], 20), "UID                 PID\n");
    }
}
