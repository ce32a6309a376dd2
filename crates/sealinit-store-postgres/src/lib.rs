//! The store's PostgreSQL backend: one shared database for every
//! orchestrator host (and service instance). Tables are prefixed
//! `sealinit_`, so the store can share a database with other things.
//! Writers to one repository are serialised by a transaction-scoped
//! advisory lock on the repository's lower-cased name, so versions,
//! compare-and-set and the case-insensitive spelling hold across hosts.
#![forbid(unsafe_code)]

use postgres::{Client, NoTls, Transaction};
use sealinit_store::{
    AuditQuery, AuditRecord, Backend, DEFAULT_KEEP, DeletedSecret, HistoryEntry, IdempotencyRow,
    Keyring, KeyringWriter, MasterKeyRow, OWN_PREFIX, RepoInfo, Result, SCHEMA_VERSION, SealedRow,
    SecretInfo, SessionRow, StoreError, StoredRow, TokenRow, WrappedKey, Writer,
};

/// The migrations, in order: `MIGRATIONS[i]` takes schema `i + 2` to `i + 3`.
/// A new store is created at schema 2 (the first PostgreSQL schema) and
/// migrated: upgrades and new stores take one path.
const MIGRATIONS: [&str; 7] = [
    // 3: every version (and delete marker) kept, the audit trail, the
    // retention setting.
    "CREATE TABLE sealinit_secret_versions (
         repo TEXT NOT NULL,
         name TEXT NOT NULL,
         version BIGINT NOT NULL,
         nonce BYTEA,
         ciphertext BYTEA,
         size BIGINT NOT NULL,
         created_at BIGINT NOT NULL,
         actor TEXT NOT NULL,
         deleted BOOLEAN NOT NULL DEFAULT FALSE,
         allow_code_loading BOOLEAN NOT NULL DEFAULT FALSE,
         PRIMARY KEY (repo, name, version)
     );
     INSERT INTO sealinit_secret_versions
         SELECT repo, name, version, nonce, ciphertext, size, updated_at,
                'before schema 3', FALSE, allow_code_loading FROM sealinit_secrets;
     CREATE TABLE sealinit_audit (
         id BIGSERIAL PRIMARY KEY,
         at BIGINT NOT NULL,
         actor TEXT NOT NULL,
         action TEXT NOT NULL,
         repo TEXT NOT NULL,
         detail TEXT NOT NULL
     );
     CREATE INDEX sealinit_audit_repo_at ON sealinit_audit (repo, at);
     INSERT INTO sealinit_meta (key, value) VALUES ('keep', '\\x0a'::BYTEA)
         ON CONFLICT DO NOTHING;",
    // 4: envelope encryption. The values move to data keys when a master
    // key first opens the store (sealinit_store::Store::open).
    "CREATE TABLE sealinit_master_keys (
         id TEXT PRIMARY KEY,
         check_value BYTEA NOT NULL,
         is_primary BOOLEAN NOT NULL DEFAULT FALSE,
         added_at BIGINT NOT NULL,
         seq BIGSERIAL
     );
     CREATE TABLE sealinit_data_keys (
         repo_key TEXT NOT NULL,
         key_id TEXT NOT NULL,
         wrapped BYTEA NOT NULL,
         PRIMARY KEY (repo_key, key_id)
     );",
    // 5: the service's API tokens, as keyed hashes.
    "CREATE TABLE sealinit_tokens (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         hash TEXT NOT NULL UNIQUE,
         scopes TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         expires_at BIGINT,
         last_used_at BIGINT,
         revoked_at BIGINT,
         seq BIGSERIAL
     );",
    // 6: tokens that may act for someone; the page's sign-in sessions,
    // shared by every instance.
    "ALTER TABLE sealinit_tokens ADD COLUMN may_act_for BOOLEAN NOT NULL DEFAULT FALSE;
     CREATE TABLE sealinit_sessions (
         id_hash TEXT PRIMARY KEY,
         token_id TEXT NOT NULL,
         csrf TEXT NOT NULL,
         started BIGINT NOT NULL,
         seen BIGINT NOT NULL,
         flash TEXT,
         seq BIGSERIAL
     );
     CREATE INDEX sealinit_sessions_token ON sealinit_sessions (token_id, started);
     CREATE TABLE sealinit_idempotency (
         scope TEXT PRIMARY KEY,
         request TEXT NOT NULL,
         created BIGINT NOT NULL,
         status BIGINT,
         sealed BYTEA
     );
     CREATE INDEX sealinit_idempotency_created ON sealinit_idempotency (created);",
    // 7: repositories exist explicitly. Every repository with secrets or
    // history is kept, in the spelling its secrets have.
    "CREATE TABLE sealinit_repos (
         repo TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         created_by TEXT NOT NULL
     );
     CREATE UNIQUE INDEX sealinit_repos_ci ON sealinit_repos (lower(repo));
     INSERT INTO sealinit_repos (repo, created_at, created_by)
         SELECT repo, MIN(updated_at), 'before schema 7' FROM sealinit_secrets GROUP BY repo
         ON CONFLICT DO NOTHING;
     INSERT INTO sealinit_repos (repo, created_at, created_by)
         SELECT repo, MIN(created_at), 'before schema 7' FROM sealinit_secret_versions GROUP BY repo
         ON CONFLICT DO NOTHING;",
    // 8: each version's route (delivery, hosts, placeholder); empty: env.
    "ALTER TABLE sealinit_secrets ADD COLUMN route TEXT NOT NULL DEFAULT '';
     ALTER TABLE sealinit_secret_versions ADD COLUMN route TEXT NOT NULL DEFAULT '';",
    // 9: each repository's egress policy; empty: allow.
    "ALTER TABLE sealinit_repos ADD COLUMN egress TEXT NOT NULL DEFAULT '';",
];

