//! The Dockerfile parser, by BuildKit's rules: parser directives at the very top (`# syntax=`,
//! `# escape=`, `# check=`), lines continued with the escape character (comment and empty
//! lines inside a continuation dropped), one instruction per logical line with its keyword in
//! any case, leading `--flag[=value]`s, the exec (JSON) form tried before the shell form, and
//! heredocs (`<<EOF`, `<<-EOF`, quoted delimiters, several per instruction) for RUN, COPY and
//! ADD. Errors name the file, line and column. Nothing is expanded here: variables are the
//! builder's, per instruction, in its ARG and ENV scope ([`crate::shell`]).

/// Instructions BuildKit knows.
pub const KEYWORDS: [&str; 19] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
    // Accepted by the parser, refused by builders that do not know it (as BuildKit's).
    "CHECKSUM",
];

/// Where something is in the Dockerfile (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}", line = pos.line, column = pos.column)]
pub struct ParseError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    pub syntax: Option<String>,
    pub escape: char,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Directives {
        Directives { syntax: None, escape: '\\', check: None }
    }
}

/// An instruction's arguments as written: the exec form's list, or the shell form's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Unquoted delimiter: the builder expands variables in it (RUN's are the shell's).
    pub expand: bool,
    /// `<<-`: leading tabs were stripped from its lines.
    pub chomp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper case (`RUN`).
    pub keyword: String,
    /// `--name=value` (None for a bare `--name`), in order.
    pub flags: Vec<(String, Option<String>)>,
    pub form: Form,
    pub heredocs: Vec<Heredoc>,
    /// The logical line as written, continuations joined (for history and messages).
    pub original: String,
    pub pos: Pos,
    pub end_line: usize,
}

impl Instruction {
    /// The shell form's text, or the exec form's words joined by spaces.
    pub fn text(&self) -> String {
        match &self.form {
            Form::Shell(s) => s.clone(),
            Form::Exec(v) => v.join(" "),
        }
    }

    pub fn flag(&self, name: &str) -> Option<Option<&str>> {
        self.flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
}

struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Lines<'a> {
    fn take(&mut self) -> Option<(usize, &'a str)> {
        let l = *self.lines.get(self.next)?;
        self.next += 1;
        Some((self.next, l))
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// `line` without a trailing escape character (and the blanks after it): (text, continued).
fn continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t', '\r']);
    match t.strip_suffix(escape) {
        Some(rest) => (rest, true),
        None => (line.trim_end_matches('\r'), false),
    }
}

/// A directive line: `# name=value` (name case-insensitive).
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let (name, value) = rest.split_once('=')?;
    let name = name.trim_end_matches([' ', '\t']);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = value.trim_matches([' ', '\t', '\r']);
    (!value.is_empty()).then(|| (name.to_ascii_lowercase(), value.to_string()))
}

/// Split leading `--flag[=value]` words off `args`; the rest starts at the first other word.
fn flags(args: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut out = Vec::new();
    let mut rest = args.trim_start();
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let word = &f[..end];
        if word.is_empty() {
            // A lone `--` ends the flags.
            rest = f[end..].trim_start();
            break;
        }
        match word.split_once('=') {
            Some((n, v)) => out.push((n.to_string(), Some(v.to_string()))),
            None => out.push((word.to_string(), None)),
        }
        rest = f[end..].trim_start();
    }
    (out, rest)
}

