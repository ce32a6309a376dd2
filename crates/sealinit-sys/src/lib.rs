//! The operating-system boundary of the init: every `unsafe` block and raw
//! syscall that sealinit and sealctl use to start and supervise processes
//! lives in this crate, each with a `SAFETY:` comment. The crates above it
//! are safe Rust (`#![forbid(unsafe_code)]` or `#![deny(unsafe_code)]`);
//! locked memory for secrets is the one other unsafe module, in
//! `sealinit-core`'s `locked`.

use std::ffi::{CStr, CString, c_char, c_int};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// The environment sealinit was started with, as borrowed C strings: the
/// block the kernel set up at exec, used in place instead of copied.
pub fn environment() -> Vec<&'static CStr> {
    unsafe extern "C" {
        static environ: *const *const c_char;
    }
    let mut out = Vec::new();
    // SAFETY: `environ` is the NULL-terminated array of NUL-terminated
    // strings that libc set up before main. Nothing in this program calls
    // setenv/putenv/unsetenv (std's `set_var` is never used), so neither
    // the array nor its strings change or move for the life of the process,
    // which makes the `'static` borrows sound.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            out.push(CStr::from_ptr(*p));
            p = p.add(1);
        }
    }
    out
}

/// The program's arguments as `main` received them.
///
/// # Safety
/// `argv` must point at `argc` valid NUL-terminated strings (followed by a
/// NULL), as the C runtime passes to `main`.
pub unsafe fn args_from_main(argc: c_int, argv: *const *const c_char) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: per the contract, `argv[i]` for `i < argc` is a valid
            // NUL-terminated string.
            let s = unsafe { CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(s.to_bytes()).to_owned()
        })
        .collect()
}

/// The system's `ARG_MAX`: the bytes `execve` accepts for argv plus envp.
pub fn arg_max() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    if n > 0 { n as usize } else { 131_072 }
}

// ---------------------------------------------------------------------------
// File descriptors

/// Takes ownership of a descriptor inherited from the parent process.
///
/// Fails with `EBADF` if `fd` is not open. Callers only pass descriptors the
/// user named on the command line and that nothing else in this process uses.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD reads the descriptor flags and touches no memory.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is open (checked above) and, being a descriptor inherited
    // at exec and named by the user, is not owned by any other Rust object:
    // the binaries never open it and std only uses 0-2 without owning them
    // (the CLI refuses 1 and 2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `/dev/null` onto `fd` (after the key was read from stdin), so the
/// child does not inherit a closed or exhausted descriptor.
pub fn null_onto(fd: RawFd) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    move_onto(null.into(), fd)
}

