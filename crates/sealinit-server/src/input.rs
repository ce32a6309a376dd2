//! What a request carries in: JSON bodies whose errors never echo what
//! was sent, values moved straight into secret buffers, and the rule for
//! plaintext values (a private channel only).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use sealinit_core::secret::SecretValue;

use crate::client::Peer;
use crate::error::ApiError;
use crate::service::NewValue;

/// A JSON body whose rejections take the API's error shape: 415 without a
/// JSON content type, 413 over the limit, 400 otherwise (malformed JSON,
/// an unknown field, a wrong type).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::too_large())
            }
            // serde's message names the field and position; what was sent
            // is cut out of it.
            Err(e) => Err(ApiError::bad_request(format!(
                "malformed request body: {}",
                without_input(&e.body_text())
            ))),
        }
    }
}

/// A value from a request: moved into a secret buffer, never serialised.
pub(crate) struct Value(pub(crate) SecretValue);

impl Value {
    /// The value with each CRLF line end made LF, in place: browsers send
    /// a text area's line ends as CRLF, whatever was typed or pasted (the
    /// CLI and the API keep bytes as sent).
    pub(crate) fn with_lf(mut self) -> Self {
        self.0.crlf_to_lf();
        self
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self(SecretValue::from(s.into_bytes())))
    }
}

/// A value given in plaintext (over a private channel only) or sealed to
/// the repository's key.
pub(crate) fn new_value(
    peer: Peer,
    plain: Option<Value>,
    sealed: Option<String>,
    key_id: Option<String>,
    field: &str,
) -> Result<NewValue, ApiError> {
    match (plain, sealed, key_id) {
        (Some(Value(v)), None, None) => match peer.private_channel() {
            true => Ok(NewValue::Plain(v)),
            false => Err(ApiError::bad_request(format!(
                "a plaintext {field} is accepted only over TLS or loopback; send encrypted_{field} (crypto_box_seal to GET .../secrets/public-key)"
            ))),
        },
        (None, Some(enc), Some(key_id)) => Ok(NewValue::Sealed {
            sealed: B64
                .decode(enc.as_bytes())
                .map_err(|_| ApiError::bad_request(format!("encrypted_{field} is not base64")))?,
            key_id,
        }),
        _ => Err(ApiError::bad_request(format!(
            "send either {{\"{field}\"}} or {{\"encrypted_{field}\", \"key_id\"}}"
        ))),
    }
}

/// serde's message without what was sent: `invalid type: string "…",
/// expected a boolean` becomes `invalid type: string, expected a boolean`
/// (the field's path, which serde gives first, stays). A value sent in the
/// wrong field, or of the wrong type, never comes back in an error.
pub(crate) fn without_input(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some(at) = rest.find(marker) {
            let (head, tail) = rest.split_at(at + marker.len());
            out.push_str(head);
            let end = tail.find(", expected").unwrap_or(tail.len());
            let what = &tail[..end];
            let kind = what.split(['`', '"']).next().unwrap_or("").trim_end();
            out.push_str(kind);
            rest = &tail[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_keep_the_field_and_the_type_only() {
        for (m, want) in [
            (
                "value: invalid type: integer `8675309123`, expected a string at line 2 column 21",
                "value: invalid type: integer, expected a string at line 2 column 21",
            ),
            (
                "allow_production: invalid type: string \"sk_live_x\", expected a boolean",
                "allow_production: invalid type: string, expected a boolean",
            ),
            (
                "unknown field `extra`, expected one of",
                "unknown field `extra`, expected one of",
            ),
        ] {
            assert_eq!(super::without_input(m), want);
        }
    }
}
