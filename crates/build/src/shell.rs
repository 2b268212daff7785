//! Variable expansion and word splitting in Dockerfile arguments, by BuildKit's rules (its
//! `shell.Lex`): `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?msg}`,
//! `${V?msg}`, `${V#p}`, `${V##p}`, `${V%s}`, `${V%%s}`, `${V/a/b}`, `${V//a/b}`; single quotes
//! keep everything literal, double quotes allow expansion but not splitting, the escape
//! character (`\` or the `# escape=` one) makes the next character literal. Unset variables
//! expand to nothing.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("missing '}}' in {0:?}")]
    Unclosed(String),
    #[error("failed to process {word:?}: unexpected end of statement while looking for matching {}", if *quote == '"' { "double-quote" } else { "single-quote" })]
    UnclosedQuote { quote: char, word: String },
    #[error("bad substitution in {0:?}")]
    BadSubstitution(String),
    #[error("unsupported modifier ({modifier}) in substitution {word:?}")]
    Modifier { modifier: char, word: String },
}

type Result<T> = std::result::Result<T, ExpandError>;

/// The variables an instruction sees (its stage's ARGs and ENVs so far).
pub trait Vars {
    fn var(&self, name: &str) -> Option<&str>;
}

impl Vars for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Vars for [(&str, &str)] {
    fn var(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

/// A lexer for one escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lex {
    pub escape: char,
}

impl Default for Lex {
    fn default() -> Lex {
        Lex { escape: '\\' }
    }
}

/// Words being built: characters from unquoted text split on whitespace, quoted ones never.
struct Words {
    done: Vec<String>,
    cur: String,
    /// The current word has started (an empty `""` is a word).
    started: bool,
}

impl Words {
    fn new() -> Words {
        Words { done: Vec::new(), cur: String::new(), started: false }
    }

    fn push_splitting(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.end();
            } else {
                self.cur.push(c);
                self.started = true;
            }
        }
    }

    fn push_raw(&mut self, s: &str) {
        self.cur.push_str(s);
        self.started = true;
    }

    fn end(&mut self) {
        if self.started {
            self.done.push(std::mem::take(&mut self.cur));
            self.started = false;
        }
    }
}

