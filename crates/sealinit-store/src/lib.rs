//! The orchestrator's per-repository secret store: every value is
//! encrypted with XChaCha20-Poly1305 under its repository's data key, with
//! the repository, the name and the row's version bound in as associated
//! data (a row copied to another repository or name does not decrypt).
//! Data keys are stored wrapped under master keys (see [`keys`]); a check
//! value per master key tells a wrong key from a damaged store.
//!
//! [`Store`] holds the encryption and the rules (what it accepts always
//! seals); a [`Backend`] holds sealed rows: SQLite embedded
//! (`sealinit-store-sqlite`) or PostgreSQL (`sealinit-store-postgres`).
//! Every change is one transaction.
#![forbid(unsafe_code)]

pub mod backend;
pub mod holder;
pub mod import;
pub mod keys;
pub mod launch;
pub mod route;
pub mod service;

use std::io;
use std::path::PathBuf;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::Serialize;
use zeroize::Zeroizing;

use sealinit_core::bundle::{self, Entry, NONCE_LEN, PayloadError, TAG_LEN};
use sealinit_core::describe_io;
use sealinit_core::secret::{SecretKey, SecretValue};

pub use backend::{
    AuditQuery, AuditRecord, Backend, DEFAULT_KEEP, DeletedSecret, HistoryEntry, IdempotencyRow,
    Keyring, KeyringWriter, MasterKeyRow, OWN_PREFIX, SCHEMA_VERSION, SealedRow, SessionRow,
    StoredRow, TokenRow, WrappedKey, Writer,
};
pub use keys::MasterKey;
pub use route::{Delivery, Placeholder, Route, RouteChange};
pub use sealinit_guard::{Finding, Level};

/// Why a store operation failed. Names and paths may appear; values never.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    InvalidRepo(String),
    #[error("store {location}: {reason}")]
    Database { location: String, reason: String },
    #[error(
        "store {location}: no master key given opens this store (it knows {}); nothing was changed; pass the right key file or directory with --master-key",
        known_ids(known)
    )]
    WrongMasterKey {
        location: String,
        known: Vec<String>,
    },
    #[error(
        "the data key of {repo} is wrapped only under master key(s) {}, none of them given; add one with --master-key",
        ids.join(", ")
    )]
    DataKeyUnavailable { repo: String, ids: Vec<String> },
    #[error(
        "{what} needs the store's primary master key {primary}, which was not given; add it with --master-key (nothing was changed)"
    )]
    PrimaryKeyNotGiven { what: String, primary: String },
    #[error(
        "rotating the data key of {repo} needs every master key the store knows; {} not given (a process holding only it would lose the repository); add it with --master-key, or retire it first",
        missing.join(", ")
    )]
    MasterKeysNotGiven { repo: String, missing: Vec<String> },
    #[error(
        "the store has no master key {id} (it knows {}); see `sealctl store master-keys`",
        known_ids(known)
    )]
    NoSuchMasterKey { id: String, known: Vec<String> },
    #[error(
        "master key {id} is the store's primary; make another primary first (`sealctl store rotate-master-key --new PATH`), then retire it"
    )]
    RetirePrimary { id: String },
    #[error("repository {repo} has no secret named {name}; nothing was removed")]
    NoSuchSecret { repo: String, name: String },
    #[error(
        "secret {name} of {repo} does not decrypt: the row was modified or copied from another repository or name"
    )]
    SecretUndecryptable { repo: String, name: String },
    #[error("cannot seal: {0}")]
    Payload(#[from] PayloadError),
    #[error("cannot seal: {0}")]
    Seal(sealinit_core::bundle::BundleError),
    #[error(
        "secret {name} of {repo} is at version {found}, not {expected}: someone else changed it; nothing was changed (read it again, then retry)"
    )]
    VersionConflict {
        repo: String,
        name: String,
        expected: i64,
        found: i64,
    },
    #[error(
        "repository {repo} has no secrets (is the name right?); nothing was sealed; pass --allow-empty to seal an empty bundle"
    )]
    EmptyRepo { repo: String },
    #[error(
        "repository {repo} does not exist (is the name right?); nothing was changed; create it with `sealctl repos create {repo}`"
    )]
    NoSuchRepo { repo: String },
    #[error("secret {name}: {reason}; nothing was changed")]
    InvalidRoute { name: String, reason: String },
    #[error("egress policy: {0}; nothing was changed")]
    InvalidEgress(String),
    #[error("repository {repo} already exists; nothing was changed")]
    RepoExists { repo: String },
    #[error(
        "secret {name} of {repo} has no version {version} to roll back to{why}; see `sealctl secrets history`"
    )]
    NoSuchVersion {
        repo: String,
        name: String,
        version: i64,
        why: &'static str,
    },
    #[error(
        "store {location}: schema version {found} is newer than this sealctl knows ({known}); upgrade sealctl"
    )]
    NewerSchema {
        location: String,
        found: i64,
        known: i64,
    },
    #[error("store {}: {}", path.display(), describe_io(source))]
    Missing { path: PathBuf, source: io::Error },
    #[error(
        "--store {0:?} looks like a URL of a scheme sealctl does not know; use a path (SQLite) or postgres://..."
    )]
    UnknownScheme(String),
    #[error("{} already exists; refusing to overwrite it (remove it first or choose another path)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {}", path.display(), describe_io(source))]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "secret {name} looks like {what} (rule {rule}){}: only staging and test credentials belong in sandboxes; {advice}{}, or allow this one on purpose (sealctl: --allow-production {name}; API: \"allow_production\": true), which the audit trail records; nothing was changed",
        also_refused(others),
        proxy_advice(hosts, false)
    )]
    ProductionCredential {
        name: String,
        rule: &'static str,
        what: &'static str,
        advice: &'static str,
        /// The vendor's API hosts: bound to them through the egress proxy,
        /// the value never enters a sandbox and is let in.
        hosts: &'static [&'static str],
        /// The other secrets refused with it, and their rules.
        others: Vec<(String, &'static str)>,
    },
    #[error(
        "the value of {name} is empty; nothing was set (an empty value is stored only on request: sealctl: --allow-empty; API: \"allow_empty\": true)"
    )]
    EmptyValue { name: String },
    #[error(
        "the audit records before {} include some no export has written out (the first from {}); nothing was pruned; export them first (sealctl audit export > FILE), or prune anyway with --force",
        sealinit_core::time::rfc3339((*before).max(0) as u64),
        sealinit_core::time::rfc3339((*first).max(0) as u64)
    )]
    AuditNotExported { before: i64, first: i64 },
    #[error("no token {id}; see `sealctl tokens list`")]
    NoSuchToken { id: String },
    #[error(
        "the value was sealed to key {given} of {repo}, which is no longer its key ({current}): fetch the public key again and reseal; nothing was changed"
    )]
    StaleKeyId {
        repo: String,
        given: String,
        current: String,
    },
    #[error(
        "the encrypted value for {repo} does not open: it must be a crypto_box_seal of the value to the repository's public key; nothing was changed"
    )]
    SealedValueInvalid { repo: String },
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `--delivery proxy --host H...`: sealctl's flags for a value the egress
/// proxy takes to `hosts` only.
pub fn proxy_flags(hosts: &[&str]) -> String {
    let mut out = "--delivery proxy".to_owned();
    for h in hosts {
        out.push_str(" --host ");
        out.push_str(h);
    }
    out
}

