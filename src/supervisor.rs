//! The init side of sealinit. Signals are blocked for the whole life of the
//! process and taken synchronously with `sigtimedwait`: none is lost to a
//! race, nothing runs in a signal handler, and an idle sealinit sleeps in
//! one syscall with no timer (a timeout exists only while a grace period
//! runs). One loop reaps every child with `waitpid(-1, WNOHANG)` and
//! forwards every other signal to the command.
//!
//! Shutdown: when the command exits while other processes remain, or when
//! sealinit receives SIGTERM/SIGINT/SIGHUP/SIGQUIT, everything left gets
//! SIGTERM, then SIGKILL once the grace period is over; sealinit exits only
//! when no process of its own is left.

use std::collections::HashMap;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use tracing::{debug, info, trace, warn};

use crate::error::{Error, Result};
use crate::output::{Pump, Source};
use crate::signal;
use crate::sys::{self, ChildSetup, ExitStatus, Reaped, SignalSet};

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

/// Signals that, received by sealinit, start the shutdown grace period.
const SHUTDOWN_SIGNALS: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// How the supervisor treats the command and the other processes.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Time between SIGTERM and SIGKILL for whatever remains.
    pub grace: Duration,
    /// Forward signals to the command's whole process group.
    pub process_group: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            process_group: false,
        }
    }
}

#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    /// The mask sealinit inherited; each child gets it back.
    original_mask: SignalSet,
    /// Every signal we block and wait for.
    waited: SignalSet,
    is_pid1: bool,
    /// Stdin is a terminal: the command gets its own foreground group.
    tty: bool,
    /// The shutdown signal received, if any.
    shutdown: Option<c_int>,
    /// When whatever is still alive gets SIGKILL.
    kill_at: Option<Instant>,
    /// SIGKILL was sent to everything.
    killed: bool,
    /// `--mask`: the output proxy, and signals as a descriptor to poll
    /// beside it.
    pump: Option<(Pump, OwnedFd)>,
}

impl Supervisor {
    /// Blocks every catchable signal but the fault signals and, unless this
    /// is PID 1, makes this process a child subreaper. Call before anything
    /// that may start a child.
    pub fn new(policy: Policy) -> Result<Self> {
        let mut waited = SignalSet::full();
        for sig in FAULT_SIGNALS {
            waited.remove(sig);
        }
        let original_mask =
            sys::set_signal_mask(&waited).map_err(|e| Error::os("blocking signals", e))?;
        let is_pid1 = std::process::id() == 1;
        if !is_pid1 {
            match sys::set_child_subreaper() {
                Ok(()) => debug!("not PID 1: registered as child subreaper"),
                Err(e) => warn!(
                    "not PID 1 and cannot become a child subreaper ({e}); orphans will not be reaped by sealinit"
                ),
            }
        }
        Ok(Self {
            policy,
            original_mask,
            waited,
            is_pid1,
            tty: sys::is_terminal(0),
            shutdown: None,
            kill_at: None,
            killed: false,
            pump: None,
        })
    }

    /// Routes the output of every child started from now on through `pump`.
    pub fn attach(&mut self, pump: Pump) -> Result<()> {
        let fd = sys::signal_fd(&self.waited).map_err(|e| Error::os("signalfd", e))?;
        self.pump = Some((pump, fd));
        Ok(())
    }

    /// The command has started (see [`Pump::command_started`]).
    pub fn command_started(&mut self) {
        if let Some((pump, _)) = &mut self.pump {
            pump.command_started();
        }
    }

    pub fn is_pid1(&self) -> bool {
        self.is_pid1
    }

    /// The signal mask to restore in the child.
    pub fn child_mask(&self) -> &SignalSet {
        &self.original_mask
    }

    /// What each child does before exec: its own process group in group
    /// mode, and the terminal's foreground group when stdin is a terminal.
    pub fn child_setup(&self) -> ChildSetup {
        let base = ChildSetup {
            new_process_group: self.policy.process_group || self.tty,
            foreground_of: self.tty.then_some(0),
            core_limit: None,
            mount_proc: false,
            session_on: None,
            stdout_to: None,
            stderr_to: None,
        };
        match &self.pump {
            Some((pump, _)) => pump.child_setup(base),
            None => base,
        }
    }

    /// The shutdown signal received so far, if any.
    pub fn shutdown_signal(&self) -> Option<c_int> {
        self.shutdown
    }

    /// Forwards signals to `child` and reaps every process that exits,
    /// until `child` itself exits; returns its status.
    pub fn supervise(&mut self, child: libc::pid_t) -> Result<ExitStatus> {
        loop {
            let timeout = self
                .kill_at
                .map(|t| t.saturating_duration_since(Instant::now()));
            match self.wait(timeout)? {
                None => self.kill_everything(),
                Some(libc::SIGCHLD) => {
                    if let Some(status) = self.reap_all(Some(child))?.main {
                        debug!(?status, pid = child, "command exited");
                        return Ok(status);
                    }
                }
                Some(sig) => {
                    self.forward(child, sig);
                    if SHUTDOWN_SIGNALS.contains(&sig) && self.shutdown.is_none() {
                        info!(
                            "received {}: forwarded; everything left gets SIGKILL in {:?}",
                            signal::name(sig),
                            self.policy.grace
                        );
                        self.shutdown = Some(sig);
                        self.kill_at = Some(Instant::now() + self.policy.grace);
                    }
                }
            }
        }
    }

    /// Ends every remaining process (SIGTERM, then SIGKILL when the grace
    /// period, started now or earlier by a shutdown signal, is over), then,
    /// with `--mask`, delivers every byte still in the pipes. Returns once
    /// sealinit has no child left and all output is out.
    pub fn finish(&mut self) -> Result<()> {
        self.end_remaining()?;
        if let Some((pump, _)) = &mut self.pump {
            pump.drain();
        }
        Ok(())
    }

