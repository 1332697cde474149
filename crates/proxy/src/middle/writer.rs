//! The write side of the ME connections: a few writer tasks, each serving up to
//! [`GROUP`] connections, instead of one task per connection.
//!
//! Why: the upload to the MEs is AES-CBC, serial within a connection, and was the largest
//! single cost of ME mode (40 % of the proxy's CPU in a profile of the throughput bench).
//! A task that holds several connections encrypts the batches that are ready on all of
//! them in one interleaved pass ([`rpc::encrypt_many`]: 4 chains 3.2 times, 8 chains 5
//! times the rate of one).
//!
//! Sessions frame their requests straight into their connection's [`OutQueue`]. A group
//! task, per pass: writes what is pending on each connection as far as its socket takes it
//! (a connection whose ME does not read holds up only itself); takes the queue of every
//! connection that has written all it had (plus an RPC_PING when one is due), pads it to
//! whole blocks (a batch not yet encrypted also takes what is queued while the writer lets
//! the sessions run once more); encrypts all those batches together. A connection leaves
//! its group when its write fails, when its reader ends (the pool marks it dead and tells
//! the group to sweep), or when the writer finds the ME stopped reading: a ping not
//! answered, or bytes waiting without write progress, for [`super::health::dead_after`].
//! Its queue is closed then, so its sessions learn it, and its [`Health`] is killed, which
//! ends its reader.

use super::health::Health;
use mtproto_wire::rpc::{self, frame::pad_to_block, ops, AesCbcEncryptor, FrameEncoder};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

/// Connections per writer task: the most chains the CBC kernel interleaves.
pub const GROUP: usize = 8;

/// Bytes the sessions of one ME connection may have framed and the writer not yet taken;
/// a session that finds more waits (back-pressure to its client), like C's connection
/// buffers towards a slow ME.
pub const QUEUE_LIMIT: usize = 256 * 1024;

/// The most a queue holds counting the control frames its reader adds over
/// [`QUEUE_LIMIT`] (pongs, RPC_CLOSE_CONN): more means the ME does not read what it asks
/// for, and the connection is declared dead.
pub const CONTROL_CAP: usize = 4 << 20;

/// The most a batch not yet encrypted copies in from its queue when the writer has let the
/// sessions run (small frames of a connection storm; bulk is swapped in as the next batch).
const TAKE_MORE_MAX: usize = 16 * 1024;

/// A writer's buffer larger than this after a batch is freed rather than kept (a burst
/// must not pin megabytes per ME connection). A queue that reached its limit has at most
/// one more frame in it; its buffer doubled up to twice that, which is kept.
const KEEP_CAPACITY: usize = 2 * (QUEUE_LIMIT + 128 * 1024);

/// The ME connection's queue is closed: its writer is gone, nothing more is sent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ME connection is closed")
    }
}

/// What the sessions of one ME connection have framed for it and its writer has not taken
/// yet. Sessions build each RPC payload in place, straight into this buffer (no copy of
/// the payload into a batch later), and frame it under the lock that orders the sequence
/// numbers; the writer swaps the whole buffer for its empty one.
#[derive(Debug)]
pub struct OutQueue {
    st: Mutex<OutState>,
    /// Sessions waiting for room.
    room: Notify,
}

#[derive(Debug)]
struct OutState {
    buf: Vec<u8>,
    encoder: FrameEncoder,
    /// The writer, waiting for frames.
    writer: Option<Waker>,
    closed: bool,
}

impl OutState {
    /// Appends one frame whose payload `build` appends; gives the writer's waker to wake.
    fn append(&mut self, build: impl FnOnce(&mut Vec<u8>)) -> Option<Waker> {
        let start = self.encoder.begin(&mut self.buf);
        build(&mut self.buf);
        self.encoder.finish(&mut self.buf, start);
        self.writer.take()
    }
}

impl OutQueue {
    /// An empty queue numbering frames with `encoder` (after the handshake's frames).
    pub fn new(encoder: FrameEncoder) -> Arc<OutQueue> {
        Arc::new(OutQueue {
            st: Mutex::new(OutState {
                buf: Vec::new(),
                encoder,
                writer: None,
                closed: false,
            }),
            room: Notify::new(),
        })
    }

