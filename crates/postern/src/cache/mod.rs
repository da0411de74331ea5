//! The "cache" stage of the request's path (RFC 9111 shared cache), for
//! forward and reverse traffic alike.
//!
//! Before a request goes upstream the cache is asked: a fresh (or acceptably
//! stale) stored response answers it directly; a stale one with validators
//! turns the request into a conditional one, and a 304 refreshes and serves
//! the stored response (§4.3.4); a miss goes upstream with a ticket, and the
//! response is stored while it streams to the client, only if it completes.
//! Concurrent misses for one URL wait for the first (request collapsing).
//! Every response on a caching listener carries `Cache-Status` (RFC 9211).

pub mod disk;
pub mod flow;
pub mod h2;
pub mod policy;
pub mod range;
pub mod refresh;
pub mod store;

pub use flow::Ticket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::http1::RequestHead;
use crate::http1::fields::ConnectionOptions;
use crate::http1::head::{Fields, ResponseHead};
use crate::observe::time::parse_http_date;
use policy::{Directives, Use};
use store::{Entry, MemoryStore};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

pub struct Cache {
    pub store: MemoryStore,
    /// Largest response kept in memory.
    pub max_object_size: usize,
    pub disk: Option<Arc<disk::DiskStore>>,
    collapsing: Mutex<HashMap<String, Arc<Notify>>>,
    /// URLs with a background revalidation running.
    refreshing: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// A running background revalidation of a URL; ends the claim when dropped.
pub struct RefreshClaim {
    set: Arc<Mutex<std::collections::HashSet<String>>>,
    url: String,
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.url);
    }
}

/// The longest a request waits for another one fetching the same URL (as
/// nginx's `proxy_cache_lock_timeout`): a leader whose client reads slowly
/// holds its copy back until the body is through, and the others then go
/// to the origin themselves.
pub const COLLAPSE_WAIT: Duration = Duration::from_secs(5);

/// Leadership of a miss: others asking for the same URL wait until it ends.
pub struct CollapseGuard {
    cache: Arc<Cache>,
    url: String,
    notify: Arc<Notify>,
}

impl CollapseGuard {
    /// Lets the waiting requests go now (they look again, and go to the
    /// origin themselves when nothing was stored); later requests for the
    /// URL no longer wait for this one. Dropping the guard does the same.
    pub fn release(&self) {
        let mut map = self
            .cache
            .collapsing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only this guard's own entry: once released, another request may
        // have become the URL's leader.
        if map
            .get(&self.url)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            map.remove(&self.url);
        }
        drop(map);
        self.notify.notify_waiters();
    }
}

impl Drop for CollapseGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the cache found for a request.
pub struct Found {
    pub entry: Arc<Entry>,
    pub age: u64,
    pub usable: Use,
}

impl Cache {
    pub fn new(memory: usize, max_object_size: usize, disk: Option<disk::DiskStore>) -> Cache {
        Cache {
            store: MemoryStore::new(memory),
            max_object_size,
            disk: disk.map(Arc::new),
            collapsing: Mutex::new(HashMap::new()),
            refreshing: Arc::default(),
        }
    }

    /// The largest response either tier keeps: how much of a payload to tap.
    pub fn tap_limit(&self) -> usize {
        self.disk.as_ref().map_or(self.max_object_size, |d| {
            d.max_object_size.max(self.max_object_size)
        })
    }

