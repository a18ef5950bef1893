//! Recommendations at the terminal: `kairos catalog import`, `kairos evaluate recs` and
//! `kairos bench recs`.

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use kairos_core::{Millis, ProfileId};
use kairos_recs::eval::{leave_last_out, History, Report};
use kairos_recs::interaction::{interactions_of, Interactions, Kind};
use kairos_recs::{Context, Item, Method, RecsConfig, Request, Snapshot};
use kairos_store::{Store, StoredEvent};
use serde_json::{json, Map, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum CatalogCommand {
    /// Import catalog items from JSON lines (one item per line) or CSV (a header row with
    /// id, title, category, brand, price, tags (separated by |), in_stock, image_url, url).
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// `.jsonl` / `.ndjson` or `.csv`.
    file: PathBuf,
    /// Send to a running server instead of writing the store (which a server holds).
    #[arg(long)]
    target: Option<String>,
    /// The admin token for --target.
    #[arg(long, env = "KAIROS_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Drop fields that are not item fields (e.g. a shop export's extra columns) instead
    /// of rejecting the item.
    #[arg(long)]
    ignore_unknown_fields: bool,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

/// The catalog item fields the import accepts, as the catalog API does.
const ITEM_FIELDS: &[&str] = kairos_recs::catalog::FIELDS;

/// Items read from a file, and the rejected lines as (line number, reason).
pub struct ReadItems {
    pub items: Vec<Item>,
    pub rejected: Vec<(usize, String)>,
    pub ignored_fields: std::collections::BTreeSet<String>,
}

fn csv_value(column: &str, raw: &str) -> Value {
    match column {
        "price" => raw
            .parse::<f64>()
            .ok()
            .and_then(|p| serde_json::Number::from_f64(p).map(Value::Number))
            .unwrap_or_else(|| Value::String(raw.to_string())),
        "in_stock" => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "in stock" | "in_stock" => Value::Bool(true),
            "false" | "0" | "no" | "n" | "out of stock" | "out_of_stock" => Value::Bool(false),
            _ => Value::String(raw.to_string()),
        },
        "tags" => Value::Array(
            raw.split(['|', ';'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| Value::String(t.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    }
}

/// Reads items from JSONL or CSV (by extension), validating each.
pub fn read_items(path: &Path, ignore_unknown: bool) -> anyhow::Result<ReadItems> {
    let mut out = ReadItems {
        items: Vec::new(),
        rejected: Vec::new(),
        ignored_fields: Default::default(),
    };
    let accept = |line: usize, mut obj: Map<String, Value>, out: &mut ReadItems| {
        if ignore_unknown {
            obj.retain(|k, _| {
                let known = ITEM_FIELDS.contains(&k.as_str());
                if !known {
                    out.ignored_fields.insert(k.clone());
                }
                known
            });
        }
        match Item::from_json(None, &Value::Object(obj)) {
            Ok(i) => out.items.push(i),
            Err(e) => out.rejected.push((line, e.to_string())),
        }
    };
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        let mut r = csv::Reader::from_path(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let headers: Vec<String> = r
            .headers()?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if !ignore_unknown {
            if let Some(bad) = headers.iter().find(|h| !ITEM_FIELDS.contains(&h.as_str())) {
                bail!(
                    "{}: column {bad:?} is not an item field (expected {}; or pass --ignore-unknown-fields)",
                    path.display(),
                    ITEM_FIELDS.join(", ")
                );
            }
        }
        for (n, rec) in r.records().enumerate() {
            let line = n + 2;
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    out.rejected.push((line, format!("not CSV: {e}")));
                    continue;
                }
            };
            let mut obj = Map::new();
            for (h, v) in headers.iter().zip(rec.iter()) {
                let v = v.trim();
                if !v.is_empty() {
                    obj.insert(h.clone(), csv_value(h, v));
                }
            }
            accept(line, obj, &mut out);
        }
    } else {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line_no = n + 1;
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(obj)) => accept(line_no, obj, &mut out),
                Ok(_) => out
                    .rejected
                    .push((line_no, "body: must be a JSON object".into())),
                Err(e) => out.rejected.push((line_no, format!("not JSON: {e}"))),
            }
        }
    }
    Ok(out)
}

