//! `kairos evaluate send-time`: how well the send-time model picks each person's hour, on
//! a simulated history whose ground truth is known (`kairos simulate --truth`). The
//! simulator sends marketing email at random times of day and people open near their
//! preferred hours, so every policy can be scored against the truth:
//!
//! - the model learns from events before a cut-off (`--test-days` before the end);
//! - **hit rate**: the share of the person's human opens after the cut-off within +-1 h of
//!   the hour the policy chose (machine opens, within a minute of delivery, excluded);
//! - **expected open rate**: the simulator's response, `propensity x (1 if the send is
//!   within 1 h of a preferred hour, else 0.3)`, averaged over people, for the model's hour,
//!   a fixed 10:00, the population's best hour, and random times (what the history had).

use anyhow::Context;
use kairos_core::identity::IdKey;
use kairos_core::sendtime::{posterior, Engagement, PriorsBuilder, HOURS, MACHINE_OPEN_WINDOW};
use kairos_core::time::{hour_of_week, time_zone, DAY};
use kairos_core::Event;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SendTimeArgs {
    /// The simulator's ground truth (`kairos simulate --truth FILE`).
    #[arg(long)]
    truth: PathBuf,
    /// Days at the end of the history held out for testing.
    #[arg(long, default_value_t = 14)]
    test_days: i64,
    /// Where to write the results as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

struct Person {
    zone: String,
    preferred: Vec<u8>,
    propensity: f64,
    engagement: Engagement,
    /// Local hours of human opens after the cut-off.
    test_opens: Vec<u8>,
}

fn circular(a: u8, b: u8) -> u8 {
    let d = (a as i16 - b as i16).rem_euclid(24) as u8;
    d.min(24 - d)
}

pub fn run(args: SendTimeArgs) -> anyhow::Result<()> {
    let config = crate::load_config(&args.config)?;
    let store = crate::train::open_store(&config)?;
    let (_, end) = store
        .event_time_range()?
        .context("the store holds no events")?;
    let cutoff = end - args.test_days * DAY;
    let file = std::fs::File::open(&args.truth)
        .with_context(|| format!("opening {}", args.truth.display()))?;
    let mut people: Vec<Person> = Vec::new();
    let mut priors = PriorsBuilder::default();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let t: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", args.truth.display(), n + 1))?;
        let key = match (t["user_id"].as_str(), t["anonymous_id"].as_str()) {
            (Some(u), _) => IdKey::user(u),
            (None, Some(a)) => IdKey::anonymous(a),
            _ => continue,
        };
        let Some(id) = store.lookup(&key)? else {
            continue;
        };
        let id = store.resolve_id(id)?;
        let Some(profile) = store.profile(id)? else {
            continue;
        };
        let zone_name = t["timezone"].as_str().unwrap_or("UTC").to_string();
        let tz = profile.state.timezone();
        let mut events: Vec<Event> = store
            .profile_events(id, None, usize::MAX)?
            .into_iter()
            .map(|s| s.event)
            .collect();
        events.sort_by_key(Event::order_key);
        let mut engagement = Engagement::default();
        let mut delivered: HashMap<String, i64> = HashMap::new();
        let mut test_opens = Vec::new();
        let zone = time_zone(&zone_name).or_else(|| time_zone("UTC"));
        for ev in &events {
            if ev.timestamp < cutoff {
                engagement.record(ev, tz);
                continue;
            }
            let mid = ev
                .properties
                .get("message_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            match ev.event.as_deref() {
                Some("Email Delivered") => {
                    delivered.insert(mid.to_string(), ev.timestamp);
                }
                Some("Email Opened") => {
                    let machine = delivered
                        .get(mid)
                        .is_some_and(|d| ev.timestamp - d < MACHINE_OPEN_WINDOW);
                    if !machine {
                        if let Some(h) = zone.as_ref().and_then(|z| hour_of_week(ev.timestamp, z)) {
                            test_opens.push(h % 24);
                        }
                    }
                }
                _ => {}
            }
        }
        priors.add(&engagement, None, cutoff);
        people.push(Person {
            zone: zone_name,
            preferred: t["preferred_hours"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|h| h as u8)
                        .collect()
                })
                .unwrap_or_default(),
            propensity: t["email_propensity"].as_f64().unwrap_or(0.0),
            engagement,
            test_opens,
        });
    }
    let priors = priors.build();
    let prior = priors.prior(None);
    // The population's best local hour of day.
    let by_hour = |p: &[f64; HOURS]| -> [f64; 24] {
        let mut h = [0.0; 24];
        for (i, v) in p.iter().enumerate() {
            h[i % 24] += v;
        }
        h
    };
    let argmax =
        |v: &[f64; 24]| -> u8 { (0..24).max_by(|a, b| v[*a].total_cmp(&v[*b])).unwrap_or(0) as u8 };
    let population_hour = argmax(&by_hour(&prior));
    let respond = |p: &Person, hour: u8| -> f64 {
        let near = p.preferred.iter().any(|&h| circular(h, hour) <= 1);
        p.propensity * if near { 1.0 } else { 0.3 }
    };
    #[derive(Default, Clone, Copy)]
    struct Tally {
        open_rate: f64,
        hits: u64,
    }
    let (mut model, mut fixed, mut pop, mut random) =
        (Tally::default(), Tally::default(), Tally::default(), 0.0);
    let (mut opens, mut scored, mut personal) = (0u64, 0u64, 0.0);
    for p in &people {
        if p.preferred.is_empty() {
            continue;
        }
        let (post, share, _) = posterior(&p.engagement, &prior, cutoff);
        let hour = argmax(&by_hour(&post));
        scored += 1;
        personal += share;
        model.open_rate += respond(p, hour);
        fixed.open_rate += respond(p, 10);
        pop.open_rate += respond(p, population_hour);
        random += (0..24).map(|h| respond(p, h)).sum::<f64>() / 24.0;
        for &o in &p.test_opens {
            opens += 1;
            model.hits += (circular(o, hour) <= 1) as u64;
            fixed.hits += (circular(o, 10) <= 1) as u64;
            pop.hits += (circular(o, population_hour) <= 1) as u64;
        }
        let _ = &p.zone;
    }
    anyhow::ensure!(
        scored > 0,
        "no person of the truth file was found in the store"
    );
    let n = scored as f64;
    let rate = |t: Tally| t.open_rate / n;
    let hit = |t: Tally| {
        if opens == 0 {
            0.0
        } else {
            t.hits as f64 / opens as f64
        }
    };
    let result = json!({
        "people": scored,
        "test_days": args.test_days,
        "test_opens": opens,
        "population_best_hour": population_hour,
        "mean_personal_share": personal / n,
        "hit_rate_within_1h": {"model": hit(model), "fixed_10am": hit(fixed), "population_best_hour": hit(pop)},
        "expected_open_rate": {"model": rate(model), "fixed_10am": rate(fixed), "population_best_hour": rate(pop), "random_time": random / n},
        "lift": {
            "over_fixed_10am": rate(model) / rate(fixed),
            "over_population_best_hour": rate(model) / rate(pop),
            "over_random_time": rate(model) / (random / n),
        },
    });
    println!(
        "send-time on {scored} people, last {} days held out ({opens} human opens):\n  hit rate (+-1h): model {:.1}%  fixed 10:00 {:.1}%  population best hour ({population_hour}:00) {:.1}%\n  expected open rate: model {:.2}%  fixed 10:00 {:.2}%  population best {:.2}%  random {:.2}%\n  lift: {:.2}x over 10:00, {:.2}x over the population's hour, {:.2}x over random times (mean personal share {:.0}%)",
        args.test_days,
        100.0 * hit(model),
        100.0 * hit(fixed),
        100.0 * hit(pop),
        100.0 * rate(model),
        100.0 * rate(fixed),
        100.0 * rate(pop),
        100.0 * random / n,
        rate(model) / rate(fixed),
        rate(model) / rate(pop),
        rate(model) / (random / n),
        100.0 * personal / n,
    );
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}
