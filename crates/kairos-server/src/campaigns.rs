//! Campaigns over HTTP: definitions (checked when saved, 400 naming the field), the global
//! messaging rules (caps, quiet hours), each campaign's decision stream, and its report with
//! A/B statistics. Admin token only.

use crate::abtest::{compare, Rate};
use crate::admin::{authorize, blocking};
use crate::error::{ApiError, ErrorCode};
use crate::scoring::{changes_page, parse_body, redefine, ChangesQuery};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use kairos_core::campaign::{CampaignDef, MessagingDef};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type S = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/campaigns", get(list_campaigns))
        .route(
            "/v1/campaigns/{name}",
            get(get_campaign).put(put_campaign).delete(delete_campaign),
        )
        .route("/v1/campaigns/{name}/report", get(report))
        .route("/v1/campaigns/{name}/changes", get(changes))
        .route("/v1/messaging", get(get_messaging).put(put_messaging))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no campaign named {name:?}"))
}

async fn list_campaigns(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let scoring = state.store.scoring();
    let list: Vec<Value> = scoring
        .campaigns
        .list
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "description": c.description,
                "enabled": c.enabled,
                "priority": c.priority,
                "channel": c.channel,
                "purpose": c.purpose.as_str(),
                "definition": scoring.definitions.campaigns.get(&c.name),
            })
        })
        .collect();
    Ok(Json(json!({"campaigns": list})))
}

async fn get_campaign(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let scoring = state.store.scoring();
    let def = scoring
        .definitions
        .campaigns
        .get(&name)
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(json!({"name": name, "definition": def})))
}

async fn put_campaign(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let def: CampaignDef = parse_body(&body)?;
    let n = name.clone();
    let warnings = redefine(&state, move |d| {
        d.campaigns.insert(n, def);
        Ok(())
    })
    .await?;
    let prefix = format!("campaigns.{name}.");
    Ok(Json(json!({
        "success": true,
        "name": name,
        "warnings": warnings.into_iter().filter(|w| w.starts_with(&prefix)).collect::<Vec<_>>(),
    })))
}

async fn delete_campaign(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let n = name.clone();
    redefine(&state, move |d| {
        d.campaigns
            .remove(&n)
            .map(|_| ())
            .ok_or_else(|| not_found(&n))
    })
    .await?;
    Ok(Json(json!({"success": true, "deleted": name})))
}

async fn get_messaging(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(
        json!({"messaging": state.store.scoring().definitions.messaging}),
    ))
}

async fn put_messaging(
    State(state): S,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let def: MessagingDef = parse_body(&body)?;
    redefine(&state, move |d| {
        d.messaging = def;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"success": true})))
}

/// Every decision and engagement of one campaign after a cursor, oldest first.
async fn changes(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    changes_page(&state, "campaign", name, q).await
}

/// Significance and confidence a winner needs, and the sends each side needs first.
const ALPHA: f64 = 0.05;
const WIN_PROBABILITY: f64 = 0.95;
const MIN_SENDS: u64 = 100;

fn rate_json(r: &Rate) -> Value {
    json!({"count": r.successes, "of": r.trials, "rate": r.rate, "low": r.low, "high": r.high})
}

/// Per variant: sends, deliveries, unique opens and clicks, conversions and revenue, with
/// rates and 95% intervals; each variant against the first one (the control) and, when a
/// holdout is configured, every variant's conversions against the held-out group's.
async fn report(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let scoring = s.store.scoring();
        let def = scoring.campaigns.get(&name);
        let stats = s.store.campaign_stats(&name)?;
        if def.is_none() && stats.is_empty() {
            return Err(not_found(&name));
        }
        Ok(Json(campaign_report(&name, def, &stats)))
    })
    .await
}

