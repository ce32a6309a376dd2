//! The GitHub-shaped API (`/api/v3`, where GitHub Enterprise Server
//! clients look): repository secrets as `gh secret`, PyGithub and octocrab
//! call them. Thin handlers over the same service calls as API v1 (scopes,
//! the guard, delivery, the audit record are written once, there), with
//! GitHub's semantics on these paths: names upper-cased and checked as
//! GitHub checks them, `PUT` answering 201 `{}` when created and 204 when
//! updated, values only sealed to the repository's public key, `per_page`
//! and `Link` paging, errors as `{"message", "documentation_url"}`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::api::Params;
use crate::client::Peer;
use crate::error::ApiError;
use crate::input::JsonBody;
use crate::service;
use crate::state::{AppState, Auth};

/// Where GitHub documents these endpoints (for `documentation_url`).
const DOCS: &str = "https://docs.github.com/rest/actions/secrets";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v3/user", get(user))
        .route("/api/v3/repos/{owner}/{repo}", get(repository))
        .route("/api/v3/repos/{owner}/{repo}/{family}/secrets", get(list))
        .route(
            "/api/v3/repos/{owner}/{repo}/{family}/secrets/public-key",
            get(public_key),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/{family}/secrets/{name}",
            get(get_one).put(put_one).delete(delete_one),
        )
        .layer(axum::middleware::from_fn(github_errors))
        .with_state(state)
}

/// `owner/repo` of a path whose secrets family is `actions` (GitHub
/// Actions) or `agents` (GitHub's family for coding agents): both are the
/// repository's secrets here.
fn repo_of(owner: &str, repo: &str, family: &str) -> Result<String, ApiError> {
    match family {
        "actions" | "agents" => Ok(format!("{owner}/{repo}")),
        _ => Err(ApiError::not_found("Not Found")),
    }
}

/// A secret name as GitHub takes it: upper-cased; letters, digits and `_`,
/// not starting with a digit, not starting with `GITHUB_`.
fn secret_name(name: &str) -> Result<String, ApiError> {
    let upper = name.to_ascii_uppercase();
    let valid = !upper.is_empty()
        && upper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !upper.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(ApiError::unprocessable(
            "Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_), and must not start with a number",
        ));
    }
    if upper.starts_with("GITHUB_") {
        return Err(ApiError::unprocessable(
            "Secret names must not start with GITHUB_",
        ));
    }
    Ok(upper)
}

/// A repository's numeric id, as GitHub's clients expect one: stable,
/// derived from its name (53 bits, so that JavaScript keeps it exact).
pub fn repo_id(repo: &str) -> u64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(repo.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) >> 11
}

async fn user(State(s): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let (id, name) = s
        .run(auth, |_, caller| {
            Ok((caller.id.clone(), caller.name.clone()))
        })
        .await?;
    Ok(
        Json(serde_json::json!({"login": name, "id": repo_id(&id), "type": "User", "name": name}))
            .into_response(),
    )
}

/// This server's `/api/v3` as the client reached it (for the URLs GitHub's
/// clients follow: `url`, `Link`).
fn base(peer: &Peer, headers: &HeaderMap) -> String {
    format!(
        "{}://{}/api/v3",
        if peer.tls { "https" } else { "http" },
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost"),
    )
}

async fn repository(
    State(s): State<AppState>,
    auth: Auth,
    Params((owner, name)): Params<(String, String)>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let repo = format!("{owner}/{name}");
    let checked = repo.clone();
    s.run(auth, move |st, caller| {
        service::list_secrets(st, caller, &checked, 1, 1)
    })
    .await?;
    Ok(Json(serde_json::json!({
        "id": repo_id(&repo), "name": name, "full_name": repo,
        "url": format!("{}/repos/{repo}", base(&peer, &headers)),
        "owner": {"login": owner, "type": "Organization"},
        "private": true, "visibility": "private",
    }))
    .into_response())
}