    /// Stores a complete response in memory (if small enough) and on disk
    /// (written from a blocking thread, so the request does not wait).
    pub fn keep(&self, entry: Entry) {
        let entry = Arc::new(entry);
        if let Some(disk) = &self.disk
            && entry.body.len() <= disk.max_object_size
        {
            // Registered now, so an invalidation that comes before the
            // write is done cancels it.
            let write = disk.begin_write(&entry.url);
            let (disk, e) = (disk.clone(), entry.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(err) = disk.write_registered(&e, write) {
                    eprintln!("postern: cache: cannot write {}: {err}", e.url);
                }
            });
        }
        if entry.body.len() <= self.max_object_size {
            self.store.offer(entry);
        }
    }

    /// Stores a complete 200 response that did not come over HTTP (an
    /// ftp:// download): its freshness comes from its fields as usual.
    pub fn keep_plain(
        &self,
        url: &str,
        request_time: i64,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    ) {
        let storing = Storing {
            url: url.to_string(),
            request_time,
            vary: Vec::new(),
            targeted: false,
        };
        let entry = build_entry(storing, 200, headers, body, now());
        if entry.lifetime > 0 {
            self.keep(entry);
        }
    }

    /// The right to revalidate `url` in the background, unless taken.
    pub fn claim_refresh(&self, url: &str) -> Option<RefreshClaim> {
        let mut set = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(url.to_string()).then(|| RefreshClaim {
            set: self.refreshing.clone(),
            url: url.to_string(),
        })
    }

    /// A response from the disk tier, verified, with how it may be used.
    /// It is promoted to memory when the memory tier keeps responses of its
    /// size; a larger one is served from the disk entry as it is (read
    /// again on the next request).
    /// `targeted`: the request came to a reverse listener (RFC 9213).
    pub async fn lookup_disk(
        &self,
        url: &str,
        head: &RequestHead,
        req_cc: &Directives,
        targeted: bool,
    ) -> Option<Found> {
        let disk = self.disk.as_ref()?;
        let (path, _) = disk.candidates(url).into_iter().rev().find(|(_, vary)| {
            vary.iter()
                .all(|(n, v)| policy::vary_value(head.values(n)) == *v)
        })?;
        let (disk2, url2) = (disk.clone(), url.to_string());
        let (meta, body) = tokio::task::spawn_blocking(move || disk2.read_path(&url2, &path))
            .await
            .ok()??;
        let entry = Arc::new(build_entry(
            Storing {
                url: meta.url,
                request_time: meta.request_time,
                vary: meta.vary,
                targeted,
            },
            meta.status,
            meta.headers,
            body,
            meta.response_time,
        ));
        if entry.body.len() <= self.max_object_size {
            self.store.insert_arc(entry.clone());
        }
        Some(found(entry, req_cc))
    }

    /// The stored response for this request (§4: URI and Vary), with how it
    /// may be used.
    pub fn lookup(&self, url: &str, head: &RequestHead, req_cc: &Directives) -> Option<Found> {
        let entry = self.store.find(url, |e| vary_matches(e, head))?;
        Some(found(entry, req_cc))
    }

    /// The stored response for this request from memory, else from disk.
    pub async fn lookup_any(
        &self,
        url: &str,
        head: &RequestHead,
        req_cc: &Directives,
        targeted: bool,
    ) -> Option<Found> {
        match self.lookup(url, head, req_cc) {
            Some(found) => Some(found),
            None => self.lookup_disk(url, head, req_cc, targeted).await,
        }
    }

    /// Becomes the one request fetching `url`, or waits for the one that
    /// already is: until its response is stored or dropped, for at most
    /// `wait` and [`COLLAPSE_WAIT`]. `None`: waited; look again.
    pub async fn collapse(self: &Arc<Self>, url: &str, wait: Duration) -> Option<CollapseGuard> {
        let notify;
        let notified;
        {
            let mut map = self.collapsing.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(url) {
                Some(n) => notify = n.clone(),
                None => {
                    let notify = Arc::new(Notify::new());
                    map.insert(url.to_string(), notify.clone());
                    return Some(CollapseGuard {
                        cache: self.clone(),
                        url: url.to_string(),
                        notify,
                    });
                }
            }
            // Made while the leader cannot finish: a `Notified` receives
            // `notify_waiters` from the moment it exists, polled or not.
            notified = notify.notified();
        }
        let _ = tokio::time::timeout(wait.min(COLLAPSE_WAIT), notified).await;
        None
    }

    fn remove(&self, url: &str) {
        self.store.remove(url);
        if let Some(d) = &self.disk {
            d.remove(url);
        }
    }

    /// §4.4: a successful unsafe request invalidates the URI, and Location
    /// and Content-Location when they are on the same origin.
    pub fn invalidate(&self, url: &str, response: &ResponseHead) {
        self.remove(url);
        for name in ["location", "content-location"] {
            if let Some(v) = response.first(name)
                && let Some(target) = same_origin_target(url, &String::from_utf8_lossy(v))
            {
                self.remove(&target);
            }
        }
    }
}

/// A URI reference split into its parts (RFC 3986 §3, §4.1); the fragment
/// is left out.
struct Reference<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
}

