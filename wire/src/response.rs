//! What an appliance answers.

use bincode::{Decode, Encode};

use crate::limits::{
    MAX_ERROR_MESSAGE_LEN, MAX_INTEGER_LEN, MAX_KEYS, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_OBJECTS,
    check_len, check_sharing,
};
use crate::refresh::{RecoverPart, RefreshOutcome, RefreshProgress, RefreshStatus, RefreshStored};
use crate::sync::PublicState;
use crate::{Error, KeyId, ObjectSummary, ObjectVersion, TokenObject, WireError};

/// An appliance's answer to one [`crate::Request`].
///
/// `Error` is variant 0 and `HelloInfo` variant 1, with frozen fields (see the crate docs).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Response {
    /// The request failed or was refused.
    Error(WireError),
    /// The answer to [`crate::Request::Hello`].
    HelloInfo(HelloInfo),
    /// The request succeeded and has nothing to return.
    Ok,
    /// The answer to [`crate::Request::Partial`].
    PartialResult(PartialResult),
    /// The answer to [`crate::Request::ListObjects`]: at most [`MAX_OBJECTS`] entries,
    /// tombstones included.
    Objects(Vec<ObjectSummary>),
    /// The answer to [`crate::Request::GetObject`]: the object and its version (a deleted
    /// object is [`crate::ErrorCode::NotFound`]).
    Object {
        /// The object.
        object: TokenObject,
        /// Its version.
        version: ObjectVersion,
    },
    /// The answer to [`crate::Request::Status`].
    Status(StatusInfo),
    /// The answer to [`crate::Request::GenerateKey`]: the key this appliance holds a
    /// pending share of.
    KeyGenerated(KeygenResult),
    /// The answer to [`crate::Request::KeygenProgress`]: the counters so far.
    KeygenProgress(KeygenProgress),
    /// The answer to [`crate::Request::RefreshRun`]: the new epoch is stored as pending.
    RefreshStored(RefreshStored),
    /// The answer to [`crate::Request::RefreshKey`]: the refresh is over.
    Refreshed(RefreshOutcome),
    /// The answer to [`crate::Request::RefreshProgress`].
    RefreshProgress(RefreshProgress),
    /// The answer to [`crate::Request::RecoverRun`]: one helper's part.
    RecoverPart(RecoverPart),
    /// The answer to [`crate::Request::PublicState`]: one page.
    PublicState(PublicState),
    /// The answer to [`crate::Request::AuditVerify`].
    AuditVerified(AuditVerification),
}

impl Response {
    /// A short fixed name for logs, e.g. `"partial_result"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Error(_) => "error",
            Response::HelloInfo(_) => "hello_info",
            Response::Ok => "ok",
            Response::PartialResult(_) => "partial_result",
            Response::Objects(_) => "objects",
            Response::Object { .. } => "object",
            Response::Status(_) => "status",
            Response::KeyGenerated(_) => "key_generated",
            Response::KeygenProgress(_) => "keygen_progress",
            Response::RefreshStored(_) => "refresh_stored",
            Response::Refreshed(_) => "refreshed",
            Response::RefreshProgress(_) => "refresh_progress",
            Response::RecoverPart(_) => "recover_part",
            Response::PublicState(_) => "public_state",
            Response::AuditVerified(_) => "audit_verified",
        }
    }

    /// Checks the documented size limits and invariants; the codec calls it on every
    /// response it encodes or decodes.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Response::Error(err) => err.validate(),
            Response::HelloInfo(info) => info.validate(),
            Response::Ok => Ok(()),
            Response::PartialResult(partial) => check_len(
                partial.value.len(),
                MAX_INTEGER_LEN,
                "partial result too long",
            ),
            Response::Objects(list) => check_len(list.len(), MAX_OBJECTS, "too many objects"),
            Response::Object { object, .. } => object.validate(),
            Response::Status(status) => status.validate(),
            Response::KeyGenerated(result) => {
                check_len(result.modulus.len(), MAX_INTEGER_LEN, "modulus too long")?;
                check_len(
                    result.public_exponent.len(),
                    MAX_INTEGER_LEN,
                    "public exponent too long",
                )
            }
            Response::RefreshStored(stored) => check_len(
                stored.trial.len(),
                MAX_INTEGER_LEN,
                "trial partial too long",
            ),
            Response::RecoverPart(part) => part.validate(),
            Response::KeygenProgress(_) | Response::Refreshed(_) | Response::RefreshProgress(_) => {
                Ok(())
            }
            Response::PublicState(state) => state.validate(),
            Response::AuditVerified(report) => report.broken.as_ref().map_or(Ok(()), |b| {
                check_len(
                    b.reason.len(),
                    MAX_ERROR_MESSAGE_LEN,
                    "audit break reason too long",
                )
            }),
        }
    }
}

/// What an appliance found when it checked its audit chain ([`crate::Request::AuditVerify`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AuditVerification {
    /// How many entries the chain has (the head's sequence number).
    pub entries: u64,
    /// The hash of the last entry (32 zero bytes for an empty log).
    pub head: [u8; 32],
    /// How many of the entries (the oldest) are in export files; 0 for a broken chain.
    pub exported: u64,
    /// How many export files hold them; 0 for a broken chain.
    pub export_files: u64,
    /// The first break, if the chain is broken.
    pub broken: Option<AuditBreak>,
}

