//! The per-profile state machine: what Kairos knows about one person, computed from their
//! events by [`ProfileState::apply`].
//!
//! Every field is a join of its events (sums, min/max, last-writer-wins by (event time,
//! messageId digest), or sets with a time boundary), so applying the same events in any
//! order gives the same state. That is how late, out-of-order events (mobile SDKs flushing
//! hours later) end up exactly where an in-order replay would put them, and why a merge can
//! rebuild a profile by replaying events from two histories.

use crate::counter::{Counter, SumCounter};
use crate::event::{Event, EventKind};
use crate::time::{hour_of_week, time_zone, Millis};
use crate::vecmap::VecMap;
use crate::vocab::Vocabulary;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Orders concurrent writes: event time first, then the messageId digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub ts: Millis,
    pub tie: u64,
}

impl Stamp {
    pub fn of(ev: &Event) -> Self {
        Self {
            ts: ev.timestamp,
            tie: ev.tiebreak(),
        }
    }
}

/// A value with the stamp of the event that set it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub at: Stamp,
    pub value: T,
}

/// Last-writer-wins assignment.
fn lww<T>(slot: &mut Option<Stamped<T>>, at: Stamp, value: T) {
    if slot.as_ref().is_none_or(|s| s.at < at) {
        *slot = Some(Stamped { at, value });
    }
}

fn lww_map<T>(map: &mut VecMap<Stamped<T>>, key: &str, at: Stamp, value: T) {
    match map.get_mut(key) {
        Some(s) if s.at >= at => {}
        Some(s) => *s = Stamped { at, value },
        None => map.insert(key, Stamped { at, value }),
    }
}

/// JSON kept inside the profile's binary encoding (serde_json values need a self-describing
/// format to be read back; this writes them as a tree of tagged nodes, see below).
#[derive(Clone, Debug, PartialEq)]
pub struct Json(pub Value);

// Postcard cannot read self-describing data back, so a value is written as a tree of
// tagged nodes rather than as JSON text: printing and re-parsing the text was a fifth of
// encoding a profile, and more of decoding one.
impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Node(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Json(Tree::deserialize(d)?.into_value()))
    }
}

/// Writes a [`Value`] with the variant indices of [`Tree`].
struct Node<'a>(&'a Value);

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "Tree";
        match self.0 {
            Value::Null => s.serialize_unit_variant(NAME, 0, "Null"),
            Value::Bool(b) => s.serialize_newtype_variant(NAME, 1, "Bool", b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => s.serialize_newtype_variant(NAME, 2, "U64", &u),
                (None, Some(i)) => s.serialize_newtype_variant(NAME, 3, "I64", &i),
                _ => s.serialize_newtype_variant(NAME, 4, "F64", &n.as_f64().unwrap_or(0.0)),
            },
            Value::String(t) => s.serialize_newtype_variant(NAME, 5, "Str", t),
            Value::Array(a) => {
                let nodes: Vec<Node<'_>> = a.iter().map(Node).collect();
                s.serialize_newtype_variant(NAME, 6, "Arr", &nodes)
            }
            Value::Object(m) => {
                let pairs: Vec<(&String, Node<'_>)> = m.iter().map(|(k, v)| (k, Node(v))).collect();
                s.serialize_newtype_variant(NAME, 7, "Obj", &pairs)
            }
        }
    }
}

/// The stored form of a [`Json`] value (variant order is the encoding: append only).
#[derive(Deserialize)]
enum Tree {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Arr(Vec<Tree>),
    Obj(Vec<(String, Tree)>),
}

impl Tree {
    fn into_value(self) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(b),
            Tree::U64(u) => Value::from(u),
            Tree::I64(i) => Value::from(i),
            Tree::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Tree::Str(t) => Value::String(t),
            Tree::Arr(a) => Value::Array(a.into_iter().map(Tree::into_value).collect()),
            Tree::Obj(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
        }
    }
}

/// One product in the cart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CartLine {
    /// Newest removal of this product.
    pub removed: Stamp,
    /// Additions after the last removal or order, oldest first.
    pub adds: Vec<CartAdd>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartAdd {
    pub at: Stamp,
    pub quantity: u32,
    pub price_micros: i64,
    pub name: Option<String>,
    pub category: Option<String>,
}

/// The current cart: additions since the last order and since each product's last removal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub cleared: Stamp,
    pub lines: BTreeMap<String, CartLine>,
}

