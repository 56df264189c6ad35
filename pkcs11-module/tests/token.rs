//! The built `libittc_pkcs11.so`, loaded through the `cryptoki` crate the way an
//! application loads it, against real appliance processes. Every signature is checked and
//! every ciphertext made with OpenSSL and the public key alone.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ittc_tests::{Cluster, Options};
use ittc_threshold::RsaPrivateKey;
use ittc_wire::cluster::{ApplianceEntry, ClusterConfig, TimeoutConfig, TlsFiles, TokenConfig};
use openssl::encrypt::Encrypter;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};

const PIN: &str = "123456";
const KEY_ID: &[u8] = b"\x01";

/// The module is one per process: tests that load it take turns.
static MODULE_LOCK: Mutex<()> = Mutex::new(());

fn module_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/libittc_pkcs11.so
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("libittc_pkcs11.so");
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

struct Fixture {
    cluster: Cluster,
    openssl: PKey<Private>,
    pkcs11: Option<Pkcs11>,
    _guard: MutexGuard<'static, ()>,
}

impl Fixture {
    /// A k-of-n cluster with one imported RSA-2048 key, the user PIN set, a pkcs11.toml
    /// pointing at it, and the module loaded and initialised.
    fn new(k: usize, n: u8, retry_after_ms: u64) -> Self {
        let guard = MODULE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut cluster = Cluster::new(n, &Options::default());
        cluster.start_all();
        let rsa = Rsa::generate(2048).unwrap();
        let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
        cluster.import_key(&key, k, KEY_ID, "test key");
        cluster.set_user_pin(PIN.as_bytes());
        let hello = cluster.connect_as(1, "client").unwrap();
        let dir = cluster.dir();
        let config = ClusterConfig {
            cluster_id: hex::encode(hello.hello().cluster_id),
            threshold: u8::try_from(k).unwrap(),
            tls: TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join("client.pem"),
                key: dir.join("client.key"),
            },
            appliances: (1..=n)
                .map(|i| ApplianceEntry {
                    index: i,
                    address: cluster.address(i).to_string(),
                })
                .collect(),
            timeouts: TimeoutConfig {
                connect_ms: 1000,
                request_ms: 5000,
                retry_after_ms,
            },
            token: TokenConfig::default(),
        };
        let path = dir.join("pkcs11.toml");
        std::fs::write(&path, config.to_toml().unwrap()).unwrap();
        set_env("ITTC_PKCS11_CONFIG", &path);
        let pkcs11 = Pkcs11::new(module_path()).unwrap();
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        Self {
            cluster,
            openssl: PKey::from_rsa(rsa).unwrap(),
            pkcs11: Some(pkcs11),
            _guard: guard,
        }
    }

    fn pkcs11(&self) -> &Pkcs11 {
        self.pkcs11.as_ref().unwrap()
    }

    fn session(&self) -> Session {
        let slot = self.pkcs11().get_slots_with_token().unwrap()[0];
        self.pkcs11().open_rw_session(slot).unwrap()
    }

    fn user_session(&self) -> Session {
        let session = self.session();
        session
            .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
            .unwrap();
        session
    }

    fn public(&self) -> PKey<openssl::pkey::Public> {
        PKey::public_key_from_der(&self.openssl.public_key_to_der().unwrap()).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(p) = self.pkcs11.take() {
            let _ = p.finalize();
        }
    }
}

#[allow(unsafe_code)]
fn set_env(name: &str, value: &Path) {
    // SAFETY: the callers hold MODULE_LOCK; no other thread of this test binary touches
    // the environment meanwhile.
    unsafe { std::env::set_var(name, value) };
}

fn find_one(session: &Session, class: ObjectClass) -> ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Id(KEY_ID.to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "{class:?}");
    found[0]
}

fn rv(err: CkError) -> RvError {
    match err {
        CkError::Pkcs11(rv, _) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn verify_pkcs1(public: &PKey<openssl::pkey::Public>, md: MessageDigest, msg: &[u8], sig: &[u8]) {
    let mut v = Verifier::new(md, public).unwrap();
    v.set_rsa_padding(Padding::PKCS1).unwrap();
    v.update(msg).unwrap();
    assert!(
        v.verify(sig).unwrap(),
        "PKCS#1 v1.5 signature, {} bytes",
        sig.len()
    );
}

fn verify_pss(public: &PKey<openssl::pkey::Public>, md: MessageDigest, msg: &[u8], sig: &[u8]) {
    let mut v = Verifier::new(md, public).unwrap();
    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
    v.set_rsa_mgf1_md(md).unwrap();
    v.update(msg).unwrap();
    assert!(v.verify(sig).unwrap(), "PSS signature, {} bytes", sig.len());
}

fn pss(hash: MechanismType, mgf: PkcsMgfType, salt: u64) -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: salt.into(),
    }
}

#[test]
fn every_sign_mechanism_gives_signatures_openssl_verifies() {
    let fx = Fixture::new(2, 3, 5000);
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
    let fx = Fixture::new(2, 3, 5000);
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
}

#[test]
fn objects_and_attributes_follow_the_specification() {
    let fx = Fixture::new(2, 3, 5000);
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
    let fx = Fixture::new(2, 3, 5000);
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
    let mut fx = Fixture::new(2, 3, 500);
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
    // Restarted appliances listen on new ports: the test rewrites nothing, so restart is
    // checked through a fresh module with a fresh configuration in a later test.
}
