//! sealinit's own failures: each bad input gets its documented exit code
//! and a message naming what failed; no command is started; no secret value
//! appears in the output even at trace level.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");
use sealinit_core::bundle::Header;

const SECRET: &[u8] = b"s3cret-VALUE-that-must-never-print";

struct Case {
    name: &'static str,
    code: i32,
    message: &'static str,
}

fn fixture() -> Fixture {
    Fixture::new(&[("TOKEN", SECRET), ("OTHER", b"x")])
}

/// Runs sealinit (as PID 1 and as a plain process) with `args` before the
/// command `touch marker`, with `key` on fd 3, at trace level.
fn check(fx: &Fixture, key: Option<&Path>, args: &[&str], case: Case) {
    for mode in [Mode::Pid1, Mode::Plain] {
        let marker = fx.path("marker");
        let marker_s = marker.to_str().unwrap().to_owned();
        let mut all = vec!["--log-level", "trace"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["touch", &marker_s]);
        let o = run(sealinit(mode, key, &all));
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(case.code),
            "{} {mode:?}: {err}",
            case.name
        );
        assert!(err.contains(case.message), "{} {mode:?}: {err}", case.name);
        assert!(!marker.exists(), "{} {mode:?}: the command ran", case.name);
        let secret = String::from_utf8_lossy(SECRET);
        assert!(
            !err.contains(&*secret) && !stdout(&o).contains(&*secret),
            "{}: secret printed",
            case.name
        );
    }
}

fn bundle_arg(fx: &Fixture) -> String {
    fx.bundle.to_str().unwrap().to_owned()
}

#[test]
fn usage_errors_exit_64() {
    let fx = fixture();
    for (args, message) in [
        (&[][..], "missing COMMAND"),
        (&["--"][..], "missing COMMAND"),
        (&["--frobnicate", "x"][..], "invalid option '--frobnicate'"),
        (&["--key-fd", "2", "x"][..], "--key-fd cannot be 1 or 2"),
        (
            &["--key-fd", "three", "x"][..],
            "is not a descriptor number",
        ),
        (&["--log-level", "loud", "x"][..], "is not one of"),
        (&["--bundle"][..], "missing argument"),
    ] {
        let o = run(sealinit(Mode::Plain, None, args));
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("usage: sealinit"), "{args:?}");
    }
    let _ = fx;
}

#[test]
fn missing_or_unreadable_inputs_exit_66() {
    let fx = fixture();
    let b = bundle_arg(&fx);
    let dir = fx.dir.path().to_str().unwrap().to_owned();
    let key_file = |name: &str, bytes: &[u8]| {
        let p = fx.path(name);
        fs::write(&p, bytes).unwrap();
        p
    };
    let (short, long, empty) = (
        key_file("short", &[1; 16]),
        key_file("long", &[1; 33]),
        key_file("empty", &[]),
    );
    let cases: [(&str, Option<&Path>, &str, &str); 7] = [
        (
            "missing bundle",
            Some(&fx.key),
            "/nonexistent/bundle",
            "bundle /nonexistent/bundle: no such file or directory",
        ),
        (
            "bundle is a directory",
            Some(&fx.key),
            &dir,
            "is a directory, not a file",
        ),
        ("key fd not open", None, &b, "key fd 3: is not open"),
        (
            "key fd is a directory",
            Some(fx.dir.path()),
            &b,
            "key fd 3: is a directory",
        ),
        (
            "short key",
            Some(&short),
            &b,
            "key fd 3: holds 16 bytes; a key is exactly 32 raw bytes",
        ),
        (
            "long key",
            Some(&long),
            &b,
            "key fd 3: holds more than 32 bytes",
        ),
        ("empty key", Some(&empty), &b, "key fd 3: is empty"),
    ];
    for (name, key, bundle, message) in cases {
        check(
            &fx,
            key,
            &["--bundle", bundle],
            Case {
                name,
                code: 66,
                message,
            },
        );
    }
}

#[test]
fn key_fd_without_eof_times_out() {
    let fx = fixture();
    // The writer sends the key but keeps the pipe open for 5 s.
    let script = format!(
        "exec {SEALINIT} --key-fd 0 --key-timeout 1 --bundle {} true < <(cat {}; sleep 5 2>/dev/null)",
        fx.bundle.display(),
        fx.key.display()
    );
    let start = std::time::Instant::now();
    let o = run({
        let mut c = std::process::Command::new("bash");
        c.args(["-c", &script]);
        c
    });
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("key fd 0: did not reach end-of-file within 1s"),
        "{}",
        stderr(&o)
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "gave up in time, not at the writer's exit"
    );
}

