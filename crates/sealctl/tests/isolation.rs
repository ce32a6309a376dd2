//! Issue #23, the launch half: nothing of the orchestrator's reaches the
//! agent. `sealctl run` hands the command no `SEALCTL_*` variable and no
//! descriptor of its own (local store and `--server`); under
//! `sealctl run --sandbox` and under the README's bubblewrap recipe
//! (copied from the README by this test), a probe agent cannot read a
//! master key or a token file of the orchestrator's, cannot reach the
//! service's Unix socket or a TCP port on the host's loopback, and sees no
//! `SEALCTL_*` variable; it does get its secret.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sealinit_testkit::api::token;
use sealinit_testkit::*;

const VALUE: &str = "isolation-VALUE-5e1d";

fn with_secret(env: &StoreDir) {
    let o = env.run(
        &["secrets", "set", "--repo", "acme/api", "TOKEN"],
        Some(VALUE.as_bytes()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Lines of `env` starting with SEALCTL_.
fn sealctl_vars(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("SEALCTL_")).collect()
}

/// Point 1: no SEALCTL_* variable and no descriptor of sealctl's reaches
/// the command, from the local store (the master key given as a path, or
/// on a descriptor) and through --server.
#[test]
fn sealctl_run_hands_the_command_nothing_of_its_own() {
    let script = "env; echo FDS $(ls /proc/self/fd | tr '\\n' ' ')";
    for backend in [Backend::Sqlite, Backend::Service] {
        let env = StoreDir::on(backend);
        env.create(&["acme/api"]);
        with_secret(&env);
        for pid_ns in [false, true] {
            let mut args = vec!["run", "--repo", "acme/api"];
            if pid_ns {
                args.push("--pid-namespace");
            }
            args.extend(["--", "sh", "-c", script]);
            let o = env.run(&args, None);
            assert!(o.status.success(), "{backend:?}: {}", stderr(&o));
            let out = stdout(&o);
            assert!(out.contains(&format!("TOKEN={VALUE}")), "{out}");
            assert_eq!(sealctl_vars(&out), Vec::<&str>::new(), "{backend:?}");
            // 0-2, and the descriptor ls reads /proc/self/fd with.
            let fds = out.lines().find(|l| l.starts_with("FDS ")).unwrap();
            assert_eq!(fds.split_whitespace().count(), 5, "{backend:?}: {fds}");
        }
    }
    // The master key on a descriptor: read, and not passed on.
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    with_secret(&env);
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "exec {} run --master-key-fd 7 --repo acme/api -- sh -c \"$0\" 7<master.key",
            workspace_bin("sealctl")
        ))
        .arg(script)
        .current_dir(env.dir.path())
        .env("SEALCTL_STORE", &env.store)
        .env_remove("SEALCTL_MASTER_KEY");
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("TOKEN={VALUE}")), "{out}");
    let fds = out.lines().find(|l| l.starts_with("FDS ")).unwrap();
    assert_eq!(fds.split_whitespace().count(), 5, "{fds}");
    assert_eq!(sealctl_vars(&out), Vec::<&str>::new());
}

/// What the orchestrator has that the agent must not: a master key and a
/// token file in its directories (one in this test's directory, one in
/// its home), the service's Unix socket, and a TCP port on loopback.
struct Orchestrator {
    env: StoreDir,
    home_dir: PathBuf,
    files: Vec<PathBuf>,
    socket: PathBuf,
    tcp: TcpListener,
    _server: Server,
}

impl Orchestrator {
    fn new() -> Self {
        let env = StoreDir::new();
        env.create(&["acme/api"]);
        with_secret(&env);
        let t = token(&env, &["admin"]);
        std::fs::write(env.path("token"), &t).unwrap();
        let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        let home_dir = tempfile::Builder::new()
            .prefix(".sealinit-isolation-")
            .tempdir_in(&home)
            .unwrap()
            .keep();
        std::fs::copy(env.path("master.key"), home_dir.join("master.key")).unwrap();
        std::fs::write(home_dir.join("token"), &t).unwrap();
        let socket = env.path("api.sock");
        let server = Server::start(&env, &["--listen", &format!("unix:{}", socket.display())]);
        let files = vec![
            env.path("master.key"),
            env.path("token"),
            home_dir.join("master.key"),
            home_dir.join("token"),
        ];
        Self {
            env,
            home_dir,
            files,
            socket,
            tcp: TcpListener::bind("127.0.0.1:0").unwrap(),
            _server: server,
        }
    }

