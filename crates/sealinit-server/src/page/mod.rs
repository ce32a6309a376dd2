//! The Secrets tab: server-rendered pages over the same service calls as
//! the API ([`crate::service`]: scopes, validation, the guard and the audit
//! record are not written again here). Every flow works without
//! JavaScript; the page sends none.
//!
//! - Values arrive in POST bodies only and are never sent back: value
//!   fields start empty, also after an error; results name secrets and
//!   versions. Redirects (303 after every POST, refusals too) carry no
//!   data but the repository and secret names; a refused form's names,
//!   hosts and messages wait in the session for the page it redirects to.
//!   The one exception: a refused import's pasted text (what the user just
//!   typed) is given back in the answer to its POST, never stored.
//! - Modules: `signin` (token, link, sign-out), `repo` (Repositories,
//!   Secrets and Audit tabs), `secret` (a secret's page), `holders`
//!   (organisation and environment secrets), `words` (refusals in the
//!   page's words), `view` (the HTML).
//! - Every response gets a strict Content-Security-Policy (only the page's
//!   own stylesheet), `frame-ancestors 'none'`, `no-referrer`, `nosniff`,
//!   `no-store`, and HSTS over TLS ([`security_headers`]).

mod holders;
mod repo;
mod secret;
mod signin;
mod view;
mod words;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{
    DefaultBodyLimit, Form, FromRequest, FromRequestParts, Multipart, Path, Query, Request, State,
};
use axum::handler::Handler as _;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use sealinit_core::secret::SecretValue;
use sealinit_store::SetOutcome;

use crate::client::Peer;
use crate::error::ApiError;
use crate::input::{Value, new_value};
use crate::scope::Action;
use crate::service::{self, Caller, PutFlags};
use crate::session::{self, Current, Flash};
pub use crate::session::{LINK_LIFETIME, LoginLink, Sessions};
use crate::state::{ANONYMOUS_BODY_TIME, AppState, Auth, peer_of};
use view::{Chrome, FormError};

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The largest sign-in form (a token and a CSRF token fit many times).
const ANONYMOUS_BODY_LIMIT: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route(
            "/signin",
            post(signin::signin)
                .layer(DefaultBodyLimit::max(ANONYMOUS_BODY_LIMIT))
                .get(to_home),
        )
        .route("/signout", post(signin::signout).get(to_home))
        .route(
            "/login/{code}",
            get(signin::login_page)
                .post(signin::login.layer(DefaultBodyLimit::max(ANONYMOUS_BODY_LIMIT))),
        )
        .route("/static/sealinit.css", get(stylesheet))
        .route("/repos/new", post(repo::new_repo).get(to_home))
        .route("/r", get(repo::open_repo))
        .route("/r/{repo}", get(repo::secrets_tab))
        .route("/r/{repo}/add", post(repo::add).get(to_repo))
        .route("/r/{repo}/import", post(repo::import).get(to_repo))
        .route("/r/{repo}/egress", post(repo::set_egress).get(to_repo))
        .route("/r/{repo}/audit", get(repo::audit))
        .route("/r/{repo}/s/{name}", get(secret::secret))
        .route(
            "/r/{repo}/s/{name}/update",
            post(secret::update).get(to_secret),
        )
        .route(
            "/r/{repo}/s/{name}/rollback",
            post(secret::rollback).get(to_secret),
        )
        .route(
            "/r/{repo}/s/{name}/delete",
            get(secret::confirm_delete).post(secret::delete),
        )
        .route(
            "/r/{repo}/s/{name}/restore",
            post(secret::restore).get(to_repo_of_secret),
        )
        .route("/r/{repo}/env", get(holders::open_env))
        .route("/r/{repo}/env/{env}", get(holders::show))
        .route(
            "/r/{repo}/env/{env}/add",
            post(holders::add).get(holders::to_page),
        )
        .route(
            "/r/{repo}/env/{env}/delete",
            post(holders::delete).get(holders::to_page),
        )
        .route("/o/{org}", get(holders::show))
        .route("/o/{org}/add", post(holders::add).get(holders::to_page))
        .route(
            "/o/{org}/delete",
            post(holders::delete).get(holders::to_page),
        )
        .with_state(state)
        // Pages compress about 12 times (a page of 100 secrets: 42 KB,
        // 3.4 KB on the wire). The CSRF token is masked in each response, so
        // that sizes tell nothing of it (BREACH); a value is in a page only
        // as the user just typed it (a refused import), in the answer to a
        // same-origin POST, which another site cannot make.
        .layer(tower_http::compression::CompressionLayer::new())
}

