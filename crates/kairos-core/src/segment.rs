//! Decoding of Segment HTTP API bodies into validated [`Event`]s.
//!
//! What is checked, and why each rule exists:
//! - a body that is not JSON, or is over the batch limit, fails as a whole ([`BodyError`]):
//!   nothing in it can be trusted to be split into events;
//! - everything else is judged per event: a bad event is returned as a [`Rejected`] naming the
//!   field and the reason, and its valid neighbours are still accepted;
//! - explicit JSON `null` for `userId` / `anonymousId` means "absent" (Python SDKs send it);
//! - numeric ids are accepted and turned into strings (Segment does the same);
//! - event time is corrected for device clock skew as Segment does:
//!   `timestamp + (receivedAt - sentAt)` when `sentAt` is known; an event time after
//!   `receivedAt` (a clock ahead, with no `sentAt`) becomes `receivedAt`.

use crate::event::{Event, EventKind};
use crate::time::{parse_timestamp, Millis};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Size limits, Segment's by default.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_id_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_id_chars: 1024,
        }
    }
}

/// Facts about the request the events came in, supplied by the caller (the core has no clock).
#[derive(Clone, Debug)]
pub struct RequestEnv {
    pub received_at: Millis,
    /// Apply `sentAt` skew correction. Off for file imports, where `receivedAt - sentAt` means
    /// nothing.
    pub correct_skew: bool,
    pub source: String,
}

/// A reason one field of one event is unacceptable. Displays as `field: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The whole body is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Shape(FieldError),
}

/// One event that was refused, with what is needed to report and dead-letter it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub index: usize,
    pub message_id: Option<String>,
    pub error: FieldError,
    /// The event as it was sent (cut to the event size limit), for the dead-letter area.
    pub raw: String,
}

/// A decoded body: the write key it carried (if any) and each event's verdict in order.
#[derive(Debug, Default)]
pub struct Decoded {
    pub write_key: Option<String>,
    pub accepted: Vec<(usize, Event)>,
    pub rejected: Vec<Rejected>,
}

#[derive(Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow, default)]
    batch: Option<&'a RawValue>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
    #[serde(default, rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
}

fn check_size(body: &[u8], limits: &Limits) -> Result<(), BodyError> {
    if body.len() > limits.max_batch_bytes {
        return Err(BodyError::TooLarge {
            size: body.len(),
            limit: limits.max_batch_bytes,
        });
    }
    Ok(())
}

fn write_key_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Decodes a `/v1/batch` body.
pub fn decode_batch(body: &[u8], env: &RequestEnv, limits: &Limits) -> Result<Decoded, BodyError> {
    check_size(body, limits)?;
    let envelope: BatchEnvelope<'_> =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let items: Vec<&RawValue> = match envelope.batch {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            BodyError::Shape(FieldError::new("batch", "must be an array of events"))
        })?,
        None => return Err(BodyError::Shape(FieldError::new("batch", "is required"))),
    };
    let batch_sent_at = match &envelope.sent_at {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_timestamp(s).ok_or_else(|| {
            BodyError::Shape(FieldError::new("sentAt", "is not an ISO-8601 timestamp"))
        })?),
        Some(_) => {
            return Err(BodyError::Shape(FieldError::new(
                "sentAt",
                "must be an ISO-8601 string",
            )))
        }
    };
    let batch_context = match envelope.context {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    };
    let mut out = Decoded {
        write_key: write_key_of(envelope.write_key.as_ref()),
        ..Decoded::default()
    };
    for (index, raw) in items.into_iter().enumerate() {
        let ctx = ItemCtx {
            index,
            implied: None,
            batch_sent_at,
            batch_context: batch_context.as_ref(),
        };
        match decode_item(raw.get(), &ctx, env, limits) {
            Ok(ev) => out.accepted.push((index, ev)),
            Err(r) => out.rejected.push(r),
        }
    }
    Ok(out)
}

/// Decodes a single-call body (`/v1/track` and friends). The call type comes from the path.
pub fn decode_single(
    body: &[u8],
    kind: EventKind,
    env: &RequestEnv,
    limits: &Limits,
) -> Result<Decoded, BodyError> {
    check_size(body, limits)?;
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(BodyError::Shape(FieldError::new(
            "body",
            "must be a JSON object",
        )));
    }
    let write_key = write_key_of(value.get("writeKey"));
    let ctx = ItemCtx {
        index: 0,
        implied: Some(kind),
        batch_sent_at: None,
        batch_context: None,
    };
    let mut out = Decoded {
        write_key,
        ..Decoded::default()
    };
    match decode_item(text, &ctx, env, limits) {
        Ok(ev) => out.accepted.push((0, ev)),
        Err(r) => out.rejected.push(r),
    }
    Ok(out)
}

