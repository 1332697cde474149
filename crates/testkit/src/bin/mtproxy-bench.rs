//! `mtproxy-bench`: throughput, idle memory, handshake rate and added latency of the proxy
//! against a plain TCP relay floor and optional reference binaries, on loopback. See
//! `mtproxy-bench --help`, [`mtproxy_testkit::bench`] and docs/performance.md.

fn main() -> std::process::ExitCode {
    mtproxy_testkit::bench::main()
}
