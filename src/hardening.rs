//! What sealinit does to itself before it touches a secret: no other
//! process of the same user may read its memory, it never dumps core, and
//! no descriptor it inherited or opens reaches the command unless named.

use std::os::fd::RawFd;

use tracing::{debug, warn};

use crate::error::{Error, Result};
use sealinit_sys as sys;

/// What was changed, so that the command gets the defaults back.
#[derive(Debug, Clone, Copy)]
pub struct Hardening {
    /// The core-dump limit sealinit inherited (its own is now 0).
    pub core_limit: Option<libc::rlimit>,
    /// Which of fds 0-2 sealinit inherited closed (now held by a
    /// close-on-exec `/dev/null`, so the command finds them closed too).
    pub closed_std: [bool; 3],
}

/// Holds closed fds 0-2 (see [`sys::hold_std_fds`]), makes sealinit
/// non-dumpable with a zero core limit, and marks every
/// inherited descriptor above 2 close-on-exec except `keep_fds`.
pub fn apply(keep_fds: &[RawFd]) -> Result<Hardening> {
    let closed_std = sys::hold_std_fds().map_err(|e| Error::os("holding the closed fds 0-2", e))?;
    let core_limit = match sys::make_undumpable() {
        Ok(core) => Some(core),
        Err(e) => {
            warn!(
                "cannot make sealinit non-dumpable ({e}); its memory may be readable by processes of the same user"
            );
            None
        }
    };
    sys::cloexec_all_but(keep_fds).map_err(|e| Error::Os {
        op: "keeping the --keep-fd descriptors open",
        source: e,
    })?;
    debug!(?keep_fds, "non-dumpable; descriptors above 2 close on exec");
    Ok(Hardening {
        core_limit,
        closed_std,
    })
}
