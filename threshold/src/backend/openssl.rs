//! The OpenSSL backend: `BN_mod_exp` with `BN_FLG_CONSTTIME` on the exponent, which OpenSSL
//! routes to `BN_mod_exp_mont_consttime` for an odd modulus.
//!
//! That function runs over all the limbs the exponent occupies (`p->top`), and reading
//! bytes into a `BIGNUM` drops leading zero limbs: a partial's exponent starts with the
//! appliance's index, never zero ([`super::partial_exponent`]), so its limb count depends
//! on public values only.

use openssl::bn::{BigNum, BigNumContext};

use super::PartialExp;
use crate::Error;

/// OpenSSL's constant-time Montgomery exponentiation.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenSsl;

fn backend_error(e: openssl::error::ErrorStack) -> Error {
    Error::Backend(format!("OpenSSL: {e}"))
}

impl PartialExp for OpenSsl {
    fn name(&self) -> &'static str {
        "openssl"
    }

    fn pow_secret(&self, base: &[u8], exponent: &[u8], modulus: &[u8]) -> Result<Vec<u8>, Error> {
        let m = BigNum::from_slice(modulus).map_err(backend_error)?;
        if !m.is_bit_set(0) {
            return Err(Error::OutOfRange("modulus (must be odd)"));
        }
        let b = BigNum::from_slice(base).map_err(backend_error)?;
        if b >= m {
            return Err(Error::OutOfRange("base"));
        }
        // The secure heap where OpenSSL has one; BigNum's drop clears the value.
        let mut p = BigNum::new_secure().map_err(backend_error)?;
        p.copy_from_slice(exponent).map_err(backend_error)?;
        p.set_const_time();
        let mut ctx = BigNumContext::new_secure().map_err(backend_error)?;
        let mut r = BigNum::new_secure().map_err(backend_error)?;
        r.set_const_time();
        r.mod_exp(&b, &p, &m, &mut ctx).map_err(backend_error)?;
        let len = i32::try_from(modulus.len()).map_err(|_| Error::OutOfRange("modulus"))?;
        r.to_vec_padded(len).map_err(backend_error)
    }
}
