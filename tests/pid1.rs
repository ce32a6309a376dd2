//! sealinit as a real PID 1 (and as a plain process): the environment it
//! hands over, exit status, signal forwarding, reaping.

use std::process::Stdio;

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");

fn both() -> [Mode; 2] {
    [Mode::Pid1, Mode::Plain]
}

#[test]
fn the_command_runs_as_pid_2_under_pid_1() {
    let o = run(sealinit(
        Mode::Pid1,
        None,
        &["sh", "-c", "echo $$ $PPID; cat /proc/1/comm"],
    ));
    assert_eq!(stdout(&o), "2 1\nsealinit\n", "{}", stderr(&o));
    assert!(o.status.success());
}

#[test]
fn child_environment_is_inherited_minus_sealinit_plus_secrets_exactly() {
    let big: Vec<u8> = (0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut pairs: Vec<(String, Vec<u8>)> = vec![
        ("BIG".into(), big),
        ("MULTI".into(), b"line one\nline two\n\nend".to_vec()),
        ("EMPTY".into(), vec![]),
        (
            "TRICKY".into(),
            "a=b \"quoted\" 'single' $HOME `x` \\ ✓".into(),
        ),
        ("BINARY".into(), (1..=255u8).collect()),
        ("OVERRIDDEN".into(), b"from the bundle".to_vec()),
    ];
    for i in pairs.len()..200 {
        pairs.push((format!("SECRET_{i:03}"), format!("value-{i}").into_bytes()));
    }
    let refs: Vec<(&str, &[u8])> = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let fx = Fixture::new(&refs);

    for mode in both() {
        let setup = |mut cmd: std::process::Command| {
            cmd.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("INHERITED", "kept")
                .env("OVERRIDDEN", "from the parent")
                .env("SEALINIT_LOG", "warn")
                .env("SEALINIT_WHATEVER", "dropped");
            cmd
        };
        let baseline = run(setup(sealinit(mode, None, &["env", "-0"])));
        // The baseline ran through sealinit without a bundle: still no SEALINIT_*.
        let base = parse_env0(&baseline.stdout);
        assert!(
            base.keys().all(|k| !k.starts_with(b"SEALINIT_")),
            "{base:?}"
        );
        assert_eq!(base.get(&b"OVERRIDDEN"[..]).unwrap(), b"from the parent");

        let bundle = fx.bundle.to_str().unwrap();
        let o = run(setup(sealinit(
            mode,
            Some(&fx.key),
            &["--bundle", bundle, "env", "-0"],
        )));
        assert!(o.status.success(), "{mode:?}: {}", stderr(&o));
        let got = parse_env0(&o.stdout);

        let mut want = base.clone();
        for (n, v) in &pairs {
            want.insert(n.clone().into_bytes(), v.clone());
        }
        assert_eq!(got.len(), want.len(), "{mode:?}");
        assert!(got == want, "{mode:?}: environments differ");
        assert_eq!(got.get(&b"INHERITED"[..]).unwrap(), b"kept");
    }
}

#[test]
fn exit_codes_0_to_255_pass_through_as_pid_1() {
    // One namespace per code would be slow; each code is still a separate
    // sealinit run as PID 1, driven by a loop inside a single shell.
    let script = format!(
        "for c in $(seq 0 255); do unshare --pid --fork --mount-proc {SEALINIT} sh -c \"exit $c\"; \
         got=$?; [ $got = $c ] || echo \"code $c came back as $got\"; done; echo done"
    );
    let o = run({
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &script]);
        c
    });
    assert_eq!(stdout(&o), "done\n", "{}", stderr(&o));
}

#[test]
fn death_by_signal_is_128_plus_n() {
    for mode in both() {
        for (sig, code) in [("KILL", 137), ("TERM", 143), ("SEGV", 139), ("USR1", 138)] {
            let o = run(sealinit(
                mode,
                None,
                &["sh", "-c", &format!("kill -s {sig} $$")],
            ));
            assert_eq!(
                o.status.code(),
                Some(code),
                "{mode:?} {sig}: {}",
                stderr(&o)
            );
        }
    }
}

#[test]
fn listed_signals_are_forwarded_to_a_trapping_child() {
    let signals = [
        ("TERM", 15),
        ("INT", 2),
        ("HUP", 1),
        ("QUIT", 3),
        ("USR1", 10),
        ("USR2", 12),
        ("WINCH", 28),
    ];
    for mode in both() {
        for (name, num) in signals {
            let fx = Fixture::new(&[]);
            let ready = fx.path("ready");
            let script = format!(
                "trap 'echo got {name}; kill $!; exit {}' {name}; : > {}; sleep 1000 >/dev/null & wait",
                100 + num,
                ready.display()
            );
            let child = sealinit(mode, None, &["sh", "-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = sealinit_pid(&child, mode);
            wait_for_file(&ready);
            kill(pid, name);
            let o = child.wait_with_output().unwrap();
            assert_eq!(stdout(&o), format!("got {name}\n"), "{mode:?}");
            assert_eq!(o.status.code(), Some(100 + num), "{mode:?} {name}");
        }
    }
}

#[test]
fn as_a_plain_process_it_is_a_subreaper() {
    // The intermediate shell exits; its background sleep is reparented to
    // sealinit (the command's parent), not to the host's init.
    let script = r#"sh -c 'sleep 30 & echo $!' > pidfile; p=$(cat pidfile);
        awk '/^PPid/ {print $2}' /proc/$p/status; echo $PPID; kill $p"#;
    let fx = Fixture::new(&[]);
    let mut cmd = sealinit(Mode::Plain, None, &["sh", "-c", script]);
    cmd.current_dir(fx.dir.path());
    let o = run(cmd);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 2, "{}", stderr(&o));
    assert_eq!(lines[0], lines[1], "orphan's parent is sealinit");
}

#[test]
fn the_child_gets_the_inherited_signal_mask_and_ignored_set() {
    let probe = ["sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"];
    // Start from a parent that blocks nothing and ignores nothing but what
    // `sh` sets; sealinit must not add its own mask or SIGPIPE=ignored.
    let direct = run({
        let mut c = std::process::Command::new(probe[0]);
        c.args(&probe[1..]);
        c
    });
    for mode in both() {
        let via = run(sealinit(mode, None, &probe));
        assert_eq!(stdout(&via), stdout(&direct), "{mode:?}");
        assert!(stdout(&via).contains("SigBlk:\t0000000000000000"));
    }
}

#[test]
fn key_on_stdin_leaves_dev_null_for_the_command() {
    let fx = Fixture::new(&[("TOKEN", b"s3cret-value")]);
    let bundle = fx.bundle.to_str().unwrap();
    let o = std::process::Command::new(SEALINIT)
        .args(["--key-fd", "0", "--bundle", bundle, "sh", "-c"])
        .arg("echo ${#TOKEN}; wc -c; readlink /proc/self/fd/0")
        .stdin(std::fs::File::open(&fx.key).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "12\n0\n/dev/null\n");
}
