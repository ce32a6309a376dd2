//! What sealinit does from start until its child runs, in this order
//! (README "Operation" lists the same steps):
//!
//! 1. block signals (the supervisor takes them synchronously later);
//! 2. become a child subreaper unless PID 1; become non-dumpable with a zero
//!    core limit; mark inherited descriptors above 2 close-on-exec except
//!    `--keep-fd` ones;
//! 3. read the key from its fd (or `--key-file`, then unlinked) into locked
//!    memory and close the fd;
//! 4. read the bundle into locked memory (unlink it with --remove-bundle)
//!    and open it in place; check --expect-label and --expect-repo;
//! 5. drop the key (wiped) and scrub the stack;
//! 6. build argv and envp, pointing into the decrypted buffer, check ARG_MAX;
//! 7. run each `--setup` step (setup-only secrets are theirs alone: wiped,
//!    and out of the environment, before the command starts), then fork and
//!    exec the command, waiting until exec succeeded;
//! 8. wipe the plaintext, supervise, and end whatever remains.

use std::collections::HashSet;
use std::ffi::c_int;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::files;
use crate::hardening::{self, Hardening};
use crate::output::Pump;
use crate::supervisor::{Policy, Supervisor};
use sealinit_core::bundle::{BundleError, Delivery, OpenedBundle, RESERVED_PREFIX};
use sealinit_core::key::{self, KeyError};
use sealinit_core::secret::{self, SecretKey};
use sealinit_mask::Masker;
use sealinit_sys::{self as sys, CStrArray, ChildSetup, ExitStatus, SpawnError};

/// `PATH` for the command search when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to launch, as parsed from sealinit's command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub bundle: Option<PathBuf>,
    /// Where the key comes from.
    pub key: KeySource,
    pub key_timeout: Duration,
    pub policy: Policy,
    /// `CODE=NEW` rewrites of the command's exit code.
    pub map_exit: Vec<(i32, i32)>,
    /// Signal to receive (and forward) when sealinit's parent dies.
    pub pdeathsig: Option<c_int>,
    /// Shell commands run in order, with the same environment, before the
    /// command.
    pub setup: Vec<String>,
    /// Inherited descriptors above 2 that the command keeps.
    pub keep_fds: Vec<RawFd>,
    /// Unlink the bundle file once read.
    pub remove_bundle: bool,
    /// Refuse a bundle whose authenticated label is not this.
    pub expect_label: Option<String>,
    /// Refuse a bundle not minted from this repository (format version 2
    /// names it; the label is the caller's choice, this is the store's).
    pub expect_repo: Option<String>,
    /// Mask secret values in the output of the command and setup steps.
    pub mask: Option<MaskOptions>,
    /// `--ready-fd`: told `ready` once the command has exec'd, or `error
    /// CODE REASON` if sealinit fails before that.
    pub ready_fd: Option<RawFd>,
    /// The command and its arguments; never empty.
    pub command: Vec<OsString>,
}

/// `--mask` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskOptions {
    /// What replaces each occurrence (`--mask-with`).
    pub replacement: String,
    /// Values shorter than this are not masked (`--mask-min-len`).
    pub min_len: usize,
    /// How long a possible prefix is held after the last output
    /// (`--mask-hold-ms`).
    pub hold: Duration,
}

impl Default for MaskOptions {
    fn default() -> Self {
        Self {
            replacement: "***".into(),
            min_len: 4,
            hold: crate::output::HOLD,
        }
    }
}

/// Where sealinit reads the 32-byte key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An inherited descriptor (runc/crun/podman `--preserve-fds`, bwrap,
    /// `docker run -i` with fd 0).
    Fd(RawFd),
    /// A file, unlinked once read (Kubernetes tmpfs volume); it must not be
    /// readable by group or others.
    File(PathBuf),
}

