//! A small sorted map stored as one vector. Profiles hold many tiny maps (traits, event
//! counters, subscriptions); a `BTreeMap` allocates a node of ~11 slots for even one entry,
//! which made a decoded profile several kilobytes. Lookups are binary searches; inserts shift,
//! which is cheap at these sizes. Serialises as a map, like `BTreeMap`.

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Keys are stored inline when short (up to 24 bytes: event, trait, score and segment names
/// nearly always are), so a lookup's binary search reads the vector's own memory instead of
/// following a pointer per comparison, and decoding a profile allocates no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMap<V>(Vec<(CompactString, V)>);

impl<V> Default for VecMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> VecMap<V> {
    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Where `key` is, for callers that cache positions (valid until the next insert or
    /// removal).
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.position(key).ok()
    }

    /// The entry at a position from [`VecMap::index_of`].
    pub fn at(&self, i: usize) -> Option<(&str, &V)> {
        self.0.get(i).map(|(k, v)| (k.as_str(), v))
    }

    pub fn at_mut(&mut self, i: usize) -> Option<&mut V> {
        self.0.get_mut(i).map(|(_, v)| v)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match self.position(key) {
            Ok(i) => Some(&mut self.0[i].1),
            Err(_) => None,
        }
    }

    /// The value for `key`, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.position(key) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (CompactString::from(key), make()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn insert(&mut self, key: impl AsRef<str>, value: V) {
        let key = key.as_ref();
        match self.position(key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (CompactString::from(key), value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(k, _)| keep(k));
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (k.as_str(), v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<V: Serialize> Serialize for VecMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for VecMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = VecMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = VecMap(Vec::with_capacity(a.size_hint().unwrap_or(0)));
                while let Some((k, v)) = a.next_entry::<CompactString, V>()? {
                    out.insert(k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_round_trips_through_postcard() {
        let mut m = VecMap::default();
        m.insert("b", 2u32);
        m.insert("a", 1);
        *m.get_or_insert_with("c", || 0) += 3;
        *m.get_or_insert_with("a", || 0) += 10;
        assert_eq!(
            m.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
            vec![("a", 11), ("b", 2), ("c", 3)]
        );
        let bytes = postcard::to_allocvec(&m).expect("encode");
        let back: VecMap<u32> = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, m);
    }
}
