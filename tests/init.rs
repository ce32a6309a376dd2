//! The init behaviour of issue #3, as real PID 1 and as a plain process:
//! signal mask, forwarding of every catchable signal, group mode, bursts,
//! idle wake-ups, orphan storms, shutdown with a grace period, setsid
//! escapees, --pdeathsig, --map-exit, setup steps and terminal job control.
//! Synchronisation is by files the commands write, never by sleeping alone.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");

fn both() -> [Mode; 2] {
    [Mode::Pid1, Mode::Plain]
}

/// Waits until the file at `path` has a line equal to `line`.
fn wait_for_line(path: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line:?} never appeared in {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; count it as gone only once reaped.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn child_gets_exactly_the_inherited_signal_mask_and_ignored_set() {
    // A launcher that blocks SIGUSR1 and SIGRTMIN+2 and ignores SIGINT and
    // SIGHUP, then execs what follows.
    let launcher = "import os, signal, sys; \
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGRTMIN + 2}); \
        signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN); \
        os.execvp(sys.argv[1], sys.argv[1:])";
    let probe = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"];
    for mode in both() {
        let prefix: &[&str] = match mode {
            Mode::Pid1 => &["unshare", "--pid", "--fork", "--mount-proc"],
            Mode::Plain => &[],
        };
        let run_with = |through_sealinit: bool| {
            let mut c = Command::new("python3");
            c.args(["-c", launcher]).args(prefix);
            if through_sealinit {
                c.arg(SEALINIT);
            }
            stdout(&run({
                c.args(probe);
                c
            }))
        };
        let direct = run_with(false);
        let via = run_with(true);
        assert!(
            direct.contains("SigBlk:\t0000000800000200"),
            "{mode:?} launcher: {direct}"
        );
        assert_eq!(via, direct, "{mode:?}");
    }
}

#[test]
fn every_catchable_signal_is_forwarded() {
    let mut signals: Vec<i32> = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGSTKFLT,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGIO,
        libc::SIGPWR,
    ]
    .to_vec();
    signals.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    signals.push(libc::SIGTERM); // last: the trap exits
    let traps: String = signals
        .iter()
        .map(|s| {
            format!(
                "trap 'echo {s} >> log{}' {s}; ",
                if *s == libc::SIGTERM { "; exit 0" } else { "" }
            )
        })
        .collect();
    for mode in both() {
        let fx = Fixture::new(&[]);
        let script = format!("{traps} : > ready; sleep 1000 >/dev/null & while :; do wait; done");
        let mut cmd = sealinit(mode, None, &["--grace", "60", "bash", "-c", &script]);
        cmd.current_dir(fx.dir.path());
        let child = spawn(&mut cmd);
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&fx.path("ready"));
        for s in &signals {
            kill(pid, &s.to_string());
            wait_for_line(&fx.path("log"), &s.to_string());
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
    }
}

/// A command that takes the given signals synchronously and logs each one
/// it receives, one line per delivery, until it has seen `total`.
const RECEIVER: &str = "import signal, sys
sigs = [int(s) for s in sys.argv[2].split(',')]
signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
open('ready', 'w').close()
with open('log', 'a') as log:
    for _ in range(int(sys.argv[1])):
        log.write('%d\\n' % signal.sigwaitinfo(sigs).si_signo)
        log.flush()
";

#[test]
fn bursts_of_signals_are_all_delivered() {
    // Ten different standard signals back to back, then 20 copies of one
    // real-time signal (which the kernel queues rather than merges).
    let standard = [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
        libc::SIGWINCH,
        libc::SIGALRM,
        libc::SIGURG,
        libc::SIGPROF,
        libc::SIGVTALRM,
        libc::SIGPWR,
        libc::SIGIO,
    ];
    let rt = libc::SIGRTMIN() + 5;
    let mut all: Vec<i32> = standard.to_vec();
    all.push(rt);
    let list = all.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for mode in both() {
        let fx = Fixture::new(&[]);
        let total = (standard.len() + 20).to_string();
        let mut cmd = sealinit(
            mode,
            None,
            &["--grace", "60", "python3", "-c", RECEIVER, &total, &list],
        );
        cmd.current_dir(fx.dir.path());
        let child = spawn(&mut cmd);
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&fx.path("ready"));
        let mut sends: Vec<String> = standard
            .iter()
            .map(|s| format!("kill -{s} {pid}"))
            .collect();
        sends.extend((0..20).map(|_| format!("kill -{rt} {pid}")));
        run({
            let mut c = Command::new("sh");
            c.args(["-c", &sends.join("; ")]);
            c
        });
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        let log = fs::read_to_string(fx.path("log")).unwrap();
        let mut got: Vec<i32> = log.lines().map(|l| l.parse().unwrap()).collect();
        got.sort();
        let mut want: Vec<i32> = standard.to_vec();
        want.extend([rt; 20]);
        want.sort();
        assert_eq!(got, want, "{mode:?}");
    }
}

