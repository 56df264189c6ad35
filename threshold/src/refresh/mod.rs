//! Proactive refresh: a new k-of-n sharing of the same key, with shares that stay the same
//! size however many refreshes run.
//!
//! Every holder `j` keeps two secrets per epoch ([`HolderShare`]): its **share** `s_j`, the
//! integer it raises inputs to ([`combine`](mod@crate::combine) needs nothing else), and an **additive
//! share** `a_j`, with `Σ_j a_j = D` for the private exponent `D` of the key (`d` as the
//! dealer or the generation made it).
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
//! `2^-126` per epoch (`2^-121` for a refresh that starts from shares).
//!
//! Not every refresh can start from the additive shares: a holder may be away, or its
//! share may have been rebuilt ([`recover`]) without one. Such a refresh starts from the
//! Shamir shares of `k` holders instead ([`Source::Shares`]): each computes
//! `λ_i·s_i` (which sum to `Δ²·D`), adds pairwise masks it shares with the others (they
//! cancel in the sum), and divides by `Δ²` with remainder: it keeps the quotient `q_i` as
//! its starting value and publishes the remainder, which the masks make uniform. The
//! remainders add up to `ρ·Δ²` with `ρ = D − Σ q_i`, which the absorber adds. Keys made before refresh existed (shares
//! and no additive shares) are refreshed this way the first time. A refresh need not reach
//! every holder: those away (not *receivers*) get their new share later by recovery.
//!
//! This module does no I/O: a [`RefreshParty`] turns one participant's epoch-`e` secrets
//! into its messages, round after round, and those it receives into its epoch-`e + 1`
//! secrets; [`run_plan`] and [`refresh_all`] run every participant in one process (tests,
//! and the property that the math holds over many epochs). All arithmetic on secrets is
//! constant time and zeroizing, on two's-complement integers of one public precision.

mod bounds;
mod masks;
mod party;
mod plan;
mod recover;
mod signed;

use core::fmt;

use num_bigint::BigUint;
use num_traits::Zero;
use rand::CryptoRng;

pub use self::bounds::{Bounds, HIDING_BITS};
pub use self::party::RefreshParty;
pub(crate) use self::party::deal_values;
pub use self::plan::{Plan, Source};
pub use self::recover::{RecoveryHelper, recover};
pub(crate) use self::signed::Signed;
use crate::{Error, KeyShare, RsaPublicKey, SecretInt, SharingParams};

/// One holder's secrets of one epoch: the share it exponentiates with, and the additive
/// share the next refresh re-splits. A holder may have no additive share: a key made
/// before refresh existed, or a share rebuilt by recovery; the next refresh then starts
/// from shares.
///
/// `Debug` prints the index only; the secrets are zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct HolderShare {
    additive: Option<SecretInt>,
    share: KeyShare,
}

impl HolderShare {
    /// Checks and builds a holder's secrets from stored parts: the share has the length of
    /// the key's bounds, the additive share (two's complement of
    /// [`Bounds::additive_len`] bytes) is within `±A`.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] or [`Error::OutOfRange`] naming the part that does not fit.
    pub fn new(
        public: &RsaPublicKey,
        params: &SharingParams,
        index: usize,
        additive: Option<SecretInt>,
        share: SecretInt,
    ) -> Result<Self, Error> {
        let bounds = Bounds::new(public, params)?;
        let share = KeyShare::with_bounds(&bounds, index, share)?;
        if let Some(a) = &additive {
            let value = Signed::from_bytes(a.as_be_bytes(), bounds.precision())
                .ok_or(Error::OutOfRange("additive share length"))?;
            if !value.abs_below(bounds.additive_bound()) {
                return Err(Error::OutOfRange("additive share"));
            }
        }
        Ok(Self { additive, share })
    }

    /// A share with no additive share (a key of an older release, a rebuilt share).
    pub fn without_additive(share: KeyShare) -> Self {
        Self {
            additive: None,
            share,
        }
    }

