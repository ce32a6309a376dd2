//! What the API (and the page) can do, written once below the handlers:
//! the scope check, then one store call, which validates, applies the
//! production-credential guard and writes the audit record. Every function
//! runs on a blocking thread with a store of the pool.

use std::time::Duration;

use serde::Serialize;

use sealinit_core::bundle::{self, Entry, Header};
use sealinit_core::secret::{SecretKey, SecretValue};
use sealinit_store::{AuditRecord, HistoryEntry, SetOptions, SetOutcome, Store, TokenRow};

use crate::error::ApiError;
use crate::scope::{Action, Grants};

/// Who is calling: a live token and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub name: String,
    pub grants: Grants,
    /// The person a token made with `--may-act-for` says it acts for.
    pub on_behalf: Option<String>,
}

impl Caller {
    pub fn from_token(row: &TokenRow) -> Self {
        Self {
            id: row.id.clone(),
            name: row.name.clone(),
            grants: Grants::from_stored(&row.scopes),
            on_behalf: None,
        }
    }

    /// `row` acting for `person` (`X-Sealinit-Actor`): only a token made
    /// with `--may-act-for` may; any other is 403.
    pub fn acting_for(row: &TokenRow, person: Option<String>) -> Result<Self, ApiError> {
        let mut caller = Self::from_token(row);
        if let Some(p) = person {
            if !row.may_act_for {
                return Err(ApiError::forbidden(format!(
                    "token {} may not name who it acts for (X-Sealinit-Actor): only tokens made with --may-act-for may",
                    row.id
                )));
            }
            caller.on_behalf = Some(p);
        }
        Ok(caller)
    }

    /// The actor the history and the audit trail name.
    pub fn actor(&self) -> String {
        match &self.on_behalf {
            Some(p) => format!("{p} via token {} ({})", self.name, self.id),
            None => format!("token {} ({})", self.name, self.id),
        }
    }

    pub fn require(&self, action: Action, repo: &str) -> Result<(), ApiError> {
        match self.grants.allows(action, repo) {
            true => Ok(()),
            false => Err(ApiError::forbidden(format!(
                "token {} may not {} {}",
                self.id,
                match action {
                    Action::Write => "write to",
                    Action::Launch => "mint bundles of",
                    Action::Audit => "read the audit trail of",
                },
                sealinit_store::holder::Holder::of(repo)
            ))),
        }
    }

