//! Combining partial results into `c^d mod N`, and finding the wrong ones.
//!
//! For a set `S` of k indices, `λ_i = Δ·Π_{j∈S, j≠i} j/(j−i)` is an integer and
//! `w = Π x_i^(λ_i) = c^(Δ²·d)`. With `a·Δ² + b·e = 1` (extended Euclid; `gcd(Δ², e) = 1`
//! because `e` is a prime larger than `n`), `y = w^a·c^b` satisfies `y^e = c`, which is
//! checked before anything is returned. The values are public (partials of a blinded input,
//! the public key) but for the blinding factor, which enters the final division: the
//! arithmetic is crypto-bigint's constant-time Montgomery form, and only the exponents (the
//! public `λ_i·a`, `b` and `e`) steer the control flow.

use crypto_bigint::modular::BoxedMontyForm;
use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_traits::{One, Zero};

use crate::key::pow_public;
use crate::{Blinding, Error, RsaPublicKey, SharingParams};

/// One appliance's partial result `x_i = c^(s_i + i·2^L) mod N` (the offset, a public
/// sharing of zero, cancels in the combine; see [`crate::partial_exponent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    /// The appliance index, 1..=n.
    pub index: usize,
    /// The partial result.
    pub value: BigUint,
}

/// What [`combine_robust`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CombineOutcome {
    /// `c^d mod N`, verified with `e`.
    pub result: BigUint,
    /// The indices whose partials made the result.
    pub used: Vec<usize>,
    /// The indices whose partials take part in no verifying set: those appliances returned
    /// a wrong value.
    pub faulty: Vec<usize>,
}

/// The Δ-scaled Lagrange coefficient at 0 of `i` over the index set `set`.
pub(crate) fn lambda(delta: u64, set: &[usize], i: usize) -> Result<BigInt, Error> {
    let mut num = BigInt::from(delta);
    let mut den = BigInt::one();
    for &j in set.iter().filter(|&&j| j != i) {
        num *= BigInt::from(j);
        den *= BigInt::from(j as i64 - i as i64);
    }
    let (q, r) = num.div_rem(&den);
    if !r.is_zero() {
        // Cannot happen for distinct indices in 1..=n; guards against misuse.
        return Err(Error::OutOfRange("Lagrange coefficient"));
    }
    Ok(q)
}

fn check_indices(params: &SharingParams, partials: &[Partial]) -> Result<(), Error> {
    let n = params.parties();
    for (pos, p) in partials.iter().enumerate() {
        if p.index == 0 || p.index > n || partials.iter().take(pos).any(|q| q.index == p.index) {
            return Err(Error::Index { index: p.index, n });
        }
    }
    Ok(())
}

/// Combines exactly the given partials (k of them, distinct indices) of `input^d` and
/// checks the result with `e`. See [`Combiner`] to reuse the per-key set-up.
pub fn combine(
    public: &RsaPublicKey,
    params: &SharingParams,
    input: &BigUint,
    partials: &[Partial],
) -> Result<BigUint, Error> {
    Combiner::new(public, params)?.combine(input, partials)
}

/// Combines any number ≥ k of partials and names the wrong ones; see
/// [`Combiner::combine_robust`].
pub fn combine_robust(
    public: &RsaPublicKey,
    params: &SharingParams,
    input: &BigUint,
    partials: &[Partial],
) -> Result<CombineOutcome, Error> {
    Combiner::new(public, params)?.combine_robust(input, partials)
}

/// The per-key part of combining, computed once: Montgomery parameters for `N`, and
/// `(a, b)` with `a·Δ² + b·e = 1`.
///
/// A combine multiplies the terms with positive exponents and those with negative
/// exponents separately, each side as one simultaneous exponentiation (one chain of
/// squarings as long as the longest exponent, about 17 bits plus those of Δ and λ), and
/// inverts once. With exactly k partials it divides first and checks `y^e` (one
/// exponentiation by `e`); when sets of partials must be tried, each is checked before any
/// division, as `P^e = c·Q^e` (two).
#[derive(Clone, Debug)]
pub struct Combiner {
    public: RsaPublicKey,
    params: SharingParams,
    a: BigInt,
    b: BigInt,
}

impl Combiner {
    /// Prepares combining for one key and sharing.
    pub fn new(public: &RsaPublicKey, params: &SharingParams) -> Result<Self, Error> {
        let delta_sq = BigInt::from(params.delta()) * BigInt::from(params.delta());
        let g = delta_sq.extended_gcd(&BigInt::from(public.e().clone()));
        if !g.gcd.is_one() {
            return Err(Error::PublicExponent {
                e: public.e().to_string(),
                n: params.parties(),
            });
        }
        Ok(Self {
            public: public.clone(),
            params: *params,
            a: g.x,
            b: g.y,
        })
    }

