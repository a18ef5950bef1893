//! When a person engages: a per-person model for send-time optimization.
//!
//! Every engagement (a human email open, a click, a purchase, a session) adds weight to the
//! person's local hour of week (Monday 00:00 = 0), decayed with a 60-day half-life so habits
//! can move. Opens that arrive within a minute of their email's delivery are machine opens
//! (Apple Mail Privacy Protection and link scanners fetch every email at once): counted,
//! never learned from. Deliveries themselves are not engagement.
//!
//! A person with three events cannot have a reliable hour-of-week profile, so the estimate
//! is Bayesian: the person's weights are pooled with a prior distribution (their primary
//! segment's, pooled with the population's) worth [`PRIOR_STRENGTH`] engagements:
//! `p(h) = (w(h) + a * prior(h)) / (W + a)`. Three events give mostly the prior; three
//! hundred give their own. The expected engagement probability at hour `h` is the person's
//! open rate times `168 * p(h)` (the open rate is the average over hours).

use crate::event::{Event, EventKind};
use crate::time::{hour_of_week, time_zone, Millis, DAY, HOUR};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const HOURS: usize = 168;
const HALF_LIFE: Millis = 60 * DAY;
/// An open this soon after its delivery was made by a machine.
pub const MACHINE_OPEN_WINDOW: Millis = 60_000;
/// How many engagements the prior is worth.
pub const PRIOR_STRENGTH: f64 = 20.0;
const RECENT_DELIVERIES: usize = 16;

/// Engagement weight of an event, or `None` when it says nothing about when the person
/// pays attention.
fn weight(ev: &Event) -> Option<f32> {
    match ev.kind {
        EventKind::Page | EventKind::Screen => Some(0.25),
        EventKind::Track => match ev.event.as_deref()? {
            "Email Opened" => Some(1.0),
            "Email Clicked" => Some(1.5),
            "Order Completed" => Some(1.0),
            "Product Viewed" | "Added to Cart" | "Session Started" | "Application Opened"
            | "Checkout Started" => Some(0.25),
            _ => None,
        },
        _ => None,
    }
}

fn message_hash(ev: &Event) -> Option<u64> {
    let id = ev.properties.get("message_id")?.as_str()?;
    Some(xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
}

/// One person's engagement by local hour of week.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    /// Weight per local hour of week with any, sorted by hour, decayed to `as_of` (empty
    /// until the first engagement). Sparse: people engage in a few of the 168 hours, and a
    /// dense vector was a fifth of a stored profile.
    weights: Vec<(u8, f32)>,
    as_of: Millis,
    /// Recent deliveries (message id hash, time), newest last.
    deliveries: Vec<(u64, Millis)>,
    pub human_opens: u32,
    pub machine_opens: u32,
}

impl Engagement {
    /// Takes in one event; `tz` is the person's time zone as known now (else the event's
    /// own, else UTC).
    pub fn record(&mut self, ev: &Event, tz: Option<&str>) {
        let is = |name: &str| ev.kind == EventKind::Track && ev.event.as_deref() == Some(name);
        if is("Email Delivered") {
            if let Some(h) = message_hash(ev) {
                self.deliveries.retain(|(m, _)| *m != h);
                self.deliveries.push((h, ev.timestamp));
                if self.deliveries.len() > RECENT_DELIVERIES {
                    self.deliveries.remove(0);
                }
            }
            return;
        }
        let Some(w) = weight(ev) else {
            return;
        };
        if is("Email Opened") {
            let delivered = match message_hash(ev) {
                Some(h) => self.deliveries.iter().find(|(m, _)| *m == h).map(|d| d.1),
                None => None,
            };
            if delivered.is_some_and(|d| (0..MACHINE_OPEN_WINDOW).contains(&(ev.timestamp - d))) {
                self.machine_opens += 1;
                return;
            }
            self.human_opens += 1;
        }
        let zone = tz
            .and_then(time_zone)
            .or_else(|| ev.context_timezone().and_then(time_zone))
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let Some(h) = hour_of_week(ev.timestamp, &zone) else {
            return;
        };
        if self.weights.is_empty() {
            self.as_of = ev.timestamp;
        }
        if ev.timestamp > self.as_of {
            let f = decay(ev.timestamp - self.as_of);
            self.weights.iter_mut().for_each(|(_, v)| *v *= f);
            self.as_of = ev.timestamp;
        }
        let add = w * decay(self.as_of - ev.timestamp);
        match self.weights.binary_search_by_key(&h, |&(hour, _)| hour) {
            Ok(i) => self.weights[i].1 += add,
            Err(i) => self.weights.insert(i, (h, 0.0 + add)),
        }
    }

