//! `sealctl --server URL COMMAND`: the store's commands against the
//! service, with the local store's output and exit codes.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use sealctl::error::{Error, Result};
use sealctl::remote::{Format, Remote};

use crate::cli::{Command, ReposCommand, SecretsCommand};
use crate::{DEFAULT_TTL, Ttl, key_out, read_value_from_stdin, stdout_err, warn_rule};

/// The token: `--token-file`, else `SEALCTL_TOKEN`.
fn token(token_file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!(
                "--token-file {}: {}",
                path.display(),
                sealinit_core::describe_io(&e)
            ))
        })?;
        return Ok(Zeroizing::new(text.trim().to_owned()));
    }
    std::env::var("SEALCTL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Zeroizing::new)
        .ok_or_else(|| Error::usage("--server needs a token: --token-file PATH or SEALCTL_TOKEN"))
}

fn local_only(what: &str) -> Error {
    Error::usage(format!(
        "{what} works on a local store only; drop --server (and SEALCTL_SERVER)"
    ))
}

fn print_lines(lines: &[Value]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}").map_err(stdout_err)?;
    }
    Ok(())
}

pub fn run(
    server: &str,
    token_file: Option<&Path>,
    ca: Option<&Path>,
    command: Command,
) -> Result<()> {
    let remote = Remote::new(server, token(token_file)?, ca)?;
    match command {
        Command::Secrets(cmd) => secrets(&remote, cmd),
        Command::Repos {
            command: None,
            json,
            ..
        } => {
            let list = remote.repos()?;
            let mut out = std::io::stdout().lock();
            let written = match json {
                true => writeln!(out, "{:#}", json!(list)),
                false => list.iter().try_for_each(|r| {
                    writeln!(
                        out,
                        "{:<40} {} secret(s)",
                        r["repo"].as_str().unwrap_or(""),
                        r["secrets"]
                    )
                }),
            };
            written.map_err(stdout_err)
        }
        Command::Repos {
            command:
                Some(ReposCommand::Egress {
                    repo,
                    default,
                    allow,
                    json,
                    ..
                }),
            ..
        } => {
            let path = format!("/repos/{}/egress", sealctl::remote::repo_path(&repo)?);
            let doc = match crate::egress_change(default.as_deref(), allow) {
                Some(p) => remote.call("PUT", &path, Some(json!(p)), None)?,
                None => remote.call("GET", &path, None, None)?,
            };
            let policy = serde_json::from_value(doc).map_err(|e| Error::Remote {
                status: 0,
                message: format!("the service sent a malformed policy: {e}"),
            })?;
            crate::print_egress(&policy, json)
        }
        Command::Repos {
            command: Some(ReposCommand::Create { repo, json, .. }),
            ..
        } => {
            let done = remote.create_repo(&repo)?;
            if json {
                print_lines(std::slice::from_ref(&done))?;
            }
            eprintln!("sealctl: created repository {repo}");
            Ok(())
        }
        Command::Repos {
            command: Some(ReposCommand::Rm { repo, json, .. }),
            ..
        } => {
            let done = remote.remove_repo(&repo)?;
            if json {
                print_lines(std::slice::from_ref(&done))?;
            }
            eprintln!(
                "sealctl: removed repository {} and its {} secret(s)",
                done["repo"].as_str().unwrap_or(&repo),
                done["removed"]
            );
            Ok(())
        }
        Command::Seal(args) => {
            let Some(repo) = args.repo.as_deref() else {
                unreachable!("sealing from a file runs locally");
            };
            let out = key_out(&args)?;
            let proxy_out = crate::proxy_key_out(&args)?;
            let ttl = match args.ttl {
                Some(Ttl::Never) => None,
                Some(Ttl::After(d)) => Some(d),
                None => Some(DEFAULT_TTL),
            };
            let minted = remote.mint(
                repo,
                args.environment.as_deref(),
                args.label.as_deref(),
                ttl,
                args.allow_empty,
            )?;
            match (&minted.proxy, args.proxy_out.as_deref(), proxy_out) {
                (Some((bundle, key)), Some(path), Some(key_out)) => {
                    crate::write_part(path, bundle, key, key_out, "--proxy-out")?
                }
                (Some(_), _, _) => {
                    return Err(Error::usage(format!(
                        "{repo} has secrets that go to the egress proxy, in a part of their own: pass --proxy-out PATH and --proxy-key-out PATH (or --proxy-key-out-fd N); the bundle minted is not written"
                    )));
                }
                (None, Some(path), _) => eprintln!(
                    "sealctl: {repo} has no proxy secrets; {} is not written",
                    path.display()
                ),
                (None, None, _) => {}
            }
            let report = json!({
                "out": args.out,
                "label": minted.label,
                "created": minted.created_at,
                "expires": minted.expires_at,
                "secrets": minted.names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
            });
            crate::deliver(
                &args,
                &minted.bundle,
                &minted.key,
                Some(out),
                &report,
                minted.names.len(),
                minted.expires_at.clone(),
            )
        }
        Command::Run(mut args) => {
            sealinit_store::validate_repo(&args.repo)?;
            if let Some(fd) = args.ready_fd {
                args.sealinit_args
                    .extend(["--ready-fd".into(), fd.to_string().into()]);
            }
            let minted = remote.mint(
                &args.repo,
                args.environment.as_deref(),
                None,
                Some(args.ttl),
                args.allow_empty,
            )?;
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
            let proxy = minted.proxy.map(|(b, k)| (b.to_vec(), k, None));
            let code = sealctl::local::run_bundle(
                &minted.bundle,
                minted.key,
                &minted.label,
                proxy,
                &opts,
            )?;
            std::process::exit(code);
        }
        Command::Audit {
            action: Some(_), ..
        } => Err(local_only("audit export and audit prune")),
        Command::Audit {
            repo,
            since,
            launch,
            json,
            ..
        } => {
            let since = crate::parse_since(since.as_deref())?;
            let records = remote.audit(repo.as_deref(), since)?;
            let mut out = std::io::stdout().lock();
            let of_launch = |r: &&Value| match launch.as_deref() {
                None => true,
                Some(l) => match r["action"].as_str() {
                    Some("egress") => r["detail"]["launch"] == l,
                    Some("seal") => r["detail"]["label"] == l,
                    _ => false,
                },
            };
            for r in records.iter().filter(of_launch) {
                let line = match json {
                    true => r.to_string(),
                    false => format!(
                        "{}  {:<18} {:<10} {:<30} {}",
                        r["at"].as_str().unwrap_or(""),
                        r["action"].as_str().unwrap_or(""),
                        r["actor"].as_str().unwrap_or(""),
                        r["repo"].as_str().unwrap_or(""),
                        r["detail"]
                    ),
                };
                writeln!(out, "{line}").map_err(stdout_err)?;
            }
            Ok(())
        }
        Command::Keygen { .. } | Command::Inspect { .. } | Command::Proxy(_) => {
            unreachable!("file commands and the proxy run locally")
        }
        Command::Store(_) => Err(local_only("store")),
        Command::Serve(_) => Err(local_only("serve")),
        Command::Tokens(_) => Err(local_only("tokens")),
    }
}

