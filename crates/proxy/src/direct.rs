//! Direct mode: each client session gets its own connection to a Telegram DC, opened with
//! an obfuscated2 header of ours (no secret, same transport tag, the client's DC id), and
//! the client's bytes pass through after re-encryption. No framing is parsed: the DC checks
//! the MTProto transport itself.
//!
//! Fast mode: we choose the header we send so that the DC's encryption of the download
//! direction is exactly the keystream the client expects from us (`obfs2::initiate_fast`).
//! Downloads, most of the traffic, are then copied without any crypto. The upload direction
//! still needs decrypt + encrypt: one header cannot fix both directions' keys.
//! The price: the DC-side and client-side ciphertexts of a download are identical, so an
//! observer who sees both links can pair them up (the MTProto payload stays encrypted
//! end to end either way). `--no-fast-mode` turns it off.

use crate::relay::{self, End, Halves, PollReadReady, Transform};
use crate::shared::{Shared, Upstream};
use crate::stats::Stats;
use mtproto_wire::obfs2::{self, Accepted, HEADER_LEN};
use rand::RngCore;
use std::net::SocketAddr;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// Runs one direct-mode session to its end. `client` carries the obfuscated2 stream after
/// the header (plain TCP halves, or the fake-TLS record layer over them).
pub async fn serve<R, W>(
    shared: &Shared,
    client: Halves<R, W>,
    peer: SocketAddr,
    acc: Box<Accepted>,
) where
    R: PollReadReady,
    W: AsyncWrite + Unpin,
{
    // The set-up runs in its own future, so nothing it needed (header, dial state, the
    // accepted handshake) stays in this session's memory while the relay runs for hours.
    let secret_index = acc.secret_index;
    let Some((mut upstream, up, down)) = open_upstream(shared, peer, acc).await else {
        return;
    };
    // Direct mode parses no frames: the per-secret counters see client IPs only.
    let mut tracking = crate::stats::SecretUse::new(shared.stats.secret(secret_index));
    if let Some(t) = tracking.as_mut() {
        t.forwarded(peer.ip(), 0);
    }
    let (ur, uw) = upstream.split();
    let o = relay::relay(
        client,
        Halves {
            read: ur,
            write: uw,
        },
        up,
        down,
        shared.idle_timeout,
        (&shared.stats.bytes_up, &shared.stats.bytes_down),
    )
    .await;
    if o.end == End::Idle {
        Stats::inc(&shared.stats.idle_closed);
    }
    debug!(
        "{peer}: session ended ({:?}), {} bytes up, {} down",
        o.end, o.up, o.down
    );
}

/// Dials the DC, sends our header and returns the connection with the transforms of the
/// upload and download directions.
async fn open_upstream(
    shared: &Shared,
    peer: SocketAddr,
    acc: Box<Accepted>,
) -> Option<(TcpStream, Transform, Transform)> {
    let Upstream::Direct(dcs) = &shared.upstream else {
        return None;
    };
    let route = dcs.route(acc.dc);
    if route.fallback {
        Stats::inc(&shared.stats.dc_fallbacks);
        debug!(
            "{peer}: unknown dc {}, using default dc {}",
            acc.dc, route.dc
        );
    }
    let t0 = std::time::Instant::now();
    let dialed = dial(shared, &route.addrs).await;
    if dialed.is_some() {
        shared.stats.connect_latency.observe(t0.elapsed());
    }
    let Some(mut upstream) = dialed else {
        Stats::inc(&shared.stats.upstream_connect_failed);
        warn!(
            "{peer}: cannot reach dc {} at {:?}; closing client",
            route.dc, route.addrs
        );
        return None;
    };
    let _ = upstream.set_nodelay(true);

    let mut random = [0u8; HEADER_LEN];
    let out = loop {
        rand::thread_rng().fill_bytes(&mut random);
        let out = if shared.fast_mode {
            obfs2::initiate_fast(random, acc.tag, acc.dc, &acc.encrypt_key)
        } else {
            obfs2::initiate(random, acc.tag, acc.dc, None)
        };
        if obfs2::is_acceptable_header(&out.header) {
            break out;
        }
    };
    if let Err(e) = upstream.write_all(&out.header).await {
        warn!("{peer}: dc {} write failed: {e}", route.dc);
        return None;
    }
    let acc = *acc;
    let up = Transform {
        decrypt: Some(acc.decrypt),
        encrypt: Some(out.encrypt),
    };
    let down = if shared.fast_mode {
        // Neither stream of the download direction is used: free them now rather than
        // hold them for the session's life.
        drop((acc.encrypt, out.decrypt));
        Transform::none()
    } else {
        Transform {
            decrypt: Some(out.decrypt),
            encrypt: Some(acc.encrypt),
        }
    };
    Some((upstream, up, down))
}

/// Tries each address in order within the dial timeout.
async fn dial(shared: &Shared, addrs: &[SocketAddr]) -> Option<TcpStream> {
    for a in addrs {
        match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(e)) => debug!("connect {a}: {e}"),
            Err(_) => debug!("connect {a}: timed out"),
        }
    }
    None
}
