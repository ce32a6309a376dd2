//! Files sealinit and sealctl read and write: key files (created 0600,
//! never overwritten), bundles (read into locked memory, written atomically).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tracing::warn;

use crate::bundle::{self, BundleError, Entry, Header};
use crate::error::{Error, Result};
use crate::key::{self, KeyError};
use crate::secret::{SecretBuf, SecretKey};

/// Creates a new, empty file with mode 0600; refuses to replace one.
pub fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::OutputExists {
                path: path.to_owned(),
            },
            _ => Error::Output {
                path: path.to_owned(),
                source: e,
            },
        })
}

/// Writes `key` to a new file with mode 0600; refuses to replace a file.
pub fn create_key_file(path: &Path, key: &SecretKey) -> Result<()> {
    let mut file = create_private(path)?;
    if let Err(e) = file.write_all(key.expose()).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(Error::Output {
            path: path.to_owned(),
            source: e,
        });
    }
    Ok(())
}

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

/// Seals `entries` under `key` now, with a fresh random nonce, after
/// refusing code-loading names not in `allow`; the bundle expires after
/// `ttl` if given. Returns the bytes to write and the header sealed.
pub fn seal_now(
    key: &SecretKey,
    entries: &[Entry],
    allow: &[String],
    label: Option<String>,
    ttl: Option<Duration>,
) -> Result<(Vec<u8>, Header)> {
    bundle::check_name_policy(entries, allow)?;
    let now = crate::time::now();
    let header = Header::new(now, ttl.map(|t| now.saturating_add(t.as_secs())), label);
    let mut nonce = [0u8; bundle::NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Error::os("getrandom", io::Error::other(e)))?;
    let sealed = bundle::seal(key, &header, entries, &nonce).map_err(|e| match e {
        BundleError::Payload(p) => Error::Payload(p),
        other => Error::Usage(format!("cannot seal: {other}")),
    })?;
    Ok((sealed, header))
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

/// Replaces `path` atomically with `bytes`: a 0600 temporary file in the
/// same directory, fsync, rename, fsync of the directory. A crash leaves
/// either the old file or the new one, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let out_err = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".sealctl-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(out_err)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(out_err)?;
    tmp.persist(path).map_err(|e| out_err(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(out_err)?;
    Ok(())
}
