//! The public bounds of a refreshable sharing: how large every secret and every message of a
//! key may be, computed from `N`, `k`, `n` and the key's form alone.
//!
//! With `Δ = n!` and `λ = 128` ([`HIDING_BITS`]):
//!
//! | name | value | what it bounds |
//! |---|---|---|
//! | `T` | `N` | the secret the additive layer sums to, `0 < D < T` |
//! | `R` | `T·2^(λ+120)` | a piece of a re-split: uniform in `[0, R)` |
//! | `A` | `2^8·R` | an additive share: `|a_j| < A`, in every epoch |
//! | `C` | `⌊Δ²·T·2^λ / n⌋` | each dealer's polynomial coefficients: uniform in `[0, C)` |
//! | `G` | `Δ·A + C·Σ_{m<k} n^m` | one dealt value `|F_l(i)| < G` |
//! | share | `Δ·T + Δ²·T·2^λ·Σ_{m<k} n^m` | a share `0 ≤ s_i <` this, [`Bounds::share_bits`] |
//!
//! `R` carries `2^120 ≥ n^(2(k−1))` for every `n ≤ 16`, so that it covers what a start from
//! shares moves (docs/security.md), and is the same for every sharing of a key: a
//! refresh into another sharing keeps its bounds. `A` covers every additive share of any
//! refresh (at most 16 senders' pieces for each of at most 16 receivers).
//!
//! None of them grows with the epoch: a refresh draws every piece but the absorber's afresh
//! from `[0, R)`, so the additive shares of the next epoch are again below `A` whatever they
//! were before, and the shares are sums of fresh polynomials below the same bound. The
//! share bound is exactly the one the dealer has always used, so a refreshed share of
//! RSA-2048 2-of-3 is 2183 bits like a freshly imported one.

use num_bigint::BigUint;
use num_traits::One;

use crate::{Error, RsaPublicKey, SharingParams};

/// Statistical hiding per epoch, in bits: the ranges are `2^λ` times the largest shift that
/// the argument in docs/security.md has to hide.
pub const HIDING_BITS: u32 = 128;

/// `R`'s factor beyond `2^λ`: at least `n^(2(k−1))` for every sharing of at most 16.
const SPREAD_BITS: u32 = 120;

/// `A / R`: at least the senders times the receivers of any refresh.
const ADDITIVE_SPREAD_BITS: u32 = 8;

/// Bits in a limb: every precision is a whole number of 64-bit limbs.
const LIMB_BITS: u32 = 64;

/// The bounds of one key's sharing. Everything here is public.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    params: SharingParams,
    piece: BigUint,
    additive: BigUint,
    coefficient: BigUint,
    deal: BigUint,
    share_bits: u32,
    precision: u32,
}

impl Bounds {
    /// The bounds of a key with modulus `public` and sharing `params`.
    ///
    /// # Errors
    ///
    /// None today; the result keeps the signature of a check.
    pub fn new(public: &RsaPublicKey, params: &SharingParams) -> Result<Self, Error> {
        let k = params.threshold();
        let n = BigUint::from(params.parties());
        let delta = BigUint::from(params.delta());
        let secret = public.n().clone();
        let piece = &secret << (HIDING_BITS + SPREAD_BITS);
        let additive = &piece << ADDITIVE_SPREAD_BITS;
        let all_coefficients = (&delta * &delta * &secret) << HIDING_BITS;
        let coefficient = &all_coefficients / &n;
        let powers = power_sum(&n, k);
        let deal = &delta * &additive + &coefficient * &powers;
        // The n dealers' coefficients add up to less than Δ²·T·2^λ (each is below the n-th
        // part of it), exactly the single dealer's bound of `SharingParams::share_bits`.
        let share_bound = &delta * &secret + &all_coefficients * &powers;
        let share_bits = bits_u32(&share_bound);
        // Room for the largest value any holder adds up (n pieces or n dealt values), its
        // sign, and one bit to spare.
        let largest = (&n * (&additive + &n * &piece)).max(&n * &deal);
        let precision = round_to_limb(bits_u32(&largest) + 2);
        Ok(Self {
            params: *params,
            piece,
            additive,
            coefficient,
            deal,
            share_bits,
            precision,
        })
    }

