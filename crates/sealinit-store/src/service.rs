//! What the service (`sealctl serve`) needs of the store: API tokens, kept
//! as keyed hashes only, and each repository's X25519 public key, to which
//! clients seal values (libsodium's `crypto_box_seal`, as GitHub's API).
//!
//! Both keys are derived, not stored: the token-hash key from a data key of
//! the store's own (`!service`, wrapped under the master keys like a
//! repository's, so it follows master-key rotations), and a repository's
//! X25519 key from its data key (so `rotate-data-key` replaces it too).

use std::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{KeyInit as _, Mac};
use zeroize::Zeroizing;

use sealinit_core::bundle::NONCE_LEN;
use sealinit_core::secret::{SecretKey, SecretValue};

use crate::{AuditRecord, Result, Store, StoreError, TokenRow};

/// Where the service's own data key lives among the repositories' (not a
/// valid repository name, so it cannot collide with one; see
/// [`crate::OWN_PREFIX`]).
const SERVICE: &str = "!service";

/// Tokens: `sit_`, 30 random base62 characters, and the 6-character
/// checksum GitHub's tokens carry, so secret scanners can recognise them
/// and tell them from look-alikes.
pub const TOKEN_PREFIX: &str = "sit_";

/// A 32-byte pseudo-random function of `key` and `label` (at most 24
/// bytes): the XChaCha20 keystream under `key` with `label` as the nonce.
fn derive(key: &SecretKey, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..label.len()].copy_from_slice(label);
    let mut out = Zeroizing::new([0u8; 32]);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
    cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut out[..])
        .expect("32 bytes always encrypt");
    out
}

/// How long an `Idempotency-Key` is remembered (seconds).
pub const IDEMPOTENCY_LIFETIME: i64 = 24 * 3600;

/// What an `Idempotency-Key` finds.
pub enum Idempotent {
    /// First use: the request runs; `scope` is where its response goes.
    Fresh { scope: String },
    /// Answered before: the same response again.
    Replay {
        status: i64,
        body: Zeroizing<Vec<u8>>,
    },
    /// Used with another request.
    Mismatch,
    /// Its first request is still running.
    InProgress,
}

impl std::fmt::Debug for Idempotent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fresh { .. } => "Fresh",
            Self::Replay { .. } => "Replay",
            Self::Mismatch => "Mismatch",
            Self::InProgress => "InProgress",
        })
    }
}

/// A new token: what to show once, and the stored row.
pub struct NewToken {
    /// The token: shown once, never stored.
    pub token: Zeroizing<String>,
    pub row: TokenRow,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

fn random_base62(n: usize) -> Result<String> {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 1];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| StoreError::Os {
            op: "getrandom",
            source: std::io::Error::other(e),
        })?;
        // 248 = 4 × 62: no modulo bias.
        if buf[0] < 248 {
            out.push(DIGITS[(buf[0] % 62) as usize] as char);
        }
    }
    Ok(out)
}

/// Whether `token` has the shape and checksum of a token (cheap: garbage
/// never reaches the database).
pub fn token_shape_ok(token: &str) -> bool {
    let Some(body) = token.strip_prefix(TOKEN_PREFIX) else {
        return false;
    };
    body.len() == 36
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
        && sealinit_guard::checksum(&body.as_bytes()[..30]) == body.as_bytes()[30..]
}

