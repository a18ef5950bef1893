#![allow(dead_code, clippy::unwrap_used)]

use kairos_core::{Event, EventKind, IdKey, Profile};
use kairos_store::{Ingestor, Outcome, Store, StoreOptions, Submission, WriterOptions};
use serde_json::{json, Map, Value};

pub fn ev(kind: EventKind, id: &str, user: Option<&str>, anon: Option<&str>, ts: i64) -> Event {
    Event {
        message_id: id.to_string(),
        kind,
        event: (kind == EventKind::Track).then(|| "Product Viewed".to_string()),
        name: None,
        user_id: user.map(String::from),
        anonymous_id: anon.map(String::from),
        previous_id: None,
        group_id: None,
        timestamp: ts,
        received_at: ts,
        properties: Map::new(),
        traits: Map::new(),
        context: Map::new(),
        source: "test".into(),
    }
}

pub fn track(
    id: &str,
    name: &str,
    user: Option<&str>,
    anon: Option<&str>,
    ts: i64,
    props: Value,
) -> Event {
    let mut e = ev(EventKind::Track, id, user, anon, ts);
    e.event = Some(name.to_string());
    if let Value::Object(m) = props {
        e.properties = m;
    }
    e
}

pub fn identify(id: &str, user: Option<&str>, anon: Option<&str>, ts: i64, traits: Value) -> Event {
    let mut e = ev(EventKind::Identify, id, user, anon, ts);
    if let Value::Object(m) = traits {
        e.traits = m;
    }
    e
}

pub fn alias(id: &str, user: &str, previous: &str, ts: i64) -> Event {
    let mut e = ev(EventKind::Alias, id, Some(user), None, ts);
    e.previous_id = Some(previous.to_string());
    e
}

pub struct Harness {
    pub store: Store,
    pub ingest: Ingestor,
    pub handle: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    pub fn open(dir: &std::path::Path) -> Self {
        Self::open_with(dir, &StoreOptions::default())
    }

    pub fn open_with(dir: &std::path::Path, opts: &StoreOptions) -> Self {
        Self::open_full(dir, opts, WriterOptions::default())
    }

    /// A store whose writer runs on `clock`, with the built-in scores and segments in force.
    pub fn with_defaults(dir: &std::path::Path, clock: kairos_store::Clock) -> Self {
        let writer = WriterOptions {
            clock,
            timer_interval: std::time::Duration::from_millis(5),
            ..WriterOptions::default()
        };
        let h = Self::open_full(dir, &StoreOptions::default(), writer);
        h.define(kairos_core::defaults::default_definitions());
        h
    }

    /// Puts definitions in force and waits until they are stored.
    pub fn define(&self, defs: kairos_core::Definitions) -> u64 {
        let scoring = kairos_core::Scoring::compile(&defs, None).unwrap();
        let version = scoring.version;
        self.ingest
            .define(scoring, 0)
            .unwrap()
            .blocking_recv()
            .unwrap()
            .unwrap();
        version
    }

    /// A harness whose writer tells the observer `make` builds (from the store, which it
    /// may read) of each durable group.
    pub fn open_observed<O: kairos_store::Observer + 'static>(
        dir: &std::path::Path,
        make: impl FnOnce(Store) -> std::sync::Arc<O>,
    ) -> (Self, std::sync::Arc<O>) {
        let store = Store::open(dir, &StoreOptions::default()).unwrap();
        let observer = make(store.clone());
        let writer = WriterOptions {
            observer: Some(observer.clone()),
            ..WriterOptions::default()
        };
        let (ingest, handle) = Ingestor::start(store.clone(), writer).unwrap();
        let h = Self {
            store,
            ingest,
            handle: Some(handle),
        };
        (h, observer)
    }

    pub fn open_full(dir: &std::path::Path, opts: &StoreOptions, writer: WriterOptions) -> Self {
        let store = Store::open(dir, opts).unwrap();
        let (ingest, handle) = Ingestor::start(store.clone(), writer).unwrap();
        Self {
            store,
            ingest,
            handle: Some(handle),
        }
    }

    pub fn send(&self, events: Vec<Event>) -> Outcome {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ingest
            .submit(Submission {
                events: kairos_store::Prepared::all(events),
                rejected: vec![],
                received_at: 0,
                source: "test".into(),
                reply: Some(tx),
            })
            .unwrap();
        rx.blocking_recv().unwrap().unwrap()
    }

    pub fn profile_of(&self, key: &IdKey) -> Option<Profile> {
        let id = self.store.lookup(key).unwrap()?;
        self.store.profile(id).unwrap()
    }

    /// Stops the writer (it finishes what was queued) and releases the store.
    pub fn close(self) {
        let Harness {
            store,
            ingest,
            handle,
        } = self;
        drop(ingest);
        if let Some(h) = handle {
            h.join().unwrap();
        }
        drop(store);
    }

    /// All profiles, as JSON for easy comparison.
    pub fn all_profiles(&self) -> Vec<Value> {
        self.store
            .profiles_after(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|p| json!({"id": p.id.to_string(), "ids": p.identifiers, "state": serde_json::to_value(&p.state).unwrap()}))
            .collect()
    }
}
