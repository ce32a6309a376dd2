//! The production-credential guard at every entry point of the CLI (issue
//! #15): `secrets set` and its imports refuse (65) with the rule and the
//! name, `--allow-production` lets one through and the audit trail says
//! so, a warning-level rule warns, `seal` from a file warns unless
//! `--strict`, and `secrets scan` reports what is stored, on both
//! backends. Live-looking values are built here at run time, and no output
//! may contain one.

use std::fs;
use std::process::Output;

use sealinit_testkit::*;

/// The repositories these tests use, created in each fresh store.
const REPOS: &[&str] = &["acme/api"];

fn for_each_backend(test: fn(StoreDir)) {
    for_each_with(&BACKENDS, REPOS, test);
}

/// A Stripe live key, a GitHub token with a valid checksum, and a
/// production database URL, assembled from pieces.
struct Live {
    stripe: String,
    github: String,
    database: String,
}

fn live() -> Live {
    static LIVE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    let (a, b) = LIVE.get_or_init(|| (random_text(30), random_text(24)));
    let sum = sealinit_guard::checksum(a.as_bytes());
    Live {
        stripe: ["sk", "_live_", b].concat(),
        github: ["gh", "p_", a, std::str::from_utf8(&sum).unwrap()].concat(),
        database: ["postgres://app:pw@db-main.prod", ".example.com/app"].concat(),
    }
}

/// Runs sealctl; checks that no live value appears in its output.
fn run(env: &StoreDir, args: &[&str], stdin: Option<&str>) -> Output {
    let o = env.run(args, stdin.map(str::as_bytes));
    let l = live();
    for text in [stdout(&o), stderr(&o)] {
        for (what, v) in [
            ("stripe", &l.stripe),
            ("github", &l.github[4..34].to_owned()),
        ] {
            assert!(
                !text.contains(v.as_str()),
                "sealctl {args:?} printed the {what} value"
            );
        }
        assert!(
            !text.contains("db-main.prod"),
            "sealctl {args:?} printed the database URL"
        );
    }
    o
}

/// `sealctl secrets set --repo repo args...`.
fn set(env: &StoreDir, repo: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut full = vec!["secrets", "set", "--repo", repo];
    full.extend_from_slice(args);
    run(env, &full, stdin)
}

/// `sealctl seal --key k --from-env-file input --out out args...`.
fn seal_file(env: &StoreDir, input: &str, out: &str, args: &[&str]) -> Output {
    let mut full = vec!["seal", "--key", "k", "--from-env-file", input, "--out", out];
    full.extend_from_slice(args);
    run(env, &full, None)
}