/// The report of one campaign from its counters (see [`kairos_store::Store::campaign_stats`]).
pub fn campaign_report(
    name: &str,
    def: Option<&kairos_core::campaign::CompiledCampaign>,
    stats: &[(String, String, u64, f64)],
) -> Value {
    let mut by_variant: BTreeMap<&str, BTreeMap<&str, (u64, f64)>> = BTreeMap::new();
    for (variant, metric, n, sum) in stats {
        by_variant
            .entry(variant.as_str())
            .or_default()
            .insert(metric.as_str(), (*n, *sum));
    }
    let count = |v: &str, m: &str| by_variant.get(v).and_then(|x| x.get(m)).map_or(0, |x| x.0);
    let sum = |v: &str, m: &str| {
        by_variant
            .get(v)
            .and_then(|x| x.get(m))
            .map_or(0.0, |x| x.1)
    };
    // Variants in definition order (the first is the control), then any that were removed.
    let mut order: Vec<String> = def
        .map(|c| {
            let mut names = Vec::new();
            for step in &c.steps {
                for v in &step.variants {
                    if !names.contains(&v.name) {
                        names.push(v.name.clone());
                    }
                }
            }
            names
        })
        .unwrap_or_default();
    for v in by_variant.keys() {
        if !v.is_empty() && *v != "holdout" && !order.iter().any(|o| o == v) {
            order.push(v.to_string());
        }
    }
    let metrics = ["opened", "clicked", "converted"];
    let rates = |v: &str| -> Vec<Rate> {
        let sends = count(v, "queued");
        metrics
            .iter()
            .map(|m| Rate::new(count(v, m), sends))
            .collect()
    };
    let control = order.first().cloned();
    let holdout_n = count("holdout", "holdout");
    let holdout_conv = Rate::new(count("holdout", "converted"), holdout_n);
    let mut winner: Option<(String, f64)> = None;
    let variants: Vec<Value> = order
        .iter()
        .map(|v| {
            let r = rates(v);
            let sends = count(v, "queued");
            let revenue = sum(v, "converted");
            let mut out = json!({
                "variant": v,
                "sends": sends,
                // Accepted by the channel (webhook receiver, SMTP relay), and given up on.
                "sent": count(v, "sent"),
                "deadLetters": count(v, "dead"),
                "delivered": count(v, "delivered"),
                "bounced": count(v, "bounced"),
                "unsubscribed": count(v, "unsubscribed"),
                "complained": count(v, "complained"),
                "opens": rate_json(&r[0]),
                "clicks": rate_json(&r[1]),
                "conversions": rate_json(&r[2]),
                "revenue": revenue,
                "revenuePerSend": if sends > 0 { revenue / sends as f64 } else { 0.0 },
            });
            if let Some(c) = control.as_deref().filter(|c| *c != v) {
                let base = rates(c);
                let mut vs = serde_json::Map::new();
                for (i, m) in metrics.iter().enumerate() {
                    if let Some(cmp) = compare(&r[i], &base[i]) {
                        vs.insert(m.to_string(), comparison_json(&cmp));
                        // The winner is judged on conversions when the campaign counts
                        // them, else on clicks.
                        let deciding = if def.is_some_and(|d| d.conversion.is_some()) {
                            "converted"
                        } else {
                            "clicked"
                        };
                        if *m == deciding
                            && cmp.p_value < ALPHA
                            && cmp.probability_to_beat > WIN_PROBABILITY
                            && r[i].trials >= MIN_SENDS
                            && base[i].trials >= MIN_SENDS
                            && winner
                                .as_ref()
                                .is_none_or(|(_, p)| cmp.probability_to_beat > *p)
                        {
                            winner = Some((v.clone(), cmp.probability_to_beat));
                        }
                    }
                }
                out["vsControl"] = Value::Object(vs);
            }
            if holdout_n > 0 {
                if let Some(cmp) = compare(&r[2], &holdout_conv) {
                    out["vsHoldout"] = comparison_json(&cmp);
                }
            }
            out
        })
        .collect();
    let decisions: BTreeMap<&str, u64> = ["entered", "exited", "suppressed", "deferred", "queued"]
        .iter()
        .map(|m| {
            (
                *m,
                by_variant
                    .values()
                    .filter_map(|x| x.get(m))
                    .map(|x| x.0)
                    .sum(),
            )
        })
        .collect();
    json!({
        "campaign": name,
        "control": control,
        "decisions": decisions,
        "variants": variants,
        "holdout": if holdout_n > 0 {
            json!({"people": holdout_n, "conversions": rate_json(&holdout_conv), "revenue": sum("holdout", "converted")})
        } else {
            Value::Null
        },
        "winner": winner.map(|(v, _)| v),
        "method": format!(
            "two-proportion z-test (pooled), 95% intervals; a winner needs p < {ALPHA}, P(beats control) > {WIN_PROBABILITY} and {MIN_SENDS} sends on each side"
        ),
    })
}

/// For campaigns with `auto_winner`: once the report names a winner, every later send
/// goes to it (the definition gets `winner`, recorded like any edit). Checked every minute.
pub async fn run_auto_winner(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pick_winners(&state).await {
            tracing::warn!("automatic winner check failed: {}", e.message);
        }
    }
}

/// Sets `winner` on every `auto_winner` campaign whose report has one; returns them.
pub async fn pick_winners(state: &Arc<AppState>) -> Result<Vec<(String, String)>, ApiError> {
    let s = state.clone();
    let found = blocking(state, move |s2| {
        let scoring = s2.store.scoring();
        let mut out = Vec::new();
        for c in &scoring.campaigns.list {
            if !c.auto_winner || c.winner.is_some() {
                continue;
            }
            let stats = s2.store.campaign_stats(&c.name)?;
            if let Some(w) = campaign_report(&c.name, Some(c), &stats)["winner"].as_str() {
                out.push((c.name.clone(), w.to_string()));
            }
        }
        Ok(out)
    })
    .await?;
    for (campaign, winner) in &found {
        let (c, w) = (campaign.clone(), winner.clone());
        redefine(&s, move |d| {
            if let Some(def) = d.campaigns.get_mut(&c) {
                def.winner = Some(w);
            }
            Ok(())
        })
        .await?;
        tracing::info!("campaign {campaign}: variant {winner} won; every send goes to it now");
    }
    Ok(found)
}

fn comparison_json(c: &crate::abtest::Comparison) -> Value {
    json!({
        "difference": c.difference,
        "low": c.low,
        "high": c.high,
        "lift": c.lift,
        "z": c.z,
        "pValue": c.p_value,
        "probabilityToBeat": c.probability_to_beat,
        "significant": c.p_value < ALPHA,
    })
}
