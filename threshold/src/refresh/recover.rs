//! Rebuilding a holder's share from `k` others, without the share (or the key) being
//! whole anywhere but at its holder.
//!
//! For helpers `H` (`k` holders of the epoch) and the target `t ∉ H`, the share
//! polynomial gives `s_t = Σ_{j∈H} L_j(t)·s_j` with the Lagrange basis `L_j` on `H`.
//! `Δ·L_j(t)` is an integer (its denominator `Π_{i∈H, i≠j} (j − i)` divides `Δ = n!`), so
//! helper `j` computes the integer `c_j = Δ·L_j(t)·s_j` and sends `c_j + M_j`, where the
//! `M_j` are pairwise zero-sum masks the helpers agreed on among themselves
//! (`masks.rs`), uniform in a range `2^λ` times larger than any `c_j`. The target
//! adds what it receives, `Σ c_j = Δ·s_t`, and divides by `Δ` (exactly: a remainder means
//! a helper sent a wrong value). A single message is its helper's term hidden by masks
//! the target does not know; the target learns its own share and nothing else, and the
//! helpers learn nothing (docs/security.md).

use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::{One, Zero};
use rand::CryptoRng;

use super::bounds::{bits_u32, round_to_limb};
use super::masks::Masks;
use super::party::unsigned_share;
use super::{Bounds, HIDING_BITS, Signed};
use crate::{Error, KeyShare, RsaPublicKey, SecretInt, SharingParams};

/// The public sizes of one recovery.
struct Sizes {
    /// Bound on `|c_j|`.
    term: BigUint,
    /// The masks are uniform in `[0, mask)`.
    mask: BigUint,
    precision: u32,
}

fn sizes(bounds: &Bounds, helpers: usize) -> Sizes {
    let params = bounds.params();
    let n = BigUint::from(params.parties());
    let term = (BigUint::from(params.delta()) * num_traits::pow(n, helpers.saturating_sub(1)))
        << bounds.share_bits();
    let mask = &term << HIDING_BITS;
    let largest = BigUint::from(helpers) * (&term + BigUint::from(helpers) * &mask);
    Sizes {
        precision: round_to_limb(bits_u32(&largest) + 2).max(bounds.precision()),
        term,
        mask,
    }
}

/// `Δ·L_j(t)` on `helpers`: an integer.
fn scaled_basis(delta: u64, helpers: &[usize], j: usize, t: usize) -> Result<BigInt, Error> {
    let mut num = BigInt::from(delta);
    let mut den = BigInt::one();
    for &i in helpers.iter().filter(|&&i| i != j) {
        num *= BigInt::from(t as i64 - i as i64);
        den *= BigInt::from(j as i64 - i as i64);
    }
    let (q, r) = num.div_rem(&den);
    if !r.is_zero() {
        return Err(Error::OutOfRange("Lagrange coefficient"));
    }
    Ok(q)
}

fn check_sets(params: &SharingParams, helpers: &[usize], target: usize) -> Result<(), Error> {
    let n = params.parties();
    let ok = helpers.len() == params.threshold()
        && helpers.windows(2).all(|w| w[0] < w[1])
        && helpers.iter().all(|&i| (1..=n).contains(&i))
        && (1..=n).contains(&target)
        && !helpers.contains(&target);
    if ok {
        Ok(())
    } else {
        Err(Error::OutOfRange("helpers and target of a recovery"))
    }
}

/// One helper's part of rebuilding holder `target`'s share. Call
/// [`RecoveryHelper::masks`] (for the helpers above this one), then
/// [`RecoveryHelper::contribution`] with the masks of the helpers below it; send the
/// contribution to the target.
pub struct RecoveryHelper {
    term: Signed,
    masks: Option<Masks>,
    me: usize,
    helpers: Vec<usize>,
    sizes: Sizes,
}

impl core::fmt::Debug for RecoveryHelper {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecoveryHelper")
            .field("me", &self.me)
            .field("helpers", &self.helpers)
            .finish_non_exhaustive()
    }
}