const SCHEMA: &str = "
CREATE TABLE sealinit_meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE sealinit_schema (version INTEGER NOT NULL);
CREATE TABLE sealinit_secrets (
    repo TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    size BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    allow_code_loading BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (repo, name)
);
CREATE INDEX sealinit_secrets_repo_ci ON sealinit_secrets (lower(repo));
";

/// One lock key for schema changes (any constant; advisory locks are per
/// database).
const SCHEMA_LOCK: i64 = 0x5ea1_1417;

/// Changes to the keyring take this lock exclusively; a writer takes it
/// shared before it reads the master keys to wrap a data key, so a
/// rotation never misses a data key made meanwhile.
const KEYRING_LOCK: i64 = 0x5ea1_1418;

pub struct PostgresBackend {
    client: Client,
    shown: String,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("location", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// Runs `f` on `repo` in one transaction holding the repository's
    /// lock: an existing repository, or with `create` (when, who) a new one.
    fn in_repo(
        &mut self,
        repo: &str,
        create: Option<(i64, &str)>,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<()>,
    ) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        lock_repo(&mut tx, repo).map_err(e)?;
        let canonical = match (spelling(&mut tx, repo).map_err(e)?, create) {
            (Some(existing), Some(_)) => return Err(StoreError::RepoExists { repo: existing }),
            (Some(existing), None) => existing,
            (None, Some((at, actor))) => {
                tx.execute(
                    "INSERT INTO sealinit_repos (repo, created_at, created_by) VALUES ($1, $2, $3)",
                    &[&repo, &at, &actor],
                )
                .map_err(e)?;
                repo.to_owned()
            }
            (None, None) if repo.starts_with(OWN_PREFIX) => repo.to_owned(),
            (None, None) => return Err(StoreError::NoSuchRepo { repo: repo.into() }),
        };
        f(&mut TxWriter {
            tx: &mut tx,
            repo: canonical,
            shown: &shown,
        })?;
        tx.commit().map_err(e)
    }

    /// Connects to `url` (`postgres://...` or `host=... dbname=...`).
    /// Errors show the URL without its password.
    ///
    /// TLS (rustls) as libpq's `sslmode` asks: `disable`; `prefer` (the
    /// default) and `require` encrypt without checking the certificate;
    /// `verify-ca` and `verify-full` check it against `sslrootcert` (a PEM
    /// file) or the system's roots, and `verify-full` also the host name.
    pub fn connect(url: &str) -> Result<Self> {
        let shown = redact(url);
        let bad = |reason: String| StoreError::Database {
            location: shown.clone(),
            reason,
        };
        let tls = TlsRequest::take_from(url);
        let mut config: postgres::Config = tls.rest.parse().map_err(|e| {
            bad(format!(
                "not a valid PostgreSQL connection string: {}",
                plain(&e)
            ))
        })?;
        // As libpq: no TLS over a Unix socket.
        let local = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, postgres::config::Host::Unix(_)));
        let connected = match tls.verify {
            _ if local || config.get_ssl_mode() == postgres::config::SslMode::Disable => {
                config.connect(NoTls)
            }
            None => config.connect(tls::connector(None, false).map_err(bad)?),
            Some(full) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                let roots = tls.root_cert.as_deref();
                config.connect(tls::connector(Some(roots), full).map_err(bad)?)
            }
        };
        let client = connected.map_err(|e| bad(format!("cannot connect: {}", plain(&e))))?;
        Ok(Self { client, shown })
    }

    fn err(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        |e| db_err(&self.shown, &e)
    }
}

/// What a connection string asks of TLS beyond what the client library
/// parses: `sslmode=verify-ca|verify-full` and `sslrootcert`, taken out.
struct TlsRequest {
    /// `Some(full)` to verify the certificate (and with `full` the host).
    verify: Option<bool>,
    root_cert: Option<String>,
    /// The connection string without those.
    rest: String,
}

impl TlsRequest {
    fn take_from(url: &str) -> Self {
        let mut verify = None;
        let mut root_cert = None;
        let mut keep = |key: &str, value: &str| -> bool {
            match (key, value) {
                ("sslmode", "verify-full") => verify = Some(true),
                ("sslmode", "verify-ca") => verify = Some(false),
                ("sslrootcert", v) => root_cert = Some(v.to_owned()),
                _ => return true,
            }
            false
        };
        let rest = if let Some((head, query)) = url.split_once('?').filter(|_| url.contains("://"))
        {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| kv.split_once('=').is_none_or(|(k, v)| keep(k, v)))
                .collect();
            let sslmode = if verify.is_some() {
                vec!["sslmode=require"]
            } else {
                vec![]
            };
            let all: Vec<&str> = kept.into_iter().chain(sslmode).collect();
            if all.is_empty() {
                head.to_owned()
            } else {
                format!("{head}?{}", all.join("&"))
            }
        } else if url.contains("://") {
            url.to_owned()
        } else {
            let mut words: Vec<String> = url
                .split_whitespace()
                .filter(|w| w.split_once('=').is_none_or(|(k, v)| keep(k, v)))
                .map(str::to_owned)
                .collect();
            if verify.is_some() {
                words.push("sslmode=require".into());
            }
            words.join(" ")
        };
        Self {
            verify,
            root_cert,
            rest,
        }
    }
}

