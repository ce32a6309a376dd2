//! The encrypted secret store and `sealctl run` (issue #5): every command
//! and error path, AAD binding, concurrent writers, SIGKILL during an
//! import, and the store-to-sandbox pipeline (master keys: keyring.rs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealinit_testkit::*;

/// The repositories these tests use, created in each fresh store.
const REPOS: &[&str] = &["acme/api"];

const SEALCTL: &str = env!("CARGO_BIN_EXE_sealctl");

const VALUE: &str = "store-VALUE-never-printed-9f2c";

/// Runs a test on a fresh store of each backend: SQLite, PostgreSQL (a
/// throwaway server the test binary starts), and `sealctl --server` in
/// front of a SQLite store.
fn for_each_backend(test: fn(Env)) {
    for_each_with(&CLIENTS, REPOS, |d| test(Env(d)));
}

/// The same on the store backends only: master keys are the local
/// store's.
fn for_each_store_backend(test: fn(Env)) {
    for_each_with(&BACKENDS, REPOS, |d| test(Env(d)));
}

/// A store directory whose sealctl runs are checked never to print
/// [`VALUE`].
struct Env(StoreDir);

impl std::ops::Deref for Env {
    type Target = StoreDir;
    fn deref(&self) -> &StoreDir {
        &self.0
    }
}

impl Env {
    fn new() -> Self {
        let env = StoreDir::new();
        env.create(REPOS);
        Self(env)
    }

    fn empty() -> Self {
        Self(StoreDir::empty())
    }

    /// Runs sealctl with `stdin` piped in; checks that no value is printed.
    fn sealctl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let o = self.run(args, stdin.map(str::as_bytes));
        for text in [stdout(&o), stderr(&o)] {
            assert!(
                !text.contains(VALUE),
                "sealctl {args:?} printed a value: {text}"
            );
        }
        o
    }

    fn names(&self, repo: &str) -> Vec<String> {
        let o = self.sealctl(&["secrets", "list", "--repo", repo, "--json"], None);
        assert!(o.status.success(), "{}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        doc.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_private_files_and_never_overwrites() {
    let env = Env::new();
    assert_eq!(mode(&env.path("data")), 0o700);
    assert_eq!(mode(&env.path("data/store.db")), 0o600);
    assert_eq!(mode(&env.path("master.key")), 0o600);
    let key = fs::read(env.path("master.key")).unwrap();
    fails(
        &env.sealctl(&["store", "init"], None),
        73,
        "store.db already exists",
    );
    assert_eq!(fs::read(env.path("master.key")).unwrap(), key);

    // A master key file in the way: nothing is created.
    let other = Env::empty();
    fs::write(other.path("master.key"), [0u8; 32]).unwrap();
    fails(
        &other.sealctl(&["store", "init"], None),
        73,
        "master.key already exists",
    );
    assert!(!other.path("data/store.db").exists());
    let o = Command::new(SEALCTL)
        .args(["store", "init", "--store", "x.db"])
        .current_dir(other.dir.path())
        .env_remove("SEALCTL_MASTER_KEY")
        .output()
        .unwrap();
    fails(&o, 64, "--master-key");
}

#[test]
fn set_list_rm_repos() {
    for_each_backend(set_list_rm_repos_on);
}

fn set_list_rm_repos_on(env: Env) {
    let o = env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "API_TOKEN"],
        Some(&format!("{VALUE}\n")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    fs::write(env.path("more.env"), "A=1\nB=\"two words\"\n").unwrap();
    let o = env.sealctl(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "more.env",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    env.create(&["acme/web"]);
    env.sealctl(&["secrets", "set", "--repo", "acme/web", "W"], Some("w"));

    let o = env.sealctl(&["secrets", "list", "--repo", "acme/api"], None);
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("API_TOKEN ")).unwrap();
    assert!(
        line.contains(&format!(" {} bytes  v1    updated 20", VALUE.len())),
        "{text}"
    );
    assert_eq!(env.names("acme/api"), ["A", "API_TOKEN", "B"]);

    // Setting again bumps the version.
    env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "A"],
        Some("again"),
    );
    let o = env.sealctl(&["secrets", "list", "--repo", "acme/api", "--json"], None);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc[0]["version"], 2);
    assert_eq!(doc[0]["size"], 5);

    let o = env.sealctl(&["repos"], None);
    assert!(
        stdout(&o).contains("acme/api                                 3 secret(s)"),
        "{}",
        stdout(&o)
    );
    let o = env.sealctl(&["repos", "--json"], None);
    let doc = repos_json(&o);
    assert_eq!(
        doc,
        serde_json::json!([{"repo": "acme/api", "secrets": 3}, {"repo": "acme/web", "secrets": 1}])
    );

    // rm is all or nothing.
    fails(
        &env.sealctl(&["secrets", "rm", "--repo", "acme/api", "A", "NOPE"], None),
        66,
        "acme/api has no secret named NOPE; nothing was removed",
    );
    assert_eq!(env.names("acme/api"), ["A", "API_TOKEN", "B"]);
    assert!(
        env.sealctl(&["secrets", "rm", "--repo", "acme/api", "A", "B"], None)
            .status
            .success()
    );
    assert_eq!(env.names("acme/api"), ["API_TOKEN"]);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    for_each_store_backend(bad_input_is_refused_and_changes_nothing_on);
}

