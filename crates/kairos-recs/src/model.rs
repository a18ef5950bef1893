//! The model: an immutable [`Snapshot`] built from interactions and the catalog, and the
//! recommendation request against it.
//!
//! # Scoring
//! A request has seeds: the cart's products (`context = cart`, complements for abandoned
//! carts) or the person's recent products (`context = browse`, weighted by kind and decayed
//! with `session_half_life_hours`). A candidate `c` scores
//!
//! ```text
//! score(c) = sum over seeds s of w(s) * (cf_weight * cf(s, c) + content_weight * content(s, c))
//!            / sum of w(s)  +  popularity_weight * popularity(c) / max popularity
//!            (+ category_weight * popularity(c) * the seeds' weight share in c's category)
//! ```
//!
//! A seed with fewer than `cold_item_support` people behind it is cold: its collaborative
//! neighbours are noise, so its whole weight goes to content similarity. In the cart
//! context co-views and content similarity (substitutes) count half: a cart wants
//! complements, which co-carts and co-purchases find. A person with no seeds (cold) gets the
//! blend of popularity and trending (decayed counts with a short half-life); a list that is
//! still short is filled with what is popular in the seeds' categories, then overall.
//!
//! # Filters and diversity
//! Never recommended: out-of-stock products, products in the cart, products bought within
//! `exclude_purchased_days`, and in the browse context products the person already
//! interacted with. Diversity: greedy selection where each product already chosen from a
//! category multiplies the next one's score by `1 - diversity`, and at most
//! `max_per_category` (default half the list, rounded up) come from one category.
//! Ties are broken by product id, so results are deterministic.

use crate::catalog::Item;
use crate::interaction::{Interactions, Kind};
use crate::knn::{self, KnnParams, Neighbours, PersonItems};
use crate::{content, RecsError};
use kairos_core::time::{DAY, HOUR};
use kairos_core::Millis;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Model settings (`[recommendations.model]` in the server's TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecsConfig {
    pub view_weight: f32,
    pub cart_weight: f32,
    pub purchase_weight: f32,
    /// Half-life of an interaction's weight in similarities and popularity.
    pub half_life_days: f64,
    /// Half-life of the trending counts.
    pub trending_half_life_days: f64,
    /// Interactions older than this are not used.
    pub history_days: f64,
    /// A person's strongest products kept for similarities.
    pub max_items_per_person: usize,
    /// Neighbours kept per product (collaborative and content lists each).
    pub neighbours: usize,
    /// Support shrinkage: similarity times n / (n + shrink).
    pub shrink: f32,
    /// Candidates each product visits for content similarity.
    pub content_budget: usize,
    pub cf_weight: f32,
    pub content_weight: f32,
    pub popularity_weight: f32,
    /// Weight of "popular in the person's categories": popularity times the share of the
    /// seeds' weight in the candidate's category.
    pub category_weight: f32,
    /// Products with fewer people behind them use content similarity only.
    pub cold_item_support: u32,
    /// 0 = no diversity, 1 = at most one product per category while others remain.
    pub diversity: f32,
    /// Hard cap per category; 0 = half the list, rounded up.
    pub max_per_category: usize,
    pub exclude_purchased_days: f64,
    /// Recommend only products in the catalog (else products seen in events count too).
    pub require_catalog: bool,
    /// Recent distinct products used as seeds in the browse context.
    pub seeds: usize,
    pub session_half_life_hours: f64,
    /// Threads used to build similarities.
    pub threads: usize,
}

impl Default for RecsConfig {
    fn default() -> Self {
        Self {
            view_weight: 1.0,
            cart_weight: 3.0,
            purchase_weight: 5.0,
            half_life_days: 30.0,
            trending_half_life_days: 3.0,
            history_days: 180.0,
            max_items_per_person: 100,
            neighbours: 50,
            shrink: 3.0,
            content_budget: 2000,
            cf_weight: 1.0,
            content_weight: 0.1,
            popularity_weight: 0.02,
            category_weight: 0.0,
            cold_item_support: 2,
            diversity: 0.3,
            max_per_category: 0,
            exclude_purchased_days: 30.0,
            require_catalog: false,
            seeds: 20,
            session_half_life_hours: 72.0,
            threads: 2,
        }
    }
}

fn days(d: f64) -> Millis {
    (d.max(0.0) * DAY as f64) as Millis
}

