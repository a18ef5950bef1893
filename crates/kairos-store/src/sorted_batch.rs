//! A write batch that reaches the memtables in key order.
//!
//! fjall applies a batch to each keyspace's memtable (a lock-free skiplist) item by item,
//! in the order the items were added. A group's profile, timeline and membership keys
//! arrive in the order events do, which is random over the key space: every insert then
//! walks the skiplist from its head through nodes no earlier insert touched, and the
//! committer spends most of its time waiting for those cache misses. Sorted, each insert
//! lands next to the one before and finds the lower levels of its path in cache.
//!
//! The sort is stable, so two writes of one key in a batch keep their order and the later
//! one wins, as it does in an unsorted batch; the batch is still applied and published as
//! one unit under one sequence number, so readers cannot tell the order.

use fjall::{Keyspace, OwnedWriteBatch, UserKey, UserValue};

enum Op {
    Insert(UserValue),
    Remove,
}

struct Item {
    /// `keyspace.id()`, kept beside it so that sorting does not follow the pointer.
    keyspace_id: u64,
    keyspace: Keyspace,
    key: UserKey,
    op: Op,
}

/// Writes gathered for one group commit; see the module doc.
#[derive(Default)]
pub(crate) struct SortedBatch {
    items: Vec<Item>,
}

impl SortedBatch {
    pub(crate) fn insert<K: Into<UserKey>, V: Into<UserValue>>(
        &mut self,
        keyspace: &Keyspace,
        key: K,
        value: V,
    ) {
        self.items.push(Item {
            keyspace_id: keyspace.id(),
            keyspace: keyspace.clone(),
            key: key.into(),
            op: Op::Insert(value.into()),
        });
    }

    pub(crate) fn remove<K: Into<UserKey>>(&mut self, keyspace: &Keyspace, key: K) {
        self.items.push(Item {
            keyspace_id: keyspace.id(),
            keyspace: keyspace.clone(),
            key: key.into(),
            op: Op::Remove,
        });
    }

    /// The fjall batch with these writes, by keyspace and then by key.
    pub(crate) fn into_write_batch(mut self, db: &fjall::Database) -> OwnedWriteBatch {
        // Stable: see the module doc.
        self.items.sort_by(|a, b| {
            a.keyspace_id
                .cmp(&b.keyspace_id)
                .then_with(|| a.key.cmp(&b.key))
        });
        let mut batch = OwnedWriteBatch::with_capacity(db.clone(), self.items.len());
        for item in self.items {
            match item.op {
                Op::Insert(value) => batch.insert(&item.keyspace, item.key, value),
                Op::Remove => batch.remove(&item.keyspace, item.key),
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyspace(db: &fjall::Database, name: &str) -> Keyspace {
        db.keyspace(name, fjall::KeyspaceCreateOptions::default)
            .expect("keyspace")
    }

    /// (keyspace 0 or 1, key, Some(value) to insert or None to remove), in batch order.
    type Ops = [(usize, &'static [u8], Option<&'static [u8]>)];

    const OPS: &Ops = &[
        (0, b"k2", Some(b"first")),
        (1, b"k2", Some(b"other keyspace")),
        (0, b"k1", Some(b"one")),
        (0, b"k2", Some(b"second")),
        (0, b"k3", Some(b"gone soon")),
        (0, b"k3", None),
        (0, b"k4", None),
        (0, b"k4", Some(b"back")),
        (1, b"k0", Some(b"x")),
    ];

    fn contents(ks: &Keyspace) -> Vec<(Vec<u8>, Vec<u8>)> {
        ks.iter()
            .map(|kv| {
                let (k, v) = kv.into_inner().expect("read");
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    #[test]
    fn a_sorted_batch_stores_what_the_same_writes_unsorted_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("open");
        let sorted = [keyspace(&db, "a"), keyspace(&db, "b")];
        let plain = [keyspace(&db, "c"), keyspace(&db, "d")];
        let mut batch = SortedBatch::default();
        let mut reference = db.batch();
        for &(ks, key, value) in OPS {
            match value {
                Some(v) => {
                    batch.insert(&sorted[ks], key, v);
                    reference.insert(&plain[ks], key, v);
                }
                None => {
                    batch.remove(&sorted[ks], key);
                    reference.remove(&plain[ks], key);
                }
            }
        }
        batch.into_write_batch(&db).commit().expect("commit");
        reference.commit().expect("commit");
        for (s, p) in sorted.iter().zip(&plain) {
            assert_eq!(contents(s), contents(p));
        }
        // And what that is: the later of two writes of a key wins.
        let a = contents(&sorted[0]);
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"k1"[..], &b"one"[..]),
            (b"k2", b"second"),
            (b"k4", b"back"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(a, expected);
    }

    #[test]
    fn an_empty_batch_commits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("open");
        let a = keyspace(&db, "a");
        SortedBatch::default()
            .into_write_batch(&db)
            .commit()
            .expect("commit");
        assert!(contents(&a).is_empty());
    }
}
