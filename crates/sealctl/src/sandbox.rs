//! `sealctl run --sandbox`: the command runs under bubblewrap with only
//! what an agent needs, so that it holds nothing of the orchestrator's.
//!
//! - Every namespace is new (`--unshare-all`): its own network with only
//!   loopback (`--share-net` keeps the host's), PIDs, IPC, UTS, cgroup and
//!   user; sealinit is its PID 1 (`--as-pid-1`).
//! - The file system is a fresh tmpfs root with `/usr` read-only (and the
//!   merged-usr links `/bin`, `/lib`, ...), a few read-only files of `/etc`
//!   that programs expect (never `/etc` whole), a fresh `/proc`, a minimal
//!   `/dev`, empty `/tmp` and `/run`, and the directories given with
//!   `--bind`. The orchestrator's home, keys, token files, store and its
//!   sockets are not there.
//! - The environment is cleared: `PATH`, `HOME=/tmp`, and `TERM`/`LANG`
//!   if set; sealinit adds the repository's secrets.
//! - The bundle is copied into the sandbox's own tmpfs from an unlinked
//!   file (`--file`) and unlinked there once read; the key arrives on a
//!   pipe (fd 3) and exists nowhere else.
//!
//! bubblewrap does not forward signals: sealctl stays as a small
//! supervisor and forwards them to sealinit (its pid from `--info-fd`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where sealinit and the bundle appear inside the sandbox.
pub const INIT: &str = "/init";
pub const BUNDLE: &str = "/run/sealinit/bundle";

/// What `--sandbox` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Keep the host's network (default: loopback only).
    pub share_net: bool,
    /// Host directories bound read-write at the same path; the command
    /// starts in the first (else in /tmp).
    pub binds: Vec<PathBuf>,
    /// The egress proxy's place in the sandbox, for repositories with proxy
    /// secrets: the sandbox joins a network namespace where the proxy's
    /// listener is its only way out.
    pub proxy: Option<ProxyPlace>,
}

/// How the sandbox reaches the egress proxy: its port on the sandbox's
/// loopback, and the trust file (the host's roots and the launch's CA).
#[derive(Debug, Clone)]
pub struct ProxyPlace {
    pub port: u16,
    pub trust: PathBuf,
}

/// Where the trust file appears inside the sandbox.
pub const TRUST: &str = "/run/sealinit/ca.pem";

/// The variables that point clients at the proxy (both cases; `NO_PROXY`
/// empty, so nothing bypasses it) and at the trust file: OpenSSL and curl
/// (`SSL_CERT_FILE`, `CURL_CA_BUNDLE`), Python requests
/// (`REQUESTS_CA_BUNDLE`), Node (`NODE_EXTRA_CA_CERTS`, added to its own
/// roots), git (`GIT_SSL_CAINFO`).
pub fn proxy_env(port: u16) -> Vec<(&'static str, String)> {
    let url = format!("http://127.0.0.1:{port}");
    let mut v: Vec<(&'static str, String)> =
        ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
            .into_iter()
            .map(|k| (k, url.clone()))
            .collect();
    v.extend([("NO_PROXY", String::new()), ("no_proxy", String::new())]);
    for k in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        v.push((k, TRUST.to_owned()));
    }
    v
}

/// Read-only files of `/etc` that ordinary programs read (user names,
/// name service, certificate roots, Debian's alternatives); bound only if
/// present. Never the rest of `/etc`.
const ETC: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
];

impl Sandbox {
    /// bubblewrap's arguments (after `bwrap`), up to and including
    /// sealinit's path: the caller appends sealinit's own arguments.
    /// `bundle_fd` holds the sealed bundle; `info_fd` receives bwrap's
    /// JSON with the command's pid.
    pub fn bwrap_args(&self, sealinit: &Path, bundle_fd: i32, info_fd: i32) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["--unshare-all"]);
        // With the proxy, bwrap keeps the network namespace it starts in:
        // the one the launcher joined, whose only way out is the proxy.
        if self.share_net || self.proxy.is_some() {
            push(&["--share-net"]);
        }
        push(&[
            "--die-with-parent",
            "--as-pid-1",
            "--ro-bind",
            "/usr",
            "/usr",
        ]);
        // Merged-usr links, or the directories themselves where they are not
        // links.
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(top) {
                Ok(target) => {
                    a.extend(["--symlink".into(), target.into(), top.into()]);
                }
                Err(_) if Path::new(top).is_dir() => {
                    a.extend(["--ro-bind".into(), top.into(), top.into()]);
                }
                Err(_) => {}
            }
        }
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        for f in ETC {
            push(&["--ro-bind-try", f, f]);
        }
        if self.share_net {
            push(&["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]);
        }
        push(&[
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
        ]);
        a.extend([
            "--ro-bind".into(),
            sealinit.into(),
            INIT.into(),
            "--file".into(),
            bundle_fd.to_string().into(),
            BUNDLE.into(),
        ]);
        for dir in &self.binds {
            a.extend(["--bind".into(), dir.into(), dir.into()]);
        }
        if let Some(p) = &self.proxy {
            a.extend(["--ro-bind".into(), p.trust.clone().into(), TRUST.into()]);
        }
        let workdir: OsString = self
            .binds
            .first()
            .map_or_else(|| "/tmp".into(), |d| d.clone().into());
        a.extend(["--chdir".into(), workdir]);
        a.extend(["--clearenv".into(), "--setenv".into(), "PATH".into()]);
        a.push("/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into());
        a.extend(["--setenv".into(), "HOME".into(), "/tmp".into()]);
        for keep in ["TERM", "LANG"] {
            if let Some(v) = std::env::var_os(keep) {
                a.extend(["--setenv".into(), keep.into(), v]);
            }
        }
        if let Some(p) = &self.proxy {
            for (k, v) in proxy_env(p.port) {
                a.extend(["--setenv".into(), k.into(), v.into()]);
            }
        }
        a.extend(["--info-fd".into(), info_fd.to_string().into(), INIT.into()]);
        a
    }
}

/// The command's pid (in this PID namespace) from bwrap's `--info-fd`
/// JSON, once bwrap has written and closed it.
pub fn child_pid(info: &[u8]) -> Option<i32> {
    let doc: serde_json::Value = serde_json::from_slice(info).ok()?;
    doc.get("child-pid")?.as_i64()?.try_into().ok()
}
