//! How the real site answers, as the proxy imitates it: the sizes its encrypted first
//! flight had, the ServerHello's extension order, and which cipher it picks for which
//! client preference. Built from a round of probe [`Flight`]s, or a fallback that looks
//! like a common server when the site cannot be mirrored.
//!
//! The policy (README "Fake TLS"):
//! - **Size.** Each reply's one application-data record is as long as one of the site's
//!   observed flights with the same cipher, drawn uniformly ([`Flight::total`]: the same
//!   bytes on the wire as the site's records together; the cipher matters because the
//!   Finished message is as long as its hash, 48 bytes for `0x1302`, 32 for the others).
//!   No jitter is added: the spread of the sizes is the site's own (an ECDSA signature
//!   varies by a byte or two, an RSA one not at all). A cipher no probe saw takes the
//!   sizes of another, corrected by the hash-length difference. Capped at
//!   [`MAX_FLIGHT_RECORD`], the largest record TLS allows.
//! - **Cipher.** The site's choice when the client's first TLS 1.3 suite was the same as
//!   in a probe, if the client offers it; else the client's first TLS 1.3 suite (what a
//!   server that follows the client's order, as OpenSSL and rustls do by default, picks).
//! - **Extension order.** The order most probes saw.
//! - **Fallback** (TLS 1.2-only site, HelloRetryRequest, unreachable): nginx with OpenSSL
//!   and one ECDSA certificate: supported_versions first, the client's cipher, a flight of
//!   `2500 + random % 1120` bytes (C's fallback range) ± 1 per reply (¼, ½, ¼ as C).
//!
//! Not here: the probing itself (the proxy's `tls_probe`), the ServerHello bytes
//! ([`super::server_hello`]).

use super::flight::Flight;
use super::server_hello::ExtensionOrder;

/// The largest record TLS allows (2¹⁴ + 256); a site's flight over that is answered with a
/// record of this size.
pub const MAX_FLIGHT_RECORD: usize = 16_384 + 256;

/// What the proxy knows about the site's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteProfile {
    /// (cipher chosen, one-record length) per observed flight, sorted; never empty.
    pub sizes: Vec<(u16, usize)>,
    /// The ServerHello's extension order.
    pub order: ExtensionOrder,
    /// (client's first TLS 1.3 suite in a probe, the suite the site chose).
    pub ciphers: Vec<(u16, u16)>,
    /// How many records the site's flights had (the median), for the operator.
    pub records: usize,
    /// Why this is a fallback rather than the site's own shape; `None` when learned.
    pub fallback: Option<String>,
}

impl SiteProfile {
    /// A profile from probe answers: `(first TLS 1.3 suite the probe offered, flight)`.
    /// `None` for no flights.
    pub fn from_flights(flights: &[(u16, Flight)]) -> Option<SiteProfile> {
        if flights.is_empty() {
            return None;
        }
        let mut sizes: Vec<(u16, usize)> = flights
            .iter()
            .map(|(_, f)| (f.hello.cipher, f.total().min(MAX_FLIGHT_RECORD)))
            .collect();
        sizes.sort_unstable();
        let reversed = flights
            .iter()
            .filter(|(_, f)| f.hello.extensions.first() == Some(&0x002b))
            .count();
        let mut records: Vec<usize> = flights.iter().map(|(_, f)| f.records.len()).collect();
        records.sort_unstable();
        let mut ciphers: Vec<(u16, u16)> = Vec::new();
        for (first, _) in flights {
            if ciphers.iter().any(|(f, _)| f == first) {
                continue;
            }
            let chosen = majority(
                flights
                    .iter()
                    .filter(|(f, _)| f == first)
                    .map(|(_, fl)| fl.hello.cipher),
            );
            ciphers.push((*first, chosen));
        }
        Some(SiteProfile {
            sizes,
            order: ExtensionOrder::from_reversed(2 * reversed > flights.len()),
            ciphers,
            records: records[records.len() / 2],
            fallback: None,
        })
    }

    /// The stand-in for a site that cannot be mirrored (see the module doc); `random`
    /// picks the size once, `why` is kept for the operator.
    pub fn fallback(random: u32, why: String) -> SiteProfile {
        let base = 2500 + (random % 1120) as usize;
        SiteProfile {
            sizes: vec![(0, base - 1), (0, base), (0, base), (0, base + 1)],
            order: ExtensionOrder::SupportedVersionsFirst,
            ciphers: Vec::new(),
            records: 4,
            fallback: Some(why),
        }
    }

    /// The record length for one reply with `cipher`.
    pub fn pick_size(&self, cipher: u16, random: u32) -> usize {
        let same: Vec<usize> = self
            .sizes
            .iter()
            .filter(|(c, _)| *c == cipher)
            .map(|(_, n)| *n)
            .collect();
        let n = if same.is_empty() {
            let Some(&(c, n)) = self.sizes.get(random as usize % self.sizes.len().max(1)) else {
                return 0;
            };
            (n + finished_len(cipher)).saturating_sub(finished_len(c))
        } else {
            same[random as usize % same.len()]
        };
        n.min(MAX_FLIGHT_RECORD)
    }

    /// The cipher for a client offering `tls13_suites` (its `0x13XX` suites in order, at
    /// least one: the hello check guarantees it).
    pub fn pick_cipher(&self, tls13_suites: &[u16]) -> u16 {
        let Some(&first) = tls13_suites.first() else {
            return 0x1301;
        };
        self.ciphers
            .iter()
            .find(|(f, _)| *f == first)
            .map(|(_, chosen)| *chosen)
            .filter(|c| tls13_suites.contains(c))
            .unwrap_or(first)
    }

