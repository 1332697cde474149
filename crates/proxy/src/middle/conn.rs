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

use super::health::Health;
use super::inbound::Inbound;
use super::inbox::{Answer, CloseCause, Inbox, Refused, ToClient, MAX_QUEUED};
use super::nat::Nat;
use super::writer::{Closed, Member, OutQueue};
use crate::clock::unix_now;
use crate::stats::Stats;
use mtproto_wire::rpc::{
    self, derive_keys, frame::pad_to_block, handshake, nonce, ops, CrcKind, FrameDecoder,
    FrameEncoder, KdfInput, MeOp, NoncePacket, ProcessId, Role,
};
use rand::RngCore;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tracing::{debug, trace};

/// Who we are and what we hash, for every ME connection of the process.
#[derive(Clone, Debug)]
pub struct Ident {
    /// Our process id in handshakes; `ip` 0 means "the connection's local IPv4".
    pub pid: ProcessId,
    /// The proxy secret (`--aes-pwd`), `None` when there is none: then no ME accepts us.
    pub secret: Option<Arc<Vec<u8>>>,
    /// `--nat-info` (the sessions share the same table).
    pub nat: Arc<Nat>,
    /// `--address`: source address of IPv4 ME sockets.
    pub bind_v4: Option<Ipv4Addr>,
    /// The writer tasks (they also send our own RPC_PING each `--ping-interval`: C never
    /// pings; telemt does, and MEs accept it).
    pub writers: Arc<super::writer::Writers>,
}

/// A live, handshaken ME connection.
#[derive(Debug)]
pub struct MeConn {
    /// Process-unique id, for logs.
    pub id: u64,
    pub target: SocketAddr,
    out: Arc<OutQueue>,
    /// The inboxes of the sessions bound to this connection, by `conn_id`.
    sessions: Mutex<HashMap<i64, Arc<Inbox>>>,
    /// Shared with the connection's writer.
    health: Arc<Health>,
    /// The sessions most recently told closed: answers still arriving for one of them
    /// bring no second RPC_CLOSE_CONN (C sends one per answer; a flood of answers for a
    /// closed session would flood the queue towards the ME with closes).
    told_closed: Mutex<std::collections::VecDeque<i64>>,
}

/// How many closed sessions a connection remembers (see `told_closed`).
const TOLD_CLOSED: usize = 256;

impl MeConn {
    pub fn is_alive(&self) -> bool {
        self.health.is_alive()
    }

