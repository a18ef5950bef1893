//! Scores and segments over HTTP: definitions (checked when saved, 400 with line:column),
//! segment sizes, members and change streams, backfill progress, and per-profile score
//! explanations. Admin token only.

use crate::admin::{authorize, blocking, next_cursor, resolve};
use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use kairos_core::{Definitions, ProfileId, ScoreDef, Scoring, SegmentDef};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type S = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/scores", get(list_scores))
        .route(
            "/v1/scores/{name}",
            get(get_score).put(put_score).delete(delete_score),
        )
        .route("/v1/segments", get(list_segments))
        .route(
            "/v1/segments/{name}",
            get(get_segment).put(put_segment).delete(delete_segment),
        )
        .route("/v1/segments/{name}/members", get(segment_members))
        .route("/v1/segments/{name}/changes", get(segment_changes))
        .route("/v1/backfill", get(backfill))
        .route("/v1/profiles/{id}/scores", get(profile_scores))
        .route("/v1/profiles/{id}/scores/{name}", get(explain_score))
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no {what} named {name:?}"))
}

fn backfill_json(state: &AppState) -> Value {
    match state.ingest.backfill() {
        Some(b) => json!({
            "version": format!("{:016x}", b.version),
            "done": b.done,
            "total": b.total,
            "finished": b.finished_at.is_some(),
            "startedAt": kairos_core::time::format_timestamp(b.started_at),
            "finishedAt": b.finished_at.map(kairos_core::time::format_timestamp),
        }),
        None => Value::Null,
    }
}

/// Applies `edit` to the definitions in force, checks and stores the result, and starts the
/// backfill. Edits are serialised so two concurrent PUTs cannot lose one another.
pub(crate) async fn redefine(
    state: &Arc<AppState>,
    edit: impl FnOnce(&mut Definitions) -> Result<(), ApiError> + Send + 'static,
) -> Result<Vec<String>, ApiError> {
    let _guard = state.definitions_lock.lock().await;
    let s = state.clone();
    let scoring = blocking(state, move |_| {
        let mut defs = s.store.scoring().definitions.clone();
        edit(&mut defs)?;
        let known = s.store.known_events()?;
        Scoring::compile(&defs, Some(&known))
            .map_err(|e| ApiError::new(ErrorCode::InvalidDefinition, e.to_string()).field(e.path()))
    })
    .await?;
    let warnings = scoring.warnings.clone();
    let done = state.ingest.define(scoring, (state.clock)())?;
    done.await
        .map_err(|_| ApiError::new(ErrorCode::StorageFailure, "the writer stopped"))??;
    Ok(warnings)
}

/// The warnings about the definition just saved (the others are listed with their own).
fn own_warnings(all: Vec<String>, prefix: &str) -> Vec<String> {
    all.into_iter().filter(|w| w.starts_with(prefix)).collect()
}

pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("body: not a valid definition: {e}"),
        )
    })
}

async fn list_scores(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let scoring = state.store.scoring();
    Ok(Json(json!({
        "scores": scoring.definitions.scores,
        "warnings": scoring.warnings,
    })))
}

async fn get_score(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let scoring = state.store.scoring();
    let def = scoring
        .definitions
        .scores
        .get(&name)
        .ok_or_else(|| not_found("score", &name))?;
    Ok(Json(json!({"name": name, "definition": def})))
}

/// Scores or segments: where a definition of each kind lives in [`Definitions`].
#[derive(Clone, Copy)]
enum Kind {
    Score,
    Segment,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Score => "score",
            Kind::Segment => "segment",
        }
    }

    fn path(self, name: &str) -> String {
        match self {
            Kind::Score => format!("scores.{name}."),
            Kind::Segment => format!("segments.{name}."),
        }
    }
}

/// Saves a definition of `kind` under `name`: 400 when it does not check, else 200 with
/// its warnings and the backfill started for it.
async fn put_definition(
    state: Arc<AppState>,
    kind: Kind,
    name: String,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let edit: Box<dyn FnOnce(&mut Definitions) + Send> = match kind {
        Kind::Score => {
            let def: ScoreDef = parse_body(body)?;
            let n = name.clone();
            Box::new(move |d| {
                d.scores.insert(n, def);
            })
        }
        Kind::Segment => {
            let def: SegmentDef = parse_body(body)?;
            let n = name.clone();
            Box::new(move |d| {
                d.segments.insert(n, def);
            })
        }
    };
    let warnings = redefine(&state, move |d| {
        edit(d);
        Ok(())
    })
    .await?;
    Ok(Json(json!({
        "success": true,
        "name": name,
        "warnings": own_warnings(warnings, &kind.path(&name)),
        "backfill": backfill_json(&state),
    })))
}

