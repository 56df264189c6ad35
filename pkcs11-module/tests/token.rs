//! The built `libittc_pkcs11.so`, loaded through the `cryptoki` crate the way an
//! application loads it, against real appliance processes. Every signature is checked and
//! every ciphertext made with OpenSSL and the public key alone.
//!
//! Each test runs in a child process of this binary (`support::isolated`): the module is
//! one per process and finds its configuration and log file through the environment,
//! which the parent sets for the child only.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use ittc_wire::{Request, Response, SecretBytes, UserKind};
use openssl::encrypt::Encrypter;
use openssl::hash::MessageDigest;
use openssl::rsa::Padding;
use support::{
    Fixture, PIN, Setup, find_one, isolated, log_path, module_path, rv, verify_pkcs1, verify_pss,
};

fn pss(hash: MechanismType, mgf: PkcsMgfType, salt: u64) -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: salt.into(),
    }
}

#[test]
fn every_sign_mechanism_gives_signatures_openssl_verifies() {
    isolated(
        "every_sign_mechanism_gives_signatures_openssl_verifies",
        every_sign_mechanism_gives_signatures_openssl_verifies_body,
    );
}

fn every_sign_mechanism_gives_signatures_openssl_verifies_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    let session = fx.user_session();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let public = fx.public();
    let msg = b"the quick brown fox signs through a threshold";

    let hashed = [
        (Mechanism::Sha1RsaPkcs, MessageDigest::sha1()),
        (Mechanism::Sha224RsaPkcs, MessageDigest::sha224()),
        (Mechanism::Sha256RsaPkcs, MessageDigest::sha256()),
        (Mechanism::Sha384RsaPkcs, MessageDigest::sha384()),
        (Mechanism::Sha512RsaPkcs, MessageDigest::sha512()),
    ];
    for (mechanism, md) in hashed {
        let sig = session.sign(&mechanism, key, msg).unwrap();
        verify_pkcs1(&public, md, msg, &sig);
    }

    // CKM_RSA_PKCS signs the caller's DigestInfo verbatim.
    let digest = openssl::sha::sha256(msg);
    let mut digest_info = hex::decode("3031300d060960864801650304020105000420").unwrap();
    digest_info.extend_from_slice(&digest);
    let sig = session
        .sign(&Mechanism::RsaPkcs, key, &digest_info)
        .unwrap();
    verify_pkcs1(&public, MessageDigest::sha256(), msg, &sig);

    // PSS on a digest the caller made (TLS 1.3), and with hashing in the token.
    let params = pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32);
    let sig = session
        .sign(&Mechanism::RsaPkcsPss(params), key, &digest)
        .unwrap();
    verify_pss(&public, MessageDigest::sha256(), msg, &sig);
    let pss_hashed = [
        (
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            20,
            MessageDigest::sha1(),
        ),
        (
            MechanismType::SHA384,
            PkcsMgfType::MGF1_SHA384,
            48,
            MessageDigest::sha384(),
        ),
        (
            MechanismType::SHA512,
            PkcsMgfType::MGF1_SHA512,
            64,
            MessageDigest::sha512(),
        ),
    ];
    for (hash, mgf, salt, md) in pss_hashed {
        let params = pss(hash, mgf, salt);
        let mechanism = match salt {
            20 => Mechanism::Sha1RsaPkcsPss(params),
            48 => Mechanism::Sha384RsaPkcsPss(params),
            _ => Mechanism::Sha512RsaPkcsPss(params),
        };
        let sig = session.sign(&mechanism, key, msg).unwrap();
        verify_pss(&public, md, msg, &sig);
    }

    // Multi-part signing gives a signature too.
    let mechanism =
        Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32));
    session.sign_init(&mechanism, key).unwrap();
    session.sign_update(&msg[..10]).unwrap();
    session.sign_update(&msg[10..]).unwrap();
    let sig = session.sign_final().unwrap();
    verify_pss(&public, MessageDigest::sha256(), msg, &sig);

    // Raw RSA: sig^e is the input.
    let mut raw = vec![0u8; 256];
    raw[255] = 42;
    raw[1] = 7;
    let sig = session.sign(&Mechanism::RsaX509, key, &raw).unwrap();
    let rsa = public.rsa().unwrap();
    let mut back = vec![0u8; 256];
    let n = rsa.public_decrypt(&sig, &mut back, Padding::NONE).unwrap();
    assert_eq!(&back[..n], &raw[..]);

    // Local verification with the public key object agrees, and catches a change.
    let public_handle = find_one(&session, ObjectClass::PUBLIC_KEY);
    let sig = session.sign(&Mechanism::Sha256RsaPkcs, key, msg).unwrap();
    session
        .verify(&Mechanism::Sha256RsaPkcs, public_handle, msg, &sig)
        .unwrap();
    let err = session
        .verify(&Mechanism::Sha256RsaPkcs, public_handle, b"other", &sig)
        .unwrap_err();
    assert_eq!(rv(err), RvError::SignatureInvalid);
}

#[test]
fn decrypts_what_openssl_encrypted_and_encrypts_what_openssl_decrypts() {
    isolated(
        "decrypts_what_openssl_encrypted_and_encrypts_what_openssl_decrypts",
        decrypts_what_openssl_encrypted_and_encrypts_what_openssl_decrypts_body,
    );
}

fn decrypts_what_openssl_encrypted_and_encrypts_what_openssl_decrypts_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    let session = fx.user_session();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let public = fx.public();
    let secret = b"a session key, say";

    // PKCS#1 v1.5.
    let mut enc = Encrypter::new(&public).unwrap();
    enc.set_rsa_padding(Padding::PKCS1).unwrap();
    let mut ct = vec![0u8; enc.encrypt_len(secret).unwrap()];
    let len = enc.encrypt(secret, &mut ct).unwrap();
    ct.truncate(len);
    let pt = session.decrypt(&Mechanism::RsaPkcs, key, &ct).unwrap();
    assert_eq!(pt, secret);
    assert_eq!(
        decrypt_in_parts(&session, &Mechanism::RsaPkcs, key, &ct),
        secret
    );

    // OAEP with SHA-256, with and without a label.
    for label in [&b""[..], b"a label"] {
        let mut enc = Encrypter::new(&public).unwrap();
        enc.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        enc.set_rsa_oaep_md(MessageDigest::sha256()).unwrap();
        enc.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
        if !label.is_empty() {
            enc.set_rsa_oaep_label(label).unwrap();
        }
        let mut ct = vec![0u8; enc.encrypt_len(secret).unwrap()];
        let len = enc.encrypt(secret, &mut ct).unwrap();
        ct.truncate(len);
        let source = if label.is_empty() {
            PkcsOaepSource::empty()
        } else {
            PkcsOaepSource::data_specified(label)
        };
        let params = PkcsOaepParams::new(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, source);
        let pt = session
            .decrypt(&Mechanism::RsaPkcsOaep(params), key, &ct)
            .unwrap();
        assert_eq!(pt, secret, "label {label:?}");
        let mechanism = Mechanism::RsaPkcsOaep(params);
        assert_eq!(
            decrypt_in_parts(&session, &mechanism, key, &ct),
            secret,
            "label {label:?}"
        );
        // The wrong label is one error, no detail.
        let wrong = PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::data_specified(b"another"),
        );
        let err = session
            .decrypt(&Mechanism::RsaPkcsOaep(wrong), key, &ct)
            .unwrap_err();
        assert_eq!(rv(err), RvError::EncryptedDataInvalid);
    }

    // Local encryption with the public key object; OpenSSL decrypts.
    let public_handle = find_one(&session, ObjectClass::PUBLIC_KEY);
    let ct = session
        .encrypt(&Mechanism::RsaPkcs, public_handle, secret)
        .unwrap();
    let rsa = fx.openssl.rsa().unwrap();
    let mut pt = vec![0u8; 256];
    let n = rsa.private_decrypt(&ct, &mut pt, Padding::PKCS1).unwrap();
    assert_eq!(&pt[..n], secret);

    // In parts: buffered, encrypted at C_EncryptFinal; OpenSSL decrypts.
    session
        .encrypt_init(&Mechanism::RsaPkcs, public_handle)
        .unwrap();
    for part in secret.chunks(5) {
        assert_eq!(session.encrypt_update(part).unwrap(), Vec::<u8>::new());
    }
    let ct = session.encrypt_final().unwrap();
    let n = rsa.private_decrypt(&ct, &mut pt, Padding::PKCS1).unwrap();
    assert_eq!(&pt[..n], secret);

    // More ciphertext than one block is refused and ends the operation; so is a final
    // call on a ciphertext shorter than the modulus.
    session.decrypt_init(&Mechanism::RsaPkcs, key).unwrap();
    session.decrypt_update(&[1; 200]).unwrap();
    let err = session.decrypt_update(&[1; 57]).unwrap_err();
    assert_eq!(rv(err), RvError::EncryptedDataLenRange);
    let err = session.decrypt_final().unwrap_err();
    assert_eq!(rv(err), RvError::OperationNotInitialized);
    session.decrypt_init(&Mechanism::RsaPkcs, key).unwrap();
    session.decrypt_update(&[1; 255]).unwrap();
    let err = session.decrypt_final().unwrap_err();
    assert_eq!(rv(err), RvError::EncryptedDataLenRange);
    // A single-part C_Decrypt cannot finish a multi-part decryption.
    session.decrypt_init(&Mechanism::RsaPkcs, key).unwrap();
    session.decrypt_update(&ct[..10]).unwrap();
    let err = session.decrypt(&Mechanism::RsaPkcs, key, &ct).unwrap_err();
    assert_eq!(rv(err), RvError::OperationActive);
}

