//! Access-log lines in a format of the operator's own (`[log] format =
//! "custom"`), written with nginx's `log_format` variables where nginx has
//! one (`$remote_addr`, `$status`, `$request_time`, ...) and Postern's own for
//! what nginx lacks (`$squid_result`, `$proxy_status`, ...). The template is
//! parsed once, when the configuration is loaded.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::context::RequestCtx;

use super::time;

/// A parsed template: text and variables in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Arc<[Piece]>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    TimeLocal,
    TimeIso8601,
    Msec,
    RequestTime,
    DurationMs,
    RemoteAddr,
    RemotePort,
    RemoteUser,
    Listener,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Status,
    BytesSent,
    RequestLength,
    UpstreamAddr,
    SquidResult,
    Hierarchy,
    ContentType,
    Referer,
    UserAgent,
    ProxyStatus,
    Rule,
    RequestId,
}

/// Every variable, by name.
const VARIABLES: &[(&str, Var)] = &[
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("msec", Var::Msec),
    ("request_time", Var::RequestTime),
    ("duration_ms", Var::DurationMs),
    ("remote_addr", Var::RemoteAddr),
    ("remote_port", Var::RemotePort),
    ("remote_user", Var::RemoteUser),
    ("listener", Var::Listener),
    ("request_method", Var::RequestMethod),
    ("request_uri", Var::RequestUri),
    ("server_protocol", Var::ServerProtocol),
    ("status", Var::Status),
    ("bytes_sent", Var::BytesSent),
    ("request_length", Var::RequestLength),
    ("upstream_addr", Var::UpstreamAddr),
    ("squid_result", Var::SquidResult),
    ("hierarchy", Var::Hierarchy),
    ("sent_http_content_type", Var::ContentType),
    ("http_referer", Var::Referer),
    ("http_user_agent", Var::UserAgent),
    ("proxy_status", Var::ProxyStatus),
    ("rule", Var::Rule),
    ("request_id", Var::RequestId),
];

/// Why a template was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    /// The unknown name, for a did-you-mean hint.
    pub unknown: Option<String>,
}

impl Template {
    /// `$name` or `${name}` (when a letter follows) is a variable, `$$` a
    /// dollar sign; the rest is copied as it is.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let Some(end) = braced.find('}') else {
                    return Err(TemplateError {
                        message: "`${` without its closing `}`".into(),
                        unknown: None,
                    });
                };
                (&braced[..end], &braced[end + 1..])
            } else if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
                continue;
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(TemplateError {
                    message: "`$` without a variable name (write `$$` for a dollar sign)".into(),
                    unknown: None,
                });
            }
            let Some(&(_, var)) = VARIABLES.iter().find(|(n, _)| *n == name) else {
                return Err(TemplateError {
                    message: format!("unknown variable `${name}`"),
                    unknown: Some(name.to_string()),
                });
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Var(var));
            rest = tail;
        }
        literal.push_str(rest);
        if literal.contains(['\n', '\r']) {
            return Err(TemplateError {
                message: "a log template is one line".into(),
                unknown: None,
            });
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces.into()))
    }

    /// The variable names, for did-you-mean hints.
    pub fn names() -> Vec<&'static str> {
        VARIABLES.iter().map(|(n, _)| *n).collect()
    }

    /// Whether the request's Referer and User-Agent must be kept for the log.
    pub fn wants_request_fields(&self) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, Piece::Var(Var::Referer | Var::UserAgent)))
    }

    /// One log line (with its newline). Text from the request is escaped as
    /// in the combined format (`"` and `\` with a backslash, `\n`, `\r`,
    /// `\t`, other control characters as `\xHH`), so no field can forge
    /// another or end the line; an absent value is `-`.
    pub fn render(&self, e: &RequestCtx, duration: Duration) -> String {
        let mut out = String::with_capacity(200);
        for piece in self.0.iter() {
            let var = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Var(v) => *v,
            };
            let since_epoch = || {
                e.start
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
            };
            let _ = match var {
                Var::TimeLocal => write!(out, "{}", time::clf_date(e.start)),
                Var::TimeIso8601 => write!(out, "{}", time::rfc3339(e.start)),
                Var::Msec => {
                    let t = since_epoch();
                    write!(out, "{}.{:03}", t.as_secs(), t.subsec_millis())
                }
                Var::RequestTime => write!(
                    out,
                    "{}.{:03}",
                    duration.as_secs(),
                    duration.subsec_millis()
                ),
                Var::DurationMs => write!(out, "{}", duration.as_millis()),
                Var::RemoteAddr => write!(out, "{}", e.client.ip()),
                Var::RemotePort => write!(out, "{}", e.client.port()),
                Var::RemoteUser => word(&mut out, e.user.as_deref()),
                Var::Listener => word(&mut out, Some(&e.listener)),
                Var::RequestMethod => word(&mut out, Some(&e.method)),
                Var::RequestUri => word(&mut out, Some(&e.url)),
                Var::ServerProtocol => write!(out, "{}", e.version),
                Var::Status => write!(out, "{}", e.status),
                Var::BytesSent => write!(out, "{}", e.bytes_out),
                Var::RequestLength => write!(out, "{}", e.bytes_in),
                Var::UpstreamAddr => match e.upstream {
                    Some(a) => write!(out, "{a}"),
                    None => write!(out, "-"),
                },
                Var::SquidResult => write!(out, "{}", super::access_log::squid_result(e)),
                Var::Hierarchy => match e.upstream {
                    Some(a) => write!(out, "HIER_DIRECT/{}", a.ip()),
                    None => write!(out, "HIER_NONE/-"),
                },
                Var::ContentType => text(&mut out, e.content_type.as_deref()),
                Var::Referer => text(&mut out, e.referer.as_deref()),
                Var::UserAgent => text(&mut out, e.user_agent.as_deref()),
                Var::ProxyStatus => text(&mut out, e.error),
                Var::Rule => text(&mut out, e.rule.as_deref()),
                Var::RequestId => text(&mut out, e.request_id.as_deref()),
            };
        }
        out.push('\n');
        out
    }
}

