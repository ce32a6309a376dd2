//! `sealctl proxy`: the egress proxy, for one launch's proxy part on a
//! listening socket given as an address, an inherited descriptor or a
//! network namespace; or, with `--control`, for every launch of the host
//! ([`host`]).

pub mod host;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write as _;

use sealinit_core::bundle::OpenedBundle;

use crate::error::{Error, Result};

/// What `sealctl proxy` was asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyOptions {
    /// Serve every launch of this host: take launches on this Unix socket
    /// (mode 0600), each until its launcher closes the connection
    #[arg(long, value_name = "PATH", conflicts_with_all = ["bundle", "attach"])]
    pub control: Option<PathBuf>,
    /// Hand this launch to the host's proxy at PATH (`--control`) instead
    /// of serving it here; it lasts while this command runs, which prints
    /// the launch's egress records as JSON lines
    #[arg(long, value_name = "PATH", requires = "bundle")]
    pub attach: Option<PathBuf>,
    /// The proxy part
    #[arg(long, value_name = "PATH", required_unless_present = "control")]
    pub bundle: Option<PathBuf>,
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
    #[arg(long, value_name = "N", conflicts_with = "netns")]
    pub listen_fd: Option<i32>,
    /// Or listen on 127.0.0.1:3128 inside this network namespace (e.g.
    /// /run/netns/NAME from `ip netns add NAME`, which the sandbox joins)
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub netns: Option<PathBuf>,
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
    if let Some(control) = opts.control {
        let outbound = upstreams(&opts.resolve, &opts.upstream_ca)?;
        return host::serve(control, sealinit_proxy::Outbound::new(outbound));
    }
    let bundle = opts
        .bundle
        .clone()
        .expect("clap: --bundle unless --control");
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
    let listener = listener(&opts)?;
    let local = listener.local_addr().map_err(|e| Error::os("listen", e))?;
    if let Some(control) = &opts.attach {
        // The part goes to the host's proxy sealed; it opens it there.
        let sealed = std::fs::read(&bundle).map_err(|e| {
            Error::usage(format!(
                "--bundle {}: {}",
                bundle.display(),
                sealinit_core::describe_io(&e)
            ))
        })?;
        let attached = host::attach(control, &listener, &key, &sealed)?;
        drop((key, listener));
        write_ca(&opts, &attached.ca_pem)?;
        eprintln!(
            "sealctl proxy: launch handed to {} on {local}",
            control.display()
        );
        let mut out = std::io::stdout().lock();
        for r in attached.records() {
            if writeln!(out, "{r}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        return Ok(());
    }
    let buf = sealinit::files::read_bundle(&bundle)?;
    let part =
        OpenedBundle::open(&key, buf, Some(sealinit_core::time::now())).map_err(|source| {
            Error::Init(sealinit::error::Error::Bundle {
                path: bundle.clone(),
                source,
            })
        })?;
    drop(key);
    let outbound = sealinit_proxy::Outbound::new(upstreams(&opts.resolve, &opts.upstream_ca)?);
    let (proxy, ca, names) =
        proxy_of(part, outbound).map_err(|e| Error::usage(format!("{}: {e}", bundle.display())))?;
    write_ca(&opts, &ca.pem())?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::os("listen", e))?;
    runtime()?.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::os("listen", e))?;
        eprintln!("sealctl proxy: listening on {local} for {names}");
        proxy.serve(listener, std::future::pending()).await;
        Ok(())
    })
}

/// The proxy process's runtime: a worker per core.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::os("tokio runtime", e))
}

fn write_ca(opts: &ProxyOptions, pem: &str) -> Result<()> {
    match &opts.ca_out {
        Some(p) => std::fs::write(p, pem).map_err(|source| Error::Output {
            path: p.clone(),
            source,
        }),
        None => Ok(()),
    }
}

