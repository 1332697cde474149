//! Recognising and checking a fake-TLS ClientHello, the proxy's side (spec client.md
//! §2 row 1, §5.3–5.7).
//!
//! Two calls:
//! - [`detect`] on the first bytes of a connection: is this a TLS handshake record, and
//!   how many bytes (`need`) make the whole hello.
//! - [`check_client_hello`] once `need` bytes are buffered: the C checks, in C's order,
//!   ending in [`HelloVerdict::Accept`] or in a [`HelloVerdict::Reject`] that says which
//!   site to forward the untouched bytes to. A hello is never a reason to close.
//!
//! Differences from C, all chosen where the spec leaves room:
//! - No 767-byte ceiling (the 2019 code's): records up to the 4096-byte cap authenticate,
//!   as with the Nov-2025 C fix.
//! - The replay entry is added **after** the HMAC matched (C adds it before). See
//!   [`check_client_hello`] for why this shows nothing different on the wire.
//! - The replay cache is bounded ([`ReplayCache`]); when it had to evict entries younger
//!   than 10 minutes, the 10-minute grace of §5.5 stops short of them.
//! - [`SniPolicy::AllowMissing`] optionally accepts hellos without any SNI (iOS sends none).
//!
//! Not here: buffering, the 10-second deadline, the relay to the site, the reply
//! ([`super::server_hello`]).

use super::replay::ReplayCache;
use super::{hmac_sha256, MAX_HELLO_LEN, RANDOM_OFFSET, SESSION_ID_OFFSET};
use subtle::ConstantTimeEq;

/// C decides what a connection is once this many bytes are in (`min_len + 8`, spec §2).
/// [`detect`] gives the same answer on fewer bytes whenever it can.
pub const DETECT_BYTES: usize = 9;

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detect {
    /// Too few bytes to tell (fewer than 5, all consistent with a hello).
    NeedMore,
    /// Not `16 03 01 XX` with `0x02 ≤ XX ≤ 0x7F`: in TLS mode, forward to the default domain.
    NotTls,
    /// A TLS handshake record: buffer `need = 5 + record length` bytes (517..=32772), then
    /// call [`check_client_hello`]. C waits for all of them even above the 4096-byte cap.
    Hello {
        /// Bytes the whole hello record takes.
        need: usize,
    },
}

/// Looks at the first bytes of a connection (C's entry condition, spec §2 row 1 and §5.3).
pub fn detect(first: &[u8]) -> Detect {
    const PREFIX: [u8; 3] = [0x16, 0x03, 0x01];
    if first.iter().zip(PREFIX).any(|(&a, b)| a != b) {
        return Detect::NotTls;
    }
    if first.len() >= 4 && !(0x02..=0x7f).contains(&first[3]) {
        return Detect::NotTls;
    }
    if first.len() < 5 {
        return Detect::NeedMore;
    }
    Detect::Hello {
        need: 5 + usize::from(u16::from_be_bytes([first[3], first[4]])),
    }
}

/// What the SNI walk found (C's `get_sni_domain_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sni<'a> {
    /// A well-formed `host_name` entry; the bytes of the name (no NUL bytes, maybe empty).
    Name(&'a [u8]),
    /// No SNI extension: the extension walk ended exactly at the end of the input.
    Missing,
    /// The walk ran off the end, or the SNI extension is malformed.
    Malformed,
}

fn be16(b: &[u8], pos: usize) -> usize {
    usize::from(u16::from_be_bytes([b[pos], b[pos + 1]]))
}

/// Finds the SNI the way C does: it assumes a 32-byte session id (starts at offset 76),
/// skips the cipher suites and then 4 bytes (compression length and one method, extensions
/// length), walks `type len data` extensions until type 0, and requires
/// `list_len = ext_len − 2`, type `00`, `name_len = ext_len − 5`, and no NUL in the name.
/// C passes at most the first 4096 bytes; so should the caller.
pub fn sni_of(hello: &[u8]) -> Sni<'_> {
    let n = hello.len();
    let mut pos = SESSION_ID_OFFSET + 32;
    if pos + 2 > n {
        return Sni::Malformed;
    }
    let cs_len = be16(hello, pos);
    pos += 2;
    if pos + cs_len + 4 > n {
        return Sni::Malformed;
    }
    pos += cs_len + 4;
    loop {
        if pos == n {
            return Sni::Missing;
        }
        if pos + 4 > n {
            return Sni::Malformed;
        }
        let ext_type = be16(hello, pos);
        let ext_len = be16(hello, pos + 2);
        pos += 4;
        if pos + ext_len > n {
            return Sni::Malformed;
        }
        if ext_type == 0 {
            if ext_len < 5 || be16(hello, pos) != ext_len - 2 || hello[pos + 2] != 0 {
                return Sni::Malformed;
            }
            if be16(hello, pos + 3) != ext_len - 5 {
                return Sni::Malformed;
            }
            let name = &hello[pos + 5..pos + ext_len];
            if name.contains(&0) {
                return Sni::Malformed;
            }
            return Sni::Name(name);
        }
        pos += ext_len;
    }
}