    fn require_sees(&self, repo: &str) -> Result<(), ApiError> {
        match self.grants.sees(repo) {
            true => Ok(()),
            false => Err(ApiError::forbidden(format!(
                "token {} may not see {} (needs write or launch)",
                self.id,
                sealinit_store::holder::Holder::of(repo)
            ))),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RepoSummary {
    pub repo: String,
    pub secrets: usize,
    /// RFC 3339: the last set, rollback or delete.
    pub updated_at: String,
}

/// A secret's metadata: never its value.
#[derive(Debug, Serialize)]
pub struct SecretMeta {
    pub name: String,
    pub size: usize,
    pub version: i64,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: String,
    /// env, setup or proxy.
    pub delivery: sealinit_store::Delivery,
    /// A proxy secret's hosts (empty for the others).
    pub hosts: Vec<String>,
    /// random or keep-prefix.
    pub placeholder: sealinit_store::Placeholder,
    /// A proxy secret replaced in request bodies too.
    pub in_body: bool,
    /// An organisation's secret: `all` or `selected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<&'static str>,
    /// An organisation's secret with visibility `selected`: the
    /// repositories it reaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_repositories: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct SecretPage {
    pub total_count: usize,
    pub secrets: Vec<SecretMeta>,
}

/// A minted bundle: the sealed bytes and their per-launch key.
pub struct Minted {
    pub bundle: Vec<u8>,
    pub key: SecretKey,
    /// The egress proxy's part and its key, when the repository has proxy
    /// secrets.
    pub proxy: Option<(Vec<u8>, SecretKey)>,
    pub label: String,
    /// The repository, as bound into the bundle.
    pub repo: String,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub names: Vec<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("label", &self.label)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: i64) -> String {
    sealinit_core::time::rfc3339(t.max(0) as u64)
}

pub fn repos(store: &mut Store, caller: &Caller) -> Result<Vec<RepoSummary>, ApiError> {
    Ok(store
        .repos()?
        .into_iter()
        .filter(|r| caller.grants.sees(&r.repo))
        .map(|r| RepoSummary {
            updated_at: rfc3339(r.updated_at),
            repo: r.repo,
            secrets: r.secrets,
        })
        .collect())
}

fn meta(info: sealinit_store::SecretInfo) -> SecretMeta {
    SecretMeta {
        name: info.name,
        size: info.size,
        version: info.version,
        created_at: rfc3339(info.created_at),
        updated_at: rfc3339(info.updated_at),
        updated_by: info.updated_by,
        delivery: info.route.delivery,
        hosts: info.route.hosts,
        placeholder: info.route.placeholder,
        in_body: info.route.in_body,
        visibility: None,
        selected_repositories: None,
    }
}

/// A secret's metadata as held by `key`: an organisation's shows its
/// reach.
fn meta_of(key: &str, info: sealinit_store::SecretInfo) -> SecretMeta {
    let reach = info.route.repos.clone();
    let mut m = meta(info);
    if matches!(
        sealinit_store::holder::Holder::of(key),
        sealinit_store::holder::Holder::Org(_)
    ) {
        m.visibility = Some(if reach.is_some() { "selected" } else { "all" });
        m.selected_repositories = reach;
    }
    m
}

pub fn list_secrets(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    page: usize,
    per_page: usize,
) -> Result<SecretPage, ApiError> {
    caller.require_sees(repo)?;
    let all = store.list(repo)?;
    let total_count = all.len();
    let secrets = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|i| meta_of(repo, i))
        .collect();
    Ok(SecretPage {
        total_count,
        secrets,
    })
}

pub fn get_secret(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
) -> Result<SecretMeta, ApiError> {
    caller.require_sees(repo)?;
    let info = store
        .list(repo)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{} has no secret named {name}",
                sealinit_store::holder::Holder::of(repo)
            ))
        })?;
    Ok(meta_of(repo, info))
}

/// A write's precondition (`If-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// The secret is at this version now (0: it does not exist yet).
    Version(i64),
    /// The secret exists, at any version.
    Exists,
}

/// How a PUT treats its value.
#[derive(Debug, Clone, Default)]
pub struct PutFlags {
    /// Compare-and-set (`If-Match`).
    pub if_version: Option<IfMatch>,
    pub allow_production: bool,
    /// A code-loading name allowed (recorded on the secret).
    pub allow_name: bool,
    /// Store an empty value.
    pub allow_empty: bool,
    /// Its delivery, hosts and placeholder, as far as given.
    pub route: sealinit_store::RouteChange,
}

/// An organisation secret's reach from GitHub's words: `all` or `private`
/// (the same here: there are no public repositories) for every repository
/// of the owner, `selected` for those listed; absent: unchanged.
pub fn reach(
    visibility: Option<&str>,
    selected: Option<Vec<String>>,
) -> Result<Option<Option<Vec<String>>>, ApiError> {
    match (visibility, selected) {
        (None, None) => Ok(None),
        (Some("all" | "private"), None) => Ok(Some(None)),
        (Some("selected") | None, Some(list)) => Ok(Some(Some(list))),
        (Some("selected"), None) => Ok(Some(Some(Vec::new()))),
        (Some("all" | "private"), Some(_)) => Err(ApiError::unprocessable(
            "selected repositories go with visibility \"selected\"",
        )),
        (Some(v), _) => Err(ApiError::unprocessable(format!(
            "visibility is all, private or selected, not {v:?}"
        ))),
    }
}

/// How a value arrives.
pub enum NewValue {
    Plain(SecretValue),
    /// `crypto_box_seal` to the repository's public key `key_id`.
    Sealed {
        sealed: Vec<u8>,
        key_id: String,
    },
}

impl std::fmt::Debug for NewValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(redacted)"),
            Self::Sealed { key_id, .. } => write!(f, "Sealed(key {key_id})"),
        }
    }
}