pub fn catalog(cmd: CatalogCommand, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let CatalogCommand::Import(args) = cmd;
    let started = Instant::now();
    let read = read_items(&args.file, args.ignore_unknown_fields)?;
    if !read.ignored_fields.is_empty() {
        eprintln!(
            "ignored fields: {}",
            read.ignored_fields
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (line, e) in read.rejected.iter().take(20) {
        eprintln!("{}:{line}: {e}", args.file.display());
    }
    if read.rejected.len() > 20 {
        eprintln!("... and {} more rejected lines", read.rejected.len() - 20);
    }
    let bar = ProgressBar::new(read.items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    const CHUNK: usize = 5000;
    match &args.target {
        Some(target) => {
            let token = args
                .admin_token
                .clone()
                .context("--target needs --admin-token (or KAIROS_ADMIN_TOKEN)")?;
            let url = format!("{}/v1/catalog/items", target.trim_end_matches('/'));
            rt.block_on(async {
                let client = reqwest::Client::new();
                for chunk in read.items.chunks(CHUNK) {
                    let body: Vec<Value> = chunk.iter().map(Item::to_json).collect();
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .with_context(|| format!("sending to {url}"))?;
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if !status.is_success() {
                        bail!("{url} answered {status}: {v}");
                    }
                    bar.inc(chunk.len() as u64);
                }
                Ok(())
            })?;
        }
        None => {
            let config = crate::load_config(&args.config)?;
            let store = crate::train::open_store(&config)?;
            for chunk in read.items.chunks(CHUNK) {
                let rows: Vec<(String, Value)> =
                    chunk.iter().map(|i| (i.id.clone(), i.to_json())).collect();
                store.put_catalog_items(&rows)?;
                bar.inc(chunk.len() as u64);
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "imported {} items, rejected {} lines, in {:.1}s",
        read.items.len(),
        read.rejected.len(),
        started.elapsed().as_secs_f64()
    );
    if read.items.is_empty() && !read.rejected.is_empty() {
        bail!("no valid item in {}", args.file.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Interactions as CSV with a header: person, item, timestamp (seconds, milliseconds
    /// or ISO 8601), and optionally kind (view, cart, purchase; default view). Without
    /// it, the history in the store (--data-dir) is evaluated.
    #[arg(long)]
    interactions: Option<PathBuf>,
    /// Catalog items (JSONL or CSV) for content similarity; default: the store's catalog
    /// when evaluating the store.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// List length.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Evaluate every n-th eligible person (the model learns from everyone).
    #[arg(long, default_value_t = 1)]
    every: usize,
    /// A name for the data set in the output.
    #[arg(long)]
    name: Option<String>,
    /// Also write the interactions read as CSV (person,item,timestamp,kind), e.g. to
    /// evaluate the same history with --interactions or elsewhere.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

fn parse_time(s: &str) -> Option<Millis> {
    if let Ok(n) = s.parse::<i64>() {
        // Seconds until the year 5138, milliseconds after.
        return Some(if n.abs() < 100_000_000_000 {
            n * 1000
        } else {
            n
        });
    }
    kairos_core::time::parse_timestamp(s)
}

fn read_interactions(path: &Path) -> anyhow::Result<Vec<(u64, History)>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot open {}", path.display()))?;
    let headers: Vec<String> = r
        .headers()?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let (Some(pc), Some(ic), Some(tc)) = (
        col(&["person", "user", "userid", "user_id"]),
        col(&["item", "itemid", "item_id", "product_id", "movieid"]),
        col(&["timestamp", "time", "ts"]),
    ) else {
        bail!(
            "{}: the header needs person, item and timestamp columns",
            path.display()
        );
    };
    let kc = col(&["kind", "type", "event"]);
    let mut people: std::collections::BTreeMap<String, History> = Default::default();
    for (n, rec) in r.records().enumerate() {
        let rec = rec?;
        let line = n + 2;
        let get = |c: usize| rec.get(c).unwrap_or("").trim();
        let ts = parse_time(get(tc))
            .with_context(|| format!("{}:{line}: timestamp {:?}", path.display(), get(tc)))?;
        let kind = match kc.map(get) {
            None | Some("") => Kind::View,
            Some(k) => {
                Kind::parse(k).with_context(|| format!("{}:{line}: kind {k:?}", path.display()))?
            }
        };
        people
            .entry(get(pc).to_string())
            .or_default()
            .push((get(ic).to_string(), kind, ts));
    }
    Ok(people
        .into_values()
        .enumerate()
        .map(|(i, h)| (i as u64, h))
        .collect())
}

/// The one place the evaluation reads a person's events from the store.
fn person_events(store: &Store, id: ProfileId) -> anyhow::Result<Vec<StoredEvent>> {
    Ok(store.profile_events(id, None, usize::MAX)?)
}

fn store_interactions(
    store: &Store,
    vocab: &kairos_core::vocab::Vocabulary,
) -> anyhow::Result<Vec<(u64, History)>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.profiles_after(after, 1000)?;
        let Some(last) = page.last().map(|p| p.id) else {
            break;
        };
        for p in &page {
            let mut h: History = Vec::new();
            for e in person_events(store, p.id)? {
                for (item, kind) in interactions_of(&e.event, vocab) {
                    h.push((item, kind, e.event.timestamp));
                }
            }
            if !h.is_empty() {
                out.push((p.id.0, h));
            }
        }
        after = Some(last);
    }
    Ok(out)
}

fn print_report(name: &str, r: &Report) {
    let held = match r.target {
        Kind::View => "any product",
        _ => "a product later carted or bought",
    };
    println!(
        "{name}: {} people ({} evaluated), {} products, {} interactions; leave-last-out ({held}), k = {}",
        r.people, r.evaluated, r.products, r.interactions, r.k
    );
    println!(
        "  {:<11} {:>8} {:>9} {:>9} {:>6}",
        "method",
        format!("HR@{}", r.k),
        format!("NDCG@{}", r.k),
        "coverage",
        "list"
    );
    for m in &r.methods {
        println!(
            "  {:<11} {:>8.4} {:>9.4} {:>8.1}% {:>6.1}",
            m.method,
            m.hr,
            m.ndcg,
            100.0 * m.coverage,
            m.mean_list
        );
    }
}

pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let config = crate::load_config(&args.config)?;
    let model = config.recommendations.model.clone();
    let started = Instant::now();
    let (people, mut catalog, default_name) = match &args.interactions {
        Some(path) => (
            read_interactions(path)?,
            Vec::new(),
            path.display().to_string(),
        ),
        None => {
            let store = crate::train::open_store(&config)?;
            let people = store_interactions(&store, &config.vocabulary)?;
            let mut items = Vec::new();
            for (id, v) in store.catalog_items(None, usize::MAX)? {
                if let Ok(i) = Item::from_json(Some(&id), &v) {
                    items.push(i);
                }
            }
            (people, items, config.data_dir.display().to_string())
        }
    };
    if let Some(c) = &args.catalog {
        let read = read_items(c, true)?;
        if !read.rejected.is_empty() {
            eprintln!(
                "{}: {} catalog lines rejected",
                c.display(),
                read.rejected.len()
            );
        }
        catalog = read.items;
    }
    anyhow::ensure!(!people.is_empty(), "no interactions to evaluate");
    if let Some(path) = &args.export {
        let mut w =
            csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
        w.write_record(["person", "item", "timestamp", "kind"])?;
        for (p, h) in &people {
            for (item, kind, ts) in h {
                let kind = match kind {
                    Kind::View => "view",
                    Kind::Cart => "cart",
                    Kind::Purchase => "purchase",
                };
                w.write_record([
                    p.to_string(),
                    item.clone(),
                    ts.to_string(),
                    kind.to_string(),
                ])?;
            }
        }
        w.flush()?;
    }
    let name = args.name.clone().unwrap_or(default_name);
    let mut reports = Vec::new();
    for target in [Kind::View, Kind::Cart] {
        let report = leave_last_out(people.clone(), &catalog, &model, args.k, args.every, target);
        if report.evaluated == 0 {
            continue;
        }
        print_report(&name, &report);
        let pop = report.methods.iter().find(|m| m.method == "popularity");
        let hybrid = report.methods.iter().find(|m| m.method == "hybrid");
        if let (Some(p), Some(h)) = (pop, hybrid) {
            if p.hr > 0.0 {
                println!(
                    "  hybrid / popularity: HR {:.2}x, NDCG {:.2}x",
                    h.hr / p.hr,
                    h.ndcg / p.ndcg.max(1e-12)
                );
            }
        }
        reports.push(report);
    }
    println!("  ({:.1}s)", started.elapsed().as_secs_f64());
    if let Some(out) = &args.out {
        let v = json!({"data_set": name, "seconds": started.elapsed().as_secs_f64(),
                       "config": model, "reports": reports});
        std::fs::write(out, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    #[arg(long, default_value_t = 10_000_000)]
    interactions: usize,
    /// People; default: interactions / 20.
    #[arg(long)]
    people: Option<usize>,
    /// Threads for the similarity computation.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Recommendation requests timed per method.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write the results as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A small deterministic generator (xorshift*), so the bench needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Synthetic shop: products in clusters of 50 (a cluster shares category and brand);
/// each person shops mostly in one or two clusters, with Zipf-like popularity within and
/// a fifth of interactions anywhere; 70% views, 20% cart additions, 10% purchases over 90
/// days.
fn synthetic(args: &BenchArgs, now: Millis) -> (Interactions, Vec<Item>) {
    const CLUSTER: usize = 50;
    let clusters = args.items.div_ceil(CLUSTER).max(1);
    let people = args.people.unwrap_or(args.interactions / 20).max(1);
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let catalog: Vec<Item> = (0..args.items)
        .map(|i| {
            let c = i / CLUSTER;
            Item {
                id: format!("i{i}"),
                title: format!("Item {i}"),
                category: Some(format!("cat{}", c % 400)),
                brand: Some(format!("brand{}", c % 1500)),
                price: Some(5.0 + (rng.unit() * 6.0).exp()),
                tags: vec![format!("t{}", c % 3000), format!("t{}", (c * 7 + i) % 3000)],
                in_stock: rng.unit() > 0.03,
                image_url: None,
                url: None,
            }
        })
        .collect();
    let mut inter = Interactions::new(500);
    for i in 0..args.items {
        inter.intern(&format!("i{i}"));
    }
    let per_person = args.interactions / people;
    let zipf = |rng: &mut Rng, n: usize| ((rng.unit().powf(2.5)) * n as f64) as usize;
    for p in 0..people {
        let home = [zipf(&mut rng, clusters), zipf(&mut rng, clusters)];
        for _ in 0..per_person {
            let item = if rng.unit() < 0.8 {
                let c = home[(rng.next() % 2) as usize].min(clusters - 1);
                (c * CLUSTER + zipf(&mut rng, CLUSTER)).min(args.items - 1)
            } else {
                zipf(&mut rng, args.items).min(args.items - 1)
            };
            let x = rng.unit();
            let kind = if x < 0.7 {
                Kind::View
            } else if x < 0.9 {
                Kind::Cart
            } else {
                Kind::Purchase
            };
            let ts = now - (rng.unit() * 90.0 * kairos_core::time::DAY as f64) as i64;
            inter.push(p as u64, catalog[item].id.as_str(), kind, ts);
        }
    }
    (inter, catalog)
}

fn quantiles(h: &Histogram<u64>) -> Value {
    json!({
        "p50_us": h.value_at_quantile(0.5) as f64 / 1e3,
        "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
        "p999_us": h.value_at_quantile(0.999) as f64 / 1e3,
        "max_us": h.max() as f64 / 1e3,
        "mean_us": h.mean() / 1e3,
    })
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let now: Millis = 1_795_348_800_000;
    let t = Instant::now();
    let (inter, catalog) = synthetic(&args, now);
    let gen_s = t.elapsed().as_secs_f64();
    println!(
        "generated {} interactions of {} people over {} products in {gen_s:.1}s",
        inter.len(),
        inter.person_count(),
        catalog.len()
    );
    let config = RecsConfig {
        threads: args.threads,
        ..RecsConfig::default()
    };
    // The popularity baseline alone: one pass over the interactions.
    let t = Instant::now();
    let mut pop = vec![0f32; catalog.len()];
    for (_, recs) in inter.people() {
        for r in recs {
            if let Some(x) = pop.get_mut(r.item as usize) {
                *x += config.kind_weight(r.kind);
            }
        }
    }
    let pop_s = t.elapsed().as_secs_f64();
    std::hint::black_box(&pop);
    let clock = Instant::now();
    let timer = move || clock.elapsed().as_millis() as u64;
    let t = Instant::now();
    let snap = Snapshot::build(&inter, &catalog, config.clone(), now, &timer);
    let build_s = t.elapsed().as_secs_f64();
    let st = snap.stats().clone();
    println!(
        "build on {} threads: {build_s:.1}s total (collaborative {:.1}s, content {:.1}s); {} + {} neighbour pairs; popularity counts alone {pop_s:.2}s",
        args.threads,
        st.cf_ms as f64 / 1e3,
        st.content_ms as f64 / 1e3,
        st.cf_pairs,
        st.content_pairs
    );
    // Serving: recommend for random people, each method, same people.
    let keys = inter.person_keys();
    let mut rng = Rng(args.seed ^ 0xdead_beef);
    let chosen: Vec<u64> = (0..args.requests)
        .map(|_| keys[(rng.next() % keys.len() as u64) as usize])
        .collect();
    let mut results = serde_json::Map::new();
    let cases: [(&str, Method, Context); 4] = [
        ("hybrid_browse", Method::Hybrid, Context::Browse),
        ("hybrid_cart", Method::Hybrid, Context::Cart),
        ("item_knn_browse", Method::ItemKnn, Context::Browse),
        ("popularity", Method::Popularity, Context::Browse),
    ];
    for (name, method, context) in cases {
        let mut h = Histogram::<u64>::new(3)?;
        let mut returned = 0usize;
        for &p in &chosen {
            let hist = inter.seen(p);
            let cart: Vec<&str> = hist.iter().rev().take(2).map(|s| s.item).collect();
            let t = Instant::now();
            let recs = snap.recommend(&Request {
                history: &hist,
                cart: if context == Context::Cart { &cart } else { &[] },
                context,
                n: 6,
                now,
                method,
            });
            h.record(t.elapsed().as_nanos() as u64)?;
            returned += recs.len();
        }
        let q = quantiles(&h);
        println!(
            "serve {name:<16} p50 {:>6.1} us  p99 {:>6.1} us  p99.9 {:>6.1} us  ({:.1} items per list)",
            q["p50_us"].as_f64().unwrap_or(0.0),
            q["p99_us"].as_f64().unwrap_or(0.0),
            q["p999_us"].as_f64().unwrap_or(0.0),
            returned as f64 / chosen.len() as f64
        );
        results.insert(name.into(), q);
    }
    if let Some(out) = &args.out {
        let v = json!({
            "items": catalog.len(), "interactions": inter.len(), "people": inter.person_count(),
            "threads": args.threads, "build_seconds": build_s, "cf_seconds": st.cf_ms as f64 / 1e3,
            "content_seconds": st.content_ms as f64 / 1e3, "popularity_seconds": pop_s,
            "cf_pairs": st.cf_pairs, "content_pairs": st.content_pairs, "serving": results,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&v)?)?;
    }
    Ok(())
}
