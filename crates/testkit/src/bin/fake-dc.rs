//! `fake-dc`: the testkit's fake Telegram DC as a process, for driving other clients
//! (Telethon, the C proxy) against it by hand or from scripts.
//!
//! `fake-dc --listen 127.0.0.1:PORT [--silent] [--close-after-header]` prints
//! `listening <addr>` on stdout once bound, then serves until killed, logging each finished
//! connection on stderr. Loopback addresses only.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use mtproxy_testkit::{DcConfig, FakeDc};

const USAGE: &str = "usage: fake-dc --listen 127.0.0.1:PORT [--silent] [--close-after-header]";

fn parse_args() -> Result<(SocketAddr, DcConfig), String> {
    let mut listen = None;
    let mut config = DcConfig::echo();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().ok_or("--listen needs an address")?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {v}: {e}"))?,
                );
            }
            "--silent" => config = config.silent(),
            "--close-after-header" => config = config.close_after_header(),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok((listen.ok_or(USAGE)?, config))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, config) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let dc = match FakeDc::start_with(listen, config).await {
        Ok(dc) => dc,
        Err(e) => {
            eprintln!("fake-dc: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening {}", dc.addr());
    let _ = std::io::stdout().flush();
    // Connections close in any order: remember which ones were logged.
    let mut logged: Vec<bool> = Vec::new();
    loop {
        let count = logged.iter().filter(|l| **l).count();
        let conns = dc
            .wait_until(|c| c.iter().filter(|c| c.closed).count() > count)
            .await;
        logged.resize(conns.len(), false);
        for c in &conns {
            if !c.closed || logged[c.id] {
                continue;
            }
            logged[c.id] = true;
            eprintln!(
                "conn {} from {}: tag {:?} dc {:?} packets {} resPQ {} bytes {} frame_error {:?}",
                c.id,
                c.peer,
                c.tag,
                c.dc,
                c.packets,
                c.res_pq_sent,
                c.bytes_received,
                c.frame_error
            );
        }
    }
}
