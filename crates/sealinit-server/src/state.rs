//! What every handler shares (API v1 and the page are siblings above it):
//! the store pool, the audit writer, sessions, the limiter; and the
//! caller's credential, checked before anything of the request's body is
//! read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::client::{AuthLimiter, Peer};
use crate::error::ApiError;
use crate::pool::StorePool;
use crate::service::Caller;
use crate::session::{LoginLink, Sessions, SigninCsrf};

/// Requests without a session or token that read a body (sign-in forms)
/// served at once; more get 503 at once, so they can never hold what an
/// authenticated request needs.
pub const ANONYMOUS_SLOTS: usize = 64;
/// How long such a body may take to arrive.
pub const ANONYMOUS_BODY_TIME: Duration = Duration::from_secs(10);
/// A token found valid is believed this long before a body is read (the
/// operation itself checks it again, with the store).
const VERIFIED_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Arc<StorePool>,
    pub limiter: Arc<AuthLimiter>,
    pub audit: Arc<crate::audit::AuditWriter>,
    /// The page's sign-in sessions.
    pub sessions: Arc<Sessions>,
    /// The page's one-time sign-in link, if one was printed.
    pub login: Arc<LoginLink>,
    /// The sign-in form's CSRF tokens (issued by this server).
    pub signin_csrf: Arc<SigninCsrf>,
    /// The longest lifetime of a minted bundle (`--max-bundle-ttl`).
    pub max_bundle_ttl: Duration,
    /// Digests of tokens recently found valid.
    verified: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    anonymous: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        pool: Arc<StorePool>,
        audit: Arc<crate::audit::AuditWriter>,
        signin_key: Zeroizing<[u8; 32]>,
    ) -> Self {
        Self {
            sessions: Arc::new(Sessions::new(pool.clone())),
            pool,
            audit,
            limiter: Arc::default(),
            login: Arc::default(),
            signin_csrf: Arc::new(SigninCsrf::new(signin_key)),
            max_bundle_ttl: Duration::from_secs(3600),
            verified: Arc::default(),
            anonymous: Arc::new(Semaphore::new(ANONYMOUS_SLOTS)),
        }
    }

    /// A slot for a request that reads a body before it has a credential,
    /// or 503 at once.
    pub fn anonymous_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.anonymous.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many sign-ins at once; try again in a moment",
            )
        })
    }

    /// Authenticates `auth` and runs `f` as its token, on a store of the
    /// pool: one blocking call. A token that is unknown, expired or revoked
    /// is 401 (429 once its address has failed too often).
    pub async fn run<T, F>(&self, auth: Auth, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut sealinit_store::Store, &Caller) -> Result<T, ApiError> + Send + 'static,
    {
        let Auth {
            token,
            peer,
            on_behalf,
        } = auth;
        let outcome = self
            .pool
            .run(String::new(), move |st| {
                let Some(row) = st.authenticate(&token)? else {
                    return Ok(None);
                };
                let result = Caller::acting_for(&row, on_behalf).and_then(|caller| {
                    st.set_actor(caller.actor());
                    f(st, &caller)
                });
                Ok(Some((row.id, result)))
            })
            .await?;
        match outcome {
            Some((id, result)) => {
                tracing::Span::current().record("token", id.as_str());
                self.pool.notice(&result);
                result
            }
            None => Err(self.limiter.fail(peer)),
        }
    }

    /// Runs `f` as the live token `token_id` (a sign-in session's), on a
    /// store of the pool: one blocking call; 401 if the token is no longer
    /// accepted.
    pub async fn run_as<T, F>(&self, token_id: String, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut sealinit_store::Store, &Caller) -> Result<T, ApiError> + Send + 'static,
    {
        // The pool notices a missing master key in this result itself.
        self.pool
            .run(String::new(), move |st| {
                let Some(row) = st.authenticate_id(&token_id)? else {
                    return Err(ApiError::unauthorized());
                };
                let caller = Caller::from_token(&row);
                st.set_actor(caller.actor());
                f(st, &caller)
            })
            .await
    }

    /// Checks `token` before a body is read: a digest found valid lately
    /// passes; otherwise one trip to the store.
    pub(crate) async fn admit(
        &self,
        token: &Arc<Zeroizing<String>>,
        peer: Peer,
    ) -> Result<(), ApiError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let fresh = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).copied());
        if fresh.is_some_and(|at| now.duration_since(at) < VERIFIED_FOR) {
            return Ok(());
        }
        let t = token.clone();
        let valid = self
            .pool
            .run(String::new(), move |st| Ok(st.authenticate(&t)?.is_some()))
            .await?;
        if !valid {
            return Err(self.limiter.fail(peer.ip));
        }
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= 10_000 {
                m.retain(|_, at| now.duration_since(*at) < VERIFIED_FOR);
                if m.len() >= 10_000 {
                    m.clear();
                }
            }
            m.insert(digest, now);
        }
        Ok(())
    }
}

/// The bearer token of a request. Without a body it is checked in the
/// same blocking call as the operation (one trip to the store); with one,
/// it is checked before the body is read, so a request without a valid
/// credential never waits for its body.
pub struct Auth {
    token: Arc<Zeroizing<String>>,
    peer: Option<std::net::IpAddr>,
    /// `X-Sealinit-Actor`: whom the token says it acts for.
    on_behalf: Option<String>,
}

impl Auth {
    /// A token from elsewhere than the Authorization header: the page's
    /// sign-in form.
    pub fn new(token: Arc<Zeroizing<String>>, peer: Option<std::net::IpAddr>) -> Self {
        Self {
            token,
            peer,
            on_behalf: None,
        }
    }
}

/// The header a token made with `--may-act-for` names its person in.
const ACTOR_HEADER: &str = "x-sealinit-actor";

/// `X-Sealinit-Actor`, if sent: 1 to 200 printable characters.
fn on_behalf(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(ACTOR_HEADER) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(str::trim)
        .filter(|p| (1..=200).contains(&p.len()) && p.chars().all(|c| !c.is_control()))
        .map(|p| Some(p.to_owned()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "X-Sealinit-Actor: 1 to 200 printable characters naming a person (alice@acme.example)",
            )
        })
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// `Authorization: Bearer T` (or `token T`, as GitHub's clients send it).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<Arc<Zeroizing<String>>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, t) = v.split_once(' ')?;
    let t = t.trim();
    (["bearer", "token"].contains(&scheme.to_ascii_lowercase().as_str()) && !t.is_empty())
        .then(|| Arc::new(Zeroizing::new(t.to_owned())))
}

/// Whether a request says it has a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The request's peer (set per request by the server).
pub fn peer_of(parts: &Parts) -> Peer {
    parts.extensions.get::<Peer>().copied().unwrap_or(Peer {
        ip: None,
        tls: false,
    })
}

/// The same, of a whole request.
pub(crate) fn peer_of_request(req: &axum::extract::Request) -> Peer {
    req.extensions().get::<Peer>().copied().unwrap_or(Peer {
        ip: None,
        tls: false,
    })
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = peer_of(parts);
        // No credential is not a failed one: 401, not counted.
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        if has_body(&parts.headers) {
            state.admit(&token, peer).await?;
        }
        Ok(Self {
            token,
            peer: peer.ip,
            on_behalf: on_behalf(&parts.headers)?,
        })
    }
}
