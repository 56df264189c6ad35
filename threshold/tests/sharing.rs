//! Dealer, partial operations and combine, end to end in one process: Wycheproof keys of
//! 2048, 3072 and 4096 bits split k-of-n, signatures that must match the vectors byte for
//! byte, property tests over thresholds and subsets, and every exponentiation backend of
//! the build (crypto-bigint; OpenSSL and GMP with their features).

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

/// A valid case of a signature-generation file.
struct SigCase {
    tc_id: u64,
    msg: Vec<u8>,
    sig: Vec<u8>,
}

/// The first group of rsa_pkcs1_{bits}_sig_gen_test.json: its key read by our own PKCS#8
/// parser, its hash, and the cases whose signature must be reproduced.
struct SigGenVectors {
    key: RsaPrivateKey,
    hash: HashAlg,
    valid: Vec<SigCase>,
}

fn sig_gen_vectors(bits: usize) -> SigGenVectors {
    let file = common::load(&format!("rsa_pkcs1_{bits}_sig_gen_test.json"));
    let group = &file.test_groups[0];
    let key = RsaPrivateKey::from_der(&group.hex("privateKeyPkcs8"), None).unwrap();
    let valid = group
        .tests
        .iter()
        .filter(|t| t.result != common::Expected::Invalid)
        .map(|t| SigCase {
            tc_id: t.tc_id,
            msg: t.hex("msg"),
            sig: t.hex("sig"),
        })
        .collect();
    SigGenVectors {
        key,
        hash: group.hash("sha"),
        valid,
    }
}

use std::sync::OnceLock;

use ittc_threshold::padding::{HashAlg, pkcs1v15_sign};
use ittc_threshold::{
    Backend, Blinding, Error, KeyShare, Partial, PartialExp, RsaPrivateKey, SharingParams, combine,
    combine_robust, split_key,
};

/// The dealer's shares alone (what the partial operation uses).
fn split_shares<R: rand::CryptoRng + ?Sized>(
    key: &RsaPrivateKey,
    params: SharingParams,
    backend: &dyn PartialExp,
    rng: &mut R,
) -> Result<Vec<KeyShare>, Error> {
    split_key(key, params, backend, rng)
        .map(|holders| holders.iter().map(|h| h.share().clone()).collect())
}
use num_bigint::BigUint;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn backends() -> Vec<&'static dyn PartialExp> {
    Backend::available().iter().map(|b| b.get()).collect()
}

fn partials(
    key: &RsaPrivateKey,
    shares: &[&KeyShare],
    input: &BigUint,
    backend: &dyn PartialExp,
) -> Vec<Partial> {
    shares
        .iter()
        .map(|s| Partial {
            index: s.index(),
            value: backend.partial(key.public_key(), s, input).unwrap(),
        })
        .collect()
}

fn key_2048() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| sig_gen_vectors(2048).key)
}

/// Shares of the 2048-bit key, split once per (k, n) for the property tests.
fn shares_2048(k: usize, n: usize) -> Vec<KeyShare> {
    let mut rng = StdRng::seed_from_u64((k * 100 + n) as u64);
    split_shares(
        key_2048(),
        SharingParams::new(k, n).unwrap(),
        Backend::default().get(),
        &mut rng,
    )
    .unwrap()
}

