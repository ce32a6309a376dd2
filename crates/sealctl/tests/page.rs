//! The Secrets tab (issue #17) in a real browser: Debian's Chromium,
//! headless, driven through Debian's chromedriver (both started here and
//! stopped afterwards) against the real `sealctl serve` process.
//!
//! Every value typed is checked to be nowhere in the page source or URL
//! after each step, nor in the server's trace-level log at the end.
//! Screenshots of every main page land in `target/screenshots/` (CI
//! artifacts), taken only of pages whose source holds no value.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use sealinit_testkit::webdriver::{Browser, Driver, ENTER, TAB, artifact_dir, form_csrf};
use sealinit_testkit::*;

/// One browser at a time: two cores run a server, a driver and Chromium.
static BROWSER: Mutex<()> = Mutex::new(());

/// A service with an admin token, a driver and a browser.
struct Site {
    env: StoreDir,
    server: Option<Server>,
    base: String,
    token: String,
    /// Every value typed into the page by the test.
    typed: Vec<String>,
    b: Browser,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

fn token(env: &StoreDir, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["tokens", "create", "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let o = env.run(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

impl Site {
    fn start(width: u32) -> Self {
        Self::start_with(width, &[])
    }

    fn start_with(width: u32, serve_args: &[&str]) -> Self {
        let env = StoreDir::new();
        let token = token(&env, "page-admin", &["admin"]);
        let server = Server::start(&env, serve_args);
        let base = server.base.clone();
        let driver = Driver::start();
        let profile = tempfile::tempdir().unwrap();
        let b = driver.browser(profile.path(), width, 900);
        Self {
            env,
            server: Some(server),
            base,
            token,
            typed: Vec::new(),
            b,
            _driver: driver,
            _profile: profile,
        }
    }

    fn go(&self, path: &str) {
        self.b.goto(&format!("{}{path}", self.base));
    }

    /// A value to type: remembered, so that every check looks for it.
    fn value(&mut self, v: &str) -> String {
        self.typed.push(v.to_owned());
        v.to_owned()
    }

    /// Neither the page's source nor its URL holds a value typed so far.
    fn assert_clean(&self) {
        let source = self.b.source();
        let url = self.b.url();
        for v in &self.typed {
            assert!(
                !source.contains(v.as_str()),
                "a typed value is in the page source of {url}"
            );
            assert!(!url.contains(v.as_str()), "a typed value is in the URL");
        }
        assert!(!source.contains(&self.token), "the token is in the page");
    }

    /// A full-page screenshot, once the page is checked clean.
    fn shot(&self, name: &str) -> PathBuf {
        self.assert_clean();
        let path = artifact_dir("screenshots").join(format!("{name}.png"));
        self.b.full_screenshot(&path);
        path
    }

    /// Signs in with `token` by keyboard alone: the field has the focus.
    fn sign_in_with(&self, token: &str) {
        self.go("/");
        assert_eq!(self.b.title(), "Sign in · sealinit");
        // The browser applies autofocus once the page has loaded.
        wait_for_focus(&self.b, "#token");
        self.b
            .navigating(|| self.b.keys(&format!("{token}{ENTER}")));
    }

    fn flash(&self) -> String {
        self.b.text(".flash")
    }

    /// Stops the server; its whole log holds no value and no token.
    fn finish(mut self) {
        let (status, log) = self.server.take().unwrap().stop();
        assert!(status.success(), "{log}");
        for v in &self.typed {
            assert!(!log.contains(v.as_str()), "a typed value is in the log");
        }
        assert!(!log.contains(&self.token), "the token is in the log");
        assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    }
}

/// Waits (at most 20 s) for a page to show what `done` looks for.
fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "the page did not change in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the element `css` selects has the focus.
fn wait_for_focus(b: &Browser, css: &str) {
    wait_for(|| {
        b.exec(
            "return document.activeElement !== null && document.activeElement.matches(arguments[0])",
            json!([css]),
        ) == Value::Bool(true)
    });
}

/// The cells of the table row whose first cell is `first`.
fn row(b: &Browser, first: &str) -> Vec<String> {
    let rows = b.exec(
        "return Array.from(document.querySelectorAll('tbody tr')).map(r => Array.from(r.cells).map(c => c.innerText.trim()))",
        json!([]),
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|r| r.first().is_some_and(|c| c == first))
        .unwrap_or_else(|| panic!("no row {first}: {}", b.text("main")))
}

/// The value sealctl run hands a command for `name` of `repo`.
fn delivered(env: &StoreDir, repo: &str, name: &str) -> String {
    let o = env.run(&["run", "--repo", repo, "--", "printenv", name], None);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim_end().to_owned()
}

/// Sets `name` of `repo` to `value` with the CLI.
fn set_secret(env: &StoreDir, repo: &str, name: &str, value: &[u8]) {
    ok(&env.run(&["secrets", "set", "--repo", repo, name], Some(value)));
}

/// Imports a .env text into `repo` with the CLI.
fn import_env(env: &StoreDir, repo: &str, text: &str) {
    let file = env.path("import.env");
    std::fs::write(&file, text).unwrap();
    ok(&env.run(
        &[
            "secrets",
            "set",
            "--repo",
            repo,
            "--from-env-file",
            file.to_str().unwrap(),
        ],
        None,
    ));
}

#[test]
fn sign_in_add_update_roll_back_delete_import_and_audit() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1440);
    let b = &site.b;

    // Sign-in page: the token field is a password field, not autocompleted.
    site.go("/");
    let field = b.find("#token");
    assert_eq!(b.attr(&field, "type").as_deref(), Some("password"));
    assert_eq!(b.attr(&field, "autocomplete").as_deref(), Some("off"));
    site.shot("signin");
    site.sign_in_with(&site.token.clone());
    let b = &site.b;
    assert_eq!(b.title(), "Repositories · sealinit");
    assert!(b.text(".who").contains("page-admin"), "{}", b.text(".who"));
    assert!(b.text(".empty").contains("There is no repository yet"));
    // The session cookie: HttpOnly, SameSite=Strict, expiring.
    let cookies = b.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "sealinit")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert!(session["expiry"].as_u64().is_some(), "{session}");
    site.shot("repos-empty");

    // A repository that does not exist: the page says how to create it.
    b.type_into("#repo", "acme/web");
    b.submit("form[action='/r'] button");
    assert_eq!(b.title(), "Error: Repositories · sealinit");
    assert!(
        b.text("main").contains("create it under New repository"),
        "{}",
        b.text("main")
    );
    // Create it, then add a secret.
    site.go("/");
    let b = &site.b;
    b.type_into("#new-repo", "acme/web");
    b.submit("form[action='/repos/new'] button");
    assert_eq!(b.url(), format!("{}/r/acme%2Fweb", site.base));
    assert!(
        b.text("[role=status]").contains("Created acme/web"),
        "{}",
        b.text("main")
    );
    assert!(b.text(".empty").contains("No secrets yet"));
    site.shot("secrets-empty");
    let v1 = site.value("page-value-ONE-5e0c91");
    let b = &site.b;
    b.type_into("#add-name", "API_KEY");
    b.type_into("#add-value", &v1);
    let value_field = b.find("#add-value");
    assert_eq!(b.attr(&value_field, "autocomplete").as_deref(), Some("off"));
    b.submit("form[action$='/add'] button[type=submit]");
    assert_eq!(site.flash(), "Added API_KEY (version 1).");
    let r = row(&site.b, "API_KEY");
    assert_eq!(r[1], format!("{} B", v1.len()), "{r:?}");
    assert_eq!(r[2], "1");
    assert!(r[4].contains("page-admin"), "{r:?}");
    site.assert_clean();
    // Reloading after the redirect posts nothing again (303, then GET).
    site.b.goto(&site.b.url());
    assert_eq!(site.flash(), "", "the result shows once");

    // A secret through the proxy: its delivery and hosts, on the form and
    // in the table; without a host the form says what is missing.
    let stripe = site.value("sk_test_page-PROXY-7c2e19");
    let b = &site.b;
    b.type_into("#add-name", "PAYMENTS_KEY");
    b.type_into("#add-value", &stripe);
    b.click("#add-delivery option[value=proxy]");
    b.submit("form[action$='/add'] button[type=submit]");
    assert!(
        site.b.text("main").contains("at least one host"),
        "{}",
        site.b.text("main")
    );
    let b = &site.b;
    b.type_into("#add-value", &stripe);
    b.click("#add-delivery option[value=proxy]");
    b.type_into("#add-hosts", "api.stripe.com");
    b.submit("form[action$='/add'] button[type=submit]");
    assert_eq!(site.flash(), "Added PAYMENTS_KEY (version 1).");
    let r = row(&site.b, "PAYMENTS_KEY");
    assert_eq!(r[5], "proxy → api.stripe.com", "{r:?}");
    site.assert_clean();
    // The egress policy: deny, with one host allowed.
    let b = &site.b;
    b.click("#egress-default option[value=deny]");
    b.type_into("#egress-allow", "registry.npmjs.org");
    b.submit("form[action$='/egress'] button[type=submit]");
    assert_eq!(site.flash(), "Egress policy saved.");
    let o = ok(&site
        .env
        .run(&["repos", "egress", "acme/web", "--json"], None))
    .clone();
    assert_eq!(
        stdout(&o).trim(),
        r#"{"default":"deny","allow":["registry.npmjs.org"]}"#
    );
    // (`sealctl run`, which the steps below use, starts no egress proxy.)
    ok(&site.env.run(
        &["secrets", "rm", "--repo", "acme/web", "PAYMENTS_KEY"],
        None,
    ));

