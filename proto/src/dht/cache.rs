//! The two-generation expiring caches hyperdht stores records in (npm `xache` 1.3 and
//! `record-cache` 1.2), driven by `now` instead of `setInterval`.
//!
//! Both keep a "fresh" and a "stale" generation. Every `ceil(2/3 · max_age)` the stale
//! generation is dropped and the fresh one becomes stale, so an entry lives between 2/3 and
//! 4/3 of `max_age` after it was last written. The rotation also happens early when the fresh
//! generation reaches `max_size` entries, or (our addition, since values can be up to a datagram
//! long) `max_bytes`: memory stays bounded whatever remote peers send.
//!
//! [`TtlCache`] is xache: a read moves an entry back to fresh, and "retained" entries never
//! expire. [`RecordCache`] is record-cache: per-name sets of records, sampled at random on read;
//! reads do not refresh.

use std::collections::HashMap;
use std::hash::Hash;

use core::time::Duration;

use crate::rng::Rng;
use crate::time::Timestamp;

/// The rotation period for `max_age` (`Math.ceil(2 / 3 * maxAge)`).
fn rotate_period(max_age: Duration) -> Duration {
    let ms = max_age.as_millis() as u64;
    Duration::from_millis((2 * ms).div_ceil(3))
}

#[derive(Debug)]
struct Generation<K, V> {
    map: HashMap<K, (V, usize)>,
    bytes: usize,
}

impl<K: Eq + Hash, V> Generation<K, V> {
    fn new() -> Self {
        Generation {
            map: HashMap::new(),
            bytes: 0,
        }
    }

    fn insert(&mut self, k: K, v: V, w: usize) {
        self.bytes += w;
        if let Some((_, old)) = self.map.insert(k, (v, w)) {
            self.bytes -= old;
        }
    }

    fn remove(&mut self, k: &K) -> Option<(V, usize)> {
        let r = self.map.remove(k)?;
        self.bytes -= r.1;
        Some(r)
    }
}

/// xache: an expiring key-value cache with retained (permanent) entries.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    max_size: usize,
    max_bytes: usize,
    period: Duration,
    next_rotation: Timestamp,
    latest: Generation<K, V>,
    oldest: Generation<K, V>,
    retained: HashMap<K, V>,
    gced: bool,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `max_size` entries (and `max_bytes` of weight) per generation whose
    /// entries expire after about `max_age`.
    pub fn new(now: Timestamp, max_size: usize, max_bytes: usize, max_age: Duration) -> Self {
        let period = rotate_period(max_age);
        TtlCache {
            max_size: max_size.max(1),
            max_bytes,
            period,
            next_rotation: now + period,
            latest: Generation::new(),
            oldest: Generation::new(),
            retained: HashMap::new(),
            gced: false,
        }
    }

    /// Entries in all generations.
    pub fn len(&self) -> usize {
        self.latest.map.len() + self.oldest.map.len() + self.retained.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total weight of the expiring entries.
    pub fn bytes(&self) -> usize {
        self.latest.bytes + self.oldest.bytes
    }

    /// Stores `v` (weight `w`) as fresh. Retained keys are left alone, as in xache.
    pub fn set(&mut self, k: K, v: V, w: usize) {
        if self.retained.contains_key(&k) {
            return;
        }
        self.oldest.remove(&k);
        self.latest.insert(k, v, w);
        if self.latest.map.len() >= self.max_size || self.latest.bytes >= self.max_bytes {
            self.gc();
        }
    }

    /// Stores `v` permanently.
    pub fn retain(&mut self, k: K, v: V) {
        self.latest.remove(&k);
        self.oldest.remove(&k);
        self.retained.insert(k, v);
    }

    /// Removes `k` from every generation.
    pub fn delete(&mut self, k: &K) -> bool {
        self.latest.remove(k).is_some()
            || self.oldest.remove(k).is_some()
            || self.retained.remove(k).is_some()
    }

    /// Reads `k`; a stale entry becomes fresh again.
    pub fn get(&mut self, k: &K) -> Option<&V> {
        if let Some((v, w)) = self.oldest.remove(k) {
            self.latest.insert(k.clone(), v, w);
        }
        if let Some((v, _)) = self.latest.map.get(k) {
            return Some(v);
        }
        self.retained.get(k)
    }

    /// Reads `k` without refreshing it.
    pub fn peek(&self, k: &K) -> Option<&V> {
        self.latest
            .map
            .get(k)
            .or_else(|| self.oldest.map.get(k))
            .map(|(v, _)| v)
            .or_else(|| self.retained.get(k))
    }

    fn gc(&mut self) {
        self.gced = true;
        self.oldest = core::mem::replace(&mut self.latest, Generation::new());
    }

    /// When the next rotation is due.
    pub fn poll_timeout(&self) -> Timestamp {
        self.next_rotation
    }

    /// Rotates if due (`_gcAuto`: skipped once after a size-triggered rotation).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while self.next_rotation <= now {
            if !self.gced {
                self.gc();
            }
            self.gced = false;
            self.next_rotation += self.period;
            if self.next_rotation <= now {
                // Slept through several periods: everything has expired.
                self.gc();
                self.gc();
                self.next_rotation = now + self.period;
            }
        }
    }
}

