//! The command line: `mtproxy::cli::parse` on an argv made of the fuzz input split on NUL
//! bytes (after a fixed argv[0]).
//!
//! Nothing outside a private directory is touched: at the first input the process moves
//! into a fresh directory under $TMPDIR holding one file, `s` (two valid secrets, for
//! `--mtproto-secret-file s`), and every `/` in the input becomes `_`, so any path an option
//! names resolves inside that directory. `cli::parse` itself writes nothing.
//!
//! Invariants: an accepted command line stays within the C limits (128 secrets, 128 client
//! ports, 16 NAT rules, 256 workers, at most one config file); a refused one has a non-zero
//! exit code and says something; parsing is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproxy::cli;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Once;

static INIT: Once = Once::new();

fn argv(data: &[u8]) -> Vec<OsString> {
    let mut v = vec![OsString::from("mtproto-proxy")];
    if !data.is_empty() {
        v.extend(data.split(|&b| b == 0).map(|a| {
            OsString::from_vec(
                a.iter()
                    .map(|&b| if b == b'/' { b'_' } else { b })
                    .collect(),
            )
        }));
    }
    v
}

fuzz_target!(|data: &[u8]| {
    INIT.call_once(|| {
        let dir = mtproxy_fuzz::private_dir("cli_argv");
        std::fs::write(
            dir.join("s"),
            "0123456789abcdef0123456789abcdef # first\nFEDCBA9876543210FEDCBA9876543210,\n",
        )
        .expect("write the secret file");
        std::env::set_current_dir(dir).expect("enter the private dir");
    });
    let r = cli::parse(argv(data));
    match &r {
        Ok(o) => {
            assert!(o.secrets.len() <= cli::MAX_SECRETS);
            assert!(o.ports.len() <= cli::MAX_HTTP_PORTS);
            assert!(o.nat_info.len() <= cli::MAX_NAT_INFO_RULES);
            assert!(o.workers <= cli::MAX_WORKERS);
            assert!(o.ping_interval > 0.0 && o.ping_interval.is_finite());
            let _ = o.direct_mode();
        }
        Err(e) => {
            assert_ne!(e.code, 0);
            assert!(!e.stdout.is_empty() || !e.stderr.is_empty());
            let _ = e.to_string();
        }
    }
    let again = cli::parse(argv(data));
    assert_eq!(format!("{r:?}"), format!("{again:?}"));
});
