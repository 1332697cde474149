//! Unit tests of the command-line parser.

use super::*;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicUsize, Ordering};

const HEX_A: &str = "0123456789abcdef0123456789abcdef";
const HEX_B: &str = "FEDCBA9876543210FEDCBA9876543210";
const BYTES_A: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];

fn args(a: &[&str]) -> Vec<OsString> {
    std::iter::once("mtproto-proxy")
        .chain(a.iter().copied())
        .map(OsString::from)
        .collect()
}

fn ok(a: &[&str]) -> Options {
    match parse(args(a)) {
        Ok(o) => o,
        Err(e) => panic!("{a:?} failed: code {} stderr {:?}", e.code, e.stderr),
    }
}

fn err(a: &[&str]) -> CliExit {
    match parse(args(a)) {
        Ok(o) => panic!("{a:?} unexpectedly parsed: {o:?}"),
        Err(e) => e,
    }
}

/// Asserts a usage error: exit 2, usage on stdout, `needle` on stderr.
fn usage_err(a: &[&str], needle: &str) -> CliExit {
    let e = err(a);
    assert_eq!(e.code, 2, "{a:?}: {e:?}");
    assert!(
        e.stdout.starts_with("usage: mtproto-proxy "),
        "{a:?}: {:?}",
        e.stdout
    );
    assert!(
        e.stderr.contains(needle),
        "{a:?}: stderr {:?} lacks {needle:?}",
        e.stderr
    );
    e
}

