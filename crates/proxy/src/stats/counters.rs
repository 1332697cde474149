//! Process-wide counters of the client side. Plain relaxed atomics: they are read by the
//! stats endpoints and by tests, and never synchronise anything.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Counters shared by every connection of the process.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections accepted on the `-H` ports.
    pub accepted: AtomicU64,
    /// Client connections open right now.
    pub active: AtomicU64,
    /// Connections accepted and closed at once: over the `-C`/`-c` cap, over the accept rate.
    pub accept_limit_refused: AtomicU64,
    pub accept_rate_refused: AtomicU64,
    /// accept(2) calls that failed (EMFILE and the like; `accept_calls_failed`).
    pub accept_failed: AtomicU64,
    /// Headers accepted, by tag: abridged, intermediate, padded.
    pub handshakes_ok: [AtomicU64; 3],
    /// 64 bytes that no secret accepted (the connection then sits in skip mode).
    pub handshakes_bad: AtomicU64,
    /// Connections that did not send a full header before the deadline.
    pub handshakes_timeout: AtomicU64,
    /// Sessions whose DC id was unknown and went to the default DC.
    pub dc_fallbacks: AtomicU64,
    /// Failed DC dials (all addresses of a DC tried).
    pub upstream_connect_failed: AtomicU64,
    /// Bytes relayed client → upstream and upstream → client, counted on the client side
    /// in every mode: the obfuscated2 stream after the 64-byte header (fake TLS: without
    /// the TLS record headers; ME mode: the client's frames, not the RPC framing).
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Sessions closed by the idle timeout.
    pub idle_closed: AtomicU64,

    // Middle-proxy mode (names follow C's /stats keys).
    /// Client packets sent to MEs as RPC_PROXY_REQ (`tot_forwarded_queries`).
    pub forwarded_queries: AtomicU64,
    /// Client packets dropped for want of an ME connection (`dropped_queries`).
    pub dropped_queries: AtomicU64,
    /// RPC_PROXY_ANS delivered to clients (`tot_forwarded_responses`).
    pub forwarded_responses: AtomicU64,
    /// RPC_PROXY_ANS for unknown or closed sessions (`dropped_responses`).
    pub dropped_responses: AtomicU64,
    pub forwarded_simple_acks: AtomicU64,
    pub dropped_simple_acks: AtomicU64,
    /// Sessions bound to an ME now (`ext_connections`) and ever (`ext_connections_created`).
    pub ext_connections: AtomicU64,
    pub ext_connections_created: AtomicU64,
    /// Clients closed because too much waited for them (`connections_failed_flood`), and
    /// because all clients together had too much waiting (`connections_failed_lru`).
    pub failed_flood: AtomicU64,
    pub failed_lru: AtomicU64,
    /// Bytes from MEs waiting to be written to clients, all sessions together (gauge).
    pub me_queued_bytes: AtomicU64,
    /// ME connections that completed the handshake, and dial/handshake failures.
    pub me_connects: AtomicU64,
    pub me_connect_failed: AtomicU64,
    /// ME pool gauges (refreshed every second): targets, targets with a ready connection,
    /// ready connections.
    pub me_targets: AtomicU64,
    pub me_ready_targets: AtomicU64,
    pub me_ready_connections: AtomicU64,
    /// Fake TLS: hellos accepted, rejected (any reason), replays among them, connections
    /// spliced to the real site, and the bytes moved for masked connections.
    pub tls_accepted: AtomicU64,
    pub tls_rejected: AtomicU64,
    pub tls_replayed: AtomicU64,
    pub tls_masked: AtomicU64,
    pub mask_bytes_up: AtomicU64,
    pub mask_bytes_down: AtomicU64,
    /// SIGHUP reloads applied and refused.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Upstream connect latency (DC dials in direct mode; dial + RPC handshake for MEs).
    pub connect_latency: Histogram,
    /// The fork's per-secret counters, one per secret in command-line order.
    pub per_secret: Vec<SecretTracker>,
    /// Fake TLS as a censor sees it: killed handshakes, JA4s, masking reasons, the site.
    pub dpi: super::dpi::DpiStats,
}

/// Upper bounds (seconds) of the connect-latency buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0,
];

