//! Scores and segments: their definitions, the compiled form, and the state they derive on
//! each profile.
//!
//! # Semantics (what replay reproduces exactly)
//!
//! - **Scores** are a function of the person's events in event-time order. Each event is
//!   folded into the profile state first; then every rule of every score is evaluated with
//!   `now` = the event's time, the event itself, and the scores as they were before it.
//!   A rule that matches adds its points unless its cap (`at most N times per D`) already
//!   counted N firings in `(t - D, t]`. Points decay with the score's half-life: the raw value
//!   at `t` is `sum(p_i * 2^(-(t - t_i) / h))`, kept as one number and its instant, so an
//!   event costs O(rules) however long the history. The shown value is the raw value clamped
//!   to `[min, max]` when read, so clamping never depends on arrival order.
//! - An event older than the newest one already scored cannot be folded in place (rules
//!   read the state *at* the event's time); [`Profile::needs_replay`] says so and the host
//!   replays the person's history ([`Profile::rebuild`]).
//! - **Segments** are a function of the profile state at an instant: they are evaluated at
//!   the host's `now` after every event and whenever the profile's timer comes due. The timer
//!   is the earliest instant at which a membership or a tier could change with no new event
//!   (a window edge, an age bound, a decaying score crossing a threshold).
//! - Segment rules may read scores, tiers and other segments (evaluated in dependency order;
//!   cycles are refused). Score rules may read scores and the event, not segments, so that a
//!   score never depends on when segments happened to be evaluated.
//!
//! [`Profile::needs_replay`]: crate::Profile::needs_replay
//! [`Profile::rebuild`]: crate::Profile::rebuild

use crate::bits::Bits;
use crate::event::Event;
use crate::profile::Reason;
use crate::rules_env::ProfileEnv;
use crate::state::{ProfileState, Touched};
use crate::time::{format_timestamp, Millis, DAY};
use crate::vecmap::VecMap;
use kairos_rules::{
    compile, parse_duration, parse_score_rule, parse_tiers, Aggregates, Cap, Program, RuleError,
    Schema, ScoreInfo, TierBound,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet};

/// A segment, score, tier or reason text shared by the definitions and the changes they
/// cause: a change names its segment and reason by a reference count, not a copy.
pub type Name = std::sync::Arc<str>;

/// Decodes an optional [`Name`] through a small per-thread table of the names decoded
/// before: the tiers and primary segments of millions of stored profiles are a handful of
/// names, and a fresh `Arc<str>` for each cost two allocations and a copy per name per
/// decoded profile (a tenth of decoding one).
mod shared_name {
    use super::Name;
    use serde::de::{Deserializer, Error, Visitor};
    use std::cell::RefCell;

    /// Past this many distinct names the table starts over, so it stays small whatever
    /// is decoded.
    const MAX_NAMES: usize = 64;

    thread_local! {
        static NAMES: RefCell<Vec<Name>> = const { RefCell::new(Vec::new()) };
    }

    fn intern(s: &str) -> Name {
        NAMES.with(|names| {
            let mut names = names.borrow_mut();
            if let Some(n) = names.iter().find(|n| &***n == s) {
                return n.clone();
            }
            if names.len() >= MAX_NAMES {
                names.clear();
            }
            let n: Name = s.into();
            names.push(n.clone());
            n
        })
    }

    struct NameVisitor;

    impl Visitor<'_> for NameVisitor {
        type Value = Name;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a name")
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<Name, E> {
            Ok(intern(s))
        }
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Name>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a name or nothing")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(NameVisitor).map(Some)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Name>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }
}

/// Per-definition flags and values during one evaluation, on the stack for the usual
/// number of definitions: evaluation runs several times per event and must not allocate.
type Flags = SmallVec<[bool; 64]>;
type RuleRefs = SmallVec<[(u16, u16); 32]>;
type ScoresNow<'s> = SmallVec<[ScoreNow<'s>; 16]>;

/// Event names the definitions mention, numbered: an event's name is hashed once per
/// event, and dependencies and rule guards compare numbers, not strings.
#[derive(Default)]
struct EventNames(FxHashMap<String, u16>);

impl EventNames {
    fn intern(&mut self, name: &str) -> u16 {
        let next = self.0.len() as u16;
        *self.0.entry(name.to_string()).or_insert(next)
    }

    fn id(&self, ev: &Event) -> Option<u16> {
        ev.activity_name().and_then(|n| self.0.get(n).copied())
    }
}

/// A score as configured (TOML or `PUT /v1/scores/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreDef {
    pub description: String,
    /// `when <condition> then +<points> [at most <n> times per <duration>]`.
    pub rules: Vec<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Points lose half their weight every `half_life` (`"14d"`); none: no decay.
    pub half_life: Option<String>,
    /// `cold < 30 <= warm < 70 <= hot`.
    pub tiers: Option<String>,
}

/// A segment as configured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentDef {
    pub description: String,
    pub rule: String,
    /// 1 is the highest. A person's primary segment is their member segment with the
    /// smallest number (ties: by name).
    pub priority: i32,
}

/// Every score and segment, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Definitions {
    pub scores: BTreeMap<String, ScoreDef>,
    pub segments: BTreeMap<String, SegmentDef>,
    pub campaigns: BTreeMap<String, crate::campaign::CampaignDef>,
    pub messaging: crate::campaign::MessagingDef,
    /// What models see of a profile (see [`crate::features`]).
    pub features: crate::features::FeatureDefs,
}

/// A definition that cannot be used, with where in the definitions it is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    #[error("{path}: {error}")]
    Rule { path: String, error: RuleError },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl DefinitionError {
    pub fn path(&self) -> &str {
        match self {
            Self::Rule { path, .. } | Self::Invalid { path, .. } => path,
        }
    }
}

fn invalid(path: String, message: impl Into<String>) -> DefinitionError {
    DefinitionError::Invalid {
        path,
        message: message.into(),
    }
}

/// Score names are identifiers (`score.purchase_intent`); segment names may also hold `-`.
pub fn check_name(path: String, name: &str, allow_dash: bool) -> Result<(), DefinitionError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dash && c == '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!(
                "`{name}` is not a valid name: use 1-64 letters, digits and `_`{}, not starting with a digit",
                if allow_dash { " or `-`" } else { "" }
            ),
        ))
    }
}

pub struct CompiledRule {
    pub source: String,
    pub program: Program,
    pub points: f64,
    pub cap: Option<Cap>,
    /// Reads nothing but the event itself: its points do not depend on what came before,
    /// so a late event adds them in place instead of replaying the history.
    pub order_free: bool,
    guard: Option<kairos_rules::EventGuard>,
    deps: Deps,
}

impl CompiledRule {
    /// Whether the event can make this rule true (by its name or call type).
    fn admits(&self, ev: &Event) -> bool {
        match &self.guard {
            None => true,
            Some(g) => {
                ev.activity_name()
                    .is_some_and(|n| g.names.iter().any(|x| x == n))
                    || g.kinds.iter().any(|k| k == ev.kind.as_str())
            }
        }
    }
}

pub struct CompiledScore {
    pub name: String,
    pub description: String,
    pub rules: Vec<CompiledRule>,
    pub min: f64,
    pub max: f64,
    pub half_life: Option<Millis>,
    pub tiers: Vec<TierBound>,
    /// Whether any rule reads scores or tiers (then they are computed for each event).
    reads_scores: bool,
    /// `name` and the tier names, shared by the changes that name them.
    label: Name,
    tier_labels: Vec<Name>,
}

impl CompiledScore {
    /// The value that counts as the top of the scale: the `max` clamp, else 100.
    pub fn top(&self) -> f64 {
        if self.max.is_finite() && self.max > 0.0 {
            self.max
        } else {
            100.0
        }
    }

    pub fn clamp(&self, raw: f64) -> f64 {
        raw.clamp(self.min, self.max)
    }

    /// The shared name of tier `tier` (one of this score's).
    fn tier_label(&self, tier: &str) -> Name {
        self.tier_labels
            .iter()
            .find(|t| &***t == tier)
            .cloned()
            .unwrap_or_else(|| tier.into())
    }

    /// The tier a (clamped) value falls in.
    pub fn tier_of(&self, value: f64) -> Option<&str> {
        self.tiers
            .iter()
            .rev()
            .find(|t| t.from.is_none_or(|f| value >= f))
            .map(|t| t.name.as_str())
    }
}

pub struct CompiledSegment {
    pub name: String,
    pub description: String,
    pub program: Program,
    pub priority: i32,
    deps: Deps,
    /// `name`, shared by the changes that name this segment.
    label: Name,
}

