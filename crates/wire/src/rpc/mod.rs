//! The RPC protocol between the proxy and Telegram's middle-ends (MEs), spec backend-ops.md §1.
//!
//! Sans-I/O pieces, usable from both ends of the link (the proxy is the *client*, an ME or a
//! fake ME the *server*):
//! - [`frame`]: `len ‖ seq ‖ payload ‖ crc` packets, CRC32 then CRC32C, padding words, the
//!   sequence numbers (§1.3).
//! - CBC ([`AesCbcEncryptor`], [`AesCbcDecryptor`], from `mtproxy-crypto`): one
//!   continuous AES-256-CBC stream per direction (§1.4).
//! - [`nonce`]: the plaintext RPC_NONCE exchange and its checks (§1.5).
//! - [`kdf`]: keys and IVs from the nonces, timestamp, addresses and proxy secret (§1.6).
//! - [`handshake`]: process ids, RPC_HANDSHAKE both ways and its checks (§1.7).
//! - [`ops`]: RPC_PROXY_REQ / PROXY_ANS / SIMPLE_ACK / CLOSE_EXT / CLOSE_CONN / PING / PONG and
//!   the rule for which client packets are forwarded at all (§1.8).
//!
//! Order of use on one connection (proxy side; the ME mirrors it):
//! 1. [`nonce::NoncePacket::aes`] → [`frame::FrameEncoder::encode`] (seq −2, CRC32), sent in
//!    plaintext.
//! 2. The ME's nonce frame: [`frame::FrameDecoder::decode`] then [`nonce::check_me_nonce`].
//! 3. [`kdf::derive_keys`] with [`kdf::Role::Client`]; everything after this is
//!    CBC-encrypted, outgoing bytes padded with [`frame::pad_to_block`] before each
//!    encryption.
//! 4. [`handshake::proxy_handshake`] out (seq −1), the ME's answer through
//!    [`handshake::check_me_handshake`]; if it says CRC32C, call `switch_crc` on both the
//!    encoder and the decoder.
//! 5. [`ops`] payloads, seq 0, 1, 2, …
//!
//! What is not here: sockets, timers (the 3-s handshake timeout), the connection pool,
//! session tables, NAT tables (callers translate addresses before handing them in), random
//! nonces and clocks (callers pass them in).

pub mod frame;
pub mod handshake;
pub mod kdf;
pub mod nonce;
pub mod ops;

#[cfg(test)]
mod session_tests;

pub use frame::{leading_padding, pad_to_block, CrcKind, FrameDecoder, FrameEncoder, RpcError};
pub use handshake::{Handshake, HandshakeError, ProcessId};
pub use kdf::{derive_keys, CbcKeyIv, KdfInput, Purpose, Role, RpcKeys};
pub use mtproxy_crypto::{encrypt_many, AesCbcDecryptor, AesCbcEncryptor};
pub use nonce::{NonceError, NoncePacket};
pub use ops::{classify_client_packet, Forward, MeOp, ProxyOp, ProxyReq, ReqParams};

/// `RPC_NONCE`: the plaintext key-exchange packet (§1.5).
pub const RPC_NONCE: u32 = 0x7acb_87aa;
/// `RPC_HANDSHAKE` (§1.7).
pub const RPC_HANDSHAKE: u32 = 0x7682_eef5;
/// `RPC_HANDSHAKE_ERROR`: a refused handshake, with an error code.
pub const RPC_HANDSHAKE_ERROR: u32 = 0x6a27_beda;
/// `RPC_PING`: int64 ping_id.
pub const RPC_PING: u32 = 0x5730_a2df;
/// `RPC_PONG`: the ping_id back.
pub const RPC_PONG: u32 = 0x8430_eaa7;
/// `RPC_PROXY_REQ` (proxy → ME): one client packet.
pub const RPC_PROXY_REQ: u32 = 0x36ce_f1ee;
/// `RPC_PROXY_ANS` (ME → proxy): data for a client.
pub const RPC_PROXY_ANS: u32 = 0x4403_da0d;
/// `RPC_CLOSE_CONN` (proxy → ME): a client went away.
pub const RPC_CLOSE_CONN: u32 = 0x1fcf_425d;
/// `RPC_CLOSE_EXT` (ME → proxy): close one client session.
pub const RPC_CLOSE_EXT: u32 = 0x5eb6_34a2;
/// `RPC_SIMPLE_ACK` (ME → proxy): a quick acknowledgement for a client.
pub const RPC_SIMPLE_ACK: u32 = 0x3bac_409b;
/// TL constructor of the proxy-tag item in RPC_PROXY_REQ's extra section.
pub const TL_PROXY_TAG: u32 = 0xdb1e_26ae;
/// TL constructor of the HTTP query info item (HTTP transport only; never sent by us).
pub const TL_HTTP_QUERY_INFO: u32 = 0xd45a_b381;

/// Handshake flag: use CRC32C for every packet after the handshake.
pub const RPCF_USE_CRC32C: u32 = 0x800;

/// Crypto schema 0: no encryption (refused on ME links).
pub const CRYPTO_SCHEMA_NONE: i32 = 0;
/// Crypto schema 1: AES with the proxy secret (the only one we send).
pub const CRYPTO_SCHEMA_AES: i32 = 1;
/// Crypto schema 2: AES, with a list of extra key selectors.
pub const CRYPTO_SCHEMA_AES_EXT: i32 = 2;
/// Crypto schema 3: AES with Diffie-Hellman (never requested by the proxy).
pub const CRYPTO_SCHEMA_AES_DH: i32 = 3;
/// Most extra key selectors a schema-2/3 nonce may carry.
pub const MAX_EXTRA_KEYS: usize = 8;

/// Shortest proxy secret (`--aes-pwd` file) the C accepts.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest proxy secret the C accepts.
pub const MAX_SECRET_LEN: usize = 256;

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le_i32(b: &[u8], at: usize) -> i32 {
    le_u32(b, at) as i32
}

pub(crate) fn le_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}
