//! `kairos bench backfill` and `kairos bench timers`: segments over a large population,
//! through the real store and writer (fsync'd group commits). Results and commands are in
//! docs/PERFORMANCE.md.

use anyhow::Context;
use kairos_core::defaults::default_definitions;
use kairos_core::{Event, EventKind, Millis, Scoring, SegmentDef};
use kairos_store::{Clock, Ingestor, Prepared, Store, StoreOptions, Submission, WriterOptions};
use serde_json::{json, Map};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BackfillArgs {
    /// Profiles in the store when the new segment is saved.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Backfills measured on the quiet store, each of a further new segment: on a noisy
    /// host several samples of one store say more than one.
    #[arg(long, default_value_t = 1)]
    quiet_rounds: usize,
}

#[derive(clap::Args)]
pub struct TimersArgs {
    /// Profiles, each with a pending timer.
    #[arg(long, default_value_t = 1_000_000)]
    timers: usize,
    /// The timers come due evenly over this many seconds.
    #[arg(long, default_value_t = 60)]
    spread_secs: u64,
}

const T0: Millis = 1_795_348_800_000;

fn order(i: usize, at: Millis) -> Event {
    Event {
        message_id: format!("bench-{i}"),
        kind: EventKind::Track,
        event: Some("Order Completed".into()),
        name: None,
        user_id: Some(format!("user-{i}")),
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: at,
        received_at: at,
        properties: json!({"revenue": (i % 1000) as f64, "products": [{"product_id": "p1"}]})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        traits: Map::new(),
        context: Map::new(),
        source: "bench".into(),
    }
}

/// Sends events through the writer in large submissions, a few in flight; returns events/s.
fn populate(ingest: &Ingestor, n: usize, at: impl Fn(usize) -> Millis) -> anyhow::Result<f64> {
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(n as u64);
    let mut pending = std::collections::VecDeque::new();
    for start in (0..n).step_by(10_000) {
        let events: Vec<Prepared> = (start..(start + 10_000).min(n))
            .map(|i| Prepared::new(order(i, at(i))))
            .collect();
        let len = events.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ingest
            .submit(Submission {
                events,
                rejected: vec![],
                received_at: at(start),
                source: "bench".into(),
                reply: Some(tx),
            })
            .context("submitting")?;
        pending.push_back((rx, len));
        if pending.len() >= 4 {
            if let Some((rx, len)) = pending.pop_front() {
                rx.blocking_recv()??;
                bar.inc(len as u64);
            }
        }
    }
    for (rx, len) in pending {
        rx.blocking_recv()??;
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// A store in a temporary directory with a writer over it.
struct Bench {
    store: Store,
    ingest: Ingestor,
    writer: std::thread::JoinHandle<()>,
    // Dropped last: the store's files go only after every thread using them has ended.
    _dir: tempfile::TempDir,
}

impl Bench {
    fn close(self) -> anyhow::Result<()> {
        let Bench {
            store,
            ingest,
            writer,
            _dir,
        } = self;
        drop(ingest);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        // fjall's background workers end with the last handle on the database.
        drop(store);
        Ok(())
    }
}

fn open(clock: Clock) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), &StoreOptions::default())?;
    let opts = WriterOptions {
        clock,
        ..WriterOptions::default()
    };
    let (ingest, writer) = Ingestor::start(store.clone(), opts)?;
    let scoring = Scoring::compile(&default_definitions(), None)?;
    ingest.define(scoring, T0)?.blocking_recv()??;
    Ok(Bench {
        store,
        ingest,
        writer,
        _dir: dir,
    })
}

