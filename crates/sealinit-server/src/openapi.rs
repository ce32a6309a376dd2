//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the API,
//! built from [`ROUTES`], the same table the router is built from (see
//! `api::router`): a route is served if and only if it is documented. The
//! tests also walk the document against the running server.

use axum::Json;
use serde_json::{Value, json};

/// One operation: method, path, summary, scope, the statuses it returns.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub scope: &'static str,
    pub statuses: &'static [u16],
}

const AUTH: &[u16] = &[401, 403, 429];

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/health",
        summary: "Liveness; no token needed",
        scope: "",
        statuses: &[200],
    },
    Route {
        method: "get",
        path: "/api/v1/repos",
        summary: "Repositories the token may see, with secret counts",
        scope: "write or launch",
        statuses: &[200],
    },
    Route {
        method: "delete",
        path: "/api/v1/repos/{repo}",
        summary: "Remove a whole repository (delete markers in the history): {repo, removed}",
        scope: "write",
        statuses: &[200, 404],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets",
        summary: "Secrets' metadata (never values), paginated: per_page (1-100, default 30), page",
        scope: "write or launch",
        statuses: &[200, 400],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets/public-key",
        summary: "The repository's X25519 public key: encrypted_value is a crypto_box_seal to it",
        scope: "write",
        statuses: &[200, 400],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/import",
        summary: "Import {format: env|json, content | encrypted_content + key_id, allow_production?: true or [names]}: all or nothing",
        scope: "write",
        statuses: &[200, 400, 413, 415, 422],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/secrets/import",
        summary: "Deprecated (removed in the next release): the import at its old path, which a secret named `import` shares (GET, PUT and DELETE there are that secret's); use POST /api/v1/repos/{repo}/import",
        scope: "write",
        statuses: &[200, 400, 413, 415, 422],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets/{name}",
        summary: "One secret's metadata",
        scope: "write or launch",
        statuses: &[200, 404],
    },
    Route {
        method: "put",
        path: "/api/v1/repos/{repo}/secrets/{name}",
        summary: "Set {value} (TLS or loopback) or {encrypted_value, key_id}; If-Match: VERSION for compare-and-set",
        scope: "write",
        statuses: &[200, 201, 400, 409, 412, 413, 415, 422],
    },
    Route {
        method: "delete",
        path: "/api/v1/repos/{repo}/secrets/{name}",
        summary: "Remove (a delete marker in the history)",
        scope: "write",
        statuses: &[204, 404],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets/{name}/versions",
        summary: "Versions: time, size, who; never values",
        scope: "write or launch",
        statuses: &[200, 404],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/secrets/{name}/rollback",
        summary: "A new version with version {to}'s value",
        scope: "write",
        statuses: &[201, 400, 404, 415],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/bundles",
        summary: "Mint a per-launch bundle {label?, ttl? (seconds or 15m, 1h30m; default 5m; at most --max-bundle-ttl)}: base64 bundle and key; it opens for whoever holds both until it expires",
        scope: "launch",
        statuses: &[201, 400, 404, 415, 422],
    },
    Route {
        method: "get",
        path: "/api/v1/audit",
        summary: "Audit records (repo, since, limit); JSON lines with Accept: application/x-ndjson",
        scope: "audit",
        statuses: &[200, 400],
    },
    Route {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        scope: "",
        statuses: &[200],
    },
];

/// The document.
pub fn build() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut responses = serde_json::Map::new();
        let authed = !r.scope.is_empty();
        for s in r.statuses.iter().chain(if authed { AUTH } else { &[] }) {
            responses.insert(s.to_string(), json!({"description": status_text(*s)}));
        }
        let mut params = Vec::new();
        for p in ["repo", "name"] {
            if r.path.contains(&format!("{{{p}}}")) {
                params.push(json!({"name": p, "in": "path", "required": true,
                    "schema": {"type": "string"},
                    "description": if p == "repo" { "owner/name, percent-encoded as one segment (acme%2Fapi)" } else { "the secret's name" }}));
            }
        }
        let mut op = json!({
            "summary": r.summary,
            "parameters": params,
            "responses": responses,
        });
        if authed {
            op["security"] = json!([{"bearer": []}]);
            op["x-scope"] = json!(r.scope);
        }
        let entry = paths.entry(r.path).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "sealinit secrets service", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}
        }
    })
}

fn status_text(s: u16) -> &'static str {
    match s {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Malformed request (JSON, unknown field, parameter)",
        401 => "Missing or invalid token",
        403 => "The token's scopes do not allow it",
        404 => "No such repository, secret or version",
        409 => "Conflict: the value was sealed to a key the repository no longer has",
        412 => "If-Match: the secret is at another version",
        413 => "Request body too large",
        415 => "Not application/json",
        422 => "Refused: invalid name, over a limit, code-loading name, a production credential",
        429 => "Too many failed authentications from this address (Retry-After)",
        _ => "",
    }
}

pub async fn document() -> Json<Value> {
    Json(build())
}