fn split_reference(text: &str) -> Reference<'_> {
    let text = text.split('#').next().unwrap_or("");
    // A scheme is letters, digits, "+", "-" and "." before the first ":",
    // starting with a letter and ahead of any "/", "?" (§3.1, §4.2).
    let scheme_end = text.find(':').filter(|&i| {
        let s = &text[..i];
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let (scheme, rest) = match scheme_end {
        Some(i) => (Some(&text[..i]), &text[i + 1..]),
        None => (None, text),
    };
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(r) => {
            let end = r.find(['/', '?']).unwrap_or(r.len());
            (Some(&r[..end]), &r[end..])
        }
        None => (None, rest),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Reference {
        scheme,
        authority,
        path,
        query,
    }
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut out = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(r) = input.strip_prefix("../") {
            input = r;
        } else if let Some(r) = input.strip_prefix("./") {
            input = r;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            let cut = out.rfind('/').unwrap_or(0);
            out.truncate(cut);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            out.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    out
}

/// Scheme, host and port, compared as RFC 6454 origins are: case aside,
/// and the default port spelled or not.
fn origin_key(scheme: &str, authority: &str) -> (String, String, String) {
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
        _ => (authority, ""),
    };
    let port = match (scheme.as_str(), port) {
        ("http", "") => "80",
        ("https", "") => "443",
        (_, p) => p,
    }
    .to_string();
    (scheme, host.to_ascii_lowercase(), port)
}

/// The stored URL that a Location or Content-Location value names, when it
/// is on the same origin as `url` (§4.4): the reference resolved against
/// `url` (RFC 3986 §5.2.2), spelled with `url`'s own origin as keys are.
fn same_origin_target(url: &str, reference: &str) -> Option<String> {
    let base = split_reference(url);
    let (b_scheme, b_authority) = (base.scheme?, base.authority?);
    let r = split_reference(reference.trim());
    let (scheme, authority, path, query) = match (r.scheme, r.authority) {
        (Some(s), a) => (s, a?, remove_dot_segments(r.path), r.query),
        (None, Some(a)) => (b_scheme, a, remove_dot_segments(r.path), r.query),
        (None, None) if r.path.is_empty() => (
            b_scheme,
            b_authority,
            base.path.to_string(),
            r.query.or(base.query),
        ),
        (None, None) if r.path.starts_with('/') => {
            (b_scheme, b_authority, remove_dot_segments(r.path), r.query)
        }
        (None, None) => {
            // §5.2.3: merged with the base path's directory.
            let merged = match base.path.rfind('/') {
                Some(i) => format!("{}{}", &base.path[..=i], r.path),
                None => format!("/{}", r.path),
            };
            (b_scheme, b_authority, remove_dot_segments(&merged), r.query)
        }
    };
    if origin_key(scheme, authority) != origin_key(b_scheme, b_authority) {
        return None;
    }
    let path = if path.is_empty() { "/" } else { &path };
    Some(match query {
        Some(q) => format!("{b_scheme}://{b_authority}{path}?{q}"),
        None => format!("{b_scheme}://{b_authority}{path}"),
    })
}

/// The Age field's value (RFC 9111 §5.1): a delta-seconds. A list or
/// parameters sent by mistake keep their first number; anything that is
/// not one (negative, fractional, text) counts as no Age at all.
fn age_field(value: &str) -> u64 {
    let first = value.split(',').next().unwrap_or("");
    let number = first.split(';').next().unwrap_or("").trim();
    if number.is_empty() || !number.bytes().all(|c| c.is_ascii_digit()) {
        return 0;
    }
    // §1.2.2: a delta-seconds too large to hold is 2^31.
    number.parse().unwrap_or(1 << 31)
}

fn e_age(e: &Entry) -> u64 {
    e.age_value
}

/// `entry` with its current age (§4.2.3) and how it may answer a request
/// with `req_cc`.
fn found(entry: Arc<Entry>, req_cc: &Directives) -> Found {
    let age = policy::current_age(
        e_age(&entry),
        entry.date,
        entry.request_time,
        entry.response_time,
        now(),
    );
    let usable = policy::usable(req_cc, &entry.cc, age, entry.lifetime);
    Found { entry, age, usable }
}

fn vary_matches(e: &Entry, head: &RequestHead) -> bool {
    e.vary
        .iter()
        .all(|(name, value)| policy::vary_value(head.values(name)) == *value)
}

/// The stored form of a response: what a later request will be answered with.
pub struct Storing {
    pub url: String,
    pub request_time: i64,
    pub vary: Vec<(String, Option<String>)>,
    /// `CDN-Cache-Control` applies (reverse listeners, RFC 9213).
    pub targeted: bool,
}

/// Response directives the cache obeys: on reverse listeners a valid
/// `CDN-Cache-Control` replaces Cache-Control (RFC 9213 §2.1); a forward
/// proxy is not a CDN and ignores it.
pub fn response_directives<'a, F, I>(targeted: bool, values: F) -> Directives
where
    F: Fn(&'static str) -> I,
    I: Iterator<Item = &'a [u8]>,
{
    targeted
        .then(|| Directives::parse_targeted(values("cdn-cache-control")))
        .flatten()
        .unwrap_or_else(|| Directives::parse(values("cache-control")))
}

impl Storing {
    /// Whether a response to `head` may be stored, and what it varies on.
    pub fn decide(
        url: &str,
        head: &RequestHead,
        req_cc: &Directives,
        response: &ResponseHead,
        (request_time, targeted): (i64, bool),
    ) -> Option<Storing> {
        let cc = response_directives(targeted, |n| response.values(n));
        let names = policy::vary_names(response.values("vary"));
        let r = policy::Response {
            status: response.status,
            cc: &cc,
            has_expires: response.has("expires"),
            vary_star: names.is_none(),
        };
        if !policy::storable(head.method(), req_cc, head.has("authorization"), &r) {
            return None;
        }
        let vary = names?
            .into_iter()
            .map(|n| {
                let v = policy::vary_value(head.values(&n));
                (n, v)
            })
            .collect();
        Some(Storing {
            url: url.to_string(),
            request_time,
            vary,
            targeted,
        })
    }

    pub fn entry(
        self,
        response: &ResponseHead,
        conn: &ConnectionOptions<'_>,
        body: Vec<u8>,
    ) -> Entry {
        let headers: Vec<(String, Bytes)> = response
            .fields
            .iter()
            .filter(|f| {
                let n = response.name(f);
                !conn.is_hop_by_hop(n)
                    && !n.eq_ignore_ascii_case(b"content-length")
                    && !n.eq_ignore_ascii_case(b"transfer-encoding")
            })
            .map(|f| {
                (
                    String::from_utf8_lossy(response.name(f)).into_owned(),
                    Bytes::copy_from_slice(response.value(f)),
                )
            })
            .collect();
        build_entry(self, response.status, headers, Bytes::from(body), now())
    }
}

fn build_entry(
    s: Storing,
    status: u16,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    response_time: i64,
) -> Entry {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let cc = response_directives(s.targeted, |name| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    });
    let date = get("date").and_then(|d| parse_http_date(&d));
    let expires = get("expires").map(|e| parse_http_date(&e));
    let last_modified = get("last-modified").and_then(|d| parse_http_date(&d));
    let age_value = get("age").map_or(0, |a| age_field(&a));
    let lifetime =
        policy::freshness_lifetime(&cc, status, date, expires, last_modified, response_time);
    Entry {
        url: s.url,
        status,
        headers,
        body,
        request_time: s.request_time,
        response_time,
        vary: s.vary,
        cc,
        date,
        age_value,
        lifetime,
        targeted: s.targeted,
        gzipped: Default::default(),
    }
}

/// RFC 9111 §4.3.4: whether a 304 selects `stored` for update. A strong
/// entity tag in the 304 selects only a stored response with that same
/// strong tag; a weak one, a stored response whose tag matches it weakly.
/// A 304 without an entity tag selects the stored response (the only one
/// the request nominated).
pub fn selects(response: &ResponseHead, stored: &Entry) -> bool {
    let Some(tag) = response.first("etag") else {
        return true;
    };
    let tag = tag.trim_ascii();
    let mine = stored.header("etag").map(<[u8]>::trim_ascii);
    match tag.strip_prefix(b"W/") {
        None => mine == Some(tag),
        Some(weak) => mine.is_some_and(|m| m.strip_prefix(b"W/").unwrap_or(m) == weak),
    }
}

/// A 304 to the cache's validators that selects no stored response
/// (§4.3.4, see [`selects`]): nothing is updated with it. The request is
/// answered with the stored response as it is, since the 304 still says
/// that the validator it was asked about matches the current
/// representation (RFC 9110 §13.1.2, §13.1.3, §15.4.5): for an origin that
/// follows those rules the tags differ only in weakness, or the stored
/// response had no entity tag and was validated by date. Its metadata is
/// not that response's, though, and an origin that breaks them may have a
/// new representation: the stored response is dropped, so the next request
/// fetches the representation whole, with the validator the origin now
/// uses. (Fetching it again at once, unconditionally, would take the
/// exchange out of the cache's hands.)
pub fn not_selected(cache: &Cache, stored: &Entry) {
    cache.remove(&stored.url);
}

/// The current age of a stored response (§4.2.3).
pub fn age_of(entry: &Entry) -> u64 {
    policy::current_age(
        e_age(entry),
        entry.date,
        entry.request_time,
        entry.response_time,
        now(),
    )
}

/// §4.3.4: a 304 updates the stored header fields (all but framing and
/// Content-Length); the result is stored as a fresh copy. Its age is that
/// of the validation exchange (§4.2.3): `request_time` is when the
/// conditional request went out, the response time is now, the 304's Date
/// replaces the stored one (or, when it has none, the time it arrived
/// does, RFC 9110 §6.6.1), and a stored Age is dropped (the 304's own Age,
/// if any, counts instead).
pub fn refreshed(old: &Entry, response: &ResponseHead, request_time: i64) -> Entry {
    const NOT_UPDATED: [&str; 7] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];
    let response_time = now();
    let mut updates: Vec<(String, Bytes)> = response
        .fields
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(response.name(f)).into_owned(),
                Bytes::copy_from_slice(response.value(f)),
            )
        })
        .filter(|(n, _)| !NOT_UPDATED.contains(&n.to_ascii_lowercase().as_str()))
        .collect();
    if !response.has("date") {
        let at = UNIX_EPOCH + Duration::from_secs(response_time.max(0) as u64);
        let date = crate::observe::time::http_date(at);
        updates.push(("Date".to_string(), Bytes::from(date)));
    }
    // Every field the 304 carries replaces all stored lines of that name;
    // Age is the old exchange's and goes whatever the 304 says.
    let mut headers: Vec<(String, Bytes)> = old
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("age")
                && !updates.iter().any(|(u, _)| u.eq_ignore_ascii_case(n))
        })
        .cloned()
        .collect();
    headers.extend(updates);
    let entry = build_entry(
        Storing {
            url: old.url.clone(),
            request_time,
            vary: old.vary.clone(),
            targeted: old.targeted,
        },
        old.status,
        headers,
        old.body.clone(),
        response_time,
    );
    // The body is the same: so is its gzip form.
    if let Some(gz) = old.gzipped.get() {
        let _ = entry.gzipped.set(gz.clone());
    }
    entry
}

