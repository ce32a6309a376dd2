//! sealinit, the init: sealed secrets delivered as environment variables
//! by a PID-1 init. Built on `sealinit-core` (the format, secret memory,
//! key reading), `sealinit-sys` (every syscall) and `sealinit-mask`.
//!
//! Layout, one concern per module:
//! - [`launch`]: what sealinit does until its command runs;
//! - [`supervisor`]: signals and reaping, the init proper;
//! - [`hardening`]: non-dumpable, no core, descriptor hygiene;
//! - [`output`]: the `--mask` output proxy;
//! - [`signal`]: signal names;
//! - [`files`]: the key file and bundle reads;
//! - [`logging`]: the stderr log subscriber;
//! - [`error`]: the init's error type and its exit codes.
#![deny(unsafe_code)]

pub mod error;
pub mod files;
pub mod hardening;
pub mod launch;
pub mod logging;
pub mod output;
pub mod signal;
pub mod supervisor;

pub use error::{Error, Result};