/// Compiled definitions: every rule parsed and checked once.
pub struct Scoring {
    pub definitions: Definitions,
    /// Digest of all definitions; a profile evaluated under another version is re-evaluated.
    pub version: u64,
    /// Digest of what event replay computes (scores and aggregate windows); a profile derived
    /// under another one has its history replayed.
    pub replay_version: u64,
    pub aggregates: Aggregates,
    pub scores: Vec<CompiledScore>,
    pub segments: Vec<CompiledSegment>,
    /// Segment indices in evaluation order (dependencies first).
    order: Vec<usize>,
    /// Accepted but suspicious (unknown event names), as `path: line:col: message`.
    pub warnings: Vec<String>,
    event_names: EventNames,
    /// Score rules by the event name (by its number in `event_names`) or call type that
    /// can trigger them, so an event evaluates only the rules that can fire; `any` holds
    /// rules with no such guard.
    /// For every (event name, call type): the (score, rule) pairs such an event may fire,
    /// sorted (see [`Scoring::candidate_rules`]).
    candidates: Vec<Vec<(u16, u16)>>,
    reads_scores: bool,
    triggers: SegmentTriggers,
    /// The reason texts of events with a name the definitions know, and of timers, made
    /// once (see [`Scoring::reason`]).
    event_reasons: FxHashMap<String, Name>,
    timer_reason: Name,
    series: crate::rules_env::SeriesPlan,
    pub campaigns: crate::campaign::Campaigns,
    pub features: crate::features::FeatureSet,
    /// Predictive models in force, bound to `features`. Swapped as models are activated,
    /// without recompiling or re-evaluating anything else.
    models: std::sync::RwLock<std::sync::Arc<crate::predict::ModelSet>>,
    /// Engagement-hour priors for send-time optimization, set by the host.
    send_time_priors: std::sync::RwLock<std::sync::Arc<crate::sendtime::Priors>>,
}

impl Default for Scoring {
    fn default() -> Self {
        // Empty definitions always compile.
        Self::compile(&Definitions::default(), None).unwrap_or_else(|_| unreachable!())
    }
}

impl Scoring {
    /// The models in force.
    pub fn models(&self) -> std::sync::Arc<crate::predict::ModelSet> {
        match self.models.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Binds `models` to this scoring's features and puts them in force; returns why any
    /// model could not be bound.
    pub fn set_models(&self, models: Vec<crate::predict::ServedModel>) -> Vec<String> {
        let scores: Vec<(String, f64)> = self
            .scores
            .iter()
            .map(|s| (s.name.clone(), s.top()))
            .collect();
        let (set, problems) = crate::predict::ModelSet::bind(models, &self.features, &scores);
        let set = std::sync::Arc::new(set);
        match self.models.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
        problems
    }

    /// The send-time priors in force (uniform until the host computes them).
    pub fn send_time_priors(&self) -> std::sync::Arc<crate::sendtime::Priors> {
        match self.send_time_priors.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_send_time_priors(&self, p: std::sync::Arc<crate::sendtime::Priors>) {
        match self.send_time_priors.write() {
            Ok(mut g) => *g = p,
            Err(e) => *e.into_inner() = p,
        }
    }

    /// The models in force as they were given (to carry them over to new definitions).
    pub fn served_models(&self) -> Vec<crate::predict::ServedModel> {
        self.models().models().cloned().collect()
    }

    /// Checks and compiles definitions. `known_events` (names seen so far) turns rules that
    /// name other events into warnings.
    pub fn compile(
        defs: &Definitions,
        known_events: Option<&BTreeSet<String>>,
    ) -> Result<Self, DefinitionError> {
        let mut schema = Schema {
            known_events: known_events.cloned(),
            ..Schema::default()
        };
        let mut ladders = Vec::new();
        for (name, def) in &defs.scores {
            check_name(format!("scores.{name}"), name, false)?;
            let tiers = match &def.tiers {
                Some(src) => parse_tiers(src).map_err(|error| DefinitionError::Rule {
                    path: format!("scores.{name}.tiers"),
                    error,
                })?,
                None => Vec::new(),
            };
            schema.scores.push(ScoreInfo {
                name: name.clone(),
                tiers: tiers.iter().map(|t| t.name.clone()).collect(),
            });
            ladders.push(tiers);
        }
        for name in defs.segments.keys() {
            check_name(format!("segments.{name}"), name, true)?;
            schema.segments.push(name.clone());
        }

        let mut aggregates = Aggregates::default();
        let mut event_names = EventNames::default();
        let mut warnings = Vec::new();
        let mut note = |path: &str, p: &Program| {
            for w in &p.warnings {
                warnings.push(format!("{path}: {w}"));
            }
        };
        let mut scores = Vec::new();
        schema.event_context = true;
        for ((name, def), tiers) in defs.scores.iter().zip(ladders) {
            let path = format!("scores.{name}");
            let (min, max) = (
                def.min.unwrap_or(f64::NEG_INFINITY),
                def.max.unwrap_or(f64::INFINITY),
            );
            if min.is_nan() || max.is_nan() || min > max {
                return Err(invalid(format!("{path}.min"), "min must not exceed max"));
            }
            let half_life = match &def.half_life {
                Some(src) => Some(parse_duration(src).map_err(|error| DefinitionError::Rule {
                    path: format!("{path}.half_life"),
                    error,
                })?),
                None => None,
            };
            let mut rules = Vec::new();
            for (i, src) in def.rules.iter().enumerate() {
                let rpath = format!("{path}.rules[{i}]");
                let at = |error| DefinitionError::Rule {
                    path: rpath.clone(),
                    error,
                };
                let parts = parse_score_rule(src).map_err(at)?;
                if !parts.points.is_finite() {
                    return Err(invalid(rpath, "points must be a finite number"));
                }
                let program = compile(&parts.condition, &schema, &mut aggregates).map_err(at)?;
                if !program.segments_used.is_empty() {
                    return Err(invalid(
                        rpath,
                        "score rules cannot read segments (segments may read scores)",
                    ));
                }
                note(&rpath, &program);
                let deps = Deps::of(&program, &aggregates, &mut event_names);
                let order_free = deps.is_empty();
                rules.push(CompiledRule {
                    source: src.trim().to_string(),
                    guard: program.event_guard(),
                    program,
                    points: parts.points,
                    cap: parts.cap,
                    order_free,
                    deps,
                });
            }
            scores.push(CompiledScore {
                label: name.as_str().into(),
                tier_labels: tiers.iter().map(|t| t.name.as_str().into()).collect(),
                name: name.clone(),
                description: def.description.clone(),
                reads_scores: rules.iter().any(|r| !r.program.scores_used.is_empty()),
                rules,
                min,
                max,
                half_life,
                tiers,
            });
        }
        schema.event_context = false;
        let mut segments = Vec::new();
        for (name, def) in &defs.segments {
            let path = format!("segments.{name}.rule");
            let program = compile(&def.rule, &schema, &mut aggregates).map_err(|error| {
                DefinitionError::Rule {
                    path: path.clone(),
                    error,
                }
            })?;
            note(&path, &program);
            segments.push(CompiledSegment {
                label: name.as_str().into(),
                name: name.clone(),
                description: def.description.clone(),
                deps: Deps::of(&program, &aggregates, &mut event_names),
                program,
                priority: def.priority,
            });
        }
        let order = evaluation_order(&segments)?;
        let campaigns = crate::campaign::compile_campaigns(
            &defs.campaigns,
            &defs.messaging,
            &schema,
            &mut aggregates,
        )?;
        let features =
            crate::features::FeatureSet::compile(&defs.features, &schema, &mut aggregates)?;
        let mut rules_by_name: Vec<Vec<(u16, u16)>> = Vec::new();
        let mut rules_by_kind: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
        let mut rules_any = Vec::new();
        for (si, sc) in scores.iter().enumerate() {
            for (ri, rule) in sc.rules.iter().enumerate() {
                let at = (si as u16, ri as u16);
                match rule.program.event_guard() {
                    Some(g) => {
                        for n in g.names {
                            let id = event_names.intern(&n) as usize;
                            if rules_by_name.len() <= id {
                                rules_by_name.resize_with(id + 1, Vec::new);
                            }
                            rules_by_name[id].push(at);
                        }
                        for k in g.kinds {
                            match rules_by_kind.iter_mut().find(|(x, _)| *x == k) {
                                Some((_, v)) => v.push(at),
                                None => rules_by_kind.push((k, vec![at])),
                            }
                        }
                    }
                    None => rules_any.push(at),
                }
            }
        }
        let reads_scores = scores.iter().any(|s| s.reads_scores);
        let candidates = candidate_table(
            &rules_any,
            &rules_by_name,
            &rules_by_kind,
            event_names.0.len(),
        );
        let triggers = SegmentTriggers::new(&segments, scores.len(), event_names.0.len());
        let event_reasons = event_names
            .0
            .keys()
            .map(String::as_str)
            .chain(["Page Viewed", "Screen Viewed"])
            .chain(KINDS.iter().map(|k| k.as_str()))
            .map(|n| (n.to_string(), Reason::Event(n).to_string().into()))
            .collect();
        let digest = |s: String| xxhash_rust::xxh3::xxh3_64(s.as_bytes());
        // Campaigns are not in the version: editing one re-evaluates no segment.
        let version = digest(format!(
            "{}{}",
            serde_json::to_string(&defs.scores).unwrap_or_default(),
            serde_json::to_string(&defs.segments).unwrap_or_default()
        ));
        let agg_keys: Vec<&str> = aggregates.specs.iter().map(|a| a.key.as_str()).collect();
        let replay_version = digest(format!(
            "{}{:?}",
            serde_json::to_string(&defs.scores).unwrap_or_default(),
            agg_keys
        ));
        Ok(Self {
            definitions: defs.clone(),
            version,
            replay_version,
            scores,
            segments,
            order,
            warnings,
            event_names,
            candidates,
            reads_scores,
            triggers,
            event_reasons,
            timer_reason: Reason::Timer.to_string().into(),
            series: crate::rules_env::SeriesPlan::new(&aggregates),
            aggregates,
            campaigns,
            features,
            models: Default::default(),
            send_time_priors: Default::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty() && self.segments.is_empty()
    }

    /// The text of a change's reason, shared when it is a known one.
    fn reason(&self, why: Reason<'_>) -> Name {
        match why {
            Reason::Timer => self.timer_reason.clone(),
            Reason::Event(name) => match self.event_reasons.get(name) {
                Some(r) => r.clone(),
                None => why.to_string().into(),
            },
            Reason::Replay(_) => why.to_string().into(),
        }
    }

    /// Whether an event older than ones already scored must be replayed with the history:
    /// when a rule that reads the profile could fire on it, or could have seen differently
    /// on a later event because of it. Rules that read only the event take it in place.
    pub fn late_event_needs_replay(&self, ev: &Event) -> bool {
        let name = self.event_names.id(ev);
        self.scores.iter().flat_map(|s| &s.rules).any(|r| {
            !r.order_free
                && (r.admits(ev) || r.deps.touched_by(ev, name, &[]) || !r.deps.scores.is_empty())
        })
    }

    /// (score, rule) indices of the rules an event may fire, in order, without duplicates;
    /// `name`: the event's name as numbered in [`EventNames`].
    fn candidate_rules(&self, ev: &Event, name: Option<u16>) -> &[(u16, u16)] {
        let slot = name.map_or(0, |n| n as usize + 1) * KINDS.len() + ev.kind as usize;
        self.candidates.get(slot).map_or(&[], Vec::as_slice)
    }

    pub fn score(&self, name: &str) -> Option<&CompiledScore> {
        self.scores
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.scores[i])
    }

    pub fn segment(&self, name: &str) -> Option<&CompiledSegment> {
        self.segment_position(name).map(|i| &self.segments[i])
    }

    /// Index of a segment by name (definitions are sorted by name).
    pub fn segment_position(&self, name: &str) -> Option<usize> {
        self.segments
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
    }
}

/// Every call type, in the order of its discriminant.
const KINDS: [crate::event::EventKind; 6] = {
    use crate::event::EventKind as K;
    [
        K::Identify,
        K::Track,
        K::Page,
        K::Screen,
        K::Group,
        K::Alias,
    ]
};

/// The candidate rules of every (event name number + 1, or 0 for a name no rule
/// mentions) and call type, worked out once so that an event looks its list up.
fn candidate_table(
    any: &[(u16, u16)],
    by_name: &[Vec<(u16, u16)>],
    by_kind: &[(String, Vec<(u16, u16)>)],
    names: usize,
) -> Vec<Vec<(u16, u16)>> {
    let mut table = Vec::with_capacity((names + 1) * KINDS.len());
    for slot in 0..=names {
        for (k, kind) in KINDS.iter().enumerate() {
            debug_assert_eq!(*kind as usize, k);
            let mut list = any.to_vec();
            if let Some(v) = slot.checked_sub(1).and_then(|n| by_name.get(n)) {
                list.extend_from_slice(v);
            }
            if let Some((_, v)) = by_kind.iter().find(|(x, _)| x == kind.as_str()) {
                list.extend_from_slice(v);
            }
            list.sort_unstable();
            list.dedup();
            table.push(list);
        }
    }
    table
}

/// Dependencies first; a cycle is an error naming a segment on it.
fn evaluation_order(segments: &[CompiledSegment]) -> Result<Vec<usize>, DefinitionError> {
    fn visit(
        i: usize,
        segs: &[CompiledSegment],
        state: &mut [u8],
        out: &mut Vec<usize>,
    ) -> Result<(), DefinitionError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(invalid(
                    format!("segments.{}.rule", segs[i].name),
                    "segments refer to each other in a cycle",
                ))
            }
            _ => {}
        }
        state[i] = 1;
        for &d in &segs[i].program.segments_used {
            visit(d, segs, state, out)?;
        }
        state[i] = 2;
        out.push(i);
        Ok(())
    }
    let mut state = vec![0u8; segments.len()];
    let mut out = Vec::with_capacity(segments.len());
    for i in 0..segments.len() {
        visit(i, segments, &mut state, &mut out)?;
    }
    Ok(out)
}