/// Makes `fd` refer to what `from` refers to, inheritable across exec
/// (`dup2`, or clearing close-on-exec when `from` already is `fd`), and
/// closes `from` otherwise.
pub fn move_onto(from: OwnedFd, fd: RawFd) -> io::Result<()> {
    if from.as_raw_fd() == fd {
        let fd = std::os::fd::IntoRawFd::into_raw_fd(from);
        // SAFETY: F_SETFD on a descriptor we own; touches no memory.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 onto a descriptor number. Callers only target numbers
    // that no Rust object owns (0 after the key was read from it, 3 in
    // sealctl, where nothing else is open there); `from` stays valid for
    // the call and is closed when dropped afterwards.
    if unsafe { libc::dup2(from.as_raw_fd(), fd) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What an inherited descriptor refers to, as far as writing to it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    Closed,
    /// A regular file: writes never wait for a reader.
    Regular,
    /// A socket: written with `MSG_DONTWAIT`, per call.
    Socket,
    /// A pipe, FIFO, terminal or other character device.
    Stream,
}

pub fn fd_kind(fd: RawFd) -> FdKind {
    // SAFETY: `st` is a valid out-pointer for fstat, alive across the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fstat only fills `st`.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        return FdKind::Closed;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FdKind::Regular,
        libc::S_IFSOCK => FdKind::Socket,
        _ => FdKind::Stream,
    }
}

/// Fills each closed descriptor among 0, 1 and 2 with `/dev/null`,
/// close-on-exec, so that nothing sealinit opens can land there (and reach
/// a child as its stdio); the child still finds them closed. Returns which
/// were closed.
pub fn hold_std_fds() -> io::Result<[bool; 3]> {
    let mut closed = [false; 3];
    for (fd, was_closed) in closed.iter_mut().enumerate() {
        let fd = fd as RawFd;
        // SAFETY: F_GETFD reads descriptor flags only.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        *was_closed = true;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        if null.as_raw_fd() == fd {
            // It landed on the slot itself (the lowest free number), already
            // close-on-exec (std opens with O_CLOEXEC): keep it open.
            let _slot = std::os::fd::IntoRawFd::into_raw_fd(null);
            continue;
        }
        // SAFETY: dup3 onto a closed descriptor number (checked above) that
        // no Rust object owns; `null` stays valid across the call.
        if unsafe { libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(closed)
}

/// A new open file description of what `fd` refers to (a pipe, FIFO or
/// terminal), non-blocking: `O_NONBLOCK` on sealinit's own description
/// never changes how its parent or siblings see the same pipe or terminal.
pub fn reopen_nonblocking(fd: RawFd, write: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{fd}"))
}

/// Sets `O_NONBLOCK` on the description behind `fd`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL read and set status flags; no memory.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags == -1 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends on a socket without blocking and without SIGPIPE, whatever the
/// socket's own flags.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes across the call.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A pseudo-terminal pair, both ends close-on-exec (the child gets the
/// slave as 0-2 through `dup2`, which clears the flag on the copies only)
/// and numbered 3 or above.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    let above_2 = |fd: OwnedFd| -> io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor >= 3 of one we
        // own; the original is closed when `fd` drops.
        let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if new == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    };
    Ok((above_2(pty.master)?, above_2(pty.slave)?))
}

/// Moves this process into new mount and PID namespaces: its next child is
/// PID 1 of the new PID namespace. Mounts become private, so the child's
/// `/proc` does not leak into the host.
pub fn unshare_pid_namespace() -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all pointers are NUL-terminated literals or null, as mount
    // expects for a propagation change.
    let rc = unsafe {
        libc::mount(
            ptr::null(),
            c"/".as_ptr(),
            ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            ptr::null(),
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new network namespace with only loopback, up, made on a thread of its
/// own (a network namespace belongs to a thread, not to the process): a
/// descriptor of it, and a TCP listener on `127.0.0.1:port` created inside
/// it. A process that joins it (`ChildSetup::net_namespace`) reaches that
/// listener and nothing else; whoever holds the listener (the egress
/// proxy, outside) accepts its connections.
pub fn loopback_namespace_listener(port: u16) -> io::Result<(OwnedFd, std::net::TcpListener)> {
    std::thread::spawn(move || -> io::Result<(OwnedFd, std::net::TcpListener)> {
        // SAFETY: unshare takes flags only; CLONE_NEWNET moves this thread
        // alone, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } == -1 {
            return Err(io::Error::last_os_error());
        }
        loopback_up()?;
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))?;
        let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok((ns.into(), listener))
    })
    .join()
    .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// Sends `data` with the descriptors `fds` (`SCM_RIGHTS`) on the Unix
/// stream `sock`: how a launch's listening socket reaches the host's egress
/// proxy (`sealctl proxy --control`).
pub fn send_fds(
    sock: &std::os::unix::net::UnixStream,
    data: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    if data.is_empty() || fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let bytes = std::mem::size_of_val(fds);
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (pointers null, lengths 0).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE computes a size from its argument only.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes as u32) } as _;
        // SAFETY: `control` is aligned for cmsghdr (u64 words) and holds
        // CMSG_SPACE(bytes) (checked by MAX_PASSED_FDS): CMSG_FIRSTHDR
        // points into it, and the header and `bytes` of data after it
        // fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
        }
    }
    // SAFETY: `msg` points at `iov` (over `data`, read only) and
    // `control`, both alive for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match n {
        -1 => Err(io::Error::last_os_error()),
        n if (n as usize) < data.len() => Err(io::Error::from(io::ErrorKind::WriteZero)),
        _ => Ok(()),
    }
}