#[test]
fn group_mode_reaches_a_grandchild() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        let script = "trap 'echo child >> log' USR1; \
            sh -c \"trap 'echo grandchild >> log; exit 0' USR1; : > ready; sleep 1000 >/dev/null & wait\" & \
            wait; wait";
        let mut cmd = sealinit(mode, None, &["-g", "sh", "-c", script]);
        cmd.current_dir(fx.dir.path());
        let child = spawn(&mut cmd);
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&fx.path("ready"));
        kill(pid, "USR1");
        wait_for_line(&fx.path("log"), "child");
        wait_for_line(&fx.path("log"), "grandchild");
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
    }
}

#[test]
fn map_exit_rewrites_only_the_named_codes() {
    for (script, want) in [("kill -TERM $$", 0), ("exit 3", 4), ("exit 5", 5)] {
        let o = run(sealinit(
            Mode::Pid1,
            None,
            &[
                "--map-exit",
                "143=0",
                "--map-exit",
                "3=4",
                "sh",
                "-c",
                script,
            ],
        ));
        assert_eq!(o.status.code(), Some(want), "{script}");
    }
}

#[test]
fn idle_means_no_wake_ups() {
    // With --mask too: sealinit then sleeps in poll(2) on its pipes, again
    // without a timeout while nothing is held back.
    for (mode, mask) in [
        (Mode::Pid1, false),
        (Mode::Plain, false),
        (Mode::Pid1, true),
    ] {
        let fx = Fixture::new(&[]);
        let ready = fx.path("ready");
        let script = format!(": > {}; exec sleep 1000", ready.display());
        let mut args = vec!["sh", "-c", &script];
        if mask {
            args.insert(0, "--mask");
        }
        let mut child = spawn(&mut sealinit(mode, None, &args));
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&ready);
        std::thread::sleep(Duration::from_millis(200)); // let start-up settle
        let switches = || {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches"))
                .unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let before = switches();
        std::thread::sleep(Duration::from_secs(3));
        let after = switches();
        assert_eq!(
            after,
            before,
            "{mode:?}: sealinit woke up {} times in 3 s",
            after - before
        );
        let _ = child.kill();
        kill(pid, "TERM");
        let _ = child.wait();
    }
}

#[test]
fn an_orphan_storm_of_2000_leaves_no_zombie() {
    let script = r#"
        i=0; while [ $i -lt 2000 ]; do (true &) ; i=$((i+1)); done
        n=0
        while [ $n -lt 1000 ]; do
            z=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
            [ "$z" = 0 ] && { echo zombies=0; exit 0; }
            n=$((n+1)); sleep 0.01
        done
        echo zombies=$z; exit 1"#;
    let o = run(sealinit(Mode::Pid1, None, &["sh", "-c", script]));
    assert_eq!(stdout(&o), "zombies=0\n", "{}", stderr(&o));
}

#[test]
fn a_straggler_ignoring_term_is_killed_after_the_grace_period() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        // The background sleep ignores SIGTERM; the command exits 7 at once.
        let script = "(trap '' TERM; : > ready; exec sleep 1000) >/dev/null 2>&1 & echo $! > straggler; \
                      while [ ! -e ready ]; do sleep 0.01; done; exit 7";
        let mut cmd = sealinit(mode, None, &["--grace", "1", "sh", "-c", script]);
        cmd.current_dir(fx.dir.path());
        let started = Instant::now();
        let o = run(cmd);
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(7), "{mode:?}: {}", stderr(&o));
        assert!(
            took >= Duration::from_secs(1),
            "{mode:?}: exited before the grace period: {took:?}"
        );
        assert!(took < Duration::from_secs(8), "{mode:?}: took {took:?}");
        let straggler: i32 = fs::read_to_string(fx.path("straggler"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if mode == Mode::Plain {
            assert!(!alive(straggler), "straggler {straggler} survived sealinit");
        }
    }
}

#[test]
fn background_work_that_obeys_term_ends_without_waiting_for_the_grace_period() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        let script = "sh -c \"trap 'echo cleaned >> log; exit 0' TERM; : > ready; sleep 1000 >/dev/null & wait\" & \
                      while [ ! -e ready ]; do sleep 0.01; done; exit 0";
        let mut cmd = sealinit(mode, None, &["--grace", "30", "sh", "-c", script]);
        cmd.current_dir(fx.dir.path());
        let started = Instant::now();
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?} waited for the grace period"
        );
        wait_for_line(&fx.path("log"), "cleaned");
    }
}

