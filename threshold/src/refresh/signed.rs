//! Secret signed integers of one fixed precision: two's complement on constant-time,
//! zeroizing `BoxedUint`s.
//!
//! A refresh adds, subtracts and multiplies by small public numbers, never divides, so the
//! arithmetic modulo `2^P` of two's complement gives the exact integer result as long as
//! every value stays within `±2^(P−1)`, which [`super::Bounds::precision`] guarantees. No
//! operation branches on a secret; the one comparison, against a public bound, returns the
//! public fact whether a received value is in range.

use crypto_bigint::{BoxedUint, CtLt, CtSelect, NonZero, RandomMod};
use num_bigint::{BigInt, BigUint, Sign};
use rand::CryptoRng;
use zeroize::Zeroizing;

use crate::SecretInt;

/// A secret integer in `(−2^(P−1), 2^(P−1))`, held as its two's complement modulo `2^P`.
pub(crate) struct Signed(Zeroizing<BoxedUint>);

impl Signed {
    /// Zero at `precision` bits (a multiple of 64).
    pub(crate) fn zero(precision: u32) -> Self {
        Self(Zeroizing::new(BoxedUint::zero_with_precision(precision)))
    }

    /// A public non-negative integer (a bound, a correction) at `precision` bits; `None` if
    /// it does not fit.
    pub(crate) fn public(x: &BigUint, precision: u32) -> Option<Self> {
        let value = BoxedUint::from_be_slice(&x.to_bytes_be(), precision).ok()?;
        let this = Self(Zeroizing::new(value));
        (!this.is_negative()).then_some(this)
    }

    /// A signed num-bigint integer at `precision` bits; `None` if it does not fit. Not
    /// constant time (key generation's own arithmetic is num-bigint already).
    pub(crate) fn from_bigint_vartime(x: &BigInt, precision: u32) -> Option<Self> {
        Self::public_signed(x, precision)
    }

    /// A public signed integer at `precision` bits.
    pub(crate) fn public_signed(x: &BigInt, precision: u32) -> Option<Self> {
        let magnitude = Self::public(x.magnitude(), precision)?;
        Some(if x.sign() == Sign::Minus {
            magnitude.neg()
        } else {
            magnitude
        })
    }

    /// Uniform in `[0, bound)` for a public `bound > 0`.
    pub(crate) fn random_below<R: CryptoRng + ?Sized>(
        bound: &BigUint,
        precision: u32,
        rng: &mut R,
    ) -> Option<Self> {
        let bound = BoxedUint::from_be_slice(&bound.to_bytes_be(), precision).ok()?;
        let bound = NonZero::new(bound).into_option()?;
        Some(Self(Zeroizing::new(BoxedUint::random_mod_vartime(
            rng, &bound,
        ))))
    }

    /// Reads `precision / 8` bytes of big-endian two's complement.
    pub(crate) fn from_bytes(bytes: &[u8], precision: u32) -> Option<Self> {
        if bytes.len() != (precision / 8) as usize {
            return None;
        }
        Some(Self(Zeroizing::new(
            BoxedUint::from_be_slice(bytes, precision).ok()?,
        )))
    }

    /// `precision / 8` bytes of big-endian two's complement.
    pub(crate) fn to_secret(&self) -> SecretInt {
        SecretInt::from_be_bytes(Zeroizing::new(self.0.to_be_bytes()).to_vec())
    }

    /// The precision in bits.
    pub(crate) fn precision(&self) -> u32 {
        self.0.bits_precision()
    }

    /// The same value at a larger (or equal) precision, sign-extended without a branch on
    /// the sign; `None` if `precision` is smaller.
    pub(crate) fn widen(&self, precision: u32) -> Option<Self> {
        let own = self.precision();
        if precision < own {
            return None;
        }
        if precision == own {
            return Some(self.clone());
        }
        let extended = Zeroizing::new(
            BoxedUint::from_be_slice(&Zeroizing::new(self.0.to_be_bytes()), precision).ok()?,
        );
        // A negative value read as unsigned is x + 2^own: take 2^own off again.
        let wrap = BoxedUint::one_with_precision(precision).shl_vartime(own)?;
        let corrected = Zeroizing::new(extended.wrapping_sub(&wrap));
        let sign = self.0.bit(own - 1);
        Some(Self(Zeroizing::new(BoxedUint::ct_select(
            &extended, &corrected, sign,
        ))))
    }