/// `ciphertext` decrypted with `C_DecryptInit`, `C_DecryptUpdate` in pieces of 1, 100
/// and the rest of the bytes (each giving nothing back), and `C_DecryptFinal`.
fn decrypt_in_parts(
    session: &cryptoki::session::Session,
    mechanism: &Mechanism,
    key: cryptoki::object::ObjectHandle,
    ciphertext: &[u8],
) -> Vec<u8> {
    session.decrypt_init(mechanism, key).unwrap();
    let (first, rest) = ciphertext.split_at(1);
    let (second, third) = rest.split_at(100);
    for part in [first, second, third] {
        assert_eq!(session.decrypt_update(part).unwrap(), Vec::<u8>::new());
    }
    session.decrypt_final().unwrap()
}

#[test]
fn objects_and_attributes_follow_the_specification() {
    isolated(
        "objects_and_attributes_follow_the_specification",
        objects_and_attributes_follow_the_specification_body,
    );
}

fn objects_and_attributes_follow_the_specification_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    // Before login: the public key is visible, the private key is not.
    let public_session = fx.session();
    let found = public_session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(found.is_empty(), "private key visible before login");
    find_one(&public_session, ObjectClass::PUBLIC_KEY);

    let session = fx.user_session();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let info = session
        .get_attribute_info(
            key,
            &[
                AttributeType::Modulus,
                AttributeType::PrivateExponent,
                AttributeType::Value,
                AttributeType::PublicKeyInfo,
            ],
        )
        .unwrap();
    assert!(
        matches!(info[0], AttributeInfo::Available(256)),
        "{:?}",
        info[0]
    );
    assert!(matches!(info[1], AttributeInfo::Sensitive), "{:?}", info[1]);
    assert!(
        matches!(info[2], AttributeInfo::TypeInvalid),
        "{:?}",
        info[2]
    );
    assert!(matches!(info[3], AttributeInfo::Available(n) if n > 256));

    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::PublicKeyInfo,
                AttributeType::ModulusBits,
            ],
        )
        .unwrap();
    let rsa = fx.openssl.rsa().unwrap();
    assert!(attrs.contains(&Attribute::Modulus(rsa.n().to_vec())));
    assert!(attrs.contains(&Attribute::PublicExponent(rsa.e().to_vec())));
    assert!(attrs.contains(&Attribute::Sensitive(true)));
    assert!(attrs.contains(&Attribute::Extractable(false)));
    assert!(attrs.contains(&Attribute::ModulusBits(2048.into())));
    assert!(attrs.contains(&Attribute::PublicKeyInfo(
        fx.openssl.public_key_to_der().unwrap()
    )));

    // A new label is stored on the appliances and survives a restart of the module.
    session
        .update_attributes(key, &[Attribute::Label(b"renamed".to_vec())])
        .unwrap();
    drop(session);
    drop(public_session);
    let mut fx = fx;
    fx.pkcs11.take().unwrap().finalize().unwrap();
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    fx.pkcs11 = Some(p);
    let session = fx.user_session();
    let again = find_one(&session, ObjectClass::PRIVATE_KEY);
    assert_eq!(again, key, "handles are stable across restarts");
    let label = session
        .get_attributes(again, &[AttributeType::Label])
        .unwrap();
    assert_eq!(label, vec![Attribute::Label(b"renamed".to_vec())]);
}

#[test]
fn wrong_pin_is_refused_and_the_right_one_then_works() {
    isolated(
        "wrong_pin_is_refused_and_the_right_one_then_works",
        wrong_pin_is_refused_and_the_right_one_then_works_body,
    );
}

fn wrong_pin_is_refused_and_the_right_one_then_works_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    let session = fx.session();
    let err = session
        .login(UserType::User, Some(&AuthPin::from("999999".to_owned())))
        .unwrap_err();
    assert_eq!(rv(err), RvError::PinIncorrect);
    let key_hidden = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(key_hidden.is_empty());
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .unwrap();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    session.sign(&Mechanism::Sha256RsaPkcs, key, b"x").unwrap();
}

#[test]
fn a_dead_appliance_costs_nothing_and_two_dead_fail_fast_then_recover() {
    isolated(
        "a_dead_appliance_costs_nothing_and_two_dead_fail_fast_then_recover",
        a_dead_appliance_costs_nothing_and_two_dead_fail_fast_then_recover_body,
    );
}

fn a_dead_appliance_costs_nothing_and_two_dead_fail_fast_then_recover_body() {
    let mut fx = Fixture::new(&Setup {
        retry_after_ms: 500,
        ..Setup::new(2, 3)
    });
    let session = fx.user_session();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let public = fx.public();
    for i in 0..6 {
        if i == 2 {
            fx.cluster.kill(3);
        }
        let msg = format!("message {i}");
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
            .unwrap();
        verify_pkcs1(&public, MessageDigest::sha256(), msg.as_bytes(), &sig);
    }
    fx.cluster.kill(2);
    let start = Instant::now();
    let err = session
        .sign(&Mechanism::Sha256RsaPkcs, key, b"no quorum")
        .unwrap_err();
    assert_eq!(rv(err), RvError::DeviceError);
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );
    // Both come back on their old addresses; once the back-off (500 ms) has passed, the
    // module asks them again and signing works.
    fx.cluster.restart(2);
    fx.cluster.restart(3);
    std::thread::sleep(Duration::from_millis(600));
    for i in 0..4 {
        let msg = format!("after restart {i}");
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
            .unwrap();
        verify_pkcs1(&public, MessageDigest::sha256(), msg.as_bytes(), &sig);
    }
    // And with appliance 1 gone, the two restarted ones carry the quorum alone.
    fx.cluster.kill(1);
    for i in 0..3 {
        let msg = format!("on the restarted pair {i}");
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
            .unwrap();
        verify_pkcs1(&public, MessageDigest::sha256(), msg.as_bytes(), &sig);
    }
}

