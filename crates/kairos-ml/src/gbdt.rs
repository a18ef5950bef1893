//! Histogram gradient-boosted decision trees for binary log loss.
//!
//! Training follows the LightGBM recipe: every feature is cut into at most 255 quantile
//! bins once (bin 0 holds missing values), each feature is stored as one byte per row,
//! and each tree grows leaf-wise (always splitting the leaf with the largest gain) from
//! gradient/hessian histograms. Only the smaller child of a split is histogrammed; the
//! larger one is its parent minus the smaller (the subtraction trick). Missing values go
//! the way that gains more, learned per split. Histograms of large leaves are built by
//! several threads over disjoint rows and summed.
//!
//! The result is a [`Forest`]: plain nodes with raw-value thresholds. Serving walks it with
//! no training structure; [`crate::shap`] explains it exactly.

use crate::data::Dataset;
use crate::{sigmoid, MlError};
use serde::{Deserialize, Serialize};

/// Training settings. Defaults are LightGBM's where they exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Boosting rounds (trees); fewer with early stopping.
    pub rounds: usize,
    pub learning_rate: f64,
    /// Leaves per tree.
    pub max_leaves: usize,
    /// Depth limit; 0 = none (leaf count limits the tree).
    pub max_depth: usize,
    /// Fewest rows in a leaf.
    pub min_data_in_leaf: usize,
    /// Smallest hessian sum in a leaf.
    pub min_sum_hessian: f64,
    /// L2 penalty on leaf values.
    pub lambda_l2: f64,
    /// Smallest gain worth a split.
    pub min_gain: f64,
    /// Value bins per feature (at most 255).
    pub max_bins: usize,
    /// Share of features each tree may split on.
    pub feature_fraction: f64,
    /// Stop when the validation log loss has not improved for this many rounds (0 = off;
    /// needs a validation set).
    pub early_stopping_rounds: usize,
    /// Threads for histograms; 0 = all available.
    pub threads: usize,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            rounds: 200,
            learning_rate: 0.1,
            max_leaves: 31,
            max_depth: 0,
            min_data_in_leaf: 20,
            min_sum_hessian: 1e-3,
            lambda_l2: 0.0,
            min_gain: 0.0,
            max_bins: 255,
            feature_fraction: 1.0,
            early_stopping_rounds: 0,
            threads: 0,
            seed: 1,
        }
    }
}

impl Params {
    fn check(&self) -> Result<(), MlError> {
        let bad = |f: &str, r: &str| Err(MlError::invalid(format!("gbdt.{f}"), r));
        if self.rounds == 0 {
            return bad("rounds", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate", "must be in (0, 1]");
        }
        if self.max_leaves < 2 {
            return bad("max_leaves", "must be at least 2");
        }
        if !(2..=255).contains(&self.max_bins) {
            return bad("max_bins", "must be 2..=255");
        }
        if !(self.feature_fraction > 0.0 && self.feature_fraction <= 1.0) {
            return bad("feature_fraction", "must be in (0, 1]");
        }
        if self.lambda_l2 < 0.0 || self.min_gain < 0.0 || self.min_sum_hessian < 0.0 {
            return bad("lambda_l2", "penalties and minimums must be >= 0");
        }
        Ok(())
    }

    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// One node of a tree. A leaf has `feature == LEAF`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    /// Rows with `x <= threshold` go left.
    pub threshold: f32,
    pub left: u32,
    pub right: u32,
    /// Where a missing value goes.
    pub default_left: bool,
    /// Leaf output (margin units, learning rate applied); 0 for inner nodes.
    pub value: f64,
    /// Hessian sum of the training rows that reached the node (TreeSHAP weights).
    pub cover: f64,
}

pub const LEAF: u32 = u32::MAX;

impl Node {
    #[inline]
    pub fn is_leaf(&self) -> bool {
        self.feature == LEAF
    }

    /// The child a row goes to.
    #[inline]
    pub fn next(&self, x: &[f32]) -> u32 {
        let v = x[self.feature as usize];
        let left = if v.is_nan() {
            self.default_left
        } else {
            v <= self.threshold
        };
        if left {
            self.left
        } else {
            self.right
        }
    }
}

/// One tree; node 0 is the root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    #[inline]
    pub fn predict(&self, x: &[f32]) -> f64 {
        let mut n = &self.nodes[0];
        while !n.is_leaf() {
            n = &self.nodes[n.next(x) as usize];
        }
        n.value
    }

