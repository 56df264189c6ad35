//! Paddings: the encodings that turn a digest or a message into the input of the raw RSA
//! operation, and the decodings that turn its output back.
//!
//! Signing and decryption are the same raw operation `c^d mod N` for the threshold machinery, so
//! the PKCS#11 module pads before it blinds and asks the appliances, and unpads after it
//! combines. This module holds those encodings, all from RFC 8017:
//!
//! * signatures: EMSA-PKCS1-v1_5 with a `DigestInfo` built from a digest
//!   ([`pkcs1v15_sign`], `CKM_SHA*_RSA_PKCS`) or taken verbatim from the caller
//!   ([`pkcs1v15_sign_raw`], `CKM_RSA_PKCS`), EMSA-PSS with any salt length that fits
//!   ([`pss_encode`], `CKM_RSA_PKCS_PSS`), and raw ([`raw`], `CKM_RSA_X_509`);
//! * signature checks on `s^e mod N`, for verifying locally with the public key
//!   ([`pkcs1v15_verify`], [`pkcs1v15_verify_raw`], [`pss_verify`]);
//! * encryption with the public key: EME-PKCS1-v1_5 ([`pkcs1v15_encrypt_pad`]) and EME-OAEP
//!   ([`oaep_encode`]);
//! * decryption: EME-PKCS1-v1_5 ([`pkcs1v15_decrypt`]) and EME-OAEP ([`oaep_decrypt`]) decoding.
//!
//! Every encoding returns exactly `k` bytes (`k` = the modulus length in bytes), big-endian, ready
//! for the raw operation; every decoding takes `k` bytes.
//!
//! The two decryption decoders are constant time with respect to the plaintext and the padding:
//! they scan the whole buffer, combine every check into one [`subtle::Choice`], and branch once,
//! at the end. Every failure is the same [`PaddingError::Decryption`], which says nothing about
//! what was wrong. Intermediate buffers derived from the plaintext are zeroized.
//!
//! What this module does not do: the RSA operation itself, range checks of an input against
//! the modulus `N` (the caller holds `N`; [`raw`] only checks the length), or any defence
//! against a Bleichenbacher oracle beyond not leaking *why* PKCS#1 v1.5 decoding failed: a
//! caller that reports success or failure of `CKM_RSA_PKCS` decryption to an attacker still
//! gives them an oracle, as any PKCS#11 token does. Hash choice is the caller's policy too:
//! SHA-1 is accepted everywhere.

mod hash;
mod mgf;
mod oaep;
mod pkcs1v15;
mod pss;

pub use hash::{HashAlg, Hasher};
pub use oaep::{oaep_decrypt, oaep_encode};
pub use pkcs1v15::{
    pkcs1v15_decrypt, pkcs1v15_encrypt_pad, pkcs1v15_sign, pkcs1v15_sign_raw, pkcs1v15_verify,
    pkcs1v15_verify_raw,
};
pub use pss::{pss_encode, pss_verify};

/// Why a padding operation failed.
///
/// Every variant except [`PaddingError::BadSignature`] and [`PaddingError::Decryption`] is a
/// caller error, detectable from public lengths alone. Decryption failures of any kind are the
/// single variant [`PaddingError::Decryption`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaddingError {
    /// The message, `DigestInfo` or raw input does not fit in the modulus with this padding.
    #[error("input of {len} bytes is too long: at most {max} bytes fit with this padding")]
    MessageTooLong {
        /// Length of the input.
        len: usize,
        /// Longest input that fits (0 if none does).
        max: usize,
    },
    /// The digest given is not as long as the chosen hash's output.
    #[error("digest of {len} bytes given, the hash produces {expected}")]
    WrongDigestLength {
        /// Length of the digest given.
        len: usize,
        /// Output length of the hash.
        expected: usize,
    },
    /// The PSS salt does not fit in the modulus with this hash.
    #[error("PSS salt of {len} bytes is too long: at most {max} bytes fit")]
    SaltTooLong {
        /// Salt length asked for.
        len: usize,
        /// Longest salt that fits (0 if none does).
        max: usize,
    },
    /// The modulus is too small for this padding and hash, whatever the input.
    #[error("the modulus is too small for this padding")]
    ModulusTooSmall,
    /// A buffer that must be exactly the modulus length is not.
    #[error("input of {len} bytes given where the modulus length, {expected} bytes, is required")]
    InvalidLength {
        /// Length of the buffer given.
        len: usize,
        /// The modulus length in bytes.
        expected: usize,
    },
    /// The random number generator kept producing degenerate output.
    #[error("the random number generator failed")]
    RandomFailure,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// Decryption failed. Deliberately says nothing about why.
    #[error("decryption failed")]
    Decryption,
}

/// The length in bytes, `k`, of a modulus of `mod_bits` bits.
pub const fn modulus_len(mod_bits: usize) -> usize {
    mod_bits.div_ceil(8)
}

/// `CKM_RSA_X_509`: `input` left-padded with zero bytes to `k` bytes.
///
/// Fails with [`PaddingError::MessageTooLong`] if `input` is longer than `k`. An input of
/// exactly `k` bytes may still be `≥ N`; checking that is the caller's job, since only it holds
/// the modulus.
pub fn raw(input: &[u8], k: usize) -> Result<Vec<u8>, PaddingError> {
    let pad = k
        .checked_sub(input.len())
        .ok_or(PaddingError::MessageTooLong {
            len: input.len(),
            max: k,
        })?;
    let mut em = vec![0u8; pad];
    em.extend_from_slice(input);
    Ok(em)
}

/// Fails with [`PaddingError::WrongDigestLength`] unless `digest` is as long as `hash`'s
/// output.
fn check_digest_len(hash: HashAlg, digest: &[u8]) -> Result<(), PaddingError> {
    if digest.len() == hash.output_len() {
        Ok(())
    } else {
        Err(PaddingError::WrongDigestLength {
            len: digest.len(),
            expected: hash.output_len(),
        })
    }
}

/// The end of both decryption decoders: one branch on the combined validity, then the
/// message after the separator at `sep` (no longer secret once the padding is valid).
fn message_after(
    valid: subtle::Choice,
    sep: u64,
    block: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, PaddingError> {
    if !bool::from(valid) {
        return Err(PaddingError::Decryption);
    }
    let start = usize::try_from(sep)
        .ok()
        .and_then(|s| s.checked_add(1))
        .ok_or(PaddingError::Decryption)?;
    let msg = block.get(start..).ok_or(PaddingError::Decryption)?;
    Ok(zeroize::Zeroizing::new(msg.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_left_pads_to_k() {
        assert_eq!(raw(&[1, 2, 3], 5), Ok(vec![0, 0, 1, 2, 3]));
        assert_eq!(raw(&[1, 2, 3], 3), Ok(vec![1, 2, 3]));
        assert_eq!(raw(&[], 2), Ok(vec![0, 0]));
        assert_eq!(
            raw(&[1, 2, 3], 2),
            Err(PaddingError::MessageTooLong { len: 3, max: 2 })
        );
    }

    #[test]
    fn modulus_len_rounds_up() {
        assert_eq!(modulus_len(2048), 256);
        assert_eq!(modulus_len(2047), 256);
        assert_eq!(modulus_len(2049), 257);
        assert_eq!(modulus_len(0), 0);
    }

    /// The decryption error's message carries no detail.
    #[test]
    fn decryption_error_says_nothing() {
        assert_eq!(PaddingError::Decryption.to_string(), "decryption failed");
    }
}
