//! Candidate shares `p_i`, `q_i` and the public sieve on `N`.
//!
//! Without the distributed sieve (`sieving.rs`, which replaces [`draw`] by its own lift of
//! an additive share of `p mod M` and keeps the same bound and residues mod 4), party 1
//! draws `p_1, q_1 ≡ 3 (mod 4)`, every other party `p_i, q_i ≡ 0 (mod 4)`, all uniform below
//! a bound `X ≈ 2^(bits/2 − 2)/n`, and party 1 adds the public [`offset`]
//! `O ≈ 3·2^(bits/2 − 2)`, so that `p = Σ p_i ≡ 3 (mod 4)` lies in `[O, 2^(bits/2))` and
//! every `N = p·q` has the requested bit length. The offset is public, so it tells party 1
//! nothing the others do not know: everyone knows the top two bits of `p` and `q`, as for
//! any RSA key generated to an exact length. Without it (shares uniform below
//! `1.69·2^(bits/2)/n`) half the moduli had the wrong length and were dropped.
//!
//! Sieving: the sum `p` must be free of small factors, and no party can check that alone.
//! This module checks it publicly on `N`: `l | N` exactly when `l | p` or `l | q`, so trial
//! division of the revealed `N` by every odd prime below the sieve bound drops the same
//! candidates a sieve on `p` and `q` would, before anyone spends an exponentiation on them.
//! What it does not save is the BGW evaluation of the rejected candidates; the distributed
//! sieve does, for the primes in its `M`, and leaves this one the primes up to `n` and those
//! between the two bounds.

use num_bigint::{BigRng010, BigUint};
use num_integer::Integer;
use rand::CryptoRng;

use super::KeygenError;

/// The public offset `O` that party 1 adds to its candidate shares `p_1` and `q_1`: the
/// least multiple of `step` (`4M` with the distributed sieve, else 4) at or above
/// `3·2^(bits/2 − 2)`. With every share below [`share_bound`], `p` and `q` lie in
/// `[O, 2^(bits/2))`: their top two bits are 1, as in OpenSSL's and FIPS 186's key
/// generation, and `N = p·q` has exactly `bits` bits. `O ≡ 0 (mod 4M)` leaves `p mod 4M`
/// to the shares.
pub(crate) fn offset(bits: usize, step: &BigUint) -> BigUint {
    let low = BigUint::from(3u8) << (bits / 2 - 2);
    Integer::div_ceil(&low, step) * step
}

/// The exclusive bound `X` on every share before the offset: `⌊(2^(bits/2) − O)/n⌋`, so
/// that `O + Σ p_i < 2^(bits/2)`.
pub(crate) fn share_bound(bits: usize, parties: usize, offset: &BigUint) -> BigUint {
    ((BigUint::from(1u8) << (bits / 2)) - offset) / BigUint::from(parties)
}

/// Draws one candidate share below `bound` with the residue mod 4 of party `index`.
pub(crate) fn draw<R: CryptoRng + ?Sized>(index: usize, bound: &BigUint, rng: &mut R) -> BigUint {
    let quarter = bound >> 2u8;
    let u = rng.random_biguint_below(&quarter);
    let base = u << 2u8;
    if index == 1 { base + 3u8 } else { base }
}

/// Trial division by the odd primes below a bound, of public moduli (and, for the
/// distributed sieve's units, of secrets: variable time either way).
///
/// Primes are grouped so that each group's product `m` is below `2^64/(2^32·w)` for
/// numbers of `w` 32-bit words (2^26 for 2048 bits). For every group the sieve keeps
/// `2^(32·j) mod m` for each word `j`, so a number congruent to `x mod m` is one sum of
/// word-by-table products that cannot overflow 64 bits: independent multiplications the
/// compiler turns into vector instructions, and no division. Each of the group's primes is
/// then checked on that sum with one multiplication ([`Divisor`]). An order of magnitude
/// faster per prime than dividing word by word, which moves the best bound up (see
/// [`super::default_sieve_bound`]). Groups go from the smallest primes up and the search
/// stops at the first factor, so a typical candidate costs a few groups.
#[derive(Clone, Debug)]
pub(crate) struct Sieve {
    groups: Vec<Group>,
    /// Words per table: numbers of up to `32·words` bits use the tables, longer ones divide.
    words: usize,
    /// Group `g`'s table at `g·words ..`: `2^(32·j) mod m_g`.
    powers: Vec<u32>,
}

