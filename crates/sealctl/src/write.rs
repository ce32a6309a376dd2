//! What sealctl writes: key files (created 0600, never overwritten) and
//! bundles (sealed now, written atomically).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use sealinit_core::bundle::{self, BundleError, Entry, Header};
use sealinit_core::secret::SecretKey;

use crate::error::{Error, Result};

/// Creates a new, empty file with mode 0600; refuses to replace one.
pub fn create_private(path: &Path) -> Result<File> {
    sealinit_core::create_private(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::OutputExists {
            path: path.to_owned(),
        },
        _ => Error::Output {
            path: path.to_owned(),
            source: e,
        },
    })
}

/// How long a written file must last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// Survives a power loss once written (fsync): master keys, keygen.
    Durable,
    /// A per-launch artifact (a bundle and its key): consumed within
    /// seconds by a sandbox that a power loss would end anyway, so no fsync
    /// (three per seal). It is still never seen half-written: the key file
    /// is read only after sealctl exits, and the bundle is renamed into
    /// place; after a crash a truncated file is refused by sealinit.
    Ephemeral,
}

/// Writes `key` to a new file with mode 0600; refuses to replace a file.
pub fn create_key_file(path: &Path, key: &SecretKey, lasting: Lasting) -> Result<()> {
    let mut file = create_private(path)?;
    let written = file.write_all(key.expose()).and_then(|()| match lasting {
        Lasting::Durable => file.sync_all(),
        Lasting::Ephemeral => Ok(()),
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(Error::Output {
            path: path.to_owned(),
            source: e,
        });
    }
    Ok(())
}

/// Seals `entries` under `key` now, with a fresh random nonce, after
/// refusing code-loading names not in `allow`; the bundle expires after
/// `ttl` if given. Bundles of a store's repository are sealed by
/// [`sealinit_store::launch::seal_launch`] instead. Returns the bytes to
/// write and the header sealed.
pub fn seal_now(
    key: &SecretKey,
    entries: &[Entry],
    allow: &[String],
    label: Option<String>,
    ttl: Option<Duration>,
) -> Result<(Vec<u8>, Header)> {
    bundle::check_name_policy(entries, allow)?;
    let now = sealinit_core::time::now();
    let header = Header::new(now, ttl.map(|t| now.saturating_add(t.as_secs())), label);
    let mut nonce = [0u8; bundle::NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Error::os("getrandom", io::Error::other(e)))?;
    let sealed = bundle::seal(key, &header, entries, &nonce).map_err(|e| match e {
        BundleError::Payload(p) => Error::Payload(p),
        other => Error::usage(format!("cannot seal: {other}")),
    })?;
    Ok((sealed, header))
}

/// Replaces `path` atomically with the bundle `bytes`: a 0600 temporary
/// file in the same directory, renamed into place, so a reader sees the old
/// file or the new one, never a partial one. Not fsynced: see
/// [`Lasting::Ephemeral`].
pub fn write_bundle(path: &Path, bytes: &[u8]) -> Result<()> {
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
    tmp.write_all(bytes).map_err(out_err)?;
    tmp.persist(path).map_err(|e| out_err(e.error))?;
    Ok(())
}

/// Writes the 32 key bytes to stdout (`--key-out -`).
pub fn key_to_stdout(key: &SecretKey) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(key.expose())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output {
            path: "standard output".into(),
            source: e,
        })
}

/// Writes the 32 key bytes to an inherited descriptor (`--key-out-fd`),
/// then closes it, so the reader sees end-of-file.
/// Takes `--key-out-fd`'s descriptor: call it before opening anything.
pub fn claim_key_fd(fd: i32) -> Result<std::os::fd::OwnedFd> {
    sealinit_sys::take_inherited_fd(fd).map_err(|_| {
        Error::usage(format!(
            "--key-out-fd {fd}: descriptor {fd} is not open; open it for writing (e.g. `{fd}>&1` or a pipe)"
        ))
    })
}

pub fn key_to_fd(owned: std::os::fd::OwnedFd, fd: i32, key: &SecretKey) -> Result<()> {
    File::from(owned)
        .write_all(key.expose())
        .map_err(|e| Error::Output {
            path: format!("descriptor {fd}").into(),
            source: e,
        })
}
