//! Item-to-item collaborative filtering.
//!
//! Each person is a sparse vector over products: `value(p, i) = sum over the person's
//! interactions with i of weight(kind) * 0.5^(age / half-life)`, keeping the person's
//! `max_items_per_person` strongest products and scaled by `1 / sqrt(ln(2 + n))` so that a
//! person who touched hundreds of products says less about each pair than one who touched
//! three. Two products are similar when the same people want them:
//!
//! ```text
//! sim(i, j) = dot(i, j) / (|i| |j|)  *  n(i, j) / (n(i, j) + shrink)
//! ```
//!
//! (cosine over people, shrunk toward 0 when few people, `n(i, j)`, share the pair). Each
//! pair also records which relation carried most of its weight: co-purchase (both bought),
//! co-cart (both at least carted) or co-view, which the reasons show and the cart context
//! prefers. Only the `k` best neighbours of each product are kept. The work is
//! `sum over people of n_p^2`, split over threads by product.

use crate::interaction::{Kind, Rec};
use kairos_core::Millis;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sparse top-K neighbour lists, one row per product (CSR).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Neighbours {
    offsets: Vec<u32>,
    items: Vec<u32>,
    sims: Vec<f32>,
    sources: Vec<u8>,
}

impl Neighbours {
    pub fn from_rows(rows: Vec<Vec<(u32, f32, u8)>>) -> Self {
        let mut n = Self {
            offsets: Vec::with_capacity(rows.len() + 1),
            ..Self::default()
        };
        n.offsets.push(0);
        for row in rows {
            for (j, s, src) in row {
                n.items.push(j);
                n.sims.push(s);
                n.sources.push(src);
            }
            n.offsets.push(n.items.len() as u32);
        }
        n
    }

    /// The neighbours of product `i`: (product, similarity, source), best first.
    pub fn of(&self, i: u32) -> impl Iterator<Item = (u32, f32, u8)> + '_ {
        let (a, b) = match (
            self.offsets.get(i as usize),
            self.offsets.get(i as usize + 1),
        ) {
            (Some(&a), Some(&b)) => (a as usize, b as usize),
            _ => (0, 0),
        };
        (a..b).map(move |x| (self.items[x], self.sims[x], self.sources[x]))
    }

    pub fn row_len(&self, i: u32) -> usize {
        self.of(i).count()
    }

    /// Total number of (product, neighbour) pairs kept.
    pub fn pairs(&self) -> usize {
        self.items.len()
    }
}

/// One neighbour list: (product, similarity, source), and lists computed from a start.
pub(crate) type Row = Vec<(u32, f32, u8)>;
type Chunk = (usize, Vec<Row>);

/// Best first; ties by product id order (the index), so results are deterministic.
pub(crate) fn top_k(mut cands: Vec<(u32, f32, u8)>, k: usize) -> Vec<(u32, f32, u8)> {
    let cmp = |a: &(u32, f32, u8), b: &(u32, f32, u8)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if cands.len() > k && k > 0 {
        cands.select_nth_unstable_by(k - 1, cmp);
        cands.truncate(k);
    }
    if k == 0 {
        cands.clear();
    }
    cands.sort_unstable_by(cmp);
    cands
}

/// Runs `row(i, scratch)` for every product on `threads` threads (dynamic chunks, since
/// rows differ wildly in cost) and returns the rows in product order.
pub(crate) fn parallel_rows<S, F>(
    n: usize,
    threads: usize,
    scratch: impl Fn() -> S + Sync,
    row: F,
) -> Vec<Vec<(u32, f32, u8)>>
where
    F: Fn(u32, &mut S) -> Vec<(u32, f32, u8)> + Sync,
{
    const CHUNK: usize = 64;
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, 64);
    let mut parts: Vec<Vec<Chunk>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut st = scratch();
                    let mut out = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= n {
                            break;
                        }
                        let end = (start + CHUNK).min(n);
                        let rows = (start..end).map(|i| row(i as u32, &mut st)).collect();
                        out.push((start, rows));
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            // A worker panicking is a bug in this module; propagate it.
            match h.join() {
                Ok(p) => parts.push(p),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    });
    let mut chunks: Vec<Chunk> = parts.into_iter().flatten().collect();
    chunks.sort_unstable_by_key(|(s, _)| *s);
    chunks.into_iter().flat_map(|(_, rows)| rows).collect()
}

/// Settings of the similarity computation.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnParams {
    /// Weights of a view, a cart addition and a purchase.
    pub weights: [f32; 3],
    pub half_life: Millis,
    pub max_items_per_person: usize,
    pub neighbours: usize,
    pub shrink: f32,
    pub threads: usize,
}

/// People as sparse product vectors (CSR), built from their interactions.
#[derive(Clone, Debug, Default)]
pub struct PersonItems {
    offsets: Vec<usize>,
    items: Vec<u32>,
    values: Vec<f32>,
    kinds: Vec<u8>,
}

