//! `sealctl run`: the whole pipeline on one machine, as a local stand-in for
//! an orchestrator. Seal the repository's secrets under a fresh key into a
//! private temporary file, hand the key to sealinit through a pipe on fd 3,
//! and become sealinit (`exec`), so that signals reach the command and the
//! exit status is the command's. sealinit removes the bundle once read
//! (`--remove-bundle`) and checks its label (`--expect-label`).
//!
//! With `--pid-namespace`, sealctl instead enters new PID and mount
//! namespaces, starts sealinit as PID 1 there with a fresh `/proc`, and
//! stays as a minimal supervisor that forwards signals and passes on the
//! exit status.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use crate::error::{Error, InitError, Result};
use crate::sandbox::Sandbox;
use sealinit::supervisor::{Policy, Supervisor};
use sealinit_core::secret::SecretKey;
use sealinit_store::Store;
use sealinit_sys::{self as sys, CStrArray, ChildSetup, SpawnError};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub repo: String,
    /// An environment of the repository (its secrets win).
    pub environment: Option<String>,
    /// sealinit to run; default: next to this executable, else on `PATH`.
    pub sealinit: Option<PathBuf>,
    pub pid_namespace: bool,
    /// Run under bubblewrap (`--sandbox`).
    pub sandbox: Option<Sandbox>,
    /// Lifetime of the per-launch bundle.
    pub ttl: Duration,
    pub allow_names: Vec<String>,
    /// Run with an empty bundle when the repository has no secrets.
    pub allow_empty: bool,
    /// Extra options for sealinit (before `--`).
    pub sealinit_args: Vec<OsString>,
    pub command: Vec<OsString>,
    /// How the egress proxy reaches upstreams (`--sandbox` with proxy
    /// secrets).
    pub upstreams: sealinit_proxy::Upstreams,
    /// The host's egress proxy to hand the launch to (`--proxy-control`);
    /// else it runs in this process.
    pub proxy_control: Option<PathBuf>,
}

/// A launch's proxy part (sealed), its key, and the store (with the
/// repository) its audit records go to.
pub type ProxyPart = Option<(Vec<u8>, SecretKey, Option<(Store, String)>)>;

/// Runs the pipeline. Without a PID namespace this only returns on error
/// (the process has become sealinit); with one, it returns the exit code.
pub fn run(mut store: Store, opts: &RunOptions) -> Result<i32> {
    // Found before anything is sealed or recorded.
    find_sealinit(opts.sealinit.as_deref())?;
    let found = store.secrets_for(&opts.repo, opts.environment.as_deref(), opts.allow_empty)?;
    let proxied = found
        .entries
        .iter()
        .any(|e| e.delivery == sealinit_core::bundle::Delivery::Proxy);
    if proxied && opts.sandbox.is_none() {
        return Err(no_proxy_here(&opts.repo));
    }
    let names = found.names_and_versions();
    let mut allow = opts.allow_names.clone();
    allow.extend(found.allowed.iter().cloned());
    sealinit_core::bundle::check_name_policy(&found.entries, &allow)?;
    let label = found.repo.clone();
    let now = sealinit_core::time::now();
    let expires = now.saturating_add(opts.ttl.as_secs());
    let header = sealinit_core::bundle::Header::new(now, Some(expires), Some(label.clone()))
        .with_repo(label.clone());
    let launch = sealinit_store::launch::seal_launch(found, header)?;
    store.record_seal(&label, &names, Some(&label), Some(expires))?;
    // The proxy's audit records go to the store; without one, it closes.
    let proxy = launch
        .proxy
        .map(|p| (p.bundle, p.key, Some((store, label.clone()))));
    run_bundle(
        &launch.sandbox.bundle,
        launch.sandbox.key,
        &label,
        proxy,
        opts,
    )
}

/// `sealctl run` of a repository with proxy secrets: their values go only
/// to an egress proxy, which `run` does not start.
pub fn no_proxy_here(repo: &str) -> Error {
    Error::usage(format!(
        "{repo} has secrets delivered through the egress proxy, which `sealctl run` starts only with --sandbox (the sandbox's one way out is then the proxy); add --sandbox, or seal the launch with `sealctl seal --repo {repo} --proxy-out PATH ...` for a proxy of your own"
    ))
}

/// Runs the pipeline with a bundle sealed already (minted by the service,
/// for `sealctl --server URL run`).
pub fn run_bundle(
    sealed: &[u8],
    key: SecretKey,
    label: &str,
    proxy: ProxyPart,
    opts: &RunOptions,
) -> Result<i32> {
    let sealinit = find_sealinit(opts.sealinit.as_deref())?;
    if let Some(sandbox) = &opts.sandbox {
        return launch_sandbox(&sealinit, sealed, key, label, sandbox, proxy, opts);
    }
    if proxy.is_some() {
        return Err(no_proxy_here(&opts.repo));
    }
    let bundle_path = write_private_bundle(sealed)?;
    debug!(bundle = %bundle_path.display(), "per-launch bundle written");

    let outcome = launch(&sealinit, &bundle_path, key, label, opts);
    // Only reached on failure or after a PID-namespace run; sealinit has
    // removed the bundle if it got that far.
    let _ = std::fs::remove_file(&bundle_path);
    outcome
}

