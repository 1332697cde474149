//! The input side of one ME connection: ciphertext read from the socket, decrypted block by
//! block as it arrives, and RPC frames decoded from the decrypted prefix.
//!
//! What the ME can make it hold: padding words are consumed as soon as they are decrypted
//! (a flood of them costs nothing; before, they stayed in the buffer until a frame came
//! and the buffer doubled under them without limit); the buffer grows only for a frame
//! that does not fit, to at most [`MAX_BUF`] (one largest legal frame and a read), and
//! shrinks back to [`KEEP`] once what is left fits in half of that (a 16 MiB frame does
//! not leave 32 MiB per connection behind).
//!
//! Not here: what frames mean (`conn.rs`), the frame format (`mtproto_wire::rpc::frame`).

use mtproto_wire::rpc::frame::{leading_padding, MAX_PACKET_LEN};
use mtproto_wire::rpc::{AesCbcDecryptor, FrameDecoder};
use std::io;
use std::ops::Range;
use tokio::io::AsyncReadExt;

/// The buffer an ME connection keeps while no large frame is arriving.
pub const KEEP: usize = 64 * 1024;
/// The most the buffer grows to: the largest frame and room for one more read.
pub const MAX_BUF: usize = MAX_PACKET_LEN + KEEP;

/// Incoming bytes of one ME connection.
pub struct Inbound {
    pub buf: Vec<u8>,
    /// `buf[start..plain]` is decrypted and not yet consumed.
    pub start: usize,
    plain: usize,
    /// `buf[plain..filled]` is ciphertext that is not a whole block yet.
    pub filled: usize,
    pub dec: Option<AesCbcDecryptor>,
}

impl Inbound {
    pub fn new() -> Self {
        Inbound {
            buf: vec![0; KEEP],
            start: 0,
            plain: 0,
            filled: 0,
            dec: None,
        }
    }

    /// Moves what is not consumed to the front when that frees room, and gives a large
    /// buffer back once what is left fits the idle size.
    fn compact(&mut self) {
        let full = self.filled == self.buf.len();
        if self.start > 0 && (full || self.start > self.buf.len() / 2 || self.start == self.filled)
        {
            self.buf.copy_within(self.start..self.filled, 0);
            self.plain -= self.start;
            self.filled -= self.start;
            self.start = 0;
        }
        if self.start == 0 && self.buf.len() > KEEP && self.filled <= KEEP / 2 {
            self.buf.truncate(KEEP);
            self.buf.shrink_to_fit();
        }
    }

    /// Reads more bytes; Ok(false) at EOF.
    pub async fn fill(&mut self, r: &mut (impl AsyncReadExt + Unpin)) -> io::Result<bool> {
        self.compact();
        if self.filled == self.buf.len() {
            // Only a frame larger than the buffer gets here (decode takes whole frames and
            // rejects lengths over MAX_PACKET_LEN first), so the cap is never in the way.
            let new_len = (self.buf.len() * 2).min(MAX_BUF);
            if new_len == self.buf.len() {
                return Err(io::Error::other(format!(
                    "ME input over {MAX_BUF} bytes without a whole frame"
                )));
            }
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

    /// The next frame's payload range (absolute in `buf`), consuming it; None when more
    /// bytes are needed (padding words seen so far are consumed).
    pub fn next(&mut self, dec: &mut FrameDecoder) -> Result<Option<Range<usize>>, String> {
        match dec.decode(&self.buf[self.start..self.plain]) {
            Ok(Some((used, r))) => {
                let range = self.start + r.start..self.start + r.end;
                self.start += used;
                Ok(Some(range))
            }
            Ok(None) => {
                self.start += leading_padding(&self.buf[self.start..self.plain]);
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads until a whole frame is there.
    pub async fn frame(
        &mut self,
        r: &mut (impl AsyncReadExt + Unpin),
        dec: &mut FrameDecoder,
    ) -> Result<Range<usize>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use mtproto_wire::rpc::frame::PAD_WORD;
    use mtproto_wire::rpc::FrameEncoder;

    /// Feeds `input` through a fresh Inbound in reads of at most `chunk` bytes; the
    /// payloads and the largest buffer seen.
    async fn run(input: Vec<u8>, chunk: usize) -> (Vec<Vec<u8>>, usize, Inbound) {
        let (mut tx, mut rx) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&input).await.unwrap();
        });
        let mut inb = Inbound::new();
        let mut dec = FrameDecoder::new();
        let (mut got, mut largest) = (Vec::new(), 0);
        loop {
            while let Some(r) = inb.next(&mut dec).unwrap() {
                got.push(inb.buf[r].to_vec());
            }
            largest = largest.max(inb.buf.len());
            if !inb.fill(&mut rx).await.unwrap() {
                break;
            }
        }
        writer.await.unwrap();
        (got, largest, inb)
    }

    #[tokio::test]
    async fn a_padding_flood_is_consumed_without_growing_the_buffer() {
        let mut enc = FrameEncoder::new();
        let mut input = PAD_WORD.repeat(4 << 20);
        enc.encode(&[7; 16], &mut input);
        let (got, largest, _) = run(input, 64 * 1024).await;
        assert_eq!(got, vec![vec![7; 16]]);
        assert_eq!(
            largest, KEEP,
            "16 MiB of padding kept the buffer at its idle size"
        );
    }

    #[tokio::test]
    async fn a_large_frame_grows_the_buffer_once_and_it_shrinks_back() {
        let mut enc = FrameEncoder::new();
        let mut input = Vec::new();
        let big = vec![3u8; MAX_PACKET_LEN - 12];
        enc.encode(&big, &mut input);
        for i in 0..4u8 {
            enc.encode(&[i; 8], &mut input);
        }
        let (got, largest, inb) = run(input, 256 * 1024).await;
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], big);
        assert!(largest <= MAX_BUF, "{largest}");
        assert_eq!(inb.buf.len(), KEEP, "back to the idle size");
        assert!(inb.buf.capacity() <= KEEP + 4096);
    }
}
