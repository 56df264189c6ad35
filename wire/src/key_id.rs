//! Key identifiers.

use core::fmt;

use bincode::de::read::Reader;
use bincode::de::{Decode, Decoder};
use bincode::enc::{Encode, Encoder};
use bincode::error::{DecodeError, EncodeError};

use crate::Error;
use crate::limits::MAX_KEY_ID_LEN;

/// Names a threshold key across the cluster (the PKCS#11 `CKA_ID` of its objects):
/// 1 to [`MAX_KEY_ID_LEN`] bytes.
///
/// The length is checked by [`KeyId::new`] and on decode, so every `KeyId` is valid.
/// Encoded like a `Vec<u8>`. `Debug` and `Display` print it in hexadecimal.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    /// Wraps `bytes`, or fails if there are none or more than [`MAX_KEY_ID_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let bytes = bytes.into();
        if Self::valid_len(bytes.len()) {
            Ok(Self(bytes))
        } else {
            Err(Error::Invalid("key id must be 1..=64 bytes"))
        }
    }

    /// The identifier's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the identifier's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    fn valid_len(len: usize) -> bool {
        (1..=MAX_KEY_ID_LEN).contains(&len)
    }
}

impl AsRef<[u8]> for KeyId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for KeyId {
    type Error = Error;

    fn try_from(bytes: Vec<u8>) -> Result<Self, Error> {
        Self::new(bytes)
    }
}

impl TryFrom<&[u8]> for KeyId {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self, Error> {
        Self::new(bytes)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Encode for KeyId {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.0.as_slice().encode(encoder)
    }
}

impl<Context> Decode<Context> for KeyId {
    /// Checks the length before allocating anything.
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let len = u64::decode(decoder)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
        if !Self::valid_len(len) {
            return Err(DecodeError::Other("key id must be 1..=64 bytes"));
        }
        decoder.claim_bytes_read(len)?;
        let mut bytes = vec![0u8; len];
        decoder.reader().read(&mut bytes)?;
        Ok(Self(bytes))
    }
}

bincode::impl_borrow_decode!(KeyId);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> impl bincode::config::Config {
        bincode::config::standard().with_fixed_int_encoding()
    }

    #[test]
    fn constructor_checks_length() {
        assert!(KeyId::new(Vec::new()).is_err());
        assert!(KeyId::new(vec![0; 1]).is_ok());
        assert!(KeyId::new(vec![0; MAX_KEY_ID_LEN]).is_ok());
        assert!(KeyId::new(vec![0; MAX_KEY_ID_LEN + 1]).is_err());
        assert!(KeyId::try_from(&b"k"[..]).is_ok());
    }

    #[test]
    fn prints_hex() {
        let id = KeyId::new(vec![0x0a, 0xff]).unwrap();
        assert_eq!(id.to_string(), "0aff");
        assert_eq!(format!("{id:?}"), "KeyId(0aff)");
    }

    #[test]
    fn round_trips_like_a_byte_vector() {
        let id = KeyId::new(b"key-1".to_vec()).unwrap();
        let bytes = bincode::encode_to_vec(&id, config()).unwrap();
        assert_eq!(
            bytes,
            bincode::encode_to_vec(b"key-1".to_vec(), config()).unwrap()
        );
        let (back, _): (KeyId, usize) = bincode::decode_from_slice(&bytes, config()).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn decoding_rejects_bad_lengths() {
        for len in [0usize, MAX_KEY_ID_LEN + 1] {
            let bytes = bincode::encode_to_vec(vec![7u8; len], config()).unwrap();
            let result: Result<(KeyId, usize), _> = bincode::decode_from_slice(&bytes, config());
            assert!(result.is_err(), "length {len} accepted");
        }
        // A huge announced length fails before allocating.
        let bytes = u64::MAX.to_le_bytes();
        let result: Result<(KeyId, usize), _> = bincode::decode_from_slice(&bytes, config());
        assert!(result.is_err());
    }
}
