//! The product catalog: items by id, stored as the JSON the server validated (this crate
//! does not interpret them). Writes are durable when they return; a bulk put is one batch
//! and one fsync. Items hold no personal data, so erasure never touches them.

use crate::store::Store;
use crate::StoreError;
use serde_json::Value;

fn encode(item: &Value) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(item).map_err(|e| StoreError::Corrupt(format!("catalog item: {e}")))
}

fn decode(id: &[u8], v: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(v).map_err(|e| {
        StoreError::Corrupt(format!("catalog item {}: {e}", String::from_utf8_lossy(id)))
    })
}

impl Store {
    /// Stores (creates or replaces) one item. Returns whether it replaced one.
    pub fn put_catalog_item(&self, id: &str, item: &Value) -> Result<bool, StoreError> {
        let existed = self.catalog.contains_key(id.as_bytes())?;
        self.catalog.insert(id.as_bytes(), encode(item)?)?;
        self.persist()?;
        Ok(existed)
    }

    /// Stores many items in one batch and one fsync.
    pub fn put_catalog_items(&self, items: &[(String, Value)]) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (id, item) in items {
            batch.insert(&self.catalog, id.as_bytes(), encode(item)?);
        }
        batch.commit()?;
        self.persist()
    }

    pub fn catalog_item(&self, id: &str) -> Result<Option<Value>, StoreError> {
        match self.catalog.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode(id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Returns whether it existed.
    pub fn delete_catalog_item(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.catalog.contains_key(id.as_bytes())?;
        if existed {
            self.catalog.remove(id.as_bytes())?;
            self.persist()?;
        }
        Ok(existed)
    }

    /// Items in id order, starting after `after` (exclusive), at most `limit`.
    pub fn catalog_items(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let mut out = Vec::new();
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = match after {
            Some(a) => {
                let mut start = a.as_bytes().to_vec();
                start.push(0);
                Box::new(self.catalog.range(start..))
            }
            None => Box::new(self.catalog.iter()),
        };
        for guard in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            out.push((String::from_utf8_lossy(&k).into_owned(), decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Number of items (counts keys).
    pub fn catalog_len(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for guard in self.catalog.iter() {
            guard.key()?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreOptions};
    use serde_json::json;

    #[test]
    fn put_get_list_delete() -> Result<(), crate::StoreError> {
        let dir = tempfile::tempdir().map_err(|e| crate::StoreError::Io(e.to_string()))?;
        let store = Store::open(dir.path(), &StoreOptions::default())?;
        assert!(!store.put_catalog_item("b", &json!({"title": "B"}))?);
        assert!(store.put_catalog_item("b", &json!({"title": "B2"}))?);
        store.put_catalog_items(&[
            ("a".into(), json!({"title": "A"})),
            ("c".into(), json!({"title": "C"})),
        ])?;
        assert_eq!(store.catalog_item("b")?, Some(json!({"title": "B2"})));
        let ids =
            |v: Vec<(String, serde_json::Value)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(ids(store.catalog_items(None, 2)?), vec!["a", "b"]);
        assert_eq!(ids(store.catalog_items(Some("b"), 10)?), vec!["c"]);
        assert_eq!(store.catalog_len()?, 3);
        assert!(store.delete_catalog_item("a")?);
        assert!(!store.delete_catalog_item("a")?);
        drop(store);
        let store = Store::open(dir.path(), &StoreOptions::default())?;
        assert_eq!(ids(store.catalog_items(None, 10)?), vec!["b", "c"]);
        Ok(())
    }
}