/// Fields a conditional request for `entry` adds (§4.3.1), unless the client
/// sent its own validators.
pub fn validators(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(etag) = entry.header("etag") {
        out.extend_from_slice(b"If-None-Match: ");
        out.extend_from_slice(etag);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(lm) = entry.header("last-modified") {
        out.extend_from_slice(b"If-Modified-Since: ");
        out.extend_from_slice(lm);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether the client's own conditional request is satisfied by `entry`
/// (RFC 9110 §13.1.2, §13.1.3): answer 304 from the cache.
pub fn not_modified_for(head: &RequestHead, entry: &Entry) -> bool {
    // RFC 9110 §13.2.1 (RFC 9111 §4.3.2): preconditions are evaluated only
    // when the response would otherwise be 2xx; a stored 404 stays a 404.
    if !(200..300).contains(&entry.status) {
        return false;
    }
    if let Some(inm) = head.first("if-none-match") {
        let Some(etag) = entry.header("etag") else {
            return false;
        };
        let weak = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
        let mine = weak(etag);
        return String::from_utf8_lossy(inm)
            .split(',')
            .any(|t| t.trim() == "*" || weak(t.trim().as_bytes()) == mine);
    }
    if let Some(ims) = head.first("if-modified-since") {
        let since = parse_http_date(&String::from_utf8_lossy(ims));
        let lm = entry
            .header("last-modified")
            .and_then(|v| parse_http_date(&String::from_utf8_lossy(v)));
        return matches!((since, lm), (Some(s), Some(l)) if l <= s);
    }
    false
}

/// `PURGE URL` (or `URL*` for every URL with that prefix), from clients in
/// `[cache] purge_from`: the response to send.
pub fn purge(
    cache: &Cache,
    allowed: &[postern_policy::Cidr],
    client: std::net::IpAddr,
    url: &str,
) -> Result<Vec<u8>, crate::error::ProxyError> {
    use crate::error::{ErrorKind, ProxyError};
    if !allowed.iter().any(|c| c.contains(client)) {
        return Err(ProxyError::new(
            ErrorKind::Denied,
            format!("{client} may not purge the cache (cache.purge_from)"),
        ));
    }
    let removed = match url.strip_suffix('*') {
        Some(prefix) => {
            cache.store.remove_prefix(prefix)
                + cache.disk.as_ref().map_or(0, |d| d.remove_prefix(prefix))
        }
        None => cache.store.remove(url) + cache.disk.as_ref().map_or(0, |d| d.remove(url)),
    };
    let body = format!(
        "purged {removed}; {} objects ({} bytes) remain\n",
        cache.store.objects(),
        cache.store.bytes()
    );
    let status = if removed > 0 {
        "200 OK"
    } else {
        "404 Not Found"
    };
    Ok(format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_with(etag: Option<&str>) -> Entry {
        let headers = etag
            .map(|t| ("ETag".to_string(), Bytes::copy_from_slice(t.as_bytes())))
            .into_iter()
            .collect();
        let storing = Storing {
            url: "http://a/x".into(),
            request_time: 0,
            vary: Vec::new(),
            targeted: false,
        };
        build_entry(storing, 200, headers, Bytes::new(), 0)
    }

    fn not_modified(fields: &str) -> ResponseHead {
        use crate::http1::head::{HeadLimits, parse_response};
        let text = format!("HTTP/1.1 304 Not Modified\r\n{fields}\r\n").into_bytes();
        let limits = HeadLimits {
            max_line: 1000,
            max_size: 1000,
            max_fields: 10,
        };
        let (n, parts) = parse_response(&text, limits).unwrap().unwrap();
        ResponseHead::new(Bytes::from(text).slice(..n), parts)
    }

    #[test]
    fn a_304_selects_by_its_validator() {
        let strong = stored_with(Some("\"v1\""));
        let weak = stored_with(Some("W/\"v1\""));
        let none = stored_with(None);
        let cases = [
            ("ETag: \"v1\"\r\n", [true, false, false]),
            ("ETag: \"v2\"\r\n", [false, false, false]),
            ("ETag: W/\"v1\"\r\n", [true, true, false]),
            ("ETag: W/\"v2\"\r\n", [false, false, false]),
            ("", [true, true, true]),
        ];
        for (fields, expect) in cases {
            let head = not_modified(fields);
            let got = [&strong, &weak, &none].map(|e| selects(&head, e));
            assert_eq!(got, expect, "{fields:?}");
        }
    }

    #[test]
    fn location_values_resolve_against_the_request_url() {
        let url = "http://h:8080/a/b?q";
        for (reference, target) in [
            ("/x", Some("http://h:8080/x")),
            ("x", Some("http://h:8080/a/x")),
            ("../x?y=1#f", Some("http://h:8080/x?y=1")),
            ("./x/../y", Some("http://h:8080/a/y")),
            ("?z", Some("http://h:8080/a/b?z")),
            ("", Some("http://h:8080/a/b?q")),
            ("HTTP://H:8080/x", Some("http://h:8080/x")),
            ("//h:8080/x", Some("http://h:8080/x")),
            ("http://h:8080/../x", Some("http://h:8080/x")),
            ("//other:8080/x", None),
            ("http://h/x", None),
            ("https://h:8080/x", None),
            ("mailto:a@h", None),
        ] {
            assert_eq!(
                same_origin_target(url, reference).as_deref(),
                target,
                "{reference:?}"
            );
        }
        // The default port, spelled or not.
        assert_eq!(
            same_origin_target("http://h/a", "http://H:80/x").as_deref(),
            Some("http://h/x")
        );
    }

    #[test]
    fn age_values() {
        for (text, age) in [
            ("7200", 7200),
            (" 7200 ", 7200),
            ("7200, 0", 7200),
            ("7200;foo=bar", 7200),
            ("-7200", 0),
            ("7200.0", 0),
            ("abc", 0),
            ("", 0),
            ("99999999999999999999", 1 << 31),
        ] {
            assert_eq!(age_field(text), age, "{text:?}");
        }
    }
}
