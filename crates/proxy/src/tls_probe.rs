//! Learning how the real site answers a TLS 1.3 ClientHello, so that our fake first flight
//! has the same shape (spec client.md §5.2, issue 15): its cipher choice, the ServerHello's
//! extension order and the size of its **whole** encrypted first flight, however many
//! records it used. C sends 20 probes at start-up; so do we, then again every hour.
//!
//! A probe is an ordinary TDLib-shaped hello (the shape real clients send, with a real
//! X25519 key) whose TLS 1.3 suites are in TDLib's order for most probes and rotated for a
//! few (to see whether the site follows the client's preference or its own). The site sees
//! a normal client that hangs up after the server's first flight. The probe reads until the
//! site stops sending: the last record complete and then nothing for [`quiet_gap`], within
//! [`TIMEOUT`] and [`MAX_FLIGHT_BYTES`].
//!
//! What the answers are turned into is `mtproto_wire::tls::profile`; what cannot be
//! mirrored ends in [`learn`]'s single warning and the common-server fallback.

use mtproto_wire::tls::{
    build_client_hello, parse_flight, x25519_public_key, Flight, HelloFields, SiteProfile,
    Unmirrorable,
};
use rand::RngCore;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{info, warn};

/// Probes sent at once.
pub const PROBES: usize = 20;
/// All of them must be over within this.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The most a probe reads; a flight longer than this is cut (and not used).
pub const MAX_FLIGHT_BYTES: usize = 64 * 1024;
/// The shortest silence that ends a flight (see [`quiet_gap`]).
pub const MIN_QUIET: Duration = Duration::from_millis(100);

/// TDLib's order of the TLS 1.3 suites, and the two rotations some probes offer instead.
const SUITE_ORDERS: [[u16; 3]; 3] = [
    [0x1301, 0x1302, 0x1303],
    [0x1302, 0x1303, 0x1301],
    [0x1303, 0x1301, 0x1302],
];

/// How long the site must stay silent after a complete record before its flight counts as
/// over: four connect round trips, at least [`MIN_QUIET`], at most a second. A flight
/// bigger than the initial congestion window arrives over more than one round trip.
pub fn quiet_gap(connect_time: Duration) -> Duration {
    (connect_time * 4).clamp(MIN_QUIET, Duration::from_secs(1))
}

/// Why a probe gave no usable flight.
#[derive(Debug)]
pub enum ProbeError {
    /// Connecting, writing or reading failed, or the site did not finish in time.
    Io(io::Error),
    /// The site answered in a way our reply cannot imitate.
    Unmirrorable(Unmirrorable),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Io(e) => write!(f, "the site is unreachable or silent: {e}"),
            ProbeError::Unmirrorable(u) => u.fmt(f),
        }
    }
}

impl ProbeError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProbeError::Io(_) => "unreachable",
            ProbeError::Unmirrorable(u) => u.label(),
        }
    }
}

/// A TDLib-shaped hello for `sni` offering the TLS 1.3 suites in `order`, with a real
/// X25519 key share. Its random is not a valid fake-TLS HMAC (the site does not care).
pub fn probe_hello(sni: &str, order: [u16; 3]) -> Vec<u8> {
    let mut key = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut key);
    let mut h = build_client_hello(
        &key,
        Some(sni),
        0,
        &mut |b: &mut [u8]| rand::thread_rng().fill_bytes(b),
        mtproto_wire::tls::client::TDLIB_HELLO_LEN,
    );
    let Some(f) = HelloFields::parse(&h) else {
        return h;
    };
    if let Some(i) = f.ciphers.iter().position(|c| c >> 8 == 0x13) {
        let at = f.ciphers_at + 2 * i;
        for (k, s) in order.iter().enumerate() {
            h[at + 2 * k..at + 2 * k + 2].copy_from_slice(&s.to_be_bytes());
        }
    }
    if let Some(r) = f.x25519_share(&h) {
        let mut scalar = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut scalar);
        h[r].copy_from_slice(&x25519_public_key(&scalar));
    }
    h
}

