//! The output proxy of `--mask`: the command's stdout and stderr come to
//! sealinit through pipes (or, when sealinit's stdout is a terminal, through
//! a pseudo-terminal it proxies), are masked by [`Masker`], and go out on
//! sealinit's own fds 1 and 2. Without `--mask` none of this exists and the
//! command's stdio is sealinit's, untouched.
//!
//! Nothing here ever blocks the init: every descriptor is serviced only
//! when `poll` says it is ready, and every write is non-blocking.
//! - A destination (sealinit's fd 1 or 2) gets its own open file
//!   description with `O_NONBLOCK` (reopened through `/proc/self/fd`, so the
//!   parent's description is untouched); a socket is written with
//!   `MSG_DONTWAIT`; a regular file is written as it is. Where neither
//!   reopening nor a socket applies (no `/proc`), `O_NONBLOCK` is set on the
//!   shared description and restored when sealinit ends.
//! - Each destination has a queue. While it holds [`QUEUE_HIGH`] bytes or
//!   more, the sources that feed it are not read: the command blocks in its
//!   own write (back-pressure), and sealinit goes on taking signals, timers
//!   and exits.
//! - In pty mode, sealinit's stdin is forwarded to the pty through a queue of
//!   at most [`INPUT_MAX`] bytes; stdin is not read while it is full.
//! - A destination whose reader is gone (`EPIPE`) is closed, and so are the
//!   pipes that feed it: the command sees the same broken pipe it would see
//!   without `--mask`. `EAGAIN` is never taken for a gone reader.
//! - A stream whose fd (1 or 2) sealinit inherited closed is not proxied:
//!   the command inherits it closed, as without `--mask`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::termios::{self, SetArg, Termios};
use tracing::{debug, warn};
use zeroize::Zeroize;

use sealinit_mask::{Masker, Stream};
use sealinit_sys::{self as sys, ChildSetup, FdKind};

/// How long, by default, a possible prefix of a secret is held back after
/// the last output before it is written out as it is (`--mask-hold-ms`).
pub const HOLD: Duration = Duration::from_millis(50);

/// A destination with this many bytes queued stops the reading of its
/// sources until it drains below it.
pub const QUEUE_HIGH: usize = 256 * 1024;

/// At most this much of sealinit's stdin waits for the pty (pty mode).
pub const INPUT_MAX: usize = 64 * 1024;

const CHUNK: usize = 256 * 1024;

/// What a polled descriptor stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// Read the command's output stream `n` (stdout first).
    Read(usize),
    /// Write queued output to destination `n`.
    Write(usize),
    /// Read sealinit's stdin (pty mode).
    Stdin,
    /// Write queued input to the pty master.
    ToPty,
}

/// A destination: one of sealinit's own fds 1 and 2.
struct Sink {
    out: Option<File>,
    socket: bool,
    /// The fd whose shared description got `O_NONBLOCK` (no `/proc`), and
    /// its flags before, restored on drop.
    restore: Option<(OwnedFd, libc::c_int)>,
    queue: Vec<u8>,
    sent: usize,
}

