//! RFC 9111 as pure functions: Cache-Control directives, whether a response
//! may be stored (§3), its freshness lifetime (§4.2.1, heuristics §4.2.2), its
//! age (§4.2.3), and whether a stored response may answer a request as it is,
//! after validation, or stale (§4.2.4, RFC 5861).

/// Cache-Control directives of a request or a response (RFC 9111 §5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// `max-stale` without a value accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// The directives this cache acts on; the others are ignored (§5.2.3).
const UNDERSTOOD: [&str; 14] = [
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "only-if-cached",
    "max-age",
    "s-maxage",
    "max-stale",
    "min-fresh",
    "stale-while-revalidate",
    "stale-if-error",
];

impl Directives {
    /// Parses every Cache-Control field line. For a repeated directive the
    /// first occurrence counts; a delta-seconds that is not a number makes
    /// the response stale (max-age 0), as §4.2.1 allows. Linear in the
    /// length of the lines: only the directives understood here are looked
    /// at further, and which of them were seen is one bit each.
    pub fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Directives {
        let mut d = Directives::default();
        let mut seen = 0u16;
        for value in values {
            // Read as bytes: field values may carry obs-text (RFC 9110
            // §5.5), which must not hide the directives around it.
            for item in split_directives(value) {
                let (name, arg) = match item.iter().position(|&b| b == b'=') {
                    Some(i) => (&item[..i], Some(&item[i + 1..])),
                    None => (item, None),
                };
                let name = name.trim_ascii();
                let Some(which) = UNDERSTOOD
                    .iter()
                    .position(|u| name.eq_ignore_ascii_case(u.as_bytes()))
                else {
                    continue;
                };
                if seen & (1 << which) != 0 {
                    continue;
                }
                seen |= 1 << which;
                let arg = arg.map(|a| unquote(a.trim_ascii()));
                let secs = |arg: &Option<String>| -> u64 {
                    arg.as_deref()
                        .and_then(|a| a.parse::<u64>().ok())
                        // §1.2.2: delta-seconds too large saturate at 2^31.
                        .map(|v| v.min(1 << 31))
                        .unwrap_or(0)
                };
                match UNDERSTOOD[which] {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "must-understand" => d.must_understand = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "max-age" => d.max_age = Some(secs(&arg)),
                    "s-maxage" => d.s_maxage = Some(secs(&arg)),
                    "max-stale" => d.max_stale = Some(arg.as_ref().map(|_| secs(&arg))),
                    "min-fresh" => d.min_fresh = Some(secs(&arg)),
                    "stale-while-revalidate" => d.stale_while_revalidate = Some(secs(&arg)),
                    "stale-if-error" => d.stale_if_error = Some(secs(&arg)),
                    _ => {}
                }
            }
        }
        d
    }
}

impl Directives {
    /// The directives of a targeted field such as `CDN-Cache-Control`
    /// (RFC 9213), a Structured Fields dictionary (RFC 8941 §3.2). `None`
    /// when it is absent or does not parse: the field is then ignored and
    /// Cache-Control applies. A directive whose value has the wrong type is
    /// ignored on its own.
    pub fn parse_targeted<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Directives> {
        let mut text = String::new();
        for v in values {
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str(std::str::from_utf8(v).ok()?);
        }
        if text.is_empty() {
            return None;
        }
        let members = sf_dictionary(&text)?;
        let mut d = Directives::default();
        for (key, value) in members {
            let flag = !matches!(value, SfValue::Bool(false));
            let secs = match value {
                SfValue::Int(n) if n >= 0 => Some((n as u64).min(1 << 31)),
                _ => None,
            };
            match key {
                "no-store" => d.no_store |= flag,
                "no-cache" => d.no_cache |= flag,
                "private" => d.private |= flag,
                "public" => d.public |= flag,
                "must-revalidate" => d.must_revalidate |= flag,
                "proxy-revalidate" => d.proxy_revalidate |= flag,
                "must-understand" => d.must_understand |= flag,
                "max-age" => d.max_age = secs.or(d.max_age),
                "s-maxage" => d.s_maxage = secs.or(d.s_maxage),
                "stale-while-revalidate" => {
                    d.stale_while_revalidate = secs.or(d.stale_while_revalidate)
                }
                "stale-if-error" => d.stale_if_error = secs.or(d.stale_if_error),
                _ => {}
            }
        }
        Some(d)
    }
}