    pub fn depth(&self) -> usize {
        fn d(t: &Tree, i: usize) -> usize {
            let n = &t.nodes[i];
            if n.is_leaf() {
                0
            } else {
                1 + d(t, n.left as usize).max(d(t, n.right as usize))
            }
        }
        d(self, 0)
    }
}

/// A trained ensemble: `sigmoid(base + sum of trees)` is the probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub base: f64,
    pub trees: Vec<Tree>,
    pub n_features: usize,
    /// Total split gain per feature.
    pub gain_importance: Vec<f64>,
    /// Split count per feature.
    pub split_importance: Vec<u64>,
    /// The serving layout, built on first use.
    #[serde(skip)]
    compact: std::sync::OnceLock<Compact>,
}

/// Every tree's nodes in one array of 16-byte nodes (a 200 x depth-6 forest is 400 KB and
/// stays in L2), leaf values apart: the walk touches only what it compares.
#[derive(Clone, Debug, Default, PartialEq)]
struct Compact {
    /// (feature, or `LEAF`; threshold; left; right), children as absolute indices; the
    /// missing-value direction in the top bit of `left`.
    nodes: Vec<(u32, f32, u32, u32)>,
    values: Vec<f64>,
    roots: Vec<u32>,
}

const DEFAULT_LEFT: u32 = 1 << 31;

impl Compact {
    fn new(trees: &[Tree]) -> Self {
        let mut c = Compact::default();
        for t in trees {
            let base = c.nodes.len() as u32;
            c.roots.push(base);
            for n in &t.nodes {
                let flag = if n.default_left { DEFAULT_LEFT } else { 0 };
                c.nodes.push((
                    n.feature,
                    n.threshold,
                    (base + n.left) | flag,
                    base + n.right,
                ));
                c.values.push(n.value);
            }
        }
        c
    }

    #[inline]
    fn margin(&self, x: &[f32]) -> f64 {
        let mut sum = 0.0;
        for &root in &self.roots {
            let mut i = root as usize;
            loop {
                let (f, thr, left, right) = self.nodes[i];
                if f == LEAF {
                    sum += self.values[i];
                    break;
                }
                let v = x[f as usize];
                let go_left = if v.is_nan() {
                    left & DEFAULT_LEFT != 0
                } else {
                    v <= thr
                };
                i = if go_left {
                    (left & !DEFAULT_LEFT) as usize
                } else {
                    right as usize
                };
            }
        }
        sum
    }
}

impl Forest {
    pub fn new(
        base: f64,
        trees: Vec<Tree>,
        n_features: usize,
        gain_importance: Vec<f64>,
        split_importance: Vec<u64>,
    ) -> Self {
        Self {
            base,
            trees,
            n_features,
            gain_importance,
            split_importance,
            compact: Default::default(),
        }
    }

    /// The margin (log-odds) for one row of `n_features` values.
    #[inline]
    pub fn margin(&self, x: &[f32]) -> f64 {
        self.base
            + self
                .compact
                .get_or_init(|| Compact::new(&self.trees))
                .margin(x)
    }

    pub fn predict_proba(&self, x: &[f32]) -> f64 {
        sigmoid(self.margin(x))
    }

    /// Probabilities for every row of `data`, over `threads` threads.
    pub fn predict_dataset(&self, data: &Dataset, threads: usize) -> Vec<f64> {
        let n = data.rows();
        let mut out = vec![0.0; n];
        let threads = threads.max(1);
        let chunk = n.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (k, part) in out.chunks_mut(chunk).enumerate() {
                s.spawn(move || {
                    for (j, o) in part.iter_mut().enumerate() {
                        *o = self.predict_proba(data.row(k * chunk + j));
                    }
                });
            }
        });
        out
    }
}

/// Per-feature bin edges: value bin `b` (1-based) holds `cuts[b-2] < v <= cuts[b-1]`.
#[derive(Clone, Debug)]
struct Binner {
    cuts: Vec<Vec<f32>>,
}

impl Binner {
    fn fit(data: &Dataset, max_bins: usize, threads: usize) -> Self {
        let (n, f) = (data.rows(), data.cols());
        // Bin edges from at most 200k rows, spread evenly.
        let step = (n / 200_000).max(1);
        let column = |j: usize| {
            let mut v: Vec<f32> = (0..n)
                .step_by(step)
                .map(|i| data.x[i * f + j])
                .filter(|v| !v.is_nan())
                .collect();
            v.sort_unstable_by(f32::total_cmp);
            cuts_for(&v, max_bins)
        };
        Self {
            cuts: par_map(f, threads, column),
        }
    }

