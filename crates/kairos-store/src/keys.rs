//! Key layout. All integers are big-endian so that byte order is numeric order.
//!
//! | keyspace     | key                                   | value                        |
//! |--------------|---------------------------------------|------------------------------|
//! | `events`     | arrival seq of the chunk's first event (u64) | chunk of events ([`crate::events`]) |
//! | `dedupe`     | messageId                             | arrival day (u32), seq (u64) |
//! | `dedupe_recent` | seq of the group's first new event (u64) | the group's new messageIds ([`crate::dedupe`]) |
//! | `profiles`   | profile (u64)                         | encoded [`Profile`]          |
//! | `identity`   | identifier index key                  | profile (u64)                |
//! | `redirects`  | old profile (u64)                     | new profile (u64)            |
//! | `redirected` | new profile (u64), old profile (u64)  | empty (reverse of redirects) |
//! | `dead`       | dead-letter seq (u64)                 | rejected event (JSON)        |
//! | `suppress`   | SHA-256 of an erased identifier       | erasure time (i64)           |
//! | `meta`       | `definitions`, `next_change`, `event:<name>` | JSON, u64, empty      |
//! | `timers`     | due time (i64), profile (u64)         | empty                        |
//! | `members`    | segment name, 0, profile (u64)        | entered at (i64)             |
//! | `stream_changes` | stream name, 0, change seq (u64)  | change ([`Change::encode`])  |
//! | `timeline`   | profile (u64), change seq (u64)       | stream name                  |
//! | `catalog`    | product id (UTF-8)                    | item (JSON)                  |
//!
//! Stream names: `segment:<name>`, `tier:<score>`, `primary`.
//!
//! [`Profile`]: kairos_core::Profile
//! [`Change::encode`]: kairos_core::Change::encode

use kairos_core::{Millis, ProfileId};

pub fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// Event time with the sign bit flipped, so negative instants sort before positive ones.
pub(crate) fn time_bits(t: Millis) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn time_from_bits(b: u64) -> Millis {
    (b ^ (1 << 63)) as i64
}

/// Due time then profile, so a range scan up to now yields every due timer.
pub fn timer_key(at: Millis, p: ProfileId) -> [u8; 16] {
    pair_key(time_bits(at), p.0)
}

pub fn parse_timer_key(k: &[u8]) -> Option<(Millis, ProfileId)> {
    Some((
        time_from_bits(read_u64(k.get(..8)?)?),
        ProfileId(read_u64(k.get(8..16)?)?),
    ))
}

/// `name`, a zero byte, then a big-endian u64 (names never hold a zero byte).
pub fn named_key(name: &str, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The prefix of every [`named_key`] of `name`.
pub fn name_prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

/// The u64 at the end of a [`named_key`].
pub fn named_key_tail(k: &[u8]) -> Option<u64> {
    read_u64(k.get(k.len().checked_sub(8)?..)?)
}

pub fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn dedupe_value(day: u32, seq: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&day.to_be_bytes());
    v[4..].copy_from_slice(&seq.to_be_bytes());
    v
}

pub fn dedupe_day(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_time_including_before_1970() {
        let p = ProfileId(7);
        let a = timer_key(-5, p);
        let b = timer_key(3, ProfileId(1));
        assert!(a < b);
        assert_eq!(parse_timer_key(&a), Some((-5, p)));
    }
}
