//! Connections: accepting them (with a backoff when the process is out of
//! descriptors), serving each over HTTP/1.1 (TLS first if configured, the
//! handshake bounded), and ending them at SIGTERM without dropping a
//! request whose bytes have arrived: the listen backlog is accepted and
//! served, and a connection with a request waiting in its socket serves it
//! before it closes.

use std::mem::MaybeUninit;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::client::{Peer, TrustedProxies};

pub(crate) enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

pub(crate) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

pub(crate) async fn accept(l: &Bound) -> std::io::Result<(Stream, Option<std::net::IpAddr>)> {
    match l {
        Bound::Tcp(l) => {
            let (s, a) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Some(a.ip())))
        }
        Bound::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), None))
        }
    }
}

/// Accepts what the kernel has already queued (connections completed
/// before the listener closes), without waiting; how many.
pub(crate) async fn drain_backlog(
    listener: &Bound,
    conns: &mut Connections,
    tls: &Option<Arc<RwLock<TlsAcceptor>>>,
) -> usize {
    let mut n = 0;
    loop {
        let next = tokio::select! {
            biased;
            a = accept(listener) => a,
            () = std::future::ready(()) => break,
        };
        match next {
            Ok((stream, peer)) => {
                let acceptor = tls.as_ref().and_then(|t| t.read().ok().map(|a| a.clone()));
                conns.spawn(stream, peer, acceptor);
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
}

/// After a failed `accept` (out of file descriptors, most often), wait
/// 1 ms, doubling to 1 s, before the next; one warning a second at most,
/// with the count of failures since the last.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    delay: Option<Duration>,
    errors: u64,
    logged: Option<std::time::Instant>,
}

impl AcceptBackoff {
    pub(crate) async fn then<T>(&self, next: impl std::future::Future<Output = T>) -> T {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        next.await
    }

    pub(crate) fn failed(&mut self, e: &std::io::Error) {
        self.delay = Some(match self.delay {
            None => Duration::from_millis(1),
            Some(d) => (d * 2).min(Duration::from_secs(1)),
        });
        self.errors += 1;
        let now = std::time::Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(
                errors = self.errors,
                "cannot accept connections: {e}; retrying in up to 1 s"
            );
            self.errors = 0;
            self.logged = Some(now);
        }
    }

    pub(crate) fn reset(&mut self) {
        self.delay = None;
    }
}

/// The connections being served, and how to end them.
pub(crate) struct Connections {
    app: axum::Router,
    proxies: Arc<TrustedProxies>,
    header_timeout: Duration,
    handshake_timeout: Duration,
    stop: watch::Sender<bool>,
    /// Each connection holds a sender; all gone: all ended.
    live: mpsc::Sender<()>,
    ended: mpsc::Receiver<()>,
}

impl Connections {
    pub(crate) fn new(
        app: axum::Router,
        proxies: Arc<TrustedProxies>,
        header_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Self {
        let (live, ended) = mpsc::channel(1);
        Self {
            app,
            proxies,
            header_timeout,
            handshake_timeout,
            stop: watch::Sender::new(false),
            live,
            ended,
        }
    }

    /// Serves `stream` on a task of its own.
    pub(crate) fn spawn(
        &self,
        stream: Stream,
        ip: Option<std::net::IpAddr>,
        acceptor: Option<TlsAcceptor>,
    ) {
        let conn = Peer {
            ip,
            tls: acceptor.is_some(),
        };
        let proxies = self.proxies.clone();
        let svc = self.app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                let peer = proxies.resolve(conn, req.headers());
                req.extensions_mut().insert(peer);
                req
            },
        );
        let svc = TowerToHyperService::new(svc);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(64 * 1024);
        let stop = self.stop.subscribe();
        let live = self.live.clone();
        let handshake_timeout = self.handshake_timeout;
        tokio::spawn(async move {
            let _live = live;
            // A second handle on the socket, to see whether a request is
            // waiting in it when the server stops.
            let probe = match &stream {
                Stream::Tcp(s) => socket_probe(s),
                Stream::Unix(s) => socket_probe(s),
            };
            match (stream, acceptor) {
                (Stream::Tcp(s), Some(acceptor)) => {
                    // A client that never finishes its handshake is cut.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(s)).await {
                        Ok(Ok(s)) => serve(http, s, svc, stop, probe).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                        Err(_) => tracing::debug!(
                            "TLS handshake: no handshake within {handshake_timeout:?}"
                        ),
                    }
                }
                (Stream::Tcp(s), None) => serve(http, s, svc, stop, probe).await,
                (Stream::Unix(s), _) => serve(http, s, svc, stop, probe).await,
            }
        });
    }

    /// Ends every connection after the request it is serving or has
    /// waiting; true if all ended within `timeout`.
    pub(crate) async fn shutdown(self, timeout: Duration) -> bool {
        let Self {
            stop,
            live,
            mut ended,
            ..
        } = self;
        stop.send_replace(true);
        drop(live);
        tokio::time::timeout(timeout, ended.recv()).await.is_ok()
    }
}

/// A duplicate of the connection's socket (for `MSG_PEEK`), if one can be
/// made.
fn socket_probe(s: &impl std::os::fd::AsFd) -> Option<socket2::Socket> {
    s.as_fd()
        .try_clone_to_owned()
        .ok()
        .map(socket2::Socket::from)
}

/// Whether bytes wait unread in the socket (a request that arrived).
fn waiting(probe: &Option<socket2::Socket>) -> bool {
    let mut one = [MaybeUninit::<u8>::uninit(); 1];
    probe
        .as_ref()
        .is_some_and(|p| matches!(p.peek(&mut one), Ok(n) if n > 0))
}

async fn serve<I, S>(
    http: hyper::server::conn::http1::Builder,
    io: I,
    svc: S,
    mut stop: watch::Receiver<bool>,
    probe: Option<socket2::Socket>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    // Stopping. A request already in the socket is read first (hyper
    // closes an idle connection at once, and closing a socket with unread
    // bytes resets it): let the connection run until nothing waits.
    while waiting(&probe) {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