/// rustls for the PostgreSQL client.
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio_postgres_rustls::MakeRustlsConnect;

    /// A connector: `verify` is `None` to encrypt without checking the
    /// certificate (libpq's `require`), or the roots to check it against
    /// (`Some(None)`: the system's); `full` checks the host name too.
    pub fn connector(
        verify: Option<Option<&str>>,
        full: bool,
    ) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match verify {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            Some(roots_file) => {
                let mut roots = RootCertStore::empty();
                match roots_file {
                    Some(path) => {
                        for cert in CertificateDer::pem_file_iter(path)
                            .map_err(|e| format!("sslrootcert {path}: {e}"))?
                        {
                            let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                            roots
                                .add(cert)
                                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                        }
                    }
                    None => {
                        for cert in rustls_native_certs::load_native_certs().certs {
                            let _ = roots.add(cert);
                        }
                    }
                }
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
                let verifier: Arc<dyn ServerCertVerifier> = if full {
                    verifier
                } else {
                    Arc::new(IgnoreHostName(verifier))
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    /// libpq's `require`: encrypted, the certificate unchecked (the
    /// handshake's signatures still are).
    #[derive(Debug)]
    struct Unverified(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// libpq's `verify-ca`: the chain is checked, the host name is not.
    #[derive(Debug)]
    struct IgnoreHostName(Arc<rustls::client::WebPkiServerVerifier>);

    impl ServerCertVerifier for IgnoreHostName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ))
                | Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

/// A PostgreSQL error in a few words: the server's message when there is
/// one (it never holds a password), else the client's.
fn plain(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn db_err(shown: &str, e: &postgres::Error) -> StoreError {
    StoreError::Database {
        location: shown.to_owned(),
        reason: plain(e),
    }
}

/// The connection string with any password replaced by `***` (a URL's
/// `user:password@`, a `password=` parameter or key/value pair).
pub fn redact(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some(("password", _)) => "password=***".to_owned(),
                        _ => kv.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        return format!("{scheme}://{authority}{tail}");
    }
    text.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn spelling(
    tx: &mut impl postgres::GenericClient,
    repo: &str,
) -> std::result::Result<Option<String>, postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT repo FROM sealinit_repos WHERE lower(repo) = lower($1)",
            &[&repo],
        )?
        .map(|r| r.get(0)))
}

/// One writer per repository at a time, on every host: a lock held until
/// the transaction ends, keyed by the repository's lower-cased name.
fn lock_repo(tx: &mut Transaction<'_>, repo: &str) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 0))",
        &[&repo],
    )
    .map(|_| ())
}

fn insert_audit(
    c: &mut impl postgres::GenericClient,
    record: &AuditRecord,
) -> std::result::Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO sealinit_audit (at, actor, action, repo, detail) VALUES ($1, $2, $3, $4, $5)",
        &[
            &record.at,
            &record.actor,
            &record.action,
            &record.repo,
            &record.detail.to_string(),
        ],
    )
    .map(|_| ())
}

fn token_row(r: &postgres::Row) -> TokenRow {
    TokenRow {
        id: r.get(0),
        name: r.get(1),
        hash: r.get(2),
        scopes: serde_json::from_str(r.get(3)).unwrap_or_default(),
        created_at: r.get(4),
        expires_at: r.get(5),
        last_used_at: r.get(6),
        revoked_at: r.get(7),
        may_act_for: r.get(8),
    }
}

fn session_row(r: &postgres::Row) -> SessionRow {
    SessionRow {
        id_hash: r.get(0),
        token_id: r.get(1),
        csrf: r.get(2),
        started: r.get(3),
        seen: r.get(4),
        flash: r.get(5),
    }
}

fn sealed_row(r: &postgres::Row) -> SealedRow {
    let mut sealed: Vec<u8> = r.get("nonce");
    sealed.extend_from_slice(r.get::<_, &[u8]>("ciphertext"));
    SealedRow {
        name: r.get("name"),
        version: r.get("version"),
        sealed,
        size: r.get("size"),
        allow_code_loading: r.get("allow_code_loading"),
        route: sealinit_store::Route::from_column(r.get("route")),
    }
}

struct TxWriter<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    repo: String,
    shown: &'a str,
}

impl Writer for TxWriter<'_, '_> {
    fn repo(&self) -> &str {
        &self.repo
    }

    fn version(&mut self, name: &str) -> Result<Option<i64>> {
        self.tx
            .query_opt(
                "SELECT version FROM sealinit_secrets WHERE repo = $1 AND name = $2",
                &[&self.repo, &name],
            )
            .map(|r| r.map(|r| r.get(0)))
            .map_err(|e| db_err(self.shown, &e))
    }

    fn route(&mut self, name: &str) -> Result<Option<sealinit_store::Route>> {
        self.tx
            .query_opt(
                "SELECT route FROM sealinit_secrets WHERE repo = $1 AND name = $2",
                &[&self.repo, &name],
            )
            .map(|r| r.map(|r| sealinit_store::Route::from_column(r.get(0))))
            .map_err(|e| db_err(self.shown, &e))
    }

