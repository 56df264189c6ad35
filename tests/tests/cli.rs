//! The `ittc` CLI as an operator uses it: real `ittc` and `ittc-appliance` processes on
//! 127.0.0.1, results checked with OpenSSL.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ittc_provisioning::cluster::Cluster as CliCluster;
use ittc_tests::cli::{InitCluster, ok, run_ittc};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Verifier;

fn write(path: &Path, data: &[u8]) -> String {
    std::fs::write(path, data).unwrap();
    path.display().to_string()
}

#[test]
fn init_import_sign_verify_2_of_3_and_3_of_5() {
    for (n, k) in [(3u8, 2u8), (5, 3)] {
        let running = InitCluster::new(n, k, "");
        let c = running.arg();
        let pin = running.set_user_pin(b"246810\n");
        let tmp = running.scratch();

        // An encrypted PKCS#8 key, made by OpenSSL, with its passphrase in a file.
        let key = Rsa::generate(2048).unwrap();
        let encrypted = PKey::from_rsa(key.clone())
            .unwrap()
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret")
            .unwrap();
        let keyfile = write(&tmp.join("key.pem"), &encrypted);
        let pass = write(&tmp.join("pass"), b"s3cret\n");
        let out = ok(run_ittc(&[
            "--cluster",
            &c,
            "key",
            "import",
            "--label",
            "web",
            "--id",
            "a1",
            "--passphrase-file",
            &pass,
            &keyfile,
        ]));
        assert!(out.contains("only whole copy"), "{out}");
        running.sign_and_verify("a1", &pin, &PKey::from_rsa(key.clone()).unwrap());

        // Importing the same id again is refused and changes nothing.
        let again = run_ittc(&[
            "--cluster",
            &c,
            "key",
            "import",
            "--label",
            "web",
            "--id",
            "a1",
            "--passphrase-file",
            &pass,
            &keyfile,
        ]);
        assert_eq!(again.status.code(), Some(1));
        let (healthy, status) = running.status();
        assert!(healthy);
        let keys = status["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["usable"], true);
        assert_eq!(keys[0]["tolerates"], u64::from(n - k));
        // No share on the operator's disk: nothing new in the cluster folder but logs and data.
        for entry in std::fs::read_dir(&running.dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains("share"), "{name}");
        }
    }
}

