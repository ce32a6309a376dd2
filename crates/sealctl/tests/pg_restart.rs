//! PostgreSQL going away under a fleet (issue #14): commands fail with a
//! clear error (74) that never shows the password, never report success for
//! a write that did not commit, and work again after the restart without
//! intervention. Its own test binary: it stops its own server.

use std::process::Stdio;

use sealinit_testkit::*;

#[test]
fn a_restart_fails_commands_cleanly_and_needs_no_intervention() {
    let env = StoreDir::on(Backend::Postgres);
    env.create(&["acme/api"]);
    let set = |name: &str, value: &str| {
        env.run(
            &["secrets", "set", "--repo", "acme/api", name],
            Some(value.as_bytes()),
        )
    };
    assert!(set("BEFORE", "b").status.success());

    // Writers in flight while the server crashes: each either committed
    // (and said so) or failed (and said so).
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let mut c = env.cmd(&["secrets", "set", "--repo", "acme/api", &format!("W{i}")]);
            let mut child = c
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"w").unwrap();
            child
        })
        .collect();
    pg_server().stop();
    let results: Vec<(String, Option<i32>, String)> = writers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let o = c.wait_with_output().unwrap();
            (format!("W{i}"), o.status.code(), stderr(&o))
        })
        .collect();

    // While it is down: 74, with the place but never a password.
    let o = set("DURING", "d");
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));

    pg_server().start_again();
    assert!(set("AFTER", "a").status.success());
    let o = env.run(&["secrets", "list", "--repo", "acme/api", "--json"], None);
    let listed: Vec<String> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.contains(&"BEFORE".to_owned()) && listed.contains(&"AFTER".to_owned()));
    assert!(!listed.contains(&"DURING".to_owned()));
    // (A failure may still have committed, if the crash took only the
    // acknowledgement: the client cannot know. A success always did.)
    for (name, code, err) in results {
        match code {
            Some(0) => assert!(
                listed.contains(&name),
                "{name} said committed but is not there"
            ),
            Some(74) => assert!(
                err.contains("store ") && !err.contains("password="),
                "{name}: {err}"
            ),
            other => panic!("{name}: exit {other:?}: {err}"),
        }
    }
}
