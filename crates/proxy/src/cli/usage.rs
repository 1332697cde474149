//! The text `-h` and every usage error print on stdout (C's format, from the option
//! table), and the version line.

use super::table::{Arg, OPTIONS};

/// The version line printed at start-up and in `--help`.
pub fn version() -> String {
    format!(
        "mtproxy-rs {} (Rust drop-in for mtproxy-0.02)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The usage text (C format, printed on stdout for `-h` and every usage error).
pub fn usage_text(argv0: &str) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str("usage: ");
    s.push_str(argv0);
    s.push_str(
        " [-v] [-6] [-p<port>] [-H<http-port>{,<http-port>}] [-M<workers>] [-u<username>] \
         [-b<backlog>] [-c<max-conn>] [-l<log-name>] [-W<window-size>] [<config-file>]\n",
    );
    s.push_str(&version());
    s.push('\n');
    s.push_str("\tSimple MT-Proto proxy\n");
    // parse_usage: width = max over options of (3 per short letter + len+3 per long name + 6 if
    // the option takes an argument); each line is padded to it, then a tab and the help.
    let width = OPTIONS
        .iter()
        .map(|o| {
            o.long.len()
                + 3
                + if o.short.is_some() { 3 } else { 0 }
                + if o.arg == Arg::No { 0 } else { 6 }
        })
        .max()
        .unwrap_or(0);
    for o in OPTIONS {
        let mut head = format!("--{}", o.long);
        if let Some(c) = o.short {
            head.push_str("/-");
            head.push(c);
        }
        match o.arg {
            Arg::No => {}
            Arg::Required => head.push_str(" <arg>"),
            Arg::Optional => head.push_str(" {arg}"),
        }
        s.push('\t');
        s.push_str(&head);
        for _ in head.len()..width {
            s.push(' ');
        }
        s.push('\t');
        s.push_str(o.help);
        s.push('\n');
    }
    s
}
