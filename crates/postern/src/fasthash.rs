//! A quick hasher for the small maps consulted on every request (idle upstream
//! connections by destination, per-listener counters). SipHash cost more than
//! the lookups it served. Seeded once per process from the standard library's
//! random keys, so keys chosen by clients cannot be aimed at one bucket
//! without knowing the seed; the maps it serves are also bounded in size.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

pub type FastMap<K, V> = HashMap<K, V, FastState>;

#[derive(Clone, Copy)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState(*SEED.get_or_init(|| std::hash::RandomState::new().hash_one(0u64) | 1))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(MULTIPLIER).rotate_left(26);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche (from SplitMix64), so the low bits the table uses
        // depend on every input bit.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_differ_in_one_byte_spread() {
        let state = FastState::default();
        let mut seen = std::collections::HashSet::new();
        for port in 0..1000u16 {
            let key = format!("127.0.0.1:{port}");
            seen.insert(state.hash_one(key.as_str()) & 0xff);
        }
        // 1,000 keys over 256 low-byte values: a weak hash would cluster.
        assert!(seen.len() > 200, "only {} of 256 buckets used", seen.len());
    }

    #[test]
    fn map_works() {
        let mut m: FastMap<String, u32> = FastMap::default();
        m.insert("a:1".into(), 1);
        m.insert("a:2".into(), 2);
        assert_eq!(m.get("a:1"), Some(&1));
        assert_eq!(m.get("a:2"), Some(&2));
        assert_eq!(m.get("a:3"), None);
    }
}
