//! Exact path-dependent TreeSHAP (Lundberg, Erion and Lee, "Consistent Individualized
//! Feature Attribution for Tree Ensembles", 2018): each feature's Shapley value for one
//! prediction, the expectation over absent features taken along the training cover of
//! each branch. The contributions plus [`expected_value`] add up to the margin exactly
//! (local accuracy). Two algorithms give the same numbers (tested against each other, the
//! exponential definition and a leaf-by-leaf closed form):
//!
//! - [`contributions`]: the paper's recursive Algorithm 2, O(leaves x depth^2) per tree,
//!   nothing to set up. What [`Explainer`] falls back to for paths of more than
//!   [`MAX_PATH_FEATURES`] features (past about 40 its rounding errors pass 1e-9).
//! - [`Explainer`], for serving: the Shapley weights as integrals (the insight of Linear
//!   TreeSHAP, Yu et al. 2022), evaluated by Gauss-Legendre quadrature.
//!
//! # The quadrature
//!
//! Take a leaf of value `v` whose path splits on the `d` distinct features `U`. For `j` in
//! `U`, `z_j` is the product of the cover fractions (child / node) of the path's splits on
//! `j`, and `o_j` is 1 when the row follows all of them, else 0; a feature split twice on
//! a path is one element with merged `z` and `o`, as TreeSHAP's unwinding makes it. The
//! leaf gives `i` in `U`
//!
//! `v (o_i - z_i) sum over S in U - {i} of |S|! (d-|S|-1)! / d! prod_{j in S} o_j prod_{j not in S} z_j`,
//!
//! and as `|S|! (d-|S|-1)! / d!` is the integral over [0, 1] of `t^|S| (1-t)^(d-|S|-1)`,
//! the sum is the integral of `prod_{j != i} (z_j + (o_j - z_j) t)`: a polynomial of
//! degree `d - 1`, integrated exactly by `ceil(d / 2)` Gauss-Legendre points. The explainer
//! takes 4 points up to 8 features on a path (one 4-wide vector; 8, 16, 32 points up to 16,
//! 32, 64 features).
//!
//! Per tree, per point `t`: one pass down multiplies the factors `z + (o - z) t` of the
//! edges above each node (`P`, the quadrature weight included); one pass up sums below
//! each node the leaf values times the factors of the edges below it
//! (`U = sum over children of F_c U_c`), and adds to a split's feature
//! `P sum over children of (o_c - z_c) U_c`: its share from the leaves whose deepest split
//! on that feature it is. A split on a feature split on above it uses the merged factor,
//! divides out the earlier one (reciprocals precomputed) and takes out what the earlier
//! split counted for the leaves below it. Below an edge with `z = o = 0` (a branch no
//! training row took, away from the row) everything is 0. A split above two leaves, half
//! of all splits, has `U = c + s t` and contribution `P s` with scalars `c` and `s`, so it
//! is laid out apart and costs a few scalar operations. In all O(nodes x points) per tree
//! from 32-byte nodes read in order: no table, nothing read at random
//! ([`TableExplainer`], per leaf a value for every subset of its path features, 6.5 MB
//! for 200 trees of depth 6, was 9x slower; `docs/PERFORMANCE.md`).

use crate::gbdt::{Forest, Tree};

#[derive(Clone, Copy, Debug, Default)]
struct PathElem {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

/// The cover-weighted mean margin: the prediction with no feature known.
pub fn expected_value(forest: &Forest) -> f64 {
    forest.base + forest.trees.iter().map(tree_expected).sum::<f64>()
}

fn tree_expected(t: &Tree) -> f64 {
    fn walk(t: &Tree, i: usize) -> f64 {
        let n = &t.nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        let (l, r) = (&t.nodes[n.left as usize], &t.nodes[n.right as usize]);
        if n.cover <= 0.0 {
            return 0.0;
        }
        (l.cover * walk(t, n.left as usize) + r.cover * walk(t, n.right as usize)) / n.cover
    }
    walk(t, 0)
}

/// Shapley values of every feature for row `x`, in margin (log-odds) units.
pub fn contributions(forest: &Forest, x: &[f32]) -> Vec<f64> {
    let mut phi = vec![0.0; forest.n_features];
    let max_depth = forest.trees.iter().map(Tree::depth).max().unwrap_or(0);
    let mut buf = vec![PathElem::default(); (max_depth + 3) * (max_depth + 4) / 2];
    for t in &forest.trees {
        if t.nodes[0].is_leaf() {
            continue;
        }
        recurse(t, x, &mut phi, 0, &mut buf, 0, 0, 1.0, 1.0, -1);
    }
    phi
}

/// One node of the walk. The parent's path is `buf[parent..parent + depth]`; this call's
/// path is a copy of it placed right after, extended by the split that led here. Children
/// copy it in turn, so it stays intact for the second child.
#[allow(clippy::too_many_arguments)]
fn recurse(
    t: &Tree,
    x: &[f32],
    phi: &mut [f64],
    node: usize,
    buf: &mut [PathElem],
    parent: usize,
    depth: usize,
    zero: f64,
    one: f64,
    feature: i64,
) {
    if zero == 0.0 && one == 0.0 {
        // A branch no training row took, away from the row: every leaf below it weighs
        // nothing (and unwinding a repeated feature there would divide 0 by 0).
        return;
    }
    let own = parent + depth + 1;
    buf.copy_within(parent..parent + depth, own);
    let path = &mut buf[own..own + depth + 1];
    extend(path, depth, zero, one, feature);
    let n = &t.nodes[node];
    if n.is_leaf() {
        for i in 1..=depth {
            let w = unwound_sum(path, depth, i);
            let e = path[i];
            phi[e.feature as usize] += w * (e.one - e.zero) * n.value;
        }
        return;
    }
    let hot = n.next(x) as usize;
    let cold = if hot == n.left as usize {
        n.right as usize
    } else {
        n.left as usize
    };
    let share = |c: usize| {
        if n.cover > 0.0 {
            t.nodes[c].cover / n.cover
        } else {
            0.0
        }
    };
    let (hot_share, cold_share) = (share(hot), share(cold));
    let (mut iz, mut io) = (1.0, 1.0);
    let mut depth = depth;
    // A feature already on the path is undone first, so it is counted once.
    if let Some(k) = (1..=depth).find(|&k| path[k].feature == n.feature as i64) {
        iz = path[k].zero;
        io = path[k].one;
        unwind(path, depth, k);
        depth -= 1;
    }
    let f = n.feature as i64;
    recurse(t, x, phi, hot, buf, own, depth + 1, iz * hot_share, io, f);
    recurse(
        t,
        x,
        phi,
        cold,
        buf,
        own,
        depth + 1,
        iz * cold_share,
        0.0,
        f,
    );
}

fn extend(path: &mut [PathElem], l: usize, zero: f64, one: f64, feature: i64) {
    path[l] = PathElem {
        feature,
        zero,
        one,
        weight: if l == 0 { 1.0 } else { 0.0 },
    };
    let lf = (l + 1) as f64;
    for i in (0..l).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / lf;
        path[i].weight = zero * path[i].weight * (l - i) as f64 / lf;
    }
}

