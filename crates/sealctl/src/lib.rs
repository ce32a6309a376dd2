//! sealctl, the orchestrator side of sealinit, as a library under the thin
//! `sealctl` binary (`main.rs`: the command line and its output):
//! - [`import`]: `.env` and JSON input, values taken literally;
//! - [`write`]: key files and bundles written safely;
//! - [`local`]: `sealctl run`, store to sandbox on one machine;
//! - [`stores`]: which backend `--store` names (SQLite or PostgreSQL);
//! - [`error`]: sealctl's errors and their exit codes.
#![forbid(unsafe_code)]

pub mod error;
pub mod import;
pub mod local;
pub mod proxy;
pub mod remote;
pub mod sandbox;
pub mod stores;
pub mod write;
