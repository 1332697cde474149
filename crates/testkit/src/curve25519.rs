//! Checks a passive observer can make on an X25519 key share: is it the u-coordinate of a
//! point on Curve25519 (what `X25519(k, 9)` always gives), or a value no real TLS peer
//! sends (at or above p = 2^255 − 19, or a point of the twist)?
//!
//! Slow big-number arithmetic, for tests only. Not here: generating keys.

use num_bigint::BigUint;

/// Whether `u` (32 bytes, little-endian) is on Curve25519 `v² = u³ + 486662·u² + u`
/// over GF(p): `u < p` and the right-hand side is a square mod p (Euler's criterion: its
/// (p−1)/2-th power is 0 or 1; a twist point gives p − 1).
pub fn is_on_curve(u: &[u8; 32]) -> bool {
    let p = (BigUint::from(1u8) << 255u32) - BigUint::from(19u8);
    let u = BigUint::from_bytes_le(u);
    if u >= p {
        return false;
    }
    let rhs = (&u * &u * &u + BigUint::from(486_662u32) * &u * &u + &u) % &p;
    let e = (&p - BigUint::from(1u8)) >> 1u32;
    let l = rhs.modpow(&e, &p);
    l == BigUint::from(0u8) || l == BigUint::from(1u8)
}

/// Whether a key share would pass for a real server's: top bit clear and on the curve.
pub fn is_valid_share(u: &[u8; 32]) -> bool {
    u[31] & 0x80 == 0 && is_on_curve(u)
}
