//! The `sealctl` binary: the orchestrator's side of sealinit.

#![forbid(unsafe_code)]

/// Every block freed is wiped first: values pass through buffers sealctl
/// does not own (hyper's, the matchers of the egress proxy), and none may
/// linger in freed heap.
#[global_allocator]
static ALLOC: sealinit_core::locked::WipeOnFree = sealinit_core::locked::WipeOnFree;

mod cli;
mod remote_cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sealctl::error::{Error, InitError, Result};
use sealctl::import;
use sealctl::stores::Location;
use sealctl::write::{self, Lasting};
use sealinit::files;
use sealinit_core::bundle::{self, Entry, Header, OpenedBundle};
use sealinit_core::exit;
use sealinit_core::secret::{SecretKey, SecretValue};
use sealinit_core::time;
use sealinit_store::{MasterKey, SetOptions, Store};

use serde_json::json;

use cli::{
    AuditCommand, Cli, Command, ReposCommand, RunArgs, SealArgs, SecretsCommand, ServeArgs,
    StoreArgs, StoreCommand, TokensCommand, Ttl,
};

/// The lifetime of a bundle sealed from the store, unless `--ttl` says
/// otherwise: `seal --repo` and `run` alike.
const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(300);

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
    // The service logs through tracing-subscriber (human or JSON).
    if !matches!(cli.command, Command::Serve(_)) {
        sealinit::logging::init("sealctl", cli.log_level);
    }
    // Commands on files only (keygen, inspect, seal from a file) need no
    // store and run here even with --server.
    let on_files = matches!(
        &cli.command,
        Command::Keygen { .. } | Command::Inspect { .. } | Command::Proxy(_)
    ) || matches!(&cli.command, Command::Seal(a) if a.repo.is_none());
    let servers = cli.server.join(",");
    if let Some(server) = Some(servers.as_str()).filter(|s| !s.is_empty() && !on_files) {
        let outcome = remote_cli::run(
            server,
            cli.token_file.as_deref(),
            cli.server_ca.as_deref(),
            cli.command,
        );
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealctl: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let outcome = match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::Seal(args) => seal(&args),
        Command::Inspect { path, key, json } => inspect(&path, key.as_deref(), json),
        Command::Store(cmd) => store_command(cmd),
        Command::Secrets(cmd) => secrets_command(cmd),
        Command::Repos {
            command: None,
            store,
            json,
        } => repos(&store, json),
        Command::Repos {
            command: Some(ReposCommand::Rm { store, repo, json }),
            ..
        } => repos_rm(&store, &repo, json),
        Command::Repos {
            command: Some(ReposCommand::Create { store, repo, json }),
            ..
        } => repos_create(&store, &repo, json),
        Command::Repos {
            command:
                Some(ReposCommand::Egress {
                    store,
                    repo,
                    default,
                    allow,
                    json,
                }),
            ..
        } => repos_egress(
            &store,
            &repo,
            egress_change(default.as_deref(), allow),
            json,
        ),
        Command::Run(args) => run(args),
        Command::Proxy(opts) => sealctl::proxy::run(opts),
        Command::Audit {
            action: Some(action),
            ..
        } => audit_command(action),
        Command::Audit {
            action: None,
            store,
            repo,
            since,
            launch,
            json,
        } => audit(
            &store,
            repo.as_deref(),
            since.as_deref(),
            launch.as_deref(),
            json,
        ),
        Command::Serve(args) => {
            let json = args.log_format == "json";
            return match serve(args, cli.log_level) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // `--log-format json`: every line of the service is JSON.
                    match json {
                        true => eprintln!(
                            "{}",
                            serde_json::json!({"level": "ERROR", "fields": {"message": e.to_string()}})
                        ),
                        false => eprintln!("sealctl: {e}"),
                    }
                    ExitCode::from(e.exit_code())
                }
            };
        }
        Command::Tokens(cmd) => tokens_command(cmd),
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
    write::create_key_file(out, &key, Lasting::Durable)?;
    eprintln!(
        "sealctl: wrote a new 32-byte key to {} (mode 0600)",
        out.display()
    );
    Ok(())
}

/// Where `seal --repo` writes the fresh key.
enum KeyOut<'a> {
    File(&'a Path),
    Stdout,
    /// Claimed when the arguments are read, before sealctl opens anything
    /// (a store's files could otherwise take that number and get the key).
    Fd(std::os::fd::OwnedFd, i32),
}

fn seal(args: &SealArgs) -> Result<()> {
    let entries = match (&args.from_env_file, &args.from_json, &args.repo) {
        (_, _, Some(repo)) => return seal_repo(args, repo),
        (Some(path), _, _) => import::from_env_file(path, args.expand)?,
        (None, Some(path), _) => import::from_json_file(path)?
            .into_iter()
            .map(|(e, _)| e)
            .collect(),
        (None, None, None) => unreachable!("clap requires one input"),
    };
    seal_files(args, entries)
}

