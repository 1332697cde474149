//! The abridged transport decoder: `transport::parse_frame(Tag::Abridged, ..)` walked over a
//! stream of frames. Input: side (1 byte, bit 0: from server) ‖ decrypted stream.
//! Invariants: see `mtproxy_fuzz::check_transport_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::obfs2::Tag;

fuzz_target!(|data: &[u8]| {
    mtproxy_fuzz::check_transport_stream(Tag::Abridged, data);
});