    #[inline]
    fn bin(&self, j: usize, v: f32) -> u8 {
        if v.is_nan() {
            0
        } else {
            1 + self.cuts[j].partition_point(|&c| c < v) as u8
        }
    }

    fn bins(&self, j: usize) -> usize {
        self.cuts[j].len() + 2
    }

    fn transform_rows(&self, data: &Dataset, threads: usize) -> Vec<u8> {
        let f = data.cols();
        let mut out = vec![0u8; data.x.len()];
        let chunk = (data.rows().div_ceil(threads.max(1)).max(1)) * f;
        std::thread::scope(|s| {
            for (o, x) in out.chunks_mut(chunk).zip(data.x.chunks(chunk)) {
                s.spawn(move || {
                    for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                        *o = self.bin(i % f, v);
                    }
                });
            }
        });
        out
    }

    /// Column-major bins from the row-major ones: one byte per row, one vector per feature.
    fn transform(&self, rows: &[u8], f: usize, threads: usize) -> Vec<Vec<u8>> {
        par_map(f, threads, |j| {
            rows.iter().skip(j).step_by(f).copied().collect()
        })
    }
}

/// `(0..n).map(work)` over `threads` threads, in order.
fn par_map<T: Send>(n: usize, threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    let work = &work;
    let mut parts: Vec<Vec<T>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..n).step_by(threads).map(work).collect::<Vec<T>>()))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    let mut iters: Vec<_> = parts.iter_mut().map(|p| p.drain(..)).collect();
    for i in 0..n {
        if let Some(v) = iters[i % threads].next() {
            out.push(v);
        }
    }
    out
}

/// Cut points over sorted values: between distinct values, about equal counts per bin.
fn cuts_for(sorted: &[f32], max_bins: usize) -> Vec<f32> {
    let mut distinct: Vec<(f32, usize)> = Vec::new();
    for &v in sorted {
        match distinct.last_mut() {
            Some((d, c)) if *d == v => *c += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let between = |a: f32, b: f32| {
        let mid = ((a as f64 + b as f64) / 2.0) as f32;
        if mid >= b {
            a
        } else {
            mid
        }
    };
    if distinct.len() <= max_bins {
        return distinct
            .windows(2)
            .map(|w| between(w[0].0, w[1].0))
            .collect();
    }
    let mut cuts = Vec::new();
    let total = sorted.len();
    let mut remaining_bins = max_bins;
    let mut remaining = total;
    let mut acc = 0usize;
    for (i, &(v, c)) in distinct.iter().enumerate() {
        acc += c;
        let target = remaining as f64 / remaining_bins as f64;
        if acc as f64 >= target && i + 1 < distinct.len() && remaining_bins > 1 {
            cuts.push(between(v, distinct[i + 1].0));
            remaining -= acc;
            remaining_bins -= 1;
            acc = 0;
        }
    }
    cuts
}

#[derive(Clone, Copy, Debug)]
struct Split {
    gain: f64,
    feature: usize,
    /// Value bins `1..=bin` go left.
    bin: usize,
    default_left: bool,
    left_g: f64,
    left_h: f64,
}

struct Leaf {
    start: usize,
    end: usize,
    g: f64,
    h: f64,
    depth: usize,
    node: usize,
    hist: Vec<[f64; 2]>,
    best: Option<Split>,
}

/// What training produced besides the forest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    /// Validation log loss after each round, when a validation set was given.
    pub valid_log_loss: Vec<f64>,
    /// Rounds kept (the best round with early stopping).
    pub best_rounds: usize,
}

struct Trainer<'a> {
    p: &'a Params,
    f: usize,
    cuts: Vec<Vec<f32>>,
    /// Column-major: `cols[j][row]`. A histogram pass over one feature then touches one
    /// byte column and a 4 KB histogram that stays in L1.
    cols: Vec<Vec<u8>>,
    /// Row-major copy: `row_bins[row * f + j]`, for histograms of a leaf's scattered rows.
    row_bins: Vec<u8>,
    offsets: Vec<usize>,
    hist_len: usize,
    threads: usize,
}

