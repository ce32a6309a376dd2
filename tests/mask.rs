//! `--mask` (issue #8): values, their forms and their pieces are masked in
//! the command's output through pipes and through a pseudo-terminal;
//! exit codes, signals and delivery are as without it; without it, the
//! command's stdio is sealinit's own.

use std::fs::{self, File};
use std::io::Read;
use std::process::{Command, Stdio};

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");

const TOKEN: &str = "tok-5f3a9c1e-SECRET";

/// Runs `python3 -c SCRIPT` under `sealinit --mask` with the fixture's
/// secrets; returns (stdout, stderr, exit code).
fn masked(fx: &Fixture, extra: &[&str], script: &str) -> (Vec<u8>, String, Option<i32>) {
    let b = fx.bundle.to_str().unwrap();
    let mut args = vec!["--mask", "--bundle", b];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["python3", "-c", script]);
    let o = run(sealinit(Mode::Pid1, Some(&fx.key), &args));
    let err = stderr(&o);
    (o.stdout, err, o.status.code())
}

fn fixture() -> Fixture {
    Fixture::new(&[
        ("TOKEN", TOKEN.as_bytes()),
        (
            "PEM",
            b"-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END KEY-----",
        ),
        ("URLISH", b"p@ss w/rd&x=1"),
        ("PREFIX", b"abcd1234"),
        ("LONGER", b"abcd1234efgh"),
        ("TINY", b"ab"),
    ])
}

#[test]
fn values_split_at_every_byte_across_two_writes_are_masked() {
    let fx = fixture();
    let script = r#"
import os, time
v = os.environ["TOKEN"].encode()
for cut in range(len(v) + 1):
    os.write(1, b"<" + v[:cut])
    time.sleep(0.001)
    os.write(1, v[cut:] + b">\n")
"#;
    // A generous hold, so that a busy CI machine cannot turn the pause
    // between the two writes into a 50 ms silence.
    let (out, err, code) = masked(&fx, &["--mask-hold-ms", "2000"], script);
    assert_eq!(code, Some(0), "{err}");
    let text = String::from_utf8(out).unwrap();
    let bad: Vec<&str> = text.lines().filter(|l| *l != "<***>").collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(text.lines().count(), TOKEN.len() + 1);
}

#[test]
fn a_held_prefix_always_gets_its_full_hold_time() {
    // Regression: a prefix held (and released) earlier must not make a
    // later held prefix look overdue and be flushed at once, unmasked.
    let fx = fixture();
    // Output keeps flowing, with pauses far shorter than the hold time,
    // for longer than the hold time; every line is split inside the value.
    let script = r#"
import os, time
v = os.environ["TOKEN"].encode()
for _ in range(300):
    os.write(1, b"a " + v[:6]); time.sleep(0.001)
    os.write(1, v[6:] + b"\n"); time.sleep(0.001)
"#;
    let (out, err, code) = masked(&fx, &["--mask-hold-ms", "100"], script);
    assert_eq!(code, Some(0), "{err}");
    let text = String::from_utf8(out).unwrap();
    let leaked = text.lines().filter(|l| *l != "a ***").count();
    assert_eq!(leaked, 0, "{text}");
}

#[test]
fn forms_lines_prefixes_and_binary_are_handled() {
    let fx = fixture();
    let script = r#"
import base64, json, os, sys, urllib.parse
e = os.environ
out = sys.stdout.buffer
for prefix in [b"", b"x", b"xy"]:
    out.write(b"b64=" + base64.b64encode(prefix + e["TOKEN"].encode() + b"!!") + b"\n")
out.write(b"url=" + urllib.parse.quote(e["URLISH"], safe="").encode() + b"\n")
out.write(b"json=" + json.dumps({"k": e["PEM"]}).encode() + b"\n")
out.write(b"line=" + e["PEM"].split("\n")[1].encode() + b"\n")
out.write(b"both=" + e["LONGER"].encode() + b" " + e["PREFIX"].encode() + b"\n")
out.write(b"tiny=" + e["TINY"].encode() + b"\n")
out.write(bytes(range(256)) + e["TOKEN"].encode() + bytes(range(256)))
out.flush()
"#;
    let (out, err, code) = masked(&fx, &[], script);
    assert_eq!(code, Some(0), "{err}");
    let (text, binary) = out.split_at(out.len() - 512 - 3);
    let text = String::from_utf8_lossy(text);
    for line in text.lines().filter(|l| !l.starts_with("tiny=")) {
        assert!(line.contains("***"), "not masked: {line}");
        assert!(
            !line.contains(TOKEN) && !line.contains("MIIBOg") && !line.contains("abcd1234"),
            "{line}"
        );
    }
    assert!(text.contains("both=*** ***\n"), "{text}");
    assert!(text.contains("tiny=ab\n"), "short values are left alone");
    assert!(err.contains("not masked: TINY"), "{err}");
    let mut want: Vec<u8> = (0..=255u8).collect();
    want.extend_from_slice(b"***");
    want.extend(0..=255u8);
    assert_eq!(binary, &want[..]);
}

