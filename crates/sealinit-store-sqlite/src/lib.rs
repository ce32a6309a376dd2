//! The store's SQLite backend: one database file (bundled SQLite), WAL
//! journal, `synchronous=FULL`, a 30 s busy timeout so that concurrent
//! writers wait for each other, one transaction per change. The file is
//! created 0600 (in a 0700 directory if the directory is new).
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sealinit_store::{
    AuditQuery, AuditRecord, Backend, DEFAULT_KEEP, DeletedSecret, HistoryEntry, IdempotencyRow,
    Keyring, KeyringWriter, MasterKeyRow, OWN_PREFIX, RepoInfo, Result, SCHEMA_VERSION, SealedRow,
    SecretInfo, SessionRow, StoreError, StoredRow, TokenRow, WrappedKey, Writer,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for another writer, about [`BUSY_TIMEOUT`] in all. SQLite's own
/// busy timeout sleeps 1, 2, 5, 10... up to 100 ms between tries, so a lock
/// held for a fraction of a millisecond (one commit) sat idle for
/// milliseconds while its waiters slept: under four concurrent sealing
/// processes the lock, not the work, set the pace. This one polls every
/// 50 µs for the first millisecond, then every 250 µs, then every 1 ms.
fn wait_for_writer(attempt: i32) -> bool {
    const FAST: i32 = 20; // × 50 µs = 1 ms
    const MEDIUM: i32 = FAST + 76; // × 250 µs = 19 ms
    let step = match attempt {
        a if a < FAST => Duration::from_micros(50),
        a if a < MEDIUM => Duration::from_micros(250),
        _ => Duration::from_millis(1),
    };
    let waited_ms = match attempt {
        a if a < MEDIUM => 0,
        a => i64::from(a - MEDIUM),
    };
    if waited_ms >= BUSY_TIMEOUT.as_millis() as i64 {
        return false;
    }
    std::thread::sleep(step);
    true
}

/// The migrations, in order: `MIGRATIONS[i]` takes schema `i + 1` to
/// `i + 2`. A new store is created at schema 1, as the first release
/// created it, and migrated: upgrades and new stores take one path.
const MIGRATIONS: [&str; 8] = [
    // 2: a code-loading name allowed at `set`, recorded.
    "ALTER TABLE secrets ADD COLUMN allow_code_loading INTEGER NOT NULL DEFAULT 0;",
    // 3: every version (and delete marker) kept, the audit trail, the
    // retention setting. The current values become each secret's history.
    "CREATE TABLE secret_versions (
         repo TEXT NOT NULL,
         name TEXT NOT NULL,
         version INTEGER NOT NULL,
         nonce BLOB,
         ciphertext BLOB,
         size INTEGER NOT NULL,
         created_at INTEGER NOT NULL,
         actor TEXT NOT NULL,
         deleted INTEGER NOT NULL DEFAULT 0,
         allow_code_loading INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (repo, name, version)
     ) WITHOUT ROWID;
     INSERT INTO secret_versions
         SELECT repo, name, version, nonce, ciphertext, size, updated_at,
                'before schema 3', 0, allow_code_loading FROM secrets;
     CREATE TABLE audit (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         at INTEGER NOT NULL,
         actor TEXT NOT NULL,
         action TEXT NOT NULL,
         repo TEXT NOT NULL,
         detail TEXT NOT NULL
     );
     CREATE INDEX audit_repo_at ON audit (repo, at);
     INSERT OR IGNORE INTO meta (key, value) VALUES ('keep', 10);",
    // 4: envelope encryption. The values move to data keys when a master
    // key first opens the store (sealinit_store::Store::open).
    "CREATE TABLE master_keys (
         id TEXT PRIMARY KEY,
         check_value BLOB NOT NULL,
         is_primary INTEGER NOT NULL DEFAULT 0,
         added_at INTEGER NOT NULL
     );
     CREATE TABLE data_keys (
         repo_key TEXT NOT NULL,
         key_id TEXT NOT NULL,
         wrapped BLOB NOT NULL,
         PRIMARY KEY (repo_key, key_id)
     ) WITHOUT ROWID;
     -- The audit trail without AUTOINCREMENT: rows are never deleted, so
     -- ids stay increasing, and each record (one per seal) no longer
     -- rewrites sqlite_sequence's page too.
     CREATE TABLE audit_v4 (
         id INTEGER PRIMARY KEY,
         at INTEGER NOT NULL,
         actor TEXT NOT NULL,
         action TEXT NOT NULL,
         repo TEXT NOT NULL,
         detail TEXT NOT NULL
     );
     INSERT INTO audit_v4 SELECT id, at, actor, action, repo, detail FROM audit;
     DROP TABLE audit;
     ALTER TABLE audit_v4 RENAME TO audit;
     CREATE INDEX audit_repo_at ON audit (repo, at);
     DELETE FROM sqlite_sequence WHERE name = 'audit';",
    // 5: the service's API tokens, as keyed hashes.
    "CREATE TABLE tokens (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         hash TEXT NOT NULL UNIQUE,
         scopes TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER,
         last_used_at INTEGER,
         revoked_at INTEGER
     );",
    // 6: tokens that may act for someone; the page's sign-in sessions,
    // shared by every instance.
    "ALTER TABLE tokens ADD COLUMN may_act_for INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE sessions (
         id_hash TEXT PRIMARY KEY,
         token_id TEXT NOT NULL,
         csrf TEXT NOT NULL,
         started INTEGER NOT NULL,
         seen INTEGER NOT NULL,
         flash TEXT
     );
     CREATE INDEX sessions_token ON sessions (token_id, started);
     CREATE TABLE idempotency (
         scope TEXT PRIMARY KEY,
         request TEXT NOT NULL,
         created INTEGER NOT NULL,
         status INTEGER,
         sealed BLOB
     );
     CREATE INDEX idempotency_created ON idempotency (created);",
    // 7: repositories exist explicitly. Every repository with secrets or
    // history is kept, in the spelling its secrets have.
    "CREATE TABLE repos (
         repo TEXT NOT NULL PRIMARY KEY COLLATE NOCASE,
         created_at INTEGER NOT NULL,
         created_by TEXT NOT NULL
     );
     INSERT OR IGNORE INTO repos (repo, created_at, created_by)
         SELECT repo, MIN(updated_at), 'before schema 7' FROM secrets GROUP BY repo;
     INSERT OR IGNORE INTO repos (repo, created_at, created_by)
         SELECT repo, MIN(created_at), 'before schema 7' FROM secret_versions GROUP BY repo;",
    // 8: each version's route (delivery, hosts, placeholder); empty: env.
    "ALTER TABLE secrets ADD COLUMN route TEXT NOT NULL DEFAULT '';
     ALTER TABLE secret_versions ADD COLUMN route TEXT NOT NULL DEFAULT '';",
    // 9: each repository's egress policy; empty: allow.
    "ALTER TABLE repos ADD COLUMN egress TEXT NOT NULL DEFAULT '';",
];

