//! sealinit's command line (lexopt: a few KiB, where clap would add
//! hundreds to the init binary).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use sealinit::launch::{KeySource, MaskOptions, Options};
use sealinit::supervisor::Policy;
use tracing::level_filters::LevelFilter;

pub const USAGE: &str = "usage: sealinit [OPTIONS] [--] COMMAND [ARG]...";

pub const HELP: &str = "\
sealinit: a PID-1 init that starts COMMAND with the secrets of a sealed bundle
in its environment, then forwards signals, reaps zombies and passes on the exit
status.

usage: sealinit [OPTIONS] [--] COMMAND [ARG]...

options:
  --bundle PATH        sealed bundle to open (env SEALINIT_BUNDLE); without it
                       sealinit is a plain init with no secrets
  --key-fd N           descriptor carrying exactly 32 raw key bytes then EOF
                       (env SEALINIT_KEY_FD; default 3 when a bundle is given)
  --key-file PATH      read the key from a file instead, then unlink it; the
                       file must not be readable by group or others (env
                       SEALINIT_KEY_FILE)
  --key-timeout SECS   how long to wait for the key, open included (env
                       SEALINIT_KEY_TIMEOUT; default 5, at most 31536000)
  --log-level LEVEL    error|warn|info|debug|trace|off, to stderr (env
                       SEALINIT_LOG; default warn)
  -g, --process-group  forward signals to COMMAND's whole process group
  --grace SECS         on shutdown, SIGTERM what remains and SIGKILL it after
                       SECS (default 10, at most 31536000)
  --stop-signal SIG    the signal that means stop: forwarded, and it starts
                       the grace period (default TERM); every other signal
                       (HUP, INT, QUIT, USR1, ...) is only forwarded
  --map-exit CODE=NEW  exit with NEW when COMMAND exits with CODE (repeatable),
                       e.g. 143=0
  --pdeathsig SIG      when sealinit's parent dies, act as if sent SIG
                       (not as PID 1); SIG as TERM, SIGTERM or 15
  --setup 'SHELL CMD'  run with /bin/sh -c before COMMAND, with the same
                       environment (repeatable, in order); the first failure
                       stops the start with its status
  --keep-fd N          pass inherited descriptor N (3 and above) on to
                       COMMAND (repeatable); all others above 2 are closed
  --remove-bundle      unlink the bundle file once read (a failure, e.g. on a
                       read-only mount, is only a warning)
  --expect-label TEXT  refuse a bundle whose label is not TEXT (env
                       SEALINIT_EXPECT_LABEL)
  --expect-repo REPO   refuse a bundle not minted from REPO (the store binds
                       it; a label is whatever the minting token chose)
                       (env SEALINIT_EXPECT_REPO)
  --ready-fd N         once COMMAND has been exec'd, write 'ready' and a
                       newline to descriptor N (3 and above) and close it; if
                       sealinit fails before that, 'error CODE REASON'
                       (env SEALINIT_READY_FD)
  --mask               replace every secret value (and its base64, URL and
                       JSON forms) in the output of COMMAND and the setup
                       steps (env SEALINIT_MASK=1); on a terminal, COMMAND
                       runs on a pseudo-terminal that sealinit proxies
  --mask-with TEXT     the replacement (default ***)
  --mask-min-len N     values shorter than N bytes are not masked (default 4)
  --mask-hold-ms N     how long output that may be the start of a value is
                       held after the last output (default 50)
  -h, --help           print this help
  -V, --version        print the version

exit status: COMMAND's own, or 128+N if it was killed by signal N;
  64 usage error, 65 bundle malformed/forged/expired, 66 bundle or key
  missing or unreadable, 71 OS failure, 126 COMMAND not executable,
  127 COMMAND not found.
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Options>, LevelFilter),
    Help,
    Version,
}

