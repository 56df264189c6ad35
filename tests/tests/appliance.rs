//! The appliance daemon as an operator and a client meet it: real `ittc-appliance`
//! processes on 127.0.0.1, real TLS, real signals.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use ittc_tests::{Cluster, Options, connect, logged_forms, metric, public_key_object_id};
use ittc_threshold::padding::{HashAlg, pkcs1v15_sign};
use ittc_threshold::{Blinding, Partial, RsaPrivateKey, RsaPublicKey, SharingParams, combine};
use ittc_wire::identity::Role;
use ittc_wire::{
    Attribute, ErrorCode, KeyId, ObjectClass, ObjectId, Request, Response, SecretBytes,
    TokenObject, UserKind, WireError,
};
use num_bigint::BigUint;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Verifier;

const PIN: &[u8] = b"123456";

struct ImportedKey {
    id: KeyId,
    public: RsaPublicKey,
    params: SharingParams,
    openssl: Rsa<openssl::pkey::Private>,
    shares: Vec<Vec<u8>>,
}

/// A fresh RSA-2048 key made by OpenSSL.
fn openssl_key() -> (Rsa<openssl::pkey::Private>, RsaPrivateKey) {
    let openssl = Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&openssl.private_key_to_pem().unwrap(), None).unwrap();
    (openssl, key)
}

/// A fresh RSA-2048 key made by OpenSSL, split k-of-n (n the cluster's size) and imported
/// on every running appliance through the admin role: shares stored, epoch 1 committed,
/// public-key object stored (the harness's `Cluster::import_key`).
fn import_key(cluster: &Cluster, k: usize, id: &[u8]) -> ImportedKey {
    let (openssl, key) = openssl_key();
    let (params, shares) = cluster.import_key_with_shares(&key, k, id, "test key");
    ImportedKey {
        id: KeyId::new(id.to_vec()).unwrap(),
        public: key.public_key().clone(),
        params,
        openssl,
        shares: shares
            .iter()
            .map(|s| s.value().as_be_bytes().to_vec())
            .collect(),
    }
}

fn error_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(WireError { code, .. }) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Signs `msg` with SHA-256 PKCS#1 v1.5 through appliances `indices`: blind, partials,
/// combine, unblind.
fn threshold_sign(cluster: &Cluster, key: &ImportedKey, indices: &[u8], msg: &[u8]) -> Vec<u8> {
    let em = pkcs1v15_sign(
        HashAlg::Sha256,
        &HashAlg::Sha256.digest(msg),
        key.public.size(),
    )
    .unwrap();
    let m = BigUint::from_bytes_be(&em);
    let (blinding, blinded) = Blinding::new(&key.public, &m, &mut rand::rng()).unwrap();
    let input = key.public.integer_to_be(&blinded);
    let partials: Vec<Partial> = indices
        .iter()
        .map(|&i| {
            let mut c = cluster.user_session(i, PIN);
            match c
                .request(&Request::Partial {
                    key_id: key.id.clone(),
                    epoch: 1,
                    input: input.clone(),
                })
                .unwrap()
            {
                Response::PartialResult(p) => {
                    assert_eq!((p.index, p.epoch), (i, 1));
                    Partial {
                        index: usize::from(i),
                        value: BigUint::from_bytes_be(&p.value),
                    }
                }
                other => panic!("partial from {i}: {other:?}"),
            }
        })
        .collect();
    let y = combine(&key.public, &key.params, &blinded, &partials).unwrap();
    key.public
        .integer_to_be(&blinding.unblind(&key.public, &y).unwrap())
}

/// Sends a partial `request` on `c` (a connection to appliance `index`) and returns the
/// result as a [`Partial`], or the error code.
fn partial_from(
    c: &mut ittc_wire::Connection,
    index: u8,
    request: &Request,
) -> Result<Partial, ErrorCode> {
    match c.request(request).unwrap() {
        Response::PartialResult(p) => {
            assert_eq!(p.index, index);
            Ok(Partial {
                index: usize::from(index),
                value: BigUint::from_bytes_be(&p.value),
            })
        }
        other => Err(error_code(other)),
    }
}

