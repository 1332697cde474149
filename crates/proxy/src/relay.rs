//! Moving bytes both ways between a client and its upstream once the handshakes are done.
//!
//! One task per session drives both directions (no extra spawn, no channel): each direction
//! reads into its own buffer, transforms the bytes in place (AES-CTR decrypt with the
//! client's key, encrypt with the upstream's key) and writes them out before reading again,
//! which is the back-pressure: a slow reader stalls its writer and nothing queues up.
//! A direction whose transform is `None` copies bytes untouched: direct mode's download
//! direction is arranged so (see `direct.rs`, "fast mode").
//!
//! End of stream on one side is passed on as a write shutdown (half-close) and the other
//! direction keeps running; the session ends when both directions have ended, on the first
//! error, or after `idle` without a byte in either direction.
//!
//! Buffers come from a per-thread pool while a direction has data to read and go back when
//! its socket would block, so an idle session holds no relay buffers and a busy one does
//! not allocate per packet.

use crate::bufpool;
use mtproto_wire::crypto::AesCtr;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::ReadHalf;
use tokio::time::Instant;

/// A reader that can say "data is waiting" without being handed a buffer, so a relay
/// direction allocates its buffer only once there is something to read.
pub trait PollReadReady: AsyncRead + Unpin {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether the peer has closed its sending side or the connection is gone, without
    /// reading (data may still be waiting before the end). For a session that cannot read
    /// right now (it waits for room upstream) but must not outlive its client.
    fn peer_closed(&self) -> bool {
        false
    }
}

impl PollReadReady for ReadHalf<'_> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }

    fn peer_closed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.as_ref().as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket this half borrows (open for the call);
        // a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// Bytes already taken from a socket and not yet handed to the reader's user:
/// `buf[pos..]`. Both readers that hold such bytes (the fake-TLS record reader's decoded
/// payload, [`Prefixed`]'s rest) hand them out through it.
#[derive(Debug, Default)]
pub struct Pending {
    pub buf: Vec<u8>,
    pos: usize,
}

