//! The secrets service behind `sealctl serve`: API v1 over HTTP/1.1 (TLS
//! with rustls, reloaded on SIGHUP), on a TCP address or a Unix socket,
//! with scoped tokens, on the store (SQLite, or PostgreSQL for several
//! instances: the service keeps no state of its own but a rate limiter).
//!
//! - Handlers are thin ([`api`]); what they do is written once in
//!   [`service`]; the store validates, guards and audits.
//! - Request logs carry method, path, status, latency and the token id:
//!   never the Authorization header, a body or a value.
//! - SIGTERM or SIGINT: stop accepting, finish in-flight requests (at most
//!   `shutdown_timeout`), return: a write is committed and acknowledged,
//!   or not acknowledged.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod client;
mod conn;
pub mod error;
pub mod github;
mod idempotency;
pub mod input;
pub mod openapi;
pub mod page;
pub mod pool;
pub mod scope;
pub mod service;
pub mod session;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse as _;
use sealinit_store::Store;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower_http::trace::TraceLayer;

pub use scope::Scope;

/// Where to listen.
#[derive(Debug, Clone)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `127.0.0.1:8700`, `[::1]:8700` or `unix:/path`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse().map(Self::Tcp).map_err(|_| {
            format!(
                "--listen {text:?}: use ADDRESS:PORT (127.0.0.1:8700, [::1]:8700) or unix:/path"
            )
        })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// PEM certificate chain and key; reloaded on SIGHUP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure_no_tls: bool,
    pub log_json: bool,
    pub log_level: tracing::Level,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Proxies whose `Forwarded` / `X-Forwarded-*` headers are believed.
    pub trusted_proxies: client::TrustedProxies,
    /// The longest lifetime a mint may ask for.
    pub max_bundle_ttl: Duration,
    /// Reads the master keys again (SIGHUP, or a key found missing).
    pub keyring_reload: Option<pool::KeyringReload>,
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// Print a one-time sign-in link for the page (admin, 15 minutes).
    pub login_link: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Listen::Tcp(([127, 0, 0, 1], 8700).into()),
            tls: None,
            insecure_no_tls: false,
            log_json: false,
            log_level: tracing::Level::INFO,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            trusted_proxies: client::TrustedProxies::default(),
            max_bundle_ttl: Duration::from_secs(3600),
            keyring_reload: None,
            // The largest valid payload (1 MiB of values) once JSON-escaped
            // or base64-encoded, and a little more.
            body_limit: 3 * 1024 * 1024,
            login_link: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// Reads the certificate chain and key into a TLS acceptor.
fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ServerError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{} holds no PEM private key", key.display())))?;
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServerError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The service's logging (human or JSON lines on stderr). Call it before
/// opening the store, so that the store's warnings reach the log in its
/// format.
pub fn init_logging(json: bool, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    let _ = match json {
        true => tracing::subscriber::set_global_default(builder.json().finish()),
        false => tracing::subscriber::set_global_default(builder.with_ansi(false).finish()),
    };
}

