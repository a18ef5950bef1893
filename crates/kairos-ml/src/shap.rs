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
        let forest = Forest {
            base: 0.25,
            trees: vec![t.clone()],
            n_features: 4,
            gain_importance: vec![0.0; 4],
            split_importance: vec![0; 4],
        };
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
