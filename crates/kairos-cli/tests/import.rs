#![allow(clippy::unwrap_used)]
//! `kairos import` end to end: JSONL (plain and gzip) and CRM CSV, with rejects and dedupe.

use std::io::Write;
use std::process::Command;

fn kairos(args: &[&str], data_dir: &std::path::Path) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kairos"));
    cmd.args(args);
    if args[0] != "simulate" {
        cmd.arg("--data-dir").arg(data_dir);
    }
    let out = cmd
        .env("KAIROS_WRITE_KEY", "wk_import_test")
        .env("KAIROS_ADMIN_TOKEN", "import-admin-token")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn open_store(dir: &std::path::Path) -> kairos_store::Store {
    kairos_store::Store::open(dir.join("store"), &kairos_store::StoreOptions::default()).unwrap()
}

#[test]
fn jsonl_import_validates_dedupes_and_builds_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lines = Vec::new();
    for i in 0..500 {
        lines.push(serde_json::json!({
            "type": "track", "event": if i % 10 == 0 { "Order Completed" } else { "Product Viewed" },
            "userId": format!("u{}", i % 50), "messageId": format!("imp-{i}"),
            "timestamp": "2026-10-01T10:00:00.000Z", "properties": {"revenue": 10}
        }).to_string());
    }
    lines.push("{\"type\": \"track\", \"userId\": \"u1\", \"messageId\": \"no-event\"}".into());
    lines.push("this is not json".into());
    lines.push(lines[3].clone()); // a duplicate messageId
    let plain = dir.path().join("events.jsonl");
    std::fs::write(&plain, lines.join("\n")).unwrap();
    let (ok, out) = kairos(&["import", plain.to_str().unwrap()], &data);
    assert!(ok, "{out}");
    assert!(out.contains("imported 503 lines"), "{out}");
    assert!(out.contains("500 stored, 1 duplicates"), "{out}");
    assert!(out.contains("2 rejected"), "{out}");

    // Importing the same history again, gzipped, stores nothing new.
    let gz = dir.path().join("events.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(lines.join("\n").as_bytes()).unwrap();
    enc.finish().unwrap();
    let (ok, out) = kairos(&["import", gz.to_str().unwrap()], &data);
    assert!(ok, "{out}");
    assert!(out.contains("0 stored, 501 duplicates"), "{out}");

    let store = open_store(&data);
    let id = store
        .lookup(&kairos_core::IdKey::user("u0"))
        .unwrap()
        .unwrap();
    let p = store.profile(id).unwrap().unwrap();
    assert_eq!(p.state.event_count, 10);
    assert_eq!(p.state.orders, 10);
    assert_eq!(
        store.dead_letters(0, 100).unwrap().len(),
        4,
        "two rejects per import run"
    );
}

#[test]
fn csv_identify_import_sets_traits_and_links_email() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("crm.csv");
    std::fs::write(&csv, "user_id,email,plan,zip,score\nc1, Ada@Example.COM ,pro,01234,42\nc2,bob@example.com,free,99999,7\n,nobody@example.com,free,1,1\n").unwrap();
    let (ok, out) = kairos(&["import", "--identify", csv.to_str().unwrap()], &data);
    assert!(ok, "{out}");
    assert!(out.contains("2 stored"), "{out}");
    assert!(out.contains("1 rejected"), "{out}");
    let store = open_store(&data);
    let id = store
        .lookup(&kairos_core::IdKey::email("ada@example.com").unwrap())
        .unwrap()
        .unwrap();
    let p = store.profile(id).unwrap().unwrap();
    assert_eq!(p.user_ids(), vec!["c1".to_string()]);
    assert_eq!(p.state.trait_value("zip").unwrap(), "01234");
    assert_eq!(p.state.trait_value("score").unwrap(), 42);
}