#[test]
fn bad_bundles_exit_65() {
    let fx = fixture();
    let sealed = fs::read(&fx.bundle).unwrap();
    let variant = |name: &str, bytes: &[u8]| {
        let p = fx.path(name);
        fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let changed = |at: usize, to: u8| {
        let mut v = sealed.clone();
        v[at] = to;
        v
    };
    let header_end = sealinit_core::bundle::parse(&sealed).unwrap().aad_end;
    let wrong_key = fx.path("wrong-key");
    fs::write(&wrong_key, [0xee; 32]).unwrap();
    const AUTH: &str = "authentication failed: wrong key, or the file was modified or truncated";
    let b = bundle_arg(&fx);
    let cases = [
        ("wrong key", wrong_key.as_path(), b.clone(), AUTH),
        (
            "tampered",
            &fx.key,
            variant(
                "tampered",
                &changed(sealed.len() - 30, sealed[sealed.len() - 30] ^ 4),
            ),
            AUTH,
        ),
        (
            "empty bundle",
            &fx.key,
            variant("empty", &[]),
            "is empty (0 bytes)",
        ),
        (
            "truncated in the header",
            &fx.key,
            variant("t-header", &sealed[..30]),
            "truncated: the file ends inside the header",
        ),
        (
            "truncated in the nonce",
            &fx.key,
            variant("t-nonce", &sealed[..header_end + 10]),
            "truncated: the file ends inside the nonce",
        ),
        // Cut inside the ciphertext or tag, the file is a shorter ciphertext
        // whose tag does not verify: the AEAD is what notices.
        (
            "truncated in the ciphertext",
            &fx.key,
            variant("t-ct", &sealed[..sealed.len() - 20]),
            AUTH,
        ),
        (
            "wrong magic",
            &fx.key,
            variant("magic", b"#!/bin/sh\necho hi\n"),
            "not a sealinit bundle",
        ),
        (
            "future version",
            &fx.key,
            variant("newer", &changed(8, 7)),
            "format version 7 is newer than this sealinit understands",
        ),
        (
            "header JSON",
            &fx.key,
            variant("json", &changed(13, b'[')),
            "header is not valid",
        ),
    ];
    for (name, key, bundle, message) in cases {
        check(
            &fx,
            Some(key),
            &["--bundle", &bundle],
            Case {
                name,
                code: 65,
                message,
            },
        );
    }

    let now = sealinit_core::time::now();
    let expired = Fixture::with_header(
        &[("TOKEN", SECRET)],
        Header::new(now - 100, Some(now - 10), None),
    );
    let eb = bundle_arg(&expired);
    let case = Case {
        name: "expired",
        code: 65,
        message: "expired at",
    };
    check(&expired, Some(&expired.key), &["--bundle", &eb], case);
}

#[test]
fn commands_that_cannot_run_exit_126_or_127() {
    let fx = fixture();
    let b = bundle_arg(&fx);
    for mode in [Mode::Pid1, Mode::Plain] {
        let o = run(sealinit(
            mode,
            Some(&fx.key),
            &["--bundle", &b, "no-such-command-xyz"],
        ));
        assert_eq!(o.status.code(), Some(127), "{mode:?}");
        assert!(
            stderr(&o).contains("command \"no-such-command-xyz\" not found"),
            "{}",
            stderr(&o)
        );

        let script = fx.path("not-executable.sh");
        fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        let s = script.to_str().unwrap();
        let o = run(sealinit(mode, Some(&fx.key), &["--bundle", &b, s]));
        assert_eq!(o.status.code(), Some(126), "{mode:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("cannot be executed: permission denied"),
            "{}",
            stderr(&o)
        );

        let o = run(sealinit(mode, None, &["/nonexistent/dir/cmd"]));
        assert_eq!(o.status.code(), Some(127), "{mode:?}");
    }
}

#[test]
fn an_environment_over_arg_max_is_refused_before_exec() {
    // 7 values of 128 KiB fit a bundle (< 1 MiB) but not the 256 KiB
    // ARG_MAX that a 1 MiB stack limit gives.
    let big = vec![b'v'; 131_000];
    let names: Vec<String> = (0..7).map(|i| format!("BIG_{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &big[..])).collect();
    let fx = Fixture::new(&entries);
    let script = format!(
        "ulimit -s 1024; exec {SEALINIT} --bundle {} true 3<{}",
        fx.bundle.display(),
        fx.key.display()
    );
    let o = run({
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &script]);
        c
    });
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("over this system's ARG_MAX of 262144"),
        "{}",
        stderr(&o)
    );
}