/// Where an audit chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AuditBreak {
    /// The first broken or missing entry's sequence number.
    pub seq: u64,
    /// What is wrong (and in which export file and line), at most
    /// [`MAX_ERROR_MESSAGE_LEN`] bytes.
    pub reason: String,
}

/// Who answered a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HelloInfo {
    /// The protocol version the appliance will speak on this connection (the client's).
    pub protocol_version: u16,
    /// The appliance's index in the cluster, `1..=n`.
    pub appliance_index: u8,
    /// The build variant (big-integer backend, TLS provider, …), at most
    /// [`MAX_NAME_LEN`] bytes.
    pub build_variant: String,
    /// The cluster this appliance belongs to.
    pub cluster_id: [u8; 16],
}

impl HelloInfo {
    fn validate(&self) -> Result<(), Error> {
        check_len(
            self.build_variant.len(),
            MAX_NAME_LEN,
            "build variant too long",
        )
    }
}

/// One appliance's partial result: the blinded input raised to its share.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PartialResult {
    /// The appliance's share index.
    pub index: u8,
    /// The epoch of the share used.
    pub epoch: u64,
    /// The value, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub value: Vec<u8>,
}

/// One appliance's result of a key generation. Everything here is public and the same at
/// every participant (the coordinator checks that).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct KeygenResult {
    /// The modulus `N`, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub modulus: Vec<u8>,
    /// The public exponent, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub public_exponent: Vec<u8>,
    /// The epoch the share was stored under, pending ([`crate::KEYGEN_EPOCH`]).
    pub epoch: u64,
    /// Candidate batches started.
    pub batches: u32,
    /// Candidate pairs whose modulus was computed.
    pub candidates: u64,
    /// Moduli that went to the first biprimality test (survivors of the size check and
    /// trial division).
    pub biprimality_tests: u64,
    /// Rounds of messages.
    pub rounds: u32,
    /// Time the protocol took at this appliance, in milliseconds.
    pub elapsed_ms: u64,
}

/// How far one appliance's party of a key generation in progress has got: the counters of
/// [`KeygenResult`] so far, as of the party's last completed step. Public (counts and time
/// only), and the same at every participant up to a round or so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct KeygenProgress {
    /// Candidate batches started.
    pub batches: u32,
    /// Candidate pairs whose modulus was computed.
    pub candidates: u64,
    /// Moduli that went to the first biprimality test.
    pub biprimality_tests: u64,
    /// Rounds of messages so far.
    pub rounds: u32,
    /// Time since this appliance started its party, in milliseconds.
    pub elapsed_ms: u64,
}

/// The state of one appliance.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct StatusInfo {
    /// The protocol version the appliance speaks.
    pub protocol_version: u16,
    /// The appliance's software version, at most [`MAX_NAME_LEN`] bytes.
    pub software_version: String,
    /// The build variant, at most [`MAX_NAME_LEN`] bytes.
    pub build_variant: String,
    /// The appliance's index in the cluster.
    pub appliance_index: u8,
    /// The cluster this appliance belongs to.
    pub cluster_id: [u8; 16],
    /// The keys it holds shares of, at most [`MAX_KEYS`].
    pub keys: Vec<KeyStatus>,
    /// The hash at the head of the appliance's audit chain.
    pub audit_head: [u8; 32],
    /// Seconds since the appliance started.
    pub uptime_secs: u64,
    /// How many certificates are on the appliance's deny-list.
    pub revoked_certificates: u32,
    /// The appliance's clock when it answered, milliseconds since 1970 (`ittc doctor`
    /// compares it with its own).
    pub clock_unix_ms: u64,
}

impl StatusInfo {
    fn validate(&self) -> Result<(), Error> {
        check_len(
            self.software_version.len(),
            MAX_NAME_LEN,
            "software version too long",
        )?;
        check_len(
            self.build_variant.len(),
            MAX_NAME_LEN,
            "build variant too long",
        )?;
        check_len(self.keys.len(), MAX_KEYS, "too many keys")?;
        self.keys.iter().try_for_each(KeyStatus::validate)
    }
}

/// The state of one key on one appliance.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct KeyStatus {
    /// The key.
    pub key_id: KeyId,
    /// Its label, at most [`MAX_LABEL_LEN`] bytes.
    pub label: String,
    /// The epoch whose share answers clients' partial requests; `None` for a key that is
    /// imported but not yet committed.
    pub active_epoch: Option<u64>,
    /// An epoch stored but not yet committed (an import or a refresh), if any.
    pub pending_epoch: Option<u64>,
    /// Whether the pending epoch passed its refresh's trial: it then answers clients too.
    pub pending_ready: bool,
    /// The epoch before the active one, still answering clients until every holder has
    /// committed the refresh and it is erased.
    pub retiring_epoch: Option<u64>,
    /// How many partials combine (`k`), in `1..=parties`.
    pub threshold: u8,
    /// The highest index of a holder (`n`; `Δ = n!`).
    pub parties: u8,
    /// Every holder of the active epoch (of the pending one for a key not committed yet),
    /// ascending: `1..=parties` unless a reshare left some index out.
    pub holders: Vec<u8>,
    /// Refresh history and schedule on this appliance.
    pub refresh: RefreshStatus,
}

