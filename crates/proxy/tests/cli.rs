//! The real `mtproto-proxy` binary rejects bad command lines (backend-ops.md §3.4) with the
//! C exit codes and a clear message.
//!
//! Every invocation here must fail while parsing: none may start a server. As a safety net a
//! run that does not exit within a few seconds is killed and fails the test.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mtproto-proxy");
const HEX_A: &str = "0123456789abcdef0123456789abcdef";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mtproto-proxy");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: the proxy did not exit; it must fail while parsing");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().expect("exited by a signal"),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Exit 2 with the usage text on stdout and `needle` on stderr.
fn usage(args: &[&str], needle: &str) -> Out {
    let o = run(args);
    assert_eq!(o.code, 2, "{args:?}: stderr {:?}", o.stderr);
    assert!(
        o.stdout.starts_with(&format!("usage: {BIN} [-v] [-6]")),
        "{args:?}: stdout {:?}",
        o.stdout
    );
    assert!(o.stdout.contains("\tSimple MT-Proto proxy\n"));
    assert!(
        o.stderr.contains(needle),
        "{args:?}: stderr {:?} lacks {needle:?}",
        o.stderr
    );
    o
}

/// Exit `code`, nothing on stdout, `needle` on stderr.
fn fatal(args: &[&str], code: i32, needle: &str) -> Out {
    let o = run(args);
    assert_eq!(o.code, code, "{args:?}: stderr {:?}", o.stderr);
    assert!(o.stdout.is_empty(), "{args:?}: stdout {:?}", o.stdout);
    assert!(
        o.stderr.contains(needle),
        "{args:?}: stderr {:?} lacks {needle:?}",
        o.stderr
    );
    o
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(content: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "mtproxy-cli-it-{}-{}.secrets",
            std::process::id(),
            n
        ));
        std::fs::write(&p, content).unwrap();
        TempFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn no_arguments() {
    usage(&[], "no arguments");
}

#[test]
fn help_prints_usage_and_exits_2() {
    for a in ["-h", "--help"] {
        let o = usage(&[a], "");
        assert!(o.stderr.is_empty(), "{a}: {:?}", o.stderr);
        assert!(o
            .stdout
            .contains("\t--mtproto-secret/-S <arg>          \t16-byte secret in hex mode\n"));
        assert!(o.stdout.contains("\t--dc-override <arg>"));
        assert!(o
            .stdout
            .contains(&format!("mtproxy-rs {}", env!("CARGO_PKG_VERSION"))));
    }
}

#[test]
fn unknown_options() {
    let o = usage(&["--foo", "proxy.conf"], "unrecognized option '--foo'");
    assert!(
        o.stderr.contains("\nUnrecognized option\n"),
        "{:?}",
        o.stderr
    );
    usage(&["-x", "proxy.conf"], "invalid option -- 'x'");
    usage(&["proxy.conf", "-S"], "option requires an argument -- 'S'");
    usage(
        &["--ipv6=1", "proxy.conf"],
        "option '--ipv6' doesn't allow an argument",
    );
}

#[test]
fn bad_secret() {
    usage(
        &["-S", "0123", "proxy.conf"],
        "'S' option requires exactly 32 hex digits",
    );
    usage(
        &[
            "--mtproto-secret",
            "0123456789abcdef0123456789abcdeg",
            "proxy.conf",
        ],
        "'g' is not hexdigit",
    );
}

#[test]
fn too_many_secrets() {
    let secrets: Vec<String> = (0..129).map(|i| format!("{i:032x}")).collect();
    let mut args: Vec<&str> = Vec::new();
    for s in &secrets {
        args.push("-S");
        args.push(s);
    }
    args.push("proxy.conf");
    usage(&args, "too many mtproto secrets: 129 (max 128)");
}

#[test]
fn bad_secret_file() {
    let missing = std::env::temp_dir().join(format!(
        "mtproxy-cli-it-{}-missing.secrets",
        std::process::id()
    ));
    let missing = missing.to_str().unwrap();
    usage(
        &["--mtproto-secret-file", missing, "proxy.conf"],
        &format!("cannot open mtproto secret file '{missing}'"),
    );
    let bad = TempFile::new(&format!("# comment\n{HEX_A}, xyz\n"));
    usage(
        &["--mtproto-secret-file", bad.path(), "proxy.conf"],
        &format!(
            "failed to parse mtproto secret from '{}' at line 2",
            bad.path()
        ),
    );
    let empty = TempFile::new("# nothing here\n\n");
    usage(
        &["--mtproto-secret-file", empty.path(), "proxy.conf"],
        "does not contain secrets",
    );
}

#[test]
fn bad_proxy_tag() {
    usage(
        &["-P", "abc", "proxy.conf"],
        "'P' option requires exactly 32 hex digits",
    );
}

#[test]
fn bad_http_ports() {
    usage(&["-H", "", "proxy.conf"], "invalid -H value ''");
    usage(&["-H", "0443", "proxy.conf"], "invalid -H value '0443'");
    usage(&["-H", "80,,81", "proxy.conf"], "invalid -H value '80,,81'");
    usage(&["-H", "443x", "proxy.conf"], "invalid -H value '443x'");
    fatal(
        &["-H", "70000", "proxy.conf"],
        1,
        "port 70000 out of range 1..65535 in -H",
    );
}

#[test]
fn bad_stats_port() {
    usage(&["-p", "0", "proxy.conf"], "invalid -p value '0'");
    usage(
        &["-p", "9000:8000", "proxy.conf"],
        "invalid -p value '9000:8000'",
    );
    usage(&["-p", "abc", "proxy.conf"], "invalid -p value 'abc'");
}

#[test]
fn workers_out_of_range() {
    fatal(&["-M", "300", "proxy.conf"], 1, "invalid -M value '300'");
}

#[test]
fn user_twice() {
    fatal(
        &["-u", "nobody", "-u", "root", "proxy.conf"],
        1,
        "wrong option -uroot, username is already defined as 'nobody'.",
    );
}

#[test]
fn bad_nat_info() {
    usage(
        &["--nat-info", "10.0.0.1", "proxy.conf"],
        "expected <local-addr>:<global-addr> in --nat-info",
    );
    usage(
        &["--nat-info", "10.0.0.1:example.com", "proxy.conf"],
        "cannot translate host 'example.com' in --nat-info",
    );
}

#[test]
fn bad_address() {
    fatal(
        &["--address", "300.1.1.1", "proxy.conf"],
        4,
        "Can not convert '300.1.1.1' to ip addr",
    );
}

#[test]
fn two_positionals() {
    usage(&["a.conf", "b.conf"], "too many arguments");
}

#[test]
fn short_verbosity_takes_no_value() {
    usage(&["-v3", "proxy.conf"], "invalid option -- '3'");
}

#[test]
fn long_verbosity_value_needs_equals() {
    usage(&["--verbosity", "3", "proxy.conf"], "too many arguments");
}

#[test]
fn bad_msg_buffers_size() {
    usage(
        &["--msg-buffers-size", "12q", "proxy.conf"],
        "Unknown suffix 'q'",
    );
}

#[test]
fn bad_extension_values() {
    usage(
        &["--dc-override", "2:::1:443", "--direct"],
        "invalid --dc-override value '2:::1:443'",
    );
    usage(
        &["--handshake-timeout", "0", "--direct"],
        "invalid --handshake-timeout value '0'",
    );
    usage(
        &["--idle-timeout", "soon", "--direct"],
        "invalid --idle-timeout value 'soon'",
    );
}
