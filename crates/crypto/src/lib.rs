//! The proxy's symmetric crypto and the only `unsafe` code of its protocol stack: AES-256
//! in CTR mode (obfuscated2) and CBC mode (the ME link) on aws-lc's C functions and on our
//! own `std::arch` kernels (VAES/AVX-512 for CTR and CBC decryption, interleaved AES-NI
//! chains for CBC encryption), and X25519 public keys for fake TLS.
//!
//! Every `unsafe` block carries a `SAFETY:` note (the workspace denies blocks without one
//! and unsafe operations outside a block in an `unsafe fn`). The protocol crate
//! (`mtproto-wire`) builds on this one and forbids `unsafe` itself.
//!
//! - [`AesCtr`] (`ctr`): the obfuscated2 keystream, a 128-bit big-endian counter;
//! - [`AesCbcEncryptor`], [`AesCbcDecryptor`], [`encrypt_many`] (`cbc`): the ME link's
//!   continuous CBC chains;
//! - `vaes`, `lanes`: the kernels; `select`: when they are used instead of aws-lc;
//! - [`x25519_public_key`] (`x25519`).
//!
//! Not here: hashing and HMAC (RustCrypto, safe), key derivation (`mtproto_wire::rpc::kdf`).

mod cbc;
mod ctr;
#[cfg(target_arch = "x86_64")]
mod lanes;
#[cfg(target_arch = "x86_64")]
mod select;
#[cfg(target_arch = "x86_64")]
mod vaes;
mod x25519;

pub use cbc::{encrypt_many, AesCbcDecryptor, AesCbcEncryptor, BLOCK_LEN};
pub use ctr::AesCtr;
pub use x25519::x25519_public_key;
