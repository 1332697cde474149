//! The serving process's life after start-up (a single process, or one `-M` worker): an
//! accept loop per client port, signals (SIGHUP reloads the ME files, SIGUSR1 reopens the
//! log), and on SIGTERM/SIGINT a drain of the open sessions for up to the drain timeout; a
//! second signal ends the process at once (C).
//!
//! It is not the `-M` master's loop (`master`), which accepts nothing.

use crate::me_files::{self, MeFiles};
use crate::middle::Middle;
use crate::shared::Shared;
use crate::stats::ConfigMeta;
use crate::{cli, listener, process};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{error, info, warn};

/// What SIGHUP reloads in ME mode.
pub struct Reloader {
    pub files: MeFiles,
    pub mid: Arc<Middle>,
    pub meta: Arc<RwLock<ConfigMeta>>,
}

/// Serves until SIGTERM/SIGINT and the drain; returns the exit code.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    reloader: Option<Reloader>,
    opts: &cli::Options,
) -> ExitCode {
    use crate::signals::Signals;
    let mut tasks = Vec::new();
    let (stop_accepting, stop) = tokio::sync::watch::channel(false);
    for l in listeners {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => tasks.push(tokio::spawn(listener::accept_loop(
                l,
                shared.clone(),
                stop.clone(),
            ))),
            Err(e) => {
                error!("cannot register listener: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let Some(Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
    }) = Signals::install()
    else {
        return ExitCode::from(1);
    };
    info!("main loop");
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match &reloader {
                Some(r) => {
                    info!("received signal 01 (SIGHUP): reloading");
                    me_files::reload(&r.files, &r.mid, &shared.stats, &r.meta);
                }
                None => info!("received signal 01 (SIGHUP): nothing to reload in direct mode"),
            },
            _ = usr1.recv() => process::on_sigusr1(opts.log_file.as_deref()),
        }
    };
    // Stop accepting (what is queued is still accepted, then the listening sockets close
    // with their tasks), then let open sessions finish for up to the drain timeout; a second
    // signal ends the process at once (C).
    let _ = stop_accepting.send(true);
    // Wait until the accept tasks are gone: their listening sockets are closed then.
    for t in tasks {
        let _ = t.await;
    }
    let open = shared.stats.active.load(Relaxed);
    info!(
        "{name} handled: stopped accepting; draining {open} session(s) for up to {:?}",
        opts.drain_timeout
    );
    let drained = async {
        while shared.stats.active.load(Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(opts.drain_timeout, drained) => {}
        _ = term.recv() => { warn!("SIGTERM handled immediately."); return ExitCode::from(1); }
        _ = int.recv() => { warn!("SIGINT handled immediately."); return ExitCode::from(1); }
    }
    let left = shared.stats.active.load(Relaxed);
    if left > 0 {
        warn!("drain timeout: closing {left} session(s)");
    }
    info!("Terminated by {name}.");
    ExitCode::SUCCESS
}
