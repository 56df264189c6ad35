//! Property tests: every valid message survives the codec and the framing, and no byte
//! string makes a decoder panic.

// clippy.toml allows unwrap in #[test] functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used)]

use ittc_wire::fuzz::decode_any;
use ittc_wire::{
    Attribute, Error, ErrorCode, HelloInfo, KeyId, KeyStatus, KeygenProgress, KeygenResult,
    KeygenSpec, ObjectClass, ObjectId, ObjectRecord, ObjectSummary, ObjectVersion, PartialResult,
    Participant, PinRecord, PublicState, RefreshFailure, RefreshOutcome, RefreshProgress,
    RefreshSource, RefreshSpec, RefreshStage, RefreshStatus, RefreshStepKind, RefreshStored,
    Request, Resharing, Response, RevokedCertificate, SecretBytes, ShareRecord, StatusInfo,
    TokenObject, UserKind, WireError, decode, encode, read_frame, read_frame_blocking, write_frame,
    write_frame_blocking,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn name() -> impl Strategy<Value = String> {
    // At most 32 characters of up to 4 bytes: under every string limit.
    ".{0,32}"
}

fn key_id() -> impl Strategy<Value = KeyId> {
    vec(any::<u8>(), 1..=64).prop_map(|b| KeyId::new(b).unwrap())
}

fn secret() -> impl Strategy<Value = SecretBytes> {
    bytes(64).prop_map(SecretBytes::new)
}

fn user() -> impl Strategy<Value = UserKind> {
    prop_oneof![Just(UserKind::User), Just(UserKind::SecurityOfficer)]
}

fn class() -> impl Strategy<Value = ObjectClass> {
    prop_oneof![
        Just(ObjectClass::Certificate),
        Just(ObjectClass::PublicKey),
        Just(ObjectClass::PrivateKey),
        Just(ObjectClass::Data),
    ]
}

fn object() -> impl Strategy<Value = TokenObject> {
    let attribute = (any::<u64>(), bytes(300)).prop_map(|(kind, value)| Attribute { kind, value });
    (any::<u64>(), class(), vec(attribute, 0..8)).prop_map(|(handle, class, attributes)| {
        TokenObject {
            handle: ObjectId(handle),
            class,
            attributes,
        }
    })
}

/// `(parties, threshold, index)` with `1 <= threshold, index <= parties`.
fn sharing() -> impl Strategy<Value = (u8, u8, u8)> {
    (1u8..=255).prop_flat_map(|n| (Just(n), 1..=n, 1..=n))
}

fn share_record() -> impl Strategy<Value = ShareRecord> {
    (
        key_id(),
        name(),
        any::<u64>(),
        sharing(),
        bytes(600),
        bytes(8),
        secret(),
        secret(),
    )
        .prop_map(
            |(
                key_id,
                label,
                epoch,
                (parties, threshold, index),
                modulus,
                public_exponent,
                share,
                additive,
            )| {
                ShareRecord {
                    key_id,
                    label,
                    epoch,
                    index,
                    threshold,
                    parties,
                    modulus,
                    public_exponent,
                    share,
                    additive,
                }
            },
        )
}

/// A valid key-generation request: `3 <= n <= 16` participants `1..=n` in order,
/// `2 <= threshold <= n`.
fn keygen_spec() -> impl Strategy<Value = KeygenSpec> {
    let sharing = (3u8..=16).prop_flat_map(|n| (2..=n).prop_map(move |k| (n, k)));
    (
        any::<[u8; 16]>(),
        key_id(),
        name(),
        any::<u16>(),
        any::<u64>(),
        sharing,
        name(),
    )
        .prop_map(
            |(session, key_id, label, bits, public_exponent, (n, threshold), host)| KeygenSpec {
                session,
                key_id,
                label,
                bits,
                public_exponent,
                threshold,
                participants: (1..=n)
                    .map(|index| Participant {
                        index,
                        address: format!("{host}:{index}"),
                    })
                    .collect(),
                parties: n,
                holders: (1..=n).collect(),
            },
        )
}

fn keygen_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        keygen_spec().prop_map(Request::GenerateKey),
        (any::<[u8; 16]>(), any::<u8>(), any::<u32>(), secret()).prop_map(
            |(session, from, round, message)| Request::KeygenRound {
                session,
                from,
                round,
                message,
            }
        ),
        (any::<[u8; 16]>(), any::<u8>(), name()).prop_map(|(session, from, reason)| {
            Request::KeygenAbort {
                session,
                from,
                reason,
            }
        }),
        any::<[u8; 16]>().prop_map(|session| Request::KeygenProgress { session }),
    ]
}

