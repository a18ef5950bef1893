//! The profile state as the rule language sees it: an [`Env`] over [`ProfileState`].
//!
//! Windows are answered from the time buckets of [`crate::counter`] (exact to the minute up
//! to 48 hours, to the hour up to 35 days, to the day up to 400 days), with one exact
//! refinement: when the newest counted event is at or before the window's start, the count
//! is zero. So `did("Order Completed", since: "Added to Cart")` compares the two instants
//! exactly even when both fall in the same minute.

use crate::counter::{Buckets, Tally};
use crate::event::Event;
use crate::scoring::ScoreNow;
use crate::state::ProfileState;
use crate::time::{time_zone, Millis, DAY, HOUR};
use kairos_rules::{AggId, Aggregates, Env, EventRef, Field, Threshold, Val, WindowTest};
use serde_json::Value;

/// Instants [`ProfileEnv::window_turns`] and [`ProfileEnv::local_turns`] look past
/// before giving up (a day of local hours fits).
const TURN_STEPS: usize = 32;

/// One profile at one instant, with the scores, tiers and memberships computed so far.
pub struct ProfileEnv<'a> {
    pub state: &'a ProfileState,
    pub aggregates: &'a Aggregates,
    pub now: Millis,
    /// The incoming event, for score rules and triggers.
    pub event: Option<&'a Event>,
    /// Every score at `now`, in definition order.
    pub scores: &'a [ScoreNow<'a>],
    /// Memberships computed so far, in definition order.
    pub segments: &'a crate::bits::Bits,
    /// The state's series of every aggregate, resolved once per evaluation (see
    /// [`SeriesPlan`]); empty to look each up by name when asked.
    pub series: &'a [Option<Series<'a>>],
    /// When the campaign journey being decided started (`since: trigger`).
    pub trigger: Option<Millis>,
    /// The person's zone, looked up when a rule first reads the local clock and shared by
    /// the views of this evaluation at later instants (time does not move it).
    pub zone: &'a ZoneCell,
}

/// See [`ProfileEnv::zone`].
pub type ZoneCell = std::cell::OnceCell<jiff::tz::TimeZone>;

/// The time series an aggregate reads.
#[derive(Clone, Copy)]
pub enum Series<'a> {
    Counts(&'a Buckets<u32>),
    Sums(&'a crate::counter::SumCounter),
}

/// Every aggregate's series, by aggregate id; on the stack for the usual number.
pub type ResolvedSeries<'a> = smallvec::SmallVec<[Option<Series<'a>>; 32]>;

/// Aggregates sorted by the name of the series they read, so that all of them are found
/// in the state in one merge pass instead of a name search per rule.
#[derive(Clone, Debug, Default)]
pub struct SeriesPlan {
    plain: Vec<(String, kairos_rules::AggId)>,
    sums: Vec<(String, kairos_rules::AggId)>,
    len: usize,
}

impl SeriesPlan {
    pub fn new(aggregates: &Aggregates) -> Self {
        let mut plan = SeriesPlan {
            len: aggregates.specs.len(),
            ..Self::default()
        };
        for (i, spec) in aggregates.specs.iter().enumerate() {
            if spec.is_plain() {
                plan.plain.push((spec.event.clone(), i));
            } else {
                plan.sums.push((spec.key.clone(), i));
            }
        }
        plan.plain.sort();
        plan.sums.sort();
        plan
    }