impl RecsConfig {
    pub fn validate(&self) -> Result<(), RecsError> {
        let checks: [(&str, bool); 12] = [
            ("view_weight", self.view_weight >= 0.0),
            ("cart_weight", self.cart_weight >= 0.0),
            ("purchase_weight", self.purchase_weight >= 0.0),
            ("half_life_days", self.half_life_days > 0.0),
            (
                "trending_half_life_days",
                self.trending_half_life_days > 0.0,
            ),
            ("history_days", self.history_days > 0.0),
            ("neighbours", (1..=1000).contains(&self.neighbours)),
            ("max_items_per_person", self.max_items_per_person >= 2),
            ("shrink", self.shrink >= 0.0),
            ("diversity", (0.0..=1.0).contains(&self.diversity)),
            ("threads", (1..=64).contains(&self.threads)),
            (
                "session_half_life_hours",
                self.session_half_life_hours > 0.0,
            ),
        ];
        for (field, ok) in checks {
            if !ok {
                return Err(RecsError::invalid(field, "is out of range"));
            }
        }
        for (field, v) in [
            ("cf_weight", self.cf_weight),
            ("content_weight", self.content_weight),
            ("popularity_weight", self.popularity_weight),
            ("category_weight", self.category_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(RecsError::invalid(field, "must be a number >= 0"));
            }
        }
        Ok(())
    }

    pub fn kind_weight(&self, k: Kind) -> f32 {
        match k {
            Kind::View => self.view_weight,
            Kind::Cart => self.cart_weight,
            Kind::Purchase => self.purchase_weight,
        }
    }

    fn knn_params(&self) -> KnnParams {
        KnnParams {
            weights: [self.view_weight, self.cart_weight, self.purchase_weight],
            half_life: days(self.half_life_days).max(1),
            max_items_per_person: self.max_items_per_person,
            neighbours: self.neighbours,
            shrink: self.shrink,
            threads: self.threads,
        }
    }
}

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    /// Complements of the cart's products (abandoned-cart emails).
    Cart,
    /// More like what the person looked at and bought lately.
    Browse,
}

impl Context {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cart" => Some(Self::Cart),
            "browse" => Some(Self::Browse),
            _ => None,
        }
    }
}

/// Which scores a request uses: the hybrid serves; the others are evaluated beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Hybrid,
    ItemKnn,
    Content,
    Popularity,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Hybrid,
        Method::ItemKnn,
        Method::Content,
        Method::Popularity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Hybrid => "hybrid",
            Method::ItemKnn => "item_knn",
            Method::Content => "content",
            Method::Popularity => "popularity",
        }
    }
}

/// Why a product was recommended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Reason {
    /// People who bought `with` bought this.
    CoPurchase {
        with: String,
    },
    /// People who put `with` in their cart put this in theirs.
    CoCart {
        with: String,
    },
    /// People who looked at `with` looked at this.
    CoView {
        with: String,
    },
    /// Its attributes are like those of `to`.
    Similar {
        to: String,
    },
    /// Popular in a category of the person's products.
    PopularInCategory {
        category: String,
    },
    Popular,
    Trending,
}

impl Reason {
    /// A sentence for people (the template variable's `reason_text`).
    pub fn describe(&self, title: impl Fn(&str) -> String) -> String {
        match self {
            Reason::CoPurchase { with } => format!("often bought with {}", title(with)),
            Reason::CoCart { with } => format!("often in a cart with {}", title(with)),
            Reason::CoView { with } => format!("people who viewed {} viewed this", title(with)),
            Reason::Similar { to } => format!("similar to {}", title(to)),
            Reason::PopularInCategory { category } => format!("popular in {category}"),
            Reason::Popular => "popular".to_string(),
            Reason::Trending => "trending".to_string(),
        }
    }
}

/// One product a person interacted with, as a request gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seen<'a> {
    pub item: &'a str,
    pub kind: Kind,
    pub ts: Millis,
}

/// A recommendation request.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The person's interactions, oldest first.
    pub history: &'a [Seen<'a>],
    /// Products in the person's cart now.
    pub cart: &'a [&'a str],
    pub context: Context,
    pub n: usize,
    pub now: Millis,
    pub method: Method,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub item: Arc<Item>,
    pub score: f32,
    pub reason: Reason,
}

/// A product of the snapshot.
#[derive(Clone, Debug)]
struct Entry {
    item: Arc<Item>,
    in_catalog: bool,
    /// Category index (`u32::MAX`: none).
    category: u32,
}

/// Figures about a build.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BuildStats {
    pub products: usize,
    pub catalog_products: usize,
    pub people: usize,
    pub interactions: usize,
    pub cf_pairs: usize,
    pub content_pairs: usize,
    pub built_at: Millis,
    pub cf_ms: u64,
    pub content_ms: u64,
}

/// An immutable model: neighbour lists, popularity and the products, ready to serve.
#[derive(Clone, Debug)]
pub struct Snapshot {
    config: RecsConfig,
    entries: Vec<Entry>,
    index: FxHashMap<String, u32>,
    categories: Vec<String>,
    cf: Neighbours,
    content: Neighbours,
    support: Vec<u32>,
    /// Normalised to the most popular product = 1.
    popularity: Vec<f32>,
    trending: Vec<f32>,
    /// Recommendable products by descending popularity / trending blend (cold people).
    popular: Vec<u32>,
    /// Recommendable products by descending popularity, per category.
    popular_by_category: Vec<Vec<u32>>,
    stats: BuildStats,
}

