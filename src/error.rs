//! The init's error type and the one place where its errors become exit
//! codes (sealctl has its own, and maps these through it).
//!
//! Every message says what failed and where (path, fd, command), and what to
//! do when that is not obvious. No message contains a secret value.

use std::io;
use std::path::PathBuf;

use sealinit_core::bundle::BundleError;
use sealinit_core::key::KeyError;
use sealinit_sys::ExitStatus;

pub use sealinit_core::exit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error("{source_name}: {source}")]
    Key {
        /// "key fd 3" or "key file /path".
        source_name: String,
        #[source]
        source: KeyError,
    },

    #[error("bundle {}: {}", path.display(), describe_io(source))]
    BundleRead { path: PathBuf, source: io::Error },

    #[error("bundle {}: {source}", path.display())]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },

    #[error("command {command:?} not found (searched PATH)")]
    CommandNotFound { command: String },

    #[error("command {command:?} cannot be executed: {}", describe_io(source))]
    CommandNotExecutable { command: String, source: io::Error },

    #[error(
        "the command line and environment need {needed} bytes, over this system's ARG_MAX of {limit}; seal fewer or smaller secrets"
    )]
    ArgMax { needed: usize, limit: usize },

    #[error("setup step {step} of {total} ({command:?}) {}; the command was not started", describe_setup(*status, *interrupted))]
    Setup {
        step: usize,
        total: usize,
        command: String,
        status: ExitStatus,
        interrupted: Option<std::ffi::c_int>,
    },

    #[error(
        "bundle {}: {} only for setup steps ({}), and no --setup was given; the command was not started (add the --setup step that uses them, or make them env secrets)",
        path.display(),
        if names.len() == 1 { "this secret is" } else { "these secrets are" },
        names.join(", ")
    )]
    SetupWithoutSteps { path: PathBuf, names: Vec<String> },

    #[error("received {} during start-up; the command was not started", crate::signal::name(*signal))]
    Interrupted { signal: std::ffi::c_int },

    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{what} {}: {}", path.display(), describe_io(source))]
    Input {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl Error {
    /// The process exit code for this error: the single mapping.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Bundle { .. } | Error::SetupWithoutSteps { .. } => exit::DATA,
            Error::Key { .. } | Error::BundleRead { .. } | Error::Input { .. } => exit::NO_INPUT,
            Error::Os { .. } => exit::OS,
            Error::CommandNotExecutable { .. } | Error::ArgMax { .. } => exit::NOT_EXECUTABLE,
            Error::CommandNotFound { .. } => exit::NOT_FOUND,
            Error::Interrupted { signal } => (128 + signal) as u8,
            Error::Setup {
                status,
                interrupted,
                ..
            } => match (status, interrupted) {
                (ExitStatus::Code(0), Some(sig)) => (128 + sig) as u8,
                (status, _) => status.code() as u8,
            },
        }
    }

    pub fn os(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Os {
            op,
            source: source.into(),
        }
    }
}

fn describe_setup(status: ExitStatus, interrupted: Option<std::ffi::c_int>) -> String {
    let how = match status {
        ExitStatus::Code(c) => format!("exited with status {c}"),
        ExitStatus::Signal(s) => format!("was killed by {}", crate::signal::name(s)),
    };
    match interrupted {
        Some(sig) => format!("{how} after sealinit received {}", crate::signal::name(sig)),
        None => how,
    }
}

pub use sealinit_core::describe_io;

/// An error as exactly one line: control characters (a newline, an escape
/// sequence from a forged file) are shown escaped, never sent raw.
pub fn one_line(msg: &str) -> String {
    msg.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .collect()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
