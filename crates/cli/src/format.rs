//! `--format`: Go templates (`crate::template`) over the API's JSON, Go's `%v` of a value, and
//! the `table` prefix for aligned columns with headers, as the docker CLI prints them.

use serde_json::Value;

/// Go's `%v` of a value, appended to `out`.
pub(crate) fn show_into(v: &Value, out: &mut String) {
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

/// A template parsed once, rendered for as many values as a listing has.
pub struct Template(crate::template::Template);

impl Template {
    pub fn parse(src: &str) -> anyhow::Result<Template> {
        crate::template::Template::parse(src).map(Template)
    }

    pub fn render(&self, v: &Value) -> anyhow::Result<String> {
        let mut out = self.0.execute(v)?;
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
