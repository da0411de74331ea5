//! The conditions a rule can test: destination domains, port sets, time windows
//! and regular expressions. Each parses from the configuration's text form and
//! reports what is wrong in words a configuration message can quote.

use std::collections::HashSet;

use regex::RegexSet;

/// `dst_domain`: `example.com` matches that name exactly; `.example.com` matches
/// it and every subdomain (Squid's `dstdomain` convention).
#[derive(Debug, Clone, Default)]
pub struct DomainList {
    exact: HashSet<String>,
    /// Stored without the leading dot.
    suffixes: Vec<String>,
}

impl DomainList {
    pub fn parse(entries: &[String]) -> Result<DomainList, String> {
        let mut list = DomainList::default();
        for entry in entries {
            let lower = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            let (suffix, name) = match lower.strip_prefix('.') {
                Some(rest) => (true, rest.to_string()),
                None => (false, lower.clone()),
            };
            let name = normalize_domain(&name)
                .ok_or_else(|| format!("`{entry}` is not a domain name (or `.domain`)"))?;
            if suffix {
                list.suffixes.push(name);
            } else {
                list.exact.insert(name);
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// `host` is normalised: lowercase ASCII without a trailing dot.
    pub fn matches(&self, host: &str) -> bool {
        if self.exact.contains(host) {
            return true;
        }
        self.suffixes.iter().any(|s| {
            host == s
                || (host.len() > s.len()
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.')
        })
    }
}

/// Lowercase ASCII form of a domain name: IDNs become punycode (UTS #46), a
/// trailing dot goes. `None` if it cannot be a DNS name.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).ok()?
    };
    let valid = ascii.len() <= 253
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(ascii)
}

/// `dst_port`: single ports and inclusive ranges (`[80, "8000-8999"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    pub fn new(ranges: Vec<(u16, u16)>) -> PortSet {
        PortSet { ranges }
    }

    /// One entry: `"443"` or `"1025-65535"`.
    pub fn parse_entry(text: &str) -> Result<(u16, u16), String> {
        let port = |s: &str| match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!(
                "`{text}` is not a port (1-65535) or range (`8000-8999`)"
            )),
        };
        match text.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(format!("port range `{text}` is empty (start above end)"));
                }
                Ok((a, b))
            }
            None => port(text).map(|p| (p, p)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&port))
    }

    /// Squid's default `Safe_ports`: where plain HTTP requests may go.
    pub fn squid_safe_ports() -> PortSet {
        PortSet::new(vec![
            (80, 80),
            (21, 21),
            (443, 443),
            (70, 70),
            (210, 210),
            (280, 280),
            (488, 488),
            (591, 591),
            (777, 777),
            (1025, 65535),
        ])
    }
}

/// The moment a rule is evaluated at, in the time zone rules are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// Minutes since midnight, 0..1440.
    pub minute: u16,
}

impl Clock {
    /// The clock for a Unix time shifted by `offset_minutes` (the rules' time zone).
    pub fn from_unix(secs: i64, offset_minutes: i32) -> Clock {
        let local = secs + i64::from(offset_minutes) * 60;
        let days = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u16;
        // 1970-01-01 was a Thursday (weekday 3 counting from Monday = 0).
        let weekday = (days + 3).rem_euclid(7) as u8;
        Clock { weekday, minute }
    }
}

/// `time`: days and hours, e.g. `"Mon-Fri 09:00-18:00"`, `"Sat,Sun"`,
/// `"22:00-06:00"` (wraps past midnight, counted to the day it starts on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Bit 0 = Monday.
    days: u8,
    start: u16,
    end: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TimeWindow {
    pub fn parse(text: &str) -> Result<TimeWindow, String> {
        let bad = |why: &str| format!("time window `{text}`: {why} (e.g. \"Mon-Fri 09:00-18:00\")");
        let mut days = 0u8;
        let mut hours = None;
        for part in text.split_whitespace() {
            if part.as_bytes()[0].is_ascii_digit() {
                if hours.is_some() {
                    return Err(bad("more than one hour range"));
                }
                let (a, b) = part
                    .split_once('-')
                    .ok_or_else(|| bad("hours need a start and an end"))?;
                let (a, b) = (
                    parse_hhmm(a).ok_or_else(|| bad("hours are written HH:MM"))?,
                    parse_hhmm(b).ok_or_else(|| bad("hours are written HH:MM"))?,
                );
                if a == b {
                    return Err(bad("the hour range is empty"));
                }
                hours = Some((a, b));
            } else {
                for item in part.split(',').filter(|s| !s.is_empty()) {
                    let day = |s: &str| {
                        let s = s.to_ascii_lowercase();
                        DAYS.iter()
                            .position(|d| {
                                s.get(..3).is_some_and(|p| d.starts_with(p)) && is_day_name(&s)
                            })
                            .ok_or_else(|| bad(&format!("`{item}` is not a day")))
                    };
                    match item.split_once('-') {
                        Some((a, b)) => {
                            let (a, b) = (day(a)?, day(b)?);
                            let mut d = a;
                            loop {
                                days |= 1 << d;
                                if d == b {
                                    break;
                                }
                                d = (d + 1) % 7;
                            }
                        }
                        None => days |= 1 << day(item)?,
                    }
                }
            }
        }
        if days == 0 && hours.is_none() {
            return Err(bad("no days or hours given"));
        }
        let (start, end) = hours.unwrap_or((0, 1440));
        Ok(TimeWindow {
            days: if days == 0 { 0x7f } else { days },
            start,
            end,
        })
    }

    pub fn contains(&self, now: Clock) -> bool {
        let today = self.days & (1 << now.weekday) != 0;
        if self.start < self.end {
            return today && (self.start..self.end).contains(&now.minute);
        }
        // Wrapping window: the evening part belongs to today, the morning part
        // to the window that started yesterday.
        let yesterday = self.days & (1 << ((now.weekday + 6) % 7)) != 0;
        (today && now.minute >= self.start) || (yesterday && now.minute < self.end)
    }
}

