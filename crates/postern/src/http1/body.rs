//! Streaming of message bodies from one hop to the next (RFC 9112 §6–§7).
//!
//! Bodies are never buffered whole: bytes move through the source's read buffer
//! and a small coalescing write buffer. Chunked bodies are decoded strictly and
//! re-encoded, so chunk extensions and malformed framing never reach the next hop.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::guard::limits::Bucket;
use crate::reverse::compress::Gzip;

/// How a received body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// How the body is delimited towards the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    /// Bytes as they are (Content-Length or close-delimited on the way out).
    Raw,
    Chunked,
}

#[derive(Debug)]
pub enum BodyError {
    /// Reading from the sender failed or it closed early.
    Read(io::Error),
    ReadTimeout,
    /// The sender's framing is broken (bad chunk size, missing CRLF, ...).
    Malformed(&'static str),
    /// Writing to the receiver failed.
    Write(io::Error),
    WriteTimeout,
    /// More than the configured response size: the stream is cut.
    TooLarge,
}

impl BodyError {
    pub fn is_read_side(&self) -> bool {
        matches!(
            self,
            BodyError::Read(_) | BodyError::ReadTimeout | BodyError::Malformed(_)
        )
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "read failed: {e}"),
            BodyError::ReadTimeout => write!(f, "read timed out"),
            BodyError::Malformed(m) => write!(f, "malformed body: {m}"),
            BodyError::Write(e) => write!(f, "write failed: {e}"),
            BodyError::WriteTimeout => write!(f, "write timed out"),
            BodyError::TooLarge => write!(f, "larger than allowed"),
        }
    }
}

/// The reading side of a hop: a stream and the bytes already read from it.
pub struct Source<'a, R> {
    pub io: &'a mut R,
    pub buf: &'a mut BytesMut,
    pub timeout: Duration,
}

const READ_CHUNK: usize = 64 * 1024;
const FLUSH_AT: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

impl<R: AsyncRead + Unpin> Source<'_, R> {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> Result<usize, BodyError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_CHUNK);
        }
        match crate::deadline::within(self.timeout, self.io.read_buf(self.buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(BodyError::Read(e)),
            Err(_) => Err(BodyError::ReadTimeout),
        }
    }

    async fn fill_or_eof(&mut self) -> Result<(), BodyError> {
        match self.fill().await? {
            0 => Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into())),
            _ => Ok(()),
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF) from the buffer.
    async fn line(
        &mut self,
        sink: &mut Sink<'_, impl AsyncWrite + Unpin>,
    ) -> Result<BytesMut, BodyError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', self.buf) {
                if i == 0 || self.buf[i - 1] != b'\r' {
                    return Err(BodyError::Malformed("bare LF in chunked framing"));
                }
                let mut line = self.buf.split_to(i + 1);
                line.truncate(i - 1);
                return Ok(line);
            }
            if self.buf.len() > MAX_CHUNK_LINE {
                return Err(BodyError::Malformed("chunk line too long"));
            }
            sink.sync_encoder();
            sink.flush().await?;
            self.fill_or_eof().await?;
        }
    }
}

/// The writing side of a hop, coalescing small writes (a head and a short body
/// go out in one system call).
pub struct Sink<'a, W> {
    pub io: &'a mut W,
    pub pending: Vec<u8>,
    pub timeout: Duration,
    /// Bytes written to the stream so far.
    pub written: u64,
    /// At most this many bytes may be written in all (head included).
    pub budget: Option<u64>,
    /// Bandwidth buckets each write waits on.
    pub throttle: &'a [Arc<Bucket>],
    /// A copy of the payload (for the cache), while it fits.
    pub tap: Option<Tap>,
    /// Payload gzip-encoded on the way, sent as chunks (the caller sends
    /// the rest of the body `Raw`). One field, boxed: a body that is not
    /// encoded pays a null test.
    pub gzip: Option<Box<Encoding>>,
}

/// A body gzip-encoded by a [`Sink`].
pub struct Encoding {
    gz: Gzip,
    /// At most this many payload bytes (before encoding).
    payload_budget: Option<u64>,
    payload_seen: u64,
    /// Trailer lines (with their CRLFs) held for the end of the body.
    trailers: Vec<u8>,
}