#[test]
fn stdout_and_stderr_stay_apart_and_in_order() {
    let fx = fixture();
    let script = r#"
import os, time
t = os.environ["TOKEN"].encode()
for i in range(5):
    os.write(1, b"out %d " % i + t + b"\n"); time.sleep(0.01)
    os.write(2, b"err %d " % i + t + b"\n"); time.sleep(0.01)
"#;
    let (out, err, code) = masked(&fx, &[], script);
    assert_eq!(code, Some(0));
    let want_out: String = (0..5).map(|i| format!("out {i} ***\n")).collect();
    let want_err: String = (0..5).map(|i| format!("err {i} ***\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), want_out);
    assert!(err.ends_with(&want_err), "{err}");

    // Both onto one pipe: the lines keep their order.
    let b = fx.bundle.to_str().unwrap();
    let cmd = format!(
        "exec {SEALINIT} --mask --bundle {b} python3 -c '{}' 3<{} 2>&1",
        script.replace('\'', "\""),
        fx.key.display()
    );
    let o = run({
        let mut c = Command::new("sh");
        c.args(["-c", &cmd]);
        c
    });
    let merged: String = (0..5)
        .map(|i| format!("out {i} ***\nerr {i} ***\n"))
        .collect();
    assert!(stdout(&o).ends_with(&merged), "{}", stdout(&o));
}

#[test]
fn output_right_before_exit_is_delivered_and_exit_codes_pass() {
    let fx = fixture();
    let (out, _, code) = masked(
        &fx,
        &[],
        "import os; os.write(1, b'last ' + os.environ['TOKEN'].encode()); os._exit(7)",
    );
    assert_eq!(code, Some(7));
    assert_eq!(out, b"last ***");
    // A held prefix at the very end is written out at exit.
    let (out, _, code) = masked(&fx, &[], "import os; os.write(1, b'end abcd'); os._exit(0)");
    assert_eq!(code, Some(0));
    assert_eq!(out, b"end abcd");
    // A background process keeps the pipe open: it is ended after the grace
    // period, and its output still arrives, masked.
    let ready = fx.path("bg-ready");
    let script = format!(
        "import os, subprocess, time\n\
         subprocess.Popen(['sh', '-c', 'trap \"\" TERM; : > {r}; sleep 0.3; echo late $TOKEN; sleep 1000'])\n\
         while not os.path.exists('{r}'): time.sleep(0.005)\n\
         os._exit(3)",
        r = ready.display()
    );
    let script = script.as_str();
    let (out, _, code) = masked(&fx, &["--grace", "1"], script);
    assert_eq!(code, Some(3));
    assert_eq!(String::from_utf8(out).unwrap(), "late ***\n");
}

#[test]
fn signals_reach_the_command_under_mask() {
    let fx = fixture();
    let ready = fx.path("ready");
    let b = fx.bundle.to_str().unwrap();
    let script = format!(
        "import os, signal, sys, time\n\
         signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b'bye ' + os.environ['TOKEN'].encode()), os._exit(42)))\n\
         open('{}', 'w').close()\n\
         while True: time.sleep(1)",
        ready.display()
    );
    let child = sealinit(
        Mode::Pid1,
        Some(&fx.key),
        &["--mask", "--bundle", b, "python3", "-c", &script],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = sealinit_pid(&child, Mode::Pid1);
    wait_for_file(&ready);
    kill(pid, "TERM");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(42));
    assert_eq!(stdout(&o), "bye ***");
}

#[test]
fn without_mask_the_command_keeps_sealinits_stdio() {
    let fx = fixture();
    let b = fx.bundle.to_str().unwrap();
    let out_file = fx.path("out.txt");
    // (flag, SEALINIT_MASK, where fd 1 should point)
    for (flag, env, want) in [
        (None, None, out_file.display().to_string()),
        (Some("--mask"), None, "pipe:".to_owned()),
        (None, Some("1"), "pipe:".to_owned()),
        (None, Some("0"), out_file.display().to_string()),
    ] {
        let mut args = vec!["--bundle", b];
        args.extend(flag);
        args.extend([
            "sh",
            "-c",
            "readlink /proc/$$/fd/1; readlink /proc/$$/fd/2 >&2",
        ]);
        let mut c = sealinit(Mode::Plain, Some(&fx.key), &args);
        if let Some(v) = env {
            c.env("SEALINIT_MASK", v);
        }
        c.stdout(File::create(&out_file).unwrap())
            .stderr(Stdio::piped());
        let o = c.output().unwrap();
        let seen = fs::read_to_string(&out_file).unwrap();
        assert!(seen.starts_with(&want), "{flag:?} {env:?}: fd 1 is {seen}");
        if want != "pipe:" {
            assert!(
                stderr(&o).starts_with("pipe:"),
                "fd 2 is the test's pipe itself: {}",
                stderr(&o)
            );
        }
    }
}

/// `sealinit --mask` with the fixture's bundle, running `sh -c script`,
/// with stdout and stderr on the slave of `pty`.
fn spawn_on_pty(fx: &Fixture, pty: &nix::pty::OpenptyResult, script: &str) -> std::process::Child {
    let b = fx.bundle.to_str().unwrap();
    let args: Vec<std::ffi::OsString> = ["--mask", "--bundle", b, "sh", "-c", script]
        .iter()
        .map(Into::into)
        .collect();
    let mut cmd = with_key_on_fd3(Some(&fx.key), &[SEALINIT], &args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    cmd.spawn().unwrap()
}

/// Everything that has arrived on the master side of `pty` (the writers
/// are gone: it reads EIO once the buffer is empty). One read is not
/// enough: sealinit's warning and the command's output are separate writes.
fn read_master(pty: nix::pty::OpenptyResult) -> String {
    drop(pty.slave);
    let mut master = File::from(pty.master);
    let mut all = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn on_a_terminal_the_command_gets_a_pty_with_colours_intact() {
    let fx = fixture();
    let pty = nix::pty::openpty(None, None).unwrap();
    let script =
        r#"[ -t 1 ] && echo isatty-yes; printf '\033[31mred\033[0m %s\n' "$TOKEN"; exit 4"#;
    let mut child = spawn_on_pty(&fx, &pty, script);
    assert_eq!(child.wait().unwrap().code(), Some(4));
    let text = read_master(pty);
    assert!(text.contains("isatty-yes"), "{text:?}");
    assert!(text.contains("\x1b[31mred\x1b[0m ***"), "{text:?}");
    assert!(!text.contains(TOKEN));
}

#[test]
fn window_size_changes_reach_the_command_on_its_pty() {
    use nix::pty::Winsize;
    let fx = fixture();
    let size = Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let ready = fx.path("ready");
    let script = format!(
        "trap 'stty size; exit 0' WINCH; stty size; : > {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut child = spawn_on_pty(&fx, &pty, &script);
    wait_for_file(&ready);
    // The terminal sealinit writes to is resized; sealinit learns of it by
    // SIGWINCH (sent here by hand: the test's pty is not its controlling
    // terminal) and passes the new size to the command's pty.
    let bigger = Winsize {
        ws_row: 50,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    set_size(&pty.slave, &bigger);
    kill(child.id() as i32, "WINCH");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let text = read_master(pty);
    assert!(
        text.contains("24 80") && text.contains("50 132"),
        "{text:?}"
    );
}

/// TIOCSWINSZ through `stty` on the given terminal.
fn set_size(tty: &std::os::fd::OwnedFd, size: &nix::pty::Winsize) {
    let o = Command::new("stty")
        .args([
            "rows",
            &size.ws_row.to_string(),
            "cols",
            &size.ws_col.to_string(),
        ])
        .stdin(Stdio::from(tty.try_clone().unwrap()))
        .output()
        .unwrap();
    assert!(o.status.success(), "stty: {}", stderr(&o));
}
