//! One holder's side of a refresh: split, deal, finish, with the checks on every value it
//! receives.

use core::fmt;

use num_bigint::BigUint;
use rand::CryptoRng;

use super::bounds::{bits_u32, round_to_limb};
use super::legacy::Conversion;
use super::{Bounds, HolderShare, Signed};
use crate::{Error, KeyShare, RsaPublicKey, SecretInt, SharingParams};

/// One holder's refresh from epoch `e` to `e + 1` ([`super`] has the protocol).
///
/// Call [`RefreshParty::split`] for the pieces to send (one per holder, this one's own
/// included), then [`RefreshParty::deal`] with the pieces every holder sent this one, then
/// [`RefreshParty::finish`] with the dealt values every holder sent this one. Each message
/// is [`RefreshParty::message_len`] bytes of two's complement. A call out of order, or
/// after an error, fails with [`Error::RefreshMessage`] naming this holder; the secrets are
/// zeroized on drop.
pub struct RefreshParty {
    index: usize,
    parties: usize,
    absorber: usize,
    params: SharingParams,
    /// The bounds of the form after this refresh.
    new: Bounds,
    /// Bound on `|a_j|` of the epoch being left (larger in a conversion).
    old_bound: BigUint,
    /// Precision of every value and message of this refresh.
    precision: u32,
    state: State,
}

enum State {
    /// Holding the old additive share.
    Ready(Signed),
    /// Pieces sent; waiting for everyone's pieces.
    Split,
    /// The new additive share; dealt, waiting for everyone's dealings.
    Dealt(Signed),
    /// Finished or failed.
    Over,
}

impl RefreshParty {
    /// Holder `holder.index()` of a refresh of the key `public`, `params`, whose
    /// remainders go to `absorber`. A legacy holder share is converted ([`Conversion`]):
    /// every holder of one refresh must be legacy or none.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] for an absorber outside `1..=n`; [`Error::OutOfRange`] for a holder
    /// share that does not fit the key.
    pub fn new(
        public: &RsaPublicKey,
        params: &SharingParams,
        holder: &HolderShare,
        absorber: usize,
    ) -> Result<Self, Error> {
        let n = params.parties();
        for index in [absorber, holder.index()] {
            if index == 0 || index > n {
                return Err(Error::Index { index, n });
            }
        }
        let (new, old_bound, old) = match holder.additive() {
            Some(additive) => {
                let bounds = Bounds::new(public, params, holder.extra_bits())?;
                let old = Signed::from_bytes(additive.as_be_bytes(), bounds.precision())
                    .ok_or(Error::OutOfRange("additive share length"))?;
                (bounds.clone(), bounds.additive_bound().clone(), old)
            }
            None => {
                let conversion = Conversion::new(public, params)?;
                let bounds = conversion.bounds(public, params)?;
                let old_bound = conversion.old_bound(public, params);
                let precision = precision_for(&bounds, &old_bound, n);
                let old = conversion.old_additive(params, holder.share(), absorber, precision)?;
                (bounds, old_bound, old)
            }
        };
        let precision = precision_for(&new, &old_bound, n);
        let old = old
            .widen(precision)
            .ok_or(Error::OutOfRange("additive share"))?;
        Ok(Self {
            index: holder.index(),
            parties: n,
            absorber,
            params: *params,
            new,
            old_bound,
            precision,
            state: State::Ready(old),
        })
    }

    /// Byte length of every message of this refresh.
    pub fn message_len(&self) -> usize {
        (self.precision / 8) as usize
    }

    /// The bounds of the sharing this refresh produces.
    pub fn bounds(&self) -> &Bounds {
        &self.new
    }

