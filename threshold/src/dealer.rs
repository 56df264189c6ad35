//! The dealer: splitting an existing private exponent into k-of-n integer shares.
//!
//! Appliance `i` gets `s_i = f(i)` for an integer polynomial with `f(0) = Δ·d` (`Δ = n!`),
//! a plain integer (design.md §2), and an additive share of `d` for later refreshes: the
//! dealer splits `d` as a refresh re-splits an additive layer and deals each part with its
//! own polynomial (coefficients below `Δ²·N·2^128 / n`), so `f` is their sum
//! ([`crate::refresh`]). The arithmetic on `d` and the coefficients runs on constant-time,
//! zeroizing big integers of one fixed precision, and every share is encoded in the same
//! number of bytes, so neither the time taken nor the share lengths depend on the secret.

use num_bigint::BigUint;
use num_traits::{One, Zero};
use rand::CryptoRng;
use zeroize::Zeroizing;

use crate::backend::PartialExp;
use crate::combine::{Partial, combine};
use crate::key::is_prime_vartime;
use crate::refresh::{Bounds, HolderShare, Signed, deal_values};
use crate::{Error, RsaPrivateKey, RsaPublicKey, SecretInt};

/// Largest number of appliances.
pub const MAX_PARTIES: usize = 16;

/// Statistical hiding of the constant term by the random coefficients, in bits.
const HIDING_BITS: u32 = 128;

/// A threshold `k` of `n` appliances, `2 ≤ k ≤ n ≤ 16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharingParams {
    k: usize,
    n: usize,
}

impl SharingParams {
    /// Checks `2 ≤ k ≤ n ≤ 16`.
    pub fn new(k: usize, n: usize) -> Result<Self, Error> {
        if k < 2 || k > n || n > MAX_PARTIES {
            return Err(Error::Threshold { k, n });
        }
        Ok(Self { k, n })
    }

    /// The threshold k: how many partials make a result.
    pub fn threshold(&self) -> usize {
        self.k
    }

    /// The number of appliances n.
    pub fn parties(&self) -> usize {
        self.n
    }

    /// `Δ = n!` (at most 16! < 2^45).
    pub fn delta(&self) -> u64 {
        (1..=self.n as u64).product()
    }

    /// Checks that `e` may be used with this many appliances: prime and larger than `n`, so
    /// that `gcd(Δ², e) = 1`.
    pub fn check_public_exponent(&self, public: &RsaPublicKey) -> Result<(), Error> {
        let e = public.e();
        if e <= &BigUint::from(self.n) || !is_prime_vartime(e) {
            let shown = if e.bits() <= 64 {
                e.to_string()
            } else {
                format!("of {} bits", e.bits())
            };
            return Err(Error::PublicExponent {
                e: shown,
                n: self.n,
            });
        }
        Ok(())
    }

    /// Bound `Δ²·N·2^128` on the sum of the holders' random coefficients.
    fn coefficient_bound(&self, public: &RsaPublicKey) -> BigUint {
        let delta = BigUint::from(self.delta());
        (&delta * &delta * public.n()) << HIDING_BITS
    }

    /// Bit length every share of a key with this modulus fits in (in the form of `d`
    /// itself; [`Bounds::share_bits`] for any form): the bound
    /// `Δ·N + B·(n + n² + … + n^(k−1))` on `f(i)`. Public; it sizes the exponent.
    pub fn share_bits(&self, public: &RsaPublicKey) -> u32 {
        let bound = self.coefficient_bound(public);
        let n = BigUint::from(self.n);
        let mut powers = BigUint::ZERO;
        let mut power = BigUint::one();
        for _ in 1..self.k {
            power *= &n;
            powers += &power;
        }
        let max = BigUint::from(self.delta()) * public.n() + bound * powers;
        u32::try_from(max.bits()).unwrap_or(u32::MAX)
    }

    /// Byte length of every encoded share of a key with this modulus.
    pub fn share_len(&self, public: &RsaPublicKey) -> usize {
        (self.share_bits(public) as usize).div_ceil(8)
    }
}

/// One appliance's share: its index (1..=n) and the secret integer `s_i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyShare {
    index: usize,
    value: SecretInt,
}

impl KeyShare {
    /// Builds a share from stored parts, checking the index and that the value has the
    /// length every share of this key has.
    pub fn new(
        public: &RsaPublicKey,
        params: &SharingParams,
        index: usize,
        value: SecretInt,
    ) -> Result<Self, Error> {
        if index == 0 || index > params.parties() {
            return Err(Error::Index {
                index,
                n: params.parties(),
            });
        }
        if value.len() != params.share_len(public) {
            return Err(Error::OutOfRange("share length"));
        }
        Ok(Self { index, value })
    }

    /// A share whose length the caller has checked against its key's bounds (the
    /// appliance caches them per key): no check here.
    pub fn new_unchecked(index: usize, value: SecretInt) -> Self {
        Self { index, value }
    }

