//! Shamir sharing and BGW multiplication over `Z_m`, for the modulus (`m = P`) and the gcd
//! test (`m = N`).
//!
//! `m` need not be prime: Shamir sharing and Lagrange interpolation at the points `1..=n`
//! only need every difference of two points (a number below 16) to be invertible modulo `m`.
//! Then any `t` shares of a degree-`t` polynomial with uniform coefficients are uniform and
//! independent of the secret, and `2t + 1 ≤ n` points determine a product polynomial. Both
//! `P` (chosen coprime to `n!`) and a modulus `N` that passed trial division qualify.
//!
//! All arithmetic here is variable time (num-bigint); see the [module docs](super).

use num_bigint::{BigRng010, BigUint};
use num_integer::Integer;
use num_traits::{One, Zero};
use rand::CryptoRng;

use super::KeygenError;

/// `Z_m` shared among parties `1..=n`.
///
/// With all `n` points, the Lagrange coefficient at 0 of point `j` is the small integer
/// `Π_{i≠j} i/(i − j) = (−1)^(j−1)·C(n, j)`, so interpolation costs small multiples and two
/// reductions, not `n` multiplications modulo `m`.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    m: BigUint,
    len: usize,
    /// `C(n, j)` for `j = 1..=n`; the sign alternates, positive for odd `j`.
    binomials: Vec<u64>,
}

impl Ring {
    /// Fails if some difference of points in `1..=n` is not invertible modulo `m`, i.e. if
    /// `m` has a prime factor up to `n` (points and their differences must be units).
    pub(crate) fn new(m: BigUint, n: usize) -> Result<Self, KeygenError> {
        let len = usize::try_from(m.bits().div_ceil(8)).map_err(|_| KeygenError::Params("m"))?;
        let factorial: BigUint = (1..=n as u64).map(BigUint::from).product();
        if m.is_zero() || !m.gcd(&factorial).is_one() {
            return Err(KeygenError::Inconsistent(
                "a share modulus with a small factor",
            ));
        }
        let mut binomials = Vec::with_capacity(n);
        let mut c: u64 = 1;
        for j in 1..=n as u64 {
            // C(n, j) = C(n, j − 1)·(n − j + 1)/j, exact; at most C(16, 8).
            c = c * (n as u64 - j + 1) / j;
            binomials.push(c);
        }
        Ok(Self { m, len, binomials })
    }

    /// The modulus.
    pub(crate) fn modulus(&self) -> &BigUint {
        &self.m
    }

    /// Byte length of an encoded element.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A uniform element.
    pub(crate) fn random<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> BigUint {
        rng.random_biguint_below(&self.m)
    }

    /// A random polynomial of degree `degree` with constant term `secret`, evaluated at
    /// `1..=n` (position `j − 1` holds the value at `j`).
    pub(crate) fn share<R: CryptoRng + ?Sized>(
        &self,
        secret: &BigUint,
        degree: usize,
        rng: &mut R,
    ) -> Vec<BigUint> {
        let coefficients: Vec<BigUint> = (0..degree).map(|_| self.random(rng)).collect();
        (1..=self.binomials.len())
            .map(|x| {
                // Horner without reduction, one reduction at the end.
                let mut acc = BigUint::zero();
                for a in coefficients.iter().rev() {
                    acc += a;
                    acc *= x as u64;
                }
                (acc + secret) % &self.m
            })
            .collect()
    }

    /// `Σ_j λ_j·y_j mod m` over all `n` points: the constant term of the polynomial of
    /// degree below `n` through `(j, values[j − 1])`.
    pub(crate) fn interpolate(&self, values: &[BigUint]) -> BigUint {
        let mut plus = BigUint::zero();
        let mut minus = BigUint::zero();
        for (j, (c, y)) in self.binomials.iter().zip(values).enumerate() {
            if j % 2 == 0 {
                plus += y * *c;
            } else {
                minus += y * *c;
            }
        }
        let minus = minus % &self.m;
        ((plus % &self.m) + &self.m - minus) % &self.m
    }

