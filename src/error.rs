//! The crate's error type and the one place where errors become exit codes.
//!
//! Every message says what failed and where (path, fd, command), and what to
//! do when that is not obvious. No message contains a secret value.

use std::io;
use std::path::PathBuf;

use crate::bundle::{BundleError, PayloadError};
use crate::key::KeyError;
use crate::sys::ExitStatus;

/// Exit codes of sealinit and sealctl themselves (BSD `sysexits.h` where
/// one fits, the shell's 126/127 for exec failures). A child's own exit
/// code is passed through unchanged.
pub mod exit {
    /// Bad command line.
    pub const USAGE: u8 = 64;
    /// Bundle or input data malformed, failed authentication, or expired.
    pub const DATA: u8 = 65;
    /// Bundle, key or input file missing or unreadable; key not 32 bytes.
    pub const NO_INPUT: u8 = 66;
    /// An operating-system call failed (fork, signal setup).
    pub const OS: u8 = 71;
    /// Output file cannot be created (or already exists).
    pub const CANT_CREATE: u8 = 73;
    /// The store database failed (I/O, locked for too long, damaged).
    pub const IO_ERR: u8 = 74;
    /// The command was found but cannot be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
}

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

    #[error("received {} during start-up; the command was not started", crate::signal::name(*signal))]
    Interrupted { signal: std::ffi::c_int },

    #[error("store {}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },

    #[error("store {}: the master key does not open this store (wrong key file?); nothing was changed", path.display())]
    WrongMasterKey { path: PathBuf },

    #[error("repository {repo} has no secret named {name}; nothing was removed")]
    NoSuchSecret { repo: String, name: String },

    #[error(
        "secret {name} of {repo} does not decrypt: the row was modified or copied from another repository or name"
    )]
    SecretUndecryptable { repo: String, name: String },

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

    #[error("{what} {}: {reason}", path.display())]
    Import {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("cannot seal: {0}")]
    Payload(#[from] PayloadError),

    #[error("{} already exists; refusing to overwrite it (remove it first or choose another path)", path.display())]
    OutputExists { path: PathBuf },

    #[error("cannot write {}: {}", path.display(), describe_io(source))]
    Output { path: PathBuf, source: io::Error },
}

impl Error {
    /// The process exit code for this error: the single mapping.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Bundle { .. }
            | Error::Import { .. }
            | Error::Payload(_)
            | Error::WrongMasterKey { .. }
            | Error::SecretUndecryptable { .. } => exit::DATA,
            Error::NoSuchSecret { .. } => exit::NO_INPUT,
            Error::Store { .. } => exit::IO_ERR,
            Error::Key { .. } | Error::BundleRead { .. } | Error::Input { .. } => exit::NO_INPUT,
            Error::Os { .. } => exit::OS,
            Error::OutputExists { .. } | Error::Output { .. } => exit::CANT_CREATE,
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

/// An I/O error as a short phrase, with a hint for the usual causes.
fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        _ => e.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
