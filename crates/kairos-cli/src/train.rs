//! `kairos train`, `kairos evaluate`, `kairos models`: predictive models from the command
//! line. Training and evaluation on the event history open the data directory of a
//! stopped server (a running one trains through `POST /v1/models/{name}/train`); plain
//! tables (`--table`) need no store. `kairos models` talks to a running server when given
//! `--server`, else edits the stopped store.

use anyhow::{bail, Context};
use kairos_ml::calibrate::Method;
use kairos_ml::data::Dataset;
use kairos_ml::metrics::Evaluation;
use kairos_ml::model::{Kind, TrainSpec};
use kairos_ml::report::{DataSummary, FoldResult, Report};
use kairos_ml::split::stratified_kfold;
use kairos_ml::Model;
use kairos_server::training::{self, ModelSpec};
use kairos_store::Store;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The model to train (its settings come from `[models.<name>]`, flags override).
    #[arg(long)]
    model: Option<String>,
    /// The label rule, e.g. `did("Order Completed", within: 7d)`.
    #[arg(long)]
    label: Option<String>,
    /// How far after a cut-off the label looks.
    #[arg(long)]
    horizon: Option<String>,
    /// Cut-offs every this long over the history.
    #[arg(long)]
    every: Option<String>,
    /// gbdt, logistic or ftrl.
    #[arg(long)]
    learner: Option<Kind>,
    /// platt, isotonic or none.
    #[arg(long, value_parser = parse_method)]
    calibration: Option<Method>,
    /// Rolling-origin cross-validation folds on history; stratified k-fold on a table.
    #[arg(long)]
    cv: Option<usize>,
    /// Serve the new version at once.
    #[arg(long)]
    activate: bool,
    /// Train only when the served version has drifted (or none is served): for cron.
    #[arg(long)]
    if_drifted: bool,
    /// Train on a CSV table instead of the event history.
    #[arg(long)]
    table: Option<PathBuf>,
    /// The table's label column (1/0, yes/no, true/false).
    #[arg(long)]
    target: Option<String>,
    /// Table columns to leave out (ids, leaks), comma-separated.
    #[arg(long, value_delimiter = ',')]
    drop: Vec<String>,
    /// Where a table model is saved (default: next to the table, `.model.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where reports go (default: `<data-dir>/reports`, or next to the table).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Train in this running server (e.g. http://127.0.0.1:8080) instead of on a stopped
    /// store: for scheduled retraining with `--if-drifted`.
    #[arg(long, env = "KAIROS_SERVER")]
    server: Option<String>,
    #[arg(long, env = "KAIROS_ADMIN_TOKEN")]
    admin_token: Option<String>,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

fn parse_method(s: &str) -> Result<Method, String> {
    match s {
        "platt" => Ok(Method::Platt),
        "isotonic" => Ok(Method::Isotonic),
        "none" => Ok(Method::None),
        _ => Err(format!("`{s}` is not one of platt, isotonic, none")),
    }
}

/// Opens the store of `config`'s data directory for an offline job over everyone's
/// history (a larger block cache unless one is configured).
pub fn open_store(config: &kairos_server::config::Config) -> anyhow::Result<Store> {
    let path = config.data_dir.join("store");
    Store::open(&path, &config.replay_store_options()).with_context(|| {
        format!(
            "opening {} (is a server running on it? stop it first, or use the HTTP API)",
            path.display()
        )
    })
}

