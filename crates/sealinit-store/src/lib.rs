//! The orchestrator's per-repository secret store: one SQLite database in
//! which every value is encrypted with XChaCha20-Poly1305 under a master
//! key, with the repository, the name and the row's version bound in as
//! associated data (a row copied to another repository or name does not
//! decrypt). A check row tells a wrong master key from a damaged store.
//!
//! Every change is one transaction; a busy timeout lets concurrent writers
//! wait for each other instead of failing.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use zeroize::Zeroizing;

use sealinit_core::bundle::{self, Entry, NONCE_LEN, PayloadError, TAG_LEN};
use sealinit_core::describe_io;
use sealinit_core::secret::{SecretKey, SecretValue};

/// Why a store operation failed. Names and paths may appear; values never.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    InvalidRepo(String),
    #[error("store {}: {reason}", path.display())]
    Database { path: PathBuf, reason: String },
    #[error("store {}: the master key does not open this store (wrong key file?); nothing was changed", path.display())]
    WrongMasterKey { path: PathBuf },
    #[error("repository {repo} has no secret named {name}; nothing was removed")]
    NoSuchSecret { repo: String, name: String },
    #[error(
        "secret {name} of {repo} does not decrypt: the row was modified or copied from another repository or name"
    )]
    SecretUndecryptable { repo: String, name: String },
    #[error("cannot seal: {0}")]
    Payload(#[from] PayloadError),
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
    #[error("repository {repo} does not exist; nothing was removed")]
    NoSuchRepo { repo: String },
    #[error("store {}: schema version {found} is newer than this sealctl knows ({known}); upgrade sealctl", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store {}: {}", path.display(), describe_io(source))]
    Missing { path: PathBuf, source: io::Error },
    #[error("{} already exists; refusing to overwrite it (remove it first or choose another path)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {}", path.display(), describe_io(source))]
    Create { path: PathBuf, source: io::Error },
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The schema this build writes and reads. 1: the first release. 2: adds
/// `secrets.allow_code_loading` (a code-loading name allowed at `set`).
/// Older stores are migrated when opened; newer ones are refused.
const SCHEMA_VERSION: i64 = 2;
const CHECK_PLAINTEXT: &[u8] = b"sealinit store master key check";
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// What `set_many` did to one secret.
#[derive(Debug, Clone, Serialize)]
pub struct SetOutcome {
    pub repo: String,
    pub name: String,
    pub version: i64,
    pub created: bool,
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
}

/// A repository's secrets, decrypted for sealing.
#[derive(Debug)]
pub struct RepoSecrets {
    /// The repository's stored spelling.
    pub repo: String,
    pub entries: Vec<Entry>,
    /// The code-loading names allowed when they were set.
    pub allowed: Vec<String>,
}

/// One secret as listed: never its value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub size: usize,
    pub version: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

pub struct Store {
    conn: Connection,
    master: SecretKey,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a new store at `path` (mode 0600, in a 0700 directory if
    /// the directory is new) whose values `master` will encrypt. Refuses an
    /// existing file.
    pub fn create(path: &Path, master: &SecretKey) -> Result<()> {
        let out_err = |source| StoreError::Create {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(out_err)?;
            }
        }
        sealinit_core::create_private(path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StoreError::Exists {
                path: path.to_owned(),
            },
            _ => out_err(e),
        })?;
        let result = (|| {
            let conn = connect(path)?;
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
                 CREATE TABLE secrets (
                     repo TEXT NOT NULL,
                     name TEXT NOT NULL,
                     version INTEGER NOT NULL,
                     nonce BLOB NOT NULL,
                     ciphertext BLOB NOT NULL,
                     size INTEGER NOT NULL,
                     updated_at INTEGER NOT NULL,
                     allow_code_loading INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (repo, name)
                 ) WITHOUT ROWID;",
            )
            .map_err(|e| db_err(path, e))?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION],
            )
            .map_err(|e| db_err(path, e))?;
            let check = encrypt(master, &check_aad(), CHECK_PLAINTEXT)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('check', ?1)",
                params![check],
            )
            .map_err(|e| db_err(path, e))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(path);
        }
        result
    }

    /// Opens an existing store and checks that `master` is its key.
    pub fn open(path: &Path, master: SecretKey) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|source| StoreError::Missing {
            path: path.to_owned(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "store {} is readable by other users (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let conn = connect(path)?;
        let check: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'check'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| db_err(path, e))?;
        let Some(check) = check else {
            return Err(StoreError::Database {
                path: path.to_owned(),
                reason: "not a sealinit store (no master key check row); create one with `sealctl store init`".into(),
            });
        };
        match decrypt(&master, &check_aad(), check) {
            Some(p) if p.as_slice() == CHECK_PLAINTEXT => {}
            _ => {
                return Err(StoreError::WrongMasterKey {
                    path: path.to_owned(),
                });
            }
        }
        migrate(&conn, path)?;
        Ok(Self {
            conn,
            master,
            path: path.to_owned(),
        })
    }

    /// The stored spelling of `repo` (compared case-insensitively), if it
    /// has secrets.
    fn stored_spelling(&self, repo: &str) -> Result<Option<String>> {
        validate_repo(repo)?;
        spelling(&self.conn, repo).map_err(|e| db_err(&self.path, e))
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
        validate_repo(repo)?;
        bundle::validate_each(entries)?;
        if let Some(e) = entries
            .iter()
            .find(|e| bundle::changes_code_loading(&e.name) && !opts.allow_names.contains(&e.name))
        {
            return Err(PayloadError::CodeLoadingName(e.name.clone()).into());
        }
        let now = sealinit_core::time::now() as i64;
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_err(&path, e))?;
        let repo = spelling(&tx, repo)
            .map_err(|e| db_err(&path, e))?
            .unwrap_or_else(|| repo.to_owned());
        let mut done = Vec::with_capacity(entries.len());
        for e in entries {
            let current: Option<i64> = tx
                .query_row(
                    "SELECT version FROM secrets WHERE repo = ?1 AND name = ?2",
                    params![repo, e.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|err| db_err(&path, err))?;
            if let Some(expected) = opts.if_version {
                let found = current.unwrap_or(0);
                if found != expected {
                    return Err(StoreError::VersionConflict {
                        repo,
                        name: e.name.clone(),
                        expected,
                        found,
                    });
                }
            }
            let version = current.map_or(1, |v| v + 1);
            let sealed = encrypt(
                &self.master,
                &row_aad(&repo, &e.name, version),
                e.value.expose(),
            )?;
            let allowed = opts.allow_names.contains(&e.name);
            tx.execute(
                "INSERT INTO secrets (repo, name, version, nonce, ciphertext, size, updated_at, allow_code_loading)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (repo, name) DO UPDATE SET version = ?3, nonce = ?4,
                     ciphertext = ?5, size = ?6, updated_at = ?7, allow_code_loading = ?8",
                params![
                    repo,
                    e.name,
                    version,
                    &sealed[..NONCE_LEN],
                    &sealed[NONCE_LEN..],
                    e.value.len() as i64,
                    now,
                    allowed
                ],
            )
            .map_err(|err| db_err(&path, err))?;
            done.push(SetOutcome {
                repo: repo.clone(),
                name: e.name.clone(),
                version,
                created: current.is_none(),
            });
        }
        // The repository as it now stands must still seal.
        let sizes: Vec<(usize, usize)> = {
            let mut stmt = tx
                .prepare("SELECT length(CAST(name AS BLOB)), size FROM secrets WHERE repo = ?1")
                .map_err(|e| db_err(&path, e))?;
            let rows = stmt
                .query_map(params![repo], |r| {
                    Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize))
                })
                .map_err(|e| db_err(&path, e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| db_err(&path, e))?
        };
        bundle::check_totals(sizes)?;
        tx.commit().map_err(|e| db_err(&path, e))?;
        Ok(done)
    }

    /// The secrets of `repo`, by name, without values.
    pub fn list(&self, repo: &str) -> Result<Vec<SecretInfo>> {
        let Some(repo) = self.stored_spelling(repo)? else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, size, version, updated_at FROM secrets WHERE repo = ?1 ORDER BY name",
            )
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map(params![repo], |r| {
                Ok(SecretInfo {
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as usize,
                    version: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            })
            .map_err(|e| db_err(&self.path, e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| db_err(&self.path, e))
    }

    /// Removes `names` from `repo` in one transaction; every name must
    /// exist. Returns each name with the version it had.
    pub fn remove(&mut self, repo: &str, names: &[String]) -> Result<Vec<(String, i64)>> {
        let repo = self
            .stored_spelling(repo)?
            .unwrap_or_else(|| repo.to_owned());
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_err(&path, e))?;
        let mut removed = Vec::with_capacity(names.len());
        for name in names {
            let version: Option<i64> = tx
                .query_row(
                    "DELETE FROM secrets WHERE repo = ?1 AND name = ?2 RETURNING version",
                    params![repo, name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| db_err(&path, e))?;
            let Some(version) = version else {
                return Err(StoreError::NoSuchSecret {
                    repo,
                    name: name.clone(),
                });
            };
            removed.push((name.clone(), version));
        }
        tx.commit().map_err(|e| db_err(&path, e))?;
        Ok(removed)
    }

    /// Removes a whole repository in one transaction; returns its stored
    /// spelling and how many secrets went.
    pub fn remove_repo(&mut self, repo: &str) -> Result<(String, usize)> {
        let Some(repo) = self.stored_spelling(repo)? else {
            return Err(StoreError::NoSuchRepo { repo: repo.into() });
        };
        let n = self
            .conn
            .execute("DELETE FROM secrets WHERE repo = ?1", params![repo])
            .map_err(|e| db_err(&self.path, e))?;
        Ok((repo, n))
    }

    /// Every repository with its number of secrets.
    pub fn repos(&self) -> Result<Vec<(String, usize)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT repo, COUNT(*) FROM secrets GROUP BY repo ORDER BY repo")
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))
            .map_err(|e| db_err(&self.path, e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| db_err(&self.path, e))
    }

    /// The decrypted secrets of `repo`, for sealing: an error if it has
    /// none, unless `allow_empty`.
    pub fn secrets(&self, repo: &str, allow_empty: bool) -> Result<RepoSecrets> {
        let Some(repo) = self.stored_spelling(repo)? else {
            return match allow_empty {
                true => Ok(RepoSecrets {
                    repo: repo.to_owned(),
                    entries: Vec::new(),
                    allowed: Vec::new(),
                }),
                false => Err(StoreError::EmptyRepo { repo: repo.into() }),
            };
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, version, nonce, ciphertext, allow_code_loading FROM secrets WHERE repo = ?1 ORDER BY name",
            )
            .map_err(|e| db_err(&self.path, e))?;
        let mut rows = stmt
            .query(params![repo])
            .map_err(|e| db_err(&self.path, e))?;
        let mut entries = Vec::new();
        let mut allowed = Vec::new();
        while let Some(row) = rows.next().map_err(|e| db_err(&self.path, e))? {
            let read = |i| row.get::<_, Vec<u8>>(i).map_err(|e| db_err(&self.path, e));
            let name: String = row.get(0).map_err(|e| db_err(&self.path, e))?;
            let version: i64 = row.get(1).map_err(|e| db_err(&self.path, e))?;
            let allow: bool = row.get(4).map_err(|e| db_err(&self.path, e))?;
            let mut sealed = read(2)?;
            sealed.extend_from_slice(&read(3)?);
            let mut value = decrypt(&self.master, &row_aad(&repo, &name, version), sealed)
                .ok_or_else(|| StoreError::SecretUndecryptable {
                    repo: repo.clone(),
                    name: name.clone(),
                })?;
            if allow {
                allowed.push(name.clone());
            }
            entries.push(Entry {
                name,
                // Moved out of the zeroizing wrapper, not copied.
                value: SecretValue::from(std::mem::take(&mut *value)),
            });
        }
        Ok(RepoSecrets {
            repo,
            entries,
            allowed,
        })
    }

    /// Re-encrypts every value and the check row under `new`, in one
    /// transaction: if it is interrupted, the old key still opens all.
    pub fn rotate(&mut self, new: &SecretKey) -> Result<usize> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(|e| db_err(&path, e))?;
        let rows: Vec<(String, String, i64, Vec<u8>)> = {
            let mut stmt = tx
                .prepare("SELECT repo, name, version, nonce, ciphertext FROM secrets")
                .map_err(|e| db_err(&path, e))?;
            let it = stmt
                .query_map([], |r| {
                    let mut sealed: Vec<u8> = r.get(3)?;
                    sealed.extend_from_slice(&r.get::<_, Vec<u8>>(4)?);
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, sealed))
                })
                .map_err(|e| db_err(&path, e))?;
            it.collect::<rusqlite::Result<_>>()
                .map_err(|e| db_err(&path, e))?
        };
        let count = rows.len();
        for (repo, name, version, sealed) in rows {
            // Decrypted and re-encrypted in one buffer: the plaintext is
            // never copied.
            let aad = row_aad(&repo, &name, version);
            let mut buf = Zeroizing::new(sealed);
            if !open_in_place(&self.master, &aad, &mut buf) {
                return Err(StoreError::SecretUndecryptable { repo, name });
            }
            seal_in_place(new, &aad, &mut buf)?;
            tx.execute(
                "UPDATE secrets SET nonce = ?3, ciphertext = ?4 WHERE repo = ?1 AND name = ?2",
                params![repo, name, &buf[..NONCE_LEN], &buf[NONCE_LEN..]],
            )
            .map_err(|e| db_err(&path, e))?;
        }
        let check = encrypt(new, &check_aad(), CHECK_PLAINTEXT)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'check'",
            params![check],
        )
        .map_err(|e| db_err(&path, e))?;
        tx.commit().map_err(|e| db_err(&path, e))?;
        Ok(count)
    }
}