/// Parses `args` (without argv[0]); `env` looks up SEALINIT_* defaults.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Parsed, String> {
    use lexopt::prelude::*;

    let mut bundle = env("SEALINIT_BUNDLE").map(PathBuf::from);
    let mut key_fd = env("SEALINIT_KEY_FD").map(|v| fd_number(&v)).transpose()?;
    let mut key_file = env("SEALINIT_KEY_FILE").map(PathBuf::from);
    let mut key_timeout = env("SEALINIT_KEY_TIMEOUT")
        .map(|v| timeout(&v))
        .transpose()?;
    let mut level = env("SEALINIT_LOG").map(|v| log_level(&v)).transpose()?;
    let mut policy = Policy::default();
    let mut map_exit = Vec::new();
    let mut pdeathsig = None;
    let mut setup = Vec::new();
    let mut keep_fds = Vec::new();
    let mut remove_bundle = false;
    let mut expect_label = env("SEALINIT_EXPECT_LABEL")
        .map(|v| text(&v).map(str::to_owned))
        .transpose()?;
    let mut expect_repo = env("SEALINIT_EXPECT_REPO")
        .map(|v| text(&v).map(str::to_owned))
        .transpose()?;
    let mut mask = match env("SEALINIT_MASK").as_ref().and_then(|v| v.to_str()) {
        None | Some("" | "0" | "false" | "no") => None,
        Some(_) => Some(MaskOptions::default()),
    };
    let mut ready_fd = env("SEALINIT_READY_FD")
        .map(|v| keep_fd(&v).map_err(|e| e.replace("--keep-fd", "--ready-fd")))
        .transpose()?;
    let mut mask_with = None;
    let mut mask_min_len = None;
    let mut mask_hold = None;
    let mut command = Vec::new();

    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("bundle") => bundle = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("key-fd") => key_fd = Some(fd_number(&p.value().map_err(|e| e.to_string())?)?),
            Long("key-file") => key_file = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("key-timeout") => {
                key_timeout = Some(timeout(&p.value().map_err(|e| e.to_string())?)?)
            }
            Long("log-level") => level = Some(log_level(&p.value().map_err(|e| e.to_string())?)?),
            Short('g') | Long("process-group") => policy.process_group = true,
            Long("grace") => policy.grace = grace(&p.value().map_err(|e| e.to_string())?)?,
            Long("stop-signal") => {
                let v = p.value().map_err(|e| e.to_string())?;
                policy.stop_signal = sealinit::signal::parse(text(&v)?)
                    .map_err(|e| format!("--stop-signal: {e}"))?;
            }
            Long("map-exit") => map_exit.push(exit_map(&p.value().map_err(|e| e.to_string())?)?),
            Long("pdeathsig") => {
                let v = p.value().map_err(|e| e.to_string())?;
                pdeathsig = Some(
                    sealinit::signal::parse(text(&v)?).map_err(|e| format!("--pdeathsig: {e}"))?,
                );
            }
            Long("keep-fd") => keep_fds.push(keep_fd(&p.value().map_err(|e| e.to_string())?)?),
            Long("remove-bundle") => remove_bundle = true,
            Long("ready-fd") => {
                let v = p.value().map_err(|e| e.to_string())?;
                ready_fd = Some(keep_fd(&v).map_err(|e| e.replace("--keep-fd", "--ready-fd"))?);
            }
            Long("mask") => mask = Some(MaskOptions::default()),
            Long("mask-with") => {
                mask_with = Some(text(&p.value().map_err(|e| e.to_string())?)?.to_owned())
            }
            Long("mask-hold-ms") => {
                let v = p.value().map_err(|e| e.to_string())?;
                mask_hold = Some(Duration::from_millis(text(&v)?.parse::<u64>().map_err(
                    |_| format!("--mask-hold-ms {v:?} is not a whole number of milliseconds"),
                )?));
            }
            Long("mask-min-len") => {
                let v = p.value().map_err(|e| e.to_string())?;
                mask_min_len = Some(
                    text(&v)?
                        .parse::<usize>()
                        .map_err(|_| format!("--mask-min-len {v:?} is not a whole number"))?,
                );
            }
            Long("expect-label") => {
                expect_label = Some(text(&p.value().map_err(|e| e.to_string())?)?.to_owned())
            }
            Long("expect-repo") => {
                expect_repo = Some(text(&p.value().map_err(|e| e.to_string())?)?.to_owned())
            }
            Long("setup") => setup.push(text(&p.value().map_err(|e| e.to_string())?)?.to_owned()),
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Value(cmd) => {
                command.push(cmd);
                command.extend(p.raw_args().map_err(|e| e.to_string())?);
                break;
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if command.is_empty() {
        return Err("missing COMMAND to run".into());
    }
    if let Some(m) = &mut mask {
        if let Some(w) = mask_with {
            m.replacement = w;
        }
        if let Some(n) = mask_min_len {
            m.min_len = n.max(1);
        }
        if let Some(h) = mask_hold {
            m.hold = h;
        }
    } else if mask_with.is_some() || mask_min_len.is_some() || mask_hold.is_some() {
        return Err("--mask-with, --mask-min-len and --mask-hold-ms need --mask".into());
    }
    let key = match (key_fd, key_file) {
        (Some(_), Some(_)) => return Err("--key-fd and --key-file exclude each other".into()),
        (_, Some(path)) => KeySource::File(path),
        (fd, None) => KeySource::Fd(fd.unwrap_or(3)),
    };
    if let Some(r) = ready_fd {
        if keep_fds.contains(&r) || (bundle.is_some() && key == KeySource::Fd(r)) {
            return Err(format!(
                "--ready-fd {r} is also the key descriptor or a --keep-fd one; use a descriptor of its own"
            ));
        }
    }
    if let (Some(_), KeySource::Fd(fd)) = (&bundle, &key) {
        if keep_fds.contains(fd) {
            return Err(format!(
                "--keep-fd {fd} is the key descriptor, which is always closed before COMMAND starts"
            ));
        }
    }
    Ok(Parsed::Run(
        Box::new(Options {
            bundle,
            key,
            key_timeout: key_timeout.unwrap_or(Duration::from_secs(5)),
            policy,
            map_exit,
            pdeathsig,
            setup,
            keep_fds,
            remove_bundle,
            expect_label,
            expect_repo,
            mask,
            ready_fd,
            command,
        }),
        level.unwrap_or(LevelFilter::WARN),
    ))
}

