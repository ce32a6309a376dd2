//! sealinit in real sandboxes: an OCI container run by runc (busybox rootfs,
//! static sealinit, bundle bind-mounted read-only, key on fd 3 through
//! `--preserve-fds 1`), and bubblewrap. Needs root, runc, busybox-static and
//! bubblewrap (installed by .ci/run).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sealinit_testkit::*;

const SEALINIT: &str = env!("CARGO_BIN_EXE_sealinit");

/// Builds the static sealinit once (container/build.sh: musl when the
/// target is installed) and returns it.
fn static_sealinit() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_static(None).0)
}

/// Whether this machine has the musl target (as container/build.sh checks).
fn musl_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| stdout(&o).lines().any(|l| l == "x86_64-unknown-linux-musl"))
}

#[test]
fn build_sh_prefers_musl_and_falls_back_to_glibc_and_both_run_their_command() {
    let fx = Fixture::new(&[("GREETING", b"hello from a static build")]);
    let (auto, libc) = build_static(None);
    assert_eq!(libc, if musl_installed() { "musl" } else { "glibc" });
    let (gnu, gnu_libc) = build_static(Some("gnu"));
    assert_eq!(gnu_libc, "glibc");
    for bin in [&auto, &gnu] {
        let file = Command::new("file").arg(bin).output().unwrap();
        assert!(
            stdout(&file).contains("static-pie linked"),
            "{}",
            stdout(&file)
        );
        for mode in [Mode::Plain, Mode::Pid1] {
            let b = fx.bundle.to_str().unwrap();
            let args: Vec<std::ffi::OsString> = [
                "--bundle",
                b,
                "sh",
                "-c",
                "echo \"$GREETING\" \"$1\"",
                "sh",
                "arg-1",
            ]
            .iter()
            .map(Into::into)
            .collect();
            let program: Vec<&str> = match mode {
                Mode::Pid1 => vec![
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    bin.to_str().unwrap(),
                ],
                Mode::Plain => vec![bin.to_str().unwrap()],
            };
            let o = run(with_key_on_fd3(Some(&fx.key), &program, &args));
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}: {}",
                bin.display(),
                stderr(&o)
            );
            assert_eq!(
                stdout(&o),
                "hello from a static build arg-1\n",
                "{}",
                bin.display()
            );
        }
    }
}

struct Container {
    fx: Fixture,
    id: String,
}

impl Container {
    /// Lays out an OCI bundle running `command` under sealinit.
    fn new(entries: &[(&str, &[u8])], sealinit_args: &[&str], command: &[&str]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let fx = Fixture::new(entries);
        let work = fx.path("work");
        fs::create_dir(&work).unwrap();
        // The bundle's directory is what the container sees: the bundle
        // alone, in a directory of its own (never beside the key).
        let secrets = fx.path("secrets");
        fs::create_dir(&secrets).unwrap();
        fs::copy(&fx.bundle, secrets.join("sealinit.bundle")).unwrap();
        let mut cmd = Command::new(workspace_root().join("container/oci/make-bundle.sh"));
        cmd.arg(fx.path("oci"))
            .arg(secrets.join("sealinit.bundle"))
            .arg("--work")
            .arg(&work);
        for a in sealinit_args {
            cmd.args(["--sealinit-arg", a]);
        }
        cmd.arg("--")
            .args(command)
            .env("SEALINIT_STATIC", static_sealinit());
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "make-bundle.sh: {}", stderr(&o));
        let id = format!(
            "sealinit-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { fx, id }
    }

    /// `runc run --preserve-fds 1 ID 3<key`.
    fn command(&self) -> Command {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            r#"exec runc run --preserve-fds 1 -b "$1" "$2" 3<"$3""#,
            "sh",
        ])
        .arg(self.fx.path("oci"))
        .arg(&self.id)
        .arg(&self.fx.key)
        .stdin(Stdio::null());
        c
    }

    fn run(&self) -> Output {
        self.command().output().unwrap()
    }

    fn work(&self, name: &str) -> PathBuf {
        self.fx.path("work").join(name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .output();
    }
}

