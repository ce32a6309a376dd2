//! The page's sessions and CSRF tokens.
//!
//! A session is a random id in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` and `__Host-` over TLS). The store keeps the id's SHA-256,
//! never the id, with the id of the token that signed in (checked again on
//! every request, so a revoked token ends its sessions), a CSRF token and a
//! one-shot result message; every instance of the store serves every
//! session. A session ends after `IDLE` without a request, `LIFETIME` after
//! sign-in, at sign-out (on every instance), or when its token opens more
//! than `MAX_PER_TOKEN`.
//!
//! CSRF: every form carries a token compared in constant time with the
//! session's; the sign-in form, before any session, carries one the store's
//! key signed, compared with a cookie of its own (double submit). A POST
//! without it is 403.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use sealinit_store::SessionRow;

use crate::error::ApiError;
use crate::pool::StorePool;

/// A session ends this long after sign-in...
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// ...or after this long without a request.
pub const IDLE: Duration = Duration::from_secs(3600);
/// Sessions of one token at most; its own oldest goes first, so that no
/// token can push another's sessions out.
pub const MAX_PER_TOKEN: usize = 16;

/// A random 256-bit token, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // Without the kernel's randomness nothing here is safe: fail loudly.
    getrandom::fill(&mut b).expect("the kernel's random number generator failed");
    B64URL.encode(b)
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A CSRF token as one response carries it: a fresh random pad, then the
/// token XOR the pad, base64url. The bytes differ in every response, so a
/// compressed page's size tells nothing about the token (BREACH).
pub fn mask(token: &str) -> String {
    let t = token.as_bytes();
    let mut out = Zeroizing::new(vec![0u8; 2 * t.len()]);
    let (pad, masked) = out.split_at_mut(t.len());
    getrandom::fill(pad).expect("the kernel's random number generator failed");
    for ((m, p), b) in masked.iter_mut().zip(pad.iter()).zip(t) {
        *m = p ^ b;
    }
    B64URL.encode(&*out)
}

/// Whether `sent` (a form's CSRF field) carries `token`: masked by
/// [`mask`], or as it is (a page rendered before masking).
pub fn carries(sent: &str, token: &str) -> bool {
    if same(sent, token) {
        return true;
    }
    let Ok(raw) = B64URL.decode(sent) else {
        return false;
    };
    let raw = Zeroizing::new(raw);
    if raw.len() != 2 * token.len() {
        return false;
    }
    let (pad, masked) = raw.split_at(token.len());
    let plain: Zeroizing<Vec<u8>> =
        Zeroizing::new(pad.iter().zip(masked).map(|(p, m)| p ^ m).collect());
    bool::from(plain.as_slice().ct_eq(token.as_bytes()))
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The stored key of a session id: its SHA-256, hex.
fn id_hash(id: &str) -> String {
    digest(id).iter().map(|b| format!("{b:02x}")).collect()
}

/// What an action tells the next page ("Added API_KEY, version 1").
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
    /// A secret just deleted: the message offers to restore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// A refused form, given back to the page it redirects to (the page's
    /// own data: names, hosts, messages; never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<serde_json::Value>,
}

/// A signed-in request's view of its session.
#[derive(Clone)]
pub struct Current {
    /// The session id's digest (to find it again).
    key: String,
    /// The token it signed in with, by id.
    pub token_id: String,
    pub csrf: String,
    /// The result message waiting to be shown, if any.
    flash: Option<Flash>,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current(redacted)")
    }
}

fn unix_now() -> i64 {
    sealinit_core::time::now() as i64
}

/// The page's sign-in sessions, kept in the store so that every instance
/// serves every request: the store holds the id's SHA-256 (never the id),
/// the token's id (never the token), the CSRF token and one result
/// message.
#[derive(Debug)]
pub struct Sessions {
    pool: Arc<StorePool>,
}

impl Sessions {
    pub fn new(pool: Arc<StorePool>) -> Self {
        Self { pool }
    }

    /// Starts a session for the token `token_id`; returns its id, for the
    /// cookie. The token's oldest sessions beyond `MAX_PER_TOKEN` end.
    pub async fn start(&self, token_id: String) -> Result<String, ApiError> {
        let id = random_token();
        let now = unix_now();
        let row = SessionRow {
            id_hash: id_hash(&id),
            token_id,
            csrf: random_token(),
            started: now,
            seen: now,
            flash: None,
        };
        let stale = now - IDLE.as_secs() as i64;
        self.pool
            .run(String::new(), move |st| {
                Ok(st.session_start(&row, MAX_PER_TOKEN, stale)?)
            })
            .await?;
        Ok(id)
    }

    /// The live session of `id`, touched; an expired one is ended.
    pub async fn find(&self, id: &str) -> Result<Option<Current>, ApiError> {
        let key = id_hash(id);
        self.pool
            .run(String::new(), move |st| {
                let Some(row) = st.session(&key)? else {
                    return Ok(None);
                };
                let now = unix_now();
                if now - row.started >= LIFETIME.as_secs() as i64
                    || now - row.seen >= IDLE.as_secs() as i64
                {
                    st.session_end(&key)?;
                    return Ok(None);
                }
                // A write a minute at most, for pages that only read.
                if now - row.seen >= 60 {
                    st.session_update(&key, now, row.flash.as_deref())?;
                }
                Ok(Some(Current {
                    key,
                    token_id: row.token_id,
                    csrf: row.csrf,
                    flash: row.flash.and_then(|f| serde_json::from_str(&f).ok()),
                }))
            })
            .await
    }

