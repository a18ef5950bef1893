//! `kairos import`: loads history straight into the store, through the same decoding,
//! validation, dedupe and writer as HTTP ingest, without the HTTP layer.

use crate::ConfigArgs;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kairos_core::segment::{decode_line, RequestEnv};
use kairos_core::{Event, EventKind};
use kairos_store::{Ingestor, Outcome, Store, Submission};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Segment JSONL (`.jsonl`, `.jsonl.gz`), or with --identify a CSV with a header row.
    file: PathBuf,
    /// Treat FILE as a CRM export: one identify call per row, one column per trait.
    #[arg(long)]
    identify: bool,
    /// With --identify: the column that identifies the person (default: the first of
    /// userId, user_id, id, email that exists). An `email` column identifies by email.
    #[arg(long)]
    id_column: Option<String>,
    /// Source name recorded on imported events.
    #[arg(long, default_value = "import")]
    source: String,
    /// Events per submission to the writer (one group commit each). Smaller submissions
    /// keep fewer decoded events waiting in the writer's queue: with 5,000, the queue's
    /// memory (over 1 GB) was faulted in afresh and zeroed by the kernel.
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Arrival time recorded on the imported events, in milliseconds since the epoch
    /// (default: now). Events without a messageId get one derived from it, so re-running
    /// an import with the same value skips them as duplicates.
    #[arg(long)]
    received_at: Option<i64>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Counts bytes read from the file, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open_input(path: &PathBuf, read: Arc<AtomicU64>) -> anyhow::Result<Box<dyn BufRead>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    drop(f);
    let f = File::open(path)?;
    let counting = Counting { inner: f, read };
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::new(counting)),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 20, counting)))
    }
}

impl ImportArgs {
    /// Arguments for `kairos bench import`: a JSONL file into a fresh data directory.
    pub fn for_bench(file: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            file,
            identify: false,
            id_column: None,
            source: "bench".into(),
            chunk: 1000,
            received_at: None,
            config: ConfigArgs {
                config: None,
                data_dir: Some(data_dir),
            },
        }
    }
}

#[derive(Default)]
struct Totals {
    lines: u64,
    outcome: Outcome,
}

/// Buffers events into chunks, submits them, and keeps a bounded window of unanswered ones.
struct Pipeline {
    ingest: Ingestor,
    pending: VecDeque<oneshot::Receiver<Result<Outcome, kairos_store::StoreError>>>,
    totals: Totals,
    events: Vec<Event>,
    rejected: Vec<kairos_core::segment::Rejected>,
    chunk: usize,
    now: i64,
    source: String,
    /// Events the writer is done with, freed here where they were decoded (see
    /// `WriterOptions::return_events`).
    used: std::sync::mpsc::Receiver<Vec<kairos_store::Prepared>>,
}

impl Pipeline {
    /// Adds one line's verdict; submits a chunk when it is full.
    fn add(&mut self, item: Result<Event, kairos_core::segment::Rejected>) -> anyhow::Result<()> {
        match item {
            Ok(e) => self.events.push(e),
            Err(r) => self.rejected.push(r),
        }
        self.totals.lines += 1;
        if self.events.len() + self.rejected.len() >= self.chunk {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> anyhow::Result<()> {
        if self.events.is_empty() && self.rejected.is_empty() {
            return Ok(());
        }
        let (events, rejected) = (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.rejected),
        );
        let (now, source) = (self.now, self.source.clone());
        self.submit(events, rejected, now, &source)
    }

    fn submit(
        &mut self,
        events: Vec<Event>,
        rejected: Vec<kairos_core::segment::Rejected>,
        now: i64,
        source: &str,
    ) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.ingest.submit(Submission {
            events: kairos_store::Prepared::all(events),
            rejected,
            received_at: now,
            source: source.to_string(),
            reply: Some(tx),
        })?;
        self.pending.push_back(rx);
        while let Ok(used) = self.used.try_recv() {
            drop(used);
        }
        // The writer's bounded queue is the backpressure. Waiting here for answers as well
        // (it used to, beyond eight) made parsing wait for each group's commit, so parsing,
        // planning and committing took turns instead of overlapping.
        while let Some(rx) = self.pending.front_mut() {
            match rx.try_recv() {
                Ok(answer) => {
                    self.pending.pop_front();
                    self.count(answer?);
                }
                Err(oneshot::error::TryRecvError::Empty) => break,
                Err(oneshot::error::TryRecvError::Closed) => bail!("the writer stopped"),
            }
        }
        Ok(())
    }

