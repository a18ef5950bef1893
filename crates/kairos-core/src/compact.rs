//! Compact stored forms: parts of a profile with many small numbers (a score's day sums, a
//! capped rule's times per cap window) are written as one byte string of varints instead
//! of a sequence the serializer frames number by number. Human-readable forms (JSON) keep
//! the sequences; profiles of encodings before 8 stored them as sequences too. (Activity
//! buckets were tried the same way and decoded slower than postcard's own sequences.)

use smallvec::SmallVec;

pub(crate) type Buf = SmallVec<[u8; 512]>;

#[inline]
pub(crate) fn put_varint(out: &mut Buf, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed number, zigzagged so that small magnitudes take one byte.
#[inline]
pub(crate) fn put_signed(out: &mut Buf, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[inline]
pub(crate) fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[inline]
pub(crate) fn take_signed(bytes: &mut &[u8]) -> Option<i64> {
    let z = take_varint(bytes)?;
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

#[inline]
pub(crate) fn take_f64(bytes: &mut &[u8]) -> Option<f64> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(f64::from_le_bytes(*head))
}

/// A count of items of at least `min_bytes` each: beyond what is left, it is corrupt.
#[inline]
pub(crate) fn take_count(bytes: &mut &[u8], min_bytes: usize) -> Option<usize> {
    let n = usize::try_from(take_varint(bytes)?).ok()?;
    (n <= bytes.len() / min_bytes.max(1)).then_some(n)
}
