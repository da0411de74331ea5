//! What the proxy port answers to requests addressed to itself (origin-form):
//! a short page saying what this is and how to use it.

use crate::context::RequestCtx;
use crate::error::{ErrorKind, ProxyError};
use crate::http1::RequestHead;

/// The response bytes for an origin-form request to the proxy port.
pub fn respond(
    head: &RequestHead,
    local: std::net::SocketAddr,
    ctx: &mut RequestCtx,
    keep_alive: bool,
) -> Result<Vec<u8>, ProxyError> {
    let is_head = head.is_method("HEAD");
    if !(is_head || head.is_method("GET")) {
        return Err(ProxyError::new(
            ErrorKind::MethodNotAllowed,
            "this address is a proxy; send requests for other sites in absolute form (http://host/path)",
        ));
    }
    let path = head.target().split('?').next().unwrap_or("/");
    if path != "/" {
        let body = "Not found on this proxy. Configure this address as your HTTP proxy instead.\n";
        return Ok(build(
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            body,
            is_head,
            keep_alive,
            ctx,
        ));
    }
    let version = env!("CARGO_PKG_VERSION");
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Postern proxy</title></head>\n<body><h1>Postern {version}</h1>\n<p>This is a proxy server. To use it, set your browser's or program's HTTP and HTTPS proxy to <code>http://{local}</code>, for example:</p>\n<pre>curl -x http://{local} http://example.com/\nexport http_proxy=http://{local} https_proxy=http://{local}</pre>\n</body></html>\n"
    );
    Ok(build(
        200,
        "OK",
        "text/html; charset=utf-8",
        &body,
        is_head,
        keep_alive,
        ctx,
    ))
}

fn build(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    is_head: bool,
    keep_alive: bool,
    ctx: &mut RequestCtx,
) -> Vec<u8> {
    ctx.status = status;
    ctx.result = "TCP_MISS";
    ctx.content_type = Some(content_type.to_string());
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
