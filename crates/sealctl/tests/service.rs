//! The secrets service (issue #16) against the real `sealctl serve`
//! process on a loopback port, with a real HTTP client: every endpoint and
//! every status, scopes, the guard, compare-and-set, a libsodium client
//! (PyNaCl) sealing a value that a minted bundle then delivers to
//! sealinit, two instances on one PostgreSQL, SIGTERM, and a trace-level
//! log that holds no value and no token.

use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use sealinit_testkit::api::*;
use sealinit_testkit::*;

const VALUE: &str = "service-VALUE-never-logged-7c1e";

/// The live Stripe key shape, assembled at run time.
fn live_key() -> String {
    ["sk", "_live_", "abcdefghij0123456789ABCD"].concat()
}

#[test]
fn every_endpoint_and_status_on_sqlite() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let admin = token(&env, &["admin"]);
    let writer = token(&env, &["write:acme/*"]);
    let launcher = token(&env, &["launch:acme/api"]);
    let server = Server::start(&env, &[]);
    let w = Client::new(&server, Some(&writer));
    let l = Client::new(&server, Some(&launcher));
    let a = Client::new(&server, Some(&admin));
    let anon = Client::new(&server, None);
    let s = "/repos/acme%2Fapi/secrets";

    // Health and the OpenAPI document need no token.
    assert_eq!(anon.get("/health"), (200, json!({"status": "ok"})));
    let (st, doc) = anon.get("/openapi.json");
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/api/v1/repos/{repo}/secrets/{name}"]["put"]["responses"]["412"].is_object()
    );

    // 401: no token, a malformed one, one that does not exist.
    for c in [
        &anon,
        &Client::new(&server, Some("not-a-token")),
        &Client::new(&server, Some(&format!("sit_{}", "A".repeat(36)))),
    ] {
        let r = c.get("/repos");
        assert_eq!((r.0, code(&r)), (401, "unauthorized"), "{:?}", r.1);
    }

    // PUT: 201 created, 200 updated, with versions.
    let r = w.put(&format!("{s}/TOKEN"), json!({"value": VALUE}));
    assert_eq!(r.0, 201, "{:?}", r.1);
    assert_eq!(
        (r.1["version"].as_i64(), r.1["created"].as_bool()),
        (Some(1), Some(true))
    );
    let r = w.put(&format!("{s}/TOKEN"), json!({"value": "second"}));
    assert_eq!((r.0, r.1["version"].as_i64()), (200, Some(2)));
    // If-Match: 412 on another version, 200 on the right one.
    let r = w.put_if(&format!("{s}/TOKEN"), "1", json!({"value": "x"}));
    assert_eq!((r.0, code(&r)), (412, "precondition_failed"), "{:?}", r.1);
    let r = w.put_if(&format!("{s}/TOKEN"), "2", json!({"value": VALUE}));
    assert_eq!((r.0, r.1["version"].as_i64()), (200, Some(3)));
    let r = w.put_if(&format!("{s}/NEW"), "0", json!({"value": "n"}));
    assert_eq!(r.0, 201);
    let r = w.put_if(&format!("{s}/NEW"), "banana", json!({"value": "n"}));
    assert_eq!(r.0, 400);

    // 422: an invalid name, a code-loading name, a production credential;
    // none echoes the value.
    for (name, value, why) in [
        ("1BAD", "v", "name"),
        ("LD_PRELOAD", "v", "LD_PRELOAD"),
        ("STRIPE", live_key().as_str(), "stripe-live-key"),
    ] {
        let r = w.put(&format!("{s}/{name}"), json!({"value": value}));
        assert_eq!((r.0, code(&r)), (422, "unprocessable"), "{name}: {:?}", r.1);
        assert!(message(&r).contains(why), "{name}: {}", message(&r));
        assert!(!r.1.to_string().contains(value) || value == "v");
    }
    let r = w.put(
        &format!("{s}/STRIPE"),
        json!({"value": live_key(), "allow_production": true}),
    );
    assert_eq!(r.0, 201, "{:?}", r.1);
    assert_eq!(r.1["allowed_production"], json!(["stripe-live-key"]));

    // 400: unknown field, malformed JSON, both value kinds; 415; 413.
    let r = w.put(&format!("{s}/X"), json!({"value": "v", "extra": 1}));
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "{:?}", r.1);
    assert!(message(&r).contains("extra"), "{}", message(&r));
    let r = w.put_raw(&format!("{s}/X"), "application/json", b"{\"value\": ");
    assert_eq!(r.0, 400);
    let r = w.put(
        &format!("{s}/X"),
        json!({"value": "v", "encrypted_value": "AA==", "key_id": "k"}),
    );
    assert_eq!(r.0, 400);
    let r = w.put_raw(&format!("{s}/X"), "text/plain", b"{\"value\": \"v\"}");
    assert_eq!(
        (r.0, code(&r)),
        (415, "unsupported_media_type"),
        "{:?}",
        r.1
    );
    // 413 from the declared length, before the body is read: a client that
    // went on writing 4 MiB could meet a closed connection instead of the
    // answer, so this one sends the headers only.
    let reply = raw_request(
        &server,
        &format!(
            "PUT /api/v1{s}/X HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {writer}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            4 << 20
        ),
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("payload_too_large"), "{reply}");

    // 403: scopes.
    let r = l.put(&format!("{s}/TOKEN"), json!({"value": "v"}));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));
    let r = w.post("/repos/acme%2Fapi/bundles", json!({}));
    assert_eq!(r.0, 403);
    let r = l.get("/repos/acme%2Fweb/secrets");
    assert_eq!(r.0, 403);
    let r = w.get("/audit?repo=acme%2Fapi");
    assert_eq!(r.0, 403);

    // Metadata: never values.
    let (st, page) = l.get(&format!("{s}?per_page=2&page=1"));
    assert_eq!(st, 200);
    assert_eq!(page["total_count"], 3);
    assert_eq!(page["secrets"].as_array().unwrap().len(), 2);
    assert_eq!(page["secrets"][0]["name"], "NEW");
    let (st, one) = l.get(&format!("{s}/TOKEN"));
    assert_eq!(st, 200);
    assert_eq!(one["version"], 3);
    assert_eq!(one["size"], VALUE.len());
    assert!(
        one["updated_by"]
            .as_str()
            .unwrap()
            .starts_with("token test (tk-")
    );
    assert_eq!(l.get(&format!("{s}/NOPE")).0, 404);
    assert_eq!(l.get(&format!("{s}?per_page=0")).0, 400);
    let (st, mut repos) = l.get("/repos");
    assert_eq!(st, 200);
    let changed = repos["repos"][0]
        .as_object_mut()
        .unwrap()
        .remove("updated_at")
        .unwrap();
    assert!(changed.as_str().unwrap().ends_with('Z'), "{changed}");
    assert_eq!(
        repos,
        json!({"repos": [{"repo": "acme/api", "secrets": 3}]})
    );
    let (st, v) = l.get(&format!("{s}/TOKEN/versions"));
    assert_eq!(st, 200);
    assert_eq!(v["versions"].as_array().unwrap().len(), 3);

    // Rollback, delete.
    let r = w.post(&format!("{s}/TOKEN/rollback"), json!({"to": 2}));
    assert_eq!((r.0, r.1["version"].as_i64()), (201, Some(4)), "{:?}", r.1);
    let r = w.post(&format!("{s}/TOKEN/rollback"), json!({"to": 99}));
    assert_eq!(r.0, 404);
    assert_eq!(w.delete(&format!("{s}/NEW")).0, 204);
    assert_eq!(w.delete(&format!("{s}/NEW")).0, 404);

    // Import: all or nothing, errors by line, never values.
    let r = w.post(
        &format!("{s}/import"),
        json!({"format": "env", "content": "A=1\nB=2\n3BAD=x\n"}),
    );
    assert_eq!(r.0, 422, "{:?}", r.1);
    assert!(message(&r).contains("line 3"), "{}", message(&r));
    assert_eq!(l.get(&format!("{s}/A")).0, 404);
    let r = w.post(
        &format!("{s}/import"),
        json!({"format": "json", "content": "{\"A\":\"1\",\"B\":\"2\"}"}),
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["secrets"].as_array().unwrap().len(), 2);
    assert_eq!(
        w.post(
            &format!("{s}/import"),
            json!({"format": "yaml", "content": ""})
        )
        .0,
        400
    );

    // Mint a bundle and run sealinit with it.
    let r = l.post(
        "/repos/acme%2Fapi/bundles",
        json!({"label": "ci-run", "ttl": "10m"}),
    );
    assert_eq!(r.0, 201, "{:?}", r.1);
    assert_eq!(r.1["label"], "ci-run");
    let names: Vec<&str> = r.1["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B", "STRIPE", "TOKEN"]);
    let o = run_bundle(&env, &r.1, "printf %s \"$TOKEN\"");
    assert_eq!(stdout(&o), "second", "{}", stderr(&o));
    assert_eq!(l.post("/repos/acme%2Fnone/bundles", json!({})).0, 403);
    assert_eq!(a.post("/repos/acme%2Fnone/bundles", json!({})).0, 404);
    assert_eq!(
        l.post("/repos/acme%2Fapi/bundles", json!({"ttl": "soon"}))
            .0,
        400
    );

    // Audit: JSON and JSON lines; the token is the actor.
    let (st, audit) = a.get("/audit?repo=acme%2Fapi");
    assert_eq!(st, 200);
    let records = audit["records"].as_array().unwrap();
    let seal = records.iter().find(|r| r["action"] == "seal").unwrap();
    assert!(
        seal["actor"]
            .as_str()
            .unwrap()
            .starts_with("token test (tk-")
    );
    assert_eq!(seal["detail"]["label"], "ci-run");
    let set = records
        .iter()
        .find(|r| r["detail"]["allowed_production"] != json!([]) && r["action"] == "set")
        .unwrap();
    assert_eq!(set["detail"]["allowed_production"][0]["name"], "STRIPE");
    let mut resp = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(format!("{}/api/v1/audit?limit=2", server.base))
        .header("Authorization", format!("Bearer {admin}"))
        .header("Accept", "application/x-ndjson")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    assert_eq!(text.lines().count(), 2);
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }

    // Unknown endpoint: 404 in the same shape.
    let r = a.get("/nope");
    assert_eq!((r.0, code(&r)), (404, "not_found"));

    let (status, log) = server.stop();
    assert!(status.success(), "SIGTERM: exit 0, got {status:?}\n{log}");
    assert!(log.contains("status=201"), "request logs: {log}");
    for secret in [VALUE, &live_key(), &writer, &launcher, &admin] {
        assert!(!log.contains(secret), "the log holds a value or a token");
    }
}

