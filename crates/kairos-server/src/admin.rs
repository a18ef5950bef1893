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

pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// Runs store reads on the blocking pool (fjall calls block on IO).
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| ApiError::new(ErrorCode::StorageFailure, format!("read task failed: {e}")))?
}

/// The cursor of the next page: the last item's, when the page is full.
pub(crate) fn next_cursor<T, C>(page: &[T], limit: usize, cursor: impl Fn(&T) -> C) -> Option<C> {
    if page.len() == limit {
        page.last().map(cursor)
    } else {
        None
    }
}

/// Resolves a path id: a Kairos id (`p_...`), else a userId.
pub(crate) fn resolve(state: &AppState, id: &str) -> Result<Profile, ApiError> {
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
    blocking(&state, move |s| {
        let now = (s.clock)();
        let scoring = s.store.scoring();
        let Some(key) = key else {
            let limit = q.limit.unwrap_or(50).clamp(1, 1000);
            let page = s.store.profiles_after(after, limit)?;
            return Ok(Json(json!({
                "profiles": page.iter().map(|p| p.view_scored(&scoring, now)).collect::<Vec<_>>(),
                "next": next_cursor(&page, limit, |p| p.id.to_string()),
            })));
        };
        let not_found = || {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no profile with {} {:?}", key.kind.label(), key.value),
            )
        };
        let id = s.store.lookup(&key)?.ok_or_else(not_found)?;
        let p = s.store.profile(id)?.ok_or_else(not_found)?;
        Ok(Json(p.view_scored(&scoring, now)))
    })
    .await
}

async fn get_profile(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let scoring = s.store.scoring();
        Ok(Json(resolve(s, &id)?.view_scored(&scoring, (s.clock)())))
    })
    .await
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
    let after = q.after.as_deref().map(parse_cursor).transpose()?;
    blocking(&state, move |s| {
        let p = resolve(s, &id)?;
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let events = s.store.profile_events(p.id, after, limit)?;
        Ok(Json(json!({
            "profile": p.id.to_string(),
            "events": events.iter().map(|e| e.event.to_segment_json()).collect::<Vec<_>>(),
            "next": next_cursor(&events, limit, |e| format!("{}:{}", e.event.timestamp, e.seq)),
        })))
    })
    .await
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
    let profile = blocking(&state, move |s| resolve(s, &id)).await?;
    let suppress = q.suppress.unwrap_or(state.config.ingest.suppress_erased);
    let rx = state.ingest.erase(profile.id, suppress, (state.clock)())?;
    let erased = rx
        .await
        .map_err(|_| ApiError::new(ErrorCode::StorageFailure, "the writer stopped"))??
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "profile not found"))?;
    // Recommendations hold the person's recent products in memory: drop them now.
    state.recs.forget(erased.profile.0);
    if erased.profile != profile.id {
        state.recs.forget(profile.id.0);
    }
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
    blocking(&state, move |s| {
        let p = resolve(s, &id)?;
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
        let now = (s.clock)();
        Ok(Json(json!({
            "exportedAt": kairos_core::time::format_timestamp(now),
            "profile": p.view_scored(&s.store.scoring(), now),
            "segmentChanges": s.store.profile_changes(p.id, usize::MAX)?,
            "events": events.iter().map(|e| e.event.to_segment_json()).collect::<Vec<_>>(),
            "deadLetters": dead,
        })))
    })
    .await
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
    blocking(&state, move |s| {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let list = s.store.dead_letters(q.after.unwrap_or(0), limit)?;
        let next = next_cursor(&list, limit, |d| d.seq);
        Ok(Json(json!({"deadLetters": list, "next": next})))
    })
    .await
}

async fn event_log(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<SeqQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
        let list = s.store.log_after(q.after.unwrap_or(0), limit)?;
        let events: Vec<Value> = list
            .iter()
            .map(|e| {
                let mut v = e.event.to_segment_json();
                v["seq"] = json!(e.seq);
                v
            })
            .collect();
        Ok(Json(
            json!({"events": events, "next": next_cursor(&list, limit, |e| e.seq)}),
        ))
    })
    .await
}

async fn stats(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(json!({
        "approximate": state.store.approximate_counts(),
        "diskBytes": state.store.disk_bytes(),
        "queue": state.ingest.queue_len(),
    })))
}