#[test]
fn threshold_signatures_match_wycheproof_byte_for_byte() {
    for (bits, k, n, per_key) in [
        (2048, 2, 3, 4),
        (2048, 3, 5, 2),
        (3072, 2, 3, 2),
        (4096, 3, 4, 1),
    ] {
        let vectors = sig_gen_vectors(bits);
        let key = &vectors.key;
        let params = SharingParams::new(k, n).unwrap();
        let shares = split_shares(key, params, Backend::default().get(), &mut rand::rng()).unwrap();
        assert_eq!(shares.len(), n);
        for backend in backends() {
            for case in vectors.valid.iter().take(per_key) {
                let em = pkcs1v15_sign(
                    vectors.hash,
                    &vectors.hash.digest(&case.msg),
                    key.public_key().size(),
                )
                .unwrap();
                let input = BigUint::from_bytes_be(&em);
                // The last k shares, so that index 1 is not always involved.
                let chosen: Vec<&KeyShare> = shares.iter().skip(n - k).collect();
                let parts = partials(key, &chosen, &input, backend);
                let sig = combine(key.public_key(), &params, &input, &parts).unwrap();
                assert_eq!(
                    key.public_key().integer_to_be(&sig),
                    case.sig,
                    "{bits}-bit {k}-of-{n} tcId {} via {}",
                    case.tc_id,
                    backend.name()
                );
            }
        }
    }
}

#[test]
fn blinded_operation_unblinds_to_the_plain_signature() {
    let vectors = sig_gen_vectors(2048);
    let key = &vectors.key;
    let public = key.public_key();
    let params = SharingParams::new(2, 3).unwrap();
    let shares = split_shares(key, params, Backend::default().get(), &mut rand::rng()).unwrap();
    let case = &vectors.valid[0];
    let em = pkcs1v15_sign(vectors.hash, &vectors.hash.digest(&case.msg), public.size()).unwrap();
    let m = BigUint::from_bytes_be(&em);
    let (blinding, blinded) = Blinding::new(public, &m, &mut rand::rng()).unwrap();
    assert_ne!(
        blinded, m,
        "the appliances must not see the encoded message"
    );
    let chosen: Vec<&KeyShare> = shares.iter().take(2).collect();
    let y = combine(
        public,
        &params,
        &blinded,
        &partials(key, &chosen, &blinded, Backend::default().get()),
    )
    .unwrap();
    assert_eq!(
        public.integer_to_be(&blinding.clone().unblind(public, &y).unwrap()),
        case.sig
    );
    // Combining with the unblinding folded in gives the same signature, also when a
    // wrong partial has to be skipped (and is named).
    let combiner = ittc_threshold::Combiner::new(public, &params).unwrap();
    let all: Vec<&KeyShare> = shares.iter().collect();
    let mut parts = partials(key, &all, &blinded, Backend::default().get());
    parts[0].value = (&parts[0].value + 1u8) % public.n();
    let outcome = combiner
        .combine_robust_blinded(&blinded, &parts, blinding)
        .unwrap();
    assert_eq!(public.integer_to_be(&outcome.result), case.sig);
    assert_eq!(outcome.faulty, vec![1]);
}

#[test]
fn exactly_k_partials_combine_or_ask_for_more() {
    // The module's common case: k partials of a blinded input, with the unblinding and the
    // check folded into one division. Right ones give the Wycheproof signature; one wrong
    // or zero gives NotEnoughGoodPartials (so the module asks the other appliances),
    // never a result.
    let vectors = sig_gen_vectors(2048);
    let key = &vectors.key;
    let public = key.public_key();
    let case = &vectors.valid[1];
    let em = pkcs1v15_sign(vectors.hash, &vectors.hash.digest(&case.msg), public.size()).unwrap();
    let m = BigUint::from_bytes_be(&em);
    for (k, n) in [(2, 3), (3, 5), (4, 7)] {
        let params = SharingParams::new(k, n).unwrap();
        let combiner = ittc_threshold::Combiner::new(public, &params).unwrap();
        let shares = split_shares(key, params, Backend::default().get(), &mut rand::rng()).unwrap();
        let (blinding, blinded) = Blinding::new(public, &m, &mut rand::rng()).unwrap();
        let chosen: Vec<&KeyShare> = shares.iter().skip(n - k).collect();
        let parts = partials(key, &chosen, &blinded, Backend::default().get());
        let outcome = combiner
            .combine_robust_blinded(&blinded, &parts, blinding.clone())
            .unwrap();
        assert_eq!(
            public.integer_to_be(&outcome.result),
            case.sig,
            "{k}-of-{n}"
        );
        assert_eq!(
            outcome.used,
            parts.iter().map(|p| p.index).collect::<Vec<_>>()
        );
        assert!(outcome.faulty.is_empty());

        for wrong in [(&parts[1].value + 1u8) % public.n(), BigUint::from(0u8)] {
            let mut bad = parts.clone();
            bad[1].value = wrong;
            for result in [
                combiner.combine_robust_blinded(&blinded, &bad, blinding.clone()),
                combiner.combine_robust(&blinded, &bad),
            ] {
                assert!(
                    matches!(result, Err(Error::NotEnoughGoodPartials { .. })),
                    "{k}-of-{n}: {result:?}"
                );
            }
            assert!(combine(public, &params, &blinded, &bad).is_err());
        }
    }
}

