#![no_main]
//! Any text: parsing, checking and printing never panic, and what parses prints to text
//! that parses to the same tree.

use kairos_rules::{compile, parse, Aggregates, Schema, ScoreInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let schema = Schema {
        scores: vec![ScoreInfo {
            name: "engagement".into(),
            tiers: vec!["cold".into(), "hot".into()],
        }],
        segments: vec!["vip".into()],
        known_events: None,
        event_context: true,
        trigger_context: true,
    };
    let mut aggs = Aggregates::default();
    let _ = compile(src, &schema, &mut aggs);
    if let Ok(tree) = parse(src) {
        let printed = tree.to_string();
        match parse(&printed) {
            Ok(again) => assert_eq!(tree.without_positions(), again.without_positions()),
            // Printing adds parentheses, which can push a tree at the depth limit over it.
            Err(e) => assert!(e.to_string().contains("nested deeper"), "{printed}: {e}"),
        }
    }
});