fn fatal_err(a: &[&str], code: i32, needle: &str) -> CliExit {
    let e = err(a);
    assert_eq!(e.code, code, "{a:?}: {e:?}");
    assert!(e.stdout.is_empty(), "{a:?}: {:?}", e.stdout);
    assert!(
        e.stderr.contains(needle),
        "{a:?}: stderr {:?} lacks {needle:?}",
        e.stderr
    );
    e
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(content: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "mtproxy-cli-unit-{}-{}.secrets",
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

fn hex_n(n: usize) -> String {
    format!("{n:032x}")
}

// ----- defaults and positionals -----

#[test]
fn defaults() {
    let o = ok(&["proxy.conf"]);
    assert_eq!(o.config_file, Some(PathBuf::from("proxy.conf")));
    assert_eq!(o.verbosity, 0);
    assert_eq!(o.msg_buffers_size, 268_435_456);
    assert_eq!(o.backlog, 8192);
    assert_eq!(o.connections, 65536);
    assert_eq!(o.ping_interval, 5.0);
    assert_eq!(o.handshake_timeout, Duration::from_secs(10));
    assert_eq!(o.idle_timeout, Duration::from_secs(600));
    assert_eq!(o.workers, 0);
    assert!(o.secrets.is_empty() && o.ports.is_empty() && o.given.is_empty());
    assert!(!o.daemonize && !o.ipv6 && !o.direct && !o.multithread && !o.http_stats);
    assert!(o.user.is_none() && o.stats_port.is_none() && o.proxy_tag.is_none());
    assert!(!o.direct_mode());
}

#[test]
fn no_arguments_is_usage() {
    let e = usage_err(&[], "no arguments");
    assert!(e.stdout.contains("\tSimple MT-Proto proxy\n"));
    let e = parse(Vec::<OsString>::new()).unwrap_err();
    assert_eq!(e.code, 2);
}

#[test]
fn zero_positionals_is_direct_mode() {
    let o = ok(&["-H", "443", "-S", HEX_A]);
    assert_eq!(o.config_file, None);
    assert!(o.direct_mode());
    let o = ok(&["--"]);
    assert_eq!(o.config_file, None);
    let o = ok(&["--direct", "cfg"]);
    assert!(o.direct && o.direct_mode());
}

#[test]
fn two_positionals_is_usage() {
    usage_err(&["a.conf", "b.conf"], "too many arguments");
    usage_err(&["a.conf", "-v", "b.conf"], "'a.conf' 'b.conf'");
}

#[test]
fn permutation_and_double_dash() {
    let o = ok(&["cfg", "-v", "-H", "443"]);
    assert_eq!(o.config_file, Some(PathBuf::from("cfg")));
    assert_eq!((o.verbosity, o.ports.clone()), (1, vec![443]));
    let o = ok(&["-v", "--", "-v"]);
    assert_eq!(o.verbosity, 1);
    assert_eq!(o.config_file, Some(PathBuf::from("-v")));
    let o = ok(&["--", "cfg"]);
    assert_eq!(o.config_file, Some(PathBuf::from("cfg")));
    usage_err(&["--", "a", "b"], "too many arguments");
    // A lone "-" is a positional.
    let o = ok(&["-"]);
    assert_eq!(o.config_file, Some(PathBuf::from("-")));
}

#[test]
fn non_utf8_config_path_is_preserved() {
    let raw = b"cfg\xff.conf".to_vec();
    let v = vec![OsString::from("x"), OsString::from_vec(raw.clone())];
    let o = parse(v).unwrap();
    assert_eq!(o.config_file, Some(PathBuf::from(OsString::from_vec(raw))));
}

// ----- getopt forms -----

#[test]
fn long_forms() {
    let o = ok(&["--http-ports=443", "--http-ports", "80", "cfg"]);
    assert_eq!(o.ports, vec![443, 80]);
    let o = ok(&[
        "--mtproto-secret",
        HEX_A,
        &format!("--mtproto-secret={HEX_B}"),
    ]);
    assert_eq!(o.secrets.len(), 2);
    assert_eq!(o.secrets[0], BYTES_A);
    // A required argument is taken from the next word even if it starts with '-'.
    let o = ok(&["--user", "-v"]);
    assert_eq!(o.user.as_deref(), Some("-v"));
    assert_eq!(o.verbosity, 0);
    let o = ok(&["--log="]);
    assert_eq!(o.log_file, Some(PathBuf::from("")));
}

#[test]
fn short_forms_and_clusters() {
    let o = ok(&["-H443", "-H", "80", "-Dexample.com", "-D", "b.example"]);
    assert_eq!(o.ports, vec![443, 80]);
    assert_eq!(o.domains, vec!["example.com", "b.example"]);
    let o = ok(&["-6v"]);
    assert!(o.ipv6);
    assert_eq!(o.verbosity, 1);
    let o = ok(&["-vvv", "-v"]);
    assert_eq!(o.verbosity, 4);
    let o = ok(&["-6H443", "x"]);
    assert!(o.ipv6);
    assert_eq!(o.ports, vec![443]);
    let o = ok(&["-vS", HEX_A]);
    assert_eq!((o.verbosity, o.secrets.len()), (1, 1));
    let o = ok(&[&format!("-6S{HEX_A}")]);
    assert_eq!(o.secrets, vec![BYTES_A]);
    let o = ok(&["-u", "-6"]);
    assert_eq!(o.user.as_deref(), Some("-6"));
    assert!(!o.ipv6);
}

#[test]
fn short_optional_options_take_no_argument() {
    let e = usage_err(&["-v3", "cfg"], "mtproto-proxy: invalid option -- '3'");
    assert!(e.stderr.contains("\nUnrecognized option\n"));
    usage_err(&["-d1"], "invalid option -- '1'");
    let o = ok(&["-d"]);
    assert!(o.daemonize);
    let o = ok(&["-dd"]);
    assert!(!o.daemonize);
}

#[test]
fn long_optional_arguments() {
    assert_eq!(ok(&["--verbosity=7"]).verbosity, 7);
    assert_eq!(ok(&["-vvv", "--verbosity=2", "-v"]).verbosity, 3);
    assert_eq!(ok(&["--verbosity"]).verbosity, 1);
    assert_eq!(ok(&["--verbosity=-4"]).verbosity, 0);
    assert_eq!(ok(&["--verbosity=x"]).verbosity, 0);
    // `--verbosity 3` makes 3 a positional.
    let o = ok(&["--verbosity", "3"]);
    assert_eq!(o.verbosity, 1);
    assert_eq!(o.config_file, Some(PathBuf::from("3")));
    usage_err(&["--verbosity", "3", "cfg"], "too many arguments");
    assert!(ok(&["--daemonize"]).daemonize);
    assert!(!ok(&["--daemonize", "--daemonize"]).daemonize);
    assert!(ok(&["--daemonize=5"]).daemonize);
    assert!(!ok(&["-d", "--daemonize=0"]).daemonize);
    assert!(ok(&["--multithread"]).multithread);
    assert!(ok(&["--multithread=1"]).multithread);
    assert!(!ok(&["--multithread", "--multithread=0"]).multithread);
    usage_err(&["--multithread", "1", "cfg"], "too many arguments");
}

#[test]
fn help() {
    for a in [
        &["-h"][..],
        &["--help"],
        &["cfg", "-h"],
        &["--he"],
        &["-vh"],
    ] {
        let e = err(a);
        assert_eq!(e.code, 2);
        assert_eq!(e.stdout, usage_text("mtproto-proxy"));
        assert!(e.stderr.is_empty());
    }
}

#[test]
fn unknown_options() {
    let e = usage_err(
        &["--foo", "cfg"],
        "mtproto-proxy: unrecognized option '--foo'\n",
    );
    assert!(e.stderr.ends_with("Unrecognized option\n"));
    usage_err(&["--foo=bar"], "unrecognized option '--foo=bar'");
    usage_err(&["-x"], "mtproto-proxy: invalid option -- 'x'\n");
    usage_err(&["-6x"], "invalid option -- 'x'");
    usage_err(&["-o", "5"], "invalid option -- 'o'");
    usage_err(&["---"], "unrecognized option '---'");
}

#[test]
fn missing_arguments() {
    usage_err(&["-S"], "mtproto-proxy: option requires an argument -- 'S'");
    usage_err(
        &["cfg", "--mtproto-secret"],
        "mtproto-proxy: option '--mtproto-secret' requires an argument",
    );
    usage_err(&["-vH"], "option requires an argument -- 'H'");
    let e = usage_err(&["--http-p"], "option '--http-ports' requires an argument");
    assert!(e.stderr.contains("Unrecognized option"));
}

#[test]
fn no_argument_option_with_value() {
    usage_err(&["--ipv6=1"], "option '--ipv6' doesn't allow an argument");
    usage_err(
        &["--http-stats=yes"],
        "option '--http-stats' doesn't allow an argument",
    );
    usage_err(
        &["--direct=1"],
        "option '--direct' doesn't allow an argument",
    );
}

#[test]
fn abbreviations_like_getopt_long() {
    assert!(ok(&["--http-s"]).http_stats);
    assert_eq!(ok(&["--http-p=443"]).ports, vec![443]);
    assert!(ok(&["--ipv"]).ipv6);
    assert!(ok(&["--disable"]).disable_tcp);
    // Exact match wins over a longer option with the same prefix.
    assert_eq!(ok(&["--mtproto-secret", HEX_A]).secrets.len(), 1);
    usage_err(&["--mtproto-s", HEX_A], "is ambiguous; possibilities:");
    let e = usage_err(
        &["--max=5"],
        "option '--max=5' is ambiguous; possibilities:",
    );
    assert!(e.stderr.contains("'--max-special-connections'"));
    assert!(e.stderr.contains("'--max-dh-accept-rate'"));
    usage_err(&["--d"], "ambiguous");
    // Extensions are never abbreviated, so C abbreviations keep their meaning.
    assert!(ok(&["--di"]).disable_tcp);
    usage_err(&["--dire"], "unrecognized option '--dire'");
    usage_err(&["--public", "h"], "unrecognized option '--public'");
    usage_err(&["--idle", "5"], "unrecognized option '--idle'");
}

// ----- secrets -----

#[test]
fn secret_values() {
    let o = ok(&["-S", HEX_A, "-S", HEX_B, "-S", &HEX_A.to_uppercase()]);
    assert_eq!(o.secrets.len(), 3);
    assert_eq!(o.secrets[0], BYTES_A);
    assert_eq!(o.secrets[2], BYTES_A);
    assert_eq!(o.secrets[1][0], 0xfe);
    assert_eq!(o.secrets[1][15], 0x10);
    usage_err(
        &["-S", "abc"],
        "'S' option requires exactly 32 hex digits; got 3 characters: 'abc'",
    );
    usage_err(
        &["-S", &format!("{HEX_A}0")],
        "'S' option requires exactly 32 hex digits",
    );
    usage_err(&["-S", ""], "got 0 characters");
    usage_err(
        &["--mtproto-secret", "0123456789abcdef0123456789abcdeg"],
        "'S' option requires exactly 32 hex digits. 'g' is not hexdigit",
    );
    usage_err(&["-S", &format!("dd{HEX_A}")], "got 34 characters");
}

#[test]
fn secret_limit_128() {
    let mut a: Vec<String> = Vec::new();
    for i in 0..128 {
        a.push("-S".into());
        a.push(hex_n(i));
    }
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = ok(&refs);
    assert_eq!(o.secrets.len(), 128);
    assert_eq!(o.secrets[127][15], 127);
    let mut a2 = a.clone();
    a2.push("-S".into());
    a2.push(hex_n(128));
    let refs: Vec<&str> = a2.iter().map(String::as_str).collect();
    usage_err(&refs, "too many mtproto secrets: 129 (max 128)");
}

#[test]
fn secret_file_format() {
    let f = TempFile::new(
        format!(
            "# header comment\r\n{HEX_A},{HEX_B}\r\n\r\n  \t{} # trailing {}\n,,{},\n#{}\n{}",
            hex_n(3),
            hex_n(99),
            hex_n(4),
            hex_n(98),
            hex_n(5)
        )
        .as_bytes(),
    );
    let o = ok(&[
        "-S",
        &hex_n(1),
        "--mtproto-secret-file",
        f.path(),
        "-S",
        &hex_n(2),
    ]);
    let got: Vec<u8> = o.secrets.iter().map(|s| s[15]).collect();
    assert_eq!(o.secrets.len(), 7);
    assert_eq!(o.secrets[1], BYTES_A);
    assert_eq!(o.secrets[2][0], 0xfe);
    assert_eq!(got[0], 1);
    assert_eq!(&got[3..], &[3, 4, 5, 2]);
    assert_eq!(
        o.given,
        vec!["mtproto-secret", "mtproto-secret-file", "mtproto-secret"]
    );
    // `=` form and an abbreviation work too.
    let o = ok(&[&format!("--mtproto-secret-file={}", f.path())]);
    assert_eq!(o.secrets.len(), 5);
    let o = ok(&["--mtproto-secret-f", f.path()]);
    assert_eq!(o.secrets.len(), 5);
}

#[test]
fn secret_file_errors() {
    let bad = TempFile::new(format!("{HEX_A}\n# ok\n{HEX_B}, nothex\n").as_bytes());
    usage_err(
        &["--mtproto-secret-file", bad.path()],
        &format!(
            "failed to parse mtproto secret from '{}' at line 3",
            bad.path()
        ),
    );
    usage_err(&["--mtproto-secret-file", bad.path()], "'nothex'");
    let bad2 = TempFile::new(format!("{HEX_A}\r\n0123456789abcdef0123456789abcdeZ\r\n").as_bytes());
    usage_err(&["--mtproto-secret-file", bad2.path()], "at line 2: token");
    let dd = TempFile::new(format!("dd{HEX_A}").as_bytes());
    usage_err(&["--mtproto-secret-file", dd.path()], "at line 1");
    let empty = TempFile::new(b"");
    usage_err(
        &["--mtproto-secret-file", empty.path()],
        &format!(
            "mtproto secret file '{}' does not contain secrets",
            empty.path()
        ),
    );
    let comments = TempFile::new(format!("# {HEX_A}\n , ,\r\n\t# x\n").as_bytes());
    usage_err(
        &["--mtproto-secret-file", comments.path()],
        "does not contain secrets",
    );
    let missing = std::env::temp_dir().join(format!(
        "mtproxy-cli-unit-{}-missing.secrets",
        std::process::id()
    ));
    let missing = missing.to_str().unwrap();
    usage_err(
        &["--mtproto-secret-file", missing],
        &format!("cannot open mtproto secret file '{missing}'"),
    );
    usage_err(
        &["--mtproto-secret-file", missing],
        "No such file or directory",
    );
}

#[test]
fn secret_file_counts_toward_128() {
    let mut content = String::new();
    for i in 0..100 {
        content.push_str(&hex_n(i));
        content.push(if i % 2 == 0 { ',' } else { '\n' });
    }
    let f = TempFile::new(content.as_bytes());
    let mut a: Vec<String> = Vec::new();
    for i in 0..28 {
        a.push("-S".into());
        a.push(hex_n(1000 + i));
    }
    a.push("--mtproto-secret-file".into());
    a.push(f.path().into());
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(ok(&refs).secrets.len(), 128);
    a.push("-S".into());
    a.push(HEX_A.into());
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    usage_err(&refs, "too many mtproto secrets: 129 (max 128)");
    // The overflow inside the file names the file and line.
    let mut a: Vec<String> = vec!["-S".into(), HEX_A.into()];
    for _ in 0..28 {
        a.push("-S".into());
        a.push(HEX_B.into());
    }
    a.push("--mtproto-secret-file".into());
    a.push(f.path().into());
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let e = usage_err(
        &refs,
        "too many mtproto secrets: 129 (max 128) while reading",
    );
    assert!(e.stderr.contains("at line 50"), "{}", e.stderr);
}

#[test]
fn proxy_tag() {
    let o = ok(&["-P", HEX_B, "--proxy-tag", HEX_A]);
    assert_eq!(o.proxy_tag, Some(BYTES_A));
    assert!(o.secrets.is_empty());
    usage_err(&["-P", "1234"], "'P' option requires exactly 32 hex digits");
    usage_err(
        &["-P", "0123456789abcdef0123456789abcdex"],
        "'P' option requires exactly 32 hex digits. 'x' is not hexdigit",
    );
}

// ----- ports -----

#[test]
fn http_ports() {
    assert_eq!(ok(&["-H", "443"]).ports, vec![443]);
    assert_eq!(ok(&["-H", "80,443,8443"]).ports, vec![80, 443, 8443]);
    assert_eq!(ok(&["-H", "80,"]).ports, vec![80]);
    assert_eq!(ok(&["-H", "65535"]).ports, vec![65535]);
    assert_eq!(ok(&["-H", "1", "-H2,3"]).ports, vec![1, 2, 3]);
    usage_err(&["-H", ""], "invalid -H value '': empty port list");
    usage_err(&["-H", "0443"], "starts with '0'");
    usage_err(&["-H", "80,0"], "starts with '0'");
    usage_err(
        &["-H", "80,,81"],
        "invalid -H value '80,,81': empty port at offset 3",
    );
    usage_err(&["-H", ",80"], "empty port at offset 0");
    usage_err(&["-H", "80x"], "unexpected 'x' at offset 2");
    usage_err(&["-H", "80, 81"], "unexpected ' '");
    usage_err(&["-H", "+80"], "unexpected '+'");
    usage_err(&["-H", "-80"], "unexpected '-'");
    fatal_err(
        &["-H", "70000"],
        1,
        "port 70000 out of range 1..65535 in -H",
    );
    fatal_err(&["-H", "80,65536,"], 1, "port 65536 out of range");
    fatal_err(
        &["-H", "99999999999999999999999"],
        1,
        "out of range 1..65535",
    );
}

#[test]
fn http_ports_limit_128() {
    let list: Vec<String> = (1..=128).map(|p| p.to_string()).collect();
    let o = ok(&["-H", &list.join(",")]);
    assert_eq!(o.ports.len(), 128);
    assert_eq!(
        ok(&["-H", &format!("{},", list.join(","))]).ports.len(),
        128
    );
    usage_err(
        &["-H", &format!("{},129", list.join(","))],
        "too many ports in -H",
    );
    usage_err(
        &["-H", &list.join(","), "-H", "200"],
        "at most 128 client ports",
    );
}

#[test]
fn stats_port() {
    assert_eq!(ok(&["-p", "8888"]).stats_port, Some(PortSpec::Single(8888)));
    assert_eq!(ok(&["-p8888"]).stats_port, Some(PortSpec::Single(8888)));
    assert_eq!(ok(&["--port=1:2"]).stats_port, Some(PortSpec::Range(1, 2)));
    assert_eq!(
        ok(&["-p", "80:80"]).stats_port,
        Some(PortSpec::Range(80, 80))
    );
    assert_eq!(
        ok(&["-p", "1", "-p", "2"]).stats_port,
        Some(PortSpec::Single(2))
    );
    // sscanf("%d:%d") leniency.
    assert_eq!(ok(&["-p", "80abc"]).stats_port, Some(PortSpec::Single(80)));
    assert_eq!(ok(&["-p", "80:"]).stats_port, Some(PortSpec::Single(80)));
    assert_eq!(
        ok(&["-p", " 80: 90x"]).stats_port,
        Some(PortSpec::Range(80, 90))
    );
    // Above 65535: modulo 65536, as C (whose socket code keeps the low 16 bits).
    let wrapped = ok(&["-p", "70000"]);
    assert_eq!(wrapped.stats_port, Some(PortSpec::Single(4464)));
    assert_eq!(wrapped.stats_port_wrapped, Some(70000));
    assert_eq!(ok(&["-p", "8888"]).stats_port_wrapped, None);
    for bad in [
        "0", "-1", "abc", "", ":80", "5:3", "0:5", "65536", "131072", "1:70000", "-5:5",
    ] {
        usage_err(&["-p", bad], &format!("invalid -p value '{bad}'"));
    }
}

#[test]
fn workers() {
    assert_eq!(ok(&["-M", "0"]).workers, 0);
    assert_eq!(ok(&["-M", "256"]).workers, 256);
    assert_eq!(ok(&["--slaves=4"]).workers, 4);
    assert_eq!(ok(&["-M", "junk"]).workers, 0);
    fatal_err(&["-M", "257"], 1, "invalid -M value '257'");
    fatal_err(&["-M", "300"], 1, "0..256");
    fatal_err(&["-M", "-1"], 1, "0..256");
    fatal_err(&["-M", "99999999999999999999"], 1, "0..256");
}

#[test]
fn user_twice() {
    assert_eq!(ok(&["-u", "nobody"]).user.as_deref(), Some("nobody"));
    fatal_err(
        &["-u", "nobody", "--user=root"],
        1,
        "wrong option -uroot, username is already defined as 'nobody'.",
    );
    fatal_err(
        &["-u", "", "-u", "x"],
        1,
        "username is already defined as ''.",
    );
}

// ----- network options -----

#[test]
fn nat_info() {
    let o = ok(&[
        "--nat-info",
        "10.0.0.1:1.2.3.4",
        "--nat-info=10.0.0.2:5.6.7.8",
    ]);
    assert_eq!(
        o.nat_info,
        vec![
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(1, 2, 3, 4)),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(5, 6, 7, 8))
        ]
    );
    usage_err(
        &["--nat-info", "10.0.0.1"],
        "expected <local-addr>:<global-addr> in --nat-info",
    );
    usage_err(
        &["--nat-info", "host:1.2.3.4"],
        "cannot translate host 'host' in --nat-info",
    );
    usage_err(
        &["--nat-info", "1.2.3.4:1.2.3"],
        "cannot translate host '1.2.3' in --nat-info",
    );
    // Split at the last ':'.
    usage_err(
        &["--nat-info", "1.2.3.4:5.6.7.8:9.9.9.9"],
        "cannot translate host '1.2.3.4:5.6.7.8'",
    );
    let mut a: Vec<String> = Vec::new();
    for i in 0..16 {
        a.push(format!("--nat-info=10.0.0.{i}:1.1.1.{i}"));
    }
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(ok(&refs).nat_info.len(), 16);
    a.push("--nat-info=10.0.1.1:2.2.2.2".into());
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    usage_err(&refs, "too many rules in --nat-info");
}