#[test]
fn every_k_subset_gives_the_same_result_3_of_5() {
    let key = key_2048();
    let params = SharingParams::new(3, 5).unwrap();
    let shares = shares_2048(3, 5);
    let input = BigUint::from(0x1234_5678_9abc_def0u64);
    let all = partials(
        key,
        &shares.iter().collect::<Vec<_>>(),
        &input,
        Backend::default().get(),
    );
    let mut results = Vec::new();
    for a in 0..5 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                let set = [all[a].clone(), all[b].clone(), all[c].clone()];
                results.push(combine(key.public_key(), &params, &input, &set).unwrap());
            }
        }
    }
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(|r| r == &results[0]));
    assert_eq!(
        key.public_key().raw_public_vartime(&results[0]).unwrap(),
        input
    );
}

#[test]
fn backends_agree_on_random_inputs() {
    let key = key_2048();
    let shares = shares_2048(2, 3);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..8 {
        let mut bytes = vec![0u8; key.public_key().size()];
        rng.fill(&mut bytes[1..]);
        let input = BigUint::from_bytes_be(&bytes);
        for share in &shares {
            let expected = Backend::CryptoBigint
                .get()
                .partial(key.public_key(), share, &input)
                .unwrap();
            for backend in backends() {
                let got = backend.partial(key.public_key(), share, &input).unwrap();
                assert_eq!(got, expected, "{}", backend.name());
            }
        }
    }
}

/// `pow_secret` on the edges, every backend against num-bigint (a reference that is not
/// constant time, fine for public test values): exponent 0 and 1, all zeros or ones,
/// leading zero bytes and limbs; base 0, 1 and N − 1; a modulus with a leading zero byte;
/// and bases with no inverse, which the GMP backend treats apart.
#[test]
fn backends_agree_on_the_edges() {
    let n = key_2048().public_key().n_be();
    let len = n.len() + 17; // a share-like exponent length: not a whole number of limbs
    let mut rng = StdRng::seed_from_u64(11);
    let mut random = |bytes: usize| {
        let mut v = vec![0u8; bytes];
        rng.fill(&mut v[..]);
        v
    };
    let mut short = vec![0u8; len];
    short[len - 1] = 1;
    let mut leading_zero_limbs = random(len);
    leading_zero_limbs[..20].fill(0);
    let exponents: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![1],
        vec![0; len],
        short,
        vec![0xff; len],
        leading_zero_limbs,
        random(len),
    ];

    let mut n_minus_1 = n.clone();
    *n_minus_1.last_mut().unwrap() -= 1; // N is odd
    let mut leading_zero_base = random(n.len());
    leading_zero_base[..9].fill(0);
    let rsa_bases = vec![
        vec![0u8; n.len()],
        vec![1],
        n_minus_1,
        leading_zero_base,
        random(n.len() - 1),
    ];
    // (modulus, bases): the RSA modulus, a small one with a leading zero byte, 15 with bases
    // that share a factor with it, and 1.
    let cases: Vec<(Vec<u8>, Vec<Vec<u8>>)> = vec![
        (n.clone(), rsa_bases),
        (
            vec![0, 0xc5],
            vec![vec![0, 0], vec![0, 1], vec![0, 2], vec![0, 0xc4]],
        ),
        (
            vec![15],
            vec![vec![0], vec![3], vec![5], vec![6], vec![7], vec![14]],
        ),
        (vec![1], vec![vec![0]]),
    ];
    for (modulus, bases) in &cases {
        let m = BigUint::from_bytes_be(modulus);
        for base in bases {
            for exponent in &exponents {
                let expected = BigUint::from_bytes_be(base)
                    .modpow(&BigUint::from_bytes_be(exponent), &m)
                    .to_bytes_be();
                let mut padded = vec![0u8; modulus.len() - expected.len()];
                padded.extend_from_slice(&expected);
                let case = format!(
                    "{}-bit modulus, base {}, exponent {:02x?}",
                    m.bits(),
                    BigUint::from_bytes_be(base),
                    exponent
                );
                for backend in backends() {
                    let got = backend
                        .pow_secret(base, exponent, modulus)
                        .unwrap_or_else(|e| panic!("{}: {e} ({case})", backend.name()));
                    assert_eq!(got, padded, "{}: {case}", backend.name());
                }
            }
        }
    }
}

