//! Send-time optimization over HTTP: the population's and each segment's engagement hours
//! (the priors each person's estimate is shrunk toward), refreshed in the background from
//! every profile, and `GET /v1/profiles/{id}/send-time?within=24h`: the best moment to
//! reach a person, the runner-up, and how much of it is their own history.

use crate::admin::{authorize, blocking, resolve};
use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use kairos_core::sendtime::{advise, posterior, slots, Priors, PriorsBuilder, Slot};
use kairos_core::time::{format_timestamp, DAY, HOUR};
use kairos_core::Millis;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};

type S = State<Arc<AppState>>;

/// The priors in force, with when they were computed.
#[derive(Default)]
pub struct SendTime {
    priors: RwLock<Arc<(Priors, Millis)>>,
}

impl SendTime {
    pub fn priors(&self) -> Arc<(Priors, Millis)> {
        self.priors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Recomputes the priors from every stored profile (one pass, a page at a time).
    pub fn refresh(&self, state: &AppState) -> Result<u64, kairos_store::StoreError> {
        let now = (state.clock)();
        let mut b = PriorsBuilder::default();
        let mut after = None;
        loop {
            let page = state.store.profiles_after(after, 1000)?;
            let Some(last) = page.last().map(|p| p.id) else {
                break;
            };
            for p in &page {
                b.add(&p.engagement, p.derived.primary.as_deref(), now);
            }
            after = Some(last);
        }
        let priors = b.build();
        let people = priors.people;
        // Campaigns with `send_at = "optimal"` decide inside the writer with these.
        state
            .store
            .scoring()
            .set_send_time_priors(Arc::new(priors.clone()));
        *self.priors.write().unwrap_or_else(|p| p.into_inner()) = Arc::new((priors, now));
        Ok(people)
    }
}

/// Refreshes the priors at start and every `interval` after.
pub async fn run_priors(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let s = state.clone();
        let res = tokio::task::spawn_blocking(move || s.send_time.refresh(&s)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!("send-time priors: {e}");
        }
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/profiles/{id}/send-time", get(send_time))
        .route("/v1/send-time/priors", get(priors).post(refresh_priors))
        .route("/v1/send-time/receptive", get(receptive))
}

#[derive(Deserialize)]
struct SendTimeQuery {
    within: Option<String>,
}

fn slot_json(s: &Slot) -> Value {
    let days = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    json!({
        "at": format_timestamp(s.at),
        "local": format!("{} {:02}:00", days[(s.local_hour_of_week / 24) as usize % 7], s.local_hour_of_week % 24),
        "local_hour_of_week": s.local_hour_of_week,
        "probability": s.probability,
        "lift": s.lift,
        "share": s.share,
    })
}

async fn send_time(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SendTimeQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let within = match q.within.as_deref() {
        None => DAY,
        Some(w) => kairos_rules::parse_duration(w)
            .ok()
            .filter(|&d| (HOUR..=30 * DAY).contains(&d))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("within: {w:?} is not a duration from 1h to 30d"),
                )
                .field("within")
            })?,
    };
    blocking(&state, move |s| {
        let p = resolve(s, &id)?;
        let now = (s.clock)();
        let priors = s.send_time.priors();
        let segment = p.derived.primary.as_deref();
        let prior = priors.0.prior(segment);
        let tz = p.state.timezone();
        let a = advise(
            &p.engagement,
            &prior,
            tz,
            p.state.email.delivered,
            now,
            within,
        );
        let prior_source = match segment.filter(|s| priors.0.segments.contains_key(*s)) {
            Some(seg) => format!(
                "segment {seg} pooled with the population ({} people)",
                priors.0.people
            ),
            None if priors.0.people > 0 => format!("the population ({} people)", priors.0.people),
            None => "uniform (no engagement known yet)".to_string(),
        };
        Ok(Json(json!({
            "profile": p.id.to_string(),
            "now": format_timestamp(now),
            "within": format_timestamp(now + within),
            "time_zone": a.time_zone,
            "best": slot_json(&a.best),
            "runner_up": a.runner_up.as_ref().map(slot_json),
            "explanation": {
                "personal_share": a.personal_share,
                "prior_share": 1.0 - a.personal_share,
                "prior": prior_source,
                "engagement_weight": a.engagement_weight,
                "human_opens": a.human_opens,
                "machine_opens_ignored": a.machine_opens,
                "open_rate": a.open_rate,
            },
        })))
    })
    .await
}

