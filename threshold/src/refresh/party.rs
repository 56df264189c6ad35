//! One participant's side of a refresh: the rounds of a [`Plan`], with the checks on every
//! value it receives.

use core::fmt;

use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::Zero;
use rand::CryptoRng;

use super::bounds::{bits_u32, round_to_limb};
use super::masks::Masks;
use super::plan::{Plan, Source};
use super::{Bounds, HIDING_BITS, HolderShare, Signed};
use crate::{Error, KeyShare, RsaPublicKey, SecretInt, SharingParams};

/// One participant of a refresh from epoch `e` to `e + 1` ([`super`] has the protocol).
///
/// The rounds, each fed with what every other participant sent in the one before (values
/// keyed by sender; a participant with nothing to send in a round sends nothing):
///
/// 0. From shares only: [`RefreshParty::masks`] (between the senders), then
///    [`RefreshParty::residue`] (each sender's public residue, to everyone), then
///    [`RefreshParty::rounding`] with every sender's residue.
/// 1. [`RefreshParty::split`]: a sender's pieces, one per receiver.
/// 2. [`RefreshParty::deal`]: a receiver's dealt values, one per receiver.
/// 3. [`RefreshParty::finish`]: a receiver's secrets of the new epoch.
///
/// Secret values are [`RefreshParty::message_len`] bytes of two's complement. A call out
/// of order, or after an error, fails with [`Error::RefreshMessage`] naming this
/// participant; the secrets are zeroized on drop.
pub struct RefreshParty {
    me: usize,
    plan: Plan,
    new: Bounds,
    /// Bound on `|start|` of a sender.
    start_bound: BigUint,
    /// Bound on the masks of a start from shares.
    mask_bound: BigUint,
    /// `Δ²` of the old sharing: a start from shares divides by it.
    delta_sq: BigUint,
    precision: u32,
    state: State,
}

enum State {
    /// From shares, a sender: `λ_i·s_i`, before its masks.
    Weighted(Signed),
    /// From shares, a sender that sent its masks.
    Masking(Signed, Masks),
    /// From shares: waiting for every sender's residue (a sender knows its `q_i`).
    Trial(Option<Signed>),
    /// Ready to split: a sender's starting value, and the rounding error (the absorber
    /// adds it to its new additive share).
    Ready(Option<Signed>, u64),
    /// Pieces sent; a receiver waits for every sender's piece.
    Split(u64),
    /// The new additive share; waiting for every receiver's dealt value.
    Dealt(Signed),
    /// Finished or failed.
    Over,
}

