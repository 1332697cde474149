//! X25519 public keys (RFC 7748), for the fake ServerHello's key share: `X25519(k, 9)`,
//! computed by aws-lc (already in the tree for AES). Why a real key matters is in
//! `mtproto_wire::tls::key_share`.

use aws_lc_sys::X25519_public_from_private;

/// The public key `X25519(private, 9)`. Any 32 bytes are a valid private key (aws-lc
/// clamps them as RFC 7748 says); give fresh random bytes per handshake.
pub fn x25519_public_key(private: &[u8; 32]) -> [u8; 32] {
    let mut public = [0u8; 32];
    // SAFETY: both pointers are to 32-byte arrays, the sizes the function reads and
    // writes; it has no other side effects and cannot fail.
    unsafe { X25519_public_from_private(public.as_mut_ptr(), private.as_ptr()) };
    public
}

/// The curve check over 10 000 shares is in the testkit (`tests/key_share.rs`), beside the
/// Legendre-symbol check the end-to-end tests use too.
#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 §6.1: Alice's private key and public key.
    #[test]
    fn rfc7748_vector() {
        let private: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(
            hex::encode(x25519_public_key(&private)),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
