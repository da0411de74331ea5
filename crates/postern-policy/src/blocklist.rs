//! Named domain blocklists: hosts files, plain domain lists, Adblock domain rules and URL
//! globs, parsed into a compact form and matched against request hosts and URLs.
//!
//! Owns the list's in-memory layout. Lists can hold millions of domains, so every
//! normalised domain lives in one arena string, indexed by an open-addressing hash table
//! whose slots pack the arena offset, the length and a hash tag into one `u64`. A lookup
//! hashes the host and each parent suffix, and a hit is always confirmed by comparing the
//! bytes, so a hash collision can never block a host by mistake.
//!
//! Accepted lines (leading and trailing whitespace ignored):
//!
//! - `example.com`, `.example.com`, `*.example.com`: blocks the domain and every
//!   subdomain. IDNs are stored in punycode. A single-label `*.exe` is a URL glob
//!   instead (see below); block a whole TLD with `.tld`.
//! - hosts-file lines, `0.0.0.0 a.com b.com`: every name after the address is a domain
//!   entry; `localhost` and the other loopback names are skipped.
//! - Adblock `||example.com^`: a domain entry. Options after `$` that only narrow the
//!   rule (`$third-party`, `$script`, `$important`, ...) are ignored, so the whole domain
//!   is blocked for every request; options that change what the rule does (`$domain=`,
//!   `$badfilter`, `$csp=`, `$removeparam`, ...) are reported as unsupported.
//!   `||example.com/path` becomes a URL glob `example.com/path*` that also matches any
//!   subdomain. Exception (`@@`) and cosmetic (`##`, `#@#`) rules are reported.
//! - URL globs, any entry with `/` or `*` (besides a leading `*.` on a name with at
//!   least two labels): matched against the
//!   whole request URL without its scheme (`http://a.com/x` is tested as `a.com/x`, a
//!   CONNECT target `a.com:443` as is), ASCII case-insensitively. `*` matches any run of
//!   characters, `/` included; everything else is literal, so a glob not starting with
//!   `*` is anchored at the start and one not ending with `*` at the end. Path globs
//!   cannot match CONNECT tunnels, whose paths the proxy never sees.
//! - `#` and `!` comment lines, a trailing ` # comment`, and the `[Adblock Plus 2.0]`
//!   header.
//!
//! Anything else is reported as a [`LineProblem`] and skipped; a bad line never makes
//! the whole list fail.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

/// A line of a list or user file that was rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// [`Blocklist::parse`] lists at most this many problems, then one more that counts
/// the rest, so a file in the wrong format cannot produce a million log lines.
pub const MAX_PROBLEMS: usize = 1000;

const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;
const MIN_SLOTS: usize = 16;

/// Names in hosts files that point at the machine itself rather than at a blocked site.
const HOSTS_SKIP: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "0.0.0.0",
];

/// Adblock options that change what a rule does rather than narrowing which requests it
/// applies to. Ignoring them would block domains the list never meant to block.
const UNSUPPORTED_OPTIONS: &[&str] = &[
    "badfilter",
    "domain",
    "from",
    "to",
    "denyallow",
    "csp",
    "removeparam",
    "queryprune",
    "removeheader",
    "redirect-rule",
    "header",
    "permissions",
    "replace",
    "urlskip",
    "uritransform",
    "urltransform",
    "cookie",
    "generichide",
    "ghide",
    "elemhide",
    "ehide",
    "specifichide",
    "shide",
    "content",
    "jsinject",
    "extension",
    "stealth",
    "urlblock",
    "genericblock",
];

/// A parsed blocklist. Cheap to share behind an `Arc`; matching never allocates.
#[derive(Clone, Default)]
pub struct Blocklist {
    /// Every normalised domain, back to back.
    arena: String,
    /// Open-addressing table (power-of-two length, linear probing). 0 is an empty slot;
    /// otherwise bits 0..32 are the arena offset, 32..40 the length (1..=253) and
    /// 40..64 the top 24 bits of the domain's hash.
    slots: Vec<u64>,
    domains: usize,
    globs: Vec<Glob>,
}

#[derive(Clone)]
struct Glob {
    /// The entry as reported to callers, e.g. `ads.example.com/*` or `||a.com/x*`.
    text: Box<str>,
    /// Where the pattern starts in `text` (after `||`).
    pattern_start: usize,
    /// From `||`: the pattern may also start right after any `.` in the URL's host.
    subdomains: bool,
}

