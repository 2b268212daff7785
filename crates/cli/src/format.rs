//! The part of Go's text/template that people use with `--format`: `{{.Field.Sub}}`,
//! `{{json .}}`, `{{index .Map "key"}}`, `{{range .List}}…{{end}}`, `{{upper}}`/`{{lower}}`,
//! and the `table` prefix for aligned columns with headers.

use anyhow::bail;
use serde_json::Value;

enum Node {
    Text(String),
    Action(String),
    Range(String, Vec<Node>),
}

fn parse(src: &str) -> anyhow::Result<Vec<Node>> {
    let mut stack: Vec<(String, Vec<Node>)> = vec![(String::new(), Vec::new())];
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
            stack.push((expr.trim().to_string(), Vec::new()));
        } else if action == "end" {
            let Some((expr, body)) = stack.pop().filter(|_| !stack.is_empty()) else { bail!("template: unexpected {{{{end}}}}") };
            if let Some((_, v)) = stack.last_mut() {
                v.push(Node::Range(expr, body));
            }
        } else {
            if let Some((_, v)) = stack.last_mut() {
                v.push(Node::Action(action));
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

fn lookup<'a>(v: &'a Value, path: &str) -> Value {
    if path == "." {
        return v.clone();
    }
    let mut cur: &'a Value = v;
    for part in path.trim_start_matches('.').split('.') {
        cur = match cur.get(part) {
            Some(x) => x,
            None => return Value::Null,
        };
    }
    cur.clone()
}

/// Go's `%v` of a value.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", show(v))).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
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

fn eval(expr: &str, dot: &Value) -> anyhow::Result<Value> {
    let w = words(expr);
    let arg = |i: usize| -> Value {
        match w.get(i) {
            Some(a) if a.starts_with('.') => lookup(dot, a),
            Some(a) => Value::String(a.clone()),
            None => dot.clone(),
        }
    };
    Ok(match w.first().map(String::as_str) {
        None => Value::Null,
        Some("json") => Value::String(serde_json::to_string(&arg(1))?),
        Some("index") => {
            let base = arg(1);
            let key = w.get(2).cloned().unwrap_or_default();
            match &base {
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i).cloned()).unwrap_or(Value::Null),
                _ => base.get(&key).cloned().unwrap_or(Value::Null),
            }
        }
        Some("upper") => Value::String(show(&arg(1)).to_uppercase()),
        Some("lower") => Value::String(show(&arg(1)).to_lowercase()),
        Some("join") => {
            let list = arg(1);
            let sep = w.get(2).cloned().unwrap_or_default();
            Value::String(list.as_array().map(|a| a.iter().map(show).collect::<Vec<_>>().join(&sep)).unwrap_or_default())
        }
        Some(p) if p.starts_with('.') => lookup(dot, p),
        Some(other) => bail!("template: function {other:?} not defined"),
    })
}

fn render_nodes(nodes: &[Node], dot: &Value, out: &mut String) -> anyhow::Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(a) => out.push_str(&show(&eval(a, dot)?)),
            Node::Range(expr, body) => match eval(expr, dot)? {
                Value::Array(items) => {
                    for item in items {
                        render_nodes(body, &item, out)?;
                    }
                }
                Value::Object(m) => {
                    for (_, item) in m {
                        render_nodes(body, &item, out)?;
                    }
                }
                _ => {}
            },
        }
    }
    Ok(())
}

pub fn render(template: &str, v: &Value) -> anyhow::Result<String> {
    let nodes = parse(template)?;
    let mut out = String::new();
    render_nodes(&nodes, v, &mut out)?;
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

/// Print rows as a table: columns padded like Go's tabwriter (padding 3).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
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
        for it in items {
            rows.push(render(t, it)?.split('\t').map(str::to_string).collect());
        }
        return Ok(table(&rows));
    }
    let mut out = String::new();
    for it in items {
        out.push_str(&render(template, it)?);
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
    }
}
