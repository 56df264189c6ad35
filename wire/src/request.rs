//! What a client (the PKCS#11 module, the `ittc` CLI) asks an appliance.

use bincode::{Decode, Encode};

use crate::limits::{
    MAX_INTEGER_LEN, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_PIN_LEN, check_len, check_sharing,
};
use crate::{Error, KeyId, ObjectId, SecretBytes, TokenObject};

/// A request to an appliance. Each is answered by one [`crate::Response`]: the one named
/// on the variant, or [`crate::Response::Error`].
///
/// The appliance decides which role (client or admin certificate, logged-in user or
/// security officer) may send which request.
///
/// `Hello` is variant 0 and its fields never change (see the crate docs).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    /// The first request on a connection. Answered by [`crate::Response::HelloInfo`], or by
    /// [`crate::ErrorCode::UnsupportedVersion`] if the appliance does not speak
    /// `protocol_version`.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        protocol_version: u16,
        /// Who is asking, for logs ("ittc-pkcs11 0.1.0 on host"), at most
        /// [`MAX_NAME_LEN`] bytes.
        client_name: String,
    },

    /// Logs the connection in as `user`. Answered by `Ok`.
    Login {
        /// Which PIN to check.
        user: UserKind,
        /// The PIN, at most [`MAX_PIN_LEN`] bytes.
        pin: SecretBytes,
    },

    /// Logs the connection out. Answered by `Ok`.
    Logout,

    /// Raises a blinded input to this appliance's share of `key_id` for `epoch`. Answered
    /// by [`crate::Response::PartialResult`].
    ///
    /// A client (logged in as the user) may use the key's active epoch only; an admin only
    /// its pending epoch (the dealer's trial operation before a commit).
    Partial {
        /// The key.
        key_id: KeyId,
        /// The share epoch the client combines for; another one gives `WrongEpoch`.
        epoch: u64,
        /// The blinded input, a big-endian integer below the modulus, at most
        /// [`MAX_INTEGER_LEN`] bytes.
        input: Vec<u8>,
    },

    /// Lists the token objects. Answered by [`crate::Response::Objects`].
    ListObjects,

    /// Reads one token object. Answered by [`crate::Response::Object`].
    GetObject {
        /// The object.
        handle: ObjectId,
    },

    /// Creates or replaces a token object. Answered by `Ok`.
    PutObject(TokenObject),

    /// Deletes a token object. Answered by `Ok`.
    DeleteObject {
        /// The object.
        handle: ObjectId,
    },

    /// Asks for the appliance's status. Answered by [`crate::Response::Status`].
    Status,

    /// Admin: stores this appliance's share of a key for an epoch. Answered by `Ok`.
    StoreShare(ShareRecord),

    /// Admin: sets a PIN (initialisation, or reset by the security officer). Answered by
    /// `Ok`.
    SetPin {
        /// Whose PIN.
        user: UserKind,
        /// The new PIN, at most [`MAX_PIN_LEN`] bytes.
        pin: SecretBytes,
    },

    /// Changes a PIN, given the old one. Answered by `Ok`.
    ChangePin {
        /// Whose PIN.
        user: UserKind,
        /// The current PIN, at most [`MAX_PIN_LEN`] bytes.
        old: SecretBytes,
        /// The new PIN, at most [`MAX_PIN_LEN`] bytes.
        new: SecretBytes,
    },

    /// Admin: deletes a key and all its shares. Answered by `Ok`.
    DeleteKey {
        /// The key.
        key_id: KeyId,
    },

    /// Admin: makes the pending epoch of a key active (and erases the previous active
    /// share). Answered by `Ok`.
    CommitEpoch {
        /// The key.
        key_id: KeyId,
        /// The key's pending epoch; another one gives `WrongEpoch`.
        epoch: u64,
    },
}

impl Request {
    /// A short fixed name for logs and the audit log, e.g. `"partial"`. Never contains
    /// request data.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Login { .. } => "login",
            Request::Logout => "logout",
            Request::Partial { .. } => "partial",
            Request::ListObjects => "list_objects",
            Request::GetObject { .. } => "get_object",
            Request::PutObject(_) => "put_object",
            Request::DeleteObject { .. } => "delete_object",
            Request::Status => "status",
            Request::StoreShare(_) => "store_share",
            Request::SetPin { .. } => "set_pin",
            Request::ChangePin { .. } => "change_pin",
            Request::DeleteKey { .. } => "delete_key",
            Request::CommitEpoch { .. } => "commit_epoch",
        }
    }

    /// Checks the documented size limits and invariants; the codec calls it on every
    /// request it encodes or decodes.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Request::Hello { client_name, .. } => {
                check_len(client_name.len(), MAX_NAME_LEN, "client name too long")
            }
            Request::Login { pin, .. } | Request::SetPin { pin, .. } => check_pin(pin),
            Request::ChangePin { old, new, .. } => {
                check_pin(old)?;
                check_pin(new)
            }
            Request::Partial { input, .. } => {
                check_len(input.len(), MAX_INTEGER_LEN, "partial input too long")
            }
            Request::PutObject(object) => object.validate(),
            Request::StoreShare(record) => record.validate(),
            Request::Logout
            | Request::ListObjects
            | Request::GetObject { .. }
            | Request::DeleteObject { .. }
            | Request::Status
            | Request::DeleteKey { .. }
            | Request::CommitEpoch { .. } => Ok(()),
        }
    }
}