fn refresh_spec() -> impl Strategy<Value = RefreshSpec> {
    let roles = (1u8..=16).prop_flat_map(|n| (Just(n), 1..=n, 1..=n));
    (
        any::<[u8; 16]>(),
        key_id(),
        0..u64::MAX,
        roles,
        name(),
        any::<bool>(),
    )
        .prop_map(
            |(session, key_id, from_epoch, (n, coordinator, absorber), host, reshare)| {
                RefreshSpec {
                    session,
                    key_id,
                    from_epoch,
                    coordinator,
                    absorber,
                    participants: (1..=n)
                        .map(|index| Participant {
                            index,
                            address: format!("{host}:{index}"),
                        })
                        .collect(),
                    source: RefreshSource::Additive {
                        holders: (1..=n).collect(),
                    },
                    // A reshare to 2-of-all (a single holder cannot be resharded to).
                    reshare: (reshare && n >= 2).then(|| Resharing {
                        old_threshold: 1,
                        old_parties: n,
                        threshold: 2,
                        holders: (1..=n).collect(),
                        label: host.clone(),
                        modulus: vec![0xc5; 256],
                        public_exponent: vec![3],
                    }),
                }
            },
        )
}

fn refresh_request() -> impl Strategy<Value = Request> {
    let step = select(vec![
        RefreshStepKind::Ready,
        RefreshStepKind::Commit,
        RefreshStepKind::Erase,
        RefreshStepKind::Discard,
    ]);
    prop_oneof![
        (key_id(), any::<[u8; 16]>())
            .prop_map(|(key_id, session)| Request::RefreshKey { key_id, session }),
        refresh_spec().prop_map(Request::RefreshRun),
        (any::<[u8; 16]>(), any::<u8>(), any::<u8>(), secret()).prop_map(
            |(session, from, round, message)| Request::RefreshRound {
                session,
                from,
                round,
                message,
            }
        ),
        (any::<[u8; 16]>(), any::<u8>(), name()).prop_map(|(session, from, reason)| {
            Request::RefreshAbort {
                session,
                from,
                reason,
            }
        }),
        (key_id(), any::<[u8; 16]>(), any::<u64>(), step).prop_map(
            |(key_id, session, epoch, step)| Request::RefreshStep {
                key_id,
                session,
                epoch,
                step,
            }
        ),
        any::<[u8; 16]>().prop_map(|session| Request::RefreshProgress { session }),
    ]
}

/// A serial as deny-lists hold it: 1 to 20 bytes, no leading zero byte.
fn serial() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=255, bytes(19)).prop_map(|(first, rest)| {
        let mut serial = vec![first];
        serial.extend(rest);
        serial
    })
}

fn revoked() -> impl Strategy<Value = RevokedCertificate> {
    (serial(), "[a-z0-9 ]{0,32}", any::<u64>()).prop_map(|(serial, label, revoked_unix_ms)| {
        RevokedCertificate {
            serial,
            label,
            revoked_unix_ms,
        }
    })
}

fn replace_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        revoked().prop_map(|r| Request::RevokeCertificate {
            serial: r.serial,
            label: r.label,
        }),
        any::<Option<u64>>().prop_map(|from| Request::PublicState {
            from: from.map(ObjectId)
        }),
    ]
}

fn public_state() -> impl Strategy<Value = Response> {
    let pin = (user(), secret(), any::<u32>(), any::<bool>()).prop_map(
        |(user, verifier, failures, locked)| PinRecord {
            user,
            verifier,
            failures,
            locked,
        },
    );
    (
        vec(pin, 0..=2),
        vec(revoked(), 0..4),
        vec(record(), 0..4),
        any::<Option<u64>>(),
    )
        .prop_map(|(pins, revoked, objects, next)| {
            Response::PublicState(PublicState {
                pins,
                revoked,
                objects,
                next: next.map(ObjectId),
            })
        })
}

fn version() -> impl Strategy<Value = ObjectVersion> {
    (any::<u64>(), any::<u64>()).prop_map(|(counter, writer)| ObjectVersion { counter, writer })
}

