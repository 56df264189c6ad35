//! The paddings against Wycheproof vectors and against two independent implementations: the
//! `rsa` crate (PSS, OAEP) and OpenSSL (PKCS#1 v1.5, PSS with a separate MGF1 hash).
//!
//! The raw RSA operations are textbook `num-bigint` arithmetic with the test keys (see
//! `common`), so every check here is "our padding + plain RSA = what the other side says".
//! The `rsa` crate's PKCS#1 v1.5 API sits behind its non-default `pkcs1v15` feature, which the
//! workspace does not enable, so PKCS#1 v1.5 is checked against OpenSSL instead.

// Helpers outside `#[test]` functions count as production code to clippy; here they are test
// code, and a failed expectation must panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Expected, TestFile, TestPrivateKey, load};
use ittc_threshold::padding::{
    HashAlg, PaddingError, oaep_decrypt, oaep_encode, pkcs1v15_decrypt, pkcs1v15_encrypt_pad,
    pkcs1v15_sign, pkcs1v15_sign_raw, pkcs1v15_verify, pkcs1v15_verify_raw, pss_encode, pss_verify,
};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Oaep, Pss};

const SIG_GEN_FILES: [&str; 3] = [
    "rsa_pkcs1_2048_sig_gen_test.json",
    "rsa_pkcs1_3072_sig_gen_test.json",
    "rsa_pkcs1_4096_sig_gen_test.json",
];

fn openssl_md(hash: HashAlg) -> MessageDigest {
    match hash {
        HashAlg::Sha1 => MessageDigest::sha1(),
        HashAlg::Sha224 => MessageDigest::sha224(),
        HashAlg::Sha256 => MessageDigest::sha256(),
        HashAlg::Sha384 => MessageDigest::sha384(),
        HashAlg::Sha512 => MessageDigest::sha512(),
    }
}

fn openssl_public(key: &common::TestPublicKey) -> PKey<Public> {
    let rsa = Rsa::from_public_components(
        openssl::bn::BigNum::from_slice(&key.n.to_bytes_be()).unwrap(),
        openssl::bn::BigNum::from_slice(&key.e.to_bytes_be()).unwrap(),
    )
    .unwrap();
    PKey::from_rsa(rsa).unwrap()
}

fn openssl_private(key: &TestPrivateKey) -> Rsa<Private> {
    PKey::private_key_from_der(&key.pkcs8_der)
        .unwrap()
        .rsa()
        .unwrap()
}

fn rsa_crate_private(key: &TestPrivateKey) -> rsa::PrivateKey {
    rsa::PrivateKey::from_pkcs8_der(&key.pkcs8_der).unwrap()
}

/// The first group with e = 65537 in each signature-generation file: 2048, 3072, 4096 bits.
fn signing_keys() -> Vec<TestPrivateKey> {
    SIG_GEN_FILES
        .iter()
        .map(|name| {
            load(name)
                .test_groups
                .iter()
                .map(|g| g.private_key())
                .find(|k| k.public.e == 65537u32.into())
                .unwrap()
        })
        .collect()
}