impl RefreshParty {
    /// Participant `me` of the refresh `plan` of the key `public`, with its secrets of the
    /// old epoch if it has any (a receiver that is not a sender needs none).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] for a plan that does not check, a participant it does not
    /// name, or old secrets that are missing or do not fit.
    pub fn new(
        public: &RsaPublicKey,
        plan: &Plan,
        me: usize,
        holder: Option<&HolderShare>,
    ) -> Result<Self, Error> {
        plan.validate()?;
        if !plan.participants().contains(&me) {
            return Err(Error::OutOfRange("participant of the refresh"));
        }
        let new = Bounds::new(public, &plan.new)?;
        let old = Bounds::new(public, &plan.old)?;
        let sender = plan.senders().contains(&me);
        let own = holder
            .filter(|h| h.index() == me)
            .ok_or(Error::OutOfRange("this holder's secrets of the old epoch"));
        let delta_sq = BigUint::from(plan.old.delta()).pow(2u32);
        let mask_bound = &delta_sq << HIDING_BITS;
        let start_bound = match &plan.source {
            Source::Additive { .. } => old.additive_bound().clone(),
            Source::Shares { set } => {
                // |λ_i·s_i| < Δ·n^(k−1)·2^(share bits); the masks add less than k·M.
                let lambda_bound = BigUint::from(plan.old.delta())
                    * num_traits::pow(BigUint::from(plan.old.parties()), set.len() - 1);
                let weighted =
                    (lambda_bound << old.share_bits()) + BigUint::from(set.len()) * &mask_bound;
                &weighted / &delta_sq + 2u8
            }
        };
        let senders = BigUint::from(plan.senders().len());
        let receivers = BigUint::from(plan.receivers.len());
        let largest = [
            &senders * (&start_bound + &receivers * new.piece_range()),
            &receivers * new.deal_bound(),
            (&start_bound * &delta_sq) << 2u8,
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        let precision = new
            .precision()
            .max(old.precision())
            .max(round_to_limb(bits_u32(&largest) + 2));
        let state = match (&plan.source, sender) {
            (_, false) => {
                if plan.from_shares() {
                    State::Trial(None)
                } else {
                    State::Ready(None, 0)
                }
            }
            (Source::Additive { .. }, true) => {
                let additive = own?
                    .additive()
                    .ok_or(Error::OutOfRange("this holder's additive share"))?;
                let start = Signed::from_bytes(additive.as_be_bytes(), old.precision())
                    .and_then(|a| a.widen(precision))
                    .ok_or(Error::OutOfRange("additive share length"))?;
                State::Ready(Some(start), 0)
            }
            (Source::Shares { set }, true) => {
                let share = own?.share();
                let lambda = crate::combine::lambda(plan.old.delta(), set, me)?;
                State::Weighted(weighted_share(share, &lambda, precision)?)
            }
        };
        Ok(Self {
            me,
            plan: plan.clone(),
            new,
            start_bound,
            mask_bound,
            delta_sq,
            precision,
            state,
        })
    }

    /// Byte length of every secret value of this refresh.
    pub fn message_len(&self) -> usize {
        (self.precision / 8) as usize
    }

    /// The bounds of the sharing this refresh produces.
    pub fn bounds(&self) -> &Bounds {
        &self.new
    }

    /// Round 0a, from shares: a sender's pairwise masks for the senders above it. Nothing
    /// for anyone else, or from additive shares.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] if called out of order.
    pub fn masks<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<Vec<(usize, SecretInt)>, Error> {
        match core::mem::replace(&mut self.state, State::Over) {
            State::Weighted(weighted) => {
                let (masks, out) = Masks::draw(
                    self.me,
                    self.plan.senders(),
                    &self.mask_bound,
                    self.precision,
                    rng,
                )?;
                self.state = State::Masking(weighted, masks);
                Ok(out)
            }
            other @ (State::Trial(None) | State::Ready(..)) => {
                self.state = other;
                Ok(Vec::new())
            }
            _ => Err(self.out_of_order()),
        }
    }

    /// Round 0b, from shares: with the masks of the senders below it, a sender's
    /// `q_i = ⌊(λ_i·s_i + M_i)/Δ²⌋` (kept) and its public **residue**
    /// `r_i = (λ_i·s_i + M_i) mod Δ²` (for everyone), big-endian in [`Self::residue_len`]
    /// bytes. The masks make each residue uniform; their sum is public anyway. `None`
    /// for anyone else.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming a sender whose mask is wrong, or if out of order.
    pub fn residue(&mut self, masks: &[(usize, SecretInt)]) -> Result<Option<Vec<u8>>, Error> {
        match core::mem::replace(&mut self.state, State::Over) {
            State::Masking(weighted, own) => {
                let masked = weighted.add(&own.total(masks)?);
                let (q, residue) = masked
                    .floor_div_rem(&self.delta_sq)
                    .ok_or(Error::OutOfRange("the share to start from"))?;
                self.state = State::Trial(Some(q));
                let len = self.residue_len();
                let bytes = residue.to_bytes_be();
                let mut out = vec![0u8; len.saturating_sub(bytes.len())];
                out.extend_from_slice(&bytes);
                Ok(Some(out))
            }
            other @ (State::Trial(None) | State::Ready(..)) => {
                self.state = other;
                Ok(None)
            }
            _ => Err(self.out_of_order()),
        }
    }

    /// Byte length of a residue: that of `Δ²`.
    pub fn residue_len(&self) -> usize {
        usize::try_from(self.delta_sq.bits().div_ceil(8)).unwrap_or(0)
    }

    /// After round 0b, from shares: every sender's residue (keyed by sender). They add up
    /// to `ρ·Δ²`, where the rounding error `ρ = D − Σ q_i` is below the number of senders;
    /// the absorber adds it. Nothing to do otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming a sender whose residue is missing or out of range,
    /// or this participant when they do not add up to a multiple of `Δ²` (the senders'
    /// masks or shares do not fit together).
    pub fn rounding(&mut self, residues: &[(usize, Vec<u8>)]) -> Result<(), Error> {
        let start = match core::mem::replace(&mut self.state, State::Over) {
            State::Trial(start) => start,
            ready @ State::Ready(..) => {
                self.state = ready;
                return Ok(());
            }
            _ => return Err(self.out_of_order()),
        };
        let mut sum = BigUint::zero();
        for &from in self.plan.senders() {
            let bad = |reason| Error::RefreshMessage { from, reason };
            let (_, bytes) = residues
                .iter()
                .find(|(f, _)| *f == from)
                .ok_or(bad("no residue from this holder"))?;
            if bytes.len() != self.residue_len() {
                return Err(bad("residue of the wrong length"));
            }
            let r = BigUint::from_bytes_be(bytes);
            if r >= self.delta_sq {
                return Err(bad("residue out of range"));
            }
            sum += r;
        }
        let (rho, rest) = sum.div_rem(&self.delta_sq);
        match u64::try_from(&rho) {
            Ok(rho) if rest.is_zero() && rho < self.plan.senders().len() as u64 => {
                self.state = State::Ready(start, rho);
                Ok(())
            }
            _ => Err(Error::RefreshMessage {
                from: self.me,
                reason: "the residues do not add up: the senders' masks or shares do not fit \
                         together",
            }),
        }
    }

    /// Round 1: a sender's pieces of its starting value, one per receiver (the absorber's
    /// is the remainder); nothing for anyone else.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] if called out of order.
    pub fn split<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<Vec<(usize, SecretInt)>, Error> {
        let State::Ready(start, rho) = core::mem::replace(&mut self.state, State::Over) else {
            return Err(self.out_of_order());
        };
        self.state = State::Split(rho);
        let Some(mut remainder) = start else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(self.plan.receivers.len());
        for &l in self
            .plan
            .receivers
            .iter()
            .filter(|&&l| l != self.plan.absorber)
        {
            let piece = Signed::random_below(self.new.piece_range(), self.precision, rng)
                .ok_or(Error::OutOfRange("piece range"))?;
            remainder = remainder.sub(&piece);
            out.push((l, piece.to_secret()));
        }
        out.push((self.plan.absorber, remainder.to_secret()));
        out.sort_by_key(|(l, _)| *l);
        Ok(out)
    }

    /// Round 2: a receiver checks the pieces every sender sent it, adds them into its new
    /// additive share and deals it with a fresh polynomial of the new sharing; returns its
    /// values for the receivers (those of the new holders away are not sent: they get
    /// their share by recovery).
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming the sender of a piece that is missing, of the
    /// wrong length or out of range, or this receiver when the sum is out of range.
    pub fn deal<R: CryptoRng + ?Sized>(
        &mut self,
        pieces: &[(usize, SecretInt)],
        rng: &mut R,
    ) -> Result<Vec<(usize, SecretInt)>, Error> {
        let State::Split(rho) = core::mem::replace(&mut self.state, State::Over) else {
            return Err(self.out_of_order());
        };
        if !self.plan.receivers.contains(&self.me) {
            return Err(self.out_of_order());
        }
        let absorber = self.me == self.plan.absorber;
        let remainder_bound =
            &self.start_bound + BigUint::from(self.plan.receivers.len()) * self.new.piece_range();
        let mut sum = Signed::public(
            &BigUint::from(if absorber { rho } else { 0 }),
            self.precision,
        )
        .ok_or(Error::OutOfRange("rounding error"))?;
        for &from in self.plan.senders() {
            let piece = self.value_from(pieces, from)?;
            let ok = if absorber {
                piece.abs_below(&remainder_bound)
            } else {
                piece.in_range(self.new.piece_range())
            };
            if !ok {
                return Err(Error::RefreshMessage {
                    from,
                    reason: "piece out of range",
                });
            }
            sum = sum.add(&piece);
        }
        if !sum.abs_below(self.new.additive_bound()) {
            return Err(Error::RefreshMessage {
                from: self.me,
                reason: "the pieces received do not add up to an additive share in range",
            });
        }
        let dealt = deal_values(&sum, &self.new, &self.plan.new_holders, self.precision, rng)?;
        self.state = State::Dealt(sum);
        Ok(dealt
            .into_iter()
            .filter(|(i, _)| self.plan.receivers.contains(i))
            .map(|(i, v)| (i, v.to_secret()))
            .collect())
    }

    /// The end, for a receiver: checks the values every receiver dealt it and returns its
    /// secrets of the new epoch.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming the sender of a value that is missing, of the wrong
    /// length or out of range, or this receiver when the share is out of range.
    pub fn finish(&mut self, dealt: &[(usize, SecretInt)]) -> Result<HolderShare, Error> {
        let State::Dealt(additive) = core::mem::replace(&mut self.state, State::Over) else {
            return Err(self.out_of_order());
        };
        let mut share = Signed::zero(self.precision);
        for &from in &self.plan.receivers {
            let value = self.value_from(dealt, from)?;
            if !value.abs_below(self.new.deal_bound()) {
                return Err(Error::RefreshMessage {
                    from,
                    reason: "dealt value out of range",
                });
            }
            share = share.add(&value);
        }
        let out_of_range = || Error::RefreshMessage {
            from: self.me,
            reason: "the dealt values received do not add up to a share in range",
        };
        let share = unsigned_share(&share, &self.new).ok_or_else(out_of_range)?;
        let share = KeyShare::with_bounds(&self.new, self.me, share)?;
        let additive = additive
            .narrow(self.new.precision())
            .ok_or_else(out_of_range)?
            .to_secret();
        Ok(HolderShare::from_parts(Some(additive), share))
    }

    fn value_from(&self, values: &[(usize, SecretInt)], from: usize) -> Result<Signed, Error> {
        let bad = |reason| Error::RefreshMessage { from, reason };
        let (_, bytes) = values
            .iter()
            .find(|(f, _)| *f == from)
            .ok_or(bad("no value from this holder"))?;
        Signed::from_bytes(bytes.as_be_bytes(), self.precision)
            .ok_or(bad("value of the wrong length"))
    }

    fn out_of_order(&self) -> Error {
        Error::RefreshMessage {
            from: self.me,
            reason: "refresh step out of order or after a failure",
        }
    }
}

impl fmt::Debug for RefreshParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Weighted(_) => "weighted",
            State::Masking(..) => "masking",
            State::Trial(_) => "trial",
            State::Ready(..) => "ready",
            State::Split(_) => "split",
            State::Dealt(_) => "dealt",
            State::Over => "over",
        };
        f.debug_struct("RefreshParty")
            .field("me", &self.me)
            .field("absorber", &self.plan.absorber)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// `λ·s` for a share `s` and a public signed `λ`, at `precision` bits.