/// Decodes one JSONL line of a Segment export (for `kairos import`).
pub fn decode_line(
    line: &str,
    index: usize,
    env: &RequestEnv,
    limits: &Limits,
) -> Result<Event, Rejected> {
    let ctx = ItemCtx {
        index,
        implied: None,
        batch_sent_at: None,
        batch_context: None,
    };
    decode_item(line, &ctx, env, limits)
}

struct ItemCtx<'a> {
    index: usize,
    implied: Option<EventKind>,
    batch_sent_at: Option<Millis>,
    batch_context: Option<&'a Map<String, Value>>,
}

fn truncate(raw: &str, max: usize) -> String {
    if raw.len() <= max {
        return raw.to_string();
    }
    let mut end = max;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_string()
}

fn decode_item(
    raw: &str,
    ctx: &ItemCtx<'_>,
    env: &RequestEnv,
    limits: &Limits,
) -> Result<Event, Rejected> {
    let reject = |message_id: Option<String>, error: FieldError| Rejected {
        index: ctx.index,
        message_id,
        error,
        raw: truncate(raw, limits.max_event_bytes),
    };
    if raw.len() > limits.max_event_bytes {
        let id = serde_json::from_str::<Value>(raw)
            .ok()
            .and_then(|v| v.get("messageId").and_then(Value::as_str).map(String::from));
        return Err(reject(
            id,
            FieldError::new(
                "size",
                format!(
                    "event is {} bytes; the limit is {} bytes",
                    raw.len(),
                    limits.max_event_bytes
                ),
            ),
        ));
    }
    let obj = match serde_json::from_str::<TopLevel>(raw) {
        Ok(TopLevel::Object(fields)) => *fields,
        Ok(TopLevel::Other) => {
            return Err(reject(
                None,
                FieldError::new("event", "must be a JSON object"),
            ))
        }
        Err(e) => return Err(reject(None, FieldError::new("event", e.to_string()))),
    };
    let message_id = obj.get("messageId").and_then(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    normalize(obj, raw, ctx, env, limits).map_err(|e| reject(message_id, e))
}

/// The top-level fields of an event that decoding reads, each as its JSON value (absent:
/// `None`). Parsed straight from the text: building the whole object as a map first, and
/// values for the keys nobody reads (`integrations`, `channel`, ...), was a fifth of
/// decoding an event. As with a map, the last of repeated keys wins.
struct Fields([Option<Value>; FIELD_KEYS.len()]);

/// The top-level keys decoding reads, in the order of [`Fields`]' slots.
const FIELD_KEYS: [&str; 14] = [
    "type",
    "userId",
    "anonymousId",
    "event",
    "name",
    "previousId",
    "groupId",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
];

impl Fields {
    fn slot(&mut self, key: &str) -> Option<&mut Option<Value>> {
        let i = FIELD_KEYS.iter().position(|k| *k == key)?;
        self.0.get_mut(i)
    }

    /// The field named as in the JSON (only those of [`FIELD_KEYS`]).
    fn get(&self, key: &str) -> Option<&Value> {
        let i = FIELD_KEYS.iter().position(|k| *k == key)?;
        self.0.get(i)?.as_ref()
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        self.slot(key).and_then(Option::take)
    }
}

/// An event's JSON text: an object's fields, or anything else (rejected as not an object).
enum TopLevel {
    Object(Box<Fields>),
    Other,
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut fields = Box::new(Fields(Default::default()));
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match fields.slot(&key) {
                        Some(slot) => *slot = Some(map.next_value()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(TopLevel::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_unit<E>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
        }
        d.deserialize_any(V)
    }
}

fn id_field(obj: &Fields, field: &str, limits: &Limits) -> Result<Option<String>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else if s.chars().count() > limits.max_id_chars {
                Err(FieldError::new(
                    field,
                    format!("is longer than {} characters", limits.max_id_chars),
                ))
            } else {
                Ok(Some(s.to_string()))
            }
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(FieldError::new(
            field,
            format!("must be a string, not {}", type_name(other)),
        )),
    }
}

