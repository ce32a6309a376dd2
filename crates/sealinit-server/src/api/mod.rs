//! API v1: thin handlers. Each one extracts the caller (a live token), its
//! input (JSON with unknown fields refused), and makes one service call on
//! a store of the pool. Values may be deserialised from a request but are
//! never serialised into a response.

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod holders;

use crate::client::Peer;
use crate::error::ApiError;
use crate::input::{JsonBody, Value, new_value};
use crate::service;
use crate::state::{AppState, Auth};

/// Path parameters with the API's error shape.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The handler of each documented route. The router is built from
/// [`crate::openapi::ROUTES`] alone, so the OpenAPI document and the
/// routes served are one list: a route without an entry cannot be served,
/// an entry without a handler fails at start (and in the tests).
fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path.strip_prefix("/api/v1").unwrap_or(path)) {
        ("get", "/health") => get(health),
        ("get", "/repos") => get(repos),
        ("get", "/audit") => get(audit),
        ("get", "/openapi.json") => get(crate::openapi::document),
        ("post", "/repos") => post(create_repo),
        ("delete", "/repos/{repo}") => delete(delete_repo),
        ("get", "/repos/{repo}/egress") => get(get_egress),
        ("put", "/repos/{repo}/egress") => put(put_egress),
        ("get", "/repos/{repo}/secrets") => get(list_secrets),
        ("get", "/repos/{repo}/secrets/public-key") => get(public_key),
        ("post", "/repos/{repo}/import") => post(import),
        // The old path, for one release; a secret named `import` keeps
        // its GET, PUT and DELETE there.
        ("post", "/repos/{repo}/secrets/import") => post(import)
            .get(named_import::get)
            .put(named_import::put)
            .delete(named_import::delete),
        ("get", "/repos/{repo}/secrets/{name}") => get(get_secret),
        ("put", "/repos/{repo}/secrets/{name}") => put(put_secret),
        ("delete", "/repos/{repo}/secrets/{name}") => delete(delete_secret),
        ("get", "/repos/{repo}/secrets/{name}/versions") => get(versions),
        ("post", "/repos/{repo}/secrets/{name}/rollback") => post(rollback),
        ("post", "/repos/{repo}/bundles") => post(mint),
        ("get", "/repos/{repo}/environments/{env}/secrets") => get(holders::env_list),
        ("get", "/repos/{repo}/environments/{env}/secrets/public-key") => {
            get(holders::env_public_key)
        }
        ("get", "/repos/{repo}/environments/{env}/secrets/{name}") => get(holders::env_get),
        ("put", "/repos/{repo}/environments/{env}/secrets/{name}") => put(holders::env_put),
        ("delete", "/repos/{repo}/environments/{env}/secrets/{name}") => {
            delete(holders::env_delete)
        }
        ("get", "/orgs/{org}/secrets") => get(holders::org_list),
        ("get", "/orgs/{org}/secrets/public-key") => get(holders::org_public_key),
        ("get", "/orgs/{org}/secrets/{name}") => get(holders::org_get),
        ("put", "/orgs/{org}/secrets/{name}") => put(holders::org_put),
        ("delete", "/orgs/{org}/secrets/{name}") => delete(holders::org_delete),
        ("get", "/repos/{repo}/environments/{env}/secrets/{name}/versions") => {
            get(holders::env_versions)
        }
        ("post", "/repos/{repo}/environments/{env}/secrets/{name}/rollback") => {
            post(holders::env_rollback)
        }
        ("get", "/orgs/{org}/secrets/{name}/versions") => get(holders::org_versions),
        ("post", "/orgs/{org}/secrets/{name}/rollback") => post(holders::org_rollback),
        _ => panic!("{method} {path} is documented but has no handler"),
    }
}

pub fn router(state: AppState) -> Router {
    let mut by_path: Vec<(&str, MethodRouter<AppState>)> = Vec::new();
    for r in crate::openapi::ROUTES {
        let h = handler(r.method, r.path);
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, m)) => *m = std::mem::take(m).merge(h),
            None => by_path.push((r.path, h)),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, m)| router.route(path, m))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::idempotent,
        ))
        .with_state(state)
}

/// The secret named `import`, whose path the old import route shares.
mod named_import {
    use super::*;

    fn named(repo: String) -> Params<(String, String)> {
        Params((repo, "import".to_owned()))
    }

