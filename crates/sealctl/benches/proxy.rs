//! The egress proxy's figures (issue #26), every row in one run against the
//! same HTTPS upstream on loopback (an in-process hyper server): direct
//! TLS, through `sealctl proxy` (substitution and the leak check on),
//! through mitmproxy with an addon doing the same header substitution, and
//! through tinyproxy (a CONNECT-only tunnel, no inspection: the floor).
//! The client is the same for every row: 64 keep-alive connections, each
//! sending GETs back to back for a few seconds. Then the host's proxy
//! (`sealctl proxy --control`) with 200 launches attached: its memory per
//! idle launch.
//!
//! `bash .ci/bench-tools.sh && cargo bench -p sealctl --bench proxy`
//! (needs openssl; a row whose peer is missing is skipped and said so).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use sealinit_testkit::*;

const CLIENTS: usize = 64;
const SECONDS: u64 = 4;
const HOST: &str = "api.bench.test";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn certs(pem: &Path) -> Vec<CertificateDer<'static>> {
    let bytes = std::fs::read(pem).unwrap();
    rustls_pemfile::certs(&mut bytes.as_slice())
        .map(|c| c.unwrap())
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The upstream: HTTPS, answers every request with 2 bytes after reading
/// its body.
async fn upstream(dir: &Path) -> SocketAddr {
    let o = Command::new("sh")
        .args(["-c", &format!(
            "set -e
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout up-ca.key -out up-ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout up.key -out up.csr -subj /CN={HOST} 2>/dev/null
             printf 'subjectAltName=DNS:{HOST}\\n' > up.ext
             openssl x509 -req -in up.csr -CA up-ca.pem -CAkey up-ca.key -CAcreateserial -out up.pem -days 2 -extfile up.ext 2>/dev/null"
        )])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    let key = std::fs::read(dir.join("up.key")).unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key.as_slice())
        .unwrap()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(&dir.join("up.pem")), key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// One client connection: through `proxy` (CONNECT) or straight to the
