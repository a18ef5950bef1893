//! Exact path-dependent TreeSHAP (Lundberg, Erion and Lee, "Consistent Individualized
//! Feature Attribution for Tree Ensembles", 2018, Algorithm 2): each feature's Shapley
//! value for one prediction in O(leaves x depth^2) per tree, with the expectation over
//! absent features taken along the training cover of each branch. The contributions plus
//! [`expected_value`] add up to the margin exactly (local accuracy; tested against the
//! exponential definition).

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

/// Precomputed TreeSHAP for serving ("Fast TreeSHAP v2", Yang 2021): per leaf, the
/// unique features on its path with their cover fractions `z`, and for every subset `T` of
/// them `G(T) = sum over S ⊆ T of |S|!(d-|S|-1)!/d! * prod_{j not in S} z_j`. For one row,
/// `o_j` is 1 when the row follows the leaf's path at every split on feature `j`, so the
/// Shapley sum collapses to one lookup per feature and leaf:
/// `phi_i += v * (o_i - z_i) / z_i * G(U \ {i})` with `U` the features the row follows.
/// The same numbers as [`contributions`] (tested), in O(leaves x depth) per tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Explainer {
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

impl Explainer {
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
                let mut p = path.clone();
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
        let fast = Explainer::new(&forest).expect("depth fits");
        for i in 0..300 {
            let x = d.row(i);
            let a = contributions(&forest, x);
            let b = fast.contributions(x);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-9, "row {i}: {a:?} vs {b:?}");
            }
        }
    }
}