#[test]
fn a_hung_appliance_is_asked_around_and_no_signature_waits_for_it() {
    isolated(
        "a_hung_appliance_is_asked_around_and_no_signature_waits_for_it",
        a_hung_appliance_is_asked_around_and_no_signature_waits_for_it_body,
    );
}

/// Four threads sign for `run`; each signature is verified with OpenSSL. Returns the
/// signatures made, the failures and the longest signature.
fn sign_under_load(fx: &Fixture, run: Duration) -> (usize, usize, Duration) {
    let public = fx.public();
    let stop_at = Instant::now() + run;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let public = public.clone();
                scope.spawn(move || {
                    let session = fx.session();
                    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
                    let (mut made, mut failed, mut longest) = (0, 0, Duration::ZERO);
                    while Instant::now() < stop_at {
                        let msg = format!("thread {t}, signature {made}");
                        let start = Instant::now();
                        match session.sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes()) {
                            Ok(sig) => {
                                longest = longest.max(start.elapsed());
                                verify_pkcs1(
                                    &public,
                                    MessageDigest::sha256(),
                                    msg.as_bytes(),
                                    &sig,
                                );
                                made += 1;
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (made, failed, longest)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, 0, Duration::ZERO), |(m, f, l), (m2, f2, l2)| {
                (m + m2, f + f2, l.max(l2))
            })
    })
}

fn a_hung_appliance_is_asked_around_and_no_signature_waits_for_it_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    // The module's login, for every session of the threads.
    let _login = fx.user_session();
    // Warm up (connections, the latencies the hedge wait is made of).
    sign_under_load(&fx, Duration::from_secs(1));
    // Windows without a fault (2 s) and with appliance 3 hung (SIGSTOP, 3 s) take turns,
    // twice, so that whatever else loads the machine weighs on both alike. After each
    // hang, half a second unmeasured lets appliance 3 answer what it was sent.
    let (mut healthy, mut made, mut longest) = (0, 0, Duration::ZERO);
    for _ in 0..2 {
        let (signed, failed, _) = sign_under_load(&fx, Duration::from_secs(2));
        assert_eq!(failed, 0);
        healthy += signed;
        let (signed, failed, slowest) = std::thread::scope(|scope| {
            let toggler = scope.spawn(|| {
                fx.cluster.signal(3, "STOP");
                std::thread::sleep(Duration::from_secs(3));
                fx.cluster.signal(3, "CONT");
            });
            let result = sign_under_load(&fx, Duration::from_secs(3));
            toggler.join().unwrap();
            result
        });
        assert_eq!(failed, 0, "{signed} signatures, {failed} failures");
        made += signed;
        longest = longest.max(slowest);
        sign_under_load(&fx, Duration::from_millis(500));
    }
    assert!(
        longest < Duration::from_secs(1),
        "the longest signature took {longest:?}"
    );
    // Throughput with a hung appliance, against without (6 s against 4 s of signing).
    let ratio = (made as f64 / 6.0) / (healthy as f64 / 4.0);
    assert!(
        ratio >= 0.8,
        "{made} signatures in 6 s with appliance 3 hung, {healthy} in 4 s without: {ratio:.2}"
    );

    // Killed under load: its requests fail at once and go to the others.
    let (made, failed, longest) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            fx.cluster.signal(3, "KILL");
        });
        let result = sign_under_load(&fx, Duration::from_secs(2));
        killer.join().unwrap();
        result
    });
    assert_eq!(failed, 0, "{made} signatures, {failed} failures");
    assert!(
        longest < Duration::from_secs(1),
        "the longest signature took {longest:?}"
    );
}

#[test]
fn three_of_five_signs_and_decrypts() {
    isolated("three_of_five_signs_and_decrypts", || {
        let fx = Fixture::new(&Setup::new(3, 5));
        let session = fx.user_session();
        let key = find_one(&session, ObjectClass::PRIVATE_KEY);
        let public = fx.public();
        for i in 0..5 {
            let msg = format!("three of five, message {i}");
            let sig = session
                .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
                .unwrap();
            verify_pkcs1(&public, MessageDigest::sha256(), msg.as_bytes(), &sig);
        }
        let digest = openssl::sha::sha256(b"tls 1.3 transcript");
        let params = pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32);
        let sig = session
            .sign(&Mechanism::RsaPkcsPss(params), key, &digest)
            .unwrap();
        verify_pss(
            &public,
            MessageDigest::sha256(),
            b"tls 1.3 transcript",
            &sig,
        );
        let secret = b"three of five";
        let ct = oaep_sha256(&fx, secret);
        let params = PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        );
        let pt = session
            .decrypt(&Mechanism::RsaPkcsOaep(params), key, &ct)
            .unwrap();
        assert_eq!(pt, secret);
    });
}

fn oaep_sha256(fx: &Fixture, secret: &[u8]) -> Vec<u8> {
    let public = fx.public();
    let mut enc = Encrypter::new(&public).unwrap();
    enc.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    enc.set_rsa_oaep_md(MessageDigest::sha256()).unwrap();
    enc.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    let mut ct = vec![0u8; enc.encrypt_len(secret).unwrap()];
    let len = enc.encrypt(secret, &mut ct).unwrap();
    ct.truncate(len);
    ct
}

/// k-of-n with appliance `bad` behind a proxy that corrupts every partial it returns:
/// signatures and decryptions stay right and the log names `bad`, and only `bad`.
fn wrong_partials_change_nothing(k: usize, n: u8, bad: u8) {
    let fx = Fixture::new(&Setup {
        bad: vec![bad],
        ..Setup::new(k, n)
    });
    let session = fx.user_session();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let public = fx.public();
    // The module starts with a different appliance each call: over n calls, `bad` is
    // among the first k asked several times.
    for i in 0..2 * usize::from(n) {
        let msg = format!("message {i} with a liar in the cluster");
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
            .unwrap();
        verify_pkcs1(&public, MessageDigest::sha256(), msg.as_bytes(), &sig);
    }
    for i in 0..n {
        let secret = format!("secret {i}");
        let ct = oaep_sha256(&fx, secret.as_bytes());
        let params = PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        );
        let pt = session
            .decrypt(&Mechanism::RsaPkcsOaep(params), key, &ct)
            .unwrap();
        assert_eq!(pt, secret.as_bytes());
    }
    let log = std::fs::read_to_string(log_path()).unwrap();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("appliance returned a wrong partial result"))
        .collect();
    assert!(
        !named.is_empty(),
        "the wrong partials were not logged:\n{log}"
    );
    for line in named {
        assert!(
            line.contains(&format!("appliance={bad}")) && line.contains("ERROR"),
            "{line}"
        );
    }
}

#[test]
fn a_wrong_partial_in_2_of_3_changes_no_result_and_is_named_in_the_log() {
    isolated(
        "a_wrong_partial_in_2_of_3_changes_no_result_and_is_named_in_the_log",
        || wrong_partials_change_nothing(2, 3, 3),
    );
}