/// A dictionary member's value, as far as directives care.
enum SfValue {
    Bool(bool),
    Int(i64),
    Other,
}

/// RFC 8941 §4.2.2: a dictionary; the last of a repeated key wins.
fn sf_dictionary(text: &str) -> Option<Vec<(&str, SfValue)>> {
    let mut p = SfParser {
        s: text.trim_matches(' ').as_bytes(),
        i: 0,
        text: text.trim_matches(' '),
    };
    let mut out: Vec<(&str, SfValue)> = Vec::new();
    // Where each key is in `out`: a repeated key replaces its value in one
    // step, not a scan of every member before it.
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    loop {
        let key = p.key()?;
        let value = if p.eat(b'=') {
            if p.peek() == Some(b'(') {
                p.inner_list()?;
                SfValue::Other
            } else {
                p.bare_item()?
            }
        } else {
            SfValue::Bool(true)
        };
        p.parameters()?;
        match at.get(key) {
            Some(&i) => out[i].1 = value,
            None => {
                at.insert(key, out.len());
                out.push((key, value));
            }
        }
        p.ows();
        if p.done() {
            return Some(out);
        }
        if !p.eat(b',') {
            return None;
        }
        p.ows();
        if p.done() {
            // A trailing comma is an error.
            return None;
        }
    }
}

struct SfParser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl<'a> SfParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Option<&'a str> {
        let start = self.i;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        Some(&self.text[start..self.i])
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            while self.eat(b' ') {}
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn inner_list(&mut self) -> Option<()> {
        self.eat(b'(');
        loop {
            while self.eat(b' ') {}
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn bare_item(&mut self) -> Option<SfValue> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => {
                self.i += 1;
                loop {
                    match self.peek()? {
                        b'\\' => {
                            self.i += 1;
                            if !matches!(self.peek()?, b'"' | b'\\') {
                                return None;
                            }
                            self.i += 1;
                        }
                        b'"' => {
                            self.i += 1;
                            return Some(SfValue::Other);
                        }
                        0x20..=0x7e => self.i += 1,
                        _ => return None,
                    }
                }
            }
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.i += 1;
                Some(SfValue::Bool(v))
            }
            b':' => {
                self.i += 1;
                while self.peek()?.is_ascii_alphanumeric()
                    || matches!(self.peek()?, b'+' | b'/' | b'=')
                {
                    self.i += 1;
                }
                self.eat(b':').then_some(SfValue::Other)
            }
            c if c.is_ascii_alphabetic() || c == b'*' => {
                self.i += 1;
                while let Some(c) = self.peek() {
                    let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c);
                    if !tchar {
                        break;
                    }
                    self.i += 1;
                }
                Some(SfValue::Other)
            }
            _ => None,
        }
    }

    /// §4.2.4: integers of up to 15 digits, decimals of up to 12.3.
    fn number(&mut self) -> Option<SfValue> {
        let start = self.i;
        self.eat(b'-');
        let digits_start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let int_digits = self.i - digits_start;
        if int_digits == 0 {
            return None;
        }
        if self.eat(b'.') {
            let frac_start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let frac = self.i - frac_start;
            return (int_digits <= 12 && (1..=3).contains(&frac)).then_some(SfValue::Other);
        }
        if int_digits > 15 {
            return None;
        }
        self.text[start..self.i].parse().ok().map(SfValue::Int)
    }
}

/// Splits on commas outside quoted strings; empty items are left out.
fn split_directives(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &c) in text.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter().filter(|s| !s.trim_ascii().is_empty())
}

/// A directive's argument, without the quotes of a quoted-string.
fn unquote(v: &[u8]) -> String {
    let v = String::from_utf8_lossy(v);
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.into_owned(),
    }
}

