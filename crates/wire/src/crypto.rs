//! AES-256-CTR keystream as obfuscated2 uses it: OpenSSL `EVP_aes_256_ctr` semantics, the
//! whole 16-byte IV is one big-endian 128-bit counter (spec client.md §3.3, gotcha 3).
//!
//! The cipher itself, and every `unsafe` block it needs, is in the `mtproxy-crypto` crate;
//! this module names it for the protocol code.

pub use mtproxy_crypto::AesCtr;
