//! Candidate shares `p_i`, `q_i` and the public sieve on `N`.
//!
//! Without the distributed sieve (`sieving.rs`, which replaces [`draw`] by its own lift of
//! an additive share of `p mod M` and keeps the same bound and residues mod 4), party 1 draws `p_1, q_1 ≡ 3 (mod 4)`, every other party `p_i, q_i ≡ 0 (mod 4)`, all
//! uniform below a bound `X ≈ 1.69·2^(bits/2)/n`, so that `p = Σ p_i ≡ 3 (mod 4)` and
//! `N = p·q` lands on the requested bit length for most candidates. No party's share is
//! larger than the others' (a larger share would tell its owner the top bits of `p`); the
//! price is that about a quarter of the moduli have the wrong length and are dropped after
//! `N` is revealed, which costs one cheap BGW evaluation each.
//!
//! Sieving: the sum `p` must be free of small factors, and no party can check that alone.
//! This module checks it publicly on `N`: `l | N` exactly when `l | p` or `l | q`, so trial
//! division of the revealed `N` by every odd prime below the sieve bound drops the same
//! candidates a sieve on `p` and `q` would, before anyone spends an exponentiation on them.
//! What it does not save is the BGW evaluation of the rejected candidates; the distributed
//! sieve does, for the primes in its `M`, and leaves this one the primes up to `n` and those
//! between the two bounds.

use num_bigint::{BigRng010, BigUint};
use rand::CryptoRng;

use super::KeygenError;

/// The exclusive bound `X` on every `p_i`, `q_i`: `⌊2^(bits/2)·27 / (16·n)⌋`, so that
/// `E[p] ≈ 2^(bits/2 − 1/4)` and `E[p·q]` sits in the middle of `[2^(bits−1), 2^bits)`.
pub(crate) fn share_bound(bits: usize, parties: usize) -> BigUint {
    (BigUint::from(27u32) << (bits / 2)) / BigUint::from(16 * parties)
}

/// Draws one candidate share below `bound` with the residue mod 4 of party `index`.
pub(crate) fn draw<R: CryptoRng + ?Sized>(index: usize, bound: &BigUint, rng: &mut R) -> BigUint {
    let quarter = bound >> 2u8;
    let u = rng.random_biguint_below(&quarter);
    let base = u << 2u8;
    if index == 1 { base + 3u8 } else { base }
}

/// Trial division of public moduli by the odd primes below a bound.
///
/// Primes are grouped so that each group's product fits in 32 bits; the remainder of `N`
/// by a group's product costs one 64-bit division per 32-bit word of `N`, and its primes
/// are then checked on that small remainder. Groups go from the smallest primes up and the
/// search stops at the first factor, so a typical candidate costs a few groups.
#[derive(Clone, Debug)]
pub(crate) struct Sieve {
    groups: Vec<(u64, Vec<u32>)>,
}

impl Sieve {
    /// All odd primes below `bound` (at most 2^24).
    #[cfg(test)]
    pub(crate) fn new(bound: u32) -> Result<Self, KeygenError> {
        Self::new_except(bound, &[])
    }

    /// All odd primes below `bound` (at most 2^24) except those in `skip` (ascending):
    /// the public sieve leaves out the primes the distributed sieve has removed already.
    pub(crate) fn new_except(bound: u32, skip: &[u32]) -> Result<Self, KeygenError> {
        if !(3..=1 << 24).contains(&bound) {
            return Err(KeygenError::Params("sieve bound must be in 3..=2^24"));
        }
        let primes: Vec<u32> = super::sieving::primes(bound - 1, 0)
            .into_iter()
            .filter(|l| skip.binary_search(l).is_err())
            .collect();
        Ok(Self::from_primes(&primes))
    }

    /// Trial division by exactly `primes` (odd, each below 2^32).
    pub(crate) fn from_primes(primes: &[u32]) -> Self {
        let mut groups: Vec<(u64, Vec<u32>)> = Vec::new();
        let mut current: (u64, Vec<u32>) = (1, Vec::new());
        for &l in primes {
            let l64 = u64::from(l);
            if current.0 * l64 > u64::from(u32::MAX) {
                groups.push(core::mem::replace(&mut current, (1, Vec::new())));
            }
            current.0 *= l64;
            current.1.push(l);
        }
        if !current.1.is_empty() {
            groups.push(current);
        }
        Self { groups }
    }

    /// Whether `n` is even or has an odd prime factor below the bound. Public values only.
    pub(crate) fn has_small_factor_vartime(&self, n: &BigUint) -> bool {
        !n.bit(0) || self.has_factor_vartime(n)
    }

    /// Whether one of the primes divides `n` (0 included). Variable time: on a secret `n`,
    /// the time says which group of primes first divides it.
    pub(crate) fn has_factor_vartime(&self, n: &BigUint) -> bool {
        let words: Vec<u32> = n.iter_u32_digits().collect();
        for (product, primes) in &self.groups {
            let mut r: u64 = 0;
            for &w in words.iter().rev() {
                r = ((r << 32) | u64::from(w)) % product;
            }
            if primes.iter().any(|&l| r.is_multiple_of(u64::from(l))) {
                // `n` itself a small prime never happens for moduli of 512 bits and more.
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn sieve_finds_small_factors_only() {
        let sieve = Sieve::new(1000).unwrap();
        let p = BigUint::from(1_000_000_007u64);
        let q = BigUint::from(998_244_353u64);
        assert!(!sieve.has_small_factor_vartime(&(&p * &q)));
        assert!(sieve.has_small_factor_vartime(&(&p * 997u32)));
        assert!(sieve.has_small_factor_vartime(&(&p * 3u32)));
        assert!(!sieve.has_small_factor_vartime(&(&p * 1009u32)));
        assert!(sieve.has_small_factor_vartime(&(&p * 2u32)));
    }

    #[test]
    fn draws_have_the_party_residue_and_sum_to_3_mod_4() {
        let mut rng = StdRng::seed_from_u64(2);
        let bound = share_bound(512, 3);
        let sum: BigUint = (1..=3).map(|i| draw(i, &bound, &mut rng)).sum();
        assert_eq!(&sum % 4u8, BigUint::from(3u8));
        assert!(draw(2, &bound, &mut rng) < bound);
    }
}
