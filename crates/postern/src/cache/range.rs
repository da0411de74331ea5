//! Range requests answered from a complete stored response (RFC 9110 §14):
//! one range as a plain 206, several as `multipart/byteranges` (§14.6), an
//! unsatisfiable set as 416, and the whole response when the Range field is
//! unusable or an `If-Range` validator no longer matches (§13.1.5).

use bytes::{BufMut, Bytes, BytesMut};

use super::store::Entry;
use crate::http1::RequestHead;
use crate::http1::head::Fields;
use crate::observe::time::parse_http_date;

/// More ranges than this in one request are ignored (the whole response is
/// sent): §14.3 lets a server refuse sets of many small ranges, a known way
/// to make a server work hard for little.
const MAX_RANGES: usize = 32;

#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole body.
    Whole,
    /// 206 with these inclusive ranges, ascending and not overlapping.
    Partial(Vec<(u64, u64)>),
    /// 416.
    Unsatisfiable,
}

/// What to send for `head` from a stored 200 response with `len` body bytes.
pub fn answer(head: &RequestHead, entry: &Entry, len: u64) -> RangeAnswer {
    // §14.2: GET is the only method with range handling.
    if !head.is_method("GET") || entry.status != 200 {
        return RangeAnswer::Whole;
    }
    let Some(value) = head.first("range") else {
        return RangeAnswer::Whole;
    };
    if let Some(validator) = head.first("if-range")
        && !if_range_matches(validator, entry)
    {
        return RangeAnswer::Whole;
    }
    parse(&String::from_utf8_lossy(value), len)
}

/// §13.1.5: an entity tag must match strongly; a date must equal a
/// Last-Modified that is itself strong (at least a second before Date).
fn if_range_matches(validator: &[u8], entry: &Entry) -> bool {
    let v = String::from_utf8_lossy(validator);
    let v = v.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/")
            && entry
                .header("etag")
                .is_some_and(|e| !e.starts_with(b"W/") && e == v.as_bytes());
    }
    let date = |name: &str| {
        entry
            .header(name)
            .and_then(|x| parse_http_date(&String::from_utf8_lossy(x)))
    };
    match (parse_http_date(v), date("last-modified"), date("date")) {
        (Some(asked), Some(lm), Some(d)) => asked == lm && lm < d,
        _ => false,
    }
}

/// Parses `bytes=...` (§14.1.2) against a body of `len` bytes. Ranges are
/// sorted and overlapping or adjacent ones coalesced (§14.3 allows it).
pub fn parse(value: &str, len: u64) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        // Another unit, or not a range at all: ignored.
        return RangeAnswer::Whole;
    };
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    if parts.len() > MAX_RANGES {
        return RangeAnswer::Whole;
    }
    let mut ranges = Vec::with_capacity(parts.len());
    for part in parts {
        if part.is_empty() {
            // Empty list elements are allowed (RFC 9110 §5.6.1).
            continue;
        }
        let Some((a, b)) = part.split_once('-') else {
            return RangeAnswer::Whole;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if a.is_empty() {
            // A suffix: the last n bytes.
            if !digits(b) {
                return RangeAnswer::Whole;
            }
            let Ok(n) = b.parse::<u64>() else {
                return RangeAnswer::Whole;
            };
            if n > 0 && len > 0 {
                ranges.push((len.saturating_sub(n), len - 1));
            }
            continue;
        }
        if !digits(a) || !(b.is_empty() || digits(b)) {
            return RangeAnswer::Whole;
        }
        let Ok(start) = a.parse::<u64>() else {
            return RangeAnswer::Whole;
        };
        let end = if b.is_empty() {
            u64::MAX
        } else {
            // Digits beyond u64 mean "to the end" all the same.
            b.parse::<u64>().unwrap_or(u64::MAX)
        };
        if end < start {
            // §14.1.1: an invalid range-spec makes the whole field invalid.
            return RangeAnswer::Whole;
        }
        if start < len {
            ranges.push((start, end.min(len - 1)));
        }
    }
    if ranges.is_empty() {
        return RangeAnswer::Unsatisfiable;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    RangeAnswer::Partial(merged)
}

/// The `multipart/byteranges` body for several ranges (§14.6), and its
/// boundary.
pub fn multipart(
    body: &Bytes,
    ranges: &[(u64, u64)],
    content_type: Option<&[u8]>,
) -> (Bytes, String) {
    let boundary = boundary();
    let total = body.len();
    let mut out = BytesMut::with_capacity(
        ranges
            .iter()
            .map(|(a, b)| (b - a + 1) as usize + 128)
            .sum::<usize>()
            + 64,
    );
    for &(a, b) in ranges {
        out.put_slice(b"\r\n--");
        out.put_slice(boundary.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(t) = content_type {
            out.put_slice(b"Content-Type: ");
            out.put_slice(t);
            out.put_slice(b"\r\n");
        }
        out.put_slice(format!("Content-Range: bytes {a}-{b}/{total}\r\n\r\n").as_bytes());
        out.put_slice(&body[a as usize..=b as usize]);
    }
    out.put_slice(b"\r\n--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
    (out.freeze(), boundary)
}

/// A fresh random boundary, so a stored body cannot be crafted to contain it.
fn boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("postern-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_suffix_and_open_ranges() {
        assert_eq!(parse("bytes=0-4", 10), RangeAnswer::Partial(vec![(0, 4)]));
        assert_eq!(parse("bytes=-3", 10), RangeAnswer::Partial(vec![(7, 9)]));
        assert_eq!(parse("bytes=-30", 10), RangeAnswer::Partial(vec![(0, 9)]));
        assert_eq!(parse("bytes=8-", 10), RangeAnswer::Partial(vec![(8, 9)]));
        assert_eq!(parse("bytes=5-100", 10), RangeAnswer::Partial(vec![(5, 9)]));
    }

    #[test]
    fn several_ranges_are_sorted_and_coalesced() {
        assert_eq!(
            parse("bytes=6-7, 0-1", 10),
            RangeAnswer::Partial(vec![(0, 1), (6, 7)])
        );
        assert_eq!(
            parse("bytes=0-3,2-5,6-6", 10),
            RangeAnswer::Partial(vec![(0, 6)])
        );
        // Unsatisfiable members are dropped while others remain.
        assert_eq!(
            parse("bytes=0-1,50-60", 10),
            RangeAnswer::Partial(vec![(0, 1)])
        );
    }

    #[test]
    fn unsatisfiable_and_invalid() {
        assert_eq!(parse("bytes=10-20", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), RangeAnswer::Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=+1-2",
            "bytes=- 1",
        ] {
            assert_eq!(parse(ignored, 10), RangeAnswer::Whole, "{ignored}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(&many, 10), RangeAnswer::Whole);
    }

    #[test]
    fn multipart_body_names_each_part() {
        let body = Bytes::from_static(b"0123456789");
        let (out, boundary) = multipart(&body, &[(0, 1), (8, 9)], Some(b"text/plain"));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert_eq!(
            text,
            format!(
                "\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
                 \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89\
                 \r\n--{boundary}--\r\n"
            )
        );
    }
}