#[derive(Debug)]
struct RecordSet {
    list: Vec<([u8; 32], Vec<u8>)>,
    index: HashMap<[u8; 32], usize>,
}

impl RecordSet {
    fn new() -> Self {
        RecordSet {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds or updates; returns whether it is new.
    fn add(&mut self, key: [u8; 32], value: Vec<u8>) -> bool {
        if let Some(&i) = self.index.get(&key) {
            self.list[i].1 = value;
            return false;
        }
        self.index.insert(key, self.list.len());
        self.list.push((key, value));
        true
    }

    fn remove(&mut self, key: &[u8; 32]) -> bool {
        let Some(i) = self.index.remove(key) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some((moved, _)) = self.list.get(i) {
            self.index.insert(*moved, i);
        }
        true
    }
}

#[derive(Debug)]
struct RecordStore {
    names: HashMap<[u8; 32], RecordSet>,
    size: usize,
}

impl RecordStore {
    fn new() -> Self {
        RecordStore {
            names: HashMap::new(),
            size: 0,
        }
    }

    fn add(&mut self, name: [u8; 32], key: [u8; 32], value: Vec<u8>) -> bool {
        let added = self
            .names
            .entry(name)
            .or_insert_with(RecordSet::new)
            .add(key, value);
        if added {
            self.size += 1;
        }
        added
    }

    fn remove(&mut self, name: &[u8; 32], key: &[u8; 32]) -> bool {
        let Some(set) = self.names.get_mut(name) else {
            return false;
        };
        if !set.remove(key) {
            return false;
        }
        self.size -= 1;
        if set.list.is_empty() {
            self.names.remove(name);
        }
        true
    }

    fn get(&self, name: &[u8; 32]) -> &[([u8; 32], Vec<u8>)] {
        self.names.get(name).map_or(&[], |s| s.list.as_slice())
    }
}

/// record-cache: per-name sets of records keyed by public key.
///
/// Unlike record-cache, re-adding a fresh record replaces its value (a re-announce with new
/// relay addresses takes effect at once instead of after a rotation).
#[derive(Debug)]
pub struct RecordCache {
    max_size: usize,
    period: Duration,
    next_rotation: Timestamp,
    fresh: RecordStore,
    stale: RecordStore,
    gced: bool,
}

impl RecordCache {
    /// A cache of at most `max_size` fresh records expiring after about `max_age`.
    pub fn new(now: Timestamp, max_size: usize, max_age: Duration) -> Self {
        let period = rotate_period(max_age);
        RecordCache {
            max_size: max_size.max(1),
            period,
            next_rotation: now + period,
            fresh: RecordStore::new(),
            stale: RecordStore::new(),
            gced: false,
        }
    }

    /// Records in both generations.
    pub fn len(&self) -> usize {
        self.fresh.size + self.stale.size
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or refreshes) record `key` under `name`.
    pub fn add(&mut self, name: [u8; 32], key: [u8; 32], value: Vec<u8>) {
        self.stale.remove(&name, &key);
        if self.fresh.add(name, key, value) && self.fresh.size > self.max_size {
            self.gc();
        }
    }

    /// Removes record `key` under `name`.
    pub fn remove(&mut self, name: &[u8; 32], key: &[u8; 32]) {
        self.fresh.remove(name, key);
        self.stale.remove(name, key);
    }

    /// Up to `n` records under `name`, chosen at random without repetition.
    pub fn get(&self, name: &[u8; 32], n: usize, rng: &mut Rng) -> Vec<&[u8]> {
        let a = self.fresh.get(name);
        let b = self.stale.get(name);
        let len = a.len() + b.len();
        let n = n.min(len);
        // Floyd's sampling: n distinct indices in O(n), whatever the topic's size (a topic
        // anyone can fill with announces must not make every LOOKUP cost O(records)).
        let mut chosen: smallvec::SmallVec<[usize; 32]> = smallvec::SmallVec::new();
        for j in (len - n)..len {
            let t = rng.below(j as u64 + 1) as usize;
            chosen.push(if chosen.contains(&t) { j } else { t });
        }
        chosen
            .into_iter()
            .map(|i| {
                if i < a.len() {
                    a[i].1.as_slice()
                } else {
                    b[i - a.len()].1.as_slice()
                }
            })
            .collect()
    }

    fn gc(&mut self) {
        self.gced = true;
        self.stale = core::mem::replace(&mut self.fresh, RecordStore::new());
    }

    /// When the next rotation is due.
    pub fn poll_timeout(&self) -> Timestamp {
        self.next_rotation
    }

    /// Rotates if due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while self.next_rotation <= now {
            if !self.gced {
                self.gc();
            }
            self.gced = false;
            self.next_rotation += self.period;
            if self.next_rotation <= now {
                self.gc();
                self.gc();
                self.next_rotation = now + self.period;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn ttl_cache_expires_between_two_thirds_and_four_thirds() {
        let t0 = Timestamp::ZERO;
        let mut c: TtlCache<u32, u32> = TtlCache::new(t0, 100, usize::MAX, 30 * MIN);
        c.set(1, 1, 0);
        c.handle_timeout(t0 + 20 * MIN);
        assert!(c.peek(&1).is_some(), "stale but present after one rotation");
        c.handle_timeout(t0 + 40 * MIN);
        assert!(c.peek(&1).is_none(), "gone after two rotations");
    }

    #[test]
    fn ttl_cache_read_refreshes_and_retained_stays() {
        let t0 = Timestamp::ZERO;
        let mut c: TtlCache<u32, u32> = TtlCache::new(t0, 100, usize::MAX, 30 * MIN);
        c.set(1, 1, 0);
        c.retain(2, 2);
        c.handle_timeout(t0 + 20 * MIN);
        assert_eq!(c.get(&1), Some(&1));
        c.handle_timeout(t0 + 40 * MIN);
        assert_eq!(c.peek(&1), Some(&1), "the read moved it back to fresh");
        c.handle_timeout(t0 + 600 * MIN);
        assert_eq!(c.peek(&2), Some(&2));
        assert_eq!(c.peek(&1), None);
    }

    #[test]
    fn ttl_cache_is_bounded_by_size_and_bytes() {
        let t0 = Timestamp::ZERO;
        let mut c: TtlCache<u32, u32> = TtlCache::new(t0, 10, 1000, 30 * MIN);
        for i in 0..1000 {
            c.set(i, i, 1);
        }
        assert!(c.len() <= 20);
        for i in 0..1000 {
            c.set(i, i, 300);
        }
        assert!(c.bytes() <= 2 * 1000 + 300);
    }

    #[test]
    fn record_cache_samples_and_expires() {
        let t0 = Timestamp::ZERO;
        let mut rng = Rng::from_seed([3; 32]);
        let mut c = RecordCache::new(t0, 1000, 20 * MIN);
        for i in 0..30u8 {
            c.add([1; 32], [i; 32], vec![i]);
        }
        let got = c.get(&[1; 32], 20, &mut rng);
        assert_eq!(got.len(), 20);
        let mut uniq: Vec<&[u8]> = got.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 20, "no repeats");
        c.remove(&[1; 32], &[0; 32]);
        assert_eq!(c.len(), 29);
        c.handle_timeout(t0 + 14 * MIN);
        assert_eq!(c.len(), 29);
        c.handle_timeout(t0 + 27 * MIN);
        assert_eq!(c.len(), 0);
    }
}
