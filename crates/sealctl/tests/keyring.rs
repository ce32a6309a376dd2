//! Envelope encryption and the master keyring (issue #14): a rotation
//! re-wraps data keys only, processes holding the old key keep working
//! until it is retired, a data key rotation re-encrypts one repository,
//! and seals from several processes never fail while keys change. Through
//! the real binaries, on both backends.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use sealinit_testkit::*;

/// The repositories these tests use, created in each fresh store.
const REPOS: &[&str] = &["acme/api", "acme/web"];

const VALUE: &str = "keyring-VALUE-never-printed-41d7";

fn for_each_backend(test: fn(StoreDir)) {
    for_each_with(&BACKENDS, REPOS, test);
}

/// Runs sealctl with the keyring `keys` (paths relative to the store
/// directory); checks that no value is printed.
fn with_keys(env: &StoreDir, keys: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    for k in keys.iter().rev() {
        full.splice(at..at, ["--master-key", k]);
    }
    let o = env.run(&full, stdin.map(str::as_bytes));
    for text in [stdout(&o), stderr(&o)] {
        assert!(
            !text.contains(VALUE),
            "sealctl {args:?} printed a value: {text}"
        );
    }
    o
}

/// `secrets set --repo repo name` of `value`, which must succeed.
fn set(env: &StoreDir, keys: &[&str], repo: &str, name: &str, value: &str) {
    ok(&with_keys(
        env,
        keys,
        &["secrets", "set", "--repo", repo, name],
        Some(value),
    ));
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).lines().next().unwrap()).unwrap()
}

/// `TOKEN` of acme/api as a sandbox would see it, through `sealctl run`.
fn token(env: &StoreDir, keys: &[&str]) -> Output {
    with_keys(
        env,
        keys,
        &[
            "run",
            "--repo",
            "acme/api",
            "--",
            "sh",
            "-c",
            "printf %s \"$TOKEN\" | md5sum",
        ],
        None,
    )
}

fn md5(s: &str) -> String {
    let o = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | md5sum", "sh", s])
        .output()
        .unwrap();
    stdout(&o)
}

