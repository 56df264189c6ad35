//! A mixed cluster: one appliance of each build variant of `scripts/variants` (another
//! exponentiation backend, TLS crypto provider and allocator each) imports a key,
//! generates one with no dealer, signs, decrypts, refreshes and rebuilds a share, with
//! every result checked by OpenSSL; and every seed of the wire fuzz corpus is sent to
//! each variant, which must go on answering. Real appliance processes on 127.0.0.1.
//!
//! The test command builds the variants first (`scripts/variants --debug`); to run these
//! alone, do that, then `cargo test -p ittc-tests --test variants`.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ittc_tests::{Cluster, Options, variant_binaries};
use ittc_threshold::{Combiner, Partial, RsaPrivateKey, RsaPublicKey, SharingParams};
use ittc_wire::client::Timeouts;
use ittc_wire::{KEYGEN_EPOCH, KeyId, KeygenSpec, Participant, Request, Response};
use num_bigint::BigUint;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Verifier;

const PIN: &[u8] = b"975310";
const IMPORTED: &[u8] = b"\x1a";
const GENERATED: &[u8] = b"\x1b";

/// Three appliances, appliance i running variant i; checks that each reports its variant
/// and that no two share one.
fn mixed_cluster() -> Cluster {
    let variants = variant_binaries();
    assert!(
        variants.len() >= 3,
        "three build variants are needed: run scripts/variants first (the test command \
         does): {variants:?}"
    );
    let options = Options {
        keygen_min_bits: Some(1024),
        ..Options::default()
    };
    let mut cluster = Cluster::new(3, &options);
    for (index, (_, _, binary)) in (1u8..=3).zip(&variants) {
        cluster.set_binary(index, binary.clone());
        cluster.start(index);
    }
    let reported: Vec<String> = (1..=3)
        .map(|i| match admin(&cluster, i, &Request::Status) {
            Response::Status(s) => s.build_variant,
            other => panic!("{other:?}"),
        })
        .collect();
    for ((_, name, _), seen) in variants.iter().zip(&reported) {
        assert_eq!(name, seen, "a variant reports another name");
    }
    let mut distinct = reported.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{reported:?}");
    cluster
}

fn admin(cluster: &Cluster, index: u8, request: &Request) -> Response {
    cluster
        .connect_as(index, "admin")
        .unwrap()
        .request(request)
        .unwrap()
}

/// `x^d mod N` for key `id` at `epoch`, from the partials of `set`, combined; checked by
/// the caller.
fn private_op(
    cluster: &Cluster,
    id: &[u8],
    public: &RsaPublicKey,
    params: &SharingParams,
    set: &[u8],
    epoch: u64,
    x: &BigUint,
) -> BigUint {
    let partials: Vec<Partial> = set
        .iter()
        .map(|&index| {
            let mut c = cluster.user_session(index, PIN);
            match c
                .request(&Request::Partial {
                    key_id: KeyId::new(id.to_vec()).unwrap(),
                    epoch,
                    input: public.integer_to_be(x),
                })
                .unwrap()
            {
                Response::PartialResult(p) => Partial {
                    index: usize::from(index),
                    value: BigUint::from_bytes_be(&p.value),
                },
                other => panic!("appliance {index}: {other:?}"),
            }
        })
        .collect();
    Combiner::new(public, params)
        .unwrap()
        .combine(x, &partials)
        .unwrap_or_else(|e| panic!("{set:?} on epoch {epoch}: {e}"))
}

/// Signs a message with SHA-256 PKCS#1 v1.5 through every 2-set and verifies each
/// signature with OpenSSL; then OpenSSL encrypts with PKCS#1 v1.5 and every 2-set
/// decrypts.
fn signs_and_decrypts(cluster: &Cluster, id: &[u8], public: &RsaPublicKey, epoch: u64) {
    use ittc_threshold::padding::{HashAlg, pkcs1v15_sign};
    let params = SharingParams::new(2, 3).unwrap();
    let ossl = Rsa::from_public_components(
        openssl::bn::BigNum::from_slice(&public.n_be()).unwrap(),
        openssl::bn::BigNum::from_slice(&public.e_be()).unwrap(),
    )
    .unwrap();
    let pkey = PKey::from_rsa(ossl.clone()).unwrap();
    let message = b"signed by three different builds";
    let hash = HashAlg::Sha256;
    let em = pkcs1v15_sign(hash, &hash.digest(message), public.size()).unwrap();
    let x = BigUint::from_bytes_be(&em);
    let mut secret = vec![0u8; public.size()];
    let plain = b"a session key for the mixed cluster";
    let len = ossl
        .public_encrypt(plain, &mut secret, Padding::PKCS1)
        .unwrap();
    let c = BigUint::from_bytes_be(&secret[..len]);
    for set in [[1u8, 2], [1, 3], [2, 3]] {
        let y = private_op(cluster, id, public, &params, &set, epoch, &x);
        let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        verifier.update(message).unwrap();
        assert!(
            verifier.verify(&public.integer_to_be(&y)).unwrap(),
            "OpenSSL rejects the signature of {set:?} on epoch {epoch}"
        );
        let m = public.integer_to_be(&private_op(cluster, id, public, &params, &set, epoch, &c));
        // PKCS#1 v1.5 type 2: 00 02 PS 00 M.
        assert_eq!(&m[..2], &[0, 2]);
        let at = m[2..].iter().position(|&b| b == 0).unwrap() + 3;
        assert_eq!(&m[at..], plain, "{set:?} on epoch {epoch}");
    }
}

