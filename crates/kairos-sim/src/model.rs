//! The shop: catalog, people with latent traits, and the day-by-day event generator.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

const CATEGORIES: [&str; 12] = [
    "shoes",
    "outerwear",
    "electronics",
    "books",
    "home",
    "beauty",
    "toys",
    "sports",
    "garden",
    "kitchen",
    "jewelry",
    "music",
];
/// The category whose products complement a category's (indexes into CATEGORIES): shoes
/// go with outerwear, electronics with music, books with home, beauty with jewelry, ...
const COMPLEMENT_OF: [usize; 12] = [1, 0, 11, 4, 9, 10, 3, 0, 4, 4, 5, 2];
/// Complements per product.
const COMPLEMENTS: usize = 3;
const BRANDS: [&str; 10] = [
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
];
/// Zones with rough population weights of a shop selling worldwide.
const ZONES: [(&str, u32); 10] = [
    ("America/New_York", 18),
    ("America/Chicago", 9),
    ("America/Los_Angeles", 11),
    ("America/Sao_Paulo", 6),
    ("Europe/London", 10),
    ("Europe/Berlin", 14),
    ("Europe/Moscow", 9),
    ("Asia/Kolkata", 8),
    ("Asia/Tokyo", 8),
    ("Australia/Sydney", 7),
];
const COUNTRIES: [&str; 10] = ["US", "US", "US", "BR", "GB", "DE", "RU", "IN", "JP", "AU"];
const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Alan", "Linus", "Olga", "Ivan", "Mei", "Ravi", "Sofia", "Lucas", "Yuki",
    "Noah",
];
/// Local hours when people tend to be receptive: before work, lunch, evening, late night.
const PEAKS: [u8; 6] = [7, 12, 13, 19, 21, 23];

#[derive(Clone, Debug, Serialize)]
pub struct Product {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub brand: String,
    pub price: f64,
    /// Relative popularity (Zipf-like).
    pub popularity: f64,
    /// Products bought with this one (a lens for a camera): the ground truth of the
    /// co-purchase structure recommendations should find. Indexes into the catalog.
    #[serde(skip)]
    pub complements: Vec<usize>,
}

/// What the simulator knows about a person and the engine must discover.
#[derive(Clone, Debug, Serialize)]
pub struct PersonTruth {
    pub index: usize,
    pub anonymous_id: String,
    pub user_id: Option<String>,
    /// Day (0-based) on which the person signs up, if ever.
    pub signup_day: Option<u32>,
    pub email: String,
    pub timezone: String,
    /// Local hours (0-23) at which the person is active and reads email.
    pub preferred_hours: Vec<u8>,
    /// Latent purchase intent in [0, 1].
    pub intent: f64,
    /// Propensity to open marketing email in [0, 1].
    pub email_propensity: f64,
    /// Apple Mail Privacy Protection: a machine opens every email within seconds.
    pub machine_opens: bool,
    pub favourite_categories: Vec<String>,
    /// Day on which marketing email stops, and why (unsubscribe, spam complaint, hard bounce).
    pub email_stop: Option<(u32, String)>,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub people: usize,
    pub days: u32,
    pub seed: u64,
    /// First simulated instant (ms since the epoch).
    pub start_ms: i64,
}

/// One generated event: its instant and its Segment JSON.
#[derive(Clone, Debug)]
pub struct SimEvent {
    pub ts: i64,
    pub value: Value,
    /// True for an open made by a privacy proxy rather than a person (truth only; the event
    /// itself does not say so).
    pub machine_open: bool,
}

pub struct Simulation {
    pub config: SimConfig,
    pub catalog: Vec<Product>,
    pub people: Vec<PersonTruth>,
    zones: Vec<TimeZone>,
}

fn order(a: &SimEvent, b: &SimEvent) -> std::cmp::Ordering {
    a.ts.cmp(&b.ts).then_with(|| {
        a.value["messageId"]
            .as_str()
            .cmp(&b.value["messageId"].as_str())
    })
}