/// PKCS#1 v1.5 signing is deterministic: our encoding, raised to d, must give Wycheproof's
/// signature byte for byte, for every case of the three generation files (SHA-1 to SHA-512,
/// e = 3 and 65537). Each signature also verifies with OpenSSL and with our own verifier.
#[test]
fn pkcs1v15_sign_reproduces_wycheproof_signatures() {
    let mut checked = 0;
    for name in SIG_GEN_FILES {
        let file = load(name);
        for group in &file.test_groups {
            let hash = group.hash("sha");
            let key = group.private_key();
            assert_eq!(
                key.public,
                group.public_key(),
                "{name}: PKCS#8 and JSON key differ"
            );
            let k = key.public.k();
            let ossl = openssl_public(&key.public);
            for case in &group.tests {
                assert_ne!(
                    case.result,
                    Expected::Invalid,
                    "generation files hold no invalid"
                );
                let msg = case.hex("msg");
                let digest = hash.digest(&msg);
                let em = pkcs1v15_sign(hash, &digest, k).unwrap();
                let sig = key.private_op(&em).unwrap();
                assert_eq!(sig, case.hex("sig"), "{name} {}", case.id());

                let mut verifier = Verifier::new(openssl_md(hash), &ossl).unwrap();
                assert!(
                    verifier.verify_oneshot(&sig, &msg).unwrap(),
                    "OpenSSL rejects {name} {}",
                    case.id()
                );
                let recovered = key.public.public_op(&sig).unwrap();
                assert_eq!(pkcs1v15_verify(hash, &digest, &recovered), Ok(()));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 43 + 26 + 24);
}

/// The CRT shortcut of the test harness agrees with plain `x^d mod n`.
#[test]
fn harness_crt_matches_plain_exponentiation() {
    for key in signing_keys() {
        let x = vec![0x42u8; key.public.k() - 1];
        let x = [&[0u8][..], &x].concat();
        assert_eq!(key.private_op(&x), key.private_op_no_crt(&x));
        assert_eq!(key.public.public_op(&key.private_op(&x).unwrap()), Some(x));
    }
}

/// `CKM_RSA_PKCS` on an arbitrary block `T` (a caller-built DigestInfo, or TLS 1.1's MD5||SHA1)
/// gives the same signature as OpenSSL's `RSA_private_encrypt` with PKCS#1 padding.
#[test]
fn pkcs1v15_sign_raw_matches_openssl() {
    for key in signing_keys() {
        let k = key.public.k();
        let ossl = openssl_private(&key);
        for t in [&b""[..], b"\x01", &[0xa5; 36], &vec![0x5a; k - 11]] {
            let ours = key.private_op(&pkcs1v15_sign_raw(t, k).unwrap()).unwrap();
            let mut theirs = vec![0u8; k];
            let n = ossl
                .private_encrypt(t, &mut theirs, Padding::PKCS1)
                .unwrap();
            assert_eq!(n, k);
            assert_eq!(ours, theirs, "T of {} bytes", t.len());
            let recovered = key.public.public_op(&ours).unwrap();
            assert_eq!(pkcs1v15_verify_raw(t, &recovered), Ok(()));
        }
        assert_eq!(
            pkcs1v15_sign_raw(&vec![0; k - 10], k),
            Err(PaddingError::MessageTooLong {
                len: k - 10,
                max: k - 11
            })
        );
    }
}

fn rsa_crate_pss_verify(
    key: &rsa::PublicKey,
    hash: HashAlg,
    salt_len: usize,
    m_hash: &[u8],
    sig: &[u8],
) -> rsa::Result<()> {
    match hash {
        HashAlg::Sha1 => key.verify(Pss::<sha1::Sha1>::new_with_salt(salt_len), m_hash, sig),
        HashAlg::Sha224 => key.verify(Pss::<sha2::Sha224>::new_with_salt(salt_len), m_hash, sig),
        HashAlg::Sha256 => key.verify(Pss::<sha2::Sha256>::new_with_salt(salt_len), m_hash, sig),
        HashAlg::Sha384 => key.verify(Pss::<sha2::Sha384>::new_with_salt(salt_len), m_hash, sig),
        HashAlg::Sha512 => key.verify(Pss::<sha2::Sha512>::new_with_salt(salt_len), m_hash, sig),
    }
}

/// PSS signatures made with our encoding verify with the `rsa` crate (same hash for MGF1) and
/// with OpenSSL (also with a different MGF1 hash), for every hash, 2048/3072/4096-bit keys and
/// salts of 0, 17, hLen and the maximum; a signature on another message fails in both.
#[test]
fn pss_sign_verifies_with_rsa_crate_and_openssl() {
    let mut rng = rand::rng();
    let msg = b"PSS signed by the ittc padding code";
    for key in signing_keys() {
        let mod_bits = key.public.mod_bits();
        let rsa_pub = rsa_crate_private(&key).to_public_key();
        let ossl = openssl_public(&key.public);
        for hash in HashAlg::ALL {
            let m_hash = hash.digest(msg);
            let h_len = hash.output_len();
            let max_salt = (mod_bits - 1).div_ceil(8) - h_len - 2;
            for salt_len in [0, 17, h_len, max_salt] {
                for mgf_hash in [hash, HashAlg::Sha1] {
                    let em =
                        pss_encode(hash, mgf_hash, &m_hash, salt_len, mod_bits, &mut rng).unwrap();
                    let sig = key.private_op(&em).unwrap();
                    let what = format!("{mod_bits} bits {hash:?}/{mgf_hash:?} salt {salt_len}");

                    let mut v = Verifier::new(openssl_md(hash), &ossl).unwrap();
                    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                    v.set_rsa_mgf1_md(openssl_md(mgf_hash)).unwrap();
                    v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(i32::try_from(salt_len).unwrap()))
                        .unwrap();
                    assert!(v.verify_oneshot(&sig, msg).unwrap(), "OpenSSL: {what}");
                    let mut v = Verifier::new(openssl_md(hash), &ossl).unwrap();
                    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                    v.set_rsa_mgf1_md(openssl_md(mgf_hash)).unwrap();
                    assert!(
                        !v.verify_oneshot(&sig, b"another message").unwrap(),
                        "{what}"
                    );

                    if mgf_hash == hash {
                        rsa_crate_pss_verify(&rsa_pub, hash, salt_len, &m_hash, &sig)
                            .unwrap_or_else(|e| panic!("rsa crate: {what}: {e}"));
                        let other = hash.digest(b"another message");
                        assert!(
                            rsa_crate_pss_verify(&rsa_pub, hash, salt_len, &other, &sig).is_err()
                        );
                    }
                    let recovered = key.public.public_op(&sig).unwrap();
                    assert_eq!(
                        pss_verify(
                            hash,
                            mgf_hash,
                            &m_hash,
                            Some(salt_len),
                            mod_bits,
                            &recovered
                        ),
                        Ok(()),
                        "{what}"
                    );
                }
            }
        }
    }
}

/// Runs `check(case) -> accepted?` over every case of `file` and holds it to Wycheproof's
/// verdict: valid must be accepted, invalid must not; acceptable may go either way. Returns
/// (valid, invalid) counts so the caller can assert that both kinds were exercised.
fn hold_to_verdicts(
    file: &TestFile,
    mut check: impl FnMut(&common::TestGroup, &common::TestCase) -> bool,
) -> (usize, usize) {
    let (mut valid, mut invalid) = (0, 0);
    for (group, case) in file.cases() {
        let accepted = check(group, case);
        match case.result {
            Expected::Valid => {
                assert!(
                    accepted,
                    "{}: valid case rejected: {}",
                    file.name,
                    case.id()
                );
                valid += 1;
            }
            Expected::Invalid => {
                assert!(
                    !accepted,
                    "{}: invalid case accepted: {}",
                    file.name,
                    case.id()
                );
                invalid += 1;
            }
            Expected::Acceptable => {}
        }
    }
    (valid, invalid)
}

/// `pss_verify` on `s^e mod N` over the Wycheproof PSS verification files, with the group's
/// salt length; valid cases also verify with the salt length left open.
#[test]
fn pss_verify_wycheproof() {
    let files = common::files_matching("rsa_pss_");
    assert_eq!(files.len(), 3);
    for name in files {
        let file = load(&name);
        let (valid, invalid) = hold_to_verdicts(&file, |group, case| {
            let (hash, mgf) = (group.hash("sha"), group.hash("mgfSha"));
            assert_eq!(group.str("mgf"), "MGF1");
            let key = group.public_key();
            let m_hash = hash.digest(&case.hex("msg"));
            let Some(em) = key.public_op(&case.hex("sig")) else {
                return false; // wrong length or s >= N: RSAVP1 rejects it
            };
            let s_len = group.usize("sLen");
            match pss_verify(hash, mgf, &m_hash, Some(s_len), key.mod_bits(), &em) {
                Ok(()) => {
                    assert_eq!(
                        pss_verify(hash, mgf, &m_hash, None, key.mod_bits(), &em),
                        Ok(())
                    );
                    true
                }
                Err(e) => {
                    assert_eq!(e, PaddingError::BadSignature, "{name} {}", case.id());
                    false
                }
            }
        });
        assert!(
            valid > 0 && invalid > 0,
            "{name}: {valid} valid, {invalid} invalid"
        );
    }
}

/// `pkcs1v15_verify` on `s^e mod N` over the Wycheproof PKCS#1 v1.5 verification files
/// (BER-encoded DigestInfo, missing NULL, wrong hash, trailing garbage, ... must all fail).
#[test]
fn pkcs1v15_verify_wycheproof() {
    let files = common::files_matching("rsa_signature_");
    assert_eq!(files.len(), 2);
    for name in files {
        let file = load(&name);
        let (valid, invalid) = hold_to_verdicts(&file, |group, case| {
            let hash = group.hash("sha");
            let key = group.public_key();
            let digest = hash.digest(&case.hex("msg"));
            let Some(em) = key.public_op(&case.hex("sig")) else {
                return false;
            };
            match pkcs1v15_verify(hash, &digest, &em) {
                Ok(()) => true,
                Err(e) => {
                    assert_eq!(e, PaddingError::BadSignature, "{name} {}", case.id());
                    false
                }
            }
        });
        assert!(
            valid > 0 && invalid > 0,
            "{name}: {valid} valid, {invalid} invalid"
        );
    }
}

/// Decrypts every case of a decryption file with the textbook raw operation and `decode`;
/// valid cases must give exactly `msg`, invalid ones exactly `PaddingError::Decryption` (or a
/// ciphertext the raw operation refuses: wrong length or ≥ N). Acceptable cases that decode
/// must still give `msg`.
fn check_decryption_file(
    name: &str,
    decode: impl Fn(
        &common::TestGroup,
        &common::TestCase,
        &[u8],
        usize,
    ) -> Result<Vec<u8>, PaddingError>,
) {
    let file = load(name);
    let mut keys: Vec<(String, TestPrivateKey)> = Vec::new();
    let (valid, invalid) = hold_to_verdicts(&file, |group, case| {
        let der = group.str("privateKeyPkcs8").to_owned();
        if !keys.iter().any(|(d, _)| *d == der) {
            keys.push((der.clone(), group.private_key()));
        }
        let key = &keys.iter().find(|(d, _)| *d == der).unwrap().1;
        let k = key.public.k();
        let Some(em) = key.private_op(&case.hex("ct")) else {
            return false;
        };
        match decode(group, case, &em, k) {
            Ok(msg) => {
                assert_eq!(msg, case.hex("msg"), "{name} {}", case.id());
                true
            }
            Err(e) => {
                assert_eq!(e, PaddingError::Decryption, "{name} {}", case.id());
                false
            }
        }
    });
    assert!(valid > 0, "{name}: no valid case");
    if name.contains("pkcs1") {
        assert!(invalid > 0, "{name}: no invalid case");
    }
}

/// EME-PKCS1-v1_5 decoding over the Wycheproof decryption files.
#[test]
fn pkcs1v15_decrypt_wycheproof() {
    for bits in [2048, 3072, 4096] {
        check_decryption_file(&format!("rsa_pkcs1_{bits}_test.json"), |_, _, em, k| {
            pkcs1v15_decrypt(em, k).map(|m| m.to_vec())
        });
    }
}

/// EME-OAEP decoding over every Wycheproof OAEP file (all hash/MGF1 pairs, labels, 1024 to
/// 8192-bit keys).
#[test]
fn oaep_decrypt_wycheproof() {
    let files = common::files_matching("rsa_oaep_");
    assert_eq!(files.len(), 7);
    for name in files {
        check_decryption_file(&name, |group, case, em, k| {
            assert_eq!(group.str("mgf"), "MGF1");
            let label = case.hex_or_empty("label");
            oaep_decrypt(group.hash("sha"), group.hash("mgfSha"), &label, em, k).map(|m| m.to_vec())
        });
    }
}

fn rsa_crate_oaep_encrypt(
    key: &rsa::PublicKey,
    hash: HashAlg,
    label: &[u8],
    msg: &[u8],
) -> Vec<u8> {
    let mut rng = rand::rng();
    let label = label.to_vec();
    match hash {
        HashAlg::Sha1 => key.encrypt(&mut rng, Oaep::<sha1::Sha1>::new_with_label(label), msg),
        HashAlg::Sha224 => key.encrypt(&mut rng, Oaep::<sha2::Sha224>::new_with_label(label), msg),
        HashAlg::Sha256 => key.encrypt(&mut rng, Oaep::<sha2::Sha256>::new_with_label(label), msg),
        HashAlg::Sha384 => key.encrypt(&mut rng, Oaep::<sha2::Sha384>::new_with_label(label), msg),
        HashAlg::Sha512 => key.encrypt(&mut rng, Oaep::<sha2::Sha512>::new_with_label(label), msg),
    }
    .unwrap()
}

fn rsa_crate_oaep_decrypt(
    key: &rsa::PrivateKey,
    hash: HashAlg,
    label: &[u8],
    ct: &[u8],
) -> rsa::Result<Vec<u8>> {
    let label = label.to_vec();
    match hash {
        HashAlg::Sha1 => key.decrypt(Oaep::<sha1::Sha1>::new_with_label(label), ct),
        HashAlg::Sha224 => key.decrypt(Oaep::<sha2::Sha224>::new_with_label(label), ct),
        HashAlg::Sha256 => key.decrypt(Oaep::<sha2::Sha256>::new_with_label(label), ct),
        HashAlg::Sha384 => key.decrypt(Oaep::<sha2::Sha384>::new_with_label(label), ct),
        HashAlg::Sha512 => key.decrypt(Oaep::<sha2::Sha512>::new_with_label(label), ct),
    }
}

/// Ciphertexts from the `rsa` crate (OAEP, every hash, with a label; SHA-256 with MGF1-SHA-1)
/// and from OpenSSL (PKCS#1 v1.5) decrypt with our decoders, and a wrong label fails.
#[test]
fn foreign_ciphertexts_decrypt_with_ours() {
    let key = &signing_keys()[0];
    let k = key.public.k();
    let rsa_pub = rsa_crate_private(key).to_public_key();
    let label = b"pkcs11-tool --test label";
    for hash in HashAlg::ALL {
        let max = k - 2 * hash.output_len() - 2;
        for msg in [&b""[..], b"x", &vec![0x17; max]] {
            let ct = rsa_crate_oaep_encrypt(&rsa_pub, hash, label, msg);
            let em = key.private_op(&ct).unwrap();
            let got = oaep_decrypt(hash, hash, label, &em, k).unwrap();
            assert_eq!(&got[..], msg, "{hash:?}, {} bytes", msg.len());
            assert_eq!(
                oaep_decrypt(hash, hash, b"other label", &em, k).map(|_| ()),
                Err(PaddingError::Decryption)
            );
        }
    }
    // Different hashes for the label and MGF1.
    let ct = rsa_pub
        .encrypt(
            &mut rand::rng(),
            Oaep::<sha2::Sha256, sha1::Sha1>::new_with_mgf_hash_and_label(label.to_vec()),
            b"mixed",
        )
        .unwrap();
    let em = key.private_op(&ct).unwrap();
    let got = oaep_decrypt(HashAlg::Sha256, HashAlg::Sha1, label, &em, k).unwrap();
    assert_eq!(&got[..], b"mixed");

    let ossl = openssl_public(&key.public).rsa().unwrap();
    for msg in [&b""[..], b"secret", &vec![0xee; k - 11]] {
        let mut ct = vec![0u8; k];
        assert_eq!(
            ossl.public_encrypt(msg, &mut ct, Padding::PKCS1).unwrap(),
            k
        );
        let em = key.private_op(&ct).unwrap();
        assert_eq!(&pkcs1v15_decrypt(&em, k).unwrap()[..], msg);
    }
}

/// Our encryption encodings, raised to e, decrypt with the `rsa` crate (OAEP) and OpenSSL
/// (PKCS#1 v1.5) to the original message.
#[test]
fn our_ciphertexts_decrypt_with_foreign() {
    let mut rng = rand::rng();
    let key = &signing_keys()[0];
    let k = key.public.k();
    let rsa_priv = rsa_crate_private(key);
    let label = b"a label";
    for hash in HashAlg::ALL {
        let max = k - 2 * hash.output_len() - 2;
        for msg in [&b""[..], b"hello", &vec![0x99; max]] {
            let em = oaep_encode(hash, hash, label, msg, k, &mut rng).unwrap();
            let ct = key.public.public_op(&em).unwrap();
            let got = rsa_crate_oaep_decrypt(&rsa_priv, hash, label, &ct)
                .unwrap_or_else(|e| panic!("{hash:?} {} bytes: {e}", msg.len()));
            assert_eq!(got, msg);
            assert!(rsa_crate_oaep_decrypt(&rsa_priv, hash, b"wrong", &ct).is_err());
        }
    }

    let ossl = openssl_private(key);
    for msg in [&b""[..], b"hello", &vec![0x99; k - 11]] {
        let em = pkcs1v15_encrypt_pad(msg, k, &mut rng).unwrap();
        let ct = key.public.public_op(&em).unwrap();
        let mut out = vec![0u8; k];
        let n = ossl.private_decrypt(&ct, &mut out, Padding::PKCS1).unwrap();
        assert_eq!(&out[..n], msg);
    }
}
