//! API v1 for the secrets of a repository's environments and of an owner
//! (an organisation): the repository's handlers, on the holder's key
//! (`sealinit_store::holder`). Scopes, validation, the guard, delivery and
//! the audit record are the repository's, below the handlers.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{PageQuery, Params, PutBody, RollbackBody};
use crate::client::Peer;
use crate::error::ApiError;
use crate::input::JsonBody;
use crate::state::{AppState, Auth};
use sealinit_store::holder::{env_key, org_key};

type Listed = Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>;

pub(super) async fn env_list(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env)): Params<(String, String)>,
    q: Listed,
) -> Result<Response, ApiError> {
    super::list_secrets(s, auth, Params(env_key(&repo, &env)), q).await
}

pub(super) async fn env_public_key(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    super::public_key(s, auth, Params(env_key(&repo, &env))).await
}

pub(super) async fn env_get(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env, name)): Params<(String, String, String)>,
) -> Result<Response, ApiError> {
    super::get_secret(s, auth, Params((env_key(&repo, &env), name))).await
}

pub(super) async fn env_put(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env, name)): Params<(String, String, String)>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
    body: JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    let key = env_key(&repo, &env);
    super::put_secret(s, auth, Params((key, name)), peer, headers, body).await
}

pub(super) async fn env_delete(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env, name)): Params<(String, String, String)>,
) -> Result<Response, ApiError> {
    super::delete_secret(s, auth, Params((env_key(&repo, &env), name))).await
}

pub(super) async fn org_list(
    s: State<AppState>,
    auth: Auth,
    Params(org): Params<String>,
    q: Listed,
) -> Result<Response, ApiError> {
    super::list_secrets(s, auth, Params(org_key(&org)), q).await
}

pub(super) async fn org_public_key(
    s: State<AppState>,
    auth: Auth,
    Params(org): Params<String>,
) -> Result<Response, ApiError> {
    super::public_key(s, auth, Params(org_key(&org))).await
}

pub(super) async fn org_get(
    s: State<AppState>,
    auth: Auth,
    Params((org, name)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    super::get_secret(s, auth, Params((org_key(&org), name))).await
}

pub(super) async fn org_put(
    s: State<AppState>,
    auth: Auth,
    Params((org, name)): Params<(String, String)>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
    body: JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    super::put_secret(s, auth, Params((org_key(&org), name)), peer, headers, body).await
}

pub(super) async fn org_delete(
    s: State<AppState>,
    auth: Auth,
    Params((org, name)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    super::delete_secret(s, auth, Params((org_key(&org), name))).await
}

pub(super) async fn env_versions(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env, name)): Params<(String, String, String)>,
) -> Result<Response, ApiError> {
    super::versions(s, auth, Params((env_key(&repo, &env), name))).await
}

pub(super) async fn env_rollback(
    s: State<AppState>,
    auth: Auth,
    Params((repo, env, name)): Params<(String, String, String)>,
    body: JsonBody<RollbackBody>,
) -> Result<Response, ApiError> {
    super::rollback(s, auth, Params((env_key(&repo, &env), name)), body).await
}

pub(super) async fn org_versions(
    s: State<AppState>,
    auth: Auth,
    Params((org, name)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    super::versions(s, auth, Params((org_key(&org), name))).await
}

pub(super) async fn org_rollback(
    s: State<AppState>,
    auth: Auth,
    Params((org, name)): Params<(String, String)>,
    body: JsonBody<RollbackBody>,
) -> Result<Response, ApiError> {
    super::rollback(s, auth, Params((org_key(&org), name)), body).await
}