/// `2^(-dt/h)`: the weight left after `dt` of decay.
pub fn decay(half_life: Option<Millis>, dt: Millis) -> f64 {
    match half_life {
        Some(h) if dt != 0 => (-(dt as f64) / h as f64).exp2(),
        _ => 1.0,
    }
}

/// One rule's share of a score.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// Decayed points as of the score's `at`.
    pub raw: f64,
    pub fired: u64,
    /// Matches not counted because of the cap.
    pub capped: u64,
    /// For capped rules: per cap window (`t / D`), the times that counted, at most N, in
    /// time order; the newest windows only (see [`LATE_LIMIT`]).
    #[serde(with = "window_times")]
    pub windows: Vec<(i64, Vec<Millis>)>,
}

/// How many instants at which a segment's result stays the same are looked past when
/// setting its timer: each costs an evaluation, each one skipped saves a wake-up.
const FLIP_PROBES: usize = 32;

/// No due instant (evaluation keeps due instants in a plain array).
const NEVER: Millis = Millis::MAX;

/// How late an event may be and still be folded in place; older ones replay the history.
pub const LATE_LIMIT: Millis = 7 * DAY;

/// A score on one profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreState {
    /// Sum of decayed points as of `at`, before clamping.
    pub raw: f64,
    pub at: Millis,
    /// By rule index; only rules that ever matched.
    pub rules: Vec<(u16, RuleState)>,
    /// The tier at the last evaluation, to notice changes.
    #[serde(default, deserialize_with = "shared_name::deserialize")]
    pub tier: Option<Name>,
    /// For the trend: per UTC day with points, their sum decayed to the end of that day,
    /// oldest first; days before the last [`HISTORY_DAYS`] are folded into `older`. Sums
    /// per day do not depend on the order in which events arrived.
    #[serde(with = "day_sums")]
    pub days: Vec<(i64, f64)>,
    /// Everything before `days`, as (instant, value then).
    pub older: Option<(Millis, f64)>,
}

/// Days of history kept for trends (30 days ago, plus one to decay from).
const HISTORY_DAYS: i64 = 31;

/// A score's day sums ([`ScoreState::days`]) as one byte string: the count, then per day
/// its distance from the day before (usually one byte) and the sum's eight bytes.
pub(crate) mod day_sums {
    use crate::compact::{put_signed, put_varint, take_count, take_f64, take_signed};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(days: &[(i64, f64)], s: S) -> Result<S::Ok, S::Error> {
        crate::compact::serialize(days, s, |out| {
            put_varint(out, days.len() as u64);
            let mut prev = 0i64;
            for &(day, sum) in days {
                put_signed(out, day.wrapping_sub(prev));
                prev = day;
                out.extend_from_slice(&sum.to_le_bytes());
            }
        })
    }

    /// Reads the byte string back; `None` if it is cut short or has bytes left over.
    pub(crate) fn parse(mut bytes: &[u8]) -> Option<Vec<(i64, f64)>> {
        let n = take_count(&mut bytes, 9)?;
        let mut days = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            prev = prev.wrapping_add(take_signed(&mut bytes)?);
            days.push((prev, take_f64(&mut bytes)?));
        }
        bytes.is_empty().then_some(days)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(i64, f64)>, D::Error> {
        crate::compact::deserialize(d, "day sums", parse)
    }
}

/// A capped rule's times per cap window ([`RuleState::windows`]) as one byte string: the
/// number of windows, then per window its distance from the window before, the number of
/// times and each time's distance from the one before (the first from the epoch).
pub(crate) mod window_times {
    use crate::compact::{put_signed, put_varint, take_count, take_signed};
    use crate::time::Millis;
    use serde::{Deserializer, Serializer};

    type Windows = Vec<(i64, Vec<Millis>)>;

    pub fn serialize<S: Serializer>(windows: &Windows, s: S) -> Result<S::Ok, S::Error> {
        crate::compact::serialize(windows, s, |out| {
            put_varint(out, windows.len() as u64);
            let mut prev_window = 0i64;
            for (window, times) in windows {
                put_signed(out, window.wrapping_sub(prev_window));
                prev_window = *window;
                put_varint(out, times.len() as u64);
                let mut prev = 0i64;
                for &t in times {
                    put_signed(out, t.wrapping_sub(prev));
                    prev = t;
                }
            }
        })
    }