/// Statuses this cache understands (for `must-understand`, RFC 9111 §5.2.2.3).
pub fn understood(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// Errors that answer something in the request other than its URL, which a
/// single request can therefore provoke: its syntax, timing, framing, size,
/// media type or expectation (400, 408, 411, 413, 415, 417, 431), its
/// proactive negotiation fields (406), its preconditions (412, 428; RFC
/// 9110 §13.1, §15.5.13, RFC 6585 §3) and its Range (416, RFC 9110 §14.2).
pub fn provoked_by_request(status: u16) -> bool {
    matches!(
        status,
        400 | 406 | 408 | 411 | 412 | 413 | 415 | 416 | 417 | 428 | 431
    )
}

/// RFC 9110 §15.1: statuses cacheable by default, so heuristic freshness applies.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// What §3 needs to know about a response.
pub struct Response<'a> {
    pub status: u16,
    pub cc: &'a Directives,
    pub has_expires: bool,
    pub vary_star: bool,
}

/// RFC 9111 §3: may a shared cache store this response to this request?
pub fn storable(
    method: &str,
    req_cc: &Directives,
    has_authorization: bool,
    r: &Response<'_>,
) -> bool {
    // Only GET (and HEAD, which this cache answers from GET) are cached here.
    if method != "GET" {
        return false;
    }
    // §5.2.2.3: must-understand overrides no-store for understood statuses.
    if r.cc.must_understand {
        if !understood(r.status) {
            return false;
        }
    } else if r.cc.no_store {
        return false;
    }
    if req_cc.no_store || r.cc.private || r.vary_star {
        return false;
    }
    // §3.5: a request with Authorization only with explicit permission.
    if has_authorization && !(r.cc.public || r.cc.s_maxage.is_some() || r.cc.must_revalidate) {
        return false;
    }
    // §3: only final responses; 206 and 304 only by a cache that handles
    // them, which this one does not store.
    if r.status < 200 || r.status == 206 || r.status == 304 {
        return false;
    }
    // Errors a request can provoke are never stored, whatever their
    // freshness: one oversized or malformed request must not deny a URL to
    // everyone (cache-poisoned denial of service).
    if provoked_by_request(r.status) {
        return false;
    }
    r.has_expires
        || r.cc.max_age.is_some()
        || r.cc.s_maxage.is_some()
        || r.cc.public
        || heuristically_cacheable(r.status)
}

/// RFC 9111 §4.2.1 (and §4.2.2 heuristics): seconds the response stays fresh.
pub fn freshness_lifetime(
    cc: &Directives,
    status: u16,
    date: Option<i64>,
    expires: Option<Option<i64>>,
    last_modified: Option<i64>,
    response_time: i64,
) -> u64 {
    if let Some(s) = cc.s_maxage {
        return s;
    }
    if let Some(m) = cc.max_age {
        return m;
    }
    if let Some(expires) = expires {
        // An invalid Expires means "already expired" (§5.3).
        let Some(expires) = expires else { return 0 };
        let date = date.unwrap_or(response_time);
        return (expires - date).max(0) as u64;
    }
    if (heuristically_cacheable(status) || cc.public)
        && let Some(lm) = last_modified
    {
        // §4.2.2: a fraction (10%) of the time since last modification,
        // at most a day.
        let date = date.unwrap_or(response_time);
        return (((date - lm).max(0)) / 10).min(86_400) as u64;
    }
    0
}

/// RFC 9111 §4.2.3: the current age of a stored response.
pub fn current_age(
    age_value: u64,
    date: Option<i64>,
    request_time: i64,
    response_time: i64,
    now: i64,
) -> u64 {
    let apparent = date.map_or(0, |d| (response_time - d).max(0)) as u64;
    let response_delay = (response_time - request_time).max(0) as u64;
    let corrected_age_value = age_value + response_delay;
    let corrected_initial = apparent.max(corrected_age_value);
    let resident = (now - response_time).max(0) as u64;
    corrected_initial + resident
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Fresh,
    /// Stale, but the request accepts it (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: answer now, refresh behind.
    StaleWhileRevalidate,
    /// Must be validated with the origin before use (a 304 makes it usable).
    Validate,
}

