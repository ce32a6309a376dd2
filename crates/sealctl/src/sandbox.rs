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
        if self.share_net {
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