#[test]
fn a_wrong_partial_in_3_of_5_changes_no_result_and_is_named_in_the_log() {
    isolated(
        "a_wrong_partial_in_3_of_5_changes_no_result_and_is_named_in_the_log",
        || wrong_partials_change_nothing(3, 5, 2),
    );
}

#[test]
fn three_wrong_pins_lock_the_token_even_for_the_right_pin() {
    isolated(
        "three_wrong_pins_lock_the_token_even_for_the_right_pin",
        || {
            // The harness's appliances lock after 3 failures.
            let fx = Fixture::new(&Setup::new(2, 3));
            let session = fx.session();
            let wrong = AuthPin::from("999999".to_owned());
            for attempt in 1..=3 {
                let err = rv(session.login(UserType::User, Some(&wrong)).unwrap_err());
                if attempt < 3 {
                    assert_eq!(err, RvError::PinIncorrect, "attempt {attempt}");
                } else {
                    assert!(
                        matches!(err, RvError::PinIncorrect | RvError::PinLocked),
                        "attempt {attempt}: {err:?}"
                    );
                }
            }
            let right = AuthPin::from(PIN.to_owned());
            let err = rv(session.login(UserType::User, Some(&right)).unwrap_err());
            assert_eq!(err, RvError::PinLocked);
            let hidden = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .unwrap();
            assert!(hidden.is_empty());
        },
    );
}

#[test]
fn the_so_sets_the_user_pin_and_the_user_changes_it() {
    isolated("the_so_sets_the_user_pin_and_the_user_changes_it", || {
        let fx = Fixture::new(&Setup::new(2, 3));
        let so_pin = "so-secret-1";
        for i in 1..=3 {
            let mut admin = fx.cluster.connect_as(i, "admin").unwrap();
            let answer = admin
                .request(&Request::SetPin {
                    user: UserKind::SecurityOfficer,
                    pin: SecretBytes::new(so_pin.as_bytes().to_vec()),
                })
                .unwrap();
            assert_eq!(answer, Response::Ok);
        }
        let login = |session: &cryptoki::session::Session, user, pin: &str| {
            session.login(user, Some(&AuthPin::from(pin.to_owned())))
        };
        let session = fx.session();

        // C_InitPIN needs the SO.
        let err = session
            .init_pin(&AuthPin::from("654321".to_owned()))
            .unwrap_err();
        assert_eq!(rv(err), RvError::UserNotLoggedIn);
        login(&session, UserType::So, so_pin).unwrap();
        session
            .init_pin(&AuthPin::from("654321".to_owned()))
            .unwrap();
        session.logout().unwrap();
        let err = login(&session, UserType::User, PIN).unwrap_err();
        assert_eq!(rv(err), RvError::PinIncorrect, "the old PIN still works");
        login(&session, UserType::User, "654321").unwrap();
        let key = find_one(&session, ObjectClass::PRIVATE_KEY);
        let sig = session.sign(&Mechanism::Sha256RsaPkcs, key, b"x").unwrap();
        verify_pkcs1(&fx.public(), MessageDigest::sha256(), b"x", &sig);

        // C_SetPIN: the user changes their own PIN; the session stays usable.
        session
            .set_pin(
                &AuthPin::from("654321".to_owned()),
                &AuthPin::from("24681357".to_owned()),
            )
            .unwrap();
        session.sign(&Mechanism::Sha256RsaPkcs, key, b"y").unwrap();
        session.logout().unwrap();
        let err = login(&session, UserType::User, "654321").unwrap_err();
        assert_eq!(
            rv(err),
            RvError::PinIncorrect,
            "the replaced PIN still works"
        );
        login(&session, UserType::User, "24681357").unwrap();
        session.sign(&Mechanism::Sha256RsaPkcs, key, b"z").unwrap();
    });
}

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn no_thread_is_left_after_finalize() {
    isolated("no_thread_is_left_after_finalize", || {
        let mut fx = Fixture::prepare(&Setup::new(2, 3), &support::config_path());
        let before = threads_of_this_process();
        fx.load(CInitializeFlags::OS_LOCKING_OK);
        {
            let session = fx.user_session();
            let key = find_one(&session, ObjectClass::PRIVATE_KEY);
            for _ in 0..3 {
                session.sign(&Mechanism::Sha256RsaPkcs, key, b"x").unwrap();
            }
        }
        fx.pkcs11.take().unwrap().finalize().unwrap();
        assert_eq!(threads_of_this_process(), before);
    });
}

/// NSS initialises every module with `CKF_LIBRARY_CANT_CREATE_OS_THREADS`. The token
/// signs, and generates a key pair: key generation needs every appliance working at once
/// (each waits for the others' rounds), so the module sends every `GenerateKey` before it
/// reads any answer, on the calling thread. The new key signs at once.
#[test]
fn an_application_that_forbids_threads_gets_a_working_token_without_them() {
    isolated(
        "an_application_that_forbids_threads_gets_a_working_token_without_them",
        || {
            let mut fx = Fixture::prepare(&Setup::keygen(2, 3), &support::config_path());
            fx.load(
                CInitializeFlags::OS_LOCKING_OK | CInitializeFlags::LIBRARY_CANT_CREATE_OS_THREADS,
            );
            let session = fx.user_session();
            let key = find_one(&session, ObjectClass::PRIVATE_KEY);
            let sig = session.sign(&Mechanism::Sha256RsaPkcs, key, b"x").unwrap();
            verify_pkcs1(&fx.public(), MessageDigest::sha256(), b"x", &sig);

            let id = b"\x1d".to_vec();
            let (public, private) = session
                .generate_key_pair(
                    &Mechanism::RsaPkcsKeyPairGen,
                    &[
                        Attribute::Token(true),
                        Attribute::ModulusBits(1024.into()),
                        Attribute::Id(id.clone()),
                    ],
                    &[Attribute::Token(true), Attribute::Id(id.clone())],
                )
                .unwrap();
            let pkey = openssl_public(&session, public);
            assert_eq!(pkey.bits(), 1024);
            let msg = b"generated by an application without threads";
            let sig = session
                .sign(&Mechanism::Sha256RsaPkcs, private, msg)
                .unwrap();
            verify_pkcs1(&pkey, MessageDigest::sha256(), msg, &sig);
            let committed: Vec<_> = keys_on_appliances(&fx, 3)
                .into_iter()
                .filter(|(_, key, active, pending)| {
                    key == &id && (*active, *pending) == (Some(1), None)
                })
                .collect();
            assert_eq!(committed.len(), 3, "{committed:?}");
        },
    );
}

/// With threads forbidden the k partial requests of an operation are still in flight
/// together (sent, then read): proxies in front of every appliance hold each partial
/// request until k are held at once, and none waits in vain.
#[test]
fn without_threads_the_appliances_are_still_asked_at_once() {
    isolated(
        "without_threads_the_appliances_are_still_asked_at_once",
        || {
            let mut fx = Fixture::prepare(
                &Setup {
                    rendezvous: true,
                    ..Setup::new(2, 3)
                },
                &support::config_path(),
            );
            fx.load(
                CInitializeFlags::OS_LOCKING_OK | CInitializeFlags::LIBRARY_CANT_CREATE_OS_THREADS,
            );
            let session = fx.user_session();
            let key = find_one(&session, ObjectClass::PRIVATE_KEY);
            // Each call starts with another appliance: every pair is asked.
            for i in 0..6 {
                let msg = format!("message {i}");
                let sig = session
                    .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
                    .unwrap();
                verify_pkcs1(&fx.public(), MessageDigest::sha256(), msg.as_bytes(), &sig);
            }
            let rendezvous = fx.rendezvous.as_ref().unwrap();
            assert_eq!(
                rendezvous.missed(),
                0,
                "partial requests were made one by one"
            );
        },
    );
}