    /// Reads the byte string back; `None` if it is cut short or has bytes left over.
    pub(crate) fn parse(mut bytes: &[u8]) -> Option<Windows> {
        let n = take_count(&mut bytes, 2)?;
        let mut windows = Vec::with_capacity(n);
        let mut window = 0i64;
        for _ in 0..n {
            window = window.wrapping_add(take_signed(&mut bytes)?);
            let k = take_count(&mut bytes, 1)?;
            let mut times = Vec::with_capacity(k);
            let mut t = 0i64;
            for _ in 0..k {
                t = t.wrapping_add(take_signed(&mut bytes)?);
                times.push(t);
            }
            windows.push((window, times));
        }
        bytes.is_empty().then_some(windows)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Windows, D::Error> {
        crate::compact::deserialize(d, "cap windows", parse)
    }
}

impl ScoreState {
    /// Raw value at `t` (`t >= at`, or earlier if nothing happened in between).
    pub fn raw_at(&self, half_life: Option<Millis>, t: Millis) -> f64 {
        self.raw * decay(half_life, t - self.at)
    }

    /// Moves the instant to `t >= at`, decaying the value and every rule's share.
    fn advance(&mut self, half_life: Option<Millis>, t: Millis) {
        if t <= self.at {
            return;
        }
        let k = decay(half_life, t - self.at);
        self.raw *= k;
        for (_, r) in &mut self.rules {
            r.raw *= k;
        }
        self.at = t;
    }

    /// Records points `p` given at `t` in the trend's day sums, and folds days that fell
    /// out of the kept range into `older`.
    fn note_points(&mut self, half_life: Option<Millis>, t: Millis, p: f64) {
        let day = t.div_euclid(DAY);
        let end = (day + 1) * DAY;
        let i = match self.days.binary_search_by_key(&day, |(d, _)| *d) {
            Ok(i) => i,
            Err(i) => {
                self.days.insert(i, (day, 0.0));
                i
            }
        };
        self.days[i].1 += p * decay(half_life, end - t);
        let horizon = self.at.div_euclid(DAY) - HISTORY_DAYS;
        while self.days.first().is_some_and(|(d, _)| *d < horizon) {
            let (d, v) = self.days.remove(0);
            let end = (d + 1) * DAY;
            let before = self
                .older
                .map_or(0.0, |(at, o)| o * decay(half_life, end - at));
            self.older = Some((end, before + v));
        }
    }

    /// The raw value at an earlier instant, at day resolution: points of the UTC day that
    /// holds `t` are not counted unless `t` is at or after the newest event.
    pub fn raw_before(&self, half_life: Option<Millis>, t: Millis) -> f64 {
        if t >= self.at {
            return self.raw_at(half_life, t);
        }
        let day = t.div_euclid(DAY);
        let mut v = self
            .older
            .filter(|(at, _)| *at <= t)
            .map_or(0.0, |(at, o)| o * decay(half_life, t - at));
        for (d, sum) in &self.days {
            if *d >= day {
                break;
            }
            v += sum * decay(half_life, t - (d + 1) * DAY);
        }
        v
    }
}

/// When a value `raw` at `now`, decaying toward zero, reaches `target` (same sign, smaller
/// size); rounded up, and always after `now`.
pub fn crossing(raw: f64, half_life: Option<Millis>, now: Millis, target: f64) -> Option<Millis> {
    let h = half_life? as f64;
    if target == 0.0 || raw == 0.0 || (raw > 0.0) != (target > 0.0) || raw.abs() < target.abs() {
        return None;
    }
    if raw == target {
        // On the threshold now: below it from the next millisecond.
        return Some(now + 1);
    }
    let t = now as f64 + h * (raw / target).log2();
    (t.is_finite() && t < i64::MAX as f64).then(|| (t.ceil() as Millis).max(now + 1))
}

/// A change in membership or tier, as recorded on the profile timeline and in the change
/// stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub at: Millis,
    pub kind: ChangeKind,
    pub reason: Name,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChangeKind {
    Enter {
        segment: Name,
    },
    Exit {
        segment: Name,
    },
    Tier {
        score: Name,
        from: Option<Name>,
        to: Option<Name>,
    },
    Primary {
        from: Option<Name>,
        to: Option<Name>,
    },
    /// A campaign decision or an engagement with a campaign's message (see
    /// [`crate::campaign`]).
    Message {
        campaign: String,
        step: u16,
        message_id: String,
        status: crate::campaign::MessageStatus,
    },
}

impl Change {
    /// The segment it is about, for the per-segment stream.
    pub fn segment(&self) -> Option<&str> {
        match &self.kind {
            ChangeKind::Enter { segment } | ChangeKind::Exit { segment } => Some(segment),
            _ => None,
        }
    }

    /// The stream it belongs to: `segment:<name>`, `tier:<score>` or `primary`.
    pub fn stream(&self) -> String {
        match &self.kind {
            ChangeKind::Enter { segment } | ChangeKind::Exit { segment } => {
                format!("segment:{segment}")
            }
            ChangeKind::Tier { score, .. } => format!("tier:{score}"),
            ChangeKind::Primary { .. } => "primary".into(),
            ChangeKind::Message { campaign, .. } => format!("campaign:{campaign}"),
        }
    }

    /// The stored record of this change, numbered `seq`, for `profile`: a JSON object
    /// (`type`, the segment or score, `from`/`to` for tiers and primary segments, `at`,
    /// `reason`, `seq`, `profile`). Written straight from the fields: several changes per
    /// event go through here.
    pub fn record(&self, seq: u64, profile: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Record<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            segment: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            score: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            from: Option<Option<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            to: Option<Option<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            campaign: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            step: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none", rename = "messageId")]
            message_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            variant: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metric: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            until: Option<String>,
            at: String,
            reason: &'a str,
            seq: u64,
            profile: &'a str,
        }
        let mut r = Record {
            kind: "",
            segment: None,
            score: None,
            from: None,
            to: None,
            campaign: None,
            status: None,
            step: None,
            message_id: None,
            variant: None,
            channel: None,
            metric: None,
            value: None,
            until: None,
            at: format_timestamp(self.at),
            reason: &self.reason,
            seq,
            profile,
        };
        match &self.kind {
            ChangeKind::Enter { segment } => (r.kind, r.segment) = ("enter", Some(&**segment)),
            ChangeKind::Exit { segment } => (r.kind, r.segment) = ("exit", Some(&**segment)),
            ChangeKind::Tier { score, from, to } => {
                (r.kind, r.score) = ("tier", Some(&**score));
                (r.from, r.to) = (Some(from.as_deref()), Some(to.as_deref()));
            }
            ChangeKind::Primary { from, to } => {
                r.kind = "primary_segment";
                (r.from, r.to) = (Some(from.as_deref()), Some(to.as_deref()));
            }
            ChangeKind::Message {
                campaign,
                step,
                message_id,
                status,
            } => {
                use crate::campaign::MessageStatus as S;
                r.kind = "message";
                r.campaign = Some(campaign);
                r.status = Some(status.as_str());
                r.step = Some(*step);
                r.message_id = Some(message_id);
                match status {
                    S::Queued(o) => {
                        r.variant = Some(&o.variant);
                        r.channel = Some(&o.channel);
                    }
                    S::Deferred { until } => r.until = Some(format_timestamp(*until)),
                    S::Engaged {
                        variant,
                        metric,
                        value,
                    } => {
                        r.variant = variant.as_deref();
                        r.metric = Some(metric.as_str());
                        r.value = Some(*value);
                    }
                    _ => {}
                }
            }
        }
        // Plain strings and numbers always serialise.
        serde_json::to_vec(&r).unwrap_or_default()
    }
}

/// First byte of a change record in the compact encoding ([`Change::encode`]). Records
/// written as JSON ([`Change::record`]) start with `{`.
const COMPACT_RECORD: u8 = 1;

/// The kinds of change the compact encoding holds: the membership, tier and primary
/// changes, which are nearly all of them. Campaign changes stay JSON (their statuses carry
/// JSON values, which postcard cannot read back).
#[derive(Serialize, Deserialize)]
enum CompactKind<S> {
    Enter(S),
    Exit(S),
    Tier(S, Option<S>, Option<S>),
    Primary(Option<S>, Option<S>),
}

#[derive(Serialize, Deserialize)]
struct CompactRecord<S> {
    at: Millis,
    seq: u64,
    profile: u64,
    kind: CompactKind<S>,
    reason: S,
}

impl Change {
    /// The stored form of this change, numbered `seq`, for `profile`: compact binary for
    /// segment, tier and primary changes (a third the size of their JSON, and written
    /// without formatting a timestamp), the JSON of [`Change::record`] for the rest.
    /// [`Change::decode_record`] reads either.
    pub fn encode(&self, seq: u64, profile: crate::identity::ProfileId) -> Vec<u8> {
        let kind = match &self.kind {
            ChangeKind::Enter { segment } => CompactKind::Enter(&**segment),
            ChangeKind::Exit { segment } => CompactKind::Exit(&**segment),
            ChangeKind::Tier { score, from, to } => {
                CompactKind::Tier(&**score, from.as_deref(), to.as_deref())
            }
            ChangeKind::Primary { from, to } => {
                CompactKind::Primary(from.as_deref(), to.as_deref())
            }
            ChangeKind::Message { .. } => return self.record(seq, &profile.to_string()),
        };
        let r = CompactRecord {
            at: self.at,
            seq,
            profile: profile.0,
            kind,
            reason: &*self.reason,
        };
        let mut out = Vec::with_capacity(64);
        out.push(COMPACT_RECORD);
        // Plain strings and numbers always serialise.
        postcard::to_extend(&r, out).unwrap_or_default()
    }