/// ", or keep it out of the sandbox: ...": the guard's advice for a rule
/// with vendor hosts, in the CLI's words (flags) or the API's (fields).
pub fn proxy_advice(hosts: &[&str], api: bool) -> String {
    if hosts.is_empty() {
        return String::new();
    }
    let how = match api {
        false => proxy_flags(hosts),
        true => format!(
            "\"delivery\": \"proxy\", \"hosts\": {}",
            serde_json::json!(hosts)
        ),
    };
    format!(
        ", or keep it out of the sandbox: deliver it through the egress proxy to the vendor's API only ({how})"
    )
}

fn known_ids(ids: &[String]) -> String {
    match ids {
        [] => "its master key from before 0.2".into(),
        ids => ids.join(", "),
    }
}

const CHECK_PLAINTEXT: &[u8] = b"sealinit store master key check";

/// Where the store lives when `--store` is not given:
/// `$XDG_DATA_HOME/sealinit/store.db`, else `~/.local/share/sealinit/store.db`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("sealinit/store.db"))
}

/// Checks a repository name: `owner/name`, or GitLab-style nested groups
/// `group/sub/name`; each part letters, digits, `-`, `_` or `.`, not
/// starting with `.` or `-`, at most 100 bytes; at most 255 in all.
/// Repositories compare case-insensitively (as GitHub's do); the spelling
/// first stored is kept and shown.
pub fn validate_repo(repo: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && !p.starts_with(['.', '-'])
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if repo.len() <= 255 && repo.split('/').count() >= 2 && repo.split('/').all(part_ok) {
        Ok(())
    } else {
        Err(StoreError::InvalidRepo(format!(
            "repository {repo:?} is not of the form owner/name or group/sub/name (letters, digits, '-', '_', '.')"
        )))
    }
}

/// A reach (selected repositories) only for an organisation's secret, and
/// only among its own repositories.
fn check_reach(key: &str, name: &str, r: &RouteChange) -> Result<()> {
    let invalid = |reason: String| StoreError::InvalidRoute {
        name: name.to_owned(),
        reason,
    };
    match (holder::Holder::of(key), &r.repos) {
        (holder::Holder::Org(_), None | Some(None)) | (_, None) => Ok(()),
        (holder::Holder::Org(o), Some(Some(list))) => {
            for x in list {
                validate_repo(x)?;
                if !holder::owner_of(x).eq_ignore_ascii_case(&o) {
                    return Err(invalid(format!(
                        "repository {x} is not one of {o}'s; an organisation's secret reaches its own repositories only"
                    )));
                }
            }
            Ok(())
        }
        (_, Some(_)) => Err(invalid(
            "selected repositories belong to an organisation's secrets".into(),
        )),
    }
}

/// What `set_many` did to one secret.
#[derive(Debug, Clone, Serialize)]
pub struct SetOutcome {
    pub repo: String,
    pub name: String,
    pub version: i64,
    pub created: bool,
    /// Warning-level guard rules the value hit (stored anyway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<&'static str>,
    /// Refusing guard rules the value hit, let through by `allow_production`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_production: Vec<&'static str>,
    /// Other names of the repository that differ from a new name only in
    /// case.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub case_twins: Vec<String>,
}

/// How `set_many` treats what it is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions<'a> {
    /// Code-loading names (`LD_*`, `NODE_OPTIONS`, ...) allowed; the
    /// permission is recorded on the secret, so later seals honour it.
    pub allow_names: &'a [String],
    /// Compare-and-set: the version the (single) secret must be at now; 0
    /// means it must not exist yet.
    pub if_version: Option<i64>,
    /// Names whose values may hit a refusing production-credential rule
    /// (recorded in the audit trail).
    pub allow_production: &'a [String],
    /// Store empty values (refused otherwise: an empty value is more often
    /// a forgotten pipe than a choice). Imports of whole files pass it, as
    /// `NAME=` there is explicit.
    pub allow_empty: bool,
    /// What each entry's write does to its route, by index (entries past
    /// its end keep theirs; new ones are `env`).
    pub routes: &'a [RouteChange],
}

/// A repository's secrets, decrypted for sealing.
#[derive(Debug)]
pub struct RepoSecrets {
    /// The repository's stored spelling.
    pub repo: String,
    pub entries: Vec<Entry>,
    /// The version of each entry, in the same order.
    pub versions: Vec<i64>,
    /// The code-loading names allowed when they were set.
    pub allowed: Vec<String>,
    /// The route of each entry, in the same order (its delivery is the
    /// entry's).
    pub routes: Vec<Route>,
    /// The repository's egress policy.
    pub egress: sealinit_core::bundle::Egress,
}

/// One repository as listed.
#[derive(Debug, Clone, Serialize)]
pub struct RepoInfo {
    pub repo: String,
    /// How many secrets it holds.
    pub secrets: usize,
    /// Unix seconds of its last change (a set, a rollback or a delete).
    pub updated_at: i64,
}

/// One secret as listed: never its value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub size: usize,
    pub version: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Who wrote the current version.
    pub updated_by: String,
    /// Unix seconds: its first version since it was last deleted.
    pub created_at: i64,
    /// Its delivery, hosts and placeholder shape.
    #[serde(flatten)]
    pub route: Route,
}

/// A master key the store knows, as `store master-keys` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MasterKeyInfo {
    pub id: String,
    pub primary: bool,
    /// Unix seconds.
    pub added_at: i64,
    /// Given to this process (`--master-key`).
    pub given: bool,
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The new primary master key.
    pub primary: String,
    /// The master keys that still open the store until retired.
    pub previous: Vec<String>,
    /// How many data keys were wrapped under the new key.
    pub rewrapped: usize,
}

pub struct Store {
    db: Box<dyn Backend>,
    /// The master keys given that this store knows, each checked.
    keys: Vec<MasterKey>,
    /// The key API tokens are hashed with, once derived.
    token_key: Option<zeroize::Zeroizing<[u8; 32]>>,
    /// Who makes the changes, for the history and the audit trail (the OS
    /// user; a token's name once the service exists).
    actor: String,
}

impl RepoSecrets {
    /// Keeps the secrets for which `f(entry, route)` holds.
    fn keep(&mut self, f: impl Fn(&Entry, &Route) -> bool) {
        // Moved out and back (a value's buffer moves with its entry).
        let rows: Vec<_> = self
            .entries
            .drain(..)
            .zip(self.versions.drain(..))
            .zip(self.routes.drain(..))
            .collect();
        for ((e, v), r) in rows {
            if f(&e, &r) {
                self.entries.push(e);
                self.versions.push(v);
                self.routes.push(r);
            }
        }
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        self.allowed.retain(|n| names.contains(&n.as_str()));
    }