/// Receives up to `buf.len()` bytes and the descriptors sent with them
/// (close-on-exec, owned) from the Unix stream `sock`.
pub fn recv_fds(
    sock: &std::os::unix::net::UnixStream,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (pointers null, lengths 0).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (over `buf`, writable) and `control`,
    // both alive for the call and of the lengths given.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen with
    // well-formed cmsg headers; CMSG_FIRSTHDR/NXTHDR stay inside it, and
    // each SCM_RIGHTS header carries cmsg_len - CMSG_LEN(0) bytes of
    // descriptors, new in this process and owned by nothing else.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("more descriptors were sent than expected"));
    }
    Ok((n as usize, fds))
}

/// At most this many descriptors go in one message.
const MAX_PASSED_FDS: usize = 4;
/// Control buffer for MAX_PASSED_FDS descriptors, in u64 words (aligned
/// for cmsghdr): a 16-byte header and 16 bytes of descriptors.
const CONTROL_WORDS: usize = 4;

/// A TCP listener on `127.0.0.1:port` inside the network namespace at
/// `ns` (e.g. `/run/netns/NAME`), made on a thread of its own that joins
/// it; its loopback is brought up.
pub fn listener_in_namespace(ns: &std::path::Path, port: u16) -> io::Result<std::net::TcpListener> {
    let ns = std::fs::File::open(ns)?;
    std::thread::spawn(move || -> io::Result<std::net::TcpListener> {
        // SAFETY: setns takes a descriptor (open, owned by `ns`) and
        // flags; CLONE_NEWNET moves this thread alone, which ends right
        // after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
            return Err(io::Error::last_os_error());
        }
        loopback_up()?;
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
    })
    .join()
    .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// Brings the loopback interface of this thread's network namespace up.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes plain arguments; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and a
    // union of them).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write `ifr`, a valid
    // ifreq naming "lo", through the socket above.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) == -1 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec, then clears the flag
/// on `keep`: only 0-2 and the named descriptors reach a child.
pub fn cloexec_all_but(keep: &[RawFd]) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on open
    // descriptors; it closes nothing and touches no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc != 0 {
        // Kernels before 5.11: walk /proc/self/fd instead.
        let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in fds {
            // SAFETY: F_SETFD on a descriptor number touches no memory; a
            // number that was the directory iterator's (now closed) gives
            // EBADF, which is ignored.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    for &fd in keep {
        // SAFETY: as above; an fd that is not open gives EBADF.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes this process non-dumpable (no ptrace or /proc/PID/mem access by
/// other processes of the same user, no core dump) and sets the soft core
/// limit to 0. Returns the previous core limit, for the child.
pub fn make_undumpable() -> io::Result<libc::rlimit> {
    let mut core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `core` is a valid out-pointer for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut core) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: core.rlim_max,
    };
    // SAFETY: `zero` is a valid in-pointer for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: PR_SET_DUMPABLE takes an integer; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(core)
}

// ---------------------------------------------------------------------------
// Signals

/// A set of signal numbers 1-64 as the kernel sees it: one bit per signal.
///
/// libc's `sigset_t` would not do: glibc's `sigfillset`/`sigaddset` leave
/// out signals 32 and 33 (and musl 32-34), which glibc keeps for itself, so
/// they could neither be blocked nor waited for. sealinit is
/// single-threaded and uses neither, so it takes them like any other; the
/// mask is set and read with the raw `rt_sigprocmask`/`signalfd4` calls.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignalSet(u64);

/// The kernel's sigset size in bytes on Linux (64 signals).
const KERNEL_SIGSET_LEN: usize = 8;

impl SignalSet {
    pub fn empty() -> Self {
        Self(0)
    }

    /// Every signal; SIGKILL and SIGSTOP are members but the kernel never
    /// blocks them.
    pub fn full() -> Self {
        Self(u64::MAX)
    }

    fn bit(sig: c_int) -> u64 {
        if (1..=64).contains(&sig) {
            1 << (sig - 1)
        } else {
            0
        }
    }

    pub fn remove(&mut self, sig: c_int) {
        self.0 &= !Self::bit(sig);
    }