    /// Like [`KeyShare::new`] for a key of any form: the value must have the length of
    /// `bounds`.
    pub fn with_bounds(bounds: &Bounds, index: usize, value: SecretInt) -> Result<Self, Error> {
        let n = bounds.params().parties();
        if index == 0 || index > n {
            return Err(Error::Index { index, n });
        }
        if value.len() != bounds.share_len() {
            return Err(Error::OutOfRange("share length"));
        }
        Ok(Self { index, value })
    }

    /// The appliance index, 1..=n.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The share `s_i`, big-endian in its fixed length.
    pub fn value(&self) -> &SecretInt {
        &self.value
    }
}

/// Splits `key` into `params.parties()` holder shares in the refreshable form, any
/// `params.threshold()` of whose shares produce `c^d mod N`, and checks the sharing with a
/// trial operation through `backend` before returning it: shares of an inconsistent key
/// file never leave the dealer.
///
/// The dealer plays every holder of an epoch 0: it splits `d` into additive shares (`a_j`
/// uniform in `[0, R)` for `j ≠ 1`, `a_1 = d − Σ a_j`) and deals each as a refresh does
/// (`crate::refresh`), so an imported key has exactly the form of a refreshed one.
pub fn split_key<R: CryptoRng + ?Sized>(
    key: &RsaPrivateKey,
    params: SharingParams,
    backend: &dyn PartialExp,
    rng: &mut R,
) -> Result<Vec<HolderShare>, Error> {
    let public = key.public_key();
    params.check_public_exponent(public)?;
    let bounds = Bounds::new(public, &params)?;
    let precision = bounds.precision();
    let len = bounds.additive_len();
    let d = key
        .d()
        .to_boxed(precision)
        .and_then(|d| SecretInt::from_boxed(&d, len))
        .and_then(|d| Signed::from_bytes(d.as_be_bytes(), precision))
        .ok_or(Error::OutOfRange("private exponent"))?;
    let mut additive = Vec::with_capacity(params.n);
    let mut remainder = d;
    for _ in 2..=params.n {
        let a = Signed::random_below(bounds.piece_range(), precision, rng)
            .ok_or(Error::OutOfRange("piece range"))?;
        remainder = remainder.sub(&a);
        additive.push(a);
    }
    additive.insert(0, remainder);

    let holders: Vec<usize> = (1..=params.n).collect();
    let mut sums: Vec<Signed> = (0..params.n).map(|_| Signed::zero(precision)).collect();
    for a in &additive {
        let dealt = deal_values(a, &bounds, &holders, precision, rng)?;
        for (sum, (_, value)) in sums.iter_mut().zip(&dealt) {
            *sum = sum.add(value);
        }
    }
    let holders = sums
        .iter()
        .zip(&additive)
        .enumerate()
        .map(|(position, (share, a))| {
            let share = share
                .to_unsigned(bounds.share_len())
                .ok_or(Error::OutOfRange("share"))?;
            let share = KeyShare::with_bounds(&bounds, position + 1, share)?;
            Ok(HolderShare::from_parts(Some(a.to_secret()), share))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let shares: Vec<KeyShare> = holders.iter().map(|h| h.share().clone()).collect();
    trial_operation(public, &params, &shares, backend, rng)?;
    Ok(holders)
}

/// Raises a random input to `d` through the first k shares and combines: `combine` checks
/// the result with `e`, so this fails if the key file's `d` does not match `(N, e)`.
fn trial_operation<R: CryptoRng + ?Sized>(
    public: &RsaPublicKey,
    params: &SharingParams,
    shares: &[KeyShare],
    backend: &dyn PartialExp,
    rng: &mut R,
) -> Result<(), Error> {
    let input = random_below_vartime(public.n(), rng);
    let partials = shares
        .iter()
        .take(params.k)
        .map(|share| {
            Ok(Partial {
                index: share.index,
                value: backend.partial(public, share, &input)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    combine(public, params, &input, &partials)
        .map(|_| ())
        .map_err(|_| Error::KeyInvalid("d does not match (N, e): the trial operation failed"))
}

/// A uniform integer in `[1, bound)`, for public or blinding values.
pub(crate) fn random_below_vartime<R: CryptoRng + ?Sized>(bound: &BigUint, rng: &mut R) -> BigUint {
    let bytes = usize::try_from(bound.bits().div_ceil(8)).unwrap_or(0);
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    let top_bits = bound.bits() % 8;
    loop {
        rng.fill_bytes(&mut buf);
        if let (Some(first), true) = (buf.first_mut(), top_bits != 0) {
            *first &= (1u8 << top_bits) - 1;
        }
        let x = BigUint::from_bytes_be(&buf);
        if x < *bound && !x.is_zero() {
            return x;
        }
    }
}
