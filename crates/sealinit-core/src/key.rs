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
    #[error("was not read: sealinit received signal {0} while waiting for it")]
    Interrupted(std::ffi::c_int),
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
}

/// A descriptor polled beside the key (sealinit's signalfd), and what to do
/// when it is readable: `Err` aborts the wait.
pub type Wake<'a> = (
    std::os::fd::BorrowedFd<'a>,
    &'a mut dyn FnMut() -> Result<(), KeyError>,
);

/// Reads exactly 32 bytes followed by end-of-file from `fd`, then closes it.
/// Gives up after `timeout` if the writer neither sends nor closes; `wake`
/// is serviced meanwhile. A non-blocking descriptor (a FIFO opened with
/// `O_NONBLOCK`) is fine: the wait is always `poll`.
pub fn read_key(
    fd: OwnedFd,
    timeout: Duration,
    mut wake: Option<Wake<'_>>,
) -> Result<SecretKey, KeyError> {
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
        let mut fds = vec![PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        if let Some((wfd, _)) = &wake {
            fds.push(PollFd::new(*wfd, PollFlags::POLLIN));
        }
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
        let key_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        if fds
            .get(1)
            .is_some_and(|w| w.revents().is_some_and(|r| !r.is_empty()))
        {
            if let Some((_, on_wake)) = wake.as_mut() {
                on_wake()?;
            }
        }
        if !key_ready {
            continue;
        }
        match file.read(&mut buf.expose_mut()[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled > SecretKey::LEN {
                    return Err(KeyError::TooLong);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
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