/// The (active, pending) epochs of `key_id` in appliance `index`'s status; `None` if absent.
fn key_epochs(cluster: &Cluster, index: u8, key_id: &KeyId) -> Option<(Option<u64>, Option<u64>)> {
    let mut c = cluster.connect_as(index, "admin").unwrap();
    match c.request(&Request::Status).unwrap() {
        Response::Status(s) => s
            .keys
            .iter()
            .find(|k| &k.key_id == key_id)
            .map(|k| (k.active_epoch, k.pending_epoch)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_uncommitted_key_serves_only_the_admins_trial_until_it_is_committed() {
    let mut cluster = Cluster::new(3, &Options::default());
    cluster.start_all();
    cluster.set_user_pin(PIN);
    let (_, key) = openssl_key();
    let public = key.public_key().clone();
    let id = b"pending";
    let key_id = KeyId::new(id.to_vec()).unwrap();
    let (params, _) = cluster.store_shares(&key, 2, id, "pending key");
    for i in 1..=3 {
        assert_eq!(key_epochs(&cluster, i, &key_id), Some((None, Some(1))));
    }

    let x = BigUint::from_bytes_be(&[0x5a; 200]);
    let partial = |epoch| Request::Partial {
        key_id: key_id.clone(),
        epoch,
        input: public.integer_to_be(&x),
    };
    // A logged-in client may not use a pending epoch.
    for i in 1..=3 {
        let mut user = cluster.user_session(i, PIN);
        assert_eq!(
            partial_from(&mut user, i, &partial(1)).unwrap_err(),
            ErrorCode::WrongEpoch
        );
    }
    // The admin's trial partials, no PIN needed: any k of them combine into y, y^e = x.
    let mut admins: Vec<_> = (1..=3)
        .map(|i| cluster.connect_as(i, "admin").unwrap())
        .collect();
    let trial: Vec<Partial> = (1..=3u8)
        .zip(admins.iter_mut())
        .map(|(i, admin)| partial_from(admin, i, &partial(1)).unwrap())
        .collect();
    for pair in [[0, 1], [1, 2], [2, 0]] {
        let chosen = [trial[pair[0]].clone(), trial[pair[1]].clone()];
        let y = combine(&public, &params, &x, &chosen).unwrap();
        assert_eq!(y.modpow(public.e(), public.n()), x, "{pair:?}");
    }
    // An epoch that is not pending is not there for the admin either.
    assert_eq!(
        partial_from(&mut admins[0], 1, &partial(2)).unwrap_err(),
        ErrorCode::WrongEpoch
    );
    // Commit checks the epoch.
    let commit = |epoch| Request::CommitEpoch {
        key_id: key_id.clone(),
        epoch,
    };
    assert_eq!(
        error_code(admins[0].request(&commit(2)).unwrap()),
        ErrorCode::WrongEpoch
    );
    assert_eq!(
        error_code(
            admins[0]
                .request(&Request::CommitEpoch {
                    key_id: KeyId::new(b"nope".to_vec()).unwrap(),
                    epoch: 1,
                })
                .unwrap()
        ),
        ErrorCode::UnknownKey
    );

    cluster.commit_epoch(id, 1);
    for i in 1..=3 {
        assert_eq!(key_epochs(&cluster, i, &key_id), Some((Some(1), None)));
    }
    // Committed: a second commit finds nothing pending, the admin's partial is refused
    // and the client is served.
    assert_eq!(
        error_code(admins[0].request(&commit(1)).unwrap()),
        ErrorCode::WrongEpoch
    );
    for (i, admin) in (1..=3u8).zip(admins.iter_mut()) {
        assert_eq!(
            partial_from(admin, i, &partial(1)).unwrap_err(),
            ErrorCode::Forbidden
        );
    }
    let served: Vec<Partial> = [3u8, 1]
        .iter()
        .map(|&i| partial_from(&mut cluster.user_session(i, PIN), i, &partial(1)).unwrap())
        .collect();
    let y = combine(&public, &params, &x, &served).unwrap();
    assert_eq!(y.modpow(public.e(), public.n()), x);

    // Rollback: an uncommitted key is deleted from every appliance and can be imported
    // again under the same id.
    let id = b"rolled back";
    let rolled_back = KeyId::new(id.to_vec()).unwrap();
    cluster.store_shares(&key, 2, id, "rolled back");
    for (i, admin) in (1..=3u8).zip(admins.iter_mut()) {
        assert_eq!(key_epochs(&cluster, i, &rolled_back), Some((None, Some(1))));
        assert_eq!(
            admin
                .request(&Request::DeleteKey {
                    key_id: rolled_back.clone()
                })
                .unwrap(),
            Response::Ok
        );
        assert_eq!(key_epochs(&cluster, i, &rolled_back), None);
    }
    let mut user = cluster.user_session(1, PIN);
    let unknown = Request::Partial {
        key_id: rolled_back.clone(),
        epoch: 1,
        input: public.integer_to_be(&x),
    };
    assert_eq!(
        partial_from(&mut user, 1, &unknown).unwrap_err(),
        ErrorCode::UnknownKey
    );
    let params = cluster.import_key(&key, 2, id, "rolled back");
    let served: Vec<Partial> = [1u8, 2]
        .iter()
        .map(|&i| partial_from(&mut cluster.user_session(i, PIN), i, &unknown).unwrap())
        .collect();
    assert!(combine(&public, &params, &x, &served).is_ok());
    // The harness's import stored the public-key object too.
    match user
        .request(&Request::GetObject {
            handle: public_key_object_id(id),
        })
        .unwrap()
    {
        Response::Object { object, .. } => assert_eq!(object.class, ObjectClass::PublicKey),
        other => panic!("{other:?}"),
    }
}

fn openssl_verifies(key: &ImportedKey, msg: &[u8], sig: &[u8]) -> bool {
    let pkey = PKey::from_rsa(
        Rsa::from_public_components(
            key.openssl.n().to_owned().unwrap(),
            key.openssl.e().to_owned().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
    verifier.update(msg).unwrap();
    verifier.verify(sig).unwrap()
}

#[test]
fn partials_from_a_logged_in_client_combine_into_a_signature_openssl_verifies() {
    let mut cluster = Cluster::new(3, &Options::default());
    cluster.start_all();
    let key = import_key(&cluster, 2, b"\x01");
    cluster.set_user_pin(PIN);
    for indices in [[1u8, 2], [2, 3], [3, 1]] {
        let msg = format!("signed by {indices:?}");
        let sig = threshold_sign(&cluster, &key, &indices, msg.as_bytes());
        assert!(openssl_verifies(&key, msg.as_bytes(), &sig), "{indices:?}");
    }
    // Status reports the key and its epoch.
    let mut c = cluster.connect_as(2, "client").unwrap();
    match c.request(&Request::Status).unwrap() {
        Response::Status(s) => {
            assert_eq!(s.appliance_index, 2);
            assert_eq!(s.keys.len(), 1);
            assert_eq!(
                (
                    s.keys[0].active_epoch,
                    s.keys[0].pending_epoch,
                    s.keys[0].threshold,
                    s.keys[0].parties
                ),
                (Some(1), None, 2, 3)
            );
            assert_ne!(
                s.audit_head, [0u8; 32],
                "the imports and signatures were audited"
            );
        }
        other => panic!("{other:?}"),
    }
    // SIGTERM: finish, flush, exit 0.
    for i in 1..=3 {
        assert!(cluster.stop(i).success(), "appliance {i} exit status");
    }
}

#[test]
fn refused_certificates_and_roles_leave_the_daemon_serving() {
    let mut cluster = Cluster::new(2, &Options::default());
    cluster.start_all();
    let addr = cluster.address(1);

    // A client certificate from another CA (the client itself trusts the cluster CA).
    let stranger = Cluster::new(1, &Options::default());
    for ext in ["pem", "key"] {
        std::fs::copy(
            stranger.dir().join(format!("client.{ext}")),
            cluster.dir().join(format!("foreign.{ext}")),
        )
        .unwrap();
    }
    assert!(
        cluster.connect_as(1, "foreign").is_err(),
        "foreign CA accepted"
    );
    // And the other way round: an appliance of another cluster is not believed.
    assert!(
        connect(addr, 1, &stranger.identity("client")).is_err(),
        "foreign appliance believed"
    );

    // No client certificate at all.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(cluster.dir().join("ca.pem")).unwrap();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    };
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    assert!(
        raw_request(addr, Arc::new(anonymous), &hello_frame()).is_err(),
        "anonymous client served"
    );

    // An expired certificate from the right CA.
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let expired = cluster
        .ca
        .issue_with_validity(
            Role::Client,
            "expired",
            past - time::Duration::days(1),
            past,
        )
        .unwrap();
    std::fs::write(cluster.dir().join("expired.pem"), &expired.cert_pem).unwrap();
    std::fs::write(
        cluster.dir().join("expired.key"),
        expired.key_pem.as_bytes(),
    )
    .unwrap();
    assert!(
        cluster.connect_as(1, "expired").is_err(),
        "expired certificate accepted"
    );

    // Roles: a client may not delete keys or set PINs (without the security officer's
    // login), an admin's partial is a trial on a pending epoch only, an appliance may not
    // log in.
    let mut client = cluster.connect_as(1, "client").unwrap();
    let set_pin = Request::SetPin {
        user: UserKind::User,
        pin: SecretBytes::new(PIN.to_vec()),
    };
    assert_eq!(
        error_code(client.request(&set_pin).unwrap()),
        ErrorCode::NotLoggedIn
    );
    assert_eq!(
        error_code(
            client
                .request(&Request::DeleteKey {
                    key_id: KeyId::new(vec![1]).unwrap()
                })
                .unwrap()
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        error_code(
            client
                .request(&Request::CommitEpoch {
                    key_id: KeyId::new(vec![1]).unwrap(),
                    epoch: 1,
                })
                .unwrap()
        ),
        ErrorCode::Forbidden
    );
    let mut admin = cluster.connect_as(1, "admin").unwrap();
    let partial = Request::Partial {
        key_id: KeyId::new(vec![1]).unwrap(),
        epoch: 1,
        input: vec![2],
    };
    assert_eq!(
        error_code(admin.request(&partial).unwrap()),
        ErrorCode::UnknownKey
    );
    let mut peer = cluster.connect_as(1, "appliance-2").unwrap();
    let login = Request::Login {
        user: UserKind::User,
        pin: SecretBytes::new(PIN.to_vec()),
    };
    assert_eq!(
        error_code(peer.request(&login).unwrap()),
        ErrorCode::Forbidden
    );
    // A partial before login.
    assert_eq!(
        error_code(client.request(&partial).unwrap()),
        ErrorCode::NotLoggedIn
    );

    // Still serving: the client's own connection works on.
    assert!(matches!(
        client.request(&Request::Status).unwrap(),
        Response::Status(_)
    ));
    let log = cluster.log(1);
    for needle in ["TLS handshake refused", "may not send"] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
}

#[test]
fn wrong_pins_count_down_lock_and_stay_locked_after_restart() {
    let mut cluster = Cluster::new(
        1,
        &Options {
            max_pin_failures: 3,
            ..Options::default()
        },
    );
    cluster.start(1);
    cluster.set_user_pin(PIN);
    let login = |pin: &[u8]| Request::Login {
        user: UserKind::User,
        pin: SecretBytes::new(pin.to_vec()),
    };
    let mut c = cluster.connect_as(1, "client").unwrap();
    for remaining in [2u32, 1] {
        match c.request(&login(b"000000")).unwrap() {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::PinIncorrect);
                assert!(e.message.contains(&remaining.to_string()), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }
    // A correct PIN before the limit resets the count…
    assert_eq!(c.request(&login(PIN)).unwrap(), Response::Ok);
    assert_eq!(c.request(&Request::Logout).unwrap(), Response::Ok);
    // …and three wrong ones in a row lock it, the right PIN included.
    for _ in 0..3 {
        let code = error_code(c.request(&login(b"999999")).unwrap());
        assert!(matches!(
            code,
            ErrorCode::PinIncorrect | ErrorCode::PinLocked
        ));
    }
    assert_eq!(
        error_code(c.request(&login(PIN)).unwrap()),
        ErrorCode::PinLocked
    );
    drop(c);
    assert!(cluster.stop(1).success());
    cluster.start(1);
    let mut c = cluster.connect_as(1, "client").unwrap();
    assert_eq!(
        error_code(c.request(&login(PIN)).unwrap()),
        ErrorCode::PinLocked,
        "unlocked by a restart"
    );
    // The admin's SetPin unlocks.
    cluster.set_user_pin(PIN);
    assert_eq!(c.request(&login(PIN)).unwrap(), Response::Ok);
}

fn hello_frame() -> Vec<u8> {
    let body = ittc_wire::encode(&Request::Hello {
        protocol_version: ittc_wire::PROTOCOL_VERSION,
        client_name: "raw".into(),
    })
    .unwrap();
    frame(&body)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Opens a TLS connection as `config`, writes `bytes`, and reads one response frame.
fn raw_request(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    bytes: &[u8],
) -> Result<Response, String> {
    let mut stream = raw_stream(addr, config)?;
    raw_exchange(&mut stream, bytes)
}

type RawStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn raw_stream(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<RawStream, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("appliance-1.ittc").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn raw_exchange(stream: &mut RawStream, bytes: &[u8]) -> Result<Response, String> {
    stream.write_all(bytes).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    ittc_wire::decode(&body).map_err(|e| e.to_string())
}

#[test]
fn oversize_and_garbage_frames_are_refused_and_others_are_served() {
    let mut cluster = Cluster::new(
        1,
        &Options {
            max_frame: 4096,
            ..Options::default()
        },
    );
    let addr = cluster.start(1);
    let config = ittc_tests::client_config(&cluster.identity("client"));

    // Garbage with a valid length: BadRequest, and the connection goes on.
    let mut stream = raw_stream(addr, config.clone()).unwrap();
    assert!(matches!(
        raw_exchange(&mut stream, &hello_frame()).unwrap(),
        Response::HelloInfo(_)
    ));
    let garbage = frame(&[0xff; 100]);
    assert_eq!(
        error_code(raw_exchange(&mut stream, &garbage).unwrap()),
        ErrorCode::BadRequest
    );
    assert!(matches!(
        raw_exchange(
            &mut stream,
            &frame(&ittc_wire::encode(&Request::Status).unwrap())
        )
        .unwrap(),
        Response::Status(_)
    ));

    // Over the configured limit (and over the protocol's): FrameTooLarge, then closed,
    // without the appliance reading or allocating the announced body.
    for len in [4097u32, u32::MAX] {
        let mut stream = raw_stream(addr, config.clone()).unwrap();
        let mut bytes = hello_frame();
        bytes.extend_from_slice(&len.to_be_bytes());
        let response = raw_exchange(&mut stream, &bytes).unwrap();
        assert!(matches!(response, Response::HelloInfo(_)));
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut body).unwrap();
        assert_eq!(
            error_code(ittc_wire::decode(&body).unwrap()),
            ErrorCode::FrameTooLarge
        );
        assert_eq!(
            stream.read(&mut [0u8; 1]).unwrap_or(0),
            0,
            "connection not closed"
        );
    }

    // A request before Hello.
    let response = raw_request(
        addr,
        config.clone(),
        &frame(&ittc_wire::encode(&Request::Status).unwrap()),
    )
    .unwrap();
    assert_eq!(error_code(response), ErrorCode::BadRequest);

    // An unsupported protocol version.
    let old = ittc_wire::encode(&Request::Hello {
        protocol_version: 0,
        client_name: "old".into(),
    })
    .unwrap();
    assert_eq!(
        error_code(raw_request(addr, config, &frame(&old)).unwrap()),
        ErrorCode::UnsupportedVersion
    );

    // Still serving.
    let mut c = cluster.connect_as(1, "client").unwrap();
    assert!(matches!(
        c.request(&Request::Status).unwrap(),
        Response::Status(_)
    ));
}

fn object(handle: u64) -> TokenObject {
    TokenObject {
        handle: ObjectId(handle),
        class: ObjectClass::Data,
        attributes: vec![Attribute {
            kind: 0x11,
            value: handle.to_be_bytes().to_vec(),
        }],
    }
}

/// One client's loop: the next request, and what its answer acknowledged (`None` ends it).
type LoadClient<T> = Box<dyn FnMut() -> Option<T> + Send>;

/// Runs each client on a thread of its own until `at_least` requests in all are
/// acknowledged (a minute at most), then pulls the plug on appliance `index` in the middle
/// of their work (SIGKILL). Returns what was acknowledged, at least `at_least` of them.
fn kill_under_load<T: Send + 'static>(
    cluster: &mut Cluster,
    index: u8,
    clients: Vec<LoadClient<T>>,
    at_least: usize,
) -> Vec<T> {
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut next| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                while let Some(ack) = next() {
                    acknowledged.lock().unwrap().push(ack);
                }
            })
        })
        .collect();
    let start = std::time::Instant::now();
    while acknowledged.lock().unwrap().len() < at_least && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.kill(index);
    for t in threads {
        t.join().unwrap();
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(
        acknowledged.len() >= at_least,
        "only {} acknowledged before the kill",
        acknowledged.len()
    );
    acknowledged
}

/// The version the load writes its objects with.
const FIRST: ittc_wire::ObjectVersion = ittc_wire::ObjectVersion {
    counter: 1,
    writer: 0,
};

#[test]
fn sigkill_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new(1, &Options::default());
    cluster.start(1);
    let writers: Vec<LoadClient<u64>> = (0..4u64)
        .map(|w| {
            let mut c = cluster.connect_as(1, "admin").unwrap();
            let mut handles = (0..10_000u64).map(move |i| w * 1_000_000 + i);
            Box::new(move || {
                let handle = handles.next()?;
                let put = Request::PutObject {
                    object: object(handle),
                    version: FIRST,
                };
                match c.request(&put) {
                    Ok(Response::Ok) => Some(handle),
                    _ => None,
                }
            }) as LoadClient<u64>
        })
        .collect();
    let acknowledged = kill_under_load(&mut cluster, 1, writers, 200);

    cluster.start(1);
    let mut c = cluster.connect_as(1, "admin").unwrap();
    let stored: std::collections::HashSet<u64> = match c.request(&Request::ListObjects).unwrap() {
        Response::Objects(list) => list.iter().map(|o| o.handle.0).collect(),
        other => panic!("{other:?}"),
    };
    let lost: Vec<&u64> = acknowledged
        .iter()
        .filter(|h| !stored.contains(h))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // And what is stored is what was written.
    let sample = acknowledged[acknowledged.len() / 2];
    assert_eq!(
        c.request(&Request::GetObject {
            handle: ObjectId(sample)
        })
        .unwrap(),
        Response::Object {
            object: object(sample),
            version: FIRST
        }
    );
}

#[test]
fn no_share_is_in_the_database_files_in_plaintext() {
    let mut cluster = Cluster::new(3, &Options::default());
    cluster.start_all();
    let key = import_key(&cluster, 2, b"plaintext-check");
    for i in 1..=3u8 {
        assert!(cluster.stop(i).success());
        let share = &key.shares[usize::from(i) - 1];
        let mut files = Vec::new();
        let mut dirs = vec![cluster.appliances[usize::from(i) - 1].data_dir.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path)
                } else {
                    files.push(path)
                }
            }
        }
        assert!(!files.is_empty());
        let mut total = 0;
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            total += bytes.len();
            for window in share.windows(16).step_by(8) {
                assert!(
                    !bytes.windows(16).any(|w| w == window),
                    "share bytes of appliance {i} in {}",
                    file.display()
                );
            }
        }
        assert!(
            total > share.len(),
            "the database is too small to hold the share at all"
        );
    }
}