fn is_day_name(s: &str) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    FULL.iter().any(|f| f.starts_with(s))
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) || h.to_string().len() > 2 {
        return None;
    }
    Some(h * 60 + m)
}

/// A set of regular expressions; any one matching is a match.
#[derive(Debug, Clone)]
pub struct Patterns(RegexSet);

impl Patterns {
    pub fn parse(patterns: &[String]) -> Result<Patterns, String> {
        RegexSet::new(patterns).map(Patterns).map_err(|e| {
            // The crate's message draws a caret diagram over several lines;
            // a configuration message keeps to one.
            let text = e.to_string();
            let why = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ");
            format!("invalid regular expression: {why}")
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// The file extension of a URL's path (`/a/setup.EXE?x=1` → `exe`), lowercase.
pub fn url_extension(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme.find('/').map(|i| &after_scheme[i..])?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let last = path.rsplit('/').next()?;
    let (_, ext) = last.rsplit_once('.')?;
    (!ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn domains_exact_and_suffix() {
        let d = DomainList::parse(&strings(&["Example.com.", ".corp.test", "bücher.de"])).unwrap();
        assert!(d.matches("example.com"));
        assert!(!d.matches("www.example.com"));
        assert!(d.matches("corp.test") && d.matches("a.b.corp.test"));
        assert!(!d.matches("evilcorp.test"));
        assert!(d.matches("xn--bcher-kva.de"));
        assert!(DomainList::parse(&strings(&["exa mple.com"])).is_err());
        assert!(DomainList::parse(&strings(&["."])).is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(PortSet::parse_entry("443"), Ok((443, 443)));
        assert_eq!(PortSet::parse_entry("8000-8999"), Ok((8000, 8999)));
        for bad in ["0", "70000", "9-1", "x", "1-"] {
            assert!(PortSet::parse_entry(bad).is_err(), "{bad}");
        }
        let safe = PortSet::squid_safe_ports();
        assert!(safe.contains(80) && safe.contains(8080) && safe.contains(21));
        assert!(!safe.contains(25) && !safe.contains(22) && !safe.contains(1024));
    }

    #[test]
    fn clock_from_unix() {
        // 2026-11-26 13:45 UTC, a Thursday.
        let t = 1_795_700_700;
        assert_eq!(
            Clock::from_unix(t, 0),
            Clock {
                weekday: 3,
                minute: 13 * 60 + 45
            }
        );
        assert_eq!(Clock::from_unix(t, 120).minute, 15 * 60 + 45);
        assert_eq!(Clock::from_unix(0, 0).weekday, 3);
    }

    #[test]
    fn time_windows() {
        let at = |weekday, h: u16, m: u16| Clock {
            weekday,
            minute: h * 60 + m,
        };
        let office = TimeWindow::parse("Mon-Fri 09:00-18:00").unwrap();
        assert!(office.contains(at(0, 9, 0)));
        assert!(!office.contains(at(0, 18, 0)));
        assert!(!office.contains(at(5, 12, 0)));
        let weekend = TimeWindow::parse("Sat,Sunday").unwrap();
        assert!(weekend.contains(at(6, 3, 0)) && !weekend.contains(at(4, 3, 0)));
        let night = TimeWindow::parse("Fri 22:00-06:00").unwrap();
        assert!(night.contains(at(4, 23, 0)));
        assert!(night.contains(at(5, 5, 59)));
        assert!(!night.contains(at(4, 5, 0)));
        let wrap_days = TimeWindow::parse("Sat-Mon").unwrap();
        assert!(wrap_days.contains(at(0, 1, 0)) && !wrap_days.contains(at(1, 1, 0)));
        for bad in [
            "",
            "Funday",
            "09:00",
            "9-10",
            "25:00-26:00",
            "10:00-10:00",
            "Mo",
        ] {
            assert!(TimeWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extensions() {
        assert_eq!(
            url_extension("http://h/a/setup.EXE?x=1").as_deref(),
            Some("exe")
        );
        assert_eq!(url_extension("http://h/a.b/c"), None);
        assert_eq!(url_extension("http://h.com"), None);
        assert_eq!(url_extension("http://h/file."), None);
    }
}
