//! Campaigns: which person gets which message when, decided inside the profile's state
//! machine so that replaying the log decides the same messages.
//!
//! # Semantics
//!
//! - A campaign starts a **journey** for a person on its trigger: an event matching a rule
//!   (evaluated on the event, like score rules), entering a segment, a score's tier changing
//!   (optionally to one tier), or a schedule (the host runs it over a segment's members).
//!   While a journey of a campaign is active, the campaign's triggers are ignored for that
//!   person; `reentry` can also demand a minimum time between entries, or allow one entry
//!   ever. Triggers fire on events applied in order and on timers; replays (merges, late
//!   events, changed definitions) do not fire event triggers again, and backfills of new
//!   definitions fire nothing: defining a campaign never blasts existing members.
//! - A journey walks the campaign's **steps**. Each step waits (`wait = "30m"`, or
//!   `wait_until = <rule>` with `wait = ` as its time limit), then sends one message.
//! - **Exit rules** (`did("Order Completed", since: trigger)`) are checked on every event of
//!   the person and before every send; a journey that exits sends nothing more.
//! - At a send, in this order: exit rule; **consent** (a hard-bounced or complaining address
//!   gets no email of any purpose; marketing and product messages need the person
//!   subscribed to that list, transactional ones do not); **quiet hours** in the person's
//!   time zone (the send is deferred to the first minute after them, DST-correct; not for
//!   transactional messages); **frequency caps** (global per channel and per campaign, over
//!   rolling windows, counting only marketing and product sends; transactional messages
//!   ignore them); then the **holdout** (the person is recorded as held out, for lift) or a
//!   **variant**, both by a stable hash of (person, campaign). Sends due at the same instant
//!   are decided in priority order (1 first), so when caps allow one, the most important
//!   campaign wins and the others are recorded as suppressed with the reason.
//! - Every decision, including each decision not to send, is a [`Change`] on the person's
//!   timeline (stream `campaign:<name>`). A send is a change with status `queued` that
//!   carries what the host needs to put the message in its outbox.
//! - **Engagement** events (delivered, opened, clicked, bounced, unsubscribed, complaint)
//!   that carry the message id in `properties.message_id` are attributed to the campaign
//!   and variant (first of each kind per message), and a campaign's **conversion** event
//!   within its window after a send (or holdout) is attributed once per message.

use crate::event::Event;
use crate::rules_env::ProfileEnv;
use crate::scoring::{Change, ChangeKind, DefinitionError, Derived, Scoring};
use crate::state::{Json, ProfileState};
use crate::time::{format_timestamp, time_zone, Millis, DAY, HOUR, MINUTE};
use crate::vecmap::VecMap;
use crate::vocab::Vocabulary;
use kairos_rules::{compile, parse_duration, Aggregates, Program, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A campaign as configured (TOML `[campaigns.<name>]` or `PUT /v1/campaigns/{name}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignDef {
    pub description: String,
    /// Off: no new journeys start; running ones go on.
    pub enabled: bool,
    pub trigger: TriggerDef,
    /// The messages, in order. A one-message campaign may use `wait`, `wait_until`,
    /// `template` and `variants` at the top level instead.
    pub steps: Vec<StepDef>,
    pub wait: Option<String>,
    pub wait_until: Option<String>,
    pub template: Option<String>,
    pub variants: Vec<VariantDef>,
    /// Ends the journey when true (`did("Order Completed", since: trigger)`).
    pub exit: Option<String>,
    /// `email`, or `webhook:<endpoint>`.
    pub channel: String,
    /// The subscription list the message belongs to: `marketing`, `product`, or
    /// `transactional` (no subscription needed, no caps, no quiet hours).
    pub purpose: String,
    /// 1 is the highest; decides which campaign wins when caps allow only one.
    pub priority: i32,
    /// This campaign's own caps, e.g. `["1 per 7d"]`, on top of the global ones.
    pub caps: Vec<String>,
    /// Share of people held out (0..1): they get nothing, to measure lift.
    pub holdout: f64,
    /// When a person may enter again: `"after_exit"` (default: once the last journey
    /// ended), `"never"`, or a duration since the last entry (`"7d"`).
    pub reentry: Option<String>,
    /// Whether quiet hours apply; default: all but transactional messages.
    pub quiet_hours: Option<bool>,
    pub conversion: Option<ConversionDef>,
    /// Every send goes to this variant (the holdout still applies): set by hand, or by the
    /// server when `auto_winner` is on and a variant beat the control significantly.
    pub winner: Option<String>,
    /// Let the server set `winner` once the report finds one.
    pub auto_winner: bool,
    /// `"optimal"`: each message goes at the person's best moment within `send_within`
    /// of when it would have gone (send-time optimization, docs/campaigns.md).
    pub send_at: Option<String>,
    /// The deadline for `send_at = "optimal"` (default 24h).
    pub send_within: Option<String>,
    /// Share of optimised sends that go at a random moment in the window instead, so the
    /// model keeps learning about hours it would not pick (default 0.1).
    pub explore: Option<f64>,
}

impl Default for CampaignDef {
    fn default() -> Self {
        Self {
            description: String::new(),
            enabled: true,
            trigger: TriggerDef::default(),
            steps: Vec::new(),
            wait: None,
            wait_until: None,
            template: None,
            variants: Vec::new(),
            exit: None,
            channel: "email".into(),
            purpose: "marketing".into(),
            priority: 10,
            caps: Vec::new(),
            holdout: 0.0,
            reentry: None,
            quiet_hours: None,
            conversion: None,
            winner: None,
            auto_winner: false,
            send_at: None,
            send_within: None,
            explore: None,
        }
    }
}

/// One of: `event` (a rule on the incoming event), `segment` (entering it), `score` with
/// optional `tier` (the tier changing, to that tier), or `schedule` with `segment`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerDef {
    pub event: Option<String>,
    pub segment: Option<String>,
    pub score: Option<String>,
    pub tier: Option<String>,
    /// `daily 10:00`, `weekly mon 10:00`, `every 6h`, `once 2026-12-01T10:00:00Z`; local
    /// times are in `timezone` (default UTC). Targets the members of `segment`.
    pub schedule: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepDef {
    pub wait: Option<String>,
    pub wait_until: Option<String>,
    pub template: Option<String>,
    pub variants: Vec<VariantDef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VariantDef {
    pub name: String,
    pub template: String,
    pub weight: f64,
}

impl Default for VariantDef {
    fn default() -> Self {
        Self {
            name: String::new(),
            template: String::new(),
            weight: 1.0,
        }
    }
}

/// `event` within `within` after a send counts as a conversion of that send.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversionDef {
    pub event: String,
    pub within: String,
}

/// Rules for every campaign: caps per channel and quiet hours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingDef {
    /// Per channel (`email`, `webhook`, or a full `webhook:<endpoint>`): `["1 per 4h",
    /// "3 per 1d", "10 per 7d"]`.
    pub caps: BTreeMap<String, Vec<String>>,
    /// `21:00-08:00`, in the person's time zone; empty for none.
    pub quiet_hours: String,
    /// For people whose time zone is unknown.
    pub default_timezone: String,
}

impl Default for MessagingDef {
    fn default() -> Self {
        Self {
            caps: BTreeMap::from([(
                "email".to_string(),
                vec!["1 per 4h".into(), "3 per 1d".into(), "10 per 7d".into()],
            )]),
            quiet_hours: "21:00-08:00".into(),
            default_timezone: "UTC".into(),
        }
    }
}

/// `N per D`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrequencyCap {
    pub times: u32,
    pub per: Millis,
}

impl std::fmt::Display for FrequencyCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} per {}",
            self.times,
            crate::time::format_duration(self.per)
        )
    }
}

