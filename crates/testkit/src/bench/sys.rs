//! What the bench reads from the kernel: CPU time and RSS of a process tree (the proxy and
//! any workers it forks) from `/proc/PID/stat` and `/proc/PID/status`, CPU time of this
//! process's own threads by name (the load generator and the fakes run on separately named
//! runtime threads), and the descriptor limit.

use std::collections::HashMap;
use std::fs;
use std::io;

/// CPU time in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.user + self.sys
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user + o.user,
            sys: self.sys + o.sys,
        }
    }
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of a `stat` file after the command name: `[0]` is the state (field 3),
/// `[1]` ppid, `[11]` utime, `[12]` stime. Also the command name itself.
fn parse_stat(text: &str) -> Option<(String, Vec<&str>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    (rest.len() > 12).then_some((comm, rest))
}

fn stat_cpu(rest: &[&str], tck: f64) -> Cpu {
    let f = |i: usize| rest[i].parse::<u64>().unwrap_or(0) as f64 / tck;
    Cpu {
        user: f(11),
        sys: f(12),
    }
}

/// `pid` and all its descendants that are alive now.
pub fn tree_pids(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((_, rest)) = parse_stat(&text) {
                if let Ok(ppid) = rest[1].parse::<i32>() {
                    children.entry(ppid).or_default().push(pid);
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend_from_slice(c);
        }
        i += 1;
    }
    out
}

/// User and system CPU of one process (all its threads, dead ones included).
pub fn proc_cpu(pid: i32) -> io::Result<Cpu> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) =
        parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))?;
    Ok(stat_cpu(&rest, clk_tck()))
}

/// CPU of `root` and its live descendants (`-M` workers).
pub fn tree_cpu(root: i32) -> Cpu {
    tree_pids(root)
        .into_iter()
        .filter_map(|p| proc_cpu(p).ok())
        .fold(Cpu::default(), |a, b| a + b)
}

/// Resident set of one process in KiB (`VmRSS`).
pub fn proc_rss_kib(pid: i32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kib = v.trim().trim_end_matches("kB").trim();
            return kib
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad VmRSS"));
        }
    }
    Ok(0)
}

/// Resident set of `root` and its live descendants, KiB.
pub fn tree_rss_kib(root: i32) -> u64 {
    tree_pids(root)
        .into_iter()
        .filter_map(|p| proc_rss_kib(p).ok())
        .sum()
}

/// CPU of this process's threads whose name starts with `prefix`.
pub fn threads_cpu(prefix: &str) -> Cpu {
    let tck = clk_tck();
    let mut total = Cpu::default();
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return total;
    };
    for e in dir.flatten() {
        let Ok(text) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((comm, rest)) = parse_stat(&text) {
            if comm.starts_with(prefix) {
                total = total + stat_cpu(&rest, tck);
            }
        }
    }
    total
}

/// This process's CPU, all threads.
pub fn self_cpu() -> Cpu {
    proc_cpu(std::process::id() as i32).unwrap_or_default()
}

/// This process's RSS, KiB.
pub fn self_rss_kib() -> u64 {
    proc_rss_kib(std::process::id() as i32).unwrap_or(0)
}

/// Raises the soft (and, when allowed, the hard) descriptor limit to at least `want`;
/// returns the soft limit in force afterwards. Children inherit it.
// `rlim_t` is not `u64` on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want as libc::rlim_t {
            return lim.rlim_cur as u64;
        }
        let raised = libc::rlimit {
            rlim_cur: want as libc::rlim_t,
            rlim_max: lim.rlim_max.max(want as libc::rlim_t),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not privileged: as far as the hard limit goes.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max as u64;
        }
        lim.rlim_cur as u64
    }
}

/// The CPU model from `/proc/cpuinfo` and the number of online CPUs.
pub fn machine() -> (String, usize) {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (model, cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line = "123 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let (comm, rest) = parse_stat(line).unwrap();
        assert_eq!(comm, "a (b) c");
        assert_eq!(rest[1], "1");
        let cpu = stat_cpu(&rest, 100.0);
        assert_eq!(
            cpu,
            Cpu {
                user: 2.5,
                sys: 0.5
            }
        );
    }

    #[test]
    fn own_process_is_its_own_tree_root() {
        let me = std::process::id() as i32;
        assert_eq!(tree_pids(me)[0], me);
        assert!(self_rss_kib() > 0);
    }
}
