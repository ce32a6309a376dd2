//! Helpers shared by the workspace's integration tests: sealed fixtures, running
//! sealinit as a real PID 1 (`unshare --pid --fork --mount-proc`) or as a
//! plain process with the key on fd 3, and file-based synchronisation.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use sealinit_core::bundle::Delivery;
use sealinit_core::bundle::{self, Entry, Header};
use sealinit_core::secret::{SecretKey, SecretValue};

pub mod api;
pub mod webdriver;

/// The path of a workspace binary (`sealinit`, `sealctl`) built into the
/// same target directory as the running test (`target/<profile>/`). A test
/// of one package that runs the other package's binary needs it built:
/// `cargo test` at the workspace root builds every binary first.
pub fn workspace_bin(name: &str) -> &'static str {
    static BINS: std::sync::Mutex<Vec<(String, &'static str)>> = std::sync::Mutex::new(Vec::new());
    let mut bins = BINS.lock().unwrap();
    if let Some((_, p)) = bins.iter().find(|(n, _)| n == name) {
        return p;
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test` at the workspace root (or `cargo build -p {name}` first)",
        path.display()
    );
    let leaked: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
    bins.push((name.to_owned(), leaked));
    leaked
}

/// The workspace root (where `container/`, `examples/` and `target/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `container/build.sh` (with `SEALINIT_LIBC=libc` if given) and
/// returns the static sealinit it built and which libc it used ("musl" or
/// "glibc"), from the script's last line.
pub fn build_static(libc: Option<&str>) -> (PathBuf, String) {
    let root = workspace_root();
    let mut cmd = Command::new(root.join("container/build.sh"));
    if let Some(l) = libc {
        cmd.env("SEALINIT_LIBC", l);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "container/build.sh: {}", stderr(&o));
    let out = stdout(&o);
    let last = out.lines().last().expect("build.sh prints its result");
    let path = last.split(' ').next().unwrap();
    let libc = last
        .rsplit_once(", ")
        .map(|(_, l)| l.trim_end_matches(')').to_owned())
        .unwrap();
    (root.join(path), libc)
}

/// A temporary directory holding a key and a bundle sealed under it.
#[derive(Debug)]
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

impl Fixture {
    pub fn new(entries: &[(&str, &[u8])]) -> Self {
        Self::with_header(entries, Header::new(sealinit_core::time::now(), None, None))
    }

    pub fn with_header(entries: &[(&str, &[u8])], header: Header) -> Self {
        let entries: Vec<_> = entries
            .iter()
            .map(|&(n, v)| (n, v, Delivery::Env))
            .collect();
        Self::with_deliveries(&entries, header)
    }

    /// A bundle whose entries have deliveries (a version 2 header, with a
    /// repository, for any but env).
    pub fn with_deliveries(entries: &[(&str, &[u8], Delivery)], header: Header) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut key_bytes = [0u8; 32];
        getrandom::fill(&mut key_bytes).unwrap();
        let key = SecretKey::from_bytes_for_tests(&key_bytes).unwrap();
        let entries: Vec<Entry> = entries
            .iter()
            .map(|&(n, v, delivery)| Entry {
                name: n.into(),
                value: SecretValue::from(v.to_vec()),
                delivery,
            })
            .collect();
        let sealed = bundle::seal(&key, &header, &entries, &[9; 24]).unwrap();
        let key_path = dir.path().join("key");
        let bundle_path = dir.path().join("bundle");
        std::fs::write(&key_path, key_bytes).unwrap();
        std::fs::write(&bundle_path, sealed).unwrap();
        Self {
            dir,
            key: key_path,
            bundle: bundle_path,
        }
    }

    pub fn key_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.key).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// How to run sealinit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// PID 1 of a fresh PID namespace.
    Pid1,
    /// An ordinary process (a child subreaper).
    Plain,
}

