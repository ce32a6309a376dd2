//! The init side of sealinit. Every signal is blocked for the whole life of
//! the process (real-time ones and glibc's internal 32 and 33 included) and
//! taken synchronously: with `--mask`, from a signalfd in one `poll` loop
//! beside the output proxy; without, with one raw `rt_sigtimedwait` per
//! signal (the same pending queue, one syscall instead of poll + read). None
//! is lost to a race, nothing runs in a signal handler, and an idle
//! sealinit sleeps in one syscall with no timer (a timeout exists only while
//! a grace period runs or `--mask` holds output back). The loop reaps every child with `waitpid(-1,
//! WNOHANG)`, forwards every signal someone sent, and, with `--mask`,
//! services the output proxy by readiness only: nothing in it can block.
//!
//! What is forwarded: every signal that another process sent (`kill`,
//! `sigqueue`, the terminal), fault signals such as SIGSEGV sent with `kill`
//! included. What is not: SIGCHLD (it means "reap"), and signals the kernel
//! raised on sealinit's own syscalls (SIGPIPE after writing to a closed
//! pipe, SIGXFSZ), which are about sealinit, not the command. A real fault
//! of sealinit's own is synchronous: the kernel delivers it despite the
//! mask, as for any program.
//!
//! Shutdown: the stop signal (SIGTERM, or `--stop-signal`) is forwarded and
//! starts the grace period; when the command exits while other processes
//! remain, they get SIGTERM; whatever is left when the grace period is over
//! gets SIGKILL. Other signals (SIGHUP, SIGINT, SIGQUIT, ...) are forwarded
//! and nothing more. sealinit exits once no process of its own is left.
//!
//! Who gets signalled: as PID 1, every process of the namespace (`kill(-1)`:
//! all are its own). Otherwise only descendants: found through `/proc`, and
//! only when that `/proc` belongs to sealinit's PID namespace, each one
//! opened as a pidfd and checked to be the child of a process already
//! known to be a descendant before it is signalled through that pidfd (a
//! reused pid can never be hit). Where descendants cannot be known (no
//! `/proc`, or another namespace's), the children sealinit started and has
//! not reaped, and the command's own process group when it has one. A wait
//! after a SIGKILL that reached no process is bounded.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use tracing::{debug, info, trace, warn};

use crate::error::{Error, Result};
use crate::output::{Pump, Token};
use crate::signal;
use sealinit_sys::{self as sys, ChildSetup, ExitStatus, Reaped, SigInfo, SignalSet};

/// After a SIGKILL that reached no process, how long children that cannot
/// be seen are waited for before sealinit gives up on them.
const UNSEEN_WAIT: Duration = Duration::from_secs(1);

/// How sealinit's deferred signals (taken before any child runs) are kept.
const DEFERRED_MAX: usize = 64;

/// How the supervisor treats the command and the other processes.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Time between SIGTERM and SIGKILL for whatever remains.
    pub grace: Duration,
    /// Forward signals to the command's whole process group.
    pub process_group: bool,
    /// The signal that means "stop" (`--stop-signal`): forwarded, and
    /// starts the grace period.
    pub stop_signal: c_int,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            process_group: false,
            stop_signal: libc::SIGTERM,
        }
    }
}

#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    /// The mask sealinit inherited; each child gets it back.
    original_mask: SignalSet,
    /// Every signal, as a descriptor to poll; opened by
    /// [`Supervisor::open_signal_fd`] (or on first use).
    sigfd: Option<OwnedFd>,
    is_pid1: bool,
    /// Stdin is a terminal: the command gets its own foreground group.
    tty: bool,
    /// The stop signal received, if any, and when the grace period ends.
    shutdown: Option<c_int>,
    grace_ends: Option<Instant>,
    /// When whatever is still alive gets SIGKILL.
    kill_at: Option<Instant>,
    /// SIGKILL was sent to everything.
    killed: bool,
    /// Children sealinit started and has not reaped: safe to signal by pid.
    started: Vec<libc::pid_t>,
    /// The last command started in its own process group, if any.
    own_group: Option<libc::pid_t>,
    /// Signals taken before any child ran, forwarded to the first one.
    deferred: VecDeque<c_int>,
    /// Where signals go instead of the supervised child (see
    /// [`Supervisor::forward_to`]).
    signal_target: Option<libc::pid_t>,
    /// `--mask`: the output proxy.
    pump: Option<Pump>,
}

