//! Secret hygiene (issue #4): once the command runs, sealinit's memory
//! holds neither the key nor any value; sealinit is non-dumpable and its
//! command is not; only the named descriptors reach the command; bundles
//! can be removed and bound to a label; nothing secret is ever printed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");
use sealinit_core::bundle::Header;

#[test]
fn no_key_and_no_value_remain_in_sealinit_memory() {
    let values: Vec<String> = (0..12).map(|_| random_text(48)).collect();
    let names: Vec<String> = (0..values.len()).map(|i| format!("SECRET_{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let fx = Fixture::new(&entries);
    let key = fx.key_bytes();
    // Halves, not whole strings: a freed heap chunk has its first 16 bytes
    // overwritten by the allocator, and must still be found.
    let mut needles: Vec<&[u8]> = vec![&key[..16], &key[16..]];
    let mut labels = vec!["the key".to_owned(), "the key".to_owned()];
    for (n, v) in names.iter().zip(&values) {
        needles.extend([&v.as_bytes()[..24], &v.as_bytes()[24..]]);
        labels.extend([n.clone(), n.clone()]);
    }

    for mode in [Mode::Pid1, Mode::Plain] {
        let ready = fx.path("ready");
        let _ = fs::remove_file(&ready);
        let script = format!(": > {}; exec sleep 1000", ready.display());
        let b = fx.bundle.to_str().unwrap();
        let mut child = sealinit(
            mode,
            Some(&fx.key),
            &["--bundle", b, "--log-level", "trace", "sh", "-c", &script],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&ready);

        let found = needles_in_memory(pid, &needles);
        // Control: the command itself does hold the values, so the scan
        // would see them if they were in sealinit.
        let command_pid: i32 = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let in_command = needles_in_memory(command_pid, &needles[2..]);

        kill(pid, "KILL");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            in_command.len(),
            2 * values.len(),
            "{mode:?}: control scan failed"
        );
        let what: Vec<&str> = found.iter().map(|&i| labels[i].as_str()).collect();
        assert!(
            found.is_empty(),
            "{mode:?}: sealinit's memory still holds {what:?}"
        );
    }
}

#[test]
fn sealinit_is_not_dumpable_but_its_command_is() {
    // Run as an unprivileged user: /proc/PID files of a non-dumpable
    // process belong to root, so that user's other processes cannot read
    // sealinit's memory or environment.
    let fx = Fixture::new(&[("TOKEN", b"x")]);
    fs::set_permissions(fx.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    for f in [&fx.key, &fx.bundle] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let ready = fx.path("ready");
    let script = format!(": > {}; exec sleep 1000", ready.display());
    let mut child = with_key_on_fd3(
        Some(&fx.key),
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            SEALINIT,
        ],
        &[
            "--bundle".into(),
            fx.bundle.clone().into(),
            "sh".into(),
            "-c".into(),
            script.into(),
        ],
    )
    .stdin(Stdio::null())
    .spawn()
    .unwrap();
    let pid = child.id() as i32;
    wait_for_file(&ready);
    let owner = |p: i32| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/proc/{p}/environ")).unwrap().uid()
    };
    let command: i32 = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limits = |p: i32| {
        let text = fs::read_to_string(format!("/proc/{p}/limits")).unwrap();
        text.lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap()
            .to_owned()
    };
    let (sealinit_owner, command_owner) = (owner(pid), owner(command));
    let (sealinit_core, command_core) = (limits(pid), limits(command));
    let _ = child.kill();
    let _ = child.wait();
    kill(command, "KILL");
    assert_eq!(sealinit_owner, 0, "sealinit is dumpable");
    assert_eq!(command_owner, 65534, "the command is not dumpable");
    assert!(
        sealinit_core.split_whitespace().nth(4) == Some("0"),
        "{sealinit_core}"
    );
    let own = fs::read_to_string("/proc/self/limits").unwrap();
    let own = own
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        command_core, own,
        "the command gets the inherited core limit back"
    );
}

