//! Ordered access rules: the first rule whose conditions all match decides (Squid's
//! `http_access` semantics). With no rule at all, only loopback clients are allowed,
//! so a fresh install is never an open proxy; when rules exist and none matches,
//! the request is denied.
//!
//! Some conditions cannot be answered from the request alone: `dst_ip` needs the
//! resolved address (the caller resolves and asks again, see [`Verdict::NeedsAddress`]),
//! and `user`/`group` need credentials (an unauthenticated request that reaches such
//! a rule is challenged, like Squid's proxy_auth ACLs).

use std::net::IpAddr;
use std::sync::Arc;

use crate::blocklist::Blocklist;
use crate::cidr::Cidr;
use crate::matchers::{Clock, DomainList, Patterns, PortSet, TimeWindow, url_extension};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Clients must authenticate; with valid credentials the request is allowed.
    Auth,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Auth => "auth",
        }
    }
}

/// How a `deny` rule answers, when it does not use the standard 403 page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyWith {
    pub status: Option<u16>,
    pub message: Option<String>,
    /// Answer with a redirect (302) to this URL instead of an error page.
    pub redirect: Option<String>,
}

/// A named domain list loaded from a file.
#[derive(Debug)]
pub struct NamedList {
    pub name: String,
    pub list: Blocklist,
}

/// A set of conditions; every condition given must hold. Within one condition,
/// any listed value matching is enough. Empty conditions are not checked.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub src: Vec<Cidr>,
    pub user: Vec<String>,
    pub group: Vec<String>,
    pub dst_domain: DomainList,
    pub dst_regex: Option<Patterns>,
    pub url_regex: Option<Patterns>,
    /// File extensions of the URL's path, lowercase without the dot.
    pub url_ext: Vec<String>,
    pub dst_ip: Vec<Cidr>,
    pub dst_port: PortSet,
    /// Uppercase method names.
    pub method: Vec<String>,
    pub scheme: Vec<String>,
    pub listener: Vec<String>,
    pub time: Vec<TimeWindow>,
    pub blocklist: Vec<Arc<NamedList>>,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where the rule was written, for explaining decisions (`rule #2 (line 14)`).
    pub label: String,
    pub action: Action,
    pub deny: DenyWith,
    /// Conditions written in the rule itself.
    pub inline: Matcher,
    /// Named matchers (`match = ["office", "!guests"]`); `true` negates.
    pub named: Vec<(String, bool, Arc<Matcher>)>,
}

/// What the rules look at. `host` is normalised (lowercase ASCII, punycode, no
/// trailing dot; IP literals without brackets).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client: IpAddr,
    pub user: Option<&'a str>,
    pub groups: &'a [String],
    pub listener: &'a str,
    pub method: &'a str,
    /// `http`, `ftp`, or `tunnel` for CONNECT and SOCKS.
    pub scheme: &'a str,
    pub host: &'a str,
    /// The destination address: the literal in the request, or once resolved.
    pub dst_ip: Option<IpAddr>,
    pub port: u16,
    /// The request target as received (absolute URI, or `host:port` for tunnels).
    pub url: &'a str,
    pub now: Clock,
}

