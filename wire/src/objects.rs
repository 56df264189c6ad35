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

/// The version of a stored token object (docs/pkcs11.md, "Token objects across
/// appliances"). Versions are ordered by `counter`, then `writer`; an appliance keeps the
/// newest version of each object it is sent, and a reader takes the newest among the
/// appliances it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct ObjectVersion {
    /// The writer's clock in milliseconds since the Unix epoch, or one more than the
    /// newest version it read, whichever is larger: so a write is newer than every version
    /// its writer saw, and in practice than older writes of writers that read nothing.
    pub counter: u64,
    /// A random number of the writer's: two writes with the same counter are ordered, and
    /// every appliance orders them alike.
    pub writer: u64,
}

impl ObjectVersion {
    /// The version of an object stored before objects had versions: older than any write.
    pub const ORIGINAL: Self = Self {
        counter: 0,
        writer: 0,
    };

    /// The version of a write now (by the system clock) after having read `seen`, by a
    /// writer that drew the random number `writer`: [`ObjectVersion::after`].
    pub fn next(seen: Option<ObjectVersion>, writer: u64) -> Self {
        Self::after(seen, crate::now_unix_ms(), writer)
    }

    /// The version of a write after having read `seen` (`None`: the writer read no
    /// version of the object), at `now_unix_ms`, by a writer that drew `writer`.
    pub fn after(seen: Option<ObjectVersion>, now_unix_ms: u64, writer: u64) -> Self {
        let floor = seen.map_or(1, |v| v.counter.saturating_add(1));
        Self {
            counter: now_unix_ms.max(floor),
            writer,
        }
    }
}

/// A token object as an appliance stores it: its version, and its attributes unless it
/// was deleted (a tombstone, kept so that a stale copy elsewhere cannot bring it back).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ObjectRecord {
    /// The object's identifier.
    pub handle: ObjectId,
    /// The version stored.
    pub version: ObjectVersion,
    /// The object, or `None` if this version deleted it.
    pub object: Option<TokenObject>,
}

impl ObjectRecord {
    /// Checks the documented size limits and that the object carries the record's handle.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match &self.object {
            Some(object) if object.handle != self.handle => {
                Err(Error::Invalid("object record under another handle"))
            }
            Some(object) => object.validate(),
            None => Ok(()),
        }
    }
}

/// One entry of an object listing: every object an appliance stores, deleted ones
/// (tombstones) included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ObjectSummary {
    /// The object's identifier.
    pub handle: ObjectId,
    /// The version stored.
    pub version: ObjectVersion,
    /// The object's class, or `None` if this version deleted it.
    pub class: Option<ObjectClass>,
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
    fn a_write_is_newer_than_what_its_writer_read() {
        let read = ObjectVersion {
            counter: 5_000,
            writer: u64::MAX,
        };
        // A clock behind the version read: one more than it.
        let next = ObjectVersion::after(Some(read), 10, 0);
        assert_eq!(next.counter, 5_001);
        assert!(next > read);
        // A clock ahead: the clock.
        assert_eq!(ObjectVersion::after(Some(read), 9_000, 0).counter, 9_000);
        // Nothing read: newer than an object stored before versions, whatever the clock.
        assert!(ObjectVersion::after(None, 0, 0) > ObjectVersion::ORIGINAL);
        // The same counter: the writers' numbers decide, the same way everywhere.
        let a = ObjectVersion::after(Some(read), 0, 1);
        let b = ObjectVersion::after(Some(read), 0, 2);
        assert!(a < b);
        assert_eq!(
            ObjectVersion::after(
                Some(ObjectVersion {
                    counter: u64::MAX,
                    writer: 0
                }),
                0,
                0
            )
            .counter,
            u64::MAX
        );
    }

    #[test]
    fn a_record_carries_its_objects_handle() {
        let record = |handle| ObjectRecord {
            handle: ObjectId(handle),
            version: ObjectVersion::ORIGINAL,
            object: Some(object(Vec::new())),
        };
        assert!(record(1).validate().is_ok());
        assert!(record(2).validate().is_err());
        let tombstone = ObjectRecord {
            object: None,
            ..record(2)
        };
        assert!(tombstone.validate().is_ok());
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
