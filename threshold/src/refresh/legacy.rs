//! Converting a key of the form older releases made (Shamir shares of `Δ·d` and nothing
//! else) to the refreshable form, in its first refresh.
//!
//! Such a key has no additive layer, and its shares give additive shares of `Δ²·d` only:
//! `Σ_{i∈S} λ_i·s_i = Δ²·d` for `S = {1, …, k}`. No holder can divide by `Δ²` in the
//! exponent, but with `a·Δ² + b·e = 1` (`a` in `[1, e)`, so `b ≤ 0`) the integer
//! `D = a·Δ²·d + b` is a private exponent of the key too: `e·D = a·Δ²·(e·d) + b·e ≡ 1`
//! modulo `λ(N)`, so `c^D = c^d` for every `c`. The conversion therefore starts the refresh
//! from the additive shares `u_i = a·λ_i·s_i` for `i ∈ S` (0 for the others), with the
//! public `b` added to the absorber's, which sum to `D`; from then on the key is a key of
//! form `x = bits(e·Δ²)`, since `0 < D < e·Δ²·N`. Its shares are that many bits longer
//! (about 22 at 2-of-3 with `e = 65537`), and signatures are the same.
//!
//! The `u_i` are large (a share times `a·λ_i`), but the conversion's pieces need only hide
//! how the `u_i` of honest holders move when `d` does, which the piece range `R` of the
//! new form covers (docs/security.md).

use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::{One, Signed as _, Zero};

use super::{Bounds, Signed};
use crate::{Error, KeyShare, RsaPublicKey, SharingParams};

/// The public constants of a conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// `a` in `[1, e)` with `a·Δ² ≡ 1 (mod e)`.
    pub a: BigUint,
    /// `b = (1 − a·Δ²)/e`, at most 0.
    pub b: BigInt,
    /// The new form's `x`: `bits(e·Δ²)`.
    pub extra_bits: u32,
}

impl Conversion {
    /// The constants for a key with `public` and `params`.
    ///
    /// # Errors
    ///
    /// [`Error::PublicExponent`] if `Δ²` has no inverse modulo `e`.
    pub fn new(public: &RsaPublicKey, params: &SharingParams) -> Result<Self, Error> {
        let e = public.e();
        let delta = BigUint::from(params.delta());
        let delta_sq = &delta * &delta;
        let a = (&delta_sq % e)
            .modinv(e)
            .ok_or_else(|| Error::PublicExponent {
                e: e.to_string(),
                n: params.parties(),
            })?;
        let numerator = BigInt::one() - BigInt::from(&a * &delta_sq);
        let (b, rest) = numerator.div_rem(&BigInt::from(e.clone()));
        if !rest.is_zero() || b.is_positive() {
            return Err(Error::OutOfRange("conversion constants"));
        }
        let extra_bits = u32::try_from((e * &delta_sq).bits()).unwrap_or(u32::MAX);
        Ok(Self { a, b, extra_bits })
    }

    /// A bound on every `|u_i|`: `a·Δ·n^(k−1)·2^(share bits) + |b|`.
    pub(crate) fn old_bound(&self, public: &RsaPublicKey, params: &SharingParams) -> BigUint {
        let legacy_bits = params.share_bits(public);
        let n = BigUint::from(params.parties());
        let lambda_bound =
            BigUint::from(params.delta()) * num_traits::pow(n, params.threshold() - 1);
        ((&self.a * lambda_bound) << legacy_bits) + self.b.magnitude()
    }

    /// Holder `share.index()`'s starting value `u_i` at `precision` bits.
    pub(crate) fn old_additive(
        &self,
        params: &SharingParams,
        share: &KeyShare,
        absorber: usize,
        precision: u32,
    ) -> Result<Signed, Error> {
        let index = share.index();
        let k = params.threshold();
        let mut u = Signed::zero(precision);
        if index <= k {
            let set: Vec<usize> = (1..=k).collect();
            let factor =
                crate::combine::lambda(params.delta(), &set, index)? * BigInt::from(self.a.clone());
            let s = Signed::from_bytes(&padded(share, precision)?, precision)
                .ok_or(Error::OutOfRange("share"))?;
            u = s.mul_public(&factor);
        }
        if index == absorber {
            let b = Signed::public_signed(&self.b, precision)
                .ok_or(Error::OutOfRange("conversion constant"))?;
            u = u.add(&b);
        }
        Ok(u)
    }

    /// The bounds of the converted form.
    pub fn bounds(&self, public: &RsaPublicKey, params: &SharingParams) -> Result<Bounds, Error> {
        Bounds::new(public, params, self.extra_bits)
    }
}

/// The share's bytes left-padded to `precision / 8` (it is non-negative and shorter).
fn padded(share: &KeyShare, precision: u32) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let len = (precision / 8) as usize;
    let value = share.value().as_be_bytes();
    if value.len() >= len {
        return Err(Error::OutOfRange("share longer than the refresh precision"));
    }
    let mut out = zeroize::Zeroizing::new(vec![0u8; len]);
    out.get_mut(len - value.len()..)
        .ok_or(Error::OutOfRange("share"))?
        .copy_from_slice(value);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn constants_give_an_equivalent_exponent() {
        let n = (BigUint::one() << 1023u32) + 1u8;
        let public = RsaPublicKey::new(n, BigUint::from(65537u32)).unwrap();
        for (k, parties) in [(2, 3), (3, 5), (4, 7), (16, 16)] {
            let params = SharingParams::new(k, parties).unwrap();
            let c = Conversion::new(&public, &params).unwrap();
            let delta = BigInt::from(params.delta());
            assert!(c.a >= BigUint::one() && &c.a < public.e());
            assert_eq!(
                BigInt::from(c.a.clone()) * &delta * &delta + &c.b * BigInt::from(65537u32),
                BigInt::one()
            );
            assert!(!c.b.is_positive());
            assert!(
                BigUint::from(65537u32) * BigUint::from(params.delta()).pow(2)
                    < BigUint::one() << c.extra_bits
            );
        }
    }
}
