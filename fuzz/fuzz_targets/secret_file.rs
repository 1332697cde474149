//! The `--mtproto-secret-file` parser inside `mtproxy::cli::parse`: the fuzz input is the
//! file's content, written to a file private to this process (under $TMPDIR), then parsed
//! with `mtproto-proxy --mtproto-secret-file <that file>`.
//!
//! Checked against the rule of spec client.md §7.1, written out again here: per line, `#`
//! starts a comment; tokens are split on runs of `,`, space, tab, CR and LF; each must be
//! exactly 32 hex digits; no secret at all or more than 128 is an error (exit 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtproxy::cli;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn reference(data: &[u8]) -> Option<Vec<[u8; 16]>> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.split(|&b| b == b'#').next().unwrap_or(&[]);
        for tok in line
            .split(|&b| b",\t\r \n".contains(&b))
            .filter(|t| !t.is_empty())
        {
            if tok.len() != 32 || !tok.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let mut s = [0u8; 16];
            hex::decode_to_slice(tok, &mut s).ok()?;
            out.push(s);
        }
    }
    (!out.is_empty() && out.len() <= cli::MAX_SECRETS).then_some(out)
}

static PATH: OnceLock<PathBuf> = OnceLock::new();

/// Overwrites the file without truncating it to zero first: on ext4 a truncate-to-zero
/// followed by a write forces the blocks out to disk (auto_da_alloc), which made this
/// target 200 times slower.
fn write_in_place(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open the secret file");
    f.write_all(data).expect("write the secret file");
    f.set_len(data.len() as u64).expect("cut the secret file");
}

fuzz_target!(|data: &[u8]| {
    let path = PATH.get_or_init(|| mtproxy_fuzz::private_dir("secret_file").join("secrets"));
    write_in_place(path, data);
    let args: Vec<OsString> = vec![
        "mtproto-proxy".into(),
        "--mtproto-secret-file".into(),
        path.into(),
    ];
    let expected = reference(data);
    match cli::parse(args) {
        Ok(o) => assert_eq!(Some(o.secrets), expected),
        Err(e) => {
            assert_eq!(expected, None, "refused: {}", e.stderr);
            assert_eq!(e.code, 2);
            assert!(
                e.stderr.ends_with('\n') && e.stderr.contains("secret"),
                "{:?}",
                e.stderr
            );
        }
    }
});
