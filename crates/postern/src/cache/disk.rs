//! The disk tier: one file per stored response, written to a temporary name
//! and renamed into place (so a file is whole or absent, whenever the process
//! dies), with its length and a checksum verified on every read (so a
//! damaged file is dropped, never served). The index is rebuilt from the
//! files at start; the tier is bounded in bytes, least recently used first.
//!
//! File layout: `PSTNOBJ1`, meta length (u32), meta, body length (u64),
//! body, checksum (u64) of meta and body. Integers are little-endian.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::store::Entry;
use crate::reverse::balance::hash64;

const MAGIC: &[u8; 8] = b"PSTNOBJ1";

/// The request's values of the fields a response varies on.
pub type VaryValues = Vec<(String, Option<String>)>;

/// What a file holds besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub url: String,
    pub status: u16,
    pub request_time: i64,
    pub response_time: i64,
    pub vary: Vec<(String, Option<String>)>,
    pub headers: Vec<(String, Bytes)>,
}

struct Item {
    path: PathBuf,
    vary: Vec<(String, Option<String>)>,
    size: u64,
    tick: u64,
}

#[derive(Default)]
struct Index {
    by_url: HashMap<String, Vec<Item>>,
    lru: BTreeMap<u64, (String, PathBuf)>,
    tick: u64,
    bytes: u64,
    /// Writes begun and not yet in place, by [`PendingWrite`] number: the URL each
    /// is for. Removing a URL takes its writes out, which cancels them.
    writing: HashMap<u64, String>,
    next_write: u64,
}

/// A write of one response, registered when the response was kept: removing
/// its URL (invalidation, PURGE) before the write is in place cancels it, so
/// a write that began earlier cannot bring a removed response back.
#[must_use]
pub struct PendingWrite(u64);

pub struct DiskStore {
    dir: PathBuf,
    capacity: u64,
    pub max_object_size: usize,
    index: Mutex<Index>,
}