fn names(env: &StoreDir, repo: &str) -> Vec<String> {
    let o = run(env, &["secrets", "list", "--repo", repo, "--json"], None);
    let doc: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    doc.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn set_and_imports_refuse_live_credentials_unless_allowed() {
    for_each_backend(set_and_imports_refuse_live_credentials_unless_allowed_on);
}

fn set_and_imports_refuse_live_credentials_unless_allowed_on(env: StoreDir) {
    let l = live();
    let o = set(&env, "acme/api", &["STRIPE_KEY"], Some(&l.stripe));
    fails(
        &o,
        65,
        "secret STRIPE_KEY looks like a live Stripe secret or restricted key (rule stripe-live-key)",
    );
    assert!(stderr(&o).contains("use a test-mode key"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--allow-production STRIPE_KEY"),
        "{}",
        stderr(&o)
    );

    // An import is all or nothing: the clean lines are not stored either.
    fs::write(
        env.path("a.env"),
        format!(
            "PORT=8080\nGH_TOKEN={}\nSTRIPE_KEY={}\n",
            l.github, l.stripe
        ),
    )
    .unwrap();
    let o = set(&env, "acme/api", &["--from-env-file", "a.env"], None);
    fails(
        &o,
        65,
        "secret GH_TOKEN looks like a GitHub token (rule github-token), and also STRIPE_KEY (rule stripe-live-key)",
    );
    fs::write(
        env.path("a.json"),
        serde_json::json!({"PORT": "1", "K": l.stripe}).to_string(),
    )
    .unwrap();
    let o = set(&env, "acme/api", &["--from-json", "a.json"], None);
    fails(&o, 65, "secret K looks like a live Stripe");
    assert!(names(&env, "acme/api").is_empty());

    // Let through on purpose: one name at a time, recorded.
    let o = set(
        &env,
        "acme/api",
        &["--from-env-file", "a.env", "--allow-production", "GH_TOKEN"],
        None,
    );
    fails(&o, 65, "secret STRIPE_KEY looks like a live Stripe");
    let o = set(
        &env,
        "acme/api",
        &[
            "--from-env-file",
            "a.env",
            "--allow-production",
            "GH_TOKEN",
            "--allow-production",
            "STRIPE_KEY",
            "--json",
        ],
        None,
    );
    ok(&o);
    assert!(
        stderr(&o).contains(
            "GH_TOKEN stored although it looks like a production credential (github-token)"
        ),
        "{}",
        stderr(&o)
    );
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["name"], "GH_TOKEN");
    assert_eq!(
        lines[1]["allowed_production"],
        serde_json::json!(["github-token"])
    );
    assert!(lines[0].get("allowed_production").is_none());
    assert_eq!(names(&env, "acme/api"), ["GH_TOKEN", "PORT", "STRIPE_KEY"]);
    let o = run(&env, &["audit", "--repo", "acme/api", "--json"], None);
    let last: serde_json::Value =
        serde_json::from_str(stdout(ok(&o)).lines().last().unwrap()).unwrap();
    assert_eq!(
        last["detail"]["allowed_production"],
        serde_json::json!([
            {"name": "GH_TOKEN", "rules": ["github-token"]},
            {"name": "STRIPE_KEY", "rules": ["stripe-live-key"]}
        ])
    );
    assert!(last["actor"].as_str().is_some_and(|a| !a.is_empty()));

    // A warning-level rule stores the value and says so.
    let o = set(
        &env,
        "acme/api",
        &["DATABASE_URL", "--json"],
        Some(&l.database),
    );
    ok(&o);
    assert!(
        stderr(&o).contains("warning: DATABASE_URL looks like a database URL whose host is not local or whose name says production (rule database-url)"),
        "{}",
        stderr(&o)
    );
    let doc: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(doc["warnings"], serde_json::json!(["database-url"]));
    let o = set(
        &env,
        "acme/api",
        &["LOCAL_DB"],
        Some("postgres://app@localhost/app_test"),
    );
    assert!(!stderr(ok(&o)).contains("warning"), "{}", stderr(&o));
}

#[test]
fn scan_reports_stored_credentials_by_name_and_rule() {
    for_each_backend(scan_reports_stored_credentials_by_name_and_rule_on);
}

fn scan_reports_stored_credentials_by_name_and_rule_on(env: StoreDir) {
    let l = live();
    env.create(&["clean/repo"]);
    ok(&set(&env, "clean/repo", &["PORT"], Some("8080")));
    ok(&run(&env, &["secrets", "scan"], None));
    ok(&set(
        &env,
        "acme/api",
        &["STRIPE_KEY", "--allow-production", "STRIPE_KEY"],
        Some(&l.stripe),
    ));
    env.create(&["acme/web"]);
    ok(&set(&env, "acme/web", &["DATABASE_URL"], Some(&l.database)));
    let o = run(&env, &["secrets", "scan", "--json"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let found: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        found,
        [
            serde_json::json!({"repo": "acme/api", "name": "STRIPE_KEY", "rule": "stripe-live-key", "level": "refuse"}),
            serde_json::json!({"repo": "acme/web", "name": "DATABASE_URL", "rule": "database-url", "level": "warn"}),
        ]
    );
    assert!(stderr(&o).contains("2 secret(s) look like live or production credentials"));
    let o = run(&env, &["secrets", "scan", "--repo", "ACME/API"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("acme/api  STRIPE_KEY  stripe-live-key"),
        "{}",
        stdout(&o)
    );
    ok(&run(
        &env,
        &["secrets", "scan", "--repo", "clean/repo"],
        None,
    ));
    fails(
        &run(&env, &["secrets", "scan", "--repo", "no/such"], None),
        66,
        "repository no/such does not exist",
    );
    let o = run(&env, &["audit", "--json"], None);
    assert!(
        stdout(ok(&o))
            .lines()
            .any(|l| l.contains("\"action\":\"scan\""))
    );
}

#[test]
fn seal_from_a_file_warns_and_strict_refuses() {
    let env = StoreDir::empty();
    let l = live();
    ok(&env.run(&["keygen", "--out", "k"], None));
    fs::write(
        env.path("s.env"),
        format!("PORT=1\nSTRIPE_KEY={}\n", l.stripe),
    )
    .unwrap();
    let o = seal_file(&env, "s.env", "b", &[]);
    ok(&o);
    assert!(
        stderr(&o).contains("warning: STRIPE_KEY looks like a live Stripe"),
        "{}",
        stderr(&o)
    );
    assert!(env.path("b").exists());
    let o = seal_file(&env, "s.env", "b2", &["--strict"]);
    fails(&o, 65, "secret STRIPE_KEY looks like a live Stripe");
    assert!(!env.path("b2").exists());
    fs::write(env.path("clean.env"), "PORT=1\n").unwrap();
    let o = seal_file(&env, "clean.env", "b3", &["--strict"]);
    assert!(!stderr(ok(&o)).contains("warning"));
}