fn weighted_share(share: &KeyShare, lambda: &BigInt, precision: u32) -> Result<Signed, Error> {
    let len = (precision / 8) as usize;
    let value = share.value().as_be_bytes();
    if value.len() >= len {
        return Err(Error::OutOfRange("share longer than the refresh precision"));
    }
    let mut padded = zeroize::Zeroizing::new(vec![0u8; len]);
    padded
        .get_mut(len - value.len()..)
        .ok_or(Error::OutOfRange("share"))?
        .copy_from_slice(value);
    let s = Signed::from_bytes(&padded, precision).ok_or(Error::OutOfRange("share"))?;
    Ok(s.mul_public(lambda))
}

/// A sum that must be a share of `bounds`: non-negative, below `2^(share bits)`, encoded
/// in the share's length.
pub(crate) fn unsigned_share(value: &Signed, bounds: &Bounds) -> Option<SecretInt> {
    let bound = BigUint::from(1u8) << bounds.share_bits();
    if !value.in_range(&bound) {
        return None;
    }
    value.to_unsigned(bounds.share_len())
}

/// `F(i)` for every `i` of `holders`, for `F(X) = Δ·a + c_1·X + … + c_(k−1)·X^(k−1)` with
/// fresh coefficients uniform in `[0, C)`: a holder's dealing of its additive share `a`.
pub(crate) fn deal_values<R: CryptoRng + ?Sized>(
    additive: &Signed,
    bounds: &Bounds,
    holders: &[usize],
    precision: u32,
    rng: &mut R,
) -> Result<Vec<(usize, Signed)>, Error> {
    let params: &SharingParams = bounds.params();
    let constant = additive.mul_small(params.delta());
    let coefficients = (1..params.threshold())
        .map(|_| Signed::random_below(bounds.coefficient_bound(), precision, rng))
        .collect::<Option<Vec<_>>>()
        .ok_or(Error::OutOfRange("coefficient bound"))?;
    Ok(holders
        .iter()
        .map(|&i| {
            // Horner: ((c_(k−1)·x + c_(k−2))·x + … + c_1)·x + Δ·a.
            let x = i as u64;
            let mut acc = Signed::zero(precision);
            for c in coefficients.iter().rev() {
                acc = acc.add(c).mul_small(x);
            }
            (i, acc.add(&constant))
        })
        .collect())
}
