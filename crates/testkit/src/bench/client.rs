//! The load generator's side of a connection: leaner than [`crate::Client`] and split in two
//! halves that run concurrently, so one connection can stream both ways at once.
//!
//! - [`Writer`] encrypts already framed obfuscated2 stream bytes (a template built once by
//!   [`frames`]) into a buffer it keeps, wraps them in TLS records in fake-TLS mode, and
//!   writes: one copy and one AES pass per byte, no allocation after the first call.
//! - [`Reader`] reads into a buffer that grows with the traffic (4 KiB for idle sessions,
//!   up to 256 KiB for streams), strips TLS records, and, when asked to, decrypts and walks
//!   the frame lengths ([`Walker`]) so garbage is noticed and round trips can wait for one
//!   whole frame.
//!
//! The obfuscated2 header and the fake-TLS hello come from `mtproto_wire` and
//! [`crate::tls_client`], as for the reference client; the header is redrawn until a TDLib
//! client would send it, and inside fake TLS it goes with the first bytes, as TDLib does.

use std::io;
use std::net::SocketAddr;

use mtproto_wire::crypto::AesCtr;
use mtproto_wire::obfs2::{self, Tag, HEADER_LEN};
use mtproto_wire::tls::record::TDLIB_RECORD_PAYLOAD;
use mtproto_wire::tls::{RecordReader, APP_DATA_PREFIX, CHANGE_CIPHER_SPEC};
use mtproto_wire::transport::{encode_prefix, MAX_FRAME};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::tls_client::{self, TlsOpts};

/// How to speak to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proto {
    /// obfuscated2, intermediate transport, with a secret or without (as towards a DC).
    Obfs2 { secret: Option<[u8; 16]> },
    /// Fake TLS with SNI `domain`, padded intermediate inside (as TDLib).
    Tls { secret: [u8; 16], domain: String },
}

/// Where to connect and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub proto: Proto,
}

impl Endpoint {
    /// The transport inside.
    pub fn tag(&self) -> Tag {
        match self.proto {
            Proto::Obfs2 { .. } => Tag::Intermediate,
            Proto::Tls { .. } => Tag::Padded,
        }
    }
}

/// `count` frames of `payload` bytes each (a multiple of 4, at least 56), plaintext: what
/// an MTProto client sends for encrypted messages (non-zero auth_key_id, random bytes).
pub fn frames(tag: Tag, payload: usize, count: usize) -> Vec<u8> {
    let payload = payload.clamp(56, MAX_FRAME - 16) & !3;
    let mut out = Vec::with_capacity((payload + 4) * count);
    let mut rng = rand::thread_rng();
    for _ in 0..count.max(1) {
        let mut prefix = [0u8; 4];
        let n = encode_prefix(tag, payload, 0, false, &mut prefix);
        out.extend_from_slice(&prefix[..n]);
        let start = out.len();
        out.resize(start + payload, 0);
        rng.fill_bytes(&mut out[start..]);
        out[start] |= 1;
    }
    out
}

/// Counts frames in a decrypted server-to-client stream (intermediate or padded
/// intermediate: 4-byte little-endian lengths; a length with the top bit set is a bare
/// quick-ack token).
#[derive(Debug, Default)]
pub struct Walker {
    prefix: [u8; 4],
    have: usize,
    remaining: usize,
    /// Whole frames seen.
    pub frames: u64,
    /// Lengths that cannot be a frame (zero or over the transport limit): garbage.
    pub bad: u64,
}

impl Walker {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = self.remaining.min(data.len());
                self.remaining -= k;
                data = &data[k..];
                if self.remaining == 0 {
                    self.frames += 1;
                }
                continue;
            }
            let k = (4 - self.have).min(data.len());
            self.prefix[self.have..self.have + k].copy_from_slice(&data[..k]);
            self.have += k;
            data = &data[k..];
            if self.have == 4 {
                self.have = 0;
                let v = u32::from_le_bytes(self.prefix);
                if v & 0x8000_0000 != 0 {
                    continue; // quick-ack token
                }
                let len = v as usize;
                if len == 0 || len > MAX_FRAME {
                    self.bad += 1;
                    // Resynchronising is impossible; keep counting bytes only.
                    self.remaining = usize::MAX;
                } else {
                    self.remaining = len;
                }
            }
        }
    }
}

