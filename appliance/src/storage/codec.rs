//! How stored values become bytes: bincode 2 with the wire's conventions (little-endian,
//! fixed-size integers, so every value has exactly one encoding) and a decode limit, so a
//! corrupt length in the database cannot make the appliance allocate without bound.

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use bincode::{Decode, Encode};

use super::StorageError;

/// Largest stored value that decodes: four times the wire's frame limit, far above any
/// record this module writes (the largest is a token object, bounded by the frame).
const MAX_VALUE: usize = 4 * ittc_wire::MAX_FRAME;

type StoreConfig = Configuration<LittleEndian, Fixint, Limit<MAX_VALUE>>;

const CONFIG: StoreConfig = config::standard()
    .with_fixed_int_encoding()
    .with_limit::<MAX_VALUE>();

/// Encodes a value for the database (or for the audit chain's hash input).
pub(super) fn encode<T: Encode>(value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::encode_to_vec(value, CONFIG)
        .map_err(|err| StorageError::Db(format!("cannot encode a stored value: {err}")))
}

/// Decodes exactly one `T` from `bytes`; `what` names the record in the error.
pub(super) fn decode<T: Decode<()>>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    let (value, read) = decode_prefix(bytes, what)?;
    if read != bytes.len() {
        return Err(StorageError::Corrupt(format!(
            "{what}: {} trailing bytes",
            bytes.len().saturating_sub(read)
        )));
    }
    Ok(value)
}

/// Decodes a `T` from the start of `bytes`, ignoring what follows; returns it and the
/// number of bytes read.
pub(super) fn decode_prefix<T: Decode<()>>(
    bytes: &[u8],
    what: &str,
) -> Result<(T, usize), StorageError> {
    bincode::decode_from_slice(bytes, CONFIG)
        .map_err(|err| StorageError::Corrupt(format!("{what} does not decode: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let bytes = encode(&(7u64, String::from("x"))).unwrap();
        assert_eq!(bytes.len(), 8 + 8 + 1, "fixed-size integers");
        let back: (u64, String) = decode(&bytes, "pair").unwrap();
        assert_eq!(back, (7, "x".into()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<(u64, String)>(&longer, "pair"),
            Err(StorageError::Corrupt(_))
        ));
        let (prefix, read): (u64, usize) = decode_prefix(&longer, "u64").unwrap();
        assert_eq!((prefix, read), (7, 8));
    }

    #[test]
    fn lying_lengths_fail_without_allocating() {
        let bytes = u64::MAX.to_le_bytes();
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, "vec"),
            Err(StorageError::Corrupt(_))
        ));
    }
}
