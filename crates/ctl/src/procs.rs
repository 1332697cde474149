//! Proxy processes as the operator tools see them: started, watched and stopped by pid, and
//! measured through `/proc` (CPU seconds, RSS, the sockets a process listens on or has open).
//!
//! A [`Proc`] is either our own child (exit status known through `waitpid`) or a process
//! another invocation started (known by pid and its start time in `/proc/PID/stat`, so a
//! reused pid is not mistaken for it). Measurements cover the process and its descendants:
//! a `-M` master with its workers, or a wrapper script with the proxy it runs.
//!
//! What it is not: a general process library. Linux only; signals go to one pid at a time.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A proxy process.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks after boot): tells a reused pid apart.
    pub starttime: u64,
    child: Option<Child>,
    exit: Option<i32>,
    /// When we exec'd it (for our own children).
    pub spawned_at: Option<Instant>,
}

/// How a stop went.
#[derive(Clone, Debug, Serialize)]
pub struct Shutdown {
    /// SIGTERM until the process was gone.
    pub latency_ms: f64,
    /// Exit code (128 + signal when killed by one); `None` when not our child.
    pub exit_code: Option<i32>,
    /// It did not exit within the stop timeout and got SIGKILL.
    pub killed: bool,
}

impl Proc {
    /// Starts `program` with `args`, stdin closed, stdout and stderr appended to `log`.
    /// `detach`: in a process group of its own, so that a Ctrl-C at the operator's terminal
    /// does not reach a service the tool started (else it shares the tool's group, as the
    /// throw-away proxies of `dual-run` and `drill` do).
    pub fn spawn(program: &Path, args: &[String], log: &Path, detach: bool) -> io::Result<Proc> {
        use std::os::unix::process::CommandExt;
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let spawned_at = Instant::now();
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        if detach {
            cmd.process_group(0);
        }
        let child = cmd.spawn()?;
        let pid = child.id();
        Ok(Proc {
            pid,
            starttime: starttime(pid).unwrap_or(0),
            child: Some(child),
            exit: None,
            spawned_at: Some(spawned_at),
        })
    }

    /// A process started elsewhere; `starttime` 0 accepts whatever runs under `pid`.
    pub fn attach(pid: u32, starttime: u64) -> Proc {
        Proc {
            pid,
            starttime,
            child: None,
            exit: None,
            spawned_at: None,
        }
    }

    /// Is it still running (not exited, not a zombie, not a different process on its pid)?
    pub fn alive(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        if let Some(c) = self.child.as_mut() {
            return match c.try_wait() {
                Ok(Some(st)) => {
                    self.exit = Some(exit_code(st));
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            };
        }
        match read_stat(self.pid) {
            Some(s) => s.state != 'Z' && (self.starttime == 0 || s.starttime == self.starttime),
            None => false,
        }
    }

    /// Exit code once it has exited (our children only).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.alive();
        self.exit
    }

    /// Sends `sig` to the process (and only to it).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: kill(2) with a pid we started or were told about, and a valid signal.
        if unsafe { libc::kill(self.pid as i32, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit (polling every 5 ms); SIGKILL after.
    pub async fn terminate(&mut self, timeout: Duration) -> Shutdown {
        let t0 = Instant::now();
        if !self.alive() {
            return Shutdown {
                latency_ms: 0.0,
                exit_code: self.exit,
                killed: false,
            };
        }
        let _ = self.signal(libc::SIGTERM);
        let mut killed = false;
        while self.alive() {
            if t0.elapsed() > timeout && !killed {
                let _ = self.signal(libc::SIGKILL);
                killed = true;
            }
            if t0.elapsed() > timeout + Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Shutdown {
            latency_ms: ms(t0.elapsed()),
            exit_code: self.exit,
            killed,
        }
    }

    /// SIGKILL without waiting (clean-up on error paths).
    pub fn kill(&mut self) {
        if self.alive() {
            let _ = self.signal(libc::SIGKILL);
            if let Some(c) = self.child.as_mut() {
                if let Ok(st) = c.wait() {
                    self.exit = Some(exit_code(st));
                }
            }
        }
    }
}

fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Milliseconds as a float with microsecond resolution.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The fields of `/proc/PID/stat` we use.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub state: char,
    pub ppid: u32,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub starttime: u64,
}

/// Parses `/proc/PID/stat` (the command name may contain spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    let field = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: field(4)? as u32,
        cpu_ticks: field(14)? + field(15)?,
        starttime: field(22)?,
    })
}

pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn starttime(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.starttime)
}

/// `pid` and every live descendant.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(s) = read_stat(p) {
                children.entry(s.ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            for &c in c {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        i += 1;
    }
    out
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds (user + system) used so far by `pid` and its live descendants.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = tree(pid)
        .into_iter()
        .filter_map(read_stat)
        .map(|s| s.cpu_ticks)
        .sum();
    ticks as f64 / clock_ticks()
}

/// Resident memory of `pid` and its descendants, KiB: (current VmRSS, peak VmHWM).
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let mut rss = 0;
    let mut hwm = 0;
    for p in tree(pid) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        for line in text.lines() {
            let kb = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                rss += kb(line);
            } else if line.starts_with("VmHWM:") {
                hwm += kb(line);
            }
        }
    }
    (rss, hwm)
}

/// One TCP socket from `/proc/PID/net/tcp{,6}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel state: 0x0A LISTEN, 0x01 ESTABLISHED, …
    pub state: u8,
    pub inode: u64,
}

pub const TCP_LISTEN: u8 = 0x0a;
pub const TCP_ESTABLISHED: u8 = 0x01;

fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for w in 0..4 {
                let v = u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok()?;
                b[w * 4..w * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn parse_net_tcp(text: &str) -> Vec<TcpEntry> {
    parse_net_tcp_where(text, |_| true)
}

/// The same, for the sockets whose inode `keep` accepts. A busy host has tens of thousands
/// of lines (TIME_WAIT included): the inode is checked before anything else is parsed.
pub fn parse_net_tcp_where(text: &str, keep: impl Fn(u64) -> bool) -> Vec<TcpEntry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (_, local, remote, state) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let inode: u64 = f.nth(5)?.parse().ok()?;
            if !keep(inode) {
                return None;
            }
            Some(TcpEntry {
                local: parse_hex_addr(local)?,
                remote: parse_hex_addr(remote)?,
                state: u8::from_str_radix(state, 16).ok()?,
                inode,
            })
        })
        .collect()
}

/// The TCP sockets that `pid` or one of its descendants holds open.
pub fn tcp_sockets(pid: u32) -> Vec<TcpEntry> {
    let inodes = inodes_of(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) {
            out.extend(parse_net_tcp_where(&text, |i| inodes.contains(&i)));
        }
    }
    out
}

/// Socket inodes of the descriptors of `pid` and its descendants.
fn inodes_of(pid: u32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for p in tree(pid) {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.to_string_lossy();
                if let Some(n) = t
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    inodes.insert(n);
                }
            }
        }
    }
    inodes
}

/// Runs `program --help` (at most `limit`, then killed) and returns what it printed on
/// stdout and stderr: how the tools find out which extensions a binary has.
pub fn help_text(program: &Path, limit: Duration) -> String {
    let dir = std::env::temp_dir().join(format!(
        "mtproxy-ctl-help-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let run = || -> io::Result<String> {
        let out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&dir)?;
        let err = out.try_clone()?;
        let mut child = Command::new(program)
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let t0 = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(String::from_utf8_lossy(&std::fs::read(&dir)?).into_owned())
    };
    let text = run().unwrap_or_default();
    let _ = std::fs::remove_file(&dir);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let s = parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 11 4 0 0 20 0 1 0 12345 1000 10 18446744073709551615").unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 7);
        assert_eq!(s.cpu_ticks, 15);
        assert_eq!(s.starttime, 12345);
    }

    #[test]
    fn net_tcp_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0\n";
        let e = parse_net_tcp(text);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e[0].state, TCP_LISTEN);
        assert_eq!(e[0].inode, 555);
        let text6 = "h\n 0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 777 1\n";
        let e = parse_net_tcp(text6);
        assert_eq!(e[0].local, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn own_process_is_measured() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(rss_kb(me).0 > 0);
        let mut p = Proc::attach(me, starttime(me).unwrap());
        assert!(p.alive());
        let mut other = Proc::attach(me, 1);
        assert!(!other.alive(), "a different start time is another process");
    }
}