fn unwind(path: &mut [PathElem], l: usize, k: usize) {
    let (one, zero) = (path[k].one, path[k].zero);
    let mut next = path[l].weight;
    let lf = (l + 1) as f64;
    for i in (0..l).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next * lf / ((i + 1) as f64 * one);
            next = tmp - path[i].weight * zero * (l - i) as f64 / lf;
        } else {
            path[i].weight = path[i].weight * lf / (zero * (l - i) as f64);
        }
    }
    for i in k..l {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

fn unwound_sum(path: &[PathElem], l: usize, k: usize) -> f64 {
    let (one, zero) = (path[k].one, path[k].zero);
    let mut next = path[l].weight;
    let lf = (l + 1) as f64;
    let mut total = 0.0;
    for i in (0..l).rev() {
        if one != 0.0 {
            let tmp = next * lf / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].weight - tmp * zero * (l - i) as f64 / lf;
        } else if zero != 0.0 {
            total += path[i].weight / zero / ((l - i) as f64 / lf);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::{Node, LEAF};

    /// E[f(x) | x_S] along training covers: a feature in S follows x, one outside S
    /// averages both children by cover.
    fn cond_expectation(t: &Tree, x: &[f32], s: &[bool], i: usize) -> f64 {
        let n = &t.nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        if s[n.feature as usize] {
            return cond_expectation(t, x, s, n.next(x) as usize);
        }
        let (l, r) = (n.left as usize, n.right as usize);
        (t.nodes[l].cover * cond_expectation(t, x, s, l)
            + t.nodes[r].cover * cond_expectation(t, x, s, r))
            / n.cover
    }

    /// Shapley values by enumerating every subset.
    fn brute(t: &Tree, x: &[f32], m: usize) -> Vec<f64> {
        let fact = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
        let mut phi = vec![0.0; m];
        for (i, p) in phi.iter_mut().enumerate() {
            for mask in 0u32..(1 << m) {
                if mask & (1 << i) != 0 {
                    continue;
                }
                let s: Vec<bool> = (0..m).map(|j| mask & (1 << j) != 0).collect();
                let mut si = s.clone();
                si[i] = true;
                let k = mask.count_ones() as usize;
                let w = fact(k) * fact(m - k - 1) / fact(m);
                *p += w * (cond_expectation(t, x, &si, 0) - cond_expectation(t, x, &s, 0));
            }
        }
        phi
    }

    fn inner(feature: u32, threshold: f32, left: u32, right: u32, cover: f64) -> Node {
        Node {
            feature,
            threshold,
            left,
            right,
            default_left: true,
            value: 0.0,
            cover,
        }
    }

    fn leaf(value: f64, cover: f64) -> Node {
        Node {
            feature: LEAF,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: false,
            value,
            cover,
        }
    }

    #[test]
    fn matches_the_exponential_definition_with_a_repeated_feature() {
        // Feature 0 is split twice on one path, feature 2 never: both cases of the
        // algorithm (unwinding a repeated feature; a zero contribution).
        let t = Tree {
            nodes: vec![
                inner(0, 0.5, 1, 2, 100.0),
                inner(1, 1.0, 3, 4, 60.0),
                inner(3, 2.0, 5, 6, 40.0),
                inner(0, 0.2, 7, 8, 35.0),
                leaf(-0.7, 25.0),
                leaf(0.9, 10.0),
                leaf(0.3, 30.0),
                leaf(1.5, 20.0),
                leaf(-1.1, 15.0),
            ],
        };
        let forest = Forest::new(0.25, vec![t.clone()], 4, vec![0.0; 4], vec![0; 4]);
        for x in [
            [0.1f32, 0.5, 9.0, 1.0],
            [0.3, 0.5, 0.0, 3.0],
            [0.9, 2.0, 0.0, 1.0],
            [f32::NAN, 2.0, 0.0, f32::NAN],
        ] {
            let fast = contributions(&forest, &x);
            let slow = brute(&t, &x, 4);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-9, "{fast:?} vs {slow:?} at {x:?}");
            }
            let total = expected_value(&forest) + fast.iter().sum::<f64>();
            assert!((total - forest.margin(&x)).abs() < 1e-9);
            assert_eq!(fast[2], 0.0);
        }
    }
}

/// TreeSHAP for serving, by Gauss-Legendre quadrature over the Shapley weights (see the
/// module documentation): the same numbers as [`contributions`] (tested), in
/// O(nodes x points) per tree, from a compact copy of the forest read in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Explainer {
    /// The splits of every tree that has a split below them (or that repeat a feature),
    /// depth first (a node, its left subtree, its right subtree), tree after tree.
    splits: Vec<Split>,
    /// The splits with two leaves below them, tree after tree: on a new feature, and on a
    /// feature split on above.
    bottoms: Vec<Bottom>,
    repeat_bottoms: Vec<RepeatBottom>,
    /// The values of the leaves under `splits`, tree after tree.
    leaves: Vec<f64>,
    /// The splits on a feature already split on above them, in the order of `splits`.
    repeats: Vec<Repeat>,
    /// `1 / (z + (o - z) t)` of each repeat's earlier split, for `o` = 0 then 1: `2 * points`
    /// values per repeat.
    repeat_inv: Vec<f64>,
    /// The same for `repeat_bottoms`.
    repeat_bottom_inv: Vec<f64>,
    trees: Vec<Span>,
    /// The most slots and splits of one tree: the size of the per-call scratch.
    widest_tree: usize,
    widest_splits: usize,
    n_features: usize,
    /// More than the largest feature split on: a row is read as `2 * n_inputs` values,
    /// see [`Split::input`].
    n_inputs: usize,
    /// Quadrature points on [0, 1] and their weights: enough points to integrate a
    /// polynomial of degree (distinct features on a path - 1) exactly, 4, 8, 16 or 32.
    t: Vec<f64>,
    w: Vec<f64>,
    pub expected_value: f64,
}

/// Where one tree's parts start in [`Explainer`]'s arrays, and how many there are.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
    splits: u32,
    n_splits: u32,
    bottoms: u32,
    n_bottoms: u32,
    repeat_bottoms: u32,
    n_repeat_bottoms: u32,
    leaves: u32,
    n_leaves: u32,
    repeats: u32,
    n_repeats: u32,
}

/// A split with a split below it: 32 bytes. Children are named by slot: the tree's
/// [`Split`]s first, then its [`Bottom`]s, its [`RepeatBottom`]s, its leaves.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    /// The feature, plus `n_inputs` when a missing value goes right. The row is read as
    /// its values with missing ones as -inf (which go left), then as they are (a missing
    /// value compares false: right); the contributions are added up the same way.
    input: u32,
    threshold: f32,
    left: u32,
    right: u32,
    /// Zero fractions `z` (cover of the child / cover of the node) of the left and right
    /// edges, times those of the earlier splits on the same feature on the path.
    z_left: f64,
    z_right: f64,
}

/// A split with two leaves below it, on a feature not split on above it: 32 bytes. With
/// `o` = 1 for the leaf the row goes to and 0 for the other, the sum below it is
/// `sum (z + (o - z) t) v = c + s t` and its contribution `P s`, with
/// `s = sum (o - z) v = s_right + o_left d`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bottom {
    input: u32,
    threshold: f32,
    c: f64,
    s_right: f64,
    d: f64,
}

/// A split with two leaves below it, on a feature split on above it: 48 bytes. With `o`
/// the merged direction of each leaf edge (0 when the row left an earlier split on the
/// feature) and `z` its merged zero fraction, the sum below it is
/// `sum (z + (o - z) t) v / before` with `before` the earlier split's factor, and its
/// contribution as for [`Split`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct RepeatBottom {
    input: u32,
    threshold: f32,
    /// As [`Repeat::edge`].
    edge: u32,
    /// Zero fraction of that edge.
    z_before: f64,
    /// `sum z v` over the two leaves.
    c: f64,
    v_left: f64,
    v_right: f64,
}

/// A split on a feature split on above it, and the edge of the deepest earlier split on
/// the feature.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Repeat {
    /// Its position among the tree's splits.
    split: u32,
    /// That edge: 2 x (position of its split) + (0 left, 1 right).
    edge: u32,
    /// Its (merged) zero fraction.
    z: f64,
}

/// Distinct features on one root-to-leaf path that [`Explainer`] supports (32 quadrature
/// points); deeper trees are explained by [`contributions`].
pub const MAX_PATH_FEATURES: usize = 64;