/// Schema 1, as the first release created it.
const SCHEMA_1: &str = "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE secrets (
         repo TEXT NOT NULL,
         name TEXT NOT NULL,
         version INTEGER NOT NULL,
         nonce BLOB NOT NULL,
         ciphertext BLOB NOT NULL,
         size INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (repo, name)
     ) WITHOUT ROWID;";

#[derive(Debug)]
pub struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
}

impl SqliteBackend {
    /// Creates the database file (refusing an existing one) and returns the
    /// backend, ready for [`Backend::create`].
    pub fn create_file(path: &Path) -> Result<Self> {
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
        Self::connect(path)
    }

    /// Opens an existing database file.
    pub fn open(path: &Path) -> Result<Self> {
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
        Self::connect(path)
    }

    fn connect(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| db_err(path, e))?;
        conn.busy_handler(Some(wait_for_writer))
            .map_err(|e| db_err(path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 64;",
        )
        .map_err(|e| db_err(path, e))?;
        // Every command is a short-lived process: a checkpoint at each
        // close would add its fsyncs to every command that wrote (a seal
        // writes its audit record). Committed data is durable in the WAL
        // (`synchronous = FULL`). Checkpoints run every 64 pages, so that
        // while processes overlap the WAL restarts often; it is trimmed
        // when it grows anyway (see `Drop`).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(|e| db_err(path, e))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Runs `f` in one write transaction (taking the write lock at once),
    /// committed only if it succeeds.
    fn immediate<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let e = |e| db_err(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let out = f(&tx).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(out)
    }

    /// Runs `f` on `repo` in one write transaction: an existing
    /// repository, or with `create` (when, who) a new one.
    fn in_repo(
        &mut self,
        repo: &str,
        create: Option<(i64, &str)>,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let e = |e| db_err(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let repo = match (spelling(&tx, repo).map_err(e)?, create) {
            (Some(existing), Some(_)) => return Err(StoreError::RepoExists { repo: existing }),
            (Some(existing), None) => existing,
            (None, Some((at, actor))) => {
                tx.execute(
                    "INSERT INTO repos (repo, created_at, created_by) VALUES (?1, ?2, ?3)",
                    params![repo, at, actor],
                )
                .map_err(e)?;
                repo.to_owned()
            }
            (None, None) if repo.starts_with(OWN_PREFIX) => repo.to_owned(),
            (None, None) => return Err(StoreError::NoSuchRepo { repo: repo.into() }),
        };
        f(&mut TxWriter {
            tx: &tx,
            repo,
            path: &path,
        })?;
        tx.commit().map_err(e)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |e| db_err(&self.path, e)
    }

    /// Every row `sql` returns, through `f`.
    fn query<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let rows = stmt.query_map(params, f).map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }
}

/// Above this, a closing connection checkpoints and truncates the WAL.
const WAL_TRIM_BYTES: u64 = 256 * 1024;

impl Drop for SqliteBackend {
    /// The first process to open the database after the last one closed
    /// reads the whole WAL to rebuild its index, and that index forgets
    /// what was checkpointed, so the WAL never restarts by itself: with
    /// one process per command it grew to 4 MiB, read by every command.
    /// A closing connection that finds it over 256 KiB checkpoints it and
    /// truncates it, without waiting: if another process is busy, it is
    /// left for later.
    fn drop(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRIM_BYTES) {
            let _ = self.conn.busy_timeout(Duration::ZERO);
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
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
        location: path.display().to_string(),
        reason,
    }
}

fn spelling(conn: &Connection, repo: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT repo FROM repos WHERE repo = ?1",
        params![repo],
        |r| r.get(0),
    )
    .optional()
}

