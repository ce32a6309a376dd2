//! A CONNECT tunnel, by what the client sends first: TLS (terminated, its
//! requests checked and substituted), plain HTTP (checked, never with a
//! secret), or anything else (a database, SSH, a custom protocol): a byte
//! stream, let through only where the egress policy allows, its outgoing
//! bytes checked for the launch's values as they pass.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::warn;

use crate::body::Window;
use crate::{Proxy, Target, Upstream};

/// How long a client has to speak first before the tunnel is taken for a
/// protocol whose server speaks first.
const SNIFF: Duration = Duration::from_millis(300);

/// How long a byte stream may pause before its held-back tail (checked
/// as far as it goes) is sent on: interactive protocols wait for it.
const IDLE: Duration = Duration::from_millis(20);

/// What a client sent first.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Tls,
    Http,
    Other,
}

fn kind(first: &[u8]) -> Kind {
    match first {
        // A TLS handshake record.
        [0x16, 0x03, ..] => Kind::Tls,
        _ => {
            let method = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
            match (method, first.get(method)) {
                (3..=7, Some(b' ')) => Kind::Http,
                _ => Kind::Other,
            }
        }
    }
}

/// Serves one tunnel to `host:port`.
pub(crate) async fn serve<S>(proxy: Arc<Proxy>, mut io: S, host: String, port: u16)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Enough bytes to tell (a method and its space), or what came before
    // the client fell silent.
    let mut first = vec![0u8; 1024];
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + SNIFF;
    while n < 8 {
        match tokio::time::timeout_at(deadline, io.read(&mut first[n..])).await {
            Ok(Ok(0)) | Ok(Err(_)) if n == 0 => return,
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(m)) => n += m,
        }
    }
    first.truncate(n);
    let seen = kind(&first);
    let io = Prefixed {
        first: Bytes::from(first),
        inner: io,
    };
    match seen {
        Kind::Tls => proxy.tls_tunnel(io, host, port).await,
        Kind::Http => {
            let pool = Upstream::default();
            let svc = service_fn(move |req| {
                let (proxy, host, pool) = (proxy.clone(), host.clone(), pool.clone());
                async move { Ok::<_, hyper::Error>(proxy.forward(req, &host, port, &pool, false).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades()
                .await;
        }
        Kind::Other => stream(proxy, io, host, port).await,
    }
}

/// A byte stream to `host:port`, where the egress policy allows it.
async fn stream<S>(proxy: Arc<Proxy>, client: Prefixed<S>, host: String, port: u16)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let to = Target {
        host: host.clone(),
        port,
        tls: false,
        method: "CONNECT".into(),
        path: String::new(),
    };
    if let Err(why) = proxy.rules.may_go(&host, port) {
        let _ = proxy.refuse_target(&to, why);
        return;
    }
    let upstream = match proxy.connect(&host, port).await {
        Ok(u) => u,
        Err(e) => {
            warn!(host, port, "tunnel: {e}");
            return;
        }
    };
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_up, mut to_up) = upstream.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_up, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    let mut window = Window::new(proxy.rules.seam());
    let mut buf = vec![0u8; 16 << 10];
    let check = |d: &[u8]| proxy.rules.check_body(d, &host, port, false);
    loop {
        let read = match window.held() {
            0 => Ok(from_client.read(&mut buf).await),
            _ => tokio::time::timeout(IDLE, from_client.read(&mut buf)).await,
        };
        let mut out = Vec::new();
        let done = match read {
            // Silence: what is held goes on.
            Err(_) => {
                out.extend(window.release());
                false
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                out.extend(window.release());
                true
            }
            Ok(Ok(n)) => {
                if let Err(why) = window.take(Bytes::copy_from_slice(&buf[..n]), check, &mut out) {
                    let _ = proxy.refuse_target(&to, why);
                    down.abort();
                    return;
                }
                false
            }
        };
        for b in out {
            if to_up.write_all(&b).await.is_err() {
                down.abort();
                return;
            }
        }
        if done {
            let _ = to_up.shutdown().await;
            break;
        }
    }
    let _ = down.await;
}

/// A stream whose first bytes were already read (to see what it is).
struct Prefixed<S> {
    first: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.first.has_remaining() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        assert_eq!(kind(&[0x16, 0x03, 0x01, 0x02]), Kind::Tls);
        assert_eq!(kind(b"GET / HTTP/1.1\r\n"), Kind::Http);
        assert_eq!(kind(b"OPTIONS * HTTP/1.1\r\n"), Kind::Http);
        assert_eq!(kind(b"SSH-2.0-OpenSSH_9.2\r\n"), Kind::Other);
        assert_eq!(kind(b"\0\0\0\x08\x04\xd2\x16\x2f"), Kind::Other);
        assert_eq!(kind(b""), Kind::Other);
    }
}