#[test]
fn only_stdio_and_kept_descriptors_reach_the_command() {
    let fx = Fixture::new(&[("TOKEN", b"x")]);
    let b = fx.bundle.to_str().unwrap();
    for mode in [Mode::Pid1, Mode::Plain] {
        let prefix = match mode {
            Mode::Pid1 => "unshare --pid --fork --mount-proc ",
            Mode::Plain => "",
        };
        // fds 5 and 7 are inherited; 7 is kept; 3 carries the key.
        let script = format!(
            "exec {prefix}{SEALINIT} --keep-fd 7 --bundle {b} sh -c 'ls /proc/$$/fd' 3<{} 5</dev/null 7</etc/hostname",
            fx.key.display()
        );
        let o = run({
            let mut c = Command::new("sh");
            c.args(["-c", &script]).stdin(Stdio::null());
            c
        });
        assert!(o.status.success(), "{mode:?}: {}", stderr(&o));
        let mut fds: Vec<i32> = stdout(&o)
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        fds.sort();
        assert_eq!(fds, [0, 1, 2, 7], "{mode:?}");
    }
}

#[test]
fn remove_bundle_unlinks_and_tolerates_a_read_only_mount() {
    let fx = Fixture::new(&[("TOKEN", b"abc")]);
    let b = fx.bundle.to_str().unwrap().to_owned();
    let o = run(sealinit(
        Mode::Plain,
        Some(&fx.key),
        &[
            "--remove-bundle",
            "--bundle",
            &b,
            "sh",
            "-c",
            "echo ${#TOKEN}",
        ],
    ));
    assert_eq!(stdout(&o), "3\n", "{}", stderr(&o));
    assert!(!fx.bundle.exists(), "bundle not removed");

    let fx = Fixture::new(&[("TOKEN", b"abc")]);
    let d = fx.dir.path().display();
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && \
         exec {SEALINIT} --remove-bundle --bundle {} sh -c 'echo ${{#TOKEN}}' 3<{}",
        fx.bundle.display(),
        fx.key.display()
    );
    let o = run({
        let mut c = Command::new("unshare");
        c.args(["--mount", "sh", "-c", &script]);
        c
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "3\n");
    assert!(
        stderr(&o).contains("--remove-bundle: cannot remove"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(fx.bundle.exists());
}

#[test]
fn expect_label_binds_a_bundle_to_its_sandbox() {
    let now = sealinit_core::time::now();
    let labelled = Fixture::with_header(
        &[("T", b"x")],
        Header::new(now, None, Some("acme/api".into())),
    );
    let unlabelled = Fixture::new(&[("T", b"x")]);
    for (fx, label, code, message) in [
        (&labelled, "acme/api", 0, ""),
        (
            &labelled,
            "acme/web",
            65,
            "label is \"acme/api\", not the expected \"acme/web\"",
        ),
        (
            &unlabelled,
            "acme/api",
            65,
            "label is absent, not the expected \"acme/api\"",
        ),
    ] {
        let b = fx.bundle.to_str().unwrap();
        let marker = fx.path("ran");
        let m = marker.to_str().unwrap();
        let o = run(sealinit(
            Mode::Pid1,
            Some(&fx.key),
            &["--expect-label", label, "--bundle", b, "touch", m],
        ));
        assert_eq!(o.status.code(), Some(code), "{label}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{}", stderr(&o));
        assert_eq!(marker.exists(), code == 0);
        let _ = fs::remove_file(marker);
    }
    // The same check from the environment.
    let b = labelled.bundle.to_str().unwrap();
    let o = run({
        let mut c = sealinit(Mode::Plain, Some(&labelled.key), &["--bundle", b, "true"]);
        c.env("SEALINIT_EXPECT_LABEL", "other/repo");
        c
    });
    assert_eq!(o.status.code(), Some(65));
}

#[test]
fn code_loading_names_need_an_explicit_allow() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let sealctl = |args: &[&str]| {
        run({
            let mut c = Command::new(workspace_bin("sealctl"));
            c.args(args).current_dir(d);
            c
        })
    };
    assert!(sealctl(&["keygen", "--out", "k"]).status.success());
    for (content, allow, code, message) in [
        (
            "LD_PRELOAD=/tmp/x.so\n",
            None,
            65,
            "name LD_PRELOAD changes how programs load code; refused unless sealed with --allow-name LD_PRELOAD",
        ),
        (
            "BASH_ENV=/tmp/x\n",
            None,
            65,
            "name BASH_ENV changes how programs load code",
        ),
        (
            "ENV=/tmp/x\n",
            None,
            65,
            "name ENV changes how programs load code",
        ),
        (
            "NODE_OPTIONS=--require=x\n",
            None,
            65,
            "name NODE_OPTIONS changes",
        ),
        (
            "LD_PRELOAD=/tmp/x.so\n",
            Some("LD_PRELOAD"),
            0,
            "sealed 1 secrets",
        ),
        (
            "LD_PRELOAD=x\nLD_LIBRARY_PATH=y\n",
            Some("LD_PRELOAD"),
            65,
            "name LD_LIBRARY_PATH changes",
        ),
        (
            "SEALINIT_KEY_FD=4\n",
            Some("SEALINIT_KEY_FD"),
            65,
            "name \"SEALINIT_KEY_FD\" is reserved",
        ),
        (
            "ENVIRONMENT=prod\nLDAP_URL=x\n",
            None,
            0,
            "sealed 2 secrets",
        ),
    ] {
        fs::write(d.join("in.env"), content).unwrap();
        let mut args = vec![
            "seal",
            "--key",
            "k",
            "--out",
            "b",
            "--from-env-file",
            "in.env",
        ];
        if let Some(name) = allow {
            args.extend(["--allow-name", name]);
        }
        let o = sealctl(&args);
        assert_eq!(o.status.code(), Some(code), "{content:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{content:?}: {}", stderr(&o));
    }
}

#[test]
fn a_successful_run_at_trace_level_prints_names_not_values() {
    let value = random_text(40);
    let fx = Fixture::new(&[("API_TOKEN", value.as_bytes())]);
    let b = fx.bundle.to_str().unwrap();
    for mode in [Mode::Pid1, Mode::Plain] {
        let o = run(sealinit(
            mode,
            Some(&fx.key),
            &[
                "--log-level",
                "trace",
                "--setup",
                "true",
                "--bundle",
                b,
                "true",
            ],
        ));
        assert!(o.status.success());
        let err = stderr(&o);
        assert!(err.contains("API_TOKEN"), "names appear at debug: {err}");
        assert!(
            !err.contains(&value) && !stdout(&o).contains(&value),
            "{mode:?}: value printed"
        );
    }
}

#[test]
fn a_terminal_or_an_unreadable_file_is_refused_with_66() {
    let fx = Fixture::new(&[("T", b"x")]);
    let b = fx.bundle.to_str().unwrap();
    let script = format!("exec {SEALINIT} --bundle {b} true 3<>/dev/ptmx");
    let o = run({
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    });
    assert_eq!(o.status.code(), Some(66));
    assert!(
        stderr(&o)
            .contains("key fd 3: is a terminal; pass the raw key bytes through a pipe or a file"),
        "{}",
        stderr(&o)
    );

    // The bundle stays 0600 root: an unprivileged sealinit cannot read it.
    fs::set_permissions(fx.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&fx.key, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&fx.bundle, fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(with_key_on_fd3(
        Some(&fx.key),
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            SEALINIT,
        ],
        &["--bundle".into(), b.into(), "true".into()],
    ));
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("bundle {b}: permission denied")),
        "{}",
        stderr(&o)
    );
}
