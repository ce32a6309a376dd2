//! The Secrets tab: server-rendered pages over the same service calls as
//! the API ([`crate::service`]: scopes, validation, the guard and the audit
//! record are not written again here). Every flow works without
//! JavaScript; the page sends none.
//!
//! - Values arrive in POST bodies only and are never sent back: value
//!   fields start empty, also after an error; results name secrets and
//!   versions. Redirects (303 after every POST) carry no data but the
//!   repository and secret names.
//! - Every response gets a strict Content-Security-Policy (only the page's
//!   own stylesheet), `frame-ancestors 'none'`, `no-referrer`, `nosniff`,
//!   `no-store`, and HSTS over TLS ([`security_headers`]).

mod holders;
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
            post(signin).layer(DefaultBodyLimit::max(ANONYMOUS_BODY_LIMIT)),
        )
        .route("/signout", post(signout).get(to_home))
        .route(
            "/login/{code}",
            get(login_page).post(login.layer(DefaultBodyLimit::max(ANONYMOUS_BODY_LIMIT))),
        )
        .route("/static/sealinit.css", get(stylesheet))
        .route("/repos/new", post(new_repo).get(to_home))
        .route("/r", get(open_repo))
        .route("/r/{repo}", get(secrets_tab))
        .route("/r/{repo}/add", post(add).get(to_repo))
        .route("/r/{repo}/import", post(import).get(to_repo))
        .route("/r/{repo}/egress", post(set_egress).get(to_repo))
        .route("/r/{repo}/audit", get(audit))
        .route("/r/{repo}/s/{name}", get(secret))
        .route("/r/{repo}/s/{name}/update", post(update).get(to_secret))
        .route("/r/{repo}/s/{name}/rollback", post(rollback).get(to_secret))
        .route(
            "/r/{repo}/s/{name}/delete",
            get(confirm_delete).post(delete),
        )
        .route(
            "/r/{repo}/s/{name}/restore",
            post(restore).get(to_repo_of_secret),
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
    AddForm,
    UpdateForm,
    RollbackForm,
    NewRepoForm,
    EgressForm
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

// ---- sign-in ----

async fn home(
    State(s): State<AppState>,
    signed: Result<Signed, PageError>,
    headers: HeaderMap,
    axum::Extension(peer): axum::Extension<Peer>,
) -> Response {
    let Ok(signed) = signed else {
        return signin_page(&s, &headers, peer, StatusCode::OK, None);
    };
    match render_repos(&s, &signed, StatusCode::OK, &view::NewRepo::default()).await {
        Err(PageError::SignedOut) => signin_page(&s, &headers, peer, StatusCode::OK, None),
        r => r.into_response(),
    }
}

/// The Repositories page, with what a failed "New repository" form left.
async fn render_repos(
    s: &AppState,
    signed: &Signed,
    status: StatusCode,
    new: &view::NewRepo<'_>,
) -> Result<Response, PageError> {
    let (repos, caller) = signed.run(s, service::repos).await?;
    let (flash, returned) = signed.take_result().await;
    let new = match &returned {
        Some(r) => &view::NewRepo {
            name: r.draft.as_ref().map_or("", |d| d.name.as_str()),
            error: r.error.name.as_deref(),
            ..Default::default()
        },
        None => new,
    };
    Ok(page(
        status,
        view::repos(&signed.chrome(&caller), flash.as_ref(), &repos, new),
    ))
}

#[derive(Deserialize)]
struct NewRepoForm {
    csrf: Option<String>,
    name: Option<String>,
}

async fn new_repo(
    State(s): State<AppState>,
    Posted { signed, form: f }: Posted<NewRepoForm>,
) -> Result<Response, PageError> {
    let name = f.name.unwrap_or_default().trim().to_owned();
    let n = name.clone();
    match signed
        .run(&s, move |st, c| service::create_repo(st, c, &n))
        .await
    {
        Ok((repo, _)) => {
            signed
                .flash(true, format!("Created {repo}. Add its secrets below."))
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
        Err(e) => {
            let e = on_form(e)?;
            let message = match e.code {
                "conflict" => format!("{name} already exists: open it from the table."),
                _ => e.message,
            };
            signed
                .refuse(Returned {
                    error: FormError::name(message),
                    draft: Some(view::AddDraft {
                        name,
                        ..Default::default()
                    }),
                })
                .await;
            Ok(see_other("/"))
        }
    }
}

/// A form posted before any session: its CSRF token must be one this
/// server issued, and repeat its cookie's; an `Origin`, if sent, must be
/// this server's.
fn check_signin_csrf(
    s: &AppState,
    headers: &HeaderMap,
    peer: Peer,
    csrf: Option<&str>,
) -> Result<(), PageError> {
    match (
        csrf,
        session::cookie(headers, session::signin_cookie(peer.tls)),
    ) {
        (Some(a), Some(b))
            if session::carries(a, b) && s.signin_csrf.issued(b) && same_origin(headers, peer) =>
        {
            Ok(())
        }
        _ => Err(PageError::Csrf),
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

/// The sign-in form.
fn signin_page(
    s: &AppState,
    headers: &HeaderMap,
    peer: Peer,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    with_signin_csrf(s, headers, peer, |csrf| {
        page(status, view::signin(csrf, error))
    })
}

/// A page of a form posted before any session (sign-in), with its CSRF
/// token, which a cookie of its own repeats (kept if the browser has one
/// this server issued, so several tabs can sign in).
fn with_signin_csrf(
    s: &AppState,
    headers: &HeaderMap,
    peer: Peer,
    page: impl FnOnce(&str) -> Response,
) -> Response {
    let name = session::signin_cookie(peer.tls);
    let csrf = session::cookie(headers, name)
        .filter(|t| s.signin_csrf.issued(t))
        .map_or_else(|| s.signin_csrf.issue(), str::to_owned);
    let mut r = page(&session::mask(&csrf));
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(name, &csrf, session::LIFETIME, peer.tls),
    );
    r
}

#[derive(Deserialize)]
struct SigninForm {
    csrf: Option<String>,
    token: Option<String>,
}

async fn signin(
    State(s): State<AppState>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
    AnonymousForm(f): AnonymousForm<SigninForm>,
) -> Result<Response, PageError> {
    check_signin_csrf(&s, &headers, peer, f.csrf.as_deref())?;
    let token = Arc::new(Zeroizing::new(f.token.unwrap_or_default()));
    if token.trim().is_empty() {
        return Ok(signin_page(
            &s,
            &headers,
            peer,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Paste a token: sit_ followed by 36 letters and digits."),
        ));
    }
    let auth = Auth::new(token, peer.ip);
    let token_id = match s.run(auth, |_, caller| Ok(caller.id.clone())).await {
        Ok(id) => id,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return Ok(signin_page(
                &s,
                &headers,
                peer,
                StatusCode::UNAUTHORIZED,
                Some(
                    "That token is not valid: it is unknown, expired or revoked. Make one with sealctl tokens create.",
                ),
            ));
        }
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            let mut r = signin_page(&s, &headers, peer, e.status, Some(&e.message));
            if let Some(secs) = e.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(r);
        }
        Err(e) => return Err(PageError::Api(e)),
    };
    signed_in(&s, peer, token_id).await
}

/// Starts a session for `token` and sends the browser home with its cookie.
async fn signed_in(s: &AppState, peer: Peer, token_id: String) -> Result<Response, PageError> {
    let id = s.sessions.start(token_id).await.map_err(PageError::Api)?;
    let mut r = see_other("/");
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(
            session::session_cookie(peer.tls),
            &id,
            session::LIFETIME,
            peer.tls,
        ),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(
            session::signin_cookie(peer.tls),
            "",
            std::time::Duration::ZERO,
            peer.tls,
        ),
    );
    Ok(r)
}