impl RecoveryHelper {
    /// Helper `share.index()` among `helpers` (`k` holders, ascending) rebuilding the
    /// share of `target`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the sets do not fit the sharing or the share its key.
    pub fn new(
        public: &RsaPublicKey,
        params: &SharingParams,
        helpers: &[usize],
        target: usize,
        share: &KeyShare,
    ) -> Result<Self, Error> {
        check_sets(params, helpers, target)?;
        let me = share.index();
        if !helpers.contains(&me) {
            return Err(Error::OutOfRange("helper of a recovery"));
        }
        let bounds = Bounds::new(public, params)?;
        let sizes = sizes(&bounds, helpers.len());
        let basis = scaled_basis(params.delta(), helpers, me, target)?;
        let len = (sizes.precision / 8) as usize;
        let value = share.value().as_be_bytes();
        let mut padded = zeroize::Zeroizing::new(vec![0u8; len]);
        padded
            .get_mut(len.saturating_sub(value.len())..)
            .filter(|slot| slot.len() == value.len())
            .ok_or(Error::OutOfRange("share"))?
            .copy_from_slice(value);
        let term = Signed::from_bytes(&padded, sizes.precision)
            .ok_or(Error::OutOfRange("share"))?
            .mul_public(&basis);
        Ok(Self {
            term,
            masks: None,
            me,
            helpers: helpers.to_vec(),
            sizes,
        })
    }

    /// Byte length of every value of this recovery.
    pub fn message_len(&self) -> usize {
        (self.sizes.precision / 8) as usize
    }

    /// This helper's masks for the helpers above it.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the mask range does not fit (it always does).
    pub fn masks<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<Vec<(usize, SecretInt)>, Error> {
        let (masks, out) = Masks::draw(
            self.me,
            &self.helpers,
            &self.sizes.mask,
            self.sizes.precision,
            rng,
        )?;
        self.masks = Some(masks);
        Ok(out)
    }

    /// `c_j + M_j`, with the masks of the helpers below this one.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming a helper whose mask is missing or wrong; out of
    /// order without [`RecoveryHelper::masks`] first.
    pub fn contribution(self, received: &[(usize, SecretInt)]) -> Result<SecretInt, Error> {
        let masks = self.masks.ok_or(Error::RefreshMessage {
            from: self.me,
            reason: "recovery step out of order",
        })?;
        Ok(self.term.add(&masks.total(received)?).to_secret())
    }
}

/// The target's side: adds every helper's contribution (keyed by helper), divides by `Δ`
/// and returns the share of `target`.
///
/// # Errors
///
/// [`Error::RefreshMessage`] naming a helper whose contribution is missing, of the wrong
/// length or out of range, or the target when they do not add up to a share (a helper
/// sent a wrong value).
pub fn recover(
    public: &RsaPublicKey,
    params: &SharingParams,
    helpers: &[usize],
    target: usize,
    contributions: &[(usize, SecretInt)],
) -> Result<KeyShare, Error> {
    check_sets(params, helpers, target)?;
    let bounds = Bounds::new(public, params)?;
    let sizes = sizes(&bounds, helpers.len());
    let message_bound = &sizes.term + BigUint::from(helpers.len()) * &sizes.mask;
    let mut sum = Signed::zero(sizes.precision);
    for &from in helpers {
        let bad = |reason| Error::RefreshMessage { from, reason };
        let (_, bytes) = contributions
            .iter()
            .find(|(f, _)| *f == from)
            .ok_or(bad("no contribution from this helper"))?;
        let value = Signed::from_bytes(bytes.as_be_bytes(), sizes.precision)
            .ok_or(bad("value of the wrong length"))?;
        if !value.abs_below(&message_bound) {
            return Err(bad("contribution out of range"));
        }
        sum = sum.add(&value);
    }
    let wrong = || Error::RefreshMessage {
        from: target,
        reason: "the contributions do not add up to a share: a helper sent a wrong value",
    };
    let (share, exact) = sum
        .floor_div(&BigUint::from(params.delta()))
        .ok_or_else(wrong)?;
    if !exact {
        return Err(wrong());
    }
    let value = unsigned_share(&share, &bounds).ok_or_else(wrong)?;
    KeyShare::with_bounds(&bounds, target, value)
}
