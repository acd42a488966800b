//! Request extractors whose failures answer with the error envelope instead of axum's plain
//! text, naming the field that could not be read.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// `Json<T>` with enveloped errors: bad syntax → 400, wrong shape → 422 at the failing field,
/// wrong content type → 415, too large → 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read as a value first: the object and NUL checks apply to every body alike, and the
        // typed read afterwards still names the failing field.
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(json_rejection(&rejection)),
        };
        check_body(&value)?;
        from_json_body(&value).map(Self)
    }
}

/// What every JSON body must be, whatever its route: an object (serde would otherwise read an
/// array into a struct field by field, so `["name", "1.0.0"]` would act as
/// `{"name": "name", "version": "1.0.0"}`), and free of NUL characters, which PostgreSQL
/// cannot store in text (and SQLite would store, making the two stores differ).
fn check_body(value: &serde_json::Value) -> Result<(), ApiError> {
    if !value.is_object() {
        return Err(ApiError::validation(vec![FieldError {
            loc: vec!["body".into()],
            msg: "the body must be a JSON object".into(),
            kind: "value_error".into(),
        }]));
    }
    match nul_at(value) {
        Some(path) => {
            let mut loc = vec!["body".to_owned()];
            loc.extend(path);
            Err(ApiError::validation(vec![FieldError {
                loc,
                msg: NUL_MESSAGE.into(),
                kind: "value_error".into(),
            }]))
        }
        None => Ok(()),
    }
}

/// Why a text holding U+0000 is refused, wherever it comes from.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// The path (keys and array indexes) of the first string or key holding U+0000.
fn nul_at(value: &serde_json::Value) -> Option<Vec<String>> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(Vec::new()),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            nul_at(v).map(|mut rest| {
                rest.insert(0, i.to_string());
                rest
            })
        }),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(vec![k.replace('\0', "\\u0000")]);
            }
            nul_at(v).map(|mut rest| {
                rest.insert(0, k.clone());
                rest
            })
        }),
        _ => None,
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        // Reading into a `Value` takes any well-formed JSON, so no data error with a field
        // path arises here: the typed read after it (`from_json_body`) names the field.
        JsonRejection::JsonDataError(e) => body_error("", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) => bytes_rejection(e),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// `Query<T>` with enveloped errors: an unknown, repeated or malformed parameter → 422 naming
/// it at `["query", name]` (axum alone answers 400 in plain text).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(name) = parts.uri.query().and_then(nul_parameter) {
            let loc: Vec<&str> = if name.is_empty() {
                vec!["query"]
            } else {
                vec!["query", name.as_str()]
            };
            return Err(ApiError::invalid(&loc, NUL_MESSAGE));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = std::error::Error::source(rejection)
        .map_or_else(|| rejection.body_text(), ToString::to_string);
    // serde names the parameter in backticks: "unknown field `foo`, expected …",
    // "duplicate field `page`".
    let name = text
        .split('`')
        .nth(1)
        .filter(|_| text.contains("field `"))
        .unwrap_or_default()
        .to_owned();
    let loc: Vec<&str> = if name.is_empty() {
        vec!["query"]
    } else {
        vec!["query", name.as_str()]
    };
    let msg = if text.starts_with("duplicate field") {
        "is given more than once".to_owned()
    } else if text.starts_with("unknown field") {
        text.replacen("field", "parameter", 2)
    } else {
        text
    };
    ApiError::invalid(&loc, msg)
}

/// `Path<T>` with enveloped errors: a path segment that cannot be read (not UTF-8 after
/// percent-decoding, say) → 400 saying which, instead of axum's plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A nested router sees its own part of the path only; the original URI has it all.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path(), |o| o.0.path());
        if has_encoded_nul(path) {
            return Err(ApiError::bad_request(format!(
                "the URL path cannot be read: a path segment {NUL_MESSAGE}"
            )));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    let text = match rejection {
        PathRejection::FailedToDeserializePathParams(e) => e.body_text(),
        other => other.body_text(),
    };
    let detail = text.strip_prefix("Invalid URL: ").unwrap_or(&text);
    ApiError::bad_request(format!("the URL path cannot be read: {detail}"))
}

/// Whether the percent-decoded `raw` holds U+0000.
fn has_encoded_nul(raw: &str) -> bool {
    percent_encoding::percent_decode_str(raw).any(|b| b == 0)
}

/// The name of the first query parameter whose name or value decodes to U+0000 (empty when
/// the name itself holds it).
fn nul_parameter(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(name, value)| {
        if name.contains('\0') {
            Some(String::new())
        } else {
            value.contains('\0').then(|| name.into_owned())
        }
    })
}

/// The largest JSON body a route takes (bundle uploads have their own, larger limit). Set on
/// the router explicitly, so the 413's message and the limit cannot drift apart.
pub const MAX_JSON_BYTES: usize = 2 * 1024 * 1024;

/// Maps a failure to read a JSON body (usually the size limit) to the envelope.
pub fn bytes_rejection(e: &BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "the request body is larger than the {} MiB a JSON request may be",
            MAX_JSON_BYTES / (1024 * 1024)
        ))
    } else {
        ApiError::bad_request(format!(
            "could not read the request body: {}",
            e.body_text()
        ))
    }
}

/// Parses an optional numeric query parameter that must lie within `range`. Text that is
/// not such a number, or a number outside it, is a 422 naming the parameter and the range
/// (`4294967296` is a fine integer, just not a page number).
pub fn query_number<T>(
    name: &str,
    value: Option<&str>,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr + std::fmt::Display + PartialOrd,
{
    match value {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                &["query", name],
                format!(
                    "must be a whole number from {} to {}, got `{v}`",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// Deserializes a parsed JSON body, naming the failing field in the 422 (`["body", "config",
/// "seed"]`), for routes that read the raw body themselves (hashing it, or accepting none).
pub fn from_json_body<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| body_error(&e.path().to_string(), e.inner().to_string()))
}

/// A 422 for a body that parsed as JSON but has the wrong shape at `path` (serde's dotted
/// path, `config.seed` or `tags[0]`), located as `["body", "config", "seed"]` /
/// `["body", "tags", "0"]` like every other field error.
fn body_error(path: &str, msg: String) -> ApiError {
    let mut loc = vec!["body".to_owned()];
    for part in path.split('.').filter(|p| !p.is_empty()) {
        loc.extend(
            part.split('[')
                .map(|piece| piece.trim_end_matches(']'))
                .filter(|piece| !piece.is_empty())
                .map(str::to_owned),
        );
    }
    // serde names a missing field in its message ("missing field `model`" at the enclosing
    // object); the client needs it located at the field itself, as a missing value.
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        loc.push(field.to_owned());
        return ApiError::validation(vec![FieldError {
            loc,
            msg: "field required".into(),
            kind: "missing".into(),
        }]);
    }
    ApiError::validation(vec![FieldError {
        loc,
        msg,
        kind: "value_error".into(),
    }])
}

/// A JSON body read by hand: 415 unless `Content-Type: application/json`, 400 unless it parses.
pub fn json_value(
    headers: &axum::http::HeaderMap,
    bytes: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::unsupported_media_type(
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    let value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    check_body(&value)?;
    Ok(value)
}