fn text(v: &OsString) -> Result<&str, String> {
    v.to_str()
        .ok_or_else(|| format!("{v:?} is not valid UTF-8"))
}

fn fd_number(v: &OsString) -> Result<i32, String> {
    match text(v)?.parse::<i32>() {
        Ok(0) => Ok(0),
        Ok(1 | 2) => Err("--key-fd cannot be 1 or 2 (stdout/stderr); use 0 or 3 and above".into()),
        Ok(n) if n >= 3 => Ok(n),
        _ => Err(format!(
            "--key-fd {v:?} is not a descriptor number (0, or 3 and above)"
        )),
    }
}

/// The longest `--grace` or `--key-timeout`: one year. Longer ones
/// overflow a monotonic clock deadline.
const MAX_SECS: u64 = 365 * 86_400;

fn timeout(v: &OsString) -> Result<Duration, String> {
    match text(v)?.parse::<u64>() {
        Ok(n) if (1..=MAX_SECS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "--key-timeout {v:?} is not a number of seconds from 1 to {MAX_SECS}"
        )),
    }
}

fn keep_fd(v: &OsString) -> Result<i32, String> {
    match text(v)?.parse::<i32>() {
        Ok(n) if n >= 3 => Ok(n),
        _ => Err(format!(
            "--keep-fd {v:?} is not a descriptor number of 3 or above"
        )),
    }
}

