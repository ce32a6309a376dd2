//! Issue #27: the GitHub-shaped API (`/api/v3`) driven by GitHub's own
//! clients, unchanged: Debian's `gh` over TLS with a test CA, PyGithub
//! (PyPI, in the tests' venv) and octocrab. After each client's writes, a
//! bundle sealed from the store and opened by sealinit holds exactly the
//! expected variables.

use std::process::{Command, Output};

use sealinit_testkit::api::{Client, certificate, token};
use sealinit_testkit::*;

/// The server over TLS (a certificate for localhost from a test CA).
fn tls_server(env: &StoreDir) -> Server {
    certificate(env, "srv");
    Server::start(
        env,
        &[
            "--tls-cert",
            env.path("srv.pem").to_str().unwrap(),
            "--tls-key",
            env.path("srv.key").to_str().unwrap(),
        ],
    )
}

/// What sealinit gives the command from a bundle sealed now: the
/// environment variables among `names`, sorted.
fn sealed_env(env: &StoreDir, repo: &str, names: &[&str]) -> String {
    ok(&env.run(
        &["seal", "--repo", repo, "--out", "b", "--key-out", "k"],
        None,
    ));
    let vars = bundle_env(env, "b", "k", names);
    let _ = std::fs::remove_file(env.path("b"));
    vars
}

/// `gh ARGS` against the server, as GitHub Enterprise Server: `GH_HOST`,
/// `GH_ENTERPRISE_TOKEN`, the test CA in `SSL_CERT_FILE`; a config
/// directory of its own.
fn gh(env: &StoreDir, server: &Server, tok: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let host = server.base.replace("https://127.0.0.1", "localhost");
    let mut c = Command::new("gh");
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", env.dir.path())
        .env("GH_CONFIG_DIR", env.path("gh-config"))
        .env("GH_HOST", &host)
        .env("GH_ENTERPRISE_TOKEN", tok)
        .env("SSL_CERT_FILE", env.path("ca-srv.pem"))
        .env("GH_PROMPT_DISABLED", "1")
        .env("GH_NO_UPDATE_NOTIFIER", "1")
        .env("NO_COLOR", "1")
        .current_dir(env.dir.path());
    output_with_stdin(&mut c, stdin.unwrap_or(b""))
}

#[test]
fn gh_sets_lists_and_deletes_repository_secrets() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let server = tls_server(&env);
    let tok = token(&env, &["write:acme/*"]);
    let run = |args: &[&str], stdin: Option<&[u8]>| gh(&env, &server, &tok, args, stdin);
    let okay = |o: Output| {
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        o
    };
    // From stdin, from --body, from a .env file; an update.
    okay(run(
        &["secret", "set", "API_KEY", "-R", "acme/api"],
        Some(b"value-1"),
    ));
    okay(run(
        &[
            "secret",
            "set",
            "db_url",
            "-R",
            "acme/api",
            "--body",
            "postgres://db/x",
        ],
        None,
    ));
    std::fs::write(env.path("file.env"), "A=1\nB=two words\n").unwrap();
    okay(run(
        &["secret", "set", "-f", "file.env", "-R", "acme/api"],
        None,
    ));
    okay(run(
        &[
            "secret", "set", "API_KEY", "-R", "acme/api", "--body", "value-2",
        ],
        None,
    ));
    let listed = stdout(&okay(run(&["secret", "list", "-R", "acme/api"], None)));
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["A", "API_KEY", "B", "DB_URL"], "{listed}");
    okay(run(&["secret", "delete", "B", "-R", "acme/api"], None));
    // GitHub's rules on these paths: a GITHUB_ name, an unknown
    // repository; each a plain error, nothing stored.
    let o = run(
        &["secret", "set", "GITHUB_X", "-R", "acme/api", "--body", "x"],
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("GITHUB_"), "{}", stderr(&o));
    let o = run(
        &["secret", "set", "X", "-R", "acme/nope", "--body", "x"],
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("acme/nope"), "{}", stderr(&o));
    assert_eq!(
        sealed_env(
            &env,
            "acme/api",
            &["A", "API_KEY", "B", "DB_URL", "GITHUB_X"]
        ),
        "A=1\nAPI_KEY=value-2\nDB_URL=postgres://db/x"
    );
    // The writes are in the audit trail, by the token.
    let o = ok(&env.run(&["audit", "--repo", "acme/api", "--json"], None)).clone();
    assert!(stdout(&o).contains("\"API_KEY\""), "{}", stdout(&o));
    assert!(!stdout(&o).contains("value-2"));
    assert!(!server.log_text().contains("value-2"));
}

