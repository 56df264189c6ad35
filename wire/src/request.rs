//! What a client (the PKCS#11 module, the `ittc` CLI) asks an appliance.

use bincode::{Decode, Encode};

use crate::limits::{
    MAX_ERROR_MESSAGE_LEN, MAX_INTEGER_LEN, MAX_KEYGEN_MESSAGE_LEN, MAX_LABEL_LEN, MAX_NAME_LEN,
    MAX_PIN_LEN, check_len, check_sharing,
};
use crate::refresh::{MAX_REFRESH_MESSAGE_LEN, RecoverSpec, RefreshSpec, RefreshStepKind};
use crate::revocation::{check_label, check_serial};
use crate::{Error, KeyId, MAX_APPLIANCES, ObjectId, ObjectVersion, SecretBytes, TokenObject};

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

    /// Creates or replaces a token object, unless a newer version of it is stored.
    /// Answered by `Ok` (also if exactly this version is stored), or
    /// [`crate::ErrorCode::Superseded`].
    PutObject {
        /// The object.
        object: TokenObject,
        /// Its version: newer than every version the writer read.
        version: ObjectVersion,
    },

    /// Deletes a token object, leaving a tombstone of this version, unless a newer version
    /// of it is stored. Answered by `Ok` (also if the appliance never had the object), or
    /// [`crate::ErrorCode::Superseded`].
    DeleteObject {
        /// The object.
        handle: ObjectId,
        /// The tombstone's version: newer than every version the writer read.
        version: ObjectVersion,
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

    /// Admin, or a client logged in as the user: this appliance takes part in generating a
    /// new key without a dealer (Boneh–Franklin, with the other participants over peer
    /// connections) and stores its share as the key's pending epoch
    /// ([`KEYGEN_EPOCH`]). The coordinator sends the same request to every participant at
    /// once; each answers [`crate::Response::KeyGenerated`] when the protocol is done, or
    /// an error (no share is stored then). The coordinator then checks the shares with a
    /// trial operation and commits the epoch everywhere, or deletes the key everywhere.
    GenerateKey(KeygenSpec),

    /// Appliance to appliance: one round message of a key generation, for the session
    /// named. Answered by `Ok` once queued. Only the appliance `from` may send it, and only
    /// for a session both appliances take part in.
    KeygenRound {
        /// The session ([`KeygenSpec::session`]).
        session: [u8; 16],
        /// The sender's appliance index.
        from: u8,
        /// The protocol round the message belongs to.
        round: u32,
        /// The bincode-encoded `ittc_threshold::keygen::Message`, at most
        /// [`MAX_KEYGEN_MESSAGE_LEN`] bytes. Secret (shares meant for the recipient).
        message: SecretBytes,
    },

    /// Appliance to appliance: the sender gave up on a key generation (an error, a timeout,
    /// an unreachable peer); the recipient stops too. Answered by `Ok`.
    KeygenAbort {
        /// The session.
        session: [u8; 16],
        /// The sender's appliance index.
        from: u8,
        /// Why, for the error message, at most [`MAX_ERROR_MESSAGE_LEN`] bytes. Never
        /// holds secret values.
        reason: String,
    },

    /// Admin, or a client logged in as the user: how far this appliance's party of a key
    /// generation in progress has got. Answered by [`crate::Response::KeygenProgress`]
    /// (public counters only), or `NotFound` for a session that is not running here (not
    /// started yet, or over). Never waits for the generation: the coordinator asks on a
    /// connection of its own while its `GenerateKey` requests run.
    KeygenProgress {
        /// The session ([`KeygenSpec::session`]).
        session: [u8; 16],
    },

    /// Admin: refresh `key_id` now, with this appliance as the coordinator (as the
    /// appliance's own schedule does). Answered by [`crate::Response::Refreshed`] when the
    /// refresh is over, or an error (the key keeps its epoch then).
    RefreshKey {
        /// The key.
        key_id: KeyId,
        /// A random session id, for [`Request::RefreshProgress`].
        session: [u8; 16],
    },

    /// Coordinator appliance to holder: take part in a refresh, store the new epoch as
    /// pending, and answer [`crate::Response::RefreshStored`] with the trial partial.
    RefreshRun(RefreshSpec),

    /// Appliance to appliance: one round message of a refresh or a recovery, numbered
    /// from 1 in the order the run has them (a refresh from additive shares: pieces, dealt
    /// values; from shares: masks, residues, pieces, dealt values; a recovery: masks).
    /// Answered by `Ok` once queued. Only the appliance `from` may send it.
    RefreshRound {
        /// The session ([`RefreshSpec::session`]).
        session: [u8; 16],
        /// The sender's appliance index.
        from: u8,
        /// The round, from 1.
        round: u8,
        /// The value, at most [`MAX_REFRESH_MESSAGE_LEN`] bytes. Secret.
        message: SecretBytes,
    },

    /// Appliance to appliance: the sender gave up on a refresh; the recipient stops too.
    /// Answered by `Ok`.
    RefreshAbort {
        /// The session.
        session: [u8; 16],
        /// The sender's appliance index.
        from: u8,
        /// Why, at most [`MAX_ERROR_MESSAGE_LEN`] bytes; never holds secret values.
        reason: String,
    },

    /// Coordinator appliance to holder: the next step of a refresh whose new epoch every
    /// holder has stored. Answered by `Ok`. Only the refresh's coordinator may send it.
    RefreshStep {
        /// The key.
        key_id: KeyId,
        /// The refresh's session.
        session: [u8; 16],
        /// The new epoch (for `Erase`, the epoch whose predecessor is erased).
        epoch: u64,
        /// What to do.
        step: RefreshStepKind,
    },

    /// Admin: how far the refresh `session` coordinated here has got. Answered by
    /// [`crate::Response::RefreshProgress`], or `NotFound` if none runs.
    RefreshProgress {
        /// The session ([`Request::RefreshKey`]).
        session: [u8; 16],
    },

    /// A holder that is behind (or new) to each of `k` holders of a key's current epoch:
    /// help rebuild my share. The helpers agree on masks among themselves
    /// ([`Request::RefreshRound`] under the same session) and each answers
    /// [`crate::Response::RecoverPart`]. Only the appliance `target` may send it.
    RecoverRun(RecoverSpec),
    /// Admin: puts the certificate with this serial on this appliance's deny-list (a
    /// replaced appliance's old certificate). From then on the appliance refuses it as a
    /// client's certificate and as a peer appliance's. Answered by `Ok`, also when the
    /// serial is on the list already; a full list ([`crate::limits::MAX_REVOKED`]) is
    /// refused.
    RevokeCertificate {
        /// The serial, big-endian without leading zero bytes
        /// ([`crate::revocation::normalize_serial`]), at most
        /// [`crate::limits::MAX_SERIAL_LEN`] bytes.
        serial: Vec<u8>,
        /// Whose certificate it is, for logs (`appliance 3`), at most [`MAX_NAME_LEN`]
        /// bytes without control characters.
        label: String,
    },

    /// Appliance to appliance: one page of this appliance's public state (token objects,
    /// PIN verifiers and failure counts, deny-list), for an appliance that starts with an
    /// empty store. Answered by [`crate::Response::PublicState`]. Only an appliance may
    /// send it.
    PublicState {
        /// `None` for the first page (which carries the PIN records and the deny-list
        /// too); then the previous page's [`crate::PublicState::next`]: the page's token
        /// objects start at this handle.
        from: Option<ObjectId>,
    },

    /// Admin: moves `key_id` to a new sharing now, with this appliance as the coordinator
    /// (it must be one of the new holders and hold the key): threshold `threshold` among
    /// `holders`. The same steps as a refresh; answered by [`crate::Response::Refreshed`]
    /// when it is over, or an error (the key keeps its sharing then).
    ReshareKey {
        /// The key.
        key_id: KeyId,
        /// A random session id, for [`Request::RefreshProgress`].
        session: [u8; 16],
        /// `k` of the new sharing.
        threshold: u8,
        /// Every holder of the new sharing, ascending, with the address the appliances
        /// reach it at (an appliance prefers its own `peers` entry).
        holders: Vec<Participant>,
    },

    /// Admin, or the appliance itself (its own certificate, as `ittc-appliance audit
    /// verify` uses on the appliance's host): check the audit chain through the export
    /// files and the store. Answered by [`crate::Response::AuditVerified`], with a broken
    /// chain reported there rather than as an error. Takes as long as reading the whole
    /// log does.
    AuditVerify,
}

