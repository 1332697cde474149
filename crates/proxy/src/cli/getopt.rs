//! The getopt engine: GNU `getopt_long` as C's binary uses it (argument permutation, `--`
//! ends the options, clustered short options, unambiguous prefixes of C's long names), its
//! diagnostics and exit codes, and the checks on positionals.
//!
//! Which options exist is `table`; what each does to [`Options`] is `apply`.

use super::options::{CliExit, Options};
use super::table::{lookup_long, lookup_short, Arg, Lookup};
use super::usage::usage_text;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Parses `std::env::args_os()`.
pub fn parse_env() -> Result<Options, CliExit> {
    parse(std::env::args_os())
}

/// Parses a full argument vector; the first item is `argv[0]`.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Options, CliExit> {
    let mut it = args.into_iter();
    let argv0 = it
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mtproto-proxy".to_string());
    let args: Vec<OsString> = it.collect();
    Parser::new(argv0).run(&args)
}

pub(super) struct Parser {
    pub(super) argv0: String,
    pub(super) opts: Options,
}

pub(super) fn lossy(v: &OsStr) -> String {
    v.to_string_lossy().into_owned()
}

impl Parser {
    pub(super) fn new(argv0: String) -> Self {
        Parser {
            argv0,
            opts: Options::default(),
        }
    }

    /// A usage error: the diagnostics on stderr, the usage text on stdout, exit 2.
    pub(super) fn usage_err(&self, lines: &[String]) -> CliExit {
        let mut stderr = String::new();
        for l in lines {
            stderr.push_str(l);
            stderr.push('\n');
        }
        CliExit {
            code: 2,
            stdout: usage_text(&self.argv0),
            stderr,
        }
    }

    pub(super) fn usage1(&self, msg: String) -> CliExit {
        self.usage_err(&[msg])
    }

    /// getopt's own diagnostic followed by the C engine's `Unrecognized option`.
    pub(super) fn getopt_err(&self, msg: String) -> CliExit {
        self.usage_err(&[
            format!("{}: {}", self.argv0, msg),
            "Unrecognized option".into(),
        ])
    }

    /// A fatal error without usage (C exits directly or aborts on an assertion).
    pub(super) fn fatal(code: i32, msg: String) -> CliExit {
        CliExit {
            code,
            stdout: String::new(),
            stderr: msg + "\n",
        }
    }

    pub(super) fn run(mut self, args: &[OsString]) -> Result<Options, CliExit> {
        if args.is_empty() {
            return Err(self.usage1(format!(
                "{}: no arguments given: expected options and <config-file> (see usage)",
                self.argv0
            )));
        }
        let mut positionals: Vec<&OsString> = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let b = arg.as_bytes();
            if b == b"--" {
                positionals.extend(args[i..].iter());
                break;
            }
            if b.len() > 2 && b.starts_with(b"--") {
                let body = &b[2..];
                let (name_b, inline) = match body.iter().position(|&x| x == b'=') {
                    Some(p) => (&body[..p], Some(OsStr::from_bytes(&body[p + 1..]))),
                    None => (body, None),
                };
                let name = String::from_utf8_lossy(name_b);
                let def = match lookup_long(&name) {
                    Lookup::Found(d) => d,
                    Lookup::Unknown => {
                        return Err(self.getopt_err(format!(
                            "unrecognized option '--{}'",
                            String::from_utf8_lossy(body)
                        )))
                    }
                    Lookup::Ambiguous(c) => {
                        let list: Vec<String> = c.iter().map(|n| format!("'--{n}'")).collect();
                        return Err(self.getopt_err(format!(
                            "option '--{}' is ambiguous; possibilities: {}",
                            String::from_utf8_lossy(body),
                            list.join(" ")
                        )));
                    }
                };
                let value: Option<&OsStr> = match def.arg {
                    Arg::No => {
                        if inline.is_some() {
                            return Err(self.getopt_err(format!(
                                "option '--{}' doesn't allow an argument",
                                def.long
                            )));
                        }
                        None
                    }
                    Arg::Optional => inline,
                    Arg::Required => match inline {
                        Some(v) => Some(v),
                        None if i < args.len() => {
                            i += 1;
                            Some(args[i - 1].as_os_str())
                        }
                        None => {
                            return Err(self.getopt_err(format!(
                                "option '--{}' requires an argument",
                                def.long
                            )))
                        }
                    },
                };
                self.apply(def, value)?;
            } else if b.len() > 1 && b[0] == b'-' {
                let mut j = 1;
                while j < b.len() {
                    let ch = b[j];
                    let def = match lookup_short(ch) {
                        Some(d) => d,
                        None => {
                            let shown = String::from_utf8_lossy(&b[j..])
                                .chars()
                                .next()
                                .unwrap_or('?');
                            return Err(self.getopt_err(format!("invalid option -- '{shown}'")));
                        }
                    };
                    j += 1;
                    if def.arg == Arg::Required {
                        let value = if j < b.len() {
                            OsStr::from_bytes(&b[j..])
                        } else if i < args.len() {
                            i += 1;
                            args[i - 1].as_os_str()
                        } else {
                            return Err(self.getopt_err(format!(
                                "option requires an argument -- '{}'",
                                ch as char
                            )));
                        };
                        self.apply(def, Some(value))?;
                        break;
                    }
                    // Short forms of optional-argument options take no argument at all.
                    self.apply(def, None)?;
                }
            } else {
                positionals.push(arg);
            }
        }
        match positionals.len() {
            0 => {}
            1 => self.opts.config_file = Some(PathBuf::from(positionals[0])),
            n => {
                let shown: Vec<String> = positionals
                    .iter()
                    .map(|p| format!("'{}'", p.to_string_lossy()))
                    .collect();
                return Err(self.usage1(format!(
                    "too many arguments: expected at most one <config-file>, got {n}: {} \
                     (note: --verbosity/--daemonize/--multithread take a value only as --name=N)",
                    shown.join(" ")
                )));
            }
        }
        Ok(self.opts)
    }
}
