//! One client connection from accept to close: read the obfuscated2 header before the
//! handshake deadline, find the secret, then hand the session to the upstream.
//!
//! Bad input never gets an answer (spec client.md §6): 64 bytes that no secret accepts put
//! the connection in "skip mode", where everything it sends is read and thrown away and
//! nothing is sent, like C; unlike C, the connection is closed at the handshake deadline so
//! probes and scanners cannot pin sockets for ever. A client that is too slow to send its
//! header is closed at the same deadline.

use crate::direct;
use crate::stats::Stats;
use crate::{Shared, Upstream};
use mtproto_wire::obfs2::{self, Tag, HEADER_LEN};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

/// Serves one accepted client connection to its end.
pub async fn handle(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr) {
    let deadline = Instant::now() + shared.handshake_timeout;
    let mut header = [0u8; HEADER_LEN];
    match timeout_at(deadline, client.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            debug!("{peer}: closed before a full header: {e}");
            return;
        }
        Err(_) => {
            Stats::inc(&shared.stats.handshakes_timeout);
            debug!(
                "{peer}: no header within {:?}, closing",
                shared.handshake_timeout
            );
            return;
        }
    }
    let Some(accepted) = obfs2::accept(&header, &shared.secrets) else {
        Stats::inc(&shared.stats.handshakes_bad);
        debug!("{peer}: no secret matches the header; discarding input until the deadline");
        skip_until(&mut client, deadline).await;
        return;
    };
    let tag_index = match accepted.tag {
        Tag::Abridged => 0,
        Tag::Intermediate => 1,
        Tag::Padded => 2,
    };
    Stats::inc(&shared.stats.handshakes_ok[tag_index]);
    debug!(
        "{peer}: accepted {} dc {} secret #{}",
        accepted.tag.name(),
        accepted.dc,
        accepted.secret_index.map_or(0, |i| i + 1)
    );
    match &shared.upstream {
        Upstream::Direct(_) => direct::serve(&shared, client, peer, accepted).await,
        Upstream::Middle(mid) => {
            crate::middle::session::serve(
                mid,
                &shared.stats,
                shared.idle_timeout,
                client,
                peer,
                accepted,
            )
            .await
        }
    }
}

/// Skip mode: read and discard until the deadline or the peer's close; never write.
async fn skip_until(client: &mut TcpStream, deadline: Instant) {
    let mut sink = [0u8; 512];
    loop {
        match timeout_at(deadline, client.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}