#[test]
fn runc_agent_sees_its_secrets_and_sealinit_is_pid_1_without_the_key_fd() {
    let c = Container::new(
        &[("TOKEN", b"runc-secret"), ("MULTI", b"a\nb")],
        &[],
        &[
            "sh",
            "-c",
            // No pipe in the shell: its pipe fds would show up in the list.
            "echo ${#TOKEN} ${#MULTI}; cat /proc/1/comm; ls /proc/$$/fd; exit 9",
        ],
    );
    let o = c.run();
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert_eq!(stdout(&o), "11 3\nsealinit\n0\n1\n2\n");
}

#[test]
fn runc_kill_term_reaches_the_agent_and_its_status_is_the_containers() {
    let c = Container::new(
        &[],
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term > /work/log; exit 42' TERM; : > /work/ready; sleep 1000 & wait",
        ],
    );
    let child = c
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&c.work("ready"));
    let k = Command::new("runc")
        .args(["kill", &c.id, "TERM"])
        .output()
        .unwrap();
    assert!(k.status.success(), "runc kill: {}", stderr(&k));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(42), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(c.work("log")).unwrap(), "got-term\n");
}

#[test]
fn runc_orphan_storm_leaves_no_zombie() {
    let script = "i=0; while [ $i -lt 1000 ]; do (true &); i=$((i+1)); done; n=0; \
        while [ $n -lt 500 ]; do z=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l); \
        [ $z = 0 ] && { echo zombies=0; exit 0; }; n=$((n+1)); sleep 0.01; done; echo zombies=$z; exit 1";
    let c = Container::new(&[], &[], &["sh", "-c", script]);
    let o = c.run();
    assert_eq!(stdout(&o), "zombies=0\n", "{}", stderr(&o));
}

#[test]
fn runc_exit_is_prompt_when_background_work_lingers() {
    // The agent leaves a TERM-obeying and a TERM-ignoring process behind and
    // exits 3: the first ends at SIGTERM, the second at SIGKILL after the
    // 1 s grace period; the container exits 3 right after.
    let script = "sleep 1000 & (trap '' TERM; : > /work/ready; exec sleep 1000) & \
                  while [ ! -e /work/ready ]; do sleep 0.01; done; exit 3";
    let c = Container::new(&[], &["--grace=1"], &["sh", "-c", script]);
    let started = Instant::now();
    let o = c.run();
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        took >= Duration::from_secs(1),
        "the straggler was not given its grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "container exit took {took:?}"
    );
}

#[test]
fn bwrap_passes_the_key_fd_and_runs_sealinit_as_pid_1() {
    let fx = Fixture::new(&[("TOKEN", b"bwrap-secret")]);
    // The README's shape: nothing of the host but /usr, the key on a pipe.
    let script = r#"cat "$3" | bwrap --unshare-all --as-pid-1 --die-with-parent \
        --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
        --proc /proc --dev /dev --tmpfs /tmp --tmpfs /run \
        --ro-bind "$1" /run/sealinit.bundle --ro-bind "$2" /init \
        /init --bundle /run/sealinit.bundle -- sh -c 'echo ${#TOKEN} $$; cat /proc/1/comm; ls /proc/$$/fd; exit 5' 3<&0 0</dev/null"#;
    let o = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&fx.bundle)
        .arg(SEALINIT)
        .arg(&fx.key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "12 2\ninit\n0\n1\n2\n");
}

