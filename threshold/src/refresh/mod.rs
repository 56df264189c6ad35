//! Proactive refresh: a new k-of-n sharing of the same key, with shares that stay the same
//! size however many refreshes run.
//!
//! Every holder `j` keeps two secrets per epoch ([`HolderShare`]): its **share** `s_j`, the
//! integer it raises inputs to ([`combine`](mod@crate::combine) needs nothing else), and an **additive
//! share** `a_j`, with `Σ_j a_j = D` for a private exponent `D` of the key (`d` itself, or
//! for keys converted from the form of older releases an equivalent one, see [`legacy`]).
//! The shares are the sums of the holders' dealings of the additive layer:
//! `s_i = Σ_l F_l(i)` with `F_l(0) = Δ·a_l`, so `Σ_{i∈S} λ_i·s_i = Δ²·D` as before.
//!
//! A refresh from epoch `e` to `e + 1` has two rounds among all `n` holders, with one fixed
//! index `f` (the *absorber*, chosen by the coordinator):
//!
//! 1. **Re-split.** Holder `j` draws `b_{j,l}` uniform in `[0, R)` for every `l ≠ f` and
//!    sets `b_{j,f} = a_j − Σ_{l≠f} b_{j,l}`; it sends `b_{j,l}` to holder `l`.
//! 2. **Re-deal.** Holder `l` adds what it received, `a'_l = Σ_j b_{j,l}`, draws a fresh
//!    polynomial `F'_l(X) = Δ·a'_l + c_1·X + … + c_(k−1)·X^(k−1)` with `c_m` uniform in
//!    `[0, C)`, and sends `F'_l(i)` to holder `i`.
//!
//! Holder `i` then holds `a'_i` and `s'_i = Σ_l F'_l(i)`: `Σ a'_l = Σ a_j = D`, and the
//! shares are a fresh sharing of `Δ·D`. Every `a'_l` but the absorber's is a sum of `n`
//! fresh uniform pieces, whatever the old values were, and `a'_f = D − Σ_{l≠f} a'_l`: the
//! sizes are the same in every epoch ([`Bounds`]), and the shares have exactly the length
//! of a dealer's. docs/security.md gives the argument that `k − 1` holders of one epoch
//! and `k − 1` of the next learn nothing about `D` beyond a statistical distance of about
//! `2^-126` per epoch.
//!
//! This module does no I/O: a [`RefreshParty`] turns one holder's epoch-`e` secrets into
//! its round-1 messages, those it receives into its round-2 messages, and those into its
//! epoch-`e + 1` secrets; [`refresh_all`] runs every holder in one process (tests, and the
//! property that the math holds over many epochs). All arithmetic on secrets is constant
//! time and zeroizing, on two's-complement integers of one public precision.

mod bounds;
pub mod legacy;
mod party;
mod signed;

use core::fmt;

use num_bigint::BigUint;
use num_traits::Zero;
use rand::CryptoRng;

pub use self::bounds::{Bounds, HIDING_BITS, MAX_EXTRA_BITS};
pub use self::party::RefreshParty;
pub(crate) use self::party::deal_values;
pub(crate) use self::signed::Signed;
use crate::{Error, KeyShare, RsaPublicKey, SecretInt, SharingParams};

/// One holder's secrets of one epoch: the share it exponentiates with, and the additive
/// share the next refresh re-splits. A share of a key made before refresh existed has no
/// additive share ([`HolderShare::is_legacy`]); its first refresh converts it.
///
/// `Debug` prints the index and form only; the secrets are zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct HolderShare {
    extra_bits: u32,
    additive: Option<SecretInt>,
    share: KeyShare,
}

impl HolderShare {
    /// Checks and builds a holder's secrets from stored parts: the share has the length of
    /// the form's bounds, the additive share (two's complement of
    /// [`Bounds::additive_len`] bytes) is within `±A`. A legacy share (no additive share)
    /// must have `extra_bits = 0`.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] or [`Error::OutOfRange`] naming the part that does not fit.
    pub fn new(
        public: &RsaPublicKey,
        params: &SharingParams,
        index: usize,
        extra_bits: u32,
        additive: Option<SecretInt>,
        share: SecretInt,
    ) -> Result<Self, Error> {
        let bounds = Bounds::new(public, params, extra_bits)?;
        let share = KeyShare::with_bounds(&bounds, index, share)?;
        match &additive {
            None if extra_bits != 0 => return Err(Error::OutOfRange("sharing form")),
            None => {}
            Some(a) => {
                let value = Signed::from_bytes(a.as_be_bytes(), bounds.precision())
                    .ok_or(Error::OutOfRange("additive share length"))?;
                if !value.abs_below(bounds.additive_bound()) {
                    return Err(Error::OutOfRange("additive share"));
                }
            }
        }
        Ok(Self {
            extra_bits,
            additive,
            share,
        })
    }

