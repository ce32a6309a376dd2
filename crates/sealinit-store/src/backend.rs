//! The storage interface: what a database must do for the store. It carries
//! sealed rows only (nonce, ciphertext, sizes, versions): encryption,
//! validation and the associated-data binding live above it, in
//! [`crate::Store`], once for every backend. One crate per backend
//! implements it (`sealinit-store-sqlite`, `sealinit-store-postgres`), each
//! with its own migrations.

use crate::{Result, SecretInfo};

/// The schema every backend writes and reads. 1: the first release. 2:
/// `secrets.allow_code_loading` (a code-loading name allowed at `set`). 3:
/// every version kept (`secret_versions`, with delete markers), the audit
/// trail (`audit`), the retention setting. 4: envelope encryption: the
/// master keys (`master_keys`, one primary) and each repository's data key
/// wrapped under them (`data_keys`). Older schemas are migrated when
/// opened; newer ones are refused. The move of the values from the master
/// key to data keys needs the master key, so [`crate::Store`] does it, once,
/// in one transaction, when a key first opens a migrated store. 5: the
/// service's API tokens (`tokens`: keyed hashes, never tokens). 6: tokens
/// that may act for a person, the page's sessions, idempotency records.
/// 7: repositories exist explicitly (`repos`); a store's repositories with
/// secrets or history become rows. 8: each version's route (`route`:
/// delivery, hosts, placeholder; empty for `env`). 9: each repository's
/// egress policy (`repos.egress`; empty: allow).
pub const SCHEMA_VERSION: i64 = 9;

/// Names starting with it are the store's own data keys (the service's),
/// kept among the repositories' but never a repository: no valid
/// repository name starts with it, and they exist without being created.
pub const OWN_PREFIX: char = '!';

/// An API token as stored: its keyed hash, never the token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub hash: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// May name the person it acts for (`X-Sealinit-Actor`).
    pub may_act_for: bool,
}

/// A request made with an `Idempotency-Key`: its keyed hash, and its
/// response once answered (sealed under the service's key).
#[derive(Debug, Clone)]
pub struct IdempotencyRow {
    pub request: String,
    pub status: Option<i64>,
    pub sealed: Option<Vec<u8>>,
}

/// A sign-in session of the page, as stored: the id's SHA-256 (never the
/// id), the token it signed in with (by id: the token itself is never
/// stored), its CSRF token and one result message.
#[derive(Clone)]
pub struct SessionRow {
    pub id_hash: String,
    pub token_id: String,
    pub csrf: String,
    /// Unix seconds.
    pub started: i64,
    pub seen: i64,
    /// A JSON result message shown once.
    pub flash: Option<String>,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

/// How many versions keep their ciphertext, unless the store says otherwise.
pub const DEFAULT_KEEP: i64 = 10;

/// One version of a secret, as history lists it: never its value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryEntry {
    pub version: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub size: i64,
    /// A delete marker (`secrets rm`).
    pub deleted: bool,
    /// Its ciphertext is gone (retention): it cannot be rolled back to.
    pub pruned: bool,
}

/// A secret whose newest version is a delete marker, as the deleted list
/// shows it: never its value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeletedSecret {
    pub name: String,
    /// The delete marker's version, time (Unix seconds) and actor.
    pub version: i64,
    pub at: i64,
    pub actor: String,
    /// Its newest version with a value still stored: what a restore rolls
    /// back to (none once retention dropped them all).
    pub restorable: Option<i64>,
}

/// Which audit records to read: of `repo` (stored spelling) if given, at
/// or after `since`, before `until`, with an id above `after` (a cursor),
/// at most `limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditQuery<'a> {
    pub repo: Option<&'a str>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

/// One audit record. `detail` is a JSON object of names, versions, labels
/// and expiries: never a value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub repo: String,
    pub detail: serde_json::Value,
}

/// One secret as stored: sealed, never plaintext.
#[derive(Clone)]
pub struct SealedRow {
    pub name: String,
    pub version: i64,
    /// `nonce || ciphertext || tag`.
    pub sealed: Vec<u8>,
    /// The plaintext's length.
    pub size: i64,
    pub allow_code_loading: bool,
    /// Its delivery, hosts and placeholder shape (bound into `sealed`).
    pub route: crate::Route,
}

impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A master key the store knows: its id, a check value (a fixed text
/// sealed under it, bound to the id) and whether it is the primary, which
/// new data keys must be wrapped under.
#[derive(Debug, Clone)]
pub struct MasterKeyRow {
    pub id: String,
    pub check: Vec<u8>,
    pub primary: bool,
    /// Unix seconds.
    pub added_at: i64,
}

/// A repository's data key, sealed under master key `key_id`:
/// `nonce || key || tag`.
#[derive(Clone)]
pub struct WrappedKey {
    pub key_id: String,
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What a database says about its master keys.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// Schema 4 and later: the master keys.
    pub masters: Vec<MasterKeyRow>,
    /// A store whose values are still sealed under the master key directly
    /// (made before schema 4): that key's check value.
    pub legacy_check: Option<Vec<u8>>,
}

/// One stored ciphertext, current or in the history, with its repository's
/// spelling (part of its associated data).
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub repo: String,
    pub row: SealedRow,
    /// From the history (`secret_versions`) rather than the current values.
    pub history: bool,
}

/// Changes to the master keys and the data keys of every repository, in one
/// transaction that excludes every writer of data keys (see
/// [`Backend::keyring_write`]).
pub trait KeyringWriter {
    /// The keyring, read inside this transaction.
    fn keyring(&mut self) -> Result<Keyring>;
    /// Records a new master key (not primary).
    fn add_master(&mut self, row: &MasterKeyRow) -> Result<()>;
    /// Makes `id` the one primary master key.
    fn set_primary(&mut self, id: &str) -> Result<()>;
    /// Forgets master key `id` and every data key wrapped under it.
    fn remove_master(&mut self, id: &str) -> Result<()>;
    /// Every wrapped data key, by lower-cased repository.
    fn wraps(&mut self) -> Result<Vec<(String, WrappedKey)>>;
    /// Adds (or replaces) `repo_key`'s data key wrapped under `w.key_id`.
    fn put_wrap(&mut self, repo_key: &str, w: &WrappedKey) -> Result<()>;
    /// Every ciphertext, current and in the history, of every repository.
    fn stored_rows(&mut self) -> Result<Vec<StoredRow>>;
    /// Replaces a ciphertext (same repository, name and version).
    fn replace_row(&mut self, row: &StoredRow) -> Result<()>;
    /// Forgets the pre-schema-4 check value: the values are under data keys.
    fn drop_legacy_check(&mut self) -> Result<()>;
    /// Appends an audit record, in this transaction.
    fn audit(&mut self, record: &AuditRecord) -> Result<()>;
}

/// Changes to one repository inside one transaction (see
/// [`Backend::write`]).
pub trait Writer {
    /// The repository's stored spelling (or the given one, if new).
    fn repo(&self) -> &str;
    /// The current version of `name`, if it exists.
    fn version(&mut self, name: &str) -> Result<Option<i64>>;
    /// The route of the current version of `name`, if it exists.
    fn route(&mut self, name: &str) -> Result<Option<crate::Route>>;
    /// Sets the repository's egress policy (its JSON; empty: allow).
    fn set_egress(&mut self, policy: &str) -> Result<()>;
    /// The highest version `name` ever had, delete markers included.
    fn last_version(&mut self, name: &str) -> Result<Option<i64>>;
    /// Makes `row` the current value and records it in the history, at
    /// `at` (Unix seconds) by `actor`.
    fn put(&mut self, row: &SealedRow, at: i64, actor: &str) -> Result<()>;
    /// Deletes the current `name` and records a delete marker as version
    /// `marker`; the version it had, if it existed.
    fn delete(&mut self, name: &str, marker: i64, at: i64, actor: &str) -> Result<Option<i64>>;
    /// Version `version` of `name` from the history, if it still holds its
    /// ciphertext (not pruned, not a delete marker).
    fn history_row(&mut self, name: &str, version: i64) -> Result<Option<SealedRow>>;
    /// Drops the ciphertexts of `name`'s versions older than its newest
    /// `keep` (their history entries stay).
    fn prune(&mut self, name: &str, keep: i64) -> Result<()>;
    /// Appends an audit record, in this transaction.
    fn audit(&mut self, record: &AuditRecord) -> Result<()>;
    /// `(name length, value length)` of every secret of the repository.
    fn sizes(&mut self) -> Result<Vec<(usize, usize)>>;
    /// The repository's data key, wrapped under each master key that has
    /// it (none for a repository that never had a secret).
    fn wraps(&mut self) -> Result<Vec<WrappedKey>>;
    /// The master keys, read in this transaction and serialised against
    /// [`Backend::keyring_write`]: call it before [`Writer::set_wraps`].
    fn masters(&mut self) -> Result<Vec<MasterKeyRow>>;
    /// Replaces the repository's wrapped data keys by `wraps`.
    fn set_wraps(&mut self, wraps: &[WrappedKey]) -> Result<()>;
    /// Every ciphertext of the repository (any spelling), current and in
    /// the history.
    fn stored_rows(&mut self) -> Result<Vec<StoredRow>>;
    /// Replaces a ciphertext (same repository, name and version).
    fn replace_row(&mut self, row: &StoredRow) -> Result<()>;
}

