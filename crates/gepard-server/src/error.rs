//! The one error envelope every route answers with.
//!
//! Policy (after crates.io and svix): only deliberate errors (400/401/403/404/409/413/422)
//! carry a specific message to the client. Anything else is logged here with its cause and
//! answered with a bare 500 whose text says nothing about the internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gepard_agent::bundle::BundleError;
use gepard_store::StoreError;

pub use gepard_core::model::{ErrorBody, FieldError};

/// An error a handler returns; becomes an [`ErrorBody`] response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    errors: Option<Vec<FieldError>>,
    /// Seconds for a `Retry-After` header (503 only).
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            errors: None,
            retry_after: None,
        }
    }

    /// 400: the request could not be read.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 401: no key or an unknown one.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403: the key lacks the scope for this action.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: nothing there, or nothing this key may see.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 405: the path exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }

    /// 409: the request collides with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 413: the body is larger than the route accepts.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
    }

    /// 415: wrong content type.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        )
    }

    /// 422 for one field.
    pub fn invalid(loc: &[&str], msg: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
            kind: "value_error".into(),
        }])
    }

    /// 422 with field problems; the detail summarizes the first.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.first() {
            Some(e) => format!("invalid {}: {}", e.loc.join("."), e.msg),
            None => "the request is invalid".to_owned(),
        };
        Self {
            errors: Some(errors),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", detail)
        }
    }

    /// 500 for an internal failure: logs `cause`, tells the client nothing about it.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }

    /// 503: a dependency (the database) is not available.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// 503 for a momentary store failure (busy, locked, unreachable): logs `cause`, asks the
    /// client to try again in a second, and says nothing about the internals.
    pub fn busy(cause: &dyn std::error::Error) -> Self {
        tracing::warn!(error = %cause, "store busy");
        Self {
            retry_after: Some(1),
            ..Self::unavailable("the database is busy; try again shortly")
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            kind: self.kind.to_owned(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut response = (self.status, Json(body)).into_response();
        // RFC 9110 §11.6.1: a 401 names the scheme that would work.
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(msg) => Self::conflict(msg),
            other if other.is_transient() => Self::busy(&other),
            other => Self::internal(&other),
        }
    }
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        let mut loc = vec!["body".to_owned()];
        loc.extend(e.location());
        Self::validation(vec![FieldError {
            loc,
            msg: e.to_string(),
            kind: "bundle_error".into(),
        }])
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_busy_store_answers_503_with_retry_after_and_no_internals() {
        let response = ApiError::from(StoreError::Busy(Duration::from_secs(10))).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
        let body = body_text(response).await;
        assert!(body.contains(r#""type":"unavailable""#), "{body}");
        assert!(!body.contains("10s"), "internal text leaked: {body}");
    }

    #[tokio::test]
    async fn a_broken_store_answers_a_bare_500_without_retry_after() {
        let response =
            ApiError::from(StoreError::Corrupt("job 7: bad json at line 1".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .is_none());
        let body = body_text(response).await;
        assert!(!body.contains("bad json"), "internal text leaked: {body}");
    }
}
