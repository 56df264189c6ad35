//! Support for the fuzz target `fuzz/fuzz_targets/decode.rs` and for tests: not part of the
//! protocol's API.
//!
//! [`decode_any`] is the whole fuzz target. It is an ordinary function so that the seed
//! corpus also replays as an ordinary test (`wire/tests/fuzz_corpus.rs`).

use core::fmt::Debug;

use crate::codec::{self, Message};
use crate::frame::{read_frame_blocking, write_frame_blocking};
use crate::{
    Attribute, Error, ErrorCode, HelloInfo, KEYGEN_EPOCH, KeyId, KeyStatus, KeygenProgress,
    KeygenResult, KeygenSpec, ObjectClass, ObjectId, ObjectRecord, ObjectSummary, ObjectVersion,
    PROTOCOL_VERSION, PartialResult, Participant, RecoverPart, RecoverSpec, RefreshFailure,
    RefreshOutcome, RefreshProgress, RefreshSource, RefreshSpec, RefreshStage, RefreshStatus,
    RefreshStepKind, RefreshStored, Request, Response, SecretBytes, ShareRecord, StatusInfo,
    TokenObject, UserKind, WireError,
};
use crate::{AuditBreak, AuditVerification, PinRecord, PublicState, Resharing, RevokedCertificate};

/// Tries every decoder on `data`: [`codec::decode`] as a [`Request`] and as a
/// [`Response`], and [`read_frame_blocking`] of as many frames of each as `data` holds.
///
/// Decoding must never panic, whatever the bytes. Whatever decodes is then checked, and
/// **this function panics (through `assert_eq!`) if a check fails**: that is how the fuzzer
/// reports a bug. The checks: re-encoding gives back exactly the input bytes (the encoding
/// is canonical, see [`crate::codec`]), and decoding those gives back the same value.
///
/// The async [`crate::read_frame`] shares the header check and the codec with the blocking
/// one, so it is not run here.
pub fn decode_any(data: &[u8]) {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    round_trip_frames::<Request>(data);
    round_trip_frames::<Response>(data);
}

fn round_trip<T: Message + PartialEq + Debug>(data: &[u8]) {
    let Ok(msg) = codec::decode::<T>(data) else {
        return;
    };
    let encoded = codec::encode(&msg).ok();
    assert_eq!(
        encoded.as_deref(),
        Some(data),
        "re-encoding changed the bytes"
    );
    let again = encoded.as_deref().map(codec::decode::<T>);
    assert_eq!(again.and_then(Result::ok).as_ref(), Some(&msg));
}

fn round_trip_frames<T: Message + PartialEq + Debug>(data: &[u8]) {
    let mut rest = data;
    loop {
        let before = rest;
        let Ok(msg) = read_frame_blocking::<_, T>(&mut rest) else {
            return;
        };
        let consumed = before.get(..before.len() - rest.len());
        let mut written = Vec::new();
        let wrote = write_frame_blocking(&mut written, &msg).is_ok();
        assert!(wrote, "a decoded message must encode");
        assert_eq!(
            Some(written.as_slice()),
            consumed,
            "re-framing changed the bytes"
        );
        let again = read_frame_blocking::<_, T>(&mut written.as_slice()).ok();
        assert_eq!(again.as_ref(), Some(&msg));
    }
}

fn key_id() -> Result<KeyId, Error> {
    KeyId::new(b"ittc-key-1".to_vec())
}

fn version() -> ObjectVersion {
    ObjectVersion {
        counter: 1_765_000_000_123,
        writer: 0x8899_aabb_ccdd_eeff,
    }
}

fn token_object() -> TokenObject {
    TokenObject {
        handle: ObjectId(0x0102_0304_0506_0708),
        class: ObjectClass::Certificate,
        attributes: vec![
            Attribute {
                kind: 0x0000_0003, // CKA_LABEL
                value: b"signing".to_vec(),
            },
            Attribute {
                kind: 0x0000_0011, // CKA_VALUE: a (fake) DER certificate
                value: [0x30, 0x82, 0x01, 0x0a].repeat(40),
            },
        ],
    }
}

