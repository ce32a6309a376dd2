//! Issue #24: the service for fleets, against real `sealctl serve`
//! processes (two instances on one store where it matters).

use serde_json::json;

use sealinit_testkit::api::*;
use sealinit_testkit::*;

fn set(env: &StoreDir, repo: &str, name: &str, value: &[u8]) {
    let o = env.run(&["secrets", "set", "--repo", repo, name], Some(value));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Point 6: every mint is capped by --max-bundle-ttl; TTLs come as whole
/// seconds or compound durations.
#[test]
fn bundle_lifetimes_are_capped_and_read_as_clients_send_them() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    set(&env, "acme/api", "A", b"1");
    let launcher = token(&env, &["launch:acme/*"]);
    let server = Server::start(&env, &["--max-bundle-ttl", "2h"]);
    let l = Client::new(&server, Some(&launcher));
    let mint = |ttl: serde_json::Value| l.post("/repos/acme%2Fapi/bundles", json!({"ttl": ttl}));
    let lifetime = |r: &Reply| {
        let secs = |k: &str| {
            let t = r.1[k].as_str().unwrap();
            let (h, m, s): (i64, i64, i64) = (
                t[11..13].parse().unwrap(),
                t[14..16].parse().unwrap(),
                t[17..19].parse().unwrap(),
            );
            h * 3600 + m * 60 + s
        };
        (secs("expires_at") - secs("created_at")).rem_euclid(86_400)
    };
    for (ttl, secs) in [
        (json!(90), 90),
        (json!("90"), 90),
        (json!("1h30m"), 5400),
        (json!("2h"), 7200),
    ] {
        let r = mint(ttl.clone());
        assert_eq!(r.0, 201, "{ttl}: {:?}", r.1);
        assert_eq!(lifetime(&r), secs, "{ttl}");
    }
    for ttl in [json!("none"), json!("2h1s"), json!(7201), json!("100d")] {
        let r = mint(ttl.clone());
        assert_eq!((r.0, code(&r)), (422, "unprocessable"), "{ttl}: {:?}", r.1);
        assert!(message(&r).contains("7200 s"), "{}", message(&r));
    }
    for ttl in [json!("soon"), json!(0), json!("1m1h")] {
        assert_eq!(mint(ttl.clone()).0, 400, "{ttl}");
    }
}

/// Point 7: an empty value is one rule everywhere: refused without
/// allow_empty (the API) or --allow-empty (the CLI), stored with it.
#[test]
fn an_empty_value_needs_asking_for_on_every_entry_point() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let writer = token(&env, &["write:acme/*"]);
    let server = Server::start(&env, &[]);
    let w = Client::new(&server, Some(&writer));
    let r = w.put("/repos/acme%2Fapi/secrets/E", json!({"value": ""}));
    assert_eq!((r.0, code(&r)), (422, "unprocessable"), "{:?}", r.1);
    assert!(
        message(&r).contains("\"allow_empty\": true"),
        "{}",
        message(&r)
    );
    assert_eq!(r.1["error"]["allow"]["field"], "allow_empty");
    let r = w.put(
        "/repos/acme%2Fapi/secrets/E",
        json!({"value": "", "allow_empty": true}),
    );
    assert_eq!(r.0, 201, "{:?}", r.1);
    let o = env.run(&["secrets", "set", "--repo", "acme/api", "F"], Some(b""));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-empty"));
}

/// Point 10: /audit with a token that has no audit scope is 403.
#[test]
fn the_audit_trail_needs_an_audit_scope() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let writer = token(&env, &["write:acme/*"]);
    let auditor = token(&env, &["audit:acme/*"]);
    let server = Server::start(&env, &[]);
    let r = Client::new(&server, Some(&writer)).get("/audit");
    assert_eq!((r.0, code(&r)), (403, "forbidden"), "{:?}", r.1);
    assert!(message(&r).contains("audit"), "{}", message(&r));
    assert_eq!(Client::new(&server, Some(&auditor)).get("/audit").0, 200);
}