    /// These secrets with `over`'s on top: a name in both is `over`'s
    /// (values moved, never copied); sorted by name.
    fn overlaid_by(mut self, over: RepoSecrets) -> RepoSecrets {
        let names: Vec<String> = over.entries.iter().map(|e| e.name.clone()).collect();
        self.keep(|e, _| !names.contains(&e.name));
        self.allowed.extend(over.allowed);
        let mut all: Vec<(Entry, i64, Route)> = self
            .entries
            .into_iter()
            .zip(self.versions)
            .zip(self.routes)
            .chain(over.entries.into_iter().zip(over.versions).zip(over.routes))
            .map(|((e, v), r)| (e, v, r))
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut out = RepoSecrets {
            repo: over.repo,
            entries: Vec::with_capacity(all.len()),
            versions: Vec::with_capacity(all.len()),
            allowed: self.allowed,
            routes: Vec::with_capacity(all.len()),
            egress: over.egress,
        };
        for (e, v, r) in all {
            out.entries.push(e);
            out.versions.push(v);
            out.routes.push(r);
        }
        out
    }

    /// Each secret's name and version, for the audit record of a seal.
    pub fn names_and_versions(&self) -> Vec<(String, i64)> {
        self.entries
            .iter()
            .map(|e| e.name.clone())
            .zip(self.versions.iter().copied())
            .collect()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.db.location())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a new store in `db` whose data keys `master` will wrap,
    /// keeping the ciphertexts of the newest `keep` versions of each secret.
    pub fn create(mut db: Box<dyn Backend>, master: MasterKey, keep: i64) -> Result<Self> {
        // Created as the first release created a store, then upgraded: one
        // path for new and old stores.
        db.create(&encrypt(
            master.key(),
            &legacy_check_aad(),
            CHECK_PLAINTEXT,
        )?)?;
        db.set_keep(keep)?;
        Self::open(db, vec![master])
    }

    /// Who the history and the audit trail name for the changes made
    /// through this store.
    pub fn set_actor(&mut self, actor: impl Into<String>) {
        self.actor = actor.into();
    }

    /// Opens the store in `db` with the master keys `given` (a keyring:
    /// keys the store does not know are ignored; at least one must open
    /// it), migrates an older schema, and moves a store made before
    /// envelope encryption to data keys.
    pub fn open(mut db: Box<dyn Backend>, given: Vec<MasterKey>) -> Result<Self> {
        let not_a_store = |db: &dyn Backend| {
            StoreError::Database {
            location: db.location(),
            reason: "not a sealinit store (no master key check value); create one with `sealctl store init`".into(),
        }
        };
        let Some(ring) = db.keyring()? else {
            return Err(not_a_store(db.as_ref()));
        };
        // A key must open the store before anything is changed.
        let legacy = match &ring.legacy_check {
            Some(check) => Some(
                given
                    .iter()
                    .position(|k| opens(k.key(), &legacy_check_aad(), check))
                    .ok_or_else(|| StoreError::WrongMasterKey {
                        location: db.location(),
                        known: Vec::new(),
                    })?,
            ),
            None => None,
        };
        if legacy.is_none() && usable(&ring, &given).next().is_none() {
            return Err(StoreError::WrongMasterKey {
                location: db.location(),
                known: ring.masters.iter().map(|m| m.id.clone()).collect(),
            });
        }
        db.migrate()?;
        let ring = match legacy {
            Some(i) => {
                to_data_keys(db.as_mut(), &given[i])?;
                db.keyring()?.ok_or_else(|| not_a_store(db.as_ref()))?
            }
            None => ring,
        };
        let ids: Vec<String> = usable(&ring, &given).map(|m| m.id.clone()).collect();
        let mut keys = given;
        keys.retain(|k| ids.iter().any(|id| id == k.id()));
        keys.dedup_by(|a, b| a.id() == b.id());
        if keys.is_empty() {
            return Err(StoreError::WrongMasterKey {
                location: db.location(),
                known: ring.masters.iter().map(|m| m.id.clone()).collect(),
            });
        }
        Ok(Self {
            db,
            keys,
            token_key: None,
            actor: "unknown".into(),
        })
    }

    /// Adds the keys of `given` that the store knows now (a rotation made
    /// elsewhere may have added one) and this store does not hold yet;
    /// returns their ids. Keys already held stay.
    pub fn add_keys(&mut self, given: Vec<MasterKey>) -> Result<Vec<String>> {
        let Some(ring) = self.db.keyring()? else {
            return Ok(Vec::new());
        };
        let usable: Vec<String> = usable(&ring, &given).map(|m| m.id.clone()).collect();
        let mut added = Vec::new();
        for k in given {
            let id = k.id().to_owned();
            if usable.contains(&id) && !self.keys.iter().any(|h| h.id() == id) {
                self.keys.push(k);
                added.push(id);
            }
        }
        Ok(added)
    }

    /// The master keys the store knows.
    pub fn master_keys(&mut self) -> Result<Vec<MasterKeyInfo>> {
        let ring = self.db.keyring()?.unwrap_or_default();
        Ok(ring
            .masters
            .iter()
            .map(|m| MasterKeyInfo {
                id: m.id.clone(),
                primary: m.primary,
                added_at: m.added_at,
                given: self.keys.iter().any(|k| k.id() == m.id),
            })
            .collect())
    }

    /// The data key of `repo_key` from its wraps, under any key given.
    fn data_key(keys: &[MasterKey], repo: &str, wraps: &[WrappedKey]) -> Result<SecretKey> {
        let rk = keys::repo_key(repo);
        for w in wraps {
            if let Some(k) = keys.iter().find(|k| k.id() == w.key_id) {
                return keys::unwrap(k, &rk, w)?.ok_or_else(|| StoreError::SecretUndecryptable {
                    repo: repo.to_owned(),
                    name: format!("(data key under {})", w.key_id),
                });
            }
        }
        Err(StoreError::DataKeyUnavailable {
            repo: repo.to_owned(),
            ids: wraps.iter().map(|w| w.key_id.clone()).collect(),
        })
    }

    /// The repository's data key in a write; a new one, wrapped under
    /// every master key given that the store knows (the primary among
    /// them), for a repository that has none.
    fn data_key_for_write(keys: &[MasterKey], w: &mut dyn Writer) -> Result<SecretKey> {
        let repo = w.repo().to_owned();
        let wraps = w.wraps()?;
        if !wraps.is_empty() {
            return Self::data_key(keys, &repo, &wraps);
        }
        let masters = w.masters()?;
        let dk = keys::generate()?;
        let wraps = Self::wrap_under(keys, &masters, &repo, &dk, "a new repository")?;
        w.set_wraps(&wraps)?;
        Ok(dk)
    }

    /// `dk` wrapped under every master key given that is in `masters`,
    /// which must include the primary.
    fn wrap_under(
        keys: &[MasterKey],
        masters: &[MasterKeyRow],
        repo: &str,
        dk: &SecretKey,
        what: &str,
    ) -> Result<Vec<WrappedKey>> {
        if let Some(p) = masters.iter().find(|m| m.primary) {
            if !keys.iter().any(|k| k.id() == p.id) {
                return Err(StoreError::PrimaryKeyNotGiven {
                    what: format!("{what} ({repo})"),
                    primary: p.id.clone(),
                });
            }
        }
        let rk = keys::repo_key(repo);
        keys.iter()
            .filter(|k| masters.iter().any(|m| m.id == k.id()))
            .map(|k| keys::wrap(k, &rk, dk))
            .collect()
    }

