//! Content similarity from catalog attributes.
//!
//! Each product is a TF-IDF vector over its attributes: `category:`, `brand:`, `tag:` and
//! `price:` (its price band within its category, so that a 20-dollar cable is not like a
//! 900-dollar camera), weighted by kind (category 1, brand 0.8, tag 0.6, price 0.5) times
//! `ln(1 + N / df)`, L2-normalised; similarity is the cosine. Exact all-pairs is
//! quadratic, so each product visits at most `budget` candidates through the posting lists
//! of its rarest attributes first (the ones that weigh most), each list ordered by
//! popularity: a product's neighbours are the popular products that share its most
//! specific attributes.

use crate::catalog::Item;
use crate::knn::{parallel_rows, top_k, Neighbours};
use rustc_hash::FxHashMap;

/// Attribute weights by kind.
const CATEGORY: f32 = 1.0;
const BRAND: f32 = 0.8;
const TAG: f32 = 0.6;
const PRICE: f32 = 0.5;

/// The attributes of one product as (name, kind weight).
fn attributes(item: &Item) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    let cat = item.category.as_deref().map(str::to_lowercase);
    if let Some(c) = &cat {
        out.push((format!("category:{c}"), CATEGORY));
    }
    if let Some(b) = &item.brand {
        out.push((format!("brand:{}", b.to_lowercase()), BRAND));
    }
    for t in &item.tags {
        out.push((format!("tag:{}", t.to_lowercase()), TAG));
    }
    if let Some(band) = item.price_band() {
        out.push((
            format!("price:{}:{band}", cat.as_deref().unwrap_or("")),
            PRICE,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// The top-K content neighbours of every product. `items[i]` is product i's attributes
/// (`None`: none known), `popularity[i]` orders the posting lists.
pub fn compute(
    items: &[Option<&Item>],
    popularity: &[f32],
    neighbours: usize,
    budget: usize,
    threads: usize,
) -> Neighbours {
    let n = items.len();
    let mut names: FxHashMap<String, u32> = FxHashMap::default();
    let mut df: Vec<u32> = Vec::new();
    let mut kind_w: Vec<f32> = Vec::new();
    let mut raw: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
    for item in items {
        let mut v = Vec::new();
        if let Some(item) = item {
            for (name, w) in attributes(item) {
                let next = names.len() as u32;
                let f = *names.entry(name).or_insert(next);
                if f as usize == df.len() {
                    df.push(0);
                    kind_w.push(w);
                }
                df[f as usize] += 1;
                v.push((f, w));
            }
        }
        raw.push(v);
    }
    let idf: Vec<f32> = df
        .iter()
        .map(|&d| (1.0 + n as f64 / d.max(1) as f64).ln() as f32)
        .collect();
    // Normalised vectors; attributes every product has say nothing and are dropped.
    let vectors: Vec<Vec<(u32, f32)>> = raw
        .into_iter()
        .map(|v| {
            let mut v: Vec<(u32, f32)> = v
                .into_iter()
                .filter(|(f, _)| (df[*f as usize] as usize) < n)
                .map(|(f, w)| (f, w * idf[f as usize]))
                .collect();
            let norm = v.iter().map(|x| x.1 * x.1).sum::<f32>().sqrt();
            if norm > 0.0 {
                for x in &mut v {
                    x.1 /= norm;
                }
            }
            // Rarest (highest idf) first: they are visited first under the budget.
            v.sort_by(|a, b| {
                idf[b.0 as usize]
                    .total_cmp(&idf[a.0 as usize])
                    .then(a.0.cmp(&b.0))
            });
            v
        })
        .collect();
    let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); df.len()];
    for (i, v) in vectors.iter().enumerate() {
        for &(f, w) in v {
            postings[f as usize].push((i as u32, w));
        }
    }
    let pop = |i: u32| popularity.get(i as usize).copied().unwrap_or(0.0);
    for p in &mut postings {
        p.sort_by(|a, b| pop(b.0).total_cmp(&pop(a.0)).then(a.0.cmp(&b.0)));
    }
    let rows = parallel_rows(
        n,
        threads,
        || (vec![0f32; n], Vec::<u32>::new()),
        |i, (acc, touched)| {
            let mut visited = 0usize;
            for &(f, wi) in &vectors[i as usize] {
                for &(j, wj) in &postings[f as usize] {
                    if visited >= budget {
                        break;
                    }
                    if j == i {
                        continue;
                    }
                    visited += 1;
                    if acc[j as usize] == 0.0 {
                        touched.push(j);
                    }
                    acc[j as usize] += wi * wj;
                }
            }
            let cands = touched
                .iter()
                .map(|&j| (j, acc[j as usize], u8::MAX))
                .collect();
            for &j in touched.iter() {
                acc[j as usize] = 0.0;
            }
            touched.clear();
            top_k(cands, neighbours)
        },
    );
    Neighbours::from_rows(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(id: &str, cat: &str, brand: &str, price: f64, tags: &[&str]) -> Item {
        Item::from_json(
            Some(id),
            &json!({"title": id, "category": cat, "brand": brand, "price": price, "tags": tags}),
        )
        .expect("valid")
    }

    #[test]
    fn shared_specific_attributes_make_neighbours() {
        let items = [
            item("a", "cameras", "acme", 500.0, &["mirrorless"]),
            item("b", "cameras", "acme", 520.0, &["mirrorless"]),
            item("c", "cameras", "zeta", 30.0, &[]),
            item("d", "tents", "zeta", 200.0, &["outdoor"]),
        ];
        let refs: Vec<Option<&Item>> = items.iter().map(Some).collect();
        let nb = compute(&refs, &[0.0; 4], 10, 1000, 1);
        let row: Vec<u32> = nb.of(0).map(|x| x.0).collect();
        assert_eq!(
            row,
            vec![1, 2],
            "b shares everything, c the category, d nothing"
        );
        let s = nb.of(0).next().map(|x| x.1).unwrap_or(0.0);
        assert!(
            (s - 1.0).abs() < 1e-5,
            "identical attributes: cosine 1, got {s}"
        );
        assert!(nb.of(3).all(|x| x.0 != 0));
    }

    #[test]
    fn the_budget_bounds_the_work_and_prefers_popular() {
        let items: Vec<Item> = (0..50)
            .map(|i| item(&format!("p{i}"), "shoes", "b", 50.0, &[]))
            .collect();
        let refs: Vec<Option<&Item>> = items.iter().map(Some).collect();
        let pop: Vec<f32> = (0..50).map(|i| i as f32).collect();
        // Every product has every attribute here, so none informs: no neighbours.
        assert_eq!(compute(&refs, &pop, 5, 10, 2).pairs(), 0);
        let mut with_other = refs.clone();
        let other = item("q", "hats", "c", 5.0, &[]);
        with_other.push(Some(&other));
        let mut pop2 = pop.clone();
        pop2.push(0.0);
        let nb = compute(&with_other, &pop2, 3, 10, 2);
        let row: Vec<u32> = nb.of(0).map(|x| x.0).collect();
        // The budget of 10 visits reached the 10 most popular (p40..p49), equal in score,
        // so ties go by id.
        assert_eq!(row, vec![40, 41, 42]);
    }
}