    /// Every aggregate's series in `state` (`None`: no such event yet).
    pub fn resolve<'a>(&self, state: &'a ProfileState) -> ResolvedSeries<'a> {
        self.resolve_at(state, &self.positions(state))
    }

    /// Where each aggregate's series is in `state` ([`SERIES_NONE`], or a position in
    /// `activity`, or [`SERIES_SUMS`] plus a position in `aggregates`). Positions hold
    /// while neither map gains a name (they never lose one), which is what
    /// [`SeriesSlots`] checks before reusing them.
    pub fn positions(&self, state: &ProfileState) -> Vec<u32> {
        fn join<V>(
            wanted: &[(String, AggId)],
            have: &crate::vecmap::VecMap<V>,
            out: &mut [u32],
            tag: u32,
        ) {
            let mut it = have.iter().enumerate().peekable();
            for (name, agg) in wanted {
                while it.peek().is_some_and(|(_, (k, _))| *k < name.as_str()) {
                    it.next();
                }
                if let Some((pos, (k, _))) = it.peek() {
                    if *k == name.as_str() {
                        out[*agg] = tag | *pos as u32;
                    }
                }
            }
        }
        let mut out = vec![SERIES_NONE; self.len];
        join(&self.plain, &state.activity, &mut out, 0);
        join(&self.sums, &state.aggregates, &mut out, SERIES_SUMS);
        out
    }

    /// The series at `positions` (from [`SeriesPlan::positions`] on this state's names).
    pub fn resolve_at<'a>(&self, state: &'a ProfileState, positions: &[u32]) -> ResolvedSeries<'a> {
        positions
            .iter()
            .map(|&p| match p {
                SERIES_NONE => None,
                p if p & SERIES_SUMS != 0 => state
                    .aggregates
                    .at((p & !SERIES_SUMS) as usize)
                    .map(|(_, v)| Series::Sums(v)),
                p => state
                    .activity
                    .at(p as usize)
                    .map(|(_, v)| Series::Counts(v)),
            })
            .collect()
    }
}

/// No series for the aggregate (see [`SeriesPlan::positions`]).
pub const SERIES_NONE: u32 = u32::MAX;
/// Marks a position in the state's filtered aggregates rather than its activity counters.
pub const SERIES_SUMS: u32 = 1 << 31;

/// A profile's cached [`SeriesPlan::positions`], valid for the definitions it was made
/// under while the state's two maps keep their sizes. Neither stored nor compared.
#[derive(Clone, Debug, Default)]
pub struct SeriesSlots {
    version: u64,
    activity: usize,
    sums: usize,
    valid: bool,
    positions: Vec<u32>,
}

impl PartialEq for SeriesSlots {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SeriesSlots {
    /// The positions for `state` under definitions `version`, recomputed when stale.
    pub fn refresh(&mut self, plan: &SeriesPlan, state: &ProfileState, version: u64) -> &[u32] {
        let fresh = self.valid
            && self.version == version
            && self.activity == state.activity.len()
            && self.sums == state.aggregates.len();
        if !fresh {
            self.positions = plan.positions(state);
            self.version = version;
            self.activity = state.activity.len();
            self.sums = state.aggregates.len();
            self.valid = true;
        }
        &self.positions
    }
}

impl ProfileEnv<'_> {
    fn series(&self, agg: AggId) -> Option<Series<'_>> {
        if !self.series.is_empty() {
            return self.series.get(agg).copied().flatten();
        }
        let spec = self.aggregates.specs.get(agg)?;
        if spec.is_plain() {
            self.state.activity.get(&spec.event).map(Series::Counts)
        } else {
            self.state.aggregates.get(&spec.key).map(Series::Sums)
        }
    }

    /// (count, sum) of events in `(from, now]`.
    fn tally(&self, agg: AggId, from: Millis) -> (u64, f64) {
        fn of<T: Tally>(b: &Buckets<T>, from: Millis, now: Millis) -> (u64, f64) {
            if !counts_anything(b, from, now) {
                return (0, 0.0);
            }
            let window = if from == Millis::MIN {
                Millis::MAX / 2
            } else {
                now - from
            };
            let t = b.tally_within(window, now);
            (t.count(), t.sum())
        }
        match self.series(agg) {
            Some(Series::Counts(b)) => of(b, from, self.now),
            Some(Series::Sums(b)) => of(b, from, self.now),
            None => (0, 0.0),
        }
    }

    /// The person's zone (UTC when unknown) and `now` as local wall-clock milliseconds
    /// (UTC milliseconds plus the zone's offset then). Hours and days of the local clock
    /// are arithmetic on that; only the offset needs the zone's rules.
    fn local(&self) -> Option<(&jiff::tz::TimeZone, Millis)> {
        let tz = self.zone.get_or_init(|| {
            self.state
                .timezone()
                .and_then(time_zone)
                .unwrap_or(jiff::tz::TimeZone::UTC)
        });
        Some((tz, self.now + offset_at(tz, self.now)?))
    }
}