#[test]
fn simulated_history_imports_without_a_single_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("sim.jsonl.gz");
    let truth = dir.path().join("truth.jsonl");
    let (ok, out) = kairos(
        &[
            "simulate",
            "--people",
            "60",
            "--days",
            "5",
            "--out",
            file.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let (ok, out) = kairos(&["import", file.to_str().unwrap()], &data);
    assert!(ok, "{out}");
    assert!(out.contains(" 0 rejected"), "{out}");
    assert!(out.contains(" 0 duplicates"), "{out}");
    // Each signed-up person of the truth file is one profile holding their anonymous id.
    let store = open_store(&data);
    let mut checked = 0;
    for line in std::fs::read_to_string(&truth).unwrap().lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let (Some(user), Some(0)) = (p["user_id"].as_str(), p["signup_day"].as_u64()) else {
            continue;
        };
        let by_user = store.lookup(&kairos_core::IdKey::user(user)).unwrap();
        let by_anon = store
            .lookup(&kairos_core::IdKey::anonymous(
                p["anonymous_id"].as_str().unwrap(),
            ))
            .unwrap();
        assert!(by_user.is_some());
        assert_eq!(
            by_user, by_anon,
            "{user}: anonymous history joined on signup"
        );
        checked += 1;
    }
    assert!(checked > 10);
}

#[test]
fn examples_writes_the_training_table_from_a_simulated_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("shop.jsonl");
    let (ok, out) = kairos(
        &[
            "simulate",
            "--people",
            "300",
            "--days",
            "30",
            "--out",
            events.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let (ok, out) = kairos(&["import", events.to_str().unwrap()], &data);
    assert!(ok, "{out}");
    let table = dir.path().join("examples.csv");
    let (ok, out) = kairos(
        &[
            "examples",
            "--label",
            "did(\"Order Completed\", within: 7d)",
            "--every",
            "7d",
            "--out",
            table.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&table).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..3], &["cutoff", "profile", "label"]);
    for f in [
        "days_since_last_seen",
        "orders",
        "email_open_rate",
        "score_engagement",
    ] {
        assert!(header.contains(&f), "{f} missing from {header:?}");
    }
    assert!(
        !header.iter().any(|h| h.contains("__label")),
        "the label is not a feature"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.len() > 300, "{out}");
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let positives = rows.iter().filter(|r| r[2] == "1").count();
    assert!(
        positives > 0 && positives < rows.len(),
        "{positives} of {}",
        rows.len()
    );
    // Bad input: a label that does not parse is refused with where and why.
    let (ok, out) = kairos(
        &[
            "examples",
            "--label",
            "did(",
            "--out",
            table.to_str().unwrap(),
        ],
        &data,
    );
    assert!(!ok);
    assert!(
        out.contains("features.expressions.__label") && out.contains("1:5"),
        "{out}"
    );
}

/// People who browse anonymously, sign up (their anonymous history merges into the
/// profile), then shop; interleaved so merges replay histories spread over many groups.
/// Every timestamp lies far in the future, so no timer comes due while the test runs and
/// both stores see exactly the same evaluations.
fn interleaved_history() -> Vec<String> {
    let day = 86_400_000i64;
    let start = 4_070_908_800_000i64; // 2099-01-01
    let ts = |ms: i64| {
        let secs = ms / 1000;
        let (d, s) = (secs / 86_400, secs % 86_400);
        // Days since 2099-01-01; every test timestamp falls in January.
        format!(
            "2099-01-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            d - 47_117 + 1,
            s / 3600,
            s % 3600 / 60,
            s % 60,
            ms % 1000
        )
    };
    let mut lines = Vec::new();
    for step in 0..8 {
        for p in 0..40 {
            let at = start + step * day / 2 + p * 60_000;
            let anon = format!("anon-{p}");
            let user = format!("user-{p}");
            let id = format!("m-{p}-{step}");
            let line = match step {
                0..=2 => serde_json::json!({
                    "type": "page", "name": "Home", "anonymousId": anon, "messageId": id,
                    "timestamp": ts(at), "properties": {"path": "/"}
                }),
                3 if p % 4 != 0 => serde_json::json!({
                    "type": "identify", "userId": user, "anonymousId": anon, "messageId": id,
                    "timestamp": ts(at), "traits": {"email": format!("p{p}@example.com"), "plan": "pro"}
                }),
                s if s % 2 == 0 => serde_json::json!({
                    "type": "track", "event": "Order Completed", "userId": user, "messageId": id,
                    "timestamp": ts(at), "properties": {"revenue": 10 + p, "currency": "EUR"}
                }),
                _ => serde_json::json!({
                    "type": "track", "event": "Product Viewed", "anonymousId": anon, "messageId": id,
                    "timestamp": ts(at), "properties": {"product_id": format!("sku-{}", p % 7)}
                }),
            };
            lines.push(line.to_string());
        }
    }
    lines.push(lines[17].clone()); // a duplicate messageId
    lines.push("{\"type\": \"track\", \"userId\": \"user-1\", \"messageId\": \"no-event\"}".into());
    lines
}

