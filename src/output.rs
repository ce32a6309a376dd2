//! The output proxy of `--mask`: the command's stdout and stderr come to
//! sealinit through pipes (or, when sealinit's stdout is a terminal, through
//! a pseudo-terminal it proxies), are masked by [`Masker`], and go out on
//! sealinit's own fds 1 and 2. Without `--mask` none of this exists and the
//! command's stdio is sealinit's, untouched.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};
use tracing::{debug, warn};
use zeroize::Zeroize;

use crate::mask::{Masker, Stream};
use crate::sys::{self, ChildSetup};

/// How long, by default, a possible prefix of a secret is held back after
/// the last output before it is written out as it is (`--mask-hold-ms`).
pub const HOLD: Duration = Duration::from_millis(50);

/// One descriptor the pump polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command's output stream number `n` (stdout first).
    Output(usize),
    /// sealinit's stdin, forwarded to the pty.
    Input,
}

const CHUNK: usize = 256 * 1024;

struct Channel {
    /// Read end of the pipe, or the pty master.
    src: Option<File>,
    /// Where masked output goes: a dup of sealinit's fd 1 or 2.
    dst: File,
    stream: Stream,
}

pub struct Pump {
    masker: Masker,
    channels: Vec<Channel>,
    /// Our stdin, forwarded to the pty master (pty mode only).
    input: Option<(File, File)>,
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
    out: Vec<u8>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("channels", &self.channels.len())
            .field("pty", &self.pty.is_some())
            .finish_non_exhaustive()
    }
}

impl Pump {
    /// Sets up the pipes, or a pty when sealinit's stdout is a terminal.
    pub fn new(masker: Masker, hold: Duration) -> io::Result<Self> {
        let stdout = io::stdout().as_fd().try_clone_to_owned()?;
        let stderr = io::stderr().as_fd().try_clone_to_owned()?;
        let mut pump = Self {
            masker,
            channels: Vec::new(),
            input: None,
            pty: None,
            child_ends: Vec::new(),
            setup: ChildSetup::default(),
            held_since: None,
            hold,
            buf: vec![0; CHUNK],
            out: Vec::with_capacity(CHUNK + 1024),
        };
        if sys::is_terminal(1) {
            let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            let master = File::from(pty.master);
            let _ = sys::copy_window_size(1, master.as_raw_fd());
            let saved = if sys::is_terminal(0) {
                let saved = termios::tcgetattr(io::stdin()).map_err(io::Error::from)?;
                let mut raw = saved.clone();
                termios::cfmakeraw(&mut raw);
                termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
                Some(saved)
            } else {
                None
            };
            let stdin = File::from(io::stdin().as_fd().try_clone_to_owned()?);
            pump.input = Some((stdin, master.try_clone()?));
            pump.channels.push(Channel {
                src: Some(master.try_clone()?),
                dst: File::from(stdout),
                stream: Stream::default(),
            });
            pump.setup.session_on = Some(pty.slave.as_raw_fd());
            pump.child_ends.push(pty.slave);
            pump.pty = Some((master, saved));
            debug!("--mask: the command runs on a pseudo-terminal");
        } else {
            for (fd, dst) in [(1, stdout), (2, stderr)] {
                let (rd, wr) =
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
                if fd == 1 {
                    pump.setup.stdout_to = Some(wr.as_raw_fd());
                } else {
                    pump.setup.stderr_to = Some(wr.as_raw_fd());
                }
                pump.child_ends.push(wr);
                pump.channels.push(Channel {
                    src: Some(File::from(rd)),
                    dst: File::from(dst),
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

    /// The descriptors to poll for reading, stdout before stderr.
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, Source)> {
        let mut v: Vec<(BorrowedFd<'_>, Source)> = self
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.src.as_ref().map(|f| (f.as_fd(), Source::Output(i))))
            .collect();
        if let Some((stdin, _)) = &self.input {
            v.push((stdin.as_fd(), Source::Input));
        }
        v
    }

    /// Services a descriptor that poll found readable.
    pub fn service(&mut self, source: Source) {
        match source {
            Source::Output(c) => self.read_channel(c),
            Source::Input => self.forward_input(),
        }
    }

    fn read_channel(&mut self, c: usize) {
        let ch = &mut self.channels[c];
        let Some(src) = ch.src.as_mut() else { return };
        let n = match src.read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
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
        self.out.clear();
        self.masker
            .feed(&mut ch.stream, &self.buf[..n], &mut self.out);
        self.buf[..n].zeroize();
        if let Err(e) = ch.dst.write_all(&self.out) {
            // The reader of our output is gone: let the command see that
            // too, by closing its pipe.
            debug!("writing masked output failed ({e}); closing that stream");
            ch.src = None;
        }
        // Silence is counted from the last data: a tail held now gets its
        // full hold time, whatever was held (and released) before.
        self.held_since = self
            .channels
            .iter()
            .any(|c| c.stream.has_pending())
            .then(Instant::now);
    }

    fn forward_input(&mut self) {
        let Some((stdin, master)) = self.input.as_mut() else {
            return;
        };
        match stdin.read(&mut self.buf) {
            Ok(0) | Err(_) => self.input = None,
            Ok(n) => {
                let _ = master.write_all(&self.buf[..n]);
                self.buf[..n].zeroize();
            }
        }
    }

    /// End of one stream: write out what it held.
    fn close(&mut self, c: usize) {
        let ch = &mut self.channels[c];
        ch.src = None;
        self.out.clear();
        self.masker.finish(&mut ch.stream, &mut self.out);
        let _ = ch.dst.write_all(&self.out);
    }

    /// When held bytes must be written out, if any are held.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.held_since.map(|t| t + self.hold)
    }

    /// Writes out every held tail (after the hold time of silence).
    pub fn flush_held(&mut self) {
        for ch in &mut self.channels {
            if ch.stream.has_pending() {
                self.out.clear();
                self.masker.finish(&mut ch.stream, &mut self.out);
                let _ = ch.dst.write_all(&self.out);
            }
        }
        self.held_since = None;
    }

    /// After every process is gone: read each stream to its end and write
    /// everything out.
    pub fn drain(&mut self) {
        self.command_started();
        self.input = None;
        for c in 0..self.channels.len() {
            while self.channels[c].src.is_some() {
                self.read_channel(c);
            }
        }
        self.flush_held();
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
    }
}
