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
    }
    Problem::new(start..start, message).located(file, text)
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
