//! A fake Telegram middle-end (ME): what the proxy connects to in its default (ME) mode.
//!
//! It plays the server side of the RPC link (spec backend-ops.md §1) with the pieces of
//! [`mtproto_wire::rpc`]: checks the proxy's RPC_NONCE (key selector, 30-s clock rule),
//! answers with its own, derives the AES-256-CBC keys in the server role, checks the proxy's
//! RPC_HANDSHAKE (including that its peer_pid names this ME's port, as a C ME does) and
//! answers with flag 0x800 when the proxy offered CRC32C and [`FakeMeConfig::crc32c`] is on.
//! Then it serves RPC: RPC_PING gets RPC_PONG; each RPC_PROXY_REQ is answered as the
//! [`Responder`] says, optionally after an RPC_SIMPLE_ACK and a delay; it can send its own
//! pings. Its output is padded to 16-byte blocks with padding words, and it puts a few more
//! padding words between frames at random, as the protocol allows.
//!
//! Everything it sees and does is appended to an event log ([`MeEvent`]) that tests await
//! with [`FakeMe::wait_for`] instead of sleeping. Tests can also cut every connection
//! ([`FakeMe::drop_all_connections`]), close one client session ([`FakeMe::close_session`]),
//! and stop and restart it on the same ports ([`FakeMe::stop`], [`FakeMe::restart`], or a
//! new [`FakeMe::start`] with fixed ports: the listeners use SO_REUSEADDR).
//!
//! With [`FakeMeConfig::commands`] on, it also obeys [`Command`] packets from clients (and
//! [`FakeMe::command_on`] from the test): big answers, floods of answers, acks, padding or
//! pings, a connection that stops reading. Floods are paced by what the proxy reads (at most
//! a few MiB wait in the fake ME), so an attack of gigabytes costs the test no memory.
//!
//! What it is not: an ME. It knows no DCs, answers from its own responder, never does DH
//! (schema 3 nonces are refused) and only listens on loopback.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mtproto_wire::rpc::frame::{leading_padding, PAD_WORD};
use mtproto_wire::rpc::handshake::{
    build_handshake_error, check_proxy_handshake, me_handshake_answer,
};
use mtproto_wire::rpc::kdf::{derive_keys, KdfInput, Role};
use mtproto_wire::rpc::nonce::{check_proxy_nonce, key_select, NoncePacket};
use mtproto_wire::rpc::ops::{
    build_close_ext, build_ping, build_pong, build_proxy_ans, build_simple_ack, parse_proxy_op,
    ProxyOp, ProxyReq,
};
use mtproto_wire::rpc::{
    pad_to_block, AesCbcDecryptor, AesCbcEncryptor, CrcKind, FrameDecoder, FrameEncoder, ProcessId,
    MAX_SECRET_LEN, MIN_SECRET_LEN,
};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinSet};

pub use crate::me_command::Command;
use crate::observed::Observed;
use crate::serving::{loopback_only, Serving};
use mtproxy_client::{mtproto, unix_now};

/// How the fake ME answers RPC_PROXY_REQ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Responder {
    /// RPC_PROXY_ANS with the client packet, byte for byte.
    #[default]
    Echo,
    /// An unencrypted `req_pq_multi` / `req_pq` gets a `resPQ` for its nonce
    /// ([`crate::mtproto::res_pq`]); anything else is echoed.
    ResPq,
    /// RPC_CLOSE_EXT for the session: the ME drops the client.
    Close,
    /// No answer at all.
    Silent,
}

/// How a [`FakeMe`] behaves. [`FakeMeConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct FakeMeConfig {
    /// Loopback addresses to listen on; port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    /// The proxy secret (the proxy's `--aes-pwd` file), 32..=256 bytes.
    pub secret: Vec<u8>,
    pub responder: Responder,
    /// Answer the handshake with 0x800 (CRC32C) when the proxy offers it. Default on.
    pub crc32c: bool,
    /// Send RPC_SIMPLE_ACK ([`simple_ack_confirm`]) before answering a request that has the
    /// quick-ack flag.
    pub simple_ack: bool,
    /// Wait this long before each answer (the simple ack is not delayed).
    pub delay: Option<Duration>,
    /// Send RPC_PING this often on every ready connection.
    pub ping_interval: Option<Duration>,
    /// The flags field of RPC_PROXY_ANS.
    pub ans_flags: u32,
    /// Refuse a handshake whose peer_pid does not match this ME (port, and IP unless 0),
    /// as a C ME does (error −4). Default on.
    pub check_peer_pid: bool,
    /// Seconds added to this ME's clock (to test the proxy's 30-s rule).
    pub clock_offset: i32,
    /// Close connections that have not finished the handshake after this long.
    pub handshake_timeout: Duration,
    /// Obey [`Command`] packets from clients instead of answering them. Default off.
    pub commands: bool,
}