/// A command that runs `prefix... args...` with `key` (if any) open on fd 3.
/// The redirection is done by `sh` so that the tests need no `unsafe`.
pub fn with_key_on_fd3(key: Option<&Path>, program: &[&str], args: &[OsString]) -> Command {
    let mut cmd = Command::new("sh");
    match key {
        Some(k) => {
            cmd.args(["-c", r#"k=$1; shift; exec "$@" 3<"$k""#, "sh"]);
            cmd.arg(k);
        }
        None => {
            cmd.args(["-c", r#"exec "$@""#, "sh"]);
        }
    }
    cmd.args(program).args(args);
    cmd
}

/// `sealinit args...` in `mode`, with `key` on fd 3.
pub fn sealinit(mode: Mode, key: Option<&Path>, args: &[&str]) -> Command {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    sealinit_os(mode, key, &args)
}

pub fn sealinit_os(mode: Mode, key: Option<&Path>, args: &[OsString]) -> Command {
    let program: &[&str] = match mode {
        Mode::Pid1 => &[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            workspace_bin("sealinit"),
        ],
        Mode::Plain => &[workspace_bin("sealinit")],
    };
    let mut cmd = with_key_on_fd3(key, program, args);
    cmd.stdin(Stdio::null());
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("spawn")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a command exited with `code` and said `message` on stderr.
pub fn fails(o: &Output, code: i32, message: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert!(
        stderr(o).contains(message),
        "want {message:?} in {}",
        stderr(o)
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Parses `env -0` output into a map.
pub fn parse_env0(out: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    out.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=').unwrap();
            (kv[..eq].to_vec(), kv[eq + 1..].to_vec())
        })
        .collect()
}

/// Waits until `path` exists (the child's "ready" signal).
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The host pid of sealinit for a child spawned by `sealinit(mode, ..)`:
/// the process itself in plain mode (the `sh` wrapper execs), or the only
/// child of `unshare` in PID-1 mode.
pub fn sealinit_pid(child: &Child, mode: Mode) -> i32 {
    let pid = child.id() as i32;
    if mode == Mode::Plain {
        return pid;
    }
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(first) = text.split_whitespace().next() {
            return first.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "unshare never forked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn kill(pid: i32, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -s {sig} {pid}");
}

/// Random printable text, distinctive enough to search memory for.
pub fn random_text(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[*b as usize % 36]))
        .collect()
}

/// Which of `needles` occur anywhere in the readable memory of `pid`
/// (regions that may have been written: writable or anonymous ones).
pub fn needles_in_memory(pid: i32, needles: &[&[u8]]) -> Vec<usize> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = Vec::new();
    let mut scanned = 0usize;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (perms, inode) = (f[1], f[4]);
        let name = f.get(5).copied().unwrap_or("");
        // Read-only file mappings hold file contents, never runtime data.
        if !perms.starts_with('r')
            || (!perms.contains('w') && inode != "0")
            || name == "[vvar]"
            || name == "[vsyscall]"
        {
            continue;
        }
        let (start, end) = f[0].split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut buf, start).is_err() {
            continue;
        }
        scanned += buf.len();
        for (i, n) in needles.iter().enumerate() {
            if !found.contains(&i) && buf.windows(n.len()).any(|w| w == *n) {
                found.push(i);
            }
        }
    }
    assert!(scanned > 0, "nothing of {pid} was readable");
    found
}

pub fn os(bytes: Vec<u8>) -> OsString {
    OsString::from_vec(bytes)
}

/// A throwaway PostgreSQL server for a test binary: `initdb` and `pg_ctl`
/// (Debian's `postgresql` package) as the unprivileged `postgres` user, in
/// a temporary directory, on a Unix socket only. It is started on first
/// use and stopped (and its directory removed) by a watchdog within a
/// second of the test process's exit.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    next: std::sync::atomic::AtomicUsize,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The test binary's PostgreSQL server, started on first call.
pub fn pg_server() -> &'static PgServer {
    static SERVER: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