/// The paths' semantics as GitHub has them, over plain HTTP on loopback:
/// 201 `{}` then 204, upper-cased names, `Link` paging, errors as
/// `{"message", "documentation_url"}`, `Authorization: token`.
#[test]
fn the_paths_answer_as_github_does() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let server = Server::start(&env, &[]);
    let tok = token(&env, &["write:acme/*"]);
    let c = Client::new(&server, Some(&tok));
    let v3 = |p: &str| format!("{}/api/v3{p}", server.base);
    let curl = |args: &[&str]| {
        let o = Command::new("curl")
            .args([
                "-sS",
                "-H",
                &format!("Authorization: token {tok}"),
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        stdout(&o)
    };
    let r = curl(&[&v3("/repos/acme/api")]);
    assert!(r.ends_with("200") && r.contains("\"id\":"), "{r}");
    let key: serde_json::Value = serde_json::from_str(
        curl(&[&v3("/repos/acme/api/actions/secrets/public-key")])
            .rsplit_once('\n')
            .unwrap()
            .0,
    )
    .unwrap();
    let seal = |value: &str| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let pk: [u8; 32] = b64
            .decode(key["key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sealed = crypto_box::PublicKey::from(pk)
            .seal(&mut crypto_box::aead::OsRng, value.as_bytes())
            .unwrap();
        serde_json::json!({"encrypted_value": b64.encode(sealed), "key_id": key["key_id"]})
            .to_string()
    };
    let put = |name: &str, value: &str| {
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data",
            &seal(value),
            &v3(&format!("/repos/acme/api/actions/secrets/{name}")),
        ])
    };
    assert_eq!(put("lower_name", "one"), "{}\n201");
    assert_eq!(put("LOWER_NAME", "two"), "\n204");
    // The agents family is the repository's secrets too.
    assert_eq!(
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data",
            &seal("three"),
            &v3("/repos/acme/api/agents/secrets/AGENT_KEY")
        ]),
        "{}\n201"
    );
    let r = curl(&[&v3("/repos/acme/api/actions/secrets/lower_name")]);
    assert!(
        r.ends_with("200") && r.contains("\"name\":\"LOWER_NAME\""),
        "{r}"
    );
    // A plaintext value is not taken on these paths; errors are GitHub's.
    let r = curl(&[
        "-X",
        "PUT",
        "--data",
        "{\"value\":\"x\"}",
        &v3("/repos/acme/api/actions/secrets/P"),
    ]);
    assert!(r.ends_with("422") && r.contains("documentation_url"), "{r}");
    let r = put("GITHUB_TOKEN", "x");
    assert!(
        r.ends_with("422")
            && r.contains("\"message\":\"Secret names must not start with GITHUB_\""),
        "{r}"
    );
    let o = Command::new("curl")
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "-H",
            "Authorization: token sit_wrong",
        ])
        .arg(v3("/repos/acme/api/actions/secrets"))
        .output()
        .unwrap();
    let r = stdout(&o);
    assert!(r.ends_with("401") && r.contains("\"message\""), "{r}");
    let r = curl(&[&v3("/repos/acme/api/nope/secrets")]);
    assert!(r.ends_with("404"), "{r}");
    // Paging: 3 secrets, 2 a page.
    assert_eq!(put("THIRD", "3"), "{}\n201");
    let o = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-H",
            &format!("Authorization: Bearer {tok}"),
        ])
        .arg(v3("/repos/acme/api/actions/secrets?per_page=2"))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("\"total_count\":3"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains(&format!(
            "link: <{}?per_page=2&page=2>; rel=\"next\"",
            v3("/repos/acme/api/actions/secrets")
        )),
        "{out}"
    );
    // API v1 sees the same secrets.
    let r = c.get("/repos/acme%2Fapi/secrets");
    assert_eq!(r.1["total_count"], 3, "{:?}", r.1);
    assert_eq!(
        sealed_env(&env, "acme/api", &["LOWER_NAME", "AGENT_KEY", "THIRD"]),
        "AGENT_KEY=three\nLOWER_NAME=two\nTHIRD=3"
    );
}

