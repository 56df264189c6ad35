//! The Boneh–Franklin distributed biprimality test and the public coins it uses.
//!
//! For `N = p·q` with `p ≡ q ≡ 3 (mod 4)` and `g` with Jacobi symbol `(g/N) = 1`,
//! `g^(φ/4) ≡ ±1 (mod N)` when `p` and `q` are distinct primes. `φ/4` is split as
//! `(N − p_1 − q_1 + 1)/4 − Σ_{i>1} (p_i + q_i)/4`, so party 1 publishes
//! `v_1 = g^((N − p_1 − q_1 + 1)/4)`, party `i > 1` publishes `v_i = g^((p_i + q_i)/4)`, and
//! everyone accepts the round if `v_1 ≡ ±Π_{i>1} v_i`. If `N` is not a product of two
//! distinct primes and `gcd(N, p + q − 1) = 1`, a round accepts with probability at most
//! 1/2 (Boneh–Franklin; Chuang–Hsu–Lee 2024 lower this to 1/4), so 80 rounds bound the error
//! by 2^-80. Before them, every modulus that survives the sieve goes through a cheaper
//! screening round with a square base ([`base_vartime`]); only the first that passes gets
//! the 80 rounds. The gcd condition, which also rules out `N = p^a·q^b` with `a` or `b > 1`, is
//! the extra test: the parties reveal `z = r·(p + q − 1) mod N` for a random shared `r`
//! (BGW over `Z_N`, see [`super::bgw`]) and check `gcd(z, N) = 1`; `z` is uniform in the
//! units and says nothing else.
//!
//! The bases `g` (and the trial input of [`super::exponent`]) are public coins derived from
//! `N` with SHA-256: with semi-honest parties nobody steers `N`, and everyone derives the
//! same coins without another message.

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{CheckedSub, One, Zero};
use sha2::{Digest, Sha256};

/// Domain of the biprimality bases.
pub(crate) const BASE_DOMAIN: &[u8] = b"ittc keygen biprimality base";
/// Domain of the trial input of the exponent phase.
pub(crate) const TRIAL_DOMAIN: &[u8] = b"ittc keygen trial input";

/// `g^x mod n` for a party's Boneh–Franklin value, `x` (big-endian) secret, with the
/// fastest constant-time exponentiation the crate is built with: OpenSSL's (the
/// appliance's default build; the biprimality tests are most of a generation's
/// arithmetic), else GMP's `mpz_powm_sec`, else crypto-bigint's. So every build variant of
/// the appliance exponentiates its secrets in constant time, each with its own backend.
pub(crate) fn pow(g: &BigUint, x: &[u8], n: &BigUint) -> Result<BigUint, crate::Error> {
    use crate::backend::PartialExp;
    #[cfg(feature = "openssl-backend")]
    let backend = crate::backend::OpenSsl;
    #[cfg(all(feature = "gmp-backend", not(feature = "openssl-backend")))]
    let backend = crate::backend::Gmp;
    #[cfg(not(any(feature = "openssl-backend", feature = "gmp-backend")))]
    let backend = crate::backend::CryptoBigint;
    let out = backend.pow_secret(&g.to_bytes_be(), x, &n.to_bytes_be())?;
    Ok(BigUint::from_bytes_be(&out))
}

/// The Jacobi symbol `(a/n)` for odd `n`. Public values only.
pub(crate) fn jacobi_vartime(a: &BigUint, n: &BigUint) -> i8 {
    let mut a = a % n;
    let mut n = n.clone();
    let mut result = 1i8;
    while !a.is_zero() {
        let twos = a.trailing_zeros().unwrap_or(0);
        a >>= twos;
        let n_mod_8 = n.iter_u32_digits().next().unwrap_or(0) & 7;
        if twos % 2 == 1 && (n_mod_8 == 3 || n_mod_8 == 5) {
            result = -result;
        }
        let a_mod_4 = a.iter_u32_digits().next().unwrap_or(0) & 3;
        if a_mod_4 == 3 && n_mod_8 & 3 == 3 {
            result = -result;
        }
        core::mem::swap(&mut a, &mut n);
        a %= &n;
    }
    if n.is_one() { result } else { 0 }
}

/// A public coin in `[1, N)` for `(domain, N, label)`: SHA-256 in counter mode, 64 bits
/// longer than `N` and reduced, retried while `accept` refuses it.
pub(crate) fn coin_vartime(
    domain: &[u8],
    n: &BigUint,
    label: u32,
    accept: impl Fn(&BigUint) -> bool,
) -> BigUint {
    let n_be = n.to_bytes_be();
    let want = n_be.len() + 8;
    for attempt in 0u32.. {
        let mut bytes = Vec::with_capacity(want + 32);
        for block in 0u32.. {
            if bytes.len() >= want {
                break;
            }
            let mut h = Sha256::new();
            h.update(domain);
            h.update((n_be.len() as u32).to_be_bytes());
            h.update(&n_be);
            h.update(label.to_be_bytes());
            h.update(attempt.to_be_bytes());
            h.update(block.to_be_bytes());
            bytes.extend_from_slice(&h.finalize());
        }
        let g = BigUint::from_bytes_be(&bytes) % n;
        if !g.is_zero() && accept(&g) {
            return g;
        }
    }
    // The range above is exhausted only after 2^32 refusals; one is as good as any.
    BigUint::one()
}

