//! Balancing algorithms over the servers that may take a request. Each is a
//! pure function of the candidates' weights and load, so they are tested for
//! their distributions without a network.

use std::cell::Cell;

/// One server as the algorithms see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub index: usize,
    pub weight: f64,
    pub inflight: usize,
    /// Latency EWMA in µs (0: unknown).
    pub latency_us: u64,
}

/// Smooth weighted round robin (nginx): each pick adds every weight to its
/// server's current value, takes the largest and subtracts the total. Over
/// any window servers are chosen in proportion to weight, interleaved.
pub fn smooth_weighted(c: &[Candidate], current: &mut [f64]) -> usize {
    let total: f64 = c.iter().map(|x| x.weight).sum();
    let mut best = 0;
    let mut best_value = f64::MIN;
    for (k, x) in c.iter().enumerate() {
        current[x.index] += x.weight;
        if current[x.index] > best_value {
            best_value = current[x.index];
            best = k;
        }
    }
    current[c[best].index] -= total;
    c[best].index
}

/// Fewest in-flight requests per unit of weight; ties broken at random so
/// idle servers share the first requests.
pub fn least_connections(c: &[Candidate]) -> usize {
    let score = |x: &Candidate| (x.inflight as f64 + 1.0) / x.weight;
    let best = c.iter().map(score).fold(f64::INFINITY, f64::min);
    let ties: Vec<&Candidate> = c.iter().filter(|x| score(x) <= best).collect();
    ties[random_below(ties.len())].index
}

/// Power of two choices: two servers at random (by weight), the one with
/// the lower (in-flight + 1) × latency wins.
pub fn p2c(c: &[Candidate]) -> usize {
    if c.len() == 1 {
        return c[0].index;
    }
    let a = weighted_random_pos(c);
    let mut b = weighted_random_pos(c);
    if a == b {
        b = (a + 1 + random_below(c.len() - 1)) % c.len();
    }
    let cost = |x: &Candidate| (x.inflight as f64 + 1.0) * (x.latency_us.max(1) as f64) / x.weight;
    if cost(&c[a]) <= cost(&c[b]) {
        c[a].index
    } else {
        c[b].index
    }
}

pub fn weighted_random(c: &[Candidate]) -> usize {
    c[weighted_random_pos(c)].index
}

fn weighted_random_pos(c: &[Candidate]) -> usize {
    let total: f64 = c.iter().map(|x| x.weight).sum();
    let mut r = random_f64() * total;
    for (k, x) in c.iter().enumerate() {
        r -= x.weight;
        if r < 0.0 {
            return k;
        }
    }
    c.len() - 1
}

/// Maglev's lookup table (Eisenbud et al., NSDI 2016): every server fills
/// slots along its own permutation in turn, so each gets an equal share and a
/// change of servers moves few keys. 65,537 slots (prime).
pub fn maglev_table(ids: &[&str]) -> Vec<u16> {
    const M: u64 = 65_537;
    let n = ids.len();
    let mut table = vec![u16::MAX; M as usize];
    if n == 0 {
        return vec![0];
    }
    let perms: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let offset = hash64(id.as_bytes()) % M;
            let skip = hash64_seeded(id.as_bytes(), 0x9e37_79b9_7f4a_7c15) % (M - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut filled = 0;
    'fill: loop {
        for i in 0..n {
            let (offset, skip) = perms[i];
            let mut slot = (offset + next[i] * skip) % M;
            while table[slot as usize] != u16::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % M;
            }
            table[slot as usize] = i as u16;
            next[i] += 1;
            filled += 1;
            if filled == M {
                break 'fill;
            }
        }
    }
    table
}

/// FNV-1a, finished with a 64-bit mixer so nearby keys spread out.
pub fn hash64(bytes: &[u8]) -> u64 {
    hash64_seeded(bytes, 0)
}

fn hash64_seeded(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    // splitmix64 finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() | 1
}

/// xorshift64*: fast, thread-local, good enough to spread load.
fn next_random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn random_f64() -> f64 {
    (next_random() >> 11) as f64 / (1u64 << 53) as f64
}

fn random_below(n: usize) -> usize {
    (next_random() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(weights: &[f64]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                index: i,
                weight: *w,
                inflight: 0,
                latency_us: 1000,
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_interleaves() {
        let c = cands(&[5.0, 1.0, 1.0]);
        let mut cur = vec![0.0; 3];
        let seq: Vec<usize> = (0..7).map(|_| smooth_weighted(&c, &mut cur)).collect();
        // nginx's example: a a b a c a a
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn random_follows_weights_within_bounds() {
        let c = cands(&[1.0, 2.0, 1.0]);
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[weighted_random(&c)] += 1;
        }
        // Expected 10k / 20k / 10k; 5 standard deviations is about ±500.
        assert!((9_400..=10_600).contains(&counts[0]), "{counts:?}");
        assert!((19_300..=20_700).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn least_connections_prefers_idle() {
        let mut c = cands(&[1.0, 1.0, 1.0]);
        c[0].inflight = 5;
        c[1].inflight = 1;
        c[2].inflight = 3;
        assert_eq!(least_connections(&c), 1);
    }

    #[test]
    fn p2c_avoids_the_slow_and_busy() {
        let mut c = cands(&[1.0, 1.0, 1.0, 1.0]);
        c[0].latency_us = 100_000;
        c[0].inflight = 10;
        let picks = (0..2000).filter(|_| p2c(&c) == 0).count();
        // The slow server wins only when it is drawn twice, which the
        // distinct second draw prevents: never.
        assert_eq!(picks, 0);
    }

    #[test]
    fn maglev_is_balanced() {
        let ids = ["a", "b", "c", "d", "e"];
        let t = maglev_table(&ids);
        let mut counts = [0usize; 5];
        for s in &t {
            counts[usize::from(*s)] += 1;
        }
        let expected = 65_537 / 5;
        for c in counts {
            assert!(c.abs_diff(expected) <= 1, "{counts:?}");
        }
    }
}
