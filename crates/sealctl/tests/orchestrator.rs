//! What a real orchestrator integration needs (issue #13): tenant input taken
//! literally, a store that only holds what seals, keys that never touch a
//! disk, and commands that say what they did. Through the real binaries.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sealinit_testkit::*;

/// The repositories these tests use, created in each fresh store.
const REPOS: &[&str] = &["acme/api", "acme/web"];

const SEALCTL: &str = env!("CARGO_BIN_EXE_sealctl");

type Env = StoreDir;

/// Runs a test on a fresh store of each backend: SQLite, PostgreSQL (a
/// throwaway server the test binary starts), and `sealctl --server` in
/// front of a SQLite store (the service the test starts).
fn for_each_backend(test: fn(Env)) {
    for_each_with(&CLIENTS, REPOS, test);
}

/// The same on the store backends only, for what only a local store has
/// (master keys): with `--server` those commands say so (exit 64).
fn for_each_store_backend(test: fn(Env)) {
    for_each_with(&BACKENDS, REPOS, test);
}

/// What these tests do with a store directory.
trait Orchestrate {
    fn set(&self, repo: &str, name: &str, value: &[u8], extra: &[&str]) -> Output;
    fn under_sealinit(&self, repo: &str, seal_extra: &[&str], script: &str) -> Output;
}

impl Orchestrate for StoreDir {
    fn set(&self, repo: &str, name: &str, value: &[u8], extra: &[&str]) -> Output {
        let mut args = vec!["secrets", "set", "--repo", repo, name];
        args.extend_from_slice(extra);
        self.run(&args, Some(value))
    }