/// The launch's listening socket: `--listen-fd`, `--netns` or `--listen`.
fn listener(opts: &ProxyOptions) -> Result<std::net::TcpListener> {
    match (opts.listen_fd, &opts.netns, opts.listen) {
        (Some(fd), _, _) => {
            let owned = sealinit_sys::take_inherited_fd(fd).map_err(|_| {
                Error::usage(format!("--listen-fd {fd}: descriptor {fd} is not open"))
            })?;
            Ok(std::net::TcpListener::from(owned))
        }
        (None, Some(ns), _) => sealinit_sys::listener_in_namespace(ns, SANDBOX_PORT).map_err(|e| {
            Error::usage(format!(
                "--netns {}: cannot listen on 127.0.0.1:{SANDBOX_PORT} there ({})",
                ns.display(),
                sealinit_core::describe_io(&e)
            ))
        }),
        (None, None, Some(addr)) => {
            std::net::TcpListener::bind(addr).map_err(|e| Error::os("bind", e))
        }
        (None, None, None) => Err(Error::usage(
            "give --listen ADDR, --listen-fd N or --netns PATH",
        )),
    }
}

/// An audit record of the proxy, as JSON (names, host, method and path;
/// never a value).
pub fn egress_json(e: &sealinit_proxy::Egress) -> serde_json::Value {
    serde_json::json!({
        "at": e.at, "launch": e.launch, "outcome": e.outcome, "secrets": e.secrets,
        "host": e.host, "port": e.port, "method": e.method, "path": e.path,
        "reason": e.reason,
    })
}

/// The proxy of an opened proxy part: its rules, a CA made for the launch,
/// and the names of the secrets it holds (for messages).
fn proxy_of(
    part: OpenedBundle,
    outbound: Arc<sealinit_proxy::Outbound>,
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
    let proxy = sealinit_proxy::Proxy::new(rules, ca.clone(), outbound, label);
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

/// An egress proxy serving one sandbox, from a listener in a new network
/// namespace: on a thread of this process, or handed to the host's proxy
/// (`--proxy-control`). Its values are wiped when it is dropped (after the
/// sandbox has ended).
pub struct ForSandbox {
    /// The namespace the sandbox joins.
    pub ns: std::os::fd::OwnedFd,
    /// The host's roots and the launch's CA, for the sandbox's clients.
    pub trust: tempfile::NamedTempFile,
    /// The core limit sealctl had before it became non-dumpable, for the
    /// sandbox.
    pub core_limit: libc::rlimit,
    stop: Option<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// How a sandbox's proxy is ended.
enum Stop {
    /// The proxy runs on a thread here.
    Here(tokio::sync::oneshot::Sender<()>),
    /// The host's proxy ends the launch when this connection is shut.
    Host(std::os::unix::net::UnixStream),
}

impl std::fmt::Debug for ForSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForSandbox").finish_non_exhaustive()
    }
}

