//! One client connection from accept to close: the first bytes before the handshake
//! deadline decide what it is, then the session is handed to its upstream.
//!
//! - Without `-D`: the 64-byte obfuscated2 header; a header no secret accepts puts the
//!   connection in "skip mode", where everything it sends is read and thrown away and
//!   nothing is sent, like C; unlike C, it is closed at the handshake deadline so probes
//!   cannot pin sockets for ever. A client too slow to send its header is closed then too.
//! - With `-D` (fake TLS only, as C): a valid, fresh, authenticated ClientHello gets the
//!   fake ServerHello and its session runs inside TLS records; anything else is spliced to
//!   the real site (`mask.rs`) with the bytes already received.

use crate::clock::unix_now;
use crate::faketls::{TlsConf, TlsReader, TlsWriter};
use crate::relay::{Halves, PollReadReady, Prefixed};
use crate::shared::{Shared, Upstream};
use crate::stats::Stats;
use crate::{direct, mask, tls_reply};
use mtproto_wire::obfs2::{self, Accepted, Tag, HEADER_LEN};
use mtproto_wire::tls::{self, Detect, HelloVerdict, RecordReader, RejectReason};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

/// The task of one accepted client connection: the session's boxed future and the count
/// of active connections, given back when the task ends however it ends.
///
/// A type of its own rather than an `async` block around the session: tokio stores a
/// task's future inline in a 128-byte-aligned cell, and a block carrying the connection's
/// arguments next to the session's future made that cell 384 bytes for every connection;
/// a pointer and an `Arc` keep it at the smallest size.
pub struct SessionTask {
    fut: Pin<Box<dyn Future<Output = ()> + Send>>,
    shared: Arc<Shared>,
}

impl SessionTask {
    /// Counts the connection as active and builds its task. Both session kinds are
    /// boxed: inline, the task would carry room for the larger of the two in every
    /// session of either kind.
    pub fn new(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) -> SessionTask {
        shared.stats.active.fetch_add(1, Relaxed);
        let deadline = Instant::now() + shared.handshake_timeout;
        let fut: Pin<Box<dyn Future<Output = ()> + Send>> = if shared.tls.is_some() {
            Box::pin(fake_tls(shared.clone(), client, peer, deadline))
        } else {
            Box::pin(obfuscated2(shared.clone(), client, peer, deadline))
        };
        SessionTask { fut, shared }
    }
}

impl Future for SessionTask {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

impl Drop for SessionTask {
    fn drop(&mut self) {
        self.shared.stats.active.fetch_sub(1, Relaxed);
    }
}

/// The first reads' size: the header and a first packet of usual size.
const FIRST_READ: usize = 1024;

/// One read of the header's missing bytes and what follows them (into `rest`): Ready(false)
/// at end of stream. The buffer is on this function's stack, not in the session's future;
/// a short read tells tokio the socket is drained, so the session's next read waits for
/// the next readiness event instead of trying the socket (one EAGAIN less).
fn poll_read_first(
    cx: &mut Context<'_>,
    client: &mut TcpStream,
    header: &mut [u8; HEADER_LEN],
    got: &mut usize,
    rest: &mut Vec<u8>,
) -> Poll<std::io::Result<bool>> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut rb = ReadBuf::uninit(&mut buf);
    if let Err(e) = std::task::ready!(Pin::new(client).poll_read(cx, &mut rb)) {
        return Poll::Ready(Err(e));
    }
    let read = rb.filled();
    if read.is_empty() {
        return Poll::Ready(Ok(false));
    }
    let take = read.len().min(HEADER_LEN - *got);
    header[*got..*got + take].copy_from_slice(&read[..take]);
    *got += take;
    rest.extend_from_slice(&read[take..]);
    Poll::Ready(Ok(true))
}

async fn obfuscated2(
    shared: Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) {
    let shared = &*shared;
    let Some((accepted, rest)) = read_header(shared, &mut client, peer, deadline).await else {
        return;
    };
    count_accepted(shared, peer, &accepted);
    // Only ME mode sends our end's address (in every RPC_PROXY_REQ): direct mode skips
    // the getsockname.
    let local = match shared.upstream {
        Upstream::Middle(_) => client.local_addr().unwrap_or(peer),
        Upstream::Direct(_) => peer,
    };
    let (r, w) = client.split();
    let client = Halves {
        read: Prefixed::new(rest, r),
        write: w,
    };
    route(shared, client, peer, local, accepted).await;
}