    /// `k` of `n`.
    pub fn params(&self) -> &SharingParams {
        &self.params
    }

    /// `R`: pieces of a re-split are uniform in `[0, R)`.
    pub fn piece_range(&self) -> &BigUint {
        &self.piece
    }

    /// `A`: every additive share satisfies `|a| < A`.
    pub fn additive_bound(&self) -> &BigUint {
        &self.additive
    }

    /// `C`: each holder's dealing coefficients are uniform in `[0, C)`.
    pub fn coefficient_bound(&self) -> &BigUint {
        &self.coefficient
    }

    /// `G`: every dealt value satisfies `|F_l(i)| < G`.
    pub fn deal_bound(&self) -> &BigUint {
        &self.deal
    }

    /// Bit length every share fits in; shares are encoded in `⌈share_bits/8⌉` bytes and
    /// the partial exponentiation runs over this many bits.
    pub fn share_bits(&self) -> u32 {
        self.share_bits
    }

    /// Byte length of an encoded share.
    pub fn share_len(&self) -> usize {
        (self.share_bits as usize).div_ceil(8)
    }

    /// Bits of the two's-complement integers the additive shares and the messages of a
    /// refresh are held and encoded in: a multiple of 64.
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// Byte length of an encoded additive share (two's complement, [`Bounds::precision`]).
    pub fn additive_len(&self) -> usize {
        (self.precision / 8) as usize
    }
}

/// `n + n² + … + n^(k−1)`.
fn power_sum(n: &BigUint, k: usize) -> BigUint {
    let mut sum = BigUint::ZERO;
    let mut power = BigUint::one();
    for _ in 1..k {
        power *= n;
        sum += &power;
    }
    sum
}

pub(crate) fn bits_u32(x: &BigUint) -> u32 {
    u32::try_from(x.bits()).unwrap_or(u32::MAX)
}

pub(crate) fn round_to_limb(bits: u32) -> u32 {
    bits.div_ceil(LIMB_BITS).saturating_mul(LIMB_BITS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(bits: u32) -> RsaPublicKey {
        let n = (BigUint::one() << bits) - 1u8;
        RsaPublicKey::new(n, BigUint::from(65537u32)).unwrap()
    }

    #[test]
    fn native_form_keeps_the_dealers_share_length() {
        for (k, n) in [(2, 3), (3, 5), (4, 7), (16, 16)] {
            let params = SharingParams::new(k, n).unwrap();
            let public = key(2048);
            let bounds = Bounds::new(&public, &params).unwrap();
            assert_eq!(
                bounds.share_bits(),
                params.share_bits(&public),
                "{k}-of-{n}"
            );
            assert_eq!(bounds.share_len(), params.share_len(&public));
            assert_eq!(bounds.precision() % 64, 0);
        }
        // RSA-2048 2-of-3, the figure docs/performance.md quotes.
        let params = SharingParams::new(2, 3).unwrap();
        assert_eq!(Bounds::new(&key(2048), &params).unwrap().share_bits(), 2183);
    }

    #[test]
    fn bounds_fit_their_precision_and_order() {
        for (k, n) in [(2, 3), (3, 5), (16, 16)] {
            let params = SharingParams::new(k, n).unwrap();
            let b = Bounds::new(&key(3072), &params).unwrap();
            assert!(b.piece_range() < b.additive_bound());
            assert!(b.additive_bound() < b.deal_bound());
            assert!(b.deal_bound().bits() + 4 < u64::from(b.precision()));
            assert!(u64::from(b.share_bits()) < u64::from(b.precision()));
            // The spread covers n^(2(k−1)).
            let spread = num_traits::pow(BigUint::from(n), 2 * (k - 1));
            assert!(spread <= BigUint::one() << SPREAD_BITS, "{k}-of-{n}");
        }
    }
}
