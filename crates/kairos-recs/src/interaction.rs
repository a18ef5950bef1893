//! Interactions: which events are views, cart additions and purchases of which products,
//! and each person's recent history of them.

use crate::catalog::{validate_id, Item, MAX_TEXT_LEN};
use kairos_core::event::{Event, EventKind};
use kairos_core::vocab::Vocabulary;
use kairos_core::Millis;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How strongly an interaction says a person wants a product. Ordered: a purchase says
/// more than a cart addition, which says more than a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View = 0,
    Cart = 1,
    Purchase = 2,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "view" | "viewed" => Self::View,
            "cart" | "carted" | "add_to_cart" => Self::Cart,
            "purchase" | "purchased" | "order" => Self::Purchase,
            _ => return None,
        })
    }

    pub fn from_index(i: u8) -> Self {
        match i {
            2 => Self::Purchase,
            1 => Self::Cart,
            _ => Self::View,
        }
    }
}

/// Product views that are not in the core vocabulary (which names orders and carts).
pub const VIEW_EVENTS: &[&str] = &["Product Viewed", "Product Clicked"];
/// Saving a product for later says about as much as putting it in the cart.
pub const WISHLIST_EVENTS: &[&str] = &["Product Added to Wishlist", "Added to Wishlist"];

fn product_id(p: &Map<String, Value>) -> Option<String> {
    ["product_id", "productId", "sku", "id"]
        .iter()
        .find_map(|k| match p.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .filter(|id| validate_id(id).is_ok())
}

/// Whether a track event of this name can be an interaction (an order, a cart or wishlist
/// add, a product view): readers of the log decode only those.
pub fn names_interaction(name: &str, vocab: &Vocabulary) -> bool {
    vocab.is_order(name)
        || vocab.is_cart_add(name)
        || WISHLIST_EVENTS.contains(&name)
        || VIEW_EVENTS.contains(&name)
}

/// The products an event is an interaction with, and how strong each is. Orders count
/// every line of `products` (or the single `product_id` of a one-line order).
pub fn interactions_of(ev: &Event, vocab: &Vocabulary) -> Vec<(String, Kind)> {
    if ev.kind != EventKind::Track {
        return Vec::new();
    }
    let Some(name) = ev.event.as_deref() else {
        return Vec::new();
    };
    let p = &ev.properties;
    if vocab.is_order(name) {
        let mut out: Vec<(String, Kind)> = match p.get("products") {
            Some(Value::Array(lines)) => lines
                .iter()
                .filter_map(|l| l.as_object().and_then(product_id))
                .map(|id| (id, Kind::Purchase))
                .collect(),
            _ => Vec::new(),
        };
        if out.is_empty() {
            out.extend(product_id(p).map(|id| (id, Kind::Purchase)));
        }
        out.sort();
        out.dedup();
        return out;
    }
    let kind = if vocab.is_cart_add(name) || WISHLIST_EVENTS.contains(&name) {
        Kind::Cart
    } else if VIEW_EVENTS.contains(&name) {
        Kind::View
    } else {
        return Vec::new();
    };
    product_id(p).map(|id| vec![(id, kind)]).unwrap_or_default()
}

/// What an event says about the product itself (name, category, brand, price, image), so
/// that products seen only in events can be shown before a catalog is imported.
pub fn item_of(ev: &Event) -> Option<Item> {
    let p = &ev.properties;
    let id = product_id(p)?;
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TEXT_LEN)
            .map(str::to_string)
    };
    let url = |k: &str| s(k).filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    Some(Item {
        title: s("name").unwrap_or_else(|| id.clone()),
        category: s("category"),
        brand: s("brand"),
        price: p
            .get("price")
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite() && *x >= 0.0),
        tags: Vec::new(),
        in_stock: true,
        image_url: url("image_url"),
        url: url("url"),
        id,
    })
}

/// One interaction of a person, with the product interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub item: u32,
    pub kind: Kind,
    pub ts: Millis,
}

/// Each person's recent interactions (at most `max_per_person`, the newest kept), and
/// the products they name. Persons are opaque 64-bit keys (the server uses profile ids).
/// This is per-person data: [`Interactions::forget`] removes a person entirely.
#[derive(Clone, Debug, Default)]
pub struct Interactions {
    ids: Vec<String>,
    index: FxHashMap<String, u32>,
    /// What events said about each product, the latest event winning.
    meta: Vec<Option<Item>>,
    people: FxHashMap<u64, Vec<Rec>>,
    max_per_person: usize,
    total: usize,
}

