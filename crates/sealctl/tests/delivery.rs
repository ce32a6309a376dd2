//! Issue #25: each secret's delivery (env, setup, proxy) and a proxy
//! secret's hosts, in the store (both backends), the CLI (local and through
//! the service), the API and the bundle's two parts.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use sealinit_testkit::api::*;
use sealinit_testkit::*;

const REPOS: &[&str] = &["acme/api"];

/// A live Stripe key, assembled so that no scanner flags this file.
fn live() -> String {
    ["sk", "_live_", "51NvQ0aBcDeFgHiJkLmNoPqRsTuV"].concat()
}

fn set(env: &StoreDir, name: &str, value: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["secrets", "set", "--repo", "acme/api", name];
    args.extend_from_slice(extra);
    env.run(&args, Some(value.as_bytes()))
}

fn list(env: &StoreDir) -> Vec<serde_json::Value> {
    let o = ok(&env.run(&["secrets", "list", "--repo", "acme/api", "--json"], None)).clone();
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
}

fn route(list: &[serde_json::Value], name: &str) -> (String, Vec<String>) {
    let s = list.iter().find(|s| s["name"] == name).unwrap();
    let hosts = s["hosts"]
        .as_array()
        .map(|h| h.iter().map(|h| h.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (s["delivery"].as_str().unwrap().to_owned(), hosts)
}

/// Opens a bundle with the reader written from docs/FORMAT.md: its header,
/// and each entry as (name, value, delivery).
fn read(key: &Path, bundle: &Path) -> (serde_json::Value, Vec<(String, Vec<u8>, String)>) {
    let reader = workspace_root().join("crates/sealinit-core/tests/reader/read_bundle.py");
    let o = Command::new("/usr/bin/python3")
        .arg(reader)
        .arg(key)
        .arg(bundle)
        .arg(sealinit_core::time::now().to_string())
        .output()
        .unwrap();
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok"), "{out}{}", stderr(&o));
    let entries = lines
        .map(|l| {
            let p: Vec<&str> = l.split(' ').collect();
            let value = (0..p[1].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&p[1][i..i + 2], 16).unwrap())
                .collect();
            (p[0].to_owned(), value, p[2].to_owned())
        })
        .collect();
    let bytes = fs::read(bundle).unwrap();
    let n = u32::from_le_bytes(bytes[9..13].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[13..13 + n]).unwrap(), entries)
}

