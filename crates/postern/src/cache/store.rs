//! The memory tier: stored responses by effective URI, each URI with its
//! variants (Vary), bounded in bytes with least-recently-used eviction.

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
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    capacity: usize,
    pub stats: Stats,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
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
    pub fn insert(&self, entry: Entry) {
        self.insert_arc(Arc::new(entry));
    }

    pub fn insert_arc(&self, entry: Arc<Entry>) {
        let size = entry.size();
        if size > self.capacity {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
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
}
