//! API errors. [`ErrorCode::status`] is the one table mapping error kinds to HTTP statuses;
//! every error body has the same shape:
//! `{"success": false, "error": {"code": "...", "message": "...", "field": "..."}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Body is not JSON, or not the shape of the endpoint.
    InvalidBody,
    /// One event of a single-event call is invalid.
    InvalidEvent,
    /// Body (compressed or not) over the limit, or a suspicious decompression ratio.
    PayloadTooLarge,
    UnsupportedEncoding,
    /// Missing or wrong write key / admin token.
    Unauthorized,
    NotFound,
    InvalidParameter,
    /// A score or segment definition that does not parse or type-check; `field` is its
    /// path (`scores.engagement.rules[2]`), the message has line:column.
    InvalidDefinition,
    /// A message template that does not parse; `field` is the part (`html`), the message
    /// has line and column.
    InvalidTemplate,
    /// The ingest queue is full; retry after the `Retry-After` seconds.
    Overloaded,
    /// The store failed; nothing of the request was acknowledged.
    StorageFailure,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidBody
            | Self::InvalidEvent
            | Self::PayloadTooLarge
            | Self::UnsupportedEncoding
            | Self::InvalidParameter
            | Self::InvalidDefinition
            | Self::InvalidTemplate => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::StorageFailure => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidBody => "invalid_body",
            Self::InvalidEvent => "invalid_event",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::InvalidParameter => "invalid_parameter",
            Self::InvalidDefinition => "invalid_definition",
            Self::InvalidTemplate => "invalid_template",
            Self::Overloaded => "overloaded",
            Self::StorageFailure => "storage_failure",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl From<kairos_store::StoreError> for ApiError {
    fn from(e: kairos_store::StoreError) -> Self {
        if let kairos_store::StoreError::NotFound(what) = &e {
            return Self::new(ErrorCode::NotFound, what.clone());
        }
        tracing::error!("store error: {e}");
        Self::new(ErrorCode::StorageFailure, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        metrics::counter!("kairos_http_errors_total", "code" => self.code.as_str()).increment(1);
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(f) = &self.field {
            body["field"] = json!(f);
        }
        let mut resp =
            (status, axum::Json(json!({"success": false, "error": body}))).into_response();
        if self.code == ErrorCode::Overloaded {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        if self.code == ErrorCode::Unauthorized {
            resp.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"kairos\""),
            );
        }
        resp
    }
}