#[test]
fn deliveries_and_hosts_are_part_of_each_version() {
    for_each_with(&CLIENTS, REPOS, |env| {
        ok(&set(&env, "APP", "app-value", &[]));
        ok(&set(
            &env,
            "NPM_TOKEN",
            "npm-value",
            &["--delivery", "setup"],
        ));
        ok(&set(
            &env,
            "STRIPE",
            "sk_test_abc",
            &[
                "--delivery",
                "proxy",
                "--host",
                "API.stripe.com",
                "--host",
                "*.example.com:8443",
            ],
        ));
        let l = list(&env);
        assert_eq!(route(&l, "APP"), ("env".into(), vec![]));
        assert_eq!(route(&l, "NPM_TOKEN"), ("setup".into(), vec![]));
        assert_eq!(
            route(&l, "STRIPE"),
            (
                "proxy".into(),
                vec!["*.example.com:8443".into(), "api.stripe.com".into()]
            )
        );
        let text = stdout(&env.run(&["secrets", "list", "--repo", "acme/api"], None));
        assert!(
            text.contains("proxy → *.example.com:8443 api.stripe.com"),
            "{text}"
        );
        // A new value keeps the route; a new route makes a new version.
        ok(&set(&env, "STRIPE", "sk_test_def", &[]));
        assert_eq!(route(&list(&env), "STRIPE").0, "proxy");
        ok(&set(&env, "STRIPE", "sk_test_def", &["--delivery", "env"]));
        let l = list(&env);
        assert_eq!(route(&l, "STRIPE"), ("env".into(), vec![]));
        let v = l.iter().find(|s| s["name"] == "STRIPE").unwrap()["version"].clone();
        assert_eq!(v, 3);
        // A rollback restores the route of the version it goes back to.
        ok(&env.run(
            &[
                "secrets", "rollback", "--repo", "acme/api", "STRIPE", "--to", "2",
            ],
            None,
        ));
        assert_eq!(route(&list(&env), "STRIPE").0, "proxy");
        // One rule on every entry point.
        for (extra, says) in [
            (&["--delivery", "proxy"][..], "at least one host"),
            (
                &["--delivery", "env", "--host", "a.example.com"],
                "hosts belong to proxy",
            ),
            (
                &["--delivery", "proxy", "--host", "*.com"],
                "at least two labels",
            ),
            (&["--delivery", "proxy", "--host", "a b"], "not a host name"),
        ] {
            let o = set(&env, "BAD", "x", extra);
            assert_eq!(o.status.code(), Some(65), "{extra:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        }
        // Imports: JSON objects beside strings; a .env file takes the
        // delivery given for the whole file.
        fs::write(
            env.path("s.json"),
            r#"{"A": "a", "B": {"value": "b", "delivery": "proxy", "hosts": ["api.b.example"], "placeholder": "keep-prefix"}, "C": {"value": "c", "delivery": "setup"}}"#,
        )
        .unwrap();
        ok(&env.run(
            &[
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "--from-json",
                "s.json",
            ],
            None,
        ));
        fs::write(env.path("s.env"), "D=d\nE=e\n").unwrap();
        ok(&env.run(
            &[
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "--from-env-file",
                "s.env",
                "--delivery",
                "setup",
            ],
            None,
        ));
        let l = list(&env);
        assert_eq!(route(&l, "A").0, "env");
        assert_eq!(
            route(&l, "B"),
            ("proxy".into(), vec!["api.b.example".into()])
        );
        assert_eq!(route(&l, "C").0, "setup");
        assert_eq!(route(&l, "D").0, "setup");
        fs::write(
            env.path("bad.json"),
            r#"{"X": {"value": "x", "delivery": "sideways"}}"#,
        )
        .unwrap();
        let o = env.run(
            &[
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "--from-json",
                "bad.json",
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
        assert!(stderr(&o).contains("env, setup or proxy"), "{}", stderr(&o));
        // Every change of route is in the audit trail (local store).
        if env.backend != Backend::Service {
            let o = ok(&env.run(&["audit", "--repo", "acme/api", "--json"], None)).clone();
            assert!(
                stdout(&o).contains("\"delivery\":\"proxy\""),
                "{}",
                stdout(&o)
            );
        }
    });
}

#[test]
fn a_live_key_bound_to_its_vendor_through_the_proxy_is_let_in() {
    for_each_with(&CLIENTS, REPOS, |env| {
        let key = live();
        let o = set(&env, "STRIPE", &key, &[]);
        assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("--delivery proxy --host api.stripe.com"),
            "the advice names the proxy: {}",
            stderr(&o)
        );
        let o = set(
            &env,
            "STRIPE",
            &key,
            &["--delivery", "proxy", "--host", "evil.example.com"],
        );
        assert_eq!(o.status.code(), Some(65), "another host: {}", stderr(&o));
        ok(&set(
            &env,
            "STRIPE",
            &key,
            &["--delivery", "proxy", "--host", "api.stripe.com"],
        ));
        assert!(!stderr(&set(&env, "X", "y", &[])).contains(&key));
    });
}

#[test]
fn a_launch_has_two_parts_and_the_sandbox_never_holds_a_proxy_value() {
    for_each_with(&CLIENTS, REPOS, |env| {
        let stripe = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";
        ok(&set(&env, "APP", "app-value", &[]));
        ok(&set(
            &env,
            "NPM_TOKEN",
            "npm-setup-value",
            &["--delivery", "setup"],
        ));
        ok(&set(
            &env,
            "STRIPE",
            stripe,
            &[
                "--delivery",
                "proxy",
                "--host",
                "api.stripe.com",
                "--placeholder",
                "keep-prefix",
            ],
        ));
        let seal = |extra: &[&str]| {
            let mut args = vec!["seal", "--repo", "acme/api", "--out", "b", "--key-out", "k"];
            args.extend_from_slice(extra);
            let _ = fs::remove_file(env.path("k"));
            let _ = fs::remove_file(env.path("pk"));
            env.run(&args, None)
        };
        let o = seal(&[]);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        assert!(stderr(&o).contains("--proxy-out"), "{}", stderr(&o));
        assert!(!env.path("b").exists());
        ok(&seal(&["--proxy-out", "p", "--proxy-key-out", "pk"]));
        let (header, sandbox) = read(&env.path("k"), &env.path("b"));
        assert_eq!(header["repo"], "acme/api");
        assert!(header.get("part").is_none());
        let by = |es: &[(String, Vec<u8>, String)], n: &str| {
            es.iter().find(|e| e.0 == n).cloned().unwrap()
        };
        let placeholder = String::from_utf8(by(&sandbox, "STRIPE").1).unwrap();
        assert_ne!(placeholder, stripe);
        assert!(placeholder.starts_with("sk_test_") && placeholder.len() == stripe.len());
        assert_eq!(by(&sandbox, "STRIPE").2, "proxy");
        assert_eq!(by(&sandbox, "NPM_TOKEN").2, "setup");
        assert!(sandbox.iter().all(|e| e.1 != stripe.as_bytes()));
        let (pheader, proxy) = read(&env.path("pk"), &env.path("p"));
        assert_eq!(pheader["part"], "proxy");
        assert_eq!(
            pheader["bindings"],
            json!({"STRIPE": {"hosts": ["api.stripe.com"], "placeholder": placeholder}})
        );
        assert_eq!(by(&proxy, "STRIPE").1, stripe.as_bytes());
        assert_eq!(by(&proxy, "APP").1, b"app-value");
        // Each launch: a fresh placeholder.
        ok(&seal(&["--proxy-out", "p", "--proxy-key-out", "pk"]));
        let (_, again) = read(&env.path("k"), &env.path("b"));
        assert_ne!(by(&again, "STRIPE").1, placeholder.as_bytes());
        // sealinit: the setup step sees the setup value, the agent the
        // placeholder and not the setup value; the proxy part is refused.
        let sealinit = |bundle: &str, key: &str, setup: &[&str]| {
            let mut c = Command::new(workspace_bin("sealinit"));
            c.args(["--bundle", env.path(bundle).to_str().unwrap()])
                .args(["--key-file", env.path(key).to_str().unwrap()])
                .args(setup)
                .args([
                    "sh",
                    "-c",
                    "printf '%s|%s|%s' \"$APP\" \"${NPM_TOKEN-unset}\" \"$STRIPE\"",
                ])
                .stdin(Stdio::null());
            c.output().unwrap()
        };
        ok(&seal(&["--proxy-out", "p", "--proxy-key-out", "pk"]));
        let (_, sandbox) = read(&env.path("k"), &env.path("b"));
        let placeholder = String::from_utf8(by(&sandbox, "STRIPE").1).unwrap();
        let o = sealinit(
            "b",
            "k",
            &["--setup", "test \"$NPM_TOKEN\" = npm-setup-value"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("app-value|unset|{placeholder}"));
        ok(&seal(&["--proxy-out", "p", "--proxy-key-out", "pk"]));
        let o = sealinit("p", "pk", &["--setup", "true"]);
        assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
        assert!(stderr(&o).contains("egress proxy's part"), "{}", stderr(&o));
        // `sealctl run` does not start an egress proxy: it says so.
        let o = env.run(&["run", "--repo", "acme/api", "--", "true"], None);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        assert!(stderr(&o).contains("egress proxy"), "{}", stderr(&o));
    });
}

#[test]
fn the_api_takes_and_shows_routes_and_mints_both_parts() {
    for_each_with(&BACKENDS, REPOS, |env| {
        let writer = token(&env, &["write:acme/*", "launch:acme/*"]);
        let server = Server::start(&env, &[]);
        let w = Client::new(&server, Some(&writer));
        let s = "/repos/acme%2Fapi/secrets";
        let r = w.put(
            &format!("{s}/STRIPE"),
            json!({"value": "sk_test_x1", "delivery": "proxy", "hosts": ["api.stripe.com"]}),
        );
        assert_eq!(r.0, 201, "{:?}", r.1);
        let r = w.put(
            &format!("{s}/BAD"),
            json!({"value": "x", "delivery": "proxy"}),
        );
        assert_eq!((r.0, code(&r)), (422, "unprocessable"), "{:?}", r.1);
        assert!(message(&r).contains("at least one host"), "{}", message(&r));
        let r = w.put(
            &format!("{s}/BAD"),
            json!({"value": "x", "delivery": "nowhere"}),
        );
        assert_eq!(r.0, 400, "{:?}", r.1);
        let r = w.put(
            &format!("{s}/LIVE"),
            json!({"value": live(), "delivery": "proxy", "hosts": ["evil.example.com"]}),
        );
        assert_eq!(r.0, 422, "{:?}", r.1);
        assert!(
            message(&r).contains(r#""delivery": "proxy", "hosts": ["api.stripe.com""#),
            "{}",
            message(&r)
        );
        assert_eq!(w.put(&format!("{s}/APP"), json!({"value": "a"})).0, 201);
        let r = w.get(&format!("{s}/STRIPE"));
        assert_eq!(
            (
                &r.1["delivery"],
                &r.1["hosts"],
                &r.1["placeholder"],
                &r.1["in_body"]
            ),
            (
                &json!("proxy"),
                &json!(["api.stripe.com"]),
                &json!("random"),
                &json!(false)
            )
        );
        // Put into request bodies too: asked for, kept on a new value.
        let r = w.put(
            &format!("{s}/STRIPE"),
            json!({"value": "sk_test_x2", "in_body": true}),
        );
        assert_eq!(r.0, 200, "{:?}", r.1);
        let r = w.put(&format!("{s}/STRIPE"), json!({"value": "sk_test_x3"}));
        assert_eq!(r.0, 200, "{:?}", r.1);
        assert_eq!(w.get(&format!("{s}/STRIPE")).1["in_body"], json!(true));
        let r = w.put(&format!("{s}/APP"), json!({"value": "a", "in_body": true}));
        assert_eq!(r.0, 422, "{:?}", r.1);
        assert!(
            message(&r).contains("request bodies belongs to proxy secrets"),
            "{}",
            message(&r)
        );
        let r = w.get(s);
        let app = r.1["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "APP")
            .unwrap()
            .clone();
        assert_eq!(
            (&app["delivery"], &app["hosts"]),
            (&json!("env"), &json!([]))
        );
        let r = w.post(
            "/repos/acme%2Fapi/import",
            json!({"format": "json", "content": "{\"J\": {\"value\": \"j\", \"delivery\": \"setup\"}}"}),
        );
        assert_eq!(r.0, 200, "{:?}", r.1);
        let r = w.post("/repos/acme%2Fapi/bundles", json!({}));
        assert_eq!(r.0, 201, "{:?}", r.1);
        let b64 = |k: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(r.1[k].as_str().unwrap())
                .unwrap()
        };
        for (name, k) in [
            ("b", "bundle"),
            ("k", "key"),
            ("p", "proxy_bundle"),
            ("pk", "proxy_key"),
        ] {
            fs::write(env.path(name), b64(k)).unwrap();
        }
        let (_, sandbox) = read(&env.path("k"), &env.path("b"));
        assert!(sandbox.iter().all(|e| e.1 != b"sk_test_x3"));
        let (h, proxy) = read(&env.path("pk"), &env.path("p"));
        assert_eq!(h["bindings"]["STRIPE"]["hosts"], json!(["api.stripe.com"]));
        assert_eq!(h["bindings"]["STRIPE"]["in_body"], json!(true));
        assert!(
            proxy
                .iter()
                .any(|e| e.0 == "STRIPE" && e.1 == b"sk_test_x3")
        );
        assert!(!server.log_text().contains("sk_test_x3"));
    });
}

/// A version's route is bound into its ciphertext: a row turned from
/// `proxy` into `env` in the database no longer opens, so nothing seals it
/// into a sandbox.
#[test]
fn a_route_edited_in_the_database_does_not_decrypt() {
    let env = StoreDir::new();
    env.create(REPOS);
    ok(&set(
        &env,
        "STRIPE",
        "sk_test_route",
        &["--delivery", "proxy", "--host", "api.stripe.com"],
    ));
    let db = rusqlite::Connection::open(env.path("data/store.db")).unwrap();
    db.execute("UPDATE secrets SET route = '' WHERE name = 'STRIPE'", [])
        .unwrap();
    drop(db);
    let o = env.run(
        &["seal", "--repo", "acme/api", "--out", "b", "--key-out", "k"],
        None,
    );
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not decrypt"), "{}", stderr(&o));
    assert!(!env.path("b").exists());
}

/// Secrets stored before schema 8 read as `env`.
#[test]
fn secrets_from_an_earlier_release_are_env() {
    let env = StoreDir::empty();
    let fixtures = workspace_root().join("crates/sealinit-store/tests/fixtures");
    fs::create_dir_all(env.path("data")).unwrap();
    fs::copy(fixtures.join("store-v1.db"), env.path("data/store.db")).unwrap();
    fs::copy(fixtures.join("master-v1.key"), env.path("master.key")).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut fs::metadata(env.path("master.key")).unwrap().permissions(),
        0o600,
    );
    fs::set_permissions(
        env.path("master.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let l = list(&env);
    assert!(!l.is_empty());
    assert!(
        l.iter()
            .all(|s| s["delivery"] == "env" && s.get("hosts").is_none()),
        "{l:?}"
    );
}