impl Explainer {
    /// Lays the forest out for explaining; `None` when a path has more than
    /// [`MAX_PATH_FEATURES`] distinct features (use [`contributions`]).
    pub fn new(forest: &Forest) -> Option<Self> {
        let split_features = forest.trees.iter().flat_map(|t| &t.nodes);
        let n_inputs = split_features
            .filter(|n| !n.is_leaf())
            .map(|n| n.feature as usize + 1)
            .max()
            .unwrap_or(0)
            .max(forest.n_features);
        let mut e = Self {
            splits: Vec::new(),
            bottoms: Vec::new(),
            repeat_bottoms: Vec::new(),
            leaves: Vec::new(),
            repeats: Vec::new(),
            repeat_inv: Vec::new(),
            repeat_bottom_inv: Vec::new(),
            trees: Vec::new(),
            widest_tree: 0,
            widest_splits: 0,
            n_features: forest.n_features,
            n_inputs,
            t: Vec::new(),
            w: Vec::new(),
            expected_value: expected_value(forest),
        };
        let mut widest_path = 0;
        for t in &forest.trees {
            if t.nodes.first().is_none_or(|n| n.is_leaf()) {
                continue;
            }
            let mut out = Layout {
                n_inputs: n_inputs as u32,
                ..Layout::default()
            };
            out.add(t, 0, &mut Vec::new());
            let span = Span {
                splits: e.splits.len() as u32,
                n_splits: out.splits.len() as u32,
                bottoms: e.bottoms.len() as u32,
                n_bottoms: out.bottoms.len() as u32,
                repeat_bottoms: e.repeat_bottoms.len() as u32,
                n_repeat_bottoms: out.repeat_bottoms.len() as u32,
                leaves: e.leaves.len() as u32,
                n_leaves: out.leaves.len() as u32,
                repeats: e.repeats.len() as u32,
                n_repeats: out.repeats.len() as u32,
            };
            e.trees.push(span);
            let slots =
                out.splits.len() + out.bottoms.len() + out.repeat_bottoms.len() + out.leaves.len();
            e.widest_tree = e.widest_tree.max(slots);
            e.widest_splits = e.widest_splits.max(out.splits.len());
            widest_path = widest_path.max(out.widest_path);
            // Children named by kind and position become slots.
            let first_bottom = out.splits.len() as u32;
            let first_repeat_bottom = first_bottom + out.bottoms.len() as u32;
            let first_leaf = first_repeat_bottom + out.repeat_bottoms.len() as u32;
            let slot = |c: Child| match c {
                Child::Split(k) => k,
                Child::Bottom(k) => first_bottom + k,
                Child::RepeatBottom(k) => first_repeat_bottom + k,
                Child::Leaf(k) => first_leaf + k,
            };
            e.splits.extend(out.splits.iter().map(|(sp, l, r)| Split {
                left: slot(*l),
                right: slot(*r),
                ..*sp
            }));
            e.bottoms.extend(out.bottoms);
            e.repeat_bottoms.extend(out.repeat_bottoms);
            e.leaves.extend(out.leaves);
            e.repeats.extend(out.repeats);
        }
        if widest_path > MAX_PATH_FEATURES || !e.indices_in_bounds() {
            return None;
        }
        // n points integrate degree 2n - 1 exactly; the integrand has degree d - 1.
        let points = widest_path.div_ceil(2).next_power_of_two().max(4);
        (e.t, e.w) = gauss_legendre(points);
        e.repeat_inv = reciprocals(&e.t, e.repeats.iter().map(|r| r.z));
        e.repeat_bottom_inv = reciprocals(&e.t, e.repeat_bottoms.iter().map(|r| r.z_before));
        Some(e)
    }

    /// Whether every index [`explain_tree`] reads without a bounds check is in bounds: a
    /// slot of the tree (the scratch has `widest_tree` of them), an input (the row and
    /// the sums have `2 * n_inputs`), an edge of an earlier split. True by construction;
    /// checked so that the unchecked reads rest on a test, not on reading `Layout`.
    fn indices_in_bounds(&self) -> bool {
        let inputs = 2 * self.n_inputs as u32;
        self.trees.iter().all(|span| {
            let slots = span.n_splits + span.n_bottoms + span.n_repeat_bottoms + span.n_leaves;
            let (a, b) = (span.splits as usize, (span.splits + span.n_splits) as usize);
            let splits = self.splits.get(a..b).unwrap_or_default();
            let (a, b) = (
                span.bottoms as usize,
                (span.bottoms + span.n_bottoms) as usize,
            );
            let bottoms = self.bottoms.get(a..b).unwrap_or_default();
            let (a, b) = (
                span.repeat_bottoms as usize,
                (span.repeat_bottoms + span.n_repeat_bottoms) as usize,
            );
            let repeat_bottoms = self.repeat_bottoms.get(a..b).unwrap_or_default();
            slots as usize <= self.widest_tree
                && slots > 0
                && span.n_splits as usize <= self.widest_splits
                && splits.len() == span.n_splits as usize
                && bottoms.len() == span.n_bottoms as usize
                && repeat_bottoms.len() == span.n_repeat_bottoms as usize
                && splits.iter().enumerate().all(|(i, sp)| {
                    sp.left < slots
                        && sp.right < slots
                        && sp.left > i as u32
                        && sp.right > i as u32
                        && sp.input < inputs
                })
                && bottoms.iter().all(|b| b.input < inputs)
                && repeat_bottoms
                    .iter()
                    .all(|b| b.input < inputs && b.edge / 2 < span.n_splits)
        })
    }

    /// Shapley values of every feature for row `x`, in margin (log-odds) units. A value
    /// missing from the end of `x` counts as missing (NaN).
    pub fn contributions(&self, x: &[f32]) -> Vec<f64> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the two instruction sets `run_avx2` is compiled for.
            return unsafe { self.run_avx2(x) };
        }
        self.run::<false>(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, x: &[f32]) -> Vec<f64> {
        self.run::<true>(x)
    }

    /// `FMA`: fused multiply-adds (when the CPU has them: otherwise they are slow calls).
    #[inline(always)]
    fn run<const FMA: bool>(&self, x: &[f32]) -> Vec<f64> {
        match self.t.len() {
            4 => self.run_n::<4, FMA>(x),
            8 => self.run_n::<8, FMA>(x),
            16 => self.run_n::<16, FMA>(x),
            _ => self.run_n::<32, FMA>(x),
        }
    }

    #[inline(always)]
    fn run_n<const N: usize, const FMA: bool>(&self, x: &[f32]) -> Vec<f64> {
        let mut t = [0.0; N];
        let mut w = [0.0; N];
        t.copy_from_slice(&self.t);
        w.copy_from_slice(&self.w);
        let n = self.n_inputs;
        let mut xs = vec![f64::NAN; 2 * n];
        for (j, &v) in x.iter().take(n).enumerate() {
            xs[n + j] = f64::from(v);
        }
        for j in 0..n {
            let v = xs[n + j];
            xs[j] = if v.is_nan() { f64::NEG_INFINITY } else { v };
        }
        let inv: &[[f64; N]] = self.repeat_inv.as_chunks::<N>().0;
        let bottom_inv: &[[f64; N]] = self.repeat_bottom_inv.as_chunks::<N>().0;
        let mut s = Scratch::<N> {
            down: vec![[0.0; N]; self.widest_tree],
            up: vec![[0.0; N]; self.widest_tree],
            one: vec![[0.0; 2]; self.widest_splits],
            acc: vec![[0.0; N]; 2 * n],
        };
        for span in &self.trees {
            let r = span.repeats as usize..(span.repeats + span.n_repeats) as usize;
            let rb = span.repeat_bottoms as usize
                ..(span.repeat_bottoms + span.n_repeat_bottoms) as usize;
            let tree = TreeRef {
                splits: &self.splits[span.splits as usize..][..span.n_splits as usize],
                bottoms: &self.bottoms[span.bottoms as usize..][..span.n_bottoms as usize],
                repeat_bottoms: &self.repeat_bottoms[rb.clone()],
                repeat_bottom_inv: &bottom_inv[2 * rb.start..2 * rb.end],
                leaves: &self.leaves[span.leaves as usize..][..span.n_leaves as usize],
                repeats: &self.repeats[r.clone()],
                inv: &inv[2 * r.start..2 * r.end],
            };
            // SAFETY: `new` checked the indices (`indices_in_bounds`) against these sizes:
            // `s` has `widest_tree` slots, `widest_splits` splits and `2 * n_inputs` sums,
            // `xs` has `2 * n_inputs` values.
            unsafe { explain_tree::<N, FMA>(&tree, &xs, &t, &w, &mut s) };
        }
        (0..self.n_features)
            .map(|j| s.acc[j].iter().chain(&s.acc[n + j]).sum())
            .collect()
    }
}

