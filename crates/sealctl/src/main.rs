//! The `sealctl` binary: the orchestrator's side of sealinit.

#![forbid(unsafe_code)]

mod cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sealctl::error::{Error, InitError, Result};
use sealctl::{import, write};
use sealinit::files;
use sealinit_core::bundle::{self, Entry, OpenedBundle};
use sealinit_core::exit;
use sealinit_core::secret::{SecretKey, SecretValue};
use sealinit_core::time;
use sealinit_store::Store;

use serde_json::json;

use cli::{Cli, Command, RunArgs, SealArgs, SecretsCommand, StoreArgs, StoreCommand};

/// How long a key file or fd may take to reach end-of-file.
const KEY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    sealinit::logging::init("sealctl", cli.log_level);
    let outcome = match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::Seal(args) => seal(&args),
        Command::Inspect { path, key, json } => inspect(&path, key.as_deref(), json),
        Command::Store(cmd) => store_command(cmd),
        Command::Secrets(cmd) => secrets_command(cmd),
        Command::Repos { store, json } => repos(&store, json),
        Command::Run(args) => run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn keygen(out: &Path) -> Result<()> {
    let key =
        sealinit_core::secret::SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
    write::create_key_file(out, &key)?;
    eprintln!(
        "sealctl: wrote a new 32-byte key to {} (mode 0600)",
        out.display()
    );
    Ok(())
}

fn seal(args: &SealArgs) -> Result<()> {
    let (entries, key, label) = match (&args.from_env_file, &args.from_json, &args.repo) {
        (Some(path), _, _) => (import::from_env_file(path)?, None, args.label.clone()),
        (None, Some(path), _) => (import::from_json_file(path)?, None, args.label.clone()),
        (None, None, Some(repo)) => {
            sealinit_store::validate_repo(repo)?;
            let entries = open_store(&args.store)?.entries(repo)?;
            let key = SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
            let key_out = args
                .key_out
                .as_deref()
                .expect("clap: --repo requires --key-out");
            (
                entries,
                Some((key, key_out)),
                Some(args.label.clone().unwrap_or_else(|| repo.clone())),
            )
        }
        (None, None, None) => unreachable!("clap requires one input"),
    };
    let (key, new_key_path) = match key {
        Some((key, path)) => (key, Some(path)),
        None => {
            let path = args.key.as_deref().ok_or_else(|| {
                Error::usage("--key PATH is required with --from-env-file or --from-json")
            })?;
            (
                files::read_key_file(path, "key file", false, KEY_TIMEOUT, None)?,
                None,
            )
        }
    };
    let (sealed, header) = write::seal_now(&key, &entries, &args.allow_name, label, args.ttl)?;
    let count = entries.len();
    drop(entries);
    if let Some(path) = new_key_path {
        write::create_key_file(path, &key)?;
    }
    if let Err(e) = write::write_atomic(&args.out, &sealed) {
        if let Some(path) = new_key_path {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    eprintln!(
        "sealctl: sealed {} secrets into {}{}",
        count,
        args.out.display(),
        header
            .expires
            .map_or(String::new(), |e| format!(", expires {}", time::rfc3339(e)))
    );
    Ok(())
}

fn store_path(args_store: Option<&Path>) -> Result<PathBuf> {
    match args_store {
        Some(p) => Ok(p.to_owned()),
        None => sealinit_store::default_path().ok_or_else(|| {
            Error::usage("no --store given and neither XDG_DATA_HOME nor HOME is set")
        }),
    }
}

/// The master key from `--master-key PATH` (which must be 0600) or
/// `--master-key-fd N`.
fn master_key(args: &StoreArgs) -> Result<SecretKey> {
    match (&args.master_key, args.master_key_fd) {
        (Some(path), _) => Ok(files::read_key_file(
            path,
            "master key file",
            true,
            KEY_TIMEOUT,
            None,
        )?),
        (None, Some(fd)) => {
            sealinit::files::read_inherited_key(fd, KEY_TIMEOUT, None).map_err(|source| {
                InitError::Key {
                    source_name: format!("master key fd {fd}"),
                    source,
                }
                .into()
            })
        }
        (None, None) => Err(Error::usage(
            "the store needs its master key: --master-key PATH or --master-key-fd N (or SEALCTL_MASTER_KEY)",
        )),
    }
}

fn open_store(args: &StoreArgs) -> Result<Store> {
    let path = store_path(args.store.as_deref())?;
    let key = master_key(args)?;
    Ok(Store::open(&path, key)?)
}

fn store_command(cmd: StoreCommand) -> Result<()> {
    match cmd {
        StoreCommand::Init { store, master_key } => {
            let path = store_path(store.as_deref())?;
            if path.exists() {
                return Err(Error::OutputExists { path });
            }
            let key = SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
            write::create_key_file(&master_key, &key)?;
            if let Err(e) = Store::create(&path, &key) {
                let _ = std::fs::remove_file(&master_key);
                return Err(e.into());
            }
            eprintln!(
                "sealctl: created store {} and master key {} (mode 0600); keep the key apart from the store",
                path.display(),
                master_key.display()
            );
            Ok(())
        }
        StoreCommand::RotateMasterKey { store, new } => {
            let mut st = open_store(&store)?;
            let key = SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
            write::create_key_file(&new, &key)?;
            match st.rotate(&key) {
                Ok(n) => {
                    eprintln!(
                        "sealctl: re-encrypted {n} secrets under {}; the old master key no longer opens the store",
                        new.display()
                    );
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&new);
                    Err(e.into())
                }
            }
        }
    }
}

fn secrets_command(cmd: SecretsCommand) -> Result<()> {
    match cmd {
        SecretsCommand::Set {
            store,
            repo,
            name,
            from_env_file,
        } => {
            sealinit_store::validate_repo(&repo)?;
            let entries = match (name, from_env_file) {
                (_, Some(path)) => import::from_env_file(&path)?,
                (Some(name), None) => vec![Entry {
                    name,
                    value: read_value_from_stdin()?,
                }],
                (None, None) => unreachable!("clap requires NAME or --from-env-file"),
            };
            bundle::validate_each(&entries)?;
            for e in &entries {
                if bundle::changes_code_loading(&e.name) {
                    tracing::warn!(
                        "{} changes how programs load code: sealing it will need --allow-name {}",
                        e.name,
                        e.name
                    );
                }
            }
            open_store(&store)?.set_many(&repo, &entries)?;
            eprintln!("sealctl: set {} secret(s) in {repo}", entries.len());
            Ok(())
        }
        SecretsCommand::List { store, repo, json } => {
            let list = open_store(&store)?.list(&repo)?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                writeln!(out, "{:#}", json!(list))
            } else {
                list.iter().try_for_each(|s| {
                    writeln!(
                        out,
                        "{:<32} {:>8} bytes  v{:<4} updated {}",
                        s.name,
                        s.size,
                        s.version,
                        time::rfc3339(s.updated_at as u64)
                    )
                })
            };
            written.map_err(stdout_err)
        }
        SecretsCommand::Rm { store, repo, names } => {
            open_store(&store)?.remove(&repo, &names)?;
            eprintln!("sealctl: removed {} secret(s) from {repo}", names.len());
            Ok(())
        }
    }
}

