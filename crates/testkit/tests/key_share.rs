//! The fake ServerHello's key share is a real X25519 public key: 10 000 of them all pass the
//! checks a passive observer can make (top bit clear, on the curve and not its twist), and
//! the checks do reject random bytes (so the first test can fail).

use mtproto_wire::tls::x25519_public_key;
use mtproxy_testkit::curve25519::{is_on_curve, is_valid_share};
use sha2::{Digest, Sha256};

#[test]
fn ten_thousand_shares_are_curve_points() {
    for i in 0u32..10_000 {
        let scalar: [u8; 32] = Sha256::digest(i.to_be_bytes()).into();
        let share = x25519_public_key(&scalar);
        assert_eq!(share[31] & 0x80, 0, "share {i}: top bit set");
        assert!(is_on_curve(&share), "share {i} is on the twist");
    }
}

#[test]
fn random_bytes_fail_the_check_three_times_in_four() {
    let failed = (0u32..1000)
        .filter(|i| !is_valid_share(&Sha256::digest(i.to_le_bytes()).into()))
        .count();
    assert!((650..850).contains(&failed), "{failed} of 1000 failed");
    // Cleared top bits alone (what the proxy used to send) still fail half the time.
    let twist = (0u32..1000)
        .filter(|i| {
            let mut u: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            u[31] &= 0x7f;
            !is_on_curve(&u)
        })
        .count();
    assert!((400..600).contains(&twist), "{twist} of 1000 on the twist");
}