    pub fn contains(&self, sig: c_int) -> bool {
        self.0 & Self::bit(sig) != 0
    }
}

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members: Vec<c_int> = (1..=64).filter(|&s| self.contains(s)).collect();
        f.debug_tuple("SignalSet").field(&members).finish()
    }
}

pub fn sigrtmax() -> c_int {
    libc::SIGRTMAX()
}

pub fn sigrtmin() -> c_int {
    libc::SIGRTMIN()
}

/// Replaces the calling thread's signal mask, returning the previous one.
pub fn set_signal_mask(set: &SignalSet) -> io::Result<SignalSet> {
    let mut old = SignalSet::empty();
    // SAFETY: both pointers are to 8-byte kernel sigsets that live across
    // the call; the size argument says 8.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &set.0 as *const u64,
            &mut old.0 as *mut u64,
            KERNEL_SIGSET_LEN,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// Sends `sig` to `pid` (negative: a process group; -1: every process we
/// may signal). A target that no longer exists is not an error.
pub fn send_signal(pid: libc::pid_t, sig: c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// A descriptor that becomes readable when a signal of `set` (which must
/// be blocked) is pending; read it with [`read_signal`].
pub fn signal_fd(set: &SignalSet) -> io::Result<OwnedFd> {
    // SAFETY: `set.0` is an 8-byte kernel sigset, alive across the call;
    // -1 asks for a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &set.0 as *const u64,
            KERNEL_SIGSET_LEN,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// One signal taken from a [`signal_fd`]: its number, and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: c_int,
    /// `si_code`: `SI_USER` (0) for `kill`, `SI_KERNEL`, `SI_QUEUE`, ...
    pub code: i32,
    /// `si_pid`: the sender, for `kill` and `sigqueue`.
    pub pid: u32,
}

impl SigInfo {
    /// Raised by the kernel on this process's own syscall (SIGPIPE on a
    /// write to a pipe without reader, SIGXFSZ past the file-size limit):
    /// the kernel reports those as `SI_USER` from the process itself, and
    /// sealinit never signals itself.
    pub fn raised_by_own_syscall(&self) -> bool {
        self.code == libc::SI_USER && self.pid == std::process::id()
    }
}

/// Takes one pending signal from a [`signal_fd`]; `None` if there is none.
pub fn read_signal(fd: &OwnedFd) -> io::Result<Option<SigInfo>> {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    loop {
        return match nix::unistd::read(fd, &mut info) {
            Ok(n) if n == info.len() => {
                // signalfd_siginfo: ssi_signo u32, ssi_errno i32, ssi_code
                // i32, ssi_pid u32, ... (native endian).
                let word = |i: usize| info[i..i + 4].try_into().expect("4 bytes");
                Ok(Some(SigInfo {
                    signo: u32::from_ne_bytes(word(0)) as c_int,
                    code: i32::from_ne_bytes(word(8)),
                    pid: u32::from_ne_bytes(word(12)),
                }))
            }
            Ok(_) => Ok(None),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// Waits for one signal of `set` (which must be blocked) with the raw
/// `rt_sigtimedwait` (glibc's wrapper would drop 32 and 33): one syscall
/// per signal, the cheapest wait when nothing else is polled. `None` on
/// timeout.
pub fn wait_signal(
    set: &SignalSet,
    timeout: Option<std::time::Duration>,
) -> io::Result<Option<SigInfo>> {
    loop {
        let ts;
        let ts_ptr = match timeout {
            None => ptr::null(),
            Some(d) => {
                ts = libc::timespec {
                    tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                };
                &ts as *const libc::timespec
            }
        };
        // SAFETY: `info` is a valid out-pointer for the kernel's siginfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set.0` is an 8-byte kernel sigset, `info` and `ts_ptr`
        // (null or `ts`) are valid for the call; the size argument says 8.
        let sig = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &set.0 as *const u64,
                &mut info as *mut libc::siginfo_t,
                ts_ptr,
                KERNEL_SIGSET_LEN,
            )
        };
        if sig > 0 {
            return Ok(Some(SigInfo {
                signo: sig as c_int,
                code: info.si_code,
                // SAFETY: the kernel filled `info`; si_pid reads the
                // union's pid field, meaningful for SI_USER/SI_QUEUE and
                // zero-initialised otherwise.
                pid: unsafe { info.si_pid() } as u32,
            }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// `pidfd_open`: a descriptor that names exactly one process, so that a
/// signal sent through it can never reach a later process that reused the
/// pid.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns. pidfds are
    // close-on-exec from creation.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process a pidfd names. A process that has exited
/// (`ESRCH`) is not an error.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: c_int) -> io::Result<()> {
    // SAFETY: a pidfd we own, a signal number, a null siginfo (as kill)
    // and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// Whether the process behind a pidfd has not been reaped yet (a live
/// process or a zombie): while it has not, its pid cannot be reused.
pub fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 through a pidfd we own checks existence only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// Locks this process's memory against swapping for `--mask`, whose
/// matcher embeds the values. Current pages always; future ones only when
/// `RLIMIT_MEMLOCK` is unlimited: under a finite limit `MCL_FUTURE` makes
/// every allocation past the limit fail, which would abort sealinit in the
/// middle of a run. Returns whether future pages are locked too.
pub fn lock_memory() -> io::Result<bool> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the call.
    let future = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0
        && lim.rlim_cur == libc::RLIM_INFINITY;
    let flags = if future {
        libc::MCL_CURRENT | libc::MCL_FUTURE
    } else {
        libc::MCL_CURRENT
    };
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(future)
}

/// Copies the window size of the terminal `from` to the terminal `to`.
pub fn copy_window_size(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: `ws` is a valid winsize for TIOCGWINSZ to fill and for
    // TIOCSWINSZ to read, alive across both calls.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == -1
            || libc::ioctl(to, libc::TIOCSWINSZ, &ws) == -1
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Processes

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    fn from_raw(status: c_int) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signal(libc::WTERMSIG(status))
        } else {
            Self::Code(libc::WEXITSTATUS(status))
        }
    }

    /// The shell convention: the exit code, or 128 + N when killed by signal N.
    pub fn code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

/// What one non-blocking `waitpid(-1)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// A child terminated and was reaped.
    Child(libc::pid_t, ExitStatus),
    /// Children exist but none has terminated.
    NoneYet,
    /// There are no children at all (`ECHILD`).
    NoChildren,
}

/// Reaps one terminated child without blocking.
pub fn reap_one() -> io::Result<Reaped> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        return match pid {
            0 => Ok(Reaped::NoneYet),
            -1 => {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ECHILD) => Ok(Reaped::NoChildren),
                    Some(libc::EINTR) => continue,
                    _ => Err(err),
                }
            }
            pid => Ok(Reaped::Child(pid, ExitStatus::from_raw(status))),
        };
    }
}

/// Asks the kernel to send `sig` to this process when its parent dies
/// (`PR_SET_PDEATHSIG`). If the parent already died before the call, the
/// signal is raised at once, so the race is closed.
pub fn set_parent_death_signal(sig: c_int) -> io::Result<()> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: raise has no memory-safety preconditions.
        unsafe { libc::raise(sig) };
    }
    Ok(())
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Blocks until `pid` terminates and reaps it.
fn wait_for(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Becomes a child subreaper, so orphans of our descendants are reparented
/// to us instead of to the real init.
pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// A NULL-terminated array of pointers to C strings, as `execve` takes for
/// argv and envp. The lifetime ties every pointer to the string it borrows,
/// so the array can never outlive what it points at.
pub struct CStrArray<'a> {
    ptrs: Vec<*const c_char>,
    bytes: usize,
    _borrows: PhantomData<&'a CStr>,
}