/// A child in a [`Layout`], before slots are numbered.
#[derive(Clone, Copy, Debug)]
enum Child {
    Split(u32),
    Bottom(u32),
    RepeatBottom(u32),
    Leaf(u32),
}

/// One tree being copied into an [`Explainer`].
#[derive(Default)]
struct Layout {
    splits: Vec<(Split, Child, Child)>,
    bottoms: Vec<Bottom>,
    repeat_bottoms: Vec<RepeatBottom>,
    leaves: Vec<f64>,
    repeats: Vec<Repeat>,
    n_inputs: u32,
    widest_path: usize,
}

impl Layout {
    /// Copies the subtree at `i` depth first. `path` holds, for each feature split on
    /// above, (feature, its deepest edge as in [`Repeat::edge`], merged zero fraction of
    /// that edge).
    fn add(&mut self, t: &Tree, i: usize, path: &mut Vec<(u32, u32, f64)>) -> Child {
        let n = &t.nodes[i];
        if n.is_leaf() {
            self.widest_path = self.widest_path.max(path.len());
            self.leaves.push(n.value);
            return Child::Leaf(self.leaves.len() as u32 - 1);
        }
        let share = |c: u32| {
            if n.cover > 0.0 {
                t.nodes[c as usize].cover / n.cover
            } else {
                0.0
            }
        };
        let input = n.feature + if n.default_left { 0 } else { self.n_inputs };
        let earlier = path.iter().position(|&(f, _, _)| f == n.feature);
        let (l, r) = (&t.nodes[n.left as usize], &t.nodes[n.right as usize]);
        if l.is_leaf() && r.is_leaf() && earlier.is_none() {
            self.widest_path = self.widest_path.max(path.len() + 1);
            let (zl, zr) = (share(n.left), share(n.right));
            let (vl, vr) = (l.value, r.value);
            let s_right = -zl * vl + (1.0 - zr) * vr;
            self.bottoms.push(Bottom {
                input,
                threshold: n.threshold,
                c: zl * vl + zr * vr,
                s_right,
                d: (1.0 - zl) * vl - zr * vr - s_right,
            });
            return Child::Bottom(self.bottoms.len() as u32 - 1);
        }
        if let (true, true, Some(k)) = (l.is_leaf(), r.is_leaf(), earlier) {
            self.widest_path = self.widest_path.max(path.len());
            let (_, edge, z_before) = path[k];
            let (zl, zr) = (z_before * share(n.left), z_before * share(n.right));
            self.repeat_bottoms.push(RepeatBottom {
                input,
                threshold: n.threshold,
                edge,
                z_before,
                c: zl * l.value + zr * r.value,
                v_left: l.value,
                v_right: r.value,
            });
            return Child::RepeatBottom(self.repeat_bottoms.len() as u32 - 1);
        }
        let me = self.splits.len();
        let z_before = match earlier {
            Some(k) => {
                self.repeats.push(Repeat {
                    split: me as u32,
                    edge: path[k].1,
                    z: path[k].2,
                });
                path[k].2
            }
            None => 1.0,
        };
        let (z_left, z_right) = (z_before * share(n.left), z_before * share(n.right));
        let split = Split {
            input,
            threshold: n.threshold,
            left: 0,
            right: 0,
            z_left,
            z_right,
        };
        // The children are set once placed.
        self.splits.push((split, Child::Leaf(0), Child::Leaf(0)));
        for (side, child, z) in [(0, n.left, z_left), (1, n.right, z_right)] {
            let entry = (n.feature, 2 * me as u32 + side, z);
            let saved = match earlier {
                Some(k) => Some(std::mem::replace(&mut path[k], entry)),
                None => {
                    path.push(entry);
                    None
                }
            };
            let c = self.add(t, child as usize, path);
            match saved {
                Some(old) => path[earlier.unwrap_or_default()] = old,
                None => {
                    path.pop();
                }
            }
            if side == 0 {
                self.splits[me].1 = c;
            } else {
                self.splits[me].2 = c;
            }
        }
        Child::Split(me as u32)
    }
}

/// One tree of an [`Explainer`], with its repeats and their reciprocals.
struct TreeRef<'a, const N: usize> {
    splits: &'a [Split],
    bottoms: &'a [Bottom],
    repeat_bottoms: &'a [RepeatBottom],
    repeat_bottom_inv: &'a [[f64; N]],
    leaves: &'a [f64],
    repeats: &'a [Repeat],
    inv: &'a [[f64; N]],
}

/// The values of one explanation, per slot and per split reused from tree to tree.
struct Scratch<const N: usize> {
    /// Product over the features on the path to the node of their factor
    /// `z + (o - z) t`, times the quadrature weights.
    down: Vec<[f64; N]>,
    /// Sum over the leaves below the node of the leaf value times the product of the
    /// factors below the node.
    up: Vec<[f64; N]>,
    /// Per split, `o` of its left and right edge: 1 when the row follows every split on
    /// its feature down to the child, else 0 (merged like the zero fraction).
    one: Vec<[f64; 2]>,
    /// Contributions per input (see [`Split::input`]) and quadrature point.
    acc: Vec<[f64; N]>,
}

#[inline(always)]
fn fma<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `z + (o - z) t` at every quadrature point.
#[inline(always)]
fn factor<const N: usize, const FMA: bool>(t: &[f64; N], z: f64, one: f64) -> [f64; N] {
    let k = one - z;
    std::array::from_fn(|q| fma::<FMA>(k, t[q], z))
}

/// 1 when the row goes left at a split reading `input`, else 0.
///
/// # Safety
/// `input < xs.len()`.
#[inline(always)]
unsafe fn goes_left(xs: &[f64], input: u32, threshold: f32) -> f64 {
    // In f64 and without `if`: the compiler makes this a compare and a mask, not a
    // branch on a coin flip.
    // SAFETY: the caller's.
    let left = unsafe { *at(xs, input as usize) } <= f64::from(threshold);
    f64::from(u8::from(left))
}

/// `s[i]` without a bounds check. Its callers are in [`explain_tree`].
///
/// # Safety
/// `i < s.len()`.
#[inline(always)]
unsafe fn at<T>(s: &[T], i: usize) -> &T {
    debug_assert!(i < s.len());
    // SAFETY: the caller's.
    unsafe { s.get_unchecked(i) }
}

/// `&mut s[i]` without a bounds check.
///
/// # Safety
/// `i < s.len()`.
#[inline(always)]
unsafe fn at_mut<T>(s: &mut [T], i: usize) -> &mut T {
    debug_assert!(i < s.len());
    // SAFETY: the caller's.
    unsafe { s.get_unchecked_mut(i) }
}