/// Primes whose product fits the sieve's limit.
#[derive(Clone, Debug)]
struct Group {
    product: u64,
    primes: Vec<Divisor>,
}

/// An odd prime `l` as a divisibility test (Granlund–Montgomery): `x ≡ 0 (mod l)` exactly
/// when `x·l⁻¹ mod 2^64 ≤ ⌊(2^64 − 1)/l⌋`, one multiplication instead of a division.
#[derive(Clone, Copy, Debug)]
struct Divisor {
    inverse: u64,
    limit: u64,
}

impl Divisor {
    fn new(l: u32) -> Self {
        let l = u64::from(l);
        // Newton's iteration for the inverse of an odd number mod 2^64: each step doubles
        // the correct low bits, from 3 (l·l ≡ 1 mod 8).
        let mut inverse = l;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(l.wrapping_mul(inverse)));
        }
        Self {
            inverse,
            limit: u64::MAX / l,
        }
    }

    fn divides(self, x: u64) -> bool {
        x.wrapping_mul(self.inverse) <= self.limit
    }
}

/// Most words a table covers (8192 bits): with primes below 2^24, every group's sums then
/// stay below 2^64.
const MAX_WORDS: usize = 256;

impl Sieve {
    /// All odd primes below `bound` (at most 2^24), for numbers of up to `bits` bits.
    #[cfg(test)]
    pub(crate) fn new(bound: u32, bits: usize) -> Result<Self, KeygenError> {
        Self::new_except(bound, &[], bits)
    }

    /// All odd primes below `bound` (at most 2^24) except those in `skip` (ascending),
    /// for numbers of up to `bits` bits: the public sieve leaves out the primes the
    /// distributed sieve has removed already.
    pub(crate) fn new_except(bound: u32, skip: &[u32], bits: usize) -> Result<Self, KeygenError> {
        if !(3..=1 << 24).contains(&bound) {
            return Err(KeygenError::Params("sieve bound must be in 3..=2^24"));
        }
        let primes: Vec<u32> = super::sieving::primes(bound - 1, 0)
            .into_iter()
            .filter(|l| skip.binary_search(l).is_err())
            .collect();
        Ok(Self::from_primes(&primes, bits))
    }

    /// Trial division by exactly `primes` (odd, each below 2^24), with tables for numbers
    /// of up to `bits` bits (at most 8192).
    pub(crate) fn from_primes(primes: &[u32], bits: usize) -> Self {
        let words = bits.div_ceil(32).clamp(1, MAX_WORDS);
        // Each product of a word and a table entry is below 2^32·m, and `words` of them
        // must add up to less than 2^64.
        let limit = 1u64 << (32 - words.next_power_of_two().trailing_zeros());
        let mut groups: Vec<Group> = Vec::new();
        let mut members: Vec<Divisor> = Vec::new();
        let mut product: u64 = 1;
        for &l in primes {
            let l64 = u64::from(l);
            if product * l64 > limit && !members.is_empty() {
                groups.push(Group {
                    product,
                    primes: core::mem::take(&mut members),
                });
                product = 1;
            }
            product *= l64;
            members.push(Divisor::new(l));
        }
        if !members.is_empty() {
            groups.push(Group {
                product,
                primes: members,
            });
        }
        let mut powers = Vec::with_capacity(groups.len() * words);
        for group in &groups {
            let m = group.product;
            let word = (1u64 << 32) % m;
            let mut power = 1 % m;
            for _ in 0..words {
                powers.push(u32::try_from(power).unwrap_or(0));
                power = power * word % m;
            }
        }
        Self {
            groups,
            words,
            powers,
        }
    }

    /// Whether `n` is even or has an odd prime factor below the bound. Public values only.
    pub(crate) fn has_small_factor_vartime(&self, n: &BigUint) -> bool {
        !n.bit(0) || self.has_factor_vartime(n)
    }

