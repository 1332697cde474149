//! One connection to a middle-end (ME): dial, nonce exchange, key derivation, encrypted
//! handshake, then the RPC stream that multiplexes many client sessions
//! (spec backend-ops §1.1–1.8).
//!
//! After the handshake the socket is split: the write half and the CBC encryptor go to a
//! writer task shared with other ME connections ([`super::writer`]), which takes what the
//! sessions framed into the connection's [`OutQueue`] as one padded, encrypted write; the
//! reader (the future [`establish`] returns) owns the read half and dispatches the ME's
//! answers to sessions by `conn_id`. When the reader ends, the connection is dead: every session bound
//! to it is told to close (C closes them too, spec §1.9) and the writer drops it.
//!
//! Not here: which ME to dial and when to redial (`pool.rs`), client framing (`session.rs`).

use super::writer::{Member, OutQueue};
use crate::bufpool;
use crate::stats::Stats;
use mtproto_wire::rpc::{
    self, derive_keys, frame::pad_to_block, handshake, nonce, ops, AesCbcDecryptor, CrcKind,
    FrameDecoder, FrameEncoder, KdfInput, MeOp, NoncePacket, ProcessId, Role,
};
use rand::RngCore;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tracing::{debug, trace};

/// What an ME connection sends to a client session.
#[derive(Debug)]
pub enum ToClient {
    /// One packet for the client (RPC_PROXY_ANS data).
    Data(Answer),
    /// A quick-ack token (RPC_SIMPLE_ACK).
    QuickAck(u32),
    /// Close the client: the ME closed the session (RPC_CLOSE_EXT, no CLOSE_CONN back),
    /// the ME connection died, or the client fell too far behind.
    Close(CloseCause),
}

/// One answer's bytes with room in front for the client's transport prefix, so a large
/// answer can be framed and encrypted where it is (no copy into the session's output).
#[derive(Debug)]
pub struct Answer {
    buf: Vec<u8>,
}

impl Answer {
    /// Room kept in front of the payload: the longest transport prefix (4 bytes).
    pub const HEADROOM: usize = 4;

    /// Copies `payload` in, into a pooled buffer when it is large.
    pub fn new(payload: &[u8]) -> Answer {
        let mut buf = bufpool::for_message(Self::HEADROOM + payload.len());
        buf.extend_from_slice(&[0; Self::HEADROOM]);
        buf.extend_from_slice(payload);
        Answer { buf }
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf[Self::HEADROOM..]
    }

    /// The buffer, payload at [`Answer::HEADROOM`].
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}

/// Why an ME connection closed a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// RPC_CLOSE_EXT from the ME.
    ClosedByMe,
    /// The ME connection is gone.
    MeLost,
    /// More than [`MAX_QUEUED`] bytes waited for a client that does not read.
    Flood,
    /// All clients together had more than the process budget (`--msg-buffers-size`)
    /// waiting; this client's answer would have gone over it.
    Budget,
}

/// Bytes that may wait for one client before it is closed (C: 32 MiB per connection,
/// `connections_failed_flood`).
pub const MAX_QUEUED: usize = 32 << 20;

/// A client session's queue of what its ME connection sends it, with the session's waker.
///
/// Not a tokio channel: an unbounded mpsc costs about 1.6 KiB per session (its shared state
/// is cache-padded and the first block of 32 slots is allocated up front), which was a
/// third of an idle ME-mode session's memory. This is a mutex-protected deque that holds
/// no allocation while empty and unused.
#[derive(Debug, Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Debug, Default)]
struct InboxState {
    queue: std::collections::VecDeque<ToClient>,
    waker: Option<std::task::Waker>,
    closed: bool,
    /// The session is to be dropped at once, without writing what is queued (C's
    /// fail_connection for a client over its or the process's buffer budget).
    shed: Option<CloseCause>,
}