#[test]
fn a_setsid_escapee_gets_sigterm_too() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        let script = "setsid sh -c \"trap 'echo escapee-term >> log; exit 0' TERM; : > ready; sleep 1000 >/dev/null & wait\" & \
                      while [ ! -e ready ]; do sleep 0.01; done; exit 0";
        let mut cmd = sealinit(mode, None, &["--grace", "30", "sh", "-c", script]);
        cmd.current_dir(fx.dir.path());
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        wait_for_line(&fx.path("log"), "escapee-term");
    }
}

#[test]
fn sigterm_to_sealinit_then_sigkill_after_grace() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        let script =
            "trap 'echo ignored-term >> log' TERM; : > ready; while :; do sleep 0.05; done";
        let mut cmd = sealinit(mode, None, &["--grace", "1", "sh", "-c", script]);
        cmd.current_dir(fx.dir.path());
        let child = spawn(&mut cmd);
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&fx.path("ready"));
        let sent = Instant::now();
        kill(pid, "TERM");
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(137), "{mode:?}: {}", stderr(&o));
        assert!(sent.elapsed() >= Duration::from_secs(1), "{mode:?}");
        wait_for_line(&fx.path("log"), "ignored-term");
    }
}

#[test]
fn pdeathsig_fires_when_the_parent_dies() {
    let fx = Fixture::new(&[]);
    let inner = "trap 'echo got-usr1 >> log; exit 0' USR1; : > ready; sleep 1000 >/dev/null & wait";
    // The parent shell starts sealinit in the background and exits once the
    // command is ready.
    let outer = format!(
        "{SEALINIT} --pdeathsig SIGUSR1 sh -c \"{inner}\" >/dev/null 2>&1 & \
         while [ ! -e ready ]; do sleep 0.01; done; exit 0"
    );
    let o = run({
        let mut c = Command::new("sh");
        c.args(["-c", &outer]).current_dir(fx.dir.path());
        c
    });
    assert!(o.status.success());
    wait_for_line(&fx.path("log"), "got-usr1");
}

#[test]
fn setup_steps_run_in_order_with_the_secrets() {
    let fx = Fixture::new(&[("TOKEN", b"setup-secret")]);
    let b = fx.bundle.to_str().unwrap();
    for mode in both() {
        let mut cmd = sealinit(
            mode,
            Some(&fx.key),
            &[
                "--bundle",
                b,
                "--log-level",
                "info",
                "--setup",
                "echo one:${#TOKEN} >> steps",
                "--setup",
                "echo two >> steps",
                "sh",
                "-c",
                "echo main:${#TOKEN} >> steps",
            ],
        );
        cmd.current_dir(fx.dir.path());
        let o = run(cmd);
        assert!(o.status.success(), "{mode:?}: {}", stderr(&o));
        let steps = fs::read_to_string(fx.path("steps")).unwrap();
        assert_eq!(steps, "one:12\ntwo\nmain:12\n", "{mode:?}");
        assert!(
            stderr(&o).contains("setup step finished step=2 of=2 ms="),
            "{}",
            stderr(&o)
        );
        fs::remove_file(fx.path("steps")).unwrap();
    }
}

#[test]
fn a_failing_setup_step_stops_the_start() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        let mut cmd = sealinit(
            mode,
            None,
            &[
                "--setup",
                "echo one >> steps",
                "--setup",
                "exit 3",
                "--setup",
                "echo three >> steps",
                "sh",
                "-c",
                "echo main >> steps",
            ],
        );
        cmd.current_dir(fx.dir.path());
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(3), "{mode:?}");
        assert!(
            stderr(&o).contains(
                "setup step 2 of 3 (\"exit 3\") exited with status 3; the command was not started"
            ),
            "{}",
            stderr(&o)
        );
        assert_eq!(fs::read_to_string(fx.path("steps")).unwrap(), "one\n");
    }
}

#[test]
fn a_signal_during_setup_stops_the_start() {
    for mode in both() {
        let fx = Fixture::new(&[]);
        let mut cmd = sealinit(
            mode,
            None,
            &[
                "--setup",
                ": > ready; exec sleep 1000",
                "sh",
                "-c",
                "echo main >> steps",
            ],
        );
        cmd.current_dir(fx.dir.path());
        let child = spawn(&mut cmd);
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&fx.path("ready"));
        kill(pid, "TERM");
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(143), "{mode:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("was killed by SIGTERM after sealinit received SIGTERM"),
            "{}",
            stderr(&o)
        );
        assert!(!fx.path("steps").exists(), "{mode:?}: the command ran");
    }
}
