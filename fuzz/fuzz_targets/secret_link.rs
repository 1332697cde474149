//! Secrets and links: `secret::parse_server_secret` (the `-S` rule), `ClientSecret::from_link`
//! (hex, base64url, base64, as TDLib decodes them), `ClientSecret::from_bytes`, and link
//! building.
//!
//! Invariants: a server secret is exactly 32 hex digits and encodes back to the text (lower
//! case); a client secret's bytes, hex and base64url decode back to the same secret (the
//! base64url form only when it does not also read as hex: TDLib tries hex first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::secret::{link, link_with, parse_server_secret, ClientSecret, LinkKind};

fn round_trip(cs: &ClientSecret) {
    assert_eq!(ClientSecret::from_bytes(&cs.to_bytes()).as_ref(), Ok(cs));
    assert_eq!(ClientSecret::from_link(&cs.to_hex()).as_ref(), Ok(cs));
    let b64 = cs.to_base64url();
    if hex::decode(&b64).is_err() {
        assert_eq!(ClientSecret::from_link(&b64).as_ref(), Ok(cs), "{b64}");
    }
    let key = *cs.key();
    assert_eq!(cs.to_bytes()[cs.to_bytes().len().min(17) - 16..][..16], key);
    let _ = link(LinkKind::Tg, "proxy.example.net", 443, cs);
    let l = link_with(LinkKind::TMe, "[::1]", 1, &b64);
    assert!(l.is_ascii());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(cs) = ClientSecret::from_bytes(data) {
        assert_eq!(cs.to_bytes(), data);
        round_trip(&cs);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientSecret::from_link(text) {
        Ok(cs) => round_trip(&cs),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match parse_server_secret(text) {
        Ok(k) => {
            assert_eq!(text.len(), 32);
            assert_eq!(hex::encode(k), text.to_ascii_lowercase());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let l = link(LinkKind::TMe, text, 443, &ClientSecret::Plain([7; 16]));
    assert!(l.is_ascii());
});