/// The obfuscated2 header, and what the client sent with it in the same read (its first
/// packet, usually), which the session gets first: one system call per connection less
/// than reading the 64 bytes alone. None when the connection is done with (closed, timed
/// out, or a header no secret accepts, after skip mode). Its own function: what it holds
/// while waiting is not kept in the session's future.
async fn read_header(
    shared: &Shared,
    client: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<(Box<Accepted>, Vec<u8>)> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut rest = Vec::new();
    while got < HEADER_LEN {
        let first = std::future::poll_fn(|cx| {
            poll_read_first(cx, client, &mut header, &mut got, &mut rest)
        });
        match timeout_at(deadline, first).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                debug!("{peer}: closed before a full header ({got} bytes)");
                return None;
            }
            Ok(Err(e)) => {
                debug!("{peer}: closed before a full header: {e}");
                return None;
            }
            Err(_) => {
                Stats::inc(&shared.stats.handshakes_timeout);
                debug!(
                    "{peer}: no header within {:?}, closing",
                    shared.handshake_timeout
                );
                return None;
            }
        }
    }
    let Some(accepted) = obfs2::accept(&header, &shared.secrets) else {
        Stats::inc(&shared.stats.handshakes_bad);
        debug!("{peer}: no secret matches the header; discarding input until the deadline");
        drop(rest);
        skip_until(client, deadline).await;
        return None;
    };
    Some((Box::new(accepted), rest))
}

fn count_accepted(shared: &Shared, peer: SocketAddr, a: &Accepted) {
    let i = match a.tag {
        Tag::Abridged => 0,
        Tag::Intermediate => 1,
        Tag::Padded => 2,
    };
    Stats::inc(&shared.stats.handshakes_ok[i]);
    debug!(
        "{peer}: accepted {} dc {} secret #{}",
        a.tag.name(),
        a.dc,
        a.secret_index.map_or(0, |i| i + 1)
    );
}

/// Hands an accepted session to its upstream. `acc` is boxed: passed by value, its bytes
/// would be kept twice in every future it passes through, for the whole session. `local`
/// is our end of the client connection; only ME mode uses it.
pub async fn route<R, W>(
    shared: &Shared,
    client: Halves<R, W>,
    peer: SocketAddr,
    local: SocketAddr,
    acc: Box<Accepted>,
) where
    R: PollReadReady,
    W: AsyncWrite + Unpin,
{
    match &shared.upstream {
        Upstream::Direct(_) => direct::serve(shared, client, peer, acc).await,
        Upstream::Middle(mid) => {
            crate::middle::session::serve(
                mid,
                &shared.stats,
                shared.idle_timeout,
                client,
                peer,
                local,
                acc,
            )
            .await
        }
    }
}

/// How a read before the deadline went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum More {
    Got,
    /// End of stream, or an error other than a reset.
    Closed,
    Reset,
    Deadline,
}

/// Reads more into `buf` before the deadline; false on close, error or deadline.
async fn read_more(client: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    read_more_why(client, buf, deadline).await == More::Got
}

