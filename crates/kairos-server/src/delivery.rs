//! Background work that turns campaign decisions into deliveries: the outbox worker
//! (render, send through the message's channel, record the outcome durably, retry with
//! backoff, dead-letter), the scheduler of scheduled campaigns, and change hooks (segment,
//! tier and campaign changes posted to webhook endpoints as they happen).
//!
//! Everything here reads the store and goes through the writer for profile changes (a hard
//! bounce becomes an `Email Bounced` event); none of it decides who gets what, which is the
//! core's job.

use crate::messages::{compile, render, row_context, Compiled, TemplateDef};
use crate::AppState;
use kairos_core::time::format_timestamp;
use kairos_core::Millis;
use kairos_store::OutboxRow;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes keys of any length.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    /// Try again (after at least `after`, when the receiver said so). `uncertain`: the
    /// receiver may have accepted it (a timeout or a connection lost after sending), so the
    /// next attempt is flagged as a possible duplicate.
    Retry {
        reason: String,
        after: Option<Duration>,
        uncertain: bool,
    },
    /// Never going to work as it is; `hard_bounce`: the address does not exist.
    Failed {
        reason: String,
        hard_bounce: bool,
    },
}

/// Messages taken from the outbox per round, and sent at once at most.
const ROUND: usize = 256;
const IN_FLIGHT: usize = 32;

/// The outbox worker: every `poll_ms`, delivers what is due, a round at a time: render
/// every message, mark them all `sending` (one fsync), send up to [`IN_FLIGHT`] at once,
/// record every outcome (one fsync). A full round is followed at once by the next.
pub async fn run_outbox(state: Arc<AppState>, channels: Arc<crate::channels::Channels>) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(state.config.delivery.poll_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut templates = TemplateCache::default();
    loop {
        tick.tick().await;
        loop {
            let s = state.clone();
            let due =
                tokio::task::spawn_blocking(move || s.store.due_outbox((s.clock)(), ROUND)).await;
            let rows = match due {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    tracing::warn!("reading the outbox failed: {e}");
                    break;
                }
                Err(_) => break,
            };
            let full = rows.len() == ROUND;
            if rows.is_empty() {
                break;
            }
            deliver_round(&state, &channels, &mut templates, rows).await;
            if !full {
                break;
            }
        }
    }
}

/// Compiled templates by name, recompiled when the stored text changes.
#[derive(Default)]
struct TemplateCache(HashMap<String, (Value, Arc<Compiled>)>);

impl TemplateCache {
    fn get(&mut self, name: &str, stored: Value) -> Result<Arc<Compiled>, String> {
        if let Some((v, c)) = self.0.get(name) {
            if *v == stored {
                return Ok(c.clone());
            }
        }
        let def: TemplateDef =
            serde_json::from_value(stored.clone()).map_err(|e| format!("template {name}: {e}"))?;
        let c = Arc::new(compile(&def).map_err(|e| format!("template {name}: {}", e.message))?);
        self.0.insert(name.to_string(), (stored, c.clone()));
        Ok(c)
    }
}

async fn deliver_round(
    state: &Arc<AppState>,
    channels: &Arc<crate::channels::Channels>,
    templates: &mut TemplateCache,
    rows: Vec<(Vec<u8>, OutboxRow)>,
) {
    // Each person and template as they are now (one blocking read for the round).
    let s = state.clone();
    let ids: Vec<(u64, String)> = rows
        .iter()
        .map(|(_, r)| (r.profile, r.template.clone()))
        .collect();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(ids.len());
        for (p, t) in ids {
            out.push((
                s.store.profile(kairos_core::ProfileId(p))?,
                s.store.template(&t)?,
            ));
        }
        Ok::<_, kairos_store::StoreError>(out)
    })
    .await;
    let loaded = match loaded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::warn!("delivery waits: {e}");
            return;
        }
        Err(_) => return,
    };
    let mut attempts: Vec<(Vec<u8>, OutboxRow, Attempt)> = Vec::new();
    let mut to_send = Vec::new();
    for ((key, row), (profile, template)) in rows.into_iter().zip(loaded) {
        let rendered = match template {
            None => Err(format!("template `{}` does not exist", row.template)),
            Some(stored) => templates.get(&row.template, stored).and_then(|c| {
                let ctx = row_context(state, &row, profile.as_ref());
                render(&c, &ctx)
            }),
        };
        match rendered {
            Err(reason) => attempts.push((
                key,
                row,
                Attempt::Failed {
                    reason,
                    hard_bounce: false,
                },
            )),
            Ok(msg) => to_send.push((key, row, msg)),
        }
    }
    if !to_send.is_empty() {
        let s = state.clone();
        let marks: Vec<(Vec<u8>, OutboxRow)> = to_send
            .iter()
            .map(|(k, r, _)| (k.clone(), r.clone()))
            .collect();
        match tokio::task::spawn_blocking(move || s.store.outbox_sending(&marks)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("delivery waits: {e}");
                return;
            }
            Err(_) => return,
        }
    }
    let mut pending = to_send.into_iter();
    loop {
        let mut set = tokio::task::JoinSet::new();
        for (key, row, msg) in pending.by_ref().take(IN_FLIGHT) {
            let link = crate::messages::unsubscribe_link(
                state,
                row.profile,
                &row.purpose,
                &row.message_id,
            );
            // A row found `sending` was being sent when the process stopped; an uncertain
            // one timed out or lost its connection after being sent.
            let possible_duplicate = row.status == "sending" || row.uncertain;
            let (channels, now) = (channels.clone(), (state.clock)());
            set.spawn(async move {
                let a = channels
                    .send(&row, &msg, link, possible_duplicate, now)
                    .await;
                (key, row, a)
            });
        }
        if set.is_empty() {
            break;
        }
        while let Some(done) = set.join_next().await {
            if let Ok(x) = done {
                attempts.push(x);
            }
        }
    }
    record(state, attempts).await;
}