#[test]
fn key_file_is_read_then_removed_and_must_be_private() {
    let fx = Fixture::new(&[("TOKEN", b"file-secret")]);
    let b = fx.bundle.to_str().unwrap();
    let key_copy = fx.path("key-file");
    fs::copy(&fx.key, &key_copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key_copy, fs::Permissions::from_mode(0o640)).unwrap();
    let k = key_copy.to_str().unwrap();
    let o = run(sealinit(
        Mode::Pid1,
        None,
        &["--key-file", k, "--bundle", b, "sh", "-c", "echo ${#TOKEN}"],
    ));
    assert_eq!(o.status.code(), Some(66));
    assert!(
        stderr(&o).contains("is readable by group or others (mode 640)"),
        "{}",
        stderr(&o)
    );
    assert!(key_copy.exists(), "a refused key file is left alone");

    fs::set_permissions(&key_copy, fs::Permissions::from_mode(0o400)).unwrap();
    let o = run(sealinit(
        Mode::Pid1,
        None,
        &["--key-file", k, "--bundle", b, "sh", "-c", "echo ${#TOKEN}"],
    ));
    assert_eq!(stdout(&o), "11\n", "{}", stderr(&o));
    assert!(!key_copy.exists(), "the key file was not removed");
    let o = run(sealinit(
        Mode::Plain,
        None,
        &["--key-file", k, "--key-fd", "3", "--bundle", b, "true"],
    ));
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn docker_style_key_on_stdin_gives_the_command_dev_null() {
    let fx = Fixture::new(&[("TOKEN", b"stdin-secret")]);
    let o = Command::new(SEALINIT)
        .args([
            "--key-fd",
            "0",
            "--bundle",
            fx.bundle.to_str().unwrap(),
            "sh",
            "-c",
            "echo ${#TOKEN}; cat; readlink /proc/self/fd/0",
        ])
        .stdin(fs::File::open(&fx.key).unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "12\n/dev/null\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the command gets /dev/null as fd 0"),
        "{}",
        stderr(&o)
    );
}

/// README "Running in a sandbox": the runc recipe, run as written
/// (`examples/runc-launch.sh`, shown verbatim in the README): the key goes
/// through a pipe, the host's bundle is gone once sealinit has read it, the
/// agent sees its secrets, and the container's status is the agent's.
#[test]
fn the_readme_runc_recipe_works_as_written() {
    let root = workspace_root();
    let script = fs::read_to_string(root.join("examples/runc-launch.sh")).unwrap();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(script.trim_end()),
        "README does not show examples/runc-launch.sh as it is"
    );
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let sealctl = workspace_bin("sealctl");
    let store = |args: &[&str], stdin: &str| {
        let mut c = Command::new(sealctl);
        c.args(args)
            .env("SEALCTL_STORE", dir.join("store.db"))
            .env("SEALCTL_MASTER_KEY", dir.join("master.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    store(&["store", "init"], "");
    store(&["repos", "create", "acme/api"], "");
    store(
        &["secrets", "set", "--repo", "acme/api", "API_TOKEN"],
        "tok-recipe-123",
    );
    let oci = dir.join("oci");
    let work = dir.join("work");
    fs::create_dir(&work).unwrap();
    let o = Command::new(root.join("container/oci/make-bundle.sh"))
        .arg(&oci)
        .arg(oci.join("secrets/sealinit.bundle"))
        .args(["--work", work.to_str().unwrap()])
        .args(["--sealinit-arg", "--ready-fd=4", "--"])
        .args(["sh", "-c", r#"printf '%s' "$API_TOKEN" > /work/seen; ls /run/secrets > /work/secrets-dir; exit 42"#])
        .env("SEALINIT_STATIC", static_sealinit())
        .output()
        .unwrap();
    assert!(o.status.success(), "make-bundle.sh: {}", stderr(&o));
    let path = format!(
        "{}:{}",
        Path::new(sealctl).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let id = format!("sealinit-recipe-{}", std::process::id());
    let o = Command::new(root.join("examples/runc-launch.sh"))
        .args(["acme/api", &id, oci.to_str().unwrap()])
        .env("PATH", path)
        .env("SEALCTL_STORE", dir.join("store.db"))
        .env("SEALCTL_MASTER_KEY", dir.join("master.key"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    assert_eq!(o.status.code(), Some(42), "{}", stderr(&o));
    assert!(stderr(&o).contains("sealinit: ready"), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(work.join("seen")).unwrap(),
        "tok-recipe-123"
    );
    assert!(
        !oci.join("secrets/sealinit.bundle").exists(),
        "the host kept the bundle"
    );
    assert!(!oci.join("ready").exists());
    // No key file anywhere in the launch directory.
    let files: Vec<String> = fs::read_dir(&oci)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| ["config.json", "rootfs", "secrets"].contains(&f.as_str())),
        "{files:?}"
    );
}