/// C's `is_allowed_timestamp` (spec §5.5): `ts` is the client's signed 32-bit time, `now`
/// the proxy's unix time, `oldest` the receive time of the oldest cached hello (`None` with
/// an empty cache).
/// 1. `ts > now + 3` → no; 2. `ts > oldest + 3` → yes; 3. `ts > now − 600` → yes; 4. no.
pub fn is_allowed_timestamp(ts: i64, now: i64, oldest: Option<i64>) -> bool {
    allowed_with_floor(ts, now, oldest, None)
}

/// Largest lead of the client's clock (rule 1).
pub const MAX_CLOCK_LEAD: i64 = 3;
/// The grace window for old timestamps (rule 3): 10 minutes.
pub const GRACE: i64 = 600;

/// [`is_allowed_timestamp`] with the grace of rule 3 cut at `evicted_until + 3` when the
/// cache had to forget hellos received up to `evicted_until`: a hello that old may be a
/// replay the cache no longer knows. Without evictions this is C's rule exactly.
fn allowed_with_floor(ts: i64, now: i64, oldest: Option<i64>, evicted_until: Option<i64>) -> bool {
    if ts > now + MAX_CLOCK_LEAD {
        return false;
    }
    if oldest.is_some_and(|o| ts > o + MAX_CLOCK_LEAD) {
        return true;
    }
    let floor = match evicted_until {
        Some(e) => (now - GRACE).max(e + MAX_CLOCK_LEAD),
        None => now - GRACE,
    };
    ts > floor
}

/// How hellos without an SNI extension are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SniPolicy {
    /// C: the SNI must name a configured domain, else forward to the default domain.
    #[default]
    RequireKnown,
    /// Also accept a hello with **no SNI extension at all** ([`Sni::Missing`]) if it
    /// authenticates (Telegram-iOS sends none). Its rejections forward to the default
    /// domain. An unknown or malformed SNI is still rejected.
    AllowMissing,
}

/// Where a rejected hello goes (spec §5.11). The proxy connects to port 80 instead of 443
/// when the client came in on local port 80.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardTarget {
    /// The first configured domain.
    DefaultDomain,
    /// The domain the SNI named: an index into the `domains` passed in.
    SniDomain(usize),
}

impl ForwardTarget {
    /// Index into the domain list (the default domain is index 0).
    pub fn index(self) -> usize {
        match self {
            ForwardTarget::DefaultDomain => 0,
            ForwardTarget::SniDomain(i) => i,
        }
    }
}

/// Why a hello was not accepted, in the order C checks (spec §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The caller passed something that is not exactly one hello record (or no secrets):
    /// C never gets here; treated like non-TLS bytes.
    NotHello,
    /// Step 1: no SNI extension (under [`SniPolicy::RequireKnown`]).
    SniMissing,
    /// Step 1: malformed SNI, or the extension walk ran off the end.
    SniMalformed,
    /// Step 1: an SNI that is not a configured domain.
    SniUnknown,
    /// Step 2: the client came in on local port 80.
    Port80,
    /// Step 3: the client sent bytes after the hello before getting an answer.
    ExtraBytes,
    /// Step 4: `need > 4096`.
    TooLong,
    /// Step 5: the first 16 bytes of the random are in the replay cache.
    Replay,
    /// Step 7: no secret's HMAC matches.
    NoSecret,
    /// Step 8: the timestamp is outside the allowed window.
    Timestamp,
    /// Step 9: the first non-GREASE cipher suite is not 1301..1303.
    Cipher,
}

impl RejectReason {
    /// Short lower-case name for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            RejectReason::NotHello => "not_hello",
            RejectReason::SniMissing => "sni_missing",
            RejectReason::SniMalformed => "sni_malformed",
            RejectReason::SniUnknown => "sni_unknown",
            RejectReason::Port80 => "port_80",
            RejectReason::ExtraBytes => "extra_bytes",
            RejectReason::TooLong => "too_long",
            RejectReason::Replay => "replay",
            RejectReason::NoSecret => "no_secret",
            RejectReason::Timestamp => "timestamp",
            RejectReason::Cipher => "cipher",
        }
    }
}