impl FakeMeConfig {
    /// One listener on 127.0.0.1 with a free port, echoing, CRC32C on, no acks, no delay,
    /// no pings.
    pub fn new(secret: impl Into<Vec<u8>>) -> FakeMeConfig {
        FakeMeConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            secret: secret.into(),
            responder: Responder::Echo,
            crc32c: true,
            simple_ack: false,
            delay: None,
            ping_interval: None,
            ans_flags: 0,
            check_peer_pid: true,
            clock_offset: 0,
            handshake_timeout: Duration::from_secs(10),
            commands: false,
        }
    }

    /// Listen on these addresses instead.
    pub fn listen_on(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    pub fn responder(mut self, r: Responder) -> Self {
        self.responder = r;
        self
    }

    pub fn crc32c(mut self, on: bool) -> Self {
        self.crc32c = on;
        self
    }

    pub fn simple_ack(mut self, on: bool) -> Self {
        self.simple_ack = on;
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = Some(d);
        self
    }

    pub fn commands(mut self, on: bool) -> Self {
        self.commands = on;
        self
    }
}

/// Something the fake ME saw or did. `conn` numbers ME connections in accept order from 0,
/// across restarts of the same [`FakeMe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeEvent {
    /// A TCP connection arrived on listener `me` from `peer`.
    Connected {
        conn: u64,
        me: SocketAddr,
        peer: SocketAddr,
    },
    /// Nonces and handshakes done; RPC traffic may flow.
    Ready { conn: u64, crc32c: bool },
    /// An RPC_PROXY_REQ.
    ProxyReq {
        conn: u64,
        conn_id: i64,
        flags: u32,
        proxy_tag: Option<[u8; 16]>,
        client_addr: SocketAddr,
        our_addr: SocketAddr,
        packet_len: usize,
        /// Up to the first 64 bytes of the client packet.
        packet_head: Vec<u8>,
        unencrypted: bool,
        quick_ack: bool,
    },
    /// We sent RPC_SIMPLE_ACK.
    SimpleAckSent {
        conn: u64,
        conn_id: i64,
        confirm: u32,
    },
    /// We sent RPC_PROXY_ANS with `len` bytes of data.
    ProxyAnsSent { conn: u64, conn_id: i64, len: usize },
    /// We sent RPC_CLOSE_EXT (responder or [`FakeMe::close_session`]).
    CloseExtSent { conn: u64, conn_id: i64 },
    /// The proxy sent RPC_CLOSE_CONN (logged once per session and connection).
    CloseConn { conn: u64, conn_id: i64 },
    /// We sent RPC_PING.
    PingSent { conn: u64, id: i64 },
    /// The proxy sent RPC_PING (we answered with RPC_PONG).
    Ping { conn: u64, id: i64 },
    /// The proxy sent RPC_PONG.
    Pong { conn: u64, id: i64 },
    /// Any other op, or a known one with a wrong length.
    UnknownOp { conn: u64, op: u32, len: usize },
    /// A protocol error (bad nonce, handshake, frame, request); the connection is closed.
    Error { conn: u64, reason: String },
    /// A [`Command`] arrived (from session `conn_id`, 0 from [`FakeMe::command_on`]).
    Command {
        conn: u64,
        conn_id: i64,
        cmd: Command,
    },
    /// Everything the command asked for is handed to the connection's writer.
    CommandDone { conn: u64, cmd: Command },
    /// The connection is gone, whichever side closed it.
    Disconnected { conn: u64 },
}

impl MeEvent {
    /// The ME connection the event belongs to.
    pub fn conn(&self) -> u64 {
        match self {
            MeEvent::Connected { conn, .. }
            | MeEvent::Ready { conn, .. }
            | MeEvent::ProxyReq { conn, .. }
            | MeEvent::SimpleAckSent { conn, .. }
            | MeEvent::ProxyAnsSent { conn, .. }
            | MeEvent::CloseExtSent { conn, .. }
            | MeEvent::CloseConn { conn, .. }
            | MeEvent::PingSent { conn, .. }
            | MeEvent::Ping { conn, .. }
            | MeEvent::Pong { conn, .. }
            | MeEvent::UnknownOp { conn, .. }
            | MeEvent::Error { conn, .. }
            | MeEvent::Command { conn, .. }
            | MeEvent::CommandDone { conn, .. }
            | MeEvent::Disconnected { conn } => *conn,
        }
    }
}