    fn set_egress(&mut self, policy: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE sealinit_repos SET egress = $2 WHERE repo = $1",
                &[&self.repo, &policy],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.shown, &e))
    }

    fn last_version(&mut self, name: &str) -> Result<Option<i64>> {
        self.tx
            .query_one(
                "SELECT MAX(version) FROM sealinit_secret_versions WHERE repo = $1 AND name = $2",
                &[&self.repo, &name],
            )
            .map(|r| r.get(0))
            .map_err(|e| db_err(self.shown, &e))
    }

    fn put(&mut self, row: &SealedRow, at: i64, actor: &str) -> Result<()> {
        let (nonce, ct) = row.sealed.split_at(sealinit_core::bundle::NONCE_LEN);
        let route = row.route.to_column();
        let shown = self.shown;
        let e = |e: postgres::Error| db_err(shown, &e);
        self.tx
            .execute(
                "INSERT INTO sealinit_secrets
                     (repo, name, version, nonce, ciphertext, size, updated_at, allow_code_loading, route)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (repo, name) DO UPDATE SET version = $3, nonce = $4,
                     ciphertext = $5, size = $6, updated_at = $7, allow_code_loading = $8, route = $9",
                &[
                    &self.repo,
                    &row.name,
                    &row.version,
                    &nonce,
                    &ct,
                    &row.size,
                    &at,
                    &row.allow_code_loading,
                    &route,
                ],
            )
            .map_err(e)?;
        self.tx
            .execute(
                "INSERT INTO sealinit_secret_versions
                     (repo, name, version, nonce, ciphertext, size, created_at, actor, deleted, allow_code_loading, route)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9, $10)",
                &[&self.repo, &row.name, &row.version, &nonce, &ct, &row.size, &at, &actor, &row.allow_code_loading, &route],
            )
            .map(|_| ())
            .map_err(e)
    }

    fn delete(&mut self, name: &str, marker: i64, at: i64, actor: &str) -> Result<Option<i64>> {
        let shown = self.shown;
        let e = |e: postgres::Error| db_err(shown, &e);
        let version: Option<i64> = self
            .tx
            .query_opt(
                "DELETE FROM sealinit_secrets WHERE repo = $1 AND name = $2 RETURNING version",
                &[&self.repo, &name],
            )
            .map_err(e)?
            .map(|r| r.get(0));
        if version.is_some() {
            self.tx
                .execute(
                    "INSERT INTO sealinit_secret_versions (repo, name, version, size, created_at, actor, deleted)
                     VALUES ($1, $2, $3, 0, $4, $5, TRUE)",
                    &[&self.repo, &name, &marker, &at, &actor],
                )
                .map_err(e)?;
        }
        Ok(version)
    }

    fn history_row(&mut self, name: &str, version: i64) -> Result<Option<SealedRow>> {
        self.tx
            .query_opt(
                "SELECT name, version, nonce, ciphertext, size, allow_code_loading, route FROM sealinit_secret_versions
                 WHERE repo = $1 AND name = $2 AND version = $3 AND NOT deleted AND ciphertext IS NOT NULL",
                &[&self.repo, &name, &version],
            )
            .map(|r| r.as_ref().map(sealed_row))
            .map_err(|e| db_err(self.shown, &e))
    }

    fn prune(&mut self, name: &str, keep: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE sealinit_secret_versions SET nonce = NULL, ciphertext = NULL
                 WHERE repo = $1 AND name = $2 AND ciphertext IS NOT NULL AND version NOT IN (
                     SELECT version FROM sealinit_secret_versions WHERE repo = $1 AND name = $2 AND NOT deleted
                     ORDER BY version DESC LIMIT $3)",
                &[&self.repo, &name, &keep.max(1)],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.shown, &e))
    }

    fn audit(&mut self, record: &AuditRecord) -> Result<()> {
        insert_audit(&mut *self.tx, record).map_err(|e| db_err(self.shown, &e))
    }

    fn sizes(&mut self) -> Result<Vec<(usize, usize)>> {
        self.tx
            .query(
                "SELECT octet_length(name)::BIGINT, size FROM sealinit_secrets WHERE repo = $1",
                &[&self.repo],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1) as usize))
                    .collect()
            })
            .map_err(|e| db_err(self.shown, &e))
    }

    fn wraps(&mut self) -> Result<Vec<WrappedKey>> {
        Ok(wraps(&mut *self.tx, Some(&self.repo))
            .map_err(|e| db_err(self.shown, &e))?
            .into_iter()
            .map(|(_, w)| w)
            .collect())
    }

    fn masters(&mut self) -> Result<Vec<MasterKeyRow>> {
        let shown = self.shown;
        let e = |e: postgres::Error| db_err(shown, &e);
        self.tx
            .execute("SELECT pg_advisory_xact_lock_shared($1)", &[&KEYRING_LOCK])
            .map_err(e)?;
        masters(&mut *self.tx).map_err(e)
    }

    fn set_wraps(&mut self, ws: &[WrappedKey]) -> Result<()> {
        let shown = self.shown;
        let e = |e: postgres::Error| db_err(shown, &e);
        let rk = self.repo.to_ascii_lowercase();
        self.tx
            .execute("DELETE FROM sealinit_data_keys WHERE repo_key = $1", &[&rk])
            .map_err(e)?;
        for w in ws {
            put_wrap(&mut *self.tx, &rk, w).map_err(e)?;
        }
        Ok(())
    }

    fn stored_rows(&mut self) -> Result<Vec<StoredRow>> {
        stored_rows(&mut *self.tx, Some(&self.repo)).map_err(|e| db_err(self.shown, &e))
    }

    fn replace_row(&mut self, row: &StoredRow) -> Result<()> {
        replace_row(&mut *self.tx, row).map_err(|e| db_err(self.shown, &e))
    }
}

type PgResult<T> = std::result::Result<T, postgres::Error>;

fn masters(c: &mut impl postgres::GenericClient) -> PgResult<Vec<MasterKeyRow>> {
    Ok(c.query(
        "SELECT id, check_value, is_primary, added_at FROM sealinit_master_keys ORDER BY seq",
        &[],
    )?
    .iter()
    .map(|r| MasterKeyRow {
        id: r.get(0),
        check: r.get(1),
        primary: r.get(2),
        added_at: r.get(3),
    })
    .collect())
}

/// The wrapped data keys of `repo` (any spelling), or of every repository,
/// by lower-cased repository.
fn wraps(
    c: &mut impl postgres::GenericClient,
    repo: Option<&str>,
) -> PgResult<Vec<(String, WrappedKey)>> {
    Ok(c.query(
        "SELECT repo_key, key_id, wrapped FROM sealinit_data_keys
         WHERE $1::TEXT IS NULL OR repo_key = lower($1) ORDER BY repo_key COLLATE \"C\", key_id",
        &[&repo],
    )?
    .iter()
    .map(|r| {
        (
            r.get(0),
            WrappedKey {
                key_id: r.get(1),
                wrapped: r.get(2),
            },
        )
    })
    .collect())
}