/// Writes a minted bundle and its key to files and runs `sh -c script`
/// under sealinit with them.
fn run_bundle(env: &StoreDir, minted: &Value, script: &str) -> std::process::Output {
    let bundle = B64.decode(minted["bundle"].as_str().unwrap()).unwrap();
    let key = B64.decode(minted["key"].as_str().unwrap()).unwrap();
    std::fs::write(env.path("minted.bundle"), bundle).unwrap();
    let _ = std::fs::remove_file(env.path("minted.key"));
    std::fs::write(env.path("minted.key"), key).unwrap();
    std::fs::set_permissions(
        env.path("minted.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    Command::new(workspace_bin("sealinit"))
        .args(["--bundle", env.path("minted.bundle").to_str().unwrap()])
        .args(["--key-file", env.path("minted.key").to_str().unwrap()])
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A value sealed by libsodium (PyNaCl's SealedBox) to the repository's
/// public key is stored, and a minted bundle delivers it to sealinit.
#[test]
fn a_libsodium_client_seals_a_value_that_reaches_the_sandbox() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let writer = token(&env, &["write:acme/api", "launch:acme/api"]);
    let server = Server::start(&env, &[]);
    let w = Client::new(&server, Some(&writer));
    let (st, pk) = w.get("/repos/acme%2Fapi/secrets/public-key");
    assert_eq!(st, 200, "{pk:?}");
    let enc = pynacl_seal(pk["key"].as_str().unwrap(), VALUE.as_bytes());
    let r = w.put(
        "/repos/acme%2Fapi/secrets/SEALED",
        json!({"encrypted_value": enc, "key_id": pk["key_id"]}),
    );
    assert_eq!(r.0, 201, "{:?}", r.1);
    // A stale key id (the key changes with the data key) is a conflict; a
    // sealed value that does not open is refused.
    let r = w.put(
        "/repos/acme%2Fapi/secrets/SEALED",
        json!({"encrypted_value": enc, "key_id": "0000000000000000"}),
    );
    assert_eq!((r.0, code(&r)), (409, "conflict"), "{:?}", r.1);
    let r = w.put(
        "/repos/acme%2Fapi/secrets/SEALED",
        json!({"encrypted_value": B64.encode([7u8; 64]), "key_id": pk["key_id"]}),
    );
    assert_eq!(r.0, 422);
    // A whole .env file sealed by libsodium: imported all or nothing,
    // production credentials allowed by name.
    let file = format!("IMPORTED={VALUE}\nSTRIPE={}\n", live_key());
    let enc = pynacl_seal(pk["key"].as_str().unwrap(), file.as_bytes());
    let import = |allow: Value| {
        w.post(
            "/repos/acme%2Fapi/secrets/import",
            json!({"format": "env", "encrypted_content": enc, "key_id": pk["key_id"], "allow_production": allow}),
        )
    };
    let r = import(json!(false));
    assert_eq!(r.0, 422, "{:?}", r.1);
    assert!(
        message(&r).contains("secret STRIPE looks like"),
        "{}",
        message(&r)
    );
    let r = import(json!(["STRIPE"]));
    assert_eq!(r.0, 200, "{:?}", r.1);
    let r = w.post("/repos/acme%2Fapi/bundles", json!({}));
    assert_eq!(r.0, 201);
    let o = run_bundle(
        &env,
        &r.1,
        &format!("test \"$SEALED\" = '{VALUE}' && test \"$IMPORTED\" = '{VALUE}' && echo same"),
    );
    assert_eq!(stdout(&o).trim(), "same", "{}", stderr(&o));
    let (_, log) = server.stop();
    assert!(!log.contains(VALUE) && !log.contains(&writer));
}

/// `bytes` sealed by libsodium (PyNaCl's SealedBox) to the base64 X25519
/// `key`: base64.
fn pynacl_seal(key: &str, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import base64,sys\nfrom nacl.public import PublicKey, SealedBox\n\
             pk = PublicKey(base64.b64decode(sys.argv[1]))\n\
             print(base64.b64encode(SealedBox(pk).encrypt(sys.stdin.buffer.read())).decode())",
            key,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "PyNaCl: {}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// Repeated failed authentications from one address: 429 with
/// Retry-After for the failures (a valid token is still served: see
/// abuse.rs).
#[test]
fn failed_authentications_are_rate_limited() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let server = Server::start(&env, &[]);
    let bad = Client::new(&server, Some(&format!("sit_{}", "B".repeat(36))));
    for _ in 0..10 {
        assert_eq!(bad.get("/repos").0, 401);
    }
    let mut resp = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(format!("{}/api/v1/repos", server.base))
        .header("Authorization", format!("Bearer sit_{}", "B".repeat(36)))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
    drop(server);
}

/// Two instances on one PostgreSQL serve the same data at once; a revoked
/// token is refused by both.
#[test]
fn two_instances_on_one_postgres_see_the_same_data() {
    let env = StoreDir::on(Backend::Postgres);
    env.create(&["acme/api"]);
    let t = token(&env, &["admin"]);
    let one = Server::start(&env, &[]);
    let two = Server::start(&env, &[]);
    let (a, b) = (Client::new(&one, Some(&t)), Client::new(&two, Some(&t)));
    let r = a.put("/repos/acme%2Fapi/secrets/SHARED", json!({"value": VALUE}));
    assert_eq!(r.0, 201, "{:?}", r.1);
    let (st, meta) = b.get("/repos/acme%2Fapi/secrets/SHARED");
    assert_eq!((st, meta["version"].as_i64()), (200, Some(1)));
    let r = b.put_if(
        "/repos/acme%2Fapi/secrets/SHARED",
        "1",
        json!({"value": "2"}),
    );
    assert_eq!(r.0, 200);
    let r = a.put_if(
        "/repos/acme%2Fapi/secrets/SHARED",
        "1",
        json!({"value": "3"}),
    );
    assert_eq!(r.0, 412, "compare-and-set holds across instances");
    let id = {
        let o = env.run(&["tokens", "list", "--json"], None);
        let row: Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
        row["id"].as_str().unwrap().to_owned()
    };
    let o = env.run(&["tokens", "revoke", &id], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(a.get("/repos").0, 401);
    assert_eq!(b.get("/repos").0, 401);
    for s in [one, two] {
        let (status, log) = s.stop();
        assert!(status.success());
        assert!(!log.contains(VALUE) && !log.contains(&t));
    }
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let o = env.run(&["serve", "--listen", "0.0.0.0:0"], None);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--insecure-no-tls"), "{}", stderr(&o));
    let o = env.run(
        &["tokens", "create", "--name", "x", "--scope", "read:*"],
        None,
    );
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("unknown action"), "{}", stderr(&o));
}

/// TLS from PEM files, reloaded on SIGHUP without a restart; a Unix socket.
#[test]
fn tls_is_reloaded_on_sighup_and_a_unix_socket_serves() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    certificate(&env, "one");
    certificate(&env, "two");
    for f in ["pem", "key"] {
        std::fs::copy(
            env.path(&format!("one.{f}")),
            env.path(&format!("live.{f}")),
        )
        .unwrap();
    }
    let cert = env.path("live.pem");
    let key = env.path("live.key");
    let server = Server::start(
        &env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let health = format!(
        "{}/api/v1/health",
        server.base.replace("127.0.0.1", "localhost")
    );
    assert_eq!(
        https_get(&health, &env.path("ca-one.pem")),
        "200 {\"status\":\"ok\"}"
    );
    assert!(https_get(&health, &env.path("ca-two.pem")).starts_with("error"));
    // Over TLS the page's cookies are Secure with the __Host- prefix, and
    // every response carries HSTS.
    let page = https_headers(
        &server.base.replace("127.0.0.1", "localhost"),
        &env.path("ca-one.pem"),
    );
    assert!(page.starts_with("200\n"), "{page}");
    assert!(
        page.contains("strict-transport-security: max-age=31536000"),
        "{page}"
    );
    let cookie = page
        .lines()
        .find(|l| l.starts_with("set-cookie: "))
        .unwrap_or_else(|| panic!("{page}"));
    assert!(
        cookie.starts_with("set-cookie: __Host-sealinit-signin="),
        "{cookie}"
    );
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    for f in ["pem", "key"] {
        std::fs::copy(
            env.path(&format!("two.{f}")),
            env.path(&format!("live.{f}")),
        )
        .unwrap();
    }
    kill(server.child.id() as i32, "HUP");
    // Readiness from the log, not a sleep.
    server.wait_for_log("TLS certificate reloaded");
    assert_eq!(
        https_get(&health, &env.path("ca-two.pem")),
        "200 {\"status\":\"ok\"}"
    );
    assert!(https_get(&health, &env.path("ca-one.pem")).starts_with("error"));
    let (status, _) = server.stop();
    assert!(status.success());

    // A Unix socket.
    let socket = env.path("api.sock");
    let server = Server::start(&env, &["--listen", &format!("unix:{}", socket.display())]);
    assert_eq!(server.base, format!("unix:{}", socket.display()));
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("{\"status\":\"ok\"}"), "{reply}");
    let (status, _) = server.stop();
    assert!(status.success());
    assert!(!socket.exists(), "the socket is removed on exit");
}

/// Every route the OpenAPI document lists answers (not the fallback 404,
/// not 405), so the document cannot list a route the server lacks.
#[test]
fn the_openapi_document_matches_the_routes() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let admin = token(&env, &["admin"]);
    let server = Server::start(&env, &[]);
    let a = Client::new(&server, Some(&admin));
    let (_, doc) = a.get("/openapi.json");
    let paths = doc["paths"].as_object().unwrap();
    let mut count = 0;
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            count += 1;
            let url = format!(
                "{}{}",
                server.base,
                path.replace("{repo}", "acme%2Fapi")
                    .replace("{env}", "staging")
                    .replace("{org}", "acme")
                    .replace("{name}", "TOKEN")
            );
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let auth = format!("Bearer {admin}");
            let resp = match method.as_str() {
                "get" => agent.get(&url).header("Authorization", &auth).call(),
                "delete" => agent.delete(&url).header("Authorization", &auth).call(),
                "put" => agent
                    .put(&url)
                    .header("Authorization", &auth)
                    .send_json(json!({})),
                "post" => agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .send_json(json!({})),
                m => panic!("undocumented method {m}"),
            };
            let (status, body) = Client::reply(resp);
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !message(&(status, body.clone())).contains("no such endpoint"),
                "{method} {path} is documented but not served"
            );
        }
    }
    assert_eq!(count, 32);
}

