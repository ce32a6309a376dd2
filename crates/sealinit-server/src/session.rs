//! The page's sessions and CSRF tokens.
//!
//! A session is a random id in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` and `__Host-` over TLS). The server keeps the id's SHA-256,
//! never the id, mapped to the token that signed in (checked again on every
//! request, so a revoked token ends its sessions), a CSRF token and a
//! one-shot result message. Sessions live in this instance's memory: they
//! end with it, after `IDLE` without a request, or `LIFETIME` after sign-in.
//!
//! CSRF: every form carries a token compared in constant time with the
//! session's; the sign-in form, before any session, carries one compared
//! with a cookie of its own (double submit). A POST without it is 403.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A session ends this long after sign-in...
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// ...or after this long without a request.
pub const IDLE: Duration = Duration::from_secs(3600);
/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;
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

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// What an action tells the next page ("Added API_KEY, version 1").
#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

struct Session {
    token: Arc<Zeroizing<String>>,
    /// The token's digest: whose session this is.
    owner: [u8; 32],
    csrf: String,
    started: Instant,
    seen: Instant,
    flash: Option<Flash>,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.started) < LIFETIME && now.duration_since(self.seen) < IDLE
    }
}

/// A signed-in request's view of its session.
#[derive(Clone)]
pub struct Current {
    /// The session id's digest (to find it again).
    key: [u8; 32],
    pub token: Arc<Zeroizing<String>>,
    pub csrf: String,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current(redacted)")
    }
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "Sessions({n})")
    }
}

impl Sessions {
    /// Starts a session for `token`; returns its id, for the cookie.
    pub fn start(&self, token: Arc<Zeroizing<String>>) -> String {
        let id = random_token();
        let now = Instant::now();
        let owner = digest(token.as_str());
        let session = Session {
            token,
            owner,
            csrf: random_token(),
            started: now,
            seen: now,
            flash: None,
        };
        if let Ok(mut map) = self.map.lock() {
            let own: Vec<([u8; 32], Instant)> = map
                .iter()
                .filter(|(_, s)| s.owner == owner)
                .map(|(k, s)| (*k, s.started))
                .collect();
            if own.len() >= MAX_PER_TOKEN {
                if let Some((oldest, _)) = own.iter().min_by_key(|(_, started)| *started) {
                    map.remove(oldest);
                }
            }
            if map.len() >= MAX_SESSIONS {
                map.retain(|_, s| s.live(now));
            }
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
            map.insert(digest(&id), session);
        }
        id
    }

    /// The live session of `id`, touched; an expired one is removed.
    pub fn find(&self, id: &str) -> Option<Current> {
        let key = digest(id);
        let now = Instant::now();
        let mut map = self.map.lock().ok()?;
        let s = map.get_mut(&key)?;
        if !s.live(now) {
            map.remove(&key);
            return None;
        }
        s.seen = now;
        Some(Current {
            key,
            token: s.token.clone(),
            csrf: s.csrf.clone(),
        })
    }

    pub fn end(&self, current: &Current) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&current.key);
        }
    }

    pub fn set_flash(&self, current: &Current, flash: Flash) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(s) = map.get_mut(&current.key) {
                s.flash = Some(flash);
            }
        }
    }

    pub fn take_flash(&self, current: &Current) -> Option<Flash> {
        self.map
            .lock()
            .ok()?
            .get_mut(&current.key)
            .and_then(|s| s.flash.take())
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
    pub fn new() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).expect("the kernel's random number generator failed");
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

impl Default for SigninCsrf {
    fn default() -> Self {
        Self::new()
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