/// RFC 9111 §4.2.4 and §5.2, RFC 5861 §3.
pub fn usable(req: &Directives, resp: &Directives, age: u64, lifetime: u64) -> Use {
    let fresh = age < lifetime;
    // §5.2.1.1, §5.2.1.3: the request's own limits on age and freshness.
    // Ages count whole seconds: `max-age=0` asks for validation even of a
    // response stored this very second, as clients sending it expect.
    let too_old = req.max_age.is_some_and(|m| age > m || m == 0);
    let not_fresh_enough = req.min_fresh.is_some_and(|m| age + m > lifetime);
    if req.no_cache || resp.no_cache || too_old || not_fresh_enough {
        return Use::Validate;
    }
    if fresh {
        return Use::Fresh;
    }
    // §4.2.4: stale responses only when neither side forbids it.
    let forbids_stale = resp.must_revalidate || resp.proxy_revalidate || resp.s_maxage.is_some();
    if forbids_stale {
        return Use::Validate;
    }
    let staleness = age - lifetime;
    if let Some(limit) = req.max_stale
        && limit.is_none_or(|l| staleness <= l)
    {
        return Use::StaleAccepted;
    }
    if resp.stale_while_revalidate.is_some_and(|w| staleness <= w) {
        return Use::StaleWhileRevalidate;
    }
    Use::Validate
}

/// RFC 5861 §4: may a stale response be served because the origin failed?
pub fn stale_if_error(req: &Directives, resp: &Directives, age: u64, lifetime: u64) -> bool {
    if resp.must_revalidate || resp.proxy_revalidate || resp.s_maxage.is_some() || resp.no_cache {
        return false;
    }
    let staleness = age.saturating_sub(lifetime);
    resp.stale_if_error
        .or(req.stale_if_error)
        .is_some_and(|w| staleness <= w)
}

/// RFC 9111 §4.2.4: a cache that cannot reach the origin ("disconnected")
/// may serve a stale response, up to `max` seconds stale, unless the
/// response forbids stale use or the client asked for a validated one. A
/// response that was never fresh (lifetime 0) was not meant for reuse and
/// is not served this way.
pub fn stale_when_disconnected(
    req: &Directives,
    resp: &Directives,
    age: u64,
    lifetime: u64,
    max: u64,
) -> bool {
    if resp.must_revalidate || resp.proxy_revalidate || resp.s_maxage.is_some() || resp.no_cache {
        return false;
    }
    if req.no_cache || req.max_age == Some(0) || lifetime == 0 {
        return false;
    }
    age.saturating_sub(lifetime) <= max
}

/// RFC 9111 §4.1: the request's value for one field named by Vary, in a form
/// where equivalent spellings compare equal (whitespace and case of list
/// items around commas normalised; absent is distinct from empty).
pub fn vary_value<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut out: Option<String> = None;
    for v in values {
        let text = String::from_utf8_lossy(v);
        let parts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let s = out.get_or_insert_with(String::new);
        for p in parts {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(p);
        }
    }
    out
}