/// The exec form, where `text` is a JSON array of strings; None for the shell form.
fn exec_form(text: &str) -> Option<Vec<String>> {
    let t = text.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// Heredoc markers in `args` (`<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`), in order, outside
/// quotes: (name, quoted, chomp).
fn heredoc_markers(args: &str, escape: char) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let chars: Vec<char> = args.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == escape => i += 1,
            None if c == '\'' || c == '"' => quote = Some(c),
            // `<<<` is a here-string, not a heredoc.
            None if c == '<' && chars.get(i + 1) == Some(&'<') && chars.get(i + 2) == Some(&'<') => {
                while chars.get(i) == Some(&'<') {
                    i += 1;
                }
                continue;
            }
            None if c == '<' && chars.get(i + 1) == Some(&'<') => {
                let mut j = i + 2;
                let chomp = chars.get(j) == Some(&'-');
                if chomp {
                    j += 1;
                }
                let q = chars.get(j).copied().filter(|c| *c == '"' || *c == '\'');
                if q.is_some() {
                    j += 1;
                }
                let start = j;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == '-' || chars[j] == '.') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if let Some(q) = q {
                    if chars.get(j) != Some(&q) {
                        i += 1;
                        continue;
                    }
                    j += 1;
                }
                if !name.is_empty() {
                    out.push((name, q.is_some(), chomp));
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// Parse `src` (the Dockerfile named `file`, for messages).
pub fn parse(file: &str, src: &str) -> Result<Dockerfile, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let err = |line: usize, column: usize, message: String| ParseError { file: file.to_string(), pos: Pos { line, column }, message };
    let mut lines = Lines { lines: src.split('\n').collect(), next: 0 };
    // A trailing newline does not make a last, empty line.
    if lines.lines.last() == Some(&"") {
        lines.lines.pop();
    }
    let mut d = Dockerfile::default();

    // Directives: only before anything else; the first other line ends them.
    let mut seen = std::collections::HashSet::new();
    while let Some(&l) = lines.lines.get(lines.next) {
        let Some((name, value)) = directive(l.trim_start()) else { break };
        lines.next += 1;
        if !seen.insert(name.clone()) {
            return Err(err(lines.next, 1, format!("only one {name} parser directive can be used")));
        }
        match name.as_str() {
            "escape" => {
                d.directives.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(err(lines.next, 1, format!("invalid escape token '{value}' does not match ` or \\"))),
                }
            }
            "syntax" => d.directives.syntax = Some(value),
            "check" => d.directives.check = Some(value),
            _ => {} // unknown directives are comments
        }
    }
    let escape = d.directives.escape;

    while let Some((start, raw)) = lines.take() {
        let trimmed = raw.trim_start();
        if trimmed.trim_end().is_empty() || is_comment(trimmed) {
            continue;
        }
        let column = raw.len() - trimmed.len() + 1;
        // Join continued lines; comment and empty lines inside are dropped (as BuildKit).
        let (first, mut continued) = continuation(trimmed, escape);
        let mut logical = first.to_string();
        let mut end = start;
        while continued {
            let Some((n, next)) = lines.take() else { break };
            end = n;
            let t = next.trim_start();
            if is_comment(t) {
                continue;
            }
            if t.trim_end().is_empty() {
                continue;
            }
            let (text, more) = continuation(next, escape);
            logical.push_str(text);
            continued = more;
        }
        let (keyword, args) = match logical.find(char::is_whitespace) {
            Some(i) => (&logical[..i], logical[i..].trim_start()),
            None => (logical.as_str(), ""),
        };
        let upper = keyword.to_ascii_uppercase();
        if !KEYWORDS.contains(&upper.as_str()) {
            return Err(err(start, column, format!("unknown instruction: {keyword}")));
        }
        let mut heredocs = Vec::new();
        if matches!(upper.as_str(), "RUN" | "COPY" | "ADD") {
            for (name, quoted, chomp) in heredoc_markers(args, escape) {
                let mut content = String::new();
                let mut closed = false;
                while let Some((n, l)) = lines.take() {
                    end = n;
                    let l = l.strip_suffix('\r').unwrap_or(l);
                    let l = if chomp { l.trim_start_matches('\t') } else { l };
                    if l == name {
                        closed = true;
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                if !closed {
                    return Err(err(start, column, format!("unterminated heredoc {name}")));
                }
                heredocs.push(Heredoc { name, content, expand: !quoted, chomp });
            }
        }
        let (flags, rest) = flags(args);
        let form = match exec_form(rest) {
            Some(v) => Form::Exec(v),
            None => Form::Shell(rest.trim_end().to_string()),
        };
        d.instructions.push(Instruction {
            keyword: upper,
            flags,
            form,
            heredocs,
            original: logical.trim_end().to_string(),
            pos: Pos { line: start, column },
            end_line: end,
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Instruction {
        let d = parse("Dockerfile", src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(d.instructions.len(), 1, "{src:?}: {:?}", d.instructions);
        d.instructions.into_iter().next().unwrap()
    }

    #[test]
    fn directives_only_at_the_top() {
        let d = parse("Dockerfile", "# syntax=docker/dockerfile:1\n# ESCAPE = `\n# check=skip=all\nFROM x\n").unwrap();
        assert_eq!(d.directives, Directives { syntax: Some("docker/dockerfile:1".into()), escape: '`', check: Some("skip=all".into()) });
        // After a comment, an empty line or an instruction, they are comments.
        for src in ["# a comment\n# escape=`\nFROM x\n", "\n# escape=`\nFROM x\n", "FROM x\n# escape=`\n"] {
            assert_eq!(parse("Dockerfile", src).unwrap().directives.escape, '\\', "{src:?}");
        }
        assert!(parse("Dockerfile", "# escape=x\nFROM x").unwrap_err().message.contains("invalid escape token"));
        let e = parse("Dockerfile", "# escape=`\n# escape=\\\nFROM x").unwrap_err();
        assert_eq!(e.to_string(), "Dockerfile:2:1: only one escape parser directive can be used");
    }

    #[test]
    fn continuations_join_and_drop_comments_and_empty_lines() {
        let i = one("RUN echo a \\\n  # a comment\n\n  && echo b \\\n  && echo c\n");
        assert_eq!(i.form, Form::Shell("echo a   && echo b   && echo c".into()));
        assert_eq!((i.pos.line, i.end_line), (1, 5));
        let i = one("# escape=`\nRUN dir c:\\ `\n  && echo x\n");
        assert_eq!(i.form, Form::Shell("dir c:\\   && echo x".into()));
        // The escape character itself at a line's end, blanks after it, continues too.
        assert_eq!(one("ENV A=1 \\   \n  B=2").form, Form::Shell("A=1   B=2".into()));
    }

    #[test]
    fn exec_form_first_then_shell_form() {
        assert_eq!(one("CMD [\"a\", \"b c\"]").form, Form::Exec(vec!["a".into(), "b c".into()]));
        assert_eq!(one("cmd [\"a\", 1]").form, Form::Shell("[\"a\", 1]".into()));
        assert_eq!(one("ENTRYPOINT [not json").form, Form::Shell("[not json".into()));
        assert_eq!(one("RUN [\"sh\", \"-c\", \"echo \\\"q\\\"\"]").form, Form::Exec(vec!["sh".into(), "-c".into(), "echo \"q\"".into()]));
        let i = one("  run   echo  hi  ");
        assert_eq!((i.keyword.as_str(), i.pos.column), ("RUN", 3));
        assert_eq!(i.form, Form::Shell("echo  hi".into()));
    }

    #[test]
    fn flags_come_before_the_arguments() {
        let i = one("COPY --from=build --chown=1:2 --link a b");
        assert_eq!(i.flags, vec![("from".into(), Some("build".into())), ("chown".into(), Some("1:2".into())), ("link".into(), None)]);
        assert_eq!(i.form, Form::Shell("a b".into()));
        assert_eq!(i.flag("link"), Some(None));
        let i = one("FROM --platform=$BUILDPLATFORM busybox AS build");
        assert_eq!(i.flag("platform"), Some(Some("$BUILDPLATFORM")));
        assert_eq!(i.form, Form::Shell("busybox AS build".into()));
        assert_eq!(one("HEALTHCHECK --interval=5s CMD [\"true\"]").form, Form::Shell("CMD [\"true\"]".into()));
    }

    #[test]
    fn heredocs_for_run_copy_and_add() {
        let i = one("RUN <<EOF\necho one\necho $HOME\nEOF\n");
        assert_eq!(i.heredocs, vec![Heredoc { name: "EOF".into(), content: "echo one\necho $HOME\n".into(), expand: true, chomp: false }]);
        assert_eq!(i.form, Form::Shell("<<EOF".into()));
        assert_eq!(i.end_line, 4);
        let i = one("COPY <<-\"A\" <<'B' /dest/\n\tline a\n\tA\nline b\nB\n");
        assert_eq!(i.heredocs.len(), 2);
        assert_eq!((i.heredocs[0].content.as_str(), i.heredocs[0].expand, i.heredocs[0].chomp), ("line a\n", false, true));
        assert_eq!((i.heredocs[1].name.as_str(), i.heredocs[1].content.as_str()), ("B", "line b\n"));
        // Not in other instructions, not in quotes, not `<<<`.
        assert!(one("ENV A=<<EOF").heredocs.is_empty());
        assert!(one("RUN echo '<<EOF'").heredocs.is_empty());
        assert!(one("RUN cat <<<word").heredocs.is_empty());
        let e = parse("Dockerfile", "FROM x\nRUN <<EOF\necho never closed\n").unwrap_err();
        assert_eq!(e.to_string(), "Dockerfile:2:1: unterminated heredoc EOF");
    }

    #[test]
    fn unknown_instructions_name_their_place() {
        let e = parse("df/Dockerfile.dev", "FROM x\n\n   BOGUS thing\n").unwrap_err();
        assert_eq!(e.to_string(), "df/Dockerfile.dev:3:4: unknown instruction: BOGUS");
        let d = parse("Dockerfile", "\u{feff}# syntax=x\r\nFROM x\r\nRUN a \\\r\n b\r\n").unwrap();
        assert_eq!(d.directives.syntax.as_deref(), Some("x"));
        assert_eq!(d.instructions[1].form, Form::Shell("a  b".into()));
        assert_eq!(parse("Dockerfile", "").unwrap().instructions, vec![]);
    }
}
