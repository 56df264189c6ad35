//! Replacing an appliance (`ittc appliance replace`): the old certificate refused by every
//! appliance on both ends of a connection, the new one accepted, the new appliance filled
//! with the cluster's token objects and PINs by its peers, and a run that could not reach
//! every appliance finished by running it again. Adding one (`ittc appliance add`): the new
//! appliance filled the same way by peers that do not list it yet. Real `ittc` and
//! `ittc-appliance` processes on 127.0.0.1.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ittc_tests::cli::{InitCluster, free_port, ok, run_ittc};
use ittc_wire::client::{Connection, Timeouts, TlsIdentity};
use ittc_wire::cluster::{ClusterConfig, FILE_NAME};
use ittc_wire::{
    ErrorCode, ObjectId, Request, Response, SecretBytes, UserKind, WireError, revocation,
};
use openssl::rsa::Rsa;

/// Cheap PIN hashes: these tests log in often.
const PIN_COST: &str = "[pin]\nargon2_m_cost_kib = 256\nargon2_t_cost = 1\n";

fn identity(dir: &Path, cert: &str, key: &str) -> TlsIdentity {
    TlsIdentity::from_pem_files(&dir.join("ca.pem"), &dir.join(cert), &dir.join(key)).unwrap()
}

/// Connects to appliance `index` at `addr` with `who`'s certificate (no deny-list of its
/// own: what is refused here, the appliance refuses).
fn connect_at(
    addr: SocketAddr,
    index: u8,
    who: &TlsIdentity,
) -> Result<Connection, ittc_wire::Error> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(10),
    };
    Connection::connect(addr, index, who.client_config()?, timeouts, "replace test")
}

fn assert_revoked(result: Result<Connection, ittc_wire::Error>, what: &str) {
    match result {
        Err(ittc_wire::Error::Refused(WireError {
            code: ErrorCode::Forbidden,
            message,
        })) if message.contains("certificate revoked") => {}
        Err(other) => panic!("{what}: refused, but not as revoked: {other}"),
        Ok(_) => panic!("{what}: the old certificate was accepted"),
    }
}

/// The serial of a PEM certificate file, hex.
fn serial_of(path: &Path) -> String {
    let der = ittc_provisioning::cert::read_certificate(path).unwrap();
    hex::encode(revocation::certificate_serial(&der).unwrap())
}

/// Logs in as the user with `pin`; the answer.
fn user_login(conn: &mut Connection, pin: &[u8]) -> Response {
    conn.request(&Request::Login {
        user: UserKind::User,
        pin: SecretBytes::new(pin.to_vec()),
    })
    .unwrap()
}

