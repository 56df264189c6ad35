//! The pure-Rust backend: crypto-bigint's constant-time Montgomery exponentiation.

use crypto_bigint::BoxedUint;
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use zeroize::Zeroizing;

use super::PartialExp;
use crate::Error;

/// crypto-bigint's fixed-window Montgomery exponentiation over heap-allocated integers.
#[derive(Clone, Copy, Debug, Default)]
pub struct CryptoBigint;

fn precision_for(len: usize) -> Result<u32, Error> {
    u32::try_from(len.max(1) * 8).map_err(|_| Error::OutOfRange("integer length"))
}

impl PartialExp for CryptoBigint {
    fn name(&self) -> &'static str {
        "crypto-bigint"
    }

    fn pow_secret(&self, base: &[u8], exponent: &[u8], modulus: &[u8]) -> Result<Vec<u8>, Error> {
        let mod_bits = precision_for(modulus.len())?;
        let modulus = BoxedUint::from_be_slice(modulus, mod_bits)
            .map_err(|_| Error::OutOfRange("modulus"))?
            .to_odd()
            .into_option()
            .ok_or(Error::OutOfRange("modulus (must be odd)"))?;
        let base = BoxedUint::from_be_slice(base, modulus.bits_precision())
            .map_err(|_| Error::OutOfRange("base"))?;
        if base >= *modulus.as_ref() {
            return Err(Error::OutOfRange("base"));
        }
        let exp_bits = precision_for(exponent.len())?;
        let exponent = Zeroizing::new(
            BoxedUint::from_be_slice(exponent, exp_bits)
                .map_err(|_| Error::OutOfRange("exponent"))?,
        );
        let params = BoxedMontyParams::new(modulus);
        let result = BoxedMontyForm::new(base, &params).pow_bounded_exp(&exponent, exp_bits);
        let be = result.retrieve().to_be_bytes();
        // to_be_bytes covers the whole precision (whole limbs); keep the modulus's length.
        let skip = be.len().saturating_sub(mod_bits as usize / 8);
        Ok(be.get(skip..).unwrap_or_default().to_vec())
    }
}
