//! Maximum sizes of frames, strings and vectors.
//!
//! Every limit is enforced on decode (a frame or message that breaks one is an error) and on
//! encode (so that a peer never receives what it would reject). String limits count bytes
//! of UTF-8, not characters.
//!
//! The per-field limits keep each value to what real use needs; [`MAX_FRAME`] bounds the
//! total, so a message may hit the frame limit before any field limit (an object with
//! [`MAX_ATTRIBUTES`] attributes of [`MAX_ATTRIBUTE_VALUE_LEN`] bytes each does not fit).

use crate::Error;

/// Largest frame body, in bytes (1 MiB), not counting the 4-byte length prefix.
///
/// The largest message a working cluster sends is a [`crate::TokenObject`] holding a
/// certificate: even with a value of [`MAX_ATTRIBUTE_VALUE_LEN`] (far above real
/// certificates, which stay under 16 KiB) and a few dozen other attributes it needs about
/// 70 KiB. The largest lists are smaller still: a [`crate::StatusInfo`] with [`MAX_KEYS`]
/// keys is about 90 KiB, a listing of [`MAX_OBJECTS`] summaries about 120 KiB. 1 MiB leaves
/// a margin of ten while bounding what one peer can make an appliance allocate per frame.
pub const MAX_FRAME: usize = 1 << 20;

/// Longest [`crate::KeyId`], in bytes (the shortest is 1).
pub const MAX_KEY_ID_LEN: usize = 64;

/// Longest name: `client_name`, `build_variant`, `software_version`.
pub const MAX_NAME_LEN: usize = 128;

/// Longest key label ([`crate::ShareRecord::label`], [`crate::KeyStatus::label`]).
pub const MAX_LABEL_LEN: usize = 256;

/// Longest [`crate::WireError::message`].
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// Longest PIN, in bytes. Empty PINs are allowed by the wire (PKCS#11 allows them); the
/// appliance's PIN policy decides.
pub const MAX_PIN_LEN: usize = 256;

/// Longest big-endian integer: a blinded input, a partial result, a modulus, a public
/// exponent or a share. 4096 bytes hold a 16384-bit modulus twice over, which leaves room
/// for integer shares, which are somewhat longer than the modulus.
pub const MAX_INTEGER_LEN: usize = 4096;

/// Longest key-generation round message carried by [`crate::Request::KeygenRound`]: the
/// frame less 64 KiB for the rest of the request. Appliances size their candidate batches
/// so that every message fits.
pub const MAX_KEYGEN_MESSAGE_LEN: usize = MAX_FRAME - 64 * 1024;

/// Most attributes in one [`crate::TokenObject`]. PKCS#11 objects have a few dozen.
pub const MAX_ATTRIBUTES: usize = 128;

/// Longest attribute value (64 KiB): four times the largest certificates seen in practice.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 64 * 1024;

/// Most objects in one [`crate::Response::Objects`] listing, tombstones included.
pub const MAX_OBJECTS: usize = 4096;

/// Most tombstones (deleted objects' versions) an appliance keeps; the oldest go first.
pub const MAX_TOMBSTONES: usize = 1024;

/// Most live token objects an appliance stores: with [`MAX_TOMBSTONES`], a listing never
/// exceeds [`MAX_OBJECTS`].
pub const MAX_LIVE_OBJECTS: usize = MAX_OBJECTS - MAX_TOMBSTONES;

/// Most keys in one [`crate::StatusInfo`].
pub const MAX_KEYS: usize = 256;

/// Longest certificate serial number kept on a deny-list, in bytes, without leading zero
/// bytes. RFC 5280 allows 20 octets; the cluster CA issues 20 (a hash of the subject's
/// public key); 32 leaves room for a CA that pads.
pub const MAX_SERIAL_LEN: usize = 32;

/// Most certificates on an appliance's deny-list ([`crate::RevokedCertificate`]). A
/// replaced appliance adds one; a thousand replacements outlast any cluster CA (10 years).
/// A full list refuses further revocations: start a new cluster CA then.
pub const MAX_REVOKED: usize = 1024;

/// Longest stored PIN verifier (an Argon2id PHC string, about 100 bytes) carried by
/// [`crate::PinRecord`].
pub const MAX_PIN_VERIFIER_LEN: usize = 512;

/// Checks that `len` is at most `max`; `what` names the field in the error.
pub(crate) fn check_len(len: usize, max: usize, what: &'static str) -> Result<(), Error> {
    if len <= max {
        Ok(())
    } else {
        Err(Error::Invalid(what))
    }
}

/// Checks the `index`, `threshold` and `parties` of a share: `1 <= threshold <= parties`
/// and, when given, `1 <= index <= parties`.
pub(crate) fn check_sharing(index: Option<u8>, threshold: u8, parties: u8) -> Result<(), Error> {
    if threshold == 0 || threshold > parties {
        return Err(Error::Invalid("threshold must be in 1..=parties"));
    }
    match index {
        Some(i) if i == 0 || i > parties => Err(Error::Invalid("index must be in 1..=parties")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_len_is_inclusive() {
        assert!(check_len(3, 3, "x").is_ok());
        assert!(matches!(check_len(4, 3, "x"), Err(Error::Invalid("x"))));
    }

    #[test]
    fn sharing_parameters_must_be_consistent() {
        assert!(check_sharing(Some(1), 2, 3).is_ok());
        assert!(check_sharing(Some(3), 3, 3).is_ok());
        assert!(check_sharing(None, 1, 1).is_ok());
        assert!(check_sharing(Some(1), 0, 3).is_err());
        assert!(check_sharing(Some(1), 4, 3).is_err());
        assert!(check_sharing(Some(0), 2, 3).is_err());
        assert!(check_sharing(Some(4), 2, 3).is_err());
    }
}
