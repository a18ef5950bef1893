//! Numbers with Ruby Liquid semantics: integer math stays integral, float math goes through
//! decimal arithmetic (Ruby converts floats to `BigDecimal`), so `10.1 | minus: 2.2` is `7.9`
//! and not `7.8999999999999995`. Floats print like Ruby's `Float#to_s`.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

/// An exact decimal `mantissa * 10^-scale`, used for float arithmetic.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    mantissa: i128,
    scale: u32,
}

const MAX_DIGITS: usize = 36;

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Decimal {
    fn from_num(n: Num) -> Option<Decimal> {
        match n {
            Num::Int(i) => Some(Decimal {
                mantissa: i128::from(i),
                scale: 0,
            }),
            Num::Float(f) => Decimal::from_f64(f),
        }
    }

    /// The shortest decimal that round-trips to `f` (what Ruby's `BigDecimal(f.to_s)` sees).
    fn from_f64(f: f64) -> Option<Decimal> {
        if !f.is_finite() {
            return None;
        }
        // Fast path for money-like values: find the smallest scale whose integer mantissa
        // converts back to exactly `f` (both conversions are exact or correctly rounded below
        // 2^53 and 10^15).
        if f.abs() < 1e15 {
            let mut p = 1.0f64;
            for scale in 0..=15u32 {
                let m = (f * p).round();
                if m.abs() < 9.007_199_254_740_992e15 && m / p == f {
                    return Some(Decimal {
                        mantissa: m as i128,
                        scale,
                    });
                }
                p *= 10.0;
            }
        }
        let text = format!("{f}");
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        let all: String = format!("{int_part}{frac_part}");
        let significant = all.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return None;
        }
        let mantissa: i128 = if significant.is_empty() {
            0
        } else {
            significant.parse().ok()?
        };
        Some(Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            scale: u32::try_from(frac_part.len()).ok()?,
        })
    }

    fn to_f64(self) -> f64 {
        // Exact operands give a correctly rounded quotient; otherwise parse the decimal text.
        if self.mantissa.unsigned_abs() < (1u128 << 53) && self.scale <= 22 {
            return self.mantissa as f64 / 10f64.powi(self.scale as i32);
        }
        format!("{}e-{}", self.mantissa, self.scale)
            .parse()
            .unwrap_or(0.0)
    }

    fn aligned(a: Decimal, b: Decimal) -> Option<(i128, i128, u32)> {
        let scale = a.scale.max(b.scale);
        let ma = a.mantissa.checked_mul(pow10(scale - a.scale)?)?;
        let mb = b.mantissa.checked_mul(pow10(scale - b.scale)?)?;
        Some((ma, mb, scale))
    }

    fn add(a: Decimal, b: Decimal) -> Option<Decimal> {
        let (ma, mb, scale) = Decimal::aligned(a, b)?;
        Some(Decimal {
            mantissa: ma.checked_add(mb)?,
            scale,
        })
    }

    fn mul(a: Decimal, b: Decimal) -> Option<Decimal> {
        Some(Decimal {
            mantissa: a.mantissa.checked_mul(b.mantissa)?,
            scale: a.scale.checked_add(b.scale)?,
        })
    }

    /// Floored modulo (the result has the sign of the divisor), like Ruby.
    fn modulo(a: Decimal, b: Decimal) -> Option<Decimal> {
        let (ma, mb, scale) = Decimal::aligned(a, b)?;
        let mut r = ma.checked_rem(mb)?;
        if r != 0 && (r < 0) != (mb < 0) {
            r = r.checked_add(mb)?;
        }
        Some(Decimal { mantissa: r, scale })
    }

    /// Rounds half away from zero to `digits` decimal places (negative: tens, hundreds...).
    fn round(self, digits: i64) -> Option<Decimal> {
        let target = i64::from(self.scale);
        if digits >= target {
            return Some(self);
        }
        let drop = u32::try_from(target - digits).ok()?;
        let Some(factor) = pow10(drop) else {
            return Some(Decimal {
                mantissa: 0,
                scale: u32::try_from(digits.max(0)).ok()?,
            });
        };
        let mut q = self.mantissa / factor;
        let rem = self.mantissa % factor;
        if rem.unsigned_abs() * 2 >= factor.unsigned_abs() {
            q += self.mantissa.signum();
        }
        if digits >= 0 {
            Some(Decimal {
                mantissa: q,
                scale: u32::try_from(digits).ok()?,
            })
        } else {
            let back = pow10(u32::try_from(-digits).ok()?)?;
            Some(Decimal {
                mantissa: q.checked_mul(back)?,
                scale: 0,
            })
        }
    }
}