fn schema(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
        r.get(0)
    })
}

struct TxWriter<'a> {
    tx: &'a Transaction<'a>,
    repo: String,
    path: &'a Path,
}

impl Writer for TxWriter<'_> {
    fn repo(&self) -> &str {
        &self.repo
    }

    fn version(&mut self, name: &str) -> Result<Option<i64>> {
        self.tx
            .query_row(
                "SELECT version FROM secrets WHERE repo = ?1 AND name = ?2",
                params![self.repo, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db_err(self.path, e))
    }

    fn route(&mut self, name: &str) -> Result<Option<sealinit_store::Route>> {
        self.tx
            .query_row(
                "SELECT route FROM secrets WHERE repo = ?1 AND name = ?2",
                params![self.repo, name],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|r| r.map(|t| sealinit_store::Route::from_column(&t)))
            .map_err(|e| db_err(self.path, e))
    }

    fn set_egress(&mut self, policy: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE repos SET egress = ?2 WHERE repo = ?1",
                params![self.repo, policy],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.path, e))
    }

    fn last_version(&mut self, name: &str) -> Result<Option<i64>> {
        self.tx
            .query_row(
                "SELECT MAX(version) FROM secret_versions WHERE repo = ?1 AND name = ?2",
                params![self.repo, name],
                |r| r.get(0),
            )
            .map_err(|e| db_err(self.path, e))
    }

    fn put(&mut self, row: &SealedRow, at: i64, actor: &str) -> Result<()> {
        let (nonce, ct) = row.sealed.split_at(sealinit_core::bundle::NONCE_LEN);
        let route = row.route.to_column();
        let e = |e| db_err(self.path, e);
        self.tx
            .execute(
                "INSERT INTO secrets (repo, name, version, nonce, ciphertext, size, updated_at, allow_code_loading, route)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (repo, name) DO UPDATE SET version = ?3, nonce = ?4,
                     ciphertext = ?5, size = ?6, updated_at = ?7, allow_code_loading = ?8, route = ?9",
                params![self.repo, row.name, row.version, nonce, ct, row.size, at, row.allow_code_loading, route],
            )
            .map_err(e)?;
        self.tx
            .execute(
                "INSERT INTO secret_versions
                     (repo, name, version, nonce, ciphertext, size, created_at, actor, deleted, allow_code_loading, route)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
                params![self.repo, row.name, row.version, nonce, ct, row.size, at, actor, row.allow_code_loading, route],
            )
            .map(|_| ())
            .map_err(e)
    }

    fn delete(&mut self, name: &str, marker: i64, at: i64, actor: &str) -> Result<Option<i64>> {
        let e = |e| db_err(self.path, e);
        let version: Option<i64> = self
            .tx
            .query_row(
                "DELETE FROM secrets WHERE repo = ?1 AND name = ?2 RETURNING version",
                params![self.repo, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?;
        if version.is_some() {
            self.tx
                .execute(
                    "INSERT INTO secret_versions (repo, name, version, size, created_at, actor, deleted)
                     VALUES (?1, ?2, ?3, 0, ?4, ?5, 1)",
                    params![self.repo, name, marker, at, actor],
                )
                .map_err(e)?;
        }
        Ok(version)
    }

    fn history_row(&mut self, name: &str, version: i64) -> Result<Option<SealedRow>> {
        self.tx
            .query_row(
                "SELECT name, version, nonce, ciphertext, size, allow_code_loading, route FROM secret_versions
                 WHERE repo = ?1 AND name = ?2 AND version = ?3 AND deleted = 0 AND ciphertext IS NOT NULL",
                params![self.repo, name, version],
                sealed_row,
            )
            .optional()
            .map_err(|e| db_err(self.path, e))
    }

    fn prune(&mut self, name: &str, keep: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE secret_versions SET nonce = NULL, ciphertext = NULL
                 WHERE repo = ?1 AND name = ?2 AND ciphertext IS NOT NULL AND version NOT IN (
                     SELECT version FROM secret_versions WHERE repo = ?1 AND name = ?2 AND deleted = 0
                     ORDER BY version DESC LIMIT ?3)",
                params![self.repo, name, keep.max(1)],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.path, e))
    }

    fn audit(&mut self, record: &AuditRecord) -> Result<()> {
        insert_audit(self.tx, record).map_err(|e| db_err(self.path, e))
    }

    fn sizes(&mut self) -> Result<Vec<(usize, usize)>> {
        let mut stmt = self
            .tx
            .prepare("SELECT length(CAST(name AS BLOB)), size FROM secrets WHERE repo = ?1")
            .map_err(|e| db_err(self.path, e))?;
        let rows = stmt
            .query_map(params![self.repo], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize))
            })
            .map_err(|e| db_err(self.path, e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| db_err(self.path, e))
    }

    fn wraps(&mut self) -> Result<Vec<WrappedKey>> {
        Ok(wraps(self.tx, Some(&self.repo))
            .map_err(|e| db_err(self.path, e))?
            .into_iter()
            .map(|(_, w)| w)
            .collect())
    }

    fn masters(&mut self) -> Result<Vec<MasterKeyRow>> {
        masters(self.tx).map_err(|e| db_err(self.path, e))
    }

    fn set_wraps(&mut self, ws: &[WrappedKey]) -> Result<()> {
        let rk = self.repo.to_ascii_lowercase();
        let e = |e| db_err(self.path, e);
        self.tx
            .execute("DELETE FROM data_keys WHERE repo_key = ?1", params![rk])
            .map_err(e)?;
        for w in ws {
            put_wrap(self.tx, &rk, w).map_err(e)?;
        }
        Ok(())
    }

    fn stored_rows(&mut self) -> Result<Vec<StoredRow>> {
        stored_rows(self.tx, Some(&self.repo)).map_err(|e| db_err(self.path, e))
    }

    fn replace_row(&mut self, row: &StoredRow) -> Result<()> {
        replace_row(self.tx, row).map_err(|e| db_err(self.path, e))
    }
}