pub fn put_secret(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
    value: NewValue,
    flags: PutFlags,
) -> Result<SetOutcome, ApiError> {
    let PutFlags {
        if_version,
        allow_production,
        allow_name,
        allow_empty,
        route,
    } = flags;
    caller.require(Action::Write, repo)?;
    let value = match value {
        NewValue::Plain(v) => v,
        NewValue::Sealed { sealed, key_id } => store.open_sealed_value(repo, &key_id, &sealed)?,
    };
    // `*`: compare-and-set against the version it has now, if any.
    let if_version = match if_version {
        None => None,
        Some(IfMatch::Version(v)) => Some(v),
        Some(IfMatch::Exists) => match store.list(repo)?.into_iter().find(|s| s.name == name) {
            Some(info) => Some(info.version),
            None => {
                return Err(ApiError::new(
                    axum::http::StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    format!(
                        "If-Match: * but {repo} has no secret named {name}; nothing was changed"
                    ),
                ));
            }
        },
    };
    let entries = [Entry {
        name: name.to_owned(),
        delivery: Default::default(),
        value,
    }];
    let allowed = [name.to_owned()];
    let mut done = store.set_many(
        repo,
        &entries,
        SetOptions {
            if_version,
            allow_production: if allow_production { &allowed } else { &[] },
            allow_names: if allow_name { &allowed } else { &[] },
            allow_empty,
            routes: std::slice::from_ref(&route),
        },
    )?;
    Ok(done.remove(0))
}

/// Removes a whole repository (admin or write on it).
/// The egress policy of `repo` (write or launch on it).
pub fn egress(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
) -> Result<sealinit_core::bundle::Egress, ApiError> {
    caller.require_sees(repo)?;
    Ok(store.egress(repo)?)
}

/// Sets the egress policy of `repo` (write on it).
pub fn set_egress(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    policy: sealinit_core::bundle::Egress,
) -> Result<sealinit_core::bundle::Egress, ApiError> {
    caller.require(Action::Write, repo)?;
    Ok(store.set_egress(repo, policy)?)
}

/// Creates `repo` (a token that may write to it may create it).
pub fn create_repo(store: &mut Store, caller: &Caller, repo: &str) -> Result<String, ApiError> {
    sealinit_store::validate_repo(repo)?;
    caller.require(Action::Write, repo)?;
    store.create_repo(repo)?;
    Ok(repo.to_owned())
}

pub fn delete_repo(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
) -> Result<(String, usize), ApiError> {
    caller.require(Action::Write, repo)?;
    Ok(store.remove_repo(repo)?)
}

pub fn delete_secret(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
) -> Result<(), ApiError> {
    caller.require(Action::Write, repo)?;
    store.remove(repo, &[name.to_owned()])?;
    Ok(())
}

pub fn versions(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
) -> Result<Vec<HistoryEntry>, ApiError> {
    caller.require_sees(repo)?;
    let history = store.history(repo, name)?;
    if history.is_empty() {
        return Err(ApiError::not_found(format!(
            "repository {repo} has no secret named {name}"
        )));
    }
    Ok(history)
}

pub fn rollback(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
    to: i64,
) -> Result<SetOutcome, ApiError> {
    caller.require(Action::Write, repo)?;
    Ok(store.rollback(repo, name, to)?)
}

/// Which versions of `name` were made by a roll back (or a restore), and
/// from which version: `(version, from)`, read from the audit trail since
/// the oldest version kept.
pub fn restored_from(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
    since: i64,
) -> Result<Vec<(i64, i64)>, ApiError> {
    caller.require_sees(repo)?;
    Ok(store
        .audit(Some(repo), Some(since))?
        .into_iter()
        .filter(|r| r.action == "rollback" && r.detail["name"] == name)
        .filter_map(|r| Some((r.detail["version"].as_i64()?, r.detail["to"].as_i64()?)))
        .collect())
}

/// The secrets of `repo` whose newest version is a delete marker.
pub fn deleted(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
) -> Result<Vec<sealinit_store::DeletedSecret>, ApiError> {
    caller.require_sees(repo)?;
    Ok(store.deleted(repo)?)
}

