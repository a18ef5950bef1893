//! `kairos bench`: benchmarks that need a server or a large population. Results and the
//! exact commands are in docs/PERFORMANCE.md.
//!
//! `bench ingest` measures, in one run and with the same generator and payloads, (a) a bare
//! axum endpoint that only parses each batch with serde_json, the ceiling of the HTTP path on
//! this machine, and (b) Kairos with durable (fsync'd) group commit and profile updates.

use anyhow::Context;
use axum::routing::post;
use bytes_ext::Bytes;
use hdrhistogram::Histogram;
use kairos_server::config::Source;
use kairos_server::{Config, Kairos};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod bytes_ext {
    pub use axum::body::Bytes;
}

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Durable ingest over HTTP against a bare serde_json endpoint, side by side.
    Ingest(IngestArgs),
    /// Memory and encoded size per profile for a large population.
    Memory(MemoryArgs),
    /// `kairos import` speed on a generated Segment JSONL file.
    Import(ImportBenchArgs),
    /// Time from sending an event to reading its new score and segment through the API,
    /// under a steady background ingest load.
    Freshness(FreshnessArgs),
    /// Backfill of a new segment over a large population.
    Backfill(crate::bench_scoring::BackfillArgs),
    /// Lateness of segment timers with many pending.
    Timers(crate::bench_scoring::TimersArgs),
    /// Recommendation similarities on a large synthetic history, and serving latency
    /// beside the popularity baseline.
    Recs(crate::recs::BenchArgs),
}

#[derive(clap::Args)]
pub struct ImportBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 100_000)]
    people: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Keep the generated JSONL here; if the file already exists, import it as it is
    /// instead of generating one (so runs to compare read the same bytes and only the
    /// import is timed or profiled).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Events to send per target.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per /v1/batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Distinct people in the payloads.
    #[arg(long, default_value_t = 100_000)]
    people: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Skip the bare-endpoint baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Score and segment definitions in force: the built-in ones, or none (to see what
    /// scoring costs).
    #[arg(long, default_value = "default", value_parser = ["default", "none"])]
    definitions: String,
    /// Data directory for the Kairos run (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Events per group commit at most (`[ingest] max_group_events`; default: the
    /// server's).
    #[arg(long)]
    max_group_events: Option<usize>,
}

#[derive(clap::Args)]
pub struct FreshnessArgs {
    /// Background load in events/s (in /v1/batch requests of 100), e.g. half of what
    /// `bench ingest` reaches.
    #[arg(long, default_value_t = 5_000)]
    rate: usize,
    /// Probe events sent (one at a time) while the load runs.
    #[arg(long, default_value_t = 400)]
    probes: usize,
    #[arg(long, default_value_t = 100_000)]
    people: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Events per group commit at most (`[ingest] max_group_events`; default: the
    /// server's).
    #[arg(long)]
    max_group_events: Option<usize>,
}

/// The server's ingest settings with the group cap a bench was given, if any.
fn ingest_config(max_group_events: Option<usize>) -> kairos_server::config::IngestConfig {
    let mut ingest = kairos_server::config::IngestConfig::default();
    if let Some(n) = max_group_events {
        ingest.max_group_events = n;
    }
    ingest
}

#[derive(clap::Args)]
pub struct MemoryArgs {
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Events folded into each profile.
    #[arg(long, default_value_t = 12)]
    events_per_profile: usize,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(a) => ingest(a).await,
        BenchCommand::Freshness(a) => freshness(a).await,
        BenchCommand::Memory(a) => memory(a),
        BenchCommand::Import(a) => tokio::task::spawn_blocking(move || import_bench(a)).await?,
        BenchCommand::Backfill(a) => {
            tokio::task::spawn_blocking(move || crate::bench_scoring::backfill(a)).await?
        }
        BenchCommand::Timers(a) => {
            tokio::task::spawn_blocking(move || crate::bench_scoring::timers(a)).await?
        }
        BenchCommand::Recs(a) => tokio::task::spawn_blocking(move || crate::recs::bench(a)).await?,
    }
}

