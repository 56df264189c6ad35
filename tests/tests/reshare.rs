//! Growing and shrinking a cluster (`ittc appliance add`, `ittc cluster reshare`): a
//! 2-of-3 key becomes 3-of-5 on two new appliances, then 2-of-4 with one of the first
//! appliances retired; it signs through the PKCS#11 module after each step, and the
//! retired appliance's last share combines with no new one. Real `ittc` and
//! `ittc-appliance` processes on 127.0.0.1.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use ittc_tests::cli::{InitCluster, ok, run_ittc};
use ittc_threshold::{Combiner, Partial, RsaPublicKey, SharingParams};
use ittc_wire::client::{Connection, Timeouts, TlsIdentity};
use ittc_wire::cluster::{ClusterConfig, FILE_NAME};
use ittc_wire::{KeyId, Request, Response, SecretBytes, UserKind};
use num_bigint::BigUint;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;

/// Cheap PIN hashes (these tests log in often), and 1024-bit generated keys.
const EXTRA: &str = "[pin]\nargon2_m_cost_kib = 256\nargon2_t_cost = 1\n\
                     [keygen]\nmin_bits = 1024\ntimeout_ms = 600000\n";
const PIN: &[u8] = b"246810";

fn key_id() -> KeyId {
    KeyId::new(vec![0xa1]).unwrap()
}

fn identity(dir: &Path, name: &str) -> TlsIdentity {
    TlsIdentity::from_pem_files(
        &dir.join("ca.pem"),
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
    )
    .unwrap()
}

/// A connection to appliance `index` at `addr` as `who`.
fn connect(dir: &Path, addr: SocketAddr, index: u8, who: &str) -> Connection {
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(10),
    };
    Connection::connect(
        addr,
        index,
        identity(dir, who).client_config().unwrap(),
        timeouts,
        "reshare test",
    )
    .unwrap()
}

/// Appliance `index`'s partial of key a1 at `epoch` on `input`, as a logged-in client.
fn partial(dir: &Path, addr: SocketAddr, index: u8, epoch: u64, input: &[u8]) -> Partial {
    let mut conn = connect(dir, addr, index, "client");
    let login = conn
        .request(&Request::Login {
            user: UserKind::User,
            pin: SecretBytes::new(PIN.to_vec()),
        })
        .unwrap();
    assert_eq!(login, Response::Ok);
    match conn
        .request(&Request::Partial {
            key_id: key_id(),
            epoch,
            input: input.to_vec(),
        })
        .unwrap()
    {
        Response::PartialResult(p) => Partial {
            index: usize::from(index),
            value: BigUint::from_bytes_be(&p.value),
        },
        other => panic!("appliance {index}, epoch {epoch}: {other:?}"),
    }
}

/// The keys appliance `index` at `addr` holds (as the admin sees them).
fn held_keys(dir: &Path, addr: SocketAddr, index: u8) -> Vec<ittc_wire::KeyStatus> {
    match connect(dir, addr, index, "admin")
        .request(&Request::Status)
        .unwrap()
    {
        Response::Status(s) => s.keys,
        other => panic!("{other:?}"),
    }
}

/// `ittc status --json`'s entry for key a1.
fn key_report(running: &InitCluster) -> serde_json::Value {
    let (_, status) = running.status();
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "a1")
        .cloned()
        .unwrap_or_else(|| panic!("no key a1: {status}"))
}