fn bad_input_is_refused_and_changes_nothing_on(env: Env) {
    env.sealctl(&["secrets", "set", "--repo", "acme/api", "KEEP"], Some("x"));
    for repo in [
        "acme",
        "acme//x",
        "/api",
        "acme/",
        ".hidden/x",
        "ac me/x",
        "",
    ] {
        fails(
            &env.sealctl(&["secrets", "set", "--repo", repo, "N"], Some("v")),
            64,
            "is not of the form owner/name",
        );
    }
    fails(
        &env.sealctl(&["secrets", "set", "--repo", "acme/api", "9BAD"], Some("v")),
        65,
        "invalid name \"9BAD\"",
    );
    fails(
        &env.sealctl(
            &["secrets", "set", "--repo", "acme/api", "SEALINIT_X"],
            Some("v"),
        ),
        65,
        "is reserved",
    );
    fails(
        &env.sealctl(&["secrets", "set", "--repo", "acme/api", "N"], Some("a\0b")),
        65,
        "contains a NUL byte",
    );
    // An import with one bad line sets nothing.
    fs::write(
        env.path("bad.env"),
        format!("GOOD={VALUE}\nALSO=1\nBAD.NAME=x\n"),
    )
    .unwrap();
    fails(
        &env.sealctl(
            &[
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "--from-env-file",
                "bad.env",
            ],
            None,
        ),
        65,
        // An invalid name may be a piece of a value: not shown.
        "line 3, after ALSO (the line is not shown, it may hold a secret): the text before = is not a valid name",
    );
    assert_eq!(env.names("acme/api"), ["KEEP"]);

    // Wrong master key: clear error, nothing changed.
    fs::write(env.path("wrong.key"), [7u8; 32]).unwrap();
    fs::set_permissions(env.path("wrong.key"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = env.sealctl(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--master-key",
            "wrong.key",
            "NEW",
        ],
        Some("v"),
    );
    fails(&o, 65, "no master key given opens this store (it knows mk-");
    assert_eq!(env.names("acme/api"), ["KEEP"]);
    // A master key readable by others is refused.
    fs::set_permissions(env.path("wrong.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let o = env.sealctl(&["repos", "--master-key", "wrong.key"], None);
    fails(
        &o,
        66,
        "is readable by group or others (mode 644); chmod 600 it",
    );
    // Missing store, not a store.
    fails(
        &env.sealctl(&["repos", "--store", "nope.db"], None),
        66,
        "store nope.db: no such file or directory",
    );
    fs::write(
        env.path("junk.db"),
        "not sqlite at all, just some text that is long enough",
    )
    .unwrap();
    fails(
        &env.sealctl(&["repos", "--store", "junk.db"], None),
        74,
        "not a SQLite database",
    );
    // Value from a terminal is refused.
    let o = Command::new("sh")
        .args([
            "-c",
            &format!("exec {SEALCTL} secrets set --repo acme/api N < /dev/ptmx"),
        ])
        .current_dir(env.dir.path())
        .env("SEALCTL_STORE", &env.store)
        .env("SEALCTL_MASTER_KEY", env.path("master.key"))
        .output()
        .unwrap();
    fails(&o, 64, "stdin, which is a terminal");
}

#[test]
fn master_key_from_an_inherited_fd() {
    for_each_store_backend(master_key_from_an_inherited_fd_on);
}

fn master_key_from_an_inherited_fd_on(env: Env) {
    let script = format!(
        "exec {SEALCTL} secrets set --repo acme/api --allow-empty --master-key-fd 5 N 5<master.key"
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .env("SEALCTL_STORE", &env.store)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.names("acme/api"), ["N"]);
}

#[test]
fn a_row_copied_to_another_repo_or_name_does_not_decrypt() {
    let env = Env::new();
    env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "TOKEN"],
        Some(VALUE),
    );
    env.create(&["evil/repo"]);
    env.sealctl(
        &["secrets", "set", "--repo", "evil/repo", "OTHER"],
        Some("x"),
    );
    let db = rusqlite::Connection::open(env.path("data/store.db")).unwrap();
    // Copy to another repository, then to another name in the same one.
    db.execute(
        "INSERT INTO secrets SELECT 'evil/repo', name, version, nonce, ciphertext, size, updated_at, allow_code_loading, route FROM secrets WHERE repo = 'acme/api'",
        [],
    )
    .unwrap();
    db.execute(
        "INSERT INTO secrets SELECT repo, 'RENAMED', version, nonce, ciphertext, size, updated_at, allow_code_loading, route FROM secrets WHERE repo = 'acme/api'",
        [],
    )
    .unwrap();
    drop(db);
    for (repo, name) in [("evil/repo", "TOKEN"), ("acme/api", "RENAMED")] {
        let o = env.sealctl(
            &["seal", "--repo", repo, "--out", "b", "--key-out", "k"],
            None,
        );
        fails(
            &o,
            65,
            &format!("secret {name} of {repo} does not decrypt: the row was modified or copied"),
        );
        assert!(!env.path("b").exists() && !env.path("k").exists());
    }
}

#[test]
fn concurrent_writers_all_land() {
    for_each_backend(concurrent_writers_all_land_on);
}

fn concurrent_writers_all_land_on(env: Env) {
    let writers: Vec<Child> = (0..8)
        .map(|w| {
            let lines: String = (0..50)
                .map(|i| format!("W{w}_S{i}=value-{w}-{i}\n"))
                .collect();
            let file = format!("w{w}.env");
            fs::write(env.path(&file), lines).unwrap();
            env.cmd(&[
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "--from-env-file",
                &file,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for w in writers {
        let o = w.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(env.names("acme/api").len(), 400);
}

#[test]
fn sigkill_during_an_import_leaves_the_store_as_before() {
    let env = Env::new();
    env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "BEFORE"],
        Some("x"),
    );
    let lines: String = (0..300_000)
        .map(|i| format!("N{i}={}\n", "v".repeat(64)))
        .collect();
    fs::write(env.path("big.env"), lines).unwrap();
    let mut child = env
        .cmd(&[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "big.env",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the transaction is visibly writing (the WAL grows).
    let wal = env.path("data/store.db-wal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::metadata(&wal).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import finished before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "the import never started writing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(env.names("acme/api"), ["BEFORE"]);
    env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "AFTER"],
        Some("y"),
    );
    assert_eq!(env.names("acme/api"), ["AFTER", "BEFORE"]);
}

#[test]
fn seal_from_the_store_with_a_fresh_key() {
    for_each_backend(seal_from_the_store_with_a_fresh_key_on);
}

fn seal_from_the_store_with_a_fresh_key_on(env: Env) {
    env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "TOKEN"],
        Some(VALUE),
    );
    let o = env.sealctl(
        &[
            "seal",
            "--repo",
            "acme/api",
            "--out",
            "b",
            "--key-out",
            "k",
            "--ttl",
            "10m",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&env.path("k")), 0o600);
    let o = env.sealctl(&["inspect", "b", "--key", "k"], None);
    assert!(
        stdout(&o).contains("label:    \"acme/api\""),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("TOKEN"));
    let o = run(sealinit(
        Mode::Pid1,
        Some(&env.path("k")),
        &[
            "--expect-label",
            "acme/api",
            "--bundle",
            env.path("b").to_str().unwrap(),
            "sh",
            "-c",
            "echo ${#TOKEN}",
        ],
    ));
    assert_eq!(stdout(&o), format!("{}\n", VALUE.len()));
    let first = fs::read(env.path("k")).unwrap();
    fails(
        &env.sealctl(
            &[
                "seal",
                "--repo",
                "acme/api",
                "--out",
                "b2",
                "--key-out",
                "k",
            ],
            None,
        ),
        73,
        "k already exists",
    );
    assert_eq!(fs::read(env.path("k")).unwrap(), first);
    fails(
        &env.sealctl(&["seal", "--repo", "acme/api", "--out", "b2"], None),
        64,
        "--key-out",
    );
}

#[test]
fn run_passes_exit_codes_and_signals_and_leaves_no_bundle() {
    for_each_backend(run_passes_exit_codes_and_signals_and_leaves_no_bundle_on);
}

fn run_passes_exit_codes_and_signals_and_leaves_no_bundle_on(env: Env) {
    env.sealctl(
        &["secrets", "set", "--repo", "acme/api", "TOKEN"],
        Some(VALUE),
    );
    for ns in [false, true] {
        let mut args = vec!["run", "--repo", "acme/api"];
        if ns {
            args.push("--pid-namespace");
        }
        let with = |extra: &[&str]| -> Vec<String> {
            args.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        let o = env.sealctl(
            &refs(&with(&["--", "sh", "-c", "echo ${#TOKEN} $$; exit 7"])),
            None,
        );
        assert_eq!(o.status.code(), Some(7), "ns={ns}: {}", stderr(&o));
        let pid: u32 = stdout(&o)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            stdout(&o).split_whitespace().next().unwrap(),
            VALUE.len().to_string()
        );
        assert_eq!(pid == 2, ns, "ns={ns}: the command's pid is {pid}");
        let o = env.sealctl(&refs(&with(&["sh", "-c", "kill -TERM $$"])), None);
        assert_eq!(o.status.code(), Some(143), "ns={ns}");

        // SIGTERM to `sealctl run` reaches the command.
        let ready = env.path("ready");
        let _ = fs::remove_file(&ready);
        let script = format!(
            "trap 'echo got-term; exit 42' TERM; : > {}; sleep 1000 >/dev/null & wait",
            ready.display()
        );
        let child = env
            .cmd(&refs(&with(&["sh", "-c", &script])))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_file(&ready);
        kill(child.id() as i32, "TERM");
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(42), "ns={ns}: {}", stderr(&o));
        assert_eq!(stdout(&o), "got-term\n");
        assert_eq!(
            fs::read_dir(env.path("tmp")).unwrap().count(),
            0,
            "ns={ns}: a bundle was left behind"
        );
    }
    fails(
        &env.sealctl(
            &[
                "run",
                "--repo",
                "acme/api",
                "--sealinit",
                "/nonexistent/sealinit",
                "true",
            ],
            None,
        ),
        127,
        "/nonexistent/sealinit",
    );
    assert_eq!(fs::read_dir(env.path("tmp")).unwrap().count(), 0);
    fails(
        &env.sealctl(&["run", "--repo", "acme/api"], None),
        64,
        "COMMAND",
    );
}

/// SQLite rebuilds the WAL index by reading the whole WAL whenever a
/// process opens the file after the last one closed, and that index
/// forgets checkpoints: with one process per command the WAL grew to
/// 4 MiB, read by every command. A closing connection trims it.
#[test]
fn the_wal_stays_short_with_one_process_per_command() {
    let env = Env::new();
    let mut doc = String::new();
    for i in 0..20 {
        doc.push_str(&format!(
            "S{i}=value-{i}-abcdefghijklmnopqrstuvwxyz0123456789\n"
        ));
    }
    fs::write(env.path("r.env"), doc).unwrap();
    let o = env.sealctl(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "r.env",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let wal = env.path("data/store.db-wal");
    let mut largest = 0;
    // Each seal appends its audit record (4 pages): 150 seals write
    // 2.4 MiB of WAL frames.
    for _ in 0..150 {
        let o = env.sealctl(
            &["seal", "--repo", "acme/api", "--out", "b", "--key-out", "-"],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        largest = largest.max(fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(largest > 0, "the store is not in WAL mode");
    assert!(largest <= 512 * 1024, "the WAL grew to {largest} bytes");
    let o = env.sealctl(&["audit", "--repo", "acme/api", "--json"], None);
    assert_eq!(
        stdout(&o)
            .lines()
            .filter(|l| l.contains("\"seal\""))
            .count(),
        150
    );
}
