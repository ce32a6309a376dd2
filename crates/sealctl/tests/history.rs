//! Versions, rollback, retention and the audit trail (issue #14), through
//! the real binaries, on both backends.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use sealinit_testkit::*;

/// The repositories these tests use, created in each fresh store.
const REPOS: &[&str] = &["acme/api"];

type Env = StoreDir;

/// SQLite, PostgreSQL, and `sealctl --server` in front of SQLite.
fn for_each_backend(test: fn(Env)) {
    for_each_with(&CLIENTS, REPOS, test);
}

/// The store backends only (`repos rm` and master keys are the local
/// store's).
fn for_each_store_backend(test: fn(Env)) {
    for_each_with(&BACKENDS, REPOS, test);
}

fn set(env: &Env, name: &str, value: &str) -> Output {
    let o = env.run(
        &["secrets", "set", "--repo", "acme/api", name],
        Some(value.as_bytes()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

fn lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of `name` as a sandbox sees it.
fn sealed_value(env: &Env, name: &str) -> String {
    let (b, k) = (env.path("b"), env.path("k"));
    let _ = std::fs::remove_file(&k);
    let o = env.run(
        &[
            "seal",
            "--repo",
            "acme/api",
            "--out",
            b.to_str().unwrap(),
            "--key-out",
            k.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new(workspace_bin("sealinit"))
        .args([
            "--bundle",
            b.to_str().unwrap(),
            "--key-file",
            k.to_str().unwrap(),
        ])
        .args(["sh", "-c", &format!("printf %s \"${name}\"")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    stdout(&o)
}

fn user() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    stdout(&o).trim().to_owned()
}

/// Who the history names: the OS user, or through the service its token.
fn actor_ok(env: &Env, actor: &serde_json::Value) -> bool {
    match env.backend {
        Backend::Service => actor
            .as_str()
            .is_some_and(|a| a.starts_with("token tests (tk-")),
        _ => *actor == user().as_str(),
    }
}

/// Issue #28, point 7: the deleted secrets of a repository, each with the
/// version a restore rolls back to (the page's "Restore" does the same).
#[test]
fn deleted_secrets_are_listed_with_the_version_that_restores_them() {
    for_each_store_backend(deleted_on);
}

fn deleted_on(env: Env) {
    set(&env, "GONE", "one");
    set(&env, "GONE", "two");
    set(&env, "KEPT", "k");
    set(&env, "BACK", "b");
    let rm = |name: &str| {
        ok(&env.run(&["secrets", "rm", "--repo", "acme/api", name], None))
            .status
            .success()
    };
    assert!(rm("GONE") && rm("BACK"));
    set(&env, "BACK", "b2");
    let deleted = || {
        let o = env.run(
            &[
                "secrets",
                "list",
                "--repo",
                "acme/api",
                "--deleted",
                "--json",
            ],
            None,
        );
        serde_json::from_str::<serde_json::Value>(&stdout(ok(&o))).unwrap()
    };
    let list = deleted();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "GONE");
    assert_eq!(list[0]["version"], 3);
    assert_eq!(list[0]["restorable"], 2);
    assert!(actor_ok(&env, &list[0]["actor"]), "{list:?}");
    let o = env.run(
        &["secrets", "list", "--repo", "acme/api", "--deleted"],
        None,
    );
    assert!(
        stdout(&o).contains("restore: secrets rollback --to 2"),
        "{}",
        stdout(&o)
    );
    ok(&env.run(
        &[
            "secrets", "rollback", "--repo", "acme/api", "GONE", "--to", "2",
        ],
        None,
    ));
    assert_eq!(sealed_value(&env, "GONE"), "two");
    assert_eq!(deleted(), serde_json::json!([]));
}

#[test]
fn every_set_is_a_version_rm_is_a_marker_and_rollback_writes_a_new_one() {
    for_each_backend(versions_on);
}

fn versions_on(env: Env) {
    set(&env, "T", "one");
    set(&env, "T", "two");
    let o = env.run(&["secrets", "rm", "--repo", "acme/api", "T"], None);
    assert!(o.status.success());
    set(&env, "T", "three");
    let o = env.run(
        &["secrets", "history", "--repo", "acme/api", "T", "--json"],
        None,
    );
    let h = lines(&o);
    let versions: Vec<(i64, bool, i64)> = h
        .iter()
        .map(|e| {
            (
                e["version"].as_i64().unwrap(),
                e["deleted"].as_bool().unwrap(),
                e["size"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [(1, false, 3), (2, false, 3), (3, true, 0), (4, false, 5)]
    );
    assert!(h.iter().all(|e| actor_ok(&env, &e["actor"])), "{h:?}");
    assert!(!stdout(&o).contains("one") && !stdout(&o).contains("three"));
    // Rolling back is a write: version 5 holds version 1's value.
    let o = env.run(
        &[
            "secrets", "rollback", "--repo", "acme/api", "T", "--to", "1", "--json",
        ],
        None,
    );
    assert_eq!(lines(&o)[0]["version"], 5, "{}", stderr(&o));
    assert_eq!(sealed_value(&env, "T"), "one");
    // A delete marker, or a version that never was, cannot be restored.
    for to in ["3", "9"] {
        let o = env.run(
            &["secrets", "rollback", "--repo", "acme/api", "T", "--to", to],
            None,
        );
        assert_eq!(o.status.code(), Some(66), "{to}: {}", stderr(&o));
    }
}

/// `secrets list` names who wrote each current version, and dates a
/// secret from its first version since its last delete (one query on each
/// backend, no history walk).
#[test]
fn list_gives_the_writer_and_the_creation_since_the_last_delete() {
    for_each_store_backend(list_meta_on);
}

fn list_meta_on(env: Env) {
    set(&env, "T", "one");
    ok(&env.run(&["secrets", "rm", "--repo", "acme/api", "T"], None));
    if env.backend == Backend::Sqlite {
        // Date the first life a day back, so that a wrong choice shows.
        let db = rusqlite::Connection::open(&env.store).unwrap();
        db.execute(
            "UPDATE secret_versions SET created_at = created_at - 86400",
            [],
        )
        .unwrap();
    }
    set(&env, "T", "two");
    set(&env, "T", "three");
    let o = env.run(&["secrets", "list", "--repo", "acme/api", "--json"], None);
    let list: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    let t = &list[0];
    assert_eq!(t["version"], 4, "{list}");
    assert!(actor_ok(&env, &t["updated_by"]), "{list}");
    let h = lines(&env.run(
        &["secrets", "history", "--repo", "acme/api", "T", "--json"],
        None,
    ));
    assert_eq!(
        t["created_at"], h[2]["at"],
        "version 3 began its life: {h:?}"
    );
    assert_eq!(t["updated_at"], h[3]["at"], "{h:?}");
}

#[test]
fn retention_keeps_the_newest_values_and_every_history_entry() {
    for backend in CLIENTS {
        let env = Env::empty_on(backend);
        let o = env.run(&["store", "init", "--keep", "2"], None);
        assert!(o.status.success(), "{}", stderr(&o));
        env.create(REPOS);
        for v in ["a1", "a2", "a3", "a4"] {
            set(&env, "T", v);
        }
        let o = env.run(
            &["secrets", "history", "--repo", "acme/api", "T", "--json"],
            None,
        );
        let pruned: Vec<bool> = lines(&o)
            .iter()
            .map(|e| e["pruned"].as_bool().unwrap())
            .collect();
        assert_eq!(pruned, [true, true, false, false], "{backend:?}");
        let o = env.run(
            &[
                "secrets", "rollback", "--repo", "acme/api", "T", "--to", "2",
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(66), "{backend:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("retention"), "{}", stderr(&o));
        let o = env.run(
            &[
                "secrets", "rollback", "--repo", "acme/api", "T", "--to", "3",
            ],
            None,
        );
        assert!(o.status.success(), "{backend:?}: {}", stderr(&o));
        assert_eq!(sealed_value(&env, "T"), "a3");
    }
}

#[test]
fn the_audit_trail_records_every_change_and_seal_never_a_value() {
    for_each_store_backend(audit_on);
}

fn audit_on(env: Env) {
    set(&env, "TOKEN", "tok-AUDIT-SECRET-1");
    let o = env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "TOKEN",
            "--if-version",
            "7",
        ],
        Some(b"tok-AUDIT-SECRET-2"),
    );
    assert_eq!(o.status.code(), Some(75));
    assert_eq!(sealed_value(&env, "TOKEN"), "tok-AUDIT-SECRET-1");
    let o = env.run(
        &[
            "secrets", "rollback", "--repo", "acme/api", "TOKEN", "--to", "1",
        ],
        None,
    );
    assert!(o.status.success());
    set(&env, "OTHER", "x");
    let o = env.run(&["secrets", "rm", "--repo", "acme/api", "OTHER"], None);
    assert!(o.status.success());
    let o = env.run(&["run", "--repo", "acme/api", "--", "true"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    set(&env, "W", "w");
    env.create(&["acme/web"]);
    let o = env.run(&["secrets", "set", "--repo", "acme/web", "W"], Some(b"w"));
    assert!(o.status.success());
    let o = env.run(&["repos", "rm", "acme/web"], None);
    assert!(o.status.success());
    let o = env.run(&["store", "rotate-master-key", "--new", "new.key"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(env.path("new.key"), env.path("master.key")).unwrap();

    let o = env.run(&["audit", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.contains("AUDIT-SECRET"), "{text}");
    let records = lines(&o);
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    // The failed compare-and-set left no record: a change and its record
    // are one transaction.
    assert_eq!(
        actions,
        [
            "repo-create",
            "set",
            "seal",
            "rollback",
            "set",
            "rm",
            "seal",
            "set",
            "repo-create",
            "set",
            "repo-rm",
            "rotate-master-key"
        ],
        "{text}"
    );
    assert!(records.iter().all(|r| r["actor"] == user().as_str()));
    let seal = &records[6];
    assert_eq!(seal["repo"], "acme/api");
    assert_eq!(seal["detail"]["label"], "acme/api");
    assert!(seal["detail"]["expires"].is_u64());
    assert_eq!(
        records[3]["detail"],
        serde_json::json!({"name": "TOKEN", "to": 1, "version": 2})
    );
    // Filters.
    let o = env.run(&["audit", "--repo", "acme/web", "--json"], None);
    let web: Vec<String> = lines(&o)
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(web, ["repo-create", "set", "repo-rm"]);
    let o = env.run(&["audit", "--since", "4102444800", "--json"], None);
    assert_eq!(stdout(&o), "");
    // After the rotation, the history still decrypts: roll back to v1.
    let o = env.run(
        &[
            "secrets", "rollback", "--repo", "acme/api", "TOKEN", "--to", "1",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(Path::new(&env.path("master.key")).exists());
}
