//! Calendar formatting for logs and the `Date` field, without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// UTC calendar fields of a time.
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    weekday: usize,
}

pub fn civil(t: SystemTime) -> Civil {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        millis: d.subsec_millis(),
        weekday: days.rem_euclid(7) as usize,
    }
}

/// RFC 9110 §5.6.7 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// Common Log Format time: `10/Oct/2000:13:55:36 +0000`.
pub fn clf_date(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// RFC 3339 with milliseconds: `2026-11-27T05:24:08.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// Seconds since the epoch of an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate,
/// and the obsolete RFC 850 and asctime forms recipients must accept, each
/// to its grammar (single spaces, two-digit hours); anything else is not a
/// date, which for Expires means "already expired" (RFC 9111 §5.3). Names
/// are matched case-insensitively, as RFC 9111 §4.2 asks of caches.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let t = text.trim_matches(|c| c == ' ' || c == '\t');
    // The grammar is ASCII; checking first keeps the slicing below on
    // character boundaries.
    if !t.is_ascii() {
        return None;
    }
    let (year, month, day, (h, m, s)) = imf_fixdate(t)
        .or_else(|| rfc850_date(t))
        .or_else(|| asctime_date(t))?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}

type DateParts = (i64, u32, u32, (u32, u32, u32));

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(t: &str) -> Option<DateParts> {
    let b = t.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    day_name(&t[..3], false)?;
    if !t[25..].eq_ignore_ascii_case(" GMT") {
        return None;
    }
    Some((
        digits(&t[12..16])?,
        month(&t[8..11])?,
        digits(&t[5..7])? as u32,
        time_of_day(&t[17..25])?,
    ))
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850_date(t: &str) -> Option<DateParts> {
    let (name, rest) = t.split_once(", ")?;
    day_name(name, true)?;
    let b = rest.as_bytes();
    if b.len() != 22 || b[2] != b'-' || b[6] != b'-' || b[9] != b' ' {
        return None;
    }
    if !rest[18..].eq_ignore_ascii_case(" GMT") {
        return None;
    }
    // RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past.
    let y = digits(&rest[7..9])?;
    let year = if y < 70 { 2000 + y } else { 1900 + y };
    Some((
        year,
        month(&rest[3..6])?,
        digits(&rest[..2])? as u32,
        time_of_day(&rest[10..18])?,
    ))
}

/// `Sun Nov  6 08:49:37 1994`
fn asctime_date(t: &str) -> Option<DateParts> {
    let b = t.as_bytes();
    if b.len() != 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    day_name(&t[..3], false)?;
    let day = match (b[8], b[9]) {
        (b' ', d) if d.is_ascii_digit() => u32::from(d - b'0'),
        _ => digits(&t[8..10])? as u32,
    };
    Some((
        digits(&t[20..24])?,
        month(&t[4..7])?,
        day,
        time_of_day(&t[11..19])?,
    ))
}

/// All ASCII digits (no sign, no spaces), as a number.
fn digits(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `HH:MM:SS`, two digits each.
fn time_of_day(s: &str) -> Option<(u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, sec) = (digits(&s[..2])?, digits(&s[3..5])?, digits(&s[6..])?);
    (h < 24 && m < 60 && sec <= 60).then_some((h as u32, m as u32, sec as u32))
}

fn month(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|x| x.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

fn day_name(s: &str, long: bool) -> Option<()> {
    const SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const LONG: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let names: &[&str] = if long { &LONG } else { &SHORT };
    names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(s))
        .then_some(())
}

/// Seconds since the epoch of an FTP modification time (RFC 3659 §2.3,
/// `YYYYMMDDHHMMSS[.sss]`, UTC).
pub fn parse_ftp_time(text: &str) -> Option<i64> {
    let t = text.trim();
    let whole = t.split('.').next()?;
    if whole.len() != 14 || !whole.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| whole[r].parse::<u32>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_date_forms() {
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(form), Some(784_111_777), "{form}");
        }
        // RFC 9111 §4.2: caches match names case-insensitively.
        assert_eq!(
            parse_http_date("sun, 06 NOV 1994 08:49:37 gmt"),
            Some(784_111_777)
        );
        for bad in [
            "",
            "0",
            "yesterday",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thursday, 18 Aug 2050 02:01:18 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sün, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Növ 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert_eq!(parse_http_date(&http_date(now)), Some(secs));
    }
    use std::time::Duration;

    #[test]
    fn ftp_modification_times() {
        assert_eq!(parse_ftp_time("19941106084937"), Some(784_111_777));
        assert_eq!(parse_ftp_time("19941106084937.123"), Some(784_111_777));
        for bad in ["", "1994110608493", "19941306084937", "1994-11-06 08:49"] {
            assert_eq!(parse_ftp_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(clf_date(t), "06/Nov/1994:08:49:37 +0000");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_164_800_123);
        assert_eq!(rfc3339(t), "2024-02-29T00:00:00.123Z");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