    /// Takes the dense weights of profiles stored before they were sparse (one per hour
    /// of week, or none).
    pub(crate) fn from_dense(
        dense: Vec<f32>,
        as_of: Millis,
        deliveries: Vec<(u64, Millis)>,
        human_opens: u32,
        machine_opens: u32,
    ) -> Self {
        let mut weights: Vec<(u8, f32)> = (0u8..)
            .zip(dense.iter().copied())
            .filter(|&(_, w)| w != 0.0)
            .collect();
        // A dense vector, even of zeros, meant "engaged before": `as_of` holds.
        if weights.is_empty() && !dense.is_empty() {
            weights.push((0, 0.0));
        }
        Self {
            weights,
            as_of,
            deliveries,
            human_opens,
            machine_opens,
        }
    }

    /// The weights as they were stored before they were sparse, for tests of that layout.
    #[cfg(test)]
    pub(crate) fn dense_weights(&self) -> Vec<f32> {
        if self.weights.is_empty() {
            return Vec::new();
        }
        let mut dense = vec![0.0; HOURS];
        for &(h, w) in &self.weights {
            dense[h as usize] = w;
        }
        dense
    }

    /// Weights per hour of week decayed to `now`, and their total.
    pub fn weights_at(&self, now: Millis) -> ([f64; HOURS], f64) {
        let mut out = [0.0; HOURS];
        if self.weights.is_empty() {
            return (out, 0.0);
        }
        let f = decay((now - self.as_of).max(0)) as f64;
        for &(h, w) in &self.weights {
            if let Some(o) = out.get_mut(h as usize) {
                *o = w as f64 * f;
            }
        }
        let total = out.iter().sum();
        (out, total)
    }

    /// The person's own distribution over hours (empty weights: none).
    pub fn distribution(&self, now: Millis) -> Option<[f64; HOURS]> {
        let (mut w, total) = self.weights_at(now);
        if total <= 0.0 {
            return None;
        }
        w.iter_mut().for_each(|v| *v /= total);
        Some(w)
    }
}

fn decay(age: Millis) -> f32 {
    (0.5f64).powf(age as f64 / HALF_LIFE as f64) as f32
}

/// Where a person's estimate comes from when they have little history: distributions over
/// the 168 hours, each summing to 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Priors {
    pub population: Vec<f64>,
    /// By primary segment, for segments with enough people.
    pub segments: BTreeMap<String, Vec<f64>>,
    pub people: u64,
}

/// Fewest people with engagement a segment needs for its own prior.
pub const MIN_SEGMENT_PEOPLE: u64 = 30;

/// Builds [`Priors`] person by person: each person's distribution counts once, so the
/// prior is the habit of a typical person, not of the most active ones.
#[derive(Default)]
pub struct PriorsBuilder {
    population: Vec<f64>,
    people: u64,
    segments: BTreeMap<String, (Vec<f64>, u64)>,
}

impl PriorsBuilder {
    pub fn add(&mut self, e: &Engagement, primary: Option<&str>, now: Millis) {
        let Some(d) = e.distribution(now) else {
            return;
        };
        if self.population.is_empty() {
            self.population = vec![0.0; HOURS];
        }
        for (p, v) in self.population.iter_mut().zip(d) {
            *p += v;
        }
        self.people += 1;
        if let Some(seg) = primary {
            let (acc, n) = self
                .segments
                .entry(seg.to_string())
                .or_insert_with(|| (vec![0.0; HOURS], 0));
            for (p, v) in acc.iter_mut().zip(d) {
                *p += v;
            }
            *n += 1;
        }
    }

    pub fn build(self) -> Priors {
        let norm = |v: Vec<f64>| {
            let t: f64 = v.iter().sum();
            v.into_iter().map(|x| x / t).collect::<Vec<f64>>()
        };
        Priors {
            population: if self.people > 0 {
                norm(self.population)
            } else {
                Vec::new()
            },
            segments: self
                .segments
                .into_iter()
                .filter(|(_, (_, n))| *n >= MIN_SEGMENT_PEOPLE)
                .map(|(k, (v, _))| (k, norm(v)))
                .collect(),
            people: self.people,
        }
    }
}

