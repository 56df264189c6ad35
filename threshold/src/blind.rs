//! Blinding: the module sends `c = m·r^e mod N` for a fresh random `r` and unblinds the
//! combined result with `r^(−1)`, so appliances never see what is signed or decrypted and
//! the base of their secret exponentiation is uniformly random.
//!
//! `r` and `r^(−1)` are as sensitive as the message they hide: they are computed with
//! constant-time Montgomery arithmetic (the inversion too) and never printed.

use crypto_bigint::modular::BoxedMontyForm;
use num_bigint::BigUint;
use rand::CryptoRng;

use crate::dealer::random_below_vartime;
use crate::{Error, RsaPublicKey};

/// The unblinding half of one blinded operation. Use once.
#[derive(Clone)]
pub struct Blinding {
    r_inv: BoxedMontyForm,
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
        loop {
            let r = public.to_monty(&random_below_vartime(public.n(), rng), "blinding factor")?;
            // r shares a factor with N with negligible probability; draw again if so.
            if let Some(r_inv) = r.invert().into_option() {
                let blinded = m.mul(&public.pow_e(&r));
                return Ok((Self { r_inv }, public.retrieve(&blinded)));
            }
        }
    }

    /// Removes the blinding from `y = (m·r^e)^d = m^d·r`. `y` must be below `N`.
    pub fn unblind(self, public: &RsaPublicKey, y: &BigUint) -> Result<BigUint, Error> {
        let y = public.to_monty(y, "result to unblind")?;
        Ok(public.retrieve(&y.mul(&self.r_inv)))
    }
}