/// `seal --repo`: the launch's parts under fresh keys, the sandbox's to
/// --out and its key to --key-out(-fd), the proxy's (when the repository
/// has proxy secrets) to --proxy-out and --proxy-key-out(-fd).
fn seal_repo(args: &SealArgs, repo: &str) -> Result<()> {
    sealinit_store::validate_repo(repo)?;
    // Descriptors are claimed before the store opens anything.
    let out = key_out(args)?;
    let proxy_out = proxy_key_out(args)?;
    let mut store = open_store(&args.store)?;
    let found = store.secrets_for(repo, args.environment.as_deref(), args.allow_empty)?;
    let mut allow = args.allow_name.clone();
    allow.extend(found.allowed.iter().cloned());
    bundle::check_name_policy(&found.entries, &allow)?;
    let proxied: Vec<&str> = found
        .entries
        .iter()
        .filter(|e| e.delivery == sealinit_store::Delivery::Proxy)
        .map(|e| e.name.as_str())
        .collect();
    let proxy_out = match (proxied.is_empty(), args.proxy_out.as_deref(), proxy_out) {
        (false, Some(path), Some(key)) => Some((path, key)),
        (false, _, _) => {
            return Err(Error::usage(format!(
                "{} of {repo} go to the egress proxy, in a part of their own: pass --proxy-out PATH and --proxy-key-out PATH (or --proxy-key-out-fd N); nothing was sealed",
                proxied.join(", ")
            )));
        }
        (true, Some(path), _) => {
            eprintln!(
                "sealctl: {repo} has no proxy secrets; {} is not written",
                path.display()
            );
            None
        }
        (true, None, _) => None,
    };
    let ttl = match args.ttl {
        Some(Ttl::Never) => None,
        Some(Ttl::After(d)) => Some(d),
        None => Some(DEFAULT_TTL),
    };
    let now = time::now();
    let label = args.label.clone().unwrap_or_else(|| found.repo.clone());
    let header = Header::new(
        now,
        ttl.map(|t| now.saturating_add(t.as_secs())),
        Some(label),
    )
    .with_repo(found.repo.clone());
    let names = found.names_and_versions();
    let secrets: Vec<serde_json::Value> = found
        .entries
        .iter()
        .map(|e| json!({"name": e.name, "size": e.value.len(), "delivery": e.delivery}))
        .collect();
    let found_repo = found.repo.clone();
    let launch = sealinit_store::launch::seal_launch(found, header)?;
    let header = &launch.sandbox.header;
    // A seal is a read of the values: on the record before anything is
    // written out.
    store.record_seal(&found_repo, &names, header.label.as_deref(), header.expires)?;
    let mut report = json!({
        "out": args.out,
        "label": header.label,
        "created": time::rfc3339(header.created),
        "expires": header.expires.map(time::rfc3339),
        "secrets": secrets,
    });
    if let (Some((path, key_out)), Some(part)) = (proxy_out, &launch.proxy) {
        report["proxy_out"] = json!(path);
        write_part(path, &part.bundle, &part.key, key_out, "--proxy-out")?;
    }
    let expires = header.expires.map(time::rfc3339);
    let count = names.len();
    let sandbox = &launch.sandbox;
    deliver(
        args,
        &sandbox.bundle,
        &sandbox.key,
        Some(out),
        &report,
        count,
        expires,
    )
}

/// Where `seal --repo --proxy-out` sends the proxy part's key.
fn proxy_key_out(args: &SealArgs) -> Result<Option<KeyOut<'_>>> {
    let stdout_taken = match (args.json, args.key_out.as_deref()) {
        (true, _) => Some("--json"),
        (false, Some(p)) if p == Path::new("-") => Some("--key-out -"),
        _ => None,
    };
    key_dest(
        "--proxy-key-out",
        args.proxy_key_out.as_deref(),
        args.proxy_key_out_fd,
        stdout_taken,
    )
}

/// A key destination from `FLAG PATH|-` or `FLAG-fd N` (claimed at once,
/// before anything else is opened); `-` is stdout, refused on a terminal
/// or when `stdout_taken` names what else writes there.
fn key_dest<'a>(
    flag: &str,
    path: Option<&'a Path>,
    fd: Option<i32>,
    stdout_taken: Option<&str>,
) -> Result<Option<KeyOut<'a>>> {
    Ok(match (path, fd) {
        (Some(p), _) if p == Path::new("-") => {
            if sealinit_sys::is_terminal(1) {
                return Err(Error::usage(format!(
                    "{flag} - writes 32 raw key bytes to stdout, which is a terminal; pipe it or use {flag}-fd"
                )));
            }
            if let Some(other) = stdout_taken {
                return Err(Error::usage(format!(
                    "{flag} - and {other} both write to stdout; use {flag}-fd or a file"
                )));
            }
            Some(KeyOut::Stdout)
        }
        (Some(p), _) => Some(KeyOut::File(p)),
        (None, Some(fd)) if fd >= 3 => Some(KeyOut::Fd(write::claim_key_fd(fd)?, fd)),
        (None, Some(fd)) => {
            return Err(Error::usage(format!(
                "{flag}-fd {fd}: use a descriptor of 3 or above (or {flag} - for stdout)"
            )));
        }
        (None, None) => None,
    })
}

