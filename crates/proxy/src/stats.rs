//! Process-wide counters of the client side. Plain relaxed atomics: they are read by the
//! stats endpoints and by tests, and never synchronise anything.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters shared by every connection of the process.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections accepted on the `-H` ports.
    pub accepted: AtomicU64,
    /// Client connections open right now.
    pub active: AtomicU64,
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
    /// Bytes relayed client → upstream and upstream → client.
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
    /// Clients closed because too much waited for them (`connections_failed_flood`).
    pub failed_flood: AtomicU64,
    /// ME connections that completed the handshake, and dial/handshake failures.
    pub me_connects: AtomicU64,
    pub me_connect_failed: AtomicU64,
    /// SIGHUP reloads applied and refused.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