/// The zone's offset from UTC at `t`, in milliseconds.
fn offset_at(tz: &jiff::tz::TimeZone, t: Millis) -> Option<Millis> {
    let offset = tz.to_offset(jiff::Timestamp::from_millisecond(t).ok()?);
    Some(offset.seconds() as Millis * 1000)
}

/// The zone's first transition after `t`, if it has one.
fn next_transition(tz: &jiff::tz::TimeZone, t: Millis) -> Option<Millis> {
    tz.following(jiff::Timestamp::from_millisecond(t).ok()?)
        .next()
        .map(|t| t.timestamp().as_millisecond())
        .filter(|next| *next > t)
}

/// The hour of the day (0-23) of a local wall-clock instant.
fn local_hour(local: Millis) -> f64 {
    local.div_euclid(HOUR).rem_euclid(24) as f64
}

/// The day of the week (1 = Monday) of a local wall-clock instant; 1970-01-01 was a
/// Thursday.
fn local_weekday(local: Millis) -> f64 {
    (local.div_euclid(DAY) + 3).rem_euclid(7) as f64 + 1.0
}

/// [`Env::window_turns`] over one series: from edge to edge of the window, reading only it.
fn window_turn<T: Tally>(b: &Buckets<T>, test: WindowTest, now: Millis) -> Option<Millis> {
    let (value, mut next) = window_at(b, test, now);
    first_turn(test.threshold.holds(value), || {
        let t = next?;
        let (value, after) = window_at(b, test, t);
        next = after;
        Some((t, test.threshold.holds(value)))
    })
}

/// Steps through the instants `step` yields, each with whether the comparison holds
/// there, and returns the first at which that differs from `now_holds`. After
/// [`TURN_STEPS`] instants that change nothing (many events under a low threshold, a clock
/// rule that holds all day) it returns the first of them, as a host that cannot look
/// ahead would: that answer is the same from any instant before it, so timers do not
/// depend on when they were computed.
fn first_turn(now_holds: bool, mut step: impl FnMut() -> Option<(Millis, bool)>) -> Option<Millis> {
    let mut first = None;
    for _ in 0..TURN_STEPS {
        let (t, holds) = step()?;
        first.get_or_insert(t);
        if holds != now_holds {
            return Some(t);
        }
    }
    first
}

/// What [`ProfileEnv::tally`] and [`Env::window_expiry`] answer for the window
/// `(now - within, now]` of one series, from one lookup of its buckets: the count or
/// sum, and the next instant after `now` at which it may change.
fn window_at<T: Tally>(b: &Buckets<T>, test: WindowTest, now: Millis) -> (f64, Option<Millis>) {
    let read = |t: T| if test.sum { t.sum() } else { t.count() as f64 };
    let from = now.saturating_sub(test.within);
    if from == Millis::MIN {
        // A window reaching before all time: `tally` counts everything, and
        // `window_expiry` has no edge to offer.
        let value = if counts_anything(b, from, now) {
            read(b.tally_within(Millis::MAX / 2, now))
        } else {
            0.0
        };
        return (value, None);
    }
    let window = now - from;
    let (tally, expiry) = b.tally_and_expiry(window, now);
    let value = if counts_anything(b, from, now) {
        read(tally)
    } else {
        0.0
    };
    (value, until_all_gone(expiry, b, window, now))
}