    pub(super) async fn get(
        s: State<AppState>,
        auth: Auth,
        Params(repo): Params<String>,
    ) -> Result<Response, ApiError> {
        get_secret(s, auth, named(repo)).await
    }

    pub(super) async fn put(
        s: State<AppState>,
        auth: Auth,
        Params(repo): Params<String>,
        peer: axum::Extension<Peer>,
        headers: HeaderMap,
        body: JsonBody<PutBody>,
    ) -> Result<Response, ApiError> {
        put_secret(s, auth, named(repo), peer, headers, body).await
    }

    pub(super) async fn delete(
        s: State<AppState>,
        auth: Auth,
        Params(repo): Params<String>,
    ) -> Result<Response, ApiError> {
        delete_secret(s, auth, named(repo)).await
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn repos(State(s): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let r = s.run(auth, service::repos).await?;
    Ok(Json(serde_json::json!({"repos": r})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_secrets(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let per_page = q.per_page.unwrap_or(30);
    let page = q.page.unwrap_or(1);
    if !(1..=100).contains(&per_page) || page == 0 {
        return Err(ApiError::bad_request("per_page is 1 to 100, page from 1"));
    }
    let r = s
        .run(auth, move |st, caller| {
            service::list_secrets(st, caller, &repo, page, per_page)
        })
        .await?;
    Ok(Json(r).into_response())
}

async fn get_secret(
    State(s): State<AppState>,
    auth: Auth,
    Params((repo, name)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let r = s
        .run(auth, move |st, caller| {
            service::get_secret(st, caller, &repo, &name)
        })
        .await?;
    Ok((etag(r.version), Json(r)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutBody {
    value: Option<Value>,
    encrypted_value: Option<String>,
    key_id: Option<String>,
    #[serde(default)]
    allow_production: bool,
    /// Allow a code-loading name (LD_PRELOAD, NODE_OPTIONS...): recorded
    /// on the secret, so later bundles honour it.
    #[serde(default)]
    allow_name: bool,
    /// Store an empty value (refused otherwise).
    #[serde(default)]
    allow_empty: bool,
    /// env, setup or proxy (absent: the current version's, or env).
    delivery: Option<sealinit_store::Delivery>,
    /// A proxy secret's hosts (absent: the current version's).
    hosts: Option<Vec<String>>,
    /// random or keep-prefix (absent: the current version's, or random).
    placeholder: Option<sealinit_store::Placeholder>,
    /// A proxy secret replaced in request bodies too (absent: the current
    /// version's, or false).
    in_body: Option<bool>,
    /// An organisation's secret: all (or private, GitHub's default, the
    /// same here) or selected (absent: the current version's, or all).
    visibility: Option<String>,
    /// With visibility selected: the owner's repositories it reaches.
    selected_repositories: Option<Vec<String>>,
}

/// `If-Match`: `"N"` or `W/"N"` (the ETag of version N), the bare number
/// as before, `"0"` for "must not exist yet", or `*` for "must exist".
fn if_match(headers: &HeaderMap) -> Result<Option<service::IfMatch>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(Some(service::IfMatch::Exists));
    }
    text.strip_prefix("W/")
        .unwrap_or(text)
        .trim_matches('"')
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(|n| Some(service::IfMatch::Version(n)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "If-Match takes the secret's ETag (\"N\" or W/\"N\", N its version; \"0\": must not exist yet) or * (must exist)",
            )
        })
}

/// A secret's ETag: its version.
fn etag(version: i64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}

async fn put_secret(
    State(s): State<AppState>,
    auth: Auth,
    Params((repo, name)): Params<(String, String)>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    let if_version = if_match(&headers)?;
    let value = new_value(peer, body.value, body.encrypted_value, body.key_id, "value")?;
    let done = s
        .run(auth, move |st, caller| {
            service::put_secret(
                st,
                caller,
                &repo,
                &name,
                value,
                service::PutFlags {
                    if_version,
                    allow_production: body.allow_production,
                    allow_name: body.allow_name,
                    allow_empty: body.allow_empty,
                    route: sealinit_store::RouteChange {
                        delivery: body.delivery,
                        hosts: body.hosts,
                        placeholder: body.placeholder,
                        in_body: body.in_body,
                        repos: service::reach(
                            body.visibility.as_deref(),
                            body.selected_repositories,
                        )?,
                    },
                },
            )
        })
        .await?;
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, etag(done.version), Json(done)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRepo {
    name: String,
}

async fn create_repo(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<NewRepo>,
) -> Result<Response, ApiError> {
    let repo = s
        .run(auth, move |st, caller| {
            service::create_repo(st, caller, &body.name)
        })
        .await?;
    let repo = serde_json::json!({"repo": repo, "secrets": 0});
    Ok((StatusCode::CREATED, Json(repo)).into_response())
}

async fn get_egress(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
) -> Result<Response, ApiError> {
    let p = s
        .run(auth, move |st, caller| service::egress(st, caller, &repo))
        .await?;
    Ok(Json(p).into_response())
}

async fn put_egress(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
    JsonBody(body): JsonBody<sealinit_core::bundle::Egress>,
) -> Result<Response, ApiError> {
    let p = s
        .run(auth, move |st, caller| {
            service::set_egress(st, caller, &repo, body)
        })
        .await?;
    Ok(Json(p).into_response())
}

async fn delete_repo(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
) -> Result<Response, ApiError> {
    let (repo, removed) = s
        .run(auth, move |st, caller| {
            service::delete_repo(st, caller, &repo)
        })
        .await?;
    Ok(Json(serde_json::json!({"repo": repo, "removed": removed})).into_response())
}

async fn delete_secret(
    State(s): State<AppState>,
    auth: Auth,
    Params((repo, name)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    s.run(auth, move |st, caller| {
        service::delete_secret(st, caller, &repo, &name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn versions(
    State(s): State<AppState>,
    auth: Auth,
    Params((repo, name)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let r = s
        .run(auth, move |st, caller| {
            service::versions(st, caller, &repo, &name)
        })
        .await?;
    // Times in RFC 3339, as everywhere in the API.
    let versions: Vec<serde_json::Value> = r
        .iter()
        .map(|h| {
            let mut v = serde_json::json!(h);
            v["at"] = sealinit_core::time::rfc3339(h.at.max(0) as u64).into();
            v
        })
        .collect();
    Ok(Json(serde_json::json!({"versions": versions})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    to: i64,
}

async fn rollback(
    State(s): State<AppState>,
    auth: Auth,
    Params((repo, name)): Params<(String, String)>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Response, ApiError> {
    let r = s
        .run(auth, move |st, caller| {
            service::rollback(st, caller, &repo, &name, body.to)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    format: String,
    /// The text (over TLS or loopback only).
    content: Option<Value>,
    /// Or the text sealed to the repository's key.
    encrypted_content: Option<String>,
    key_id: Option<String>,
    /// `true`, or the names allowed.
    #[serde(default)]
    allow_production: service::AllowProduction,
    /// Code-loading names allowed.
    #[serde(default)]
    allow_names: Vec<String>,
    /// With "env": `${NAME}` takes the value of an earlier line of the same
    /// text (never the server's environment).
    #[serde(default)]
    expand: bool,
    /// For every entry that does not give its own (a JSON object's entry
    /// may): env, setup or proxy.
    delivery: Option<sealinit_store::Delivery>,
    hosts: Option<Vec<String>>,
    placeholder: Option<sealinit_store::Placeholder>,
    in_body: Option<bool>,
}

async fn import(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
    axum::Extension(peer): axum::Extension<Peer>,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<Response, ApiError> {
    let format = match (body.format.as_str(), body.expand) {
        ("json", false) => service::Format::Json,
        ("env", expand) => service::Format::Env { expand },
        ("json", true) => {
            return Err(ApiError::bad_request(
                "expand applies to format \"env\" only",
            ));
        }
        _ => return Err(ApiError::bad_request("format is \"env\" or \"json\"")),
    };
    let whole = sealinit_store::RouteChange {
        delivery: body.delivery,
        hosts: body.hosts,
        placeholder: body.placeholder,
        in_body: body.in_body,
        repos: None,
    };
    let content = new_value(
        peer,
        body.content,
        body.encrypted_content,
        body.key_id,
        "content",
    )?;
    let (allow, names) = (body.allow_production, body.allow_names);
    let r = s
        .run(auth, move |st, caller| {
            let opts = service::ImportOptions {
                allow,
                allow_names: names,
                whole,
            };
            service::import(st, caller, &repo, format, &content, opts)
        })
        .await?;
    Ok(Json(serde_json::json!({"secrets": r})).into_response())
}

async fn public_key(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
) -> Result<Response, ApiError> {
    let (key_id, key) = s
        .run(auth, move |st, caller| {
            service::public_key(st, caller, &repo)
        })
        .await?;
    Ok(Json(serde_json::json!({"key_id": key_id, "key": B64.encode(key)})).into_response())
}

/// A lifetime as clients send it: whole seconds, or text (`90`, `15m`,
/// `1h30m`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    label: Option<String>,
    /// An environment of the repository: its secrets win over the
    /// repository's (absent: none of them).
    environment: Option<String>,
    ttl: Option<Ttl>,
    /// Mint an empty bundle for a repository without secrets.
    #[serde(default)]
    allow_empty: bool,
}

async fn mint(
    State(s): State<AppState>,
    auth: Auth,
    Params(repo): Params<String>,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Response, ApiError> {
    let max = s.max_bundle_ttl;
    let ttl = match body.ttl {
        None => Duration::from_secs(300).min(max),
        Some(Ttl::Seconds(0)) => return Err(ApiError::bad_request("ttl must be positive")),
        Some(Ttl::Seconds(n)) => Duration::from_secs(n),
        Some(Ttl::Text(t)) if t == "none" => Duration::MAX,
        Some(Ttl::Text(t)) => sealinit_core::time::parse_duration(&t)
            .map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?,
    };
    if ttl > max {
        return Err(ApiError::unprocessable(format!(
            "ttl is over this server's longest bundle lifetime, {} s: a bundle opens for whoever holds it and its key until it expires; ask for {} s or less",
            max.as_secs(),
            max.as_secs()
        )));
    }
    let ttl = Some(ttl);
    let (m, record) = s
        .run(auth, move |st, caller| {
            service::mint(
                st,
                caller,
                &repo,
                body.environment.as_deref(),
                body.label,
                ttl,
                body.allow_empty,
            )
        })
        .await?;
    // The read is on record before the bundle leaves (group commit).
    s.audit.append(record).await?;
    let mut doc = serde_json::json!({
        "bundle": B64.encode(&m.bundle),
        "key": B64.encode(m.key.expose()),
        "label": m.label,
        "repo": m.repo,
        "created_at": sealinit_core::time::rfc3339(m.created_at),
        "expires_at": m.expires_at.map(sealinit_core::time::rfc3339),
        "names": m.names,
    });
    if let Some((bundle, key)) = &m.proxy {
        doc["proxy_bundle"] = serde_json::json!(B64.encode(bundle));
        doc["proxy_key"] = serde_json::json!(B64.encode(key.expose()));
    }
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    repo: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A time parameter: RFC 3339 or Unix seconds.
fn instant(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|t| {
        t.parse::<i64>()
            .ok()
            .or_else(|| sealinit_core::time::parse_rfc3339(t))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name}: an RFC 3339 time (2026-12-03T12:00:00Z) or Unix seconds"
                ))
            })
    })
    .transpose()
}

async fn audit(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    uri: axum::http::Uri,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit is 1 to 1000 (default 100)"));
    }
    let since = instant("since", q.since.as_deref())?;
    let until = instant("until", q.until.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("cursor: the next_cursor of an earlier page"))
        })
        .transpose()?;
    let repo = q.repo.clone();
    let page = s
        .run(auth, move |st, caller| {
            let q = sealinit_store::AuditQuery {
                repo: repo.as_deref(),
                since,
                until,
                after,
                limit: Some(limit),
            };
            service::audit(st, caller, q)
        })
        .await?;
    let next = page.next.map(|n| n.to_string());
    // The same query, from the next cursor.
    let link = next.as_ref().map(|n| {
        let kept: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .map(str::to_owned)
            .chain(std::iter::once(format!("cursor={n}")))
            .collect();
        format!("<{}?{}>; rel=\"next\"", uri.path(), kept.join("&"))
    });
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let mut response = if ndjson {
        let mut body = String::new();
        for r in &page.records {
            body.push_str(&r.to_string());
            body.push('\n');
        }
        ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
    } else {
        Json(serde_json::json!({"records": page.records, "next_cursor": next})).into_response()
    };
    if let Some(l) = link.and_then(|l| header::HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, l);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    /// Every documented route has a handler (the router is built from the
    /// document's table, so nothing else can be served).
    #[test]
    fn every_documented_route_has_a_handler() {
        for r in crate::openapi::ROUTES {
            let _ = super::handler(r.method, r.path);
        }
    }
}