/// The one-time sign-in link: a page with a button (a GET changes
/// nothing, so a link preview cannot use the code up).
async fn login_page(
    State(s): State<AppState>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Response {
    if !s.login.valid(&code) {
        return link_gone();
    }
    with_signin_csrf(&s, &headers, peer, |csrf| {
        page(StatusCode::OK, view::login_link(csrf, &code, None))
    })
}

#[derive(Deserialize)]
struct LinkForm {
    csrf: Option<String>,
    name: Option<String>,
}

fn link_gone() -> Response {
    page(
        StatusCode::NOT_FOUND,
        view::problem(
            None,
            "Link used or expired",
            "This sign-in link works once, within 15 minutes of the server's start. Sign in with a token instead (sealctl tokens create).",
            "/",
        ),
    )
}

/// Uses the link up: a new admin token, living as long as the session,
/// signs this browser in.
async fn login(
    State(s): State<AppState>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
    Path(code): Path<String>,
    AnonymousForm(f): AnonymousForm<LinkForm>,
) -> Result<Response, PageError> {
    check_signin_csrf(&s, &headers, peer, f.csrf.as_deref())?;
    // A name for the audit trail: one line of printable text.
    let name: String = f
        .name
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() || name.chars().count() > view::LINK_NAME_MAX {
        if !s.login.valid(&code) {
            return Ok(link_gone());
        }
        let error = format!(
            "Enter your name (at most {} characters): the audit trail names this session by it.",
            view::LINK_NAME_MAX
        );
        return Ok(with_signin_csrf(&s, &headers, peer, |csrf| {
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                view::login_link(csrf, &code, Some(&error)),
            )
        }));
    }
    if !s.login.take(&code) {
        return Ok(link_gone());
    }
    let made = s
        .pool
        .run(format!("sign-in link for {name}"), move |st| {
            Ok(st.create_token(
                &format!("{name} (sign-in link)"),
                &["admin".to_owned()],
                Some(session::LIFETIME),
                false,
            )?)
        })
        .await
        .map_err(PageError::Api)?;
    signed_in(&s, peer, made.row.id).await
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

async fn signout(Posted { signed, .. }: Posted<CsrfOnly>) -> Result<Response, PageError> {
    signed
        .sessions
        .end(&signed.cur)
        .await
        .map_err(PageError::Api)?;
    let mut r = see_other("/");
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            session::session_cookie(signed.peer.tls),
            "",
            std::time::Duration::ZERO,
            signed.peer.tls,
        ),
    );
    Ok(r)
}

