//! Reading secrets to seal from a dotenv file or a JSON object (sealctl).
//!
//! Parse errors never quote the input: a syntax error names the file and
//! the line, not the line's text, which may hold a secret.

use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, InitError, Result};
use sealinit_core::bundle::Entry;
pub use sealinit_store::import::{parse_env, parse_json};

/// Reads a dotenv file. Values are taken literally, exactly as written
/// (quotes and escapes handled); with `expand`, `${NAME}` and `$NAME` take
/// the value of an earlier line of the same file, never of the process
/// environment. See [`parse_env`].
pub fn from_env_file(path: &Path, expand: bool) -> Result<Vec<Entry>> {
    const WHAT: &str = "env file";
    let bytes = read_input(WHAT, path)?;
    parse_env(&bytes, expand).map_err(|reason| Error::Import {
        what: WHAT,
        path: path.to_owned(),
        reason,
    })
}

/// Reads a JSON object whose values are all strings. Duplicate keys are kept
/// (and then rejected by validation), not silently collapsed.
pub fn from_json_file(path: &Path) -> Result<Vec<(Entry, sealinit_store::RouteChange)>> {
    const WHAT: &str = "JSON file";
    let bytes = read_input(WHAT, path)?;
    parse_json(&bytes).map_err(|reason| Error::Import {
        what: WHAT,
        path: path.to_owned(),
        reason,
    })
}

/// The whole input file, wiped when dropped.
fn read_input(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::read(path).map(Zeroizing::new).map_err(|source| {
        InitError::Input {
            what,
            path: path.to_owned(),
            source,
        }
        .into()
    })
}