fn masters(conn: &Connection) -> rusqlite::Result<Vec<MasterKeyRow>> {
    let mut stmt = conn
        .prepare("SELECT id, check_value, is_primary, added_at FROM master_keys ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok(MasterKeyRow {
            id: r.get(0)?,
            check: r.get(1)?,
            primary: r.get(2)?,
            added_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The wrapped data keys of `repo` (any spelling), or of every repository,
/// by lower-cased repository.
fn wraps(conn: &Connection, repo: Option<&str>) -> rusqlite::Result<Vec<(String, WrappedKey)>> {
    let mut stmt = conn.prepare(
        "SELECT repo_key, key_id, wrapped FROM data_keys
         WHERE ?1 IS NULL OR repo_key = lower(?1) ORDER BY repo_key, key_id",
    )?;
    let rows = stmt.query_map(params![repo], |r| {
        Ok((
            r.get(0)?,
            WrappedKey {
                key_id: r.get(1)?,
                wrapped: r.get(2)?,
            },
        ))
    })?;
    rows.collect()
}

fn put_wrap(conn: &Connection, repo_key: &str, w: &WrappedKey) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO data_keys (repo_key, key_id, wrapped) VALUES (?1, ?2, ?3)
         ON CONFLICT (repo_key, key_id) DO UPDATE SET wrapped = ?3",
        params![repo_key, w.key_id, w.wrapped],
    )
    .map(|_| ())
}

/// Every ciphertext of `repo` (any spelling), or of every repository.
fn stored_rows(conn: &Connection, repo: Option<&str>) -> rusqlite::Result<Vec<StoredRow>> {
    let mut stmt = conn.prepare(
        "SELECT repo, name, version, nonce, ciphertext, size, allow_code_loading, route, 0 AS history
             FROM secrets WHERE ?1 IS NULL OR repo = ?1 COLLATE NOCASE
         UNION ALL
         SELECT repo, name, version, nonce, ciphertext, size, allow_code_loading, route, 1
             FROM secret_versions
             WHERE ciphertext IS NOT NULL AND (?1 IS NULL OR repo = ?1 COLLATE NOCASE)",
    )?;
    let rows = stmt.query_map(params![repo], |r| {
        Ok(StoredRow {
            repo: r.get("repo")?,
            row: sealed_row(r)?,
            history: r.get("history")?,
        })
    })?;
    rows.collect()
}