#[test]
fn address() {
    assert_eq!(
        ok(&["--address", "10.1.2.3"]).address,
        Some(Ipv4Addr::new(10, 1, 2, 3))
    );
    for bad in ["localhost", "1.2.3", "::1", "1.2.3.04", ""] {
        fatal_err(
            &["--address", bad],
            4,
            &format!("Can not convert '{bad}' to ip addr"),
        );
    }
}

#[test]
fn msg_buffers_size() {
    assert_eq!(ok(&["--msg-buffers-size", "1000"]).msg_buffers_size, 1000);
    assert_eq!(ok(&["--msg-buffers-size=16m"]).msg_buffers_size, 16 << 20);
    assert_eq!(ok(&["--msg-buffers-size=2K"]).msg_buffers_size, 2048);
    assert_eq!(ok(&["--msg-buffers-size=1G"]).msg_buffers_size, 1 << 30);
    assert_eq!(ok(&["--msg-buffers-size=3t"]).msg_buffers_size, 3 << 40);
    assert_eq!(ok(&["--msg-buffers-size=16mb"]).msg_buffers_size, 16 << 20);
    usage_err(
        &["--msg-buffers-size", "x"],
        "Parsing limit for option fail",
    );
    usage_err(&["--msg-buffers-size", "x"], "in --msg-buffers-size 'x'");
    usage_err(&["--msg-buffers-size", "10q"], "Unknown suffix 'q'");
    usage_err(&["--msg-buffers-size", "-5"], "negative");
    usage_err(&["--msg-buffers-size", "99999999t"], "too large");
}