/// The epoch a generated key's shares are stored under (as for an imported key).
pub const KEYGEN_EPOCH: u64 = 1;

/// A key generation, as the coordinator asks every participant for it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct KeygenSpec {
    /// A random session id, the same in the request to every participant.
    pub session: [u8; 16],
    /// The new key's id (`CKA_ID`); no appliance may hold a key with this id yet.
    pub key_id: KeyId,
    /// The key's label, at most [`MAX_LABEL_LEN`] bytes.
    pub label: String,
    /// Modulus size in bits (2048, 3072 or 4096; an appliance may allow 1024 for tests).
    pub bits: u16,
    /// The public exponent, a prime larger than the number of participants (65537).
    pub public_exponent: u64,
    /// How many partials combine (`k`), in `2..=participants`.
    pub threshold: u8,
    /// The appliances that generate the key (this one included), at least 3, ascending
    /// indices in `1..=parties`.
    pub participants: Vec<Participant>,
    /// `n` of the key: the highest index of its holders.
    pub parties: u8,
    /// Every holder of the key, ascending, ending at `parties`: the participants, and those
    /// away, who get their shares later by recovery. `1..=parties` unless a reshare left
    /// an index out of the cluster.
    pub holders: Vec<u8>,
}

/// One appliance taking part in a key generation.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Participant {
    /// Its index.
    pub index: u8,
    /// Where the others reach it (`host:port`), at most [`MAX_NAME_LEN`] bytes; an
    /// appliance prefers the address in its own `peers` configuration. The peer's
    /// certificate is checked either way, so a wrong address can only make the generation
    /// fail.
    pub address: String,
}