#[test]
fn backends_refuse_an_even_modulus_and_a_base_not_below_it() {
    for backend in backends() {
        for (base, modulus) in [
            (&[2u8][..], &[0xc4u8][..]),
            (&[2], &[0, 0]),
            (&[0xc5], &[0xc5]),
            (&[0xc6], &[0xc5]),
        ] {
            assert!(
                matches!(
                    backend.pow_secret(base, &[3], modulus),
                    Err(Error::OutOfRange(_))
                ),
                "{} with base {base:02x?} and modulus {modulus:02x?}",
                backend.name()
            );
        }
    }
}

#[test]
fn robust_combine_names_corrupted_partials() {
    let key = key_2048();
    let public = key.public_key();
    let params = SharingParams::new(2, 4).unwrap();
    let shares = shares_2048(2, 4);
    let input = BigUint::from(987_654_321u64);
    let mut all = partials(
        key,
        &shares.iter().collect::<Vec<_>>(),
        &input,
        Backend::default().get(),
    );
    let expected = combine(public, &params, &input, &all[2..4]).unwrap();
    // Corrupt the first two: the search has to skip past them.
    all[0].value = (&all[0].value + 1u8) % public.n();
    all[1].value = BigUint::from(2u8);
    let outcome = combine_robust(public, &params, &input, &all).unwrap();
    assert_eq!(outcome.result, expected);
    assert_eq!(outcome.faulty, vec![1, 2]);
    assert_eq!(outcome.used, vec![3, 4]);

    // Three wrong out of four: no two verify, and the error says so.
    all[2].value = BigUint::from(3u8);
    match combine_robust(public, &params, &input, &all) {
        Err(Error::NotEnoughGoodPartials {
            needed: 2,
            received: 4,
            missing,
        }) => assert!(missing >= 1),
        other => panic!("expected NotEnoughGoodPartials, got {other:?}"),
    }
    // Too few partials at all.
    match combine_robust(public, &params, &input, &all[..1]) {
        Err(Error::NotEnoughGoodPartials {
            needed: 2,
            received: 1,
            missing: 1,
        }) => {}
        other => panic!("expected NotEnoughGoodPartials, got {other:?}"),
    }
}

