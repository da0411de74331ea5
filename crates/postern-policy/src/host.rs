//! Destination hosts in one canonical form before any rule or the SSRF guard sees
//! them. Attackers spell `127.0.0.1` as `2130706433`, `0177.0.0.1`, `0x7f.1` or
//! `127.1`; resolvers and browsers accept these (inet_aton, WHATWG URL), so the
//! proxy parses them the same way and never lets a name-based rule or a DNS lookup
//! see an address in disguise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::matchers::normalize_domain;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lowercase ASCII (IDNs in punycode), no trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The form rules and logs use: the name, or the address without brackets.
    pub fn to_rule_string(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// Parses the host part of an authority (`example.com`, `10.0.0.1`, `[::1]`,
/// `%65xample.com`, `bücher.de`, `0x7f.1`).
pub fn normalize_host(raw: &str) -> Result<Host, &'static str> {
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unterminated IPv6 address")?;
        // RFC 6874 zone identifiers name a local interface: never a destination.
        if inner.contains('%') {
            return Err("IPv6 zone identifiers are not allowed");
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(ip.into()))
            .map_err(|_| "invalid IPv6 address");
    }
    // The common case, a canonical dotted quad, is already normal (the
    // standard parser takes no other IPv4 form).
    if let Ok(v4) = raw.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(v4.into()));
    }
    let decoded = percent_decode(raw).ok_or("invalid percent-encoding in host")?;
    const FORBIDDEN: &str = "/\\?#@[]:<>^|%";
    let forbidden = if decoded.is_ascii() {
        // ASCII controls and whitespace are exactly the bytes up to space, and DEL.
        decoded
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || FORBIDDEN.as_bytes().contains(&b))
    } else {
        decoded
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || FORBIDDEN.contains(c))
    };
    if forbidden {
        return Err("forbidden character in host");
    }
    let trimmed = decoded.strip_suffix('.').unwrap_or(&decoded);
    if trimmed.is_empty() {
        return Err("empty host");
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed).map_err(|_| "invalid internationalised domain name")?
    };
    // WHATWG URL "ends in a number": then the whole host must be an IPv4 address.
    let last = ascii.rsplit('.').next().unwrap_or("");
    if !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || is_hex_number(last)) {
        return parse_ipv4_any(&ascii)
            .map(|v4| Host::Ip(v4.into()))
            .ok_or("invalid IPv4 address");
    }
    normalize_domain(&ascii)
        .map(Host::Name)
        .ok_or("invalid host name")
}

fn is_hex_number(s: &str) -> bool {
    let lower = s.as_bytes();
    lower.len() >= 2
        && lower[0] == b'0'
        && (lower[1] | 0x20) == b'x'
        && lower[2..].iter().all(u8::is_ascii_hexdigit)
}

/// inet_aton / WHATWG IPv4: one to four parts, each decimal, octal (leading 0)
/// or hex (0x); the last part fills the remaining bytes.
fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(4);
    for p in &parts {
        values.push(parse_ipv4_number(p)?);
    }
    let (last, init) = values.split_last()?;
    if init.iter().any(|&v| v > 255) {
        return None;
    }
    let remaining_bytes = 4 - init.len() as u32;
    if *last >= 1u64 << (8 * remaining_bytes) {
        return None;
    }
    let mut addr: u64 = *last;
    for (i, v) in init.iter().enumerate() {
        addr |= v << (8 * (3 - i as u32));
    }
    Some(Ipv4Addr::from(addr as u32))
}

fn parse_ipv4_number(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) =
        if p.len() >= 2 && p.as_bytes()[0] == b'0' && (p.as_bytes()[1] | 0x20) == b'x' {
            (&p[2..], 16)
        } else if p.len() >= 2 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (p, 10)
        };
    if digits.is_empty() {
        // `0x` alone is zero in WHATWG.
        return Some(0);
    }
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is
/// not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a request target, once percent-decoded, would carry control bytes
/// (CR, LF, NUL, ...) that could split a request or a command on the next hop.
pub fn has_encoded_control(target: &str) -> bool {
    let hex = |b: u8| char::from(b).to_digit(16);
    let b = target.as_bytes();
    // Most targets have no `%` at all: look for one before decoding anything.
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && matches!(
                (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)),
                (Some(hi), Some(lo)) if hi * 16 + lo < 0x20 || hi * 16 + lo == 0x7f
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Result<Host, &'static str> {
        Ok(Host::Ip(s.parse().unwrap()))
    }

    #[test]
    fn loopback_in_disguise() {
        for spelling in [
            "127.0.0.1",
            "2130706433",
            "0177.0.0.1",
            "0x7f.1",
            "0x7F.0.0.1",
            "127.1",
            "127.0.1",
            "127.0.0.1.",
            "%31%32%37.0.0.1",
            "0x7f000001",
            "017700000001",
        ] {
            assert_eq!(normalize_host(spelling), ip("127.0.0.1"), "{spelling}");
        }
        assert_eq!(normalize_host("[::1]"), ip("::1"));
        assert_eq!(normalize_host("[::ffff:127.0.0.1]"), ip("::ffff:127.0.0.1"));
        assert_eq!(normalize_host("0.0.0.0"), ip("0.0.0.0"));
        assert_eq!(normalize_host("0"), ip("0.0.0.0"));
    }

    #[test]
    fn names() {
        assert_eq!(
            normalize_host("Example.COM."),
            Ok(Host::Name("example.com".into()))
        );
        assert_eq!(
            normalize_host("bücher.de"),
            Ok(Host::Name("xn--bcher-kva.de".into()))
        );
        assert_eq!(normalize_host("a1.b2"), Ok(Host::Name("a1.b2".into())));
        assert_eq!(
            normalize_host("1.example"),
            Ok(Host::Name("1.example".into()))
        );
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            ".",
            "256.0.0.1",
            "1.2.3.4.5",
            "0x1g.1",
            "127.0.0.1%0d",
            "exa%0ample.com",
            "a b.com",
            "[::1",
            "[fe80::1%25eth0]",
            "%zz.com",
            "4294967296",
            "1.2.3.08",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoded_controls() {
        assert!(has_encoded_control("http://a.com/x%0d%0aSet-Cookie:1"));
        assert!(has_encoded_control("http://a.com/%00"));
        assert!(has_encoded_control("http://a.com/%7F"));
        assert!(!has_encoded_control("http://a.com/a%20b%2F"));
        assert!(has_encoded_control("http://a.com/%1f%"));
        for fine in [
            "http://a.com/100%",
            "http://a.com/%1",
            "http://a.com/%zz",
            "%%20",
        ] {
            assert!(!has_encoded_control(fine), "{fine}");
        }
    }
}
