//! Segment-compatible ingest endpoints.

use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kairos_core::segment::{self, BodyError, RequestEnv};
use kairos_core::EventKind;
use kairos_store::Submission;
use serde_json::json;
use std::borrow::Cow;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    Batch,
    Single(EventKind),
}

type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// An axum handler for one endpoint.
pub fn handler(
    ep: Endpoint,
) -> impl Fn(State<Arc<AppState>>, HeaderMap, Body) -> HandlerFuture + Clone + Send + Sync + 'static
{
    move |State(state), headers, body| {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let resp = match ingest(&state, ep, &headers, body).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
            metrics::histogram!("kairos_ingest_request_seconds")
                .record(started.elapsed().as_secs_f64());
            resp
        })
    }
}

/// The write key of `Authorization: Basic base64(key:)`.
fn basic_write_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
    // Segment puts the key in the user name; a few clients put it in the password.
    Some(if user.is_empty() { pass } else { user }.to_string())
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, msg)
}

async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.ingest.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("body is over the limit of {limit} bytes"),
        )
    })
}

/// Undoes `Content-Encoding: gzip` within the size and ratio bounds.
fn decode_encoding<'a>(
    state: &AppState,
    headers: &HeaderMap,
    raw: &'a [u8],
) -> Result<Cow<'a, [u8]>, ApiError> {
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(Cow::Borrowed(raw)),
        Some("gzip") | Some("x-gzip") => {
            let max = state.config.ingest.max_batch_bytes;
            let ratio_cap = raw
                .len()
                .saturating_mul(state.config.ingest.max_decompression_ratio);
            let cap = max.min(ratio_cap.max(1024));
            let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(cap));
            flate2::read::MultiGzDecoder::new(raw)
                .take(cap as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidBody,
                        format!("body is not valid gzip: {e}"),
                    )
                })?;
            if out.len() > cap {
                let message = if cap < max {
                    format!(
                        "gzip body expands more than {} times its compressed size",
                        state.config.ingest.max_decompression_ratio
                    )
                } else {
                    format!("decompressed body is over the limit of {max} bytes")
                };
                return Err(ApiError::new(ErrorCode::PayloadTooLarge, message));
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(ApiError::new(
            ErrorCode::UnsupportedEncoding,
            format!("Content-Encoding {other:?} is not supported; send gzip or no encoding"),
        )),
    }
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, e.to_string()),
        BodyError::Shape(f) => ApiError::new(ErrorCode::InvalidBody, f.to_string()).field(f.field),
        other => ApiError::new(ErrorCode::InvalidBody, other.to_string()),
    }
}

async fn ingest(
    state: &AppState,
    ep: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A wrong key in the header is refused before the body is read.
    let header_key = basic_write_key(headers);
    let header_source = match &header_key {
        Some(k) => Some(
            state
                .write_keys
                .get(k)
                .cloned()
                .ok_or_else(|| unauthorized("unknown write key"))?,
        ),
        None => None,
    };
    let raw = read_body(state, body).await?;
    let bytes = decode_encoding(state, headers, &raw)?;
    let received_at = (state.clock)();
    let mut env = RequestEnv {
        received_at,
        correct_skew: true,
        source: header_source.clone().unwrap_or_default(),
    };
    let decoded = match ep {
        Endpoint::Batch => segment::decode_batch(&bytes, &env, &state.limits),
        Endpoint::Single(kind) => segment::decode_single(&bytes, kind, &env, &state.limits),
    }
    .map_err(body_error)?;
    let source = match header_source {
        Some(s) => s,
        None => {
            let key = decoded.write_key.as_deref().ok_or_else(|| {
                unauthorized(
                    "a write key is required: HTTP Basic user name or writeKey in the body",
                )
            })?;
            state
                .write_keys
                .get(key)
                .cloned()
                .ok_or_else(|| unauthorized("unknown write key"))?
        }
    };
    env.source = source.clone();
    let mut events: Vec<_> = decoded.accepted.into_iter().map(|(_, e)| e).collect();
    for e in &mut events {
        e.source = source.clone();
    }
    let rejected = decoded.rejected;
    metrics::counter!("kairos_events_received_total").increment(events.len() as u64);
    metrics::counter!("kairos_events_rejected_total").increment(rejected.len() as u64);
    let rejected_json: Vec<_> = rejected
        .iter()
        .map(|r| json!({"index": r.index, "messageId": r.message_id, "error": r.error.to_string()}))
        .collect();
    let single_error = match ep {
        Endpoint::Single(_) => rejected.first().map(|r| r.error.clone()),
        Endpoint::Batch => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sub = Submission {
        events: kairos_store::Prepared::all(events),
        rejected,
        received_at,
        source,
        reply: Some(tx),
    };
    if state.ingest.try_submit(sub).is_err() {
        metrics::counter!("kairos_ingest_overloaded_total").increment(1);
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            "the ingest queue is full; retry after the Retry-After delay",
        ));
    }
    let outcome = rx
        .await
        .map_err(|_| ApiError::new(ErrorCode::StorageFailure, "the writer stopped"))??;
    if let Some(err) = single_error {
        // The event is kept in the dead-letter area; the caller learns why it was refused.
        return Err(ApiError::new(ErrorCode::InvalidEvent, err.to_string()).field(err.field));
    }
    Ok(axum::Json(json!({
        "success": true,
        "accepted": outcome.accepted + outcome.duplicates,
        "duplicates": outcome.duplicates,
        "suppressed": outcome.suppressed,
        "rejected": rejected_json,
    }))
    .into_response())
}

/// Records events Kairos itself produces (an unsubscribe link clicked) through the same
/// writer as ingested ones: durable when this returns, deduplicated by messageId.
pub async fn submit_internal(
    state: &AppState,
    events: Vec<kairos_core::Event>,
) -> Result<kairos_store::Outcome, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sub = Submission {
        events: kairos_store::Prepared::all(events),
        rejected: Vec::new(),
        received_at: (state.clock)(),
        source: "kairos".into(),
        reply: Some(tx),
    };
    if state.ingest.try_submit(sub).is_err() {
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            "the ingest queue is full; retry after the Retry-After delay",
        ));
    }
    rx.await
        .map_err(|_| ApiError::new(ErrorCode::StorageFailure, "the writer stopped"))?
        .map_err(ApiError::from)
}

/// A track event Kairos records for a person it already knows (under their userId, else
/// an anonymousId), at `now`; `None` when the profile has neither to record it under.
pub fn internal_track(
    p: &kairos_core::Profile,
    message_id: String,
    name: &str,
    properties: serde_json::Value,
    now: kairos_core::Millis,
) -> Option<kairos_core::Event> {
    let user = p.user_ids().into_iter().next();
    let anonymous = match user {
        Some(_) => None,
        None => Some(
            p.ids_of(&kairos_core::IdKind::Anonymous)
                .into_iter()
                .next()?,
        ),
    };
    Some(kairos_core::Event {
        message_id,
        kind: kairos_core::EventKind::Track,
        event: Some(name.to_string()),
        name: None,
        user_id: user,
        anonymous_id: anonymous,
        previous_id: None,
        group_id: None,
        timestamp: now,
        received_at: now,
        properties: properties.as_object().cloned().unwrap_or_default(),
        traits: Default::default(),
        context: Default::default(),
        source: "kairos".into(),
    })
}