/// Whether `(from, now]` can hold any event of the series: nothing is counted once the
/// window starts at or after the newest one (`from` is `Millis::MIN` for all time).
fn counts_anything<T: Tally>(b: &Buckets<T>, from: Millis, now: Millis) -> bool {
    b.total.count() > 0 && (from == Millis::MIN || b.last > from) && from < now
}

/// A window's next edge, `bucketed` as its buckets say, refined as [`counts_anything`]
/// reads it: everything has left once the window starts at or after the newest event,
/// which may come before that event's bucket expires.
fn until_all_gone<T: Tally>(
    bucketed: Option<Millis>,
    b: &Buckets<T>,
    window: Millis,
    now: Millis,
) -> Option<Millis> {
    let all_gone = b.last.checked_add(window).filter(|t| *t > now);
    match (bucketed, all_gone) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The next instant after `now` at which the local hour (day, for `unit` = [`DAY`])
/// changes, `local` being `now` on the wall clock: the next boundary at the offset in force,
/// or the zone's next `transition` if that comes first (the clock may jump there).
fn next_local_change(
    now: Millis,
    local: Millis,
    unit: Millis,
    transition: Option<Millis>,
) -> Millis {
    let boundary = now + ((local.div_euclid(unit) + 1) * unit - local);
    transition.map_or(boundary, |t| t.min(boundary))
}

fn time(t: Option<Millis>) -> Val<'static> {
    t.map_or(Val::Null, Val::Time)
}

