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
    /// The request body's schema (in `components.schemas`), if any.
    pub body: Option<&'static str>,
    /// The success response's schema, if it has a body.
    pub ok: Option<&'static str>,
    /// Query parameters (described in [`query_param`]).
    pub query: &'static [&'static str],
}

const AUTH: &[u16] = &[401, 403, 429];

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/health",
        summary: "Liveness; no token needed",
        scope: "",
        statuses: &[200],
        body: None,
        ok: Some("Health"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos",
        summary: "Repositories the token may see, with secret counts",
        scope: "write or launch",
        statuses: &[200],
        body: None,
        ok: Some("Repos"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/repos",
        summary: "Create a repository (writes, imports, mints and reads of one that does not exist are 404 repo_not_found): {repo, secrets}",
        scope: "write",
        statuses: &[201, 409],
        body: Some("NewRepo"),
        ok: Some("RepoCreated"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/egress",
        summary: "The repository's egress policy: what the egress proxy does with requests that carry no secret",
        scope: "write or launch",
        statuses: &[200, 404],
        body: None,
        ok: Some("Egress"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/repos/{repo}/egress",
        summary: "Set the egress policy (default allow or deny, and hosts always allowed)",
        scope: "write",
        statuses: &[200, 400, 404, 415],
        body: Some("Egress"),
        ok: Some("Egress"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/repos/{repo}",
        summary: "Remove a whole repository (delete markers in the history): {repo, removed}",
        scope: "write",
        statuses: &[200, 404],
        body: None,
        ok: Some("RepoRemoved"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets",
        summary: "Secrets' metadata (never values), paginated: per_page (1-100, default 30), page",
        scope: "write or launch",
        statuses: &[200, 400],
        body: None,
        ok: Some("SecretPage"),
        query: &["per_page", "page"],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets/public-key",
        summary: "The repository's X25519 public key: encrypted_value is a crypto_box_seal to it",
        scope: "write",
        statuses: &[200, 400],
        body: None,
        ok: Some("PublicKey"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/import",
        summary: "Import {format: env|json, content | encrypted_content + key_id, allow_production?: true or [names]}: all or nothing",
        scope: "write",
        statuses: &[200, 400, 413, 415, 422],
        body: Some("ImportRequest"),
        ok: Some("Imported"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/secrets/import",
        summary: "Deprecated (removed in the next release): the import at its old path, which a secret named `import` shares (GET, PUT and DELETE there are that secret's); use POST /api/v1/repos/{repo}/import",
        scope: "write",
        statuses: &[200, 400, 413, 415, 422],
        body: Some("ImportRequest"),
        ok: Some("Imported"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets/{name}",
        summary: "One secret's metadata",
        scope: "write or launch",
        statuses: &[200, 404],
        body: None,
        ok: Some("SecretMeta"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/repos/{repo}/secrets/{name}",
        summary: "Set {value} (TLS or loopback) or {encrypted_value, key_id}; If-Match: VERSION for compare-and-set",
        scope: "write",
        statuses: &[200, 201, 400, 409, 412, 413, 415, 422],
        body: Some("PutSecret"),
        ok: Some("SetOutcome"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/repos/{repo}/secrets/{name}",
        summary: "Remove (a delete marker in the history)",
        scope: "write",
        statuses: &[204, 404],
        body: None,
        ok: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/secrets/{name}/versions",
        summary: "Versions: time, size, who; never values",
        scope: "write or launch",
        statuses: &[200, 404],
        body: None,
        ok: Some("Versions"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/secrets/{name}/rollback",
        summary: "A new version with version {to}'s value",
        scope: "write",
        statuses: &[201, 400, 404, 415],
        body: Some("Rollback"),
        ok: Some("SetOutcome"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/bundles",
        summary: "Mint a per-launch bundle {label?, ttl? (seconds or 15m, 1h30m; default 5m; at most --max-bundle-ttl)}: base64 bundle and key; it opens for whoever holds both until it expires",
        scope: "launch",
        statuses: &[201, 400, 404, 415, 422],
        body: Some("MintRequest"),
        ok: Some("Minted"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/audit",
        summary: "Audit records (repo, since, limit); JSON lines with Accept: application/x-ndjson",
        scope: "audit",
        statuses: &[200, 400],
        body: None,
        ok: Some("AuditPage"),
        query: &["repo", "since", "until", "limit", "cursor"],
    },
    Route {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        scope: "",
        statuses: &[200],
        body: None,
        ok: Some("Document"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets",
        summary: "An environment's secrets: metadata only (a launch naming the environment gets them over the repository's)",
        scope: "write or launch",
        statuses: &[200, 403, 404],
        body: None,
        ok: Some("SecretPage"),
        query: &["page", "per_page"],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets/public-key",
        summary: "The environment's public key, for encrypted_value",
        scope: "write",
        statuses: &[200, 403, 404],
        body: None,
        ok: Some("PublicKey"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets/{name}",
        summary: "One environment secret's metadata",
        scope: "write or launch",
        statuses: &[200, 404],
        body: None,
        ok: Some("SecretMeta"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets/{name}",
        summary: "Set an environment secret, as a repository's",
        scope: "write",
        statuses: &[200, 201, 400, 409, 412, 413, 415, 422],
        body: Some("PutSecret"),
        ok: Some("SetOutcome"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets/{name}",
        summary: "Remove an environment secret",
        scope: "write",
        statuses: &[204, 404],
        body: None,
        ok: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/orgs/{org}/secrets",
        summary: "An owner's (organisation's) secrets: metadata only, with each one's reach",
        scope: "write:ORG or launch:ORG",
        statuses: &[200, 403],
        body: None,
        ok: Some("SecretPage"),
        query: &["page", "per_page"],
    },
    Route {
        method: "get",
        path: "/api/v1/orgs/{org}/secrets/public-key",
        summary: "The owner's public key, for encrypted_value",
        scope: "write:ORG",
        statuses: &[200, 403],
        body: None,
        ok: Some("PublicKey"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/orgs/{org}/secrets/{name}",
        summary: "One organisation secret's metadata",
        scope: "write:ORG or launch:ORG",
        statuses: &[200, 404],
        body: None,
        ok: Some("SecretMeta"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/orgs/{org}/secrets/{name}",
        summary: "Set an organisation secret; visibility all|private|selected with selected_repositories",
        scope: "write:ORG",
        statuses: &[200, 201, 400, 409, 412, 413, 415, 422],
        body: Some("PutSecret"),
        ok: Some("SetOutcome"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/orgs/{org}/secrets/{name}",
        summary: "Remove an organisation secret",
        scope: "write:ORG",
        statuses: &[204, 404],
        body: None,
        ok: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets/{name}/versions",
        summary: "An environment secret's versions",
        scope: "write or launch",
        statuses: &[200, 404],
        body: None,
        ok: Some("Versions"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/repos/{repo}/environments/{env}/secrets/{name}/rollback",
        summary: "A new version of an environment secret with version {to}'s value",
        scope: "write",
        statuses: &[201, 400, 404, 415],
        body: Some("Rollback"),
        ok: Some("SetOutcome"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/orgs/{org}/secrets/{name}/versions",
        summary: "An organisation secret's versions",
        scope: "write:ORG or launch:ORG",
        statuses: &[200, 404],
        body: None,
        ok: Some("Versions"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/orgs/{org}/secrets/{name}/rollback",
        summary: "A new version of an organisation secret with version {to}'s value (and its reach then)",
        scope: "write:ORG",
        statuses: &[201, 400, 404, 415],
        body: Some("Rollback"),
        ok: Some("SetOutcome"),
        query: &[],
    },
];

/// Statuses every authenticated operation may answer besides its own:
/// malformed input, credentials, scopes, the limiter, a body too large or
/// of another type, a slow request, an Idempotency-Key in use, the store
/// or a master key unavailable.
const COMMON: &[u16] = &[400, 404, 408, 409, 413, 415, 422, 503];

/// A query parameter's description.
fn query_param(name: &str) -> Value {
    let (schema, text) = match name {
        "per_page" => (
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 30}),
            "secrets per page",
        ),
        "page" => (
            json!({"type": "integer", "minimum": 1, "default": 1}),
            "page number",
        ),
        "repo" => (
            json!({"type": "string"}),
            "only this repository (owner/name)",
        ),
        "since" => (
            json!({"type": "string"}),
            "records at or after: RFC 3339 or Unix seconds",
        ),
        "until" => (
            json!({"type": "string"}),
            "records before: RFC 3339 or Unix seconds",
        ),
        "limit" => (
            json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
            "records per page",
        ),
        "cursor" => (
            json!({"type": "string"}),
            "the next_cursor of an earlier page",
        ),
        _ => (json!({"type": "string"}), ""),
    };
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": text})
}

fn header_param(name: &str, text: &str) -> Value {
    json!({"name": name, "in": "header", "required": false,
        "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"}, "description": text})
}

/// The document.
pub fn build() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut responses = serde_json::Map::new();
        let authed = !r.scope.is_empty();
        let mut statuses: Vec<u16> = r.statuses.to_vec();
        if authed {
            statuses.extend(AUTH.iter().chain(COMMON));
        }
        // Any path may be one the router does not know (404, JSON).
        statuses.push(404);
        statuses.sort_unstable();
        statuses.dedup();
        for s in statuses {
            let mut resp = json!({"description": status_text(s)});
            match (s, r.ok) {
                (200 | 201, Some(schema)) => {
                    resp["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
                }
                (200 | 201 | 204, _) => {}
                _ => {
                    resp["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
                }
            }
            if r.path.ends_with("/secrets/{name}") && matches!(s, 200 | 201) {
                resp["headers"] = json!({"ETag": {"description": "the secret's version, quoted", "schema": {"type": "string"}}});
            }
            responses.insert(s.to_string(), resp);
        }
        let mut params = Vec::new();
        for p in ["repo", "env", "org", "name"] {
            if r.path.contains(&format!("{{{p}}}")) {
                let (pattern, description) = match p {
                    "repo" => (
                        "^[A-Za-z0-9][A-Za-z0-9._-]{0,38}/[A-Za-z0-9._-]{1,100}$",
                        "owner/name, percent-encoded as one segment (acme%2Fapi)",
                    ),
                    "env" => (
                        "^[A-Za-z0-9._-]{1,100}$",
                        "an environment of the repository",
                    ),
                    "org" => (
                        "^[A-Za-z0-9][A-Za-z0-9._-]{0,38}$",
                        "an owner (organisation)",
                    ),
                    _ => ("^[A-Za-z_][A-Za-z0-9_]{0,127}$", "the secret's name"),
                };
                params.push(json!({"name": p, "in": "path", "required": true,
                    "schema": {"type": "string", "pattern": pattern},
                    "description": description}));
            }
        }
        params.extend(r.query.iter().map(|q| query_param(q)));
        if authed {
            params.push(header_param(
                "X-Sealinit-Actor",
                "the person a token made with --may-act-for acts for (403 for any other token)",
            ));
        }
        if matches!(r.method, "post" | "put") && authed {
            params.push(header_param(
                "Idempotency-Key",
                "a repeat within 24 h with the same key and request gets the first response",
            ));
        }
        if r.method == "put" {
            params.push(header_param(
                "If-Match",
                "\"N\" or W/\"N\" (the secret's ETag; \"0\": must not exist yet) or *",
            ));
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.trim_start_matches("/api/v1").replace(['/', '{', '}', '-', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = r.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
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
            "schemas": schemas(),
        }
    })
}

/// Every body the API takes or gives.
fn schemas() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let set_outcome = json!({"type": "object",
        "required": ["repo", "name", "version", "created"],
        "properties": {
            "repo": {"type": "string"}, "name": {"type": "string"},
            "version": {"type": "integer"}, "created": {"type": "boolean"},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "allowed_production": {"type": "array", "items": {"type": "string"}},
            "case_twins": {"type": "array", "items": {"type": "string"},
                "description": "other names of the repository that differ from this new one only in case"}}});
    // A secret's route; absent in a write: as the current version has it
    // (env for a new secret).
    let delivery = json!({"enum": ["env", "setup", "proxy"],
        "description": "env: the setup steps and the agent; setup: the setup steps only; proxy: a placeholder in the sandbox, the value only through the egress proxy to hosts"});
    let hosts = json!({"type": "array", "items": {"type": "string"},
        "description": "proxy only (and required): api.example.com or *.example.com, with an optional :port"});
    let placeholder = json!({"enum": ["random", "keep-prefix"]});
    let in_body = json!({"type": "boolean",
        "description": "proxy only: the placeholder is also replaced in request bodies to the hosts"});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "allow": {"type": "object", "properties": {"field": {"type": "string"}, "name": {"type": "string"}}},
                "repo": {"type": "string", "description": "the repository a repo_not_found or an existing repository's conflict names"}}}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Repos": {"type": "object", "required": ["repos"], "properties": {"repos": {"type": "array", "items": {
            "type": "object", "required": ["repo", "secrets", "updated_at"],
            "properties": {"repo": {"type": "string"}, "secrets": {"type": "integer"}, "updated_at": time}}}}},
        "Egress": {"type": "object", "additionalProperties": false, "required": ["default"],
            "properties": {"default": {"enum": ["allow", "deny"]},
                "allow": {"type": "array", "items": {"type": "string"}, "description": "api.example.com or *.example.com, with an optional :port"}}},
        "NewRepo": {"type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {"name": {"type": "string", "description": "owner/name, or group/sub/name"}}},
        "RepoCreated": {"type": "object", "required": ["repo", "secrets"],
            "properties": {"repo": {"type": "string"}, "secrets": {"type": "integer"}}},
        "RepoRemoved": {"type": "object", "required": ["repo", "removed"],
            "properties": {"repo": {"type": "string"}, "removed": {"type": "integer"}}},
        "SecretMeta": {"type": "object",
            "required": ["name", "size", "version", "created_at", "updated_at", "updated_by", "delivery", "hosts", "placeholder", "in_body"],
            "properties": {"name": {"type": "string"}, "size": {"type": "integer"}, "version": {"type": "integer"},
                "created_at": time, "updated_at": time, "updated_by": {"type": "string"},
                "delivery": {"enum": ["env", "setup", "proxy"]}, "hosts": {"type": "array", "items": {"type": "string"}},
                "placeholder": {"enum": ["random", "keep-prefix"]}, "in_body": {"type": "boolean"}}},
        "SecretPage": {"type": "object", "required": ["total_count", "secrets"], "properties": {
            "total_count": {"type": "integer"},
            "secrets": {"type": "array", "items": {"$ref": "#/components/schemas/SecretMeta"}}}},
        "PublicKey": {"type": "object", "required": ["key_id", "key"],
            "properties": {"key_id": {"type": "string"}, "key": {"type": "string", "contentEncoding": "base64"}}},
        "PutSecret": {"type": "object", "additionalProperties": false,
            "description": "value (over TLS or loopback) or encrypted_value + key_id (crypto_box_seal to the public key)",
            "properties": {"value": {"type": "string"}, "encrypted_value": {"type": "string"}, "key_id": {"type": "string"},
                "allow_production": {"type": "boolean"}, "allow_name": {"type": "boolean"}, "allow_empty": {"type": "boolean"},
                "delivery": delivery.clone(), "hosts": hosts.clone(), "placeholder": placeholder.clone(),
                "in_body": in_body.clone(),
                "visibility": {"enum": ["all", "private", "selected"], "description": "organisation secrets only: the owner's repositories it reaches"},
                "selected_repositories": {"type": "array", "items": {"type": "string"}, "description": "with visibility selected"}}},
        "SetOutcome": set_outcome,
        "Imported": {"type": "object", "required": ["secrets"], "properties": {"secrets": {"type": "array", "items": {"$ref": "#/components/schemas/SetOutcome"}}}},
        "ImportRequest": {"type": "object", "additionalProperties": false, "required": ["format"],
            "properties": {"format": {"enum": ["env", "json"]}, "content": {"type": "string"},
                "encrypted_content": {"type": "string"}, "key_id": {"type": "string"},
                "allow_production": {"oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}]},
                "allow_names": {"type": "array", "items": {"type": "string"}}, "expand": {"type": "boolean"},
                "delivery": delivery, "hosts": hosts, "placeholder": placeholder, "in_body": in_body}},
        "Versions": {"type": "object", "required": ["versions"], "properties": {"versions": {"type": "array", "items": {
            "type": "object", "required": ["version", "at", "actor", "size", "deleted", "pruned"],
            "properties": {"version": {"type": "integer"}, "at": time, "actor": {"type": "string"},
                "size": {"type": "integer"}, "deleted": {"type": "boolean"}, "pruned": {"type": "boolean"}}}}}},
        "Rollback": {"type": "object", "additionalProperties": false, "required": ["to"],
            "properties": {"to": {"type": "integer"}}},
        "MintRequest": {"type": "object", "additionalProperties": false, "properties": {
            "label": {"type": "string"},
            "ttl": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}], "description": "seconds, or 15m, 1h30m; default 300; at most the server's --max-bundle-ttl"},
            "allow_empty": {"type": "boolean"},
            "environment": {"type": "string", "description": "an environment of the repository: its secrets win over the repository's, which win over the organisation's"}}},
        "Minted": {"type": "object", "required": ["bundle", "key", "label", "repo", "created_at", "expires_at", "names"],
            "properties": {"bundle": {"type": "string", "contentEncoding": "base64"}, "key": {"type": "string", "contentEncoding": "base64"},
                "proxy_bundle": {"type": "string", "contentEncoding": "base64", "description": "the egress proxy's part (its values never enter the sandbox), when the repository has proxy secrets"},
                "proxy_key": {"type": "string", "contentEncoding": "base64", "description": "the key of proxy_bundle"},
                "label": {"type": "string"}, "repo": {"type": "string"}, "created_at": time,
                "expires_at": {"oneOf": [time, {"type": "null"}]}, "names": {"type": "array", "items": {"type": "string"}}}},
        "AuditPage": {"type": "object", "required": ["records", "next_cursor"], "properties": {
            "records": {"type": "array", "items": {"type": "object", "required": ["id", "at", "actor", "action", "repo", "detail"],
                "properties": {"id": {"type": "integer"}, "at": time, "actor": {"type": "string"}, "action": {"type": "string"},
                    "repo": {"type": "string"}, "detail": {}}}},
            "next_cursor": {"type": ["string", "null"]}}},
        "Document": {"type": "object", "required": ["openapi", "paths"]},
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
        404 => "No such repository (code repo_not_found), secret or version",
        408 => "The request did not arrive in time",
        409 => {
            "Conflict: the repository exists, a value sealed to a key the repository no longer has, or an Idempotency-Key in use"
        }
        412 => "If-Match: the secret is at another version",
        413 => "Request body too large",
        415 => "Not application/json",
        422 => "Refused: invalid name, over a limit, code-loading name, a production credential",
        429 => "Too many failed authentications from this address (Retry-After)",
        503 => "The store, or a master key, is unavailable (Retry-After)",
        _ => "",
    }
}

pub async fn document() -> Json<Value> {
    Json(build())
}