    /// Combines exactly k partials (distinct indices) of `input^d` and checks the result
    /// with `e`.
    pub fn combine(&self, input: &BigUint, partials: &[Partial]) -> Result<BigUint, Error> {
        let k = self.params.threshold();
        if partials.len() != k {
            return Err(Error::NotEnoughGoodPartials {
                needed: k,
                received: partials.len(),
                missing: k.saturating_sub(partials.len()),
            });
        }
        check_indices(&self.params, partials)?;
        let input = self.monty_form(input, "input")?;
        let y = self
            .divide_and_check(&input, partials, None)
            .ok_or(Error::Verification)?;
        Ok(self.public.retrieve(&y))
    }

    /// Combines any number ≥ k of partials of `input^d`: finds k that give a verifying
    /// result, then names every partial that takes part in no verifying set.
    ///
    /// The first k partials are tried first, so with no faults this costs one combine; each
    /// partial beyond the first verifying set costs one more check. With n ≤ 16 the subset
    /// search after faults is cheap next to one partial exponentiation at the appliance.
    pub fn combine_robust(
        &self,
        input: &BigUint,
        partials: &[Partial],
    ) -> Result<CombineOutcome, Error> {
        self.search(input, partials, None)
    }

    /// [`Combiner::combine_robust`] for an input blinded with `blinding`
    /// ([`Blinding::new`]): the result is already unblinded. Cheaper than combining and
    /// unblinding apart: the two inversions become one.
    pub fn combine_robust_blinded(
        &self,
        blinded: &BigUint,
        partials: &[Partial],
        blinding: Blinding,
    ) -> Result<CombineOutcome, Error> {
        self.search(blinded, partials, Some(blinding))
    }

    fn search(
        &self,
        input: &BigUint,
        partials: &[Partial],
        blinding: Option<Blinding>,
    ) -> Result<CombineOutcome, Error> {
        let k = self.params.threshold();
        check_indices(&self.params, partials)?;
        let input = self.monty_form(input, "input")?;
        let not_enough = Error::NotEnoughGoodPartials {
            needed: k,
            received: partials.len(),
            missing: k.saturating_sub(partials.len()).max(1),
        };
        if partials.len() < k {
            return Err(not_enough);
        }
        if partials.len() == k {
            // The common case: k partials, all right.
            if let Some(y) = self.divide_and_check(&input, partials, blinding.as_ref()) {
                return Ok(CombineOutcome {
                    result: self.public.retrieve(&y),
                    used: partials.iter().map(|p| p.index).collect(),
                    faulty: Vec::new(),
                });
            }
            // A wrong or unusable partial: the search below names it.
        }
        let try_set = |positions: &[usize]| -> Option<Fraction> {
            self.fraction(&input, positions.iter().filter_map(|&i| partials.get(i)))
                .ok()
        };

        let mut positions: Vec<usize> = (0..k).collect();
        let (fraction, good_set) = loop {
            if let Some(f) = try_set(&positions) {
                break (f, positions);
            }
            if !next_combination(&mut positions, partials.len()) {
                return Err(not_enough);
            }
        };

        // A correct partial swapped into a verifying set keeps it verifying; a wrong one
        // breaks it (but for a wrong value that gives the same result, which is harmless).
        let mut faulty = Vec::new();
        for (pos, p) in partials.iter().enumerate() {
            if good_set.contains(&pos) {
                continue;
            }
            let mut swapped = good_set.clone();
            if let Some(first) = swapped.first_mut() {
                *first = pos;
            }
            if try_set(&swapped).is_none() {
                faulty.push(p.index);
            }
        }
        let used = good_set
            .iter()
            .filter_map(|&i| partials.get(i).map(|p| p.index))
            .collect();
        Ok(CombineOutcome {
            result: self.quotient(&fraction, blinding.as_ref())?,
            used,
            faulty,
        })
    }

    fn monty_form(&self, x: &BigUint, what: &'static str) -> Result<BoxedMontyForm, Error> {
        self.public.to_monty(x, what)
    }

