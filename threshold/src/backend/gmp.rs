//! The GMP backend: GMP's `mpz_powm_sec` through rug's [`Integer::secure_pow_mod`], linked
//! to the system's libgmp (feature `gmp-backend`).
//!
//! # The exponent's length
//!
//! `mpz_powm_sec` is built to take the same time and make the same cache accesses for any
//! two arguments of the same size (the GMP manual), and its size of the exponent is the
//! number of limbs the integer occupies. A GMP integer keeps no leading zero limbs, so it
//! must be given an exponent whose length says nothing about the share: a partial's
//! exponent `s_i + i·2^L` starts with the index's byte ([`super::partial_exponent`]), so
//! its limb count depends on public values only.
//!
//! # What is wiped and what is not
//!
//! rug frees a GMP integer without clearing its limbs, and there is no `unsafe` here to
//! clear them with. What is wiped:
//!
//! * the limbs of the GMP integer that holds the exponent. It is made with room for
//!   exactly the limbs it needs, so the import writes into that one allocation; before it
//!   is freed it is assigned a value with a limb in every place of that allocation (all
//!   ones), which `mpz_set` copies into the same memory because it fits (GMP reallocates
//!   only for a value larger than the allocation), and then zero.
//!
//! What is not, because it is GMP's: the temporaries of `mpz_powm_sec` and
//! `mpn_sec_powm`. The window values of the exponent pass through registers and the stack,
//! and the scratch area (on the stack below GMP's `alloca` limit, else on the heap) holds
//! the table of powers of the base and the running power `c^t` for each prefix `t` of the
//! exponent's bits; both are released without being cleared. The result is the partial
//! itself. The caller's bytes of the exponent are the caller's to wipe
//! ([`super::partial_exponent`] gives them in a `Zeroizing`).

use rug::integer::Order;
use rug::{Assign, Integer};

use super::PartialExp;
use crate::Error;

/// GMP's side-channel-silent exponentiation (`mpz_powm_sec`) over an exponent of fixed length.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gmp;

/// A secret held in a GMP integer whose limbs are overwritten before GMP frees them.
struct SecretInteger {
    value: Integer,
    /// The capacity in bits: whole limbs, all of the allocation.
    capacity: u32,
}

impl SecretInteger {
    /// The big-endian `bytes` as an integer. Errors if its capacity does not fit a `u32`
    /// (which no share comes near).
    fn from_be(bytes: &[u8]) -> Result<Self, Error> {
        // Room for exactly the limbs the digits need: mpz_import writes into it.
        let value = Integer::from_digits(bytes, Order::Msf);
        let capacity =
            u32::try_from(value.capacity()).map_err(|_| Error::OutOfRange("exponent"))?;
        Ok(Self { value, capacity })
    }
}

impl Drop for SecretInteger {
    fn drop(&mut self) {
        overwrite(&mut self.value, self.capacity);
    }
}

/// Writes over every limb of `secret`'s allocation in place: a value with exactly as many
/// limbs as the allocation holds (all ones, `capacity` bits), then zero. `mpz_set` copies
/// into the existing limbs when the value fits them and reallocates only when it does
/// not, so the all-ones value lands on the secret's own memory.
fn overwrite(secret: &mut Integer, capacity: u32) {
    let ones = (Integer::from(1) << capacity) - 1u32;
    secret.assign(&ones);
    secret.assign(0u32);
}

fn to_be_padded(value: &Integer, len: usize) -> Result<Vec<u8>, Error> {
    if value.significant_digits::<u8>() > len {
        return Err(Error::Backend("GMP: result longer than the modulus".into()));
    }
    let mut out = vec![0u8; len];
    value.write_digits(&mut out, Order::Msf);
    Ok(out)
}

impl PartialExp for Gmp {
    fn name(&self) -> &'static str {
        "gmp"
    }

    fn pow_secret(&self, base: &[u8], exponent: &[u8], modulus: &[u8]) -> Result<Vec<u8>, Error> {
        let m = Integer::from_digits(modulus, Order::Msf);
        if m.is_even() {
            return Err(Error::OutOfRange("modulus (must be odd)"));
        }
        let b = Integer::from_digits(base, Order::Msf);
        if b >= m {
            return Err(Error::OutOfRange("base"));
        }
        let e = SecretInteger::from_be(exponent)?;
        // mpz_powm_sec wants a positive exponent; x^0 = 1 (0 if the modulus is 1).
        let result = if e.value.cmp0().is_eq() {
            Integer::from(1) % &m
        } else {
            b.secure_pow_mod(&e.value, &m)
        };
        to_be_padded(&result, modulus.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn gmp_sees_every_partial_exponent_of_a_share_length_as_the_same_size() {
        // What mpz_powm_sec's running time follows: the exponent's limb count (from its top
        // bit). A partial's exponent has 8 × len + bits(i) bits for a share of zero, one,
        // one that starts with a zero limb and all ones alike.
        let len = 273;
        let mut one = vec![0u8; len];
        one[len - 1] = 1;
        let mut short = vec![0x5a; len];
        short[..17].fill(0);
        for share in [vec![0u8; len], one, short, vec![0xff; len]] {
            for index in [1usize, 2, 3, 7, 16] {
                let exponent = super::super::offset_exponent(index, &share);
                let e = SecretInteger::from_be(&exponent).unwrap();
                let index_bits = usize::BITS - index.leading_zeros();
                assert_eq!(e.value.significant_bits(), 8 * len as u32 + index_bits);
            }
        }
    }

    #[test]
    fn the_overwrite_lands_on_the_secret_s_own_limbs() {
        for len in [0usize, 1, 7, 8, 9, 31, 32, 33, 273] {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) | 1).collect();
            let mut joined = vec![1u8];
            joined.extend_from_slice(&bytes);
            let mut secret = SecretInteger::from_be(&joined).unwrap();
            // The import filled the allocation it was made with: no limb to spare or grow.
            let limbs = (len + 1).div_ceil(8).max(1);
            assert_eq!(secret.value.capacity(), limbs * 64, "{len} bytes");
            assert_eq!(secret.capacity as usize, limbs * 64);
            assert_eq!(secret.value.to_digits::<u8>(Order::Msf), joined);

            // All ones over the whole capacity, with the capacity unchanged: mpz_set wrote
            // every limb of the one allocation (it reallocates only to grow, which would
            // change the capacity).
            let capacity = secret.capacity;
            let ones = (Integer::from(1) << capacity) - 1u32;
            secret.value.assign(&ones);
            assert_eq!(secret.value.capacity(), limbs * 64);
            assert_eq!(secret.value.significant_bits(), capacity);
            overwrite(&mut secret.value, capacity);
            assert_eq!(secret.value, 0);
            assert_eq!(secret.value.capacity(), limbs * 64);
        }
    }
}
