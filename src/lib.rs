//! sealinit: sealed secrets delivered as environment variables by a PID-1
//! init, and the orchestrator-side tooling that seals them.
//!
//! Layout, one concern per module:
//! - [`bundle`]: the sealed bundle format (pure: no I/O, no unsafe);
//! - [`secret`]: secret-holding types (locked, wiped, redacted);
//! - [`key`]: reading the 32-byte key from a descriptor or file;
//! - [`launch`]: what sealinit does until its command runs;
//! - [`supervisor`]: signals and reaping, the init proper;
//! - [`hardening`]: non-dumpable, no core, descriptor hygiene;
//! - [`mask`], [`output`]: masking secret values in the command's output;
//! - [`signal`]: signal names;
//! - [`files`], [`import`]: files read and written by sealctl;
//! - [`store`]: sealctl's encrypted per-repository secret store;
//! - [`local`]: `sealctl run`, store to sandbox on one machine;
//! - [`error`]: the error type and the exit-code mapping;
//! - [`sys`]: every `unsafe` block and raw syscall.
#![deny(unsafe_code)]

pub mod bundle;
pub mod error;
pub mod files;
pub mod hardening;
pub mod import;
pub mod key;
pub mod launch;
pub mod local;
pub mod logging;
pub mod mask;
pub mod output;
pub mod secret;
pub mod signal;
pub mod store;
pub mod supervisor;
pub mod sys;
pub mod time;

pub use error::{Error, Result};