    /// Appends one frame whose payload `build` appends to the buffer it is given (a
    /// non-empty multiple of 4 bytes); waits while the queue is full. Err once the
    /// connection's writer has dropped it.
    pub async fn send_with(&self, build: impl FnOnce(&mut Vec<u8>)) -> Result<(), Closed> {
        let mut build = Some(build);
        // The common case first: room in the queue, no waiter registration.
        if let Some(r) = self.try_append(&mut build, QUEUE_LIMIT) {
            return r;
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(r) = self.try_append(&mut build, QUEUE_LIMIT) {
                return r;
            }
            room.await;
        }
    }

    /// Appends the frame `build` makes when fewer than `limit` bytes are queued: Some(Ok);
    /// Some(Err) once closed; None when full (`build` is kept).
    fn try_append(
        &self,
        build: &mut Option<impl FnOnce(&mut Vec<u8>)>,
        limit: usize,
    ) -> Option<Result<(), Closed>> {
        let mut st = self.st.lock().expect("out queue");
        if st.closed {
            return Some(Err(Closed));
        }
        if st.buf.len() >= limit {
            return None;
        }
        let writer = st.append(build.take().expect("built once"));
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
        Some(Ok(()))
    }

    /// Queues one small control payload at once, over the limit if need be: the
    /// connection's reader must never wait for the writer (the ME may itself be waiting
    /// for our reader before it reads what the writer has). False once closed or over
    /// [`CONTROL_CAP`].
    pub fn push(&self, build: impl FnOnce(&mut Vec<u8>)) -> bool {
        matches!(self.try_append(&mut Some(build), CONTROL_CAP), Some(Ok(())))
    }

    /// [`OutQueue::send_with`] without waiting: Some(Ok) queued, Some(Err) closed, None
    /// full (`build` is kept).
    pub fn try_send_with(
        &self,
        build: &mut Option<impl FnOnce(&mut Vec<u8>)>,
    ) -> Option<Result<(), Closed>> {
        self.try_append(build, QUEUE_LIMIT)
    }

    /// Queues one payload (copied).
    #[cfg(test)]
    async fn send(&self, payload: &[u8]) -> Result<(), Closed> {
        self.send_with(|b| b.extend_from_slice(payload)).await
    }

    /// The writer's side: when frames are queued (or `ping` asks for an RPC_PING with that
    /// id), swaps them into `out` (empty) and returns Ready(Ok); Ready(Err) once closed;
    /// else remembers the waker.
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        ping: Option<i64>,
    ) -> Poll<Result<(), Closed>> {
        debug_assert!(out.is_empty());
        let mut guard = self.st.lock().expect("out queue");
        let st = &mut *guard;
        if st.closed {
            return Poll::Ready(Err(Closed));
        }
        if let Some(id) = ping {
            let start = st.encoder.begin(&mut st.buf);
            ops::build_ping(&mut st.buf, id);
            st.encoder.finish(&mut st.buf, start);
        }
        if st.buf.is_empty() {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut st.buf, out);
        drop(guard);
        self.room.notify_waiters();
        Poll::Ready(Ok(()))
    }

    /// The writer's side, for a batch taken and not yet encrypted: appends what was queued
    /// since when that is at most [`TAKE_MORE_MAX`] bytes (false when nothing was appended:
    /// nothing queued, too much, or the queue is closed). More waits for the next batch,
    /// which takes it without a copy.
    fn take_more(&self, out: &mut Vec<u8>) -> bool {
        let mut st = self.st.lock().expect("out queue");
        if st.closed || st.buf.is_empty() || st.buf.len() > TAKE_MORE_MAX {
            return false;
        }
        out.extend_from_slice(&st.buf);
        st.buf.clear();
        drop(st);
        self.room.notify_waiters();
        true
    }

    /// No more frames: senders (and those waiting for room) get Err, what is queued is
    /// dropped.
    pub fn close(&self) {
        {
            let mut st = self.st.lock().expect("out queue");
            st.closed = true;
            st.buf = Vec::new();
        }
        self.room.notify_waiters();
    }
}