    /// The same value at a smaller precision; `None` unless it fits (`|x| < 2^(precision−1)`).
    /// Two's complement keeps its low bits, so this drops the high bytes.
    pub(crate) fn narrow(&self, precision: u32) -> Option<Self> {
        if precision >= self.precision() {
            return self.widen(precision);
        }
        let limit = BigUint::from(1u8) << (precision - 1);
        if !self.abs_below(&limit) {
            return None;
        }
        let bytes = Zeroizing::new(self.0.to_be_bytes());
        let skip = bytes.len() - (precision / 8) as usize;
        Some(Self(Zeroizing::new(
            BoxedUint::from_be_slice(bytes.get(skip..)?, precision).ok()?,
        )))
    }

    /// Whether the value is negative (its top bit): a public fact wherever it is asked.
    pub(crate) fn is_negative(&self) -> bool {
        self.0.bit(self.precision() - 1).into()
    }

    /// `−x`.
    pub(crate) fn neg(&self) -> Self {
        Self(Zeroizing::new(self.0.wrapping_neg()))
    }

    /// `x + y` (same precision).
    pub(crate) fn add(&self, other: &Self) -> Self {
        Self(Zeroizing::new(self.0.wrapping_add(&*other.0)))
    }

    /// `x − y` (same precision).
    pub(crate) fn sub(&self, other: &Self) -> Self {
        Self(Zeroizing::new(self.0.wrapping_sub(&*other.0)))
    }

    /// `x·m` for a small public `m`.
    pub(crate) fn mul_small(&self, m: u64) -> Self {
        let m = BoxedUint::from_words_with_precision([m], self.precision());
        Self(Zeroizing::new(self.0.wrapping_mul(&m)))
    }

    /// `x·m` for a public signed `m` (a Lagrange coefficient times a constant).
    pub(crate) fn mul_public(&self, m: &BigInt) -> Self {
        let magnitude = BoxedUint::from_be_slice_vartime(&m.magnitude().to_bytes_be());
        let product = Self(Zeroizing::new(self.0.wrapping_mul(&magnitude)));
        if m.sign() == Sign::Minus {
            product.neg()
        } else {
            product
        }
    }

    /// `⌊x / d⌋` for a public `d > 0` (rounding towards −∞, also for negative `x`) and
    /// whether the division was exact, in constant time in `x`: `x` is moved up by a
    /// public multiple of `d` above any value of the precision, divided as an unsigned
    /// number, and moved back. `None` if `d` is 0 or too large for the precision.
    pub(crate) fn floor_div(&self, d: &BigUint) -> Option<(Self, bool)> {
        self.floor_div_rem(d)
            .map(|(q, r)| (q, num_traits::Zero::is_zero(&r)))
    }

    /// `⌊x / d⌋` and `x mod d` (in `[0, d)`) for a public `d`, constant time in `x`; the
    /// remainder is returned as a plain integer, for a caller that publishes it or checks
    /// it is zero.
    pub(crate) fn floor_div_rem(&self, d: &BigUint) -> Option<(Self, BigUint)> {
        let precision = self.precision();
        if d.bits() == 0 || d.bits() + 4 > u64::from(precision) {
            return None;
        }
        // offset = d·⌈2^(P−1)/d⌉ ≥ 2^(P−1) > |x|, and x + offset < 2^P + d·... fits when
        // computed one limb wider.
        let wide = precision + 64;
        let steps = ((BigUint::from(1u8) << (precision - 1)) + d - 1u8) / d;
        let offset = d * &steps;
        let x = self.widen(wide)?;
        let shifted = x.add(&Self::public(&offset, wide)?);
        let divisor = BoxedUint::from_be_slice(&d.to_bytes_be(), wide).ok()?;
        let divisor = NonZero::new(divisor).into_option()?;
        let (quotient, remainder) = shifted.0.div_rem(&divisor);
        let remainder = Zeroizing::new(remainder);
        let remainder = BigUint::from_bytes_be(&remainder.to_be_bytes());
        let quotient = Self(Zeroizing::new(quotient)).sub(&Self::public(&steps, wide)?);
        Some((quotient.narrow(precision)?, remainder))
    }

    /// Whether `|x| < bound` for a public `bound` below `2^(P−2)`: `x + (bound − 1)` taken
    /// as an unsigned number is below `2·bound − 1` exactly then. Constant time in `x`.
    pub(crate) fn abs_below(&self, bound: &BigUint) -> bool {
        let precision = self.precision();
        if bound.bits() == 0 || bound.bits() + 2 > u64::from(precision) {
            return false;
        }
        let below = bound - 1u8;
        let (Ok(offset), Ok(limit)) = (
            BoxedUint::from_be_slice(&below.to_bytes_be(), precision),
            BoxedUint::from_be_slice(&(bound + &below).to_bytes_be(), precision),
        ) else {
            return false;
        };
        let shifted = Zeroizing::new(self.0.wrapping_add(&offset));
        shifted.ct_lt(&limit).into()
    }

