//! Errors that end the process before it serves: [`Fatal`] carries the exit code and the
//! text for the operator, and says where C puts that text ([`Report`]): a log line, or
//! lines on stderr as they are (a bad config or proxy secret, a failed privilege drop).
//!
//! Start-up phases return it and `startup::run` reports it once; nothing below prints a
//! fatal error itself. Errors of one connection are not fatal and never use it.

use std::fmt;
use std::process::ExitCode;
use tracing::error;

/// A fatal error: the exit code and what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub code: u8,
    pub report: Report,
}

/// Where C reports a fatal error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// One log line at error level.
    Log(String),
    /// Lines written to stderr as they are, before exiting.
    Stderr(Vec<String>),
}

impl Fatal {
    /// Exit `code` after logging `message`.
    pub fn log(code: u8, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            report: Report::Log(message.into()),
        }
    }

    /// Exit `code` after writing `text` (one or more lines) to stderr.
    pub fn stderr(code: u8, text: &str) -> Fatal {
        Fatal::stderr_lines(code, text.lines().map(str::to_owned).collect())
    }

    /// Exit `code` after writing `lines` to stderr.
    pub fn stderr_lines(code: u8, lines: Vec<String>) -> Fatal {
        Fatal {
            code,
            report: Report::Stderr(lines),
        }
    }

    /// Writes the text where C writes it.
    pub fn report(&self) {
        match &self.report {
            Report::Log(m) => error!("{m}"),
            Report::Stderr(lines) => {
                for l in lines {
                    eprintln!("{l}");
                }
            }
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

/// The text, lines joined with `\n`.
impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.report {
            Report::Log(m) => f.write_str(m),
            Report::Stderr(lines) => f.write_str(&lines.join("\n")),
        }
    }
}

impl std::error::Error for Fatal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_code() {
        let f = Fatal::stderr(1, "can't find the user x\nfatal: cannot change user to x");
        assert_eq!(f.code, 1);
        assert_eq!(
            f.report,
            Report::Stderr(vec![
                "can't find the user x".into(),
                "fatal: cannot change user to x".into()
            ])
        );
        assert_eq!(
            f.to_string(),
            "can't find the user x\nfatal: cannot change user to x"
        );
        assert_eq!(Fatal::log(2, "bad").to_string(), "bad");
    }
}