/// One probe: sends `hello` and reads the site's answer until it stops (see the module
/// doc), by `deadline`.
pub async fn probe_once(
    addr: SocketAddr,
    hello: &[u8],
    deadline: Instant,
) -> Result<Flight, ProbeError> {
    let io = ProbeError::Io;
    let started = Instant::now();
    let mut s = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| io(io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    let gap = quiet_gap(started.elapsed());
    let _ = s.set_nodelay(true);
    s.write_all(hello).await.map_err(io)?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        let complete = match parse_flight(&buf) {
            Ok(_) => true,
            Err(Unmirrorable::Malformed(_)) => false,
            Err(u) => return Err(ProbeError::Unmirrorable(u)),
        };
        let until = if complete {
            deadline.min(Instant::now() + gap)
        } else {
            deadline
        };
        if buf.len() >= MAX_FLIGHT_BYTES {
            break;
        }
        buf.reserve(8192);
        match timeout_at(until, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) if buf.is_empty() => {
                return Err(io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the site closed without answering",
                )))
            }
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(io(e)),
            Err(_) if complete => break,
            Err(_) => {
                return Err(io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} bytes of an unfinished answer by the deadline",
                        buf.len()
                    ),
                )))
            }
        }
    }
    parse_flight(&buf).map_err(ProbeError::Unmirrorable)
}

/// C's start-up probe, with whole flights: [`PROBES`] at once, all within [`TIMEOUT`]. A
/// profile if at least half answered with a flight we can mirror and none with one we
/// cannot; else the most telling failure (an unmirrorable answer before a network error).
pub async fn probe(addr: SocketAddr, sni: &str) -> Result<SiteProfile, ProbeError> {
    let deadline = Instant::now() + TIMEOUT;
    let tasks: Vec<_> = (0..PROBES)
        .map(|i| {
            // 16 probes in TDLib's order, two in each rotation.
            let order = SUITE_ORDERS[if i % 5 == 4 { 1 + (i / 5) % 2 } else { 0 }];
            let hello = probe_hello(sni, order);
            tokio::spawn(async move { (order[0], probe_once(addr, &hello, deadline).await) })
        })
        .collect();
    let mut flights = Vec::with_capacity(PROBES);
    let mut failure: Option<ProbeError> = None;
    for t in tasks {
        match t.await {
            Ok((first, Ok(f))) => flights.push((first, f)),
            Ok((_, Err(e))) => {
                if !matches!(failure, Some(ProbeError::Unmirrorable(_))) {
                    failure = Some(e);
                }
            }
            Err(e) => failure = failure.or(Some(ProbeError::Io(io::Error::other(e)))),
        }
    }
    match failure {
        Some(e @ ProbeError::Unmirrorable(_)) => Err(e),
        Some(e) if flights.len() < PROBES / 2 => Err(e),
        _ => SiteProfile::from_flights(&flights)
            .ok_or_else(|| ProbeError::Io(io::ErrorKind::UnexpectedEof.into())),
    }
}

/// The start-up probe and its one log line: the learned profile, or (the site cannot be
/// mirrored, or `addr` is `None` because the domain did not resolve) a warning saying what
/// to choose instead and the common-server fallback.
pub async fn learn(addr: Option<SocketAddr>, sni: &str) -> SiteProfile {
    let result = match addr {
        Some(a) => probe(a, sni).await,
        None => Err(ProbeError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            "the domain did not resolve",
        ))),
    };
    let at = addr.map_or_else(|| "unresolved".to_string(), |a| a.to_string());
    match result {
        Ok(p) => {
            let (min, _, max) = p.size_stats();
            info!(
                "TLS domain {sni} ({at}): mirroring its first flight: {} records, answered with one record of {min}..{max} bytes, {:?}, ciphers {:04x?}",
                p.records, p.order, p.ciphers
            );
            p
        }
        Err(e) => {
            let p = SiteProfile::fallback(rand::random(), e.label().to_string());
            warn!(
                "TLS domain {sni} ({at}) cannot be mirrored: {e}; answering like nginx with OpenSSL instead (a {}-byte flight). Choose a -D domain (or --mask-host) whose site answers TLS 1.3 with x25519 in one round trip; check one with: mtproxy-ctl doctor --domain <name>",
                p.sizes[1].1
            );
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_hellos_carry_the_order_and_a_real_key() {
        for order in SUITE_ORDERS {
            let h = probe_hello("example.com", order);
            assert_eq!(h.len(), 517);
            let f = HelloFields::parse(&h).unwrap();
            assert_eq!(f.tls13_suites(), order);
            let share: [u8; 32] = h[f.x25519_share(&h).unwrap()].try_into().unwrap();
            assert_eq!(share[31] & 0x80, 0);
            assert_eq!(mtproto_wire::tls::ja4(&h).unwrap().len(), 36);
        }
    }

    #[test]
    fn quiet_gaps() {
        assert_eq!(quiet_gap(Duration::from_micros(50)), MIN_QUIET);
        assert_eq!(
            quiet_gap(Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        assert_eq!(quiet_gap(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
