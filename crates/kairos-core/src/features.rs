//! Model features: one numeric vector per profile at an instant, computed from the profile
//! state by the same code whether a model is being trained (profiles replayed to a cut-off)
//! or serving live events. There is no second feature path, hence no train/serve skew.
//!
//! A feature set is the built-in features (recency, frequency, monetary value, activity in
//! windows, email open and click rates, cart, time-of-day activity, every score's current
//! value) plus declared ones: rule-language expressions (`count("Product Viewed" where
//! category == "shoes", within: 7d)`, `lifetime_revenue / max(orders, 1)`) and categorical
//! traits one-hot encoded over listed values. Missing values are NaN (models learn where
//! they go); booleans are 0/1; times are ages in days.

use crate::profile::Profile;
use crate::rules_env::ProfileEnv;
use crate::scoring::{DefinitionError, Scoring};
use crate::time::{Millis, DAY, HOUR};
use kairos_rules::{compile_value, Aggregates, Program, Schema, Val};
use serde::{Deserialize, Serialize};

/// Declared features (config `[features]` or a model definition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureDefs {
    /// Include the built-in features.
    pub builtins: bool,
    /// Name -> rule-language expression (numeric, boolean, time or duration).
    pub expressions: std::collections::BTreeMap<String, String>,
    /// Trait -> the values to one-hot encode (`plan = ["free", "pro"]`); other values and
    /// a missing trait are all zeros.
    pub categorical: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for FeatureDefs {
    fn default() -> Self {
        Self {
            builtins: true,
            expressions: Default::default(),
            categorical: Default::default(),
        }
    }
}

/// The built-in features, in vector order.
const BUILTINS: &[&str] = &[
    "days_since_last_seen",
    "days_since_first_seen",
    "events_total",
    "events_1d",
    "events_7d",
    "events_30d",
    "active_days_30d",
    "orders",
    "lifetime_revenue",
    "avg_order_value",
    "days_since_last_order",
    "cart_items",
    "cart_value",
    "emails_delivered",
    "email_open_rate",
    "email_click_rate",
    "days_since_last_open",
    "subscribed_marketing",
    "suppressed",
    "share_activity_morning",
    "share_activity_afternoon",
    "share_activity_evening",
    "share_activity_night",
    "share_activity_weekend",
];

/// A compiled feature set: names and how to compute each.
pub struct FeatureSet {
    pub names: Vec<String>,
    builtins: bool,
    expressions: Vec<Program>,
    categorical: Vec<(String, Vec<String>)>,
    /// Score names, in definition order; their current values are features.
    scores: Vec<String>,
}

