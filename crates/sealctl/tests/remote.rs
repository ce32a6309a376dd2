//! `sealctl --server URL`: the store's commands against the real service
//! process, with no local store or master key in sight (issue #16): the
//! same outputs and exit codes as the local store, values sent sealed.

use std::process::{Command, Output, Stdio};

use sealinit_testkit::*;

const VALUE: &str = "remote-VALUE-never-in-the-clear-5a9d";

/// A store behind the service, every command through `--server`.
struct Remote {
    env: StoreDir,
}

impl Remote {
    fn start() -> Self {
        let env = StoreDir::on(Backend::Service);
        env.create(&["acme/api"]);
        Self { env }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.env.cmd(args)
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let o = output_with_stdin(&mut self.cmd(args), stdin.unwrap_or_default().as_bytes());
        for text in [stdout(&o), stderr(&o)] {
            assert!(!text.contains(VALUE), "sealctl {args:?} printed a value");
        }
        o
    }
}

#[test]
fn the_store_commands_work_against_the_service() {
    let r = Remote::start();
    let set = |name: &str, value: &str, extra: &[&str]| {
        let mut args = vec!["secrets", "set", "--repo", "acme/api", name, "--json"];
        args.extend_from_slice(extra);
        r.run(&args, Some(value))
    };
    let o = set("TOKEN", VALUE, &[]);
    assert_eq!(json_lines(ok(&o))[0]["version"], 1);
    let o = set("TOKEN", "second", &["--if-version", "1"]);
    assert_eq!(json_lines(ok(&o))[0]["version"], 2);
    fails(
        &set("TOKEN", "third", &["--if-version", "1"]),
        75,
        "is at version 2, not 1",
    );

    // Imports: all or nothing, errors by line; the guard.
    std::fs::write(r.env.path("bad.env"), "A=1\nB=2\n3BAD=x\n").unwrap();
    fails(
        &r.run(
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
        "line 3",
    );
    std::fs::write(r.env.path("good.env"), "A=1\nB=2\n").unwrap();
    ok(&r.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/api",
            "--from-env-file",
            "good.env",
        ],
        None,
    ));
    let live = ["sk", "_live_", "abcdefghij0123456789ABCD"].concat();
    fails(
        &set("STRIPE", &live, &[]),
        65,
        "secret STRIPE looks like a live Stripe",
    );
    let o = set("STRIPE", &live, &["--allow-production", "STRIPE"]);
    assert_eq!(
        json_lines(ok(&o))[0]["allowed_production"],
        serde_json::json!(["stripe-live-key"])
    );

    // Metadata, history, rollback, rm.
    let o = ok(&r.run(&["secrets", "list", "--repo", "acme/api", "--json"], None)).clone();
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B", "STRIPE", "TOKEN"]);
    let o = r.run(
        &[
            "secrets", "history", "--repo", "acme/api", "TOKEN", "--json",
        ],
        None,
    );
    assert_eq!(json_lines(ok(&o)).len(), 2);
    let o = r.run(
        &[
            "secrets", "rollback", "--repo", "acme/api", "TOKEN", "--to", "1", "--json",
        ],
        None,
    );
    assert_eq!(json_lines(ok(&o))[0]["version"], 3);
    fails(
        &r.run(&["secrets", "rm", "--repo", "acme/api", "A", "NOPE"], None),
        66,
        "NOPE",
    );
    let o = ok(&r.run(&["secrets", "list", "--repo", "acme/api"], None)).clone();
    assert!(
        stdout(&o).contains("A "),
        "nothing removed when one name is missing"
    );
    ok(&r.run(&["secrets", "rm", "--repo", "acme/api", "A", "B"], None));
    let o = r.run(&["repos", "--json"], None);
    let repos = repos_json(ok(&o));
    assert_eq!(
        repos,
        serde_json::json!([{"repo": "acme/api", "secrets": 2}])
    );

    // seal --repo and run: the value (rolled back to version 1) arrives.
    ok(&r.run(
        &["seal", "--repo", "acme/api", "--out", "b", "--key-out", "k"],
        None,
    ));
    let o = Command::new(workspace_bin("sealinit"))
        .args(["--bundle", r.env.path("b").to_str().unwrap()])
        .args(["--key-file", r.env.path("k").to_str().unwrap()])
        .args([
            "sh",
            "-c",
            &format!("test \"$TOKEN\" = '{VALUE}' && echo same"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "same", "{}", stderr(&o));
    let same = format!("test \"$TOKEN\" = '{VALUE}' && echo same");
    let o = r.run(
        &["run", "--repo", "acme/api", "--", "sh", "-c", &same],
        None,
    );
    assert_eq!(stdout(ok(&o)).trim(), "same");

    // The audit trail names the token.
    let o = r.run(&["audit", "--repo", "acme/api", "--json"], None);
    let seals: Vec<serde_json::Value> = json_lines(ok(&o))
        .into_iter()
        .filter(|l| l["action"] == "seal")
        .collect();
    assert_eq!(seals.len(), 2);
    assert!(
        seals[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("token tests (tk-")
    );

    // Errors: a wrong token (77), a local-only command (64), no server (74).
    let o = r
        .cmd(&["repos"])
        .env("SEALCTL_TOKEN", format!("sit_{}", "C".repeat(36)))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    fails(
        &r.run(&["store", "migrate"], None),
        64,
        "works on a local store only",
    );
    let o = r
        .cmd(&["repos"])
        .env("SEALCTL_SERVER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
}
