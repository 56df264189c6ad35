//! The GMP backend: GMP's `mpz_powm_sec` through rug's [`Integer::secure_pow_mod`], linked
//! to the system's libgmp (feature `gmp-backend`).
//!
//! # A fixed-length exponent
//!
//! `mpz_powm_sec` is built to take the same time and make the same cache accesses for any
//! two arguments of the same size (the GMP manual), and its size of the exponent is the
//! number of limbs the integer occupies. A GMP integer keeps no leading zero limbs, so a
//! share that happens to start with a zero limb would take fewer steps than its neighbours:
//! the exponentiation would show whether the share is short. So GMP never sees the share
//! `s` alone but `2^L + s`, where `L` is eight times the share's byte length, which is
//! public and the same for every share of a key ([`crate::SharingParams::share_len`]): its
//! top bit is bit `L` whatever `s` is, so its limb count, GMP's window size and the number
//! of windows depend on `L` alone. The bytes are read into GMP with a leading `0x01` byte,
//! so that even the import does no work that depends on leading zeros. The offset comes
//! back out with public values only, `c^s = c^(2^L + s) · (c^-1)^(2^L) mod N`, which costs
//! a second exponentiation (public, also done with `mpz_powm_sec`) and an inversion.
//!
//! A base without an inverse (zero, or one that shares a prime factor with the modulus,
//! which for an RSA modulus means knowing its factorisation) cannot have the offset taken
//! out. It is raised to `s` itself, so there the number of limbs of `s` does show: this
//! never happens to a blinded input, and an attacker who can make it happen already holds
//! a factor of `N`.
//!
//! # What is wiped and what is not
//!
//! rug frees a GMP integer without clearing its limbs, and there is no `unsafe` here to
//! clear them with. What is wiped:
//!
//! * the copy of the exponent's bytes with the `0x01` in front ([`Zeroizing`]);
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
//! exponent's bits; both are released without being cleared. The result and
//! `c^(2^L + s)` are not secret beyond the partial itself. The caller's bytes of the share
//! are the caller's to wipe.

use rug::integer::Order;
use rug::{Assign, Integer};
use zeroize::Zeroizing;

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
    /// The big-endian `prefix` followed by `bytes`, as one integer. Errors if its capacity
    /// does not fit a `u32` (which no share comes near).
    fn from_be(prefix: &[u8], bytes: &[u8]) -> Result<Self, Error> {
        let mut joined = Zeroizing::new(Vec::with_capacity(prefix.len() + bytes.len()));
        joined.extend_from_slice(prefix);
        joined.extend_from_slice(bytes);
        // Room for exactly the limbs the digits need: mpz_import writes into it.
        let value = Integer::from_digits(joined.as_slice(), Order::Msf);
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
        let offset_bits = u32::try_from(exponent.len())
            .ok()
            .and_then(|len| len.checked_mul(8))
            .ok_or(Error::OutOfRange("exponent"))?;
        let result = match b.clone().invert(&m) {
            Ok(inverse) => {
                // 2^L + s: bit L is set, so the limb count is that of L + 1 bits.
                let raised = {
                    let offset_exponent = SecretInteger::from_be(&[1], exponent)?;
                    b.secure_pow_mod(&offset_exponent.value, &m)
                };
                let correction = inverse.secure_pow_mod(&(Integer::from(1) << offset_bits), &m);
                (raised * correction) % &m
            }
            Err(_) => {
                // No inverse: s itself (see the module docs). secure_pow_mod wants s > 0.
                let s = SecretInteger::from_be(&[], exponent)?;
                if s.value.cmp0().is_eq() {
                    Integer::from(1) % &m
                } else {
                    b.secure_pow_mod(&s.value, &m)
                }
            }
        };
        to_be_padded(&result, modulus.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn gmp_sees_every_exponent_of_a_length_as_the_same_size() {
        // What mpz_powm_sec's running time follows: the exponent's limb count (from its top
        // bit). With the offset it is that of 8 × len + 1 bits for zero, one, all ones and
        // a share-like value alike.
        let len = 273;
        let mut one = vec![0u8; len];
        one[len - 1] = 1;
        let mut short = vec![0x5a; len];
        short[..17].fill(0);
        for exponent in [vec![0u8; len], one, short, vec![0xff; len]] {
            let offset = SecretInteger::from_be(&[1], &exponent).unwrap();
            assert_eq!(offset.value.significant_bits() as usize, 8 * len + 1);
        }
    }

    #[test]
    fn the_overwrite_lands_on_the_secret_s_own_limbs() {
        for len in [0usize, 1, 7, 8, 9, 31, 32, 33, 273] {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) | 1).collect();
            let mut secret = SecretInteger::from_be(&[1], &bytes).unwrap();
            // The import filled the allocation it was made with: no limb to spare or grow.
            let limbs = (len + 1).div_ceil(8).max(1);
            assert_eq!(secret.value.capacity(), limbs * 64, "{len} bytes");
            assert_eq!(secret.capacity as usize, limbs * 64);
            let mut expected = vec![1u8];
            expected.extend_from_slice(&bytes);
            assert_eq!(secret.value.to_digits::<u8>(Order::Msf), expected);

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