    /// A stored change record (either form of [`Change::encode`]) as the JSON object of
    /// [`Change::record`].
    pub fn decode_record(bytes: &[u8]) -> Result<Value, String> {
        let Some((&COMPACT_RECORD, body)) = bytes.split_first() else {
            return serde_json::from_slice(bytes).map_err(|e| e.to_string());
        };
        let r: CompactRecord<String> = postcard::from_bytes(body).map_err(|e| e.to_string())?;
        let kind = match r.kind {
            CompactKind::Enter(segment) => ChangeKind::Enter {
                segment: segment.into(),
            },
            CompactKind::Exit(segment) => ChangeKind::Exit {
                segment: segment.into(),
            },
            CompactKind::Tier(score, from, to) => ChangeKind::Tier {
                score: score.into(),
                from: from.map(Name::from),
                to: to.map(Name::from),
            },
            CompactKind::Primary(from, to) => ChangeKind::Primary {
                from: from.map(Name::from),
                to: to.map(Name::from),
            },
        };
        let c = Change {
            at: r.at,
            kind,
            reason: r.reason.into(),
        };
        let profile = crate::identity::ProfileId(r.profile).to_string();
        serde_json::from_slice(&c.record(r.seq, &profile)).map_err(|e| e.to_string())
    }
}

/// What scores and segments derived for one profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    /// [`Scoring::version`] and [`Scoring::replay_version`] this was computed under.
    pub version: u64,
    pub replay_version: u64,
    /// Order key of the newest event folded into the scores.
    pub applied: Option<(Millis, u64)>,
    pub scores: VecMap<ScoreState>,
    /// Member segments, with the instant each was entered.
    pub segments: VecMap<Millis>,
    #[serde(default, deserialize_with = "shared_name::deserialize")]
    pub primary: Option<Name>,
    /// The next instant at which a membership or tier may change with no event.
    pub timer: Option<Millis>,
    /// The same, per segment (index `i`) and per score's tier (`segments + i`), for the
    /// definitions of `version`; only those set. At a timer, only what is due re-evaluates.
    pub due: Vec<(u16, Millis)>,
    /// Positions of the member segments in the definitions of `version` (the names in
    /// `segments` are the truth; this saves looking them up on every evaluation).
    pub member_index: Vec<u16>,
    #[serde(skip)]
    pub(crate) slots: ScoreSlots,
    #[serde(skip)]
    pub(crate) series_slots: crate::rules_env::SeriesSlots,
}

/// What prompted an evaluation, which decides what must be re-evaluated.
#[derive(Clone, Copy, Debug)]
pub enum Trigger<'a> {
    /// An event was folded in; `scored[i]`: score `i` received points; `touched`: what
    /// it wrote of the state.
    Event {
        ev: &'a Event,
        scored: &'a [bool],
        touched: Touched,
    },
    /// A timer came due: only what was due, and what depends on what changed.
    Timer,
    /// Everything (new definitions, replays).
    All,
    /// Segment definitions changed, scores did not: evaluate the `changed` segments (and
    /// what depends on them); the profile's other results stand. `remap` maps the due
    /// indices of the previous definitions to these.
    Definitions {
        changed: &'a [bool],
        remap: &'a [Option<u16>],
    },
}

/// What changed from `old` to `new` definitions, for [`Trigger::Definitions`]: which of the
/// new segments are new or edited, and where each old due index went.
pub fn definitions_delta(old: &Scoring, new: &Scoring) -> (Vec<bool>, Vec<Option<u16>>) {
    let changed = new
        .segments
        .iter()
        .map(|s| {
            old.segment(&s.name)
                .is_none_or(|o| o.program.source != s.program.source || o.priority != s.priority)
        })
        .collect();
    let (on, nn) = (old.segments.len(), new.segments.len());
    let mut remap: Vec<Option<u16>> = old
        .segments
        .iter()
        .map(|s| new.segment_position(&s.name).map(|i| i as u16))
        .collect();
    remap.extend(old.scores.iter().map(|s| {
        new.scores
            .iter()
            .position(|n| n.name == s.name)
            .map(|i| (nn + i) as u16)
    }));
    debug_assert_eq!(remap.len(), on + old.scores.len());
    (changed, remap)
}

/// What a rule reads of the profile, so a segment is re-evaluated only when that may have
/// changed, and a late event is replayed only when it may change what a rule saw.
#[derive(Clone, Debug, Default)]
struct Deps {
    /// The groups of profile fields it reads ([`Touched`]'s constants).
    groups: u16,
    /// Event names (numbered in [`EventNames`]) of the aggregates it reads.
    names: Vec<u16>,
    scores: Vec<usize>,
    segments: Vec<usize>,
}

impl Deps {
    fn of(program: &Program, aggregates: &Aggregates, names: &mut EventNames) -> Self {
        use kairos_rules::Field as F;
        let reads = program.reads();
        let mut d = Deps {
            scores: program.scores_used.clone(),
            segments: program.segments_used.clone(),
            ..Self::default()
        };
        if reads.traits {
            d.groups |= Touched::TRAITS;
        }
        if reads.subscriptions {
            d.groups |= Touched::SUBSCRIPTIONS;
        }
        for f in reads.fields {
            d.groups |= match f {
                F::Orders | F::LifetimeRevenue | F::FirstOrder | F::LastOrder => Touched::ORDERS,
                F::CartValue | F::CartItems => Touched::CART,
                F::EmailDelivered
                | F::EmailOpens
                | F::EmailClicks
                | F::LastEmailOpen
                | F::LastEmailClick => Touched::EMAIL,
                F::Suppressed => Touched::SUPPRESSED,
                F::EventCount | F::LastSeen => Touched::SEEN,
                F::FirstSeen => Touched::FIRST_SEEN,
                F::LocalHour | F::LocalWeekday | F::Timezone => Touched::ZONE,
                // A field added later, until it is placed in a group: every event.
                #[allow(unreachable_patterns)]
                _ => Touched::ALL,
            };
        }
        for &a in &program.aggregates_used {
            if let Some(spec) = aggregates.specs.get(a) {
                let id = names.intern(&spec.event);
                if !d.names.contains(&id) {
                    d.names.push(id);
                }
            }
        }
        d
    }

    /// Reads nothing of the profile.
    fn is_empty(&self) -> bool {
        self.groups == 0
            && self.names.is_empty()
            && self.scores.is_empty()
            && self.segments.is_empty()
    }

    /// `name`: the event's name as numbered in [`EventNames`].
    /// Whether `ev` may change what it reads, judged from the event alone (for late
    /// events, before they are folded in: every group an event of its kind could write).
    fn touched_by(&self, ev: &Event, name: Option<u16>, scored: &[bool]) -> bool {
        use crate::event::EventKind;
        let mut could = Touched::SEEN | Touched::FIRST_SEEN | Touched::ZONE;
        if ev.kind == EventKind::Track {
            could |= Touched::TRACK | Touched::SUBSCRIPTIONS;
        }
        if ev.kind == EventKind::Identify || !ev.traits.is_empty() {
            could |= Touched::TRAITS | Touched::SUBSCRIPTIONS;
        }
        self.groups & could != 0
            || name.is_some_and(|n| self.names.contains(&n))
            || self
                .scores
                .iter()
                .any(|&i| scored.get(i).copied().unwrap_or(false))
    }
}

/// Which segments each kind of change can affect, from their [`Deps`], as masks over
/// segment positions: an event or a timer re-evaluates the union of a few masks instead of
/// asking every segment.
#[derive(Clone, Debug, Default)]
struct SegmentTriggers {
    /// By bit of [`Touched`]: the segments reading that group of fields.
    by_group: [Bits; Touched::COUNT],
    /// By event name number ([`EventNames`]).
    by_name: Vec<Bits>,
    /// By score position: the segments that read the score.
    by_score: Vec<Bits>,
    /// Segments that read other segments (re-evaluated when one of those changes).
    reads_segments: Bits,
    /// Per segment, the scores it reads (a mask over score positions).
    scores_read: Vec<Bits>,
}

impl SegmentTriggers {
    fn new(segments: &[CompiledSegment], nscores: usize, nnames: usize) -> Self {
        let n = segments.len();
        let mut t = SegmentTriggers {
            by_group: std::array::from_fn(|_| Bits::new(n)),
            by_name: vec![Bits::new(n); nnames],
            by_score: vec![Bits::new(n); nscores],
            reads_segments: Bits::new(n),
            scores_read: Vec::with_capacity(n),
        };
        for (i, seg) in segments.iter().enumerate() {
            let d = &seg.deps;
            for (g, b) in t.by_group.iter_mut().enumerate() {
                b.put(i, d.groups & (1 << g) != 0);
            }
            t.reads_segments.put(i, !d.segments.is_empty());
            for &name in &d.names {
                if let Some(b) = t.by_name.get_mut(name as usize) {
                    b.set(i);
                }
            }
            let mut read = Bits::new(nscores);
            for &s in &d.scores {
                if let Some(b) = t.by_score.get_mut(s) {
                    b.set(i);
                }
                read.set(s);
            }
            t.scores_read.push(read);
        }
        t
    }

