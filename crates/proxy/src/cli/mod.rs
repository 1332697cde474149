//! Command-line parsing, compatible with the C `mtproto-proxy`.
//!
//! The C binary parses its options with GNU `getopt_long` (argument permutation, `--` ends the
//! options, unambiguous prefixes of long names are accepted). This module reproduces that model
//! and the C validation rules (spec: backend-ops.md §3, client.md §1.1 and §7.1), with these
//! deliberate differences:
//!
//! * zero positionals is allowed (it means direct-to-DC mode); only a completely empty command
//!   line is a usage error;
//! * up to 128 `-S` secrets are accepted (the official C asserts at the 17th, the fork allows 128);
//! * assertion aborts of the C (`-H` port ≥ 65536, `-M` out of range) become clean exit-1 errors;
//! * `-p` above 65535 is taken modulo 65536 as C does (its socket code keeps the low 16
//!   bits), with a warning at start-up; a value that wraps to 0 (C: a random port) and a
//!   range past 65535 are refused, exit 2;
//! * every error message names the option and the offending value;
//! * extension options (`--direct`, `--dc-override`, `--handshake-timeout`, `--idle-timeout`,
//!   `--public-host`, `--no-fast-mode`, `--mask-host`, `--tls-require-sni`) exist; they must be spelled in full (they never take part in prefix
//!   abbreviation, so abbreviations resolve exactly as in the C).
//!
//! - `options`: [`Options`], C's defaults and limits, [`CliExit`];
//! - `table`: the option table (also read by `mtproxy-ctl`: [`find_long`], [`find_short`]);
//! - `usage`: the usage text and [`version`];
//! - `getopt`: the getopt_long engine ([`parse`]);
//! - `apply`: what each option does;
//! - `c_num`, `values`: C-style number parsing and the structured values.

mod apply;
mod c_num;
mod getopt;
mod options;
mod table;
mod usage;
mod values;

pub use getopt::{parse, parse_env};
pub use options::*;
pub use table::{find_long, find_short, Arg, OptionName};
pub use usage::{usage_text, version};

#[cfg(test)]
use {
    std::ffi::OsString,
    std::net::Ipv4Addr,
    std::path::PathBuf,
    std::time::Duration,
    table::{Id, OPTIONS},
};

#[cfg(test)]
mod tests;