/// Waits (at most 30 s) until appliance `index`'s log shows `line`.
fn wait_for_log(running: &InitCluster, index: u8, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.log(index).contains(line) {
        assert!(
            Instant::now() < deadline,
            "appliance {index} never logged {line:?}:\n{}",
            running.log(index)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replace(c: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--cluster", c, "appliance", "replace"];
    all.extend_from_slice(args);
    run_ittc(&all)
}

#[test]
fn a_replaced_appliances_old_certificate_is_refused_and_the_new_one_takes_the_public_state() {
    let mut running = InitCluster::new(3, 2, PIN_COST);
    let c = running.arg();
    let dir = running.dir.clone();
    let pin = running.set_user_pin(b"246810");
    // A key (its public-key object on every appliance) and a certificate object.
    let key = running.import_new_key("web", "a1");
    let cert_file = dir.join("client.pem").display().to_string();
    ok(run_ittc(&[
        "--cluster",
        &c,
        "cert",
        "add",
        "--id",
        "a1",
        &cert_file,
    ]));
    let cert_der = ittc_provisioning::cert::read_certificate(&dir.join("client.pem")).unwrap();
    let cert_object = ittc_provisioning::cert::certificate_object(&cert_der, &[0xa1], None)
        .unwrap()
        .handle;
    let old_serial = serial_of(&dir.join("appliance-3.pem"));

    // Appliance 3 is compromised: replaced at the same address, while the old one still
    // runs there.
    let out = replace(&c, &["--index", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("refuse the old certificate now: [1, 2]"),
        "{stdout}"
    );
    assert!(stdout.contains("does not answer yet"), "{stdout}");
    assert!(stdout.contains("certificate revoked"), "{stdout}");
    assert!(!dir.join("appliance-3.replacing").exists());
    for ext in ["pem", "key", "sealing", "toml"] {
        assert!(
            dir.join(format!("appliance-3.{ext}.old")).is_file(),
            "{ext}"
        );
    }
    let new_serial = serial_of(&dir.join("appliance-3.pem"));
    assert_ne!(new_serial, old_serial);
    assert_eq!(serial_of(&dir.join("appliance-3.pem.old")), old_serial);
    let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
    assert_eq!(config.revoked, vec![old_serial.clone()]);
    // The new appliance refuses it from its first start, before it hears from its peers.
    let fresh = std::fs::read_to_string(dir.join("appliance-3.toml")).unwrap();
    assert!(
        fresh.contains(&format!("revoked = [\"{old_serial}\"]")),
        "{fresh}"
    );

    // (a) Appliances 1 and 2 refuse the old certificate as a client's.
    let old = identity(&dir, "appliance-3.pem.old", "appliance-3.key.old");
    for j in [1, 2] {
        assert_revoked(
            connect_at(running.address(j), j, &old),
            &format!("appliance {j}"),
        );
        assert!(
            running.log(j).contains("certificate revoked: refused"),
            "{}",
            running.log(j)
        );
    }
    // ... and as a peer's: appliance 1, coordinating a refresh, does not take the old
    // appliance 3 (still running at the address appliance 1 knows) for a holder. (Whether
    // the refresh then goes ahead without it is the refresh's business.)
    let refresh = run_ittc(&["--cluster", &c, "key", "refresh", "--id", "a1"]);
    let log1 = running.log(1);
    assert!(
        log1.lines()
            .any(|l| l.contains("certificate revoked: refused") && l.contains("dial")),
        "{log1}\n{}",
        String::from_utf8_lossy(&refresh.stderr)
    );
    // The CLI refuses it too (pkcs11.toml's `revoked`), and status counts the list.
    let (_, status) = running.status();
    let appliances = status["appliances"].as_array().unwrap();
    assert_eq!(appliances[0]["revoked_certificates"], 1, "{status}");
    assert_eq!(appliances[1]["revoked_certificates"], 1, "{status}");
    assert_eq!(appliances[2]["reachable"], false, "{status}");
    assert!(
        appliances[2]["error"]
            .as_str()
            .unwrap()
            .contains("certificate revoked"),
        "{status}"
    );
    let human =
        String::from_utf8_lossy(&run_ittc(&["--cluster", &c, "status"]).stdout).into_owned();
    assert!(human.contains("1 certificate revoked"), "{human}");

    // (c) Only the admin may revoke: a client's or an appliance's request changes nothing.
    for (cert, key) in [
        ("client.pem", "client.key"),
        ("appliance-2.pem", "appliance-2.key"),
    ] {
        let mut conn = connect_at(running.address(1), 1, &identity(&dir, cert, key)).unwrap();
        let answer = conn
            .request(&Request::RevokeCertificate {
                serial: hex::decode(&new_serial).unwrap(),
                label: "not yours to revoke".into(),
            })
            .unwrap();
        assert!(
            matches!(
                answer,
                Response::Error(WireError {
                    code: ErrorCode::Forbidden,
                    ..
                })
            ),
            "{cert}: {answer:?}"
        );
    }
    let (_, status) = running.status();
    assert_eq!(
        status["appliances"][0]["revoked_certificates"], 1,
        "{status}"
    );

    // The old appliance is stopped; the new one starts with an empty data folder.
    running.kill(3);
    std::fs::remove_dir_all(dir.join("appliance-3-data")).unwrap();
    running.start(3);
    wait_for_log(&running, 3, "public state taken from a peer");

    // (a) The new appliance 3 refuses the old certificate too (its deny-list came from its
    // peers), and every appliance accepts the new one.
    assert_revoked(
        connect_at(running.address(3), 3, &old),
        "the new appliance 3",
    );
    let new = identity(&dir, "appliance-3.pem", "appliance-3.key");
    for j in [1, 2] {
        let mut conn = connect_at(running.address(j), j, &new).unwrap();
        assert!(matches!(
            conn.request(&Request::Status).unwrap(),
            Response::Status(_)
        ));
    }

    // (b) Appliance 3 alone: the user PIN works, and the objects stored before are there.
    let client = identity(&dir, "client.pem", "client.key");
    let mut conn = connect_at(running.address(3), 3, &client).unwrap();
    let wrong = user_login(&mut conn, b"000000");
    assert!(
        matches!(
            &wrong,
            Response::Error(WireError {
                code: ErrorCode::PinIncorrect,
                ..
            })
        ),
        "{wrong:?}"
    );
    let login = user_login(&mut conn, b"246810");
    assert_eq!(login, Response::Ok);
    let Response::Objects(objects) = conn.request(&Request::ListObjects).unwrap() else {
        panic!("no object listing");
    };
    let handles: Vec<ObjectId> = objects.iter().map(|o| o.handle).collect();
    assert!(handles.contains(&cert_object), "{handles:?}");
    assert!(
        handles.contains(&ittc_tests::public_key_object_id(&[0xa1])),
        "{handles:?}"
    );
    let Response::Object { object, .. } = conn
        .request(&Request::GetObject {
            handle: cert_object,
        })
        .unwrap()
    else {
        panic!("no certificate object");
    };
    assert!(
        object.attributes.iter().any(|a| a.value == cert_der),
        "the certificate's DER is not in the object"
    );
    drop(conn);

    // Status: all three up, each with the old certificate on its list.
    let (_, status) = running.status();
    for a in status["appliances"].as_array().unwrap() {
        assert_eq!(a["reachable"], true, "{status}");
        assert_eq!(a["revoked_certificates"], 1, "{status}");
    }

    // The new appliance 3 rebuilds its share of the key's current epoch from 1 and 2 by
    // itself (the refresh above went ahead without the revoked old one).
    let deadline = Instant::now() + Duration::from_secs(30);
    let epoch = loop {
        let (healthy, status) = running.status();
        let key = &status["keys"][0];
        if key["holders"] == serde_json::json!([1, 2, 3]) {
            assert!(healthy, "{status}");
            break key["epoch"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "appliance 3 never held the key: {status}\n{}",
            running.log(3)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        running.log(3).contains("share rebuilt"),
        "{}",
        running.log(3)
    );
    // Its share works with each of the others alone: {2, 3} with 1 down, {1, 3} with 2.
    let public = openssl::pkey::PKey::from_rsa(
        Rsa::from_public_components(key.n().to_owned().unwrap(), key.e().to_owned().unwrap())
            .unwrap(),
    )
    .unwrap();
    for (down, with) in [(1, "{2, 3}"), (2, "{1, 3}")] {
        running.kill(down);
        running.sign_and_verify("a1", &pin, &public);
        let (_, status) = running.status();
        assert_eq!(status["keys"][0]["epoch"], epoch, "signed with {with}");
        running.start(down);
    }
}

#[test]
fn a_replacement_that_misses_an_appliance_is_finished_by_running_it_again() {
    let mut running = InitCluster::new(3, 2, PIN_COST);
    let c = running.arg();
    let dir = running.dir.clone();
    running.set_user_pin(b"135790");
    let old_serial = serial_of(&dir.join("appliance-3.pem"));
    let new_port = free_port();
    let new_address = format!("127.0.0.1:{new_port}");

    // Appliance 3 died; appliance 2 is down for now.
    running.kill(3);
    running.kill(2);
    let out = replace(&c, &["--index", "3", "--host", &new_address]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("not reached: appliance 2"), "{stderr}");
    assert!(stderr.contains("again"), "{stderr}");
    assert!(
        stdout.contains("refuse the old certificate now: [1]"),
        "{stdout}"
    );
    assert!(dir.join("appliance-3.replacing").is_file());
    let new_cert = std::fs::read(dir.join("appliance-3.pem")).unwrap();
    let new_sealing = std::fs::read(dir.join("appliance-3.sealing")).unwrap();

    // The new address everywhere it is written.
    let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
    assert_eq!(config.appliance(3).unwrap().address, new_address);
    assert_eq!(config.revoked, vec![old_serial.clone()]);
    assert!(dir.join("pkcs11.toml.old").is_file());
    for j in [1, 2] {
        let text = std::fs::read_to_string(dir.join(format!("appliance-{j}.toml"))).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let peer3 = table["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["index"].as_integer() == Some(3))
            .unwrap();
        assert_eq!(
            peer3["address"].as_str(),
            Some(new_address.as_str()),
            "{text}"
        );
        // The test's own settings are still there.
        assert!(text.contains("argon2_m_cost_kib = 256"), "{text}");
    }
    let own = std::fs::read_to_string(dir.join("appliance-3.toml")).unwrap();
    assert!(
        own.contains(&format!("listen = \"{new_address}\"")),
        "{own}"
    );
    assert!(stdout.contains("restart"), "{stdout}");

    // Appliance 2 is back: the same command finishes the job and issues nothing new.
    running.start(2);
    let out = replace(&c, &["--index", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("finishing the replacement"), "{stdout}");
    assert!(
        stdout.contains("refuse the old certificate now: [1, 2]"),
        "{stdout}"
    );
    assert!(!dir.join("appliance-3.replacing").exists());
    assert_eq!(
        std::fs::read(dir.join("appliance-3.pem")).unwrap(),
        new_cert
    );
    assert_eq!(
        std::fs::read(dir.join("appliance-3.sealing")).unwrap(),
        new_sealing
    );
    let old = identity(&dir, "appliance-3.pem.old", "appliance-3.key.old");
    assert_revoked(connect_at(running.address(2), 2, &old), "appliance 2");

    // The new appliance at its new address, with an empty data folder (the old one would
    // not open under the new sealing key): it takes the state and answers.
    std::fs::remove_dir_all(dir.join("appliance-3-data")).unwrap();
    running.start(3);
    wait_for_log(&running, 3, "public state taken from a peer");
    let (healthy, status) = running.status();
    assert!(healthy, "{status}");
    let a3 = &status["appliances"][2];
    assert_eq!(a3["reachable"], true, "{status}");
    assert_eq!(a3["address"], new_address.as_str(), "{status}");
    assert_eq!(a3["revoked_certificates"], 1, "{status}");
}

#[test]
fn an_added_appliance_takes_the_public_state_from_peers_that_do_not_list_it_yet() {
    let mut running = InitCluster::new(3, 2, PIN_COST);
    let c = running.arg();
    let dir = running.dir.clone();
    running.set_user_pin(b"975310");
    let port = free_port();
    let new_address = format!("127.0.0.1:{port}");

    let out = ok(run_ittc(&[
        "--cluster",
        &c,
        "appliance",
        "add",
        "--host",
        &new_address,
    ]));
    assert!(out.contains("appliance 4: certificate"), "{out}");
    assert!(
        out.contains(
            "appliance 4 added as a peer to appliance-1.toml, appliance-2.toml, appliance-3.toml"
        ),
        "{out}"
    );
    assert!(
        out.contains("cluster reshare --threshold 2 --appliances 1,2,3,4"),
        "{out}"
    );
    let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
    assert_eq!(config.appliance(4).unwrap().address, new_address);
    assert_eq!(config.threshold, 2);

    // Appliances 1 to 3 still run as they started: none of them lists appliance 4 as a
    // peer. They answer it all the same, and it takes their public state.
    let config4 = dir.join("appliance-4.toml");
    let mut text = std::fs::read_to_string(&config4).unwrap();
    text.push_str(PIN_COST);
    std::fs::write(&config4, text).unwrap();
    running.start(4);
    wait_for_log(&running, 4, "public state taken from a peer");
    let client = identity(&dir, "client.pem", "client.key");
    let mut conn = connect_at(running.address(4), 4, &client).unwrap();
    let login = user_login(&mut conn, b"975310");
    assert_eq!(login, Response::Ok, "the user PIN on appliance 4");
    drop(conn);

    // The others restarted one at a time, with appliance 4 among their peers now.
    for j in 1..=3 {
        running.kill(j);
        running.start(j);
    }
    let (healthy, status) = running.status();
    assert!(healthy, "{status}");
    let appliances = status["appliances"].as_array().unwrap();
    assert_eq!(appliances.len(), 4, "{status}");
    for a in appliances {
        assert_eq!(a["reachable"], true, "{status}");
    }
    assert_eq!(appliances[3]["index"], 4, "{status}");
    assert_eq!(appliances[3]["address"], new_address.as_str(), "{status}");
}
