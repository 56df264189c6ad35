//! The mechanisms the other token tests do not reach: OAEP with every SHA hash (with and
//! without a label), single-part SHA-256 PSS, digests, and random data (SHA-224 PSS, which
//! the cryptoki crate cannot name, is signed by pkcs11-tool in `clients.rs`). Every result is
//! produced or checked by OpenSSL. Each test runs in a child process (`support::isolated`).

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;
use openssl::encrypt::{Decrypter, Encrypter};
use openssl::hash::{MessageDigest, hash};
use openssl::rsa::Padding;
use support::{Fixture, Setup, find_one, isolated, verify_pss};

/// (PKCS#11 hash, MGF1, OpenSSL digest) for every SHA hash.
fn hashes() -> [(MechanismType, PkcsMgfType, MessageDigest); 5] {
    [
        (
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            MessageDigest::sha1(),
        ),
        (
            MechanismType::SHA224,
            PkcsMgfType::MGF1_SHA224,
            MessageDigest::sha224(),
        ),
        (
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            MessageDigest::sha256(),
        ),
        (
            MechanismType::SHA384,
            PkcsMgfType::MGF1_SHA384,
            MessageDigest::sha384(),
        ),
        (
            MechanismType::SHA512,
            PkcsMgfType::MGF1_SHA512,
            MessageDigest::sha512(),
        ),
    ]
}

#[test]
fn oaep_with_every_hash_and_label_both_ways() {
    isolated("oaep_with_every_hash_and_label_both_ways", || {
        let fx = Fixture::new(&Setup::new(2, 3));
        let session = fx.user_session();
        let key = find_one(&session, ObjectClass::PRIVATE_KEY);
        let public_handle = find_one(&session, ObjectClass::PUBLIC_KEY);
        let public = fx.public();
        let secret = b"a key to wrap, 32 bytes long....";
        for (hash_type, mgf, md) in hashes() {
            for label in [&b""[..], b"context label"] {
                let source = || {
                    if label.is_empty() {
                        PkcsOaepSource::empty()
                    } else {
                        PkcsOaepSource::data_specified(label)
                    }
                };
                let mechanism =
                    || Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash_type, mgf, source()));
                // OpenSSL encrypts, the token decrypts.
                let mut enc = Encrypter::new(&public).unwrap();
                enc.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
                enc.set_rsa_oaep_md(md).unwrap();
                enc.set_rsa_mgf1_md(md).unwrap();
                if !label.is_empty() {
                    enc.set_rsa_oaep_label(label).unwrap();
                }
                let mut ct = vec![0u8; enc.encrypt_len(secret).unwrap()];
                let len = enc.encrypt(secret, &mut ct).unwrap();
                ct.truncate(len);
                let pt = session.decrypt(&mechanism(), key, &ct).unwrap();
                assert_eq!(pt, secret, "{hash_type:?} label {label:?}");
                // The token encrypts with the public key, OpenSSL decrypts.
                let ct = session
                    .encrypt(&mechanism(), public_handle, secret)
                    .unwrap();
                let private = fx.openssl.clone();
                let mut dec = Decrypter::new(&private).unwrap();
                dec.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
                dec.set_rsa_oaep_md(md).unwrap();
                dec.set_rsa_mgf1_md(md).unwrap();
                if !label.is_empty() {
                    dec.set_rsa_oaep_label(label).unwrap();
                }
                let mut pt = vec![0u8; dec.decrypt_len(&ct).unwrap()];
                let len = dec.decrypt(&ct, &mut pt).unwrap();
                assert_eq!(
                    &pt[..len],
                    secret,
                    "{hash_type:?} label {label:?}, OpenSSL side"
                );
            }
        }
    });
}

#[test]
fn single_part_sha256_pss_verifies_with_openssl() {
    isolated("single_part_sha256_pss_verifies_with_openssl", || {
        let fx = Fixture::new(&Setup::new(2, 3));
        let session = fx.user_session();
        let key = find_one(&session, ObjectClass::PRIVATE_KEY);
        let msg = b"PSS with the hash inside the token";
        let params = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32u64.into(),
        };
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcsPss(params), key, msg)
            .unwrap();
        verify_pss(&fx.public(), MessageDigest::sha256(), msg, &sig);
    });
}

#[test]
fn digests_match_openssl_single_and_multi_part() {
    isolated("digests_match_openssl_single_and_multi_part", || {
        let fx = Fixture::new(&Setup::new(2, 3));
        // Digesting needs no login.
        let session = fx.session();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for (mechanism, md) in [
            (Mechanism::Sha1, MessageDigest::sha1()),
            (Mechanism::Sha224, MessageDigest::sha224()),
            (Mechanism::Sha256, MessageDigest::sha256()),
            (Mechanism::Sha384, MessageDigest::sha384()),
            (Mechanism::Sha512, MessageDigest::sha512()),
        ] {
            let expected = hash(md, &data).unwrap().to_vec();
            assert_eq!(
                session.digest(&mechanism, &data).unwrap(),
                expected,
                "{mechanism:?}"
            );
            session.digest_init(&mechanism).unwrap();
            for chunk in data.chunks(333) {
                session.digest_update(chunk).unwrap();
            }
            assert_eq!(
                session.digest_final().unwrap(),
                expected,
                "{mechanism:?} multi-part"
            );
        }
    });
}

#[test]
fn random_data_has_the_length_asked_and_differs() {
    isolated("random_data_has_the_length_asked_and_differs", || {
        let fx = Fixture::new(&Setup::new(2, 3));
        let session = fx.session();
        let a = session.generate_random_vec(64).unwrap();
        let b = session.generate_random_vec(64).unwrap();
        assert_eq!((a.len(), b.len()), (64, 64));
        assert_ne!(a, b);
        assert!(a.iter().any(|x| *x != 0));
        let mut big = vec![0u8; 4096];
        session.generate_random_slice(&mut big).unwrap();
        // 4096 random bytes take at least 200 distinct values (all but impossibly).
        let distinct: std::collections::BTreeSet<u8> = big.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "{} distinct byte values",
            distinct.len()
        );
    });
}