impl Num {
    /// Ruby's `Utils.to_number` for strings: `"1.5"` is a float, anything else goes through
    /// `String#to_i` (leading integer, else 0).
    pub(crate) fn parse_ruby(s: &str) -> Num {
        let t = s.trim();
        let body = t.strip_prefix('-').unwrap_or(t);
        if let Some((int_part, frac)) = body.split_once('.') {
            if !int_part.is_empty()
                && !frac.is_empty()
                && int_part.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Num::Float(t.parse().unwrap_or(0.0));
            }
        }
        ruby_to_i(s)
    }

    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub(crate) fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }

    pub(crate) fn cmp_num(&self, other: &Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(b)),
            _ => self.as_f64().partial_cmp(&other.as_f64()),
        }
    }

    fn decimal_op(
        self,
        other: Num,
        op: fn(Decimal, Decimal) -> Option<Decimal>,
        fallback: fn(f64, f64) -> f64,
    ) -> Num {
        match (Decimal::from_num(self), Decimal::from_num(other)) {
            (Some(a), Some(b)) => match op(a, b) {
                Some(d) => Num::Float(d.to_f64()),
                None => Num::Float(fallback(self.as_f64(), other.as_f64())),
            },
            _ => Num::Float(fallback(self.as_f64(), other.as_f64())),
        }
    }

    pub(crate) fn plus(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            _ => self.decimal_op(other, Decimal::add, |a, b| a + b),
        }
    }

    pub(crate) fn minus(self, other: Num) -> Num {
        let negated = match other {
            Num::Int(b) => b.checked_neg().map_or(Num::Float(-(b as f64)), Num::Int),
            Num::Float(f) => Num::Float(-f),
        };
        self.plus(negated)
    }

    pub(crate) fn times(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_mul(b)
                .map_or(Num::Float(a as f64 * b as f64), Num::Int),
            _ => self.decimal_op(other, Decimal::mul, |a, b| a * b),
        }
    }

    pub(crate) fn divided_by(self, other: Num) -> Result<Num, String> {
        if other.is_zero() {
            return Err("divided by 0".into());
        }
        Ok(match (self, other) {
            (Num::Int(a), Num::Int(b)) => match a.checked_div(b) {
                Some(q) if a % b != 0 && ((a < 0) != (b < 0)) => Num::Int(q - 1),
                Some(q) => Num::Int(q),
                None => Num::Float(a as f64 / b as f64),
            },
            _ => Num::Float(self.as_f64() / other.as_f64()),
        })
    }

    pub(crate) fn modulo(self, other: Num) -> Result<Num, String> {
        if other.is_zero() {
            return Err("divided by 0".into());
        }
        Ok(match (self, other) {
            (Num::Int(a), Num::Int(b)) => match a.checked_rem(b) {
                Some(r) if r != 0 && ((r < 0) != (b < 0)) => Num::Int(r + b),
                Some(r) => Num::Int(r),
                None => Num::Int(0),
            },
            _ => self.decimal_op(other, Decimal::modulo, |a, b| a - b * (a / b).floor()),
        })
    }

    /// Ruby's `round(n)`: integers stay integers; floats become integers when `n <= 0`.
    pub(crate) fn round(self, digits: i64) -> Num {
        match self {
            Num::Int(i) => {
                if digits >= 0 {
                    return Num::Int(i);
                }
                let d = Decimal {
                    mantissa: i128::from(i),
                    scale: 0,
                };
                match d.round(digits) {
                    Some(r) => Num::Int(i64::try_from(r.mantissa).unwrap_or(i)),
                    None => Num::Int(0),
                }
            }
            Num::Float(f) => {
                let rounded = Decimal::from_f64(f)
                    .and_then(|d| d.round(digits))
                    .map(Decimal::to_f64);
                let value = rounded.unwrap_or_else(|| {
                    let p = 10f64.powi(i32::try_from(digits.clamp(-300, 300)).unwrap_or(0));
                    (f * p).round() / p
                });
                if digits <= 0 {
                    Num::Int(float_to_i64(value))
                } else {
                    Num::Float(value)
                }
            }
        }
    }

    pub(crate) fn abs(self) -> Num {
        match self {
            Num::Int(i) => i
                .checked_abs()
                .map_or(Num::Float((i as f64).abs()), Num::Int),
            Num::Float(f) => Num::Float(f.abs()),
        }
    }

    pub(crate) fn ceil(self) -> Num {
        match self {
            Num::Int(i) => Num::Int(i),
            Num::Float(f) => Num::Int(float_to_i64(f.ceil())),
        }
    }

    pub(crate) fn floor(self) -> Num {
        match self {
            Num::Int(i) => Num::Int(i),
            Num::Float(f) => Num::Int(float_to_i64(f.floor())),
        }
    }
}