// ---- a repository ----

#[derive(Deserialize)]
struct OpenQuery {
    repo: Option<String>,
}

/// "Open a repository": one of those the token may see (any case), or
/// the Repositories page saying it is not one of them.
async fn open_repo(
    State(s): State<AppState>,
    signed: Signed,
    Query(q): Query<OpenQuery>,
) -> Result<Response, PageError> {
    let typed = q
        .repo
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if typed.is_empty() {
        return Ok(see_other("/"));
    }
    let (repos, _) = signed.run(&s, service::repos).await?;
    if let Some(r) = repos.iter().find(|r| r.repo.eq_ignore_ascii_case(&typed)) {
        return Ok(see_other(&view::repo_href(&r.repo)));
    }
    let message = format!(
        "{typed} is not one of your repositories. Check its name, or create it under New repository."
    );
    let new = view::NewRepo {
        open: &typed,
        open_error: Some(&message),
        ..Default::default()
    };
    render_repos(&s, &signed, StatusCode::NOT_FOUND, &new).await
}

/// The Secrets tab, with what a failed form left (never a value).
/// What the Secrets tab lists: names containing `q` (any case), a page of
/// [`view::PER_PAGE`] at a time.
#[derive(Debug, Default, Deserialize)]
struct Listing {
    q: Option<String>,
    page: Option<usize>,
}

/// A refused form, given back through the session to the page it
/// redirects to: what the user typed (names, hosts, a delivery; never a
/// value) and what was wrong.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Returned {
    error: FormError,
    draft: Option<view::AddDraft>,
}

/// What a refused form on the Secrets tab sent back to it: what the user
/// typed (never a stored value) and what was wrong.
#[derive(Default)]
struct Refused {
    add: view::AddDraft,
    add_error: FormError,
    /// Pasted .env text, in a buffer wiped on drop.
    import_text: Zeroizing<String>,
    import_error: FormError,
}

/// The Secrets tab answering a refused import (its text cannot go
/// through the session: it holds values).
async fn render_tab(
    s: &AppState,
    signed: &Signed,
    repo: String,
    status: StatusCode,
    refused: Refused,
) -> Result<Response, PageError> {
    render_listing(s, signed, repo, status, Some(refused), Listing::default()).await
}