    // Update: the field starts empty; version 2.
    site.b.submit("a[href$='/s/API_KEY']");
    let b = &site.b;
    assert_eq!(b.title(), "API_KEY in acme/web · sealinit");
    assert_eq!(
        b.exec(
            "return document.querySelector('#update-value').value",
            json!([])
        ),
        Value::String(String::new()),
        "the update field starts empty"
    );
    let v2 = site.value("page-value-TWO-longer-a81f3d");
    let b = &site.b;
    b.type_into("#update-value", &v2);
    b.submit("form[action$='/update'] button[type=submit]");
    assert_eq!(site.flash(), "Updated API_KEY: now version 2.");
    assert!(site.b.text("dl.facts").contains(&format!("{} B", v2.len())));
    site.shot("secret");
    assert_eq!(delivered(&site.env, "acme/web", "API_KEY"), v2);

    // Roll back to version 1: version 3 holds version 1's value.
    site.b
        .submit("form[action$='/rollback']:has(input[name=to][value='1']) button");
    assert_eq!(
        site.flash(),
        "Rolled API_KEY back to version 1: its value is now version 3."
    );
    assert_eq!(row(&site.b, "3 (restored from 1) (current)").len(), 5);
    site.assert_clean();
    assert_eq!(delivered(&site.env, "acme/web", "API_KEY"), v1);

    // A stale update (the page still says version 3 while version 4 is
    // written elsewhere) is refused, and says so next to the form.
    let o = site.env.run(
        &["secrets", "set", "--repo", "acme/web", "API_KEY"],
        Some(b"from-the-cli"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v3 = site.value("page-value-THREE-stale-19aa0e");
    let b = &site.b;
    b.type_into("#update-value", &v3);
    b.submit("form[action$='/update'] button[type=submit]");
    assert!(
        b.text(".error")
            .contains("changed since this page was loaded"),
        "{}",
        b.text("main")
    );
    assert_eq!(delivered(&site.env, "acme/web", "API_KEY"), "from-the-cli");
    site.assert_clean();

    // Delete, with a confirmation step.
    site.go("/r/acme%2Fweb/s/API_KEY");
    site.b.submit("a.danger");
    assert_eq!(site.b.title(), "Delete API_KEY? · sealinit");
    site.shot("delete-confirm");
    site.b.submit("form[action$='/delete'] button");
    assert_eq!(site.flash(), "Deleted API_KEY.");
    assert!(site.b.text(".empty").contains("No secrets yet"));

    // Import a .env with a mistake on line 3: nothing changes; the message
    // names the line and the name before it; the pasted text is given
    // back (what the user typed), so the value in it is checked for only
    // once the field is cleared.
    let bad_value = "page-import-FIRST-2b7d".to_owned();
    let bad = format!("FIRST={bad_value}\nSECOND=two\nthis line is wrong\n");
    site.b.type_into("#import-content", &bad);
    site.b.submit("form[action$='/import'] button[type=submit]");
    let error = site.b.text("#import-error");
    assert!(error.contains("line 3, after SECOND"), "{error}");
    assert!(error.contains("Nothing was changed."), "{error}");
    assert!(error.starts_with("Syntax error on line 3"), "{error}");
    assert!(site.b.text(".empty").contains("No secrets yet"));
    site.shot("import-error");
    site.b.exec(
        "document.querySelector('#import-content').value = ''",
        json!([]),
    );

    // Then upload a good one as a file.
    let alpha = site.value("page-import-ALPHA-77c3");
    let beta = site.value("page-import-BETA-0d42");
    let file = site.env.path("upload.env");
    std::fs::write(
        &file,
        format!("ALPHA={alpha}\n# a comment\nBETA=\"{beta}\"\n"),
    )
    .unwrap();
    site.b.type_into("#import-file", file.to_str().unwrap());
    site.b.submit("form[action$='/import'] button[type=submit]");
    assert_eq!(site.flash(), "Imported 2 secret(s): ALPHA, BETA.");
    site.typed.push(bad_value);
    assert_eq!(row(&site.b, "BETA")[1], format!("{} B", beta.len()));
    assert_eq!(delivered(&site.env, "acme/web", "ALPHA"), alpha);

    // The guard: a live-looking Stripe key is refused next to its field,
    // the rule named, the value not echoed; ticking the box lets it in.
    let live = site.value(&["sk", "_live_", "pageGuard0123456789abcd"].concat());
    site.b.type_into("#add-name", "STRIPE_KEY");
    site.b.type_into("#add-value", &live);
    site.b.submit("form[action$='/add'] button[type=submit]");
    let error = site.b.text("#add-value-error");
    assert!(error.contains("rule stripe-live-key"), "{error}");
    assert!(error.contains("test-mode"), "{error}");
    let b = &site.b;
    let field = b.find("#add-value");
    assert_eq!(b.attr(&field, "aria-invalid").as_deref(), Some("true"));
    assert_eq!(
        b.attr(&field, "aria-describedby").as_deref(),
        Some("add-value-hint add-value-error")
    );
    assert_eq!(
        b.attr(&b.find("#add-name"), "value").as_deref(),
        Some("STRIPE_KEY"),
        "the name is kept, the value is not"
    );
    site.shot("guard");
    site.b.type_into("#add-value", &live);
    site.b.click("#add-allow-0");
    site.b.submit("form[action$='/add'] button[type=submit]");
    assert!(
        site.flash().starts_with("Added STRIPE_KEY (version 1). STRIPE_KEY was stored although it looks like a production credential (rule stripe-live-key)"),
        "{}",
        site.flash()
    );
    site.shot("secrets");
    // A warning-level rule stores the value and says what to check.
    let url = site.value("postgres://app:page-db-PASSWORD-4410@db.internal/app");
    site.b.type_into("#add-name", "DATABASE_URL");
    site.b.type_into("#add-value", &url);
    site.b.submit("form[action$='/add'] button[type=submit]");
    assert!(
        site.flash()
            .contains("Check DATABASE_URL: it looks like a database URL (rule database-url)"),
        "{}",
        site.flash()
    );
    site.assert_clean();

    // The audit page: every action above, by this token, no value.
    site.b.submit("nav.tabs a[href$='/audit']");
    let b = &site.b;
    assert_eq!(b.title(), "Audit of acme/web · sealinit");
    let text = b.text("main");
    for action in ["Updated", "Rolled back", "Deleted"] {
        assert!(
            text.contains(action),
            "no {action:?} in the audit page: {text}"
        );
    }
    assert!(
        text.contains("production credential allowed: STRIPE_KEY (stripe-live-key)"),
        "{text}"
    );
    assert!(text.contains("API_KEY: v1 restored as v3"), "{text}");
    site.shot("audit");

    // The Secrets tab as the README shows it.
    site.go("/r/acme%2Fweb");
    site.shot("secrets-tab");

    // The repositories page: the count and the last change.
    site.go("/");
    let r = row(&site.b, "acme/web");
    assert_eq!(r[1], "4");
    // Times say how long ago, the exact UTC time in the title (point 13).
    assert_eq!(r[2], "just now", "{r:?}");
    let t = site.b.find("tbody time");
    assert!(
        site.b
            .attr(&t, "title")
            .is_some_and(|t| t.ends_with(" UTC")),
        "{:?}",
        site.b.attr(&t, "title")
    );
    assert!(
        site.b
            .attr(&t, "datetime")
            .is_some_and(|t| t.ends_with('Z'))
    );
    site.shot("repos");

    // Sign out: the session is gone.
    site.b.submit("header form button");
    assert_eq!(site.b.title(), "Sign in · sealinit");
    site.go("/r/acme%2Fweb");
    assert_eq!(site.b.title(), "Sign in · sealinit");
    site.finish();
}

/// A raw HTTP exchange with the server: status, headers, body.
fn http(
    base: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let url = format!("{base}{path}");
    let r = match method {
        "GET" => {
            let mut req = agent.get(&url);
            if let Some(c) = cookie {
                req = req.header("Cookie", c);
            }
            req.call()
        }
        _ => {
            let mut req = agent
                .post(&url)
                .content_type("application/x-www-form-urlencoded");
            if let Some(c) = cookie {
                req = req.header("Cookie", c);
            }
            req.send(form.unwrap_or("").as_bytes())
        }
    };
    let mut r = r.unwrap();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
        .collect();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), headers, body)
}