fn put_wrap(c: &mut impl postgres::GenericClient, repo_key: &str, w: &WrappedKey) -> PgResult<()> {
    c.execute(
        "INSERT INTO sealinit_data_keys (repo_key, key_id, wrapped) VALUES ($1, $2, $3)
         ON CONFLICT (repo_key, key_id) DO UPDATE SET wrapped = $3",
        &[&repo_key, &w.key_id, &w.wrapped],
    )
    .map(|_| ())
}

/// Every ciphertext of `repo` (any spelling), or of every repository.
fn stored_rows(
    c: &mut impl postgres::GenericClient,
    repo: Option<&str>,
) -> PgResult<Vec<StoredRow>> {
    Ok(c.query(
        "SELECT repo, name, version, nonce, ciphertext, size, allow_code_loading, route, FALSE AS history
             FROM sealinit_secrets WHERE $1::TEXT IS NULL OR lower(repo) = lower($1)
         UNION ALL
         SELECT repo, name, version, nonce, ciphertext, size, allow_code_loading, route, TRUE
             FROM sealinit_secret_versions
             WHERE ciphertext IS NOT NULL AND ($1::TEXT IS NULL OR lower(repo) = lower($1))",
        &[&repo],
    )?
    .iter()
    .map(|r| StoredRow {
        repo: r.get("repo"),
        row: sealed_row(r),
        history: r.get("history"),
    })
    .collect())
}

fn replace_row(c: &mut impl postgres::GenericClient, r: &StoredRow) -> PgResult<()> {
    let (nonce, ct) = r.row.sealed.split_at(sealinit_core::bundle::NONCE_LEN);
    let sql = match r.history {
        false => {
            "UPDATE sealinit_secrets SET nonce = $4, ciphertext = $5
             WHERE repo = $1 AND name = $2 AND version = $3"
        }
        true => {
            "UPDATE sealinit_secret_versions SET nonce = $4, ciphertext = $5
             WHERE repo = $1 AND name = $2 AND version = $3"
        }
    };
    c.execute(sql, &[&r.repo, &r.row.name, &r.row.version, &nonce, &ct])
        .map(|_| ())
}

/// The keyring at any schema; `None` for a database that holds no store.
fn keyring(c: &mut impl postgres::GenericClient) -> PgResult<Option<Keyring>> {
    let tables: Vec<Option<String>> = c
        .query_one(
            "SELECT to_regclass('sealinit_meta')::TEXT, to_regclass('sealinit_master_keys')::TEXT",
            &[],
        )
        .map(|r| vec![r.get(0), r.get(1)])?;
    if tables[0].is_none() {
        return Ok(None);
    }
    let legacy_check = c
        .query_opt("SELECT value FROM sealinit_meta WHERE key = 'check'", &[])?
        .map(|r| r.get(0));
    let masters = match tables[1] {
        Some(_) => masters(c)?,
        None => Vec::new(),
    };
    Ok(
        (legacy_check.is_some() || !masters.is_empty()).then_some(Keyring {
            masters,
            legacy_check,
        }),
    )
}

struct KeyringTx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    shown: &'a str,
}

impl KeyringWriter for KeyringTx<'_, '_> {
    fn keyring(&mut self) -> Result<Keyring> {
        keyring(&mut *self.tx)
            .map(Option::unwrap_or_default)
            .map_err(|e| db_err(self.shown, &e))
    }

    fn add_master(&mut self, row: &MasterKeyRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO sealinit_master_keys (id, check_value, is_primary, added_at)
                 VALUES ($1, $2, $3, $4)",
                &[&row.id, &row.check, &row.primary, &row.added_at],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.shown, &e))
    }

    fn set_primary(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE sealinit_master_keys SET is_primary = (id = $1)",
                &[&id],
            )
            .map(|_| ())
            .map_err(|e| db_err(self.shown, &e))
    }

    fn remove_master(&mut self, id: &str) -> Result<()> {
        let shown = self.shown;
        let e = |e: postgres::Error| db_err(shown, &e);
        self.tx
            .execute("DELETE FROM sealinit_data_keys WHERE key_id = $1", &[&id])
            .map_err(e)?;
        self.tx
            .execute("DELETE FROM sealinit_master_keys WHERE id = $1", &[&id])
            .map(|_| ())
            .map_err(e)
    }

    fn wraps(&mut self) -> Result<Vec<(String, WrappedKey)>> {
        wraps(&mut *self.tx, None).map_err(|e| db_err(self.shown, &e))
    }

    fn put_wrap(&mut self, repo_key: &str, w: &WrappedKey) -> Result<()> {
        put_wrap(&mut *self.tx, repo_key, w).map_err(|e| db_err(self.shown, &e))
    }

    fn stored_rows(&mut self) -> Result<Vec<StoredRow>> {
        stored_rows(&mut *self.tx, None).map_err(|e| db_err(self.shown, &e))
    }

    fn replace_row(&mut self, row: &StoredRow) -> Result<()> {
        replace_row(&mut *self.tx, row).map_err(|e| db_err(self.shown, &e))
    }

    fn drop_legacy_check(&mut self) -> Result<()> {
        self.tx
            .execute("DELETE FROM sealinit_meta WHERE key = 'check'", &[])
            .map(|_| ())
            .map_err(|e| db_err(self.shown, &e))
    }

    fn audit(&mut self, record: &AuditRecord) -> Result<()> {
        insert_audit(&mut *self.tx, record).map_err(|e| db_err(self.shown, &e))
    }
}

impl Backend for PostgresBackend {
    fn location(&self) -> String {
        self.shown.clone()
    }