/// The `confirm` value the fake ME puts in RPC_SIMPLE_ACK for a client packet: the first 4
/// bytes of its SHA-256 (little-endian) with the top bit set, like a real quick-ack token.
pub fn simple_ack_confirm(packet: &[u8]) -> u32 {
    let d = Sha256::digest(packet);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]]) | 0x8000_0000
}

/// [`FakeMe::wait_for`] gave up; carries the events seen so far for the failure message.
#[derive(Debug)]
pub struct WaitTimeout {
    pub events: Vec<MeEvent>,
}

impl std::fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "fake ME: condition not met in time; events so far:")?;
        for e in &self.events {
            writeln!(f, "  {e:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitTimeout {}

/// A command for one connection's task.
enum Cmd {
    CloseExt(i64),
    Do(Command),
}

struct ConnCtl {
    cmd: mpsc::UnboundedSender<Cmd>,
    abort: AbortHandle,
}

/// State shared by the handle, the accept loops and the connections.
struct Shared {
    events: Observed<MeEvent>,
    next_conn: AtomicU64,
    /// Live connections.
    conns: Mutex<HashMap<u64, ConnCtl>>,
    /// Client sessions (conn_id) seen in requests, and the ME connection they came on.
    sessions: Mutex<HashMap<i64, u64>>,
    start_time: i32,
}

impl Shared {
    fn emit(&self, e: MeEvent) {
        self.events.push(e);
    }
}

/// A running fake ME. Dropping it stops everything in the background; call
/// [`FakeMe::stop`] first when the same ports are to be bound again right away.
pub struct FakeMe {
    config: Arc<FakeMeConfig>,
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    /// One accept loop per listen address, while listening.
    running: Option<Vec<Serving>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl FakeMe {
    /// Binds every listen address and starts serving.
    pub async fn start(config: FakeMeConfig) -> io::Result<FakeMe> {
        if config.listen.is_empty() {
            return Err(invalid(
                "the fake ME needs at least one listen address".into(),
            ));
        }
        for a in &config.listen {
            loopback_only(*a, "the fake ME")?;
        }
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&config.secret.len()) {
            return Err(invalid(format!(
                "proxy secret must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} bytes, got {}",
                config.secret.len()
            )));
        }
        let shared = Arc::new(Shared {
            events: Observed::new(),
            next_conn: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            start_time: unix_now() as i32,
        });
        let mut me = FakeMe {
            addrs: config.listen.clone(),
            config: Arc::new(config),
            shared,
            running: None,
        };
        me.launch().await?;
        Ok(me)
    }

    async fn launch(&mut self) -> io::Result<()> {
        let mut listeners = Vec::new();
        for a in &self.addrs {
            listeners.push(bind(*a)?);
        }
        let mut running = Vec::new();
        let mut addrs = Vec::new();
        for l in listeners {
            let me = l.local_addr()?;
            addrs.push(me);
            let (config, shared) = (self.config.clone(), self.shared.clone());
            running.push(Serving::start(l, "fake ME", move |stream, peer, set| {
                accepted(stream, peer, me, &config, &shared, set)
            }));
        }
        self.addrs = addrs;
        self.running = Some(running);
        Ok(())
    }

    /// Where it listens (actual ports, also after [`FakeMe::stop`]).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// How it behaves.
    pub fn config(&self) -> &FakeMeConfig {
        &self.config
    }

    /// Whether it is listening.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// A snapshot of the event log.
    pub fn events(&self) -> Vec<MeEvent> {
        self.shared.events.snapshot()
    }

    /// How many events satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&MeEvent) -> bool) -> usize {
        self.shared.events.count(pred)
    }

    /// Waits (without a time limit) until `pred` holds for the event log; returns that
    /// snapshot. Re-checked after every event.
    pub async fn wait_until(&self, pred: impl FnMut(&[MeEvent]) -> bool) -> Vec<MeEvent> {
        self.shared.events.wait_until(pred).await
    }

    /// [`FakeMe::wait_until`] with a time limit; on timeout the error carries the log.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&[MeEvent]) -> bool,
    ) -> Result<Vec<MeEvent>, WaitTimeout> {
        match tokio::time::timeout(timeout, self.wait_until(pred)).await {
            Ok(ev) => Ok(ev),
            Err(_) => Err(WaitTimeout {
                events: self.events(),
            }),
        }
    }

    /// Waits until at least `n` connections in total have become ready.
    pub async fn wait_ready(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<MeEvent>, WaitTimeout> {
        self.wait_for(timeout, |ev| {
            ev.iter()
                .filter(|e| matches!(e, MeEvent::Ready { .. }))
                .count()
                >= n
        })
        .await
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.conns.lock().expect("conns lock").len()
    }

    /// Closes every ME connection now (the listeners stay) and waits until they are gone.
    /// Returns how many there were.
    pub async fn drop_all_connections(&self) -> usize {
        let ids: Vec<u64> = {
            let conns = self.shared.conns.lock().expect("conns lock");
            for c in conns.values() {
                c.abort.abort();
            }
            conns.keys().copied().collect()
        };
        self.wait_until(|ev| {
            ids.iter().all(|id| {
                ev.iter()
                    .any(|e| matches!(e, MeEvent::Disconnected { conn } if conn == id))
            })
        })
        .await;
        ids.len()
    }

    /// Sends RPC_CLOSE_EXT for client session `conn_id` on the ME connection it arrived on.
    /// `false` if no live connection has seen that session (or it was closed already).
    pub fn close_session(&self, conn_id: i64) -> bool {
        let Some(conn) = self
            .shared
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&conn_id)
            .copied()
        else {
            return false;
        };
        let conns = self.shared.conns.lock().expect("conns lock");
        conns
            .get(&conn)
            .is_some_and(|c| c.cmd.send(Cmd::CloseExt(conn_id)).is_ok())
    }

    /// Makes ME connection `conn` obey `cmd` as if a client on it had sent it (session 0).
    /// `false` if that connection is gone.
    pub fn command_on(&self, conn: u64, cmd: Command) -> bool {
        let conns = self.shared.conns.lock().expect("conns lock");
        conns
            .get(&conn)
            .is_some_and(|c| c.cmd.send(Cmd::Do(cmd)).is_ok())
    }

    /// Stops listening and closes every connection; returns once all are gone and the ports
    /// are free. The event log and the addresses stay for [`FakeMe::restart`].
    pub async fn stop(&mut self) {
        for serving in self.running.take().into_iter().flatten() {
            serving.stop().await;
        }
    }

    /// Listens again on the same addresses (after [`FakeMe::stop`]; a no-op when running),
    /// same config, same event log.
    pub async fn restart(&mut self) -> io::Result<()> {
        if self.running.is_none() {
            self.launch().await?;
        }
        Ok(())
    }
}

