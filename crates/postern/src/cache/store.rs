//! The memory tier: stored responses by effective URI, each URI with its
//! variants (Vary), bounded in bytes with least-recently-used eviction and
//! TinyLFU admission: when the tier is full, a new response gets in only if
//! its URL has been asked for more often, lately, than what it would evict,
//! so a scan of one-off URLs cannot flush the popular ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::policy::Directives;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub url: String,
    pub status: u16,
    /// Fields as received, without hop-by-hop and framing fields.
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    pub request_time: i64,
    pub response_time: i64,
    /// The request's values of the fields named by Vary, at storing time.
    pub vary: Vec<(String, Option<String>)>,
    pub cc: Directives,
    pub date: Option<i64>,
    pub age_value: u64,
    pub lifetime: u64,
    /// Stored from a reverse listener, where `CDN-Cache-Control` applies.
    pub targeted: bool,
    /// The body gzip-encoded, made on the first hit that wants it.
    pub gzipped: std::sync::OnceLock<Bytes>,
}

impl Entry {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    pub fn size(&self) -> usize {
        self.body.len()
            + self.url.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 32)
                .sum::<usize>()
            + 256
    }
}

#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub revalidations: AtomicU64,
    pub bytes_served: AtomicU64,
    pub evictions: AtomicU64,
    /// New responses kept out by admission.
    pub rejections: AtomicU64,
}

struct Slot {
    entry: Arc<Entry>,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    by_url: HashMap<String, Vec<Slot>>,
    /// Last use → (URL, index identity by Arc pointer), for eviction.
    lru: BTreeMap<u64, (String, usize)>,
    tick: u64,
    bytes: usize,
    objects: usize,
    sketch: FrequencySketch,
}

impl Inner {
    /// TinyLFU: with room to spare, everything is admitted; otherwise the
    /// candidate must be wanted more often than each response it would evict.
    fn admits(&self, url: &str, size: usize, capacity: usize) -> bool {
        let mut needed = (self.bytes + size).saturating_sub(capacity);
        if needed == 0 {
            return true;
        }
        let wanted = self.sketch.estimate(url);
        // Looking at the coldest few hundred is enough to judge; beyond that
        // the candidate has already beaten the least wanted.
        for (victim_url, id) in self.lru.values().take(256) {
            if self.sketch.estimate(victim_url) >= wanted {
                return false;
            }
            let victim_size = self
                .by_url
                .get(victim_url)
                .and_then(|slots| slots.iter().find(|s| Arc::as_ptr(&s.entry) as usize == *id))
                .map_or(0, |s| s.entry.size());
            needed = needed.saturating_sub(victim_size);
            if needed == 0 {
                return true;
            }
        }
        true
    }
}

/// A count-min sketch of 4-bit counters (as in TinyLFU): how often each URL
/// was asked for lately. Every counter is halved after `10 × width`
/// requests, so popularity fades.
#[derive(Default)]
struct FrequencySketch {
    /// Four rows of `width` counters, one byte each (capped at 15).
    rows: Vec<u8>,
    width: usize,
    samples: usize,
}

impl FrequencySketch {
    fn new(width: usize) -> FrequencySketch {
        let width = width.next_power_of_two();
        FrequencySketch {
            rows: vec![0; width * 4],
            width,
            samples: 0,
        }
    }

    fn slots(&self, url: &str) -> [usize; 4] {
        let h = crate::reverse::balance::hash64(url.as_bytes());
        let mask = self.width - 1;
        // Four indices from one 64-bit hash: 16 bits each, re-mixed per row.
        std::array::from_fn(|row| {
            let part = (h >> (row * 16)) ^ (h.rotate_left(17 * row as u32 + 7));
            row * self.width + (part as usize & mask)
        })
    }

    fn record(&mut self, url: &str) {
        if self.width == 0 {
            return;
        }
        for i in self.slots(url) {
            self.rows[i] = (self.rows[i] + 1).min(15);
        }
        self.samples += 1;
        if self.samples >= self.width * 10 {
            self.samples = 0;
            for c in &mut self.rows {
                *c >>= 1;
            }
        }
    }