#[test]
fn wrong_token_forms_without_csrf_scopes_and_headers() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1440);

    // A wrong token: an error next to the field, no session.
    let wrong = site.value("sit_wrongwrongwrongwrongwrongwrong000000");
    site.sign_in_with(&wrong);
    let b = &site.b;
    assert_eq!(b.title(), "Error: Sign in · sealinit");
    assert!(
        b.text("#token-error").contains("not valid"),
        "{}",
        b.text("main")
    );
    assert_eq!(b.attr(&b.find("#token"), "value"), None, "not echoed");
    assert!(b.cookies().iter().all(|c| c["name"] != "sealinit"));
    site.shot("signin-wrong-token");

    // The right one; then a form whose CSRF token was removed: 403, and
    // nothing is written.
    site.env.create(&["acme/web"]);
    site.sign_in_with(&site.token.clone());
    site.go("/r/acme%2Fweb");
    let v = site.value("page-csrf-VALUE-61be");
    let b = &site.b;
    b.exec(
        "document.querySelector('form[action$=\"/add\"] input[name=csrf]').remove()",
        json!([]),
    );
    b.type_into("#add-name", "NO_CSRF");
    b.type_into("#add-value", &v);
    b.submit("form[action$='/add'] button[type=submit]");
    assert_eq!(b.title(), "Form not accepted · sealinit");
    site.assert_clean();
    site.shot("csrf-refused");
    let o = site
        .env
        .run(&["secrets", "list", "--repo", "acme/web"], None);
    assert!(!stdout(&o).contains("NO_CSRF"), "{}", stdout(&o));

    // The same over raw HTTP, with the browser's own session cookie: 403
    // without the field, and with another value.
    let sid = site
        .b
        .cookies()
        .iter()
        .find(|c| c["name"] == "sealinit")
        .map(|c| format!("sealinit={}", c["value"].as_str().unwrap()))
        .unwrap();
    let base = site.base.clone();
    let (status, _, _) = http(
        &base,
        "POST",
        "/r/acme%2Fweb/add",
        Some(&sid),
        Some("name=RAW&value=x"),
    );
    assert_eq!(status, 403);
    let (status, _, _) = http(
        &base,
        "POST",
        "/r/acme%2Fweb/add",
        Some(&sid),
        Some("csrf=forged&name=RAW&value=x"),
    );
    assert_eq!(status, 403);
    let (status, _, _) = http(&base, "POST", "/signout", Some(&sid), Some(""));
    assert_eq!(status, 403);
    // Sign-in without its CSRF token, or with one its cookie does not
    // repeat.
    let tok = site.token.clone();
    let (status, _, _) = http(
        &base,
        "POST",
        "/signin",
        None,
        Some(&format!("token={tok}")),
    );
    assert_eq!(status, 403);
    let (status, _, _) = http(
        &base,
        "POST",
        "/signin",
        Some("sealinit-signin=aaaa"),
        Some(&format!("csrf=bbbb&token={tok}")),
    );
    assert_eq!(status, 403);
    // With both, it signs in: 303 and a cookie with every attribute.
    // The form carries the cookie's token masked (BREACH).
    let (_, headers, body) = http(&base, "GET", "/", None, None);
    let csrf = form_csrf(&body);
    let cookie = headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: sealinit-signin="))
        .and_then(|l| l.split(';').next())
        .unwrap_or_else(|| panic!("{headers}"))
        .to_owned();
    assert_ne!(csrf, cookie);
    let (status, headers2, _) = http(
        &base,
        "POST",
        "/signin",
        Some(&format!("sealinit-signin={cookie}")),
        Some(&format!("csrf={csrf}&token={tok}")),
    );
    assert_eq!(status, 303, "{headers2}");
    assert!(headers2.contains("location: /\n"), "{headers2}");
    let set = headers2
        .lines()
        .find(|l| l.starts_with("set-cookie: sealinit="))
        .unwrap_or_else(|| panic!("{headers2}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    // Every page's headers.
    for h in [
        "content-security-policy: default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "referrer-policy: no-referrer",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
    ] {
        assert!(headers.contains(h), "{h} missing: {headers}");
    }
    assert!(
        !headers.contains("strict-transport-security"),
        "not over plain HTTP"
    );
    assert!(!body.contains("<script"), "the page sends no script");

    // A token that may write acme/* but not audit, nor see other repos.
    site.env.create(&["other/repo"]);
    let o = site
        .env
        .run(&["secrets", "set", "--repo", "other/repo", "X"], Some(b"x"));
    assert!(o.status.success(), "{}", stderr(&o));
    let scoped = token(&site.env, "scoped", &["write:acme/*"]);
    site.go("/");
    site.b.submit("header form button");
    site.sign_in_with(&scoped);
    let b = &site.b;
    assert!(b.text("main").contains("acme/web") || b.text(".empty").contains("No repository"));
    assert!(!b.text("main").contains("other/repo"));
    site.go("/r/acme%2Fweb");
    assert!(
        site.b.try_find("nav.tabs a[href$='/audit']").is_none(),
        "no audit scope, no tab"
    );
    site.go("/r/acme%2Fweb/audit");
    assert_eq!(site.b.title(), "Not allowed · sealinit");
    site.go("/r/other%2Frepo");
    assert_eq!(site.b.title(), "Not allowed · sealinit");

    // Revoking the token ends its session at the next request.
    let id = site.env.run(&["tokens", "list", "--json"], None);
    let scoped_id = json_lines(&id)
        .iter()
        .find(|t| t["name"] == "scoped")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = site.env.run(&["tokens", "revoke", &scoped_id], None);
    assert!(o.status.success(), "{}", stderr(&o));
    site.go("/r/acme%2Fweb");
    assert_eq!(site.b.title(), "Sign in · sealinit");
    site.finish();
}

/// Every element a keyboard can reach on the current page, in a fixed
/// order; Tab is pressed until each has had the focus.
fn tab_reaches_everything(b: &Browser, page: &str) {
    let n = b
        .exec(
            "const all = Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]), textarea'));\
             all.forEach((e, i) => e.dataset.kb = i);\
             return all.length",
            json!([]),
        )
        .as_u64()
        .unwrap();
    assert!(n > 0, "{page}: nothing focusable");
    let mut seen = vec![false; n as usize];
    for _ in 0..(2 * n + 4) {
        b.keys(TAB);
        let i = b.exec(
            "const a = document.activeElement; return a && a.dataset.kb !== undefined ? Number(a.dataset.kb) : null",
            json!([]),
        );
        if let Some(i) = i.as_u64() {
            seen[i as usize] = true;
        }
        if seen.iter().all(|s| *s) {
            return;
        }
    }
    let missed: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| !**s)
        .map(|(i, _)| i)
        .collect();
    panic!("{page}: Tab never reached elements {missed:?}");
}

/// Presses Tab until the focused element matches `css`.
fn tab_to(b: &Browser, css: &str) {
    for _ in 0..80 {
        let on = b.exec(
            "return document.activeElement && document.activeElement.matches(arguments[0])",
            json!([css]),
        );
        if on == Value::Bool(true) {
            return;
        }
        b.keys(TAB);
    }
    panic!("Tab never reached {css}");
}

/// What does not fit the current page's width: the elements that reach
/// past the viewport's right edge (or start left of 0) and the controls,
/// labels and table heads whose words do not fit them (a word broken
/// over lines: "a control narrower than its label"; a name longer than
/// 24 characters may break, no word of a label).
fn overflowing(b: &Browser) -> (Vec<String>, Vec<String>) {
    let v = b.exec(
        "const hidden = e => { for (let a = e; a; a = a.parentElement) { const r = a.getBoundingClientRect(); if (r.width <= 2 || r.height <= 2) return true; } return false; };\
         const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '') + ' ' + (e.innerText || '').trim().slice(0, 40);\
         const wide = Array.from(document.querySelectorAll('body *')).filter(e => e.closest('.skip') === null && !hidden(e))\
           .filter(e => { const r = e.getBoundingClientRect(); return r.right > window.innerWidth + 0.5 || r.left < -0.5; }).map(name);\
         const lines = e => { const w = document.createTreeWalker(e, NodeFilter.SHOW_TEXT); const bottoms = new Set(); let n;\
           while ((n = w.nextNode())) { if (hidden(n.parentElement)) continue; const r = document.createRange(); r.selectNodeContents(n);\
             for (const x of r.getClientRects()) if (x.width > 0) bottoms.add(Math.round(x.bottom)); }\
           return bottoms.size; };\
         const broken = Array.from(document.querySelectorAll('button, a.danger, a.cancel, label, th, .tabs a, dt')).filter(e => !hidden(e)).filter(e => {\
           const words = (e.innerText || '').trim().split(/\\s+/).filter(w => w.length > 0);\
           return words.length > 0 && Math.max(...words.map(w => w.length)) <= 24 && lines(e) > words.length;\
         }).map(name);\
         return [wide.slice(0, 8), broken.slice(0, 8)]",
        json!([]),
    );
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    (list(&v[0]), list(&v[1]))
}

