//! What the `mtproxy-ctl` tests share: finding (and building) our `mtproto-proxy`, running
//! `mtproxy-ctl`, temp directories, stand-in binaries, and a supervised proxy against the
//! fakes (`mtproxy-fakes`). Everything on loopback.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use mtproxy_ctl::fakes::{self, Fakes, Mode};
use mtproxy_ctl::probe;
use serde_json::Value;

pub const CTL: &str = env!("CARGO_BIN_EXE_mtproxy-ctl");

/// Tests of one file run one at a time: they measure latencies and start-up times on a
/// 2-core machine, which a neighbouring test would distort.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Our `mtproto-proxy`: `MTPROXY_BIN` when set, else `target/debug/mtproto-proxy`, built
/// first (`cargo build -p mtproxy --bin mtproto-proxy`, a no-op when it is up to date) so a
/// `cargo test -p mtproxy-ctl` never runs a stale proxy.
pub fn proxy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MTPROXY_BIN") {
            return PathBuf::from(p);
        }
        let bin = target_dir().join("debug/mtproto-proxy");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "mtproxy",
                "--bin",
                "mtproto-proxy",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => assert!(
                bin.exists(),
                "cannot build mtproto-proxy ({other:?}) and {} does not exist",
                bin.display()
            ),
        }
        bin
    })
    .clone()
}

/// A temp directory, removed on drop unless the test failed (kept for its logs).
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!(
            "mtproxy-ctl-test-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// An executable shell script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Our binary under another path (a symlink): two "builds" for the tools.
    pub fn alias(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("mtproto-proxy");
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(proxy_bin(), &p).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {}", self.0.display());
        }
    }
}

/// Runs `mtproxy-ctl` with `args`; returns (exit code, stdout, stderr).
pub async fn ctl(args: &[&str]) -> (i32, String, String) {
    ctl_env(args, &[]).await
}

pub async fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(CTL)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run mtproxy-ctl");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("$ mtproxy-ctl {}\n{o}{e}", args.join(" "));
    (out.status.code().unwrap_or(-1), o, e)
}

pub fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Is this a root shell with `unshare` and `ip`, so a test can have a network namespace of
/// its own (where `net.ipv4.tcp_migrate_req` can be set without touching the host)?
pub fn can_isolate() -> bool {
    fakes::is_root()
        && std::process::Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
        && std::process::Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A supervised proxy (state directory, fakes, the reference binary) for cutover tests.
pub struct World {
    pub tmp: Tmp,
    pub fakes: Fakes,
    pub state: PathBuf,
    pub reference: PathBuf,
    pub args: Vec<String>,
    pub client_port: u16,
    pub stats_port: u16,
}

impl World {
    /// Fakes and a command line (middle-proxy mode), nothing started yet.
    pub async fn new(name: &str) -> World {
        let tmp = Tmp::new(name);
        let fakes = Fakes::start(&tmp.0).await.unwrap();
        let reference = tmp.alias("reference");
        let (sp, cp) = (free_port(), free_port());
        // The same command line for every binary (C's options only).
        let args = fakes.command_line(Mode::Me, sp, cp, &[]);
        World {
            state: tmp.path("state"),
            tmp,
            fakes,
            reference,
            args,
            client_port: cp,
            stats_port: sp,
        }
    }

    /// `mtproxy-ctl start` with the reference.
    pub async fn start_reference(&self) {
        let state = self.state.display().to_string();
        let bin = self.reference.display().to_string();
        let mut a = vec!["start", "--bin", &bin, "--state-dir", &state, "--"];
        a.extend(self.args.iter().map(String::as_str));
        let (code, _, _) = ctl(&a).await;
        assert_eq!(code, 0, "the reference did not start");
    }

    /// `mtproxy-ctl cutover --to BIN --supervise …`; returns the exit code and the report.
    pub async fn cutover(&self, to: &Path, extra: &[&str]) -> (i32, Value) {
        let state = self.state.display().to_string();
        let to = to.display().to_string();
        let report = self
            .tmp
            .path(&format!("cutover-{:08x}.json", rand::random::<u32>()));
        let rep = report.display().to_string();
        let mut a = vec![
            "cutover",
            "--to",
            &to,
            "--supervise",
            "--state-dir",
            &state,
            "--settle-ms",
            "200",
            "--report",
            &rep,
        ];
        a.extend_from_slice(extra);
        let (code, _, _) = ctl(&a).await;
        (code, json(&report))
    }

    pub async fn rollback(&self, extra: &[&str]) -> (i32, Value) {
        let state = self.state.display().to_string();
        let report = self
            .tmp
            .path(&format!("rollback-{:08x}.json", rand::random::<u32>()));
        let rep = report.display().to_string();
        let mut a = vec![
            "rollback",
            "--supervise",
            "--state-dir",
            &state,
            "--report",
            &rep,
        ];
        a.extend_from_slice(extra);
        let (code, _, _) = ctl(&a).await;
        (code, json(&report))
    }

    /// Where the active link points.
    pub fn active(&self) -> PathBuf {
        std::fs::read_link(self.state.join("active")).unwrap()
    }

    /// A client session (handshake, resPQ, one echo) through the client port.
    pub async fn client_ok(&self) -> bool {
        let t = &fakes::targets(Mode::Me, self.client_port)[0];
        match probe::session(t, 1, 128, Duration::from_secs(5)).await {
            Ok(_) => true,
            Err(e) => {
                eprintln!("client session failed: {e}");
                false
            }
        }
    }

    pub async fn stop(&self) {
        let state = self.state.display().to_string();
        let (code, _, _) = ctl(&["stop", "--state-dir", &state]).await;
        assert_eq!(code, 0);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A failed test leaves no proxy behind: kill the one on record, by its pid.
        let Ok(text) = std::fs::read_to_string(self.state.join("state.json")) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        if let (Some(pid), Some(st)) = (v["pid"].as_u64(), v["starttime"].as_u64()) {
            let mut p = mtproxy_ctl::procs::Proc::attach(pid as u32, st);
            p.kill();
        }
    }
}

pub fn free_port() -> u16 {
    mtproxy_ctl::report::free_port()
}

/// Cutover options for a good candidate watched for 1.5 s after its gate.
pub const WATCHED_CUTOVER: &[&str] = &[
    "--gate-timeout",
    "20",
    "--window",
    "1.5",
    "--poll-ms",
    "100",
    "--probe-every-ms",
    "300",
];