fn key_status(cluster: &Cluster, index: u8, id: &[u8]) -> Option<ittc_wire::KeyStatus> {
    match admin(cluster, index, &Request::Status) {
        Response::Status(s) => s.keys.into_iter().find(|k| k.key_id.as_bytes() == id),
        _ => None,
    }
}

/// An admin connection to appliance `index` that waits up to `io` for an answer.
fn admin_waiting(cluster: &Cluster, index: u8, io: Duration) -> ittc_wire::Connection {
    ittc_wire::Connection::connect(
        cluster.address(index),
        index,
        cluster.identity("admin").client_config().unwrap(),
        Timeouts {
            connect: Duration::from_secs(3),
            io,
        },
        "variants test",
    )
    .unwrap()
}

fn refresh(cluster: &Cluster, id: &[u8]) -> u64 {
    match admin_waiting(cluster, 1, Duration::from_secs(120))
        .request(&Request::RefreshKey {
            key_id: KeyId::new(id.to_vec()).unwrap(),
            session: rand::random(),
        })
        .unwrap()
    {
        Response::Refreshed(o) => o.to_epoch,
        other => panic!("refresh: {other:?}"),
    }
}

#[test]
fn a_mixed_cluster_imports_generates_signs_decrypts_refreshes_and_rebuilds() {
    let mut cluster = mixed_cluster();
    // An imported key.
    let rsa = Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
    cluster.import_key(&key, 2, IMPORTED, "imported");
    cluster.set_user_pin(PIN);
    let public = key.public_key().clone();
    signs_and_decrypts(&cluster, IMPORTED, &public, 1);

    // A key the three generate with no dealer.
    let spec = KeygenSpec {
        session: rand::random(),
        key_id: KeyId::new(GENERATED.to_vec()).unwrap(),
        label: "generated".into(),
        bits: 1024,
        public_exponent: 65537,
        threshold: 2,
        participants: (1..=3)
            .map(|index| Participant {
                index,
                address: cluster.address(index).to_string(),
            })
            .collect(),
        parties: 3,
        holders: vec![1, 2, 3],
    };
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=3u8)
            .map(|index| {
                let (cluster, spec) = (&cluster, &spec);
                scope.spawn(move || {
                    admin_waiting(cluster, index, Duration::from_secs(600))
                        .request(&Request::GenerateKey(spec.clone()))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let results: Vec<_> = answers
        .into_iter()
        .map(|a| match a {
            Response::KeyGenerated(r) => r,
            other => panic!("generation: {other:?}"),
        })
        .collect();
    assert!(results.iter().all(|r| r.modulus == results[0].modulus));
    let generated =
        RsaPublicKey::from_be_bytes(&results[0].modulus, &results[0].public_exponent).unwrap();
    cluster.commit_epoch(GENERATED, KEYGEN_EPOCH);
    signs_and_decrypts(&cluster, GENERATED, &generated, KEYGEN_EPOCH);

    // A refresh across the three builds.
    assert_eq!(refresh(&cluster, IMPORTED), 2);
    signs_and_decrypts(&cluster, IMPORTED, &public, 2);

    // Appliance 3 misses a refresh and rebuilds its share from the other two builds.
    cluster.stop(3);
    assert_eq!(refresh(&cluster, IMPORTED), 3);
    cluster.restart(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while key_status(&cluster, 3, IMPORTED).and_then(|s| s.active_epoch) != Some(3) {
        assert!(
            Instant::now() < deadline,
            "appliance 3 did not catch up:\n{}",
            cluster.log(3)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signs_and_decrypts(&cluster, IMPORTED, &public, 3);
}

/// The seed corpus of the wire decoder (`fuzz/corpus/decode`): each seed is sent as it is
/// to each variant, on a mutual-TLS connection with the client's certificate; every
/// variant must still answer afterwards, and none may have died.
#[test]
fn every_variant_survives_the_fuzz_corpus() {
    let mut cluster = mixed_cluster();
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    assert!(seeds.len() > 20, "{} seeds", seeds.len());
    let config: Arc<rustls::ClientConfig> = cluster.identity("client").client_config().unwrap();
    for index in 1..=3u8 {
        for seed in &seeds {
            let bytes = std::fs::read(seed).unwrap();
            let name =
                rustls::pki_types::ServerName::try_from(format!("appliance-{index}")).unwrap();
            let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
            let tcp = TcpStream::connect(cluster.address(index)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // A write may fail once the appliance has closed the connection on a bad
            // frame; that is an answer too.
            let _ = tls.write_all(&bytes).and_then(|()| tls.flush());
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer);
        }
        assert!(
            matches!(
                admin(&cluster, index, &Request::Status),
                Response::Status(_)
            ),
            "appliance {index} stopped answering after the corpus"
        );
    }
    // Each stops cleanly on SIGTERM: none died on the way.
    for index in 1..=3 {
        assert!(cluster.stop(index).success(), "appliance {index}");
    }
}