fn rng_for(seed: u64, parts: &[u64]) -> StdRng {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    for p in parts {
        h.update(&p.to_le_bytes());
    }
    StdRng::seed_from_u64(h.digest())
}

fn uuid_like(rng: &mut StdRng) -> String {
    let a: u128 = rng.random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The current instant as RFC 3339 with milliseconds (for `sentAt`).
pub fn iso_now() -> String {
    format!("{:.3}", Timestamp::now())
}

pub fn iso(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

impl Simulation {
    pub fn new(config: SimConfig) -> Self {
        let mut rng = rng_for(config.seed, &[0]);
        let n_products = (config.people / 8).clamp(200, 2000);
        let catalog: Vec<Product> = (0..n_products)
            .map(|i| {
                let category = CATEGORIES[i % CATEGORIES.len()];
                let base: f64 = rng.random_range(2.0f64..6.0);
                Product {
                    product_id: format!("prod-{i:05}"),
                    sku: format!("SKU-{:05}", i * 7 + 3),
                    name: format!("{} {} #{i}", BRANDS[i % BRANDS.len()], category),
                    category: category.to_string(),
                    brand: BRANDS[(i / 3) % BRANDS.len()].to_string(),
                    price: (base.exp() * 100.0).round() / 100.0,
                    popularity: 1.0 / (1.0 + i as f64).powf(0.8),
                    complements: Vec::new(),
                }
            })
            .collect();
        // Each product's complements: products of the complementary category, popular ones
        // more often (an own random stream, so the rest of the simulation is unchanged).
        let mut catalog = catalog;
        let n_cats = CATEGORIES.len();
        for i in 0..catalog.len() {
            let mut r = rng_for(config.seed, &[3, i as u64]);
            let target = COMPLEMENT_OF[i % n_cats];
            let in_target = catalog.len().saturating_sub(target).div_ceil(n_cats);
            let mut picks = Vec::new();
            for _ in 0..COMPLEMENTS * 4 {
                if picks.len() >= COMPLEMENTS || in_target == 0 {
                    break;
                }
                let k = (r.random::<f64>().powf(1.5) * in_target as f64) as usize;
                let j = target + k.min(in_target - 1) * n_cats;
                if j != i && !picks.contains(&j) {
                    picks.push(j);
                }
            }
            catalog[i].complements = picks;
        }
        let zone_total: u32 = ZONES.iter().map(|(_, w)| w).sum();
        let people: Vec<PersonTruth> = (0..config.people)
            .map(|i| {
                let mut r = rng_for(config.seed, &[1, i as u64]);
                let mut pick = r.random_range(0..zone_total);
                let mut zone = 0;
                for (z, (_, w)) in ZONES.iter().enumerate() {
                    if pick < *w {
                        zone = z;
                        break;
                    }
                    pick -= w;
                }
                let n_peaks = if r.random_bool(0.4) { 2 } else { 1 };
                let mut preferred_hours: Vec<u8> = (0..n_peaks)
                    .map(|_| {
                        let p = PEAKS[r.random_range(0..PEAKS.len())] as i32;
                        (p + r.random_range(-1..=1)).rem_euclid(24) as u8
                    })
                    .collect();
                preferred_hours.sort();
                preferred_hours.dedup();
                // Mostly low intent, a long tail of likely buyers.
                let intent = r.random::<f64>().powf(2.5);
                let signup_day = if r.random_bool(0.75) {
                    Some(if r.random_bool(0.6) {
                        0
                    } else {
                        r.random_range(0..config.days.max(1))
                    })
                } else {
                    None
                };
                let name = FIRST_NAMES[i % FIRST_NAMES.len()];
                let email = match r.random_range(0..10) {
                    0 => format!("  {}.{i}@Example.COM ", name),
                    1 => format!("{}{i}@EXAMPLE.com", name.to_uppercase()),
                    _ => format!("{}.{i}@example.com", name.to_lowercase()),
                };
                let c1 = r.random_range(0..CATEGORIES.len());
                let c2 = (c1 + r.random_range(1..CATEGORIES.len())) % CATEGORIES.len();
                PersonTruth {
                    index: i,
                    anonymous_id: uuid_like(&mut r),
                    user_id: signup_day.map(|_| format!("u_{i}")),
                    signup_day,
                    email,
                    timezone: ZONES[zone].0.to_string(),
                    preferred_hours,
                    intent,
                    email_propensity: r.random_range(0.05..0.7),
                    machine_opens: r.random_bool(0.12),
                    favourite_categories: vec![CATEGORIES[c1].into(), CATEGORIES[c2].into()],
                    email_stop: match r.random_range(0..1000) {
                        0..=59 => {
                            Some((r.random_range(0..config.days.max(1)), "unsubscribe".into()))
                        }
                        60..=64 => {
                            Some((r.random_range(0..config.days.max(1)), "hard_bounce".into()))
                        }
                        65 => Some((r.random_range(0..config.days.max(1)), "spam".into())),
                        _ => None,
                    },
                }
            })
            .collect();
        let zones = ZONES
            .iter()
            .map(|(z, _)| TimeZone::get(z).unwrap_or(TimeZone::UTC))
            .collect();
        Self {
            config,
            catalog,
            people,
            zones,
        }
    }

    fn zone(&self, p: &PersonTruth) -> &TimeZone {
        let i = ZONES
            .iter()
            .position(|(z, _)| *z == p.timezone)
            .unwrap_or(0);
        &self.zones[i]
    }

    /// Each person's index by every id their events carry (the anonymous id, and the user
    /// id once they have one): what identity resolution would join, for harnesses that fold
    /// people's events without a store.
    pub fn person_by_id(&self) -> std::collections::HashMap<String, usize> {
        let mut out = std::collections::HashMap::new();
        for p in &self.people {
            out.insert(p.anonymous_id.clone(), p.index);
            if let Some(u) = &p.user_id {
                out.insert(u.clone(), p.index);
            }
        }
        out
    }

    /// Local hour (0-23) of an instant for a person.
    pub fn local_hour(&self, p: &PersonTruth, ms: i64) -> u8 {
        Timestamp::from_millisecond(ms)
            .map(|t| self.zone(p).to_datetime(t).hour() as u8)
            .unwrap_or(0)
    }

    /// The UTC instant of local `hour` (fractional) on simulated day `day` for a person: the
    /// day is the calendar date of the day's UTC start, taken in the person's zone (DST-correct).
    fn local_instant(&self, p: &PersonTruth, day: u32, hour: f64) -> i64 {
        let day_start = self.config.start_ms + day as i64 * DAY;
        let midnight = Timestamp::from_millisecond(day_start)
            .ok()
            .and_then(|t| {
                let date = t.to_zoned(TimeZone::UTC).date();
                date.to_zoned(self.zone(p).clone()).ok()
            })
            .map(|z| z.timestamp().as_millisecond())
            .unwrap_or(day_start);
        midnight + (hour * HOUR as f64) as i64
    }

    fn product(&self, r: &mut StdRng, p: &PersonTruth) -> &Product {
        // Two thirds of views in the person's favourite categories, popularity-weighted.
        let favour = r.random_bool(0.66);
        for _ in 0..8 {
            let i = (r.random::<f64>().powf(2.2) * self.catalog.len() as f64) as usize;
            let prod = &self.catalog[i.min(self.catalog.len() - 1)];
            if !favour || p.favourite_categories.contains(&prod.category) {
                return prod;
            }
        }
        &self.catalog[r.random_range(0..self.catalog.len())]
    }

    /// All events of one simulated day, in timestamp order.
    pub fn day(&self, day: u32) -> Vec<SimEvent> {
        let mut out = Vec::new();
        for p in &self.people {
            self.person_day(p, day, &mut out);
        }
        out.sort_by(order);
        out
    }

    /// Every event of the simulation in timestamp order, generated day by day.
    ///
    /// A simulated day's events spill over its UTC edges (local days start up to 12 hours
    /// earlier in eastern zones; opens can come the next day), so events are held back until
    /// no later day can produce anything earlier: at most about two days are in memory.
    pub fn events(&self) -> impl Iterator<Item = SimEvent> + '_ {
        let mut pending: Vec<SimEvent> = Vec::new();
        let mut day = 0u32;
        let mut ready: std::collections::VecDeque<SimEvent> = Default::default();
        std::iter::from_fn(move || loop {
            if let Some(e) = ready.pop_front() {
                return Some(e);
            }
            if day >= self.config.days {
                if pending.is_empty() {
                    return None;
                }
                ready.extend(pending.drain(..));
                continue;
            }
            pending.extend(self.day(day));
            day += 1;
            pending.sort_by(order);
            let watermark = if day >= self.config.days {
                i64::MAX
            } else {
                self.config.start_ms + day as i64 * DAY - 13 * HOUR
            };
            let cut = pending.partition_point(|e| e.ts < watermark);
            ready.extend(pending.drain(..cut));
        })
    }

    fn person_day(&self, p: &PersonTruth, day: u32, out: &mut Vec<SimEvent>) {
        let mut r = rng_for(self.config.seed, &[2, p.index as u64, day as u64]);
        let mut n = 0u32;
        let signed_up = p.signup_day.is_some_and(|s| s <= day);
        let mut emit = |ts: i64, mut v: Value, machine_open: bool, with_user: bool| {
            n += 1;
            v["messageId"] = json!(format!("sim-{}-{}-{day}-{n}", self.config.seed, p.index));
            v["timestamp"] = json!(iso(ts));
            v["anonymousId"] = json!(p.anonymous_id);
            if with_user {
                if let Some(u) = &p.user_id {
                    v["userId"] = json!(u);
                }
            }
            let ctx = v["context"]
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut ctx = serde_json::Value::Object(ctx);
            ctx["library"] =
                json!({"name": "kairos-simulate", "version": env!("CARGO_PKG_VERSION")});
            if !p.index.is_multiple_of(7) {
                ctx["timezone"] = json!(p.timezone);
            }
            ctx["ip"] = json!(format!("203.0.113.{}", p.index % 250));
            ctx["userAgent"] = json!("Mozilla/5.0 (kairos-simulate)");
            v["context"] = ctx;
            out.push(SimEvent {
                ts,
                value: v,
                machine_open,
            });
        };
        let weekday_factor = {
            let dow = ((self.config.start_ms + day as i64 * DAY).div_euclid(DAY) + 3).rem_euclid(7);
            if dow >= 5 {
                1.3
            } else {
                1.0
            }
        };
        // Recent email clicks raise the chance to shop (the signal campaigns exploit).
        let clicked_recently = r.random_bool((p.email_propensity * 0.15).min(1.0));
        let activity = (0.12 + 0.9 * p.intent) * weekday_factor;
        let mut sessions = 0;
        while r.random_bool((activity / (1.0 + sessions as f64)).min(0.95)) && sessions < 4 {
            sessions += 1;
        }
        if p.signup_day == Some(day) && sessions == 0 {
            sessions = 1;
        }
        for s in 0..sessions {
            let peak = p.preferred_hours[r.random_range(0..p.preferred_hours.len())] as f64;
            let hour = (peak
                + r.random_range(-0.9..0.9)
                + if s > 0 {
                    r.random_range(-3.0..3.0)
                } else {
                    0.0
                })
            .rem_euclid(24.0);
            let mut t = self.local_instant(p, day, hour);
            let step = |r: &mut StdRng, t: &mut i64| *t += r.random_range(15_000..150_000);
            // On the signup day the visit starts anonymous; identify comes next.
            let known_at_start = signed_up && !(p.signup_day == Some(day) && s == 0);
            emit(
                t,
                json!({"type": "page", "name": "Home", "properties": {"path": "/", "title": "Home"}}),
                false,
                known_at_start,
            );
            if p.signup_day == Some(day) && s == 0 {
                step(&mut r, &mut t);
                let mut traits = json!({"email": p.email, "country": COUNTRIES[ZONES.iter().position(|(z, _)| *z == p.timezone).unwrap_or(0)],
                    "timezone": p.timezone, "plan": if p.intent > 0.5 { "pro" } else { "free" }, "created_at": iso(t),
                    // Signing up opts in to marketing email (it stops on their stop day).
                    "subscriptions": {"marketing": "subscribed"}});
                if !p.index.is_multiple_of(5) {
                    traits["first_name"] = json!(FIRST_NAMES[p.index % FIRST_NAMES.len()]);
                }
                emit(
                    t,
                    json!({"type": "identify", "traits": traits}),
                    false,
                    true,
                );
            }
            let signed_up = p.signup_day.is_some_and(|d| d <= day);
            let mut boost = p.intent;
            if clicked_recently {
                boost = (boost * 1.5 + 0.05).min(1.0);
            }
            let views = 1 + (r.random::<f64>() * (2.0 + 6.0 * boost)) as usize;
            let mut cart: Vec<&Product> = Vec::new();
            // Products added from the main stream; complements below come from their own
            // random stream and must not change the main stream's draws.
            let mut main_adds = 0usize;
            for _ in 0..views {
                step(&mut r, &mut t);
                let prod = self.product(&mut r, p);
                emit(
                    t,
                    json!({"type": "track", "event": "Product Viewed", "properties": {
                    "product_id": prod.product_id, "sku": prod.sku, "name": prod.name, "category": prod.category,
                    "brand": prod.brand, "price": prod.price, "currency": "USD"}}),
                    false,
                    signed_up,
                );
                if r.random_bool((0.04 + 0.35 * boost).min(0.9)) {
                    step(&mut r, &mut t);
                    let qty = if r.random_bool(0.8) { 1 } else { 2 };
                    emit(
                        t,
                        json!({"type": "track", "event": "Added to Cart", "properties": {
                        "product_id": prod.product_id, "sku": prod.sku, "name": prod.name, "category": prod.category,
                        "price": prod.price, "quantity": qty, "cart_id": format!("cart-{}-{day}", p.index)}}),
                        false,
                        signed_up,
                    );
                    cart.push(prod);
                    main_adds += 1;
                    // Half the time the shopper then looks at something that goes with it,
                    // and often takes it too.
                    let mut rc = rng_for(
                        self.config.seed,
                        &[4, p.index as u64, day as u64, s as u64, main_adds as u64],
                    );
                    if !prod.complements.is_empty() && rc.random_bool(0.5) {
                        let c = &self.catalog
                            [prod.complements[rc.random_range(0..prod.complements.len())]];
                        t += rc.random_range(15_000..90_000);
                        emit(
                            t,
                            json!({"type": "track", "event": "Product Viewed", "properties": {
                            "product_id": c.product_id, "sku": c.sku, "name": c.name, "category": c.category,
                            "brand": c.brand, "price": c.price, "currency": "USD"}}),
                            false,
                            signed_up,
                        );
                        if rc.random_bool(0.6) {
                            t += rc.random_range(15_000..90_000);
                            emit(
                                t,
                                json!({"type": "track", "event": "Added to Cart", "properties": {
                                "product_id": c.product_id, "sku": c.sku, "name": c.name, "category": c.category,
                                "price": c.price, "quantity": 1, "cart_id": format!("cart-{}-{day}", p.index)}}),
                                false,
                                signed_up,
                            );
                            cart.push(c);
                        }
                    }
                }
            }
            if main_adds > 1 && r.random_bool(0.15) {
                step(&mut r, &mut t);
                if let Some(prod) = cart.pop() {
                    emit(
                        t,
                        json!({"type": "track", "event": "Removed from Cart", "properties": {"product_id": prod.product_id, "sku": prod.sku}}),
                        false,
                        signed_up,
                    );
                }
            }
            if !cart.is_empty() && r.random_bool((0.2 + 0.6 * boost).min(0.95)) {
                step(&mut r, &mut t);
                let total: f64 = cart.iter().map(|c| c.price).sum();
                emit(
                    t,
                    json!({"type": "track", "event": "Checkout Started", "properties": {"value": total, "currency": "USD"}}),
                    false,
                    signed_up,
                );
                // Carts are abandoned often; likely buyers finish.
                if r.random_bool((0.25 + 0.65 * boost).min(0.95)) {
                    step(&mut r, &mut t);
                    let total = (total * 100.0).round() / 100.0;
                    let products: Vec<Value> = cart
                        .iter()
                        .map(|c| {
                            json!({"product_id": c.product_id, "sku": c.sku, "name": c.name,
                        "category": c.category, "price": c.price, "quantity": 1})
                        })
                        .collect();
                    emit(
                        t,
                        json!({"type": "track", "event": "Order Completed", "properties": {
                        "order_id": format!("ord-{}-{day}-{s}", p.index), "revenue": total, "total": total,
                        "currency": "USD", "products": products}}),
                        false,
                        signed_up,
                    );
                }
            }
        }
        // Marketing email: 2-4 a week to signed-up, subscribed people, at random times of
        // day, so send-time models can be evaluated against the truth.
        let stop = p.email_stop.as_ref();
        let stopped = stop.is_some_and(|(d, _)| *d < day);
        let stop_today = stop.filter(|(d, _)| *d == day).map(|(_, k)| k.as_str());
        if !signed_up || stopped || !(stop_today.is_some() || r.random_bool(3.0 / 7.0)) {
            return;
        }
        let day_start = self.config.start_ms + day as i64 * DAY;
        let sent = day_start + r.random_range(0..DAY);
        let msg = format!("em-{}-{}-{day}", self.config.seed, p.index);
        let campaign =
            ["weekly-digest", "new-arrivals", "sale", "recommendations"][r.random_range(0..4)];
        let props = json!({"message_id": msg, "campaign": campaign, "subject": format!("{campaign} for you")});
        emit(
            sent,
            json!({"type": "track", "event": "Email Delivered", "properties": props}),
            false,
            true,
        );
        if stop_today == Some("hard_bounce") {
            emit(
                sent + 2_000,
                json!({"type": "track", "event": "Email Bounced", "properties": {"message_id": msg, "type": "hard"}}),
                false,
                true,
            );
            return;
        }
        if p.machine_opens {
            emit(
                sent + r.random_range(1_000..10_000),
                json!({"type": "track", "event": "Email Opened", "properties": {"message_id": msg, "campaign": campaign}}),
                true,
                true,
            );
        }
        // A person opens at (or after) one of their preferred hours; far more likely when the
        // email arrives near one.
        let local = self.local_hour(p, sent) as i32;
        let dist = p
            .preferred_hours
            .iter()
            .map(|h| {
                let d = (local - *h as i32).rem_euclid(24);
                d.min(24 - d)
            })
            .min()
            .unwrap_or(12);
        let p_open = p.email_propensity * if dist <= 1 { 1.0 } else { 0.3 };
        let opens = stop_today.is_some() || r.random_bool(p_open.min(1.0));
        if !opens {
            return;
        }
        let open = if dist <= 1 {
            sent + r.random_range(2 * MINUTE..50 * MINUTE)
        } else {
            // At the next preferred hour.
            let mut t = sent;
            while !p.preferred_hours.contains(&self.local_hour(p, t)) && t < sent + DAY {
                t += 10 * MINUTE;
            }
            t + r.random_range(0..40 * MINUTE)
        };
        emit(
            open,
            json!({"type": "track", "event": "Email Opened", "properties": {"message_id": msg, "campaign": campaign}}),
            false,
            true,
        );
        match stop_today {
            Some("unsubscribe") => {
                emit(
                    open + 60_000,
                    json!({"type": "track", "event": "Unsubscribed", "properties": {"message_id": msg, "list": "marketing"}}),
                    false,
                    true,
                );
            }
            Some(_) => {
                emit(
                    open + 60_000,
                    json!({"type": "track", "event": "Marked as Spam", "properties": {"message_id": msg}}),
                    false,
                    true,
                );
            }
            None => {
                if r.random_bool(0.3) {
                    emit(
                        open + r.random_range(20_000..240_000),
                        json!({"type": "track", "event": "Email Clicked", "properties": {"message_id": msg, "campaign": campaign, "url": "https://shop.example/sale"}}),
                        false,
                        true,
                    );
                }
            }
        }
    }
}