/// A fixed-bucket latency histogram of relaxed atomics (per-bucket counts, not cumulative).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the last bucket.
    over: AtomicU64,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.over.fetch_add(1, Relaxed),
        };
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// (cumulative (le, count) pairs, sum in seconds, count), Prometheus style.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let v = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(le, c)| {
                acc += c.load(Relaxed);
                (*le, acc)
            })
            .collect();
        (
            v,
            self.sum_us.load(Relaxed) as f64 / 1e6,
            self.count.load(Relaxed),
        )
    }

    fn snapshot(&self, v: &mut Vec<u64>) {
        v.extend(self.buckets.iter().map(|c| c.load(Relaxed)));
        v.push(self.over.load(Relaxed));
        v.push(self.sum_us.load(Relaxed));
        v.push(self.count.load(Relaxed));
    }

    fn absorb(&self, it: &mut impl Iterator<Item = u64>) {
        for c in &self.buckets {
            c.fetch_add(it.next().unwrap_or(0), Relaxed);
        }
        self.over.fetch_add(it.next().unwrap_or(0), Relaxed);
        self.sum_us.fetch_add(it.next().unwrap_or(0), Relaxed);
        self.count.fetch_add(it.next().unwrap_or(0), Relaxed);
    }
}

/// A reference-counted set: how many distinct values are in use right now.
#[derive(Debug)]
struct RefSet<K>(Mutex<HashMap<K, u32>>);

impl<K: Hash + Eq> Default for RefSet<K> {
    fn default() -> Self {
        RefSet(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq> RefSet<K> {
    fn add(&self, k: K) {
        *self.0.lock().expect("refset").entry(k).or_insert(0) += 1;
    }
    fn remove(&self, k: &K) {
        let mut m = self.0.lock().expect("refset");
        if let Some(n) = m.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                m.remove(k);
            }
        }
    }
    fn len(&self) -> usize {
        self.0.lock().expect("refset").len()
    }
}

/// The fork's "device tracking" for one secret (spec client.md §7.2): distinct client IPs
/// and distinct non-zero auth_key_ids of live sessions that forwarded a packet.
#[derive(Debug, Default)]
pub struct SecretTracker {
    ips: RefSet<IpAddr>,
    keys: RefSet<u64>,
    /// Counts reported by worker processes (the master's aggregate only; C sums them).
    summed: [AtomicU64; 2],
}

impl SecretTracker {
    /// (distinct client IPs, distinct auth keys) in use now.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ips.len() as u64 + self.summed[0].load(Relaxed),
            self.keys.len() as u64 + self.summed[1].load(Relaxed),
        )
    }
}

/// Lists every scalar counter once, for snapshots across worker processes. The ME pool
/// gauges are among them: the master sums them as C sums its workers' targets.
macro_rules! scalar_counters {
    ($m:ident) => {
        $m!(
            accepted,
            active,
            accept_limit_refused,
            accept_rate_refused,
            accept_failed,
            handshakes_bad,
            handshakes_timeout,
            dc_fallbacks,
            upstream_connect_failed,
            bytes_up,
            bytes_down,
            idle_closed,
            forwarded_queries,
            dropped_queries,
            forwarded_responses,
            dropped_responses,
            forwarded_simple_acks,
            dropped_simple_acks,
            ext_connections,
            ext_connections_created,
            failed_flood,
            failed_lru,
            me_queued_bytes,
            me_connects,
            me_connect_failed,
            tls_accepted,
            tls_rejected,
            tls_replayed,
            tls_masked,
            mask_bytes_up,
            mask_bytes_down,
            reloads_ok,
            reloads_failed,
            me_targets,
            me_ready_targets,
            me_ready_connections
        )
    };
}

impl Stats {
    /// Every counter as numbers in a fixed order: the scalars, the per-tag handshakes, then
    /// (IPs, auth keys) per secret. Workers send this to the master.
    pub fn snapshot(&self) -> Vec<u64> {
        let mut v = Vec::with_capacity(64 + 2 * self.per_secret.len());
        macro_rules! push {
            ($($f:ident),*) => { $( v.push(self.$f.load(Relaxed)); )* };
        }
        scalar_counters!(push);
        v.extend(self.handshakes_ok.iter().map(|c| c.load(Relaxed)));
        self.connect_latency.snapshot(&mut v);
        for t in &self.per_secret {
            let (a, b) = t.counts();
            v.push(a);
            v.push(b);
        }
        self.dpi.snapshot(&mut v);
        v
    }

    /// Adds a [`Stats::snapshot`] of another process into these counters.
    pub fn absorb(&self, snap: &[u64]) {
        let mut it = snap.iter().copied();
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f.fetch_add(it.next().unwrap_or(0), Relaxed); )* };
        }
        scalar_counters!(add);
        for c in &self.handshakes_ok {
            c.fetch_add(it.next().unwrap_or(0), Relaxed);
        }
        self.connect_latency.absorb(&mut it);
        for t in &self.per_secret {
            t.summed[0].fetch_add(it.next().unwrap_or(0), Relaxed);
            t.summed[1].fetch_add(it.next().unwrap_or(0), Relaxed);
        }
        self.dpi.absorb(&mut it);
    }
}

/// One session's entries in a [`SecretTracker`]; removed when dropped.
#[derive(Debug)]
pub struct SecretUse<'a> {
    tracker: &'a SecretTracker,
    ip: Option<IpAddr>,
    key: Option<u64>,
}

