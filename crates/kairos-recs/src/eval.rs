//! Leave-last-out evaluation of every method on a history of interactions.
//!
//! For each person, the held-out product is the one they came to last (whose first
//! interaction is the latest); everything the person did from then on is removed from
//! training, everyone else's history stays. The model is built once from the remaining
//! interactions; each method then recommends `k` products from the person's earlier
//! history, as of the moment before the held-out product (browse context: products the
//! person already interacted with are excluded, as they would be in an email). People
//! with no earlier history are not counted (every method falls back to popularity for
//! them). Metrics:
//!
//! - **HR@k**: the share of people whose held-out product is among the `k`;
//! - **NDCG@k**: `1 / log2(1 + rank)` of the held-out product (0 when absent), averaged;
//! - **coverage**: the share of the catalog that appears in anyone's list.
//!
//! With `target = Kind::Cart` only products the person went on to put in the cart or buy
//! can be held out (the one among them reached last): "what will they want next", the
//! question an abandoned-cart or post-purchase email asks. `Kind::View` holds out any.

use crate::catalog::Item;
use crate::interaction::{Interactions, Kind};
use crate::model::{Context, Method, RecsConfig, Request, Seen, Snapshot};
use kairos_core::Millis;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// One person's interactions: (product, kind, time).
pub type History = Vec<(String, Kind, Millis)>;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodResult {
    pub method: &'static str,
    pub hr: f64,
    pub ndcg: f64,
    pub coverage: f64,
    /// Mean number of products recommended (a method can find fewer than k).
    pub mean_list: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The least kind of interaction a held-out product needed (view: any).
    pub target: Kind,
    pub k: usize,
    pub people: usize,
    pub evaluated: usize,
    pub products: usize,
    pub interactions: usize,
    pub methods: Vec<MethodResult>,
}

struct Case {
    train: usize,
    target: String,
    at: Millis,
}

/// Splits one history (sorted by time here) into the training prefix and the target: the
/// product first reached last among those with an interaction of at least `min` kind.
fn split(h: &mut History, min: Kind) -> Option<Case> {
    h.sort_by(|a, b| a.2.cmp(&b.2).then(a.1.cmp(&b.1)));
    let mut first: FxHashMap<&str, usize> = FxHashMap::default();
    let mut strong: FxHashSet<&str> = FxHashSet::default();
    for (x, (item, kind, _)) in h.iter().enumerate() {
        first.entry(item.as_str()).or_insert(x);
        if *kind >= min {
            strong.insert(item.as_str());
        }
    }
    let (&target, &pos) = first
        .iter()
        .filter(|(i, _)| strong.contains(*i))
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    (pos > 0).then(|| Case {
        train: pos,
        target: target.to_string(),
        at: h[pos].2,
    })
}