/// A form's URL opened with GET (a bookmark, Back after an error, the
/// address bar): its page, not 405.
async fn to_home() -> Response {
    see_other("/")
}

async fn to_repo(Path(repo): Path<String>) -> Response {
    see_other(&view::repo_href(&repo))
}

async fn to_repo_of_secret(Path((repo, _)): Path<(String, String)>) -> Response {
    see_other(&view::repo_href(&repo))
}

async fn to_secret(Path((repo, name)): Path<(String, String)>) -> Response {
    see_other(&view::secret_href(&repo, &name))
}

/// The headers every response gets (the API's too).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let tls = req.extensions().get::<Peer>().is_some_and(|p| p.tls);
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if tls {
        set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    res
}

fn page(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Html(m.into_string()),
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

/// An unknown page.
pub fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        view::problem(None, "Not found", "There is no page here.", "/"),
    )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        view::STYLESHEET,
    )
        .into_response()
}

/// Why a page request stops.
#[derive(Debug)]
enum PageError {
    /// No live session, or its token is no longer accepted: sign in.
    SignedOut,
    /// A form without its CSRF token, or another's.
    Csrf,
    /// A request no form of the page makes.
    Bad(String),
    Api(ApiError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::SignedOut => see_other("/"),
            Self::Csrf => page(
                StatusCode::FORBIDDEN,
                view::problem(
                    None,
                    "Form not accepted",
                    "This form could not be verified: it may have expired, or come from another site. Go back, reload the page and try again.",
                    "/",
                ),
            ),
            Self::Bad(m) => page(
                StatusCode::BAD_REQUEST,
                view::problem(None, "Bad request", &m, "/"),
            ),
            Self::Api(e) => {
                let message = match (e.code, &e.repo) {
                    ("repo_not_found", Some(repo)) => format!(
                        "Repository {repo} does not exist. Check its name, or create it under New repository on the Repositories page."
                    ),
                    _ => words::say(&e),
                };
                let mut r = page(
                    e.status,
                    view::problem(None, status_title(e.status), &message, "/"),
                );
                if let Some(secs) = e.retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                r
            }
        }
    }
}

fn status_title(s: StatusCode) -> &'static str {
    match s {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::SERVICE_UNAVAILABLE => "Store unavailable",
        s if s.is_client_error() => "That could not be done",
        _ => "Something went wrong",
    }
}

/// A request of a signed-in browser.
struct Signed {
    cur: Current,
    peer: Peer,
    sessions: Arc<Sessions>,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let peer = peer_of(parts);
        let Some(id) = session::cookie(&parts.headers, session::session_cookie(peer.tls)) else {
            return Err(PageError::SignedOut);
        };
        match state.sessions.find(id).await.map_err(PageError::Api)? {
            Some(cur) => Ok(Self {
                cur,
                peer,
                sessions: state.sessions.clone(),
            }),
            None => Err(PageError::SignedOut),
        }
    }
}

impl Signed {
    /// Runs `f` as the session's token, checked again on every request: a
    /// token the store no longer accepts ends the session (each session of
    /// it, at its next request). Returns the caller too.
    async fn run<T, F>(&self, state: &AppState, f: F) -> Result<(T, Caller), PageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut sealinit_store::Store, &Caller) -> Result<T, ApiError> + Send + 'static,
    {
        match state
            .run_as(self.cur.token_id.clone(), move |st, c| {
                f(st, c).map(|t| (t, c.clone()))
            })
            .await
        {
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                let _ = self.sessions.end(&self.cur).await;
                Err(PageError::SignedOut)
            }
            r => r.map_err(PageError::Api),
        }
    }

    fn check(&self, csrf: Option<&str>) -> Result<(), PageError> {
        match csrf {
            Some(c) if session::carries(c, &self.cur.csrf) => Ok(()),
            _ => Err(PageError::Csrf),
        }
    }

    fn chrome(&self, caller: &Caller) -> Chrome {
        Chrome {
            who: caller.actor(),
            // Masked afresh for each response (BREACH).
            csrf: session::mask(&self.cur.csrf),
        }
    }

    /// Sets the message the next page shows (a failure to store it only
    /// loses the message).
    async fn flash(&self, ok: bool, text: String) {
        self.flash_with(Flash {
            ok,
            text,
            restore: None,
            refused: None,
        })
        .await
    }

    /// Keeps a refused form for the page it redirects to (Post/Redirect/
    /// Get: Back and reload never send the form again).
    async fn refuse(&self, r: Returned) {
        let text = r.error.messages().next().unwrap_or_default().to_owned();
        self.flash_with(Flash {
            ok: false,
            text,
            restore: None,
            refused: serde_json::to_value(&r).ok(),
        })
        .await
    }

    /// The message waiting, or the refused form it gives back.
    async fn take_result(&self) -> (Option<Flash>, Option<Returned>) {
        match self.take_flash().await {
            Some(Flash {
                refused: Some(r), ..
            }) => (None, serde_json::from_value(r).ok()),
            f => (f, None),
        }
    }

    async fn flash_with(&self, flash: Flash) {
        if let Err(e) = self.sessions.set_flash(&self.cur, flash).await {
            tracing::warn!("the result message was not kept: {}", e.message);
        }
    }

    async fn take_flash(&self) -> Option<Flash> {
        self.sessions.take_flash(&self.cur).await
    }
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, PageError> {
    f.map(|Form(t)| t)
        .map_err(|e| PageError::Bad(format!("this form could not be read: {}", e.body_text())))
}