    /// Whether `0 ≤ x < bound` for a public `bound` below `2^(P−1)`. Constant time in `x`.
    pub(crate) fn in_range(&self, bound: &BigUint) -> bool {
        let Ok(b) = BoxedUint::from_be_slice(&bound.to_bytes_be(), self.precision()) else {
            return false;
        };
        !self.is_negative() && bool::from(self.0.ct_lt(&b))
    }

    /// A non-negative value as a [`SecretInt`] of `len` bytes; `None` if negative or longer.
    pub(crate) fn to_unsigned(&self, len: usize) -> Option<SecretInt> {
        if self.is_negative() {
            return None;
        }
        SecretInt::from_boxed(&self.0, len)
    }

    /// The value as a num-bigint integer. For tests and public values only.
    #[cfg(test)]
    pub(crate) fn open_vartime(&self) -> BigInt {
        let magnitude = if self.is_negative() {
            self.neg()
        } else {
            self.clone()
        };
        let m = BigUint::from_bytes_be(&magnitude.0.to_be_bytes());
        if self.is_negative() {
            -BigInt::from(m)
        } else {
            BigInt::from(m)
        }
    }
}

impl Clone for Signed {
    fn clone(&self) -> Self {
        Self(Zeroizing::new((*self.0).clone()))
    }
}

impl core::fmt::Debug for Signed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Signed([redacted; {} bits])", self.precision())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(x: i64) -> Signed {
        Signed::public_signed(&BigInt::from(x), 128).unwrap()
    }

    #[test]
    fn arithmetic_is_exact_within_the_precision() {
        for (a, b) in [(5i64, 7i64), (-5, 7), (5, -7), (-5, -7), (0, -1)] {
            assert_eq!(s(a).add(&s(b)).open_vartime(), BigInt::from(a + b));
            assert_eq!(s(a).sub(&s(b)).open_vartime(), BigInt::from(a - b));
            assert_eq!(s(a).mul_small(6).open_vartime(), BigInt::from(a * 6));
            assert_eq!(s(a).neg().open_vartime(), BigInt::from(-a));
        }
    }

    #[test]
    fn floor_division_rounds_down_for_any_sign() {
        for (x, d) in [
            (17i64, 5u64),
            (-17, 5),
            (15, 5),
            (-15, 5),
            (0, 7),
            (-1, 7),
            (6, 7),
        ] {
            let (q, exact) = s(x).floor_div(&BigUint::from(d)).unwrap();
            assert_eq!(
                q.open_vartime(),
                BigInt::from(x.div_euclid(d as i64)),
                "{x}/{d}"
            );
            assert_eq!(exact, x.rem_euclid(d as i64) == 0, "{x}/{d}");
        }
        assert!(s(5).floor_div(&BigUint::from(0u8)).is_none());
    }

    #[test]
    fn ranges_and_encodings() {
        let bound = BigUint::from(10u8);
        for (x, abs, range) in [
            (0i64, true, true),
            (9, true, true),
            (10, false, false),
            (-9, true, false),
            (-10, false, false),
        ] {
            assert_eq!(s(x).abs_below(&bound), abs, "{x}");
            assert_eq!(s(x).in_range(&bound), range, "{x}");
        }
        let bytes = s(-3).to_secret();
        assert_eq!(bytes.len(), 16);
        assert_eq!(
            Signed::from_bytes(bytes.as_be_bytes(), 128)
                .unwrap()
                .open_vartime(),
            BigInt::from(-3)
        );
        assert!(Signed::from_bytes(bytes.as_be_bytes(), 192).is_none());
        assert_eq!(s(-3).widen(256).unwrap().open_vartime(), BigInt::from(-3));
        assert_eq!(
            s(-3).widen(256).unwrap().narrow(64).unwrap().open_vartime(),
            BigInt::from(-3)
        );
        let big = Signed::public(&(BigUint::from(1u8) << 100u8), 128).unwrap();
        assert!(big.narrow(64).is_none());
        assert!(s(-1).to_unsigned(16).is_none());
        assert_eq!(s(258).to_unsigned(2).unwrap().as_be_bytes(), &[1, 2]);
        assert!(s(258).to_unsigned(1).is_none());
    }
}
