//! Remembering accepted messageIds without a store key per event.
//!
//! A `dedupe` key written with every event cost the writer and the committer about 3 us of
//! CPU (memtable insert, journal, flush, compaction; measured), as much as folding the
//! event. Instead each group writes one record of the messageIds it accepted (`dedupe_recent`,
//! keyed by the seq of the group's first new event), and the writer keeps those in memory
//! ([`Recent`]). Once enough have gathered they are written, sorted, into `dedupe` by
//! fjall's bulk ingestion (table files written directly: no memtable, no journal), and
//! their group records are removed. A restart reads the remaining group records back.
//!
//! Record: a sequence of `[len u16][messageId][day u32][seq u64]`, big-endian.

use crate::keys::{dedupe_value, read_u64, u64_key};
use crate::StoreError;
use fjall::Keyspace;

/// Entries kept in memory before they go to `dedupe` in bulk: about 30 MB, and a sort and
/// ingestion of a fraction of a second.
pub(crate) const INGEST_AFTER: usize = 1 << 18;

/// Accepted messageIds not yet in `dedupe`: (day, seq) by messageId.
#[derive(Default)]
pub(crate) struct Recent {
    map: std::collections::HashMap<String, (u32, u64), foldhash::fast::RandomState>,
    /// Entries of the pending batch, for its group record.
    unrecorded: Vec<(String, u32, u64)>,
}

impl Recent {
    /// Reads the group records a previous run left.
    pub(crate) fn load(records: &Keyspace) -> Result<Self, StoreError> {
        let mut out = Self::default();
        for guard in records.iter() {
            let v = guard.value()?;
            for (id, day, seq) in decode(&v)? {
                out.map.insert(id, (day, seq));
            }
        }
        Ok(out)
    }

    pub(crate) fn contains(&self, message_id: &str) -> bool {
        self.map.contains_key(message_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn insert(&mut self, message_id: &str, day: u32, seq: u64) {
        self.map.insert(message_id.to_string(), (day, seq));
        self.unrecorded.push((message_id.to_string(), day, seq));
    }

    /// The group record of what was inserted since the last call: (key, value).
    pub(crate) fn take_record(&mut self) -> Option<([u8; 8], Vec<u8>)> {
        let first = self.unrecorded.first()?.2;
        let mut v = Vec::with_capacity(self.unrecorded.len() * 48);
        for (id, day, seq) in self.unrecorded.drain(..) {
            encode_entry(&mut v, &id, day, seq);
        }
        Some((u64_key(first), v))
    }

    /// Forgets these messageIds (an erasure) and rewrites the group records holding any,
    /// through `rewrite(key, new value or None to remove)`.
    pub(crate) fn erase(
        &mut self,
        ids: &[String],
        records: &Keyspace,
        mut rewrite: impl FnMut(Vec<u8>, Option<Vec<u8>>),
    ) -> Result<(), StoreError> {
        let gone: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        if !ids.iter().any(|m| self.map.contains_key(m)) {
            return Ok(());
        }
        for m in ids {
            self.map.remove(m);
        }
        self.unrecorded
            .retain(|(m, _, _)| !gone.contains(m.as_str()));
        for guard in records.iter() {
            let (k, v) = guard.into_inner()?;
            let entries = decode(&v)?;
            if !entries.iter().any(|(m, _, _)| gone.contains(m.as_str())) {
                continue;
            }
            let mut kept = Vec::new();
            for (m, day, seq) in entries {
                if !gone.contains(m.as_str()) {
                    encode_entry(&mut kept, &m, day, seq);
                }
            }
            rewrite(k.to_vec(), (!kept.is_empty()).then_some(kept));
        }
        Ok(())
    }

    /// Writes every entry into `dedupe` in one sorted ingestion and removes the group
    /// records (the caller has committed every one, and nothing is unrecorded). The
    /// entries stay readable here until `dedupe` holds them.
    pub(crate) fn ingest(
        &mut self,
        db: &fjall::Database,
        dedupe: &Keyspace,
        records: &Keyspace,
    ) -> Result<usize, StoreError> {
        let mut entries: Vec<(&String, &(u32, u64))> = self.map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let n = entries.len();
        if n > 0 {
            let mut ingestion = dedupe.start_ingestion()?;
            for (id, &(day, seq)) in entries {
                ingestion.write(id.as_bytes(), dedupe_value(day, seq))?;
            }
            ingestion.finish()?;
        }
        let mut batch = db.batch();
        for guard in records.iter() {
            let k = guard.key()?;
            if read_u64(&k).is_some() {
                batch.remove(records, k);
            }
        }
        batch.commit()?;
        db.persist(fjall::PersistMode::SyncData)?;
        self.map.clear();
        Ok(n)
    }
}

/// Appends one entry to a group record. MessageIds are at most 32 KB (the event limit);
/// a longer one could not have been accepted, and is left out rather than cut.
fn encode_entry(out: &mut Vec<u8>, message_id: &str, day: u32, seq: u64) {
    let Ok(len) = u16::try_from(message_id.len()) else {
        return;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message_id.as_bytes());
    out.extend_from_slice(&day.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

fn decode(v: &[u8]) -> Result<Vec<(String, u32, u64)>, StoreError> {
    let bad = || StoreError::corrupt("dedupe record");
    let mut out = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let len = u16::from_be_bytes(
            rest.get(..2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let id = rest.get(2..2 + len).ok_or_else(bad)?;
        let tail = rest.get(2 + len..2 + len + 12).ok_or_else(bad)?;
        let day = u32::from_be_bytes(tail[..4].try_into().map_err(|_| bad())?);
        let seq = u64::from_be_bytes(tail[4..].try_into().map_err(|_| bad())?);
        out.push((String::from_utf8(id.to_vec()).map_err(|_| bad())?, day, seq));
        rest = &rest[2 + len + 12..];
    }
    Ok(out)
}