/// One accepted connection: logged, registered for commands and cuts, served in its task.
fn accepted(
    stream: TcpStream,
    peer: SocketAddr,
    me: SocketAddr,
    config: &Arc<FakeMeConfig>,
    shared: &Arc<Shared>,
    set: &mut JoinSet<()>,
) {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    shared.emit(MeEvent::Connected { conn, me, peer });
    // The guard lives in the task's future from the start, so even a task aborted before its
    // first poll reports `Disconnected`; the map entry is in place before the task can
    // remove it.
    let guard = ConnGuard {
        conn,
        shared: shared.clone(),
    };
    let mut map = shared.conns.lock().expect("conns lock");
    let abort = set.spawn(serve(guard, stream, config.clone(), rx));
    map.insert(conn, ConnCtl { cmd: tx, abort });
}

/// Emits `Disconnected` and forgets the connection however its task ends (also on abort).
struct ConnGuard {
    conn: u64,
    shared: Arc<Shared>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared
            .conns
            .lock()
            .expect("conns lock")
            .remove(&self.conn);
        self.shared
            .sessions
            .lock()
            .expect("sessions lock")
            .retain(|_, c| *c != self.conn);
        self.shared.emit(MeEvent::Disconnected { conn: self.conn });
    }
}

/// The receiving half of the link: bytes in, frame payloads out.
struct RpcIn {
    dec: FrameDecoder,
    cbc: Option<AesCbcDecryptor>,
    /// Received, not yet decrypted (a partial block).
    raw: Vec<u8>,
    /// Plaintext not yet framed.
    plain: Vec<u8>,
}

