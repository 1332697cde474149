//! The floor: a minimal plain TCP relay, no crypto and no protocol, in its own process so
//! its CPU is read from `/proc` exactly like the proxy's. The bench starts it by running its
//! own binary with `--relay-floor-child LISTEN UPSTREAM`.
//!
//! Same runtime shape as the proxy (tokio multi-thread, one worker per core), one task per
//! session, `copy_bidirectional` with 16 KiB buffers each way (the proxy's relay buffer
//! size). It is a floor for CPU per byte and per handshake, not for idle memory: it holds
//! its buffers for the whole session.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::{TcpSocket, TcpStream};

/// The child's command line: `LISTEN UPSTREAM [BUFFER]`.
pub const CHILD_FLAG: &str = "--relay-floor-child";

/// Buffer per direction unless given: the proxy's relay buffer (`bufpool::BUF_SIZE`), so
/// the floor makes as many system calls per byte as the proxy does.
pub const DEFAULT_BUF: usize = 64 * 1024;

/// Entry point of the child process (arguments after [`CHILD_FLAG`]). Prints
/// `main loop ADDR` on stderr once listening.
pub fn child_main(args: &[String]) -> ExitCode {
    let parse = |i: usize| args.get(i).and_then(|a| a.parse::<SocketAddr>().ok());
    let (Some(listen), Some(upstream)) = (parse(0), parse(1)) else {
        eprintln!("usage: {CHILD_FLAG} LISTEN UPSTREAM [BUFFER]");
        return ExitCode::from(2);
    };
    let buf = args
        .get(2)
        .and_then(|b| b.parse::<usize>().ok())
        .unwrap_or(DEFAULT_BUF)
        .max(1024);
    if !listen.ip().is_loopback() || !upstream.ip().is_loopback() {
        eprintln!("the relay floor only uses loopback");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(4096)?;
        eprintln!("main loop {}", listener.local_addr()?);
        loop {
            let (mut client, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let _ =
                    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, buf, buf).await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })
    .map_or_else(
        |e| {
            eprintln!("relay floor: {e}");
            ExitCode::FAILURE
        },
        |()| ExitCode::SUCCESS,
    )
}
