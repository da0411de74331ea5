//! The policy half of the configuration: rules and named matchers, blocklists,
//! users, header rules, content rules and per-client limits. Files named here
//! (htpasswd, group files, blocklists) are read now, so a broken one is reported
//! at load or reload with its own file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postern_policy::Cidr;
use postern_policy::blocklist::Blocklist;
use postern_policy::headers::HeaderRules;
use postern_policy::htpasswd::{Groups, Htpasswd};
use postern_policy::matchers::{DomainList, Patterns, PortSet, TimeWindow};
use postern_policy::rules::{Action, DenyWith, Matcher, NamedList, Rule, RuleSet};
use toml::Spanned;

use super::diag::{Problem, did_you_mean, line_col};
use super::raw::{RawConditions, RawConfig, RawPort};
use super::validate::duration_or;
use super::{AuthConfig, ContentRules, units};

pub struct PolicyParts {
    pub rules: RuleSet,
    pub blocklists: Vec<Arc<NamedList>>,
    pub auth: Option<AuthConfig>,
    pub headers: HeaderRules,
    pub content: ContentRules,
    pub utc_offset_minutes: i32,
    pub warnings: Vec<String>,
}

const SCHEMES: &[&str] = &["http", "ftp", "tunnel"];

pub fn validate_policy(
    raw: &RawConfig,
    base: &Path,
    text: &str,
    listener_names: &[String],
    p: &mut Vec<Problem>,
) -> PolicyParts {
    let mut warnings = Vec::new();

    let mut lists: HashMap<String, Arc<NamedList>> = HashMap::new();
    let mut blocklists = Vec::new();
    for b in &raw.blocklist {
        let name = b.name.get_ref();
        if name.is_empty() || lists.contains_key(name) {
            p.push(Problem::new(
                b.name.span(),
                format!("blocklist name `{name}` is empty or used twice"),
            ));
            continue;
        }
        let path = base.join(b.file.get_ref());
        let content = match std::fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) => {
                p.push(Problem::new(
                    b.file.span(),
                    format!("cannot read blocklist {}: {e}", path.display()),
                ));
                continue;
            }
        };
        let (list, problems) = Blocklist::parse(&content);
        for lp in problems {
            warnings.push(format!(
                "{}:{}: warning: {} (line skipped)",
                path.display(),
                lp.line,
                lp.message
            ));
        }
        let named = Arc::new(NamedList {
            name: name.clone(),
            list,
        });
        lists.insert(name.clone(), named.clone());
        blocklists.push(named);
    }

    let auth = raw.auth.as_ref().and_then(|section| {
        let a = section.get_ref();
        let (users, program) = match (&a.htpasswd, &a.program) {
            (Some(file), None) => (
                read_parsed(p, file, base, "htpasswd file", Htpasswd::parse),
                Some(None),
            ),
            (None, Some(program)) => (
                Some(Htpasswd::default()),
                auth_program(p, program, a, base).map(Some),
            ),
            (Some(file), Some(_)) => {
                p.push(Problem::new(
                    file.span(),
                    "[auth] takes `htpasswd` (a user file) or `program` (a program that checks credentials), not both",
                ));
                (None, None)
            }
            (None, None) => {
                p.push(Problem::new(
                    section.span(),
                    "[auth] needs `htpasswd` (a user file) or `program` (a program that checks credentials)",
                ));
                (None, None)
            }
        };
        let groups = match &a.groups {
            None => Some(Groups::default()),
            Some(g) => read_parsed(p, g, base, "group file", Groups::parse),
        };
        let realm = match &a.realm {
            None => "Postern proxy".to_string(),
            Some(r) if r.get_ref().is_empty() || r.get_ref().contains(['"', '\\', '\r', '\n']) => {
                p.push(Problem::new(
                    r.span(),
                    "`realm` must be non-empty text without quotes or backslashes",
                ));
                String::new()
            }
            Some(r) => r.get_ref().clone(),
        };
        let cache_ttl = duration_or(p, &a.cache_ttl, Duration::from_secs(300), "`cache_ttl`");
        let failure_window = duration_or(
            p,
            &a.failure_window,
            Duration::from_secs(60),
            "failure_window",
        );
        let max_failures = match &a.max_failures {
            None => 10,
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                p.push(Problem::new(
                    n.span(),
                    "`max_failures` must be between 1 and 1000000",
                ));
                10
            }
        };
        Some(AuthConfig {
            users: Arc::new(users?),
            program: program?,
            groups: Arc::new(groups?),
            realm,
            cache_ttl,
            max_failures,
            failure_window,
        })
    });

    let mut ctx = ConditionCtx {
        lists: &lists,
        listener_names,
        has_auth: raw.auth.is_some(),
        p,
    };

    let mut named: HashMap<&str, Arc<Matcher>> = HashMap::new();
    for (name, m) in &raw.matcher {
        if let Some(matcher) = ctx.matcher(&m.conditions()) {
            named.insert(name.as_str(), Arc::new(matcher));
        }
    }

    let mut rules = Vec::new();
    for (i, r) in raw.rule.iter().enumerate() {
        let action = match r.action.get_ref().as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            "auth" => Action::Auth,
            other => {
                let hint = did_you_mean(other, &["allow", "deny", "auth"])
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                ctx.p.push(Problem::new(
                    r.action.span(),
                    format!("unknown rule action `{other}`{hint}; actions are: allow, deny, auth"),
                ));
                continue;
            }
        };
        if action == Action::Auth && raw.auth.is_none() {
            ctx.p.push(Problem::new(
                r.action.span(),
                "rule action `auth` needs an [auth] section (htpasswd or program)",
            ));
        }
        let mut deny = DenyWith::default();
        let deny_only = |ctx: &mut ConditionCtx, span: std::ops::Range<usize>, key: &str| {
            if action != Action::Deny {
                ctx.p.push(Problem::new(
                    span,
                    format!("`{key}` only applies to rules with action = \"deny\""),
                ));
            }
        };
        if let Some(s) = &r.status {
            deny_only(&mut ctx, s.span(), "status");
            match u16::try_from(*s.get_ref()) {
                Ok(code) if (400..=599).contains(&code) => deny.status = Some(code),
                _ => ctx.p.push(Problem::new(
                    s.span(),
                    "a deny `status` must be an error status between 400 and 599",
                )),
            }
        }
        if let Some(m) = &r.message {
            deny_only(&mut ctx, m.span(), "message");
            deny.message = Some(m.get_ref().clone());
        }
        if let Some(url) = &r.redirect {
            deny_only(&mut ctx, url.span(), "redirect");
            let u = url.get_ref();
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                ctx.p.push(Problem::new(
                    url.span(),
                    "`redirect` must be an http:// or https:// URL without spaces",
                ));
            } else {
                deny.redirect = Some(u.clone());
            }
        }
        let inline = ctx.matcher(&r.conditions());
        let mut uses = Vec::new();
        for m in &r.matchers {
            let (negate, name) = match m.get_ref().strip_prefix('!') {
                Some(n) => (true, n.trim()),
                None => (false, m.get_ref().as_str()),
            };
            match named.get(name) {
                Some(matcher) => uses.push((name.to_string(), negate, matcher.clone())),
                None => {
                    let names: Vec<&str> = named.keys().copied().collect();
                    let hint = did_you_mean(name, &names)
                        .map(|m| format!(" (did you mean `{m}`?)"))
                        .unwrap_or_default();
                    ctx.p.push(Problem::new(
                        m.span(),
                        format!("no [matcher.{name}] is defined{hint}"),
                    ));
                }
            }
        }
        let Some(inline) = inline else {
            continue;
        };
        let (line, _) = line_col(text, r.action.span().start);
        rules.push(Rule {
            label: format!("rule #{} (line {line})", i + 1),
            action,
            deny,
            inline,
            named: uses,
        });
    }

    let headers = header_rules(raw, ctx.p);
    let content = content_rules(raw, ctx.p);
    let utc_offset_minutes = match &raw.policy.utc_offset {
        None => 0,
        Some(o) => parse_offset(o.get_ref()).unwrap_or_else(|| {
            ctx.p.push(Problem::new(
                o.span(),
                "`utc_offset` is written \"+HH:MM\" or \"-HH:MM\" (e.g. \"+01:00\")",
            ));
            0
        }),
    };

    let asks_credentials = rules.iter().any(|r: &Rule| {
        r.action == Action::Auth
            || !r.inline.user.is_empty()
            || !r.inline.group.is_empty()
            || r.named
                .iter()
                .any(|(_, _, m)| !m.user.is_empty() || !m.group.is_empty())
    });
    if auth.is_some() && !asks_credentials {
        warnings.push(
            "warning: [auth] is configured but no rule asks for credentials (add a rule with action = \"auth\", or `user`/`group` conditions)".into(),
        );
    }
    for b in &blocklists {
        let used = raw
            .rule
            .iter()
            .any(|r| r.blocklist.iter().any(|n| n.get_ref() == &b.name))
            || raw
                .matcher
                .values()
                .any(|m| m.blocklist.iter().any(|n| n.get_ref() == &b.name));
        if !used {
            warnings.push(format!(
                "warning: blocklist `{}` is not used by any rule or matcher (add `blocklist = [\"{}\"]` to a deny rule)",
                b.name, b.name
            ));
        }
    }

    PolicyParts {
        rules: RuleSet::new(rules),
        blocklists,
        auth,
        headers,
        content,
        utc_offset_minutes,
        warnings,
    }
}

