//! What sealinit (and sealctl) read: key files and inherited key
//! descriptors, and bundles (into locked memory). sealctl's writes are in
//! sealctl.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tracing::warn;

use crate::error::{Error, Result};
use sealinit_core::bundle::{self, BundleError};
use sealinit_core::key::{self, KeyError};
use sealinit_core::secret::{SecretBuf, SecretKey};

/// Reads a 32-byte key file; `what` names it in errors ("key file").
/// With `private`, a file that group or others may read is refused (the
/// mode of the opened file is checked, not of the path).
///
/// The file is opened without blocking (a FIFO with no writer yet does not
/// hang the open), so `timeout` bounds the whole wait, open included.
pub fn read_key_file(
    path: &Path,
    what: &'static str,
    private: bool,
    timeout: Duration,
    wake: Option<key::Wake<'_>>,
) -> Result<SecretKey> {
    let file = open_nonblocking(path).map_err(|source| Error::Input {
        what,
        path: path.to_owned(),
        source,
    })?;
    let key_err = |source| Error::Key {
        source_name: format!("{what} {}", path.display()),
        source,
    };
    if private {
        let meta = file.metadata().map_err(|e| key_err(KeyError::Io(e)))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 && !meta.is_dir() {
            return Err(key_err(KeyError::NotPrivate(mode)));
        }
    }
    key::read_key(file.into(), timeout, wake).map_err(key_err)
}

/// Reads a whole bundle file into locked memory, where it can be decrypted
/// in place.
pub fn read_bundle(path: &Path) -> Result<SecretBuf> {
    let read_err = |source| Error::BundleRead {
        path: path.to_owned(),
        source,
    };
    let mut file = open_nonblocking(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(read_err(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    if !meta.is_file() {
        return Err(read_err(io::Error::other(
            "is not a regular file (a FIFO, socket or device cannot hold a bundle); copy the bundle into a file",
        )));
    }
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if len > bundle::MAX_BUNDLE_LEN {
        return Err(Error::Bundle {
            path: path.to_owned(),
            source: BundleError::TooLarge(len),
        });
    }
    let mut buf = SecretBuf::zeroed(len).map_err(|e| Error::os("allocating locked memory", e))?;
    if !buf.is_locked() {
        warn!("could not lock the secret buffer in memory (RLIMIT_MEMLOCK); it may be swapped out");
    }
    file.read_exact(buf.expose_mut()).map_err(read_err)?;
    Ok(buf)
}

/// Opens `path` for reading with `O_NONBLOCK`: a FIFO without a writer
/// does not block the open. (Regular files ignore the flag.)
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Reads the key from a descriptor inherited from the parent (and closes
/// it); `wake` as for [`key::read_key`].
pub fn read_inherited_key(
    fd: std::os::fd::RawFd,
    timeout: Duration,
    wake: Option<key::Wake<'_>>,
) -> std::result::Result<SecretKey, KeyError> {
    let owned = sealinit_sys::take_inherited_fd(fd).map_err(|_| KeyError::NotOpen)?;
    key::read_key(owned, timeout, wake)
}
