//! Fake-TLS ClientHello: `tls::detect`, `tls::sni_of` and `tls::check_client_hello`.
//!
//! Input: flags (1) ‖ timestamp offset from NOW (2, LE i16) ‖ hello bytes.
//! flags bit 0: set the record header to `16 03 01 <len>` so `detect` wants exactly these
//! bytes; bit 1: forge the HMAC random for secret S with timestamp NOW + offset (so the
//! checks after the HMAC are reached); bit 2: SniPolicy::AllowMissing; bit 3: local port
//! 80; bit 4: one extra buffered byte; bit 5: secrets [S2, S] instead of [S].
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproto_wire::tls::{
    build_server_hello, check_client_hello, detect, hello_hmac, sni_of, verify_server_hello,
    Detect, ExtensionOrder, ForwardTarget, HelloVerdict, RejectReason, ReplayCache, Sni, SniPolicy,
    DETECT_BYTES, MAX_HELLO_LEN,
};
use mtproxy_fuzz::{Cursor, DOMAIN, NOW, S, S2};

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let delta = i64::from(c.u16() as i16);
    let mut hello = c.rest().to_vec();
    if flags & 1 != 0 && hello.len() >= 5 && hello.len() - 5 <= 0xffff {
        hello[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
        let len = (hello.len() - 5) as u16;
        hello[3..5].copy_from_slice(&len.to_be_bytes());
    }
    let ts = NOW + delta;
    if flags & 2 != 0 && hello.len() >= 43 {
        let mut rnd = hello_hmac(&S, &hello);
        for (r, t) in rnd[28..].iter_mut().zip((ts as u32).to_le_bytes()) {
            *r ^= t;
        }
        hello[11..43].copy_from_slice(&rnd);
    }
    let policy = if flags & 4 != 0 {
        SniPolicy::AllowMissing
    } else {
        SniPolicy::RequireKnown
    };
    let port80 = flags & 8 != 0;
    let extra = usize::from(flags & 16 != 0);
    let secrets: &[[u8; 16]] = if flags & 32 != 0 { &[S2, S] } else { &[S] };
    let domains = vec![DOMAIN.to_string(), "other.example".to_string()];

    // detect: a prefix never contradicts the full answer.
    let d = detect(&hello);
    if let Detect::Hello { need } = d {
        assert!((517..=32772).contains(&need), "need {need}");
    }
    for k in 0..hello.len().min(DETECT_BYTES + 1) {
        let dk = detect(&hello[..k]);
        match d {
            Detect::Hello { .. } => assert!(dk == Detect::NeedMore || (k >= 5 && dk == d)),
            Detect::NotTls => assert!(dk == Detect::NeedMore || dk == Detect::NotTls),
            Detect::NeedMore => assert_eq!(dk, Detect::NeedMore),
        }
    }

    // sni_of: a name is a NUL-free slice of the input.
    if let Sni::Name(n) = sni_of(&hello) {
        assert!(!n.contains(&0));
        let (start, end) = (
            hello.as_ptr() as usize,
            hello.as_ptr() as usize + hello.len(),
        );
        assert!(n.as_ptr() as usize >= start && n.as_ptr() as usize + n.len() <= end);
    }

    let mut cache = ReplayCache::new(1024);
    let v = check_client_hello(
        &hello, extra, secrets, &domains, NOW, &mut cache, policy, port80,
    );
    match v {
        HelloVerdict::Accept {
            secret_index,
            domain,
            cipher,
            session_id,
            client_random,
            timestamp,
        } => {
            assert!(secret_index < secrets.len());
            assert!(!port80 && extra == 0 && hello.len() <= MAX_HELLO_LEN);
            assert!(matches!(d, Detect::Hello { need } if need == hello.len()));
            assert!((0x1301..=0x1303).contains(&cipher));
            assert_eq!(session_id, hello[44..76]);
            assert_eq!(client_random, hello[11..43]);
            let secret = secrets[secret_index];
            assert_eq!(hello_hmac(&secret, &hello)[..28], client_random[..28]);
            assert!(i64::from(timestamp) <= NOW + 3 && i64::from(timestamp) > NOW - 600);
            if flags & 2 != 0 && secret == S {
                assert_eq!(i64::from(timestamp), ts as i32 as i64);
            }
            match domain {
                Some(i) => assert_eq!(sni_of(&hello), Sni::Name(domains[i].as_bytes())),
                None => {
                    assert_eq!(policy, SniPolicy::AllowMissing);
                    assert_eq!(sni_of(&hello), Sni::Missing);
                }
            }
            // The same hello again is a replay.
            let again =
                check_client_hello(&hello, 0, secrets, &domains, NOW, &mut cache, policy, false);
            assert!(
                matches!(
                    again,
                    HelloVerdict::Reject {
                        reason: RejectReason::Replay,
                        ..
                    }
                ),
                "{again:?}"
            );
            // The reply to it passes the client's check.
            let reply = build_server_hello(
                &secret,
                &client_random,
                &session_id,
                cipher,
                &[9; 32],
                &hello[..hello.len().min(300)],
                ExtensionOrder::KeyShareFirst,
            );
            assert_eq!(
                verify_server_hello(&secret, &client_random, &reply),
                Ok(reply.len())
            );
        }
        HelloVerdict::Reject { reason, forward_to } => {
            let _ = reason.name();
            if let ForwardTarget::SniDomain(i) = forward_to {
                assert!(i < domains.len());
                assert_eq!(
                    sni_of(&hello[..hello.len().min(MAX_HELLO_LEN)]),
                    Sni::Name(domains[i].as_bytes())
                );
            }
            assert!(forward_to.index() < domains.len());
        }
    }
});