    /// The stored spelling of `repo` (compared case-insensitively), if it
    /// has secrets.
    fn stored_spelling(&mut self, repo: &str) -> Result<Option<String>> {
        holder::validate_key(repo)?;
        match holder::Holder::of(repo) {
            holder::Holder::Repo(r) => self.db.spelling(&r),
            // An environment exists with its repository; an owner's
            // secrets always may.
            holder::Holder::Env { repo, env } => {
                Ok(self.db.spelling(&repo)?.map(|r| holder::env_key(&r, &env)))
            }
            holder::Holder::Org(o) => Ok(Some(holder::org_key(&o))),
        }
    }

    /// Sets every entry of `repo` in one transaction: all or nothing. What
    /// it accepts always seals: each entry is checked as sealing checks it
    /// (names, code-loading names unless allowed, sizes), and so is the
    /// repository as it would be after the change (entry count, payload).
    pub fn set_many(
        &mut self,
        repo: &str,
        entries: &[Entry],
        opts: SetOptions<'_>,
    ) -> Result<Vec<SetOutcome>> {
        let repo = &self.existing(repo)?;
        bundle::validate_each(entries)?;
        for (e, r) in entries.iter().zip(
            opts.routes
                .iter()
                .chain(std::iter::repeat(&RouteChange::default())),
        ) {
            check_reach(repo, &e.name, r)?;
        }
        if let Some(e) = entries
            .iter()
            .find(|e| e.value.expose().is_empty() && !opts.allow_empty)
        {
            return Err(StoreError::EmptyValue {
                name: e.name.clone(),
            });
        }
        if let Some(e) = entries
            .iter()
            .find(|e| bundle::changes_code_loading(&e.name) && !opts.allow_names.contains(&e.name))
        {
            return Err(PayloadError::CodeLoadingName(e.name.clone()).into());
        }
        let now = sealinit_core::time::now() as i64;
        let keep = self.db.keep()?;
        let (keys, actor) = (&self.keys, self.actor.as_str());
        let mut done = Vec::with_capacity(entries.len());
        self.db.write(repo, &mut |w| {
            done.clear();
            let repo = w.repo().to_owned();
            // Each entry's route after the write: its change applied to
            // the current version's, read in this transaction.
            let routes: Vec<Route> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let change = opts.routes.get(i).cloned().unwrap_or_default();
                    let mut r = change.apply(w.route(&e.name)?.as_ref());
                    r.validate(&e.name)?;
                    Ok(r)
                })
                .collect::<Result<_>>()?;
            let findings = guard(entries, opts.allow_production, &routes)?;
            let rules_of = |name: &str, level| -> Vec<&'static str> {
                findings
                    .iter()
                    .filter(|f| f.name == name && f.rule.level == level)
                    .map(|f| f.rule.id)
                    .collect()
            };
            let dk = Self::data_key_for_write(keys, w)?;
            for (e, route) in entries.iter().zip(&routes) {
                let current = w.version(&e.name)?;
                if let Some(expected) = opts.if_version {
                    let found = current.unwrap_or(0);
                    if found != expected {
                        return Err(StoreError::VersionConflict {
                            repo: repo.clone(),
                            name: e.name.clone(),
                            expected,
                            found,
                        });
                    }
                }
                // After a delete marker, numbering goes on: every version
                // is bound into its own ciphertext once.
                let version = w.last_version(&e.name)?.map_or(1, |v| v + 1);
                let row = SealedRow {
                    name: e.name.clone(),
                    version,
                    sealed: encrypt(
                        &dk,
                        &row_aad(&repo, &e.name, version, route),
                        e.value.expose(),
                    )?,
                    size: e.value.len() as i64,
                    allow_code_loading: opts.allow_names.contains(&e.name),
                    route: route.clone(),
                };
                w.put(&row, now, actor)?;
                w.prune(&e.name, keep)?;
                done.push(SetOutcome {
                    repo: repo.clone(),
                    name: e.name.clone(),
                    version,
                    created: current.is_none(),
                    warnings: rules_of(&e.name, Level::Warn),
                    allowed_production: rules_of(&e.name, Level::Refuse),
                    case_twins: Vec::new(),
                });
            }
            // The repository as it now stands must still seal.
            bundle::check_totals(w.sizes()?)?;
            let allowed: Vec<&str> = entries
                .iter()
                .filter(|e| opts.allow_names.contains(&e.name))
                .map(|e| e.name.as_str())
                .collect();
            w.audit(&AuditRecord {
                at: now,
                actor: actor.to_owned(),
                action: "set".into(),
                repo: repo.clone(),
                detail: serde_json::json!({
                    "secrets": done.iter().zip(&routes).map(|(d, r)| match r.delivery {
                        Delivery::Env => serde_json::json!({"name": d.name, "version": d.version}),
                        _ => serde_json::json!({"name": d.name, "version": d.version, "delivery": r.delivery, "hosts": r.hosts}),
                    }).collect::<Vec<_>>(),
                    "allowed_code_loading": allowed,
                    "allowed_production": done.iter().filter(|d| !d.allowed_production.is_empty())
                        .map(|d| serde_json::json!({"name": d.name, "rules": d.allowed_production})).collect::<Vec<_>>(),
                    "warnings": done.iter().filter(|d| !d.warnings.is_empty())
                        .map(|d| serde_json::json!({"name": d.name, "rules": d.warnings})).collect::<Vec<_>>(),
                }),
            })
        })?;
        // Names that differ from a new one only in case (API_URL and
        // api_url both reach sandboxes, and are easily confused).
        if done.iter().any(|d| d.created) {
            let names: Vec<String> = self.db.list(repo)?.into_iter().map(|i| i.name).collect();
            for d in done.iter_mut().filter(|d| d.created) {
                d.case_twins = names
                    .iter()
                    .filter(|n| **n != d.name && n.eq_ignore_ascii_case(&d.name))
                    .cloned()
                    .collect();
            }
        }
        Ok(done)
    }

    /// Makes a new version of `name` with the value version `to` had
    /// (decrypted and re-encrypted inside the store: no value leaves it).
    pub fn rollback(&mut self, repo: &str, name: &str, to: i64) -> Result<SetOutcome> {
        self.reseal(repo, name, Some(to), None)
    }

    /// Makes a new version of `name` with its current value and its route
    /// changed by `change` (an organisation secret's reach, set without
    /// sending the value again); audited as `route`.
    pub fn reroute(&mut self, repo: &str, name: &str, change: &RouteChange) -> Result<SetOutcome> {
        self.reseal(repo, name, None, Some(change))
    }

    /// A new version of `name` from version `to` (default: the current
    /// one), its route changed by `change` if given.
    fn reseal(
        &mut self,
        repo: &str,
        name: &str,
        to: Option<i64>,
        change: Option<&RouteChange>,
    ) -> Result<SetOutcome> {
        let repo = &self.existing(repo)?;
        if let Some(c) = change {
            check_reach(repo, name, c)?;
        }
        let now = sealinit_core::time::now() as i64;
        let keep = self.db.keep()?;
        let (keys, actor) = (&self.keys, self.actor.as_str());
        let mut outcome = None;
        self.db.write(repo, &mut |w| {
            let repo = w.repo().to_owned();
            let Some(last) = w.last_version(name)? else {
                return Err(match to {
                    Some(version) => StoreError::NoSuchVersion {
                        repo: repo.clone(),
                        name: name.to_owned(),
                        version,
                        why: "",
                    },
                    None => StoreError::NoSuchSecret {
                        repo: repo.clone(),
                        name: name.to_owned(),
                    },
                });
            };
            let to = to.unwrap_or(last);
            let missing = |why| StoreError::NoSuchVersion {
                repo: repo.clone(),
                name: name.to_owned(),
                version: to,
                why,
            };
            let Some(old) = w.history_row(name, to)? else {
                return Err(missing(
                    " (a delete marker, or its ciphertext was dropped by retention)",
                ));
            };
            // Opened and sealed again under the new version in one buffer:
            // the plaintext is never copied.
            let dk = Self::data_key_for_write(keys, w)?;
            let mut buf = Zeroizing::new(old.sealed);
            if !open_in_place(&dk, &row_aad(&repo, name, to, &old.route), &mut buf) {
                return Err(StoreError::SecretUndecryptable {
                    repo: repo.clone(),
                    name: name.to_owned(),
                });
            }
            let version = last + 1;
            // The route is the version's too: a rollback restores it.
            let route = match change {
                Some(c) => {
                    let mut r = c.apply(Some(&old.route));
                    r.validate(name)?;
                    r
                }
                None => old.route.clone(),
            };
            seal_in_place(&dk, &row_aad(&repo, name, version, &route), &mut buf)?;
            let row = SealedRow {
                name: name.to_owned(),
                version,
                sealed: std::mem::take(&mut *buf),
                size: old.size,
                allow_code_loading: old.allow_code_loading,
                route: route.clone(),
            };
            let created = w.version(name)?.is_none();
            w.put(&row, now, actor)?;
            w.prune(name, keep)?;
            bundle::check_totals(w.sizes()?)?;
            w.audit(&AuditRecord {
                at: now,
                actor: actor.to_owned(),
                action: match change {
                    None => "rollback".into(),
                    Some(_) => "route".into(),
                },
                repo: repo.clone(),
                detail: match change {
                    None => serde_json::json!({"name": name, "to": to, "version": version}),
                    Some(_) => {
                        serde_json::json!({"name": name, "version": version, "route": route})
                    }
                },
            })?;
            outcome = Some(SetOutcome {
                repo,
                name: name.to_owned(),
                version,
                created,
                warnings: Vec::new(),
                allowed_production: Vec::new(),
                case_twins: Vec::new(),
            });
            Ok(())
        })?;
        Ok(outcome.expect("set by a committed write"))
    }

    /// The history of `name` in `repo`, oldest first: versions with time,
    /// size and who; never values.
    pub fn history(&mut self, repo: &str, name: &str) -> Result<Vec<HistoryEntry>> {
        match self.stored_spelling_any(repo)? {
            Some(repo) => self.db.history(&repo, name),
            None => Ok(Vec::new()),
        }
    }

    /// The secrets of `repo` deleted last (their history kept), by name.
    pub fn deleted(&mut self, repo: &str) -> Result<Vec<DeletedSecret>> {
        match self.stored_spelling_any(repo)? {
            Some(repo) => self.db.deleted(&repo),
            None => Ok(Vec::new()),
        }
    }

    /// The spelling of `repo` that history and audit records use: the
    /// current one, or the given one for a repository with no secrets now.
    fn stored_spelling_any(&mut self, repo: &str) -> Result<Option<String>> {
        Ok(Some(
            self.stored_spelling(repo)?
                .unwrap_or_else(|| repo.to_owned()),
        ))
    }

    /// Records a seal (a read of the values) in the audit trail: names,
    /// versions, label and expiry.
    pub fn record_seal(
        &mut self,
        repo: &str,
        names: &[(String, i64)],
        label: Option<&str>,
        expires: Option<u64>,
    ) -> Result<()> {
        let record = self.seal_record(repo, names, label, expires);
        self.db.audit_append(&record)
    }

    /// The audit record of one request through the egress proxy: the
    /// launch, the outcome (`substituted` or `refused`), the secrets'
    /// names, host, method and path; never a value or a query string.
    pub fn egress_record(&self, repo: &str, at: i64, detail: serde_json::Value) -> AuditRecord {
        AuditRecord {
            at,
            actor: self.actor.clone(),
            action: "egress".into(),
            repo: repo.to_owned(),
            detail,
        }
    }

    /// The audit record of a seal, for [`Store::append_audit`] (the
    /// service commits many in one transaction).
    pub fn seal_record(
        &self,
        repo: &str,
        names: &[(String, i64)],
        label: Option<&str>,
        expires: Option<u64>,
    ) -> AuditRecord {
        AuditRecord {
            at: sealinit_core::time::now() as i64,
            actor: self.actor.clone(),
            action: "seal".into(),
            repo: repo.to_owned(),
            detail: serde_json::json!({
                "secrets": names.iter().map(|(n, v)| serde_json::json!({"name": n, "version": v})).collect::<Vec<_>>(),
                "label": label,
                "expires": expires,
            }),
        }
    }

    /// Appends `records` in one transaction (one fsync): a group commit.
    pub fn append_audit(&mut self, records: &[AuditRecord]) -> Result<()> {
        self.db.audit_append_many(records)
    }

    /// Audit records, oldest first, of `repo` if given, at or after `since`
    /// (Unix seconds) if given.
    pub fn audit(&mut self, repo: Option<&str>, since: Option<i64>) -> Result<Vec<AuditRecord>> {
        let page = self.audit_page(AuditQuery {
            repo,
            since,
            ..AuditQuery::default()
        })?;
        Ok(page.into_iter().map(|(_, r)| r).collect())
    }

    /// Audit records with their ids (cursors), oldest first, as `q`
    /// selects (its repository in any spelling).
    pub fn audit_page(&mut self, q: AuditQuery<'_>) -> Result<Vec<(i64, AuditRecord)>> {
        let repo = match q.repo {
            Some(r) => match self.stored_spelling_any(r)? {
                Some(r) => Some(r),
                // No such repository: no records (not every record).
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        self.db.audit_page(&AuditQuery {
            repo: repo.as_deref(),
            ..q
        })
    }

    /// Deletes the audit records older than `before`, which must all have
    /// been exported (`audit export`) unless `force`; records the prune.
    pub fn audit_prune(&mut self, before: i64, force: bool) -> Result<usize> {
        let exported = self.db.audit_exported()?;
        let unexported = self.db.audit_page(&AuditQuery {
            until: Some(before),
            after: exported,
            limit: Some(1),
            ..AuditQuery::default()
        })?;
        if let (false, Some((_, first))) = (force, unexported.first()) {
            return Err(StoreError::AuditNotExported {
                before,
                first: first.at,
            });
        }
        let actor = self.actor.clone();
        self.db.audit_prune(before, &mut |n| AuditRecord {
            at: sealinit_core::time::now() as i64,
            actor: actor.clone(),
            action: "audit-prune".into(),
            repo: String::new(),
            detail: serde_json::json!({"before": before, "removed": n, "forced": force}),
        })
    }

    /// The id of the last audit record an export wrote out, if any.
    pub fn audit_exported(&mut self) -> Result<Option<i64>> {
        self.db.audit_exported()
    }

    /// Records that every audit record up to id `through` is exported.
    pub fn audit_exported_through(&mut self, through: i64) -> Result<()> {
        self.db.set_audit_exported(through)
    }

    /// The secrets of `repo`, by name, without values.
    pub fn list(&mut self, repo: &str) -> Result<Vec<SecretInfo>> {
        let repo = self.existing(repo)?;
        self.db.list(&repo)
    }

    /// The environments of `repo` (which must exist) that hold secrets,
    /// with how many each.
    pub fn environments(&mut self, repo: &str) -> Result<Vec<(String, usize)>> {
        let repo = self.existing(repo)?;
        let prefix = holder::env_key(&repo, "");
        Ok(self
            .db
            .holders(&prefix)?
            .into_iter()
            .filter_map(|(k, n)| match holder::Holder::of(&k) {
                holder::Holder::Env { env, .. } => Some((env, n)),
                _ => None,
            })
            .collect())
    }

    /// The stored spelling of `repo`, which must exist.
    pub fn existing(&mut self, repo: &str) -> Result<String> {
        self.stored_spelling(repo)?
            .ok_or_else(|| StoreError::NoSuchRepo { repo: repo.into() })
    }

    /// The egress policy of `repo` (which must exist): what the proxy does
    /// with requests that carry no secret.
    pub fn egress(&mut self, repo: &str) -> Result<sealinit_core::bundle::Egress> {
        let repo = self.existing(repo)?;
        let text = self.db.egress(&repo)?;
        Ok(match text.as_str() {
            "" => Default::default(),
            t => serde_json::from_str(t).unwrap_or_default(),
        })
    }

    /// Sets the egress policy of `repo`, with its audit record.
    pub fn set_egress(
        &mut self,
        repo: &str,
        mut policy: sealinit_core::bundle::Egress,
    ) -> Result<sealinit_core::bundle::Egress> {
        route::validate_egress(&mut policy)?;
        let text = match policy == Default::default() {
            true => String::new(),
            false => serde_json::to_string(&policy).expect("a policy serialises"),
        };
        let actor = self.actor.clone();
        let shown = serde_json::json!(policy);
        self.db.write(repo, &mut |w| {
            w.set_egress(&text)?;
            w.audit(&AuditRecord {
                at: sealinit_core::time::now() as i64,
                actor: actor.clone(),
                action: "egress-policy".into(),
                repo: w.repo().to_owned(),
                detail: shown.clone(),
            })
        })?;
        Ok(policy)
    }

    /// Creates `repo`, with its data key (so that reading its public key
    /// writes nothing), and records it; its stored spelling is `repo`.
    pub fn create_repo(&mut self, repo: &str) -> Result<()> {
        validate_repo(repo)?;
        let now = sealinit_core::time::now() as i64;
        let (keys, actor) = (&self.keys, self.actor.as_str());
        self.db.create_repo(repo, now, actor, &mut |w| {
            // A repository removed and created again gets its old data key
            // back: its history stays readable.
            Self::data_key_for_write(keys, w)?;
            w.audit(&AuditRecord {
                at: now,
                actor: actor.to_owned(),
                action: "repo-create".into(),
                repo: w.repo().to_owned(),
                detail: serde_json::json!({}),
            })
        })
    }

    /// Removes `names` from `repo` in one transaction; every name must
    /// exist. Returns each name with the version it had.
    pub fn remove(&mut self, repo: &str, names: &[String]) -> Result<Vec<(String, i64)>> {
        let repo = &self.existing(repo)?;
        let now = sealinit_core::time::now() as i64;
        let actor = self.actor.as_str();
        let mut removed = Vec::with_capacity(names.len());
        self.db.write(repo, &mut |w| {
            removed.clear();
            for name in names {
                let marker = w.last_version(name)?.map_or(1, |v| v + 1);
                let Some(version) = w.delete(name, marker, now, actor)? else {
                    return Err(StoreError::NoSuchSecret {
                        repo: w.repo().to_owned(),
                        name: name.clone(),
                    });
                };
                removed.push((name.clone(), version));
            }
            w.audit(&AuditRecord {
                at: now,
                actor: actor.to_owned(),
                action: "rm".into(),
                repo: w.repo().to_owned(),
                detail: serde_json::json!({
                    "secrets": removed.iter().map(|(n, v)| serde_json::json!({"name": n, "version": v})).collect::<Vec<_>>(),
                }),
            })
        })?;
        Ok(removed)
    }

    /// Removes a whole repository in one transaction; returns its stored
    /// spelling and how many secrets went.
    pub fn remove_repo(&mut self, repo: &str) -> Result<(String, usize)> {
        let repo = self.existing(repo)?;
        let now = sealinit_core::time::now() as i64;
        let actor = self.actor.clone();
        let n = self
            .db
            .remove_repo(&repo, now, &actor, &mut |n| AuditRecord {
                at: now,
                actor: actor.clone(),
                action: "repo-rm".into(),
                repo: repo.clone(),
                detail: serde_json::json!({"removed": n}),
            })?;
        Ok((repo, n))
    }

    /// The stored secrets of `repo`, or of every repository, that hit a
    /// production-credential rule: repository, name and rule, never a
    /// value. A scan reads the values, so it is recorded in the audit trail.
    pub fn scan(&mut self, repo: Option<&str>) -> Result<Vec<(String, Finding)>> {
        let repos: Vec<String> = match repo {
            Some(r) => vec![self.existing(r)?],
            None => self.repos()?.into_iter().map(|r| r.repo).collect(),
        };
        let mut out = Vec::new();
        for r in &repos {
            let found = self.secrets(r, true)?;
            let entries = found.entries.iter();
            for f in
                sealinit_guard::check_entries(entries.map(|e| (e.name.as_str(), e.value.expose())))
            {
                out.push((found.repo.clone(), f));
            }
        }
        self.db.audit_append(&AuditRecord {
            at: sealinit_core::time::now() as i64,
            actor: self.actor.clone(),
            action: "scan".into(),
            repo: repos.first().filter(|_| repo.is_some()).cloned().unwrap_or_default(),
            detail: serde_json::json!({
                "repositories": repos.len(),
                "findings": out.iter().map(|(r, f)| serde_json::json!({"repo": r, "name": f.name, "rule": f.rule.id})).collect::<Vec<_>>(),
            }),
        })?;
        Ok(out)
    }

    /// Every repository with its number of secrets and its last change.
    pub fn repos(&mut self) -> Result<Vec<RepoInfo>> {
        self.db.repos()
    }

    /// The decrypted secrets of `repo`, which must exist, for sealing: an
    /// error if it has none, unless `allow_empty`.
    pub fn secrets(&mut self, repo: &str, allow_empty: bool) -> Result<RepoSecrets> {
        self.secrets_for(repo, None, allow_empty)
    }

    /// The secrets a launch of `repo` gets, in GitHub's order: its owner's
    /// (those visible to it), then its own, then those of `environment`
    /// if named; a name held at a later level wins. An error if there are
    /// none, unless `allow_empty`.
    pub fn secrets_for(
        &mut self,
        repo: &str,
        environment: Option<&str>,
        allow_empty: bool,
    ) -> Result<RepoSecrets> {
        let repo = self.existing(repo)?;
        let org = self.held(&holder::org_key(holder::owner_of(&repo)))?;
        let mut merged = self.held(&repo)?;
        if let Some(env) = environment {
            holder::validate_env(env)?;
            let env = self.held(&holder::env_key(&repo, env))?;
            merged = merged.overlaid_by(env);
        }
        let mut org = org;
        org.keep(|_, r| {
            r.repos
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x.eq_ignore_ascii_case(&repo)))
        });
        let mut all = org.overlaid_by(merged);
        if all.entries.is_empty() && !allow_empty {
            return Err(StoreError::EmptyRepo { repo });
        }
        all.repo = repo.clone();
        all.egress = self.egress(&repo)?;
        Ok(all)
    }

    /// The decrypted secrets of one holder (a repository, an environment,
    /// an owner), which must exist.
    fn held(&mut self, key: &str) -> Result<RepoSecrets> {
        let repo = self.existing(key)?;
        let mut entries = Vec::new();
        let mut versions = Vec::new();
        let mut allowed = Vec::new();
        let mut routes = Vec::new();
        let (wraps, rows) = self.db.rows(&repo)?;
        let dk = match rows.is_empty() {
            true => None,
            false => Some(Self::data_key(&self.keys, &repo, &wraps)?),
        };
        for row in rows {
            versions.push(row.version);
            let mut value = decrypt(
                dk.as_ref().expect("rows need their data key"),
                &row_aad(&repo, &row.name, row.version, &row.route),
                row.sealed,
            )
            .ok_or_else(|| StoreError::SecretUndecryptable {
                repo: repo.clone(),
                name: row.name.clone(),
            })?;
            if row.allow_code_loading {
                allowed.push(row.name.clone());
            }
            entries.push(Entry {
                name: row.name,
                // Moved out of the zeroizing wrapper, not copied.
                value: SecretValue::from(std::mem::take(&mut *value)),
                delivery: row.route.delivery,
            });
            routes.push(row.route);
        }
        Ok(RepoSecrets {
            repo,
            entries,
            versions,
            allowed,
            routes,
            egress: Default::default(),
        })
    }

    /// Makes `new` the primary master key: every data key is wrapped under
    /// it too, in one transaction; no value is touched. The previous keys
    /// keep opening the store until [`Store::retire_master_key`].
    pub fn rotate_master_key(&mut self, new: MasterKey) -> Result<Rotation> {
        let (keys, actor) = (&self.keys, self.actor.clone());
        let mut done = None;
        self.db.keyring_write(&mut |kw| {
            let ring = kw.keyring()?;
            let now = sealinit_core::time::now() as i64;
            if !ring.masters.iter().any(|m| m.id == new.id()) {
                kw.add_master(&MasterKeyRow {
                    id: new.id().to_owned(),
                    check: encrypt(new.key(), &keys::check_aad(new.id()), CHECK_PLAINTEXT)?,
                    primary: false,
                    added_at: now,
                })?;
            }
            let mut rewrapped = 0;
            for (rk, mine) in by_repo(kw.wraps()?) {
                if mine.iter().any(|w| w.key_id == new.id()) {
                    continue;
                }
                let dk = Self::data_key(keys, &rk, &mine)?;
                kw.put_wrap(&rk, &keys::wrap(&new, &rk, &dk)?)?;
                rewrapped += 1;
            }
            kw.set_primary(new.id())?;
            let previous: Vec<String> = ring
                .masters
                .iter()
                .filter(|m| m.id != new.id())
                .map(|m| m.id.clone())
                .collect();
            kw.audit(&AuditRecord {
                at: now,
                actor: actor.clone(),
                action: "rotate-master-key".into(),
                repo: String::new(),
                detail: serde_json::json!({"primary": new.id(), "previous": previous, "rewrapped": rewrapped}),
            })?;
            done = Some(Rotation {
                primary: new.id().to_owned(),
                previous,
                rewrapped,
            });
            Ok(())
        })?;
        if !self.keys.iter().any(|k| k.id() == new.id()) {
            self.keys.push(new);
        }
        Ok(done.expect("set by a committed rotation"))
    }

    /// Forgets master key `id` and the data keys wrapped under it: a
    /// process holding only that key no longer opens the store.
    pub fn retire_master_key(&mut self, id: &str) -> Result<()> {
        let actor = self.actor.clone();
        self.db.keyring_write(&mut |kw| {
            let ring = kw.keyring()?;
            let known = || ring.masters.iter().map(|m| m.id.clone()).collect();
            let Some(m) = ring.masters.iter().find(|m| m.id == id) else {
                return Err(StoreError::NoSuchMasterKey {
                    id: id.to_owned(),
                    known: known(),
                });
            };
            if m.primary {
                return Err(StoreError::RetirePrimary { id: id.to_owned() });
            }
            // Every data key has a wrap under the primary; checked anyway,
            // as a retirement cannot be undone.
            if let Some((rk, _)) = by_repo(kw.wraps()?)
                .into_iter()
                .find(|(_, ws)| ws.iter().all(|w| w.key_id == id))
            {
                return Err(StoreError::DataKeyUnavailable {
                    repo: rk,
                    ids: vec![id.to_owned()],
                });
            }
            kw.remove_master(id)?;
            kw.audit(&AuditRecord {
                at: sealinit_core::time::now() as i64,
                actor: actor.clone(),
                action: "retire-master-key".into(),
                repo: String::new(),
                detail: serde_json::json!({"retired": id}),
            })
        })?;
        self.keys.retain(|k| k.id() != id);
        Ok(())
    }

    /// Re-encrypts every value of `repo`, current and in the history, under
    /// a fresh data key, in one transaction; how many ciphertexts.
    pub fn rotate_data_key(&mut self, repo: &str) -> Result<usize> {
        let repo = &self.existing(repo)?;
        let (keys, actor) = (&self.keys, self.actor.clone());
        let mut count = 0;
        self.db.write(repo, &mut |w| {
            let repo = w.repo().to_owned();
            let wraps = w.wraps()?;
            if wraps.is_empty() {
                return Err(StoreError::NoSuchRepo { repo: repo.clone() });
            }
            let old = Self::data_key(keys, &repo, &wraps)?;
            let masters = w.masters()?;
            let missing: Vec<String> = masters
                .iter()
                .filter(|m| !keys.iter().any(|k| k.id() == m.id))
                .map(|m| m.id.clone())
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::MasterKeysNotGiven { repo, missing });
            }
            let new = keys::generate()?;
            let rows = w.stored_rows()?;
            count = rows.len();
            for mut r in rows {
                let aad = row_aad(&r.repo, &r.row.name, r.row.version, &r.row.route);
                let mut buf = Zeroizing::new(std::mem::take(&mut r.row.sealed));
                if !open_in_place(&old, &aad, &mut buf) {
                    return Err(StoreError::SecretUndecryptable {
                        repo: r.repo,
                        name: r.row.name,
                    });
                }
                seal_in_place(&new, &aad, &mut buf)?;
                r.row.sealed = std::mem::take(&mut *buf);
                w.replace_row(&r)?;
            }
            let wraps = Self::wrap_under(keys, &masters, &repo, &new, "rotating a data key")?;
            w.set_wraps(&wraps)?;
            w.audit(&AuditRecord {
                at: sealinit_core::time::now() as i64,
                actor: actor.clone(),
                action: "rotate-data-key".into(),
                repo,
                detail: serde_json::json!({"reencrypted": count}),
            })
        })?;
        Ok(count)
    }
}