impl KeyStatus {
    /// The epochs whose shares answer a client's partial operation here: the active one,
    /// the retiring one, and a pending one that passed its trial.
    pub fn serving_epochs(&self) -> impl Iterator<Item = u64> + '_ {
        self.active_epoch
            .into_iter()
            .chain(self.retiring_epoch)
            .chain(self.pending_epoch.filter(|_| self.pending_ready))
    }

    fn validate(&self) -> Result<(), Error> {
        check_len(self.label.len(), MAX_LABEL_LEN, "key label too long")?;
        check_sharing(None, self.threshold, self.parties)?;
        if !self.holders.windows(2).all(|w| w[0] < w[1])
            || self.holders.iter().any(|&h| h == 0 || h > self.parties)
        {
            return Err(Error::Invalid(
                "a key's holders must be ascending indices in 1..=parties",
            ));
        }
        self.refresh.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn key_status() -> KeyStatus {
        KeyStatus {
            key_id: KeyId::new(b"k".to_vec()).unwrap(),
            label: "signing".into(),
            active_epoch: Some(3),
            pending_epoch: Some(4),
            pending_ready: false,
            retiring_epoch: None,
            threshold: 2,
            parties: 3,
            holders: vec![1, 2, 3],
            refresh: RefreshStatus::default(),
        }
    }

    fn status(keys: Vec<KeyStatus>) -> Response {
        Response::Status(StatusInfo {
            protocol_version: 1,
            software_version: "0.1.0".into(),
            build_variant: "crypto-bigint/ring".into(),
            appliance_index: 1,
            cluster_id: [1; 16],
            keys,
            audit_head: [2; 32],
            uptime_secs: 60,
            revoked_certificates: 1,
            clock_unix_ms: 1_765_000_000_000,
        })
    }

    #[test]
    fn kinds_are_distinct() {
        let mut kinds: Vec<_> = crate::fuzz::sample_responses()
            .unwrap()
            .iter()
            .map(Response::kind)
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            15,
            "every variant has a sample and a distinct kind"
        );
    }

    #[test]
    fn keygen_progress_follows_key_generated() {
        let progress = Response::KeygenProgress(KeygenProgress {
            batches: 2,
            candidates: 4096,
            biprimality_tests: 17,
            rounds: 9,
            elapsed_ms: 1500,
        });
        let bytes = crate::encode(&progress).unwrap();
        assert_eq!(bytes[..4], 8u32.to_le_bytes());
        // Fixed-width integers: variant, u32, u64, u64, u32, u64.
        assert_eq!(bytes.len(), 4 + 4 + 8 + 8 + 4 + 8);
        assert_eq!(crate::decode::<Response>(&bytes).unwrap(), progress);
        assert_eq!(progress.kind(), "keygen_progress");
        let samples = crate::fuzz::sample_responses().unwrap();
        assert_eq!(samples[7].kind(), "key_generated");
        assert_eq!(samples[8].kind(), "keygen_progress");
        assert_eq!(samples[11].kind(), "refresh_progress");
        assert_eq!(samples[12].kind(), "recover_part");
        assert_eq!(samples[13].kind(), "public_state");
        assert_eq!(samples.last().map(Response::kind), Some("audit_verified"));
    }

    #[test]
    fn validate_enforces_limits() {
        assert!(status(vec![key_status()]).validate().is_ok());
        assert!(status(vec![key_status(); MAX_KEYS + 1]).validate().is_err());
        let bad_threshold = KeyStatus {
            threshold: 4,
            ..key_status()
        };
        assert!(status(vec![bad_threshold]).validate().is_err());
        let summary = ObjectSummary {
            handle: crate::ObjectId(1),
            version: crate::ObjectVersion {
                counter: u64::MAX,
                writer: u64::MAX,
            },
            class: Some(crate::ObjectClass::Data),
        };
        assert!(
            Response::Objects(vec![summary; MAX_OBJECTS])
                .validate()
                .is_ok()
        );
        assert!(
            Response::Objects(vec![summary; MAX_OBJECTS + 1])
                .validate()
                .is_err()
        );
        // The longest listing fits in a frame.
        assert!(crate::encode(&Response::Objects(vec![summary; MAX_OBJECTS])).is_ok());
        let long_message = Response::Error(WireError {
            code: ErrorCode::Internal,
            message: "m".repeat(crate::limits::MAX_ERROR_MESSAGE_LEN + 1),
        });
        assert!(long_message.validate().is_err());
        let long_value = Response::PartialResult(PartialResult {
            index: 1,
            epoch: 0,
            value: vec![0; MAX_INTEGER_LEN + 1],
        });
        assert!(long_value.validate().is_err());
    }
}