/// A value that is one word in every format (a user name, a method, a
/// URL): spaces percent-encoded as well, as the squid format writes them,
/// so it cannot pass for several fields when the template leaves it unquoted.
fn word(out: &mut String, value: Option<&str>) -> std::fmt::Result {
    text(out, value.map(super::access_log::field).as_deref())
}

/// A value from the request or configuration, escaped as in the combined
/// format; `-` when absent or empty.
fn text(out: &mut String, value: Option<&str>) -> std::fmt::Result {
    match value {
        Some(v) if !v.is_empty() => out.push_str(&super::access_log::clf_escape(v)),
        _ => out.push('-'),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> RequestCtx {
        let listener: Arc<str> = "proxy".into();
        let mut e = RequestCtx::new("192.0.2.7:40000".parse().unwrap(), &listener);
        e.start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        e.method = "GET".into();
        e.url = "http://example.com/a\"b".into();
        e.status = 200;
        e.bytes_in = 80;
        e.bytes_out = 1234;
        e.upstream = Some("198.51.100.1:80".parse().unwrap());
        e.user_agent = Some("curl/8\n".into());
        e
    }

    #[test]
    fn variables_are_filled_and_text_escaped() {
        let t = Template::parse(
            "$remote_addr:$remote_port $remote_user \"$request_method $request_uri $server_protocol\" $status ${bytes_sent}B $request_length $msec $request_time $upstream_addr $squid_result $hierarchy \"$http_user_agent\" $http_referer $$",
        )
        .unwrap();
        let line = t.render(&entry(), Duration::from_millis(45));
        assert_eq!(
            line,
            "192.0.2.7:40000 - \"GET http://example.com/a\\\"b HTTP/1.1\" 200 1234B 80 1700000000.123 0.045 198.51.100.1:80 TCP_MISS HIER_DIRECT/198.51.100.1 \"curl/8\\n\" - $\n"
        );
        assert!(t.wants_request_fields());
        // A user name with spaces cannot pass for several fields.
        let mut e = entry();
        e.user = Some("eve - [01/Jan/2020".into());
        let line = Template::parse("$remote_user [$status]")
            .unwrap()
            .render(&e, Duration::ZERO);
        assert_eq!(line, "eve%20-%20[01/Jan/2020 [200]\n");
        assert!(!Template::parse("$status").unwrap().wants_request_fields());
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let e = Template::parse("$remote_adr $status").unwrap_err();
        assert_eq!(e.message, "unknown variable `$remote_adr`");
        assert_eq!(e.unknown.as_deref(), Some("remote_adr"));
        assert!(Template::parse("${status").is_err());
        assert!(Template::parse("cost: $ 5").is_err());
        assert!(Template::parse("a\nb").is_err());
        assert!(Template::parse("${}").is_err());
    }
}