/// How long a step of the build took, in milliseconds; the clock is the caller's concern,
/// so the build takes a timer function (tests and pure callers pass one that returns 0).
pub type Timer<'a> = &'a dyn Fn() -> u64;

impl Snapshot {
    /// An empty model (before the first build): recommends nothing.
    pub fn empty(config: RecsConfig) -> Self {
        Self::build(&Interactions::default(), &[], config, 0, &|| 0)
    }

    /// Builds the model from interactions and the catalog at `now`.
    pub fn build(
        interactions: &Interactions,
        catalog: &[Item],
        config: RecsConfig,
        now: Millis,
        timer: Timer,
    ) -> Self {
        let people = interactions.people();
        Self::build_from(interactions, &people, catalog, config, now, timer)
    }

    /// Like [`Snapshot::build`], from an explicit list of people's interactions (already
    /// extracted, so the caller can release a lock on `interactions` before the heavy part;
    /// `interactions` is then only read for product ids and event metadata).
    pub fn build_from(
        interactions: &Interactions,
        people: &[(u64, &[crate::interaction::Rec])],
        catalog: &[Item],
        config: RecsConfig,
        now: Millis,
        timer: Timer,
    ) -> Self {
        let by_id: FxHashMap<&str, &Item> = catalog.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut entries: Vec<Entry> = Vec::with_capacity(interactions.item_ids().len());
        let mut index: FxHashMap<String, u32> = FxHashMap::default();
        // Products in id order (the interner's order is arrival order), so that ties in
        // neighbour lists fall the same way whatever order the events came in.
        let ids = interactions.item_ids();
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by(|a, b| ids[*a as usize].cmp(&ids[*b as usize]));
        let mut remap = vec![0u32; ids.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        for &i in &order {
            let id = &ids[i as usize];
            let i = remap[i as usize];
            let (item, in_catalog) = match by_id.get(id.as_str()) {
                Some(it) => ((*it).clone(), true),
                None => (
                    interactions
                        .meta(order[i as usize])
                        .cloned()
                        .unwrap_or_else(|| Item {
                            id: id.clone(),
                            title: id.clone(),
                            category: None,
                            brand: None,
                            price: None,
                            tags: Vec::new(),
                            in_stock: true,
                            image_url: None,
                            url: None,
                        }),
                    false,
                ),
            };
            index.insert(id.clone(), i as u32);
            entries.push(Entry {
                item: Arc::new(item),
                in_catalog,
                category: u32::MAX,
            });
        }
        let n_interned = entries.len();
        let mut catalog_only: Vec<&Item> = catalog
            .iter()
            .filter(|i| !index.contains_key(&i.id))
            .collect();
        catalog_only.sort_by(|a, b| a.id.cmp(&b.id));
        catalog_only.dedup_by(|a, b| a.id == b.id);
        for item in catalog_only {
            index.insert(item.id.clone(), entries.len() as u32);
            entries.push(Entry {
                item: Arc::new(item.clone()),
                in_catalog: true,
                category: u32::MAX,
            });
        }
        let mut categories: Vec<String> = Vec::new();
        let mut cat_index: FxHashMap<String, u32> = FxHashMap::default();
        for e in &mut entries {
            if let Some(c) = &e.item.category {
                let next = categories.len() as u32;
                e.category = *cat_index.entry(c.clone()).or_insert_with(|| {
                    categories.push(c.clone());
                    next
                });
            }
        }
        let n = entries.len();
        let cutoff = now - days(config.history_days);
        let recent: Vec<&[crate::interaction::Rec]> = people
            .iter()
            .map(|(_, recs)| {
                let cut = recs.partition_point(|r| r.ts < cutoff);
                &recs[cut..]
            })
            .collect();
        let params = config.knn_params();
        let t0 = timer();
        let pi = PersonItems::build(recent.iter().copied(), &remap, &params, now);
        let (cf, mut support) = knn::compute(&pi, n_interned, &params);
        support.resize(n, 0);
        let t1 = timer();
        // Popularity: each person counts at most their strongest interaction per product,
        // so one visitor reloading a page a hundred times is one visitor.
        let mut popularity = vec![0f32; n];
        let mut trending = vec![0f32; n];
        let hl = days(config.half_life_days).max(1) as f64;
        let thl = days(config.trending_half_life_days).max(1) as f64;
        let mut best: FxHashMap<u32, (f32, f32)> = FxHashMap::default();
        for recs in &recent {
            best.clear();
            for r in recs.iter() {
                let age = (now - r.ts).max(0) as f64;
                let w = config.kind_weight(r.kind) as f64;
                let (p, t) = (
                    (w * (-age / hl).exp2()) as f32,
                    (w * (-age / thl).exp2()) as f32,
                );
                let Some(&item) = remap.get(r.item as usize) else {
                    continue;
                };
                let e = best.entry(item).or_insert((0.0, 0.0));
                e.0 = e.0.max(p);
                e.1 = e.1.max(t);
            }
            for (&i, &(p, t)) in &best {
                if let (Some(a), Some(b)) =
                    (popularity.get_mut(i as usize), trending.get_mut(i as usize))
                {
                    *a += p;
                    *b += t;
                }
            }
        }
        normalise(&mut popularity);
        normalise(&mut trending);
        let t2 = timer();
        let items: Vec<Option<&Item>> = entries.iter().map(|e| Some(e.item.as_ref())).collect();
        let content = content::compute(
            &items,
            &popularity,
            config.neighbours,
            config.content_budget,
            config.threads,
        );
        let t3 = timer();
        let recommendable = |i: usize| {
            let e = &entries[i];
            e.item.in_stock && (e.in_catalog || !config.require_catalog)
        };
        let by_id_order = |a: &u32, b: &u32| {
            entries[*a as usize]
                .item
                .id
                .cmp(&entries[*b as usize].item.id)
        };
        let blend = |i: u32| 0.5 * popularity[i as usize] + 0.5 * trending[i as usize];
        let mut popular: Vec<u32> = (0..n as u32)
            .filter(|&i| recommendable(i as usize) && blend(i) > 0.0)
            .collect();
        popular.sort_by(|a, b| blend(*b).total_cmp(&blend(*a)).then(by_id_order(a, b)));
        popular.truncate(2000);
        let mut popular_by_category: Vec<Vec<u32>> = vec![Vec::new(); categories.len()];
        for i in 0..n {
            let c = entries[i].category;
            if c != u32::MAX && recommendable(i) && popularity[i] > 0.0 {
                popular_by_category[c as usize].push(i as u32);
            }
        }
        for list in &mut popular_by_category {
            list.sort_by(|a, b| {
                popularity[*b as usize]
                    .total_cmp(&popularity[*a as usize])
                    .then(by_id_order(a, b))
            });
            list.truncate(200);
        }
        let stats = BuildStats {
            products: n,
            catalog_products: entries.iter().filter(|e| e.in_catalog).count(),
            people: pi.people(),
            interactions: recent.iter().map(|r| r.len()).sum(),
            cf_pairs: cf.pairs(),
            content_pairs: content.pairs(),
            built_at: now,
            cf_ms: t1.saturating_sub(t0),
            content_ms: t3.saturating_sub(t2),
        };
        Self {
            config,
            entries,
            index,
            categories,
            cf,
            content,
            support,
            popularity,
            trending,
            popular,
            popular_by_category,
            stats,
        }
    }

    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }

    pub fn config(&self) -> &RecsConfig {
        &self.config
    }

    pub fn item(&self, id: &str) -> Option<&Arc<Item>> {
        self.index.get(id).map(|&i| &self.entries[i as usize].item)
    }

    /// Number of products the model knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A product's collaborative neighbours (id, similarity, relation), best first.
    pub fn similar(&self, id: &str) -> Vec<(&str, f32, Kind)> {
        let Some(&i) = self.index.get(id) else {
            return Vec::new();
        };
        self.cf
            .of(i)
            .map(|(j, s, src)| {
                (
                    self.entries[j as usize].item.id.as_str(),
                    s,
                    knn::source_kind(src),
                )
            })
            .collect()
    }

    fn recommendable(&self, i: u32) -> bool {
        let e = &self.entries[i as usize];
        e.item.in_stock && (e.in_catalog || !self.config.require_catalog)
    }

    fn id(&self, i: u32) -> &str {
        &self.entries[i as usize].item.id
    }

    /// The products to recommend, best first (at most `n`, fewer when filters leave fewer).
    pub fn recommend(&self, req: &Request) -> Vec<Recommendation> {
        let cfg = &self.config;
        let n = req.n.min(100);
        if n == 0 {
            return Vec::new();
        }
        // Exclusions.
        let mut excluded: FxHashSet<u32> = FxHashSet::default();
        let cart: Vec<u32> = req
            .cart
            .iter()
            .filter_map(|id| self.index.get(*id).copied())
            .collect();
        excluded.extend(&cart);
        let bought_since = req.now - days(cfg.exclude_purchased_days);
        for s in req.history {
            let Some(&i) = self.index.get(s.item) else {
                continue;
            };
            if (s.kind == Kind::Purchase && s.ts >= bought_since) || req.context == Context::Browse
            {
                excluded.insert(i);
            }
        }
        // Seeds.
        let mut seeds: Vec<(u32, f32)> = Vec::new();
        let context = if req.context == Context::Cart && !cart.is_empty() {
            seeds.extend(cart.iter().map(|&i| (i, 1.0)));
            Context::Cart
        } else {
            let hl = (cfg.session_half_life_hours * HOUR as f64).max(1.0);
            let mut w: FxHashMap<u32, f32> = FxHashMap::default();
            let mut order: Vec<u32> = Vec::new();
            for s in req.history.iter().rev() {
                let Some(&i) = self.index.get(s.item) else {
                    continue;
                };
                let age = (req.now - s.ts).max(0) as f64;
                let x = cfg.kind_weight(s.kind) as f64 * (-age / hl).exp2();
                match w.get_mut(&i) {
                    Some(v) => *v += x as f32,
                    None => {
                        if order.len() >= cfg.seeds.max(1) {
                            continue;
                        }
                        order.push(i);
                        w.insert(i, x as f32);
                    }
                }
            }
            seeds.extend(order.iter().map(|i| (*i, w[i])));
            Context::Browse
        };
        let (cf_w, ct_w, pop_w) = match req.method {
            Method::Hybrid => (cfg.cf_weight, cfg.content_weight, cfg.popularity_weight),
            Method::ItemKnn => (1.0, 0.0, 0.0),
            Method::Content => (0.0, 1.0, 0.0),
            Method::Popularity => (0.0, 0.0, 1.0),
        };
        // The seeds' weight by category, as shares (the hybrid's category popularity).
        let mut cat_share: FxHashMap<u32, f32> = FxHashMap::default();
        let cat_w = if req.method == Method::Hybrid {
            cfg.category_weight
        } else {
            0.0
        };
        if cat_w > 0.0 {
            let total: f32 = seeds.iter().map(|s| s.1).sum::<f32>().max(1e-12);
            for &(s, w) in &seeds {
                let c = self.entries[s as usize].category;
                if c != u32::MAX {
                    *cat_share.entry(c).or_default() += w / total;
                }
            }
        }
        let mut cands: FxHashMap<u32, Cand> = FxHashMap::default();
        cands.reserve(seeds.len() * 64);
        let total_w: f32 = seeds.iter().map(|s| s.1).sum::<f32>().max(1e-12);
        let mut add = |j: u32, contrib: f32, seed: u32, source: u8| {
            let c = cands.entry(j).or_insert(Cand {
                score: 0.0,
                best: -1.0,
                seed,
                source,
            });
            c.score += contrib / total_w;
            if contrib > c.best {
                c.best = contrib;
                c.seed = seed;
                c.source = source;
            }
        };
        // Many seeds: each one's best neighbours are enough (bounds the work per request).
        let per_seed = if seeds.len() > 5 { 20 } else { usize::MAX };
        if req.method != Method::Popularity {
            for &(s, w) in &seeds {
                let cold =
                    self.support.get(s as usize).copied().unwrap_or(0) < cfg.cold_item_support;
                let (a, b) = match req.method {
                    Method::Hybrid if cold => (0.0, cf_w + ct_w),
                    _ => (cf_w, ct_w),
                };
                if a > 0.0 {
                    for (j, sim, src) in self.cf.of(s).take(per_seed) {
                        let f = if context == Context::Cart && src == Kind::View as u8 {
                            0.5
                        } else {
                            1.0
                        };
                        add(j, w * a * sim * f, s, src);
                    }
                }
                if b > 0.0 {
                    let f = if context == Context::Cart { 0.5 } else { 1.0 };
                    for (j, sim, _) in self.content.of(s).take(per_seed) {
                        add(j, w * b * sim * f, s, CONTENT);
                    }
                }
            }
        }
        // Popular products of the seeds' categories are candidates too.
        for &c in cat_share.keys() {
            for &j in self.popular_by_category[c as usize].iter().take(50) {
                cands.entry(j).or_insert(Cand {
                    score: 0.0,
                    best: 0.0,
                    seed: j,
                    source: POPULAR_IN_CATEGORY,
                });
            }
        }
        let mut scored: Vec<Pick> = Vec::with_capacity(cands.len());
        for (j, c) in cands {
            if excluded.contains(&j) || !self.recommendable(j) {
                continue;
            }
            let pop = self.popularity[j as usize];
            let cat = self.entries[j as usize].category;
            let share = cat_share.get(&cat).copied().unwrap_or(0.0);
            let by_cat = cat_w * share * pop;
            scored.push(Pick {
                item: j,
                score: c.score + pop_w * pop + by_cat,
                seed: c.seed,
                // Named after what found it, unless category popularity carried it.
                source: if by_cat > c.score {
                    POPULAR_IN_CATEGORY
                } else {
                    c.source
                },
            });
        }
        if req.method == Method::Popularity {
            for &j in &self.popular {
                if !excluded.contains(&j) {
                    scored.push(Pick {
                        item: j,
                        score: self.popularity[j as usize],
                        seed: j,
                        source: POPULAR,
                    });
                }
                if scored.len() >= n * 20 {
                    break;
                }
            }
        }
        let scored = self.best(scored, (n * 20).max(100));
        let mut out = self.diversify(scored, n);
        if req.method == Method::Hybrid && out.len() < n {
            self.fill(&mut out, &seeds, &excluded, n);
        }
        out.into_iter()
            .map(|p| Recommendation {
                item: self.entries[p.item as usize].item.clone(),
                score: p.score,
                reason: self.reason(&p),
            })
            .collect()
    }