/// Runs sealinit: launch the command, supervise it, end whatever remains,
/// and return the exit code sealinit should exit with (the command's, or
/// 128 + signal, after `--map-exit`).
pub fn run(opts: &Options) -> Result<i32> {
    let mut ready = None;
    let result = run_reporting(opts, &mut ready);
    if let (Err(e), Some(mut f)) = (&result, ready.take()) {
        // Like s6's notification fd: one line, the code and the same
        // reason as the message on stderr (never a value).
        let _ = writeln!(
            f,
            "error {} {}",
            e.exit_code(),
            crate::error::one_line(&e.to_string())
        );
    }
    result
}

fn run_reporting(opts: &Options, ready: &mut Option<File>) -> Result<i32> {
    let mut supervisor = Supervisor::new(opts.policy.clone())?;
    let hardening = hardening::apply(&opts.keep_fds)?;
    if let Some(fd) = opts.ready_fd {
        let owned = sys::take_inherited_fd(fd).map_err(|_| {
            Error::Usage(format!(
                "--ready-fd {fd}: descriptor {fd} is not open; open it for writing (a pipe the orchestrator reads)"
            ))
        })?;
        *ready = Some(File::from(owned));
    }
    // The key's descriptor is taken before sealinit opens any of its own.
    let key_fd = match (&opts.bundle, &opts.key) {
        (Some(_), KeySource::Fd(fd)) => Some(take_key_fd(*fd, &hardening)),
        _ => None,
    };
    supervisor.open_signal_fd()?;
    if let Some(sig) = opts.pdeathsig {
        if supervisor.is_pid1() {
            warn!("--pdeathsig has no effect for PID 1 (its parent is outside the namespace)");
        } else {
            sys::set_parent_death_signal(sig)
                .map_err(|e| Error::os("prctl(PR_SET_PDEATHSIG)", e))?;
        }
    }
    let secrets = match &opts.bundle {
        Some(path) => Some(load_secrets(path, opts, key_fd, &mut supervisor)?),
        None => None,
    };
    if let (Some(path), Some(s), true) = (&opts.bundle, &secrets, opts.setup.is_empty()) {
        let names: Vec<String> = s
            .entries()
            .filter(|e| e.delivery() == Delivery::Setup)
            .map(|e| e.name().to_owned())
            .collect();
        if !names.is_empty() {
            return Err(Error::SetupWithoutSteps {
                path: path.clone(),
                names,
            });
        }
    }
    if let Some(mask) = &opts.mask {
        supervisor.attach(build_pump(mask, secrets.as_ref(), &hardening)?);
    }
    if let Some(sig) = supervisor.startup_signals()? {
        return Err(Error::Interrupted { signal: sig });
    }
    // From the first child on, every way out goes through the same
    // shutdown: what remains is ended, and the output delivered.
    let result = run_children(opts, secrets, &mut supervisor, &hardening, ready);
    let finished = supervisor.finish();
    let status = result?;
    finished?;
    let code = status.code();
    Ok(opts
        .map_exit
        .iter()
        .find(|(from, _)| *from == code)
        .map_or(code, |&(_, to)| to))
}

/// Step 7 and 8: each `--setup` step, then the command; the plaintext is
/// wiped as soon as the command has exec'd.
fn run_children(
    opts: &Options,
    mut secrets: Option<OpenedBundle>,
    supervisor: &mut Supervisor,
    hardening: &Hardening,
    ready: &mut Option<File>,
) -> Result<ExitStatus> {
    // A secret's name hides an inherited variable of that name from the
    // setup steps and the command alike (setup-only ones too).
    let inherited = {
        let overridden: HashSet<&str> = secrets
            .iter()
            .flat_map(|s| s.entries().map(|e| e.name()))
            .collect();
        inherited_env(&overridden)
    };
    let env = ChildEnv::new(&inherited, secrets.as_ref());

    let total = opts.setup.len();
    for (i, step) in opts.setup.iter().enumerate() {
        let started = Instant::now();
        let argv = [OsString::from("/bin/sh"), "-c".into(), step.into()];
        let pid = start(&argv, &env, supervisor, hardening)?;
        let status = supervisor.supervise(pid)?;
        info!(
            step = i + 1,
            of = total,
            ms = started.elapsed().as_millis() as u64,
            ?status,
            "setup step finished"
        );
        let interrupted = supervisor.shutdown_signal();
        if status != ExitStatus::Code(0) || interrupted.is_some() {
            return Err(Error::Setup {
                step: i + 1,
                total,
                command: step.clone(),
                status,
                interrupted,
            });
        }
    }

    // Setup-only secrets end with the setup steps: zeroed in place, and
    // out of the command's environment.
    drop(env);
    if let Some(s) = secrets.as_mut() {
        let wiped = s.wipe(Delivery::Setup);
        if wiped > 0 {
            debug!(wiped, "setup-only secrets wiped before the command starts");
        }
    }
    let env = ChildEnv::new(&inherited, secrets.as_ref());
    let pid = start(&opts.command, &env, supervisor, hardening)?;
    // The command has exec'd: its environment lives in its own memory now.
    drop(env);
    drop(secrets);
    supervisor.command_started();
    if let Some(mut f) = ready.take() {
        if let Err(e) = f.write_all(b"ready\n") {
            warn!("--ready-fd: cannot write to it ({e}); the command runs anyway");
        }
    }
    debug!(pid, "plaintext wiped; supervising");
    supervisor.supervise(pid)
}