/// The outcome of [`check_client_hello`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloVerdict {
    /// Consume the hello and send the reply of [`super::build_server_hello`].
    Accept {
        /// Index of the secret whose HMAC matched (first match in order).
        secret_index: usize,
        /// Index of the SNI domain; `None` for a hello without SNI
        /// ([`SniPolicy::AllowMissing`]).
        domain: Option<usize>,
        /// The suite to echo: `0x1301`, `0x1302` or `0x1303`.
        cipher: u16,
        /// Bytes 44..76 of the hello, copied into the reply blindly.
        session_id: [u8; 32],
        /// Bytes 11..43 as received (the reply's HMAC covers them).
        client_random: [u8; 32],
        /// The client's clock, recovered from the random.
        timestamp: i32,
    },
    /// Forward everything received so far, unchanged, to `forward_to`.
    Reject {
        /// The first check that failed.
        reason: RejectReason,
        /// Where the connection is spliced.
        forward_to: ForwardTarget,
    },
}

/// Checks a complete ClientHello in C's order (spec §5.3).
///
/// - `hello`: exactly `need` bytes (see [`detect`]).
/// - `buffered_extra`: bytes already received after them (step 3 rejects if non-zero).
/// - `secrets`: tried in order; `domains`: the `-D` list, the first is the default domain,
///   matched byte for byte, case-sensitive.
/// - `now`: unix seconds; `cache`: the replay cache (updated here).
/// - `local_port_is_80`: the connection came in on local port 80 (step 2).
///
/// **Replay insertion point.** C adds the random to the cache before the HMAC check
/// (step 6), so every probe with a known SNI takes a cache entry; C's cache is unbounded,
/// which is its memory hole. With a bounded cache the same order would let a probe that
/// knows no secret flush it with junk hellos and then replay a captured real hello (once it
/// is evicted, the 10-minute grace of §5.5 accepts it), which would reveal the proxy. So
/// the entry is added right after the HMAC matched, before the timestamp check. A prober
/// sees nothing different from C: every hello rejected from step 5 on goes to the same SNI
/// domain whatever the reason, and an authenticated hello is cached before its timestamp is
/// judged exactly as in C (so `oldest` is never empty there). Two outcomes differ, both
/// only for hellos sharing their first 16 random bytes with an earlier unauthenticated one:
/// a second unauthenticated copy is reported as `NoSecret` rather than `Replay` (same
/// forward), and a genuine hello whose random was first seen in a corrupted copy (a man in
/// the middle racing the client) is accepted, where C would forward it as a replay.
///
/// **Timestamp.** Rules of [`is_allowed_timestamp`] with `oldest` from the cache; while the
/// cache has evicted (because full) hellos younger than 10 minutes, rule 3 stops at
/// `evicted_until + 3` (see [`ReplayCache::evicted_until`]).
#[allow(clippy::too_many_arguments)]
pub fn check_client_hello(
    hello: &[u8],
    buffered_extra: usize,
    secrets: &[[u8; 16]],
    domains: &[String],
    now: i64,
    cache: &mut ReplayCache,
    policy: SniPolicy,
    local_port_is_80: bool,
) -> HelloVerdict {
    let reject = |reason, forward_to| HelloVerdict::Reject { reason, forward_to };
    match detect(hello) {
        Detect::Hello { need } if need == hello.len() && !secrets.is_empty() => {}
        _ => return reject(RejectReason::NotHello, ForwardTarget::DefaultDomain),
    }
    let len = hello.len();

    // Step 1: SNI, on at most the first 4096 bytes.
    let scan = &hello[..len.min(MAX_HELLO_LEN)];
    let (domain, target) = match sni_of(scan) {
        Sni::Name(name) => match domains.iter().position(|d| d.as_bytes() == name) {
            Some(i) => (Some(i), ForwardTarget::SniDomain(i)),
            None => return reject(RejectReason::SniUnknown, ForwardTarget::DefaultDomain),
        },
        Sni::Missing if policy == SniPolicy::AllowMissing => (None, ForwardTarget::DefaultDomain),
        Sni::Missing => return reject(RejectReason::SniMissing, ForwardTarget::DefaultDomain),
        Sni::Malformed => return reject(RejectReason::SniMalformed, ForwardTarget::DefaultDomain),
    };
    // Steps 2-4.
    if local_port_is_80 {
        return reject(RejectReason::Port80, target);
    }
    if buffered_extra > 0 {
        return reject(RejectReason::ExtraBytes, target);
    }
    if len > MAX_HELLO_LEN {
        return reject(RejectReason::TooLong, target);
    }

    // Step 5: replay.
    let mut client_random = [0u8; 32];
    client_random.copy_from_slice(&hello[RANDOM_OFFSET..RANDOM_OFFSET + 32]);
    let key: [u8; 16] = client_random[..16].try_into().expect("16 bytes");
    if cache.contains(&key) {
        return reject(RejectReason::Replay, target);
    }

    // Step 7: HMAC over the whole hello with the random zeroed, 28 bytes compared in
    // constant time, first matching secret wins.
    let matched = secrets.iter().enumerate().find_map(|(i, secret)| {
        let d = hello_hmac(secret, hello);
        bool::from(d[..28].ct_eq(&client_random[..28])).then_some((i, d))
    });
    let Some((secret_index, digest)) = matched else {
        return reject(RejectReason::NoSecret, target);
    };
    // Step 6, moved here (see above).
    cache.insert(&key, now);

    // Step 8: timestamp.
    let ts = i32::from_le_bytes(digest[28..32].try_into().expect("4"))
        ^ i32::from_le_bytes(client_random[28..32].try_into().expect("4"));
    if !allowed_with_floor(
        i64::from(ts),
        now,
        cache.oldest_time(),
        cache.evicted_until(),
    ) {
        return reject(RejectReason::Timestamp, target);
    }

    // Step 9: cipher suites.
    let Some(cipher) = first_tls13_suite(hello) else {
        return reject(RejectReason::Cipher, target);
    };

    let mut session_id = [0u8; 32];
    session_id.copy_from_slice(&hello[SESSION_ID_OFFSET..SESSION_ID_OFFSET + 32]);
    HelloVerdict::Accept {
        secret_index,
        domain,
        cipher,
        session_id,
        client_random,
        timestamp: ts,
    }
}

