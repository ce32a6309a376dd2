//! Issue #27: organisation and environment secrets through the CLI, on
//! both store backends: who holds what, the order a launch gets them in,
//! an organisation secret's reach, history and rollback; and through the
//! service (`--server`), the same.

use sealinit_testkit::*;

fn set(env: &StoreDir, args: &[&str], value: &str) {
    let mut all = vec!["secrets", "set"];
    all.extend_from_slice(args);
    ok(&env.run(&all, Some(value.as_bytes())));
}

/// The variables among `names` that sealinit gives a command from a bundle
/// sealed now for `repo` (and `environment`), sorted.
fn launch(env: &StoreDir, repo: &str, environment: Option<&str>, names: &[&str]) -> String {
    let mut args = vec![
        "seal",
        "--repo",
        repo,
        "--out",
        "b",
        "--key-out",
        "k",
        "--allow-empty",
    ];
    if let Some(e) = environment {
        args.extend(["--environment", e]);
    }
    ok(&env.run(&args, None));
    let vars = bundle_env(env, "b", "k", names);
    let _ = std::fs::remove_file(env.path("k"));
    vars
}

#[test]
fn organisation_repository_and_environment_secrets_in_githubs_order() {
    for_each_with(&BACKENDS, &["acme/api", "acme/web", "other/x"], |env| {
        set(&env, &["--org", "acme", "ORG_ALL"], "org-all");
        set(
            &env,
            &[
                "--org",
                "acme",
                "ONLY_WEB",
                "--visibility",
                "selected",
                "--selected-repo",
                "acme/web",
            ],
            "web-only",
        );
        set(&env, &["--org", "acme", "SHARED"], "from-org");
        set(&env, &["--repo", "acme/api", "SHARED"], "from-repo");
        set(
            &env,
            &["--repo", "acme/api", "--env", "staging", "SHARED"],
            "from-staging",
        );
        set(&env, &["--repo", "other/x", "X"], "x");
        let names = ["ORG_ALL", "ONLY_WEB", "SHARED", "X"];
        assert_eq!(
            launch(&env, "acme/api", None, &names),
            "ORG_ALL=org-all\nSHARED=from-repo"
        );
        assert_eq!(
            launch(&env, "acme/api", Some("Staging"), &names),
            "ORG_ALL=org-all\nSHARED=from-staging"
        );
        assert_eq!(
            launch(&env, "acme/web", None, &names),
            "ONLY_WEB=web-only\nORG_ALL=org-all\nSHARED=from-org"
        );
        assert_eq!(launch(&env, "other/x", None, &names), "X=x");
        // Listing, history and rollback work on a holder as on a repository.
        let o = ok(&env.run(&["secrets", "list", "--org", "acme"], None)).clone();
        assert!(
            stdout(&o).contains("ONLY_WEB") && stdout(&o).contains("ORG_ALL"),
            "{}",
            stdout(&o)
        );
        set(&env, &["--org", "acme", "SHARED"], "from-org-2");
        ok(&env.run(
            &[
                "secrets", "rollback", "--org", "acme", "SHARED", "--to", "1",
            ],
            None,
        ));
        assert_eq!(
            launch(&env, "acme/web", None, &["SHARED"]),
            "SHARED=from-org"
        );
        let o = ok(&env.run(&["secrets", "history", "--org", "acme", "SHARED"], None)).clone();
        assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
        ok(&env.run(
            &[
                "secrets", "rm", "--repo", "acme/api", "--env", "staging", "SHARED",
            ],
            None,
        ));
        assert_eq!(
            launch(&env, "acme/api", Some("staging"), &["SHARED"]),
            "SHARED=from-repo"
        );
        // Selected repositories belong to an organisation, and to its own.
        let o = env.run(
            &[
                "secrets",
                "set",
                "--repo",
                "acme/api",
                "Y",
                "--selected-repo",
                "acme/web",
            ],
            Some(b"y"),
        );
        assert!(
            !o.status.success() && stderr(&o).contains("organisation"),
            "{}",
            stderr(&o)
        );
        let o = env.run(
            &[
                "secrets",
                "set",
                "--org",
                "acme",
                "Y",
                "--visibility",
                "selected",
                "--selected-repo",
                "other/x",
            ],
            Some(b"y"),
        );
        assert!(
            !o.status.success() && stderr(&o).contains("not one of acme's"),
            "{}",
            stderr(&o)
        );
        // An environment of a repository that does not exist: as the repository.
        let o = env.run(
            &[
                "secrets",
                "set",
                "--repo",
                "acme/nope",
                "--env",
                "staging",
                "Z",
            ],
            Some(b"z"),
        );
        assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
        let o = env.run(&["secrets", "list", "--env", "staging"], None);
        assert_eq!(
            o.status.code(),
            Some(64),
            "--env needs --repo: {}",
            stderr(&o)
        );
    });
}
