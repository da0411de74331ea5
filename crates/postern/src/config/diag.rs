//! Configuration problems and how they are shown: `FILE:LINE:COL: message`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A problem at a byte range of the file, before it is located as line and column.
#[derive(Debug, Clone)]
pub struct Problem {
    pub span: Range<usize>,
    pub message: String,
    /// A problem in another file (htpasswd, blocklist), already located there
    /// as `FILE:LINE: message`; `span` is the key that names the file.
    pub elsewhere: Option<String>,
}

impl Problem {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem {
            span,
            message: message.into(),
            elsewhere: None,
        }
    }

    pub fn in_file(span: Range<usize>, located: String) -> Problem {
        Problem {
            span,
            message: String::new(),
            elsewhere: Some(located),
        }
    }

    pub fn located(&self, file: &str, text: &str) -> String {
        if let Some(line) = &self.elsewhere {
            return line.clone();
        }
        let (line, col) = line_col(text, self.span.start);
        format!("{file}:{line}:{col}: {}", self.message)
    }
}

#[derive(Debug)]
pub enum ConfigError {
    Unreadable {
        path: PathBuf,
        error: String,
    },
    /// Each entry is a complete `FILE:LINE:COL: message` line.
    Invalid(Vec<String>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unreadable { path, error } => {
                write!(f, "{}:1:1: cannot read the file: {error}", path.display())
            }
            ConfigError::Invalid(lines) => write!(f, "{}", lines.join("\n")),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Turns a TOML or serde error into a located line, adding a did-you-mean hint
/// for unknown keys.
pub fn from_toml_error(file: &str, text: &str, err: &toml::de::Error) -> String {
    let start = err.span().map(|s| s.start).unwrap_or(0);
    // One line per problem: the parser's message may span several.
    let mut message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(hint) = unknown_key_hint(&message) {
        message = hint;
    } else if let Some(plain) = wrong_type(&message, key_before(text, start)) {
        message = plain;
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        message = format!("missing key {rest}");
    }
    Problem::new(start..start, message).located(file, text)
}

/// serde says "invalid type: floating point `1.5`, expected a duration ...";
/// we say "`drain` must be a duration ... (found floating point `1.5`)", in
/// the configuration's words rather than Rust's (`i64`, `struct RawPool`).
fn wrong_type(message: &str, key: Option<&str>) -> Option<String> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.split_once(", expected ")?;
    let expected = match expected {
        "i64" | "u64" | "i32" | "u32" | "u16" => "a whole number",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    };
    let found = match found {
        "map" => "a table",
        "sequence" => "an array",
        other => other,
    };
    let subject = key.map_or_else(|| "the value".to_string(), |k| format!("`{k}`"));
    Some(format!("{subject} must be {expected} (found {found})"))
}

/// The key a value at `offset` belongs to: the one before the nearest `=`
/// (for an element of an array, the array's key).
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let eq = before.rfind('=')?;
    let key = before[..eq].trim_end();
    let start = key
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"')))
        .map_or(0, |i| i + 1);
    let key = key[start..].trim_matches('"');
    (!key.is_empty()).then_some(key)
}

/// serde says "unknown field `lisener`, expected one of `workers`, `listener`";
/// we say "unknown key `lisener` (did you mean `listener`?)".
fn unknown_key_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|cand| (edit_distance(key, cand), *cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
        .min();
    Some(match best {
        Some((_, cand)) => format!("unknown key `{key}` (did you mean `{cand}`?)"),
        None if expected.is_empty() => format!("unknown key `{key}`"),
        None => format!(
            "unknown key `{key}`; expected one of: {}",
            expected.join(", ")
        ),
    })
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}