/// PyGithub (PyPI), pointed at `/api/v3` over TLS: a repository's
/// secrets created, updated, listed and deleted; a refused name is its
/// GithubException with GitHub's status.
#[test]
fn pygithub_manages_repository_secrets() {
    let bin = py_tools();
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let server = tls_server(&env);
    let tok = token(&env, &["write:acme/*"]);
    let script = r#"
import sys
from github import Github, Auth, GithubException
base, tok, ca = sys.argv[1:4]
g = Github(base_url=base + "/api/v3", auth=Auth.Token(tok), verify=ca)
repo = g.get_repo("acme/api")
print(repo.full_name, repo.id > 0)
repo.create_secret("py_token", "py-value-1")
repo.create_secret("PY_TOKEN", "py-value-2")
repo.create_secret("GONE", "x")
print(sorted(s.name for s in repo.get_secrets()), repo.get_secrets().totalCount)
print(repo.delete_secret("GONE"))
try:
    repo.create_secret("GITHUB_BAD", "x")
except GithubException as e:
    print(e.status, e.data["message"])
"#;
    let o = Command::new(bin.join("python"))
        .args(["-c", script, &server.base, &tok])
        .arg(env.path("ca-srv.pem"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "acme/api True\n['GONE', 'PY_TOKEN'] 2\nTrue\n422 Secret names must not start with GITHUB_\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        sealed_env(&env, "acme/api", &["PY_TOKEN", "GONE", "GITHUB_BAD"]),
        "PY_TOKEN=py-value-2"
    );
}

/// octocrab (a Rust client), unchanged: create, then update, a repository
/// secret; it reports Created then Updated from GitHub's 201 and 204.
#[test]
fn octocrab_sees_created_then_updated() {
    use octocrab::models::repos::secrets::{
        CreateRepositorySecret, CreateRepositorySecretResponse,
    };
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let server = Server::start(&env, &[]);
    let tok = token(&env, &["write:acme/*"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcomes = rt.block_on(async {
        let oc = octocrab::Octocrab::builder()
            .base_uri(format!("{}/api/v3", server.base))
            .unwrap()
            .personal_token(tok.clone())
            .build()
            .unwrap();
        let repo = oc.repos("acme", "api");
        let key = repo.secrets().get_public_key().await.unwrap();
        let mut outcomes = Vec::new();
        for value in ["octo-1", "octo-2"] {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let pk: [u8; 32] = b64.decode(&key.key).unwrap().try_into().unwrap();
            let sealed = crypto_box::PublicKey::from(pk)
                .seal(&mut crypto_box::aead::OsRng, value.as_bytes())
                .unwrap();
            let enc = b64.encode(sealed);
            let secret = CreateRepositorySecret {
                key_id: &key.key_id,
                encrypted_value: &enc,
            };
            outcomes.push(
                repo.secrets()
                    .create_or_update_secret("OCTO_KEY", &secret)
                    .await
                    .unwrap(),
            );
        }
        let listed = repo.secrets().get_secrets().await.unwrap();
        (outcomes, listed.total_count)
    });
    assert_eq!(
        outcomes,
        (
            vec![
                CreateRepositorySecretResponse::Created,
                CreateRepositorySecretResponse::Updated
            ],
            1
        )
    );
    assert_eq!(
        sealed_env(&env, "acme/api", &["OCTO_KEY"]),
        "OCTO_KEY=octo-2"
    );
}

/// What sealinit gives the command from a bundle minted through API v1
/// (`environment` if given): the variables among `names`, sorted.
fn minted_env(env: &StoreDir, repo: &str, environment: Option<&str>, names: &[&str]) -> String {
    use base64::Engine as _;
    let launcher = token(env, &["launch:*"]);
    // Minted by a plain server on the same store (loopback).
    let server = Server::start(env, &[]);
    let c = Client::new(&server, Some(&launcher));
    let mut body = serde_json::json!({});
    if let Some(e) = environment {
        body["environment"] = serde_json::json!(e);
    }
    let r = c.post(
        &format!("/repos/{}/bundles", repo.replace('/', "%2F")),
        body,
    );
    assert_eq!(r.0, 201, "{:?}", r.1);
    let b64 = base64::engine::general_purpose::STANDARD;
    std::fs::write(
        env.path("mb"),
        b64.decode(r.1["bundle"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        env.path("mk"),
        b64.decode(r.1["key"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(
        env.path("mk"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    bundle_env(env, "mb", "mk", names)
}

/// Organisation and environment secrets through `gh` (`--org` with
/// `--visibility all|private`, `--env`): a launch gets the organisation's
/// visible secrets, then the repository's, then the environment's (named
/// in the mint), each level winning over the one before.
#[test]
fn gh_manages_organisation_and_environment_secrets() {
    let env = StoreDir::new();
    env.create(&["acme/api", "acme/web", "other/x"]);
    let server = tls_server(&env);
    let tok = token(&env, &["write:acme/*", "write:acme"]);
    let run = |args: &[&str]| {
        let o = gh(&env, &server, &tok, args, None);
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    run(&[
        "secret",
        "set",
        "ORG_ALL",
        "--org",
        "acme",
        "--visibility",
        "all",
        "--body",
        "org-all",
    ]);
    run(&[
        "secret",
        "set",
        "ORG_PRIVATE",
        "--org",
        "acme",
        "--body",
        "org-private",
    ]);
    run(&[
        "secret",
        "set",
        "SHARED",
        "--org",
        "acme",
        "--visibility",
        "private",
        "--body",
        "from-org",
    ]);
    run(&[
        "secret",
        "set",
        "SHARED",
        "-R",
        "acme/api",
        "--body",
        "from-repo",
    ]);
    run(&[
        "secret",
        "set",
        "SHARED",
        "-R",
        "acme/api",
        "--env",
        "staging",
        "--body",
        "from-staging",
    ]);
    run(&[
        "secret",
        "set",
        "STAGE_ONLY",
        "-R",
        "acme/api",
        "--env",
        "staging",
        "--body",
        "stage",
    ]);
    let listed = run(&["secret", "list", "--org", "acme"]);
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["ORG_ALL", "ORG_PRIVATE", "SHARED"], "{listed}");
    let listed = run(&["secret", "list", "-R", "acme/api", "--env", "staging"]);
    assert!(
        listed.contains("STAGE_ONLY") && listed.contains("SHARED"),
        "{listed}"
    );
    // A token without the organisation's scope: refused.
    let repo_only = token(&env, &["write:acme/*"]);
    let o = gh(
        &env,
        &server,
        &repo_only,
        &["secret", "set", "NOPE", "--org", "acme", "--body", "x"],
        None,
    );
    assert!(!o.status.success());
    let names = ["ORG_ALL", "ORG_PRIVATE", "SHARED", "STAGE_ONLY", "NOPE"];
    assert_eq!(
        minted_env(&env, "acme/api", None, &names),
        "ORG_ALL=org-all\nORG_PRIVATE=org-private\nSHARED=from-repo"
    );
    assert_eq!(
        minted_env(&env, "acme/api", Some("staging"), &names),
        "ORG_ALL=org-all\nORG_PRIVATE=org-private\nSHARED=from-staging\nSTAGE_ONLY=stage"
    );
    assert_eq!(
        minted_env(&env, "acme/web", None, &names),
        "ORG_ALL=org-all\nORG_PRIVATE=org-private\nSHARED=from-org"
    );
    // Another owner's repository gets none of acme's.
    ok(&env.run(&["secrets", "set", "--repo", "other/x", "X"], Some(b"x")));
    assert_eq!(minted_env(&env, "other/x", None, &names), "");
}

/// PyGithub: organisation secrets with selected repositories (by id, as it
/// sends them) and an environment's secrets.
#[test]
fn pygithub_manages_organisation_and_environment_secrets() {
    let bin = py_tools();
    let env = StoreDir::new();
    env.create(&["acme/api", "acme/web"]);
    let server = tls_server(&env);
    let tok = token(&env, &["write:acme/*", "write:acme"]);
    let script = r#"
import sys
from github import Github, Auth
base, tok, ca = sys.argv[1:4]
g = Github(base_url=base + "/api/v3", auth=Auth.Token(tok), verify=ca)
org = g.get_organization("acme")
api = g.get_repo("acme/api")
org.create_secret("SELECTED", "only-api", visibility="selected", selected_repositories=[api])
org.create_secret("EVERYWHERE", "all-of-acme", visibility="all")
print(sorted((s.name, s.visibility) for s in org.get_secrets()))
staging = api.get_environment("staging")
staging.create_secret("ENV_KEY", "staging-value")
print([s.name for s in staging.get_secrets()])
# The selection changed without the value: add acme/web, remove acme/api.
sec = org.get_secret("SELECTED")
sec.add_repo(g.get_repo("acme/web"))
print(sorted(r.full_name for r in sec.selected_repositories))
sec.remove_repo(api)
print(sorted(r.full_name for r in sec.selected_repositories))
"#;
    let o = Command::new(bin.join("python"))
        .args(["-c", script, &server.base, &tok])
        .arg(env.path("ca-srv.pem"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "[('EVERYWHERE', 'all'), ('SELECTED', 'selected')]\n['ENV_KEY']\n['acme/api', 'acme/web']\n['acme/web']\n",
        "{}",
        stderr(&o)
    );
    let names = ["SELECTED", "EVERYWHERE", "ENV_KEY"];
    assert_eq!(
        minted_env(&env, "acme/api", Some("staging"), &names),
        "ENV_KEY=staging-value\nEVERYWHERE=all-of-acme"
    );
    assert_eq!(
        minted_env(&env, "acme/web", None, &names),
        "EVERYWHERE=all-of-acme\nSELECTED=only-api"
    );
    // Each change of the selection is a version of its own, audited.
    let o = ok(&env.run(&["audit", "--json"], None)).clone();
    let routes = json_lines(&o)
        .into_iter()
        .filter(|r| r["action"] == "route" && r["detail"]["name"] == "SELECTED")
        .count();
    assert_eq!(routes, 2, "{}", stdout(&o));
}
