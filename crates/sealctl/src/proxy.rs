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

/// Runs the proxy until it is killed.
pub fn run(opts: ProxyOptions) -> Result<()> {
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
    let label = part.header().label.clone().unwrap_or_default();
    let rules = sealinit_proxy::Rules::new(part)
        .map_err(|e| Error::usage(format!("{}: {e}", opts.bundle.display())))?;
    let mut upstreams = sealinit_proxy::Upstreams::default();
    for r in &opts.resolve {
        let (k, v) = parse_resolve(r)?;
        upstreams.resolve.insert(k, v);
    }
    for path in &opts.upstream_ca {
        let pem = std::fs::read(path).map_err(|e| {
            Error::usage(format!(
                "--upstream-ca {}: {}",
                path.display(),
                sealinit_core::describe_io(&e)
            ))
        })?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            upstreams.extra_roots.push(c.map_err(|e| {
                Error::usage(format!(
                    "--upstream-ca {}: not PEM certificates ({e})",
                    path.display()
                ))
            })?);
        }
    }
    let ca = Arc::new(
        sealinit_proxy::tls::Authority::new(&label)
            .map_err(|e| Error::usage(format!("cannot make the launch CA: {e}")))?,
    );
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
    let names = rules.bound_names().join(", ");
    let proxy = Arc::new(sealinit_proxy::Proxy::new(rules, ca, upstreams, label));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::os("tokio runtime", e))?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::os("listen", e))?;
        eprintln!("sealctl proxy: listening on {local} for {names}");
        proxy.serve(listener).await;
        Ok(())
    })
}