impl Priors {
    /// The prior for a person in `segment`: the segment's pooled half and half with the
    /// population's; uniform when nothing is known.
    pub fn prior(&self, segment: Option<&str>) -> [f64; HOURS] {
        let mut out = [1.0 / HOURS as f64; HOURS];
        if self.population.len() == HOURS {
            out.copy_from_slice(&self.population);
        }
        if let Some(seg) = segment.and_then(|s| self.segments.get(s)) {
            for (o, s) in out.iter_mut().zip(seg) {
                *o = 0.5 * *o + 0.5 * s;
            }
        }
        out
    }
}

/// One candidate moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// When to send: the start of a local hour (or now, for the current hour).
    pub at: Millis,
    pub local_hour_of_week: u8,
    /// Posterior share of the person's engagement in this hour of the week.
    pub share: f64,
    /// `168 * share`: how much better than an average hour (1.0).
    pub lift: f64,
    /// Expected probability that a message sent then is engaged with.
    pub probability: f64,
}

/// The answer to "when should this person get a message in the next `within`?".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    pub best: Slot,
    pub runner_up: Option<Slot>,
    /// How much of the estimate is the person's own history (the rest is the prior).
    pub personal_share: f64,
    /// Decayed engagement weight behind the personal part.
    pub engagement_weight: f64,
    pub human_opens: u32,
    pub machine_opens: u32,
    /// Smoothed open rate the probabilities scale.
    pub open_rate: f64,
    pub time_zone: String,
}

/// The posterior distribution over hours of week for a person.
pub fn posterior(e: &Engagement, prior: &[f64; HOURS], now: Millis) -> ([f64; HOURS], f64, f64) {
    let (w, total) = e.weights_at(now);
    let mut p = [0.0; HOURS];
    for h in 0..HOURS {
        p[h] = (w[h] + PRIOR_STRENGTH * prior[h]) / (total + PRIOR_STRENGTH);
    }
    (p, total / (total + PRIOR_STRENGTH), total)
}

/// The best moment (and a runner-up at least two hours from it) to reach a person within
/// `[now, now + within)`, hour by hour in their time zone.
#[allow(clippy::too_many_arguments)]
pub fn advise(
    e: &Engagement,
    prior: &[f64; HOURS],
    tz: Option<&str>,
    delivered: u64,
    now: Millis,
    within: Millis,
) -> Advice {
    let zone_name = tz.filter(|z| time_zone(z).is_some()).unwrap_or("UTC");
    let zone = time_zone(zone_name).unwrap_or(jiff::tz::TimeZone::UTC);
    let (p, personal_share, total) = posterior(e, prior, now);
    // Beta(1, 3) prior on the open rate: about 25% until the person's own numbers count.
    let open_rate =
        (e.human_opens as f64 + 1.0) / (delivered.max(e.human_opens as u64) as f64 + 4.0);
    let candidates = candidate_slots(&p, &zone, open_rate, now, within);
    let slot = |at: Millis| -> Option<Slot> {
        let h = hour_of_week(at, &zone)?;
        let share = p[h as usize];
        Some(Slot {
            at,
            local_hour_of_week: h,
            share,
            lift: share * HOURS as f64,
            probability: (open_rate * share * HOURS as f64).min(1.0),
        })
    };
    let best = candidates
        .iter()
        .cloned()
        .reduce(|a, b| if b.share > a.share + 1e-12 { b } else { a })
        .or_else(|| slot(now))
        .unwrap_or(Slot {
            at: now,
            local_hour_of_week: 0,
            share: 1.0 / HOURS as f64,
            lift: 1.0,
            probability: open_rate,
        });
    let runner_up = candidates
        .iter()
        .filter(|s| (s.at - best.at).abs() >= 2 * HOUR)
        .cloned()
        .reduce(|a, b| if b.share > a.share + 1e-12 { b } else { a });
    Advice {
        best,
        runner_up,
        personal_share,
        engagement_weight: total,
        human_opens: e.human_opens,
        machine_opens: e.machine_opens,
        open_rate,
        time_zone: zone_name.to_string(),
    }
}