impl PersonItems {
    /// One row per person: interactions with the same product summed (decayed by age at
    /// `now`), the strongest kind kept. `remap[item]` is the product's index in the
    /// output; products past its end are skipped.
    pub fn build<'a>(
        people: impl IntoIterator<Item = &'a [Rec]>,
        remap: &[u32],
        p: &KnnParams,
        now: Millis,
    ) -> Self {
        let mut out = Self {
            offsets: vec![0],
            ..Self::default()
        };
        let hl = p.half_life.max(1) as f64;
        let mut row: Vec<(u32, f32, u8)> = Vec::new();
        for recs in people {
            row.clear();
            for r in recs {
                let Some(&item) = remap.get(r.item as usize) else {
                    continue;
                };
                let age = (now - r.ts).max(0) as f64;
                let w = p.weights[r.kind as usize] as f64 * (-age / hl).exp2();
                row.push((item, w as f32, r.kind as u8));
            }
            row.sort_unstable_by_key(|x| x.0);
            let mut merged: Vec<(u32, f32, u8)> = Vec::with_capacity(row.len());
            for &(i, w, k) in &row {
                match merged.last_mut() {
                    Some(last) if last.0 == i => {
                        last.1 += w;
                        last.2 = last.2.max(k);
                    }
                    _ => merged.push((i, w, k)),
                }
            }
            if merged.len() > p.max_items_per_person {
                merged = top_k(merged, p.max_items_per_person);
                merged.sort_unstable_by_key(|x| x.0);
            }
            let scale = (1.0 / (2.0 + merged.len() as f64).ln()).sqrt() as f32;
            for (i, w, k) in merged {
                if w > 0.0 {
                    out.items.push(i);
                    out.values.push(w * scale);
                    out.kinds.push(k);
                }
            }
            out.offsets.push(out.items.len());
        }
        out
    }

    pub fn people(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn entries(&self) -> usize {
        self.items.len()
    }

    fn row(&self, p: usize) -> std::ops::Range<usize> {
        self.offsets[p]..self.offsets[p + 1]
    }

    /// Per product: decayed interaction weight summed over people (before the per-person
    /// scaling), used for popularity.
    pub fn product_weights(&self, n_items: usize) -> Vec<f32> {
        let mut w = vec![0f32; n_items];
        for p in 0..self.people() {
            let r = self.row(p);
            let scale = (2.0 + r.len() as f64).ln().sqrt() as f32;
            for x in r {
                w[self.items[x] as usize] += self.values[x] * scale;
            }
        }
        w
    }
}

/// Scratch space of one thread: dense accumulators and the list of touched products.
struct Acc {
    dot: Vec<f32>,
    count: Vec<u32>,
    by_source: [Vec<f32>; 3],
    touched: Vec<u32>,
}

/// The top-K collaborative neighbours of every product, and each product's support (how
/// many people's vectors contain it).
pub fn compute(pi: &PersonItems, n_items: usize, p: &KnnParams) -> (Neighbours, Vec<u32>) {
    // The inverted index: product -> (person, value, kind).
    let mut support = vec![0u32; n_items];
    for &i in &pi.items {
        support[i as usize] += 1;
    }
    let mut inv_off = vec![0usize; n_items + 1];
    for i in 0..n_items {
        inv_off[i + 1] = inv_off[i] + support[i] as usize;
    }
    let mut fill = inv_off.clone();
    let mut inv_person = vec![0u32; pi.items.len()];
    let mut inv_value = vec![0f32; pi.items.len()];
    let mut inv_kind = vec![0u8; pi.items.len()];
    let mut norm = vec![0f64; n_items];
    for person in 0..pi.people() {
        for x in pi.row(person) {
            let i = pi.items[x] as usize;
            let at = fill[i];
            fill[i] += 1;
            inv_person[at] = person as u32;
            inv_value[at] = pi.values[x];
            inv_kind[at] = pi.kinds[x];
            norm[i] += (pi.values[x] as f64).powi(2);
        }
    }
    let norm: Vec<f32> = norm.into_iter().map(|n| n.sqrt() as f32).collect();
    let rows = parallel_rows(
        n_items,
        p.threads,
        || Acc {
            dot: vec![0.0; n_items],
            count: vec![0; n_items],
            by_source: [vec![0.0; n_items], vec![0.0; n_items], vec![0.0; n_items]],
            touched: Vec::new(),
        },
        |i, acc| {
            let iu = i as usize;
            for at in inv_off[iu]..inv_off[iu + 1] {
                let (person, vi, ki) = (inv_person[at] as usize, inv_value[at], inv_kind[at]);
                for x in pi.row(person) {
                    let j = pi.items[x];
                    if j == i {
                        continue;
                    }
                    let ju = j as usize;
                    let c = vi * pi.values[x];
                    if acc.count[ju] == 0 {
                        acc.touched.push(j);
                    }
                    acc.count[ju] += 1;
                    acc.dot[ju] += c;
                    acc.by_source[ki.min(pi.kinds[x]) as usize][ju] += c;
                }
            }
            let mut cands = Vec::with_capacity(acc.touched.len());
            for &j in &acc.touched {
                let ju = j as usize;
                let n = acc.count[ju] as f32;
                let denom = norm[iu] * norm[ju];
                if denom > 0.0 {
                    let sim = acc.dot[ju] / denom * n / (n + p.shrink);
                    let src = (0..3)
                        .rev()
                        .max_by(|&a, &b| acc.by_source[a][ju].total_cmp(&acc.by_source[b][ju]))
                        .unwrap_or(0) as u8;
                    if sim > 0.0 {
                        cands.push((j, sim, src));
                    }
                }
                acc.dot[ju] = 0.0;
                acc.count[ju] = 0;
                for s in &mut acc.by_source {
                    s[ju] = 0.0;
                }
            }
            acc.touched.clear();
            top_k(cands, p.neighbours)
        },
    );
    (Neighbours::from_rows(rows), support)
}

