//! mtproxy: a Telegram MTProto proxy, drop-in for the C `mtproto-proxy`.

pub mod cli;

/// Runs the proxy until it is told to stop; returns the process exit code.
pub fn run(opts: cli::Options) -> std::process::ExitCode {
    let _ = opts;
    std::process::ExitCode::SUCCESS
}
