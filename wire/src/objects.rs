//! Token objects: the certificates, public keys, private-key stubs and data objects that the
//! PKCS#11 module shows, stored on (and replicated to) every appliance.

use bincode::{Decode, Encode};

use crate::Error;
use crate::limits::{MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES, check_len};

/// Identifies a token object across the cluster. The module chooses it when it creates
/// the object; it is not a PKCS#11 session handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct ObjectId(pub u64);

/// The PKCS#11 class of a token object (`CKA_CLASS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ObjectClass {
    /// `CKO_CERTIFICATE`.
    Certificate,
    /// `CKO_PUBLIC_KEY`.
    PublicKey,
    /// `CKO_PRIVATE_KEY`: the attributes of a threshold key; the key itself is the shares.
    PrivateKey,
    /// `CKO_DATA`.
    Data,
}

/// One PKCS#11 attribute, as the raw bytes a `CK_ATTRIBUTE` would hold.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Attribute {
    /// The attribute type (a `CKA_*` value).
    pub kind: u64,
    /// The value, at most [`MAX_ATTRIBUTE_VALUE_LEN`] bytes.
    pub value: Vec<u8>,
}

/// A token object with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TokenObject {
    /// The object's identifier.
    pub handle: ObjectId,
    /// The object's class; also what `CKA_CLASS` says, if present.
    pub class: ObjectClass,
    /// At most [`MAX_ATTRIBUTES`] attributes.
    pub attributes: Vec<Attribute>,
}

impl TokenObject {
    /// Checks the documented size limits.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_len(
            self.attributes.len(),
            MAX_ATTRIBUTES,
            "too many attributes in a token object",
        )?;
        self.attributes.iter().try_for_each(|a| {
            check_len(
                a.value.len(),
                MAX_ATTRIBUTE_VALUE_LEN,
                "attribute value too long",
            )
        })
    }
}

/// One entry of an object listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ObjectSummary {
    /// The object's identifier.
    pub handle: ObjectId,
    /// The object's class.
    pub class: ObjectClass,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(attributes: Vec<Attribute>) -> TokenObject {
        TokenObject {
            handle: ObjectId(1),
            class: ObjectClass::Certificate,
            attributes,
        }
    }

    #[test]
    fn limits_are_enforced() {
        let attr = |len| Attribute {
            kind: 0x11,
            value: vec![0; len],
        };
        assert!(
            object(vec![attr(MAX_ATTRIBUTE_VALUE_LEN)])
                .validate()
                .is_ok()
        );
        assert!(
            object(vec![attr(MAX_ATTRIBUTE_VALUE_LEN + 1)])
                .validate()
                .is_err()
        );
        assert!(object(vec![attr(0); MAX_ATTRIBUTES]).validate().is_ok());
        assert!(
            object(vec![attr(0); MAX_ATTRIBUTES + 1])
                .validate()
                .is_err()
        );
    }
}
