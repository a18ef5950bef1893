//! `kairos examples`: the training table of a predictive model, written as CSV. Every stored
//! person's history is replayed through the same core that scores live events; at each
//! cut-off the features are the person's state then, and the label is the rule evaluated
//! `horizon` later, so nothing from after a cut-off leaks into its features.

use anyhow::Context;
use kairos_core::features::LABEL_FEATURE;
use kairos_core::time::format_timestamp;
use kairos_store::Store;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExamplesArgs {
    /// The label: a rule that is true when the outcome happened within the horizon after a
    /// cut-off, e.g. `did("Order Completed", within: 7d)`.
    #[arg(long)]
    label: String,
    /// How far after a cut-off the label looks (the rule's window).
    #[arg(long, default_value = "7d")]
    horizon: String,
    /// Cut-offs every this long, from the first event to the last minus the horizon.
    #[arg(long, default_value = "7d")]
    every: String,
    /// Where to write the CSV (cutoff, profile, label, then one column per feature).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

pub fn run(args: ExamplesArgs) -> anyhow::Result<()> {
    let config = crate::load_config(&args.config)?;
    let horizon = kairos_rules::parse_duration(&args.horizon)
        .map_err(|e| anyhow::anyhow!("--horizon: {e}"))?;
    let every =
        kairos_rules::parse_duration(&args.every).map_err(|e| anyhow::anyhow!("--every: {e}"))?;
    let store_path = config.data_dir.join("store");
    let store = Store::open(&store_path, &config.replay_store_options()).with_context(|| {
        format!(
            "opening {} (is a server running on it? stop it first)",
            store_path.display()
        )
    })?;
    // The definitions the server would put in force on this store (the stored ones, or the
    // built-in ones for a store that never had any), with the config's over them.
    let defs = config.definitions(store.definitions()?);
    let scoring = kairos_server::training::label_scoring(&defs, &defs.features, &args.label)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some((first, end)) = store.event_time_range()? else {
        anyhow::bail!("the store holds no events");
    };
    let cutoffs = kairos_server::training::cutoffs(first, end, every, horizon);
    if cutoffs.is_empty() {
        anyhow::bail!(
            "the history ({} to {}) is shorter than one horizon after the first day",
            format_timestamp(first),
            format_timestamp(end)
        );
    }
    let bar = indicatif::ProgressBar::new(store.approximate_counts().profiles);
    let examples =
        store.training_examples(&scoring, &config.core(), &cutoffs, horizon, end, |n| {
            bar.set_position(n)
        })?;
    bar.finish_and_clear();
    let names: Vec<&String> = scoring
        .features
        .names
        .iter()
        .filter(|n| *n != LABEL_FEATURE)
        .collect();
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?,
    );
    let header: Vec<String> = ["cutoff", "profile", "label"]
        .iter()
        .map(|s| s.to_string())
        .chain(names.iter().map(|n| csv_field(n)))
        .collect();
    writeln!(w, "{}", header.join(","))?;
    let mut positives = 0usize;
    for (id, ex) in &examples {
        positives += ex.label as usize;
        write!(
            w,
            "{},{},{}",
            format_timestamp(ex.cutoff),
            id,
            ex.label as u8
        )?;
        for v in &ex.features {
            if v.is_nan() {
                write!(w, ",")?;
            } else {
                write!(w, ",{v}")?;
            }
        }
        writeln!(w)?;
    }
    w.flush()?;
    println!(
        "{} examples ({} positive) over {} cut-offs from {} to {}, {} features: {}",
        examples.len(),
        positives,
        cutoffs.len(),
        format_timestamp(cutoffs[0]),
        format_timestamp(cutoffs[cutoffs.len() - 1]),
        names.len(),
        args.out.display()
    );
    Ok(())
}

/// A CSV header field: quoted when it holds a comma or a quote.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