/// Writes one sealed part and its key; on failure, neither remains.
fn write_part(
    path: &Path,
    bundle: &[u8],
    key: &SecretKey,
    key_out: KeyOut<'_>,
    flag: &str,
) -> Result<()> {
    if let KeyOut::File(k) = &key_out {
        write::create_key_file(k, key, Lasting::Ephemeral)?;
    }
    let written = write::write_bundle(path, bundle).and_then(|()| match key_out {
        KeyOut::Stdout => write::key_to_stdout(key),
        KeyOut::Fd(owned, fd) => write::key_to_fd(owned, fd, key),
        KeyOut::File(_) => Ok(()),
    });
    if written.is_err() {
        let _ = std::fs::remove_file(path);
        tracing::debug!("{flag}: removed after a failed write");
    }
    written
}

/// Where `seal --repo` sends the fresh key.
fn key_out(args: &SealArgs) -> Result<KeyOut<'_>> {
    let taken = args.json.then_some("--json");
    key_dest("--key-out", args.key_out.as_deref(), args.key_out_fd, taken)?
        .ok_or_else(|| unreachable!("clap: --repo requires --key-out or --key-out-fd"))
}

fn seal_files(args: &SealArgs, entries: Vec<Entry>) -> Result<()> {
    // No store: the guard warns, or refuses with --strict.
    match args.strict {
        true => {
            sealinit_store::guard(&entries, &[], &[])?;
        }
        false => {
            let all = entries.iter().map(|e| (e.name.as_str(), e.value.expose()));
            for f in sealinit_guard::check_entries(all) {
                warn_rule(&f.name, f.rule.id);
            }
        }
    }
    let ttl = match args.ttl {
        Some(Ttl::After(d)) => Some(d),
        Some(Ttl::Never) | None => None,
    };
    let path = args.key.as_deref().ok_or_else(|| {
        Error::usage("--key PATH is required with --from-env-file or --from-json")
    })?;
    let key = files::read_key_file(path, "key file", false, KEY_TIMEOUT, None)?;
    let (sealed, header) =
        write::seal_now(&key, &entries, &args.allow_name, args.label.clone(), ttl)?;
    let report = json!({
        "out": args.out,
        "label": header.label,
        "created": time::rfc3339(header.created),
        "expires": header.expires.map(time::rfc3339),
        "secrets": entries
            .iter()
            .map(|e| json!({"name": e.name, "size": e.value.len()}))
            .collect::<Vec<_>>(),
    });
    let count = entries.len();
    drop(entries);
    let expires = header.expires.map(time::rfc3339);
    deliver(args, &sealed, &key, None, &report, count, expires)
}