impl Blocklist {
    /// Parses a list file's text. Bad lines are reported, never fatal.
    ///
    /// At most [`MAX_PROBLEMS`] problems are listed individually; if there are more, a
    /// last one gives the count of those left out.
    pub fn parse(text: &str) -> (Blocklist, Vec<LineProblem>) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut parser = Parser::default();
        // An upper bound for the arena; trimmed to size once the list is built.
        parser.list.arena.reserve(text.len());
        for (i, line) in text.lines().enumerate() {
            parser.line(i + 1, line);
        }
        parser.finish()
    }

    /// Number of entries: domains plus URL globs.
    pub fn len(&self) -> usize {
        self.domains + self.globs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn domain_count(&self) -> usize {
        self.domains
    }

    pub fn glob_count(&self) -> usize {
        self.globs.len()
    }

    /// `host` is already normalised by the caller: lowercase ASCII (IDNs in punycode),
    /// no trailing dot. Anything else simply does not match.
    ///
    /// Suffix matching: an entry `example.com` blocks `example.com` and
    /// `a.b.example.com`, not `badexample.com`. The longest matching entry wins.
    ///
    /// Returns the matching entry as written after normalisation (borrowed, no
    /// allocation).
    pub fn match_host(&self, host: &str) -> Option<&str> {
        if self.slots.is_empty() {
            return None;
        }
        let bytes = host.as_bytes();
        let mut start = 0;
        loop {
            let suffix = &bytes[start..];
            if suffix.len() <= MAX_NAME
                && let Some(hit) = self.find(suffix)
            {
                return Some(hit);
            }
            match suffix.iter().position(|&b| b == b'.') {
                Some(dot) => start += dot + 1,
                None => return None,
            }
        }
    }

    /// `url` is the request target as the proxy sees it, e.g. `http://host:8080/path?q`
    /// or `host:443` for CONNECT.
    ///
    /// Checks [`match_host`](Self::match_host) first, then the URL globs in file order
    /// (a linear scan: globs suit short lists, domains suit long ones).
    pub fn match_request(&self, host: &str, url: &str) -> Option<&str> {
        if let Some(hit) = self.match_host(host) {
            return Some(hit);
        }
        if self.globs.is_empty() {
            return None;
        }
        let target = strip_scheme(url).as_bytes();
        self.globs
            .iter()
            .find(|g| g.matches(target))
            .map(|g| &*g.text)
    }

    /// Approximate heap bytes used (for reporting memory).
    pub fn memory_bytes(&self) -> usize {
        self.arena.capacity()
            + self.slots.capacity() * size_of::<u64>()
            + self.globs.capacity() * size_of::<Glob>()
            + self.globs.iter().map(|g| g.text.len()).sum::<usize>()
    }

    /// Looks up one exact name.
    fn find(&self, name: &[u8]) -> Option<&str> {
        if name.is_empty() || self.slots.is_empty() {
            return None;
        }
        let hash = hash(name);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        // Terminates: the table is never more than 3/4 full.
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if tag_matches(slot, hash) && slot_len(slot) == name.len() {
                let off = slot_off(slot);
                if let Some(entry) = self.arena.get(off..off + name.len())
                    && entry.as_bytes() == name
                {
                    return Some(entry);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds the name sitting at `arena[start..]` to the table, or drops it from the arena
    /// if it is already there. Returns false if the list has outgrown 32-bit offsets.
    fn commit_pending(&mut self, start: usize) -> bool {
        let len = self.arena.len() - start;
        let (Ok(off), Ok(len8)) = (u32::try_from(start), u8::try_from(len)) else {
            self.arena.truncate(start);
            return false;
        };
        if (self.domains + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let name = &self.arena.as_bytes()[start..];
        let hash = hash(name);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                break;
            }
            if tag_matches(slot, hash) && slot_len(slot) == len {
                let other = slot_off(slot);
                if self.arena.as_bytes().get(other..other + len) == Some(name) {
                    self.arena.truncate(start);
                    return true;
                }
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = pack(off, len8, hash);
        self.domains += 1;
        true
    }

    fn grow(&mut self) {
        let new_len = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![0; new_len]);
        let mask = new_len - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let off = slot_off(slot);
            let name = self
                .arena
                .as_bytes()
                .get(off..off + slot_len(slot))
                .unwrap_or_default();
            let mut i = hash(name) as usize & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

impl fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocklist")
            .field("domains", &self.domains)
            .field("globs", &self.globs.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

fn pack(off: u32, len: u8, hash: u64) -> u64 {
    u64::from(off) | (u64::from(len) << 32) | (hash & !((1 << 40) - 1))
}

fn slot_off(slot: u64) -> usize {
    (slot & 0xffff_ffff) as usize
}

fn slot_len(slot: u64) -> usize {
    ((slot >> 32) & 0xff) as usize
}

fn tag_matches(slot: u64, hash: u64) -> bool {
    (slot ^ hash) >> 40 == 0
}

/// Word-at-a-time multiply-rotate hash with a final avalanche, so both the low bits (the
/// slot index) and the high bits (the tag) are well mixed. Measured several times faster
/// than SipHash on short names; collisions only cost a byte comparison.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    // MurmurHash3's 64-bit finaliser.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `http://a.com/x` → `a.com/x`; a target without a scheme is left as is.
fn strip_scheme(url: &str) -> &str {
    match url.find("://") {
        Some(i)
            if i > 0
                && url.as_bytes()[..i]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            &url[i + 3..]
        }
        _ => url,
    }
}

impl Glob {
    fn pattern(&self) -> &[u8] {
        self.text
            .as_bytes()
            .get(self.pattern_start..)
            .unwrap_or_default()
    }

    fn matches(&self, target: &[u8]) -> bool {
        let pattern = self.pattern();
        if glob_match(pattern, target) {
            return true;
        }
        // A leading `*` already covers every later start. Otherwise only starts within a
        // real host name (at most 253 bytes) are tried, which bounds the work on a huge
        // hostile URL.
        if !self.subdomains || pattern.first() == Some(&b'*') {
            return false;
        }
        let host_end = target
            .iter()
            .position(|&b| matches!(b, b'/' | b':' | b'?' | b'#'))
            .unwrap_or(target.len())
            .min(MAX_NAME);
        target[..host_end]
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'.' && glob_match(pattern, &target[i + 1..]))
    }
}

/// Whole-string match of a lowercase `pattern` where `*` matches any run of bytes.
///
/// The literal text before the first `*` must be a prefix and the text after the last
/// `*` a suffix; the pieces between are then found leftmost-first, which is optimal for
/// `*`-only patterns. No backtracking, so the worst case is O(len(pattern) × len(s)).
fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let Some(first) = pattern.iter().position(|&b| b == b'*') else {
        return pattern.eq_ignore_ascii_case(s);
    };
    let last = pattern.iter().rposition(|&b| b == b'*').unwrap_or(first);
    let prefix = &pattern[..first];
    let suffix = &pattern[last + 1..];
    if s.len() < prefix.len() + suffix.len()
        || !s[..prefix.len()].eq_ignore_ascii_case(prefix)
        || !s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    {
        return false;
    }
    let mut rest = &s[prefix.len()..s.len() - suffix.len()];
    let middle = pattern.get(first + 1..last).unwrap_or_default();
    for piece in middle.split(|&b| b == b'*').filter(|p| !p.is_empty()) {
        match rest
            .windows(piece.len())
            .position(|w| w.eq_ignore_ascii_case(piece))
        {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Appends `raw`, normalised, to the arena: lowercase, punycode for IDNs, one trailing dot
/// dropped. On error the arena is left as it was.
fn push_domain(arena: &mut String, raw: &str) -> Result<(), String> {
    let start = arena.len();
    if raw.is_ascii() {
        arena.push_str(raw);
        arena[start..].make_ascii_lowercase();
    } else {
        match idna::domain_to_ascii(raw) {
            Ok(ascii) => arena.push_str(&ascii),
            Err(_) => return Err("not a valid internationalised domain name".to_string()),
        }
    }
    if arena[start..].ends_with('.') {
        arena.pop();
    }
    let result = check_domain(&arena.as_bytes()[start..]);
    if result.is_err() {
        arena.truncate(start);
    }
    result
}

fn check_domain(name: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if let Some(&bad) = name
        .iter()
        .find(|&&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)))
    {
        return Err(format!("character {:?} not allowed", bad as char));
    }
    if name.len() > MAX_NAME {
        return Err(format!("name longer than {MAX_NAME} characters"));
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err("empty label".to_string());
        }
        if label.len() > MAX_LABEL {
            return Err(format!("label longer than {MAX_LABEL} characters"));
        }
    }
    Ok(())
}

/// Quotes an entry for a message, shortened so one huge line cannot flood a log.
fn quoted(entry: &str) -> String {
    const MAX_SHOWN: usize = 80;
    match entry.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{:?}...", &entry[..cut]),
        None => format!("{entry:?}"),
    }
}

/// Byte offset of a ` # comment` (a `#` preceded by whitespace), if any.
fn trailing_comment(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    (1..b.len()).find(|&i| b[i] == b'#' && b[i - 1].is_ascii_whitespace())
}

#[derive(Default)]
struct Parser {
    list: Blocklist,
    problems: Vec<LineProblem>,
    left_out: usize,
    first_left_out: usize,
    seen_globs: HashSet<Box<str>>,
    too_large: bool,
}

impl Parser {
    fn problem(&mut self, line: usize, message: impl FnOnce() -> String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(LineProblem {
                line,
                message: message(),
            });
        } else {
            if self.left_out == 0 {
                self.first_left_out = line;
            }
            self.left_out += 1;
        }
    }

    fn finish(mut self) -> (Blocklist, Vec<LineProblem>) {
        if self.left_out > 0 {
            self.problems.push(LineProblem {
                line: self.first_left_out,
                message: format!(
                    "{} more problems not listed (from this line on)",
                    self.left_out
                ),
            });
        }
        self.list.arena.shrink_to_fit();
        self.list.globs.shrink_to_fit();
        (self.list, self.problems)
    }

    fn line(&mut self, n: usize, raw: &str) {
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            return;
        }
        if line.ends_with(']')
            && line
                .get(1..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("adblock"))
        {
            return;
        }
        if line.contains('#') {
            if let Some(cut) = trailing_comment(line) {
                line = line[..cut].trim_end();
            }
            if ["##", "#@#", "#?#", "#$#"].iter().any(|m| line.contains(m)) {
                self.problem(n, || {
                    format!(
                        "{}: Adblock cosmetic (element hiding) rules are not supported",
                        quoted(line)
                    )
                });
                return;
            }
        }
        if line.starts_with("@@") {
            self.problem(n, || {
                format!(
                    "{}: Adblock exception rules (@@) are not supported",
                    quoted(line)
                )
            });
        } else if let Some(rule) = line.strip_prefix("||") {
            self.adblock(n, line, rule);
        } else if line.starts_with('|') {
            self.problem(n, || {
                format!(
                    "{}: Adblock start-anchored rules (|...) are not supported; \
                     write a URL glob without the scheme",
                    quoted(line)
                )
            });
        } else if line.contains(char::is_whitespace) {
            self.hosts_line(n, line);
        } else {
            self.single(n, line);
        }
    }

    fn hosts_line(&mut self, n: usize, line: &str) {
        let mut fields = line.split_whitespace();
        if fields
            .next()
            .and_then(|f| f.parse::<IpAddr>().ok())
            .is_none()
        {
            self.problem(n, || {
                format!(
                    "{}: not a domain, hosts-file line, Adblock rule or URL glob",
                    quoted(line)
                )
            });
            return;
        }
        for name in fields {
            let bare = name.strip_suffix('.').unwrap_or(name);
            if HOSTS_SKIP.iter().any(|s| s.eq_ignore_ascii_case(bare)) {
                continue;
            }
            self.domain(n, name, name);
        }
    }

    fn single(&mut self, n: usize, token: &str) {
        // `*.example.com` is the suffix form, but `*.exe` (one label) is a glob for URLs
        // ending in `.exe`; a whole TLD is blocked with `.tld` or `tld`.
        let bare = match token.strip_prefix("*.") {
            Some(rest) if rest.is_empty() || rest.contains('.') => rest,
            Some(_) => token,
            None => token.strip_prefix('.').unwrap_or(token),
        };
        if bare.contains(['/', '*']) {
            self.glob(n, token, token, false);
        } else {
            self.domain(n, token, bare);
        }
    }

    fn adblock(&mut self, n: usize, line: &str, body: &str) {
        let (rule, options) = match body.split_once('$') {
            Some((rule, options)) => (rule, options),
            None => (body, ""),
        };
        if let Some(option) = options
            .split(',')
            .map(|o| o.trim().trim_start_matches('~'))
            .map(|o| o.split_once('=').map_or(o, |(name, _)| name))
            .find(|name| {
                UNSUPPORTED_OPTIONS
                    .iter()
                    .any(|u| u.eq_ignore_ascii_case(name))
            })
        {
            self.problem(n, || {
                format!(
                    "{}: Adblock option ${option} is not supported",
                    quoted(line)
                )
            });
            return;
        }
        let (rule, end_anchor) = match rule.strip_suffix('|') {
            Some(r) => (r, true),
            None => (rule, false),
        };
        let (rule, separator) = match rule.strip_suffix('^') {
            Some(r) => (r, true),
            None => (rule, false),
        };
        let unsupported = |this: &mut Self| {
            this.problem(n, || {
                format!(
                    "{}: unsupported Adblock rule; only ||domain^ and ||domain/path are understood",
                    quoted(line)
                )
            });
        };
        if rule.contains(['^', '|']) {
            return unsupported(self);
        }
        let host_only = rule.strip_prefix("*.").unwrap_or(rule);
        if !host_only.contains(['/', '*']) {
            // `||a.com^`, and `||a.com` too: Adblock would also match `a.community`
            // there, but a domain block is what such list entries mean.
            self.domain(n, line, host_only);
        } else if separator {
            unsupported(self)
        } else {
            let mut pattern = host_only.to_string();
            if !end_anchor && !pattern.ends_with('*') {
                pattern.push('*');
            }
            self.glob(n, line, &pattern, true);
        }
    }

    fn domain(&mut self, n: usize, shown: &str, raw: &str) {
        if self.too_large {
            return;
        }
        let start = self.list.arena.len();
        match push_domain(&mut self.list.arena, raw) {
            Ok(()) => {
                if !self.list.commit_pending(start) {
                    self.too_large = true;
                    self.problem(n, || {
                        "list too large: the rest of the file is ignored".to_string()
                    });
                }
            }
            Err(why) => self.problem(n, || {
                format!("{}: not a valid domain: {why}", quoted(shown))
            }),
        }
    }

    fn glob(&mut self, n: usize, shown: &str, pattern: &str, subdomains: bool) {
        let reason = if !pattern.is_ascii() {
            Some("non-ASCII URL glob; write the host in punycode and the path percent-encoded")
        } else if pattern.bytes().any(|b| b.is_ascii_control()) {
            Some("control character in URL glob")
        } else if pattern.contains(['^', '|', '$']) {
            Some("unsupported Adblock syntax (^, | or $) in a URL glob")
        } else if pattern.bytes().all(|b| b == b'*') {
            Some("this glob would match every request")
        } else if !subdomains && pattern.starts_with('/') {
            Some(
                "URL globs are matched from the host (the scheme is dropped), so one \
                 starting with '/' never matches; start it with '*'",
            )
        } else {
            None
        };
        if let Some(reason) = reason {
            self.problem(n, || format!("{}: {reason}", quoted(shown)));
            return;
        }
        let mut normalised = String::with_capacity(pattern.len() + 2);
        if subdomains {
            normalised.push_str("||");
        }
        let pattern_start = normalised.len();
        for c in pattern.chars() {
            // `**` means the same as `*`.
            if !(c == '*' && normalised.ends_with('*') && normalised.len() > pattern_start) {
                normalised.push(c.to_ascii_lowercase());
            }
        }
        let text = normalised.into_boxed_str();
        if self.seen_globs.insert(text.clone()) {
            self.list.globs.push(Glob {
                text,
                pattern_start,
                subdomains,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Blocklist {
        let (list, problems) = Blocklist::parse(text);
        assert!(problems.is_empty(), "unexpected problems: {problems:?}");
        list
    }

    fn problems(text: &str) -> Vec<LineProblem> {
        Blocklist::parse(text).1
    }

    #[test]
    fn plain_domains_match_by_suffix() {
        let l = list("example.com\n");
        assert_eq!(l.match_host("example.com"), Some("example.com"));
        assert_eq!(l.match_host("a.b.example.com"), Some("example.com"));
        assert_eq!(l.match_host("badexample.com"), None);
        assert_eq!(l.match_host("example.com.evil"), None);
        assert_eq!(l.match_host("com"), None);
        assert_eq!(l.match_host(""), None);
        assert_eq!(l.match_host("."), None);
        assert_eq!(l.domain_count(), 1);
        assert_eq!(l.glob_count(), 0);
        assert_eq!(l.len(), 1);
        assert!(!l.is_empty());
    }

    #[test]
    fn leading_dot_and_star_dot_mean_suffix() {
        let l = list(".a.com\n*.b.com\n");
        assert_eq!(l.match_host("a.com"), Some("a.com"));
        assert_eq!(l.match_host("x.b.com"), Some("b.com"));
        assert_eq!(l.glob_count(), 0);
    }

    #[test]
    fn longest_entry_wins() {
        let l = list("example.com\nads.example.com\n");
        assert_eq!(l.match_host("x.ads.example.com"), Some("ads.example.com"));
        assert_eq!(l.match_host("www.example.com"), Some("example.com"));
    }

    #[test]
    fn normalises_case_trailing_dot_and_idn() {
        let l = list("Example.COM.\nbücher.de\nBÜCHER.example\n");
        assert_eq!(l.match_host("www.example.com"), Some("example.com"));
        assert_eq!(l.match_host("xn--bcher-kva.de"), Some("xn--bcher-kva.de"));
        assert_eq!(
            l.match_host("a.xn--bcher-kva.example"),
            Some("xn--bcher-kva.example")
        );
        // The caller normalises hosts; raw forms do not match.
        assert_eq!(l.match_host("WWW.EXAMPLE.COM"), None);
    }

    #[test]
    fn duplicates_are_merged() {
        let l = list("a.com\nA.com\na.com.\n*.a.com\n0.0.0.0 a.com\n||a.com^\nb.com\n");
        assert_eq!(l.domain_count(), 2);
        assert_eq!(l.len(), 2);
        assert_eq!(l.arena, "a.comb.com");
        let l = list("*/x.js\n*/X.js\n*//x.js\n");
        assert_eq!(l.glob_count(), 2);
    }

    #[test]
    fn comments_and_headers() {
        let l = list(
            "[Adblock Plus 2.0]\n# hosts comment\n! adblock comment\n\n   \n\
             a.com # trailing comment\n0.0.0.0 b.com\t# another\n  c.com  \n",
        );
        assert_eq!(l.domain_count(), 3);
        assert!(l.match_host("a.com").is_some());
        assert!(l.match_host("b.com").is_some());
        assert!(l.match_host("c.com").is_some());
    }

    #[test]
    fn hosts_file_lines() {
        let l = list(
            "127.0.0.1 localhost\n127.0.0.1 localhost.localdomain local\n\
             255.255.255.255 broadcasthost\n::1 localhost ip6-localhost ip6-loopback\n\
             0.0.0.0 0.0.0.0\n0.0.0.0 ads.com tracker.net\n127.0.0.1 evil.org\n\
             :: v6.example\n::1\tTAB.example\n",
        );
        assert_eq!(l.domain_count(), 5);
        for host in [
            "ads.com",
            "x.tracker.net",
            "evil.org",
            "v6.example",
            "tab.example",
        ] {
            assert!(l.match_host(host).is_some(), "{host}");
        }
        assert_eq!(l.match_host("localhost"), None);
        assert_eq!(l.match_host("local"), None);
    }

    #[test]
    fn hosts_line_with_bad_name_keeps_the_good_ones() {
        let (l, p) = Blocklist::parse("0.0.0.0 good.com bad!.com also.com\n");
        assert_eq!(l.domain_count(), 2);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 1);
        assert!(p[0].message.contains("bad!.com"), "{}", p[0].message);
    }

    #[test]
    fn adblock_domain_rules() {
        let l = list(
            "||ads.example.com^\n||tracker.net^$third-party\n||b.org^$script,~image,important\n\
             ||plain.com\n||*.star.com^\n||end.com^|\n",
        );
        assert_eq!(l.domain_count(), 6);
        assert_eq!(l.glob_count(), 0);
        assert_eq!(l.match_host("x.ads.example.com"), Some("ads.example.com"));
        assert_eq!(l.match_host("tracker.net"), Some("tracker.net"));
        assert_eq!(l.match_host("b.org"), Some("b.org"));
        assert_eq!(l.match_host("plain.com"), Some("plain.com"));
        assert_eq!(l.match_host("a.star.com"), Some("star.com"));
        assert_eq!(l.match_host("end.com"), Some("end.com"));
        assert_eq!(l.match_host("example.com"), None);
    }

    #[test]
    fn adblock_path_rules_become_subdomain_globs() {
        let l = list("||ads.com/banner\n||cdn.net/x.js|\n||img.org/*.gif\n");
        assert_eq!(l.glob_count(), 3);
        assert_eq!(l.domain_count(), 0);
        assert_eq!(
            l.match_request("ads.com", "http://ads.com/banner/1.png"),
            Some("||ads.com/banner*")
        );
        assert_eq!(
            l.match_request("www.ads.com", "https://www.ads.com/banner"),
            Some("||ads.com/banner*")
        );
        assert_eq!(
            l.match_request("badads.com", "http://badads.com/banner"),
            None
        );
        assert_eq!(l.match_request("ads.com", "http://ads.com/other"), None);
        assert_eq!(
            l.match_request("cdn.net", "http://cdn.net/x.js"),
            Some("||cdn.net/x.js")
        );
        assert_eq!(l.match_request("cdn.net", "http://cdn.net/x.jsonp"), None);
        assert_eq!(
            l.match_request("a.img.org", "http://a.img.org/p/q.gif"),
            Some("||img.org/*.gif*")
        );
        // The host alone never matches a path rule.
        assert_eq!(l.match_host("ads.com"), None);
    }

    #[test]
    fn adblock_rejections() {
        let text = "@@||good.com^\nexample.com##.ad\nexample.com#@#.ad\n||a.com/x^\n\
                    ||b.com^$domain=c.com\n||d.com^$badfilter\n|http://e.com/\n||f^g.com\n\
                    ||$script\n||g.com^$csp=script-src 'none'\n";
        let (l, p) = Blocklist::parse(text);
        assert!(l.is_empty(), "{l:?}");
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, (1..=10).collect::<Vec<_>>(), "{p:?}");
        assert!(p[0].message.contains("exception"));
        assert!(p[1].message.contains("cosmetic"));
        assert!(p[2].message.contains("cosmetic"));
        assert!(p[3].message.contains("unsupported Adblock rule"));
        assert!(p[4].message.contains("$domain"));
        assert!(p[5].message.contains("$badfilter"));
        assert!(p[6].message.contains("start-anchored"));
        assert!(p[7].message.contains("unsupported Adblock rule"));
        assert!(p[8].message.contains("not a valid domain"));
        assert!(p[9].message.contains("$csp"));
    }

    #[test]
    fn domain_rejections_name_the_reason() {
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 26].join(".");
        assert_eq!(long_name.len(), 259);
        let text = format!(
            "a..com\n{long_label}.com\n{long_name}\nex!ample.com\nexa mple.com\n.\n\
             *.\nbad\u{1}.com\n-ok-.com\n"
        );
        let (l, p) = Blocklist::parse(&text);
        let by_line = |n: usize| {
            p.iter()
                .find(|p| p.line == n)
                .map(|p| p.message.clone())
                .unwrap_or_default()
        };
        assert!(by_line(1).contains("empty label"), "{}", by_line(1));
        assert!(by_line(2).contains("longer than 63"), "{}", by_line(2));
        assert!(by_line(3).contains("longer than 253"), "{}", by_line(3));
        assert!(by_line(4).contains("'!' not allowed"), "{}", by_line(4));
        assert_eq!(
            by_line(5),
            "\"exa mple.com\": not a domain, hosts-file line, Adblock rule or URL glob"
        );
        assert_eq!(
            p.iter().find(|p| p.line == 5).unwrap().to_string(),
            "line 5: \"exa mple.com\": not a domain, hosts-file line, Adblock rule or URL glob"
        );
        assert!(by_line(6).contains("empty name"), "{}", by_line(6));
        assert!(by_line(7).contains("empty name"), "{}", by_line(7));
        assert!(by_line(8).contains("not allowed"), "{}", by_line(8));
        assert_eq!(p.len(), 8, "{p:?}");
        // Only the character set and lengths are checked, as list files need.
        assert_eq!(l.domain_count(), 1);
        assert!(l.match_host("-ok-.com").is_some());
    }

    #[test]
    fn exactly_the_length_limits_are_accepted() {
        let label = "a".repeat(63);
        let name = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(name.len(), 253);
        let l = list(&format!("{label}.com\n{name}.\n"));
        assert_eq!(l.domain_count(), 2);
        assert_eq!(l.match_host(&name), Some(name.as_str()));
        assert_eq!(l.match_host(&format!("x.{name}")), Some(name.as_str()));
    }

    #[test]
    fn bad_idn_is_reported() {
        let p = problems("xn--a\u{e9}.com\n\u{fffd}\u{200b}.com\n");
        assert!(!p.is_empty());
        assert!(p.iter().all(|p| p.message.contains("not a valid")), "{p:?}");
    }

    #[test]
    fn problems_are_capped() {
        let text = "bad!\n".repeat(MAX_PROBLEMS + 5);
        let p = problems(&text);
        assert_eq!(p.len(), MAX_PROBLEMS + 1);
        let last = p.last().unwrap();
        assert_eq!(last.line, MAX_PROBLEMS + 1);
        assert!(
            last.message.starts_with("5 more problems"),
            "{}",
            last.message
        );
    }

    #[test]
    fn long_lines_are_shortened_in_messages() {
        let p = problems(&"!x ".repeat(1000).replacen('!', "?", 1));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.len() < 200, "{}", p[0].message);
    }

    #[test]
    fn url_globs_are_anchored() {
        let l = list("ads.example.com/banner/*\n*/tracker.js\n*.exe\nmid.com/*/ad/*.png\n");
        assert_eq!(l.glob_count(), 4);
        assert_eq!(l.domain_count(), 0);
        let hit = |host: &str, url: &str| l.match_request(host, url);
        assert_eq!(
            hit("ads.example.com", "http://ads.example.com/banner/x.png"),
            Some("ads.example.com/banner/*")
        );
        // Anchored at the start: a subdomain or another host does not match.
        assert_eq!(
            hit("x.ads.example.com", "http://x.ads.example.com/banner/x"),
            None
        );
        assert_eq!(
            hit("ads.example.com", "http://ads.example.com/bannerx"),
            None
        );
        assert_eq!(
            hit("a.com", "https://a.com/js/tracker.js"),
            Some("*/tracker.js")
        );
        assert_eq!(hit("a.com", "https://a.com/js/tracker.json"), None);
        assert_eq!(hit("a.com", "http://a.com/setup.EXE"), Some("*.exe"));
        assert_eq!(hit("a.com", "http://a.com/setup.exe?x"), None);
        assert_eq!(
            hit("mid.com", "http://mid.com/a/b/ad/c.png"),
            Some("mid.com/*/ad/*.png")
        );
        assert_eq!(hit("mid.com", "http://mid.com/a/b/c.png"), None);
        // CONNECT targets have no scheme and no path.
        assert_eq!(hit("a.com", "a.com:443"), None);
        // Case-insensitive on the whole URL.
        assert_eq!(
            hit("ads.example.com", "HTTP://ADS.EXAMPLE.COM/BANNER/1"),
            Some("ads.example.com/banner/*")
        );
    }

    #[test]
    fn connect_targets_match_host_globs() {
        let l = list("*:8443\nevil*:*\n");
        assert_eq!(
            l.match_request("x.bad.com", "x.bad.com:8443"),
            Some("*:8443")
        );
        assert_eq!(
            l.match_request("evil.org", "evil.org:9000"),
            Some("evil*:*")
        );
        assert_eq!(l.match_request("good.org", "good.org:443"), None);
    }

    #[test]
    fn match_request_checks_domains_first() {
        let l = list("*/x\nblocked.com\n");
        assert_eq!(
            l.match_request("a.blocked.com", "http://a.blocked.com/x"),
            Some("blocked.com")
        );
        assert_eq!(l.match_request("ok.com", "http://ok.com/x"), Some("*/x"));
        assert_eq!(l.match_request("ok.com", "http://ok.com/y"), None);
    }

    #[test]
    fn glob_rejections() {
        let p = problems("*\n**\n/ads/*\n*/caf\u{e9}.js\n*/a^b\n");
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5], "{p:?}");
        assert!(p[0].message.contains("every request"));
        assert!(p[2].message.contains("never matches"));
        assert!(p[3].message.contains("non-ASCII"));
        assert!(p[4].message.contains("unsupported Adblock syntax"));
    }

    #[test]
    fn glob_matcher() {
        assert!(glob_match(b"abc", b"ABC"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"a*c", b"ac"));
        assert!(glob_match(b"a*c", b"a/b/c"));
        assert!(!glob_match(b"a*c", b"a/b/cd"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXcYc"));
        assert!(glob_match(b"*ab*ab*", b"abab"));
        assert!(!glob_match(b"*ab*ab*", b"aba"));
        // Prefix and suffix must not overlap.
        assert!(!glob_match(b"ab*ba", b"aba"));
        assert!(glob_match(b"ab*ba", b"abba"));
    }

    #[test]
    fn pathological_glob_is_fast() {
        let l = list("*a*a*a*a*a*b\n*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c*\n");
        let url = format!("http://{}", "a".repeat(100_000));
        let started = std::time::Instant::now();
        for _ in 0..10 {
            assert_eq!(l.match_request("x", &url), None);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(glob_match(
            b"*a*a*a*a*a*b",
            format!("{}b", "a".repeat(100_000)).as_bytes()
        ));
    }

    #[test]
    fn subdomain_globs_on_hostile_urls_are_fast() {
        let l = list("||a.*/x\n");
        let url = format!("http://{}/y", "a.".repeat(50_000));
        let started = std::time::Instant::now();
        assert_eq!(l.match_request("x", &url), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(l.match_request("x", "http://b.a.c/x"), Some("||a.*/x*"));
    }

    #[test]
    fn strips_only_real_schemes() {
        assert_eq!(strip_scheme("http://a.com/x"), "a.com/x");
        assert_eq!(strip_scheme("ws+unix://a"), "a");
        assert_eq!(strip_scheme("a.com:443"), "a.com:443");
        assert_eq!(strip_scheme("a.com/r?u=http://b"), "a.com/r?u=http://b");
        assert_eq!(strip_scheme("://x"), "://x");
    }

    #[test]
    fn empty_list() {
        let l = list("");
        assert!(l.is_empty());
        assert_eq!(l.match_host("a.com"), None);
        assert_eq!(l.match_request("a.com", "http://a.com/"), None);
        assert_eq!(Blocklist::default().match_host("a.com"), None);
        let l = list("\u{feff}# only a comment\r\n");
        assert!(l.is_empty());
    }

    #[test]
    fn crlf_and_bom() {
        let l = list("\u{feff}a.com\r\n0.0.0.0 b.com\r\n");
        assert_eq!(l.domain_count(), 2);
        assert!(l.match_host("a.com").is_some());
    }

    #[test]
    fn many_domains_survive_growth() {
        let text: String = (0..20_000).map(|i| format!("d{i}.example\n")).collect();
        let l = list(&text);
        assert_eq!(l.domain_count(), 20_000);
        for i in (0..20_000).step_by(97) {
            let host = format!("www.d{i}.example");
            assert_eq!(l.match_host(&host), Some(&host[4..]));
        }
        assert_eq!(l.match_host("d20000.example"), None);
        assert_eq!(l.match_host("example"), None);
        assert!(l.memory_bytes() >= l.arena.len());
    }

    #[test]
    fn hash_collisions_cannot_cause_false_blocks() {
        // Force every entry into one probe chain by giving them equal tags and indexes.
        let mut l = list("a.com\nb.com\n");
        let a = l.slots.iter().copied().find(|&s| s != 0).unwrap();
        for s in l.slots.iter_mut().filter(|s| **s != 0) {
            *s = (*s & ((1 << 40) - 1)) | (a & !((1 << 40) - 1));
        }
        // Lookups still compare bytes, so nothing else matches.
        assert_eq!(l.match_host("c.com"), None);
    }
}
