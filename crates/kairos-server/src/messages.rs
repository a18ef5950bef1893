//! Message templates over HTTP (checked when saved, previewed against a profile or sample
//! data), the variables a template sees, signed unsubscribe links, and the outbox and
//! dead-letter API. Rendering is shared with the delivery worker (see [`crate::delivery`]).

use crate::admin::{authorize, blocking, next_cursor, resolve};
use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use kairos_core::time::format_timestamp;
use kairos_core::{Millis, Profile, Scoring};
use kairos_store::OutboxRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

type S = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/templates", get(list_templates))
        .route(
            "/v1/templates/{name}",
            get(get_template).put(put_template).delete(delete_template),
        )
        .route("/v1/templates/{name}/preview", post(preview))
        .route("/v1/outbox", get(outbox))
        .route("/v1/outbox/dead", get(dead))
        .route("/v1/outbox/dead/{id}/redrive", post(redrive))
        .route("/v1/messages/{id}", get(message))
        .route("/v1/unsubscribe", get(unsubscribe_page).post(unsubscribe))
}

/// A stored template: a subject and an HTML and/or a text body, each Liquid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateDef {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub description: String,
}

/// A template's parts, parsed.
pub struct Compiled {
    pub subject: kairos_templates::Template,
    pub html: Option<kairos_templates::Template>,
    pub text: Option<kairos_templates::Template>,
}

/// Parses every part; the error names the part (`html`) and says line and column.
pub fn compile(def: &TemplateDef) -> Result<Compiled, ApiError> {
    let part = |field: &str, src: &str| {
        kairos_templates::Template::parse(src).map_err(|e| {
            ApiError::new(ErrorCode::InvalidTemplate, format!("{field}: {e}")).field(field)
        })
    };
    if def.html.is_none() && def.text.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidTemplate,
            "give an `html` or a `text` body (or both)",
        )
        .field("html"));
    }
    Ok(Compiled {
        subject: part("subject", &def.subject)?,
        html: def.html.as_deref().map(|h| part("html", h)).transpose()?,
        text: def.text.as_deref().map(|t| part("text", t)).transpose()?,
    })
}

/// What a render produced, with the variables that were not there.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RenderedMessage {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub missing: Vec<String>,
}

pub fn render(t: &Compiled, context: &Value) -> Result<RenderedMessage, String> {
    let mut missing = Vec::new();
    let mut one = |tpl: &kairos_templates::Template, part: &str| -> Result<String, String> {
        let r = tpl.render(context).map_err(|e| format!("{part}: {e}"))?;
        for m in r.missing {
            if !missing.contains(&m) {
                missing.push(m);
            }
        }
        Ok(r.output)
    };
    let subject = one(&t.subject, "subject")?;
    let html = t.html.as_ref().map(|h| one(h, "html")).transpose()?;
    let text = t.text.as_ref().map(|x| one(x, "text")).transpose()?;
    Ok(RenderedMessage {
        subject: subject.trim().to_string(),
        html,
        text,
        missing,
    })
}

/// The variables a template sees for one person: `profile` (traits, with the computed
/// state beside them: `orders`, `lifetime_revenue`, `cart`, ...), `scores` (value and tier
/// by name), `segments` (names), `event` (the trigger's properties), `campaign`,
/// `unsubscribe_url`, and `recommendations` (empty here; the callers that render for a
/// person fill it from the recommendation model, see [`crate::recs::template_variable`]).
pub fn context(
    profile: Option<&Profile>,
    scoring: &Scoring,
    now: Millis,
    event: Value,
    campaign: Value,
    unsubscribe_url: Option<String>,
) -> Value {
    let mut p = Map::new();
    let mut scores = Map::new();
    let mut segments = Vec::new();
    if let Some(profile) = profile {
        for (k, v) in profile.state.traits.iter() {
            p.insert(k.to_string(), v.value.0.clone());
        }
        if let Value::Object(state) = profile.state.view(now) {
            for (k, v) in state {
                p.insert(k, v);
            }
        }
        p.insert("id".into(), json!(profile.id.to_string()));
        if let Some(e) = profile.email() {
            p.insert("email".into(), json!(e));
        }
        let items: Vec<Value> = profile
            .state
            .cart
            .items()
            .iter()
            .map(|i| {
                json!({
                    "product_id": i.product_id,
                    "name": i.name,
                    "category": i.category,
                    "quantity": i.quantity,
                    "price": i.price_micros as f64 / 1e6,
                })
            })
            .collect();
        p.insert(
            "cart".into(),
            json!({"items": items, "value": profile.state.cart.value_micros() as f64 / 1e6}),
        );
        let now_scores = profile.derived.scores_at(scoring, now);
        for (sc, s) in scoring.scores.iter().zip(now_scores) {
            scores.insert(sc.name.clone(), json!({"value": s.value, "tier": s.tier}));
        }
        segments = profile
            .derived
            .segments
            .keys()
            .map(str::to_string)
            .collect();
    }
    json!({
        "profile": p,
        "scores": scores,
        "segments": segments,
        "event": event,
        "campaign": campaign,
        "unsubscribe_url": unsubscribe_url,
        "recommendations": [],
    })
}

