//! The rule engine and everything that reads rule text or request hosts:
//! condition parsers, host normalisation, and decisions over a fixed rule set
//! for requests cut from the input.

#![no_main]

use std::net::IpAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use postern_policy::blocklist::Blocklist;
use postern_policy::host::{has_encoded_control, normalize_host, percent_decode};
use postern_policy::matchers::{Clock, DomainList, Patterns, PortSet, TimeWindow, url_extension};
use postern_policy::rules::{Action, DenyWith, Matcher, NamedList, Request, Rule, RuleSet};

fn rules(fields: &[&str]) -> RuleSet {
    let (list, _) = Blocklist::parse(fields.first().copied().unwrap_or(""));
    let list = Arc::new(NamedList {
        name: "fuzz".into(),
        list,
    });
    let domains = DomainList::parse(&[fields.get(1).unwrap_or(&"").to_string()]).unwrap_or_default();
    let ports = PortSet::parse_entry(fields.get(2).unwrap_or(&"")).map(|r| vec![r]).unwrap_or_default();
    let time: Vec<TimeWindow> = TimeWindow::parse(fields.get(3).unwrap_or(&"")).into_iter().collect();
    let named = Arc::new(Matcher {
        dst_port: PortSet::new(ports),
        time,
        ..Matcher::default()
    });
    let rule = |label: &str, action, inline| Rule {
        label: label.into(),
        action,
        deny: DenyWith::default(),
        inline,
        named: vec![],
    };
    RuleSet::new(vec![
        rule(
            "list",
            Action::Deny,
            Matcher {
                blocklist: vec![list],
                ..Matcher::default()
            },
        ),
        rule(
            "domains",
            Action::Deny,
            Matcher {
                dst_domain: domains,
                dst_ip: vec!["10.0.0.0/8".parse().unwrap()],
                ..Matcher::default()
            },
        ),
        Rule {
            named: vec![("n".into(), true, named)],
            ..rule(
                "users",
                Action::Allow,
                Matcher {
                    user: vec!["alice".into()],
                    ..Matcher::default()
                },
            )
        },
        rule("rest", Action::Auth, Matcher::default()),
    ])
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fields: Vec<&str> = text.split('\n').collect();
    for f in &fields {
        let _ = normalize_host(f);
        let _ = percent_decode(f);
        let _ = has_encoded_control(f);
        let _ = url_extension(f);
        let _ = TimeWindow::parse(f);
        let _ = PortSet::parse_entry(f);
        if f.len() < 64 {
            let _ = Patterns::parse(&[f.to_string()]);
        }
    }
    let set = rules(&fields);
    let host = fields.get(4).copied().unwrap_or("example.com");
    let url = fields.get(5).copied().unwrap_or("http://example.com/");
    let seed = data.first().copied().unwrap_or(0);
    let groups = ["g".to_string()];
    for dst_ip in [None, Some(IpAddr::from([10, 1, 2, seed]))] {
        let req = Request {
            client: IpAddr::from([127, 0, 0, 1]),
            user: (seed % 2 == 0).then_some("alice"),
            groups: &groups,
            listener: "proxy",
            method: fields.get(6).copied().unwrap_or("GET"),
            scheme: "http",
            host,
            dst_ip,
            port: u16::from(seed) * 257,
            url,
            now: Clock::from_unix(i64::from(seed) * 3_600_000, i32::from(seed) - 128),
        };
        let _ = set.decide(&req);
    }
});