/// Connections the appliances closed for idling are not a failure: a long-running
/// application (a web server overnight) signs again as if nothing happened, and no
/// appliance is put in back-off for it.
#[test]
fn connections_the_appliances_closed_for_idling_are_replaced() {
    isolated(
        "connections_the_appliances_closed_for_idling_are_replaced",
        || {
            let mut setup = Setup::new(2, 3);
            setup.options.idle_timeout_ms = 300;
            let fx = Fixture::new(&setup);
            let session = fx.user_session();
            let key = find_one(&session, ObjectClass::PRIVATE_KEY);
            for round in 0..3 {
                // Every pooled connection is closed by its appliance meanwhile.
                std::thread::sleep(Duration::from_millis(800));
                let msg = format!("after idling, round {round}");
                let sig = session
                    .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
                    .unwrap();
                verify_pkcs1(&fx.public(), MessageDigest::sha256(), msg.as_bytes(), &sig);
            }
            let log = std::fs::read_to_string(log_path()).unwrap();
            assert!(
                !log.contains("leaving it alone"),
                "an appliance was put in back-off:\n{log}"
            );
        },
    );
}

/// How many objects appliance `index` stores (deleted ones not counted).
fn stored_objects(fx: &Fixture, index: u8) -> usize {
    let mut c = fx.cluster.user_session(index, PIN.as_bytes());
    match c.request(&Request::ListObjects).unwrap() {
        Response::Objects(list) => list.iter().filter(|o| o.class.is_some()).count(),
        other => panic!("appliance {index} listed {other:?}"),
    }
}

#[test]
fn a_copy_of_the_private_key_is_a_session_object_that_signs() {
    isolated(
        "a_copy_of_the_private_key_is_a_session_object_that_signs",
        a_copy_of_the_private_key_is_a_session_object_that_signs_body,
    );
}

fn a_copy_of_the_private_key_is_a_session_object_that_signs_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    let stored = stored_objects(&fx, 1);
    let creator = fx.user_session();
    let other = fx.session(); // the login is the application's, shared by its sessions
    let key = find_one(&creator, ObjectClass::PRIVATE_KEY);
    // What NSS's server side does: a session copy of the token's private key.
    let copy = creator
        .copy_object(
            key,
            &[
                Attribute::Token(false),
                Attribute::Label(b"session copy".to_vec()),
                Attribute::Id(b"\x09".to_vec()),
            ],
        )
        .unwrap();
    assert_ne!(copy, key);
    let attrs = creator
        .get_attributes(
            copy,
            &[
                AttributeType::Class,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Modulus,
                AttributeType::Sensitive,
            ],
        )
        .unwrap();
    let rsa = fx.openssl.rsa().unwrap();
    for expected in [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Label(b"session copy".to_vec()),
        Attribute::Id(b"\x09".to_vec()),
        Attribute::Modulus(rsa.n().to_vec()),
        Attribute::Sensitive(true),
    ] {
        assert!(attrs.contains(&expected), "{expected:?} in {attrs:?}");
    }
    // The original is unchanged, and the copy was not stored anywhere.
    let label = creator
        .get_attributes(key, &[AttributeType::Label])
        .unwrap();
    assert_eq!(label, vec![Attribute::Label(support::KEY_LABEL.into())]);
    assert_eq!(stored_objects(&fx, 1), stored);

    // The copy signs through the cluster, from any session of the application.
    let msg = b"signed with a copy of the key";
    for session in [&creator, &other] {
        let sig = session.sign(&Mechanism::Sha256RsaPkcs, copy, msg).unwrap();
        verify_pkcs1(&fx.public(), MessageDigest::sha256(), msg, &sig);
    }
    let found = other
        .find_objects(&[Attribute::Id(b"\x09".to_vec())])
        .unwrap();
    assert_eq!(found, vec![copy]);

    // A label change stays on the copy.
    other
        .update_attributes(copy, &[Attribute::Label(b"renamed copy".to_vec())])
        .unwrap();
    let label = creator
        .get_attributes(key, &[AttributeType::Label])
        .unwrap();
    assert_eq!(label, vec![Attribute::Label(support::KEY_LABEL.into())]);

    // The copy dies with the session that made it.
    drop(creator);
    let err = other
        .get_attributes(copy, &[AttributeType::Label])
        .unwrap_err();
    assert_eq!(rv(err), RvError::ObjectHandleInvalid);
    assert!(
        other
            .find_objects(&[Attribute::Id(b"\x09".to_vec())])
            .unwrap()
            .is_empty()
    );
    // A second copy can be destroyed by the application; the original cannot.
    let again = other.copy_object(key, &[]).unwrap();
    other.destroy_object(again).unwrap();
    assert_eq!(
        rv(other.destroy_object(key).unwrap_err()),
        RvError::ActionProhibited
    );
}

#[test]
fn copy_templates_are_checked_and_token_copies_are_stored_everywhere() {
    isolated(
        "copy_templates_are_checked_and_token_copies_are_stored_everywhere",
        copy_templates_are_checked_and_token_copies_are_stored_everywhere_body,
    );
}

fn copy_templates_are_checked_and_token_copies_are_stored_everywhere_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    let session = fx.user_session();
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let public = find_one(&session, ObjectClass::PUBLIC_KEY);
    let refused =
        |object, template: &[Attribute]| rv(session.copy_object(object, template).unwrap_err());
    assert_eq!(
        refused(key, &[Attribute::Token(true)]),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        refused(key, &[Attribute::Private(false)]),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        refused(key, &[Attribute::Class(ObjectClass::PUBLIC_KEY)]),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        refused(key, &[Attribute::KeyType(cryptoki::object::KeyType::EC)]),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        refused(key, &[Attribute::Modulus(vec![0xff; 256])]),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        refused(key, &[Attribute::Sensitive(false)]),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        refused(public, &[Attribute::Modulus(vec![0xff; 256])]),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        refused(public, &[Attribute::Value(b"x".to_vec())]),
        RvError::AttributeTypeInvalid
    );
    // Giving a read-only attribute its own value is no change.
    let rsa = fx.openssl.rsa().unwrap();
    let same = session
        .copy_object(
            key,
            &[
                Attribute::Token(false),
                Attribute::Modulus(rsa.n().to_vec()),
            ],
        )
        .unwrap();
    session.destroy_object(same).unwrap();

    // A token copy of the public key is stored on every appliance, under a new handle,
    // and is not taken for the cluster key's own public key object.
    let before: Vec<usize> = (1..=3).map(|i| stored_objects(&fx, i)).collect();
    let copy = session
        .copy_object(public, &[Attribute::Label(b"public copy".to_vec())])
        .unwrap();
    let after: Vec<usize> = (1..=3).map(|i| stored_objects(&fx, i)).collect();
    assert_eq!(after, before.iter().map(|n| n + 1).collect::<Vec<_>>());
    let attrs = session
        .get_attributes(
            copy,
            &[
                AttributeType::Token,
                AttributeType::Label,
                AttributeType::Modulus,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Label(b"public copy".to_vec())));
    assert!(attrs.contains(&Attribute::Modulus(rsa.n().to_vec())));
    assert_eq!(find_one(&session, ObjectClass::PRIVATE_KEY), key);
    let label = session
        .get_attributes(public, &[AttributeType::Label])
        .unwrap();
    assert_eq!(label, vec![Attribute::Label(support::KEY_LABEL.into())]);
    session.destroy_object(copy).unwrap();
    let gone: Vec<usize> = (1..=3).map(|i| stored_objects(&fx, i)).collect();
    assert_eq!(gone, before);

    // A token copy needs a read-write session.
    let slot = fx.pkcs11().get_slots_with_token().unwrap()[0];
    let read_only = fx.pkcs11().open_ro_session(slot).unwrap();
    assert_eq!(
        rv(read_only
            .copy_object(public, &[Attribute::Token(true)])
            .unwrap_err()),
        RvError::SessionReadOnly
    );
}