impl Sink {
    fn open(fd: RawFd) -> io::Result<Option<Self>> {
        let sink = |out: File, socket, restore| Self {
            out: Some(out),
            socket,
            restore,
            queue: Vec::new(),
            sent: 0,
        };
        let dup = || -> io::Result<File> {
            Ok(File::from(match fd {
                1 => io::stdout().as_fd().try_clone_to_owned()?,
                _ => io::stderr().as_fd().try_clone_to_owned()?,
            }))
        };
        Ok(Some(match sys::fd_kind(fd) {
            FdKind::Closed => return Ok(None),
            FdKind::Regular => sink(dup()?, false, None),
            FdKind::Socket => sink(dup()?, true, None),
            FdKind::Stream => match sys::reopen_nonblocking(fd, true) {
                Ok(f) => sink(f, false, None),
                Err(e) => {
                    debug!("cannot reopen fd {fd} ({e}): O_NONBLOCK on the shared description");
                    let f = dup()?;
                    let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL)
                        .map_err(io::Error::from)?;
                    sys::set_nonblocking(f.as_raw_fd())?;
                    let keep = f.as_fd().try_clone_to_owned()?;
                    sink(f, false, Some((keep, flags)))
                }
            },
        }))
    }

    fn unsent(&self) -> usize {
        self.queue.len() - self.sent
    }

    /// Writes what the destination takes now. `Err` means the reader is
    /// gone: the queue is dropped and the sink closed.
    fn flush(&mut self) -> Result<(), ()> {
        let Some(out) = self.out.as_mut() else {
            self.queue.clear();
            self.sent = 0;
            return Err(());
        };
        while self.sent < self.queue.len() {
            let data = &self.queue[self.sent..];
            let r = if self.socket {
                sys::send_nonblocking(out.as_raw_fd(), data)
            } else {
                out.write(data)
            };
            match r {
                Ok(0) => break,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("writing masked output failed ({e}); closing that stream");
                    self.out = None;
                    self.queue = Vec::new();
                    self.sent = 0;
                    return Err(());
                }
            }
        }
        if self.sent == self.queue.len() {
            self.queue.clear();
            self.sent = 0;
        } else if self.sent >= QUEUE_HIGH {
            self.queue.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((fd, flags)) = &self.restore {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_truncate(*flags)),
            );
        }
    }
}

struct Channel {
    /// Read end of the pipe, or the pty master; non-blocking.
    src: Option<File>,
    sink: usize,
    stream: Stream,
}

/// Pty mode: sealinit's stdin on its way to the pty master.
struct Input {
    stdin: Option<File>,
    /// Our own description of the master, non-blocking.
    master: File,
    queue: Vec<u8>,
}

pub struct Pump {
    masker: Masker,
    channels: Vec<Channel>,
    sinks: Vec<Sink>,
    input: Option<Input>,
    /// Pty mode: the master, and our terminal's settings to restore.
    pty: Option<(File, Option<Termios>)>,
    /// The command's ends (pipe write ends, pty slave), kept until the
    /// command has started so that setup steps can use them too.
    child_ends: Vec<OwnedFd>,
    setup: ChildSetup,
    /// When the last data arrived, while some stream holds bytes back.
    held_since: Option<Instant>,
    hold: Duration,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("channels", &self.channels.len())
            .field("pty", &self.pty.is_some())
            .finish_non_exhaustive()
    }
}

fn nonblocking(fd: OwnedFd) -> io::Result<File> {
    sys::set_nonblocking(fd.as_raw_fd())?;
    Ok(File::from(fd))
}

impl Pump {
    /// Sets up the pipes, or a pty when sealinit's stdout is a terminal.
    /// `closed` says which of sealinit's fds 0-2 it inherited closed.
    pub fn new(masker: Masker, hold: Duration, closed: [bool; 3]) -> io::Result<Self> {
        let mut pump = Self {
            masker,
            channels: Vec::new(),
            sinks: Vec::new(),
            input: None,
            pty: None,
            child_ends: Vec::new(),
            setup: ChildSetup::default(),
            held_since: None,
            hold,
            buf: vec![0; CHUNK],
        };
        if !closed[1] && sys::is_terminal(1) {
            let (master, slave) = sys::open_pty()?;
            let master = nonblocking(master)?;
            let _ = sys::copy_window_size(1, master.as_raw_fd());
            let saved = if !closed[0] && sys::is_terminal(0) {
                let saved = termios::tcgetattr(io::stdin()).map_err(io::Error::from)?;
                let mut raw = saved.clone();
                termios::cfmakeraw(&mut raw);
                termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
                Some(saved)
            } else {
                None
            };
            let stdin = if closed[0] {
                None
            } else {
                Some(match sys::reopen_nonblocking(0, false) {
                    Ok(f) => f,
                    // No /proc: a blocking read, done only when poll says
                    // stdin is readable.
                    Err(_) => File::from(io::stdin().as_fd().try_clone_to_owned()?),
                })
            };
            pump.input = Some(Input {
                stdin,
                master: master.try_clone()?,
                queue: Vec::new(),
            });
            if let Some(sink) = Sink::open(1)? {
                pump.sinks.push(sink);
            }
            pump.channels.push(Channel {
                src: Some(master.try_clone()?),
                sink: 0,
                stream: Stream::default(),
            });
            pump.setup.session_on = Some(slave.as_raw_fd());
            pump.child_ends.push(slave);
            pump.pty = Some((master, saved));
            debug!("--mask: the command runs on a pseudo-terminal");
        } else {
            for fd in [1, 2] {
                let sink = match closed[fd as usize] {
                    true => None,
                    false => Sink::open(fd)?,
                };
                let Some(sink) = sink else {
                    debug!("--mask: fd {fd} is closed; the command inherits it closed");
                    continue;
                };
                let (rd, wr) =
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
                if fd == 1 {
                    pump.setup.stdout_to = Some(wr.as_raw_fd());
                } else {
                    pump.setup.stderr_to = Some(wr.as_raw_fd());
                }
                pump.child_ends.push(wr);
                pump.sinks.push(sink);
                pump.channels.push(Channel {
                    src: Some(nonblocking(rd)?),
                    sink: pump.sinks.len() - 1,
                    stream: Stream::default(),
                });
            }
            debug!("--mask: the command's stdout and stderr are piped through sealinit");
        }
        Ok(pump)
    }

