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

use super::client_input::{ClientInput, InputEnd};
use super::client_output::ClientWriter;
use super::conn::MeConn;
use super::inbox::{CloseCause, Inbox, ToClient};
use super::Middle;
use crate::bufpool;
use crate::relay::{Halves, PollReadReady};
use crate::stats::{SecretUse, Stats};
use mtproto_wire::obfs2::{Accepted, Tag};
use mtproto_wire::rpc::{classify_client_packet, ops, Forward, ReqParams};
use mtproto_wire::transport;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
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

/// Writes the batch to the client unless, first, the ME sheds the session (over its
/// buffer budget) or the idle deadline passes: a client that does not read must not pin
/// its session, and the ME's close must be seen while the write waits. The bytes written
/// are added to `sent` (the process's `bytes_down`).
async fn flush_bounded<W: AsyncWriteExt + Unpin>(
    writer: &mut ClientWriter,
    wr: &mut W,
    inbox: &Inbox,
    deadline: Instant,
    sent: &AtomicU64,
) -> Result<(), End> {
    tokio::select! {
        biased;
        cause = inbox.shed_signal() => Err(End::Me(cause)),
        r = writer.flush(wr) => {
            let n = r.map_err(|e| End::ClientError(e.kind()))?;
            sent.fetch_add(n as u64, Relaxed);
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
    deadline: Instant,
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

impl From<InputEnd> for End {
    fn from(e: InputEnd) -> End {
        match e {
            InputEnd::Closed => End::ClientClosed,
            InputEnd::Error(kind) => End::ClientError(kind),
            InputEnd::BadFrame(e) => End::BadFrame(e),
        }
    }
}

/// One client's session: what its turns share.
struct Session<'a> {
    mid: &'a Middle,
    stats: &'a Stats,
    idle: Duration,
    peer: SocketAddr,
    /// The address the client connected to, as the MEs see it (`--nat-info`).
    local: SocketAddr,
    tag: Tag,
    dc: i16,
    inbox: Arc<Inbox>,
    writer: ClientWriter,
    binding: Option<Binding>,
    /// A packet was dropped for want of an ME connection: the stream has a gap.
    dropped: bool,
    last_activity: Instant,
    tracking: Option<SecretUse<'a>>,
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
    let (mut rd, mut wr) = (client.read, client.write);
    // Only what the session needs is kept (not the key material behind `encrypt`).
    let Accepted {
        secret_index,
        tag,
        dc,
        decrypt,
        encrypt,
        ..
    } = *acc;
    let mut input = ClientInput::new(tag, decrypt);
    // Counted against --msg-buffers-size until the session ends.
    let enrolled = mid.budget.enroll();
    let mut s = Session {
        mid,
        stats,
        idle,
        peer,
        local: mid.nat.addr(local),
        tag,
        dc,
        inbox: enrolled.inbox.clone(),
        writer: ClientWriter::new(tag, encrypt),
        binding: None,
        dropped: false,
        last_activity: Instant::now(),
        tracking: SecretUse::new(stats.secret(secret_index)),
    };
    let why = loop {
        let turn = tokio::select! {
            _ = tokio::time::sleep_until(s.deadline()) => Err(End::Idle),
            ready = std::future::poll_fn(|cx| rd.poll_read_ready(cx)) => match ready {
                Ok(()) => s.client_turn(&mut input, &mut rd, &mut wr).await,
                Err(e) => Err(End::ClientError(e.kind())),
            },
            msg = s.inbox.recv() => s.answers(msg, &mut wr).await,
        };
        if let Err(why) = turn {
            break why;
        }
    };
    drop(input);
    // Later answers for this session are refused (and counted as dropped by the ME side);
    // nothing is charged to it any more.
    drop(enrolled);
    s.finish(&why);
    // Out with anything still buffered (fake-TLS records), for as long as the idle timeout
    // at most; no shutdown(2): the socket is closed when the session returns, which sends
    // the FIN all the same.
    let _ = tokio::time::timeout(idle, wr.flush()).await;
    debug!("{peer}: ME-mode session ended: {why:?}");
}

impl Session<'_> {
    /// When the session ends for being idle.
    fn deadline(&self) -> Instant {
        self.last_activity + self.idle
    }

    /// Writes what is batched for the client ([`flush_bounded`]).
    async fn flush<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), End> {
        let deadline = self.deadline();
        flush_bounded(
            &mut self.writer,
            wr,
            &self.inbox,
            deadline,
            &self.stats.bytes_down,
        )
        .await
    }

    /// The client's socket is readable: reads until it would block, at most
    /// READS_PER_TURN reads (so the ME's answers are not starved by a client that keeps
    /// sending), forwarding every complete packet; then writes what is batched for it.
    async fn client_turn<R, W>(
        &mut self,
        input: &mut ClientInput,
        rd: &mut R,
        wr: &mut W,
    ) -> Result<(), End>
    where
        R: PollReadReady,
        W: AsyncWrite + Unpin,
    {
        for _ in 0..READS_PER_TURN {
            // A short read already tells tokio the socket would block, and the next
            // attempt returns at once.
            let Some(n) = input.read_from(rd).await? else {
                break;
            };
            self.stats.bytes_up.fetch_add(n as u64, Relaxed);
            self.last_activity = Instant::now();
            while let Some(p) = input.next_packet()? {
                self.forward(p.data, p.quick_ack, rd).await?;
            }
        }
        // An incomplete frame keeps its buffer: charged to the session.
        if self.inbox.charge_input(input.capacity()) {
            self.inbox.budget().enforce();
        }
        self.flush(wr).await
    }

    /// One client packet: a ping is answered here, a packet the ME must not see is dropped,
    /// anything else goes to the ME as RPC_PROXY_REQ on the session's ME connection.
    async fn forward<R: PollReadReady>(
        &mut self,
        packet: &[u8],
        quick_ack: bool,
        rd: &R,
    ) -> Result<(), End> {
        if packet.len() == CLIENT_PING_LEN
            && packet[..4] == mtproto_wire::rpc::RPC_PING.to_le_bytes()
        {
            let mut pong = [0u8; CLIENT_PING_LEN];
            pong[..4].copy_from_slice(&mtproto_wire::rpc::RPC_PONG.to_le_bytes());
            pong[4..].copy_from_slice(&packet[4..]);
            self.writer.packet(&pong);
            return Ok(());
        }
        let unencrypted = match classify_client_packet(packet) {
            Forward::Encrypted => false,
            Forward::Unencrypted => true,
            Forward::Drop(reason) => {
                trace!("{}: not forwarding a packet: {reason:?}", self.peer);
                return Ok(());
            }
        };
        if !self.bind().await? {
            return Ok(());
        }
        let b = self.binding.as_ref().expect("bound above");
        let params = ReqParams {
            transport: self.tag,
            quick_ack,
            unencrypted,
            proxy_tag: self.mid.proxy_tag,
            pad_flag: false,
        };
        let (id, peer, local) = (b.id, self.peer, self.local);
        // Built straight into the ME connection's queue.
        let req = |out: &mut Vec<u8>| ops::build_proxy_req(out, &params, id, peer, local, packet);
        send_bounded(
            &b.conn,
            req,
            &self.inbox,
            rd,
            self.last_activity + self.idle,
        )
        .await?;
        Stats::inc(&self.stats.forwarded_queries);
        if let Some(t) = self.tracking.as_mut() {
            let key = u64::from_le_bytes(packet[..8].try_into().expect("packets are >= 28 bytes"));
            t.forwarded(peer.ip(), key);
        }
        Ok(())
    }

    /// Makes sure the session has an ME connection, kept while it lives (C's stickiness);
    /// a new one is picked when there is none. `false`: no ME connection, the packet is
    /// dropped (and the next one that finds a connection ends the session: the stream has a
    /// gap).
    async fn bind(&mut self) -> Result<bool, End> {
        if self.binding.as_ref().is_some_and(|b| !b.conn.is_alive()) {
            self.binding = None;
        }
        if self.binding.is_some() {
            return Ok(true);
        }
        let pool = &self.mid.pool;
        let Some(conn) = pool
            .pick_or_wait(self.dc, super::pool::HANDSHAKE_DEADLINE)
            .await
        else {
            Stats::inc(&self.stats.dropped_queries);
            self.dropped = true;
            return Ok(false);
        };
        if self.dropped {
            return Err(End::GapAfterDrop);
        }
        let id = pool.new_session_id();
        conn.register(id, self.inbox.clone());
        Stats::inc(&self.stats.ext_connections_created);
        self.stats.ext_connections.fetch_add(1, Relaxed);
        debug!(
            "{}: session {id} on ME {} (conn {})",
            self.peer, conn.target, conn.id
        );
        self.binding = Some(Binding { conn, id });
        Ok(true)
    }

    /// The ME's answers: `first` and whatever else is queued go out in one write.
    async fn answers<W: AsyncWrite + Unpin>(
        &mut self,
        first: ToClient,
        wr: &mut W,
    ) -> Result<(), End> {
        self.last_activity = Instant::now();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                ToClient::Data(d) => self.writer.answer(d),
                ToClient::QuickAck(t) => self.writer.quick_ack(t),
                ToClient::Close(cause) => {
                    // Shed for its buffers: dropped at once, like C. Closed by the ME: what
                    // it sent before goes out first.
                    if !matches!(cause, CloseCause::Budget | CloseCause::Flood) {
                        let _ = self.flush(wr).await;
                    }
                    return Err(End::Me(cause));
                }
            }
            if self.writer.buffered() < bufpool::BUF_SIZE {
                next = self.inbox.try_recv();
            }
        }
        self.flush(wr).await
    }

    /// The session is over: its ME connection forgets it (RPC_CLOSE_CONN unless the ME
    /// closed it itself or the connection is gone), and the counters say why.
    fn finish(self, why: &End) {
        if let Some(b) = self.binding {
            self.stats.ext_connections.fetch_sub(1, Relaxed);
            b.conn.unregister(b.id);
            let me_side_gone = matches!(why, End::Me(CloseCause::ClosedByMe | CloseCause::MeLost));
            if !me_side_gone && b.conn.is_alive() {
                b.conn.close_session(b.id);
            }
        }
        if matches!(why, End::Idle) {
            Stats::inc(&self.stats.idle_closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtproto_wire::crypto::AesCtr;
    use tokio::io::AsyncReadExt;

    fn writer_with(bytes: usize) -> ClientWriter {
        let mut w = ClientWriter::new(Tag::Intermediate, AesCtr::new(&[1; 32], &[2; 16]));
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
            flush_bounded(&mut writer, &mut client, &inbox, far, &AtomicU64::new(0)),
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
        let sent = AtomicU64::new(0);
        let r = flush_bounded(&mut writer, &mut client, &inbox, deadline, &sent).await;
        assert_eq!(sent.load(Relaxed), 0, "nothing was written");
        assert!(matches!(r, Err(End::Idle)), "{r:?}");
        assert!(tokio::time::Instant::now() >= deadline);
    }

    /// A client that reads gets the whole batch.
    #[tokio::test]
    async fn a_reading_client_gets_the_batch() {
        let (mut client, mut peer) = tokio::io::duplex(1024);
        let mut writer = writer_with(64 * 1024);
        let want = writer.buffered();
        let inbox = Inbox::for_test();
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; want];
            peer.read_exact(&mut got).await.map(|_| got.len())
        });
        let sent = AtomicU64::new(0);
        flush_bounded(&mut writer, &mut client, &inbox, far, &sent)
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), want);
        assert_eq!(
            sent.load(Relaxed),
            want as u64,
            "the bytes written are counted"
        );
    }
}
