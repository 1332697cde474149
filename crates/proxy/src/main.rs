//! `mtproto-proxy`: the binary. Parses the C-compatible command line and runs the proxy.

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match mtproxy::cli::parse_env() {
        Ok(o) => o,
        Err(e) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(e.stdout.as_bytes());
            let _ = std::io::stderr().write_all(e.stderr.as_bytes());
            return ExitCode::from(e.code as u8);
        }
    };
    mtproxy::run(opts)
}