impl Encoding {
    /// `max`: the response size limit, counted before encoding.
    pub fn new(gz: Gzip, max: Option<u64>) -> Box<Encoding> {
        Box::new(Encoding {
            gz,
            payload_budget: max,
            payload_seen: 0,
            trailers: Vec::new(),
        })
    }
}

/// `data` as one chunk onto `out` (none when empty: that would end the body).
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Payload bytes kept while they pass, up to a limit.
#[derive(Debug, Default)]
pub struct Tap {
    pub bytes: Vec<u8>,
    pub limit: usize,
    /// The payload passed the limit: what was kept is incomplete.
    pub overflowed: bool,
}

impl<'a, W: AsyncWrite + Unpin> Sink<'a, W> {
    pub fn new(io: &'a mut W, pending: Vec<u8>, timeout: Duration) -> Self {
        Sink {
            io,
            pending,
            timeout,
            written: 0,
            budget: None,
            throttle: &[],
            tap: None,
            gzip: None,
        }
    }

    /// Payload bytes (not framing): copied to the tap, then written.
    async fn payload(&mut self, data: &[u8]) -> Result<(), BodyError> {
        if let Some(tap) = &mut self.tap
            && !tap.overflowed
        {
            if tap.bytes.len() + data.len() > tap.limit {
                tap.overflowed = true;
                tap.bytes = Vec::new();
            } else {
                tap.bytes.extend_from_slice(data);
            }
        }
        if let Some(enc) = &mut self.gzip {
            enc.payload_seen += data.len() as u64;
            if enc.payload_budget.is_some_and(|b| enc.payload_seen > b) {
                return Err(BodyError::TooLarge);
            }
            let out = enc.gz.push(data);
            push_chunk(&mut self.pending, &out);
            if self.pending.len() < FLUSH_AT {
                return Ok(());
            }
            return self.flush().await;
        }
        self.put(data).await
    }

    /// The end of a gzip-encoded body: the stream's last bytes, the last
    /// chunk and the trailers.
    fn finish_gzip(&mut self) {
        if let Some(mut enc) = self.gzip.take() {
            let out = enc.gz.finish();
            push_chunk(&mut self.pending, &out);
            self.pending.extend_from_slice(b"0\r\n");
            self.pending.extend_from_slice(&enc.trailers);
            self.pending.extend_from_slice(b"\r\n");
        }
    }

    /// Enforces the budget and the bandwidth limits before `n` bytes go out.
    async fn admit(&self, n: usize) -> Result<(), BodyError> {
        if self.budget.is_some_and(|b| self.written + n as u64 > b) {
            return Err(BodyError::TooLarge);
        }
        for bucket in self.throttle {
            let wait = bucket.take(n);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    /// Before waiting for more from the sender: what an encoder holds is
    /// made ready to go out with the next flush.
    fn sync_encoder(&mut self) {
        if let Some(enc) = &mut self.gzip {
            let out = enc.gz.flush();
            push_chunk(&mut self.pending, &out);
        }
    }

    /// Writes what is pending.
    pub async fn flush(&mut self) -> Result<(), BodyError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.admit(self.pending.len()).await?;
        let res = crate::deadline::within(self.timeout, self.io.write_all(&self.pending)).await;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BodyError::Write(e)),
            Err(_) => Err(BodyError::WriteTimeout),
        }
    }

    async fn put(&mut self, data: &[u8]) -> Result<(), BodyError> {
        if self.pending.len() + data.len() <= FLUSH_AT {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        self.flush().await?;
        if data.len() < FLUSH_AT / 4 {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        self.admit(data.len()).await?;
        let res = crate::deadline::within(self.timeout, self.io.write_all(data)).await;
        self.written += data.len() as u64;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BodyError::Write(e)),
            Err(_) => Err(BodyError::WriteTimeout),
        }
    }
}

/// What a relayed body carried.
#[derive(Debug, Default, Clone, Copy)]
pub struct BodyStats {
    /// Payload bytes (after removing chunked framing).
    pub payload: u64,
}

/// Moves one body from `src` to `sink`, then flushes the sink.
pub async fn relay<R, W>(
    src: &mut Source<'_, R>,
    sink: &mut Sink<'_, W>,
    kind: BodyKind,
    out: OutFraming,
    max_trailer: usize,
) -> Result<BodyStats, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let stats = match kind {
        BodyKind::None => BodyStats::default(),
        BodyKind::Length(n) => relay_exact(src, sink, n, out, true).await?,
        BodyKind::UntilClose => relay_until_close(src, sink, out).await?,
        BodyKind::Chunked => relay_chunked(src, sink, out, max_trailer).await?,
    };
    if out == OutFraming::Chunked && kind != BodyKind::Chunked && kind != BodyKind::None {
        sink.put(b"0\r\n\r\n").await?;
    }
    sink.finish_gzip();
    sink.flush().await?;
    Ok(stats)
}