    fn reason(&self, p: &Pick) -> Reason {
        let with = || self.id(p.seed).to_string();
        match p.source {
            CONTENT => Reason::Similar { to: with() },
            POPULAR => Reason::Popular,
            TRENDING => Reason::Trending,
            POPULAR_IN_CATEGORY => Reason::PopularInCategory {
                category: self
                    .categories
                    .get(self.entries[p.item as usize].category as usize)
                    .cloned()
                    .unwrap_or_default(),
            },
            2 => Reason::CoPurchase { with: with() },
            1 => Reason::CoCart { with: with() },
            _ => Reason::CoView { with: with() },
        }
    }

    fn order(&self, a: &Pick, b: &Pick) -> std::cmp::Ordering {
        b.score
            .total_cmp(&a.score)
            .then_with(|| self.id(a.item).cmp(self.id(b.item)))
    }

    /// The `m` best, in rank order (selection first: only those are sorted).
    fn best(&self, mut v: Vec<Pick>, m: usize) -> Vec<Pick> {
        if v.len() > m && m > 0 {
            v.select_nth_unstable_by(m - 1, |a, b| self.order(a, b));
            v.truncate(m);
        }
        v.sort_unstable_by(|a, b| self.order(a, b));
        v
    }

    /// Greedy category-diverse selection of `n` from `ranked` (best first).
    fn diversify(&self, ranked: Vec<Pick>, n: usize) -> Vec<Pick> {
        let cap = match self.config.max_per_category {
            0 => n.div_ceil(2),
            c => c,
        };
        let keep = 1.0 - self.config.diversity;
        let mut left: Vec<Option<Pick>> = ranked.into_iter().map(Some).collect();
        let mut per_cat: FxHashMap<u32, usize> = FxHashMap::default();
        let mut out = Vec::with_capacity(n);
        for relax in [false, true] {
            while out.len() < n {
                let mut best: Option<(usize, f32)> = None;
                for (x, c) in left.iter().enumerate() {
                    let Some(p) = c else { continue };
                    let cat = self.entries[p.item as usize].category;
                    let k = if cat == u32::MAX {
                        0
                    } else {
                        per_cat.get(&cat).copied().unwrap_or(0)
                    };
                    if !relax && k >= cap {
                        continue;
                    }
                    let eff = p.score * keep.powi(k as i32);
                    // `left` is in rank order, so the first of equal scores wins (id order).
                    if best.is_none_or(|(_, b)| eff > b) {
                        best = Some((x, eff));
                    }
                }
                let Some((x, _)) = best else { break };
                if let Some(p) = left[x].take() {
                    let cat = self.entries[p.item as usize].category;
                    if cat != u32::MAX {
                        *per_cat.entry(cat).or_default() += 1;
                    }
                    out.push(p);
                }
            }
        }
        out
    }

