//! What a ME-mode session writes to its client: packets (the ME's answers, the proxy's own
//! pongs) and quick acks in the client's transport framing, encrypted, batched in one
//! pooled buffer per write; a large answer is framed in its own buffer instead of copied.
//! An idle session holds no output buffer.
//!
//! Not here: when to write, or what to do with a client that does not read (the session's
//! `flush_bounded`).

use super::inbox::Answer;
use crate::bufpool;
use mtproto_wire::crypto::AesCtr;
use mtproto_wire::obfs2::Tag;
use mtproto_wire::transport;
use rand::Rng;
use tokio::io::AsyncWriteExt;

/// Writes packets to the client in its framing, encrypted.
pub struct ClientWriter {
    tag: Tag,
    enc: AesCtr,
    out: Vec<u8>,
    /// Where the bytes to send start in `out` (not 0 when `out` is an answer's own
    /// buffer, framed in place).
    start: usize,
}

impl ClientWriter {
    /// A writer for `tag`'s framing with the stream cipher `enc`; it holds no buffer yet.
    pub fn new(tag: Tag, enc: AesCtr) -> Self {
        ClientWriter {
            tag,
            enc,
            out: Vec::new(),
            start: 0,
        }
    }

    /// Size of the output buffer: the batch not yet written (and, for an answer framed in
    /// place, the headroom before it).
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    /// The output buffer, taken from the thread's pool when the first frame of a batch
    /// comes.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = bufpool::take_out();
        }
        &mut self.out
    }

    /// The transport prefix of a `len`-byte packet (its bytes and length) and the random
    /// padding that follows it (padded transport only).
    fn frame(&self, len: usize) -> ([u8; 4], usize, usize) {
        let padding = if self.tag == Tag::Padded {
            rand::thread_rng().gen_range(0..4)
        } else {
            0
        };
        let mut prefix = [0u8; 4];
        let n = transport::encode_prefix(self.tag, len, padding, false, &mut prefix);
        (prefix, n, padding)
    }

    fn push_padding(buf: &mut Vec<u8>, padding: usize) {
        if padding > 0 {
            let mut pad = [0u8; 3];
            rand::thread_rng().fill(&mut pad[..padding]);
            buf.extend_from_slice(&pad[..padding]);
        }
    }

    /// An answer from the ME: a large one that starts a batch is framed and encrypted in
    /// its own buffer, which becomes the output (one 64 KiB copy less per answer); others
    /// are copied into the output like any packet.
    pub fn answer(&mut self, a: Answer) {
        let mut buf = a.into_buf();
        let len = buf.len() - Answer::HEADROOM;
        if !self.out.is_empty() || len < bufpool::BUF_SIZE / 2 {
            self.packet(&buf[Answer::HEADROOM..]);
            bufpool::give_out(buf);
            return;
        }
        let (prefix, n, padding) = self.frame(len);
        let start = Answer::HEADROOM - n;
        buf[start..Answer::HEADROOM].copy_from_slice(&prefix[..n]);
        Self::push_padding(&mut buf, padding);
        self.enc.apply(&mut buf[start..]);
        bufpool::give_out(std::mem::replace(&mut self.out, buf));
        self.start = start;
    }

    pub fn packet(&mut self, data: &[u8]) {
        let (prefix, n, padding) = self.frame(data.len());
        let out = self.out();
        let start = out.len();
        out.extend_from_slice(&prefix[..n]);
        out.extend_from_slice(data);
        Self::push_padding(out, padding);
        self.enc.apply(&mut self.out[start..]);
    }

    pub fn quick_ack(&mut self, token: u32) {
        let start = self.out().len();
        self.out
            .extend_from_slice(&transport::quick_ack_bytes(self.tag, token));
        self.enc.apply(&mut self.out[start..]);
    }

    /// Writes the batch out; returns how many bytes it was.
    pub async fn flush(&mut self, w: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<usize> {
        let n = self.out.len().saturating_sub(self.start);
        if n > 0 {
            w.write_all(&self.out[self.start..]).await?;
            w.flush().await?;
            // Idle sessions keep no output buffer: it goes back to the pool.
            bufpool::give_out(std::mem::take(&mut self.out));
            self.start = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large answers framed in their own buffer give the same bytes on the wire as the
    /// copying path, for every transport, in any mix with small packets and quick acks.
    #[tokio::test]
    async fn answers_framed_in_place_are_the_copied_bytes() {
        for tag in [Tag::Abridged, Tag::Intermediate, Tag::Padded] {
            let big: Vec<u8> = (0..bufpool::BUF_SIZE).map(|i| (i * 7) as u8).collect();
            let mid: Vec<u8> = (0..bufpool::BUF_SIZE / 2 + 4).map(|i| i as u8).collect();
            let small = vec![3u8; 100];
            let mk = || ClientWriter::new(tag, AesCtr::new(&[4; 32], &[5; 16]));
            let (mut a, mut b) = (mk(), mk());
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            // Batches as the session makes them: flushed between.
            let batches: [&[&[u8]]; 4] = [&[&big], &[&small, &big], &[&mid, &small], &[&big, &mid]];
            for batch in batches {
                for p in batch {
                    a.answer(Answer::new(p));
                    b.packet(p);
                }
                // Quick-ack tokens carry the high bit (how the client tells them apart).
                a.quick_ack(0x8000_0009);
                b.quick_ack(0x8000_0009);
                a.flush(&mut wa).await.unwrap();
                b.flush(&mut wb).await.unwrap();
            }
            if tag == Tag::Padded {
                // Random padding: compare what the client decodes instead.
                let (da, db) = (decode(&wa), decode(&wb));
                assert_eq!(da.len(), 7 + 4, "seven packets and four acks");
                assert_eq!(da, db);
            } else {
                assert_eq!(wa, wb, "{tag:?}");
            }
        }
    }

    /// The client's view of a padded-intermediate stream: decrypt and split into packets
    /// (quick acks included as-is), padding dropped.
    fn decode(wire: &[u8]) -> Vec<Vec<u8>> {
        let mut plain = wire.to_vec();
        AesCtr::new(&[4; 32], &[5; 16]).apply(&mut plain);
        let mut out = Vec::new();
        let mut at = 0;
        while at < plain.len() {
            let len = u32::from_le_bytes(plain[at..at + 4].try_into().unwrap());
            if len & 0x8000_0000 != 0 {
                out.push(plain[at..at + 4].to_vec());
                at += 4;
                continue;
            }
            let len = len as usize;
            out.push(plain[at + 4..at + 4 + (len & !3)].to_vec());
            at += 4 + len;
        }
        out
    }
}