    /// Round 1: the pieces of this holder's additive share; position `l − 1` goes to
    /// holder `l` (this holder's own piece included).
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] if called out of order.
    pub fn split<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<Vec<SecretInt>, Error> {
        let State::Ready(old) = core::mem::replace(&mut self.state, State::Over) else {
            return Err(self.out_of_order());
        };
        let mut pieces = Vec::with_capacity(self.parties);
        let mut remainder = old;
        for l in 1..=self.parties {
            if l == self.absorber {
                pieces.push(None);
                continue;
            }
            let piece = Signed::random_below(self.new.piece_range(), self.precision, rng)
                .ok_or(Error::OutOfRange("piece range"))?;
            remainder = remainder.sub(&piece);
            pieces.push(Some(piece));
        }
        let mut remainder = Some(remainder);
        let out = pieces
            .into_iter()
            .map(|p| p.or_else(|| remainder.take()).map(|p| p.to_secret()))
            .collect::<Option<Vec<_>>>()
            .ok_or(Error::OutOfRange("pieces"))?;
        self.state = State::Split;
        Ok(out)
    }

    /// Round 2: checks the pieces every holder sent (position `j − 1` from holder `j`),
    /// adds them into this holder's new additive share and deals it; position `i − 1` of
    /// the result goes to holder `i`.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming the sender of a piece of the wrong length or out of
    /// range, or when the new additive share is out of range (a sender's pieces did not
    /// add up).
    pub fn deal<R: CryptoRng + ?Sized>(
        &mut self,
        pieces: &[SecretInt],
        rng: &mut R,
    ) -> Result<Vec<SecretInt>, Error> {
        if !matches!(self.state, State::Split) {
            return Err(self.out_of_order());
        }
        self.state = State::Over;
        self.check_count(pieces.len())?;
        let remainder_bound =
            &self.old_bound + BigUint::from(self.parties) * self.new.piece_range();
        let mut sum = Signed::zero(self.precision);
        for (position, bytes) in pieces.iter().enumerate() {
            let from = position + 1;
            let piece = self.decode(bytes, from)?;
            let ok = if self.index == self.absorber {
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
                from: self.index,
                reason: "the pieces received do not add up to an additive share in range",
            });
        }
        let dealt = deal_values(&sum, &self.new, &self.params, self.precision, rng)?;
        self.state = State::Dealt(sum);
        Ok(dealt.iter().map(Signed::to_secret).collect())
    }

    /// The end: checks the values every holder dealt this one (position `l − 1` from
    /// holder `l`) and returns this holder's secrets of the new epoch.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming the sender of a value of the wrong length or out of
    /// range, or when the share is out of range.
    pub fn finish(&mut self, dealt: &[SecretInt]) -> Result<HolderShare, Error> {
        let State::Dealt(additive) = core::mem::replace(&mut self.state, State::Over) else {
            return Err(self.out_of_order());
        };
        self.check_count(dealt.len())?;
        let mut share = Signed::zero(self.precision);
        for (position, bytes) in dealt.iter().enumerate() {
            let from = position + 1;
            let value = self.decode(bytes, from)?;
            if !value.abs_below(self.new.deal_bound()) {
                return Err(Error::RefreshMessage {
                    from,
                    reason: "dealt value out of range",
                });
            }
            share = share.add(&value);
        }
        let out_of_range = || Error::RefreshMessage {
            from: self.index,
            reason: "the dealt values received do not add up to a share in range",
        };
        let share_bound = BigUint::from(1u8) << self.new.share_bits();
        if !share.in_range(&share_bound) {
            return Err(out_of_range());
        }
        let share = share
            .to_unsigned(self.new.share_len())
            .ok_or_else(out_of_range)?;
        let share = KeyShare::with_bounds(&self.new, self.index, share)?;
        let additive = additive
            .narrow(self.new.precision())
            .ok_or_else(out_of_range)?
            .to_secret();
        Ok(HolderShare::from_parts(
            self.new.extra_bits(),
            additive,
            share,
        ))
    }

    fn decode(&self, bytes: &SecretInt, from: usize) -> Result<Signed, Error> {
        Signed::from_bytes(bytes.as_be_bytes(), self.precision).ok_or(Error::RefreshMessage {
            from,
            reason: "value of the wrong length",
        })
    }

    fn check_count(&self, got: usize) -> Result<(), Error> {
        if got == self.parties {
            Ok(())
        } else {
            Err(Error::RefreshMessage {
                from: self.index,
                reason: "not one value from every holder",
            })
        }
    }

    fn out_of_order(&self) -> Error {
        Error::RefreshMessage {
            from: self.index,
            reason: "refresh step out of order or after a failure",
        }
    }
}

impl fmt::Debug for RefreshParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Split => "split",
            State::Dealt(_) => "dealt",
            State::Over => "over",
        };
        f.debug_struct("RefreshParty")
            .field("index", &self.index)
            .field("absorber", &self.absorber)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The precision that holds every value of a refresh into `new` from additive shares below
/// `old_bound`.
fn precision_for(new: &Bounds, old_bound: &BigUint, parties: usize) -> u32 {
    let n = BigUint::from(parties);
    let pieces = &n * (old_bound + &n * new.piece_range());
    new.precision().max(round_to_limb(bits_u32(&pieces) + 2))
}

/// `F(1..=n)` for `F(X) = Δ·a + c_1·X + … + c_(k−1)·X^(k−1)` with fresh coefficients
/// uniform in `[0, C)`: a holder's dealing of its additive share `a`.
pub(crate) fn deal_values<R: CryptoRng + ?Sized>(
    additive: &Signed,
    bounds: &Bounds,
    params: &SharingParams,
    precision: u32,
    rng: &mut R,
) -> Result<Vec<Signed>, Error> {
    let constant = additive.mul_small(params.delta());
    let coefficients = (1..params.threshold())
        .map(|_| Signed::random_below(bounds.coefficient_bound(), precision, rng))
        .collect::<Option<Vec<_>>>()
        .ok_or(Error::OutOfRange("coefficient bound"))?;
    Ok((1..=params.parties() as u64)
        .map(|x| {
            // Horner: ((c_(k−1)·x + c_(k−2))·x + … + c_1)·x + Δ·a.
            let mut acc = Signed::zero(precision);
            for c in coefficients.iter().rev() {
                acc = acc.add(c).mul_small(x);
            }
            acc.add(&constant)
        })
        .collect())
}
