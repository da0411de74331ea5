//! Hiding the client: which request fields reach the next hop at each anonymity
//! level, what the proxy adds, and the configured header rules on top.
//!
//! Levels (per listener):
//! - `transparent`: client-sent forwarding fields pass; Via, X-Forwarded-For and
//!   Forwarded (RFC 7239) carry the client address.
//! - `anonymous` (default): Via only; every client-sent field that can carry a
//!   client address or reveal an earlier proxy is removed.
//! - `elite`: as anonymous, and nothing reveals a proxy at all (no Via).

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anonymity {
    Transparent,
    #[default]
    Anonymous,
    Elite,
}

impl Anonymity {
    pub fn parse(s: &str) -> Option<Anonymity> {
        match s {
            "transparent" => Some(Anonymity::Transparent),
            "anonymous" => Some(Anonymity::Anonymous),
            "elite" => Some(Anonymity::Elite),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Anonymity::Transparent => "transparent",
            Anonymity::Anonymous => "anonymous",
            Anonymity::Elite => "elite",
        }
    }

    /// Whether the proxy names itself in Via.
    pub fn sends_via(self) -> bool {
        self != Anonymity::Elite
    }

    /// Whether the client address is added (X-Forwarded-For, Forwarded).
    pub fn sends_client_address(self) -> bool {
        self == Anonymity::Transparent
    }
}

/// Request fields that carry a client address or name a proxy on the way.
/// Compared case-insensitively; the list follows what proxies, CDNs and load
/// balancers are known to send.
const FORWARDING_FIELDS: &[&str] = &[
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded",
    "forwarded-for",
    "x-real-ip",
    "client-ip",
    "x-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-proxyuser-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
    "x-proxy-id",
    "x-bluecoat-via",
    "x-coming-from",
    "coming-from",
];

/// Whether `name` is one of the forwarding fields (case-insensitive).
pub fn is_forwarding_field(name: &[u8]) -> bool {
    // Every entry is 3..=19 bytes long; most request fields are ruled out by
    // length or first letter before any comparison.
    if !(3..=19).contains(&name.len()) {
        return false;
    }
    if !matches!(
        name[0] | 0x20,
        b'v' | b'f' | b'x' | b'c' | b't' | b'p' | b'w'
    ) {
        return false;
    }
    FORWARDING_FIELDS
        .iter()
        .any(|f| f.len() == name.len() && f.as_bytes().eq_ignore_ascii_case(name))
}

/// Configured header rules, applied after the anonymity level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Request fields removed (lowercase names).
    pub request_remove: Vec<String>,
    /// Request fields set: existing ones are replaced, or the field is added.
    pub request_set: Vec<(String, String)>,
    /// Request fields replaced only when the client sent them.
    pub request_replace: Vec<(String, String)>,
    /// Response fields removed (lowercase names).
    pub response_remove: Vec<String>,
    /// Response fields set: existing ones are replaced, or the field is added.
    pub response_set: Vec<(String, String)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.request_remove.is_empty()
            && self.request_set.is_empty()
            && self.request_replace.is_empty()
            && self.response_remove.is_empty()
            && self.response_set.is_empty()
    }
}

/// What happens to one client-sent request field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldFate<'a> {
    Keep,
    Drop,
    /// Sent with this value instead.
    Replace(&'a str),
}

/// The request-side plan for one listener: level plus rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrubber {
    pub level: Anonymity,
    pub rules: HeaderRules,
}

impl Scrubber {
    pub fn new(level: Anonymity, rules: HeaderRules) -> Scrubber {
        Scrubber { level, rules }
    }

