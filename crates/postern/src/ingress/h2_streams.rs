//! RFC 9113 §5.1 for client streams, enforced under hyper.
//!
//! The h2 crate forgets a stream once both sides have ended it. A client
//! that then sends DATA or HEADERS on it gets only RST_STREAM, and its
//! connection stays open. RFC 9113 §5.1 lets a closed stream's frames be
//! treated as a connection error of type STREAM_CLOSED, and RFC 7540 §5.1
//! required it.
//!
//! `StreamStates` wraps the connection's byte stream. It reads the frame
//! headers going both ways and tracks each client stream. It ends the
//! connection when the client sends DATA or HEADERS on a stream that closed
//! normally: a GOAWAY with STREAM_CLOSED goes out if the write side is
//! between two of h2's frames (§5.4.1 says SHOULD), whole and before any
//! further frame of h2's, then the socket closes. Every other case is left to h2:
//! - half-closed (remote): h2 ends the connection (PROTOCOL_ERROR);
//! - a stream either side reset: ignored, or a stream error;
//! - an idle stream: a connection error.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// RFC 9113 §3.4: the client's preface comes before its first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

// RFC 9113 §6: the frame types and the flag this guard looks at.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
/// A GOAWAY without debug data: the header and 8 bytes (§6.8).
const GOAWAY_LEN: usize = FRAME_HEADER_LEN + 8;
const END_STREAM: u8 = 0x1;
/// RFC 9113 §7.
const STREAM_CLOSED: u32 = 0x5;

/// Streams remembered at most, in each of the two sets below. Past this,
/// the lowest (oldest) id is forgotten, and a forgotten stream is left to
/// h2: forgetting only makes the guard more lenient, never stricter.
const MAX_TRACKED: usize = 1024;

/// A client stream open on at least one side, and not reset.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stream {
    /// The client may still send. `answered`: the server sent END_STREAM.
    Open { answered: bool },
    /// The client ended its side; the server has not yet ended its own.
    HalfClosedRemote,
}

/// Frame boundaries in one direction of the byte stream.
#[derive(Default)]
struct FrameCursor {
    /// Bytes still to skip before frame headers begin (the client preface).
    skip_preface: usize,
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
}

/// A frame's header: type, flags, stream id.
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameCursor {
    /// Between two frames: nothing of a frame is half passed.
    fn at_boundary(&self) -> bool {
        self.skip_preface == 0 && self.have == 0 && self.payload_left == 0
    }

    /// Walks `bytes` and calls `on_frame` for each complete frame header,
    /// with the offset in `bytes` at which that header began (0 when it
    /// began in an earlier call). `on_frame` returns false to stop; the
    /// offset is then returned.
    fn walk(&mut self, bytes: &[u8], mut on_frame: impl FnMut(FrameHead) -> bool) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            if self.skip_preface > 0 {
                let n = self.skip_preface.min(bytes.len() - at);
                self.skip_preface -= n;
                at += n;
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() - at);
                self.payload_left -= n;
                at += n;
                continue;
            }
            let began = if self.have > 0 { 0 } else { at };
            let n = (FRAME_HEADER_LEN - self.have).min(bytes.len() - at);
            self.header[self.have..self.have + n].copy_from_slice(&bytes[at..at + n]);
            self.have += n;
            at += n;
            if self.have < FRAME_HEADER_LEN {
                break;
            }
            self.have = 0;
            let h = &self.header;
            self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let head = FrameHead {
                kind: h[3],
                flags: h[4],
                stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            };
            if !on_frame(head) {
                return Some(began);
            }
        }
        None
    }
}

/// What the guard knows of the connection's client streams.
#[derive(Default)]
struct Tracker {
    /// Streams open on at least one side. A stream that either side resets
    /// leaves: what follows a reset is h2's business (ignored, or a stream
    /// error).
    live: BTreeMap<u32, Stream>,
    /// Streams both sides ended, the most recent ones: a frame on one of
    /// these ends the connection.
    closed: BTreeSet<u32>,
    highest: u32,
}

