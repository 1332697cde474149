//! Client sessions through a proxy's client port, with the reference client (`mtproxy-client`): the
//! unit of every workload, gate and traffic loop in the tools.
//!
//! A session is: TCP connect; the obfuscated2 header (inside fake TLS when the target says
//! so) and an unencrypted `req_pq_multi`, answered by `resPQ` with our nonce (the real
//! first exchange of a Telegram client, so it works against a production proxy too); then
//! `n` round trips of an "encrypted" packet that the far end echoes (the fakes (`mtproxy-fakes`) do;
//! Telegram would not, so production gates use `n = 0`). Its timings are measured
//! separately: connect, handshake (header to `resPQ`), each round trip.
//!
//! A failure before the first answer is "refused" (the client was never served); after it
//! "broken" (a session that was working got cut).
//!
//! What it is not: a Telegram client. It only talks to loopback addresses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mtproxy_client::{parse_res_pq, req_pq_multi, Client, ClientOpts, Tag};
use rand::RngCore;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::procs::ms;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub opts: ClientOpts,
}

impl Target {
    /// A short name of the transport, for reports.
    pub fn transport(&self) -> &'static str {
        if self.opts.tls.is_some() {
            return "fake-tls";
        }
        tag_name(self.opts.tag)
    }
}

pub fn tag_name(tag: Tag) -> &'static str {
    match tag {
        Tag::Abridged => "abridged",
        Tag::Intermediate => "intermediate",
        Tag::Padded => "padded",
    }
}

/// Timings of a successful session.
#[derive(Clone, Debug, Default)]
pub struct Timing {
    pub connect_ms: f64,
    pub handshake_ms: f64,
    pub round_trips_ms: Vec<f64>,
    /// Payload bytes sent plus received.
    pub bytes: u64,
}

/// Why a session failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Before the first answer: connect refused or timed out, reset, closed, no answer.
    Refused(RefusedKind, String),
    /// After the first answer: the session was cut or stopped answering.
    Broken(String),
}

/// The kind of a refusal, for the drill's breakdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedKind {
    /// TCP connect failed.
    Connect,
    /// Accepted by the kernel, then reset or closed before any answer.
    Reset,
    /// Connected, but no answer in time.
    NoAnswer,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(k, m) => write!(f, "refused ({k:?}): {m}"),
            Failure::Broken(m) => write!(f, "broken: {m}"),
        }
    }
}

/// An "encrypted" MTProto packet (non-zero auth_key_id) of `n` bytes (at least 56, a
/// multiple of 4 for every transport).
pub fn packet(n: usize) -> Vec<u8> {
    let n = n.max(56).div_ceil(4) * 4;
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v[0] |= 1;
    v
}

/// The echo of `sent` (padded intermediate may add up to 15 padding bytes).
pub fn is_echo(tag: Tag, sent: &[u8], back: &[u8]) -> bool {
    let extra = if tag == Tag::Padded { 15 } else { 0 };
    back.len() >= sent.len() && back.len() - sent.len() <= extra && back[..sent.len()] == *sent
}

fn classify(e: &std::io::Error) -> RefusedKind {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | UnexpectedEof | BrokenPipe | ConnectionAborted => RefusedKind::Reset,
        TimedOut => RefusedKind::NoAnswer,
        _ => RefusedKind::Reset,
    }
}

/// One session: connect, handshake with `resPQ`, then `round_trips` echoes of
/// `payload`-byte packets. Every step has `limit` to complete.
pub async fn session(
    t: &Target,
    round_trips: usize,
    payload: usize,
    limit: Duration,
) -> Result<Timing, Failure> {
    let mut timing = Timing::default();
    let t0 = Instant::now();
    let stream = match timeout(limit, TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(Failure::Refused(
                RefusedKind::Connect,
                format!("connect {}: {e}", t.addr),
            ))
        }
        Err(_) => {
            return Err(Failure::Refused(
                RefusedKind::Connect,
                format!("connect {}: timed out", t.addr),
            ))
        }
    };
    timing.connect_ms = ms(t0.elapsed());
    let t1 = Instant::now();
    let first = async {
        let mut c = Client::over_stream(stream, t.opts.clone()).await?;
        let (req, nonce) = req_pq_multi();
        c.send_packet(&req).await?;
        let res = c.recv_packet().await?;
        if parse_res_pq(&res) != Some(nonce) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("answer is not resPQ for our nonce ({} bytes)", res.len()),
            ));
        }
        Ok::<_, std::io::Error>((c, req.len() + res.len()))
    };
    let (mut c, n) = match timeout(limit, first).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            // How long it waited says what happened: a reset at once, or a server that
            // took the first packet and closed the connection seconds later.
            return Err(Failure::Refused(
                classify(&e),
                format!(
                    "handshake via {}: {e} after {:.0} ms without an answer",
                    t.addr,
                    ms(t1.elapsed())
                ),
            ));
        }
        Err(_) => {
            return Err(Failure::Refused(
                RefusedKind::NoAnswer,
                format!("handshake via {}: no resPQ within {limit:?}", t.addr),
            ))
        }
    };
    timing.handshake_ms = ms(t1.elapsed());
    timing.bytes = n as u64;
    let tag = t.opts.tag;
    for i in 0..round_trips {
        let p = packet(payload);
        let t2 = Instant::now();
        let rt = async {
            c.send_packet(&p).await?;
            c.recv_packet().await
        };
        match timeout(limit, rt).await {
            Ok(Ok(back)) if is_echo(tag, &p, &back) => {
                timing.round_trips_ms.push(ms(t2.elapsed()));
                timing.bytes += (p.len() + back.len()) as u64;
            }
            Ok(Ok(back)) => {
                return Err(Failure::Broken(format!(
                    "round trip {i}: {} bytes back for {} sent, not an echo",
                    back.len(),
                    p.len()
                )))
            }
            Ok(Err(e)) => return Err(Failure::Broken(format!("round trip {i}: {e}"))),
            Err(_) => {
                return Err(Failure::Broken(format!(
                    "round trip {i}: no answer within {limit:?}"
                )))
            }
        }
    }
    Ok(timing)
}

