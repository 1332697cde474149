//! Process-level operations, C's way (spec backend-ops §4): raising the fd limit for `-c`,
//! `--nice`, `-d` (setsid and stdio to the log, no fork), the `-l` log file and its reopening
//! on SIGUSR1, and dropping privileges (`-u`) after every port is bound.
//!
//! Logs go where C sends them, when C does (spec backend-ops §4.5): stderr from the start;
//! the `-l` file only once `-d` takes effect (after the ports are bound and privileges
//! dropped, C's `server_init`) or on SIGUSR1. So a start with an unwritable `-l` path
//! works, as in C.
//!
//! Differences from C, on purpose: a log file that cannot be opened, and SIGUSR1 without
//! `-l`, keep the output where it was, with a warning (C points stdout and stderr at
//! /dev/null first, so its output is then lost silently); a root start without `-u` when
//! the `mtproxy` user does not exist falls back to `nobody` with a warning (C exits); a hard
//! fd limit too low for `-c` lowers the connection cap with a warning instead of exiting; the
//! limit gives every client connection the descriptors it can hold (C: one): two in direct
//! and fake-TLS modes (its socket and its upstream's: a DC, or the site of a masked
//! connection), one in plain ME mode (the ME connections are shared).

use crate::fatal::Fatal;
use nix::unistd::{Gid, Uid, User};
use std::os::fd::AsRawFd;
use std::path::Path;
use tracing::{info, warn};

/// Descriptors reserved besides the client connections: listening sockets, logs, config,
/// the ME pool (4 per ME address), the stats port (64 connections at most).
pub const FD_RESERVE: u64 = 256;

/// Raises RLIMIT_NOFILE so that `connections` client connections fit with their upstreams
/// (`per` descriptors each, plus [`FD_RESERVE`]): up to the cap, a new connection is never
/// refused by `accept` failing for want of a descriptor. Returns the connection count that
/// actually fits (lower than asked when the hard limit is lower and we cannot raise it).
pub fn raise_fd_limit(connections: u64, per: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let per = per.max(1);
    let want = connections * per + FD_RESERVE;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return connections;
    };
    if soft >= want {
        return connections;
    }
    let root = Uid::effective().is_root();
    let new_hard = if root { hard.max(want) } else { hard };
    let new_soft = want.min(new_hard);
    if setrlimit(Resource::RLIMIT_NOFILE, new_soft, new_hard).is_err() && new_hard != hard {
        // Not allowed to raise the hard limit (containers): stay within it.
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard));
    if soft < want {
        let fit = (soft.saturating_sub(FD_RESERVE) / per).max(1);
        warn!("open-file limit is {soft}: serving at most {fit} connections instead of {connections} (raise LimitNOFILE / ulimit -n)");
        return fit;
    }
    connections
}

/// `--nice N` (C: failure is reported and ignored).
pub fn set_nice(n: i32) {
    // SAFETY: plain nice(2); errno is checked through the return value.
    let r = unsafe { libc::nice(n) };
    if r == -1 {
        warn!("nice({n}) failed: {}", std::io::Error::last_os_error());
    }
}

/// Points fds 1 and 2 at `path` (append, create, 0640), as C's reopen_logs does; fd 0 goes
/// to /dev/null. Used by `-d` and on SIGUSR1 (log rotation). On an error (or without a
/// path) fds 1 and 2 stay as they were.
pub fn reopen_log(path: Option<&Path>) -> std::io::Result<()> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    if let Some(p) = path {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(p)?;
        nix::unistd::dup2(f.as_raw_fd(), 1)?;
        nix::unistd::dup2(f.as_raw_fd(), 2)?;
    }
    Ok(())
}

/// SIGUSR1: the `-l` file (re)opened for stdout and stderr (log rotation), as C. Without
/// `-l`, or when the file cannot be opened, the output stays where it was and the log says
/// so (C would send everything after it to /dev/null).
pub fn on_sigusr1(log: Option<&Path>) {
    match (log, reopen_log(log)) {
        (Some(_), Ok(())) => info!("received signal 10 (SIGUSR1): logs reopened"),
        (None, _) => warn!(
            "received signal 10 (SIGUSR1): no -l log file, logging to stderr still (C would send all output to /dev/null)"
        ),
        (Some(p), Err(e)) => warn!(
            "received signal 10 (SIGUSR1): cannot open the log file {}: {e}; logging where it went before",
            p.display()
        ),
    }
}

/// C's `server_init` for the logs, called once the ports are bound and privileges
/// dropped: with `-d`, a new session and stdio to the `-l` file (or /dev/null without
/// one); no fork, as C. Without `-d`, nothing: stderr until SIGUSR1.
pub fn server_init_logs(opts: &crate::cli::Options) {
    if opts.daemonize {
        daemonize(opts.log_file.as_deref());
    }
}

/// `-d`: a new session, stdio to the log (or /dev/null); no fork, as C.
pub fn daemonize(log: Option<&Path>) {
    let _ = nix::unistd::setsid();
    match log {
        None => {
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
                let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
            }
        }
        Some(path) => {
            if let Err(e) = reopen_log(Some(path)) {
                warn!(
                    "-d: cannot open the log file {}: {e}; logging to stderr still",
                    path.display()
                );
            }
        }
    }
}

/// Drops root privileges to `user` (default `mtproxy`, then `nobody` if that does not
/// exist): supplementary groups replaced by the user's primary group, then setgid, setuid.
/// A non-root process keeps its identity and ignores `-u`, as C. `Err` is C's fatal text
/// (stderr, exit 1).
pub fn drop_privileges(user: Option<&str>) -> Result<(), Fatal> {
    if !Uid::current().is_root() && !Uid::effective().is_root() {
        return Ok(());
    }
    let name = user.unwrap_or("mtproxy");
    let found = User::from_name(name).ok().flatten();
    let u = match (found, user) {
        (Some(u), _) => u,
        (None, Some(_)) => {
            return Err(Fatal::stderr(
                1,
                &format!(
                    "can't find the user {name} to switch to\nfatal: cannot change user to {name}"
                ),
            ))
        }
        (None, None) => match User::from_name("nobody").ok().flatten() {
            Some(u) => {
                warn!("user 'mtproxy' does not exist: dropping privileges to 'nobody' (create 'mtproxy' or pass -u)");
                u
            }
            None => return Err(Fatal::stderr(
                1,
                "can't find the user mtproxy to switch to\nfatal: cannot change user to mtproxy",
            )),
        },
    };
    if u.uid.is_root() {
        info!("running as {name} (uid 0): privileges kept");
        return Ok(());
    }
    let fail =
        |e: nix::Error| Fatal::stderr(1, &format!("fatal: cannot change user to {name}: {e}"));
    nix::unistd::setgroups(&[u.gid]).map_err(fail)?;
    nix::unistd::setgid(u.gid).map_err(fail)?;
    nix::unistd::setuid(u.uid).map_err(fail)?;
    if Uid::effective().is_root() || Gid::effective() != u.gid {
        return Err(Fatal::stderr(
            1,
            &format!("fatal: cannot change user to {name}: still privileged after setuid"),
        ));
    }
    info!(
        "dropped privileges to {name} (uid {}, gid {})",
        u.uid, u.gid
    );
    Ok(())
}