/// A form that carries the session's CSRF token.
trait Csrf {
    fn csrf(&self) -> Option<&str>;
}

macro_rules! csrf_forms {
    ($($t:ty),*) => {$(
        impl Csrf for $t {
            fn csrf(&self) -> Option<&str> {
                self.csrf.as_deref()
            }
        }
    )*};
}

csrf_forms!(
    holders::HolderAddForm,
    holders::HolderDeleteForm,
    CsrfOnly,
    repo::AddForm,
    secret::UpdateForm,
    secret::RollbackForm,
    repo::NewRepoForm,
    repo::EgressForm
);

/// A form posted by a signed-in page, its CSRF token checked before the
/// handler runs: a handler that takes one cannot forget the check.
struct Posted<T> {
    signed: Signed,
    form: T,
}

impl<T: DeserializeOwned + Csrf + Send> FromRequest<AppState> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers, signed.peer) {
            return Err(PageError::Csrf);
        }
        let f = form(Form::<T>::from_request(Request::from_parts(parts, body), state).await)?;
        signed.check(f.csrf())?;
        Ok(Self { signed, form: f })
    }
}

/// A form posted before any session (sign-in): read in one of the few
/// anonymous slots, within `ANONYMOUS_BODY_TIME`, or refused at once (503)
/// or cut (408), so that it never holds what a signed-in request needs.
struct AnonymousForm<T>(T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for AnonymousForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let _slot = state.anonymous_slot().map_err(PageError::Api)?;
        match tokio::time::timeout(ANONYMOUS_BODY_TIME, Form::<T>::from_request(req, state)).await {
            Ok(f) => form(f).map(Self),
            Err(_) => Err(PageError::Api(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the form took too long to arrive; try again",
            ))),
        }
    }
}

/// A checkbox's value: present when ticked.
fn ticked(v: &Option<String>) -> bool {
    v.as_deref() == Some("on")
}

/// What a write says afterwards: the guard's warnings and what was let
/// through, by rule name.
fn notes(done: &[SetOutcome]) -> String {
    let mut out = String::new();
    for d in done {
        for w in &d.warnings {
            out.push_str(&format!(
                " Check {}: it looks like a database URL (rule {w}); make sure it is not production's.",
                d.name
            ));
        }
        for twin in &d.case_twins {
            out.push_str(&format!(
                " Note: {twin} exists too. Names that differ only in case are different secrets, and sandboxes get both."
            ));
        }
        for r in &d.allowed_production {
            out.push_str(&format!(
                " {} was stored although it looks like a production credential (rule {r}); the audit trail records it.",
                d.name
            ));
        }
    }
    out
}

async fn home(
    State(s): State<AppState>,
    signed: Result<Signed, PageError>,
    headers: HeaderMap,
    axum::Extension(peer): axum::Extension<Peer>,
) -> Response {
    let Ok(signed) = signed else {
        return signin::signin_page(&s, &headers, peer, StatusCode::OK, None);
    };
    match repo::render_repos(&s, &signed, StatusCode::OK, &view::NewRepo::default()).await {
        Err(PageError::SignedOut) => signin::signin_page(&s, &headers, peer, StatusCode::OK, None),
        r => r.into_response(),
    }
}