#[test]
fn session_objects_live_in_the_module_and_die_with_their_session() {
    isolated(
        "session_objects_live_in_the_module_and_die_with_their_session",
        session_objects_live_in_the_module_and_die_with_their_session_body,
    );
}

fn session_objects_live_in_the_module_and_die_with_their_session_body() {
    let fx = Fixture::new(&Setup::new(2, 3));
    let stored = stored_objects(&fx, 1);
    let slot = fx.pkcs11().get_slots_with_token().unwrap()[0];
    let data = |label: &str, private: bool| {
        vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Private(private),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Application(b"ittc test".to_vec()),
            Attribute::Value(b"payload".to_vec()),
        ]
    };
    let by_app = [Attribute::Application(b"ittc test".to_vec())];
    // A read-only public session may create public session objects, not private ones.
    let public_ro = fx.pkcs11().open_ro_session(slot).unwrap();
    let public_object = public_ro.create_object(&data("public", false)).unwrap();
    assert_eq!(
        rv(public_ro.create_object(&data("private", true)).unwrap_err()),
        RvError::UserNotLoggedIn
    );
    // Every session of the application sees it.
    let user = fx.user_session();
    assert_eq!(user.find_objects(&by_app).unwrap(), vec![public_object]);
    let private_object = user.create_object(&data("private", true)).unwrap();
    let value = public_ro
        .get_attributes(private_object, &[AttributeType::Value])
        .unwrap();
    assert_eq!(value, vec![Attribute::Value(b"payload".to_vec())]);
    let mut both = public_ro.find_objects(&by_app).unwrap();
    both.sort_unstable_by_key(|h| h.handle());
    let mut expected = vec![public_object, private_object];
    expected.sort_unstable_by_key(|h| h.handle());
    assert_eq!(both, expected);
    let token = public_ro
        .get_attributes(public_object, &[AttributeType::Token])
        .unwrap();
    assert_eq!(token, vec![Attribute::Token(false)]);
    assert_eq!(
        stored_objects(&fx, 1),
        stored,
        "a session object was stored"
    );

    // Logging out destroys the private session objects.
    user.logout().unwrap();
    assert_eq!(
        public_ro.find_objects(&by_app).unwrap(),
        vec![public_object]
    );
    user.login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .unwrap();
    assert_eq!(
        rv(user
            .get_attributes(private_object, &[AttributeType::Value])
            .unwrap_err()),
        RvError::ObjectHandleInvalid
    );
    // Destroyed explicitly, or when the creating session closes.
    let short_lived = user.create_object(&data("short", true)).unwrap();
    user.destroy_object(short_lived).unwrap();
    assert_eq!(user.find_objects(&by_app).unwrap(), vec![public_object]);
    drop(public_ro);
    assert!(user.find_objects(&by_app).unwrap().is_empty());
    // Template errors.
    let mut bad = data("bad", false);
    bad[0] = Attribute::Class(ObjectClass::SECRET_KEY);
    assert_eq!(
        rv(user.create_object(&bad).unwrap_err()),
        RvError::TemplateInconsistent
    );
}

/// One key on one appliance: (appliance, key id, active epoch, pending epoch).
type KeyRow = (u8, Vec<u8>, Option<u64>, Option<u64>);

/// Every key on every appliance of `fx`.
fn keys_on_appliances(fx: &Fixture, n: u8) -> Vec<KeyRow> {
    let mut keys = Vec::new();
    for i in 1..=n {
        let mut c = fx.cluster.connect_as(i, "admin").unwrap();
        let Ok(Response::Status(status)) = c.request(&Request::Status) else {
            panic!("status of appliance {i}");
        };
        for k in status.keys {
            keys.push((
                i,
                k.key_id.as_bytes().to_vec(),
                k.active_epoch,
                k.pending_epoch,
            ));
        }
    }
    keys
}

/// The public key the token shows for `handle`, as OpenSSL's.
fn openssl_public(
    session: &cryptoki::session::Session,
    handle: cryptoki::object::ObjectHandle,
) -> openssl::pkey::PKey<openssl::pkey::Public> {
    let attrs = session
        .get_attributes(
            handle,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .unwrap();
    let (Attribute::Modulus(n), Attribute::PublicExponent(e)) = (&attrs[0], &attrs[1]) else {
        panic!("{attrs:?}");
    };
    let rsa = openssl::rsa::Rsa::from_public_components(
        openssl::bn::BigNum::from_slice(n).unwrap(),
        openssl::bn::BigNum::from_slice(e).unwrap(),
    )
    .unwrap();
    openssl::pkey::PKey::from_rsa(rsa).unwrap()
}

#[test]
fn generate_key_pair_goes_ahead_with_an_appliance_away() {
    isolated(
        "generate_key_pair_goes_ahead_with_an_appliance_away",
        generate_key_pair_goes_ahead_with_an_appliance_away_body,
    );
}

fn generate_key_pair_goes_ahead_with_an_appliance_away_body() {
    // 2-of-4: a generation needs 3 (a majority of 4, and Boneh–Franklin's 3). The module
    // leaves an appliance that refused a connection alone for half a second.
    let mut setup = Setup::keygen(2, 4);
    setup.retry_after_ms = 500;
    let mut fx = Fixture::new(&setup);
    fx.cluster.stop(4);
    let session = fx.user_session();
    let id = b"\x0d\x0e".to_vec();
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ModulusBits(1024.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Id(id.clone()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                Attribute::Id(id.clone()),
            ],
        )
        .unwrap();
    let pkey = openssl_public(&session, public);
    let msg = b"generated by three of four appliances";
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, private, msg)
        .unwrap();
    verify_pkcs1(&pkey, MessageDigest::sha256(), msg, &sig);

    // Appliance 4, back, rebuilds its share by itself; then 3 and 4 sign alone.
    fx.cluster.start(4);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !keys_on_appliances(&fx, 4)
        .iter()
        .any(|(i, key, active, _)| *i == 4 && key == &id && *active == Some(1))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "appliance 4 did not catch up:\n{}",
            fx.cluster.log(4)
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    fx.cluster.stop(1);
    fx.cluster.stop(2);
    // Past the module's back-off from appliance 4's refusals while it was down.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let msg = b"signed by the two that were not both there at the start";
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, private, msg)
        .unwrap();
    verify_pkcs1(&pkey, MessageDigest::sha256(), msg, &sig);

    // With two of four down, a generation is refused and leaves nothing behind.
    let refused = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::ModulusBits(1024.into()),
                Attribute::Id(vec![0x0f]),
            ],
            &[Attribute::Id(vec![0x0f])],
        )
        .unwrap_err();
    assert_eq!(rv(refused), RvError::DeviceError);
}

#[test]
fn generate_key_pair_makes_a_key_that_signs_at_once() {
    isolated(
        "generate_key_pair_makes_a_key_that_signs_at_once",
        generate_key_pair_makes_a_key_that_signs_at_once_body,
    );
}