/// Brings a deleted secret back: a roll back to its newest version with
/// a value still stored. Returns the new version and the one restored.
pub fn restore(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
) -> Result<(SetOutcome, i64), ApiError> {
    caller.require(Action::Write, repo)?;
    let gone = store.deleted(repo)?.into_iter().find(|d| d.name == name);
    match gone.and_then(|d| d.restorable) {
        Some(to) => Ok((store.rollback(repo, name, to)?, to)),
        None => Err(ApiError::not_found(format!(
            "{name} of {repo} is not a deleted secret with a value still stored; nothing was changed"
        ))),
    }
}

/// What an imported text is.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    /// dotenv; `expand`: `${NAME}` from earlier lines of the same text.
    Env {
        expand: bool,
    },
    Json,
}

/// Which values of an import may look like production credentials.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum AllowProduction {
    All(bool),
    Names(Vec<String>),
}

impl Default for AllowProduction {
    fn default() -> Self {
        Self::All(false)
    }
}

/// What an import may let in, and the route of entries that give none.
#[derive(Debug, Default)]
pub struct ImportOptions {
    pub allow: AllowProduction,
    pub allow_names: Vec<String>,
    pub whole: sealinit_store::RouteChange,
}

pub fn import(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    format: Format,
    content: &NewValue,
    opts: ImportOptions,
) -> Result<Vec<SetOutcome>, ApiError> {
    let ImportOptions {
        allow,
        allow_names,
        whole,
    } = opts;
    caller.require(Action::Write, repo)?;
    // Borrowed (the caller keeps the text: the page gives it back after a
    // refusal); a sealed text is opened here and dropped once parsed.
    let parsed = {
        let opened;
        let content = match content {
            NewValue::Plain(v) => v,
            NewValue::Sealed { sealed, key_id } => {
                opened = store.open_sealed_value(repo, key_id, sealed)?;
                &opened
            }
        };
        match format {
            Format::Json => sealinit_store::import::parse_json(content.expose()),
            Format::Env { expand } => sealinit_store::import::parse_env(content.expose(), expand)
                .map(|es| es.into_iter().map(|e| (e, Default::default())).collect()),
        }
    }
    .map_err(|reason| ApiError::unprocessable(format!("import: {reason}; nothing was changed")))?;
    let (entries, routes) = sealinit_store::route::with_whole_route(parsed, &whole);
    let allowed: Vec<String> = match allow {
        AllowProduction::All(true) => entries.iter().map(|e| e.name.clone()).collect(),
        AllowProduction::All(false) => Vec::new(),
        AllowProduction::Names(names) => names,
    };
    Ok(store.set_many(
        repo,
        &entries,
        SetOptions {
            allow_production: &allowed,
            allow_names: &allow_names,
            // `NAME=` in a file is explicit.
            allow_empty: true,
            routes: &routes,
            ..SetOptions::default()
        },
    )?)
}

pub fn public_key(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
) -> Result<(String, [u8; 32]), ApiError> {
    caller.require(Action::Write, repo)?;
    Ok(store.public_key(repo)?)
}

/// A per-launch bundle of `repo` under a fresh key: what `sealctl seal
/// --repo` makes, and the audit record of that read, which the caller must
/// commit before handing the bundle out.
pub fn mint(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    environment: Option<&str>,
    label: Option<String>,
    ttl: Option<Duration>,
    allow_empty: bool,
) -> Result<(Minted, AuditRecord), ApiError> {
    caller.require(Action::Launch, repo)?;
    let found = store.secrets_for(repo, environment, allow_empty)?;
    bundle::check_name_policy(&found.entries, &found.allowed)
        .map_err(|e| ApiError::unprocessable(format!("cannot seal: {e}")))?;
    let label = label.unwrap_or_else(|| found.repo.clone());
    let now = sealinit_core::time::now();
    let expires = ttl.map(|t| now.saturating_add(t.as_secs()));
    // The repository is bound into the bundle by the service, whatever the
    // caller chose as its label (`sealinit --expect-repo` checks it).
    let header = Header::new(now, expires, Some(label.clone())).with_repo(found.repo.clone());
    let names_versions = found.names_and_versions();
    let repo = found.repo.clone();
    let record = store.seal_record(&repo, &names_versions, Some(&label), expires);
    let launch = sealinit_store::launch::seal_launch(found, header)?;
    Ok((
        Minted {
            bundle: launch.sandbox.bundle,
            key: launch.sandbox.key,
            proxy: launch.proxy.map(|p| (p.bundle, p.key)),
            label,
            repo,
            created_at: now,
            expires_at: expires,
            names: names_versions.into_iter().map(|(n, _)| n).collect(),
        },
        record,
    ))
}

