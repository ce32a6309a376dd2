//! The `sealctl` binary: the orchestrator's side of sealinit.

mod cli;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use sealinit::bundle::{self, Header, OpenedBundle};
use sealinit::error::{Error, Result, exit};
use sealinit::{files, import, time};
use serde_json::json;

use cli::{Cli, Command, SealArgs};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    sealinit::logging::init(cli.log_level);
    let outcome = match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::Seal(args) => seal(&args),
        Command::Inspect { path, key, json } => inspect(&path, key.as_deref(), json),
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
    let key = sealinit::secret::SecretKey::generate().map_err(|e| Error::os("getrandom", e))?;
    files::create_key_file(out, &key)?;
    eprintln!(
        "sealctl: wrote a new 32-byte key to {} (mode 0600)",
        out.display()
    );
    Ok(())
}

fn seal(args: &SealArgs) -> Result<()> {
    let entries = match (&args.from_env_file, &args.from_json) {
        (Some(path), _) => import::from_env_file(path)?,
        (None, Some(path)) => import::from_json_file(path)?,
        (None, None) => unreachable!("clap requires one input"),
    };
    bundle::validate_entries(&entries)?;
    bundle::check_name_policy(&entries, &args.allow_name)?;
    let key = files::read_key_file(&args.key)?;
    let now = time::now();
    let expires = args.ttl.map(|ttl| now.saturating_add(ttl.as_secs()));
    let header = Header::new(now, expires, args.label.clone());
    let mut nonce = [0u8; bundle::NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Error::os("getrandom", std::io::Error::other(e)))?;
    let sealed = bundle::seal(&key, &header, &entries, &nonce).map_err(|source| Error::Bundle {
        path: args.out.clone(),
        source,
    })?;
    let count = entries.len();
    drop(entries);
    files::write_atomic(&args.out, &sealed)?;
    eprintln!(
        "sealctl: sealed {} secrets into {}{}",
        count,
        args.out.display(),
        expires.map_or(String::new(), |e| format!(", expires {}", time::rfc3339(e)))
    );
    Ok(())
}

fn inspect(path: &Path, key: Option<&Path>, as_json: bool) -> Result<()> {
    let buf = files::read_bundle(path)?;
    let bundle_err = |source| Error::Bundle {
        path: path.to_owned(),
        source,
    };
    let layout = bundle::parse(buf.expose()).map_err(bundle_err)?;
    let now = time::now();
    let h = &layout.header;
    let expired = h.is_expired(now);
    let opened = match key {
        Some(k) => {
            let key = files::read_key_file(k)?;
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