/// The stored spelling of `repo`, compared case-insensitively.
fn spelling(conn: &Connection, repo: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT repo FROM secrets WHERE repo = ?1 COLLATE NOCASE LIMIT 1",
        params![repo],
        |r| r.get(0),
    )
    .optional()
}

/// Brings an older schema up to [`SCHEMA_VERSION`] in one transaction
/// (several processes may open the store at once: the version is read again
/// under the write lock); refuses a newer one.
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let read = |conn: &Connection| -> Result<i64> {
        conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .map_err(|e| db_err(path, e))
    };
    let found = read(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| db_err(path, e))?;
    let result = (|| {
        if read(conn)? < 2 {
            conn.execute_batch(
                "ALTER TABLE secrets ADD COLUMN allow_code_loading INTEGER NOT NULL DEFAULT 0;
                 UPDATE meta SET value = 2 WHERE key = 'schema';",
            )
            .map_err(|e| db_err(path, e))?;
            tracing::info!("store {}: schema 1 migrated to 2", path.display());
        }
        Ok(())
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(|e| db_err(path, e))?;
    result
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| db_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_err(path, e))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .map_err(|e| db_err(path, e))?;
    Ok(conn)
}

fn db_err(path: &Path, e: rusqlite::Error) -> StoreError {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let reason = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => "not a SQLite database".to_owned(),
        _ if busy => format!("still locked by another writer after {BUSY_TIMEOUT:?}; try again"),
        _ => e.to_string(),
    };
    StoreError::Database {
        path: path.to_owned(),
        reason,
    }
}

fn check_aad() -> Vec<u8> {
    b"sealinit-store-v1\0check".to_vec()
}

/// `sealinit-store-v1 NUL repo NUL name NUL version(u64 LE)`: names and
/// repositories contain no NUL, so the encoding is unambiguous.
fn row_aad(repo: &str, name: &str, version: i64) -> Vec<u8> {
    let mut aad = b"sealinit-store-v1\0".to_vec();
    aad.extend_from_slice(repo.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&(version as u64).to_le_bytes());
    aad
}

/// `nonce || ciphertext || tag` of `plaintext`: one buffer, encrypted in place.
fn encrypt(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
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
fn decrypt(key: &SecretKey, aad: &[u8], sealed: Vec<u8>) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(sealed);
    if !open_in_place(key, aad, &mut buf) {
        return None;
    }
    buf.drain(..NONCE_LEN);
    Some(buf)
}
