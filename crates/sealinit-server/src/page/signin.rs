//! Signing in: the token form, the one-time sign-in link, signing out,
//! and their CSRF tokens before any session.

use super::*;

/// A form posted before any session: its CSRF token must be one this
/// server issued, and repeat its cookie's; an `Origin`, if sent, must be
/// this server's.
pub(super) fn check_signin_csrf(
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

/// The sign-in form.
pub(super) fn signin_page(
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
pub(super) fn with_signin_csrf(
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
pub(super) struct SigninForm {
    pub(super) csrf: Option<String>,
    pub(super) token: Option<String>,
}

pub(super) async fn signin(
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
pub(super) async fn signed_in(
    s: &AppState,
    peer: Peer,
    token_id: String,
) -> Result<Response, PageError> {
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
pub(super) async fn login_page(
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
pub(super) struct LinkForm {
    pub(super) csrf: Option<String>,
    pub(super) name: Option<String>,
}

pub(super) fn link_gone() -> Response {
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
pub(super) async fn login(
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

pub(super) async fn signout(
    Posted { signed, .. }: Posted<CsrfOnly>,
) -> Result<Response, PageError> {
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
