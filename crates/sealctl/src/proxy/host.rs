//! One egress proxy for many launches (`sealctl proxy --control PATH`):
//! the host's proxy process, and the way a launch is handed to it.
//!
//! The protocol, on a Unix stream socket (mode 0600, so only its owner
//! may hand it launches):
//!
//! 1. The launcher sends 12 bytes, `SLP1`, the key's length and the proxy
//!    part's length (both u32, big-endian), with the launch's listening
//!    socket attached (`SCM_RIGHTS`); then the key, then the part.
//! 2. The proxy answers one JSON line: `{"launch": LABEL, "ca": PEM}` (the
//!    launch's CA certificate, for the sandbox's trust file) or
//!    `{"error": MESSAGE}`.
//! 3. Then one JSON line per substitution or refusal (the audit record,
//!    never a value), until the launcher closes its end: the launch ends
//!    there, its connections are closed and its values wiped.
//!
//! A launch lives exactly as long as the launcher's connection, so a
//! launcher that dies takes its launch with it.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealinit_core::bundle::OpenedBundle;
use sealinit_core::secret::{SecretBuf, SecretKey};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"SLP1";
/// The largest proxy part the host proxy takes.
const MAX_PART: usize = 64 << 20;
/// How long a launcher has to send its launch.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A launch handed to the host's proxy: held open for as long as the
/// launch lasts.
#[derive(Debug)]
pub struct Attached {
    stream: std::io::BufReader<UnixStream>,
    /// The launch's CA certificate (PEM).
    pub ca_pem: String,
}

impl Attached {
    /// The launch's audit records (JSON), as the proxy sends them, until it
    /// ends the launch or the connection is shut.
    pub fn records(mut self) -> impl Iterator<Item = serde_json::Value> {
        std::iter::from_fn(move || {
            let mut line = String::new();
            match self.stream.read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(serde_json::from_str(&line).unwrap_or_default()),
            }
        })
    }

    /// A handle that ends the launch (shuts the connection) from another
    /// thread.
    pub fn ender(&self) -> Result<UnixStream> {
        self.stream
            .get_ref()
            .try_clone()
            .map_err(|e| Error::os("the proxy's control connection", e))
    }
}

/// Hands a launch to the host's proxy at `control`: its listening socket,
/// the proxy part's key and the part (sealed).
pub fn attach(
    control: &Path,
    listener: &impl AsRawFd,
    key: &SecretKey,
    part: &[u8],
) -> Result<Attached> {
    let said = |what: &str| {
        Error::usage(format!(
            "the egress proxy at {} {what}: is `sealctl proxy --control {}` running?",
            control.display(),
            control.display()
        ))
    };
    let mut sock = UnixStream::connect(control).map_err(|e| {
        said(&format!(
            "cannot be reached ({})",
            sealinit_core::describe_io(&e)
        ))
    })?;
    let too_big = || Error::usage("the proxy part is too large for the host's proxy");
    let mut head = MAGIC.to_vec();
    head.extend((key.expose().len() as u32).to_be_bytes());
    head.extend(
        u32::try_from(part.len())
            .map_err(|_| too_big())?
            .to_be_bytes(),
    );
    let io = |e: std::io::Error| said(&format!("broke the connection ({e})"));
    sealinit_sys::send_fds(&sock, &head, &[listener.as_raw_fd()]).map_err(io)?;
    sock.write_all(key.expose()).map_err(io)?;
    sock.write_all(part).map_err(io)?;
    sock.set_read_timeout(Some(HANDSHAKE * 2)).map_err(io)?;
    let mut stream = std::io::BufReader::new(sock);
    let mut line = String::new();
    stream.read_line(&mut line).map_err(io)?;
    stream.get_ref().set_read_timeout(None).map_err(io)?;
    let answer: serde_json::Value =
        serde_json::from_str(&line).map_err(|_| said("gave no answer"))?;
    if let Some(e) = answer["error"].as_str() {
        return Err(Error::usage(format!(
            "the egress proxy refused the launch: {e}"
        )));
    }
    let ca_pem = answer["ca"]
        .as_str()
        .ok_or_else(|| said("gave no CA"))?
        .to_owned();
    Ok(Attached { stream, ca_pem })
}

/// Serves launches handed over `control` until killed.
pub fn serve(control: PathBuf, outbound: Arc<sealinit_proxy::Outbound>) -> Result<()> {
    let listener = bind_private(&control)?;
    super::runtime()?.block_on(async move {
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|e| Error::os("listen", e))?;
        eprintln!("sealctl proxy: taking launches on {}", control.display());
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(launch(conn, outbound.clone()));
        }
    })
}

