//! Errors the proxy answers itself, and the responses that carry them: a status,
//! a short page naming the cause, and `Proxy-Status` (RFC 9209).

use std::fmt::Write as _;

/// Every reason the proxy produces a response of its own. Each maps to a status,
/// an RFC 9209 error type and a Squid result code for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    UriTooLong,
    HeaderTooLarge,
    RequestTimeout,
    VersionNotSupported,
    NotImplemented,
    MethodNotAllowed,
    /// Refused by the access rules.
    Denied,
    /// A port or method the safe defaults refuse.
    PortNotAllowed,
    DestinationProhibited,
    DnsError,
    DnsTimeout,
    ConnectionRefused,
    ConnectionTimeout,
    DestinationUnavailable,
    /// The next hop closed or reset the connection before a complete response.
    UpstreamTerminated,
    UpstreamTimeout,
    BadResponse,
    ResponseHeaderTooLarge,
    /// Proxy authentication required (407).
    AuthRequired,
    /// The auth program could not check the credentials (503).
    AuthUnavailable,
    /// A request or connection rate limit (429).
    RateLimited,
    ConnectionLimit,
    /// The request's destination is on a blocklist.
    Blocked,
    /// The response's type or size is refused by the content rules.
    ContentDenied,
    ResponseTooLarge,
    /// `only-if-cached` and nothing usable stored (RFC 9111 §5.2.1.7).
    NotCached,
    /// Reverse listener: no route for the request.
    NoRoute,
    /// Reverse listener: no server of the pool may take the request.
    NoServer,
    /// Reverse listener: every server is at its limit and the queue is full
    /// or the wait timed out.
    QueueFull,
}

impl ErrorKind {
    /// The next hop failed (not the client, not the policy).
    pub fn is_upstream(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            DnsError
                | DnsTimeout
                | ConnectionRefused
                | ConnectionTimeout
                | DestinationUnavailable
                | UpstreamTerminated
                | UpstreamTimeout
                | BadResponse
                | NoServer
        )
    }

    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            BadRequest => 400,
            UriTooLong => 414,
            HeaderTooLarge => 431,
            RequestTimeout => 408,
            VersionNotSupported => 505,
            NotImplemented => 501,
            MethodNotAllowed => 405,
            Denied | PortNotAllowed | DestinationProhibited | Blocked | ContentDenied => 403,
            AuthRequired => 407,
            NoRoute => 404,
            NoServer | QueueFull | AuthUnavailable => 503,
            NotCached => 504,
            RateLimited | ConnectionLimit => 429,
            DnsError
            | ConnectionRefused
            | DestinationUnavailable
            | UpstreamTerminated
            | BadResponse
            | ResponseHeaderTooLarge
            | ResponseTooLarge => 502,
            DnsTimeout | ConnectionTimeout | UpstreamTimeout => 504,
        }
    }

    /// The RFC 9209 §2.3 error type.
    pub fn proxy_status(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadRequest | UriTooLong | HeaderTooLarge | RequestTimeout | VersionNotSupported
            | NotImplemented | MethodNotAllowed => "http_request_error",
            Denied | PortNotAllowed | AuthRequired | RateLimited | Blocked | ContentDenied => {
                "http_request_denied"
            }
            ConnectionLimit | QueueFull => "connection_limit_reached",
            AuthUnavailable => "proxy_internal_error",
            NoRoute => "destination_not_found",
            NoServer | NotCached => "destination_unavailable",
            ResponseTooLarge => "http_response_body_size",
            DestinationProhibited => "destination_ip_prohibited",
            DnsError => "dns_error",
            DnsTimeout => "dns_timeout",
            ConnectionRefused => "connection_refused",
            ConnectionTimeout => "connection_timeout",
            DestinationUnavailable => "destination_unavailable",
            UpstreamTerminated => "connection_terminated",
            UpstreamTimeout => "connection_read_timeout",
            BadResponse => "http_protocol_error",
            ResponseHeaderTooLarge => "http_response_header_section_size",
        }
    }

    /// Squid's result code, so Squid log tools read our access log.
    pub fn squid_code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Denied
            | PortNotAllowed
            | DestinationProhibited
            | AuthRequired
            | AuthUnavailable
            | RateLimited
            | ConnectionLimit
            | Blocked
            | ContentDenied => "TCP_DENIED",
            BadRequest | UriTooLong | HeaderTooLarge | RequestTimeout | VersionNotSupported
            | NotImplemented | MethodNotAllowed => "NONE_NONE",
            _ => "TCP_MISS",
        }
    }

    fn title(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadRequest => "The request is malformed",
            UriTooLong => "The request line is too long",
            HeaderTooLarge => "The request header section is too large",
            RequestTimeout => "The request was not received in time",
            VersionNotSupported => "This HTTP version is not supported",
            NotImplemented => "This request is not supported by the proxy",
            MethodNotAllowed => "Method not allowed here",
            Denied => "Access denied",
            PortNotAllowed => "Destination port not allowed",
            DestinationProhibited => "Destination address not allowed",
            DnsError => "The destination name could not be resolved",
            DnsTimeout => "Resolving the destination name timed out",
            ConnectionRefused => "The destination refused the connection",
            ConnectionTimeout => "Connecting to the destination timed out",
            DestinationUnavailable => "The destination could not be reached",
            UpstreamTerminated => "The destination closed the connection early",
            UpstreamTimeout => "The destination did not answer in time",
            BadResponse => "The destination sent an invalid response",
            ResponseHeaderTooLarge => "The destination's response header is too large",
            AuthRequired => "Proxy authentication required",
            AuthUnavailable => "The proxy could not check the credentials",
            RateLimited => "Too many requests",
            ConnectionLimit => "Too many connections from this address",
            Blocked => "Blocked destination",
            ContentDenied => "This content is not allowed",
            ResponseTooLarge => "The response is larger than this proxy allows",
            NoRoute => "No site is configured for this address",
            NotCached => "Not in the cache, and only-if-cached",
            NoServer => "No server is available for this site",
            QueueFull => "All servers for this site are busy",
        }
    }
}