/// Trains a forest on `train`; `valid` (same columns) drives early stopping.
pub fn train(
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
) -> Result<(Forest, TrainLog), MlError> {
    params.check()?;
    train.check_trainable()?;
    if let Some(v) = valid {
        if v.cols() != train.cols() {
            return Err(MlError::invalid(
                "valid",
                "validation columns differ from training",
            ));
        }
    }
    let (n, f) = (train.rows(), train.cols());
    let threads = params.thread_count();
    let binner = Binner::fit(train, params.max_bins, threads);
    let row_bins = binner.transform_rows(train, threads);
    let cols = binner.transform(&row_bins, f, threads);
    let mut offsets = Vec::with_capacity(f + 1);
    let mut acc = 0;
    for j in 0..f {
        offsets.push(acc);
        acc += binner.bins(j);
    }
    offsets.push(acc);
    let t = Trainer {
        p: params,
        f,
        row_bins,
        cols,
        cuts: binner.cuts,
        offsets,
        hist_len: acc,
        threads,
    };

    let rate = train.positive_rate().clamp(1e-6, 1.0 - 1e-6);
    let base = (rate / (1.0 - rate)).ln();
    let mut margin = vec![base; n];
    // Gradient and hessian of each row, side by side: one 16-byte load and one packed add
    // per histogram update.
    let mut gh = vec![[0f64; 2]; n];
    let mut valid_margin: Vec<f64> = valid.map_or(Vec::new(), |v| vec![base; v.rows()]);
    let mut forest = Forest::new(base, Vec::new(), f, vec![0.0; f], vec![0; f]);
    let mut log = TrainLog::default();
    let mut best = (f64::INFINITY, 0usize);
    let mut rng = params.seed.max(1);
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let mut scratch: Vec<u32> = vec![0; n];
    // Per tree: the (gain, feature) of each split, to add to importance if the tree is kept.
    let mut tree_gains: Vec<Vec<(usize, f64)>> = Vec::new();

    for round in 0..params.rounds {
        gradients(&margin, &train.y, &mut gh, t.threads);
        let allowed = sample_features(f, params.feature_fraction, &mut rng);
        let (tree, leaves, gains) = t.grow(&gh, &allowed, &mut idx, &mut scratch);
        for (start, end, value) in leaves {
            for &r in &idx[start..end] {
                margin[r as usize] += value;
            }
        }
        if let Some(v) = valid {
            for (i, m) in valid_margin.iter_mut().enumerate() {
                *m += tree.predict(v.row(i));
            }
            let p: Vec<f64> = valid_margin.iter().map(|&m| sigmoid(m)).collect();
            let ll = crate::metrics::log_loss(&p, &v.y);
            log.valid_log_loss.push(ll);
            if ll < best.0 - 1e-12 {
                best = (ll, round + 1);
            }
        }
        forest.trees.push(tree);
        tree_gains.push(gains);
        if params.early_stopping_rounds > 0
            && valid.is_some()
            && round + 1 - best.1 >= params.early_stopping_rounds
        {
            break;
        }
    }
    if valid.is_some() && params.early_stopping_rounds > 0 {
        forest.trees.truncate(best.1.max(1));
    }
    for gains in tree_gains.iter().take(forest.trees.len()) {
        for &(j, g) in gains {
            forest.gain_importance[j] += g;
            forest.split_importance[j] += 1;
        }
    }
    log.best_rounds = forest.trees.len();
    Ok((forest, log))
}