impl Tracker {
    /// A frame from the client. Returns false when it arrives on a stream
    /// that closed normally, which ends the connection.
    fn client_sent(&mut self, f: &FrameHead) -> bool {
        // Stream 0 and server-initiated (even) ids are h2's business.
        if f.stream == 0 || f.stream.is_multiple_of(2) {
            return true;
        }
        let ends = f.flags & END_STREAM != 0;
        match f.kind {
            HEADERS if f.stream > self.highest => {
                self.highest = f.stream;
                let state = if ends {
                    Stream::HalfClosedRemote
                } else {
                    Stream::Open { answered: false }
                };
                self.live.insert(f.stream, state);
                bound(&mut self.live);
            }
            // DATA on an idle stream: h2's connection error (§5.1).
            DATA if f.stream > self.highest => {}
            DATA | HEADERS if self.closed.contains(&f.stream) => return false,
            DATA | HEADERS if ends => match self.live.get(&f.stream) {
                Some(Stream::Open { answered: true }) => self.close(f.stream),
                Some(Stream::Open { answered: false }) => {
                    self.live.insert(f.stream, Stream::HalfClosedRemote);
                }
                _ => {}
            },
            RST_STREAM => {
                self.live.remove(&f.stream);
            }
            _ => {}
        }
        true
    }

    /// A frame the server sent.
    fn server_sent(&mut self, f: &FrameHead) {
        match f.kind {
            RST_STREAM => {
                self.live.remove(&f.stream);
            }
            DATA | HEADERS if f.flags & END_STREAM != 0 => match self.live.get(&f.stream) {
                Some(Stream::Open { .. }) => {
                    self.live.insert(f.stream, Stream::Open { answered: true });
                }
                Some(Stream::HalfClosedRemote) => self.close(f.stream),
                None => {}
            },
            _ => {}
        }
    }

    /// Both sides ended `id`.
    fn close(&mut self, id: u32) {
        self.live.remove(&id);
        self.closed.insert(id);
        if self.closed.len() > MAX_TRACKED {
            self.closed.pop_first();
        }
    }
}

fn bound(live: &mut BTreeMap<u32, Stream>) {
    if live.len() > MAX_TRACKED {
        live.pop_first();
    }
}

/// When the connection last moved a byte, and how many client streams were
/// open then: what the idle timeout of an HTTP/2 connection looks at (hyper
/// has none), shared with the task that serves it.
pub struct Liveness {
    epoch: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    open: std::sync::atomic::AtomicUsize,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            epoch: std::time::Instant::now(),
            last_ms: 0.into(),
            open: 0.into(),
        }
    }
}

impl Liveness {
    fn touch(&self, open: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
        self.open.store(open, Relaxed);
    }

    /// How long the connection has been without open streams and silent;
    /// `None` while a stream is open (a request, a tunnel).
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.open.load(Relaxed) > 0 {
            return None;
        }
        let last = std::time::Duration::from_millis(self.last_ms.load(Relaxed));
        Some(self.epoch.elapsed().saturating_sub(last))
    }
}

/// The client connection, with its streams' states enforced (see the module
/// comment).
pub struct StreamStates<IO> {
    inner: IO,
    liveness: Option<std::sync::Arc<Liveness>>,
    reading: FrameCursor,
    writing: FrameCursor,
    tracker: Tracker,
    /// A breach was found: the bytes before it went to h2; reads now fail.
    breached: bool,
    /// The part of the GOAWAY the socket did not take at once. It goes out
    /// before anything else, so no frame of h2's lands inside it.
    goaway_rest: Option<([u8; GOAWAY_LEN], usize)>,
}

impl<IO> StreamStates<IO> {
    /// `inner` is read from the start of the client's preface.
    pub fn new(inner: IO) -> Self {
        StreamStates {
            inner,
            liveness: None,
            reading: FrameCursor {
                skip_preface: PREFACE_LEN,
                ..FrameCursor::default()
            },
            writing: FrameCursor::default(),
            tracker: Tracker::default(),
            breached: false,
            goaway_rest: None,
        }
    }