pub fn parse_cap(src: &str) -> Result<FrequencyCap, String> {
    let mut parts = src.split_whitespace();
    let (Some(n), Some("per"), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "`{src}`: expected `N per DURATION`, e.g. `3 per 1d`"
        ));
    };
    let times: u32 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{src}`: `{n}` is not a positive whole number"))?;
    let per = parse_duration(d).map_err(|e| format!("`{src}`: {e}"))?;
    Ok(FrequencyCap { times, per })
}

/// Quiet hours as minutes of the local day, `[start, end)`, wrapping midnight when
/// `start > end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    pub start: u16,
    pub end: u16,
}

impl std::fmt::Display for QuietHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

fn parse_clock(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && h.to_string().len() <= 2 && m.to_string().len() <= 2).then_some(h * 60 + m)
}

pub fn parse_quiet_hours(src: &str) -> Result<Option<QuietHours>, String> {
    if src.trim().is_empty() {
        return Ok(None);
    }
    let (a, b) = src
        .split_once('-')
        .ok_or_else(|| format!("`{src}`: expected `HH:MM-HH:MM`, e.g. `21:00-08:00`"))?;
    let (Some(start), Some(end)) = (parse_clock(a), parse_clock(b)) else {
        return Err(format!(
            "`{src}`: expected `HH:MM-HH:MM`, e.g. `21:00-08:00`"
        ));
    };
    if start == end {
        return Err(format!(
            "`{src}`: quiet hours must not start and end at the same time"
        ));
    }
    Ok(Some(QuietHours { start, end }))
}

impl QuietHours {
    /// If `t` falls inside the quiet hours in `tz`, the first instant after them (the local
    /// end time; on a day whose end time does not exist because clocks jump, the first
    /// instant after the jump).
    pub fn deferral(&self, t: Millis, tz: &jiff::tz::TimeZone) -> Option<Millis> {
        let ts = jiff::Timestamp::from_millisecond(t).ok()?;
        let local = tz.to_datetime(ts);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let inside = if self.start < self.end {
            minute >= self.start && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        };
        if !inside {
            return None;
        }
        let mut date = local.date();
        if self.start > self.end && minute >= self.start {
            date = date.tomorrow().ok()?;
        }
        let end = date.at((self.end / 60) as i8, (self.end % 60) as i8, 0, 0);
        let ambiguous = tz.to_ambiguous_zoned(end);
        let at = match ambiguous.offset() {
            // Clocks jump over the end time: quiet hours are over at the jump itself.
            jiff::tz::AmbiguousOffset::Gap { .. } => {
                let before = ambiguous.earlier().ok()?.timestamp();
                tz.following(before).next()?.timestamp()
            }
            // The end time happens twice (clocks fall back): the first time ends them.
            _ => ambiguous.earlier().ok()?.timestamp(),
        };
        Some(at.as_millisecond().max(t + 1))
    }
}

/// When a schedule runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Daily { minute: u16 },
    Weekly { weekday: i8, minute: u16 },
    Every(Millis),
    Once(Millis),
}

