//! Compact stored forms: parts of a profile with many small numbers (a score's day sums, a
//! capped rule's times per cap window) are written as one byte string of varints instead
//! of a sequence the serializer frames number by number. Human-readable forms (JSON) keep
//! the sequences; profiles of encodings before 8 stored them as sequences too. (Activity
//! buckets were tried the same way and decoded slower than postcard's own sequences.)

use serde::de::{Error, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// The first profile encoding with these forms.
const SINCE_ENCODING: u8 = 8;

/// Serialises `value` as itself where the format is human-readable, else as the byte
/// string `write` fills.
pub(crate) fn serialize<S: Serializer, T: Serialize + ?Sized>(
    value: &T,
    s: S,
    write: impl FnOnce(&mut Buf),
) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        return value.serialize(s);
    }
    let mut out = Buf::new();
    write(&mut out);
    s.serialize_bytes(&out)
}

/// Reads what [`serialize`] wrote (or, from profiles of older encodings, the plain
/// sequence); `parse` reads the byte string, and a byte string it refuses is "corrupt
/// `what`".
pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    what: &'static str,
    parse: fn(&[u8]) -> Option<T>,
) -> Result<T, D::Error> {
    if d.is_human_readable() || crate::profile::reading_before(SINCE_ENCODING) {
        return T::deserialize(d);
    }
    struct Bytes<T> {
        what: &'static str,
        parse: fn(&[u8]) -> Option<T>,
    }
    impl<T> Visitor<'_> for Bytes<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.what)
        }
        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<T, E> {
            (self.parse)(bytes).ok_or_else(|| E::custom(format!("corrupt {}", self.what)))
        }
    }
    d.deserialize_bytes(Bytes { what, parse })
}

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