#[test]
fn check_config_names_the_field_and_exits_2() {
    let cluster = Cluster::new(1, &Options::default());
    let config = &cluster.appliances[0].config;
    let run = |path: &std::path::Path| {
        std::process::Command::new(ittc_tests::appliance_binary())
            .arg("--config")
            .arg(path)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let ok = run(config);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let text = std::fs::read_to_string(config).unwrap();
    for (broken, field) in [
        (text.replace("index = 1", "index = 99"), "index"),
        (
            text.replace("max_frame = ", "max_frame = 1 #"),
            "limits.max_frame",
        ),
        (
            text.replace("[limits]", "[limits]\nmax_conections = 3"),
            "max_conections",
        ),
        (
            text.replace("key = \"appliance-1.key\"", "key = \"missing.key\""),
            "tls.key",
        ),
        (
            text.replace("cluster_id = \"", "cluster_id = \"zz"),
            "cluster_id",
        ),
    ] {
        let path = cluster.dir().join("broken.toml");
        std::fs::write(&path, broken).unwrap();
        let out = run(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(field), "{field} not named: {stderr}");
    }
    let missing = run(&cluster.dir().join("nope.toml"));
    assert_eq!(missing.status.code(), Some(2));
}

/// `ittc-appliance audit verify` on stopped appliance `index`: the number of entries of an
/// intact chain.
fn audited_entries(cluster: &Cluster, index: u8) -> u64 {
    let out = std::process::Command::new(ittc_tests::appliance_binary())
        .args(["audit", "verify", "--config"])
        .arg(&cluster.appliances[usize::from(index) - 1].config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap()
}

/// A user login with the wrong PIN `wrong!` on appliance `index` (refused, counted).
fn wrong_login(cluster: &Cluster, index: u8) {
    let mut c = cluster.connect_as(index, "client").unwrap();
    let answer = c
        .request(&Request::Login {
            user: UserKind::User,
            pin: SecretBytes::new(b"wrong!".to_vec()),
        })
        .unwrap();
    assert_ne!(answer, Response::Ok);
}

/// No PIN and no share in the logs at any level: three appliances logging everything at
/// `trace` (rustls and tokio included) go through an import, a PIN set, signatures and a
/// wrong PIN, and their logs hold neither PIN nor any share, as hex, decimal or bytes.
#[test]
fn logs_at_trace_level_hold_no_pin_and_no_share() {
    let options = Options {
        log_level: "trace",
        ..Options::default()
    };
    let mut cluster = Cluster::new(3, &options);
    cluster.start_all();
    let key = import_key(&cluster, 2, b"quiet");
    cluster.set_user_pin(PIN);
    let sig = threshold_sign(&cluster, &key, &[1, 3], b"quiet message");
    let public = PKey::from_rsa(key.openssl.clone()).unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &public).unwrap();
    v.update(b"quiet message").unwrap();
    assert!(v.verify(&sig).unwrap());
    wrong_login(&cluster, 2);
    let mut secrets = logged_forms(PIN);
    secrets.extend(logged_forms(b"wrong!"));
    for share in &key.shares {
        secrets.extend(logged_forms(share));
    }
    cluster.assert_logs_hold_none_of(&secrets);
}

#[test]
fn audit_log_records_key_and_pin_requests_and_verifies() {
    let mut cluster = Cluster::new(2, &Options::default());
    cluster.start_all();
    let key = import_key(&cluster, 2, b"audited");
    cluster.set_user_pin(PIN);
    let _ = threshold_sign(&cluster, &key, &[1, 2], b"audited message");
    wrong_login(&cluster, 1);
    assert!(cluster.stop(1).success());
    // store_share, set_pin, login, partial, failed login: at least 5 entries.
    let entries = audited_entries(&cluster, 1);
    assert!(entries >= 5, "{entries} entries");
    // No PIN in the log.
    assert!(!cluster.log(1).contains("123456") && !cluster.log(1).contains("wrong!"));
}

/// A partial's entry is flushed while the share is applied, and the result must not leave
/// before the entry is on disk: after a SIGKILL in the middle of a run, every partial a
/// client received is in the chain, and the chain is intact.
#[test]
fn sigkill_during_partials_loses_no_audit_entry_of_an_answered_one() {
    let mut cluster = Cluster::new(2, &Options::default());
    cluster.start_all();
    let key = import_key(&cluster, 2, b"audit-kill");
    cluster.set_user_pin(PIN);
    assert!(cluster.stop(1).success());
    let before = audited_entries(&cluster, 1);
    cluster.start(1);

    let x = BigUint::from(0x1234_5678_9abc_u64);
    let request = Request::Partial {
        key_id: key.id.clone(),
        epoch: 1,
        input: key.public.integer_to_be(&x),
    };
    let clients = 4;
    let partials: Vec<LoadClient<Vec<u8>>> = (0..clients)
        .map(|_| {
            // Each session's login is an audited, acknowledged request too.
            let mut c = cluster.user_session(1, PIN);
            let request = request.clone();
            Box::new(move || match c.request(&request) {
                Ok(Response::PartialResult(p)) => Some(p.value),
                _ => None,
            }) as LoadClient<Vec<u8>>
        })
        .collect();
    let answered = kill_under_load(&mut cluster, 1, partials, 100);
    // The answers are real partials: x^(s_1 + 1·2^L) mod N, L the share's length in bits.
    let share = &key.shares[0];
    let exponent = BigUint::from_bytes_be(share) + (BigUint::from(1u8) << (8 * share.len()));
    let expected = x.modpow(&exponent, key.public.n());
    assert!(
        answered
            .iter()
            .all(|v| BigUint::from_bytes_be(v) == expected)
    );

    let after = audited_entries(&cluster, 1);
    let acknowledged = answered.len() as u64 + clients;
    assert!(
        after - before >= acknowledged,
        "{} entries for {acknowledged} acknowledged requests",
        after - before
    );
}

#[test]
fn excess_partials_get_busy_and_admitted_ones_are_correct() {
    let options = Options {
        max_inflight_partials: 1,
        partial_workers: 1,
        ..Options::default()
    };
    let mut cluster = Cluster::new(2, &options);
    cluster.start_all();
    let key = import_key(&cluster, 2, b"busy");
    cluster.set_user_pin(PIN);
    let input = key.public.integer_to_be(&BigUint::from(0x1234_5678u32));
    let expected_share_result = |value: &[u8]| !value.iter().all(|b| *b == 0);
    let outcomes: Vec<Vec<Response>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let mut c = cluster.user_session(1, PIN);
                let request = Request::Partial {
                    key_id: key.id.clone(),
                    epoch: 1,
                    input: input.clone(),
                };
                scope.spawn(move || (0..15).map(|_| c.request(&request).unwrap()).collect())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&Response> = outcomes.iter().flatten().collect();
    let busy = all
        .iter()
        .filter(|r| matches!(r, Response::Error(e) if e.code == ErrorCode::Busy))
        .count();
    let done: Vec<&Vec<u8>> = all
        .iter()
        .filter_map(|r| match r {
            Response::PartialResult(p) => Some(&p.value),
            _ => None,
        })
        .collect();
    assert_eq!(
        busy + done.len(),
        all.len(),
        "only results and Busy: {all:?}"
    );
    assert!(
        busy > 0,
        "4 clients against 1 admitted partial never saw Busy"
    );
    assert!(!done.is_empty());
    // Every admitted partial is the same, correct value: it combines with appliance 2's.
    assert!(
        done.iter()
            .all(|v| *v == done[0] && expected_share_result(v))
    );
    let mut c2 = cluster.user_session(2, PIN);
    let Response::PartialResult(p2) = c2
        .request(&Request::Partial {
            key_id: key.id.clone(),
            epoch: 1,
            input: input.clone(),
        })
        .unwrap()
    else {
        panic!("appliance 2")
    };
    let partials = [
        Partial {
            index: 1,
            value: BigUint::from_bytes_be(done[0]),
        },
        Partial {
            index: 2,
            value: BigUint::from_bytes_be(&p2.value),
        },
    ];
    assert!(
        combine(
            &key.public,
            &key.params,
            &BigUint::from(0x1234_5678u32),
            &partials
        )
        .is_ok()
    );
}

#[test]
fn connection_cap_idle_timeout_and_bad_inputs() {
    let options = Options {
        max_connections: 2,
        idle_timeout_ms: 500,
        log_format: "json",
        ..Options::default()
    };
    let mut cluster = Cluster::new(2, &options);
    cluster.start_all();
    let key = import_key(&cluster, 2, b"limits");
    cluster.set_user_pin(PIN);

    // Two connections are served; a third is closed at once.
    let mut first = cluster.user_session(1, PIN);
    let second = cluster.connect_as(1, "client").unwrap();
    assert!(
        cluster.connect_as(1, "client").is_err(),
        "a third connection was served"
    );
    drop(second);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let third = loop {
        match cluster.connect_as(1, "client") {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() > deadline => panic!("slot never freed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };

    // Inputs out of range are refused, not computed, and the connection goes on.
    let too_big = Request::Partial {
        key_id: key.id.clone(),
        epoch: 1,
        input: vec![0xff; key.public.size()],
    };
    assert_eq!(
        error_code(first.request(&too_big).unwrap()),
        ErrorCode::BadRequest
    );
    let unknown = Request::Partial {
        key_id: KeyId::new(b"nope".to_vec()).unwrap(),
        epoch: 1,
        input: vec![2],
    };
    assert_eq!(
        error_code(first.request(&unknown).unwrap()),
        ErrorCode::UnknownKey
    );
    let epoch = Request::Partial {
        key_id: key.id.clone(),
        epoch: 7,
        input: vec![2],
    };
    assert_eq!(
        error_code(first.request(&epoch).unwrap()),
        ErrorCode::WrongEpoch
    );

    // Idle connections are closed after the idle timeout.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        first.request(&Request::Status).is_err(),
        "idle connection still open"
    );
    drop(third);

    // JSON logs: every line an object, none with the PIN; the refused partial of the
    // wrong epoch is a line with its outcome, the request's id and kind, and the peer's
    // role.
    let log = cluster.log(1);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() > 5);
    assert!(!log.contains("123456"));
    let refused = lines
        .iter()
        .find(|l| l["fields"]["code"] == "WrongEpoch")
        .unwrap_or_else(|| panic!("no line for the wrong epoch:\n{log}"));
    assert_eq!(refused["fields"]["outcome"], "refused", "{refused}");
    assert_eq!(refused["span"]["name"], "request", "{refused}");
    assert_eq!(refused["span"]["kind"], "partial", "{refused}");
    assert!(refused["span"]["id"].as_u64().is_some(), "{refused}");
    let peer = refused["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "peer"))
        .unwrap_or_else(|| panic!("no peer span: {refused}"));
    assert_eq!(peer["role"], "client", "{refused}");
    // Request ids are distinct.
    let ids: std::collections::BTreeSet<u64> = lines
        .iter()
        .filter_map(|l| l["span"]["id"].as_u64())
        .collect();
    assert!(ids.len() > 1, "{log}");
}

/// The value of `series` in `text`, which must be there.
fn metric_in(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Prometheus metrics, scraped while signatures run: the partials served and the latency
/// histogram move by exactly what appliance 1 served, as each scrape shows them growing;
/// refusals, wrong PINs, a lockout and a refused connection are counted by reason; the
/// store's values (the key's epoch and age, the audit chain, the database's size) are
/// there; the listener answers only `GET`/`HEAD /metrics`; and the text holds no PIN or
/// share.
#[test]
fn metrics_move_while_signing() {
    let options = Options {
        metrics: true,
        ..Options::default()
    };
    let mut cluster = Cluster::new(3, &options);
    cluster.start_all();
    let served = "ittc_requests_total{kind=\"partial\",outcome=\"ok\"}";
    let first = cluster.scrape(1);
    assert_eq!(metric(&first, served), None);
    let build = first
        .lines()
        .find(|l| l.starts_with("ittc_build_info{"))
        .unwrap();
    assert!(
        build.ends_with(" 1") && build.contains("variant=\""),
        "{build}"
    );

    let key = import_key(&cluster, 2, b"watched");
    cluster.set_user_pin(PIN);
    let before = cluster.scrape(1);
    let served_before = metric(&before, served).unwrap_or(0.0);
    let audit_before = metric_in(&before, "ittc_audit_entries");
    // A client connection open throughout.
    let mut held = cluster.user_session(1, PIN);

    let signatures = 30;
    let mut scraped = Vec::new();
    let made = std::thread::scope(|scope| {
        let signer = scope.spawn(|| {
            (0..signatures)
                .map(|i| {
                    let message = format!("watched message {i}");
                    let sig = threshold_sign(&cluster, &key, &[1, 2], message.as_bytes());
                    (message, sig)
                })
                .collect::<Vec<_>>()
        });
        while !signer.is_finished() {
            scraped.push(cluster.scrape(1));
            std::thread::sleep(Duration::from_millis(10));
        }
        signer.join().unwrap()
    });
    let public = PKey::from_rsa(key.openssl.clone()).unwrap();
    for (message, sig) in &made {
        let mut v = Verifier::new(MessageDigest::sha256(), &public).unwrap();
        v.update(message.as_bytes()).unwrap();
        assert!(v.verify(sig).unwrap());
    }
    let after = cluster.scrape(1);
    let total = metric_in(&after, served);
    assert_eq!(total - served_before, f64::from(signatures));
    // Every scrape during the run saw the count grow, never shrink, and some saw it
    // between its start and its end.
    let counts: Vec<f64> = scraped
        .iter()
        .map(|t| metric(t, served).unwrap_or(0.0))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(
        counts.iter().any(|c| *c > served_before && *c < total),
        "no scrape in the middle of the run: {counts:?}"
    );
    for text in &scraped {
        assert!(metric_in(text, "ittc_connections{role=\"client\"}") >= 1.0);
        assert!(metric_in(text, "ittc_partials_in_flight") >= 0.0);
        assert!(metric_in(text, "ittc_requests_in_flight") >= 0.0);
    }
    // The histogram counted each served partial once, each under 20 s.
    assert_eq!(metric_in(&after, "ittc_partial_seconds_count"), total);
    assert_eq!(
        metric_in(&after, "ittc_partial_seconds_bucket{le=\"+Inf\"}"),
        total
    );
    assert!(metric_in(&after, "ittc_partial_seconds_sum") > 0.0);
    // Each signature logged in first (its own connection).
    assert!(
        metric_in(&after, "ittc_requests_total{kind=\"login\",outcome=\"ok\"}")
            >= f64::from(signatures)
    );
    // The store's values.
    let epoch = format!("ittc_key_epoch{{key=\"{}\",label=\"test key\"}}", key.id);
    assert_eq!(metric_in(&after, &epoch), 1.0);
    let age = format!(
        "ittc_key_refresh_age_seconds{{key=\"{}\",label=\"test key\"}}",
        key.id
    );
    assert!((0.0..600.0).contains(&metric_in(&after, &age)));
    assert!(metric_in(&after, "ittc_audit_entries") >= audit_before + f64::from(signatures));
    assert!(metric_in(&after, "ittc_database_bytes") > 0.0);

    // Refusals, by reason.
    let wrong_epoch = Request::Partial {
        key_id: key.id.clone(),
        epoch: 7,
        input: vec![2; 256],
    };
    assert_eq!(
        error_code(held.request(&wrong_epoch).unwrap()),
        ErrorCode::WrongEpoch
    );
    let mut anonymous = cluster.connect_as(1, "client").unwrap();
    assert_eq!(
        error_code(anonymous.request(&wrong_epoch).unwrap()),
        ErrorCode::NotLoggedIn
    );
    for _ in 0..options.max_pin_failures {
        wrong_login(&cluster, 1);
    }
    // Not TLS at all: refused in the handshake.
    let mut plain = TcpStream::connect(cluster.address(1)).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = plain.read(&mut [0u8; 64]);
    // The appliance closes the connection as the handshake fails and counts the refusal
    // just after: the count may lag the close a moment.
    let handshake_failed = "ittc_connections_refused_total{reason=\"handshake_failed\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let scraped = cluster.scrape(1);
        if metric_in(&scraped, handshake_failed) > 0.0 || std::time::Instant::now() > deadline {
            break scraped;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for (series, value) in [
        ("ittc_partials_refused_total{reason=\"wrong_epoch\"}", 1.0),
        ("ittc_partials_refused_total{reason=\"not_logged_in\"}", 1.0),
        (
            "ittc_pin_failures_total",
            f64::from(options.max_pin_failures),
        ),
        ("ittc_pin_lockouts_total", 1.0),
        ("ittc_pin_locked{user=\"user\"}", 1.0),
        ("ittc_pin_locked{user=\"so\"}", 0.0),
        (handshake_failed, 1.0),
    ] {
        assert_eq!(metric_in(&refused, series), value, "{series}");
    }

    assert_eq!(metric_in(&refused, "ittc_requests_in_flight"), 0.0);
    // Closed connections leave the gauge.
    drop((held, anonymous));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric_in(&cluster.scrape(1), "ittc_connections{role=\"client\"}") > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "client connections still counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Only GET and HEAD of /metrics; a head that does not end is cut off.
    let answer = |request: &str| cluster.metrics_http(1, request);
    assert!(answer("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(answer("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    let head = answer("HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // One byte over the limit, all of it read by the listener (so its close is not a reset).
    let start = "GET /metrics HTTP/1.1\r\nX: ";
    let endless = format!("{start}{}\r\n", "a".repeat(4097 - start.len() - 2));
    assert!(answer(&endless).starts_with("HTTP/1.1 431 "));

    let mut secrets = logged_forms(PIN);
    for share in &key.shares {
        secrets.extend(logged_forms(share));
    }
    for secret in &secrets {
        assert!(!refused.contains(secret.as_str()));
    }
}