/// The form controls whose border contrasts less than 3:1 (WCAG 1.4.11)
/// with their own background or with what is behind them.
fn faint_controls(b: &Browser) -> Vec<String> {
    let v = b.exec(
        "const rgb = c => (c.match(/[0-9.]+/g) || []).map(Number);\
         const lum = c => { const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };\
         const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };\
         const behind = e => { for (let a = e.parentElement; a; a = a.parentElement) { const c = getComputedStyle(a).backgroundColor; if (rgb(c).length === 3 || rgb(c)[3] > 0) return c; } return 'rgb(255, 255, 255)'; };\
         return Array.from(document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]):not([type=file]), textarea, select')).flatMap(e => {\
           const s = getComputedStyle(e); const border = s.borderTopColor;\
           const worst = Math.min(ratio(border, s.backgroundColor), ratio(border, behind(e)));\
           return worst < 3 ? [(e.id || e.name) + ' ' + worst.toFixed(2) + ':1'] : []; })",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_page_fits_360_px_and_works_by_keyboard_alone() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(360);
    site.env
        .create(&["acme/a-rather-long-repository-name.with.dots"]);
    let o = site.env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/a-rather-long-repository-name.with.dots",
            "DATABASE_URL_FOR_THE_INTEGRATION_TESTS",
        ],
        Some(b"postgres://u:p@localhost/test"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // A second version: the history has a roll-back button.
    ok(&site.env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/a-rather-long-repository-name.with.dots",
            "DATABASE_URL_FOR_THE_INTEGRATION_TESTS",
        ],
        Some(b"postgres://u:p@localhost/test2"),
    ));
    let fits = |site: &Site, page: &str| {
        let v = site.b.exec(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            json!([]),
        );
        let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
        assert_eq!(inner, 360, "the viewport is 360 px wide");
        assert!(scroll <= inner, "{page}: {scroll} px wide at {inner} px");
        let (wide, broken) = overflowing(&site.b);
        assert!(wide.is_empty(), "{page}: wider than the screen: {wide:?}");
        assert!(broken.is_empty(), "{page}: a word broken: {broken:?}");
    };

    // Sign in, by keyboard.
    site.go("/");
    fits(&site, "sign-in");
    tab_reaches_everything(&site.b, "sign-in");
    site.shot("360-signin");
    site.sign_in_with(&site.token.clone());

    // Every page: it fits, and Tab reaches every control.
    let repo = "/r/acme%2Fa-rather-long-repository-name.with.dots";
    let secret = format!("{repo}/s/DATABASE_URL_FOR_THE_INTEGRATION_TESTS");
    for (name, path) in [
        ("repos", "/".to_owned()),
        ("secrets", repo.to_owned()),
        ("secret", secret.clone()),
        ("delete-confirm", format!("{secret}/delete")),
        ("audit", format!("{repo}/audit")),
        ("not-found", "/no/such/page".to_owned()),
    ] {
        site.go(&path);
        fits(&site, name);
        // Rows are cards: a name gets the card's width, and a row (a
        // history version with its roll-back button) stays short.
        let rows = site.b.exec(
            "return Array.from(document.querySelectorAll('tbody tr')).map(r => [r.cells[0].getBoundingClientRect().width, r.getBoundingClientRect().height])",
            json!([]),
        );
        for r in rows.as_array().unwrap() {
            let (width, height) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
            assert!(width > 280.0, "{name}: a name cell {width} px wide");
            assert!(height < 150.0, "{name}: a row {height} px tall");
        }
        tab_reaches_everything(&site.b, name);
        site.shot(&format!("360-{name}"));
    }

    // Dark mode, from the system's preference.
    site.go(repo);
    let bg = |site: &Site| {
        site.b
            .exec(
                "return getComputedStyle(document.body).backgroundColor",
                json!([]),
            )
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(bg(&site), "rgb(255, 255, 255)");
    site.b.prefer_dark(true);
    assert_eq!(bg(&site), "rgb(13, 17, 23)");
    site.shot("360-secrets-dark");
    site.b.prefer_dark(false);

    // A whole change by keyboard alone: add a secret, then delete it.
    site.go(repo);
    let v = site.value("page-keyboard-VALUE-c0ffee");
    let b = &site.b;
    tab_to(b, "#add-name");
    b.keys("BY_KEYBOARD");
    tab_to(b, "#add-value");
    b.keys(&v);
    tab_to(b, "form[action$='/add'] button");
    b.navigating(|| b.keys(ENTER));
    wait_for(|| b.text(".flash").starts_with("Added BY_KEYBOARD"));
    tab_to(b, "a[href$='/s/BY_KEYBOARD']");
    b.navigating(|| b.keys(ENTER));
    wait_for(|| b.title().starts_with("BY_KEYBOARD in"));
    tab_to(b, "a.danger");
    b.navigating(|| b.keys(ENTER));
    wait_for(|| b.title().starts_with("Delete BY_KEYBOARD?"));
    // The confirmation's Cancel has the focus (Enter alone never
    // deletes); Tab reaches Delete.
    wait_for_focus(b, "a.cancel");
    tab_to(b, "form[action$='/delete'] button");
    b.navigating(|| b.keys(ENTER));
    wait_for(|| b.text(".flash") == "Deleted BY_KEYBOARD.");
    site.assert_clean();
    // And out.
    tab_to(&site.b, "header form button");
    site.b.navigating(|| site.b.keys(ENTER));
    wait_for(|| site.b.title() == "Sign in · sealinit");
    site.finish();
}

#[test]
fn the_one_time_sign_in_link_signs_one_browser_in_once() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::start_with(1440, &["--login-link"]);
    let server = site.server.as_ref().unwrap();
    server.wait_for_log("sign in to the Secrets page once");
    let log = server.log_text();
    let link = log
        .lines()
        .find_map(|l| l.split(" minutes: ").nth(1))
        .unwrap()
        .to_owned();
    let code = link.rsplit('/').next().unwrap().to_owned();
    assert_eq!(code.len(), 43, "{link}");
    assert!(link.starts_with(&format!("{}/login/", site.base)), "{link}");

    // Opening the link changes nothing (a link preview cannot use it up);
    // its button signs in, as a new admin token named in the audit trail.
    site.b.goto(&link);
    assert_eq!(site.b.title(), "Sign in · sealinit");
    site.b.goto(&link);
    // It asks for a name for the audit trail (point 13); none is refused
    // without using the link up.
    site.b.exec(
        "document.querySelector('#link-name').removeAttribute('required')",
        json!([]),
    );
    site.b.submit("form[action^='/login/'] button");
    assert_eq!(site.b.title(), "Error: Sign in · sealinit");
    wait_for_focus(&site.b, "#link-name");
    site.b.type_into("#link-name", "Ana Lima");
    site.b.submit("form[action^='/login/'] button");
    assert_eq!(site.b.title(), "Repositories · sealinit");
    assert!(
        site.b
            .text(".who")
            .starts_with("Signed in as token Ana Lima (sign-in link) (tk-"),
        "{}",
        site.b.text(".who")
    );
    // The id: unbroken, and secondary.
    assert!(site.b.text(".who .id").starts_with("(tk-"));
    let nowrap = site.b.exec(
        "return getComputedStyle(document.querySelector('.who .id')).whiteSpace",
        json!([]),
    );
    assert_eq!(nowrap, "nowrap");
    let o = site.env.run(&["audit", "--json"], None);
    let made = json_lines(&o)
        .into_iter()
        .find(|r| r["action"] == "token-create" && r["actor"] == "sign-in link for Ana Lima")
        .unwrap_or_else(|| panic!("{}", stdout(&o)));
    assert_eq!(made["detail"]["scopes"], json!(["admin"]), "{made}");
    assert!(made["detail"]["expires_at"].is_i64(), "it expires: {made}");

    // Once only: the link is gone, for this browser and any other.
    site.b.goto(&link);
    assert_eq!(site.b.title(), "Link used or expired · sealinit");
    let (status, _, _) = http(&site.base, "GET", &format!("/login/{code}"), None, None);
    assert_eq!(status, 404);
    let (status, _, _) = http(
        &site.base,
        "POST",
        &format!("/login/{code}"),
        None,
        Some(""),
    );
    assert_eq!(status, 403, "no CSRF token, no sign-in");

    // The code is in the one line that printed it, never in a request log.
    let (exit, log) = {
        let mut site = site;
        site.server.take().unwrap().stop()
    };
    assert!(exit.success());
    assert_eq!(log.matches(code.as_str()).count(), 1, "{log}");
    assert!(log.contains("/login/[redacted]"), "{log}");
}