impl<'a> CStrArray<'a> {
    fn with_capacity(n: usize) -> Self {
        let mut ptrs = Vec::with_capacity(n + 1);
        ptrs.push(ptr::null());
        Self {
            ptrs,
            bytes: 0,
            _borrows: PhantomData,
        }
    }

    pub fn push(&mut self, s: &'a CStr) {
        let last = self.ptrs.len() - 1;
        self.ptrs[last] = s.as_ptr();
        self.ptrs.push(ptr::null());
        self.bytes += s.to_bytes_with_nul().len();
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ptrs.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the array costs against `ARG_MAX`: the strings with their NULs
    /// plus one pointer each (the kernel's own accounting).
    pub fn exec_size(&self) -> usize {
        self.bytes + self.len() * std::mem::size_of::<*const c_char>()
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

impl<'a> FromIterator<&'a CStr> for CStrArray<'a> {
    fn from_iter<I: IntoIterator<Item = &'a CStr>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut array = Self::with_capacity(iter.size_hint().0);
        iter.for_each(|s| array.push(s));
        array
    }
}

/// Arguments (and paths built from them) as C strings. They come from the
/// kernel as C strings, so they contain no NUL; the `expect` documents that.
pub fn arg_cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("argv and environ strings contain no NUL")
}

impl std::fmt::Debug for CStrArray<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CStrArray({} strings, contents redacted)", self.len())
    }
}

