//! The event log: events packed into chunks, one key per chunk, each event linked to the
//! same person's previous event.
//!
//! One key per event, plus one per-person index key per event, cost the writer and the
//! committer about 3 us of CPU each (memtable insert, journal, flush and compaction,
//! measured), which was a third of ingest. A group's events are written as chunks of up to
//! [`CHUNK_EVENTS`] under the seq of their first event, so a chunk is found for any seq by
//! the greatest key at or before it. A person's events are found by following each event's
//! `prev` link from the heads their profile keeps ([`kairos_core::Profile::log_heads`], one
//! chain per person merged in), so merges move nothing and there is no index to write.
//!
//! Chunk: `[version u8][count u16][offsets u32 x (count + 1)][records]`, integers
//! big-endian; record `i` is `bytes[offsets[i]..offsets[i + 1]]` relative to the records:
//! `[prev u64][event time i64][event JSON]`. Erasure rewrites a chunk with the person's
//! records emptied (prev 0, time 0, no payload).

use crate::StoreError;
use kairos_core::Millis;

/// At most this many events per chunk: a chain walk reads a whole chunk for each event, so
/// chunks stay small (about 30 KB of shop events).
pub const CHUNK_EVENTS: usize = 64;

/// `prev` of a person's first event (seqs start at 1).
pub const NO_PREV: u64 = 0;

const VERSION: u8 = 1;
const RECORD_HEADER: usize = 16;

/// A chunk being filled by the writer.
#[derive(Debug)]
pub(crate) struct ChunkBuilder {
    pub(crate) first: u64,
    offsets: Vec<u32>,
    body: Vec<u8>,
}

impl ChunkBuilder {
    pub(crate) fn new(first: u64) -> Self {
        Self {
            first,
            offsets: vec![0],
            body: Vec::with_capacity(CHUNK_EVENTS * 512),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= CHUNK_EVENTS
    }

    /// The seq the next pushed record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first + self.len() as u64
    }

    pub(crate) fn push(&mut self, prev: u64, time: Millis, payload: &[u8]) {
        self.body.extend_from_slice(&prev.to_be_bytes());
        self.body.extend_from_slice(&time.to_be_bytes());
        self.body.extend_from_slice(payload);
        self.offsets.push(self.body.len() as u32);
    }

    /// Record `seq` if this chunk holds it: (prev, time, payload).
    pub(crate) fn get(&self, seq: u64) -> Option<(u64, Millis, &[u8])> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        let rec = self
            .body
            .get(*self.offsets.get(i)? as usize..*self.offsets.get(i + 1)? as usize)?;
        let prev = u64::from_be_bytes(rec.get(..8)?.try_into().ok()?);
        let time = i64::from_be_bytes(rec.get(8..16)?.try_into().ok()?);
        Some((prev, time, rec.get(RECORD_HEADER..)?))
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let count = self.len();
        let mut out = Vec::with_capacity(3 + self.offsets.len() * 4 + self.body.len());
        out.push(VERSION);
        out.extend_from_slice(&(count as u16).to_be_bytes());
        for o in &self.offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// One stored event as a chunk holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub prev: u64,
    pub time: Millis,
    /// The event as JSON; empty once erased.
    pub payload: &'a [u8],
}

/// A parsed view of a stored chunk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk<'a> {
    count: usize,
    offsets: &'a [u8],
    body: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::corrupt("event chunk");
        let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
        if version != VERSION {
            return Err(bad());
        }
        let count = u16::from_be_bytes(
            rest.get(..2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let offsets = rest.get(2..2 + (count + 1) * 4).ok_or_else(bad)?;
        let body = rest.get(2 + (count + 1) * 4..).ok_or_else(bad)?;
        let chunk = Self {
            count,
            offsets,
            body,
        };
        if chunk.offset(count) != Some(body.len()) {
            return Err(bad());
        }
        Ok(chunk)
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    fn offset(&self, i: usize) -> Option<usize> {
        let b = self.offsets.get(i * 4..i * 4 + 4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?) as usize)
    }

    /// Record `i` (0-based), if the chunk has it.
    pub(crate) fn record(&self, i: usize) -> Option<Record<'a>> {
        if i >= self.count {
            return None;
        }
        let rec = self.body.get(self.offset(i)?..self.offset(i + 1)?)?;
        let prev = u64::from_be_bytes(rec.get(..8)?.try_into().ok()?);
        let time = i64::from_be_bytes(rec.get(8..16)?.try_into().ok()?);
        Some(Record {
            prev,
            time,
            payload: rec.get(RECORD_HEADER..)?,
        })
    }

    /// The same chunk with the records whose seq `erase` picks emptied.
    pub(crate) fn without(&self, first: u64, erase: impl Fn(u64) -> bool) -> Vec<u8> {
        let mut out = ChunkBuilder::new(first);
        for i in 0..self.count {
            match self.record(i) {
                Some(r) if !erase(first + i as u64) => out.push(r.prev, r.time, r.payload),
                _ => out.push(NO_PREV, 0, &[]),
            }
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_erasure_empties_only_the_chosen_ones() {
        let mut b = ChunkBuilder::new(10);
        b.push(NO_PREV, -5, b"{\"a\":1}");
        b.push(10, 7, b"");
        b.push(3, i64::MAX, b"{\"b\":2}");
        assert_eq!(b.next_seq(), 13);
        assert_eq!(b.get(12), Some((3, i64::MAX, &b"{\"b\":2}"[..])));
        assert_eq!((b.get(9), b.get(13)), (None, None));
        let bytes = b.finish();
        let c = Chunk::parse(&bytes).expect("parses");
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.record(0),
            Some(Record {
                prev: NO_PREV,
                time: -5,
                payload: b"{\"a\":1}"
            })
        );
        assert_eq!(
            c.record(1).map(|r| (r.prev, r.payload.len())),
            Some((10, 0))
        );
        assert_eq!(c.record(2).map(|r| r.time), Some(i64::MAX));
        assert_eq!(c.record(3), None);

        let erased = c.without(10, |seq| seq == 12);
        let e = Chunk::parse(&erased).expect("parses");
        assert_eq!(e.record(0), c.record(0));
        assert_eq!(
            e.record(2),
            Some(Record {
                prev: NO_PREV,
                time: 0,
                payload: b""
            })
        );
        assert!(!erased.windows(5).any(|w| w == b"\"b\":2"));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_corrupt_not_a_panic() {
        let mut b = ChunkBuilder::new(1);
        b.push(NO_PREV, 1, b"xyz");
        let bytes = b.finish();
        for n in 0..bytes.len() {
            assert!(Chunk::parse(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        assert!(Chunk::parse(b"{\"json\": true}").is_err());
    }
}