/// Writes `<dir>/<stem>.json` and `.html` and prints the text report.
fn save_report(report: &Report, dir: &Path, stem: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json_path = dir.join(format!("{stem}.json"));
    let html_path = dir.join(format!("{stem}.html"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)?;
    std::fs::write(&html_path, report.html())?;
    println!("{}", report.text());
    println!(
        "report: {} and {}",
        json_path.display(),
        html_path.display()
    );
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replaying histories {bar:40} {pos}/{len} people")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(table) = &args.table {
        return train_table(&args, table);
    }
    let config = crate::load_config(&args.config)?;
    let Some(name) = args.model.clone() else {
        bail!("--model NAME is required (or --table FILE --target COLUMN)");
    };
    let mut spec: ModelSpec = config.models.get(&name).cloned().unwrap_or_default();
    if let Some(l) = &args.label {
        spec.label = l.clone();
    }
    if let Some(h) = &args.horizon {
        spec.horizon = h.clone();
    }
    if let Some(e) = &args.every {
        spec.every = e.clone();
    }
    if let Some(l) = args.learner {
        spec.learner = l;
    }
    if let Some(c) = args.calibration {
        spec.calibration = c;
    }
    if let Some(k) = args.cv {
        spec.cv_folds = k;
    }
    if let Some(server) = &args.server {
        return train_remote(&args, server, &name, &spec, &config);
    }
    let store = open_store(&config)?;
    if args.if_drifted {
        let active = store.active_model(&name)?;
        let status = store.model_status(&name)?;
        match (active, &status) {
            (None, _) => println!("model {name}: none is served; training"),
            (Some(v), Some(s)) if s["drifted"] == true => println!(
                "model {name} v{v} has drifted (score PSI {:.3}); training",
                s["score_psi"].as_f64().unwrap_or(0.0)
            ),
            (Some(v), Some(s)) => {
                println!(
                    "model {name} v{v} has not drifted (score PSI {:.3}, threshold {}); nothing to do",
                    s["score_psi"].as_f64().unwrap_or(0.0),
                    s["psi_threshold"]
                );
                return Ok(());
            }
            (Some(v), None) => {
                println!("model {name} v{v}: no monitoring status yet (has the server run with it?); nothing to do");
                return Ok(());
            }
        }
    }
    let defs = config.definitions(store.definitions()?);
    let bar = progress_bar();
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total.max(done));
        bar.set_position(done);
    };
    let now = kairos_server::system_clock()();
    let trained = training::train(
        &store,
        &defs,
        &config.core(),
        &name,
        &spec,
        args.activate || args.if_drifted && store.active_model(&name)?.is_some(),
        now,
        &mut progress,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("reports"));
    save_report(
        &trained.report,
        &dir,
        &format!("{name}-v{}", trained.version),
    )?;
    println!(
        "stored model {name} version {}{}",
        trained.version,
        if trained.activated {
            " (active: a server started on this store serves it)"
        } else {
            " (not active: `kairos models activate` to serve it)"
        }
    );
    Ok(())
}

/// Training through a running server's API: the same pipeline, run beside ingest.
fn train_remote(
    args: &TrainArgs,
    server: &str,
    name: &str,
    spec: &ModelSpec,
    config: &kairos_server::Config,
) -> anyhow::Result<()> {
    let token = args
        .admin_token
        .clone()
        .context("--admin-token (or KAIROS_ADMIN_TOKEN) is needed with --server")?;
    let base = server.trim_end_matches('/').to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let get = |path: String| {
            let req = client.get(format!("{base}{path}")).bearer_auth(&token);
            async move {
                let r = req.send().await?;
                let status = r.status();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                Ok::<_, anyhow::Error>((status, v))
            }
        };
        let (status, m) = get(format!("/v1/models/{name}/monitoring")).await?;
        let served = status.is_success();
        if args.if_drifted {
            if !served {
                println!("model {name}: none is served; training");
            } else if m["drifted"] == true {
                println!("model {name} v{} has drifted (score PSI {:.3}); training", m["version"], m["score_psi"].as_f64().unwrap_or(0.0));
            } else {
                println!(
                    "model {name} v{} has not drifted (score PSI {:.3}, threshold {}); nothing to do",
                    m["version"],
                    m["score_psi"].as_f64().unwrap_or(0.0),
                    m["psi_threshold"]
                );
                return Ok(());
            }
        }
        let activate = args.activate || (args.if_drifted && served);
        let r = client
            .post(format!("{base}/v1/models/{name}/train?activate={activate}"))
            .bearer_auth(&token)
            .json(spec)
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            bail!("{status}: {}", v["error"]["message"]);
        }
        let bar = progress_bar();
        let done = loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let (_, t) = get(format!("/v1/models/{name}/training")).await?;
            if t["state"] != "running" {
                break t;
            }
            bar.set_length(t["total"].as_u64().unwrap_or(0));
            bar.set_position(t["done"].as_u64().unwrap_or(0));
        };
        bar.finish_and_clear();
        if done["state"] != "done" {
            bail!("training failed: {}", done["error"]);
        }
        let version = done["version"].as_u64().unwrap_or(0);
        let (_, report) = get(format!("/v1/models/{name}/versions/{version}/report")).await?;
        let report: Report = serde_json::from_value(report)?;
        let dir = args
            .report_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("reports"));
        save_report(&report, &dir, &format!("{name}-v{version}"))?;
        println!(
            "model {name} version {version} stored in the server{}",
            if done["activated"] == true { " and serving" } else { "" }
        );
        Ok(())
    })
}

