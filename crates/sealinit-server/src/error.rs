//! The service's one error type and its one mapping to HTTP statuses:
//! `{"error":{"code","message"}}`. Messages come from the store's errors,
//! which name repositories, secrets and rules, never values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealinit_store::StoreError;

/// The code of a 503 for a master key this server does not hold (yet).
pub const MASTER_KEY_UNAVAILABLE: &str = "master_key_unavailable";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 429: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
    /// The input it concerns, for the page to show it next to its field.
    pub field: Option<Field>,
    /// What can be asked for to go past it, for clients that word it in
    /// their own interface (sealctl names its flag): `{"allow", "name"}`.
    pub allow: Option<(&'static str, Box<str>)>,
    /// The repository a `repo_not_found` names, for clients that say how
    /// to create it in their own words.
    pub repo: Option<Box<str>>,
    /// The store's error it was made from, for the page to say it in its
    /// own words ([`crate::page`]).
    pub cause: Option<Box<StoreError>>,
}

/// Which input an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            field: None,
            allow: None,
            repo: None,
            cause: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is needed: Authorization: Bearer sit_...",
        )
    }

    pub fn forbidden(what: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", what)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unprocessable(what: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", what)
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over the limit (a little over 1 MiB of values)",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server's log",
        )
    }
}

/// The store's message in the API's words: where the store names a CLI
/// flag or command, the request field or endpoint instead.
fn api_words(e: &StoreError) -> String {
    use StoreError as E;
    use sealinit_core::bundle::PayloadError as P;
    match e {
        E::Payload(P::CodeLoadingName(n)) => format!(
            "name {n} changes how programs load code; refused unless asked for: \"allow_name\": true in a PUT, or {n} in \"allow_names\" of an import"
        ),
        E::EmptyRepo { repo } => format!(
            "repository {repo} has no secrets (is the name right?); nothing was minted; send \"allow_empty\": true to mint an empty bundle"
        ),
        E::NoSuchRepo { repo } => format!(
            "repository {repo} does not exist (is the name right?); nothing was changed; create it with POST /api/v1/repos {{\"name\": \"{repo}\"}}"
        ),
        E::EmptyValue { name } => format!(
            "the value of {name} is empty; nothing was set; send \"allow_empty\": true to store an empty value"
        ),
        E::NoSuchVersion {
            repo,
            name,
            version,
            why,
        } => format!(
            "secret {name} of {repo} has no version {version} to roll back to{why}; its versions: GET /api/v1/repos/{{repo}}/secrets/{name}/versions"
        ),
        E::DataKeyUnavailable { repo, ids } => format!(
            "this server holds none of the master keys the data key of {repo} is wrapped under ({}); it reloads its keyring (the files and directories it was started with) now and on SIGHUP: put the key there and retry",
            ids.join(", ")
        ),
        E::PrimaryKeyNotGiven { what, primary } => format!(
            "{what} needs the store's primary master key {primary}, which this server does not hold; it reloads its keyring (the files and directories it was started with) now and on SIGHUP: put the key there and retry"
        ),
        E::ProductionCredential {
            name,
            rule,
            what,
            advice,
            hosts,
            others,
        } => format!(
            "secret {name} looks like {what} (rule {rule}){}: only staging and test credentials belong in sandboxes; {advice}{}, or allow this one on purpose with \"allow_production\": true, which the audit trail records; nothing was changed",
            sealinit_store::also_refused(others),
            sealinit_store::proxy_advice(hosts, true)
        ),
        _ => e.to_string(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StoreError as E;
        use sealinit_core::bundle::PayloadError as P;
        let message = api_words(&e);
        let field = match &e {
            E::Payload(
                P::InvalidName(_)
                | P::ReservedName(_)
                | P::DuplicateName(_)
                | P::CodeLoadingName(_),
            ) => Some(Field::Name),
            E::Payload(P::NulInValue(_) | P::EntryTooLarge { .. } | P::TooLarge { .. })
            | E::ProductionCredential { .. } => Some(Field::Value),
            _ => None,
        };
        let (status, code) = match &e {
            E::InvalidRepo(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            E::Payload(_)
            | E::ProductionCredential { .. }
            | E::SealedValueInvalid { .. }
            | E::InvalidRoute { .. }
            | E::InvalidEgress(_)
            | E::EmptyValue { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            E::VersionConflict { .. } => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            E::StaleKeyId { .. } | E::RepoExists { .. } => (StatusCode::CONFLICT, "conflict"),
            E::NoSuchRepo { .. } => (StatusCode::NOT_FOUND, "repo_not_found"),
            E::NoSuchSecret { .. }
            | E::NoSuchVersion { .. }
            | E::EmptyRepo { .. }
            | E::NoSuchToken { .. } => (StatusCode::NOT_FOUND, "not_found"),
            E::Database { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            E::DataKeyUnavailable { .. } | E::PrimaryKeyNotGiven { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, MASTER_KEY_UNAVAILABLE)
            }
            _ => {
                tracing::error!("store: {message}");
                return Self::internal();
            }
        };
        let allow = match &e {
            E::Payload(P::CodeLoadingName(n)) => Some(("allow_name", n.as_str().into())),
            E::ProductionCredential { name, .. } => {
                Some(("allow_production", name.as_str().into()))
            }
            E::EmptyValue { name } => Some(("allow_empty", name.as_str().into())),
            E::EmptyRepo { repo } => Some(("allow_empty", repo.as_str().into())),
            _ => None,
        };
        Self {
            field,
            allow,
            repo: match &e {
                E::NoSuchRepo { repo } | E::RepoExists { repo } => Some(repo.as_str().into()),
                _ => None,
            },
            // The keyring reloads within a second.
            retry_after: (code == MASTER_KEY_UNAVAILABLE).then_some(1),
            cause: Some(Box::new(e)),
            ..Self::new(status, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        if let Some((field, name)) = &self.allow {
            body["error"]["allow"] = serde_json::json!({"field": field, "name": name});
        }
        if let Some(repo) = &self.repo {
            body["error"]["repo"] = serde_json::json!(repo);
        }
        if let Some(StoreError::ProductionCredential { hosts, .. }) = self.cause.as_deref() {
            if !hosts.is_empty() {
                body["error"]["proxy_hosts"] = serde_json::json!(hosts);
            }
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