/// Issue #27: an organisation's secrets managed on its page, an
/// environment's on its own, and a repository's Secrets tab showing what
/// it receives from both; a launch gets them in GitHub's order.
#[test]
fn organisation_and_environment_secrets_on_the_page() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1280);
    site.env.create(&["acme/api", "acme/web"]);
    site.sign_in_with(&site.token.clone());
    let all = site.value("org-value-ALL-7f1c2a");
    let web = site.value("org-value-WEB-3b9d04");
    let stage = site.value("env-value-STAGING-c41e88");
    site.go("/o/acme");
    let b = &site.b;
    assert_eq!(b.title(), "Organisation secrets of acme · sealinit");
    b.type_into("#add-name", "ORG_TOKEN");
    b.type_into("#add-value", &all);
    b.submit("form[action$='/add'] button[type=submit]");
    assert_eq!(site.flash(), "Added ORG_TOKEN.");
    let b = &site.b;
    b.type_into("#add-name", "WEB_ONLY");
    b.type_into("#add-value", &web);
    b.exec(
        "document.querySelector('#add-visibility').value = 'selected'",
        json!([]),
    );
    b.type_into("#add-repositories", "acme/web");
    b.submit("form[action$='/add'] button[type=submit]");
    assert_eq!(site.flash(), "Added WEB_ONLY.");
    assert_eq!(row(&site.b, "WEB_ONLY")[1], "selected: acme/web");
    assert_eq!(row(&site.b, "ORG_TOKEN")[1], "all repositories");
    site.shot("org-secrets");
    // The repository's tab lists what it receives; an environment opens
    // from there.
    site.go("/r/acme%2Fapi");
    let b = &site.b;
    let from_org = b.text("section[aria-labelledby=from-org]");
    assert!(
        from_org.contains("ORG_TOKEN") && !from_org.contains("WEB_ONLY"),
        "{from_org}"
    );
    b.type_into("#open-env", "staging");
    b.submit("form[action$='/env'] button");
    assert_eq!(b.url(), format!("{}/r/acme%2Fapi/env/staging", site.base));
    assert_eq!(b.title(), "Environment staging of acme/api · sealinit");
    b.type_into("#add-name", "STAGE_KEY");
    b.type_into("#add-value", &stage);
    b.submit("form[action$='/add'] button[type=submit]");
    assert_eq!(site.flash(), "Added STAGE_KEY.");
    site.go("/r/acme%2Fapi");
    let envs = site.b.text("section[aria-labelledby=environments]");
    assert!(envs.contains("staging (1 secret)"), "{envs}");
    site.assert_clean();
    // A launch naming the environment gets all three levels.
    let o = site.env.run(
        &[
            "run",
            "--repo",
            "acme/api",
            "--environment",
            "staging",
            "--",
            "sh",
            "-c",
            "echo $ORG_TOKEN $STAGE_KEY ${WEB_ONLY:-none}",
        ],
        None,
    );
    assert_eq!(
        stdout(&o).trim(),
        format!("{all} {stage} none"),
        "{}",
        stderr(&o)
    );
    // Deleting from the organisation's page.
    site.go("/o/acme");
    site.b
        .submit("form[action$='/delete'] button[aria-label='Delete WEB_ONLY']");
    assert_eq!(site.flash(), "Deleted WEB_ONLY.");
    site.finish();
}

/// Issue #28, points 5, 6, 7, 9 and 14: a form's
/// URL answers GET with a redirect to its page (not 405), a result is in
/// the title and has the focus, Delete's confirmation focuses Cancel, a value typed into the page keeps LF line
/// ends (browsers send CRLF), and a roll-back button's name contains the
/// words it shows.
#[test]
fn forms_redirect_cancel_has_the_focus_values_keep_lf_and_buttons_say_their_name() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1280);
    site.env.create(&["acme/api"]);
    site.sign_in_with(&site.token.clone());
    let v = site.value("multi-line-value-1\nmulti-line-value-2\nmulti-line-value-3");
    site.go("/r/acme%2Fapi");
    let b = &site.b;
    b.type_into("#add-name", "MULTI");
    b.type_into("#add-value", &v);
    b.submit("form[action$='/add'] button[type=submit]");
    assert!(site.flash().starts_with("Added MULTI"), "{}", site.flash());
    // Point 6: the result is in the title and has the focus.
    assert!(
        site.b.title().starts_with("Added MULTI"),
        "{}",
        site.b.title()
    );
    wait_for_focus(&site.b, ".flash");
    // What a command gets for MULTI, through a shell pipeline.
    let through = |pipeline: &str| {
        let script = format!("printf %s \"$MULTI\" | {pipeline}");
        let o = site.env.run(
            &["run", "--repo", "acme/api", "--", "sh", "-c", &script],
            None,
        );
        stdout(&o)
    };
    let bytes = through("od -An -c | tr -s ' '");
    assert!(!bytes.contains("\\r"), "stored with CR: {bytes}");
    assert_eq!(through("wc -c").trim(), v.len().to_string());
    // A second version, then the roll-back button: its name holds its words.
    site.typed.push("second-value-aa11".into());
    site.go("/r/acme%2Fapi/s/MULTI");
    site.b.type_into("#update-value", "second-value-aa11");
    site.b.submit("form[action$='/update'] button[type=submit]");
    assert!(site.flash().contains("MULTI"), "{}", site.flash());
    let names = site.b.exec(
        "return Array.from(document.querySelectorAll('form[action$=\"/rollback\"] button')).map(b => [b.innerText.trim(), b.getAttribute('aria-label') || b.innerText.trim()])",
        json!([]),
    );
    for pair in names.as_array().unwrap() {
        let (text, name) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        assert!(
            name.contains(text),
            "button shows {text:?} but is named {name:?}"
        );
    }
    assert!(!names.as_array().unwrap().is_empty());
    // Delete's confirmation: Cancel has the focus, so Enter does not delete.
    site.go("/r/acme%2Fapi/s/MULTI/delete");
    wait_for_focus(&site.b, "a.cancel");
    // Every form's URL answers GET with a redirect to its page.
    for (path, to) in [
        ("/r/acme%2Fapi/add", "/r/acme%2Fapi"),
        ("/r/acme%2Fapi/import", "/r/acme%2Fapi"),
        ("/r/acme%2Fapi/egress", "/r/acme%2Fapi"),
        ("/r/acme%2Fapi/s/MULTI/update", "/r/acme%2Fapi/s/MULTI"),
        ("/r/acme%2Fapi/s/MULTI/rollback", "/r/acme%2Fapi/s/MULTI"),
        ("/repos/new", "/"),
        ("/signin", "/"),
        ("/r/acme%2Fapi/s/MULTI/restore", "/r/acme%2Fapi"),
        ("/o/acme/add", "/o/acme"),
        ("/o/acme/delete", "/o/acme"),
    ] {
        let o = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
            ])
            .arg(format!("{}{path}", site.base))
            .output()
            .unwrap();
        assert_eq!(stdout(&o), format!("303 {}{to}", site.base), "GET {path}");
    }
    site.finish();
}

/// Issue #28, points 11, 12 and 18: the page's own words for what the
/// audit trail recorded (Updated, Deleted, Bundle minted, not set, rm,
/// seal), a repository shown by its stored name whatever case the address
/// has, a secret's page marking the Secrets tab as current, a warning for
/// names that differ only in case, and "Open a repository" refusing a
/// name that is not one of the user's.
#[test]
fn page_words_stored_names_and_the_current_tab() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1280);
    site.env.create(&["acme/api"]);
    let v = site.value("words-value-91ab");
    set_secret(&site.env, "acme/api", "WORDS", v.as_bytes());
    ok(&site.env.run(
        &["seal", "--repo", "acme/api", "--out", "b", "--key-out", "k"],
        None,
    ));
    ok(&site
        .env
        .run(&["secrets", "rm", "--repo", "acme/api", "WORDS"], None));
    set_secret(&site.env, "acme/api", "OTHER", v.as_bytes());
    site.sign_in_with(&site.token.clone());
    site.go("/r/ACME%2FApi");
    let b = &site.b;
    assert_eq!(b.title(), "Secrets of acme/api · sealinit");
    assert_eq!(b.text("h1"), "acme/api");
    site.go("/r/acme%2Fapi/audit");
    let actions: Vec<String> = site
        .b
        .exec(
            "return Array.from(document.querySelectorAll('tbody tr')).map(r => r.cells[2].innerText.trim())",
            json!([]),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    for word in ["Updated", "Deleted", "Bundle minted", "Repository created"] {
        assert!(
            actions.iter().any(|a| a == word),
            "{word} not in {actions:?}"
        );
    }
    for cli in ["set", "rm", "seal", "repo-create"] {
        assert!(!actions.iter().any(|a| a == cli), "{cli} in {actions:?}");
    }
    site.go("/r/acme%2Fapi/s/OTHER");
    let current = site.b.text("nav.tabs [aria-current=page]");
    assert_eq!(current, "Secrets");

    // The header lines up with the content at a wide width, and a card's
    // first child adds no space above it (point 18).
    site.b.set_viewport(1600, 900);
    let edges = site.b.exec(
        "const left = s => document.querySelector(s).getBoundingClientRect().left;\
         return [left('.brand'), left('main h1')]",
        json!([]),
    );
    assert!(
        (edges[0].as_f64().unwrap() - edges[1].as_f64().unwrap()).abs() < 1.0,
        "header and content start at {edges}"
    );
    let gaps = site.b.exec(
        "return Array.from(document.querySelectorAll('.card')).map(c => {\
           const s = getComputedStyle(c);\
           const inner = c.getBoundingClientRect().top + parseFloat(s.paddingTop) + parseFloat(s.borderTopWidth);\
           const first = Array.from(c.children).find(e => e.getClientRects().length > 0);\
           return Math.round(first.getBoundingClientRect().top - inner); })",
        json!([]),
    );
    assert!(
        gaps.as_array().unwrap().iter().all(|g| g == 0),
        "space above a card's first child: {gaps}"
    );
    // Wide: Add secret and Import .env side by side.
    site.go("/r/acme%2Fapi");
    let tops = site.b.exec(
        "const top = s => document.querySelector(s).getBoundingClientRect().top;\
         return [top('section[aria-labelledby=add]'), top('section[aria-labelledby=import]')]",
        json!([]),
    );
    assert_eq!(tops[0], tops[1], "Add and Import are not side by side");
    site.b.set_viewport(1280, 900);

    // A name that differs from another only in case: stored, and said.
    site.go("/r/acme%2Fapi");
    let b = &site.b;
    b.type_into("#add-name", "other");
    b.type_into("#add-value", &v);
    b.submit("form[action$='/add'] button[type=submit]");
    assert!(
        site.flash().contains("Note: OTHER exists too"),
        "{}",
        site.flash()
    );

    // "Open a repository": any case opens the stored one; a typo says it
    // is not one of the user's repositories, keeping what was typed.
    site.go("/");
    let b = &site.b;
    b.type_into("#repo", "ACME/API");
    b.submit("form[action='/r'] button");
    assert_eq!(b.url(), format!("{}/r/acme%2Fapi", site.base));
    site.go("/");
    let b = &site.b;
    b.type_into("#repo", "acme/apj");
    b.submit("form[action='/r'] button");
    assert_eq!(b.title(), "Error: Repositories · sealinit");
    assert!(
        b.text(".summary")
            .contains("acme/apj is not one of your repositories"),
        "{}",
        b.text("main")
    );
    wait_for_focus(b, "#repo");
    assert_eq!(field_value(b, "#repo"), "acme/apj");
    site.finish();
}