/// A Unix socket at `path` only its owner may connect to; a stale socket
/// there (no proxy answers) is replaced, a live one is not.
fn bind_private(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if UnixStream::connect(path).is_ok() {
        return Err(Error::usage(format!(
            "--control {}: another proxy is already taking launches there",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    let bind_err = |e: std::io::Error| {
        Error::usage(format!(
            "--control {}: cannot listen there ({})",
            path.display(),
            sealinit_core::describe_io(&e)
        ))
    };
    // Made 0600 inside a private directory-less window: the socket is
    // chmod-ed before anything is accepted on it.
    let l = std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    l.set_nonblocking(true).map_err(bind_err)?;
    Ok(l)
}

/// One launcher's connection: the launch it hands over, served until the
/// launcher closes its end.
async fn launch(conn: tokio::net::UnixStream, outbound: Arc<sealinit_proxy::Outbound>) {
    let Ok(std) = conn.into_std() else { return };
    let taken = tokio::task::spawn_blocking(move || {
        let r = receive(&std, &outbound);
        (std, r)
    })
    .await;
    let Ok((mut std, received)) = taken else {
        return;
    };
    let (proxy, listener, ca) = match received {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("a launch was refused: {e}");
            let line = serde_json::json!({ "error": e }).to_string();
            let _ = writeln!(std, "{line}");
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let proxy = Arc::new(proxy.with_audit(tx));
    let label = proxy.label().to_owned();
    let line = serde_json::json!({ "launch": label, "ca": ca }).to_string();
    if writeln!(std, "{line}").is_err() || std.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(conn) = tokio::net::UnixStream::from_std(std) else {
        return;
    };
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    eprintln!("sealctl proxy: launch {label} attached");
    let (mut rd, mut wr) = conn.into_split();
    let closed = async move {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 64];
        while let Ok(n) = rd.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
    };
    let records = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(e) = rx.recv().await {
            let mut line = super::egress_json(&e).to_string();
            line.push('\n');
            if wr.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    proxy.serve(listener, closed).await;
    let _ = records.await;
    eprintln!("sealctl proxy: launch {label} ended, its values wiped");
}

type Received = (sealinit_proxy::Proxy, std::net::TcpListener, String);

/// Reads a launch from its launcher (bounded in size and time) and opens
/// its part into locked memory.
fn receive(
    sock: &UnixStream,
    outbound: &Arc<sealinit_proxy::Outbound>,
) -> std::result::Result<Received, String> {
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(HANDSHAKE))
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    let (n, mut fds) =
        sealinit_sys::recv_fds(sock, &mut head).map_err(|e| format!("reading the launch: {e}"))?;
    (&*sock)
        .read_exact(&mut head[n..])
        .map_err(|e| format!("reading the launch: {e}"))?;
    if &head[..4] != MAGIC {
        return Err("not a launch (expected SLP1)".into());
    }
    let listener: OwnedFd = match (fds.len(), fds.pop()) {
        (1, Some(fd)) => fd,
        _ => return Err("a launch comes with exactly one listening socket".into()),
    };
    let key_len = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
    let part_len = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
    let mut key = SecretKey::zeroed().map_err(|e| e.to_string())?;
    if key_len != key.expose().len() {
        return Err(format!(
            "a key is {} bytes, not {key_len}",
            key.expose().len()
        ));
    }
    if part_len > MAX_PART {
        return Err(format!("the part is larger than {MAX_PART} bytes"));
    }
    (&*sock)
        .read_exact(key.expose_mut())
        .map_err(|e| format!("reading the key: {e}"))?;
    let mut buf = SecretBuf::zeroed(part_len).map_err(|e| e.to_string())?;
    (&*sock)
        .read_exact(buf.expose_mut())
        .map_err(|e| format!("reading the part: {e}"))?;
    let part = OpenedBundle::open(&key, buf, Some(sealinit_core::time::now()))
        .map_err(|e| format!("the proxy part: {e}"))?;
    drop(key);
    let listener = std::net::TcpListener::from(listener);
    listener
        .local_addr()
        .map_err(|_| "the socket given is not a listening TCP socket".to_owned())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (proxy, ca, _) = super::proxy_of(part, outbound.clone())?;
    let proxy = Arc::into_inner(proxy).expect("not shared yet");
    Ok((proxy, listener, ca.pem()))
}