    /// `y = Π x_i^(λ_i·a) · c^b` as a fraction `P/Q` (the terms with positive and with
    /// negative exponents), checked with `P^e = c·Q^e`: a check without an inversion, for
    /// trying sets of partials.
    fn fraction<'p>(
        &self,
        input: &BoxedMontyForm,
        partials: impl Iterator<Item = &'p Partial> + Clone,
    ) -> Result<Fraction, Error> {
        let fraction = self.fraction_unchecked(input, partials)?;
        if self.public.pow_e(&fraction.positive)
            != input.mul(&self.public.pow_e(&fraction.negative))
        {
            return Err(Error::Verification);
        }
        Ok(fraction)
    }

    /// `y` from exactly these partials, divided (by `Q·r` with a blinding) and then checked:
    /// `y^e` against the message `m` with a blinding, else against the input. One
    /// exponentiation by `e`, against the two of the inversion-free check, which only pays
    /// when sets of partials must be tried. `None` if a partial is wrong or unusable.
    fn divide_and_check(
        &self,
        input: &BoxedMontyForm,
        partials: &[Partial],
        blinding: Option<&Blinding>,
    ) -> Option<BoxedMontyForm> {
        let fraction = self.fraction_unchecked(input, partials.iter()).ok()?;
        let y = self.divide(&fraction, blinding).ok()?;
        let expected = blinding.map_or(input, Blinding::message);
        (self.public.pow_e(&y) == *expected).then_some(y)
    }

    /// [`Self::fraction`] without its check.
    fn fraction_unchecked<'p>(
        &self,
        input: &BoxedMontyForm,
        partials: impl Iterator<Item = &'p Partial> + Clone,
    ) -> Result<Fraction, Error> {
        let set: Vec<usize> = partials.clone().map(|p| p.index).collect();
        let mut bases = Vec::with_capacity(set.len() + 1);
        for p in partials {
            if p.value.is_zero() {
                return Err(Error::Verification);
            }
            let x = self
                .monty_form(&p.value, "partial")
                .map_err(|_| Error::Verification)?;
            bases.push((x, lambda(self.params.delta(), &set, p.index)? * &self.a));
        }
        bases.push((input.clone(), self.b.clone()));
        let side = |sign: Sign| {
            let terms: Vec<(&BoxedMontyForm, &BigUint)> = bases
                .iter()
                .filter(|(_, exp)| exp.sign() == sign)
                .map(|(x, exp)| (x, exp.magnitude()))
                .collect();
            pow_public(&terms, self.public.monty())
        };
        let (positive, negative) = (side(Sign::Plus), side(Sign::Minus));
        Ok(Fraction { positive, negative })
    }

    /// `P/Q`, or with a blinding factor `r`, `P/(Q·r)`: one constant-time inversion either
    /// way (the result may be a plaintext).
    fn quotient(&self, f: &Fraction, blinding: Option<&Blinding>) -> Result<BigUint, Error> {
        Ok(self.public.retrieve(&self.divide(f, blinding)?))
    }

    /// [`Self::quotient`] in Montgomery form.
    fn divide(&self, f: &Fraction, blinding: Option<&Blinding>) -> Result<BoxedMontyForm, Error> {
        let denominator = match blinding {
            Some(b) => f.negative.mul(b.factor()),
            None => f.negative.clone(),
        };
        let inverse = self
            .public
            .invert(&denominator)
            .ok_or(Error::Verification)?;
        Ok(f.positive.mul(&inverse))
    }
}

/// A combined result before its one division.
struct Fraction {
    positive: BoxedMontyForm,
    negative: BoxedMontyForm,
}

/// Advances `c` (strictly increasing positions below `m`) to the next k-combination in
/// lexicographic order; false after the last one.
fn next_combination(c: &mut [usize], m: usize) -> bool {
    let k = c.len();
    for i in (0..k).rev() {
        let limit = m - k + i;
        if c[i] < limit {
            c[i] += 1;
            for j in i + 1..k {
                c[j] = c[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// `Δ·d` in the exponent leaves sign and size questions to [`lambda`]; this checks the
/// identity `Σ λ_i·i^t = 0` for `0 < t < k` and `Σ λ_i = Δ`, which the tests use.
#[cfg(test)]
fn lambda_sums(delta: u64, set: &[usize], t: u32) -> BigInt {
    set.iter()
        .map(|&i| lambda(delta, set, i).unwrap_or_default() * BigInt::from(i).pow(t))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagrange_coefficients_interpolate_at_zero() {
        for n in 2..=16usize {
            let delta: u64 = (1..=n as u64).product();
            for k in 2..=n.min(6) {
                let set: Vec<usize> = (n + 1 - k..=n).collect();
                assert_eq!(lambda_sums(delta, &set, 0), BigInt::from(delta));
                for t in 1..k as u32 {
                    assert!(lambda_sums(delta, &set, t).is_zero(), "n={n} k={k} t={t}");
                }
            }
        }
    }

    #[test]
    fn combinations_are_enumerated_once() {
        let mut c = vec![0, 1, 2];
        let mut count = 1;
        while next_combination(&mut c, 6) {
            assert!(c.windows(2).all(|w| w[0] < w[1]));
            count += 1;
        }
        assert_eq!(count, 20);
    }

    #[test]
    fn bezout_coefficients_solve_for_e() {
        let n = (BigUint::one() << 1023u32) + 1u8;
        let public = RsaPublicKey::new(n, BigUint::from(65537u32)).unwrap();
        let params = SharingParams::new(3, 10).unwrap();
        let c = Combiner::new(&public, &params).unwrap();
        let lhs = &c.a * BigInt::from(params.delta()).pow(2) + &c.b * BigInt::from(65537u32);
        assert!(lhs.is_one());
    }
}