/// A plain table: 80/20 stratified holdout (and k-fold CV on request), regularised
/// logistic regression as the baseline beside the chosen learner.
fn train_table(args: &TrainArgs, table: &Path) -> anyhow::Result<()> {
    let Some(target) = &args.target else {
        bail!("--table needs --target COLUMN");
    };
    let file =
        std::fs::File::open(table).with_context(|| format!("opening {}", table.display()))?;
    let drop: Vec<&str> = args.drop.iter().map(String::as_str).collect();
    let data = Dataset::from_csv(file, target, &drop)?;
    data.check_trainable()?;
    let spec = TrainSpec {
        learner: args.learner.unwrap_or_default(),
        calibration: args.calibration.unwrap_or_default(),
        ..TrainSpec::default()
    };
    let folds = stratified_kfold(&data.y, 5, 11);
    let (train, test) = (data.subset(&folds[0].train), data.subset(&folds[0].test));
    let (model, log) = Model::fit(&spec, &train)?;
    let mut report = Report {
        model: args.model.clone().unwrap_or_else(|| stem(table)),
        learner: model.learner.kind().to_string(),
        label: target.clone(),
        train_seconds: log.seconds,
        ..Report::default()
    };
    let p = model.predict_dataset(&test);
    report.evaluations.push(Evaluation::new(
        &format!("model ({})", model.learner.kind()),
        &p,
        &test.y,
        model.threshold,
    ));
    if spec.learner != Kind::Logistic {
        let base = TrainSpec {
            learner: Kind::Logistic,
            ..spec.clone()
        };
        let (lin, _) = Model::fit(&base, &train)?;
        report.evaluations.push(Evaluation::new(
            "baseline (logistic regression)",
            &lin.predict_dataset(&test),
            &test.y,
            lin.threshold,
        ));
    }
    let base = training::evaluate(&model, &train, &test, &Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    report.importance = base.importance;
    if let Some(k) = args.cv.filter(|&k| k >= 2) {
        for (i, f) in stratified_kfold(&data.y, k, 11).into_iter().enumerate() {
            let (tr, te) = (data.subset(&f.train), data.subset(&f.test));
            let (m, _) = Model::fit(&spec, &tr)?;
            let e = Evaluation::new("fold", &m.predict_dataset(&te), &te.y, m.threshold);
            report
                .folds
                .push(FoldResult::new(i as u32 + 1, tr.rows(), te.rows(), &e));
        }
    }
    report.data = DataSummary {
        source: table.display().to_string(),
        split: "stratified 80/20 holdout (seed 11)".into(),
        train_rows: train.rows() as u64,
        test_rows: test.rows() as u64,
        train_positive_rate: train.positive_rate(),
        test_positive_rate: test.positive_rate(),
        features: data.cols() as u64,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| table.with_extension("model.json"));
    std::fs::write(&out, model.to_bytes()).with_context(|| format!("writing {}", out.display()))?;
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| table.parent().map(Path::to_path_buf).unwrap_or_default());
    save_report(&report, &dir, &format!("{}-report", report.model))?;
    println!("model saved to {}", out.display());
    Ok(())
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "table".into())
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvaluateCommand {
    #[command(subcommand)]
    pub what: Option<EvaluateWhat>,
    #[command(flatten)]
    pub model: EvaluateArgs,
}