/// Records a round's attempts durably (one fsync): sent, retried later, or dead.
async fn record(state: &Arc<AppState>, attempts: Vec<(Vec<u8>, OutboxRow, Attempt)>) {
    use kairos_store::Delivered;
    let cfg = &state.config.delivery;
    let now = (state.clock)();
    let mut bounces = Vec::new();
    let mut outcomes = Vec::with_capacity(attempts.len());
    for (key, row, attempt) in attempts {
        let channel = kind(&row.channel);
        let outcome = match attempt {
            Attempt::Delivered => {
                metrics::counter!("kairos_messages_sent_total", "channel" => channel).increment(1);
                Delivered::Sent { at: now }
            }
            Attempt::Retry {
                reason,
                after,
                uncertain,
            } if row.attempts + 1 < cfg.max_attempts => {
                let wait = backoff(cfg.retry_base_ms, cfg.retry_max_ms, row.attempts, after);
                metrics::counter!("kairos_messages_retried_total", "channel" => channel)
                    .increment(1);
                tracing::info!("{} will be retried in {wait:?}: {reason}", row.message_id);
                Delivered::Retry {
                    due: now + wait.as_millis() as Millis,
                    error: reason,
                    // Once an attempt may have arrived, every later one is a possible
                    // duplicate, whatever this one's answer was.
                    uncertain: uncertain || row.uncertain || row.status == "sending",
                }
            }
            other => {
                let (reason, hard) = match other {
                    Attempt::Retry { reason, .. } => (
                        format!("gave up after {} attempts: {reason}", row.attempts + 1),
                        false,
                    ),
                    Attempt::Failed {
                        reason,
                        hard_bounce,
                    } => (reason, hard_bounce),
                    Attempt::Delivered => (String::new(), false),
                };
                metrics::counter!("kairos_messages_dead_total", "channel" => channel).increment(1);
                tracing::warn!("{} is a dead letter: {reason}", row.message_id);
                if hard {
                    bounces.push(row.clone());
                }
                Delivered::Dead {
                    at: now,
                    error: reason,
                }
            }
        };
        outcomes.push((key, row, outcome));
    }
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.store.outbox_record(&outcomes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("recording deliveries failed (they will be retried): {e}"),
        Err(e) => tracing::error!("recording deliveries failed: {e}"),
    }
    for row in bounces {
        hard_bounce_event(state, &row).await;
    }
}

/// The relay said the address does not exist: an `Email Bounced` (hard) event for the
/// person, so the core suppresses the address for every campaign.
async fn hard_bounce_event(state: &Arc<AppState>, row: &OutboxRow) {
    let s = state.clone();
    let id = row.profile;
    let Ok(Ok(Some(p))) =
        tokio::task::spawn_blocking(move || s.store.profile(kairos_core::ProfileId(id))).await
    else {
        return;
    };
    let Some(ev) = crate::ingest::internal_track(
        &p,
        format!("bounce-{}", row.message_id),
        "Email Bounced",
        json!({"type": "hard", "message_id": row.message_id, "email": row.to}),
        (state.clock)(),
    ) else {
        return;
    };
    if let Err(e) = crate::ingest::submit_internal(state, vec![ev]).await {
        tracing::warn!("recording a hard bounce failed: {}", e.message);
    }
}