pub fn parse_schedule(src: &str) -> Result<Schedule, String> {
    let words: Vec<&str> = src.split_whitespace().collect();
    let bad = || {
        format!(
            "`{src}`: expected `daily HH:MM`, `weekly mon HH:MM`, `every 6h` or `once 2026-12-01T10:00:00Z`"
        )
    };
    match words.as_slice() {
        ["daily", t] => Ok(Schedule::Daily {
            minute: parse_clock(t).ok_or_else(bad)?,
        }),
        ["weekly", d, t] => {
            let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            let lower = d.to_ascii_lowercase();
            let weekday = days
                .iter()
                .position(|x| lower.starts_with(x))
                .ok_or_else(bad)? as i8
                + 1;
            Ok(Schedule::Weekly {
                weekday,
                minute: parse_clock(t).ok_or_else(bad)?,
            })
        }
        ["every", d] => {
            let d = parse_duration(d).map_err(|e| format!("`{src}`: {e}"))?;
            if d < MINUTE {
                return Err(format!("`{src}`: schedules run at most once a minute"));
            }
            Ok(Schedule::Every(d))
        }
        ["once", t] => crate::time::parse_timestamp(t)
            .map(Schedule::Once)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

impl Schedule {
    /// The first run strictly after `after`, in `tz` for local times.
    pub fn next_after(&self, after: Millis, tz: &jiff::tz::TimeZone) -> Option<Millis> {
        match self {
            Schedule::Every(d) => Some((after.div_euclid(*d) + 1) * d),
            Schedule::Once(t) => (*t > after).then_some(*t),
            Schedule::Daily { minute } | Schedule::Weekly { minute, .. } => {
                let ts = jiff::Timestamp::from_millisecond(after).ok()?;
                let mut date = tz.to_datetime(ts).date();
                for _ in 0..9 {
                    let ok = match self {
                        Schedule::Weekly { weekday, .. } => {
                            date.weekday().to_monday_one_offset() == *weekday
                        }
                        _ => true,
                    };
                    if ok {
                        let dt = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
                        let at = tz
                            .to_ambiguous_zoned(dt)
                            .compatible()
                            .ok()?
                            .timestamp()
                            .as_millisecond();
                        if at > after {
                            return Some(at);
                        }
                    }
                    date = date.tomorrow().ok()?;
                }
                None
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Marketing,
    Product,
    Transactional,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Product => "product",
            Purpose::Transactional => "transactional",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reentry {
    AfterExit,
    Never,
    After(Millis),
}

pub enum CompiledTrigger {
    Event(Program),
    Segment(String),
    Tier {
        score: String,
        to: Option<String>,
    },
    Schedule {
        schedule: Schedule,
        timezone: jiff::tz::TimeZone,
        segment: String,
    },
}

pub struct CompiledVariant {
    pub name: String,
    pub template: String,
    pub weight: f64,
}

pub struct CompiledStep {
    pub wait: Millis,
    pub wait_until: Option<Program>,
    pub variants: Vec<CompiledVariant>,
}

pub struct CompiledCampaign {
    pub name: String,
    /// For event triggers: the event names or call types that can match.
    guard: Option<kairos_rules::EventGuard>,
    pub description: String,
    pub enabled: bool,
    pub trigger: CompiledTrigger,
    pub steps: Vec<CompiledStep>,
    pub exit: Option<Program>,
    pub channel: String,
    pub purpose: Purpose,
    pub priority: i32,
    pub caps: Vec<FrequencyCap>,
    pub holdout: f64,
    pub reentry: Reentry,
    pub quiet_hours: bool,
    pub conversion: Option<(String, Millis)>,
    pub winner: Option<String>,
    pub auto_winner: bool,
    /// Send-time optimization: (window, exploration share).
    pub optimal: Option<(Millis, f64)>,
}

/// Compiled campaigns and messaging rules.
#[derive(Default)]
pub struct Campaigns {
    /// By name.
    pub list: Vec<CompiledCampaign>,
    pub caps: Vec<(String, FrequencyCap)>,
    pub quiet_hours: Option<QuietHours>,
    pub default_timezone: String,
    /// How long sends are remembered: the longest cap or conversion window.
    horizon: Millis,
}

impl Campaigns {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&CompiledCampaign> {
        self.list
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.list[i])
    }

    /// Campaigns with a schedule trigger: (campaign, segment) pairs for the host's scheduler.
    pub fn scheduled(&self) -> impl Iterator<Item = &CompiledCampaign> {
        self.list
            .iter()
            .filter(|c| c.enabled && matches!(c.trigger, CompiledTrigger::Schedule { .. }))
    }

    /// The global caps that apply to `channel` (`email`, or `webhook:x` also under `webhook`).
    fn caps_for<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = FrequencyCap> + 'a {
        let kind = channel.split(':').next().unwrap_or(channel);
        self.caps
            .iter()
            .filter(move |(c, _)| c == channel || (c == kind && kind != channel))
            .map(|(_, cap)| *cap)
    }
}

/// Compiles campaigns against the scores and segments of `schema`, registering their
/// aggregates in `aggregates` (the profile state then keeps the windows they read).
pub fn compile_campaigns(
    defs: &BTreeMap<String, CampaignDef>,
    messaging: &MessagingDef,
    schema: &Schema,
    aggregates: &mut Aggregates,
) -> Result<Campaigns, DefinitionError> {
    let invalid = |path: String, message: String| DefinitionError::Invalid { path, message };
    let mut caps = Vec::new();
    for (channel, list) in &messaging.caps {
        for (i, c) in list.iter().enumerate() {
            caps.push((
                channel.clone(),
                parse_cap(c).map_err(|m| invalid(format!("messaging.caps.{channel}[{i}]"), m))?,
            ));
        }
    }
    let quiet_hours = parse_quiet_hours(&messaging.quiet_hours)
        .map_err(|m| invalid("messaging.quiet_hours".into(), m))?;
    if time_zone(&messaging.default_timezone).is_none() {
        return Err(invalid(
            "messaging.default_timezone".into(),
            format!(
                "`{}` is not a known IANA time zone",
                messaging.default_timezone
            ),
        ));
    }
    let mut horizon = 35 * DAY;
    for (_, c) in &caps {
        horizon = horizon.max(c.per);
    }
    let mut list = Vec::new();
    for (name, def) in defs {
        let path = format!("campaigns.{name}");
        let c = compile_one(name, def, &path, schema, aggregates)?;
        for cap in &c.caps {
            horizon = horizon.max(cap.per);
        }
        if let Some((_, w)) = c.conversion {
            horizon = horizon.max(w);
        }
        list.push(c);
    }
    Ok(Campaigns {
        list,
        caps,
        quiet_hours,
        default_timezone: messaging.default_timezone.clone(),
        horizon,
    })
}

fn compile_one(
    name: &str,
    def: &CampaignDef,
    path: &str,
    schema: &Schema,
    aggregates: &mut Aggregates,
) -> Result<CompiledCampaign, DefinitionError> {
    let invalid = |p: &str, message: String| DefinitionError::Invalid {
        path: format!("{path}.{p}"),
        message,
    };
    let rule = |p: &str, src: &str, event: bool, aggs: &mut Aggregates| {
        let s = Schema {
            event_context: event,
            trigger_context: !event,
            ..schema.clone()
        };
        compile(src, &s, aggs).map_err(|error| DefinitionError::Rule {
            path: format!("{path}.{p}"),
            error,
        })
    };
    let duration = |p: &str, src: &str| {
        parse_duration(src).map_err(|error| DefinitionError::Rule {
            path: format!("{path}.{p}"),
            error,
        })
    };
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(DefinitionError::Invalid {
            path: path.to_string(),
            message: format!("`{name}` is not a valid name: use 1-64 letters, digits, `_` or `-`"),
        });
    }
    let t = &def.trigger;
    let given = [
        t.event.is_some(),
        t.score.is_some(),
        t.schedule.is_some(),
        t.segment.is_some() && t.schedule.is_none(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(invalid(
            "trigger",
            "give exactly one of `event` (a rule), `segment` (entering it), `score` (a tier change) or `schedule` (with `segment`)".into(),
        ));
    }
    let known_segment = |p: &str, s: &str| {
        if schema.segment_index(s).is_some() {
            Ok(s.to_string())
        } else {
            Err(invalid(p, format!("unknown segment `{s}`")))
        }
    };
    let trigger = if let Some(src) = &t.event {
        CompiledTrigger::Event(rule("trigger.event", src, true, aggregates)?)
    } else if let Some(score) = &t.score {
        let info = schema
            .scores
            .iter()
            .find(|s| &s.name == score)
            .ok_or_else(|| invalid("trigger.score", format!("unknown score `{score}`")))?;
        if let Some(tier) = &t.tier {
            if !info.tiers.contains(tier) {
                return Err(invalid(
                    "trigger.tier",
                    format!("score `{score}` has no tier `{tier}`"),
                ));
            }
        }
        CompiledTrigger::Tier {
            score: score.clone(),
            to: t.tier.clone(),
        }
    } else if let Some(src) = &t.schedule {
        let segment = match &t.segment {
            Some(s) => known_segment("trigger.segment", s)?,
            None => {
                return Err(invalid(
                    "trigger.segment",
                    "a schedule targets a segment: give `segment`".into(),
                ))
            }
        };
        let tz_name = t.timezone.as_deref().unwrap_or("UTC");
        CompiledTrigger::Schedule {
            schedule: parse_schedule(src).map_err(|m| invalid("trigger.schedule", m))?,
            timezone: time_zone(tz_name).ok_or_else(|| {
                invalid(
                    "trigger.timezone",
                    format!("`{tz_name}` is not a known IANA time zone"),
                )
            })?,
            segment,
        }
    } else {
        let s = t.segment.as_deref().unwrap_or_default();
        CompiledTrigger::Segment(known_segment("trigger.segment", s)?)
    };
    if t.tier.is_some() && t.score.is_none() {
        return Err(invalid("trigger.tier", "`tier` goes with `score`".into()));
    }

    let top_level = def.wait.is_some()
        || def.wait_until.is_some()
        || def.template.is_some()
        || !def.variants.is_empty();
    let step_defs: Vec<StepDef> = match (def.steps.is_empty(), top_level) {
        (false, true) => {
            return Err(invalid(
                "steps",
                "give either `steps` or a single step's `wait`/`template`/`variants` at the top level, not both".into(),
            ))
        }
        (false, false) => def.steps.clone(),
        (true, _) => vec![StepDef {
            wait: def.wait.clone(),
            wait_until: def.wait_until.clone(),
            template: def.template.clone(),
            variants: def.variants.clone(),
        }],
    };
    let mut steps = Vec::new();
    for (i, s) in step_defs.iter().enumerate() {
        let p = if def.steps.is_empty() {
            String::new()
        } else {
            format!("steps[{i}].")
        };
        let wait = match &s.wait {
            Some(w) => duration(&format!("{p}wait"), w)?,
            None => 0,
        };
        let wait_until = match &s.wait_until {
            Some(src) => {
                if s.wait.is_none() {
                    return Err(invalid(
                        &format!("{p}wait_until"),
                        "`wait_until` needs `wait` as its time limit (`wait until <rule> or 2h`)"
                            .into(),
                    ));
                }
                Some(rule(&format!("{p}wait_until"), src, false, aggregates)?)
            }
            None => None,
        };
        let variants: Vec<CompiledVariant> = match (&s.template, s.variants.is_empty()) {
            (Some(t), true) => vec![CompiledVariant {
                name: "default".into(),
                template: t.clone(),
                weight: 1.0,
            }],
            (None, false) => {
                let mut out: Vec<CompiledVariant> = Vec::new();
                for (j, v) in s.variants.iter().enumerate() {
                    let vp = format!("{p}variants[{j}]");
                    if v.name.is_empty() || v.template.is_empty() {
                        return Err(invalid(&vp, "a variant needs `name` and `template`".into()));
                    }
                    if !(v.weight.is_finite() && v.weight > 0.0) {
                        return Err(invalid(&vp, "`weight` must be a positive number".into()));
                    }
                    if out.iter().any(|o| o.name == v.name) {
                        return Err(invalid(&vp, format!("variant `{}` is named twice", v.name)));
                    }
                    out.push(CompiledVariant {
                        name: v.name.clone(),
                        template: v.template.clone(),
                        weight: v.weight,
                    });
                }
                out
            }
            _ => {
                return Err(invalid(
                    &format!("{p}template"),
                    "give a `template` or `variants` (not both)".into(),
                ))
            }
        };
        steps.push(CompiledStep {
            wait,
            wait_until,
            variants,
        });
    }
    let exit = match &def.exit {
        Some(src) => Some(rule("exit", src, false, aggregates)?),
        None => None,
    };
    let channel = def.channel.trim().to_string();
    let channel_ok = channel == "email"
        || channel
            .strip_prefix("webhook:")
            .is_some_and(|e| !e.is_empty());
    if !channel_ok {
        return Err(invalid(
            "channel",
            format!("`{channel}`: expected `email` or `webhook:<endpoint>`"),
        ));
    }
    let purpose = match def.purpose.as_str() {
        "marketing" => Purpose::Marketing,
        "product" => Purpose::Product,
        "transactional" => Purpose::Transactional,
        other => {
            return Err(invalid(
                "purpose",
                format!("`{other}`: expected marketing, product or transactional"),
            ))
        }
    };
    let mut caps = Vec::new();
    for (i, c) in def.caps.iter().enumerate() {
        caps.push(parse_cap(c).map_err(|m| invalid(&format!("caps[{i}]"), m))?);
    }
    if !(0.0..1.0).contains(&def.holdout) {
        return Err(invalid(
            "holdout",
            "a share from 0 (nobody) to below 1".into(),
        ));
    }
    let reentry = match def.reentry.as_deref() {
        None | Some("after_exit") => Reentry::AfterExit,
        Some("never") => Reentry::Never,
        Some(d) => Reentry::After(duration("reentry", d)?),
    };
    if let Some(w) = &def.winner {
        if !steps
            .iter()
            .all(|s| s.variants.iter().any(|v| &v.name == w))
        {
            return Err(invalid(
                "winner",
                format!("`{w}` is not a variant of every step"),
            ));
        }
    }
    let conversion = match &def.conversion {
        Some(c) if c.event.is_empty() => {
            return Err(invalid(
                "conversion.event",
                "name the conversion event".into(),
            ))
        }
        Some(c) => Some((c.event.clone(), duration("conversion.within", &c.within)?)),
        None => None,
    };
    let guard = match &trigger {
        CompiledTrigger::Event(p) => p.event_guard(),
        _ => None,
    };
    let optimal = match def.send_at.as_deref() {
        None | Some("now") => None,
        Some("optimal") => {
            let within = match &def.send_within {
                Some(w) => duration("send_within", w)?,
                None => DAY,
            };
            if !(HOUR..=7 * DAY).contains(&within) {
                return Err(invalid("send_within", "must be from 1h to 7d".into()));
            }
            let explore = def.explore.unwrap_or(0.1);
            if !(0.0..=1.0).contains(&explore) {
                return Err(invalid("explore", "must be a share from 0 to 1".into()));
            }
            Some((within, explore))
        }
        Some(other) => {
            return Err(invalid(
                "send_at",
                format!("`{other}` is not `optimal` or `now`"),
            ))
        }
    };
    Ok(CompiledCampaign {
        optimal,
        guard,
        name: name.to_string(),
        description: def.description.clone(),
        enabled: def.enabled,
        trigger,
        steps,
        exit,
        channel,
        purpose,
        priority: def.priority,
        caps,
        holdout: def.holdout,
        reentry,
        quiet_hours: def.quiet_hours.unwrap_or(purpose != Purpose::Transactional),
        conversion,
        winner: def.winner.clone(),
        auto_winner: def.auto_winner,
    })
}

/// A person's way through one campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    pub campaign: String,
    /// Stable across merges and replays: from the campaign and what triggered it.
    pub id: u64,
    pub entered: Millis,
    pub step: u16,
    /// When the current step's wait ends (its time limit, for `wait_until`).
    pub due: Millis,
    /// The send was deferred (quiet hours); at `due` it is decided again.
    pub deferred: bool,
    /// The trigger event's properties (empty for segment, tier and schedule triggers).
    pub event: Json,
}

/// A message sent (or held out) to the person, remembered for caps and attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub at: Millis,
    pub campaign: String,
    pub variant: Option<String>,
    pub message_id: String,
    pub channel: String,
    /// Counts toward frequency caps (not held out, not transactional).
    pub capped: bool,
    pub holdout: bool,
    /// Engagement already attributed, by [`Metric`] bit.
    pub seen: u8,
}

/// What happened to a message, for campaign reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Delivered,
    Opened,
    Clicked,
    Bounced,
    Unsubscribed,
    Complained,
    Converted,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Delivered => "delivered",
            Metric::Opened => "opened",
            Metric::Clicked => "clicked",
            Metric::Bounced => "bounced",
            Metric::Unsubscribed => "unsubscribed",
            Metric::Complained => "complained",
            Metric::Converted => "converted",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What a message change says (see [`ChangeKind::Message`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MessageStatus {
    /// A journey started.
    Entered,
    /// The message goes to the outbox now.
    Queued(Box<Outgoing>),
    /// Everything allowed the send, but the person is in the holdout group.
    Holdout,
    /// Quiet hours: decided again at `until`.
    Deferred { until: Millis },
    /// Not sent (consent, caps, no address); the reason says why.
    Suppressed,
    /// The exit rule held: nothing more is sent.
    Exited,
    /// An engagement or conversion of a sent message.
    Engaged {
        variant: Option<String>,
        metric: Metric,
        value: f64,
    },
}

impl MessageStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageStatus::Entered => "entered",
            MessageStatus::Queued(_) => "queued",
            MessageStatus::Holdout => "holdout",
            MessageStatus::Deferred { .. } => "deferred",
            MessageStatus::Suppressed => "suppressed",
            MessageStatus::Exited => "exited",
            MessageStatus::Engaged { .. } => "engaged",
        }
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        [
            Metric::Delivered,
            Metric::Opened,
            Metric::Clicked,
            Metric::Bounced,
            Metric::Unsubscribed,
            Metric::Complained,
            Metric::Converted,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown metric {s}")))
    }
}

/// A message for the host's outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub variant: String,
    pub template: String,
    pub channel: String,
    pub purpose: String,
    /// The email address, for the email channel.
    pub to: Option<String>,
    /// The trigger event's properties (`event` in templates).
    pub event: Value,
    pub journey_entered: Millis,
}

/// Campaign state on a profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Messaging {
    pub journeys: Vec<Journey>,
    /// Newest last; kept for the longest cap or conversion window.
    pub sent: Vec<Sent>,
    /// Per campaign, the last entry.
    pub entered: VecMap<Millis>,
}