    /// Reports the connection's activity to `liveness`.
    pub fn watched(mut self, liveness: std::sync::Arc<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    fn touched(&self) {
        if let Some(l) = &self.liveness {
            l.touch(self.tracker.live.len());
        }
    }

    /// A GOAWAY with STREAM_CLOSED (RFC 9113 §5.4.1), if it does not split
    /// one of h2's frames; the connection closes anyway.
    fn goaway(&mut self, cx: &mut Context<'_>)
    where
        IO: AsyncWrite + Unpin,
    {
        if !self.writing.at_boundary() {
            return;
        }
        let mut frame: [u8; GOAWAY_LEN] = [0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        frame[9..13].copy_from_slice(&self.tracker.highest.to_be_bytes());
        frame[13..].copy_from_slice(&STREAM_CLOSED.to_be_bytes());
        self.goaway_rest = Some((frame, 0));
        if let Poll::Ready(Ok(())) = self.poll_goaway_rest(cx) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
    }

    /// Writes what is left of the GOAWAY; ready once none is.
    fn poll_goaway_rest(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: AsyncWrite + Unpin,
    {
        while let Some((frame, sent)) = &mut self.goaway_rest {
            match Pin::new(&mut self.inner).poll_write(cx, &frame[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *sent += n;
                    if *sent == GOAWAY_LEN {
                        self.goaway_rest = None;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn saw_written(&mut self, bytes: &[u8]) {
        let tracker = &mut self.tracker;
        self.writing.walk(bytes, |f| {
            tracker.server_sent(&f);
            true
        });
    }
}

fn breach() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "HTTP/2 frame on a closed stream (STREAM_CLOSED)",
    )
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for StreamStates<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.breached {
            return Poll::Ready(Err(breach()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let tracker = &mut this.tracker;
            let new = &buf.filled()[before..];
            if let Some(at) = this.reading.walk(new, |f| tracker.client_sent(&f)) {
                // h2 gets what came before the offending frame, then the error.
                this.breached = true;
                buf.set_filled(before + at);
                this.goaway(cx);
                if at == 0 {
                    return Poll::Ready(Err(breach()));
                }
            }
            this.touched();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StreamStates<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_goaway_rest(cx))?;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.saw_written(&buf[..n]);
            this.touched();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_goaway_rest(cx))?;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                this.saw_written(&b[..take]);
                left -= take;
            }
            this.touched();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_goaway_rest(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_goaway_rest(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let len = (payload as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.resize(FRAME_HEADER_LEN + payload, 0);
        f
    }

    /// Feeds client bytes one at a time (the worst split); returns the
    /// offset of the first offending frame.
    fn client(t: &mut Tracker, c: &mut FrameCursor, bytes: &[u8]) -> Option<usize> {
        for (i, b) in bytes.iter().enumerate() {
            if c.walk(std::slice::from_ref(b), |f| t.client_sent(&f))
                .is_some()
            {
                return Some(i + 1 - FRAME_HEADER_LEN);
            }
        }
        None
    }

    fn server(t: &mut Tracker, c: &mut FrameCursor, bytes: &[u8]) {
        c.walk(bytes, |f| {
            t.server_sent(&f);
            true
        });
    }

    #[test]
    fn data_after_both_sides_ended_is_refused() {
        let (mut t, mut wc) = <(Tracker, FrameCursor)>::default();
        let mut rc = FrameCursor {
            skip_preface: PREFACE_LEN,
            ..FrameCursor::default()
        };
        let mut up = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        up.extend(frame(4, 0, 0, 6)); // SETTINGS
        up.extend(frame(HEADERS, END_STREAM | 0x4, 1, 10));
        assert_eq!(client(&mut t, &mut rc, &up), None);
        assert_eq!(t.highest, 1);
        // Half-closed (remote): h2 answers with a stream error.
        assert_eq!(client(&mut t, &mut rc, &frame(DATA, 0, 1, 3)), None);
        server(&mut t, &mut wc, &frame(HEADERS, 0x4, 1, 5));
        server(&mut t, &mut wc, &frame(DATA, END_STREAM, 1, 20));
        let late = [frame(DATA, 0, 3, 0), frame(DATA, 0, 1, 4)].concat();
        // Stream 3 is idle (h2's business); stream 1 is closed.
        assert_eq!(
            client(&mut t, &mut rc, &late),
            Some(FRAME_HEADER_LEN),
            "the frame on stream 1 is refused"
        );
    }

    #[test]
    fn in_flight_data_after_a_reset_passes() {
        let (mut t, mut rc, mut wc) = <(Tracker, FrameCursor, FrameCursor)>::default();
        assert_eq!(client(&mut t, &mut rc, &frame(HEADERS, 0x4, 5, 8)), None);
        server(&mut t, &mut wc, &frame(RST_STREAM, 0, 5, 4));
        let more = [frame(DATA, 0, 5, 100), frame(DATA, END_STREAM, 5, 0)].concat();
        assert_eq!(client(&mut t, &mut rc, &more), None);
        // The client resets a stream, then (wrongly) sends on it: h2's
        // stream error, not a connection error.
        assert_eq!(client(&mut t, &mut rc, &frame(HEADERS, 0x4, 7, 8)), None);
        assert_eq!(client(&mut t, &mut rc, &frame(RST_STREAM, 0, 7, 4)), None);
        assert_eq!(client(&mut t, &mut rc, &frame(DATA, 0, 7, 1)), None);
    }

    #[test]
    fn uploads_continue_after_the_answer_until_the_client_ends() {
        let (mut t, mut rc, mut wc) = <(Tracker, FrameCursor, FrameCursor)>::default();
        assert_eq!(client(&mut t, &mut rc, &frame(HEADERS, 0x4, 1, 8)), None);
        server(&mut t, &mut wc, &frame(HEADERS, 0x4 | END_STREAM, 1, 5));
        assert_eq!(client(&mut t, &mut rc, &frame(DATA, 0, 1, 50)), None);
        assert_eq!(
            client(&mut t, &mut rc, &frame(DATA, END_STREAM, 1, 0)),
            None
        );
        assert!(t.live.is_empty(), "closed streams leave the live set");
        assert!(client(&mut t, &mut rc, &frame(DATA, 0, 1, 1)).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let (mut t, mut rc, mut wc) = <(Tracker, FrameCursor, FrameCursor)>::default();
        for id in (1..10_000u32).step_by(2) {
            client(&mut t, &mut rc, &frame(HEADERS, 0x4 | END_STREAM, id, 0));
            server(&mut t, &mut wc, &frame(HEADERS, 0x4 | END_STREAM, id, 0));
        }
        assert_eq!(t.live.len(), 0);
        assert_eq!(t.closed.len(), MAX_TRACKED);
        // Resets of streams never seen cost nothing.
        for id in (10_001..20_000u32).step_by(2) {
            client(&mut t, &mut rc, &frame(RST_STREAM, 0, id, 4));
        }
        assert_eq!((t.live.len(), t.closed.len()), (0, MAX_TRACKED));
    }

    #[test]
    fn a_long_stream_outlives_many_reset_ones() {
        let (mut t, mut rc, mut wc) = <(Tracker, FrameCursor, FrameCursor)>::default();
        // A long-lived tunnel or call on stream 1, then thousands of short
        // streams the server or the client resets.
        assert_eq!(client(&mut t, &mut rc, &frame(HEADERS, 0x4, 1, 8)), None);
        for id in (3..6_000u32).step_by(2) {
            assert_eq!(client(&mut t, &mut rc, &frame(HEADERS, 0x4, id, 8)), None);
            if id % 4 == 1 {
                server(&mut t, &mut wc, &frame(RST_STREAM, 0, id, 4));
            } else {
                client(&mut t, &mut rc, &frame(RST_STREAM, 0, id, 4));
            }
        }
        let more = [frame(DATA, 0, 1, 10), frame(DATA, END_STREAM, 1, 0)].concat();
        assert_eq!(client(&mut t, &mut rc, &more), None);
    }

    /// A socket that takes at most `max_write` bytes per write and hands
    /// out `input` on the first read.
    struct Narrow {
        input: Vec<u8>,
        output: Vec<u8>,
        max_write: usize,
    }

    impl AsyncRead for Narrow {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let input = std::mem::take(&mut self.get_mut().input);
            buf.put_slice(&input);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Narrow {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.max_write);
            this.output.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_goaway_the_socket_takes_in_pieces_goes_out_whole_and_first() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut conn = StreamStates::new(Narrow {
            input: [&preface[..], &frame(HEADERS, 0x4 | END_STREAM, 1, 0)].concat(),
            output: Vec::new(),
            max_write: usize::MAX,
        });
        let mut space = [0u8; 256];
        let mut buf = ReadBuf::new(&mut space);
        assert!(matches!(
            Pin::new(&mut conn).poll_read(&mut cx, &mut buf),
            Poll::Ready(Ok(()))
        ));
        let answer = frame(HEADERS, 0x4 | END_STREAM, 1, 0);
        assert!(
            matches!(Pin::new(&mut conn).poll_write(&mut cx, &answer), Poll::Ready(Ok(n)) if n == answer.len())
        );
        // Stream 1 is closed; the client sends on it, and the socket now
        // takes 5 bytes at a time.
        conn.inner.input = frame(DATA, 0, 1, 1);
        conn.inner.max_write = 5;
        let mut buf = ReadBuf::new(&mut space);
        assert!(matches!(
            Pin::new(&mut conn).poll_read(&mut cx, &mut buf),
            Poll::Ready(Err(_))
        ));
        // h2 writes one more frame (it has not seen the error yet) and flushes.
        let ping = frame(0x6, 0, 0, 8);
        let mut left = &ping[..];
        while !left.is_empty() {
            match Pin::new(&mut conn).poll_write(&mut cx, left) {
                Poll::Ready(Ok(n)) => left = &left[n..],
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            Pin::new(&mut conn).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut goaway = vec![0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        goaway.extend_from_slice(&STREAM_CLOSED.to_be_bytes());
        assert_eq!(conn.inner.output, [answer, goaway, ping].concat());
    }
}
