//! The init side of sealinit: signals are blocked for the whole life of the
//! process and taken synchronously with `sigtimedwait`, so none is lost to a
//! race, nothing runs in a signal handler, and an idle sealinit sleeps in
//! one syscall with no timer. One loop reaps every child with
//! `waitpid(-1, WNOHANG)` and forwards every other signal to the command.

use std::ffi::c_int;

use tracing::{debug, trace, warn};

use crate::error::{Error, Result};
use crate::sys::{self, ExitStatus, SignalSet};

/// Synchronous fault signals: they belong to sealinit itself (blocking them
/// would turn a crash into a hang), and are never forwarded.
const FAULT_SIGNALS: [c_int; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
];

#[derive(Debug)]
pub struct Supervisor {
    /// The mask sealinit inherited; the child gets it back.
    original_mask: SignalSet,
    /// Every signal we block and wait for.
    waited: SignalSet,
}

impl Supervisor {
    /// Blocks every catchable signal but the fault signals and, unless this
    /// is PID 1, makes this process a child subreaper. Call before anything
    /// that may start a child.
    pub fn new() -> Result<Self> {
        let mut waited = SignalSet::full();
        for sig in FAULT_SIGNALS {
            waited.remove(sig);
        }
        let original_mask =
            sys::set_signal_mask(&waited).map_err(|e| Error::os("blocking signals", e))?;
        if std::process::id() != 1 {
            match sys::set_child_subreaper() {
                Ok(()) => debug!("not PID 1: registered as child subreaper"),
                Err(e) => warn!(
                    "not PID 1 and cannot become a child subreaper ({e}); orphans will not be reaped by sealinit"
                ),
            }
        }
        Ok(Self {
            original_mask,
            waited,
        })
    }

    /// The signal mask to restore in the child.
    pub fn child_mask(&self) -> &SignalSet {
        &self.original_mask
    }

    /// Forwards signals to `child` and reaps every process that exits,
    /// until `child` itself exits; returns its status.
    pub fn supervise(&mut self, child: libc::pid_t) -> Result<ExitStatus> {
        loop {
            let Some(sig) = sys::wait_signal(&self.waited, None)
                .map_err(|e| Error::os("waiting for signals", e))?
            else {
                continue;
            };
            if sig == libc::SIGCHLD {
                if let Some(status) = self.reap(child)? {
                    debug!(?status, "command exited");
                    return Ok(status);
                }
            } else {
                trace!(signal = sig, pid = child, "forwarding signal");
                if let Err(e) = sys::send_signal(child, sig) {
                    warn!("forwarding signal {sig} to pid {child} failed: {e}");
                }
            }
        }
    }

    /// Reaps every exited process; returns the status of `child` if it was
    /// among them. SIGCHLD coalesces, so one signal may stand for many exits.
    fn reap(&mut self, child: libc::pid_t) -> Result<Option<ExitStatus>> {
        let mut main = None;
        while let Some((pid, status)) = sys::reap_one().map_err(|e| Error::os("waitpid", e))? {
            if pid == child {
                main = Some(status);
            } else {
                trace!(pid, ?status, "reaped");
            }
        }
        Ok(main)
    }
}