/// One ME connection's write side, handed to a group after the handshake.
pub struct Member {
    /// For logs.
    pub id: u64,
    pub wr: OwnedWriteHalf,
    pub enc: AesCbcEncryptor,
    /// The frames its sessions (and its reader: pongs, closes) queued.
    pub queue: Arc<OutQueue>,
    /// Dead once the connection is; the group drops it at its next pass.
    pub health: Arc<Health>,
}

/// A member inside its group.
struct Slot {
    m: Member,
    /// The batch: `out[..sent]` written, `out[..encrypted]` encrypted, the rest plaintext
    /// (padded to whole blocks when taken).
    out: Vec<u8>,
    sent: usize,
    encrypted: usize,
    ping_due: bool,
    ping_id: i64,
    /// When the oldest ping not yet answered was queued.
    ping_out: Option<Instant>,
    /// The last write that moved bytes (or when there was nothing to write).
    progress: Instant,
    failed: bool,
    /// Why it failed, for the log.
    why: Option<String>,
}

impl Slot {
    fn new(m: Member) -> Slot {
        Slot {
            m,
            out: Vec::new(),
            sent: 0,
            encrypted: 0,
            ping_due: false,
            ping_id: rand::random::<i64>() & i64::MAX,
            ping_out: None,
            progress: Instant::now(),
            failed: false,
            why: None,
        }
    }

    fn fail(&mut self, why: String) {
        self.failed = true;
        self.why.get_or_insert(why);
    }

    /// At each ping tick: a ping unanswered, or bytes waiting that the ME has not read,
    /// for `dead_after` mean the ME stopped reading.
    fn check(&mut self, now: Instant, dead_after: Duration) {
        if let Some(t) = self.ping_out {
            if self.m.health.pong_since(t) {
                self.ping_out = None;
            } else if now.saturating_duration_since(t) > dead_after {
                self.fail(format!("no RPC_PONG for {dead_after:?}"));
            }
        }
        if self.idle() {
            self.progress = now;
        } else if now.saturating_duration_since(self.progress) > dead_after {
            self.fail(format!("the ME read nothing for {dead_after:?}"));
        }
    }

    fn idle(&self) -> bool {
        self.sent == self.out.len()
    }

    /// Plaintext bytes of the batch left to encrypt.
    fn to_encrypt(&self) -> usize {
        self.out.len() - self.encrypted
    }

    /// Writes what is encrypted and not yet written as far as the socket takes it.
    fn flush(&mut self, cx: &mut Context<'_>) {
        while self.sent < self.encrypted {
            match Pin::new(&mut self.m.wr).poll_write(cx, &self.out[self.sent..self.encrypted]) {
                Poll::Ready(Ok(0)) => {
                    self.fail("write returned 0".into());
                    return;
                }
                Poll::Ready(Err(e)) => {
                    self.fail(format!("write: {e}"));
                    return;
                }
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    self.progress = Instant::now();
                }
                Poll::Pending => return,
            }
        }
        if !self.idle() {
            return;
        }
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        self.out.clear();
        self.sent = 0;
        self.encrypted = 0;
    }

    /// Takes the next batch when everything before it is written: whatever the sessions
    /// queued, with an RPC_PING when one is due.
    fn take(&mut self, cx: &mut Context<'_>) -> bool {
        let ping = self.ping_due.then(|| {
            self.ping_id = self.ping_id.wrapping_add(1);
            self.ping_id
        });
        match self.m.queue.poll_take(cx, &mut self.out, ping) {
            Poll::Ready(Ok(())) => {
                if ping.is_some() {
                    self.ping_out.get_or_insert_with(Instant::now);
                }
                self.ping_due = false;
                pad_to_block(&mut self.out, 0);
                true
            }
            Poll::Ready(Err(Closed)) => {
                self.fail("its queue was closed".into());
                true
            }
            // Nothing queued (a due ping would have been).
            Poll::Pending => false,
        }
    }

    /// A batch taken and not encrypted yet takes what its sessions queued since.
    fn take_more(&mut self) {
        if self.encrypted == 0 && !self.out.is_empty() && self.m.queue.take_more(&mut self.out) {
            pad_to_block(&mut self.out, 0);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.m.queue.close();
        let why = self.why.take();
        self.m
            .health
            .kill(why.unwrap_or_else(|| "its writer dropped it".into()));
    }
}

