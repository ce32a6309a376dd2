//! Which backend `--store` (or `SEALCTL_STORE`) names: a path is an
//! embedded SQLite file; a `postgres://` or `postgresql://` URL, or a
//! `host=... dbname=...` string, is PostgreSQL. Anything else that looks
//! like a URL is refused, not taken for a file name.

use std::path::{Path, PathBuf};

use sealinit_store::{Backend, MasterKey, Store, StoreError};
use sealinit_store_postgres::{PostgresBackend, redact};
use sealinit_store_sqlite::SqliteBackend;

use crate::error::{Error, Result};

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A PostgreSQL connection string, as given (it may hold a password:
    /// show it with [`Location::shown`] only).
    Postgres(String),
}

impl Location {
    /// Parses `--store`; `None` means the default SQLite path.
    pub fn parse(given: Option<&Path>) -> Result<Self> {
        let Some(given) = given else {
            return sealinit_store::default_path()
                .map(Self::Sqlite)
                .ok_or_else(|| {
                    Error::usage("no --store given and neither XDG_DATA_HOME nor HOME is set")
                });
        };
        let text = given.to_string_lossy();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.into_owned()));
        }
        if looks_like_key_values(&text) {
            return Ok(Self::Postgres(text.into_owned()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            let is_scheme = !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if is_scheme {
                return Err(StoreError::UnknownScheme(redact(&text)).into());
            }
        }
        Ok(Self::Sqlite(given.to_owned()))
    }

    /// For messages: the path, or the connection string without its password.
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres(url) => redact(url),
        }
    }

    /// Creates a new store there, whose data keys `master` wraps, keeping
    /// the values of the newest `keep` versions of each secret.
    pub fn create(&self, master: MasterKey, keep: i64) -> Result<Store> {
        Ok(Store::create(self.connect(true)?, master, keep)?)
    }

    /// Opens the store there with the master keys `keyring`.
    pub fn open(&self, keyring: Vec<MasterKey>) -> Result<Store> {
        Ok(Store::open(self.connect(false)?, keyring)?)
    }

    fn connect(&self, new: bool) -> Result<Box<dyn Backend>> {
        Ok(match self {
            Self::Sqlite(path) if new => Box::new(SqliteBackend::create_file(path)?),
            Self::Sqlite(path) => Box::new(SqliteBackend::open(path)?),
            Self::Postgres(url) => Box::new(PostgresBackend::connect(url)?),
        })
    }
}

/// `host=... dbname=...`: libpq's key/value form.
fn looks_like_key_values(text: &str) -> bool {
    let mut words = text.split_whitespace();
    words.clone().next().is_some()
        && words.all(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        && text.split_whitespace().any(|w| {
            ["host=", "dbname=", "user=", "hostaddr=", "port="]
                .iter()
                .any(|k| w.starts_with(k))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Location> {
        Location::parse(Some(Path::new(s)))
    }

    #[test]
    fn paths_urls_and_key_values() {
        assert_eq!(
            parse("store.db").unwrap(),
            Location::Sqlite("store.db".into())
        );
        assert_eq!(parse("/a/b:c").unwrap(), Location::Sqlite("/a/b:c".into()));
        assert!(matches!(
            parse("postgres://u:p@h/db").unwrap(),
            Location::Postgres(_)
        ));
        assert!(matches!(
            parse("postgresql:///db?host=/tmp").unwrap(),
            Location::Postgres(_)
        ));
        assert!(matches!(
            parse("host=/tmp dbname=x").unwrap(),
            Location::Postgres(_)
        ));
        let e = parse("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(
            e.contains("mysql://u:***@h/db") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/x?user=a&password=s3cret"),
            "postgres://db/x?user=a&password=***"
        );
        assert_eq!(
            redact("host=db password=s3cret dbname=x"),
            "host=db password=*** dbname=x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
    }
}
