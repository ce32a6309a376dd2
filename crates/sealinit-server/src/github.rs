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
use sealinit_store::holder;

/// Where GitHub documents these endpoints (for `documentation_url`).
const DOCS: &str = "https://docs.github.com/rest/actions/secrets";

pub fn router(state: AppState) -> Router {
    let one = || get(get_one).put(put_one).delete(delete_one);
    Router::new()
        .route("/api/v3/user", get(user))
        .route("/api/v3/orgs/{org}", get(organisation))
        .route("/api/v3/repos/{owner}/{repo}", get(repository))
        .route(
            "/api/v3/repos/{owner}/{repo}/environments/{env}",
            get(environment),
        )
        // A repository's secrets (the agents family is the same secrets).
        .route("/api/v3/repos/{owner}/{repo}/{family}/secrets", get(list))
        .route(
            "/api/v3/repos/{owner}/{repo}/{family}/secrets/public-key",
            get(public_key),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/{family}/secrets/{name}",
            one(),
        )
        // An environment's.
        .route(
            "/api/v3/repos/{owner}/{repo}/environments/{env}/secrets",
            get(list),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/environments/{env}/secrets/public-key",
            get(public_key),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/environments/{env}/secrets/{name}",
            one(),
        )
        // An organisation's.
        .route("/api/v3/orgs/{org}/actions/secrets", get(list))
        .route(
            "/api/v3/orgs/{org}/actions/secrets/public-key",
            get(public_key),
        )
        .route("/api/v3/orgs/{org}/actions/secrets/{name}", one())
        .route(
            "/api/v3/orgs/{org}/actions/secrets/{name}/repositories",
            get(selected).put(select),
        )
        .route(
            "/api/v3/orgs/{org}/actions/secrets/{name}/repositories/{repository_id}",
            axum::routing::put(add_selected).delete(remove_selected),
        )
        .layer(axum::middleware::from_fn(github_errors))
        .with_state(state)
}

/// Where a request's secrets are held, from its path: a repository
/// (`actions` or `agents`), one of its environments, or an organisation;
/// the secret's name if the path has one; and the collection's URL (for
/// `Link`).
struct At {
    key: String,
    secret: Option<String>,
    /// An organisation's secrets.
    org: Option<String>,
    url: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for At {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Params(p) =
            Params::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await?;
        let get = |k: &str| p.get(k).map(String::as_str);
        let repo = || {
            format!(
                "{}/{}",
                get("owner").unwrap_or(""),
                get("repo").unwrap_or("")
            )
        };
        let key = match (get("org"), get("env"), get("family")) {
            (Some(org), _, _) => holder::org_key(org),
            (None, Some(env), _) => {
                holder::validate_env(env).map_err(|_| ApiError::not_found("Not Found"))?;
                holder::env_key(&repo(), env)
            }
            (None, None, Some("actions" | "agents")) => repo(),
            _ => return Err(ApiError::not_found("Not Found")),
        };
        let path = parts.uri.path();
        let collection = &path[..path.find("/secrets").map_or(path.len(), |i| i + 8)];
        let peer = crate::state::peer_of(parts);
        Ok(Self {
            key,
            secret: get("name").map(secret_name).transpose()?,
            org: get("org").map(str::to_owned),
            url: format!(
                "{}{}",
                base(&peer, &parts.headers).trim_end_matches("/api/v3"),
                collection
            ),
        })
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
    at: At,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let per_page = paging.per_page.unwrap_or(30).clamp(1, 100);
    let page = paging.page.unwrap_or(1).max(1);
    let key = at.key.clone();
    let found = s
        .run(auth, move |st, caller| {
            service::list_secrets(st, caller, &key, page, per_page)
        })
        .await?;
    let secrets: Vec<serde_json::Value> = found
        .secrets
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({"name": m.name, "created_at": m.created_at, "updated_at": m.updated_at});
            if let Some(vis) = m.visibility {
                v["visibility"] = serde_json::json!(vis);
                if vis == "selected" {
                    v["selected_repositories_url"] =
                        serde_json::json!(format!("{}/{}/repositories", at.url, m.name));
                }
            }
            v
        })
        .collect();
    let last = found.total_count.div_ceil(per_page).max(1);
    let mut r = Json(serde_json::json!({"total_count": found.total_count, "secrets": secrets}))
        .into_response();
    let link =
        |p: usize, rel: &str| format!("<{}?per_page={per_page}&page={p}>; rel=\"{rel}\"", at.url);
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