impl Cart {
    fn add(&mut self, product: &str, add: CartAdd) {
        let removed = self
            .lines
            .get(product)
            .map(|l| l.removed)
            .unwrap_or_default();
        if add.at <= self.cleared || add.at <= removed {
            return;
        }
        let line = self.lines.entry(product.to_string()).or_default();
        let pos = line.adds.partition_point(|a| a.at < add.at);
        line.adds.insert(pos, add);
    }

    fn remove(&mut self, product: &str, at: Stamp) {
        let line = self.lines.entry(product.to_string()).or_default();
        line.removed = line.removed.max(at);
        let boundary = line.removed.max(self.cleared);
        line.adds.retain(|a| a.at > boundary);
        self.prune();
    }

    fn clear(&mut self, at: Stamp) {
        self.cleared = self.cleared.max(at);
        let cleared = self.cleared;
        for line in self.lines.values_mut() {
            line.adds.retain(|a| a.at > cleared);
        }
        self.prune();
    }

    /// A line with no additions whose removal predates the last clear carries no
    /// information; dropping it keeps the state canonical whatever the event order.
    fn prune(&mut self) {
        let cleared = self.cleared;
        self.lines
            .retain(|_, l| !l.adds.is_empty() || l.removed > cleared);
    }

    /// Items currently in the cart: (product id, quantity, unit price, name, category, added).
    pub fn items(&self) -> Vec<CartItem> {
        self.lines
            .iter()
            .filter(|(_, l)| !l.adds.is_empty())
            .filter_map(|(id, l)| {
                let latest = l.adds.last()?;
                Some(CartItem {
                    product_id: id.clone(),
                    quantity: l.adds.iter().map(|a| a.quantity).sum(),
                    price_micros: latest.price_micros,
                    name: latest.name.clone(),
                    category: latest.category.clone(),
                    added_at: latest.at.ts,
                })
            })
            .collect()
    }

    /// What [`Cart::items`] adds up to, without building the items: rules read it on
    /// every evaluation of a cart segment.
    pub fn value_micros(&self) -> i64 {
        self.lines
            .values()
            .filter_map(|l| {
                let latest = l.adds.last()?;
                let quantity: u32 = l.adds.iter().map(|a| a.quantity).sum();
                Some(latest.price_micros.saturating_mul(quantity as i64))
            })
            .sum()
    }

    /// The number of units in the cart (the sum of [`Cart::items`]' quantities).
    pub fn units(&self) -> u64 {
        self.lines
            .values()
            .flat_map(|l| &l.adds)
            .map(|a| a.quantity as u64)
            .sum()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CartItem {
    pub product_id: String,
    pub quantity: u32,
    #[serde(skip)]
    pub price_micros: i64,
    pub name: Option<String>,
    pub category: Option<String>,
    #[serde(skip)]
    pub added_at: Millis,
}

/// Email engagement counters and their latest instants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailStats {
    pub delivered: u64,
    pub opened: u64,
    pub clicked: u64,
    pub bounced: u64,
    pub complained: u64,
    pub unsubscribed: u64,
    pub last_delivered: Option<Millis>,
    pub last_opened: Option<Millis>,
    pub last_clicked: Option<Millis>,
}

fn max_opt(slot: &mut Option<Millis>, ts: Millis) {
    *slot = Some(slot.map_or(ts, |t| t.max(ts)));
}

/// Sparse hour-of-week histogram: sorted (hour 0..168, count).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourHistogram(pub Vec<(u8, u32)>);

impl HourHistogram {
    fn add(&mut self, hour: u8) {
        match self.0.binary_search_by_key(&hour, |(h, _)| *h) {
            Ok(p) => self.0[p].1 += 1,
            Err(p) => self.0.insert(p, (hour, 1)),
        }
    }

