//! Dealerless key generation across real appliances: `ittc key generate` on three
//! `ittc-appliance` processes (made by `ittc init`, so each knows its peers), the key used
//! through the PKCS#11 module (`ittc sign`) and the signature verified by OpenSSL; and an
//! appliance killed in the middle of a generation: a clear error, nothing left anywhere,
//! and the next attempt works.
//!
//! Build first: `cargo build -p ittc-appliance -p ittc-provisioning -p ittc-pkcs11`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ittc_provisioning::cluster::Cluster as CliCluster;
use ittc_wire::attributes::{CKA_MODULUS, CKA_PUBLIC_EXPONENT};
use ittc_wire::{ObjectId, Request, Response};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Verifier;

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(bin.is_file(), "{} missing: build it first", bin.display());
    bin
}

fn ittc(args: &[&str]) -> Command {
    let mut c = Command::new(binary("ittc"));
    c.args(args).stdin(Stdio::null());
    c
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

struct Running {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Running {
    /// `ittc init` for 3 appliances (2 of 3), 1024-bit generation allowed, all started.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut args: Vec<String> = ["init", "--appliances", "3", "--threshold", "2", "--out"]
            .map(String::from)
            .to_vec();
        args.push(dir.display().to_string());
        for (i, l) in listeners.iter().enumerate() {
            args.push("--host".into());
            args.push(format!(
                "{}=127.0.0.1:{}",
                i + 1,
                l.local_addr().unwrap().port()
            ));
        }
        drop(listeners);
        ok(ittc(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .unwrap());
        for i in 1..=3 {
            let path = dir.join(format!("appliance-{i}.toml"));
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str("\n[keygen]\nmin_bits = 1024\ntimeout_ms = 600000\n");
            std::fs::write(&path, text).unwrap();
        }
        let mut running = Self {
            _tmp: tmp,
            dir,
            children: vec![None, None, None],
        };
        for i in 1..=3 {
            running.start(i);
        }
        running
    }

    fn start(&mut self, index: u8) {
        let (child, _) = ittc_provisioning::process::spawn_appliance(
            &binary("ittc-appliance"),
            &self.dir.join(format!("appliance-{index}.toml")),
            &self.dir.join(format!("appliance-{index}.log")),
            false,
            Duration::from_secs(20),
        )
        .unwrap();
        self.children[usize::from(index) - 1] = Some(child);
    }

    fn kill(&mut self, index: u8) {
        if let Some(mut c) = self.children[usize::from(index) - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, index: u8) -> String {
        std::fs::read_to_string(self.dir.join(format!("appliance-{index}.log"))).unwrap_or_default()
    }

    fn cluster(&self) -> String {
        self.dir.display().to_string()
    }

    fn generate(&self, id: &str) -> Command {
        ittc(&[
            "--cluster",
            &self.cluster(),
            "key",
            "generate",
            "--bits",
            "1024",
            "--label",
            "generated",
            "--id",
            id,
            "--timeout",
            "150",
        ])
    }

    /// Every key on every reachable appliance: (index, key id hex, active, pending).
    fn keys(&self) -> Vec<(u8, String, Option<u64>, Option<u64>)> {
        let cluster = CliCluster::open(&self.dir).unwrap();
        let mut keys = Vec::new();
        for i in 1..=3u8 {
            let Ok(mut c) = cluster.connect(i) else {
                continue;
            };
            let Ok(Response::Status(s)) = c.request(&Request::Status) else {
                panic!("status of appliance {i}");
            };
            for k in s.keys {
                keys.push((
                    i,
                    hex::encode(k.key_id.as_bytes()),
                    k.active_epoch,
                    k.pending_epoch,
                ));
            }
        }
        keys
    }

    /// The public key of `id` from appliance 1's public-key object.
    fn public_key(&self, id: &[u8]) -> Rsa<openssl::pkey::Public> {
        let cluster = CliCluster::open(&self.dir).unwrap();
        let mut c = cluster.connect(1).unwrap();
        let handle = ObjectId::derived("public-key", id);
        let Ok(Response::Object(object)) = c.request(&Request::GetObject { handle }) else {
            panic!("no public-key object for {}", hex::encode(id));
        };
        let n = BigNum::from_slice(object.attribute(CKA_MODULUS).unwrap()).unwrap();
        let e = BigNum::from_slice(object.attribute(CKA_PUBLIC_EXPONENT).unwrap()).unwrap();
        Rsa::from_public_components(n, e).unwrap()
    }

    /// Signs with `ittc sign` through the PKCS#11 module and verifies with OpenSSL.
    fn sign_and_verify(&self, id: &str, pin_file: &str) {
        let message = self.dir.join("to-sign.txt");
        std::fs::write(&message, b"signed with a key nobody ever held").unwrap();
        let signature = self.dir.join("to-sign.sig");
        let out = Command::new(binary("ittc"))
            .args(["sign", "--id", id, "--pin-file", pin_file, "--module"])
            .arg(binary("libittc_pkcs11.so"))
            .arg("--in")
            .arg(&message)
            .arg("--out")
            .arg(&signature)
            .env("ITTC_PKCS11_CONFIG", self.dir.join("pkcs11.toml"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(out);
        let public = self.public_key(&hex::decode(id).unwrap());
        assert_eq!(public.n().num_bits(), 1024);
        let pkey = PKey::from_rsa(public).unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        verifier.update(&std::fs::read(&message).unwrap()).unwrap();
        assert!(
            verifier
                .verify(&std::fs::read(&signature).unwrap())
                .unwrap(),
            "OpenSSL rejects the signature"
        );
    }

    fn set_pin(&self) -> String {
        let pin = self.dir.join("pin");
        std::fs::write(&pin, b"246810\n").unwrap();
        let pin = pin.display().to_string();
        ok(ittc(&[
            "--cluster",
            &self.cluster(),
            "pin",
            "set",
            "--user",
            "--pin-file",
            &pin,
        ])
        .output()
        .unwrap());
        pin
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for i in 1..=3 {
            self.kill(i);
        }
    }
}

#[test]
fn generated_1024_bit_key_signs_through_the_module() {
    let running = Running::new();
    let pin = running.set_pin();
    let started = Instant::now();
    let out = ok(running.generate("0a").output().unwrap());
    eprintln!(
        "1024-bit generation: {:.1} s\n{out}",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("generated RSA-1024 key id 0a"), "{out}");
    assert!(out.contains("candidates tried"), "{out}");
    let keys = running.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for (_, id, active, pending) in &keys {
        assert_eq!((id.as_str(), *active, *pending), ("0a", Some(1), None));
    }
    running.sign_and_verify("0a", &pin);

    // The same id again is refused before anything starts.
    let again = running.generate("0a").output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(running.keys().len(), 3);
    // No secret in any log.
    for i in 1..=3 {
        let log = running.log(i);
        assert!(log.contains("key generation finished"), "{log}");
    }
}

#[test]
fn an_appliance_killed_midway_leaves_nothing_and_the_next_attempt_works() {
    let mut running = Running::new();
    let pin = running.set_pin();
    let child = running
        .generate("0b")
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
    assert!(running.keys().is_empty(), "{:?}", running.keys());
    for i in 1..=2 {
        assert!(running.log(i).contains("key generation failed"));
    }

    running.start(3);
    ok(running.generate("0b").output().unwrap());
    assert_eq!(running.keys().len(), 3);
    running.sign_and_verify("0b", &pin);
}

/// How long a 2048-bit generation takes on three local appliances (not run by default:
/// `cargo test -p ittc-tests --test keygen -- --ignored --nocapture`).
#[test]
#[ignore = "slow: a 2048-bit generation"]
fn timing_2048_bit_generation() {
    let running = Running::new();
    let started = Instant::now();
    let out = ok(ittc(&[
        "--cluster",
        &running.cluster(),
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