/// Whether a form's request comes from this server's own pages: a
/// browser's `Sec-Fetch-Site`, if sent, is `same-origin` (or `none`: typed
/// by the user); an `Origin`, if sent and not `null` (which browsers send
/// under `Referrer-Policy: no-referrer`), is this server as the browser
/// sees it: the scheme (https through a trusted TLS proxy too) and the
/// Host. The CSRF token is checked as well; this refuses a cross-site form
/// before its token is even looked at.
fn same_origin(headers: &HeaderMap, peer: Peer) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match text(header::ORIGIN) {
        None | Some("null") => true,
        Some(origin) => {
            let scheme = if peer.tls { "https" } else { "http" };
            let host = text(header::HOST);
            host.is_some()
                && origin
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    == host
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

/// A refused form, given back through the session to the page it
/// redirects to: what the user typed (names, hosts, a delivery; never a
/// value) and what was wrong.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Returned {
    error: FormError,
    draft: Option<view::AddDraft>,
}

/// Stores one value through the service (what the API's PUT does below
/// its handler).
async fn put_value(
    s: &AppState,
    signed: &Signed,
    repo: &str,
    name: &str,
    value: Option<Value>,
    flags: PutFlags,
) -> Result<SetOutcome, PageError> {
    // Typed into a text area: LF line ends, as the CLI and API keep them.
    let value = value.map(Value::with_lf);
    let value = new_value(signed.peer, value, None, None, "value").map_err(PageError::Api)?;
    let (r, n) = (repo.to_owned(), name.to_owned());
    signed
        .run(s, move |st, c| {
            service::put_secret(st, c, &r, &n, value, flags)
        })
        .await
        .map(|(done, _)| done)
}

/// An error the user can fix on the form they sent (not 403, not 5xx),
/// to show there; anything else is a page of its own.
fn on_form(e: PageError) -> Result<ApiError, PageError> {
    match e {
        PageError::Api(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            Ok(e)
        }
        e => Err(e),
    }
}

/// Hosts typed in a form: one per line, or separated by spaces or commas.
fn host_list(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a value form (Add, Update) sends besides the name and value.
struct ValueFields<'a> {
    /// The name the user lets through the guard (a box shown after a
    /// refusal names it).
    allow_production: Option<&'a str>,
    allow_empty: bool,
    delivery: Option<&'a str>,
    hosts: Option<&'a str>,
    in_body: Option<&'a str>,
}

impl ValueFields<'_> {
    /// The write's flags for secret `name` at version `if_version` (0: a
    /// new one), and what a refusal gives back to the form (the delivery
    /// asked for, if the form has the delivery fields).
    fn flags(
        &self,
        name: &str,
        if_version: i64,
    ) -> Result<(PutFlags, Option<view::AddDraft>), PageError> {
        let route = route_change(self.delivery, self.hosts, self.in_body)?;
        let draft = route.delivery.map(|delivery| view::AddDraft {
            name: name.to_owned(),
            delivery,
            hosts: route.hosts.clone().unwrap_or_default(),
            in_body: route.in_body.unwrap_or(false),
        });
        let flags = PutFlags {
            if_version: Some(service::IfMatch::Version(if_version)),
            allow_production: self.allow_production == Some(name),
            allow_name: false,
            allow_empty: self.allow_empty,
            route,
        };
        Ok((flags, draft))
    }
}

/// The delivery fields of a form: the choice, and the hosts (one per line,
/// or separated by spaces or commas).
fn route_change(
    delivery: Option<&str>,
    hosts: Option<&str>,
    in_body: Option<&str>,
) -> Result<sealinit_store::RouteChange, PageError> {
    let delivery = match delivery {
        None => None,
        Some(d) => Some(
            sealinit_store::Delivery::parse(d)
                .ok_or_else(|| PageError::Bad(format!("unknown delivery {d:?}")))?,
        ),
    };
    // The Hosts field is for proxy secrets: another delivery clears it.
    let hosts = match delivery {
        Some(d) if d != sealinit_store::Delivery::Proxy => Some(Vec::new()),
        _ => hosts.map(host_list),
    };
    Ok(sealinit_store::RouteChange {
        // A form with the delivery fields says the checkbox's state: not
        // sent is unchecked.
        in_body: delivery.map(|d| d == sealinit_store::Delivery::Proxy && in_body.is_some()),
        delivery,
        hosts,
        placeholder: None,
        repos: None,
    })
}