struct ConditionCtx<'a> {
    lists: &'a HashMap<String, Arc<NamedList>>,
    listener_names: &'a [String],
    has_auth: bool,
    p: &'a mut Vec<Problem>,
}

impl ConditionCtx<'_> {
    /// Builds a matcher; `None` (with problems recorded) if any condition is bad.
    fn matcher(&mut self, c: &RawConditions<'_>) -> Option<Matcher> {
        let before = self.p.len();
        let mut m = Matcher::default();
        for s in c.src {
            match s.get_ref().parse::<Cidr>() {
                Ok(cidr) => m.src.push(cidr),
                Err(e) => self.p.push(Problem::new(s.span(), e.to_string())),
            }
        }
        for s in c.dst_ip {
            match s.get_ref().parse::<Cidr>() {
                Ok(cidr) => m.dst_ip.push(cidr),
                Err(e) => self.p.push(Problem::new(s.span(), e.to_string())),
            }
        }
        if (!c.user.is_empty() || !c.group.is_empty()) && !self.has_auth {
            let span = c
                .user
                .first()
                .or(c.group.first())
                .map(|s| s.span())
                .unwrap_or(0..0);
            self.p.push(Problem::new(
                span,
                "`user` and `group` conditions need an [auth] section (htpasswd or program)",
            ));
        }
        m.user = c.user.iter().map(|s| s.get_ref().clone()).collect();
        m.group = c.group.iter().map(|s| s.get_ref().clone()).collect();
        let domains: Vec<String> = c.dst_domain.iter().map(|s| s.get_ref().clone()).collect();
        match DomainList::parse(&domains) {
            Ok(d) => m.dst_domain = d,
            Err(e) => self.p.push(Problem::new(first_span(c.dst_domain), e)),
        }
        m.dst_regex = self.patterns(c.dst_regex);
        m.url_regex = self.patterns(c.url_regex);
        m.url_ext = c
            .url_ext
            .iter()
            .map(|s| s.get_ref().trim_start_matches('.').to_ascii_lowercase())
            .collect();
        let mut ranges = Vec::new();
        for port in c.dst_port {
            let parsed = match port.get_ref() {
                RawPort::Number(n) => PortSet::parse_entry(&n.to_string()),
                RawPort::Text(t) => PortSet::parse_entry(t),
            };
            match parsed {
                Ok(r) => ranges.push(r),
                Err(e) => self.p.push(Problem::new(port.span(), e)),
            }
        }
        m.dst_port = PortSet::new(ranges);
        m.method = c
            .method
            .iter()
            .map(|s| s.get_ref().to_ascii_uppercase())
            .collect();
        for s in c.scheme {
            if !SCHEMES.contains(&s.get_ref().as_str()) {
                self.p.push(Problem::new(
                    s.span(),
                    format!(
                        "unknown scheme `{}`; schemes are: {} (CONNECT and SOCKS tunnels are `tunnel`)",
                        s.get_ref(),
                        SCHEMES.join(", ")
                    ),
                ));
            }
        }
        m.scheme = c.scheme.iter().map(|s| s.get_ref().clone()).collect();
        for s in c.listener {
            if !self.listener_names.iter().any(|n| n == s.get_ref()) {
                let names: Vec<&str> = self.listener_names.iter().map(String::as_str).collect();
                let hint = did_you_mean(s.get_ref(), &names)
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                self.p.push(Problem::new(
                    s.span(),
                    format!("no listener is named `{}`{hint}", s.get_ref()),
                ));
            }
        }
        m.listener = c.listener.iter().map(|s| s.get_ref().clone()).collect();
        for t in c.time {
            match TimeWindow::parse(t.get_ref()) {
                Ok(w) => m.time.push(w),
                Err(e) => self.p.push(Problem::new(t.span(), e)),
            }
        }
        for b in c.blocklist {
            match self.lists.get(b.get_ref()) {
                Some(l) => m.blocklist.push(l.clone()),
                None => {
                    let names: Vec<&str> = self.lists.keys().map(String::as_str).collect();
                    let hint = did_you_mean(b.get_ref(), &names)
                        .map(|m| format!(" (did you mean `{m}`?)"))
                        .unwrap_or_default();
                    self.p.push(Problem::new(
                        b.span(),
                        format!("no [[blocklist]] is named `{}`{hint}", b.get_ref()),
                    ));
                }
            }
        }
        (self.p.len() == before).then_some(m)
    }

    fn patterns(&mut self, raw: &[Spanned<String>]) -> Option<Patterns> {
        if raw.is_empty() {
            return None;
        }
        let texts: Vec<String> = raw.iter().map(|s| s.get_ref().clone()).collect();
        match Patterns::parse(&texts) {
            Ok(p) => Some(p),
            Err(e) => {
                // Name the pattern that fails, not just the list.
                let span = raw
                    .iter()
                    .find(|s| Patterns::parse(&[s.get_ref().clone()]).is_err())
                    .map(|s| s.span())
                    .unwrap_or(first_span(raw));
                self.p.push(Problem::new(span, e));
                None
            }
        }
    }
}