/// Field names listed by Vary (lowercase), or `None` for `Vary: *`.
pub fn vary_names<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in values {
        for name in String::from_utf8_lossy(v).split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if !name.is_empty() && seen.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> Directives {
        Directives::parse(std::iter::once(s.as_bytes()))
    }

    #[test]
    fn directives() {
        let d = cc("max-age=60, S-MaxAge=\"30\", no-cache, private, stale-while-revalidate=5");
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(d.no_cache && d.private);
        assert_eq!(d.stale_while_revalidate, Some(5));
        assert_eq!(cc("max-age=60, max-age=0").max_age, Some(60), "first wins");
        assert_eq!(cc("max-age=abc").max_age, Some(0), "invalid means stale");
        assert_eq!(cc("max-stale").max_stale, Some(None));
        assert_eq!(cc("max-stale=10").max_stale, Some(Some(10)));
        assert_eq!(cc("max-age=99999999999").max_age, Some(1 << 31));
        let q = cc("private=\"set-cookie, x\", max-age=5");
        assert!(q.private);
        assert_eq!(q.max_age, Some(5));
    }

    #[test]
    fn many_directives_are_read_once_each() {
        let mut line: String = (0..20_000).map(|i| format!("x{i}, ")).collect();
        line.push_str("Max-Age=5, no-store, max-age=7, x0=\"a,b\"");
        let d = cc(&line);
        assert_eq!(d.max_age, Some(5), "the first one counts");
        assert!(d.no_store);
        // In a targeted field the last of a repeated key counts.
        let t = |s: &str| Directives::parse_targeted(std::iter::once(s.as_bytes())).unwrap();
        assert!(!t("no-store, max-age=5, no-store=?0").no_store);
        assert_eq!(t("max-age=5, no-store, max-age=7").max_age, Some(7));
    }

    #[test]
    fn bytes_that_are_not_utf8_hide_no_directive() {
        let d = Directives::parse(std::iter::once(&b"x=\"caf\xe9\", no-store, private"[..]));
        assert!(d.no_store && d.private);
        let d = Directives::parse([&b"max-age=60"[..], &b"no-cache, \xff"[..]].into_iter());
        assert_eq!(d.max_age, Some(60));
        assert!(d.no_cache);
    }

    fn resp(status: u16, c: &Directives) -> Response<'_> {
        Response {
            status,
            cc: c,
            has_expires: false,
            vary_star: false,
        }
    }

    #[test]
    fn stale_for_a_disconnected_cache() {
        let none = Directives::default();
        assert!(stale_when_disconnected(&none, &none, 100, 10, 3600));
        assert!(!stale_when_disconnected(&none, &none, 5000, 10, 3600));
        for forbids in [
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage=5",
            "no-cache",
        ] {
            assert!(
                !stale_when_disconnected(&none, &cc(forbids), 100, 10, 3600),
                "{forbids}"
            );
        }
        assert!(!stale_when_disconnected(
            &cc("no-cache"),
            &none,
            100,
            10,
            3600
        ));
        assert!(!stale_when_disconnected(&none, &none, 100, 10, 0));
        assert!(
            !stale_when_disconnected(&none, &none, 100, 0, 3600),
            "never fresh"
        );
    }

    #[test]
    fn targeted_fields_are_structured_dictionaries() {
        let t = |s: &str| Directives::parse_targeted(std::iter::once(s.as_bytes()));
        let d = t("max-age=600, no-cache;x=1, ext=\"a\", other=(a b)").unwrap();
        assert_eq!(d.max_age, Some(600));
        assert!(d.no_cache && !d.no_store);
        assert_eq!(t("max-age=99999999999").unwrap().max_age, Some(1 << 31));
        assert!(t("private").unwrap().private);
        // A value of the wrong type drops that directive only.
        let wrong = t("max-age=\"600\", no-store").unwrap();
        assert_eq!(wrong.max_age, None);
        assert!(wrong.no_store);
        // Not a dictionary at all: the field is ignored.
        for bad in [
            "Max-Age=600",
            "max-age = 600",
            "max-age=600,",
            "max-age=1.5.5",
            "",
        ] {
            assert!(t(bad).is_none(), "{bad}");
        }
        assert!(Directives::parse_targeted(std::iter::empty()).is_none());
    }

    #[test]
    fn any_final_status_with_explicit_freshness_is_stored_but_request_errors() {
        let none = Directives::default();
        let max_age = cc("max-age=60");
        for status in [299, 404, 499, 500, 502, 503, 504, 599] {
            assert!(
                storable("GET", &none, false, &resp(status, &max_age)),
                "{status}"
            );
        }
        for status in [
            100, 206, 304, 400, 406, 408, 411, 412, 413, 415, 416, 417, 428, 431,
        ] {
            assert!(
                !storable("GET", &none, false, &resp(status, &max_age)),
                "{status}"
            );
        }
        // Without explicit freshness only heuristically cacheable statuses.
        assert!(storable("GET", &none, false, &resp(404, &none)));
        assert!(!storable("GET", &none, false, &resp(500, &none)));
    }

    #[test]
    fn storability() {
        let none = Directives::default();
        let max_age = cc("max-age=60");
        assert!(storable("GET", &none, false, &resp(200, &max_age)));
        assert!(!storable("POST", &none, false, &resp(200, &max_age)));
        assert!(!storable(
            "GET",
            &none,
            false,
            &resp(200, &cc("no-store, max-age=60"))
        ));
        assert!(storable(
            "GET",
            &none,
            false,
            &resp(200, &cc("no-store, must-understand, max-age=60"))
        ));
        assert!(!storable(
            "GET",
            &none,
            false,
            &resp(299, &cc("must-understand, max-age=60"))
        ));
        assert!(!storable(
            "GET",
            &none,
            false,
            &resp(200, &cc("private, max-age=60"))
        ));
        assert!(!storable(
            "GET",
            &cc("no-store"),
            false,
            &resp(200, &max_age)
        ));
        assert!(!storable("GET", &none, true, &resp(200, &max_age)), "§3.5");
        assert!(storable(
            "GET",
            &none,
            true,
            &resp(200, &cc("public, max-age=60"))
        ));
        assert!(storable("GET", &none, true, &resp(200, &cc("s-maxage=60"))));
        assert!(
            storable("GET", &none, false, &resp(404, &none)),
            "heuristically cacheable"
        );
        assert!(!storable("GET", &none, false, &resp(302, &none)));
        assert!(storable("GET", &none, false, &resp(302, &max_age)));
        let mut star = resp(200, &max_age);
        star.vary_star = true;
        assert!(!storable("GET", &none, false, &star));
    }

    #[test]
    fn lifetimes() {
        let none = Directives::default();
        assert_eq!(
            freshness_lifetime(&cc("max-age=60, s-maxage=10"), 200, None, None, None, 0),
            10
        );
        assert_eq!(
            freshness_lifetime(&cc("max-age=60"), 200, Some(0), Some(Some(10)), None, 0),
            60
        );
        assert_eq!(
            freshness_lifetime(&none, 200, Some(100), Some(Some(160)), None, 100),
            60
        );
        assert_eq!(
            freshness_lifetime(&none, 200, Some(100), Some(None), None, 100),
            0
        );
        assert_eq!(
            freshness_lifetime(&none, 200, Some(1000), None, Some(0), 1000),
            100,
            "10% heuristic"
        );
        assert_eq!(
            freshness_lifetime(&none, 302, Some(1000), None, Some(0), 1000),
            0
        );
        assert_eq!(
            freshness_lifetime(&none, 200, Some(10_000_000), None, Some(0), 0),
            86_400
        );
    }

    #[test]
    fn ages() {
        // Date 10 s before it arrived, Age 5, 2 s in flight, 20 s stored.
        assert_eq!(current_age(5, Some(90), 98, 100, 120), 10 + 20);
        assert_eq!(current_age(30, Some(100), 98, 100, 110), 32 + 10);
        assert_eq!(current_age(0, None, 100, 100, 100), 0);
    }

    #[test]
    fn use_decisions() {
        let none = Directives::default();
        assert_eq!(usable(&none, &none, 10, 60), Use::Fresh);
        assert_eq!(usable(&none, &none, 70, 60), Use::Validate);
        assert_eq!(usable(&cc("max-age=5"), &none, 10, 60), Use::Validate);
        assert_eq!(usable(&cc("min-fresh=55"), &none, 10, 60), Use::Validate);
        assert_eq!(usable(&cc("no-cache"), &none, 0, 60), Use::Validate);
        assert_eq!(usable(&none, &cc("no-cache"), 0, 60), Use::Validate);
        assert_eq!(
            usable(&cc("max-stale=20"), &none, 70, 60),
            Use::StaleAccepted
        );
        assert_eq!(usable(&cc("max-stale=5"), &none, 70, 60), Use::Validate);
        assert_eq!(
            usable(&cc("max-stale"), &cc("must-revalidate"), 70, 60),
            Use::Validate
        );
        assert_eq!(
            usable(&cc("max-stale"), &cc("s-maxage=60"), 70, 60),
            Use::Validate
        );
        assert_eq!(
            usable(&none, &cc("stale-while-revalidate=30"), 70, 60),
            Use::StaleWhileRevalidate
        );
        assert!(stale_if_error(&none, &cc("stale-if-error=30"), 70, 60));
        assert!(!stale_if_error(&none, &cc("stale-if-error=5"), 70, 60));
        assert!(!stale_if_error(
            &none,
            &cc("stale-if-error=30, must-revalidate"),
            70,
            60
        ));
    }

    #[test]
    fn vary() {
        let v = |s: &[&str]| vary_value(s.iter().map(|x| x.as_bytes()));
        assert_eq!(v(&["gzip,  br"]), v(&["gzip", "br"]));
        assert_eq!(v(&[]), None);
        assert_eq!(v(&[""]), Some(String::new()));
        assert_eq!(
            vary_names([&b"Accept-Encoding, accept-encoding, X"[..]].into_iter()),
            Some(vec!["accept-encoding".into(), "x".into()])
        );
        assert_eq!(vary_names([&b"a, *"[..]].into_iter()), None);
    }
}