impl RpcIn {
    fn push(&mut self, bytes: &[u8]) {
        match &mut self.cbc {
            Some(c) => {
                self.raw.extend_from_slice(bytes);
                let n = c.decrypt(&mut self.raw);
                self.plain.extend(self.raw.drain(..n));
            }
            None => self.plain.extend_from_slice(bytes),
        }
    }

    /// From now on everything is encrypted, including what is already buffered past the
    /// nonce frame.
    fn start_decrypting(&mut self, cbc: AesCbcDecryptor) {
        let rest = std::mem::take(&mut self.plain);
        self.cbc = Some(cbc);
        self.push(&rest);
    }

    fn next_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        let found = self
            .dec
            .decode(&self.plain)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let out = found.map(|(n, r)| {
            let p = self.plain[r].to_vec();
            self.plain.drain(..n);
            p
        });
        let pad = leading_padding(&self.plain);
        self.plain.drain(..pad);
        Ok(out)
    }

    /// Reads until a whole frame is there (handshake phase).
    async fn read_frame(&mut self, stream: &mut TcpStream) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(f);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.push(&buf[..n]);
        }
    }
}

/// The sending half: payloads in, bytes for the socket out.
struct RpcOut {
    enc: FrameEncoder,
    cbc: Option<AesCbcEncryptor>,
}

impl RpcOut {
    /// One flush: frames (with a random padding word now and then between them once
    /// encrypted), padded to whole blocks and encrypted.
    fn flush(&mut self, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rng = rand::thread_rng();
        for p in payloads {
            if self.cbc.is_some() {
                for _ in 0..rng.gen_range(0..3) / 2 {
                    out.extend_from_slice(&PAD_WORD);
                }
            }
            self.enc.encode(p, &mut out);
        }
        if let Some(c) = &mut self.cbc {
            pad_to_block(&mut out, 0);
            c.encrypt(&mut out);
        }
        out
    }

    /// `bytes` (rounded up to whole blocks) of padding words, encrypted.
    fn padding(&mut self, bytes: usize) -> Vec<u8> {
        let mut out = PAD_WORD.repeat(bytes.div_ceil(16) * 4);
        if let Some(c) = &mut self.cbc {
            c.encrypt(&mut out);
        }
        out
    }
}

/// What a connection's writer sends.
enum Outgoing {
    Frames(Vec<Vec<u8>>),
    /// This many bytes of padding words.
    Padding(usize),
}

/// Bytes a flood lets wait for the writer before it waits for the proxy to read.
const PACE: usize = 4 << 20;

/// A connection's output: the writer's queue and how many bytes wait in it.
#[derive(Clone)]
struct Out {
    tx: mpsc::UnboundedSender<(Outgoing, usize)>,
    queued: Arc<AtomicUsize>,
    /// Notified after each write, and when the writer ends.
    written: Arc<Notify>,
}

impl Out {
    /// Queues frames at once; false once the writer is gone.
    fn send(&self, frames: Vec<Vec<u8>>) -> bool {
        let n = frames.iter().map(|f| f.len() + 16).sum();
        self.push(Outgoing::Frames(frames), n)
    }