    pub async fn end(&self, current: &Current) -> Result<(), ApiError> {
        let key = current.key.clone();
        self.pool
            .run(String::new(), move |st| Ok(st.session_end(&key)?))
            .await
    }

    /// Sets the message the next page shows.
    pub async fn set_flash(&self, current: &Current, flash: Flash) -> Result<(), ApiError> {
        let key = current.key.clone();
        let text = serde_json::to_string(&flash).ok();
        self.pool
            .run(String::new(), move |st| {
                Ok(st.session_update(&key, unix_now(), text.as_deref())?)
            })
            .await
    }

    /// The message waiting, shown once.
    pub async fn take_flash(&self, current: &Current) -> Option<Flash> {
        let flash = current.flash.clone()?;
        let key = current.key.clone();
        let cleared = self
            .pool
            .run(String::new(), move |st| {
                Ok(st.session_update(&key, unix_now(), None)?)
            })
            .await;
        cleared.ok().map(|()| flash)
    }
}

/// The sign-in form's CSRF tokens, before any session: a random nonce and
/// its HMAC under a key of this server (`NONCE.MAC`, base64url), repeated
/// by a cookie (double submit). A token the server did not issue, or an
/// empty one, is refused.
pub struct SigninCsrf {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SigninCsrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigninCsrf(redacted)")
    }
}

impl SigninCsrf {
    /// With the store's sign-in key, the same on every instance (a form
    /// one instance rendered is accepted by another).
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self { key }
    }

    fn mac(&self, nonce: &[u8]) -> [u8; 32] {
        use hmac::{KeyInit, Mac};
        let mut m = hmac::Hmac::<Sha256>::new_from_slice(&self.key[..])
            .expect("HMAC takes a key of any length");
        m.update(b"sealinit sign-in csrf\0");
        m.update(nonce);
        m.finalize().into_bytes().into()
    }

    pub fn issue(&self) -> String {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the kernel's random number generator failed");
        format!(
            "{}.{}",
            B64URL.encode(nonce),
            B64URL.encode(self.mac(&nonce))
        )
    }

    /// Whether this server issued `token`.
    pub fn issued(&self, token: &str) -> bool {
        let Some((nonce, mac)) = token.split_once('.') else {
            return false;
        };
        match (B64URL.decode(nonce), B64URL.decode(mac)) {
            (Ok(n), Ok(m)) if n.len() == 16 => bool::from(self.mac(&n).ct_eq(m.as_slice())),
            _ => false,
        }
    }
}

/// The cookies' names: `__Host-` over TLS (Secure, Path=/, no Domain).
pub fn session_cookie(tls: bool) -> &'static str {
    if tls { "__Host-sealinit" } else { "sealinit" }
}

pub fn signin_cookie(tls: bool) -> &'static str {
    if tls {
        "__Host-sealinit-signin"
    } else {
        "sealinit-signin"
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for `name=value`, living `max_age` (zero: removed).
pub fn set_cookie(name: &str, value: &str, max_age: Duration, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// How long the one-time sign-in link printed at start works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The one-time sign-in link (`sealctl serve --login-link`): a random code,
/// kept as its SHA-256, good for one sign-in as admin within
/// `LINK_LIFETIME`. Using it makes an admin token that expires with the
/// session, so everything after goes through the usual token checks and the
/// audit trail names it.
#[derive(Default)]
pub struct LoginLink {
    slot: Mutex<Option<([u8; 32], Instant)>>,
}

impl std::fmt::Debug for LoginLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLink(redacted)")
    }
}

impl LoginLink {
    /// A new code (any earlier one stops working); returns it, to print.
    pub fn issue(&self) -> String {
        let code = random_token();
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((digest(&code), Instant::now() + LINK_LIFETIME));
        }
        code
    }

    /// Whether `code` is the live code; `use_up` ends it if so.
    fn check(&self, code: &str, use_up: bool) -> bool {
        let d = digest(code);
        let Ok(mut slot) = self.slot.lock() else {
            return false;
        };
        let live = slot
            .as_ref()
            .is_some_and(|(want, until)| bool::from(want.ct_eq(&d)) && Instant::now() < *until);
        if live && use_up {
            *slot = None;
        }
        live
    }

    /// Whether `code` is the live code (without using it up).
    pub fn valid(&self, code: &str) -> bool {
        self.check(code, false)
    }

    /// Uses `code` up: true once, if it is the live code.
    pub fn take(&self, code: &str) -> bool {
        self.check(code, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_token_differs_every_time_and_carries_only_its_token() {
        let (token, other) = (random_token(), random_token());
        let (a, b) = (mask(&token), mask(&token));
        assert_ne!(a, b);
        assert!(!a.contains(&token));
        assert!(carries(&a, &token) && carries(&b, &token));
        assert!(carries(&token, &token), "an unmasked token still works");
        assert!(!carries(&a, &other));
        // One bit changed, a truncation, or text that is not base64url.
        let mut flipped = B64URL.decode(&a).unwrap();
        flipped[50] ^= 1;
        assert!(!carries(&B64URL.encode(&flipped), &token));
        assert!(!carries(&a[..a.len() - 4], &token));
        assert!(!carries("not base64!", &token));
    }
}
