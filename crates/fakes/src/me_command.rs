//! Misbehaviour on command for the fake ME ([`crate::fake_me`]): a client packet that asks
//! the fake ME to attack the proxy from the ME side (big answers, floods of empty answers or
//! acks, padding or ping floods, a connection that stops reading), so that hostile-input
//! tests can run the attack from chosen sessions beside legitimate ones.
//!
//! A command is an ordinary "encrypted" client packet (non-zero auth_key_id, 64 bytes), so
//! the proxy forwards it like any other; the fake ME obeys it only when
//! [`crate::fake_me::FakeMeConfig::commands`] is on. What it is not: anything a real ME
//! understands.

/// The first 8 bytes of a command packet (its auth_key_id as the proxy sees it).
pub const MAGIC: [u8; 8] = *b"\x01HOSTILE";
/// Length of an encoded command.
pub const LEN: usize = 64;

/// What the fake ME is asked to do. "The sender" is the session (conn_id) that sent the
/// command, or the ME connection it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `count` RPC_PROXY_ANS of `len` bytes each (a multiple of 4) to the sender.
    Answers { len: u32, count: u32 },
    /// `count` RPC_SIMPLE_ACK to the sender.
    Acks { count: u32 },
    /// `bytes` of padding words (legal between frames) on the sender's ME connection.
    Padding { bytes: u64 },
    /// `count` RPC_PING on the sender's ME connection.
    Pings { count: u32 },
    /// One RPC_PROXY_ANS of `len` bytes for a session id that no client has.
    Stray { len: u32 },
    /// The sender's ME connection stops reading what the proxy sends, for good.
    StopReading,
}

impl Command {
    fn parts(self) -> (u32, u64, u64) {
        match self {
            Command::Answers { len, count } => (1, u64::from(len), u64::from(count)),
            Command::Acks { count } => (2, u64::from(count), 0),
            Command::Padding { bytes } => (3, bytes, 0),
            Command::Pings { count } => (4, u64::from(count), 0),
            Command::Stray { len } => (5, u64::from(len), 0),
            Command::StopReading => (6, 0, 0),
        }
    }

    /// The client packet that carries this command.
    pub fn encode(self) -> Vec<u8> {
        let (kind, a, b) = self.parts();
        let mut p = Vec::with_capacity(LEN);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(&a.to_le_bytes());
        p.extend_from_slice(&b.to_le_bytes());
        p.resize(LEN, 0);
        p
    }

    /// The command a client packet carries, if it is one.
    pub fn decode(p: &[u8]) -> Option<Command> {
        if p.len() != LEN || p[..8] != MAGIC {
            return None;
        }
        let kind = u32::from_le_bytes(p[8..12].try_into().ok()?);
        let a = u64::from_le_bytes(p[12..20].try_into().ok()?);
        let b = u64::from_le_bytes(p[20..28].try_into().ok()?);
        let small = |v: u64| u32::try_from(v).ok();
        Some(match kind {
            1 => Command::Answers {
                len: small(a)?,
                count: small(b)?,
            },
            2 => Command::Acks { count: small(a)? },
            3 => Command::Padding { bytes: a },
            4 => Command::Pings { count: small(a)? },
            5 => Command::Stray { len: small(a)? },
            6 => Command::StopReading,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_other_packets_are_not_commands() {
        let all = [
            Command::Answers {
                len: 1 << 20,
                count: 7,
            },
            Command::Acks { count: 5 },
            Command::Padding { bytes: 1 << 28 },
            Command::Pings { count: 9 },
            Command::Stray { len: 16 },
            Command::StopReading,
        ];
        for c in all {
            let p = c.encode();
            assert_eq!(p.len(), LEN);
            assert_eq!(Command::decode(&p), Some(c));
        }
        let mut other = Command::StopReading.encode();
        other[1] ^= 1;
        assert_eq!(Command::decode(&other), None);
        assert_eq!(Command::decode(&[1u8; 64]), None);
        assert_eq!(Command::decode(&Command::StopReading.encode()[..60]), None);
    }
}
