//! Which client packets go to the ME: `rpc::ops::classify_client_packet` (spec
//! backend-ops §1.8), checked against the rule as the spec states it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::rpc::ops::{classify_client_packet, Forward, UNENCRYPTED_FUNCTIONS};

fuzz_target!(|p: &[u8]| {
    let len = p.len();
    let le = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let expected = if len < 28 || !len.is_multiple_of(4) {
        0
    } else if p[..8] != [0; 8] {
        if len >= 56 {
            1
        } else {
            0
        }
    } else {
        let inner = i64::from(le(16) as i32);
        if (20..=len as i64 - 20).contains(&inner) && UNENCRYPTED_FUNCTIONS.contains(&le(20)) {
            2
        } else {
            0
        }
    };
    let got = match classify_client_packet(p) {
        Forward::Drop(_) => 0,
        Forward::Encrypted => 1,
        Forward::Unencrypted => 2,
    };
    assert_eq!(got, expected);
});