/// The Secrets tab: a page of its listing, with what a refused form left
/// (`refused`, or given back through the session).
async fn render_listing(
    s: &AppState,
    signed: &Signed,
    repo: String,
    status: StatusCode,
    refused: Option<Refused>,
    listing: Listing,
) -> Result<Response, PageError> {
    let r = repo.clone();
    let ((list, egress, from_org, environments, deleted, repo), caller) = signed
        .run(s, move |st, c| {
            let list = service::list_secrets(st, c, &r, 1, usize::MAX)?;
            let from_org = service::received(st, c, &r)?;
            let environments = service::environments(st, c, &r)?;
            let deleted = service::deleted(st, c, &r)?;
            // Shown as stored, whatever case the address has.
            let stored = st.existing(&r)?;
            Ok((
                list,
                service::egress(st, c, &r)?,
                from_org,
                environments,
                deleted,
                stored,
            ))
        })
        .await?;
    let can_write = caller.grants.allows(Action::Write, &repo);
    let q = listing.q.as_deref().map(str::trim).unwrap_or("");
    let needle = q.to_ascii_lowercase();
    let matched: Vec<service::SecretMeta> = list
        .secrets
        .into_iter()
        .filter(|m| m.name.to_ascii_lowercase().contains(&needle))
        .collect();
    let pages = matched.len().div_ceil(view::PER_PAGE).max(1);
    let page_no = listing.page.unwrap_or(1).clamp(1, pages);
    let shown =
        &matched[(page_no - 1) * view::PER_PAGE..matched.len().min(page_no * view::PER_PAGE)];
    let (flash, refused) = match refused {
        Some(r) => (None, r),
        None => match signed.take_result().await {
            (f, Some(r)) => (
                f,
                Refused {
                    add: r.draft.unwrap_or_default(),
                    add_error: r.error,
                    ..Refused::default()
                },
            ),
            (f, None) => (f, Refused::default()),
        },
    };
    let tab = view::SecretsTab {
        repo: &repo,
        secrets: shown,
        total: list.total_count,
        matched: matched.len(),
        page: page_no,
        pages,
        q,
        can_write,
        can_audit: caller.grants.allows(Action::Audit, &repo),
        add: &refused.add,
        add_error: refused.add_error,
        import_text: &refused.import_text,
        import_error: refused.import_error,
        egress: can_write.then_some(&egress),
        from_org: &from_org,
        environments: &environments,
        deleted: &deleted,
    };
    Ok(page(
        status,
        view::secrets_tab(&signed.chrome(&caller), flash.as_ref(), &tab),
    ))
}

#[derive(Deserialize)]
struct EgressForm {
    csrf: Option<String>,
    default: Option<String>,
    allow: Option<String>,
}

async fn set_egress(
    State(s): State<AppState>,
    Path(repo): Path<String>,
    Posted { signed, form: f }: Posted<EgressForm>,
) -> Result<Response, PageError> {
    use sealinit_core::bundle::{Egress, EgressDefault};
    let policy = Egress {
        default: match f.default.as_deref() {
            Some("deny") => EgressDefault::Deny,
            _ => EgressDefault::Allow,
        },
        allow: host_list(f.allow.as_deref().unwrap_or_default()),
    };
    let r = repo.clone();
    let done = signed
        .run(&s, move |st, c| service::set_egress(st, c, &r, policy))
        .await;
    match done {
        Ok(_) => signed.flash(true, "Egress policy saved.".into()).await,
        Err(e) => {
            let e = on_form(e)?;
            signed.flash(false, words::say(&e)).await;
        }
    }
    Ok(see_other(&view::repo_href(&repo)))
}

