//! The normalised event every other part of Kairos works with.

use crate::time::{format_timestamp, Millis};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The Segment call types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "identify" => Self::Identify,
            "track" => Self::Track,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identify => "identify",
            Self::Track => "track",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }
}

/// A validated event. `timestamp` is the event time after clock-skew correction; it is what
/// every window, decay and ordering uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    pub timestamp: Millis,
    pub received_at: Millis,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    /// Name of the source (write key) that sent it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl Event {
    /// A track call of user `u1` named `name` at `at` (sent and received then), for unit
    /// tests.
    #[cfg(test)]
    pub(crate) fn test_track(name: &str, at: Millis, props: Value) -> Event {
        Event {
            message_id: format!("{name}-{at}"),
            kind: EventKind::Track,
            event: Some(name.into()),
            name: None,
            user_id: Some("u1".into()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: at,
            received_at: at,
            properties: props.as_object().cloned().unwrap_or_default(),
            traits: Map::new(),
            context: Map::new(),
            source: String::new(),
        }
    }

    /// Reads an event stored in its serde JSON form, skipping `context` and `traits` (left
    /// empty) instead of building them: readers of product interactions need neither, and
    /// the context an SDK sends is most of a stored event. Kept beside [`Event`] because it
    /// mirrors its fields and their names.
    pub fn from_json_without_context(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let p: Partial<IgnoredAny, IgnoredAny> = serde_json::from_slice(bytes)?;
        Ok(p.split().0)
    }

    /// Reads an event stored in its serde JSON form with everything the core's fold reads
    /// (state, scores, segments, send-time, features): all of it but `context`, of which
    /// only `timezone` is kept; the rest of the context (library, page, user agent, ip...)
    /// is skipped instead of built. Replays of a person's history (merges, late events,
    /// redefinitions, training sets) fold to the same result as with [`serde_json`]'s full
    /// decoding: `tests/fold_decoding.rs` holds the two together.
    pub fn from_json_for_fold(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let p: Partial<Map<String, Value>, ZoneOnly> = serde_json::from_slice(bytes)?;
        let (mut event, traits, context) = p.split();
        event.traits = traits;
        if let Some(zone) = context.timezone {
            event.context.insert("timezone".into(), zone);
        }
        Ok(event)
    }

    /// The name windows and counters use: the track event name, or `Page Viewed` /
    /// `Screen Viewed` for page and screen calls, as Segment's destinations name them.
    pub fn activity_name(&self) -> Option<&str> {
        match self.kind {
            EventKind::Track => self.event.as_deref(),
            EventKind::Page => Some("Page Viewed"),
            EventKind::Screen => Some("Screen Viewed"),
            _ => None,
        }
    }

    /// A stable 64-bit digest of the messageId, used to order events that share a timestamp
    /// so that every replay order yields the same result.
    pub fn tiebreak(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.message_id.as_bytes())
    }

    /// Total order used for replays: event time, then messageId digest.
    pub fn order_key(&self) -> (Millis, u64) {
        (self.timestamp, self.tiebreak())
    }

    /// The event as Segment JSON (ISO timestamps), for export and the events API.
    pub fn to_segment_json(&self) -> Value {
        let mut v = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        v.insert(
            "timestamp".into(),
            Value::String(format_timestamp(self.timestamp)),
        );
        v.insert(
            "receivedAt".into(),
            Value::String(format_timestamp(self.received_at)),
        );
        Value::Object(v)
    }

    /// The timezone the event's sender reported (`context.timezone`), if any.
    pub fn context_timezone(&self) -> Option<&str> {
        self.context.get("timezone").and_then(Value::as_str)
    }
}

/// An [`Event`] as stored, with `traits` and `context` read as `T` and `C` (built, reduced
/// or skipped); the other fields as in [`Event`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Partial<T, C> {
    message_id: String,
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    anonymous_id: Option<String>,
    #[serde(default)]
    previous_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
    timestamp: Millis,
    received_at: Millis,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    traits: T,
    #[serde(default)]
    context: C,
    #[serde(default)]
    source: String,
}

impl<T, C> Partial<T, C> {
    /// The event with empty `traits` and `context`, and those two as read.
    fn split(self) -> (Event, T, C) {
        let event = Event {
            message_id: self.message_id,
            kind: self.kind,
            event: self.event,
            name: self.name,
            user_id: self.user_id,
            anonymous_id: self.anonymous_id,
            previous_id: self.previous_id,
            group_id: self.group_id,
            timestamp: self.timestamp,
            received_at: self.received_at,
            properties: self.properties,
            traits: Map::new(),
            context: Map::new(),
            source: self.source,
        };
        (event, self.traits, self.context)
    }
}

/// The part of `context` the fold reads ([`Event::context_timezone`]); serde skips the
/// other keys without building them. A `null` zone reads as absent, which the fold does
/// not tell apart from `null` (it only reads a string).
#[derive(Default, Deserialize)]
struct ZoneOnly {
    #[serde(default)]
    timezone: Option<Value>,
}
