//! The private exponent for a small `e` (Boneh–Franklin §4), as additive shares.
//!
//! `φ = N − Σ(p_i + q_i) + 1` is additively shared: `φ_1 = N − p_1 − q_1 + 1`,
//! `φ_i = −(p_i + q_i)` for `i > 1`. The parties reveal `φ mod e` only: each splits
//! `φ_i mod e` into `n` random additive shares mod `e`, one per party; each party publishes
//! the sum of what it received. With `ζ = −φ^(−1) mod e`, `d = (1 + ζ·φ)/e` is a whole number
//! and `e·d ≡ 1 (mod φ)`. Party `i` takes `d_i = ⌊ζ·φ_i / e⌋` (party 1 adds 1), so
//! `Σ d_i = d − r` for a rounding error `r ∈ [0, n)`, which everyone finds with a trial
//! value `x^(d_i)` per party: the `r` for which `(x^(Σ d_i)·x^r)^e ≡ x (mod N)`. `r` and
//! `φ mod e` are what this phase reveals beyond `N` (see docs/security.md).

use num_bigint::{BigInt, BigRng010, BigUint, Sign};
use num_integer::Integer;
use num_traits::One;
use rand::CryptoRng;

/// `φ_i` of party `index` (signed: negative for `i > 1`).
pub(crate) fn phi_share(index: usize, n: &BigUint, p_i: &BigUint, q_i: &BigUint) -> BigInt {
    let sum = BigInt::from(p_i + q_i);
    if index == 1 {
        BigInt::from(n + 1u8) - sum
    } else {
        -sum
    }
}

/// `x mod e` in `[0, e)`.
pub(crate) fn mod_e(x: &BigInt, e: u64) -> u64 {
    let r = x.mod_floor(&BigInt::from(e));
    r.iter_u64_digits().next().unwrap_or(0)
}

/// `parties` random values modulo `e` that sum to `value` modulo `e`.
pub(crate) fn split_mod_e<R: CryptoRng + ?Sized>(
    value: u64,
    e: u64,
    parties: usize,
    rng: &mut R,
) -> Vec<u64> {
    let bound = BigUint::from(e);
    let mut shares: Vec<u64> = (1..parties)
        .map(|_| {
            rng.random_biguint_below(&bound)
                .iter_u64_digits()
                .next()
                .unwrap_or(0)
        })
        .collect();
    let used = shares
        .iter()
        .fold(0u128, |acc, &s| (acc + u128::from(s)) % u128::from(e));
    let last = (u128::from(value) + u128::from(e) - used) % u128::from(e);
    shares.push(u64::try_from(last).unwrap_or(0));
    shares
}

/// Sum modulo `e`.
pub(crate) fn sum_mod_e(values: impl IntoIterator<Item = u64>, e: u64) -> u64 {
    let sum = values
        .into_iter()
        .fold(0u128, |acc, v| (acc + u128::from(v)) % u128::from(e));
    u64::try_from(sum).unwrap_or(0)
}

/// `ζ = −φ^(−1) mod e`, or `None` when `e | φ` (the modulus cannot take this `e`).
pub(crate) fn zeta(phi_mod_e: u64, e: u64) -> Option<u64> {
    let inverse = BigUint::from(phi_mod_e).modinv(&BigUint::from(e))?;
    let inverse = inverse.iter_u64_digits().next().unwrap_or(0);
    Some((e - inverse) % e)
}

/// `d_i = ⌊ζ·φ_i / e⌋`, plus 1 for party 1.
pub(crate) fn d_share(index: usize, zeta: u64, phi_i: &BigInt, e: u64) -> BigInt {
    let d = (BigInt::from(zeta) * phi_i).div_floor(&BigInt::from(e));
    if index == 1 { d + 1 } else { d }
}

/// The trial input `x` for modulus `n`: a public coin coprime to `n`.
pub(crate) fn trial_input_vartime(n: &BigUint) -> BigUint {
    super::biprimality::coin_vartime(super::biprimality::TRIAL_DOMAIN, n, 0, |x| {
        x.gcd(n).is_one()
    })
}

/// `x^(d_i) mod n` for a signed `d_i`; `None` if `x` is not invertible.
pub(crate) fn trial_value_vartime(x: &BigUint, d_i: &BigInt, n: &BigUint) -> Option<BigUint> {
    let y = x.modpow(d_i.magnitude(), n);
    if d_i.sign() == Sign::Minus {
        y.modinv(n)
    } else {
        Some(y)
    }
}

/// The rounding error: the `r ∈ [0, parties)` with `(y·x^r)^e ≡ x (mod n)`, where `y` is the
/// product of all trial values.
pub(crate) fn find_rounding_vartime(
    x: &BigUint,
    y: &BigUint,
    n: &BigUint,
    e: u64,
    parties: usize,
) -> Option<u64> {
    let e = BigUint::from(e);
    let mut candidate = y % n;
    for r in 0..parties as u64 {
        if candidate.modpow(&e, n) == *x {
            return Some(r);
        }
        candidate = candidate * x % n;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn shares_of_d_sum_to_d_minus_a_small_rounding_error() {
        let mut rng = StdRng::seed_from_u64(3);
        let (p, q) = (BigUint::from(1_000_003u64), BigUint::from(1_000_039u64));
        let n = &p * &q;
        let p_i = [
            BigUint::from(1_000_003u64 - 8000),
            BigUint::from(4000u32),
            BigUint::from(4000u32),
        ];
        let q_i = [
            BigUint::from(1_000_039u64 - 800),
            BigUint::from(400u32),
            BigUint::from(400u32),
        ];
        let e = 65537u64;
        let phis: Vec<BigInt> = (0..3)
            .map(|i| phi_share(i + 1, &n, &p_i[i], &q_i[i]))
            .collect();
        let phi = (&p - 1u8) * (&q - 1u8);
        assert_eq!(phis.iter().sum::<BigInt>(), BigInt::from(phi.clone()));
        let received: Vec<Vec<u64>> = phis
            .iter()
            .map(|f| split_mod_e(mod_e(f, e), e, 3, &mut rng))
            .collect();
        let published: Vec<u64> = (0..3)
            .map(|j| sum_mod_e(received.iter().map(|s| s[j]), e))
            .collect();
        let phi_mod_e = sum_mod_e(published, e);
        assert_eq!(BigUint::from(phi_mod_e), &phi % e);
        let z = zeta(phi_mod_e, e).unwrap();
        let d_sum: BigInt = (0..3).map(|i| d_share(i + 1, z, &phis[i], e)).sum();
        let d = BigUint::from(e).modinv(&phi).unwrap();
        let x = trial_input_vartime(&n);
        let y = (0..3).fold(BigUint::one(), |acc, i| {
            acc * trial_value_vartime(&x, &d_share(i + 1, z, &phis[i], e), &n).unwrap() % &n
        });
        let r = find_rounding_vartime(&x, &y, &n, e, 3).unwrap();
        assert_eq!(d_sum + BigInt::from(r), BigInt::from(d));
        assert!(zeta(0, e).is_none());
    }
}