#[test]
fn atoi_options() {
    let o = ok(&[
        "-b",
        "100",
        "-c",
        "5000",
        "-C",
        "300",
        "-W",
        "65536",
        "--nice",
        "-5",
        "--max-accept-rate",
        "10",
        "--max-dh-accept-rate",
        "3",
        "--cpu-threads",
        "4",
        "--io-threads",
        "8",
        "--tcp-cpu-threads",
        "2",
        "--tcp-iothreads",
        "1",
    ]);
    assert_eq!((o.backlog, o.connections), (100, 5000));
    assert_eq!(
        (o.max_special_connections, o.window_clamp),
        (Some(300), Some(65536))
    );
    assert_eq!(o.nice, Some(-5));
    assert_eq!((o.max_accept_rate, o.max_dh_accept_rate), (10, 3));
    assert_eq!((o.cpu_threads, o.io_threads), (Some(4), Some(8)));
    assert_eq!((o.tcp_cpu_threads, o.tcp_iothreads), (Some(2), Some(1)));
    let o = ok(&[
        "-b", "abc", "-c", "0", "-C", "-1", "-W", "12abc", "--nice", " +7x",
    ]);
    assert_eq!((o.backlog, o.connections), (0, 65536));
    assert_eq!(
        (o.max_special_connections, o.window_clamp),
        (Some(0), Some(12))
    );
    assert_eq!(o.nice, Some(7));
    let o = ok(&[
        "-c",
        "-5",
        "-b",
        "-1",
        "--max-accept-rate=-3",
        "--cpu-threads=-2",
    ]);
    assert_eq!((o.connections, o.backlog), (65536, i32::MAX as u32));
    assert_eq!((o.max_accept_rate, o.cpu_threads), (0, Some(0)));
    let o = ok(&["-c", "999999999999999999999", "--nice", "-999999999999999"]);
    assert_eq!(o.connections, i32::MAX as u32);
    assert_eq!(o.nice, Some(i32::MIN));
}

