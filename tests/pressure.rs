//! sealinit under pressure (issue #11): an init that never blocks, never
//! signals a process that is not its own, and never loses output. Each test
//! is named after the defect it pins down; every one failed before the fix.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");

/// Waits for `child` at most `limit`; kills it and fails if it is still
/// running then (the defects here are hangs).
fn wait_at_most(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Collects everything written to the master of `pty` in a thread.
fn read_all_in_thread(master: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        // A pty master reads EIO once the last slave is closed.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    })
}

/// Waits until the signals sealinit blocks include SIGTERM: its signal
/// handling is in place, so a signal sent now is taken, not fatal.
fn wait_until_signals_blocked(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        if blocked & (1 << (libc::SIGTERM - 1)) != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} never blocked signals");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits for `child` as [`wait_at_most`] does; returns its status and what
/// it wrote to its (piped) stderr.
fn status_and_stderr(
    mut child: Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let status = wait_at_most(&mut child, limit, what);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    (status, err)
}

/// Runs `sealinit args` in `mode` in a fresh directory; once the command
/// has made its `ready` file and sealinit blocks signals, sends `sig` to
/// sealinit; returns sealinit's exit status.
fn signal_once_ready(mode: Mode, args: &[&str], sig: &str) -> std::process::ExitStatus {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sealinit(mode, None, args);
    cmd.current_dir(dir.path());
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sealinit_pid(&child, mode);
    // The command runs: sealinit blocked every signal before starting it.
    // (Not read from SigBlk: rt_sigtimedwait unblocks the awaited signals
    // while it sleeps, and /proc shows that.)
    wait_for_file(&dir.path().join("ready"));
    kill(pid, sig);
    wait_at_most(&mut child, Duration::from_secs(30), sig)
}

// 1. ---------------------------------------------------------------------

#[test]
fn p01_stdin_flooding_a_pty_whose_command_never_reads_does_not_block() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut yes = Command::new("yes").stdout(Stdio::piped()).spawn().unwrap();
    let mut child = Command::new(SEALINIT)
        .args(["--mask", "--", "sleep", "1"])
        .stdin(Stdio::from(yes.stdout.take().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let reader = read_all_in_thread(pty.master);
    let status = wait_at_most(&mut child, Duration::from_secs(20), "sealinit");
    let _ = yes.kill();
    let _ = yes.wait();
    assert_eq!(status.code(), Some(0));
    drop(reader);
}

// 2. ---------------------------------------------------------------------

#[test]
fn p02_a_stalled_output_consumer_does_not_delay_shutdown() {
    for mode in [Mode::Pid1, Mode::Plain] {
        let fx = Fixture::new(&[("TOKEN", b"tok-stalled-consumer")]);
        // The command ignores SIGTERM and writes far more than the pipes
        // hold; nobody reads sealinit's stdout until it has exited.
        let script = "import signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open('ready', 'w').close()
sys.stdout.write('x' * 50_000_000)";
        let b = fx.bundle.to_str().unwrap();
        let mut cmd = sealinit(
            mode,
            Some(&fx.key),
            &[
                "--mask", "--grace", "2", "--bundle", b, "python3", "-c", script,
            ],
        );
        cmd.current_dir(fx.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&fx.path("ready"));
        let sent = Instant::now();
        kill(pid, "TERM");
        // The grace period is 2 s: SIGKILL then, and no wait for a reader.
        let status = wait_at_most(&mut child, Duration::from_secs(8), "stalled consumer");
        assert!(sent.elapsed() < Duration::from_secs(7), "{mode:?}");
        assert_eq!(status.code(), Some(137), "{mode:?}");
    }
}

// 3. ---------------------------------------------------------------------

#[test]
fn p03_a_non_blocking_stdout_gets_every_byte() {
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let flags = nix::fcntl::fcntl(&wr, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&wr, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    let fx = Fixture::new(&[("TOKEN", b"tok-nonblocking-stdout")]);
    let b = fx.bundle.to_str().unwrap();
    let mut cmd = sealinit(
        Mode::Plain,
        Some(&fx.key),
        &[
            "--mask",
            "--bundle",
            b,
            "python3",
            "-c",
            "import sys; sys.stdout.write('y' * 1_000_000)",
        ],
    );
    cmd.stdout(Stdio::from(wr)).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    // A slow reader: the pipe fills, sealinit meets EAGAIN many times.
    let reader = std::thread::spawn(move || {
        let mut f = File::from(rd);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.len() < 200_000 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out
    });
    let status = wait_at_most(&mut child, Duration::from_secs(30), "non-blocking stdout");
    let out = reader.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(out.len(), 1_000_000);
}

// 4. ---------------------------------------------------------------------

#[test]
fn p04_mask_runs_with_stdout_or_stderr_closed() {
    for (closed, shown, keep) in [("1", 2, "2"), ("2", 1, "1")] {
        let script = format!(
            "exec {SEALINIT} --mask -- sh -c 'echo to-{shown} >&{shown}; echo to-{keep}x >&{closed} 2>/dev/null; exit 7' {closed}>&-"
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(7), "fd {closed} closed: {o:?}");
        let seen = if shown == 1 { &o.stdout } else { &o.stderr };
        assert_eq!(String::from_utf8_lossy(seen), format!("to-{shown}\n"));
    }
}

// 5. ---------------------------------------------------------------------

#[test]
fn p05_the_command_on_a_pty_sees_only_fds_0_to_2() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let script = "import os
fds = []
for fd in range(3, 64):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
print('FDS=%s' % fds)";
    let mut child = Command::new(SEALINIT)
        .args(["--mask", "--", "python3", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let reader = read_all_in_thread(pty.master);
    let status = wait_at_most(&mut child, Duration::from_secs(20), "pty fds");
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("FDS=[]"), "{out}");
}

// 6. ---------------------------------------------------------------------

#[test]
fn p06_a_multi_line_value_is_masked_whole_on_a_terminal() {
    let fx = Fixture::new(&[
        ("SHORT_LINES", b"abc\nxyz"),
        (
            "PEM",
            b"-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcN\nab=\n-----END KEY-----",
        ),
    ]);
    let pty = nix::pty::openpty(None, None).unwrap();
    let b = fx.bundle.to_str().unwrap();
    let args: Vec<std::ffi::OsString> = [
        "--mask",
        "--bundle",
        b,
        "sh",
        "-c",
        "printf '<%s>\\n' \"$SHORT_LINES\" \"$PEM\"",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let mut cmd = with_key_on_fd3(Some(&fx.key), &[SEALINIT], &args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    let reader = read_all_in_thread(pty.master);
    let status = wait_at_most(&mut child, Duration::from_secs(20), "pty masking");
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{out}");
    // (The test's own terminal adds a \r to each \r\n: its stdin is not
    // a terminal, so sealinit leaves its output processing on.)
    assert_eq!(out.replace('\r', ""), "<***>\n<***>\n");
}

// 7. ---------------------------------------------------------------------

/// sealinit, not PID 1, with a `/proc` that cannot show its descendants:
/// what the command left running is still ended, and sealinit exits.
/// `wrapper` is a shell script that runs its arguments ("$@").
fn leftovers_are_ended_without_a_usable_proc(wrapper: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args([
            "-c", wrapper, "sh", SEALINIT, "--grace", "1", "--", "sh", "-c",
        ])
        .arg(format!(
            "sleep 1000 >/dev/null 2>&1 & echo $! > {}/left; exit 3",
            dir.path().display()
        ))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_at_most(&mut child, Duration::from_secs(20), wrapper);
    assert_eq!(status.code(), Some(3), "{wrapper}");
    let left: i32 = fs::read_to_string(dir.path().join("left"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(left), "{wrapper}: the command's leftover survived");
}

#[test]
fn p07_without_proc_leftovers_are_ended_and_sealinit_exits() {
    // A private mount namespace with an empty /proc (bubblewrap without
    // --proc, minimal sandboxes).
    leftovers_are_ended_without_a_usable_proc(
        r#"exec unshare --mount sh -c 'mount -t tmpfs none /proc && exec "$@"' sh "$@""#,
    );
}

#[test]
fn p07_with_another_namespaces_proc_leftovers_are_ended_and_sealinit_exits() {
    // sealinit in this PID namespace, seeing the /proc of another one
    // (made by `unshare --pid --mount --mount-proc`, entered by its mount
    // namespace only): pids there are other processes.
    leftovers_are_ended_without_a_usable_proc(concat!(
        "unshare --pid --mount --fork --mount-proc --kill-child sleep 1000 & u=$!; ",
        r#"until [ "$(nsenter --target $u --mount cat /proc/1/comm 2>/dev/null)" = sleep ]; do :; done; "#,
        r#"nsenter --target $u --mount "$@"; rc=$?; kill -KILL $u; wait $u; exit $rc"#
    ));
}

#[test]
fn p07_with_its_own_proc_only_descendants_are_signalled() {
    // A stranger in the same session and process group as sealinit (a
    // sibling in a shell pipeline) is never signalled at shutdown.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "sleep 1000 >/dev/null 2>&1 & echo $! > stranger; {SEALINIT} --grace 1 -- sh -c 'sleep 1000 & echo $! > left; exit 0'; echo rc=$?"
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(stdout(&o).contains("rc=0"), "{o:?}");
    let stranger: i32 = fs::read_to_string(dir.path().join("stranger"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let left: i32 = fs::read_to_string(dir.path().join("left"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stranger_alive = alive(stranger);
    let _ = Command::new("kill").arg(stranger.to_string()).status();
    assert!(stranger_alive, "the stranger was signalled");
    assert!(!alive(left), "the command's leftover survived");
}

// 8. ---------------------------------------------------------------------

#[test]
fn p08_exec_failure_after_setup_still_ends_the_setup_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(SEALINIT)
        .args([
            "--grace",
            "1",
            "--setup",
            "sleep 1000 >/dev/null 2>&1 & echo $! > left",
            "--",
            "/nonexistent/command",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    let left: i32 = fs::read_to_string(dir.path().join("left"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(left), "the setup step's leftover survived");
}

#[test]
fn p08_setup_output_under_mask_is_delivered_when_the_command_fails_to_exec() {
    for _ in 0..10 {
        let o = Command::new(SEALINIT)
            .args([
                "--mask",
                "--setup",
                "echo setup-output",
                "--",
                "/nonexistent/command",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(127));
        assert_eq!(stdout(&o), "setup-output\n");
    }
}

// 9. ---------------------------------------------------------------------

#[test]
fn p09_sigpipe_from_sealinits_own_stderr_is_not_forwarded() {
    for mode in [Mode::Pid1, Mode::Plain] {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        drop(rd); // every write to sealinit's stderr raises SIGPIPE
        let mut cmd = sealinit(mode, None, &["--log-level", "debug", "sleep", "1"]);
        cmd.stderr(Stdio::from(wr)).stdout(Stdio::null());
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{mode:?}");
    }
}

// 10. --------------------------------------------------------------------

/// Blocks signals 32 and 33 with the raw syscall (glibc refuses to touch
/// them, and this environment may inherit them ignored; a blocked signal
/// is queued even if ignored), then waits until one is pending.
const RECEIVER_32_33: &str = "import ctypes, os, sys, time
nr = {'x86_64': 14, 'aarch64': 135}[os.uname().machine]
mask = ctypes.c_uint64((1 << 31) | (1 << 32))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.syscall(nr, 0, ctypes.byref(mask), None, 8) == 0
open('ready', 'w').close()
want = 1 << (int(sys.argv[1]) - 1)
for _ in range(4000):
    for line in open('/proc/self/status'):
        if line.startswith(('SigPnd:', 'ShdPnd:')) and int(line.split()[1], 16) & want:
            sys.exit(0)
    time.sleep(0.005)
sys.exit(1)";

#[test]
fn p10_signals_32_and_33_are_forwarded() {
    for mode in [Mode::Pid1, Mode::Plain] {
        for sig in ["32", "33"] {
            let status = signal_once_ready(mode, &["python3", "-c", RECEIVER_32_33, sig], sig);
            assert_eq!(status.code(), Some(0), "{mode:?} {sig}: not received");
        }
    }
}

// 11. --------------------------------------------------------------------

#[test]
fn p11_mask_under_a_finite_memlock_limit_never_aborts() {
    // Non-root, where RLIMIT_MEMLOCK applies; a range of limits around
    // what sealinit has mapped at start, each followed by a run that
    // allocates (256 KiB buffers, a held-back tail that grows).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hl"])
        .output()
        .unwrap();
    let hard: u64 = match String::from_utf8_lossy(&hard.stdout).trim() {
        "unlimited" => u64::MAX,
        kib => kib.parse::<u64>().unwrap() << 10,
    };
    // Every 256 KiB up to 8 MiB (or the hard limit): where the limit lies
    // just above what is mapped at start depends on the binary, so both
    // the test build and the static container build are swept (the old
    // code aborted the static build at 2 MiB: "memory allocation of 263168
    // bytes failed").
    let limits: Vec<u64> = (2..=32u64)
        .map(|quarter| quarter << 18)
        .filter(|&l| l <= hard)
        .collect();
    assert!(
        limits.len() >= 8,
        "hard RLIMIT_MEMLOCK of {hard} leaves too few cases"
    );
    let (static_bin, _) = build_static(None);
    for bin in [Path::new(SEALINIT), static_bin.as_path()] {
        for &limit in &limits {
            let o = Command::new("prlimit")
                .arg(format!("--memlock={limit}:{limit}"))
                .args([
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                ])
                .arg(bin)
                .args([
                    "--mask",
                    "--",
                    "python3",
                    "-c",
                    "import sys; [sys.stdout.write('z' * 100_000) for _ in range(50)]",
                ])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let what = format!("{} under {} KiB", bin.display(), limit >> 10);
            assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr(&o));
            assert_eq!(o.stdout.len(), 5_000_000, "{what}");
        }
    }
}

// 12. --------------------------------------------------------------------

#[test]
fn p12_huge_durations_are_refused_at_parse_time() {
    for args in [
        ["--grace", "18446744073709551615"],
        ["--key-timeout", "18446744073709551615"],
        ["--grace", "31536001"],
    ] {
        let o = Command::new(SEALINIT)
            .args(args)
            .args(["true"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("seconds from"), "{}", stderr(&o));
    }
    // The longest allowed grace works to the end (no overflow at shutdown).
    let o = Command::new(SEALINIT)
        .args(["--grace", "31536000", "sh", "-c", "sleep 0 & exit 4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

// 13. --------------------------------------------------------------------

#[test]
fn p13_hup_int_and_quit_are_forwarded_and_do_not_start_a_shutdown() {
    for mode in [Mode::Pid1, Mode::Plain] {
        let dir = tempfile::tempdir().unwrap();
        let script = "import signal
got = []
def handler(s, f):
    open('got-%d' % s, 'w').close()
for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
    signal.signal(s, handler)
signal.signal(signal.SIGUSR1, lambda s, f: exit(0))
open('ready', 'w').close()
while True:
    signal.pause()";
        let mut cmd = sealinit(mode, None, &["--grace", "1", "python3", "-c", script]);
        cmd.current_dir(dir.path());
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&dir.path().join("ready"));
        for (sig, n) in [("HUP", 1), ("INT", 2), ("QUIT", 3)] {
            kill(pid, sig);
            wait_for_file(&dir.path().join(format!("got-{n}")));
        }
        // Past the 1 s grace period: had any of them started a shutdown,
        // the command would have been killed by now.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(child.try_wait().unwrap().is_none(), "{mode:?}: killed");
        kill(pid, "USR1");
        let status = wait_at_most(&mut child, Duration::from_secs(20), "usr1");
        assert_eq!(status.code(), Some(0), "{mode:?}");
    }
}

#[test]
fn p13_stop_signal_names_the_signal_that_starts_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap '' INT; : > ready; while :; do sleep 0.05; done";
    let mut cmd = sealinit(
        Mode::Plain,
        None,
        &["--grace", "1", "--stop-signal", "INT", "sh", "-c", script],
    );
    cmd.current_dir(dir.path());
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&dir.path().join("ready"));
    kill(child.id() as i32, "INT");
    let status = wait_at_most(&mut child, Duration::from_secs(10), "stop signal");
    assert_eq!(status.code(), Some(137));
}

// 14. --------------------------------------------------------------------

#[test]
fn p14_fault_signals_sent_with_kill_are_forwarded() {
    for mode in [Mode::Pid1, Mode::Plain] {
        for (sig, n) in [
            ("SEGV", 11),
            ("BUS", 7),
            ("ILL", 4),
            ("ABRT", 6),
            ("FPE", 8),
        ] {
            let command = ["sh", "-c", ": > ready; exec sleep 1000"];
            let status = signal_once_ready(mode, &command, sig);
            // sleep has no handler: the forwarded signal ends it.
            assert_eq!(status.code(), Some(128 + n), "{mode:?} {sig}");
        }
    }
}

// 15. --------------------------------------------------------------------

#[test]
fn p15_a_fifo_bundle_is_refused_without_blocking() {
    let fx = Fixture::new(&[("TOKEN", b"tok-fifo")]);
    let fifo = fx.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut cmd = sealinit(
        Mode::Plain,
        Some(&fx.key),
        &["--bundle", fifo.to_str().unwrap(), "true"],
    );
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = status_and_stderr(child, Duration::from_secs(10), "fifo bundle");
    assert_eq!(status.code(), Some(66), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn p15_a_fifo_key_file_is_bounded_by_the_key_timeout() {
    let fx = Fixture::new(&[("TOKEN", b"tok-fifo")]);
    let fifo = fx.path("keyfifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let child = Command::new(SEALINIT)
        .args([
            "--key-file",
            fifo.to_str().unwrap(),
            "--key-timeout",
            "1",
            "--bundle",
            fx.bundle.to_str().unwrap(),
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = status_and_stderr(child, Duration::from_secs(10), "fifo key file");
    assert_eq!(status.code(), Some(66), "{err}");
    assert!(err.contains("did not reach end-of-file within 1s"), "{err}");
}

#[test]
fn p15_sigterm_while_waiting_for_the_key_aborts_the_start() {
    let fx = Fixture::new(&[("TOKEN", b"tok-wait")]);
    // The key pipe stays open and empty: sealinit waits for it.
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let child = Command::new("sh")
        .args([
            "-c",
            r#"exec "$@" 3<&0 0</dev/null"#,
            "sh",
            SEALINIT,
            "--key-timeout",
            "60",
            "--bundle",
            fx.bundle.to_str().unwrap(),
            "true",
        ])
        .stdin(Stdio::from(rd))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_until_signals_blocked(pid);
    kill(pid, "TERM");
    let (status, err) = status_and_stderr(child, Duration::from_secs(10), "key wait");
    drop(wr);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("received SIGTERM during start-up"), "{err}");
}

// 16. --------------------------------------------------------------------

#[test]
fn p16_a_forged_header_never_reaches_stderr_raw() {
    let fx = Fixture::new(&[("TOKEN", b"tok-forged")]);
    let header = "{\"version\":1,\"created\":0,\"\\u001b[2J\\nsealinit: bundle verified OK\":1}";
    let mut forged = Vec::new();
    forged.extend_from_slice(b"SEALINIT");
    forged.push(1);
    forged.extend_from_slice(&(header.len() as u32).to_le_bytes());
    forged.extend_from_slice(header.as_bytes());
    forged.extend_from_slice(&[0u8; 24 + 4 + 16]);
    let path = fx.path("forged");
    fs::write(&path, forged).unwrap();
    let o = run(sealinit(
        Mode::Plain,
        Some(&fx.key),
        &["--bundle", path.to_str().unwrap(), "true"],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(65), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        !err.contains('\x1b') && !err.contains("verified OK"),
        "{err:?}"
    );
    assert!(err.contains("header"), "{err:?}");
}

// 17. --------------------------------------------------------------------

#[test]
fn p17_a_script_without_a_shebang_runs_under_sh() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plain-script");
    let mut f = File::create(&script).unwrap();
    writeln!(f, "echo \"args: $1 $2\"; exit 9").unwrap();
    drop(f);
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for mode in [Mode::Pid1, Mode::Plain] {
        let o = run(sealinit(
            mode,
            None,
            &[script.to_str().unwrap(), "a", "b c"],
        ));
        assert_eq!(o.status.code(), Some(9), "{mode:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "args: a b c\n");
        // Found through PATH as well.
        let mut cmd = sealinit(mode, None, &["plain-script", "x"]);
        cmd.env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()));
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(9), "{mode:?}: {}", stderr(&o));
    }
}

// Siblings of 2 and 3: every kind of destination. ----------------------

#[test]
fn p03_mask_writes_to_a_socket_and_without_proc_restores_the_shared_flags() {
    // stdout a socket: written with MSG_DONTWAIT, everything arrives.
    let script = format!(
        r#"import socket, subprocess, sys
a, b = socket.socketpair()
p = subprocess.Popen(["{SEALINIT}", "--mask", "--", "python3", "-c", "import sys; sys.stdout.write('s' * 300000)"], stdout=a, stdin=subprocess.DEVNULL)
a.close()
got = 0
while True:
    d = b.recv(65536)
    if not d:
        break
    got += len(d)
print(p.wait(), got)"#
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "0 300000", "{}", stderr(&o));

    // No /proc to reopen stdout through: O_NONBLOCK goes on the shared
    // description while sealinit runs, and comes off again after (the
    // parent's own end of the pipe shares that description).
    let script = format!(
        r#"import fcntl, os, subprocess
r, w = os.pipe()
p = subprocess.Popen(["unshare", "--mount", "sh", "-c", "mount -t tmpfs none /proc && exec \"$@\"", "sh", "{SEALINIT}", "--mask", "--", "sh", "-c", "echo through-the-pipe"], stdout=w, stdin=subprocess.DEVNULL)
os.close(w)
out = os.read(r, 4096)
code = p.wait()
print(code, out.decode().strip())"#
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "0 through-the-pipe", "{}", stderr(&o));
    let script = format!(
        r#"import fcntl, os, subprocess
r, w = os.pipe()
p = subprocess.Popen(["unshare", "--mount", "sh", "-c", "mount -t tmpfs none /proc && exec \"$@\"", "sh", "{SEALINIT}", "--mask", "--", "true"], stdout=w, stdin=subprocess.DEVNULL, pass_fds=())
p.wait()
print("nonblocking" if fcntl.fcntl(w, fcntl.F_GETFL) & os.O_NONBLOCK else "blocking")"#
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "blocking", "{}", stderr(&o));
}