    /// The fate of a client-sent field (hop-by-hop fields are removed before this).
    pub fn request_field(&self, name: &[u8]) -> FieldFate<'_> {
        let r = &self.rules;
        if let Some((_, v)) = r
            .request_set
            .iter()
            .chain(&r.request_replace)
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        {
            return FieldFate::Replace(v);
        }
        if r.request_remove
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        {
            return FieldFate::Drop;
        }
        if self.level == Anonymity::Transparent {
            // X-Forwarded-For and Forwarded are rewritten with the client
            // address appended (see `forwarding_fields`).
            if name.eq_ignore_ascii_case(b"x-forwarded-for")
                || name.eq_ignore_ascii_case(b"forwarded")
            {
                return FieldFate::Drop;
            }
            return FieldFate::Keep;
        }
        if is_forwarding_field(name) {
            return FieldFate::Drop;
        }
        FieldFate::Keep
    }

    /// Fields `request_set` adds because the client did not send them.
    pub fn added_fields<'a>(
        &'a self,
        sent: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.rules
            .request_set
            .iter()
            .filter(move |(n, _)| !sent(n))
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// At `transparent`, the client address joined to what the client sent:
    /// `(X-Forwarded-For value, Forwarded value)`. `None` at other levels.
    pub fn forwarding_fields(
        &self,
        client: IpAddr,
        sent_xff: &[&[u8]],
        sent_forwarded: &[&[u8]],
    ) -> Option<(String, String)> {
        if !self.level.sends_client_address() {
            return None;
        }
        let client = canonical(client);
        let mut xff = join_values(sent_xff);
        if !xff.is_empty() {
            xff.push_str(", ");
        }
        let ip_at = xff.len();
        crate::addr::push_ip(&mut xff, client);
        let ip = &xff[ip_at..];
        let mut fwd = join_values(sent_forwarded);
        if !fwd.is_empty() {
            fwd.push_str(", ");
        }
        // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
        match client {
            IpAddr::V4(_) => {
                fwd.push_str("for=");
                fwd.push_str(ip);
            }
            IpAddr::V6(_) => {
                fwd.push_str("for=\"[");
                fwd.push_str(ip);
                fwd.push_str("]\"");
            }
        }
        Some((xff, fwd))
    }

    /// Whether any rule removes or replaces response fields (when none does,
    /// fields need not be asked about one by one).
    pub fn rewrites_responses(&self) -> bool {
        !self.rules.response_remove.is_empty() || !self.rules.response_set.is_empty()
    }

    /// Whether a response field from the server is left out (removed, or
    /// replaced by `response_set`).
    pub fn drops_response_field(&self, name: &[u8]) -> bool {
        let r = &self.rules;
        r.response_remove
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
            || r.response_set
                .iter()
                .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Fields added to every response.
    pub fn response_added(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules
            .response_set
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

fn join_values(values: &[&[u8]]) -> String {
    let mut out = String::with_capacity(64);
    for v in values {
        let v = String::from_utf8_lossy(v);
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    }
    out
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_field_names() {
        for name in [
            "X-Forwarded-For",
            "via",
            "FORWARDED",
            "X-Real-IP",
            "True-Client-IP",
            "CF-Connecting-IP",
        ] {
            assert!(is_forwarding_field(name.as_bytes()), "{name}");
        }
        for name in [
            "Host",
            "Accept",
            "User-Agent",
            "X-Request-Id",
            "Cookie",
            "Content-Type",
        ] {
            assert!(!is_forwarding_field(name.as_bytes()), "{name}");
        }
        assert!(
            FORWARDING_FIELDS
                .iter()
                .all(|f| (3..=19).contains(&f.len()))
        );
    }

    #[test]
    fn levels() {
        let anon = Scrubber::default();
        assert_eq!(anon.request_field(b"X-Forwarded-For"), FieldFate::Drop);
        assert_eq!(anon.request_field(b"Via"), FieldFate::Drop);
        assert_eq!(anon.request_field(b"Accept"), FieldFate::Keep);
        assert!(
            anon.forwarding_fields("10.0.0.1".parse().unwrap(), &[], &[])
                .is_none()
        );
        assert!(anon.level.sends_via());

        let elite = Scrubber::new(Anonymity::Elite, HeaderRules::default());
        assert_eq!(elite.request_field(b"x-real-ip"), FieldFate::Drop);
        assert!(!elite.level.sends_via());

        let t = Scrubber::new(Anonymity::Transparent, HeaderRules::default());
        assert_eq!(t.request_field(b"X-Real-IP"), FieldFate::Keep);
        assert_eq!(t.request_field(b"Via"), FieldFate::Keep);
        let (xff, fwd) = t
            .forwarding_fields(
                "::ffff:10.0.0.1".parse().unwrap(),
                &[b"192.0.2.1"],
                &[b"for=192.0.2.1"],
            )
            .unwrap();
        assert_eq!(xff, "192.0.2.1, 10.0.0.1");
        assert_eq!(fwd, "for=192.0.2.1, for=10.0.0.1");
        let (_, fwd) = t
            .forwarding_fields("2001:db8::1".parse().unwrap(), &[], &[])
            .unwrap();
        assert_eq!(fwd, "for=\"[2001:db8::1]\"");
    }

    #[test]
    fn rules_on_top() {
        let s = Scrubber::new(
            Anonymity::Transparent,
            HeaderRules {
                request_remove: vec!["referer".into()],
                request_set: vec![("User-Agent".into(), "Postern".into())],
                request_replace: vec![("Accept-Language".into(), "en".into())],
                response_remove: vec!["server".into()],
                response_set: vec![("X-Frame-Options".into(), "DENY".into())],
            },
        );
        assert_eq!(s.request_field(b"Referer"), FieldFate::Drop);
        assert_eq!(
            s.request_field(b"user-agent"),
            FieldFate::Replace("Postern")
        );
        assert_eq!(
            s.request_field(b"accept-language"),
            FieldFate::Replace("en")
        );
        let added: Vec<_> = s.added_fields(|_| false).collect();
        assert_eq!(added, vec![("User-Agent", "Postern")]);
        assert_eq!(s.added_fields(|n| n == "User-Agent").count(), 0);
        assert!(s.drops_response_field(b"Server"));
        assert!(s.drops_response_field(b"x-frame-options"));
        assert_eq!(s.response_added().count(), 1);
        assert!(!s.drops_response_field(b"Date"));
    }
}