fn sample_features(f: usize, fraction: f64, rng: &mut u64) -> Vec<bool> {
    if fraction >= 1.0 {
        return vec![true; f];
    }
    let k = ((f as f64 * fraction).ceil() as usize).clamp(1, f);
    let mut order: Vec<usize> = (0..f).collect();
    for i in (1..f).rev() {
        let j = (next_u64(rng) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut allowed = vec![false; f];
    for &j in &order[..k] {
        allowed[j] = true;
    }
    allowed
}

/// Asks the CPU to start loading the cache line at the start of `p`.
#[inline(always)]
fn prefetch(p: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint. It reads nothing the program can observe and cannot
    // fault, whatever the address; `p` is a live slice anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.as_ptr().cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline(always)]
fn prefetch_gh(p: &[[f64; 2]]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.as_ptr().cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Log-loss gradient and hessian of every row at the current margins, over threads.
fn gradients(margin: &[f64], y: &[f32], gh: &mut [[f64; 2]], threads: usize) {
    // Small tables: a thread costs more than the work.
    let threads = if margin.len() < 50_000 { 1 } else { threads };
    let chunk = margin.len().div_ceil(threads.max(1)).max(1 << 14);
    if threads == 1 {
        for ((o, &m), &y) in gh.iter_mut().zip(margin).zip(y) {
            let p = sigmoid(m);
            *o = [p - y as f64, (p * (1.0 - p)).max(1e-16)];
        }
        return;
    }
    std::thread::scope(|s| {
        for ((gh, m), y) in gh
            .chunks_mut(chunk)
            .zip(margin.chunks(chunk))
            .zip(y.chunks(chunk))
        {
            s.spawn(move || {
                for ((o, &m), &y) in gh.iter_mut().zip(m).zip(y) {
                    let p = sigmoid(m);
                    *o = [p - y as f64, (p * (1.0 - p)).max(1e-16)];
                }
            });
        }
    });
}

pub(crate) fn next_u64(s: &mut u64) -> u64 {
    // xorshift64*
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

impl Trainer<'_> {
    /// Grows one tree over all rows. Returns the tree, each leaf's row range in `idx`
    /// with its value, and the gain of each split.
    #[allow(clippy::type_complexity)]
    fn grow(
        &self,
        gh: &[[f64; 2]],
        allowed: &[bool],
        idx: &mut [u32],
        scratch: &mut [u32],
    ) -> (Tree, Vec<(usize, usize, f64)>, Vec<(usize, f64)>) {
        let n = idx.len();
        let p = self.p;
        let mut nodes = vec![Node {
            feature: LEAF,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: false,
            value: 0.0,
            cover: 0.0,
        }];
        let hist = self.histogram(gh, &idx[..], n == gh.len());
        let (g, h) = self.totals(&hist);
        let mut root = Leaf {
            start: 0,
            end: n,
            g,
            h,
            depth: 0,
            node: 0,
            hist,
            best: None,
        };
        root.best = self.best_split(&root, allowed);
        let mut leaves = vec![root];
        let mut gains = Vec::new();
        while leaves.len() < p.max_leaves {
            let Some((li, split)) = leaves
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.best.map(|s| (i, s)))
                .max_by(|a, b| a.1.gain.total_cmp(&b.1.gain))
            else {
                break;
            };
            let leaf = leaves.swap_remove(li);
            // Partition the leaf's rows: left ones first, stable.
            let (mut nl, mut nr) = (leaf.start, 0usize);
            let col = &self.cols[split.feature];
            for k in leaf.start..leaf.end {
                let r = idx[k];
                let b = col[r as usize] as usize;
                let left = if b == 0 {
                    split.default_left
                } else {
                    b <= split.bin
                };
                if left {
                    idx[nl] = r;
                    nl += 1;
                } else {
                    scratch[nr] = r;
                    nr += 1;
                }
            }
            idx[nl..leaf.end].copy_from_slice(&scratch[..nr]);
            let (left_node, right_node) = (nodes.len(), nodes.len() + 1);
            nodes[leaf.node] = Node {
                feature: split.feature as u32,
                threshold: self.threshold(split),
                left: left_node as u32,
                right: right_node as u32,
                default_left: split.default_left,
                value: 0.0,
                cover: leaf.h,
            };
            for _ in 0..2 {
                nodes.push(Node {
                    feature: LEAF,
                    threshold: 0.0,
                    left: 0,
                    right: 0,
                    default_left: false,
                    value: 0.0,
                    cover: 0.0,
                });
            }
            gains.push((split.feature, split.gain));
            let left_rows = nl - leaf.start;
            let right_rows = leaf.end - nl;
            let mut parent = leaf.hist;
            let small_left = left_rows <= right_rows;
            let (s0, s1) = if small_left {
                (leaf.start, nl)
            } else {
                (nl, leaf.end)
            };
            let small = self.histogram(gh, &idx[s0..s1], false);
            for (a, b) in parent.iter_mut().zip(&small) {
                a[0] -= b[0];
                a[1] -= b[1];
            }
            let (left_hist, right_hist) = if small_left {
                (small, parent)
            } else {
                (parent, small)
            };
            let depth = leaf.depth + 1;
            let mut l = Leaf {
                start: leaf.start,
                end: nl,
                g: split.left_g,
                h: split.left_h,
                depth,
                node: left_node,
                hist: left_hist,
                best: None,
            };
            let mut r = Leaf {
                start: nl,
                end: leaf.end,
                g: leaf.g - split.left_g,
                h: leaf.h - split.left_h,
                depth,
                node: right_node,
                hist: right_hist,
                best: None,
            };
            l.best = self.best_split(&l, allowed);
            r.best = self.best_split(&r, allowed);
            leaves.push(l);
            leaves.push(r);
        }
        let mut out = Vec::with_capacity(leaves.len());
        for l in &leaves {
            let value = -l.g / (l.h + p.lambda_l2) * p.learning_rate;
            let node = &mut nodes[l.node];
            node.value = value;
            node.cover = l.h;
            out.push((l.start, l.end, value));
        }
        (Tree { nodes }, out, gains)
    }

    /// The raw-value threshold of a split: value bins `1..=bin` are `x <= cuts[bin - 1]`.
    fn threshold(&self, s: Split) -> f32 {
        match s.bin {
            // Missing alone goes left: no present value does (JSON has no -inf).
            0 => f32::MIN,
            b => self.cuts[s.feature][b - 1],
        }
    }

    fn totals(&self, hist: &[[f64; 2]]) -> (f64, f64) {
        // Every row lands in exactly one bin of feature 0.
        let (a, b) = (self.offsets[0], self.offsets[1]);
        let mut g = 0.0;
        let mut h = 0.0;
        for e in &hist[a..b] {
            g += e[0];
            h += e[1];
        }
        (g, h)
    }

    /// Gradient/hessian histogram of `rows` (all rows in order when `all`).
    ///
    /// All rows: column by column, features shared out among threads (sequential reads,
    /// a 4 KB histogram per feature that stays in L1). A leaf's rows: row by row over the
    /// row-major copy, rows shared out among threads and summed, with the next rows
    /// prefetched: one cache miss per row instead of one per row and feature.
    fn histogram(&self, gh: &[[f64; 2]], rows: &[u32], all: bool) -> Vec<[f64; 2]> {
        let work = rows.len() * self.f;
        let threads = if work >= 400_000 { self.threads } else { 1 };
        if all {
            return self.histogram_columns(gh, threads.min(self.f));
        }
        if threads <= 1 {
            let mut hist = vec![[0.0; 2]; self.hist_len];
            self.fill_rows(&mut hist, gh, rows);
            return hist;
        }
        let chunk = rows.len().div_ceil(threads);
        let parts: Vec<Vec<[f64; 2]>> = std::thread::scope(|s| {
            let handles: Vec<_> = rows
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut h = vec![[0.0; 2]; self.hist_len];
                        self.fill_rows(&mut h, gh, part);
                        h
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut it = parts.into_iter();
        let mut total = it.next().unwrap_or_else(|| vec![[0.0; 2]; self.hist_len]);
        for p in it {
            for (a, b) in total.iter_mut().zip(&p) {
                a[0] += b[0];
                a[1] += b[1];
            }
        }
        total
    }

    fn fill_rows(&self, h: &mut [[f64; 2]], gh: &[[f64; 2]], rows: &[u32]) {
        const AHEAD: usize = 12;
        let f = self.f;
        let offsets = &self.offsets[..f];
        for (k, &r) in rows.iter().enumerate() {
            if let Some(&next) = rows.get(k + AHEAD) {
                let next = next as usize;
                prefetch(&self.row_bins[next * f..]);
                prefetch_gh(&gh[next..]);
            }
            let r = r as usize;
            let v = gh[r];
            let row = &self.row_bins[r * f..r * f + f];
            for (&b, &o) in row.iter().zip(offsets) {
                let e = &mut h[o + b as usize];
                e[0] += v[0];
                e[1] += v[1];
            }
        }
    }

    fn histogram_columns(&self, gh: &[[f64; 2]], threads: usize) -> Vec<[f64; 2]> {
        let mut hist = vec![[0.0; 2]; self.hist_len];
        let fill = |hist: &mut [[f64; 2]], features: std::ops::Range<usize>| {
            let base = self.offsets[features.start];
            // Four interleaved copies: runs of equal bins (common in low-cardinality
            // features) would otherwise chain every add to the previous store.
            let mut lanes = vec![[[0.0f64; 2]; 256]; 4];
            for j in features {
                let h = &mut hist[self.offsets[j] - base..self.offsets[j + 1] - base];
                let col = &self.cols[j];
                let (c4, g4) = (col.chunks_exact(4), gh.chunks_exact(4));
                let (cr, gr) = (c4.remainder(), g4.remainder());
                for (b, v) in c4.zip(g4) {
                    for l in 0..4 {
                        let e = &mut lanes[l][b[l] as usize];
                        e[0] += v[l][0];
                        e[1] += v[l][1];
                    }
                }
                for (&b, v) in cr.iter().zip(gr) {
                    let e = &mut lanes[0][b as usize];
                    e[0] += v[0];
                    e[1] += v[1];
                }
                for (k, e) in h.iter_mut().enumerate() {
                    for lane in lanes.iter_mut() {
                        e[0] += lane[k][0];
                        e[1] += lane[k][1];
                        lane[k] = [0.0; 2];
                    }
                }
            }
        };
        if threads <= 1 {
            fill(&mut hist, 0..self.f);
            return hist;
        }
        // Feature ranges of about equal bin counts, one per thread.
        let mut ranges = Vec::with_capacity(threads);
        let mut start = 0;
        for t in 1..=threads {
            let target = self.offsets[self.f] * t / threads;
            let mut end = start;
            while end < self.f && (self.offsets[end + 1] <= target || end == start) {
                end += 1;
            }
            if t == threads {
                end = self.f;
            }
            if end > start {
                ranges.push(start..end);
            }
            start = end;
        }
        std::thread::scope(|s| {
            let mut rest: &mut [[f64; 2]] = &mut hist;
            for range in ranges {
                let len = self.offsets[range.end] - self.offsets[range.start];
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len);
                rest = tail;
                let fill = &fill;
                s.spawn(move || fill(mine, range));
            }
        });
        hist
    }

    fn best_split(&self, leaf: &Leaf, allowed: &[bool]) -> Option<Split> {
        let p = self.p;
        let rows = leaf.end - leaf.start;
        if rows < 2 * p.min_data_in_leaf.max(1) {
            return None;
        }
        if p.max_depth > 0 && leaf.depth >= p.max_depth {
            return None;
        }
        let lambda = p.lambda_l2;
        let score = |g: f64, h: f64| g * g / (h + lambda);
        let parent = score(leaf.g, leaf.h);
        // Row counts from hessians, as LightGBM does: the histogram keeps no counts.
        let per_h = rows as f64 / leaf.h.max(1e-300);
        let min_rows = p.min_data_in_leaf as f64;
        let mut best: Option<Split> = None;
        for (j, _) in allowed.iter().enumerate().filter(|(_, a)| **a) {
            let (a, b) = (self.offsets[j], self.offsets[j + 1]);
            let hist = &leaf.hist[a..b];
            let [mg, mh] = hist[0];
            let has_missing = mh > 0.0;
            for default_left in [false, true] {
                if default_left && !has_missing {
                    break;
                }
                let (mut lg, mut lh) = if default_left { (mg, mh) } else { (0.0, 0.0) };
                let nb = b - a;
                // Missing values alone against all others (the `bin == 0` split): when
                // being missing is itself the signal.
                if default_left && mg != 0.0 {
                    let (rg, rh) = (leaf.g - lg, leaf.h - lh);
                    let ok = lh >= p.min_sum_hessian
                        && lh * per_h >= min_rows
                        && rh >= p.min_sum_hessian
                        && rh * per_h >= min_rows;
                    let gain = score(lg, lh) + score(rg, rh) - parent;
                    if ok && gain > p.min_gain && best.is_none_or(|s| gain > s.gain) {
                        best = Some(Split {
                            gain,
                            feature: j,
                            bin: 0,
                            default_left,
                            left_g: lg,
                            left_h: lh,
                        });
                    }
                }
                for (bin, e) in hist.iter().enumerate().take(nb - 1).skip(1) {
                    lg += e[0];
                    lh += e[1];
                    let (rg, rh) = (leaf.g - lg, leaf.h - lh);
                    if lh < p.min_sum_hessian || lh * per_h < min_rows {
                        continue;
                    }
                    if rh < p.min_sum_hessian || rh * per_h < min_rows {
                        break;
                    }
                    let gain = score(lg, lh) + score(rg, rh) - parent;
                    if gain > p.min_gain && best.is_none_or(|s| gain > s.gain) {
                        best = Some(Split {
                            gain,
                            feature: j,
                            bin,
                            default_left,
                            left_g: lg,
                            left_h: lh,
                        });
                    }
                }
            }
        }
        best
    }
}
