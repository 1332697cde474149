//! One half of an obfuscated2 stream after the header, for async I/O: [`FrameReader`]
//! decrypts what arrives and cuts it into transport frames, [`FrameWriter`] frames and
//! encrypts what leaves. The reference client and the fake DC (`mtproxy-fakes`) both sit
//! on these.
//!
//! In fake-TLS mode (the reference client with an `ee` secret) the same stream travels in
//! `17 03 03` records: the reader strips them with the wire [`RecordReader`] before
//! decrypting, the writer wraps what it encrypted (see [`TlsOut`]).
//!
//! What this is not: the protocol itself. Header handling, key derivation, the frame
//! prefixes and the TLS records all come from `mtproto_wire`; this only moves bytes between
//! a socket and those codecs.

use std::io;

use mtproto_wire::crypto::AesCtr;
use mtproto_wire::obfs2::{Tag, HEADER_LEN};
use mtproto_wire::tls::RecordReader;
use mtproto_wire::transport::{encode_prefix, parse_frame, Frame, FrameError, Side};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls_client::TlsOut;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// One frame as it arrived, decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A packet: its payload (padded intermediate: the first `len & !3` bytes) and whether
    /// the sender asked for a quick acknowledgement.
    Packet { payload: Vec<u8>, quick_ack: bool },
    /// A bare quick-ack token (only a server sends these).
    QuickAck(u32),
}

/// Why reading a frame failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Frame(FrameError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => e,
            ReadError::Frame(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Reads frames of one transport from an obfuscated stream.
pub struct FrameReader<R> {
    rd: R,
    decrypt: AesCtr,
    tag: Tag,
    side: Side,
    /// Decrypted bytes; `buf[pos..]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    /// Raw bytes read from the socket so far.
    pub bytes_read: u64,
    /// Fake TLS: the record layer the raw bytes go through before decryption.
    records: Option<RecordReader>,
    /// Fake TLS: raw bytes read with the ServerHello, not fed to `records` yet.
    early: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `decrypt` must be positioned where the peer's next byte belongs (byte 64 of the
    /// client's stream on the server side, byte 0 on the client side).
    pub fn new(rd: R, decrypt: AesCtr, tag: Tag, side: Side) -> Self {
        FrameReader {
            rd,
            decrypt,
            tag,
            side,
            buf: Vec::new(),
            pos: 0,
            bytes_read: 0,
            records: None,
            early: Vec::new(),
        }
    }

    /// Fake TLS: raw bytes are TLS records, stripped by `records` before decryption.
    /// `already` are raw bytes read before (those after the ServerHello): they are taken as
    /// the first read.
    pub fn with_records(mut self, records: RecordReader, already: Vec<u8>) -> Self {
        self.records = Some(records);
        self.early = already;
        self
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Received>, ReadError> {
        loop {
            let avail = &self.buf[self.pos..];
            match parse_frame(self.tag, self.side, avail).map_err(ReadError::Frame)? {
                Some(f) if f.total_len() <= avail.len() => {
                    let out = match f {
                        Frame::Packet {
                            prefix,
                            payload,
                            quick_ack,
                            ..
                        } => Received::Packet {
                            payload: avail[prefix..prefix + payload].to_vec(),
                            quick_ack,
                        },
                        Frame::QuickAck(token) => Received::QuickAck(token),
                    };
                    self.pos += f.total_len();
                    return Ok(Some(out));
                }
                Some(f) => self.buf.reserve(f.total_len() - avail.len()),
                None => {}
            }
            if self.read_more().await? == 0 {
                return if self.pos == self.buf.len() {
                    Ok(None)
                } else {
                    Err(
                        io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame")
                            .into(),
                    )
                };
            }
        }
    }

    pub fn into_inner(self) -> R {
        self.rd
    }

    /// Reads and throws away everything until the peer closes; returns the number of bytes
    /// that were still buffered or arrived (an error such as a reset ends it too). In TLS
    /// mode what arrives is counted raw and not parsed as records (after a forward to a
    /// real site, say, it need not be).
    pub async fn discard_to_end(&mut self) -> io::Result<u64> {
        let mut total = (self.buf.len() - self.pos + self.early.len()) as u64;
        self.buf.clear();
        self.pos = 0;
        self.early.clear();
        if self.records.is_some() {
            let mut chunk = vec![0u8; READ_CHUNK];
            loop {
                let n = self.rd.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(total);
                }
                self.bytes_read += n as u64;
                total += n as u64;
            }
        }
        loop {
            let n = self.read_more().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
            self.buf.clear();
        }
    }

    /// Appends one read's worth of decrypted bytes; returns the raw bytes read, 0 at end of
    /// stream. In TLS mode a read may append nothing (only record headers arrived), and the
    /// stream ending inside a record, or a record error, is an error.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if let Some(records) = &mut self.records {
            let chunk = if self.early.is_empty() {
                let mut chunk = vec![0u8; READ_CHUNK];
                let n = self.rd.read(&mut chunk).await?;
                chunk.truncate(n);
                chunk
            } else {
                std::mem::take(&mut self.early)
            };
            let n = chunk.len();
            self.bytes_read += n as u64;
            if n == 0 {
                if !records.at_boundary() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a TLS record",
                    ));
                }
                return Ok(0);
            }
            let old = self.buf.len();
            if let Err(e) = records.feed(&chunk[..n], &mut self.buf) {
                self.buf.truncate(old);
                return Err(invalid_data(e));
            }
            self.decrypt.apply(&mut self.buf[old..]);
            return Ok(n);
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = match self.rd.read(&mut self.buf[old..]).await {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        self.decrypt.apply(&mut self.buf[old..]);
        self.bytes_read += n as u64;
        Ok(n)
    }
}