async fn secrets_tab(
    State(s): State<AppState>,
    signed: Signed,
    Path(repo): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Response, PageError> {
    render_listing(&s, &signed, repo, StatusCode::OK, None, listing).await
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

#[derive(Deserialize)]
struct AddForm {
    csrf: Option<String>,
    name: Option<String>,
    value: Option<Value>,
    /// The name the user lets through the guard (a box shown after a
    /// refusal names it).
    allow_production: Option<String>,
    allow_empty: Option<String>,
    delivery: Option<String>,
    hosts: Option<String>,
    in_body: Option<String>,
}

async fn add(
    State(s): State<AppState>,
    Path(repo): Path<String>,
    Posted { signed, form: f }: Posted<AddForm>,
) -> Result<Response, PageError> {
    let name = f.name.unwrap_or_default().trim().to_owned();
    let route = route_change(
        f.delivery.as_deref(),
        f.hosts.as_deref(),
        f.in_body.as_deref(),
    )?;
    let draft = view::AddDraft {
        name: name.clone(),
        delivery: route.delivery.unwrap_or_default(),
        hosts: route.hosts.clone().unwrap_or_default(),
        in_body: route.in_body.unwrap_or(false),
    };
    let flags = PutFlags {
        // Add never replaces: an existing name is updated from its page.
        if_version: Some(service::IfMatch::Version(0)),
        allow_production: f.allow_production.as_deref() == Some(name.as_str()),
        allow_name: false,
        allow_empty: ticked(&f.allow_empty),
        route,
    };
    let outcome = put_value(&s, &signed, &repo, &name, f.value, flags).await;
    match outcome {
        Ok(done) => {
            signed
                .flash(
                    true,
                    format!(
                        "Added {} (version {}).{}",
                        done.name,
                        done.version,
                        notes(std::slice::from_ref(&done))
                    ),
                )
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
        Err(e) => {
            let e = on_form(e)?;
            let mut err = FormError::from_api(&e);
            if e.status == StatusCode::PRECONDITION_FAILED {
                err = FormError::name(format!(
                    "{name} already exists: open it from the table to update it."
                ));
            }
            signed
                .refuse(Returned {
                    error: err,
                    draft: Some(draft),
                })
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
    }
}

async fn import(
    State(s): State<AppState>,
    signed: Signed,
    Path(repo): Path<String>,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, PageError> {
    let mut mp =
        mp.map_err(|e| PageError::Bad(format!("this form could not be read: {}", e.body_text())))?;
    let mut csrf = None;
    let mut allow = Vec::new();
    // The text, pasted or uploaded, in buffers wiped on drop.
    let mut pasted = Zeroizing::new(Vec::new());
    let mut uploaded = Zeroizing::new(Vec::new());
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| PageError::Bad(format!("this form could not be read: {}", e.body_text())))?
    {
        let into = match field.name() {
            Some("csrf") => {
                csrf = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| PageError::Bad(e.body_text()))?,
                );
                continue;
            }
            Some("allow_production") => {
                allow.push(
                    field
                        .text()
                        .await
                        .map_err(|e| PageError::Bad(e.body_text()))?,
                );
                continue;
            }
            Some("content") => &mut pasted,
            Some("file") => &mut uploaded,
            _ => continue,
        };
        while let Some(chunk) = field.chunk().await.map_err(|e| {
            PageError::Bad(format!("this form could not be read: {}", e.body_text()))
        })? {
            append_wiped(into, &chunk);
        }
    }
    signed.check(csrf.as_deref())?;
    // Pasted text is what the user typed: given back after a refusal, so
    // that "line 3" points at text they still have.
    let typed = Zeroizing::new(String::from_utf8_lossy(&pasted).into_owned());
    let text = match (pasted.is_empty(), uploaded.is_empty()) {
        (false, true) => Ok(pasted),
        (true, false) => Ok(uploaded),
        (true, true) => Err("Paste a .env file, or choose one to upload."),
        (false, false) => Err("Paste a .env file or upload one, not both: nothing was changed."),
    };
    let mut text = match text {
        Ok(text) => text,
        Err(m) => {
            let refused = Refused {
                import_text: typed,
                import_error: FormError::form(m),
                ..Refused::default()
            };
            return render_tab(&s, &signed, repo, StatusCode::UNPROCESSABLE_ENTITY, refused).await;
        }
    };
    let content = new_value(
        signed.peer,
        Some(Value(SecretValue::from(std::mem::take(&mut *text))).with_lf()),
        None,
        None,
        "content",
    );
    let outcome = match content {
        Ok(content) => {
            let r = repo.clone();
            signed
                .run(&s, move |st, c| {
                    service::import(
                        st,
                        c,
                        &r,
                        service::Format::Env { expand: false },
                        content,
                        service::ImportOptions {
                            allow: service::AllowProduction::Names(allow),
                            ..Default::default()
                        },
                    )
                })
                .await
        }
        Err(e) => Err(PageError::Api(e)),
    };
    match outcome {
        Ok((done, _)) => {
            let names: Vec<&str> = done.iter().map(|d| d.name.as_str()).collect();
            signed
                .flash(
                    true,
                    format!(
                        "Imported {} secret(s): {}.{}",
                        done.len(),
                        names.join(", "),
                        notes(&done)
                    ),
                )
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
        Err(e) => {
            let e = on_form(e)?;
            let mut err = FormError::from_api(&e);
            // One message for the whole text, next to it.
            let all: Vec<String> = err.messages().map(words::import_words).collect();
            (err.name, err.value, err.form) = (None, None, Some(all.join(" ")));
            let refused = Refused {
                import_text: typed,
                import_error: err,
                ..Refused::default()
            };
            render_tab(&s, &signed, repo, e.status, refused).await
        }
    }
}

/// Appends to a buffer that is wiped on drop, wiping what a growth leaves
/// behind (`Vec`'s own growth would free the old bytes as they are).
fn append_wiped(buf: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    if buf.capacity() - buf.len() < more.len() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            (buf.len() + more.len()).max(buf.capacity() * 2),
        ));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(more);
}

#[derive(Debug, Default, Deserialize)]
struct AuditPageQuery {
    page: Option<usize>,
}

async fn audit(
    State(s): State<AppState>,
    signed: Signed,
    Path(repo): Path<String>,
    Query(q): Query<AuditPageQuery>,
) -> Result<Response, PageError> {
    let r = repo.clone();
    let page_no = q.page.unwrap_or(1).max(1);
    let ((records, total), caller) = signed
        .run(&s, move |st, c| {
            service::audit_recent(st, c, &r, view::AUDIT_PER_PAGE, page_no)
        })
        .await?;
    let pages = total.div_ceil(view::AUDIT_PER_PAGE).max(1);
    Ok(page(
        StatusCode::OK,
        view::audit(
            &signed.chrome(&caller),
            &repo,
            &records,
            (page_no.min(pages), pages),
        ),
    ))
}

// ---- a secret ----

async fn render_secret(
    s: &AppState,
    signed: &Signed,
    repo: String,
    name: String,
    status: StatusCode,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    let ((meta, history, restored), caller) = signed
        .run(s, move |st, c| {
            let meta = service::get_secret(st, c, &r, &n)?;
            let history = service::versions(st, c, &r, &n)?;
            let since = history.first().map_or(0, |h| h.at);
            let restored = service::restored_from(st, c, &r, &n, since)?;
            Ok((meta, history, restored))
        })
        .await?;
    let (flash, returned) = signed.take_result().await;
    let (error, draft) = match returned {
        Some(r) => (r.error, r.draft),
        None => (FormError::default(), None),
    };
    let v = view::SecretView {
        repo: &repo,
        meta: &meta,
        history: &history,
        restored: &restored,
        can_write: caller.grants.allows(Action::Write, &repo),
        can_audit: caller.grants.allows(Action::Audit, &repo),
        error,
        draft: draft.as_ref(),
    };
    Ok(page(
        status,
        view::secret(&signed.chrome(&caller), flash.as_ref(), &v),
    ))
}

async fn secret(
    State(s): State<AppState>,
    signed: Signed,
    Path((repo, name)): Path<(String, String)>,
) -> Result<Response, PageError> {
    render_secret(&s, &signed, repo, name, StatusCode::OK).await
}

#[derive(Deserialize)]
struct UpdateForm {
    csrf: Option<String>,
    value: Option<Value>,
    if_version: Option<i64>,
    allow_production: Option<String>,
    allow_empty: Option<String>,
    delivery: Option<String>,
    hosts: Option<String>,
    in_body: Option<String>,
}

/// Hosts typed in a form: one per line, or separated by spaces or commas.
fn host_list(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
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

async fn update(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, form: f }: Posted<UpdateForm>,
) -> Result<Response, PageError> {
    let Some(if_version) = f.if_version.filter(|v| *v > 0) else {
        return Err(PageError::Bad(
            "the form lacks the version it updates; reload the page".into(),
        ));
    };
    let route = route_change(
        f.delivery.as_deref(),
        f.hosts.as_deref(),
        f.in_body.as_deref(),
    )?;
    let draft = route.delivery.map(|delivery| view::AddDraft {
        name: name.clone(),
        delivery,
        hosts: route.hosts.clone().unwrap_or_default(),
        in_body: route.in_body.unwrap_or(false),
    });
    let flags = PutFlags {
        if_version: Some(service::IfMatch::Version(if_version)),
        allow_production: f.allow_production.as_deref() == Some(name.as_str()),
        allow_name: false,
        allow_empty: ticked(&f.allow_empty),
        route,
    };
    let outcome = put_value(&s, &signed, &repo, &name, f.value, flags).await;
    match outcome {
        Ok(done) => {
            signed
                .flash(
                    true,
                    format!(
                        "Updated {}: now version {}.{}",
                        done.name,
                        done.version,
                        notes(std::slice::from_ref(&done))
                    ),
                )
                .await;
            Ok(see_other(&view::secret_href(&repo, &name)))
        }
        Err(e) => {
            let e = on_form(e)?;
            signed
                .refuse(Returned {
                    error: FormError::from_api(&e),
                    draft,
                })
                .await;
            Ok(see_other(&view::secret_href(&repo, &name)))
        }
    }
}

#[derive(Deserialize)]
struct RollbackForm {
    csrf: Option<String>,
    to: Option<i64>,
}

async fn rollback(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, form: f }: Posted<RollbackForm>,
) -> Result<Response, PageError> {
    let Some(to) = f.to else {
        return Err(PageError::Bad(
            "the form lacks the version to roll back to".into(),
        ));
    };
    let (r, n) = (repo.clone(), name.clone());
    match signed
        .run(&s, move |st, c| service::rollback(st, c, &r, &n, to))
        .await
    {
        Ok((done, _)) => {
            signed
                .flash(
                    true,
                    format!(
                        "Rolled {} back to version {to}: its value is now version {}.",
                        done.name, done.version
                    ),
                )
                .await
        }
        Err(e) => {
            let e = on_form(e)?;
            signed
                .flash(false, format!("Not rolled back: {}", words::say(&e)))
                .await;
        }
    }
    Ok(see_other(&view::secret_href(&repo, &name)))
}