/// Adds one tree's contributions, per quadrature point, to `s.acc`. Without bounds checks
/// on the slots, inputs and splits it reads in its loops (a fifth of the instructions).
///
/// # Safety
/// The tree's slots (`left`, `right` of its splits, counted from 0 over its splits,
/// bottoms, repeated bottoms and leaves) are below `s.down.len()` and `s.up.len()`; its
/// inputs below `xs.len()` and `s.acc.len()`; its split count at most `s.one.len()`: what
/// [`Explainer::indices_in_bounds`] checks.
#[inline(always)]
unsafe fn explain_tree<const N: usize, const FMA: bool>(
    tree: &TreeRef<'_, N>,
    xs: &[f64],
    t: &[f64; N],
    w: &[f64; N],
    s: &mut Scratch<N>,
) {
    let n_splits = tree.splits.len();
    let first_repeat_bottom = n_splits + tree.bottoms.len();
    let first_leaf = first_repeat_bottom + tree.repeat_bottoms.len();
    let n = first_leaf + tree.leaves.len();
    let (down, up, one) = (&mut s.down[..n], &mut s.up[..n], &mut s.one[..n_splits]);
    let acc = &mut s.acc[..];
    let repeat_at = |r: usize| tree.repeats.get(r).map_or(usize::MAX, |p| p.split as usize);
    // The root: the first split, or the only bottom.
    down[0] = *w;
    // Top down: which way the row goes at each split, and the products along the paths.
    let (mut r, mut next) = (0, repeat_at(0));
    for (i, sp) in tree.splits.iter().enumerate() {
        // SAFETY (here and below): the bounds in this function's safety section.
        let ol = unsafe { goes_left(xs, sp.input, sp.threshold) };
        let (mut ol, mut or) = (ol, 1.0 - ol);
        let mut p = unsafe { *at(down, i) };
        if i == next {
            // The merged factor replaces the earlier split's.
            let e = tree.repeats[r].edge as usize;
            let oa = one[e / 2][e % 2];
            ol *= oa;
            or *= oa;
            let inv = &tree.inv[2 * r + usize::from(oa != 0.0)];
            p = std::array::from_fn(|q| p[q] * inv[q]);
            r += 1;
            next = repeat_at(r);
        }
        let (fl, fr) = (
            factor::<N, FMA>(t, sp.z_left, ol),
            factor::<N, FMA>(t, sp.z_right, or),
        );
        unsafe {
            *at_mut(down, sp.left as usize) = std::array::from_fn(|q| p[q] * fl[q]);
            *at_mut(down, sp.right as usize) = std::array::from_fn(|q| p[q] * fr[q]);
            *at_mut(one, i) = [ol, or];
        }
    }
    // The splits above two leaves: sums and contributions from scalars.
    let (bottom_up, up_after) = up[n_splits..].split_at_mut(tree.bottoms.len());
    for ((b, u), p) in tree.bottoms.iter().zip(bottom_up).zip(&down[n_splits..]) {
        let s = fma::<FMA>(
            unsafe { goes_left(xs, b.input, b.threshold) },
            b.d,
            b.s_right,
        );
        *u = std::array::from_fn(|q| fma::<FMA>(t[q], s, b.c));
        let a = unsafe { at_mut(acc, b.input as usize) };
        *a = std::array::from_fn(|q| fma::<FMA>(p[q], s, a[q]));
    }
    // The same on a repeated feature: as for a repeated split, from scalars.
    let (repeat_up, leaf_up) = up_after.split_at_mut(tree.repeat_bottoms.len());
    let repeats = tree.repeat_bottoms.iter().zip(repeat_up);
    for (k, ((b, u), p)) in repeats.zip(&down[first_repeat_bottom..]).enumerate() {
        let e = b.edge as usize;
        let oa = one[e / 2][e % 2];
        let ol = oa * unsafe { goes_left(xs, b.input, b.threshold) };
        let or = oa - ol;
        let s = fma::<FMA>(ol, b.v_left, fma::<FMA>(or, b.v_right, -b.c));
        let ka = oa - b.z_before;
        let inv = &tree.repeat_bottom_inv[2 * k + usize::from(oa != 0.0)];
        *u = std::array::from_fn(|q| inv[q] * fma::<FMA>(t[q], s, b.c));
        let a = unsafe { at_mut(acc, b.input as usize) };
        *a = std::array::from_fn(|q| fma::<FMA>(p[q] * inv[q], s - ka * u[q], a[q]));
    }
    for (u, &v) in leaf_up.iter_mut().zip(tree.leaves) {
        *u = [v; N];
    }
    // Bottom up: the sums below each node, and at each split the contribution of its
    // feature from the leaves whose deepest split on it this is.
    let mut prev = if r == 0 { usize::MAX } else { repeat_at(r - 1) };
    for (i, sp) in tree.splits.iter().enumerate().rev() {
        let (ul, ur) = unsafe { (*at(up, sp.left as usize), *at(up, sp.right as usize)) };
        let [ol, or] = unsafe { *at(one, i) };
        let (zl, zr) = (sp.z_left, sp.z_right);
        let (kl, kr) = (ol - zl, or - zr);
        let p = unsafe { *at(down, i) };
        let a = unsafe { at_mut(acc, sp.input as usize) };
        // Whole arrays stored at once: the next split up reads them back as one.
        if i != prev {
            let s: [f64; N] = std::array::from_fn(|q| fma::<FMA>(kl, ul[q], kr * ur[q]));
            *unsafe { at_mut(up, i) } =
                std::array::from_fn(|q| fma::<FMA>(t[q], s[q], fma::<FMA>(zl, ul[q], zr * ur[q])));
            *a = std::array::from_fn(|q| fma::<FMA>(p[q], s[q], a[q]));
        } else {
            // The earlier split counted these leaves with its own factor: take that out.
            r -= 1;
            prev = if r == 0 { usize::MAX } else { repeat_at(r - 1) };
            let rep = tree.repeats[r];
            let e = rep.edge as usize;
            let oa = one[e / 2][e % 2];
            let ka = oa - rep.z;
            let inv = &tree.inv[2 * r + usize::from(oa != 0.0)];
            let (fl, fr) = (factor::<N, FMA>(t, zl, ol), factor::<N, FMA>(t, zr, or));
            let rl: [f64; N] = std::array::from_fn(|q| fl[q] * inv[q]);
            let rr: [f64; N] = std::array::from_fn(|q| fr[q] * inv[q]);
            *unsafe { at_mut(up, i) } =
                std::array::from_fn(|q| fma::<FMA>(rl[q], ul[q], rr[q] * ur[q]));
            let s: [f64; N] = std::array::from_fn(|q| {
                fma::<FMA>(kl - ka * rl[q], ul[q], (kr - ka * rr[q]) * ur[q])
            });
            *a = std::array::from_fn(|q| fma::<FMA>(p[q] * inv[q], s[q], a[q]));
        }
    }
}

/// `1 / (z + (o - z) t)` at the points `t` for each `z`, `o` = 0 then 1; 0 for a factor
/// that is 0 everywhere (z = o = 0): what it divides is 0 too, and so is every
/// contribution below it.
fn reciprocals(t: &[f64], z: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut inv = Vec::new();
    for z in z {
        for one in [0.0, 1.0] {
            inv.extend(t.iter().map(|&t| {
                let f = z + (one - z) * t;
                if f == 0.0 {
                    0.0
                } else {
                    1.0 / f
                }
            }));
        }
    }
    inv
}

/// The `n`-point Gauss-Legendre rule on [0, 1]: points and weights.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    // P_n(x) and P_n'(x) by the three-term recurrence.
    let legendre = |x: f64| {
        let (mut p0, mut p1) = (1.0, x);
        for j in 1..n {
            let j = j as f64;
            (p0, p1) = (p1, ((2.0 * j + 1.0) * x * p1 - j * p0) / (j + 1.0));
        }
        (p1, n as f64 * (x * p1 - p0) / (x * x - 1.0))
    };
    let mut t = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for k in 0..n {
        // Newton's method from the usual estimate of the k-th root.
        let mut x = (std::f64::consts::PI * (k as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(x);
            let dx = p / dp;
            x -= dx;
            if dx.abs() <= 1e-15 * x.abs().max(1e-3) {
                break;
            }
        }
        let (_, dp) = legendre(x);
        t.push((1.0 - x) / 2.0);
        w.push(1.0 / ((1.0 - x * x) * dp * dp));
    }
    (t, w)
}