fn invalid_data(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Writes frames of one transport into an obfuscated stream.
pub struct FrameWriter<W> {
    wr: W,
    encrypt: AesCtr,
    tag: Tag,
    /// Fake TLS: how the encrypted bytes are wrapped in records, and what is held back.
    tls: Option<TlsOut>,
    /// Plain obfuscated2: the header, held back for the first write.
    held: Option<[u8; HEADER_LEN]>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(wr: W, encrypt: AesCtr, tag: Tag) -> Self {
        FrameWriter {
            wr,
            encrypt,
            tag,
            tls: None,
            held: None,
        }
    }

    /// Plain obfuscated2: `header` (when given) goes out with the first bytes sent.
    pub fn holding(mut self, header: Option<[u8; HEADER_LEN]>) -> Self {
        self.held = header;
        self
    }

    /// Fake TLS: everything sent from now on is wrapped in records as `tls` says, after
    /// what it holds back.
    pub fn with_tls(mut self, tls: TlsOut) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Is the header (or in fake TLS a ChangeCipherSpec) still held back?
    pub fn has_pending(&self) -> bool {
        self.held.is_some() || self.tls.as_ref().is_some_and(TlsOut::has_pending)
    }

    /// Sends what is held back (the plain header; in fake TLS the ChangeCipherSpec and the
    /// header in a record of its own), if anything. `split` (fake TLS): write the first
    /// that many bytes, pause, then the rest.
    pub async fn flush_pending(
        &mut self,
        split: Option<(usize, std::time::Duration)>,
    ) -> io::Result<()> {
        if let Some(header) = self.held.take() {
            self.wr.write_all(&header).await?;
            return self.wr.flush().await;
        }
        let Some(tls) = self.tls.as_mut().filter(|t| t.has_pending()) else {
            return Ok(());
        };
        let wire = tls.wrap(&[]);
        if let Some((first, pause)) = split {
            let first = first.min(wire.len());
            self.wr.write_all(&wire[..first]).await?;
            self.wr.flush().await?;
            tokio::time::sleep(pause).await;
            self.wr.write_all(&wire[first..]).await?;
        } else {
            self.write_wire(&wire).await?;
        }
        self.wr.flush().await
    }

    /// Writes wire bytes; in TLS mode with [`TlsOut::separate_header_writes`], every record
    /// header and every record payload in a write of its own.
    async fn write_wire(&mut self, wire: &[u8]) -> io::Result<()> {
        match &self.tls {
            Some(tls) if tls.separate_header_writes => {
                let mut start = 0;
                for cut in crate::tls_client::record_cuts(wire) {
                    self.wr.write_all(&wire[start..cut]).await?;
                    self.wr.flush().await?;
                    start = cut;
                }
                self.wr.write_all(&wire[start..]).await
            }
            _ => self.wr.write_all(wire).await,
        }
    }

    /// Sends `payload` in one frame with `padding` random bytes after it (padded
    /// intermediate only; the length field counts them).
    pub async fn send(
        &mut self,
        payload: &[u8],
        padding: usize,
        quick_ack: bool,
    ) -> io::Result<()> {
        let frame = encode_frame(self.tag, payload, padding, quick_ack)?;
        self.send_plain(frame).await
    }

    /// Encrypts and sends bytes as they are (no framing added; in TLS mode wrapped in
    /// records, after what was held back).
    pub async fn send_plain(&mut self, mut bytes: Vec<u8>) -> io::Result<()> {
        self.encrypt.apply(&mut bytes);
        if let Some(tls) = &mut self.tls {
            bytes = tls.wrap(&bytes);
        }
        if let Some(header) = self.held.take() {
            bytes.splice(0..0, header);
        }
        self.write_wire(&bytes).await?;
        self.wr.flush().await
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wr.write_all(bytes).await?;
        self.wr.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.wr.shutdown().await
    }

    pub fn into_inner(self) -> W {
        self.wr
    }
}

/// Prefix ‖ payload ‖ random padding, unencrypted. Refuses what the transport cannot express
/// (a payload that is not a multiple of 4 outside padded mode, padding outside padded mode,
/// an empty frame, a length too large for the prefix).
pub fn encode_frame(
    tag: Tag,
    payload: &[u8],
    padding: usize,
    quick_ack: bool,
) -> io::Result<Vec<u8>> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let total = payload.len() + padding;
    if total == 0 {
        return Err(invalid("empty frame".into()));
    }
    match tag {
        Tag::Abridged | Tag::Intermediate if padding != 0 => {
            return Err(invalid(format!("{} frames carry no padding", tag.name())));
        }
        Tag::Abridged | Tag::Intermediate if payload.len() & 3 != 0 => {
            return Err(invalid(format!(
                "{}-byte payload is not a multiple of 4",
                payload.len()
            )));
        }
        Tag::Abridged if payload.len() / 4 >= 1 << 24 => {
            return Err(invalid("payload too long for an abridged prefix".into()));
        }
        _ if total >= 1 << 30 => {
            return Err(invalid("payload too long for a length prefix".into()))
        }
        _ => {}
    }
    let mut prefix = [0u8; 4];
    let plen = encode_prefix(tag, payload.len(), padding, quick_ack, &mut prefix);
    let mut out = Vec::with_capacity(plen + total);
    out.extend_from_slice(&prefix[..plen]);
    out.extend_from_slice(payload);
    let start = out.len();
    out.resize(start + padding, 0);
    rand::thread_rng().fill_bytes(&mut out[start..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(
        tag: Tag,
        side: Side,
    ) -> (
        FrameWriter<tokio::io::DuplexStream>,
        FrameReader<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let c = AesCtr::new(&[5; 32], &[6; 16]);
        (
            FrameWriter::new(a, c.clone(), tag),
            FrameReader::new(b, c, tag, side),
        )
    }

    #[tokio::test]
    async fn frames_round_trip_in_every_tag() {
        for tag in Tag::ALL {
            let (mut w, mut r) = pair(tag, Side::FromClient);
            let pad = if tag == Tag::Padded { 7 } else { 0 };
            let big = vec![0x5a; 4 * 300];
            let send = async {
                w.send(&[1, 2, 3, 4], pad, true).await.unwrap();
                w.send(&big, 0, false).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let recv = async {
                let a = r.next().await.unwrap().unwrap();
                let b = r.next().await.unwrap().unwrap();
                let end = r.next().await.unwrap();
                (a, b, end)
            };
            let ((), (a, b, end)) = tokio::join!(send, recv);
            let first = if tag == Tag::Padded {
                // 4 + 7 bytes: the receiver keeps 8, one padding word included.
                8
            } else {
                4
            };
            match a {
                Received::Packet { payload, quick_ack } => {
                    assert_eq!(payload.len(), first);
                    assert_eq!(&payload[..4], &[1, 2, 3, 4]);
                    assert!(quick_ack);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                b,
                Received::Packet {
                    payload: big.clone(),
                    quick_ack: false
                }
            );
            assert!(end.is_none());
        }
    }

    #[test]
    fn encode_frame_refuses_the_inexpressible() {
        assert!(encode_frame(Tag::Abridged, &[1, 2, 3], 0, false).is_err());
        assert!(encode_frame(Tag::Intermediate, &[1, 2, 3, 4], 1, false).is_err());
        assert!(encode_frame(Tag::Padded, &[], 0, false).is_err());
        assert_eq!(
            encode_frame(Tag::Padded, &[1, 2, 3], 2, false)
                .unwrap()
                .len(),
            9
        );
    }
}