impl Interactions {
    pub fn new(max_per_person: usize) -> Self {
        Self {
            max_per_person: max_per_person.max(1),
            ..Self::default()
        }
    }

    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        self.meta.push(None);
        i
    }

    pub fn item_index(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn item_id(&self, i: u32) -> &str {
        self.ids.get(i as usize).map_or("", String::as_str)
    }

    /// Interned product ids, by index.
    pub fn item_ids(&self) -> &[String] {
        &self.ids
    }

    pub fn meta(&self, i: u32) -> Option<&Item> {
        self.meta.get(i as usize).and_then(Option::as_ref)
    }

    pub fn record_meta(&mut self, item: Item) {
        let i = self.intern(&item.id) as usize;
        if let Some(slot) = self.meta.get_mut(i) {
            *slot = Some(item);
        }
    }

    /// Adds one interaction; the person's list stays in time order (late events are
    /// inserted where they belong) and bounded (the oldest is dropped).
    pub fn push(&mut self, person: u64, item: &str, kind: Kind, ts: Millis) {
        let item = self.intern(item);
        let list = self.people.entry(person).or_default();
        let at = list.partition_point(|r| r.ts <= ts);
        list.insert(at, Rec { item, kind, ts });
        self.total += 1;
        if list.len() > self.max_per_person {
            let extra = list.len() - self.max_per_person;
            list.drain(..extra);
            self.total -= extra;
        }
    }

    /// Removes everything held about a person. Returns whether there was anything.
    pub fn forget(&mut self, person: u64) -> bool {
        match self.people.remove(&person) {
            Some(list) => {
                self.total -= list.len();
                true
            }
            None => false,
        }
    }

    /// Moves a person's history to another key (identity merges).
    pub fn rekey(&mut self, from: u64, to: u64) {
        if from == to {
            return;
        }
        if let Some(list) = self.people.remove(&from) {
            self.total -= list.len();
            for r in list {
                let id = self.ids[r.item as usize].clone();
                self.push(to, &id, r.kind, r.ts);
            }
        }
    }

    /// Drops interactions older than `before`.
    pub fn prune_before(&mut self, before: Millis) {
        let mut removed = 0;
        self.people.retain(|_, list| {
            let cut = list.partition_point(|r| r.ts < before);
            removed += cut;
            list.drain(..cut);
            !list.is_empty()
        });
        self.total -= removed;
    }

    pub fn history(&self, person: u64) -> &[Rec] {
        self.people.get(&person).map_or(&[], Vec::as_slice)
    }

    /// A person's history as a recommendation request takes it (product ids, not indices).
    pub fn seen(&self, person: u64) -> Vec<crate::model::Seen<'_>> {
        self.history(person)
            .iter()
            .map(|r| crate::model::Seen {
                item: self.item_id(r.item),
                kind: r.kind,
                ts: r.ts,
            })
            .collect()
    }

    /// Every person with their interactions, in ascending person order (deterministic).
    pub fn people(&self) -> Vec<(u64, &[Rec])> {
        let mut v: Vec<(u64, &[Rec])> = self
            .people
            .iter()
            .map(|(k, l)| (*k, l.as_slice()))
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    pub fn person_keys(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.people.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn person_count(&self) -> usize {
        self.people.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn track(name: &str, props: Value) -> Event {
        Event {
            message_id: "m".into(),
            kind: EventKind::Track,
            event: Some(name.into()),
            name: None,
            user_id: Some("u".into()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: 0,
            received_at: 0,
            properties: props.as_object().cloned().unwrap_or_default(),
            traits: Map::new(),
            context: Map::new(),
            source: String::new(),
        }
    }

    #[test]
    fn events_become_interactions() {
        let v = Vocabulary::default();
        let of = |n: &str, p: Value| interactions_of(&track(n, p), &v);
        assert_eq!(
            of("Product Viewed", json!({"product_id": "a"})),
            vec![("a".to_string(), Kind::View)]
        );
        assert_eq!(
            of("Added to Cart", json!({"sku": "b"})),
            vec![("b".to_string(), Kind::Cart)]
        );
        assert_eq!(
            of(
                "Order Completed",
                json!({"products": [{"product_id": "c"}, {"product_id": "a"}, {"product_id": "c"}]})
            ),
            vec![
                ("a".to_string(), Kind::Purchase),
                ("c".to_string(), Kind::Purchase)
            ]
        );
        assert!(of("Email Opened", json!({"product_id": "a"})).is_empty());
        assert!(of("Product Viewed", json!({})).is_empty());
    }

    #[test]
    fn histories_stay_ordered_bounded_and_forgettable() {
        let mut h = Interactions::new(3);
        h.push(1, "a", Kind::View, 10);
        h.push(1, "b", Kind::View, 30);
        h.push(1, "c", Kind::Cart, 20);
        h.push(2, "a", Kind::Purchase, 5);
        let items: Vec<&str> = h.history(1).iter().map(|r| h.item_id(r.item)).collect();
        assert_eq!(items, vec!["a", "c", "b"]);
        h.push(1, "d", Kind::View, 40);
        assert_eq!(h.history(1).len(), 3);
        assert_eq!(h.len(), 4);
        // Person 2 merges into 1: their older purchase falls out of 1's bounded window.
        h.rekey(2, 1);
        assert_eq!(h.history(2).len(), 0);
        assert_eq!((h.history(1).len(), h.len()), (3, 3));
        assert!(h.forget(1));
        assert!(h.is_empty());
        assert_eq!(h.person_count(), 0);
    }
}
