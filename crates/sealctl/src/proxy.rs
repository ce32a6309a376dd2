//! `sealctl proxy`: the egress proxy for one launch's proxy part, on a
//! listening socket given as an address or an inherited descriptor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sealinit_core::bundle::OpenedBundle;

use crate::error::{Error, Result};

/// What `sealctl proxy` was asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyOptions {
    /// The proxy part
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// Read its key from this inherited descriptor
    #[arg(long, value_name = "N", conflicts_with = "key_file")]
    pub key_fd: Option<i32>,
    /// Or from this file (mode 0600)
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Listen on this address (127.0.0.1:0 picks a port)
    #[arg(long, value_name = "ADDR", conflicts_with = "listen_fd")]
    pub listen: Option<std::net::SocketAddr>,
    /// Or accept on this inherited listening socket (e.g. one made in the
    /// sandbox's network namespace)
    #[arg(long, value_name = "N")]
    pub listen_fd: Option<i32>,
    /// Write the launch's CA certificate (PEM) here, for the sandbox's
    /// trust store
    #[arg(long, value_name = "PATH")]
    pub ca_out: Option<PathBuf>,
    /// Also trust these CA certificates (PEM) for upstream servers
    #[arg(long = "proxy-upstream-ca", value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// HOST:PORT:ADDR: reach HOST:PORT at ADDR (as curl's --resolve)
    #[arg(long = "proxy-resolve", value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
}

/// `HOST:PORT:ADDR`, as curl's `--resolve`.
fn parse_resolve(text: &str) -> Result<((String, u16), SocketAddr)> {
    let bad = || {
        Error::usage(format!(
            "--proxy-resolve {text:?}: expected HOST:PORT:ADDR, e.g. api.example.com:443:127.0.0.1"
        ))
    };
    let mut parts = text.splitn(3, ':');
    let (host, port, addr) = (parts.next(), parts.next(), parts.next());
    let (Some(host), Some(port), Some(addr)) = (host, port, addr) else {
        return Err(bad());
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip: std::net::IpAddr = addr.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
    Ok(((host.to_ascii_lowercase(), port), SocketAddr::new(ip, port)))
}

/// The process that holds a launch's values: non-dumpable (no ptrace,
/// no `/proc/PID/mem` for other processes of the user, no core dump) and,
/// as far as `RLIMIT_MEMLOCK` allows, locked against swapping. Returns the
/// core limit it had, for children.
fn harden() -> Result<libc::rlimit> {
    let core =
        sealinit_sys::make_undumpable().map_err(|e| Error::os("prctl(PR_SET_DUMPABLE)", e))?;
    if let Err(e) = sealinit_sys::lock_memory() {
        tracing::warn!("the egress proxy cannot lock its memory ({e}); values may be swapped out");
    }
    Ok(core)
}

/// Runs the proxy until it is killed.
pub fn run(opts: ProxyOptions) -> Result<()> {
    harden()?;
    let key = match (opts.key_fd, &opts.key_file) {
        (Some(fd), _) => sealinit::files::read_inherited_key(fd, Duration::from_secs(10), None)
            .map_err(|source| {
                Error::Init(sealinit::error::Error::Key {
                    source_name: format!("--key-fd {fd}"),
                    source,
                })
            })?,
        (None, Some(p)) => {
            sealinit::files::read_key_file(p, "key file", true, Duration::from_secs(10), None)?
        }
        (None, None) => {
            return Err(Error::usage(
                "give the proxy part's key: --key-fd N or --key-file PATH",
            ));
        }
    };
    let buf = sealinit::files::read_bundle(&opts.bundle)?;
    let part =
        OpenedBundle::open(&key, buf, Some(sealinit_core::time::now())).map_err(|source| {
            Error::Init(sealinit::error::Error::Bundle {
                path: opts.bundle.clone(),
                source,
            })
        })?;
    drop(key);
    let upstreams = upstreams(&opts.resolve, &opts.upstream_ca)?;
    let (proxy, ca, names) = proxy_of(part, upstreams)
        .map_err(|e| Error::usage(format!("{}: {e}", opts.bundle.display())))?;
    if let Some(p) = &opts.ca_out {
        std::fs::write(p, ca.pem()).map_err(|source| Error::Output {
            path: p.clone(),
            source,
        })?;
    }
    let listener = match (opts.listen_fd, opts.listen) {
        (Some(fd), _) => {
            let owned = sealinit_sys::take_inherited_fd(fd).map_err(|_| {
                Error::usage(format!("--listen-fd {fd}: descriptor {fd} is not open"))
            })?;
            std::net::TcpListener::from(owned)
        }
        (None, Some(addr)) => {
            std::net::TcpListener::bind(addr).map_err(|e| Error::os("bind", e))?
        }
        (None, None) => return Err(Error::usage("give --listen ADDR or --listen-fd N")),
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::os("listen", e))?;
    let local = listener.local_addr().map_err(|e| Error::os("listen", e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::os("tokio runtime", e))?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::os("listen", e))?;
        eprintln!("sealctl proxy: listening on {local} for {names}");
        proxy.serve(listener, std::future::pending()).await;
        Ok(())
    })
}

/// The proxy of an opened proxy part: its rules, a CA made for the launch,
/// and the names of the secrets it holds (for messages).
fn proxy_of(
    part: OpenedBundle,
    upstreams: sealinit_proxy::Upstreams,
) -> std::result::Result<
    (
        Arc<sealinit_proxy::Proxy>,
        Arc<sealinit_proxy::tls::Authority>,
        String,
    ),
    String,