/// Point 13: a secret's ETag is its version; If-Match takes "N", W/"N",
/// * and the bare number.
#[test]
fn etags_and_if_match_as_http_says() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let writer = token(&env, &["write:acme/*"]);
    let server = Server::start(&env, &[]);
    let w = Client::new(&server, Some(&writer));
    let url = format!("{}/repos/acme%2Fapi/secrets/T", w.base);
    let put = |if_match: Option<&str>, value: &str| {
        let mut req = w
            .agent
            .put(&url)
            .header("Authorization", format!("Bearer {writer}"));
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        let mut r = req.send_json(json!({"value": value})).unwrap();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let _ = r.body_mut().read_to_string();
        (r.status().as_u16(), etag)
    };
    assert_eq!(put(Some("*"), "a").0, 412, "* needs it to exist");
    assert_eq!(put(Some("\"0\""), "a"), (201, Some("\"1\"".into())));
    assert_eq!(put(Some("\"0\""), "a").0, 412);
    assert_eq!(put(Some("W/\"1\""), "b"), (200, Some("\"2\"".into())));
    assert_eq!(put(Some("2"), "c"), (200, Some("\"3\"".into())));
    assert_eq!(put(Some("*"), "d"), (200, Some("\"4\"".into())));
    assert_eq!(put(Some("\"3\""), "e").0, 412);
    assert_eq!(put(Some("banana"), "e").0, 400);
    let mut r = w
        .agent
        .get(&url)
        .header("Authorization", format!("Bearer {writer}"))
        .call()
        .unwrap();
    assert_eq!(r.headers()["etag"], "\"4\"");
    let _ = r.body_mut().read_to_string();
}

/// Point 14: the API's errors point at the API (its fields and
/// endpoints), never at sealctl's flags or commands.
#[test]
fn api_errors_speak_the_api() {
    let env = StoreDir::new();
    env.create(&["acme/api", "acme/none"]);
    let writer = token(&env, &["write:acme/*"]);
    let launcher = token(&env, &["launch:acme/*"]);
    let server = Server::start(&env, &[]);
    let w = Client::new(&server, Some(&writer));
    let live = ["sk", "_live_", "abcdefghij0123456789ABCD"].concat();
    let s = "/repos/acme%2Fapi/secrets";
    let replies = [
        w.put(&format!("{s}/LD_PRELOAD"), json!({"value": "x"})),
        w.put(&format!("{s}/STRIPE"), json!({"value": live})),
        w.put(&format!("{s}/E"), json!({"value": ""})),
        Client::new(&server, Some(&launcher)).post("/repos/acme%2Fnone/bundles", json!({})),
        {
            assert_eq!(w.put(&format!("{s}/V"), json!({"value": "v"})).0, 201);
            w.post(&format!("{s}/V/rollback"), json!({"to": 9}))
        },
        w.put("/repos/acme%2Ftypo/secrets/A", json!({"value": "v"})),
    ];
    for (r, field) in replies.iter().zip([
        "\"allow_name\"",
        "\"allow_production\"",
        "\"allow_empty\"",
        "\"allow_empty\"",
        "/versions",
        "POST /api/v1/repos",
    ]) {
        let m = message(r);
        assert!(r.0 >= 400, "{:?}", r.1);
        assert!(m.contains(field), "{m}");
        assert!(!m.contains("--") && !m.contains("sealctl"), "{m}");
    }
}

/// Point 16: with `--log-format json` every line the service prints is
/// JSON (readiness, the one-time link, requests, shutdown, a failed
/// start); `--help` names each environment variable once.
#[test]
fn json_logs_are_json_throughout_and_help_names_each_variable_once() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let admin = token(&env, &["admin"]);
    let server = Server::start(&env, &["--log-format", "json", "--login-link"]);
    assert_eq!(Client::new(&server, Some(&admin)).get("/repos").0, 200);
    server.wait_for_log("\"status\":200");
    let (status, log) = server.stop();
    assert!(status.success());
    assert!(log.contains("/login/"), "the link is printed: {log}");
    for line in log.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    let o = env.run(
        &["serve", "--log-format", "json", "--listen", "nowhere"],
        None,
    );
    assert_eq!(o.status.code(), Some(64));
    for line in stderr(&o).lines() {
        let doc: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(doc["level"], "ERROR");
    }
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["run", "--help"],
        &["seal", "--help"],
    ] {
        let help = stdout(&env.run(args, None));
        let mut seen = std::collections::BTreeMap::new();
        for var in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if var.starts_with("SEALCTL_") {
                *seen.entry(var.to_owned()).or_insert(0) += 1;
            }
        }
        for (var, n) in seen {
            assert_eq!(n, 1, "{args:?}: {var} named {n} times");
        }
    }
}