    pub fn is_pty(&self) -> bool {
        self.pty.is_some()
    }

    /// The child's setup, with the pump's stdio on top of `base`.
    pub fn child_setup(&self, base: ChildSetup) -> ChildSetup {
        let mut s = ChildSetup {
            session_on: self.setup.session_on,
            stdout_to: self.setup.stdout_to,
            stderr_to: self.setup.stderr_to,
            ..base
        };
        if self.is_pty() {
            // The new session on the pty gives the command its own group,
            // in the pty's foreground.
            s.new_process_group = false;
            s.foreground_of = None;
        }
        s
    }

    /// The command has started: close our copies of its ends, so that EOF
    /// arrives once every process writing to them is gone.
    pub fn command_started(&mut self) {
        self.child_ends.clear();
        self.setup = ChildSetup::default();
    }

    /// The descriptors to poll now, with what each waits for. A source is
    /// polled only while its destination's queue is below [`QUEUE_HIGH`]
    /// (or the destination is gone); stdin only while the input queue has
    /// room; a destination only while it has something queued.
    pub fn interests(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Token)> {
        let mut v = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            let Some(src) = &c.src else { continue };
            if self
                .sinks
                .get(c.sink)
                .is_none_or(|s| s.unsent() < QUEUE_HIGH)
            {
                v.push((src.as_fd(), PollFlags::POLLIN, Token::Read(i)));
            }
        }
        for (i, s) in self.sinks.iter().enumerate() {
            if let (Some(out), true) = (&s.out, s.unsent() > 0) {
                v.push((out.as_fd(), PollFlags::POLLOUT, Token::Write(i)));
            }
        }
        if let Some(input) = &self.input {
            if let (Some(stdin), true) = (&input.stdin, input.queue.len() < INPUT_MAX) {
                v.push((stdin.as_fd(), PollFlags::POLLIN, Token::Stdin));
            }
            if !input.queue.is_empty() {
                v.push((input.master.as_fd(), PollFlags::POLLOUT, Token::ToPty));
            }
        }
        v
    }

    /// Services a descriptor that poll found ready (or in error).
    pub fn service(&mut self, token: Token) {
        match token {
            Token::Read(c) => self.read_channel(c, false),
            Token::Write(s) => self.flush_sink(s),
            Token::Stdin => self.read_input(),
            Token::ToPty => self.write_input(),
        }
    }

    /// Reads what one source has now (once, or with `to_end` until it has
    /// nothing more), masks it into its destination's queue and writes out
    /// what the destination takes.
    fn read_channel(&mut self, c: usize, to_end: bool) {
        loop {
            let ch = &mut self.channels[c];
            let Some(src) = ch.src.as_mut() else { return };
            let n = match src.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing now; at the end (`to_end`), a writer that is
                // still alive is not ours to wait for.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if to_end {
                        self.close(c);
                    }
                    return;
                }
                // A pty master reads EIO once no process holds the slave.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => 0,
                Err(e) => {
                    warn!("reading the command's output failed: {e}");
                    0
                }
            };
            if n == 0 {
                self.close(c);
                return;
            }
            match self.sinks.get_mut(ch.sink) {
                Some(sink) if sink.out.is_some() => {
                    self.masker
                        .feed(&mut ch.stream, &self.buf[..n], &mut sink.queue);
                }
                _ => {}
            }
            self.buf[..n].zeroize();
            // Silence is counted from the last data: a tail held now gets its
            // full hold time, whatever was held (and released) before.
            self.held_since = self
                .channels
                .iter()
                .any(|c| c.stream.has_pending())
                .then(Instant::now);
            let sink = self.channels[c].sink;
            self.flush_sink(sink);
            if !to_end {
                return;
            }
        }
    }

    fn flush_sink(&mut self, s: usize) {
        let Some(sink) = self.sinks.get_mut(s) else {
            return;
        };
        if sink.flush().is_err() {
            // The reader of our output is gone: let the command see that
            // too, by closing the pipes that feed it.
            for ch in self.channels.iter_mut().filter(|c| c.sink == s) {
                ch.src = None;
            }
        }
    }

    fn read_input(&mut self) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        let Some(stdin) = input.stdin.as_mut() else {
            return;
        };
        let room = INPUT_MAX
            .saturating_sub(input.queue.len())
            .min(self.buf.len());
        match stdin.read(&mut self.buf[..room]) {
            Ok(0) => input.stdin = None,
            Ok(n) => {
                input.queue.extend_from_slice(&self.buf[..n]);
                self.buf[..n].zeroize();
                self.write_input();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => input.stdin = None,
        }
    }

    fn write_input(&mut self) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        while !input.queue.is_empty() {
            match input.master.write(&input.queue) {
                Ok(n) if n > 0 => {
                    input.queue[..n].zeroize();
                    input.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(_) | Err(_) => break,
            }
        }
    }

    /// End of one stream: queue what it held.
    fn close(&mut self, c: usize) {
        let ch = &mut self.channels[c];
        ch.src = None;
        if let Some(sink) = self.sinks.get_mut(ch.sink).filter(|s| s.out.is_some()) {
            self.masker.finish(&mut ch.stream, &mut sink.queue);
        } else {
            self.masker.finish(&mut ch.stream, &mut Vec::new());
        }
        let sink = ch.sink;
        self.flush_sink(sink);
    }

    /// When held bytes must be written out, if any are held.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.held_since.map(|t| t + self.hold)
    }

    /// Writes out every held tail (after the hold time of silence).
    pub fn flush_held(&mut self) {
        for c in 0..self.channels.len() {
            let ch = &mut self.channels[c];
            if ch.stream.has_pending() {
                match self.sinks.get_mut(ch.sink).filter(|s| s.out.is_some()) {
                    Some(sink) => self.masker.finish(&mut ch.stream, &mut sink.queue),
                    None => self.masker.finish(&mut ch.stream, &mut Vec::new()),
                }
                let sink = ch.sink;
                self.flush_sink(sink);
            }
        }
        self.held_since = None;
    }

    /// After every process is gone: read each stream to its end (what the
    /// pipes still hold) into the queues. The queues are then written out
    /// by the caller's loop, see [`Pump::unsent`].
    pub fn drain_sources(&mut self) {
        self.command_started();
        self.input = None;
        for c in 0..self.channels.len() {
            self.read_channel(c, true);
        }
        self.flush_held();
    }

    /// Bytes queued and not yet written, over all destinations.
    pub fn unsent(&self) -> usize {
        self.sinks.iter().map(Sink::unsent).sum()
    }

    /// Pty mode: pass our terminal's new size on (the kernel then signals
    /// the command's foreground group).
    pub fn resize(&self) {
        if let Some((master, _)) = &self.pty {
            let _ = sys::copy_window_size(1, master.as_raw_fd());
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some((_, Some(saved))) = &self.pty {
            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, saved);
        }
        self.buf.zeroize();
        if let Some(input) = &mut self.input {
            input.queue.zeroize();
        }
    }
}
