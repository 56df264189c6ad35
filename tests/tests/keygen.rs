//! Dealerless key generation across real appliances: `ittc key generate` on three
//! `ittc-appliance` processes (made by `ittc init`, so each knows its peers), the key used
//! through the PKCS#11 module (`ittc sign`) and the signature verified by OpenSSL; and an
//! appliance killed in the middle of a generation: a clear error, nothing left anywhere,
//! and the next attempt works.
//!
//! Build first: `cargo build -p ittc-appliance -p ittc-provisioning -p ittc-pkcs11`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ittc_provisioning::cluster::Cluster as CliCluster;
use ittc_tests::cli::{InitCluster, ittc, ok};
use ittc_wire::attributes::{CKA_MODULUS, CKA_PUBLIC_EXPONENT};
use ittc_wire::{ObjectId, Request, Response};
use openssl::bn::BigNum;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;

/// Appliance config that allows the 1024-bit generations these tests run.
const SMALL_KEYS: &str = "[keygen]\nmin_bits = 1024\ntimeout_ms = 600000\n";

/// `ittc key generate` of a 1024-bit key with id `id`.
fn generate(cluster: &InitCluster, id: &str) -> Command {
    let mut command = ittc(&[
        "--cluster",
        &cluster.arg(),
        "key",
        "generate",
        "--bits",
        "1024",
        "--label",
        "generated",
        "--id",
        id,
    ]);
    command.stdin(Stdio::null());
    command
}

/// Every appliance's keys: (appliance, key id hex, active epoch, pending epoch).
fn keys_of(cluster: &InitCluster) -> Vec<(u8, String, Option<u64>, Option<u64>)> {
    let cli = CliCluster::open(&cluster.dir).unwrap();
    let mut out = Vec::new();
    for index in cli.indices() {
        let Ok(mut c) = cli.connect(index) else {
            continue;
        };
        if let Ok(Response::Status(s)) = c.request(&Request::Status) {
            for k in s.keys {
                out.push((
                    index,
                    hex::encode(k.key_id.as_bytes()),
                    k.active_epoch,
                    k.pending_epoch,
                ));
            }
        }
    }
    out
}

/// The public key object of `id`, read from appliance 1.
fn public_key(cluster: &InitCluster, id: &[u8]) -> PKey<openssl::pkey::Public> {
    let cli = CliCluster::open(&cluster.dir).unwrap();
    let mut c = cli.connect(1).unwrap();
    let handle = ObjectId::derived("public-key", id);
    let Response::Object(object) = c.request(&Request::GetObject { handle }).unwrap() else {
        panic!("no public key object")
    };
    let n = BigNum::from_slice(object.attribute(CKA_MODULUS).unwrap()).unwrap();
    let e = BigNum::from_slice(object.attribute(CKA_PUBLIC_EXPONENT).unwrap()).unwrap();
    PKey::from_rsa(Rsa::from_public_components(n, e).unwrap()).unwrap()
}

#[test]
fn generated_1024_bit_key_signs_through_the_module() {
    let running = InitCluster::new(3, 2, SMALL_KEYS);
    let pin = running.set_user_pin(b"246810\n");
    let started = Instant::now();
    let out = ok(generate(&running, "0a").output().unwrap());
    eprintln!(
        "1024-bit generation: {:.1} s\n{out}",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("generated RSA-1024 key id 0a"), "{out}");
    assert!(out.contains("candidates tried"), "{out}");
    let keys = keys_of(&running);
    assert_eq!(keys.len(), 3, "{keys:?}");
    for (_, id, active, pending) in &keys {
        assert_eq!((id.as_str(), *active, *pending), ("0a", Some(1), None));
    }
    running.sign_and_verify("0a", &pin, &public_key(&running, &[0x0a]));

    // The same id again is refused before anything starts.
    let again = generate(&running, "0a").output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(keys_of(&running).len(), 3);
    // No secret in any log.
    for i in 1..=3 {
        let log = running.log(i);
        assert!(log.contains("key generation finished"), "{log}");
    }
}

#[test]
fn an_appliance_killed_midway_leaves_nothing_and_the_next_attempt_works() {
    let mut running = InitCluster::new(3, 2, SMALL_KEYS);
    let pin = running.set_user_pin(b"246810\n");
    let child = generate(&running, "0b")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until appliance 3 is in the protocol, then kill it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.log(3).contains("key generation started") {
        assert!(Instant::now() < deadline, "the generation never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    running.kill(3);
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("appliance 3"), "{stderr}");
    assert!(stderr.contains("nothing is left"), "{stderr}");
    assert!(
        waited < Duration::from_secs(30),
        "took {waited:?} to notice"
    );
    eprintln!("noticed in {waited:?}: {stderr}");
    assert!(keys_of(&running).is_empty(), "{:?}", keys_of(&running));
    for i in 1..=2 {
        assert!(running.log(i).contains("key generation failed"));
    }

    running.start(3);
    ok(generate(&running, "0b").output().unwrap());
    assert_eq!(keys_of(&running).len(), 3);
    running.sign_and_verify("0b", &pin, &public_key(&running, &[0x0b]));
}

/// How long a 2048-bit generation takes on three local appliances (not run by default:
/// `cargo test -p ittc-tests --test keygen -- --ignored --nocapture`).
#[test]
#[ignore = "slow: a 2048-bit generation"]
fn timing_2048_bit_generation() {
    let running = InitCluster::new(3, 2, SMALL_KEYS);
    let started = Instant::now();
    let out = ok(ittc(&[
        "--cluster",
        &running.arg(),
        "key",
        "generate",
        "--bits",
        "2048",
        "--label",
        "big",
        "--id",
        "0c",
    ])
    .output()
    .unwrap());
    eprintln!(
        "2048-bit generation on 3 local appliances: {:.1} s\n{out}",
        started.elapsed().as_secs_f64()
    );
}