/// A database holding a store.
pub trait Backend: Send {
    /// Where the store is, for messages: a path, or a URL without its
    /// password.
    fn location(&self) -> String;
    /// Creates the schema, at [`SCHEMA_VERSION`], with `check` as the
    /// first release's master-key check value (the store then moves it to
    /// the keyring as it does for an upgraded store). Refuses a database
    /// that already holds a store.
    fn create(&mut self, check: &[u8]) -> Result<()>;
    /// The keyring, at any schema; `None` if this database holds no store.
    fn keyring(&mut self) -> Result<Option<Keyring>>;
    /// Brings an older schema up to [`SCHEMA_VERSION`] in one transaction
    /// (safe against other processes doing the same); refuses a newer one.
    fn migrate(&mut self) -> Result<()>;
    /// The stored spelling of `repo`, compared case-insensitively, if the
    /// repository exists.
    fn spelling(&mut self, repo: &str) -> Result<Option<String>>;
    /// Runs `f` on `repo` in one write transaction, committed only if `f`
    /// returns `Ok`; [`crate::StoreError::NoSuchRepo`] if it does not
    /// exist (names starting with [`OWN_PREFIX`] always do).
    fn write(&mut self, repo: &str, f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>)
    -> Result<()>;
    /// Creates `repo` (created at `at` by `actor`) and runs `f` on it, in
    /// one transaction; [`crate::StoreError::RepoExists`] (with its stored
    /// spelling) if a repository of that name, in any case, exists.
    fn create_repo(
        &mut self,
        repo: &str,
        at: i64,
        actor: &str,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>,
    ) -> Result<()>;
    /// The egress policy of `repo` (stored spelling), as stored.
    fn egress(&mut self, repo: &str) -> Result<String>;
    /// Every holder key starting with `prefix` that holds secrets now, with
    /// how many, in order.
    fn holders(&mut self, prefix: &str) -> Result<Vec<(String, usize)>>;
    /// The data key of `repo` (stored spelling), wrapped under each master
    /// key that has it.
    fn data_key_wraps(&mut self, repo: &str) -> Result<Vec<WrappedKey>>;
    /// The secrets of `repo` (stored spelling), by name, without values.
    fn list(&mut self, repo: &str) -> Result<Vec<SecretInfo>>;
    /// The repository's wrapped data keys and its sealed rows (stored
    /// spelling), by name, read from one snapshot.
    fn rows(&mut self, repo: &str) -> Result<(Vec<WrappedKey>, Vec<SealedRow>)>;
    /// Every repository with its number of secrets and its last change.
    fn repos(&mut self) -> Result<Vec<crate::RepoInfo>>;
    /// The history of `name` in `repo` (stored spelling), oldest first.
    fn history(&mut self, repo: &str, name: &str) -> Result<Vec<HistoryEntry>>;
    /// The secrets of `repo` whose newest version is a delete marker, by
    /// name.
    fn deleted(&mut self, repo: &str) -> Result<Vec<DeletedSecret>>;
    /// How many versions keep their ciphertext.
    fn keep(&mut self) -> Result<i64>;
    /// Sets how many versions keep their ciphertext.
    fn set_keep(&mut self, keep: i64) -> Result<()>;
    /// Appends an audit record on its own (a seal: a read of the values).
    fn audit_append(&mut self, record: &AuditRecord) -> Result<()>;
    /// Appends `records` in one transaction.
    fn audit_append_many(&mut self, records: &[AuditRecord]) -> Result<()>;
    /// Stores a new token and its audit record in one transaction.
    fn token_insert(&mut self, token: &TokenRow, audit: &AuditRecord) -> Result<()>;
    /// The token whose keyed hash is `hash`.
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>>;
    /// Every token, oldest first.
    fn tokens(&mut self) -> Result<Vec<TokenRow>>;
    /// Revokes token `id` (if not yet revoked) with its audit record, in
    /// one transaction; whether it existed.
    fn token_revoke(&mut self, id: &str, at: i64, audit: &AuditRecord) -> Result<bool>;
    /// Records a use of token `id` at `at`.
    fn token_touch(&mut self, id: &str, at: i64) -> Result<()>;
    /// The token with id `id`.
    fn token_by_id(&mut self, id: &str) -> Result<Option<TokenRow>>;
    /// Stores a new session; the same token's oldest sessions beyond
    /// `keep - 1`, and every session last seen before `stale`, go.
    fn session_insert(&mut self, s: &SessionRow, keep: usize, stale: i64) -> Result<()>;
    /// The session whose id hashes to `id_hash`.
    fn session_get(&mut self, id_hash: &str) -> Result<Option<SessionRow>>;
    /// Sets its last use and its result message.
    fn session_update(&mut self, id_hash: &str, seen: i64, flash: Option<&str>) -> Result<()>;
    /// Ends it.
    fn session_delete(&mut self, id_hash: &str) -> Result<()>;
    /// Claims idempotency key `scope` for a request whose keyed hash is
    /// `request` (records made before `stale` are dropped first): `None`
    /// if it was free (now taken), else what it holds.
    fn idempotency_claim(
        &mut self,
        scope: &str,
        request: &str,
        now: i64,
        stale: i64,
    ) -> Result<Option<IdempotencyRow>>;
    /// Stores the sealed response of the request holding `scope`.
    fn idempotency_finish(&mut self, scope: &str, status: i64, sealed: &[u8]) -> Result<()>;
    /// Frees `scope` (its request failed before it changed anything).
    fn idempotency_release(&mut self, scope: &str) -> Result<()>;
    /// Audit records with their ids, oldest first, as `q` selects.
    fn audit_page(&mut self, q: &AuditQuery<'_>) -> Result<Vec<(i64, AuditRecord)>>;
    /// Deletes the audit records older than `before` (Unix seconds), and
    /// appends `record` (of the prune itself), in one transaction; how
    /// many went.
    fn audit_prune(
        &mut self,
        before: i64,
        record: &mut dyn FnMut(usize) -> AuditRecord,
    ) -> Result<usize>;
    /// The id of the last audit record an export wrote out (every record
    /// up to it is in an export), if any.
    fn audit_exported(&mut self) -> Result<Option<i64>>;
    /// Records that the records up to id `through` were exported (never
    /// moves back).
    fn set_audit_exported(&mut self, through: i64) -> Result<()>;
    /// Deletes every secret of `repo` (stored spelling), with delete
    /// markers in the history and the audit record `audit` makes of the
    /// count, and the repository itself, in one transaction; how many
    /// secrets went.
    fn remove_repo(
        &mut self,
        repo: &str,
        at: i64,
        actor: &str,
        audit: &mut dyn FnMut(usize) -> AuditRecord,
    ) -> Result<usize>;
    /// Runs `f` in one transaction that excludes every other change to the
    /// keyring or to data keys (and, on SQLite, every other writer),
    /// committed only if `f` returns `Ok`.
    fn keyring_write(
        &mut self,
        f: &mut dyn FnMut(&mut dyn KeyringWriter) -> Result<()>,
    ) -> Result<()>;
}