struct Scan<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Vars,
    word: &'a str,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// The whole input as words (`split`) or one word, until `stop` (unquoted) or the end.
    fn words(&mut self, split: bool, stop: &[char]) -> Result<Words> {
        let mut w = Words::new();
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            self.pos += 1;
            match c {
                '\'' => {
                    let s = self.single_quoted()?;
                    w.push_raw(&s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    w.push_raw(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    if split { w.push_splitting(&s) } else { w.push_raw(&s) }
                }
                c if c == self.escape => match self.next() {
                    Some(n) => w.push_raw(&n.to_string()),
                    // A trailing escape stays (as BuildKit keeps it).
                    None => w.push_raw(&c.to_string()),
                },
                c if split && c.is_whitespace() => w.end(),
                c => w.push_raw(&c.to_string()),
            }
        }
        Ok(w)
    }

    fn single_quoted(&mut self) -> Result<String> {
        let mut s = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
                None => return Err(ExpandError::UnclosedQuote { quote: '\'', word: self.word.to_string() }),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String> {
        let mut s = String::new();
        loop {
            match self.next() {
                Some('"') => return Ok(s),
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        s.push(n);
                    }
                    _ => s.push(c),
                },
                Some(c) => s.push(c),
                None => return Err(ExpandError::UnclosedQuote { quote: '"', word: self.word.to_string() }),
            }
        }
    }

    /// After a `$`.
    fn dollar(&mut self) -> Result<String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if is_name_char(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
                    name.push(c);
                    self.pos += 1;
                }
                Ok(self.vars.var(&name).unwrap_or("").to_string())
            }
            // A lone `$` is itself.
            _ => Ok("$".into()),
        }
    }

    /// The rest of a modifier's word, up to the `}` that closes the substitution, expanded.
    fn modifier_word(&mut self) -> Result<String> {
        let w = self.words(false, &['}'])?;
        if self.next() != Some('}') {
            return Err(ExpandError::Unclosed(self.word.to_string()));
        }
        Ok(w.cur)
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String> {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
            name.push(c);
            self.pos += 1;
        }
        if name.is_empty() {
            return Err(ExpandError::BadSubstitution(self.word.to_string()));
        }
        let value = self.vars.var(&name);
        let set = value.is_some();
        let v = value.unwrap_or("").to_string();
        match self.next() {
            Some('}') => Ok(v),
            Some(':') => {
                let m = self.next().ok_or_else(|| ExpandError::Unclosed(self.word.to_string()))?;
                let word = self.modifier_word()?;
                match m {
                    '-' => Ok(if v.is_empty() { word } else { v }),
                    '+' => Ok(if v.is_empty() { String::new() } else { word }),
                    '?' if v.is_empty() => {
                        let message = if word.is_empty() { "is not allowed to be empty".to_string() } else { word };
                        Err(ExpandError::Required { name, message })
                    }
                    '?' => Ok(v),
                    m => Err(ExpandError::Modifier { modifier: m, word: self.word.to_string() }),
                }
            }
            Some('-') => {
                let word = self.modifier_word()?;
                Ok(if set { v } else { word })
            }
            Some('+') => {
                let word = self.modifier_word()?;
                Ok(if set { word } else { String::new() })
            }
            Some('?') => {
                let word = self.modifier_word()?;
                if set {
                    Ok(v)
                } else {
                    let message = if word.is_empty() { "is not allowed to be unset".to_string() } else { word };
                    Err(ExpandError::Required { name, message })
                }
            }
            Some(c @ ('#' | '%')) => {
                let longest = self.peek() == Some(c);
                if longest {
                    self.pos += 1;
                }
                let pattern = self.modifier_word()?;
                Ok(if c == '#' { trim_prefix(&v, &pattern, longest) } else { trim_suffix(&v, &pattern, longest) })
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let w = self.words(false, &['/', '}'])?;
                let pattern = w.cur;
                let replacement = if self.peek() == Some('/') {
                    self.pos += 1;
                    self.modifier_word()?
                } else {
                    if self.next() != Some('}') {
                        return Err(ExpandError::Unclosed(self.word.to_string()));
                    }
                    String::new()
                };
                Ok(replace(&v, &pattern, &replacement, all))
            }
            Some(m) => Err(ExpandError::Modifier { modifier: m, word: self.word.to_string() }),
            None => Err(ExpandError::Unclosed(self.word.to_string())),
        }
    }
}

/// Does the glob `pattern` (`*`, `?`, the rest literal) match all of `s`?
fn glob(pattern: &[char], s: &[char]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some(('*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some(('?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

fn trim_prefix(v: &str, pattern: &str, longest: bool) -> String {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), v.chars().collect());
    let mut ends: Vec<usize> = (0..=s.len()).filter(|i| glob(&p, &s[..*i])).collect();
    if !longest {
        ends.truncate(1);
    }
    match ends.last() {
        Some(i) => s[*i..].iter().collect(),
        None => v.to_string(),
    }
}

fn trim_suffix(v: &str, pattern: &str, longest: bool) -> String {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), v.chars().collect());
    let mut starts: Vec<usize> = (0..=s.len()).rev().filter(|i| glob(&p, &s[*i..])).collect();
    if !longest {
        starts.truncate(1);
    }
    match starts.last() {
        Some(i) => s[..*i].iter().collect(),
        None => v.to_string(),
    }
}