/// One request of every kind, in variant order (for tests and the seed corpus).
///
/// # Errors
///
/// Never, in practice: the sample key id is valid.
pub fn sample_requests() -> Result<Vec<Request>, Error> {
    Ok(vec![
        Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "ittc-pkcs11 0.1.0".into(),
        },
        Request::Login {
            user: UserKind::User,
            pin: SecretBytes::from(b"123456".as_slice()),
        },
        Request::Logout,
        Request::Partial {
            key_id: key_id()?,
            epoch: 7,
            input: (0..=255).collect(),
        },
        Request::ListObjects,
        Request::GetObject {
            handle: ObjectId(42),
        },
        Request::PutObject {
            object: token_object(),
            version: version(),
        },
        Request::DeleteObject {
            handle: ObjectId(u64::MAX),
            version: version(),
        },
        Request::Status,
        Request::StoreShare(ShareRecord {
            key_id: key_id()?,
            label: "signing".into(),
            epoch: 1,
            index: 2,
            threshold: 2,
            parties: 3,
            modulus: vec![0xc7; 256],
            public_exponent: vec![1, 0, 1],
            share: SecretBytes::new(vec![0x5a; 300]),
            additive: SecretBytes::new(vec![0x5b; 288]),
        }),
        Request::SetPin {
            user: UserKind::SecurityOfficer,
            pin: SecretBytes::from(b"so-pin".as_slice()),
        },
        Request::ChangePin {
            user: UserKind::User,
            old: SecretBytes::from(b"123456".as_slice()),
            new: SecretBytes::from(b"654321".as_slice()),
        },
        Request::DeleteKey { key_id: key_id()? },
        Request::CommitEpoch {
            key_id: key_id()?,
            epoch: 8,
        },
        Request::GenerateKey(KeygenSpec {
            session: [0x5e; 16],
            key_id: key_id()?,
            label: "generated".into(),
            bits: 2048,
            public_exponent: 65537,
            threshold: 2,
            participants: [1, 2, 4]
                .map(|index| Participant {
                    index,
                    address: format!("10.0.0.{index}:7301"),
                })
                .to_vec(),
            parties: 5,
            holders: vec![1, 2, 4, 5],
        }),
        Request::KeygenRound {
            session: [0x5e; 16],
            from: 2,
            round: 4,
            message: SecretBytes::new(vec![0x77; 64]),
        },
        Request::KeygenAbort {
            session: [0x5e; 16],
            from: 3,
            reason: "appliance 1 unreachable".into(),
        },
        Request::KeygenProgress {
            session: [0x5e; 16],
        },
        Request::RefreshKey {
            key_id: key_id()?,
            session: [0x7f; 16],
        },
        Request::RefreshRun(RefreshSpec {
            session: [0x7f; 16],
            key_id: key_id()?,
            from_epoch: 7,
            coordinator: 1,
            absorber: 1,
            participants: (1..=3)
                .map(|index| Participant {
                    index,
                    address: format!("10.0.0.{index}:7301"),
                })
                .collect(),
            source: RefreshSource::Additive {
                holders: vec![1, 2, 3],
            },
            reshare: None,
        }),
        Request::RefreshRound {
            session: [0x7f; 16],
            from: 2,
            round: 1,
            message: SecretBytes::new(vec![0x66; 288]),
        },
        Request::RefreshAbort {
            session: [0x7f; 16],
            from: 3,
            reason: "appliance 2 sent a piece out of range".into(),
        },
        Request::RefreshStep {
            key_id: key_id()?,
            session: [0x7f; 16],
            epoch: 8,
            step: RefreshStepKind::Commit,
        },
        Request::RefreshProgress {
            session: [0x7f; 16],
        },
        Request::RecoverRun(RecoverSpec {
            session: [0x3c; 16],
            key_id: key_id()?,
            epoch: 9,
            target: 3,
            helpers: [1, 2]
                .map(|index| Participant {
                    index,
                    address: format!("10.0.0.{index}:7301"),
                })
                .to_vec(),
        }),
        Request::RevokeCertificate {
            serial: vec![0x3c; 20],
            label: "appliance 3".into(),
        },
        Request::PublicState {
            from: Some(ObjectId(7)),
        },
        Request::RefreshRun(RefreshSpec {
            session: [0x7e; 16],
            key_id: key_id()?,
            from_epoch: 8,
            coordinator: 1,
            absorber: 1,
            participants: (1..=5)
                .map(|index| Participant {
                    index,
                    address: format!("10.0.0.{index}:7301"),
                })
                .collect(),
            source: RefreshSource::Shares { set: vec![1, 2] },
            reshare: Some(Resharing {
                old_threshold: 2,
                old_parties: 3,
                threshold: 3,
                holders: vec![1, 3, 4, 5],
                label: "signing".into(),
                modulus: vec![0xc7; 256],
                public_exponent: vec![1, 0, 1],
            }),
        }),
        Request::ReshareKey {
            key_id: key_id()?,
            session: [0x7e; 16],
            threshold: 3,
            holders: [1, 3, 4, 5]
                .into_iter()
                .map(|index| Participant {
                    index,
                    address: format!("10.0.0.{index}:7301"),
                })
                .collect(),
        },
        Request::AuditVerify,
    ])
}

