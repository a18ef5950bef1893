//! The stored JSON form of an [`Event`], written directly: byte for byte what
//! `serde_json::to_vec(&event)` writes (a property test holds the two together), so stores
//! and every reader of them cannot tell which wrote an event.
//!
//! Every accepted event is written once in this form, on the request threads or the
//! import's parser. Through serde, that was a quarter of the import parser's instructions,
//! most of it serde_json checking every byte of every string against its escape table one
//! at a time. Here a string is checked eight bytes at a time in a machine word and, as
//! nearly all are, copied whole; one that needs escaping is handed to serde_json, which
//! then writes exactly what it always did.

use crate::event::Event;
use serde::Serialize;
use serde_json::{Map, Value};

/// Appends `ev`'s stored form to `out`.
pub fn write_event(ev: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"messageId\":");
    write_str(out, &ev.message_id);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(ev.kind.as_str().as_bytes());
    out.push(b'"');
    let optional = [
        (&b",\"event\":"[..], &ev.event),
        (b",\"name\":", &ev.name),
        (b",\"userId\":", &ev.user_id),
        (b",\"anonymousId\":", &ev.anonymous_id),
        (b",\"previousId\":", &ev.previous_id),
        (b",\"groupId\":", &ev.group_id),
    ];
    for (field, value) in optional {
        if let Some(s) = value {
            out.extend_from_slice(field);
            write_str(out, s);
        }
    }
    out.extend_from_slice(b",\"timestamp\":");
    write_with_serde(out, &ev.timestamp);
    out.extend_from_slice(b",\"receivedAt\":");
    write_with_serde(out, &ev.received_at);
    let maps = [
        (&b",\"properties\":"[..], &ev.properties),
        (b",\"traits\":", &ev.traits),
        (b",\"context\":", &ev.context),
    ];
    for (field, map) in maps {
        if !map.is_empty() {
            out.extend_from_slice(field);
            write_map(out, map);
        }
    }
    if !ev.source.is_empty() {
        out.extend_from_slice(b",\"source\":");
        write_str(out, &ev.source);
    }
    out.push(b'}');
}

fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_with_serde(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// Writes `v` through serde_json itself: numbers (few, and its float formatting is the one
/// readers expect) and the rare string that needs escaping.
fn write_with_serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Serialising a number or a string into a Vec cannot fail.
    let _ = v.serialize(&mut serde_json::Serializer::new(out));
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        write_with_serde(out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether any byte is one JSON escapes: a quote, a backslash or a control character.
/// Most strings of an event are short (keys, ids, names), so it tests eight bytes at a
/// time in a word, the last eight overlapping the ones before, and only strings shorter
/// than a word byte by byte (without a branch per byte).
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 8 {
        return bytes.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
    }
    let mut at = 0;
    while at + 8 <= n {
        if word_needs_escape(bytes, at) {
            return true;
        }
        at += 8;
    }
    at < n && word_needs_escape(bytes, n - 8)
}

/// [`needs_escape`] for `bytes[at..at + 8]`, which the caller keeps in bounds.
#[inline(always)]
fn word_needs_escape(bytes: &[u8], at: usize) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let Some(Ok(word)) = bytes.get(at..at + 8).map(<[u8; 8]>::try_from) else {
        return true;
    };
    let x = u64::from_le_bytes(word);
    // A byte below n sets its high bit in `x - n * ONES` while its own high bit is clear
    // (borrows only ever travel up from such a byte, so any hit means a real one).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (below(x, 0x20) | below(quote, 1) | below(backslash, 1)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use proptest::prelude::*;

    fn stored(ev: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        write_event(ev, &mut out);
        out
    }

    fn serde_form(ev: &Event) -> Vec<u8> {
        serde_json::to_vec(ev).unwrap_or_default()
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Identify),
            Just(EventKind::Track),
            Just(EventKind::Page),
            Just(EventKind::Screen),
            Just(EventKind::Group),
            Just(EventKind::Alias),
        ]
    }

    /// Mostly plain text, often long enough for whole sixteen-byte blocks, with quotes,
    /// backslashes, control characters, DEL and multi-byte characters at any position.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ./:_-]{0,40}",
            "[a-z]{0,20}[\"\\\\\u{0}-\u{1f}\u{7f}é€😀][a-z]{0,20}",
            any::<String>(),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn map() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map(text(), value(), 0..5).prop_map(|m| m.into_iter().collect())
    }

    prop_compose! {
        fn event()(
            message_id in text(),
            kind in kind(),
            ids in proptest::collection::vec(proptest::option::of(text()), 6),
            timestamp in any::<i64>(),
            received_at in any::<i64>(),
            properties in map(),
            traits in map(),
            context in map(),
            source in text(),
        ) -> Event {
            Event {
                message_id,
                kind,
                event: ids[0].clone(),
                name: ids[1].clone(),
                user_id: ids[2].clone(),
                anonymous_id: ids[3].clone(),
                previous_id: ids[4].clone(),
                group_id: ids[5].clone(),
                timestamp,
                received_at,
                properties,
                traits,
                context,
                source,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn the_stored_form_is_what_serde_json_writes(ev in event()) {
            prop_assert_eq!(stored(&ev), serde_form(&ev));
        }
    }

    #[test]
    fn escapes_in_every_string_are_written_as_serde_json_writes_them() {
        let nasty = "a\"b\\c\nd\u{1}e\u{7f}f\u{1f}g é 😀 tail long enough for a block\t";
        let mut m = Map::new();
        m.insert(nasty.into(), Value::String(nasty.into()));
        m.insert(
            "nested".into(),
            serde_json::json!([nasty, 1.5, -3, 18446744073709551615u64, null, true, {"k": nasty}]),
        );
        let ev = Event {
            message_id: nasty.into(),
            kind: EventKind::Track,
            event: Some(nasty.into()),
            name: Some(nasty.into()),
            user_id: Some(nasty.into()),
            anonymous_id: Some(nasty.into()),
            previous_id: Some(nasty.into()),
            group_id: Some(nasty.into()),
            timestamp: i64::MIN,
            received_at: i64::MAX,
            properties: m.clone(),
            traits: m.clone(),
            context: m,
            source: nasty.into(),
        };
        assert_eq!(stored(&ev), serde_form(&ev));
        let back: Event = serde_json::from_slice(&stored(&ev)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, ev);
    }

    #[test]
    fn a_quote_in_any_lane_of_a_block_is_found() {
        for len in 0..40 {
            for at in 0..len {
                for bad in [b'"', b'\\', 0, 0x1f] {
                    let mut s = vec![b'x'; len];
                    s[at] = bad;
                    assert!(needs_escape(&s), "len {len} at {at} byte {bad}");
                }
            }
            assert!(!needs_escape(&vec![b'x'; len]));
            assert!(!needs_escape("é€😀\u{7f} ~".repeat(len).as_bytes()));
        }
    }
}