/// Reads a file named by a key and parses it; problems name the file's own
/// lines (or the key, when the file cannot be read).
/// `[auth] program`: an executable file (relative to the configuration's
/// directory) and its arguments, `children` and `program_timeout`.
fn auth_program(
    p: &mut Vec<Problem>,
    program: &Spanned<Vec<Spanned<String>>>,
    a: &super::raw::RawAuth,
    base: &Path,
) -> Option<Arc<crate::guard::auth_program::AuthProgram>> {
    use std::os::unix::fs::PermissionsExt;
    let Some((first, args)) = program.get_ref().split_first() else {
        p.push(Problem::new(
            program.span(),
            "`program` needs at least the program to run: [\"/path/to/helper\", \"arg\", ...]",
        ));
        return None;
    };
    let path = base.join(first.get_ref());
    let runnable = match std::fs::metadata(&path) {
        Err(e) => Err(format!("cannot run {}: {e}", path.display())),
        Ok(m) if !m.is_file() => Err(format!("{} is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Err(format!("{} is not executable", path.display()))
        }
        Ok(_) => Ok(()),
    };
    if let Err(why) = runnable {
        p.push(Problem::new(first.span(), why));
        return None;
    }
    let children = match &a.children {
        None => 5,
        Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            p.push(Problem::new(
                n.span(),
                "`children` must be between 1 and 1000",
            ));
            return None;
        }
    };
    let timeout = duration_or(
        p,
        &a.program_timeout,
        Duration::from_secs(10),
        "`program_timeout`",
    );
    let mut argv = vec![path.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|s| s.get_ref().clone()));
    Some(Arc::new(crate::guard::auth_program::AuthProgram::new(
        argv, children, timeout,
    )))
}

