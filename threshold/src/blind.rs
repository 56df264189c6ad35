//! Blinding: the module sends `c = m·r^e mod N` for a fresh random `r` and unblinds the
//! combined result with `r^(−1)`, so appliances never see what is signed or decrypted and
//! the base of their secret exponentiation is uniformly random.
//!
//! `r` is as sensitive as the message it hides: it is handled with constant-time
//! Montgomery arithmetic (its inversion too) and never printed. No inversion happens at
//! blinding time: [`crate::Combiner::combine_robust_blinded`] folds `r^(−1)` into the one
//! inversion that combining needs anyway.

use crypto_bigint::modular::BoxedMontyForm;
use num_bigint::BigUint;
use rand::CryptoRng;

use crate::dealer::random_below_vartime;
use crate::{Error, RsaPublicKey};

/// The unblinding half of one blinded operation (the factor `r`, and the message `m` to
/// check the result against). Use once.
#[derive(Clone)]
pub struct Blinding {
    r: BoxedMontyForm,
    m: BoxedMontyForm,
}

impl core::fmt::Debug for Blinding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Blinding([redacted])")
    }
}

impl Blinding {
    /// Blinds `m < N`: returns the unblinding value and `m·r^e mod N` to send.
    pub fn new<R: CryptoRng + ?Sized>(
        public: &RsaPublicKey,
        m: &BigUint,
        rng: &mut R,
    ) -> Result<(Self, BigUint), Error> {
        let m = public.to_monty(m, "input to blind")?;
        // r shares a factor with N with negligible probability (that would factor N); the
        // inversion at unblinding time then fails with an error.
        let r = public.to_monty(&random_below_vartime(public.n(), rng), "blinding factor")?;
        let blinded = m.mul(&public.pow_e(&r));
        Ok((Self { r, m }, public.retrieve(&blinded)))
    }

    /// The factor `r`, for combining with the unblinding folded in.
    pub(crate) fn factor(&self) -> &BoxedMontyForm {
        &self.r
    }

    /// The message `m`, to check a result against.
    pub(crate) fn message(&self) -> &BoxedMontyForm {
        &self.m
    }

    /// Removes the blinding from `y = (m·r^e)^d = m^d·r`. `y` must be below `N`.
    pub fn unblind(self, public: &RsaPublicKey, y: &BigUint) -> Result<BigUint, Error> {
        let y = public.to_monty(y, "result to unblind")?;
        let r_inv = public
            .invert(&self.r)
            .ok_or(Error::OutOfRange("blinding factor"))?;
        Ok(public.retrieve(&y.mul(&r_inv)))
    }
}