fn repos(store: &StoreArgs, as_json: bool) -> Result<()> {
    let list = open_store(store)?.repos()?;
    let mut out = std::io::stdout().lock();
    let written = if as_json {
        let doc: Vec<_> = list
            .iter()
            .map(|(r, n)| json!({"repo": r, "secrets": n}))
            .collect();
        writeln!(out, "{:#}", json!(doc))
    } else {
        list.iter()
            .try_for_each(|(r, n)| writeln!(out, "{r:<40} {n} secret(s)"))
    };
    written.map_err(stdout_err)
}

fn run(args: RunArgs) -> Result<()> {
    sealinit_store::validate_repo(&args.repo)?;
    let st = open_store(&args.store)?;
    let opts = sealctl::local::RunOptions {
        repo: args.repo,
        sealinit: args.sealinit,
        pid_namespace: args.pid_namespace,
        ttl: args.ttl,
        allow_names: args.allow_name,
        sealinit_args: args.sealinit_args,
        command: args.command,
    };
    let code = sealctl::local::run(st, &opts)?;
    std::process::exit(code);
}

/// The value of `secrets set`: all of stdin, without one trailing newline.
/// A terminal is refused: typing the value would echo it.
fn read_value_from_stdin() -> Result<SecretValue> {
    if sealinit_sys::is_terminal(0) {
        return Err(Error::usage(
            "the value is read from stdin, which is a terminal (it would echo); pipe it in, e.g. `printf %s \"$VALUE\" | sealctl secrets set ...`",
        ));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).map_err(|source| {
        InitError::Input {
            what: "value on",
            path: "standard input".into(),
            source,
        }
    })?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(SecretValue::from(std::mem::take(&mut *buf)))
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::Output {
        path: "standard output".into(),
        source: e,
    }
}

fn inspect(path: &Path, key: Option<&Path>, as_json: bool) -> Result<()> {
    let buf = files::read_bundle(path)?;
    let bundle_err = |source| InitError::Bundle {
        path: path.to_owned(),
        source,
    };
    let layout = bundle::parse(buf.expose()).map_err(bundle_err)?;
    let now = time::now();
    let h = &layout.header;
    let expired = h.is_expired(now);
    let opened = match key {
        Some(k) => {
            let key = files::read_key_file(k, "key file", false, KEY_TIMEOUT, None)?;
            Some(OpenedBundle::open(&key, buf, None).map_err(bundle_err)?)
        }
        None => None,
    };

    let mut out = std::io::stdout().lock();
    let result = if as_json {
        let entries = opened.as_ref().map(|o| {
            o.entries()
                .map(|e| json!({"name": e.name(), "size": e.value().len()}))
                .collect::<Vec<_>>()
        });
        let doc = json!({
            "path": path,
            "version": h.version,
            "created": h.created,
            "expires": h.expires,
            "expired": expired,
            "label": h.label,
            "payload_bytes": layout.payload_len,
            "verified": opened.is_some(),
            "entries": entries,
        });
        writeln!(out, "{doc:#}")
    } else {
        (|| {
            writeln!(out, "bundle:   {}", path.display())?;
            writeln!(out, "format:   sealinit bundle v{}", h.version)?;
            writeln!(out, "created:  {}", time::rfc3339(h.created))?;
            match h.expires {
                None => writeln!(out, "expires:  never")?,
                Some(e) if expired => writeln!(out, "expires:  {} (EXPIRED)", time::rfc3339(e))?,
                Some(e) => writeln!(out, "expires:  {}", time::rfc3339(e))?,
            }
            match &h.label {
                None => writeln!(out, "label:    (none)")?,
                Some(l) => writeln!(out, "label:    {l:?}")?,
            }
            writeln!(out, "payload:  {} bytes, encrypted", layout.payload_len)?;
            match &opened {
                None => writeln!(out, "verified: no (pass --key to verify and list names)")?,
                Some(o) => {
                    writeln!(out, "verified: yes, {} entries", o.len())?;
                    for e in o.entries() {
                        writeln!(out, "  {:<32} {} bytes", e.name(), e.value().len())?;
                    }
                }
            }
            Ok(())
        })()
    };
    result.map_err(|e| Error::Output {
        path: "standard output".into(),
        source: e,
    })
}