/// Everything a person or a segment query reads: profiles, segment members, the event log
/// and dead letters.
fn snapshot(store: &kairos_store::Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut segments = std::collections::BTreeSet::new();
    for p in store.profiles_after(None, usize::MAX).unwrap() {
        segments.extend(p.derived.segments.keys().map(|s| s.to_string()));
        out.push(format!("{p:?}"));
    }
    for s in segments {
        out.push(format!(
            "{s}: {:?}",
            store.segment_members(&s, None, usize::MAX).unwrap()
        ));
    }
    for e in store.log_after(0, usize::MAX).unwrap() {
        out.push(format!("{} {:?}", e.seq, e.event));
    }
    for d in store.dead_letters(0, usize::MAX).unwrap() {
        out.push(format!("{} {} {}", d.index, d.error, d.raw));
    }
    out
}

#[test]
fn import_builds_what_posting_the_same_events_builds_and_reimports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lines = interleaved_history();
    let file = dir.path().join("history.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let received_at = 4_102_444_800_000i64; // 2100-01-01
    let at = received_at.to_string();

    // Posted: requests of 25 events, each answered before the next, as over HTTP.
    let posted = dir.path().join("posted");
    {
        let store =
            kairos_store::Store::open(posted.join("store"), &kairos_store::StoreOptions::default())
                .unwrap();
        let writer = kairos_store::WriterOptions {
            clock: kairos_store::Clock(std::sync::Arc::new(move || received_at)),
            ..Default::default()
        };
        let (ingest, handle) = kairos_store::Ingestor::start(store, writer).unwrap();
        let env = kairos_core::segment::RequestEnv {
            received_at,
            correct_skew: false,
            source: "import".into(),
        };
        let limits = kairos_core::segment::Limits::default();
        for (n, request) in lines.chunks(25).enumerate() {
            let (mut events, mut rejected) = (Vec::new(), Vec::new());
            for (i, line) in request.iter().enumerate() {
                match kairos_core::segment::decode_line(line, n * 25 + i, &env, &limits) {
                    Ok(e) => events.push(kairos_store::Prepared::new(e)),
                    Err(r) => rejected.push(r),
                }
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            ingest
                .submit(kairos_store::Submission {
                    events,
                    rejected,
                    received_at,
                    source: "import".into(),
                    reply: Some(tx),
                })
                .unwrap();
            rx.blocking_recv().unwrap().unwrap();
        }
        drop(ingest);
        handle.join().unwrap();
    }

    // Imported: small chunks, so that groups of the open batch hold parts of merges.
    let imported = dir.path().join("imported");
    let path = file.to_str().unwrap();
    let (ok, out) = kairos(
        &["import", path, "--chunk", "7", "--received-at", &at],
        &imported,
    );
    assert!(ok, "{out}");
    assert!(out.contains("320 stored, 1 duplicates"), "{out}");
    assert!(out.contains("1 rejected"), "{out}");

    let expected = snapshot(&open_store(&posted));
    let got = snapshot(&open_store(&imported));
    assert!(expected.iter().any(|l| l.contains("user-5")));
    assert_eq!(expected.len(), got.len());
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g);
    }

    // The same file again adds nothing (only its reject is dead-lettered again).
    let (ok, out) = kairos(&["import", path, "--received-at", &at], &imported);
    assert!(ok, "{out}");
    assert!(out.contains("0 stored, 321 duplicates"), "{out}");
    let again = snapshot(&open_store(&imported));
    let without_dead = |s: &[String]| s.iter().filter(|l| !l.contains("no-event")).count();
    assert_eq!(without_dead(&again), without_dead(&got));
}