/// The production-credential guard over values about to be stored: an
/// error for the first refusing hit whose name is not in `allowed`; the
/// findings otherwise (warnings, and the hits let through).
///
/// A value delivered through the egress proxy only to hosts of the rule's
/// vendor (`routes`, by entry) never enters a sandbox: it is let in.
pub fn guard(entries: &[Entry], allowed: &[String], routes: &[Route]) -> Result<Vec<Finding>> {
    let findings =
        sealinit_guard::check_entries(entries.iter().map(|e| (e.name.as_str(), e.value.expose())));
    let proxied = |f: &Finding| {
        entries
            .iter()
            .position(|e| e.name == f.name)
            .and_then(|i| routes.get(i))
            .is_some_and(|r| r.delivery == Delivery::Proxy && r.within(f.rule.hosts))
    };
    let refused: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.rule.level == Level::Refuse && !allowed.contains(&f.name) && !proxied(f))
        .collect();
    if let Some(f) = refused.first() {
        let mut others: Vec<(String, &'static str)> = Vec::new();
        for o in &refused {
            if o.name != f.name && !others.iter().any(|(n, _)| *n == o.name) {
                others.push((o.name.clone(), o.rule.id));
            }
        }
        return Err(StoreError::ProductionCredential {
            name: f.name.clone(),
            rule: f.rule.id,
            what: f.rule.what,
            advice: f.rule.advice,
            hosts: f.rule.hosts,
            others,
        });
    }
    Ok(findings)
}