impl Pending {
    pub fn new(buf: Vec<u8>) -> Self {
        Pending { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Copies as much as `out` takes. Once all is handed out the buffer is freed: an idle
    /// session keeps none.
    pub fn give(&mut self, out: &mut ReadBuf<'_>) {
        let n = (self.buf.len() - self.pos).min(out.remaining());
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.is_empty() {
            *self = Pending::default();
        }
    }
}

/// A client reader that first gives back the bytes read along with the obfuscated2 header
/// (a client that sends its header and first packet together gets one read, not two), then
/// reads the socket.
pub struct Prefixed<R> {
    /// Read and not yet handed out; `None` once handed out (and usually from the start).
    /// Boxed: a thin pointer keeps the reader small, and every session future that holds
    /// the reader carries its size for the connection's life.
    rest: Option<Box<Pending>>,
    inner: R,
}

impl<R> Prefixed<R> {
    pub fn new(rest: Vec<u8>, inner: R) -> Self {
        Prefixed {
            rest: (!rest.is_empty()).then(|| Box::new(Pending::new(rest))),
            inner,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(rest) = this.rest.as_mut().filter(|_| buf.remaining() > 0) else {
            return std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        rest.give(buf);
        if rest.is_empty() {
            this.rest = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<R: PollReadReady> PollReadReady for Prefixed<R> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rest.is_some() {
            Poll::Ready(Ok(()))
        } else {
            self.inner.poll_read_ready(cx)
        }
    }

    fn peer_closed(&self) -> bool {
        self.inner.peer_closed()
    }
}

/// The in-place transform of one direction: decrypt with the reader's stream, then
/// encrypt with the writer's.
pub struct Transform {
    pub decrypt: Option<AesCtr>,
    pub encrypt: Option<AesCtr>,
}

impl Transform {
    /// Bytes pass untouched.
    pub fn none() -> Self {
        Transform {
            decrypt: None,
            encrypt: None,
        }
    }

    #[inline]
    fn apply(&mut self, buf: &mut [u8]) {
        if let Some(d) = self.decrypt.as_mut() {
            d.apply(buf);
        }
        if let Some(e) = self.encrypt.as_mut() {
            e.apply(buf);
        }
    }
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their sending direction.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// A socket error (reset, broken pipe...).
    Error(io::ErrorKind),
}

/// Totals of a finished session.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    pub up: u64,
    pub down: u64,
}

/// The two halves of one side of a session.
pub struct Halves<R, W> {
    pub read: R,
    pub write: W,
}

/// Relays until the session ends.
pub async fn relay<CR, CW, UR, UW>(
    client: Halves<CR, CW>,
    upstream: Halves<UR, UW>,
    up: Transform,
    down: Transform,
    idle: Duration,
    counters: (&AtomicU64, &AtomicU64),
) -> Outcome
where
    CR: PollReadReady,
    CW: AsyncWrite + Unpin,
    UR: PollReadReady,
    UW: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = (client.read, client.write);
    let (ur, uw) = (upstream.read, upstream.write);
    let up_f = pump(cr, uw, up, &last, start, counters.0);
    let down_f = pump(ur, cw, down, &last, start, counters.1);
    tokio::pin!(up_f, down_f);
    let (mut up_res, mut down_res) = (None, None);
    let end = loop {
        let since = Duration::from_millis(last.load(Relaxed));
        let idle_at = start + since + idle;
        tokio::select! {
            r = &mut up_f, if up_res.is_none() => up_res = Some(r),
            r = &mut down_f, if down_res.is_none() => down_res = Some(r),
            _ = tokio::time::sleep_until(idle_at) => {
                let since_now = Duration::from_millis(last.load(Relaxed));
                if start + since_now + idle <= Instant::now() {
                    break End::Idle;
                }
                continue;
            }
        }
        match (&up_res, &down_res) {
            (Some(Err(e)), _) | (_, Some(Err(e))) => break End::Error(e.kind()),
            (Some(Ok(_)), Some(Ok(_))) => break End::Closed,
            _ => {}
        }
    };
    let total = |r: &Option<io::Result<u64>>| r.as_ref().and_then(|r| r.as_ref().ok()).copied();
    Outcome {
        end,
        up: total(&up_res).unwrap_or(0),
        down: total(&down_res).unwrap_or(0),
    }
}

async fn pump(
    mut r: impl PollReadReady,
    mut w: impl AsyncWrite + Unpin,
    mut t: Transform,
    last: &AtomicU64,
    start: Instant,
    counter: &AtomicU64,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        // No buffer while waiting: an idle direction holds no memory.
        std::future::poll_fn(|cx| r.poll_read_ready(cx)).await?;
        let mut buf = bufpool::take();
        let res = burst(
            &mut r, &mut w, &mut t, &mut buf, last, start, counter, &mut total,
        )
        .await;
        bufpool::give(buf);
        match res {
            Ok(true) => {}
            Ok(false) => {
                let _ = w.shutdown().await;
                return Ok(total);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads and forwards until the reader would block (Ok(true)) or ends (Ok(false)).
#[allow(clippy::too_many_arguments)]
async fn burst(
    r: &mut impl PollReadReady,
    w: &mut (impl AsyncWrite + Unpin),
    t: &mut Transform,
    buf: &mut [u8],
    last: &AtomicU64,
    start: Instant,
    counter: &AtomicU64,
    total: &mut u64,
) -> io::Result<bool> {
    loop {
        // One read attempt without waiting: Pending means the burst is over.
        let attempt = std::future::poll_fn(|cx| {
            let mut rb = tokio::io::ReadBuf::new(buf);
            match std::pin::Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(res) => Poll::Ready(Some(res.map(|()| rb.filled().len()))),
            }
        })
        .await;
        let n = match attempt {
            None => return Ok(true),
            Some(res) => res?,
        };
        if n == 0 {
            return Ok(false);
        }
        t.apply(&mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        // A no-op on a socket; pushes out what a record-layer writer buffered.
        w.flush().await?;
        *total += n as u64;
        counter.fetch_add(n as u64, Relaxed);
        last.store(start.elapsed().as_millis() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A socket stand-in: `data` is readable once `open`, and until then nothing is.
    struct Socket {
        data: Vec<u8>,
        open: bool,
    }

    impl AsyncRead for Socket {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.open {
                return Poll::Pending;
            }
            let n = self.data.len().min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl PollReadReady for Socket {
        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.open {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    async fn ready(p: &Prefixed<Socket>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(p.poll_read_ready(cx)))
            .await
            .is_ready()
    }

    async fn read_now(p: &mut Prefixed<Socket>, buf: &mut [u8]) -> Option<usize> {
        let mut rb = ReadBuf::new(buf);
        let r = std::future::poll_fn(|cx| {
            Poll::Ready(std::pin::Pin::new(&mut *p).poll_read(cx, &mut rb))
        })
        .await;
        match r {
            Poll::Ready(Ok(())) => Some(rb.filled().len()),
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn prefixed_gives_the_rest_first_then_the_socket() {
        let socket = Socket {
            data: b"ghij".to_vec(),
            open: false,
        };
        let mut p = Prefixed::new(b"abcdef".to_vec(), socket);
        assert!(
            ready(&p).await,
            "the rest is waiting, the socket has nothing"
        );
        let mut four = [0u8; 4];
        assert_eq!(read_now(&mut p, &mut four).await, Some(4));
        assert_eq!(&four, b"abcd");
        assert_eq!(
            read_now(&mut p, &mut four).await,
            Some(2),
            "the rest, not more"
        );
        assert_eq!(&four[..2], b"ef");
        assert!(p.rest.is_none(), "freed once handed out");
        // Then the socket's own readiness and bytes.
        assert!(!ready(&p).await);
        assert_eq!(read_now(&mut p, &mut four).await, None);
        p.inner.open = true;
        assert!(ready(&p).await);
        let mut got = [0u8; 4];
        p.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ghij");
    }
}