/// The base of biprimality round `round`. Round 0 is the screening round that every
/// modulus surviving the sieve goes through: its base is the square of a coin, whose
/// Jacobi symbol is 1 without computing it (computing it for every survivor took a sixth of
/// a generation's time). A biprime passes it (`g^(φ/4) = h^(φ/2) ≡ 1`), and other moduli fail
/// it about as surely as a round with any base, but it is not counted as a Boneh–Franklin
/// round: squares are only a part of the bases of symbol 1 that the error bound is proven
/// over. The other rounds, `1..=biprimality_rounds` on the modulus that passes the screen,
/// take coins with `(g/N) = 1`, as the bound needs.
pub(crate) fn base_vartime(n: &BigUint, round: u32) -> BigUint {
    if round == 0 {
        let h = coin_vartime(BASE_DOMAIN, n, round, |_| true);
        return &h * &h % n;
    }
    coin_vartime(BASE_DOMAIN, n, round, |g| jacobi_vartime(g, n) == 1)
}

/// Party `index`'s exponent: `(N − p_1 − q_1 + 1)/4` for party 1, `(p_i + q_i)/4` for the
/// others. `None` if it is not a whole number (the shares do not have the residues mod 4
/// they should) or negative.
pub(crate) fn exponent_vartime(
    index: usize,
    n: &BigUint,
    p_i: &BigUint,
    q_i: &BigUint,
) -> Option<BigUint> {
    let sum = p_i + q_i;
    let numerator = if index == 1 {
        (n + 1u8).checked_sub(&sum)?
    } else {
        sum
    };
    let (quotient, rest) = numerator.div_rem(&BigUint::from(4u8));
    rest.is_zero().then_some(quotient)
}

/// Whether one round accepts: `values[0] ≡ ±Π values[1..]` (party order).
pub(crate) fn accepts_vartime(n: &BigUint, values: &[BigUint]) -> bool {
    let Some((first, others)) = values.split_first() else {
        return false;
    };
    let product = others.iter().fold(BigUint::one(), |acc, v| acc * v % n);
    *first == product || (first + &product) == *n
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pow_matches_num_bigint() {
        let n = BigUint::from(1_000_000_007u64) * BigUint::from(998_244_353u64);
        for (g, x) in [
            (2u64, 0x1234_5678u64),
            (12345, 1),
            (n.to_u64_digits()[0] - 2, 0xffff),
        ] {
            let g = BigUint::from(g) % &n;
            let x = BigUint::from(x);
            let want = g.modpow(&x, &n);
            assert_eq!(pow(&g, &x.to_bytes_be(), &n).unwrap(), want);
        }
    }

    #[test]
    fn jacobi_matches_euler_criterion_for_a_prime() {
        let p = BigUint::from(1_000_003u64);
        let half = (&p - 1u8) >> 1u8;
        for a in 1u32..200 {
            let a = BigUint::from(a);
            let euler = a.modpow(&half, &p);
            let expected = if euler.is_one() { 1 } else { -1 };
            assert_eq!(jacobi_vartime(&a, &p), expected);
        }
        assert_eq!(
            jacobi_vartime(&BigUint::from(21u8), &BigUint::from(21u8 * 5)),
            0
        );
    }

    #[test]
    fn test_accepts_a_biprime_and_rejects_a_triple() {
        // p = 1_000_003 ≡ 3, q = 1_000_039 ≡ 3 (mod 4); shares for three parties.
        let p = [
            BigUint::from(1_000_003u64 - 8000),
            BigUint::from(4000u32),
            BigUint::from(4000u32),
        ];
        let q = [
            BigUint::from(1_000_039u64 - 800),
            BigUint::from(400u32),
            BigUint::from(400u32),
        ];
        let n = BigUint::from(1_000_003u64 * 1_000_039);
        for round in 0..20 {
            let g = base_vartime(&n, round);
            let values: Vec<BigUint> = (0..3)
                .map(|i| g.modpow(&exponent_vartime(i + 1, &n, &p[i], &q[i]).unwrap(), &n))
                .collect();
            assert!(accepts_vartime(&n, &values));
        }
        // q = 1_000_039 replaced by 1_000_039·... no: a product of three primes ≡ 3 mod 4 is
        // ≡ 3 mod 4 and never passes; use p·q·r with p ≡ 3 and q·r ≡ 3 (mod 4).
        let qr = 1_000_039u64 * 1_000_081; // ≡ 3·1 = 3 (mod 4)
        let n = BigUint::from(1_000_003u64) * BigUint::from(qr);
        let q = [
            BigUint::from(qr - 800),
            BigUint::from(400u32),
            BigUint::from(400u32),
        ];
        let rejected = (0..20).filter(|&round| {
            let g = base_vartime(&n, round);
            let values: Vec<BigUint> = (0..3)
                .map(|i| g.modpow(&exponent_vartime(i + 1, &n, &p[i], &q[i]).unwrap(), &n))
                .collect();
            !accepts_vartime(&n, &values)
        });
        assert!(rejected.count() >= 10);
    }
}