/// Bulk transfer for throughput: one session that sends `total` bytes in `chunk`-byte
/// packets, `window` in flight, and reads every echo. Returns bytes sent plus received.
pub async fn bulk(
    t: &Target,
    total: u64,
    chunk: usize,
    window: usize,
    limit: Duration,
) -> Result<u64, String> {
    let stream = timeout(limit, TcpStream::connect(t.addr))
        .await
        .map_err(|_| "bulk: connect timed out".to_string())?
        .map_err(|e| format!("bulk: connect: {e}"))?;
    let mut c = timeout(limit, Client::over_stream(stream, t.opts.clone()))
        .await
        .map_err(|_| "bulk: handshake timed out".to_string())?
        .map_err(|e| format!("bulk: handshake: {e}"))?;
    let p = packet(chunk);
    let mut sent = 0u64;
    let mut moved = 0u64;
    let tag = t.opts.tag;
    while sent < total {
        let mut inflight = 0;
        while inflight < window && sent < total {
            timeout(limit, c.send_packet(&p))
                .await
                .map_err(|_| "bulk: send timed out".to_string())?
                .map_err(|e| format!("bulk: send: {e}"))?;
            sent += p.len() as u64;
            moved += p.len() as u64;
            inflight += 1;
        }
        for _ in 0..inflight {
            let back = timeout(limit, c.recv_packet())
                .await
                .map_err(|_| "bulk: no echo in time".to_string())?
                .map_err(|e| format!("bulk: receive: {e}"))?;
            if !is_echo(tag, &p, &back) {
                return Err(format!("bulk: {} bytes back, not an echo", back.len()));
            }
            moved += back.len() as u64;
        }
    }
    Ok(moved)
}

/// Tries a session every `every` (each with `limit`), several in flight, until one succeeds
/// or `deadline`; returns the time from `since` to the first success, or the last error.
/// With a 10-ms cadence the start-up time of a proxy is measured to about 10 ms even though
/// a single attempt that hits a not-yet-ready proxy may hang for a while.
pub async fn first_success(
    t: &Target,
    since: Instant,
    deadline: Instant,
    every: Duration,
    limit: Duration,
    round_trips: usize,
) -> Result<f64, String> {
    let mut set = tokio::task::JoinSet::new();
    let mut last_err = String::from("no attempt finished");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if Instant::now() >= deadline {
            set.abort_all();
            return Err(last_err);
        }
        tokio::select! {
            _ = tick.tick(), if set.len() < 64 => {
                let t = t.clone();
                set.spawn(async move { session(&t, round_trips, 64, limit).await });
            }
            Some(r) = set.join_next(), if !set.is_empty() => match r {
                Ok(Ok(_)) => {
                    let took = ms(since.elapsed());
                    set.abort_all();
                    return Ok(took);
                }
                Ok(Err(e)) => last_err = e.to_string(),
                Err(e) => last_err = e.to_string(),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// The client options for a proxy: fake TLS with the first domain when `-D` is given, else
/// obfuscated2 with `tag`; no-secret mode without a secret.
pub fn client_opts(secret: Option<[u8; 16]>, domains: &[String], tag: Tag, dc: i16) -> ClientOpts {
    match (secret, domains.first()) {
        (Some(s), Some(d)) => ClientOpts::tls(s, Some(d.clone())).dc(dc),
        (Some(s), None) => ClientOpts::new(s, tag).dc(dc),
        (None, _) => ClientOpts::no_secret(tag).dc(dc),
    }
}