async fn delete_definition(
    state: Arc<AppState>,
    kind: Kind,
    name: String,
) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    redefine(&state, move |d| {
        let removed = match kind {
            Kind::Score => d.scores.remove(&n).is_some(),
            Kind::Segment => d.segments.remove(&n).is_some(),
        };
        removed
            .then_some(())
            .ok_or_else(|| not_found(kind.label(), &n))
    })
    .await?;
    Ok(Json(json!({"success": true, "deleted": name})))
}

async fn put_score(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    put_definition(state, Kind::Score, name, &body).await
}

async fn delete_score(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    delete_definition(state, Kind::Score, name).await
}

async fn list_segments(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, |s| {
        let scoring = s.store.scoring();
        let mut list = Vec::new();
        for seg in &scoring.segments {
            list.push(json!({
                "name": seg.name,
                "description": seg.description,
                "rule": seg.program.source,
                "priority": seg.priority,
                "size": s.store.segment_size(&seg.name)?,
            }));
        }
        Ok(Json(json!({
            "segments": list,
            "backfill": backfill_json(s),
            "warnings": scoring.warnings,
        })))
    })
    .await
}

async fn get_segment(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let scoring = s.store.scoring();
        let def = scoring
            .definitions
            .segments
            .get(&name)
            .ok_or_else(|| not_found("segment", &name))?;
        Ok(Json(json!({
            "name": name,
            "definition": def,
            "size": s.store.segment_size(&name)?,
        })))
    })
    .await
}

async fn put_segment(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    put_definition(state, Kind::Segment, name, &body).await
}

async fn delete_segment(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    delete_definition(state, Kind::Segment, name).await
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn segment_members(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let after = match q.after.as_deref() {
        Some(a) => Some(a.parse::<ProfileId>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                "after: expected the 'next' cursor of a previous page",
            )
            .field("after")
        })?),
        None => None,
    };
    blocking(&state, move |s| {
        if s.store.scoring().segment(&name).is_none() {
            return Err(not_found("segment", &name));
        }
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let page = s.store.segment_members(&name, after, limit)?;
        Ok(Json(json!({
            "segment": name,
            "members": page.iter().map(|(id, since)| json!({
                "profile": id.to_string(),
                "since": kairos_core::time::format_timestamp(*since),
            })).collect::<Vec<_>>(),
            "next": next_cursor(&page, limit, |(id, _)| id.to_string()),
        })))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct ChangesQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

/// A page of one change stream after cursor `since` (the `seq` of the last change seen; 0
/// or absent for the beginning), as `{<label>: name, changes, next}`; poll with `next`.
pub(crate) async fn changes_page(
    state: &Arc<AppState>,
    label: &'static str,
    name: String,
    q: ChangesQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(state, move |s| {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let since = q.since.unwrap_or(0);
        let list = s.store.changes(&format!("{label}:{name}"), since, limit)?;
        let next = list.last().and_then(|c| c["seq"].as_u64()).unwrap_or(since);
        Ok(Json(json!({label: name, "changes": list, "next": next})))
    })
    .await
}

/// Enter and exit records of one segment.
async fn segment_changes(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    changes_page(&state, "segment", name, q).await
}

async fn backfill(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(json!({"backfill": backfill_json(&state)})))
}

async fn profile_scores(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let p = resolve(s, &id)?;
        let scoring = s.store.scoring();
        let mut v = p.derived.view(&scoring, (s.clock)());
        v["profile"] = json!(p.id.to_string());
        v["timeline"] = json!(s.store.profile_changes(p.id, 100)?);
        Ok(Json(v))
    })
    .await
}

async fn explain_score(
    State(state): S,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let p = resolve(s, &id)?;
        let scoring = s.store.scoring();
        let mut v = p
            .derived
            .explain(&scoring, &name, (s.clock)())
            .ok_or_else(|| not_found("score", &name))?;
        v["profile"] = json!(p.id.to_string());
        Ok(Json(v))
    })
    .await
}
