//! The X25519 key share of the fake ServerHello (spec client.md §5.8): a real public key,
//! `X25519(k, 9)` for a scalar `k` the caller draws, computed by aws-lc in
//! `mtproxy-crypto` (its RFC 7748 vector test is there).
//!
//! Why it matters: a real server's share is the u-coordinate of a point on Curve25519, so
//! it is below 2^255 − 19 (top bit clear) and `u³ + 486662·u² + u` is a square mod p. 32
//! random bytes fail the first test half the time and the second half the time; a passive
//! observer that checks them flags the server after a handful of connections.
//!
//! Not here: the shared secret (the proxy never completes a real key exchange), the
//! randomness (the caller's), and the ML-KEM shares of post-quantum groups.

pub use mtproxy_crypto::x25519_public_key;