fn string_field(obj: &Fields, field: &str) -> Result<Option<String>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(FieldError::new(
            field,
            format!("must be a string, not {}", type_name(other)),
        )),
    }
}

fn object_field(obj: &mut Fields, field: &str) -> Result<Map<String, Value>, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(FieldError::new(
            field,
            format!("must be an object, not {}", type_name(&other)),
        )),
    }
}

fn time_field(obj: &Fields, field: &str) -> Result<Option<Millis>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_timestamp(s)
            .map(Some)
            .ok_or_else(|| FieldError::new(field, format!("{s:?} is not an ISO-8601 timestamp"))),
        Some(other) => Err(FieldError::new(
            field,
            format!("must be an ISO-8601 string, not {}", type_name(other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn normalize(
    mut obj: Fields,
    raw: &str,
    ctx: &ItemCtx<'_>,
    env: &RequestEnv,
    limits: &Limits,
) -> Result<Event, FieldError> {
    let kind = match ctx.implied {
        Some(k) => k,
        None => match obj.get("type") {
            None | Some(Value::Null) => return Err(FieldError::new("type", "is required")),
            Some(Value::String(s)) => EventKind::parse(s).ok_or_else(|| {
                FieldError::new(
                    "type",
                    format!(
                        "unknown type {s:?}; expected identify, track, page, screen, group or alias"
                    ),
                )
            })?,
            Some(other) => {
                return Err(FieldError::new(
                    "type",
                    format!("must be a string, not {}", type_name(other)),
                ))
            }
        },
    };
    let user_id = id_field(&obj, "userId", limits)?;
    let anonymous_id = id_field(&obj, "anonymousId", limits)?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(FieldError::new(
            "userId",
            "an event needs a userId or an anonymousId",
        ));
    }
    let event = string_field(&obj, "event")?;
    let name = string_field(&obj, "name")?;
    let previous_id = id_field(&obj, "previousId", limits)?;
    let group_id = id_field(&obj, "groupId", limits)?;
    match kind {
        EventKind::Track => match &event {
            Some(e) if !e.trim().is_empty() => {}
            _ => return Err(FieldError::new("event", "is required for a track call")),
        },
        EventKind::Alias => {
            if previous_id.is_none() {
                return Err(FieldError::new(
                    "previousId",
                    "is required for an alias call",
                ));
            }
            if user_id.is_none() {
                return Err(FieldError::new("userId", "is required for an alias call"));
            }
        }
        EventKind::Group if group_id.is_none() => {
            return Err(FieldError::new("groupId", "is required for a group call"));
        }
        _ => {}
    }
    let message_id = match obj.get("messageId") {
        None | Some(Value::Null) => generated_message_id(raw, env.received_at, ctx.index),
        Some(Value::String(s)) if s.is_empty() => {
            generated_message_id(raw, env.received_at, ctx.index)
        }
        Some(Value::String(s)) if s.len() > limits.max_id_chars => {
            return Err(FieldError::new(
                "messageId",
                format!("is longer than {} characters", limits.max_id_chars),
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(FieldError::new(
                "messageId",
                format!("must be a string, not {}", type_name(other)),
            ))
        }
    };
    let timestamp = time_field(&obj, "timestamp")?;
    let original = time_field(&obj, "originalTimestamp")?;
    let sent_at = time_field(&obj, "sentAt")?.or(ctx.batch_sent_at);
    let properties = object_field(&mut obj, "properties")?;
    let traits = object_field(&mut obj, "traits")?;
    let mut context = object_field(&mut obj, "context")?;
    if let Some(batch_ctx) = ctx.batch_context {
        for (k, v) in batch_ctx {
            context.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let device_time = timestamp.or(original);
    let event_time = match (device_time, sent_at) {
        (Some(t), Some(sent)) if env.correct_skew => t.saturating_add(env.received_at - sent),
        (Some(t), _) => t,
        (None, _) => env.received_at,
    }
    // Nothing happened after it arrived: a device clock ahead (with no `sentAt` to correct
    // it) would otherwise make scores, segments and campaigns decide at instants not yet
    // reached.
    .min(env.received_at);
    Ok(Event {
        message_id,
        kind,
        event: event.map(|e| e.trim().to_string()),
        name,
        user_id,
        anonymous_id,
        previous_id,
        group_id,
        timestamp: event_time,
        received_at: env.received_at,
        properties,
        traits,
        context,
        source: env.source.clone(),
    })
}

fn generated_message_id(raw: &str, received_at: Millis, index: usize) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(raw.as_bytes());
    h.update(&received_at.to_le_bytes());
    h.update(&(index as u64).to_le_bytes());
    format!("kairos-{:032x}", h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> RequestEnv {
        RequestEnv {
            received_at: 1_000_000,
            correct_skew: true,
            source: "test".into(),
        }
    }

    fn batch(events: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "batch": events })).expect("json")
    }

    fn one_error(events: Value) -> String {
        let d = decode_batch(&batch(events), &env(), &Limits::default()).expect("body ok");
        assert_eq!(d.accepted.len(), 0);
        assert_eq!(d.rejected.len(), 1);
        d.rejected[0].error.to_string()
    }

    #[test]
    fn top_level_fields_are_read_as_a_map_would_read_them() {
        let limits = Limits::default();
        let line = |text: &str| decode_line(text, 0, &env(), &limits);
        // Repeated keys: the last wins. Keys nobody reads are skipped, however nested;
        // escaped keys are the keys they spell.
        let ev = line(
            r#"{"type":"track","userId":"a","event":"E","userId":"b",
                "integrations":{"All":false,"x":[1,{"y":null}]},"channel":"server",
                "\u0061nonymousId":"anon","messageId":"m"}"#,
        )
        .unwrap_or_else(|r| panic!("{}", r.error));
        assert_eq!(ev.user_id.as_deref(), Some("b"));
        assert_eq!(ev.anonymous_id.as_deref(), Some("anon"));
        assert_eq!(
            (ev.event.as_deref(), ev.message_id.as_str()),
            (Some("E"), "m")
        );
        // Anything but an object is rejected as one, and a syntax error anywhere (also in
        // a skipped field) says where.
        for text in ["[1, {}]", "\"track\"", "3", "null", "true"] {
            let r = line(text).err().map(|r| r.error.to_string());
            assert_eq!(r.as_deref(), Some("event: must be a JSON object"), "{text}");
        }
        let r = line(r#"{"type":"track","userId":"u","event":"E","integrations":{"a":tru}}"#);
        assert!(r.is_err_and(|r| r.error.to_string().starts_with("event: expected ident")));
        // The messageId of a rejected event is still reported.
        let r = line(r#"{"type":"track","userId":"u","messageId":12}"#);
        assert_eq!(r.err().and_then(|r| r.message_id).as_deref(), Some("12"));
    }

    #[test]
    fn null_ids_are_absent_and_numbers_become_strings() {
        let d = decode_batch(
            &batch(json!([
                {"type": "track", "event": "A", "userId": 42, "anonymousId": null, "messageId": "m1"},
            ])),
            &env(),
            &Limits::default(),
        )
        .expect("ok");
        let ev = &d.accepted[0].1;
        assert_eq!(ev.user_id.as_deref(), Some("42"));
        assert_eq!(ev.anonymous_id, None);
    }

    #[test]
    fn each_bad_event_is_rejected_alone_with_field_and_reason() {
        assert_eq!(
            one_error(json!([{"type": "track", "event": "A"}])),
            "userId: an event needs a userId or an anonymousId"
        );
        assert!(one_error(json!([{"type": "bogus", "userId": "u"}]))
            .starts_with("type: unknown type \"bogus\""));
        assert_eq!(one_error(json!([{"userId": "u"}])), "type: is required");
        assert_eq!(
            one_error(json!([{"type": "track", "userId": "u"}])),
            "event: is required for a track call"
        );
        assert_eq!(
            one_error(json!([{"type": "track", "userId": {"a": 1}, "event": "A"}])),
            "userId: must be a string, not an object"
        );
        assert_eq!(
            one_error(json!([{"type": "track", "userId": "u", "event": "A", "properties": [1]}])),
            "properties: must be an object, not an array"
        );
        assert_eq!(
            one_error(json!([{"type": "track", "userId": "u", "event": "A", "timestamp": "noon"}])),
            "timestamp: \"noon\" is not an ISO-8601 timestamp"
        );
        assert_eq!(
            one_error(json!([{"type": "alias", "userId": "u"}])),
            "previousId: is required for an alias call"
        );
    }

    #[test]
    fn valid_neighbours_survive_a_bad_event() {
        let d = decode_batch(
            &batch(json!([
                {"type": "track", "event": "A", "userId": "u", "messageId": "ok1"},
                {"type": "track", "userId": "u", "messageId": "bad"},
                {"type": "identify", "userId": "u", "messageId": "ok2"},
            ])),
            &env(),
            &Limits::default(),
        )
        .expect("ok");
        assert_eq!(d.accepted.len(), 2);
        assert_eq!(d.rejected[0].index, 1);
        assert_eq!(d.rejected[0].message_id.as_deref(), Some("bad"));
    }

    #[test]
    fn skew_is_corrected_from_sent_at() {
        // The device clock is 10 s behind: it sent at 990_000 what arrived at 1_000_000.
        let body = serde_json::to_vec(&json!({
            "batch": [{"type": "track", "event": "A", "userId": "u",
                       "timestamp": crate::time::format_timestamp(985_000)}],
            "sentAt": crate::time::format_timestamp(990_000),
        }))
        .expect("json");
        let d = decode_batch(&body, &env(), &Limits::default()).expect("ok");
        assert_eq!(d.accepted[0].1.timestamp, 995_000);
        // Without skew correction (imports) the timestamp is kept.
        let mut e = env();
        e.correct_skew = false;
        let d = decode_batch(&body, &e, &Limits::default()).expect("ok");
        assert_eq!(d.accepted[0].1.timestamp, 985_000);
    }

    /// Found with campaigns: events stamped hours ahead made journeys decide at instants
    /// not yet reached.
    #[test]
    fn regression_an_event_from_the_future_happened_when_it_arrived() {
        let body = serde_json::to_vec(&json!({
            "batch": [{"type": "track", "event": "A", "userId": "u",
                       "timestamp": crate::time::format_timestamp(5_000_000)},
                      {"type": "track", "event": "B", "userId": "u",
                       "timestamp": crate::time::format_timestamp(900_000)}],
        }))
        .expect("json");
        let d = decode_batch(&body, &env(), &Limits::default()).expect("ok");
        assert_eq!(d.accepted[0].1.timestamp, env().received_at);
        assert_eq!(d.accepted[1].1.timestamp, 900_000);
    }

    #[test]
    fn missing_timestamp_is_received_time() {
        let d = decode_batch(
            &batch(json!([{"type": "page", "anonymousId": "a"}])),
            &env(),
            &Limits::default(),
        )
        .expect("ok");
        assert_eq!(d.accepted[0].1.timestamp, 1_000_000);
        assert!(d.accepted[0].1.message_id.starts_with("kairos-"));
    }

    #[test]
    fn oversized_event_and_body() {
        let big = "x".repeat(33 * 1024);
        let msg = one_error(
            json!([{"type": "track", "event": "A", "userId": "u", "properties": {"p": big}}]),
        );
        assert!(msg.starts_with("size: event is "), "{msg}");
        let limits = Limits {
            max_batch_bytes: 100,
            ..Limits::default()
        };
        let err = decode_batch(&[b' '; 200], &env(), &limits).expect_err("too large");
        assert!(matches!(
            err,
            BodyError::TooLarge {
                size: 200,
                limit: 100
            }
        ));
    }

    #[test]
    fn not_json_is_a_body_error() {
        let err = decode_batch(b"{nope", &env(), &Limits::default()).expect_err("bad");
        assert!(matches!(err, BodyError::NotJson(_)));
        let err = decode_batch(b"{\"batch\": 3}", &env(), &Limits::default()).expect_err("bad");
        assert_eq!(err.to_string(), "batch: must be an array of events");
    }

    #[test]
    fn batch_context_fills_event_context() {
        let body = serde_json::to_vec(&json!({
            "batch": [{"type": "track", "event": "A", "userId": "u", "context": {"ip": "1"}}],
            "context": {"ip": "2", "timezone": "Europe/Berlin"},
            "writeKey": "wk",
        }))
        .expect("json");
        let d = decode_batch(&body, &env(), &Limits::default()).expect("ok");
        let ev = &d.accepted[0].1;
        assert_eq!(ev.context["ip"], "1");
        assert_eq!(ev.context_timezone(), Some("Europe/Berlin"));
        assert_eq!(d.write_key.as_deref(), Some("wk"));
    }
}