impl PgServer {
    fn start() -> Self {
        assert!(
            Path::new(PG_BIN).join("pg_ctl").exists(),
            "PostgreSQL 15 is not installed (apt-get install postgresql): the store tests run against it"
        );
        let dir = tempfile::Builder::new()
            .prefix("sealinit-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let sh = |script: &str| {
            let o = Command::new("sh")
                .args(["-c", script, "sh"])
                .arg(&dir)
                .arg(PG_BIN)
                .output()
                .unwrap();
            assert!(o.status.success(), "{script}: {}", stderr(&o));
        };
        sh(
            r#"chown postgres "$1" && runuser -u postgres -- "$2/initdb" -D "$1/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null"#,
        );
        sh(
            r#"runuser -u postgres -- "$2/pg_ctl" -D "$1/data" -w -l "$1/log" -o "-c listen_addresses='' -c unix_socket_directories='$1' -c fsync=off -c max_connections=300" start >/dev/null"#,
        );
        // The watchdog: stops the server once this process is gone.
        let watchdog = format!(
            r#"while kill -0 {} 2>/dev/null; do sleep 1; done; runuser -u postgres -- "$2/pg_ctl" -D "$1/data" -m immediate stop >/dev/null 2>&1; rm -rf "$1""#,
            std::process::id()
        );
        // `setsid --fork` returns at once, leaving the watchdog running.
        let started = Command::new("setsid")
            .args(["--fork", "sh", "-c", &watchdog, "sh"])
            .arg(&dir)
            .arg(PG_BIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(started.success(), "cannot start the PostgreSQL watchdog");
        Self {
            dir,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A new, empty database; its connection string (key/value form).
    pub fn fresh_database(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let o = Command::new(Path::new(PG_BIN).join("createdb"))
            .args(["-h", self.dir.to_str().unwrap(), "-U", "postgres", &name])
            .output()
            .unwrap();
        assert!(o.status.success(), "createdb: {}", stderr(&o));
        format!("host={} user=postgres dbname={name}", self.dir.display())
    }

    /// Stops the server abruptly (`pg_ctl stop -m immediate`: a crash).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Starts the stopped server again.
    pub fn start_again(&self) {
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=off -c max_connections=300",
            self.dir.display()
        );
        let log = format!("{}/log", self.dir.display());
        self.pg_ctl(&["-l", &log, "-o", &opts, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let o = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .args(["-D", &format!("{}/data", self.dir.display()), "-w"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "pg_ctl {args:?}: {}", stderr(&o));
    }
}

/// The store backends the store tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// `sealctl --server`: the service (`sealctl serve`) on a SQLite store,
    /// reached with an admin token; store-only commands do not apply.
    Service,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// The store backends, and the service in front of one: what the CLI tests
/// that apply to `sealctl --server` run against.
pub const CLIENTS: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::Service];

/// A running `sealctl serve` a [`StoreDir`] routes its commands to.
#[derive(Debug)]
pub struct ServiceProc {
    pub child: std::process::Child,
    pub base: String,
    pub token: String,
}

/// A temporary directory holding a sealctl store (`data/store.db`, or a
/// fresh PostgreSQL database) and its master key (`master.key`); sealctl
/// runs there with both in its environment, its temporary files in `tmp/`,
/// trace logging on.
#[derive(Debug)]
pub struct StoreDir {
    pub dir: tempfile::TempDir,
    /// `SEALCTL_STORE`.
    pub store: String,
    pub backend: Backend,
    /// With [`Backend::Service`]: the service every command goes to.
    pub service: Option<ServiceProc>,
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        if let Some(s) = &mut self.service {
            kill(s.child.id() as i32, "TERM");
            let _ = s.child.wait();
        }
    }
}

impl StoreDir {
    /// A fresh directory with an initialised SQLite store.
    pub fn new() -> Self {
        Self::on(Backend::Sqlite)
    }

    /// A fresh directory with an initialised store on `backend`.
    pub fn on(backend: Backend) -> Self {
        let mut env = Self::empty_on(backend);
        let o = env.run(&["store", "init"], None);
        assert!(o.status.success(), "{}", stderr(&o));
        if backend == Backend::Service {
            let o = env.run(
                &["tokens", "create", "--name", "tests", "--scope", "admin"],
                None,
            );
            assert!(o.status.success(), "{}", stderr(&o));
            let token = stdout(&o).trim().to_owned();
            let (child, base, _, lines) = start_service(&env, &["--listen", "127.0.0.1:0"]);
            std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
            env.service = Some(ServiceProc { child, base, token });
        }
        env
    }

    /// A fresh directory, no store yet (SQLite).
    pub fn empty() -> Self {
        Self::empty_on(Backend::Sqlite)
    }

    /// A fresh directory, and an empty database on `backend`.
    pub fn empty_on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = match backend {
            Backend::Sqlite | Backend::Service => {
                dir.path().join("data/store.db").display().to_string()
            }
            Backend::Postgres => pg_server().fresh_database(),
        };
        Self {
            dir,
            store,
            backend,
            service: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sealctl args...` in this directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(workspace_bin("sealctl"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("SEALCTL_STORE", &self.store)
            .env("SEALCTL_MASTER_KEY", self.path("master.key"))
            .env("SEALCTL_LOG", "trace")
            .env("TMPDIR", self.path("tmp"))
            .env_remove("XDG_RUNTIME_DIR");
        if let Some(s) = &self.service {
            c.env_remove("SEALCTL_STORE")
                .env_remove("SEALCTL_MASTER_KEY")
                .env("SEALCTL_SERVER", &s.base)
                .env("SEALCTL_TOKEN", &s.token);
        }
        std::fs::create_dir_all(self.path("tmp")).unwrap();
        c
    }

    /// Runs sealctl with `stdin` piped in.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        output_with_stdin(&mut self.cmd(args), stdin.unwrap_or_default())
    }

    /// Creates `repos` (`sealctl repos create`), as a user does before
    /// setting a repository's secrets.
    pub fn create(&self, repos: &[&str]) -> &Self {
        for r in repos {
            ok(&self.run(&["repos", "create", r], None));
        }
        self
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self::new()
    }
}

/// `sealctl serve ARGS` in `env`, once it has said where it listens (no
/// sleeps): the child, its address (`http://127.0.0.1:PORT`, `https://...`
/// or `unix:PATH`), what it logged so far, and the rest of its stderr.
pub fn start_service(
    env: &StoreDir,
    args: &[&str],
) -> (
    std::process::Child,
    String,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead;
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    let mut child = env
        .cmd(&full)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    loop {
        let Some(line) = lines.next() else {
            let status = child.wait();
            panic!("sealctl serve exited ({status:?}) before listening: {log}");
        };
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(addr) = line.strip_prefix("sealctl: listening on ") {
            return (child, addr.to_owned(), log, lines);
        }
        // --log-format json: the log's own line says it.
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(addr) = doc["fields"]["address"].as_str() {
                return (child, addr.to_owned(), log, lines);
            }
        }
    }
}

/// Sets the benchmarks' repository `bench/r20`: 20 secrets of about 45
/// bytes each, from an env file.
pub fn set_bench_r20(env: &StoreDir) {
    env.create(&["bench/r20"]);
    let text: String = (0..20)
        .map(|i| format!("SECRET_{i:02}=value-{i}-abcdefghijklmnopqrstuvwxyz0123456789\n"))
        .collect();
    std::fs::write(env.path("r20.env"), text).unwrap();
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "bench/r20",
            "--from-env-file",
            "r20.env",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Runs `cmd` with `stdin` piped in (a command may refuse before reading
/// it: a broken pipe is fine).
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = std::io::Write::write_all(&mut input, stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

/// Asserts that a command succeeded (showing its stderr if not).
pub fn ok(o: &Output) -> &Output {
    assert!(o.status.success(), "{}", stderr(o));
    o
}

/// Each line of a command's stdout, as JSON.
/// `repos --json`, each repository's last change checked present, then
/// removed (it is a time: the rest compares exactly).
pub fn repos_json(o: &Output) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("repos --json: {e}: {}", stderr(o)));
    for r in doc.as_array_mut().expect("a JSON array") {
        let t = r
            .as_object_mut()
            .unwrap()
            .remove("updated_at")
            .expect("updated_at");
        assert!(t.is_i64() || t.is_string(), "{t}");
    }
    doc
}

pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `test` on a fresh, initialised store directory of each of
/// `backends` (CLIENTS or BACKENDS), saying which on stderr.
pub fn for_each(backends: &[Backend], test: impl Fn(StoreDir)) {
    for_each_with(backends, &[], test)
}

/// [`for_each`], with `repos` created in each store first.
pub fn for_each_with(backends: &[Backend], repos: &[&str], test: impl Fn(StoreDir)) {
    for &backend in backends {
        eprintln!("--- on {backend:?}");
        let env = StoreDir::on(backend);
        env.create(repos);
        test(env);
    }
}

/// A running `sealctl serve`, its address, and everything it logged.
#[derive(Debug)]
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the service on a free loopback port and waits until it says
    /// it listens (no sleeps).
    pub fn start(env: &StoreDir, extra: &[&str]) -> Self {
        let mut args = vec!["--log-level", "trace"];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let (child, base, so_far, lines) = start_service(env, &args);
        let log = std::sync::Arc::new(std::sync::Mutex::new(so_far));
        let sink = std::sync::Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self {
            child,
            base,
            log,
            reader: Some(reader),
        }
    }

    /// Waits (at most 30 s) until the log holds `text`.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.log.lock().unwrap().contains(text) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} in the log: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// SIGTERM, then its exit status and whole log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        kill(self.child.id() as i32, "TERM");
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A snapshot of everything the server logged so far.
impl Server {
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// The bin directory of the tests' PyPI tools (`.ci/py-tools.sh`: made on
/// first use, one maker at a time).
pub fn py_tools() -> std::path::PathBuf {
    let o = Command::new("bash")
        .arg(workspace_root().join(".ci/py-tools.sh"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "installing the PyPI tools: {}",
        stderr(&o)
    );
    stdout(&o).trim().into()
}

/// axe-core's script (`.ci/page-tools.sh` installs it once, with npm, in
/// `target/page-tools`).
pub fn axe_script() -> String {
    let o = Command::new("bash")
        .arg(workspace_root().join(".ci/page-tools.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "installing axe-core: {}", stderr(&o));
    std::fs::read_to_string(stdout(&o).trim()).expect("axe.min.js")
}

/// The variables among `names` (one a line, sorted) that sealinit gives a
/// command from the bundle and key files `bundle` and `key` of `env`.
pub fn bundle_env(env: &StoreDir, bundle: &str, key: &str, names: &[&str]) -> String {
    let o = Command::new(workspace_bin("sealinit"))
        .args(["--bundle", env.path(bundle).to_str().unwrap()])
        .args(["--key-file", env.path(key).to_str().unwrap(), "env"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut vars: Vec<&str> = out
        .lines()
        .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n}="))))
        .collect();
    vars.sort();
    vars.join("\n")
}