struct TlsSend {
    pending_ccs: bool,
    pending_header: Option<[u8; HEADER_LEN]>,
    record_max: usize,
}

/// The sending half.
pub struct Writer {
    wr: OwnedWriteHalf,
    enc: AesCtr,
    tls: Option<TlsSend>,
    out: Vec<u8>,
}

impl Writer {
    /// Encrypts `plain` (framed obfuscated2 stream bytes) and writes it; in fake TLS in
    /// records of TDLib's size, after the ChangeCipherSpec and header held back so far.
    pub async fn send(&mut self, plain: &[u8]) -> io::Result<()> {
        self.out.clear();
        match &mut self.tls {
            None => {
                self.out.extend_from_slice(plain);
                self.enc.apply(&mut self.out);
            }
            Some(t) => {
                if std::mem::take(&mut t.pending_ccs) {
                    self.out.extend_from_slice(&CHANGE_CIPHER_SPEC);
                }
                let mut header = t.pending_header.take();
                let mut rest = plain;
                while !rest.is_empty() || header.is_some() {
                    let h = header.take();
                    let hl = h.map_or(0, |h| h.len());
                    let k = rest.len().min(t.record_max.saturating_sub(hl).max(1));
                    self.out.extend_from_slice(&APP_DATA_PREFIX);
                    self.out.extend_from_slice(&((hl + k) as u16).to_be_bytes());
                    if let Some(h) = h {
                        self.out.extend_from_slice(&h);
                    }
                    let start = self.out.len();
                    self.out.extend_from_slice(&rest[..k]);
                    self.enc.apply(&mut self.out[start..]);
                    rest = &rest[k..];
                }
            }
        }
        self.wr.write_all(&self.out).await
    }

    /// No more bytes to the server.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.wr.shutdown().await
    }
}

/// Largest read buffer a stream grows to.
const MAX_READ: usize = 256 * 1024;

/// The receiving half.
pub struct Reader {
    rd: OwnedReadHalf,
    dec: AesCtr,
    records: Option<RecordReader>,
    /// Fake TLS: bytes that came with the ServerHello.
    early: Vec<u8>,
    raw: Vec<u8>,
    plain: Vec<u8>,
    /// Decrypt and walk frames (off: count bytes only).
    pub check: bool,
    pub walker: Walker,
}

impl Reader {
    /// One read. `Some(n)`: `n` obfuscated2 stream bytes arrived (0 is possible in fake TLS
    /// when only record headers came); `None`: the server closed.
    pub async fn read_some(&mut self) -> io::Result<Option<usize>> {
        let n = if !self.early.is_empty() {
            let e = std::mem::take(&mut self.early);
            let n = e.len();
            if self.raw.len() < n {
                self.raw.resize(n, 0);
            }
            self.raw[..n].copy_from_slice(&e);
            n
        } else {
            let n = self.rd.read(&mut self.raw).await?;
            if n == 0 {
                return Ok(None);
            }
            if n == self.raw.len() && self.raw.len() < MAX_READ {
                let len = (self.raw.len() * 4).min(MAX_READ);
                self.raw.resize(len, 0);
            }
            n
        };
        let data: &mut [u8] = match &mut self.records {
            None => &mut self.raw[..n],
            Some(r) => {
                self.plain.clear();
                r.feed(&self.raw[..n], &mut self.plain)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                &mut self.plain
            }
        };
        if self.check {
            self.dec.apply(data);
            self.walker.feed(data);
        }
        Ok(Some(data.len()))
    }

    /// Reads until one more whole frame has arrived (needs `check`).
    pub async fn recv_frame(&mut self) -> io::Result<()> {
        self.recv_frames(1).await
    }

