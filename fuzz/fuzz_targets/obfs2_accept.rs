//! obfuscated2 header, accepting side: `obfs2::accept` on an arbitrary 64-byte header and
//! secret list. Whatever it accepts must be exactly what `obfs2::initiate` builds from the
//! decrypted header, and both keystreams must pair up.
//!
//! Input: header (64) ‖ secret count (1, mod 5) ‖ secrets (16 each) ‖ bytes to send both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::obfs2::{self, Tag, HEADER_LEN};
use mtproxy_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let header: [u8; HEADER_LEN] = c.array();
    let n = usize::from(c.u8() % 5);
    let secrets: Vec<[u8; 16]> = (0..n).map(|_| c.array()).collect();
    let msg = c.rest();

    let Some(mut a) = obfs2::accept(&header, &secrets) else {
        for s in &secrets {
            assert!(obfs2::accept(&header, std::slice::from_ref(s)).is_none());
        }
        return;
    };
    // The first secret that matches wins; none before it matches.
    let secret = match a.secret_index {
        None => {
            assert!(secrets.is_empty());
            None
        }
        Some(i) => {
            assert!(i < secrets.len());
            for s in &secrets[..i] {
                assert!(obfs2::accept(&header, std::slice::from_ref(s)).is_none());
            }
            Some(secrets[i])
        }
    };
    assert!(Tag::ALL.contains(&a.tag));
    assert_eq!(a.decrypt.position(), 64);
    assert_eq!(a.encrypt.position(), 0);

    // Decrypting the header with the read key shows the tag and the DC id ...
    let (read, write) = obfs2::derive_keys(&header, secret.as_ref());
    assert_eq!(a.encrypt_key, write);
    let mut dec = header;
    read.cipher().apply(&mut dec);
    assert_eq!(dec[56..60], a.tag.bytes());
    assert_eq!(i16::from_le_bytes([dec[60], dec[61]]), a.dc);
    // ... and a client building a header from that plaintext sends exactly these bytes.
    let mut plain = header;
    plain[56..64].copy_from_slice(&dec[56..64]);
    let mut client = obfs2::initiate(plain, a.tag, a.dc, secret.as_ref());
    assert_eq!(client.header, header);

    // Client -> proxy continues at keystream byte 64, proxy -> client starts at 0.
    let mut buf = msg.to_vec();
    client.encrypt.apply(&mut buf);
    a.decrypt.apply(&mut buf);
    assert_eq!(buf, msg);
    a.encrypt.apply(&mut buf);
    client.decrypt.apply(&mut buf);
    assert_eq!(buf, msg);
});