/// A blocklist entry that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHit<'a> {
    pub list: &'a str,
    pub entry: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub action: Action,
    /// The rule that decided, if one did.
    pub rule: Option<&'a Rule>,
    /// The rule's label or the built-in default that decided.
    pub by: &'a str,
    /// The blocklist entry that made the deciding rule match.
    pub blocked: Option<BlockHit<'a>>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.label == other.label
    }
}
impl Eq for Rule {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    Decided(Decision<'a>),
    /// A rule tests `dst_ip` and the address is not known yet: resolve the
    /// host and ask again with `dst_ip` set.
    NeedsAddress,
}

impl<'a> Verdict<'a> {
    /// The decision, for callers that always pass the address.
    pub fn decided(self) -> Option<Decision<'a>> {
        match self {
            Verdict::Decided(d) => Some(d),
            Verdict::NeedsAddress => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Yes,
    No,
    NeedsAddress,
    NeedsUser,
}

const DEFAULT_LABEL: &str = "default (loopback clients only)";
const NO_MATCH_LABEL: &str = "no rule matched";

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        RuleSet { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule looks at URLs (`url_regex`, `url_ext`, blocklists,
    /// whose URL patterns are matched on the request's URL).
    pub fn uses_url(&self) -> bool {
        let looks =
            |m: &Matcher| m.url_regex.is_some() || !m.url_ext.is_empty() || !m.blocklist.is_empty();
        self.rules
            .iter()
            .any(|r| looks(&r.inline) || r.named.iter().any(|(_, _, m)| looks(m)))
    }

    /// Whether any rule looks at the resolved destination address.
    pub fn uses_dst_ip(&self) -> bool {
        self.rules.iter().any(|r| {
            !r.inline.dst_ip.is_empty() || r.named.iter().any(|(_, _, m)| !m.dst_ip.is_empty())
        })
    }

    pub fn decide<'a>(&'a self, req: &Request<'_>) -> Verdict<'a> {
        if self.rules.is_empty() {
            let action = if is_loopback(req.client) {
                Action::Allow
            } else {
                Action::Deny
            };
            return Verdict::Decided(Decision {
                action,
                rule: None,
                by: DEFAULT_LABEL,
                blocked: None,
            });
        }
        for rule in &self.rules {
            let mut blocked = None;
            let mut outcome = rule.inline.eval(req, &mut blocked);
            for (_, negate, m) in &rule.named {
                if outcome == Outcome::No {
                    break;
                }
                let mut hit = None;
                let o = match (m.eval(req, &mut hit), negate) {
                    (Outcome::Yes, true) => Outcome::No,
                    (Outcome::No, true) => Outcome::Yes,
                    (o, _) => o,
                };
                if !negate && hit.is_some() {
                    blocked = hit;
                }
                outcome = combine(outcome, o);
            }
            match outcome {
                Outcome::No => continue,
                Outcome::NeedsAddress => return Verdict::NeedsAddress,
                Outcome::NeedsUser => {
                    return Verdict::Decided(Decision {
                        action: Action::Auth,
                        rule: Some(rule),
                        by: &rule.label,
                        blocked: None,
                    });
                }
                Outcome::Yes => {
                    let action = match rule.action {
                        // Authenticated users pass an `auth` rule.
                        Action::Auth if req.user.is_some() => Action::Allow,
                        a => a,
                    };
                    return Verdict::Decided(Decision {
                        action,
                        rule: Some(rule),
                        by: &rule.label,
                        blocked,
                    });
                }
            }
        }
        Verdict::Decided(Decision {
            action: Action::Deny,
            rule: None,
            by: NO_MATCH_LABEL,
            blocked: None,
        })
    }
}

/// Conjunction: a definite "no" wins; then the address is needed before the
/// user (resolving is cheaper than asking a person for a password).
fn combine(a: Outcome, b: Outcome) -> Outcome {
    use Outcome::*;
    match (a, b) {
        (No, _) | (_, No) => No,
        (NeedsAddress, _) | (_, NeedsAddress) => NeedsAddress,
        (NeedsUser, _) | (_, NeedsUser) => NeedsUser,
        (Yes, Yes) => Yes,
    }
}

impl Matcher {
    fn eval<'a>(&'a self, req: &Request<'_>, blocked: &mut Option<BlockHit<'a>>) -> Outcome {
        let listed = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        let definite = listed(&self.listener, req.listener)
            && (self.src.is_empty() || self.src.iter().any(|c| c.contains(req.client)))
            && (self.method.is_empty() || self.method.iter().any(|m| m == req.method))
            && listed(&self.scheme, req.scheme)
            && (self.dst_port.is_empty() || self.dst_port.contains(req.port))
            && (self.dst_domain.is_empty() || self.dst_domain.matches(req.host))
            && self.dst_regex.as_ref().is_none_or(|p| p.is_match(req.host))
            && self.url_regex.as_ref().is_none_or(|p| p.is_match(req.url))
            && (self.url_ext.is_empty()
                || url_extension(req.url).is_some_and(|e| self.url_ext.contains(&e)))
            && (self.time.is_empty() || self.time.iter().any(|t| t.contains(req.now)));
        if !definite {
            return Outcome::No;
        }
        if !self.blocklist.is_empty() {
            let hit = self.blocklist.iter().find_map(|l| {
                l.list
                    .match_request(req.host, req.url)
                    .map(|entry| BlockHit {
                        list: &l.name,
                        entry,
                    })
            });
            match hit {
                Some(h) => *blocked = Some(h),
                None => return Outcome::No,
            }
        }
        if !self.dst_ip.is_empty() {
            match req.dst_ip {
                None => return Outcome::NeedsAddress,
                Some(ip) if !self.dst_ip.iter().any(|c| c.contains(ip)) => return Outcome::No,
                Some(_) => {}
            }
        }
        if self.user.is_empty() && self.group.is_empty() {
            return Outcome::Yes;
        }
        let Some(user) = req.user else {
            return Outcome::NeedsUser;
        };
        let user_ok = self.user.is_empty() || self.user.iter().any(|u| u == user);
        let group_ok = self.group.is_empty() || self.group.iter().any(|g| req.groups.contains(g));
        if user_ok && group_ok {
            Outcome::Yes
        } else {
            Outcome::No
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ip: &str) -> Request<'static> {
        Request {
            client: ip.parse().unwrap(),
            user: None,
            groups: &[],
            listener: "proxy",
            method: "GET",
            scheme: "http",
            host: "example.com",
            dst_ip: None,
            port: 80,
            url: "http://example.com/",
            now: Clock {
                weekday: 0,
                minute: 600,
            },
        }
    }

    fn rule(label: &str, action: Action, inline: Matcher) -> Rule {
        Rule {
            label: label.into(),
            action,
            deny: DenyWith::default(),
            inline,
            named: vec![],
        }
    }

    fn decide<'a>(rs: &'a RuleSet, r: &Request<'_>) -> Decision<'a> {
        rs.decide(r).decided().expect("decided")
    }

    #[test]
    fn default_is_loopback_only() {
        let rs = RuleSet::default();
        assert_eq!(decide(&rs, &req("127.0.0.1")).action, Action::Allow);
        assert_eq!(decide(&rs, &req("::1")).action, Action::Allow);
        assert_eq!(decide(&rs, &req("::ffff:127.0.0.1")).action, Action::Allow);
        assert_eq!(decide(&rs, &req("10.0.0.1")).action, Action::Deny);
    }

    #[test]
    fn first_match_wins_and_unmatched_is_denied() {
        let rs = RuleSet::new(vec![
            rule(
                "rule #1",
                Action::Deny,
                Matcher {
                    src: vec!["10.0.0.5".parse().unwrap()],
                    ..Matcher::default()
                },
            ),
            rule(
                "rule #2",
                Action::Allow,
                Matcher {
                    src: vec!["10.0.0.0/8".parse().unwrap()],
                    ..Matcher::default()
                },
            ),
        ]);
        assert_eq!(decide(&rs, &req("10.0.0.5")).by, "rule #1");
        assert_eq!(decide(&rs, &req("10.0.0.6")).action, Action::Allow);
        let d = decide(&rs, &req("192.168.0.1"));
        assert_eq!((d.action, d.by), (Action::Deny, "no rule matched"));
    }

    #[test]
    fn each_condition() {
        let only = |m: Matcher| RuleSet::new(vec![rule("r", Action::Allow, m)]);
        let allowed = |rs: &RuleSet, r: &Request| decide(rs, r).action == Action::Allow;
        let base = req("127.0.0.1");

        let rs = only(Matcher {
            dst_domain: DomainList::parse(&[".example.com".into()]).unwrap(),
            ..Matcher::default()
        });
        assert!(allowed(&rs, &base));
        assert!(!allowed(
            &rs,
            &Request {
                host: "example.org",
                ..base
            }
        ));

        let rs = only(Matcher {
            dst_port: PortSet::new(vec![(80, 80), (8000, 8999)]),
            ..Matcher::default()
        });
        assert!(allowed(&rs, &Request { port: 8080, ..base }));
        assert!(!allowed(&rs, &Request { port: 443, ..base }));

        let rs = only(Matcher {
            method: vec!["POST".into()],
            ..Matcher::default()
        });
        assert!(!allowed(&rs, &base));
        assert!(allowed(
            &rs,
            &Request {
                method: "POST",
                ..base
            }
        ));

        let rs = only(Matcher {
            scheme: vec!["tunnel".into()],
            listener: vec!["proxy".into()],
            ..Matcher::default()
        });
        assert!(!allowed(&rs, &base));
        assert!(allowed(
            &rs,
            &Request {
                scheme: "tunnel",
                ..base
            }
        ));
        assert!(!allowed(
            &rs,
            &Request {
                scheme: "tunnel",
                listener: "other",
                ..base
            }
        ));

        let rs = only(Matcher {
            dst_regex: Some(Patterns::parse(&["^ex.*\\.com$".into()]).unwrap()),
            ..Matcher::default()
        });
        assert!(allowed(&rs, &base));
        assert!(!allowed(
            &rs,
            &Request {
                host: "example.org",
                ..base
            }
        ));

        let rs = only(Matcher {
            url_regex: Some(Patterns::parse(&["/ads/".into()]).unwrap()),
            ..Matcher::default()
        });
        assert!(allowed(
            &rs,
            &Request {
                url: "http://a.com/ads/x.gif",
                ..base
            }
        ));
        assert!(!allowed(&rs, &base));

        let rs = only(Matcher {
            url_ext: vec!["exe".into()],
            ..Matcher::default()
        });
        assert!(allowed(
            &rs,
            &Request {
                url: "http://a.com/setup.EXE",
                ..base
            }
        ));
        assert!(!allowed(&rs, &base));

        let rs = only(Matcher {
            time: vec![TimeWindow::parse("Mon 09:00-11:00").unwrap()],
            ..Matcher::default()
        });
        assert!(allowed(&rs, &base));
        let evening = Clock {
            weekday: 0,
            minute: 20 * 60,
        };
        assert!(!allowed(
            &rs,
            &Request {
                now: evening,
                ..base
            }
        ));
    }

    #[test]
    fn dst_ip_asks_for_the_address() {
        let rs = RuleSet::new(vec![
            rule(
                "no-internal",
                Action::Deny,
                Matcher {
                    dst_ip: vec!["10.0.0.0/8".parse().unwrap()],
                    ..Matcher::default()
                },
            ),
            rule("all", Action::Allow, Matcher::default()),
        ]);
        assert!(rs.uses_dst_ip());
        let base = req("127.0.0.1");
        assert_eq!(rs.decide(&base), Verdict::NeedsAddress);
        let inside = Request {
            dst_ip: Some("10.1.2.3".parse().unwrap()),
            ..base
        };
        assert_eq!(decide(&rs, &inside).by, "no-internal");
        let outside = Request {
            dst_ip: Some("192.0.2.1".parse().unwrap()),
            ..base
        };
        assert_eq!(decide(&rs, &outside).by, "all");
        // A rule that fails on something else never needs the address.
        let rs = RuleSet::new(vec![rule(
            "r",
            Action::Deny,
            Matcher {
                dst_ip: vec!["10.0.0.0/8".parse().unwrap()],
                method: vec!["POST".into()],
                ..Matcher::default()
            },
        )]);
        assert_eq!(decide(&rs, &base).by, NO_MATCH_LABEL);
    }

    #[test]
    fn users_groups_and_auth() {
        let rs = RuleSet::new(vec![
            rule(
                "admins",
                Action::Allow,
                Matcher {
                    group: vec!["admin".into()],
                    dst_domain: DomainList::parse(&["admin.test".into()]).unwrap(),
                    ..Matcher::default()
                },
            ),
            rule(
                "bob-blocked",
                Action::Deny,
                Matcher {
                    user: vec!["bob".into()],
                    ..Matcher::default()
                },
            ),
            rule("everyone", Action::Auth, Matcher::default()),
        ]);
        let base = req("127.0.0.1");
        let d = decide(&rs, &base);
        assert_eq!((d.action, d.by), (Action::Auth, "bob-blocked"));
        let groups = ["admin".to_string()];
        let alice = Request {
            user: Some("alice"),
            groups: &groups,
            host: "admin.test",
            ..base
        };
        assert_eq!(decide(&rs, &alice).by, "admins");
        let bob = Request {
            user: Some("bob"),
            ..base
        };
        assert_eq!(decide(&rs, &bob).action, Action::Deny);
        let carol = Request {
            user: Some("carol"),
            ..base
        };
        let d = decide(&rs, &carol);
        assert_eq!((d.action, d.by), (Action::Allow, "everyone"));
        let anonymous_admin_host = Request {
            host: "admin.test",
            ..base
        };
        assert_eq!(decide(&rs, &anonymous_admin_host).action, Action::Auth);
    }

    #[test]
    fn named_matchers_and_negation() {
        let office = Arc::new(Matcher {
            src: vec!["10.0.0.0/8".parse().unwrap()],
            ..Matcher::default()
        });
        let lab = Arc::new(Matcher {
            src: vec!["10.9.0.0/16".parse().unwrap()],
            ..Matcher::default()
        });
        let rs = RuleSet::new(vec![Rule {
            label: "office-not-lab".into(),
            action: Action::Allow,
            deny: DenyWith::default(),
            inline: Matcher::default(),
            named: vec![("office".into(), false, office), ("lab".into(), true, lab)],
        }]);
        assert_eq!(decide(&rs, &req("10.1.0.1")).action, Action::Allow);
        assert_eq!(decide(&rs, &req("10.9.0.1")).action, Action::Deny);
        assert_eq!(decide(&rs, &req("192.0.2.1")).action, Action::Deny);
    }

    #[test]
    fn blocklist_hits_are_reported() {
        let (list, problems) = Blocklist::parse("ads.example\n");
        assert!(problems.is_empty());
        let ads = Arc::new(NamedList {
            name: "ads".into(),
            list,
        });
        let rs = RuleSet::new(vec![
            rule(
                "block-ads",
                Action::Deny,
                Matcher {
                    blocklist: vec![ads],
                    ..Matcher::default()
                },
            ),
            rule("all", Action::Allow, Matcher::default()),
        ]);
        let base = req("127.0.0.1");
        let hit = Request {
            host: "x.ads.example",
            url: "http://x.ads.example/",
            ..base
        };
        let d = decide(&rs, &hit);
        assert_eq!(d.action, Action::Deny);
        assert_eq!(
            d.blocked,
            Some(BlockHit {
                list: "ads",
                entry: "ads.example"
            })
        );
        assert_eq!(decide(&rs, &base).by, "all");
    }
}