fn replace_row(conn: &Connection, r: &StoredRow) -> rusqlite::Result<()> {
    let (nonce, ct) = r.row.sealed.split_at(sealinit_core::bundle::NONCE_LEN);
    let sql = match r.history {
        false => {
            "UPDATE secrets SET nonce = ?4, ciphertext = ?5
             WHERE repo = ?1 AND name = ?2 AND version = ?3"
        }
        true => {
            "UPDATE secret_versions SET nonce = ?4, ciphertext = ?5
             WHERE repo = ?1 AND name = ?2 AND version = ?3"
        }
    };
    conn.execute(sql, params![r.repo, r.row.name, r.row.version, nonce, ct])
        .map(|_| ())
}

struct KeyringTx<'a> {
    tx: &'a Transaction<'a>,
    path: &'a Path,
}

impl KeyringWriter for KeyringTx<'_> {
    fn keyring(&mut self) -> Result<Keyring> {
        keyring(self.tx)
            .map(Option::unwrap_or_default)
            .map_err(|e| db_err(self.path, e))
    }

    fn add_master(&mut self, row: &MasterKeyRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO master_keys (id, check_value, is_primary, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![row.id, row.check, row.primary, row.added_at],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.path, e))
    }

    fn set_primary(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("UPDATE master_keys SET is_primary = (id = ?1)", params![id])
            .map(|_| ())
            .map_err(|e| db_err(self.path, e))
    }

    fn remove_master(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM data_keys WHERE key_id = ?1", params![id])
            .and_then(|_| {
                self.tx
                    .execute("DELETE FROM master_keys WHERE id = ?1", params![id])
            })
            .map(|_| ())
            .map_err(|e| db_err(self.path, e))
    }

    fn wraps(&mut self) -> Result<Vec<(String, WrappedKey)>> {
        wraps(self.tx, None).map_err(|e| db_err(self.path, e))
    }

    fn put_wrap(&mut self, repo_key: &str, w: &WrappedKey) -> Result<()> {
        put_wrap(self.tx, repo_key, w).map_err(|e| db_err(self.path, e))
    }

    fn stored_rows(&mut self) -> Result<Vec<StoredRow>> {
        stored_rows(self.tx, None).map_err(|e| db_err(self.path, e))
    }

    fn replace_row(&mut self, row: &StoredRow) -> Result<()> {
        replace_row(self.tx, row).map_err(|e| db_err(self.path, e))
    }

    fn drop_legacy_check(&mut self) -> Result<()> {
        self.tx
            .execute("DELETE FROM meta WHERE key = 'check'", [])
            .map(|_| ())
            .map_err(|e| db_err(self.path, e))
    }

    fn audit(&mut self, record: &AuditRecord) -> Result<()> {
        insert_audit(self.tx, record).map_err(|e| db_err(self.path, e))
    }
}

/// The keyring at any schema; `None` for a database that holds no store.
fn keyring(conn: &Connection) -> rusqlite::Result<Option<Keyring>> {
    let (meta, keyring): (bool, bool) = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'),
                EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'master_keys')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if !meta {
        return Ok(None);
    }
    let legacy_check = conn
        .query_row("SELECT value FROM meta WHERE key = 'check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let masters = match keyring {
        true => masters(conn)?,
        false => Vec::new(),
    };
    Ok(
        (legacy_check.is_some() || !masters.is_empty()).then_some(Keyring {
            masters,
            legacy_check,
        }),
    )
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let scopes: String = r.get(3)?;
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        hash: r.get(2)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
        may_act_for: r.get(8)?,
    })
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id_hash: r.get(0)?,
        token_id: r.get(1)?,
        csrf: r.get(2)?,
        started: r.get(3)?,
        seen: r.get(4)?,
        flash: r.get(5)?,
    })
}

fn insert_audit(conn: &Connection, record: &AuditRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, repo, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            record.at,
            record.actor,
            record.action,
            record.repo,
            record.detail.to_string()
        ],
    )
    .map(|_| ())
}

fn sealed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedRow> {
    let mut sealed: Vec<u8> = r.get("nonce")?;
    sealed.extend_from_slice(&r.get::<_, Vec<u8>>("ciphertext")?);
    Ok(SealedRow {
        name: r.get("name")?,
        version: r.get("version")?,
        sealed,
        size: r.get("size")?,
        allow_code_loading: r.get("allow_code_loading")?,
        route: sealinit_store::Route::from_column(&r.get::<_, String>("route")?),
    })
}

