//! Reading key files in every form an operator may have: PKCS#1 and PKCS#8, PEM and DER,
//! encrypted PKCS#8. The forms are made by OpenSSL from one Wycheproof key and must all
//! give the same key.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ittc_threshold::{Error, RsaPrivateKey};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::symm::Cipher;

fn wycheproof_pkcs1_pem() -> String {
    let path = format!(
        "{}/../vectors/wycheproof/rsa_pkcs1_2048_sig_gen_test.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    file["testGroups"][0]["privateKeyPem"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_key_file_form_gives_the_same_key() {
    let pem = wycheproof_pkcs1_pem();
    let rsa = Rsa::private_key_from_pem(pem.as_bytes()).unwrap();
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("PKCS#1 PEM", pem.clone().into_bytes()),
        ("PKCS#1 DER", rsa.private_key_to_der().unwrap()),
        ("PKCS#8 PEM", pkey.private_key_to_pem_pkcs8().unwrap()),
        ("PKCS#8 DER", pkey.private_key_to_pkcs8().unwrap()),
    ];
    let expected_n = rsa.n().to_vec();
    let expected_e = rsa.e().to_vec();
    for (name, data) in &forms {
        assert!(!RsaPrivateKey::is_encrypted(data), "{name}");
        let key = RsaPrivateKey::from_bytes(data, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.public_key().n_be(), expected_n, "{name}");
        assert_eq!(key.public_key().e_be(), expected_e, "{name}");
        assert_eq!(key.public_key().bits(), 2048);
    }

    let pass = b"correct horse battery staple";
    let encrypted_pem = pkey
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pass)
        .unwrap();
    let encrypted_der = pkey
        .private_key_to_pkcs8_passphrase(Cipher::aes_256_cbc(), pass)
        .unwrap();
    for (name, data) in [
        ("encrypted PEM", &encrypted_pem),
        ("encrypted DER", &encrypted_der),
    ] {
        assert!(RsaPrivateKey::is_encrypted(data), "{name}");
        let key =
            RsaPrivateKey::from_bytes(data, Some(pass)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.public_key().n_be(), expected_n, "{name}");
        for wrong in [None, Some(&b"wrong"[..])] {
            match RsaPrivateKey::from_bytes(data, wrong) {
                Err(Error::KeyFormat(msg)) => {
                    assert!(msg.contains("passphrase"), "{name}: {msg}")
                }
                other => panic!("{name}: expected a passphrase error, got {other:?}"),
            }
        }
    }
}

#[test]
fn non_rsa_and_truncated_keys_are_refused() {
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let ec_pkcs8 = PKey::from_ec_key(ec)
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    match RsaPrivateKey::from_bytes(&ec_pkcs8, None) {
        Err(Error::KeyFormat(msg)) => assert!(msg.contains("rsaEncryption"), "{msg}"),
        other => panic!("expected KeyFormat, got {other:?}"),
    }
    let pem = wycheproof_pkcs1_pem();
    let truncated = &pem.as_bytes()[..pem.len() / 2];
    assert!(matches!(
        RsaPrivateKey::from_bytes(truncated, None),
        Err(Error::KeyFormat(_))
    ));
    let der = Rsa::private_key_from_pem(pem.as_bytes())
        .unwrap()
        .private_key_to_der()
        .unwrap();
    assert!(matches!(
        RsaPrivateKey::from_bytes(&der[..der.len() - 10], None),
        Err(Error::KeyFormat(_))
    ));
}