/// One response of every kind, in variant order (for tests and the seed corpus).
///
/// # Errors
///
/// Never, in practice: the sample key id is valid.
pub fn sample_responses() -> Result<Vec<Response>, Error> {
    Ok(vec![
        Response::Error(WireError::new(ErrorCode::PinLocked, "user PIN locked")),
        Response::HelloInfo(HelloInfo {
            protocol_version: PROTOCOL_VERSION,
            appliance_index: 3,
            build_variant: "crypto-bigint/ring/system-alloc".into(),
            cluster_id: *b"0123456789abcdef",
        }),
        Response::Ok,
        Response::PartialResult(PartialResult {
            index: 3,
            epoch: 7,
            value: vec![0x99; 256],
        }),
        Response::Objects(vec![
            ObjectSummary {
                handle: ObjectId(1),
                version: version(),
                class: Some(ObjectClass::PrivateKey),
            },
            ObjectSummary {
                handle: ObjectId(2),
                version: version(),
                class: Some(ObjectClass::PublicKey),
            },
            ObjectSummary {
                handle: ObjectId(3),
                version: version(),
                class: Some(ObjectClass::Data),
            },
            ObjectSummary {
                handle: ObjectId(4),
                version: ObjectVersion::ORIGINAL,
                class: None,
            },
        ]),
        Response::Object {
            object: token_object(),
            version: version(),
        },
        Response::Status(StatusInfo {
            protocol_version: PROTOCOL_VERSION,
            software_version: "0.1.0".into(),
            build_variant: "openssl-bn/aws-lc-rs/jemalloc".into(),
            appliance_index: 1,
            cluster_id: [0xab; 16],
            keys: vec![KeyStatus {
                key_id: key_id()?,
                label: "signing".into(),
                active_epoch: Some(7),
                pending_epoch: Some(8),
                pending_ready: true,
                retiring_epoch: None,
                threshold: 2,
                parties: 3,
                holders: vec![1, 2, 3],
                refresh: RefreshStatus {
                    last_refresh_unix_ms: Some(1_765_000_000_000),
                    next_due_unix_ms: Some(1_765_003_600_000),
                    last_failure: Some(RefreshFailure {
                        time_unix_ms: 1_764_999_000_000,
                        reason: "appliance 3 unreachable".into(),
                    }),
                    running: Some([0x7f; 16]),
                    coordinator: Some(1),
                    additive_holders: vec![1, 2, 3],
                    has_additive: true,
                },
            }],
            audit_head: [0x11; 32],
            uptime_secs: 86_400,
            revoked_certificates: 1,
            clock_unix_ms: 1_765_000_000_000,
        }),
        Response::KeyGenerated(KeygenResult {
            modulus: vec![0xc7; 256],
            public_exponent: vec![1, 0, 1],
            epoch: KEYGEN_EPOCH,
            batches: 3,
            candidates: 4096,
            biprimality_tests: 40,
            rounds: 12,
            elapsed_ms: 31_000,
        }),
        Response::KeygenProgress(KeygenProgress {
            batches: 2,
            candidates: 2048,
            biprimality_tests: 21,
            rounds: 7,
            elapsed_ms: 12_500,
        }),
        Response::RefreshStored(RefreshStored {
            index: 2,
            epoch: 8,
            trial: vec![0x42; 256],
        }),
        Response::Refreshed(RefreshOutcome {
            from_epoch: 7,
            to_epoch: 8,
            erased: true,
            elapsed_ms: 180,
        }),
        Response::RefreshProgress(RefreshProgress {
            stage: RefreshStage::Commit,
            elapsed_ms: 120,
        }),
        Response::RecoverPart(RecoverPart {
            index: 1,
            epoch: 9,
            label: "signing".into(),
            modulus: vec![0xc7; 256],
            public_exponent: vec![1, 0, 1],
            threshold: 2,
            parties: 3,
            additive_holders: vec![1, 2],
            holders: vec![1, 2, 3],
            contribution: SecretBytes::new(vec![0x24; 300]),
            trial: vec![0x42; 256],
        }),
        Response::PublicState(PublicState {
            pins: vec![PinRecord {
                user: UserKind::User,
                verifier: SecretBytes::from(
                    b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".as_slice(),
                ),
                failures: 1,
                locked: false,
            }],
            revoked: vec![RevokedCertificate {
                serial: vec![0x3c; 20],
                label: "appliance 3".into(),
                revoked_unix_ms: 1_765_000_000_000,
            }],
            objects: vec![
                ObjectRecord {
                    handle: token_object().handle,
                    version: version(),
                    object: Some(token_object()),
                },
                ObjectRecord {
                    handle: ObjectId(9),
                    version: version(),
                    object: None,
                },
            ],
            next: Some(ObjectId(0x0102_0304_0506_0709)),
        }),
        Response::AuditVerified(AuditVerification {
            entries: 1_000_042,
            head: [0x5c; 32],
            exported: 1_000_000,
            export_files: 1,
            broken: Some(AuditBreak {
                seq: 17,
                reason: "audit-00000000000000000000.jsonl line 19: the entry does not match \
                         its hash"
                    .into(),
            }),
        }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_pass_every_check() {
        for req in sample_requests().unwrap() {
            let bytes = codec::encode(&req).unwrap();
            decode_any(&bytes);
            let mut framed = Vec::new();
            write_frame_blocking(&mut framed, &req).unwrap();
            write_frame_blocking(&mut framed, &req).unwrap();
            decode_any(&framed);
        }
        for resp in sample_responses().unwrap() {
            decode_any(&codec::encode(&resp).unwrap());
        }
    }

    #[test]
    fn garbage_is_ignored() {
        decode_any(&[]);
        decode_any(&[0xff; 64]);
        decode_any(&[0, 0, 0, 0]);
    }
}