/// The command's environment: inherited strings and pointers into the
/// decrypted bundle, with the `PATH` used to find the command.
struct ChildEnv<'a> {
    envp: CStrArray<'a>,
    path: Option<&'a OsStr>,
    secrets: usize,
}

impl<'a> ChildEnv<'a> {
    fn new(inherited: &'a [&'static CStr], secrets: Option<&'a OpenedBundle>) -> Self {
        let count = secrets.map_or(0, OpenedBundle::len);
        let envp: CStrArray<'a> = inherited
            .iter()
            .copied()
            .chain(secrets.iter().flat_map(|s| s.entries()).map(|e| e.as_env()))
            .collect();
        let path = secrets
            .and_then(|s| s.entries().find(|e| e.name() == "PATH").map(|e| e.value()))
            .or_else(|| {
                inherited
                    .iter()
                    .find_map(|v| v.to_bytes().strip_prefix(b"PATH="))
            })
            .map(OsStr::from_bytes);
        Self {
            envp,
            path,
            secrets: count,
        }
    }
}

/// `--mask`: the matcher, built once from the values (and their encodings)
/// before the plaintext is wiped, and the output proxy around it. Then the
/// memory is locked: all current pages (the matcher embeds the values, the
/// read buffer sees them), and future ones too only where
/// `RLIMIT_MEMLOCK` is unlimited (see [`sys::lock_memory`]).
fn build_pump(
    mask: &MaskOptions,
    secrets: Option<&OpenedBundle>,
    hardening: &Hardening,
) -> Result<Pump> {
    // Setup-only values stay out of the matcher: it lives as long as the
    // command, and they must not.
    let values: Vec<(&str, &[u8])> = secrets
        .iter()
        .flat_map(|s| s.entries())
        .filter(|e| e.delivery() != Delivery::Setup)
        .map(|e| (e.name(), e.value()))
        .collect();
    let (masker, skipped) = Masker::new(
        values.iter().map(|(_, v)| *v),
        mask.min_len,
        mask.replacement.as_bytes(),
    );
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|&i| values[i].0).collect();
        warn!(
            "--mask: {} shorter than {} bytes and not masked: {}",
            if names.len() == 1 {
                "this value is"
            } else {
                "these values are"
            },
            mask.min_len,
            names.join(", ")
        );
    }
    let pump = Pump::new(masker, mask.hold, hardening.closed_std)
        .map_err(|e| Error::os("setting up --mask output", e))?;
    match sys::lock_memory() {
        Ok(true) => debug!("--mask: memory locked, current and future"),
        Ok(false) => debug!(
            "--mask: current memory locked; RLIMIT_MEMLOCK is finite, so later allocations are not"
        ),
        Err(e) => {
            warn!("--mask: cannot lock sealinit's memory ({e}); the matcher may be swapped out")
        }
    }
    Ok(pump)
}