fn check_pin(pin: &SecretBytes) -> Result<(), Error> {
    check_len(pin.len(), MAX_PIN_LEN, "PIN too long")
}

/// Whose PIN: the PKCS#11 user or security officer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum UserKind {
    /// `CKU_USER`: may use keys.
    User,
    /// `CKU_SO`: may set the user PIN.
    SecurityOfficer,
}

/// One appliance's share of a key for one epoch, with the key's public part, as the
/// provisioning CLI hands it over.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ShareRecord {
    /// The key.
    pub key_id: KeyId,
    /// The key's label (`CKA_LABEL`), at most [`MAX_LABEL_LEN`] bytes.
    pub label: String,
    /// The share epoch; a refresh makes a new one.
    pub epoch: u64,
    /// This appliance's index, in `1..=parties`.
    pub index: u8,
    /// How many partials combine (`k`), in `1..=parties`.
    pub threshold: u8,
    /// How many appliances hold a share (`n`).
    pub parties: u8,
    /// The modulus `N`, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub modulus: Vec<u8>,
    /// The public exponent `e`, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub public_exponent: Vec<u8>,
    /// The share, a big-endian integer, at most [`MAX_INTEGER_LEN`] bytes.
    pub share: SecretBytes,
}

impl ShareRecord {
    /// Checks the documented size limits and `1 <= index, threshold <= parties`.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_len(self.label.len(), MAX_LABEL_LEN, "key label too long")?;
        check_sharing(Some(self.index), self.threshold, self.parties)?;
        check_len(self.modulus.len(), MAX_INTEGER_LEN, "modulus too long")?;
        check_len(
            self.public_exponent.len(),
            MAX_INTEGER_LEN,
            "public exponent too long",
        )?;
        check_len(self.share.len(), MAX_INTEGER_LEN, "share too long")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyId {
        KeyId::new(b"k".to_vec()).unwrap()
    }

    fn record() -> ShareRecord {
        ShareRecord {
            key_id: key(),
            label: "signing".into(),
            epoch: 0,
            index: 2,
            threshold: 2,
            parties: 3,
            modulus: vec![0xc5; 256],
            public_exponent: vec![1, 0, 1],
            share: SecretBytes::new(vec![0x42; 260]),
        }
    }

    #[test]
    fn kinds_are_distinct_short_names() {
        let requests = crate::fuzz::sample_requests().unwrap();
        let mut kinds: Vec<_> = requests.iter().map(Request::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            14,
            "every variant has a sample and a distinct kind"
        );
        assert!(kinds.iter().all(|k| k.len() <= 16));
    }

    #[test]
    fn commit_epoch_is_appended_after_every_older_variant() {
        // Variant indices are the encoding: new requests go at the end, so an older
        // appliance answers a newer request with BadRequest instead of misreading it.
        let commit = Request::CommitEpoch {
            key_id: key(),
            epoch: 2,
        };
        let bytes = crate::encode(&commit).unwrap();
        assert_eq!(bytes[..4], 13u32.to_le_bytes());
        assert_eq!(commit.kind(), "commit_epoch");
        assert!(commit.validate().is_ok());
        let samples = crate::fuzz::sample_requests().unwrap();
        assert_eq!(samples.last().map(Request::kind), Some("commit_epoch"));
    }

    #[test]
    fn debug_hides_pins_and_shares() {
        let login = Request::Login {
            user: UserKind::User,
            pin: SecretBytes::new(b"987654".to_vec()),
        };
        assert!(!format!("{login:?}").contains("57")); // '9' = 0x39 = 57
        let store = format!("{:?}", Request::StoreShare(record()));
        assert!(store.contains("SecretBytes([redacted; 260 bytes])"));
        assert!(!store.contains("66")); // 0x42
    }

    #[test]
    fn validate_enforces_limits() {
        assert!(Request::StoreShare(record()).validate().is_ok());
        let long_name = Request::Hello {
            protocol_version: 1,
            client_name: "x".repeat(MAX_NAME_LEN + 1),
        };
        assert!(long_name.validate().is_err());
        let long_pin = Request::ChangePin {
            user: UserKind::SecurityOfficer,
            old: SecretBytes::new(vec![0; 4]),
            new: SecretBytes::new(vec![0; MAX_PIN_LEN + 1]),
        };
        assert!(long_pin.validate().is_err());
        let long_input = Request::Partial {
            key_id: key(),
            epoch: 1,
            input: vec![1; MAX_INTEGER_LEN + 1],
        };
        assert!(long_input.validate().is_err());
        let bad_index = ShareRecord {
            index: 4,
            ..record()
        };
        assert!(Request::StoreShare(bad_index).validate().is_err());
        let bad_threshold = ShareRecord {
            threshold: 0,
            ..record()
        };
        assert!(Request::StoreShare(bad_threshold).validate().is_err());
        let long_label = ShareRecord {
            label: "l".repeat(MAX_LABEL_LEN + 1),
            ..record()
        };
        assert!(Request::StoreShare(long_label).validate().is_err());
    }
}
