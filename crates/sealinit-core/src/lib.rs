//! The core of sealinit, shared by the init and the orchestrator side:
//! - [`bundle`]: the sealed bundle format (pure: no I/O, no unsafe);
//! - [`secret`]: secret-holding types (locked, wiped, redacted), on
//!   [`locked`] pages, the one module with `unsafe`;
//! - [`key`]: reading the 32-byte key from a descriptor;
//! - [`time`]: Unix time and RFC 3339;
//! - [`exit`]: the exit codes both binaries use.
#![deny(unsafe_code)]

pub mod bundle;
pub mod key;
pub mod locked;
pub mod secret;
pub mod time;

use std::io;
use std::path::Path;

/// An I/O error as a short phrase, with a hint for the usual causes.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        _ => e.to_string(),
    }
}

/// Creates a new, empty file with mode 0600; refuses to replace one
/// (`AlreadyExists`). Key files and stores are made with it.
pub fn create_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Exit codes of sealinit and sealctl themselves (BSD `sysexits.h` where
/// one fits, the shell's 126/127 for exec failures). A child's own exit
/// code is passed through unchanged. Each binary maps its errors to these
/// in one place.
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
    /// A compare-and-set lost: someone else changed the secret first.
    pub const TEMP_FAIL: u8 = 75;
    /// The service refused the token (missing, invalid, or not allowed).
    pub const NO_PERM: u8 = 77;
    /// The command was found but cannot be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
}