/// Point 9: the audit trail pages with a cursor (`next_cursor` and a
/// `Link` header), takes `since` and `until` as RFC 3339 or Unix seconds,
/// validates `limit`, gives times in RFC 3339, and names the label and the
/// versions a mint read. On both backends.
#[test]
fn the_audit_trail_pages_with_a_cursor() {
    for_each_with(&BACKENDS, &["acme/api"], |env| {
        set(&env, "acme/api", "A", b"1");
        let admin = token(&env, &["admin"]);
        let server = Server::start(&env, &[]);
        let a = Client::new(&server, Some(&admin));
        for i in 0..230 {
            let r = a.post(
                "/repos/acme%2Fapi/bundles",
                json!({"label": format!("launch-{i}")}),
            );
            assert_eq!(r.0, 201, "{:?}", r.1);
        }
        let mut seen = Vec::new();
        let mut path = "/api/v1/audit?limit=100&repo=acme%2Fapi".to_owned();
        let mut pages = 0;
        loop {
            let mut resp = a
                .agent
                .get(format!("{}{path}", server.base))
                .header("Authorization", format!("Bearer {admin}"))
                .call()
                .unwrap();
            let link = resp
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_owned());
            let doc: serde_json::Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            pages += 1;
            for r in doc["records"].as_array().unwrap() {
                seen.push(r.clone());
            }
            match (doc["next_cursor"].as_str(), link) {
                (Some(c), Some(l)) => {
                    assert!(l.ends_with("rel=\"next\""), "{l}");
                    assert!(l.contains(&format!("cursor={c}")), "{l}");
                    path = l[1..l.find('>').unwrap()].to_owned();
                }
                (None, None) => break,
                other => panic!("cursor and Link disagree: {other:?}"),
            }
        }
        // The creation, 1 set, 230 mints, each once, in order.
        assert_eq!(seen.len(), 232, "{pages} pages");
        assert!(pages >= 3);
        let ids: Vec<i64> = seen.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let mint = &seen[2];
        assert_eq!(mint["action"], "seal");
        assert_eq!(mint["detail"]["label"], "launch-0");
        assert_eq!(
            mint["detail"]["secrets"],
            json!([{"name": "A", "version": 1}])
        );
        let at = mint["at"].as_str().unwrap();
        assert!(sealinit_core::time::parse_rfc3339(at).is_some(), "{at}");
        assert!(mint["detail"]["expires"].as_str().unwrap().ends_with('Z'));
        // since/until: RFC 3339 or Unix seconds.
        let t = sealinit_core::time::parse_rfc3339(at).unwrap();
        for since in [at.to_owned(), t.to_string()] {
            let r = a.get(&format!("/audit?since={since}&limit=1000"));
            assert_eq!(r.0, 200, "{:?}", r.1);
            assert!(r.1["records"].as_array().unwrap().len() >= 230);
        }
        let r = a.get(&format!("/audit?until={t}"));
        assert!(r.1["records"].as_array().unwrap().iter().all(|x| {
            sealinit_core::time::parse_rfc3339(x["at"].as_str().unwrap()).unwrap() < t
        }));
        for bad in ["limit=0", "limit=1001", "since=yesterday", "cursor=x"] {
            assert_eq!(a.get(&format!("/audit?{bad}")).0, 400, "{bad}");
        }
    });
}

/// Point 11: `audit export` writes the trail as JSON lines and remembers
/// how far; `audit prune --before` refuses what was not exported unless
/// `--force`. On both backends.
#[test]
fn audit_export_then_prune() {
    for_each_with(&BACKENDS, &["acme/api"], |env| {
        set(&env, "acme/api", "A", b"1");
        set(&env, "acme/api", "B", b"2");
        let all = ["audit", "prune", "--before", "2999-01-01T00:00:00Z"];
        let o = env.run(&all, None);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        assert!(stderr(&o).contains("audit export"), "{}", stderr(&o));
        let o = env.run(&["audit", "export"], None);
        assert!(o.status.success(), "{}", stderr(&o));
        let lines = json_lines(&o);
        // The creation and two sets.
        assert_eq!(lines.len(), 3);
        assert!(
            lines
                .iter()
                .all(|l| l["at"].as_str().is_some() && l["id"].is_i64())
        );
        // A record after the export: refused again, until exported.
        set(&env, "acme/api", "C", b"3");
        let o = env.run(&all, None);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        assert_eq!(json_lines(&env.run(&["audit", "export"], None)).len(), 4);
        let o = env.run(&all, None);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = env.run(&["audit", "--json"], None);
        let left = json_lines(&o);
        assert_eq!(left.len(), 1, "only the prune's own record: {left:?}");
        assert_eq!(left[0]["action"], "audit-prune");
        assert_eq!(left[0]["detail"]["removed"], 4);
        // --force prunes what was never exported.
        set(&env, "acme/api", "D", b"4");
        assert_eq!(env.run(&all, None).status.code(), Some(64));
        let mut forced = all.to_vec();
        forced.push("--force");
        let o = env.run(&forced, None);
        assert!(o.status.success(), "{}", stderr(&o));
    });
}