/// Writes a sealed bundle and its key where `seal` was asked to, then
/// reports.
fn deliver(
    args: &SealArgs,
    sealed: &[u8],
    key: &SecretKey,
    key_out: Option<KeyOut<'_>>,
    report: &serde_json::Value,
    count: usize,
    expires: Option<String>,
) -> Result<()> {
    if let Some(KeyOut::File(path)) = key_out {
        write::create_key_file(path, key, Lasting::Ephemeral)?;
    }
    if let Err(e) = write::write_bundle(&args.out, sealed) {
        if let Some(KeyOut::File(path)) = key_out {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let sent = match key_out {
        Some(KeyOut::Stdout) => write::key_to_stdout(key),
        Some(KeyOut::Fd(owned, fd)) => write::key_to_fd(owned, fd, key),
        _ => Ok(()),
    };
    if let Err(e) = sent {
        let _ = std::fs::remove_file(&args.out);
        return Err(e);
    }
    if args.json {
        writeln!(std::io::stdout().lock(), "{report}").map_err(stdout_err)?;
    }
    eprintln!(
        "sealctl: sealed {} secrets into {}{}",
        count,
        args.out.display(),
        expires.map_or(String::new(), |e| format!(", expires {e}"))
    );
    Ok(())
}

/// The master key in `path` (a file), or each key of the directory
/// `path`, appended to `keys`.
fn keys_from_path(path: &Path, keys: &mut Vec<MasterKey>) -> Result<()> {
    if !path.is_dir() {
        keys.push(MasterKey::new(files::read_key_file(
            path,
            "master key file",
            true,
            KEY_TIMEOUT,
            None,
        )?));
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        Error::usage(format!(
            "cannot list master key directory {}: {}",
            path.display(),
            sealinit_core::describe_io(&e)
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::usage(format!(
            "master key directory {} holds no key file",
            path.display()
        )));
    }
    for f in files {
        keys.push(MasterKey::new(files::read_key_file(
            &f,
            "master key file",
            true,
            KEY_TIMEOUT,
            None,
        )?));
    }
    Ok(())
}

/// The paths the keyring comes from (`--master-key`, else
/// `SEALCTL_MASTER_KEY`): what the service reads again on SIGHUP.
fn keyring_paths(args: &StoreArgs) -> Vec<PathBuf> {
    if !args.master_key.is_empty() || !args.master_key_fd.is_empty() {
        return args.master_key.clone();
    }
    std::env::var_os("SEALCTL_MASTER_KEY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect()
}

/// The keyring: every `--master-key PATH` (a key file, which must be
/// 0600, or a directory of them) and `--master-key-fd N`; without either,
/// `SEALCTL_MASTER_KEY` or `SEALCTL_MASTER_KEY_FD`.
fn keyring(args: &StoreArgs) -> Result<Vec<MasterKey>> {
    let from_path = keys_from_path;
    let from_fd = |fd: i32| -> Result<MasterKey> {
        sealinit::files::read_inherited_key(fd, KEY_TIMEOUT, None)
            .map(MasterKey::new)
            .map_err(|source| {
                InitError::Key {
                    source_name: format!("master key fd {fd}"),
                    source,
                }
                .into()
            })
    };
    let mut keys = Vec::new();
    if !args.master_key.is_empty() || !args.master_key_fd.is_empty() {
        for path in &args.master_key {
            from_path(path, &mut keys)?;
        }
        for &fd in &args.master_key_fd {
            keys.push(from_fd(fd)?);
        }
        return Ok(keys);
    }
    let env_path = std::env::var_os("SEALCTL_MASTER_KEY").filter(|v| !v.is_empty());
    let env_fd = std::env::var("SEALCTL_MASTER_KEY_FD")
        .ok()
        .filter(|v| !v.is_empty());
    match (env_path, env_fd) {
        (Some(_), Some(_)) => Err(Error::usage(
            "SEALCTL_MASTER_KEY and SEALCTL_MASTER_KEY_FD are both set; unset one, or pass --master-key or --master-key-fd",
        )),
        (Some(path), None) => {
            from_path(Path::new(&path), &mut keys)?;
            Ok(keys)
        }
        (None, Some(fd)) => Ok(vec![from_fd(fd.parse().map_err(|_| {
            Error::usage(format!(
                "SEALCTL_MASTER_KEY_FD={fd:?} is not a descriptor number"
            ))
        })?)?]),
        (None, None) => Err(Error::usage(
            "the store needs its master key: --master-key PATH or --master-key-fd N (or SEALCTL_MASTER_KEY)",
        )),
    }
}

fn open_store(args: &StoreArgs) -> Result<Store> {
    let location = Location::parse(args.store.as_deref())?;
    let mut store = location.open(keyring(args)?)?;
    store.set_actor(actor());
    Ok(store)
}

fn serve(args: ServeArgs, level: tracing::level_filters::LevelFilter) -> Result<()> {
    let listen = sealinit_server::Listen::parse(&args.listen).map_err(Error::usage)?;
    let trusted_proxies = sealinit_server::client::TrustedProxies::parse(&args.trusted_proxy)
        .map_err(Error::usage)?;
    let log_json = args.log_format == "json";
    let log_level = level
        .into_level()
        .unwrap_or(tracing::Level::INFO)
        .max(tracing::Level::INFO);
    // Before the store is opened, so that its warnings reach the log.
    sealinit_server::init_logging(log_json, log_level);
    // One more: the audit writer's (group commit of mints' records).
    let stores = (0..=args.connections)
        .map(|_| open_store(&args.store))
        .collect::<Result<Vec<_>>>()?;
    // SIGHUP (or a request that finds a master key missing) reads the
    // key files and directories again.
    let paths = keyring_paths(&args.store);
    let reload = sealinit_server::pool::KeyringReload(std::sync::Arc::new(move || {
        let mut keys = Vec::new();
        for p in &paths {
            keys_from_path(p, &mut keys).map_err(|e| e.to_string())?;
        }
        Ok(keys)
    }));
    let config = sealinit_server::Config {
        listen,
        keyring_reload: Some(reload),
        tls: args.tls_cert.zip(args.tls_key),
        insecure_no_tls: args.insecure_no_tls,
        log_json,
        log_level,
        trusted_proxies,
        request_timeout: args.request_timeout,
        shutdown_timeout: args.shutdown_timeout,
        login_link: args.login_link,
        max_bundle_ttl: args.max_bundle_ttl,
        ..sealinit_server::Config::default()
    };
    sealinit_server::run(config, stores).map_err(Error::from)
}

fn tokens_command(cmd: TokensCommand) -> Result<()> {
    match cmd {
        TokensCommand::Create {
            store,
            name,
            scope,
            ttl,
            may_act_for,
        } => {
            let scopes = scope
                .iter()
                .map(|s| sealinit_server::Scope::parse(s).map(|s| s.to_string()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::usage)?;
            if name.trim().is_empty() || name.len() > 100 {
                return Err(Error::usage("--name: 1 to 100 characters"));
            }
            let made = open_store(&store)?.create_token(&name, &scopes, ttl, may_act_for)?;
            // The token alone on stdout, for a script to capture.
            writeln!(std::io::stdout().lock(), "{}", made.token.as_str()).map_err(stdout_err)?;
            eprintln!(
                "sealctl: token {} ({name}) created with {}{}; it is shown once: keep it now",
                made.row.id,
                scopes.join(" "),
                made.row.expires_at.map_or(String::new(), |e| format!(
                    ", expires {}",
                    time::rfc3339(e as u64)
                ))
            );
            Ok(())
        }
        TokensCommand::List { store, json } => {
            let rows = open_store(&store)?.tokens()?;
            let mut out = std::io::stdout().lock();
            for t in &rows {
                let line = match json {
                    true => json!(t).to_string(),
                    false => format!(
                        "{}  {:<20} {:<30} created {}  expires {}  last used {}{}",
                        t.id,
                        t.name,
                        t.scopes.join(" "),
                        time::rfc3339(t.created_at as u64),
                        t.expires_at
                            .map_or("never".into(), |e| time::rfc3339(e as u64)),
                        t.last_used_at
                            .map_or("never".into(), |e| time::rfc3339(e as u64)),
                        if t.revoked_at.is_some() {
                            "  REVOKED"
                        } else {
                            ""
                        }
                    ),
                };
                writeln!(out, "{line}").map_err(stdout_err)?;
            }
            Ok(())
        }
        TokensCommand::Revoke { store, id } => {
            open_store(&store)?.revoke_token(&id)?;
            eprintln!("sealctl: token {id} revoked");
            Ok(())
        }
    }
}

/// `--since`: Unix seconds, or a duration ago.
fn parse_since(since: Option<&str>) -> Result<Option<i64>> {
    since.map(|s| parse_when("--since", s)).transpose()
}

/// A time given on the command line: Unix seconds, RFC 3339, or a
/// duration ago.
fn parse_when(flag: &str, s: &str) -> Result<i64> {
    if let Some(t) = s.parse::<i64>().ok().or_else(|| time::parse_rfc3339(s)) {
        return Ok(t);
    }
    let ago = time::parse_duration(s).map_err(|e| {
        Error::usage(format!(
            "{flag} {s:?}: RFC 3339 (2026-12-01T00:00:00Z), Unix seconds, or a duration ago ({e})"
        ))
    })?;
    Ok(time::now() as i64 - ago.as_secs() as i64)
}

/// `audit export` and `audit prune`.
fn audit_command(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Export {
            store,
            since,
            until,
        } => {
            let since = parse_since(since.as_deref())?;
            let until = until.map(|u| parse_when("--until", &u)).transpose()?;
            let mut store = open_store(&store)?;
            let mut out = std::io::stdout().lock();
            let (mut after, mut last) = (None, None);
            loop {
                let page = store.audit_page(sealinit_store::AuditQuery {
                    since,
                    until,
                    after,
                    limit: Some(1000),
                    ..Default::default()
                })?;
                for (id, r) in &page {
                    let line = sealinit_server::service::audit_json(*id, r);
                    writeln!(out, "{line}").map_err(stdout_err)?;
                }
                match page.last() {
                    Some((id, _)) => {
                        last = Some(*id);
                        after = Some(*id);
                    }
                    None => break,
                }
                if page.len() < 1000 {
                    break;
                }
            }
            out.flush().map_err(stdout_err)?;
            // Every record up to the last one written is out, if the
            // export took them all from the beginning.
            if let (None, Some(last)) = (since, last) {
                store.audit_exported_through(last)?;
            }
            Ok(())
        }
        AuditCommand::Prune {
            store,
            before,
            force,
        } => {
            let before = parse_when("--before", &before)?;
            let n = open_store(&store)?.audit_prune(before, force)?;
            eprintln!(
                "sealctl: pruned {n} audit record(s) before {}",
                time::rfc3339(before.max(0) as u64)
            );
            Ok(())
        }
    }
}

/// A warning about a value that looks like a production credential: the
/// secret's name and the rule, never the value.
fn warn_rule(name: &str, rule: &str) {
    if let Some(r) = sealinit_guard::RULES.iter().find(|r| r.id == rule) {
        eprintln!(
            "sealctl: warning: {name} looks like {} (rule {rule}); {}",
            r.what, r.advice
        );
    }
}

/// Who is making changes: the OS user (the history and the audit trail
/// name it).
fn actor() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

fn audit(
    store: &StoreArgs,
    repo: Option<&str>,
    since: Option<&str>,
    launch: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let since = parse_since(since)?;
    let records = open_store(store)?.audit(repo, since)?;
    let mut out = std::io::stdout().lock();
    let of_launch = |r: &&sealinit_store::AuditRecord| match launch {
        None => true,
        Some(l) => match r.action.as_str() {
            "egress" => r.detail["launch"] == l,
            "seal" => r.detail["label"] == l,
            _ => false,
        },
    };
    for r in records.iter().filter(of_launch) {
        let line = if as_json {
            json!(r).to_string()
        } else {
            format!(
                "{}  {:<18} {:<10} {:<30} {}",
                time::rfc3339(r.at as u64),
                r.action,
                r.actor,
                r.repo,
                r.detail
            )
        };
        writeln!(out, "{line}").map_err(stdout_err)?;
    }
    Ok(())
}

fn store_command(cmd: StoreCommand) -> Result<()> {
    match cmd {
        StoreCommand::Init {
            store,
            master_key,
            keep,
        } => {
            let location = Location::parse(store.as_deref())?;
            if let Location::Sqlite(path) = &location {
                if path.exists() {
                    return Err(Error::OutputExists { path: path.clone() });
                }
            }
            let key = SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
            write::create_key_file(&master_key, &key, Lasting::Durable)?;
            let key = MasterKey::new(key);
            let id = key.id().to_owned();
            if let Err(e) = location.create(key, keep) {
                let _ = std::fs::remove_file(&master_key);
                return Err(e);
            }
            eprintln!(
                "sealctl: created store {} and master key {} ({id}, mode 0600); keep the key apart from the store",
                location.shown(),
                master_key.display()
            );
            Ok(())
        }
        StoreCommand::Migrate { store } => {
            open_store(&store)?;
            eprintln!(
                "sealctl: store {} is at schema {}",
                Location::parse(store.store.as_deref())?.shown(),
                sealinit_store::SCHEMA_VERSION
            );
            Ok(())
        }
        StoreCommand::RotateMasterKey { store, new, json } => {
            let mut st = open_store(&store)?;
            // A key file made beforehand (and handed to every host first)
            // is used; otherwise a new one is created there.
            let created = !new.exists();
            let key = match created {
                true => {
                    let key = SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
                    write::create_key_file(&new, &key, Lasting::Durable)?;
                    key
                }
                false => {
                    files::read_key_file(&new, "new master key file", true, KEY_TIMEOUT, None)?
                }
            };
            match st.rotate_master_key(MasterKey::new(key)) {
                Ok(r) => {
                    if json {
                        let doc = json!({"primary": r.primary, "previous": r.previous,
                            "rewrapped": r.rewrapped, "new_master_key": new, "created": created});
                        writeln!(std::io::stdout().lock(), "{doc}").map_err(stdout_err)?;
                    }
                    eprintln!(
                        "sealctl: {} ({}) is the primary master key; {} data keys wrapped under it{}",
                        new.display(),
                        r.primary,
                        r.rewrapped,
                        match r.previous.as_slice() {
                            [] => String::new(),
                            p => format!(
                                "; {} still opens the store: once every host has the new key, run `sealctl store retire-master-key {}`",
                                p.join(", "),
                                p.join(" ")
                            ),
                        }
                    );
                    Ok(())
                }
                Err(e) => {
                    if created {
                        let _ = std::fs::remove_file(&new);
                    }
                    Err(e.into())
                }
            }
        }
        StoreCommand::RetireMasterKey { store, id, json } => {
            open_store(&store)?.retire_master_key(&id)?;
            if json {
                writeln!(std::io::stdout().lock(), "{}", json!({"retired": id}))
                    .map_err(stdout_err)?;
            }
            eprintln!("sealctl: retired master key {id}; it no longer opens the store");
            Ok(())
        }
        StoreCommand::RotateDataKey { store, repo, json } => {
            let n = open_store(&store)?.rotate_data_key(&repo)?;
            if json {
                writeln!(
                    std::io::stdout().lock(),
                    "{}",
                    json!({"repo": repo, "reencrypted": n})
                )
                .map_err(stdout_err)?;
            }
            eprintln!("sealctl: {repo}: {n} values re-encrypted under a new data key");
            Ok(())
        }
        StoreCommand::MasterKeys { store, json } => {
            let keys = open_store(&store)?.master_keys()?;
            let mut out = std::io::stdout().lock();
            for k in &keys {
                let line = match json {
                    true => json!(k).to_string(),
                    false => format!(
                        "{}  {:<8} added {}{}",
                        k.id,
                        if k.primary { "primary" } else { "" },
                        time::rfc3339(k.added_at as u64),
                        if k.given { "  (given)" } else { "" }
                    ),
                };
                writeln!(out, "{line}").map_err(stdout_err)?;
            }
            Ok(())
        }
    }
}

fn secrets_command(cmd: SecretsCommand) -> Result<()> {
    match cmd {
        SecretsCommand::Set {
            store,
            at,
            name,
            from_env_file,
            from_json,
            expand,
            allow_name,
            allow_empty,
            allow_production,
            if_version,
            route,
            json,
        } => {
            let repo = at.key();
            sealinit_store::holder::validate_key(&repo)?;
            let whole = route.change();
            // A whole file says NAME= on purpose; a single value may not be
            // empty without --allow-empty.
            let from_file = from_env_file.is_some() || from_json.is_some();
            let parsed = match (name, from_env_file, from_json) {
                (_, Some(path), _) => import::from_env_file(&path, expand)?
                    .into_iter()
                    .map(|e| (e, Default::default()))
                    .collect(),
                (_, None, Some(path)) => import::from_json_file(&path)?,
                (Some(name), None, None) => vec![(
                    Entry::env(name, read_value_from_stdin(allow_empty)?),
                    Default::default(),
                )],
                (None, None, None) => unreachable!("clap requires NAME or an input file"),
            };
            let (entries, routes) = sealinit_store::route::with_whole_route(parsed, &whole);
            let done = open_store(&store)?.set_many(
                &repo,
                &entries,
                SetOptions {
                    allow_names: &allow_name,
                    if_version,
                    allow_production: &allow_production,
                    allow_empty: allow_empty || from_file,
                    routes: &routes,
                },
            )?;
            for d in &done {
                for rule in &d.warnings {
                    warn_rule(&d.name, rule);
                }
                if !d.allowed_production.is_empty() {
                    eprintln!(
                        "sealctl: {} stored although it looks like a production credential ({}), as --allow-production asked; recorded in the audit trail",
                        d.name,
                        d.allowed_production.join(", ")
                    );
                }
            }
            if json {
                let mut out = std::io::stdout().lock();
                for d in &done {
                    writeln!(out, "{}", json!(d)).map_err(stdout_err)?;
                }
            }
            let shown = done.first().map_or(repo.as_str(), |d| d.repo.as_str());
            eprintln!("sealctl: set {} secret(s) in {shown}", done.len());
            Ok(())
        }
        SecretsCommand::Scan { store, repo, json } => {
            let found = open_store(&store)?.scan(repo.as_deref())?;
            let mut out = std::io::stdout().lock();
            for (repo, f) in &found {
                let line = match json {
                    true => json!({"repo": repo, "name": f.name, "rule": f.rule.id, "level": f.rule.level}).to_string(),
                    false => format!("{repo}  {}  {} ({:?}): {}", f.name, f.rule.id, f.rule.level, f.rule.what),
                };
                writeln!(out, "{line}").map_err(stdout_err)?;
            }
            match found.len() {
                0 => Ok(()),
                n => Err(Error::Findings(n)),
            }
        }
        SecretsCommand::History {
            store,
            at,
            name,
            json,
        } => {
            let repo = at.key();
            sealinit_store::holder::validate_key(&repo)?;
            let history = open_store(&store)?.history(&repo, &name)?;
            let mut out = std::io::stdout().lock();
            for h in &history {
                let line = if json {
                    json!(h).to_string()
                } else {
                    let what = if h.deleted {
                        "deleted".to_owned()
                    } else if h.pruned {
                        format!("{} bytes (value dropped by retention)", h.size)
                    } else {
                        format!("{} bytes", h.size)
                    };
                    format!(
                        "v{:<4} {}  {:<12} {what}",
                        h.version,
                        time::rfc3339(h.at as u64),
                        h.actor
                    )
                };
                writeln!(out, "{line}").map_err(stdout_err)?;
            }
            if history.is_empty() {
                return Err(sealinit_store::StoreError::NoSuchSecret { repo, name }.into());
            }
            Ok(())
        }
        SecretsCommand::Rollback {
            store,
            at,
            name,
            to,
            json,
        } => {
            let repo = at.key();
            let done = open_store(&store)?.rollback(&repo, &name, to)?;
            if json {
                writeln!(std::io::stdout().lock(), "{}", json!(done)).map_err(stdout_err)?;
            }
            eprintln!(
                "sealctl: {} of {} is now version {} (the value of version {to})",
                done.name, done.repo, done.version
            );
            Ok(())
        }
        SecretsCommand::List {
            store,
            at,
            deleted: true,
            json,
        } => {
            let list = open_store(&store)?.deleted(&at.key())?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                writeln!(out, "{:#}", json!(list))
            } else {
                list.iter().try_for_each(|d| {
                    let restore = match d.restorable {
                        Some(v) => format!("restore: secrets rollback --to {v}"),
                        None => "no value left to restore (retention)".to_owned(),
                    };
                    writeln!(
                        out,
                        "{:<32} deleted {} by {}  {restore}",
                        d.name,
                        time::rfc3339(d.at as u64),
                        d.actor
                    )
                })
            };
            written.map_err(stdout_err)
        }
        SecretsCommand::List {
            store, at, json, ..
        } => {
            let repo = at.key();
            let list = open_store(&store)?.list(&repo)?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                writeln!(out, "{:#}", json!(list))
            } else {
                list.iter().try_for_each(|s| {
                    writeln!(
                        out,
                        "{:<32} {:>8} bytes  v{:<4} updated {}  {}",
                        s.name,
                        s.size,
                        s.version,
                        time::rfc3339(s.updated_at as u64),
                        s.route
                    )
                })
            };
            written.map_err(stdout_err)
        }
        SecretsCommand::Rm {
            store,
            at,
            names,
            json,
        } => {
            let repo = at.key();
            let removed = open_store(&store)?.remove(&repo, &names)?;
            if json {
                let mut out = std::io::stdout().lock();
                for (name, version) in &removed {
                    let doc =
                        json!({"repo": repo, "name": name, "version": version, "removed": true});
                    writeln!(out, "{doc}").map_err(stdout_err)?;
                }
            }
            eprintln!("sealctl: removed {} secret(s) from {repo}", removed.len());
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
            .map(|r| json!({"repo": r.repo, "secrets": r.secrets, "updated_at": r.updated_at}))
            .collect();
        writeln!(out, "{:#}", json!(doc))
    } else {
        list.iter()
            .try_for_each(|r| writeln!(out, "{:<40} {} secret(s)", r.repo, r.secrets))
    };
    written.map_err(stdout_err)
}

/// The policy `repos egress` flags ask for, if they ask for one.
pub(crate) fn egress_change(
    default: Option<&str>,
    allow: Vec<String>,
) -> Option<sealinit_core::bundle::Egress> {
    if default.is_none() && allow.is_empty() {
        return None;
    }
    Some(sealinit_core::bundle::Egress {
        default: match default {
            Some("deny") => sealinit_core::bundle::EgressDefault::Deny,
            _ => sealinit_core::bundle::EgressDefault::Allow,
        },
        allow,
    })
}

pub(crate) fn print_egress(policy: &sealinit_core::bundle::Egress, as_json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let line = match as_json {
        true => serde_json::to_string(policy).expect("a policy serialises"),
        false => format!(
            "default: {}\nallow:   {}",
            json!(policy.default).as_str().unwrap_or(""),
            match policy.allow.is_empty() {
                true => "(none)".to_owned(),
                false => policy.allow.join(" "),
            }
        ),
    };
    writeln!(out, "{line}").map_err(stdout_err)
}

fn repos_egress(
    store: &StoreArgs,
    repo: &str,
    change: Option<sealinit_core::bundle::Egress>,
    as_json: bool,
) -> Result<()> {
    let mut st = open_store(store)?;
    let policy = match change {
        Some(p) => st.set_egress(repo, p)?,
        None => st.egress(repo)?,
    };
    print_egress(&policy, as_json)
}

fn repos_create(store: &StoreArgs, repo: &str, as_json: bool) -> Result<()> {
    open_store(store)?.create_repo(repo)?;
    if as_json {
        let doc = json!({"repo": repo, "secrets": 0});
        writeln!(std::io::stdout().lock(), "{doc}").map_err(stdout_err)?;
    }
    eprintln!("sealctl: created repository {repo}");
    Ok(())
}

fn repos_rm(store: &StoreArgs, repo: &str, as_json: bool) -> Result<()> {
    let (repo, n) = open_store(store)?.remove_repo(repo)?;
    if as_json {
        let doc = json!({"repo": repo, "removed": n});
        writeln!(std::io::stdout().lock(), "{doc}").map_err(stdout_err)?;
    }
    eprintln!("sealctl: removed repository {repo} and its {n} secret(s)");
    Ok(())
}

fn run(mut args: RunArgs) -> Result<()> {
    sealinit_store::validate_repo(&args.repo)?;
    if let Some(fd) = args.ready_fd {
        if fd < 3 {
            return Err(Error::usage(format!(
                "--ready-fd {fd}: use a descriptor of 3 or above (0-2 are the command's)"
            )));
        }
        args.sealinit_args
            .extend(["--ready-fd".into(), fd.to_string().into()]);
    }
    let st = open_store(&args.store)?;
    let opts = sealctl::local::RunOptions {
        repo: args.repo,
        environment: args.environment.clone(),
        sealinit: args.sealinit,
        pid_namespace: args.pid_namespace,
        sandbox: args.sandbox.then(|| sealctl::sandbox::Sandbox {
            share_net: args.share_net,
            binds: args.bind.clone(),
            proxy: None,
        }),
        ttl: args.ttl,
        allow_names: args.allow_name,
        allow_empty: args.allow_empty,
        sealinit_args: args.sealinit_args,
        command: args.command,
        upstreams: sealctl::proxy::upstreams(&args.proxy_resolve, &args.proxy_upstream_ca)?,
        proxy_control: args.proxy_control.clone(),
    };
    let code = sealctl::local::run(st, &opts)?;
    std::process::exit(code);
}

/// The value of `secrets set`: all of stdin, without one trailing newline.
/// A terminal is refused: typing the value would echo it.
fn read_value_from_stdin(allow_empty: bool) -> Result<SecretValue> {
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
    if buf.is_empty() && !allow_empty {
        return Err(Error::usage(
            "the value on stdin is empty (a forgotten pipe?); nothing was set; pass --allow-empty to store an empty value",
        ));
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
                .map(|e| json!({"name": e.name(), "size": e.value().len(), "delivery": e.delivery()}))
                .collect::<Vec<_>>()
        });
        let doc = json!({
            "path": path,
            "version": h.version,
            "created": h.created,
            "expires": h.expires,
            "expired": expired,
            "label": h.label,
            "repo": h.repo,
            "part": h.part,
            "bindings": h.bindings,
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
            if let Some(r) = &h.repo {
                writeln!(out, "repo:     {r:?}")?;
            }
            if h.part.is_some() {
                writeln!(
                    out,
                    "part:     the egress proxy's (never give it to a sandbox)"
                )?;
            }
            for (name, b) in h.bindings.iter().flatten() {
                writeln!(out, "  binds {name} to {}", b.hosts.join(" "))?;
            }
            writeln!(out, "payload:  {} bytes, encrypted", layout.payload_len)?;
            match &opened {
                None => writeln!(out, "verified: no (pass --key to verify and list names)")?,
                Some(o) => {
                    writeln!(out, "verified: yes, {} entries", o.len())?;
                    for e in o.entries() {
                        writeln!(
                            out,
                            "  {:<32} {} bytes  {}",
                            e.name(),
                            e.value().len(),
                            e.delivery()
                        )?;
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
