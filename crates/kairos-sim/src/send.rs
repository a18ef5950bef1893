//! `kairos simulate`: generate the shop and send it to a Kairos server, write it to a file,
//! or both.

use crate::model::{SimConfig, SimEvent, Simulation, DAY};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Kairos base URL to send to.
    #[arg(long)]
    pub target: Option<String>,
    /// Write key (HTTP Basic user name).
    #[arg(long, env = "KAIROS_WRITE_KEY", default_value = "")]
    pub write_key: String,
    #[arg(long, default_value_t = 10_000)]
    pub people: usize,
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// 0: as fast as possible, timestamps cover the `days` days that end now. N > 0: live,
    /// simulated time starts now and runs N times faster than the wall clock.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// The instant the simulated days start (ISO-8601, e.g. `2026-11-01T00:00:00Z`; people
    /// in zones east of UTC begin their first day some hours before) instead of `days`
    /// before now, so that the same seed gives the same events whatever
    /// the day: weekdays, time zones and DST fall the same way. Not with `--speed`.
    #[arg(long, conflicts_with = "speed")]
    pub start: Option<jiff::Timestamp>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also (or only, without --target) write the events as Segment JSONL (`.gz`: gzipped).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the people's ground truth (intent, zone, preferred hours) as JSONL.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Write the product catalog as JSONL.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Send gzip-compressed bodies.
    #[arg(long)]
    pub gzip: bool,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct SimSummary {
    pub events: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub seconds: f64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn jsonl_writer(path: &PathBuf) -> anyhow::Result<Box<dyn Write + Send>> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let buf = std::io::BufWriter::with_capacity(1 << 20, f);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::write::GzEncoder::new(
            buf,
            flate2::Compression::fast(),
        )))
    } else {
        Ok(Box::new(buf))
    }
}

fn write_lines<T: serde::Serialize>(
    path: &PathBuf,
    items: impl Iterator<Item = T>,
) -> anyhow::Result<()> {
    let mut w = jsonl_writer(path)?;
    for it in items {
        serde_json::to_writer(&mut w, &it)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Posts batches with bounded concurrency, retrying as the Segment SDKs do.
struct Sender {
    client: reqwest::Client,
    url: String,
    write_key: String,
    gzip: bool,
    permits: Arc<Semaphore>,
    tasks: tokio::task::JoinSet<anyhow::Result<(u64, u64)>>,
}

impl Sender {
    fn new(target: &str, write_key: &str, gzip: bool, concurrency: usize) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            url: format!("{}/v1/batch", target.trim_end_matches('/')),
            write_key: write_key.to_string(),
            gzip,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: tokio::task::JoinSet::new(),
        })
    }

    async fn send(&mut self, batch: Vec<Value>) -> anyhow::Result<()> {
        let permit = self.permits.clone().acquire_owned().await?;
        let body = serde_json::to_vec(&json!({"batch": batch, "sentAt": crate::model::iso_now()}))?;
        let body = if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&body)?;
            enc.finish()?
        } else {
            body
        };
        let (client, url, key, gzip) = (
            self.client.clone(),
            self.url.clone(),
            self.write_key.clone(),
            self.gzip,
        );
        self.tasks.spawn(async move {
            let _permit = permit;
            let mut delay = Duration::from_millis(100);
            for attempt in 0..10 {
                let mut req = client
                    .post(&url)
                    .basic_auth(&key, Some(""))
                    .header("content-type", "application/json")
                    .body(body.clone());
                if gzip {
                    req = req.header("content-encoding", "gzip");
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        let accepted = v["accepted"].as_u64().unwrap_or(0);
                        let rejected = v["rejected"].as_array().map_or(0, |a| a.len() as u64);
                        return Ok((accepted, rejected));
                    }
                    Ok(r) if r.status() == 429 || r.status().is_server_error() => {
                        let wait = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .map(Duration::from_secs)
                            .unwrap_or(delay);
                        tokio::time::sleep(wait).await;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        anyhow::bail!("{url} answered {status}: {text}");
                    }
                    Err(e) if attempt < 9 => {
                        tracing_free_log(&format!("retrying after error: {e}"));
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => return Err(e.into()),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            anyhow::bail!("gave up on a batch after 10 attempts")
        });
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        let (mut a, mut r) = (0, 0);
        while let Some(res) = self.tasks.join_next().await {
            let (x, y) = res??;
            a += x;
            r += y;
        }
        Ok((a, r))
    }

    /// Collects finished sends without waiting, so the join set stays small.
    fn reap(&mut self, totals: &mut (u64, u64)) -> anyhow::Result<()> {
        while let Some(res) = self.tasks.try_join_next() {
            let (x, y) = res??;
            totals.0 += x;
            totals.1 += y;
        }
        Ok(())
    }
}