#[test]
fn refuses_unusable_parameters() {
    let key = key_2048();
    let backend = Backend::default().get();
    assert!(matches!(
        SharingParams::new(1, 3),
        Err(Error::Threshold { k: 1, n: 3 })
    ));
    assert!(matches!(
        SharingParams::new(4, 3),
        Err(Error::Threshold { .. })
    ));
    assert!(matches!(
        SharingParams::new(2, 17),
        Err(Error::Threshold { .. })
    ));

    // e = 65535 is not prime; e = 3 is not larger than n = 3.
    let public = key.public_key();
    let d = vec![1u8; 32];
    let composite = RsaPrivateKey::from_components(&public.n_be(), &[0xff, 0xff], &d).unwrap();
    let small = RsaPrivateKey::from_components(&public.n_be(), &[3], &d).unwrap();
    let params = SharingParams::new(2, 3).unwrap();
    for (key, e) in [(&composite, "65535"), (&small, "3")] {
        match split_shares(key, params, backend, &mut rand::rng()) {
            Err(Error::PublicExponent { e: got, n: 3 }) => assert_eq!(got, e),
            other => panic!("expected PublicExponent, got {other:?}"),
        }
    }
    // A d that does not belong to (N, e) fails the dealer's trial operation.
    let wrong_d = RsaPrivateKey::from_components(&public.n_be(), &public.e_be(), &d).unwrap();
    assert!(matches!(
        split_shares(&wrong_d, params, backend, &mut rand::rng()),
        Err(Error::KeyInvalid(_))
    ));
}

#[test]
fn secrets_print_redacted() {
    let key = key_2048();
    let share = &shares_2048(2, 3)[0];
    for printed in [format!("{key:?}"), format!("{share:?}")] {
        assert!(printed.contains("redacted"), "{printed}");
        let hex_bytes: String = share.value().as_be_bytes()[8..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!printed.contains(&hex_bytes));
    }
}

#[test]
fn shares_have_one_length_for_a_key() {
    let shares = shares_2048(3, 7);
    let params = SharingParams::new(3, 7).unwrap();
    let len = params.share_len(key_2048().public_key());
    assert!(shares.iter().all(|s| s.value().len() == len));
    // About |N| + 128 + 2·log2(Δ) + (k−1)·log2(n) bits.
    let bits = params.share_bits(key_2048().public_key());
    assert!(
        (2048 + 128..2048 + 128 + 40).contains(&(bits as usize)),
        "{bits}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any k-subset of a k-of-n sharing produces c^d; k−1 of them (read as a (k−1)-of-n
    /// sharing) and sets mixing two sharings of the same key never verify.
    #[test]
    fn any_k_subset_combines_and_fewer_or_mixed_never_do(
        (k, n) in (2usize..=6).prop_flat_map(|n| (2..=n, Just(n))),
        seed in any::<u64>(),
    ) {
        let key = key_2048();
        let public = key.public_key();
        let params = SharingParams::new(k, n).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let backend = Backend::default().get();
        let first = split_shares(key, params, backend, &mut rng).unwrap();
        let second = split_shares(key, params, backend, &mut rng).unwrap();
        let input = BigUint::from(rng.random::<u64>() | 2);
        let first_k: Vec<&KeyShare> = first.iter().take(k).collect();
        let expected =
            combine(public, &params, &input, &partials(key, &first_k, &input, backend)).unwrap();
        prop_assert_eq!(public.raw_public_vartime(&expected).unwrap(), input.clone());

        let mut indices: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            indices.swap(i, rng.random_range(0..=i));
        }
        let subset: Vec<&KeyShare> = indices.iter().take(k).map(|&i| &first[i]).collect();
        let parts = partials(key, &subset, &input, backend);
        prop_assert_eq!(combine(public, &params, &input, &parts).unwrap(), expected.clone());

        if k >= 3 {
            let fewer = SharingParams::new(k - 1, n).unwrap();
            prop_assert!(matches!(
                combine(public, &fewer, &input, &parts[..k - 1]),
                Err(Error::Verification)
            ));
        }
        let too_few = combine_robust(public, &params, &input, &parts[..k - 1]);
        prop_assert!(matches!(too_few, Err(Error::NotEnoughGoodPartials { .. })), "{:?}", too_few);

        let mut mixed: Vec<&KeyShare> = subset.clone();
        mixed[0] = &second[indices[0]];
        let mixed_parts = partials(key, &mixed, &input, backend);
        prop_assert!(matches!(combine(public, &params, &input, &mixed_parts), Err(Error::Verification)));
    }
}