/// The other secrets a guard refusal names: ", and also B (rule r)".
pub fn also_refused(others: &[(String, &'static str)]) -> String {
    match others {
        [] => String::new(),
        o => format!(
            ", and also {}",
            o.iter()
                .map(|(n, r)| format!("{n} (rule {r})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Wraps grouped by repository.
fn by_repo(wraps: Vec<(String, WrappedKey)>) -> Vec<(String, Vec<WrappedKey>)> {
    let mut out: Vec<(String, Vec<WrappedKey>)> = Vec::new();
    for (rk, w) in wraps {
        match out.last_mut() {
            Some((last, ws)) if *last == rk => ws.push(w),
            _ => out.push((rk, vec![w])),
        }
    }
    out
}

/// The master keys given that the store knows and whose check value they
/// open.
fn usable<'a>(ring: &'a Keyring, given: &'a [MasterKey]) -> impl Iterator<Item = &'a MasterKeyRow> {
    ring.masters.iter().filter(|m| {
        given
            .iter()
            .any(|k| k.id() == m.id && opens(k.key(), &keys::check_aad(&m.id), &m.check))
    })
}

fn opens(key: &SecretKey, aad: &[u8], check: &[u8]) -> bool {
    matches!(decrypt(key, aad, check.to_vec()), Some(p) if p.as_slice() == CHECK_PLAINTEXT)
}

/// Moves a store made before envelope encryption (every value sealed under
/// `master` directly) to one data key per repository, wrapped under
/// `master`, which becomes the primary master key: one transaction, done by
/// the first process that opens the migrated store.
fn to_data_keys(db: &mut dyn Backend, master: &MasterKey) -> Result<()> {
    db.keyring_write(&mut |kw| {
        if kw.keyring()?.legacy_check.is_none() {
            return Ok(()); // another process did it meanwhile
        }
        let mut data_keys: Vec<(String, SecretKey)> = Vec::new();
        let rows = kw.stored_rows()?;
        let count = rows.len();
        for mut r in rows {
            let rk = keys::repo_key(&r.repo);
            let dk = match data_keys.iter().position(|(k, _)| *k == rk) {
                Some(i) => &data_keys[i].1,
                None => {
                    data_keys.push((rk.clone(), keys::generate()?));
                    &data_keys.last().expect("just pushed").1
                }
            };
            let aad = row_aad(&r.repo, &r.row.name, r.row.version, &r.row.route);
            let mut buf = Zeroizing::new(std::mem::take(&mut r.row.sealed));
            if !open_in_place(master.key(), &aad, &mut buf) {
                return Err(StoreError::SecretUndecryptable {
                    repo: r.repo,
                    name: r.row.name,
                });
            }
            seal_in_place(dk, &aad, &mut buf)?;
            r.row.sealed = std::mem::take(&mut *buf);
            kw.replace_row(&r)?;
        }
        for (rk, dk) in &data_keys {
            kw.put_wrap(rk, &keys::wrap(master, rk, dk)?)?;
        }
        kw.add_master(&MasterKeyRow {
            id: master.id().to_owned(),
            check: encrypt(master.key(), &keys::check_aad(master.id()), CHECK_PLAINTEXT)?,
            primary: false,
            added_at: sealinit_core::time::now() as i64,
        })?;
        kw.set_primary(master.id())?;
        kw.drop_legacy_check()?;
        tracing::info!(
            "store: {count} values moved to {} per-repository data keys under master key {}",
            data_keys.len(),
            master.id()
        );
        Ok(())
    })
}

fn legacy_check_aad() -> Vec<u8> {
    b"sealinit-store-v1\0check".to_vec()
}

/// `sealinit-store-v1 NUL repo NUL name NUL version(u64 LE)`: names and
/// repositories contain no NUL, so the encoding is unambiguous.
fn row_aad(repo: &str, name: &str, version: i64, route: &Route) -> Vec<u8> {
    let mut aad = b"sealinit-store-v1\0".to_vec();
    aad.extend_from_slice(repo.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&(version as u64).to_le_bytes());
    route.aad(&mut aad);
    aad
}

/// `nonce || ciphertext || tag` of `plaintext`: one buffer, encrypted in place.
pub(crate) fn encrypt(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
    buf.extend_from_slice(&[0; NONCE_LEN]);
    buf.extend_from_slice(plaintext);
    seal_in_place(key, aad, &mut buf)?;
    Ok(std::mem::take(&mut *buf))
}

/// Turns `nonce || plaintext` into `nonce || ciphertext || tag` in place,
/// under a fresh nonce.
fn seal_in_place(key: &SecretKey, aad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::Os {
        op: "getrandom",
        source: io::Error::other(e),
    })?;
    buf[..NONCE_LEN].copy_from_slice(&nonce);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut buf[NONCE_LEN..])
        .map_err(|_| StoreError::Os {
            op: "encrypting a value",
            source: io::Error::other("too large"),
        })?;
    buf.extend_from_slice(&tag);
    Ok(())
}

/// Turns `nonce || ciphertext || tag` into `nonce || plaintext` in place;
/// `false` (and nothing decrypted) if it does not authenticate.
fn open_in_place(key: &SecretKey, aad: &[u8], buf: &mut Vec<u8>) -> bool {
    if buf.len() < NONCE_LEN + TAG_LEN {
        return false;
    }
    let tag = *Tag::from_slice(&buf[buf.len() - TAG_LEN..]);
    buf.truncate(buf.len() - TAG_LEN);
    let (nonce, ct) = buf.split_at_mut(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, ct, &tag)
        .is_ok()
}

/// The plaintext of `nonce || ciphertext || tag`, decrypted in the same
/// allocation (wiped when dropped); `None` if it does not authenticate.
pub(crate) fn decrypt(key: &SecretKey, aad: &[u8], sealed: Vec<u8>) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(sealed);
    if !open_in_place(key, aad, &mut buf) {
        return None;
    }
    buf.drain(..NONCE_LEN);
    Some(buf)
}
