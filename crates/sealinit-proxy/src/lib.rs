//! The egress proxy (issue #26, first part): one launch's proxy part, one
//! listening socket. A client in the sandbox asks `CONNECT host:port`; the
//! proxy terminates its TLS with a leaf of the launch's CA, reads each
//! request with hyper, and sends it on over TLS verified against the
//! webpki roots (and `--upstream-ca`) with each placeholder replaced by its
//! value, only when the destination is one of that secret's hosts.
//! Everything else a request might carry of the launch's secrets is
//! refused with 403 and a plain body naming the secret and the host:
//! a placeholder toward another host or over plain HTTP, a value (or an
//! encoding of it) anywhere in the request line or headers. The CONNECT
//! authority, the TLS server name and the Host header must agree.
//!
//! Values stay in the part's locked, decrypted buffer (wiped when the
//! proxy ends); only the outgoing header a value is put into holds a copy,
//! for as long as the request is being sent.

mod body;
pub mod rules;
pub mod tls;
mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

pub use rules::{Refusal, Rules};

type Body = BoxBody<Bytes, hyper::Error>;

/// A request body going upstream.
type UpBody = BoxBody<Bytes, body::BoxError>;

type Sender = hyper::client::conn::http1::SendRequest<UpBody>;

/// A header to send instead of the agent's: it holds values, wiped when
/// dropped.
type Substituted = (hyper::header::HeaderName, zeroize::Zeroizing<Vec<u8>>);

/// A tunnel's upstream connection, kept between its requests.
type Upstream = Arc<tokio::sync::Mutex<Option<Sender>>>;

/// The largest request body read whole (for secrets replaced in bodies).
const MAX_BODY: usize = 64 << 20;

/// How much of a request body is read and checked before the request
/// is sent: a body this small is refused before anything leaves.
const PREFETCH: usize = 64 << 10;

/// Where a request goes, for records made after it has been taken apart.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
    /// Over TLS (else placeholders may not go at all).
    tls: bool,
    method: String,
    path: String,
}

/// How the proxy reaches upstreams.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// `HOST:PORT` → address, as curl's `--resolve` (tests, private
    /// networks); others resolve through the system.
    pub resolve: HashMap<(String, u16), SocketAddr>,
    /// Extra roots (PEM certificates) trusted for upstreams.
    pub extra_roots: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
}

/// One substitution or refusal, for the audit trail: names, host, method
/// and path (no query string), never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// Unix seconds.
    pub at: u64,
    pub launch: String,
    /// `substituted` or `refused`.
    pub outcome: &'static str,
    pub secrets: Vec<String>,
    pub host: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    /// Why it was refused.
    pub reason: Option<String>,
}

/// How the proxy reaches upstreams, made once and shared by every launch
/// a process serves: the resolve table and the TLS client (its roots
/// parsed once).
pub struct Outbound {
    upstreams: Upstreams,
    connector: TlsConnector,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(upstreams: Upstreams) -> Arc<Self> {
        Arc::new(Self {
            connector: TlsConnector::from(Arc::new(tls::client_config(&upstreams.extra_roots))),
            upstreams,
        })
    }
}

/// Where a proxy's audit records go.
pub type AuditSender = tokio::sync::mpsc::UnboundedSender<Egress>;