fn grace(v: &OsString) -> Result<Duration, String> {
    match text(v)?.parse::<u64>() {
        Ok(n) if n <= MAX_SECS => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "--grace {v:?} is not a whole number of seconds from 0 to {MAX_SECS}"
        )),
    }
}

fn exit_map(v: &OsString) -> Result<(i32, i32), String> {
    let bad = || format!("--map-exit {v:?} is not CODE=NEW with codes 0-255 (e.g. 143=0)");
    let (from, to) = text(v)?.split_once('=').ok_or_else(bad)?;
    let code = |s: &str| s.parse::<u8>().map(i32::from).map_err(|_| bad());
    Ok((code(from)?, code(to)?))
}

fn log_level(v: &OsString) -> Result<LevelFilter, String> {
    sealinit::logging::parse_level(text(v)?).ok_or_else(|| {
        format!("log level {v:?} is not one of error, warn, info, debug, trace, off")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from), |_| None)
    }

    #[test]
    fn options_stop_at_the_command() {
        let Ok(Parsed::Run(o, _)) = run(&["--bundle", "b", "sh", "-c", "--bundle"]) else {
            panic!("not a run")
        };
        assert_eq!(o.command, ["sh", "-c", "--bundle"]);
        assert_eq!(o.key, KeySource::Fd(3));
        let Ok(Parsed::Run(o, _)) = run(&["--key-fd=0", "--", "-x"]) else {
            panic!("not a run")
        };
        assert_eq!(o.command, ["-x"]);
        assert_eq!(o.key, KeySource::Fd(0));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&[]).unwrap_err().contains("missing COMMAND"));
        assert!(run(&["--"]).unwrap_err().contains("missing COMMAND"));
        assert!(
            run(&["--key-fd", "2", "x"])
                .unwrap_err()
                .contains("cannot be 1 or 2")
        );
        assert!(run(&["--key-fd", "-4", "x"]).is_err());
        assert!(run(&["--log-level", "loud", "x"]).is_err());
        assert!(run(&["--nope", "x"]).unwrap_err().contains("--nope"));
        assert!(
            run(&["--map-exit", "143", "x"])
                .unwrap_err()
                .contains("CODE=NEW")
        );
        assert!(run(&["--map-exit", "256=0", "x"]).is_err());
        assert!(run(&["--grace", "1.5", "x"]).is_err());
        assert!(run(&["--grace", "18446744073709551615", "x"]).is_err());
        assert!(run(&["--grace", "31536001", "x"]).is_err());
        assert!(run(&["--grace", "31536000", "x"]).is_ok());
        assert!(run(&["--key-timeout", "18446744073709551615", "x"]).is_err());
        assert!(run(&["--stop-signal", "NOPE", "x"]).is_err());
        assert!(
            run(&["--keep-fd", "2", "x"])
                .unwrap_err()
                .contains("3 or above")
        );
        let err = run(&["--bundle", "b", "--keep-fd", "3", "x"]).unwrap_err();
        assert!(err.contains("is the key descriptor"), "{err}");
        assert!(
            run(&["--keep-fd", "3", "x"]).is_ok(),
            "no bundle, no key fd"
        );
        assert!(
            run(&["--pdeathsig", "NOPE", "x"])
                .unwrap_err()
                .contains("not a signal")
        );
    }

    #[test]
    fn init_options() {
        let Ok(Parsed::Run(o, _)) = run(&[
            "-g",
            "--grace",
            "3",
            "--map-exit",
            "143=0",
            "--map-exit=1=2",
            "--pdeathsig",
            "SIGUSR1",
            "--setup",
            "echo a",
            "--setup",
            "echo b",
            "cmd",
        ]) else {
            panic!("not a run")
        };
        assert!(o.policy.process_group);
        assert_eq!(o.policy.grace, Duration::from_secs(3));
        assert_eq!(o.map_exit, [(143, 0), (1, 2)]);
        assert_eq!(o.pdeathsig, Some(libc::SIGUSR1));
        assert_eq!(o.setup, ["echo a", "echo b"]);
    }
}
