//! The partial operation `c^(s_i) mod N`, the only computation that touches a share.
//!
//! It is constant time in the share: the exponent is processed over a fixed number of bits
//! with fixed windows and no secret-dependent branches or memory accesses. Three
//! implementations exist so that appliances can run different code for it (design.md §6):
//! crypto-bigint's Montgomery form (pure Rust, always built), OpenSSL's
//! `BN_mod_exp_mont_consttime` (feature `openssl-backend`) and GMP's `mpz_powm_sec`
//! (feature `gmp-backend`, linked to the system's libgmp). All give identical results.
//!
//! # The exponent has no leading zeros
//!
//! OpenSSL and GMP size an exponentiation by the limbs the exponent occupies, and both
//! drop leading zero limbs when they read an integer: a share that happened to start with
//! 64 zero bits would take one window loop less than its neighbours, and its partial would
//! show that the share is short. So the exponent of a partial is not `s_i` but
//!
//! ```text
//! t_i = s_i + i·2^L,   L = 8 × share length in bytes (public, the same for every share)
//! ```
//!
//! which is the index's bytes written in front of the share's ([`partial_exponent`]): no
//! arithmetic on the secret. As `0 ≤ s_i < 2^L`, `t_i` has exactly `L + bits(i)` bits,
//! which depend on public values only, whatever the share. The offset needs no
//! correction anywhere: `i·2^L` is the public polynomial `g(x) = 2^L·x`, with `g(0) = 0`
//! and degree 1 < k, so it is a sharing of zero, and the Lagrange coefficients at zero of
//! any k holders cancel it (`Σ λ_i·i = 0`; [`crate::Combiner`] is unchanged). Knowing
//! `c^(t_i)` is knowing `c^(s_i)`: the offset is public.

mod crypto_bigint;
#[cfg(feature = "gmp-backend")]
mod gmp;
#[cfg(feature = "openssl-backend")]
mod openssl;

use num_bigint::BigUint;
use zeroize::Zeroizing;

use crate::{Error, KeyShare, RsaPublicKey};

pub use self::crypto_bigint::CryptoBigint;
#[cfg(feature = "gmp-backend")]
pub use self::gmp::Gmp;
#[cfg(feature = "openssl-backend")]
pub use self::openssl::OpenSsl;

/// An implementation of the partial operation.
pub trait PartialExp: Send + Sync {
    /// A short name, reported as the build variant.
    fn name(&self) -> &'static str;

    /// `base^exponent mod modulus`, constant time in `exponent` among exponents of one
    /// length whose first byte is not zero (OpenSSL and GMP drop leading zero limbs; see
    /// the module docs), where `base < modulus` with the modulus odd. The result is
    /// big-endian in the modulus's length.
    fn pow_secret(&self, base: &[u8], exponent: &[u8], modulus: &[u8]) -> Result<Vec<u8>, Error>;

    /// The partial result of one appliance: `input^(t_i) mod N` with `t_i = s_i + i·2^L`
    /// ([`partial_exponent`]), which combines as `input^(s_i)` would.
    fn partial(
        &self,
        public: &RsaPublicKey,
        share: &KeyShare,
        input: &BigUint,
    ) -> Result<BigUint, Error> {
        if input >= public.n() {
            return Err(Error::OutOfRange("partial-operation input"));
        }
        let exponent = partial_exponent(share);
        let out = self.pow_secret(&public.integer_to_be(input), &exponent, &public.n_be())?;
        Ok(BigUint::from_bytes_be(&out))
    }
}

/// The exponent of a partial, `s_i + i·2^L` with `L` the share's length in bits: the
/// index's big-endian bytes (no leading zero; an index is at least 1) followed by the
/// share's. Its first byte is never zero and its length is public.
pub fn partial_exponent(share: &KeyShare) -> Zeroizing<Vec<u8>> {
    offset_exponent(share.index(), share.value().as_be_bytes())
}

/// `value + index·2^(8·len)`: the index's big-endian bytes without leading zeros, then
/// `value`'s.
fn offset_exponent(index: usize, value: &[u8]) -> Zeroizing<Vec<u8>> {
    let index = index.to_be_bytes();
    let first = index.iter().position(|&b| b != 0).unwrap_or(index.len());
    let mut exponent = Zeroizing::new(Vec::with_capacity(index.len() - first + value.len()));
    exponent.extend_from_slice(index.get(first..).unwrap_or_default());
    exponent.extend_from_slice(value);
    exponent
}

/// The backends this build has, selectable by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// crypto-bigint, pure Rust.
    CryptoBigint,
    /// OpenSSL's constant-time BN exponentiation.
    #[cfg(feature = "openssl-backend")]
    OpenSsl,
    /// GMP's `mpz_powm_sec`, over an exponent of fixed length.
    #[cfg(feature = "gmp-backend")]
    Gmp,
}

impl Backend {
    /// Every backend compiled into this build.
    pub fn available() -> &'static [Backend] {
        &[
            Backend::CryptoBigint,
            #[cfg(feature = "openssl-backend")]
            Backend::OpenSsl,
            #[cfg(feature = "gmp-backend")]
            Backend::Gmp,
        ]
    }

    /// Looks a backend up by its [`PartialExp::name`].
    pub fn from_name(name: &str) -> Option<Backend> {
        Self::available()
            .iter()
            .copied()
            .find(|b| b.get().name() == name)
    }

    /// The implementation.
    pub fn get(self) -> &'static dyn PartialExp {
        match self {
            Backend::CryptoBigint => &CryptoBigint,
            #[cfg(feature = "openssl-backend")]
            Backend::OpenSsl => &OpenSsl,
            #[cfg(feature = "gmp-backend")]
            Backend::Gmp => &Gmp,
        }
    }
}

impl Default for Backend {
    /// crypto-bigint: pure Rust, in every build.
    fn default() -> Self {
        Backend::CryptoBigint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use num_bigint::BigUint;

    use super::offset_exponent;

    #[test]
    fn a_partial_exponent_is_the_share_plus_the_index_times_2_to_the_share_bits() {
        let len = 35;
        let mut short = vec![0x5a; len];
        short[..9].fill(0);
        for share in [vec![0u8; len], short, vec![0xff; len]] {
            for index in [1usize, 2, 5, 16, 255, 256, 1000] {
                let exponent = offset_exponent(index, &share);
                let expected = BigUint::from_bytes_be(&share) + (BigUint::from(index) << (8 * len));
                assert_eq!(BigUint::from_bytes_be(&exponent), expected);
                // No leading zero byte, and a length set by public values alone.
                assert_ne!(exponent[0], 0);
                assert_eq!(exponent.len(), len + (index.ilog2() as usize / 8 + 1));
            }
        }
    }
}
