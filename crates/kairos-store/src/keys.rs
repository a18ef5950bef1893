//! Key layout. All integers are big-endian so that byte order is numeric order.
//!
//! | keyspace     | key                                   | value                        |
//! |--------------|---------------------------------------|------------------------------|
//! | `log`        | arrival seq (u64)                     | event (JSON)                 |
//! | `by_profile` | profile (u64), event time (i64), seq  | empty                        |
//! | `dedupe`     | messageId                             | arrival day (u32), seq (u64) |
//! | `profiles`   | profile (u64)                         | encoded [`Profile`]          |
//! | `identity`   | identifier index key                  | profile (u64)                |
//! | `redirects`  | old profile (u64)                     | new profile (u64)            |
//! | `redirected` | new profile (u64), old profile (u64)  | empty (reverse of redirects) |
//! | `dead`       | dead-letter seq (u64)                 | rejected event (JSON)        |
//! | `suppress`   | SHA-256 of an erased identifier       | erasure time (i64)           |
//!
//! [`Profile`]: kairos_core::Profile

use kairos_core::{Millis, ProfileId};

pub fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// Event time with the sign bit flipped, so negative instants sort before positive ones.
fn time_bits(t: Millis) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn time_from_bits(b: u64) -> Millis {
    (b ^ (1 << 63)) as i64
}

pub fn by_profile_key(p: ProfileId, ts: Millis, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&p.0.to_be_bytes());
    k[8..16].copy_from_slice(&time_bits(ts).to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// (profile, event time, seq) of a `by_profile` key.
pub fn parse_by_profile_key(k: &[u8]) -> Option<(ProfileId, Millis, u64)> {
    Some((
        ProfileId(read_u64(k.get(..8)?)?),
        time_from_bits(read_u64(k.get(8..16)?)?),
        read_u64(k.get(16..24)?)?,
    ))
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
    fn by_profile_keys_sort_by_time_including_before_1970() {
        let p = ProfileId(7);
        let a = by_profile_key(p, -5, 9);
        let b = by_profile_key(p, 3, 1);
        assert!(a < b);
        assert_eq!(parse_by_profile_key(&a), Some((p, -5, 9)));
    }
}