/// The ciphertexts of the SQLite store, by (table, repo, name, version).
fn ciphertexts(env: &StoreDir) -> Vec<(String, String, String, i64, Vec<u8>)> {
    let db = rusqlite::Connection::open(env.path("data/store.db")).unwrap();
    let mut out = Vec::new();
    for table in ["secrets", "secret_versions"] {
        let mut stmt = db
            .prepare(&format!(
                "SELECT repo, name, version, ciphertext FROM {table}
                 WHERE ciphertext IS NOT NULL ORDER BY repo, name, version"
            ))
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((table.to_owned(), r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

#[test]
fn a_rotation_rewraps_only_and_the_old_key_works_until_retired() {
    for_each_backend(a_rotation_rewraps_only_and_the_old_key_works_until_retired_on);
}

fn a_rotation_rewraps_only_and_the_old_key_works_until_retired_on(env: StoreDir) {
    let old = ["master.key"];
    set(&env, &old, "acme/api", "TOKEN", "v1");
    set(&env, &old, "acme/api", "TOKEN", VALUE);
    set(&env, &old, "acme/web", "OTHER", "o");
    let old_id = json(ok(&with_keys(
        &env,
        &old,
        &["store", "master-keys", "--json"],
        None,
    )))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = (env.backend == Backend::Sqlite).then(|| ciphertexts(&env));

    let o = with_keys(
        &env,
        &old,
        &["store", "rotate-master-key", "--new", "new.key", "--json"],
        None,
    );
    let r = json(ok(&o));
    assert_eq!(r["rewrapped"], 2, "{r}");
    assert_eq!(r["created"], true, "{r}");
    assert_eq!(r["previous"], serde_json::json!([old_id]), "{r}");
    assert!(
        stderr(&o).contains(&format!("retire-master-key {old_id}")),
        "{}",
        stderr(&o)
    );
    let new_id = r["primary"].as_str().unwrap().to_owned();
    assert_eq!(
        fs::metadata(env.path("new.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    if let Some(before) = before {
        assert_eq!(
            ciphertexts(&env),
            before,
            "a master-key rotation touches no value"
        );
    }

    // Both keys open everything; so does a directory holding both.
    fs::create_dir(env.path("ring")).unwrap();
    fs::set_permissions(env.path("ring"), fs::Permissions::from_mode(0o700)).unwrap();
    for k in ["master.key", "new.key"] {
        fs::copy(env.path(k), env.path("ring").join(k)).unwrap();
    }
    for keys in [&["master.key"][..], &["new.key"], &["ring"]] {
        assert_eq!(stdout(ok(&token(&env, keys))), md5(VALUE), "with {keys:?}");
    }
    let listed: Vec<serde_json::Value> = stdout(ok(&with_keys(
        &env,
        &["new.key"],
        &["store", "master-keys", "--json"],
        None,
    )))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], old_id);
    assert_eq!(listed[0]["primary"], false);
    assert_eq!(listed[1]["id"], new_id);
    assert_eq!(listed[1]["primary"], true);
    assert_eq!(listed[1]["given"], true);

    // The old key alone still writes existing repositories, but a new
    // repository's data key needs the primary.
    set(&env, &old, "acme/api", "MORE", "m");
    fails(
        &with_keys(&env, &old, &["repos", "create", "acme/new"], None),
        65,
        &format!("a new repository (acme/new) needs the store's primary master key {new_id}"),
    );
    ok(&with_keys(
        &env,
        &["new.key"],
        &["repos", "create", "acme/new"],
        None,
    ));
    set(&env, &["new.key"], "acme/new", "X", "x");

    fails(
        &with_keys(
            &env,
            &["new.key"],
            &["store", "retire-master-key", &new_id],
            None,
        ),
        64,
        "is the store's primary",
    );
    fails(
        &with_keys(
            &env,
            &["new.key"],
            &["store", "retire-master-key", "mk-0000000000000000"],
            None,
        ),
        66,
        "the store has no master key mk-0000000000000000",
    );
    let o = with_keys(
        &env,
        &["new.key"],
        &["store", "retire-master-key", &old_id, "--json"],
        None,
    );
    assert_eq!(json(ok(&o))["retired"], old_id.as_str());
    fails(
        &token(&env, &old),
        65,
        &format!("no master key given opens this store (it knows {new_id})"),
    );
    assert_eq!(stdout(ok(&token(&env, &["new.key"]))), md5(VALUE));
    // The history survived: version 1 rolls back under the new key.
    ok(&with_keys(
        &env,
        &["new.key"],
        &[
            "secrets", "rollback", "--repo", "acme/api", "TOKEN", "--to", "1",
        ],
        None,
    ));
    assert_eq!(stdout(ok(&token(&env, &["new.key"]))), md5("v1"));

    // A key made beforehand (and handed to every host first) is used as is.
    ok(&env.run(&["keygen", "--out", "third.key"], None));
    let r = json(ok(&with_keys(
        &env,
        &["new.key"],
        &["store", "rotate-master-key", "--new", "third.key", "--json"],
        None,
    )));
    assert_eq!(r["created"], false, "{r}");
    assert_eq!(r["rewrapped"], 3, "{r}");
    assert_eq!(stdout(ok(&token(&env, &["third.key"]))), md5("v1"));
    // Rotating to the primary again changes nothing.
    let r = json(ok(&with_keys(
        &env,
        &["third.key"],
        &["store", "rotate-master-key", "--new", "third.key", "--json"],
        None,
    )));
    assert_eq!(r["rewrapped"], 0, "{r}");

    let o = with_keys(&env, &["third.key"], &["audit", "--json"], None);
    let actions: Vec<String> = stdout(ok(&o))
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .filter(|a| a.contains("master-key"))
        .collect();
    assert_eq!(
        actions,
        [
            "rotate-master-key",
            "retire-master-key",
            "rotate-master-key",
            "rotate-master-key"
        ]
    );
}

#[test]
fn a_data_key_rotation_re_encrypts_one_repository() {
    for_each_backend(a_data_key_rotation_re_encrypts_one_repository_on);
}

fn a_data_key_rotation_re_encrypts_one_repository_on(env: StoreDir) {
    let k = ["master.key"];
    set(&env, &k, "acme/api", "TOKEN", "v1");
    set(&env, &k, "Acme/API", "TOKEN", VALUE);
    set(&env, &k, "acme/web", "OTHER", "o");
    let before = (env.backend == Backend::Sqlite).then(|| ciphertexts(&env));
    let r = json(ok(&with_keys(
        &env,
        &k,
        &["store", "rotate-data-key", "--repo", "ACME/api", "--json"],
        None,
    )));
    // The current value and both versions in the history.
    assert_eq!(r["reencrypted"], 3, "{r}");
    if let Some(before) = before {
        let after = ciphertexts(&env);
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b.0, &b.1, &b.2, b.3), (&a.0, &a.1, &a.2, a.3));
            let unchanged = b.4 == a.4;
            assert_eq!(unchanged, b.1 == "acme/web", "{} {} {}", b.0, b.1, b.2);
        }
    }
    assert_eq!(stdout(ok(&token(&env, &k))), md5(VALUE));
    ok(&with_keys(
        &env,
        &k,
        &[
            "secrets", "rollback", "--repo", "acme/api", "TOKEN", "--to", "1",
        ],
        None,
    ));
    assert_eq!(stdout(ok(&token(&env, &k))), md5("v1"));
    fails(
        &with_keys(
            &env,
            &k,
            &["store", "rotate-data-key", "--repo", "acme/none"],
            None,
        ),
        66,
        "repository acme/none does not exist",
    );
    // With two master keys in the store, both are needed: a process with
    // only the one left out would lose the repository.
    ok(&with_keys(
        &env,
        &k,
        &["store", "rotate-master-key", "--new", "new.key"],
        None,
    ));
    fails(
        &with_keys(
            &env,
            &["new.key"],
            &["store", "rotate-data-key", "--repo", "acme/api"],
            None,
        ),
        65,
        "needs every master key the store knows",
    );
    ok(&with_keys(
        &env,
        &["new.key", "master.key"],
        &["store", "rotate-data-key", "--repo", "acme/api"],
        None,
    ));
    for keys in [&["master.key"][..], &["new.key"]] {
        assert_eq!(stdout(ok(&token(&env, keys))), md5("v1"), "with {keys:?}");
    }
}

/// A damaged wrapped data key is reported, and a rotation that meets it
/// changes nothing and leaves no new key file behind.
#[test]
fn a_damaged_data_key_stops_a_rotation_and_changes_nothing() {
    let env = StoreDir::new();
    env.create(REPOS);
    let k = ["master.key"];
    set(&env, &k, "acme/api", "TOKEN", VALUE);
    set(&env, &k, "acme/web", "OTHER", "o");
    let db = rusqlite::Connection::open(env.path("data/store.db")).unwrap();
    db.execute(
        "UPDATE data_keys SET wrapped = zeroblob(length(wrapped)) WHERE repo_key = 'acme/web'",
        [],
    )
    .unwrap();
    drop(db);
    let o = with_keys(
        &env,
        &k,
        &["store", "rotate-master-key", "--new", "new.key"],
        None,
    );
    fails(&o, 65, "acme/web");
    assert!(!env.path("new.key").exists());
    assert_eq!(stdout(ok(&token(&env, &k))), md5(VALUE));
    let o = with_keys(&env, &k, &["store", "master-keys", "--json"], None);
    assert_eq!(stdout(ok(&o)).lines().count(), 1);
}

#[test]
fn seals_from_several_processes_never_fail_while_keys_rotate() {
    for_each_backend(seals_from_several_processes_never_fail_while_keys_rotate_on);
}

/// 200 seals from 4 processes (two holding only the old master key, two a
/// keyring directory of old and new) while the master key rotates and the
/// repository's data key is replaced: none may fail.
fn seals_from_several_processes_never_fail_while_keys_rotate_on(env: StoreDir) {
    let k = ["master.key"];
    let mut doc = String::new();
    for i in 0..20 {
        doc.push_str(&format!("S{i}=value-{i}\n"));
    }
    fs::write(env.path("twenty.env"), doc).unwrap();
    ok(&with_keys(
        &env,
        &k,
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "twenty.env",
        ],
        None,
    ));
    ok(&env.run(&["keygen", "--out", "new.key"], None));
    fs::create_dir(env.path("ring")).unwrap();
    for f in ["master.key", "new.key"] {
        fs::copy(env.path(f), env.path("ring").join(f)).unwrap();
    }

    const WORKERS: usize = 4;
    const SEALS: usize = 50;
    let rotated = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for w in 0..WORKERS {
        let key = if w % 2 == 0 { "master.key" } else { "ring" };
        let script = format!(
            "for i in $(seq {SEALS}); do
                 if \"$SEALCTL\" seal --repo acme/api --master-key {key} --out b{w} --key-out - >/dev/null 2>err{w}
                 then echo ok; else echo FAIL; cat err{w} >&2; fi
             done"
        );
        let mut child = env
            .cmd(&[])
            .env_remove("SEALCTL_MASTER_KEY")
            .env("SEALCTL_LOG", "warn")
            .env("SEALCTL", workspace_bin("sealctl"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_with_program("sh", &["-c", &script]);
        let out = child.stdout.take().unwrap();
        let (tx, rotated, after) = (tx.clone(), rotated.clone(), after.clone());
        readers.push(std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                if rotated.load(Ordering::SeqCst) {
                    after.fetch_add(1, Ordering::SeqCst);
                }
                let _ = tx.send(());
                lines.push(line);
            }
            lines
        }));
        children.push(child);
    }
    drop(tx);
    // Rotate once every process is sealing: 20 seals done.
    for _ in 0..20 {
        rx.recv().unwrap();
    }
    ok(&with_keys(
        &env,
        &k,
        &["store", "rotate-master-key", "--new", "new.key"],
        None,
    ));
    ok(&with_keys(
        &env,
        &["ring"],
        &["store", "rotate-data-key", "--repo", "acme/api"],
        None,
    ));
    rotated.store(true, Ordering::SeqCst);

    let mut results = Vec::new();
    for (child, reader) in children.into_iter().zip(readers) {
        let o = child.wait_with_output().unwrap();
        let lines = reader.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).is_empty(), "a seal failed: {}", stderr(&o));
        results.extend(lines);
    }
    assert_eq!(results.len(), WORKERS * SEALS);
    assert!(results.iter().all(|l| l == "ok"), "{results:?}");
    assert!(
        after.load(Ordering::SeqCst) > 0,
        "the keys changed only after every seal: the test proved nothing"
    );
}

/// `Command` with the store directory's environment, running `program`.
trait SpawnWith {
    fn spawn_with_program(&mut self, program: &str, args: &[&str]) -> std::process::Child;
}

impl SpawnWith for Command {
    fn spawn_with_program(&mut self, program: &str, args: &[&str]) -> std::process::Child {
        let mut c = Command::new(program);
        c.args(args);
        if let Some(dir) = self.get_current_dir() {
            c.current_dir(dir);
        }
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}
