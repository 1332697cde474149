//! The master of `-M N` workers: accepts nothing itself; serves `/stats` with the workers'
//! counters summed, forwards signals, replaces dead workers, and on SIGTERM/SIGINT stops
//! them and waits (drain timeout plus a second) before killing stragglers.
//!
//! Starting, watching and asking the workers is `workers`; a worker's own loop is
//! `main_loop`.

use crate::stats::{self, ConfigMeta};
use crate::{cli, process, workers};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{error, info, warn};

/// Runs the master until SIGTERM/SIGINT; returns the exit code.
pub async fn run(
    opts: cli::Options,
    listeners: Vec<std::net::TcpListener>,
    stats_listener: Option<std::net::TcpListener>,
    meta: Arc<RwLock<ConfigMeta>>,
    base_view: stats::StatsView,
    secrets: usize,
) -> ExitCode {
    use crate::signals::Signals;
    use nix::sys::signal::Signal;
    let master = match workers::start(opts.workers, &listeners) {
        Ok(m) => m,
        Err(e) => {
            error!("cannot start workers: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(fatal) = process::drop_privileges(opts.user.as_deref()) {
        fatal.report();
        master.stop();
        master.signal_all(Signal::SIGTERM);
        return fatal.exit_code();
    }
    process::server_init_logs(&opts);
    {
        let m = master.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let snaps = m.collect().await;
                *m.snapshots.lock().expect("snapshots") = snaps;
            }
        });
    }
    if let Some(l) = stats_listener {
        let m = master.clone();
        let view: stats::ViewFn = Arc::new(move || {
            let snaps = m.snapshots.lock().expect("snapshots").clone();
            let (total, pool) = stats::combine(&snaps, secrets);
            let mut v = base_view.clone();
            stats::fill_view(&mut v, &total, &meta);
            v.process_pool = Some(pool);
            v
        });
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(stats::serve(l, view, false));
            }
            Err(e) => error!("cannot register the stats listener: {e}"),
        }
    }
    // The master never accepts, but keeps the listening sockets open for its whole life:
    // workers started (and replaced) later inherit them from here.
    let _listeners = listeners;
    let Some(Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
    }) = Signals::install()
    else {
        return ExitCode::from(1);
    };
    info!("main loop (master of {} workers)", opts.workers);
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                info!("received signal 01 (SIGHUP): forwarding to the workers");
                master.signal_all(Signal::SIGHUP);
            }
            _ = usr1.recv() => {
                process::on_sigusr1(opts.log_file.as_deref());
                master.signal_all(Signal::SIGUSR1);
            }
        }
    };
    master.stop();
    master.signal_all(Signal::SIGTERM);
    let end = tokio::time::Instant::now() + opts.drain_timeout + Duration::from_secs(1);
    while !master.pids().is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = master.pids();
    if !left.is_empty() {
        warn!(
            "WARNING: {} children unfinished --> they are now killed",
            left.len()
        );
        master.signal_all(Signal::SIGKILL);
    }
    info!("Terminated by {name}.");
    ExitCode::SUCCESS
}