/// Steps 3 to 5: key, bundle, open, wipe the key. The key wait takes
/// signals: the stop signal or SIGINT aborts the start.
pub fn load_secrets(
    path: &Path,
    opts: &Options,
    key_fd: Option<Result<OwnedFd>>,
    supervisor: &mut Supervisor,
) -> Result<OpenedBundle> {
    let sigfd = supervisor
        .open_signal_fd()?
        .try_clone_to_owned()
        .map_err(|e| Error::os("dup", e))?;
    let mut interrupted = None;
    let mut on_signal = || match supervisor.startup_signals() {
        Ok(Some(sig)) => {
            interrupted = Some(sig);
            Err(KeyError::Interrupted(sig))
        }
        Ok(None) => Ok(()),
        Err(e) => Err(KeyError::Io(std::io::Error::other(e.to_string()))),
    };
    let wake: key::Wake<'_> = (sigfd.as_fd(), &mut on_signal);
    let key = match (&opts.key, key_fd) {
        (KeySource::Fd(fd), Some(owned)) => {
            owned.and_then(|owned| key_from_fd(*fd, owned, opts.key_timeout, wake))
        }
        (KeySource::File(path), _) => key_from_file(path, opts.key_timeout, wake),
        (KeySource::Fd(fd), None) => Err(Error::Key {
            source_name: format!("key fd {fd}"),
            source: KeyError::NotOpen,
        }),
    };
    if let Some(signal) = interrupted {
        return Err(Error::Interrupted { signal });
    }
    let key = key?;
    let buf = files::read_bundle(path)?;
    if opts.remove_bundle {
        match std::fs::remove_file(path) {
            Ok(()) => debug!(path = %path.display(), "bundle file removed"),
            Err(e) => warn!(
                "--remove-bundle: cannot remove {} ({e}); continuing (read-only mount?)",
                path.display()
            ),
        }
    }
    let opened =
        OpenedBundle::open(&key, buf, Some(sealinit_core::time::now())).map_err(|source| {
            Error::Bundle {
                path: path.to_owned(),
                source,
            }
        });
    drop(key);
    secret::scrub_stack();
    let opened = opened?;
    if opened.header().part.is_some() {
        return Err(Error::Bundle {
            path: path.to_owned(),
            source: BundleError::ProxyPart,
        });
    }
    if let Some(want) = &opts.expect_label {
        let found = opened.header().label.clone();
        if found.as_deref() != Some(want.as_str()) {
            return Err(Error::Bundle {
                path: path.to_owned(),
                source: BundleError::LabelMismatch {
                    expected: want.clone(),
                    found,
                },
            });
        }
    }
    if let Some(want) = &opts.expect_repo {
        let found = opened.header().repo.clone();
        if found.as_deref() != Some(want.as_str()) {
            return Err(Error::Bundle {
                path: path.to_owned(),
                source: BundleError::RepoMismatch {
                    expected: want.clone(),
                    found,
                },
            });
        }
    }
    debug!(
        entries = opened.len(),
        label = opened.header().label.as_deref().unwrap_or(""),
        "bundle opened"
    );
    for e in opened.entries() {
        debug!(name = e.name(), len = e.value().len(), "secret");
    }
    Ok(opened)
}

/// Takes ownership of the inherited key descriptor (one that sealinit found
/// closed at start, and filled with /dev/null, is not open).
fn take_key_fd(fd: RawFd, hardening: &Hardening) -> Result<OwnedFd> {
    let closed = usize::try_from(fd)
        .ok()
        .and_then(|i| hardening.closed_std.get(i))
        .is_some_and(|&c| c);
    let owned = if closed {
        None
    } else {
        sys::take_inherited_fd(fd).ok()
    };
    owned.ok_or_else(|| Error::Key {
        source_name: format!("key fd {fd}"),
        source: KeyError::NotOpen,
    })
}

fn key_from_fd(
    key_fd: RawFd,
    owned: OwnedFd,
    timeout: Duration,
    wake: key::Wake<'_>,
) -> Result<SecretKey> {
    let key = key::read_key(owned, timeout, Some(wake)).map_err(|source| Error::Key {
        source_name: format!("key fd {key_fd}"),
        source,
    })?;
    if key_fd <= 2 {
        // The key came on stdin: the command gets /dev/null there instead.
        sys::null_onto(key_fd).map_err(|e| Error::os("reopening the key fd on /dev/null", e))?;
        warn!("the key was read from fd {key_fd}: the command gets /dev/null as fd {key_fd}");
    }
    Ok(key)
}