    /// Fills a short list: popular in the seeds' categories first, then popular overall.
    fn fill(&self, out: &mut Vec<Pick>, seeds: &[(u32, f32)], excluded: &FxHashSet<u32>, n: usize) {
        let mut taken: FxHashSet<u32> = out.iter().map(|p| p.item).collect();
        let floor = out.last().map_or(1.0, |p| p.score);
        let mut cats: Vec<u32> = Vec::new();
        for &(s, _) in seeds {
            let c = self.entries[s as usize].category;
            if c != u32::MAX && !cats.contains(&c) {
                cats.push(c);
            }
        }
        let mut extra: Vec<Pick> = Vec::new();
        for &c in &cats {
            for &j in self.popular_by_category[c as usize].iter().take(n * 4) {
                if !excluded.contains(&j) && taken.insert(j) {
                    extra.push(Pick {
                        item: j,
                        score: self.popularity[j as usize],
                        seed: j,
                        source: POPULAR_IN_CATEGORY,
                    });
                }
            }
        }
        let extra = self.best(extra, usize::MAX);
        let need = n - out.len();
        let mut picked = self.diversify(extra, need);
        if out.len() + picked.len() < n {
            let mut rest: Vec<Pick> = Vec::new();
            for &j in &self.popular {
                if rest.len() >= n * 20 {
                    break;
                }
                if excluded.contains(&j) || taken.contains(&j) {
                    continue;
                }
                let (p, t) = (self.popularity[j as usize], self.trending[j as usize]);
                rest.push(Pick {
                    item: j,
                    score: 0.5 * p + 0.5 * t,
                    seed: j,
                    source: if t > p { TRENDING } else { POPULAR },
                });
            }
            // `popular` is already in blend order.
            picked.extend(self.diversify(rest, n - out.len() - picked.len()));
        }
        // Fallbacks rank below everything the person's own products found.
        let cold = out.is_empty() && seeds.is_empty();
        let mut next = floor.min(1.0) * 0.5;
        for mut p in picked {
            if !cold {
                p.score = next;
            }
            next *= 0.99;
            out.push(p);
        }
    }
}