enum Ctl {
    Join(Box<Member>),
    /// Wake up: a member is no longer alive (every pass drops those).
    Sweep,
}

/// A group's handle: how its members' readers reach it.
#[derive(Clone, Debug)]
pub struct GroupRef {
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl GroupRef {
    /// Asks the group to drop its dead members (after [`Member::health`] was killed).
    pub fn sweep(&self) {
        let _ = self.ctl.send(Ctl::Sweep);
    }
}

struct Group {
    handle: GroupRef,
    members: Arc<AtomicUsize>,
}

/// The writer tasks of the process.
pub struct Writers {
    groups: Mutex<Vec<Group>>,
    ping_interval: Duration,
    dead_after: Duration,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

impl Writers {
    /// No writer task yet; each sends an RPC_PING on every connection each `ping_interval`
    /// and declares dead a connection that leaves one unanswered (or its bytes unread)
    /// for [`super::health::dead_after`] that interval.
    pub fn new(ping_interval: Duration) -> Arc<Writers> {
        Arc::new(Writers {
            groups: Mutex::new(Vec::new()),
            ping_interval,
            dead_after: super::health::dead_after(ping_interval),
        })
    }

    /// Hands `m` to a group with room, starting a new group task when all are full.
    pub fn join(&self, m: Member) -> GroupRef {
        let mut groups = self.groups.lock().expect("groups");
        groups.retain(|g| !g.handle.ctl.is_closed());
        let g = match groups.iter().find(|g| g.members.load(Relaxed) < GROUP) {
            Some(g) => g,
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                let members = Arc::new(AtomicUsize::new(0));
                let timing = (self.ping_interval, self.dead_after);
                tokio::spawn(run(rx, members.clone(), timing));
                groups.push(Group {
                    handle: GroupRef { ctl: tx },
                    members,
                });
                groups.last().expect("pushed")
            }
        };
        g.members.fetch_add(1, Relaxed);
        let _ = g.handle.ctl.send(Ctl::Join(Box::new(m)));
        g.handle.clone()
    }
}

/// One group task: runs until every [`GroupRef`] and the [`Writers`] entry are gone.
async fn run(
    ctl: mpsc::UnboundedReceiver<Ctl>,
    count: Arc<AtomicUsize>,
    (ping, dead_after): (Duration, Duration),
) {
    let mut ctl = Some(ctl);
    let mut slots: Vec<Slot> = Vec::new();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll_fn(|cx| pass(cx, &mut ctl, &mut slots, &mut ticker, dead_after)).await;
        if ctl.is_none() && slots.is_empty() {
            return;
        }
        // Fewer batches than connections: let the sessions that are ready run first and
        // queue more, so more chains share the encryption pass (one chain alone runs at a
        // quarter of four) and the batches taken grow by what their sessions queued in
        // the meantime (fewer, larger writes in a connection storm).
        let ready = slots.iter().filter(|s| s.to_encrypt() > 0).count();
        if ready > 0 && ready < slots.len() {
            tokio::task::yield_now().await;
            poll_fn(|cx| {
                let _ = pass(cx, &mut ctl, &mut slots, &mut ticker, dead_after);
                Poll::Ready(())
            })
            .await;
        }
        let before = slots.len();
        slots.retain(|s| {
            let keep = !s.failed && s.m.health.is_alive();
            if !keep {
                let why = s.why.as_deref().unwrap_or("dead");
                debug!("ME conn {}: leaves its writer ({why})", s.m.id);
            }
            keep
        });
        count.fetch_sub(before - slots.len(), Relaxed);
        encrypt_batches(&mut slots);
    }
}