    pub fn dense(&self) -> [u32; 168] {
        let mut d = [0u32; 168];
        for (h, c) in &self.0 {
            if let Some(slot) = d.get_mut(*h as usize) {
                *slot += c;
            }
        }
        d
    }
}

/// Everything Kairos derives about one person from their events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub traits: VecMap<Stamped<Json>>,
    pub first_seen: Option<Millis>,
    pub last_seen: Option<Millis>,
    pub event_count: u64,
    pub activity: VecMap<Counter>,
    pub orders: u64,
    pub revenue_micros: i64,
    pub first_order: Option<Millis>,
    pub last_order: Option<Millis>,
    pub cart: Cart,
    pub email: EmailStats,
    /// Activity by local hour of week, for events whose sender reported a time zone.
    pub hours_local: HourHistogram,
    /// Activity by UTC hour of week, for events without one; shifted by the profile's zone
    /// when read, so a zone learnt later still applies.
    pub hours_utc: HourHistogram,
    pub context_timezone: Option<Stamped<String>>,
    /// Subscription per list (`marketing`, `product`, ...): true = subscribed.
    pub subscriptions: VecMap<Stamped<bool>>,
    /// Consent per purpose: true = granted.
    pub consent: VecMap<Stamped<bool>>,
    /// Why the email address must not be mailed (hard bounce, spam complaint).
    pub suppressed: Option<Stamped<String>>,
    pub groups: BTreeSet<String>,
    /// Filtered counts and property sums the configured rules ask for, keyed by the
    /// aggregate's canonical text (see [`kairos_rules::AggSpec`]). Plain per-name counts
    /// come from `activity`.
    pub aggregates: VecMap<SumCounter>,
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

fn to_micros(f: f64) -> i64 {
    (f * 1_000_000.0).round() as i64
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "subscribed" | "granted" | "true" | "yes" | "opted_in" => Some(true),
            "unsubscribed" | "denied" | "false" | "no" | "opted_out" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Which groups of the fields rules read an event may have changed (a superset: a group
/// is marked when the event writes to it, whether or not the value moved). A segment that
/// reads none of them keeps its result and its timer; see `scoring::Deps`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched(pub u16);

impl Touched {
    /// `last_seen`, `event_count`: every event.
    pub const SEEN: u16 = 1;
    pub const FIRST_SEEN: u16 = 1 << 1;
    /// The time zone, so also the local clock (`local_hour`, `local_weekday`).
    pub const ZONE: u16 = 1 << 2;
    pub const TRAITS: u16 = 1 << 3;
    /// Subscriptions and consent.
    pub const SUBSCRIPTIONS: u16 = 1 << 4;
    /// Orders, revenue and the first and last order.
    pub const ORDERS: u16 = 1 << 5;
    /// The cart's items and value.
    pub const CART: u16 = 1 << 6;
    /// Email counters and their latest instants.
    pub const EMAIL: u16 = 1 << 7;
    pub const SUPPRESSED: u16 = 1 << 8;
    /// Every group a track event can write.
    pub const TRACK: u16 = Self::ORDERS | Self::CART | Self::EMAIL | Self::SUPPRESSED;
    pub const COUNT: usize = 9;
    pub const ALL: u16 = (1 << Self::COUNT) - 1;

    pub fn has(self, groups: u16) -> bool {
        self.0 & groups != 0
    }
}

impl std::ops::BitOrAssign<u16> for Touched {
    fn bitor_assign(&mut self, groups: u16) {
        self.0 |= groups;
    }
}

impl ProfileState {
    /// Folds one event into the state. Order-independent (see the module doc). Returns
    /// which groups of fields it may have changed.
    pub fn apply(&mut self, ev: &Event, vocab: &Vocabulary) -> Touched {
        let at = Stamp::of(ev);
        let ts = ev.timestamp;
        let mut touched = Touched(Touched::SEEN);
        self.event_count += 1;
        let first_seen = self.first_seen;
        self.first_seen = Some(self.first_seen.map_or(ts, |t| t.min(ts)));
        if self.first_seen != first_seen {
            touched |= Touched::FIRST_SEEN;
        }
        max_opt(&mut self.last_seen, ts);
        if let Some(tz) = ev.context_timezone() {
            // SDKs send the zone with every event: only a different one moves the clock.
            match &mut self.context_timezone {
                Some(s) if s.value == tz => s.at = s.at.max(at),
                _ if time_zone(tz).is_some() => {
                    lww(&mut self.context_timezone, at, tz.to_string());
                    touched |= Touched::ZONE;
                }
                _ => {}
            }
        }
        if !ev.traits.is_empty() {
            touched |= Touched::TRAITS;
            for k in ev.traits.keys() {
                match k.as_str() {
                    "timezone" => touched |= Touched::ZONE,
                    "unsubscribed" | "subscriptions" | "consent" => {
                        touched |= Touched::SUBSCRIPTIONS
                    }
                    _ => {}
                }
            }
        }
        if ev.kind == EventKind::Identify {
            touched |= Touched::TRAITS;
        }
        match ev.kind {
            EventKind::Identify => self.apply_traits(&ev.traits, at),
            EventKind::Group => {
                if let Some(g) = &ev.group_id {
                    self.groups.insert(g.clone());
                }
            }
            EventKind::Alias => {}
            EventKind::Track | EventKind::Page | EventKind::Screen => {
                if let Some(name) = ev.activity_name() {
                    self.activity
                        .get_or_insert_with(name, Counter::default)
                        .add(ts);
                }
                self.record_hour(ev);
                if ev.kind == EventKind::Track {
                    touched |= self.apply_track(ev, at, vocab);
                }
            }
        }
        touched
    }

    /// Folds an event into the filtered and summed aggregates that rules need.
    /// Order-independent like [`ProfileState::apply`].
    pub fn apply_aggregates(&mut self, ev: &Event, aggs: &kairos_rules::Aggregates) {
        let Some(name) = ev.activity_name() else {
            return;
        };
        for spec in &aggs.specs {
            if spec.is_plain() || spec.event != name {
                continue;
            }
            let view = kairos_rules::EventRef {
                name: Some(name),
                kind: ev.kind.as_str(),
                timestamp: ev.timestamp,
                properties: &ev.properties,
            };
            if spec.filter.as_ref().is_some_and(|f| !f.matches(view)) {
                continue;
            }
            let value = spec
                .property
                .as_ref()
                .and_then(|p| number(kairos_rules::lookup(&ev.properties, p)))
                .unwrap_or(0.0);
            self.aggregates
                .get_or_insert_with(&spec.key, SumCounter::default)
                .add_value(ev.timestamp, value);
        }
    }

    fn record_hour(&mut self, ev: &Event) {
        let local = ev
            .context_timezone()
            .and_then(time_zone)
            .and_then(|tz| hour_of_week(ev.timestamp, &tz));
        match local {
            Some(h) => self.hours_local.add(h),
            None => {
                if let Some(h) = hour_of_week(ev.timestamp, &jiff::tz::TimeZone::UTC) {
                    self.hours_utc.add(h)
                }
            }
        }
    }

    fn apply_traits(&mut self, traits: &Map<String, Value>, at: Stamp) {
        for (k, v) in traits {
            lww_map(&mut self.traits, k, at, Json(v.clone()));
            match (k.as_str(), v) {
                ("unsubscribed", Value::Bool(b)) => {
                    lww_map(&mut self.subscriptions, "marketing", at, !b)
                }
                ("subscriptions", Value::Object(m)) => {
                    for (list, state) in m {
                        if let Some(f) = flag(state) {
                            lww_map(&mut self.subscriptions, list, at, f);
                        }
                    }
                }
                ("consent", Value::Object(m)) => {
                    for (purpose, state) in m {
                        if let Some(f) = flag(state) {
                            lww_map(&mut self.consent, purpose, at, f);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Returns the groups of fields it wrote ([`Touched`]).
    fn apply_track(&mut self, ev: &Event, at: Stamp, vocab: &Vocabulary) -> u16 {
        let Some(name) = ev.event.as_deref() else {
            return 0;
        };
        let p = &ev.properties;
        let ts = ev.timestamp;
        if vocab.is_order(name) {
            self.orders += 1;
            let revenue = number(p.get("revenue"))
                .or_else(|| number(p.get("total")))
                .or_else(|| number(p.get("value")))
                .unwrap_or(0.0);
            self.revenue_micros = self.revenue_micros.saturating_add(to_micros(revenue));
            self.first_order = Some(self.first_order.map_or(ts, |t| t.min(ts)));
            max_opt(&mut self.last_order, ts);
            self.cart.clear(at);
            Touched::ORDERS | Touched::CART
        } else if vocab.is_cart_add(name) {
            if let Some(product) = product_id(p) {
                self.cart.add(
                    &product,
                    CartAdd {
                        at,
                        quantity: number(p.get("quantity"))
                            .map(|q| q.clamp(1.0, 1e6) as u32)
                            .unwrap_or(1),
                        price_micros: number(p.get("price")).map(to_micros).unwrap_or(0),
                        name: text(p.get("name")),
                        category: text(p.get("category")),
                    },
                );
            }
            Touched::CART
        } else if vocab.is_cart_remove(name) {
            if let Some(product) = product_id(p) {
                self.cart.remove(&product, at);
            }
            Touched::CART
        } else if vocab.is_email_delivered(name) {
            self.email.delivered += 1;
            max_opt(&mut self.email.last_delivered, ts);
            Touched::EMAIL
        } else if vocab.is_email_opened(name) {
            self.email.opened += 1;
            max_opt(&mut self.email.last_opened, ts);
            Touched::EMAIL
        } else if vocab.is_email_clicked(name) {
            self.email.clicked += 1;
            max_opt(&mut self.email.last_clicked, ts);
            Touched::EMAIL
        } else if vocab.is_email_bounced(name) {
            self.email.bounced += 1;
            let kind = text(p.get("type"))
                .or_else(|| text(p.get("bounce_type")))
                .unwrap_or_default()
                .to_ascii_lowercase();
            if kind == "hard" || kind == "permanent" {
                lww(&mut self.suppressed, at, "hard_bounce".to_string());
            }
            Touched::EMAIL | Touched::SUPPRESSED
        } else if vocab.is_spam_complaint(name) {
            self.email.complained += 1;
            lww(&mut self.suppressed, at, "spam_complaint".to_string());
            lww_map(&mut self.subscriptions, "marketing", at, false);
            Touched::EMAIL | Touched::SUPPRESSED | Touched::SUBSCRIPTIONS
        } else if vocab.is_unsubscribe(name) {
            self.email.unsubscribed += 1;
            let list = text(p.get("list")).unwrap_or_else(|| "marketing".into());
            lww_map(&mut self.subscriptions, &list, at, false);
            Touched::EMAIL | Touched::SUBSCRIPTIONS
        } else if vocab.is_subscribe(name) {
            let list = text(p.get("list")).unwrap_or_else(|| "marketing".into());
            lww_map(&mut self.subscriptions, &list, at, true);
            Touched::SUBSCRIPTIONS
        } else if vocab.is_consent(name) {
            if let Some(Value::Object(m)) = p.get("purposes") {
                for (purpose, state) in m {
                    if let Some(f) = flag(state) {
                        lww_map(&mut self.consent, purpose, at, f);
                    }
                }
            } else if let (Some(purpose), Some(granted)) =
                (text(p.get("purpose")), p.get("granted").and_then(flag))
            {
                lww_map(&mut self.consent, &purpose, at, granted);
            }
            Touched::SUBSCRIPTIONS
        } else {
            0
        }
    }

    /// A trait's current value (null and absent are the same).
    pub fn trait_value(&self, name: &str) -> Option<&Value> {
        self.traits
            .get(name)
            .map(|s| &s.value.0)
            .filter(|v| !v.is_null())
    }

    /// The person's time zone: the `timezone` trait if valid, else the newest one their
    /// devices reported.
    pub fn timezone(&self) -> Option<&str> {
        self.trait_value("timezone")
            .and_then(Value::as_str)
            .filter(|tz| time_zone(tz).is_some())
            .or_else(|| self.context_timezone.as_ref().map(|s| s.value.as_str()))
    }

    /// Activity by local hour of week. Events that carried no zone are shifted by the
    /// profile's current zone offset at `now` (an approximation across DST changes).
    pub fn hour_of_week_local(&self, now: Millis) -> [u32; 168] {
        let mut out = self.hours_local.dense();
        let offset_hours = self
            .timezone()
            .and_then(time_zone)
            .and_then(|tz| {
                let ts = jiff::Timestamp::from_millisecond(now).ok()?;
                Some(tz.to_offset(ts).seconds() as i64 / 3600)
            })
            .unwrap_or(0);
        for (h, c) in &self.hours_utc.0 {
            let local = (*h as i64 + offset_hours).rem_euclid(168) as usize;
            if let Some(slot) = out.get_mut(local) {
                *slot += c;
            }
        }
        out
    }

    /// Is the person subscribed to `list`? Unknown means subscribed only for `transactional`.
    pub fn is_subscribed(&self, list: &str) -> Option<bool> {
        self.subscriptions.get(list).map(|s| s.value)
    }

    /// Approximate heap bytes, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let traits: usize = self
            .traits
            .iter()
            .map(|(k, v)| k.len() + v.value.0.to_string().len() + 64)
            .sum();
        let activity: usize = self
            .activity
            .iter()
            .map(|(k, c)| k.len() + c.heap_bytes() + 96)
            .sum();
        traits
            + activity
            + self.cart.lines.len() * 128
            + (self.hours_local.0.capacity() + self.hours_utc.0.capacity()) * 8
    }

    /// The computed state as JSON for the profile API, with windows evaluated at `now`.
    pub fn view(&self, now: Millis) -> Value {
        use crate::time::{format_timestamp as iso, DAY, HOUR};
        let opt_iso = |t: Option<Millis>| t.map(iso);
        let traits: Map<String, Value> = self
            .traits
            .iter()
            .filter(|(_, v)| !v.value.0.is_null())
            .map(|(k, v)| (k.to_string(), v.value.0.clone()))
            .collect();
        let events: Map<String, Value> = self
            .activity
            .iter()
            .map(|(name, c)| {
                (
                    name.to_string(),
                    json!({
                        "total": c.total,
                        "first": iso(c.first),
                        "last": iso(c.last),
                        "last1h": c.count_within(HOUR, now),
                        "last24h": c.count_within(DAY, now),
                        "last7d": c.count_within(7 * DAY, now),
                        "last30d": c.count_within(30 * DAY, now),
                    }),
                )
            })
            .collect();
        let items = self.cart.items();
        let hours = self.hour_of_week_local(now);
        let hours_map: Map<String, Value> = hours
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(h, c)| (h.to_string(), json!(c)))
            .collect();
        let flags = |m: &VecMap<Stamped<bool>>| -> Map<String, Value> {
            m.iter()
                .map(|(k, v)| (k.to_string(), json!(v.value)))
                .collect()
        };
        json!({
            "traits": traits,
            "firstSeen": opt_iso(self.first_seen),
            "lastSeen": opt_iso(self.last_seen),
            "eventCount": self.event_count,
            "events": events,
            "orders": self.orders,
            "lifetimeRevenue": self.revenue_micros as f64 / 1e6,
            "firstPurchase": opt_iso(self.first_order),
            "lastPurchase": opt_iso(self.last_order),
            "cart": {
                "items": items.iter().map(|i| json!({
                    "productId": i.product_id,
                    "quantity": i.quantity,
                    "price": i.price_micros as f64 / 1e6,
                    "name": i.name,
                    "category": i.category,
                    "addedAt": iso(i.added_at),
                })).collect::<Vec<_>>(),
                "value": self.cart.value_micros() as f64 / 1e6,
            },
            "email": {
                "delivered": self.email.delivered,
                "opened": self.email.opened,
                "clicked": self.email.clicked,
                "bounced": self.email.bounced,
                "complained": self.email.complained,
                "unsubscribed": self.email.unsubscribed,
                "lastDelivered": opt_iso(self.email.last_delivered),
                "lastOpened": opt_iso(self.email.last_opened),
                "lastClicked": opt_iso(self.email.last_clicked),
            },
            "timezone": self.timezone(),
            "hourOfWeek": hours_map,
            "subscriptions": flags(&self.subscriptions),
            "consent": flags(&self.consent),
            "suppressed": self.suppressed.as_ref().map(|s| s.value.clone()),
            "groups": self.groups,
        })
    }
}

fn product_id(p: &Map<String, Value>) -> Option<String> {
    text(p.get("product_id"))
        .or_else(|| text(p.get("productId")))
        .or_else(|| text(p.get("sku")))
        .or_else(|| text(p.get("id")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_values_round_trip_through_the_binary_encoding() {
        let v = serde_json::json!({
            "n": null, "t": true, "u": u64::MAX, "i": -42, "f": 0.1, "big": 1e300,
            "s": "gr\u{fc}\u{df}e \"quoted\"", "empty": {}, "list": [1, [2, [3, {"deep": []}]], "x"],
        });
        let bytes = postcard::to_allocvec(&super::Json(v.clone())).expect("encodes");
        let back: super::Json = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back.0, v);
        // Smaller than the JSON text it replaced.
        assert!(bytes.len() < v.to_string().len());
    }

    use super::*;
    use crate::event::{Event, EventKind};
    use crate::time::parse_timestamp;
    use serde_json::json;

    fn track(id: &str, name: &str, at: &str, props: Value) -> Event {
        Event {
            message_id: id.into(),
            kind: EventKind::Track,
            event: Some(name.into()),
            name: None,
            user_id: Some("u".into()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: parse_timestamp(at).expect("time"),
            received_at: 0,
            properties: props.as_object().cloned().unwrap_or_default(),
            traits: Map::new(),
            context: Map::new(),
            source: String::new(),
        }
    }

    #[test]
    fn consent_subscriptions_and_suppression_follow_event_time() {
        let v = Vocabulary::default();
        let mut s = ProfileState::default();
        let mut identify = track("i", "", "2026-01-01T00:00:00Z", json!({}));
        identify.kind = EventKind::Identify;
        identify.event = None;
        identify.traits = json!({"subscriptions": {"marketing": "subscribed", "product": true},
                                 "consent": {"analytics": "granted"}})
        .as_object()
        .cloned()
        .unwrap_or_default();
        // The unsubscribe happened after the identify but arrives first.
        s.apply(
            &track("u1", "Unsubscribed", "2026-01-02T00:00:00Z", json!({})),
            &v,
        );
        s.apply(&identify, &v);
        assert_eq!(s.is_subscribed("marketing"), Some(false));
        assert_eq!(s.is_subscribed("product"), Some(true));
        assert_eq!(s.consent.get("analytics").map(|c| c.value), Some(true));
        s.apply(
            &track(
                "c1",
                "Consent Updated",
                "2026-01-03T00:00:00Z",
                json!({"purpose": "analytics", "granted": false}),
            ),
            &v,
        );
        assert_eq!(s.consent.get("analytics").map(|c| c.value), Some(false));
        assert!(s.suppressed.is_none());
        s.apply(
            &track(
                "b1",
                "Email Bounced",
                "2026-01-04T00:00:00Z",
                json!({"type": "soft"}),
            ),
            &v,
        );
        assert!(s.suppressed.is_none(), "a soft bounce does not suppress");
        s.apply(
            &track(
                "b2",
                "Email Bounced",
                "2026-01-05T00:00:00Z",
                json!({"type": "hard"}),
            ),
            &v,
        );
        assert_eq!(
            s.suppressed.as_ref().map(|x| x.value.as_str()),
            Some("hard_bounce")
        );
        assert_eq!(s.email.bounced, 2);
    }

    #[test]
    fn cart_is_what_was_added_since_the_last_order_minus_removals() {
        let v = Vocabulary::default();
        let mut s = ProfileState::default();
        let add = |id: &str, at: &str, p: &str| {
            track(
                id,
                "Added to Cart",
                at,
                json!({"product_id": p, "price": "12.50", "quantity": 2}),
            )
        };
        s.apply(&add("a1", "2026-01-01T10:00:00Z", "p1"), &v);
        s.apply(
            &track(
                "o1",
                "Order Completed",
                "2026-01-01T11:00:00Z",
                json!({"revenue": 25}),
            ),
            &v,
        );
        s.apply(&add("a2", "2026-01-01T12:00:00Z", "p2"), &v);
        s.apply(&add("a3", "2026-01-01T12:05:00Z", "p3"), &v);
        s.apply(
            &track(
                "r1",
                "Removed from Cart",
                "2026-01-01T12:10:00Z",
                json!({"product_id": "p3"}),
            ),
            &v,
        );
        let items = s.cart.items();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].product_id.as_str(), items[0].quantity), ("p2", 2));
        assert_eq!(s.cart.value_micros(), 25_000_000);
        assert_eq!(s.orders, 1);
        assert_eq!(s.revenue_micros, 25_000_000);
    }

    #[test]
    fn hour_of_week_uses_the_senders_zone_or_the_profile_zone() {
        let v = Vocabulary::default();
        let mut s = ProfileState::default();
        // Monday 2026-03-09 14:00 UTC = 10:00 in New York (EDT) = hour 10 of the week.
        let mut e = track("h1", "Product Viewed", "2026-03-09T14:00:00Z", json!({}));
        e.context
            .insert("timezone".into(), json!("America/New_York"));
        s.apply(&e, &v);
        // No zone on this one: kept by UTC hour and shifted by the profile's zone when read.
        s.apply(
            &track("h2", "Product Viewed", "2026-03-09T15:00:00Z", json!({})),
            &v,
        );
        let hours = s.hour_of_week_local(parse_timestamp("2026-03-10T00:00:00Z").expect("t"));
        assert_eq!(hours[10], 1);
        assert_eq!(hours[11], 1, "15:00 UTC shifted by the profile's -4h");
        assert_eq!(s.timezone(), Some("America/New_York"));
    }
}
