//! Secret integers: zeroized on drop, redacted when printed.

use core::fmt;

use crypto_bigint::BoxedUint;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret non-negative integer (a private exponent, a share, a polynomial coefficient),
/// stored big-endian in a buffer of fixed length so that the length says nothing about the
/// value.
///
/// The bytes are zeroized on drop. `Debug` prints the length only; there is no `Display`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretInt {
    be: Vec<u8>,
}

impl SecretInt {
    /// Takes ownership of a big-endian encoding. Leading zero bytes are kept: they fix the
    /// length that every encoding of this kind of secret has.
    pub fn from_be_bytes(be: Vec<u8>) -> Self {
        Self { be }
    }

    /// Copies a big-endian encoding, left-padding it with zeros to `len` bytes.
    ///
    /// Returns `None` if the value needs more than `len` bytes.
    pub fn from_be_slice_padded(bytes: &[u8], len: usize) -> Option<Self> {
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..)?;
        if significant.len() > len {
            return None;
        }
        let mut be = vec![0u8; len];
        be.get_mut(len - significant.len()..)?
            .copy_from_slice(significant);
        Some(Self { be })
    }

    /// The big-endian encoding, with its fixed length.
    pub fn as_be_bytes(&self) -> &[u8] {
        &self.be
    }

    /// Length of the encoding in bytes.
    pub fn len(&self) -> usize {
        self.be.len()
    }

    /// Whether the encoding is empty (it never is for a value made by this crate).
    pub fn is_empty(&self) -> bool {
        self.be.is_empty()
    }

    /// The value as a constant-time big integer with `bits` of precision (rounded up to a
    /// whole limb), or `None` if it does not fit. The caller owns the zeroizing wrapper.
    pub(crate) fn to_boxed(&self, bits: u32) -> Option<Zeroizing<BoxedUint>> {
        let limb_bits = crypto_bigint::Limb::BITS;
        let bits = bits.div_ceil(limb_bits) * limb_bits;
        let len = usize::try_from(bits / 8).ok()?;
        let padded = Zeroizing::new(Self::from_be_slice_padded(&self.be, len)?);
        BoxedUint::from_be_slice(padded.as_be_bytes(), bits)
            .ok()
            .map(Zeroizing::new)
    }

    /// Encodes a constant-time big integer into `len` bytes (its full precision must fit).
    pub(crate) fn from_boxed(value: &BoxedUint, len: usize) -> Option<Self> {
        let be = Zeroizing::new(value.to_be_bytes());
        Self::from_be_slice_padded(&be, len)
    }
}

impl fmt::Debug for SecretInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretInt([redacted; {} bytes])", self.be.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretInt::from_be_bytes(vec![0xde, 0xad, 0xbe, 0xef]);
        let printed = format!("{s:?}");
        assert_eq!(printed, "SecretInt([redacted; 4 bytes])");
        assert!(!printed.to_lowercase().contains("dead"));
    }

    #[test]
    fn padding_keeps_value_and_rejects_overflow() {
        let s = SecretInt::from_be_slice_padded(&[0, 0, 1, 2], 4).unwrap();
        assert_eq!(s.as_be_bytes(), &[0, 0, 1, 2]);
        let s = SecretInt::from_be_slice_padded(&[0, 0, 1, 2], 2).unwrap();
        assert_eq!(s.as_be_bytes(), &[1, 2]);
        assert!(SecretInt::from_be_slice_padded(&[1, 2, 3], 2).is_none());
    }

    #[test]
    fn boxed_round_trip() {
        let s = SecretInt::from_be_slice_padded(&[7, 0, 0, 0, 0, 0, 0, 0, 9], 16).unwrap();
        let b = s.to_boxed(100).unwrap();
        assert_eq!(b.bits_precision(), 128);
        let back = SecretInt::from_boxed(&b, 16).unwrap();
        assert_eq!(back, s);
        assert!(s.to_boxed(60).is_none());
    }
}
