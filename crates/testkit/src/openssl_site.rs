//! OpenSSL's `s_server` as the real site a fake-TLS proxy masks as: the most common TLS
//! stack, which sends its encrypted first flight as four records (EncryptedExtensions,
//! Certificate, CertificateVerify, Finished). Started on 127.0.0.1 with a self-signed
//! ECDSA certificate made at start (rcgen), `-www` (answers a GET with a status page).
//!
//! `s_server` serves one connection at a time. Needs the `openssl` command (Debian
//! package `openssl`); [`OpensslSite::start`] says so if it is missing. Killed on drop.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `openssl s_server`.
pub struct OpensslSite {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// How to start it.
#[derive(Clone, Debug, Default)]
pub struct OpensslOpts {
    /// `-serverpref`: the server's cipher order wins (OpenSSL's TLS 1.3 default order
    /// starts with AES-256-GCM, `0x1302`), instead of the client's.
    pub server_pref: bool,
}

impl OpensslSite {
    /// Starts `s_server` on a free loopback port and waits until it accepts.
    pub fn start(opts: OpensslOpts) -> io::Result<OpensslSite> {
        let version = Command::new("openssl").arg("version").output().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the openssl command is needed as the test site (apt-get install openssl): {e}"),
            )
        })?;
        if !version.status.success() {
            return Err(io::Error::other("openssl version failed"));
        }
        let dir = std::env::temp_dir().join(format!(
            "mtproxy-openssl-site-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(io::Error::other)?;
        std::fs::write(dir.join("cert.der"), cert.cert.der())?;
        std::fs::write(dir.join("key.der"), cert.key_pair.serialize_der())?;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut cmd = Command::new("openssl");
            cmd.arg("s_server")
                .arg("-accept")
                .arg(addr.to_string())
                .arg("-cert")
                .arg(dir.join("cert.der"))
                .args(["-certform", "DER", "-keyform", "DER", "-key"])
                .arg(dir.join("key.der"))
                .args(["-www", "-quiet", "-naccept", "100000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if opts.server_pref {
                cmd.arg("-serverpref");
            }
            let mut child = cmd.spawn()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Ok(OpensslSite {
                        child,
                        addr,
                        dir: dir.clone(),
                    });
                }
                if child.try_wait()?.is_some() {
                    break; // the port was taken after all: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(io::Error::other("openssl s_server did not start"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for OpensslSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