    /// `λ_j·x mod m`, with `λ_j = (−1)^(j−1)·C(n, j)` the Lagrange coefficient at 0 of
    /// point `j` over all `n` points: turns a point of a polynomial of degree below `n` into
    /// an additive share of its constant term.
    pub(crate) fn lagrange_times(&self, j: usize, x: &BigUint) -> BigUint {
        let c = j
            .checked_sub(1)
            .and_then(|i| self.binomials.get(i))
            .copied()
            .unwrap_or(0);
        let y = (x * c) % &self.m;
        if j % 2 == 1 || y.is_zero() {
            y
        } else {
            &self.m - y
        }
    }

    /// Appends the fixed-length big-endian encoding of `x < m`.
    pub(crate) fn encode_into(&self, x: &BigUint, out: &mut Vec<u8>) {
        encode_fixed(x, self.len, out);
    }

    /// Reads `count` elements, each of the fixed length and below `m`.
    pub(crate) fn decode_all(
        &self,
        bytes: &[u8],
        count: usize,
        from: usize,
    ) -> Result<Vec<BigUint>, KeygenError> {
        decode_fixed(bytes, count, self.len, &self.m, from)
    }
}

/// Appends `x` big-endian, left-padded with zeros to `len` bytes (`x` must fit).
pub(crate) fn encode_fixed(x: &BigUint, len: usize, out: &mut Vec<u8>) {
    let be = x.to_bytes_be();
    let be = if x.is_zero() { &[][..] } else { &be[..] };
    out.extend(core::iter::repeat_n(0u8, len.saturating_sub(be.len())));
    out.extend_from_slice(be);
}

/// Reads `count` big-endian integers of `len` bytes each, each below `bound`.
pub(crate) fn decode_fixed(
    bytes: &[u8],
    count: usize,
    len: usize,
    bound: &BigUint,
    from: usize,
) -> Result<Vec<BigUint>, KeygenError> {
    if len == 0 || Some(bytes.len()) != count.checked_mul(len) {
        return Err(KeygenError::BadMessage {
            from,
            reason: "wrong number of bytes for the values it should hold",
        });
    }
    bytes
        .chunks_exact(len)
        .map(|chunk| {
            let x = BigUint::from_bytes_be(chunk);
            if &x < bound {
                Ok(x)
            } else {
                Err(KeygenError::BadMessage {
                    from,
                    reason: "value out of range",
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn product_of_sharings_interpolates_to_product() {
        let mut rng = StdRng::seed_from_u64(1);
        let m = BigUint::from(1_000_000_007u64);
        for n in 3..=7 {
            let t = (n - 1) / 2;
            let ring = Ring::new(m.clone(), n).unwrap();
            let a = ring.share(&BigUint::from(1234u32), t, &mut rng);
            let b = ring.share(&BigUint::from(5678u32), t, &mut rng);
            let z = ring.share(&BigUint::zero(), 2 * t, &mut rng);
            assert_eq!(ring.interpolate(&a), BigUint::from(1234u32));
            let prod: Vec<BigUint> = (0..n).map(|j| (&a[j] * &b[j] + &z[j]) % &m).collect();
            assert_eq!(ring.interpolate(&prod), BigUint::from(1234u32 * 5678));
        }
    }

    #[test]
    fn lagrange_shares_add_up_to_the_constant_term() {
        let mut rng = StdRng::seed_from_u64(3);
        let m = BigUint::from(17u64 * 19 * 23 * 29 * 31 * 37);
        for n in 3..=8 {
            let ring = Ring::new(m.clone(), n).unwrap();
            let points = ring.share(&BigUint::from(4321u32), n - 1, &mut rng);
            let sum: BigUint = (1..=n)
                .map(|j| ring.lagrange_times(j, &points[j - 1]))
                .sum();
            assert_eq!(sum % &m, BigUint::from(4321u32));
        }
    }

    #[test]
    fn modulus_with_small_factor_is_refused() {
        assert!(Ring::new(BigUint::from(3u32 * 1_000_003), 4).is_err());
    }

    #[test]
    fn decoding_checks_length_and_range() {
        let bound = BigUint::from(1000u32);
        let mut out = Vec::new();
        encode_fixed(&BigUint::from(999u32), 2, &mut out);
        encode_fixed(&BigUint::zero(), 2, &mut out);
        assert_eq!(decode_fixed(&out, 2, 2, &bound, 1).unwrap().len(), 2);
        assert!(decode_fixed(&out, 3, 2, &bound, 1).is_err());
        assert!(decode_fixed(&[0xff, 0xff], 1, 2, &bound, 1).is_err());
    }
}
