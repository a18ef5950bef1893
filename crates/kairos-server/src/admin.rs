//! The read, export and privacy API. Requires the admin token (`Authorization: Bearer`);
//! write keys are never accepted here.

use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use kairos_core::identity::{IdKey, ProfileId};
use kairos_core::Profile;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type S = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/profiles", get(find_profile))
        .route("/v1/profiles/{id}", get(get_profile).delete(erase_profile))
        .route("/v1/profiles/{id}/events", get(profile_events))
        .route("/v1/profiles/{id}/export", get(export_profile))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/events", get(event_log))
        .route("/v1/stats", get(stats))
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = state.config.admin_token.as_deref().unwrap_or_default();
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(t) if !expected.is_empty() && constant_time_eq(t.as_bytes(), expected.as_bytes()) => {
            Ok(())
        }
        _ => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this endpoint needs the admin token as 'Authorization: Bearer <token>'",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn blocking_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(ErrorCode::StorageFailure, format!("read task failed: {e}"))
}

/// Resolves a path id: a Kairos id (`p_...`), else a userId.
fn resolve(state: &AppState, id: &str) -> Result<Profile, ApiError> {
    let pid = match id.parse::<ProfileId>() {
        Ok(p) => Some(p),
        Err(()) => state.store.lookup(&IdKey::user(id))?,
    };
    pid.and_then(|p| state.store.profile(p).transpose())
        .transpose()?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no profile {id:?}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FindQuery {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    email: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn find_profile(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<FindQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let key = if let Some(u) = &q.user_id {
        Some(IdKey::user(u))
    } else if let Some(a) = &q.anonymous_id {
        Some(IdKey::anonymous(a))
    } else if let Some(e) = &q.email {
        Some(IdKey::email(e).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidParameter, "email: not an email address").field("email")
        })?)
    } else {
        None
    };
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let now = (s.clock)();
        match key {
            Some(key) => {
                let id = s.store.lookup(&key)?.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NotFound,
                        format!("no profile with {} {:?}", key.kind.label(), key.value),
                    )
                })?;
                let p = s
                    .store
                    .profile(id)?
                    .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "profile not found"))?;
                Ok(Json(p.view(now)))
            }
            None => {
                let after = match q.after.as_deref() {
                    Some(a) => Some(a.parse::<ProfileId>().map_err(|_| {
                        ApiError::new(
                            ErrorCode::InvalidParameter,
                            "after: expected a profile id like p_0123456789abcdef",
                        )
                        .field("after")
                    })?),
                    None => None,
                };
                let limit = q.limit.unwrap_or(50).clamp(1, 1000);
                let page = s.store.profiles_after(after, limit)?;
                let next = (page.len() == limit)
                    .then(|| page.last().map(|p| p.id.to_string()))
                    .flatten();
                Ok(Json(json!({
                    "profiles": page.iter().map(|p| p.view(now)).collect::<Vec<_>>(),
                    "next": next,
                })))
            }
        }
    })
    .await
    .map_err(blocking_err)?
}

async fn get_profile(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let s = state.clone();
    tokio::task::spawn_blocking(move || Ok(Json(resolve(&s, &id)?.view((s.clock)()))))
        .await
        .map_err(blocking_err)?
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Cursor of the profile timeline: `<event time ms>:<seq>`.
fn parse_cursor(s: &str) -> Result<(i64, u64), ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "after: expected the 'next' cursor of a previous page",
        )
        .field("after")
    };
    let (t, q) = s.split_once(':').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?))
}

async fn profile_events(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let p = resolve(&s, &id)?;
        let after = q.after.as_deref().map(parse_cursor).transpose()?;
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let events = s.store.profile_events(p.id, after, limit)?;
        let next = (events.len() == limit)
            .then(|| {
                events
                    .last()
                    .map(|e| format!("{}:{}", e.event.timestamp, e.seq))
            })
            .flatten();
        Ok(Json(json!({
            "profile": p.id.to_string(),
            "events": events.iter().map(|e| e.event.to_segment_json()).collect::<Vec<_>>(),
            "next": next,
        })))
    })
    .await
    .map_err(blocking_err)?
}

#[derive(Deserialize)]
struct EraseQuery {
    suppress: Option<bool>,
}

async fn erase_profile(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EraseQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let s = state.clone();
    let profile = tokio::task::spawn_blocking(move || resolve(&s, &id))
        .await
        .map_err(blocking_err)??;
    let suppress = q.suppress.unwrap_or(state.config.ingest.suppress_erased);
    let rx = state.ingest.erase(profile.id, suppress, (state.clock)())?;
    let erased = rx
        .await
        .map_err(|_| ApiError::new(ErrorCode::StorageFailure, "the writer stopped"))??
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "profile not found"))?;
    Ok(Json(json!({
        "erased": erased.profile.to_string(),
        "events": erased.events,
        "identifiers": erased.identifiers,
        "deadLetters": erased.dead_letters,
        "suppressed": suppress,
    })))
}

async fn export_profile(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let p = resolve(&s, &id)?;
        let events = s.store.profile_events(p.id, None, usize::MAX)?;
        let needles: Vec<String> = p
            .identifiers
            .iter()
            .map(|k| Value::String(k.value.clone()).to_string().to_lowercase())
            .collect();
        let dead: Vec<_> = s
            .store
            .dead_letters(0, usize::MAX)?
            .into_iter()
            .filter(|d| {
                let raw = d.raw.to_lowercase();
                needles.iter().any(|n| raw.contains(n.as_str()))
            })
            .collect();
        Ok(Json(json!({
            "exportedAt": kairos_core::time::format_timestamp((s.clock)()),
            "profile": p.view((s.clock)()),
            "events": events.iter().map(|e| e.event.to_segment_json()).collect::<Vec<_>>(),
            "deadLetters": dead,
        })))
    })
    .await
    .map_err(blocking_err)?
}

#[derive(Deserialize)]
struct SeqQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<SeqQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let list = s.store.dead_letters(q.after.unwrap_or(0), limit)?;
        let next = (list.len() == limit)
            .then(|| list.last().map(|d| d.seq))
            .flatten();
        Ok(Json(json!({"deadLetters": list, "next": next})))
    })
    .await
    .map_err(blocking_err)?
}

async fn event_log(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<SeqQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
        let list = s.store.log_after(q.after.unwrap_or(0), limit)?;
        let next = (list.len() == limit)
            .then(|| list.last().map(|e| e.seq))
            .flatten();
        Ok(Json(json!({
            "events": list.iter().map(|e| {
                let mut v = e.event.to_segment_json();
                v["seq"] = json!(e.seq);
                v
            }).collect::<Vec<_>>(),
            "next": next,
        })))
    })
    .await
    .map_err(blocking_err)?
}

async fn stats(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(json!({
        "approximate": state.store.approximate_counts(),
        "diskBytes": state.store.disk_bytes(),
        "queue": state.ingest.queue_len(),
    })))
}