#[derive(clap::Subcommand)]
pub enum EvaluateWhat {
    /// The send-time model against a simulator's ground truth.
    SendTime(crate::evaluate_sendtime::SendTimeArgs),
    /// Recommendations, leave-last-out: HR@k, NDCG@k and coverage of the hybrid,
    /// item-kNN, content and popularity, on the store's history or an interactions CSV.
    Recs(crate::recs::EvaluateArgs),
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// A stored model: evaluated on labels that matured after its training data.
    #[arg(long)]
    model: Option<String>,
    /// Its version (default: the active one, else the newest).
    #[arg(long)]
    version: Option<u64>,
    /// Or a saved table model (`kairos train --table ... --out FILE`) ...
    #[arg(long)]
    model_file: Option<PathBuf>,
    /// ... evaluated on this table ...
    #[arg(long)]
    table: Option<PathBuf>,
    /// ... with this label column.
    #[arg(long)]
    target: Option<String>,
    #[arg(long, value_delimiter = ',')]
    drop: Vec<String>,
    #[arg(long)]
    report_dir: Option<PathBuf>,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    if let (Some(file), Some(table)) = (&args.model_file, &args.table) {
        let Some(target) = &args.target else {
            bail!("--table needs --target COLUMN");
        };
        let model = Model::from_bytes(&std::fs::read(file)?)?;
        let drop: Vec<&str> = args.drop.iter().map(String::as_str).collect();
        let data = Dataset::from_csv(std::fs::File::open(table)?, target, &drop)?;
        let cols: Vec<usize> = model
            .features
            .iter()
            .map(|f| {
                data.names
                    .iter()
                    .position(|n| n == f)
                    .with_context(|| format!("the table has no column {f}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut d = Dataset::with_names(model.features.clone());
        for i in 0..data.rows() {
            let x: Vec<f32> = cols.iter().map(|&c| data.row(i)[c]).collect();
            d.push(&x, data.y[i] > 0.5)?;
        }
        let mut report = training::evaluate(&model, &d, &d, &Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        report.model = stem(file);
        report.learner = model.learner.kind().to_string();
        report.label = target.clone();
        report.data = DataSummary {
            source: table.display().to_string(),
            split: "every row of the table".into(),
            test_rows: d.rows() as u64,
            test_positive_rate: d.positive_rate(),
            features: d.cols() as u64,
            ..DataSummary::default()
        };
        let dir = args
            .report_dir
            .clone()
            .unwrap_or_else(|| table.parent().map(Path::to_path_buf).unwrap_or_default());
        return save_report(&report, &dir, &format!("{}-evaluation", report.model));
    }
    let Some(name) = &args.model else {
        bail!("--model NAME (a stored model), or --model-file FILE --table FILE --target COLUMN");
    };
    let config = crate::load_config(&args.config)?;
    let store = open_store(&config)?;
    let version = match args.version {
        Some(v) => v,
        None => match store.active_model(name)? {
            Some(v) => v,
            None => *store
                .model_versions(name)?
                .last()
                .with_context(|| format!("no model named {name}"))?,
        },
    };
    let defs = config.definitions(store.definitions()?);
    let bar = progress_bar();
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total.max(done));
        bar.set_position(done);
    };
    let report =
        training::evaluate_stored(&store, &defs, &config.core(), name, version, &mut progress)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("reports"));
    save_report(&report, &dir, &format!("{name}-v{version}-evaluation"))
}

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
    /// A running server (e.g. http://127.0.0.1:8080): changes take effect at once.
    /// Without it, the stopped store in the data directory is edited.
    #[arg(long, env = "KAIROS_SERVER", global = true)]
    server: Option<String>,
    #[arg(long, env = "KAIROS_ADMIN_TOKEN", global = true)]
    admin_token: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "KAIROS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory of a stopped server.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum ModelsCommand {
    /// Every model: versions, the active one, headline metrics.
    List,
    /// One model's versions.
    Show { name: String },
    /// Serve `version` of `name`.
    Activate { name: String, version: u64 },
    /// Serve the version before the active one.
    Rollback { name: String },
}

pub fn models(args: ModelsArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    if let Some(server) = &args.server {
        let token = args
            .admin_token
            .clone()
            .context("--admin-token (or KAIROS_ADMIN_TOKEN) is needed with --server")?;
        let base = server.trim_end_matches('/').to_string();
        let (method, path, body) = match &args.command {
            ModelsCommand::List => ("GET", "/v1/models".to_string(), None),
            ModelsCommand::Show { name } => ("GET", format!("/v1/models/{name}"), None),
            ModelsCommand::Activate { name, version } => (
                "POST",
                format!("/v1/models/{name}/activate"),
                Some(json!({"version": version})),
            ),
            ModelsCommand::Rollback { name } => {
                ("POST", format!("/v1/models/{name}/rollback"), None)
            }
        };
        let v: Value = rt.block_on(async {
            let client = reqwest::Client::new();
            let url = format!("{base}{path}");
            let req = if method == "GET" {
                client.get(&url)
            } else {
                client.post(&url).json(&body.unwrap_or(json!({})))
            };
            let resp = req.bearer_auth(&token).send().await?;
            let status = resp.status();
            let v: Value = resp.json().await?;
            if !status.is_success() {
                bail!("{status}: {}", v["error"]["message"]);
            }
            Ok::<_, anyhow::Error>(v)
        })?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let config = crate::load_config(&crate::ConfigArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
    })?;
    let store = open_store(&config)?;
    match args.command {
        ModelsCommand::List => {
            println!(
                "{:<20} {:>8} {:>7} {:<9} {:>7}  label",
                "model", "versions", "active", "learner", "AUC"
            );
            for name in store.model_names()? {
                let versions = store.model_versions(&name)?;
                let active = store.active_model(&name)?;
                let meta = match active.or(versions.last().copied()) {
                    Some(v) => store.model(&name, v)?.map(|m| m.meta).unwrap_or_default(),
                    None => Value::Null,
                };
                println!(
                    "{:<20} {:>8} {:>7} {:<9} {:>7}  {}",
                    name,
                    versions.len(),
                    active.map_or("-".into(), |v| v.to_string()),
                    meta["learner"].as_str().unwrap_or("-"),
                    meta["metrics"][0]["auc"]
                        .as_f64()
                        .map_or("-".into(), |a| format!("{a:.4}")),
                    meta["label"].as_str().unwrap_or("")
                );
            }
        }
        ModelsCommand::Show { name } => {
            let active = store.active_model(&name)?;
            let versions = store.model_versions(&name)?;
            if versions.is_empty() {
                bail!("no model named {name}");
            }
            for v in versions.iter().rev() {
                if let Some(m) = store.model(&name, *v)? {
                    println!(
                        "v{v}{} {} trained {} on data to {}: {}",
                        if active == Some(*v) { " (active)" } else { "" },
                        m.meta["learner"].as_str().unwrap_or("-"),
                        m.meta["trained_at"].as_str().unwrap_or("-"),
                        m.meta["data_end"].as_str().unwrap_or("-"),
                        m.meta["metrics"]
                    );
                }
            }
        }
        ModelsCommand::Activate { name, version } => {
            let previous = store.activate_model(&name, version)?;
            println!(
                "model {name}: version {version} active (was {}); a server started on this store serves it",
                previous.map_or("none".into(), |v| v.to_string())
            );
        }
        ModelsCommand::Rollback { name } => match store.rollback_model(&name)? {
            Some(v) => println!("model {name}: rolled back to version {v}"),
            None => bail!("model {name} has no older version than the active one"),
        },
    }
    Ok(())
}