impl KeygenSpec {
    /// The least number of appliances a generation goes ahead with: 3 (Boneh–Franklin
    /// needs an honest majority of at least 3 parties), `k` (the key must sign at once),
    /// and more than half of the `parties` holders (as for a refresh: those away are a
    /// minority, and rebuild their shares from the others).
    pub fn quorum(threshold: u8, parties: usize) -> usize {
        usize::from(threshold).max(parties / 2 + 1).max(3)
    }

    fn validate(&self) -> Result<(), Error> {
        check_len(self.label.len(), MAX_LABEL_LEN, "key label too long")?;
        check_participant_set(&self.participants)?;
        let m = u8::try_from(self.participants.len())
            .map_err(|_| Error::Invalid("too many participants"))?;
        if m < 3 {
            return Err(Error::Invalid(
                "key generation needs at least 3 participants",
            ));
        }
        if self.threshold < 2 {
            return Err(Error::Invalid("threshold must be at least 2"));
        }
        if self.parties > MAX_APPLIANCES
            || self.holders.last() != Some(&self.parties)
            || !self.holders.windows(2).all(|w| w[0] < w[1])
            || self.holders.first() == Some(&0)
            || !self
                .participants
                .iter()
                .all(|p| self.holders.contains(&p.index))
        {
            return Err(Error::Invalid(
                "participants must be holders, and holders ascending up to parties",
            ));
        }
        check_sharing(None, self.threshold, m)
    }
}