/// Precomputed TreeSHAP ("Fast TreeSHAP v2", Yang 2021), the serving path before
/// [`Explainer`], kept as the latency bench's baseline: per leaf, the unique features on
/// its path with their cover fractions `z`, and for every subset `T` of them
/// `G(T) = sum over S ⊆ T of |S|!(d-|S|-1)!/d! * prod_{j not in S} z_j`. For one row,
/// `o_j` is 1 when the row follows the leaf's path at every split on feature `j`, so the
/// Shapley sum collapses to one lookup per feature and leaf:
/// `phi_i += v * (o_i - z_i) / z_i * G(U \ {i})` with `U` the features the row follows.
/// The same numbers as [`contributions`] (tested), in O(leaves x depth) per tree.
#[derive(Clone, Debug, PartialEq)]
pub struct TableExplainer {
    trees: Vec<FastTree>,
    n_features: usize,
    pub expected_value: f64,
}

#[derive(Clone, Debug, PartialEq)]
struct FastTree {
    /// Inner nodes in tree order: (feature, threshold, default_left).
    nodes: Vec<(u32, f32, bool)>,
    /// Node index in the tree -> index in `nodes` (inner nodes only).
    leaves: Vec<FastLeaf>,
}

#[derive(Clone, Debug, PartialEq)]
struct FastLeaf {
    value: f64,
    /// Unique path features, and `(1 - z) / z` of their cover fractions `z` (zero
    /// covers floored).
    features: Vec<u32>,
    z: Vec<f64>,
    /// (inner node position, went left, bit of its feature).
    path: Vec<(u32, bool, u8)>,
    /// `value * G` over all subsets of `features`, indexed by bitmask.
    g: Vec<f64>,
}

const MAX_FAST_DEPTH: usize = 16;

/// A split on the way to a leaf: (node, went left, feature, cover fraction of the child).
type PathStep = (usize, bool, u32, f64);

impl TableExplainer {
    /// Precomputes the tables; `None` when a leaf has more than 16 distinct features on
    /// its path (the tables would be too large: use [`contributions`]).
    pub fn new(forest: &Forest) -> Option<Self> {
        let mut trees = Vec::with_capacity(forest.trees.len());
        for t in &forest.trees {
            trees.push(FastTree::new(t)?);
        }
        Some(Self {
            trees,
            n_features: forest.n_features,
            expected_value: expected_value(forest),
        })
    }

    pub fn contributions(&self, x: &[f32]) -> Vec<f64> {
        let mut phi = vec![0.0; self.n_features];
        let mut dirs: Vec<bool> = Vec::new();
        for t in &self.trees {
            dirs.clear();
            dirs.extend(t.nodes.iter().map(|&(f, thr, dl)| {
                let v = x.get(f as usize).copied().unwrap_or(f32::NAN);
                if v.is_nan() {
                    dl
                } else {
                    v <= thr
                }
            }));
            for leaf in &t.leaves {
                let d = leaf.features.len();
                if d == 0 {
                    continue;
                }
                let mut u: u32 = (1u32 << d) - 1;
                for &(node, left, bit) in &leaf.path {
                    if dirs[node as usize] != left {
                        u &= !(1u32 << bit);
                    }
                }
                // (o - z) / z is (1 - z) / z when the row follows feature i, else -1.
                for (i, (&f, &w)) in leaf.features.iter().zip(&leaf.z).enumerate() {
                    let g = leaf.g[(u & !(1u32 << i)) as usize];
                    let k = if u & (1 << i) != 0 { w } else { -1.0 };
                    phi[f as usize] += k * g;
                }
            }
        }
        phi
    }
}

impl FastTree {
    fn new(t: &Tree) -> Option<Self> {
        let mut position = vec![u32::MAX; t.nodes.len()];
        let mut nodes = Vec::new();
        for (i, n) in t.nodes.iter().enumerate() {
            if !n.is_leaf() {
                position[i] = nodes.len() as u32;
                nodes.push((n.feature, n.threshold, n.default_left));
            }
        }
        let mut leaves = Vec::new();
        // Depth-first with the path so far: (node, went left, feature, cover fraction).
        let mut stack: Vec<(usize, Vec<PathStep>)> = vec![(0, Vec::new())];
        while let Some((i, path)) = stack.pop() {
            let n = &t.nodes[i];
            if n.is_leaf() {
                let mut features: Vec<u32> = Vec::new();
                let mut z: Vec<f64> = Vec::new();
                let mut steps = Vec::with_capacity(path.len());
                for &(node, left, f, frac) in &path {
                    let bit = match features.iter().position(|&g| g == f) {
                        Some(b) => {
                            z[b] *= frac;
                            b
                        }
                        None => {
                            features.push(f);
                            z.push(frac);
                            features.len() - 1
                        }
                    };
                    steps.push((position[node], left, bit as u8));
                }
                if features.len() > MAX_FAST_DEPTH {
                    return None;
                }
                for v in &mut z {
                    // A branch no training row took: its limit, without dividing by zero.
                    *v = v.max(1e-12);
                }
                // The table carries the leaf value; `z` becomes (1 - z) / z.
                let g = subset_table(&z).into_iter().map(|g| g * n.value).collect();
                let z = z.iter().map(|z| (1.0 - z) / z).collect();
                leaves.push(FastLeaf {
                    value: n.value,
                    features,
                    z,
                    path: steps,
                    g,
                });
                continue;
            }
            let frac = |c: usize| {
                if n.cover > 0.0 {
                    t.nodes[c].cover / n.cover
                } else {
                    0.0
                }
            };
            for (child, left) in [(n.left as usize, true), (n.right as usize, false)] {
                let mut p = path.to_vec();
                p.push((i, left, n.feature, frac(child)));
                stack.push((child, p));
            }
        }
        Some(Self { nodes, leaves })
    }
}

/// `G(T)` for every subset `T` of the `d` path features (bitmask index).
fn subset_table(z: &[f64]) -> Vec<f64> {
    let d = z.len();
    let fact = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
    let full = (1usize << d) - 1;
    // g(S) = W(|S|) * prod_{j not in S} z_j, then summed over subsets (zeta transform).
    let mut g: Vec<f64> = (0..=full)
        .map(|s| {
            let k = (s as u32).count_ones() as usize;
            if k >= d {
                return 0.0;
            }
            let w = fact(k) * fact(d - k - 1) / fact(d);
            let mut prod = 1.0;
            for (j, zj) in z.iter().enumerate() {
                if s & (1 << j) == 0 {
                    prod *= zj;
                }
            }
            w * prod
        })
        .collect();
    for j in 0..d {
        for s in 0..=full {
            if s & (1 << j) != 0 {
                g[s] += g[s ^ (1 << j)];
            }
        }
    }
    g
}

#[cfg(test)]
mod fast_tests {
    use super::*;
    use crate::data::Dataset;
    use crate::gbdt::{self, Params};

    #[test]
    fn fast_treeshap_equals_the_recursive_algorithm_on_a_trained_forest() {
        let mut s = 5u64;
        let mut d = Dataset::with_names((0..6).map(|j| format!("f{j}")).collect());
        for _ in 0..4000 {
            let x: Vec<f32> = (0..6)
                .map(|_| {
                    let v = (crate::gbdt::next_u64(&mut s) % 1000) as f32 / 500.0 - 1.0;
                    if v > 0.9 {
                        f32::NAN
                    } else {
                        v
                    }
                })
                .collect();
            let label = x[0].is_nan() || (x[1] * x[2] > 0.1) || x[3] > 0.5;
            d.push(&x, label).expect("row");
        }
        let params = Params {
            rounds: 30,
            max_depth: 6,
            max_leaves: 40,
            min_data_in_leaf: 3,
            ..Params::default()
        };
        let (forest, _) = gbdt::train(&d, None, &params).expect("trains");
        let fast = TableExplainer::new(&forest).expect("depth fits");
        let quad = Explainer::new(&forest).expect("depth fits");
        for i in 0..300 {
            let x = d.row(i);
            let a = contributions(&forest, x);
            let b = fast.contributions(x);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-9, "row {i}: {a:?} vs {b:?}");
            }
            let c = quad.contributions(x);
            for (u, v) in a.iter().zip(&c) {
                assert!((u - v).abs() < 1e-9, "row {i}: {a:?} vs {c:?}");
            }
        }
    }
}