fn generate_key_pair_makes_a_key_that_signs_at_once_body() {
    let fx = Fixture::new(&Setup::keygen(2, 3));
    let session = fx.user_session();
    let slot = fx.pkcs11().get_slots_with_token().unwrap()[0];
    let mechanisms = fx.pkcs11().get_mechanism_list(slot).unwrap();
    assert!(mechanisms.contains(&MechanismType::RSA_PKCS_KEY_PAIR_GEN));

    let id = b"\x0b\x0c".to_vec();
    let public_template = [
        Attribute::Token(true),
        Attribute::ModulusBits(1024.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Id(id.clone()),
        Attribute::Label(b"generated".to_vec()),
        Attribute::Verify(true),
        Attribute::Encrypt(true),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(true),
        Attribute::Id(id.clone()),
    ];
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &public_template,
            &private_template,
        )
        .unwrap();
    // Both objects are found by CKA_ID, with the template's attributes.
    for (class, handle) in [
        (ObjectClass::PUBLIC_KEY, public),
        (ObjectClass::PRIVATE_KEY, private),
    ] {
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])
            .unwrap();
        assert_eq!(found, vec![handle], "{class:?}");
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::Token,
                    AttributeType::ModulusBits,
                    AttributeType::PublicExponent,
                ],
            )
            .unwrap();
        assert_eq!(
            attrs,
            vec![
                Attribute::Label(b"generated".to_vec()),
                Attribute::Token(true),
                Attribute::ModulusBits(1024.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            "{class:?}"
        );
    }
    let private_attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Private,
                AttributeType::Sign,
            ],
        )
        .unwrap();
    assert_eq!(
        private_attrs,
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(true),
            Attribute::Sign(true),
        ]
    );
    let local = session
        .get_attributes(public, &[AttributeType::Local])
        .unwrap();
    assert_eq!(local, vec![Attribute::Local(true)]);

    // It signs at once, and OpenSSL verifies with the key read from the token.
    let pkey = openssl_public(&session, public);
    assert_eq!(pkey.bits(), 1024);
    assert_eq!(
        pkey.public_key_to_der().unwrap(),
        openssl_public(&session, private)
            .public_key_to_der()
            .unwrap()
    );
    let msg = b"signed with a key the token generated and nobody holds";
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, private, msg)
        .unwrap();
    verify_pkcs1(&pkey, MessageDigest::sha256(), msg, &sig);

    // Committed on every appliance.
    let generated: Vec<_> = keys_on_appliances(&fx, 3)
        .into_iter()
        .filter(|(_, key, _, _)| key == &id)
        .collect();
    assert_eq!(generated.len(), 3, "{generated:?}");
    assert!(
        generated
            .iter()
            .all(|(_, _, active, pending)| (*active, *pending) == (Some(1), None)),
        "{generated:?}"
    );

    // The same CKA_ID again is refused before anything starts.
    let again = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &public_template,
            &private_template,
        )
        .unwrap_err();
    assert_eq!(rv(again), RvError::AttributeValueInvalid);

    // Without CKA_ID and CKA_LABEL: the SHA-1 of the modulus and the default label.
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::ModulusBits(1024.into())],
            &[],
        )
        .unwrap();
    let pkey = openssl_public(&session, public);
    let modulus = pkey.rsa().unwrap().n().to_vec();
    let derived = openssl::sha::sha1(&modulus).to_vec();
    for (class, handle) in [
        (ObjectClass::PUBLIC_KEY, public),
        (ObjectClass::PRIVATE_KEY, private),
    ] {
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(derived.clone())])
            .unwrap();
        assert_eq!(found, vec![handle], "{class:?}");
        let label = session
            .get_attributes(handle, &[AttributeType::Label])
            .unwrap();
        assert_eq!(label, vec![Attribute::Label(b"ittc key".to_vec())]);
    }
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, private, msg)
        .unwrap();
    verify_pkcs1(&pkey, MessageDigest::sha256(), msg, &sig);
    let log = std::fs::read_to_string(log_path()).unwrap();
    assert_eq!(
        log.matches("key pair generated and committed on the participating appliances")
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn generate_key_pair_checks_session_login_and_templates() {
    isolated(
        "generate_key_pair_checks_session_login_and_templates",
        generate_key_pair_checks_session_login_and_templates_body,
    );
}

fn generate_key_pair_checks_session_login_and_templates_body() {
    // Appliances with the default keygen.min_bits (2048).
    let fx = Fixture::new(&Setup::new(2, 3));
    let gen_rv = |session: &cryptoki::session::Session,
                  mechanism: &Mechanism,
                  public: &[Attribute],
                  private: &[Attribute]| {
        rv(session
            .generate_key_pair(mechanism, public, private)
            .unwrap_err())
    };
    let bits = |b: u64| Attribute::ModulusBits(b.into());
    let keygen = Mechanism::RsaPkcsKeyPairGen;

    let session = fx.session();
    let slot = fx.pkcs11().get_slots_with_token().unwrap()[0];
    let read_only = fx.pkcs11().open_ro_session(slot).unwrap();
    // A session key pair (CKA_TOKEN false), which the specification allows in any
    // session, is refused as something the token cannot make, before the session state
    // is looked at: not CKR_SESSION_READ_ONLY or CKR_USER_NOT_LOGGED_IN.
    let session_keys = [bits(2048), Attribute::Token(false)];
    // No private object asked for: the token's private key is private all the same.
    let public_private_key = [Attribute::Private(false)];
    for s in [&session, &read_only] {
        assert_eq!(
            gen_rv(s, &keygen, &session_keys, &[Attribute::Token(false)]),
            RvError::TemplateInconsistent
        );
        assert_eq!(
            gen_rv(
                s,
                &keygen,
                &[bits(2048), Attribute::Private(false)],
                &public_private_key
            ),
            RvError::TemplateInconsistent
        );
    }
    // What the token makes (token objects, a private private key) needs a read-write
    // session with the user.
    assert_eq!(
        gen_rv(&session, &keygen, &[bits(2048)], &[]),
        RvError::UserNotLoggedIn
    );
    assert_eq!(
        gen_rv(&read_only, &keygen, &[bits(2048)], &[]),
        RvError::SessionReadOnly
    );
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .unwrap();
    assert_eq!(
        gen_rv(&read_only, &keygen, &[bits(2048)], &[]),
        RvError::SessionReadOnly
    );
    assert_eq!(
        gen_rv(&read_only, &keygen, &session_keys, &[]),
        RvError::TemplateInconsistent
    );

    let cases: Vec<(Mechanism, Vec<Attribute>, Vec<Attribute>, RvError)> = vec![
        (
            Mechanism::RsaPkcs,
            vec![bits(2048)],
            vec![],
            RvError::MechanismInvalid,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![],
            vec![],
            RvError::TemplateIncomplete,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![bits(2000)],
            vec![],
            RvError::KeySizeRange,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![bits(2048), Attribute::Token(false)],
            vec![],
            RvError::TemplateInconsistent,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![bits(2048)],
            vec![Attribute::Extractable(true)],
            RvError::TemplateInconsistent,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![bits(2048)],
            vec![Attribute::Sensitive(false)],
            RvError::TemplateInconsistent,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![bits(2048), Attribute::PublicExponent(vec![1, 0, 0])],
            vec![],
            RvError::AttributeValueInvalid,
        ),
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![bits(2048), Attribute::Id(vec![1])],
            vec![Attribute::Id(vec![2])],
            RvError::TemplateInconsistent,
        ),
    ];
    for (mechanism, public, private, expected) in cases {
        assert_eq!(
            gen_rv(&session, &mechanism, &public, &private),
            expected,
            "{mechanism:?} {public:?} {private:?}"
        );
    }

    // 1024 bits on appliances that do not offer them: the appliances refuse, the module
    // cleans up and says so, and nothing is left on any appliance.
    let before = keys_on_appliances(&fx, 3);
    assert_eq!(
        gen_rv(
            &session,
            &keygen,
            &[bits(1024), Attribute::Id(vec![0x42])],
            &[]
        ),
        RvError::KeySizeRange
    );
    assert_eq!(keys_on_appliances(&fx, 3), before);
    let log = std::fs::read_to_string(log_path()).unwrap();
    assert!(log.contains("key generation failed; rolling back"), "{log}");
    assert!(log.contains("nothing is left on any appliance"), "{log}");
    // The imported key still signs.
    let key = find_one(&session, ObjectClass::PRIVATE_KEY);
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, key, b"still here")
        .unwrap();
    verify_pkcs1(&fx.public(), MessageDigest::sha256(), b"still here", &sig);
}

