//! From additive shares `d_i` to k-of-n integer Shamir shares, compatible with
//! [`crate::combine`].
//!
//! Party `i` deals `Δ·d_i` with its own integer polynomial
//! `F_i(X) = Δ·d_i + c_1·X + … + c_(k−1)·X^(k−1)` and sends `F_i(j)` to party `j`, which sums
//! `s_j = Σ_i F_i(j) + Δ·r` (the public rounding error `r`, see [`super::exponent`]). Then
//! `Σ_j λ_j·s_j = Δ·(Δ·(d − r) + Δ·r) = Δ²·d`, exactly as for a dealer's shares
//! (design.md §2).
//!
//! Coefficient bound: the dealer draws coefficients below `B = Δ²·N·2^128`; here each of the
//! `n` parties draws below `⌊B/n⌋`, so the summed coefficients stay below `B`, every `s_j`
//! meets the dealer's bound and has the fixed length
//! [`SharingParams::share_len`](crate::SharingParams::share_len) that stored shares have.
//! One honest party's coefficients alone hide its `Δ·d_i` to within `2^-(128 − log2 n)`,
//! i.e. at least 124 bits for `n ≤ 16`; the other parties' terms only add to that.

use num_bigint::{BigInt, BigRng010, BigUint, Sign};
use num_traits::Zero;
use rand::CryptoRng;
use zeroize::Zeroizing;

use super::KeygenError;
use crate::refresh::{Bounds, HolderShare, Signed};
use crate::{KeyShare, RsaPublicKey, SecretInt, SharingParams};

/// Statistical hiding of the dealer's polynomials, in bits (as in `dealer.rs`).
const HIDING_BITS: u32 = 128;

/// The exclusive bound `⌊Δ²·N·2^128 / n⌋` on each party's coefficients.
pub(crate) fn coefficient_bound(public: &RsaPublicKey, params: &SharingParams) -> BigUint {
    let delta = BigUint::from(params.delta());
    ((&delta * &delta * public.n()) << HIDING_BITS) / BigUint::from(params.parties())
}

/// `F_i` at each of `holders` for constant term `Δ·d_i` (position `j − 1` holds
/// `F_i(holders[j − 1])`, party `j`'s value).
pub(crate) fn deal<R: CryptoRng + ?Sized>(
    d_i: &BigInt,
    public: &RsaPublicKey,
    params: &SharingParams,
    holders: &[usize],
    rng: &mut R,
) -> Vec<BigInt> {
    let bound = coefficient_bound(public, params);
    let constant = BigInt::from(params.delta()) * d_i;
    let coefficients: Vec<BigUint> = (1..params.threshold())
        .map(|_| rng.random_biguint_below(&bound))
        .collect();
    holders
        .iter()
        .map(|&x| {
            let mut acc = BigUint::zero();
            for c in coefficients.iter().rev() {
                acc += c;
                acc *= x as u64;
            }
            BigInt::from(acc) + &constant
        })
        .collect()
}

/// Largest byte length of `|F_i(j)|` that a receiver accepts: a share's length plus one.
pub(crate) fn max_value_len(public: &RsaPublicKey, params: &SharingParams) -> usize {
    params.share_len(public) + 1
}

/// Encodes a signed value as (negative, magnitude big-endian).
pub(crate) fn encode_signed(x: &BigInt) -> (bool, Vec<u8>) {
    (x.sign() == Sign::Minus, x.magnitude().to_bytes_be())
}

/// Decodes a signed value, refusing magnitudes longer than `max_len` bytes.
pub(crate) fn decode_signed(
    negative: bool,
    magnitude: &[u8],
    max_len: usize,
    from: usize,
) -> Result<BigInt, KeygenError> {
    if magnitude.len() > max_len {
        return Err(KeygenError::BadMessage {
            from,
            reason: "share value too long",
        });
    }
    let sign = if negative { Sign::Minus } else { Sign::Plus };
    Ok(BigInt::from_biguint(
        sign,
        BigUint::from_bytes_be(magnitude),
    ))
}

/// `s_j = Σ_i F_i(j) + Δ·r` as a stored share of party `index`, with its additive share
/// `d_j` (plus `r` for party 1, so that the additive shares sum to `d`): the refreshable
/// form of [`crate::refresh`], as if party 1 had dealt `Δ·(d_1 + r)`.
pub(crate) fn assemble(
    values: &[BigInt],
    d_i: &BigInt,
    rounding: u64,
    public: &RsaPublicKey,
    params: &SharingParams,
    index: usize,
    first: bool,
) -> Result<HolderShare, KeygenError> {
    let sum: BigInt =
        values.iter().sum::<BigInt>() + BigInt::from(params.delta()) * BigInt::from(rounding);
    let Some(sum) = sum.to_biguint() else {
        return Err(KeygenError::Inconsistent("a negative key share"));
    };
    let be = Zeroizing::new(sum.to_bytes_be());
    let value = SecretInt::from_be_slice_padded(&be, params.share_len(public)).ok_or(
        KeygenError::Inconsistent("a key share longer than its bound"),
    )?;
    let share = KeyShare::new(public, params, index, value)?;
    let additive = if first {
        d_i + BigInt::from(rounding)
    } else {
        d_i.clone()
    };
    let bounds = Bounds::new(public, params)?;
    let additive = Signed::from_bigint_vartime(&additive, bounds.precision())
        .filter(|a| a.abs_below(bounds.additive_bound()))
        .ok_or(KeygenError::Inconsistent("an additive share out of range"))?;
    Ok(HolderShare::from_parts(Some(additive.to_secret()), share))
}
