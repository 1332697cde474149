//! The proxy-secret file (`--aes-pwd`, default `secret`): the shared key for ME handshakes.
//!
//! The whole file is the secret, raw (no trimming, no hex). C's outcomes
//! (net/net-crypto-aes.c: aes_load_pwd_file; engine/engine.c: engine_init; backend-ops §2.6):
//! - cannot open, `--aes-pwd` not given: carry on without a secret (every ME handshake will
//!   fail) — [`SecretFile::Absent`] with the verbosity-1 reason;
//! - cannot open with `--aes-pwd`, read error, more than 16384 bytes, or outside 32..=256
//!   bytes: fatal, exit 1.
//!
//! This module reads the file; it does not log or exit.

use crate::fatal::Fatal;
use md5::{Digest, Md5};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// The file used when `--aes-pwd` is not given (DEFAULT_PWD_FILE).
pub const DEFAULT_FILE: &str = "secret";
/// MIN_PWD_LEN.
pub const MIN_LEN: usize = 32;
/// MAX_PWD_LEN.
pub const MAX_LEN: usize = 256;
/// MAX_PWD_CONFIG_LEN: larger files are refused before the length check.
pub const MAX_FILE_LEN: usize = 16384;

/// The loaded proxy secret. `Debug` shows its length and MD5, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySecret {
    pub bytes: Vec<u8>,
}

impl ProxySecret {
    /// The first 4 bytes, verbatim: the key_select sent in RPC_NONCE.
    pub fn key_select(&self) -> [u8; 4] {
        let mut k = [0u8; 4];
        k.copy_from_slice(&self.bytes[..4]);
        k
    }

    /// Lowercase MD5 hex of the whole file: `aes_pwd_hash` in stats.
    pub fn md5_hex(&self) -> String {
        hex::encode(Md5::digest(&self.bytes))
    }
}

impl fmt::Debug for ProxySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySecret")
            .field("len", &self.bytes.len())
            .field("md5", &self.md5_hex())
            .finish()
    }
}

/// A non-fatal outcome of [`load_detailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFile {
    Loaded(ProxySecret),
    /// Not opened and not asked for with `--aes-pwd`. `reason` is C's verbosity-1 line,
    /// `cannot open password file <f>: <error>`.
    Absent {
        reason: String,
    },
}

/// [`load_detailed`] without the reason for an absent file.
pub fn load(path: &Path, explicit: bool) -> Result<Option<ProxySecret>, Fatal> {
    Ok(match load_detailed(path, explicit)? {
        SecretFile::Loaded(s) => Some(s),
        SecretFile::Absent { .. } => None,
    })
}

/// Loads the secret file. `explicit` is whether `--aes-pwd` was given.
///
/// `Err` holds C's stderr text for the fatal case (exit 1): the
/// ``fatal: cannot load secret definition file `<f>'`` line, preceded for a wrong size by
/// `secret file <f> too long or too short: loaded N bytes, expected 32..256` (lines joined
/// with `\n` in its text).
pub fn load_detailed(path: &Path, explicit: bool) -> Result<SecretFile, Fatal> {
    let name = path.display();
    let fatal_line = format!("fatal: cannot load secret definition file `{name}'");
    let fatal = || Fatal::stderr(1, &fatal_line);
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if !explicit => {
            return Ok(SecretFile::Absent {
                reason: format!("cannot open password file {name}: {}", super::strerror(&e)),
            })
        }
        Err(_) => return Err(fatal()),
    };
    let mut bytes = Vec::new();
    if file
        .take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Err(fatal());
    }
    if bytes.len() > MAX_FILE_LEN {
        return Err(fatal());
    }
    if !(MIN_LEN..=MAX_LEN).contains(&bytes.len()) {
        return Err(Fatal::stderr(
            1,
            &format!(
                "secret file {name} too long or too short: loaded {} bytes, expected \
                 {MIN_LEN}..{MAX_LEN}\n{fatal_line}",
                bytes.len()
            ),
        ));
    }
    Ok(SecretFile::Loaded(ProxySecret { bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_dir;

    fn write(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
        let p = dir.join(name);
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 0xc4) as u8).collect();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn sizes() {
        let dir = test_dir("aes_sizes");
        for (len, good) in [
            (0, false),
            (31, false),
            (32, true),
            (128, true),
            (256, true),
            (257, false),
            (16384, false),
            (16385, false),
        ] {
            let p = write(&dir, &format!("s{len}"), len);
            for explicit in [false, true] {
                let r = load(&p, explicit);
                assert_eq!(r.is_ok(), good, "len {len}");
                if let Ok(Some(s)) = &r {
                    assert_eq!(s.bytes.len(), len);
                }
            }
        }
        let p = write(&dir, "short", 31);
        assert_eq!(
            load(&p, false).unwrap_err().to_string(),
            format!(
                "secret file {0} too long or too short: loaded 31 bytes, expected 32..256\n\
                 fatal: cannot load secret definition file `{0}'",
                p.display()
            )
        );
        let p = write(&dir, "long", 257);
        assert!(load(&p, true)
            .unwrap_err()
            .to_string()
            .contains("loaded 257 bytes, expected 32..256\n"));
        // Over 16384 bytes C refuses before the length message.
        let p = write(&dir, "huge", 16385);
        assert_eq!(
            load(&p, true).unwrap_err().to_string(),
            format!(
                "fatal: cannot load secret definition file `{}'",
                p.display()
            )
        );
    }

    #[test]
    fn missing_file() {
        let dir = test_dir("aes_missing");
        let p = dir.join("nope");
        assert_eq!(load(&p, false), Ok(None));
        match load_detailed(&p, false).unwrap() {
            SecretFile::Absent { reason } => assert_eq!(
                reason,
                format!(
                    "cannot open password file {}: No such file or directory",
                    p.display()
                )
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            load(&p, true).unwrap_err().to_string(),
            format!(
                "fatal: cannot load secret definition file `{}'",
                p.display()
            )
        );
    }

    #[test]
    fn read_error_is_fatal_even_when_implicit() {
        // A directory opens but cannot be read (EISDIR).
        let dir = test_dir("aes_dir");
        assert!(load(&dir, false)
            .unwrap_err()
            .to_string()
            .starts_with("fatal: "));
    }

    #[test]
    fn key_select_md5_and_debug() {
        let dir = test_dir("aes_key");
        let mut bytes = vec![0xc4, 0xf9, 0xfa, 0xca];
        bytes.resize(128, 0x5a);
        let p = dir.join("secret");
        std::fs::write(&p, &bytes).unwrap();
        let s = load(&p, true).unwrap().unwrap();
        assert_eq!(s.key_select(), [0xc4, 0xf9, 0xfa, 0xca]);
        assert_eq!(s.bytes, bytes);
        assert_eq!(s.md5_hex(), hex::encode(Md5::digest(&bytes)));
        assert_eq!(s.md5_hex().len(), 32);
        let dbg = format!("{s:?}");
        assert!(dbg.contains("len: 128"), "{dbg}");
        assert!(!dbg.contains("bytes") && !dbg.contains("[196"), "{dbg}");
        // Raw: whitespace and newlines are part of the secret.
        let p = dir.join("ws");
        std::fs::write(&p, format!(" {}\n", "a".repeat(30))).unwrap();
        assert_eq!(load(&p, false).unwrap().unwrap().bytes.len(), 32);
    }

    #[test]
    fn md5_known_value() {
        let s = ProxySecret {
            bytes: b"abc".to_vec(),
        };
        assert_eq!(s.md5_hex(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
