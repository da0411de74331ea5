//! The "authenticate" stage: Basic proxy authentication (RFC 9110 §11.7.1,
//! RFC 7617) against the htpasswd users, or a program that checks them
//! (`auth_program`). Verified credentials are remembered for
//! `cache_ttl` so bcrypt runs once per user and password, not per request;
//! failed attempts are counted per client address and answered with 429 once
//! `max_failures` is reached within `failure_window`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::config::AuthConfig;

/// The outcome of looking at a request's `Proxy-Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials were sent.
    Absent,
    Valid(Arc<str>),
    /// Wrong user or password, or an unreadable field.
    Invalid,
    /// Too many failures from this address: try again after this long.
    Throttled(Duration),
    /// The credentials could not be checked (the auth program failed): why.
    Unavailable(String),
}

struct CachedUser {
    user: Arc<str>,
    expires: Instant,
}

/// Process-wide authentication state; it outlives configuration reloads but
/// forgets cached users when the user file changes.
pub struct Authenticator {
    /// Keyed by a salted digest of user and password, never the password itself.
    verified: Mutex<HashMap<[u8; 20], CachedUser>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Identity of the user file the cache was filled from.
    generation: Mutex<usize>,
    salt: [u8; 16],
}

/// Bounds on the caches, so a flood of distinct credentials or addresses
/// cannot grow them without limit.
const MAX_CACHED: usize = 100_000;

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new()
    }
}

impl Authenticator {
    pub fn new() -> Authenticator {
        let mut salt = [0u8; 16];
        // Unpredictable per process, so cache keys cannot be precomputed.
        let seed = std::collections::hash_map::RandomState::new();
        for (i, chunk) in salt.chunks_mut(8).enumerate() {
            use std::hash::{BuildHasher, Hasher};
            let mut h = seed.build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        Authenticator {
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            generation: Mutex::new(0),
            salt,
        }
    }

    /// Checks the `Proxy-Authorization` value, if any.
    pub async fn check(
        &self,
        cfg: &AuthConfig,
        client: IpAddr,
        field: Option<&[u8]>,
    ) -> Credentials {
        if let Some(wait) = self.throttled(cfg, client) {
            return Credentials::Throttled(wait);
        }
        let Some(field) = field else {
            return Credentials::Absent;
        };
        let Some((user, password)) = parse_basic(field) else {
            self.failed(cfg, client);
            return Credentials::Invalid;
        };
        let key = self.key(&user, &password);
        self.forget_if_users_changed(cfg);
        let now = Instant::now();
        if let Some(hit) = self.verified.lock().expect("auth cache").get(&key)
            && hit.expires > now
        {
            return Credentials::Valid(hit.user.clone());
        }
        let ok = match &cfg.program {
            Some(program) => match program.verify(&user, &password).await {
                crate::guard::auth_program::Verdict::Valid => true,
                crate::guard::auth_program::Verdict::Invalid => false,
                // Not the client's failure: not counted against it.
                crate::guard::auth_program::Verdict::Unavailable(why) => {
                    return Credentials::Unavailable(why);
                }
            },
            None => {
                // bcrypt takes tens of milliseconds by design: keep it off the I/O threads.
                let users = cfg.users.clone();
                let (u, pw) = (user.clone(), password);
                tokio::task::spawn_blocking(move || users.verify(&u, &pw))
                    .await
                    .unwrap_or(false)
            }
        };
        if !ok {
            self.failed(cfg, client);
            return Credentials::Invalid;
        }
        let user: Arc<str> = user.into();
        let mut cache = self.verified.lock().expect("auth cache");
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            CachedUser {
                user: user.clone(),
                expires: now + cfg.cache_ttl,
            },
        );
        Credentials::Valid(user)
    }

    fn key(&self, user: &str, password: &str) -> [u8; 20] {
        let mut h = Sha1::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn forget_if_users_changed(&self, cfg: &AuthConfig) {
        let current = match &cfg.program {
            Some(program) => Arc::as_ptr(program) as usize,
            None => Arc::as_ptr(&cfg.users) as usize,
        };
        let mut generation = self.generation.lock().expect("auth generation");
        if *generation != current {
            *generation = current;
            self.verified.lock().expect("auth cache").clear();
        }
    }

    fn throttled(&self, cfg: &AuthConfig, client: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().expect("auth failures");
        let (count, since) = failures.get(&client)?;
        let elapsed = since.elapsed();
        (*count >= cfg.max_failures && elapsed < cfg.failure_window)
            .then(|| cfg.failure_window - elapsed)
    }

    fn failed(&self, cfg: &AuthConfig, client: IpAddr) {
        crate::observe::metrics::AUTH_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut failures = self.failures.lock().expect("auth failures");
        let now = Instant::now();
        if failures.len() >= MAX_CACHED {
            failures.retain(|_, (_, since)| now.duration_since(*since) < cfg.failure_window);
        }
        let entry = failures.entry(client).or_insert((0, now));
        if now.duration_since(entry.1) >= cfg.failure_window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

/// `Basic base64(user:password)`; the scheme is case-insensitive (RFC 9110 §11.1).
pub fn parse_basic(field: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(field).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    // RFC 7617 §2: the user-id cannot contain a colon; the password may.
    let (user, password) = decoded.split_once(':')?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// The `Proxy-Authenticate` challenge (RFC 7617 §2.1 with the charset parameter).
pub fn challenge(realm: &str) -> String {
    format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        // "alice:pa:ss" — the password keeps its colon.
        assert_eq!(
            parse_basic(b"Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            parse_basic(b"basic YWxpY2U6cGE6c3M=").map(|c| c.0),
            Some("alice".into())
        );
        for bad in [
            &b"Bearer abc"[..],
            b"Basic",
            b"Basic !!!",
            b"Basic YWxpY2U=",
            b"Basic OnB3",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }
}