/// The newest `n` audit records of `repo`, oldest first (the page's
/// Audit tab).
/// Page `page` (1 = the newest) of `repo`'s audit trail, `per_page`
/// records a page, oldest first within it; and how many records it holds.
pub fn audit_recent(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    per_page: usize,
    page: usize,
) -> Result<(Vec<AuditRecord>, usize), ApiError> {
    caller.require(Action::Audit, repo)?;
    let mut records = store.audit(Some(repo), None)?;
    let total = records.len();
    let end = total.saturating_sub(per_page * (page.max(1) - 1));
    records.truncate(end);
    records.drain(..end.saturating_sub(per_page));
    Ok((records, total))
}

/// One page of the audit trail as the API shows it.
#[derive(Debug)]
pub struct AuditPage {
    pub records: Vec<serde_json::Value>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<i64>,
}

/// An audit record for the API: its id (a cursor), times in RFC 3339.
pub fn audit_json(id: i64, r: &AuditRecord) -> serde_json::Value {
    let mut detail = r.detail.clone();
    if let Some(t) = detail.get("expires").and_then(serde_json::Value::as_i64) {
        detail["expires"] = rfc3339(t).into();
    }
    serde_json::json!({
        "id": id,
        "at": rfc3339(r.at),
        "actor": r.actor,
        "action": r.action,
        "repo": r.repo,
        "detail": detail,
    })
}

pub fn audit(
    store: &mut Store,
    caller: &Caller,
    q: sealinit_store::AuditQuery<'_>,
) -> Result<AuditPage, ApiError> {
    match q.repo {
        Some(r) => caller.require(Action::Audit, r)?,
        None if !caller.grants.audits_any() => {
            return Err(ApiError::forbidden(format!(
                "token {} has no audit scope (admin or audit:PATTERN)",
                caller.id
            )));
        }
        None => {}
    }
    let limit = q.limit.unwrap_or(100);
    let page = store.audit_page(q)?;
    // A full page may have a next one; its cursor is the last id read
    // (records the token may not see are skipped, not counted).
    let next = (page.len() == limit)
        .then(|| page.last().map(|(id, _)| *id))
        .flatten();
    let records = page
        .iter()
        .filter(|(_, r)| {
            caller.grants.is_admin()
                || (!r.repo.is_empty() && caller.grants.allows(Action::Audit, &r.repo))
        })
        .map(|(id, r)| audit_json(*id, r))
        .collect();
    Ok(AuditPage { records, next })
}

/// Changes `name`'s route without a new value (an organisation secret's
/// reach): a new version, audited.
pub fn reroute(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
    name: &str,
    change: &sealinit_store::RouteChange,
) -> Result<SetOutcome, ApiError> {
    caller.require(Action::Write, repo)?;
    Ok(store.reroute(repo, name, change)?)
}

/// The organisation secrets `repo` receives (metadata only): its owner's
/// that reach it, a name of its own aside (for its Secrets tab).
pub fn received(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
) -> Result<Vec<SecretMeta>, ApiError> {
    use sealinit_store::holder;
    caller.require_sees(repo)?;
    let repo = store.existing(repo)?;
    let own: Vec<String> = store.list(&repo)?.into_iter().map(|s| s.name).collect();
    let key = holder::org_key(holder::owner_of(&repo));
    Ok(store
        .list(&key)?
        .into_iter()
        .filter(|s| !own.contains(&s.name))
        .filter(|s| {
            s.route
                .repos
                .as_ref()
                .is_none_or(|l| l.iter().any(|r| r.eq_ignore_ascii_case(&repo)))
        })
        .map(|s| meta_of(&key, s))
        .collect())
}

/// The environments of `repo` that hold secrets, with how many.
pub fn environments(
    store: &mut Store,
    caller: &Caller,
    repo: &str,
) -> Result<Vec<(String, usize)>, ApiError> {
    caller.require_sees(repo)?;
    Ok(store.environments(repo)?)
}