    fn wait_one(&mut self) -> anyhow::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let o = rx.blocking_recv().context("the writer stopped")??;
            self.count(o);
        }
        Ok(())
    }

    fn count(&mut self, o: Outcome) {
        let t = &mut self.totals.outcome;
        t.accepted += o.accepted;
        t.duplicates += o.duplicates;
        t.suppressed += o.suppressed;
        t.dead_lettered += o.dead_lettered;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let config = crate::load_config(&args.config)?;
    config.validate()?;
    let store_path = config.data_dir.join("store");
    let store_options = kairos_store::StoreOptions {
        journal_compression: false,
        ..config.store_options()
    };
    let store = Store::open(&store_path, &store_options).with_context(|| {
        format!(
            "cannot open the store at {} (is `kairos serve` running on it? stop it first)",
            store_path.display()
        )
    })?;
    let mut opts = config.writer_options();
    opts.max_group_events = opts.max_group_events.max(50_000);
    opts.queue_capacity = 16;
    // Nothing is acknowledged to anyone before the import ends, and the writer persists
    // once when it stops. Every group still commits atomically (events, dedupe keys and
    // the profiles they built together), so a crash leaves a consistent prefix of the file
    // that a re-run skips as duplicates.
    opts.sync = false;
    let (return_events, used) = std::sync::mpsc::channel();
    opts.return_events = Some(return_events);
    let durable = store.clone();
    let (ingest, writer) = Ingestor::start(store, opts)?;
    let size = std::fs::metadata(&args.file)?.len();
    let read = Arc::new(AtomicU64::new(0));
    let input = open_input(&args.file, read.clone())?;
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let now = args.received_at.unwrap_or_else(now_ms);
    let mut pipe = Pipeline {
        ingest,
        pending: VecDeque::new(),
        totals: Totals::default(),
        events: Vec::with_capacity(args.chunk),
        rejected: Vec::new(),
        chunk: args.chunk.max(1),
        now,
        source: args.source.clone(),
        used,
    };
    if args.identify {
        import_csv(&args, input, &mut pipe, now, &bar, &read)?;
    } else {
        import_jsonl(&args, input, &mut pipe, now, &bar, &read)?;
    }
    pipe.flush_chunk()?;
    while !pipe.pending.is_empty() {
        pipe.wait_one()?;
    }
    let Pipeline { ingest, totals, .. } = pipe;
    drop(ingest);
    let _ = writer.join();
    // The writer persists when it stops but can only log a failure; the import's one
    // fsync must fail the import.
    durable
        .persist()
        .context("cannot make the imported events durable")?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let o = totals.outcome;
    println!(
        "imported {} lines in {:.1} s ({:.0} lines/s): {} stored, {} duplicates, {} suppressed (erased people), {} rejected (listed under /v1/dead-letters)",
        totals.lines,
        secs,
        totals.lines as f64 / secs.max(1e-9),
        o.accepted,
        o.duplicates,
        o.suppressed,
        o.dead_lettered
    );
    Ok(())
}