/// Evaluates every method. `every` > 1 evaluates only every n-th eligible person (the
/// model still learns from all).
pub fn leave_last_out(
    mut people: Vec<(u64, History)>,
    catalog: &[Item],
    config: &RecsConfig,
    k: usize,
    every: usize,
    target: Kind,
) -> Report {
    people.sort_by_key(|p| p.0);
    let cases: Vec<Option<Case>> = people.iter_mut().map(|(_, h)| split(h, target)).collect();
    let mut inter = Interactions::new(usize::MAX / 2);
    let mut now = Millis::MIN;
    let mut total = 0;
    for ((person, h), case) in people.iter().zip(&cases) {
        let end = case.as_ref().map_or(h.len(), |c| c.train);
        for (item, kind, ts) in &h[..end] {
            inter.push(*person, item, *kind, *ts);
            now = now.max(*ts);
            total += 1;
        }
    }
    // Products only seen held out must exist in the model too, so intern them.
    for c in cases.iter().flatten() {
        inter.intern(&c.target);
    }
    let snapshot = Snapshot::build(&inter, catalog, config.clone(), now, &|| 0);
    let products = if catalog.is_empty() {
        snapshot.len()
    } else {
        catalog.len()
    };
    let eligible: Vec<usize> = (0..people.len()).filter(|&i| cases[i].is_some()).collect();
    let chosen: Vec<usize> = eligible
        .iter()
        .copied()
        .enumerate()
        .filter(|(x, _)| x % every.max(1) == 0)
        .map(|(_, i)| i)
        .collect();
    let mut methods = Vec::new();
    for method in Method::ALL {
        let (mut hits, mut ndcg, mut listed) = (0usize, 0f64, 0usize);
        let mut seen: FxHashSet<String> = FxHashSet::default();
        for &i in &chosen {
            let Some(case) = &cases[i] else { continue };
            let h = &people[i].1;
            let history: Vec<Seen> = h[..case.train]
                .iter()
                .map(|(item, kind, ts)| Seen {
                    item,
                    kind: *kind,
                    ts: *ts,
                })
                .collect();
            let recs = snapshot.recommend(&Request {
                history: &history,
                cart: &[],
                context: Context::Browse,
                n: k,
                now: case.at,
                method,
            });
            listed += recs.len();
            if let Some(rank) = recs.iter().position(|r| r.item.id == case.target) {
                hits += 1;
                ndcg += 1.0 / ((rank + 2) as f64).log2();
            }
            for r in recs {
                if !seen.contains(&r.item.id) {
                    seen.insert(r.item.id.clone());
                }
            }
        }
        let m = chosen.len().max(1) as f64;
        methods.push(MethodResult {
            method: method.name(),
            hr: hits as f64 / m,
            ndcg: ndcg / m,
            coverage: seen.len() as f64 / products.max(1) as f64,
            mean_list: listed as f64 / m,
        });
    }
    Report {
        target,
        k,
        people: people.len(),
        evaluated: chosen.len(),
        products,
        interactions: total,
        methods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hybrid_finds_what_pairs_predict_and_popularity_does_not() {
        // Everyone views a popular product; the products of a group (a, b, c) are bought
        // together, in an order that differs from person to person.
        let mut people = Vec::new();
        for p in 0..300u64 {
            let g = p % 20;
            let t = p as i64 * 1000;
            let mut h = vec![("popular".to_string(), Kind::View, t)];
            for (x, name) in ["a", "b", "c"].iter().enumerate() {
                let slot = (x as u64 + p / 20) % 3;
                h.push((format!("{name}{g}"), Kind::Purchase, t + 1 + slot as i64));
            }
            people.push((p, h));
        }
        let r = leave_last_out(people, &[], &RecsConfig::default(), 10, 1, Kind::View);
        assert_eq!(r.evaluated, 300);
        let get = |m: &str| r.methods.iter().find(|x| x.method == m).cloned();
        let (h, p) = (get("hybrid"), get("popularity"));
        let (h, p) = (h.expect("hybrid"), p.expect("popularity"));
        assert!(h.hr > 0.9, "{r:?}");
        assert!(p.hr < 0.6, "{r:?}");
        assert!(h.ndcg > p.ndcg);
        assert!(h.coverage > p.coverage);
    }

    #[test]
    fn split_holds_out_the_product_reached_last() {
        let mut h: History = vec![
            ("b".into(), Kind::View, 20),
            ("a".into(), Kind::View, 10),
            ("c".into(), Kind::View, 30),
            ("a".into(), Kind::Purchase, 40),
        ];
        let c = split(&mut h, Kind::View).expect("a case");
        assert_eq!((c.target.as_str(), c.train, c.at), ("c", 2, 30));
        // Only products later carted or bought: `a` (bought at 40, first seen at 10).
        let mut h2 = h.clone();
        h2.push(("d".into(), Kind::View, 50));
        let c = split(&mut h2, Kind::Cart);
        assert!(
            c.is_none(),
            "a was reached first: nothing before it to learn from"
        );
        let mut h3: History = vec![
            ("x".into(), Kind::View, 1),
            ("a".into(), Kind::Cart, 5),
            ("y".into(), Kind::View, 9),
        ];
        let c = split(&mut h3, Kind::Cart).expect("a case");
        assert_eq!((c.target.as_str(), c.train), ("a", 1));
        let mut one: History = vec![("a".into(), Kind::View, 1)];
        assert!(split(&mut one, Kind::View).is_none());
    }
}