/// Issue #28, point 8: a repository with 250 secrets shows its count,
/// pages of 100, a search (a GET form, no script), and links to Add and
/// Import at the top; the page is sent compressed, its CSRF token masked
/// afresh in every response (BREACH).
#[test]
fn a_big_repository_is_counted_searched_and_paged() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::start(1280);
    site.env.create(&["acme/big"]);
    let file: String = (1..=250).map(|i| format!("S_{i:04}=v{i}\n")).collect();
    import_env(&site.env, "acme/big", &file);
    site.sign_in_with(&site.token.clone());
    site.go("/r/acme%2Fbig");
    let b = &site.b;
    let rows = || {
        b.exec(
            "return document.querySelectorAll('table:not([aria-label]) tbody tr').length",
            json!([]),
        )
        .as_u64()
        .unwrap()
    };
    assert_eq!(b.text("h2#secrets"), "Secrets (250)");
    assert_eq!(rows(), 100);
    assert!(b.try_find("p.jump a[href='#add']").is_some());
    assert!(b.try_find("p.jump a[href='#import']").is_some());
    assert_eq!(b.text("nav.pages [aria-current=page]"), "Page 1 of 3");
    b.submit("nav.pages a[rel=next]");
    assert_eq!(rows(), 100);
    b.submit("nav.pages a[rel=next]");
    assert_eq!(rows(), 50);
    assert_eq!(b.text("nav.pages [aria-current=page]"), "Page 3 of 3");
    // Search: a GET form, so the address can be shared and Back works.
    b.type_into("#q", "s_012");
    b.submit("form.search button");
    assert_eq!(b.url(), format!("{}/r/acme%2Fbig?q=s_012", site.base));
    assert_eq!(rows(), 10);
    assert!(
        b.text("main").contains("10 of 250 match"),
        "{}",
        b.text("main")
    );
    b.type_into("#q", "nothing-like-it");
    b.submit("form.search button");
    assert!(
        b.text(".empty").contains("No secret name contains"),
        "{}",
        b.text("main")
    );

    // Compressed, with the CSRF token masked afresh in every response.
    let session = b
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "sealinit")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = |gzip: bool| {
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "-D", "-", "-b", &format!("sealinit={session}")]);
        if gzip {
            c.args([
                "-H",
                "Accept-Encoding: gzip",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
            ]);
        }
        let o = c
            .arg(format!("{}/r/acme%2Fbig", site.base))
            .output()
            .unwrap();
        stdout(&o)
    };
    let (plain, plain_too) = (get(false), get(false));
    let zipped = get(true);
    assert!(
        zipped
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{zipped}"
    );
    let wire: usize = zipped.lines().last().unwrap().parse().unwrap();
    assert!(
        wire * 8 < plain.len(),
        "{wire} bytes on the wire for {} bytes of page",
        plain.len()
    );
    assert_ne!(form_csrf(&plain), form_csrf(&plain_too));
    site.finish();
}

/// Issue #28, points 15 to 17: axe-core (WCAG 2.2 A and AA and its best
/// practices) finds nothing on any page, in any state the page has (23:
/// results, each kind of refusal, an empty and a full repository, searches,
/// a second page, deleted secrets, the sign-in link), at 360 and 1440 px,
/// light and dark; nor does any element overflow, any word of a label
/// break, or any control's border fall under 3:1.
#[test]
fn axe_finds_no_violation_in_any_state_width_or_scheme() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let axe = axe_script();
    let mut site = Site::start_with(1440, &["--login-link"]);
    let server = site.server.as_ref().unwrap();
    server.wait_for_log("sign in to the Secrets page once");
    let link = server
        .log_text()
        .lines()
        .find_map(|l| l.split(" minutes: ").nth(1))
        .unwrap()
        .to_owned();
    site.env.create(&["acme/web", "acme/empty", "acme/big"]);
    let file: String = (0..250).map(|i| format!("S_{i:03}=v\n")).collect();
    import_env(&site.env, "acme/big", &file);
    let v = site.value("axe-value-5e1f");
    for name in ["API_URL", "DATABASE_URL_FOR_THE_INTEGRATION_TESTS_AND_MORE"] {
        set_secret(&site.env, "acme/web", name, v.as_bytes());
    }
    set_secret(&site.env, "acme/web", "API_URL", b"second");
    ok(&site.env.run(
        &["secrets", "set", "--org", "acme", "ORG_TOKEN"],
        Some(v.as_bytes()),
    ));
    ok(&site.env.run(
        &[
            "secrets", "set", "--repo", "acme/web", "--env", "staging", "STAGE",
        ],
        Some(v.as_bytes()),
    ));
    set_secret(&site.env, "acme/web", "DELETED_ONE", v.as_bytes());
    ok(&site.env.run(
        &["secrets", "rm", "--repo", "acme/web", "DELETED_ONE"],
        None,
    ));
    ok(&site.env.run(
        &["seal", "--repo", "acme/web", "--out", "b", "--key-out", "k"],
        None,
    ));
    let live = site.value(&live_values().1);
    // Each "refused" state is one: its title says so.
    let refused = |site: &Site, state: &str| {
        let title = site.b.title();
        assert!(
            !state.contains("refused") || title.starts_with("Error: "),
            "{state}: {title}"
        );
    };
    let check = |site: &Site, state: &str, failures: &mut Vec<String>| {
        refused(site, state);
        site.assert_clean();
        let (wide, broken) = overflowing(&site.b);
        for e in wide {
            failures.push(format!("{state}: wider than the screen: {e}"));
        }
        for e in broken {
            failures.push(format!("{state}: a word broken: {e}"));
        }
        for e in faint_controls(&site.b) {
            failures.push(format!("{state}: a control's border under 3:1: {e}"));
        }
        for found in site.b.axe_violations(&axe) {
            failures.push(format!("{state}: {found}"));
        }
    };
    // A refused import gives the pasted text back: its values are in the
    // page, as typed, so only axe and the widths are checked there.
    let check_echoed = |site: &Site, state: &str, failures: &mut Vec<String>| {
        refused(site, state);
        let (wide, _) = overflowing(&site.b);
        failures.extend(wide.into_iter().map(|e| format!("{state}: wide: {e}")));
        for found in site.b.axe_violations(&axe) {
            failures.push(format!("{state}: {found}"));
        }
    };
    let mut failures = Vec::new();
    for (width, dark) in [(360, false), (360, true), (1440, false), (1440, true)] {
        site.b.set_viewport(width, 900);
        site.b.prefer_dark(dark);
        let at = |s: &str| format!("{s} at {width} px{}", if dark { ", dark" } else { "" });
        site.b.delete_cookies();
        site.b.goto(&link);
        check(&site, &at("sign-in link"), &mut failures);
        site.go("/");
        check(&site, &at("sign-in"), &mut failures);
        site.b.type_into("#token", "sit_wrong");
        site.b.submit("form button[type=submit]");
        check(&site, &at("sign-in refused"), &mut failures);
        site.sign_in_with(&site.token.clone());
        check(&site, &at("repositories"), &mut failures);
        site.b.type_into("#new-repo", "not a name");
        site.b.submit("form[action='/repos/new'] button");
        check(&site, &at("new repository refused"), &mut failures);
        site.go("/r/acme%2Fempty");
        check(&site, &at("empty repository"), &mut failures);
        site.go("/r/acme%2Fweb");
        check(&site, &at("secrets"), &mut failures);
        site.go("/r/acme%2Fweb?q=nothing");
        check(&site, &at("search without match"), &mut failures);
        site.go("/r/acme%2Fbig?q=S_&page=2");
        assert_eq!(site.b.text("nav.pages [aria-current=page]"), "Page 2 of 3");
        check(&site, &at("search, second page"), &mut failures);
        // A result message, and the one that offers Restore.
        set_secret(&site.env, "acme/web", "SHORT_LIVED", v.as_bytes());
        site.go("/r/acme%2Fweb/s/SHORT_LIVED/delete");
        site.b.submit("form[action$='/delete'] button.danger");
        assert!(
            site.b
                .try_find("form[action$='/SHORT_LIVED/restore']")
                .is_some()
        );
        check(&site, &at("deleted, with Restore"), &mut failures);
        site.go("/r/acme%2Fweb/s/API_URL");
        site.b.type_into("#update-value", &v);
        site.b.submit("form[action$='/update'] button[type=submit]");
        assert!(site.flash().starts_with("Updated API_URL"));
        check(&site, &at("updated"), &mut failures);
        site.go("/r/acme%2Fweb");
        site.b.type_into("#add-name", "9BAD");
        site.b.type_into("#add-value", &v);
        site.b.exec(
            "document.querySelector('#add-name').removeAttribute('pattern')",
            json!([]),
        );
        site.b.submit("form[action$='/add'] button[type=submit]");
        check(&site, &at("add refused (name)"), &mut failures);
        site.go("/r/acme%2Fweb");
        site.b.type_into("#add-name", "STRIPE_KEY");
        site.b.type_into("#add-value", &live);
        site.b.submit("form[action$='/add'] button[type=submit]");
        check(&site, &at("add refused (guard)"), &mut failures);
        site.go("/r/acme%2Fweb");
        site.b
            .type_into("#import-content", "A=1\nB=two\nnot a line\n");
        site.b.submit("form[action$='/import'] button[type=submit]");
        check(&site, &at("import refused"), &mut failures);
        site.go("/r/acme%2Fweb");
        site.b.type_into(
            "#import-content",
            &format!("A=1\nSTRIPE_KEY={live}\nOTHER_KEY={live}\n"),
        );
        site.b.submit("form[action$='/import'] button[type=submit]");
        check_echoed(&site, &at("import refused (guard)"), &mut failures);
        site.go("/r?repo=acme%2Fnope");
        check(&site, &at("open refused"), &mut failures);
        site.go("/r/acme%2Fweb/s/API_URL");
        check(&site, &at("secret"), &mut failures);
        site.b.type_into("#update-value", "");
        site.b.submit("form[action$='/update'] button[type=submit]");
        check(&site, &at("update refused (empty)"), &mut failures);
        site.go("/r/acme%2Fweb/s/API_URL/delete");
        check(&site, &at("delete confirmation"), &mut failures);
        site.go("/r/acme%2Fweb/audit");
        check(&site, &at("audit"), &mut failures);
        site.go("/o/acme");
        check(&site, &at("organisation"), &mut failures);
        site.go("/r/acme%2Fweb/env/staging");
        check(&site, &at("environment"), &mut failures);
        site.go("/no/such/page");
        check(&site, &at("not found"), &mut failures);
    }
    assert!(failures.is_empty(), "axe-core:\n{}", failures.join("\n"));
    site.finish();
}