/// upstream, TLS trusting `roots`.
async fn connect(
    upstream: SocketAddr,
    proxy: Option<(SocketAddr, &str)>,
    roots: &Arc<ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = match proxy {
        None => TcpStream::connect(upstream).await.unwrap(),
        Some((p, name)) => {
            let mut tcp = TcpStream::connect(p).await.unwrap();
            let target = format!("{name}:{}", upstream.port());
            tcp.write_all(
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tcp.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            tcp
        }
    };
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(roots.clone())
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// One client alone, requests back to back: latency without queueing.
    alone_p50_us: f64,
    alone_p99_us: f64,
    upload_mb_s: f64,
}

/// `proxy`: its address, and the name it is asked to CONNECT to (tinyproxy
/// resolves it itself: it gets the address).
async fn measure(
    upstream: SocketAddr,
    proxy: Option<(SocketAddr, &'static str)>,
    roots: Arc<ClientConfig>,
    auth: &str,
) -> Figures {
    let port = upstream.port();
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let roots = roots.clone();
        let auth = auth.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut s = connect(upstream, proxy, &roots).await;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let req = Request::get("/v1/charges")
                    .header("host", format!("{HOST}:{port}"))
                    .header("authorization", format!("Bearer {auth}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let t = Instant::now();
                s.ready().await.unwrap();
                let r = s.send_request(req).await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.into_body().collect().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e6;
    // One client alone, for 2 s.
    let mut s = connect(upstream, proxy, &roots).await;
    let mut alone = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let req = Request::get("/v1/charges")
            .header("host", format!("{HOST}:{port}"))
            .header("authorization", format!("Bearer {auth}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let t = Instant::now();
        s.ready().await.unwrap();
        let r = s.send_request(req).await.unwrap();
        let _ = r.into_body().collect().await.unwrap();
        alone.push(t.elapsed());
    }
    alone.sort();
    let alone_pct = |p: f64| {
        alone[((alone.len() as f64 * p) as usize).min(alone.len() - 1)].as_secs_f64() * 1e6
    };
    // 1 MiB uploads, one connection, back to back.
    let mut s = connect(upstream, proxy, &roots).await;
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(2) {
        let req = Request::post("/upload")
            .header("host", format!("{HOST}:{port}"))
            .body(Full::new(body.clone()))
            .unwrap();
        s.ready().await.unwrap();
        let r = s.send_request(req).await.unwrap();
        let _ = r.into_body().collect().await.unwrap();
        n += 1;
    }
    Figures {
        rps: all.len() as f64 / SECONDS as f64,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        alone_p50_us: alone_pct(0.5),
        alone_p99_us: alone_pct(0.99),
        upload_mb_s: n as f64 / t.elapsed().as_secs_f64(),
    }
}

fn client_config(pems: &[&Path]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for p in pems {
        for c in certs(p) {
            roots.add(c).unwrap();
        }
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// mitmproxy's `mitmdump`, from .ci/bench-tools.sh's venv or the PATH.
fn mitmdump() -> Option<std::path::PathBuf> {
    let venv = workspace_root().join("target/bench-tools/bin/mitmdump");
    if venv.exists() {
        return Some(venv);
    }
    let o = Command::new("sh")
        .args(["-c", "command -v mitmdump"])
        .output()
        .ok()?;
    o.status.success().then(|| stdout(&o).trim().into())
}

/// The addon mitmproxy runs: the same header substitution, placeholder to
/// value in Authorization.
const MITM_ADDON: &str = r#"
import os
PH, VAL = os.environ["PH"], os.environ["VAL"]
def request(flow):
    a = flow.request.headers.get("authorization")
    if a and PH in a:
        flow.request.headers["authorization"] = a.replace(PH, VAL)
"#;

/// `sealctl ARGS --proxy-upstream-ca up-ca.pem --proxy-resolve RESOLVE`,
/// read up to its line starting with `ready`: the process and the rest of
/// that line.
fn start_proxy(env: &StoreDir, args: &[&str], resolve: &str, ready: &str) -> (Kill, String) {
    let mut all = args.to_vec();
    all.extend([
        "--proxy-upstream-ca",
        "up-ca.pem",
        "--proxy-resolve",
        resolve,
    ]);
    let mut p = Kill(
        env.cmd(&all)
            .env("SEALCTL_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(p.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "{args:?} exited");
        if let Some(rest) = line.strip_prefix(ready) {
            let rest = rest.trim().to_owned();
            std::thread::spawn(move || for _ in err.lines() {});
            return (p, rest);
        }
    }
}

/// Waits until something accepts on `addr`.
fn accepting(addr: &str) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{addr} never accepted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host's proxy with `n` launches of the part `p`/`pk` attached, each
/// on a listener of its own, each used once (a CONNECT, TLS, one request)
/// then left idle: its resident memory before and after, in KiB.
fn host_memory(env: &StoreDir, up: SocketAddr, placeholder: &str, n: usize) -> (u64, u64) {
    let control = env.path("host.sock");
    let resolve = format!("{HOST}:{}:127.0.0.1", up.port());
    let (host, _) = start_proxy(
        env,
        &["proxy", "--control", control.to_str().unwrap()],
        &resolve,
        "sealctl proxy: taking launches",
    );
    let before = rss_kib(host.0.id());
    let key = std::fs::read(env.path("pk")).unwrap();
    let mut k = sealinit_core::secret::SecretKey::zeroed().unwrap();
    k.expose_mut().copy_from_slice(&key);
    let part = std::fs::read(env.path("p")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut held = Vec::new();
    for i in 0..n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let a = sealctl::proxy::host::attach(&control, &l, &k, &part).unwrap();
        drop(l);
        let ca = env.path(&format!("ca-{i}.pem"));
        std::fs::write(&ca, &a.ca_pem).unwrap();
        let roots = client_config(&[&ca]);
        rt.block_on(async {
            let mut s = connect(up, Some((addr, HOST)), &roots).await;
            let req = Request::get("/v1/charges")
                .header("host", format!("{HOST}:{}", up.port()))
                .header("authorization", format!("Bearer {placeholder}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = s.send_request(req).await.unwrap();
            assert!(r.status().is_success());
        });
        held.push(a);
    }
    // The clients have gone; the launches stay, idle.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(host.0.id());
    drop(held);
    (before, after)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = StoreDir::new();
    env.create(&["bench/api"]);
    let up = rt.block_on(upstream(env.dir.path()));
    let secret = "sk_test_bench0123456789abcdefghijklmn";
    ok(&env.run(
        &[
            "secrets",
            "set",
            "--repo",
            "bench/api",
            "KEY",
            "--delivery",
            "proxy",
            "--host",
            &format!("{HOST}:{}", up.port()),
        ],
        Some(secret.as_bytes()),
    ));
    ok(&env.run(
        &["secrets", "set", "--repo", "bench/api", "APP"],
        Some(b"app-env-value-0123456789"),
    ));
    ok(&env.run(
        &[
            "seal",
            "--repo",
            "bench/api",
            "--out",
            "b",
            "--key-out",
            "k",
            "--proxy-out",
            "p",
            "--proxy-key-out",
            "pk",
        ],
        None,
    ));
    let o = Command::new(workspace_bin("sealinit"))
        .args([
            "--bundle",
            env.path("b").to_str().unwrap(),
            "--key-file",
            env.path("k").to_str().unwrap(),
            "printenv",
            "KEY",
        ])
        .output()
        .unwrap();
    let placeholder = stdout(&o).trim().to_owned();
    let resolve = format!("{HOST}:{}:127.0.0.1", up.port());
    let (proxy, rest) = start_proxy(
        &env,
        &[
            "proxy",
            "--bundle",
            "p",
            "--key-file",
            "pk",
            "--listen",
            "127.0.0.1:0",
            "--ca-out",
            "launch-ca.pem",
        ],
        &resolve,
        "sealctl proxy: listening on ",
    );
    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let idle_kib = rss_kib(proxy.0.id());

    let up_pem = env.path("up-ca.pem");
    let direct_roots = client_config(&[&up_pem]);
    let proxy_roots = client_config(&[&env.path("launch-ca.pem")]);
    let mut rows = vec![(
        "direct TLS",
        rt.block_on(measure(up, None, direct_roots.clone(), secret)),
    )];
    rows.push((
        "sealctl proxy (substitution, leak check)",
        rt.block_on(measure(up, Some((addr, HOST)), proxy_roots, &placeholder)),
    ));
    match mitmdump() {
        Some(bin) => {
            let confdir = env.path("mitm");
            std::fs::create_dir_all(&confdir).unwrap();
            std::fs::write(env.path("addon.py"), MITM_ADDON).unwrap();
            let _m = Kill(
                Command::new(&bin)
                    .args(["-q", "--listen-host", "127.0.0.1", "--listen-port", "18889"])
                    .args(["-s", env.path("addon.py").to_str().unwrap()])
                    .args(["--set", &format!("confdir={}", confdir.display())])
                    .args([
                        "--set",
                        &format!("ssl_verify_upstream_trusted_ca={}", up_pem.display()),
                    ])
                    .env("PH", &placeholder)
                    .env("VAL", secret)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            accepting("127.0.0.1:18889");
            let mitm_roots = client_config(&[&confdir.join("mitmproxy-ca-cert.pem")]);
            rows.push((
                "mitmproxy 11 (addon: the same header substitution)",
                rt.block_on(measure(
                    up,
                    Some(("127.0.0.1:18889".parse().unwrap(), "127.0.0.1")),
                    mitm_roots,
                    &placeholder,
                )),
            ));
        }
        None => eprintln!("mitmproxy is not installed (.ci/bench-tools.sh): its row is skipped"),
    }
    let tiny = Command::new("sh")
        .args(["-c", "command -v tinyproxy"])
        .output()
        .unwrap();
    if tiny.status.success() {
        let conf = env.path("tinyproxy.conf");
        std::fs::write(
            &conf,
            "Port 18888\nListen 127.0.0.1\nTimeout 600\nMaxClients 200\nLogLevel Critical\n",
        )
        .unwrap();
        let _t = Kill(
            Command::new(stdout(&tiny).trim())
                .args(["-d", "-c", conf.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        accepting("127.0.0.1:18888");
        rows.push((
            "tinyproxy (CONNECT only, no inspection)",
            rt.block_on(measure(
                up,
                Some(("127.0.0.1:18888".parse().unwrap(), "127.0.0.1")),
                direct_roots,
                secret,
            )),
        ));
    } else {
        eprintln!("tinyproxy is not installed: its row is skipped");
    }
    drop(proxy);
    let d = &rows[0].1;
    let direct = (
        d.rps,
        d.p50_us,
        d.upload_mb_s,
        d.alone_p50_us,
        d.alone_p99_us,
    );
    println!(
        "| path | requests/s ({CLIENTS} keep-alive clients) | ratio to direct | p50 µs | added p50 µs | p99 µs | one client: added p50 µs | one client: added p99 µs | 1 MiB uploads/s (one connection) | ratio to direct |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} |",
            f.rps,
            f.rps / direct.0,
            f.p50_us,
            f.p50_us - direct.1,
            f.p99_us,
            f.alone_p50_us - direct.3,
            f.alone_p99_us - direct.4,
            f.upload_mb_s,
            f.upload_mb_s / direct.2
        );
    }
    println!(
        "\nDirect TLS, one client alone: p50 {:.0} µs, p99 {:.0} µs.",
        direct.3, direct.4
    );
    println!("\nIdle `sealctl proxy` for one launch: {idle_kib} KiB resident.");
    const LAUNCHES: usize = 200;
    let (before, after) = host_memory(&env, up, &placeholder, LAUNCHES);
    println!(
        "Host proxy (`sealctl proxy --control`): {before} KiB resident with no launch, {after} KiB with {LAUNCHES} idle launches (each used once): {} KiB per launch.",
        (after.saturating_sub(before)) / LAUNCHES as u64
    );
}