    fn end_remaining(&mut self) -> Result<()> {
        if !self.reap_all(None)?.children_left {
            return Ok(());
        }
        info!(
            "the command exited but other processes remain: sending SIGTERM, SIGKILL after {:?}",
            self.policy.grace
        );
        self.signal_all(libc::SIGTERM);
        let deadline = *self
            .kill_at
            .get_or_insert_with(|| Instant::now() + self.policy.grace);
        while self.reap_all(None)?.children_left {
            let timeout =
                (!self.killed).then(|| deadline.saturating_duration_since(Instant::now()));
            match self.wait(timeout)? {
                None => self.kill_everything(),
                // A process may have forked while we were killing: again.
                Some(libc::SIGCHLD) if self.killed => self.signal_all(libc::SIGKILL),
                Some(libc::SIGCHLD) => {}
                Some(sig) if SHUTDOWN_SIGNALS.contains(&sig) => self.signal_all(sig),
                Some(sig) => trace!("ignoring {} during shutdown", signal::name(sig)),
            }
        }
        debug!("no process left");
        Ok(())
    }

    /// The next signal, or `None` after `timeout`. With `--mask`, output is
    /// pumped meanwhile; held bytes are flushed after a silence. Without a
    /// timeout and with nothing held, this sleeps until something happens.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<c_int>> {
        let Some((pump, sigfd)) = &mut self.pump else {
            return sys::wait_signal(&self.waited, timeout)
                .map_err(|e| Error::os("waiting for signals", e));
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(sig) =
                sys::read_signal(sigfd).map_err(|e| Error::os("reading signalfd", e))?
            {
                return Ok(Some(sig));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            if pump.flush_deadline().is_some_and(|d| now >= d) {
                pump.flush_held();
            }
            let wake = [deadline, pump.flush_deadline()]
                .into_iter()
                .flatten()
                .min();
            let ms = wake.map(|w| {
                w.saturating_duration_since(now)
                    .as_millis()
                    .min(i32::MAX as u128) as i32
                    + 1
            });
            let ready: Vec<Source> = {
                let fds = pump.fds();
                let mut polled: Vec<PollFd<'_>> = std::iter::once(sigfd.as_fd())
                    .chain(fds.iter().map(|(fd, _)| *fd))
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                    .collect();
                let timeout = ms.map_or(PollTimeout::NONE, |m| {
                    PollTimeout::try_from(m).unwrap_or(PollTimeout::MAX)
                });
                match poll(&mut polled, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Error::os("poll", io::Error::from(e))),
                }
                polled[1..]
                    .iter()
                    .zip(&fds)
                    .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, (_, source))| *source)
                    .collect()
            };
            // In order: what the command wrote to stdout before stderr
            // goes out first when both are ready.
            for source in ready {
                pump.service(source);
            }
        }
    }

    fn forward(&self, child: libc::pid_t, sig: c_int) {
        if let (libc::SIGWINCH, Some((pump, _))) = (sig, &self.pump) {
            if pump.is_pty() {
                // The kernel signals the pty's foreground group itself.
                pump.resize();
                return;
            }
        }
        let target = if self.policy.process_group {
            -child
        } else {
            child
        };
        trace!(signal = %signal::name(sig), target, "forwarding");
        if let Err(e) = sys::send_signal(target, sig) {
            warn!("forwarding {} to {target} failed: {e}", signal::name(sig));
        }
    }

    fn kill_everything(&mut self) {
        warn!(
            "grace period of {:?} is over: sending SIGKILL to every remaining process",
            self.policy.grace
        );
        self.signal_all(libc::SIGKILL);
        self.killed = true;
        self.kill_at = None;
    }

    /// Sends `sig` to every process sealinit is responsible for: as PID 1
    /// every other process in the namespace (`kill(-1)`, which also reaches
    /// `setsid` escapees); otherwise every descendant.
    fn signal_all(&self, sig: c_int) {
        if self.is_pid1 {
            let _ = sys::send_signal(-1, sig);
        } else {
            for pid in descendants(std::process::id() as libc::pid_t) {
                let _ = sys::send_signal(pid, sig);
            }
        }
    }

    /// Reaps every exited process. SIGCHLD coalesces, so one signal may
    /// stand for many exits; `child`'s status is returned if it was reaped.
    fn reap_all(&mut self, child: Option<libc::pid_t>) -> Result<Reap> {
        let mut main = None;
        loop {
            match sys::reap_one().map_err(|e| Error::os("waitpid", e))? {
                Reaped::Child(pid, status) if Some(pid) == child => main = Some(status),
                Reaped::Child(pid, status) => trace!(pid, ?status, "reaped"),
                // Orphans are reparented to us (PID 1 or subreaper), so no
                // child means no descendant is left at all.
                Reaped::NoneYet => {
                    return Ok(Reap {
                        main,
                        children_left: true,
                    });
                }
                Reaped::NoChildren => {
                    return Ok(Reap {
                        main,
                        children_left: false,
                    });
                }
            }
        }
    }
}

struct Reap {
    main: Option<ExitStatus>,
    children_left: bool,
}

/// Every descendant of `root`, following parent links in `/proc`.
fn descendants(root: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    for (pid, ppid) in dir.filter_map(|e| parent_of(e.ok()?.file_name().to_str()?)) {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// `(pid, ppid)` for a `/proc` entry name, if it is a live process.
fn parent_of(entry: &str) -> Option<(libc::pid_t, libc::pid_t)> {
    let pid: libc::pid_t = entry.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
    Some((pid, ppid))
}