    /// The segments an event may have changed: those reading a group of fields it wrote
    /// (`touched`), the counts of its name, or a score it gave points to (`scored`).
    fn touched(&self, touched: Touched, name: Option<u16>, scored: &[bool], out: &mut Bits) {
        for (g, b) in self.by_group.iter().enumerate() {
            if touched.0 & (1 << g) != 0 {
                out.or(b);
            }
        }
        if let Some(b) = name.and_then(|n| self.by_name.get(n as usize)) {
            out.or(b);
        }
        for (i, s) in scored.iter().enumerate() {
            if *s {
                if let Some(b) = self.by_score.get(i) {
                    out.or(b);
                }
            }
        }
    }
}

/// A score at an instant, as rules read it.
#[derive(Clone, Debug, Default)]
pub struct ScoreNow<'a> {
    pub value: f64,
    pub raw: f64,
    pub tier: Option<&'a str>,
    /// When the raw value reaches a threshold, and when the tier changes, with no event.
    pub half_life: Option<Millis>,
    /// The instant these values hold at.
    pub now: Millis,
    /// The tier thresholds: the next tier change (a logarithm per bound) is worked out
    /// only for the scores something asks about.
    bounds: &'a [TierBound],
}

impl ScoreNow<'_> {
    /// When the tier changes with no event (the decaying value crosses a bound).
    pub fn tier_change(&self) -> Option<Millis> {
        self.bounds
            .iter()
            .filter_map(|t| t.from)
            .filter_map(|b| crossing(self.raw, self.half_life, self.now, b))
            .min()
    }
}

/// Positions of the definitions' scores in [`Derived::scores`] (`NO_SLOT`: never scored),
/// so evaluations index instead of matching names. Derived from the definitions and the
/// map's keys, so neither stored nor compared; rebuilt when either changes.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScoreSlots {
    version: u64,
    keys: usize,
    valid: bool,
    slots: Vec<u16>,
}

const NO_SLOT: u16 = u16::MAX;

impl PartialEq for ScoreSlots {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ScoreSlots {
    fn is_current(&self, scores: &VecMap<ScoreState>, scoring: &Scoring) -> bool {
        self.valid && self.version == scoring.version && self.keys == scores.len()
    }

    /// The positions for `scores` under `scoring`: the cached ones when they are current
    /// (evaluations refresh them first), else looked up now.
    fn current<'a>(
        &'a self,
        scores: &VecMap<ScoreState>,
        scoring: &Scoring,
    ) -> std::borrow::Cow<'a, [u16]> {
        if self.is_current(scores, scoring) {
            std::borrow::Cow::Borrowed(&self.slots)
        } else {
            std::borrow::Cow::Owned(lookup_slots(scores, scoring))
        }
    }
}

fn lookup_slots(scores: &VecMap<ScoreState>, scoring: &Scoring) -> Vec<u16> {
    scoring
        .scores
        .iter()
        .map(|sc| scores.index_of(&sc.name).map_or(NO_SLOT, |p| p as u16))
        .collect()
}