/// What the child does between `fork` and `execve`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildSetup {
    /// Become the leader of a new process group.
    pub new_process_group: bool,
    /// Make that group the foreground group of the terminal on this fd
    /// (errors such as `ENOTTY` are ignored).
    pub foreground_of: Option<RawFd>,
    /// The core-dump limit to restore (sealinit runs with 0).
    pub core_limit: Option<libc::rlimit>,
    /// Mount a fresh `/proc` (the child is PID 1 of a new namespace).
    pub mount_proc: bool,
    /// Start a new session with this terminal (a pty slave) as the
    /// controlling terminal and as fds 0, 1 and 2.
    pub session_on: Option<RawFd>,
    /// Descriptors to put on fds 1 and 2 (`--mask` pipes).
    pub stdout_to: Option<RawFd>,
    pub stderr_to: Option<RawFd>,
    /// Join this network namespace before `execve`; the child is not
    /// started if it cannot (it never runs in the parent's network).
    pub net_namespace: Option<RawFd>,
}

/// Why the child could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// `fork`, `pipe` or reading the status pipe failed.
    Os(io::Error),
    /// Every `execve` failed; the error is the one `execvp` would report.
    Exec(io::Error),
}

/// Forks and executes the first of `paths` that `execve` accepts, with
/// `argv` and `envp`, after restoring `child_mask`. Returns the child's pid
/// once `execve` has succeeded, so that the caller may wipe the environment
/// right away. On failure the child has been reaped.
///
/// `paths` are tried as `execvp` does: `ENOENT`-like failures move on to the
/// next candidate, `EACCES` is remembered, anything else stops the search.
pub fn spawn<P: AsRef<CStr>>(
    paths: &[P],
    argv: &CStrArray<'_>,
    envp: &CStrArray<'_>,
    child_mask: &SignalSet,
    setup: ChildSetup,
) -> Result<libc::pid_t, SpawnError> {
    // The child reports a failed exec by writing errno into this pipe; a
    // successful exec closes its end (O_CLOEXEC) and we read EOF.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::Os(io::Error::from(e)))?;
    let path_ptrs: Vec<*const c_char> = paths.iter().map(|p| p.as_ref().as_ptr()).collect();
    // For a file without `#!` (ENOEXEC), `execvp` runs `/bin/sh FILE ARGS`:
    // that argv is built now, with slot 1 filled in by the child, which may
    // not allocate.
    let mut sh_argv: Vec<*const c_char> = Vec::with_capacity(argv.len() + 2);
    sh_argv.push(c"/bin/sh".as_ptr());
    sh_argv.push(ptr::null());
    sh_argv.extend_from_slice(&argv.ptrs[1.min(argv.len())..]);

    // SAFETY: fork in a single-threaded process. Between fork and
    // execve/_exit the child only calls async-signal-safe functions
    // (setsid, ioctl, dup2, setpgid, tcsetpgrp, setrlimit, mount,
    // pthread_sigmask, execve, write, _exit) on memory prepared before the fork, and never
    // allocates, unwinds or returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; all pointers were built before the fork and
        // stay valid in the child's copy of the address space.
        unsafe {
            exec_child(
                &path_ptrs,
                argv.as_ptr(),
                &mut sh_argv,
                envp.as_ptr(),
                child_mask,
                setup,
                wr.as_raw_fd(),
            )
        }
    }
    if pid < 0 {
        return Err(SpawnError::Os(io::Error::last_os_error()));
    }
    if setup.new_process_group {
        // Also from the parent, so that the group exists before we signal
        // it; EACCES once the child has exec'd is harmless.
        // SAFETY: setpgid has no memory-safety preconditions.
        unsafe { libc::setpgid(pid, pid) };
    }
    drop(wr);

    let mut buf = [0u8; 4];
    let mut file = std::fs::File::from(rd);
    let n = loop {
        match io::Read::read(&mut file, &mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SpawnError::Os(e)),
        }
    };
    if n == 0 {
        return Ok(pid);
    }
    let errno = i32::from_ne_bytes(buf);
    wait_for(pid).map_err(SpawnError::Os)?;
    Err(SpawnError::Exec(io::Error::from_raw_os_error(errno)))
}