impl<'a> SecretUse<'a> {
    /// Nothing tracked yet (`tracker` None: no-secret mode tracks nothing).
    pub fn new(tracker: Option<&'a SecretTracker>) -> Option<SecretUse<'a>> {
        tracker.map(|tracker| SecretUse {
            tracker,
            ip: None,
            key: None,
        })
    }

    /// The session forwarded a packet from `ip` whose first 8 bytes are `auth_key_id`
    /// (0 for unencrypted packets, which do not change the tracked key, as in the fork).
    pub fn forwarded(&mut self, ip: IpAddr, auth_key_id: u64) {
        if self.ip.is_none() {
            let ip = match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            };
            self.tracker.ips.add(ip);
            self.ip = Some(ip);
        }
        if auth_key_id != 0 && self.key != Some(auth_key_id) {
            if let Some(old) = self.key.take() {
                self.tracker.keys.remove(&old);
            }
            self.tracker.keys.add(auth_key_id);
            self.key = Some(auth_key_id);
        }
    }
}

impl Drop for SecretUse<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.tracker.ips.remove(&ip);
        }
        if let Some(k) = self.key {
            self.tracker.keys.remove(&k);
        }
    }
}

impl Stats {
    /// Counters for a process with `secrets` client secrets.
    pub fn with_secrets(secrets: usize) -> Self {
        Stats {
            per_secret: (0..secrets).map(|_| SecretTracker::default()).collect(),
            ..Stats::default()
        }
    }

    /// The tracker of secret `index` (0-based), if any.
    pub fn secret(&self, index: Option<usize>) -> Option<&SecretTracker> {
        index.and_then(|i| self.per_secret.get(i))
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_tracking_counts_distinct_ips_and_keys_while_sessions_live() {
        let st = Stats::with_secrets(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut a = SecretUse::new(st.secret(Some(0))).unwrap();
        a.forwarded(ip("10.0.0.1"), 0);
        a.forwarded(ip("10.0.0.1"), 7);
        let mut b = SecretUse::new(st.secret(Some(0))).unwrap();
        b.forwarded(ip("::ffff:10.0.0.1"), 7);
        assert_eq!(st.per_secret[0].counts(), (1, 1));
        b.forwarded(ip("10.0.0.1"), 9);
        assert_eq!(st.per_secret[0].counts(), (1, 2));
        drop(a);
        assert_eq!(st.per_secret[0].counts(), (1, 1));
        drop(b);
        assert_eq!(st.per_secret[0].counts(), (0, 0));
        assert_eq!(st.per_secret[1].counts(), (0, 0));
        assert!(SecretUse::new(st.secret(None)).is_none());
    }

    #[test]
    fn snapshots_add_up_across_processes() {
        let a = Stats::with_secrets(2);
        let b = Stats::with_secrets(2);
        Stats::inc(&a.accepted);
        b.accepted.fetch_add(2, Relaxed);
        Stats::inc(&b.handshakes_ok[2]);
        b.tls_masked.fetch_add(5, Relaxed);
        // The pool gauges travel too (C sums its workers' targets).
        a.me_ready_targets.store(2, Relaxed);
        b.me_ready_targets.store(1, Relaxed);
        b.me_ready_connections.store(4, Relaxed);
        let mut u = SecretUse::new(b.secret(Some(1))).unwrap();
        u.forwarded("10.0.0.1".parse().unwrap(), 3);
        let total = Stats::with_secrets(2);
        total.absorb(&a.snapshot());
        total.absorb(&b.snapshot());
        assert_eq!(Stats::get(&total.accepted), 3);
        assert_eq!(Stats::get(&total.handshakes_ok[2]), 1);
        assert_eq!(Stats::get(&total.tls_masked), 5);
        assert_eq!(Stats::get(&total.me_ready_targets), 3);
        assert_eq!(Stats::get(&total.me_ready_connections), 4);
        assert_eq!(total.per_secret[1].counts(), (1, 1));
        assert_eq!(total.per_secret[0].counts(), (0, 0));
        drop(u);
        a.connect_latency
            .observe(std::time::Duration::from_millis(3));
        b.connect_latency.observe(std::time::Duration::from_secs(9));
        let h = Stats::with_secrets(2);
        h.absorb(&a.snapshot());
        h.absorb(&b.snapshot());
        let (cum, sum, count) = h.connect_latency.cumulative();
        assert_eq!(count, 2);
        assert!((sum - 9.003).abs() < 1e-6);
        assert_eq!(cum.iter().find(|(le, _)| *le == 0.005).unwrap().1, 1);
        assert_eq!(cum.last().unwrap().1, 1, "9 s is above the last bucket");
    }
}