pub(super) fn read_parsed<T>(
    p: &mut Vec<Problem>,
    key: &Spanned<String>,
    base: &Path,
    what: &str,
    parse: impl Fn(&str) -> Result<T, Vec<postern_policy::blocklist::LineProblem>>,
) -> Option<T> {
    let path = base.join(key.get_ref());
    let content = std::fs::read_to_string(&path)
        .map_err(|e| {
            p.push(Problem::new(
                key.span(),
                format!("cannot read {what} {}: {e}", path.display()),
            ))
        })
        .ok()?;
    parse(&content)
        .map_err(|problems| {
            for lp in problems {
                p.push(Problem::in_file(
                    key.span(),
                    format!("{}:{}: {}", path.display(), lp.line, lp.message),
                ));
            }
        })
        .ok()
}

fn first_span<T>(v: &[Spanned<T>]) -> std::ops::Range<usize> {
    v.first().map(|s| s.span()).unwrap_or(0..0)
}

fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Names the proxy manages itself: rules may not touch them.
const MANAGED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

fn header_rules(raw: &RawConfig, p: &mut Vec<Problem>) -> HeaderRules {
    let h = &raw.headers;
    header_rules_from(
        p,
        RawHeaderRules {
            request_remove: &h.request_remove,
            request_set: &h.request_set,
            request_replace: &h.request_replace,
            response_remove: &h.response_remove,
            response_set: &h.response_set,
        },
    )
}