/// Constant-time equality of two byte strings of equal length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// The key tokens are hashed with, derived from the service's data key
    /// (made on first use).
    fn token_hash_key(&mut self) -> Result<Zeroizing<[u8; 32]>> {
        if let Some(k) = &self.token_key {
            return Ok(k.clone());
        }
        let (wraps, _) = self.db.rows(SERVICE)?;
        let dk = match wraps.is_empty() {
            false => Self::data_key(&self.keys, SERVICE, &wraps)?,
            true => {
                let keys = &self.keys;
                let mut made = None;
                self.db.write(SERVICE, &mut |w| {
                    made = Some(Self::data_key_for_write(keys, w)?);
                    Ok(())
                })?;
                made.expect("set by a committed write")
            }
        };
        let key = derive(&dk, b"sealinit token hash v1");
        self.token_key = Some(key.clone());
        Ok(key)
    }

    fn token_hash(&mut self, token: &str) -> Result<String> {
        let key = self.token_hash_key()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key[..])
            .expect("HMAC takes any key length");
        mac.update(token.as_bytes());
        let digest = mac.finalize().into_bytes();
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Creates an API token with `scopes` (checked by the service) that
    /// expires after `ttl` if given. The token is returned once; the store
    /// keeps its keyed hash.
    pub fn create_token(
        &mut self,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
        may_act_for: bool,
    ) -> Result<NewToken> {
        let body = random_base62(30)?;
        let sum = sealinit_guard::checksum(body.as_bytes());
        let token = Zeroizing::new(format!(
            "{TOKEN_PREFIX}{body}{}",
            std::str::from_utf8(&sum).expect("base62 is ASCII")
        ));
        let now = sealinit_core::time::now() as i64;
        let row = TokenRow {
            id: format!("tk-{}", random_base62(12)?),
            name: name.to_owned(),
            hash: self.token_hash(&token)?,
            scopes: scopes.to_vec(),
            created_at: now,
            expires_at: ttl.map(|t| now.saturating_add(t.as_secs() as i64)),
            last_used_at: None,
            revoked_at: None,
            may_act_for,
        };
        let audit = AuditRecord {
            at: now,
            actor: self.actor.clone(),
            action: "token-create".into(),
            repo: String::new(),
            detail: serde_json::json!({"id": row.id, "name": row.name, "scopes": row.scopes, "expires_at": row.expires_at, "may_act_for": may_act_for}),
        };
        self.db.token_insert(&row, &audit)?;
        Ok(NewToken { token, row })
    }

    /// Every token (never the tokens themselves).
    pub fn tokens(&mut self) -> Result<Vec<TokenRow>> {
        self.db.tokens()
    }

    /// Revokes token `id`; its next use is refused.
    pub fn revoke_token(&mut self, id: &str) -> Result<()> {
        let now = sealinit_core::time::now() as i64;
        let audit = AuditRecord {
            at: now,
            actor: self.actor.clone(),
            action: "token-revoke".into(),
            repo: String::new(),
            detail: serde_json::json!({"id": id}),
        };
        match self.db.token_revoke(id, now, &audit)? {
            true => Ok(()),
            false => Err(StoreError::NoSuchToken { id: id.to_owned() }),
        }
    }

    /// The live token `token` is, if any (not expired, not revoked); its
    /// use is recorded (at most once a minute).
    pub fn authenticate(&mut self, token: &str) -> Result<Option<TokenRow>> {
        if !token_shape_ok(token) {
            return Ok(None);
        }
        let hash = self.token_hash(token)?;
        let Some(row) = self.db.token_by_hash(&hash)? else {
            return Ok(None);
        };
        let now = sealinit_core::time::now() as i64;
        if !ct_eq(row.hash.as_bytes(), hash.as_bytes())
            || row.revoked_at.is_some()
            || row.expires_at.is_some_and(|e| e <= now)
        {
            return Ok(None);
        }
        if row.last_used_at.is_none_or(|t| now - t >= 60) {
            self.db.token_touch(&row.id, now)?;
        }
        Ok(Some(row))
    }

    /// The live token (not expired, not revoked) with id `id`: a sign-in
    /// session names its token by id.
    pub fn authenticate_id(&mut self, id: &str) -> Result<Option<TokenRow>> {
        let now = sealinit_core::time::now() as i64;
        Ok(self
            .db
            .token_by_id(id)?
            .filter(|row| row.revoked_at.is_none() && row.expires_at.is_none_or(|e| e > now)))
    }

    /// The key the page's sign-in forms are signed with: the same on every
    /// instance of a store (derived from the service's data key).
    pub fn signin_csrf_key(&mut self) -> Result<Zeroizing<[u8; 32]>> {
        let key = self.token_hash_key()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key[..])
            .expect("HMAC takes any key length");
        mac.update(b"sealinit sign-in csrf v1");
        Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    /// Starts a sign-in session (its id hashed); the token's oldest beyond
    /// `keep` sessions, and sessions idle since `stale`, end.
    pub fn session_start(
        &mut self,
        row: &crate::SessionRow,
        keep: usize,
        stale: i64,
    ) -> Result<()> {
        self.db.session_insert(row, keep, stale)
    }

    /// The session whose id hashes to `id_hash`.
    pub fn session(&mut self, id_hash: &str) -> Result<Option<crate::SessionRow>> {
        self.db.session_get(id_hash)
    }

    /// Its last use and result message.
    pub fn session_update(&mut self, id_hash: &str, seen: i64, flash: Option<&str>) -> Result<()> {
        self.db.session_update(id_hash, seen, flash)
    }

    pub fn session_end(&mut self, id_hash: &str) -> Result<()> {
        self.db.session_delete(id_hash)
    }

    /// A key of the service's own for `purpose`, derived from its data key
    /// (the same on every instance of the store).
    fn service_subkey(&mut self, purpose: &[u8]) -> Result<SecretKey> {
        let base = self.token_hash_key()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&base[..])
            .expect("HMAC takes any key length");
        mac.update(purpose);
        let mut key = SecretKey::zeroed().map_err(|e| StoreError::Os {
            op: "mmap",
            source: e,
        })?;
        key.expose_mut()
            .copy_from_slice(&Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()))[..]);
        Ok(key)
    }

    /// Claims `key` (already scoped to its caller) for a request made of
    /// the byte strings `request` (method, path, body: hashed in place,
    /// never copied): what it finds. Keys live 24 hours.
    pub fn idempotency_claim(&mut self, key: &str, request: &[&[u8]]) -> Result<Idempotent> {
        let subkey = self.service_subkey(b"sealinit idempotency v1")?;
        let mac = |parts: &[&[u8]]| {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(subkey.expose())
                .expect("HMAC takes any key length");
            for p in parts {
                // Length-prefixed, so no two splits hash alike.
                m.update(&(p.len() as u64).to_be_bytes());
                m.update(p);
            }
            m.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        // Neither the key nor the request (which may hold a value) is
        // stored, only their keyed hashes.
        let scope = mac(&[key.as_bytes()]);
        let request = mac(request);
        let now = sealinit_core::time::now() as i64;
        let found = self
            .db
            .idempotency_claim(&scope, &request, now, now - IDEMPOTENCY_LIFETIME)?;
        let Some(row) = found else {
            return Ok(Idempotent::Fresh { scope });
        };
        if !ct_eq(row.request.as_bytes(), request.as_bytes()) {
            return Ok(Idempotent::Mismatch);
        }
        match (row.status, row.sealed) {
            (Some(status), Some(sealed)) => {
                let body = crate::decrypt(&subkey, scope.as_bytes(), sealed).ok_or_else(|| {
                    StoreError::Database {
                        location: self.db.location(),
                        reason: "a stored idempotent response does not decrypt".into(),
                    }
                })?;
                Ok(Idempotent::Replay { status, body })
            }
            _ => Ok(Idempotent::InProgress),
        }
    }

    /// Keeps the response of the request that claimed `scope`, sealed.
    pub fn idempotency_finish(&mut self, scope: &str, status: i64, body: &[u8]) -> Result<()> {
        let subkey = self.service_subkey(b"sealinit idempotency v1")?;
        let sealed = crate::encrypt(&subkey, scope.as_bytes(), body)?;
        self.db.idempotency_finish(scope, status, &sealed)
    }

    /// Frees `scope`: its request changed nothing, a retry may run it.
    pub fn idempotency_release(&mut self, scope: &str) -> Result<()> {
        self.db.idempotency_release(scope)
    }

    /// The X25519 key pair of `repo`, which must exist, derived from its
    /// data key: a read (a repository gets its data key when created).
    fn box_key(&mut self, repo: &str) -> Result<crypto_box::SecretKey> {
        let repo = self.existing(repo)?;
        let wraps = self.db.data_key_wraps(&repo)?;
        let dk = match wraps.is_empty() {
            false => Self::data_key(&self.keys, &repo, &wraps)?,
            // A repository from before schema 7 that never held a value.
            true => {
                let keys = &self.keys;
                let mut made = None;
                self.db.write(&repo, &mut |w| {
                    made = Some(Self::data_key_for_write(keys, w)?);
                    Ok(())
                })?;
                made.expect("set by a committed write")
            }
        };
        Ok(crypto_box::SecretKey::from_bytes(*derive(
            &dk,
            b"sealinit x25519 v1",
        )))
    }

    /// `repo`'s public key for sealed values, and its id (the first 8
    /// bytes of the key, in hex: it changes when the data key does).
    pub fn public_key(&mut self, repo: &str) -> Result<(String, [u8; 32])> {
        let public = self.box_key(repo)?.public_key().to_bytes();
        Ok((key_id(&public), public))
    }

    /// Opens a value sealed (`crypto_box_seal`) to `repo`'s public key
    /// `key_id`.
    pub fn open_sealed_value(
        &mut self,
        repo: &str,
        key_id_given: &str,
        sealed: &[u8],
    ) -> Result<SecretValue> {
        let secret = self.box_key(repo)?;
        let current = key_id(&secret.public_key().to_bytes());
        if current != key_id_given {
            return Err(StoreError::StaleKeyId {
                repo: repo.to_owned(),
                given: key_id_given.to_owned(),
                current,
            });
        }
        let plain = secret
            .unseal(sealed)
            .map_err(|_| StoreError::SealedValueInvalid {
                repo: repo.to_owned(),
            })?;
        Ok(SecretValue::from(plain))
    }
}

fn key_id(public: &[u8; 32]) -> String {
    public[..8].iter().map(|b| format!("{b:02x}")).collect()
}
