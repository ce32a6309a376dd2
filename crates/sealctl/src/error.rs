//! sealctl's error type, and the one place where every failure of sealctl
//! (its own, the init library's it uses for `run`, the store's) becomes an
//! exit code. No message contains a secret value.

use std::io;
use std::path::PathBuf;

use sealinit_core::bundle::PayloadError;
use sealinit_core::{describe_io, exit};
use sealinit_store::StoreError;

pub use sealinit::Error as InitError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading keys and bundles, usage, running sealinit: as sealinit says.
    #[error(transparent)]
    Init(#[from] InitError),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("{what} {}: {reason}", path.display())]
    Import {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("cannot seal: {0}")]
    Payload(#[from] PayloadError),

    #[error("{} already exists; refusing to overwrite it (remove it first or choose another path)", path.display())]
    OutputExists { path: PathBuf },

    #[error("cannot write {}: {}", path.display(), describe_io(source))]
    Output { path: PathBuf, source: io::Error },

    #[error(transparent)]
    Server(#[from] sealinit_server::ServerError),

    /// The service said no (`--server`); status 0: it could not be reached.
    #[error("{message}")]
    Remote { status: u16, message: String },

    /// `secrets scan` found secrets that hit a rule (listed on stdout).
    #[error("{0} secret(s) look like live or production credentials (listed on stdout)")]
    Findings(usize),
}

impl Error {
    /// The process exit code for this error: the single mapping.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Init(e) => e.exit_code(),
            Error::Store(e) => match e {
                StoreError::InvalidRepo(_)
                | StoreError::UnknownScheme(_)
                | StoreError::InvalidEgress(_) => exit::USAGE,
                StoreError::ProductionCredential { .. }
                | StoreError::InvalidRoute { .. }
                | StoreError::Seal(_)
                | StoreError::StaleKeyId { .. }
                | StoreError::SealedValueInvalid { .. }
                | StoreError::EmptyValue { .. } => exit::DATA,
                StoreError::NoSuchToken { .. } => exit::NO_INPUT,
                StoreError::WrongMasterKey { .. }
                | StoreError::DataKeyUnavailable { .. }
                | StoreError::PrimaryKeyNotGiven { .. }
                | StoreError::MasterKeysNotGiven { .. }
                | StoreError::SecretUndecryptable { .. }
                | StoreError::NewerSchema { .. }
                | StoreError::Payload(_) => exit::DATA,
                StoreError::RepoExists { .. } => exit::CANT_CREATE,
                StoreError::RetirePrimary { .. } | StoreError::AuditNotExported { .. } => {
                    exit::USAGE
                }
                StoreError::NoSuchSecret { .. }
                | StoreError::NoSuchMasterKey { .. }
                | StoreError::NoSuchRepo { .. }
                | StoreError::NoSuchVersion { .. }
                | StoreError::EmptyRepo { .. }
                | StoreError::Missing { .. } => exit::NO_INPUT,
                StoreError::VersionConflict { .. } => exit::TEMP_FAIL,
                StoreError::Database { .. } => exit::IO_ERR,
                StoreError::Exists { .. } | StoreError::Create { .. } => exit::CANT_CREATE,
                StoreError::Os { .. } => exit::OS,
            },
            Error::Import { .. } | Error::Payload(_) => exit::DATA,
            Error::OutputExists { .. } | Error::Output { .. } => exit::CANT_CREATE,
            // As grep and linters: 1 means "found something".
            Error::Findings(_) => 1,
            Error::Remote { status, .. } => match status {
                400 => exit::USAGE,
                401 | 403 => exit::NO_PERM,
                404 => exit::NO_INPUT,
                409 | 412 | 429 | 503 => exit::TEMP_FAIL,
                413 | 415 | 422 => exit::DATA,
                _ => exit::IO_ERR,
            },
            Error::Server(e) => match e {
                sealinit_server::ServerError::Usage(_) => exit::USAGE,
                sealinit_server::ServerError::Tls(_) => exit::NO_INPUT,
                sealinit_server::ServerError::Io { .. } => exit::OS,
            },
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Init(InitError::Usage(msg.into()))
    }

    pub fn os(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Init(InitError::os(op, source))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
