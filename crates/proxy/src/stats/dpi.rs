//! What an operator needs to see a block wave coming (issue 15): per listening port, the
//! clients killed right after our ServerHello (a passive DPI's drop or reset looks like
//! that); the JA4 fingerprints of accepted hellos (what the DPI files clients under); the
//! masked connections by reason; and the profile of the real site our answers imitate.
//!
//! Every table is bounded: ports at [`MAX_PORTS`] (more are counted under port 0), JA4s at
//! [`JA4_TOP`] distinct values (later new ones under `other`; accepted hellos come from
//! clients with a secret, so the first ones seen are the clients that matter), reasons a
//! fixed list. Counters travel to the `-M` master in [`DpiStats::snapshot`].
//!
//! Not here: deciding that a connection was killed (`session`), the per-minute log line
//! (`dpi_watch`), rendering (`dpi_metrics`).

use mtproto_wire::tls::SiteProfile;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};

/// Listening ports counted apart.
pub const MAX_PORTS: usize = 64;
/// Distinct JA4 fingerprints counted apart.
pub const JA4_TOP: usize = 32;

/// Why a connection was spliced to the site: the hello check's reasons
/// (`RejectReason::name`), then ours.
pub const MASK_REASONS: [&str; 14] = [
    "not_hello",
    "sni_missing",
    "sni_malformed",
    "sni_unknown",
    "port_80",
    "extra_bytes",
    "too_long",
    "replay",
    "no_secret",
    "timestamp",
    "cipher",
    // Not a TLS ClientHello at all (HTTP, plain obfuscated2, garbage).
    "not_tls",
    // An incomplete hello at the handshake deadline.
    "timeout",
    // An obfuscated2 header with another transport than padded inside TLS.
    "inner_transport",
];

/// The site profile as `/metrics` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteView {
    /// Learned from the site (else a fallback, for `reason`).
    pub mirrored: bool,
    pub reason: String,
    /// Smallest, median and largest one-record size.
    pub sizes: (u64, u64, u64),
    /// Records per site flight (median).
    pub records: u64,
    pub supported_versions_first: bool,
    /// (client's first TLS 1.3 suite, the site's choice).
    pub ciphers: Vec<(u16, u16)>,
    /// Unix seconds of the probe round.
    pub probed_at: u64,
}

impl SiteView {
    pub fn of(p: &SiteProfile, now: u64) -> SiteView {
        let (a, b, c) = p.size_stats();
        SiteView {
            mirrored: p.fallback.is_none(),
            reason: p.fallback.clone().unwrap_or_default(),
            sizes: (a as u64, b as u64, c as u64),
            records: p.records as u64,
            supported_versions_first: p.order.is_reversed(),
            ciphers: p.ciphers.clone(),
            probed_at: now,
        }
    }
}

/// A copy of everything, for a view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DpiView {
    pub site: Option<SiteView>,
    /// (local port, clients killed after our ServerHello), by port.
    pub killed: Vec<(u16, u64)>,
    /// (JA4, accepted hellos), most first; then the count beyond [`JA4_TOP`].
    pub ja4: Vec<(String, u64)>,
    pub ja4_other: u64,
    /// Masked connections, per [`MASK_REASONS`] entry.
    pub masked: Vec<(&'static str, u64)>,
}

#[derive(Debug, Default)]
struct Ja4Table {
    counts: BTreeMap<String, u64>,
    other: u64,
}

impl Ja4Table {
    fn add(&mut self, ja4: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(ja4) {
            *c += n;
        } else if self.counts.len() < JA4_TOP {
            self.counts.insert(ja4.to_string(), n);
        } else {
            self.other += n;
        }
    }
}