impl Env for ProfileEnv<'_> {
    fn now(&self) -> i64 {
        self.now
    }

    /// Windows, ages and the local clock are answered from the state and `now` alone, so
    /// the same state at a later `now` is the profile then, if no event comes.
    fn probe(&self, t: i64, f: &mut dyn FnMut(&dyn Env)) -> bool {
        if t <= self.now {
            return false;
        }
        f(&ProfileEnv { now: t, ..*self });
        true
    }

    fn later(&self, t: i64) -> Option<Self> {
        (t > self.now).then_some(ProfileEnv { now: t, ..*self })
    }

    fn trigger_time(&self) -> Option<i64> {
        self.trigger
    }

    fn field(&self, f: Field) -> Val<'_> {
        let s = self.state;
        match f {
            Field::Orders => Val::Num(s.orders as f64),
            Field::LifetimeRevenue => Val::Num(s.revenue_micros as f64 / 1e6),
            Field::EventCount => Val::Num(s.event_count as f64),
            Field::CartValue => Val::Num(s.cart.value_micros() as f64 / 1e6),
            Field::CartItems => Val::Num(s.cart.units() as f64),
            Field::EmailDelivered => Val::Num(s.email.delivered as f64),
            Field::EmailOpens => Val::Num(s.email.opened as f64),
            Field::EmailClicks => Val::Num(s.email.clicked as f64),
            Field::FirstSeen => time(s.first_seen),
            Field::LastSeen => time(s.last_seen),
            Field::FirstOrder => time(s.first_order),
            Field::LastOrder => time(s.last_order),
            Field::LastEmailOpen => time(s.email.last_opened),
            Field::LastEmailClick => time(s.email.last_clicked),
            Field::LocalHour => self
                .local()
                .map_or(Val::Null, |(_, local)| Val::Num(local_hour(local))),
            Field::LocalWeekday => self
                .local()
                .map_or(Val::Null, |(_, local)| Val::Num(local_weekday(local))),
            Field::Timezone => s
                .timezone()
                .map_or(Val::Null, |z| Val::Str(std::borrow::Cow::Borrowed(z))),
            Field::Suppressed => Val::Bool(s.suppressed.is_some()),
            _ => Val::Null,
        }
    }

    fn trait_value(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        kairos_rules::lookup_in(self.state.trait_value(first)?, rest)
    }

    fn score(&self, index: usize) -> Option<f64> {
        self.scores.get(index).map(|s| s.value)
    }

    fn tier(&self, index: usize) -> Option<&str> {
        self.scores.get(index).and_then(|s| s.tier)
    }

    fn score_reaches(&self, index: usize, value: f64) -> Option<i64> {
        let s = self.scores.get(index)?;
        crate::scoring::crossing(s.raw, s.half_life, self.now, value)
    }

    /// The next local hour (or day) at the offset in force now, or the zone's next
    /// transition if that comes first: the local clock may jump there, so the answer is
    /// never late, and early only at a transition.
    fn local_change(&self, daily: bool) -> Option<i64> {
        let (tz, local) = self.local()?;
        let unit = if daily { DAY } else { HOUR };
        Some(next_local_change(
            self.now,
            local,
            unit,
            next_transition(tz, self.now),
        ))
    }

    fn tier_change(&self, index: usize) -> Option<i64> {
        self.scores.get(index)?.tier_change()
    }

    fn in_segment(&self, index: usize) -> bool {
        self.segments.get(index)
    }

    /// Unknown subscription state means subscribed only for transactional messages:
    /// marketing needs an explicit opt-in.
    fn subscribed(&self, list: &str) -> bool {
        self.state
            .is_subscribed(list)
            .unwrap_or(list == "transactional")
    }

    fn consented(&self, purpose: &str) -> bool {
        self.state.consent.get(purpose).is_some_and(|s| s.value)
    }

    fn event(&self) -> Option<EventRef<'_>> {
        self.event.map(|e| EventRef {
            name: e.activity_name(),
            kind: e.kind.as_str(),
            timestamp: e.timestamp,
            properties: &e.properties,
        })
    }

    fn count(&self, agg: AggId, from: i64) -> f64 {
        self.tally(agg, from).0 as f64
    }

    fn sum(&self, agg: AggId, from: i64) -> f64 {
        self.tally(agg, from).1
    }

    fn last(&self, agg: AggId) -> Option<i64> {
        match self.series(agg)? {
            Series::Counts(b) => (b.total.count() > 0).then_some(b.last),
            Series::Sums(b) => (b.total.count() > 0).then_some(b.last),
        }
    }

    fn first(&self, agg: AggId) -> Option<i64> {
        match self.series(agg)? {
            Series::Counts(b) => (b.total.count() > 0).then_some(b.first),
            Series::Sums(b) => (b.total.count() > 0).then_some(b.first),
        }
    }

    /// Steps from one window expiry to the next, reading only this aggregate, until the
    /// comparison turns: much cheaper than evaluating the whole rule at each expiry.
    fn window_turns(&self, test: WindowTest) -> Option<i64> {
        match self.series(test.agg)? {
            Series::Counts(b) => window_turn(b, test, self.now),
            Series::Sums(b) => window_turn(b, test, self.now),
        }
    }

    /// Steps from one change of the local clock to the next as [`Env::local_change`] does,
    /// but with the zone's offset and next transition looked up once, not at every hour.
    fn local_turns(&self, daily: bool, threshold: Threshold) -> Option<i64> {
        let (unit, read): (Millis, fn(Millis) -> f64) = if daily {
            (DAY, local_weekday)
        } else {
            (HOUR, local_hour)
        };
        let Some((tz, local)) = self.local() else {
            return self.local_change(daily);
        };
        let (mut now, mut offset) = (self.now, local - self.now);
        let mut transition = next_transition(tz, now);
        first_turn(threshold.holds(read(local)), || {
            now = next_local_change(now, now + offset, unit, transition);
            if transition.is_some_and(|t| t <= now) {
                offset = offset_at(tz, now)?;
                transition = next_transition(tz, now);
            }
            Some((now, threshold.holds(read(now + offset))))
        })
    }

    fn window_expiry(&self, agg: AggId, from: i64) -> Option<i64> {
        let window = self.now.checked_sub(from)?;
        match self.series(agg)? {
            Series::Counts(b) => until_all_gone(b.expiry(window, self.now), b, window, self.now),
            Series::Sums(b) => until_all_gone(b.expiry(window, self.now), b, window, self.now),
        }
    }
}