/// A stored object or a tombstone, under the object's own handle.
fn record() -> impl Strategy<Value = ObjectRecord> {
    (object(), version(), any::<bool>()).prop_map(|(object, version, deleted)| ObjectRecord {
        handle: object.handle,
        version,
        object: (!deleted).then_some(object),
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), name()).prop_map(|(protocol_version, client_name)| Request::Hello {
            protocol_version,
            client_name
        }),
        (user(), secret()).prop_map(|(user, pin)| Request::Login { user, pin }),
        Just(Request::Logout),
        (key_id(), any::<u64>(), bytes(600)).prop_map(|(key_id, epoch, input)| {
            Request::Partial {
                key_id,
                epoch,
                input,
            }
        }),
        Just(Request::ListObjects),
        any::<u64>().prop_map(|h| Request::GetObject {
            handle: ObjectId(h)
        }),
        (object(), version()).prop_map(|(object, version)| Request::PutObject { object, version }),
        (any::<u64>(), version()).prop_map(|(h, version)| Request::DeleteObject {
            handle: ObjectId(h),
            version,
        }),
        Just(Request::Status),
        share_record().prop_map(Request::StoreShare),
        (user(), secret()).prop_map(|(user, pin)| Request::SetPin { user, pin }),
        (user(), secret(), secret()).prop_map(|(user, old, new)| Request::ChangePin {
            user,
            old,
            new
        }),
        key_id().prop_map(|key_id| Request::DeleteKey { key_id }),
        (key_id(), any::<u64>()).prop_map(|(key_id, epoch)| Request::CommitEpoch { key_id, epoch }),
        keygen_request(),
        refresh_request(),
        replace_request(),
    ]
}

fn refresh_status() -> impl Strategy<Value = RefreshStatus> {
    (
        any::<[Option<u64>; 2]>(),
        proptest::option::of((any::<u64>(), name())),
        any::<Option<[u8; 16]>>(),
        any::<Option<u8>>(),
        proptest::collection::btree_set(1u8..=16, 0..=16),
        any::<bool>(),
    )
        .prop_map(
            |([last, next], failure, running, coordinator, holders, has_additive)| RefreshStatus {
                last_refresh_unix_ms: last,
                next_due_unix_ms: next,
                last_failure: failure.map(|(time_unix_ms, reason)| RefreshFailure {
                    time_unix_ms,
                    reason,
                }),
                running,
                coordinator,
                additive_holders: holders.into_iter().collect(),
                has_additive,
            },
        )
}

fn key_status() -> impl Strategy<Value = KeyStatus> {
    (
        key_id(),
        name(),
        any::<[Option<u64>; 3]>(),
        any::<bool>(),
        sharing(),
        refresh_status(),
    )
        .prop_map(
            |(
                key_id,
                label,
                [active_epoch, pending_epoch, retiring_epoch],
                pending_ready,
                (parties, threshold, _),
                refresh,
            )| KeyStatus {
                key_id,
                label,
                active_epoch,
                pending_epoch,
                pending_ready,
                retiring_epoch,
                threshold,
                parties,
                holders: (1..=parties).collect(),
                refresh,
            },
        )
}

fn refresh_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u8>(), any::<u64>(), bytes(600)).prop_map(|(index, epoch, trial)| {
            Response::RefreshStored(RefreshStored {
                index,
                epoch,
                trial,
            })
        }),
        (any::<[u64; 3]>(), any::<bool>()).prop_map(
            |([from_epoch, to_epoch, elapsed_ms], erased)| {
                Response::Refreshed(RefreshOutcome {
                    from_epoch,
                    to_epoch,
                    erased,
                    elapsed_ms,
                })
            }
        ),
        (select(RefreshStage::ALL.to_vec()), any::<u64>()).prop_map(|(stage, elapsed_ms)| {
            Response::RefreshProgress(RefreshProgress { stage, elapsed_ms })
        }),
    ]
}

fn status() -> impl Strategy<Value = StatusInfo> {
    (
        any::<u16>(),
        name(),
        name(),
        any::<u8>(),
        any::<[u8; 16]>(),
        vec(key_status(), 0..6),
        any::<[u8; 32]>(),
        any::<(u64, u32, u64)>(),
    )
        .prop_map(
            |(
                protocol_version,
                software_version,
                build_variant,
                appliance_index,
                cluster_id,
                keys,
                audit_head,
                (uptime_secs, revoked_certificates, clock_unix_ms),
            )| StatusInfo {
                protocol_version,
                software_version,
                build_variant,
                appliance_index,
                cluster_id,
                keys,
                audit_head,
                uptime_secs,
                revoked_certificates,
                clock_unix_ms,
            },
        )
}

