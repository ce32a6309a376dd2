//! Envelope encryption. Each repository has its own data key, which seals
//! its values; the data key is stored wrapped (sealed) under master keys.
//! A store knows several master keys (a keyring), one of them primary:
//! new data keys are wrapped under it, and a rotation wraps every data key
//! under a new one without touching a value. Until an old key is retired,
//! its wraps stay, so a process that holds only the old key keeps working.
//!
//! A master key's id is derived from the key itself (an AEAD tag over a
//! fixed text, under the key): files can be named or moved freely, and the
//! id reveals nothing about the key.

use std::fmt::Write as _;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

use sealinit_core::bundle::{NONCE_LEN, TAG_LEN};
use sealinit_core::secret::SecretKey;

use crate::backend::WrappedKey;
use crate::{Result, StoreError, encrypt};

/// A master key with its id.
pub struct MasterKey {
    id: String,
    key: SecretKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    pub fn new(key: SecretKey) -> Self {
        Self {
            id: key_id(&key),
            key,
        }
    }

    /// `mk-` and 16 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

/// `mk-` + the first 8 bytes of the XChaCha20-Poly1305 tag of an empty
/// message with a fixed nonce and associated data, under `key`: a keyed
/// fingerprint, deterministic, that cannot be computed without the key.
fn key_id(key: &SecretKey) -> String {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(&[0u8; NONCE_LEN]),
            b"sealinit master key id v1",
            &mut [],
        )
        .expect("an empty message always encrypts");
    let mut id = String::from("mk-");
    for b in &tag[..8] {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// What a data key's wrap binds: the repository (lower-cased: one data key
/// per repository, whatever its spelling) and the master key's id.
fn wrap_aad(repo_key: &str, master_id: &str) -> Vec<u8> {
    let mut aad = b"sealinit-store-v4\0data-key\0".to_vec();
    aad.extend_from_slice(repo_key.as_bytes());
    aad.push(0);
    aad.extend_from_slice(master_id.as_bytes());
    aad
}

/// What a master key's check value binds: its id.
pub(crate) fn check_aad(master_id: &str) -> Vec<u8> {
    let mut aad = b"sealinit-store-v4\0master-check\0".to_vec();
    aad.extend_from_slice(master_id.as_bytes());
    aad
}

/// The data-key map key of a repository.
pub(crate) fn repo_key(repo: &str) -> String {
    repo.to_ascii_lowercase()
}

/// `data_key` sealed under `master` for `repo_key`.
pub(crate) fn wrap(master: &MasterKey, repo_key: &str, data_key: &SecretKey) -> Result<WrappedKey> {
    Ok(WrappedKey {
        key_id: master.id.clone(),
        wrapped: encrypt(
            &master.key,
            &wrap_aad(repo_key, &master.id),
            data_key.expose(),
        )?,
    })
}

/// The data key in `w`, decrypted in place in locked memory; `Ok(None)` if
/// it does not authenticate under `master`.
pub(crate) fn unwrap(
    master: &MasterKey,
    repo_key: &str,
    w: &WrappedKey,
) -> Result<Option<SecretKey>> {
    if w.wrapped.len() != NONCE_LEN + SecretKey::LEN + TAG_LEN {
        return Ok(None);
    }
    let (nonce, rest) = w.wrapped.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(SecretKey::LEN);
    let mut key = SecretKey::zeroed().map_err(|e| StoreError::Os {
        op: "allocating locked memory for a data key",
        source: e,
    })?;
    key.expose_mut().copy_from_slice(ct);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(master.key.expose()));
    let ok = cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &wrap_aad(repo_key, &master.id),
            key.expose_mut(),
            Tag::from_slice(tag),
        )
        .is_ok();
    Ok(ok.then_some(key))
}

/// A fresh data key.
pub(crate) fn generate() -> Result<SecretKey> {
    SecretKey::generate().map_err(|e| StoreError::Os {
        op: "getrandom",
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_keyed() {
        let a = MasterKey::new(SecretKey::from_bytes_for_tests(&[1; 32]).unwrap());
        let a2 = MasterKey::new(SecretKey::from_bytes_for_tests(&[1; 32]).unwrap());
        let b = MasterKey::new(SecretKey::from_bytes_for_tests(&[2; 32]).unwrap());
        assert_eq!(a.id(), a2.id());
        assert_ne!(a.id(), b.id());
        assert!(
            a.id().starts_with("mk-") && a.id().len() == 19,
            "{}",
            a.id()
        );
    }

    #[test]
    fn a_wrap_opens_only_for_its_repository_and_master() {
        let a = MasterKey::new(SecretKey::from_bytes_for_tests(&[1; 32]).unwrap());
        let b = MasterKey::new(SecretKey::from_bytes_for_tests(&[2; 32]).unwrap());
        let dk = SecretKey::from_bytes_for_tests(&[9; 32]).unwrap();
        let w = wrap(&a, "acme/api", &dk).unwrap();
        assert_eq!(
            unwrap(&a, "acme/api", &w).unwrap().unwrap().expose(),
            dk.expose()
        );
        assert!(unwrap(&a, "acme/web", &w).unwrap().is_none());
        let forged = WrappedKey {
            key_id: b.id().to_owned(),
            wrapped: w.wrapped.clone(),
        };
        assert!(unwrap(&b, "acme/api", &forged).unwrap().is_none());
        let mut bad = w.clone();
        bad.wrapped[NONCE_LEN] ^= 1;
        assert!(unwrap(&a, "acme/api", &bad).unwrap().is_none());
    }
}