/// Encrypts the batches waiting in `slots` in one interleaved pass. The longest is cut at
/// the length of the second longest: the rest of it would run alone, at a quarter of the
/// rate of four lanes, and waits for the next pass, which may bring other batches to
/// share it (a batch that is alone is encrypted whole).
fn encrypt_batches(slots: &mut [Slot]) {
    let (mut longest, mut second) = (0, 0);
    for n in slots.iter().map(Slot::to_encrypt) {
        if n > longest {
            second = longest;
            longest = n;
        } else if n > second {
            second = n;
        }
    }
    let cap = if second == 0 { longest } else { second };
    let mut jobs: Vec<(&mut AesCbcEncryptor, &mut [u8])> = Vec::new();
    for s in slots.iter_mut().filter(|s| s.to_encrypt() > 0) {
        let (from, n) = (s.encrypted, s.to_encrypt().min(cap));
        s.encrypted += n;
        jobs.push((&mut s.m.enc, &mut s.out[from..from + n]));
    }
    rpc::encrypt_many(&mut jobs);
}

/// One poll of the group: joins and sweeps, pings due, writes, and the queue of every
/// idle member. Ready when there is encrypting or sweeping to do, or the control
/// channel closed (then `ctl` is `None`).
fn pass(
    cx: &mut Context<'_>,
    ctl: &mut Option<mpsc::UnboundedReceiver<Ctl>>,
    slots: &mut Vec<Slot>,
    ticker: &mut tokio::time::Interval,
    dead_after: Duration,
) -> Poll<()> {
    let mut work = false;
    while let Some(rx) = ctl.as_mut() {
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Ctl::Join(m))) => slots.push(Slot::new(*m)),
            Poll::Ready(Some(Ctl::Sweep)) => work = true,
            Poll::Ready(None) => {
                *ctl = None;
                work = true;
            }
            Poll::Pending => break,
        }
    }
    if ticker.poll_tick(cx).is_ready() {
        let now = Instant::now();
        for s in slots.iter_mut() {
            s.check(now, dead_after);
            s.ping_due = true;
        }
    }
    for s in slots.iter_mut() {
        s.flush(cx);
        if !s.failed {
            if s.idle() {
                work |= s.take(cx);
            } else {
                s.take_more();
            }
        }
        // Failed, or (part of) a batch to encrypt.
        if s.failed || s.to_encrypt() > 0 {
            work = true;
        }
    }
    if work {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtproto_wire::rpc::{AesCbcDecryptor, FrameDecoder};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// The ME's end of one connection: decrypts and decodes what the writer sent.
    struct Peer {
        s: TcpStream,
        dec: AesCbcDecryptor,
        frames: FrameDecoder,
        buf: Vec<u8>,
        plain: usize,
    }

    impl Peer {
        /// The next payload; `None` at EOF.
        async fn next(&mut self) -> Option<Vec<u8>> {
            loop {
                if let Some((used, r)) = self.frames.decode(&self.buf[..self.plain]).unwrap() {
                    let p = self.buf[r].to_vec();
                    self.buf.drain(..used);
                    self.plain -= used;
                    return Some(p);
                }
                let mut chunk = vec![0u8; 64 * 1024];
                let n = self.s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
                let plain = self.plain;
                self.plain += self.dec.decrypt(&mut self.buf[plain..]);
            }
        }

        /// The next payload that is not an RPC_PING.
        async fn next_data(&mut self) -> Option<Vec<u8>> {
            loop {
                let p = self.next().await?;
                if !is_ping(&p) {
                    return Some(p);
                }
            }
        }
    }

    fn is_ping(p: &[u8]) -> bool {
        let mut ping = Vec::new();
        ops::build_ping(&mut ping, 0);
        p.len() == ping.len() && p[..4] == ping[..4]
    }

    /// A connected member (its queue, its health) and the ME's end.
    async fn member(id: u64) -> (Member, Arc<OutQueue>, Arc<Health>, Peer) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = l.accept().await.unwrap();
        let key = [id as u8 + 1; 32];
        let iv = [id as u8 + 7; 16];
        let (_, wr) = ours.into_split();
        let queue = OutQueue::new(FrameEncoder::new());
        let health = Arc::new(Health::new());
        let m = Member {
            id,
            wr,
            enc: AesCbcEncryptor::new(&key, &iv),
            queue: queue.clone(),
            health: health.clone(),
        };
        let peer = Peer {
            s: theirs,
            dec: AesCbcDecryptor::new(&key, &iv),
            frames: FrameDecoder::new(),
            buf: Vec::new(),
            plain: 0,
        };
        (m, queue, health, peer)
    }

    /// A member joined to `writers`: its group, queue, health and the ME's end.
    async fn joined(writers: &Writers, id: u64) -> (GroupRef, Arc<OutQueue>, Arc<Health>, Peer) {
        let (m, queue, health, peer) = member(id).await;
        (writers.join(m), queue, health, peer)
    }

    fn payload(conn: u64, i: usize, len: usize) -> Vec<u8> {
        (0..len / 4 * 4)
            .map(|j| (conn as usize * 31 + i * 7 + j) as u8)
            .collect()
    }

    /// Polls `f` once.
    async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }

    #[tokio::test]
    async fn a_full_queue_holds_senders_until_taken_and_close_releases_them() {
        let q = OutQueue::new(FrameEncoder::new());
        let big = vec![1u8; QUEUE_LIMIT];
        q.send(&big).await.unwrap();
        let mut waiting = Box::pin(q.send(&[2u8; 8]));
        assert!(poll_once(&mut waiting).await.is_pending(), "over the limit");
        // The writer takes the queue: room again, and the frames are numbered in order.
        let mut out = Vec::new();
        assert_eq!(poll_fn(|cx| q.poll_take(cx, &mut out, None)).await, Ok(()));
        assert!(matches!(poll_once(&mut waiting).await, Poll::Ready(Ok(()))));
        let mut taken = Vec::new();
        assert_eq!(
            poll_fn(|cx| q.poll_take(cx, &mut taken, Some(5))).await,
            Ok(())
        );
        out.extend_from_slice(&taken);
        let mut dec = FrameDecoder::new();
        let mut at = 0;
        for want in [&big[..], &[2u8; 8][..]] {
            let (used, r) = dec.decode(&out[at..]).unwrap().unwrap();
            assert_eq!(&out[at..][r], want);
            at += used;
        }
        let (used, r) = dec.decode(&out[at..]).unwrap().unwrap();
        assert!(is_ping(&out[at..][r]), "the ping asked for at the take");
        assert_eq!(at + used, out.len());
        // Full again; closing releases the waiting sender with an error.
        q.send(&big).await.unwrap();
        let mut waiting = Box::pin(q.send(&[3u8; 8]));
        assert!(poll_once(&mut waiting).await.is_pending());
        // A control frame from the reader goes in at once, over the limit.
        assert!(q.push(|b| ops::build_pong(b, 9)));
        q.close();
        assert!(matches!(
            poll_once(&mut waiting).await,
            Poll::Ready(Err(Closed))
        ));
        assert!(q.send(&[4u8; 8]).await.is_err());
        assert!(!q.push(|b| ops::build_pong(b, 10)));
    }

    #[tokio::test]
    async fn a_batch_not_yet_encrypted_takes_what_was_queued_since() {
        let (m, q, _, mut peer) = member(1).await;
        let mut slot = Slot::new(m);
        let (a, b, c) = (payload(1, 0, 20), payload(1, 1, 36), payload(1, 2, 8));
        let big = payload(1, 3, TAKE_MORE_MAX + 4);
        async fn write_all(slot: &mut Slot) {
            encrypt_batches(std::slice::from_mut(slot));
            poll_fn(|cx| {
                slot.flush(cx);
                Poll::Ready(())
            })
            .await;
            assert!(slot.idle(), "all written");
        }
        q.send(&a).await.unwrap();
        assert!(poll_fn(|cx| Poll::Ready(slot.take(cx))).await);
        let first = slot.out.len();
        q.send(&b).await.unwrap();
        slot.take_more();
        assert!(slot.out.len() > first, "the batch grew");
        assert_eq!(slot.out.len() % 16, 0, "whole blocks again");
        // Once encryption has started the batch is closed: the next frame waits in the
        // queue for the next batch.
        encrypt_batches(std::slice::from_mut(&mut slot));
        let started = slot.out.len();
        q.send(&c).await.unwrap();
        slot.take_more();
        assert_eq!(slot.out.len(), started);
        write_all(&mut slot).await;
        assert!(poll_fn(|cx| Poll::Ready(slot.take(cx))).await);
        // Bulk is left for the next batch (swapped in then, not copied now).
        let taken = slot.out.len();
        q.send(&big).await.unwrap();
        slot.take_more();
        assert_eq!(slot.out.len(), taken, "the big frame was not copied in");
        write_all(&mut slot).await;
        assert!(poll_fn(|cx| Poll::Ready(slot.take(cx))).await);
        write_all(&mut slot).await;
        for want in [&a, &b, &c, &big] {
            assert_eq!(&peer.next().await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn the_longest_batch_waits_for_company_and_its_chain_carries_on() {
        let mut slots = Vec::new();
        for (id, blocks) in [(1u64, 300usize), (2, 100), (3, 0)] {
            let (m, _, _, _) = member(id).await;
            let mut slot = Slot::new(m);
            slot.out = payload(id, 0, blocks * 16);
            slots.push(slot);
        }
        let want: Vec<Vec<u8>> = slots
            .iter()
            .map(|s| {
                let id = s.m.id as u8;
                let mut b = s.out.clone();
                AesCbcEncryptor::new(&[id + 1; 32], &[id + 7; 16]).encrypt(&mut b);
                b
            })
            .collect();
        encrypt_batches(&mut slots);
        let done: Vec<usize> = slots.iter().map(|s| s.encrypted).collect();
        assert_eq!(done, [1600, 1600, 0], "cut at the second longest");
        encrypt_batches(&mut slots);
        let done: Vec<usize> = slots.iter().map(|s| s.encrypted).collect();
        assert_eq!(done, [4800, 1600, 0], "alone: the rest at once");
        for (s, w) in slots.iter().zip(&want) {
            assert_eq!(&s.out, w, "conn {}: one chain across both passes", s.m.id);
        }
    }

    #[tokio::test]
    async fn each_me_gets_its_own_payloads_in_order_and_pings() {
        let writers = Writers::new(Duration::from_millis(20));
        let mut peers = Vec::new();
        let mut txs = Vec::new();
        // More connections than one group holds: two groups, both serving.
        for id in 0..GROUP as u64 + 3 {
            let (m, tx, _, peer) = member(id).await;
            writers.join(m);
            peers.push(peer);
            txs.push(tx);
        }
        assert_eq!(writers.groups.lock().unwrap().len(), 2);
        let lens = [16usize, 100, 4096, 70_000, 300_000, 12];
        let senders: Vec<_> = txs
            .into_iter()
            .enumerate()
            .map(|(c, tx)| {
                tokio::spawn(async move {
                    for (i, len) in lens.iter().enumerate() {
                        tx.send(&payload(c as u64, i, *len)).await.unwrap();
                    }
                    tx
                })
            })
            .collect();
        for (c, peer) in peers.iter_mut().enumerate() {
            for (i, len) in lens.iter().enumerate() {
                let got = peer.next_data().await.expect("payload");
                assert_eq!(got, payload(c as u64, i, *len), "conn {c} payload {i}");
            }
            // An idle connection gets RPC_PING from its writer.
            let p = peer.next().await.expect("ping");
            assert!(is_ping(&p), "conn {c}: {:02x?}", &p[..4.min(p.len())]);
        }
        for s in senders {
            s.await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_me_that_does_not_read_holds_up_only_its_own_connection() {
        let writers = Writers::new(Duration::from_secs(3600));
        let (_, stuck_tx, _, _stuck_peer) = joined(&writers, 1).await;
        let (_, ok_tx, _, mut ok_peer) = joined(&writers, 2).await;
        // 50 MiB, far more than the socket buffers and the queue hold: the stuck
        // connection's writes block, then its queue fills and its senders wait.
        let flood = tokio::spawn(async move {
            for i in 0..200 {
                stuck_tx.send(&payload(1, i, 256 * 1024)).await.unwrap();
            }
        });
        for i in 0..50 {
            ok_tx.send(&payload(2, i, 100_000)).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(20), ok_peer.next_data())
                .await
                .expect("the other connection is held up");
            assert_eq!(got.expect("payload"), payload(2, i, 100_000));
        }
        assert!(!flood.is_finished(), "the stuck connection took 50 MiB");
        flood.abort();
    }

    #[tokio::test]
    async fn a_dead_connection_leaves_its_group_and_its_socket_closes() {
        let writers = Writers::new(Duration::from_secs(3600));
        let (group, a_tx, a_health, mut a_peer) = joined(&writers, 1).await;
        let (_, b_tx, _, mut b_peer) = joined(&writers, 2).await;
        a_tx.send(&payload(1, 0, 40)).await.unwrap();
        assert_eq!(a_peer.next_data().await.unwrap(), payload(1, 0, 40));
        a_health.kill("the reader ended");
        group.sweep();
        assert!(a_peer.next().await.is_none(), "the ME sees the close");
        // Its queue is gone: sessions still holding the sender learn it.
        assert!(a_tx.send(&payload(1, 1, 40)).await.is_err());
        // The group still serves the other connection and has room again.
        b_tx.send(&payload(2, 0, 40)).await.unwrap();
        assert_eq!(b_peer.next_data().await.unwrap(), payload(2, 0, 40));
        let groups = writers.groups.lock().unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].members.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failed_write_drops_only_that_connection() {
        let writers = Writers::new(Duration::from_secs(3600));
        let (_, a_tx, _, a_peer) = joined(&writers, 1).await;
        let (_, b_tx, _, mut b_peer) = joined(&writers, 2).await;
        // The ME resets the connection; writes to it fail.
        socket2::SockRef::from(&a_peer.s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(a_peer);
        let mut dropped = false;
        for i in 0..1000 {
            let sent = tokio::time::timeout(
                Duration::from_secs(20),
                a_tx.send(&payload(1, i, 64 * 1024)),
            )
            .await
            .expect("the queue of a failed connection stays full");
            if sent.is_err() {
                dropped = true;
                break;
            }
        }
        assert!(dropped, "the writer kept a connection whose writes fail");
        b_tx.send(&payload(2, 0, 40)).await.unwrap();
        assert_eq!(b_peer.next_data().await.unwrap(), payload(2, 0, 40));
    }

    /// An ME that reads but never answers our pings is declared dead after
    /// `dead_after`; one that answers stays up.
    #[tokio::test]
    async fn an_me_that_answers_no_ping_is_declared_dead() {
        let writers = Writers::new(Duration::from_millis(100));
        let (_, _, mute, mut mute_peer) = joined(&writers, 1).await;
        let (_, _, answering, mut answering_peer) = joined(&writers, 2).await;
        // Both MEs read everything; only the second answers (its reader sees each pong).
        tokio::spawn(async move { while mute_peer.next().await.is_some() {} });
        let h = answering.clone();
        tokio::spawn(async move {
            while let Some(p) = answering_peer.next().await {
                if is_ping(&p) {
                    h.pong();
                }
            }
        });
        let why = tokio::time::timeout(Duration::from_secs(20), mute.died())
            .await
            .expect("a mute ME was never declared dead");
        assert!(why.contains("RPC_PONG"), "{why}");
        assert!(answering.is_alive());
    }

    /// The reader's control frames stop at the cap: the ME is not reading them.
    #[test]
    fn control_frames_stop_at_the_cap() {
        let q = OutQueue::new(FrameEncoder::new());
        let mut pushed = 0;
        while q.push(|b| ops::build_pong(b, 1)) {
            pushed += 1;
            assert!(pushed <= CONTROL_CAP / 24 + 1, "no cap");
        }
        assert!(pushed >= CONTROL_CAP / 24 - 1);
    }
}