/// The render context of an outbox row, with the person as they are now.
pub fn row_context(state: &AppState, row: &OutboxRow, profile: Option<&Profile>) -> Value {
    let scoring = state.store.scoring();
    let link = unsubscribe_link(state, row.profile, &row.purpose, &row.message_id);
    let mut ctx = context(
        profile,
        &scoring,
        (state.clock)(),
        row.event.clone(),
        json!({"name": row.campaign, "variant": row.variant, "step": row.step, "message_id": row.message_id}),
        link,
    );
    ctx["recommendations"] = crate::recs::template_variable(state, profile);
    ctx
}

async fn list_templates(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, |s| {
        let list = s.store.templates()?;
        Ok(Json(json!({
            "templates": list.into_iter().map(|(name, t)| json!({"name": name, "template": t})).collect::<Vec<_>>()
        })))
    })
    .await
}

async fn get_template(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let t = s
            .store
            .template(&name)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no template {name:?}")))?;
        Ok(Json(json!({"name": name, "template": t})))
    })
    .await
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("name: `{name}` is not a valid name: use 1-64 letters, digits, `_` or `-`"),
        )
        .field("name"))
    }
}

async fn put_template(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    check_name(&name)?;
    let def: TemplateDef = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("body: not a valid template: {e}"),
        )
    })?;
    compile(&def)?;
    blocking(&state, move |s| {
        s.store.put_template(&name, &json!(def))?;
        Ok(Json(json!({"success": true, "name": name})))
    })
    .await
}

async fn delete_template(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        if !s.store.delete_template(&name)? {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no template {name:?}"),
            ));
        }
        Ok(Json(json!({"success": true, "deleted": name})))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PreviewBody {
    /// A Kairos profile id or userId to render for.
    profile: Option<String>,
    /// Sample variables instead of (or over) a profile's: `{"profile": {"first_name": "Ada"}}`.
    data: Option<Map<String, Value>>,
    /// The trigger event's properties.
    event: Option<Value>,
}

/// Renders a stored template for a profile or sample data and lists the variables that
/// were missing (they rendered as empty).
async fn preview(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let req: PreviewBody = if body.is_empty() {
        PreviewBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("body: not a preview request: {e}"),
            )
        })?
    };
    blocking(&state, move |s| {
        let stored = s
            .store
            .template(&name)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no template {name:?}")))?;
        let def: TemplateDef = serde_json::from_value(stored)
            .map_err(|e| ApiError::new(ErrorCode::StorageFailure, format!("template: {e}")))?;
        let compiled = compile(&def)?;
        let profile = req.profile.as_deref().map(|p| resolve(s, p)).transpose()?;
        let scoring = s.store.scoring();
        let link = profile
            .as_ref()
            .and_then(|p| unsubscribe_link(s, p.id.0, "marketing", "preview"));
        let mut ctx = context(
            profile.as_ref(),
            &scoring,
            (s.clock)(),
            req.event.unwrap_or_else(|| json!({})),
            json!({"name": "preview", "variant": "preview"}),
            link,
        );
        ctx["recommendations"] = crate::recs::template_variable(s, profile.as_ref());
        if let (Some(data), Value::Object(c)) = (req.data, &mut ctx) {
            for (k, v) in data {
                match (c.get_mut(&k), v) {
                    (Some(Value::Object(have)), Value::Object(more)) => have.extend(more),
                    (_, v) => {
                        c.insert(k, v);
                    }
                }
            }
        }
        let out =
            render(&compiled, &ctx).map_err(|e| ApiError::new(ErrorCode::InvalidTemplate, e))?;
        Ok(Json(json!({
            "subject": out.subject,
            "html": out.html,
            "text": out.text,
            "missing": out.missing,
        })))
    })
    .await
}

/// `token` for an unsubscribe link: profile, list and an HMAC over both (and the message,
/// for the record), URL-safe.
pub fn unsubscribe_token(secret: &[u8], profile: u64, list: &str, message: &str) -> String {
    let payload = format!("{profile}.{list}.{message}");
    let mac = crate::delivery::hmac_sha256(secret, payload.as_bytes());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(payload), b64.encode(&mac[..16]))
}

