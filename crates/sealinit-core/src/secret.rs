//! Secret-holding types. None derives `Debug`: each prints a redaction. Each
//! wipes its bytes on drop. None implements `Display`, `Clone` or `Serialize`.
//!
//! Panics cannot print a value: no message anywhere formats secret bytes
//! (the only way to reach them is `expose`, and its callers pass them to the
//! cipher, to `execve` or to a file, never to a formatter); the `expect`s
//! and `assert!`s near secrets carry fixed text; and formatting a secret
//! type, even in a panic, shows only the redaction (tested below). Release
//! builds abort on panic, so no unwinding handler sees a value either.

use std::fmt;
use std::io;

use zeroize::{Zeroize, Zeroizing};

use crate::locked::LockedPages;

/// A fixed-size buffer of secret bytes in locked, non-dumpable pages of its
/// own. sealinit reads the key and the bundle into these and decrypts in
/// place, so no plaintext exists anywhere else.
pub struct SecretBuf(LockedPages);

impl SecretBuf {
    /// A zero-filled buffer of exactly `len` bytes.
    pub fn zeroed(len: usize) -> io::Result<Self> {
        LockedPages::new(len).map(Self)
    }

    pub fn len(&self) -> usize {
        self.0.as_slice().len()
    }

    /// Shortens the buffer (the cut-off bytes are still wiped on drop).
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the pages are locked against swapping.
    pub fn is_locked(&self) -> bool {
        self.0.is_locked()
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBuf({} bytes, redacted)", self.len())
    }
}

/// A 32-byte XChaCha20-Poly1305 key, in locked memory.
pub struct SecretKey(SecretBuf);

impl SecretKey {
    pub const LEN: usize = 32;

    /// Wraps a buffer that holds exactly [`Self::LEN`] bytes.
    pub(crate) fn from_buf(buf: SecretBuf) -> Self {
        assert_eq!(buf.len(), Self::LEN, "SecretKey::from_buf needs 32 bytes");
        Self(buf)
    }

    /// A fresh key from the OS CSPRNG (`getrandom(2)`).
    #[cfg(feature = "generate")]
    pub fn generate() -> io::Result<Self> {
        let mut buf = SecretBuf::zeroed(Self::LEN)?;
        getrandom::fill(buf.expose_mut()).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self(buf))
    }

    /// A key from known bytes: for test vectors and tests only.
    #[doc(hidden)]
    pub fn from_bytes_for_tests(bytes: &[u8; 32]) -> io::Result<Self> {
        let mut buf = SecretBuf::zeroed(Self::LEN)?;
        buf.expose_mut().copy_from_slice(bytes);
        Ok(Self(buf))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// An all-zero key in locked memory, for a key decrypted in place (an
    /// unwrapped data key): fill it through [`Self::expose_mut`].
    pub fn zeroed() -> io::Result<Self> {
        Ok(Self(SecretBuf::zeroed(Self::LEN)?))
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        self.0.expose_mut()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

/// A secret value on the orchestrator side (`sealctl`), where values come
/// from parsers that hand over owned buffers: the buffer is taken over
/// without copying and wiped on drop.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Makes each CRLF line end LF, in place: no copy of the value is made,
    /// and the bytes freed at the end are wiped.
    pub fn crlf_to_lf(&mut self) {
        let v = &mut *self.0;
        let mut w = 0;
        for r in 0..v.len() {
            if v[r] == b'\r' && v.get(r + 1) == Some(&b'\n') {
                continue;
            }
            v[w] = v[r];
            w += 1;
        }
        v[w..].zeroize();
        v.truncate(w);
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        Self(Zeroizing::new(s.into_bytes()))
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue({} bytes, redacted)", self.len())
    }
}

#[cfg(test)]
mod value_tests {
    use super::SecretValue;

    #[test]
    fn crlf_becomes_lf_in_place() {
        let mut v = SecretValue::from(b"a\r\nb\rc\r\n".to_vec());
        v.crlf_to_lf();
        assert_eq!(v.expose(), b"a\nb\rc\n");
    }
}

/// Overwrites 16 KiB of stack below the caller's frame with zeros, wiping
/// what returned callees (the cipher's state, its keystream blocks) left
/// there; their frames take a few KiB. Called once a bundle has been opened.
#[inline(never)]
pub fn scrub_stack() {
    let mut area = [0u8; 16 * 1024];
    area.zeroize();
    std::hint::black_box(&area);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that holds `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.to_owned();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn secret_pages_are_locked_and_excluded_from_core_dumps() {
        let buf = SecretBuf::zeroed(100).unwrap();
        let flags = vm_flags(buf.expose().as_ptr() as usize);
        let flags: Vec<&str> = flags.split_whitespace().collect();
        assert!(flags.contains(&"dd"), "not MADV_DONTDUMP: {flags:?}");
        assert!(buf.is_locked(), "mlock failed (RLIMIT_MEMLOCK?)");
        assert!(flags.contains(&"lo"), "not locked: {flags:?}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_panic_messages() {
        let key = SecretKey::from_bytes_for_tests(&[0x41; 32]).unwrap();
        let value = SecretValue::from("hunter2-hunter2".to_owned());
        let buf = SecretBuf::zeroed(8).unwrap();
        // A panic that formats the secrets, as an assertion message might.
        let panic = std::panic::catch_unwind(|| panic!("{key:?} {value:?} {buf:?}")).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            !message.contains("AAAA") && !message.contains("hunter2"),
            "{message}"
        );
        assert!(message.contains("redacted"), "{message}");
    }
}