    fn create(&mut self, check: &[u8]) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(e)?;
        let exists: Option<String> = tx
            .query_one("SELECT to_regclass('sealinit_meta')::TEXT", &[])
            .map_err(e)?
            .get(0);
        if exists.is_some() {
            return Err(StoreError::Database {
                location: shown.clone(),
                reason: "already holds a sealinit store; nothing was changed".into(),
            });
        }
        tx.batch_execute(SCHEMA).map_err(e)?;
        tx.execute("INSERT INTO sealinit_schema (version) VALUES (2)", &[])
            .map_err(e)?;
        tx.execute(
            "INSERT INTO sealinit_meta (key, value) VALUES ('check', $1)",
            &[&check],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        self.migrate()
    }

    fn keyring(&mut self) -> Result<Option<Keyring>> {
        keyring(&mut self.client).map_err(|e| db_err(&self.shown, &e))
    }

    fn migrate(&mut self) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        fn read(c: &mut impl postgres::GenericClient) -> std::result::Result<i64, postgres::Error> {
            Ok(i64::from(
                c.query_one("SELECT version FROM sealinit_schema", &[])?
                    .get::<_, i32>(0),
            ))
        }
        let found = read(&mut self.client).map_err(e)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                location: shown.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let mut tx = self.client.transaction().map_err(e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(e)?;
        let mut at = read(&mut tx).map_err(e)?;
        while at < SCHEMA_VERSION {
            tx.batch_execute(MIGRATIONS[(at - 2) as usize]).map_err(e)?;
            at += 1;
            tx.execute("UPDATE sealinit_schema SET version = $1", &[&(at as i32)])
                .map_err(e)?;
            tracing::info!("store {shown}: schema migrated to {at}");
        }
        tx.commit().map_err(e)
    }

    fn spelling(&mut self, repo: &str) -> Result<Option<String>> {
        spelling(&mut self.client, repo).map_err(|e| db_err(&self.shown, &e))
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
        Ok(self
            .client
            .query_opt(
                "SELECT egress FROM sealinit_repos WHERE repo = $1",
                &[&repo],
            )
            .map_err(self.err())?
            .map(|r| r.get(0))
            .unwrap_or_default())
    }

    fn holders(&mut self, prefix: &str) -> Result<Vec<(String, usize)>> {
        Ok(self
            .client
            .query(
                "SELECT repo, COUNT(*) FROM sealinit_secrets WHERE left(repo, length($1)) = $1
                 GROUP BY repo ORDER BY repo COLLATE \"C\"",
                &[&prefix],
            )
            .map_err(self.err())?
            .into_iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
            .collect())
    }

    fn data_key_wraps(&mut self, repo: &str) -> Result<Vec<WrappedKey>> {
        Ok(wraps(&mut self.client, Some(repo))
            .map_err(self.err())?
            .into_iter()
            .map(|(_, w)| w)
            .collect())
    }