pub fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    // A minute after the orders: no segment timer (15 minutes and more) is due meanwhile.
    let bench = open(Clock(Arc::new(|| T0 + 60_000)))?;
    let (store, ingest) = (&bench.store, &bench.ingest);
    println!("storing {} profiles (one order each)...", args.profiles);
    let rate = populate(ingest, args.profiles, |i| T0 + (i / 1000) as Millis)?;
    println!("  {rate:.0} events/s through the writer with the built-in definitions");

    // Person i spent i % 1000. First right after the fill, while the storage engine is
    // still compacting what it wrote; then, on the same store, once that work is done
    // (a store that has held its profiles for a while).
    let mut defs = default_definitions();
    let mut rounds = vec![("big_spenders".to_string(), 900, "right after the fill")];
    for r in 0..args.quiet_rounds {
        rounds.push((
            format!("bigger_spenders_{r}"),
            950 + r,
            "on the quiet store",
        ));
    }
    let mut quiet_secs = Vec::new();
    for (name, at_least, when) in rounds {
        if at_least != 900 {
            let waited = Instant::now();
            wait_until_quiet(store, Duration::from_secs(600))?;
            println!(
                "  waited {:.1} s for the store's flushes and compactions",
                waited.elapsed().as_secs_f64()
            );
        }
        defs.segments.insert(
            name.clone(),
            SegmentDef {
                description: format!("spent {at_least} or more"),
                rule: format!("lifetime_revenue >= {at_least}"),
                priority: 0,
            },
        );
        let scoring = Scoring::compile(&defs, None)?;
        let version = scoring.version;
        let compacting = store.background_work().time_compacting;
        let cpu = process_cpu_secs();
        let threads = thread_cpu_secs();
        let started = Instant::now();
        ingest.define(scoring, T0)?.blocking_recv()??;
        loop {
            match ingest.backfill() {
                Some(b) if b.version == version && b.finished_at.is_some() => break,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = process_cpu_secs() - cpu;
        let by_thread = cpu_by_thread_since(&threads, cpu);
        let compacting = store.background_work().time_compacting - compacting;
        let members = store.segment_size(&name)?;
        println!(
            "backfill of a new segment over {} profiles, {when}: {secs:.2} s ({:.0} profiles/s), \
             {members} members, {cpu:.1} s of CPU in all threads; the storage engine compacted \
             for {:.1} s meanwhile",
            args.profiles,
            args.profiles as f64 / secs,
            compacting.as_secs_f64()
        );
        println!("  CPU s by thread: {by_thread}");
        if at_least != 900 {
            quiet_secs.push(secs);
        }
        let expected = (0..args.profiles).filter(|i| i % 1000 >= at_least).count() as u64;
        anyhow::ensure!(
            members == expected,
            "{name}: expected {expected} members, found {members}"
        );
    }
    if quiet_secs.len() > 1 {
        quiet_secs.sort_by(f64::total_cmp);
        println!(
            "on the quiet store, {} backfills: best {:.2} s, median {:.2} s, worst {:.2} s",
            quiet_secs.len(),
            quiet_secs[0],
            quiet_secs[quiet_secs.len() / 2],
            quiet_secs[quiet_secs.len() - 1]
        );
    }
    bench.close()
}

/// User and system CPU seconds in a `/proc` `stat` file (of the process or one thread); 0
/// where there is none.
fn stat_cpu_secs(path: &std::path::Path) -> f64 {
    // Fields 14 and 15, after the parenthesised command name.
    let ticks = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // The kernel reports in USER_HZ, 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

/// CPU time of this process so far (user and system, all threads).
fn process_cpu_secs() -> f64 {
    stat_cpu_secs(std::path::Path::new("/proc/self/stat"))
}

/// CPU seconds of each live thread of this process, by thread id, with its name.
fn thread_cpu_secs() -> std::collections::HashMap<String, (String, f64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (name.trim().to_string(), stat_cpu_secs(&path.join("stat"))),
        );
    }
    out
}

/// What each thread name used since `before` (threads summed by name), biggest first;
/// threads that ended meanwhile (the backfill's own, which end with it) are the rest of
/// `total`.
fn cpu_by_thread_since(
    before: &std::collections::HashMap<String, (String, f64)>,
    total: f64,
) -> String {
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    for (tid, (name, secs)) in thread_cpu_secs() {
        let was = before.get(&tid).map_or(0.0, |(_, s)| *s);
        *by_name.entry(name).or_default() += secs - was;
    }
    let live: f64 = by_name.values().sum();
    let mut rows: Vec<(String, f64)> = by_name.into_iter().filter(|(_, s)| *s >= 0.05).collect();
    if total - live >= 0.05 {
        rows.push(("(ended threads)".into(), total - live));
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.iter()
        .map(|(n, s)| format!("{n} {s:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the store has no flush queued and no compaction running for a second.
fn wait_until_quiet(store: &Store, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut quiet_since: Option<Instant> = None;
    loop {
        if store.background_work().is_idle() {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                return Ok(());
            }
        } else {
            quiet_since = None;
        }
        anyhow::ensure!(Instant::now() < deadline, "the store did not become quiet");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn timers(args: TimersArgs) -> anyhow::Result<()> {
    // The clock stands still while the profiles are stored, then runs in real time: every
    // timer comes due during the `spread` seconds after the release.
    let released = Arc::new(AtomicI64::new(0));
    let r = released.clone();
    let started = Instant::now();
    let clock = Clock(Arc::new(move || {
        let at = r.load(Ordering::SeqCst);
        if at == 0 {
            T0
        } else {
            T0 + started.elapsed().as_millis() as Millis - at
        }
    }));
    let bench = open(clock)?;
    let (store, ingest) = (&bench.store, &bench.ingest);
    let spread = args.spread_secs as i64 * 1000;
    let n = args.timers;
    println!(
        "storing {n} profiles, each with a timer due in the {}s after release...",
        args.spread_secs
    );
    // `active_shoppers` (last_seen < 15m) is the timer: an event at t is due at t + 15m.
    let quarter = 15 * 60_000;
    populate(ingest, n, |i| {
        T0 - quarter + 1 + (i as i64 * spread) / n as i64
    })?;
    let pending = count_timers(store)?;
    println!("  {pending} timers pending");
    let before = ingest.timer_lateness().count;
    released.store(
        started.elapsed().as_millis().max(1) as i64,
        Ordering::SeqCst,
    );
    let deadline = Instant::now() + Duration::from_secs(args.spread_secs + 120);
    while ingest.timer_lateness().count < before + pending {
        anyhow::ensure!(Instant::now() < deadline, "timers did not all fire");
        std::thread::sleep(Duration::from_millis(50));
    }
    let l = ingest.timer_lateness();
    println!(
        "timer lateness over {} timers due within {}s: p50 {} ms, p99 {} ms, max {} ms",
        l.count - before,
        args.spread_secs,
        l.p50_ms,
        l.p99_ms,
        l.max_ms
    );
    bench.close()
}

fn count_timers(store: &Store) -> anyhow::Result<u64> {
    Ok(store.due_timers(None, Millis::MAX / 2, usize::MAX)?.len() as u64)
}
