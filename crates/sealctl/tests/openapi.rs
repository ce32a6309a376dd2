//! Issue #24 point 15: the OpenAPI document describes every request body,
//! parameter, response and error, checked by independent tools from PyPI
//! (installed by `.ci/py-tools.sh` into a virtual environment): an OpenAPI
//! validator, and schemathesis fuzzing a live server on loopback with an
//! admin token, with no server error and no response that the document
//! does not describe.

use std::process::Command;

use sealinit_testkit::api::*;
use sealinit_testkit::*;

#[test]
fn the_openapi_document_is_valid_and_the_server_conforms_to_it() {
    let bin = py_tools();
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let o = env.run(
        &["secrets", "set", "--repo", "acme/api", "TOKEN"],
        Some(b"v"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let admin = token(&env, &["admin"]);
    let server = Server::start(&env, &[]);
    let doc = Client::new(&server, None).get("/openapi.json").1;
    let path = env.path("openapi.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    // Every operation names its request body, parameters and responses.
    for (p, ops) in doc["paths"].as_object().unwrap() {
        for (m, op) in ops.as_object().unwrap() {
            for (status, r) in op["responses"].as_object().unwrap() {
                if status != "204" && status != "200" && status != "201" {
                    assert!(
                        r["content"]["application/json"]["schema"].is_object(),
                        "{m} {p} {status}"
                    );
                }
            }
            if m == "put" || (m == "post" && !p.ends_with("/health")) {
                assert!(op["requestBody"].is_object(), "{m} {p} has no request body");
            }
        }
    }
    let o = Command::new(bin.join("openapi-spec-validator"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = Command::new(bin.join("schemathesis"))
        .arg("run")
        .arg(&path)
        .args(["--url", &server.base])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
        ])
        .args(["--max-examples", "25", "--workers", "2", "--seed", "1"])
        .args(["--suppress-health-check", "filter_too_much"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "schemathesis:\n{out}\n{}", stderr(&o));
    assert!(out.contains("passed"), "{out}");
    // Nothing the server logged as a failure of its own.
    let log = server.log_text();
    assert!(
        !log.contains("panicked") && !log.contains("status=500"),
        "{log}"
    );
}