    pub(crate) fn from_parts(additive: Option<SecretInt>, share: KeyShare) -> Self {
        Self { additive, share }
    }

    /// The holder's index, 1..=n.
    pub fn index(&self) -> usize {
        self.share.index()
    }

    /// The share the partial operation uses.
    pub fn share(&self) -> &KeyShare {
        &self.share
    }

    /// The additive share, two's complement; `None` if the holder has none.
    pub fn additive(&self) -> Option<&SecretInt> {
        self.additive.as_ref()
    }
}

impl fmt::Debug for HolderShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HolderShare")
            .field("index", &self.index())
            .field("additive", &self.additive.is_some())
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

/// Runs the refresh `plan` with every participant in this process: `holders` has each
/// participant's secrets of the old epoch (those that have any). Returns the receivers'
/// secrets of the new epoch, by index.
///
/// # Errors
///
/// Whatever a participant reports: a plan that does not check, secrets that do not fit, a
/// value out of range (which with honest participants cannot happen).
pub fn run_plan<R: CryptoRng + ?Sized>(
    public: &RsaPublicKey,
    plan: &Plan,
    holders: &[HolderShare],
    rng: &mut R,
) -> Result<Vec<HolderShare>, Error> {
    let participants = plan.participants();
    let mut parties = participants
        .iter()
        .map(|&me| {
            let own = holders.iter().find(|h| h.index() == me);
            RefreshParty::new(public, plan, me, own)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Exchanges the messages of one round: `out[p]` is participant p's (recipient, value).
    fn deliver<T: Clone>(
        participants: &[usize],
        out: &[Vec<(usize, T)>],
        to: usize,
    ) -> Vec<(usize, T)> {
        participants
            .iter()
            .zip(out)
            .filter_map(|(&from, sent)| {
                sent.iter()
                    .find(|(r, _)| *r == to)
                    .map(|(_, v)| (from, v.clone()))
            })
            .collect()
    }
    let masks = parties
        .iter_mut()
        .map(|p| p.masks(rng))
        .collect::<Result<Vec<_>, _>>()?;
    let mut residues = Vec::new();
    for (party, &me) in parties.iter_mut().zip(&participants) {
        let received = deliver(&participants, &masks, me);
        if let Some(value) = party.residue(&received)? {
            residues.push((me, value));
        }
    }
    for party in &mut parties {
        party.rounding(&residues)?;
    }
    let pieces = parties
        .iter_mut()
        .map(|p| p.split(rng))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dealt = vec![Vec::new(); participants.len()];
    for ((party, &me), out) in parties.iter_mut().zip(&participants).zip(&mut dealt) {
        if plan.receivers.contains(&me) {
            *out = party.deal(&deliver(&participants, &pieces, me), rng)?;
        }
    }
    parties
        .iter_mut()
        .zip(&participants)
        .filter(|(_, me)| plan.receivers.contains(me))
        .map(|(party, &me)| party.finish(&deliver(&participants, &dealt, me)))
        .collect()
}

/// Refreshes every holder of a key in this process (`holders`: the `n` holders of one
/// epoch, in index order), from the additive shares if every holder has one, else from
/// the shares of the first `k`. The result is the next epoch's, in the same order.
///
/// # Errors
///
/// As [`run_plan`].
pub fn refresh_all<R: CryptoRng + ?Sized>(
    public: &RsaPublicKey,
    params: &SharingParams,
    holders: &[HolderShare],
    absorber: usize,
    rng: &mut R,
) -> Result<Vec<HolderShare>, Error> {
    let indices: Vec<usize> = holders.iter().map(HolderShare::index).collect();
    if indices != (1..=params.parties()).collect::<Vec<_>>() {
        return Err(Error::OutOfRange("holders of a refresh"));
    }
    let mut plan = Plan::all(*params, indices.clone(), absorber);
    if holders.iter().any(|h| h.additive().is_none()) {
        plan.source = Source::Shares {
            set: indices[..params.threshold()].to_vec(),
        };
    }
    run_plan(public, &plan, holders, rng)
}