/// Waits (at most 30 s) until every holder of key a1 has `epoch` active and none is
/// behind or has an epoch to erase.
fn wait_settled(running: &InitCluster, epoch: u64, holders: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let k = key_report(running);
        let settled = k["epoch"] == epoch
            && k["holders"] == serde_json::json!(holders)
            && k["behind"].as_array().is_some_and(Vec::is_empty)
            && k["retiring_epochs"].as_array().is_some_and(Vec::is_empty);
        if settled {
            return;
        }
        assert!(Instant::now() < deadline, "never settled: {k}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `ittc cluster reshare`; its output, or a failure with every appliance's log.
fn reshare(running: &InitCluster, threshold: &str, appliances: &str) -> String {
    let out = run_ittc(&[
        "--cluster",
        &running.arg(),
        "cluster",
        "reshare",
        "--threshold",
        threshold,
        "--appliances",
        appliances,
    ]);
    if !out.status.success() {
        let logs: String = (1..=5)
            .map(|i| format!("--- appliance {i}\n{}", running.log(i)))
            .collect();
        panic!(
            "reshare failed: {}\n{}\n{logs}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_key_grows_from_2_of_3_to_3_of_5_then_shrinks_to_2_of_4_without_a_retired_appliance() {
    let mut running = InitCluster::new(3, 2, EXTRA);
    let c = running.arg();
    let dir = running.dir.clone();
    let pin_file = running.set_user_pin(PIN);
    let rsa = running.import_new_key("web", "a1");
    let public_pkey = PKey::from_rsa(
        Rsa::from_public_components(rsa.n().to_owned().unwrap(), rsa.e().to_owned().unwrap())
            .unwrap(),
    )
    .unwrap();
    let public = RsaPublicKey::from_be_bytes(&rsa.n().to_vec(), &rsa.e().to_vec()).unwrap();
    running.sign_and_verify("a1", &pin_file, &public_pkey);

    // Two new appliances, on free loopback ports; the first three restart one at a time
    // to read their new peers (the key signs all along).
    for index in [4u8, 5] {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ok(run_ittc(&[
            "--cluster",
            &c,
            "appliance",
            "add",
            "--index",
            &index.to_string(),
            "--host",
            &format!("127.0.0.1:{port}"),
        ]));
        std::fs::write(
            dir.join(format!("appliance-{index}.toml")),
            std::fs::read_to_string(dir.join(format!("appliance-{index}.toml"))).unwrap()
                + "\n"
                + EXTRA,
        )
        .unwrap();
        running.start(index);
    }
    for index in 1..=3 {
        running.kill(index);
        running.start(index);
    }

    // 2-of-3 → 3-of-5.
    let out = reshare(&running, "3", "1,2,3,4,5");
    assert!(out.contains("key a1 reshared: epoch 1 -> 2"), "{out}");
    let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
    assert_eq!(config.threshold, 3);
    assert_eq!(config.appliances.len(), 5);
    wait_settled(&running, 2, &[1, 2, 3, 4, 5]);
    let k = key_report(&running);
    assert_eq!(
        (k["threshold"].as_u64(), k["tolerates"].as_u64()),
        (Some(3), Some(2)),
        "{k}"
    );
    running.sign_and_verify("a1", &pin_file, &public_pkey);
    // Any 3 of the 5 combine; 2 do not make a result any more.
    let p35 = SharingParams::new(3, 5).unwrap();
    let input = public.integer_to_be(&BigUint::from(0x5eed_u32));
    let x = BigUint::from_bytes_be(&input);
    let epoch2: Vec<Partial> = (1..=5)
        .map(|i| partial(&dir, running.address(i), i, 2, &input))
        .collect();
    let combiner = Combiner::new(&public, &p35).unwrap();
    for set in [[0, 1, 2], [2, 3, 4], [0, 3, 4]] {
        let chosen: Vec<Partial> = set.iter().map(|&i| epoch2[i].clone()).collect();
        assert!(combiner.combine(&x, &chosen).is_ok(), "{set:?}");
    }
    assert!(combiner.combine(&x, &epoch2[3..5]).is_err());
    // What appliance 2 holds last, before it is retired.
    let retired_addr = running.address(2);
    let stolen = epoch2[1].clone();

    // 3-of-5 → 2-of-4 on {1, 3, 4, 5}: appliance 2 retires.
    let out = reshare(&running, "2", "1,3,4,5");
    assert!(out.contains("key a1 reshared: epoch 2 -> 3"), "{out}");
    assert!(
        out.contains("appliances [2] hold no share any more"),
        "{out}"
    );
    let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
    assert_eq!(config.threshold, 2);
    assert_eq!(
        config
            .appliances
            .iter()
            .map(|a| a.index)
            .collect::<Vec<_>>(),
        [1, 3, 4, 5]
    );
    wait_settled(&running, 3, &[1, 3, 4, 5]);
    let k = key_report(&running);
    assert_eq!(k["threshold"], 2, "{k}");
    assert_eq!(k["members"], serde_json::json!([1, 3, 4, 5]), "{k}");
    running.sign_and_verify("a1", &pin_file, &public_pkey);
    // Appliance 2 erased the key, and its last share combines with no share of the new
    // sharing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held_keys(&dir, retired_addr, 2).is_empty() {
        assert!(Instant::now() < deadline, "appliance 2 still holds the key");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        running.log(2).contains("share of the key is erased"),
        "{}",
        running.log(2)
    );
    let p25 = SharingParams::new(2, 5).unwrap();
    let combiner = Combiner::new(&public, &p25).unwrap();
    let epoch3: Vec<Partial> = [1u8, 3, 4, 5]
        .into_iter()
        .map(|i| partial(&dir, running.address(i), i, 3, &input))
        .collect();
    assert!(combiner.combine(&x, &epoch3[..2]).is_ok());
    assert!(combiner.combine(&x, &epoch3[2..]).is_ok());
    for new in &epoch3 {
        assert!(
            combiner
                .combine(&x, &[stolen.clone(), new.clone()])
                .is_err(),
            "appliance 2's retired share combines with appliance {}'s",
            new.index
        );
    }
    // Running it again changes nothing.
    let out = reshare(&running, "2", "1,3,4,5");
    assert!(out.contains("key a1: already 2 of [1, 3, 4, 5]"), "{out}");

    // A key generated now is shared among the four, without index 2.
    ok(run_ittc(&[
        "--cluster",
        &c,
        "key",
        "generate",
        "--bits",
        "1024",
        "--label",
        "after",
        "--id",
        "b2",
    ]));
    let (_, status) = running.status();
    let b2 = status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "b2")
        .cloned()
        .unwrap();
    assert_eq!(b2["members"], serde_json::json!([1, 3, 4, 5]), "{b2}");
    assert_eq!(b2["holders"], serde_json::json!([1, 3, 4, 5]), "{b2}");
    running.sign_and_verify("b2", &pin_file, &running.public_key(&[0xb2]));
}
