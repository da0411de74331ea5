//! The "authenticate" and "decide" stages of the request's path, shared by
//! every protocol: rate limits, credentials, the access rules (resolving the
//! destination only when a rule tests its address), and the answer when the
//! request may not pass. `postern explain` runs this same code.

pub mod auth;
pub mod auth_program;
pub mod limits;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_policy::matchers::Clock;
use postern_policy::rules::{Action, Decision, Request, Verdict};

use crate::config::Config;
use crate::egress::Resolver;
use crate::error::{Answer, ErrorKind, ProxyError};
use auth::{Authenticator, Credentials};
use limits::{Bucket, Limits};

/// Process-wide guard state (caches and counters survive reloads).
#[derive(Default)]
pub struct Guard {
    pub auth: Authenticator,
    /// The admin listeners' logins, kept apart from the proxy users' cache.
    pub admin_auth: Authenticator,
    pub limits: Limits,
}

/// What the guard is asked about one request or tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub client: IpAddr,
    pub listener: &'a str,
    pub method: &'a str,
    /// `http`, `ftp` or `tunnel`.
    pub scheme: &'a str,
    /// Normalised host (see `postern_policy::host`).
    pub host: &'a str,
    /// The destination when the request names an address.
    pub literal_ip: Option<IpAddr>,
    pub port: u16,
    pub url: &'a str,
    pub proxy_authorization: Option<&'a [u8]>,
    /// Treat the request as coming from this user without credentials
    /// (`postern explain --user`).
    pub assume_user: Option<&'a str>,
}

/// A request that may pass, and what the later stages must respect.
#[derive(Debug, Default)]
pub struct Admission<'c> {
    pub user: Option<Arc<str>>,
    /// Set when the rules looked at the resolved addresses: only these may be
    /// connected to.
    pub pinned: Option<Vec<IpAddr>>,
    /// The rules refused some of the name's addresses (and allowed the
    /// rest): a parent proxy, which chooses among all of them itself,
    /// cannot be trusted with it.
    pub refused_some: bool,
    /// The rule (or default) that allowed it.
    pub by: &'c str,
    /// Bandwidth buckets the transfer toward the client waits on.
    pub buckets: Vec<Arc<Bucket>>,
}

