//! The partial operation `c^(s_i) mod N`, the only computation that touches a share.
//!
//! It is constant time in the share: the exponent is processed over a fixed number of bits
//! (the public bound [`crate::SharingParams::share_bits`], which every share's encoded length
//! carries) with fixed windows and no secret-dependent branches or memory accesses. Three
//! implementations exist so that appliances can run different code for it (design.md §6):
//! crypto-bigint's Montgomery form (pure Rust, always built), OpenSSL's
//! `BN_mod_exp_mont_consttime` (feature `openssl-backend`) and GMP's `mpz_powm_sec`
//! (feature `gmp-backend`, linked to the system's libgmp). All give identical results.

mod crypto_bigint;
#[cfg(feature = "gmp-backend")]
mod gmp;
#[cfg(feature = "openssl-backend")]
mod openssl;

use num_bigint::BigUint;

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

    /// `base^exponent mod modulus`, constant time in `exponent`, where `exponent` is a
    /// secret of fixed length and `base < modulus` with the modulus odd. The result is
    /// big-endian in the modulus's length.
    fn pow_secret(&self, base: &[u8], exponent: &[u8], modulus: &[u8]) -> Result<Vec<u8>, Error>;

    /// The partial result `input^(s_i) mod N` of one appliance.
    fn partial(
        &self,
        public: &RsaPublicKey,
        share: &KeyShare,
        input: &BigUint,
    ) -> Result<BigUint, Error> {
        if input >= public.n() {
            return Err(Error::OutOfRange("partial-operation input"));
        }
        let out = self.pow_secret(
            &public.integer_to_be(input),
            share.value().as_be_bytes(),
            &public.n_be(),
        )?;
        Ok(BigUint::from_bytes_be(&out))
    }
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