/// (profile, list, message) of a valid token.
pub fn verify_unsubscribe(secret: &[u8], token: &str) -> Option<(u64, String, String)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, mac) = token.split_once('.')?;
    let payload = b64.decode(payload).ok()?;
    let mac = b64.decode(mac).ok()?;
    let want = crate::delivery::hmac_sha256(secret, &payload);
    if mac.len() != 16 || !crate::delivery::constant_time_eq(&mac, &want[..16]) {
        return None;
    }
    let text = String::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, '.');
    let profile = parts.next()?.parse().ok()?;
    Some((
        profile,
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

pub fn unsubscribe_link(
    state: &AppState,
    profile: u64,
    purpose: &str,
    message: &str,
) -> Option<String> {
    if purpose == "transactional" {
        return None;
    }
    let secret = state.store.link_secret().ok()?;
    let base = state.config.delivery.public_url.trim_end_matches('/');
    Some(format!(
        "{base}/v1/unsubscribe?token={}",
        unsubscribe_token(&secret, profile, purpose, message)
    ))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: String,
}

/// The link in a message, opened in a browser: a confirmation page whose button POSTs. A GET
/// changes nothing, because mail security scanners fetch every link in a message.
async fn unsubscribe_page(
    State(state): S,
    Query(q): Query<TokenQuery>,
) -> Result<axum::response::Html<String>, ApiError> {
    let token = q.token.clone();
    let list = blocking(&state, move |s| {
        let secret = s.store.link_secret()?;
        verify_unsubscribe(&secret, &token)
            .map(|(_, list, _)| list)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "token: not a valid unsubscribe link",
                )
                .field("token")
            })
    })
    .await?;
    // The token is URL-safe base64 and dots: nothing to escape in the attribute.
    Ok(axum::response::Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post action=\"/v1/unsubscribe?token={}\">\
         <p>Stop receiving {list} emails?</p><button type=submit>Unsubscribe</button></form>",
        q.token
    )))
}

/// The confirmation (and RFC 8058 one-click POST from mail clients): records an
/// `Unsubscribed` event for the person, which suppresses that list at once.
async fn unsubscribe(
    State(state): S,
    Query(q): Query<TokenQuery>,
) -> Result<axum::response::Html<String>, ApiError> {
    let s = state.clone();
    let found = blocking(&state, move |s2| {
        let secret = s2.store.link_secret()?;
        let Some((profile, list, message)) = verify_unsubscribe(&secret, &q.token) else {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "token: not a valid unsubscribe link",
            )
            .field("token"));
        };
        let p = s2
            .store
            .profile(kairos_core::ProfileId(profile))?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the person is no longer known"))?;
        Ok((p, list, message))
    })
    .await?;
    let (p, list, message) = found;
    // The same link clicked twice records one event.
    let ev = crate::ingest::internal_track(
        &p,
        format!("unsubscribe-{message}-{list}"),
        "Unsubscribed",
        json!({"list": list, "message_id": message, "source": "unsubscribe link"}),
        (s.clock)(),
    )
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "the person has no id to record the event under",
        )
    })?;
    crate::ingest::submit_internal(&s, vec![ev]).await?;
    Ok(axum::response::Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>You will no longer receive {list} emails.</p>"
    )))
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn outbox(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let rows = s
            .store
            .pending_messages(q.limit.unwrap_or(100).clamp(1, 1000))?;
        Ok(Json(
            json!({"messages": rows.iter().map(row_json).collect::<Vec<_>>()}),
        ))
    })
    .await
}

async fn dead(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let rows = s.store.dead_messages(q.after.as_deref(), limit)?;
        let next = next_cursor(&rows, limit, |r| r.message_id.clone());
        Ok(Json(
            json!({"messages": rows.iter().map(row_json).collect::<Vec<_>>(), "next": next}),
        ))
    })
    .await
}

async fn redrive(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        if !s.store.redrive(&id, (s.clock)())? {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no dead message {id:?}"),
            ));
        }
        Ok(Json(json!({"success": true, "messageId": id})))
    })
    .await
}

async fn message(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let row = s
            .store
            .message(&id)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no message {id:?}")))?;
        Ok(Json(row_json(&row)))
    })
    .await
}

pub fn row_json(r: &OutboxRow) -> Value {
    json!({
        "messageId": r.message_id,
        "campaign": r.campaign,
        "step": r.step,
        "variant": r.variant,
        "template": r.template,
        "channel": r.channel,
        "purpose": r.purpose,
        "to": r.to,
        "profile": kairos_core::ProfileId(r.profile).to_string(),
        "status": r.status,
        "attempts": r.attempts,
        "lastError": r.last_error,
        "queuedAt": format_timestamp(r.queued_at),
        "due": format_timestamp(r.due),
    })
}
