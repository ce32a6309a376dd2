//! The storage interface: what a database must do for the store. It carries
//! sealed rows only (nonce, ciphertext, sizes, versions): encryption,
//! validation and the associated-data binding live above it, in
//! [`crate::Store`], once for every backend. One crate per backend
//! implements it (`sealinit-store-sqlite`, `sealinit-store-postgres`), each
//! with its own migrations.

use crate::{Result, SecretInfo};

/// The schema every backend writes and reads. 1: the first release. 2:
/// `secrets.allow_code_loading` (a code-loading name allowed at `set`).
/// Older schemas are migrated when opened; newer ones are refused.
pub const SCHEMA_VERSION: i64 = 2;

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
}

impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Changes to one repository inside one transaction (see
/// [`Backend::write`]).
pub trait Writer {
    /// The repository's stored spelling (or the given one, if new).
    fn repo(&self) -> &str;
    /// The current version of `name`, if it exists.
    fn version(&mut self, name: &str) -> Result<Option<i64>>;
    /// Inserts or replaces `row`, stamped with `updated_at` (Unix seconds).
    fn put(&mut self, row: &SealedRow, updated_at: i64) -> Result<()>;
    /// Deletes `name`; its version, if it existed.
    fn delete(&mut self, name: &str) -> Result<Option<i64>>;
    /// `(name length, value length)` of every secret of the repository.
    fn sizes(&mut self) -> Result<Vec<(usize, usize)>>;
}

/// A database holding a store.
pub trait Backend: Send {
    /// Where the store is, for messages: a path, or a URL without its
    /// password.
    fn location(&self) -> String;
    /// Creates the schema, at [`SCHEMA_VERSION`], with `check` as the
    /// master-key check row. Refuses a database that already holds a store.
    fn create(&mut self, check: &[u8]) -> Result<()>;
    /// The master-key check row; `None` if this database holds no store.
    fn check(&mut self) -> Result<Option<Vec<u8>>>;
    /// Brings an older schema up to [`SCHEMA_VERSION`] in one transaction
    /// (safe against other processes doing the same); refuses a newer one.
    fn migrate(&mut self) -> Result<()>;
    /// The stored spelling of `repo`, compared case-insensitively.
    fn spelling(&mut self, repo: &str) -> Result<Option<String>>;
    /// Runs `f` on `repo` in one write transaction, committed only if `f`
    /// returns `Ok`.
    fn write(&mut self, repo: &str, f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>)
    -> Result<()>;
    /// The secrets of `repo` (stored spelling), by name, without values.
    fn list(&mut self, repo: &str) -> Result<Vec<SecretInfo>>;
    /// The sealed rows of `repo` (stored spelling), by name.
    fn rows(&mut self, repo: &str) -> Result<Vec<SealedRow>>;
    /// Every repository with its number of secrets.
    fn repos(&mut self) -> Result<Vec<(String, usize)>>;
    /// Deletes every secret of `repo` (stored spelling); how many went.
    fn remove_repo(&mut self, repo: &str) -> Result<usize>;
    /// In one exclusive transaction, replaces every row by what `reseal`
    /// makes of it (the repository given), and the check row by `check`.
    /// Returns how many rows were rewritten.
    fn rewrite_all(
        &mut self,
        reseal: &mut dyn FnMut(&str, SealedRow) -> Result<SealedRow>,
        check: &[u8],
    ) -> Result<usize>;
}