/// Trigger event properties kept with a journey are bounded: they ride in the profile.
const MAX_EVENT_BYTES: usize = 8 * 1024;
/// Sends remembered at most (caps beyond this many sends in a window are unusual).
const MAX_SENT: usize = 200;

/// What campaign decisions read of the profile.
pub struct View<'a> {
    pub profile_id: u64,
    pub state: &'a ProfileState,
    pub derived: &'a Derived,
    pub scoring: &'a Scoring,
    pub identifiers: &'a std::collections::BTreeSet<crate::identity::IdKey>,
    pub engagement: &'a crate::sendtime::Engagement,
}

/// The address campaigns send to: the `email` trait, else a known address identifier.
pub fn email_of(
    state: &ProfileState,
    identifiers: &std::collections::BTreeSet<crate::identity::IdKey>,
) -> Option<String> {
    state
        .trait_value("email")
        .and_then(Value::as_str)
        .map(|e| e.trim().to_string())
        .filter(|e| e.contains('@'))
        .or_else(|| {
            identifiers
                .iter()
                .find(|k| k.kind == crate::identity::IdKind::Email)
                .map(|k| k.value.clone())
        })
}

impl View<'_> {
    fn email(&self) -> Option<String> {
        email_of(self.state, self.identifiers)
    }

    fn matches(
        &self,
        program: &Program,
        now: Millis,
        event: Option<&Event>,
        trigger: Option<Millis>,
    ) -> bool {
        let scores = if program.scores_used.is_empty() {
            Vec::new()
        } else {
            self.derived.scores_at(self.scoring, now)
        };
        let mut segments = crate::bits::Bits::default();
        if !program.segments_used.is_empty() {
            for (i, s) in self.scoring.segments.iter().enumerate() {
                segments.put(i, self.derived.segments.get(&s.name).is_some());
            }
        }
        let env = ProfileEnv {
            state: self.state,
            aggregates: &self.scoring.aggregates,
            now,
            event,
            scores: &scores,
            segments: &segments,
            series: &[],
            trigger,
            zone: &Default::default(),
        };
        program.matches(&env)
    }
}

