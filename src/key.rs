//! Reading the 32-byte key: from an inherited descriptor (sealinit) or a
//! key file (sealctl), straight into locked memory.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::secret::{SecretBuf, SecretKey};

/// Why a key could not be read. The source (fd or path) is added by the caller.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("is not open")]
    NotOpen,
    #[error("is a directory, not a key")]
    Directory,
    #[error("is a terminal; pass the raw key bytes through a pipe or a file")]
    Terminal,
    #[error("is empty; a key is exactly 32 raw bytes (see `sealctl keygen`)")]
    Empty,
    #[error("holds {0} bytes; a key is exactly 32 raw bytes (see `sealctl keygen`)")]
    TooShort(usize),
    #[error("holds more than 32 bytes; a key is exactly 32 raw bytes (see `sealctl keygen`)")]
    TooLong,
    #[error(
        "did not reach end-of-file within {0:?}; the writer must close its end after the 32 key bytes"
    )]
    Timeout(Duration),
    #[error(
        "is readable by group or others (mode {0:o}); chmod 600 it (on Kubernetes: defaultMode: 0400)"
    )]
    NotPrivate(u32),
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
}

/// Reads the key from a descriptor inherited from the parent (and closes it).
pub fn read_inherited(fd: std::os::fd::RawFd, timeout: Duration) -> Result<SecretKey, KeyError> {
    let owned = crate::sys::take_inherited_fd(fd).map_err(|_| KeyError::NotOpen)?;
    read_key(owned, timeout)
}

/// Reads exactly 32 bytes followed by end-of-file from `fd`, then closes it.
/// Gives up after `timeout` if the writer neither sends nor closes.
pub fn read_key(fd: OwnedFd, timeout: Duration) -> Result<SecretKey, KeyError> {
    let meta = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
    if meta.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(KeyError::Directory);
    }
    if nix::unistd::isatty(fd.as_fd()).unwrap_or(false) {
        return Err(KeyError::Terminal);
    }
    // One spare byte tells "exactly 32" from "more than 32".
    let mut buf = SecretBuf::zeroed(SecretKey::LEN + 1)?;
    let deadline = Instant::now() + timeout;
    let mut file = File::from(fd);
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        );
        match ready {
            Ok(0) => return Err(KeyError::Timeout(timeout)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(KeyError::Io(e.into())),
        }
        match file.read(&mut buf.expose_mut()[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled > SecretKey::LEN {
                    return Err(KeyError::TooLong);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(KeyError::Io(e)),
        }
    }
    match filled {
        0 => Err(KeyError::Empty),
        SecretKey::LEN => {
            buf.truncate(SecretKey::LEN);
            Ok(SecretKey::from_buf(buf))
        }
        n => Err(KeyError::TooShort(n)),
    }
}