#[test]
fn ping_interval() {
    assert_eq!(ok(&["-T", "2.5"]).ping_interval, 2.5);
    assert_eq!(ok(&["--ping-interval=1e1"]).ping_interval, 10.0);
    assert_eq!(ok(&["-T", "0"]).ping_interval, 5.0);
    assert_eq!(ok(&["-T", "-3"]).ping_interval, 5.0);
    assert_eq!(ok(&["-T", "abc"]).ping_interval, 5.0);
    assert_eq!(ok(&["-T", "3s"]).ping_interval, 3.0);
    assert_eq!(ok(&["-T", ".5"]).ping_interval, 0.5);
    assert_eq!(ok(&["-T", "1e999"]).ping_interval, 5.0);
}

#[test]
fn flags_and_paths() {
    let o = ok(&[
        "-6",
        "--disable-tcp",
        "--crc32c",
        "--allow-skip-dh",
        "--force-dh",
        "--http-stats",
        "-l",
        "/var/log/x.log",
        "--aes-pwd",
        "proxy-secret",
        "cfg",
    ]);
    assert!(o.ipv6 && o.disable_tcp && o.crc32c && o.allow_skip_dh && o.force_dh);
    assert!(o.http_stats);
    assert_eq!(o.log_file, Some(PathBuf::from("/var/log/x.log")));
    assert_eq!(o.aes_pwd, Some(PathBuf::from("proxy-secret")));
    assert_eq!(o.config_file, Some(PathBuf::from("cfg")));
}