async fn public_key(State(s): State<AppState>, auth: Auth, at: At) -> Result<Response, ApiError> {
    let (key_id, key) = s
        .run(auth, move |st, caller| {
            service::public_key(st, caller, &at.key)
        })
        .await?;
    Ok(Json(serde_json::json!({"key_id": key_id, "key": B64.encode(key)})).into_response())
}

async fn get_one(State(s): State<AppState>, auth: Auth, at: At) -> Result<Response, ApiError> {
    let secret = at.secret.clone().unwrap_or_default();
    let key = at.key.clone();
    let m = s
        .run(auth, move |st, caller| {
            service::get_secret(st, caller, &key, &secret)
        })
        .await?;
    let mut v =
        serde_json::json!({"name": m.name, "created_at": m.created_at, "updated_at": m.updated_at});
    if let Some(vis) = m.visibility {
        v["visibility"] = serde_json::json!(vis);
        if vis == "selected" {
            v["selected_repositories_url"] =
                serde_json::json!(format!("{}/{}/repositories", at.url, m.name));
        }
    }
    Ok(Json(v).into_response())
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

/// What GitHub's clients send: the value sealed to the holder's key; for
/// an organisation's secret, its reach.
#[derive(Deserialize)]
struct PutBody {
    encrypted_value: String,
    key_id: String,
    visibility: Option<String>,
    selected_repository_ids: Option<Vec<u64>>,
}

async fn put_one(
    State(s): State<AppState>,
    auth: Auth,
    at: At,
    GhJson(body): GhJson<PutBody>,
) -> Result<Response, ApiError> {
    let sealed = B64
        .decode(body.encrypted_value.as_bytes())
        .map_err(|_| ApiError::unprocessable("encrypted_value is not base64"))?;
    let value = service::NewValue::Sealed {
        sealed,
        key_id: body.key_id,
    };
    if at.org.is_none() && (body.visibility.is_some() || body.selected_repository_ids.is_some()) {
        return Err(ApiError::unprocessable(
            "visibility and selected_repository_ids belong to an organisation's secrets",
        ));
    }
    let (key, secret, org) = (at.key, at.secret.unwrap_or_default(), at.org);
    let (visibility, ids) = (body.visibility, body.selected_repository_ids);
    let done = s
        .run(auth, move |st, caller| {
            // Repository ids (as GitHub's clients send them) to names.
            let selected = match (&org, ids) {
                (Some(org), Some(ids)) => Some(names_of(st, org, &ids)?),
                _ => None,
            };
            let route = sealinit_store::RouteChange {
                repos: match &org {
                    // Absent: as it is (all, for a new secret).
                    Some(_) => service::reach(visibility.as_deref(), selected)?,
                    None => None,
                },
                ..Default::default()
            };
            let flags = service::PutFlags {
                route,
                ..Default::default()
            };
            service::put_secret(st, caller, &key, &secret, value, flags)
        })
        .await?;
    Ok(match done.created {
        true => (StatusCode::CREATED, Json(serde_json::json!({}))).into_response(),
        false => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The names of `org`'s repositories with these ids.
fn names_of(
    st: &mut sealinit_store::Store,
    org: &str,
    ids: &[u64],
) -> Result<Vec<String>, ApiError> {
    let repos: Vec<String> = st
        .repos()?
        .into_iter()
        .map(|r| r.repo)
        .filter(|r| holder::owner_of(r).eq_ignore_ascii_case(org))
        .collect();
    ids.iter()
        .map(|id| {
            repos
                .iter()
                .find(|r| repo_id(r) == *id)
                .cloned()
                .ok_or_else(|| {
                    ApiError::unprocessable(format!(
                        "selected_repository_ids: {id} is not a repository of {org}"
                    ))
                })
        })
        .collect()
}

async fn delete_one(State(s): State<AppState>, auth: Auth, at: At) -> Result<Response, ApiError> {
    let (key, secret) = (at.key, at.secret.unwrap_or_default());
    s.run(auth, move |st, caller| {
        service::delete_secret(st, caller, &key, &secret)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An organisation secret's selected repositories.
async fn selected(State(s): State<AppState>, auth: Auth, at: At) -> Result<Response, ApiError> {
    let (key, secret) = (at.key, at.secret.unwrap_or_default());
    let m = s
        .run(auth, move |st, caller| {
            service::get_secret(st, caller, &key, &secret)
        })
        .await?;
    let repos: Vec<serde_json::Value> = m
        .selected_repositories
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let name = r.rsplit('/').next().unwrap_or(r);
            serde_json::json!({"id": repo_id(r), "name": name, "full_name": r})
        })
        .collect();
    Ok(
        Json(serde_json::json!({"total_count": repos.len(), "repositories": repos}))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct Selection {
    selected_repository_ids: Vec<u64>,
}

/// Sets an organisation secret's selected repositories (its value kept).
async fn select(
    State(s): State<AppState>,
    auth: Auth,
    at: At,
    GhJson(body): GhJson<Selection>,
) -> Result<Response, ApiError> {
    let (key, secret, org) = (
        at.key,
        at.secret.unwrap_or_default(),
        at.org.unwrap_or_default(),
    );
    s.run(auth, move |st, caller| {
        let names = names_of(st, &org, &body.selected_repository_ids)?;
        let change = sealinit_store::RouteChange {
            repos: Some(Some(names)),
            ..Default::default()
        };
        service::reroute(st, caller, &key, &secret, &change)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_selected(
    s: State<AppState>,
    auth: Auth,
    at: At,
    Params(p): Params<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    change_selected(s, auth, at, &p, true).await
}

async fn remove_selected(
    s: State<AppState>,
    auth: Auth,
    at: At,
    Params(p): Params<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    change_selected(s, auth, at, &p, false).await
}

/// Adds (or removes) one repository of an organisation secret's selection.
async fn change_selected(
    State(s): State<AppState>,
    auth: Auth,
    at: At,
    p: &std::collections::HashMap<String, String>,
    add: bool,
) -> Result<Response, ApiError> {
    let id: u64 = p
        .get("repository_id")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError::not_found("Not Found"))?;
    let (key, secret, org) = (
        at.key,
        at.secret.unwrap_or_default(),
        at.org.unwrap_or_default(),
    );
    s.run(auth, move |st, caller| {
        let named = names_of(st, &org, &[id])?.remove(0);
        let current = service::get_secret(st, caller, &key, &secret)?;
        if current.visibility != Some("selected") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{secret} reaches all of {org}'s repositories; set its visibility to selected first"),
            ));
        }
        let mut list = current.selected_repositories.unwrap_or_default();
        list.retain(|r| !r.eq_ignore_ascii_case(&named));
        if add {
            list.push(named);
        }
        let change = sealinit_store::RouteChange {
            repos: Some(Some(list)),
            ..Default::default()
        };
        service::reroute(st, caller, &key, &secret, &change)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An environment exists with its repository here (GitHub's clients read
/// it before its secrets).
async fn environment(
    State(s): State<AppState>,
    auth: Auth,
    Params((owner, name, env)): Params<(String, String, String)>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    holder::validate_env(&env).map_err(|_| ApiError::not_found("Not Found"))?;
    let key = holder::env_key(&format!("{owner}/{name}"), &env);
    s.run(auth, move |st, caller| {
        service::list_secrets(st, caller, &key, 1, 1)
    })
    .await?;
    let url = format!(
        "{}/repos/{owner}/{name}/environments/{env}",
        base(&peer, &headers)
    );
    let id = repo_id(&format!("{owner}/{name}:{env}"));
    Ok(Json(serde_json::json!({"name": env, "id": id, "url": url})).into_response())
}

async fn organisation(
    State(s): State<AppState>,
    auth: Auth,
    Params(org): Params<String>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = holder::org_key(&org);
    s.run(auth, move |st, caller| {
        service::list_secrets(st, caller, &key, 1, 1)
    })
    .await?;
    let url = format!("{}/orgs/{org}", base(&peer, &headers));
    let id = repo_id(&org);
    Ok(
        Json(serde_json::json!({"login": org, "id": id, "type": "Organization", "url": url}))
            .into_response(),
    )
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