/// A live-looking GitHub token and Stripe key (made here, so that no
/// credential-like text is in the source).
fn live_values() -> (String, String) {
    let a = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5";
    let sum = sealinit_guard::checksum(a.as_bytes());
    (
        ["gh", "p_", a, std::str::from_utf8(&sum).unwrap()].concat(),
        ["sk", "_live_", "4eC39HqLyjWDarjtT1zdp7dc"].concat(),
    )
}

/// The value of a form field.
fn field_value(b: &Browser, css: &str) -> String {
    b.exec(
        "return document.querySelector(arguments[0]).value",
        json!([css]),
    )
    .as_str()
    .unwrap()
    .to_owned()
}

/// Issue #28, points 4, 10, 11 and 12 (an empty value): a refused form
/// says so at the top of the main area (`role=alert`, "Error: " in the
/// title), focuses the first field in error and keeps what was typed (the
/// .env text, a name, the hosts; never a value field); an import error
/// names the neighbouring name; the "store it anyway" box appears only
/// after a refusal, one per refused name, naming the rule; an empty value
/// is stored only once confirmed; the page's words, not the CLI's.
#[test]
fn a_refused_form_says_why_at_the_top_keeps_what_was_typed_and_asks_per_name() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1280);
    site.env.create(&["acme/web"]);
    site.sign_in_with(&site.token.clone());
    site.go("/r/acme%2Fweb");
    let b = &site.b;
    // Nothing refused yet: no box to let a production credential through.
    assert!(b.try_find("input[name=allow_production]").is_none());
    assert!(b.try_find("input[name=allow_empty]").is_none());

    // An import with a wrong line 3.
    let text = "A=1\nREDIS_URL=redis://localhost:6379\nnot a line\nC=3";
    b.type_into("#import-content", text);
    b.submit("form[action$='/import'] button[type=submit]");
    assert!(b.title().starts_with("Error: "), "{}", b.title());
    assert!(!b.url().contains('#'), "{}", b.url());
    let summary = b.text(".summary[role=alert]");
    assert!(summary.contains("line 3, after REDIS_URL"), "{summary}");
    // It is the first thing in the main area, after the heading and tabs.
    let top = b.exec(
        "return document.querySelector('.summary').getBoundingClientRect().top",
        json!([]),
    );
    assert!(top.as_f64().unwrap() < 300.0, "the summary is at {top} px");
    wait_for_focus(b, "#import-content");
    assert_eq!(field_value(b, "#import-content"), text);
    // The summary's link leads to the field.
    assert_eq!(
        b.attr(&b.find(".summary a"), "href").as_deref(),
        Some("#import-content")
    );

    // Two live-looking credentials: both named, a box for each.
    let (github, stripe) = live_values();
    let text = format!("PORT=8080\nGH_TOKEN={github}\nSTRIPE_KEY={stripe}");
    b.retype("#import-content", &text);
    b.submit("form[action$='/import'] button[type=submit]");
    let summary = b.text(".summary");
    for words in ["GH_TOKEN", "STRIPE_KEY", "github-token", "stripe-live-key"] {
        assert!(summary.contains(words), "{words} not in {summary}");
    }
    for cli in ["--allow", "allow_production", "sealctl"] {
        assert!(!summary.contains(cli), "{cli} in {summary}");
    }
    let boxes = b.exec(
        "return Array.from(document.querySelectorAll('input[name=allow_production]')).map(i => [i.value, i.labels[0].innerText])",
        json!([]),
    );
    let boxes = boxes.as_array().unwrap();
    assert_eq!(boxes.len(), 2, "{boxes:?}");
    assert_eq!(boxes[0][0], "GH_TOKEN");
    assert!(boxes[1][1].as_str().unwrap().contains("stripe-live-key"));
    wait_for_focus(b, "#import-allow-0");
    assert_eq!(field_value(b, "#import-content"), text);
    // One ticked: still refused, for the other only.
    b.click("#import-allow-0");
    b.submit("form[action$='/import'] button[type=submit]");
    let summary = b.text(".summary");
    assert!(
        summary.contains("STRIPE_KEY") && !summary.contains("GH_TOKEN"),
        "{summary}"
    );
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('input[name=allow_production]').length",
            json!([])
        ),
        1
    );
    // Both ticked: imported.
    site.go("/r/acme%2Fweb");
    let b = &site.b;
    b.type_into("#import-content", &text);
    b.submit("form[action$='/import'] button[type=submit]");
    b.click("#import-allow-0");
    b.click("#import-allow-1");
    b.submit("form[action$='/import'] button[type=submit]");
    assert!(
        site.flash().starts_with("Imported 3 secret(s)"),
        "{}",
        site.flash()
    );
    assert_eq!(delivered(&site.env, "acme/web", "STRIPE_KEY"), stripe);
    site.typed.extend([github.clone(), stripe.clone()]);
    site.assert_clean();

    // Add: a refused name keeps what was typed but the value.
    let v = site.value("add-value-9d2e");
    let b = &site.b;
    b.exec(
        "document.querySelector('#add-name').removeAttribute('pattern')",
        json!([]),
    );
    b.type_into("#add-name", "LD_PRELOAD");
    b.type_into("#add-value", &v);
    b.exec(
        "document.querySelector('#add-delivery').value = 'proxy'",
        json!([]),
    );
    b.type_into("#add-hosts", "api.example.com");
    b.submit("form[action$='/add'] button[type=submit]");
    assert!(b.title().starts_with("Error: "), "{}", b.title());
    let summary = b.text(".summary");
    assert!(
        summary.contains("LD_PRELOAD changes how programs load"),
        "{summary}"
    );
    assert!(!summary.contains("--allow-name"), "{summary}");
    // Post/Redirect/Get: the address is the tab's, so Back and reload
    // never send the form again (point 5).
    assert_eq!(b.url(), format!("{}/r/acme%2Fweb", site.base));
    wait_for_focus(b, "#add-name");
    assert_eq!(field_value(b, "#add-name"), "LD_PRELOAD");
    assert_eq!(field_value(b, "#add-value"), "");
    assert_eq!(field_value(b, "#add-delivery"), "proxy");
    assert_eq!(field_value(b, "#add-hosts"), "api.example.com");
    site.assert_clean();

    // An empty value is stored only once confirmed.
    let b = &site.b;
    b.retype("#add-name", "EMPTY_ONE");
    b.exec(
        "document.querySelector('#add-delivery').value = 'env'",
        json!([]),
    );
    b.submit("form[action$='/add'] button[type=submit]");
    let summary = b.text(".summary");
    assert!(
        summary.contains("The value of EMPTY_ONE is empty"),
        "{summary}"
    );
    assert!(!summary.contains("allow_empty"), "{summary}");
    wait_for_focus(b, "#add-value");
    b.click("#add-empty");
    b.submit("form[action$='/add'] button[type=submit]");
    assert!(
        site.b.text("main").contains("Added EMPTY_ONE"),
        "{}",
        site.b.text("main")
    );

    // Update: a live key is refused by name, with a box for it alone.
    site.go("/r/acme%2Fweb/s/PORT");
    let b = &site.b;
    assert!(b.try_find("input[name=allow_production]").is_none());
    b.type_into("#update-value", &stripe);
    b.submit("form[action$='/update'] button[type=submit]");
    assert!(
        b.title().starts_with("Error: PORT in acme/web"),
        "{}",
        b.title()
    );
    assert_eq!(b.url(), format!("{}/r/acme%2Fweb/s/PORT", site.base));
    assert!(b.text(".summary").contains("stripe-live-key"));
    wait_for_focus(b, "#update-value");
    assert_eq!(field_value(b, "#update-value"), "");
    b.type_into("#update-value", &stripe);
    b.click("#update-allow-0");
    b.submit("form[action$='/update'] button[type=submit]");
    assert!(site.flash().starts_with("Updated PORT"), "{}", site.flash());

    // Refusals that come back as a message say it in the page's words:
    // a roll back to a version that is not there, an organisation secret
    // with a code-loading name.
    let b = &site.b;
    b.exec(
        "document.querySelector('form[action$=\"/rollback\"] input[name=to]').value = '99'",
        json!([]),
    );
    b.submit("form[action$='/rollback'] button");
    let said = site.flash();
    assert!(
        said.starts_with("Not rolled back: Version 99 of PORT cannot be restored"),
        "{said}"
    );
    assert!(!said.contains("/api/v1"), "{said}");
    site.go("/o/acme");
    let b = &site.b;
    b.exec(
        "document.querySelector('#add-name').removeAttribute('pattern')",
        json!([]),
    );
    b.type_into("#add-name", "NODE_OPTIONS");
    b.type_into("#add-value", "--require x");
    b.submit("form[action$='/add'] button[type=submit]");
    let said = site.flash();
    assert!(
        said.contains("NODE_OPTIONS changes how programs load"),
        "{said}"
    );
    assert!(!said.contains("allow_name"), "{said}");
    site.finish();
}