impl FeatureSet {
    /// Compiles `defs` against the scores and segments of `schema`, registering the
    /// aggregates the expressions read in `aggregates` (the scoring's, which the profile
    /// state keeps; see [`Scoring::compile`], which calls this).
    pub fn compile(
        defs: &FeatureDefs,
        schema: &Schema,
        aggregates: &mut Aggregates,
    ) -> Result<Self, DefinitionError> {
        let schema = Schema {
            event_context: false,
            trigger_context: false,
            ..schema.clone()
        };
        let mut names: Vec<String> = Vec::new();
        if defs.builtins {
            names.extend(BUILTINS.iter().map(|s| s.to_string()));
            names.extend(schema.scores.iter().map(|s| format!("score_{}", s.name)));
        }
        let mut expressions = Vec::new();
        for (name, src) in &defs.expressions {
            let program =
                compile_value(src, &schema, aggregates).map_err(|error| DefinitionError::Rule {
                    path: format!("features.expressions.{name}"),
                    error,
                })?;
            names.push(name.clone());
            expressions.push(program);
        }
        let mut categorical = Vec::new();
        for (t, values) in &defs.categorical {
            if values.is_empty() {
                return Err(DefinitionError::Invalid {
                    path: format!("features.categorical.{t}"),
                    message: "list the values to encode".into(),
                });
            }
            for v in values {
                names.push(format!("{t}={v}"));
            }
            categorical.push((t.clone(), values.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(DefinitionError::Invalid {
                path: format!("features.{dup}"),
                message: format!("feature `{dup}` is defined twice"),
            });
        }
        Ok(Self {
            names,
            builtins: defs.builtins,
            expressions,
            categorical,
            scores: schema.scores.iter().map(|s| s.name.clone()).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The feature vector of `p` at `now` (after its events up to `now` were applied), with
    /// `scoring` the definitions this set was compiled with.
    pub fn extract(&self, p: &Profile, scoring: &Scoring, now: Millis) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.names.len());
        let s = &p.state;
        let days =
            |t: Option<Millis>| t.map_or(f32::NAN, |t| ((now - t) as f64 / DAY as f64) as f32);
        let scores = p.derived.scores_at(scoring, now);
        if self.builtins {
            let within = |w: Millis| -> f32 {
                s.activity
                    .values()
                    .map(|c| c.count_within(w, now))
                    .sum::<u64>() as f32
            };
            // Days with any activity in the last 30: from the day-resolution sums of all
            // names, counted per day.
            let active_days = (0..30)
                .filter(|d| {
                    let end = now - d * DAY;
                    s.activity.values().any(|c| c.count_within(DAY, end) > 0)
                })
                .count() as f32;
            let revenue = s.revenue_micros as f64 / 1e6;
            let rate = |n: u64, of: u64| {
                if of == 0 {
                    f32::NAN
                } else {
                    n as f32 / of as f32
                }
            };
            let hours = s.hour_of_week_local(now);
            let total: u32 = hours.iter().sum();
            let share = |pick: &dyn Fn(usize, usize) -> bool| -> f32 {
                if total == 0 {
                    return f32::NAN;
                }
                let n: u32 = hours
                    .iter()
                    .enumerate()
                    .filter(|(h, _)| pick(h / 24, h % 24))
                    .map(|(_, c)| *c)
                    .sum();
                n as f32 / total as f32
            };
            out.extend_from_slice(&[
                days(s.last_seen),
                days(s.first_seen),
                s.event_count as f32,
                within(DAY),
                within(7 * DAY),
                within(30 * DAY),
                active_days,
                s.orders as f32,
                revenue as f32,
                if s.orders == 0 {
                    f32::NAN
                } else {
                    (revenue / s.orders as f64) as f32
                },
                days(s.last_order),
                s.cart.items().iter().map(|i| i.quantity as f32).sum(),
                (s.cart.value_micros() as f64 / 1e6) as f32,
                s.email.delivered as f32,
                rate(s.email.opened, s.email.delivered),
                rate(s.email.clicked, s.email.delivered),
                days(s.email.last_opened),
                match s.is_subscribed("marketing") {
                    Some(true) => 1.0,
                    Some(false) => 0.0,
                    None => f32::NAN,
                },
                if s.suppressed.is_some() { 1.0 } else { 0.0 },
                share(&|_, h| (6..12).contains(&h)),
                share(&|_, h| (12..18).contains(&h)),
                share(&|_, h| (18..24).contains(&h)),
                share(&|_, h| h < 6),
                share(&|d, _| d >= 5),
            ]);
            // `scores` is in definition order, the order `self.scores` was compiled in.
            for i in 0..self.scores.len() {
                out.push(scores.get(i).map_or(f32::NAN, |v| v.value as f32));
            }
        }
        if !self.expressions.is_empty() {
            let mut segments = crate::bits::Bits::new(scoring.segments.len());
            for (i, x) in scoring.segments.iter().enumerate() {
                segments.put(i, p.derived.segments.get(&x.name).is_some());
            }
            let env = ProfileEnv {
                state: s,
                aggregates: &scoring.aggregates,
                now,
                event: None,
                scores: &scores,
                segments: &segments,
                series: &[],
                trigger: None,
                zone: &Default::default(),
            };
            for prog in &self.expressions {
                out.push(match prog.value(&env) {
                    Val::Num(x) => x as f32,
                    Val::Bool(b) => b as u8 as f32,
                    Val::Time(t) => ((now - t) as f64 / DAY as f64) as f32,
                    Val::Dur(d) => (d as f64 / HOUR as f64) as f32,
                    _ => f32::NAN,
                });
            }
        }
        for (t, values) in &self.categorical {
            let have = s.trait_value(t).and_then(|v| v.as_str());
            for v in values {
                out.push(if have == Some(v.as_str()) { 1.0 } else { 0.0 });
            }
        }
        out
    }
}

/// One training example: the features at `cutoff` and the label after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub cutoff: Millis,
    pub features: Vec<f32>,
    pub label: bool,
}

/// The name under which [`examples`] expects the label rule among the feature expressions
/// (it is compiled with them so the profile state keeps the windows it reads) and leaves it
/// out of the features.
pub const LABEL_FEATURE: &str = "__label";

/// Replays one person's history (`events` in any order) through the same fold that scores
/// live events and, at each cut-off at or after their first event (and with `horizon` of
/// history after it, before `data_end`), takes the features at the cut-off and the label
/// rule's value at `cutoff + horizon`. Nothing after the cut-off reaches the features.
///
/// `scoring` must carry the label rule as the feature expression [`LABEL_FEATURE`].
pub fn examples(
    events: &mut [crate::event::Event],
    cfg: &crate::profile::CoreConfig,
    scoring: &Scoring,
    cutoffs: &[Millis],
    horizon: Millis,
    data_end: Millis,
) -> Vec<Example> {
    let Some(label_at) = scoring
        .features
        .names
        .iter()
        .position(|n| n == LABEL_FEATURE)
    else {
        return Vec::new();
    };
    events.sort_by_key(crate::event::Event::order_key);
    let mut cutoffs = cutoffs.to_vec();
    cutoffs.sort_unstable();
    let mut p = Profile::new(crate::identity::ProfileId(0));
    let mut next = 0;
    let mut out = Vec::new();
    for c in cutoffs {
        if c + horizon > data_end {
            break;
        }
        while let Some(e) = events.get(next).filter(|e| e.timestamp <= c) {
            p.apply(e, cfg, scoring, e.timestamp);
            next += 1;
        }
        if p.state.event_count == 0 {
            continue;
        }
        let mut features = scoring.features.extract(&p, scoring, c);
        features.remove(label_at);
        let mut later = p.clone();
        let mut k = next;
        while let Some(e) = events.get(k).filter(|e| e.timestamp <= c + horizon) {
            later.apply(e, cfg, scoring, e.timestamp);
            k += 1;
        }
        let label = scoring
            .features
            .extract(&later, scoring, c + horizon)
            .get(label_at)
            .is_some_and(|v| *v == 1.0);
        out.push(Example {
            cutoff: c,
            features,
            label,
        });
    }
    out
}