#[test]
fn import_with_an_appliance_down_fails_cleanly_and_status_counts_tolerance() {
    let mut running = InitCluster::new(5, 3, "");
    let c = running.arg();
    let tmp = running.scratch().to_owned();
    let key = Rsa::generate(2048).unwrap();
    let keyfile = write(&tmp.join("key.pem"), &key.private_key_to_pem().unwrap());
    running.kill(5);
    let failed = run_ittc(&[
        "--cluster",
        &c,
        "key",
        "import",
        "--label",
        "x",
        "--id",
        "02",
        &keyfile,
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("appliance 5"), "{stderr}");
    // Nothing on the four others: no key, no object.
    let (healthy, status) = running.status();
    assert!(
        healthy,
        "no key is unusable (there is none), so status exits 0"
    );
    assert!(status["keys"].as_array().unwrap().is_empty(), "{status}");
    let down: Vec<u64> = status["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["reachable"] == false)
        .map(|a| a["index"].as_u64().unwrap())
        .collect();
    assert_eq!(down, vec![5]);

    // With all five up the import works; with one and then two down, status says how many
    // more failures the key survives, and with three down that it is unusable (exit 1).
    running.start(5);
    ok(run_ittc(&[
        "--cluster",
        &c,
        "key",
        "import",
        "--label",
        "x",
        "--id",
        "02",
        &keyfile,
    ]));
    running.kill(2);
    let out = run_ittc(&["--cluster", &c, "status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "usable, but a holder does not answer"
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["keys"][0]["degraded"], true);
    assert_eq!(status["keys"][0]["behind"][0]["index"], 2);
    assert_eq!(status["keys"][0]["behind"][0]["reachable"], false);
    assert_eq!(status["keys"][0]["tolerates"], 1);
    assert_eq!(
        status["keys"][0]["holders"],
        serde_json::json!([1, 3, 4, 5])
    );
    running.kill(4);
    running.kill(5);
    let (healthy, status) = running.status();
    assert!(!healthy);
    assert_eq!(status["keys"][0]["usable"], false);
    let human = run_ittc(&["--cluster", &c, "status"]);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("NOT USABLE"));
}

/// Stops a demo's appliances however the test ends.
struct DemoGuard(PathBuf);

impl Drop for DemoGuard {
    fn drop(&mut self) {
        let _ = run_ittc(&["demo", "--stop", "--dir", &self.0.display().to_string()]);
    }
}

#[test]
fn demo_stop_and_demo_again_sign_with_the_same_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let _guard = DemoGuard(dir.clone());
    let d = dir.display().to_string();
    let first = ok(run_ittc(&["demo", "--dir", &d]));
    assert!(first.contains("export ITTC_PKCS11_CONFIG="), "{first}");
    let public = std::fs::read(dir.join("demo-public.pem")).unwrap();
    let key = Rsa::public_key_from_pem(&public).unwrap();
    let verify = || {
        let pkey = PKey::from_rsa(key.clone()).unwrap();
        let mut v = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        v.update(&std::fs::read(dir.join("message.txt")).unwrap())
            .unwrap();
        v.verify(&std::fs::read(dir.join("message.sig")).unwrap())
            .unwrap()
    };
    assert!(verify());
    // Running again reuses the running cluster.
    let again = run_ittc(&["demo", "--dir", &d]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("is running"));
    ok(again);
    // Stop, then start again: the same key signs.
    std::fs::remove_file(dir.join("message.sig")).unwrap();
    let stopped = ok(run_ittc(&["demo", "--stop", "--dir", &d]));
    assert!(stopped.contains("stopped 3"), "{stopped}");
    assert_eq!(
        run_ittc(&["--cluster", &d, "status"]).status.code(),
        Some(1)
    );
    let restarted = run_ittc(&["demo", "--dir", &d]);
    assert!(String::from_utf8_lossy(&restarted.stderr).contains("starting appliance 1"));
    ok(restarted);
    assert_eq!(std::fs::read(dir.join("demo-public.pem")).unwrap(), public);
    assert!(verify(), "the restarted demo signs with another key");
}

#[test]
fn pin_change_and_cert_add_reach_every_appliance() {
    let running = InitCluster::new(3, 2, "");
    let c = running.arg();
    let tmp = running.scratch();
    let old = write(&tmp.join("old"), b"111111");
    let new = write(&tmp.join("new"), b"222222");
    ok(run_ittc(&[
        "--cluster",
        &c,
        "pin",
        "set",
        "--user",
        "--pin-file",
        &old,
    ]));
    ok(run_ittc(&[
        "--cluster",
        &c,
        "pin",
        "change",
        "--user",
        "--old-pin-file",
        &old,
        "--new-pin-file",
        &new,
    ]));
    let wrong = run_ittc(&[
        "--cluster",
        &c,
        "pin",
        "change",
        "--user",
        "--old-pin-file",
        &old,
        "--new-pin-file",
        &new,
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("PinIncorrect")
            || String::from_utf8_lossy(&wrong.stderr).contains("incorrect")
    );

    // A certificate made by OpenSSL, stored for id 0x33, readable on every appliance.
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "cert add test").unwrap();
    let name = name.build();
    let mut builder = openssl::x509::X509::builder().unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder
        .set_serial_number(
            &openssl::bn::BigNum::from_u32(4242)
                .unwrap()
                .to_asn1_integer()
                .unwrap(),
        )
        .unwrap();
    builder
        .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = builder.build();
    let path = write(&tmp.join("cert.pem"), &cert.to_pem().unwrap());
    ok(run_ittc(&[
        "--cluster",
        &c,
        "cert",
        "add",
        "--id",
        "33",
        &path,
    ]));
    let cluster = CliCluster::open(&running.dir).unwrap();
    for index in 1..=3 {
        let mut conn = cluster.connect(index).unwrap();
        let objects = match conn.request(&ittc_wire::Request::ListObjects).unwrap() {
            ittc_wire::Response::Objects(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(objects.len(), 1, "appliance {index}");
        let object = match conn
            .request(&ittc_wire::Request::GetObject {
                handle: objects[0].handle,
            })
            .unwrap()
        {
            ittc_wire::Response::Object { object, .. } => object,
            other => panic!("{other:?}"),
        };
        use ittc_wire::attributes::*;
        assert_eq!(object.attribute(CKA_ID), Some(&[0x33][..]));
        assert_eq!(
            object.attribute(CKA_VALUE),
            Some(&cert.to_der().unwrap()[..])
        );
        assert_eq!(object.attribute(CKA_LABEL), Some(&b"cert add test"[..]));
        assert_eq!(
            object.attribute(CKA_SUBJECT),
            Some(&name.to_der().unwrap()[..])
        );
        assert_eq!(
            object.attribute(CKA_SERIAL_NUMBER),
            Some(&[0x02, 0x02, 0x10, 0x92][..])
        );
    }
}

#[test]
fn key_refresh_and_status_show_new_epochs_and_failures() {
    // 2-of-4: a refresh needs 3 holders (a majority), signing 2.
    let mut running = InitCluster::new(4, 2, "");
    let c = running.arg();
    let pin = running.set_user_pin(b"112233\n");
    let key = running.import_new_key("web", "b2");
    let public = PKey::from_rsa(key).unwrap();

    let out = ok(run_ittc(&["--cluster", &c, "key", "refresh", "--id", "b2"]));
    assert!(out.contains("key b2 refreshed: epoch 1 -> 2"), "{out}");
    let out = ok(run_ittc(&["--cluster", &c, "key", "refresh", "--all"]));
    assert!(out.contains("key b2 refreshed: epoch 2 -> 3"), "{out}");
    running.sign_and_verify("b2", &pin, &public);
    let (healthy, status) = running.status();
    assert!(healthy);
    let k = &status["keys"][0];
    assert_eq!(k["epoch"], 3);
    assert_eq!(k["holders"], serde_json::json!([1, 2, 3, 4]));
    assert!(k["last_refresh_unix_ms"].as_u64().is_some(), "{k}");
    // Appliance 1 schedules the next one (an hour by default).
    let next = k["next_due_unix_ms"].as_u64().unwrap();
    let last = k["last_refresh_unix_ms"].as_u64().unwrap();
    assert!(next > last + 3_500_000 && next <= last + 3_700_000, "{k}");
    assert_eq!(k["refresh_failed"], false);

    // One appliance away: the refresh goes on without it.
    running.kill(4);
    let out = ok(run_ittc(&["--cluster", &c, "key", "refresh", "--id", "b2"]));
    assert!(out.contains("epoch 3 -> 4"), "{out}");
    running.sign_and_verify("b2", &pin, &public);

    // Two away: fewer than a majority of the holders; the refresh fails, says why, and
    // the key keeps its epoch.
    running.kill(3);
    let failed = run_ittc(&["--cluster", &c, "key", "refresh", "--id", "b2"]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("2 of 4 holders can take part and a refresh needs 3"),
        "{stderr}"
    );
    assert!(stderr.contains("appliance 3"), "{stderr}");
    let out = run_ittc(&["--cluster", &c, "status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the key is usable, but its last refresh failed"
    );
    let out = run_ittc(&["--cluster", &c, "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last refresh failure"), "{text}");
    running.sign_and_verify("b2", &pin, &public);

    // Back: 4 catches up to epoch 4 by itself; then a refresh succeeds again.
    running.start(3);
    running.start(4);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, status) = running.status();
        if status["keys"][0]["holders"] == serde_json::json!([1, 2, 3, 4]) {
            assert_eq!(status["keys"][0]["epoch"], 4);
            assert_eq!(status["keys"][0]["refresh_failed"], true);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "appliance 4 did not catch up: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = run_ittc(&["--cluster", &c, "status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let out = ok(run_ittc(&["--cluster", &c, "key", "refresh", "--id", "b2"]));
    assert!(out.contains("epoch 4 -> 5"), "{out}");
    let (healthy, status) = running.status();
    assert!(healthy, "{status}");
    running.sign_and_verify("b2", &pin, &public);
}

#[test]
fn audit_verify_asks_every_appliance_and_fails_for_one_away() {
    let mut running = InitCluster::new(3, 2, "");
    let c = running.arg();
    running.set_user_pin(b"123456");
    let out = ok(run_ittc(&["--cluster", &c, "audit", "verify"]));
    let intact = out
        .lines()
        .filter(|l| l.contains(": intact, ") && l.contains(" entries (0 in 0 export files)"))
        .count();
    assert_eq!(intact, 3, "{out}");
    running.kill(3);
    let away = run_ittc(&["--cluster", &c, "audit", "verify"]);
    assert_eq!(away.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&away.stdout);
    assert!(stdout.contains("appliance 3: not checked"), "{stdout}");
    assert!(stdout.contains("appliance 1: intact"), "{stdout}");
}

/// `ittc status --watch`: it asks the appliances again for every report (an appliance
/// killed after the first shows as down in the last), `--count` ends it, and `--json`
/// gives one document per line; without `--json`, away from a terminal, each report
/// follows the last under a line with the time.
#[test]
fn status_watch_asks_again_for_every_report() {
    use std::io::{BufRead, BufReader, Read};

    let mut running = InitCluster::new(3, 2, "");
    let c = running.arg();
    let watch = |more: &[&'static str]| {
        let mut args = vec!["--cluster", c.as_str(), "status", "--watch", "1"];
        args.extend_from_slice(more);
        ittc_tests::cli::ittc(&args)
    };
    let text = ok(watch(&["--count", "2"]).output().unwrap());
    assert_eq!(text.matches("appliances:").count(), 2, "{text}");
    assert_eq!(
        text.matches("(every 1 s; Ctrl-C to stop)").count(),
        2,
        "{text}"
    );

    let mut child = watch(&["--count", "3", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    running.kill(3);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    child.wait().unwrap();
    let reports: Vec<serde_json::Value> = std::iter::once(first.as_str())
        .chain(rest.lines())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(reports.len(), 3, "{first}{rest}");
    let reachable = |report: &serde_json::Value| -> Vec<bool> {
        let appliances = report["appliances"].as_array().unwrap();
        appliances.iter().map(|a| a["reachable"] == true).collect()
    };
    assert_eq!(reachable(&reports[0]), [true, true, true]);
    assert_eq!(reachable(&reports[2]), [true, true, false]);
}

/// `ittc doctor` on a cluster folder that `ittc init` wrote: nothing to fix (three
/// appliances of one build variant are only a warning); then a private key readable by
/// others and an appliance down are both named with what to do, and the exit status is 1.
#[test]
fn doctor_says_what_to_fix() {
    use std::os::unix::fs::PermissionsExt as _;

    let mut running = InitCluster::new(3, 2, "");
    let c = running.arg();
    let healthy = ok(run_ittc(&["--cluster", &c, "doctor"]));
    assert!(healthy.contains("0 to fix"), "{healthy}");
    for index in 1..=3 {
        assert!(
            healthy.contains(&format!("ok    appliance {index} (")),
            "{healthy}"
        );
    }
    assert!(healthy.contains("clock within"), "{healthy}");
    assert!(healthy.contains("run the same build variant"), "{healthy}");
    assert!(healthy.contains("client.pem valid until"), "{healthy}");

    let key = running.dir.join("client.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    running.kill(3);
    let sick = run_ittc(&["--cluster", &c, "doctor"]);
    let out = String::from_utf8_lossy(&sick.stdout);
    assert_eq!(sick.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("-> chmod 600 {}", key.display())),
        "{out}"
    );
    assert!(out.contains("FIX   appliance 3 ("), "{out}");
    assert!(out.contains("2 to fix"), "{out}");
}