    fn push(&self, o: Outgoing, n: usize) -> bool {
        self.queued.fetch_add(n, Ordering::SeqCst);
        if self.tx.send((o, n)).is_err() {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Queues `o` (about `n` bytes) once fewer than [`PACE`] bytes wait.
    async fn paced(&self, o: Outgoing, n: usize) -> bool {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if self.tx.is_closed() {
                return false;
            }
            if self.queued.load(Ordering::SeqCst) < PACE {
                return self.push(o, n);
            }
            written.await;
        }
    }

    async fn paced_frames(&self, frames: Vec<Vec<u8>>) -> bool {
        let n = frames.iter().map(|f| f.len() + 16).sum();
        self.paced(Outgoing::Frames(frames), n).await
    }
}

async fn serve(
    guard: ConnGuard,
    stream: TcpStream,
    config: Arc<FakeMeConfig>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let (conn, shared) = (guard.conn, guard.shared.clone());
    if let Err(reason) = serve_inner(stream, conn, &config, &shared, cmds).await {
        shared.emit(MeEvent::Error { conn, reason });
    }
    drop(guard);
}

async fn serve_inner(
    mut stream: TcpStream,
    conn: u64,
    config: &FakeMeConfig,
    shared: &Arc<Shared>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
) -> Result<(), String> {
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    let mut input = RpcIn {
        dec: FrameDecoder::new(),
        cbc: None,
        raw: Vec::new(),
        plain: Vec::new(),
    };
    let mut output = RpcOut {
        enc: FrameEncoder::new(),
        cbc: None,
    };
    let me_pid = ProcessId::new(
        std::net::Ipv4Addr::LOCALHOST,
        local.port(),
        std::process::id(),
        shared.start_time,
    );
    let handshake = async {
        // 1. The proxy's nonce, plaintext.
        let payload = input
            .read_frame(&mut stream)
            .await
            .map_err(|e| format!("reading the nonce: {e}"))?;
        let now = (unix_now() as i32).wrapping_add(config.clock_offset);
        let theirs = check_proxy_nonce(&payload, key_select(&config.secret), now)
            .map_err(|e| format!("nonce refused ({}): {e}", e.c_code()))?;
        // 2. Ours, then keys in the server role.
        let ours = NoncePacket::aes(&config.secret, now, rand::random());
        let bytes = output.flush(&[ours.to_bytes().to_vec()]);
        stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
        let keys = derive_keys(
            &KdfInput {
                nonce_srv: ours.nonce,
                nonce_clt: theirs.nonce,
                client_ts: theirs.crypto_ts,
                server: local,
                client: peer,
                secret: &config.secret,
            },
            Role::Server,
        );
        let (enc, dec) = keys.ciphers();
        output.cbc = Some(enc);
        input.start_decrypting(dec);
        // 3. Handshakes.
        let payload = input
            .read_frame(&mut stream)
            .await
            .map_err(|e| format!("reading the handshake: {e}"))?;
        let pid_check = config.check_peer_pid.then_some(&me_pid);
        let hs = match check_proxy_handshake(&payload, pid_check) {
            Ok(hs) => hs,
            Err(e) => {
                if e.sends_error_packet() {
                    let mut p = Vec::new();
                    build_handshake_error(&mut p, e.c_code(), &me_pid);
                    let bytes = output.flush(&[p]);
                    let _ = stream.write_all(&bytes).await;
                }
                return Err(format!("handshake refused ({}): {e}", e.c_code()));
            }
        };
        let crc32c = config.crc32c && hs.crc32c();
        let answer = me_handshake_answer(&hs, me_pid, crc32c);
        let bytes = output.flush(&[answer.to_bytes().to_vec()]);
        stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
        if crc32c {
            output.enc.switch_crc(CrcKind::Crc32c);
            input.dec.switch_crc(CrcKind::Crc32c);
        }
        Ok::<bool, String>(crc32c)
    };
    let crc32c = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(r) => r?,
        Err(_) => return Err("handshake timed out".into()),
    };
    shared.emit(MeEvent::Ready { conn, crc32c });

    let (rd, wr) = stream.into_split();
    let (tx, out_rx) = mpsc::unbounded_channel();
    let out = Out {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        written: Arc::new(Notify::new()),
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(writer(wr, output, out_rx, out.clone()));
    serve_rpc(rd, input, conn, config, shared, cmds, out, &mut tasks).await
}

/// Writes each batch of payloads as one encrypted flush.
async fn writer(
    mut wr: OwnedWriteHalf,
    mut output: RpcOut,
    mut rx: mpsc::UnboundedReceiver<(Outgoing, usize)>,
    out: Out,
) {
    while let Some((o, n)) = rx.recv().await {
        let bytes = match o {
            Outgoing::Frames(batch) => output.flush(&batch),
            Outgoing::Padding(len) => output.padding(len),
        };
        let ok = wr.write_all(&bytes).await.is_ok();
        out.queued.fetch_sub(n, Ordering::SeqCst);
        out.written.notify_waiters();
        if !ok {
            break;
        }
    }
    rx.close();
    out.written.notify_waiters();
}

#[allow(clippy::too_many_arguments)]
async fn serve_rpc(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut input: RpcIn,
    conn: u64,
    config: &FakeMeConfig,
    shared: &Arc<Shared>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    out: Out,
    tasks: &mut JoinSet<()>,
) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    // Cleared by [`Command::StopReading`].
    let reading = AtomicBool::new(true);
    let closes = Mutex::new(std::collections::HashSet::new());
    let ctx = Ctx {
        conn,
        config,
        shared,
        out: &out,
        reading: &reading,
        closes: &closes,
    };
    let mut pings = config.ping_interval.map(|d| {
        let d = d.max(Duration::from_millis(1));
        tokio::time::interval_at(tokio::time::Instant::now() + d, d)
    });
    let mut ping_n: i64 = 0;
    loop {
        // Everything already buffered first (frames that arrived with the handshake).
        while let Some(payload) = input.next_frame().map_err(|e| e.to_string())? {
            handle(&payload, &ctx, tasks)?;
        }
        let read = reading.load(Ordering::SeqCst);
        tokio::select! {
            r = rd.read(&mut buf), if read => match r {
                Ok(0) => return Ok(()),
                Ok(n) => input.push(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            },
            Some(cmd) = cmds.recv() => match cmd {
                Cmd::CloseExt(conn_id) => {
                    shared.sessions.lock().expect("sessions lock").remove(&conn_id);
                    let mut p = Vec::new();
                    build_close_ext(&mut p, conn_id);
                    let _ = out.send(vec![p]);
                    shared.emit(MeEvent::CloseExtSent { conn, conn_id });
                }
                Cmd::Do(cmd) => {
                    shared.emit(MeEvent::Command { conn, conn_id: 0, cmd });
                    run_command(cmd, 0, &ctx, tasks);
                }
            },
            _ = async { pings.as_mut().expect("guarded").tick().await }, if pings.is_some() => {
                ping_n += 1;
                let id = ((conn as i64) << 32) | ping_n;
                let mut p = Vec::new();
                build_ping(&mut p, id);
                let _ = out.send(vec![p]);
                shared.emit(MeEvent::PingSent { conn, id });
            }
            Some(_) = tasks.join_next(), if tasks.len() > 1 => {}
        }
    }
}

/// What handling one payload needs to know about its connection.
struct Ctx<'a> {
    conn: u64,
    config: &'a FakeMeConfig,
    shared: &'a Arc<Shared>,
    out: &'a Out,
    reading: &'a AtomicBool,
    /// Sessions this connection has logged an RPC_CLOSE_CONN for: a flood of answers to a
    /// closed session brings one close per answer, logged once.
    closes: &'a Mutex<std::collections::HashSet<i64>>,
}