    /// The probe: tries each, and says what it managed.
    fn probe(&self) -> String {
        let mut s = String::from("echo TOKEN=$TOKEN\n");
        for f in &self.files {
            s.push_str(&format!(
                "cat {} >/dev/null 2>&1 && echo 'READ {}'\n",
                f.display(),
                f.display()
            ));
        }
        s.push_str(&format!(
            "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{}\"); print(\"CONNECTED unix\")' 2>/dev/null\n",
            self.socket.display()
        ));
        s.push_str(&format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {}), timeout=2); print(\"CONNECTED tcp\")' 2>/dev/null\n",
            self.tcp.local_addr().unwrap().port()
        ));
        s.push_str("env | grep '^SEALCTL_' && echo SAW-SEALCTL\nexit 0\n");
        s
    }

    /// The probe's findings must be none, and it must have had its secret.
    fn check(&self, how: &str, o: &Output) {
        let out = stdout(o);
        assert!(o.status.success(), "{how}: {}\n{out}", stderr(o));
        assert!(out.contains(&format!("TOKEN={VALUE}")), "{how}: {out}");
        for bad in ["READ", "CONNECTED", "SAW-SEALCTL", "SEALCTL_"] {
            assert!(!out.contains(bad), "{how}: {out}");
        }
        // The probe's own control: from the host, each is reachable.
        for f in &self.files {
            assert!(std::fs::read(f).is_ok());
        }
        assert!(std::os::unix::net::UnixStream::connect(&self.socket).is_ok());
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home_dir);
    }
}

/// Points 2 and 3: `sealctl run --sandbox`.
#[test]
fn a_probe_agent_under_sealctl_run_sandbox_finds_nothing() {
    let o = Orchestrator::new();
    let probe = o.probe();
    let out = o.env.run(
        &[
            "run",
            "--repo",
            "acme/api",
            "--sandbox",
            "--",
            "sh",
            "-c",
            &probe,
        ],
        None,
    );
    o.check("sealctl run --sandbox", &out);
    // sealinit is the sandbox's PID 1 and the agent its child.
    let out = o.env.run(
        &[
            "run",
            "--repo",
            "acme/api",
            "--sandbox",
            "--",
            "sh",
            "-c",
            "echo $$ $(cat /proc/1/comm)",
        ],
        None,
    );
    assert_eq!(stdout(&out).trim(), "2 init", "{}", stderr(&out));
    // --share-net keeps the host's network: the port is reachable then.
    let port = o.tcp.local_addr().unwrap().port();
    let script = format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2); print(\"CONNECTED\")'"
    );
    let out = o.env.run(
        &[
            "run",
            "--repo",
            "acme/api",
            "--sandbox",
            "--share-net",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    assert_eq!(stdout(&out).trim(), "CONNECTED", "{}", stderr(&out));
}

/// Signals sent to `sealctl run --sandbox` reach the agent (bubblewrap
/// does not forward them; sealctl does), and the exit status is the
/// agent's.
#[test]
fn sealctl_run_sandbox_forwards_signals() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    with_secret(&env);
    let mut child = env
        .cmd(&[
            "run",
            "--repo",
            "acme/api",
            "--sandbox",
            "--",
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo up; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    kill(child.id() as i32, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

/// The README's bubblewrap recipe, as the README shows it.
fn readme_recipe() -> PathBuf {
    let root = workspace_root();
    let script = root.join("examples/bwrap-launch.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```sh\n{text}```")),
        "README does not show examples/bwrap-launch.sh as it is"
    );
    script
}

/// Points 2 and 3: the README's recipe, run as written.
#[test]
fn a_probe_agent_under_the_readme_recipe_finds_nothing() {
    let script = readme_recipe();
    let o = Orchestrator::new();
    let bin = Path::new(workspace_bin("sealctl"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script)
        .args(["acme/api", "sh", "-c", &o.probe()])
        .current_dir(o.env.dir.path())
        .env("PATH", path)
        .env("SEALCTL_STORE", &o.env.store)
        .env("SEALCTL_MASTER_KEY", o.env.path("master.key"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    o.check("README recipe", &out);
}