fn import_jsonl(
    args: &ImportArgs,
    mut input: Box<dyn BufRead>,
    pipe: &mut Pipeline,
    now: i64,
    bar: &ProgressBar,
    read: &AtomicU64,
) -> anyhow::Result<()> {
    let config = crate::load_config(&args.config)?;
    let limits = config.limits();
    let env = RequestEnv {
        received_at: now,
        correct_skew: false,
        source: args.source.clone(),
    };
    let mut line = String::new();
    let mut index = 0usize;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        pipe.add(decode_line(text, index, &env, &limits))?;
        index += 1;
        if index.is_multiple_of(10_000) {
            bar.set_position(read.load(Ordering::Relaxed));
        }
    }
    Ok(())
}

/// A CSV cell as JSON: booleans and canonical numbers become JSON values, the rest strings
/// (so a zip code like 01234 stays a string).
fn cell_value(s: &str) -> Value {
    match s {
        "true" | "TRUE" => return Value::Bool(true),
        "false" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        if i.to_string() == s {
            return Value::from(i);
        }
    }
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.to_string() == s {
            return Value::from(f);
        }
    }
    Value::String(s.to_string())
}

fn import_csv(
    args: &ImportArgs,
    input: Box<dyn BufRead>,
    pipe: &mut Pipeline,
    now: i64,
    bar: &ProgressBar,
    read: &AtomicU64,
) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let id_col = match &args.id_column {
        Some(c) => c.clone(),
        None => ["userId", "user_id", "id", "email"]
            .iter()
            .find(|c| headers.iter().any(|h| h == *c))
            .map(|c| c.to_string())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no identifier column: pass --id-column (headers: {})",
                    headers.join(", ")
                )
            })?,
    };
    let Some(id_idx) = headers.iter().position(|h| *h == id_col) else {
        bail!(
            "column {id_col:?} is not in the header ({})",
            headers.join(", ")
        );
    };
    let by_email = id_col.eq_ignore_ascii_case("email");
    for (index, record) in reader.records().enumerate() {
        let record = record?;
        let id = record.get(id_idx).unwrap_or("").trim().to_string();
        let raw = record.iter().collect::<Vec<_>>().join(",");
        if id.is_empty() {
            pipe.add(Err(kairos_core::segment::Rejected {
                index,
                message_id: None,
                error: kairos_core::segment::FieldError::new(id_col.clone(), "is empty"),
                raw,
            }))?;
            continue;
        }
        let mut traits = Map::new();
        for (h, v) in headers.iter().zip(record.iter()) {
            let v = v.trim();
            if (h != &id_col || by_email) && !v.is_empty() {
                traits.insert(h.clone(), cell_value(v));
            }
        }
        if by_email && kairos_core::identity::normalize_email(&id).is_none() {
            pipe.add(Err(kairos_core::segment::Rejected {
                index,
                message_id: None,
                error: kairos_core::segment::FieldError::new(
                    id_col.clone(),
                    "is not an email address",
                ),
                raw,
            }))?;
            continue;
        }
        // The same row imported twice is the same message: re-imports are idempotent.
        let message_id = format!(
            "csv-{:032x}",
            xxhash_rust::xxh3::xxh3_128(format!("{}\u{1f}{raw}", headers.join(",")).as_bytes())
        );
        pipe.add(Ok(Event {
            message_id,
            kind: EventKind::Identify,
            event: None,
            name: None,
            user_id: (!by_email).then(|| id.clone()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: now,
            received_at: now,
            properties: Map::new(),
            traits,
            context: Map::new(),
            source: args.source.clone(),
        }))?;
        bar.set_position(read.load(Ordering::Relaxed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cell_value;
    use serde_json::json;

    #[test]
    fn csv_cells_keep_zip_codes_as_strings() {
        assert_eq!(cell_value("01234"), json!("01234"));
        assert_eq!(cell_value("42"), json!(42));
        assert_eq!(cell_value("4.5"), json!(4.5));
        assert_eq!(cell_value("true"), json!(true));
        assert_eq!(cell_value("Berlin"), json!("Berlin"));
    }
}