/// sealinit's arguments for a bundle at `bundle` (in its view).
fn sealinit_args(bundle: &Path, label: &str, key_fd: i32, opts: &RunOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--bundle".into(),
        bundle.into(),
        "--remove-bundle".into(),
        "--expect-label".into(),
        label.into(),
        "--expect-repo".into(),
        opts.repo.as_str().into(),
        "--key-fd".into(),
        key_fd.to_string().into(),
    ];
    args.extend(opts.sealinit_args.iter().cloned());
    args.push("--".into());
    args.extend(opts.command.iter().cloned());
    args
}

/// Whether an environment variable is sealctl's own configuration (the
/// store, the master key's path, the service and its token).
fn is_own(name: &[u8]) -> bool {
    name.starts_with(b"SEALCTL_")
}

/// sealctl's environment without its own configuration: no `SEALCTL_*`
/// variable (the store, the master key's path, the service and its token)
/// reaches the command.
fn child_environment() -> Vec<std::ffi::CString> {
    sys::environment()
        .into_iter()
        .filter(|kv| !is_own(kv.to_bytes()))
        .map(std::ffi::CStr::to_owned)
        .collect()
}

/// Puts the key in a pipe (32 bytes fit its buffer) whose read end stays
/// open, inheritable, for sealinit; its number. (The lowest free number,
/// never a fixed one: a fixed one could belong to the store's files.)
fn key_pipe(key: SecretKey) -> Result<i32> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::os("creating the key pipe", e))?;
    std::fs::File::from(wr)
        .write_all(key.expose())
        .map_err(|e| Error::os("writing the key pipe", e))?;
    drop(key);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&rd);
    sys::move_onto(rd, fd).map_err(|e| Error::os("passing the key pipe", e))?;
    Ok(fd)
}

fn launch(
    sealinit: &Path,
    bundle: &Path,
    key: SecretKey,
    label: &str,
    opts: &RunOptions,
) -> Result<i32> {
    let supervisor = if opts.pid_namespace {
        sys::unshare_pid_namespace().map_err(|e| Error::os("entering a new PID namespace", e))?;
        Some(Supervisor::new(Policy::default())?)
    } else {
        None
    };

    let key_fd = key_pipe(key)?;
    let args = sealinit_args(bundle, label, key_fd, opts);

    let shown = sealinit.display().to_string();
    let Some(mut supervisor) = supervisor else {
        let mut cmd = std::process::Command::new(sealinit);
        for (name, _) in std::env::vars_os() {
            if is_own(name.as_bytes()) {
                cmd.env_remove(name);
            }
        }
        let err = cmd.args(&args).exec();
        return Err(exec_error(shown, err));
    };

    let setup = ChildSetup {
        mount_proc: true,
        ..ChildSetup::default()
    };
    let pid = spawn(
        &mut supervisor,
        sealinit,
        &args,
        setup,
        "starting sealinit in the namespace",
    )?;
    drop(sys::take_inherited_fd(key_fd));
    let status = supervisor.supervise(pid)?;
    supervisor.finish()?;
    Ok(status.code())
}