    /// Whether one of the primes divides `n` (0 included). Variable time: on a secret `n`,
    /// the time says which group of primes first divides it.
    pub(crate) fn has_factor_vartime(&self, n: &BigUint) -> bool {
        let mut words: Vec<u32> = n.iter_u32_digits().collect();
        if words.len() > self.words {
            return self.has_factor_dividing_vartime(&words);
        }
        words.resize(self.words, 0);
        for (group, table) in self.groups.iter().zip(self.powers.chunks_exact(self.words)) {
            // `sum ≡ n (mod m)`: no need to reduce it before the divisibility tests.
            let sum: u64 = words
                .iter()
                .zip(table)
                .map(|(&w, &t)| u64::from(w) * u64::from(t))
                .sum();
            // `n` itself a small prime never happens for moduli of 512 bits and more.
            if group.primes.iter().any(|l| l.divides(sum)) {
                return true;
            }
        }
        false
    }

    /// [`Self::has_factor_vartime`] for numbers longer than the tables: one 64-bit
    /// division per word and group.
    fn has_factor_dividing_vartime(&self, words: &[u32]) -> bool {
        self.groups.iter().any(|group| {
            let m = group.product;
            let r = words
                .iter()
                .rev()
                .fold(0u64, |r, &w| ((r << 32) | u64::from(w)) % m);
            group.primes.iter().any(|l| l.divides(r))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use num_traits::Zero;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn sieve_finds_small_factors_only() {
        // Tables for 64 bits, so the 90-bit products also take the dividing path.
        for bits in [64, 128] {
            let sieve = Sieve::new(1000, bits).unwrap();
            let p = BigUint::from(1_000_000_007u64);
            let q = BigUint::from(998_244_353u64);
            assert!(!sieve.has_small_factor_vartime(&(&p * &q)));
            assert!(sieve.has_small_factor_vartime(&(&p * 997u32)));
            assert!(sieve.has_small_factor_vartime(&(&p * 3u32)));
            assert!(!sieve.has_small_factor_vartime(&(&p * 1009u32)));
            assert!(sieve.has_small_factor_vartime(&(&p * 2u32)));
        }
    }

    #[test]
    fn tables_and_division_agree_with_the_remainders() {
        let mut rng = StdRng::seed_from_u64(3);
        let primes = super::super::sieving::primes(5000, 0);
        let sieve = Sieve::from_primes(&primes, 1024);
        let (mut with, mut without) = (0, 0);
        for _ in 0..400 {
            let mut n = rng.random_biguint(1000);
            let pick = rng.next_u64() as usize;
            if pick.is_multiple_of(2) {
                n *= primes[pick / 2 % primes.len()];
            }
            let want = primes.iter().any(|&l| (&n % l).is_zero());
            assert_eq!(sieve.has_factor_vartime(&n), want, "{n:x}");
            let words: Vec<u32> = n.iter_u32_digits().collect();
            assert_eq!(sieve.has_factor_dividing_vartime(&words), want, "{n:x}");
            if want { with += 1 } else { without += 1 }
        }
        // About 93% of random numbers have a factor below 5000.
        assert!(with > 300 && without > 10, "{with} {without}");
    }

    #[test]
    fn offset_shares_put_every_modulus_at_its_length() {
        let mut rng = StdRng::seed_from_u64(4);
        for (bits, parties) in [(512, 3), (2048, 3), (2048, 7), (4096, 5)] {
            let step = BigUint::from(4u8) * 3u8 * 5u8 * 7u8;
            let o = offset(bits, &step);
            let bound = share_bound(bits, parties, &o);
            assert!((&o % &step).is_zero());
            assert!(o >= BigUint::from(3u8) << (bits / 2 - 2));
            // The largest and the smallest sums of shares.
            let top = BigUint::from(1u8) << (bits / 2);
            let high = &o + (&bound - 1u8) * parties;
            assert!(high < top);
            assert_eq!((&high * &high).bits() as usize, bits);
            assert_eq!((&o * &o).bits() as usize, bits);
            let p: BigUint = &o
                + (1..=parties)
                    .map(|i| draw(i, &bound, &mut rng))
                    .sum::<BigUint>();
            assert_eq!(&p % 4u8, BigUint::from(3u8));
            assert!(p < top);
        }
    }
}