impl Backend for SqliteBackend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn create(&mut self, check: &[u8]) -> Result<()> {
        let result = (|| {
            self.conn.execute_batch(SCHEMA_1).map_err(self.err())?;
            self.conn
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', 1), ('check', ?1)",
                    params![check],
                )
                .map_err(self.err())?;
            self.migrate()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.path);
        }
        result
    }

    fn keyring(&mut self) -> Result<Option<Keyring>> {
        keyring(&self.conn).map_err(self.err())
    }

    fn migrate(&mut self) -> Result<()> {
        let found = schema(&self.conn).map_err(self.err())?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                location: self.location(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_err(&path, e))?;
        // Read again under the write lock: another process may have
        // migrated meanwhile.
        let mut at = schema(&tx).map_err(|e| db_err(&path, e))?;
        while at < SCHEMA_VERSION {
            tx.execute_batch(MIGRATIONS[(at - 1) as usize])
                .map_err(|e| db_err(&path, e))?;
            at += 1;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema'",
                params![at],
            )
            .map_err(|e| db_err(&path, e))?;
            tracing::info!("store {}: schema migrated to {at}", path.display());
        }
        tx.commit().map_err(|e| db_err(&path, e))
    }

    fn spelling(&mut self, repo: &str) -> Result<Option<String>> {
        spelling(&self.conn, repo).map_err(self.err())
    }

    fn write(
        &mut self,
        repo: &str,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>,
    ) -> Result<()> {
        self.in_repo(repo, None, f)
    }

    fn create_repo(
        &mut self,
        repo: &str,
        at: i64,
        actor: &str,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>,
    ) -> Result<()> {
        self.in_repo(repo, Some((at, actor)), f)
    }

    fn egress(&mut self, repo: &str) -> Result<String> {
        self.conn
            .query_row(
                "SELECT egress FROM repos WHERE repo = ?1",
                params![repo],
                |r| r.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(self.err())
    }

    fn holders(&mut self, prefix: &str) -> Result<Vec<(String, usize)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT repo, COUNT(*) FROM secrets WHERE substr(repo, 1, length(?1)) = ?1
                 GROUP BY repo ORDER BY repo COLLATE BINARY",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![prefix], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    fn data_key_wraps(&mut self, repo: &str) -> Result<Vec<WrappedKey>> {
        Ok(wraps(&self.conn, Some(repo))
            .map_err(self.err())?
            .into_iter()
            .map(|(_, w)| w)
            .collect())
    }

    fn list(&mut self, repo: &str) -> Result<Vec<SecretInfo>> {
        self.query(
            // One statement: who wrote each current version, and when the
            // secret first appeared since its last delete.
            "SELECT s.name, s.size, s.version, s.updated_at,
                    (SELECT v.actor FROM secret_versions v
                     WHERE v.repo = s.repo AND v.name = s.name AND v.version = s.version),
                    (SELECT MIN(v.created_at) FROM secret_versions v
                     WHERE v.repo = s.repo AND v.name = s.name AND v.version >
                         COALESCE((SELECT MAX(d.version) FROM secret_versions d
                                   WHERE d.repo = s.repo AND d.name = s.name AND d.deleted <> 0), 0)),
                    s.route
             FROM secrets s WHERE s.repo = ?1 ORDER BY s.name",
            params![repo],
            |r| {
                let updated_at: i64 = r.get(3)?;
                Ok(SecretInfo {
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as usize,
                    version: r.get(2)?,
                    updated_at,
                    updated_by: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    created_at: r.get::<_, Option<i64>>(5)?.unwrap_or(updated_at),
                    route: sealinit_store::Route::from_column(&r.get::<_, String>(6)?),
                })
            },
        )
    }

    fn rows(&mut self, repo: &str) -> Result<(Vec<WrappedKey>, Vec<SealedRow>)> {
        let path = self.path.clone();
        let e = |e| db_err(&path, e);
        // One read transaction: one snapshot of the data key and the values.
        let tx = self.conn.transaction().map_err(e)?;
        let ws = wraps(&tx, Some(repo))
            .map_err(e)?
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        let rows = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT name, version, nonce, ciphertext, size, allow_code_loading, route FROM secrets
                         WHERE repo = ?1 ORDER BY name",
                )
                .map_err(e)?;
            let it = stmt.query_map(params![repo], sealed_row).map_err(e)?;
            it.collect::<rusqlite::Result<Vec<_>>>().map_err(e)?
        };
        tx.commit().map_err(e)?;
        Ok((ws, rows))
    }

    fn repos(&mut self) -> Result<Vec<RepoInfo>> {
        // The last change counts deletes too: the newest version row.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.repo, COUNT(s.name), MAX(r.created_at,
                        COALESCE(MAX(s.updated_at), 0),
                        COALESCE((SELECT MAX(v.created_at) FROM secret_versions v WHERE v.repo = r.repo), 0))
                 FROM repos r LEFT JOIN secrets s ON s.repo = r.repo
                 GROUP BY r.repo ORDER BY r.repo COLLATE BINARY",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RepoInfo {
                    repo: r.get(0)?,
                    secrets: r.get::<_, i64>(1)? as usize,
                    updated_at: r.get(2)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    fn remove_repo(
        &mut self,
        repo: &str,
        at: i64,
        actor: &str,
        audit: &mut dyn FnMut(usize) -> AuditRecord,
    ) -> Result<usize> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT INTO secret_versions (repo, name, version, size, created_at, actor, deleted)
                 SELECT s.repo, s.name,
                        (SELECT MAX(v.version) FROM secret_versions v WHERE v.repo = s.repo AND v.name = s.name) + 1,
                        0, ?2, ?3, 1
                 FROM secrets s WHERE s.repo = ?1",
                params![repo, at, actor],
            )?;
            let n = tx.execute("DELETE FROM secrets WHERE repo = ?1", params![repo])?;
            tx.execute("DELETE FROM repos WHERE repo = ?1", params![repo])?;
            insert_audit(tx, &audit(n))?;
            Ok(n)
        })
    }

    fn history(&mut self, repo: &str, name: &str) -> Result<Vec<HistoryEntry>> {
        self.query(
            "SELECT version, created_at, actor, size, deleted, ciphertext IS NULL FROM secret_versions
                 WHERE repo = ?1 AND name = ?2 ORDER BY version",
            params![repo,
            name], |r| {
                let deleted: bool = r.get(4)?;
                Ok(HistoryEntry {
                    version: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    size: r.get(3)?,
                    deleted,
                    pruned: r.get::<_, bool>(5)? && !deleted,
                })
            },
        )
    }

    fn deleted(&mut self, repo: &str) -> Result<Vec<DeletedSecret>> {
        self.query(
            "SELECT d.name, d.version, d.created_at, d.actor,
                    (SELECT MAX(v.version) FROM secret_versions v
                     WHERE v.repo = d.repo AND v.name = d.name AND v.deleted = 0 AND v.ciphertext IS NOT NULL)
                 FROM secret_versions d
                 WHERE d.repo = ?1 AND d.deleted <> 0
                   AND d.version = (SELECT MAX(x.version) FROM secret_versions x WHERE x.repo = d.repo AND x.name = d.name)
                 ORDER BY d.name",
            params![repo],
            |r| {
                Ok(DeletedSecret {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    at: r.get(2)?,
                    actor: r.get(3)?,
                    restorable: r.get(4)?,
                })
            },
        )
    }

    fn keep(&mut self) -> Result<i64> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'keep'", [], |r| {
                r.get(0)
            })
            .optional()
            .map(|k| k.unwrap_or(DEFAULT_KEEP))
            .map_err(self.err())
    }

    fn set_keep(&mut self, keep: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('keep', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                params![keep],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn audit_append(&mut self, record: &AuditRecord) -> Result<()> {
        insert_audit(&self.conn, record).map_err(self.err())
    }

    fn audit_append_many(&mut self, records: &[AuditRecord]) -> Result<()> {
        self.immediate(|tx| records.iter().try_for_each(|r| insert_audit(tx, r)))
    }

    fn token_insert(&mut self, t: &TokenRow, audit: &AuditRecord) -> Result<()> {
        let scopes = serde_json::to_string(&t.scopes).unwrap_or_default();
        self.immediate(|tx| {
            tx.execute(
                "INSERT INTO tokens (id, name, hash, scopes, created_at, expires_at, may_act_for)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t.id,
                    t.name,
                    t.hash,
                    scopes,
                    t.created_at,
                    t.expires_at,
                    t.may_act_for
                ],
            )?;
            insert_audit(tx, audit)
        })
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(self
            .query(
                "SELECT id, name, hash, scopes, created_at, expires_at, last_used_at, revoked_at, may_act_for
                 FROM tokens WHERE hash = ?1",
                params![hash],
                token_row,
            )?
            .pop())
    }

    fn tokens(&mut self) -> Result<Vec<TokenRow>> {
        self.query(
            "SELECT id, name, hash, scopes, created_at, expires_at, last_used_at, revoked_at, may_act_for
             FROM tokens ORDER BY created_at, rowid",
            [],
            token_row,
        )
    }

    fn token_revoke(&mut self, id: &str, at: i64, audit: &AuditRecord) -> Result<bool> {
        self.immediate(|tx| {
            let n = tx.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, at],
            )?;
            if n > 0 {
                insert_audit(tx, audit)?;
            }
            Ok(n > 0)
        })
    }

    fn token_touch(&mut self, id: &str, at: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn token_by_id(&mut self, id: &str) -> Result<Option<TokenRow>> {
        Ok(self
            .query(
                "SELECT id, name, hash, scopes, created_at, expires_at, last_used_at, revoked_at, may_act_for
                 FROM tokens WHERE id = ?1",
                params![id],
                token_row,
            )?
            .pop())
    }

    fn session_insert(&mut self, s: &SessionRow, keep: usize, stale: i64) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "DELETE FROM sessions WHERE seen < ?1 OR id_hash IN (
                     SELECT id_hash FROM sessions WHERE token_id = ?2
                     ORDER BY started DESC, rowid DESC LIMIT -1 OFFSET ?3)",
                params![stale, s.token_id, keep.saturating_sub(1) as i64],
            )?;
            tx.execute(
                "INSERT INTO sessions (id_hash, token_id, csrf, started, seen, flash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.id_hash, s.token_id, s.csrf, s.started, s.seen, s.flash],
            )
            .map(|_| ())
        })
    }

    fn session_get(&mut self, id_hash: &str) -> Result<Option<SessionRow>> {
        Ok(self
            .query(
                "SELECT id_hash, token_id, csrf, started, seen, flash FROM sessions WHERE id_hash = ?1",
                params![id_hash],
                session_row,
            )?
            .pop())
    }

    fn session_update(&mut self, id_hash: &str, seen: i64, flash: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sessions SET seen = ?2, flash = ?3 WHERE id_hash = ?1",
                params![id_hash, seen, flash],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn session_delete(&mut self, id_hash: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sessions WHERE id_hash = ?1", params![id_hash])
            .map(|_| ())
            .map_err(self.err())
    }

    fn idempotency_claim(
        &mut self,
        scope: &str,
        request: &str,
        now: i64,
        stale: i64,
    ) -> Result<Option<IdempotencyRow>> {
        self.immediate(|tx| {
            tx.execute("DELETE FROM idempotency WHERE created < ?1", params![stale])?;
            let taken = tx.execute(
                "INSERT OR IGNORE INTO idempotency (scope, request, created) VALUES (?1, ?2, ?3)",
                params![scope, request, now],
            )?;
            if taken == 1 {
                return Ok(None);
            }
            tx.query_row(
                "SELECT request, status, sealed FROM idempotency WHERE scope = ?1",
                params![scope],
                |r| {
                    Ok(Some(IdempotencyRow {
                        request: r.get(0)?,
                        status: r.get(1)?,
                        sealed: r.get(2)?,
                    }))
                },
            )
        })
    }

    fn idempotency_finish(&mut self, scope: &str, status: i64, sealed: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "UPDATE idempotency SET status = ?2, sealed = ?3 WHERE scope = ?1",
                params![scope, status, sealed],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn idempotency_release(&mut self, scope: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM idempotency WHERE scope = ?1", params![scope])
            .map(|_| ())
            .map_err(self.err())
    }

    fn audit_page(&mut self, q: &AuditQuery<'_>) -> Result<Vec<(i64, AuditRecord)>> {
        let limit = q.limit.map_or(-1, |l| l as i64);
        self.query(
            "SELECT id, at, actor, action, repo, detail FROM audit
                 WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR at >= ?2)
                   AND (?3 IS NULL OR at < ?3) AND (?4 IS NULL OR id > ?4)
                 ORDER BY id LIMIT ?5",
            params![q.repo, q.since, q.until, q.after, limit],
            |r| {
                let detail: String = r.get(5)?;
                Ok((
                    r.get(0)?,
                    AuditRecord {
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        repo: r.get(4)?,
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    },
                ))
            },
        )
    }

    fn audit_prune(
        &mut self,
        before: i64,
        record: &mut dyn FnMut(usize) -> AuditRecord,
    ) -> Result<usize> {
        // The prune's own record first, then only older ids go: the
        // newest id always stays, so SQLite never hands an id out again
        // (ids are the API's cursors and the export's mark).
        self.immediate(|tx| {
            insert_audit(tx, &record(0))?;
            let own = tx.last_insert_rowid();
            let n = tx.execute(
                "DELETE FROM audit WHERE at < ?1 AND id < ?2",
                params![before, own],
            )?;
            tx.execute(
                "UPDATE audit SET detail = ?1 WHERE id = ?2",
                params![record(n).detail.to_string(), own],
            )?;
            Ok(n)
        })
    }

    fn audit_exported(&mut self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'audit_exported'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn set_audit_exported(&mut self, through: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('audit_exported', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(value, ?1)",
                params![through],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn keyring_write(
        &mut self,
        f: &mut dyn FnMut(&mut dyn KeyringWriter) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_err(&path, e))?;
        f(&mut KeyringTx {
            tx: &tx,
            path: &path,
        })?;
        tx.commit().map_err(|e| db_err(&path, e))
    }
}
