//! The loopback world `dual-run` and `drill` start for the proxies they compare: a work
//! directory with a proxy secret (`--aes-pwd`) and a `proxy-multi.conf`, an `mtproxy-fakes` fake
//! middle-end that answers `req_pq_multi` with `resPQ` and echoes everything else, a fake DC
//! for direct mode, and the C command line for each mode.
//!
//! The command line is exactly the interop harness's (`run_e2e.py`):
//! `-u root -c 10000 --address 127.0.0.1 -p STATS -H PORT -S SECRET --aes-pwd FILE
//! --http-stats proxy-multi.conf` (`-u` only when running as root), with `-D localhost`
//! for fake TLS, and without the config but with `--dc-override`s to the fake DC for direct
//! mode (which C does not have).
//!
//! What it is not: Telegram. Nothing here listens anywhere but 127.0.0.1.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mtproxy_client::Tag;
use mtproxy_fakes::{FakeDc, FakeMe, FakeMeConfig, Responder};
use rand::RngCore;
use serde::Serialize;

use crate::probe::{client_opts, Target};

/// The client secret every generated command line uses.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The fake-TLS domain (resolves to loopback; nothing needs to listen on its port 443).
pub const TLS_DOMAIN: &str = "localhost";

/// A proxy set-up to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Middle-proxy mode (the only one C has): obfuscated2, all three transports.
    Me,
    /// Middle-proxy mode behind fake TLS (`-D localhost`, `ee` secrets).
    Tls,
    /// Direct-to-DC mode (an extension: `--dc-override` to a fake DC).
    Direct,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Me => "me",
            Mode::Tls => "tls",
            Mode::Direct => "direct",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "me" => Some(Mode::Me),
            "tls" => Some(Mode::Tls),
            "direct" => Some(Mode::Direct),
            _ => None,
        }
    }

    /// The transports a client tries in this mode.
    pub fn tags(self) -> &'static [Tag] {
        match self {
            Mode::Tls => &[Tag::Padded],
            _ => &Tag::ALL,
        }
    }
}

/// A directory removed on drop unless kept.
#[derive(Debug)]
pub struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl WorkDir {
    /// `base` itself when given (created, kept), else a fresh temp dir.
    pub fn new(base: Option<&Path>, prefix: &str) -> io::Result<WorkDir> {
        let (path, keep) = match base {
            Some(b) => (b.to_path_buf(), true),
            None => (
                std::env::temp_dir().join(format!(
                    "{prefix}-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                )),
                false,
            ),
        };
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The fakes and files of one run.
pub struct Fakes {
    pub me: FakeMe,
    pub dc: FakeDc,
    pub aes_pwd: PathBuf,
    pub config: PathBuf,
}

impl Fakes {
    /// Writes a random 128-byte proxy secret and a `proxy-multi.conf` into `dir` (DC 1/-1 on
    /// the first fake-ME port, 2/-2 on the second, default 2, as the interop harness) and
    /// starts the fake ME and the fake DC.
    pub async fn start(dir: &Path) -> io::Result<Fakes> {
        let mut secret = vec![0u8; 128];
        rand::thread_rng().fill_bytes(&mut secret);
        let aes_pwd = dir.join("proxy-secret");
        std::fs::write(&aes_pwd, &secret)?;
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let me = FakeMe::start(
            FakeMeConfig::new(secret)
                .listen_on([lo, lo])
                .responder(Responder::ResPq),
        )
        .await?;
        let (a, b) = (me.addrs()[0], me.addrs()[1]);
        let config = dir.join("proxy-multi.conf");
        std::fs::write(
            &config,
            format!(
                "# written by mtproxy-ctl: fake middle-ends on loopback\nproxy_for 1 {a};\nproxy_for -1 {a};\nproxy_for 2 {b};\nproxy_for -2 {b};\ndefault 2;\n"
            ),
        )?;
        let dc = FakeDc::start(lo).await?;
        Ok(Fakes {
            me,
            dc,
            aes_pwd,
            config,
        })
    }

    /// The C command line for `mode` on these ports, plus `extra`.
    pub fn command_line(
        &self,
        mode: Mode,
        stats_port: u16,
        client_port: u16,
        extra: &[String],
    ) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if is_root() {
            a.extend(["-u".into(), "root".into()]);
        }
        a.extend(
            [
                "-c",
                "10000",
                "--address",
                "127.0.0.1",
                "-p",
                &stats_port.to_string(),
                "-H",
                &client_port.to_string(),
                "-S",
                SECRET,
            ]
            .map(String::from),
        );
        match mode {
            Mode::Me | Mode::Tls => {
                a.push("--aes-pwd".into());
                a.push(self.aes_pwd.display().to_string());
                if mode == Mode::Tls {
                    a.push("-D".into());
                    a.push(TLS_DOMAIN.into());
                }
                a.push("--http-stats".into());
                a.extend(extra.iter().cloned());
                a.push(self.config.display().to_string());
            }
            Mode::Direct => {
                a.push("--http-stats".into());
                a.push("--direct".into());
                let port = self.dc.addr().port();
                for dc in 1..=5 {
                    for d in [dc, -dc] {
                        a.push("--dc-override".into());
                        a.push(format!("{d}:127.0.0.1:{port}"));
                    }
                }
                a.extend(extra.iter().cloned());
            }
        }
        a
    }
}

/// The client targets of `mode` on `port`: one per transport, DC 2.
pub fn targets(mode: Mode, port: u16) -> Vec<Target> {
    let secret = crate::cmdline::parse_secret(SECRET);
    let domains = if mode == Mode::Tls {
        vec![TLS_DOMAIN.to_string()]
    } else {
        Vec::new()
    };
    mode.tags()
        .iter()
        .map(|&tag| Target {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            opts: client_opts(secret, &domains, tag, 2),
        })
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