#[test]
fn given_records_long_names_in_order() {
    let o = ok(&[
        "-vv",
        "cfg",
        "-H",
        "443",
        "--http-s",
        "-D",
        "a",
        "--domain=b",
        "--direct",
    ]);
    assert_eq!(
        o.given,
        vec![
            "verbosity",
            "verbosity",
            "http-ports",
            "http-stats",
            "domain",
            "domain",
            "direct"
        ]
    );
    assert!(o.was_given("http-stats"));
    assert!(!o.was_given("nat-info"));
}

// ----- extensions -----

#[test]
fn dc_overrides() {
    let o = ok(&[
        "--dc-override",
        "2:149.154.167.51:443",
        "--dc-override=-2:dc.example.org:8443",
        "--dc-override",
        "10002:[::1]:443",
        "--dc-override",
        "+4:[2001:db8::1]:80",
        "--dc-override",
        "5:localhost:1",
    ]);
    assert_eq!(
        o.dc_overrides,
        vec![
            DcOverride {
                dc: 2,
                host: "149.154.167.51".into(),
                port: 443
            },
            DcOverride {
                dc: -2,
                host: "dc.example.org".into(),
                port: 8443
            },
            DcOverride {
                dc: 10002,
                host: "::1".into(),
                port: 443
            },
            DcOverride {
                dc: 4,
                host: "2001:db8::1".into(),
                port: 80
            },
            DcOverride {
                dc: 5,
                host: "localhost".into(),
                port: 1
            },
        ]
    );
    let cases = [
        ("", "missing ':'"),
        ("2", "missing ':'"),
        ("x:1.2.3.4:443", "DC 'x' is not an integer"),
        ("0:1.2.3.4:443", "DC must not be 0"),
        ("2:1.2.3.4", "missing ':<port>'"),
        ("2:host", "missing ':<port>'"),
        ("2::443", "empty host"),
        ("2:1.2.3:443", "'1.2.3' is not a valid IPv4 address"),
        ("2:999.1.1.1:443", "not a valid IPv4"),
        ("2:::1:443", "must be written in brackets"),
        ("2:[::1]443", "expected ':<port>' after ']'"),
        ("2:[::1:443", "missing ']'"),
        ("2:[nothost]:443", "'nothost' is not a valid IPv6 address"),
        ("2:host:0", "port '0' out of range"),
        ("2:host:65536", "out of range 1..65535"),
        ("2:host:", "port '' is not a number"),
        ("2:host:+1", "is not a number"),
        ("2:bad host:1", "not a valid host name"),
        ("2:-bad.example:1", "not a valid host name"),
        ("99999999999:h:1", "is not an integer"),
    ];
    for (v, needle) in cases {
        let e = usage_err(
            &["--dc-override", v],
            &format!("invalid --dc-override value '{v}'"),
        );
        assert!(e.stderr.contains(needle), "{v}: {}", e.stderr);
    }
}