/// The first `n` events of the simulated shop (kairos-sim), ending now.
pub fn shop_events(people: usize, n: usize, seed: u64) -> Vec<Value> {
    let days = 365;
    let start_ms = 1_795_348_800_000i64 - days as i64 * 86_400_000;
    let sim = kairos_sim::Simulation::new(kairos_sim::SimConfig {
        people,
        days,
        seed,
        start_ms,
    });
    sim.events().take(n).map(|e| e.value).collect()
}

fn payloads(args: &IngestArgs) -> Vec<Bytes> {
    let sent_at = kairos_core::time::format_timestamp(1_795_348_800_000);
    shop_events(args.people, args.events, args.seed)
        .chunks(args.batch.max(1))
        .map(|events| {
            Bytes::from(
                serde_json::to_vec(&json!({"batch": events, "sentAt": sent_at}))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

struct LoadResult {
    seconds: f64,
    requests: usize,
    events: usize,
    failures: usize,
    latency_us: Histogram<u64>,
}

async fn load(
    base: &str,
    write_key: &str,
    bodies: Arc<Vec<Bytes>>,
    batch: usize,
    connections: usize,
) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}/v1/batch");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, next, bodies, url, key) = (
            client.clone(),
            next.clone(),
            bodies.clone(),
            url.clone(),
            write_key.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram bounds are static");
            let mut failures = 0usize;
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                // Retry on 429 as SDKs do; the retried time counts in the latency.
                loop {
                    let r = client
                        .post(&url)
                        .basic_auth(&key, Some(""))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 429 => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            done += 1;
                            break;
                        }
                        _ => {
                            failures += 1;
                            break;
                        }
                    }
                }
                let _ = hist.record(t.elapsed().as_micros() as u64);
            }
            (hist, failures, done)
        }));
    }
    let mut latency_us = Histogram::<u64>::new(3)?;
    let mut failures = 0;
    let mut requests = 0;
    for t in tasks {
        let (h, f, d) = t.await?;
        latency_us.add(&h)?;
        failures += f;
        requests += d;
    }
    Ok(LoadResult {
        seconds: started.elapsed().as_secs_f64(),
        requests,
        events: requests * batch,
        failures,
        latency_us,
    })
}

async fn bare_endpoint() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let app = axum::Router::new().route(
        "/v1/batch",
        post(|body: Bytes| async move {
            let parsed: Result<Value, _> = serde_json::from_slice(&body);
            match parsed {
                Ok(v) => axum::Json(json!({"success": true, "accepted": v["batch"].as_array().map_or(0, |a| a.len())})),
                Err(_) => axum::Json(json!({"success": false})),
            }
        }),
    )
    .layer(axum::extract::DefaultBodyLimit::max(1 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((base, tx))
}

fn report(name: &str, r: &LoadResult) {
    println!(
        "{name:<28} {:>10.0} events/s  {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} events in {:.2} s, {} failed requests)",
        r.events as f64 / r.seconds,
        r.requests as f64 / r.seconds,
        r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        r.latency_us.max() as f64 / 1000.0,
        r.events,
        r.seconds,
        r.failures
    );
}

/// What the bench reports after a run: each stage of the writer's group commit
/// (`kairos_group_*`, per group) and the server's time per ingest request.
const STAGES: [(&str, &str, &str); 6] = [
    ("kairos_group_events", "events", "groups"),
    ("kairos_group_plan_seconds", "planning", "groups"),
    (
        "kairos_group_wait_seconds",
        "waiting for the group in flight",
        "groups",
    ),
    (
        "kairos_group_write_seconds",
        "writing (memtables, journal)",
        "groups",
    ),
    ("kairos_group_fsync_seconds", "fsync", "groups"),
    (
        "kairos_ingest_request_seconds",
        "ingest request in the server",
        "requests",
    ),
];

/// A metrics recorder for the bench's process that keeps the [`STAGES`] histograms
/// exactly (seconds in microseconds), and nothing else. The Prometheus exporter's
/// summaries are sketches whose quantiles came out inconsistent with their own means for
/// these (mostly near-zero waits); a bench needs the exact tail.
#[derive(Default)]
struct StageRecorder {
    stages: std::sync::Mutex<std::collections::HashMap<&'static str, Arc<StageHistogram>>>,
}

struct StageHistogram {
    /// Seconds are kept in microseconds, counts as they are.
    scale: f64,
    values: std::sync::Mutex<Histogram<u64>>,
}

impl metrics::HistogramFn for StageHistogram {
    fn record(&self, value: f64) {
        if let Ok(mut h) = self.values.lock() {
            let _ = h.record((value * self.scale).round().max(0.0) as u64);
        }
    }
}

impl metrics::Recorder for StageRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let Some(&(name, _, _)) = STAGES.iter().find(|(n, _, _)| *n == key.name()) else {
            return metrics::Histogram::noop();
        };
        let Ok(mut stages) = self.stages.lock() else {
            return metrics::Histogram::noop();
        };
        let h = stages.entry(name).or_insert_with(|| {
            Arc::new(StageHistogram {
                scale: if name.ends_with("_seconds") { 1e6 } else { 1.0 },
                values: std::sync::Mutex::new(
                    Histogram::new(3).expect("histogram bounds are static"),
                ),
            })
        });
        metrics::Histogram::from_arc(h.clone())
    }
}