#[cfg(test)]
mod quad_tests {
    use super::*;
    use crate::gbdt::{next_u64, Node, LEAF};

    fn split(feature: u32, threshold: f32, left: u32, right: u32, cover: f64) -> Node {
        Node {
            feature,
            threshold,
            left,
            right,
            default_left: feature.is_multiple_of(2),
            value: 0.0,
            cover,
        }
    }

    fn leaf(value: f64, cover: f64) -> Node {
        Node {
            feature: LEAF,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: false,
            value,
            cover,
        }
    }

    fn forest(trees: Vec<Tree>, m: usize) -> Forest {
        Forest::new(-0.5, trees, m, vec![0.0; m], vec![0; m])
    }

    /// E[f(x) | x_S] along training covers, a node of zero cover weighing its children 0
    /// as the algorithms do.
    fn cond_expectation(t: &Tree, x: &[f32], s: &[bool], i: usize) -> f64 {
        let n = &t.nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        if s[n.feature as usize] {
            return cond_expectation(t, x, s, n.next(x) as usize);
        }
        if n.cover <= 0.0 {
            return 0.0;
        }
        let (l, r) = (n.left as usize, n.right as usize);
        (t.nodes[l].cover * cond_expectation(t, x, s, l)
            + t.nodes[r].cover * cond_expectation(t, x, s, r))
            / n.cover
    }

    /// Shapley values by enumerating every subset of the `m` features.
    fn brute(f: &Forest, x: &[f32]) -> Vec<f64> {
        let m = f.n_features;
        let fact = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
        let mut phi = vec![0.0; m];
        for (i, p) in phi.iter_mut().enumerate() {
            for mask in 0u32..(1 << m) {
                if mask & (1 << i) != 0 {
                    continue;
                }
                let s: Vec<bool> = (0..m).map(|j| mask & (1 << j) != 0).collect();
                let mut si = s.clone();
                si[i] = true;
                let k = mask.count_ones() as usize;
                let w = fact(k) * fact(m - k - 1) / fact(m);
                for t in &f.trees {
                    *p += w * (cond_expectation(t, x, &si, 0) - cond_expectation(t, x, &s, 0));
                }
            }
        }
        phi
    }

