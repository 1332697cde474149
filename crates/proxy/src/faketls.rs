//! Fake TLS (`-D domain`, `ee` secrets) on the proxy side: the handshake that makes a
//! connection look like TLS 1.3 to the real site, the record layer that carries the
//! obfuscated2 stream afterwards, and the configuration both need (spec client.md §5).
//!
//! The checks themselves are sans-I/O in `mtproto_wire::tls`; this module does the reading
//! and writing around them. What happens to a connection that fails a check is `mask.rs`.
//!
//! [`TlsReader`] / [`TlsWriter`] wrap the two halves of the client socket so the direct and
//! middle-proxy sessions run unchanged over TLS records.

use crate::relay::{Pending, PollReadReady};
use mtproto_wire::tls::{
    RecordReader, RecordSizer, ReplayCache, SiteProfile, SniPolicy, MAX_RECORD_PAYLOAD,
};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where connections that fail the checks are spliced to.
#[derive(Debug, Clone)]
pub struct MaskTargets {
    /// `--mask-host`: every masked connection goes here.
    pub explicit: Option<Vec<SocketAddr>>,
    /// Per `-D` domain (same order): the domain's addresses, port 443 (or 80, see
    /// [`MaskTargets::for_domain`]). Empty when the name did not resolve at start-up: such
    /// connections are closed instead, as C does.
    pub domains: Vec<Vec<std::net::IpAddr>>,
}

impl MaskTargets {
    /// Addresses for domain `index`; the client came in on `local_port` (80 → port 80).
    pub fn for_domain(&self, index: usize, local_port: u16) -> Vec<SocketAddr> {
        if let Some(e) = &self.explicit {
            return e.clone();
        }
        let port = if local_port == 80 { 80 } else { 443 };
        self.domains.get(index).map_or_else(Vec::new, |ips| {
            ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
        })
    }
}

/// Everything fake-TLS sessions share.
#[derive(Debug)]
pub struct TlsConf {
    /// `-D` domains; the first is the default.
    pub domains: Vec<String>,
    pub policy: SniPolicy,
    pub cache: Mutex<ReplayCache>,
    /// How the real site answers (refreshed by the probe task).
    pub profile: RwLock<Arc<SiteProfile>>,
    pub mask: MaskTargets,
    /// How long the records we send are: dynamic unless `--tls-fixed-records`.
    pub records: RecordSizer,
    /// `--tls-split-hello`: the reply goes out in several TCP segments.
    pub split_hello: bool,
}

impl TlsConf {
    /// The profile to answer with right now.
    pub fn profile(&self) -> Arc<SiteProfile> {
        self.profile.read().expect("profile").clone()
    }
}

/// Reads the obfuscated2 stream out of TLS application-data records.
///
/// The state is boxed (here and in [`TlsWriter`]): the reader is moved down through the
/// session's futures (route, serve, relay, pump), and Rust keeps a copy of a future's
/// arguments in each of them for its whole life; boxed, each copy is one pointer.
pub struct TlsReader<R> {
    inner: R,
    st: Box<ReadState>,
}

struct ReadState {
    records: RecordReader,
    /// Decoded payload not yet handed out.
    pending: Pending,
}

impl<R> TlsReader<R> {
    /// `records` continues the stream the handshake started; `pending` is payload already
    /// decoded (what followed the obfuscated2 header in the first records).
    pub fn new(inner: R, records: RecordReader, pending: Vec<u8>) -> Self {
        TlsReader {
            inner,
            st: Box::new(ReadState {
                records,
                pending: Pending::new(pending),
            }),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for TlsReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let st = &mut *this.st;
        loop {
            if !st.pending.is_empty() {
                st.pending.give(buf);
                return Poll::Ready(Ok(()));
            }
            // The raw buffer is borrowed from the pool for this read only.
            let mut raw = crate::bufpool::take();
            let mut rb = ReadBuf::new(&mut raw);
            let res = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            let fed = match res {
                Poll::Ready(Ok(())) if n > 0 => st.records.feed(&raw[..n], &mut st.pending.buf),
                _ => Ok(()),
            };
            crate::bufpool::give(raw);
            match res {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // EOF: a record cut in the middle is the peer's problem; end of stream.
                Poll::Ready(Ok(())) if n == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if let Err(e) = fed {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e.to_string(),
                        )));
                    }
                    // Only record headers so far: read again rather than report EOF.
                }
            }
        }
    }
}

impl<R: PollReadReady> PollReadReady for TlsReader<R> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.st.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_read_ready(cx)
    }

    fn peer_closed(&self) -> bool {
        self.inner.peer_closed()
    }
}

/// Wraps what the session writes in application-data records sized by a [`RecordSizer`]
/// (dynamic record sizing unless `--tls-fixed-records`).
pub struct TlsWriter<W> {
    inner: W,
    st: Box<WriteState>,
}

struct WriteState {
    sizer: RecordSizer,
    out: Vec<u8>,
    sent: usize,
}

impl<W> TlsWriter<W> {
    pub fn new(inner: W, sizer: RecordSizer) -> Self {
        TlsWriter {
            inner,
            st: Box::new(WriteState {
                sizer,
                out: Vec::new(),
                sent: 0,
            }),
        }
    }
}

/// Milliseconds since the first call (the record sizer's clock).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl<W: AsyncWrite + Unpin> TlsWriter<W> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let st = &mut *self.st;
        while st.sent < st.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &st.out[st.sent..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => st.sent += n,
            }
        }
        // Idle sessions keep no record buffer.
        st.out = Vec::new();
        st.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for TlsWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|_| 0)),
        }
        // Accept up to four full records' worth (64 KiB) per call, cut as the sizer says;
        // they are written out by the next drain (poll_write or poll_flush).
        let take = buf.len().min(4 * MAX_RECORD_PAYLOAD);
        let st = &mut *this.st;
        st.sizer.write_records(&buf[..take], now_ms(), &mut st.out);
        let _ = this.poll_drain(cx);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}