/// Installs a [`StageRecorder`] for this process.
fn install_stage_recorder() -> anyhow::Result<Arc<StageRecorder>> {
    let recorder = Arc::new(StageRecorder::default());
    metrics::set_global_recorder(recorder.clone())
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    Ok(recorder)
}

fn report_group_stages(recorder: &StageRecorder) {
    println!("writer, per group, and server, per request, over the run:");
    let Ok(stages) = recorder.stages.lock() else {
        return;
    };
    for (name, what, per) in STAGES {
        let Some(s) = stages.get(name) else { continue };
        let Ok(h) = s.values.lock() else { continue };
        if h.is_empty() {
            continue;
        }
        // Microseconds shown as milliseconds; counts as they are.
        let (div, unit) = if s.scale > 1.0 {
            (1e3, " ms")
        } else {
            (1.0, "")
        };
        let v = |x: u64| x as f64 / div;
        println!(
            "  {what:<32} mean {:>7.1}{unit}  p50 {:>7.1}{unit}  p99 {:>7.1}{unit}  max {:>7.1}{unit}  ({} {per})",
            h.mean() / div,
            v(h.value_at_quantile(0.5)),
            v(h.value_at_quantile(0.99)),
            v(h.max()),
            h.len()
        );
    }
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    println!(
        "machine: {} cores; generator, servers and store share them",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "generating {} events in batches of {} over {} people...",
        args.events, args.batch, args.people
    );
    let bodies = Arc::new(payloads(&args));
    let avg = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len().max(1);
    println!(
        "{} request bodies, {} bytes each on average ({} bytes per event)",
        bodies.len(),
        avg,
        avg / args.batch.max(1)
    );

    let bare = if args.no_baseline {
        None
    } else {
        let (base, stop) = bare_endpoint().await?;
        let r = load(&base, "any", bodies.clone(), args.batch, args.connections).await?;
        let _ = stop.send(());
        report("bare axum + serde_json", &r);
        Some(r)
    };

    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let config = Config {
        data_dir: dir,
        sources: vec![Source {
            name: "bench".into(),
            write_key: "wk_bench".into(),
        }],
        admin_token: Some("bench-admin-token".into()),
        default_definitions: args.definitions == "default",
        ingest: ingest_config(args.max_group_events),
        // Campaign decisions and outbox rows are part of ingest; sending them is not (and
        // no channel is configured here).
        delivery: kairos_server::config::DeliveryConfig {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    };
    let stages = install_stage_recorder()?;
    let kairos =
        Kairos::open(config, kairos_server::system_clock(), None).context("opening the store")?;
    let state = kairos.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kairos.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let r = load(
        &base,
        "wk_bench",
        bodies.clone(),
        args.batch,
        args.connections,
    )
    .await?;
    report("kairos durable ingest", &r);
    if let Some(b) = &bare {
        let ratio = (r.events as f64 / r.seconds) / (b.events as f64 / b.seconds);
        println!("kairos / bare ratio: {:.1}%", ratio * 100.0);
    }
    report_group_stages(&stages);
    let counts = state.store.approximate_counts();
    println!(
        "store: ~{} events, ~{} profiles, {} MB on disk",
        counts.events,
        counts.profiles,
        state.store.disk_bytes() / 1_000_000
    );
    // The server closes the store once it holds the last handle; the temporary directory
    // goes after that.
    drop(state);
    let _ = stop_tx.send(());
    server.await??;
    drop(tmp);
    Ok(())
}

/// Sends probe events one at a time during a paced background load, and after each 200
/// reads the probe person's engagement score and memberships until they show the event.
async fn freshness(args: FreshnessArgs) -> anyhow::Result<()> {
    let batch = 100;
    let events = (args.rate * (args.probes / 20 + 30)).max(batch);
    let bodies = Arc::new(payloads(&IngestArgs {
        events,
        batch,
        connections: 8,
        people: args.people,
        seed: args.seed,
        no_baseline: true,
        definitions: "default".into(),
        data_dir: None,
        max_group_events: None,
    }));
    let tmp = tempfile::tempdir()?;
    let config = Config {
        data_dir: tmp.path().to_path_buf(),
        sources: vec![Source {
            name: "bench".into(),
            write_key: "wk_bench".into(),
        }],
        admin_token: Some("bench-admin-token".into()),
        delivery: kairos_server::config::DeliveryConfig {
            enabled: false,
            ..Default::default()
        },
        ingest: ingest_config(args.max_group_events),
        ..Config::default()
    };
    let stages = install_stage_recorder()?;
    let kairos =
        Kairos::open(config, kairos_server::system_clock(), None).context("opening the store")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kairos.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();

    // Paced background load: one batch every batch/rate seconds, 8 connections.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(batch as f64 / args.rate.max(1) as f64);
    let background = {
        let (client, bodies, base, stop, sent) = (
            client.clone(),
            bodies.clone(),
            base.clone(),
            stop.clone(),
            sent.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let Some(body) = bodies.get(i % bodies.len()).cloned() else {
                    break;
                };
                i += 1;
                let (client, url, sent) =
                    (client.clone(), format!("{base}/v1/batch"), sent.clone());
                tokio::spawn(async move {
                    let r = client
                        .post(url)
                        .basic_auth("wk_bench", Some(""))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        sent.fetch_add(batch, Ordering::Relaxed);
                    }
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let sent_before = sent.load(Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3)?;
    // The acknowledgement alone (the rest of each probe is reading back).
    let mut acks = Histogram::<u64>::new(3)?;
    for k in 0..args.probes {
        let user = format!("probe-{k}");
        let t0 = Instant::now();
        let r = client
            .post(format!("{base}/v1/track"))
            .basic_auth("wk_bench", Some(""))
            .json(&json!({"userId": user, "event": "Email Clicked", "messageId": format!("probe-{k}")}))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "probe ingest failed: {}",
            r.status()
        );
        let _ = r.bytes().await;
        let _ = acks.record(t0.elapsed().as_micros() as u64);
        loop {
            let v: Value = client
                .get(format!("{base}/v1/profiles/{user}/scores"))
                .bearer_auth("bench-admin-token")
                .send()
                .await?
                .json()
                .await?;
            let scored = v["scores"]["engagement"]["value"].as_f64().unwrap_or(0.0) > 9.0;
            let engaged = v["segments"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["name"] == "engaged"));
            if scored && engaged {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "probe {k} never showed: {v}"
            );
        }
        let _ = hist.record(t0.elapsed().as_micros() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    let load_rate = (sent.load(Ordering::Relaxed) - sent_before) as f64 / secs;
    stop.store(true, Ordering::Relaxed);
    let _ = background.await;
    // Microseconds, shown as milliseconds.
    let ms = |h: &Histogram<u64>| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3
        )
    };
    println!(
        "background ingest {load_rate:.0} events/s (target {}); {} probes: event sent -> new score and segment read back: {}",
        args.rate,
        args.probes,
        ms(&hist)
    );
    println!("  of which the probe's acknowledgement: {}", ms(&acks));
    report_group_stages(&stages);
    // In-flight background requests hold no handle on the store; the server closes it,
    // then the temporary directory goes.
    let _ = stop_tx.send(());
    server.await??;
    drop(tmp);
    Ok(())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn memory(args: MemoryArgs) -> anyhow::Result<()> {
    use kairos_core::segment::{decode_line, Limits, RequestEnv};
    use kairos_core::{CoreConfig, Profile, ProfileId};
    let cfg = CoreConfig::default();
    let env = RequestEnv {
        received_at: 1_795_348_800_000,
        correct_skew: false,
        source: "bench".into(),
    };
    // Decode a pool of realistic events once; profiles fold copies of them at spread times.
    let pool: Vec<kairos_core::Event> = shop_events(2000, 20_000, 11)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            decode_line(&v.to_string(), i, &env, &Limits::default())
                .map_err(|r| anyhow::anyhow!(r.error.to_string()))
        })
        .collect::<Result<_, _>>()?;
    // Profiles carry their scores and segments as the writer's do.
    let scoring =
        kairos_core::Scoring::compile(&kairos_core::defaults::default_definitions(), None)?;
    let before = rss_bytes();
    let mut profiles = std::collections::HashMap::with_capacity(args.profiles);
    let mut encoded = 0u64;
    for p in 0..args.profiles {
        let mut profile = Profile::new(ProfileId(p as u64));
        profile
            .identifiers
            .insert(kairos_core::IdKey::user(&format!("user-{p}")));
        profile
            .identifiers
            .insert(kairos_core::IdKey::anonymous(&format!(
                "anon-{p:08}-4c1f-9a7e"
            )));
        for k in 0..args.events_per_profile {
            let mut ev = pool[(p * 7 + k * 13) % pool.len()].clone();
            ev.timestamp -= ((args.events_per_profile - k) as i64) * 3_600_000 * 7;
            ev.received_at = ev.timestamp;
            profile.apply(&ev, &cfg, &scoring, ev.timestamp);
        }
        if p % 1000 == 0 {
            encoded += profile.encode().len() as u64;
        }
        profiles.insert(profile.id, profile);
    }
    let after = rss_bytes();
    let n = args.profiles as f64;
    println!(
        "{} profiles with {} events each, built-in scores and segments",
        args.profiles, args.events_per_profile
    );
    println!(
        "resident memory: {:.0} MB total, {:.0} bytes per profile (decoded, in the writer's cache)",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / n
    );
    println!(
        "encoded profile (as stored): {:.0} bytes on average",
        encoded as f64 / (args.profiles.div_ceil(1000)) as f64
    );
    Ok(())
}

pub fn import_bench(args: ImportBenchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| dir.path().join("events.jsonl"));
    let events = if file.exists() && args.file.is_some() {
        let lines = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&file)?));
        let n = lines.count();
        println!("{}: {n} lines, as generated before", file.display());
        n
    } else {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for event in shop_events(args.people, args.events, args.seed) {
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        println!(
            "{} events over {} people, {} MB of JSONL",
            args.events,
            args.people,
            std::fs::metadata(&file)?.len() / 1_000_000
        );
        args.events
    };
    let started = Instant::now();
    crate::import::run(crate::import::ImportArgs::for_bench(
        file,
        dir.path().join("data"),
    ))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "import: {:.0} events/s ({:.1} s, including the final fsync)",
        events as f64 / secs,
        secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_recorder_keeps_the_stages_exactly_and_nothing_else() {
        use metrics::Recorder;
        let r = StageRecorder::default();
        let key = |name: &'static str| metrics::Key::from_static_name(name);
        let meta = metrics::Metadata::new("bench", metrics::Level::INFO, None);
        for ms in 1..=100 {
            r.register_histogram(&key("kairos_group_fsync_seconds"), &meta)
                .record(ms as f64 / 1e3);
        }
        r.register_histogram(&key("kairos_group_events"), &meta)
            .record(1300.0);
        r.register_histogram(&key("kairos_timer_lateness_seconds"), &meta)
            .record(1.0);
        let stages = r.stages.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(stages.len(), 2, "only the stages are kept");
        let fsync = stages["kairos_group_fsync_seconds"]
            .values
            .lock()
            .expect("lock");
        assert_eq!(fsync.len(), 100);
        assert!((fsync.mean() - 50_500.0).abs() < 100.0, "{}", fsync.mean());
        assert!(fsync.value_at_quantile(0.99).abs_diff(99_000) < 100);
        assert!(fsync.max().abs_diff(100_000) < 100);
        let events = stages["kairos_group_events"].values.lock().expect("lock");
        assert_eq!(events.max(), 1300);
    }
}