    /// Smallest, median and largest size of the flights TDLib-shaped clients (TLS 1.3
    /// suites `1301 1302 1303`) are answered with.
    pub fn size_stats(&self) -> (usize, usize, usize) {
        let c = self.pick_cipher(&[0x1301, 0x1302, 0x1303]);
        let mut s: Vec<usize> = (0..self.sizes.len() as u32)
            .map(|r| self.pick_size(c, r))
            .collect();
        s.sort_unstable();
        match (s.first(), s.last()) {
            (Some(a), Some(b)) => (*a, s[s.len() / 2], *b),
            _ => (0, 0, 0),
        }
    }
}

/// Length of the Finished message of a TLS 1.3 suite: its hash length plus the 4-byte
/// header (SHA-384 for `0x1302`, SHA-256 for the others and for the fallback's cipher 0).
fn finished_len(cipher: u16) -> usize {
    if cipher == 0x1302 {
        52
    } else {
        36
    }
}

/// The most frequent value (the first seen among equals).
fn majority(values: impl Iterator<Item = u16> + Clone) -> u16 {
    let mut best = (0u16, 0usize);
    for v in values.clone() {
        let n = values.clone().filter(|x| *x == v).count();
        if n > best.1 {
            best = (v, n);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::flight::ServerHelloInfo;

    fn flight(cipher: u16, reversed: bool, records: &[usize]) -> Flight {
        Flight {
            hello: ServerHelloInfo {
                cipher,
                extensions: if reversed {
                    vec![0x002b, 0x0033]
                } else {
                    vec![0x0033, 0x002b]
                },
                key_share: Some((0x001d, vec![0; 32])),
                session_id: vec![0; 32],
            },
            records: records.to_vec(),
        }
    }

    #[test]
    fn learns_sizes_order_and_cipher_choices() {
        let mut probes = Vec::new();
        for i in 0..14 {
            probes.push((0x1301, flight(0x1302, true, &[23, 811, 280 + i % 3, 53])));
        }
        for _ in 0..3 {
            probes.push((0x1302, flight(0x1302, true, &[23, 811, 281, 53])));
            probes.push((0x1303, flight(0x1302, false, &[23, 811, 281, 53])));
        }
        let p = SiteProfile::from_flights(&probes).unwrap();
        assert_eq!(p.size_stats(), (1182, 1183, 1184));
        // A cipher no probe saw: another's sizes, Finished 16 bytes shorter than 0x1302's.
        assert!((1166..=1168).contains(&p.pick_size(0x1301, 3)));
        assert_eq!(p.sizes.len(), 20);
        assert_eq!(p.order, ExtensionOrder::SupportedVersionsFirst);
        assert_eq!(p.records, 4);
        assert_eq!(p.fallback, None);
        // Server preference for 1302, whatever the client prefers...
        assert_eq!(p.pick_cipher(&[0x1301, 0x1302, 0x1303]), 0x1302);
        assert_eq!(p.pick_cipher(&[0x1303, 0x1301, 0x1302]), 0x1302);
        // ...unless the client does not offer it.
        assert_eq!(p.pick_cipher(&[0x1301, 0x1303]), 0x1301);
        let picked: std::collections::BTreeSet<usize> =
            (0..200u32).map(|r| p.pick_size(0x1302, r)).collect();
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), [1182, 1183, 1184]);
        assert_eq!(SiteProfile::from_flights(&[]), None);
    }

    #[test]
    fn client_order_sites_echo_the_first_suite() {
        let probes: Vec<_> = [0x1301, 0x1302, 0x1303]
            .into_iter()
            .map(|c| (c, flight(c, false, &[3000])))
            .collect();
        let p = SiteProfile::from_flights(&probes).unwrap();
        assert_eq!(p.order, ExtensionOrder::KeyShareFirst);
        for first in [0x1301, 0x1302, 0x1303] {
            assert_eq!(p.pick_cipher(&[first, 0x1301]), first);
        }
        assert_eq!(p.pick_size(0x1303, 7), 3000);
    }

    #[test]
    fn huge_flights_are_capped_at_the_tls_record_limit() {
        let p =
            SiteProfile::from_flights(&[(0x1301, flight(0x1301, false, &[16384, 9000]))]).unwrap();
        assert_eq!(p.pick_size(0x1301, 0), MAX_FLIGHT_RECORD);
    }

    #[test]
    fn fallback_looks_like_openssl_with_cs_size_range() {
        let f = SiteProfile::fallback(0, "why".into());
        assert_eq!(f.size_stats(), (2499, 2500, 2501));
        assert_eq!(f.order, ExtensionOrder::SupportedVersionsFirst);
        assert_eq!(f.pick_cipher(&[0x1303, 0x1301]), 0x1303);
        assert_eq!(SiteProfile::fallback(1119, String::new()).sizes[1].1, 3619);
        let mut counts = [0usize; 3];
        for r in 0..4000u32 {
            counts[f.pick_size(0x1301, r) - 2499] += 1;
        }
        // The fallback's sizes are for SHA-256 suites; 0x1302's Finished is 16 bytes longer.
        assert_eq!(f.pick_size(0x1302, 1), 2516);
        assert_eq!(counts, [1000, 2000, 1000]);
    }
}