    /// Routes the ME's answers for `conn_id` to `inbox`.
    pub fn register(&self, conn_id: i64, inbox: Arc<Inbox>) {
        self.sessions
            .lock()
            .expect("sessions")
            .insert(conn_id, inbox);
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
    pub async fn send_with(&self, build: impl FnOnce(&mut Vec<u8>)) -> Result<(), Closed> {
        self.out.send_with(build).await
    }

    /// Queues one request without waiting: Some(Ok) queued, Some(Err) the connection is
    /// gone, None its queue is full (`build` is kept).
    pub fn try_send_with(
        &self,
        build: &mut Option<impl FnOnce(&mut Vec<u8>)>,
    ) -> Option<Result<(), Closed>> {
        self.out.try_send_with(build)
    }

    /// Tells the ME that the client of `conn_id` went away (at once: also from the reader,
    /// which must not wait for the writer).
    pub fn close_session(&self, conn_id: i64) {
        {
            let mut told = self.told_closed.lock().expect("told closed");
            if told.contains(&conn_id) {
                return;
            }
            if told.len() == TOLD_CLOSED {
                told.pop_front();
            }
            told.push_back(conn_id);
        }
        self.control(|p| ops::build_close_conn(p, conn_id));
    }

    /// Queues a control frame; an ME that lets them pile up over the cap is not reading
    /// and its connection is declared dead.
    fn control(&self, build: impl FnOnce(&mut Vec<u8>)) {
        if !self.out.push(build) && self.is_alive() {
            self.health.kill(format!(
                "the ME does not read: over {} bytes queued for it",
                super::writer::CONTROL_CAP
            ));
        }
    }

    fn mark_dead(&self, cause: CloseCause) {
        self.health.kill("its reader ended");
        let sessions = std::mem::take(&mut *self.sessions.lock().expect("sessions"));
        for (_, inbox) in sessions {
            let _ = inbox.send(ToClient::Close(cause));
        }
    }
}

/// Why an ME connection ended.
#[derive(Debug)]
pub enum ConnEnd {
    Eof,
    Io(io::Error),
    Protocol(String),
    /// Declared dead (the ME stopped reading or answering pings, or the writer failed).
    Dead(String),
    /// The pool asked for it (target removed and drained).
    Dropped,
}

impl std::fmt::Display for ConnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnEnd::Eof => write!(f, "closed by the ME"),
            ConnEnd::Io(e) => write!(f, "{e}"),
            ConnEnd::Protocol(s) => write!(f, "protocol error: {s}"),
            ConnEnd::Dead(s) => write!(f, "declared dead: {s}"),
            ConnEnd::Dropped => write!(f, "no longer in the config"),
        }
    }
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
    let ts = unix_now() as i32;
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
            server: ident.nat.addr(target),
            client: ident.nat.addr(local),
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
    let conn = Arc::new(MeConn {
        id,
        target,
        out: out.clone(),
        sessions: Mutex::new(HashMap::new()),
        told_closed: Mutex::new(std::collections::VecDeque::new()),
        health: Arc::new(Health::new()),
    });
    let writer = ident.writers.join(Member {
        id,
        wr,
        enc,
        queue: out,
        health: conn.health.clone(),
    });
    // Also when the pool drops the future (a drained connection), polled or not.
    let dead = Dead {
        conn: conn.clone(),
        writer,
    };
    let run = async move {
        let dead = dead;
        tokio::select! {
            end = read_loop(&dead.conn, rd, inb, decoder, &stats) => end,
            why = dead.conn.health.died() => ConnEnd::Dead(why),
        }
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

/// What became of a message for a session.
enum Delivery {
    Queued,
    /// The session is being shed: dropped (the session sends its own RPC_CLOSE_CONN).
    Shed,
    /// No such session (any more): dropped, the ME is to be told.
    Unknown,
}

/// Queues the message `make` builds (only once the session is known: no copy of an answer
/// nobody waits for) in session `conn_id`'s inbox, then applies the caps: the session's own
/// ([`MAX_QUEUED`]) and the process budget.
fn to_session(
    conn: &MeConn,
    conn_id: i64,
    make: impl FnOnce() -> ToClient,
    stats: &Stats,
) -> Delivery {
    let Some(inbox) = conn
        .sessions
        .lock()
        .expect("sessions")
        .get(&conn_id)
        .cloned()
    else {
        return Delivery::Unknown;
    };
    match inbox.send(make()) {
        Ok(charged) if charged > MAX_QUEUED => {
            if inbox.shed(CloseCause::Flood) {
                Stats::inc(&stats.failed_flood);
            }
        }
        Ok(_) => {
            inbox.budget().enforce();
        }
        Err((Refused::Shed, _)) => return Delivery::Shed,
        Err((Refused::Closed, _)) => {
            conn.sessions.lock().expect("sessions").remove(&conn_id);
            return Delivery::Unknown;
        }
    }
    Delivery::Queued
}

fn dispatch(conn: &MeConn, payload: &[u8], stats: &Stats) {
    match ops::parse_me_op(payload) {
        MeOp::ProxyAns { conn_id, data, .. } => {
            // Given back to the pool by the session once written to its client.
            let make = || ToClient::Data(Answer::new(&payload[data]));
            match to_session(conn, conn_id, make, stats) {
                Delivery::Queued => Stats::inc(&stats.forwarded_responses),
                Delivery::Shed => Stats::inc(&stats.dropped_responses),
                Delivery::Unknown => {
                    Stats::inc(&stats.dropped_responses);
                    conn.close_session(conn_id);
                }
            }
        }
        MeOp::SimpleAck { conn_id, confirm } => {
            match to_session(conn, conn_id, || ToClient::QuickAck(confirm), stats) {
                Delivery::Queued => Stats::inc(&stats.forwarded_simple_acks),
                Delivery::Shed => Stats::inc(&stats.dropped_simple_acks),
                Delivery::Unknown => {
                    Stats::inc(&stats.dropped_simple_acks);
                    conn.close_session(conn_id);
                }
            }
        }
        MeOp::CloseExt { conn_id } => {
            if let Some(inbox) = conn.sessions.lock().expect("sessions").remove(&conn_id) {
                let _ = inbox.send(ToClient::Close(CloseCause::ClosedByMe));
            }
        }
        MeOp::Ping { id } => conn.control(|p| ops::build_pong(p, id)),
        MeOp::Pong { .. } => conn.health.pong(),
        MeOp::Ignored { op, len } => {
            trace!("ME conn {}: ignoring op {op:08x} of {len} bytes", conn.id)
        }
        MeOp::Unknown(op) => debug!("unknown RPC operation {op:08x}, ignoring"),
    }
}