#[derive(Deserialize)]
struct Paging {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Params((owner, name, family)): Params<(String, String, String)>,
    Query(paging): Query<Paging>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let repo = repo_of(&owner, &name, &family)?;
    let per_page = paging.per_page.unwrap_or(30).clamp(1, 100);
    let page = paging.page.unwrap_or(1).max(1);
    let found = s
        .run(auth, move |st, caller| {
            service::list_secrets(st, caller, &repo, page, per_page)
        })
        .await?;
    let secrets: Vec<serde_json::Value> = found
        .secrets
        .iter()
        .map(|m| serde_json::json!({"name": m.name, "created_at": m.created_at, "updated_at": m.updated_at}))
        .collect();
    let last = found.total_count.div_ceil(per_page).max(1);
    let mut r = Json(serde_json::json!({"total_count": found.total_count, "secrets": secrets}))
        .into_response();
    let here = format!(
        "{}/repos/{owner}/{name}/{family}/secrets",
        base(&peer, &headers)
    );
    let link =
        |p: usize, rel: &str| format!("<{here}?per_page={per_page}&page={p}>; rel=\"{rel}\"");
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        if !links.is_empty() {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(r)
}

async fn public_key(
    State(s): State<AppState>,
    auth: Auth,
    Params((owner, name, family)): Params<(String, String, String)>,
) -> Result<Response, ApiError> {
    let repo = repo_of(&owner, &name, &family)?;
    let (key_id, key) = s
        .run(auth, move |st, caller| {
            service::public_key(st, caller, &repo)
        })
        .await?;
    Ok(Json(serde_json::json!({"key_id": key_id, "key": B64.encode(key)})).into_response())
}

/// `/repos/{owner}/{repo}/{family}/secrets/{name}`: the repository and
/// the secret's name, as GitHub takes it.
struct SecretPath {
    repo: String,
    secret: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SecretPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Params((owner, name, family, secret)) =
            Params::<(String, String, String, String)>::from_request_parts(parts, state).await?;
        Ok(Self {
            repo: repo_of(&owner, &name, &family)?,
            secret: secret_name(&secret)?,
        })
    }
}

async fn get_one(
    State(s): State<AppState>,
    auth: Auth,
    SecretPath { repo, secret }: SecretPath,
) -> Result<Response, ApiError> {
    let m = s
        .run(auth, move |st, caller| {
            service::get_secret(st, caller, &repo, &secret)
        })
        .await?;
    Ok(Json(
        serde_json::json!({"name": m.name, "created_at": m.created_at, "updated_at": m.updated_at}),
    )
    .into_response())
}

/// A JSON body whatever its content type (GitHub parses `curl -d` bodies,
/// sent as a form, as JSON); otherwise API v1's rules and limits.
struct GhJson<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for GhJson<T> {
    type Rejection = ApiError;

    async fn from_request(mut req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        JsonBody::<T>::from_request(req, state)
            .await
            .map(|JsonBody(v)| Self(v))
    }
}

/// What GitHub's clients send: the value sealed to the repository's key.
#[derive(Deserialize)]
struct PutBody {
    encrypted_value: String,
    key_id: String,
}

async fn put_one(
    State(s): State<AppState>,
    auth: Auth,
    SecretPath { repo, secret }: SecretPath,
    GhJson(body): GhJson<PutBody>,
) -> Result<Response, ApiError> {
    let sealed = B64
        .decode(body.encrypted_value.as_bytes())
        .map_err(|_| ApiError::unprocessable("encrypted_value is not base64"))?;
    let value = service::NewValue::Sealed {
        sealed,
        key_id: body.key_id,
    };
    let done = s
        .run(auth, move |st, caller| {
            service::put_secret(st, caller, &repo, &secret, value, Default::default())
        })
        .await?;
    Ok(match done.created {
        true => (StatusCode::CREATED, Json(serde_json::json!({}))).into_response(),
        false => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn delete_one(
    State(s): State<AppState>,
    auth: Auth,
    SecretPath { repo, secret }: SecretPath,
) -> Result<Response, ApiError> {
    s.run(auth, move |st, caller| {
        service::delete_secret(st, caller, &repo, &secret)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// GitHub's answer to a path it does not have.
pub fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

/// API v1's error body (`{"error": {"code", "message"}}`, from the handlers
/// and the extractors alike) in GitHub's shape: `{"message",
/// "documentation_url"}`, the status kept. 400s that GitHub answers with
/// 422 (a body it cannot process) are 422 here too.
async fn github_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let r = next.run(req).await;
    if r.status().is_success() || r.status().is_redirection() {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return (
            parts.status,
            Json(serde_json::json!({"message": "Error", "documentation_url": DOCS})),
        )
            .into_response();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .or_else(|| v["message"].as_str())
        .unwrap_or(parts.status.canonical_reason().unwrap_or("Error"))
        .to_owned();
    if parts.status == StatusCode::BAD_REQUEST {
        parts.status = StatusCode::UNPROCESSABLE_ENTITY;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::json!({"message": message, "documentation_url": DOCS});
    let mut out = Json(body).into_response();
    *out.status_mut() = parts.status;
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_githubs() {
        assert_eq!(secret_name("api_key").unwrap(), "API_KEY");
        for bad in ["GITHUB_TOKEN", "github_x", "1ABC", "A-B", "", "A.B"] {
            assert!(secret_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_ids_are_stable_and_exact_in_javascript() {
        assert_eq!(repo_id("acme/api"), repo_id("acme/api"));
        assert_ne!(repo_id("acme/api"), repo_id("acme/web"));
        assert!(repo_id("acme/api") < 1 << 53);
    }
}