async fn confirm_delete(
    State(s): State<AppState>,
    signed: Signed,
    Path((repo, name)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    let (_, caller) = signed
        .run(&s, move |st, c| {
            c.require(Action::Write, &r)?;
            service::get_secret(st, c, &r, &n)
        })
        .await?;
    Ok(page(
        StatusCode::OK,
        view::confirm_delete(&signed.chrome(&caller), &repo, &name),
    ))
}

async fn delete(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, .. }: Posted<CsrfOnly>,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    signed
        .run(&s, move |st, c| service::delete_secret(st, c, &r, &n))
        .await?;
    signed
        .flash_with(Flash {
            ok: true,
            text: format!("Deleted {name}."),
            restore: Some(name),
            refused: None,
        })
        .await;
    Ok(see_other(&view::repo_href(&repo)))
}

/// Brings a deleted secret back (a roll back to its last value).
async fn restore(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, .. }: Posted<CsrfOnly>,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    match signed
        .run(&s, move |st, c| service::restore(st, c, &r, &n))
        .await
    {
        Ok(((done, from), _)) => {
            signed
                .flash(
                    true,
                    format!(
                        "Restored {name}: version {} has the value of version {from}.",
                        done.version
                    ),
                )
                .await;
            Ok(see_other(&view::secret_href(&repo, &name)))
        }
        Err(e) => {
            let e = on_form(e)?;
            signed
                .flash(false, format!("Not restored: {}", words::say(&e)))
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
    }
}
