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
    let n: u64 = match digits.parse() {
        Ok(n) => n,
        // Digits only, yet no u64: the number itself is out of range.
        Err(_) if !digits.is_empty() => return Err(format!("size `{text}` is too large")),
        Err(_) => {
            return Err(format!(
                "`{text}` is not a size (write e.g. 65536, \"64KiB\" or \"1MiB\")"
            ));
        }
    };
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

/// The longest duration accepted anywhere in the configuration: ten years
/// (of 365 days). Longer values mean "never" in practice, and unbounded ones
/// would overflow when added to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

pub fn duration(raw: &RawDuration) -> Result<Duration, String> {
    let d = match raw {
        RawDuration::Seconds(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {n} is negative"))?,
        RawDuration::Text(text) => parse_duration(text)?,
    };
    if d > MAX_DURATION {
        let shown = match raw {
            RawDuration::Seconds(n) => n.to_string(),
            RawDuration::Text(t) => format!("`{t}`"),
        };
        return Err(format!(
            "duration {shown} is too long (at most ten years: 87600h, or {} seconds)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!("`{text}` is not a duration (write e.g. 30, \"500ms\", \"30s\", \"5m\" or \"1h\")")
    };
    let mult: u64 = match unit.trim() {
        "ms" => 0,
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    let too_long = || {
        format!(
            "duration `{text}` is too long (at most ten years: 87600h, or {} seconds)",
            MAX_DURATION.as_secs()
        )
    };
    let n: u64 = match digits.parse() {
        Ok(n) => n,
        Err(_) if !digits.is_empty() => return Err(too_long()),
        Err(_) => return Err(bad()),
    };
    if mult == 0 {
        return Ok(Duration::from_millis(n));
    }
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(too_long)
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
        assert_eq!(
            parse_size("99999999999999999999GiB"),
            Err("size `99999999999999999999GiB` is too large".into())
        );
        assert_eq!(
            parse_size("17179869184GiB"),
            Err("size `17179869184GiB` is too large".into())
        );
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

    #[test]
    fn durations_longer_than_ten_years_are_refused() {
        let ten_years = Duration::from_secs(10 * 365 * 86_400);
        assert_eq!(duration(&RawDuration::Text("87600h".into())), Ok(ten_years));
        assert_eq!(duration(&RawDuration::Seconds(315_360_000)), Ok(ten_years));
        for text in [
            "87601h",
            "9999999999999999h",
            "99999999999999999999s",
            "315360001",
            "315360000001ms",
            "18446744073709551615m",
        ] {
            let err = duration(&RawDuration::Text(text.into())).unwrap_err();
            assert!(err.contains("is too long"), "{text}: {err}");
        }
        let err = duration(&RawDuration::Seconds(i64::MAX)).unwrap_err();
        assert_eq!(
            err,
            "duration 9223372036854775807 is too long (at most ten years: 87600h, or 315360000 seconds)"
        );
    }
}