/// Payloads per batch handed to the writer by a flood.
const FLOOD_BATCH: usize = 4096;

/// Hands `count` payloads that `build` makes to the writer, in batches of `batch`, paced;
/// then logs that `cmd` is done.
async fn flood(
    out: Out,
    shared: Arc<Shared>,
    (conn, cmd): (u64, Command),
    count: u32,
    batch: usize,
    build: impl Fn(&mut Vec<u8>),
) {
    let mut left = count as usize;
    while left > 0 {
        let n = left.min(batch);
        let frames = (0..n)
            .map(|_| {
                let mut p = Vec::new();
                build(&mut p);
                p
            })
            .collect();
        if !out.paced_frames(frames).await {
            return;
        }
        left -= n;
    }
    shared.emit(MeEvent::CommandDone { conn, cmd });
}

/// Does what `cmd` asks, for session `conn_id`; floods run as tasks of the connection.
fn run_command(cmd: Command, conn_id: i64, ctx: &Ctx<'_>, tasks: &mut JoinSet<()>) {
    let (out, shared) = (ctx.out.clone(), ctx.shared.clone());
    let tag = (ctx.conn, cmd);
    let flags = ctx.config.ans_flags;
    match cmd {
        Command::Answers { len, count } => {
            let data = vec![0x5a; len as usize / 4 * 4];
            // Large answers go one per batch.
            let batch = if len >= 64 * 1024 { 1 } else { FLOOD_BATCH };
            let build = move |p: &mut Vec<u8>| build_proxy_ans(p, flags, conn_id, &data);
            tasks.spawn(flood(out, shared, tag, count, batch, build));
        }
        Command::Acks { count } => {
            let build = move |p: &mut Vec<u8>| build_simple_ack(p, conn_id, 0x8000_0001);
            tasks.spawn(flood(out, shared, tag, count, FLOOD_BATCH, build));
        }
        Command::Pings { count } => {
            let build = |p: &mut Vec<u8>| build_ping(p, rand::random::<i64>() & i64::MAX);
            tasks.spawn(flood(out, shared, tag, count, FLOOD_BATCH, build));
        }
        Command::Stray { len } => {
            let stray = rand::random::<i64>() | 1 << 62;
            let data = vec![0x5a; len as usize / 4 * 4];
            let build = move |p: &mut Vec<u8>| build_proxy_ans(p, flags, stray, &data);
            tasks.spawn(flood(out, shared, tag, 1, 1, build));
        }
        Command::Padding { bytes } => {
            tasks.spawn(async move {
                let mut left = bytes as usize;
                while left > 0 {
                    let n = left.min(1 << 20);
                    if !out.paced(Outgoing::Padding(n), n).await {
                        return;
                    }
                    left -= n;
                }
                shared.emit(MeEvent::CommandDone { conn: tag.0, cmd });
            });
        }
        Command::StopReading => {
            ctx.reading.store(false, Ordering::SeqCst);
            shared.emit(MeEvent::CommandDone { conn: tag.0, cmd });
        }
    }
}

