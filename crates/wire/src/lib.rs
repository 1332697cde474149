//! Sans-I/O protocol code for the MTProto proxy.
//!
//! Nothing in this crate does I/O, reads a clock or draws randomness on its own: the caller
//! passes bytes, times and random bytes in. That makes every codec testable byte for byte
//! against the spec vectors and fuzzable.
//!
//! - [`crypto`]: AES-256-CTR as the obfuscated2 layer uses it (128-bit big-endian counter).
//! - [`obfs2`]: the 64-byte obfuscated2 header, both the accepting side and the initiating side.
//! - [`transport`]: the abridged, intermediate and padded-intermediate framings.
//! - [`secret`]: secrets as typed by operators and clients, and `tg://` links.
//! - [`rpc`]: the middle-end RPC protocol (frames, CBC, nonce, KDF, handshake, operations).
//! - [`tls`]: fake TLS, the checks and messages of both sides.
//!
//! No `unsafe` here: the ciphers (aws-lc calls and our AES kernels) are the
//! `mtproxy-crypto` crate's.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod crypto;
pub mod obfs2;
pub mod rpc;
pub mod secret;
pub mod tls;
pub mod transport;
