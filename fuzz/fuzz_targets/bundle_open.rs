//! Any bytes as a bundle file: parsing and opening must fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealinit_core::bundle::{self, OpenedBundle};
use sealinit_core::secret::{SecretBuf, SecretKey};

fuzz_target!(|data: &[u8]| {
    let _ = bundle::parse(data);
    let key = SecretKey::from_bytes_for_tests(&[7; 32]).unwrap();
    let mut buf = SecretBuf::zeroed(data.len()).unwrap();
    buf.expose_mut().copy_from_slice(data);
    if let Ok(opened) = OpenedBundle::open(&key, buf, Some(0)) {
        for e in opened.entries() {
            let _ = (e.name(), e.value(), e.as_env());
        }
    }
});
