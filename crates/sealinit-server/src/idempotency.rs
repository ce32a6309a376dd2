//! `Idempotency-Key` on API v1's POST and PUT: a client that lost the
//! connection repeats the request with the same key and gets the first
//! response (a mint: the same bundle and key, recorded once), for 24
//! hours; the same key with another request is 422. The credential is
//! checked before the body is read; the store keeps keyed hashes of the
//! key and the request and the response sealed under the service's key,
//! never a value in the clear.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sealinit_store::service::Idempotent;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::{AppState, bearer, peer_of_request};

const HEADER: &str = "idempotency-key";

/// The largest response kept (a mint of a full repository is about 1.4 MiB
/// in base64).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

pub async fn idempotent(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::POST | Method::PUT) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return ApiError::bad_request("Idempotency-Key: 1 to 255 visible ASCII characters")
                .into_response();
        }
    };
    // No credential: the handler answers 401; a wrong one is refused
    // before the body is read.
    let Some(token) = bearer(req.headers()) else {
        return next.run(req).await;
    };
    if let Err(e) = state.admit(&token, peer_of_request(&req)).await {
        return e.into_response();
    }
    // Per token: another token's key of the same text is another key.
    let scope = {
        let digest: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{digest}:{key}")
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::bad_request("the request body could not be read").into_response();
        }
    };
    // Shared, not copied: the body may hold a value.
    let (method, path, shared) = (
        parts.method.to_string(),
        parts.uri.path().to_owned(),
        bytes.clone(),
    );
    let claimed = state
        .pool
        .run(String::new(), move |st| {
            let request: [&[u8]; 3] = [method.as_bytes(), path.as_bytes(), &shared];
            Ok(st.idempotency_claim(&scope, &request)?)
        })
        .await;
    let scope = match claimed {
        Err(e) => return e.into_response(),
        Ok(Idempotent::Fresh { scope }) => scope,
        Ok(Idempotent::Replay { status, body }) => return replay(status, &body),
        Ok(Idempotent::Mismatch) => {
            return ApiError::unprocessable(
                "this Idempotency-Key was used with another request (method, path or body) in the last 24 hours; use a new key for a new request",
            )
            .into_response();
        }
        Ok(Idempotent::InProgress) => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the first request with this Idempotency-Key is still running; retry in a moment",
            );
            e.retry_after = Some(1);
            return e.into_response();
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    // A refusal that changed nothing frees the key for a retry.
    let keep = !(status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED);
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_RESPONSE).await else {
        release(&state, scope).await;
        return ApiError::internal().into_response();
    };
    if keep {
        // A line of headers, then the body as it is (a mint's holds its
        // key): one buffer, wiped when dropped.
        let head = serde_json::json!({
            "etag": parts.headers.get(header::ETAG).and_then(|v| v.to_str().ok()),
            "content_type": parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        })
        .to_string();
        let mut stored = zeroize::Zeroizing::new(Vec::with_capacity(head.len() + 1 + body.len()));
        stored.extend_from_slice(head.as_bytes());
        stored.push(b'\n');
        stored.extend_from_slice(&body);
        let code = i64::from(status.as_u16());
        let done = state
            .pool
            .run(String::new(), move |st| {
                Ok(st.idempotency_finish(&scope, code, &stored)?)
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(
                "the response to an Idempotency-Key was not kept: {}",
                e.message
            );
        }
    } else {
        release(&state, scope).await;
    }
    Response::from_parts(parts, Body::from(body))
}

async fn release(state: &AppState, scope: String) {
    let _ = state
        .pool
        .run(String::new(), move |st| Ok(st.idempotency_release(&scope)?))
        .await;
}

/// The first response again, marked `Idempotent-Replayed: true`.
fn replay(status: i64, stored: &[u8]) -> Response {
    let cut = stored
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(stored.len());
    let envelope: serde_json::Value = serde_json::from_slice(&stored[..cut]).unwrap_or_default();
    let body = stored.get(cut + 1..).unwrap_or_default().to_vec();
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    for (name, field) in [
        (header::CONTENT_TYPE, "content_type"),
        (header::ETAG, "etag"),
    ] {
        if let Some(v) = envelope[field]
            .as_str()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(name, v);
        }
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}