/// The relation a source byte stands for.
pub fn source_kind(src: u8) -> Kind {
    Kind::from_index(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> KnnParams {
        KnnParams {
            weights: [1.0, 3.0, 5.0],
            half_life: 1_000_000,
            max_items_per_person: 100,
            neighbours: 10,
            shrink: 0.0,
            threads: 2,
        }
    }

    fn rec(item: u32, kind: Kind) -> Rec {
        Rec { item, kind, ts: 0 }
    }

    #[test]
    fn cosine_on_a_hand_checked_case() {
        // Three people, views only, each touching two products: n = 2 so every value is
        // the same scale s; items: 0 = {p0, p1}, 1 = {p0}, 2 = {p1, p2}, 3 = {p2}.
        let people = [
            vec![rec(0, Kind::View), rec(1, Kind::View)],
            vec![rec(0, Kind::View), rec(2, Kind::View)],
            vec![rec(2, Kind::View), rec(3, Kind::View)],
        ];
        let p = params();
        let pi = PersonItems::build(people.iter().map(Vec::as_slice), &[0, 1, 2, 3], &p, 0);
        let (nb, support) = compute(&pi, 4, &p);
        assert_eq!(support, vec![2, 1, 2, 1]);
        let row0: Vec<(u32, f32)> = nb.of(0).map(|(j, s, _)| (j, s)).collect();
        // cos(0, 1) = 1 / (sqrt 2 * 1); cos(0, 2) = 1 / (sqrt 2 * sqrt 2) = 0.5.
        assert_eq!(row0.len(), 2);
        assert_eq!(row0[0].0, 1);
        assert!((row0[0].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(row0[1].0, 2);
        assert!((row0[1].1 - 0.5).abs() < 1e-6);
        // Symmetric.
        let s20 = nb.of(2).find(|x| x.0 == 0).map(|x| x.1);
        assert_eq!(s20, Some(row0[1].1));
        // 1 and 3 share nobody.
        assert!(nb.of(1).all(|x| x.0 != 3));
    }

    #[test]
    fn shrinkage_and_sources() {
        let mut p = params();
        p.shrink = 1.0;
        let people = [
            vec![rec(0, Kind::Purchase), rec(1, Kind::Purchase)],
            vec![rec(0, Kind::View), rec(1, Kind::View)],
        ];
        let pi = PersonItems::build(people.iter().map(Vec::as_slice), &[0, 1], &p, 0);
        let (nb, _) = compute(&pi, 2, &p);
        let (j, s, src) = nb.of(0).next().expect("a neighbour");
        assert_eq!(j, 1);
        // Vectors are parallel: cosine 1, shrunk by 2 / (2 + 1).
        assert!((s - 2.0 / 3.0).abs() < 1e-5, "{s}");
        assert_eq!(source_kind(src), Kind::Purchase);
    }

    #[test]
    fn recency_decays_and_top_k_is_deterministic() {
        let mut p = params();
        p.half_life = 10;
        let people = [vec![
            Rec {
                item: 0,
                kind: Kind::View,
                ts: 0,
            },
            Rec {
                item: 1,
                kind: Kind::View,
                ts: 10,
            },
        ]];
        let pi = PersonItems::build(people.iter().map(Vec::as_slice), &[0, 1], &p, 10);
        let w = pi.product_weights(2);
        assert!(
            (w[0] - 0.5).abs() < 1e-6 && (w[1] - 1.0).abs() < 1e-6,
            "{w:?}"
        );
        let t = top_k(vec![(3, 1.0, 0), (1, 1.0, 0), (2, 2.0, 0), (0, 0.5, 0)], 3);
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 1, 3]);
        let one = parallel_rows(200, 1, || (), |i, _| vec![(i, 1.0, 0)]);
        let two = parallel_rows(200, 2, || (), |i, _| vec![(i, 1.0, 0)]);
        assert_eq!(one, two);
    }
}