/// [`read_more`], saying why it got nothing. Reads straight into the vector's spare room
/// (no stack buffer: this future's size is part of every fake-TLS session's memory).
async fn read_more_why(client: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> More {
    buf.reserve(4096);
    match timeout_at(deadline, client.read_buf(buf)).await {
        Ok(Ok(n)) if n > 0 => More::Got,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => More::Reset,
        Ok(_) => More::Closed,
        Err(_) => More::Deadline,
    }
}

/// How a fake-TLS connection goes on after its handshake.
enum TlsStart {
    /// An authenticated session: the record reader's state and the payload that followed
    /// the obfuscated2 header.
    Session {
        records: RecordReader,
        pending: Vec<u8>,
        accepted: Box<Accepted>,
    },
    /// Not ours: splice to `site` with the bytes received so far; `reason` is one of
    /// `stats::dpi::MASK_REASONS`.
    Mask {
        received: Vec<u8>,
        site: Vec<SocketAddr>,
        reason: &'static str,
    },
    /// Nothing more to do (closed, timed out in skip mode, write failed).
    Over,
}

async fn fake_tls(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr, deadline: Instant) {
    let shared = &*shared;
    let Some(tls_conf) = &shared.tls else {
        return;
    };
    let local = client.local_addr().unwrap_or(peer);
    // The handshake runs in its own boxed future: its buffers, hello fields and the
    // ServerHello's state are gone once it returns, and the session's future (kept for the
    // connection's life) holds only what the relay needs.
    let start = Box::pin(tls_handshake(
        shared,
        tls_conf,
        &mut client,
        peer,
        local,
        deadline,
    ))
    .await;
    match start {
        TlsStart::Session {
            records,
            pending,
            accepted,
        } => {
            let (r, w) = client.split();
            let reader = TlsReader::new(r, records, pending);
            let writer = TlsWriter::new(w, tls_conf.records);
            let client = Halves {
                read: reader,
                write: writer,
            };
            route(shared, client, peer, local, accepted).await;
        }
        TlsStart::Mask {
            received,
            site,
            reason,
        } => {
            shared.stats.dpi.masked(reason);
            mask::splice(
                client,
                peer,
                received,
                &site,
                shared.idle_timeout,
                &shared.stats,
            )
            .await
        }
        TlsStart::Over => {}
    }
}

/// The ClientHello, the fake ServerHello and the obfuscated2 header inside the first
/// records.
async fn tls_handshake(
    shared: &Shared,
    tls_conf: &TlsConf,
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    deadline: Instant,
) -> TlsStart {
    let default_site = || tls_conf.mask.for_domain(0, local.port());
    let mut buf = Vec::with_capacity(1024);
    // Up to 9 bytes decide whether this is a ClientHello at all (C waits for 9 too).
    let need = loop {
        match tls::detect(&buf) {
            Detect::Hello { need } if buf.len() >= tls::DETECT_BYTES => break need,
            Detect::NotTls if buf.len() >= tls::DETECT_BYTES => {
                debug!("{peer}: not a TLS ClientHello on a fake-TLS port: masking");
                return TlsStart::Mask {
                    received: buf,
                    site: default_site(),
                    reason: "not_tls",
                };
            }
            _ => {}
        }
        if !read_more(client, &mut buf, deadline).await {
            return deadline_or_close(shared, peer, buf, default_site(), deadline);
        }
    };
    while buf.len() < need {
        if !read_more(client, &mut buf, deadline).await {
            return deadline_or_close(shared, peer, buf, default_site(), deadline);
        }
    }
    let verdict = {
        let mut cache = tls_conf.cache.lock().expect("replay cache");
        tls::check_client_hello(
            &buf[..need],
            buf.len() - need,
            &shared.secrets,
            &tls_conf.domains,
            unix_now() as i64,
            &mut cache,
            tls_conf.policy,
            local.port() == 80,
        )
    };
    let (secret_index, cipher, session_id, client_random) = match verdict {
        HelloVerdict::Accept {
            secret_index,
            cipher,
            session_id,
            client_random,
            ..
        } => (secret_index, cipher, session_id, client_random),
        HelloVerdict::Reject { reason, forward_to } => {
            Stats::inc(&shared.stats.tls_rejected);
            if reason == RejectReason::Replay {
                Stats::inc(&shared.stats.tls_replayed);
            }
            debug!("{peer}: ClientHello rejected ({}): masking", reason.name());
            return TlsStart::Mask {
                received: buf,
                site: tls_conf.mask.for_domain(forward_to.index(), local.port()),
                reason: reason.name(),
            };
        }
    };
    Stats::inc(&shared.stats.tls_accepted);

    // The fake first flight, shaped like the real site's answer to this hello.
    let fields = tls::HelloFields::parse(&buf[..need]);
    if let Some(f) = &fields {
        shared
            .stats
            .dpi
            .accepted_ja4(&tls::ja4::ja4_of(f, &buf[..need]));
    }
    let reply = tls_reply::build(
        &tls_conf.profile(),
        &tls_reply::Accepted {
            secret: &shared.secrets[secret_index],
            client_random: &client_random,
            session_id: &session_id,
            cipher,
            fields: fields.as_ref(),
        },
    );
    drop(fields);
    if tls_reply::send(client, &reply, tls_conf.split_hello)
        .await
        .is_err()
    {
        return TlsStart::Over;
    }
    drop(reply);

    // The obfuscated2 header is the first 64 bytes of application data.
    let mut records = RecordReader::new();
    let mut plain = Vec::new();
    let mut raw = buf.split_off(need);
    if let Err(e) = records.feed(&raw, &mut plain) {
        debug!("{peer}: bad TLS record after the hello: {e}");
        return TlsStart::Over;
    }
    while plain.len() < HEADER_LEN {
        let before = raw.len();
        let more = read_more_why(client, &mut raw, deadline).await;
        if more != More::Got {
            if more == More::Deadline {
                Stats::inc(&shared.stats.handshakes_timeout);
            }
            // Nothing at all after our ServerHello, or a reset: what a DPI drop looks like.
            if raw.is_empty() || more == More::Reset {
                shared.stats.dpi.killed(local.port());
            }
            return TlsStart::Over;
        }
        if let Err(e) = records.feed(&raw[before..], &mut plain) {
            debug!("{peer}: bad TLS record after the hello: {e}");
            return TlsStart::Over;
        }
    }
    let header: [u8; HEADER_LEN] = plain[..HEADER_LEN].try_into().expect("64 bytes");
    let accepted = match obfs2::accept(&header, &shared.secrets) {
        Some(a) if a.tag == Tag::Padded => Box::new(a),
        Some(a) => {
            // C: "Expected random padding mode", forwarded to the default domain.
            debug!(
                "{peer}: {} inside fake TLS (only padded is allowed): masking",
                a.tag.name()
            );
            Stats::inc(&shared.stats.handshakes_bad);
            return TlsStart::Mask {
                received: raw,
                site: default_site(),
                reason: "inner_transport",
            };
        }
        None => {
            Stats::inc(&shared.stats.handshakes_bad);
            debug!(
                "{peer}: no secret matches the header inside TLS; discarding until the deadline"
            );
            skip_until(client, deadline).await;
            return TlsStart::Over;
        }
    };
    count_accepted(shared, peer, &accepted);
    let pending = plain.split_off(HEADER_LEN);
    TlsStart::Session {
        records,
        pending,
        accepted,
    }
}

/// Too few bytes by the deadline: C forwards to the default domain at its 10-s timer; a
/// connection the client closed is simply over.
fn deadline_or_close(
    shared: &Shared,
    peer: SocketAddr,
    received: Vec<u8>,
    site: Vec<SocketAddr>,
    deadline: Instant,
) -> TlsStart {
    if Instant::now() >= deadline {
        Stats::inc(&shared.stats.handshakes_timeout);
        debug!("{peer}: incomplete first bytes at the deadline: masking");
        return TlsStart::Mask {
            received,
            site,
            reason: "timeout",
        };
    }
    TlsStart::Over
}

/// Skip mode: read and discard until the deadline or the peer's close; never write.
/// The kernel drops the bytes itself (up to 1 MiB per call, nothing copied): a sender
/// without a secret costs a system call per megabyte, not per 512 bytes.
async fn skip_until(client: &mut TcpStream, deadline: Instant) {
    use std::os::fd::AsRawFd;
    let fd = client.as_raw_fd();
    loop {
        match timeout_at(deadline, client.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        match client.try_io(tokio::io::Interest::READABLE, || discard(fd)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Drops up to 1 MiB of what is waiting on TCP socket `fd`; the count (0 at end of
/// stream).
fn discard(fd: std::os::fd::RawFd) -> std::io::Result<usize> {
    // SAFETY: recv on a socket fd the caller holds open; with MSG_TRUNC a TCP socket
    // drops the bytes without writing to the buffer (tcp(7)), so no buffer is passed.
    let n = unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            1 << 20,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Skip mode drops what a sender sends, a megabyte per call at most, and sees the end
    /// of the stream.
    #[tokio::test]
    async fn skip_mode_discards_everything_until_the_sender_closes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut sender = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut ours, _) = l.accept().await.unwrap();
        let sent = 8usize << 20;
        let writer = tokio::spawn(async move {
            sender.write_all(&vec![9u8; sent]).await.unwrap();
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let skipping = tokio::spawn(async move {
            skip_until(&mut ours, deadline).await;
            Instant::now()
        });
        writer.await.unwrap();
        let ended = skipping.await.unwrap();
        assert!(ended < deadline, "the sender's close was not seen");
        assert!(discard(-1).is_err(), "an error, not a panic, on a bad fd");
    }
}