/// Recomputes the priors now (they refresh every 10 minutes by themselves).
async fn refresh_priors(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, |s| Ok(s.send_time.refresh(s)?)).await?;
    priors(State(state), headers).await
}

async fn priors(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let p = state.send_time.priors();
    let peak = |d: &[f64]| -> Value {
        let mut idx: Vec<usize> = (0..d.len()).collect();
        idx.sort_by(|a, b| d[*b].total_cmp(&d[*a]));
        json!(idx
            .iter()
            .take(5)
            .map(|&h| json!({"local_hour_of_week": h, "share": d[h]}))
            .collect::<Vec<_>>())
    };
    Ok(Json(json!({
        "computed_at": format_timestamp(p.1),
        "people": p.0.people,
        "population_top_hours": peak(&p.0.population),
        "segments": p.0.segments.iter().map(|(k, v)| (k.clone(), peak(v))).collect::<serde_json::Map<String, Value>>(),
    })))
}

#[derive(Deserialize)]
struct ReceptiveQuery {
    segment: Option<String>,
    /// How much better than an average hour the current one must be (default 2).
    min_lift: Option<f64>,
    limit: Option<usize>,
    after: Option<String>,
}

/// The micro-audience of people receptive now: those (in `segment`, or anyone) for whom
/// the current hour is at least `min_lift` times an average hour. Paged over the segment
/// (or all profiles) by Kairos id; `scanned` says how far the page looked.
async fn receptive(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<ReceptiveQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let min_lift = q.min_lift.unwrap_or(2.0);
    if !(min_lift > 0.0 && min_lift <= 168.0) {
        return Err(
            ApiError::new(ErrorCode::InvalidParameter, "min_lift: must be in (0, 168]")
                .field("min_lift"),
        );
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<kairos_core::ProfileId>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                "after: expected a Kairos id (p_...)",
            )
            .field("after")
        })?),
    };
    blocking(&state, move |s| {
        let scoring = s.store.scoring();
        if let Some(seg) = &q.segment {
            if !scoring.segments.iter().any(|x| &x.name == seg) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no segment named {seg:?}"),
                ));
            }
        }
        let now = (s.clock)();
        let priors = s.send_time.priors();
        // Look at up to ten pages' worth of people for one page of receptive ones.
        let budget = limit * 10;
        let ids: Vec<kairos_core::ProfileId> = match &q.segment {
            Some(seg) => s
                .store
                .segment_members(seg, after, budget)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            None => s
                .store
                .profiles_after(after, budget)?
                .into_iter()
                .map(|p| p.id)
                .collect(),
        };
        let mut people = Vec::new();
        let mut last = None;
        for id in ids {
            last = Some(id);
            let Some(p) = s.store.profile(id)? else {
                continue;
            };
            let prior = priors.0.prior(p.derived.primary.as_deref());
            let tz = p.state.timezone();
            let Some(here) = slots(&p.engagement, &prior, tz, now, 1).into_iter().next() else {
                continue;
            };
            if here.lift >= min_lift {
                let (_, personal_share, _) = posterior(&p.engagement, &prior, now);
                people.push(json!({
                    "id": p.id.to_string(),
                    "lift": here.lift,
                    "local": slot_json(&here)["local"],
                    "personal_share": personal_share,
                }));
                if people.len() >= limit {
                    break;
                }
            }
        }
        Ok(Json(json!({
            "now": format_timestamp(now),
            "min_lift": min_lift,
            "people": people,
            "next": last.map(|id| id.to_string()),
        })))
    })
    .await
}