/// `${V/pattern/replacement}`: the first (or every) longest match of the glob replaced.
fn replace(v: &str, pattern: &str, replacement: &str, all: bool) -> String {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), v.chars().collect());
    if p.is_empty() {
        return v.to_string();
    }
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i < s.len() {
        let found = if replaced && !all { None } else { (i + 1..=s.len()).rev().find(|j| glob(&p, &s[i..*j])) };
        match found {
            Some(j) => {
                out.push_str(replacement);
                replaced = true;
                i = j;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

impl Lex {
    pub fn new(escape: char) -> Lex {
        Lex { escape }
    }

    /// `word` expanded as one word: quotes removed, nothing split (ENV and LABEL values,
    /// WORKDIR, USER …).
    pub fn word(&self, word: &str, vars: &dyn Vars) -> Result<String> {
        let mut s = Scan { chars: word.chars().collect(), pos: 0, escape: self.escape, vars, word };
        Ok(s.words(false, &[])?.cur)
    }

    /// `text` expanded and split into words on whitespace outside quotes (COPY's sources,
    /// EXPOSE's ports …): a variable's value outside quotes splits too.
    pub fn words(&self, text: &str, vars: &dyn Vars) -> Result<Vec<String>> {
        let mut s = Scan { chars: text.chars().collect(), pos: 0, escape: self.escape, vars, word: text };
        let mut w = s.words(true, &[])?;
        w.end();
        Ok(w.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("V", "value"), ("E", ""), ("P", "/usr/local/bin"), ("F", "file.tar.gz"), ("S", "a b  c")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_expansion_form() {
        let l = Lex::default();
        let v = vars();
        let table: &[(&str, &str)] = &[
            ("$V", "value"),
            ("${V}", "value"),
            ("x${V}y", "xvaluey"),
            ("$NOPE", ""),
            ("${NOPE:-dflt}", "dflt"),
            ("${E:-dflt}", "dflt"),
            ("${E-dflt}", ""),
            ("${NOPE-dflt}", "dflt"),
            ("${V:+alt}", "alt"),
            ("${E:+alt}", ""),
            ("${E+alt}", "alt"),
            ("${NOPE+alt}", ""),
            ("${V:?must}", "value"),
            ("${NOPE:-$V}", "value"),
            ("${NOPE:-${E:-deep}}", "deep"),
            ("${P#*/}", "usr/local/bin"),
            ("${P##*/}", "bin"),
            ("${F%.*}", "file.tar"),
            ("${F%%.*}", "file"),
            ("${F/tar/zip}", "file.zip.gz"),
            ("${P//\\//:}", ":usr:local:bin"),
            ("${F/.gz}", "file.tar"),
            ("'$V'", "$V"),
            ("\"$V\"", "value"),
            ("\\$V", "$V"),
            ("\"\\$V\"", "$V"),
            ("\"a\\b\"", "a\\b"),
            ("a\\ b", "a b"),
            ("$", "$"),
            ("$-x", "$-x"),
            ("\"\"", ""),
        ];
        for (input, want) in table {
            assert_eq!(l.word(input, &v).as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn words_split_outside_quotes_and_values_split_unquoted() {
        let l = Lex::default();
        let v = vars();
        assert_eq!(l.words("a  b\t'c d' \"$S\" $S", &v).unwrap(), ["a", "b", "c d", "a b  c", "a", "b", "c"]);
        assert_eq!(l.words("\"\" x", &v).unwrap(), ["", "x"]);
        assert_eq!(l.words("  ", &v).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_backtick_escape_and_errors() {
        let l = Lex::new('`');
        let v = vars();
        assert_eq!(l.word("c:\\dir`$V", &v).unwrap(), "c:\\dir$V");
        let l = Lex::default();
        assert_eq!(l.word("${NOPE:?is required}", &v).unwrap_err().to_string(), "NOPE: is required");
        assert_eq!(l.word("${NOPE?}", &v).unwrap_err().to_string(), "NOPE: is not allowed to be unset");
        assert_eq!(l.word("${E:?}", &v).unwrap_err().to_string(), "E: is not allowed to be empty");
        assert!(matches!(l.word("${V", &v), Err(ExpandError::Unclosed(_))));
        assert!(matches!(l.word("${}", &v), Err(ExpandError::BadSubstitution(_))));
        assert!(matches!(l.word("${V:=x}", &v), Err(ExpandError::Modifier { modifier: '=', .. })));
        assert!(matches!(l.word("'open", &v), Err(ExpandError::UnclosedQuote { quote: '\'', .. })));
        assert!(matches!(l.word("\"open", &v), Err(ExpandError::UnclosedQuote { quote: '"', .. })));
        // Docker's words (`import --change 'ENV A="unterminated'` on the peer dockerd).
        assert_eq!(
            l.word("\"unterminated", &v).unwrap_err().to_string(),
            "failed to process \"\\\"unterminated\": unexpected end of statement while looking for matching double-quote"
        );
    }
}