fn xxh(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p);
        h.update(&[0xff]);
    }
    h.digest()
}

/// A uniform number in [0, 1) from a stable hash of (person, campaign).
/// The moment in `[now, now + within)` to send step `j` of `c`: the person's best hour
/// by the send-time model (outside quiet hours), or for an `explore` share of journeys a
/// random hour, so the model sees responses at hours it would not choose.
fn optimal_moment(
    view: &View<'_>,
    c: &CompiledCampaign,
    j: &Journey,
    now: Millis,
    within: Millis,
    explore: f64,
) -> Option<(Millis, String)> {
    let campaigns = &view.scoring.campaigns;
    let tz_name = view.state.timezone().unwrap_or(&campaigns.default_timezone);
    let tz = time_zone(tz_name)?;
    let priors = view.scoring.send_time_priors();
    let prior = priors.prior(view.derived.primary.as_deref());
    let quiet = if c.quiet_hours {
        campaigns.quiet_hours
    } else {
        None
    };
    let slots: Vec<crate::sendtime::Slot> =
        crate::sendtime::slots(view.engagement, &prior, Some(tz_name), now, within)
            .into_iter()
            .filter(|s| quiet.is_none_or(|q| q.deferral(s.at, &tz).is_none()))
            .collect();
    if slots.is_empty() {
        return None;
    }
    let u = {
        let h = xxh(&[
            &view.profile_id.to_be_bytes(),
            &j.id.to_be_bytes(),
            &[j.step as u8],
            b"explore",
        ]);
        (h >> 11) as f64 / (1u64 << 53) as f64
    };
    if u < explore {
        let k = ((u / explore.max(f64::MIN_POSITIVE)) * slots.len() as f64) as usize;
        let s = &slots[k.min(slots.len() - 1)];
        return Some((
            s.at,
            format!(
                "send-time exploration ({:.0}% of sends go at a random hour): {}",
                explore * 100.0,
                format_timestamp(s.at)
            ),
        ));
    }
    let best = slots
        .iter()
        .reduce(|a, b| if b.share > a.share + 1e-12 { b } else { a })?;
    Some((
        best.at,
        format!(
            "send-time optimization: best hour within {} in {tz_name} is {} ({:.1}x an average hour)",
            crate::time::format_duration(within),
            format_timestamp(best.at),
            best.lift
        ),
    ))
}