    /// A share of the form of older releases: no additive layer.
    pub fn legacy(share: KeyShare) -> Self {
        Self {
            extra_bits: 0,
            additive: None,
            share,
        }
    }

    pub(crate) fn from_parts(extra_bits: u32, additive: SecretInt, share: KeyShare) -> Self {
        Self {
            extra_bits,
            additive: Some(additive),
            share,
        }
    }

    /// The holder's index, 1..=n.
    pub fn index(&self) -> usize {
        self.share.index()
    }

    /// The share the partial operation uses.
    pub fn share(&self) -> &KeyShare {
        &self.share
    }

    /// The additive share, two's complement; `None` for a legacy share.
    pub fn additive(&self) -> Option<&SecretInt> {
        self.additive.as_ref()
    }

    /// The form's `x` ([`Bounds`]): 0 for keys whose additive layer sums to `d`.
    pub fn extra_bits(&self) -> u32 {
        self.extra_bits
    }

    /// Whether this is a share of the form of older releases, with no additive layer.
    pub fn is_legacy(&self) -> bool {
        self.additive.is_none()
    }
}

impl fmt::Debug for HolderShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HolderShare")
            .field("index", &self.index())
            .field("extra_bits", &self.extra_bits)
            .field("legacy", &self.is_legacy())
            .finish_non_exhaustive()
    }
}

/// The public input of a refresh's trial operation: an integer in `[1, N)` drawn from
/// SHA-256 of `context` (the session, key and epoch), the same at every holder. Holders
/// raise it to their new shares; nobody gets a partial of a new epoch on an input of its
/// own choosing.
pub fn trial_input(public: &RsaPublicKey, context: &[u8]) -> BigUint {
    use sha2::{Digest, Sha256};
    let wanted = public.size() + 16;
    let mut bytes = Vec::with_capacity(wanted + 32);
    let mut counter = 0u32;
    while bytes.len() < wanted {
        let mut hash = Sha256::new();
        hash.update(b"ittc refresh trial input\0");
        hash.update(counter.to_be_bytes());
        hash.update(context);
        bytes.extend_from_slice(&hash.finalize());
        counter += 1;
    }
    let x = BigUint::from_bytes_be(&bytes) % public.n();
    if x.is_zero() { BigUint::from(1u8) } else { x }
}

/// Refreshes every holder of a key in this process: the holders' [`RefreshParty`]s
/// exchange their two rounds directly. `holders` must be the `n` holders of one epoch in
/// index order; the result is the next epoch's, in the same order.
///
/// # Errors
///
/// Whatever a party reports: a share that does not belong, a message out of range (which
/// with honest holders cannot happen).
pub fn refresh_all<R: CryptoRng + ?Sized>(
    public: &RsaPublicKey,
    params: &SharingParams,
    holders: &[HolderShare],
    absorber: usize,
    rng: &mut R,
) -> Result<Vec<HolderShare>, Error> {
    if holders.len() != params.parties()
        || holders.iter().enumerate().any(|(i, h)| h.index() != i + 1)
    {
        return Err(Error::OutOfRange("holders of a refresh"));
    }
    let mut parties = holders
        .iter()
        .map(|h| RefreshParty::new(public, params, h, absorber))
        .collect::<Result<Vec<_>, _>>()?;
    let pieces = parties
        .iter_mut()
        .map(|p| p.split(rng))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dealt = Vec::with_capacity(parties.len());
    for (l, party) in parties.iter_mut().enumerate() {
        let received: Vec<SecretInt> = pieces.iter().filter_map(|p| p.get(l).cloned()).collect();
        dealt.push(party.deal(&received, rng)?);
    }
    parties
        .iter_mut()
        .enumerate()
        .map(|(i, party)| {
            let received: Vec<SecretInt> = dealt.iter().filter_map(|d| d.get(i).cloned()).collect();
            party.finish(&received)
        })
        .collect()
}