    fn list(&mut self, repo: &str) -> Result<Vec<SecretInfo>> {
        let rows = self
            .client
            .query(
                // One statement: who wrote each current version, and when
                // the secret first appeared since its last delete.
                "SELECT s.name, s.size, s.version, s.updated_at,
                        (SELECT v.actor FROM sealinit_secret_versions v
                         WHERE v.repo = s.repo AND v.name = s.name AND v.version = s.version),
                        (SELECT MIN(v.created_at) FROM sealinit_secret_versions v
                         WHERE v.repo = s.repo AND v.name = s.name AND v.version >
                             COALESCE((SELECT MAX(d.version) FROM sealinit_secret_versions d
                                       WHERE d.repo = s.repo AND d.name = s.name AND d.deleted), 0))
                 , s.route FROM sealinit_secrets s WHERE s.repo = $1 ORDER BY s.name",
                &[&repo],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| {
                let updated_at: i64 = r.get(3);
                SecretInfo {
                    name: r.get(0),
                    size: r.get::<_, i64>(1) as usize,
                    version: r.get(2),
                    updated_at,
                    updated_by: r.get::<_, Option<String>>(4).unwrap_or_default(),
                    created_at: r.get::<_, Option<i64>>(5).unwrap_or(updated_at),
                    route: sealinit_store::Route::from_column(r.get(6)),
                }
            })
            .collect())
    }

    fn rows(&mut self, repo: &str) -> Result<(Vec<WrappedKey>, Vec<SealedRow>)> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        // One snapshot of the data key and the values.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(e)?;
        let ws = wraps(&mut tx, Some(repo))
            .map_err(e)?
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        let rows = tx
            .query(
                "SELECT name, version, nonce, ciphertext, size, allow_code_loading, route
                 FROM sealinit_secrets WHERE repo = $1 ORDER BY name",
                &[&repo],
            )
            .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok((ws, rows.iter().map(sealed_row).collect()))
    }

    fn repos(&mut self) -> Result<Vec<RepoInfo>> {
        // The last change counts deletes too: the newest version row.
        let rows = self
            .client
            .query(
                "SELECT r.repo, COUNT(s.name), GREATEST(r.created_at, MAX(s.updated_at),
                        (SELECT MAX(v.created_at) FROM sealinit_secret_versions v WHERE v.repo = r.repo))
                 FROM sealinit_repos r LEFT JOIN sealinit_secrets s ON s.repo = r.repo
                 GROUP BY r.repo, r.created_at ORDER BY r.repo COLLATE \"C\"",
                &[],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| RepoInfo {
                repo: r.get(0),
                secrets: r.get::<_, i64>(1) as usize,
                updated_at: r.get(2),
            })
            .collect())
    }

    fn remove_repo(
        &mut self,
        repo: &str,
        at: i64,
        actor: &str,
        audit: &mut dyn FnMut(usize) -> AuditRecord,
    ) -> Result<usize> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        lock_repo(&mut tx, repo).map_err(e)?;
        tx.execute(
            "INSERT INTO sealinit_secret_versions (repo, name, version, size, created_at, actor, deleted)
             SELECT s.repo, s.name,
                    (SELECT MAX(v.version) FROM sealinit_secret_versions v WHERE v.repo = s.repo AND v.name = s.name) + 1,
                    0, $2, $3, TRUE
             FROM sealinit_secrets s WHERE s.repo = $1",
            &[&repo, &at, &actor],
        )
        .map_err(e)?;
        let n = tx
            .execute("DELETE FROM sealinit_secrets WHERE repo = $1", &[&repo])
            .map_err(e)? as usize;
        tx.execute("DELETE FROM sealinit_repos WHERE repo = $1", &[&repo])
            .map_err(e)?;
        insert_audit(&mut tx, &audit(n)).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(n)
    }

    fn history(&mut self, repo: &str, name: &str) -> Result<Vec<HistoryEntry>> {
        let rows = self
            .client
            .query(
                "SELECT version, created_at, actor, size, deleted, ciphertext IS NULL
                 FROM sealinit_secret_versions WHERE repo = $1 AND name = $2 ORDER BY version",
                &[&repo, &name],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| {
                let deleted: bool = r.get(4);
                HistoryEntry {
                    version: r.get(0),
                    at: r.get(1),
                    actor: r.get(2),
                    size: r.get(3),
                    deleted,
                    pruned: r.get::<_, bool>(5) && !deleted,
                }
            })
            .collect())
    }

    fn deleted(&mut self, repo: &str) -> Result<Vec<DeletedSecret>> {
        let rows = self
            .client
            .query(
                "SELECT d.name, d.version, d.created_at, d.actor,
                    (SELECT MAX(v.version) FROM sealinit_secret_versions v
                     WHERE v.repo = d.repo AND v.name = d.name AND NOT v.deleted AND v.ciphertext IS NOT NULL)
                 FROM sealinit_secret_versions d
                 WHERE d.repo = $1 AND d.deleted
                   AND d.version = (SELECT MAX(x.version) FROM sealinit_secret_versions x WHERE x.repo = d.repo AND x.name = d.name)
                 ORDER BY d.name",
                &[&repo],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| DeletedSecret {
                name: r.get(0),
                version: r.get(1),
                at: r.get(2),
                actor: r.get(3),
                restorable: r.get(4),
            })
            .collect())
    }

    fn keep(&mut self) -> Result<i64> {
        let row = self
            .client
            .query_opt("SELECT value FROM sealinit_meta WHERE key = 'keep'", &[])
            .map_err(self.err())?;
        Ok(row
            .and_then(|r| r.get::<_, Vec<u8>>(0).first().copied())
            .map_or(DEFAULT_KEEP, i64::from))
    }

    fn set_keep(&mut self, keep: i64) -> Result<()> {
        let byte = vec![keep.clamp(1, 255) as u8];
        self.client
            .execute(
                "INSERT INTO sealinit_meta (key, value) VALUES ('keep', $1)
                 ON CONFLICT (key) DO UPDATE SET value = $1",
                &[&byte],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn audit_append(&mut self, record: &AuditRecord) -> Result<()> {
        insert_audit(&mut self.client, record).map_err(|e| db_err(&self.shown, &e))
    }

    fn audit_page(&mut self, q: &AuditQuery<'_>) -> Result<Vec<(i64, AuditRecord)>> {
        let limit = q.limit.map(|l| l as i64);
        let rows = self
            .client
            .query(
                "SELECT id, at, actor, action, repo, detail FROM sealinit_audit
                 WHERE ($1::TEXT IS NULL OR repo = $1) AND ($2::BIGINT IS NULL OR at >= $2)
                   AND ($3::BIGINT IS NULL OR at < $3) AND ($4::BIGINT IS NULL OR id > $4)
                 ORDER BY id LIMIT $5",
                &[&q.repo, &q.since, &q.until, &q.after, &limit],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    AuditRecord {
                        at: r.get(1),
                        actor: r.get(2),
                        action: r.get(3),
                        repo: r.get(4),
                        detail: serde_json::from_str(r.get(5)).unwrap_or(serde_json::Value::Null),
                    },
                )
            })
            .collect())
    }

    fn audit_prune(
        &mut self,
        before: i64,
        record: &mut dyn FnMut(usize) -> AuditRecord,
    ) -> Result<usize> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        // As on SQLite: the prune's own record first, then older ids.
        let mut tx = self.client.transaction().map_err(e)?;
        let r = record(0);
        let own: i64 = tx
            .query_one(
                "INSERT INTO sealinit_audit (at, actor, action, repo, detail)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&r.at, &r.actor, &r.action, &r.repo, &r.detail.to_string()],
            )
            .map_err(e)?
            .get(0);
        let n = tx
            .execute(
                "DELETE FROM sealinit_audit WHERE at < $1 AND id < $2",
                &[&before, &own],
            )
            .map_err(e)? as usize;
        tx.execute(
            "UPDATE sealinit_audit SET detail = $1 WHERE id = $2",
            &[&record(n).detail.to_string(), &own],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(n)
    }

    fn audit_exported(&mut self) -> Result<Option<i64>> {
        let row = self
            .client
            .query_opt(
                "SELECT value FROM sealinit_meta WHERE key = 'audit_exported'",
                &[],
            )
            .map_err(self.err())?;
        Ok(row.and_then(|r| {
            let v: Vec<u8> = r.get(0);
            v.try_into().ok().map(i64::from_be_bytes)
        }))
    }

    fn set_audit_exported(&mut self, through: i64) -> Result<()> {
        let through = through.max(self.audit_exported()?.unwrap_or(i64::MIN));
        self.client
            .execute(
                "INSERT INTO sealinit_meta (key, value) VALUES ('audit_exported', $1)
                 ON CONFLICT (key) DO UPDATE SET value = $1",
                &[&through.to_be_bytes().to_vec()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn audit_append_many(&mut self, records: &[AuditRecord]) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        for r in records {
            insert_audit(&mut tx, r).map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    fn token_insert(&mut self, t: &TokenRow, audit: &AuditRecord) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        tx.execute(
            "INSERT INTO sealinit_tokens (id, name, hash, scopes, created_at, expires_at, may_act_for)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &t.id,
                &t.name,
                &t.hash,
                &serde_json::to_string(&t.scopes).unwrap_or_default(),
                &t.created_at,
                &t.expires_at,
                &t.may_act_for,
            ],
        )
        .map_err(e)?;
        insert_audit(&mut tx, audit).map_err(e)?;
        tx.commit().map_err(e)
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>> {
        let row = self
            .client
            .query_opt(
                "SELECT id, name, hash, scopes, created_at, expires_at, last_used_at, revoked_at, may_act_for
                 FROM sealinit_tokens WHERE hash = $1",
                &[&hash],
            )
            .map_err(self.err())?;
        Ok(row.as_ref().map(token_row))
    }

    fn tokens(&mut self) -> Result<Vec<TokenRow>> {
        let rows = self
            .client
            .query(
                "SELECT id, name, hash, scopes, created_at, expires_at, last_used_at, revoked_at, may_act_for
                 FROM sealinit_tokens ORDER BY seq",
                &[],
            )
            .map_err(self.err())?;
        Ok(rows.iter().map(token_row).collect())
    }

    fn token_revoke(&mut self, id: &str, at: i64, audit: &AuditRecord) -> Result<bool> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        let n = tx
            .execute(
                "UPDATE sealinit_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &at],
            )
            .map_err(e)?;
        if n > 0 {
            insert_audit(&mut tx, audit).map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(n > 0)
    }

    fn token_touch(&mut self, id: &str, at: i64) -> Result<()> {
        self.client
            .execute(
                "UPDATE sealinit_tokens SET last_used_at = $2 WHERE id = $1",
                &[&id, &at],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn token_by_id(&mut self, id: &str) -> Result<Option<TokenRow>> {
        let row = self
            .client
            .query_opt(
                "SELECT id, name, hash, scopes, created_at, expires_at, last_used_at, revoked_at, may_act_for
                 FROM sealinit_tokens WHERE id = $1",
                &[&id],
            )
            .map_err(self.err())?;
        Ok(row.as_ref().map(token_row))
    }

    fn session_insert(&mut self, s: &SessionRow, keep: usize, stale: i64) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        tx.execute(
            "DELETE FROM sealinit_sessions WHERE seen < $1 OR id_hash IN (
                 SELECT id_hash FROM sealinit_sessions WHERE token_id = $2
                 ORDER BY started DESC, seq DESC OFFSET $3)",
            &[&stale, &s.token_id, &(keep.saturating_sub(1) as i64)],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO sealinit_sessions (id_hash, token_id, csrf, started, seen, flash)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &s.id_hash,
                &s.token_id,
                &s.csrf,
                &s.started,
                &s.seen,
                &s.flash,
            ],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    fn session_get(&mut self, id_hash: &str) -> Result<Option<SessionRow>> {
        let row = self
            .client
            .query_opt(
                "SELECT id_hash, token_id, csrf, started, seen, flash FROM sealinit_sessions WHERE id_hash = $1",
                &[&id_hash],
            )
            .map_err(self.err())?;
        Ok(row.as_ref().map(session_row))
    }

    fn session_update(&mut self, id_hash: &str, seen: i64, flash: Option<&str>) -> Result<()> {
        self.client
            .execute(
                "UPDATE sealinit_sessions SET seen = $2, flash = $3 WHERE id_hash = $1",
                &[&id_hash, &seen, &flash],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn session_delete(&mut self, id_hash: &str) -> Result<()> {
        self.client
            .execute(
                "DELETE FROM sealinit_sessions WHERE id_hash = $1",
                &[&id_hash],
            )
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
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        tx.execute(
            "DELETE FROM sealinit_idempotency WHERE created < $1",
            &[&stale],
        )
        .map_err(e)?;
        let taken = tx
            .execute(
                "INSERT INTO sealinit_idempotency (scope, request, created) VALUES ($1, $2, $3)
                 ON CONFLICT (scope) DO NOTHING",
                &[&scope, &request, &now],
            )
            .map_err(e)?;
        let row = match taken {
            1 => None,
            _ => tx
                .query_opt(
                    "SELECT request, status, sealed FROM sealinit_idempotency WHERE scope = $1",
                    &[&scope],
                )
                .map_err(e)?
                .map(|r| IdempotencyRow {
                    request: r.get(0),
                    status: r.get(1),
                    sealed: r.get(2),
                }),
        };
        tx.commit().map_err(e)?;
        Ok(row)
    }

    fn idempotency_finish(&mut self, scope: &str, status: i64, sealed: &[u8]) -> Result<()> {
        self.client
            .execute(
                "UPDATE sealinit_idempotency SET status = $2, sealed = $3 WHERE scope = $1",
                &[&scope, &status, &sealed],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn idempotency_release(&mut self, scope: &str) -> Result<()> {
        self.client
            .execute(
                "DELETE FROM sealinit_idempotency WHERE scope = $1",
                &[&scope],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn keyring_write(
        &mut self,
        f: &mut dyn FnMut(&mut dyn KeyringWriter) -> Result<()>,
    ) -> Result<()> {
        let shown = self.shown.clone();
        let e = |e: postgres::Error| db_err(&shown, &e);
        let mut tx = self.client.transaction().map_err(e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYRING_LOCK])
            .map_err(e)?;
        f(&mut KeyringTx {
            tx: &mut tx,
            shown: &shown,
        })?;
        tx.commit().map_err(e)
    }
}
