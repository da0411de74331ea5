//! HTTP/1.x wire format (RFC 9112): strict parsing of message heads, message
//! framing, streaming of bodies, and serialisation of forwarded heads.
//!
//! Parsing is deliberately stricter than most servers: anything that two parsers
//! could read differently (the root of request smuggling) is refused rather than
//! guessed at.

pub mod body;
pub mod buffers;
pub mod fields;
pub mod head;

pub use body::BodyKind;
pub use head::{HeadError, RequestHead};

/// The decimal digits of `n`, written without the formatting machinery (this
/// runs several times per request).
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    // Only ASCII digits are written.
    std::str::from_utf8(digits(n, buf)).unwrap_or("0")
}

fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(digits(n, &mut [0; 20]));
}

/// A field value as text, borrowed when it is valid UTF-8 (almost always):
/// `str::from_utf8` checks ASCII a word at a time, where `from_utf8_lossy` walks
/// byte by byte even when nothing needs replacing.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_digits() {
        for n in [0u64, 7, 10, 65535, u64::MAX] {
            assert_eq!(super::decimal(n, &mut [0; 20]), n.to_string());
        }
    }
}
