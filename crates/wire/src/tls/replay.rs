//! The replay cache of fake-TLS client randoms (spec client.md §5.6), bounded.
//!
//! Key: the first 16 bytes of the ClientHello random. Each entry keeps its receive time,
//! which is what [`super::is_allowed_timestamp`]'s "back to the oldest cached entry" rule
//! reads. Entries leave in receive order: by age (older than `max_age`, C's 2 days, checked
//! on every insertion, the newest entry always stays), or, unlike C whose cache is
//! unbounded, when the cache is full (the oldest goes first).
//!
//! Eviction by count keeps the cache sound for the timestamp rules because entries leave
//! strictly oldest first: everything received after [`ReplayCache::oldest_time`] is still
//! known. It does weaken C's 10-minute grace rule while evicted entries are younger than
//! 10 minutes; [`ReplayCache::evicted_until`] reports that so
//! [`super::check_client_hello`] can narrow the grace window (see there).
//!
//! Not here: what is inserted and when (see [`super::hello`]), sharing between threads
//! (the caller wraps it), and the clock (callers pass `now`, unix seconds).
//!
//! Memory: a `BTreeSet` of 16-byte keys (about 20–40 bytes per entry, depending on node
//! fill) plus a `VecDeque` of (key, time) in receive order (24 bytes per slot; its capacity
//! is at most the next power of two above `max_entries`). Count
//! [`ReplayCache::BYTES_PER_ENTRY`] (64) per entry as a budget: the default 262 144 entries
//! stay under 17 MiB, whatever is fed in. Lookups are `O(log n)` comparisons of 16 bytes,
//! with no hashing, so there is no hash-flooding to fear and no random seed to draw.

use std::collections::{BTreeSet, VecDeque};

/// Length of a cache key: the first 16 bytes of the client random.
pub const KEY_LEN: usize = 16;

/// A cache key.
pub type Key = [u8; KEY_LEN];

/// Bounded cache of client randoms with their receive times.
#[derive(Clone, Debug)]
pub struct ReplayCache {
    max_entries: usize,
    max_age: i64,
    keys: BTreeSet<Key>,
    /// Receive order; times never decrease from front to back.
    order: VecDeque<(Key, i64)>,
    /// Receive time of the newest entry evicted because the cache was full.
    evicted_until: Option<i64>,
    evictions: u64,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(Self::DEFAULT_MAX_ENTRIES)
    }
}

impl ReplayCache {
    /// Default bound: 262 144 entries (≤ 17 MiB). It covers C's whole 10-minute grace
    /// window up to ~437 authenticated hellos per second, and C's 2 days up to ~1.5 per
    /// second. Only authenticated hellos are inserted (see [`super::check_client_hello`]),
    /// so probes cannot use it up.
    pub const DEFAULT_MAX_ENTRIES: usize = 1 << 18;

    /// C's `MAX_CLIENT_RANDOM_CACHE_TIME`: 2 days.
    pub const DEFAULT_MAX_AGE: i64 = 2 * 86_400;

    /// Memory budget per entry, in bytes (an upper estimate, see the module docs).
    pub const BYTES_PER_ENTRY: usize = 64;

    /// A cache of at most `max_entries` (at least 1) entries kept for up to 2 days.
    pub fn new(max_entries: usize) -> ReplayCache {
        ReplayCache::with_max_age(max_entries, Self::DEFAULT_MAX_AGE)
    }

    /// A cache of at most `max_entries` (at least 1) entries kept for up to `max_age`
    /// seconds.
    pub fn with_max_age(max_entries: usize, max_age: i64) -> ReplayCache {
        ReplayCache {
            max_entries: max_entries.max(1),
            max_age,
            keys: BTreeSet::new(),
            order: VecDeque::new(),
            evicted_until: None,
            evictions: 0,
        }
    }

    /// Is this key cached? (Age does not matter: like C, an entry counts until pruned.)
    pub fn contains(&self, key: &Key) -> bool {
        self.keys.contains(key)
    }

    /// Adds `key` received at `now` unless it is already there; returns whether it was
    /// added. Then prunes entries older than `max_age` (never the newest one).
    pub fn insert(&mut self, key: &Key, now: i64) -> bool {
        if self.keys.contains(key) {
            self.prune(now);
            return false;
        }
        if self.order.len() >= self.max_entries {
            if let Some((old, t)) = self.order.pop_front() {
                self.keys.remove(&old);
                self.evicted_until = Some(t);
                self.evictions += 1;
            }
        }
        // Keep times monotonic even if the caller's clock steps back: later entries never
        // look older than earlier ones, which is what the eviction order relies on.
        let t = self.order.back().map_or(now, |&(_, last)| now.max(last));
        self.keys.insert(*key);
        self.order.push_back((*key, t));
        self.prune(now);
        true
    }

    /// Was `key` already cached? If not, it is added (received at `now`). Returns `true`
    /// for a replay.
    pub fn check_and_insert(&mut self, key: &Key, now: i64) -> bool {
        !self.insert(key, now)
    }

