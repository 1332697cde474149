//! A client session in middle-proxy mode: the client's transport frames are decoded, each
//! forwardable packet goes to the ME as RPC_PROXY_REQ on the session's ME connection, and
//! the ME's answers come back as packets (or quick acks) in the client's framing
//! (spec client.md §4, backend-ops §1.8–1.9).
//!
//! C's rules kept: the ME connection is chosen at the first forwarded packet and kept;
//! a packet with no ME available is dropped, and the next packet that finds one closes the
//! client (the stream has a gap); a packet the ME must not see is dropped silently; a bad
//! frame closes the client. The client closing sends RPC_CLOSE_CONN; the ME closing
//! (RPC_CLOSE_EXT, or its connection dying) closes the client.

use super::conn::MeConn;
use super::inbox::{Answer, CloseCause, Inbox, ToClient};
use super::Middle;
use crate::bufpool;
use crate::relay::{Halves, PollReadReady};
use crate::stats::Stats;
use mtproto_wire::crypto::AesCtr;
use mtproto_wire::obfs2::{Accepted, Tag};
use mtproto_wire::rpc::{classify_client_packet, ops, Forward, ReqParams};
use mtproto_wire::transport::{self, Frame, Side, MAX_FRAME};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, trace};

/// A client packet of exactly this length starting with RPC_PING gets RPC_PONG from the
/// proxy itself (C `tcp_rpcs_default_execute`).
const CLIENT_PING_LEN: usize = 12;

/// Client reads handled in one turn before the ME's answers get theirs.
const READS_PER_TURN: usize = 16;

struct Binding {
    conn: Arc<MeConn>,
    id: i64,
}

/// Writes packets to the client in its framing, encrypted.
struct ClientWriter {
    tag: Tag,
    enc: AesCtr,
    out: Vec<u8>,
    /// Where the bytes to send start in `out` (not 0 when `out` is an answer's own
    /// buffer, framed in place).
    start: usize,
}

impl ClientWriter {
    /// The output buffer, taken from the thread's pool when the first frame of a batch
    /// comes.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = bufpool::take_out();
        }
        &mut self.out
    }

    /// The transport prefix of a `len`-byte packet (its bytes and length) and the random
    /// padding that follows it (padded transport only).
    fn frame(&self, len: usize) -> ([u8; 4], usize, usize) {
        let padding = if self.tag == Tag::Padded {
            rand::thread_rng().gen_range(0..4)
        } else {
            0
        };
        let mut prefix = [0u8; 4];
        let n = transport::encode_prefix(self.tag, len, padding, false, &mut prefix);
        (prefix, n, padding)
    }

    fn push_padding(buf: &mut Vec<u8>, padding: usize) {
        if padding > 0 {
            let mut pad = [0u8; 3];
            rand::thread_rng().fill(&mut pad[..padding]);
            buf.extend_from_slice(&pad[..padding]);
        }
    }

    /// An answer from the ME: a large one that starts a batch is framed and encrypted in
    /// its own buffer, which becomes the output (one 64 KiB copy less per answer); others
    /// are copied into the output like any packet.
    fn answer(&mut self, a: Answer) {
        let mut buf = a.into_buf();
        let len = buf.len() - Answer::HEADROOM;
        if !self.out.is_empty() || len < bufpool::BUF_SIZE / 2 {
            self.packet(&buf[Answer::HEADROOM..]);
            bufpool::give_out(buf);
            return;
        }
        let (prefix, n, padding) = self.frame(len);
        let start = Answer::HEADROOM - n;
        buf[start..Answer::HEADROOM].copy_from_slice(&prefix[..n]);
        Self::push_padding(&mut buf, padding);
        self.enc.apply(&mut buf[start..]);
        bufpool::give_out(std::mem::replace(&mut self.out, buf));
        self.start = start;
    }

    fn packet(&mut self, data: &[u8]) {
        let (prefix, n, padding) = self.frame(data.len());
        let out = self.out();
        let start = out.len();
        out.extend_from_slice(&prefix[..n]);
        out.extend_from_slice(data);
        Self::push_padding(out, padding);
        self.enc.apply(&mut self.out[start..]);
    }

    fn quick_ack(&mut self, token: u32) {
        let start = self.out().len();
        self.out
            .extend_from_slice(&transport::quick_ack_bytes(self.tag, token));
        self.enc.apply(&mut self.out[start..]);
    }

    async fn flush(&mut self, w: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<()> {
        if self.out.len() > self.start {
            w.write_all(&self.out[self.start..]).await?;
            w.flush().await?;
            // Idle sessions keep no output buffer: it goes back to the pool.
            bufpool::give_out(std::mem::take(&mut self.out));
            self.start = 0;
        }
        Ok(())
    }
}