impl Inbox {
    /// Queues a message and wakes the session; gives it back when the session has ended.
    pub fn send(&self, msg: ToClient) -> Result<(), ToClient> {
        let waker = {
            let mut st = self.state.lock().expect("inbox");
            if st.closed {
                return Err(msg);
            }
            st.queue.push_back(msg);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Tells the session to end at once for `cause`: what is queued is dropped and the
    /// session sees the close even while it waits on a client that does not read (see
    /// [`Inbox::shed_signal`]).
    pub fn shed(&self, cause: CloseCause) {
        let waker = {
            let mut st = self.state.lock().expect("inbox");
            if st.closed {
                return;
            }
            st.shed = Some(cause);
            st.queue = std::collections::VecDeque::new();
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Resolves when [`Inbox::shed`] was called. Shares the one waker slot with
    /// [`Inbox::recv`]: the session polls one or the other, never both at once.
    pub async fn shed_signal(&self) -> CloseCause {
        std::future::poll_fn(|cx| {
            let mut st = self.state.lock().expect("inbox");
            match st.shed {
                Some(c) => std::task::Poll::Ready(c),
                None => {
                    st.waker = Some(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// The next message, waiting for one.
    pub async fn recv(&self) -> ToClient {
        std::future::poll_fn(|cx| {
            let mut st = self.state.lock().expect("inbox");
            if let Some(c) = st.shed {
                return std::task::Poll::Ready(ToClient::Close(c));
            }
            match st.queue.pop_front() {
                Some(m) => std::task::Poll::Ready(m),
                None => {
                    st.waker = Some(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// The next message if one is queued. When the queue is empty its room is freed
    /// unless it is small, so a session that had a burst does not keep it.
    pub fn try_recv(&self) -> Option<ToClient> {
        let mut st = self.state.lock().expect("inbox");
        if let Some(c) = st.shed {
            return Some(ToClient::Close(c));
        }
        let m = st.queue.pop_front();
        if m.is_none() && st.queue.capacity() > 8 {
            st.queue = std::collections::VecDeque::new();
        }
        m
    }

    /// The session has ended: later sends fail and whatever is queued is dropped.
    pub fn close(&self) {
        let mut st = self.state.lock().expect("inbox");
        st.closed = true;
        st.queue = std::collections::VecDeque::new();
        st.waker = None;
    }
}

/// The ME side's handle on one client session.
#[derive(Debug)]
pub struct SessionLink {
    pub tx: Arc<Inbox>,
    /// Bytes queued in `tx` and not yet written to the client; the session subtracts.
    pub queued: Arc<AtomicUsize>,
}

/// Who we are and what we hash, for every ME connection of the process.
#[derive(Clone, Debug)]
pub struct Ident {
    /// Our process id in handshakes; `ip` 0 means "the connection's local IPv4".
    pub pid: ProcessId,
    /// The proxy secret (`--aes-pwd`), `None` when there is none: then no ME accepts us.
    pub secret: Option<Arc<Vec<u8>>>,
    /// `--nat-info` rules, local → global, first match wins.
    pub nat: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// `--address`: source address of IPv4 ME sockets.
    pub bind_v4: Option<Ipv4Addr>,
    /// The writer tasks (they also send our own RPC_PING each `--ping-interval`: C never
    /// pings; telemt does, and MEs accept it).
    pub writers: Arc<super::writer::Writers>,
    /// Bytes that may wait for clients in the whole process (`--msg-buffers-size`).
    pub queue_budget: u64,
}

impl Ident {
    /// Applies the NAT table to an IPv4 address (IPv6 and ports are never translated).
    pub fn nat_ip(&self, ip: IpAddr) -> IpAddr {
        match rpc::kdf::ipv4_of(ip) {
            Some(v4) => IpAddr::V4(
                self.nat
                    .iter()
                    .find(|(l, _)| *l == v4)
                    .map_or(v4, |(_, g)| *g),
            ),
            None => ip,
        }
    }

    fn nat_addr(&self, a: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.nat_ip(a.ip()), a.port())
    }
}

/// A live, handshaken ME connection.
#[derive(Debug)]
pub struct MeConn {
    /// Process-unique id, for logs.
    pub id: u64,
    pub target: SocketAddr,
    out: Arc<OutQueue>,
    sessions: Mutex<HashMap<i64, SessionLink>>,
    /// Shared with the connection's writer.
    alive: Arc<AtomicBool>,
    queue_budget: u64,
}

impl MeConn {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Relaxed)
    }

    /// Routes the ME's answers for `conn_id` to `link`.
    pub fn register(&self, conn_id: i64, link: SessionLink) {
        self.sessions
            .lock()
            .expect("sessions")
            .insert(conn_id, link);
    }

    /// Forgets `conn_id`; true if it was registered.
    pub fn unregister(&self, conn_id: i64) -> bool {
        self.sessions
            .lock()
            .expect("sessions")
            .remove(&conn_id)
            .is_some()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().expect("sessions").len()
    }

    /// Queues one RPC payload, which `build` appends in place (no copy); waits while the
    /// connection's queue is full (back-pressure). Err once the connection is gone.
    pub async fn send_with(&self, build: impl FnOnce(&mut Vec<u8>)) -> Result<(), ()> {
        self.out.send_with(build).await
    }

    /// Tells the ME that the client of `conn_id` went away (at once: also from the reader,
    /// which must not wait for the writer).
    pub fn close_session(&self, conn_id: i64) {
        self.out.push(|p| ops::build_close_conn(p, conn_id));
    }

    fn mark_dead(&self, cause: CloseCause) {
        self.alive.store(false, Relaxed);
        let sessions = std::mem::take(&mut *self.sessions.lock().expect("sessions"));
        for (_, link) in sessions {
            let _ = link.tx.send(ToClient::Close(cause));
        }
    }
}

/// Why an ME connection ended.
#[derive(Debug)]
pub enum ConnEnd {
    Eof,
    Io(io::Error),
    Protocol(String),
    /// The pool asked for it (target removed and drained).
    Dropped,
}

impl std::fmt::Display for ConnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnEnd::Eof => write!(f, "closed by the ME"),
            ConnEnd::Io(e) => write!(f, "{e}"),
            ConnEnd::Protocol(s) => write!(f, "protocol error: {s}"),
            ConnEnd::Dropped => write!(f, "no longer in the config"),
        }
    }
}

/// Incoming bytes: ciphertext is decrypted block by block as it arrives, frames are decoded
/// from the decrypted prefix.
struct Inbound {
    buf: Vec<u8>,
    /// `buf[start..plain]` is decrypted and not yet consumed.
    start: usize,
    plain: usize,
    /// `buf[plain..filled]` is ciphertext that is not a whole block yet.
    filled: usize,
    dec: Option<AesCbcDecryptor>,
}

impl Inbound {
    fn new() -> Self {
        Inbound {
            buf: vec![0; 64 * 1024],
            start: 0,
            plain: 0,
            filled: 0,
            dec: None,
        }
    }

    /// Reads more bytes; Ok(false) at EOF.
    async fn fill(&mut self, r: &mut (impl AsyncReadExt + Unpin)) -> io::Result<bool> {
        if self.start > 0 && (self.filled == self.buf.len() || self.start > self.buf.len() / 2) {
            self.buf.copy_within(self.start..self.filled, 0);
            self.plain -= self.start;
            self.filled -= self.start;
            self.start = 0;
        }
        if self.filled == self.buf.len() {
            let new_len = self.buf.len() * 2;
            self.buf.resize(new_len, 0);
        }
        let n = r.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Ok(false);
        }
        self.filled += n;
        match self.dec.as_mut() {
            Some(d) => self.plain += d.decrypt(&mut self.buf[self.plain..self.filled]),
            None => self.plain = self.filled,
        }
        Ok(true)
    }

    /// The next frame's payload range (absolute in `buf`), consuming it.
    fn next(&mut self, dec: &mut FrameDecoder) -> Result<Option<std::ops::Range<usize>>, String> {
        match dec.decode(&self.buf[self.start..self.plain]) {
            Ok(Some((used, r))) => {
                let range = self.start + r.start..self.start + r.end;
                self.start += used;
                Ok(Some(range))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads until a whole frame is there.
    async fn frame(
        &mut self,
        r: &mut (impl AsyncReadExt + Unpin),
        dec: &mut FrameDecoder,
    ) -> Result<std::ops::Range<usize>, String> {
        loop {
            if let Some(range) = self.next(dec)? {
                return Ok(range);
            }
            match self.fill(r).await {
                Ok(true) => {}
                Ok(false) => return Err("closed during the handshake".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

fn unix_now() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i32)
}

async fn dial(target: SocketAddr, ident: &Ident) -> io::Result<TcpStream> {
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (true, Some(a)) = (target.is_ipv4(), ident.bind_v4) {
        sock.bind(SocketAddr::new(IpAddr::V4(a), 0))?;
    }
    sock.set_keepalive(true)?;
    let s = sock.connect(target).await?;
    s.set_nodelay(true)?;
    if target.is_ipv4() {
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(40))
            .with_interval(Duration::from_secs(40))
            .with_retries(5);
        let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&ka);
    }
    Ok(s)
}

/// Dials `target` and runs the nonce exchange and handshake. On success returns the
/// connection handle and the future that serves it until it dies (the caller awaits it;
/// the caller also applies the 3-s deadline to this function, spec §1.10).
pub async fn establish(
    id: u64,
    target: SocketAddr,
    ident: &Ident,
    stats: Arc<Stats>,
) -> Result<(Arc<MeConn>, impl Future<Output = ConnEnd>), String> {
    let secret = ident
        .secret
        .clone()
        .ok_or("no proxy secret (--aes-pwd) loaded")?;
    let stream = dial(target, ident)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();

    // 1. Our nonce, in plaintext.
    let mut nonce_clt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce_clt);
    let ts = unix_now();
    let mut encoder = FrameEncoder::new();
    let mut out = Vec::with_capacity(256);
    encoder.encode(
        &NoncePacket::aes(&secret, ts, nonce_clt).to_bytes(),
        &mut out,
    );
    wr.write_all(&out)
        .await
        .map_err(|e| format!("send nonce: {e}"))?;

    // 2. The ME's nonce; nothing may follow it before our keys are installed (C: −6).
    let mut decoder = FrameDecoder::new();
    let mut inb = Inbound::new();
    let r = inb.frame(&mut rd, &mut decoder).await?;
    let me_nonce = nonce::check_me_nonce(&inb.buf[r], nonce::key_select(&secret), ts)
        .map_err(|e| format!("ME nonce: {e}"))?;
    if inb.start != inb.filled {
        return Err("ME sent data before the keys were set up".into());
    }

    // 3. Keys: both addresses as the ME sees them (after NAT).
    let keys = derive_keys(
        &KdfInput {
            nonce_srv: me_nonce.nonce,
            nonce_clt,
            client_ts: ts,
            server: ident.nat_addr(target),
            client: ident.nat_addr(local),
            secret: &secret,
        },
        Role::Client,
    );
    let (mut enc, dec) = keys.ciphers();
    inb.dec = Some(dec);

    // 4. Handshake, encrypted, still CRC32.
    let mut pid = ident.pid;
    if pid.ip == 0 {
        if let Some(v4) = rpc::kdf::ipv4_of(local.ip()) {
            pid.ip = u32::from(v4);
        }
    }
    let hs = handshake::proxy_handshake(pid, target);
    out.clear();
    encoder.encode(&hs.to_bytes(), &mut out);
    pad_to_block(&mut out, 0);
    enc.encrypt(&mut out);
    wr.write_all(&out)
        .await
        .map_err(|e| format!("send handshake: {e}"))?;
    let r = inb.frame(&mut rd, &mut decoder).await?;
    let answer = match handshake::check_me_handshake(&inb.buf[r], &pid, true) {
        Ok(a) => a,
        Err(e) => {
            if e.sends_error_packet() {
                out.clear();
                let mut p = Vec::new();
                handshake::build_handshake_error(&mut p, e.c_code(), &pid);
                encoder.encode(&p, &mut out);
                pad_to_block(&mut out, 0);
                enc.encrypt(&mut out);
                let _ = wr.write_all(&out).await;
            }
            return Err(format!("ME handshake: {e}"));
        }
    };
    if answer.crc32c {
        encoder.switch_crc(CrcKind::Crc32c);
        decoder.switch_crc(CrcKind::Crc32c);
    }
    debug!(
        "Connected to RPC Middle-End {target} (conn {id}, crc32c {})",
        answer.crc32c
    );

    let out = OutQueue::new(encoder);
    let queue_budget = ident.queue_budget;
    let conn = Arc::new(MeConn {
        queue_budget,
        id,
        target,
        out: out.clone(),
        sessions: Mutex::new(HashMap::new()),
        alive: Arc::new(AtomicBool::new(true)),
    });
    let writer = ident.writers.join(Member {
        id,
        wr,
        enc,
        queue: out,
        alive: conn.alive.clone(),
    });
    // Also when the pool drops the future (a drained connection), polled or not.
    let dead = Dead {
        conn: conn.clone(),
        writer,
    };
    let run = async move {
        let dead = dead;
        read_loop(&dead.conn, rd, inb, decoder, &stats).await
    };
    Ok((conn, run))
}

/// Ends a connection when its reader ends or is dropped: its sessions are told to close
/// and its writer drops it (which closes the socket).
struct Dead {
    conn: Arc<MeConn>,
    writer: super::writer::GroupRef,
}

impl Drop for Dead {
    fn drop(&mut self) {
        self.conn.mark_dead(CloseCause::MeLost);
        self.writer.sweep();
    }
}

async fn read_loop(
    conn: &MeConn,
    mut rd: OwnedReadHalf,
    mut inb: Inbound,
    mut decoder: FrameDecoder,
    stats: &Stats,
) -> ConnEnd {
    loop {
        loop {
            let range = match inb.next(&mut decoder) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return ConnEnd::Protocol(e),
            };
            let payload = &inb.buf[range];
            dispatch(conn, payload, stats);
        }
        match inb.fill(&mut rd).await {
            Ok(true) => {}
            Ok(false) => return ConnEnd::Eof,
            Err(e) => return ConnEnd::Io(e),
        }
    }
}

fn dispatch(conn: &MeConn, payload: &[u8], stats: &Stats) {
    let to_session = |conn_id: i64, msg: ToClient, size: usize| -> bool {
        let mut sessions = conn.sessions.lock().expect("sessions");
        let Some(link) = sessions.get(&conn_id) else {
            return false;
        };
        let queued = link.queued.fetch_add(size, Relaxed) + size;
        let total = stats.me_queued_bytes.fetch_add(size as u64, Relaxed) + size as u64;
        let cause = if queued > MAX_QUEUED {
            Some((CloseCause::Flood, &stats.failed_flood))
        } else if total > conn.queue_budget {
            Some((CloseCause::Budget, &stats.failed_lru))
        } else {
            None
        };
        if let Some((cause, counter)) = cause {
            link.queued.fetch_sub(size, Relaxed);
            stats.me_queued_bytes.fetch_sub(size as u64, Relaxed);
            let link = sessions.remove(&conn_id).expect("present");
            link.tx.shed(cause);
            Stats::inc(counter);
            return true;
        }
        if link.tx.send(msg).is_err() {
            sessions.remove(&conn_id);
            return false;
        }
        true
    };
    match ops::parse_me_op(payload) {
        MeOp::ProxyAns { conn_id, data, .. } => {
            // Given back to the pool by the session once written to its client.
            let bytes = Answer::new(&payload[data]);
            let n = bytes.payload().len();
            if to_session(conn_id, ToClient::Data(bytes), n) {
                Stats::inc(&stats.forwarded_responses);
            } else {
                Stats::inc(&stats.dropped_responses);
                conn.close_session(conn_id);
            }
        }
        MeOp::SimpleAck { conn_id, confirm } => {
            if to_session(conn_id, ToClient::QuickAck(confirm), 4) {
                Stats::inc(&stats.forwarded_simple_acks);
            } else {
                Stats::inc(&stats.dropped_simple_acks);
                conn.close_session(conn_id);
            }
        }
        MeOp::CloseExt { conn_id } => {
            if let Some(link) = conn.sessions.lock().expect("sessions").remove(&conn_id) {
                let _ = link.tx.send(ToClient::Close(CloseCause::ClosedByMe));
            }
        }
        MeOp::Ping { id } => {
            conn.out.push(|p| ops::build_pong(p, id));
        }
        MeOp::Pong { .. } => {}
        MeOp::Ignored { op, len } => {
            trace!("ME conn {}: ignoring op {op:08x} of {len} bytes", conn.id)
        }
        MeOp::Unknown(op) => debug!("unknown RPC operation {op:08x}, ignoring"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inbox_delivers_in_order_wakes_the_receiver_and_refuses_after_close() {
        let inbox = Arc::new(Inbox::default());
        // A receiver waiting on an empty inbox is woken by a send from another task.
        let rx = inbox.clone();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        inbox.send(ToClient::QuickAck(1)).unwrap();
        assert!(matches!(waiting.await.unwrap(), ToClient::QuickAck(1)));

        inbox.send(ToClient::Data(Answer::new(&[1, 2]))).unwrap();
        inbox.send(ToClient::QuickAck(3)).unwrap();
        assert!(matches!(inbox.recv().await, ToClient::Data(d) if d.payload() == [1, 2]));
        assert!(matches!(inbox.try_recv(), Some(ToClient::QuickAck(3))));
        assert!(inbox.try_recv().is_none());

        inbox.send(ToClient::QuickAck(4)).unwrap();
        inbox.close();
        assert!(inbox.try_recv().is_none(), "close drops what was queued");
        assert!(matches!(
            inbox.send(ToClient::Close(CloseCause::MeLost)),
            Err(ToClient::Close(CloseCause::MeLost))
        ));
    }

    #[test]
    fn an_emptied_inbox_gives_back_a_large_queue() {
        let inbox = Inbox::default();
        for i in 0..100 {
            inbox.send(ToClient::QuickAck(i)).unwrap();
        }
        while inbox.try_recv().is_some() {}
        assert_eq!(inbox.state.lock().unwrap().queue.capacity(), 0);
    }
}