/// Copies exactly `n` bytes, optionally as one chunk per piece.
async fn relay_exact<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    src: &mut Source<'_, R>,
    sink: &mut Sink<'_, W>,
    n: u64,
    out: OutFraming,
    frame_pieces: bool,
) -> Result<BodyStats, BodyError> {
    let mut left = n;
    while left > 0 {
        if src.buf.is_empty() {
            sink.sync_encoder();
            sink.flush().await?;
            src.fill_or_eof().await?;
        }
        let take = (src.buf.len() as u64).min(left) as usize;
        if frame_pieces && out == OutFraming::Chunked {
            sink.put(format!("{take:x}\r\n").as_bytes()).await?;
        }
        sink.payload(&src.buf[..take]).await?;
        if frame_pieces && out == OutFraming::Chunked {
            sink.put(b"\r\n").await?;
        }
        src.buf.advance(take);
        left -= take as u64;
    }
    Ok(BodyStats { payload: n })
}

async fn relay_until_close<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    src: &mut Source<'_, R>,
    sink: &mut Sink<'_, W>,
    out: OutFraming,
) -> Result<BodyStats, BodyError> {
    let mut total = 0u64;
    loop {
        if src.buf.is_empty() {
            sink.sync_encoder();
            sink.flush().await?;
            if src.fill().await? == 0 {
                return Ok(BodyStats { payload: total });
            }
        }
        let n = src.buf.len();
        if out == OutFraming::Chunked {
            sink.put(format!("{n:x}\r\n").as_bytes()).await?;
        }
        sink.payload(&src.buf[..n]).await?;
        if out == OutFraming::Chunked {
            sink.put(b"\r\n").await?;
        }
        src.buf.advance(n);
        total += n as u64;
    }
}

/// RFC 9112 §7.1: `chunk-size [ chunk-ext ] CRLF chunk-data CRLF`, ending with
/// `0 CRLF trailer-section CRLF`.
async fn relay_chunked<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    src: &mut Source<'_, R>,
    sink: &mut Sink<'_, W>,
    out: OutFraming,
    max_trailer: usize,
) -> Result<BodyStats, BodyError> {
    let mut total = 0u64;
    loop {
        let line = src.line(sink).await?;
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            break;
        }
        if out == OutFraming::Chunked {
            sink.put(format!("{size:x}\r\n").as_bytes()).await?;
        }
        relay_exact(src, sink, size, out, false).await?;
        total += size;
        while src.buf.len() < 2 {
            sink.sync_encoder();
            sink.flush().await?;
            src.fill_or_eof().await?;
        }
        if &src.buf[..2] != b"\r\n" {
            return Err(BodyError::Malformed("chunk data not followed by CRLF"));
        }
        src.buf.advance(2);
        if out == OutFraming::Chunked {
            sink.put(b"\r\n").await?;
        }
    }
    // Trailer section: header fields, each checked like a header line.
    if out == OutFraming::Chunked {
        sink.put(b"0\r\n").await?;
    }
    let mut trailer_bytes = 0usize;
    loop {
        let line = src.line(sink).await?;
        if line.is_empty() {
            break;
        }
        trailer_bytes += line.len() + 2;
        if trailer_bytes > max_trailer {
            return Err(BodyError::Malformed("trailer section too large"));
        }
        check_trailer_field(&line)?;
        if is_forbidden_trailer(&line) {
            continue;
        }
        if out == OutFraming::Chunked {
            sink.put(&line).await?;
            sink.put(b"\r\n").await?;
        } else if let Some(enc) = &mut sink.gzip {
            // They follow the encoded body's last chunk, but for digests of
            // the bytes as the server sent them.
            let name = line[..].split(|b| *b == b':').next().unwrap_or(&[]);
            let name = crate::http1::fields::trim(name);
            if crate::reverse::compress::CHANGED_BY_ENCODING
                .iter()
                .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
            {
                continue;
            }
            enc.trailers.extend_from_slice(&line);
            enc.trailers.extend_from_slice(b"\r\n");
        }
    }
    if out == OutFraming::Chunked {
        sink.put(b"\r\n").await?;
    }
    Ok(BodyStats { payload: total })
}