#[test]
fn timeouts() {
    let o = ok(&["--handshake-timeout", "2.5", "--idle-timeout=30"]);
    assert_eq!(o.handshake_timeout, Duration::from_millis(2500));
    assert_eq!(o.idle_timeout, Duration::from_secs(30));
    for bad in ["0", "-1", "abc", "", "nan", "inf", "1e400", "1e-12"] {
        usage_err(
            &["--handshake-timeout", bad],
            &format!("invalid --handshake-timeout value '{bad}'"),
        );
        usage_err(&["--idle-timeout", bad], "greater than 0");
    }
}

#[test]
fn no_fast_mode() {
    assert!(!ok(&["cfg"]).no_fast_mode);
    let o = ok(&["--no-fast-mode"]);
    assert!(o.no_fast_mode);
    assert_eq!(o.given, vec!["no-fast-mode"]);
    usage_err(&["--no-fast"], "unrecognized option '--no-fast'");
}

#[test]
fn public_host() {
    assert_eq!(
        ok(&["--public-host", "proxy.example.com"])
            .public_host
            .as_deref(),
        Some("proxy.example.com")
    );
    assert_eq!(
        ok(&["--public-host=1.2.3.4"]).public_host.as_deref(),
        Some("1.2.3.4")
    );
    usage_err(&["--public-host", ""], "invalid --public-host value ''");
    usage_err(&["--public-host", "a b"], "invalid --public-host");
}

#[test]
fn non_utf8_string_values_are_rejected() {
    let v = vec![
        OsString::from("x"),
        OsString::from("-D"),
        OsString::from_vec(b"bad\xffdomain".to_vec()),
    ];
    let e = parse(v).unwrap_err();
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("invalid -D value"), "{}", e.stderr);
    assert!(e.stderr.contains("not valid UTF-8"));
}

#[test]
fn never_panics_on_odd_input() {
    let odd = [
        "-",
        "--",
        "---",
        "--=",
        "--=x",
        "-=",
        "-:",
        "-?",
        "-é",
        "--é",
        "-SS",
        "-H,",
        "-H1,",
        "-p:",
        "-p-",
        "-T",
        "-M",
        "--nat-info=:",
        "--nat-info=",
        "--address=",
        "-C",
        "--dc-override=:",
        "--dc-override=::",
        "--dc-override=1:[",
        "--dc-override=1:[]:1",
        "--msg-buffers-size=",
        "--msg-buffers-size=9223372036854775807",
        "--msg-buffers-size=-9223372036854775808k",
        "--verbosity=99999999999999",
        "-c",
        "\u{0}",
        "-\u{0}",
    ];
    for a in odd {
        let _ = parse(args(&[a]));
        let _ = parse(args(&[a, a]));
        let _ = parse(args(&["cfg", a, "1"]));
    }
}

// ----- usage text -----