fn secrets(remote: &Remote, cmd: SecretsCommand) -> Result<()> {
    match cmd {
        SecretsCommand::Set {
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
            ..
        } => {
            let repo = at.key();
            let whole = route.change();
            let read = |p: &Path| {
                std::fs::read(p).map(Zeroizing::new).map_err(|e| {
                    Error::usage(format!(
                        "{}: {}",
                        p.display(),
                        sealinit_core::describe_io(&e)
                    ))
                })
            };
            // An import error names the file, as the local store's does.
            let named = |what: &str, p: &Path| {
                let shown = format!("{what} {}: ", p.display());
                move |e: Error| match e {
                    Error::Remote {
                        status: 422,
                        message,
                    } if message.starts_with("import: ") => Error::Remote {
                        status: 422,
                        message: message.replacen("import: ", &shown, 1),
                    },
                    other => other,
                }
            };
            let (allow, names) = (&allow_production, &allow_name);
            let done = match (name, from_env_file, from_json) {
                (_, Some(p), _) => remote
                    .import(
                        &repo,
                        Format::Env { expand },
                        &read(&p)?,
                        allow,
                        names,
                        &whole,
                    )
                    .map_err(named("env file", &p))?,
                (_, None, Some(p)) => remote
                    .import(&repo, Format::Json, &read(&p)?, allow, names, &whole)
                    .map_err(named("JSON file", &p))?,
                (Some(name), None, None) => {
                    let value = read_value_from_stdin(allow_empty)?;
                    let flags = sealctl::remote::SetOne {
                        if_version,
                        allow_production: allow.contains(&name),
                        allow_name: names.contains(&name),
                        route: &whole,
                    };
                    vec![remote.set_one(&repo, &name, value.expose(), flags)?]
                }
                (None, None, None) => unreachable!("clap requires NAME or an input file"),
            };
            for d in &done {
                let name = d["name"].as_str().unwrap_or("");
                for rule in d["warnings"].as_array().into_iter().flatten() {
                    warn_rule(name, rule.as_str().unwrap_or(""));
                }
            }
            if json {
                print_lines(&done)?;
            }
            eprintln!("sealctl: set {} secret(s) in {repo}", done.len());
            Ok(())
        }
        SecretsCommand::List { deleted: true, .. } => Err(local_only("secrets list --deleted")),
        SecretsCommand::List { at, json, .. } => {
            let repo = at.key();
            let list = remote.list(&repo)?;
            let mut out = std::io::stdout().lock();
            let written = match json {
                true => writeln!(out, "{:#}", json!(list)),
                false => list.iter().try_for_each(|s| {
                    writeln!(
                        out,
                        "{:<32} {:>8} bytes  v{:<4} updated {}  {}",
                        s["name"].as_str().unwrap_or(""),
                        s["size"].as_u64().unwrap_or(0),
                        s["version"].as_i64().unwrap_or(0),
                        s["updated_at"].as_str().unwrap_or(""),
                        route_text(s)
                    )
                }),
            };
            written.map_err(stdout_err)
        }
        SecretsCommand::Rm {
            at, names, json, ..
        } => {
            let repo = at.key();
            // Every name must exist before any goes (as the local store's
            // one transaction); the service removes them one by one.
            let versions = names
                .iter()
                .map(|n| {
                    remote
                        .get(&repo, n)
                        .map(|m| m["version"].clone())
                        .map_err(|e| match e {
                            Error::Remote { status: 404, .. } => {
                                sealinit_store::StoreError::NoSuchSecret {
                                    repo: repo.clone(),
                                    name: n.clone(),
                                }
                                .into()
                            }
                            other => other,
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            for n in &names {
                remote.remove(&repo, n)?;
            }
            if json {
                let lines: Vec<Value> = names
                    .iter()
                    .zip(versions)
                    .map(|(n, v)| json!({"repo": repo, "name": n, "version": v, "removed": true}))
                    .collect();
                print_lines(&lines)?;
            }
            eprintln!("sealctl: removed {} secret(s) from {repo}", names.len());
            Ok(())
        }
        SecretsCommand::History { at, name, json, .. } => {
            let repo = at.key();
            let history = remote.history(&repo, &name)?;
            match json {
                true => print_lines(&history),
                false => {
                    let mut out = std::io::stdout().lock();
                    for h in &history {
                        writeln!(
                            out,
                            "v{:<4} {}  {:<12} {} bytes{}",
                            h["version"],
                            h["at"].as_str().unwrap_or(""),
                            h["actor"].as_str().unwrap_or(""),
                            h["size"],
                            if h["deleted"] == json!(true) {
                                " (deleted)"
                            } else {
                                ""
                            }
                        )
                        .map_err(stdout_err)?;
                    }
                    Ok(())
                }
            }
        }
        SecretsCommand::Rollback {
            at, name, to, json, ..
        } => {
            let repo = at.key();
            let done = remote.rollback(&repo, &name, to)?;
            if json {
                print_lines(std::slice::from_ref(&done))?;
            }
            eprintln!(
                "sealctl: {name} of {repo} is now version {} (the value of version {to})",
                done["version"]
            );
            Ok(())
        }
        SecretsCommand::Scan { .. } => Err(local_only("secrets scan")),
    }
}

/// A listed secret's route as `secrets list` shows it.
fn route_text(s: &Value) -> String {
    let route = sealinit_store::Route {
        delivery: s["delivery"]
            .as_str()
            .and_then(sealinit_store::Delivery::parse)
            .unwrap_or_default(),
        hosts: s["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect(),
        placeholder: Default::default(),
        in_body: s["in_body"].as_bool().unwrap_or_default(),
        repos: None,
    };
    route.to_string()
}