/// SIGTERM while a request is in flight: the server stops accepting, the
/// request still completes and is acknowledged, then the server exits 0.
#[test]
fn sigterm_finishes_the_request_in_flight() {
    use std::io::{Read, Write};
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let t = token(&env, &["write:acme/*"]);
    let server = Server::start(&env, &["--shutdown-timeout", "30s"]);
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let body = format!("{{\"value\": \"{VALUE}\"}}");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    // Headers and half the body: the request is in flight.
    write!(
        s,
        "PUT /api/v1/repos/acme%2Fapi/secrets/LATE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .unwrap();
    s.flush().unwrap();
    // In flight once the server has started it (not merely queued).
    server.wait_for_log("secrets/LATE}: request started");
    kill(server.child.id() as i32, "TERM");
    server.wait_for_log("shutting down");
    // New connections are refused now.
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still accepting after SIGTERM"
    );
    s.write_all(&body.as_bytes()[5..]).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    // It was committed: a fresh server sees it.
    let again = Server::start(&env, &[]);
    let c = Client::new(&again, Some(&t));
    let r = c.get("/repos/acme%2Fapi/secrets/LATE");
    assert_eq!((r.0, r.1["version"].as_i64()), (200, Some(1)), "{:?}", r.1);
}

/// `--log-format json`: one JSON object per line, with the request's
/// method, path, status and token id; never the token.
#[test]
fn json_request_logs() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let t = token(&env, &["admin"]);
    let server = Server::start(&env, &["--log-format", "json"]);
    let c = Client::new(&server, Some(&t));
    assert_eq!(c.get("/repos").0, 200);
    server.wait_for_log("\"status\":200");
    let (status, log) = server.stop();
    assert!(status.success());
    let line = log.lines().find(|l| l.contains("\"status\":200")).unwrap();
    let doc: Value = serde_json::from_str(line).unwrap();
    assert_eq!(doc["fields"]["status"], 200);
    assert_eq!(doc["span"]["method"], "GET");
    assert_eq!(doc["span"]["path"], "/api/v1/repos");
    assert!(doc["span"]["token"].as_str().unwrap().starts_with("tk-"));
    assert!(!log.contains(&t));
}