fn tracing_free_log(msg: &str) {
    eprintln!("kairos simulate: {msg}");
}

/// Runs the simulation as the arguments say and returns what was sent.
pub async fn run(args: SimulateArgs) -> anyhow::Result<SimSummary> {
    let target = match (&args.target, &args.out) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(_)) => None,
        (None, None) => Some("http://127.0.0.1:8080".to_string()),
    };
    if target.is_some() && args.write_key.is_empty() {
        anyhow::bail!("a write key is needed to send: --write-key or KAIROS_WRITE_KEY (kairos serve prints one)");
    }
    let live = args.speed > 0.0;
    let start_ms = match args.start {
        // A history running past now would send events from the future.
        Some(t) if t.as_millisecond() + args.days as i64 * DAY > now_ms() => anyhow::bail!(
            "--start {t} plus --days {} ends after now: start earlier or simulate fewer days",
            args.days
        ),
        Some(t) => t.as_millisecond(),
        None if live => now_ms(),
        None => (now_ms() - args.days as i64 * DAY).div_euclid(60_000) * 60_000,
    };
    let sim = Simulation::new(SimConfig {
        people: args.people,
        days: args.days,
        seed: args.seed,
        start_ms,
    });
    if let Some(path) = &args.truth {
        write_lines(path, sim.people.iter())?;
    }
    if let Some(path) = &args.catalog {
        write_lines(path, sim.catalog.iter())?;
    }
    let mut file = match &args.out {
        Some(p) => Some(jsonl_writer(p)?),
        None => None,
    };
    let mut sender = match &target {
        Some(t) => Some(Sender::new(
            t,
            &args.write_key,
            args.gzip,
            args.concurrency,
        )?),
        None => None,
    };
    let bar = ProgressBar::new(args.days as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} day {pos}/{len} {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let wall_start = now_ms();
    let mut summary = SimSummary::default();
    let mut totals = (0u64, 0u64);
    let mut batch: Vec<Value> = Vec::with_capacity(args.batch_size);
    let mut day_seen = 0u64;
    // As fast as possible, the history ends now: a simulated day's evening (or a late email
    // open) past this moment would be an event from the future.
    let history_end = start_ms + args.days as i64 * DAY;
    for SimEvent { ts, value, .. } in sim.events() {
        if !live && ts > history_end {
            continue;
        }
        {
            if live {
                // Simulated time runs `speed` times faster than the wall clock.
                let due = wall_start + ((ts - start_ms) as f64 / args.speed) as i64;
                let wait = due - now_ms();
                if wait > 0 {
                    if let Some(s) = sender.as_mut() {
                        if !batch.is_empty() {
                            s.send(std::mem::take(&mut batch)).await?;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
            }
            if let Some(f) = file.as_mut() {
                serde_json::to_writer(&mut *f, &value)?;
                f.write_all(b"\n")?;
            }
            summary.events += 1;
            if let Some(s) = sender.as_mut() {
                batch.push(value);
                if batch.len() >= args.batch_size {
                    s.send(std::mem::take(&mut batch)).await?;
                    s.reap(&mut totals)?;
                }
            }
        }
        let d = ((ts - start_ms).max(0) / DAY) as u64;
        if d > day_seen {
            day_seen = d;
            bar.set_position(d.min(args.days as u64));
            bar.set_message(format!("{} events", summary.events));
        }
    }
    if let Some(mut s) = sender {
        if !batch.is_empty() {
            s.send(batch).await?;
        }
        s.reap(&mut totals)?;
        let (a, r) = s.finish().await?;
        totals.0 += a;
        totals.1 += r;
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    bar.finish_and_clear();
    summary.accepted = totals.0;
    summary.rejected = totals.1;
    summary.seconds = started.elapsed().as_secs_f64();
    println!(
        "simulated {} people over {} days: {} events{} in {:.1} s ({:.0} events/s)",
        args.people,
        args.days,
        summary.events,
        if target.is_some() {
            format!(
                ", {} accepted, {} rejected",
                summary.accepted, summary.rejected
            )
        } else {
            String::new()
        },
        summary.seconds,
        summary.events as f64 / summary.seconds.max(1e-9)
    );
    Ok(summary)
}