/// The counters; one per process, inside `Stats`.
#[derive(Debug, Default)]
pub struct DpiStats {
    site: RwLock<Option<SiteView>>,
    killed: Mutex<BTreeMap<u16, u64>>,
    ja4: Mutex<Ja4Table>,
    masked: [AtomicU64; MASK_REASONS.len()],
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DpiStats {
    /// The profile our answers follow from now on.
    pub fn set_site(&self, p: &SiteProfile) {
        *self.site.write().expect("site") = Some(SiteView::of(p, unix_now()));
    }

    /// A client on `port` whose hello we accepted sent nothing more, or reset, soon after
    /// our ServerHello.
    pub fn killed(&self, port: u16) {
        self.add_killed(port, 1);
    }

    fn add_killed(&self, port: u16, n: u64) {
        let mut k = self.killed.lock().expect("killed");
        let port = if k.contains_key(&port) || k.len() < MAX_PORTS {
            port
        } else {
            0
        };
        *k.entry(port).or_insert(0) += n;
    }

    /// An accepted hello with this JA4.
    pub fn accepted_ja4(&self, ja4: &str) {
        self.ja4.lock().expect("ja4").add(ja4, 1);
    }

    /// A masked connection; `reason` is one of [`MASK_REASONS`] (others are not counted).
    pub fn masked(&self, reason: &str) {
        if let Some(i) = MASK_REASONS.iter().position(|r| *r == reason) {
            self.masked[i].fetch_add(1, Relaxed);
        }
    }

    pub fn view(&self) -> DpiView {
        let t = self.ja4.lock().expect("ja4");
        let mut ja4: Vec<(String, u64)> = t.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        ja4.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        DpiView {
            site: self.site.read().expect("site").clone(),
            killed: self
                .killed
                .lock()
                .expect("killed")
                .iter()
                .map(|(p, n)| (*p, *n))
                .collect(),
            ja4,
            ja4_other: t.other,
            masked: MASK_REASONS
                .iter()
                .zip(&self.masked)
                .map(|(r, c)| (*r, c.load(Relaxed)))
                .collect(),
        }
    }

    /// Appends the counters (and the site profile) as numbers, for the `-M` master.
    pub fn snapshot(&self, v: &mut Vec<u64>) {
        let d = self.view();
        v.push(d.killed.len() as u64);
        for (p, n) in &d.killed {
            v.extend([u64::from(*p), *n]);
        }
        v.extend(d.masked.iter().map(|m| m.1));
        v.push(d.ja4.len() as u64);
        for (j, n) in &d.ja4 {
            push_str(v, j);
            v.push(*n);
        }
        v.push(d.ja4_other);
        match &d.site {
            None => v.push(0),
            Some(s) => {
                v.extend([1, u64::from(s.mirrored)]);
                push_str(v, &s.reason);
                v.extend([s.sizes.0, s.sizes.1, s.sizes.2, s.records]);
                v.extend([u64::from(s.supported_versions_first), s.probed_at]);
                v.push(s.ciphers.len() as u64);
                for (a, b) in &s.ciphers {
                    v.extend([u64::from(*a), u64::from(*b)]);
                }
            }
        }
    }

    /// Adds another process's [`DpiStats::snapshot`]; the first site profile seen is kept.
    pub fn absorb(&self, it: &mut impl Iterator<Item = u64>) {
        let mut next = || it.next().unwrap_or(0);
        for _ in 0..next().min(MAX_PORTS as u64 + 1) {
            let (p, n) = (next() as u16, next());
            self.add_killed(p, n);
        }
        for c in &self.masked {
            c.fetch_add(next(), Relaxed);
        }
        for _ in 0..next().min(JA4_TOP as u64) {
            let j = pop_str(&mut next);
            let n = next();
            self.ja4.lock().expect("ja4").add(&j, n);
        }
        self.ja4.lock().expect("ja4").other += next();
        if next() == 1 {
            let mirrored = next() == 1;
            let reason = pop_str(&mut next);
            let sizes = (next(), next(), next());
            let records = next();
            let svf = next() == 1;
            let probed_at = next();
            let ciphers = (0..next().min(8))
                .map(|_| (next() as u16, next() as u16))
                .collect();
            let mut site = self.site.write().expect("site");
            site.get_or_insert(SiteView {
                mirrored,
                reason,
                sizes,
                records,
                supported_versions_first: svf,
                ciphers,
                probed_at,
            });
        }
    }
}

/// A short ASCII string as its length and its bytes, eight to a number.
fn push_str(v: &mut Vec<u64>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(64)];
    v.push(b.len() as u64);
    for c in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        v.push(u64::from_le_bytes(w));
    }
}

fn pop_str(next: &mut impl FnMut() -> u64) -> String {
    let n = (next() as usize).min(64);
    let mut b = Vec::with_capacity(n);
    for _ in 0..n.div_ceil(8) {
        b.extend_from_slice(&next().to_le_bytes());
    }
    b.truncate(n);
    String::from_utf8_lossy(&b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const J1: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

    #[test]
    fn tables_are_bounded() {
        let d = DpiStats::default();
        for i in 0..(JA4_TOP + 10) {
            d.accepted_ja4(&format!("{J1}{i}"));
        }
        d.accepted_ja4(&format!("{J1}0"));
        for p in 0..(MAX_PORTS as u16 + 5) {
            d.killed(1000 + p);
        }
        d.masked("replay");
        d.masked("no such reason");
        let v = d.view();
        assert_eq!(v.ja4.len(), JA4_TOP);
        assert_eq!(v.ja4[0], (format!("{J1}0"), 2));
        assert_eq!(v.ja4_other, 10);
        assert_eq!(v.killed.len(), MAX_PORTS + 1);
        assert_eq!(v.killed[0], (0, 5));
        assert_eq!(v.masked.iter().map(|m| m.1).sum::<u64>(), 1);
    }

    #[test]
    fn snapshots_add_up_and_carry_the_site() {
        let a = DpiStats::default();
        let b = DpiStats::default();
        a.killed(443);
        b.killed(443);
        b.killed(8443);
        a.accepted_ja4(J1);
        b.accepted_ja4(J1);
        b.masked("not_tls");
        b.set_site(&SiteProfile::fallback(7, "tls12_only".into()));
        let total = DpiStats::default();
        for s in [&a, &b] {
            let mut v = Vec::new();
            s.snapshot(&mut v);
            total.absorb(&mut v.into_iter());
        }
        let v = total.view();
        assert_eq!(v.killed, [(443, 2), (8443, 1)]);
        assert_eq!(v.ja4, [(J1.to_string(), 2)]);
        let site = v.site.unwrap();
        assert!(!site.mirrored);
        assert_eq!(site.reason, "tls12_only");
        assert_eq!(site.sizes, (2506, 2507, 2508));
        assert!(site.supported_versions_first);
        assert_eq!(
            v.masked.iter().find(|m| m.0 == "not_tls").unwrap().1,
            1,
            "{:?}",
            v.masked
        );
    }
}