impl Guard {
    pub async fn admit<'c>(
        &self,
        cfg: &'c Config,
        resolver: &Resolver,
        s: &Subject<'_>,
    ) -> Result<Admission<'c>, ProxyError> {
        if let Some(rate) = cfg.limits.client_requests
            && let Err(wait) = self.limits.client_requests.check(&s.client, rate)
        {
            return Err(too_many(
                format!(
                    "more than {} requests per {}s from {}",
                    rate.count,
                    rate.per.as_secs(),
                    s.client
                ),
                wait,
                "limits.client_requests",
            ));
        }
        let mut bad_credentials = false;
        let user = match (&cfg.auth, s.assume_user) {
            (_, Some(u)) => Some(Arc::from(u)),
            (None, None) => None,
            (Some(auth_cfg), None) => {
                match self
                    .auth
                    .check(auth_cfg, s.client, s.proxy_authorization)
                    .await
                {
                    Credentials::Valid(user) => Some(user),
                    Credentials::Absent => None,
                    Credentials::Invalid => {
                        bad_credentials = true;
                        None
                    }
                    // The reason (on stderr) is for the operator, not the client.
                    Credentials::Unavailable(_) => {
                        return Err(ProxyError::new(
                            ErrorKind::AuthUnavailable,
                            "the authentication program did not answer; try again later",
                        ));
                    }
                    Credentials::Throttled(wait) => {
                        return Err(too_many(
                            format!("too many failed authentication attempts from {}", s.client),
                            wait,
                            "auth.max_failures",
                        ));
                    }
                }
            }
        };
        if let (Some(user), Some(rate)) = (&user, cfg.limits.user_requests)
            && let Err(wait) = self.limits.user_requests.check(user, rate)
        {
            return Err(too_many(
                format!(
                    "more than {} requests per {}s for user {user}",
                    rate.count,
                    rate.per.as_secs()
                ),
                wait,
                "limits.user_requests",
            ));
        }
        let groups: &[String] = match (&cfg.auth, &user) {
            (Some(a), Some(u)) => a.groups.of(u),
            _ => &[],
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let req = Request {
            client: s.client,
            user: user.as_deref(),
            groups,
            listener: s.listener,
            method: s.method,
            scheme: s.scheme,
            host: s.host,
            dst_ip: s.literal_ip,
            port: s.port,
            url: s.url,
            now: Clock::from_unix(now, cfg.utc_offset_minutes),
        };
        let mut refused_some = false;
        let (decision, pinned) = match cfg.rules.decide(&req) {
            Verdict::Decided(d) => (d, None),
            Verdict::NeedsAddress => {
                let ips = resolver
                    .resolve(s.host)
                    .await
                    .map_err(|e| crate::egress::connect::resolve_error(s.host, e))?;
                let mut allowed = Vec::new();
                let mut refusal = None;
                for ip in ips {
                    let d = cfg
                        .rules
                        .decide(&Request {
                            dst_ip: Some(ip),
                            ..req
                        })
                        .decided()
                        .expect("the address is known");
                    if d.action == Action::Allow {
                        allowed.push(ip);
                    } else if refusal.is_none() {
                        refusal = Some(d);
                    }
                }
                refused_some = refusal.is_some();
                match (allowed.is_empty(), refusal) {
                    (true, Some(d)) => (d, None),
                    (false, _) | (true, None) => {
                        let d = cfg
                            .rules
                            .decide(&Request {
                                dst_ip: allowed.first().copied(),
                                ..req
                            })
                            .decided()
                            .expect("the address is known");
                        (d, Some(allowed))
                    }
                }
            }
        };
        match decision.action {
            Action::Allow => {
                let mut buckets = Vec::new();
                if let Some(rate) = cfg.limits.client_bandwidth {
                    buckets.push(self.limits.client_bandwidth.get(&s.client, rate));
                }
                if let (Some(rate), Some(u)) = (cfg.limits.user_bandwidth, &user) {
                    buckets.push(self.limits.user_bandwidth.get(u, rate));
                }
                Ok(Admission {
                    user,
                    pinned,
                    refused_some,
                    by: decision.by,
                    buckets,
                })
            }
            Action::Auth => Err(auth_required(cfg, &decision, bad_credentials)),
            Action::Deny => Err(denied(s, &decision)),
        }
    }
}

fn too_many(detail: String, wait: Duration, by: &str) -> ProxyError {
    // RFC 6585 §4: Retry-After says when to come back (whole seconds, rounded up).
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut e = ProxyError::new(ErrorKind::RateLimited, detail).with_answer(Answer {
        fields: vec![("Retry-After", secs.max(1).to_string())],
        ..Answer::default()
    });
    e.detail.push_str(&format!(" ({by})"));
    e
}

fn auth_required(cfg: &Config, d: &Decision<'_>, bad_credentials: bool) -> ProxyError {
    let realm = cfg
        .auth
        .as_ref()
        .map_or("Postern proxy", |a| a.realm.as_str());
    let detail = if bad_credentials {
        format!(
            "wrong user name or password; credentials are required by {}",
            d.by
        )
    } else {
        format!("credentials are required by {}", d.by)
    };
    ProxyError::new(ErrorKind::AuthRequired, detail).with_answer(Answer {
        fields: vec![("Proxy-Authenticate", auth::challenge(realm))],
        ..Answer::default()
    })
}

fn denied(s: &Subject<'_>, d: &Decision<'_>) -> ProxyError {
    let (kind, detail) = match d.blocked {
        Some(hit) => (
            ErrorKind::Blocked,
            format!(
                "{} is on blocklist `{}` (entry `{}`); denied by {}",
                s.host, hit.list, hit.entry, d.by
            ),
        ),
        None => (ErrorKind::Denied, format!("denied by {}", d.by)),
    };
    let mut err = ProxyError::new(kind, detail);
    if let Some(rule) = d.rule {
        let w = &rule.deny;
        if w.status.is_some() || w.message.is_some() || w.redirect.is_some() {
            let mut answer = Answer {
                status: w.status,
                message: w.message.clone(),
                fields: Vec::new(),
            };
            if let Some(url) = &w.redirect {
                answer.status = Some(302);
                answer.fields.push(("Location", url.clone()));
            }
            err = err.with_answer(answer);
        }
    }
    err
}
