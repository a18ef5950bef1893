//! The `kairos` binary. The only crate that uses `anyhow`: it turns every library error into
//! a message for a person at a terminal.

mod bench;
mod bench_scoring;
mod evaluate_sendtime;
mod examples;
mod import;
mod recs;
mod train;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kairos_server::{Config, Kairos};
use std::path::PathBuf;

/// mimalloc instead of glibc's malloc: the writer allocates and frees many small objects
/// per event (decoded events, profile fields, encoded values) and frees much of it on other
/// threads; with glibc, allocation was a sixth of the writer's time and the heap's repeated
/// trimming another tenth in page faults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "Real-time engagement scoring and personalization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where configuration comes from; flags win over `KAIROS_*` variables, which win over the
/// TOML file, which wins over built-in defaults.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file (default: none; built-in defaults apply).
    #[arg(long, env = "KAIROS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (holds the store and generated dev credentials).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server on the embedded store.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Load history: Segment JSONL (.jsonl or .jsonl.gz), or a CRM CSV with --identify.
    Import(import::ImportArgs),
    /// Drive a realistic synthetic shop through the public API (or into a JSONL file).
    Simulate(kairos_sim::SimulateArgs),
    /// Write the training table of a predictive model as CSV: features at each cut-off from
    /// the stored history replayed through the core, the label after it (no leakage).
    Examples(examples::ExamplesArgs),
    /// Train a predictive model on the event history (or a CSV table), evaluate it against
    /// the rule scores, store it as a new version, write the report (JSON + HTML).
    Train(train::TrainArgs),
    /// Evaluate a stored model on labels that matured after its training (or a saved table
    /// model on a table); writes the report. `kairos evaluate send-time` scores the
    /// send-time model against a simulator's ground truth; `kairos evaluate recs` the
    /// recommendations, leave-last-out.
    Evaluate(train::EvaluateCommand),
    /// List, show, activate and roll back model versions.
    Models(train::ModelsArgs),
    /// The product catalog recommendations draw on.
    #[command(subcommand)]
    Catalog(recs::CatalogCommand),
    /// Benchmarks (see docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn load_config(args: &ConfigArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAIROS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lsm_tree=warn,fjall=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn serve(args: ConfigArgs, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = load_config(&args)?;
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(creds) = config.ensure_credentials()? {
        eprintln!(
            "No write key or admin token configured; using development credentials \
             (kept in {}):\n  write key:   {}\n  admin token: {}",
            config.data_dir.join("dev-credentials.json").display(),
            creds.write_key,
            creds.admin_token
        );
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listen = config.listen.clone();
    let store_options = config.store_options();
    tracing::info!(
        "store block cache: {} MB ([store] cache_mb, KAIROS_CACHE_MB); flush and compaction \
         threads at nice {} ([store] worker_nice, KAIROS_WORKER_NICE)",
        store_options.cache_bytes / (1024 * 1024),
        store_options.worker_nice.unwrap_or(0)
    );
    let kairos = Kairos::open(config, kairos_server::system_clock(), Some(metrics))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!("kairos listening on http://{addr}");
    println!("listening on http://{addr}");
    kairos.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Turns transparent huge pages off for this process. Memory the allocator hands back to
/// the kernel and takes again is zeroed on the next fault, and with huge pages each such
/// fault zeroes 2 MB: in `kairos import` a quarter of the writer's samples were the
/// kernel clearing pages, and in alternating runs the import ran 20-30% faster without
/// them (system time halved); generating `bench ingest`'s requests took 2.4 times less
/// CPU. mimalloc would do this itself with `MIMALLOC_ALLOW_THP=0`, read only at process
/// start; this covers kernels set to `always` as well as `madvise`.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; the
    // arguments are the documented ones and nothing is read from or written to our memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { config, listen } => rt.block_on(serve(config, listen)),
        Command::Import(args) => import::run(args),
        Command::Simulate(args) => rt.block_on(kairos_sim::run(args)).map(|_| ()),
        Command::Examples(args) => examples::run(args),
        Command::Train(args) => train::train(args),
        Command::Evaluate(train::EvaluateCommand {
            what: Some(train::EvaluateWhat::SendTime(a)),
            ..
        }) => evaluate_sendtime::run(a),
        Command::Evaluate(train::EvaluateCommand {
            what: Some(train::EvaluateWhat::Recs(a)),
            ..
        }) => recs::evaluate(a),
        Command::Evaluate(c) => train::evaluate(c.model),
        Command::Models(args) => train::models(args, &rt),
        Command::Catalog(cmd) => recs::catalog(cmd, &rt),
        Command::Bench(bench::BenchCommand::Recs(a)) => recs::bench(a),
        // Import drives the writer with blocking calls: keep it off the async runtime.
        Command::Bench(bench::BenchCommand::Import(a)) => bench::import_bench(a),
        Command::Bench(bench::BenchCommand::Backfill(a)) => bench_scoring::backfill(a),
        Command::Bench(bench::BenchCommand::Timers(a)) => bench_scoring::timers(a),
        Command::Bench(cmd) => rt.block_on(bench::run(cmd)),
    }
}
