//! Sizes (`"64KiB"`) and durations (`"30s"`) as written in the configuration.

use std::time::Duration;

use super::Rate;
use super::raw::{RawDuration, RawSize};

pub fn size(raw: &RawSize) -> Result<usize, String> {
    match raw {
        RawSize::Bytes(n) => usize::try_from(*n).map_err(|_| format!("size {n} is negative")),
        RawSize::Text(text) => parse_size(text),
    }
}

fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (write e.g. 65536, \"64KiB\" or \"1MiB\")"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" | "k" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// A request rate: `"100/s"`, `"600/min"`, `"5000/h"`.
pub fn rate(text: &str) -> Result<Rate, String> {
    let bad =
        || format!("`{text}` is not a rate (write e.g. \"100/s\", \"600/min\" or \"5000/h\")");
    let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("rate `{text}` must allow at least one request"));
    }
    Ok(Rate {
        count,
        per: Duration::from_secs(secs),
    })
}

/// Bytes per second: a size, optionally written with `/s` (`"1MiB/s"`).
pub fn bandwidth(raw: &RawSize) -> Result<u64, String> {
    let n = match raw {
        RawSize::Text(t) => parse_size(t.trim().strip_suffix("/s").unwrap_or(t))?,
        other => size(other)?,
    };
    if n < 1024 {
        return Err("a bandwidth limit must be at least 1KiB/s".into());
    }
    Ok(n as u64)
}

pub fn duration(raw: &RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Seconds(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {n} is negative")),
        RawDuration::Text(text) => parse_duration(text),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!("`{text}` is not a duration (write e.g. 30, \"500ms\", \"30s\", \"5m\" or \"1h\")")
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }
}