fn keygen_response() -> impl Strategy<Value = Response> {
    let counters = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
    );
    prop_oneof![
        (bytes(600), bytes(8), any::<u64>(), counters).prop_map(
            |(
                modulus,
                public_exponent,
                epoch,
                (batches, candidates, biprimality_tests, rounds, elapsed_ms),
            )| {
                Response::KeyGenerated(KeygenResult {
                    modulus,
                    public_exponent,
                    epoch,
                    batches,
                    candidates,
                    biprimality_tests,
                    rounds,
                    elapsed_ms,
                })
            }
        ),
        counters.prop_map(
            |(batches, candidates, biprimality_tests, rounds, elapsed_ms)| {
                Response::KeygenProgress(KeygenProgress {
                    batches,
                    candidates,
                    biprimality_tests,
                    rounds,
                    elapsed_ms,
                })
            }
        ),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let summary =
        (any::<u64>(), version(), proptest::option::of(class())).prop_map(|(h, version, class)| {
            ObjectSummary {
                handle: ObjectId(h),
                version,
                class,
            }
        });
    prop_oneof![
        (select(ErrorCode::ALL.to_vec()), name())
            .prop_map(|(code, message)| Response::Error(WireError { code, message })),
        (any::<u16>(), any::<u8>(), name(), any::<[u8; 16]>()).prop_map(
            |(protocol_version, appliance_index, build_variant, cluster_id)| {
                Response::HelloInfo(HelloInfo {
                    protocol_version,
                    appliance_index,
                    build_variant,
                    cluster_id,
                })
            }
        ),
        Just(Response::Ok),
        (any::<u8>(), any::<u64>(), bytes(600)).prop_map(|(index, epoch, value)| {
            Response::PartialResult(PartialResult {
                index,
                epoch,
                value,
            })
        }),
        vec(summary, 0..50).prop_map(Response::Objects),
        (object(), version()).prop_map(|(object, version)| Response::Object { object, version }),
        status().prop_map(Response::Status),
        keygen_response(),
        refresh_response(),
        public_state(),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #[test]
    fn requests_round_trip_through_the_codec(req in request()) {
        let bytes = encode(&req).unwrap();
        prop_assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        decode_any(&bytes);
    }

    #[test]
    fn responses_round_trip_through_the_codec(resp in response()) {
        let bytes = encode(&resp).unwrap();
        prop_assert_eq!(decode::<Response>(&bytes).unwrap(), resp);
        decode_any(&bytes);
    }

    #[test]
    fn messages_round_trip_through_blocking_frames(
        reqs in vec(request(), 1..5),
        resps in vec(response(), 1..5),
    ) {
        let mut stream = Vec::new();
        for (req, resp) in reqs.iter().zip(&resps) {
            write_frame_blocking(&mut stream, req).unwrap();
            write_frame_blocking(&mut stream, resp).unwrap();
        }
        let mut reader = stream.as_slice();
        for (req, resp) in reqs.iter().zip(&resps) {
            prop_assert_eq!(&read_frame_blocking::<_, Request>(&mut reader).unwrap(), req);
            prop_assert_eq!(&read_frame_blocking::<_, Response>(&mut reader).unwrap(), resp);
        }
        prop_assert!(matches!(read_frame_blocking::<_, Request>(&mut reader), Err(Error::Closed)));
    }

    #[test]
    fn messages_round_trip_through_async_frames(req in request(), resp in response()) {
        runtime().block_on(async {
            let mut stream = Vec::new();
            write_frame(&mut stream, &req).await.unwrap();
            write_frame(&mut stream, &resp).await.unwrap();
            let mut reader = stream.as_slice();
            assert_eq!(read_frame::<_, Request>(&mut reader).await.unwrap(), req);
            assert_eq!(read_frame::<_, Response>(&mut reader).await.unwrap(), resp);
            assert!(matches!(read_frame::<_, Request>(&mut reader).await, Err(Error::Closed)));
        });
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(2048)) {
        let _ = decode::<Request>(&data);
        let _ = decode::<Response>(&data);
        let _ = read_frame_blocking::<_, Request>(&mut data.as_slice());
        let _ = read_frame_blocking::<_, Response>(&mut data.as_slice());
        runtime().block_on(async {
            let _ = read_frame::<_, Request>(&mut data.as_slice()).await;
            let _ = read_frame::<_, Response>(&mut data.as_slice()).await;
        });
        decode_any(&data);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(body in bytes(2048)) {
        let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let _ = read_frame_blocking::<_, Request>(&mut frame.as_slice());
        let _ = read_frame_blocking::<_, Response>(&mut frame.as_slice());
        decode_any(&frame);
    }

    /// Valid encodings with a few bytes changed: they reach deep into the decoders, and
    /// whatever still decodes must re-encode to the same bytes (`decode_any` asserts it).
    #[test]
    fn mutated_encodings_never_panic(
        req in request(),
        resp in response(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for mut bytes in [encode(&req).unwrap(), encode(&resp).unwrap()] {
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            decode_any(&bytes);
        }
    }

    #[test]
    fn every_strict_prefix_is_rejected(req in request()) {
        let bytes = encode(&req).unwrap();
        for end in 0..bytes.len() {
            prop_assert!(decode::<Request>(&bytes[..end]).is_err());
        }
    }
}