/// `HMAC-SHA256(secret, hello with bytes 11..43 zeroed)`, record header included.
///
/// # Panics
/// If `hello` is shorter than 43 bytes.
pub fn hello_hmac(secret: &[u8; 16], hello: &[u8]) -> [u8; 32] {
    hmac_sha256(
        secret,
        &[
            &hello[..RANDOM_OFFSET],
            &[0u8; 32],
            &hello[RANDOM_OFFSET + 32..],
        ],
    )
}

/// Step 9: skip leading GREASE suites (both bytes with low nibble `A`); the first other
/// one must be `13 01`..`13 03`. `None` if not, or if the list runs past the end.
fn first_tls13_suite(hello: &[u8]) -> Option<u16> {
    let start = SESSION_ID_OFFSET + 32;
    if start + 2 > hello.len() {
        return None;
    }
    let mut cs_len = be16(hello, start);
    let mut pos = start + 2;
    if pos + cs_len > hello.len() {
        return None;
    }
    let is_grease = |b: u8| b & 0x0f == 0x0a;
    while cs_len >= 2 && is_grease(hello[pos]) && is_grease(hello[pos + 1]) {
        cs_len -= 2;
        pos += 2;
    }
    if cs_len <= 1 || hello[pos] != 0x13 || !(1..=3).contains(&hello[pos + 1]) {
        return None;
    }
    Some(0x1300 | u16::from(hello[pos + 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::client::build_client_hello;
    use crate::tls::testutil::*;
    use proptest::prelude::*;

    fn doms(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn check(
        hello: &[u8],
        secrets: &[[u8; 16]],
        domains: &[String],
        now: i64,
        cache: &mut ReplayCache,
    ) -> HelloVerdict {
        check_client_hello(
            hello,
            0,
            secrets,
            domains,
            now,
            cache,
            SniPolicy::RequireKnown,
            false,
        )
    }

    fn rejected(reason: RejectReason, forward_to: ForwardTarget) -> HelloVerdict {
        HelloVerdict::Reject { reason, forward_to }
    }

    const SNI0: ForwardTarget = ForwardTarget::SniDomain(0);

    #[test]
    fn detect_entry_condition() {
        assert_eq!(detect(&[]), Detect::NeedMore);
        assert_eq!(detect(&[0x16, 3, 1]), Detect::NeedMore);
        assert_eq!(detect(&[0x16, 3, 1, 2]), Detect::NeedMore);
        assert_eq!(detect(&[0x16, 3, 1, 2, 0]), Detect::Hello { need: 517 });
        assert_eq!(
            detect(&[0x16, 3, 1, 0x7f, 0xff, 0, 0, 0, 0]),
            Detect::Hello { need: 32772 }
        );
        assert_eq!(
            detect(&[0x16, 3, 1, 6, 0x0c, 1]),
            Detect::Hello { need: 1553 }
        );
        for bad in [
            &[0x17u8][..],
            &[0x16, 3, 3],
            &[0x16, 3, 1, 1, 0xff],
            &[0x16, 3, 1, 0x80, 0],
            &[0x16, 2],
            b"GET / HTTP/1.1",
        ] {
            assert_eq!(detect(bad), Detect::NotTls, "{bad:02x?}");
        }
    }

    #[test]
    fn vector_8_6_sni_and_hmac() {
        let hello = hello_86();
        assert_eq!(hello.len(), 517);
        assert_eq!(sni_of(&hello), Sni::Name(b"www.example.com"));
        assert_eq!(
            hex::encode(hello_hmac(&s(), &hello)),
            "eca3a4b945bf2403e74caffe9eee2be0c7e02718b00886649aad94deffb1c889"
        );
    }

    #[test]
    fn vector_8_6_accepted_with_two_secrets() {
        let hello = hello_86();
        let mut cache = ReplayCache::default();
        let v = check(&hello, &[s2(), s()], &doms(&[DOMAIN]), NOW, &mut cache);
        let mut sid = [0u8; 32];
        sid.copy_from_slice(&hello[44..76]);
        assert_eq!(
            v,
            HelloVerdict::Accept {
                secret_index: 1,
                domain: Some(0),
                cipher: 0x1301,
                session_id: sid,
                client_random: arr(&hello[11..43]),
                timestamp: 1_700_000_000,
            }
        );
        assert_eq!(cache.len(), 1);
        // Row "sent a second time".
        assert_eq!(
            check(&hello, &[s()], &doms(&[DOMAIN]), NOW, &mut cache),
            rejected(RejectReason::Replay, SNI0)
        );
    }

    #[test]
    fn vector_8_6_other_conditions() {
        let hello = hello_86();
        let d = doms(&[DOMAIN]);
        let fresh = ReplayCache::default;
        // now = ts - 4: client clock 4 s ahead.
        assert_eq!(
            check(&hello, &[s()], &d, NOW - 4, &mut fresh()),
            rejected(RejectReason::Timestamp, SNI0)
        );
        // now = ts + 599 / + 600, cache empty before.
        assert!(matches!(
            check(&hello, &[s()], &d, NOW + 599, &mut fresh()),
            HelloVerdict::Accept { .. }
        ));
        assert_eq!(
            check(&hello, &[s()], &d, NOW + 600, &mut fresh()),
            rejected(RejectReason::Timestamp, SNI0)
        );
        // now = ts + 86400, oldest cached hello received at ts - 3600.
        let mut c = fresh();
        c.insert(&[0xaa; 16], NOW - 3600);
        assert!(matches!(
            check(&hello, &[s()], &d, NOW + 86_400, &mut c),
            HelloVerdict::Accept { .. }
        ));
        // Proxy configured for other.example only.
        assert_eq!(
            check(&hello, &[s()], &doms(&["other.example"]), NOW, &mut fresh()),
            rejected(RejectReason::SniUnknown, ForwardTarget::DefaultDomain)
        );
        // Wrong secret.
        assert_eq!(
            check(&hello, &[s2()], &d, NOW, &mut fresh()),
            rejected(RejectReason::NoSecret, SNI0)
        );
        // One extra byte after the hello.
        assert_eq!(
            check_client_hello(
                &hello,
                1,
                &[s()],
                &d,
                NOW,
                &mut fresh(),
                SniPolicy::RequireKnown,
                false
            ),
            rejected(RejectReason::ExtraBytes, SNI0)
        );
    }

    #[test]
    fn sni_domain_index_and_port_80() {
        let hello = hello_86();
        let d = doms(&["default.example", DOMAIN]);
        let mut cache = ReplayCache::default();
        assert_eq!(
            check_client_hello(
                &hello,
                0,
                &[s()],
                &d,
                NOW,
                &mut cache,
                SniPolicy::RequireKnown,
                true
            ),
            rejected(RejectReason::Port80, ForwardTarget::SniDomain(1))
        );
        // Port 80 and the other pre-authentication rejections leave no cache entry.
        assert!(cache.is_empty());
        match check(&hello, &[s()], &d, NOW, &mut cache) {
            HelloVerdict::Accept { domain, .. } => assert_eq!(domain, Some(1)),
            v => panic!("{v:?}"),
        }
        // Matching is byte for byte, case-sensitive.
        assert_eq!(
            check(
                &hello,
                &[s()],
                &doms(&["WWW.EXAMPLE.COM"]),
                NOW,
                &mut ReplayCache::default()
            ),
            rejected(RejectReason::SniUnknown, ForwardTarget::DefaultDomain)
        );
    }

    #[test]
    fn replay_entry_only_after_authentication() {
        let hello = hello_86();
        let d = doms(&[DOMAIN]);
        let mut cache = ReplayCache::default();
        // An unauthenticated copy takes no entry...
        assert_eq!(
            check(&hello, &[s2()], &d, NOW, &mut cache),
            rejected(RejectReason::NoSecret, SNI0)
        );
        assert!(cache.is_empty());
        // ...so the real one still passes; an authenticated hello with a bad timestamp
        // is cached (as in C) and its retry is a replay.
        let mut c2 = ReplayCache::default();
        assert_eq!(
            check(&hello, &[s()], &d, NOW + 600, &mut c2),
            rejected(RejectReason::Timestamp, SNI0)
        );
        assert_eq!(c2.len(), 1);
        assert_eq!(
            check(&hello, &[s()], &d, NOW, &mut c2),
            rejected(RejectReason::Replay, SNI0)
        );
        assert!(matches!(
            check(&hello, &[s()], &d, NOW, &mut cache),
            HelloVerdict::Accept { .. }
        ));
    }

    #[test]
    fn vector_8_9_is_allowed_timestamp() {
        let n = NOW;
        let cases = [
            (n + 3, n, true),
            (n + 4, n, false),
            (n - 599, n, true),
            (n - 600, n, false),
            (n - 100_000, n - 200_000, true),
            (n - 199_997, n - 200_000, false),
        ];
        for (ts, oldest, ok) in cases {
            assert_eq!(
                is_allowed_timestamp(ts, n, Some(oldest)),
                ok,
                "{ts} {oldest}"
            );
        }
        assert!(is_allowed_timestamp(n - 599, n, None));
        assert!(!is_allowed_timestamp(n - 600, n, None));
    }

    #[test]
    fn eviction_narrows_the_grace_window() {
        // Cache of 2: after a third hello, the first one (received at NOW) is forgotten.
        let d = doms(&[DOMAIN]);
        let mut cache = ReplayCache::new(2);
        let old = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("a"), 517);
        assert!(matches!(
            check(&old, &[s()], &d, NOW, &mut cache),
            HelloVerdict::Accept { .. }
        ));
        for (i, label) in ["b", "c"].iter().enumerate() {
            let t = NOW + 10 + i as i64;
            let h = build_client_hello(&s(), Some(DOMAIN), t, &mut stream(label), 517);
            assert!(matches!(
                check(&h, &[s()], &d, t, &mut cache),
                HelloVerdict::Accept { .. }
            ));
        }
        assert_eq!(cache.evicted_until(), Some(NOW));
        assert!(!cache.contains(&arr(&old[11..27])));
        // C's rules alone would take the replay (ts = now - 20 is inside 10 minutes).
        assert!(is_allowed_timestamp(NOW, NOW + 20, cache.oldest_time()));
        assert_eq!(
            check(&old, &[s()], &d, NOW + 20, &mut cache),
            rejected(RejectReason::Timestamp, SNI0)
        );
        // That insertion evicted "b" (received at NOW + 10). The next one evicts "c"
        // (received at NOW + 11, so its timestamp was at most NOW + 14): a fresh hello passes
        // only if its clock is past that, even though C's rules would take it.
        assert_eq!(cache.evicted_until(), Some(NOW + 10));
        let late = build_client_hello(&s(), Some(DOMAIN), NOW + 14, &mut stream("e"), 517);
        assert_eq!(
            check(&late, &[s()], &d, NOW + 20, &mut cache.clone()),
            rejected(RejectReason::Timestamp, SNI0)
        );
        let h = build_client_hello(&s(), Some(DOMAIN), NOW + 15, &mut stream("d"), 517);
        assert!(matches!(
            check(&h, &[s()], &d, NOW + 20, &mut cache),
            HelloVerdict::Accept { .. }
        ));
    }

    #[test]
    fn long_hellos_accepted_up_to_the_cap() {
        let d = doms(&[DOMAIN]);
        for len in [517usize, 768, 1024, 1553, 1823, 4096] {
            let h = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("long"), len);
            assert_eq!(h.len(), len);
            assert_eq!(detect(&h[..9]), Detect::Hello { need: len });
            let v = check(&h, &[s()], &d, NOW, &mut ReplayCache::default());
            assert!(matches!(v, HelloVerdict::Accept { .. }), "{len}: {v:?}");
        }
        let h = build_client_hello(&s(), Some(DOMAIN), NOW, &mut stream("long"), 4097);
        let mut cache = ReplayCache::default();
        assert_eq!(
            check(&h, &[s()], &d, NOW, &mut cache),
            rejected(RejectReason::TooLong, SNI0)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn missing_sni_policy() {
        let h = build_client_hello(&s(), None, NOW, &mut stream("ios"), 517);
        assert_eq!(sni_of(&h), Sni::Missing);
        let d = doms(&[DOMAIN]);
        let run = |policy, secret: [u8; 16], port80| {
            check_client_hello(
                &h,
                0,
                &[secret],
                &d,
                NOW,
                &mut ReplayCache::default(),
                policy,
                port80,
            )
        };
        // C: forwarded to the default domain.
        assert_eq!(
            run(SniPolicy::RequireKnown, s(), false),
            rejected(RejectReason::SniMissing, ForwardTarget::DefaultDomain)
        );
        match run(SniPolicy::AllowMissing, s(), false) {
            HelloVerdict::Accept {
                domain, timestamp, ..
            } => {
                assert_eq!(domain, None);
                assert_eq!(timestamp, NOW as i32);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(
            run(SniPolicy::AllowMissing, s2(), false),
            rejected(RejectReason::NoSecret, ForwardTarget::DefaultDomain)
        );
        assert_eq!(
            run(SniPolicy::AllowMissing, s(), true),
            rejected(RejectReason::Port80, ForwardTarget::DefaultDomain)
        );
        // An unknown SNI stays rejected under AllowMissing.
        let h86 = hello_86();
        assert_eq!(
            check_client_hello(
                &h86,
                0,
                &[s()],
                &doms(&["other.example"]),
                NOW,
                &mut ReplayCache::default(),
                SniPolicy::AllowMissing,
                false
            ),
            rejected(RejectReason::SniUnknown, ForwardTarget::DefaultDomain)
        );
    }

    /// Rewrites the hello's cipher list (same length) and re-signs it.
    fn with_suites(suites: &[u8], secret: &[u8; 16]) -> Vec<u8> {
        let mut h = hello_86();
        assert_eq!(be16(&h, 76), 32);
        h[78..78 + suites.len()].copy_from_slice(suites);
        resign(&mut h, secret, NOW);
        h
    }

    fn resign(h: &mut [u8], secret: &[u8; 16], ts: i64) {
        let d = hello_hmac(secret, h);
        h[11..43].copy_from_slice(&d);
        for i in 0..4 {
            h[39 + i] ^= (ts as u32).to_le_bytes()[i];
        }
    }

    #[test]
    fn cipher_rule() {
        let d = doms(&[DOMAIN]);
        let mut base = hello_86()[78..110].to_vec();
        let cases: [(&[u8], Option<u16>); 6] = [
            (&[0x13, 0x02], Some(0x1302)),
            (&[0x13, 0x03], Some(0x1303)),
            (&[0x3a, 0x3a, 0x1a, 0x2a, 0x13, 0x01], Some(0x1301)),
            (&[0xc0, 0x2b], None),
            (&[0x13, 0x04], None),
            (&[0x1a, 0x1a, 0x13, 0x00], None),
        ];
        for (suites, want) in cases {
            base[..suites.len()].copy_from_slice(suites);
            let h = with_suites(&base, &s());
            let v = check(&h, &[s()], &d, NOW, &mut ReplayCache::default());
            match want {
                Some(c) => {
                    assert!(matches!(v, HelloVerdict::Accept { cipher, .. } if cipher == c))
                }
                None => assert_eq!(v, rejected(RejectReason::Cipher, SNI0)),
            }
            base = hello_86()[78..110].to_vec();
        }
        // All GREASE: nothing left.
        let h = with_suites(&[0x0a; 32], &s());
        assert_eq!(
            check(&h, &[s()], &d, NOW, &mut ReplayCache::default()),
            rejected(RejectReason::Cipher, SNI0)
        );
    }

    #[test]
    fn sni_walk_edge_cases() {
        // Session id length is ignored: C assumes 32.
        let mut h = hello_86();
        h[43] = 0;
        assert_eq!(sni_of(&h), Sni::Name(b"www.example.com"));
        // Truncated anywhere before the SNI: malformed.
        for cut in [0, 50, 77, 78, 111, 116, 120, 140] {
            assert_eq!(sni_of(&h[..cut]), Sni::Malformed, "{cut}");
        }
        // A NUL byte in the name.
        let mut h = hello_86();
        let p = h.windows(3).position(|w| w == b"www").unwrap();
        h[p + 1] = 0;
        assert_eq!(sni_of(&h), Sni::Malformed);
        // Inner length not ext_len - 2.
        let mut h = hello_86();
        h[p - 4] ^= 1;
        assert_eq!(sni_of(&h), Sni::Malformed);
        // Name type not host_name.
        let mut h = hello_86();
        h[p - 3] = 1;
        assert_eq!(sni_of(&h), Sni::Malformed);
    }

    #[test]
    fn not_a_hello_or_no_secrets() {
        let d = doms(&[DOMAIN]);
        let mut cache = ReplayCache::default();
        let h = hello_86();
        for bad in [&h[..516], &h[..100], &[][..]] {
            assert_eq!(
                check(bad, &[s()], &d, NOW, &mut cache),
                rejected(RejectReason::NotHello, ForwardTarget::DefaultDomain)
            );
        }
        assert_eq!(
            check(&h, &[], &d, NOW, &mut cache),
            rejected(RejectReason::NotHello, ForwardTarget::DefaultDomain)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn flood_of_identical_and_distinct_hellos_keeps_cache_bounded() {
        let d = doms(&[DOMAIN]);
        let mut cache = ReplayCache::new(1000);
        let h = hello_86();
        // 100 000 copies of one real hello: one entry, all the rest are replays.
        assert!(matches!(
            check(&h, &[s()], &d, NOW, &mut cache),
            HelloVerdict::Accept { .. }
        ));
        for _ in 1..100_000 {
            assert_eq!(
                check(&h, &[s()], &d, NOW, &mut cache),
                rejected(RejectReason::Replay, SNI0)
            );
        }
        assert_eq!(cache.len(), 1);
        // Distinct unauthenticated hellos (a probe without the secret): no entries at all.
        let mut junk = h.clone();
        for i in 0..20_000u32 {
            junk[11..15].copy_from_slice(&i.to_le_bytes());
            assert_eq!(
                check(&junk, &[s()], &d, NOW, &mut cache),
                rejected(RejectReason::NoSecret, SNI0)
            );
        }
        assert_eq!(cache.len(), 1);
        // Distinct authenticated hellos: bounded by the cap.
        let mut rnd = stream("flood");
        for i in 0..3000 {
            let g = build_client_hello(&s(), Some(DOMAIN), NOW + i / 100, &mut rnd, 517);
            assert!(matches!(
                check(&g, &[s()], &d, NOW + i / 100, &mut cache),
                HelloVerdict::Accept { .. }
            ));
            assert!(cache.len() <= 1000);
        }
        assert_eq!(cache.len(), 1000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            prefix: bool,
            extra in 0usize..3,
            policy: bool,
            port80: bool,
        ) {
            if prefix && bytes.len() >= 5 {
                let rec = (bytes.len() - 5) as u16;
                bytes[..5].copy_from_slice(&[0x16, 3, 1, (rec >> 8) as u8, rec as u8]);
            }
            let _ = detect(&bytes);
            let _ = sni_of(&bytes);
            let _ = first_tls13_suite(&bytes);
            let policy = if policy { SniPolicy::AllowMissing } else { SniPolicy::RequireKnown };
            let mut cache = ReplayCache::new(4);
            let _ = check_client_hello(&bytes, extra, &[s()], &doms(&[DOMAIN, ""]), NOW, &mut cache, policy, port80);
        }

        #[test]
        fn corrupted_hello_never_panics_and_never_authenticates(
            pos in 0usize..517,
            val: u8,
            cut in 0usize..517,
        ) {
            let mut h = hello_86();
            let v = check(&h[..cut], &[s()], &doms(&[DOMAIN]), NOW, &mut ReplayCache::default());
            let accepted = matches!(v, HelloVerdict::Accept { .. });
            prop_assert!(!accepted);
            // Bytes 39..43 carry the timestamp: changing them can leave it allowed.
            prop_assume!(!(39..43).contains(&pos) && h[pos] != val);
            h[pos] = val;
            let v = check(&h, &[s()], &doms(&[DOMAIN]), NOW, &mut ReplayCache::default());
            let accepted = matches!(v, HelloVerdict::Accept { .. });
            prop_assert!(!accepted, "{:?}", v);
        }
    }
}