/// Checks a set of participants: at most [`MAX_APPLIANCES`], indices ascending in
/// `1..=MAX_APPLIANCES` without repeats, addresses of bounded length.
pub(crate) fn check_participant_set(participants: &[Participant]) -> Result<(), Error> {
    check_len(
        participants.len(),
        usize::from(MAX_APPLIANCES),
        "too many participants",
    )?;
    if participants.is_empty()
        || !participants.windows(2).all(|w| w[0].index < w[1].index)
        || participants
            .iter()
            .any(|p| p.index == 0 || p.index > MAX_APPLIANCES)
    {
        return Err(Error::Invalid(
            "participants must be ascending indices in 1..=16",
        ));
    }
    for p in participants {
        check_len(
            p.address.len(),
            MAX_NAME_LEN,
            "participant address too long",
        )?;
    }
    Ok(())
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
            Request::PutObject { .. } => "put_object",
            Request::DeleteObject { .. } => "delete_object",
            Request::Status => "status",
            Request::StoreShare(_) => "store_share",
            Request::SetPin { .. } => "set_pin",
            Request::ChangePin { .. } => "change_pin",
            Request::DeleteKey { .. } => "delete_key",
            Request::CommitEpoch { .. } => "commit_epoch",
            Request::GenerateKey(_) => "generate_key",
            Request::KeygenRound { .. } => "keygen_round",
            Request::KeygenAbort { .. } => "keygen_abort",
            Request::KeygenProgress { .. } => "keygen_progress",
            Request::RefreshKey { .. } => "refresh_key",
            Request::RefreshRun(_) => "refresh_run",
            Request::RefreshRound { .. } => "refresh_round",
            Request::RefreshAbort { .. } => "refresh_abort",
            Request::RefreshStep { step, .. } => match step {
                RefreshStepKind::Ready => "refresh_ready",
                RefreshStepKind::Commit => "refresh_commit",
                RefreshStepKind::Erase => "refresh_erase",
                RefreshStepKind::Discard => "refresh_discard",
            },
            Request::RefreshProgress { .. } => "refresh_progress",
            Request::RecoverRun(_) => "recover_run",
            Request::RevokeCertificate { .. } => "revoke_cert",
            Request::PublicState { .. } => "public_state",
            Request::ReshareKey { .. } => "reshare_key",
            Request::AuditVerify => "audit_verify",
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
            Request::PutObject { object, .. } => object.validate(),
            Request::StoreShare(record) => record.validate(),
            Request::GenerateKey(spec) => spec.validate(),
            Request::KeygenRound { message, .. } => check_len(
                message.len(),
                MAX_KEYGEN_MESSAGE_LEN,
                "key-generation message too long",
            ),
            Request::KeygenAbort { reason, .. } | Request::RefreshAbort { reason, .. } => {
                check_len(reason.len(), MAX_ERROR_MESSAGE_LEN, "abort reason too long")
            }
            Request::RefreshRun(spec) => spec.validate(),
            Request::RecoverRun(spec) => spec.validate(),
            Request::RefreshRound { message, .. } => check_len(
                message.len(),
                MAX_REFRESH_MESSAGE_LEN,
                "refresh message too long",
            ),
            Request::Logout
            | Request::ListObjects
            | Request::GetObject { .. }
            | Request::DeleteObject { .. }
            | Request::Status
            | Request::DeleteKey { .. }
            | Request::CommitEpoch { .. }
            | Request::KeygenProgress { .. }
            | Request::RefreshKey { .. }
            | Request::RefreshStep { .. }
            | Request::RefreshProgress { .. }
            | Request::AuditVerify => Ok(()),
            Request::RevokeCertificate { serial, label } => {
                check_serial(serial)?;
                check_label(label)
            }
            Request::PublicState { .. } => Ok(()),
            Request::ReshareKey {
                threshold, holders, ..
            } => {
                check_participant_set(holders)?;
                if *threshold < 2 || usize::from(*threshold) > holders.len() {
                    return Err(Error::Invalid(
                        "a reshare's threshold must be in 2..=its number of holders",
                    ));
                }
                Ok(())
            }
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
    /// The appliance's additive share of the private exponent, which refreshes re-split:
    /// two's complement in the length `ittc_threshold::Bounds::additive_len` gives, at most
    /// [`MAX_INTEGER_LEN`] bytes.
    pub additive: SecretBytes,
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
        check_len(self.share.len(), MAX_INTEGER_LEN, "share too long")?;
        check_len(
            self.additive.len(),
            MAX_INTEGER_LEN,
            "additive share too long",
        )
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
            additive: SecretBytes::new(vec![0x43; 280]),
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
            29,
            "every variant has a sample and a distinct kind"
        );
        assert!(kinds.iter().all(|k| k.len() <= 16));
    }

    #[test]
    fn a_generation_may_leave_holders_away() {
        let spec = |indices: &[u8], parties: u8| KeygenSpec {
            holders: (1..=parties).collect(),
            session: [1; 16],
            key_id: key(),
            label: "k".into(),
            bits: 2048,
            public_exponent: 65537,
            threshold: 2,
            participants: indices
                .iter()
                .map(|&index| Participant {
                    index,
                    address: "127.0.0.1:7301".into(),
                })
                .collect(),
            parties,
        };
        assert!(spec(&[1, 2, 4], 5).validate().is_ok());
        assert!(spec(&[1, 2, 3], 3).validate().is_ok());
        assert!(spec(&[1, 2, 4], 3).validate().is_err(), "4 of 3");
        assert!(spec(&[1, 4], 5).validate().is_err(), "2 participants");
        assert!(spec(&[2, 1, 4], 5).validate().is_err(), "not ascending");
        assert!(spec(&[1, 2, 4], 17).validate().is_err(), "17 appliances");
        // A cluster without index 3 (retired by a reshare).
        let gap = KeygenSpec {
            holders: vec![1, 2, 4, 5],
            ..spec(&[1, 2, 4], 5)
        };
        assert!(gap.validate().is_ok());
        let on_the_gap = KeygenSpec {
            holders: vec![1, 2, 4, 5],
            ..spec(&[1, 2, 3], 5)
        };
        assert!(on_the_gap.validate().is_err(), "3 is no holder");
        let short = KeygenSpec {
            holders: vec![1, 2, 4],
            ..spec(&[1, 2, 4], 5)
        };
        assert!(short.validate().is_err(), "holders end at parties");
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
        assert_eq!(samples[13].kind(), "commit_epoch");
        assert_eq!(samples[16].kind(), "keygen_abort");
        assert_eq!(samples[17].kind(), "keygen_progress");
        assert_eq!(samples[23].kind(), "refresh_progress");
        assert_eq!(samples[24].kind(), "recover_run");
        assert_eq!(samples[26].kind(), "public_state");
        let last_two: Vec<_> = samples.iter().rev().take(2).map(Request::kind).collect();
        assert_eq!(last_two, ["audit_verify", "reshare_key"]);
    }

    #[test]
    fn keygen_progress_is_variant_17_and_carries_only_the_session() {
        let progress = Request::KeygenProgress { session: [7; 16] };
        let bytes = crate::encode(&progress).unwrap();
        let mut expected = 17u32.to_le_bytes().to_vec();
        expected.extend_from_slice(&[7; 16]);
        assert_eq!(bytes, expected);
        assert_eq!(crate::decode::<Request>(&bytes).unwrap(), progress);
        assert_eq!(progress.kind(), "keygen_progress");
        assert!(progress.validate().is_ok());
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