    /// Reads until `n` more whole frames have arrived (needs `check`).
    pub async fn recv_frames(&mut self, n: u64) -> io::Result<()> {
        let want = self.walker.frames + n;
        while self.walker.frames < want {
            if self.walker.bad > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the server sent a frame length that cannot be",
                ));
            }
            if self.read_some().await?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed before a whole frame",
                ));
            }
        }
        Ok(())
    }
}

/// 64 random bytes whose header a TDLib client would send.
fn acceptable_random() -> [u8; HEADER_LEN] {
    let mut rng = rand::thread_rng();
    let mut r = [0u8; HEADER_LEN];
    loop {
        rng.fill_bytes(&mut r);
        if obfs2::is_acceptable_header(&r) {
            return r;
        }
    }
}

/// Connects and does the handshake (the fake-TLS reply is checked); in plain obfuscated2
/// the header is sent now, in fake TLS with the first [`Writer::send`].
pub async fn connect(ep: &Endpoint) -> io::Result<(Reader, Writer)> {
    if !ep.addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the bench only connects to loopback, not {}", ep.addr),
        ));
    }
    let stream = TcpStream::connect(ep.addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (init, records, early, tls) = match &ep.proto {
        Proto::Obfs2 { secret } => {
            let init = obfs2::initiate(acceptable_random(), Tag::Intermediate, 2, secret.as_ref());
            wr.write_all(&init.header).await?;
            (init, None, Vec::new(), None)
        }
        Proto::Tls { secret, domain } => {
            let opts = TlsOpts::new(Some(domain.clone()));
            let hello = tls_client::build_hello(secret, &opts);
            wr.write_all(&hello).await?;
            let reply = tls_client::read_server_hello(&mut rd, secret, &hello).await?;
            let mut random = [0u8; HEADER_LEN];
            rand::thread_rng().fill_bytes(&mut random);
            let init = obfs2::initiate(random, Tag::Padded, 2, Some(secret));
            let tls = TlsSend {
                pending_ccs: true,
                pending_header: Some(init.header),
                record_max: TDLIB_RECORD_PAYLOAD,
            };
            (
                init,
                Some(tls_client::server_record_reader()),
                reply.extra,
                Some(tls),
            )
        }
    };
    let reader = Reader {
        rd,
        dec: init.decrypt,
        records,
        early,
        raw: vec![0u8; 4096],
        plain: Vec::new(),
        check: true,
        walker: Walker::default(),
    };
    let writer = Writer {
        wr,
        enc: init.encrypt,
        tls,
        out: Vec::new(),
    };
    Ok((reader, writer))
}

/// One round trip: `frame` out, one whole frame back; the time it took.
pub async fn round_trip(
    r: &mut Reader,
    w: &mut Writer,
    frame: &[u8],
) -> io::Result<std::time::Duration> {
    round_trip_frames(r, w, frame, 1).await
}

/// `frames` (framed stream bytes, `n` frames) out in one write, `n` whole frames back; the
/// time until the last one arrived.
pub async fn round_trip_frames(
    r: &mut Reader,
    w: &mut Writer,
    frames: &[u8],
    n: usize,
) -> io::Result<std::time::Duration> {
    let t0 = std::time::Instant::now();
    w.send(frames).await?;
    r.recv_frames(n as u64).await?;
    Ok(t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walker_counts_frames_across_any_split() {
        let stream = frames(Tag::Intermediate, 100, 5);
        for cut in [1usize, 3, 4, 7, 104, 105] {
            let mut w = Walker::default();
            for piece in stream.chunks(cut) {
                w.feed(piece);
            }
            assert_eq!((w.frames, w.bad), (5, 0), "pieces of {cut}");
        }
        let mut w = Walker::default();
        w.feed(&[0, 0, 0, 0]);
        assert_eq!(w.bad, 1);
    }

    #[test]
    fn frames_look_like_encrypted_mtproto() {
        let f = frames(Tag::Padded, 130, 2);
        assert_eq!(f.len(), 2 * (4 + 128));
        assert_eq!(u32::from_le_bytes([f[0], f[1], f[2], f[3]]), 128);
        assert_eq!(f[4] & 1, 1);
    }
}