fn assignment(profile: u64, campaign: &str) -> f64 {
    let h = xxh(&[&profile.to_be_bytes(), campaign.as_bytes(), b"assign"]);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn message_change(
    at: Millis,
    campaign: &str,
    step: u16,
    message_id: String,
    status: MessageStatus,
    reason: String,
) -> Change {
    Change {
        at,
        kind: ChangeKind::Message {
            campaign: campaign.to_string(),
            step,
            message_id,
            status,
        },
        reason: reason.into(),
    }
}

fn message_id(journey: u64, step: u16) -> String {
    format!("{journey:016x}-{step}")
}

impl Messaging {
    /// The next instant a journey needs attention with no event.
    pub fn wake(&self) -> Option<Millis> {
        self.journeys.iter().map(|j| j.due).min()
    }

    pub fn is_empty(&self) -> bool {
        self.journeys.is_empty() && self.sent.is_empty() && self.entered.is_empty()
    }

    /// After an event was folded in and evaluated (`changes` are the segment and tier
    /// changes it caused): exits, wait-until conditions, engagement, triggers, then the
    /// sends that are due now.
    pub fn after_event(
        &mut self,
        view: &View<'_>,
        vocab: &Vocabulary,
        ev: &Event,
        changes: &[Change],
        now: Millis,
        out: &mut Vec<Change>,
    ) {
        let campaigns = &view.scoring.campaigns;
        if campaigns.is_empty() && self.is_empty() {
            return;
        }
        self.attribute(ev, vocab, campaigns, out);
        self.check_exits(view, now, out);
        for c in &campaigns.list {
            if let CompiledTrigger::Event(rule) = &c.trigger {
                let admitted = c.guard.as_ref().is_none_or(|g| {
                    ev.activity_name()
                        .is_some_and(|n| g.names.iter().any(|x| x == n))
                        || g.kinds.iter().any(|k| k == ev.kind.as_str())
                });
                if admitted && view.matches(rule, now, Some(ev), None) {
                    let props = Value::Object(ev.properties.clone());
                    self.enter(view, c, &ev.message_id, now, props, out);
                }
            }
        }
        self.triggered_by_changes(view, changes, now, out);
        self.run_due(view, now, out);
    }

    /// After a timer evaluation produced `changes` at `now`: segment and tier triggers.
    pub fn after_changes(
        &mut self,
        view: &View<'_>,
        changes: &[Change],
        now: Millis,
        out: &mut Vec<Change>,
    ) {
        if view.scoring.campaigns.is_empty() {
            return;
        }
        self.triggered_by_changes(view, changes, now, out);
        self.run_due(view, now, out);
    }

    /// A scheduled run of `campaign` reached this person (a member of its segment).
    pub fn scheduled(
        &mut self,
        view: &View<'_>,
        campaign: &str,
        at: Millis,
        out: &mut Vec<Change>,
    ) {
        let Some(c) = view.scoring.campaigns.get(campaign) else {
            return;
        };
        let CompiledTrigger::Schedule { segment, .. } = &c.trigger else {
            return;
        };
        if view.derived.segments.get(segment).is_none() {
            return;
        }
        let key = format!("schedule:{at}");
        self.enter(view, c, &key, at, Value::Object(Map::new()), out);
        self.run_due(view, at, out);
    }

    fn triggered_by_changes(
        &mut self,
        view: &View<'_>,
        changes: &[Change],
        now: Millis,
        out: &mut Vec<Change>,
    ) {
        for change in changes {
            for c in &view.scoring.campaigns.list {
                let hit = match (&c.trigger, &change.kind) {
                    (CompiledTrigger::Segment(s), ChangeKind::Enter { segment }) => {
                        s.as_str() == &**segment
                    }
                    (
                        CompiledTrigger::Tier { score, to },
                        ChangeKind::Tier {
                            score: sc, to: t, ..
                        },
                    ) => {
                        score.as_str() == &**sc
                            && to
                                .as_ref()
                                .is_none_or(|want| t.as_deref() == Some(want.as_str()))
                    }
                    _ => false,
                };
                if hit {
                    let key = match &change.kind {
                        ChangeKind::Enter { segment } => format!("enter:{segment}:{}", change.at),
                        ChangeKind::Tier { score, to, .. } => {
                            format!("tier:{score}:{}:{}", to.as_deref().unwrap_or(""), change.at)
                        }
                        _ => continue,
                    };
                    self.enter(
                        view,
                        c,
                        &key,
                        change.at.min(now),
                        Value::Object(Map::new()),
                        out,
                    );
                }
            }
        }
    }

    fn enter(
        &mut self,
        view: &View<'_>,
        c: &CompiledCampaign,
        trigger_key: &str,
        at: Millis,
        mut event: Value,
        out: &mut Vec<Change>,
    ) {
        if !c.enabled || self.journeys.iter().any(|j| j.campaign == c.name) {
            return;
        }
        let last = self.entered.get(&c.name).copied();
        let allowed = match (c.reentry, last) {
            (_, None) | (Reentry::AfterExit, _) => true,
            (Reentry::Never, Some(_)) => false,
            (Reentry::After(d), Some(l)) => at - l >= d,
        };
        if !allowed {
            return;
        }
        if serde_json::to_string(&event).map_or(0, |s| s.len()) > MAX_EVENT_BYTES {
            event = Value::Object(Map::new());
        }
        let Some(first) = c.steps.first() else {
            return;
        };
        let id = xxh(&[c.name.as_bytes(), trigger_key.as_bytes()]);
        let mut journey = Journey {
            campaign: c.name.clone(),
            id,
            entered: at,
            step: 0,
            due: at + first.wait,
            deferred: false,
            event: Json(event),
        };
        if let Some(rule) = &first.wait_until {
            if view.matches(rule, at, None, Some(at)) {
                journey.due = at;
            }
        }
        self.entered.insert(&c.name, at);
        out.push(message_change(
            at,
            &c.name,
            0,
            message_id(id, 0),
            MessageStatus::Entered,
            format!("trigger: {}", describe_trigger(&c.trigger, trigger_key)),
        ));
        self.journeys.push(journey);
    }

    /// Ends journeys whose exit rule holds; starts steps whose `wait_until` became true.
    fn check_exits(&mut self, view: &View<'_>, now: Millis, out: &mut Vec<Change>) {
        let campaigns = &view.scoring.campaigns;
        let mut i = 0;
        while i < self.journeys.len() {
            let j = &self.journeys[i];
            let Some(c) = campaigns.get(&j.campaign) else {
                i += 1;
                continue;
            };
            if let Some(exit) = &c.exit {
                if view.matches(exit, now, None, Some(j.entered)) {
                    out.push(message_change(
                        now,
                        &c.name,
                        j.step,
                        message_id(j.id, j.step),
                        MessageStatus::Exited,
                        format!("exit: {}", exit.source),
                    ));
                    self.journeys.remove(i);
                    continue;
                }
            }
            if let Some(step) = c.steps.get(j.step as usize) {
                if let Some(rule) = &step.wait_until {
                    if !j.deferred && j.due > now && view.matches(rule, now, None, Some(j.entered))
                    {
                        self.journeys[i].due = now;
                    }
                }
            }
            i += 1;
        }
    }

    /// Decides every journey due at or before `now`, most important campaign first.
    pub fn run_due(&mut self, view: &View<'_>, now: Millis, out: &mut Vec<Change>) {
        let campaigns = &view.scoring.campaigns;
        let mut due: Vec<(i32, String, usize)> = self
            .journeys
            .iter()
            .enumerate()
            .filter(|(_, j)| j.due <= now)
            .map(|(i, j)| {
                let p = campaigns.get(&j.campaign).map_or(i32::MAX, |c| c.priority);
                (p, j.campaign.clone(), i)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort();
        let mut finished = Vec::new();
        for (_, _, i) in due {
            let mut j = self.journeys[i].clone();
            let keep = self.decide(view, &mut j, now, out);
            if keep {
                self.journeys[i] = j;
            } else {
                finished.push(i);
            }
        }
        finished.sort_unstable();
        for i in finished.into_iter().rev() {
            self.journeys.remove(i);
        }
        self.prune(now, campaigns.horizon);
    }

    /// One due step of one journey; returns whether the journey goes on.
    fn decide(
        &mut self,
        view: &View<'_>,
        j: &mut Journey,
        now: Millis,
        out: &mut Vec<Change>,
    ) -> bool {
        let campaigns = &view.scoring.campaigns;
        let mid = message_id(j.id, j.step);
        let Some(c) = campaigns.get(&j.campaign) else {
            out.push(message_change(
                now,
                &j.campaign,
                j.step,
                mid,
                MessageStatus::Exited,
                "the campaign was removed".into(),
            ));
            return false;
        };
        let Some(step) = c.steps.get(j.step as usize) else {
            return false;
        };
        let change = |status, reason: String| {
            message_change(now, &c.name, j.step, mid.clone(), status, reason)
        };
        if let Some(exit) = &c.exit {
            if view.matches(exit, now, None, Some(j.entered)) {
                out.push(change(
                    MessageStatus::Exited,
                    format!("exit: {}", exit.source),
                ));
                return false;
            }
        }
        // Send-time optimization: the first time a step comes due, move it to the
        // person's best moment in the window (then it goes without asking again).
        if let (Some((within, explore)), false) = (c.optimal, j.deferred) {
            if let Some((at, why)) = optimal_moment(view, c, j, now, within, explore) {
                if at > now + 60_000 {
                    j.due = at;
                    j.deferred = true;
                    out.push(change(MessageStatus::Deferred { until: at }, why));
                    return true;
                }
            }
        }
        match self.blocked(view, c, now) {
            Some(Block::Defer(until, why)) => {
                j.due = until;
                j.deferred = true;
                out.push(change(MessageStatus::Deferred { until }, why));
                return true;
            }
            Some(Block::Suppress(why)) => {
                out.push(change(MessageStatus::Suppressed, why));
            }
            None => {
                let u = assignment(view.profile_id, &c.name);
                if u < c.holdout {
                    self.sent.push(Sent {
                        at: now,
                        campaign: c.name.clone(),
                        variant: None,
                        message_id: mid.clone(),
                        channel: c.channel.clone(),
                        capped: false,
                        holdout: true,
                        seen: 0,
                    });
                    out.push(change(
                        MessageStatus::Holdout,
                        format!(
                            "holdout group ({:.0}% of people get nothing)",
                            c.holdout * 100.0
                        ),
                    ));
                } else if let Some(v) = match &c.winner {
                    Some(w) => step.variants.iter().find(|v| &v.name == w),
                    None => pick_variant(&step.variants, (u - c.holdout) / (1.0 - c.holdout)),
                } {
                    self.sent.push(Sent {
                        at: now,
                        campaign: c.name.clone(),
                        variant: Some(v.name.clone()),
                        message_id: mid.clone(),
                        channel: c.channel.clone(),
                        capped: c.purpose != Purpose::Transactional,
                        holdout: false,
                        seen: 0,
                    });
                    let outgoing = Outgoing {
                        variant: v.name.clone(),
                        template: v.template.clone(),
                        channel: c.channel.clone(),
                        purpose: c.purpose.as_str().into(),
                        to: view.email(),
                        event: j.event.0.clone(),
                        journey_entered: j.entered,
                    };
                    let why = if step.variants.len() > 1 {
                        format!("variant {} of {}", v.name, step.variants.len())
                    } else {
                        "all checks passed".into()
                    };
                    out.push(change(MessageStatus::Queued(Box::new(outgoing)), why));
                }
            }
        }
        // On to the next step, if any.
        let next = j.step as usize + 1;
        let Some(next_step) = c.steps.get(next) else {
            return false;
        };
        j.step = next as u16;
        j.deferred = false;
        j.due = now + next_step.wait;
        if let Some(rule) = &next_step.wait_until {
            if view.matches(rule, now, None, Some(j.entered)) {
                j.due = now;
            }
        }
        true
    }

    /// Why a send of campaign `c` cannot go now, if it cannot.
    fn blocked(&self, view: &View<'_>, c: &CompiledCampaign, now: Millis) -> Option<Block> {
        let state = view.state;
        if c.channel == "email" {
            if let Some(s) = &state.suppressed {
                return Some(Block::Suppress(format!(
                    "the address is suppressed ({})",
                    s.value.replace('_', " ")
                )));
            }
            if view.email().is_none() {
                return Some(Block::Suppress("no email address known".into()));
            }
        }
        if c.purpose != Purpose::Transactional {
            let list = c.purpose.as_str();
            let subscribed = state.is_subscribed(list).unwrap_or(false);
            if !subscribed {
                let why = match state.is_subscribed(list) {
                    Some(false) => format!("unsubscribed from {list}"),
                    _ => format!("not subscribed to {list}"),
                };
                return Some(Block::Suppress(why));
            }
        }
        let campaigns = &view.scoring.campaigns;
        if c.quiet_hours {
            if let Some(q) = campaigns.quiet_hours {
                let tz_name = state.timezone().unwrap_or(&campaigns.default_timezone);
                if let Some(tz) = time_zone(tz_name) {
                    if let Some(until) = q.deferral(now, &tz) {
                        return Some(Block::Defer(
                            until,
                            format!(
                                "quiet hours {q} in {tz_name}: deferred to {}",
                                format_timestamp(until)
                            ),
                        ));
                    }
                }
            }
        }
        if c.purpose == Purpose::Transactional {
            return None;
        }
        let counted = |cap: &FrequencyCap, same_campaign: bool| {
            let mut newest: Option<&Sent> = None;
            let n = self
                .sent
                .iter()
                .filter(|s| s.capped && now - s.at < cap.per && s.at <= now)
                .filter(|s| !same_campaign || s.campaign == c.name)
                .filter(|s| same_campaign || channel_matches(&s.channel, &c.channel))
                .inspect(|s| newest = Some(s))
                .count();
            (n, newest.map(|s| (s.campaign.clone(), s.at)))
        };
        for cap in campaigns.caps_for(&c.channel) {
            let (n, newest) = counted(&cap, false);
            if n >= cap.times as usize {
                let (name, at) = newest.unwrap_or_default();
                return Some(Block::Suppress(format!(
                    "frequency cap {cap} on {}: {name} was sent at {}",
                    c.channel,
                    format_timestamp(at)
                )));
            }
        }
        for cap in &c.caps {
            let (n, newest) = counted(cap, true);
            if n >= cap.times as usize {
                let at = newest.map_or(0, |(_, at)| at);
                return Some(Block::Suppress(format!(
                    "campaign cap {cap}: last sent at {}",
                    format_timestamp(at)
                )));
            }
        }
        None
    }

    /// Engagement with a message, and conversions after one.
    fn attribute(
        &mut self,
        ev: &Event,
        vocab: &Vocabulary,
        campaigns: &Campaigns,
        out: &mut Vec<Change>,
    ) {
        if self.sent.is_empty() {
            return;
        }
        let Some(name) = ev.activity_name() else {
            return;
        };
        let metric = if vocab.is_email_delivered(name) {
            Some(Metric::Delivered)
        } else if vocab.is_email_opened(name) {
            Some(Metric::Opened)
        } else if vocab.is_email_clicked(name) {
            Some(Metric::Clicked)
        } else if vocab.is_email_bounced(name) {
            Some(Metric::Bounced)
        } else if vocab.is_unsubscribe(name) {
            Some(Metric::Unsubscribed)
        } else if vocab.is_spam_complaint(name) {
            Some(Metric::Complained)
        } else {
            None
        };
        if let Some(metric) = metric {
            let mid = ["message_id", "messageId", "kairos_message_id"]
                .iter()
                .find_map(|k| ev.properties.get(*k).and_then(Value::as_str));
            if let Some(mid) = mid {
                if let Some(s) = self.sent.iter_mut().find(|s| s.message_id == mid) {
                    if s.seen & metric.bit() == 0 {
                        s.seen |= metric.bit();
                        out.push(engaged(ev.timestamp, s, metric, 1.0, name));
                    }
                }
            }
        }
        for c in &campaigns.list {
            let Some((conv, within)) = &c.conversion else {
                continue;
            };
            if conv != name {
                continue;
            }
            let t = ev.timestamp;
            if let Some(s) = self
                .sent
                .iter_mut()
                .rev()
                .find(|s| s.campaign == c.name && s.at <= t && t - s.at <= *within)
            {
                if s.seen & Metric::Converted.bit() == 0 {
                    s.seen |= Metric::Converted.bit();
                    let value = ["revenue", "value", "total"]
                        .iter()
                        .find_map(|k| ev.properties.get(*k).and_then(Value::as_f64))
                        .unwrap_or(0.0);
                    out.push(engaged(t, s, Metric::Converted, value, name));
                }
            }
        }
    }

    fn prune(&mut self, now: Millis, horizon: Millis) {
        self.sent.retain(|s| now - s.at <= horizon);
        if self.sent.len() > MAX_SENT {
            let drop = self.sent.len() - MAX_SENT;
            self.sent.drain(..drop);
        }
    }

    /// Takes in a merged-away profile's campaign state: its journeys (one per campaign, the
    /// earliest), its sends (they count toward caps) and its entries.
    pub fn absorb(&mut self, other: Messaging) {
        for j in other.journeys {
            match self.journeys.iter_mut().find(|x| x.campaign == j.campaign) {
                Some(x) if x.entered <= j.entered => {}
                Some(x) => *x = j,
                None => self.journeys.push(j),
            }
        }
        for s in other.sent {
            if !self.sent.iter().any(|x| x.message_id == s.message_id) {
                self.sent.push(s);
            }
        }
        self.sent
            .sort_by(|a, b| a.at.cmp(&b.at).then(a.message_id.cmp(&b.message_id)));
        for (name, at) in other.entered.iter() {
            let keep = self.entered.get(name).is_none_or(|x| *x < *at);
            if keep {
                self.entered.insert(name, *at);
            }
        }
    }

    /// For the profile API: active journeys and recent sends.
    pub fn view(&self) -> Value {
        serde_json::json!({
            "journeys": self.journeys.iter().map(|j| serde_json::json!({
                "campaign": j.campaign,
                "entered": format_timestamp(j.entered),
                "step": j.step,
                "due": format_timestamp(j.due),
                "deferred": j.deferred,
            })).collect::<Vec<_>>(),
            "recent": self.sent.iter().rev().take(20).map(|s| serde_json::json!({
                "campaign": s.campaign,
                "variant": s.variant,
                "messageId": s.message_id,
                "channel": s.channel,
                "at": format_timestamp(s.at),
                "holdout": s.holdout,
            })).collect::<Vec<_>>(),
        })
    }
}

enum Block {
    Defer(Millis, String),
    Suppress(String),
}

fn channel_matches(sent: &str, wanted: &str) -> bool {
    sent == wanted || sent.split(':').next() == wanted.split(':').next()
}

fn engaged(at: Millis, s: &Sent, metric: Metric, value: f64, event: &str) -> Change {
    message_change(
        at,
        &s.campaign,
        s.message_id
            .rsplit('-')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        s.message_id.clone(),
        MessageStatus::Engaged {
            variant: if s.holdout {
                Some("holdout".into())
            } else {
                s.variant.clone()
            },
            metric,
            value,
        },
        format!("event: {event}"),
    )
}

/// The variant whose share of the weights holds `u` in [0, 1); `None` only for no variants
/// (compiled campaigns always have one).
fn pick_variant(variants: &[CompiledVariant], u: f64) -> Option<&CompiledVariant> {
    let total: f64 = variants.iter().map(|v| v.weight).sum();
    let mut acc = 0.0;
    for v in variants {
        acc += v.weight / total;
        if u < acc {
            return Some(v);
        }
    }
    // Rounding can leave `u` just past the last boundary.
    variants.last()
}

fn describe_trigger(t: &CompiledTrigger, key: &str) -> String {
    match t {
        CompiledTrigger::Event(p) => format!("event matched `{}`", p.source),
        CompiledTrigger::Segment(s) => format!("entered segment {s}"),
        CompiledTrigger::Tier { score, .. } => {
            format!(
                "tier of {score} changed ({})",
                key.split(':').nth(2).unwrap_or("")
            )
        }
        CompiledTrigger::Schedule { segment, .. } => {
            format!("scheduled run over segment {segment}")
        }
    }
}