    /// Seals `repo` with a fresh key file, then runs `sh -c script` under
    /// sealinit with it; returns sealinit's output.
    fn under_sealinit(&self, repo: &str, seal_extra: &[&str], script: &str) -> Output {
        let (bundle, key) = (self.path("b"), self.path("k"));
        let _ = fs::remove_file(&key);
        let mut args = vec![
            "seal",
            "--repo",
            repo,
            "--out",
            bundle.to_str().unwrap(),
            "--key-out",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(seal_extra);
        let o = self.run(&args, None);
        assert!(o.status.success(), "seal: {}", stderr(&o));
        Command::new(workspace_bin("sealinit"))
            .args(["--bundle", bundle.to_str().unwrap()])
            .args(["--key-file", key.to_str().unwrap(), "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

// Tenant input ----------------------------------------------------------

#[test]
fn env_files_are_taken_literally_never_expanded_from_sealctls_environment() {
    for_each_backend(env_files_are_taken_literally_never_expanded_from_sealctls_environment_on);
}

fn env_files_are_taken_literally_never_expanded_from_sealctls_environment_on(env: Env) {
    fs::write(
        env.path("tenant.env"),
        "STEAL=${ORCH_DB_PASSWORD}\nP=p$ss\nBARE=$ORCH_DB_PASSWORD\nQ=\"x${ORCH_DB_PASSWORD}\"\n",
    )
    .unwrap();
    let o = env
        .cmd(&[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "tenant.env",
        ])
        .env("ORCH_DB_PASSWORD", "orchestrator-own-secret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.under_sealinit(
        "acme/api",
        &[],
        r#"printf '[%s]' "$STEAL" "$P" "$BARE" "$Q""#,
    );
    assert_eq!(
        stdout(&o),
        "[${ORCH_DB_PASSWORD}][p$ss][$ORCH_DB_PASSWORD][x${ORCH_DB_PASSWORD}]",
        "{}",
        stderr(&o)
    );
}

#[test]
fn expand_is_opt_in_and_reads_only_earlier_lines_of_the_same_file() {
    for_each_backend(expand_is_opt_in_and_reads_only_earlier_lines_of_the_same_file_on);
}

fn expand_is_opt_in_and_reads_only_earlier_lines_of_the_same_file_on(env: Env) {
    fs::write(
        env.path("e.env"),
        "HOST=db.internal\nURL=postgres://${HOST}/x\nRAW='${HOST}'\nESC=\"\\$HOST\"\n",
    )
    .unwrap();
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "e.env",
            "--expand",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.under_sealinit("acme/api", &[], r#"printf '[%s]' "$URL" "$RAW" "$ESC""#);
    assert_eq!(stdout(&o), "[postgres://db.internal/x][${HOST}][$HOST]");
    // Never from the environment, even with --expand.
    fs::write(env.path("home.env"), "A=1\nB=${HOME}\n").unwrap();
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "home.env",
            "--expand",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains("never reads the environment"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn real_env_files_import() {
    for_each_backend(real_env_files_import_on);
}

fn real_env_files_import_on(env: Env) {
    let text = "\u{feff}# a comment\r\nexport EXPORTED=yes\r\nGREETING=hello world\r\nSPACED = around equals \r\nINLINE=value # a comment\r\nHASH=a#b\r\nSINGLE='it is'\r\nDOUBLE=\"line1\\nline2\\t\\\"q\\\"\"\r\nMULTI=\"first\nsecond\"\r\nEMPTY=\r\n\r\n";
    fs::write(env.path("real.env"), text).unwrap();
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "real.env",
            "--allow-empty",
        ],
        None,
    );
    // --allow-empty is for stdin; EMPTY= in a file is a value like any other.
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.under_sealinit(
        "acme/api",
        &[],
        r#"printf '[%s]' "$EXPORTED" "$GREETING" "$SPACED" "$INLINE" "$HASH" "$DOUBLE" "$MULTI" "${EMPTY-unset}""#,
    );
    assert_eq!(
        stdout(&o),
        "[yes][hello world][around equals][value][a#b][line1\nline2\t\"q\"][first\nsecond][]",
        "{}",
        stderr(&o)
    );
    // Quoted pieces glued together are refused, with the line number.
    fs::write(env.path("glued.env"), "A=1\nB='x'y\n").unwrap();
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "glued.env",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
}

#[test]
fn a_syntax_error_names_the_file_and_line_never_the_content() {
    for_each_backend(a_syntax_error_names_the_file_and_line_never_the_content_on);
}

fn a_syntax_error_names_the_file_and_line_never_the_content_on(env: Env) {
    for (text, line) in [
        ("A=1\nB=2\nTHIS IS SECRET-CONTENT-123\n", 3),
        ("A=1\nB=\"unclosed SECRET-CONTENT-123\n", 2),
        ("A=1\n=SECRET-CONTENT-123\n", 2),
    ] {
        fs::write(env.path("bad.env"), text).unwrap();
        for args in [
            vec![
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "--from-env-file",
                "bad.env",
            ],
            vec![
                "seal",
                "--from-env-file",
                "bad.env",
                "--key",
                "k",
                "--out",
                "b",
            ],
        ] {
            let o = env.run(&args, None);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(65), "{text:?}: {err}");
            assert!(
                err.contains("bad.env") && err.contains(&format!("line {line}")),
                "{err}"
            );
            assert!(!err.contains("SECRET-CONTENT"), "{err}");
        }
    }
}

#[test]
fn secrets_set_takes_json() {
    for_each_backend(secrets_set_takes_json_on);
}

fn secrets_set_takes_json_on(env: Env) {
    fs::write(
        env.path("s.json"),
        r#"{"API_KEY": "k-123", "MULTI": "a\nb"}"#,
    )
    .unwrap();
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-json",
            "s.json",
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = json_lines(&o)
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["API_KEY", "MULTI"]);
}

// The store holds only what can be sealed --------------------------------

#[test]
fn code_loading_names_need_allow_name_at_set_and_it_is_recorded() {
    for_each_backend(code_loading_names_need_allow_name_at_set_and_it_is_recorded_on);
}

fn code_loading_names_need_allow_name_at_set_and_it_is_recorded_on(env: Env) {
    let o = env.set("acme/api", "NODE_OPTIONS", b"--max-old-space-size=512", &[]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--allow-name NODE_OPTIONS"),
        "{}",
        stderr(&o)
    );
    let o = env.set(
        "acme/api",
        "NODE_OPTIONS",
        b"--max-old-space-size=512",
        &["--allow-name", "NODE_OPTIONS"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Later seals honour the recorded permission.
    let o = env.under_sealinit("acme/api", &[], r#"printf '%s' "$NODE_OPTIONS""#);
    assert_eq!(stdout(&o), "--max-old-space-size=512", "{}", stderr(&o));
}

#[test]
fn a_repository_never_grows_past_what_seals() {
    for_each_backend(a_repository_never_grows_past_what_seals_on);
}

fn a_repository_never_grows_past_what_seals_on(env: Env) {
    let big = vec![b'v'; 120 * 1024];
    for i in 0..8 {
        let o = env.set("acme/api", &format!("BIG_{i}"), &big, &[]);
        assert!(o.status.success(), "{i}: {}", stderr(&o));
    }
    // The ninth would make the payload exceed 1 MiB: refused, nothing changed.
    let o = env.set("acme/api", "BIG_8", &big, &[]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("1048576-byte limit"), "{}", stderr(&o));
    let o = env.run(&["secrets", "list", "--repo", "acme/api", "--json"], None);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 8);
    // What the store holds seals.
    let o = env.under_sealinit("acme/api", &[], r#"printf '%s' "${#BIG_7}""#);
    assert_eq!(stdout(&o), "122880");
    // A single value over the per-variable limit, and a bad name.
    env.create(&["acme/other"]);
    let o = env.set("acme/other", "HUGE", &vec![b'v'; 200 * 1024], &[]);
    assert_eq!(o.status.code(), Some(65));
    let o = env.set("acme/other", "BAD-NAME", b"x", &[]);
    assert_eq!(o.status.code(), Some(65));
}

#[test]
fn an_empty_value_from_stdin_needs_allow_empty() {
    for_each_backend(an_empty_value_from_stdin_needs_allow_empty_on);
}

fn an_empty_value_from_stdin_needs_allow_empty_on(env: Env) {
    let o = env.set("acme/api", "EMPTY", b"", &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("--allow-empty"), "{}", stderr(&o));
    let o = env.set("acme/api", "EMPTY", b"", &["--allow-empty"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

// Keys never have to touch a disk ---------------------------------------

#[test]
fn key_out_fd_and_key_out_stdout_deliver_the_key_without_a_file() {
    for_each_backend(key_out_fd_and_key_out_stdout_deliver_the_key_without_a_file_on);
}

fn key_out_fd_and_key_out_stdout_deliver_the_key_without_a_file_on(env: Env) {
    assert!(
        env.set("acme/api", "TOKEN", b"tok-123", &[])
            .status
            .success()
    );
    // --key-out-fd: a pipe, read by the "orchestrator" (here: sh, then
    // handed on as sealinit's key fd).
    let script = format!(
        r#"{SEALCTL} seal --repo acme/api --out b --key-out-fd 5 5>&1 >/dev/null | {} --bundle b --key-fd 0 sh -c 'printf %s "$TOKEN"'"#,
        workspace_bin("sealinit")
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .env("SEALCTL_STORE", &env.store)
        .env("SEALCTL_MASTER_KEY", env.path("master.key"))
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "tok-123", "{}", stderr(&o));
    assert!(!env.path("-").exists());
    // --key-out -: 32 bytes on stdout, no file named "-".
    let o = env.run(
        &[
            "seal",
            "--repo",
            "acme/api",
            "--out",
            "b2",
            "--key-out",
            "-",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 32);
    assert!(!env.path("-").exists(), "a file named - was created");
    // --key-out - on a terminal is refused.
    let pty = nix::pty::openpty(None, None).unwrap();
    let o = env
        .cmd(&[
            "seal",
            "--repo",
            "acme/api",
            "--out",
            "b3",
            "--key-out",
            "-",
        ])
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("terminal"), "{}", stderr(&o));
    // A descriptor that is not open.
    let o = env.run(
        &[
            "seal",
            "--repo",
            "acme/api",
            "--out",
            "b4",
            "--key-out-fd",
            "9",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
}

// The orchestrator knows what happened ---------------------------------

#[test]
fn ready_fd_says_ready_after_exec_or_the_error_before() {
    for_each_backend(ready_fd_says_ready_after_exec_or_the_error_before_on);
}

fn ready_fd_says_ready_after_exec_or_the_error_before_on(env: Env) {
    assert!(
        env.set("acme/api", "TOKEN", b"tok-123", &[])
            .status
            .success()
    );
    let o = env.run(
        &["seal", "--repo", "acme/api", "--out", "b", "--key-out", "k"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ready = |args: &str, command: &str| -> (String, Output) {
        // fd 7 is a pipe whose other end this test reads.
        let script = format!(
            r#"{{ {} --ready-fd 7 {args} -- {command} 7>&1 >/dev/null 2>/dev/null; echo "rc=$?" >&2; }} | cat"#,
            workspace_bin("sealinit")
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        (stdout(&o), o)
    };
    let (said, o) = ready("--bundle b --key-file k", "sh -c 'exit 65'");
    assert_eq!(said, "ready\n", "{}", stderr(&o));
    // The agent's own 65 is told apart from sealinit's.
    assert!(stderr(&o).contains("rc=65"));
    let (said, o) = ready("--bundle missing --key-fd 0", "true");
    assert!(said.starts_with("error 66 "), "{said:?}");
    assert_eq!(said.lines().count(), 1);
    assert!(stderr(&o).contains("rc=66"));
    let (said, _) = ready("", "/nonexistent/x");
    assert!(said.starts_with("error 127 "), "{said:?}");
    // `sealctl run --ready-fd` hands the descriptor on to sealinit, with
    // and without a PID namespace.
    for ns in [&[][..], &["--pid-namespace"][..]] {
        let script = format!(
            r#"{{ {SEALCTL} run --repo acme/api --ready-fd 7 {} -- sh -c 'exit 5' 7>&1 >/dev/null 2>/dev/null; echo "rc=$?" >&2; }} | cat"#,
            ns.join(" ")
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .current_dir(env.dir.path())
            .env("SEALCTL_STORE", &env.store)
            .env("SEALCTL_MASTER_KEY", env.path("master.key"))
            .output()
            .unwrap();
        assert_eq!(stdout(&o), "ready\n", "{ns:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("rc=5"), "{}", stderr(&o));
    }
}

#[test]
fn json_reports_what_changed_and_never_a_value() {
    for_each_store_backend(json_reports_what_changed_and_never_a_value_on);
}

fn json_reports_what_changed_and_never_a_value_on(env: Env) {
    let o = env.set("acme/api", "TOKEN", b"tok-SECRET-VALUE", &["--json"]);
    assert_eq!(
        json_lines(&o),
        [serde_json::json!({"repo": "acme/api", "name": "TOKEN", "version": 1, "created": true})]
    );
    let o = env.set("acme/api", "TOKEN", b"tok-SECRET-VALUE-2", &["--json"]);
    assert_eq!(json_lines(&o)[0]["version"], 2);
    assert_eq!(json_lines(&o)[0]["created"], false);
    let o = env.run(
        &[
            "seal",
            "--repo",
            "acme/api",
            "--out",
            "b",
            "--key-out",
            "k",
            "--json",
        ],
        None,
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["label"], "acme/api");
    assert_eq!(
        doc["secrets"],
        serde_json::json!([{"name": "TOKEN", "size": 18, "delivery": "env"}])
    );
    assert!(doc["expires"].is_string());
    assert!(!stdout(&o).contains("SECRET-VALUE"));
    let o = env.run(
        &["secrets", "rm", "--repo", "acme/api", "TOKEN", "--json"],
        None,
    );
    assert_eq!(
        json_lines(&o),
        [serde_json::json!({"repo": "acme/api", "name": "TOKEN", "version": 2, "removed": true})]
    );
    let o = env.run(
        &["store", "rotate-master-key", "--new", "new.key", "--json"],
        None,
    );
    let doc = &json_lines(&o)[0];
    // acme/api's data key, and acme/web's (created, empty).
    assert_eq!(doc["rewrapped"], 2, "{doc}");
    assert_eq!(doc["created"], true, "{doc}");
    assert!(doc["primary"].as_str().unwrap().starts_with("mk-"), "{doc}");
    assert_eq!(doc["previous"].as_array().unwrap().len(), 1, "{doc}");
}

#[test]
fn if_version_is_compare_and_set() {
    for_each_backend(if_version_is_compare_and_set_on);
}

fn if_version_is_compare_and_set_on(env: Env) {
    assert!(
        env.set("acme/api", "T", b"one", &["--if-version", "0"])
            .status
            .success()
    );
    let o = env.set("acme/api", "T", b"two", &["--if-version", "0"]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        env.set("acme/api", "T", b"two", &["--if-version", "1"])
            .status
            .success()
    );
    let o = env.set("acme/api", "T", b"three", &["--if-version", "1"]);
    assert_eq!(o.status.code(), Some(75));
    let o = env.under_sealinit("acme/api", &[], r#"printf '%s' "$T""#);
    assert_eq!(stdout(&o), "two");
}

#[test]
fn sealing_an_empty_or_unknown_repository_is_an_error_and_ttls_agree_with_run() {
    for_each_backend(sealing_an_empty_or_unknown_repository_is_an_error_and_ttls_agree_with_run_on);
}

fn sealing_an_empty_or_unknown_repository_is_an_error_and_ttls_agree_with_run_on(env: Env) {
    let o = env.run(
        &[
            "seal",
            "--repo",
            "acme/typo",
            "--out",
            "b",
            "--key-out",
            "k",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sealctl repos create acme/typo"),
        "{}",
        stderr(&o)
    );
    assert!(!env.path("b").exists() && !env.path("k").exists());
    // An unknown repository is never sealed empty; an existing empty one
    // is, when asked to.
    let seal_empty = |repo: &str, extra: &[&str]| {
        let mut args = vec!["seal", "--repo", repo, "--out", "b", "--key-out", "k"];
        args.extend_from_slice(extra);
        env.run(&args, None)
    };
    let o = seal_empty("acme/typo", &["--allow-empty"]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    let o = seal_empty("acme/web", &[]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-empty"), "{}", stderr(&o));
    let o = seal_empty("acme/web", &["--allow-empty"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(env.set("acme/api", "T", b"x", &[]).status.success());
    let expiry = |extra: &[&str]| {
        let _ = fs::remove_file(env.path("k2"));
        let mut args = vec![
            "seal",
            "--repo",
            "acme/api",
            "--out",
            "b2",
            "--key-out",
            "k2",
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = env.run(&args, None);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (doc["created"].clone(), doc["expires"].clone())
    };
    let (created, expires) = expiry(&[]);
    let secs = |v: &serde_json::Value| {
        let t = v.as_str().unwrap();
        // 2026-12-01T04:58:16Z: minutes and seconds are enough here.
        let m: i64 = t[14..16].parse().unwrap();
        let s: i64 = t[17..19].parse().unwrap();
        m * 60 + s
    };
    assert_eq!((secs(&expires) - secs(&created)).rem_euclid(3600), 300);
    match env.backend {
        // A service caps every mint (--max-bundle-ttl, 1 h by default).
        Backend::Service => {
            let o = env.run(
                &[
                    "seal",
                    "--repo",
                    "acme/api",
                    "--out",
                    "b3",
                    "--key-out",
                    "k3",
                    "--ttl",
                    "none",
                ],
                None,
            );
            assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
            assert!(
                stderr(&o).contains("longest bundle lifetime, 3600 s"),
                "{}",
                stderr(&o)
            );
        }
        _ => {
            let (_, expires) = expiry(&["--ttl", "none"]);
            assert!(expires.is_null());
        }
    }
    let help = env.run(&["seal", "--help"], None);
    assert!(
        stdout(&help).contains("5m with --repo, as `run`"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn repos_rm_removes_a_whole_repository_in_one_go() {
    for_each_backend(repos_rm_removes_a_whole_repository_in_one_go_on);
}

fn repos_rm_removes_a_whole_repository_in_one_go_on(env: Env) {
    for n in ["A", "B", "C"] {
        assert!(env.set("acme/api", n, b"x", &[]).status.success());
    }
    assert!(env.set("acme/web", "A", b"x", &[]).status.success());
    let o = env.run(&["repos", "rm", "acme/api", "--json"], None);
    assert_eq!(
        json_lines(&o),
        [serde_json::json!({"repo": "acme/api", "removed": 3})]
    );
    assert!(stderr(&o).contains("3 secret(s)"));
    let o = env.run(&["repos", "--json"], None);
    let doc = repos_json(&o);
    assert_eq!(doc, serde_json::json!([{"repo": "acme/web", "secrets": 1}]));
    let o = env.run(&["repos", "rm", "acme/api"], None);
    assert_eq!(o.status.code(), Some(66));
}

#[test]
fn nested_and_case_insensitive_repository_names_keep_the_first_spelling() {
    for_each_backend(nested_and_case_insensitive_repository_names_keep_the_first_spelling_on);
}

fn nested_and_case_insensitive_repository_names_keep_the_first_spelling_on(env: Env) {
    ok(&env.run(&["repos", "rm", "acme/api"], None));
    ok(&env.run(&["repos", "rm", "acme/web"], None));
    env.create(&["Group/Sub/App"]);
    assert!(env.set("Group/Sub/App", "A", b"1", &[]).status.success());
    let o = env.set("group/sub/app", "B", b"2", &["--json"]);
    assert_eq!(json_lines(&o)[0]["repo"], "Group/Sub/App");
    let o = env.run(&["repos", "--json"], None);
    let doc = repos_json(&o);
    assert_eq!(
        doc,
        serde_json::json!([{"repo": "Group/Sub/App", "secrets": 2}])
    );
    let o = env.under_sealinit("GROUP/SUB/APP", &[], r#"printf '%s%s' "$A" "$B""#);
    assert_eq!(stdout(&o), "12", "{}", stderr(&o));
    for bad in ["noslash", "a//b", "/a/b", "a/.hidden"] {
        let o = env.set(bad, "A", b"1", &[]);
        assert_eq!(o.status.code(), Some(64), "{bad}");
    }
}

#[test]
fn a_flag_wins_over_the_environment() {
    for_each_backend(a_flag_wins_over_the_environment_on);
}

fn a_flag_wins_over_the_environment_on(env: Env) {
    assert!(env.set("acme/api", "A", b"1", &[]).status.success());
    // SEALCTL_MASTER_KEY names a file that does not exist; the flag's fd
    // carries the real key.
    let script = format!("{SEALCTL} secrets list --repo acme/api --master-key-fd 5 5<master.key");
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .env("SEALCTL_STORE", &env.store)
        .env("SEALCTL_MASTER_KEY", env.path("no-such.key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with('A'));
}

// Upgrades ----------------------------------------------------------------

/// A store made by the first release (schema 1, committed with its master
/// key: test values only) opens after the upgrade with every value intact.
#[test]
fn a_store_from_the_first_release_is_migrated_with_every_value_intact() {
    let env = Env::empty();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sealinit-store/tests/fixtures");
    fs::create_dir_all(env.path("data")).unwrap();
    fs::copy(fixtures.join("store-v1.db"), env.path("data/store.db")).unwrap();
    let mut key = Vec::new();
    fs::File::open(fixtures.join("master-v1.key"))
        .unwrap()
        .read_to_end(&mut key)
        .unwrap();
    fs::write(env.path("master.key"), key).unwrap();
    std::fs::set_permissions(
        env.path("master.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let o = env.run(&["store", "migrate"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("is at schema 9"), "{}", stderr(&o));
    let o = env.run(&["repos", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = repos_json(&o);
    assert_eq!(
        doc,
        serde_json::json!([{"repo": "Acme/Web", "secrets": 1}, {"repo": "acme/api", "secrets": 3}])
    );
    // NODE_OPTIONS was stored before permissions were recorded: sealing it
    // needs --allow-name, as it did then.
    let o = env.run(
        &["seal", "--repo", "acme/api", "--out", "b", "--key-out", "k"],
        None,
    );
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let o = env.under_sealinit(
        "acme/api",
        &["--allow-name", "NODE_OPTIONS"],
        r#"printf '[%s]' "$MULTI" "$DATABASE_URL" "$NODE_OPTIONS""#,
    );
    assert_eq!(
        stdout(&o),
        "[line one\nline two][postgres://test:test@localhost/test][--max-old-space-size=512]",
        "{}",
        stderr(&o)
    );
    let o = env.under_sealinit("acme/web", &[], r#"printf '%s' "$FLAG""#);
    assert_eq!(stdout(&o), "v2");
    // The current values became each secret's history (schema 3).
    let o = env.run(
        &["secrets", "history", "--repo", "acme/web", "FLAG", "--json"],
        None,
    );
    let h: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (h["version"].as_i64(), h["actor"].as_str()),
        (Some(2), Some("before schema 3"))
    );
    // The migrated store takes new writes, with the first spelling.
    let o = env.set("ACME/API", "NEW", b"n", &["--json"]);
    assert_eq!(json_lines(&o)[0]["repo"], "acme/api");
}

// Backends ---------------------------------------------------------------

#[test]
fn racing_compare_and_set_writers_exactly_one_wins() {
    for_each_backend(racing_compare_and_set_writers_exactly_one_wins_on);
}

fn racing_compare_and_set_writers_exactly_one_wins_on(env: Env) {
    assert!(env.set("acme/api", "T", b"v1", &[]).status.success());
    for round in 1..=5i64 {
        let racers: Vec<_> = (0..4)
            .map(|i| {
                let mut c = env.cmd(&[
                    "secrets",
                    "set",
                    "--repo",
                    "acme/api",
                    "T",
                    "--if-version",
                    &round.to_string(),
                ]);
                let mut child = c
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("racer-{i}").as_bytes())
                    .unwrap();
                child
            })
            .collect();
        let codes: Vec<Option<i32>> = racers
            .into_iter()
            .map(|c| c.wait_with_output().unwrap().status.code())
            .collect();
        assert_eq!(
            codes.iter().filter(|c| **c == Some(0)).count(),
            1,
            "{codes:?}"
        );
        assert_eq!(
            codes.iter().filter(|c| **c == Some(75)).count(),
            3,
            "{codes:?}"
        );
    }
}

#[test]
fn store_locations_are_checked_and_passwords_never_shown() {
    let env = Env::empty();
    assert!(env.run(&["keygen", "--out", "k"], None).status.success());
    for (store, code, want) in [
        (
            "mysql://app:hunter2@db.internal/x",
            64,
            "mysql://app:***@db.internal/x",
        ),
        (
            "postgres://app:hunter2@127.0.0.1:1/x",
            74,
            "postgres://app:***@127.0.0.1:1/x",
        ),
        (
            "host=127.0.0.1 port=1 password=hunter2 dbname=x",
            74,
            "password=***",
        ),
    ] {
        let o = env
            .cmd(&["secrets", "list", "--repo", "acme/api"])
            .env("SEALCTL_STORE", store)
            .env("SEALCTL_MASTER_KEY", env.path("k"))
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{store}: {err}");
        assert!(err.contains(want) && !err.contains("hunter2"), "{err}");
        assert!(!env.path("mysql:").exists() && !env.path("postgres:").exists());
    }
    // A PostgreSQL database that already holds a store is not initialised twice.
    let pg = Env::on(Backend::Postgres);
    let o = pg
        .cmd(&["store", "init", "--master-key", "second.key"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already holds a sealinit store"),
        "{}",
        stderr(&o)
    );
}

/// `examples/quickstart.sh`, as root (PID namespace) and as an unprivileged
/// user (no namespace, and it says so); a failing step fails it.
#[test]
fn the_quickstart_reports_failure_and_runs_unprivileged() {
    let root = workspace_root();
    let bins = Path::new(SEALCTL).parent().unwrap().to_owned();
    let quickstart = |bin_dir: &Path, user: Option<&str>| -> Output {
        let mut c = match user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={u}"),
                    &format!("--regid={u}"),
                    "--clear-groups",
                ]);
                c.arg(root.join("examples/quickstart.sh"));
                c
            }
            None => Command::new(root.join("examples/quickstart.sh")),
        };
        c.env("SEALCTL_BIN_DIR", bin_dir)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = quickstart(&bins, None);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("as PID 1 of a new PID namespace")
            && stdout(&o).contains("quickstart OK")
    );
    let o = quickstart(&bins, Some("65534"));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("not root: no PID namespace"),
        "{}",
        stdout(&o)
    );
    // A step that fails (no sealinit to run) fails the quickstart.
    let lone = tempfile::tempdir().unwrap();
    fs::copy(SEALCTL, lone.path().join("sealctl")).unwrap();
    let o = quickstart(lone.path(), None);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stderr(&o).contains("quickstart FAILED"), "{}", stderr(&o));
}