    /// Shapley values leaf by leaf from the closed form: a leaf whose path has the
    /// distinct features `U` (zero fractions `z`, and `o` = 1 where the row follows every
    /// split on the feature) gives feature `i` in `U`
    /// `v (o_i - z_i) sum_k k! (d-k-1)! / d! e_k`, with `e_k` the coefficient of `y^k` in
    /// the product over `j != i` of `z_j + o_j y`. All terms are positive: accurate at any
    /// depth, unlike the recursive algorithm beyond about 40 features.
    fn per_leaf(f: &Forest, x: &[f32]) -> Vec<f64> {
        fn walk(t: &Tree, x: &[f32], i: usize, path: &[(u32, f64, f64)], phi: &mut [f64]) {
            let n = &t.nodes[i];
            if n.is_leaf() {
                let d = path.len();
                // 1 / (d * C(d - 1, k)) = k! (d-k-1)! / d!
                let mut weight = vec![1.0 / d as f64; d];
                for k in 1..d {
                    weight[k] = weight[k - 1] * k as f64 / (d - k) as f64;
                }
                for (i, &(fi, zi, oi)) in path.iter().enumerate() {
                    let mut e = vec![1.0];
                    for (j, &(_, zj, oj)) in path.iter().enumerate() {
                        if j != i {
                            let mut next = vec![0.0; e.len() + 1];
                            for (k, &c) in e.iter().enumerate() {
                                next[k] += c * zj;
                                next[k + 1] += c * oj;
                            }
                            e = next;
                        }
                    }
                    let sum: f64 = e.iter().zip(&weight).map(|(c, w)| c * w).sum();
                    phi[fi as usize] += n.value * (oi - zi) * sum;
                }
                return;
            }
            let hot = n.next(x);
            for c in [n.left, n.right] {
                let z = if n.cover > 0.0 {
                    t.nodes[c as usize].cover / n.cover
                } else {
                    0.0
                };
                let o = if c == hot { 1.0 } else { 0.0 };
                let mut p = path.to_vec();
                match p.iter().position(|e| e.0 == n.feature) {
                    Some(k) => (p[k].1, p[k].2) = (p[k].1 * z, p[k].2 * o),
                    None => p.push((n.feature, z, o)),
                }
                walk(t, x, c as usize, &p, phi);
            }
        }
        let mut phi = vec![0.0; f.n_features];
        for t in &f.trees {
            walk(t, x, 0, &[], &mut phi);
        }
        phi
    }

    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max);
        let close = a.iter().zip(b).all(|(u, v)| (u - v).abs() < 1e-9);
        assert!(close, "{what}: off by {worst:e}: {a:?} vs {b:?}");
    }

    /// Both compiled variants of the explainer, the recursive algorithm and (for few
    /// features) the definition agree, and the contributions add up to the margin.
    fn check(f: &Forest, x: &[f32]) {
        let e = Explainer::new(f).expect("fits");
        let quad = e.contributions(x);
        let plain = e.run::<false>(x);
        let rec = contributions(f, x);
        let reference = per_leaf(f, x);
        if f.n_features <= 10 {
            assert_close(
                &reference,
                &brute(f, x),
                &format!("closed form vs definition at {x:?}"),
            );
        }
        assert_close(
            &quad,
            &reference,
            &format!("quadrature vs closed form at {x:?}"),
        );
        assert_close(
            &plain,
            &reference,
            &format!("without FMA vs closed form at {x:?}"),
        );
        if e.t.len() <= 16 {
            // Up to 32 features on a path: beyond, the recursive algorithm's own rounding
            // errors pass 1e-9 (1e-4 at 64).
            assert_close(&quad, &rec, &format!("quadrature vs recursive at {x:?}"));
        }
        let total = e.expected_value + quad.iter().sum::<f64>();
        assert!(
            (total - f.margin(x)).abs() < 1e-9,
            "{total} vs {}",
            f.margin(x)
        );
        assert!((e.expected_value - expected_value(f)).abs() < 1e-12);
    }

    #[test]
    fn a_layout_with_an_index_out_of_bounds_is_refused() {
        let t = Tree {
            nodes: vec![
                split(0, 0.5, 1, 2, 10.0),
                split(1, 0.5, 3, 4, 6.0),
                leaf(1.0, 4.0),
                leaf(-1.0, 2.0),
                leaf(0.5, 4.0),
            ],
        };
        let e = Explainer::new(&forest(vec![t], 2)).expect("fits");
        assert!(e.indices_in_bounds());
        let slots = e.widest_tree as u32;
        let mut bad = e.clone();
        bad.splits[0].right = slots;
        assert!(!bad.indices_in_bounds());
        let mut bad = e.clone();
        bad.splits[0].left = 0;
        assert!(!bad.indices_in_bounds(), "a child before its parent");
        let mut bad = e.clone();
        bad.bottoms[0].input = 2 * e.n_inputs as u32;
        assert!(!bad.indices_in_bounds());
        let mut bad = e;
        bad.widest_tree -= 1;
        assert!(!bad.indices_in_bounds());
    }

    #[test]
    fn the_quadrature_rules_integrate_polynomials_of_degree_2n_minus_1_exactly() {
        for n in [1, 2, 3, 4, 8, 16, 32] {
            let (t, w) = gauss_legendre(n);
            assert!(t.iter().all(|&t| t > 0.0 && t < 1.0));
            for k in 0..2 * n as i32 {
                let integral: f64 = t.iter().zip(&w).map(|(t, w)| w * t.powi(k)).sum();
                let exact = 1.0 / f64::from(k + 1);
                assert!((integral - exact).abs() < 1e-14, "n {n} degree {k}");
            }
        }
    }

    #[test]
    fn a_stump() {
        let t = Tree {
            nodes: vec![split(1, 0.5, 1, 2, 10.0), leaf(2.0, 3.0), leaf(-1.0, 7.0)],
        };
        let f = forest(vec![t], 3);
        for x in [[0.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, f32::NAN, 0.0]] {
            check(&f, &x);
        }
        // The leaf against the cover-weighted mean -0.1.
        let e = Explainer::new(&f).expect("fits");
        assert!((e.contributions(&[0.0, 0.0, 0.0])[1] - 2.1).abs() < 1e-12);
        assert!((e.contributions(&[0.0, 1.0, 0.0])[1] + 0.9).abs() < 1e-12);
    }

    #[test]
    fn a_feature_split_three_times_on_one_path() {
        // 0 -> 0 -> 0 on the leftmost path, 1 -> 0 and 0 -> 1 -> 0 elsewhere.
        let t = Tree {
            nodes: vec![
                split(0, 0.5, 1, 2, 100.0),
                split(0, 0.2, 3, 4, 60.0),
                split(1, 0.0, 5, 6, 40.0),
                split(0, 0.1, 7, 8, 35.0),
                split(1, 0.3, 9, 10, 25.0),
                split(0, 0.8, 11, 12, 10.0),
                leaf(0.3, 30.0),
                leaf(1.5, 20.0),
                leaf(-1.1, 15.0),
                split(0, 0.3, 13, 14, 12.0),
                leaf(0.4, 13.0),
                leaf(-0.2, 6.0),
                leaf(0.7, 4.0),
                leaf(2.0, 5.0),
                leaf(-3.0, 7.0),
            ],
        };
        let f = forest(vec![t], 3);
        for a in [0.05f32, 0.15, 0.25, 0.4, 0.6, 0.9, f32::NAN] {
            for b in [-1.0f32, 0.1, 0.5, f32::NAN] {
                check(&f, &[a, b, 0.0]);
            }
        }
    }

    #[test]
    fn zero_cover_children() {
        // Branches no training row took: a leaf, a split of zero cover, and splits on a
        // feature split on above them (which the recursive algorithm used to turn into
        // 0 / 0).
        let t = Tree {
            nodes: vec![
                split(0, 0.5, 1, 2, 50.0),
                split(1, 0.5, 3, 4, 50.0),
                split(2, 0.5, 5, 6, 0.0),
                split(0, 0.2, 7, 8, 50.0),
                leaf(0.9, 0.0),
                leaf(-0.4, 0.0),
                split(0, 0.7, 11, 12, 0.0),
                split(0, 0.1, 9, 10, 20.0),
                leaf(1.2, 30.0),
                leaf(-2.0, 0.0),
                leaf(3.0, 20.0),
                leaf(5.0, 0.0),
                leaf(-5.0, 0.0),
            ],
        };
        let f = forest(vec![t], 3);
        for a in [0.05f32, 0.15, 0.3, 0.7, f32::NAN] {
            for b in [0.0f32, 1.0, f32::NAN] {
                for c in [0.0f32, 1.0] {
                    check(&f, &[a, b, c]);
                    assert!(contributions(&f, &[a, b, c]).iter().all(|v| v.is_finite()));
                }
            }
        }
    }

    #[test]
    fn missing_values_follow_the_default_direction_and_short_rows_count_as_missing() {
        let t = Tree {
            nodes: vec![
                split(0, 0.5, 1, 2, 10.0),
                split(1, 0.5, 3, 4, 6.0),
                leaf(1.0, 4.0),
                leaf(-1.0, 2.0),
                leaf(0.5, 4.0),
            ],
        };
        let f = forest(vec![t], 2);
        let e = Explainer::new(&f).expect("fits");
        for x in [[f32::NAN, f32::NAN], [f32::NAN, 0.0], [0.0, f32::NAN]] {
            check(&f, &x);
        }
        assert_eq!(
            e.contributions(&[f32::NAN]),
            e.contributions(&[f32::NAN, f32::NAN])
        );
        assert_eq!(e.contributions(&[]), e.contributions(&[f32::NAN, f32::NAN]));
    }

    /// A chain: split `k` on feature `k` has a leaf on the left and split `k + 1` on the
    /// right, so the deepest path has `depth` distinct features.
    fn chain(depth: u32) -> Tree {
        let mut nodes = Vec::new();
        for k in 0..depth {
            let here = nodes.len() as u32;
            let cover = f64::from(depth - k + 1);
            nodes.push(split(k, 0.5, here + 1, here + 2, cover));
            nodes.push(leaf(f64::from(k % 3) - 1.0 + 0.1 * f64::from(k), 1.0));
        }
        nodes.push(leaf(0.25, 1.0));
        Tree { nodes }
    }

    #[test]
    fn the_deepest_supported_paths() {
        for depth in [8, 9, 16, 17, 32, 33, MAX_PATH_FEATURES as u32] {
            let m = depth as usize;
            let f = forest(vec![chain(depth), chain(depth / 2)], m);
            let mut s = u64::from(depth);
            for _ in 0..20 {
                let x: Vec<f32> = (0..m)
                    .map(|_| match next_u64(&mut s) % 5 {
                        0 => f32::NAN,
                        1 => 0.0,
                        _ => 1.0,
                    })
                    .collect();
                check(&f, &x);
            }
        }
        let too_deep = forest(vec![chain(MAX_PATH_FEATURES as u32 + 1)], 65);
        assert!(Explainer::new(&too_deep).is_none());
        // A feature split again does not count twice.
        let mut again = chain(MAX_PATH_FEATURES as u32 + 1);
        for n in &mut again.nodes {
            if n.feature == MAX_PATH_FEATURES as u32 {
                n.feature = 0;
            }
        }
        let f = forest(vec![again], 64);
        assert!(Explainer::new(&f).is_some());
        check(&f, &[1.0; 64]);
    }

    /// A random tree of at most `depth` levels over `m` features, covers summing up from
    /// random leaf covers of which some are zero.
    fn random_tree(s: &mut u64, depth: u32, m: u32) -> Tree {
        fn grow(s: &mut u64, nodes: &mut Vec<Node>, depth: u32, m: u32) -> (u32, f64) {
            let at = nodes.len() as u32;
            let r = next_u64(s);
            if depth == 0 || (r.is_multiple_of(8) && !nodes.is_empty()) {
                let cover = if r % 5 == 1 { 0.0 } else { (r % 97 + 1) as f64 };
                let value = (next_u64(s) % 2001) as f64 / 1000.0 - 1.0;
                nodes.push(leaf(value, cover));
                return (at, cover);
            }
            let feature = (next_u64(s) % u64::from(m)) as u32;
            let threshold = (next_u64(s) % 5) as f32 / 4.0;
            nodes.push(split(feature, threshold, 0, 0, 0.0));
            nodes[at as usize].default_left = next_u64(s).is_multiple_of(2);
            let (l, cl) = grow(s, nodes, depth - 1, m);
            let (r, cr) = grow(s, nodes, depth - 1, m);
            let n = &mut nodes[at as usize];
            (n.left, n.right, n.cover) = (l, r, cl + cr);
            (at, cl + cr)
        }
        let mut nodes = Vec::new();
        grow(s, &mut nodes, depth, m);
        Tree { nodes }
    }

    #[test]
    fn random_trees_with_repeats_zero_covers_and_missing_values() {
        let mut s = 17u64;
        for round in 0..60 {
            let m = 2 + round % 5;
            let depth = 1 + round % 9;
            let trees = (0..3).map(|_| random_tree(&mut s, depth, m)).collect();
            let f = forest(trees, m as usize);
            for _ in 0..10 {
                let x: Vec<f32> = (0..m)
                    .map(|_| match next_u64(&mut s) % 7 {
                        0 => f32::NAN,
                        k => (k - 1) as f32 / 5.0,
                    })
                    .collect();
                check(&f, &x);
            }
        }
    }
}
