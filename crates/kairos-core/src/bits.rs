//! A small bit set over definition positions (segments, scores), inline for up to 128.
//!
//! Evaluation decides per event which of a profile's segments and scores to look at; doing
//! that with a few word operations on masks worked out when the definitions were compiled
//! costs far less than asking every definition in turn.

use smallvec::SmallVec;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bits(SmallVec<[u64; 2]>);

impl Bits {
    /// `n` bits, all clear.
    pub fn new(n: usize) -> Self {
        Self(smallvec::smallvec![0; n.div_ceil(64)])
    }

    /// `n` bits, all set.
    pub fn full(n: usize) -> Self {
        let mut b = Self::new(n);
        for i in 0..n {
            b.set(i);
        }
        b
    }

    pub fn set(&mut self, i: usize) {
        let w = i / 64;
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    pub fn clear(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    pub fn put(&mut self, i: usize, on: bool) {
        if on {
            self.set(i)
        } else {
            self.clear(i)
        }
    }

    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn or(&mut self, other: &Bits) {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// Whether any bit is set in both.
    pub fn meets(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    /// The set positions, in order.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }

    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_or_and_iterate_across_words() {
        let mut a = Bits::new(130);
        for i in [0, 5, 63, 64, 129] {
            a.set(i);
        }
        assert!(a.get(63) && a.get(64) && !a.get(62));
        assert_eq!(a.ones().collect::<Vec<_>>(), vec![0, 5, 63, 64, 129]);
        let mut b = Bits::new(10);
        b.set(7);
        assert!(!a.meets(&b));
        b.or(&a);
        assert!(b.meets(&a) && b.get(129) && b.get(7));
        assert_eq!(b.count(), 6);
        b.clear(129);
        b.put(3, true);
        assert!(!b.get(129) && b.get(3));
        assert_eq!(Bits::full(66).count(), 66);
        assert!(Bits::new(200).is_empty());
    }
}
