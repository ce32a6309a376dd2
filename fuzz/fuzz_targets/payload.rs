//! Any bytes as an authenticated payload: the decoder must reject it
//! cleanly or accept it canonically (re-sealing what it decoded gives the
//! same bytes back).
#![no_main]

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use sealinit_core::bundle::{self, Entry, Header, OpenedBundle};
use sealinit_core::secret::{SecretBuf, SecretKey, SecretValue};

const KEY: [u8; 32] = [7; 32];
const NONCE: [u8; 24] = [9; 24];

fuzz_target!(|payload: &[u8]| {
    let header = Header::new(1, None, None);
    let json = serde_json::to_vec(&header).unwrap();
    let mut file = Vec::new();
    file.extend_from_slice(bundle::MAGIC);
    file.push(bundle::VERSION);
    file.extend_from_slice(&(json.len() as u32).to_le_bytes());
    file.extend_from_slice(&json);
    let aad_end = file.len();
    file.extend_from_slice(&NONCE);
    file.extend_from_slice(payload);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&KEY));
    let (aad, rest) = file.split_at_mut(aad_end);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&NONCE), aad, &mut rest[24..])
        .unwrap();
    file.extend_from_slice(&tag);

    let key = SecretKey::from_bytes_for_tests(&KEY).unwrap();
    let mut buf = SecretBuf::zeroed(file.len()).unwrap();
    buf.expose_mut().copy_from_slice(&file);
    let Ok(opened) = OpenedBundle::open(&key, buf, Some(0)) else {
        return;
    };
    let entries: Vec<Entry> = opened
        .entries()
        .map(|e| {
            assert_eq!(e.as_env().to_bytes().len(), e.name().len() + 1 + e.value().len());
            Entry {
                name: e.name().to_owned(),
                value: SecretValue::from(e.value().to_vec()),
            }
        })
        .collect();
    let resealed = bundle::seal(&key, &header, &entries, &NONCE).expect("decoded entries re-seal");
    assert_eq!(resealed, file, "decoding is canonical");
});