    fn estimate(&self, url: &str) -> u8 {
        if self.width == 0 {
            return 0;
        }
        self.slots(url)
            .into_iter()
            .map(|i| self.rows[i])
            .min()
            .unwrap_or(0)
    }
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    capacity: usize,
    pub stats: Stats,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner {
                // About one counter per 4 KiB of capacity, within bounds.
                sketch: FrequencySketch::new((capacity / 4096).clamp(1024, 1 << 22)),
                ..Inner::default()
            }),
            capacity,
            stats: Stats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently stored variant of `url` that `matches` accepts.
    pub fn find(&self, url: &str, matches: impl Fn(&Entry) -> bool) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.tick += 1;
        let tick = inner.tick;
        inner.sketch.record(url);
        let slots = inner.by_url.get_mut(url)?;
        let slot = slots.iter_mut().rev().find(|s| matches(&s.entry))?;
        let old = std::mem::replace(&mut slot.tick, tick);
        let id = Arc::as_ptr(&slot.entry) as usize;
        let entry = slot.entry.clone();
        inner.lru.remove(&old);
        inner.lru.insert(tick, (url.to_string(), id));
        Some(entry)
    }

    /// Stores `entry`, replacing a variant with the same Vary values, and
    /// evicts the least recently used responses beyond the capacity.
    #[cfg(test)]
    pub fn insert(&self, entry: Entry) {
        self.insert_arc(Arc::new(entry));
    }

    pub fn insert_arc(&self, entry: Arc<Entry>) {
        self.store(entry, false);
    }

    /// Stores a response fresh from the origin, if admission lets it in;
    /// whether it was stored.
    pub fn offer(&self, entry: Arc<Entry>) -> bool {
        self.store(entry, true)
    }

    fn store(&self, entry: Arc<Entry>, admission: bool) -> bool {
        let size = entry.size();
        if size > self.capacity {
            return false;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let replaces = inner
            .by_url
            .get(&entry.url)
            .is_some_and(|slots| slots.iter().any(|s| s.entry.vary == entry.vary));
        if admission && !replaces && !inner.admits(&entry.url, size, self.capacity) {
            self.stats.rejections.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        inner.tick += 1;
        let tick = inner.tick;
        let url = entry.url.clone();
        let slots = inner.by_url.entry(url.clone()).or_default();
        if let Some(pos) = slots.iter().position(|s| s.entry.vary == entry.vary) {
            let old = slots.remove(pos);
            inner.lru.remove(&old.tick);
            inner.bytes -= old.entry.size();
            inner.objects -= 1;
        }
        let id = Arc::as_ptr(&entry) as usize;
        let slots = inner.by_url.entry(url.clone()).or_default();
        slots.push(Slot { entry, tick });
        inner.lru.insert(tick, (url, id));
        inner.bytes += size;
        inner.objects += 1;
        while inner.bytes > self.capacity {
            let Some((_, (url, id))) = inner.lru.pop_first() else {
                break;
            };
            if let Some(slots) = inner.by_url.get_mut(&url) {
                if let Some(pos) = slots
                    .iter()
                    .position(|s| Arc::as_ptr(&s.entry) as usize == id)
                {
                    let gone = slots.remove(pos);
                    inner.bytes -= gone.entry.size();
                    inner.objects -= 1;
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                if slots.is_empty() {
                    inner.by_url.remove(&url);
                }
            }
        }
        true
    }

    /// Removes every variant of `url`; how many were removed.
    pub fn remove(&self, url: &str) -> usize {
        let mut inner = self.lock();
        let Some(slots) = inner.by_url.remove(url) else {
            return 0;
        };
        for s in &slots {
            inner.lru.remove(&s.tick);
            inner.bytes -= s.entry.size();
            inner.objects -= 1;
        }
        slots.len()
    }

    /// Removes every response whose URL starts with `prefix`.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        let urls: Vec<String> = self
            .lock()
            .by_url
            .keys()
            .filter(|u| u.starts_with(prefix))
            .cloned()
            .collect();
        urls.iter().map(|u| self.remove(u)).sum()
    }

    pub fn objects(&self) -> usize {
        self.lock().objects
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, vary: &str, body: usize) -> Entry {
        Entry {
            url: url.into(),
            status: 200,
            headers: vec![],
            body: Bytes::from(vec![b'x'; body]),
            request_time: 0,
            response_time: 0,
            vary: vec![("accept".into(), Some(vary.into()))],
            cc: Directives::default(),
            date: None,
            age_value: 0,
            lifetime: 60,
            targeted: false,
            gzipped: Default::default(),
        }
    }

    #[test]
    fn variants_replace_and_lru_evicts() {
        let store = MemoryStore::new(3000);
        store.insert(entry("a", "x", 500));
        store.insert(entry("a", "y", 500));
        store.insert(entry("a", "x", 600));
        assert_eq!(store.objects(), 2);
        let pick = |v: &str| store.find("a", |e| e.vary[0].1.as_deref() == Some(v));
        assert_eq!(pick("x").unwrap().body.len(), 600);
        store.insert(entry("b", "x", 500));
        store.insert(entry("c", "x", 500));
        // a/y was used least recently.
        assert!(pick("y").is_none());
        assert!(pick("x").is_some());
        assert!(store.stats.evictions.load(Ordering::Relaxed) >= 1);
        assert!(store.bytes() <= 3000);
        assert_eq!(store.remove_prefix("b"), 1);
        assert!(store.find("b", |_| true).is_none());
    }

    #[test]
    fn a_scan_of_one_off_urls_does_not_flush_popular_ones() {
        let store = MemoryStore::new(10 * 1500);
        for i in 0..8 {
            let url = format!("hot{i}");
            for _ in 0..3 {
                store.find(&url, |_| true);
            }
            assert!(store.offer(Arc::new(entry(&url, "x", 1000))));
        }
        // A thousand URLs asked for once each: none may push the hot set out.
        for i in 0..1000 {
            let url = format!("cold{i}");
            store.find(&url, |_| true);
            store.offer(Arc::new(entry(&url, "x", 1000)));
        }
        for i in 0..8 {
            assert!(store.find(&format!("hot{i}"), |_| true).is_some(), "hot{i}");
        }
        assert!(store.stats.rejections.load(Ordering::Relaxed) > 900);
        // A URL that becomes popular gets in, evicting the coldest.
        for _ in 0..6 {
            store.find("rising", |_| true);
        }
        assert!(store.offer(Arc::new(entry("rising", "x", 1000))));
        assert!(store.bytes() <= 10 * 1500);
    }

    #[test]
    fn sketch_counts_saturate_and_fade() {
        let mut s = FrequencySketch::new(1024);
        for _ in 0..40 {
            s.record("a");
        }
        assert_eq!(s.estimate("a"), 15);
        assert_eq!(s.estimate("b"), 0);
        for i in 0..10 * 1024 {
            s.record(&format!("other{i}"));
        }
        assert!(s.estimate("a") <= 7, "halved at least once");
    }
}
