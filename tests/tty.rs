//! Job control through sealinit on a real pseudo-terminal: an interactive
//! bash under sealinit owns the terminal, Ctrl-C ends a foreground command
//! with 130, Ctrl-Z stops it and `fg` resumes it.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");

struct Terminal {
    writer: File,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
    }

    /// Waits until the output contains `text` after the first `skip` bytes;
    /// returns the output length after the match.
    fn expect(&self, text: &str, skip: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.output.lock().unwrap().clone();
            if let Some(i) = out.get(skip..).and_then(|s| s.find(text)) {
                return skip + i + text.len();
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared in {out:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `(state, pgrp, tpgid)` of a process, from /proc/PID/stat.
fn stat(pid: i32) -> (char, i32, i32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
    (
        f[0].chars().next().unwrap(),
        f[2].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

/// Waits until `pid` is running in the terminal's foreground group.
fn wait_foreground(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (state, pgrp, tpgid) = stat(pid);
        if state != 'T' && pgrp == tpgid {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pid} never ran in the foreground"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the pid printed after `marker` (as the command sees it, maybe in
/// a PID namespace) and finds that process's host pid among the
/// descendants of `root`.
fn pid_after(term: &Terminal, root: u32, marker: &str, skip: usize) -> (i32, usize) {
    let end = term.expect(marker, skip);
    let line_end = term.expect("\n", end);
    let out = term.output.lock().unwrap().clone();
    let inner: i32 = out[end..line_end].trim().parse().unwrap();
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let nspid = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap_or_default();
        if nspid.split_whitespace().last() == Some(&inner.to_string()) && p != root.to_string() {
            return (p.parse().unwrap(), line_end);
        }
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        stack.extend(children.split_whitespace().map(str::to_owned));
    }
    panic!("no descendant of {root} is pid {inner} in its namespace");
}

#[test]
fn interactive_bash_has_working_job_control() {
    let cases = [
        (Mode::Pid1, false),
        (Mode::Plain, false),
        (Mode::Pid1, true),
        (Mode::Plain, true),
    ];
    for (mode, mask) in cases {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = pty.slave;
        let mut cmd = Command::new("setsid");
        cmd.arg("--ctty");
        if mode == Mode::Pid1 {
            cmd.args(["unshare", "--pid", "--fork", "--mount-proc"]);
        }
        cmd.arg(SEALINIT);
        if mask {
            // The command then runs on a pty that sealinit proxies.
            cmd.arg("--mask");
        }
        cmd.args(["bash", "--norc", "--noprofile", "-i"])
            .env("PS1", "PROMPT> ")
            .env("TERM", "dumb")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let mut child = cmd.spawn().unwrap();
        drop(cmd); // close our copies of the slave side

        let master = File::from(pty.master);
        let output = Arc::new(Mutex::new(String::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut term = Terminal {
            writer: master,
            output,
        };

        let at = term.expect("PROMPT> ", 0);
        // Ctrl-C ends the foreground command; bash reports 130.
        term.send("sh -c 'echo P\"\"ID=$$; exec sleep 100'\n");
        let (pid, at) = pid_after(&term, child.id(), "PID=", at);
        wait_foreground(pid);
        term.send("\x03");
        let at = term.expect("PROMPT> ", at);
        term.send("echo rc=$?\n");
        let at = term.expect("rc=130", at);

        // Ctrl-Z stops it, fg brings it back, Ctrl-C ends it.
        term.send("sh -c 'echo P\"\"ID=$$; exec sleep 100'\n");
        let (pid, at) = pid_after(&term, child.id(), "PID=", at);
        wait_foreground(pid);
        term.send("\x1a");
        let at = term.expect("Stopped", at);
        assert_eq!(stat(pid).0, 'T', "{mode:?} mask={mask}: not stopped");
        term.send("fg\n");
        wait_foreground(pid);
        term.send("\x03");
        let at = term.expect("PROMPT> ", at);
        term.send("echo rc=$?; exit 5\n");
        term.expect("rc=130", at);

        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(5),
            "{mode:?}: {}",
            term.output.lock().unwrap()
        );
    }
}