/// Copies `from` to `to`, mode 0600 (a master key file).
fn copy_key(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// Point 1: after `store rotate-master-key`, two instances on one
/// PostgreSQL that were started with the old key only answer 503
/// `master_key_unavailable` naming the new key for a new repository (not
/// an opaque 500), reload their keyring (the directory they were started
/// with) when a request finds the key missing and on SIGHUP, and then
/// serve.
#[test]
fn instances_pick_up_a_rotated_master_key() {
    let env = StoreDir::on(Backend::Postgres);
    env.create(&["acme/api"]);
    set(&env, "acme/api", "A", b"1");
    let admin = token(&env, &["admin"]);
    let (dir_a, dir_b) = (env.path("keys-a"), env.path("keys-b"));
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir(d).unwrap();
        copy_key(&env.path("master.key"), &d.join("old.key"));
    }
    let a = Server::start(&env, &["--master-key", dir_a.to_str().unwrap()]);
    let b = Server::start(&env, &["--master-key", dir_b.to_str().unwrap()]);
    let new_key = dir_a.join("new.key");
    let o = env.run(
        &[
            "store",
            "rotate-master-key",
            "--new",
            new_key.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["store", "master-keys", "--json"], None);
    let primary = json_lines(&o)
        .into_iter()
        .find(|k| k["primary"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = Client::new(&a, Some(&admin));
    let cb = Client::new(&b, Some(&admin));
    // A: the first request finds the key missing (503, naming it, with
    // Retry-After); the keyring is read again, and the retry is served.
    // (A new repository's data key is made when it is created.)
    let r = ca.post("/repos", json!({"name": "acme/new"}));
    assert_eq!(
        (r.0, code(&r)),
        (503, "master_key_unavailable"),
        "{:?}",
        r.1
    );
    assert!(message(&r).contains(&primary), "{}", message(&r));
    let r = ca.post("/repos", json!({"name": "acme/new"}));
    assert_eq!(r.0, 201, "{:?}", r.1);
    let r = ca.put("/repos/acme%2Fnew/secrets/X", json!({"value": "x"}));
    assert_eq!(r.0, 201, "{:?}", r.1);
    assert_eq!(ca.post("/repos", json!({"name": "acme/other"})).0, 201);
    assert_eq!(ca.get("/repos/acme%2Fother/secrets/public-key").0, 200);
    a.wait_for_log(&format!("added master key(s) {primary}"));
    // B's directory lacks the new key: 503 each time, never 500.
    for _ in 0..2 {
        let r = cb.post("/repos", json!({"name": "acme/third"}));
        assert_eq!(
            (r.0, code(&r)),
            (503, "master_key_unavailable"),
            "{:?}",
            r.1
        );
    }
    // Old repositories are served by both all along.
    assert_eq!(cb.get("/repos/acme%2Fapi/secrets/A").0, 200);
    // The key put in B's directory, SIGHUP: the next request is served.
    copy_key(&new_key, &dir_b.join("new.key"));
    kill(b.child.id() as i32, "HUP");
    b.wait_for_log("SIGHUP: the keyring is read again");
    assert_eq!(cb.post("/repos", json!({"name": "acme/third"})).0, 201);
    let r = cb.put("/repos/acme%2Fthird/secrets/Y", json!({"value": "y"}));
    assert_eq!(r.0, 201, "{:?}", r.1);
}

/// Point 3: at SIGTERM every request whose bytes have arrived is served
/// and answered: 80 mints fully sent (on connections the server may not
/// even have accepted yet) all get their 201; an idle keep-alive
/// connection is closed cleanly, not reset.
#[test]
fn sigterm_answers_every_request_that_arrived() {
    use std::io::{Read, Write};
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    set(&env, "acme/api", "A", b"1");
    let launcher = token(&env, &["launch:acme/*"]);
    let server = Server::start(&env, &[]);
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let request = format!(
        "POST /api/v1/repos/acme%2Fapi/bundles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {launcher}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    // An idle keep-alive connection: one request answered, then quiet.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 201"));
    // Finish reading that response's body.
    let mut got = String::from_utf8_lossy(&buf[..n]).into_owned();
    while !got.contains("\"names\"") {
        let n = idle.read(&mut buf).unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut sent: Vec<std::net::TcpStream> = (0..80)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    kill(server.child.id() as i32, "TERM");
    let mut answered = 0;
    for s in &mut sent {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        if text.starts_with("HTTP/1.1 201") && text.contains("\"bundle\"") {
            answered += 1;
        }
    }
    assert_eq!(answered, 80, "requests lost at SIGTERM");
    // The idle connection: a clean end of stream.
    idle.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
    let (status, _) = server.stop();
    assert!(status.success());
}

/// Point 2: sign-in sessions live in the store: two instances on one
/// PostgreSQL serve the same session, a form one rendered is accepted by
/// the other, and signing out on one ends the session on both.
#[test]
fn sessions_are_shared_by_every_instance() {
    let env = StoreDir::on(Backend::Postgres);
    env.create(&["acme/api"]);
    let admin = token(&env, &["admin"]);
    let a = Server::start(&env, &[]);
    let b = Server::start(&env, &[]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    // The sign-in form from A, posted to B.
    let r = agent.get(format!("{}/", a.base)).call().unwrap();
    let pair = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("sealinit-signin="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = pair.split_once('=').unwrap().1.to_owned();
    let r = agent
        .post(format!("{}/signin", b.base))
        .header("Cookie", &pair)
        .send_form([("csrf", csrf.as_str()), ("token", admin.as_str())])
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = session_of(&cookies);
    assert!(signed_in(&a, &session) && signed_in(&b, &session));
    // Sign out on A (its form's CSRF token, from B's page).
    let mut page = agent
        .get(format!("{}/", b.base))
        .header("Cookie", &session)
        .call()
        .unwrap();
    let html = page.body_mut().read_to_string().unwrap();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let r = agent
        .post(format!("{}/signout", a.base))
        .header("Cookie", &session)
        .send_form([("csrf", csrf)])
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(!signed_in(&b, &session), "signed out on A, still in on B");
    assert!(!signed_in(&a, &session));
}

/// Point 12: a token made with --may-act-for names the person it writes
/// for (X-Sealinit-Actor) and the audit trail records both; any other
/// token sending the header is refused.
#[test]
fn a_web_app_acts_for_its_users() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let o = env.run(
        &[
            "tokens",
            "create",
            "--name",
            "web-app",
            "--scope",
            "write:acme/*",
            "--may-act-for",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let web = stdout(&o).trim().to_owned();
    let plain = token(&env, &["write:acme/*"]);
    let server = Server::start(&env, &[]);
    let put = |t: &str, actor: &str| {
        let mut r = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .put(format!("{}/api/v1/repos/acme%2Fapi/secrets/K", server.base))
            .header("Authorization", format!("Bearer {t}"))
            .header("X-Sealinit-Actor", actor)
            .send_json(json!({"value": "v"}))
            .unwrap();
        let _ = r.body_mut().read_to_string();
        r.status().as_u16()
    };
    assert_eq!(put(&web, "alice@acme.example"), 201);
    assert_eq!(put(&plain, "mallory@acme.example"), 403);
    assert_eq!(put(&web, ""), 400);
    let o = env.run(&["audit", "--json"], None);
    let set = json_lines(&o)
        .into_iter()
        .find(|r| r["action"] == "set")
        .unwrap();
    let actor = set["actor"].as_str().unwrap();
    assert!(
        actor.starts_with("alice@acme.example via token web-app (tk-"),
        "{actor}"
    );
    let o = env.run(&["tokens", "list", "--json"], None);
    assert!(
        stdout(&o).contains("\"may_act_for\":true"),
        "{}",
        stdout(&o)
    );
}

/// Point 4: a client that lost the connection after a mint repeats it
/// with the same Idempotency-Key and gets the same bundle and key, recorded
/// once, from either of two instances on one PostgreSQL; the same key with
/// another body is 422; `sealctl --server A,B` fails over to the next
/// instance when one cannot be reached.
#[test]
fn idempotent_writes_and_failover() {
    use std::io::{Read, Write};
    let env = StoreDir::on(Backend::Postgres);
    env.create(&["acme/api"]);
    set(&env, "acme/api", "A", b"1");
    let launcher = token(&env, &["launch:acme/*"]);
    let admin = token(&env, &["admin"]);
    let a = Server::start(&env, &[]);
    let b = Server::start(&env, &[]);
    let body = r#"{"label":"run-7"}"#;
    // The first try: sent whole, then the connection is dropped before
    // the answer is read.
    let addr = a.base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/v1/repos/acme%2Fapi/bundles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {launcher}\r\n\
         Idempotency-Key: launch-7\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 201");
    drop(s);
    let mint = |server: &Server, key: &str, body: &str| {
        let mut r = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .post(format!("{}/api/v1/repos/acme%2Fapi/bundles", server.base))
            .header("Authorization", format!("Bearer {launcher}"))
            .header("Idempotency-Key", key)
            .content_type("application/json")
            .send(body.as_bytes())
            .unwrap();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let doc: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or_default();
        (r.status().as_u16(), replayed, doc)
    };
    // The retries, on A and on B: the same bundle and key.
    let (st1, replayed1, doc1) = mint(&a, "launch-7", body);
    let (st2, replayed2, doc2) = mint(&b, "launch-7", body);
    assert_eq!((st1, replayed1, st2, replayed2), (201, true, 201, true));
    assert_eq!(doc1["bundle"], doc2["bundle"]);
    assert_eq!(doc1["key"], doc2["key"]);
    assert!(doc1["key"].as_str().is_some_and(|k| !k.is_empty()));
    // Recorded once.
    let seals = Client::new(&a, Some(&admin))
        .get("/audit?repo=acme%2Fapi")
        .1["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "seal")
        .count();
    assert_eq!(seals, 1);
    // The same key with another body: 422; a new key: a new bundle.
    let (st, _, doc) = mint(&a, "launch-7", r#"{"label":"run-8"}"#);
    assert_eq!(st, 422, "{doc}");
    let (st, replayed, doc3) = mint(&a, "launch-8", body);
    assert_eq!((st, replayed), (201, false));
    assert_ne!(doc3["bundle"], doc1["bundle"]);

    // Failover: the first URL cannot be reached, the second serves.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let o = env
        .cmd(&["secrets", "set", "--repo", "acme/api", "B"])
        .env("SEALCTL_SERVER", format!("{dead},{}", b.base))
        .env("SEALCTL_TOKEN", &admin)
        .env_remove("SEALCTL_STORE")
        .env_remove("SEALCTL_MASTER_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(|mut c| {
            c.stdin.take().unwrap().write_all(b"2").unwrap();
            c.wait_with_output().unwrap()
        })
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        Client::new(&a, Some(&admin))
            .get("/repos/acme%2Fapi/secrets/B")
            .0,
        200
    );
}

/// Point 5: repositories exist only once created. Before that every read
/// and write of one is 404 `repo_not_found` (the CLI: exit 66, naming the
/// command that creates it), and reading its public key writes nothing.
#[test]
fn repositories_are_created_explicitly() {
    for_each(&BACKENDS, |env| {
        let writer = token(&env, &["write:acme/*", "launch:acme/*"]);
        let server = Server::start(&env, &[]);
        let w = Client::new(&server, Some(&writer));
        let unknown = |r: &Reply, what: &str| {
            assert_eq!((r.0, code(r)), (404, "repo_not_found"), "{what}: {:?}", r.1);
            assert_eq!(r.1["error"]["repo"], "acme/api", "{what}");
            assert!(
                message(r).contains("POST /api/v1/repos"),
                "{what}: {}",
                message(r)
            );
        };
        unknown(&w.get("/repos/acme%2Fapi/secrets"), "list");
        unknown(&w.get("/repos/acme%2Fapi/secrets/public-key"), "public key");
        unknown(
            &w.get("/repos/acme%2Fapi/secrets/public-key"),
            "public key again",
        );
        unknown(
            &w.put("/repos/acme%2Fapi/secrets/A", json!({"value": "1"})),
            "put",
        );
        unknown(
            &w.post(
                "/repos/acme%2Fapi/import",
                json!({"format": "env", "content": "A=1\n"}),
            ),
            "import",
        );
        unknown(&w.post("/repos/acme%2Fapi/bundles", json!({})), "mint");
        unknown(
            &w.post("/repos/acme%2Fapi/bundles", json!({"allow_empty": true})),
            "empty mint",
        );
        // Nothing of those made a repository.
        let r = w.get("/repos");
        assert_eq!(r.1["repos"], json!([]), "{:?}", r.1);

        let r = w.post("/repos", json!({"name": "acme/api"}));
        assert_eq!(r.0, 201, "{:?}", r.1);
        assert_eq!(r.1, json!({"repo": "acme/api", "secrets": 0}));
        let r = w.post("/repos", json!({"name": "ACME/Api"}));
        assert_eq!((r.0, code(&r)), (409, "conflict"), "{:?}", r.1);
        assert_eq!(r.1["error"]["repo"], "acme/api");
        assert_eq!(w.post("/repos", json!({"name": "other/x"})).0, 403);
        assert_eq!(w.post("/repos", json!({"name": "nope"})).0, 400);
        assert_eq!(w.post("/repos", json!({"repo": "acme/x"})).0, 400);
        let r = w.get("/repos");
        assert_eq!(r.1["repos"][0]["repo"], "acme/api", "{:?}", r.1);
        assert_eq!(r.1["repos"][0]["secrets"], 0);
        // An empty repository lists empty, and mints only when asked to.
        let r = w.get("/repos/acme%2Fapi/secrets");
        assert_eq!((r.0, &r.1["total_count"]), (200, &json!(0)), "{:?}", r.1);
        let r = w.post("/repos/acme%2Fapi/bundles", json!({}));
        assert_eq!(r.0, 404, "{:?}", r.1);
        assert_eq!(r.1["error"]["allow"]["field"], "allow_empty");
        let key = w.get("/repos/acme%2Fapi/secrets/public-key");
        assert_eq!(key.0, 200, "{:?}", key.1);
        assert_eq!(w.get("/repos/acme%2Fapi/secrets/public-key").1, key.1);
        assert_eq!(
            w.put("/repos/acme%2Fapi/secrets/A", json!({"value": "1"}))
                .0,
            201
        );
        assert_eq!(w.post("/repos/acme%2Fapi/bundles", json!({})).0, 201);
        // A removed repository is gone until created again.
        assert_eq!(w.delete("/repos/acme%2Fapi").0, 200);
        unknown(&w.get("/repos/acme%2Fapi/secrets"), "after removal");
        assert_eq!(w.post("/repos", json!({"name": "acme/api"})).0, 201);
        // The CLI, on the store and through the service.
        let o = env.run(&["secrets", "set", "--repo", "acme/typo", "A"], Some(b"1"));
        assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("sealctl repos create acme/typo"),
            "{}",
            stderr(&o)
        );
        for args in [
            &[
                "seal",
                "--repo",
                "acme/typo",
                "--out",
                "b",
                "--key-out",
                "k",
            ][..],
            &["secrets", "list", "--repo", "acme/typo"],
        ] {
            let o = env.run(args, None);
            assert_eq!(o.status.code(), Some(66), "{args:?}: {}", stderr(&o));
        }
        let o = output_with_stdin(
            env.cmd(&["secrets", "set", "--repo", "acme/typo", "A"])
                .env("SEALCTL_SERVER", &server.base)
                .env("SEALCTL_TOKEN", &writer)
                .env_remove("SEALCTL_STORE"),
            b"1",
        );
        assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("sealctl repos create acme/typo"),
            "{}",
            stderr(&o)
        );
        ok(&env.run(&["repos", "create", "acme/cli"], None));
        let o = env.run(&["repos", "create", "Acme/CLI"], None);
        assert_eq!(o.status.code(), Some(73), "{}", stderr(&o));
        ok(&env.run(&["secrets", "set", "--repo", "acme/cli", "A"], Some(b"1")));
        let o = env
            .cmd(&["repos", "create", "acme/remote", "--json"])
            .env("SEALCTL_SERVER", &server.base)
            .env("SEALCTL_TOKEN", &writer)
            .env_remove("SEALCTL_STORE")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(json_lines(&o)[0]["repo"], "acme/remote");
        let o = ok(&env.run(&["audit", "--repo", "acme/cli", "--json"], None)).clone();
        assert!(stdout(&o).contains("\"repo-create\""), "{}", stdout(&o));
    });
}