impl Supervisor {
    /// Blocks every signal; unless this is PID 1, makes this process a
    /// child subreaper. Call before anything that may start a child. It
    /// opens no descriptor: an inherited fd the user named (the key's)
    /// must be taken before sealinit opens any of its own, or the number
    /// could be reused.
    pub fn new(policy: Policy) -> Result<Self> {
        let original_mask = sys::set_signal_mask(&SignalSet::full())
            .map_err(|e| Error::os("blocking signals", e))?;
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
            sigfd: None,
            is_pid1,
            tty: sys::is_terminal(0),
            shutdown: None,
            grace_ends: None,
            kill_at: None,
            killed: false,
            started: Vec::new(),
            own_group: None,
            deferred: VecDeque::new(),
            signal_target: None,
            pump: None,
        })
    }

    /// Routes the output of every child started from now on through `pump`.
    pub fn attach(&mut self, pump: Pump) {
        self.pump = Some(pump);
    }

    /// The command has started (see [`Pump::command_started`]).
    pub fn command_started(&mut self) {
        if let Some(pump) = &mut self.pump {
            pump.command_started();
        }
    }

    pub fn is_pid1(&self) -> bool {
        self.is_pid1
    }

    /// Opens the signal descriptor (once); returns it, for waits during
    /// start-up (the key).
    pub fn open_signal_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>> {
        if self.sigfd.is_none() {
            let fd = sys::signal_fd(&SignalSet::full()).map_err(|e| Error::os("signalfd", e))?;
            self.sigfd = Some(fd);
        }
        Ok(self.sigfd.as_ref().expect("just opened").as_fd())
    }

    /// Start-up, before any child: takes the pending signals. A stop signal
    /// or SIGINT aborts the start (returned); any other is kept and
    /// forwarded to the first child.
    pub fn startup_signals(&mut self) -> Result<Option<c_int>> {
        while let Some(si) = self.next_signal()? {
            if si == self.policy.stop_signal || si == libc::SIGINT {
                return Ok(Some(si));
            }
            if si != libc::SIGCHLD && self.deferred.len() < DEFERRED_MAX {
                self.deferred.push_back(si);
            }
        }
        Ok(None)
    }

    /// The signal mask to restore in the child.
    pub fn child_mask(&self) -> &SignalSet {
        &self.original_mask
    }

    /// What each child does before exec: its own process group in group
    /// mode, when stdin is a terminal (and then the terminal's foreground
    /// group), and whenever sealinit is not PID 1, so that what the command
    /// leaves behind can be ended as a group where `/proc` cannot show it
    /// (as dumb-init's own session).
    pub fn child_setup(&self) -> ChildSetup {
        let base = ChildSetup {
            new_process_group: self.policy.process_group || self.tty || !self.is_pid1,
            foreground_of: self.tty.then_some(0),
            core_limit: None,
            mount_proc: false,
            session_on: None,
            stdout_to: None,
            stderr_to: None,
            net_namespace: None,
        };
        match &self.pump {
            Some(pump) => pump.child_setup(base),
            None => base,
        }
    }

    /// A child was started with `setup`: it is ours to signal until reaped.
    pub fn started(&mut self, pid: libc::pid_t, setup: &ChildSetup) {
        self.started.push(pid);
        if setup.new_process_group || setup.session_on.is_some() {
            self.own_group = Some(pid);
        }
    }

    /// Forwards signals to `pid` rather than to the supervised child: for a
    /// sandbox runner (bubblewrap) that does not forward them itself and
    /// runs the real command, in its own PID namespace, as `pid`.
    pub fn forward_to(&mut self, pid: libc::pid_t) {
        self.signal_target = Some(pid);
    }

    /// The stop signal received so far, if any.
    pub fn shutdown_signal(&self) -> Option<c_int> {
        self.shutdown
    }

    /// Forwards signals to `child` and reaps every process that exits,
    /// until `child` itself exits; returns its status.
    pub fn supervise(&mut self, child: libc::pid_t) -> Result<ExitStatus> {
        while let Some(sig) = self.deferred.pop_front() {
            self.forward(child, sig);
        }
        loop {
            let timeout = self
                .kill_at
                .map(|t| t.saturating_duration_since(Instant::now()));
            match self.wait(timeout)? {
                None => {
                    self.kill_everything();
                }
                Some(libc::SIGCHLD) => {
                    if let Some(status) = self.reap_all(Some(child))?.main {
                        debug!(?status, pid = child, "command exited");
                        return Ok(status);
                    }
                }
                Some(sig) => {
                    self.forward(child, sig);
                    if sig == self.policy.stop_signal && self.shutdown.is_none() {
                        info!(
                            "received {}: forwarded; everything left gets SIGKILL in {:?}",
                            signal::name(sig),
                            self.policy.grace
                        );
                        self.shutdown = Some(sig);
                        let at = Instant::now().checked_add(self.policy.grace);
                        self.grace_ends = at;
                        self.kill_at = at;
                    }
                }
            }
        }
    }

    /// Ends every remaining process (SIGTERM, then SIGKILL when the grace
    /// period, started now or earlier by the stop signal, is over), then,
    /// with `--mask`, delivers the output still in the pipes. Every exit
    /// path after the first child started comes through here. Returns once
    /// sealinit has no child left (or none it can see) and the output is
    /// out (or its destination stayed blocked for the grace period).
    pub fn finish(&mut self) -> Result<()> {
        self.end_remaining()?;
        self.drain_output()
    }

    fn end_remaining(&mut self) -> Result<()> {
        if !self.reap_all(None)?.children_left {
            return Ok(());
        }
        info!(
            "the command exited but other processes remain: sending SIGTERM, SIGKILL after {:?}",
            self.policy.grace
        );
        // Who had SIGTERM (pidfds, so that a reused pid is not taken for
        // one). A process forked just after, an orphan not seen before, or
        // one that has exec'd since (a shell's child can lose the signal
        // to the shell's handler between fork and exec) gets it at the
        // next SIGCHLD or look: looks come after 10 ms, then twice as
        // long each time up to 1 s, during the grace period only.
        let mut termed = Vec::new();
        let tracked = signal_descendants(libc::SIGTERM, Some(&mut termed), self.is_pid1).is_some();
        if !tracked {
            self.signal_all(libc::SIGTERM);
        }
        let mut look_every = Duration::from_millis(10);
        let mut next_look = tracked.then(|| Instant::now() + look_every);
        let deadline = match self.kill_at {
            Some(t) => Some(t),
            None if self.killed => None,
            None => Instant::now().checked_add(self.policy.grace),
        };
        self.kill_at = deadline;
        let mut give_up: Option<Instant> = None;
        while self.reap_all(None)?.children_left {
            let now = Instant::now();
            if give_up.is_some_and(|t| now >= t) {
                warn!(
                    "processes remain that sealinit cannot see to signal (no /proc of its PID namespace); leaving them"
                );
                return Ok(());
            }
            let looking = next_look.filter(|_| !self.killed);
            let wake = [self.kill_at, give_up, looking].into_iter().flatten().min();
            match self.wait(wake.map(|t| t.saturating_duration_since(now)))? {
                None if self.kill_at.is_some_and(|t| Instant::now() >= t) => {
                    if self.kill_everything() == 0 {
                        give_up = Some(Instant::now() + UNSEEN_WAIT);
                    }
                }
                None => {
                    if looking.is_some_and(|t| Instant::now() >= t) {
                        signal_descendants(libc::SIGTERM, Some(&mut termed), self.is_pid1);
                        look_every = (look_every * 2).min(Duration::from_secs(1));
                        next_look = Some(Instant::now() + look_every);
                    }
                }
                // A process may have forked while we were killing, or an
                // orphan unseen so far been reparented to us: again, to
                // the new ones only.
                Some(libc::SIGCHLD) => {
                    let reached = if self.killed {
                        self.signal_all(libc::SIGKILL)
                    } else {
                        signal_descendants(libc::SIGTERM, Some(&mut termed), self.is_pid1);
                        1
                    };
                    if reached == 0 && give_up.is_none() {
                        give_up = Some(Instant::now() + UNSEEN_WAIT);
                    }
                }
                Some(sig) if sig == self.policy.stop_signal || sig == libc::SIGINT => {
                    self.signal_all(sig);
                }
                Some(sig) => trace!("ignoring {} during shutdown", signal::name(sig)),
            }
        }
        debug!("no process left");
        Ok(())
    }

    /// `--mask`: every process is gone; write out what the pipes and queues
    /// hold, for at most the grace period (or what is left of it after a
    /// stop signal); a stop signal or SIGINT now drops the rest.
    fn drain_output(&mut self) -> Result<()> {
        let Some(pump) = &mut self.pump else {
            return Ok(());
        };
        pump.drain_sources();
        let deadline = match self.grace_ends {
            Some(t) => t,
            None => Instant::now()
                .checked_add(self.policy.grace)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
        };
        loop {
            let unsent = self.pump.as_ref().map_or(0, Pump::unsent);
            if unsent == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                warn!(
                    "--mask: {unsent} bytes of output not written: the destination accepted nothing more within the grace period"
                );
                return Ok(());
            }
            match self.wait(Some(deadline - now))? {
                Some(sig) if sig == self.policy.stop_signal || sig == libc::SIGINT => {
                    warn!(
                        "--mask: received {} while writing the last output; {unsent} bytes dropped",
                        signal::name(sig)
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    /// The next signal someone sent, skipping those the kernel raised on
    /// sealinit's own syscalls; `None` if none is pending.
    fn next_signal(&mut self) -> Result<Option<c_int>> {
        self.open_signal_fd()?;
        let sigfd = self.sigfd.as_ref().expect("opened");
        loop {
            match sys::read_signal(sigfd).map_err(|e| Error::os("reading signalfd", e))? {
                None => return Ok(None),
                Some(si) if si.raised_by_own_syscall() => {
                    trace!(
                        "{} raised by sealinit's own write: not forwarded",
                        signal::name(si.signo)
                    );
                }
                Some(SigInfo { signo, .. }) => return Ok(Some(signo)),
            }
        }
    }

    /// The next signal, or `None` after `timeout`. With `--mask`, output is
    /// pumped meanwhile; held bytes are flushed after a silence. Without a
    /// timeout and with nothing held, this sleeps until something happens.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<c_int>> {
        if self.pump.is_none() {
            // Nothing to poll but signals: one rt_sigtimedwait per signal.
            loop {
                match sys::wait_signal(&SignalSet::full(), timeout)
                    .map_err(|e| Error::os("waiting for signals", e))?
                {
                    Some(si) if si.raised_by_own_syscall() => continue,
                    other => return Ok(other.map(|si| si.signo)),
                }
            }
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if let Some(sig) = self.next_signal()? {
                return Ok(Some(sig));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let flush_at = self.pump.as_ref().and_then(Pump::flush_deadline);
            if flush_at.is_some_and(|d| now >= d) {
                if let Some(pump) = &mut self.pump {
                    pump.flush_held();
                }
                continue;
            }
            let wake = [deadline, flush_at].into_iter().flatten().min();
            let timeout = wake.map_or(PollTimeout::NONE, |w| {
                let ms = w.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            });
            let ready: Vec<Token> = {
                let interests = self.pump.as_ref().map(Pump::interests).unwrap_or_default();
                let sigfd = self.sigfd.as_ref().expect("opened by next_signal");
                let mut polled: Vec<PollFd<'_>> =
                    std::iter::once(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN))
                        .chain(interests.iter().map(|(fd, ev, _)| PollFd::new(*fd, *ev)))
                        .collect();
                match poll(&mut polled, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Error::os("poll", io::Error::from(e))),
                }
                polled[1..]
                    .iter()
                    .zip(&interests)
                    .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, (_, _, token))| *token)
                    .collect()
            };
            // In order: what the command wrote to stdout before stderr
            // goes out first when both are ready.
            if let Some(pump) = &mut self.pump {
                for token in ready {
                    pump.service(token);
                }
            }
        }
    }

    fn forward(&self, child: libc::pid_t, sig: c_int) {
        if let (libc::SIGWINCH, Some(pump)) = (sig, &self.pump) {
            if pump.is_pty() {
                // The kernel signals the pty's foreground group itself.
                pump.resize();
                return;
            }
        }
        let child = self.signal_target.unwrap_or(child);
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

    /// SIGKILL to everything left; returns how many processes it reached.
    fn kill_everything(&mut self) -> usize {
        warn!(
            "grace period of {:?} is over: sending SIGKILL to every remaining process",
            self.policy.grace
        );
        let reached = self.signal_all(libc::SIGKILL);
        self.killed = true;
        self.kill_at = None;
        reached
    }

    /// Sends `sig` to every process sealinit is responsible for (see the
    /// module docs); returns how many it reached (as PID 1, 1 if any).
    fn signal_all(&self, sig: c_int) -> usize {
        if self.is_pid1 {
            return usize::from(sys::send_signal(-1, sig).is_ok());
        }
        match signal_descendants(sig, None, false) {
            Some(n) => n,
            None => {
                // Descendants cannot be known: what sealinit started itself.
                let mut n = 0;
                if let Some(group) = self.own_group {
                    n += usize::from(sys::send_signal(-group, sig).is_ok());
                }
                for &pid in &self.started {
                    n += usize::from(sys::send_signal(pid, sig).is_ok());
                }
                n
            }
        }
    }

    /// Reaps every exited process. SIGCHLD coalesces, so one signal may
    /// stand for many exits; `child`'s status is returned if it was reaped.
    fn reap_all(&mut self, child: Option<libc::pid_t>) -> Result<Reap> {
        let mut main = None;
        loop {
            match sys::reap_one().map_err(|e| Error::os("waitpid", e))? {
                Reaped::Child(pid, status) => {
                    self.started.retain(|&p| p != pid);
                    if Some(pid) == child {
                        main = Some(status);
                    } else {
                        trace!(pid, ?status, "reaped");
                    }
                }
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

/// Whether `/proc` is the procfs of sealinit's own PID namespace: its
/// `self` link names the pid sealinit has in its namespace.
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// Signals every descendant through a pidfd, each checked to be the child
/// of a process known to be a descendant while that process still exists
/// (so neither pid can have been reused); returns how many it reached.
/// With `seen`, processes already in it (not gone, and still running the
/// program they ran then) are skipped, and those signalled now are added. As PID 1 (`everyone`), every process of
/// the namespace is its own: all of `/proc` but itself, each through a
/// pidfd, each once. `None` if `/proc` cannot tell.
fn signal_descendants(
    sig: c_int,
    mut seen: Option<&mut Vec<(libc::pid_t, OwnedFd, String)>>,
    everyone: bool,
) -> Option<usize> {
    if !proc_is_ours() {
        return None;
    }
    let me = std::process::id() as libc::pid_t;
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    for (pid, ppid) in std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| parent_of(e.ok()?.file_name().to_str()?))
    {
        // As PID 1, a process whose parent is outside the namespace (one
        // that entered it with setns: ppid 0) is ours too.
        let ppid = if everyone && ppid == 0 && pid != me {
            me
        } else {
            ppid
        };
        children.entry(ppid).or_default().push(pid);
    }
    let mut reached = 0;
    // (pid, its pidfd; None for sealinit itself)
    let mut stack: Vec<(libc::pid_t, Option<OwnedFd>)> = vec![(me, None)];
    while let Some((parent, parent_fd)) = stack.pop() {
        for &c in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            let Ok(fd) = sys::pidfd_open(c) else { continue };
            // The process this pidfd names has `parent` as its parent, and
            // `parent` is still the descendant we verified (a process that
            // still exists keeps its pid).
            // (As PID 1 every process of the namespace is its own: no
            // check needed.)
            let verified = everyone
                || (parent_of(&c.to_string()).is_some_and(|(_, pp)| pp == parent)
                    && parent_fd.as_ref().is_none_or(sys::pidfd_alive));
            if !verified {
                continue;
            }
            // Signalled already, and still running the same program? A
            // process that has exec'd since may have lost the signal to
            // the handler of the program it was (a shell between fork
            // and exec): the program running now gets it too.
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            let known = seen.as_deref().is_some_and(|seen| {
                seen.iter()
                    .any(|(p, pfd, was)| *p == c && *was == comm && sys::pidfd_alive(pfd))
            });
            if !known {
                trace!(pid = c, comm = comm.trim_end(), signal = sig, "signalling");
                if sys::pidfd_send_signal(&fd, sig).is_ok() {
                    reached += 1;
                }
                if let (Some(seen), Ok(copy)) = (seen.as_deref_mut(), fd.try_clone()) {
                    seen.retain(|(p, _, _)| *p != c);
                    seen.push((c, copy, comm));
                }
            }
            stack.push((c, Some(fd)));
        }
    }
    Some(reached)
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
