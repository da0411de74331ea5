//! Ordered access rules: the first rule whose matchers all match decides (Squid's
//! `http_access` semantics). With no rule at all, only loopback clients are allowed,
//! so a fresh install is never an open proxy.

use std::net::IpAddr;

use crate::cidr::Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One `[[rule]]`. Empty matcher lists match everything.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where the rule was written, for explaining decisions (`rule #2 (line 14)`).
    pub label: String,
    pub action: Action,
    pub src: Vec<Cidr>,
}

/// What the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub client: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The rule that decided, or the built-in default.
    pub by: String,
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        RuleSet { rules }
    }

    pub fn decide(&self, req: &Request) -> Decision {
        if self.rules.is_empty() {
            let loopback = match req.client {
                IpAddr::V4(v4) => v4.is_loopback(),
                IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            };
            let action = if loopback {
                Action::Allow
            } else {
                Action::Deny
            };
            return Decision {
                action,
                by: "default (loopback clients only)".into(),
            };
        }
        for rule in &self.rules {
            if rule.src.is_empty() || rule.src.iter().any(|c| c.contains(req.client)) {
                return Decision {
                    action: rule.action,
                    by: rule.label.clone(),
                };
            }
        }
        Decision {
            action: Action::Deny,
            by: "no rule matched".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ip: &str) -> Request {
        Request {
            client: ip.parse().unwrap(),
        }
    }

    #[test]
    fn default_is_loopback_only() {
        let rs = RuleSet::default();
        assert_eq!(rs.decide(&req("127.0.0.1")).action, Action::Allow);
        assert_eq!(rs.decide(&req("::1")).action, Action::Allow);
        assert_eq!(rs.decide(&req("::ffff:127.0.0.1")).action, Action::Allow);
        assert_eq!(rs.decide(&req("10.0.0.1")).action, Action::Deny);
    }

    #[test]
    fn first_match_wins_and_unmatched_is_denied() {
        let rs = RuleSet::new(vec![
            Rule {
                label: "rule #1".into(),
                action: Action::Deny,
                src: vec!["10.0.0.5".parse().unwrap()],
            },
            Rule {
                label: "rule #2".into(),
                action: Action::Allow,
                src: vec!["10.0.0.0/8".parse().unwrap()],
            },
        ]);
        assert_eq!(rs.decide(&req("10.0.0.5")).by, "rule #1");
        assert_eq!(rs.decide(&req("10.0.0.6")).action, Action::Allow);
        let d = rs.decide(&req("192.168.0.1"));
        assert_eq!((d.action, d.by.as_str()), (Action::Deny, "no rule matched"));
    }
}