/// Reads the key file, refusing one that group or others may read, then
/// unlinks it (a failure to unlink, e.g. on a read-only volume, is a warning).
fn key_from_file(path: &Path, timeout: Duration, wake: key::Wake<'_>) -> Result<SecretKey> {
    let key = files::read_key_file(path, "key file", true, timeout, Some(wake))?;
    match std::fs::remove_file(path) {
        Ok(()) => debug!(path = %path.display(), "key file removed"),
        Err(e) => warn!(
            "cannot remove key file {} ({e}); remove it yourself",
            path.display()
        ),
    }
    Ok(key)
}

/// Steps 6 and 7: build argv, check ARG_MAX, fork and exec.
fn start(
    command: &[OsString],
    env: &ChildEnv<'_>,
    supervisor: &mut Supervisor,
    hardening: &Hardening,
) -> Result<libc::pid_t> {
    let argv_owned: Vec<CString> = command
        .iter()
        .map(|a| sys::arg_cstring(a.as_bytes()))
        .collect();
    let argv: CStrArray<'_> = argv_owned.iter().map(CString::as_c_str).collect();

    let needed = argv.exec_size() + env.envp.exec_size();
    let limit = sys::arg_max();
    if needed > limit {
        return Err(Error::ArgMax { needed, limit });
    }

    let name = &command[0];
    let candidates = command_candidates(name, env.path);
    let shown = name.to_string_lossy().into_owned();
    let setup = ChildSetup {
        core_limit: hardening.core_limit,
        ..supervisor.child_setup()
    };
    let spawned = sys::spawn(
        &candidates,
        &argv,
        &env.envp,
        supervisor.child_mask(),
        setup,
    );
    match spawned {
        Ok(pid) => {
            supervisor.started(pid, &setup);
            info!(pid, command = %shown, secrets = env.secrets, "command started");
            Ok(pid)
        }
        Err(SpawnError::Os(e)) => Err(Error::os("starting the command (fork)", e)),
        Err(SpawnError::Exec(e)) => Err(match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Error::CommandNotFound { command: shown },
            Some(libc::E2BIG) => Error::ArgMax { needed, limit },
            _ => Error::CommandNotExecutable {
                command: shown,
                source: e,
            },
        }),
    }
}

/// The inherited environment as `NAME=value` strings, borrowed in place,
/// minus sealinit's own `SEALINIT_*` variables and minus names a secret
/// overrides.
fn inherited_env(overridden: &HashSet<&str>) -> Vec<&'static CStr> {
    sys::environment()
        .into_iter()
        .filter(|kv| {
            let kv = kv.to_bytes();
            let name = kv.split(|&b| b == b'=').next().unwrap_or(kv);
            !name.starts_with(RESERVED_PREFIX.as_bytes())
                && std::str::from_utf8(name).map_or(true, |n| !overridden.contains(n))
        })
        .collect()
}

/// The paths to try for `name`, in `execvp` order.
fn command_candidates(name: &OsStr, path_var: Option<&OsStr>) -> Vec<CString> {
    let name = name.as_bytes();
    if name.contains(&b'/') {
        return vec![sys::arg_cstring(name)];
    }
    let path = path_var.map_or(DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
            p.extend_from_slice(dir);
            p.push(b'/');
            p.extend_from_slice(name);
            sys::arg_cstring(&p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_path_order() {
        let c = command_candidates(OsStr::new("ls"), Some(OsStr::new("/a:/b/c::")));
        let c: Vec<_> = c.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(c, ["/a/ls", "/b/c/ls", "./ls", "./ls"]);
        let c = command_candidates(OsStr::new("./x/ls"), Some(OsStr::new("/a")));
        assert_eq!(c[0].to_str().unwrap(), "./x/ls");
        assert_eq!(c.len(), 1);
    }
}
