//! Event builders shared by the core's integration tests: one person (`u1`), events
//! numbered `m<i>`, received when they happened.
#![allow(dead_code)]

use kairos_core::{Event, EventKind};
use serde_json::{json, Map, Value};

pub fn event(
    i: usize,
    kind: EventKind,
    name: Option<&str>,
    ts: i64,
    props: Value,
    traits: Value,
) -> Event {
    Event {
        message_id: format!("m{i}"),
        kind,
        event: name.map(str::to_string),
        name: None,
        user_id: Some("u1".into()),
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: ts,
        received_at: ts,
        properties: props.as_object().cloned().unwrap_or_default(),
        traits: traits.as_object().cloned().unwrap_or_default(),
        context: Map::new(),
        source: String::new(),
    }
}

pub fn track(i: usize, name: &str, ts: i64, props: Value) -> Event {
    event(i, EventKind::Track, Some(name), ts, props, json!({}))
}