/// One payload from the proxy.
fn handle(payload: &[u8], ctx: &Ctx<'_>, tasks: &mut JoinSet<()>) -> Result<(), String> {
    let (conn, shared, out) = (ctx.conn, ctx.shared, ctx.out);
    match parse_proxy_op(payload) {
        ProxyOp::ProxyReq(req) => on_proxy_req(payload, &req, ctx, tasks),
        ProxyOp::BadProxyReq(e) => return Err(format!("bad RPC_PROXY_REQ: {e}")),
        ProxyOp::CloseConn { conn_id } => {
            shared
                .sessions
                .lock()
                .expect("sessions lock")
                .remove(&conn_id);
            if ctx.closes.lock().expect("closes lock").insert(conn_id) {
                shared.emit(MeEvent::CloseConn { conn, conn_id });
            }
        }
        ProxyOp::Ping { id } => {
            let mut p = Vec::new();
            build_pong(&mut p, id);
            let _ = out.send(vec![p]);
            shared.emit(MeEvent::Ping { conn, id });
        }
        ProxyOp::Pong { id } => shared.emit(MeEvent::Pong { conn, id }),
        ProxyOp::Ignored { op, len } => shared.emit(MeEvent::UnknownOp { conn, op, len }),
        ProxyOp::Unknown(op) => shared.emit(MeEvent::UnknownOp {
            conn,
            op,
            len: payload.len(),
        }),
    }
    Ok(())
}

fn on_proxy_req(payload: &[u8], req: &ProxyReq, ctx: &Ctx<'_>, tasks: &mut JoinSet<()>) {
    let (conn, config, shared, out) = (ctx.conn, ctx.config, ctx.shared, ctx.out);
    let packet = &payload[req.packet.clone()];
    let conn_id = req.conn_id;
    shared
        .sessions
        .lock()
        .expect("sessions lock")
        .insert(conn_id, conn);
    shared.emit(MeEvent::ProxyReq {
        conn,
        conn_id,
        flags: req.flags,
        proxy_tag: req.proxy_tag,
        client_addr: req.client,
        our_addr: req.local,
        packet_len: packet.len(),
        packet_head: packet[..packet.len().min(64)].to_vec(),
        unencrypted: req.unencrypted(),
        quick_ack: req.quick_ack(),
    });
    if let Some(cmd) = Command::decode(packet).filter(|_| config.commands) {
        shared.emit(MeEvent::Command { conn, conn_id, cmd });
        run_command(cmd, conn_id, ctx, tasks);
        return;
    }
    if config.simple_ack && req.quick_ack() {
        let confirm = simple_ack_confirm(packet);
        let mut p = Vec::new();
        build_simple_ack(&mut p, conn_id, confirm);
        let _ = out.send(vec![p]);
        shared.emit(MeEvent::SimpleAckSent {
            conn,
            conn_id,
            confirm,
        });
    }
    let mut answer = Vec::new();
    let event = match config.responder {
        Responder::Silent => return,
        Responder::Close => {
            build_close_ext(&mut answer, conn_id);
            MeEvent::CloseExtSent { conn, conn_id }
        }
        Responder::Echo | Responder::ResPq => {
            let data = match (config.responder, mtproto::parse_req_pq(packet)) {
                (Responder::ResPq, Some(nonce)) => mtproto::res_pq(nonce, rand::random()),
                _ => packet.to_vec(),
            };
            build_proxy_ans(&mut answer, config.ans_flags, conn_id, &data);
            MeEvent::ProxyAnsSent {
                conn,
                conn_id,
                len: data.len(),
            }
        }
    };
    let close = matches!(event, MeEvent::CloseExtSent { .. });
    let send = {
        let shared = shared.clone();
        let out = out.clone();
        move || {
            if close {
                shared
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .remove(&conn_id);
            }
            if out.send(vec![answer]) {
                shared.emit(event);
            }
        }
    };
    match config.delay {
        None => send(),
        Some(d) => {
            tasks.spawn(async move {
                tokio::time::sleep(d).await;
                send();
            });
        }
    }
}
