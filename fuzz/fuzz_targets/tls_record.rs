//! The fake-TLS record reader after the handshake: `tls::RecordReader::feed`.
//!
//! Input: flags (1) ‖ split point (2, LE) ‖ client bytes.
//! flags bit 0: a reader limited to 16384 + 256 byte records; bit 1: also feed byte by byte.
//! Invariants: the same bytes in one piece, in two pieces and byte by byte give the same
//! payload, the same result and the same reader state; errors are sticky; the payload is
//! never longer than the input and, at a record boundary, accounts for every input byte;
//! what was read, written back with `write_records`, reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::tls::{write_records, RecordReader, CHANGE_CIPHER_SPEC};
use mtproxy_fuzz::Cursor;

type State = (usize, bool, u64, bool);

fn state(r: &RecordReader) -> State {
    (
        r.left_in_record(),
        r.saw_change_cipher_spec(),
        r.data_records(),
        r.at_boundary(),
    )
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let split = usize::from(c.u16());
    let input = c.rest();
    let strict = flags & 1 != 0;
    let mk = || {
        if strict {
            RecordReader::with_max_payload(16_384 + 256)
        } else {
            RecordReader::new()
        }
    };

    let mut a = mk();
    let mut out_a = Vec::new();
    let ra = a.feed(input, &mut out_a);

    let split = split % (input.len() + 1);
    let mut b = mk();
    let mut out_b = Vec::new();
    let rb = b
        .feed(&input[..split], &mut out_b)
        .and_then(|()| b.feed(&input[split..], &mut out_b));
    assert_eq!(ra, rb, "split at {split}");
    assert_eq!(out_a, out_b, "split at {split}");
    assert_eq!(state(&a), state(&b));

    if flags & 2 != 0 {
        let mut d = mk();
        let mut out_d = Vec::new();
        let mut rd = Ok(());
        for byte in input {
            rd = d.feed(std::slice::from_ref(byte), &mut out_d);
            if rd.is_err() {
                break;
            }
        }
        assert_eq!(ra, rd);
        assert_eq!(out_a, out_d);
        assert_eq!(state(&a), state(&d));
    }

    assert!(out_a.len() <= input.len());
    match ra {
        Err(e) => {
            let _ = e.to_string();
            let mut more = Vec::new();
            assert_eq!(a.feed(&[0x17, 3, 3, 0, 64], &mut more), Err(e));
            assert!(more.is_empty());
        }
        Ok(()) => {
            if a.at_boundary() {
                let ccs = if a.saw_change_cipher_spec() { 6 } else { 0 };
                assert_eq!(
                    out_a.len() + 5 * a.data_records() as usize + ccs,
                    input.len()
                );
            }
            if out_a.len() >= 64 {
                let max = usize::from(flags >> 2).max(1) * 100;
                let mut wire = if a.saw_change_cipher_spec() {
                    CHANGE_CIPHER_SPEC.to_vec()
                } else {
                    Vec::new()
                };
                write_records(&out_a[..64], 64, &mut wire);
                write_records(&out_a[64..], max, &mut wire);
                let mut r = mk();
                let mut back = Vec::new();
                r.feed(&wire, &mut back).expect("own records refused");
                assert_eq!(back, out_a);
                assert!(r.at_boundary());
            }
        }
    }
});