> {
    let label = part.header().label.clone().unwrap_or_default();
    let rules = sealinit_proxy::Rules::new(part)?;
    let names = rules.bound_names().join(", ");
    let ca = Arc::new(
        sealinit_proxy::tls::Authority::new(&label)
            .map_err(|e| format!("cannot make the launch CA: {e}"))?,
    );
    let proxy = sealinit_proxy::Proxy::new(rules, ca.clone(), upstreams, label);
    Ok((Arc::new(proxy), ca, names))
}

/// How the proxy reaches upstreams: `--proxy-resolve` and
/// `--proxy-upstream-ca`.
pub fn upstreams(resolve: &[String], cas: &[PathBuf]) -> Result<sealinit_proxy::Upstreams> {
    let mut upstreams = sealinit_proxy::Upstreams::default();
    for r in resolve {
        let (k, v) = parse_resolve(r)?;
        upstreams.resolve.insert(k, v);
    }
    for path in cas {
        let pem = std::fs::read(path).map_err(|e| {
            Error::usage(format!(
                "--proxy-upstream-ca {}: {}",
                path.display(),
                sealinit_core::describe_io(&e)
            ))
        })?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            upstreams.extra_roots.push(c.map_err(|e| {
                Error::usage(format!(
                    "--proxy-upstream-ca {}: not PEM certificates ({e})",
                    path.display()
                ))
            })?);
        }
    }
    Ok(upstreams)
}

/// The port the proxy listens on in a sandbox's network namespace (nothing
/// else listens there).
pub const SANDBOX_PORT: u16 = 3128;

/// The roots a sandbox trusts besides the launch's CA.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An egress proxy serving one sandbox, on a thread of its own, from a
/// listener in a new network namespace; its values are wiped when it is
/// dropped (after the sandbox has ended).
pub struct ForSandbox {
    /// The namespace the sandbox joins.
    pub ns: std::os::fd::OwnedFd,
    /// The host's roots and the launch's CA, for the sandbox's clients.
    pub trust: tempfile::NamedTempFile,
    /// The core limit sealctl had before it became non-dumpable, for the
    /// sandbox.
    pub core_limit: libc::rlimit,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ForSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForSandbox").finish_non_exhaustive()
    }
}

impl Drop for ForSandbox {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The proxy, and with it the sender, are gone: the writer drains
        // what is left and ends.
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Opens a launch's proxy part and starts its proxy for a sandbox; with
/// `store`, every substitution and refusal is appended to its audit trail
/// (in batches, by a thread of its own) under `repo`.
pub fn for_sandbox(
    part: &[u8],
    key: sealinit_core::secret::SecretKey,
    upstreams: sealinit_proxy::Upstreams,
    dir: &std::path::Path,
    store: Option<(sealinit_store::Store, String)>,
) -> Result<ForSandbox> {
    let core_limit = harden()?;
    let mut buf = sealinit_core::secret::SecretBuf::zeroed(part.len())
        .map_err(|e| Error::os("locked memory", e))?;
    buf.expose_mut().copy_from_slice(part);
    let opened = OpenedBundle::open(&key, buf, Some(sealinit_core::time::now()))
        .map_err(|e| Error::usage(format!("the launch's proxy part: {e}")))?;
    drop(key);
    let (proxy, ca, _) = proxy_of(opened, upstreams).map_err(Error::usage)?;
    let (proxy, writer) = match store {
        Some((store, repo)) => {
            let (tx, rx) = std::sync::mpsc::channel();
            let proxy = Arc::into_inner(proxy)
                .expect("the proxy is not shared yet")
                .with_audit(tx);
            (Arc::new(proxy), Some(audit_writer(store, repo, rx)?))
        }
        None => (proxy, None),
    };
    let mut trust = tempfile::Builder::new()
        .prefix(".sealctl-trust-")
        .tempfile_in(dir)
        .map_err(|e| Error::os("writing the sandbox's trust file", e))?;
    let roots = std::fs::read(SYSTEM_ROOTS).unwrap_or_default();
    std::io::Write::write_all(&mut trust, &roots)
        .and_then(|()| std::io::Write::write_all(&mut trust, ca.pem().as_bytes()))
        .map_err(|e| Error::os("writing the sandbox's trust file", e))?;
    let (ns, listener) = sealinit_sys::loopback_namespace_listener(SANDBOX_PORT)
        .map_err(|e| Error::os("making the sandbox's network namespace", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::os("listen", e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("egress-proxy".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("egress proxy: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        proxy
                            .serve(l, async {
                                let _ = stopped.await;
                            })
                            .await
                    }
                    Err(e) => tracing::error!("egress proxy: {e}"),
                }
            });
        })
        .map_err(|e| Error::os("starting the egress proxy", e))?;
    Ok(ForSandbox {
        ns,
        trust,
        core_limit,
        stop: Some(stop),
        thread: Some(thread),
        writer,
    })
}

/// Appends the proxy's records to the store's audit trail: each batch that
/// has arrived in one transaction, until the proxy ends.
fn audit_writer(
    mut store: sealinit_store::Store,
    repo: String,
    rx: std::sync::mpsc::Receiver<sealinit_proxy::Egress>,
) -> Result<std::thread::JoinHandle<()>> {
    let record = move |store: &sealinit_store::Store, e: sealinit_proxy::Egress| {
        store.egress_record(
            &repo,
            e.at as i64,
            serde_json::json!({
                "launch": e.launch, "outcome": e.outcome, "secrets": e.secrets,
                "host": e.host, "port": e.port, "method": e.method, "path": e.path,
                "reason": e.reason,
            }),
        )
    };
    std::thread::Builder::new()
        .name("egress-audit".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![record(&store, first)];
                batch.extend(rx.try_iter().map(|e| record(&store, e)));
                if let Err(e) = store.append_audit(&batch) {
                    tracing::error!("egress audit: {e}");
                }
            }
        })
        .map_err(|e| Error::os("starting the egress audit", e))
}