/// Candidate moments in `[now, now + within)`: now, then the start of each following
/// local hour (zones with half-hour offsets start their hours off the UTC hour).
fn candidate_slots(
    p: &[f64; HOURS],
    zone: &jiff::tz::TimeZone,
    open_rate: f64,
    now: Millis,
    within: Millis,
) -> Vec<Slot> {
    let mut out = Vec::new();
    let end = now + within.max(1);
    let mut t = now;
    while t < end && out.len() < 24 * 31 {
        if let Some(h) = hour_of_week(t, zone) {
            let share = p[h as usize];
            out.push(Slot {
                at: t,
                local_hour_of_week: h,
                share,
                lift: share * HOURS as f64,
                probability: (open_rate * share * HOURS as f64).min(1.0),
            });
        }
        t = next_local_hour(t, zone);
    }
    out
}

/// Every candidate moment in the window with the person's posterior share, for callers
/// that filter them (quiet hours) before choosing.
pub fn slots(
    e: &Engagement,
    prior: &[f64; HOURS],
    tz: Option<&str>,
    now: Millis,
    within: Millis,
) -> Vec<Slot> {
    let zone = tz.and_then(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let (p, _, _) = posterior(e, prior, now);
    candidate_slots(&p, &zone, 1.0, now, within)
}

/// The start of the next local hour after `t`.
fn next_local_hour(t: Millis, zone: &jiff::tz::TimeZone) -> Millis {
    let Ok(ts) = jiff::Timestamp::from_millisecond(t) else {
        return t + HOUR;
    };
    let dt = zone.to_datetime(ts);
    let Ok(start) = dt.with().minute(0).second(0).subsec_nanosecond(0).build() else {
        return t + HOUR;
    };
    let next = start
        .checked_add(jiff::Span::new().hours(1))
        .ok()
        .and_then(|n| zone.to_ambiguous_zoned(n).later().ok())
        .map(|z| z.timestamp().as_millisecond());
    match next {
        Some(n) if n > t => n,
        _ => t + HOUR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp;
    use serde_json::{json, Value};

    fn ev(name: &str, at: &str, props: Value) -> Event {
        Event::test_track(name, parse_timestamp(at).unwrap_or(0), props)
    }

    /// The weights as they were kept before they were sparse: one per hour of week.
    #[derive(Default)]
    struct Dense {
        weights: Vec<f32>,
        as_of: Millis,
    }

    impl Dense {
        fn record(&mut self, ev: &Event, tz: &str) {
            let (Some(w), Some(zone)) = (weight(ev), time_zone(tz)) else {
                return;
            };
            let Some(h) = hour_of_week(ev.timestamp, &zone) else {
                return;
            };
            if self.weights.is_empty() {
                self.weights = vec![0.0; HOURS];
                self.as_of = ev.timestamp;
            }
            if ev.timestamp > self.as_of {
                let f = decay(ev.timestamp - self.as_of);
                self.weights.iter_mut().for_each(|v| *v *= f);
                self.as_of = ev.timestamp;
            }
            self.weights[h as usize] += w * decay(self.as_of - ev.timestamp);
        }
    }

    #[test]
    fn sparse_weights_are_bit_for_bit_the_dense_ones() {
        let names = [
            "Order Completed",
            "Email Clicked",
            "Product Viewed",
            "Added to Cart",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let start = parse_timestamp("2026-01-05T00:00:00Z").unwrap_or(0);
        let (mut sparse, mut dense) = (Engagement::default(), Dense::default());
        let mut t = start;
        for i in 0..2_000 {
            // Mostly forward in time, now and then a late event up to a week old.
            t += next(6 * HOUR as u64) as Millis;
            let at = if next(10) == 0 {
                t - next(7 * DAY as u64) as Millis
            } else {
                t
            };
            let mut e = ev(names[next(4) as usize], "2026-01-05T00:00:00Z", json!({}));
            e.timestamp = at;
            sparse.record(&e, Some("America/New_York"));
            dense.record(&e, "America/New_York");
            if i % 97 == 0 {
                let now = t + next(30 * DAY as u64) as Millis;
                let (a, ta) = sparse.weights_at(now);
                let f = decay((now - dense.as_of).max(0)) as f64;
                let b: Vec<f64> = dense.weights.iter().map(|&w| w as f64 * f).collect();
                assert_eq!(
                    a.map(f64::to_bits).to_vec(),
                    b.iter().map(|w| w.to_bits()).collect::<Vec<_>>()
                );
                assert_eq!(ta.to_bits(), b.iter().sum::<f64>().to_bits());
            }
        }
        assert_eq!(sparse.dense_weights(), dense.weights);
        let back = Engagement::from_dense(dense.weights, dense.as_of, Vec::new(), 0, 0);
        assert_eq!(back, sparse);
    }

    #[test]
    fn machine_opens_are_counted_not_learned() {
        let mut e = Engagement::default();
        let m = json!({"message_id": "em-1"});
        e.record(
            &ev("Email Delivered", "2026-03-03T09:00:00Z", m.clone()),
            Some("Europe/Berlin"),
        );
        e.record(
            &ev("Email Opened", "2026-03-03T09:00:05Z", m.clone()),
            Some("Europe/Berlin"),
        );
        assert_eq!((e.machine_opens, e.human_opens), (1, 0));
        assert!(e
            .distribution(parse_timestamp("2026-03-04T00:00:00Z").unwrap_or(0))
            .is_none());
        e.record(
            &ev("Email Opened", "2026-03-03T18:30:00Z", m),
            Some("Europe/Berlin"),
        );
        assert_eq!((e.machine_opens, e.human_opens), (1, 1));
        let d = e
            .distribution(parse_timestamp("2026-03-04T00:00:00Z").unwrap_or(0))
            .unwrap_or([0.0; HOURS]);
        // Tuesday 19:30 in Berlin: hour of week 24 + 19.
        assert_eq!(d[24 + 19], 1.0);
    }

    #[test]
    fn shrinks_to_the_prior_with_little_history_and_follows_the_person_with_much() {
        let prior = {
            let mut b = PriorsBuilder::default();
            // A population that engages at 10:00 on weekdays.
            for day in 2..7 {
                let mut e = Engagement::default();
                e.record(
                    &ev(
                        "Email Clicked",
                        &format!("2026-03-0{day}T10:15:00Z"),
                        json!({}),
                    ),
                    Some("UTC"),
                );
                for _ in 0..MIN_SEGMENT_PEOPLE {
                    b.add(
                        &e,
                        Some("all"),
                        parse_timestamp("2026-03-08T00:00:00Z").unwrap_or(0),
                    );
                }
            }
            b.build()
        };
        assert_eq!(prior.people, 5 * MIN_SEGMENT_PEOPLE);
        let p = prior.prior(Some("all"));
        let now = parse_timestamp("2026-03-09T00:00:00Z").unwrap_or(0); // a Monday
                                                                        // One evening click: still the population's morning.
        let mut few = Engagement::default();
        few.record(
            &ev("Email Clicked", "2026-03-03T20:10:00Z", json!({})),
            Some("UTC"),
        );
        let a = advise(&few, &p, Some("UTC"), 1, now, 7 * DAY);
        assert_eq!(a.best.local_hour_of_week % 24, 10, "{a:?}");
        assert!(a.personal_share < 0.3);
        // Forty evening clicks: their own evening, on the right weekday.
        let mut many = Engagement::default();
        for w in 0..40 {
            let at = parse_timestamp("2026-01-06T20:10:00Z").unwrap_or(0) + (w % 8) * 7 * DAY;
            let mut e = ev("Email Clicked", "2026-01-06T20:10:00Z", json!({}));
            e.timestamp = at;
            many.record(&e, Some("UTC"));
        }
        let a = advise(&many, &p, Some("UTC"), 40, now, 7 * DAY);
        assert_eq!(a.best.local_hour_of_week, 24 + 20, "{a:?}");
        assert!(a.personal_share > 0.6 && a.best.lift > 5.0, "{a:?}");
        let r = a.runner_up.as_ref().map_or(0, |s| (s.at - a.best.at).abs());
        assert!(r >= 2 * HOUR);
        assert!(a.best.at >= now && a.best.at < now + 7 * DAY);
    }

    #[test]
    fn local_hours_step_through_daylight_saving_changes() {
        let zone = time_zone("Europe/Berlin").unwrap_or(jiff::tz::TimeZone::UTC);
        // 2026-03-29 02:00 local does not exist: 01:xx is followed by 03:00.
        let t = parse_timestamp("2026-03-29T00:30:00Z").unwrap_or(0); // 01:30 CET
        let n = next_local_hour(t, &zone);
        assert_eq!(n, parse_timestamp("2026-03-29T01:00:00Z").unwrap_or(0)); // 03:00 CEST
        let mut hours = Vec::new();
        let mut x = parse_timestamp("2026-03-28T22:10:00Z").unwrap_or(0);
        for _ in 0..5 {
            x = next_local_hour(x, &zone);
            hours.push(hour_of_week(x, &zone).unwrap_or(0) % 24);
        }
        assert_eq!(hours, vec![0, 1, 3, 4, 5]);
    }
}