impl Derived {
    /// The scores marked in `needed` (all if `None`) at `now`, the others left at zero, in
    /// definition order, into `out` (filled in place: the inline array is a kilobyte, and
    /// returning it copied that at every evaluation).
    fn scores_now<'s>(
        &self,
        scoring: &'s Scoring,
        now: Millis,
        needed: Option<&Bits>,
        out: &mut ScoresNow<'s>,
    ) {
        let slots = self.slots.current(&self.scores, scoring);
        out.clear();
        for (i, sc) in scoring.scores.iter().enumerate() {
            if !needed.is_none_or(|n| n.get(i)) {
                out.push(ScoreNow::default());
                continue;
            }
            let st = slots
                .get(i)
                .and_then(|&p| self.scores.at(p as usize))
                .map(|(_, v)| v);
            out.push(score_now(sc, st, now));
        }
    }

    /// Brings the score positions up to the definitions and the map (see [`ScoreSlots`]).
    fn refresh_slots(&mut self, scoring: &Scoring) {
        let s = &mut self.slots;
        if s.is_current(&self.scores, scoring) {
            return;
        }
        s.slots = lookup_slots(&self.scores, scoring);
        (s.version, s.keys, s.valid) = (scoring.version, self.scores.len(), true);
    }

    /// The state of definition score `i`, if it was ever scored (slots refreshed first).
    fn score_state_mut(&mut self, i: usize) -> Option<&mut ScoreState> {
        let slot = self.slots.slots.get(i).copied().unwrap_or(NO_SLOT);
        self.scores.at_mut(slot as usize)
    }

    /// Every score at `now`, for rule evaluation.
    pub fn scores_at<'s>(&self, scoring: &'s Scoring, now: Millis) -> Vec<ScoreNow<'s>> {
        let mut out = ScoresNow::new();
        self.scores_now(scoring, now, None, &mut out);
        out.into_vec()
    }

    /// Returns, per score, whether it received points.
    pub fn score_event(&mut self, state: &ProfileState, ev: &Event, scoring: &Scoring) -> Flags {
        let mut scored: Flags = smallvec::smallvec![false; scoring.scores.len()];
        let t = ev.timestamp;
        self.replay_version = scoring.replay_version;
        self.applied = Some(
            self.applied
                .map_or(ev.order_key(), |a| a.max(ev.order_key())),
        );
        if scoring.scores.is_empty() {
            return scored;
        }
        let candidates = scoring.candidate_rules(ev, scoring.event_names.id(ev));
        if candidates.is_empty() {
            return scored;
        }
        let mut before = ScoresNow::new();
        if scoring.reads_scores {
            self.scores_now(scoring, t, None, &mut before);
        }
        let env = ProfileEnv {
            state,
            aggregates: &scoring.aggregates,
            now: t,
            event: Some(ev),
            scores: &before,
            segments: &Bits::default(),
            series: &[],
            trigger: None,
            zone: &Default::default(),
        };
        let fired: RuleRefs = candidates
            .iter()
            .copied()
            .filter(|&(si, ri)| {
                scoring.scores[si as usize].rules[ri as usize]
                    .program
                    .matches(&env)
            })
            .collect();
        self.refresh_slots(scoring);
        for group in fired.chunk_by(|a, b| a.0 == b.0) {
            let si = group[0].0 as usize;
            let sc = &scoring.scores[si];
            if self.slots.slots.get(si).is_none_or(|&p| p == NO_SLOT) {
                self.scores.get_or_insert_with(&sc.name, || ScoreState {
                    at: t,
                    ..ScoreState::default()
                });
                self.refresh_slots(scoring);
            }
            let Some(st) = self.score_state_mut(si) else {
                continue;
            };
            st.advance(sc.half_life, t);
            for &(_, idx) in group {
                let rule = &sc.rules[idx as usize];
                let pos = match st.rules.binary_search_by_key(&idx, |(k, _)| *k) {
                    Ok(p) => p,
                    Err(p) => {
                        st.rules.insert(p, (idx, RuleState::default()));
                        p
                    }
                };
                let (h, at) = (sc.half_life, st.at);
                let mut delta = 0.0;
                let mut noted: SmallVec<[(Millis, f64); 2]> = SmallVec::new();
                {
                    let rs = &mut st.rules[pos].1;
                    if let Some(cap) = rule.cap {
                        // Fixed windows: the first N matches by event time count, so the
                        // result does not depend on the order in which events arrived.
                        let w = t.div_euclid(cap.per_ms);
                        let i = match rs.windows.binary_search_by_key(&w, |(k, _)| *k) {
                            Ok(i) => i,
                            Err(i) => {
                                rs.windows.insert(i, (w, Vec::new()));
                                i
                            }
                        };
                        let counted = &mut rs.windows[i].1;
                        let n = cap.times as usize;
                        if counted.len() >= n && counted.last().is_some_and(|l| *l <= t) {
                            rs.capped += 1;
                            continue;
                        }
                        let p = counted.partition_point(|x| *x <= t);
                        counted.insert(p, t);
                        if counted.len() > n {
                            // A late event displaces the newest that counted.
                            if let Some(out) = counted.pop() {
                                delta -= rule.points * decay(h, at - out);
                                noted.push((out, -rule.points));
                                rs.fired -= 1;
                                rs.capped += 1;
                            }
                        }
                        let horizon = at
                            .saturating_sub(LATE_LIMIT + cap.per_ms)
                            .div_euclid(cap.per_ms);
                        let keep = rs.windows.partition_point(|(k, _)| *k < horizon);
                        rs.windows.drain(..keep);
                    }
                    rs.fired += 1;
                    delta += rule.points * decay(h, at - t);
                    noted.push((t, rule.points));
                    rs.raw += delta;
                }
                st.raw += delta;
                for (when, pts) in noted {
                    st.note_points(h, when, pts);
                }
                scored[group[0].0 as usize] = true;
            }
        }
        scored
    }

    /// Evaluates tiers and segments at `now`, records what changed, and sets the timers.
    /// Only what `trigger` may have changed is re-evaluated; the rest keeps its result and
    /// its timer, which stay valid because nothing they read has changed.
    pub fn evaluate(
        &mut self,
        state: &ProfileState,
        scoring: &Scoring,
        now: Millis,
        reason: Reason<'_>,
        trigger: Trigger<'_>,
        out: &mut Vec<Change>,
    ) {
        let definitions_changed = self.version != scoring.version;
        let (changed_defs, remap) = match trigger {
            Trigger::Definitions { changed, remap } if definitions_changed => {
                (Some(changed), Some(remap))
            }
            _ => (None, None),
        };
        let all = matches!(trigger, Trigger::All) || (definitions_changed && remap.is_none());
        self.version = scoring.version;
        self.refresh_slots(scoring);
        let nseg = scoring.segments.len();
        let nscores = scoring.scores.len();
        let triggers = &scoring.triggers;
        // Due instants by position (segments, then score tiers); `NEVER`: none.
        let mut due: SmallVec<[Millis; 48]> = smallvec::smallvec![NEVER; nseg + nscores];
        // What this evaluation looks at: the segments to evaluate, the scores whose tier to
        // check.
        let mut evaluate_segment = Bits::new(nseg);
        let mut score_dirty = Bits::new(nscores);
        if all {
            evaluate_segment = Bits::full(nseg);
            score_dirty = Bits::full(nscores);
        } else {
            for &(i, t) in &self.due {
                let j = match remap {
                    Some(r) => r.get(i as usize).copied().flatten(),
                    None => Some(i),
                };
                let Some(j) = j.map(usize::from).filter(|&j| j < due.len()) else {
                    continue;
                };
                due[j] = t;
                if t <= now {
                    if j < nseg {
                        evaluate_segment.set(j);
                    } else {
                        score_dirty.set(j - nseg);
                    }
                }
            }
            if let Some(c) = changed_defs {
                for i in 0..nseg {
                    if c.get(i).copied().unwrap_or(true) {
                        evaluate_segment.set(i);
                    }
                }
            }
        }
        if let Trigger::Event {
            ev,
            scored,
            touched,
        } = trigger
        {
            for (i, s) in scored.iter().enumerate() {
                if *s {
                    score_dirty.set(i);
                }
            }
            if !all {
                let name = scoring.event_names.id(ev);
                triggers.touched(touched, name, scored, &mut evaluate_segment);
            }
        }
        // Segments that may be evaluated: those prompted, and those that read other
        // segments (evaluated if one of those changes).
        let mut maybe = evaluate_segment.clone();
        maybe.or(&triggers.reads_segments);
        let any_maybe = !maybe.is_empty();
        let mut needed = score_dirty.clone();
        for i in maybe.ones() {
            if let Some(read) = triggers.scores_read.get(i) {
                needed.or(read);
            }
        }
        let mut scores = ScoresNow::new();
        if !needed.is_empty() {
            self.scores_now(scoring, now, Some(&needed), &mut scores);
        }
        // One reason text per evaluation, shared by its changes.
        let mut reason_text: Option<Name> = None;
        let mut reason_text = || {
            reason_text
                .get_or_insert_with(|| scoring.reason(reason))
                .clone()
        };

        // Tiers of the scores that received points or whose tier timer came due.
        for i in score_dirty.ones() {
            let (Some(sc), Some(s)) = (scoring.scores.get(i), scores.get(i)) else {
                continue;
            };
            let Some(st) = self.score_state_mut(i) else {
                continue;
            };
            due[nseg + i] = s.tier_change().unwrap_or(NEVER);
            if st.tier.as_deref() != s.tier {
                let tier = s.tier.map(|t| sc.tier_label(t));
                let from = std::mem::replace(&mut st.tier, tier.clone());
                out.push(Change {
                    at: now,
                    kind: ChangeKind::Tier {
                        score: sc.label.clone(),
                        from,
                        to: tier,
                    },
                    reason: reason_text(),
                });
            }
        }

        let mut was = Bits::new(nseg);
        if any_maybe {
            if definitions_changed || self.member_index.len() != self.segments.len() {
                for name in self.segments.keys() {
                    if let Some(i) = scoring.segment_position(name) {
                        was.set(i);
                    }
                }
            } else {
                for &i in &self.member_index {
                    if (i as usize) < nseg {
                        was.set(i as usize);
                    }
                }
            }
        }
        let mut member = was.clone();
        let mut changed = Bits::new(nseg);
        if any_maybe {
            let positions = self
                .series_slots
                .refresh(&scoring.series, state, scoring.version);
            let series = scoring.series.resolve_at(state, positions);
            let zone = crate::rules_env::ZoneCell::new();
            for &i in &scoring.order {
                if !maybe.get(i) {
                    continue;
                }
                let seg = &scoring.segments[i];
                if !evaluate_segment.get(i) && seg.deps.segments.iter().any(|&j| changed.get(j)) {
                    evaluate_segment.set(i);
                }
                if !evaluate_segment.get(i) {
                    continue;
                }
                let is = {
                    let env = ProfileEnv {
                        state,
                        aggregates: &scoring.aggregates,
                        now,
                        event: None,
                        scores: &scores,
                        segments: &member,
                        series: &series,
                        trigger: None,
                        zone: &zone,
                    };
                    let is = seg.program.matches(&env);
                    due[i] = seg
                        .program
                        .next_flip(&env, is, FLIP_PROBES)
                        .unwrap_or(NEVER);
                    is
                };
                member.put(i, is);
                changed.put(i, is != was.get(i));
            }
        }
        for i in changed.ones() {
            let seg = &scoring.segments[i];
            let kind = if member.get(i) {
                self.segments.insert(&seg.name, now);
                ChangeKind::Enter {
                    segment: seg.label.clone(),
                }
            } else {
                self.segments.remove(&seg.name);
                ChangeKind::Exit {
                    segment: seg.label.clone(),
                }
            };
            out.push(Change {
                at: now,
                kind,
                reason: reason_text(),
            });
        }
        if definitions_changed {
            // Segments that no longer exist are left, scores that no longer exist dropped.
            let gone: Vec<String> = self
                .segments
                .keys()
                .filter(|n| scoring.segment(n).is_none())
                .map(str::to_string)
                .collect();
            for name in gone {
                self.segments.remove(&name);
                out.push(Change {
                    at: now,
                    kind: ChangeKind::Exit {
                        segment: name.into(),
                    },
                    reason: "segment deleted".into(),
                });
            }
            self.scores.retain(|name| scoring.score(name).is_some());
        }
        if any_maybe || definitions_changed {
            self.member_index.clear();
            self.member_index.extend(member.ones().map(|i| i as u16));
        }
        if all || definitions_changed || !changed.is_empty() {
            let primary = member
                .ones()
                .filter_map(|i| scoring.segments.get(i))
                .min_by_key(|s| (s.priority, s.name.as_str()));
            if primary.map(|s| s.name.as_str()) != self.primary.as_deref() {
                let to = primary.map(|s| s.label.clone());
                let from = std::mem::replace(&mut self.primary, to.clone());
                out.push(Change {
                    at: now,
                    kind: ChangeKind::Primary { from, to },
                    reason: reason_text(),
                });
            }
        }
        self.due.clear();
        self.due.extend(
            due.iter()
                .enumerate()
                .filter(|(_, t)| **t > now && **t != NEVER)
                .map(|(i, t)| (i as u16, *t)),
        );
        self.timer = self.due.iter().map(|(_, t)| *t).min();
    }
    /// A score's value, tier, the share of each rule (decayed to `now`, biggest first) and
    /// its trend, for the explanation API.
    pub fn explain(&self, scoring: &Scoring, name: &str, now: Millis) -> Option<Value> {
        let sc = scoring.score(name)?;
        let st = self.scores.get(name).cloned().unwrap_or_default();
        let k = decay(sc.half_life, now - st.at);
        let raw = st.raw * k;
        let value = sc.clamp(raw);
        let mut rules: Vec<(f64, Value)> = sc
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let rs = st
                    .rules
                    .iter()
                    .find(|(k, _)| *k as usize == i)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
                let contribution = rs.raw * k;
                (
                    contribution,
                    json!({
                        "rule": rule.source,
                        "points": rule.points,
                        "contribution": round9(contribution),
                        "fired": rs.fired,
                        "capped": rs.capped,
                    }),
                )
            })
            .collect();
        rules.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
        let trend = |days: i64| round9(sc.clamp(st.raw_before(sc.half_life, now - days * DAY)));
        Some(json!({
            "score": name,
            "value": round9(value),
            "raw": round9(raw),
            "clamped": value != raw,
            "tier": sc.tier_of(value),
            "half_life_ms": sc.half_life,
            "contributions": rules.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "trend": {"1d": trend(1), "7d": trend(7), "30d": trend(30)},
            "as_of": format_timestamp(now),
        }))
    }

    /// Scores, tiers and memberships at `now`, for the profile API.
    pub fn view(&self, scoring: &Scoring, now: Millis) -> Value {
        let scores: serde_json::Map<String, Value> = scoring
            .scores
            .iter()
            .zip(self.scores_at(scoring, now))
            .map(|(sc, s)| {
                (
                    sc.name.clone(),
                    json!({"value": round9(s.value), "tier": s.tier}),
                )
            })
            .collect();
        let segments: Vec<Value> = self
            .segments
            .iter()
            .map(|(name, since)| json!({"name": name, "since": format_timestamp(*since)}))
            .collect();
        json!({
            "scores": scores,
            "segments": segments,
            "primary_segment": self.primary,
            "next_evaluation": self.timer.map(format_timestamp),
        })
    }
}

