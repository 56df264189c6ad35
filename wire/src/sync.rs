//! The cluster's public state as one appliance hands it to another that starts empty (a
//! replaced appliance): the token objects, the PIN verifiers with their failure counts,
//! and the certificate deny-list. Keys and shares are not part of it.

use bincode::{Decode, Encode};

use crate::limits::{MAX_OBJECTS, MAX_PIN_VERIFIER_LEN, MAX_REVOKED, check_len};
use crate::revocation::RevokedCertificate;
use crate::{Error, ObjectId, ObjectRecord, SecretBytes, UserKind};

/// One PIN as an appliance stores it: the verifier, never the PIN.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PinRecord {
    /// Whose PIN.
    pub user: UserKind,
    /// The Argon2id PHC string (salt, parameters and hash), at most
    /// [`MAX_PIN_VERIFIER_LEN`] bytes. A slow salted hash, but still what an attacker would
    /// need to guess the PIN offline: it travels as a secret and is never logged.
    pub verifier: SecretBytes,
    /// Wrong attempts in a row so far.
    pub failures: u32,
    /// Whether the PIN is locked.
    pub locked: bool,
}

/// One page of an appliance's public state, the answer to
/// [`crate::Request::PublicState`]. The first page (`from: None`) carries the PIN records
/// and the deny-list; every page carries token objects in handle order, as many as fit in
/// about half a frame (the first page may have none if its first object does not fit next
/// to the rest).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PublicState {
    /// The PIN records, at most one per [`UserKind`]; empty after the first page.
    pub pins: Vec<PinRecord>,
    /// The certificate deny-list, at most [`MAX_REVOKED`] entries; empty after the first
    /// page.
    pub revoked: Vec<RevokedCertificate>,
    /// Token objects with handles from the request's `from` on, in handle order, at most
    /// [`MAX_OBJECTS`], with their versions; tombstones included.
    pub objects: Vec<ObjectRecord>,
    /// Where the next page starts (ask again with `from` = this), or `None` after the
    /// last object.
    pub next: Option<ObjectId>,
}

impl PublicState {
    /// Checks the documented limits.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_len(self.pins.len(), 2, "more than two PIN records")?;
        for pin in &self.pins {
            check_len(
                pin.verifier.len(),
                MAX_PIN_VERIFIER_LEN,
                "PIN verifier too long",
            )?;
        }
        check_len(self.revoked.len(), MAX_REVOKED, "deny-list too long")?;
        self.revoked
            .iter()
            .try_for_each(RevokedCertificate::validate)?;
        check_len(self.objects.len(), MAX_OBJECTS, "too many objects")?;
        self.objects.iter().try_for_each(ObjectRecord::validate)
    }
}