/// The header-rule keys, wherever they are written (`[headers]`, a route).
pub struct RawHeaderRules<'a> {
    pub request_remove: &'a [Spanned<String>],
    pub request_set: &'a BTreeMap<String, Spanned<String>>,
    pub request_replace: &'a BTreeMap<String, Spanned<String>>,
    pub response_remove: &'a [Spanned<String>],
    pub response_set: &'a BTreeMap<String, Spanned<String>>,
}

pub fn header_rules_from(p: &mut Vec<Problem>, h: RawHeaderRules<'_>) -> HeaderRules {
    let mut rules = HeaderRules::default();
    let name_ok = |p: &mut Vec<Problem>, name: &str, span: std::ops::Range<usize>| {
        if !valid_field_name(name) {
            p.push(Problem::new(
                span,
                format!("`{name}` is not a header field name"),
            ));
            return false;
        }
        if MANAGED.contains(&name.to_ascii_lowercase().as_str()) {
            p.push(Problem::new(
                span,
                format!("`{name}` is managed by the proxy and cannot be changed by header rules"),
            ));
            return false;
        }
        true
    };
    for n in h.request_remove {
        if name_ok(p, n.get_ref(), n.span()) {
            rules.request_remove.push(n.get_ref().to_ascii_lowercase());
        }
    }
    for n in h.response_remove {
        if name_ok(p, n.get_ref(), n.span()) {
            rules.response_remove.push(n.get_ref().to_ascii_lowercase());
        }
    }
    for (map, out) in [
        (h.request_set, &mut rules.request_set),
        (h.request_replace, &mut rules.request_replace),
        (h.response_set, &mut rules.response_set),
    ] {
        for (name, value) in map {
            if !name_ok(p, name, value.span()) {
                continue;
            }
            // RFC 9110 §5.5: no CR, LF or NUL in a field value.
            if value
                .get_ref()
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0)
            {
                p.push(Problem::new(
                    value.span(),
                    "a header value must not contain CR, LF or NUL",
                ));
                continue;
            }
            out.push((name.clone(), value.get_ref().trim().to_string()));
        }
    }
    rules
}

fn content_rules(raw: &RawConfig, p: &mut Vec<Problem>) -> ContentRules {
    let c = &raw.content;
    let mut rules = ContentRules {
        deny_types: media_types(&c.deny_types, "\"video/mp4\" or \"video/*\"", p),
        ..ContentRules::default()
    };
    if let Some(s) = &c.max_response_size {
        match units::size(s.get_ref()) {
            Ok(n) if n > 0 => rules.max_response_size = Some(n as u64),
            Ok(_) => p.push(Problem::new(
                s.span(),
                "`max_response_size` must be more than zero",
            )),
            Err(e) => p.push(Problem::new(s.span(), format!("`max_response_size`: {e}"))),
        }
    }
    rules
}

/// Media types as lists of them are written (`type/subtype` or `type/*`,
/// without parameters), lowercase; each other entry is a problem whose
/// message gives `example`.
pub(super) fn media_types(
    list: &[toml::Spanned<String>],
    example: &str,
    p: &mut Vec<Problem>,
) -> Vec<String> {
    let mut out = Vec::new();
    for t in list {
        let v = t.get_ref().trim().to_ascii_lowercase();
        let valid = v.split_once('/').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && !b.contains('/') && !v.contains([';', ' '])
        });
        if valid {
            out.push(v);
        } else {
            p.push(Problem::new(
                t.span(),
                format!("`{}` is not a media type (e.g. {example})", t.get_ref()),
            ));
        }
    }
    out
}

fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h.to_string().len() > 2 || !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    Some(sign * (h * 60 + m))
}
