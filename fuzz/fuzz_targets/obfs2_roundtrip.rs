//! obfuscated2 round trip: `initiate` (and `initiate_fast`) from arbitrary random bytes, tag,
//! DC id and secrets, then `accept` must find the same tag, DC id and secret, and the
//! keystreams of both ends must pair up.
//!
//! Input: random (64) ‖ tag (1) ‖ dc (2, LE) ‖ mode (1) ‖ secret (16) ‖ decoy (16) ‖
//! fast key (32) ‖ fast iv (16) ‖ bytes to send both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::obfs2::{self, KeyIv, Tag, HEADER_LEN};
use mtproxy_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let random: [u8; HEADER_LEN] = c.array();
    let tag = Tag::ALL[usize::from(c.u8() % 3)];
    let dc = c.u16() as i16;
    let mode = c.u8();
    let secret: [u8; 16] = c.array();
    let decoy: [u8; 16] = c.array();
    let fast = KeyIv {
        key: c.array(),
        iv: c.array(),
    };
    let msg = c.rest();

    // mode bit 0: with a secret; bit 1: a decoy secret tried first.
    let with_secret = mode & 1 != 0;
    let list: Vec<[u8; 16]> = match (with_secret, mode & 2 != 0) {
        (false, _) => Vec::new(),
        (true, false) => vec![secret],
        (true, true) => vec![decoy, secret],
    };
    let mut ini = obfs2::initiate(random, tag, dc, with_secret.then_some(&secret));
    assert_eq!(ini.encrypt.position(), 64);
    assert_eq!(ini.header[..56], random[..56]);
    let _ = obfs2::is_acceptable_header(&ini.header);
    let mut acc = obfs2::accept(&ini.header, &list).expect("own header refused");
    let idx = acc.secret_index;
    if with_secret {
        let i = idx.expect("secret index");
        assert!(i < list.len());
        if list[i] == secret {
            assert_eq!((acc.tag, acc.dc), (tag, dc));
        }
    } else {
        assert_eq!(idx, None);
        assert_eq!((acc.tag, acc.dc), (tag, dc));
    }
    if idx.is_none_or(|i| list[i] == secret) {
        let mut buf = msg.to_vec();
        ini.encrypt.apply(&mut buf);
        acc.decrypt.apply(&mut buf);
        assert_eq!(buf, msg);
        acc.encrypt.apply(&mut buf);
        ini.decrypt.apply(&mut buf);
        assert_eq!(buf, msg);
    }

    // Fast mode: the DC's encrypt stream is the one we chose.
    let out = obfs2::initiate_fast(random, tag, dc, &fast);
    let mut dc_side = obfs2::accept(&out.header, &[]).expect("fast header refused");
    assert_eq!((dc_side.tag, dc_side.dc), (tag, dc));
    assert_eq!(dc_side.encrypt_key, fast);
    let mut a = msg.to_vec();
    dc_side.encrypt.apply(&mut a);
    let mut b = msg.to_vec();
    fast.cipher().apply(&mut b);
    assert_eq!(a, b);
});