/// Parses `1*HEXDIG [ chunk-ext ]`; extensions are checked and dropped.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Malformed("missing chunk size"));
    }
    // Leading zeros are allowed (chunk-size = 1*HEXDIG); the value must fit.
    let significant = line[..digits].iter().skip_while(|b| **b == b'0').count();
    if significant > 15 {
        return Err(BodyError::Malformed("chunk size too large"));
    }
    let mut size = 0u64;
    for b in &line[..digits] {
        size = size * 16 + u64::from((*b as char).to_digit(16).unwrap_or(0));
    }
    let rest = &line[digits..];
    let rest_trimmed = super::fields::trim(rest);
    if !rest_trimmed.is_empty() {
        // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
        if rest_trimmed[0] != b';' {
            return Err(BodyError::Malformed("invalid character after chunk size"));
        }
        if rest
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err(BodyError::Malformed("control character in chunk extension"));
        }
    } else if !rest.is_empty() {
        return Err(BodyError::Malformed("whitespace after chunk size"));
    }
    Ok(size)
}

fn check_trailer_field(line: &[u8]) -> Result<(), BodyError> {
    let Some(colon) = memchr::memchr(b':', line) else {
        return Err(BodyError::Malformed("trailer field without colon"));
    };
    let name = &line[..colon];
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(token) {
        return Err(BodyError::Malformed("invalid trailer field name"));
    }
    if line[colon + 1..]
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err(BodyError::Malformed("control character in trailer field"));
    }
    Ok(())
}

/// RFC 9110 §6.5.1: framing, routing and authentication fields are not allowed
/// in trailers; they are dropped rather than forwarded.
fn is_forbidden_trailer(line: &[u8]) -> bool {
    let name = line.split(|b| *b == b':').next().unwrap_or(b"");
    [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "proxy-authorization",
        "proxy-authenticate",
        "trailer",
        "te",
    ]
    .iter()
    .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &[u8], kind: BodyKind, out: OutFraming) -> Result<Vec<u8>, String> {
        let mut reader = input;
        let mut buf = BytesMut::new();
        let mut output: Vec<u8> = Vec::new();
        let mut src = Source {
            io: &mut reader,
            buf: &mut buf,
            timeout: Duration::from_secs(5),
        };
        let mut sink = Sink::new(&mut output, Vec::new(), Duration::from_secs(5));
        relay(&mut src, &mut sink, kind, out, 1024)
            .await
            .map_err(|e| e.to_string())?;
        drop(sink);
        Ok(output)
    }

    #[tokio::test]
    async fn chunked_is_rechunked_and_extensions_dropped() {
        let input =
            b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\nContent-Length: 5\r\n\r\n";
        let out = run(input, BodyKind::Chunked, OutFraming::Chunked)
            .await
            .unwrap();
        assert_eq!(out, b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n");
        let out = run(input, BodyKind::Chunked, OutFraming::Raw)
            .await
            .unwrap();
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\nhello\r\n0\r\n\r\n"[..],
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nhel",
            b"0\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                run(bad, BodyKind::Chunked, OutFraming::Chunked)
                    .await
                    .is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunk_sizes_may_have_leading_zeros_but_must_fit() {
        assert_eq!(parse_chunk_size(b"00000000000000000005").ok(), Some(5));
        assert_eq!(parse_chunk_size(b"0").ok(), Some(0));
        assert_eq!(parse_chunk_size(b"000").ok(), Some(0));
        assert_eq!(
            parse_chunk_size(b"0fffffffffffffff").ok(),
            Some(0xfff_ffff_ffff_ffff)
        );
        assert!(parse_chunk_size(b"1000000000000000").is_err());
    }

    #[tokio::test]
    async fn length_and_close_delimited() {
        let out = run(b"abcdefgh", BodyKind::Length(3), OutFraming::Raw)
            .await
            .unwrap();
        assert_eq!(out, b"abc");
        assert!(
            run(b"ab", BodyKind::Length(3), OutFraming::Raw)
                .await
                .is_err()
        );
        let out = run(b"abc", BodyKind::UntilClose, OutFraming::Chunked)
            .await
            .unwrap();
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
    }
}