pub(crate) fn float_to_i64(f: f64) -> i64 {
    // `as` saturates and maps NaN to 0: never panics.
    f as i64
}

/// Ruby's `String#to_i`: optional whitespace and sign, then digits (single `_` allowed
/// between digits); 0 when there are none.
pub(crate) fn ruby_to_i(s: &str) -> Num {
    let t = s.trim_start();
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut digits = String::new();
    let mut prev_digit = false;
    for c in rest.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            prev_digit = true;
        } else if c == '_' && prev_digit {
            prev_digit = false;
        } else {
            break;
        }
    }
    if digits.is_empty() {
        return Num::Int(0);
    }
    match digits.parse::<i64>() {
        Ok(v) => Num::Int(if negative { -v } else { v }),
        Err(_) => {
            let f: f64 = digits.parse().unwrap_or(0.0);
            Num::Float(if negative { -f } else { f })
        }
    }
}

/// Ruby's `Float#to_s`: `5.0`, `0.0001`, `1.0e-05`, `1.0e+16`.
#[cfg(test)]
pub(crate) fn format_float(f: f64) -> String {
    let mut s = String::new();
    write_float(&mut s, f);
    s
}

/// Appends Ruby's `Float#to_s` of `f` to `out` without an intermediate allocation.
pub(crate) fn write_float(out: &mut String, f: f64) {
    use std::fmt::Write as _;
    let abs = f.abs();
    if f.is_finite() && (abs == 0.0 || (1e-4..1e16).contains(&abs)) {
        let start = out.len();
        let _ = write!(out, "{f}");
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
        return;
    }
    out.push_str(&format_float_slow(f));
}

fn format_float_slow(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let mut s = format!("{f}");
    if !s.contains('.') {
        s.push_str(".0");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_arithmetic() {
        assert_eq!(Num::Float(10.1).minus(Num::Float(2.2)), Num::Float(7.9));
        assert_eq!(Num::Float(10.1).plus(Num::Float(2.2)), Num::Float(12.3));
        assert_eq!(Num::Int(5).times(Num::Float(2.1)), Num::Float(10.5));
        assert_eq!(
            Num::Float(10.1).modulo(Num::Float(7.0)),
            Ok(Num::Float(3.1))
        );
        assert_eq!(Num::Int(-7).divided_by(Num::Int(2)), Ok(Num::Int(-4)));
        assert_eq!(Num::Int(-7).modulo(Num::Int(3)), Ok(Num::Int(2)));
        assert_eq!(Num::Float(2.675).round(2), Num::Float(2.68));
        assert_eq!(Num::Float(5.666).round(-2), Num::Int(0));
        assert_eq!(Num::Int(1234).round(-2), Num::Int(1200));
        assert_eq!(
            Num::Int(i64::MAX).plus(Num::Int(1)),
            Num::Float(i64::MAX as f64 + 1.0)
        );
    }

    #[test]
    fn ruby_float_format() {
        assert_eq!(format_float(5.0), "5.0");
        assert_eq!(format_float(2.857142857142857), "2.857142857142857");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(0.00001), "1.0e-05");
        assert_eq!(format_float(1e16), "1.0e+16");
        assert_eq!(format_float(-1.5e20), "-1.5e+20");
    }

    #[test]
    fn ruby_string_numbers() {
        assert_eq!(Num::parse_ruby("2.0"), Num::Float(2.0));
        assert_eq!(Num::parse_ruby("12abc"), Num::Int(12));
        assert_eq!(Num::parse_ruby("foo"), Num::Int(0));
        assert_eq!(Num::parse_ruby(" -5 "), Num::Int(-5));
        assert_eq!(Num::parse_ruby("1_000"), Num::Int(1000));
    }
}