/// The option lines of `mtproto-proxy --help` (fork), copied from spec/c-help.txt.
const C_OPTION_LINES: &str = "\
\t--ipv6/-6                          \tenables ipv6 TCP/UDP support
\t--max-special-connections/-C <arg> \tsets maximal number of accepted client connections per worker
\t--domain/-D <arg>                  \tadds allowed domain for TLS-transport mode, disables other transports; can be specified more than once
\t--http-ports/-H <arg>              \tcomma-separated list of client (HTTP) ports to listen
\t--slaves/-M <arg>                  \tspawn several slave workers; not recommended for TLS-transport mode for better replay protection
\t--proxy-tag/-P <arg>               \t16-byte proxy tag in hex mode to be passed along with all forwarded queries
\t--mtproto-secret/-S <arg>          \t16-byte secret in hex mode
\t--ping-interval/-T <arg>           \tsets ping interval in second for local TCP connections (default 5.000)
\t--window-clamp/-W <arg>            \tsets window clamp for client TCP connections
\t--backlog/-b <arg>                 \tsets backlog size
\t--connections/-c <arg>             \tsets maximal connections number
\t--daemonize/-d {arg}               \tchanges between daemonize/not daemonize mode
\t--help/-h                          \tprints help and exits
\t--log/-l <arg>                     \tsets log file name
\t--port/-p <arg>                    \t<port> or <sport>:<eport> sets listening port number or port range
\t--user/-u <arg>                    \tsets user name to make setuid
\t--verbosity/-v {arg}               \tsets or increases verbosity level
\t--aes-pwd <arg>                    \tsets custom secret.conf file
\t--nice <arg>                       \tsets niceness
\t--msg-buffers-size <arg>           \tsets maximal buffers size (default 268435456)
\t--disable-tcp                      \tdo not open listening tcp socket
\t--crc32c                           \tTry to use crc32c instead of crc32 in tcp rpc
\t--cpu-threads <arg>                \tNumber of CPU threads (1-64, default 8)
\t--io-threads <arg>                 \tNumber of I/O threads (1-64, default 16)
\t--allow-skip-dh                    \tAllow skipping DH during RPC handshake
\t--force-dh                         \tForce using DH for all outbound RPC connections
\t--max-accept-rate <arg>            \tmax number of connections per second that is allowed to accept
\t--max-dh-accept-rate <arg>         \tmax number of DH connections per second that is allowed to accept
\t--multithread {arg}                \trun in multithread mode
\t--tcp-cpu-threads <arg>            \tnumber of tcp-cpu threads
\t--tcp-iothreads <arg>              \tnumber of tcp-io threads
\t--nat-info <arg>                   \t<local-addr>:<global-addr>\tsets network address translation for RPC protocol handshake
\t--address <arg>                    \ttries to bind socket only to specified address
\t--http-stats                       \tallow http server to answer on stats queries
\t--mtproto-secret-file <arg>        \tpath to file with mtproto secrets (comma or whitespace-separated)
";

#[test]
fn usage_text_matches_c() {
    let u = usage_text("./mtproto-proxy");
    let mut lines = u.lines();
    assert_eq!(
        lines.next().unwrap(),
        "usage: ./mtproto-proxy [-v] [-6] [-p<port>] [-H<http-port>{,<http-port>}] [-M<workers>] \
         [-u<username>] [-b<backlog>] [-c<max-conn>] [-l<log-name>] [-W<window-size>] [<config-file>]"
    );
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "mtproxy-rs {} (Rust drop-in for mtproxy-0.02)",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(lines.next().unwrap(), "\tSimple MT-Proto proxy");
    let rest: Vec<&str> = lines.collect();
    let c_lines: Vec<&str> = C_OPTION_LINES.lines().collect();
    assert_eq!(&rest[..c_lines.len()], &c_lines[..]);
    let ext_lines = &rest[c_lines.len()..];
    let names = [
        "--direct ",
        "--dc-override <arg>",
        "--handshake-timeout <arg>",
        "--idle-timeout <arg>",
        "--public-host <arg>",
        "--no-fast-mode ",
        "--mask-host <arg>",
        "--drain-timeout <arg>",
        "--reuse-port ",
        "--tls-require-sni ",
        "--tls-fixed-records ",
        "--tls-split-hello ",
        "--client-mss <arg>",
    ];
    assert_eq!(ext_lines.len(), names.len());
    for (line, name) in ext_lines.iter().zip(names) {
        assert!(line.starts_with(&format!("\t{name}")), "{line:?}");
        // Same padding: the help starts after a tab at the common column.
        assert_eq!(line.find('\t'), Some(0));
        assert_eq!(line[1..].find('\t'), Some(35), "{line:?}");
    }
    assert!(u.ends_with('\n'));
}

#[test]
fn every_option_is_accepted() {
    for o in OPTIONS {
        if o.id == Id::Help {
            continue;
        }
        let value = match o.id {
            Id::MtprotoSecret | Id::ProxyTag => HEX_A.to_string(),
            Id::HttpPorts | Id::Port => "443".into(),
            Id::NatInfo => "10.0.0.1:1.2.3.4".into(),
            Id::Address => "10.0.0.1".into(),
            Id::DcOverride => "2:1.2.3.4:443".into(),
            Id::MaskHost => "127.0.0.1:443".into(),
            Id::ClientMss => "536".into(),
            Id::MtprotoSecretFile => continue,
            _ => "1".into(),
        };
        let long = format!("--{}", o.long);
        let a: Vec<&str> = match o.arg {
            Arg::Required => vec![&long, &value, "cfg"],
            _ => vec![&long, "cfg"],
        };
        let opts = ok(&a);
        assert_eq!(opts.given, vec![o.long]);
        if let Some(ch) = o.short {
            let short = format!("-{ch}");
            let a: Vec<&str> = match o.arg {
                Arg::Required => vec![&short, &value, "cfg"],
                _ => vec![&short, "cfg"],
            };
            assert_eq!(ok(&a).given, vec![o.long]);
        }
    }
}

#[test]
fn cli_exit_display() {
    let e = err(&["-M", "300"]);
    assert!(e.to_string().contains("0..256"));
}