impl DiskStore {
    /// Opens (or creates) the directory and rebuilds the index from the
    /// files: temporary files of interrupted writes and files whose length
    /// does not match their header are deleted.
    pub fn open(dir: &Path, capacity: u64, max_object_size: usize) -> io::Result<DiskStore> {
        fs::create_dir_all(dir)?;
        let store = DiskStore {
            dir: dir.to_path_buf(),
            capacity,
            max_object_size,
            index: Mutex::new(Index::default()),
        };
        let mut found = Vec::new();
        for shard in fs::read_dir(dir)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let path = file?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.ends_with(".tmp") {
                    if !written_by_another_process(name) {
                        let _ = fs::remove_file(&path);
                    }
                    continue;
                }
                match read_meta(&path) {
                    Ok((meta, size)) => found.push((meta, path, size)),
                    Err(_) => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        {
            let mut index = store.lock();
            for (meta, path, size) in found {
                index.tick += 1;
                let tick = index.tick;
                index.lru.insert(tick, (meta.url.clone(), path.clone()));
                index.bytes += size;
                index.by_url.entry(meta.url).or_default().push(Item {
                    path,
                    vary: meta.vary,
                    size,
                    tick,
                });
            }
        }
        store.evict();
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn objects(&self) -> usize {
        self.lock().by_url.values().map(Vec::len).sum()
    }

    fn path_for(&self, url: &str, vary: &[(String, Option<String>)]) -> PathBuf {
        let mut key = url.as_bytes().to_vec();
        for (n, v) in vary {
            key.push(0);
            key.extend_from_slice(n.as_bytes());
            key.push(1);
            if let Some(v) = v {
                key.extend_from_slice(v.as_bytes());
            }
        }
        let h = format!("{:016x}", hash64(&key));
        self.dir.join(&h[..2]).join(format!("{h}.obj"))
    }

    /// Registers a write of a response for `url`, to be done by
    /// [`write_registered`](Self::write_registered) (cheap: no I/O).
    pub fn begin_write(&self, url: &str) -> PendingWrite {
        let mut index = self.lock();
        index.next_write += 1;
        let n = index.next_write;
        index.writing.insert(n, url.to_string());
        PendingWrite(n)
    }

    /// Writes a response (blocking I/O: call from a blocking thread).
    #[cfg(test)]
    pub fn write(&self, entry: &Entry) -> io::Result<()> {
        let write = self.begin_write(&entry.url);
        self.write_registered(entry, write)
    }

    /// Does a write registered by [`begin_write`](Self::begin_write)
    /// (blocking I/O: call from a blocking thread). Nothing is stored when
    /// the URL was removed since.
    pub fn write_registered(&self, entry: &Entry, write: PendingWrite) -> io::Result<()> {
        let n = write.0;
        let result = self.write_file(entry, n);
        // Done or failed: no longer pending either way.
        self.lock().writing.remove(&n);
        result
    }

    fn write_file(&self, entry: &Entry, n: u64) -> io::Result<()> {
        if entry.body.len() > self.max_object_size {
            return Ok(());
        }
        let path = self.path_for(&entry.url, &entry.vary);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let bytes = encode(entry);
        let tmp = path.with_extension(format!("{}.{n}.tmp", std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
        }
        let size = bytes.len() as u64;
        let mut index = self.lock();
        // RFC 9111 §4.4 (and PURGE): the URL was removed while this was
        // being written; the response must not come back. Checked and
        // renamed under the lock, so no removal falls in between.
        if index.writing.remove(&n).is_none() {
            drop(index);
            let _ = fs::remove_file(&tmp);
            return Ok(());
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            drop(index);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        index.tick += 1;
        let tick = index.tick;
        let items = index.by_url.entry(entry.url.clone()).or_default();
        let mut freed = 0;
        let mut old_tick = None;
        if let Some(pos) = items.iter().position(|i| i.path == path) {
            let old = items.remove(pos);
            freed = old.size;
            old_tick = Some(old.tick);
        }
        items.push(Item {
            path: path.clone(),
            vary: entry.vary.clone(),
            size,
            tick,
        });
        if let Some(t) = old_tick {
            index.lru.remove(&t);
        }
        index.bytes = index.bytes - freed + size;
        index.lru.insert(tick, (entry.url.clone(), path));
        drop(index);
        self.evict();
        Ok(())
    }

    /// The stored response for `url` whose Vary values `matches` accepts,
    /// verified whole (blocking I/O). A damaged file is deleted.
    #[cfg(test)]
    pub fn read(
        &self,
        url: &str,
        matches: impl Fn(&[(String, Option<String>)]) -> bool,
    ) -> Option<(Meta, Bytes)> {
        let path = self
            .candidates(url)
            .into_iter()
            .rev()
            .find(|(_, vary)| matches(vary))?
            .0;
        self.read_path(url, &path)
    }

    /// The files stored for `url` and their Vary values (index only).
    pub fn candidates(&self, url: &str) -> Vec<(PathBuf, VaryValues)> {
        self.lock()
            .by_url
            .get(url)
            .map(|items| {
                items
                    .iter()
                    .map(|i| (i.path.clone(), i.vary.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads and verifies one file of `url` (blocking I/O).
    pub fn read_path(&self, url: &str, path: &Path) -> Option<(Meta, Bytes)> {
        {
            let mut index = self.lock();
            index.tick += 1;
            let tick = index.tick;
            let item = index
                .by_url
                .get_mut(url)?
                .iter_mut()
                .find(|i| i.path == path)?;
            let old = std::mem::replace(&mut item.tick, tick);
            index.lru.remove(&old);
            index
                .lru
                .insert(tick, (url.to_string(), path.to_path_buf()));
        }
        match fs::read(path)
            .map_err(|_| ())
            .and_then(|b| decode(&b).ok_or(()))
        {
            Ok(found) => Some(found),
            Err(()) => {
                self.forget(url, path);
                None
            }
        }
    }

    fn forget(&self, url: &str, path: &Path) {
        let _ = fs::remove_file(path);
        let mut index = self.lock();
        if let Some(items) = index.by_url.get_mut(url)
            && let Some(pos) = items.iter().position(|i| i.path == path)
        {
            let gone = items.remove(pos);
            index.lru.remove(&gone.tick);
            index.bytes -= gone.size;
        }
    }

    /// Removes every response stored for `url`, and cancels writes for it
    /// not yet in place; how many were stored.
    pub fn remove(&self, url: &str) -> usize {
        let mut index = self.lock();
        index.writing.retain(|_, u| u != url);
        let items = index.by_url.remove(url).unwrap_or_default();
        for i in &items {
            let _ = fs::remove_file(&i.path);
            index.lru.remove(&i.tick);
            index.bytes -= i.size;
        }
        items.len()
    }

    pub fn remove_prefix(&self, prefix: &str) -> usize {
        let urls: Vec<String> = {
            let mut index = self.lock();
            index.writing.retain(|_, u| !u.starts_with(prefix));
            index
                .by_url
                .keys()
                .filter(|u| u.starts_with(prefix))
                .cloned()
                .collect()
        };
        urls.iter().map(|u| self.remove(u)).sum()
    }

    fn evict(&self) {
        loop {
            let victim = {
                let mut index = self.lock();
                if index.bytes <= self.capacity {
                    return;
                }
                index.lru.pop_first()
            };
            let Some((_, (url, path))) = victim else {
                return;
            };
            self.forget(&url, &path);
        }
    }
}

/// A temporary file (`HASH.PID.N.tmp`) that a running process other than
/// this one is writing: during an upgrade, the process handing over still
/// finishes its writes.
fn written_by_another_process(name: &str) -> bool {
    let pid = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode(e: &Entry) -> Vec<u8> {
    let mut meta = Vec::with_capacity(512);
    put_bytes(&mut meta, e.url.as_bytes());
    meta.extend_from_slice(&e.status.to_le_bytes());
    meta.extend_from_slice(&e.request_time.to_le_bytes());
    meta.extend_from_slice(&e.response_time.to_le_bytes());
    meta.extend_from_slice(&(e.vary.len() as u32).to_le_bytes());
    for (n, v) in &e.vary {
        put_bytes(&mut meta, n.as_bytes());
        match v {
            Some(v) => {
                meta.push(1);
                put_bytes(&mut meta, v.as_bytes());
            }
            None => meta.push(0),
        }
    }
    meta.extend_from_slice(&(e.headers.len() as u32).to_le_bytes());
    for (n, v) in &e.headers {
        put_bytes(&mut meta, n.as_bytes());
        put_bytes(&mut meta, v);
    }
    let mut out = Vec::with_capacity(meta.len() + e.body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&(e.body.len() as u64).to_le_bytes());
    out.extend_from_slice(&e.body);
    let sum = checksum(&meta, &e.body);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn checksum(meta: &[u8], body: &[u8]) -> u64 {
    // Two independent hashes folded: a torn or flipped region changes it.
    hash64(meta) ^ hash64(body).rotate_left(17) ^ (body.len() as u64)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn parse_meta(meta: &[u8]) -> Option<Meta> {
    let mut r = Reader { b: meta };
    let url = r.string()?;
    let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
    let request_time = r.u64()? as i64;
    let response_time = r.u64()? as i64;
    let mut vary = Vec::new();
    for _ in 0..r.u32()?.min(1024) {
        let n = r.string()?;
        let v = match r.take(1)?[0] {
            1 => Some(r.string()?),
            _ => None,
        };
        vary.push((n, v));
    }
    let mut headers = Vec::new();
    for _ in 0..r.u32()?.min(10_000) {
        let n = r.string()?;
        let v = Bytes::copy_from_slice(r.bytes()?);
        headers.push((n, v));
    }
    r.b.is_empty().then_some(Meta {
        url,
        status,
        request_time,
        response_time,
        vary,
        headers,
    })
}

/// Verifies and splits a whole file.
fn decode(file: &[u8]) -> Option<(Meta, Bytes)> {
    let mut r = Reader { b: file };
    if r.take(8)? != MAGIC {
        return None;
    }
    let meta = r.bytes()?;
    let body_len = r.u64()? as usize;
    let body = r.take(body_len)?;
    let sum = r.u64()?;
    if !r.b.is_empty() || sum != checksum(meta, body) {
        return None;
    }
    Some((parse_meta(meta)?, Bytes::copy_from_slice(body)))
}

/// The meta of a file and its size, checking only that the length adds up
/// (the checksum is verified when the body is read).
fn read_meta(path: &Path) -> io::Result<(Meta, u64)> {
    use std::io::Read;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "damaged cache file");
    let mut f = fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(bad());
    }
    let meta_len = u32::from_le_bytes(head[8..12].try_into().map_err(|_| bad())?) as u64;
    if meta_len > size {
        return Err(bad());
    }
    let mut meta = vec![0u8; meta_len as usize];
    f.read_exact(&mut meta)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let body_len = u64::from_le_bytes(len);
    if 12 + meta_len + 8 + body_len + 8 != size {
        return Err(bad());
    }
    Ok((parse_meta(&meta).ok_or_else(bad)?, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::Directives;

    fn entry(url: &str, body: &[u8]) -> Entry {
        Entry {
            url: url.into(),
            status: 200,
            headers: vec![("Content-Type".into(), Bytes::from_static(b"text/plain"))],
            body: Bytes::copy_from_slice(body),
            request_time: 1,
            response_time: 2,
            vary: vec![("accept".into(), Some("x".into())), ("dnt".into(), None)],
            cc: Directives::default(),
            date: None,
            age_value: 0,
            lifetime: 60,
            targeted: false,
            gzipped: Default::default(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("postern-disk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_rebuild() {
        let d = dir("rt");
        let store = DiskStore::open(&d, 1 << 20, 1 << 20).unwrap();
        store.write(&entry("http://a/1", b"hello")).unwrap();
        let (meta, body) = store.read("http://a/1", |_| true).unwrap();
        assert_eq!((meta.status, body.as_ref()), (200, &b"hello"[..]));
        assert_eq!(meta.vary[1], ("dnt".into(), None));
        drop(store);
        let again = DiskStore::open(&d, 1 << 20, 1 << 20).unwrap();
        assert_eq!(again.objects(), 1);
        assert!(
            again
                .read("http://a/1", |v| v[0].1.as_deref() == Some("x"))
                .is_some()
        );
        assert!(
            again
                .read("http://a/1", |v| v[0].1.as_deref() == Some("y"))
                .is_none()
        );
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn damaged_files_are_never_served() {
        let d = dir("damage");
        let store = DiskStore::open(&d, 1 << 20, 1 << 20).unwrap();
        store.write(&entry("http://a/1", &[7u8; 1000])).unwrap();
        let path = store.path_for("http://a/1", &entry("http://a/1", b"").vary);
        // A flipped byte in the body: same length, wrong checksum.
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(store.read("http://a/1", |_| true).is_none());
        assert!(!path.exists(), "the damaged file is removed");
        // A truncated file and a leftover temporary file are dropped at start.
        store.write(&entry("http://a/2", &[1u8; 100])).unwrap();
        let p2 = store.path_for("http://a/2", &entry("http://a/2", b"").vary);
        let full = fs::read(&p2).unwrap();
        fs::write(&p2, &full[..full.len() - 9]).unwrap();
        // Above the largest process id Linux hands out: nobody writes it.
        let abandoned = p2.with_extension("4194305.1.tmp");
        fs::write(&abandoned, b"partial").unwrap();
        // A process handing over to this one may still be writing.
        let parent = std::os::unix::process::parent_id();
        let in_progress = p2.with_extension(format!("{parent}.1.tmp"));
        fs::write(&in_progress, b"partial").unwrap();
        drop(store);
        let again = DiskStore::open(&d, 1 << 20, 1 << 20).unwrap();
        assert_eq!(again.objects(), 0);
        assert!(!abandoned.exists());
        assert!(in_progress.exists());
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_removal_cancels_a_write_begun_before_it() {
        let d = dir("cancel");
        let store = DiskStore::open(&d, 1 << 20, 1 << 20).unwrap();
        let e = entry("http://a/1", b"old");
        // Invalidated (§4.4) while the response was being written.
        let write = store.begin_write(&e.url);
        assert_eq!(store.remove("http://a/1"), 0);
        store.write_registered(&e, write).unwrap();
        assert_eq!(store.objects(), 0);
        assert!(store.read("http://a/1", |_| true).is_none());
        // PURGE of a prefix likewise.
        let e2 = entry("http://a/2", b"old");
        let write = store.begin_write(&e2.url);
        store.remove_prefix("http://a/");
        store.write_registered(&e2, write).unwrap();
        assert_eq!(store.objects(), 0);
        // Nothing of either is left on disk for the next start.
        drop(store);
        let again = DiskStore::open(&d, 1 << 20, 1 << 20).unwrap();
        assert_eq!(again.objects(), 0);
        // A write begun after the removal is stored.
        let write = again.begin_write(&e.url);
        again.write_registered(&e, write).unwrap();
        assert_eq!(again.objects(), 1);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn bounded_in_bytes() {
        let d = dir("bound");
        let store = DiskStore::open(&d, 5000, 1 << 20).unwrap();
        for i in 0..10 {
            store
                .write(&entry(&format!("http://a/{i}"), &[0u8; 1000]))
                .unwrap();
        }
        assert!(store.objects() <= 4, "{}", store.objects());
        assert!(store.read("http://a/9", |_| true).is_some());
        assert!(store.read("http://a/0", |_| true).is_none());
        let _ = fs::remove_dir_all(d);
    }
}
