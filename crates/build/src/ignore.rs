//! `.dockerignore`, by Docker's rules (its `patternmatcher`): one pattern a line, `#` lines are
//! comments, each pattern cleaned as a path (leading `/` and `./` dropped, `..` resolved), `!`
//! makes an exception, `*` and `?` match within a path component, `**` any number of them,
//! `[...]` a character class, the escape `\` a literal character. A path is excluded when the
//! last pattern that matches it, or one of its parent directories, is not an exception.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Cleaned, `/`-separated components.
    parts: Vec<String>,
    exception: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid .dockerignore pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

/// Clean a path as Go's `filepath.Clean`, relative: no empty, `.` or leading `..` components.
fn clean(p: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

/// Does the glob `p` match all of the component `s`?
pub(crate) fn component(p: &[char], s: &[char]) -> Result<bool, &'static str> {
    let Some((&first, rest)) = p.split_first() else { return Ok(s.is_empty()) };
    match first {
        '*' => {
            for i in 0..=s.len() {
                if component(rest, &s[i..])? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        '?' => Ok(!s.is_empty() && component(rest, &s[1..])?),
        '[' => {
            let close = rest.iter().position(|c| *c == ']').ok_or("unclosed character class")?;
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some((&c, s_rest)) = s.split_first() else { return Ok(false) };
            let (negate, class) = match class.split_first() {
                Some(('^' | '!', r)) => (true, r),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            Ok(hit != negate && component(after, s_rest)?)
        }
        '\\' => {
            let (&lit, rest) = rest.split_first().ok_or("trailing escape")?;
            Ok(s.first() == Some(&lit) && component(rest, &s[1..])?)
        }
        c => Ok(s.first() == Some(&c) && component(rest, &s[1..])?),
    }
}

/// Does `pattern` (components, `**` among them) match all of `path`?
fn matches(pattern: &[String], path: &[&str]) -> Result<bool, &'static str> {
    let Some((first, rest)) = pattern.split_first() else { return Ok(path.is_empty()) };
    if first == "**" {
        for i in 0..=path.len() {
            if matches(rest, &path[i..])? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    let Some((p, path_rest)) = path.split_first() else { return Ok(false) };
    let pc: Vec<char> = first.chars().collect();
    let sc: Vec<char> = p.chars().collect();
    Ok(component(&pc, &sc)? && matches(rest, path_rest)?)
}

impl Ignore {
    /// The patterns of a `.dockerignore` file's `text`.
    pub fn parse(text: &str) -> Result<Ignore, PatternError> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, p) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let parts = clean(p);
            if parts.is_empty() {
                continue; // `.` or `/`: matches the context itself, which is never excluded
            }
            let pat = Pattern { parts, exception };
            // A bad pattern is an error at once, not when a path meets it.
            matches(&pat.parts, &["x"]).map_err(|reason| PatternError { pattern: line.to_string(), reason })?;
            patterns.push(pat);
        }
        Ok(Ignore { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Is `path` (relative to the context, `/`-separated) left out of the build context?
    pub fn excluded(&self, path: &str) -> bool {
        let parts: Vec<String> = clean(path);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut excluded = false;
        for p in &self.patterns {
            // The path itself, or a directory it is in.
            let hit = (1..=parts.len()).any(|n| matches(&p.parts, &parts[..n]).unwrap_or(false));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Could something under the directory `dir` be included again by an exception (so the
    /// walk must go in even though `dir` itself is excluded)?
    pub fn may_include_under(&self, dir: &str) -> bool {
        let parts = clean(dir);
        self.patterns.iter().any(|p| {
            p.exception && (p.parts.len() > parts.len() || p.parts.iter().any(|c| c.contains("**"))) && {
                let n = parts.len().min(p.parts.len());
                let prefix: Vec<&str> = parts[..n].iter().map(String::as_str).collect();
                p.parts[..n].iter().any(|c| c == "**") || matches(&p.parts[..n], &prefix).unwrap_or(false)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_pattern_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*.md", "README.md", true),
            ("*.md", "docs/a.md", false),
            ("**/*.md", "docs/a.md", true),
            ("**/*.md", "a.md", true),
            ("docs", "docs/deep/a.txt", true),
            ("/docs/", "docs/x", true),
            ("./build", "build/out", true),
            ("temp?", "temp1", true),
            ("temp?", "temp12", false),
            ("[a-c]*.txt", "b1.txt", true),
            ("[!a-c]*.txt", "b1.txt", false),
            ("\\*literal", "*literal", true),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/../b", "b/x", true),
            ("node_modules", "src/node_modules", false),
        ];
        for (pattern, path, want) in table {
            let i = Ignore::parse(pattern).unwrap();
            assert_eq!(i.excluded(path), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn the_last_matching_pattern_wins_and_exceptions_reopen() {
        let i = Ignore::parse("# comment\n*.md\n!README.md\n\nsecret/\n!secret/keep\n").unwrap();
        assert!(i.excluded("notes.md"));
        assert!(!i.excluded("README.md"));
        assert!(i.excluded("secret/key"));
        assert!(!i.excluded("secret/keep"));
        assert!(i.excluded("secret"), "the directory itself is excluded");
        assert!(i.may_include_under("secret"), "but the walk must look inside");
        assert!(!i.may_include_under("other"));
        let i = Ignore::parse("*\n!src\n").unwrap();
        assert!(i.excluded("Dockerfile") && !i.excluded("src/main.rs"));
        assert!(Ignore::parse("[abc").is_err());
        assert!(Ignore::parse(".\n/\n").unwrap().is_empty());
    }
}
