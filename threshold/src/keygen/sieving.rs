//! The distributed sieve (docs/security.md, "Distributed sieving"): the modulus `M`, units
//! of `Z_M`, the multiplication tree's shape, and the step from an additive share of
//! `p mod M` to a candidate share `p_i`.
//!
//! `M` is the product of the odd primes `l` with `n < l ≤ B`. Every party draws a unit
//! `a_i` of `Z_M`; BGW over `Z_M` (see `bgw.rs`: `M` is coprime to `n!`) multiplies them
//! pairwise, level by level, with one degree-reduction round per level except the last,
//! whose product (re-randomized by a degree-`2t` sharing of zero) is turned into additive
//! shares `b_j` with the integer Lagrange coefficients. `Σ b_j ≡ Π a_i (mod M)`, a unit, so
//! `p = Σ p_j` with `p_j ≡ b_j (mod M)` has no prime factor in `M`. The message handling is
//! in `party.rs`.
//!
//! Variable time (num-bigint), like the rest of the module; see the [module docs](super).

use num_bigint::{BigRng010, BigUint};
use num_traits::One;
use rand::CryptoRng;

use super::KeygenParams;
use super::SIEVE_MODULUS_MARGIN_BITS;
use super::candidates::Sieve;

/// The odd primes `l` with `parties < l ≤ bound`, ascending.
pub(crate) fn primes(bound: u32, parties: usize) -> Vec<u32> {
    let size = bound as usize + 1;
    let mut composite = vec![false; size];
    let mut out = Vec::new();
    for l in (3..size).step_by(2) {
        if composite.get(l).copied().unwrap_or(true) {
            continue;
        }
        for multiple in (l * l..size).step_by(2 * l) {
            if let Some(c) = composite.get_mut(multiple) {
                *c = true;
            }
        }
        if l > parties {
            out.push(l as u32);
        }
    }
    out
}

/// `M`: the product of [`primes`] (1 when there are none).
pub(crate) fn modulus(bound: u32, parties: usize) -> BigUint {
    primes(bound, parties)
        .into_iter()
        .map(BigUint::from)
        .product()
}

/// Bits of `M` (0 when `M = 1`).
pub(crate) fn modulus_bits(bound: u32, parties: usize) -> usize {
    let m = modulus(bound, parties);
    if m.is_one() {
        0
    } else {
        usize::try_from(m.bits()).unwrap_or(usize::MAX)
    }
}

/// The most bits `M` may have for a modulus of `bits` bits: `bits/2 − 96`.
pub(crate) fn modulus_budget(bits: usize) -> usize {
    (bits / 2).saturating_sub(SIEVE_MODULUS_MARGIN_BITS)
}

/// The largest prime `B` such that the product of all odd primes up to `B` has at most
/// `budget` bits (0 if not even 3 fits).
pub(crate) fn largest_bound(budget: usize) -> u32 {
    let mut product = BigUint::one();
    let mut last = 0;
    for l in primes(super::MAX_DISTRIBUTED_SIEVE_BOUND, 0) {
        product *= l;
        if usize::try_from(product.bits()).unwrap_or(usize::MAX) > budget {
            break;
        }
        last = l;
    }
    last
}

/// The distributed sieve's modulus, or `None` when the parameters turn it off (no prime
/// in `(n, B]`).
pub(crate) fn modulus_for(params: &KeygenParams) -> Option<BigUint> {
    let m = modulus(params.distributed_sieve_bound, params.parties);
    (!m.is_one()).then_some(m)
}

/// A uniform unit of `Z_m`: uniform draws until one has none of the primes of `m`
/// (`primes`, the trial division by them) as a factor, about `1/Π(1 − 1/l)` draws.
/// Trial division by word-sized groups of primes, where most rejected draws fail on the
/// first group, costs much less than a gcd with an `m` of hundreds of bits. Secret; variable
/// time.
pub(crate) fn random_unit_vartime<R: CryptoRng + ?Sized>(
    m: &BigUint,
    primes: &Sieve,
    rng: &mut R,
) -> BigUint {
    loop {
        let x = rng.random_biguint_below(m);
        if !primes.has_factor_vartime(&x) {
            return x;
        }
    }
}

/// The number of degree-reduction rounds for `n` sharings (what `party.rs` runs, level
/// by level): pairs are multiplied level by
/// level until two remain, i.e. `⌈log2 n⌉ − 1`.
#[cfg(test)]
pub(crate) fn reduce_rounds(n: usize) -> u32 {
    let mut left = n;
    let mut rounds = 0;
    while left > 2 {
        left = left.div_ceil(2);
        rounds += 1;
    }
    rounds
}

/// Party `index`'s candidate share from its additive share `b` of `p mod m`: the number
/// `x < 4m` with `x ≡ b (mod m)` and `x ≡ 3 (mod 4)` for party 1, `≡ 0` for the others,
/// plus `4m·u` for `u` uniform below `⌊bound/4m⌋`. Below `bound` when `4m ≤ bound`.
pub(crate) fn lift_vartime<R: CryptoRng + ?Sized>(
    index: usize,
    b: &BigUint,
    m: &BigUint,
    bound: &BigUint,
    rng: &mut R,
) -> BigUint {
    let target: u32 = if index == 1 { 3 } else { 0 };
    let low = |x: &BigUint| x.iter_u32_digits().next().unwrap_or(0) & 3;
    // m is odd, so m ≡ m⁻¹ (mod 4): k = (target − b)·m mod 4 makes b + k·m ≡ target.
    let k = ((target + 4 - low(b)) * low(m)) & 3;
    let x = b + m * k;
    let step = m << 2u8;
    let u = rng.random_biguint_below(&(bound / &step));
    x + step * u
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use num_integer::Integer;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn primes_exclude_those_up_to_the_party_count() {
        assert_eq!(primes(30, 3), [5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(primes(30, 5), [7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(primes(13, 0), [3, 5, 7, 11, 13]);
        assert!(modulus(4, 3).is_one());
        assert_eq!(modulus(11, 4), BigUint::from(5u32 * 7 * 11));
    }

    #[test]
    fn default_bound_fits_its_budget() {
        for bits in [512, 1024, 2048, 3072, 4096, 8192] {
            let b = largest_bound(modulus_budget(bits));
            assert!(modulus_bits(b, 0) <= modulus_budget(bits), "{bits}");
            let next = primes(MAXB, 0).into_iter().find(|&l| l > b).unwrap();
            assert!(modulus_bits(next, 0) > modulus_budget(bits), "{bits}");
        }
    }
    const MAXB: u32 = 1 << 14;

    #[test]
    fn reduce_rounds_are_log2_n_minus_one() {
        let rounds: Vec<u32> = (3..=16).map(reduce_rounds).collect();
        assert_eq!(rounds, [1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn lift_keeps_the_residues_and_the_bound() {
        let mut rng = StdRng::seed_from_u64(5);
        let m = modulus(50, 3);
        let bound = BigUint::one() << 300u32;
        for index in 1..=3 {
            for _ in 0..50 {
                let b = rng.random_biguint_below(&m);
                let p = lift_vartime(index, &b, &m, &bound, &mut rng);
                assert_eq!(&p % &m, b);
                let want = if index == 1 { 3u8 } else { 0u8 };
                assert_eq!(&p % 4u8, BigUint::from(want));
                assert!(p < bound);
            }
        }
        let units = Sieve::from_primes(&primes(50, 3), 128);
        for _ in 0..200 {
            let u = random_unit_vartime(&m, &units, &mut rng);
            assert!(u.gcd(&m).is_one() && u < m);
        }
    }
}