/// A candidate while a request is scored: the reason is made only for the winners.
#[derive(Clone, Copy, Debug)]
struct Pick {
    item: u32,
    score: f32,
    /// The seed that contributed most (the product itself for fallbacks).
    seed: u32,
    /// A relation (0 view, 1 cart, 2 purchase) or one of the constants below.
    source: u8,
}

#[derive(Clone, Copy)]
struct Cand {
    score: f32,
    best: f32,
    seed: u32,
    source: u8,
}

const CONTENT: u8 = u8::MAX;
const POPULAR: u8 = u8::MAX - 1;
const TRENDING: u8 = u8::MAX - 2;
const POPULAR_IN_CATEGORY: u8 = u8::MAX - 3;

fn normalise(v: &mut [f32]) {
    let max = v.iter().copied().fold(0.0f32, f32::max);
    if max > 0.0 {
        for x in v.iter_mut() {
            *x /= max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Millis = 1_000 * DAY;

    fn item(id: &str, cat: &str, in_stock: bool) -> Item {
        Item::from_json(
            Some(id),
            &json!({"title": id.to_uppercase(), "category": cat, "in_stock": in_stock}),
        )
        .expect("valid")
    }

    /// A small shop: cameras are bought with lenses and bags; tents with sleeping bags;
    /// `hat` is popular with everyone; `new-lens` is in the catalog with no history.
    fn shop() -> (Interactions, Vec<Item>) {
        let mut h = Interactions::new(100);
        let t = NOW - DAY;
        for p in 0..10u64 {
            h.push(p, "camera", Kind::Purchase, t);
            h.push(p, "lens", Kind::Purchase, t);
            if p % 2 == 0 {
                h.push(p, "bag", Kind::Cart, t);
            }
        }
        for p in 10..16u64 {
            h.push(p, "tent", Kind::Purchase, t);
            h.push(p, "sleeping-bag", Kind::Purchase, t);
        }
        for p in 0..20u64 {
            h.push(p, "hat", Kind::Cart, t);
        }
        let catalog = vec![
            item("camera", "cameras", true),
            item("lens", "lenses", true),
            item("new-lens", "lenses", true),
            item("bag", "bags", true),
            item("tent", "tents", true),
            item("sleeping-bag", "outdoor", false),
            item("hat", "apparel", true),
        ];
        (h, catalog)
    }

    fn snapshot() -> Snapshot {
        let (h, c) = shop();
        Snapshot::build(&h, &c, RecsConfig::default(), NOW, &|| 0)
    }

    fn ids(r: &[Recommendation]) -> Vec<&str> {
        r.iter().map(|x| x.item.id.as_str()).collect()
    }

    fn cart_request<'a>(cart: &'a [&'a str], history: &'a [Seen<'a>], n: usize) -> Request<'a> {
        Request {
            history,
            cart,
            context: Context::Cart,
            n,
            now: NOW,
            method: Method::Hybrid,
        }
    }

    #[test]
    fn cart_complements_come_from_co_purchases() {
        let s = snapshot();
        let r = s.recommend(&cart_request(&["camera"], &[], 3));
        assert_eq!(ids(&r)[0], "lens", "{r:?}");
        assert_eq!(
            r[0].reason,
            Reason::CoPurchase {
                with: "camera".into()
            }
        );
        assert!(ids(&r).contains(&"bag"));
        assert!(
            !ids(&r).contains(&"camera"),
            "the cart's own products are excluded"
        );
        let text = r[0]
            .reason
            .describe(|id| s.item(id).map_or(id.to_string(), |i| i.title.clone()));
        assert_eq!(text, "often bought with CAMERA");
    }

    #[test]
    fn out_of_stock_and_just_bought_are_never_recommended() {
        let s = snapshot();
        let r = s.recommend(&cart_request(&["tent"], &[], 6));
        assert!(!ids(&r).contains(&"sleeping-bag"), "out of stock: {r:?}");
        let bought = [Seen {
            item: "lens",
            kind: Kind::Purchase,
            ts: NOW - 2 * DAY,
        }];
        let r = s.recommend(&cart_request(&["camera"], &bought, 6));
        assert!(!ids(&r).contains(&"lens"), "bought two days ago: {r:?}");
        let long_ago = [Seen {
            item: "lens",
            kind: Kind::Purchase,
            ts: NOW - 90 * DAY,
        }];
        let r = s.recommend(&cart_request(&["camera"], &long_ago, 6));
        assert!(
            ids(&r).contains(&"lens"),
            "bought months ago may be again: {r:?}"
        );
    }

    #[test]
    fn cold_items_use_content_and_cold_people_get_popular() {
        let s = snapshot();
        // `new-lens` has no history: its recommendations come from content (same category).
        let r = s.recommend(&cart_request(&["new-lens"], &[], 3));
        assert_eq!(ids(&r)[0], "lens", "{r:?}");
        assert_eq!(
            r[0].reason,
            Reason::Similar {
                to: "new-lens".into()
            }
        );
        // Nobody: popular and trending, best first.
        let r = s.recommend(&Request {
            history: &[],
            cart: &[],
            context: Context::Browse,
            n: 3,
            now: NOW,
            method: Method::Hybrid,
        });
        assert_eq!(ids(&r)[0], "hat");
        assert!(matches!(r[0].reason, Reason::Popular | Reason::Trending));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn browse_excludes_what_was_seen_and_fills_the_list() {
        let s = snapshot();
        let seen = [Seen {
            item: "camera",
            kind: Kind::View,
            ts: NOW - HOUR,
        }];
        let r = s.recommend(&Request {
            history: &seen,
            cart: &[],
            context: Context::Browse,
            n: 6,
            now: NOW,
            method: Method::Hybrid,
        });
        assert_eq!(ids(&r)[0], "lens");
        assert!(!ids(&r).contains(&"camera"));
        // Filled with popular products up to what the filters leave: not the camera (seen),
        // the sleeping bag (out of stock) or the new lens (nobody wanted it yet).
        assert_eq!(ids(&r), vec!["lens", "hat", "bag", "tent"], "{r:?}");
        assert_eq!(r[3].reason, Reason::Popular);
        for w in r.windows(2) {
            assert!(w[0].score >= w[1].score, "{r:?}");
        }
    }

    #[test]
    fn diversity_caps_a_category() {
        let mut h = Interactions::new(100);
        let mut catalog = vec![item("seed", "x", true)];
        for i in 0..6 {
            catalog.push(item(&format!("a{i}"), "a", true));
            catalog.push(item(&format!("b{i}"), "b", true));
        }
        for p in 0..30u64 {
            h.push(p, "seed", Kind::Purchase, NOW);
            // The a-products are more often bought with the seed than the b-products.
            for i in 0..6 {
                if p < 20 {
                    h.push(p, &format!("a{i}"), Kind::Purchase, NOW);
                }
                if p < 10 {
                    h.push(p, &format!("b{i}"), Kind::Purchase, NOW);
                }
            }
        }
        let mut cfg = RecsConfig {
            diversity: 0.0,
            max_per_category: 100,
            ..RecsConfig::default()
        };
        let plain = Snapshot::build(&h, &catalog, cfg.clone(), NOW, &|| 0);
        let r = plain.recommend(&cart_request(&["seed"], &[], 4));
        assert_eq!(ids(&r), vec!["a0", "a1", "a2", "a3"]);
        cfg.max_per_category = 0;
        let capped = Snapshot::build(&h, &catalog, cfg.clone(), NOW, &|| 0);
        let r = capped.recommend(&cart_request(&["seed"], &[], 4));
        assert_eq!(ids(&r), vec!["a0", "a1", "b0", "b1"]);
        cfg.diversity = 1.0;
        let spread = Snapshot::build(&h, &catalog, cfg, NOW, &|| 0);
        let r = spread.recommend(&cart_request(&["seed"], &[], 4));
        let cats: Vec<_> = r.iter().map(|x| x.item.category.clone()).collect();
        assert_ne!(cats[0], cats[1], "{r:?}");
    }

    #[test]
    fn deterministic_whatever_the_insertion_order() {
        let (h, c) = shop();
        let mut rev = Interactions::new(100);
        // The same interactions, persons in the opposite order.
        for p in h.person_keys().into_iter().rev() {
            for r in h.history(p) {
                rev.push(p, h.item_id(r.item), r.kind, r.ts);
            }
        }
        let mut c2 = c.clone();
        c2.reverse();
        let a = Snapshot::build(&h, &c, RecsConfig::default(), NOW, &|| 0);
        let b = Snapshot::build(&rev, &c2, RecsConfig::default(), NOW, &|| 0);
        for cart in [["camera"], ["tent"], ["hat"], ["new-lens"]] {
            let x = a.recommend(&cart_request(&cart, &[], 6));
            let y = b.recommend(&cart_request(&cart, &[], 6));
            assert_eq!(ids(&x), ids(&y));
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = RecsConfig {
            diversity: 2.0,
            ..RecsConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(RecsError::invalid("diversity", "is out of range"))
        );
        assert!(RecsConfig::default().validate().is_ok());
    }
}