    /// Removes entries received at or before `now - max_age`, oldest first, always
    /// keeping the newest (C's `delete_old_client_randoms`).
    pub fn prune(&mut self, now: i64) {
        let limit = now.saturating_sub(self.max_age);
        while self.order.len() > 1 {
            match self.order.front() {
                Some(&(key, t)) if t <= limit => {
                    self.order.pop_front();
                    self.keys.remove(&key);
                }
                _ => break,
            }
        }
    }

    /// Receive time of the oldest entry still cached.
    pub fn oldest_time(&self) -> Option<i64> {
        self.order.front().map(|&(_, t)| t)
    }

    /// Receive time of the newest entry that was evicted because the cache was full, if
    /// any was. Hellos received up to then may have been forgotten early.
    pub fn evicted_until(&self) -> Option<i64> {
        self.evicted_until
    }

    /// How many entries were evicted because the cache was full (for metrics).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Client randoms remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no client random is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most client randoms remembered at once.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// How long a client random is remembered, in seconds.
    pub fn max_age(&self) -> i64 {
        self.max_age
    }

    /// Estimated heap bytes in use: the deque's allocation plus
    /// [`Self::BYTES_PER_ENTRY`]` − 24` per key in the set.
    pub fn memory_estimate(&self) -> usize {
        self.order.capacity() * std::mem::size_of::<(Key, i64)>()
            + self.keys.len() * (Self::BYTES_PER_ENTRY - 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Key {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        k
    }

    #[test]
    fn detects_replays() {
        let mut c = ReplayCache::new(10);
        assert!(!c.check_and_insert(&key(1), 100));
        assert!(c.check_and_insert(&key(1), 101));
        assert!(!c.check_and_insert(&key(2), 102));
        assert!(c.contains(&key(2)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.oldest_time(), Some(100));
        assert_eq!(c.evicted_until(), None);
    }

    #[test]
    fn evicts_oldest_when_full() {
        let mut c = ReplayCache::new(3);
        for i in 0..5 {
            c.insert(&key(i), 1000 + i as i64);
        }
        assert_eq!(c.len(), 3);
        assert!(!c.contains(&key(0)) && !c.contains(&key(1)));
        assert!(c.contains(&key(2)) && c.contains(&key(4)));
        assert_eq!(c.oldest_time(), Some(1002));
        assert_eq!(c.evicted_until(), Some(1001));
        assert_eq!(c.evictions(), 2);
    }

    #[test]
    fn prunes_by_age_but_keeps_newest() {
        let mut c = ReplayCache::with_max_age(100, 50);
        c.insert(&key(1), 0);
        c.insert(&key(2), 10);
        // At 60, the entry of time 0 is 60 s old (> 50): gone; 10 is exactly 50: gone too
        // (C removes `time <= now - max`), but the new one stays.
        c.insert(&key(3), 60);
        assert_eq!(c.len(), 1);
        assert_eq!(c.oldest_time(), Some(60));
        // Alone, even an ancient entry stays (C never removes the newest).
        c.prune(10_000);
        assert_eq!(c.len(), 1);
        // Age pruning is not eviction.
        assert_eq!(c.evicted_until(), None);
    }

    #[test]
    fn default_age_is_two_days() {
        let mut c = ReplayCache::new(100);
        c.insert(&key(1), 0);
        c.insert(&key(2), 2 * 86_400 - 1);
        assert_eq!(c.len(), 2);
        c.insert(&key(3), 2 * 86_400);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&key(1)));
    }

    #[test]
    fn clock_stepping_back_keeps_order() {
        let mut c = ReplayCache::new(2);
        c.insert(&key(1), 500);
        c.insert(&key(2), 400);
        c.insert(&key(3), 300);
        assert_eq!(c.oldest_time(), Some(500));
        assert_eq!(c.evicted_until(), Some(500));
    }

    #[test]
    fn flood_of_100k_distinct_keys_stays_bounded() {
        let max = 4096;
        let mut c = ReplayCache::new(max);
        for i in 0..100_000u64 {
            assert!(!c.check_and_insert(&key(i), 1_700_000_000 + (i / 1000) as i64));
            assert!(c.len() <= max);
        }
        assert_eq!(c.len(), max);
        assert!(c.memory_estimate() <= max * ReplayCache::BYTES_PER_ENTRY);
        assert_eq!(c.evictions(), 100_000 - max as u64);
        // The newest `max` are all there, oldest first.
        assert!(c.contains(&key(99_999)) && c.contains(&key(100_000 - max as u64)));
        assert!(!c.contains(&key(100_000 - max as u64 - 1)));
    }

    #[test]
    fn flood_of_100k_identical_keys_stays_one_entry() {
        let mut c = ReplayCache::new(4096);
        assert!(!c.check_and_insert(&key(7), 0));
        for i in 1..100_000 {
            assert!(c.check_and_insert(&key(7), i));
        }
        assert_eq!(c.len(), 1);
        assert!(c.memory_estimate() <= 64 * ReplayCache::BYTES_PER_ENTRY);
    }

    #[test]
    fn zero_capacity_means_one() {
        let mut c = ReplayCache::new(0);
        assert_eq!(c.max_entries(), 1);
        c.insert(&key(1), 0);
        assert!(c.contains(&key(1)));
        c.insert(&key(2), 0);
        assert!(!c.contains(&key(1)) && c.contains(&key(2)));
    }
}
