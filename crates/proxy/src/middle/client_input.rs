//! What a ME-mode session reads from its client: bytes read into one buffer, decrypted in
//! place and cut into transport frames, with the buffer policy. The buffer is taken only
//! when data is waiting: a pooled one when the next frame fits it (no allocation, no
//! zeroing), else one grown towards the frame's length by doubling as its bytes arrive (a
//! client is charged for what it sent, not for the length it announced). A burst that
//! leaves nothing buffered gives the buffer back, so an idle session holds none.
//!
//! Not here: what the packets mean and where they go (the session's `forward`), or when to
//! read (its loop).

use crate::bufpool;
use crate::relay::PollReadReady;
use mtproto_wire::crypto::AesCtr;
use mtproto_wire::obfs2::Tag;
use mtproto_wire::transport::{self, Frame, FrameError, Side, MAX_FRAME};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::ReadBuf;

/// Why the client's input ended.
#[derive(Debug)]
pub enum InputEnd {
    /// The client closed its side.
    Closed,
    /// Reading failed.
    Error(io::ErrorKind),
    /// A frame the transport does not allow.
    BadFrame(FrameError),
}

/// One complete client packet.
pub struct Packet<'a> {
    /// The payload (padded intermediate: without its padding).
    pub data: &'a [u8],
    /// The client asked for a quick acknowledgement.
    pub quick_ack: bool,
}

/// The client's decrypted input: `buf[start..end]` is read and not yet consumed.
pub struct ClientInput {
    tag: Tag,
    dec: AesCtr,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ClientInput {
    /// Input in `tag`'s framing, decrypted with `dec`; no buffer yet.
    pub fn new(tag: Tag, dec: AesCtr) -> Self {
        ClientInput {
            tag,
            dec,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes of buffer held (what the session is charged for its input).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// One read from `rd` into the buffer, decrypted: `Some(n)` bytes arrived, `None` the
    /// socket would block (the burst is over; an empty buffer is given back then).
    pub async fn read_from<R: PollReadReady>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<usize>, InputEnd> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            self.buf.clear();
        }
        let need = match transport::parse_frame(self.tag, Side::FromClient, self.pending()) {
            Ok(Some(f)) => f.total_len(),
            Ok(None) => 4,
            Err(e) => return Err(InputEnd::BadFrame(e)),
        };
        self.make_room(need);
        debug_assert_eq!(self.buf.len(), self.end);
        let attempt = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::uninit(self.buf.spare_capacity_mut());
            match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
            }
        })
        .await;
        match attempt {
            None => {
                if self.start == self.end && self.buf.capacity() > 0 {
                    bufpool::give_out(std::mem::take(&mut self.buf));
                    (self.start, self.end) = (0, 0);
                }
                Ok(None)
            }
            Some(Ok(0)) => Err(InputEnd::Closed),
            Some(Ok(n)) => {
                // SAFETY: the read initialised the `n` bytes after `end` (ReadBuf's filled
                // part of the spare capacity).
                unsafe { self.buf.set_len(self.end + n) };
                self.dec.apply(&mut self.buf[self.end..self.end + n]);
                self.end += n;
                Ok(Some(n))
            }
            Some(Err(e)) => Err(InputEnd::Error(e.kind())),
        }
    }

    /// The next complete packet in the buffer, consumed; `None` until one has arrived whole.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, InputEnd> {
        let (prefix, payload, total, quick_ack) =
            match transport::parse_frame(self.tag, Side::FromClient, self.pending()) {
                Ok(Some(Frame::Packet {
                    prefix,
                    body,
                    payload,
                    quick_ack,
                })) if prefix + body <= self.end - self.start => {
                    (prefix, payload, prefix + body, quick_ack)
                }
                Ok(_) => return Ok(None),
                Err(e) => return Err(InputEnd::BadFrame(e)),
            };
        let at = self.start + prefix;
        self.start += total;
        Ok(Some(Packet {
            data: &self.buf[at..at + payload],
            quick_ack,
        }))
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Room for the next read, taken only now that data is waiting (the whole frame must
    /// fit once its length, `need`, is known): a pooled buffer when the frame fits one,
    /// else an exact one grown by doubling. `buf.len()` stays `end`; reads go to the spare
    /// capacity.
    fn make_room(&mut self, need: usize) {
        if self.buf.capacity() - self.start >= need.max(4096) {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.buf.truncate(self.end);
        let want = need
            .clamp(16 * 1024, MAX_FRAME + 8)
            .min((2 * self.end).max(bufpool::OUT_CAP));
        if self.buf.capacity() < want {
            if self.buf.capacity() == 0 && want <= bufpool::OUT_CAP {
                self.buf = bufpool::take_out();
            } else {
                self.buf.reserve_exact(want - self.end);
            }
        }
    }
}

impl Drop for ClientInput {
    fn drop(&mut self) {
        bufpool::give_out(std::mem::take(&mut self.buf));
    }
}