/// One launch's proxy: its rules, CA and upstream client.
pub struct Proxy {
    rules: Rules,
    acceptor: TlsAcceptor,
    outbound: Arc<Outbound>,
    label: String,
    audit: Option<AuditSender>,
    /// Set when the launch ends: every connection task of it stops, so
    /// that the rules (and the values) are dropped and wiped at once.
    ended: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("label", &self.label)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(
        rules: Rules,
        ca: Arc<tls::Authority>,
        outbound: Arc<Outbound>,
        label: String,
    ) -> Self {
        Self {
            acceptor: TlsAcceptor::from(Arc::new(tls::server_config(ca))),
            outbound,
            rules,
            label,
            audit: None,
            ended: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Sends each substitution and refusal to `audit` (for the store's
    /// trail), besides logging it.
    pub fn with_audit(mut self, audit: AuditSender) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The launch's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `work` until it completes or the launch ends.
    async fn until_ended(&self, work: impl std::future::Future<Output = ()>) {
        let mut ended = self.ended.subscribe();
        tokio::select! {
            () = work => {}
            _ = ended.wait_for(|e| *e) => {}
        }
    }

    fn record_target(
        &self,
        t: &Target,
        outcome: &'static str,
        secrets: Vec<String>,
        reason: Option<String>,
    ) {
        if let Some(a) = &self.audit {
            let _ = a.send(Egress {
                at: sealinit_core::time::now(),
                launch: self.label.clone(),
                outcome,
                secrets,
                host: t.host.clone(),
                port: t.port,
                method: t.method.clone(),
                path: t.path.clone(),
                reason,
            });
        }
    }

    /// Serves connections accepted on `listener` until `stop` completes
    /// (or the task is dropped).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut stop => {
                    // Every connection of the launch ends with it.
                    self.ended.send_replace(true);
                    return;
                }
            };
            let (tcp, _) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                let svc = {
                    let me = me.clone();
                    service_fn(move |req| me.clone().outer(req))
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades();
                me.until_ended(async {
                    let _ = conn.await;
                })
                .await;
            });
        }
    }

    /// A request to the proxy itself: CONNECT, or plain HTTP.
    async fn outer(
        self: Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, hyper::Error> {
        if req.method() != Method::CONNECT {
            return Ok(self.plain(req).await);
        }
        let Some((host, port)) = req
            .uri()
            .authority()
            .map(|a| (a.host().to_ascii_lowercase(), a.port_u16().unwrap_or(443)))
        else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "CONNECT needs host:port".into(),
            ));
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let me = self.clone();
            me.until_ended(async move {
                match on_upgrade.await {
                    Ok(up) => tunnel::serve(self, TokioIo::new(up), host, port).await,
                    Err(e) => warn!("CONNECT upgrade: {e}"),
                }
            })
            .await
        });
        Ok(Response::new(empty()))
    }

    /// Plain HTTP through the proxy (`http://` URLs): never with a secret;
    /// else as the egress policy says.
    async fn plain(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let host = req.uri().host().unwrap_or("").to_ascii_lowercase();
        let port = req.uri().port_u16().unwrap_or(80);
        // Each request on a connection of its own: a client may ask for
        // different hosts on one connection to the proxy.
        let pool = Upstream::default();
        self.forward(req, &host, port, &pool, false).await
    }

    /// The agent's TLS, terminated; its requests, checked and sent on.
    async fn tls_tunnel<S>(self: Arc<Self>, io: S, host: String, port: u16)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let tls = match self.acceptor.accept(io).await {
            Ok(t) => t,
            Err(e) => {
                warn!(host, port, "TLS from the sandbox: {e}");
                return;
            }
        };
        let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
        let agree = match &sni {
            Some(n) => *n == host,
            None => host.parse::<std::net::IpAddr>().is_ok(),
        };
        let me = self.clone();
        // One upstream connection per tunnel, reused while it lives.
        let pool: Upstream = Arc::new(tokio::sync::Mutex::new(None));
        let svc = service_fn(move |req| {
            let (me, host, sni, pool) = (me.clone(), host.clone(), sni.clone(), pool.clone());
            async move {
                if !agree {
                    let why = format!(
                        "the TLS server name ({}) is not the CONNECT host ({host})",
                        sni.as_deref().unwrap_or("none")
                    );
                    return Ok::<_, hyper::Error>(me.refuse(
                        &req,
                        (&host, port),
                        Refusal::Mismatch(why),
                    ));
                }
                Ok(me.forward(req, &host, port, &pool, true).await)
            }
        });
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let _ = match h2 {
            true => {
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
            }
            false => {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .with_upgrades()
                    .await
            }
        };
    }

    /// What the request carries, checked: the Host header agrees, no value
    /// leaves, every placeholder goes to a host it is bound to. The
    /// headers to send instead, for those holding placeholders.
    fn check(
        &self,
        req: &Request<Incoming>,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<Vec<Substituted>, Refusal> {
        let target = req.uri().to_string();
        if let Some(name) = self.rules.leak(target.as_bytes()) {
            return Err(Refusal::Leak { name: name.into() });
        }
        if self
            .rules
            .substitute(target.as_bytes(), host, port, tls)?
            .is_some()
        {
            // Placeholders in the path or query: refused for now, as the
            // value would be logged by servers along the way.
            return Err(Refusal::Mismatch(
                "a placeholder in the request line is not replaced (put it in a header)".into(),
            ));
        }
        let mut changed = Vec::new();
        for (name, value) in req.headers() {
            if let Some(leaked) = self.rules.leak(value.as_bytes()) {
                return Err(Refusal::Leak {
                    name: leaked.into(),
                });
            }
            if let Some(v) = self.rules.header(value.as_bytes(), host, port, tls)? {
                changed.push((name.clone(), v));
            }
        }
        Ok(changed)
    }

    async fn forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        host: &str,
        port: u16,
        pool: &Upstream,
        tls: bool,
    ) -> Response<Body> {
        // HTTP/1.1 names the host in Host, HTTP/2 in :authority.
        let given = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(|h| h.to_ascii_lowercase());
        let host_ok = match given
            .as_deref()
            .map(|h| h.rsplit_once(':').map_or((h, None), |(n, p)| (n, Some(p))))
        {
            Some((h, p)) => h == host && p.is_none_or(|p| p.parse() == Ok(port)),
            None => false,
        };
        if !host_ok {
            let why = format!(
                "the Host header ({}) is not the CONNECT host ({host})",
                given.as_deref().unwrap_or("none")
            );
            return self.refuse(&req, (host, port), Refusal::Mismatch(why));
        }
        let changed = match self.check(&req, host, port, tls) {
            Ok(c) => c,
            Err(r) => return self.refuse(&req, (host, port), r),
        };
        if changed.is_empty() {
            if let Err(r) = self.rules.may_go(host, port) {
                return self.refuse(&req, (host, port), r);
            }
        }
        // A WebSocket (or other) upgrade: checked and substituted like any
        // request; after 101 the two connections are joined as they are.
        let client_upgrade = req
            .headers()
            .contains_key(hyper::header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let headers: Vec<String> = changed.iter().map(|(n, _)| n.to_string()).collect();
        let mut secrets = match changed.is_empty() {
            true => Vec::new(),
            false => self
                .rules
                .names_in(req.headers().values().map(|v| v.as_bytes())),
        };
        for (name, v) in changed {
            match HeaderValue::from_bytes(&v) {
                Ok(mut hv) => {
                    hv.set_sensitive(true);
                    req.headers_mut().insert(name, hv);
                }
                Err(_) => {
                    let why = "a value cannot go into that header".to_owned();
                    return self.refuse(&req, (host, port), Refusal::Mismatch(why));
                }
            }
        }
        let (mut parts, body) = req.into_parts();
        // Upstream speaks HTTP/1.1: an origin-form target and a Host.
        if parts.version == hyper::Version::HTTP_2 {
            let authority = given.clone().unwrap_or_else(|| host.to_owned());
            parts.version = hyper::Version::HTTP_11;
            if let Ok(v) = HeaderValue::from_str(&authority) {
                parts.headers.insert(HOST, v);
            }
        }
        if parts.uri.scheme().is_some() {
            let target = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            if let Ok(u) = target.parse() {
                parts.uri = u;
            }
        }
        let to = Target {
            host: host.to_owned(),
            port,
            tls,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        };
        let found = body::Found::default();
        let body = match tls && self.rules.replaces_in_body(host, port) {
            // A secret that asks to be replaced in bodies: the body is read
            // whole (up to MAX_BODY), and goes on with its new length.
            true => match self.whole_body(body, &mut parts, &to).await {
                Ok((b, names)) => {
                    secrets.extend(
                        names
                            .into_iter()
                            .filter(|n| !secrets.contains(n))
                            .collect::<Vec<_>>(),
                    );
                    b
                }
                Err(answer) => return answer,
            },
            // Else it streams on, checked part by part as it goes (see
            // `body`): what is found cuts the request before any of it
            // leaves; a body of up to PREFETCH bytes is checked whole
            // first.
            false => {
                let mut checked = body::Checked::new(body, self.clone(), to.clone(), found.clone());
                match checked.prefetch(PREFETCH).await {
                    Ok(()) => checked.boxed(),
                    Err(body::PrefetchError::Refused(why)) => return self.refuse_target(&to, why),
                    Err(body::PrefetchError::Read(e)) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("sealinit proxy: reading the request body: {e}\n"),
                        );
                    }
                }
            }
        };
        if !secrets.is_empty() {
            info!(
                launch = self.label,
                host,
                method = to.method,
                path = to.path,
                headers = ?headers,
                secrets = ?secrets,
                "substituted"
            );
            self.record_target(&to, "substituted", secrets, None);
        }
        let req = Request::from_parts(parts, body);
        let upgrade = client_upgrade.is_some();
        match self.send(req, (host, port, tls), pool, upgrade).await {
            Ok(mut r) => {
                if let (StatusCode::SWITCHING_PROTOCOLS, Some(client)) =
                    (r.status(), client_upgrade)
                {
                    let upstream = hyper::upgrade::on(&mut r);
                    let mut ended = self.ended.subscribe();
                    tokio::spawn(async move {
                        let join = async {
                            if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                            }
                        };
                        tokio::select! {
                            () = join => {}
                            _ = ended.wait_for(|e| *e) => {}
                        }
                    });
                }
                r.map(|b| b.boxed())
            }
            Err(_) if found.get().is_some() => {
                let why = found.get().expect("checked above");
                text(
                    StatusCode::FORBIDDEN,
                    format!("sealinit proxy: refused: {why}; the request was cut before it\n"),
                )
            }
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                format!("sealinit proxy: {host}:{port}: {e}\n"),
            ),
        }
    }

    /// Sends `req` upstream: on the tunnel's connection when it is still
    /// open (an upgrade gets one of its own), else on a new one.
    async fn send(
        &self,
        req: Request<UpBody>,
        (host, port, tls): (&str, u16, bool),
        pool: &Upstream,
        upgrade: bool,
    ) -> Result<Response<Incoming>, String> {
        let mut slot = pool.lock().await;
        let reuse = match slot.as_mut() {
            Some(s) if !upgrade => s.ready().await.is_ok(),
            _ => false,
        };
        if !reuse {
            let fresh = self.open(host, port, tls).await?;
            if upgrade {
                let mut fresh = fresh;
                return fresh.send_request(req).await.map_err(|e| e.to_string());
            }
            *slot = Some(fresh);
        }
        let sender = slot.as_mut().expect("set above");
        sender.send_request(req).await.map_err(|e| e.to_string())
    }

    /// A new upstream connection: TCP (with `--proxy-resolve`), TLS
    /// verified (unless `tls` is false: plain HTTP), HTTP/1.1.
    async fn open(&self, host: &str, port: u16, tls: bool) -> Result<Sender, String> {
        let tcp = self.connect(host, port).await?;
        if !tls {
            return handshake(tcp).await;
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = self
            .outbound
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        handshake(tls).await
    }

    /// A TCP connection to `host:port` (with `--proxy-resolve`).
    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let addr = match self
            .outbound
            .upstreams
            .resolve
            .get(&(host.to_owned(), port))
        {
            Some(a) => *a,
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve: {e}"))?
                .next()
                .ok_or("cannot resolve")?,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// A request body read whole, checked, with the placeholders of the
    /// secrets that ask for it replaced (`parts` gets its new length): the
    /// body to send and the names replaced; or the answer to the agent.
    async fn whole_body(
        &self,
        body: Incoming,
        parts: &mut hyper::http::request::Parts,
        to: &Target,
    ) -> Result<(UpBody, Vec<String>), Response<Body>> {
        let read = http_body_util::Limited::new(body, MAX_BODY).collect().await;
        let Ok(read) = read else {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "sealinit proxy: a request body to {} is read whole to put values in it, up to {MAX_BODY} bytes\n",
                    to.host
                ),
            ));
        };
        let read = read.to_bytes();
        let (new, names) = self
            .rules
            .substitute_body(&read, &to.host, to.port)
            .map_err(|why| self.refuse_target(to, why))?;
        // A body with values in it: wiped when hyper is done with it.
        let out = match new {
            Some(v) => Bytes::from_owner(v),
            None => read,
        };
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        if !out.is_empty() || parts.headers.contains_key(hyper::header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        }
        let body = Full::new(out).map_err(|never| match never {}).boxed();
        Ok((body, names))
    }

    fn refuse<B>(
        &self,
        req: &Request<B>,
        (host, port): (&str, u16),
        why: Refusal,
    ) -> Response<Body> {
        self.refuse_target(&target(req, host, port), why)
    }

    fn refuse_target(&self, to: &Target, why: Refusal) -> Response<Body> {
        self.record_target(
            to,
            "refused",
            why.secret().into_iter().collect(),
            Some(why.to_string()),
        );
        warn!(
            launch = self.label,
            host = to.host,
            method = to.method,
            path = to.path,
            "refused: {why}"
        );
        text(
            StatusCode::FORBIDDEN,
            format!("sealinit proxy: refused: {why}; nothing was sent\n"),
        )
    }
}

/// HTTP/1.1 on a new upstream connection.
async fn handshake<S>(io: S) -> Result<Sender, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

fn target<B>(req: &Request<B>, host: &str, port: u16) -> Target {
    Target {
        host: host.to_owned(),
        port,
        tls: true,
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