/// `--sandbox`: bubblewrap runs sealinit as the PID 1 of a sandbox that
/// holds nothing of the orchestrator's (see [`crate::sandbox`]); sealctl
/// stays, forwards signals to sealinit, and passes on the exit status.
fn launch_sandbox(
    sealinit: &Path,
    sealed: &[u8],
    key: SecretKey,
    label: &str,
    sandbox: &Sandbox,
    proxy: ProxyPart,
    opts: &RunOptions,
) -> Result<i32> {
    use std::io::{Read, Seek};
    use std::os::fd::{AsRawFd, OwnedFd};
    let bwrap = on_path("bwrap").ok_or_else(|| {
        Error::from(InitError::CommandNotFound {
            command: "bwrap (--sandbox runs the command under bubblewrap: install it, e.g. apt-get install bubblewrap)".into(),
        })
    })?;
    let mut supervisor = Supervisor::new(Policy::default())?;
    let key_fd = key_pipe(key)?;
    // With proxy secrets: the proxy, on a listener in the network
    // namespace the sandbox joins; it ends (its values wiped) after the
    // sandbox.
    let egress = match proxy {
        Some((part, key, store)) => Some(crate::proxy::for_sandbox(
            &part,
            key,
            crate::proxy::SandboxProxy {
                upstreams: opts.upstreams.clone(),
                control: opts.proxy_control.clone(),
                store,
            },
            &runtime_dir(),
        )?),
        None => None,
    };
    let mut sandbox = sandbox.clone();
    if let Some(e) = &egress {
        sandbox.proxy = Some(crate::sandbox::ProxyPlace {
            port: crate::proxy::SANDBOX_PORT,
            trust: e.trust.path().to_owned(),
        });
    }
    let sandbox = &sandbox;
    // The bundle, from an unlinked private file that bwrap copies into the
    // sandbox's tmpfs; sealinit unlinks that copy once read.
    let out_err = |source| Error::Output {
        path: runtime_dir(),
        source,
    };
    let mut file = tempfile::tempfile_in(runtime_dir()).map_err(out_err)?;
    file.write_all(sealed).map_err(out_err)?;
    file.rewind().map_err(out_err)?;
    let bundle = OwnedFd::from(file);
    let bundle_fd = bundle.as_raw_fd();
    sys::move_onto(bundle, bundle_fd).map_err(|e| Error::os("passing the bundle to bwrap", e))?;
    let (info_rd, info_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::os("creating bwrap's info pipe", e))?;
    let info_fd = info_wr.as_raw_fd();
    sys::move_onto(info_wr, info_fd).map_err(|e| Error::os("passing bwrap's info pipe", e))?;

    let mut args = sandbox.bwrap_args(sealinit, bundle_fd, info_fd);
    args.extend(sealinit_args(
        Path::new(crate::sandbox::BUNDLE),
        label,
        key_fd,
        opts,
    ));
    let setup = ChildSetup {
        net_namespace: egress
            .as_ref()
            .map(|e| std::os::fd::AsRawFd::as_raw_fd(&e.ns)),
        // sealctl became non-dumpable for the proxy: the sandbox keeps the
        // core limit it had.
        core_limit: egress.as_ref().map(|e| e.core_limit),
        ..ChildSetup::default()
    };
    let pid = spawn(&mut supervisor, &bwrap, &args, setup, "starting bwrap")?;
    for fd in [key_fd, bundle_fd, info_fd] {
        drop(sys::take_inherited_fd(fd));
    }
    // bwrap names sealinit's pid once the sandbox is up (or closes the
    // pipe if it fails first).
    let mut info = Vec::new();
    let mut reader = std::fs::File::from(info_rd);
    let mut chunk = [0u8; 512];
    while let Ok(n) = reader.read(&mut chunk) {
        if n == 0 || info.len() > 64 * 1024 {
            break;
        }
        info.extend_from_slice(&chunk[..n]);
        if let Some(child) = crate::sandbox::child_pid(&info) {
            debug!(pid = child, "sandbox up");
            supervisor.forward_to(child);
            break;
        }
    }
    drop(reader);
    let status = supervisor.supervise(pid)?;
    supervisor.finish()?;
    Ok(status.code())
}

/// Starts `program` with `args` and sealctl's environment without its own
/// configuration, with the signal mask `supervisor` hands its children;
/// the supervisor owns the child from then on.
fn spawn(
    supervisor: &mut Supervisor,
    program: &Path,
    args: &[OsString],
    setup: ChildSetup,
    what: &'static str,
) -> Result<libc::pid_t> {
    let argv_owned: Vec<CString> = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| sys::arg_cstring(a.as_bytes()))
        .collect();
    let argv: CStrArray<'_> = argv_owned.iter().map(CString::as_c_str).collect();
    let env = child_environment();
    let envp: CStrArray<'_> = env.iter().map(CString::as_c_str).collect();
    let pid = sys::spawn(
        &argv_owned[..1],
        &argv,
        &envp,
        supervisor.child_mask(),
        setup,
    )
    .map_err(|e| match e {
        SpawnError::Os(e) => Error::os(what, e),
        SpawnError::Exec(e) => exec_error(program.display().to_string(), e),
    })?;
    supervisor.started(pid, &setup);
    Ok(pid)
}

fn exec_error(command: String, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => InitError::CommandNotFound { command },
        _ => InitError::CommandNotExecutable { command, source: e },
    }
    .into()
}

/// `--sealinit`, else `sealinit` next to this executable, else on `PATH`.
fn find_sealinit(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let sibling = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("sealinit"))
        .filter(|p| p.is_file());
    sibling.or_else(|| on_path("sealinit")).ok_or_else(|| {
        InitError::CommandNotFound {
            command: "sealinit (looked next to sealctl and on PATH; pass --sealinit PATH)".into(),
        }
        .into()
    })
}

/// `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `$XDG_RUNTIME_DIR` (usually a tmpfs) or the temporary directory.
fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// Writes the bundle to a new 0600 file in [`runtime_dir`], and returns
/// its path.
fn write_private_bundle(sealed: &[u8]) -> Result<PathBuf> {
    let dir = runtime_dir();
    let out_err = |source| Error::Output {
        path: dir.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix("sealctl-run-")
        .suffix(".bundle")
        .tempfile_in(&dir)
        .map_err(out_err)?;
    tmp.write_all(sealed).map_err(out_err)?;
    let path = tmp.into_temp_path().keep().map_err(|e| out_err(e.error))?;
    Ok(path)
}
