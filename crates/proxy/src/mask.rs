//! Masking: a connection on a fake-TLS port that fails any check (wrong secret, unknown SNI,
//! stale or replayed hello, plain obfuscated2, HTTP, garbage) is spliced byte for byte to
//! the real site, including what the client already sent, so a probe sees the real site's
//! certificate and answers (spec client.md §5.11). Nothing is sent to the client by us.
//!
//! If the site cannot be reached the client is closed (C does the same when the domain did
//! not resolve).

use crate::relay::{self, Halves, Transform};
use crate::stats::Stats;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

/// How long to try the site before giving up on a masked connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Splices `client` to the first reachable address of `targets`, replaying `already` first
/// (then freed: a masked connection keeps no buffer for its life, as the relay holds none
/// while idle).
pub async fn splice(
    mut client: TcpStream,
    peer: SocketAddr,
    already: Vec<u8>,
    targets: &[SocketAddr],
    idle: Duration,
    stats: &Stats,
) {
    Stats::inc(&stats.tls_masked);
    let mut site = None;
    for t in targets {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(t)).await {
            Ok(Ok(s)) => {
                site = Some(s);
                break;
            }
            Ok(Err(e)) => debug!("{peer}: mask site {t}: {e}"),
            Err(_) => debug!("{peer}: mask site {t}: timed out"),
        }
    }
    let Some(mut site) = site else {
        debug!("{peer}: no mask site reachable ({targets:?}); closing");
        return;
    };
    let _ = site.set_nodelay(true);
    if !already.is_empty() && site.write_all(&already).await.is_err() {
        return;
    }
    let replayed = already.len() as u64;
    drop(already);
    let (cr, cw) = client.split();
    let (sr, sw) = site.split();
    let o = relay::relay(
        Halves {
            read: cr,
            write: cw,
        },
        Halves {
            read: sr,
            write: sw,
        },
        Transform::none(),
        Transform::none(),
        idle,
        (&stats.mask_bytes_up, &stats.mask_bytes_down),
    )
    .await;
    debug!(
        "{peer}: masked connection ended ({:?}), {} bytes up, {} down",
        o.end,
        o.up + replayed,
        o.down
    );
}
