//! Replays decode stored events with `Event::from_json_for_fold`, which keeps only the
//! context's `timezone`. Here the simulated shop's events are stored and read back both
//! ways, and each person's history is folded from both: the profiles (encoded byte for
//! byte, scores, segments and send-time included) and the training examples must not
//! differ.

use kairos_core::features::{FeatureDefs, LABEL_FEATURE};
use kairos_core::time::DAY;
use kairos_core::{CoreConfig, Event, Profile, ProfileId, Scoring};
use std::collections::BTreeMap;

const START: i64 = 1_790_000_000_000;

/// Each simulated person's events as stored: decoded from Segment JSON as an import does,
/// then written in the stored form.
fn stored_histories() -> BTreeMap<usize, Vec<Vec<u8>>> {
    let sim = kairos_sim::Simulation::new(kairos_sim::SimConfig {
        people: 150,
        days: 30,
        seed: 11,
        start_ms: START,
    });
    let person = sim.person_by_id();
    let limits = kairos_core::segment::Limits::default();
    let mut out: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
    for (i, e) in sim.events().enumerate() {
        let env = kairos_core::segment::RequestEnv {
            received_at: e.ts,
            correct_skew: false,
            source: "sim".into(),
        };
        let Ok(ev) = kairos_core::segment::decode_line(&e.value.to_string(), i, &env, &limits)
        else {
            continue;
        };
        let Some(p) = ev
            .user_id
            .as_ref()
            .or(ev.anonymous_id.as_ref())
            .and_then(|id| person.get(id))
        else {
            continue;
        };
        let mut bytes = Vec::new();
        kairos_core::stored_json::write_event(&ev, &mut bytes);
        out.entry(*p).or_default().push(bytes);
    }
    out
}

fn scoring() -> Scoring {
    let mut d = kairos_core::defaults::default_definitions();
    d.features = FeatureDefs {
        builtins: true,
        ..FeatureDefs::default()
    };
    d.features.expressions.insert(
        LABEL_FEATURE.into(),
        r#"did("Order Completed", within: 7d)"#.into(),
    );
    Scoring::compile(&d, None).unwrap_or_else(|e| panic!("{e}"))
}

fn decode_full(bytes: &[u8]) -> Event {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn decode_for_fold(bytes: &[u8]) -> Event {
    Event::from_json_for_fold(bytes).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn histories_read_for_the_fold_fold_to_what_full_events_fold_to() {
    let histories = stored_histories();
    assert!(histories.len() > 100, "{} people", histories.len());
    let (scoring, cfg) = (scoring(), CoreConfig::default());
    let end = START + 30 * DAY;
    let cutoffs: Vec<i64> = (1..30).map(|d| START + d * DAY).collect();
    let (mut zones, mut contexts) = (0, 0);
    for (person, stored) in &histories {
        let mut full: Vec<Event> = stored.iter().map(|b| decode_full(b)).collect();
        let mut lean: Vec<Event> = stored.iter().map(|b| decode_for_fold(b)).collect();
        for (f, l) in full.iter().zip(&lean) {
            // Everything but the context is read; of the context, the zone.
            let mut reduced = f.clone();
            reduced.context.retain(|k, _| k == "timezone");
            assert_eq!(l, &reduced);
            zones += usize::from(l.context_timezone().is_some());
            contexts += usize::from(f.context.len() > 1);
        }
        let fold = |events: &mut Vec<Event>| {
            let mut p = Profile::new(ProfileId(*person as u64 + 1));
            let changes = p.rebuild(events, &cfg, &scoring, end, "test");
            (p.encode(), changes)
        };
        let (full_profile, full_changes) = fold(&mut full);
        let (lean_profile, lean_changes) = fold(&mut lean);
        assert_eq!(full_profile, lean_profile, "person {person}");
        assert_eq!(full_changes, lean_changes, "person {person}");
        // As bits: missing features are NaN, which is not equal to itself.
        let examples = |events: &mut Vec<Event>| {
            kairos_core::features::examples(events, &cfg, &scoring, &cutoffs, 7 * DAY, end)
                .into_iter()
                .map(|e| {
                    let bits: Vec<u32> = e.features.iter().map(|f| f.to_bits()).collect();
                    (e.cutoff, e.label, bits)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(examples(&mut full), examples(&mut lean), "person {person}");
    }
    // The shop sends zones and a full context, so both paths were exercised.
    assert!(zones > 1_000 && contexts > 1_000, "{zones} {contexts}");
}