/// The calling thread's `errno` slot (glibc and musl both export it).
fn errno_location() -> *mut c_int {
    // SAFETY: returns the calling thread's errno slot; no preconditions.
    unsafe { libc::__errno_location() }
}

/// The child side of `spawn`. Never returns.
///
/// # Safety
/// Must be called in the child right after `fork`, with NULL-terminated
/// `argv`/`envp` arrays of valid C strings and valid `paths`.
unsafe fn exec_child(
    paths: &[*const c_char],
    argv: *const *const c_char,
    sh_argv: &mut [*const c_char],
    envp: *const *const c_char,
    child_mask: &SignalSet,
    setup: ChildSetup,
    report: RawFd,
) -> ! {
    // SAFETY: the whole body makes only async-signal-safe calls, on memory
    // that was valid before the fork, per the function's contract.
    unsafe {
        if let Some(ns) = setup.net_namespace {
            if libc::setns(ns, libc::CLONE_NEWNET) == -1 {
                let bytes = (*errno_location()).to_ne_bytes();
                libc::write(report, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127);
            }
        }
        if let Some(tty) = setup.session_on {
            libc::setsid();
            libc::ioctl(tty, libc::TIOCSCTTY, 0);
            for fd in 0..3 {
                libc::dup2(tty, fd);
            }
        }
        if let Some(fd) = setup.stdout_to {
            libc::dup2(fd, 1);
        }
        if let Some(fd) = setup.stderr_to {
            libc::dup2(fd, 2);
        }
        if setup.new_process_group {
            libc::setpgid(0, 0);
        }
        if let Some(tty) = setup.foreground_of {
            // Signals are still blocked here, so SIGTTOU cannot stop us.
            libc::tcsetpgrp(tty, libc::getpid());
        }
        if let Some(core) = setup.core_limit {
            libc::setrlimit(libc::RLIMIT_CORE, &core);
        }
        if setup.mount_proc {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let proc_ = c"proc".as_ptr();
            libc::mount(proc_, c"/proc".as_ptr(), proc_, flags, ptr::null());
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &child_mask.0 as *const u64,
            ptr::null_mut::<u64>(),
            KERNEL_SIGSET_LEN,
        );
        let mut saw_eacces = false;
        let mut errno = 'search: {
            for &path in paths {
                libc::execve(path, argv, envp);
                match *errno_location() {
                    libc::EACCES => saw_eacces = true,
                    libc::ENOEXEC => {
                        // As execvp: a script without `#!` runs under sh.
                        sh_argv[1] = path;
                        libc::execve(sh_argv[0], sh_argv.as_ptr(), envp);
                        break 'search *errno_location();
                    }
                    libc::ENOENT
                    | libc::ENOTDIR
                    | libc::ESTALE
                    | libc::ENODEV
                    | libc::ETIMEDOUT => {}
                    other => break 'search other,
                }
            }
            libc::ENOENT
        };
        if saw_eacces && errno == libc::ENOENT {
            errno = libc::EACCES;
        }
        let bytes = errno.to_ne_bytes();
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}