/// A score at `now` from its state (none: never scored).
fn score_now<'s>(sc: &'s CompiledScore, st: Option<&ScoreState>, now: Millis) -> ScoreNow<'s> {
    let raw = st.map_or(0.0, |s| s.raw_at(sc.half_life, now));
    let value = sc.clamp(raw);
    ScoreNow {
        value,
        raw,
        tier: sc.tier_of(value),
        half_life: sc.half_life,
        now,
        bounds: &sc.tiers,
    }
}

/// Nine decimals: enough for any score, and stable JSON.
fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Day sums and cap windows come back bit for bit from their stored byte strings
        /// (postcard) and from JSON, whatever the days, windows and times (far apart,
        /// negative, out of order) and sums (NaN, infinities, negative zero).
        #[test]
        fn compact_score_parts_come_back_bit_for_bit(
            days in proptest::collection::vec(
                (proptest::num::i64::ANY, proptest::num::f64::ANY),
                0..40,
            ),
            windows in proptest::collection::vec(
                (
                    proptest::num::i64::ANY,
                    proptest::collection::vec(proptest::num::i64::ANY, 0..12),
                ),
                0..6,
            ),
        ) {
            let st = ScoreState {
                days: days.clone(),
                rules: vec![(3, RuleState { windows: windows.clone(), ..RuleState::default() })],
                ..ScoreState::default()
            };
            let bits = |d: &[(i64, f64)]| d.iter().map(|(k, v)| (*k, v.to_bits())).collect::<Vec<_>>();
            let bytes = postcard::to_allocvec(&st).unwrap_or_default();
            let back: ScoreState = postcard::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert_eq!(bits(&back.days), bits(&days));
            proptest::prop_assert_eq!(&back.rules[0].1.windows, &windows);
            if days.iter().all(|(_, v)| v.is_finite()) {
                let json = serde_json::to_string(&st).unwrap_or_default();
                let back: ScoreState = serde_json::from_str(&json)
                    .unwrap_or_else(|e| panic!("{e}"));
                proptest::prop_assert_eq!(bits(&back.days), bits(&days));
                proptest::prop_assert_eq!(&back.rules[0].1.windows, &windows);
            }
        }
    }

    #[test]
    fn corrupt_day_sums_are_an_error_not_a_guess() {
        let days = vec![(20_000, 1.5), (20_001, -2.0), (20_030, 0.25)];
        let st = ScoreState {
            days,
            ..ScoreState::default()
        };
        let mut blob = Vec::new();
        let bytes = postcard::to_allocvec(&st).unwrap_or_default();
        // The day sums are the byte string after raw (8 bytes), at (varint), rules (0)
        // and tier (none): find it by re-encoding only the days.
        #[derive(serde::Serialize)]
        struct Days<'a>(#[serde(with = "day_sums")] &'a Vec<(i64, f64)>);
        // A newtype struct serialises as its content.
        blob.extend(postcard::to_allocvec(&Days(&st.days)).unwrap_or_default());
        assert!(bytes.windows(blob.len()).any(|w| w == blob.as_slice()));
        let (len, body) = blob.split_at(1);
        assert_eq!(usize::from(len[0]), body.len());
        assert_eq!(day_sums::parse(body), Some(st.days.clone()));
        // Cut short, with a byte left over, or with a count beyond the bytes.
        assert_eq!(day_sums::parse(&body[..body.len() - 1]), None);
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(day_sums::parse(&longer), None);
        let mut more = body.to_vec();
        more[0] = 100;
        assert_eq!(day_sums::parse(&more), None);
        assert_eq!(day_sums::parse(&[]), None);
        assert_eq!(day_sums::parse(&[0]), Some(vec![]));
        // Cap windows: one window (delta 2 -> zigzag 4) of two times (2 and 2 + 3).
        let windows = [1, 4, 2, 4, 6];
        assert_eq!(window_times::parse(&windows), Some(vec![(2, vec![2, 5])]));
        assert_eq!(window_times::parse(&windows[..4]), None);
        assert_eq!(window_times::parse(&[1, 4, 9, 4, 6]), None);
        assert_eq!(window_times::parse(&[1, 4, 2, 4, 6, 0]), None);
    }

    #[test]
    fn shared_names_decode_to_what_was_encoded_past_the_table_size() {
        // More distinct names than the per-thread table holds, each seen twice, with and
        // without a tier: every decoded name must equal the encoded one.
        let states: Vec<ScoreState> = (0..200)
            .map(|i| ScoreState {
                tier: (i % 3 != 0).then(|| Name::from(format!("tier-{}", i % 100).as_str())),
                ..ScoreState::default()
            })
            .collect();
        for st in &states {
            let bytes = postcard::to_allocvec(st).unwrap_or_default();
            let back: ScoreState = postcard::from_bytes(&bytes).unwrap_or_default();
            assert_eq!(&back, st);
            let json = serde_json::to_string(st).unwrap_or_default();
            let back: ScoreState = serde_json::from_str(&json).unwrap_or_default();
            assert_eq!(&back, st);
        }
        for primary in [None, Some(Name::from("vip"))] {
            let d = Derived {
                version: 3,
                primary,
                ..Derived::default()
            };
            let bytes = postcard::to_allocvec(&d).unwrap_or_default();
            assert_eq!(
                postcard::from_bytes::<Derived>(&bytes).ok().as_ref(),
                Some(&d)
            );
            let json = serde_json::to_string(&d).unwrap_or_default();
            assert_eq!(
                serde_json::from_str::<Derived>(&json).ok().as_ref(),
                Some(&d)
            );
        }
    }

    fn record(kind: ChangeKind) -> Value {
        let c = Change {
            at: 1_795_348_800_000,
            kind,
            reason: "event: Order Completed".into(),
        };
        serde_json::from_slice(&c.record(7, "p42")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn compact_change_records_read_back_as_their_json() {
        let kinds = [
            ChangeKind::Enter {
                segment: "vip".into(),
            },
            ChangeKind::Exit {
                segment: "cart_abandoners".into(),
            },
            ChangeKind::Tier {
                score: "engagement".into(),
                from: None,
                to: Some("hot".into()),
            },
            ChangeKind::Tier {
                score: "engagement".into(),
                from: Some("hot".into()),
                to: None,
            },
            ChangeKind::Primary {
                from: Some("vip".into()),
                to: None,
            },
            ChangeKind::Message {
                campaign: "welcome".into(),
                step: 1,
                message_id: "m1".into(),
                status: crate::campaign::MessageStatus::Deferred { until: 5 },
            },
        ];
        let profile = crate::identity::ProfileId(0x2a);
        for kind in kinds {
            let c = Change {
                at: 1_795_348_800_123,
                kind,
                reason: "event: Order Completed".into(),
            };
            let stored = c.encode(7, profile);
            let json: Value = serde_json::from_slice(&c.record(7, &profile.to_string()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(Change::decode_record(&stored), Ok(json.clone()), "{c:?}");
            if !matches!(c.kind, ChangeKind::Message { .. }) {
                assert!(stored.len() * 2 < c.record(7, &profile.to_string()).len());
            }
            // Records written as JSON by earlier versions read the same.
            assert_eq!(
                Change::decode_record(&c.record(7, &profile.to_string())),
                Ok(json)
            );
        }
        assert!(Change::decode_record(&[COMPACT_RECORD, 0xff]).is_err());
    }

    #[test]
    fn change_records_name_their_stream_and_keep_null_tiers_explicit() {
        let enter = record(ChangeKind::Enter {
            segment: "vip".into(),
        });
        assert_eq!(
            enter,
            json!({"type": "enter", "segment": "vip", "at": "2026-11-22T12:00:00.000Z",
                   "reason": "event: Order Completed", "seq": 7, "profile": "p42"})
        );
        let tier = record(ChangeKind::Tier {
            score: "engagement".into(),
            from: None,
            to: Some("warm".into()),
        });
        assert_eq!(tier["type"], "tier");
        assert_eq!(tier["score"], "engagement");
        assert!(tier.get("from").is_some_and(Value::is_null), "{tier}");
        assert_eq!(tier["to"], "warm");
        let primary = record(ChangeKind::Primary {
            from: Some("vip".into()),
            to: None,
        });
        assert_eq!(primary["type"], "primary_segment");
        assert!(primary.get("to").is_some_and(Value::is_null), "{primary}");
        assert!(primary.get("segment").is_none());
        let streams: Vec<String> = [
            ChangeKind::Exit {
                segment: "vip".into(),
            },
            ChangeKind::Tier {
                score: "engagement".into(),
                from: None,
                to: None,
            },
            ChangeKind::Primary {
                from: None,
                to: None,
            },
        ]
        .into_iter()
        .map(|kind| {
            Change {
                at: 0,
                kind,
                reason: "".into(),
            }
            .stream()
        })
        .collect();
        assert_eq!(streams, ["segment:vip", "tier:engagement", "primary"]);
    }
}
