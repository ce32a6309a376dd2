//! A small W3C WebDriver client for the page tests: Debian's `chromedriver`
//! (started here, on a free loopback port, stopped on drop) driving Debian's
//! `chromium`, headless, with a throwaway profile. Nothing is downloaded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys, as WebDriver spells them.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// A running chromedriver.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` and waits until it says it listens.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("started successfully") => break,
                Some(Ok(line)) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                _ => panic!("chromedriver exited before it listened: {seen}"),
            }
        }
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new headless Chromium, `width` × `height` CSS pixels.
    pub fn browser(&self, profile: &Path, width: u32, height: u32) -> Browser {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-extensions",
                    "--password-store=basic", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "autofill.profile_enabled": false,
                },
            },
        }}});
        let v = call(
            &agent,
            "POST",
            &format!("{}/session", self.base),
            Some(caps),
        );
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        let b = Browser {
            agent,
            session: format!("{}/session/{id}", self.base),
        };
        b.set_viewport(width, height);
        b
    }
}

fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Value {
    let r = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, b) => agent.post(url).send_json(b.unwrap_or(json!({}))),
    };
    let mut r = r.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = r.status().as_u16();
    let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    assert!(
        status == 200,
        "WebDriver {method} {url}: {status}: {}",
        v["value"]["message"]
    );
    v["value"].clone()
}

/// A browser session.
#[derive(Debug)]
pub struct Browser {
    agent: ureq::Agent,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.session).call();
    }
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            &self.agent,
            method,
            &format!("{}{path}", self.session),
            body,
        )
    }

    /// Makes the viewport (not the window) `width` × `height`.
    pub fn set_viewport(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
        let inner = self.exec("return [window.innerWidth, window.innerHeight]", json!([]));
        let (iw, ih) = (
            inner[0].as_u64().unwrap_or(0),
            inner[1].as_u64().unwrap_or(0),
        );
        let (w, h) = (
            width + (width as u64).saturating_sub(iw) as u32,
            height + (height as u64).saturating_sub(ih) as u32,
        );
        if (w, h) != (width, height) {
            self.cmd(
                "POST",
                "/window/rect",
                Some(json!({"width": w, "height": h})),
            );
        }
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The current document as the browser holds it.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn try_find(&self, css: &str) -> Option<Element> {
        let url = format!("{}/element", self.session);
        let mut r = self
            .agent
            .post(&url)
            .send_json(json!({"using": "css selector", "value": css}))
            .unwrap();
        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        v["value"][ELEMENT].as_str().map(|s| Element(s.to_owned()))
    }

    /// The element `css` selects; panics with the page's text if none.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css).unwrap_or_else(|| {
            panic!(
                "no element {css:?} on {} ({}): {}",
                self.url(),
                self.title(),
                self.text("body")
            )
        })
    }

    /// The text of the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        match self.try_find(css) {
            Some(e) => self
                .cmd("GET", &format!("/element/{}/text", e.0), None)
                .as_str()
                .unwrap_or("")
                .to_owned(),
            None => String::new(),
        }
    }

    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/element/{}/attribute/{name}", e.0), None)
            .as_str()
            .map(str::to_owned)
    }

    /// Types `text` into the element (focusing it first).
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        );
    }

    /// Clears a field, then types `text` into it.
    pub fn retype(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{}/clear", e.0), None);
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.click_el(&e);
    }

    pub fn click_el(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// Runs `action`, which loads a new page (a link, a form, a key that
    /// submits), and waits (at most 20 s) until the new page has loaded:
    /// the old document is marked, and gone once the new one is there.
    pub fn navigating(&self, action: impl FnOnce()) {
        self.exec("document.documentElement.dataset.stale = '1'", json!([]));
        action();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let v = self.exec(
                "return document.readyState === 'complete' && document.documentElement.dataset.stale === undefined",
                json!([]),
            );
            if v == Value::Bool(true) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no new page 20 s after the action, on {}",
                self.url()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Clicks what `css` selects and waits for the page it loads.
    pub fn submit(&self, css: &str) {
        let e = self.find(css);
        self.navigating(|| self.click_el(&e));
    }

    /// Presses `keys` on whatever has the focus, as a keyboard would (each
    /// key down, then up).
    pub fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                let k = c.to_string();
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
    }

    /// Runs a script in the page (WebDriver's, not the page's: the page's
    /// Content-Security-Policy allows none of its own).
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs a script that calls its last argument with its result.
    pub fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// What axe-core (the script at `axe`, injected through WebDriver: the
    /// page's Content-Security-Policy allows no script of its own) finds
    /// against WCAG 2.2 A and AA and its best practices on the current
    /// page: one line per violation, with the elements it concerns.
    pub fn axe_violations(&self, axe: &str) -> Vec<String> {
        self.exec(&format!("{axe}\n;return true"), json!([]));
        let v = self.exec_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})\
               .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' at ' + v.nodes.slice(0, 4).map(n => n.target.join(' ') + ' (' + (n.failureSummary || '').replace(/\\s+/g, ' ').slice(0, 200) + ')').join('; '))))\
               .catch(e => done(['axe failed: ' + e]))",
            json!([]),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_else(|| vec![format!("axe returned {v}")])
    }

    /// The browser's cookies for the current page, HttpOnly ones included.
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets every cookie of the current page's site (signs out).
    pub fn delete_cookies(&self) {
        self.cmd("DELETE", "/cookie", None);
    }

    /// A Chrome DevTools command, through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light).
    pub fn prefer_dark(&self, dark: bool) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" }}]}),
        );
    }

    /// A PNG of what the viewport shows.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// A PNG of the whole page, however long (Chromium's DevTools command
    /// through chromedriver).
    pub fn full_screenshot(&self, path: &Path) {
        let (w, h) = {
            let v = self.exec(
                "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]",
                json!([]),
            );
            (v[0].as_u64().unwrap_or(800), v[1].as_u64().unwrap_or(600))
        };
        let v = self.cdp(
            "Page.captureScreenshot",
            json!({
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap_or(""))
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

/// The CSRF token of the first form of a page's HTML.
pub fn form_csrf(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field in the page"))
        .to_owned()
}

/// `target/<dir>`: where tests leave artifacts (screenshots) for CI.
pub fn artifact_dir(dir: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>");
    target.join(dir)
}