/// How long a TLS handshake may take at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until SIGTERM or SIGINT. `stores`: open stores, at least two:
/// one commits the audit records of mints, the others serve requests (one
/// request against the database at a time each).
pub fn run(config: Config, stores: Vec<Store>) -> Result<(), ServerError> {
    if stores.len() < 2 {
        return Err(ServerError::Usage(
            "the service needs at least two store connections".into(),
        ));
    }
    if let (Listen::Tcp(addr), None, false) = (&config.listen, &config.tls, config.insecure_no_tls)
    {
        if !addr.ip().is_loopback() {
            return Err(ServerError::Usage(format!(
                "refusing to serve plain HTTP on {addr}, which is not a loopback address: pass --tls-cert and --tls-key, or --insecure-no-tls behind a TLS proxy"
            )));
        }
    }
    init_logging(config.log_json, config.log_level);
    // The sign-in forms' key, the same on every instance of the store
    // (read before the runtime: the store's client is blocking).
    let mut stores = stores;
    let signin_key = stores[0]
        .signin_csrf_key()
        .map_err(|e| ServerError::Usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting the runtime"))?;
    runtime.block_on(serve(config, stores, signin_key))
}

async fn serve(
    config: Config,
    stores: Vec<Store>,
    signin_key: zeroize::Zeroizing<[u8; 32]>,
) -> Result<(), ServerError> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(Arc::new(RwLock::new(load_tls(cert, key)?))),
        None => None,
    };
    let mut stores = stores;
    let writer = stores
        .pop()
        .ok_or_else(|| ServerError::Usage("no store".into()))?;
    let mut state = state::AppState::new(
        pool::StorePool::new(stores, config.keyring_reload.clone()),
        audit::AuditWriter::start(writer),
        signin_key,
    );
    state.max_bundle_ttl = config.max_bundle_ttl;
    let state_pool = state.pool.clone();
    let login = state.login.clone();
    let limit = config.body_limit;
    let app = api::router(state.clone())
        .merge(github::router(state.clone()))
        .merge(page::router(state))
        .fallback(fallback)
        .layer(axum::middleware::from_fn(page::security_headers))
        .layer(DefaultBodyLimit::max(limit))
        // A declared length over the limit is refused before the body is
        // read (the extractor would refuse it only once `limit` bytes came).
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let declared = req
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                match declared {
                    Some(n) if n > limit => error::ApiError::too_large().into_response(),
                    _ => next.run(req).await,
                }
            },
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    // The one-time sign-in link's code stays out of the log.
                    let path = req.uri().path();
                    let path = match path.starts_with("/login/") {
                        true => "/login/[redacted]",
                        false => path,
                    };
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %path,
                        token = tracing::field::Empty,
                    )
                })
                .on_request(|_: &axum::http::Request<_>, _: &tracing::Span| {
                    tracing::debug!("request started");
                })
                .on_response(
                    |res: &axum::http::Response<_>, latency: Duration, _: &tracing::Span| {
                        tracing::info!(
                            status = res.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            "response"
                        );
                    },
                )
                .on_failure(()),
        );
    let listener = match &config.listen {
        Listen::Tcp(addr) => conn::Bound::Tcp(
            TcpListener::bind(addr)
                .await
                .map_err(io_err(format!("cannot listen on {addr}")))?,
        ),
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path)
                .map_err(io_err(format!("cannot listen on {}", path.display())))?;
            conn::Bound::Unix(l, path.clone())
        }
    };
    let shown = match &listener {
        conn::Bound::Tcp(l) => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!(
                "{scheme}://{}",
                l.local_addr().map_err(io_err("local address"))?
            )
        }
        conn::Bound::Unix(_, p) => format!("unix:{}", p.display()),
    };
    // Readiness for scripts and tests: a JSON line of the log, or a plain
    // line of its own.
    tracing::info!(address = %shown, "listening on {shown}");
    if !config.log_json {
        eprintln!("sealctl: listening on {shown}");
    }
    if config.login_link {
        match &listener {
            // Printed once, never through the log's filters and sinks.
            conn::Bound::Tcp(_) => {
                let text = format!(
                    "sign in to the Secrets page once, as admin, within {} minutes: {shown}/login/{}",
                    page::LINK_LIFETIME.as_secs() / 60,
                    login.issue()
                );
                match config.log_json {
                    true => eprintln!(
                        "{}",
                        serde_json::json!({"level": "INFO", "fields": {"message": text}})
                    ),
                    false => eprintln!("sealctl: {text}"),
                }
            }
            conn::Bound::Unix(..) => tracing::warn!("--login-link: no link for a Unix socket"),
        }
    }

    let mut backoff = conn::AcceptBackoff::default();
    let mut conns = conn::Connections::new(
        app,
        Arc::new(config.trusted_proxies.clone()),
        config.request_timeout,
        config.request_timeout.min(HANDSHAKE_TIMEOUT),
    );
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
    loop {
        let accepted = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                state_pool.reload_keyring();
                tracing::info!("SIGHUP: the keyring is read again before each store's next request");
                if let (Some(tls), Some((cert, key))) = (&tls, &config.tls) {
                    match load_tls(cert, key) {
                        Ok(a) => {
                            if let Ok(mut slot) = tls.write() {
                                *slot = a;
                            }
                            tracing::info!("TLS certificate reloaded");
                        }
                        Err(e) => tracing::error!("SIGHUP: keeping the old certificate: {e}"),
                    }
                }
                continue;
            }
            a = backoff.then(conn::accept(&listener)) => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff.reset();
                x
            }
            Err(e) => {
                backoff.failed(&e);
                continue;
            }
        };
        let acceptor = tls.as_ref().and_then(|t| t.read().ok().map(|a| a.clone()));
        conns.spawn(stream, peer, acceptor);
    }
    // Connections the kernel completed before the signal are served too.
    let late = conn::drain_backlog(&listener, &mut conns, &tls).await;
    drop(listener);
    tracing::info!(
        late,
        "shutting down: no new connections; finishing requests in flight"
    );
    if !conns.shutdown(config.shutdown_timeout).await {
        tracing::warn!(
            "requests still in flight after {:?}; exiting",
            config.shutdown_timeout
        );
    }
    if let Listen::Unix(path) = &config.listen {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// An unknown path: the API's error shape under /api, the page's elsewhere.
async fn fallback(uri: axum::http::Uri) -> axum::response::Response {
    if uri.path().starts_with("/api/v3/") {
        return github::not_found();
    }
    match uri.path().starts_with("/api/") {
        true => {
            error::ApiError::not_found("no such endpoint; see /api/v1/openapi.json").into_response()
        }
        false => page::not_found(),
    }
}