/// Writes the batch to the client unless, first, the ME sheds the session (over its
/// buffer budget) or the idle deadline passes: a client that does not read must not pin
/// its session, and the ME's close must be seen while the write waits.
async fn flush_bounded<W: AsyncWriteExt + Unpin>(
    writer: &mut ClientWriter,
    wr: &mut W,
    inbox: &Inbox,
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    tokio::select! {
        biased;
        cause = inbox.shed_signal() => Err(End::Me(cause)),
        r = writer.flush(wr) => {
            r.map_err(|e| End::ClientError(e.kind()))?;
            // What it held is out: no longer charged to the session.
            inbox.written();
            Ok(())
        }
        _ = tokio::time::sleep_until(deadline) => Err(End::Idle),
    }
}

/// How often a session waiting for room on its ME connection checks that its client is
/// still there.
const CLIENT_CHECK: Duration = Duration::from_millis(500);

/// Queues one request on the session's ME connection. When its queue is full (the ME
/// reads slowly, or not at all) waits for room unless, first, the ME sheds the session,
/// the idle deadline passes or the client goes away: a session must not be pinned by an
/// ME connection that stopped reading.
async fn send_bounded<R: PollReadReady>(
    conn: &MeConn,
    build: impl FnOnce(&mut Vec<u8>),
    inbox: &Inbox,
    rd: &R,
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    let lost = |_| End::Me(CloseCause::MeLost);
    let mut build = Some(build);
    if let Some(r) = conn.try_send_with(&mut build) {
        return r.map_err(lost);
    }
    let build = build.expect("kept while the queue is full");
    let client_gone = async {
        let mut tick = tokio::time::interval(CLIENT_CHECK);
        loop {
            tick.tick().await;
            if rd.peer_closed() {
                return;
            }
        }
    };
    tokio::select! {
        biased;
        cause = inbox.shed_signal() => Err(End::Me(cause)),
        r = conn.send_with(build) => r.map_err(lost),
        _ = tokio::time::sleep_until(deadline) => Err(End::Idle),
        _ = client_gone => Err(End::ClientClosed),
    }
}

/// Why the session ended, for the log (fields are read through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    ClientClosed,
    ClientError(std::io::ErrorKind),
    BadFrame(transport::FrameError),
    Me(CloseCause),
    GapAfterDrop,
    Idle,
}

