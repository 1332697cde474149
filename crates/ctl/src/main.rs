//! `mtproxy-ctl`: see the library's documentation and `mtproxy-ctl --help`.

use clap::Parser;

fn main() {
    let cli = mtproxy_ctl::cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(mtproxy_ctl::cli::run(cli));
    std::process::exit(code);
}
