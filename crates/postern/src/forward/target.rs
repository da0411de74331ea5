//! Request targets a forward proxy receives (RFC 9112 §3.2): absolute-form for
//! HTTP and authority-form for CONNECT.

use crate::egress::Destination;

/// A parsed `http://host[:port]/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port`, the host lowercase and IPv6 in brackets; built once, it
    /// serves as Host field and pool key without further copies.
    authority: String,
    host_len: usize,
    pub dest: Destination,
    pub port: u16,
    /// Origin-form for the next hop: path and query, at least `/`.
    pub path: String,
    /// The URI had neither path nor query (`http://host`), which for OPTIONS
    /// means the server as a whole.
    pub no_path: bool,
}

impl HttpTarget {
    pub fn host(&self) -> &str {
        &self.authority[..self.host_len]
    }

    /// RFC 9110 §7.2: the port is left out of Host when it is the default.
    pub fn host_field(&self) -> &str {
        if self.port == 80 {
            self.host()
        } else {
            &self.authority
        }
    }

    pub fn pool_key(&self) -> &str {
        &self.authority
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    Malformed(&'static str),
    /// A scheme this proxy does not forward (yet).
    UnsupportedScheme(String),
}

pub fn parse_absolute(target: &str) -> Result<HttpTarget, TargetError> {
    // The scheme ends at the first colon (RFC 3986 §3.1); searching for the
    // colon alone is a byte scan, where "://" needs a substring searcher.
    let split = target.split_once(':');
    let Some((scheme, rest)) = split.and_then(|(s, r)| Some((s, r.strip_prefix("//")?))) else {
        return Err(TargetError::Malformed(
            "request target is not an absolute URI",
        ));
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(TargetError::Malformed("invalid URI scheme"));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(TargetError::UnsupportedScheme(scheme.to_ascii_lowercase()));
    }
    if rest.contains('#') {
        return Err(TargetError::Malformed("fragment in request target"));
    }
    let end = rest
        .bytes()
        .position(|b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (host, dest, port) = parse_authority(authority, Some(80))?;
    let no_path = path.is_empty();
    let path = if no_path {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let host_len = host.len();
    let mut authority = host;
    authority.push(':');
    authority.push_str(crate::http1::decimal(u64::from(port), &mut [0; 20]));
    Ok(HttpTarget {
        authority,
        host_len,
        dest,
        port,
        no_path,
        path,
    })
}

/// A URL as it may be shown or logged: a password in its user information
/// (`ftp://user:password@host/`) is left out, the user kept.
pub fn without_password(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return url.into();
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.into();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}", &url[..start + colon], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// `host[:port]`; without a default port the port is required (CONNECT).
pub fn parse_authority(
    authority: &str,
    default_port: Option<u16>,
) -> Result<(String, Destination, u16), TargetError> {
    if authority.contains('@') {
        // RFC 9110 §4.2.4: userinfo in http(s) URIs is deprecated and a phishing vector.
        return Err(TargetError::Malformed(
            "user information in the URI authority",
        ));
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or(TargetError::Malformed("unterminated IPv6 address"))?;
        let (h, p) = authority.split_at(close + 1);
        match p {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or(TargetError::Malformed("junk after IPv6 address"))?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) if !p.is_empty() => parse_port(p)?,
        (Some(_), Some(d)) | (None, Some(d)) => d,
        (_, None) => return Err(TargetError::Malformed("port missing in authority")),
    };
    let dest = Destination::parse(host).map_err(TargetError::Malformed)?;
    // The canonical spelling: what rules, Host and the pool see.
    let host = match &dest {
        Destination::Name(n) => n.clone(),
        Destination::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        Destination::Ip(ip) => {
            let mut text = String::with_capacity(15);
            postern_policy::addr::push_ip(&mut text, *ip);
            text
        }
    };
    Ok((host, dest, port))
}

fn parse_port(p: &str) -> Result<u16, TargetError> {
    if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::Malformed("invalid port"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::Malformed("invalid port")),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_left_out_of_shown_urls() {
        for (url, shown) in [
            ("ftp://bob:S3CR3T@h/pub/", "ftp://bob@h/pub/"),
            ("ftp://bob:a:b@h:21/x?y", "ftp://bob@h:21/x?y"),
            ("ftp://bob@h/x", "ftp://bob@h/x"),
            ("ftp://h/x@y:z", "ftp://h/x@y:z"),
            ("http://h/", "http://h/"),
            ("/local", "/local"),
        ] {
            assert_eq!(without_password(url), shown, "{url}");
        }
    }

    #[test]
    fn absolute_form() {
        let t = parse_absolute("http://Example.com:8080/a/b?c=d").unwrap();
        assert_eq!(
            (t.host(), t.port, t.path.as_str()),
            ("example.com", 8080, "/a/b?c=d")
        );
        assert_eq!(t.host_field(), "example.com:8080");
        let t = parse_absolute("HTTP://example.com").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.host_field()),
            (80, "/", "example.com")
        );
        let t = parse_absolute("http://example.com?q").unwrap();
        assert_eq!((t.path.as_str(), t.no_path), ("/?q", false));
        assert!(parse_absolute("http://example.com").unwrap().no_path);
        assert!(!parse_absolute("http://example.com/").unwrap().no_path);
        let t = parse_absolute("http://[::1]:81/").unwrap();
        assert_eq!((t.host(), t.port), ("[::1]", 81));
        assert_eq!(parse_absolute("http://example.com:/").unwrap().port, 80);
    }

    #[test]
    fn refused_targets() {
        for bad in [
            "http://user:pw@example.com/",
            "http:///path",
            "http://exa mple.com/",
            "http://example.com:99999/",
            "http://example.com:0/",
            "http://example.com:-1/",
            "http://[::1/",
            "http://example.com/#frag",
            "example.com/",
        ] {
            assert!(
                matches!(parse_absolute(bad), Err(TargetError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_absolute("gopher://example.com/"),
            Err(TargetError::UnsupportedScheme("gopher".into()))
        );
    }

    #[test]
    fn authority_form() {
        let (h, _, p) = parse_authority("example.com:443", None).unwrap();
        assert_eq!((h.as_str(), p), ("example.com", 443));
        assert!(parse_authority("example.com", None).is_err());
        assert!(parse_authority("example.com:", None).is_err());
        let (h, _, p) = parse_authority("[2001:db8::1]:8443", None).unwrap();
        assert_eq!((h.as_str(), p), ("[2001:db8::1]", 8443));
    }
}