/// Serves one accepted client in ME mode until it ends. `client` carries the obfuscated2
/// stream after the header; `local` is the address the client connected to.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R, W>(
    mid: &Middle,
    stats: &Stats,
    idle: Duration,
    client: Halves<R, W>,
    peer: SocketAddr,
    local: SocketAddr,
    acc: Box<Accepted>,
) where
    R: PollReadReady,
    W: AsyncWrite + Unpin,
{
    let local = SocketAddr::new(mid.ident_nat(local.ip()), local.port());
    let (mut rd, mut wr) = (client.read, client.write);
    // Only what the session needs is kept (not the key material behind `encrypt`).
    let Accepted {
        secret_index,
        tag,
        dc,
        decrypt: mut dec,
        encrypt,
        ..
    } = *acc;
    let mut writer = ClientWriter {
        tag,
        enc: encrypt,
        out: Vec::new(),
        start: 0,
    };
    // Counted against --msg-buffers-size until the session ends.
    let enrolled = mid.budget.enroll();
    let inbox = enrolled.inbox.clone();
    let mut binding: Option<Binding> = None;
    let mut dropped = false;
    // Client bytes: buf[start..end] decrypted and not yet consumed.
    let mut buf: Vec<u8> = Vec::new();
    let (mut start, mut end) = (0usize, 0usize);
    let mut last_activity = tokio::time::Instant::now();
    let mut tracking = crate::stats::SecretUse::new(stats.secret(secret_index));

    let why = 'session: loop {
        tokio::select! {
            _ = tokio::time::sleep_until(last_activity + idle) => break End::Idle,
            ready = std::future::poll_fn(|cx| rd.poll_read_ready(cx)) => {
                if let Err(e) = ready {
                    break End::ClientError(e.kind());
                }
                // Read until the socket would block (a short read already tells tokio so,
                // and the next attempt returns Pending at once), at most READS_PER_TURN
                // reads so the ME's answers are not starved by a client that keeps sending.
                for _ in 0..READS_PER_TURN {
                    if start == end {
                        (start, end) = (0, 0);
                        buf.clear();
                    }
                    let need = match transport::parse_frame(tag, Side::FromClient, &buf[start..end]) {
                        Ok(Some(f)) => f.total_len(),
                        Ok(None) => 4,
                        Err(e) => break 'session End::BadFrame(e),
                    };
                    // Room for the next read, taken only now that data is waiting (the
                    // whole frame must fit once its length is known): a pooled buffer when
                    // the frame fits one (no allocation, no zeroing), else an exact one.
                    // `buf.len()` is `end`; reads go to the spare capacity.
                    if buf.capacity() - start < need.max(4096) {
                        buf.copy_within(start..end, 0);
                        end -= start;
                        start = 0;
                        buf.truncate(end);
                        // Towards the frame's length by doubling as its bytes arrive, not
                        // all at once: a client is charged for what it sent.
                        let want = need
                            .clamp(16 * 1024, MAX_FRAME + 8)
                            .min((2 * end).max(bufpool::OUT_CAP));
                        if buf.capacity() < want {
                            if buf.capacity() == 0 && want <= bufpool::OUT_CAP {
                                buf = bufpool::take_out();
                            } else {
                                buf.reserve_exact(want - end);
                            }
                        }
                    }
                    debug_assert_eq!(buf.len(), end);
                    let attempt = std::future::poll_fn(|cx| {
                        let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
                        match Pin::new(&mut rd).poll_read(cx, &mut rb) {
                            Poll::Pending => Poll::Ready(None),
                            Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
                        }
                    })
                    .await;
                    let n = match attempt {
                        None => {
                            // The burst is over. Nothing buffered: an idle session holds no
                            // input buffer (it is allocated again when the next data comes).
                            if start == end && buf.capacity() > 0 {
                                bufpool::give_out(std::mem::take(&mut buf));
                                (start, end) = (0, 0);
                            }
                            break;
                        }
                        Some(Ok(0)) => break 'session End::ClientClosed,
                        Some(Ok(n)) => n,
                        Some(Err(e)) => break 'session End::ClientError(e.kind()),
                    };
                    // SAFETY: the read initialised the `n` bytes after `end` (ReadBuf's
                    // filled part of the spare capacity).
                    unsafe { buf.set_len(end + n) };
                    last_activity = tokio::time::Instant::now();
                    dec.apply(&mut buf[end..end + n]);
                    end += n;
                    // Every complete frame in the buffer.
                    loop {
                        let (prefix, payload, total, quick_ack) = match transport::parse_frame(tag, Side::FromClient, &buf[start..end]) {
                            Ok(Some(Frame::Packet { prefix, body, payload, quick_ack })) if prefix + body <= end - start => (prefix, payload, prefix + body, quick_ack),
                            Ok(_) => break,
                            Err(e) => break 'session End::BadFrame(e),
                        };
                        let packet = &buf[start + prefix..start + prefix + payload];
                        start += total;
                        if packet.len() == CLIENT_PING_LEN && packet[..4] == mtproto_wire::rpc::RPC_PING.to_le_bytes() {
                            let mut pong = [0u8; CLIENT_PING_LEN];
                            pong[..4].copy_from_slice(&mtproto_wire::rpc::RPC_PONG.to_le_bytes());
                            pong[4..].copy_from_slice(&packet[4..]);
                            writer.packet(&pong);
                            continue;
                        }
                        let unencrypted = match classify_client_packet(packet) {
                            Forward::Encrypted => false,
                            Forward::Unencrypted => true,
                            Forward::Drop(reason) => {
                                trace!("{peer}: not forwarding a packet: {reason:?}");
                                continue;
                            }
                        };
                        // The session's ME connection: kept while it lives (C stickiness).
                        if binding.as_ref().is_some_and(|b| !b.conn.is_alive()) {
                            binding = None;
                        }
                        if binding.is_none() {
                            let Some(conn) = mid.pool.pick_or_wait(dc, super::pool::HANDSHAKE_DEADLINE).await else {
                                Stats::inc(&stats.dropped_queries);
                                dropped = true;
                                continue;
                            };
                            if dropped {
                                break 'session End::GapAfterDrop;
                            }
                            let id = mid.pool.new_session_id();
                            conn.register(id, inbox.clone());
                            Stats::inc(&stats.ext_connections_created);
                            stats.ext_connections.fetch_add(1, Relaxed);
                            debug!("{peer}: session {id} on ME {} (conn {})", conn.target, conn.id);
                            binding = Some(Binding { conn, id });
                        }
                        let b = binding.as_ref().expect("bound above");
                        let params = ReqParams { transport: tag, quick_ack, unencrypted, proxy_tag: mid.proxy_tag, pad_flag: false };
                        // Built straight into the ME connection's queue.
                        let req = |out: &mut Vec<u8>| ops::build_proxy_req(out, &params, b.id, peer, local, packet);
                        if let Err(end) = send_bounded(&b.conn, req, &inbox, &rd, last_activity + idle).await {
                            break 'session end;
                        }
                        Stats::inc(&stats.forwarded_queries);
                        if let Some(t) = tracking.as_mut() {
                            let key = u64::from_le_bytes(packet[..8].try_into().expect("packets are >= 28 bytes"));
                            t.forwarded(peer.ip(), key);
                        }
                    }
                }
                // An incomplete frame keeps its buffer: charged to the session.
                if inbox.charge_input(buf.capacity()) {
                    inbox.budget().enforce();
                }
                if let Err(end) = flush_bounded(&mut writer, &mut wr, &inbox, last_activity + idle).await {
                    break end;
                }
            }
            msg = inbox.recv() => {
                last_activity = tokio::time::Instant::now();
                let mut next = Some(msg);
                // Drain what is queued into one write.
                while let Some(m) = next.take() {
                    match m {
                        ToClient::Data(d) => writer.answer(d),
                        ToClient::QuickAck(t) => writer.quick_ack(t),
                        ToClient::Close(cause) => {
                            // Shed for its buffers: dropped at once, like C. Closed by the
                            // ME: what it sent before goes out first.
                            if !matches!(cause, CloseCause::Budget | CloseCause::Flood) {
                                let _ = flush_bounded(&mut writer, &mut wr, &inbox, last_activity + idle).await;
                            }
                            break 'session End::Me(cause);
                        }
                    }
                    if writer.out.len() < bufpool::BUF_SIZE {
                        next = inbox.try_recv();
                    }
                }
                if let Err(end) = flush_bounded(&mut writer, &mut wr, &inbox, last_activity + idle).await {
                    break end;
                }
            }
        }
    };
    bufpool::give_out(std::mem::take(&mut buf));
    // Later answers for this session are refused (and counted as dropped by the ME side);
    // nothing is charged to it any more.
    drop(enrolled);
    if let Some(b) = binding {
        stats.ext_connections.fetch_sub(1, Relaxed);
        b.conn.unregister(b.id);
        // RPC_CLOSE_CONN unless the ME closed the session itself or its connection is gone.
        let me_side_gone = matches!(why, End::Me(CloseCause::ClosedByMe | CloseCause::MeLost));
        if !me_side_gone && b.conn.is_alive() {
            b.conn.close_session(b.id);
        }
    }
    if matches!(why, End::Idle) {
        Stats::inc(&stats.idle_closed);
    }
    // Out with anything still buffered (fake-TLS records), for as long as the idle timeout
    // at most; no shutdown(2): the socket is closed when the session returns, which sends
    // the FIN all the same.
    let _ = tokio::time::timeout(idle, wr.flush()).await;
    debug!("{peer}: ME-mode session ended: {why:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn writer_with(bytes: usize) -> ClientWriter {
        let mut w = ClientWriter {
            tag: Tag::Intermediate,
            enc: AesCtr::new(&[1; 32], &[2; 16]),
            out: Vec::new(),
            start: 0,
        };
        w.packet(&vec![7u8; bytes]);
        w
    }

    /// A client that does not read blocks the write; the ME's shed still ends it, and
    /// what is queued is dropped.
    #[tokio::test]
    async fn a_shed_ends_a_write_to_a_client_that_does_not_read() {
        let (mut client, _never_read) = tokio::io::duplex(1024);
        let mut writer = writer_with(64 * 1024);
        let inbox = Arc::new(Inbox::for_test());
        inbox.send(ToClient::QuickAck(1)).unwrap();
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let shedder = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                // Only once the session is waiting on its write.
                tokio::task::yield_now().await;
                inbox.shed(CloseCause::Budget);
            })
        };
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            flush_bounded(&mut writer, &mut client, &inbox, far),
        )
        .await
        .expect("the shed was not seen while the write waited");
        assert!(matches!(r, Err(End::Me(CloseCause::Budget))), "{r:?}");
        shedder.await.unwrap();
        // The queue is dropped and the close is what the session reads next.
        assert!(matches!(
            inbox.try_recv(),
            Some(ToClient::Close(CloseCause::Budget))
        ));
        assert!(matches!(
            inbox.recv().await,
            ToClient::Close(CloseCause::Budget)
        ));
    }

    /// Nothing moves until the idle deadline: the write gives up then.
    #[tokio::test]
    async fn a_write_that_does_not_move_ends_at_the_idle_deadline() {
        let (mut client, _never_read) = tokio::io::duplex(1024);
        let mut writer = writer_with(64 * 1024);
        let inbox = Inbox::for_test();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let r = flush_bounded(&mut writer, &mut client, &inbox, deadline).await;
        assert!(matches!(r, Err(End::Idle)), "{r:?}");
        assert!(tokio::time::Instant::now() >= deadline);
    }

    /// A client that reads gets the whole batch.
    #[tokio::test]
    async fn a_reading_client_gets_the_batch() {
        let (mut client, mut peer) = tokio::io::duplex(1024);
        let mut writer = writer_with(64 * 1024);
        let want = writer.out.len();
        let inbox = Inbox::for_test();
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; want];
            peer.read_exact(&mut got).await.map(|_| got.len())
        });
        flush_bounded(&mut writer, &mut client, &inbox, far)
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), want);
    }

    /// Large answers framed in their own buffer give the same bytes on the wire as the
    /// copying path, for every transport, in any mix with small packets and quick acks.
    #[tokio::test]
    async fn answers_framed_in_place_are_the_copied_bytes() {
        for tag in [Tag::Abridged, Tag::Intermediate, Tag::Padded] {
            let big: Vec<u8> = (0..bufpool::BUF_SIZE).map(|i| (i * 7) as u8).collect();
            let mid: Vec<u8> = (0..bufpool::BUF_SIZE / 2 + 4).map(|i| i as u8).collect();
            let small = vec![3u8; 100];
            let mk = || ClientWriter {
                tag,
                enc: AesCtr::new(&[4; 32], &[5; 16]),
                out: Vec::new(),
                start: 0,
            };
            let (mut a, mut b) = (mk(), mk());
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            // Batches as the session makes them: flushed between.
            let batches: [&[&[u8]]; 4] = [&[&big], &[&small, &big], &[&mid, &small], &[&big, &mid]];
            for batch in batches {
                for p in batch {
                    a.answer(Answer::new(p));
                    b.packet(p);
                }
                // Quick-ack tokens carry the high bit (how the client tells them apart).
                a.quick_ack(0x8000_0009);
                b.quick_ack(0x8000_0009);
                a.flush(&mut wa).await.unwrap();
                b.flush(&mut wb).await.unwrap();
            }
            if tag == Tag::Padded {
                // Random padding: compare what the client decodes instead.
                let (da, db) = (decode(&wa), decode(&wb));
                assert_eq!(da.len(), 7 + 4, "seven packets and four acks");
                assert_eq!(da, db);
            } else {
                assert_eq!(wa, wb, "{tag:?}");
            }
        }
    }

    /// The client's view of a padded-intermediate stream: decrypt and split into packets
    /// (quick acks included as-is), padding dropped.
    fn decode(wire: &[u8]) -> Vec<Vec<u8>> {
        let mut plain = wire.to_vec();
        AesCtr::new(&[4; 32], &[5; 16]).apply(&mut plain);
        let mut out = Vec::new();
        let mut at = 0;
        while at < plain.len() {
            let len = u32::from_le_bytes(plain[at..at + 4].try_into().unwrap());
            if len & 0x8000_0000 != 0 {
                out.push(plain[at..at + 4].to_vec());
                at += 4;
                continue;
            }
            let len = len as usize;
            out.push(plain[at + 4..at + 4 + (len & !3)].to_vec());
            at += 4 + len;
        }
        out
    }
}