/// A proxy-generated failure: what happened and a detail for the page and log.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub detail: String,
    /// What a rule or limit adds to the standard page (rare, so boxed).
    pub answer: Option<Box<Answer>>,
}

/// Changes to the standard error response.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// A configured status instead of the kind's.
    pub status: Option<u16>,
    /// A configured message shown instead of the kind's title.
    pub message: Option<String>,
    /// Extra fields (`Proxy-Authenticate`, `Retry-After`, `Location`).
    pub fields: Vec<(&'static str, String)>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> ProxyError {
        ProxyError {
            kind,
            detail: detail.into(),
            answer: None,
        }
    }

    pub fn with_answer(mut self, answer: Answer) -> ProxyError {
        self.answer = Some(Box::new(answer));
        self
    }

    /// The status actually sent.
    pub fn status(&self) -> u16 {
        self.answer
            .as_ref()
            .and_then(|a| a.status)
            .unwrap_or(self.kind.status())
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    // RFC 9110 §15 (and the codes registered since that proxies meet).
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        // Unregistered codes: the name of their class.
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// How an error page is sent.
#[derive(Debug, Clone, Copy)]
pub struct PageStyle {
    /// HTML, or plain text for clients whose Accept excludes HTML.
    pub html: bool,
    /// The request was HEAD: the head only (RFC 9110 §9.3.2).
    pub head_only: bool,
    /// Value of a `Connection` field to add (`close`, or `keep-alive` for
    /// HTTP/1.0 clients whose connection persists).
    pub connection: Option<&'static str>,
}

/// The page for an error: content type and body (HTML, or plain text).
/// The operator's HTML for error pages (`[http] error_page`), with
/// `{status}`, `{reason}`, `{title}`, `{detail}`, `{error}` and `{proxy}` in
/// it; any other braces (CSS, scripts) are left as they are.
#[derive(Debug, Clone)]
pub struct PageTemplate(std::sync::Arc<[PagePiece]>);

#[derive(Debug)]
pub enum PagePiece {
    Text(String),
    Status,
    Reason,
    Title,
    Detail,
    Error,
    Proxy,
}

/// The largest error page file taken.
const MAX_PAGE: u64 = 256 * 1024;

impl PageTemplate {
    pub fn load(path: &std::path::Path) -> Result<PageTemplate, String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PAGE + 1).read_to_string(&mut text))
            .map_err(|e| format!("cannot read the error page {}: {e}", path.display()))?;
        if text.len() as u64 > MAX_PAGE {
            return Err(format!(
                "the error page {} is larger than {} KiB",
                path.display(),
                MAX_PAGE / 1024
            ));
        }
        Ok(PageTemplate::parse(&text))
    }

    pub fn parse(text: &str) -> PageTemplate {
        const NAMES: [&str; 6] = [
            "{status}", "{reason}", "{title}", "{detail}", "{error}", "{proxy}",
        ];
        let piece = |name: &str| match name {
            "{status}" => PagePiece::Status,
            "{reason}" => PagePiece::Reason,
            "{title}" => PagePiece::Title,
            "{detail}" => PagePiece::Detail,
            "{error}" => PagePiece::Error,
            _ => PagePiece::Proxy,
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('{') {
            literal.push_str(&rest[..at]);
            rest = &rest[at..];
            match NAMES.iter().find(|name| rest.starts_with(*name)) {
                Some(name) => {
                    if !literal.is_empty() {
                        pieces.push(PagePiece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece(name));
                    rest = &rest[name.len()..];
                }
                None => {
                    literal.push('{');
                    rest = &rest[1..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(PagePiece::Text(literal));
        }
        PageTemplate(pieces.into())
    }
}

pub fn page_body(
    err: &ProxyError,
    html: bool,
    proxy_name: &str,
    template: Option<&PageTemplate>,
) -> (&'static str, String) {
    let status = err.status();
    let reason = reason_phrase(status);
    let title = err
        .answer
        .as_ref()
        .and_then(|a| a.message.as_deref())
        .unwrap_or(err.kind.title());
    if let (true, Some(template)) = (html, template) {
        let mut page = String::with_capacity(4096);
        for piece in template.0.iter() {
            match piece {
                PagePiece::Text(t) => page.push_str(t),
                PagePiece::Status => page.push_str(&status.to_string()),
                PagePiece::Reason => page.push_str(reason),
                PagePiece::Title => page.push_str(&escape(title)),
                PagePiece::Detail => page.push_str(&escape(&err.detail)),
                PagePiece::Error => page.push_str(err.kind.proxy_status()),
                PagePiece::Proxy => page.push_str(&escape(proxy_name)),
            }
        }
        return ("text/html; charset=utf-8", page);
    }
    if html {
        (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1>\n<p>{}.</p>\n<p>{}</p>\n<hr><address>{}</address></body></html>\n",
                escape(title),
                escape(&err.detail),
                escape(proxy_name)
            ),
        )
    } else {
        (
            "text/plain; charset=utf-8",
            format!("{status} {reason}\n{title}.\n{}\n", sf_string(&err.detail)),
        )
    }
}

/// The `Proxy-Status` value (RFC 9209) for an error.
pub fn proxy_status_value(err: &ProxyError, proxy_name: &str) -> String {
    format!(
        "{}; error={}; details=\"{}\"",
        sf_token(proxy_name),
        err.kind.proxy_status(),
        sf_string(&err.detail)
    )
}

/// The complete response for an error: head and body, ready to write.
pub fn error_response(
    err: &ProxyError,
    style: PageStyle,
    proxy_name: &str,
    template: Option<&PageTemplate>,
) -> Vec<u8> {
    let status = err.status();
    let reason = reason_phrase(status);
    let (content_type, body) = page_body(err, style.html, proxy_name, template);
    let mut out = String::with_capacity(body.len() + 256);
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nDate: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nProxy-Status: {}\r\n",
        crate::observe::time::http_date(std::time::SystemTime::now()),
        body.len(),
        proxy_status_value(err, proxy_name),
    );
    for (name, value) in err.answer.iter().flat_map(|a| &a.fields) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if let Some(connection) = style.connection {
        out.push_str("Connection: ");
        out.push_str(connection);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !style.head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 8941 sf-string content: printable ASCII with `"` and `\` escaped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// RFC 8941 sf-token for the proxy's name in Proxy-Status.
fn sf_token(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(*c))
        .collect();
    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_alphabetic()) {
        "postern".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_page_has_status_and_proxy_status() {
        let e = ProxyError::new(
            ErrorKind::DestinationProhibited,
            "127.0.0.1 is a loopback address <x>",
        );
        let style = PageStyle {
            html: true,
            head_only: false,
            connection: Some("close"),
        };
        let bytes = error_response(&e, style, "postern", None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("Proxy-Status: postern; error=destination_ip_prohibited; details=\"127.0.0.1 is a loopback address <x>\"\r\n"));
        assert!(text.contains("&lt;x&gt;"));
        assert!(text.contains("Connection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let plain = PageStyle {
            html: false,
            head_only: false,
            connection: None,
        };
        let plain = String::from_utf8(error_response(&e, plain, "postern", None)).unwrap();
        assert!(plain.contains("Content-Type: text/plain"));
        assert!(!plain.contains("Connection: close"));
        // RFC 9110 §9.3.2: a response to HEAD has the same head and no body.
        let head = PageStyle {
            head_only: true,
            ..style
        };
        let head = String::from_utf8(error_response(&e, head, "postern", None)).unwrap();
        assert!(
            head.ends_with("\r\n\r\n") && head.contains(&format!("Content-Length: {}", body.len()))
        );
    }
}