impl Drop for ForSandbox {
    fn drop(&mut self) {
        match self.stop.take() {
            Some(Stop::Here(s)) => {
                let _ = s.send(());
            }
            Some(Stop::Host(c)) => {
                let _ = c.shutdown(std::net::Shutdown::Write);
            }
            None => {}
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

/// Where a sandbox's proxy runs and what it records.
#[derive(Debug)]
pub struct SandboxProxy {
    /// How it reaches upstreams.
    pub upstreams: sealinit_proxy::Upstreams,
    /// The host's proxy to hand the launch to (`--proxy-control`); else
    /// the proxy runs in this process.
    pub control: Option<PathBuf>,
    /// The store (and repository) its audit records go to.
    pub store: Option<(sealinit_store::Store, String)>,
}

/// Starts a launch's proxy for a sandbox, from its proxy part (sealed) and
/// key; with a store, every substitution and refusal is appended to its
/// audit trail (in batches, by a thread of its own).
pub fn for_sandbox(
    part: &[u8],
    key: sealinit_core::secret::SecretKey,
    how: SandboxProxy,
    dir: &std::path::Path,
) -> Result<ForSandbox> {
    let core_limit = harden()?;
    let (ns, listener) = sealinit_sys::loopback_namespace_listener(SANDBOX_PORT)
        .map_err(|e| Error::os("making the sandbox's network namespace", e))?;
    let (ca_pem, stop, thread, writer) = match &how.control {
        Some(control) => {
            let attached = host::attach(control, &listener, &key, part)?;
            drop((key, listener));
            let ca = attached.ca_pem.clone();
            let ender = attached.ender()?;
            let records = attached.records();
            let writer = match how.store {
                Some((store, repo)) => audit_writer(store, repo, records)?,
                None => std::thread::Builder::new()
                    .name("egress-audit".into())
                    .spawn(move || records.for_each(drop))
                    .map_err(|e| Error::os("starting the egress audit", e))?,
            };
            (ca, Stop::Host(ender), None, Some(writer))
        }
        None => {
            let (proxy, ca, writer) = here(part, key, how)?;
            let (stop, thread) = on_thread(proxy, listener)?;
            (ca, Stop::Here(stop), Some(thread), writer)
        }
    };
    let mut trust = tempfile::Builder::new()
        .prefix(".sealctl-trust-")
        .tempfile_in(dir)
        .map_err(|e| Error::os("writing the sandbox's trust file", e))?;
    let roots = std::fs::read(SYSTEM_ROOTS).unwrap_or_default();
    std::io::Write::write_all(&mut trust, &roots)
        .and_then(|()| std::io::Write::write_all(&mut trust, ca_pem.as_bytes()))
        .map_err(|e| Error::os("writing the sandbox's trust file", e))?;
    Ok(ForSandbox {
        ns,
        trust,
        core_limit,
        stop: Some(stop),
        thread,
        writer,
    })
}

type Here = (
    Arc<sealinit_proxy::Proxy>,
    String,
    Option<std::thread::JoinHandle<()>>,
);

/// A launch's proxy in this process, with its audit writer.
fn here(part: &[u8], key: sealinit_core::secret::SecretKey, how: SandboxProxy) -> Result<Here> {
    let mut buf = sealinit_core::secret::SecretBuf::zeroed(part.len())
        .map_err(|e| Error::os("locked memory", e))?;
    buf.expose_mut().copy_from_slice(part);
    let opened = OpenedBundle::open(&key, buf, Some(sealinit_core::time::now()))
        .map_err(|e| Error::usage(format!("the launch's proxy part: {e}")))?;
    drop(key);
    let outbound = sealinit_proxy::Outbound::new(how.upstreams);
    let (proxy, ca, _) = proxy_of(opened, outbound).map_err(Error::usage)?;
    match how.store {
        Some((store, repo)) => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let proxy = Arc::into_inner(proxy)
                .expect("the proxy is not shared yet")
                .with_audit(tx);
            let records = std::iter::from_fn(move || rx.blocking_recv().map(|e| egress_json(&e)));
            let writer = audit_writer(store, repo, records)?;
            Ok((Arc::new(proxy), ca.pem(), Some(writer)))
        }
        None => Ok((proxy, ca.pem(), None)),
    }
}

/// Serves `proxy` on `listener` on a thread of its own until the sender
/// returned is used or dropped.
fn on_thread(
    proxy: Arc<sealinit_proxy::Proxy>,
    listener: std::net::TcpListener,
) -> Result<(
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::os("listen", e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("egress-proxy".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
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
    Ok((stop, thread))
}

/// Appends the proxy's records (JSON, as [`egress_json`] makes them) to
/// the store's audit trail under `repo`: each batch that has arrived in
/// one transaction, until the proxy ends.
fn audit_writer(
    mut store: sealinit_store::Store,
    repo: String,
    records: impl Iterator<Item = serde_json::Value> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    // Records arrive one by one; a second thread batches what has
    // arrived while the previous batch was written.
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::Builder::new()
        .name("egress-records".into())
        .spawn(move || {
            for r in records {
                if tx.send(r).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::os("starting the egress audit", e))?;
    let record = move |store: &sealinit_store::Store, mut e: serde_json::Value| {
        let at = e["at"].as_i64().unwrap_or_default();
        if let Some(o) = e.as_object_mut() {
            o.remove("at");
        }
        store.egress_record(&repo, at, e)
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