/// Issue #28, points 7 and 18: a deleted secret is offered back from the
/// result message and from the list of deleted secrets ("Restore": a roll
/// back to its last value); history says which version a roll back
/// restored; the Audit tab pages past its first 200 records.
#[test]
fn deleted_secrets_come_back_history_names_what_was_restored_and_the_audit_pages() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = Site::start(1280);
    site.env.create(&["acme/api"]);
    let first = site.value("restore-FIRST-61a0");
    let second = site.value("restore-SECOND-9c3b");
    for v in [&first, &second] {
        set_secret(&site.env, "acme/api", "TOKEN", v.as_bytes());
    }
    site.sign_in_with(&site.token.clone());
    site.go("/r/acme%2Fapi/s/TOKEN");
    site.b
        .submit("form[action$='/rollback'] input[value='1'] ~ button");
    assert!(site.flash().starts_with("Rolled TOKEN back to version 1"));
    assert_eq!(row(&site.b, "3 (restored from 1) (current)").len(), 5);

    // Deleted from the page: the result offers it back.
    site.go("/r/acme%2Fapi/s/TOKEN/delete");
    site.b.submit("form[action$='/delete'] button.danger");
    assert_eq!(site.flash(), "Deleted TOKEN.");
    assert!(site.b.text("#deleted").contains("Deleted secrets (1)"));
    site.b.submit("form[action$='/TOKEN/restore'] button");
    assert_eq!(
        site.flash(),
        "Restored TOKEN: version 5 has the value of version 3."
    );
    assert_eq!(
        site.b.title(),
        format!(
            "Restored TOKEN: version 5 has the value of version 3. – TOKEN in acme/api · sealinit"
        )
    );
    assert_eq!(delivered(&site.env, "acme/api", "TOKEN"), first);

    // Deleted elsewhere: listed with when and by whom, and restored.
    ok(&site
        .env
        .run(&["secrets", "rm", "--repo", "acme/api", "TOKEN"], None));
    site.go("/r/acme%2Fapi");
    let r = row(&site.b, "TOKEN");
    assert_eq!(r[1], "just now", "{r:?}");
    site.b
        .submit("section[aria-labelledby=deleted] form[action$='/TOKEN/restore'] button[aria-label='Restore TOKEN']");
    assert!(site.flash().starts_with("Restored TOKEN: version 7"));
    site.go("/r/acme%2Fapi");
    assert!(site.b.try_find("#deleted").is_none());
    site.assert_clean();

    // 230 more records: the Audit tab pages them, newest first.
    for i in 0..230 {
        set_secret(&site.env, "acme/api", &format!("K_{i}"), b"v");
    }
    site.go("/r/acme%2Fapi/audit");
    let b = &site.b;
    let count = || {
        b.exec(
            "return document.querySelectorAll('tbody tr').length",
            json!([]),
        )
        .as_u64()
        .unwrap()
    };
    assert_eq!(count(), 200);
    assert_eq!(b.text("nav.pages [aria-current=page]"), "Page 1 of 2");
    assert!(
        b.text("tbody tr").contains("K_229"),
        "{}",
        b.text("tbody tr")
    );
    b.submit("nav.pages a[rel=next]");
    let all = json_lines(
        &site
            .env
            .run(&["audit", "--repo", "acme/api", "--json"], None),
    )
    .len();
    assert!(all > 230 + 7, "{all}");
    assert_eq!(count() as usize, all - 200);
    assert!(b.text("main").contains("Repository created"));
    site.finish();
}

/// Issue #28's screenshots for docs/ (copied from `target/screenshots/`):
/// the Secrets tab at 360 px with 12 secrets (whole page) and with 500
/// (its first screen), and a refused import at 1440 px (whole page); and the figures
/// the README gives for 500 secrets (printed).
#[test]
fn screenshots_for_the_docs() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::start(360);
    site.env.create(&["acme/web", "acme/big"]);
    let twelve = [
        "API_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "STRIPE_KEY",
        "SENTRY_DSN",
        "GH_TOKEN",
        "OPENAI_API_KEY",
        "S3_BUCKET",
        "SMTP_PASSWORD",
        "FEATURE_FLAGS",
        "JWT_SECRET",
        "LOG_LEVEL",
    ];
    let file: String = twelve.iter().map(|n| format!("{n}=test-{n}\n")).collect();
    import_env(&site.env, "acme/web", &file);
    let file: String = (1..=500)
        .map(|i| format!("SERVICE_{i:03}_TOKEN=t{i}\n"))
        .collect();
    import_env(&site.env, "acme/big", &file);
    ok(&site.env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "acme/web",
            "STRIPE_KEY",
            "--delivery",
            "proxy",
            "--host",
            "api.stripe.com",
        ],
        Some(b"sk_test_docs"),
    ));
    site.sign_in_with(&site.token.clone());
    site.go("/r/acme%2Fweb");
    site.shot("docs-secrets-360-12");
    site.go("/r/acme%2Fbig");
    let b = &site.b;
    site.assert_clean();
    let path = artifact_dir("screenshots").join("docs-secrets-360-500.png");
    b.screenshot(&path);
    let figures = b.exec(
        "const n = performance.getEntriesByType('navigation')[0];\
         const all = Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]), textarea, select'));\
         return [document.documentElement.scrollHeight, n.decodedBodySize, all.findIndex(e => e.matches('p.jump a[href=\"#add\"]')) + 1, n.encodedBodySize]",
        json!([]),
    );
    eprintln!(
        "500 secrets at 360 px: page 1 of 5 is {} px tall, {} bytes of HTML, {} bytes on the wire; \"Add secret\" is tab stop {}",
        figures[0], figures[1], figures[3], figures[2]
    );
    b.set_viewport(1440, 900);
    site.go("/r/acme%2Fweb");
    let b = &site.b;
    b.type_into(
        "#import-content",
        "NEW_FLAG=on\nREDIS_URL=redis://localhost:6379\nexport = broken\nLAST=1",
    );
    b.submit("form[action$='/import'] button[type=submit]");
    assert!(b.title().starts_with("Error: "));
    // The whole page: the summary at the top, the field it links to.
    let path = artifact_dir("screenshots").join("docs-import-refused-1440.png");
    b.full_screenshot(&path);
    site.finish();
}