/// A self-signed certificate of the fixture's key, DER.
fn certificate_der(fx: &Fixture, name: &str) -> Vec<u8> {
    let mut subject = openssl::x509::X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut builder = openssl::x509::X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&subject).unwrap();
    builder.set_issuer_name(&subject).unwrap();
    builder.set_pubkey(&fx.openssl).unwrap();
    builder
        .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    builder.sign(&fx.openssl, MessageDigest::sha256()).unwrap();
    builder.build().to_der().unwrap()
}

/// Loads a new instance of the module, as a new application would: nothing cached.
fn reload(fx: &mut Fixture) {
    fx.pkcs11.take().unwrap().finalize().unwrap();
    fx.load(CInitializeFlags::OS_LOCKING_OK);
}

/// What appliance `index` stores of object `handle`: `None` if nothing or a tombstone,
/// else the object's `CKA_LABEL` and `CKA_VALUE`.
fn stored_on(fx: &Fixture, index: u8, handle: u64) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut c = fx.cluster.user_session(index, PIN.as_bytes());
    let request = Request::GetObject {
        handle: ittc_wire::ObjectId(handle),
    };
    match c.request(&request).unwrap() {
        Response::Object { object, .. } => {
            let get = |kind: u64| object.attribute(kind).unwrap_or_default().to_vec();
            Some((get(0x03), get(0x11)))
        }
        Response::Error(err) if err.code == ittc_wire::ErrorCode::NotFound => None,
        other => panic!("appliance {index}: {other:?}"),
    }
}

#[test]
fn an_object_deleted_while_an_appliance_was_down_stays_deleted() {
    isolated(
        "an_object_deleted_while_an_appliance_was_down_stays_deleted",
        an_object_deleted_while_an_appliance_was_down_stays_deleted_body,
    );
}

fn an_object_deleted_while_an_appliance_was_down_stays_deleted_body() {
    let mut fx = Fixture::new(&Setup::new(2, 3));
    let session = fx.user_session();
    let doomed = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(b"doomed".to_vec()),
            Attribute::Value(b"payload".to_vec()),
        ])
        .unwrap();
    let old_der = certificate_der(&fx, "before");
    let cert = session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(vec![0x42]),
            Attribute::Label(b"before".to_vec()),
            Attribute::Value(old_der.clone()),
        ])
        .unwrap();
    assert_eq!(
        stored_on(&fx, 3, doomed.handle()),
        Some((b"doomed".to_vec(), b"payload".to_vec()))
    );

    // Appliance 3 is down while the data object is deleted and the certificate renamed.
    fx.cluster.stop(3);
    session.destroy_object(doomed).unwrap();
    session
        .update_attributes(cert, &[Attribute::Label(b"after".to_vec())])
        .unwrap();
    drop(session);
    fx.cluster.start(3);
    // Appliance 3 still has the old versions.
    assert!(stored_on(&fx, 3, doomed.handle()).is_some());
    assert_eq!(
        stored_on(&fx, 3, cert.handle()).unwrap().0,
        b"before".to_vec()
    );

    // The labels of the token's public objects.
    let labels = |session: &cryptoki::session::Session| -> Vec<Vec<u8>> {
        let template = [Attribute::Token(true), Attribute::Private(false)];
        let mut labels: Vec<Vec<u8>> = session
            .find_objects(&template)
            .unwrap()
            .into_iter()
            .map(|h| {
                match session
                    .get_attributes(h, &[AttributeType::Label])
                    .unwrap()
                    .as_slice()
                {
                    [Attribute::Label(l)] => l.clone(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        labels.sort();
        labels
    };
    // Through {1, 3}, not logged in: deleted, renamed; nothing is written.
    fx.cluster.stop(2);
    reload(&mut fx);
    let anonymous = fx.session();
    let seen = labels(&anonymous);
    assert!(!seen.contains(&b"doomed".to_vec()), "{seen:?}");
    assert!(seen.contains(&b"after".to_vec()), "{seen:?}");
    assert!(!seen.contains(&b"before".to_vec()), "{seen:?}");
    assert!(stored_on(&fx, 3, doomed.handle()).is_some());
    // A user's login repairs appliance 3.
    anonymous
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .unwrap();
    assert_eq!(labels(&anonymous), seen);
    assert_eq!(stored_on(&fx, 3, doomed.handle()), None);
    assert_eq!(
        stored_on(&fx, 3, cert.handle()),
        Some((b"after".to_vec(), old_der))
    );
    drop(anonymous);

    // Through {2, 3}: the same.
    fx.cluster.start(2);
    fx.cluster.stop(1);
    reload(&mut fx);
    let session = fx.session();
    assert_eq!(labels(&session), seen);
}

#[test]
fn a_change_that_reaches_fewer_than_k_appliances_fails_and_is_undone() {
    isolated(
        "a_change_that_reaches_fewer_than_k_appliances_fails_and_is_undone",
        a_change_that_reaches_fewer_than_k_appliances_fails_and_is_undone_body,
    );
}

fn a_change_that_reaches_fewer_than_k_appliances_fails_and_is_undone_body() {
    let mut fx = Fixture::new(&Setup::new(2, 3));
    let session = fx.user_session();
    let object = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"kept".to_vec()),
            Attribute::Value(b"v1".to_vec()),
        ])
        .unwrap();
    // The module has not noticed yet that 2 and 3 are gone: it writes to all three, and
    // only appliance 1 takes the change.
    fx.cluster.kill(2);
    fx.cluster.kill(3);
    let refused = session
        .update_attributes(object, &[Attribute::Value(b"v2".to_vec())])
        .unwrap_err();
    assert_eq!(rv(refused), RvError::DeviceError);
    // Undone on appliance 1.
    assert_eq!(
        stored_on(&fx, 1, object.handle()),
        Some((b"kept".to_vec(), b"v1".to_vec()))
    );
    // With no quorum in reach, a change is refused before anything is written.
    assert_eq!(
        rv(session
            .update_attributes(object, &[Attribute::Value(b"v3".to_vec())])
            .unwrap_err()),
        RvError::DeviceError
    );
    drop(session);
    fx.cluster.start(2);
    fx.cluster.start(3);
    reload(&mut fx);
    let session = fx.user_session();
    let value = session
        .get_attributes(object, &[AttributeType::Value])
        .unwrap();
    assert_eq!(value, vec![Attribute::Value(b"v1".to_vec())]);
    for index in 1..=3 {
        assert_eq!(
            stored_on(&fx, index, object.handle()),
            Some((b"kept".to_vec(), b"v1".to_vec())),
            "appliance {index}"
        );
    }
}
