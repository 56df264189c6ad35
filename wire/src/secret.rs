//! Secret byte strings (PINs, shares): zeroized on drop, redacted when printed.

use core::fmt;

use bincode::de::read::Reader;
use bincode::de::{Decode, Decoder};
use bincode::enc::{Encode, Encoder};
use bincode::error::{DecodeError, EncodeError};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Secret bytes on the wire: a PIN or a share (a big-endian integer).
///
/// The buffer is zeroized on drop; decoding reads straight into a buffer that is zeroized
/// if decoding fails. `Debug` prints the length only and there is no `Display`. Equality
/// is constant time for equal lengths (the length is not secret). Encoded exactly like a
/// `Vec<u8>`.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret bytes. Do not log them, and wrap any copy in `Zeroizing`.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for SecretBytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretBytes {}

impl Encode for SecretBytes {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.0.as_slice().encode(encoder)
    }
}

impl<Context> Decode<Context> for SecretBytes {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let len = decode_len(decoder)?;
        let mut buf = Zeroizing::new(vec![0u8; len]);
        decoder.reader().read(&mut buf)?;
        Ok(Self(core::mem::take(&mut *buf)))
    }
}

bincode::impl_borrow_decode!(SecretBytes);

/// Decodes the length prefix of a byte string (as bincode encodes a `Vec<u8>`) and claims
/// that many bytes against the decoder's limit, so that the caller may allocate them.
pub(crate) fn decode_len<D: Decoder>(decoder: &mut D) -> Result<usize, DecodeError> {
    let len = u64::decode(decoder)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
    decoder.claim_bytes_read(len)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let pin = SecretBytes::from(b"123456".as_slice());
        assert_eq!(format!("{pin:?}"), "SecretBytes([redacted; 6 bytes])");
        let wrapped = Some(pin);
        assert!(!format!("{wrapped:?}").contains("123456"));
    }

    #[test]
    fn equality_compares_contents() {
        let a = SecretBytes::new(vec![1, 2, 3]);
        assert_eq!(a, SecretBytes::new(vec![1, 2, 3]));
        assert_ne!(a, SecretBytes::new(vec![1, 2, 4]));
        assert_ne!(a, SecretBytes::new(vec![1, 2]));
        assert_eq!(a.len(), 3);
        assert!(SecretBytes::default().is_empty());
    }

    #[test]
    fn encodes_like_a_byte_vector() {
        let config = bincode::config::standard().with_fixed_int_encoding();
        let secret = SecretBytes::new(vec![9, 8, 7]);
        let as_secret = bincode::encode_to_vec(&secret, config).unwrap();
        let as_vec = bincode::encode_to_vec(vec![9u8, 8, 7], config).unwrap();
        assert_eq!(as_secret, as_vec);
        let (back, read): (SecretBytes, usize) =
            bincode::decode_from_slice(&as_vec, config).unwrap();
        assert_eq!(back, secret);
        assert_eq!(read, as_vec.len());
    }

    #[test]
    fn decoding_a_lying_length_fails() {
        let config = bincode::config::standard()
            .with_fixed_int_encoding()
            .with_limit::<1024>();
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.push(1);
        let result: Result<(SecretBytes, usize), _> = bincode::decode_from_slice(&bytes, config);
        assert!(result.is_err());
        let mut bytes = 10u64.to_le_bytes().to_vec();
        bytes.push(1);
        let result: Result<(SecretBytes, usize), _> = bincode::decode_from_slice(&bytes, config);
        assert!(result.is_err());
    }
}