fn kind(channel: &str) -> &'static str {
    if channel.starts_with("webhook") {
        "webhook"
    } else {
        "email"
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base * 2^attempt))`, but at
/// least half the base (no hot loop against a failing receiver) and at least what the
/// receiver asked for (`Retry-After`).
pub fn backoff(base_ms: u64, max_ms: u64, attempt: u32, floor: Option<Duration>) -> Duration {
    use rand::Rng;
    let cap = base_ms
        .saturating_mul(1u64.checked_shl(attempt.min(40)).unwrap_or(u64::MAX))
        .min(max_ms)
        .max(1);
    let jitter = rand::rng().random_range(0..cap);
    let d = Duration::from_millis(jitter.max(base_ms / 2));
    floor.map_or(d, |f| d.max(f))
}

/// Runs scheduled campaigns: at each run instant, every member of the campaign's segment
/// is offered the campaign (the core checks membership again and decides).
pub async fn run_schedules(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = state.clone();
        let due = tokio::task::spawn_blocking(move || due_schedules(&s)).await;
        let Ok(Ok(due)) = due else { continue };
        for (campaign, segment, at) in due {
            if let Err(e) = run_schedule(&state, &campaign, &segment, at).await {
                tracing::warn!("scheduled run of {campaign} failed (retried): {e}");
            }
        }
    }
}

/// (campaign, segment, run instant) of every scheduled campaign whose next run is due.
fn due_schedules(
    state: &AppState,
) -> Result<Vec<(String, String, Millis)>, kairos_store::StoreError> {
    let scoring = state.store.scoring();
    let now = (state.clock)();
    let mut out = Vec::new();
    for c in scoring.campaigns.scheduled() {
        let kairos_core::campaign::CompiledTrigger::Schedule {
            schedule,
            timezone,
            segment,
        } = &c.trigger
        else {
            continue;
        };
        let name = format!("schedule:{}", c.name);
        let last = match state.store.cursor(&name)? {
            Some(l) => l,
            None => {
                // A new schedule starts with its next run, not with a backlog.
                state.store.set_cursor(&name, now)?;
                continue;
            }
        };
        if let Some(next) = schedule.next_after(last, timezone) {
            if next <= now {
                out.push((c.name.clone(), segment.clone(), next));
            }
        }
    }
    Ok(out)
}

async fn run_schedule(
    state: &Arc<AppState>,
    campaign: &str,
    segment: &str,
    at: Millis,
) -> Result<(), String> {
    let mut after = None;
    let mut reached = 0;
    loop {
        let s = state.clone();
        let seg = segment.to_string();
        let page = tokio::task::spawn_blocking(move || s.store.segment_members(&seg, after, 1000))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last().map(|(id, _)| *id) else {
            break;
        };
        let ids = page.into_iter().map(|(id, _)| id).collect();
        let rx = state
            .ingest
            .schedule(campaign, at, ids)
            .map_err(|e| e.to_string())?;
        reached += rx
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        after = Some(last);
    }
    let s = state.clone();
    let name = format!("schedule:{campaign}");
    tokio::task::spawn_blocking(move || s.store.set_cursor(&name, at))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "scheduled run of {campaign} at {}: {reached} people entered",
        format_timestamp(at)
    );
    Ok(())
}

/// Posts new records of the configured change streams to their endpoints, in order, from a
/// cursor kept in the store: at least once, each with its `seq` as idempotency key.
pub async fn run_change_hooks(state: Arc<AppState>, channels: Arc<crate::channels::Channels>) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(state.config.delivery.poll_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for hook in &state.config.delivery.change_hooks {
            for stream in expand_streams(&state, &hook.streams) {
                if let Err(e) = post_stream(&state, &channels, &hook.endpoint, &stream).await {
                    tracing::warn!("change hook {} for {stream}: {e}", hook.endpoint);
                }
            }
        }
    }
}

/// `segment:*` means every segment, `tier:*` every score, `campaign:*` every campaign.
fn expand_streams(state: &AppState, streams: &[String]) -> Vec<String> {
    let scoring = state.store.scoring();
    let mut out = Vec::new();
    for s in streams {
        match s.as_str() {
            "segment:*" => out.extend(
                scoring
                    .segments
                    .iter()
                    .map(|x| format!("segment:{}", x.name)),
            ),
            "tier:*" => out.extend(scoring.scores.iter().map(|x| format!("tier:{}", x.name))),
            "campaign:*" => out.extend(
                scoring
                    .campaigns
                    .list
                    .iter()
                    .map(|x| format!("campaign:{}", x.name)),
            ),
            other => out.push(other.to_string()),
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn post_stream(
    state: &Arc<AppState>,
    channels: &crate::channels::Channels,
    endpoint: &str,
    stream: &str,
) -> Result<(), String> {
    let cursor_name = format!("hook:{endpoint}:{stream}");
    let s = state.clone();
    let (c, st) = (cursor_name.clone(), stream.to_string());
    let (after, page) = tokio::task::spawn_blocking(move || {
        let after = s.store.cursor(&c)?.unwrap_or(0) as u64;
        Ok::<_, kairos_store::StoreError>((after, s.store.changes(&st, after, 100)?))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    for change in page
        .into_iter()
        .filter(|c| c["seq"].as_u64().unwrap_or(0) > after)
    {
        let seq = change["seq"].as_u64().unwrap_or(0);
        let body = json!({"type": "change", "stream": stream, "change": change});
        match channels
            .post_webhook(endpoint, &body, &format!("{stream}:{seq}"), (state.clock)())
            .await
        {
            Attempt::Delivered => {
                let s = state.clone();
                let c = cursor_name.clone();
                tokio::task::spawn_blocking(move || s.store.set_cursor(&c, seq as i64))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            // Stay on this record; the next round tries again (the stream is ordered).
            Attempt::Retry { reason, .. } | Attempt::Failed { reason, .. } => return Err(reason),
        }
    }
    Ok(())
}
